//! The one owner of measured state. Receives decoded events from the collector, keeps
//! blocking statistics per process, per wait reason and per goroutine, and answers queries
//! from the exporters with snapshots. Exporters never see the state itself.

pub mod gc;
pub mod histogram;
pub mod leaks;
pub mod panics;
pub mod process;
pub mod profile;
pub mod requests;
pub mod sampling;
pub mod sched_latency;
pub mod sites;
pub mod symbols;
pub mod traceparent;
pub mod view;

use std::{
    collections::{BTreeMap, HashMap},
    sync::{Arc, RwLock},
    time::Duration,
};

use tokio::sync::{mpsc, oneshot};

use self::{
    gc::PauseRole,
    process::{GoroutineReader, Origin, ProcessBlocking, Retention},
};
use crate::{
    collect::{AgentDrops, Batch, Event, KernelCounters, monotonic_ns},
    export::{
        events::EventsSender,
        otlp::{ExportStats, OtlpSender, convert::ProcessResource},
    },
    probes::{
        gc::GcProbeEvent,
        http::RequestProbeEvent,
        lifecycle::LifecycleEvent,
        panics::{PanicEventKind, PanicProbeEvent},
        procs::ProcessChange,
        sched::SchedEvent,
    },
    target::{
        GoTarget,
        process::{self as proc, ProcessId, ProcessMemory},
        stack, walk,
    },
};

/// A binary the probes are attached to, by attach slot.
#[derive(Debug)]
pub struct AttachedBinary {
    pub slot: u32,
    pub target: Arc<GoTarget>,
    /// The executable's path as given or as the process sees it.
    pub exe: String,
    /// Probe families left out for this binary: (family, why).
    pub unavailable: Vec<(String, String)>,
}

impl AttachedBinary {
    /// The binary `attachment` attached to, run as `exe`.
    pub fn new(
        attachment: &crate::probes::Attachment,
        target: Arc<GoTarget>,
        exe: String,
    ) -> AttachedBinary {
        AttachedBinary {
            slot: attachment.slot,
            target,
            exe,
            unavailable: attachment
                .unavailable
                .iter()
                .map(|(family, why)| (format!("{family:?}").to_lowercase(), why.clone()))
                .collect(),
        }
    }

    /// Whether the probes of `family` are attached.
    pub fn probes(&self, family: &str) -> bool {
        !self.unavailable.iter().any(|(f, _)| f == family)
    }

    pub fn probes_lifecycle(&self) -> bool {
        self.probes("lifecycle")
    }
}

/// Attached binaries by slot, shared between the attach logic and the aggregator.
pub type Binaries = Arc<RwLock<BTreeMap<u32, Arc<AttachedBinary>>>>;

#[derive(Debug, Clone)]
pub struct Settings {
    pub retention: Retention,
    /// How long an exited process's data stays.
    pub retain_process_for_ns: u64,
    /// Overrides the `service` label of every process.
    pub service: Option<String>,
    pub leaks: leaks::LeakSettings,
    /// Leak suspect groups per process on /metrics.
    pub leak_top: usize,
    /// Blocks at least this long inside a request become child spans.
    pub span_min_block_ns: u64,
}

/// Reads a process's progress (its runtime's counts of scheduling events and of goroutines
/// created) from its memory, in the run loop: at the very ends of a sampled window, which the
/// aggregator, busy with the window's events, would read late (`sampling::Pace`).
#[derive(Debug)]
pub struct ProgressReader {
    pub pid: u32,
    memory: ProcessMemory,
    /// `sched.timeToRun` in the process.
    addr: u64,
    layout: gobinary::TimeHistogramLayout,
    /// `sched.goidgen` in the process, where the binary says.
    goidgen: Option<u64>,
}

impl ProgressReader {
    pub fn read(&self) -> Option<sampling::ProgressMark> {
        let mut buf = vec![0u8; sched_latency::RuntimeHistogram::byte_len(self.layout)];
        if !self.memory.read(self.addr, &mut buf) {
            return None;
        }
        let events = sched_latency::RuntimeHistogram::decode(self.layout, &buf)?.count();
        // 0 where unknown: no creation pace then (`sampling::Pace::of`).
        let mut goids = [0u8; 8];
        if let Some(addr) = self.goidgen {
            if !self.memory.read(addr, &mut goids) {
                goids = [0; 8];
            }
        }
        Some(sampling::ProgressMark {
            ns: monotonic_ns(),
            events,
            goids: u64::from_le_bytes(goids),
        })
    }
}

/// (pid, its progress now) of every process `readers` can read.
pub fn progress_marks(readers: &[ProgressReader]) -> Vec<(u32, sampling::ProgressMark)> {
    readers
        .iter()
        .filter_map(|r| Some((r.pid, r.read()?)))
        .collect()
}

/// Time sampling under `--overhead-budget`, as the run loop last set it.
#[derive(Debug, Clone, Copy)]
pub struct SamplingStatus {
    pub window: sampling::SamplingWindow,
    /// What the last period measured, once one has passed.
    pub cost: Option<crate::budget::Cost>,
    pub settings: crate::budget::BudgetSettings,
    /// Periods completed.
    pub periods: u64,
    /// When each family of sampled probes was back in (CLOCK_MONOTONIC ns).
    pub probes_in: sampling::ProbesIn,
}

impl SamplingStatus {
    /// A budget's start, before its first period has been measured: everything measured.
    pub fn all_in(settings: crate::budget::BudgetSettings, now_ns: u64) -> SamplingStatus {
        let period_ns = settings.period.as_nanos() as u64;
        SamplingStatus {
            window: sampling::SamplingWindow {
                period_ns,
                window_ns: period_ns,
            },
            cost: None,
            settings,
            periods: 0,
            probes_in: sampling::ProbesIn::all_at(now_ns),
        }
    }

    /// When the park probes were back in: the window's start.
    pub fn window_start_ns(&self) -> u64 {
        self.probes_in.parks_ns
    }
}

