//! Blocked time and count by stack and wait reason, the data of a pprof block profile: a
//! bounded table per process, cumulative since gort attached. A profile over a window is the
//! difference of two snapshots, as Go's own `/debug/pprof/block?seconds=N` computes it.

use std::collections::HashMap;

/// Distinct (reason, stack) entries kept per process; blocks of further stacks are counted
/// under their reason without a stack (and in `overflow`).
pub const MAX_STACKS: usize = 16_384;

/// What one (reason, stack) accumulated.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Contention {
    pub count: u64,
    pub delay_ns: u64,
}

/// A stack of return addresses, innermost first (empty: the block was shorter than the
/// capture threshold, or the table was full), under one wait reason.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct StackKey {
    pub reason: u8,
    pub frames: Box<[u64]>,
}

pub type Snapshot = HashMap<StackKey, Contention>;

#[derive(Debug)]
pub struct BlockProfile {
    stacks: Snapshot,
    /// Blocks without a stack (most: shorter than the capture threshold), by wait reason:
    /// counted here without hashing, the agent's cost per park being what it is.
    unstacked: Box<[Contention; 256]>,
    /// Blocks with a stack that were counted without it because the table was full.
    pub overflow: u64,
}

impl Default for BlockProfile {
    fn default() -> Self {
        BlockProfile {
            stacks: Snapshot::default(),
            unstacked: Box::new([Contention::default(); 256]),
            overflow: 0,
        }
    }
}

impl BlockProfile {
    pub fn record(&mut self, reason: u8, frames: &[u64], ns: u64) {
        let c = if frames.is_empty() {
            &mut self.unstacked[usize::from(reason)]
        } else if let Some(c) = self.stacks.get_mut(&StackKey {
            reason,
            frames: frames.into(),
        }) {
            c
        } else if self.stacks.len() >= MAX_STACKS {
            self.overflow += 1;
            &mut self.unstacked[usize::from(reason)]
        } else {
            self.stacks
                .entry(StackKey {
                    reason,
                    frames: frames.into(),
                })
                .or_default()
        };
        c.count += 1;
        c.delay_ns += ns;
    }

    /// Everything so far.
    pub fn snapshot(&self) -> Snapshot {
        let mut all = self.stacks.clone();
        for (reason, c) in (0u8..=255).zip(self.unstacked.iter()) {
            if c.count > 0 {
                all.insert(
                    StackKey {
                        reason,
                        frames: Box::default(),
                    },
                    *c,
                );
            }
        }
        all
    }

    /// What accumulated since `baseline` (a snapshot of this profile).
    pub fn since(&self, baseline: &Snapshot) -> Snapshot {
        self.snapshot()
            .into_iter()
            .filter_map(|(k, c)| {
                let before = baseline.get(&k).copied().unwrap_or_default();
                let d = Contention {
                    count: c.count.saturating_sub(before.count),
                    delay_ns: c.delay_ns.saturating_sub(before.delay_ns),
                };
                (d.count > 0).then_some((k, d))
            })
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn accumulates_by_reason_and_stack() {
        let mut p = BlockProfile::default();
        p.record(14, &[1, 2], 10);
        p.record(14, &[1, 2], 30);
        p.record(7, &[1, 2], 5);
        p.record(14, &[], 1);
        let s = p.snapshot();
        let key = |reason, frames: &[u64]| StackKey {
            reason,
            frames: frames.into(),
        };
        assert_eq!(
            s[&key(14, &[1, 2])],
            Contention {
                count: 2,
                delay_ns: 40
            }
        );
        assert_eq!(s[&key(7, &[1, 2])].count, 1);
        assert_eq!(s[&key(14, &[])].delay_ns, 1);

        p.record(14, &[1, 2], 100);
        p.record(9, &[3], 7);
        let d = p.since(&s);
        assert_eq!(d.len(), 2, "unchanged stacks are left out: {d:?}");
        assert_eq!(
            d[&key(14, &[1, 2])],
            Contention {
                count: 1,
                delay_ns: 100
            }
        );
        assert_eq!(d[&key(9, &[3])].delay_ns, 7);
    }

    #[test]
    fn a_full_table_keeps_counting_without_stacks() {
        let mut p = BlockProfile::default();
        for i in 0..MAX_STACKS as u64 {
            p.record(1, &[i + 1], 1);
        }
        p.record(1, &[u64::MAX], 5);
        p.record(1, &[1], 1);
        let s = p.snapshot();
        assert_eq!(s.len(), MAX_STACKS + 1);
        assert_eq!(p.overflow, 1);
        let no_stack = &s[&StackKey {
            reason: 1,
            frames: Box::default(),
        }];
        assert_eq!((no_stack.count, no_stack.delay_ns), (1, 5));
        assert_eq!(
            s.values().map(|c| c.count).sum::<u64>(),
            MAX_STACKS as u64 + 2
        );
    }
}
