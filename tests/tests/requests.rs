//! HTTP requests linked to their trace ids: a net/http server whose handlers park for known
//! durations, and a client (in the same program) sending requests with known random
//! `traceparent` values over keep-alive connections, plus requests without one, with
//! malformed ones, and with hostile headers. Every request is found, with its trace id,
//! parent span id and goroutine exact and its blocked time within 2 % of what the handler
//! measured itself; nothing of the request but its trace context leaves the target.

use std::{collections::BTreeMap, time::Duration};

use anyhow::{Context, Result, ensure};
use gort_e2e::{GoProgram, Gort, Variant, build_go_program, eventually, serial};
use serde_json::Value;

const REQUESTS: usize = 60;
/// Requests whose handler panics (net/http recovers): never recorded, their panic carries
/// their trace id.
const PANICS: usize = 3;
/// What the handler parks on, and its field with the time it measured around those parks.
const REASONS: [(&str, &str); 2] = [("sleep", "sleep_ns"), ("chan receive", "receive_ns")];

fn check(go_version: &str, variant: Variant) {
    let _serial = serial();
    run(go_version, variant).unwrap_or_else(|e| panic!("Go {go_version} {variant:?}: {e:#}"));
}

fn run(go_version: &str, variant: Variant) -> Result<()> {
    let exe = build_go_program("httpserver", go_version, variant);
    let mut program = GoProgram::start(
        &exe,
        &[
            "-requests",
            &REQUESTS.to_string(),
            "-conns",
            "4",
            "-panics",
            &PANICS.to_string(),
        ],
        &[],
    )?;
    let pid = program.pid.to_string();
    let gort = Gort::attach(program.pid, &[])?;
    program.proceed()?;
    let report = program.read_json()?;
    let sent = report["requests"].as_array().context("requests")?.clone();
    ensure!(sent.len() == REQUESTS, "{} sent", sent.len());

    let seen: Vec<Value> = eventually(Duration::from_secs(10), || {
        let v: Vec<Value> =
            serde_json::from_value(gort.get_json(&format!("/api/v1/requests?pid={pid}"))?)?;
        ensure!(
            v.len() == REQUESTS,
            "{} of {REQUESTS} requests so far",
            v.len()
        );
        Ok(v)
    })?;
    let mut ratios = Vec::new();
    let (mut total_gort, mut total_program) = (0.0, 0.0);
    // Per reason, over all requests: (gort's blocked time, the handlers').
    let mut by_reason: BTreeMap<&str, (f64, f64)> = BTreeMap::new();
    for s in &sent {
        let handled = &s["handled"];
        ensure!(!handled.is_null(), "the program lost a request: {s}");
        match s["kind"].as_str().unwrap_or("") {
            "valid" => {
                let trace_id = s["trace_id"].as_str().context("trace id")?;
                let r: Vec<&Value> = seen.iter().filter(|r| r["trace_id"] == trace_id).collect();
                ensure!(r.len() == 1, "trace {trace_id}: {} requests seen", r.len());
                let r = r[0];
                ensure!(
                    r["parent_span_id"] == s["parent_span_id"],
                    "trace {trace_id}: parent {}",
                    r["parent_span_id"]
                );
                ensure!(
                    r["trace_id_generated"] == false && r["trace_flags"] == 1,
                    "trace {trace_id}: {r}"
                );
                ensure!(
                    r["goid"] == handled["goid"],
                    "trace {trace_id}: goroutine {} != {}",
                    r["goid"],
                    handled["goid"]
                );
                let (got, want) = (
                    r["blocked_ns"].as_f64().unwrap_or(0.0),
                    handled["blocked_ns"].as_f64().unwrap_or(1.0),
                );
                ensure!(
                    got <= want,
                    "trace {trace_id}: gort {got} ns blocked, the handler measured {want} ns"
                );
                // Each park lies inside the interval the handler measured around it, so gort's
                // time for a reason can only be below the handler's for it. Below, it can be
                // only by what the OS took outside the parks (checked over all requests below),
                // not by a fixed slack: in one CI run a handler's thread lost 1.6 ms between
                // starting the sender and parking on its receive.
                // The record's blocking entry for a reason.
                let of_reason = |reason: &str| {
                    r["blocking"]
                        .as_array()
                        .and_then(|b| b.iter().find(|x| x["reason"] == reason))
                };
                for (reason, field) in REASONS {
                    let got = of_reason(reason)
                        .and_then(|x| x["blocked_ns"].as_f64())
                        .unwrap_or(0.0);
                    let want = handled[field].as_f64().unwrap_or(0.0);
                    ensure!(
                        got <= want,
                        "trace {trace_id}: gort {got} ns in {reason}, the handler measured \
                         {want} ns: {r}"
                    );
                    let sum = by_reason.entry(reason).or_default();
                    sum.0 += got;
                    sum.1 += want;
                }
                ratios.push(got / want);
                total_gort += got;
                total_program += want;
                let count = |reason: &str| of_reason(reason).map(|x| x["count"].clone());
                ensure!(
                    count("sleep") == Some(handled["sleeps"].clone()),
                    "trace {trace_id}: sleeps {r}"
                );
                ensure!(
                    count("chan receive") == Some(handled["receives"].clone()),
                    "trace {trace_id}: receives {r}"
                );
            }
            "none" | "invalid" => {
                // A trace id gort made up, flagged as such.
                let r: Vec<&Value> = seen
                    .iter()
                    .filter(|r| r["goid"] == handled["goid"] && r["trace_id_generated"] == true)
                    .collect();
                ensure!(!r.is_empty(), "no generated trace id for {s}");
            }
            _ => {} // hostile: checked below
        }
    }
    // One request's timing as the handler takes it can be stretched by the OS outside any park
    // (a descheduled thread on a busy 2-core machine; in one CI run four requests in a row
    // lost 1-2 ms so): the median request within 1 %, the sum within 2 %.
    let mut sorted = ratios.clone();
    sorted.sort_by(f64::total_cmp);
    let median = sorted[sorted.len() / 2];
    ensure!(
        median >= 0.99,
        "median request: gort {median:.4} of the handler's blocked time: {ratios:?}"
    );
    ensure!(
        total_gort >= 0.98 * total_program,
        "blocked in all: gort {total_gort} ns, handlers {total_program} ns; per request: {ratios:?}"
    );
    for (reason, (got, want)) in &by_reason {
        ensure!(
            *got >= 0.98 * want,
            "{reason} in all: gort {got} ns, handlers {want} ns"
        );
    }

    let m = gort.metrics()?;
    let invalid = sent.iter().filter(|s| s["kind"] == "invalid").count() as f64;
    ensure!(
        m.get("gort_traceparent_invalid_total", &[("pid", &pid)]) == Some(invalid),
        "invalid traceparents"
    );
    ensure!(
        m.get("gort_http_requests_total", &[("pid", &pid)]) == Some(REQUESTS as f64),
        "requests counted"
    );
    // Parks inside requests by reason: exactly what the handlers did, all requests together.
    for (reason, field) in [("sleep", "sleeps"), ("chan receive", "receives")] {
        let want: f64 = sent
            .iter()
            .map(|s| s["handled"][field].as_f64().unwrap_or(0.0))
            .sum();
        let labels = [("pid", pid.as_str()), ("reason", reason)];
        ensure!(
            m.get("gort_http_request_blocks_total", &labels) == Some(want),
            "{reason} parks in requests: {:?}, handlers did {want}",
            m.get("gort_http_request_blocks_total", &labels)
        );
        let blocked = m
            .get("gort_http_request_blocked_seconds_total", &labels)
            .unwrap_or(0.0);
        ensure!(blocked > 0.0, "{reason}: no blocked time");
    }
    // The hostile requests carry over 150 header fields, more than the probe walks: where
    // their traceparent was not among the fields walked, gort says so and made up an id;
    // where it was, the request is in its trace.
    let hostile: Vec<&Value> = sent.iter().filter(|s| s["kind"] == "hostile").collect();
    let missed = hostile
        .iter()
        .filter(|s| !seen.iter().any(|r| r["trace_id"] == s["trace_id"]))
        .count() as f64;
    ensure!(
        m.get("gort_http_headers_truncated_total", &[("pid", &pid)]) == Some(missed),
        "headers truncated: {:?}; traceparent not found in {missed} of {} hostile requests",
        m.get("gort_http_headers_truncated_total", &[("pid", &pid)]),
        hostile.len()
    );
    // Panicking handlers: the panic names the request's trace; the request, which never
    // returned, is counted as abandoned once its connection's goroutine is gone.
    let panicked = report["panicked"].as_array().context("panicked")?;
    ensure!(panicked.len() == PANICS, "{} panicked", panicked.len());
    let (panics, abandoned) = eventually(Duration::from_secs(10), || {
        let panics: Vec<Value> =
            serde_json::from_value(gort.get_json(&format!("/api/v1/panics?pid={pid}"))?)?;
        let abandoned = gort
            .metrics()?
            .get("gort_http_requests_abandoned_total", &[("pid", &pid)]);
        ensure!(
            abandoned == Some(PANICS as f64),
            "abandoned {abandoned:?}, panics {panics:?}"
        );
        Ok((panics, abandoned))
    })?;
    for want in panicked {
        let found: Vec<&Value> = panics
            .iter()
            .filter(|p| p["trace_id"] == want["trace_id"])
            .collect();
        ensure!(
            found.len() == 1
                && found[0]["goid"] == want["goid"]
                && found[0]["outcome"] == "recovered"
                && found[0]["message"] == "handler failed"
                && found[0]["span_id"].as_str().is_some_and(|s| s.len() == 16),
            "panic of {want}: {found:?} (abandoned {abandoned:?}; all panics: {panics:?})"
        );
    }
    ensure!(
        panics.len() == PANICS,
        "{} panics: {panics:?}",
        panics.len()
    );
    for (cause, lost) in m.all("gort_events_lost_total", &[]) {
        ensure!(lost == 0.0, "events lost: {cause:?} = {lost}");
    }
    // Only the trace context leaves the target: no cookie, no other header, no URL.
    let everything =
        gort.get("/api/v1/requests")? + &gort.get("/metrics")? + &gort.get("/api/v1/goroutines")?;
    let urls: Vec<String> = (0..REQUESTS).map(|i| format!("/work/{i}")).collect();
    let secrets = [
        "do-not-leak",
        "secret=",
        "X-Request-Id",
        "X-Junk",
        "jjjjjjjj",
        "hhhhhhhh",
    ];
    for secret in secrets
        .iter()
        .copied()
        .chain(urls.iter().map(String::as_str))
    {
        ensure!(
            !everything.contains(secret),
            "`{secret}` leaked out of the target"
        );
    }
    let routes: BTreeMap<String, usize> = seen.iter().fold(BTreeMap::new(), |mut m, r| {
        *m.entry(r["route"].as_str().unwrap_or("-").to_string())
            .or_default() += 1;
        m
    });
    // Request.Pattern exists since Go 1.23.
    let want_route = if go_version.starts_with("1.22.") {
        "-"
    } else {
        "/work/"
    };
    ensure!(
        routes.get(want_route) == Some(&REQUESTS),
        "routes {routes:?}"
    );
    program.finish()?;
    gort.stop()?;
    Ok(())
}

#[test]
fn go1_22() {
    check("1.22.10", Variant::DEFAULT);
}

#[test]
fn go1_27() {
    check("1.27.3", Variant::DEFAULT);
}

#[test]
fn go1_27_pie_stripped() {
    check("1.27.3", Variant::PIE_STRIPPED);
}

#[test]
fn go1_24_stripped() {
    check("1.24.11", Variant::STRIPPED);
}
