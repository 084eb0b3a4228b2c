//! Every kind of goroutine park, measured by gort on a real Go program that measures itself:
//! `tests/go/parks` makes a known number of parks of known kinds and lengths in goroutines
//! whose ids it reports, then parks one goroutine of each kind for good. Counts must match
//! exactly, blocked time within 1 %, per goroutine and per wait reason.

use std::{collections::BTreeMap, time::Duration};

use anyhow::{Context, Result, ensure};
use gort_e2e::{GoProgram, Gort, Metrics, Variant, build_go_program, eventually, serial};
use serde_json::Value;

const WORKERS: u64 = 2;
const OPS: u64 = 20;

/// How far gort's blocked time may fall short of the program's: the program times each park
/// with the code around it, and with the probes' own cost, which is in its time but not in
/// the park: two traps a park, ~20 µs each here, but on a VM of two CPUs shared with gort
/// and the test, now and then waiting for a CPU or for the target's memory map (the Go heap
/// growing). 1 % and half a millisecond per park; gort alone against a program sleeping 40
/// times on an idle machine: 0.08–0.19 % short.
fn least_blocked(program_s: f64, parks: u64) -> f64 {
    program_s * 0.99 - parks as f64 * 500e-6
}

fn check_parks(go_version: &str, variant: Variant) {
    let _serial = serial();
    run(go_version, variant).unwrap_or_else(|e| panic!("Go {go_version} {variant:?}: {e:#}"));
}

