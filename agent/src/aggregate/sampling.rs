//! Estimates under time sampling (`--overhead-budget`, `budget.rs`): a park of length `d`
//! is seen whole only when it starts in the first `window - d` of a `period`; weighting each
//! seen park by `period / (window - d)` (the inverse of that chance, for parks spread evenly
//! in time) makes the sums unbiased estimates of what happened in full. The same holds for
//! an HTTP request (seen when its start and end both fall in the window) and, with `d = 0`,
//! for instants such as a goroutine's creation or exit.
//!
//! That holds while the target goes at the same pace with the probes in as without. A
//! target that runs flat out (a server under a closed loop of clients, a batch job) is slowed
//! by the probes' traps in the window, so parks less there than over the rest of the period:
//! time weights alone would underestimate it as many times over. The runtime's own count of
//! scheduling events (read from the target's memory with the probes in or out, see
//! [`Pace`]) says how much: where the window's share of it departs from its share of the time
//! beyond chance, each count's weight is multiplied by the ratio of the two paces. Blocked
//! seconds keep the time weights: they measure how many goroutines were parked over time,
//! which the probes change far less than the count of parks (a ping-pong has one of its two
//! sides parked at any moment without probes, 1.4 on average with them in), while each park seen in a slowed window lasts through the other
//! side's traps: weighed by the pace too, a flat-out ping-pong's estimate came to hundreds of
//! seconds blocked per second of its two goroutines.

use std::collections::BTreeMap;

use super::histogram::WeightedHistogram;

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

/// A reading of a target's progress at `ns` (CLOCK_MONOTONIC): the runtime's count of
/// scheduling events so far (its scheduling-latency histogram's, which counts one in eight
/// of each goroutine's times out of running: parks, preemptions, system calls) and its
/// goroutine id generator (`sched.goidgen`: goroutines created, taken by each P in batches
/// of [`GOID_BATCH`]).
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct ProgressMark {
    pub ns: u64,
    pub events: u64,
    pub goids: u64,
}

/// Goroutine ids a P takes from `sched.goidgen` at a time (`_GoidCacheBatch`).
pub const GOID_BATCH: u64 = 16;
/// Counts (events, batches of ids) a period must hold for its pace to be compared with its
/// window's.
const MIN_PACE_COUNTS: u64 = 100;
/// How far (standard deviations) the window's share of the events must be from its share of
/// the time to tell a target slowed (or sped) in the window from chance.
const PACE_SIGMAS: f64 = 3.0;

/// How many times faster a target went over a period than in its window, by two of the
/// runtime's counters: its scheduling events (for parks and requests) and its goroutine
/// creations (for creations and exits; a program's mix of events changes under the probes,
/// so one does not stand for the other: a program creating goroutines flat out counted 6.4
/// times fewer scheduling events in its windows, but 4.4 times fewer creations).
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Pace {
    pub events: f64,
    pub creations: f64,
}

impl Pace {
    pub const ONE: Pace = Pace {
        events: 1.0,
        creations: 1.0,
    };

    /// The paces read at the window's start, its end (the probes out) and the next window's
    /// start. Where a counter departs from one pace within chance the time weights hold (1);
    /// where it counted too little to tell, creations take the events' pace.
    pub fn of(start: ProgressMark, end: ProgressMark, next: ProgressMark) -> Pace {
        let of = |count: fn(&ProgressMark) -> u64, unit: u64| {
            pace(
                (start.ns, count(&start) / unit),
                (end.ns, count(&end) / unit),
                (next.ns, count(&next) / unit),
            )
        };
        let events = of(|m| m.events, 1);
        Pace {
            events: events.flatten().unwrap_or(1.0),
            creations: match of(|m| m.goids, GOID_BATCH) {
                Some(p) => p.unwrap_or(1.0),
                None => events.flatten().unwrap_or(1.0),
            },
        }
    }

