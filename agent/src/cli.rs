//! Command-line interface of the `gort` binary.

use std::{net::SocketAddr, path::PathBuf, time::Duration};

use clap::{Args, Parser, Subcommand};

/// gort: where the goroutines of a running Go service spend their time blocked, measured from
/// outside with eBPF uprobes, on any unmodified Go binary.
#[derive(Parser, Debug)]
#[command(name = "gort", version, about, long_about = None)]
pub struct Cli {
    #[command(subcommand)]
    pub command: Command,
}

#[derive(Subcommand, Debug)]
pub enum Command {
    /// Attach to Go processes and serve what they block on (needs root).
    Run(Box<RunOptions>),
    /// Tell whether gort can attach to a Go binary, and what it found in it (no root needed).
    Inspect(InspectOptions),
    /// Show the goroutine leak suspects a running `gort run` found, as a table.
    Leaks(LeaksOptions),
    /// A live view in the terminal: processes, blocking by reason and call site, goroutines,
    /// GC pauses, leak suspects (watches every Go process itself, as root; or --agent).
    Top(TopOptions),
    /// Attach and detach every probe to a process, again and again (robustness tests).
    #[command(hide = true)]
    StressAttach(StressAttachOptions),
    /// Write a pprof block profile of a process: attach for --seconds (needs root), or ask a
    /// running `gort run` (--agent).
    Profile(ProfileOptions),
}

#[derive(Args, Debug)]
pub struct ProfileOptions {
    /// The process to profile.
    #[arg(long)]
    pub pid: u32,

    /// How long to measure.
    #[arg(long, default_value_t = 30)]
    pub seconds: u64,

    /// Where to write the gzipped profile.proto (`go tool pprof FILE` reads it).
    #[arg(short, long, default_value = "block.pb.gz")]
    pub output: std::path::PathBuf,

    /// Ask the `gort run` serving here instead of attaching.
    #[arg(long)]
    pub agent: Option<String>,

    /// Keep the stacks entirely inside the runtime (its own goroutines' parks).
    #[arg(long)]
    pub runtime: bool,
}

#[derive(Args, Debug)]
pub struct StressAttachOptions {
    #[arg(long)]
    pub pid: u32,

    #[arg(long, default_value_t = 10_000)]
    pub cycles: u64,

    /// Probe families to attach and detach (sched always).
    #[arg(long, value_enum, value_delimiter = ',', default_values_t = crate::probes::Family::ALL)]
    pub probes: Vec<crate::probes::Family>,
    /// How long each cycle leaves the probes in, in ms.
    #[arg(long, default_value_t = 0)]
    pub hold_ms: u64,
}

#[derive(Args, Debug)]
pub struct TopOptions {
    /// Show what the `gort run` serving here measures instead of watching by itself.
    #[arg(long)]
    pub agent: Option<String>,

    /// How often the view refreshes.
    #[arg(long, default_value = "1s", value_parser = parse_duration)]
    pub interval: Duration,

    /// Watch only these processes (as `gort run --all --include`).
    #[arg(long, conflicts_with = "agent")]
    pub include: Vec<String>,

    /// Never watch these processes (as `gort run --all --exclude`).
    #[arg(long, conflicts_with = "agent")]
    pub exclude: Vec<String>,

    /// As `gort run --leak-after`.
    #[arg(long, conflicts_with = "agent")]
    pub leak_after: Option<String>,
}

#[derive(Args, Debug)]
pub struct LeaksOptions {
    /// Only this process.
    #[arg(long)]
    pub pid: Option<u32>,

    /// Where the `gort run` to ask serves.
    #[arg(long, default_value = "127.0.0.1:9464", env = "GORT_LISTEN")]
    pub agent: String,

    /// Print the JSON the agent returns instead of a table.
    #[arg(long)]
    pub json: bool,
}

#[derive(Args, Debug, Clone)]
pub struct RunOptions {
    /// Attach to this process.
    #[arg(long, required_unless_present_any = ["exe", "all"], conflicts_with_all = ["exe", "all"])]
    pub pid: Option<u32>,

    /// Attach to every process running this executable, now and later.
    #[arg(long, conflicts_with = "all")]
    pub exe: Option<PathBuf>,

    /// Attach to every Go process of the host (containers included), now and as they start;
    /// release those that exit.
    #[arg(long)]
    pub all: bool,

    /// With --all, watch only processes matching one of these: `exe=GLOB` (file name or
    /// path), `service=GLOB` or `cgroup=GLOB` (a bare GLOB is exe=). Repeatable.
    #[arg(long, requires = "all", value_parser = parse_rule, env = "GORT_INCLUDE", value_delimiter = ',')]
    pub include: Vec<crate::fleet::select::Rule>,

