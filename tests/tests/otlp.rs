//! OTLP export checked by an independent receiver (`tests/otlp/receiver.py`: Python, the
//! official protobuf definitions of PyPI's `opentelemetry-proto`, grpcio): the HTTP test server
//! of `requests.rs` serves requests with known `traceparent` values while gort exports over
//! gRPC or HTTP/protobuf. Every request arrives as a server span in the caller's trace, child
//! of the caller's span, with a child span per block of the handler; the metrics arrive with
//! their names, resource attributes and the values /metrics shows. With the receiver down,
//! gort keeps serving, keeps a bounded queue, counts what it drops, and delivers the rest once
//! the receiver is up.

use std::{collections::BTreeMap, time::Duration};

use anyhow::{Context, Result, ensure};
use gort_e2e::{
    GoProgram, Gort, OtlpReceiver, PodCgroup, Variant, build_go_program, eventually, free_port,
    serial,
};
use serde_json::Value;

const REQUESTS: usize = 40;

fn hostname() -> String {
    std::fs::read_to_string("/proc/sys/kernel/hostname")
        .unwrap_or_default()
        .trim()
        .to_string()
}

const POD_UID: &str = "1f2e3d4c-5b6a-7980-a1b2-c3d4e5f60718";
const CONTAINER_ID: &str = "3f1d2c4b5a69788776655443322110ffeeddccbbaa99887766554433221100aa";

fn check(go_version: &str, protocol: &str) {
    let _serial = serial();
    run(go_version, protocol).unwrap_or_else(|e| panic!("Go {go_version} {protocol}: {e:#}"));
}