    /// The pace of what `seen` counts.
    pub fn of_seen(&self, seen: &Seen) -> f64 {
        match seen {
            Seen::Created | Seen::Exited => self.creations,
            Seen::Park { .. } | Seen::Request { .. } => self.events,
        }
    }
}

/// How many times faster a counter went over the whole period than in its window, from
/// (time, count) at the window's start, its end and the next window's start: `None` where
/// it counted too little to tell (or the readings are out of order, or a counter went back,
/// another process's after a pid reuse), `Some(None)` where the difference is within
/// chance. Under the hypothesis of one pace, the window's counts are a binomial draw of the
/// period's with its share of the time.
fn pace(start: (u64, u64), end: (u64, u64), next: (u64, u64)) -> Option<Option<f64>> {
    let window_ns = end.0.checked_sub(start.0)?;
    let period_ns = next.0.checked_sub(start.0)?;
    let in_window = end.1.checked_sub(start.1)?;
    let in_period = next.1.checked_sub(start.1)?;
    if window_ns == 0 || window_ns >= period_ns || in_period < MIN_PACE_COUNTS {
        return None;
    }
    let share = window_ns as f64 / period_ns as f64;
    let expected = in_period as f64 * share;
    let sd = (expected * (1.0 - share)).sqrt();
    if (expected - in_window as f64).abs() < PACE_SIGMAS * sd {
        return Some(None);
    }
    Some(Some(expected / in_window.max(1) as f64))
}

/// How much one observation stands for: `count` times in the counts (parks, requests,
/// goroutines created and exited), `time` times in the blocked seconds.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Weight {
    pub count: f64,
    pub time: f64,
}

impl Weight {
    pub const ONE: Weight = Weight {
        count: 1.0,
        time: 1.0,
    };

    /// The time weight alone (the target at one pace).
    pub fn of_time(w: f64) -> Weight {
        Weight { count: w, time: w }
    }
}

/// Something the sampled probes saw, to be weighed once its window is over.
#[derive(Debug, Clone, PartialEq)]
pub enum Seen {
    /// A park, with its call site when its stack was captured.
    Park { reason: u8, site: Option<u32> },
    /// A goroutine created (an instant: seen when it falls in the window).
    Created,
    /// A goroutine exited.
    Exited,
    /// An HTTP request served whole in the window, with its parks: (reason, parks, ns).
    Request { blocked: Box<[(u8, u64, u64)]> },
}

/// When each family of the sampled probes was in, in one window (CLOCK_MONOTONIC ns). They
/// go in one after the other, a few ms apart on a busy target (a goroutine spawner's first
/// creation of a window was seen 0.3 to 8 ms after its first park): a family's window starts
/// when its own probes are in.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct ProbesIn {
    pub parks_ns: u64,
    pub lifecycle_ns: u64,
    pub http_ns: u64,
}

impl ProbesIn {
    /// Every family in at `ns` (the probes stayed in).
    pub fn all_at(ns: u64) -> ProbesIn {
        ProbesIn {
            parks_ns: ns,
            lifecycle_ns: ns,
            http_ns: ns,
        }
    }

    /// Each family's later time: when it was in for both.
    pub fn latest(self, other: ProbesIn) -> ProbesIn {
        ProbesIn {
            parks_ns: self.parks_ns.max(other.parks_ns),
            lifecycle_ns: self.lifecycle_ns.max(other.lifecycle_ns),
            http_ns: self.http_ns.max(other.http_ns),
        }
    }

    /// When the probes that see `seen` were in.
    fn of(&self, seen: &Seen) -> u64 {
        match seen {
            Seen::Park { .. } => self.parks_ns,
            Seen::Created | Seen::Exited => self.lifecycle_ns,
            Seen::Request { .. } => self.http_ns,
        }
    }
}

/// One observation: the process, how long it lasted (0 for instants), when it ended.
#[derive(Debug, Clone, PartialEq)]
pub struct Observation {
    pub pid: u32,
    pub length_ns: u64,
    pub end_ns: u64,
    pub seen: Seen,
}

