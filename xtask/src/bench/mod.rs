//! `cargo xtask bench`: what gort costs a park-heavy Go program, measured side by side with
//! no probes and with empty uprobes where gort's go (the floor: the traps alone, which every
//! uprobe-based tool pays).
//!
//! Workloads: `tests/go/micro`, park-heavy micro workloads (a channel ping-pong, a contended
//! mutex, a select fan-in, timer sleeps; see its doc), and `tests/go/benchhttp`, a net/http
//! server whose handler does one channel hand-off, under `wrk -t1 -c8` on loopback. Each
//! configuration runs `--reps` times, interleaved; the tables show the median and the
//! spread. Beside gort: the same measurement as a bpftrace script (`bpftrace.rs`), the
//! workload's own `runtime/trace` (Go's in-process execution tracer, writing to a file), and
//! on the HTTP server gort under `--overhead-budget 5%`.

mod attach_cycles;
mod bpftrace;
mod open_loop;

use std::{
    io::{BufRead, BufReader, Read, Write},
    net::TcpListener,
    path::Path,
    process::{Child, ChildStdin, ChildStdout, Command, Stdio},
    thread,
    time::{Duration, Instant},
};

use anyhow::{Context, Result, bail, ensure};
use serde_json::Value;

use crate::{
    build_ebpf,
    setup::{self, run_cmd, workspace_root},
};

#[derive(clap::Args)]
pub struct Options {
    /// Repetitions per configuration.
    #[arg(long, default_value_t = 5)]
    reps: usize,
    /// Operations per micro workload run (a ping-pong round trip parks twice).
    #[arg(long, default_value_t = 50_000)]
    ops: u64,
    /// Micro workloads to run (`tests/go/micro -kind`).
    #[arg(
        long,
        value_delimiter = ',',
        default_value = "pingpong,mutex,select,timer"
    )]
    micro: Vec<String>,
    /// Go release the workload is built with.
    #[arg(long, default_value = setup::DEMO_GO_VERSION)]
    go: String,
    /// Seconds of load per HTTP run (0: skip the HTTP workload).
    #[arg(long, default_value_t = 5)]
    http_seconds: u64,
    /// Sampling periods of load per HTTP run under `--overhead-budget` (0: skip it).
    #[arg(long, default_value_t = 8)]
    budget_periods: u64,
    /// Skip the HTTP server under wrk (the closed-loop load).
    #[arg(long)]
    no_wrk: bool,
    /// Only these configurations of the HTTP server under wrk, besides `no-probes` (the
    /// rows' yardstick): `--http-configs gort-targets-budget` to check a change to the
    /// budget in under half an hour rather than an hour.
    #[arg(long, value_enum, value_delimiter = ',')]
    http_configs: Vec<Config>,
    /// Requests per second of the open-loop HTTP load (0: skip it).
    #[arg(long, default_value_t = 4000)]
    open_rate: u64,
    /// Attach/detach cycles against a busy program checking its own invariants (0: skip).
    /// `--attach-cycles 10000 --micro= --http-seconds 0` runs only that.
    #[arg(long, default_value_t = 0)]
    attach_cycles: u64,
    /// Probe families of the attach/detach cycles (`gort stress-attach --probes`).
    #[arg(long, default_value = "sched,gc,lifecycle,panics,http")]
    attach_probes: String,
    /// How long each cycle holds the probes in, in ms.
    #[arg(long, default_value_t = 5)]
    attach_hold_ms: u64,
}

/// The overhead budget of the budget runs (and a lower one, on the HTTP server under wrk),
/// and their sampling period.
const BUDGET: &str = "5%";
const LOW_BUDGET: &str = "2.5%";
const BUDGET_PERIOD_S: u64 = 5;
/// Sampling periods of load before the measured ones under `--overhead-budget`: the one the
/// load starts in (at full cost until the sampler's check ends it) and the first sampled one.
const WARMUP_PERIODS: u64 = 2;
/// The same server is measured under the same load for this long without gort before it
/// starts (after `UNPROBED_WARMUP`: a fresh server serves less for its first seconds) and
/// after it stopped (once `UNPROBED_SETTLE` has let it settle): the mean of the two is the
/// paired reference, free of the drift between runs and of a steady drift within one.
const UNPROBED: Duration = Duration::from_secs(20);
const UNPROBED_WARMUP: Duration = Duration::from_secs(15);
const UNPROBED_SETTLE: Duration = Duration::from_secs(2);

#[derive(Clone, Copy, PartialEq, Eq, Debug, clap::ValueEnum)]
enum Config {
    NoProbes,
    /// An empty uprobe at `runtime.gopark`'s entry and at each of its RETs: the two traps
    /// per park that gort's design costs at least.
    Floor,
    /// An empty uprobe at every place gort's default probes go (`agent/src/probes/`):
    /// gopark, ServeHTTP, newproc1, goexit1, the GC and panic functions.
    FloorAll,
    Gort,
    /// gort with only the park probes (`--probes sched`): what the bpftrace script measures.
    GortSched,
    /// gort with every feature on: stacks captured for every block, every block in a
    /// request a span, event records written to a file.
    GortFull,
    /// The same measurement as a bpftrace script.
    Bpftrace,
    /// gort under `--overhead-budget 5%` (HTTP only: it needs minutes of steady load).
    GortBudget,
    /// gort under `--overhead-budget 2.5%`: 5 % of a two-CPU host is a tenth of a server
    /// using one CPU flat out; what budget keeps its lost throughput near 5 %.
    GortLowBudget,
    /// gort under `--overhead-budget 5% --overhead-budget-of targets`: 5 % of the server's
    /// own CPU, whatever share of the host that is.
    GortTargetsBudget,
    /// No probes; the workload runs under its own `runtime/trace`, writing to a file.
    RuntimeTrace,
}

