//! The state of one target process: blocking per wait reason, and per goroutine.
//!
//! Pure bookkeeping over decoded events; the only outside reads are of the target's memory
//! (through [`GoroutineReader`]) to learn where a goroutine was created and whether it exited.

use std::collections::{BTreeMap, HashMap, VecDeque};

use super::{
    histogram::{DURATION_BOUNDS_NS, DurationHistogram},
    requests::SpanContext,
};
use crate::target::walk::{G_DEAD, G_IDLE, G_WAITING, WalkedGoroutine};

/// Where a goroutine comes from, as raw runtime addresses.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Origin {
    /// `g.gopc`: the PC of the `go` statement that created it.
    pub gopc: u64,
    /// `g.startpc`: the function it started in.
    pub startpc: u64,
}

/// What the agent may learn by reading a goroutine's `runtime.g` in the target's memory.
pub trait GoroutineReader {
    /// The origin of goroutine `goid` whose `g` is at `g`, if that `g` still holds it.
    fn origin(&self, g: u64, goid: u64) -> Option<Origin>;
    /// Whether goroutine `goid` has exited: its `g` is dead or was reused. None if unknown.
    fn has_exited(&self, g: u64, goid: u64) -> Option<bool>;
}

/// Blocking of one wait reason, process-wide.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ReasonStats {
    pub histogram: DurationHistogram,
    /// Per histogram bucket, the latest block that happened in a traced request.
    pub exemplars: [Option<BlockExemplar>; DURATION_BOUNDS_NS.len() + 1],
}

/// A block inside a traced request, for the OpenMetrics exemplar of its histogram bucket.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct BlockExemplar {
    pub span: SpanContext,
    pub ns: u64,
    /// When it ended (CLOCK_MONOTONIC).
    pub at_ns: u64,
}

/// What a goroutine is doing, as far as the probes tell.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum GoroutineState {
    /// Not parked: running, runnable, or in a system call.
    Running,
    /// Parked for `reason` since `since_ns` (CLOCK_MONOTONIC); None when it was parked
    /// before gort attached (found by the walk of the goroutine list).
    Waiting { reason: u8, since_ns: Option<u64> },
    /// Exited at `at_ns`: seen by the lifecycle probe (`seen`), or found in memory.
    Exited { at_ns: u64, seen: bool },
}

/// One goroutine's blocking for one reason.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct GoroutineBlocking {
    pub reason: u8,
    pub count: u64,
    pub blocked_ns: u64,
    pub max_ns: u64,
    /// Return addresses of the longest block (empty if it was shorter than the capture
    /// threshold).
    pub max_frames: Box<[u64]>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Goroutine {
    pub goid: u64,
    /// Address of its `runtime.g` (reused by the runtime after exit).
    pub g: u64,
    pub first_seen_ns: u64,
    pub last_event_ns: u64,
    pub state: GoroutineState,
    pub origin: Option<Origin>,
    pub blocking: Vec<GoroutineBlocking>,
    /// Its creation was seen by the lifecycle probe.
    pub created_seen: bool,
}

impl Goroutine {
    fn new(goid: u64, g: u64, now_ns: u64) -> Goroutine {
        Goroutine {
            goid,
            g,
            first_seen_ns: now_ns,
            last_event_ns: now_ns,
            state: GoroutineState::Running,
            origin: None,
            blocking: Vec::new(),
            created_seen: false,
        }
    }

    /// Changes the state, unless the lifecycle probe saw the goroutine exit (then nothing
    /// after can change it).
    fn set_state(&mut self, state: GoroutineState) {
        if !matches!(self.state, GoroutineState::Exited { seen: true, .. }) {
            self.state = state;
        }
    }

    fn record_block(&mut self, reason: u8, ns: u64, frames: &[u64]) {
        let b = match self.blocking.iter_mut().position(|b| b.reason == reason) {
            Some(i) => &mut self.blocking[i],
            None => {
                self.blocking.push(GoroutineBlocking {
                    reason,
                    count: 0,
                    blocked_ns: 0,
                    max_ns: 0,
                    max_frames: Box::default(),
                });
                self.blocking.last_mut().expect("just pushed")
            }
        };
        b.count += 1;
        b.blocked_ns = b.blocked_ns.saturating_add(ns);
        if ns >= b.max_ns {
            b.max_ns = ns;
            if !frames.is_empty() || b.max_frames.is_empty() {
                b.max_frames = frames.into();
            }
        }
    }
}

