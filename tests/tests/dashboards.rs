//! The Grafana dashboards in `deploy/grafana/dashboards/`: a real Prometheus (Debian's)
//! scrapes `gort run --all` watching an HTTP server, a leaking program and a GC-heavy one;
//! every query of every panel runs against it through its HTTP API and must return data,
//! and every metric a panel or variable names must be one gort exports.
//!
//! gort runs with an `--overhead-budget` (as the DaemonSet does), of 100 %: it measures
//! everything (after a first period sampled at 10 %, before the work starts), and the panels read the estimates (`rate(x_estimated_total) or rate(x_total)`),
//! which must then equal the counts, and the same query without the estimates (gort without
//! a budget) must give the same. `budget.rs` has the dashboard under real sampling.

use std::{collections::BTreeSet, time::Duration};

use anyhow::{Context, Result, ensure};
use gort_e2e::{
    GoProgram, Gort, Prometheus, Variant, build_go_program, dashboard_queries, eventually,
    grafana_query, serial, workspace_root,
};
use serde_json::Value;

/// The query without its estimates: `rate(x_estimated…) or rate(x…)` becomes `rate(x…)`,
/// what gort without a budget is read with.
fn without_estimates(query: &str) -> String {
    let mut q = query.to_string();
    let mut from = 0;
    while let Some(at) = q[from..].find("rate(gort_") {
        let start = from + at;
        let name = q[start + "rate(".len()..]
            .split(['{', '['])
            .next()
            .unwrap_or("");
        match q[start..].find(") or rate(") {
            Some(or) if name.contains("_estimated_") => {
                q.replace_range(start..start + or + ") or ".len(), "");
            }
            _ => from = start + 1,
        }
    }
    q
}

/// `gort_...` metric names in a query.
fn metric_names(expr: &str) -> BTreeSet<String> {
    let mut out = BTreeSet::new();
    let bytes = expr.as_bytes();
    let mut i = 0;
    while let Some(at) = expr[i..].find("gort_") {
        let start = i + at;
        let mut end = start;
        while end < bytes.len() && (bytes[end].is_ascii_alphanumeric() || bytes[end] == b'_') {
            end += 1;
        }
        let before_ok =
            start == 0 || !(bytes[start - 1].is_ascii_alphanumeric() || bytes[start - 1] == b'_');
        if before_ok {
            out.insert(expr[start..end].to_string());
        }
        i = end;
    }
    out
}

#[test]
fn without_estimates_removes_the_estimated_alternative() {
    assert_eq!(
        without_estimates(
            "sum by (reason) (rate(gort_goroutine_blocks_estimated_total{a=~\"x\"}[2m]) or \
             rate(gort_goroutine_blocks_total{a=~\"x\"}[2m])) / sum (rate(gort_http_requests_estimated_total[1m]) or rate(gort_http_requests_total[1m]))"
        ),
        "sum by (reason) (rate(gort_goroutine_blocks_total{a=~\"x\"}[2m])) / sum (rate(gort_http_requests_total[1m]))"
    );
}

#[test]
fn every_panel_query_returns_data() {
    let _serial = serial();
    run().unwrap_or_else(|e| panic!("{e:#}"));
}