impl Config {
    fn name(self) -> &'static str {
        match self {
            Config::NoProbes => "no probes",
            Config::Floor => "floor: 2 empty uprobes",
            Config::FloorAll => "floor: every probe, empty",
            Config::Gort => "gort (default)",
            Config::GortSched => "gort --probes sched",
            Config::GortFull => "gort, every feature on",
            Config::Bpftrace => "bpftrace script",
            Config::GortBudget => "gort --overhead-budget 5%",
            Config::GortLowBudget => "gort --overhead-budget 2.5%",
            Config::GortTargetsBudget => "gort --overhead-budget 5%, of targets",
            Config::RuntimeTrace => "runtime/trace (in-process)",
        }
    }

    /// A gort configuration: its arguments (beyond `--pid` and `--listen`).
    fn gort_args(self, events: &Path) -> Option<Vec<String>> {
        match self {
            Config::Gort => Some(vec![]),
            Config::GortSched => Some(vec!["--probes".into(), "sched".into()]),
            Config::GortFull => Some(vec![
                "--frame-min-block".into(),
                "0s".into(),
                "--span-min-block".into(),
                "0s".into(),
                "--events".into(),
                events.display().to_string(),
            ]),
            Config::GortBudget | Config::GortLowBudget => Some(vec![
                "--overhead-budget".into(),
                self.budget()?.into(),
                "--sampling-period".into(),
                format!("{BUDGET_PERIOD_S}s"),
            ]),
            Config::GortTargetsBudget => Some(vec![
                "--overhead-budget".into(),
                self.budget()?.into(),
                "--overhead-budget-of".into(),
                "targets".into(),
                "--sampling-period".into(),
                format!("{BUDGET_PERIOD_S}s"),
            ]),
            _ => None,
        }
    }

    /// The `--overhead-budget` of a budget configuration.
    fn budget(self) -> Option<&'static str> {
        match self {
            Config::GortBudget | Config::GortTargetsBudget => Some(BUDGET),
            Config::GortLowBudget => Some(LOW_BUDGET),
            _ => None,
        }
    }
}

/// A scratch file of one run (a trace, event records), removed when dropped.
struct Scratch(std::path::PathBuf);

impl Scratch {
    fn new(what: &str) -> Scratch {
        Scratch(std::env::temp_dir().join(format!("gort-bench-{}.{what}", std::process::id())))
    }
}

impl Drop for Scratch {
    fn drop(&mut self) {
        let _ = std::fs::remove_file(&self.0);
    }
}

/// One run's numbers.
#[derive(Default, Clone, Copy)]
struct Sample {
    ns_per_op: f64,
    /// Seconds the workload ran.
    seconds: f64,
    /// gort only: its CPU time (user+sys) per second of workload, in ms.
    agent_cpu_ms_per_s: f64,
    agent_rss_mib: f64,
    /// gort and bpftrace: parks they measured during the run.
    parks_seen: f64,
    lost: f64,
    /// gort only: its CPU time over the run, and its eBPF programs' (the kernel's
    /// `run_time_ns` of each, `kernel.bpf_stats_enabled`), in ns.
    agent_cpu_ns: f64,
    bpf_ns: f64,
    /// The workload's CPU time over the run, in ns: the traps' part of it is what they cost.
    target_cpu_ns: f64,
}

/// Ids of the eBPF programs loaded now.
fn program_ids() -> std::collections::HashSet<u32> {
    aya::programs::loaded_programs()
        .filter_map(|p| Some(p.ok()?.id()))
        .collect()
}

/// The run time (ns) of the loaded eBPF programs not in `before` (gort's, started since),
/// as the kernel counts it while run-time statistics are on.
fn bpf_run_ns(before: &std::collections::HashSet<u32>) -> f64 {
    aya::programs::loaded_programs()
        .filter_map(|p| p.ok())
        .filter(|p| !before.contains(&p.id()))
        .map(|p| p.run_time().as_nanos() as f64)
        .sum()
}

pub fn run(o: Options) -> Result<()> {
    ensure!(o.reps > 0, "--reps must be at least 1");
    let root = workspace_root();
    let go = setup::ensure_go(&o.go)?;
    build_ebpf::run(build_ebpf::Options::default())?;
    setup::build_gort_release()?;
    let exe = root.join("target/bench/micro");
    run_cmd(&mut setup::go_build(
        &go,
        &root.join("tests/go/micro"),
        &exe,
    ))?;
    if o.micro.iter().any(|k| !k.is_empty()) {
        setup::ensure_apt(&["bpftrace"])?;
    }
    let configs = [
        Config::NoProbes,
        Config::Floor,
        Config::FloorAll,
        Config::Gort,
        Config::GortSched,
        Config::GortFull,
        Config::Bpftrace,
        Config::RuntimeTrace,
    ];
    // The kernel times every eBPF program run while this is held (a few tens of ns a run,
    // alike for every configuration with probes): what gort's own programs cost per park.
    let _bpf_stats = if o.micro.iter().any(|k| !k.is_empty()) {
        Some(
            aya::sys::enable_stats(aya::sys::Stats::RunTime)
                .context("enable eBPF run-time statistics")?,
        )
    } else {
        None
    };
    for kind in o.micro.iter().filter(|k| !k.is_empty()) {
        let mut results: Vec<(Config, Vec<Sample>)> =
            configs.iter().map(|&c| (c, Vec::new())).collect();
        // Interleave the configurations so that drift of the machine hits all alike.
        for rep in 0..o.reps {
            for (config, samples) in results.iter_mut() {
                let s = run_once(*config, &exe, kind, o.ops)
                    .with_context(|| format!("{kind}, {} (run {})", config.name(), rep + 1))?;
                samples.push(s);
            }
        }
        print_table(&results, kind, o.ops, &o.go)?;
    }
    if o.http_seconds > 0 {
        if !o.no_wrk {
            http_bench(&o, &go)?;
        }
        if o.open_rate > 0 {
            open_loop::run(
                &go,
                &o.go,
                o.open_rate,
                o.http_seconds,
                o.budget_periods,
                o.reps,
            )?;
        }
    }
    if o.attach_cycles > 0 {
        attach_cycles::run(
            &go,
            &o.go,
            o.attach_cycles,
            &o.attach_probes,
            o.attach_hold_ms,
        )?;
    }
    Ok(())
}