/// A request from an exporter.
pub enum Query {
    /// The sampling for the period that begins, and the targets' progress at its start.
    Sampling(SamplingStatus, Vec<(u32, sampling::ProgressMark)>),
    /// The sampled probes of the window that began then (CLOCK_MONOTONIC ns) are going out
    /// (their removal began at `suspended_ns`), and the targets' progress just before.
    WindowEnded {
        window_start_ns: u64,
        suspended_ns: u64,
        progress: Vec<(u32, sampling::ProgressMark)>,
    },
    /// Readers of each live process's progress.
    ProgressReaders(oneshot::Sender<Vec<ProgressReader>>),
    /// The probes are out (time sampling; `while_out`) or back after a pause: the
    /// goroutines' states are read from memory (what happened meanwhile went unseen).
    Resync {
        while_out: bool,
    },
    /// `gort run --all` attached to a process: start tracking it now (walk its goroutines).
    Attached {
        pid: u32,
        binary: Arc<AttachedBinary>,
        container: proc::ContainerIdentity,
    },
    Metrics(oneshot::Sender<view::MetricsView>),
    Goroutines {
        pid: Option<u32>,
        reply: oneshot::Sender<Vec<view::GoroutineView>>,
    },
    Processes(oneshot::Sender<Vec<view::ProcessView>>),
    Leaks {
        pid: Option<u32>,
        reply: oneshot::Sender<Vec<view::LeakView>>,
    },
    Panics {
        pid: Option<u32>,
        reply: oneshot::Sender<Vec<view::PanicView>>,
    },
    Requests {
        pid: Option<u32>,
        trace_id: Option<String>,
        reply: oneshot::Sender<Vec<requests::RequestRecord>>,
    },
    /// The block profile of `pid` so far (the baseline of a window).
    ProfileSnapshot {
        pid: u32,
        reply: oneshot::Sender<Option<profile::Snapshot>>,
    },
    /// The block profile of `pid` since `baseline` (or since gort attached), as pprof.
    BlockProfile {
        pid: u32,
        baseline: Option<profile::Snapshot>,
        runtime: bool,
        window: (u64, u64),
        reply: oneshot::Sender<Option<crate::export::pprof::Profile>>,
    },
}

/// A handle for asking the aggregator.
#[derive(Clone)]
pub struct QueryHandle(mpsc::Sender<Query>);

impl QueryHandle {
    /// Tells the aggregator about a process just attached.
    pub async fn attached(
        &self,
        pid: u32,
        binary: Arc<AttachedBinary>,
        container: proc::ContainerIdentity,
    ) {
        let _ = self
            .0
            .send(Query::Attached {
                pid,
                binary,
                container,
            })
            .await;
    }

    pub async fn metrics(&self) -> Option<view::MetricsView> {
        self.ask(Query::Metrics).await
    }

    /// Sets the sampling of the period that begins.
    pub async fn sampling(
        &self,
        status: SamplingStatus,
        progress: Vec<(u32, sampling::ProgressMark)>,
    ) {
        let _ = self.0.send(Query::Sampling(status, progress)).await;
    }

    /// Readers of each live process's progress, for the ends of sampled windows.
    pub async fn progress_readers(&self) -> Vec<ProgressReader> {
        self.ask(Query::ProgressReaders).await.unwrap_or_default()
    }

    /// The sampled probes of the window that began at `window_start_ns` are going out (their
    /// removal began at `suspended_ns`); `progress` was read just before.
    pub async fn window_ended(
        &self,
        window_start_ns: u64,
        suspended_ns: u64,
        progress: Vec<(u32, sampling::ProgressMark)>,
    ) {
        let _ = self
            .0
            .send(Query::WindowEnded {
                window_start_ns,
                suspended_ns,
                progress,
            })
            .await;
    }

    /// The probes were out and are back: the goroutines' states are read anew from memory.
    pub async fn resync(&self) {
        let _ = self.0.send(Query::Resync { while_out: false }).await;
    }

    /// The probes are out: the goroutines' states are read from memory, so that goroutine
    /// counts, parked goroutines and leak groups stay current; skipped while the last
    /// reading's cost says it is too soon.
    pub async fn refresh(&self) {
        let _ = self.0.send(Query::Resync { while_out: true }).await;
    }

    pub async fn goroutines(&self, pid: Option<u32>) -> Option<Vec<view::GoroutineView>> {
        self.ask(|reply| Query::Goroutines { pid, reply }).await
    }

    pub async fn leaks(&self, pid: Option<u32>) -> Option<Vec<view::LeakView>> {
        self.ask(|reply| Query::Leaks { pid, reply }).await
    }

    pub async fn panics(&self, pid: Option<u32>) -> Option<Vec<view::PanicView>> {
        self.ask(|reply| Query::Panics { pid, reply }).await
    }

    pub async fn requests(
        &self,
        pid: Option<u32>,
        trace_id: Option<String>,
    ) -> Option<Vec<requests::RequestRecord>> {
        self.ask(|reply| Query::Requests {
            pid,
            trace_id,
            reply,
        })
        .await
    }

    pub async fn profile_snapshot(&self, pid: u32) -> Option<profile::Snapshot> {
        self.ask(|reply| Query::ProfileSnapshot { pid, reply })
            .await
            .flatten()
    }

    /// The block profile of `pid` since `baseline`; `window` is (start Unix ns, length ns).
    pub async fn block_profile(
        &self,
        pid: u32,
        baseline: Option<profile::Snapshot>,
        runtime: bool,
        window: (u64, u64),
    ) -> Option<crate::export::pprof::Profile> {
        self.ask(|reply| Query::BlockProfile {
            pid,
            baseline,
            runtime,
            window,
            reply,
        })
        .await
        .flatten()
    }

    pub async fn processes(&self) -> Option<Vec<view::ProcessView>> {
        self.ask(Query::Processes).await
    }

    async fn ask<T>(&self, make: impl FnOnce(oneshot::Sender<T>) -> Query) -> Option<T> {
        let (tx, rx) = oneshot::channel();
        self.0.send(make(tx)).await.ok()?;
        rx.await.ok()
    }
}

