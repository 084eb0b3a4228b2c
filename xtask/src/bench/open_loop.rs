//! The HTTP server under an open-loop load (`tests/go/loadgen`: requests at a fixed rate,
//! answered or not, as a service's users send them). wrk is a closed loop: at full load the
//! probes' cost shows as lost throughput. Here the rate is one the server sustains with all
//! probes in, so the cost shows where `--overhead-budget` measures it, as CPU: the server's
//! CPU above its own without probes, plus gort's, as a share of the host; and the estimates
//! under the budget can be set against a full measurement.

use std::{
    io::Read,
    path::Path,
    process::{Command, Stdio},
    time::Instant,
};

use anyhow::{Context, Result, ensure};
use serde_json::Value;

use super::{
    BUDGET_PERIOD_S, Config, Guard, Scratch, cpu_ticks, get, median, start_gort, start_ready,
    sum_of, ticks_per_second, wait_for_period,
};
use crate::setup::{self, run_cmd, workspace_root};

/// One run's numbers.
#[derive(Default, Clone, Copy)]
struct Sample {
    answered: f64,
    sent: f64,
    p50_ms: f64,
    p99_ms: f64,
    /// The server's CPU, CPU-seconds per second.
    server_cpu: f64,
    /// gort's CPU, CPU-seconds per second.
    agent_cpu: f64,
    /// Parks per request gort measured (estimated under the budget).
    parks_per_request: f64,
    lost: f64,
}

pub fn run(
    go: &Path,
    go_version: &str,
    rate: u64,
    seconds: u64,
    budget_periods: u64,
    reps: usize,
) -> Result<()> {
    let root = workspace_root();
    let server = root.join("target/bench/benchhttp");
    let loadgen = root.join("target/bench/loadgen");
    run_cmd(&mut setup::go_build(
        go,
        &root.join("tests/go/benchhttp"),
        &server,
    ))?;
    run_cmd(&mut setup::go_build(
        go,
        &root.join("tests/go/loadgen"),
        &loadgen,
    ))?;
    let mut configs = vec![Config::NoProbes, Config::Gort, Config::GortSched];
    if budget_periods > 0 {
        configs.push(Config::GortBudget);
    }
    let mut results: Vec<(Config, Vec<Sample>)> =
        configs.iter().map(|&c| (c, Vec::new())).collect();
    for rep in 0..reps {
        for (config, samples) in results.iter_mut() {
            let s = once(*config, &server, &loadgen, rate, seconds, budget_periods)
                .with_context(|| format!("open loop, {} (run {})", config.name(), rep + 1))?;
            samples.push(s);
        }
    }
    let cpus = std::thread::available_parallelism()?.get() as f64;
    let own = median(results[0].1.iter().map(|s| s.server_cpu).collect());
    println!(
        "\nnet/http server (Go {go_version}) under an open-loop load of {rate} requests/s (tests/go/loadgen), {reps} runs per configuration\n"
    );
    println!(
        "{:<28} {:>10} {:>9} {:>9} {:>11} {:>11} {:>14} {:>10} {:>6}",
        "configuration",
        "answered",
        "p50",
        "p99",
        "server CPU",
        "agent CPU",
        "host share",
        "parks/req",
        "lost"
    );
    for (config, samples) in &results {
        let m = |f: fn(&Sample) -> f64| median(samples.iter().map(f).collect());
        let server_cpu = m(|s| s.server_cpu);
        let agent_cpu = m(|s| s.agent_cpu);
        let gort = *config != Config::NoProbes;
        println!(
            "{:<28} {:>9.1}% {:>7.2}ms {:>7.2}ms {:>7.0} ms/s {:>7.0} ms/s {:>13.2}% {:>10} {:>6}",
            config.name(),
            m(|s| s.answered / s.sent.max(1.0)) * 100.0,
            m(|s| s.p50_ms),
            m(|s| s.p99_ms),
            server_cpu * 1e3,
            agent_cpu * 1e3,
            ((server_cpu - own).max(0.0) + agent_cpu) / cpus * 100.0,
            if gort {
                format!("{:.2}", m(|s| s.parks_per_request))
            } else {
                "-".into()
            },
            if gort {
                format!("{:.0}", samples.iter().map(|s| s.lost).sum::<f64>())
            } else {
                "-".into()
            },
        );
    }
    println!(
        "\nhost share: the server's CPU above its own without probes, plus gort's, as a share of {cpus} CPUs (what --overhead-budget bounds)."
    );
    Ok(())
}

