//! Attaching: `--exe` (every process of a binary, now and later), bad targets and bad input,
//! each answered with one clear error line and no harm to anything running.

use std::{
    process::{Command, Stdio},
    time::Duration,
};

use anyhow::{Context, ensure};
use gort_e2e::{
    GoProgram, Gort, Variant, build_go_program, eventually, gort_bin, serial, workspace_root,
};
use serde_json::Value;

/// Runs `gort ARGS`, returns (exit code, stdout, stderr).
fn gort(args: &[&str]) -> (i32, String, String) {
    let out = Command::new(gort_bin())
        .args(args)
        .output()
        .expect("run gort");
    (
        out.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

/// `gort run --exe` watches processes started after it: two instances of the parks program
/// are each measured exactly, under their own pid and service.
#[test]
fn exe_mode_follows_new_processes() {
    let _serial = serial();
    let exe = build_go_program("parks", "1.24.11", Variant::DEFAULT);
    let gort =
        Gort::start(&["--exe", exe.to_str().expect("utf-8 path")]).expect("start gort --exe");
    for service in ["first", "second"] {
        let mut program = GoProgram::start(
            &exe,
            &["-workers=1", "-ops=10", "-block=5ms"],
            &[("GOGC", "off"), ("OTEL_SERVICE_NAME", service)],
        )
        .expect("start the program");
        let pid = program.pid.to_string();
        let counts = || -> anyhow::Result<(f64, f64)> {
            let m = gort.metrics()?;
            let process = [("pid", pid.as_str()), ("service", service)];
            let labels = [process[0], process[1], ("reason", "chan receive")];
            Ok((
                m.get("gort_goroutine_blocks_total", &labels).unwrap_or(0.0),
                m.get("gort_goroutines_created_total", &process)
                    .unwrap_or(0.0),
            ))
        };
        let blocks = || counts().map(|(blocks, _)| blocks);
        // Attached before the process started, gort also saw the runtime's start-up (its
        // goroutines created, and mostly a park in chan receive in gcenable, unless the
        // other P ran the sweeper and scavenger first): count from a baseline taken once the
        // process is known and its start-up events are in.
        let baseline = eventually(Duration::from_secs(10), || {
            let first = counts()?;
            std::thread::sleep(Duration::from_millis(200));
            let second = counts()?;
            ensure!(
                first.1 > 0.0 && first == second,
                "start-up (chan receive parks, goroutines created) not settled: {first:?} then \
                 {second:?}"
            );
            Ok(second.0)
        })
        .unwrap();
        program.proceed().unwrap();
        let report = program.read_json().unwrap();
        assert_eq!(report["reasons"]["chan receive"], "chan receive");
        let want = report["totals"]["chan receive"]["count"].as_f64().unwrap();
        assert_eq!(want, 10.0);
        eventually(Duration::from_secs(10), || {
            let seen = blocks()? - baseline;
            ensure!(seen == want, "{service}: {seen} of {want}");
            Ok(())
        })
        .unwrap();
        program.finish().unwrap();
    }
    let procs = gort.get_json("/api/v1/processes").unwrap();
    assert_eq!(procs.as_array().map(Vec::len), Some(2), "{procs}");
    gort.stop().unwrap();
}

#[test]
fn inspect_reports_what_it_found() {
    let exe = build_go_program("parks", "1.22.10", Variant::PIE_STRIPPED);
    let (code, out, err) = gort(&["inspect", "--json", exe.to_str().unwrap()]);
    assert_eq!(code, 0, "{err}");
    let r: Value = serde_json::from_str(&out).unwrap();
    assert_eq!(r["go_version"], "go1.22.10");
    assert_eq!(r["pie"], true);
    assert_eq!(r["stripped"], true);
    assert_eq!(r["attachable"], true);
    assert_eq!(r["offsets"]["source"], "table");
    assert_eq!(r["offsets"]["g.goid"], 152);
    assert_eq!(r["wait_reasons"]["source"], "table");
    assert_eq!(r["wait_reasons"]["names"][14], "chan receive");
    assert_eq!(
        r["gopark"]["ret_file_offsets"].as_array().map(Vec::len),
        Some(1)
    );

    let exe = build_go_program("parks", "1.27.3", Variant::DEFAULT);
    let (code, out, _) = gort(&["inspect", exe.to_str().unwrap()]);
    assert_eq!(code, 0);
    assert!(out.contains("go version:    go1.27.3"), "{out}");
    assert!(out.contains("waitReason table (from symbol)"), "{out}");
    assert!(
        out.contains("   14  sleep"),
        "Go 1.26+ renumbered the reasons:\n{out}"
    );
    assert!(out.contains("can attach:    yes"), "{out}");
}

#[test]
fn bad_binaries_get_one_clear_line() {
    let dir = workspace_root().join("target/e2e-bin/bad");
    std::fs::create_dir_all(&dir).unwrap();
    let go = build_go_program("parks", "1.22.10", Variant::DEFAULT);
    let bytes = std::fs::read(&go).unwrap();

    // A Go release gort does not support: the same binary claiming go1.20.10.
    let mut old = bytes.clone();
    // In the build info the version is a length-prefixed string: 9, then "go1.22.10".
    let at = find(&old, b"\x09go1.22.10").expect("version string in the build info") + 1;
    old[at..at + 9].copy_from_slice(b"go1.20.10");
    let truncated = bytes[..bytes.len() / 3].to_vec();
    let cases: [(&str, Vec<u8>, &str); 4] = [
        (
            "old-go",
            old,
            "is built with go1.20.10; gort supports go1.21 to go1.27",
        ),
        ("truncated", truncated, "not a 64-bit ELF file"),
        (
            "garbage",
            (0..4096u32)
                .map(|i| (i.wrapping_mul(2_654_435_761) >> 13) as u8)
                .collect(),
            "not a 64-bit ELF file",
        ),
        ("empty", Vec::new(), "not a 64-bit ELF file"),
    ];
    for (name, content, want) in cases {
        let path = dir.join(name);
        std::fs::write(&path, content).unwrap();
        let (code, out, err) = gort(&["inspect", path.to_str().unwrap()]);
        assert_eq!(code, 2, "{name}: {out}{err}");
        let verdict = out
            .lines()
            .find(|l| l.starts_with("can attach:"))
            .unwrap_or_default();
        assert!(
            verdict.contains(want),
            "{name}: {verdict:?} should say {want:?}\n{out}"
        );
        assert!(!err.contains("panicked"), "{name}: {err}");
    }
    let (code, out, _) = gort(&["inspect", "/bin/true"]);
    assert_eq!(code, 2);
    assert!(
        out.contains("can attach:    no: not a Go binary: no Go build info in `/bin/true`"),
        "{out}"
    );
}

fn find(haystack: &[u8], needle: &[u8]) -> Option<usize> {
    haystack.windows(needle.len()).position(|w| w == needle)
}

#[test]
fn run_refuses_bad_targets_in_one_line() {
    // Not a Go program.
    let mut sleeper = Command::new("sleep")
        .arg("30")
        .stdout(Stdio::null())
        .spawn()
        .unwrap();
    let pid = sleeper.id().to_string();
    let (code, _, err) = gort(&["run", "--pid", &pid, "--listen", "127.0.0.1:0"]);
    let _ = sleeper.kill();
    let _ = sleeper.wait();
    assert_eq!(code, 1);
    assert_eq!(err.lines().count(), 1, "one line: {err}");
    assert!(
        err.starts_with("gort: ") && err.contains("not a Go binary"),
        "{err}"
    );

    // No such process.
    let (code, _, err) = gort(&["run", "--pid", "2147483646", "--listen", "127.0.0.1:0"]);
    assert_eq!(code, 1);
    assert_eq!(
        err.trim(),
        "gort: process 2147483646 does not exist (or has exited)"
    );
}

/// A target that exits while gort attaches, or right after: gort never crashes, says so in
/// one line or keeps serving with the process marked exited.
#[test]
fn target_exiting_during_attach() {
    let _serial = serial();
    let exe = build_go_program("parks", "1.22.10", Variant::DEFAULT);
    for delay_ms in [0u64, 20, 60] {
        let program = GoProgram::start(&exe, &[], &[]).unwrap();
        let pid = program.pid;
        let killer = std::thread::spawn(move || {
            std::thread::sleep(Duration::from_millis(delay_ms));
            drop(program); // kills it
        });
        match Gort::attach(pid, &[]) {
            Ok(gort) => {
                killer.join().unwrap();
                let state = eventually(Duration::from_secs(10), || {
                    let procs = gort.get_json("/api/v1/processes")?;
                    let state = procs[0]["state"].as_str().context("state")?.to_string();
                    ensure!(state == "exited", "state {state}");
                    Ok(state)
                })
                .unwrap();
                assert_eq!(state, "exited");
                let stderr = gort.stop().unwrap();
                assert!(!stderr.contains("panicked"), "{stderr}");
            }
            Err(e) => {
                killer.join().unwrap();
                let msg = format!("{e:#}");
                assert!(
                    msg.contains("exited while gort was attaching")
                        || msg.contains("does not exist"),
                    "delay {delay_ms} ms: {msg}"
                );
                assert!(!msg.contains("panicked"), "{msg}");
            }
        }
    }
}

/// `--probes sched,gc` attaches only those families: the others are listed as turned off
/// (not as missing from the binary, and not warned about), what they measure is absent, and
/// the parks are measured exactly.
#[test]
fn probes_flag_attaches_only_the_chosen_families() {
    let _serial = serial();
    let exe = build_go_program("parks", "1.22.10", Variant::DEFAULT);
    let mut program = GoProgram::start(&exe, &["-workers=1", "-ops=10", "-block=5ms"], &[])
        .expect("start the program");
    let gort = Gort::attach(program.pid, &["--probes", "sched,gc"]).expect("attach");
    let pid = program.pid.to_string();
    let receives = || -> anyhow::Result<f64> {
        Ok(gort
            .metrics()?
            .get(
                "gort_goroutine_blocks_total",
                &[("pid", pid.as_str()), ("reason", "chan receive")],
            )
            .unwrap_or(0.0))
    };
    let baseline = receives().unwrap();
    program.proceed().unwrap();
    let report = program.read_json().unwrap();
    assert_eq!(report["totals"]["chan receive"]["count"], 10);
    eventually(Duration::from_secs(10), || {
        let seen = receives()? - baseline;
        ensure!(seen == 10.0, "{seen} of 10 receives");
        Ok(())
    })
    .unwrap();

    let procs = gort.get_json("/api/v1/processes").unwrap();
    let off: Vec<(String, String)> = procs[0]["unavailable"]
        .as_array()
        .expect("unavailable")
        .iter()
        .map(|u| {
            (
                u["family"].as_str().unwrap().to_string(),
                u["reason"].as_str().unwrap().to_string(),
            )
        })
        .collect();
    let turned_off = |f: &str| (f.to_string(), "turned off (--probes)".to_string());
    assert_eq!(
        off,
        vec![
            turned_off("lifecycle"),
            turned_off("panics"),
            turned_off("http")
        ],
        "{procs}"
    );
    let m = gort.metrics().unwrap();
    assert_eq!(
        m.get("gort_goroutines_created_total", &[("pid", pid.as_str())]),
        None,
        "goroutine creations measured without the lifecycle probes"
    );
    program.finish().unwrap();
    let stderr = gort.stop().unwrap();
    assert!(!stderr.contains("unavailable"), "{stderr}");
}