/// One target process.
#[derive(Debug)]
pub struct ProcessState {
    pub pid: u32,
    /// None when the process was gone before gort could look at it.
    pub id: Option<ProcessId>,
    pub service: String,
    /// Its container and pod, when its cgroup names them.
    pub container: proc::ContainerIdentity,
    pub binary: Arc<AttachedBinary>,
    /// Runtime address minus link-time address; None if unknown (PIE process already gone).
    pub bias: Option<u64>,
    memory: Option<ProcessMemory>,
    pub blocking: ProcessBlocking,
    pub gc: gc::GcStats,
    pub panics: panics::Panics,
    pub requests: requests::Requests,
    pub leaks: leaks::LeakTracker,
    /// Blocked time by stack, for pprof.
    pub profile: profile::BlockProfile,
    /// Blocked time by call site (blocks with a captured stack).
    pub sites: sites::BlockSites,
    /// How many goroutines the walk of the runtime's list found at attach, or why it could not.
    pub walked: Result<usize, String>,
    /// The last reading of the runtime's own scheduling-latency histogram.
    pub sched_latency: Option<sched_latency::RuntimeHistogram>,
    /// Parks and blocked time scaled up under time sampling (`--overhead-budget`).
    pub estimates: sampling::Estimates,
    /// Its progress when the current sampled window began and ended (`sampling::pace`).
    pub window_progress: (
        Option<sampling::ProgressMark>,
        Option<sampling::ProgressMark>,
    ),
    pub first_seen_ns: u64,
    /// When this program began (its exec), if gort saw it: events of the pid from before
    /// belong to the program it replaced. 0 if unknown.
    pub started_ns: u64,
    pub exited_ns: Option<u64>,
    /// When another program took this pid (an exec, or a reused pid), if gort saw it.
    pub replaced_ns: Option<u64>,
}

/// Reads goroutines' `runtime.g` through `/proc/PID/mem`.
struct MemoryReader<'a> {
    memory: Option<&'a ProcessMemory>,
    target: &'a GoTarget,
}

impl<'a> MemoryReader<'a> {
    // Borrows fields, not the whole ProcessState, so its other fields stay mutable.
    fn of(memory: Option<&'a ProcessMemory>, target: &'a GoTarget) -> MemoryReader<'a> {
        MemoryReader { memory, target }
    }

    /// Reads the u64 at `offset` of the `g` at `g`, provided that `g` still holds `goid`.
    fn read_g_field(&self, g: u64, goid: u64, offset: u32) -> Option<u64> {
        let mem = self.memory?;
        let value = mem.read_u64(g + offset as u64)?;
        (mem.read_u64(g + self.target.offsets.g_goid as u64)? == goid).then_some(value)
    }
}

/// `_Gdead` (runtime/runtime2.go); `_Gscan` is a bit or'ed onto the status.
const G_DEAD: u32 = 6;
const G_SCAN: u32 = 0x1000;

impl GoroutineReader for MemoryReader<'_> {
    fn origin(&self, g: u64, goid: u64) -> Option<Origin> {
        let o = &self.target.offsets;
        let gopc = self.read_g_field(g, goid, o.g_gopc)?;
        let startpc = self.read_g_field(g, goid, o.g_startpc)?;
        Some(Origin { gopc, startpc })
    }

    fn has_exited(&self, g: u64, goid: u64) -> Option<bool> {
        let mem = self.memory?;
        let o = &self.target.offsets;
        if mem.read_u64(g + o.g_goid as u64)? != goid {
            return Some(true);
        }
        let mut status = [0u8; 4];
        if !mem.read(g + o.g_atomicstatus as u64, &mut status) {
            return None;
        }
        Some(u32::from_le_bytes(status) & !G_SCAN == G_DEAD)
    }
}

impl ProcessState {
    /// Reads the goroutines' states from memory after the probes were out for a while
    /// (what was created, exited, parked or resumed meanwhile went unseen).
    fn resync(&mut self, now_ns: u64, limits: &Retention) {
        let (Some(memory), Some(bias), Some(vars)) =
            (self.memory.as_ref(), self.bias, self.binary.target.allg)
        else {
            return;
        };
        if let Ok(walked) = walk::walk(memory, vars, bias, &self.binary.target.offsets) {
            self.blocking.on_resync(&walked, now_ns, limits);
        }
    }

    /// The program stopped at `at_ns` (exited, or replaced by an exec): keep what was measured.
    fn end(&mut self, at_ns: u64) {
        self.exited_ns = Some(at_ns);
        self.memory = None;
        self.blocking.process_exited(at_ns);
    }

    /// A finished request as a record: trace ids, blocking per reason, the longest block's
    /// frame, child spans.
    fn request_record(
        &self,
        goid: u64,
        a: requests::ActiveRequest,
        end_ns: u64,
        route: Option<String>,
    ) -> requests::RequestRecord {
        let target = &self.binary.target;
        let sym = symbols::Symbolizer {
            process: self,
            target,
        };
        let clock = view::WallClock::now();
        let frame_of = |frames: &[u64]| {
            let stack: Vec<symbols::Frame> =
                frames.iter().flat_map(|&pc| sym.call_sites(pc)).collect();
            sym.user_frame(&stack).cloned()
        };
        let (trace_id, parent, generated, flags) = match a.trace {
            requests::TraceOrigin::Header(t) => (t.trace_id, Some(t.parent_id), false, t.flags),
            // gort records it, so its own root is sampled.
            requests::TraceOrigin::Generated(id) => (id, None, true, 1),
        };
        let name = |raw: u8| target.wait_reason_name(raw).0.to_string();
        requests::RequestRecord {
            kind: "request",
            trace_id: traceparent::hex(&trace_id),
            parent_span_id: parent.map(|p| traceparent::hex(&p)),
            trace_id_generated: generated,
            span_id: traceparent::hex(&a.span_id),
            trace_flags: flags,
            pid: self.pid,
            service: self.service.clone(),
            goid,
            method: a.method,
            route,
            start_ns: a.start_ns,
            end_ns,
            start_unix_ns: clock.unix_ns(a.start_ns),
            end_unix_ns: clock.unix_ns(end_ns),
            duration_ns: end_ns.saturating_sub(a.start_ns),
            blocked_ns: a.blocking.values().map(|&(_, ns)| ns).sum(),
            blocking: a
                .blocking
                .iter()
                .map(|(&r, &(count, ns))| requests::RequestBlocking {
                    reason: name(r),
                    count,
                    blocked_ns: ns,
                })
                .collect(),
            longest_block: a.longest.as_ref().map(|(r, park, resume, frames)| {
                requests::LongestBlock {
                    reason: name(*r),
                    ns: resume - park,
                    frame: frame_of(frames).map(|f| f.short()),
                }
            }),
            block_spans: a
                .block_spans
                .iter()
                .map(|(r, park, resume, frames)| requests::BlockSpan {
                    reason: name(*r),
                    start_unix_ns: clock.unix_ns(*park),
                    end_unix_ns: clock.unix_ns(*resume),
                    frame: frame_of(frames),
                })
                .collect(),
        }
    }

