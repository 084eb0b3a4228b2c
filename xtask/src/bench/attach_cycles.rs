//! `cargo xtask bench --attach-cycles N`: the target is never harmed by probes coming and
//! going. `tests/go/invariants` (values through channels, stacks that grow and move, a
//! mutex-protected counter, timers, goroutines coming and going; it checks every result)
//! runs while `gort stress-attach` attaches the probe families, holds them in for a moment
//! and takes them out again, N times; then the program reports whether every check passed.
//! Too long for the test suite (a cycle takes ~0.1 s: the kernel waits out a grace period as
//! it removes the links; 10,000 take ~17 min), so it is a bench job.

use std::{
    io::{BufRead, Write},
    path::Path,
    process::Command,
    time::Instant,
};

use anyhow::{Context, Result, ensure};
use serde_json::Value;

use crate::setup::{self, run_cmd, workspace_root};

pub fn run(go: &Path, go_version: &str, cycles: u64, probes: &str, hold_ms: u64) -> Result<()> {
    let root = workspace_root();
    let exe = root.join("target/bench/invariants");
    run_cmd(&mut setup::go_build(
        go,
        &root.join("tests/go/invariants"),
        &exe,
    ))?;
    let (mut program, mut stdout, _) =
        super::start_ready(&mut Command::new(&exe), "tests/go/invariants")?;
    let pid = program.0.id();
    let mut line = String::new();

    let t0 = Instant::now();
    let out = Command::new(root.join("target/release/gort"))
        .args(["stress-attach", "--pid", &pid.to_string()])
        .args(["--cycles", &cycles.to_string()])
        .args(["--probes", probes])
        .args(["--hold-ms", &hold_ms.to_string()])
        .output()
        .context("run gort stress-attach")?;
    ensure!(
        out.status.success(),
        "gort stress-attach: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let wall = t0.elapsed().as_secs_f64();
    let done: Value = serde_json::from_slice(&out.stdout)?;

    let mut stdin = program.0.stdin.take().expect("piped");
    stdin.write_all(b"stop\n")?;
    line.clear();
    stdout.read_line(&mut line)?;
    let report: Value =
        serde_json::from_str(&line).with_context(|| format!("invariants said {line:?}"))?;
    let per_cycle_ms = |key: &str| done[key].as_f64().unwrap_or(f64::NAN) * 1e3 / cycles as f64;
    println!(
        "\nattach/detach cycles (tests/go/invariants, Go {go_version}, probes {probes}, held in {hold_ms} ms each)\n"
    );
    println!(
        "{} cycles in {:.0} s: attach {:.1} ms, detach {:.1} ms per cycle; the target made {} checks, {}",
        done["cycles"],
        wall,
        per_cycle_ms("attach_seconds"),
        per_cycle_ms("detach_seconds"),
        report["checks"],
        if report["ok"] == true {
            "all passed".to_string()
        } else {
            format!("FAILED: {}", report["failures"])
        }
    );
    ensure!(
        report["ok"] == true,
        "the target's invariants broke: {report}"
    );
    Ok(())
}
