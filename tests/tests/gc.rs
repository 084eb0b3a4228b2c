//! GC cycles and stop-the-world pauses, measured by gort on a program that allocates and
//! forces collections, against the runtime's own counters (`debug.ReadGCStats`,
//! `runtime/metrics`).

use std::time::Duration;

use anyhow::{Context, Result, ensure};
use gort_e2e::{GoProgram, Gort, Metrics, Variant, build_go_program, eventually, serial};

fn check(go_version: &str, variant: Variant) {
    let _serial = serial();
    run(go_version, variant, false)
        .unwrap_or_else(|e| panic!("Go {go_version} {variant:?}: {e:#}"));
}

/// Time sampling (`--overhead-budget`) takes the park probes out for most of each period, but
/// not the GC's: the program's collections, all while the park probes are out, are counted
/// exactly, and no park is.
#[test]
fn gc_is_measured_exactly_while_time_sampling_has_the_park_probes_out() {
    let _serial = serial();
    run("1.24.11", Variant::DEFAULT, true).unwrap_or_else(|e| panic!("{e:#}"));
}

fn run(go_version: &str, variant: Variant, sampled: bool) -> Result<()> {
    let exe = build_go_program("gcstw", go_version, variant);
    let mut program = GoProgram::start(
        &exe,
        &["-gcs", "10", "-alloc-mib", "256", "-memstats", "3"],
        &[],
    )?;
    let before = program.ready["before"].clone();
    let pid = program.pid.to_string();
    let parks = |m: &Metrics| m.sum("gort_goroutine_blocks_total", &[("pid", &pid)]);
    let mut parks_before = None;
    let gort = if sampled {
        // A budget below what gort itself costs idle (0.2 ms of CPU a second): after its
        // first check it samples at the lowest ratio, 1 % of a period lengthened to 120 s;
        // once that window is over (1.2 s at most), the program runs with the park probes out.
        let gort = Gort::attach(
            program.pid,
            &["--overhead-budget", "0.01%", "--sampling-period", "20s"],
        )?;
        eventually(Duration::from_secs(15), || {
            let ratio = gort.metrics()?.get("gort_sampling_ratio", &[]);
            ensure!(ratio.is_some_and(|r| r < 0.1), "sampling ratio {ratio:?}");
            Ok(())
        })?;
        std::thread::sleep(Duration::from_secs(3));
        parks_before = Some(parks(&gort.metrics()?));
        gort
    } else {
        Gort::attach(program.pid, &[])?
    };
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
    // rounding). Go 1.21 does not: gort times the start itself, at stopTheWorldWithSema's
    // entry probe, before the runtime reads its clock: each pause reads longer by what is
    // left of the trap then, up to 50 µs on this VM under load.
    let tolerance = if go_version.starts_with("1.21.") {
        0.10 * runtime_pause_s + (sweep + mark) as f64 * 50e-6
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
    if let Some(before) = parks_before {
        let after = parks(&gort.metrics()?);
        ensure!(
            after == before,
            "{} parks seen while the park probes were out",
            after - before
        );
        let ratio = m.get("gort_sampling_ratio", &[]).context("no ratio")?;
        ensure!(ratio < 1.0, "sampling ratio {ratio}");
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