fn run(go_version: &str, variant: Variant) -> Result<()> {
    let exe = build_go_program("parks", go_version, variant);
    // GOGC=off: no collection can wake runtime goroutines that park for the same reasons.
    let mut program = GoProgram::start(
        &exe,
        &[
            &format!("-workers={WORKERS}"),
            &format!("-ops={OPS}"),
            "-block=50ms",
        ],
        &[("GOGC", "off"), ("OTEL_SERVICE_NAME", "parks-test")],
    )?;
    let pid = program.pid.to_string();
    let gort = Gort::attach(program.pid, &[])?;
    program.proceed()?;
    let report = program.read_json().context("the program's report")?;
    let reasons: BTreeMap<String, String> = serde_json::from_value(report["reasons"].clone())?;
    ensure!(
        reasons.len() == 9,
        "the program could not name every wait reason: {reasons:?}"
    );

    // Expected completed parks and blocked time per wait reason, from the program's totals.
    let mut expected: BTreeMap<String, (u64, u64)> = BTreeMap::new();
    for (kind, total) in report["totals"].as_object().context("totals")? {
        let reason = reasons
            .get(kind)
            .with_context(|| format!("no reason for {kind}"))?;
        let e = expected.entry(reason.clone()).or_default();
        e.0 += total["count"].as_u64().context("count")?;
        e.1 += total["blocked_ns"].as_u64().context("blocked_ns")?;
    }
    let sched = RuntimeHistogram::from_report(&report["sched_latencies"])?;
    // Goroutines waiting at the end, per reason, as the runtime's own dump counts them: it
    // leaves out the runtime's own goroutines (gort's `system` flag), and includes those the
    // Go libraries keep, parked since before gort attached (Go 1.23+'s `unique` cleanup).
    let dump_waiting: BTreeMap<String, u64> = serde_json::from_value(report["waiting"].clone())?;
    for p in report["parked"].as_array().context("parked")? {
        let reason = p["reason"].as_str().context("reason")?;
        ensure!(
            dump_waiting.get(reason).is_some_and(|&n| n >= 1),
            "{reason} missing from {dump_waiting:?}"
        );
    }

    let labels = |reason: &str| {
        [
            ("pid", pid.clone()),
            ("service", "parks-test".to_string()),
            ("reason", reason.to_string()),
        ]
    };
    let value = |m: &Metrics, name: &str, reason: &str| {
        let l = labels(reason);
        let l: Vec<(&str, &str)> = l.iter().map(|(k, v)| (*k, v.as_str())).collect();
        m.get(name, &l).unwrap_or(0.0)
    };

    // Wait until gort has seen everything (events are drained every 20 ms, the parked set
    // read every second), then assert on one consistent scrape.
    let metrics = eventually(Duration::from_secs(15), || {
        let m = gort.metrics()?;
        for (reason, (count, _)) in &expected {
            let seen = value(&m, "gort_goroutine_blocks_total", reason) as u64;
            ensure!(seen >= *count, "{reason}: {seen} of {count} parks so far");
        }
        let goroutines = gort.get_json(&format!("/api/v1/goroutines?pid={pid}"))?;
        let (mut all_waiting, mut user_waiting) = (BTreeMap::new(), BTreeMap::new());
        for g in goroutines
            .as_array()
            .context("goroutines")?
            .iter()
            .filter(|g| g["state"] == "waiting")
        {
            let reason = g["reason"].as_str().context("reason")?.to_string();
            *all_waiting.entry(reason.clone()).or_insert(0u64) += 1;
            if g["system"] == false {
                *user_waiting.entry(reason).or_insert(0u64) += 1;
            }
        }
        ensure!(
            user_waiting == dump_waiting,
            "waiting: gort {user_waiting:?}, the runtime's dump {dump_waiting:?}"
        );
        for (reason, n) in &all_waiting {
            let seen = value(&m, "gort_goroutines_blocked", reason) as u64;
            ensure!(seen == *n, "{reason}: gauge {seen}, {n} goroutines waiting");
        }
        let seen = m
            .get("gort_sched_latency_seconds_count", &[("pid", &pid)])
            .unwrap_or(0.0);
        ensure!(
            seen >= sched.total as f64,
            "sched latency: {seen} samples of {} so far",
            sched.total
        );
        Ok(m)
    })?;
    check_sched_latency(&metrics, &pid, &sched)?;

    for (reason, (count, blocked_ns)) in &expected {
        let seen = value(&metrics, "gort_goroutine_blocks_total", reason) as u64;
        ensure!(
            seen == *count,
            "gort_goroutine_blocks_total{{reason={reason:?}}} = {seen}, the program parked {count} times"
        );
        let hist_count = value(
            &metrics,
            "gort_goroutine_block_duration_seconds_count",
            reason,
        ) as u64;
        ensure!(
            hist_count == *count,
            "histogram count {hist_count} != {count} for {reason}"
        );
        let seconds = value(&metrics, "gort_goroutine_blocked_seconds_total", reason);
        let want = *blocked_ns as f64 / 1e9;
        ensure!(
            seconds <= want && seconds >= least_blocked(want, *count),
            "gort_goroutine_blocked_seconds_total{{reason={reason:?}}} = {seconds}, the program measured {want} s"
        );
        let sum = value(
            &metrics,
            "gort_goroutine_block_duration_seconds_sum",
            reason,
        );
        ensure!(
            (sum - seconds).abs() < 1e-9,
            "histogram sum {sum} != counter {seconds}"
        );
    }
    for (cause, lost) in metrics.all("gort_events_lost_total", &[]) {
        ensure!(lost == 0.0, "events lost: {cause:?} = {lost}");
    }

    // Per goroutine: the program's goids, counts, times, blocking frame and origin.
    let goroutines = gort.get_json(&format!("/api/v1/goroutines?pid={pid}"))?;
    let by_goid: BTreeMap<u64, &Value> = goroutines
        .as_array()
        .context("goroutines")?
        .iter()
        .map(|g| (g["goid"].as_u64().unwrap_or(0), g))
        .collect();
    for w in report["workers"].as_array().context("workers")? {
        let goid = w["goid"].as_u64().context("goid")?;
        let kind = w["kind"].as_str().context("kind")?;
        let reason = &reasons[kind];
        let g = by_goid
            .get(&goid)
            .with_context(|| format!("gort has no goroutine {goid} ({kind})"))?;
        let blocking = g["blocking"].as_array().context("blocking")?;
        ensure!(
            blocking.len() == 1,
            "goroutine {goid} ({kind}) blocked for other reasons too: {blocking:?}"
        );
        let b = &blocking[0];
        ensure!(
            b["reason"] == reason.as_str(),
            "goroutine {goid}: reason {} != {reason}",
            b["reason"]
        );
        ensure!(
            b["count"] == w["count"],
            "goroutine {goid} ({kind}): count {} != {}",
            b["count"],
            w["count"]
        );
        let (got, want) = (
            b["blocked_ns"].as_f64().unwrap_or(0.0),
            w["blocked_ns"].as_f64().unwrap_or(0.0),
        );
        ensure!(
            got <= want && got >= least_blocked(want / 1e9, w["count"].as_u64().unwrap_or(0)) * 1e9,
            "goroutine {goid} ({kind}): blocked {got} ns, program {want} ns"
        );
        // Each operation as the program times it is its park plus the code around it, so the
        // program's longest operation exceeds gort's longest park by at most the sum of
        // those extras, which is the difference of the totals.
        let extras = want - got;
        let (got, want) = (
            b["max_ns"].as_f64().unwrap_or(0.0),
            w["max_ns"].as_f64().unwrap_or(0.0),
        );
        ensure!(
            got <= want && want - got <= extras,
            "goroutine {goid} ({kind}): max {got} ns, program {want} ns (extras {extras} ns)"
        );
        let frame = &b["max_frame"];
        ensure!(
            frame["file"] == w["block_site"]["file"] && frame["line"] == w["block_site"]["line"],
            "goroutine {goid} ({kind}): blocking frame {frame} != {}",
            w["block_site"]
        );
        ensure!(
            g["created_by"] == w["created_by"],
            "goroutine {goid}: created_by {} != {}",
            g["created_by"],
            w["created_by"]
        );
        ensure!(
            g["start_function"] == w["start_function"],
            "goroutine {goid}: start_function {} != {}",
            g["start_function"],
            w["start_function"]
        );
    }
    // The goroutines parked for good: gort's state agrees with the runtime's own dump.
    for p in report["parked"].as_array().context("parked")? {
        let goid = p["goid"].as_u64().context("goid")?;
        let g = by_goid
            .get(&goid)
            .with_context(|| format!("gort has no parked goroutine {goid} ({})", p["kind"]))?;
        ensure!(
            g["state"] == "waiting" && g["reason"] == p["reason"],
            "goroutine {goid}: gort says {} {}, the runtime says {}",
            g["state"],
            g["reason"],
            p["reason"]
        );
    }

    program.finish()?;
    // Once the target exits, gort keeps serving what it measured.
    let after = eventually(Duration::from_secs(10), || {
        let procs = gort.get_json("/api/v1/processes")?;
        ensure!(
            procs[0]["state"] == "exited",
            "process state {}",
            procs[0]["state"]
        );
        gort.metrics()
    })?;
    for (reason, (count, _)) in &expected {
        let seen = value(&after, "gort_goroutine_blocks_total", reason) as u64;
        ensure!(seen == *count, "after exit: {reason} {seen} != {count}");
    }
    ensure!(
        after.get("gort_target_up", &[("pid", &pid)]) == Some(0.0),
        "gort_target_up should be 0 after exit"
    );
    gort.stop()?;
    Ok(())
}

