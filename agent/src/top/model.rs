//! The state of `gort top`, apart from the terminal: two snapshots turned into rates, the
//! process list sorted and filtered, the selection, and what the keys do. Pure, so tested
//! without a terminal.

use super::snapshot::{TopProcess, TopSnapshot};

/// How the process list is ordered (`s` cycles).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SortBy {
    Blocked,
    Parks,
    Goroutines,
    Pid,
    Service,
}

impl SortBy {
    pub fn next(self) -> SortBy {
        match self {
            SortBy::Blocked => SortBy::Parks,
            SortBy::Parks => SortBy::Goroutines,
            SortBy::Goroutines => SortBy::Pid,
            SortBy::Pid => SortBy::Service,
            SortBy::Service => SortBy::Blocked,
        }
    }

    pub fn name(self) -> &'static str {
        match self {
            SortBy::Blocked => "blocked",
            SortBy::Parks => "parks",
            SortBy::Goroutines => "goroutines",
            SortBy::Pid => "pid",
            SortBy::Service => "service",
        }
    }
}

/// A rate over the last interval, or the total since gort attached when there is only one
/// snapshot yet (or the process is new).
fn per_second(now: u64, before: Option<u64>, seconds: f64) -> f64 {
    match before {
        Some(b) if seconds > 0.0 => now.saturating_sub(b) as f64 / seconds,
        _ => 0.0,
    }
}

/// One line of the process list.
#[derive(Debug, Clone, PartialEq)]
pub struct ProcessRow {
    pub pid: u32,
    pub service: String,
    pub exited: bool,
    pub goroutines: u64,
    /// Seconds blocked per second: how many goroutines were blocked on average.
    pub blocked: f64,
    pub parks: f64,
    pub gc_per_min: f64,
    /// Stop-the-world time per second.
    pub stw: f64,
    pub leaks: u64,
}

/// A wait reason of one process.
#[derive(Debug, Clone, PartialEq)]
pub struct ReasonRow {
    pub reason: String,
    pub parks: f64,
    pub blocked: f64,
    pub parked_now: u64,
}

/// A call site of one process.
#[derive(Debug, Clone, PartialEq)]
pub struct SiteRow {
    pub site: String,
    pub reason: String,
    pub blocked: f64,
    pub parks: f64,
}

fn total_blocked(p: &TopProcess) -> u64 {
    p.reasons.iter().map(|r| r.blocked_ns).sum()
}

fn total_parks(p: &TopProcess) -> u64 {
    p.reasons.iter().map(|r| r.parks).sum()
}

fn total_stw(p: &TopProcess) -> u64 {
    p.pauses.iter().map(|r| r.total_ns).sum()
}

/// What the viewer knows and shows.
#[derive(Debug)]
pub struct Model {
    pub previous: Option<TopSnapshot>,
    pub current: TopSnapshot,
    pub sort: SortBy,
    pub filter: String,
    /// Typing a filter (after `/`).
    pub editing_filter: bool,
    /// Index into the visible rows.
    pub selected: usize,
    /// The process shown in detail (Enter), by pid.
    pub detail: Option<u32>,
    pub quit: bool,
    /// The last error talking to the agent.
    pub error: Option<String>,
}

/// A key, as far as the viewer cares.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Key {
    Up,
    Down,
    Enter,
    Back,
    Char(char),
    Backspace,
}

impl Default for Model {
    fn default() -> Self {
        Model {
            previous: None,
            current: TopSnapshot::default(),
            sort: SortBy::Blocked,
            filter: String::new(),
            editing_filter: false,
            selected: 0,
            detail: None,
            quit: false,
            error: None,
        }
    }
}

impl Model {
    pub fn update(&mut self, snapshot: TopSnapshot) {
        let previous = std::mem::replace(&mut self.current, snapshot);
        self.previous = Some(previous).filter(|p| p.unix_ns > 0);
        self.error = None;
        let n = self.rows().len();
        self.selected = self.selected.min(n.saturating_sub(1));
    }

    fn seconds(&self) -> f64 {
        match &self.previous {
            Some(p) => self.current.unix_ns.saturating_sub(p.unix_ns) as f64 / 1e9,
            None => 0.0,
        }
    }

    fn before(&self, pid: u32) -> Option<&TopProcess> {
        self.previous
            .as_ref()?
            .processes
            .iter()
            .find(|p| p.pid == pid)
    }