/// One HTTP run: requests per second, and gort's CPU and lost events when it is attached.
#[derive(Default, Clone, Copy)]
struct HttpSample {
    requests_per_s: f64,
    /// Requests wrk completed.
    requests: f64,
    /// `--overhead-budget` runs: the sampling ratio at the end.
    sampling_ratio: f64,
    /// `--overhead-budget` runs: the same server's requests/s under the same load without
    /// gort, before it started and after it stopped (`UNPROBED`).
    unprobed_per_s: [f64; 2],
    latency_ms: f64,
    agent_cpu_ms_per_s: f64,
    lost: f64,
    parks_per_request: f64,
}

fn http_bench(o: &Options, go: &Path) -> Result<()> {
    setup::ensure_apt(&["wrk", "bpftrace"])?;
    let root = workspace_root();
    let exe = root.join("target/bench/benchhttp");
    run_cmd(&mut setup::go_build(
        go,
        &root.join("tests/go/benchhttp"),
        &exe,
    ))?;
    let mut configs = vec![
        Config::NoProbes,
        Config::Floor,
        Config::FloorAll,
        Config::Gort,
        Config::GortSched,
        Config::GortFull,
        Config::Bpftrace,
        Config::RuntimeTrace,
    ];
    if o.budget_periods > 0 {
        configs.extend([
            Config::GortBudget,
            Config::GortLowBudget,
            Config::GortTargetsBudget,
        ]);
    }
    if !o.http_configs.is_empty() {
        configs.retain(|c| *c == Config::NoProbes || o.http_configs.contains(c));
    }
    let mut results: Vec<(Config, Vec<HttpSample>)> =
        configs.iter().map(|&c| (c, Vec::new())).collect();
    for rep in 0..o.reps {
        for (config, samples) in results.iter_mut() {
            let s = http_once(*config, &exe, o.http_seconds, o.budget_periods)
                .with_context(|| format!("http, {} (run {})", config.name(), rep + 1))?;
            samples.push(s);
        }
    }
    let base = median(results[0].1.iter().map(|s| s.requests_per_s).collect());
    println!(
        "
net/http server, one channel hand-off per request (Go {}), wrk -t1 -c8 -d{}s, {} runs per configuration
",
        o.go, o.http_seconds, o.reps
    );
    println!(
        "{:<28} {:>10} {:>20} {:>12} {:>11} {:>11} {:>12} {:>6}",
        "configuration",
        "req/s",
        "min..max",
        "vs none",
        "latency",
        "agent CPU",
        "parks/req",
        "lost"
    );
    for (config, samples) in &results {
        let v: Vec<f64> = samples.iter().map(|s| s.requests_per_s).collect();
        let (min, max) = min_max(&v);
        let m = median(v);
        let latency = median(samples.iter().map(|s| s.latency_ms).collect());
        let (cpu, parks, lost) =
            if config.gort_args(Path::new("")).is_some() || *config == Config::Bpftrace {
                (
                    format!(
                        "{:.0} ms/s",
                        median(samples.iter().map(|s| s.agent_cpu_ms_per_s).collect())
                    ),
                    format!(
                        "{:.2}",
                        median(samples.iter().map(|s| s.parks_per_request).collect())
                    ),
                    if *config == Config::Bpftrace {
                        // bpftrace does not count what it drops.
                        "?".to_string()
                    } else {
                        format!("{:.0}", samples.iter().map(|s| s.lost).sum::<f64>())
                    },
                )
            } else {
                ("-".into(), "-".into(), "-".into())
            };
        println!(
            "{:<28} {:>10.0} {:>20} {:>11.1}% {:>9.2}ms {:>11} {:>12} {:>6}",
            config.name(),
            m,
            format!("{min:.0}..{max:.0}"),
            (m / base - 1.0) * 100.0,
            latency,
            cpu,
            parks,
            lost
        );
    }
    let of = |c: Config| results.iter().find(|(x, _)| *x == c).map(|(_, s)| s);
    for config in [
        Config::GortBudget,
        Config::GortLowBudget,
        Config::GortTargetsBudget,
    ] {
        let Some(sampled) = of(config) else {
            continue;
        };
        let paired: Vec<f64> = sampled
            .iter()
            .map(|s| {
                let [before, after] = s.unprobed_per_s;
                (s.requests_per_s / ((before + after) / 2.0) - 1.0) * 100.0
            })
            .collect();
        let (min, max) = min_max(&paired);
        println!(
            "\n{}: {:+.1} % of the same server's requests/s without gort, under the same load \
             before gort started and after it stopped (median of {}; {min:+.1}..{max:+.1} %)",
            config.name(),
            median(paired.clone()),
            paired.len()
        );
        // Against the full measurement, where its row ran too (`--http-configs`).
        let Some(full) = of(Config::Gort) else {
            continue;
        };
        let full = median(full.iter().map(|s| s.parks_per_request).collect());
        let estimated = median(sampled.iter().map(|s| s.parks_per_request).collect());
        let ratio = median(sampled.iter().map(|s| s.sampling_ratio).collect());
        println!(
            "\n{} ({BUDGET_PERIOD_S} s periods): sampling ratio {ratio:.3} at the end \
             (idle); estimated parks per request {estimated:.2} against {full:.2} measured with all probes in \
             ({:+.1} %: wrk is a closed loop, so the full measurement is of a server the probes slow, the \
             estimate mostly of one running unprobed)",
            config.name(),
            (estimated / full - 1.0) * 100.0
        );
    }
    Ok(())
}

