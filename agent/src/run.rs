//! `gort run`: attach to the target processes and serve what they block on until stopped.

use std::{
    collections::BTreeMap,
    path::{Path, PathBuf},
    sync::{Arc, RwLock},
    time::Duration,
};

use anyhow::{Context, Result, bail};
use tokio::{net::TcpListener, sync::mpsc};

use crate::{
    aggregate::{
        Aggregator, AttachedBinary, Binaries, ProgressReader, QueryHandle, SamplingStatus,
        Settings, State,
        leaks::LeakSettings,
        process::Retention,
        progress_marks,
        sampling::{ProgressMark, SamplingWindow},
    },
    budget::{BudgetOf, BudgetSettings, Counters, Sampler, Switch, TargetTotal},
    cli::RunOptions,
    collect::{AgentDrops, Collector, DrainPace, monotonic_ns},
    export::{
        api, events,
        otlp::{self, OtlpConfig},
    },
    fleet::{
        Fleet,
        k8s::{KubeConfig, PodNamer},
        select::Selector,
    },
    probes::{
        self, ProbeSettings, Probes, Scope, TURNED_OFF,
        procs::{ProcessChange, ProcessWatch},
    },
    target::{
        GoTarget,
        process::{self, ProcessId},
    },
};

/// How often the set of goroutines parked right now is read from the kernel.
const PARKED_SNAPSHOT_INTERVAL: Duration = Duration::from_secs(1);
/// While time sampling has the probes out, how often the goroutines' states are read from
/// the targets' memory instead (goroutine counts, parked goroutines, leak suspects).
const RESYNC_WHILE_OUT: Duration = Duration::from_secs(2);
/// While time sampling has the probes out, how often the collector drains (`DrainPace`), at
/// most an eighth of the sampling period (unused without a budget: never quiet).
const QUIET_DRAIN_INTERVAL: Duration = Duration::from_millis(500);
/// How often a `--pid` target is checked for exit.
const LIVENESS_INTERVAL: Duration = Duration::from_millis(500);

/// What to attach to.
enum Want {
    Pid {
        id: ProcessId,
        exe_display: String,
    },
    Exe {
        path: PathBuf,
    },
    /// Every Go process of the host (`--all`).
    All,
}

/// Room for process changes (exec, exit) the run loop has not handled yet; beyond it they are
/// counted, and `--all`'s rescan catches up.
const PROCESS_CHANGES_QUEUE: usize = 4096;

pub async fn run(o: RunOptions) -> Result<()> {
    run_until(o, shutdown_signal(), None).await
}