fn run() -> Result<()> {
    let http_exe = build_go_program("httpserver", "1.27.3", Variant::DEFAULT);
    let leaky_exe = build_go_program("leaky", "1.22.10", Variant::DEFAULT);
    let gc_exe = build_go_program("gcstw", "1.24.11", Variant::STRIPPED);

    let gort = Gort::start(&[
        "--all",
        "--include",
        "service=dash-*",
        "--leak-after",
        "2s",
        "--leak-window",
        "3s",
        "--overhead-budget",
        "100%",
        "--sampling-period",
        "1s",
    ])?;
    // gort samples its first period (10 % of it) before it knows the cost; the work starts
    // once it measures everything.
    eventually(Duration::from_secs(20), || {
        let ratio = gort.metrics()?.get("gort_sampling_ratio", &[]);
        ensure!(ratio == Some(1.0), "sampling ratio {ratio:?}");
        Ok(())
    })?;
    let prometheus = Prometheus::start(gort.base.trim_start_matches("http://"))?;

    let mut http = GoProgram::start(
        &http_exe,
        &["-requests", "40", "-conns", "4", "-panics", "2"],
        &[("OTEL_SERVICE_NAME", "dash-http")],
    )?;
    let mut leaky = GoProgram::start(
        &leaky_exe,
        &["-rate", "50", "-leak-for", "6s"],
        &[("OTEL_SERVICE_NAME", "dash-leaky")],
    )?;
    let mut gc = GoProgram::start(
        &gc_exe,
        &["-gcs", "10", "-alloc-mib", "128", "-memstats", "3"],
        &[("OTEL_SERVICE_NAME", "dash-gc")],
    )?;
    // All three watched before they start working.
    eventually(Duration::from_secs(20), || {
        let m = gort.metrics()?;
        for s in ["dash-http", "dash-leaky", "dash-gc"] {
            ensure!(
                m.get("gort_target_up", &[("service", s)]) == Some(1.0),
                "{s} not watched yet"
            );
        }
        Ok(())
    })?;
    // ... and Prometheus has scraped them idle: counters born before the work starts, so
    // that rates see all of it.
    eventually(Duration::from_secs(20), || {
        let data = prometheus.api(
            "/api/v1/query",
            &[(
                "query",
                "count(gort_stw_pause_seconds_count{service=\"dash-gc\"}) \
                 and count(gort_goroutines{service=\"dash-http\"}) \
                 and count(gort_goroutines{service=\"dash-leaky\"})",
            )],
        )?;
        ensure!(
            data["result"].as_array().is_some_and(|r| !r.is_empty()),
            "not scraped yet"
        );
        Ok(())
    })?;
    http.proceed()?;
    leaky.proceed()?;
    gc.proceed()?;
    http.read_json()?;
    gc.read_json()?;
    let leaked = leaky.read_json()?;
    ensure!(leaked["leaked"].as_u64().unwrap_or(0) > 0, "{leaked}");
    // The leak is suspected, and Prometheus has scraped it.
    eventually(Duration::from_secs(20), || {
        let data = prometheus.api(
            "/api/v1/query",
            &[(
                "query",
                "sum(gort_goroutine_leak_suspects{service=\"dash-leaky\"}) > 0",
            )],
        )?;
        ensure!(
            data["result"].as_array().is_some_and(|r| !r.is_empty()),
            "no leak suspects scraped yet"
        );
        Ok(())
    })?;
    // A few more scrapes, so that rates over the window have two samples after every event.
    std::thread::sleep(Duration::from_secs(3));

    let exported: String = gort.get("/metrics")?;
    let exported_names: BTreeSet<&str> = exported
        .lines()
        .filter(|l| !l.starts_with('#'))
        .filter_map(|l| l.split(['{', ' ']).next())
        .collect();
    let exports = |name: &str| {
        exported_names.contains(name)
            || ["_bucket", "_sum", "_count", "_total"]
                .iter()
                .any(|s| exported_names.contains(format!("{name}{s}").as_str()))
    };

    let dir = workspace_root().join("deploy/grafana/dashboards");
    let mut checked = 0;
    for entry in std::fs::read_dir(&dir)? {
        let path = entry?.path();
        if path.extension().is_none_or(|e| e != "json") {
            continue;
        }
        let dashboard: Value = serde_json::from_str(&std::fs::read_to_string(&path)?)
            .with_context(|| format!("{}", path.display()))?;
        let queries = dashboard_queries(&dashboard);
        ensure!(!queries.is_empty(), "{}: no queries", path.display());
        for (title, expr, exemplar) in &queries {
            for name in metric_names(expr) {
                ensure!(
                    exports(&name),
                    "panel {title:?} uses {name}, which gort does not export"
                );
            }
            let query = grafana_query(expr, "2m");
            let data = prometheus
                .api("/api/v1/query", &[("query", &query)])
                .with_context(|| format!("panel {title:?}: {query}"))?;
            let values: Vec<f64> = data["result"]
                .as_array()
                .into_iter()
                .flatten()
                .filter_map(|s| s["value"][1].as_str()?.parse().ok())
                .collect();
            ensure!(
                values.iter().any(|v| v.is_finite()),
                "panel {title:?} has no data: {query} → {data}"
            );
            if query.contains("_estimated_") {
                // Everything measured: the estimates are the counts, to rounding (both read
                // at one instant).
                let exact = without_estimates(&query);
                ensure!(!exact.contains("_estimated_"), "{exact}");
                let at = std::time::SystemTime::now()
                    .duration_since(std::time::UNIX_EPOCH)?
                    .as_secs_f64()
                    - 1.0;
                let sorted = |q: &str| -> Result<Vec<(String, f64)>> {
                    let mut v: Vec<(String, f64)> = prometheus
                        .query_at(q, at)?
                        .into_iter()
                        .map(|(labels, v)| (labels.to_string(), v))
                        .collect();
                    v.sort_by(|a, b| a.0.cmp(&b.0));
                    Ok(v)
                };
                let (values, exact_values) = (sorted(&query)?, sorted(&exact)?);
                ensure!(
                    values.len() == exact_values.len()
                        && values.iter().zip(&exact_values).all(|(a, b)| {
                            // A quantile of no parks in the rate's window is NaN in both.
                            a.0 == b.0
                                && ((a.1.is_nan() && b.1.is_nan())
                                    || (a.1 - b.1).abs() <= 1e-6 * b.1.abs().max(1.0))
                        }),
                    "panel {title:?}: the estimates {values:?} are not the counts \
                     {exact_values:?} while everything is measured: {query}"
                );
            }
            if *exemplar {
                let now = std::time::SystemTime::now()
                    .duration_since(std::time::UNIX_EPOCH)?
                    .as_secs();
                let data = prometheus.api(
                    "/api/v1/query_exemplars",
                    &[
                        ("query", &query),
                        ("start", &(now - 600).to_string()),
                        ("end", &now.to_string()),
                    ],
                )?;
                let traced = data
                    .as_array()
                    .into_iter()
                    .flatten()
                    .flat_map(|s| s["exemplars"].as_array().into_iter().flatten())
                    .filter(|e| {
                        e["labels"]["trace_id"]
                            .as_str()
                            .is_some_and(|t| t.len() == 32)
                    })
                    .count();
                ensure!(
                    traced > 0,
                    "panel {title:?}: no exemplar with a trace id: {data}"
                );
            }
            checked += 1;
        }
        // The variables name exported metrics too.
        for v in dashboard["templating"]["list"]
            .as_array()
            .into_iter()
            .flatten()
        {
            let query = v["query"]["query"]
                .as_str()
                .or(v["query"].as_str())
                .unwrap_or("");
            for name in metric_names(query) {
                ensure!(exports(&name), "variable {} uses {name}", v["name"]);
            }
        }
    }
    ensure!(checked >= 20, "only {checked} panel queries");
    let ratio = gort.metrics()?.get("gort_sampling_ratio", &[]);
    ensure!(
        ratio == Some(1.0),
        "gort sampled (ratio {ratio:?}): the 100 % budget is meant to measure all"
    );
    drop((http, leaky, gc));
    gort.stop()?;
    Ok(())
}