fn http_once(config: Config, exe: &Path, seconds: u64, budget_periods: u64) -> Result<HttpSample> {
    let (trace, events) = (Scratch::new("trace"), Scratch::new("ndjson"));
    let mut server = Command::new(exe);
    if config == Config::RuntimeTrace {
        server.arg("-trace").arg(&trace.0);
    }
    let (child, _stdout, ready) = start_ready(&mut server, "the HTTP workload")?;
    let port = ready["port"].as_u64().context("no port")?;
    let pid = child.0.id();
    let mut sample = HttpSample::default();
    let wrk = |sample: &mut HttpSample, seconds: u64| -> Result<()> {
        let run = run_wrk(port, seconds)?;
        sample.requests_per_s = run.requests_per_s;
        sample.latency_ms = run.latency_ms;
        sample.requests = run.requests;
        Ok(())
    };
    match config {
        Config::NoProbes | Config::RuntimeTrace => wrk(&mut sample, seconds)?,
        Config::Floor | Config::FloorAll => {
            let _probes = attach_floor(exe, pid, config == Config::FloorAll)?;
            wrk(&mut sample, seconds)?;
        }
        Config::Bpftrace => {
            let bpftrace = bpftrace::Bpftrace::start(exe, pid)?;
            let cpu0 = cpu_ticks(bpftrace.pid())?;
            let t0 = Instant::now();
            wrk(&mut sample, seconds)?;
            let wall = t0.elapsed().as_secs_f64();
            let cpu = (cpu_ticks(bpftrace.pid())? - cpu0) as f64 / ticks_per_second();
            sample.agent_cpu_ms_per_s = cpu * 1000.0 / wall;
            let parks = bpftrace.finish()?;
            sample.parks_per_request = parks / sample.requests.max(1.0);
        }
        Config::GortBudget | Config::GortLowBudget | Config::GortTargetsBudget => {
            // The reference before: the server warmed up under the load, then measured.
            let load = Load::start(port)?;
            thread::sleep(UNPROBED_WARMUP);
            let before = served_per_s(port, UNPROBED)?;
            load.stop()?;
            let args = config.gort_args(&events.0).expect("a gort configuration");
            let (gort, base) = start_gort(pid, &args)?;
            // Idle until a period is over, then one load, without a break, for the warm-up and
            // the measured periods. The first period under load runs at full cost until the
            // sampler's check ends it (within a second or so: a one-off when a load starts,
            // left out of this steady-state measure), the next is the first sampled one;
            // from the end of that, `budget_periods` whole periods are measured, by the
            // server's own count of requests (the estimates cover whole periods: a window is
            // weighed once its period is over).
            let periods = |m: &str| sum_of(m, "gort_sampling_periods_total");
            wait_for_period(&base, 1.0)?;
            let loaded = periods(&get(&format!("{base}/metrics"))?);
            let load = Load::start(port)?;
            let warm = wait_for_period(&base, loaded + WARMUP_PERIODS as f64 - 1.0)?;
            let estimated = |m: &str| sum_of(m, "gort_goroutine_blocks_estimated_total");
            let (m0, t0) = wait_for_period_at(
                &base,
                warm + 1.0,
                Instant::now() + Duration::from_secs(BUDGET_PERIOD_S),
            )?;
            let served0 = served(port)?;
            let cpu0 = cpu_ticks(gort.0.id())?;
            let (m1, t1) = wait_for_period_at(
                &base,
                periods(&m0) + budget_periods as f64,
                t0 + Duration::from_secs(budget_periods * BUDGET_PERIOD_S),
            )?;
            let served1 = served(port)?;
            let wall = t1.duration_since(t0).as_secs_f64();
            let cpu = (cpu_ticks(gort.0.id())? - cpu0) as f64 / ticks_per_second();
            let run = load.stop()?;
            // The reference after: gort gone (its links go with it), the same load again, the
            // target left to settle.
            drop(gort);
            let load = Load::start(port)?;
            thread::sleep(UNPROBED_SETTLE);
            let after = served_per_s(port, UNPROBED)?;
            load.stop()?;
            sample.unprobed_per_s = [before, after];
            sample.latency_ms = run.latency_ms;
            sample.requests = served1 - served0;
            sample.requests_per_s = sample.requests / wall;
            sample.agent_cpu_ms_per_s = cpu * 1000.0 / wall;
            sample.parks_per_request = (estimated(&m1) - estimated(&m0)) / sample.requests.max(1.0);
            sample.lost = sum_of(&m1, "gort_events_lost_total");
            sample.sampling_ratio = sum_of(&m1, "gort_sampling_ratio");
        }
        Config::Gort | Config::GortSched | Config::GortFull => {
            let args = config.gort_args(&events.0).expect("a gort configuration");
            let (gort, base) = start_gort(pid, &args)?;
            let parks0 = sum_of(
                &get(&format!("{base}/metrics"))?,
                "gort_goroutine_blocks_total",
            );
            let cpu0 = cpu_ticks(gort.0.id())?;
            let t0 = Instant::now();
            wrk(&mut sample, seconds)?;
            thread::sleep(Duration::from_millis(300));
            let wall = t0.elapsed().as_secs_f64();
            let cpu = (cpu_ticks(gort.0.id())? - cpu0) as f64 / ticks_per_second();
            sample.agent_cpu_ms_per_s = cpu * 1000.0 / wall;
            let metrics = get(&format!("{base}/metrics"))?;
            let parks = sum_of(&metrics, "gort_goroutine_blocks_total") - parks0;
            sample.parks_per_request = parks / sample.requests.max(1.0);
            sample.lost = sum_of(&metrics, "gort_events_lost_total");
        }
    }
    drop(child);
    Ok(sample)
}

