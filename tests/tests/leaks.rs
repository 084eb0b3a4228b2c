//! Goroutine leak detection: a program leaks 50 goroutines a second (parked in chan receive
//! for good) beside healthy goroutines that block and wake all the time and an idle worker
//! pool. The leak group is reported with its creation site, blocking frame, growth rate
//! (within 5 %) and, once the leaking stops, its exact size; the healthy ones are not. The
//! same holds while time sampling (`--overhead-budget`) has the probes out 99 % of the time:
//! gort then reads the goroutines' states from memory every 2 s.

use std::{
    process::Command,
    thread,
    time::{Duration, Instant},
};

use anyhow::{Context, Result, ensure};
use gort_e2e::{GoProgram, Gort, Variant, build_go_program, eventually, gort_bin, serial};
use serde_json::Value;

const RATE: f64 = 50.0;

fn check(go_version: &str, variant: Variant) {
    let _serial = serial();
    run(go_version, variant, false)
        .unwrap_or_else(|e| panic!("Go {go_version} {variant:?}: {e:#}"));
}

fn suspects(gort: &Gort, pid: &str) -> Result<Vec<Value>> {
    let v = gort.get_json(&format!("/api/v1/leaks?pid={pid}"))?;
    Ok(v.as_array().context("a list")?.clone())
}

/// `sampled`: under a budget the healthy goroutines' parks exceed, so that the probes are
/// in for 1 % of the time.
fn run(go_version: &str, variant: Variant, sampled: bool) -> Result<()> {
    let exe = build_go_program("leaky", go_version, variant);
    let mut program = GoProgram::start(&exe, &["-rate", "50", "-leak-for", "6s"], &[])?;
    let pid = program.pid.to_string();
    let mut args = vec!["--leak-after", "2s", "--leak-window", "3s"];
    if sampled {
        args.extend(["--overhead-budget", "0.5%", "--sampling-period", "2s"]);
    }
    let gort = Gort::attach(program.pid, &args)?;
    let started = Instant::now();
    program.proceed()?;

    // While it leaks: one suspect group, growing at the program's rate (under sampling, the
    // goroutines are read every 2 s: too coarse for a 3 s window's slope).
    if !sampled {
        thread::sleep(Duration::from_millis(4_700).saturating_sub(started.elapsed()));
        let during = suspects(&gort, &pid)?;
        ensure!(during.len() == 1, "while leaking, suspects: {during:#?}");
        let rate = during[0]["growth_per_second"].as_f64().context("growth")?;
        ensure!(
            (rate - RATE).abs() <= 0.05 * RATE,
            "growth {rate}/s, the program leaks {RATE}/s"
        );
    }

    let report = program.read_json()?;
    let leaked = report["leaked"].as_u64().context("leaked")?;
    ensure!(leaked >= 250, "the program leaked {leaked}");
    // Once it stops: still a suspect, with exactly the goroutines it leaked.
    let group = eventually(Duration::from_secs(15), || {
        let s = suspects(&gort, &pid)?;
        ensure!(s.len() == 1, "suspects: {s:#?}");
        ensure!(
            s[0]["goroutines"] == leaked,
            "{} goroutines in the group, the program leaked {leaked}",
            s[0]["goroutines"]
        );
        Ok(s[0].clone())
    })?;
    ensure!(
        group["reason"] == "chan receive",
        "reason {}",
        group["reason"]
    );
    let created = &report["created_by"];
    ensure!(
        group["created_by"]["function"] == created["function"]
            && group["created_by"]["file"] == created["file"]
            && group["created_by"]["line"] == created["line"],
        "created_by {} != {created}",
        group["created_by"]
    );
    let blocked = &report["blocked_at"];
    ensure!(
        group["blocking_frame"]["function"] == blocked["function"]
            && group["blocking_frame"]["line"] == blocked["line"],
        "blocking frame {} != {blocked}",
        group["blocking_frame"]
    );
    // The metric: the same group under its creation site.
    let m = gort.metrics()?;
    let series = m.all("gort_goroutine_leak_suspects", &[("pid", &pid)]);
    ensure!(
        series.len() == 1 && series[0].1 == leaked as f64,
        "leak suspect series: {series:?}"
    );

    // `gort leaks` prints it for a person.
    let out = Command::new(gort_bin())
        .args([
            "leaks",
            "--pid",
            &pid,
            "--agent",
            gort.base.trim_start_matches("http://"),
        ])
        .output()?;
    let table = String::from_utf8_lossy(&out.stdout);
    ensure!(
        out.status.success(),
        "gort leaks failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let file = created["file"]
        .as_str()
        .unwrap_or("")
        .rsplit('/')
        .next()
        .unwrap_or("");
    ensure!(
        table.lines().count() == 2
            && table.contains(&format!("main.main {file}:{}", created["line"])),
        "gort leaks printed:\n{table}"
    );
    if sampled {
        let ratio = m
            .get("gort_sampling_ratio", &[])
            .context("no sampling ratio")?;
        ensure!(ratio < 0.1, "the probes were in {ratio} of the time");
    }
    program.finish()?;
    gort.stop()?;
    Ok(())
}

#[test]
fn go1_22() {
    check("1.22.10", Variant::DEFAULT);
}

#[test]
fn go1_27_pie_stripped() {
    check("1.27.3", Variant::PIE_STRIPPED);
}

#[test]
fn go1_24_while_time_sampling_has_the_probes_out() {
    let _serial = serial();
    run("1.24.11", Variant::DEFAULT, true).unwrap_or_else(|e| panic!("{e:#}"));
}