/// Runs until `stop` completes (or the HTTP server fails); tells `ready` where it serves once
/// attached.
pub async fn run_until(
    o: RunOptions,
    stop: impl std::future::Future<Output = ()>,
    ready: Option<tokio::sync::oneshot::Sender<std::net::SocketAddr>>,
) -> Result<()> {
    let (want, open_path) = match (&o.pid, &o.exe) {
        (Some(pid), _) => {
            let id = ProcessId::of(*pid)?;
            let exe_display = process::exe_name(*pid)?.display().to_string();
            (Want::Pid { id, exe_display }, process::exe_path(*pid))
        }
        (None, Some(exe)) => {
            let path = std::fs::canonicalize(exe)
                .with_context(|| format!("cannot open `{}`", exe.display()))?;
            (Want::Exe { path: path.clone() }, path)
        }
        (None, None) if o.all => (Want::All, PathBuf::new()),
        (None, None) => bail!("give --pid, --exe or --all"),
    };
    let target = match &want {
        Want::Pid { id, exe_display } => {
            Some(Arc::new(GoTarget::open(&open_path).with_context(|| {
                format!("process {} ({exe_display})", id.pid)
            })?))
        }
        Want::Exe { .. } => Some(Arc::new(GoTarget::open(&open_path)?)),
        Want::All => None,
    };

    // Bind before attaching: a busy port must not leave probes behind.
    let listener = TcpListener::bind(o.listen)
        .await
        .with_context(|| format!("cannot listen on {}", o.listen))?;
    let local_addr = listener.local_addr()?;

    let settings = ProbeSettings {
        frame_min_ns: o.frame_min_block.as_nanos().min(u64::MAX as u128) as u64,
        ringbuf_bytes: o
            .ringbuf_mib
            .checked_next_power_of_two()
            .and_then(|m| m.checked_mul(1 << 20))
            .context("--ringbuf-mib is too large")?,
        max_parked: o.max_parked.max(1),
        families: o.probes.clone(),
    };
    let (mut probes, mut maps) = Probes::load(settings)?;
    let binaries: Binaries = Arc::new(RwLock::new(BTreeMap::new()));

    // --pid and --exe: one binary, attached now.
    let mut attachment = None;
    let mut binary = None;
    if let Some(target) = &target {
        let (scope, exe_display) = match &want {
            Want::Pid { id, exe_display } => (Scope::Process(id.pid), exe_display.clone()),
            Want::Exe { path } => (Scope::AllProcesses, path.display().to_string()),
            Want::All => unreachable!("no single target"),
        };
        let a = match probes.attach(target, &open_path, scope) {
            Ok(a) => a,
            Err(e) => match &want {
                Want::Pid { id, .. } if !id.is_alive() => {
                    bail!("process {} exited while gort was attaching", id.pid)
                }
                _ => return Err(e.into()),
            },
        };
        let b = Arc::new(AttachedBinary::new(&a, target.clone(), exe_display.clone()));
        for (family, why) in b.unavailable.iter().filter(|(_, why)| why != TURNED_OFF) {
            eprintln!("gort: {family} probes unavailable for {exe_display}: {why}");
        }
        binaries
            .write()
            .expect("not poisoned")
            .insert(a.slot, b.clone());
        attachment = Some(a);
        binary = Some(b);
    }

    // Every mode watches execs and exits: an exec keeps the pid, and a new program must not
    // continue the old one's numbers; --all also attaches to what starts.
    let (process_watch, drops) = ProcessWatch::start()?;
    maps.drops.push(drops);
    let (changes_tx, mut changes) = mpsc::channel(PROCESS_CHANGES_QUEUE);
    // The executable a --pid target runs: an exec of another one ends the watch.
    let pid_exe = match &want {
        Want::Pid { id, .. } => process::exe_identity(id.pid),
        _ => None,
    };

    // --all: every Go process running now.
    let mut fleet = None;
    if let Want::All = want {
        let selector = Selector {
            include: o.include.clone(),
            exclude: o.exclude.clone(),
        };
        let pods = KubeConfig::resolve(o.kubernetes_api.as_deref(), o.node_name.as_deref())
            .map(PodNamer::new);
        fleet = Some(Fleet::new(selector, pods, o.service.clone()));
    }

    let agent_drops = Arc::new(AgentDrops::default());
    let mut state = State::new(
        Settings {
            retention: Retention {
                max_goroutines: o.max_goroutines,
                max_exited: o.retain_exited,
                exited_for_ns: o.retain_exited_for.as_nanos() as u64,
            },
            retain_process_for_ns: o.retain_exited_process_for.as_nanos() as u64,
            service: o.service.clone(),
            leaks: LeakSettings {
                leak_after_ns: o.leak_after.as_nanos() as u64,
                window_ns: o.leak_window.unwrap_or(o.leak_after).as_nanos() as u64,
                max_groups: 10_000,
            },
            leak_top: o.leak_top,
            span_min_block_ns: o.span_min_block.as_nanos() as u64,
        },
        binaries.clone(),
        agent_drops.clone(),
    );
    // --overhead-budget: settled before anything is drained, so that the estimates count
    // from the first event (everything measured until the sampler, started below, says
    // otherwise).
    let budget = match o
        .overhead_budget
        .filter(|_| attachment.is_some() || fleet.is_some())
    {
        Some(share) => {
            let trap = probes::calibrate::measure()
                .context("--overhead-budget: cannot measure what a uprobe hit costs")?;
            let settings = BudgetSettings {
                share,
                of: o.overhead_budget_of,
                period: o.sampling_period.max(Duration::from_millis(100)),
                trap_cost_ns: trap.hit_ns,
                removal: trap.removal,
                cpus: std::thread::available_parallelism().map_or(1, |n| n.get() as u32),
            };
            state.set_sampling(SamplingStatus::all_in(settings, monotonic_ns()), &[]);
            Some(settings)
        }
        None => None,
    };
    let pids: Vec<u32> = match &want {
        Want::Pid { id, .. } => vec![id.pid],
        Want::Exe { path } => processes_of(path),
        Want::All => Vec::new(),
    };
    if let Some(binary) = &binary {
        for &pid in &pids {
            let p = state.add_process(pid, binary.clone());
            log::info!("watching process {pid} (service {})", p.service);
        }
    }
    if let Some(fleet) = &mut fleet {
        for new in fleet.scan(&mut probes, &binaries) {
            let p = state.add_process(new.pid, new.binary);
            p.container = new.container;
        }
    }

    if let Some(output) = &o.events {
        let (sender, dropped) =
            events::start(output).with_context(|| format!("cannot open --events {output:?}"))?;
        state.events = Some(sender);
        agent_drops.set_events_dropped(dropped);
    }

    let env = |k: &str| std::env::var(k).ok().filter(|v| !v.is_empty());
    let otlp_config = OtlpConfig::resolve(
        o.otlp_endpoint.as_deref(),
        o.otlp_protocol.as_deref(),
        &o.otlp_headers,
        &env,
    )
    .map_err(|e| anyhow::anyhow!("OTLP: {e}"))?
    .map(|c| OtlpConfig {
        max_queue: o.otlp_max_queue.max(1),
        ..c
    });

    let (tx, rx) = mpsc::channel(1024);
    let drain_pace = Arc::new(DrainPace::new(
        o.drain_interval,
        QUIET_DRAIN_INTERVAL.min(o.sampling_period / 8),
    ));
    let collector = Collector::new(
        maps,
        tx,
        agent_drops.clone(),
        drain_pace.clone(),
        PARKED_SNAPSHOT_INTERVAL,
    )
    .with_process_watch(process_watch, changes_tx);
    let (mut aggregator, handle) = Aggregator::new(state, rx);
    let mut otlp_flush = None;
    if let Some(config) = otlp_config {
        eprintln!(
            "gort: exporting over OTLP ({:?}) to {} and {}",
            config.protocol, config.traces_endpoint, config.metrics_endpoint
        );
        let (sender, stats, flush) =
            otlp::start(config, handle.clone()).map_err(|e| anyhow::anyhow!("OTLP: {e}"))?;
        aggregator.set_otlp(sender, stats);
        otlp_flush = Some(flush);
    }
    tokio::spawn(collector.run());
    tokio::spawn(aggregator.run());
    let router = api::router(handle.clone());
    let server = tokio::spawn(async move { axum::serve(listener, router).await });

    match (&want, &target, &fleet) {
        (Want::All, _, Some(fleet)) => eprintln!(
            "gort: watching every Go process ({} now) — serving http://{local_addr}/metrics",
            fleet.watched().count()
        ),
        (_, Some(target), _) => eprintln!(
            "gort: attached to {} ({}, {}; uprobes on runtime.gopark entry and {} RET) — serving http://{}/metrics",
            match &want {
                Want::Pid { id, .. } => format!("pid {}", id.pid),
                _ => "every process of this executable".to_string(),
            },
            binary.as_ref().map(|b| b.exe.as_str()).unwrap_or_default(),
            target.go_version(),
            target.gopark_returns.len(),
            local_addr,
        ),
        _ => {}
    }

    // --overhead-budget: time sampling of the one attachment of --pid / --exe, or of every
    // process's of --all, switched together.
    let mut sampler = None;
    let mut target_cpu = TargetTotal::default();
    // The runtimes' counts of scheduling events, summed the same way (`Counters::progress`).
    let mut target_progress = TargetTotal::default();
    // Where the targets' progress is read at the ends of each sampled window (`pace`).
    let mut progress_readers = Vec::new();
    if let Some(settings) = budget {
        let of = match settings.of {
            BudgetOf::Host => format!("the host's {} CPUs", settings.cpus),
            BudgetOf::Targets => "the targets' own CPU use".to_string(),
        };
        eprintln!(
            "gort: one uprobe hit costs {:.1} µs here (and a removed uprobe fires for {:?} \
             more); keeping gort under {:.1} % of {of} by attaching its probes for part of \
             every {:?}",
            settings.trap_cost_ns as f64 / 1e3,
            settings.removal,
            settings.share * 100.0,
            settings.period
        );
        progress_readers = handle.progress_readers().await;
        let marks = progress_marks(&progress_readers);
        let progress = (&mut target_progress, marks.as_slice());
        let counters = budget_counters(
            &agent_drops,
            &mut target_cpu,
            progress,
            &want,
            fleet.as_ref(),
        );
        let s = Sampler::new(settings, monotonic_ns(), counters);
        handle.sampling(sampling_status(&s), marks).await;
        sampler = Some(s);
    }
    let mut liveness = tokio::time::interval(LIVENESS_INTERVAL);
    let mut resync = tokio::time::interval(RESYNC_WHILE_OUT);
    resync.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let mut rescan = tokio::time::interval(o.rescan_interval.max(Duration::from_millis(100)));
    rescan.reset();
    if let Some(ready) = ready {
        let _ = ready.send(local_addr);
    }
    let shutdown = stop;
    tokio::pin!(shutdown);
    loop {
        tokio::select! {
            _ = &mut shutdown => break,
            _ = liveness.tick() => {
                if let Want::Pid { id, .. } = &want {
                    if attachment.is_some() && !id.is_alive() {
                        eprintln!("gort: process {} exited; still serving what was measured", id.pid);
                        probes.detach(attachment.take().expect("checked"));
                    }
                }
                if let Some(fleet) = &mut fleet {
                    for pid in fleet.release_exited(&mut probes, &binaries) {
                        eprintln!("gort: process {pid} exited; still serving what was measured");
                    }
                }
            }
            Some(change) = changes.recv() => {
                if let Some(fleet) = &mut fleet {
                    match change {
                        ProcessChange::Exec { pid, ns } => {
                            if let Some(new) = fleet.on_exec(pid, ns, &mut probes, &binaries) {
                                handle.attached(new.pid, new.binary, new.container).await;
                            }
                        }
                        ProcessChange::Exit { .. } => {
                            for pid in fleet.release_exited(&mut probes, &binaries) {
                                eprintln!("gort: process {pid} exited; still serving what was measured");
                            }
                        }
                    }
                } else if let (Want::Pid { id, exe_display }, Some(_)) = (&want, &attachment) {
                    match change {
                        ProcessChange::Exec { pid, .. } if pid == id.pid => {
                            let old = attachment.take().expect("checked");
                            binaries.write().expect("not poisoned").remove(&old.slot);
                            probes.detach(old);
                            let same_exe = process::exe_identity(pid) == pid_exe;
                            let target = target.as_ref().expect("--pid has a target");
                            // A pid-scoped uprobe follows the task that was the process's first
                            // thread: after an exec from another thread (which takes over the
                            // pid) it stays silent. So attach anew, as to a new process.
                            let attached = same_exe
                                .then(|| probes.attach(target, &process::exe_path(pid), Scope::Process(pid)));
                            match attached {
                                Some(Ok(a)) => {
                                    let b = Arc::new(AttachedBinary::new(&a, target.clone(), exe_display.clone()));
                                    binaries.write().expect("not poisoned").insert(a.slot, b.clone());
                                    handle.attached(pid, b, process::container_identity(pid)).await;
                                    attachment = Some(a);
                                    eprintln!(
                                        "gort: process {pid} started {exe_display} anew (exec); \
                                         following the new program"
                                    );
                                }
                                Some(Err(e)) => eprintln!(
                                    "gort: process {pid} started {exe_display} anew (exec), but \
                                     gort cannot attach to it: {e}; still serving what was measured"
                                ),
                                None => eprintln!(
                                    "gort: process {pid} started another program (exec); still \
                                     serving what was measured"
                                ),
                            }
                        }
                        // Not an exec from another thread than the first (the kernel ends
                        // the first thread then, and the exec'ing one takes over the pid).
                        ProcessChange::Exit { pid, .. } if pid == id.pid && !id.is_alive() => {
                            eprintln!("gort: process {pid} exited; still serving what was measured");
                            probes.detach(attachment.take().expect("checked"));
                        }
                        _ => {}
                    }
                }
            }
            _ = sampling_due(&sampler) => {
                let Some(s) = &mut sampler else { continue };
                // Read here, not by the aggregator: busy with a window's events, it would
                // answer late.
                let marks = progress_marks(&progress_readers);
                let progress = (&mut target_progress, marks.as_slice());
                let counters =
                    budget_counters(&agent_drops, &mut target_cpu, progress, &want, fleet.as_ref());
                let switch = s.switch(monotonic_ns(), counters);
                log::debug!(
                    "sampling: {switch:?}; last period {:?}; ratio {:.3} of {:?}",
                    s.last, s.ratio, s.period
                );
                if let Some(fleet) = &mut fleet {
                    match switch {
                        Switch::Suspend => {
                            let suspended_ns = monotonic_ns();
                            fleet.suspend_all(&mut probes);
                            drain_pace.set_quiet(true);
                            handle
                                .window_ended(s.window_start_ns(), suspended_ns, marks)
                                .await;
                        }
                        Switch::Resume => {
                            drain_pace.set_quiet(false);
                            progress_readers = handle.progress_readers().await;
                            if let Some(all_in) = fleet.resume_all(&mut probes, &binaries) {
                                s.resumed_at(all_in);
                            }
                            begin_period(&handle, s, &progress_readers).await;
                            handle.resync().await;
                        }
                        Switch::Stay => {
                            progress_readers = handle.progress_readers().await;
                            begin_period(&handle, s, &progress_readers).await;
                        }
                        Switch::Settled | Switch::Checked => {}
                    }
                    continue;
                }
                let Some(a) = &mut attachment else { continue };
                let scope = match &want {
                    Want::Pid { id, .. } => Scope::Process(id.pid),
                    _ => Scope::AllProcesses,
                };
                match switch {
                    Switch::Suspend => {
                        // The window's progress ends with the probes' last moments in, at
                        // the targets' pace in it (their removal waits out a grace period
                        // after they stopped firing, at full pace).
                        let suspended_ns = monotonic_ns();
                        drop(probes.suspend(a));
                        drain_pace.set_quiet(true);
                        handle
                            .window_ended(s.window_start_ns(), suspended_ns, marks)
                            .await;
                    }
                    Switch::Settled | Switch::Checked => {}
                    Switch::Resume => {
                        drain_pace.set_quiet(false);
                        let target = target.as_ref().expect("--pid and --exe have a target");
                        progress_readers = handle.progress_readers().await;
                        match probes.resume(target, &open_path, scope, a) {
                            Ok(all_in) => s.resumed_at(all_in),
                            Err(e) => {
                                eprintln!("gort: cannot attach the probes again: {e}; still serving what was measured");
                                attachment = None;
                            }
                        }
                        // The window's progress is read first, then the goroutines.
                        begin_period(&handle, s, &progress_readers).await;
                        handle.resync().await;
                    }
                    Switch::Stay => {
                        progress_readers = handle.progress_readers().await;
                        begin_period(&handle, s, &progress_readers).await;
                    }
                }
            }
            _ = resync.tick(), if sampler.as_ref().is_some_and(Sampler::probes_out) => {
                handle.refresh().await;
            }
            _ = rescan.tick(), if fleet.is_some() => {
                let Some(fleet) = &mut fleet else { continue };
                for new in fleet.scan(&mut probes, &binaries) {
                    handle.attached(new.pid, new.binary, new.container).await;
                }
            }
        }
        if server.is_finished() {
            break;
        }
    }
    if let Some(a) = attachment.take() {
        probes.detach(a);
    }
    if let Some(fleet) = &mut fleet {
        fleet.release_all(&mut probes, &binaries);
    }
    probes.settle();
    if let Some(flush) = otlp_flush {
        // What was measured is not lost at shutdown, within reason.
        flush.flush(Duration::from_secs(5)).await;
    }
    if server.is_finished() {
        server
            .await
            .context("HTTP server task")?
            .context("HTTP server")?;
    }
    Ok(())
}

