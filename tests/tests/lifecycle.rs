//! Goroutine counts: the live count equals what the program's own `runtime.NumGoroutine()`
//! says after each step (including 1,000 goroutines parked before gort attached), and the
//! created and exited counters equal the program's own `go` statements and endings.

use std::time::Duration;

use anyhow::{Context, Result, ensure};
use gort_e2e::{GoProgram, Gort, Variant, build_go_program, eventually, serial};

fn check(go_version: &str, variant: Variant) {
    let _serial = serial();
    run(go_version, variant).unwrap_or_else(|e| panic!("Go {go_version} {variant:?}: {e:#}"));
}

fn run(go_version: &str, variant: Variant) -> Result<()> {
    let exe = build_go_program("lifecycle", go_version, variant);
    // GOGC=off: no GC, so the runtime starts no goroutines of its own while counting.
    let mut program = GoProgram::start(&exe, &["-preparked", "1000"], &[("GOGC", "off")])?;
    let pid = program.pid.to_string();
    let gort = Gort::attach(program.pid, &[])?;
    let counts = |want_user: u64, want_created: u64, want_exited: u64| -> Result<()> {
        eventually(Duration::from_secs(10), || {
            let m = gort.metrics()?;
            let user = m
                .get("gort_goroutines", &[("pid", &pid), ("kind", "user")])
                .context("no gauge")? as u64;
            let created = m
                .get("gort_goroutines_created_total", &[("pid", &pid)])
                .context("no created")? as u64;
            let exited = m
                .get("gort_goroutines_exited_total", &[("pid", &pid)])
                .context("no exited")? as u64;
            ensure!(
                (user, created, exited) == (want_user, want_created, want_exited),
                "gort: {user} live, {created} created, {exited} exited; \
                 the program: {want_user} live (NumGoroutine), {want_created} created, {want_exited} exited"
            );
            Ok(())
        })
    };
    let ready = program.ready["num_goroutine"]
        .as_u64()
        .context("num_goroutine")?;
    ensure!(ready > 1000, "NumGoroutine {ready}");
    counts(ready, 0, 0).context("right after attaching")?;
    for step in 1..=4 {
        program.proceed()?;
        let r = program.read_json()?;
        ensure!(r["step"] == step, "step {}", r["step"]);
        let field = |k: &str| r[k].as_u64().with_context(|| k.to_string());
        counts(field("num_goroutine")?, field("created")?, field("exited")?)
            .with_context(|| format!("after step {step}"))?;
    }
    let m = gort.metrics()?;
    for (cause, lost) in m.all("gort_events_lost_total", &[]) {
        ensure!(lost == 0.0, "events lost: {cause:?} = {lost}");
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
fn go1_27() {
    check("1.27.3", Variant::DEFAULT);
}

#[test]
fn go1_24_pie_stripped() {
    check("1.24.11", Variant::PIE_STRIPPED);
}

#[test]
fn go1_21_stripped() {
    check("1.21.13", Variant::STRIPPED);
}
