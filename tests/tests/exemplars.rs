//! Exemplars on `gort_goroutine_block_duration_seconds`, scraped by a real Prometheus (the
//! Debian package, exemplar storage on): each bucket that saw a block inside a traced request
//! carries the newest such block's trace id and span id, its duration and when it ended; the
//! trace and span are the request's, as /api/v1/requests and OTLP show them.

use std::{
    collections::BTreeMap,
    time::{Duration, SystemTime, UNIX_EPOCH},
};

use anyhow::{Context, Result, ensure};
use gort_e2e::{GoProgram, Gort, Prometheus, Variant, build_go_program, eventually, serial};
use serde_json::Value;

const REQUESTS: usize = 40;

/// `# {trace_id="..",span_id=".."} value timestamp` of the bucket lines of `/metrics`:
/// (reason, le) → (trace_id, span_id, value, timestamp).
fn exemplars(text: &str) -> BTreeMap<(String, String), (String, String, f64, f64)> {
    let label = |s: &str, name: &str| -> Option<String> {
        let start = s.find(&format!("{name}=\""))? + name.len() + 2;
        Some(s[start..].split('"').next()?.to_string())
    };
    text.lines()
        .filter(|l| l.starts_with("gort_goroutine_block_duration_seconds_bucket{"))
        .filter_map(|l| {
            let (series, exemplar) = l.split_once(" # ")?;
            let mut rest = exemplar.rsplit(' ');
            let ts: f64 = rest.next()?.parse().ok()?;
            let value: f64 = rest.next()?.parse().ok()?;
            Some((
                (label(series, "reason")?, label(series, "le")?),
                (
                    label(exemplar, "trace_id")?,
                    label(exemplar, "span_id")?,
                    value,
                    ts,
                ),
            ))
        })
        .collect()
}

#[test]
fn exemplars_scraped_by_prometheus() {
    let _serial = serial();
    run().unwrap_or_else(|e| panic!("{e:#}"));
}

