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
        Aggregator, AttachedBinary, Binaries, Settings, State, leaks::LeakSettings,
        process::Retention,
    },
    cli::RunOptions,
    collect::{AgentDrops, Collector},
    export::{
        api, events,
        otlp::{self, OtlpConfig},
    },
    probes::{ProbeSettings, Probes, Scope},
    target::{
        GoTarget,
        process::{self, ProcessId},
    },
};

/// How often the set of goroutines parked right now is read from the kernel.
const PARKED_SNAPSHOT_INTERVAL: Duration = Duration::from_secs(1);
/// How often a `--pid` target is checked for exit.
const LIVENESS_INTERVAL: Duration = Duration::from_millis(500);

/// What to attach to.
enum Want {
    Pid { id: ProcessId, exe_display: String },
    Exe { path: PathBuf },
}

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
        (None, None) => bail!("give --pid or --exe"),
    };
    let target = Arc::new(match &want {
        Want::Pid { id, exe_display } => GoTarget::open(&open_path)
            .with_context(|| format!("process {} ({exe_display})", id.pid))?,
        Want::Exe { .. } => GoTarget::open(&open_path)?,
    });

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
    };
    let (mut probes, maps) = Probes::load(settings)?;

    let (scope, exe_display) = match &want {
        Want::Pid { id, exe_display } => (Scope::Process(id.pid), exe_display.clone()),
        Want::Exe { path } => (Scope::AllProcesses, path.display().to_string()),
    };
    let attachment = match probes.attach(&target, &open_path, scope) {
        Ok(a) => a,
        Err(e) => match &want {
            Want::Pid { id, .. } if !id.is_alive() => {
                bail!("process {} exited while gort was attaching", id.pid)
            }
            _ => return Err(e.into()),
        },
    };
    let binary = Arc::new(AttachedBinary {
        slot: attachment.slot,
        target: target.clone(),
        exe: exe_display.clone(),
        unavailable: attachment
            .unavailable
            .iter()
            .map(|(family, why)| (format!("{family:?}").to_lowercase(), why.clone()))
            .collect(),
    });
    for (family, why) in &binary.unavailable {
        eprintln!("gort: {family} probes unavailable for {exe_display}: {why}");
    }
    let binaries: Binaries = Arc::new(RwLock::new(BTreeMap::from([(
        attachment.slot,
        binary.clone(),
    )])));

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
        binaries,
        agent_drops.clone(),
    );
    let pids: Vec<u32> = match &want {
        Want::Pid { id, .. } => vec![id.pid],
        Want::Exe { path } => processes_of(path),
    };
    for &pid in &pids {
        let p = state.add_process(pid, binary.clone());
        log::info!("watching process {pid} (service {})", p.service);
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
    let collector = Collector::new(
        maps,
        tx,
        agent_drops,
        o.drain_interval,
        PARKED_SNAPSHOT_INTERVAL,
    );
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
    let server = tokio::spawn(async move { axum::serve(listener, api::router(handle)).await });

    eprintln!(
        "gort: attached to {} ({}, {}; uprobes on runtime.gopark entry and {} RET) — serving http://{}/metrics",
        match &want {
            Want::Pid { id, .. } => format!("pid {}", id.pid),
            Want::Exe { .. } => "every process of this executable".to_string(),
        },
        exe_display,
        target.go_version(),
        target.gopark_returns.len(),
        local_addr,
    );

    let mut attachment = Some(attachment);
    let mut liveness = tokio::time::interval(LIVENESS_INTERVAL);
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
            }
        }
        if server.is_finished() {
            break;
        }
    }
    if let Some(a) = attachment.take() {
        probes.detach(a);
    }
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