/// Limits that keep a process's state bounded.
#[derive(Debug, Clone, Copy)]
pub struct Retention {
    /// Live goroutines tracked at most.
    pub max_goroutines: usize,
    /// Exited goroutines kept at most.
    pub max_exited: usize,
    /// How long exited goroutines are kept.
    pub exited_for_ns: u64,
}

/// Blocking of one process.
#[derive(Debug, Default)]
pub struct ProcessBlocking {
    /// Completed parks by raw wait reason.
    pub reasons: BTreeMap<u8, ReasonStats>,
    /// Goroutines parked now, by raw wait reason (from the last in-flight snapshot).
    pub parked_now: BTreeMap<u8, u64>,
    pub goroutines: HashMap<u64, Goroutine>,
    /// Exited goroutines, oldest first: (noticed at, goid).
    exited: VecDeque<(u64, u64)>,
    /// Goroutines not tracked because `max_goroutines` was reached.
    pub untracked_goroutines: u64,
    /// Resumes of parks that began before gort attached.
    pub resumes_unmatched: u64,
    /// Goroutines created and exited since gort attached (the lifecycle probes).
    pub created_total: u64,
    pub exited_total: u64,
    /// Live goroutines beyond `max_goroutines`, counted but not tracked.
    pub untracked_live: u64,
}

impl ProcessBlocking {
    /// A park seen from start to end.
    #[expect(clippy::too_many_arguments, reason = "the fields of one event")]
    pub fn on_block(
        &mut self,
        goid: u64,
        g: u64,
        reason: u8,
        park_ns: u64,
        resume_ns: u64,
        frames: &[u64],
        limits: &Retention,
        reader: &dyn GoroutineReader,
    ) {
        let ns = resume_ns.saturating_sub(park_ns);
        self.reasons.entry(reason).or_default().histogram.record(ns);
        if let Some(gr) = self.goroutine(goid, g, resume_ns, limits, reader) {
            gr.record_block(reason, ns, frames);
            gr.set_state(GoroutineState::Running);
            gr.last_event_ns = resume_ns;
        }
    }

    /// A park inside a traced request ended: the newest exemplar of its bucket.
    pub fn on_traced_block(&mut self, reason: u8, park_ns: u64, resume_ns: u64, span: SpanContext) {
        let ns = resume_ns.saturating_sub(park_ns);
        if let Some(stats) = self.reasons.get_mut(&reason) {
            stats.exemplars[DurationHistogram::bucket_of(ns)] = Some(BlockExemplar {
                span,
                ns,
                at_ns: resume_ns,
            });
        }
    }

    /// A goroutine ran again whose park began before gort attached.
    pub fn on_resume_unmatched(
        &mut self,
        goid: u64,
        g: u64,
        resume_ns: u64,
        limits: &Retention,
        reader: &dyn GoroutineReader,
    ) {
        self.resumes_unmatched += 1;
        if let Some(gr) = self.goroutine(goid, g, resume_ns, limits, reader) {
            gr.set_state(GoroutineState::Running);
            gr.last_event_ns = resume_ns;
        }
    }

    /// The goroutines of this process parked at `taken_ns`: (goid, g, reason, park_ns).
    pub fn on_parked_snapshot(
        &mut self,
        parked: &[(u64, u64, u8, u64)],
        taken_ns: u64,
        limits: &Retention,
        reader: &dyn GoroutineReader,
    ) {
        self.parked_now.clear();
        for &(_, _, reason, _) in parked {
            *self.parked_now.entry(reason).or_default() += 1;
        }
        // Goroutines no longer in the map have resumed (their event may still be on its way).
        // Those parked before gort attached were never in it: they wait for their resume.
        for gr in self.goroutines.values_mut() {
            match gr.state {
                GoroutineState::Waiting {
                    since_ns: Some(_), ..
                } => gr.state = GoroutineState::Running,
                GoroutineState::Waiting {
                    reason,
                    since_ns: None,
                } => {
                    *self.parked_now.entry(reason).or_default() += 1;
                }
                _ => {}
            }
        }
        for &(goid, g, reason, park_ns) in parked {
            let Some(gr) = self.goroutine(goid, g, taken_ns, limits, reader) else {
                continue;
            };
            let before = gr.state;
            gr.set_state(GoroutineState::Waiting {
                reason,
                since_ns: Some(park_ns),
            });
            if let GoroutineState::Waiting {
                reason,
                since_ns: None,
            } = before
            {
                // It resumed and parked again since the walk; its resume is on its way.
                *self.parked_now.entry(reason).or_default() -= 1;
            }
        }
        self.parked_now.retain(|_, n| *n > 0);
    }