    /// A panic or fatal error as a record: its message decoded, its stack symbolized.
    fn panic_record(&self, e: &PanicProbeEvent) -> panics::PanicRecord {
        let target = &self.binary.target;
        let sym = symbols::Symbolizer {
            process: self,
            target,
        };
        let stack: Vec<symbols::Frame> =
            e.frames.iter().flat_map(|&pc| sym.call_sites(pc)).collect();
        let site = sym.user_frame(&stack).cloned();
        let fatal_error = e.kind == PanicEventKind::FatalError;
        // A panic while serving a request (net/http recovers handlers' panics).
        let request = self.requests.active.get(&e.goid);
        let (value_type, (message, message_exact)) = if fatal_error {
            (
                None,
                (String::from_utf8_lossy(&e.message).into_owned(), true),
            )
        } else {
            let ty = self
                .link_address(e.value_type)
                .and_then(|t| target.binary.type_name(t));
            let decoded = panics::panic_message(ty.as_deref(), e.value_words, &e.message);
            (ty, decoded)
        };
        panics::PanicRecord {
            goid: e.goid,
            at_ns: e.ns,
            at_unix_ns: view::WallClock::now().unix_ns(e.ns),
            kind: if fatal_error { "fatal error" } else { "panic" },
            value_type,
            message,
            message_exact,
            site,
            stack,
            outcome: if fatal_error {
                panics::Outcome::Fatal
            } else {
                panics::Outcome::Unwinding
            },
            trace_id: request.map(|r| traceparent::hex(&r.trace_id())),
            span_id: request.map(|r| traceparent::hex(&r.span_id)),
            value: (e.value_type, e.value_data),
        }
    }

    /// Regroups the goroutines waiting now for the leak analysis.
    fn analyze_leaks(&mut self, now_ns: u64, settings: &leaks::LeakSettings) {
        let waiting: Vec<leaks::Waiting> = self
            .blocking
            .goroutines
            .values()
            .filter_map(|g| match g.state {
                process::GoroutineState::Waiting { reason, since_ns } => Some(leaks::Waiting {
                    goid: g.goid,
                    g: g.g,
                    reason,
                    since_ns,
                    first_seen_ns: g.first_seen_ns,
                    gopc: g.origin.map(|o| o.gopc),
                }),
                _ => None,
            })
            .collect();
        let mut tracker = std::mem::take(&mut self.leaks);
        let sym = symbols::Symbolizer {
            process: self,
            target: &self.binary.target,
        };
        let created_by = |gopc: u64| sym.call_site(gopc);
        let blocking_frame = |g: u64| {
            let mem = self.memory.as_ref()?;
            let pcs = stack::parked_stack(mem, g, &self.binary.target.offsets);
            let frames: Vec<_> = pcs.iter().flat_map(|&pc| sym.call_sites(pc)).collect();
            sym.user_frame(&frames).cloned()
        };
        tracker.analyze(
            now_ns,
            self.first_seen_ns,
            waiting,
            &created_by,
            &blocking_frame,
            settings,
        );
        self.leaks = tracker;
    }

    /// Reads the runtime's scheduling-latency histogram from the target's memory.
    /// A reader of its progress for the run loop (`sampling::pace`), where it can be read.
    fn progress_reader(&self) -> Option<ProgressReader> {
        let (h, bias) = (self.binary.target.sched_latency?, self.bias?);
        Some(ProgressReader {
            pid: self.pid,
            memory: ProcessMemory::open(self.pid).ok()?,
            addr: h.vaddr.wrapping_add(bias),
            layout: h.layout,
            goidgen: h.goidgen_vaddr.map(|a| a.wrapping_add(bias)),
        })
    }

    fn read_sched_latency(&mut self) {
        let (Some(h), Some(bias), Some(mem)) =
            (self.binary.target.sched_latency, self.bias, &self.memory)
        else {
            return;
        };
        let mut buf = vec![0u8; sched_latency::RuntimeHistogram::byte_len(h.layout)];
        if mem.read(h.vaddr.wrapping_add(bias), &mut buf) {
            self.sched_latency = sched_latency::RuntimeHistogram::decode(h.layout, &buf);
        }
    }

    /// The link-time address of runtime address `pc`.
    pub fn link_address(&self, pc: u64) -> Option<u64> {
        self.bias.map(|b| pc.wrapping_sub(b))
    }

    /// `function file:line` of the first frame of `stack` (return addresses) outside the
    /// runtime and standard library.
    fn site_name(&self, stack: &[u64]) -> Option<String> {
        let sym = symbols::Symbolizer {
            process: self,
            target: &self.binary.target,
        };
        let frames: Vec<symbols::Frame> = stack.iter().flat_map(|&pc| sym.call_sites(pc)).collect();
        sym.user_frame(&frames).map(symbols::Frame::short)
    }

    /// Blocking by stack since `baseline` (or since gort attached), as a pprof profile.
    fn block_profile(
        &self,
        baseline: Option<&profile::Snapshot>,
        runtime: bool,
        (time_unix_ns, duration_ns): (u64, u64),
    ) -> crate::export::pprof::Profile {
        let (stacks, time_unix_ns, duration_ns) = match baseline {
            Some(b) => (self.profile.since(b), time_unix_ns, duration_ns),
            // Since gort began watching.
            None => {
                let start = view::WallClock::now().unix_ns(self.first_seen_ns);
                (
                    self.profile.snapshot(),
                    start,
                    time_unix_ns.saturating_sub(start),
                )
            }
        };
        let target = &self.binary.target;
        let sym = symbols::Symbolizer {
            process: self,
            target,
        };
        let symbolize = |pc: u64| {
            let frames = sym.call_sites(pc);
            if frames.is_empty() {
                vec![symbols::Frame {
                    function: format!("{pc:#x}"),
                    file: String::new(),
                    line: 0,
                }]
            } else {
                frames
            }
        };
        let reason = |raw: u8| target.wait_reason_name(raw).0.to_string();
        let mut comments = vec![format!(
            "gort block profile of pid {} ({}), Go {}",
            self.pid,
            self.service,
            target.go_version()
        )];
        if self.profile.overflow > 0 {
            comments.push(format!(
                "{} blocks counted without their stack: more than {} distinct stacks",
                self.profile.overflow,
                profile::MAX_STACKS
            ));
        }
        crate::export::pprof::build(
            &stacks,
            &symbolize,
            &reason,
            runtime,
            &crate::export::pprof::ProfileMeta {
                exe: &self.binary.exe,
                time_unix_ns,
                duration_ns,
                comments,
            },
        )
    }
}