fn run() -> Result<()> {
    let exe = build_go_program("httpserver", "1.27.3", Variant::DEFAULT);
    let mut program = GoProgram::start(
        &exe,
        &["-requests", &REQUESTS.to_string(), "-conns", "4"],
        &[],
    )?;
    let pid = program.pid.to_string();
    let gort = Gort::attach(program.pid, &[])?;
    let prometheus = Prometheus::start(gort.base.trim_start_matches("http://"))?;
    let started = SystemTime::now().duration_since(UNIX_EPOCH)?.as_secs_f64();
    program.proceed()?;
    let report = program.read_json()?;
    let sent = report["requests"].as_array().context("requests")?.clone();
    let records: Vec<Value> = eventually(Duration::from_secs(10), || {
        let v: Vec<Value> =
            serde_json::from_value(gort.get_json(&format!("/api/v1/requests?pid={pid}"))?)?;
        ensure!(v.len() == REQUESTS, "{} of {REQUESTS} requests", v.len());
        Ok(v)
    })?;

    let text = gort.get("/metrics")?;
    let found = exemplars(&text);
    // Every handler blocks about 10 ms in `sleep` and in `chan receive`: both buckets
    // (0.01, 0.025] carry an exemplar.
    for reason in ["sleep", "chan receive"] {
        ensure!(
            found.contains_key(&(reason.to_string(), "0.025".to_string())),
            "no exemplar for {reason} in {found:?}"
        );
    }
    let bounds: Vec<f64> = [0.0]
        .into_iter()
        .chain(
            text.lines()
                .filter(|l| l.starts_with("gort_goroutine_block_duration_seconds_bucket{"))
                .filter_map(|l| l.split("le=\"").nth(1)?.split('"').next()?.parse().ok()),
        )
        .collect();
    for ((reason, le), (trace_id, span_id, value, ts)) in &found {
        // A traced request's span, exactly.
        let record = records
            .iter()
            .find(|r| r["trace_id"] == trace_id.as_str())
            .with_context(|| format!("exemplar trace {trace_id} is no request's"))?;
        ensure!(
            record["span_id"] == span_id.as_str(),
            "exemplar span {span_id} for {record}"
        );
        // Its value lies in its bucket, and it is the request's block of that reason.
        let le: f64 = le.parse().unwrap_or(f64::INFINITY);
        let lower = bounds
            .iter()
            .copied()
            .filter(|&b| b < le)
            .fold(0.0, f64::max);
        ensure!(
            lower < *value && *value <= le,
            "exemplar {value} s in bucket ({lower}, {le}]"
        );
        let blocked = record["blocking"]
            .as_array()
            .and_then(|b| b.iter().find(|x| x["reason"] == reason.as_str()))
            .and_then(|x| x["blocked_ns"].as_f64())
            .context("the request has no block of that reason")?;
        ensure!(
            *value * 1e9 <= blocked + 1.0,
            "exemplar {value} s longer than the request's {reason} blocking ({blocked} ns)"
        );
        ensure!(
            *ts >= started && *ts <= record["end_unix_ns"].as_f64().unwrap_or(0.0) / 1e9 + 0.001,
            "exemplar time {ts}"
        );
    }
    // The newest: `chan receive` is each handler's last park, so its exemplar is the request
    // that ended last (or one ending within a millisecond of it).
    let last_end = records
        .iter()
        .filter_map(|r| r["end_unix_ns"].as_f64())
        .fold(0.0, f64::max);
    let (trace_id, ..) = &found[&("chan receive".to_string(), "0.025".to_string())];
    let latest: Vec<&Value> = records
        .iter()
        .filter(|r| r["end_unix_ns"].as_f64().unwrap_or(0.0) >= last_end - 1e6)
        .collect();
    ensure!(
        latest.iter().any(|r| r["trace_id"] == trace_id.as_str()),
        "chan receive exemplar {trace_id}, requests that ended last: {latest:?}"
    );
    // Only requests the caller sampled or gort traced itself.
    let valid: Vec<&str> = sent.iter().filter_map(|s| s["trace_id"].as_str()).collect();
    for (trace_id, ..) in found.values() {
        let r = records
            .iter()
            .find(|r| r["trace_id"] == trace_id.as_str())
            .context("record")?;
        ensure!(
            valid.contains(&trace_id.as_str()) || r["trace_id_generated"] == true,
            "exemplar of {r}"
        );
    }

    // Prometheus scrapes the OpenMetrics text, stores the exemplars, and sees the same counts.
    let (want_trace, ..) = found[&("sleep".to_string(), "0.025".to_string())].clone();
    eventually(Duration::from_secs(20), || {
        let now = SystemTime::now().duration_since(UNIX_EPOCH)?.as_secs_f64();
        let data = prometheus.api(
            "/api/v1/query_exemplars",
            &[
                (
                    "query",
                    &format!(
                        "gort_goroutine_block_duration_seconds_bucket{{pid=\"{pid}\",reason=\"sleep\",le=\"0.025\"}}"
                    ),
                ),
                ("start", &format!("{}", started - 5.0)),
                ("end", &format!("{}", now + 5.0)),
            ],
        )?;
        let traces: Vec<String> = data
            .as_array()
            .into_iter()
            .flatten()
            .flat_map(|series| series["exemplars"].as_array().cloned().unwrap_or_default())
            .filter_map(|e| e["labels"]["trace_id"].as_str().map(str::to_string))
            .collect();
        ensure!(
            traces.contains(&want_trace),
            "Prometheus holds exemplars {traces:?}, not {want_trace}"
        );
        let data = prometheus.api(
            "/api/v1/query",
            &[(
                "query",
                &format!(
                    "gort_goroutine_block_duration_seconds_count{{pid=\"{pid}\",reason=\"chan receive\"}}"
                ),
            )],
        )?;
        let scraped: f64 = data["result"][0]["value"][1]
            .as_str()
            .context("no sample yet")?
            .parse()?;
        let ours = gort
            .metrics()?
            .get(
                "gort_goroutine_block_duration_seconds_count",
                &[("pid", &pid), ("reason", "chan receive")],
            )
            .context("count")?;
        ensure!(scraped == ours, "Prometheus has {scraped}, gort {ours}");
        let up = prometheus.api("/api/v1/query", &[("query", "up{job=\"gort\"}")])?;
        ensure!(up["result"][0]["value"][1] == "1", "up {up}");
        Ok(())
    })?;
    program.finish()?;
    gort.stop()?;
    Ok(())
}
