//! Panics: a program panics with a string, an error, a nil map write and an index out of
//! range, recovers each, then dies of an unrecovered panic (or of a fatal error). gort's
//! record of each has the message Go prints, the exact panicking line, the goroutine and
//! whether it was recovered, on the API, on /metrics and as NDJSON events, and keeps them
//! after the process died.

use std::time::Duration;

use anyhow::{Context, Result, ensure};
use gort_e2e::{GoProgram, Gort, Variant, build_go_program, eventually, serial, workspace_root};
use serde_json::Value;

fn check(go_version: &str, variant: Variant, crash: &str) {
    let _serial = serial();
    run(go_version, variant, crash)
        .unwrap_or_else(|e| panic!("Go {go_version} {variant:?} {crash}: {e:#}"));
}

fn panics(gort: &Gort, pid: &str) -> Result<Vec<Value>> {
    let mut v: Vec<Value> =
        serde_json::from_value(gort.get_json(&format!("/api/v1/panics?pid={pid}"))?)?;
    v.reverse(); // oldest first
    Ok(v)
}

fn same_panic(got: &Value, want: &Value, outcome: &str) -> Result<()> {
    let ctx = || format!("gort {got:#}\nprogram {want:#}");
    ensure!(
        got["message"] == want["message"],
        "message differs:\n{}",
        ctx()
    );
    ensure!(
        got["message_exact"] == true,
        "message not exact:\n{}",
        ctx()
    );
    ensure!(
        got["site"]["function"] == want["function"]
            && got["site"]["file"] == want["file"]
            && got["site"]["line"] == want["line"],
        "site differs:\n{}",
        ctx()
    );
    ensure!(got["goid"] == want["goid"], "goroutine differs:\n{}", ctx());
    ensure!(
        got["outcome"] == outcome,
        "outcome {} != {outcome}:\n{}",
        got["outcome"],
        ctx()
    );
    Ok(())
}

fn run(go_version: &str, variant: Variant, crash: &str) -> Result<()> {
    let exe = build_go_program("panics", go_version, variant);
    let mut program = GoProgram::start(&exe, &[], &[])?;
    let pid = program.pid.to_string();
    let events = workspace_root().join(format!("target/e2e-bin/panics-{pid}.ndjson"));
    let gort = Gort::attach(
        program.pid,
        &["--events", events.to_str().context("utf-8")?],
    )?;
    program.proceed()?;
    let report = program.read_json()?;
    let want = report["panics"].as_array().context("panics")?.clone();
    ensure!(want.len() == 4, "the program made {} panics", want.len());

    let got = eventually(Duration::from_secs(10), || {
        let got = panics(&gort, &pid)?;
        ensure!(
            got.len() == 4 && got.iter().all(|p| p["outcome"] == "recovered"),
            "so far: {got:#?}"
        );
        Ok(got)
    })?;
    for (g, w) in got.iter().zip(&want) {
        same_panic(g, w, "recovered").with_context(|| format!("{} panic", w["kind"]))?;
    }
    let types: Vec<&str> = got
        .iter()
        .map(|p| p["value_type"].as_str().unwrap_or("?"))
        .collect();
    ensure!(
        types
            == [
                "string",
                "*errors.errorString",
                "runtime.plainError",
                "runtime.boundsError"
            ],
        "value types {types:?}"
    );
    let m = gort.metrics()?;
    let recovered: f64 = m
        .all("gort_panics_total", &[("pid", &pid), ("recovered", "true")])
        .iter()
        .map(|(_, v)| v)
        .sum();
    ensure!(
        recovered == 4.0,
        "gort_panics_total{{recovered=true}} = {recovered}"
    );

    // Now it dies of one more.
    let line = format!("crash {crash}\n");
    program.send(&line)?;
    let crashed = program.read_json()?["crash"].clone();
    let status = program.wait()?;
    ensure!(status.code() == Some(2), "the program exited with {status}");
    let last = eventually(Duration::from_secs(10), || {
        let got = panics(&gort, &pid)?;
        ensure!(got.len() == 5, "{} panics so far", got.len());
        Ok(got[4].clone())
    })?;
    if crash == "error" {
        same_panic(&last, &crashed, "fatal")?;
        ensure!(last["kind"] == "panic", "kind {}", last["kind"]);
    } else {
        ensure!(
            last["kind"] == "fatal error" && last["message"] == crashed["message"],
            "fatal error: {last:#}"
        );
        ensure!(last["outcome"] == "fatal", "outcome {}", last["outcome"]);
    }
    let m = gort.metrics()?;
    let fatal: f64 = m
        .all(
            "gort_panics_total",
            &[("pid", &pid), ("recovered", "false")],
        )
        .iter()
        .map(|(_, v)| v)
        .sum();
    ensure!(
        fatal == 1.0,
        "gort_panics_total{{recovered=false}} = {fatal}"
    );
    // Kept after the process died.
    eventually(Duration::from_secs(10), || {
        let procs = gort.get_json("/api/v1/processes")?;
        ensure!(procs[0]["state"] == "exited", "state {}", procs[0]["state"]);
        ensure!(panics(&gort, &pid)?.len() == 5, "records lost after exit");
        Ok(())
    })?;
    // The NDJSON events: one line per resolved panic, in order.
    let lines: Vec<Value> = std::fs::read_to_string(&events)?
        .lines()
        .map(serde_json::from_str)
        .collect::<Result<_, _>>()?;
    ensure!(lines.len() == 5, "{} event lines", lines.len());
    for (l, g) in lines.iter().zip(panics(&gort, &pid)?) {
        ensure!(
            l["message"] == g["message"]
                && l["goid"] == g["goid"]
                && l["pid"] == pid.parse::<u64>()?,
            "{l} vs {g}"
        );
    }
    ensure!(
        lines[..4].iter().all(|l| l["recovered"] == true) && lines[4]["recovered"] == false,
        "recovered flags"
    );
    gort.stop()?;
    let _ = std::fs::remove_file(&events);
    Ok(())
}

#[test]
fn go1_22_unrecovered_error() {
    check("1.22.10", Variant::DEFAULT, "error");
}

#[test]
fn go1_27_pie_stripped_unrecovered_error() {
    check("1.27.3", Variant::PIE_STRIPPED, "error");
}

#[test]
fn go1_27_deadlock() {
    check("1.27.3", Variant::DEFAULT, "deadlock");
}

#[test]
fn go1_24_stripped_deadlock() {
    check("1.24.11", Variant::STRIPPED, "deadlock");
}