    /// With --all, never watch processes matching one of these (same forms as --include).
    #[arg(long, requires = "all", value_parser = parse_rule, env = "GORT_EXCLUDE", value_delimiter = ',')]
    pub exclude: Vec<crate::fleet::select::Rule>,

    /// With --all, how often /proc is scanned again for processes the exec watch missed.
    #[arg(long, default_value = "10s", value_parser = parse_duration, env = "GORT_RESCAN_INTERVAL")]
    pub rescan_interval: Duration,

    /// The Kubernetes API server for pod and container names (default in a cluster: the
    /// service account's; GORT_KUBERNETES_API).
    #[arg(long, env = "GORT_KUBERNETES_API")]
    pub kubernetes_api: Option<String>,

    /// This node's name, to list only its pods (the downward API's NODE_NAME).
    #[arg(long, env = "NODE_NAME")]
    pub node_name: Option<String>,

    /// Keep what gort costs the host (its probe hits in the targets plus its own CPU) under
    /// this share of the host's CPU, e.g. `2%`: everything is measured while the cost is
    /// under it; over it, the probes are attached for part of each sampling period. Counts
    /// are then also reported as estimates (`*_estimated_total`, equal to the counts while
    /// all is measured) and the share in force as `gort_sampling_ratio`. Under --exe and
    /// --all the probes of every process go in and out together, and the targets' CPU is
    /// theirs together.
    #[arg(long, value_parser = crate::budget::parse_share, env = "GORT_OVERHEAD_BUDGET")]
    pub overhead_budget: Option<f64>,

    /// What --overhead-budget is a share of: `host` (all its CPUs: what gort may cost the
    /// node) or `targets` (their own CPU use, read while the probes are out: how much gort
    /// may slow them: a server flat out on one CPU of two may lose twice a host budget's
    /// share of its throughput).
    #[arg(
        long,
        value_enum,
        default_value = "host",
        env = "GORT_OVERHEAD_BUDGET_OF"
    )]
    pub overhead_budget_of: crate::budget::BudgetOf,

    /// With --overhead-budget: the sampling period (the probes are in for the first part);
    /// lengthened when no window fits the budget (every attach/detach cycle costs the target
    /// CPU too).
    #[arg(long, default_value = "10s", value_parser = parse_duration, env = "GORT_SAMPLING_PERIOD")]
    pub sampling_period: Duration,

    /// Address of the HTTP server (/metrics and the JSON API).
    #[arg(long, default_value = "127.0.0.1:9464", env = "GORT_LISTEN")]
    pub listen: SocketAddr,

    /// The `service` label (default: the target's OTEL_SERVICE_NAME, else its executable name).
    #[arg(long)]
    pub service: Option<String>,

    /// Capture the stack frames of blocks at least this long (a few reads of the target's
    /// stack per such block). 0 captures every block.
    #[arg(long, default_value = "1ms", value_parser = parse_duration, env = "GORT_FRAME_MIN_BLOCK")]
    pub frame_min_block: Duration,

    /// How often the agent drains the kernel's event buffers (under --overhead-budget, every
    /// 500 ms while the sampled probes are out, at most an eighth of the period, and at once
    /// when they are back).
    #[arg(long, default_value = "20ms", value_parser = parse_duration)]
    pub drain_interval: Duration,

    /// Probe families to attach: fewer probes cost the target fewer traps, and what they
    /// measure goes (lifecycle: goroutine counts and leak suspects; http: request spans and
    /// trace ids). sched (parks) is always attached.
    #[arg(long, value_enum, value_delimiter = ',', default_values_t = crate::probes::Family::ALL, env = "GORT_PROBES")]
    pub probes: Vec<crate::probes::Family>,

    /// Size of the kernel's event ring buffer, in MiB (a power of two).
    #[arg(long, default_value_t = 8, env = "GORT_RINGBUF_MIB")]
    pub ringbuf_mib: u32,

    /// How many goroutines can be parked at once across all targets before parks are dropped
    /// (and counted as lost).
    #[arg(long, default_value_t = 131_072, env = "GORT_MAX_PARKED")]
    pub max_parked: u32,

    /// Goroutines per process tracked at most; beyond it new goroutines are counted, not kept.
    #[arg(long, default_value_t = 500_000)]
    pub max_goroutines: usize,

    /// Exited goroutines kept per process for the API (oldest dropped first).
    #[arg(long, default_value_t = 10_000)]
    pub retain_exited: usize,

    /// How long exited goroutines stay in the API.
    #[arg(long, default_value = "5m", value_parser = parse_duration)]
    pub retain_exited_for: Duration,

    /// A group of goroutines created at the same place and blocked at the same place is a
    /// leak suspect when members have been parked this long and the group keeps growing.
    #[arg(long, default_value = "5m", value_parser = parse_duration, env = "GORT_LEAK_AFTER")]
    pub leak_after: Duration,

    /// Over how long a suspect group's growth is measured (default: --leak-after).
    #[arg(long, value_parser = parse_duration)]
    pub leak_window: Option<Duration>,

    /// Leak suspect groups on /metrics at most, by size (the rest add up in
    /// created_by="other").
    #[arg(long, default_value_t = 10, env = "GORT_LEAK_TOP")]
    pub leak_top: usize,

    /// Blocks at least this long inside an HTTP request become child spans of its span.
    #[arg(long, default_value = "1ms", value_parser = parse_duration, env = "GORT_SPAN_MIN_BLOCK")]
    pub span_min_block: Duration,

    /// Send spans and metrics over OTLP to this endpoint (also OTEL_EXPORTER_OTLP_ENDPOINT and
    /// the other standard OTEL_EXPORTER_OTLP_* variables).
    #[arg(long)]
    pub otlp_endpoint: Option<String>,

    /// `grpc` or `http/protobuf` (also OTEL_EXPORTER_OTLP_PROTOCOL; default http/protobuf).
    #[arg(long)]
    pub otlp_protocol: Option<String>,

    /// A header for the OTLP receiver, `key=value` (repeatable; also
    /// OTEL_EXPORTER_OTLP_HEADERS).
    #[arg(long = "otlp-header")]
    pub otlp_headers: Vec<String>,

    /// Finished requests waiting for the OTLP receiver at most; beyond, the oldest are dropped
    /// (counted in gort_export_dropped_total).
    #[arg(long, default_value_t = 10_000)]
    pub otlp_max_queue: usize,

    /// Write records of events (requests, panics, fatal errors) as NDJSON to this file, or `-` for
    /// standard output.
    #[arg(long)]
    pub events: Option<crate::export::events::EventsOutput>,

    /// How long an exited process's series stay on /metrics and in the API.
    #[arg(long, default_value = "10m", value_parser = parse_duration, env = "GORT_RETAIN_EXITED_PROCESS_FOR")]
    pub retain_exited_process_for: Duration,
}