/// Waits until the sampler's next switch (forever without one).
async fn sampling_due(sampler: &Option<Sampler>) {
    match sampler {
        Some(s) => {
            let wait = s.next_due_ns().saturating_sub(monotonic_ns());
            tokio::time::sleep(Duration::from_nanos(wait)).await
        }
        None => std::future::pending().await,
    }
}

/// A period begins (its probes in): the aggregator learns its sampling, and the targets'
/// progress now, the window's start.
async fn begin_period(handle: &QueryHandle, s: &Sampler, readers: &[ProgressReader]) {
    handle
        .sampling(sampling_status(s), progress_marks(readers))
        .await;
}

fn sampling_status(s: &Sampler) -> SamplingStatus {
    SamplingStatus {
        window: SamplingWindow {
            period_ns: s.period.as_nanos() as u64,
            window_ns: s.in_time().as_nanos() as u64,
        },
        cost: s.last,
        settings: s.settings,
        periods: s.periods,
        probes_in: s.probes_in(),
    }
}

/// What `--overhead-budget` reads at every switch: the targets are the --pid process, the
/// running processes of the --exe executable, or the processes --all watches.
fn budget_counters(
    drops: &AgentDrops,
    target_cpu: &mut TargetTotal,
    progress: (&mut TargetTotal, &[(u32, ProgressMark)]),
    want: &Want,
    fleet: Option<&Fleet>,
) -> Counters {
    let pids: Vec<u32> = match (want, fleet) {
        (Want::Pid { id, .. }, _) => vec![id.pid],
        (Want::Exe { path }, _) => processes_of(path),
        (Want::All, Some(fleet)) => fleet.watched().collect(),
        (Want::All, None) => Vec::new(),
    };
    let readings = pids
        .into_iter()
        .filter_map(|pid| Some((pid, process::cpu_time_ns(pid)?)));
    let (progress, counts) = progress;
    Counters {
        // Read before all hits, which are added first (`Collector::run`).
        resident_hits: drops.resident_hits(),
        hits: drops.probe_hits(),
        agent_cpu_ns: own_cpu_ns(),
        target_cpu_ns: target_cpu.read(readings),
        progress: progress.read(counts.iter().map(|&(pid, m)| (pid, m.events))),
    }
}

