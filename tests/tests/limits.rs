//! Limits: a binary that lacks a function one probe family needs keeps the others working
//! and says what is missing; 100,000 goroutines parked before attach are all found, with
//! gort's memory bounded; goroutine churn and four park-heavy processes at once are counted
//! exactly, nothing lost.

use std::time::Duration;

use anyhow::{Context, Result, ensure};
use gort_e2e::{GoProgram, Gort, Variant, build_go_program, eventually, serial, workspace_root};

/// `runtime.gcMarkTermination` renamed in the function table (as if a Go release had renamed
/// or inlined it): the GC family is left out, with the reason, and blocking is still measured.
#[test]
fn a_missing_function_leaves_one_family_out() {
    let _serial = serial();
    (|| -> Result<()> {
        let exe = build_go_program("parks", "1.22.10", Variant::DEFAULT);
        let mut bytes = std::fs::read(&exe)?;
        let name = b"runtime.gcMarkTermination\0";
        let at = bytes
            .windows(name.len())
            .position(|w| w == name)
            .context("the name in .gopclntab")?;
        bytes[at + name.len() - 2] = b'X';
        let renamed = workspace_root().join("target/e2e-bin/parks-renamed-gcmarktermination");
        std::fs::write(&renamed, &bytes)?;
        std::fs::set_permissions(
            &renamed,
            std::os::unix::fs::PermissionsExt::from_mode(0o755),
        )?;

        // `gort inspect` says so too, before anything runs.
        let inspect = std::process::Command::new(gort_e2e::gort_bin())
            .arg("inspect")
            .arg(&renamed)
            .output()?;
        let text = String::from_utf8_lossy(&inspect.stdout);
        ensure!(
            text.contains("gc unavailable: no function runtime.gcMarkTermination in the binary")
                && text.contains("lifecycle available"),
            "gort inspect printed:\n{text}"
        );
        let mut program = GoProgram::start(
            &renamed,
            &["-workers=1", "-ops=5", "-block=5ms"],
            &[("GOGC", "off")],
        )?;
        let pid = program.pid.to_string();
        let gort = Gort::attach(program.pid, &[])?;
        let procs = gort.get_json("/api/v1/processes")?;
        let unavailable = &procs[0]["unavailable"];
        // GC, for the renamed function; HTTP requests, as for any program that is not a
        // net/http server.
        ensure!(
            unavailable.as_array().map(Vec::len) == Some(2)
                && unavailable[0]["family"] == "gc"
                && unavailable[0]["reason"]
                    == "no function runtime.gcMarkTermination in the binary"
                && unavailable[1]["family"] == "http"
                && unavailable[1]["reason"]
                    == "no function net/http.serverHandler.ServeHTTP: not a net/http server",
            "unavailable: {unavailable}"
        );
        program.proceed()?;
        let report = program.read_json()?;
        let want = report["totals"]["chan receive"]["count"]
            .as_f64()
            .context("count")?;
        eventually(Duration::from_secs(10), || {
            let m = gort.metrics()?;
            let seen = m
                .get(
                    "gort_goroutine_blocks_total",
                    &[("pid", &pid), ("reason", "chan receive")],
                )
                .unwrap_or(0.0);
            ensure!(seen == want, "{seen} of {want} chan receive parks");
            ensure!(
                m.get("gort_gc_cycles_total", &[("pid", &pid)]).is_none(),
                "GC cycles exported without GC probes"
            );
            ensure!(
                m.get("gort_goroutines_created_total", &[("pid", &pid)])
                    .is_some(),
                "the lifecycle family is missing"
            );
            Ok(())
        })?;
        program.finish()?;
        gort.stop()?;
        Ok(())
    })()
    .unwrap_or_else(|e| panic!("{e:#}"));
}