/// wrk's `1.23ms`, `456.78us`, `1.02s`, in ms.
fn parse_wrk_duration_ms(s: &str) -> Result<f64> {
    let (number, scale) = if let Some(n) = s.strip_suffix("us") {
        (n, 1e-3)
    } else if let Some(n) = s.strip_suffix("ms") {
        (n, 1.0)
    } else if let Some(n) = s.strip_suffix('s') {
        (n, 1e3)
    } else {
        bail!("unknown duration {s:?}")
    };
    Ok(number.parse::<f64>()? * scale)
}

fn run_once(config: Config, exe: &Path, kind: &str, ops: u64) -> Result<Sample> {
    let (trace, events) = (Scratch::new("trace"), Scratch::new("ndjson"));
    let mut workload = Workload::start(
        exe,
        kind,
        ops,
        (config == Config::RuntimeTrace).then_some(trace.0.as_path()),
    )?;
    let mut sample = Sample::default();
    match config {
        Config::NoProbes | Config::RuntimeTrace => {
            workload.proceed()?;
            workload.result(&mut sample)?;
        }
        Config::Floor | Config::FloorAll => {
            let _probes = attach_floor(exe, workload.pid, config == Config::FloorAll)?;
            workload.proceed()?;
            workload.result(&mut sample)?;
        }
        Config::Bpftrace => {
            let bpftrace = bpftrace::Bpftrace::start(exe, workload.pid)?;
            let cpu0 = cpu_ticks(bpftrace.pid())?;
            let t0 = Instant::now();
            workload.proceed()?;
            workload.result(&mut sample)?;
            let wall = t0.elapsed().as_secs_f64();
            let cpu = (cpu_ticks(bpftrace.pid())? - cpu0) as f64 / ticks_per_second();
            sample.agent_cpu_ms_per_s = cpu * 1000.0 / wall;
            sample.agent_rss_mib = rss_kib(bpftrace.pid())? / 1024.0;
            sample.parks_seen = bpftrace.finish()?;
        }
        Config::GortBudget | Config::GortLowBudget | Config::GortTargetsBudget => {
            bail!("the budget runs are HTTP only")
        }
        Config::Gort | Config::GortSched | Config::GortFull => {
            let args = config.gort_args(&events.0).expect("a gort configuration");
            let before = program_ids();
            let (gort, base) = start_gort(workload.pid, &args)?;
            let bpf0 = bpf_run_ns(&before);
            let parks0 = sum_of(
                &get(&format!("{base}/metrics"))?,
                "gort_goroutine_blocks_total",
            );
            let cpu_ns0 = cpu_ns(gort.0.id())?;
            let t0 = Instant::now();
            workload.proceed()?;
            workload.result(&mut sample)?;
            // Let the agent drain the last events before it is measured.
            thread::sleep(Duration::from_millis(300));
            let wall = t0.elapsed().as_secs_f64();
            sample.agent_cpu_ns = cpu_ns(gort.0.id())? - cpu_ns0;
            sample.agent_cpu_ms_per_s = sample.agent_cpu_ns / 1e6 / wall;
            sample.bpf_ns = bpf_run_ns(&before) - bpf0;
            sample.agent_rss_mib = rss_kib(gort.0.id())? / 1024.0;
            let metrics = get(&format!("{base}/metrics"))?;
            sample.parks_seen = sum_of(&metrics, "gort_goroutine_blocks_total") - parks0;
            sample.lost = sum_of(&metrics, "gort_events_lost_total");
        }
    }
    workload.finish();
    Ok(sample)
}

/// Where gort's default probes go, as (function, entry, RETs): mirrors the probe families of
/// `agent/src/probes/` (a function a binary lacks is skipped, as gort leaves its family out).
const GORT_PROBE_POINTS: &[(&str, bool, bool)] = &[
    ("runtime.gopark", true, true),
    ("net/http.serverHandler.ServeHTTP", true, true),
    ("runtime.newproc1", false, true),
    ("runtime.goexit1", true, false),
    ("runtime.stopTheWorldWithSema", true, false),
    ("runtime.startTheWorldWithSema", true, true),
    ("runtime.gcMarkTermination", true, false),
    ("runtime.gopanic", true, false),
    ("runtime.gorecover", false, true),
    ("runtime.fatalpanic", true, false),
    ("runtime.throw", true, false),
    ("runtime.fatal", true, false),
];

/// Starts the release `gort run --pid PID` on a free loopback port and waits until it serves
/// (it serves once attached); returns it and its base URL.
fn start_gort(pid: u32, extra: &[String]) -> Result<(Guard, String)> {
    let port = TcpListener::bind("127.0.0.1:0")?.local_addr()?.port();
    let base = format!("http://127.0.0.1:{port}");
    let gort = Guard(
        Command::new(workspace_root().join("target/release/gort"))
            .args(["run", "--pid", &pid.to_string(), "--listen"])
            .arg(format!("127.0.0.1:{port}"))
            .args(extra)
            .stderr(Stdio::null())
            .spawn()
            .context("start gort")?,
    );
    let deadline = Instant::now() + Duration::from_secs(20);
    while get(&format!("{base}/healthz")).is_err() {
        ensure!(Instant::now() < deadline, "gort did not start");
        thread::sleep(Duration::from_millis(20));
    }
    Ok((gort, base))
}