/// All measured state.
pub struct State {
    pub settings: Settings,
    binaries: Binaries,
    pub processes: BTreeMap<u32, ProcessState>,
    pub kernel: KernelCounters,
    agent_drops: Arc<AgentDrops>,
    /// Events gort could not file under a tracked program: of a released binary slot, or
    /// late events of a program that exited or was replaced.
    pub unattributed_events: u64,
    /// Execs of tracked programs whose replacement has not been filed yet: pid → exec ns.
    pending_execs: HashMap<u32, u64>,
    /// Time sampling, under `--overhead-budget`.
    pub sampling: Option<SamplingStatus>,
    /// The parks of the current sampled window, weighed when it ends.
    window: sampling::OpenWindow,
    /// While the probes are out, no reading of the goroutines from memory before this
    /// (CLOCK_MONOTONIC ns).
    next_refresh_ns: u64,
    /// Where `--events` records go.
    pub events: Option<EventsSender>,
    /// Where spans go, and what the OTLP exporter could not send.
    pub otlp: Option<OtlpSender>,
    pub export_stats: Option<Arc<ExportStats>>,
    last_sweep_ns: u64,
}

/// Where an event of a pid goes.
enum Filing {
    /// To the program tracked on the pid.
    Known,
    /// To a program gort starts to track on the pid now.
    New,
    /// Nowhere: no tracked program owns it (counted).
    Unattributed,
}

/// Goroutines not parked and without events for this long get checked for exit.
const EXIT_CHECK_QUIET_NS: u64 = 2_000_000_000;
const SWEEP_EVERY_NS: u64 = 2_000_000_000;
/// While the probes are out, a reading of the goroutines from memory waits this many times
/// what the last one took (at most 2 % of a CPU).
const REFRESH_COST_FACTOR: u64 = 50;

impl State {
    pub fn new(settings: Settings, binaries: Binaries, agent_drops: Arc<AgentDrops>) -> State {
        State {
            settings,
            binaries,
            processes: BTreeMap::new(),
            kernel: KernelCounters::default(),
            agent_drops,
            unattributed_events: 0,
            pending_execs: HashMap::new(),
            sampling: None,
            window: sampling::OpenWindow::default(),
            next_refresh_ns: 0,
            events: None,
            otlp: None,
            export_stats: None,
            last_sweep_ns: 0,
        }
    }

    /// Starts tracking `pid` (if not yet) as a process of `binary`.
    pub fn add_process(&mut self, pid: u32, binary: Arc<AttachedBinary>) -> &mut ProcessState {
        let now = monotonic_ns();
        let mut started_ns = 0;
        if let Some(old) = self.processes.get(&pid) {
            if old.exited_ns.is_some() {
                // A new program on this pid (exec or reuse).
                started_ns = old.replaced_ns.unwrap_or(0);
                self.processes.remove(&pid);
            } else if old.binary.slot != binary.slot {
                // The same program, attached anew.
                started_ns = old.started_ns;
                self.processes.remove(&pid);
            }
        }
        let settings = &self.settings;
        self.processes.entry(pid).or_insert_with(|| {
            let id = ProcessId::of(pid).ok();
            let service = settings
                .service
                .clone()
                .or_else(|| proc::service_name(pid).ok())
                .unwrap_or_else(|| exe_base_name(&binary.exe));
            let target = &binary.target;
            let bias = proc::load_bias(pid, target.gopark_entry, target.gopark_vaddr)
                .ok()
                .or((!target.binary.is_pie()).then_some(0));
            let memory = ProcessMemory::open(pid).ok();
            let mut blocking = ProcessBlocking::default();
            let walked = walk_goroutines(
                memory.as_ref(),
                target,
                bias,
                now,
                &settings.retention,
                &mut blocking,
            );
            ProcessState {
                pid,
                walked,
                exited_ns: if id.is_some() { None } else { Some(now) },
                id,
                service,
                container: proc::container_identity(pid),
                bias,
                memory,
                binary,
                blocking,
                gc: gc::GcStats::default(),
                panics: panics::Panics::default(),
                requests: requests::Requests::default(),
                leaks: leaks::LeakTracker::default(),
                profile: profile::BlockProfile::default(),
                sites: sites::BlockSites::default(),
                sched_latency: None,
                estimates: sampling::Estimates::default(),
                window_progress: (None, None),
                first_seen_ns: now,
                started_ns,
                replaced_ns: None,
            }
        })
    }

    pub fn apply(&mut self, batch: Batch) {
        // An exec in this batch splits its pid's events: those from before it are the old
        // program's, the rest the new one's (`collect`: nothing of the new program can come
        // in an earlier batch than its exec).
        for event in &batch {
            if let Event::Process(ProcessChange::Exec { pid, ns }) = *event {
                if self.processes.get(&pid).is_some_and(|p| p.started_ns < ns) {
                    self.pending_execs.insert(pid, ns);
                }
            }
        }
        let mut changes = Vec::new();
        for event in batch {
            match event {
                Event::Process(change) => changes.push(change),
                Event::Sched(e) => self.apply_sched(e),
                Event::Gc(e) => self.apply_gc(e),
                Event::Lifecycle(e) => self.apply_lifecycle(e),
                Event::Panic(e) => self.apply_panic(e),
                Event::Request(e) => self.apply_request(e),
                Event::Kernel(k) => self.kernel = k,
                Event::Parked(snapshot) => {
                    let mut by_pid: BTreeMap<u32, Vec<(u64, u64, u8, u64)>> = BTreeMap::new();
                    for p in &snapshot.goroutines {
                        by_pid
                            .entry(p.pid)
                            .or_default()
                            .push((p.goid, p.g, p.reason, p.park_ns));
                    }
                    let limits = self.settings.retention;
                    for (pid, p) in self.processes.iter_mut() {
                        if p.exited_ns.is_some() {
                            continue;
                        }
                        let mut parked = by_pid.remove(pid).unwrap_or_default();
                        parked.retain(|&(_, _, _, park_ns)| park_ns >= p.started_ns);
                        let reader = MemoryReader::of(p.memory.as_ref(), &p.binary.target);
                        p.blocking
                            .on_parked_snapshot(&parked, snapshot.taken_ns, &limits, &reader);
                    }
                }
            }
        }
        self.apply_process_changes(changes);
    }

