//! Goroutine leak detection: analysis apart from rendering.
//!
//! A leak is a set of goroutines created at the same place that park and never wake. The
//! goroutines waiting right now are grouped by (where they were created, why they wait,
//! where they block). A group is a suspect when some of its members have been parked longer
//! than `leak_after` and the group has grown over the last `window`; once a suspect, it stays
//! one while it has members (a leak that stopped growing still holds its goroutines).
//! Goroutines parked before gort attached count as parked since the attach (their park's
//! start is unknown).

use std::{
    collections::{HashMap, HashSet, VecDeque},
    sync::Arc,
};

use super::symbols::Frame;

/// Creation sites remembered at most (they are few; a bound all the same).
const MAX_SITES: usize = 100_000;

/// What groups goroutines.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct GroupKey {
    /// Where the `go` statement is.
    pub created_by: Option<Arc<Frame>>,
    /// Raw wait reason.
    pub reason: u8,
    /// The first frame outside the runtime and standard library where it blocks.
    pub blocking: Option<Frame>,
}

/// One goroutine waiting now, as the analysis needs it.
#[derive(Debug, Clone, Copy)]
pub struct Waiting {
    pub goid: u64,
    pub g: u64,
    pub reason: u8,
    /// CLOCK_MONOTONIC park start; None when the probes did not see it (parked before gort
    /// attached, or while time sampling had the probes out).
    pub since_ns: Option<u64>,
    /// When gort first saw the goroutine: an unseen park began no earlier, as far as gort
    /// can tell (its age is counted from here, or from the attach if later).
    pub first_seen_ns: u64,
    /// `g.gopc`.
    pub gopc: Option<u64>,
}

/// Settings of the analysis.
#[derive(Debug, Clone, Copy)]
pub struct LeakSettings {
    /// Members parked at least this long make a group a candidate.
    pub leak_after_ns: u64,
    /// Growth is measured over this long.
    pub window_ns: u64,
    /// Groups kept at most (the largest); the rest are not tracked.
    pub max_groups: usize,
}

/// A group's state.
#[derive(Debug, Clone, Default)]
pub struct Group {
    /// (when, size) samples over the last window, oldest first.
    pub history: VecDeque<(u64, u64)>,
    pub size: u64,
    /// Members parked at least `leak_after`.
    pub old_members: u64,
    /// The earliest park start among members (None: some were parked before gort attached).
    pub oldest_park_ns: Option<u64>,
    /// Some members parked before gort attached.
    pub parked_before_attach: bool,
    /// A few member goids.
    pub examples: Vec<u64>,
    pub suspect: bool,
}

impl Group {
    /// Growth over the window in goroutines per second: the least-squares slope of the size
    /// samples.
    pub fn growth_per_second(&self) -> f64 {
        let n = self.history.len() as f64;
        if n < 2.0 {
            return 0.0;
        }
        let t0 = self.history[0].0;
        let xs: Vec<f64> = self
            .history
            .iter()
            .map(|&(t, _)| (t - t0) as f64 / 1e9)
            .collect();
        let ys: Vec<f64> = self.history.iter().map(|&(_, s)| s as f64).collect();
        let (mx, my) = (xs.iter().sum::<f64>() / n, ys.iter().sum::<f64>() / n);
        let var: f64 = xs.iter().map(|x| (x - mx).powi(2)).sum();
        if var == 0.0 {
            return 0.0;
        }
        xs.iter()
            .zip(&ys)
            .map(|(x, y)| (x - mx) * (y - my))
            .sum::<f64>()
            / var
    }
}

/// Leak analysis of one process.
#[derive(Debug, Default)]
pub struct LeakTracker {
    pub groups: HashMap<GroupKey, Group>,
    /// Blocking frames by (goid, park start): a goroutine parked once keeps its stack.
    frames: HashMap<(u64, Option<u64>), Option<Frame>>,
    /// Creation sites by `gopc`: goroutines come from a handful of `go` statements.
    sites: HashMap<u64, Option<Arc<Frame>>>,
}