/// Loads the empty uprobe (`agent-ebpf/src/bin/floor.rs`) and attaches it at the entry and
/// every RET of `runtime.gopark` of process `pid` (with `all`, at every place gort's probes
/// go); detached when dropped.
fn attach_floor(exe: &Path, pid: u32, all: bool) -> Result<aya::Ebpf> {
    use aya::programs::{
        UProbe,
        uprobe::{UProbeAttachLocation, UProbeScope},
    };
    let object = workspace_root().join("target/ebpf/bpfel-unknown-none/release/floor");
    let mut ebpf = aya::Ebpf::load(&std::fs::read(&object)?).context("load the floor program")?;
    let program: &mut UProbe = ebpf
        .program_mut("empty")
        .context("no program `empty`")?
        .try_into()?;
    program.load()?;
    let bin = gobinary::GoBinary::open(exe)?;
    let mut points = Vec::new();
    let wanted = if all {
        GORT_PROBE_POINTS
    } else {
        &GORT_PROBE_POINTS[..1]
    };
    for &(name, entry, returns) in wanted {
        let Some(f) = bin.function(name) else {
            ensure!(name != "runtime.gopark", "no runtime.gopark");
            continue;
        };
        if entry {
            points.push(f.entry);
        }
        if returns {
            points.extend(bin.ret_instructions(&f)?);
        }
    }
    let scope = UProbeScope::OneProcess(std::num::NonZeroU32::new(pid).context("pid 0")?);
    for vaddr in points {
        let offset = bin
            .file_offset(vaddr)
            .context("gopark is not in the file")?;
        program.attach(UProbeAttachLocation::AbsoluteOffset(offset), exe, scope)?;
    }
    Ok(ebpf)
}

struct Guard(Child);

/// Starts a workload that says `{"ready":true,...}` on its first line: returns it (killed
/// when dropped), the rest of its output, and that line.
fn start_ready(cmd: &mut Command, what: &str) -> Result<(Guard, BufReader<ChildStdout>, Value)> {
    let mut child = Guard(
        cmd.stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .spawn()
            .with_context(|| format!("start {what}"))?,
    );
    let mut stdout = BufReader::new(child.0.stdout.take().expect("piped"));
    let mut line = String::new();
    stdout.read_line(&mut line)?;
    let ready: Value =
        serde_json::from_str(&line).with_context(|| format!("{what} said {line:?}"))?;
    ensure!(ready["ready"] == true, "{what} said {line:?}");
    Ok((child, stdout, ready))
}

impl Drop for Guard {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// A `tests/go/micro` run, held at its start until [`Workload::proceed`].
struct Workload {
    child: Guard,
    stdin: ChildStdin,
    stdout: BufReader<ChildStdout>,
    pid: u32,
    /// Its CPU time (ns) when it was told to go.
    cpu0: f64,
}

impl Workload {
    fn start(exe: &Path, kind: &str, ops: u64, trace: Option<&Path>) -> Result<Workload> {
        let mut cmd = Command::new(exe);
        cmd.arg(format!("-kind={kind}")).arg(format!("-ops={ops}"));
        if let Some(trace) = trace {
            cmd.arg("-trace").arg(trace);
        }
        let (mut child, stdout, _) = start_ready(&mut cmd, "the workload")?;
        let stdin = child.0.stdin.take().expect("piped");
        Ok(Workload {
            pid: child.0.id(),
            child,
            stdin,
            stdout,
            cpu0: 0.0,
        })
    }

    fn proceed(&mut self) -> Result<()> {
        self.cpu0 = cpu_ns(self.pid)?;
        self.stdin.write_all(b"go\n")?;
        Ok(self.stdin.flush()?)
    }

    /// Waits for the result: ns per operation and seconds of work, into `sample`.
    fn result(&mut self, sample: &mut Sample) -> Result<()> {
        let mut line = String::new();
        self.stdout.read_line(&mut line)?;
        let v: Value =
            serde_json::from_str(&line).with_context(|| format!("workload said {line:?}"))?;
        let ns = v["ns"].as_f64().context("no ns")?;
        let ops = v["ops"].as_f64().context("no ops")?;
        sample.ns_per_op = ns / ops;
        sample.seconds = ns / 1e9;
        sample.target_cpu_ns = cpu_ns(self.pid)? - self.cpu0;
        Ok(())
    }

