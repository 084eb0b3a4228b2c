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
    /// Under `--overhead-budget`: the share of the time the probes are in; the counts are
    /// then the estimates (`sampling.rs`).
    #[serde(default)]
    pub sampling_ratio: Option<f64>,
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
    /// Under `--overhead-budget` the counts are the estimates (equal to the counts while
    /// everything is measured).
    pub fn of(view: &MetricsView, unix_ns: u64) -> TopSnapshot {
        let sampled = view.sampling.is_some();
        TopSnapshot {
            unix_ns,
            events_lost: view.lost.iter().map(|(_, n)| n).sum(),
            sampling_ratio: view.sampling.map(|s| s.ratio),
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
                        .map(|r| {
                            let counted = (
                                r.histogram.count(),
                                r.histogram.sum_ns().min(u64::MAX as u128) as u64,
                            );
                            let estimated = sampled.then(|| {
                                p.estimates
                                    .by_reason
                                    .iter()
                                    .find(|e| e.0 == r.reason)
                                    .map_or((0, 0), |e| (e.1 as u64, (e.2 * 1e9) as u64))
                            });
                            let (parks, blocked_ns) = estimated.unwrap_or(counted);
                            TopReason {
                                reason: r.reason.clone(),
                                parks,
                                blocked_ns,
                                parked_now: r.parked_now,
                            }
                        })
                        .collect(),
                    sites: if sampled {
                        p.estimates
                            .by_site
                            .iter()
                            .map(|(reason, site, parks, secs)| TopSite {
                                reason: reason.clone(),
                                site: site.clone(),
                                parks: *parks as u64,
                                blocked_ns: (secs * 1e9) as u64,
                            })
                            .collect()
                    } else {
                        p.sites
                            .iter()
                            .map(|(reason, site, parks, ns)| TopSite {
                                reason: reason.clone(),
                                site: site.clone(),
                                parks: *parks,
                                blocked_ns: *ns,
                            })
                            .collect()
                    },
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
                    requests: match &p.estimates.requests {
                        Some((n, _)) if sampled => Some(*n as u64),
                        _ => p.requests.as_ref().map(|r| r.completed),
                    },
                })
                .collect(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::aggregate::{
        histogram::DurationHistogram,
        view::{EstimateMetrics, ProcessMetrics, ReasonMetrics, SamplingMetrics},
    };

    fn view(sampling: Option<f64>) -> MetricsView {
        let mut h = DurationHistogram::default();
        h.record(1_000_000);
        MetricsView {
            processes: vec![ProcessMetrics {
                pid: 7,
                reasons: vec![ReasonMetrics {
                    reason: "chan receive".into(),
                    histogram: h,
                    ..Default::default()
                }],
                sites: vec![("chan receive".into(), "main.f f.go:1".into(), 1, 1_000_000)],
                requests: Some(crate::aggregate::view::RequestCounts {
                    completed: 3,
                    ..Default::default()
                }),
                estimates: EstimateMetrics {
                    by_reason: vec![("chan receive".into(), 4.0, 0.004)],
                    by_site: vec![("chan receive".into(), "main.f f.go:1".into(), 4.0, 0.004)],
                    lifecycle: None,
                    requests: Some((12.0, vec![])),
                    durations: vec![],
                },
                ..Default::default()
            }],
            sampling: sampling.map(|ratio| SamplingMetrics {
                ratio,
                budget_share: 0.02,
                budget_of: "host",
                estimated_share: None,
                trap_cost_seconds: 3e-6,
                periods: 1,
            }),
            ..Default::default()
        }
    }

    /// `gort top` shows what /metrics' estimates say under a budget, the counts without.
    #[test]
    fn the_counts_are_the_estimates_under_a_budget() {
        let plain = TopSnapshot::of(&view(None), 0);
        let p = &plain.processes[0];
        assert_eq!(
            (p.reasons[0].parks, p.reasons[0].blocked_ns),
            (1, 1_000_000)
        );
        assert_eq!((p.sites[0].parks, p.requests), (1, Some(3)));
        assert_eq!(plain.sampling_ratio, None);

        let sampled = TopSnapshot::of(&view(Some(0.25)), 0);
        let p = &sampled.processes[0];
        assert_eq!(
            (p.reasons[0].parks, p.reasons[0].blocked_ns),
            (4, 4_000_000)
        );
        assert_eq!((p.sites[0].parks, p.requests), (4, Some(12)));
        assert_eq!(sampled.sampling_ratio, Some(0.25));
    }
}