/// 100,000 goroutines parked before gort attached: every one found, and gort's resident
/// memory stays bounded (printed for the README).
#[test]
fn a_hundred_thousand_parked_goroutines() {
    let _serial = serial();
    (|| -> Result<()> {
        let exe = build_go_program("preparked", "1.22.10", Variant::DEFAULT);
        let program = GoProgram::start(
            &exe,
            &["-n", "33334", "-wake", "0", "-verify=false"],
            &[("GOGC", "off")],
        )?;
        let pid = program.pid.to_string();
        let gort = Gort::attach(program.pid, &[])?;
        let m = gort.metrics()?;
        let parked: f64 = m
            .all("gort_goroutines_blocked", &[("pid", &pid)])
            .iter()
            .map(|(_, v)| v)
            .sum();
        ensure!(parked >= 100_002.0, "{parked} goroutines parked now");
        let user = m
            .get("gort_goroutines", &[("pid", &pid), ("kind", "user")])
            .context("gauge")?;
        ensure!(
            user == 100_003.0,
            "{user} user goroutines (100,002 parked and main)"
        );
        let rss_kib = gort.rss_kib()?;
        println!(
            "gort RSS with 100,002 parked goroutines: {:.1} MiB",
            rss_kib as f64 / 1024.0
        );
        ensure!(rss_kib < 256 * 1024, "gort uses {rss_kib} KiB");
        program.finish()?;
        gort.stop()?;
        Ok(())
    })()
    .unwrap_or_else(|e| panic!("{e:#}"));
}

/// Goroutines created and ended as fast as the target can (it aims at 200,000 a second; under
/// the lifecycle probes' two traps per goroutine it reaches ~60,000 here): every one counted,
/// none lost, and gort's memory flat (exited goroutines are kept up to `--retain-exited`).
#[test]
fn goroutine_churn_is_counted_exactly_in_bounded_memory() {
    let _serial = serial();
    (|| -> Result<()> {
        let exe = build_go_program("spawner", "1.27.3", Variant::DEFAULT);
        let mut p = GoProgram::start(&exe, &["-rate=200000", "-duration=8s"], &[])?;
        let gort = Gort::attach(p.pid, &[])?;
        let pid = p.pid.to_string();
        let counters = || -> Result<(f64, f64, f64, f64)> {
            let m = gort.metrics()?;
            let get = |name: &str, kind: Option<&str>| {
                let mut labels = vec![("pid", pid.as_str())];
                labels.extend(kind.map(|k| ("kind", k)));
                m.get(name, &labels).with_context(|| format!("no {name}"))
            };
            Ok((
                get("gort_goroutines_created_total", None)?,
                get("gort_goroutines_exited_total", None)?,
                get("gort_goroutines", Some("user"))?,
                get("gort_goroutines", Some("system"))?,
            ))
        };
        let (created0, exited0, _, system0) = counters()?;
        p.proceed()?;
        let mut rss = Vec::new();
        let line = loop {
            rss.push(gort.rss_kib()?);
            std::thread::sleep(Duration::from_millis(500));
            if rss.len() >= 16 {
                break p.read_json()?;
            }
        };
        let created = line["created"].as_f64().context("no created")?;
        let secs = line["ns"].as_f64().context("no ns")? / 1e9;
        eprintln!(
            "{created} goroutines in {secs:.1} s ({:.0}/s); gort RSS (KiB) every 0.5 s: {rss:?}",
            created / secs
        );
        ensure!(created > 100_000.0, "only {created} goroutines");
        eventually(Duration::from_secs(5), || {
            let (created1, exited1, user, system1) = counters()?;
            ensure!(
                exited1 - exited0 == created,
                "{} exits counted, {created} goroutines ended",
                exited1 - exited0
            );
            ensure!(
                created1 - created0 == created + (system1 - system0),
                "{} creations counted, the program created {created} (and the runtime {})",
                created1 - created0,
                system1 - system0
            );
            ensure!(
                user == 1.0,
                "{user} user goroutines live, the program has 1"
            );
            Ok(())
        })?;
        let lost = gort.metrics()?.sum("gort_events_lost_total", &[]);
        ensure!(lost == 0.0, "{lost} events lost");
        // Flat: the second half of the run no higher than the first half's peak + 10 %, and
        // under 200 MiB (a debug build; ~24 MiB of it the ring buffers).
        let peak = *rss.iter().max().expect("samples");
        let first_half = *rss[..rss.len() / 2].iter().max().expect("samples");
        let second_half = *rss[rss.len() / 2..].iter().max().expect("samples");
        ensure!(peak < 200 * 1024, "gort RSS reached {peak} KiB");
        ensure!(
            second_half as f64 <= first_half as f64 * 1.1,
            "gort RSS grew from {first_half} to {second_half} KiB"
        );
        p.finish()
    })()
    .unwrap();
}