    /// Takes in the goroutines that existed when gort attached, found by walking the
    /// runtime's list at `now_ns`. Goroutines the probes already reported are left alone.
    pub fn on_walk(&mut self, walked: &[WalkedGoroutine], now_ns: u64, limits: &Retention) {
        // `_Gidle` gs are being set up by newproc1, which the probes see.
        for w in walked
            .iter()
            .filter(|w| w.status != G_DEAD && w.status != G_IDLE)
        {
            if self.goroutines.contains_key(&w.goid) {
                continue;
            }
            if self.goroutines.len() - self.exited.len() >= limits.max_goroutines {
                self.untracked_goroutines += 1;
                continue;
            }
            let mut gr = Goroutine::new(w.goid, w.g, now_ns);
            gr.origin = Some(Origin {
                gopc: w.gopc,
                startpc: w.startpc,
            });
            if w.status == G_WAITING {
                gr.state = GoroutineState::Waiting {
                    reason: w.waitreason,
                    since_ns: None,
                };
                *self.parked_now.entry(w.waitreason).or_default() += 1;
            }
            self.goroutines.insert(w.goid, gr);
        }
    }

    /// Brings the goroutines up to date with a walk of the runtime's list after the probes
    /// were out for a while: those gone exited, the others' state is the runtime's, new ones
    /// are taken in as at attach.
    pub fn on_resync(&mut self, walked: &[WalkedGoroutine], now_ns: u64, limits: &Retention) {
        let live: std::collections::HashMap<u64, &WalkedGoroutine> = walked
            .iter()
            .filter(|w| w.status != G_DEAD && w.status != G_IDLE)
            .map(|w| (w.goid, w))
            .collect();
        self.parked_now.clear();
        for gr in self.goroutines.values_mut() {
            if matches!(gr.state, GoroutineState::Exited { .. }) {
                continue;
            }
            match live.get(&gr.goid) {
                None => {
                    gr.state = GoroutineState::Exited {
                        at_ns: now_ns,
                        seen: false,
                    };
                    self.exited.push_back((now_ns, gr.goid));
                }
                Some(w) if w.status == G_WAITING => {
                    let since_ns = match gr.state {
                        GoroutineState::Waiting { reason, since_ns } if reason == w.waitreason => {
                            since_ns
                        }
                        _ => None,
                    };
                    gr.state = GoroutineState::Waiting {
                        reason: w.waitreason,
                        since_ns,
                    };
                    *self.parked_now.entry(w.waitreason).or_default() += 1;
                }
                Some(_) => gr.state = GoroutineState::Running,
            }
        }
        self.on_walk(walked, now_ns, limits);
    }

    /// Finds or starts tracking a goroutine; None when at the tracking limit.
    fn goroutine(
        &mut self,
        goid: u64,
        g: u64,
        now_ns: u64,
        limits: &Retention,
        reader: &dyn GoroutineReader,
    ) -> Option<&mut Goroutine> {
        let live = self.goroutines.len() - self.exited.len();
        if !self.goroutines.contains_key(&goid) {
            if live >= limits.max_goroutines {
                self.untracked_goroutines += 1;
                return None;
            }
            let mut gr = Goroutine::new(goid, g, now_ns);
            gr.origin = reader.origin(g, goid);
            self.goroutines.insert(goid, gr);
        }
        let gr = self.goroutines.get_mut(&goid).expect("present");
        if let GoroutineState::Exited { seen: false, .. } = gr.state {
            // An event after an exit found in memory means the check raced with a reused
            // `g`: trust the event. (An exit the probe saw is final: goids are never reused,
            // and a late event is one drained after the exit, from another ring buffer.)
            self.exited.retain(|&(_, id)| id != goid);
            gr.state = GoroutineState::Running;
        }
        gr.g = g;
        Some(gr)
    }