    /// A new sampling period: what the last window saw is weighed now that its end is known,
    /// and each process's pace over the period with it (`sampling::Pace`).
    pub fn set_sampling(
        &mut self,
        status: SamplingStatus,
        progress: &[(u32, sampling::ProgressMark)],
    ) {
        let next = (status.window.window_ns < status.window.period_ns).then_some(status.window);
        let mut paces = HashMap::new();
        for p in self.processes.values_mut() {
            let now = progress
                .iter()
                .find(|(pid, _)| *pid == p.pid)
                .map(|&(_, m)| m);
            if let ((Some(start), Some(end)), Some(now)) = (p.window_progress, now) {
                let pace = sampling::Pace::of(start, end, now);
                log::debug!(
                    "pace of {}: {} events and {} goroutine ids in the window's {:.3} s, {} and \
                     {} in the period's {:.3} s: {pace:?}",
                    p.pid,
                    end.events.saturating_sub(start.events),
                    end.goids.saturating_sub(start.goids),
                    end.ns.saturating_sub(start.ns) as f64 / 1e9,
                    now.events.saturating_sub(start.events),
                    now.goids.saturating_sub(start.goids),
                    now.ns.saturating_sub(start.ns) as f64 / 1e9,
                );
                paces.insert(p.pid, pace);
            }
            p.window_progress = (now, None);
        }
        let pace = |pid| paces.get(&pid).copied().unwrap_or(sampling::Pace::ONE);
        for (o, weight) in self.window.close(next, status.probes_in, pace) {
            if let Some(p) = self.processes.get_mut(&o.pid) {
                p.estimates.add(&o, weight);
            }
        }
        self.sampling = Some(status);
    }

    /// The sampled probes of the window that began at `window_start_ns` are going out from
    /// `suspended_ns`, each process's `progress` read just before: the window's end, for the
    /// weights and `sampling::pace`.
    pub fn window_ended(
        &mut self,
        window_start_ns: u64,
        suspended_ns: u64,
        progress: &[(u32, sampling::ProgressMark)],
    ) {
        if self.sampling.map(|s| s.window_start_ns()) != Some(window_start_ns) {
            return;
        }
        self.window.ended(suspended_ns);
        for &(pid, mark) in progress {
            if let Some(p) = self.processes.get_mut(&pid) {
                if p.window_progress.0.is_some() {
                    p.window_progress.1 = Some(mark);
                }
            }
        }
    }

    /// Under `--overhead-budget`: what the sampled probes saw, for the estimates (held until
    /// its window ends; counted once while everything is measured).
    fn observe(&mut self, o: sampling::Observation) {
        let Some(planned) = self.sampling.map(|s| s.window) else {
            return;
        };
        let (o, weight) = if planned.window_ns < planned.period_ns {
            match self.window.record(o) {
                None => return,
                Some(weighed) => weighed,
            }
        } else {
            (o, sampling::Weight::ONE)
        };
        if let Some(p) = self.processes.get_mut(&o.pid) {
            p.estimates.add(&o, weight);
        }
    }

    /// Ends programs that exited or were replaced, after the events of their batch (which
    /// all happened before).
    fn apply_process_changes(&mut self, changes: Vec<ProcessChange>) {
        for change in changes {
            match change {
                ProcessChange::Exec { pid, .. } => {
                    // No event of the new program yet: the old one still ends here.
                    if let Some(at) = self.pending_execs.remove(&pid) {
                        self.end_process(pid, at, true);
                    }
                }
                ProcessChange::Exit { pid, ns } => {
                    // The first thread also ends when another thread execs (and takes over
                    // the pid): the exec, not this, ends the program then.
                    if self.processes.get(&pid).is_some_and(|p| {
                        p.started_ns <= ns && !p.id.is_some_and(|id| id.is_alive())
                    }) {
                        self.end_process(pid, ns, false);
                    }
                }
            }
        }
    }

    /// Program `pid` ended at `at_ns` (`replaced`: by an exec on the same pid).
    fn end_process(&mut self, pid: u32, at_ns: u64, replaced: bool) {
        let Some(p) = self.processes.get_mut(&pid) else {
            return;
        };
        if p.exited_ns.is_none() {
            log::info!(
                "process {pid} ({}) {}; keeping what was measured",
                p.service,
                if replaced {
                    "started a new program"
                } else {
                    "exited"
                }
            );
            p.end(at_ns);
        }
        if replaced {
            p.replaced_ns = Some(at_ns);
        }
    }

    fn apply_request(&mut self, e: RequestProbeEvent) {
        let events = self.events.clone();
        let otlp = self.otlp.clone();
        let Some(p) = self.process_for(e.binary as u32, e.pid, e.ns) else {
            return;
        };
        if e.start {
            let method = String::from_utf8_lossy(&e.method).into_owned();
            p.requests.on_start(
                e.goid,
                e.ns,
                e.traceparent.as_deref(),
                method,
                e.headers_truncated,
            );
            return;
        }
        let Some(active) = p.requests.on_end(e.goid) else {
            return;
        };
        let seen = sampling::Observation {
            pid: e.pid,
            length_ns: e.ns.saturating_sub(active.start_ns),
            end_ns: e.ns,
            seen: sampling::Seen::Request {
                blocked: active
                    .blocking
                    .iter()
                    .map(|(&reason, &(parks, ns))| (reason, parks, ns))
                    .collect(),
            },
        };
        let route = e
            .pattern
            .as_deref()
            .map(|r| String::from_utf8_lossy(r).into_owned());
        let record = p.request_record(e.goid, active, e.ns, route);
        if let Some(events) = events {
            events.send_request(&record);
        }
        // As a parent-based sampler would: spans only for requests the caller sampled.
        if let Some(otlp) = otlp.filter(|_| record.trace_flags & 1 == 1) {
            let process = ProcessResource {
                pid: p.pid,
                service: p.service.clone(),
                exe: p.binary.exe.clone(),
                container: p.container.clone(),
            };
            otlp.send_request(process, record.clone());
        }
        p.requests.record(record);
        self.observe(seen);
    }

    fn apply_panic(&mut self, e: PanicProbeEvent) {
        let events = self.events.clone();
        let Some(p) = self.process_for(e.binary as u32, e.pid, e.ns) else {
            return;
        };
        let resolved = match e.kind {
            PanicEventKind::Panic | PanicEventKind::FatalError => {
                let record = p.panic_record(&e);
                let fatal = record.outcome == panics::Outcome::Fatal;
                p.panics.on_panic(record);
                fatal.then(|| p.panics.records.back().cloned()).flatten()
            }
            PanicEventKind::Recovered => p
                .panics
                .on_recovered(e.goid, (e.value_type, e.value_data), e.ns)
                .cloned(),
            PanicEventKind::FatalPanic => p.panics.resolve(e.goid, panics::Outcome::Fatal).cloned(),
        };
        if let (Some(record), Some(events)) = (resolved, events) {
            events.send_panic(p.pid, &p.service, &record);
        }
    }