    /// The process list: filtered, then sorted.
    pub fn rows(&self) -> Vec<ProcessRow> {
        let secs = self.seconds();
        let filter = self.filter.to_lowercase();
        let mut rows: Vec<ProcessRow> = self
            .current
            .processes
            .iter()
            .filter(|p| {
                filter.is_empty()
                    || p.service.to_lowercase().contains(&filter)
                    || p.exe.to_lowercase().contains(&filter)
                    || p.pid.to_string() == filter
            })
            .map(|p| {
                let b = self.before(p.pid);
                ProcessRow {
                    pid: p.pid,
                    service: p.service.clone(),
                    exited: p.exited,
                    goroutines: p.goroutines_user,
                    blocked: per_second(total_blocked(p), b.map(total_blocked), secs) / 1e9,
                    parks: per_second(total_parks(p), b.map(total_parks), secs),
                    gc_per_min: per_second(p.gc_cycles, b.map(|b| b.gc_cycles), secs) * 60.0,
                    stw: per_second(total_stw(p), b.map(total_stw), secs) / 1e9,
                    leaks: p.leaks.iter().map(|l| l.goroutines).sum(),
                }
            })
            .collect();
        let by = |a: f64, b: f64| b.partial_cmp(&a).unwrap_or(std::cmp::Ordering::Equal);
        match self.sort {
            SortBy::Blocked => {
                rows.sort_by(|a, b| by(a.blocked, b.blocked).then(a.pid.cmp(&b.pid)))
            }
            SortBy::Parks => rows.sort_by(|a, b| by(a.parks, b.parks).then(a.pid.cmp(&b.pid))),
            SortBy::Goroutines => {
                rows.sort_by(|a, b| b.goroutines.cmp(&a.goroutines).then(a.pid.cmp(&b.pid)))
            }
            SortBy::Pid => rows.sort_by_key(|r| r.pid),
            SortBy::Service => {
                rows.sort_by(|a, b| a.service.cmp(&b.service).then(a.pid.cmp(&b.pid)))
            }
        }
        rows
    }

    /// The process shown in detail.
    pub fn detail_process(&self) -> Option<&TopProcess> {
        let pid = self.detail?;
        self.current.processes.iter().find(|p| p.pid == pid)
    }

    /// Wait reasons of the detailed process, most blocked first.
    pub fn reason_rows(&self) -> Vec<ReasonRow> {
        let Some(p) = self.detail_process() else {
            return Vec::new();
        };
        let secs = self.seconds();
        let b = self.before(p.pid);
        let mut rows: Vec<ReasonRow> = p
            .reasons
            .iter()
            .map(|r| {
                let prev = b.and_then(|b| b.reasons.iter().find(|x| x.reason == r.reason));
                ReasonRow {
                    reason: r.reason.clone(),
                    parks: per_second(r.parks, prev.map(|x| x.parks).or(b.map(|_| 0)), secs),
                    blocked: per_second(
                        r.blocked_ns,
                        prev.map(|x| x.blocked_ns).or(b.map(|_| 0)),
                        secs,
                    ) / 1e9,
                    parked_now: r.parked_now,
                }
            })
            .collect();
        rows.sort_by(|a, b| {
            b.blocked
                .partial_cmp(&a.blocked)
                .unwrap_or(std::cmp::Ordering::Equal)
                .then(b.parked_now.cmp(&a.parked_now))
                .then(a.reason.cmp(&b.reason))
        });
        rows
    }

    /// Call sites of the detailed process, most blocked first (by rate, then in total).
    pub fn site_rows(&self) -> Vec<(SiteRow, u64)> {
        let Some(p) = self.detail_process() else {
            return Vec::new();
        };
        let secs = self.seconds();
        let b = self.before(p.pid);
        let mut rows: Vec<(SiteRow, u64)> = p
            .sites
            .iter()
            .map(|s| {
                let prev = b.and_then(|b| {
                    b.sites
                        .iter()
                        .find(|x| x.site == s.site && x.reason == s.reason)
                });
                (
                    SiteRow {
                        site: s.site.clone(),
                        reason: s.reason.clone(),
                        blocked: per_second(
                            s.blocked_ns,
                            prev.map(|x| x.blocked_ns).or(b.map(|_| 0)),
                            secs,
                        ) / 1e9,
                        parks: per_second(s.parks, prev.map(|x| x.parks).or(b.map(|_| 0)), secs),
                    },
                    s.blocked_ns,
                )
            })
            .collect();
        rows.sort_by(|a, b| {
            b.0.blocked
                .partial_cmp(&a.0.blocked)
                .unwrap_or(std::cmp::Ordering::Equal)
                .then(b.1.cmp(&a.1))
        });
        rows
    }