/// Four park-heavy processes at once (ping-pongs under `--exe`, on two cores): every park of
/// every one counted under its own pid, exactly (an unbuffered hand-off parks exactly one of
/// its two sides: 2 channel parks per round trip), and nothing lost.
#[test]
fn four_park_heavy_processes_at_once_lose_nothing() {
    let _serial = serial();
    (|| -> Result<()> {
        const ROUND_TRIPS: u64 = 40_000;
        let exe = build_go_program("pingpong", "1.24.11", Variant::DEFAULT);
        let gort = Gort::start(&["--exe", exe.to_str().context("utf-8 path")?])?;
        let n = ROUND_TRIPS.to_string();
        let mut programs = (0..4)
            .map(|_| GoProgram::start(&exe, &["-n", &n, "-wait"], &[("GOGC", "off")]))
            .collect::<Result<Vec<_>>>()?;
        let channel_parks = |pid: u32| -> Result<f64> {
            let m = gort.metrics()?;
            let pid = pid.to_string();
            Ok(["chan receive", "chan send"]
                .iter()
                .filter_map(|r| {
                    m.get(
                        "gort_goroutine_blocks_total",
                        &[("pid", pid.as_str()), ("reason", r)],
                    )
                })
                .sum())
        };
        let created = |pid: u32| -> anyhow::Result<f64> {
            let pid = pid.to_string();
            Ok(gort
                .metrics()?
                .get("gort_goroutines_created_total", &[("pid", pid.as_str())])
                .unwrap_or(0.0))
        };
        // Attached before they started, gort saw the runtime's start-up (its goroutines
        // created, and mostly a park in chan receive in gcenable, unless the other P ran the
        // sweeper and scavenger first): count from a baseline taken once those are in.
        let mut baselines = Vec::new();
        for p in &programs {
            baselines.push(eventually(Duration::from_secs(10), || {
                let first = (channel_parks(p.pid)?, created(p.pid)?);
                std::thread::sleep(Duration::from_millis(200));
                let second = (channel_parks(p.pid)?, created(p.pid)?);
                ensure!(
                    first.1 > 0.0 && first == second,
                    "start-up (channel parks, goroutines created) not settled: {first:?} then \
                     {second:?}"
                );
                Ok(second.0)
            })?);
        }
        for p in &mut programs {
            p.proceed()?;
        }
        let mut longest = 0.0f64;
        for p in &mut programs {
            let report = p.read_json()?;
            ensure!(
                report["round_trips"].as_u64() == Some(ROUND_TRIPS),
                "{report}"
            );
            longest = longest.max(report["ns"].as_f64().context("no ns")? / 1e9);
        }
        eprintln!(
            "4 × {ROUND_TRIPS} round trips in {longest:.2} s: {:.0} parks/s under the probes",
            4.0 * 2.0 * ROUND_TRIPS as f64 / longest
        );
        for (p, baseline) in programs.iter().zip(&baselines) {
            eventually(Duration::from_secs(10), || {
                let seen = channel_parks(p.pid)? - baseline;
                let want = 2.0 * ROUND_TRIPS as f64;
                ensure!(
                    seen == want,
                    "pid {}: {seen} channel parks of {want}",
                    p.pid
                );
                Ok(())
            })?;
        }
        let lost = gort.metrics()?.sum("gort_events_lost_total", &[]);
        ensure!(lost == 0.0, "{lost} events lost");
        for p in programs {
            p.finish()?;
        }
        Ok(())
    })()
    .unwrap_or_else(|e| panic!("{e:#}"));
}