#[derive(Args, Debug)]
pub struct InspectOptions {
    /// The Go executable to inspect.
    pub binary: PathBuf,

    /// Print JSON instead of text.
    #[arg(long)]
    pub json: bool,
}

fn parse_rule(s: &str) -> Result<crate::fleet::select::Rule, String> {
    s.parse()
}

/// Parses durations like `20ms`, `1.5s`, `5m`, `250us`, `100ns`, `1h`.
pub fn parse_duration(s: &str) -> Result<Duration, String> {
    let s = s.trim();
    let split = s
        .find(|c: char| !(c.is_ascii_digit() || c == '.'))
        .ok_or_else(|| format!("`{s}` has no unit (ns, us, ms, s, m, h)"))?;
    let (number, unit) = s.split_at(split);
    let value: f64 = number
        .parse()
        .map_err(|_| format!("`{s}` does not start with a number"))?;
    let nanos_per_unit = match unit {
        "ns" => 1.0,
        "us" | "µs" => 1e3,
        "ms" => 1e6,
        "s" => 1e9,
        "m" => 60e9,
        "h" => 3600e9,
        _ => {
            return Err(format!(
                "unknown unit `{unit}` in `{s}` (ns, us, ms, s, m, h)"
            ));
        }
    };
    let nanos = value * nanos_per_unit;
    if !nanos.is_finite() || nanos < 0.0 || nanos > u64::MAX as f64 {
        return Err(format!("`{s}` is out of range"));
    }
    Ok(Duration::from_nanos(nanos as u64))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn durations() {
        assert_eq!(parse_duration("20ms"), Ok(Duration::from_millis(20)));
        assert_eq!(parse_duration("1.5s"), Ok(Duration::from_millis(1500)));
        assert_eq!(parse_duration("5m"), Ok(Duration::from_secs(300)));
        assert_eq!(parse_duration("250us"), Ok(Duration::from_micros(250)));
        assert_eq!(parse_duration("0ns"), Ok(Duration::ZERO));
        assert!(parse_duration("5").is_err());
        assert!(parse_duration("ms").is_err());
        assert!(parse_duration("5 parsecs").is_err());
        assert!(parse_duration("1e400s").is_err());
    }

    #[test]
    fn cli_is_consistent() {
        use clap::CommandFactory;
        Cli::command().debug_assert();
    }
}
