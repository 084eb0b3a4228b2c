//! Goroutines parked before gort attached: gort finds them by walking the runtime's goroutine
//! list in the target's memory (by symbol, or in stripped binaries by disassembly of
//! `runtime.allgadd`), counts them as parked right now with the runtime's own wait reasons,
//! and notices each one that wakes.

use std::{collections::BTreeMap, time::Duration};

use anyhow::{Context, Result, ensure};
use gort_e2e::{GoProgram, Gort, Metrics, Variant, build_go_program, eventually, serial};
use serde_json::Value;

const PARKED_PER_KIND: u64 = 1000;
const WOKEN: u64 = 100;

fn check(go_version: &str, variant: Variant) {
    let _serial = serial();
    run(go_version, variant).unwrap_or_else(|e| panic!("Go {go_version} {variant:?}: {e:#}"));
}

fn parked_gauge(m: &Metrics, pid: &str, reason: &str) -> u64 {
    m.get(
        "gort_goroutines_blocked",
        &[("pid", pid), ("reason", reason)],
    )
    .unwrap_or(0.0) as u64
}

fn run(go_version: &str, variant: Variant) -> Result<()> {
    let exe = build_go_program("preparked", go_version, variant);
    let n = PARKED_PER_KIND.to_string();
    let wake = WOKEN.to_string();
    let mut program = GoProgram::start(&exe, &["-n", &n, "-wake", &wake], &[("GOGC", "off")])?;
    let ready = program.ready.clone();
    let pid = program.pid.to_string();
    let parked = ready["parked"].as_array().context("parked")?;
    ensure!(
        parked.len() as u64 == 3 * PARKED_PER_KIND,
        "the program parked {} goroutines",
        parked.len()
    );
    let mut per_reason: BTreeMap<String, u64> = BTreeMap::new();
    let mut chan_receive = String::new();
    for p in parked {
        *per_reason
            .entry(p["reason"].as_str().context("reason")?.to_string())
            .or_default() += 1;
        if p["kind"] == "chan receive" {
            chan_receive = p["reason"].as_str().unwrap_or_default().to_string();
        }
    }
    ensure!(
        per_reason.len() == 3,
        "three kinds, three reasons: {per_reason:?}"
    );

    let gort = Gort::attach(program.pid, &[])?;
    let procs = gort.get_json("/api/v1/processes")?;
    let walked = procs[0]["goroutines_walked"]
        .as_u64()
        .with_context(|| format!("no walk: {procs}"))?;
    ensure!(walked >= 3 * PARKED_PER_KIND, "walked {walked} goroutines");

    // Right after attaching, each kind counts as parked now, exactly.
    let m = gort.metrics()?;
    for (reason, want) in &per_reason {
        let seen = parked_gauge(&m, &pid, reason);
        ensure!(
            seen == *want,
            "{reason}: {seen} parked now, the runtime's dump says {want}"
        );
    }
    let goroutines = gort.get_json(&format!("/api/v1/goroutines?pid={pid}"))?;
    let by_goid: BTreeMap<u64, &Value> = goroutines
        .as_array()
        .context("list")?
        .iter()
        .map(|g| (g["goid"].as_u64().unwrap_or(0), g))
        .collect();
    for p in parked {
        let goid = p["goid"].as_u64().context("goid")?;
        let g = by_goid
            .get(&goid)
            .with_context(|| format!("gort did not find goroutine {goid}"))?;
        ensure!(
            g["state"] == "waiting"
                && g["reason"] == p["reason"]
                && g["parked_before_attach"] == true,
            "goroutine {goid}: gort says {g}, the runtime says {}",
            p["reason"]
        );
        let start = g["start_function"].as_str().unwrap_or_default();
        ensure!(
            start.starts_with("main.main.func"),
            "goroutine {goid} started in {start}"
        );
        ensure!(
            g["created_by"]["function"] == "main.main",
            "goroutine {goid} created by {}",
            g["created_by"]
        );
    }

    // Wake some: each resume is noticed, though its park was never seen.
    program.proceed()?;
    let woken = program.read_json()?;
    let woken: Vec<u64> = serde_json::from_value(woken["woken"].clone())?;
    ensure!(woken.len() as u64 == WOKEN, "woke {}", woken.len());
    eventually(Duration::from_secs(10), || {
        let m = gort.metrics()?;
        let seen = parked_gauge(&m, &pid, &chan_receive);
        ensure!(
            seen == PARKED_PER_KIND - WOKEN,
            "{chan_receive}: {seen} parked now"
        );
        let unmatched = m
            .get("gort_probe_events_total", &[("kind", "resumes_unmatched")])
            .unwrap_or(0.0);
        ensure!(
            unmatched >= WOKEN as f64,
            "{unmatched} resumes of unseen parks"
        );
        for (reason, want) in per_reason.iter().filter(|(r, _)| **r != chan_receive) {
            let seen = parked_gauge(&m, &pid, reason);
            ensure!(seen == *want, "{reason}: {seen} parked now, want {want}");
        }
        Ok(())
    })?;
    let goroutines = gort.get_json(&format!("/api/v1/goroutines?pid={pid}"))?;
    for goid in woken {
        let g = goroutines
            .as_array()
            .and_then(|l| l.iter().find(|g| g["goid"].as_u64() == Some(goid)))
            .with_context(|| format!("woken goroutine {goid} is gone from the API"))?;
        ensure!(
            g["state"] != "waiting",
            "woken goroutine {goid} is still waiting: {g}"
        );
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
fn go1_24_stripped() {
    check("1.24.11", Variant::STRIPPED);
}