impl LeakTracker {
    /// Regroups the goroutines waiting at `now_ns`. For a park the probes did not see, the
    /// later of `attached_ns` and the goroutine's first sighting stands in for its start. `created_by` symbolizes a `gopc`;
    /// `blocking_frame` reads and symbolizes a parked goroutine's stack. Stacks are read once
    /// per park, and only for goroutines of a (creation site, reason) that has members
    /// parked longer than `leak_after`: short parks come and go by the thousand.
    pub fn analyze(
        &mut self,
        now_ns: u64,
        attached_ns: u64,
        waiting: impl IntoIterator<Item = Waiting>,
        created_by: &dyn Fn(u64) -> Option<Frame>,
        blocking_frame: &dyn Fn(u64) -> Option<Frame>,
        settings: &LeakSettings,
    ) {
        let waiting: Vec<(Waiting, Option<Arc<Frame>>, bool)> = waiting
            .into_iter()
            .map(|w| {
                let start = w.since_ns.unwrap_or(attached_ns.max(w.first_seen_ns));
                let old = now_ns.saturating_sub(start) >= settings.leak_after_ns;
                let site = w.gopc.and_then(|pc| {
                    self.sites
                        .entry(pc)
                        .or_insert_with(|| created_by(pc).map(Arc::new))
                        .clone()
                });
                (w, site, old)
            })
            .collect();
        let candidates: HashSet<(Option<&Arc<Frame>>, u8)> = waiting
            .iter()
            .filter(|(_, _, old)| *old)
            .map(|(w, site, _)| (site.as_ref(), w.reason))
            .collect();
        let mut current: HashMap<GroupKey, Group> = HashMap::new();
        let mut seen_parks = HashSet::new();
        for (w, site, old) in &waiting {
            let (w, old) = (*w, *old);
            let blocking = if candidates.contains(&(site.as_ref(), w.reason)) {
                seen_parks.insert((w.goid, w.since_ns));
                self.frames
                    .entry((w.goid, w.since_ns))
                    .or_insert_with(|| blocking_frame(w.g))
                    .clone()
            } else {
                None
            };
            let key = GroupKey {
                created_by: site.clone(),
                reason: w.reason,
                blocking,
            };
            let g = current.entry(key).or_default();
            g.size += 1;
            if old {
                g.old_members += 1;
            }
            match w.since_ns {
                Some(s) => g.oldest_park_ns = Some(g.oldest_park_ns.map_or(s, |o| o.min(s))),
                None => g.parked_before_attach = true,
            }
            if g.examples.len() < 5 {
                g.examples.push(w.goid);
            }
        }
        // Forget the stacks of parks that ended; keep the sites bounded.
        self.frames.retain(|k, _| seen_parks.contains(k));
        if self.sites.len() > MAX_SITES {
            self.sites.clear();
        }

        // Keep the largest groups only.
        if current.len() > settings.max_groups {
            let mut sizes: Vec<u64> = current.values().map(|g| g.size).collect();
            sizes.sort_unstable_by(|a, b| b.cmp(a));
            let cutoff = sizes[settings.max_groups - 1];
            let mut kept = 0;
            current.retain(|_, g| {
                let keep = g.size >= cutoff && kept < settings.max_groups;
                kept += usize::from(keep);
                keep
            });
        }
        for (key, mut g) in current {
            let prev = self.groups.remove(&key).unwrap_or_default();
            g.history = prev.history;
            g.history.push_back((now_ns, g.size));
            while g
                .history
                .front()
                .is_some_and(|&(t, _)| now_ns.saturating_sub(t) > settings.window_ns)
            {
                g.history.pop_front();
            }
            let grew = g.history.front().is_some_and(|&(_, first)| g.size > first);
            g.suspect = g.old_members > 0 && (grew || prev.suspect);
            self.groups.insert(key, g);
        }
        // Groups with no members left are gone.
        self.groups
            .retain(|_, g| g.history.back().is_some_and(|&(t, _)| t == now_ns));
    }