    pub fn key(&mut self, key: Key) {
        if self.editing_filter {
            match key {
                Key::Enter => self.editing_filter = false,
                Key::Back => {
                    self.editing_filter = false;
                    self.filter.clear();
                }
                Key::Backspace => {
                    self.filter.pop();
                }
                Key::Char(c) => self.filter.push(c),
                _ => {}
            }
            self.selected = 0;
            return;
        }
        match key {
            Key::Char('q') => self.quit = true,
            Key::Back | Key::Backspace if self.detail.is_some() => self.detail = None,
            Key::Back => self.filter.clear(),
            Key::Char('s') => self.sort = self.sort.next(),
            Key::Char('/') if self.detail.is_none() => {
                self.editing_filter = true;
                self.filter.clear();
            }
            Key::Up | Key::Char('k') => self.selected = self.selected.saturating_sub(1),
            Key::Down | Key::Char('j') => {
                let n = self.rows().len();
                self.selected = (self.selected + 1).min(n.saturating_sub(1));
            }
            Key::Enter if self.detail.is_none() => {
                self.detail = self.rows().get(self.selected).map(|r| r.pid);
            }
            _ => {}
        }
    }
}

#[cfg(test)]
mod tests {
    use super::super::snapshot::{TopPause, TopReason, TopSite};
    use super::*;

    fn process(pid: u32, service: &str, parks: u64, blocked_ms: u64, gc: u64) -> TopProcess {
        TopProcess {
            pid,
            service: service.into(),
            exe: format!("/srv/{service}"),
            goroutines_user: pid as u64,
            reasons: vec![TopReason {
                reason: "chan receive".into(),
                parks,
                blocked_ns: blocked_ms * 1_000_000,
                parked_now: 1,
            }],
            sites: vec![TopSite {
                reason: "chan receive".into(),
                site: "main.wait main.go:9".into(),
                parks,
                blocked_ns: blocked_ms * 1_000_000,
            }],
            gc_cycles: gc,
            pauses: vec![TopPause {
                reason: "GC mark termination".into(),
                count: gc,
                total_ns: gc * 100_000,
            }],
            ..Default::default()
        }
    }

    fn snapshot(secs: u64, processes: Vec<TopProcess>) -> TopSnapshot {
        TopSnapshot {
            unix_ns: secs * 1_000_000_000,
            processes,
            events_lost: 0,
            sampling_ratio: None,
        }
    }

    #[test]
    fn rates_from_two_snapshots() {
        let mut m = Model::default();
        m.update(snapshot(
            10,
            vec![process(1, "api", 100, 1000, 2), process(2, "db", 10, 0, 0)],
        ));
        // One snapshot: no rates yet.
        assert_eq!(m.rows()[0].parks, 0.0);
        m.update(snapshot(
            12,
            vec![
                process(1, "api", 300, 3000, 4),
                process(2, "db", 50, 4000, 0),
            ],
        ));
        let rows = m.rows();
        // Sorted by blocked time per second: db blocked 4 s in 2 s, api 2 s in 2 s.
        assert_eq!(rows[0].pid, 2);
        assert_eq!(rows[0].blocked, 2.0);
        assert_eq!(rows[0].parks, 20.0);
        assert_eq!(rows[1].blocked, 1.0);
        assert_eq!(rows[1].parks, 100.0);
        assert_eq!(rows[1].gc_per_min, 60.0);
        assert!((rows[1].stw - 0.0001).abs() < 1e-12);
    }

    #[test]
    fn keys_sort_filter_and_drill_in() {
        let mut m = Model::default();
        m.update(snapshot(
            1,
            vec![process(1, "api", 1, 1, 0), process(7, "db", 1, 1, 0)],
        ));
        m.key(Key::Char('s')); // parks
        m.key(Key::Char('s')); // goroutines: pid 7 has more
        assert_eq!(m.sort, SortBy::Goroutines);
        assert_eq!(m.rows()[0].pid, 7);
        m.key(Key::Char('/'));
        for c in "ap".chars() {
            m.key(Key::Char(c));
        }
        m.key(Key::Enter);
        assert!(!m.editing_filter);
        assert_eq!(m.rows().iter().map(|r| r.pid).collect::<Vec<_>>(), vec![1]);
        m.key(Key::Enter);
        assert_eq!(m.detail, Some(1));
        assert_eq!(m.reason_rows()[0].reason, "chan receive");
        assert_eq!(m.site_rows()[0].0.site, "main.wait main.go:9");
        m.key(Key::Back);
        assert_eq!(m.detail, None);
        m.key(Key::Back);
        assert!(m.filter.is_empty());
        m.key(Key::Down);
        assert_eq!(m.selected, 1);
        m.key(Key::Down);
        assert_eq!(m.selected, 1);
        m.key(Key::Char('q'));
        assert!(m.quit);
    }
}