/// What was seen in the current window, weighed once it is over. Each family's probes are
/// all in from its [`ProbesIn`] time until the suspension ([`OpenWindow::ended`]): what it
/// saw in that span is weighed by its length, the rest (seen while the probes went in or out,
/// one by one) is left out of the estimates. Where the suspension's time is not known, the
/// window runs from the parks' start to the last event (the kernel removes the probes a
/// little after the suspension).
#[derive(Debug, Default)]
pub struct OpenWindow {
    pub window: Option<SamplingWindow>,
    /// When the probes were in (CLOCK_MONOTONIC ns).
    pub probes_in: ProbesIn,
    /// When the probes' removal began: all were in until then.
    end_ns: Option<u64>,
    seen: Vec<Observation>,
    /// What ended before this was measured in full (the period before the first sampled
    /// window; drained after that window opened, it counts once, not as a sample).
    full_until_ns: u64,
}

/// Observations held per window at most; beyond it one is weighed at once, with the planned
/// window's length.
pub const MAX_WINDOW_OBSERVATIONS: usize = 1 << 20;

impl OpenWindow {
    /// Holds an observation until the window ends; gives it back with its weight where it
    /// counts now: it ended while everything was measured (once), or the window holds too
    /// many (the planned window's time weight).
    pub fn record(&mut self, o: Observation) -> Option<(Observation, Weight)> {
        if o.end_ns < self.full_until_ns {
            return Some((o, Weight::ONE));
        }
        if self.seen.len() >= MAX_WINDOW_OBSERVATIONS {
            let w = self.window.map_or(1.0, |w| w.weight(o.length_ns));
            return Some((o, Weight::of_time(w)));
        }
        self.seen.push(o);
        None
    }

    /// The probes' removal began at `end_ns`.
    pub fn ended(&mut self, end_ns: u64) {
        self.end_ns = Some(end_ns);
    }

    /// Ends this window at the start of the next (`next_start`'s parks): what ended after it
    /// belongs to the next. Returns the observations weighed, each count's weight multiplied
    /// by its process's `pace` over the period ([`Pace::ONE`] where it went at one pace).
    pub fn close(
        &mut self,
        next: Option<SamplingWindow>,
        next_start: ProbesIn,
        pace: impl Fn(u32) -> Pace,
    ) -> Vec<(Observation, Weight)> {
        let next_start_ns = next_start.parks_ns;
        let (mine, later): (Vec<_>, Vec<_>) = std::mem::take(&mut self.seen)
            .into_iter()
            .partition(|o| o.end_ns < next_start_ns);
        let weighed = match (self.window, self.end_ns) {
            (Some(planned), Some(end_ns)) => {
                let n = mine.len();
                let weighed: Vec<_> = mine
                    .into_iter()
                    .filter_map(|o| {
                        let from = self.probes_in.of(&o.seen);
                        if o.end_ns.saturating_sub(o.length_ns) < from || o.end_ns > end_ns {
                            return None;
                        }
                        let w = SamplingWindow {
                            period_ns: planned.period_ns,
                            window_ns: end_ns.saturating_sub(from).max(1),
                        };
                        let time = w.weight(o.length_ns);
                        let count = time * pace(o.pid).of_seen(&o.seen);
                        Some((o, Weight { count, time }))
                    })
                    .collect();
                log::debug!(
                    "window closed: {} of {n} observations while all their probes were in, for \
                     {:.4} s from the parks' (planned {:.4} s)",
                    weighed.len(),
                    end_ns.saturating_sub(self.probes_in.parks_ns) as f64 / 1e9,
                    planned.window_ns as f64 / 1e9
                );
                weighed
            }
            (Some(planned), None) => {
                let start_ns = self.probes_in.parks_ns;
                let last = mine.iter().map(|o| o.end_ns).max().unwrap_or(start_ns);
                // As long as the events say the probes were in; no longer than planned with
                // some slack (a stray late event must not stretch it).
                let seen = last.saturating_sub(start_ns);
                log::debug!(
                    "window closed: {} observations in {:.4} s (planned {:.4} s)",
                    mine.len(),
                    seen as f64 / 1e9,
                    planned.window_ns as f64 / 1e9
                );
                let w = SamplingWindow {
                    period_ns: planned.period_ns,
                    window_ns: if seen > 0 {
                        seen.min(planned.window_ns * 2)
                    } else {
                        planned.window_ns
                    },
                };
                mine.into_iter()
                    .map(|o| {
                        let time = w.weight(o.length_ns);
                        let count = time * pace(o.pid).of_seen(&o.seen);
                        (o, Weight { count, time })
                    })
                    .collect()
            }
            (None, _) => Vec::new(),
        };
        if self.window.is_none() {
            self.full_until_ns = next_start_ns;
        }
        self.window = next;
        self.probes_in = next_start;
        self.end_ns = None;
        self.seen = later;
        weighed
    }
}