fn run(go_version: &str, protocol: &str) -> Result<()> {
    let receiver = OtlpReceiver::start(0, 0)?;
    let endpoint = match protocol {
        "grpc" => format!("http://127.0.0.1:{}", receiver.grpc_port),
        _ => format!("http://127.0.0.1:{}", receiver.http_port),
    };
    let exe = build_go_program("httpserver", go_version, Variant::DEFAULT);
    let mut program = GoProgram::start(
        &exe,
        &["-requests", &REQUESTS.to_string(), "-conns", "4"],
        &[("OTEL_SERVICE_NAME", "checkout")],
    )?;
    let pid = program.pid.to_string();
    // Over gRPC, the program runs in a pod's cgroup.
    let pod = (protocol == "grpc")
        .then(|| PodCgroup::enter(program.pid, POD_UID, CONTAINER_ID))
        .transpose()?;
    let mut args = vec![
        "--pid",
        &pid,
        "--otlp-endpoint",
        &endpoint,
        "--otlp-protocol",
        protocol,
        "--otlp-header",
        "x-tenant=t1",
    ];
    // Over gRPC, under a budget it stays within: the estimates ride along, equal to the counts.
    let budgeted = protocol == "grpc";
    if budgeted {
        args.extend(["--overhead-budget", "100%"]);
    }
    let gort = Gort::start_with_env(
        &args,
        &[
            // Over HTTP, every 10 minutes: the only metrics export is the one at shutdown.
            (
                "OTEL_METRIC_EXPORT_INTERVAL",
                if protocol == "grpc" { "500" } else { "600000" },
            ),
            (
                "OTEL_EXPORTER_OTLP_HEADERS",
                "authorization=Bearer%20s3cret",
            ),
        ],
    )?;
    program.proceed()?;
    let report = program.read_json()?;
    let sent = report["requests"].as_array().context("requests")?.clone();
    let records: Vec<Value> = eventually(Duration::from_secs(10), || {
        let v: Vec<Value> =
            serde_json::from_value(gort.get_json(&format!("/api/v1/requests?pid={pid}"))?)?;
        ensure!(v.len() == REQUESTS, "{} of {REQUESTS} requests", v.len());
        Ok(v)
    })?;

    // Spans: one server span per request, and one child per block (all are 10 ms, beyond the
    // default --span-min-block of 1 ms).
    let spans = eventually(Duration::from_secs(15), || {
        let spans = receiver.spans();
        let servers = spans.iter().filter(|s| s["kind"] == 2).count();
        ensure!(servers == REQUESTS, "{servers} server spans so far");
        Ok(spans)
    })?;
    for e in receiver.received() {
        ensure!(
            e["transport"] == if protocol == "grpc" { "grpc" } else { "http" },
            "sent over {}",
            e["transport"]
        );
        ensure!(
            e["headers"]["x-tenant"] == "t1" && e["headers"]["authorization"] == "Bearer s3cret",
            "headers {}",
            e["headers"]
        );
    }
    let host = hostname();
    let exe_name = exe.file_name().context("exe name")?.to_string_lossy();
    for s in &spans {
        let r = &s["resource"];
        ensure!(
            r["service.name"] == "checkout"
                && r["process.pid"].as_u64() == Some(u64::from(program.pid))
                && r["process.executable.name"] == exe_name.as_ref()
                && r["host.name"] == host.as_str(),
            "resource {r}"
        );
        if pod.is_some() {
            ensure!(
                r["container.id"] == CONTAINER_ID && r["k8s.pod.uid"] == POD_UID,
                "resource {r}"
            );
        } else {
            ensure!(r.get("container.id").is_none(), "resource {r}");
        }
    }
    let want_name = if go_version.starts_with("1.22.") {
        "GET"
    } else {
        "GET /work/"
    };
    for s in sent.iter().filter(|s| s["kind"] == "valid") {
        let trace_id = s["trace_id"].as_str().context("trace id")?;
        let handled = &s["handled"];
        let in_trace: Vec<&Value> = spans.iter().filter(|x| x["trace_id"] == trace_id).collect();
        let server: Vec<&&Value> = in_trace.iter().filter(|x| x["kind"] == 2).collect();
        ensure!(
            server.len() == 1,
            "trace {trace_id}: {} server spans",
            server.len()
        );
        let server = server[0];
        let record = records
            .iter()
            .find(|r| r["trace_id"] == trace_id)
            .context("record")?;
        ensure!(
            server["parent_span_id"] == s["parent_span_id"]
                && server["span_id"] == record["span_id"]
                && server["name"] == want_name
                && server["flags"] == 0x301
                && server["start"] == record["start_unix_ns"]
                && server["end"] == record["end_unix_ns"],
            "trace {trace_id}: server span {server}, record {record}"
        );
        let attrs = &server["attributes"];
        ensure!(
            attrs["gort.blocked.ns"] == record["blocked_ns"]
                && attrs["gort.goroutine.id"] == handled["goid"]
                && attrs["gort.blocked.sleep.count"] == handled["sleeps"]
                && attrs["gort.blocked.chan_receive.count"] == handled["receives"]
                && attrs["gort.trace_id_generated"] == false,
            "trace {trace_id}: attributes {attrs}"
        );
        let blocks: Vec<&&Value> = in_trace.iter().filter(|x| x["kind"] == 1).collect();
        let count = |name: &str| blocks.iter().filter(|b| b["name"] == name).count() as u64;
        ensure!(
            Some(count("block sleep")) == handled["sleeps"].as_u64()
                && Some(count("block chan receive")) == handled["receives"].as_u64()
                && blocks.len() as u64
                    == handled["sleeps"].as_u64().unwrap_or(0)
                        + handled["receives"].as_u64().unwrap_or(0),
            "trace {trace_id}: block spans {blocks:?}"
        );
        // Each reason's spans lie inside the intervals the handler measured around its parks
        // of that reason (a fixed floor under 10 ms would not hold: the OS can take a thread
        // between the clock read that starts a wait and the park).
        for (name, field) in [
            ("block sleep", "sleep_ns"),
            ("block chan receive", "receive_ns"),
        ] {
            let spans_ns: u64 = blocks
                .iter()
                .filter(|b| b["name"] == name)
                .map(|b| b["end"].as_u64().unwrap_or(0) - b["start"].as_u64().unwrap_or(0))
                .sum();
            let measured = handled[field].as_u64().unwrap_or(0);
            ensure!(
                spans_ns <= measured,
                "trace {trace_id}: {name} spans last {spans_ns} ns, the handler measured {measured} ns"
            );
        }
        let mut blocked = 0;
        for b in &blocks {
            let (start, end) = (
                b["start"].as_u64().unwrap_or(0),
                b["end"].as_u64().unwrap_or(0),
            );
            blocked += end - start;
            ensure!(
                b["parent_span_id"] == server["span_id"]
                    && b["span_id"].as_str().is_some_and(|id| id.len() == 16)
                    && start >= server["start"].as_u64().unwrap_or(u64::MAX)
                    && end <= server["end"].as_u64().unwrap_or(0)
                    && end - start >= 1_000_000 // --span-min-block
                    && b["attributes"]["code.function.name"]
                        .as_str()
                        .is_some_and(|f| f.starts_with("main.work")),
                "trace {trace_id}: block span {b}"
            );
        }
        // The block spans add up to the blocked time of the handler's parks (each is one park;
        // a short park of another kind, under --span-min-block, has no span).
        let want: u64 = record["blocking"]
            .as_array()
            .context("blocking")?
            .iter()
            .filter(|b| b["reason"] == "sleep" || b["reason"] == "chan receive")
            .filter_map(|b| b["blocked_ns"].as_u64())
            .sum();
        ensure!(
            blocked.abs_diff(want) <= blocks.len() as u64,
            "trace {trace_id}: block spans add up to {blocked} ns, the request blocked {want} ns: {record}"
        );
    }
    // Requests without a usable traceparent: a root span in a trace id gort made up.
    let generated = spans
        .iter()
        .filter(|s| s["kind"] == 2 && s["attributes"]["gort.trace_id_generated"] == true)
        .collect::<Vec<_>>();
    let want_generated = records
        .iter()
        .filter(|r| r["trace_id_generated"] == true)
        .count();
    ensure!(
        generated.len() == want_generated
            && want_generated >= sent.iter().filter(|s| s["kind"] == "none").count()
            && generated
                .iter()
                .all(|s| s["parent_span_id"] == "" && s["flags"] == 0x101),
        "generated: {generated:?}"
    );

    // Metrics: once the program is idle, an export carries what /metrics shows.
    std::thread::sleep(Duration::from_secs(1));
    let prom = gort.metrics()?;
    ensure!(
        prom.get("gort_export_sent_total", &[("signal", "traces")]) == Some(REQUESTS as f64)
            && prom.get("gort_export_dropped_total", &[("signal", "traces")]) == Some(0.0)
            && prom.get("gort_export_dropped_total", &[("signal", "metrics")]) == Some(0.0),
        "export counters"
    );
    let since = receiver.received().len();
    let mut gort = Some(gort);
    let metrics = if protocol == "grpc" {
        eventually(Duration::from_secs(10), || {
            let exports = receiver.received();
            let m = exports[since.min(exports.len())..]
                .iter()
                .rfind(|e| e["signal"] == "metrics")
                .context("no metrics export yet")?;
            Ok(m.clone())
        })?
    } else {
        let metrics_exports = || {
            receiver
                .received()
                .into_iter()
                .filter(|e| e["signal"] == "metrics")
                .collect::<Vec<_>>()
        };
        ensure!(metrics_exports().is_empty(), "metrics exported early");
        gort.take().context("gort")?.stop()?;
        let exports = metrics_exports();
        ensure!(
            exports.len() == 1,
            "{} metrics exports at shutdown",
            exports.len()
        );
        exports[0].clone()
    };
    let resource = &metrics["resources"][0];
    ensure!(
        resource["resource"]["service.name"] == "checkout"
            && resource["resource"]["process.pid"].as_u64() == Some(u64::from(program.pid)),
        "metrics resource {}",
        resource["resource"]
    );
    let by_name: BTreeMap<String, Value> = resource["scopes"][0]["metrics"]
        .as_array()
        .context("metrics")?
        .iter()
        .map(|m| (m["name"].as_str().unwrap_or("").to_string(), m.clone()))
        .collect();
    let point = |name: &str, key: &str, value: &str| -> Option<Value> {
        by_name.get(name)?["points"]
            .as_array()?
            .iter()
            .find(|p| key.is_empty() || p["attributes"][key] == value)
            .cloned()
    };
    for name in [
        "go.goroutine.count",
        "go.schedule.duration",
        "gort.goroutine.blocks",
        "gort.goroutine.blocked.time",
        "gort.goroutine.block.duration",
        "gort.goroutines.blocked",
        "gort.gc.cycles",
        "gort.stw.pause.duration",
        "gort.goroutines.created",
        "gort.http.requests",
        "gort.traceparent.invalid",
    ] {
        ensure!(
            by_name.contains_key(name),
            "no {name} in {:?}",
            by_name.keys()
        );
    }
    let value = |name: &str, key: &str, v: &str| {
        point(name, key, v).and_then(|p| p["value"].as_f64().or(p["count"].as_f64()))
    };
    ensure!(
        value("gort.http.requests", "", "") == Some(REQUESTS as f64),
        "gort.http.requests {:?}",
        point("gort.http.requests", "", "")
    );
    let invalid = sent.iter().filter(|s| s["kind"] == "invalid").count() as f64;
    ensure!(value("gort.traceparent.invalid", "", "") == Some(invalid));
    let handler_sleeps: u64 = sent
        .iter()
        .map(|s| s["handled"]["sleeps"].as_u64().unwrap_or(0))
        .sum();
    let sleeps = value("gort.goroutine.blocks", "go.wait.reason", "sleep").unwrap_or(0.0);
    ensure!(
        sleeps >= (handler_sleeps + REQUESTS as u64) as f64,
        "{sleeps} sleeps exported; the handlers slept {handler_sleeps} times and the \
         goroutines that woke them {REQUESTS} times"
    );
    // The same numbers as /metrics (the program is idle: nothing changes between the two).
    for (otlp, prom_name, reason) in [
        (
            "gort.goroutine.blocks",
            "gort_goroutine_blocks_total",
            "sleep",
        ),
        (
            "gort.goroutine.blocks",
            "gort_goroutine_blocks_total",
            "chan receive",
        ),
    ] {
        let want = prom.get(prom_name, &[("pid", &pid), ("reason", reason)]);
        let got = value(otlp, "go.wait.reason", reason);
        ensure!(
            got == want,
            "{otlp}{{{reason}}}: OTLP {got:?}, /metrics {want:?}"
        );
    }
    if budgeted {
        ensure!(
            value("gort.http.requests.estimated", "", "") == Some(REQUESTS as f64),
            "gort.http.requests.estimated {:?}",
            point("gort.http.requests.estimated", "", "")
        );
        for reason in ["sleep", "chan receive"] {
            let want = prom.get(
                "gort_goroutine_blocks_estimated_total",
                &[("pid", &pid), ("reason", reason)],
            );
            let got = value("gort.goroutine.blocks.estimated", "go.wait.reason", reason);
            ensure!(
                want.is_some() && got == want,
                "estimated {reason}: OTLP {got:?}, /metrics {want:?}"
            );
        }
        ensure!(value("gort.sampling.ratio", "", "") == Some(1.0));
    }
    let user = value("go.goroutine.count", "gort.goroutine.kind", "user");
    let want_user = prom.get("gort_goroutines", &[("pid", &pid), ("kind", "user")]);
    ensure!(
        user == want_user,
        "goroutines: OTLP {user:?}, /metrics {want_user:?}"
    );
    let hist = point(
        "gort.goroutine.block.duration",
        "go.wait.reason",
        "chan receive",
    )
    .context("chan receive histogram")?;
    let counts: Vec<u64> = hist["bucket_counts"]
        .as_array()
        .context("bucket counts")?
        .iter()
        .filter_map(Value::as_u64)
        .collect();
    ensure!(
        counts.len() == hist["explicit_bounds"].as_array().map_or(0, Vec::len) + 1
            && counts.iter().sum::<u64>() == hist["count"].as_u64().unwrap_or(u64::MAX),
        "histogram {hist}"
    );

    program.finish()?;
    if let Some(gort) = gort {
        gort.stop()?;
    }
    drop(pod);
    Ok(())
}