    fn finish(mut self) {
        let _ = self.child.0.wait();
    }
}

/// Waits until gort has completed `periods` sampling periods; returns how many it has.
fn wait_for_period(base: &str, periods: f64) -> Result<f64> {
    let deadline = Instant::now() + Duration::from_secs(600);
    loop {
        let done = sum_of(
            &get(&format!("{base}/metrics"))?,
            "gort_sampling_periods_total",
        );
        if done >= periods {
            return Ok(done);
        }
        ensure!(
            Instant::now() < deadline,
            "sampling period {periods} did not end"
        );
        thread::sleep(Duration::from_millis(50));
    }
}

/// Waits for the end of sampling period `periods`, expected at `expected`: sleeps until
/// shortly before, then polls gort's metrics every 10 ms (each poll costs the agent CPU beside
/// the server's, so not all the time). Returns the metrics that showed it, and when.
fn wait_for_period_at(base: &str, periods: f64, expected: Instant) -> Result<(String, Instant)> {
    let early = expected.checked_sub(Duration::from_millis(300));
    if let Some(wait) = early.map(|e| e.saturating_duration_since(Instant::now())) {
        thread::sleep(wait);
    }
    let deadline = expected + Duration::from_secs(600);
    loop {
        let now = Instant::now();
        let m = get(&format!("{base}/metrics"))?;
        if sum_of(&m, "gort_sampling_periods_total") >= periods {
            return Ok((m, now));
        }
        ensure!(now < deadline, "sampling period {periods} did not end");
        // A lengthened period: no need to look as often.
        let late = now > expected + Duration::from_secs(2);
        thread::sleep(Duration::from_millis(if late { 100 } else { 10 }));
    }
}

/// Requests the benchhttp server has served so far (its own count).
fn served(port: u64) -> Result<f64> {
    Ok(get(&format!("http://127.0.0.1:{port}/served"))?
        .trim()
        .parse()?)
}

/// The server's own count of requests served over `span` under a running load, per second.
fn served_per_s(port: u64, span: Duration) -> Result<f64> {
    let (served0, t0) = (served(port)?, Instant::now());
    thread::sleep(span);
    let (served1, t1) = (served(port)?, Instant::now());
    Ok((served1 - served0) / t1.duration_since(t0).as_secs_f64())
}

/// What one wrk run measured.
struct WrkRun {
    requests_per_s: f64,
    latency_ms: f64,
    requests: f64,
}

/// `wrk -t1 -c8` against the benchhttp server on `port`, for `seconds`.
fn wrk_command(port: u64, seconds: u64) -> Command {
    let mut cmd = Command::new("wrk");
    cmd.args(["-t1", "-c8", &format!("-d{seconds}s")])
        .arg(format!("http://127.0.0.1:{port}/"));
    cmd
}

/// `wrk -t1 -c8` for `seconds` against the benchhttp server on `port`.
fn run_wrk(port: u64, seconds: u64) -> Result<WrkRun> {
    let out = wrk_command(port, seconds)
        .output()
        .context("run wrk (Debian package wrk)")?;
    parse_wrk(out.status, &out.stdout)
}

/// A wrk load in the background, until [`Load::stop`].
struct Load(Guard);

impl Load {
    fn start(port: u64) -> Result<Load> {
        let child = wrk_command(port, 3_600)
            .stdout(Stdio::piped())
            .spawn()
            .context("run wrk (Debian package wrk)")?;
        Ok(Load(Guard(child)))
    }

    /// Stops the load (wrk reports on SIGINT) and reads its report.
    fn stop(mut self) -> Result<WrkRun> {
        // SAFETY: a plain signal to a child that has not been waited for.
        unsafe { libc::kill(self.0.0.id() as i32, libc::SIGINT) };
        let mut stdout = self.0.0.stdout.take().expect("piped");
        let mut text = Vec::new();
        stdout.read_to_end(&mut text)?;
        let status = self.0.0.wait()?;
        parse_wrk(status, &text)
    }
}

/// wrk's report on its `stdout`.
fn parse_wrk(status: std::process::ExitStatus, stdout: &[u8]) -> Result<WrkRun> {
    let text = String::from_utf8_lossy(stdout);
    ensure!(status.success(), "wrk failed: {text}");
    let latency = text
        .lines()
        .find(|l| l.trim_start().starts_with("Latency"))
        .and_then(|l| l.split_whitespace().nth(1))
        .context("no latency")?;
    Ok(WrkRun {
        requests_per_s: text
            .lines()
            .find_map(|l| l.strip_prefix("Requests/sec:"))
            .context("no Requests/sec")?
            .trim()
            .parse()?,
        latency_ms: parse_wrk_duration_ms(latency)?,
        requests: text
            .lines()
            .find(|l| l.contains(" requests in "))
            .and_then(|l| l.split_whitespace().next())
            .context("no request count")?
            .parse()?,
    })
}

fn get(url: &str) -> Result<String> {
    Ok(ureq::get(url).call()?.body_mut().read_to_string()?)
}

/// Sum of the samples of series whose line starts with `prefix`.
fn sum_of(metrics: &str, prefix: &str) -> f64 {
    metrics
        .lines()
        .filter(|l| l.starts_with(prefix))
        .filter_map(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
        .sum()
}

/// utime + stime of a process, in clock ticks (`/proc/PID/stat` fields 14 and 15).
/// CPU time of `pid`'s threads so far in ns, to the ns (`/proc/PID/task/*/schedstat`; a
/// thread that exited is missing, and gort's live as long as it does).
fn cpu_ns(pid: u32) -> Result<f64> {
    let mut total = 0.0;
    for task in std::fs::read_dir(format!("/proc/{pid}/task"))? {
        let path = task?.path().join("schedstat");
        if let Ok(stat) = std::fs::read_to_string(path) {
            total += stat
                .split_whitespace()
                .next()
                .and_then(|n| n.parse::<f64>().ok())
                .unwrap_or(0.0);
        }
    }
    Ok(total)
}

fn cpu_ticks(pid: u32) -> Result<u64> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat"))?;
    let after = &stat[stat.rfind(')').context("malformed stat")? + 2..];
    let f: Vec<&str> = after.split_whitespace().collect();
    // After the command name, field 3 is index 0: utime (14) is 11, stime (15) is 12.
    Ok(f.get(11).context("no utime")?.parse::<u64>()?
        + f.get(12).context("no stime")?.parse::<u64>()?)
}

fn ticks_per_second() -> f64 {
    Command::new("getconf")
        .arg("CLK_TCK")
        .output()
        .ok()
        .and_then(|o| String::from_utf8_lossy(&o.stdout).trim().parse().ok())
        .unwrap_or(100.0)
}

fn rss_kib(pid: u32) -> Result<f64> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status"))?;
    let line = status
        .lines()
        .find(|l| l.starts_with("VmRSS:"))
        .context("no VmRSS")?;
    Ok(line
        .split_whitespace()
        .nth(1)
        .context("malformed VmRSS")?
        .parse()?)
}