    /// The suspect groups, largest first.
    pub fn suspects(&self) -> Vec<(&GroupKey, &Group)> {
        let mut s: Vec<_> = self.groups.iter().filter(|(_, g)| g.suspect).collect();
        s.sort_by(|a, b| b.1.size.cmp(&a.1.size).then_with(|| a.0.cmp(b.0)));
        s
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const S: u64 = 1_000_000_000;
    const SETTINGS: LeakSettings = LeakSettings {
        leak_after_ns: 2 * S,
        window_ns: 4 * S,
        max_groups: 100,
    };

    fn frame(f: &str) -> Frame {
        Frame {
            function: f.into(),
            file: "/src/main.go".into(),
            line: 1,
        }
    }

    /// A program leaking 50 goroutines a second at one site, beside a pool of 4 workers
    /// that wait for work for long stretches, and short waits that come and go.
    #[test]
    fn a_growing_group_of_old_parks_is_a_suspect_and_stays_one() {
        let mut t = LeakTracker::default();
        let created_by = |gopc: u64| {
            Some(frame(
                ["", "main.leak", "main.pool", "main.short"][gopc as usize],
            ))
        };
        let blocking = |_g: u64| Some(frame("main.wait"));
        let mut leaked: Vec<Waiting> = Vec::new();
        let pool: Vec<Waiting> = (0..4)
            .map(|i| Waiting {
                goid: 1000 + i,
                g: 0,
                reason: 14,
                since_ns: None,
                first_seen_ns: 0,
                gopc: Some(2),
            })
            .collect();
        for tick in 1..=10u64 {
            let now = tick * S;
            if tick <= 6 {
                for k in 0..50 {
                    let goid = leaked.len() as u64 + 1;
                    leaked.push(Waiting {
                        goid,
                        g: goid,
                        reason: 14,
                        since_ns: Some(now - S + k * S / 50),
                        first_seen_ns: 0,
                        gopc: Some(1),
                    });
                }
            }
            let short = Waiting {
                goid: 5000 + tick,
                g: 0,
                reason: 14,
                since_ns: Some(now - 1000),
                first_seen_ns: 0,
                gopc: Some(3),
            };
            let waiting = leaked
                .iter()
                .chain(&pool)
                .copied()
                .chain(std::iter::once(short));
            t.analyze(now, 0, waiting, &created_by, &blocking, &SETTINGS);
            let suspects = t.suspects();
            if (3..=6).contains(&tick) {
                assert_eq!(suspects.len(), 1, "tick {tick}: {suspects:?}");
                let (key, g) = suspects[0];
                assert_eq!(key.created_by.as_deref(), Some(&frame("main.leak")));
                assert_eq!(g.size, 50 * tick);
                let rate = g.growth_per_second();
                assert!((rate - 50.0).abs() < 0.01, "tick {tick}: {rate}");
            }
        }
        // It stopped growing four ticks ago: still a suspect, with every leaked goroutine.
        let suspects = t.suspects();
        assert_eq!(suspects.len(), 1);
        assert_eq!(suspects[0].1.size, 300);
        assert_eq!(suspects[0].1.growth_per_second(), 0.0);
        // The pool (old, not growing) and the short waits are not suspects.
        assert!(t.groups.iter().any(
            |(k, g)| k.created_by.as_deref() == Some(&frame("main.pool"))
                && !g.suspect
                && g.size == 4
        ));
    }

    #[test]
    fn groups_are_bounded() {
        let mut t = LeakTracker::default();
        let settings = LeakSettings {
            max_groups: 3,
            ..SETTINGS
        };
        let waiting: Vec<Waiting> = (0..10)
            .flat_map(|site| {
                (0..=site).map(move |i| Waiting {
                    goid: site * 100 + i,
                    g: 0,
                    reason: 14,
                    since_ns: Some(0),
                    first_seen_ns: 0,
                    gopc: Some(site),
                })
            })
            .collect();
        let created_by = |gopc: u64| Some(frame(&format!("main.site{gopc}")));
        t.analyze(10 * S, 0, waiting, &created_by, &|_| None, &settings);
        assert_eq!(t.groups.len(), 3);
        assert!(t.groups.values().all(|g| g.size >= 8));
    }
}