#[test]
fn grpc_go1_27() {
    check("1.27.3", "grpc");
}

#[test]
fn http_protobuf_go1_22() {
    check("1.22.10", "http/protobuf");
}

/// The receiver is down: gort keeps measuring and serving, keeps the newest requests up to
/// --otlp-max-queue, counts the rest as dropped, and sends what it kept once the receiver is up.
#[test]
fn receiver_down_then_up() {
    let _serial = serial();
    down_then_up().unwrap_or_else(|e| panic!("{e:#}"));
}

fn down_then_up() -> Result<()> {
    const N: usize = 20;
    const QUEUE: usize = 5;
    let port = free_port()?;
    let exe = build_go_program("httpserver", "1.27.3", Variant::DEFAULT);
    let mut program = GoProgram::start(&exe, &["-requests", &N.to_string(), "-conns", "2"], &[])?;
    let pid = program.pid.to_string();
    let gort = Gort::start_with_env(
        &[
            "--pid",
            &pid,
            "--otlp-endpoint",
            &format!("http://127.0.0.1:{port}"),
            "--otlp-max-queue",
            &QUEUE.to_string(),
        ],
        &[
            ("OTEL_METRIC_EXPORT_INTERVAL", "300"),
            ("OTEL_EXPORTER_OTLP_TIMEOUT", "1000"),
        ],
    )?;
    program.proceed()?;
    program.read_json()?;
    let records: Vec<Value> = eventually(Duration::from_secs(10), || {
        let v: Vec<Value> =
            serde_json::from_value(gort.get_json(&format!("/api/v1/requests?pid={pid}"))?)?;
        ensure!(v.len() == N, "{} of {N} requests", v.len());
        Ok(v)
    })?;
    // Still measuring and serving; the oldest beyond the queue dropped, metrics exports failing.
    eventually(Duration::from_secs(10), || {
        let m = gort.metrics()?;
        ensure!(
            m.get("gort_http_requests_total", &[("pid", &pid)]) == Some(N as f64),
            "requests"
        );
        ensure!(
            m.get("gort_export_dropped_total", &[("signal", "traces")]) == Some((N - QUEUE) as f64),
            "dropped {:?}",
            m.get("gort_export_dropped_total", &[("signal", "traces")])
        );
        ensure!(
            m.get("gort_export_dropped_total", &[("signal", "metrics")])
                .is_some_and(|n| n >= 2.0),
            "metrics exports dropped"
        );
        ensure!(
            m.get("gort_export_sent_total", &[("signal", "traces")]) == Some(0.0),
            "nothing sent"
        );
        Ok(())
    })?;

    let receiver = OtlpReceiver::start(0, port)?;
    // Backoff is at most 30 s.
    let spans = eventually(Duration::from_secs(40), || {
        let s: Vec<Value> = receiver
            .spans()
            .into_iter()
            .filter(|s| s["kind"] == 2)
            .collect();
        ensure!(s.len() == QUEUE, "{} server spans", s.len());
        Ok(s)
    })?;
    // The newest QUEUE requests, by when they ended.
    let mut by_end: Vec<&Value> = records.iter().collect();
    by_end.sort_by_key(|r| r["end_unix_ns"].as_u64());
    let mut want: Vec<&str> = by_end[N - QUEUE..]
        .iter()
        .filter_map(|r| r["span_id"].as_str())
        .collect();
    let mut got: Vec<&str> = spans.iter().filter_map(|s| s["span_id"].as_str()).collect();
    want.sort();
    got.sort();
    ensure!(
        got == want,
        "spans sent {got:?}, the newest requests {want:?}"
    );
    let m = gort.metrics()?;
    ensure!(
        m.get("gort_export_sent_total", &[("signal", "traces")]) == Some(QUEUE as f64),
        "sent"
    );
    program.finish()?;
    gort.stop()?;
    Ok(())
}
