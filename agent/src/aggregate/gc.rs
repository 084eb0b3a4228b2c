//! GC and stop-the-world bookkeeping of one process: pauses by reason, completed cycles, and
//! the concurrent mark phase (from the end of a cycle's sweep-termination pause to the start
//! of the mark-termination pause in which the cycle completes).

use std::collections::BTreeMap;

use super::histogram::DurationHistogram;

/// What a stop-the-world pause is to a GC cycle, by the runtime's name for its reason.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PauseRole {
    /// `GC sweep termination`: the cycle's first pause; the mark phase starts when it ends.
    SweepTermination,
    /// `GC mark termination`: the mark phase ends when it starts. A cycle may stop the world
    /// for mark termination more than once (runtime/mgc.go `gcMarkDone` restarts it when
    /// work remains); the last one, in which `gcMarkTermination` runs, ends the cycle.
    MarkTermination,
    /// Anything else (`read mem stats`, `goroutine profile`, ...).
    Other,
}

impl PauseRole {
    pub fn of(reason_name: &str) -> PauseRole {
        match reason_name {
            "GC sweep termination" => PauseRole::SweepTermination,
            "GC mark termination" => PauseRole::MarkTermination,
            _ => PauseRole::Other,
        }
    }
}

/// Two hits of one probe this close are one call hit twice; two GC cycles are never this
/// close (each one marks the whole heap).
const DUPLICATE_WITHIN_NS: u64 = 1_000_000;

#[derive(Debug, Default, Clone)]
pub struct GcStats {
    /// Stop-the-world pauses by raw `stwReason`.
    pub pauses: BTreeMap<u8, DurationHistogram>,
    /// Completed GC cycles.
    pub cycles: u64,
    /// Concurrent mark phases.
    pub mark: DurationHistogram,
    /// When the last sweep-termination pause ended: the mark phase began.
    mark_began_ns: Option<u64>,
    /// When a cycle completed, until the pause it completed in arrives.
    completed_ns: Option<u64>,
}

impl GcStats {
    pub fn on_pause(&mut self, reason: u8, role: PauseRole, stop_ns: u64, start_ns: u64) {
        self.pauses
            .entry(reason)
            .or_default()
            .record(start_ns.saturating_sub(stop_ns));
        match role {
            PauseRole::SweepTermination => {
                self.mark_began_ns = Some(start_ns);
                self.completed_ns = None;
            }
            PauseRole::MarkTermination => {
                // The cycle completed inside this pause: the mark phase ended as it began.
                if self
                    .completed_ns
                    .is_some_and(|at| (stop_ns..=start_ns).contains(&at))
                {
                    if let Some(began) = self.mark_began_ns.take() {
                        self.mark.record(stop_ns.saturating_sub(began));
                    }
                    self.completed_ns = None;
                }
            }
            PauseRole::Other => {}
        }
    }

    /// `runtime.gcMarkTermination` ran at `at_ns` (inside a mark-termination pause, whose
    /// event comes after this one).
    ///
    /// A second cycle within a millisecond, before that pause arrives, is the probe firing
    /// twice for one call (a signal interrupted the single-step of the probed instruction and
    /// the kernel restarted it), not a second cycle.
    pub fn on_cycle(&mut self, at_ns: u64) {
        if self
            .completed_ns
            .is_some_and(|prev| at_ns.saturating_sub(prev) < DUPLICATE_WITHIN_NS)
        {
            return;
        }
        self.cycles += 1;
        self.completed_ns = Some(at_ns);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_cycle_with_a_restarted_mark_termination() {
        let mut gc = GcStats::default();
        gc.on_pause(2, PauseRole::SweepTermination, 1_000, 1_100);
        // Mark termination stopped the world, found work, restarted it.
        gc.on_pause(1, PauseRole::MarkTermination, 5_000, 5_050);
        assert_eq!(gc.mark.count(), 0);
        // The second one completes the cycle.
        gc.on_cycle(9_020);
        gc.on_pause(1, PauseRole::MarkTermination, 9_000, 9_200);
        assert_eq!(gc.cycles, 1);
        assert_eq!(gc.mark.count(), 1);
        assert_eq!(gc.mark.sum_ns(), 9_000 - 1_100);
        assert_eq!(gc.pauses[&1].count(), 2);
        assert_eq!(gc.pauses[&2].sum_ns(), 100);
        // Other pauses change nothing of the cycle.
        gc.on_pause(7, PauseRole::Other, 10_000, 10_500);
        assert_eq!((gc.cycles, gc.mark.count()), (1, 1));
    }

    #[test]
    fn a_probe_hit_twice_is_one_cycle() {
        let mut gc = GcStats::default();
        gc.on_pause(2, PauseRole::SweepTermination, 1_000, 1_100);
        gc.on_cycle(9_020);
        gc.on_cycle(9_030);
        gc.on_pause(1, PauseRole::MarkTermination, 9_000, 9_200);
        assert_eq!((gc.cycles, gc.mark.count()), (1, 1));
        // A cycle whose pause never came does not hide the next one.
        gc.on_cycle(50_000_000);
        gc.on_cycle(90_000_000);
        assert_eq!(gc.cycles, 3);
    }

    #[test]
    fn a_cycle_begun_before_attach_has_no_mark_phase() {
        let mut gc = GcStats::default();
        gc.on_cycle(200);
        gc.on_pause(1, PauseRole::MarkTermination, 100, 300);
        assert_eq!((gc.cycles, gc.mark.count()), (1, 0));
    }
}