    /// Notices, in the target's memory, goroutines that exited (not parked, no event for
    /// `quiet_ns`): how exits are found without the lifecycle probes.
    pub fn find_exited(&mut self, now_ns: u64, quiet_ns: u64, reader: &dyn GoroutineReader) {
        for gr in self.goroutines.values_mut() {
            if gr.state == GoroutineState::Running
                && now_ns.saturating_sub(gr.last_event_ns) >= quiet_ns
                && reader.has_exited(gr.g, gr.goid) == Some(true)
            {
                gr.state = GoroutineState::Exited {
                    at_ns: now_ns,
                    seen: false,
                };
                self.exited.push_back((now_ns, gr.goid));
            }
        }
    }

    /// Drops exited goroutines beyond the retention limits.
    pub fn retain(&mut self, now_ns: u64, limits: &Retention) {
        while let Some(&(at, goid)) = self.exited.front() {
            let too_many = self.exited.len() > limits.max_exited;
            let too_old = now_ns.saturating_sub(at) > limits.exited_for_ns;
            if !(too_many || too_old) {
                break;
            }
            self.exited.pop_front();
            self.goroutines.remove(&goid);
        }
    }

    /// A goroutine was created (`runtime.newproc1` returned it).
    ///
    /// A uprobe can fire twice for one execution: when a signal (Go preempts goroutines with
    /// SIGURG) interrupts the single-step of the probed instruction, the kernel restarts it
    /// and the probe fires again (kernel/events/uprobes.c `handle_singlestep`). So a second
    /// creation or exit of one goroutine is not counted again. Whether it counted.
    pub fn on_created(
        &mut self,
        goid: u64,
        g: u64,
        origin: Origin,
        now_ns: u64,
        limits: &Retention,
    ) -> bool {
        if let Some(gr) = self.goroutines.get_mut(&goid) {
            if !gr.created_seen {
                // Its first park was drained before its creation. The probe read the origin
                // at creation: it is the one to keep.
                gr.created_seen = true;
                self.created_total += 1;
                gr.origin = Some(origin);
                return true;
            }
            return false;
        }
        self.created_total += 1;
        if self.goroutines.len() - self.exited.len() >= limits.max_goroutines {
            self.untracked_goroutines += 1;
            self.untracked_live += 1;
            return true;
        }
        let mut gr = Goroutine::new(goid, g, now_ns);
        gr.origin = Some(origin);
        gr.created_seen = true;
        self.goroutines.insert(goid, gr);
        true
    }

    /// A goroutine exited (`runtime.goexit1` ran on it); a second exit is a probe firing
    /// twice (see [`ProcessBlocking::on_created`]). Whether it counted.
    pub fn on_exited(&mut self, goid: u64, now_ns: u64, limits: &Retention) -> bool {
        match self.goroutines.get_mut(&goid) {
            Some(gr) => match gr.state {
                GoroutineState::Exited { seen: true, .. } => return false,
                GoroutineState::Exited { seen: false, .. } => {
                    // Found dead in memory first; the probe's word is final.
                    self.exited_total += 1;
                    gr.state = GoroutineState::Exited {
                        at_ns: now_ns,
                        seen: true,
                    };
                }
                _ => {
                    self.exited_total += 1;
                    gr.state = GoroutineState::Exited {
                        at_ns: now_ns,
                        seen: true,
                    };
                    gr.last_event_ns = now_ns;
                    self.exited.push_back((now_ns, goid));
                    // At once, not at the next sweep: a target ending 100,000 goroutines a
                    // second would otherwise hold seconds' worth of them.
                    while self.exited.len() > limits.max_exited {
                        if let Some((_, old)) = self.exited.pop_front() {
                            self.goroutines.remove(&old);
                        }
                    }
                }
            },
            None => {
                self.exited_total += 1;
                self.untracked_live = self.untracked_live.saturating_sub(1);
            }
        }
        true
    }

    /// Live goroutines: (the runtime's own, the rest), classifying each by where it started.
    /// Untracked ones count with the rest.
    pub fn live(&self, is_system: impl Fn(u64) -> bool) -> (u64, u64) {
        let (mut system, mut user) = (0, self.untracked_live);
        for gr in self.goroutines.values() {
            if matches!(gr.state, GoroutineState::Exited { .. }) {
                continue;
            }
            if gr.origin.is_some_and(|o| is_system(o.startpc)) {
                system += 1;
            } else {
                user += 1;
            }
        }
        (system, user)
    }

