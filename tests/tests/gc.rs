//! GC cycles and stop-the-world pauses, measured by gort on a program that allocates and
//! forces collections, against the runtime's own counters (`debug.ReadGCStats`,
//! `runtime/metrics`).

use std::time::Duration;

use anyhow::{Context, Result, ensure};
use gort_e2e::{GoProgram, Gort, Metrics, Variant, build_go_program, eventually, serial};

fn check(go_version: &str, variant: Variant) {
    let _serial = serial();
    run(go_version, variant).unwrap_or_else(|e| panic!("Go {go_version} {variant:?}: {e:#}"));
}

fn run(go_version: &str, variant: Variant) -> Result<()> {
    let exe = build_go_program("gcstw", go_version, variant);
    let mut program = GoProgram::start(
        &exe,
        &["-gcs", "10", "-alloc-mib", "256", "-memstats", "3"],
        &[],
    )?;
    let before = program.ready["before"].clone();
    let pid = program.pid.to_string();
    let gort = Gort::attach(program.pid, &[])?;
    program.proceed()?;
    let report = program.read_json()?;
    let after = &report["after"];
    let delta =
        |k: &str| -> Result<i64> {
            Ok(after[k].as_i64().context(k.to_string())?
                - before[k].as_i64().context(k.to_string())?)
        };
    let cycles = delta("num_gc")?;
    ensure!(cycles >= 10, "the program ran {cycles} GC cycles");
    ensure!(
        delta("cycles")? == cycles,
        "runtime/metrics and ReadGCStats disagree"
    );

    let pauses = |m: &Metrics, reason: &str, what: &str| {
        m.get(
            &format!("gort_stw_pause_seconds_{what}"),
            &[("pid", &pid), ("reason", reason)],
        )
        .unwrap_or(0.0)
    };
    let m = eventually(Duration::from_secs(10), || {
        let m = gort.metrics()?;
        let seen = m
            .get("gort_gc_cycles_total", &[("pid", &pid)])
            .unwrap_or(0.0) as i64;
        ensure!(
            seen == cycles,
            "gort counted {seen} GC cycles, the runtime {cycles}"
        );
        let memstats = pauses(&m, "read mem stats", "count");
        ensure!(
            memstats == 3.0,
            "{memstats} `read mem stats` pauses, the program made 3"
        );
        Ok(m)
    })?;
    let sweep = pauses(&m, "GC sweep termination", "count") as i64;
    let mark = pauses(&m, "GC mark termination", "count") as i64;
    ensure!(
        sweep == cycles,
        "{sweep} sweep-termination pauses for {cycles} cycles"
    );
    // A cycle stops the world for mark termination at least once (more when the runtime
    // finds work left and restarts it).
    ensure!(
        mark >= cycles,
        "{mark} mark-termination pauses for {cycles} cycles"
    );
    let runtime_gc_pauses = delta("gc_pauses")?;
    if before["gc_pauses"].as_i64() != Some(-1) {
        ensure!(
            sweep + mark == runtime_gc_pauses,
            "gort saw {} GC pauses, runtime/metrics {runtime_gc_pauses}",
            sweep + mark
        );
    }
    let gort_pause_s =
        pauses(&m, "GC sweep termination", "sum") + pauses(&m, "GC mark termination", "sum");
    let runtime_pause_s = delta("pause_total_ns")? as f64 / 1e9;
    // Go 1.22+ hands startTheWorldWithSema the pause's start, and it returns the end: gort
    // reads the runtime's own timestamps, so the sums agree to the nanosecond (up to float
    // rounding). Go 1.21 does not: gort times the start itself.
    let tolerance = if go_version.starts_with("1.21.") {
        0.10 * runtime_pause_s
    } else {
        1e-6
    };
    ensure!(
        (gort_pause_s - runtime_pause_s).abs() <= tolerance,
        "GC pauses: gort {gort_pause_s} s, the runtime {runtime_pause_s} s (tolerance {tolerance} s)"
    );
    let mark_phases = m
        .get("gort_gc_mark_seconds_count", &[("pid", &pid)])
        .unwrap_or(0.0) as i64;
    ensure!(
        mark_phases == cycles,
        "{mark_phases} mark phases for {cycles} cycles"
    );
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
fn go1_27_pie_stripped() {
    check("1.27.3", Variant::PIE_STRIPPED);
}

#[test]
fn go1_21() {
    check("1.21.13", Variant::DEFAULT);
}
