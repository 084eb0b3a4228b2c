//! Estimates under time sampling (`--overhead-budget`, `budget.rs`): a park of length `d`
//! is seen whole only when it starts in the first `window - d` of a `period`; weighting each
//! seen park by `period / (window - d)` (the inverse of that chance, for parks spread evenly
//! in time) makes the sums unbiased estimates of what happened in full.

use std::collections::BTreeMap;

/// The sampling in force.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct SamplingWindow {
    pub period_ns: u64,
    pub window_ns: u64,
}

/// A park whose weight would pass this many times `period / window` is too close to the
/// window's length to be estimated from: capped (at the price of a small bias).
const MAX_WEIGHT_FACTOR: f64 = 10.0;

impl SamplingWindow {
    pub fn ratio(&self) -> f64 {
        if self.window_ns >= self.period_ns {
            1.0
        } else {
            self.window_ns as f64 / self.period_ns as f64
        }
    }

    /// How many parks of length `duration_ns` one seen park stands for.
    pub fn weight(&self, duration_ns: u64) -> f64 {
        if self.window_ns >= self.period_ns {
            return 1.0;
        }
        let cap = MAX_WEIGHT_FACTOR / self.ratio();
        let room = self.window_ns.saturating_sub(duration_ns);
        if room == 0 {
            return cap;
        }
        (self.period_ns as f64 / room as f64).min(cap)
    }
}

/// The parks seen in the current window, weighed once it is over: the probes are in from
/// the window's start until the kernel has removed them, a little after the suspension, and
/// that end is read from the parks themselves (the last one seen).
#[derive(Debug, Default)]
pub struct OpenWindow {
    pub window: Option<SamplingWindow>,
    /// When the park probes were in (CLOCK_MONOTONIC ns).
    pub start_ns: u64,
    last_ns: u64,
    /// (pid, reason, length ns, resume ns).
    parks: Vec<(u32, u8, u64, u64)>,
}

/// Parks held per window at most; beyond it a park is weighed at once, with the planned
/// window's length.
pub const MAX_WINDOW_PARKS: usize = 1 << 20;

impl OpenWindow {
    /// Holds a park seen; false when full (weigh it now).
    pub fn record(&mut self, pid: u32, reason: u8, length_ns: u64, resume_ns: u64) -> bool {
        if self.parks.len() >= MAX_WINDOW_PARKS {
            return false;
        }
        self.last_ns = self.last_ns.max(resume_ns);
        self.parks.push((pid, reason, length_ns, resume_ns));
        true
    }

    /// Ends this window at the start of the next (`next_start_ns`): parks that ended after
    /// it belong to the next. Returns the parks weighed: (pid, reason, length ns, weight).
    pub fn close(
        &mut self,
        next: Option<SamplingWindow>,
        next_start_ns: u64,
    ) -> Vec<(u32, u8, u64, f64)> {
        let (mine, later): (Vec<_>, Vec<_>) = std::mem::take(&mut self.parks)
            .into_iter()
            .partition(|&(_, _, _, resume_ns)| resume_ns < next_start_ns);
        let weighed = match self.window {
            Some(planned) => {
                let last = mine.iter().map(|p| p.3).max().unwrap_or(self.start_ns);
                // As long as the parks say the probes were in; no longer than planned with
                // some slack (a stray late event must not stretch it).
                let seen = last.saturating_sub(self.start_ns);
                let w = SamplingWindow {
                    period_ns: planned.period_ns,
                    window_ns: if seen > 0 {
                        seen.min(planned.window_ns * 2)
                    } else {
                        planned.window_ns
                    },
                };
                mine.into_iter()
                    .map(|(pid, reason, d, _)| (pid, reason, d, w.weight(d)))
                    .collect()
            }
            None => Vec::new(),
        };
        self.window = next;
        self.start_ns = next_start_ns;
        self.last_ns = later.iter().map(|p| p.3).max().unwrap_or(0);
        self.parks = later;
        weighed
    }
}

/// Estimated parks and blocked seconds by wait reason.
#[derive(Debug, Clone, Default)]
pub struct Estimates {
    pub by_reason: BTreeMap<u8, (f64, f64)>,
}

impl Estimates {
    pub fn add(&mut self, reason: u8, duration_ns: u64, w: f64) {
        let e = self.by_reason.entry(reason).or_default();
        e.0 += w;
        e.1 += w * duration_ns as f64 / 1e9;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_window_ends_where_its_parks_do() {
        let planned = SamplingWindow {
            period_ns: 1_000,
            window_ns: 100,
        };
        let mut open = OpenWindow::default();
        open.close(Some(planned), 5_000);
        // The parks say the probes were in for 80 ns of the 100 planned.
        assert!(open.record(1, 7, 10, 5_050));
        assert!(open.record(1, 7, 10, 5_080));
        // A park of the next window, drained before it was closed.
        assert!(open.record(1, 7, 10, 6_010));
        let weighed = open.close(Some(planned), 6_000);
        assert_eq!(weighed.len(), 2);
        for (_, _, _, w) in weighed {
            assert!((w - 1_000.0 / 70.0).abs() < 1e-9, "{w}");
        }
        assert_eq!(open.close(None, 7_000).len(), 1);
    }

    #[test]
    fn full_measurement_weighs_one() {
        let w = SamplingWindow {
            period_ns: 100,
            window_ns: 100,
        };
        assert_eq!(w.weight(50), 1.0);
    }

    #[test]
    fn short_parks_weigh_the_inverse_ratio_long_ones_more() {
        let w = SamplingWindow {
            period_ns: 5_000_000_000,
            window_ns: 500_000_000,
        };
        assert!((w.weight(1_000) - 10.0).abs() < 1e-3);
        assert!((w.weight(250_000_000) - 20.0).abs() < 1e-9);
        assert_eq!(w.weight(500_000_000), 100.0);
    }

    /// Parks of one length spread evenly over many periods: the estimate equals the truth.
    #[test]
    fn estimates_are_unbiased_for_evenly_spread_parks() {
        let period = 1_000_000u64;
        let window = SamplingWindow {
            period_ns: period,
            window_ns: 200_000,
        };
        let d = 50_000u64;
        let mut truth = 0u64;
        let mut est = Estimates::default();
        // A park starting every 997 ns over 1,000 periods.
        let mut t = 0;
        while t < 1_000 * period {
            truth += 1;
            let start_in = t % period;
            if start_in + d <= window.window_ns {
                est.add(7, d, window.weight(d));
            }
            t += 997;
        }
        let (n, secs) = est.by_reason[&7];
        assert!((n / truth as f64 - 1.0).abs() < 0.01, "{n} vs {truth}");
        let true_secs = truth as f64 * d as f64 / 1e9;
        assert!((secs / true_secs - 1.0).abs() < 0.01);
    }
}