fn once(
    config: Config,
    server: &Path,
    loadgen: &Path,
    rate: u64,
    seconds: u64,
    budget_periods: u64,
) -> Result<Sample> {
    let (child, _stdout, ready) = start_ready(&mut Command::new(server), "the HTTP workload")?;
    let port = ready["port"].as_u64().context("no port")?;
    let pid = child.0.id();
    let mut sample = Sample::default();
    let load = |sample: &mut Sample, seconds: u64| -> Result<()> {
        let cpu0 = cpu_ticks(pid)?;
        let t0 = Instant::now();
        let out = Command::new(loadgen)
            .arg(format!("-url=http://127.0.0.1:{port}/"))
            .arg(format!("-rate={rate}"))
            .arg(format!("-duration={seconds}s"))
            .output()
            .context("run tests/go/loadgen")?;
        let wall = t0.elapsed().as_secs_f64();
        ensure!(out.status.success(), "loadgen failed");
        sample.server_cpu = (cpu_ticks(pid)? - cpu0) as f64 / ticks_per_second() / wall;
        let v: Value = serde_json::from_slice(&out.stdout)?;
        sample.answered = v["ok"].as_f64().context("no ok")?;
        sample.sent = v["sent"].as_f64().context("no sent")?;
        sample.p50_ms = v["p50_ms"].as_f64().context("no p50")?;
        sample.p99_ms = v["p99_ms"].as_f64().context("no p99")?;
        Ok(())
    };
    let events = Scratch::new("ndjson");
    let Some(args) = config.gort_args(&events.0) else {
        load(&mut sample, seconds)?;
        return Ok(sample);
    };
    if config == Config::GortBudget {
        budget_once(&mut sample, pid, port, loadgen, rate, &args, budget_periods)?;
        return Ok(sample);
    }
    let (gort, base) = start_gort(pid, &args)?;
    let metrics = || get(&format!("{base}/metrics"));
    let counter = "gort_goroutine_blocks_total";
    let parks0 = sum_of(&metrics()?, counter);
    let cpu0 = cpu_ticks(gort.0.id())?;
    let t0 = Instant::now();
    load(&mut sample, seconds)?;
    sample.agent_cpu =
        (cpu_ticks(gort.0.id())? - cpu0) as f64 / ticks_per_second() / t0.elapsed().as_secs_f64();
    std::thread::sleep(std::time::Duration::from_millis(300));
    let m = metrics()?;
    sample.parks_per_request = (sum_of(&m, counter) - parks0) / sample.answered.max(1.0);
    sample.lost = sum_of(&m, "gort_events_lost_total");
    Ok(sample)
}

/// Periods gort is given to settle on a window under a steady load before it is measured.
const SETTLE_PERIODS: u64 = 3;

/// Under `--overhead-budget`: gort attached to the server under load (as to a running
/// service), left `SETTLE_PERIODS` to find its window, then measured over `periods` whole
/// periods (a window is weighed once its period ends): the server's and gort's CPU, and the
/// estimated parks against the requests of those periods (all answered, at the set rate).
fn budget_once(
    sample: &mut Sample,
    pid: u32,
    port: u64,
    loadgen: &Path,
    rate: u64,
    args: &[String],
    periods: u64,
) -> Result<()> {
    let seconds = (SETTLE_PERIODS + periods + 3) * BUDGET_PERIOD_S;
    let load = Guard(
        Command::new(loadgen)
            .arg(format!("-url=http://127.0.0.1:{port}/"))
            .arg(format!("-rate={rate}"))
            .arg(format!("-duration={seconds}s"))
            .stdout(Stdio::piped())
            .spawn()
            .context("run tests/go/loadgen")?,
    );
    let (gort, base) = start_gort(pid, args)?;
    let counter = "gort_goroutine_blocks_estimated_total";
    let at = |periods: f64| -> Result<(f64, u64, u64, Instant)> {
        wait_for_period(&base, periods)?;
        Ok((
            sum_of(&get(&format!("{base}/metrics"))?, counter),
            cpu_ticks(pid)?,
            cpu_ticks(gort.0.id())?,
            Instant::now(),
        ))
    };
    let (parks0, server0, agent0, t0) = at(SETTLE_PERIODS as f64)?;
    let (parks1, server1, agent1, t1) = at((SETTLE_PERIODS + periods) as f64)?;
    let secs = (t1 - t0).as_secs_f64();
    sample.server_cpu = (server1 - server0) as f64 / ticks_per_second() / secs;
    sample.agent_cpu = (agent1 - agent0) as f64 / ticks_per_second() / secs;
    sample.parks_per_request = (parks1 - parks0) / (rate as f64 * secs);
    sample.lost = sum_of(&get(&format!("{base}/metrics"))?, "gort_events_lost_total");
    let mut load = load;
    let mut out = String::new();
    load.0
        .stdout
        .take()
        .expect("piped")
        .read_to_string(&mut out)?;
    let v: Value = serde_json::from_str(&out).with_context(|| format!("loadgen said {out:?}"))?;
    sample.answered = v["ok"].as_f64().context("no ok")?;
    sample.sent = v["sent"].as_f64().context("no sent")?;
    sample.p50_ms = v["p50_ms"].as_f64().context("no p50")?;
    sample.p99_ms = v["p99_ms"].as_f64().context("no p99")?;
    Ok(())
}