    /// Marks every live goroutine exited (the process is gone).
    pub fn process_exited(&mut self, now_ns: u64) {
        self.parked_now.clear();
        for gr in self.goroutines.values_mut() {
            if !matches!(gr.state, GoroutineState::Exited { .. }) {
                gr.state = GoroutineState::Exited {
                    at_ns: now_ns,
                    seen: false,
                };
                self.exited.push_back((now_ns, gr.goid));
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use std::cell::RefCell;

    use super::*;

    #[derive(Default)]
    struct FakeMemory {
        exited: RefCell<Vec<u64>>,
    }

    impl GoroutineReader for FakeMemory {
        fn origin(&self, g: u64, goid: u64) -> Option<Origin> {
            Some(Origin {
                gopc: g + goid,
                startpc: g,
            })
        }
        fn has_exited(&self, _g: u64, goid: u64) -> Option<bool> {
            Some(self.exited.borrow().contains(&goid))
        }
    }

    const LIMITS: Retention = Retention {
        max_goroutines: 3,
        max_exited: 2,
        exited_for_ns: 1_000,
    };

    #[test]
    fn blocks_accumulate_per_reason_and_goroutine() {
        let mem = FakeMemory::default();
        let mut p = ProcessBlocking::default();
        p.on_block(7, 0x100, 14, 1_000, 21_000, &[], &LIMITS, &mem);
        p.on_block(7, 0x100, 14, 30_000, 35_000, &[0xabc], &LIMITS, &mem);
        p.on_block(7, 0x100, 3, 40_000, 40_500, &[], &LIMITS, &mem);
        p.on_block(8, 0x200, 14, 0, 100, &[], &LIMITS, &mem);
        assert_eq!(p.reasons[&14].histogram.count(), 3);
        assert_eq!(p.reasons[&14].histogram.sum_ns(), 25_100);
        let g7 = &p.goroutines[&7];
        assert_eq!(
            g7.origin,
            Some(Origin {
                gopc: 0x107,
                startpc: 0x100
            })
        );
        let chan = g7.blocking.iter().find(|b| b.reason == 14).unwrap();
        assert_eq!(
            (chan.count, chan.blocked_ns, chan.max_ns),
            (2, 25_000, 20_000)
        );
        // The longest block had no frames captured; a shorter one's frames do not replace it.
        assert!(chan.max_frames.is_empty());
        assert_eq!(g7.blocking.len(), 2);
    }

    #[test]
    fn parked_snapshot_sets_state_and_gauge() {
        let mem = FakeMemory::default();
        let mut p = ProcessBlocking::default();
        p.on_parked_snapshot(
            &[(7, 0x100, 14, 500), (8, 0x200, 14, 600), (9, 0x300, 3, 700)],
            1_000,
            &LIMITS,
            &mem,
        );
        assert_eq!(p.parked_now, BTreeMap::from([(3, 1), (14, 2)]));
        assert_eq!(
            p.goroutines[&8].state,
            GoroutineState::Waiting {
                reason: 14,
                since_ns: Some(600)
            }
        );
        p.on_parked_snapshot(&[(9, 0x300, 3, 700)], 2_000, &LIMITS, &mem);
        assert_eq!(p.parked_now, BTreeMap::from([(3, 1)]));
        assert_eq!(p.goroutines[&8].state, GoroutineState::Running);
    }

    #[test]
    fn goroutines_parked_before_attach_count_until_they_resume() {
        let mem = FakeMemory::default();
        let mut p = ProcessBlocking::default();
        let walked = |goid, status, waitreason| WalkedGoroutine {
            g: goid * 0x100,
            goid,
            status,
            waitreason,
            gopc: 1,
            startpc: 2,
        };
        p.on_walk(
            &[
                walked(1, G_WAITING, 14),
                walked(2, G_WAITING, 14),
                walked(3, 2, 0),
                walked(4, G_DEAD, 0),
            ],
            50,
            &LIMITS,
        );
        assert_eq!(p.goroutines.len(), 3, "the dead g is not a goroutine");
        assert_eq!(p.parked_now, BTreeMap::from([(14, 2)]));
        // The first snapshot does not see them (they are not in the probes' map) and keeps them.
        p.on_parked_snapshot(&[], 100, &LIMITS, &mem);
        assert_eq!(p.parked_now, BTreeMap::from([(14, 2)]));
        assert_eq!(
            p.goroutines[&1].state,
            GoroutineState::Waiting {
                reason: 14,
                since_ns: None
            }
        );
        // One resumes: its park was not seen.
        p.on_resume_unmatched(1, 0x100, 150, &LIMITS, &mem);
        p.on_parked_snapshot(&[], 200, &LIMITS, &mem);
        assert_eq!(p.parked_now, BTreeMap::from([(14, 1)]));
        assert_eq!(p.goroutines[&1].state, GoroutineState::Running);
        // The other resumed and parked again before the snapshot: counted once.
        p.on_parked_snapshot(&[(2, 0x200, 9, 180)], 300, &LIMITS, &mem);
        assert_eq!(p.parked_now, BTreeMap::from([(9, 1)]));
        assert_eq!(
            p.goroutines[&2].origin,
            Some(Origin {
                gopc: 1,
                startpc: 2
            })
        );
    }

    #[test]
    fn exited_goroutines_are_capped_as_they_exit() {
        let mut p = ProcessBlocking::default();
        let o = Origin {
            gopc: 1,
            startpc: 2,
        };
        for goid in 0..(LIMITS.max_exited as u64 + 5) {
            p.on_created(goid, 0x500, o, 10, &LIMITS);
            p.on_exited(goid, 20, &LIMITS);
        }
        assert_eq!(p.exited.len(), LIMITS.max_exited);
        assert_eq!(p.goroutines.len(), LIMITS.max_exited);
        assert!(!p.goroutines.contains_key(&4) && p.goroutines.contains_key(&5));
        assert_eq!(p.exited_total, LIMITS.max_exited as u64 + 5);
    }

    #[test]
    fn lifecycle_counts_each_goroutine_once() {
        let mut p = ProcessBlocking::default();
        let o = Origin {
            gopc: 1,
            startpc: 2,
        };
        p.on_created(5, 0x500, o, 10, &LIMITS);
        p.on_created(5, 0x500, o, 11, &LIMITS); // the probe hit twice
        p.on_exited(5, 20, &LIMITS);
        p.on_exited(5, 21, &LIMITS);
        assert_eq!((p.created_total, p.exited_total), (1, 1));
        // A late park of an exited goroutine does not bring it back.
        p.on_resume_unmatched(5, 0x500, 30, &LIMITS, &FakeMemory::default());
        assert!(matches!(
            p.goroutines[&5].state,
            GoroutineState::Exited { seen: true, .. }
        ));
        assert_eq!(p.live(|_| false), (0, 0));
        // A goroutine first seen parking, then its creation.
        p.on_block(6, 0x600, 14, 0, 10, &[], &LIMITS, &FakeMemory::default());
        p.on_created(6, 0x600, o, 12, &LIMITS);
        assert_eq!(p.created_total, 2);
        assert_eq!(p.live(|startpc| startpc == 2), (1, 0));
    }

    #[test]
    fn tracking_and_retention_are_bounded() {
        let mem = FakeMemory::default();
        let mut p = ProcessBlocking::default();
        for goid in 1..=5 {
            p.on_block(goid, goid * 0x100, 14, 0, 10, &[], &LIMITS, &mem);
        }
        assert_eq!(p.goroutines.len(), 3);
        assert_eq!(p.untracked_goroutines, 2);
        // Still counted process-wide.
        assert_eq!(p.reasons[&14].histogram.count(), 5);

        mem.exited.borrow_mut().extend([1, 2, 3]);
        p.find_exited(100, 50, &mem);
        p.retain(100, &LIMITS);
        // Three exited, two kept.
        assert_eq!(p.goroutines.len(), 2);
        assert!(
            p.goroutines
                .values()
                .all(|g| matches!(g.state, GoroutineState::Exited { at_ns: 100, .. }))
        );
        // Room for new goroutines again.
        p.on_block(6, 0x600, 14, 0, 10, &[], &LIMITS, &mem);
        assert!(p.goroutines.contains_key(&6));
        // Old exited goroutines age out.
        p.find_exited(5_000, 50, &mem);
        p.retain(5_000, &LIMITS);
        assert_eq!(p.goroutines.keys().copied().collect::<Vec<_>>(), vec![6]);
    }
}
