//! What `gort top` shows, as the agent serves it (`GET /api/v1/top`): cumulative totals per
//! process; the viewer turns two of them into rates.

use serde::{Deserialize, Serialize};

use crate::aggregate::view::MetricsView;

#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct TopSnapshot {
    /// CLOCK_REALTIME of the snapshot, ns.
    pub unix_ns: u64,
    pub processes: Vec<TopProcess>,
    /// Events the kernel side could not deliver, all causes.
    pub events_lost: u64,
}

#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct TopProcess {
    pub pid: u32,
    pub service: String,
    pub exe: String,
    pub exited: bool,
    pub goroutines_user: u64,
    pub goroutines_system: u64,
    pub reasons: Vec<TopReason>,
    pub sites: Vec<TopSite>,
    pub gc_cycles: u64,
    pub pauses: Vec<TopPause>,
    pub leaks: Vec<TopLeak>,
    /// HTTP requests served, when it is a net/http server.
    pub requests: Option<u64>,
}

#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct TopReason {
    pub reason: String,
    pub parks: u64,
    pub blocked_ns: u64,
    pub parked_now: u64,
}

#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct TopSite {
    pub reason: String,
    pub site: String,
    pub parks: u64,
    pub blocked_ns: u64,
}

#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct TopPause {
    pub reason: String,
    pub count: u64,
    pub total_ns: u64,
}

#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct TopLeak {
    pub reason: String,
    pub created_by: String,
    pub goroutines: u64,
}

impl TopSnapshot {
    pub fn of(view: &MetricsView, unix_ns: u64) -> TopSnapshot {
        TopSnapshot {
            unix_ns,
            events_lost: view.lost.iter().map(|(_, n)| n).sum(),
            processes: view
                .processes
                .iter()
                .map(|p| TopProcess {
                    pid: p.pid,
                    service: p.service.clone(),
                    exe: p.exe.clone(),
                    exited: p.exited,
                    goroutines_user: p.goroutines_user,
                    goroutines_system: p.goroutines_system,
                    reasons: p
                        .reasons
                        .iter()
                        .map(|r| TopReason {
                            reason: r.reason.clone(),
                            parks: r.histogram.count(),
                            blocked_ns: r.histogram.sum_ns().min(u64::MAX as u128) as u64,
                            parked_now: r.parked_now,
                        })
                        .collect(),
                    sites: p
                        .sites
                        .iter()
                        .map(|(reason, site, parks, ns)| TopSite {
                            reason: reason.clone(),
                            site: site.clone(),
                            parks: *parks,
                            blocked_ns: *ns,
                        })
                        .collect(),
                    gc_cycles: p.gc_cycles,
                    pauses: p
                        .pauses
                        .iter()
                        .map(|(reason, h)| TopPause {
                            reason: reason.clone(),
                            count: h.count(),
                            total_ns: h.sum_ns().min(u64::MAX as u128) as u64,
                        })
                        .collect(),
                    leaks: p
                        .leak_suspects
                        .iter()
                        .map(|(reason, created_by, n)| TopLeak {
                            reason: reason.clone(),
                            created_by: created_by.clone(),
                            goroutines: *n,
                        })
                        .collect(),
                    requests: p.requests.as_ref().map(|r| r.completed),
                })
                .collect(),
        }
    }
}