/// The least and the greatest of `v` (not empty).
fn min_max(v: &[f64]) -> (f64, f64) {
    v.iter()
        .fold((f64::MAX, f64::MIN), |(a, b), &x| (a.min(x), b.max(x)))
}

fn median(mut v: Vec<f64>) -> f64 {
    v.sort_by(f64::total_cmp);
    let n = v.len();
    if n % 2 == 1 {
        v[n / 2]
    } else {
        (v[n / 2 - 1] + v[n / 2]) / 2.0
    }
}

fn print_table(results: &[(Config, Vec<Sample>)], kind: &str, ops: u64, go: &str) -> Result<()> {
    let of = |c: Config| {
        results
            .iter()
            .find(|(x, _)| *x == c)
            .map(|(_, s)| s.clone())
            .unwrap_or_default()
    };
    let ns_per_op = |c: Config| median(of(c).iter().map(|s| s.ns_per_op).collect());
    let base = ns_per_op(Config::NoProbes);
    // Parks per operation, as gort counted them (the program cannot count its own: a mutex
    // or a select parks only when it must wait).
    let gort = of(Config::Gort);
    let parks_per_op = median(gort.iter().map(|s| s.parks_seen).collect()) / ops as f64;
    if kind == "pingpong" {
        // Every park but the echo goroutine's last (it never wakes) completes.
        let want = (2 * ops - 1) as f64;
        if let Some(s) = gort.iter().find(|s| s.parks_seen < want) {
            bail!(
                "gort saw {} completed parks in a ping-pong run, fewer than the {want} it made",
                s.parks_seen
            );
        }
    }
    // The floor: two empty uprobes per park.
    let trap = (ns_per_op(Config::Floor) - base) / (2.0 * parks_per_op);
    println!(
        "\n{kind} (Go {go}): {ops} operations per run, {parks_per_op:.2} parks per operation (as gort counted them), {} runs per configuration\n",
        results[0].1.len()
    );
    println!(
        "{:<28} {:>10} {:>20} {:>9} {:>14} {:>11} {:>11} {:>10} {:>11} {:>6}",
        "configuration",
        "ns/op",
        "min..max",
        "vs none",
        "ns/park extra",
        "traps/park",
        "agent CPU",
        "agent RSS",
        "parks/s",
        "lost"
    );
    for (config, samples) in results {
        let v: Vec<f64> = samples.iter().map(|s| s.ns_per_op).collect();
        let (min, max) = min_max(&v);
        let m = median(v);
        let extra = (m - base) / parks_per_op;
        let agent = config.gort_args(Path::new("")).is_some() || *config == Config::Bpftrace;
        let (cpu, rss, rate, lost) = if agent {
            let cpu = median(samples.iter().map(|s| s.agent_cpu_ms_per_s).collect());
            let rss = median(samples.iter().map(|s| s.agent_rss_mib).collect());
            let rate = median(samples.iter().map(|s| s.parks_seen / s.seconds).collect());
            let lost = if *config != Config::Bpftrace {
                format!("{:.0}", samples.iter().map(|s| s.lost).sum::<f64>())
            } else {
                // bpftrace does not count what it drops.
                "?".to_string()
            };
            (
                format!("{cpu:.0} ms/s"),
                format!("{rss:.1} MiB"),
                format!("{rate:.0}"),
                lost,
            )
        } else {
            ("-".into(), "-".into(), "-".into(), "-".into())
        };
        let traps = if agent || matches!(config, Config::Floor | Config::FloorAll) {
            format!("{:.2}", extra / trap)
        } else {
            "-".into()
        };
        println!(
            "{:<28} {:>10.0} {:>20} {:>8.1}% {:>14.0} {:>11} {:>11} {:>10} {:>11} {:>6}",
            config.name(),
            m,
            format!("{min:.0}..{max:.0}"),
            (m / base - 1.0) * 100.0,
            extra,
            traps,
            cpu,
            rss,
            rate,
            lost
        );
    }
    println!(
        "\ntraps/park: the extra cost per park in units of one empty uprobe hit (half the floor's per park)."
    );
    // gort's own work per park, measured directly rather than as a difference of two noisy
    // timings: its eBPF programs' run time (kernel statistics) and its agent's CPU, against
    // the CPU the two traps of a park cost the workload (where parks overlap, as the timer
    // workload's 64 sleepers do, a trap costs more CPU than it adds to the time per park).
    let cpu = |c: Config| median(of(c).iter().map(|s| s.target_cpu_ns).collect());
    let parks = parks_per_op * ops as f64;
    let trap_cpu = (cpu(Config::Floor) - cpu(Config::NoProbes)) / (2.0 * parks);
    println!(
        "\none trap: {:.0} ns of the workload's time, {trap_cpu:.0} ns of its CPU (the floor's above no probes)",
        trap
    );
    println!(
        "{:<28} {:>14} {:>16} {:>16} {:>22}",
        "configuration", "eBPF ns/park", "agent ns/park", "gort ns/park", "% of 2 traps' CPU"
    );
    for (config, samples) in results {
        if config.gort_args(Path::new("")).is_none() {
            continue;
        }
        let per_park = |f: fn(&Sample) -> f64| {
            median(
                samples
                    .iter()
                    .map(|s| f(s) / s.parks_seen.max(1.0))
                    .collect(),
            )
        };
        let bpf = per_park(|s| s.bpf_ns);
        let agent = per_park(|s| s.agent_cpu_ns);
        println!(
            "{:<28} {:>14.0} {:>16.0} {:>16.0} {:>21.1}%",
            config.name(),
            bpf,
            agent,
            bpf + agent,
            (bpf + agent) / (2.0 * trap_cpu) * 100.0
        );
    }
    Ok(())
}