/// runtime/metrics' `/sched/latencies:seconds` as the program read it.
struct RuntimeHistogram {
    /// (upper bound in ns, None for +Inf; count).
    buckets: Vec<(Option<u64>, u64)>,
    total: u64,
}

impl RuntimeHistogram {
    fn from_report(h: &Value) -> Result<RuntimeHistogram> {
        let counts: Vec<u64> = serde_json::from_value(h["counts"].clone())?;
        let bounds: Vec<Option<f64>> = serde_json::from_value(h["buckets"].clone())?;
        ensure!(bounds.len() == counts.len() + 1, "malformed histogram");
        let buckets: Vec<(Option<u64>, u64)> = counts
            .iter()
            .enumerate()
            .map(|(i, &c)| (bounds[i + 1].map(|b| (b * 1e9).round() as u64), c))
            .collect();
        Ok(RuntimeHistogram {
            total: counts.iter().sum(),
            buckets,
        })
    }

    /// Samples below `le_ns` (cumulative, as Prometheus buckets are).
    fn cumulative(&self, le_ns: Option<u64>) -> u64 {
        self.buckets
            .iter()
            .filter(|(upper, _)| match (upper, le_ns) {
                (_, None) => true,
                (None, Some(_)) => false,
                (Some(u), Some(le)) => *u <= le,
            })
            .map(|(_, c)| c)
            .sum()
    }
}

/// gort reads the runtime's own scheduling-latency histogram: bucket for bucket it must hold
/// what the program read through runtime/metrics, plus only the few samples recorded since.
fn check_sched_latency(metrics: &Metrics, pid: &str, program: &RuntimeHistogram) -> Result<()> {
    // Stripped binaries too: runtime.sched is then found in the code of runtime.newproc1.
    let count = metrics
        .get("gort_sched_latency_seconds_count", &[("pid", pid)])
        .context("gort_sched_latency_seconds missing")? as u64;
    ensure!(
        program.total > 0,
        "the program recorded no scheduling latency"
    );
    let since = count
        .checked_sub(program.total)
        .context("gort has fewer samples than the program read")?;
    ensure!(
        since <= 32,
        "gort has {count} samples, the program read {}: too many since",
        program.total
    );
    let buckets = metrics.all("gort_sched_latency_seconds_bucket", &[("pid", pid)]);
    ensure!(buckets.len() == 16, "{} buckets", buckets.len());
    for (labels, cumulative) in buckets {
        let le = match labels["le"].as_str() {
            "+Inf" => None,
            s => Some((s.parse::<f64>()? * 1e9).round() as u64),
        };
        let want = program.cumulative(le);
        let got = cumulative as u64;
        ensure!(
            got >= want && got - want <= since,
            "bucket le={le:?}: gort {got}, runtime/metrics {want}"
        );
    }
    Ok(())
}

#[test]
fn go1_22() {
    check_parks("1.22.10", Variant::DEFAULT);
}

#[test]
fn go1_22_pie_stripped() {
    check_parks("1.22.10", Variant::PIE_STRIPPED);
}

#[test]
fn go1_27() {
    check_parks("1.27.3", Variant::DEFAULT);
}

#[test]
fn go1_27_pie() {
    check_parks("1.27.3", Variant::PIE);
}

#[test]
fn go1_27_stripped() {
    check_parks("1.27.3", Variant::STRIPPED);
}

#[test]
fn go1_21() {
    check_parks("1.21.13", Variant::DEFAULT);
}

#[test]
fn go1_23_stripped() {
    check_parks("1.23.9", Variant::STRIPPED);
}

#[test]
fn go1_24_pie() {
    check_parks("1.24.11", Variant::PIE);
}

#[test]
fn go1_25() {
    check_parks("1.25.5", Variant::DEFAULT);
}

#[test]
fn go1_26_pie_stripped() {
    check_parks("1.26.6", Variant::PIE_STRIPPED);
}