/// gort's own CPU time (user + system), in ns.
fn own_cpu_ns() -> u64 {
    // SAFETY: getrusage writes the struct it is given.
    let mut usage: libc::rusage = unsafe { std::mem::zeroed() };
    if unsafe { libc::getrusage(libc::RUSAGE_SELF, &mut usage) } != 0 {
        return 0;
    }
    let ns = |t: libc::timeval| t.tv_sec as u64 * 1_000_000_000 + t.tv_usec as u64 * 1_000;
    ns(usage.ru_utime) + ns(usage.ru_stime)
}

/// Pids of the running processes whose executable is `path`.
fn processes_of(path: &Path) -> Vec<u32> {
    let Ok(want) = process::file_identity(path) else {
        return Vec::new();
    };
    let Ok(dir) = std::fs::read_dir("/proc") else {
        return Vec::new();
    };
    let mut pids: Vec<u32> = dir
        .filter_map(|e| e.ok()?.file_name().to_str()?.parse().ok())
        .filter(|&pid| process::exe_identity(pid) == Some(want))
        .collect();
    pids.sort_unstable();
    pids
}

async fn shutdown_signal() {
    let mut term = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()).ok();
    tokio::select! {
        _ = tokio::signal::ctrl_c() => {}
        _ = async { match term.as_mut() { Some(t) => { t.recv().await; } None => std::future::pending::<()>().await } } => {}
    }
}
