//! Snapshots of the state, in the shapes the exporters publish: built by the aggregator on
//! request, owned by the exporter afterwards.

use serde::Serialize;

use super::{
    ProcessState, State,
    histogram::DurationHistogram,
    process::{GoroutineBlocking, GoroutineState},
};
use crate::{collect::monotonic_ns, target::GoTarget};

/// What /metrics shows.
#[derive(Debug, Clone, Default)]
pub struct MetricsView {
    pub processes: Vec<ProcessMetrics>,
    /// (cause, count) of everything the agent could not deliver.
    pub lost: Vec<(&'static str, u64)>,
    /// Kernel activity: (stat, count).
    pub probe_stats: Vec<(&'static str, u64)>,
}

#[derive(Debug, Clone)]
pub struct ProcessMetrics {
    pub pid: u32,
    pub service: String,
    pub exited: bool,
    pub reasons: Vec<ReasonMetrics>,
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
}

#[derive(Debug, Clone)]
pub struct ReasonMetrics {
    pub reason: String,
    pub histogram: DurationHistogram,
    pub parked_now: u64,
}

pub fn metrics(state: &State) -> MetricsView {
    let processes = state
        .processes
        .values()
        .map(|p| {
            let target = &p.binary.target;
            let mut reasons: std::collections::BTreeMap<u8, ReasonMetrics> = Default::default();
            let name = |raw: u8| target.wait_reason_name(raw).0.to_string();
            for (&raw, stats) in &p.blocking.reasons {
                reasons.insert(
                    raw,
                    ReasonMetrics {
                        reason: name(raw),
                        histogram: stats.histogram.clone(),
                        parked_now: 0,
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
                    })
                    .parked_now = n;
            }
            let live = p.blocking.live(|startpc| {
                p.link_address(startpc)
                    .and_then(|a| target.binary.pclntab().func_at(a))
                    .is_some_and(|f| is_system_goroutine(&f.name))
            });
            ProcessMetrics {
                pid: p.pid,
                service: p.service.clone(),
                exited: p.exited_ns.is_some(),
                reasons: reasons.into_values().collect(),
                sched_latency: p.sched_latency.clone(),
                pauses: p
                    .gc
                    .pauses
                    .iter()
                    .map(|(&raw, h)| (target.stw_reason_name(raw).0.to_string(), h.clone()))
                    .collect(),
                gc_cycles: p.gc.cycles,
                gc_mark: p.gc.mark.clone(),
                gc_probed: p.binary.probes("gc"),
                goroutines_system: live.0,
                goroutines_user: live.1,
                lifecycle: p
                    .binary
                    .probes_lifecycle()
                    .then_some((p.blocking.created_total, p.blocking.exited_total)),
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
    let probe_stats = vec![
        ("parks", k.stats[Stat::Parks as usize]),
        ("resumes", k.stats[Stat::Resumes as usize]),
        (
            "resumes_unmatched",
            k.stats[Stat::ResumesUnmatched as usize],
        ),
    ];
    MetricsView {
        processes,
        lost,
        probe_stats,
    }
}

/// A source location.
#[derive(Debug, Clone, Serialize, PartialEq, Eq)]
pub struct Frame {
    pub function: String,
    pub file: String,
    pub line: u32,
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

/// Turns runtime addresses of one process into functions and source lines.
struct Symbolizer<'a> {
    process: &'a ProcessState,
    target: &'a GoTarget,
}

impl Symbolizer<'_> {
    /// The function containing runtime address `pc`.
    fn function(&self, pc: u64) -> Option<String> {
        let addr = self.process.link_address(pc)?;
        self.target.binary.pclntab().func_at(addr).map(|f| f.name)
    }

    /// The calls at return address (or `go` statement PC) `pc`, innermost first: the
    /// functions inlined there, then the one holding the code. The instruction before `pc` is
    /// the call, as the runtime's own tracebacks look it up (runtime/traceback.go).
    fn call_sites(&self, pc: u64) -> Vec<Frame> {
        let Some(addr) = self.process.link_address(pc) else {
            return Vec::new();
        };
        let pclntab = self.target.binary.pclntab();
        let Some(f) = pclntab.func_at(addr) else {
            return Vec::new();
        };
        let at = if addr > f.entry { addr - 1 } else { addr };
        pclntab
            .frames_at(at)
            .into_iter()
            .map(|s| Frame {
                function: s.function,
                file: s.file,
                line: s.line,
            })
            .collect()
    }

    /// The innermost call at `pc`.
    fn call_site(&self, pc: u64) -> Option<Frame> {
        self.call_sites(pc).into_iter().next()
    }

    /// The frame a developer would look at: the first outside the Go runtime and standard
    /// library (the main module or a dependency), else the first outside the runtime.
    fn user_frame<'f>(&self, stack: &'f [Frame]) -> Option<&'f Frame> {
        let info = self.target.binary.build_info();
        let is_module_code = |f: &Frame| {
            let pkg = package_of(&f.function);
            pkg == "main"
                || info
                    .main_module
                    .as_ref()
                    .is_some_and(|m| under_module(pkg, &m.path))
                || info.deps.iter().any(|d| under_module(pkg, &d.path))
        };
        stack.iter().find(|f| is_module_code(f)).or_else(|| {
            stack.iter().find(|f| {
                let pkg = package_of(&f.function);
                pkg != "runtime" && !pkg.starts_with("internal/") && !pkg.starts_with("runtime/")
            })
        })
    }
}

/// Whether a goroutine that started in `start_function` is one of the runtime's own, as
/// runtime/traceback.go `isSystemGoroutine` decides: it started in package runtime, but not
/// in `runtime.main` (nor the runtime's entry points into user code). The finalizer and
/// cleanup goroutines count as the runtime's, as the runtime counts them between calls.
pub fn is_system_goroutine(start_function: &str) -> bool {
    start_function.starts_with("runtime.")
        && !matches!(
            start_function,
            "runtime.main" | "runtime.corostart" | "runtime.handleAsyncEvent"
        )
}

fn under_module(pkg: &str, module: &str) -> bool {
    pkg == module
        || pkg
            .strip_prefix(module)
            .is_some_and(|rest| rest.starts_with('/'))
}

/// The import path of a Go function's package: `net/http.(*conn).serve` → `net/http`,
/// `github.com/a/b.F` → `github.com/a/b`.
fn package_of(function: &str) -> &str {
    let last_slash = function.rfind('/').map_or(0, |i| i + 1);
    match function[last_slash..].find('.') {
        Some(dot) => &function[..last_slash + dot],
        None => function,
    }
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn system_goroutines_as_the_runtime_says() {
        assert!(is_system_goroutine("runtime.gcBgMarkWorker"));
        assert!(is_system_goroutine(
            "runtime.unique_runtime_registerUniqueMapCleanup.gowrap1"
        ));
        assert!(!is_system_goroutine("runtime.main"));
        assert!(!is_system_goroutine("main.main.func1"));
        assert!(!is_system_goroutine("net/http.(*conn).serve"));
    }

    #[test]
    fn packages_of_functions() {
        assert_eq!(package_of("main.worker"), "main");
        assert_eq!(package_of("main.(*server).handle.func1"), "main");
        assert_eq!(package_of("net/http.(*conn).serve"), "net/http");
        assert_eq!(
            package_of("github.com/acme/app/internal/db.(*Pool).Get"),
            "github.com/acme/app/internal/db"
        );
        assert_eq!(package_of("runtime.gopark"), "runtime");
        assert!(under_module(
            "github.com/acme/app/db",
            "github.com/acme/app"
        ));
        assert!(!under_module(
            "github.com/acme/application",
            "github.com/acme/app"
        ));
    }
}
