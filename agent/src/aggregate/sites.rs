//! Blocked time by call site: where the code a developer owns waited (the first frame of the
//! blocking stack outside the runtime and standard library), for the
//! `gort_goroutine_site_blocked_seconds_total{reason, site}` series. Only blocks long enough
//! to have their stack captured (`--frame-min-block`) have a site.
//!
//! Cardinality is bounded: the first [`MAX_SITES`] sites seen keep their own series for the
//! life of the process; later ones are added up under `other` (so a counter never moves
//! between series).

use std::{collections::HashMap, sync::Arc};

use super::profile::Contention;

/// Distinct call sites per process with their own series.
pub const MAX_SITES: usize = 200;
/// Distinct stacks whose site is remembered (a cache: beyond, the stack is symbolized again).
const MAX_CACHED_STACKS: usize = 16_384;
/// The site of stacks beyond [`MAX_SITES`].
pub const OTHER: &str = "other";
/// The site of stacks with no frame outside the runtime.
pub const RUNTIME: &str = "runtime";

#[derive(Debug, Default)]
pub struct BlockSites {
    names: Vec<Arc<str>>,
    ids: HashMap<Arc<str>, u32>,
    by_stack: HashMap<Box<[u64]>, u32>,
    totals: HashMap<(u8, u32), Contention>,
}

impl BlockSites {
    /// The site of `stack` if it was seen before.
    pub fn cached(&self, stack: &[u64]) -> Option<u32> {
        self.by_stack.get(stack).copied()
    }

    /// Remembers `stack`'s site, named `name` (None: no frame outside the runtime).
    pub fn intern(&mut self, stack: &[u64], name: Option<String>) -> u32 {
        let name: Arc<str> = name.as_deref().unwrap_or(RUNTIME).into();
        let id = match self.ids.get(&name) {
            Some(&id) => id,
            None => {
                let name = if self.names.len() >= MAX_SITES {
                    Arc::from(OTHER)
                } else {
                    name
                };
                match self.ids.get(&name) {
                    Some(&id) => id,
                    None => {
                        let id = self.names.len() as u32;
                        self.names.push(name.clone());
                        self.ids.insert(name, id);
                        id
                    }
                }
            }
        };
        if self.by_stack.len() < MAX_CACHED_STACKS {
            self.by_stack.insert(stack.into(), id);
        }
        id
    }

    pub fn add(&mut self, reason: u8, site: u32, ns: u64) {
        let c = self.totals.entry((reason, site)).or_default();
        c.count += 1;
        c.delay_ns += ns;
    }

    /// The name of site `site` (from [`BlockSites::intern`]).
    pub fn name(&self, site: u32) -> &str {
        &self.names[site as usize]
    }

    /// (reason, site, totals), in no particular order.
    pub fn totals(&self) -> impl Iterator<Item = (u8, &str, Contention)> + '_ {
        self.totals
            .iter()
            .map(|(&(reason, site), &c)| (reason, &*self.names[site as usize], c))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn adds_up_by_reason_and_site() {
        let mut s = BlockSites::default();
        let a = s.intern(&[1, 2], Some("main.a main.go:1".into()));
        assert_eq!(s.cached(&[1, 2]), Some(a));
        // Another stack, same site.
        let a2 = s.intern(&[3, 2], Some("main.a main.go:1".into()));
        assert_eq!(a, a2);
        let r = s.intern(&[9], None);
        s.add(14, a, 10);
        s.add(14, a2, 5);
        s.add(7, a, 1);
        s.add(14, r, 3);
        let mut got: Vec<_> = s.totals().map(|(r, n, c)| (r, n.to_string(), c)).collect();
        got.sort_by(|x, y| (x.0, &x.1).cmp(&(y.0, &y.1)));
        let c = |count, delay_ns| Contention { count, delay_ns };
        assert_eq!(
            got,
            vec![
                (7, "main.a main.go:1".into(), c(1, 1)),
                (14, "main.a main.go:1".into(), c(2, 15)),
                (14, RUNTIME.into(), c(1, 3)),
            ]
        );
    }

    #[test]
    fn folds_sites_beyond_the_bound_into_other() {
        let mut s = BlockSites::default();
        for i in 0..MAX_SITES as u64 {
            s.intern(&[i], Some(format!("main.f{i} main.go:{i}")));
        }
        let late = s.intern(&[u64::MAX], Some("main.late main.go:1".into()));
        let later = s.intern(&[u64::MAX - 1], Some("main.later main.go:2".into()));
        assert_eq!(late, later);
        assert_eq!(&*s.names[late as usize], OTHER);
        // A site seen before the bound keeps its series.
        assert_eq!(s.intern(&[7, 7], Some("main.f3 main.go:3".into())), 3);
    }
}
