//! Snapshots of the state, in the shapes the exporters publish: built by the aggregator on
//! request, owned by the exporter afterwards.

use serde::Serialize;

pub use super::symbols::Frame;
use super::{
    State,
    histogram::{DurationHistogram, WeightedHistogram},
    process::{GoroutineBlocking, GoroutineState},
    symbols::{Symbolizer, is_system_goroutine},
};
use crate::collect::monotonic_ns;

/// What /metrics shows.
#[derive(Debug, Clone, Default)]
pub struct MetricsView {
    pub processes: Vec<ProcessMetrics>,
    /// (cause, count) of everything the agent could not deliver.
    pub lost: Vec<(&'static str, u64)>,
    /// Kernel activity: (stat, count).
    pub probe_stats: Vec<(&'static str, u64)>,
    /// Events left out because no tracked program owned them (late events of a program that
    /// exited or was replaced).
    pub unattributed: u64,
    /// Time sampling under `--overhead-budget`.
    pub sampling: Option<SamplingMetrics>,
    /// OTLP export, when on: (signal, sent, dropped).
    pub export: Vec<(&'static str, u64, u64)>,
}

/// What `--overhead-budget` did.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct SamplingMetrics {
    /// Share of the time the probes are in.
    pub ratio: f64,
    /// The budget: share of the host's CPU, or of the targets' own.
    pub budget_share: f64,
    /// What the budget and the cost are shares of: `host` or `targets`.
    pub budget_of: &'static str,
    /// What gort cost in the last period, as a share of the same.
    pub estimated_share: Option<f64>,
    /// What one uprobe hit costs here (measured at start).
    pub trap_cost_seconds: f64,
    pub periods: u64,
}

/// (wait reason, parks, blocked seconds), estimated.
pub type ReasonEstimate = (String, f64, f64);

/// Under time sampling (`--overhead-budget`): totals estimated from what was seen
/// (`sampling.rs`); while everything is measured, they equal the counts.
#[derive(Debug, Clone, Default)]
pub struct EstimateMetrics {
    /// (reason, parks, blocked seconds).
    pub by_reason: Vec<ReasonEstimate>,
    /// (reason, call site, parks, blocked seconds).
    pub by_site: Vec<(String, String, f64, f64)>,
    /// Goroutines created and exited, when the lifecycle probes are attached.
    pub lifecycle: Option<(f64, f64)>,
    /// HTTP requests, and (reason, parks, blocked seconds) inside them, when the request
    /// probes are attached.
    pub requests: Option<(f64, Vec<ReasonEstimate>)>,
    /// Park durations by wait reason, each park weighed as in the totals.
    pub durations: Vec<(String, WeightedHistogram)>,
}

#[cfg(test)]
impl EstimateMetrics {
    /// One of each, for the exporters' tests.
    pub fn example() -> EstimateMetrics {
        EstimateMetrics {
            by_reason: vec![("chan receive".into(), 8.5, 0.25)],
            by_site: vec![(
                "chan receive".into(),
                "main.wait main.go:9".into(),
                4.0,
                0.5,
            )],
            lifecycle: Some((48.0, 40.5)),
            requests: Some((20.0, vec![("IO wait".into(), 60.0, 1.5)])),
            durations: vec![("chan receive".into(), {
                let mut h = WeightedHistogram::default();
                h.record(2_000_000, 6.0, 6.0);
                h.record(20_000_000, 2.5, 2.5);
                h
            })],
        }
    }
}

#[derive(Debug, Clone, Default)]
pub struct ProcessMetrics {
    pub pid: u32,
    pub service: String,
    /// The executable's path.
    pub exe: String,
    pub container: crate::target::process::ContainerIdentity,
    /// When gort began watching it (wall clock): the start of cumulative series.
    pub first_seen_unix_ns: u64,
    pub exited: bool,
    pub reasons: Vec<ReasonMetrics>,
    /// Under time sampling: totals estimated from what the sampled probes saw.
    pub estimates: EstimateMetrics,
    /// The runtime's scheduling-latency histogram, when readable.
    pub sched_latency: Option<super::sched_latency::RuntimeHistogram>,
    /// Stop-the-world pauses by the runtime's reason name.
    pub pauses: Vec<(String, DurationHistogram)>,
    pub gc_cycles: u64,
    pub gc_mark: DurationHistogram,
    /// Whether the GC probes are attached for this process.
    pub gc_probed: bool,
    /// Live goroutines: the runtime's own, and the rest (what `runtime.NumGoroutine` counts).
    pub goroutines_system: u64,
    pub goroutines_user: u64,
    /// Goroutines created and exited since gort attached, when the lifecycle probes are.
    pub lifecycle: Option<(u64, u64)>,
    /// Goroutines in leak suspect groups: (reason, created_by, count), the largest groups
    /// first and the rest added up per reason under created_by "other".
    pub leak_suspects: Vec<(String, String, u64)>,
    /// Blocked time by (reason, call site): count and ns.
    pub sites: Vec<(String, String, u64, u64)>,
    /// Resolved panics and fatal errors by (recovered, site), when the panic probes are.
    pub panics: Option<Vec<(bool, String, u64)>>,
    /// HTTP requests served and `traceparent` values rejected, when the request probes are.
    pub requests: Option<RequestCounts>,
}

/// HTTP request counters of one process.
#[derive(Debug, Clone, Default)]
pub struct RequestCounts {
    pub completed: u64,
    pub traceparent_invalid: u64,
    pub abandoned: u64,
    pub headers_truncated: u64,
    /// Parks inside completed requests: (reason, count, blocked ns).
    pub blocked: Vec<(String, u64, u64)>,
}

#[derive(Debug, Clone, Default)]
pub struct ReasonMetrics {
    pub reason: String,
    pub histogram: DurationHistogram,
    pub parked_now: u64,
    /// The newest traced block per histogram bucket.
    pub exemplars: Vec<Exemplar>,
}

/// A block inside a traced request, as an OpenMetrics exemplar of its histogram bucket.
#[derive(Debug, Clone)]
pub struct Exemplar {
    pub bucket: usize,
    pub trace_id: String,
    pub span_id: String,
    pub seconds: f64,
    pub unix_ns: u64,
}

/// The estimates of `p`, with a series (at 0 until something is seen) for every series of
/// the counts they estimate: a counter that appears late with a value would lose that value
/// from rates.
fn estimate_metrics(
    p: &super::ProcessState,
    reasons: impl Iterator<Item = u8>,
    name: &impl Fn(u8) -> String,
) -> EstimateMetrics {
    use super::sampling::add_to;
    use std::collections::BTreeMap;
    let e = &p.estimates;
    let reasons: Vec<u8> = reasons.collect();
    let mut durations: BTreeMap<u8, WeightedHistogram> = reasons
        .iter()
        .map(|&r| (r, WeightedHistogram::default()))
        .collect();
    durations.extend(e.durations.iter().map(|(&r, h)| (r, h.clone())));
    let mut by_reason: BTreeMap<u8, (f64, f64)> =
        reasons.into_iter().map(|r| (r, (0.0, 0.0))).collect();
    by_reason.extend(e.by_reason.iter().map(|(&r, &v)| (r, v)));
    let mut by_site: BTreeMap<(String, String), (f64, f64)> = p
        .sites
        .totals()
        .map(|(r, site, _)| ((name(r), site.to_string()), (0.0, 0.0)))
        .collect();
    for (&(r, site), &(n, secs)) in &e.by_site {
        add_to(
            &mut by_site,
            (name(r), p.sites.name(site).to_string()),
            n,
            secs,
        );
    }
    let requests = p.binary.probes("http").then(|| {
        let mut blocked: BTreeMap<String, (f64, f64)> = p
            .requests
            .blocked_by_reason
            .keys()
            .map(|r| (r.clone(), (0.0, 0.0)))
            .collect();
        for (&r, &(n, secs)) in &e.request_blocked {
            add_to(&mut blocked, name(r), n, secs);
        }
        let blocked = blocked.into_iter().map(|(r, (n, s))| (r, n, s)).collect();
        (e.requests, blocked)
    });
    EstimateMetrics {
        by_reason: by_reason
            .into_iter()
            .map(|(r, (n, secs))| (name(r), n, secs))
            .collect(),
        by_site: by_site
            .into_iter()
            .map(|((r, site), (n, secs))| (r, site, n, secs))
            .collect(),
        lifecycle: p.binary.probes_lifecycle().then_some((e.created, e.exited)),
        requests,
        durations: durations.into_iter().map(|(r, h)| (name(r), h)).collect(),
    }
}

pub fn metrics(state: &State) -> MetricsView {
    let clock = WallClock::now();
    let processes = state
        .processes
        .values()
        .map(|p| {
            let target = &p.binary.target;
            let mut reasons: std::collections::BTreeMap<u8, ReasonMetrics> = Default::default();
            let name = |raw: u8| target.wait_reason_name(raw).0.to_string();
            for (&raw, stats) in &p.blocking.reasons {
                let exemplars = stats
                    .exemplars
                    .iter()
                    .enumerate()
                    .filter_map(|(bucket, e)| {
                        let e = e.as_ref()?;
                        Some(Exemplar {
                            bucket,
                            trace_id: super::traceparent::hex(&e.span.trace_id),
                            span_id: super::traceparent::hex(&e.span.span_id),
                            seconds: e.ns as f64 / 1e9,
                            unix_ns: clock.unix_ns(e.at_ns),
                        })
                    })
                    .collect();
                reasons.insert(
                    raw,
                    ReasonMetrics {
                        reason: name(raw),
                        histogram: stats.histogram.clone(),
                        parked_now: 0,
                        exemplars,
                    },
                );
            }
            for (&raw, &n) in &p.blocking.parked_now {
                reasons
                    .entry(raw)
                    .or_insert_with(|| ReasonMetrics {
                        reason: name(raw),
                        histogram: DurationHistogram::default(),
                        parked_now: 0,
                        exemplars: Vec::new(),
                    })
                    .parked_now = n;
            }
            let live = p.blocking.live(|startpc| {
                p.link_address(startpc)
                    .and_then(|a| target.binary.pclntab().func_at(a))
                    .is_some_and(|f| is_system_goroutine(&f.name))
            });
            let estimates = estimate_metrics(p, reasons.keys().copied(), &name);
            ProcessMetrics {
                pid: p.pid,
                service: p.service.clone(),
                exe: p.binary.exe.clone(),
                container: p.container.clone(),
                first_seen_unix_ns: clock.unix_ns(p.first_seen_ns),
                exited: p.exited_ns.is_some(),
                reasons: reasons.into_values().collect(),
                estimates,
                sched_latency: p.sched_latency.clone(),
                pauses: gc_pauses(p),
                gc_cycles: p.gc.cycles,
                gc_mark: p.gc.mark.clone(),
                gc_probed: p.binary.probes("gc"),
                goroutines_system: live.0,
                goroutines_user: live.1,
                lifecycle: p
                    .binary
                    .probes_lifecycle()
                    .then_some((p.blocking.created_total, p.blocking.exited_total)),
                leak_suspects: leak_suspect_series(p, state.settings.leak_top),
                sites: p
                    .sites
                    .totals()
                    .map(|(reason, site, c)| {
                        let reason = p.binary.target.wait_reason_name(reason).0.to_string();
                        (reason, site.to_string(), c.count, c.delay_ns)
                    })
                    .collect(),
                requests: p.binary.probes("http").then_some(RequestCounts {
                    completed: p.requests.completed,
                    traceparent_invalid: p.requests.traceparent_invalid,
                    abandoned: p.requests.abandoned,
                    headers_truncated: p.requests.headers_truncated,
                    blocked: p
                        .requests
                        .blocked_by_reason
                        .iter()
                        .map(|(reason, &(count, ns))| (reason.clone(), count, ns))
                        .collect(),
                }),
                panics: p.binary.probes("panics").then(|| {
                    p.panics
                        .counts
                        .iter()
                        .map(|((recovered, site), &n)| (*recovered, site.clone(), n))
                        .collect()
                }),
            }
        })
        .collect();
    use agent_common::{DropCause, Stat};
    let k = &state.kernel;
    let mut lost: Vec<(&'static str, u64)> = DropCause::ALL
        .iter()
        .map(|c| (c.label(), k.drops[*c as usize]))
        .collect();
    lost.push((
        "agent_channel_full",
        state
            .agent_drops()
            .channel_full
            .load(std::sync::atomic::Ordering::Relaxed),
    ));
    lost.push(("events_output", state.agent_drops().events_dropped()));
    lost.push((
        "process_changes_missed",
        state
            .agent_drops()
            .process_changes_missed
            .load(std::sync::atomic::Ordering::Relaxed),
    ));
    let probe_stats = vec![
        ("parks", k.stats[Stat::Parks as usize]),
        ("resumes", k.stats[Stat::Resumes as usize]),
        (
            "resumes_unmatched",
            k.stats[Stat::ResumesUnmatched as usize],
        ),
    ];
    let export = state
        .export_stats
        .as_ref()
        .map(|s| {
            let n = |a: &std::sync::atomic::AtomicU64| a.load(std::sync::atomic::Ordering::Relaxed);
            vec![
                ("traces", n(&s.spans_sent), n(&s.spans_dropped)),
                ("metrics", n(&s.metrics_sent), n(&s.metrics_dropped)),
            ]
        })
        .unwrap_or_default();
    MetricsView {
        processes,
        lost,
        probe_stats,
        unattributed: state.unattributed_events,
        sampling: state.sampling.map(|s| SamplingMetrics {
            ratio: s.window.ratio(),
            budget_share: s.settings.share,
            budget_of: s.settings.of.name(),
            estimated_share: s.cost.and_then(|c| c.share()),
            trap_cost_seconds: s.settings.trap_cost_ns as f64 / 1e9,
            periods: s.periods,
        }),
        export,
    }
}

#[derive(Debug, Clone, Serialize)]
pub struct BlockingView {
    pub reason: String,
    pub count: u64,
    pub blocked_ns: u64,
    pub max_ns: u64,
    /// The first user-code frame of the longest block (absent when it was shorter than
    /// `--frame-min-block`).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub max_frame: Option<Frame>,
    /// The stack of the longest block, innermost first, from `runtime.gopark`'s caller.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub max_stack: Vec<Frame>,
}

#[derive(Debug, Clone, Serialize)]
pub struct GoroutineView {
    pub pid: u32,
    pub goid: u64,
    /// `waiting` (parked), `running` (not parked: running, runnable or in a syscall), or
    /// `exited`.
    pub state: &'static str,
    /// The wait reason while `waiting`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub reason: Option<String>,
    /// Since when it is waiting (wall clock), while `waiting`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub waiting_since_unix_ns: Option<u64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub waiting_ns: Option<u64>,
    /// Waiting since before gort attached (found by walking the runtime's goroutine list):
    /// since when is unknown.
    #[serde(skip_serializing_if = "std::ops::Not::not")]
    pub parked_before_attach: bool,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub created_by: Option<Frame>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub start_function: Option<String>,
    /// One of the runtime's own goroutines (GC workers, sweeper, ...), which
    /// `runtime.NumGoroutine` and goroutine dumps leave out.
    pub system: bool,
    pub first_seen_unix_ns: u64,
    pub last_event_unix_ns: u64,
    /// Total of `blocking[].blocked_ns`.
    pub blocked_ns: u64,
    pub blocking: Vec<BlockingView>,
}

/// Converts CLOCK_MONOTONIC nanoseconds to wall-clock nanoseconds since the Unix epoch.
#[derive(Debug, Clone, Copy)]
pub struct WallClock {
    offset_ns: i128,
}

impl WallClock {
    pub fn now() -> WallClock {
        let mono = monotonic_ns() as i128;
        let wall = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.as_nanos() as i128)
            .unwrap_or(0);
        WallClock {
            offset_ns: wall - mono,
        }
    }

    pub fn unix_ns(&self, mono_ns: u64) -> u64 {
        (mono_ns as i128 + self.offset_ns).max(0) as u64
    }
}

pub fn goroutines(state: &State, pid: Option<u32>, now_ns: u64) -> Vec<GoroutineView> {
    let clock = WallClock::now();
    let mut out = Vec::new();
    for p in state
        .processes
        .values()
        .filter(|p| pid.is_none_or(|want| want == p.pid))
    {
        let target = &p.binary.target;
        let sym = Symbolizer { process: p, target };
        let mut gs: Vec<_> = p.blocking.goroutines.values().collect();
        gs.sort_by_key(|g| g.goid);
        for g in gs {
            let (state_name, reason, since) = match g.state {
                GoroutineState::Running => ("running", None, None),
                GoroutineState::Waiting { reason, since_ns } => (
                    "waiting",
                    Some(target.wait_reason_name(reason).0.to_string()),
                    since_ns,
                ),
                GoroutineState::Exited { .. } => ("exited", None, None),
            };
            let start_function = g.origin.and_then(|o| sym.function(o.startpc));
            let mut blocking: Vec<BlockingView> =
                g.blocking.iter().map(|b| blocking_view(b, &sym)).collect();
            blocking.sort_by_key(|b| std::cmp::Reverse(b.blocked_ns));
            out.push(GoroutineView {
                pid: p.pid,
                goid: g.goid,
                state: state_name,
                reason,
                waiting_since_unix_ns: since.map(|s| clock.unix_ns(s)),
                waiting_ns: since.map(|s| now_ns.saturating_sub(s)),
                parked_before_attach: matches!(
                    g.state,
                    GoroutineState::Waiting { since_ns: None, .. }
                ),
                created_by: g.origin.and_then(|o| sym.call_site(o.gopc)),
                start_function: start_function.clone(),
                system: start_function.as_deref().is_some_and(is_system_goroutine),
                first_seen_unix_ns: clock.unix_ns(g.first_seen_ns),
                last_event_unix_ns: clock.unix_ns(g.last_event_ns),
                blocked_ns: g.blocking.iter().map(|b| b.blocked_ns).sum(),
                blocking,
            });
        }
    }
    out
}

fn blocking_view(b: &GoroutineBlocking, sym: &Symbolizer) -> BlockingView {
    let max_stack: Vec<Frame> = b
        .max_frames
        .iter()
        .flat_map(|&pc| sym.call_sites(pc))
        .collect();
    BlockingView {
        reason: sym.target.wait_reason_name(b.reason).0.to_string(),
        count: b.count,
        blocked_ns: b.blocked_ns,
        max_ns: b.max_ns,
        max_frame: sym.user_frame(&max_stack).cloned(),
        max_stack,
    }
}

/// Suspect groups as metric series: the `top` largest by (reason, creation site), the rest
/// added up per reason.
fn leak_suspect_series(p: &super::ProcessState, top: usize) -> Vec<(String, String, u64)> {
    let target = &p.binary.target;
    let mut out: Vec<(String, String, u64)> = Vec::new();
    let mut other: std::collections::BTreeMap<String, u64> = Default::default();
    for (i, (key, group)) in p.leaks.suspects().into_iter().enumerate() {
        let reason = target.wait_reason_name(key.reason).0.to_string();
        if i < top {
            let site = key
                .created_by
                .as_deref()
                .map_or_else(|| "unknown".to_string(), Frame::short);
            match out.iter_mut().find(|(r, s, _)| *r == reason && *s == site) {
                Some(series) => series.2 += group.size,
                None => out.push((reason, site, group.size)),
            }
        } else {
            *other.entry(reason).or_default() += group.size;
        }
    }
    out.extend(
        other
            .into_iter()
            .map(|(reason, n)| (reason, "other".to_string(), n)),
    );
    out
}

/// Recent requests, newest first; one trace's when `trace_id` is given.
pub fn requests(
    state: &State,
    pid: Option<u32>,
    trace_id: Option<&str>,
) -> Vec<super::requests::RequestRecord> {
    let mut out: Vec<_> = state
        .processes
        .values()
        .filter(|p| pid.is_none_or(|want| want == p.pid))
        .flat_map(|p| p.requests.recent.iter())
        .filter(|r| trace_id.is_none_or(|t| r.trace_id == t))
        .cloned()
        .collect();
    out.sort_by_key(|r| std::cmp::Reverse(r.end_ns));
    out
}

/// A panic or fatal error, for `/api/v1/panics`.
#[derive(Debug, Clone, Serialize)]
pub struct PanicView {
    pub pid: u32,
    pub service: String,
    #[serde(flatten)]
    pub record: super::panics::PanicRecord,
}

/// Panics, newest first.
pub fn panics(state: &State, pid: Option<u32>) -> Vec<PanicView> {
    let mut out: Vec<PanicView> = state
        .processes
        .values()
        .filter(|p| pid.is_none_or(|want| want == p.pid))
        .flat_map(|p| {
            p.panics.records.iter().map(|r| PanicView {
                pid: p.pid,
                service: p.service.clone(),
                record: r.clone(),
            })
        })
        .collect();
    out.sort_by_key(|v| std::cmp::Reverse(v.record.at_ns));
    out
}

/// A leak suspect group, for `/api/v1/leaks`.
#[derive(Debug, Clone, Serialize)]
pub struct LeakView {
    pub pid: u32,
    pub service: String,
    /// Where the members were created.
    pub created_by: Option<Frame>,
    pub reason: String,
    /// Where the members block (first frame outside the runtime and standard library).
    pub blocking_frame: Option<Frame>,
    /// Members now.
    pub goroutines: u64,
    /// Members parked longer than `--leak-after`.
    pub parked_longer_than_leak_after: u64,
    /// Growth over the window, goroutines per second.
    pub growth_per_second: f64,
    /// How long the oldest member has been parked (at least, when `parked_before_attach`).
    pub oldest_park_age_ns: u64,
    /// Some members were parked before gort attached: their park's start is unknown.
    pub parked_before_attach: bool,
    pub example_goids: Vec<u64>,
    /// (wall clock, members) over the window.
    pub history: Vec<(u64, u64)>,
}

pub fn leaks(state: &State, pid: Option<u32>, now_ns: u64) -> Vec<LeakView> {
    let clock = WallClock::now();
    let mut out = Vec::new();
    for p in state
        .processes
        .values()
        .filter(|p| pid.is_none_or(|want| want == p.pid))
    {
        for (key, g) in p.leaks.suspects() {
            let oldest = if g.parked_before_attach {
                Some(p.first_seen_ns)
            } else {
                g.oldest_park_ns
            };
            let oldest = match (oldest, g.oldest_park_ns) {
                (Some(a), Some(b)) => Some(a.min(b)),
                (a, b) => a.or(b),
            };
            out.push(LeakView {
                pid: p.pid,
                service: p.service.clone(),
                created_by: key.created_by.as_deref().cloned(),
                reason: p.binary.target.wait_reason_name(key.reason).0.to_string(),
                blocking_frame: key.blocking.clone(),
                goroutines: g.size,
                parked_longer_than_leak_after: g.old_members,
                growth_per_second: g.growth_per_second(),
                oldest_park_age_ns: oldest.map_or(0, |o| now_ns.saturating_sub(o)),
                parked_before_attach: g.parked_before_attach,
                example_goids: g.examples.clone(),
                history: g
                    .history
                    .iter()
                    .map(|&(t, n)| (clock.unix_ns(t), n))
                    .collect(),
            });
        }
    }
    out
}

#[derive(Debug, Clone, Serialize)]
pub struct Unavailable {
    pub family: String,
    pub reason: String,
}

#[derive(Debug, Clone, Serialize)]
pub struct ProcessView {
    pub pid: u32,
    pub service: String,
    pub exe: String,
    pub go_version: String,
    /// `attached` or `exited`.
    pub state: &'static str,
    /// The probes' attachment it was measured through; a program attached anew (e.g. after
    /// an exec under `--all`) gets another one.
    pub attach_slot: u32,
    pub first_seen_unix_ns: u64,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub exited_unix_ns: Option<u64>,
    pub pie: bool,
    pub stripped: bool,
    pub offsets_source: String,
    pub wait_reasons_source: String,
    pub goroutines_tracked: usize,
    /// Goroutines found by walking the runtime's goroutine list at attach, or why not.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub goroutines_walked: Option<usize>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub walk_error: Option<String>,
    pub goroutines_untracked: u64,
    /// Probe families left out for this process's binary, and why.
    pub unavailable: Vec<Unavailable>,
    pub resumes_unmatched: u64,
}

/// Stop-the-world pauses by reason name. The two pauses of every GC cycle are there from the
/// start (at zero), so that the first GC's pauses show in `rate()` and `increase()` (a
/// series born with its first value does not).
fn gc_pauses(p: &super::ProcessState) -> Vec<(String, DurationHistogram)> {
    let target = &p.binary.target;
    let mut pauses: std::collections::BTreeMap<String, DurationHistogram> =
        p.gc.pauses
            .iter()
            .map(|(&raw, h)| (target.stw_reason_name(raw).0.to_string(), h.clone()))
            .collect();
    if p.binary.probes("gc") {
        for reason in ["GC sweep termination", "GC mark termination"] {
            pauses.entry(reason.to_string()).or_default();
        }
    }
    pauses.into_iter().collect()
}

pub fn processes(state: &State, _now_ns: u64) -> Vec<ProcessView> {
    let clock = WallClock::now();
    state
        .processes
        .values()
        .map(|p| {
            let t = &p.binary.target;
            ProcessView {
                pid: p.pid,
                service: p.service.clone(),
                exe: p.binary.exe.clone(),
                go_version: t.go_version().to_string(),
                state: if p.exited_ns.is_some() {
                    "exited"
                } else {
                    "attached"
                },
                attach_slot: p.binary.slot,
                first_seen_unix_ns: clock.unix_ns(p.first_seen_ns),
                exited_unix_ns: p.exited_ns.map(|e| clock.unix_ns(e)),
                pie: t.binary.is_pie(),
                stripped: !t.binary.has_symtab(),
                offsets_source: format!("{:?}", t.offsets.source).to_lowercase(),
                wait_reasons_source: format!("{:?}", t.wait_reasons.source).to_lowercase(),
                goroutines_tracked: p.blocking.goroutines.len(),
                goroutines_walked: p.walked.as_ref().ok().copied(),
                walk_error: p.walked.as_ref().err().cloned(),
                goroutines_untracked: p.blocking.untracked_goroutines,
                unavailable: p
                    .binary
                    .unavailable
                    .iter()
                    .map(|(family, reason)| Unavailable {
                        family: family.clone(),
                        reason: reason.clone(),
                    })
                    .collect(),
                resumes_unmatched: p.blocking.resumes_unmatched,
            }
        })
        .collect()
}