    fn apply_lifecycle(&mut self, e: LifecycleEvent) {
        let limits = self.settings.retention;
        let Some(p) = self.process_for(e.binary as u32, e.pid, e.ns) else {
            return;
        };
        let counted = if e.created {
            p.blocking.on_created(
                e.goid,
                e.g,
                Origin {
                    gopc: e.gopc,
                    startpc: e.startpc,
                },
                e.ns,
                &limits,
            )
        } else {
            p.requests.abandon(e.goid);
            p.blocking.on_exited(e.goid, e.ns, &limits)
        };
        // A probe that fired twice counts once, in the estimates too.
        if counted {
            self.observe(sampling::Observation {
                pid: e.pid,
                length_ns: 0,
                end_ns: e.ns,
                seen: if e.created {
                    sampling::Seen::Created
                } else {
                    sampling::Seen::Exited
                },
            });
        }
    }

    fn apply_gc(&mut self, e: GcProbeEvent) {
        let (binary, pid, at_ns) = match e {
            GcProbeEvent::Pause {
                binary,
                pid,
                start_ns,
                ..
            } => (binary, pid, start_ns),
            GcProbeEvent::Cycle { binary, pid, at_ns } => (binary, pid, at_ns),
        };
        let Some(p) = self.process_for(binary as u32, pid, at_ns) else {
            return;
        };
        match e {
            GcProbeEvent::Pause {
                reason,
                stop_ns,
                start_ns,
                ..
            } => {
                let name = p.binary.target.stw_reason_name(reason);
                p.gc.on_pause(reason, PauseRole::of(&name.0), stop_ns, start_ns);
            }
            GcProbeEvent::Cycle { at_ns, .. } => p.gc.on_cycle(at_ns),
        }
    }

    /// The live program on `pid` of binary `slot` for an event at `at_ns`, started to be
    /// tracked on its first event; None for events gort cannot file under it (counted).
    fn process_for(&mut self, slot: u32, pid: u32, at_ns: u64) -> Option<&mut ProcessState> {
        if let Some(&exec_ns) = self.pending_execs.get(&pid) {
            if at_ns >= exec_ns {
                // The first event of the program that replaced the tracked one.
                self.pending_execs.remove(&pid);
                self.end_process(pid, exec_ns, true);
            }
        }
        let filing = match self.processes.get(&pid) {
            None => Filing::New,
            Some(p) => match p.exited_ns {
                // The program it replaced, late.
                None if at_ns < p.started_ns => Filing::Unattributed,
                None if p.binary.slot == slot => Filing::Known,
                // The same program attached anew.
                None => Filing::New,
                // Before its end: it still ran then.
                Some(end) if at_ns <= end && p.binary.slot == slot => Filing::Known,
                Some(end) if at_ns <= end => Filing::Unattributed,
                // A new program on a reused pid.
                Some(_) if ProcessId::of(pid).is_ok() => Filing::New,
                Some(_) => Filing::Unattributed,
            },
        };
        match filing {
            Filing::Known => {}
            Filing::Unattributed => {
                self.unattributed_events += 1;
                return None;
            }
            Filing::New => {
                let Some(b) = self
                    .binaries
                    .read()
                    .expect("not poisoned")
                    .get(&slot)
                    .cloned()
                else {
                    self.unattributed_events += 1;
                    return None;
                };
                if self.add_process(pid, b).started_ns > at_ns {
                    self.unattributed_events += 1;
                    return None;
                }
            }
        }
        self.processes.get_mut(&pid)
    }

    fn apply_sched(&mut self, e: SchedEvent) {
        let (binary, pid, at_ns) = match &e {
            SchedEvent::Block {
                binary,
                pid,
                resume_ns,
                ..
            }
            | SchedEvent::ResumeUnmatched {
                binary,
                pid,
                resume_ns,
                ..
            } => (*binary as u32, *pid, *resume_ns),
        };
        let limits = self.settings.retention;
        let span_min_ns = self.settings.span_min_block_ns;
        let Some(p) = self.process_for(binary, pid, at_ns) else {
            return;
        };
        let reader = MemoryReader::of(p.memory.as_ref(), &p.binary.target);
        match e {
            SchedEvent::Block {
                goid,
                g,
                reason,
                park_ns,
                resume_ns,
                frames,
                ..
            } => {
                let length = resume_ns.saturating_sub(park_ns);
                let span =
                    p.requests
                        .on_block(goid, reason, park_ns, resume_ns, &frames, span_min_ns);
                p.profile.record(reason, &frames, length);
                let site = if frames.is_empty() {
                    None
                } else {
                    let site = match p.sites.cached(&frames) {
                        Some(site) => site,
                        None => {
                            let name = p.site_name(&frames);
                            p.sites.intern(&frames, name)
                        }
                    };
                    p.sites.add(reason, site, length);
                    Some(site)
                };
                p.blocking.on_block(
                    goid, g, reason, park_ns, resume_ns, &frames, &limits, &reader,
                );
                if let Some(span) = span {
                    p.blocking.on_traced_block(reason, park_ns, resume_ns, span);
                }
                self.observe(sampling::Observation {
                    pid,
                    length_ns: length,
                    end_ns: resume_ns,
                    seen: sampling::Seen::Park { reason, site },
                });
            }
            SchedEvent::ResumeUnmatched {
                goid, g, resume_ns, ..
            } => p
                .blocking
                .on_resume_unmatched(goid, g, resume_ns, &limits, &reader),
        }
    }