/// Adds `parks` and `secs` to `key`'s (parks, seconds).
pub fn add_to<K: Ord>(map: &mut BTreeMap<K, (f64, f64)>, key: K, parks: f64, secs: f64) {
    let e = map.entry(key).or_default();
    e.0 += parks;
    e.1 += secs;
}

/// What happened in full, estimated from what was seen: each observation counts as its
/// `Weight` says (once while everything is measured).
#[derive(Debug, Clone, Default)]
pub struct Estimates {
    /// Parks and blocked seconds by wait reason.
    pub by_reason: BTreeMap<u8, (f64, f64)>,
    /// Parks and blocked seconds by (wait reason, call site).
    pub by_site: BTreeMap<(u8, u32), (f64, f64)>,
    /// Park durations by wait reason: each park's weight grows with its length, so long
    /// parks, seen whole less often, keep their share.
    pub durations: BTreeMap<u8, WeightedHistogram>,
    pub created: f64,
    pub exited: f64,
    pub requests: f64,
    /// Parks and blocked seconds inside HTTP requests, by wait reason.
    pub request_blocked: BTreeMap<u8, (f64, f64)>,
}

impl Estimates {
    pub fn add(&mut self, o: &Observation, w: Weight) {
        match &o.seen {
            Seen::Park { reason, site } => {
                let secs = w.time * o.length_ns as f64 / 1e9;
                add_to(&mut self.by_reason, *reason, w.count, secs);
                self.durations
                    .entry(*reason)
                    .or_default()
                    .record(o.length_ns, w.count, w.time);
                if let Some(site) = site {
                    add_to(&mut self.by_site, (*reason, *site), w.count, secs);
                }
            }
            Seen::Created => self.created += w.count,
            Seen::Exited => self.exited += w.count,
            Seen::Request { blocked } => {
                self.requests += w.count;
                for &(reason, parks, ns) in blocked.iter() {
                    add_to(
                        &mut self.request_blocked,
                        reason,
                        w.count * parks as f64,
                        w.time * ns as f64 / 1e9,
                    );
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A window of a tenth of its period.
    const PLANNED: SamplingWindow = SamplingWindow {
        period_ns: 1_000,
        window_ns: 100,
    };

    #[test]
    fn a_window_ends_where_its_parks_do() {
        let planned = PLANNED;
        let park = |end_ns| Observation {
            pid: 1,
            length_ns: 10,
            end_ns,
            seen: Seen::Park {
                reason: 7,
                site: None,
            },
        };
        let mut open = OpenWindow::default();
        open.close(Some(planned), ProbesIn::all_at(5_000), |_| Pace::ONE);
        // The events say the probes were in for 80 ns of the 100 planned.
        assert!(open.record(park(5_050)).is_none());
        assert!(open.record(park(5_080)).is_none());
        // An instant weighs period / window.
        assert!(
            open.record(Observation {
                pid: 1,
                length_ns: 0,
                end_ns: 5_060,
                seen: Seen::Created,
            })
            .is_none()
        );
        // A park of the next window, drained before it was closed.
        assert!(open.record(park(6_010)).is_none());
        let weighed = open.close(Some(planned), ProbesIn::all_at(6_000), |_| Pace::ONE);
        assert_eq!(weighed.len(), 3);
        for (o, w) in weighed {
            let want = if o.seen == Seen::Created {
                1_000.0 / 80.0
            } else {
                1_000.0 / 70.0
            };
            assert_eq!(w.count, w.time);
            assert!((w.count - want).abs() < 1e-9, "{w:?}");
        }
        assert_eq!(
            open.close(None, ProbesIn::all_at(7_000), |_| Pace::ONE)
                .len(),
            1
        );
    }

    #[test]
    fn each_family_is_weighed_from_its_own_probes_in_to_the_suspension() {
        let planned = PLANNED;
        let seen = |length_ns, end_ns, seen| Observation {
            pid: 1,
            length_ns,
            end_ns,
            seen,
        };
        let park = Seen::Park {
            reason: 7,
            site: None,
        };
        let request = Seen::Request {
            blocked: Box::new([]),
        };
        let mut open = OpenWindow::default();
        open.close(
            Some(planned),
            ProbesIn {
                parks_ns: 5_000,
                lifecycle_ns: 5_010,
                http_ns: 5_020,
            },
            |_| Pace::ONE,
        );
        let kept = [
            // 90 ns of park probes: a 10 ns park is seen whole from 80 ns of starts.
            (seen(10, 5_050, park.clone()), 1_000.0 / 80.0),
            // 80 ns of lifecycle probes.
            (seen(0, 5_030, Seen::Created), 1_000.0 / 80.0),
            (seen(0, 5_085, Seen::Exited), 1_000.0 / 80.0),
            // 70 ns of HTTP probes, a 30 ns request.
            (seen(30, 5_060, request.clone()), 1_000.0 / 40.0),
        ];
        let left_out = [
            // Ended after the removal began, or began before its family's probes were in.
            seen(10, 5_095, park),
            seen(0, 5_005, Seen::Created),
            seen(50, 5_060, request),
        ];
        for o in kept.iter().map(|(o, _)| o).chain(&left_out) {
            assert!(open.record(o.clone()).is_none());
        }
        open.ended(5_090);
        let weighed = open.close(Some(planned), ProbesIn::all_at(6_000), |_| Pace::ONE);
        assert_eq!(weighed.len(), kept.len());
        for ((o, w), (want, want_w)) in weighed.iter().zip(&kept) {
            assert_eq!(o, want);
            assert!(
                (w.count - want_w).abs() < 1e-9,
                "{o:?}: {w:?}, not {want_w}"
            );
        }
    }

    #[test]
    fn what_ended_while_everything_was_measured_counts_once() {
        let planned = PLANNED;
        let created = |end_ns| Observation {
            pid: 1,
            length_ns: 0,
            end_ns,
            seen: Seen::Created,
        };
        let mut open = OpenWindow::default();
        // Everything measured until 5_000, when the first sampled window opened with the
        // probes still in: a creation of the full period drained after that counts once
        // (as a sample of the window it would count period / window times, and a budget's
        // first estimate came out 27 % high).
        open.close(None, ProbesIn::all_at(4_000), |_| Pace::ONE);
        open.close(Some(planned), ProbesIn::all_at(5_000), |_| Pace::ONE);
        assert_eq!(
            open.record(created(4_990)),
            Some((created(4_990), Weight::ONE))
        );
        assert!(open.record(created(5_040)).is_none());
        let weighed = open.close(Some(planned), ProbesIn::all_at(6_000), |_| Pace::ONE);
        assert_eq!(weighed.len(), 1);
        assert!((weighed[0].1.count - 1_000.0 / 40.0).abs() < 1e-9);
        // Sampled windows after it: a straggler of the window before is still a sample.
        assert!(open.record(created(5_990)).is_none());
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
                let park = Observation {
                    pid: 1,
                    length_ns: d,
                    end_ns: t + d,
                    seen: Seen::Park {
                        reason: 7,
                        site: Some(3),
                    },
                };
                est.add(&park, Weight::of_time(window.weight(d)));
            }
            t += 997;
        }
        let (n, secs) = est.by_reason[&7];
        assert!((n / truth as f64 - 1.0).abs() < 0.01, "{n} vs {truth}");
        let true_secs = truth as f64 * d as f64 / 1e9;
        assert!((secs / true_secs - 1.0).abs() < 0.01);
        assert_eq!(est.by_site[&(7, 3)], (n, secs));
    }

    /// Short and long parks spread evenly: the long ones are seen whole far less often (the
    /// histogram of what was seen leans short), the estimated histogram has both as they
    /// were.
    #[test]
    fn the_estimated_histogram_keeps_long_parks_share() {
        use crate::aggregate::histogram::DurationHistogram;
        let period = 1_000_000u64;
        let window = SamplingWindow {
            period_ns: period,
            window_ns: 200_000,
        };
        let (short, long) = (10_000u64, 150_000u64);
        let mut truth = DurationHistogram::default();
        let mut seen = DurationHistogram::default();
        let mut est = Estimates::default();
        for (d, every) in [(short, 997u64), (long, 4_999)] {
            let mut t = 0;
            while t < 1_000 * period {
                truth.record(d);
                if t % period + d <= window.window_ns {
                    seen.record(d);
                    let park = Observation {
                        pid: 1,
                        length_ns: d,
                        end_ns: t + d,
                        seen: Seen::Park {
                            reason: 7,
                            site: None,
                        },
                    };
                    est.add(&park, Weight::of_time(window.weight(d)));
                }
                t += every;
            }
        }
        let bucket = |h: &DurationHistogram, d| {
            h.buckets_seconds()[DurationHistogram::bucket_of(d)].1 as f64
        };
        let share_of_long = |h: &DurationHistogram| bucket(h, long) / h.count() as f64;
        // A sixth of the parks are long; of those seen, one in twenty.
        assert!((share_of_long(&truth) - 1.0 / 6.0).abs() < 0.01);
        assert!(share_of_long(&seen) < 0.06, "{seen:?}");
        let h = &est.durations[&7];
        let cumulative = h.cumulative_buckets();
        let at = |d| cumulative[DurationHistogram::bucket_of(d)].1 as f64;
        let (est_short, est_long) = (at(short), at(long) - at(short));
        assert!(
            (est_short / bucket(&truth, short) - 1.0).abs() < 0.01,
            "{h:?}"
        );
        assert!(
            (est_long / bucket(&truth, long) - 1.0).abs() < 0.01,
            "{h:?}"
        );
        assert_eq!(h.count() as f64, est_short + est_long);
        let true_secs = truth.sum_ns() as f64 / 1e9;
        assert!((h.sum_seconds() / true_secs - 1.0).abs() < 0.01);
        assert!((h.sum_seconds() - est.by_reason[&7].1).abs() < 1e-9);
    }

    /// Requests of one length and creations spread evenly over many periods, weighed by
    /// `close` with the window their events show: the estimates equal the truth.
    #[test]
    fn requests_and_instants_are_estimated_through_windows() {
        let (period, window_ns, d) = (1_000_000u64, 250_000u64, 40_000u64);
        let planned = SamplingWindow {
            period_ns: period,
            window_ns,
        };
        let mut open = OpenWindow::default();
        let mut est = Estimates::default();
        let (mut requests, mut created) = (0u64, 0u64);
        for k in 0..500u64 {
            let start = k * period;
            for (o, w) in open.close(Some(planned), ProbesIn::all_at(start), |_| Pace::ONE) {
                est.add(&o, w);
            }
            // A request starting every 1,009 ns and a creation every 503 ns over the period;
            // what falls whole in the window is seen.
            let mut t = (k * 7) % 1_009;
            while t < period {
                requests += 1;
                if t + d <= window_ns {
                    let o = Observation {
                        pid: 1,
                        length_ns: d,
                        end_ns: start + t + d,
                        seen: Seen::Request {
                            blocked: Box::new([(9, 2, 30_000)]),
                        },
                    };
                    assert!(open.record(o).is_none());
                }
                t += 1_009;
            }
            let mut t = (k * 3) % 503;
            while t < period {
                created += 1;
                if t < window_ns {
                    let o = Observation {
                        pid: 1,
                        length_ns: 0,
                        end_ns: start + t,
                        seen: Seen::Created,
                    };
                    assert!(open.record(o).is_none());
                }
                t += 503;
            }
        }
        for (o, w) in open.close(None, ProbesIn::all_at(500 * period), |_| Pace::ONE) {
            est.add(&o, w);
        }
        // The window is read from the last event in it, a little short of the planned one:
        // within 1 %.
        assert!(
            (est.requests / requests as f64 - 1.0).abs() < 0.01,
            "{est:?}"
        );
        assert!((est.created / created as f64 - 1.0).abs() < 0.01, "{est:?}");
        let (parks, secs) = est.request_blocked[&9];
        assert!((parks / (2.0 * requests as f64) - 1.0).abs() < 0.01);
        assert!((secs / (requests as f64 * 30e-6) - 1.0).abs() < 0.01);
    }

    fn mark(ns: u64, events: u64) -> ProgressMark {
        ProgressMark {
            ns,
            events,
            goids: 0,
        }
    }

    /// The events' pace alone (no goroutines created).
    fn events_pace(start: ProgressMark, end: ProgressMark, next: ProgressMark) -> Option<f64> {
        let p = Pace::of(start, end, next);
        assert_eq!(p.creations, p.events, "creations take the events' pace");
        (p.events != 1.0).then_some(p.events)
    }

    #[test]
    fn one_pace_keeps_the_time_weights() {
        // 1,000 events a second, a 0.3 s window in a 3 s period, with a little noise.
        assert_eq!(
            events_pace(mark(0, 0), mark(300, 290), mark(3_000, 3_000)),
            None
        );
        assert_eq!(
            events_pace(mark(0, 0), mark(300, 312), mark(3_000, 3_000)),
            None
        );
        // Too few events to tell, however far apart.
        assert_eq!(events_pace(mark(0, 0), mark(300, 0), mark(3_000, 90)), None);
        // Readings out of order, or a counter that went back (another process).
        assert_eq!(
            events_pace(mark(300, 0), mark(0, 10), mark(3_000, 3_000)),
            None
        );
        assert_eq!(
            events_pace(mark(0, 500), mark(300, 10), mark(3_000, 3_000)),
            None
        );
        // The probes in all period.
        assert_eq!(
            events_pace(mark(0, 0), mark(3_000, 3_000), mark(3_000, 3_000)),
            None
        );
    }

    #[test]
    fn a_target_slowed_in_the_window_is_weighed_by_its_pace() {
        // Six times slower in the window: 50 events in 0.3 s against 1,000 a second after.
        let p = events_pace(mark(0, 0), mark(300, 50), mark(3_000, 2_750)).unwrap();
        assert!((p - 5.5).abs() < 1e-9, "{p}");
        // Faster in the window (a burst): weighed less.
        let p = events_pace(mark(0, 0), mark(300, 600), mark(3_000, 3_300)).unwrap();
        assert!((p - 0.55).abs() < 1e-9, "{p}");
        // Nothing counted in the window: as if one.
        let p = events_pace(mark(0, 0), mark(300, 0), mark(3_000, 3_000)).unwrap();
        assert!((p - 300.0).abs() < 1e-9, "{p}");
    }

    #[test]
    fn creations_take_the_pace_of_the_goroutine_ids() {
        let m = |ns, events, goids| ProgressMark { ns, events, goids };
        // 0.3 s window of a 3 s period: the events 6.4 times slower in it, the creations
        // (ids taken 16 at a time) 4.4 times.
        let start = m(0, 0, 0);
        let end = m(300, 1_000, 16 * 1_000);
        let next = m(3_000, 64_000, 16 * 44_000);
        let p = Pace::of(start, end, next);
        assert!((p.events - 6.4).abs() < 1e-9, "{p:?}");
        assert!((p.creations - 4.4).abs() < 1e-9, "{p:?}");
        let park = Seen::Park {
            reason: 1,
            site: None,
        };
        assert_eq!(p.of_seen(&park), p.events);
        assert_eq!(p.of_seen(&Seen::Exited), p.creations);
        // Creations at one pace while the events slowed: the time weights hold for them.
        let p = Pace::of(
            start,
            m(300, 1_000, 16 * 1_000),
            m(3_000, 64_000, 16 * 10_000),
        );
        assert_eq!((p.events, p.creations), (6.4, 1.0));
        // Too few creations to tell (under 100 batches): as the events.
        let p = Pace::of(start, m(300, 1_000, 16), m(3_000, 64_000, 16 * 99));
        assert_eq!(p.creations, p.events);
    }

    /// A closed loop: a goroutine always parked, each park 1 µs long without probes and 6 µs
    /// with them in, over many periods, and a progress counter counting one park in two.
    /// Time weights alone count a fraction of its parks; with the pace the count is the
    /// truth, and the blocked seconds (time weights: one goroutine parked all the time) too.
    #[test]
    fn a_slowed_target_is_estimated_whole_through_its_pace() {
        let (period, window_ns) = (10_000_000u64, 1_000_000u64);
        let planned = SamplingWindow {
            period_ns: period,
            window_ns,
        };
        // The same observations weighed by time alone, and by time and pace.
        let (mut timed, mut paced) = (OpenWindow::default(), OpenWindow::default());
        let (mut by_time, mut by_pace) = (Estimates::default(), Estimates::default());
        let (mut parks, mut t) = (0u64, 0u64);
        let mut marks: Option<(ProgressMark, ProgressMark)> = None;
        let periods = 200u64;
        for k in 0..=periods {
            let start = k * period;
            let now = mark(start, parks / 2);
            let p = marks.map_or(Pace::ONE, |(s, e)| Pace::of(s, e, now));
            assert!(k < 2 || p.events > 3.0, "{p:?}");
            for (o, w) in timed.close(Some(planned), ProbesIn::all_at(start), |_| Pace::ONE) {
                by_time.add(&o, Weight::of_time(w.time));
            }
            for (o, w) in paced.close(Some(planned), ProbesIn::all_at(start), |_| p) {
                by_pace.add(&o, w);
            }
            if k == periods {
                break;
            }
            let end = start + window_ns;
            let mut window_end_mark = None;
            while t < start + period {
                let slow = t >= start && t < end;
                let length = if slow { 6_000 } else { 1_000 };
                if t + length > end && window_end_mark.is_none() {
                    window_end_mark = Some(mark(end, parks / 2));
                }
                let park = Observation {
                    pid: 1,
                    length_ns: length,
                    end_ns: t + length,
                    seen: Seen::Park {
                        reason: 7,
                        site: None,
                    },
                };
                if slow && t + length <= end {
                    assert!(timed.record(park.clone()).is_none());
                    assert!(paced.record(park).is_none());
                }
                t += length;
                parks += 1;
            }
            marks = Some((now, window_end_mark.unwrap()));
        }
        let truth = parks as f64;
        let true_secs = (periods * period) as f64 / 1e9;
        let (timed_parks, _) = by_time.by_reason[&7];
        let (paced_parks, paced_secs) = by_pace.by_reason[&7];
        assert!(timed_parks < truth / 5.0, "{timed_parks} of {truth}");
        assert!(
            (paced_parks / truth - 1.0).abs() < 0.02,
            "{paced_parks} of {truth}"
        );
        assert!(
            (paced_secs / true_secs - 1.0).abs() < 0.03,
            "{paced_secs} s of {true_secs}"
        );
    }
}