    /// Periodic upkeep: notices exited processes and goroutines, applies retention.
    pub fn maintain(&mut self, now_ns: u64) {
        let limits = self.settings.retention;
        let keep_for = self.settings.retain_process_for_ns;
        self.processes.retain(|_, p| match p.exited_ns {
            Some(at) => now_ns.saturating_sub(at) <= keep_for,
            None => true,
        });
        let sweep = now_ns.saturating_sub(self.last_sweep_ns) >= SWEEP_EVERY_NS;
        for p in self.processes.values_mut() {
            if p.exited_ns.is_none() {
                p.read_sched_latency();
            }
            if p.exited_ns.is_none() && !p.id.is_some_and(|id| id.is_alive()) {
                log::info!(
                    "process {} ({}) exited; keeping what was measured",
                    p.pid,
                    p.service
                );
                p.end(now_ns);
            }
            if sweep {
                // With the lifecycle probes exits are seen; without, they are found in memory.
                if !p.binary.probes_lifecycle() {
                    let reader = MemoryReader::of(p.memory.as_ref(), &p.binary.target);
                    p.blocking.find_exited(now_ns, EXIT_CHECK_QUIET_NS, &reader);
                }
                // Requests whose goroutine is gone never returned.
                let gone: Vec<u64> = p
                    .requests
                    .active
                    .keys()
                    .copied()
                    .filter(|goid| {
                        p.exited_ns.is_some()
                            || p.blocking.goroutines.get(goid).is_some_and(|g| {
                                matches!(g.state, process::GoroutineState::Exited { .. })
                            })
                    })
                    .collect();
                for goid in gone {
                    p.requests.abandon(goid);
                }
                p.blocking.retain(now_ns, &limits);
            }
            if p.exited_ns.is_none() {
                p.analyze_leaks(now_ns, &self.settings.leaks);
            }
        }
        if sweep {
            self.last_sweep_ns = now_ns;
        }
    }

    pub fn agent_drops(&self) -> &AgentDrops {
        &self.agent_drops
    }
}

/// Finds the goroutines that existed before the probes attached (they must be attached
/// already, so that nothing happening from now on is missed).
fn walk_goroutines(
    memory: Option<&ProcessMemory>,
    target: &GoTarget,
    bias: Option<u64>,
    now_ns: u64,
    limits: &Retention,
    blocking: &mut ProcessBlocking,
) -> Result<usize, String> {
    let vars = target
        .allg
        .ok_or_else(|| target.allg_error.clone().unwrap_or_default())?;
    let memory = memory.ok_or("the process's memory is not readable")?;
    let bias = bias.ok_or("the executable's load address is unknown")?;
    let walked = walk::walk(memory, vars, bias, &target.offsets).map_err(|e| e.to_string())?;
    blocking.on_walk(&walked, now_ns, limits);
    Ok(walked.len())
}

fn exe_base_name(exe: &str) -> String {
    exe.rsplit('/').next().unwrap_or(exe).to_string()
}

/// The aggregator task.
pub struct Aggregator {
    state: State,
    events: mpsc::Receiver<Batch>,
    queries: mpsc::Receiver<Query>,
}

impl Aggregator {
    /// Sends finished requests to the OTLP exporter too.
    pub fn set_otlp(&mut self, sender: OtlpSender, stats: Arc<ExportStats>) {
        self.state.otlp = Some(sender);
        self.state.export_stats = Some(stats);
    }

    pub fn new(state: State, events: mpsc::Receiver<Batch>) -> (Aggregator, QueryHandle) {
        let (tx, queries) = mpsc::channel(64);
        (
            Aggregator {
                state,
                events,
                queries,
            },
            QueryHandle(tx),
        )
    }

    /// Runs until the collector is gone; answers queries all along.
    pub async fn run(mut self) {
        let mut tick = tokio::time::interval(Duration::from_secs(1));
        loop {
            tokio::select! {
                batch = self.events.recv() => match batch {
                    Some(batch) => self.state.apply(batch),
                    None => break,
                },
                Some(q) = self.queries.recv() => {
                    // What was collected before the query was sent comes first (an attach
                    // after an exec follows the exec's batch; answers include everything
                    // drained so far), but no more than was queued: a flood of batches does
                    // not hold the query up.
                    for _ in 0..self.events.len() {
                        match self.events.try_recv() {
                            Ok(batch) => self.state.apply(batch),
                            Err(_) => break,
                        }
                    }
                    self.answer(q)
                }
                _ = tick.tick() => self.state.maintain(monotonic_ns()),
            }
        }
        // Keep answering what was measured.
        while let Some(q) = self.queries.recv().await {
            self.answer(q);
        }
    }

    fn answer(&mut self, q: Query) {
        let now = monotonic_ns();
        match q {
            Query::Sampling(status, progress) => self.state.set_sampling(status, &progress),
            Query::WindowEnded {
                window_start_ns,
                suspended_ns,
                progress,
            } => self
                .state
                .window_ended(window_start_ns, suspended_ns, &progress),
            Query::ProgressReaders(reply) => {
                let readers = self
                    .state
                    .processes
                    .values()
                    .filter(|p| p.exited_ns.is_none())
                    .filter_map(ProcessState::progress_reader)
                    .collect();
                let _ = reply.send(readers);
            }
            Query::Resync { while_out } => {
                let now = monotonic_ns();
                if while_out && now < self.state.next_refresh_ns {
                    return;
                }
                let limits = self.state.settings.retention;
                for p in self.state.processes.values_mut() {
                    if p.exited_ns.is_none() {
                        p.resync(now, &limits);
                    }
                }
                // Standing in for the probes costs gort at most 2 % of a CPU (a walk of
                // 100,000 goroutines takes a good part of a second).
                let spent = monotonic_ns().saturating_sub(now);
                self.state.next_refresh_ns = now + spent.saturating_mul(REFRESH_COST_FACTOR);
            }
            Query::Attached {
                pid,
                binary,
                container,
            } => {
                let p = self.state.add_process(pid, binary);
                p.container = container;
                log::info!("watching process {pid} (service {})", p.service);
            }
            Query::Metrics(reply) => {
                let _ = reply.send(view::metrics(&self.state));
            }
            Query::Goroutines { pid, reply } => {
                let _ = reply.send(view::goroutines(&self.state, pid, now));
            }
            Query::Leaks { pid, reply } => {
                let _ = reply.send(view::leaks(&self.state, pid, now));
            }
            Query::Panics { pid, reply } => {
                let _ = reply.send(view::panics(&self.state, pid));
            }
            Query::Requests {
                pid,
                trace_id,
                reply,
            } => {
                let _ = reply.send(view::requests(&self.state, pid, trace_id.as_deref()));
            }
            Query::Processes(reply) => {
                let _ = reply.send(view::processes(&self.state, now));
            }
            Query::ProfileSnapshot { pid, reply } => {
                let _ = reply.send(self.state.processes.get(&pid).map(|p| p.profile.snapshot()));
            }
            Query::BlockProfile {
                pid,
                baseline,
                runtime,
                window,
                reply,
            } => {
                let _ = reply.send(
                    self.state
                        .processes
                        .get(&pid)
                        .map(|p| p.block_profile(baseline.as_ref(), runtime, window)),
                );
            }
        }
    }
}
