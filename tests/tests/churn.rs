//! Target churn: a program that starts itself anew on its pid (exec), a pid reused by another
//! process of the same binary, processes that live 50 ms. gort must never file one program's
//! data under another's identity: each program's count of parks is exactly its own.
//!
//! `tests/go/churn` sleeps an exact number of times (one park with reason "sleep" each).

use std::time::Duration;

use anyhow::{Context, Result, ensure};
use gort_e2e::{GoProgram, Gort, Variant, build_go_program, eventually, serial};
use serde_json::Value;

/// gort's count of "sleep" parks of `pid`, if it has the series.
fn sleeps(gort: &Gort, pid: u32) -> Result<Option<f64>> {
    Ok(gort.metrics()?.get(
        "gort_goroutine_blocks_total",
        &[("pid", &pid.to_string()), ("reason", "sleep")],
    ))
}

/// Waits until gort counts exactly `want` sleeps for `pid`, and checks that it stays there
/// (a count that went on from an earlier program would pass `want` at once or later).
fn expect_sleeps(gort: &Gort, pid: u32, want: u64, what: &str) -> Result<()> {
    let seen = || -> Result<u64> { Ok(sleeps(gort, pid)?.unwrap_or(0.0) as u64) };
    eventually(Duration::from_secs(8), || {
        let n = seen()?;
        ensure!(
            n >= want,
            "{what}: gort counts {n} sleeps of pid {pid}, want {want}"
        );
        Ok(())
    })?;
    std::thread::sleep(Duration::from_millis(500));
    let n = seen()?;
    ensure!(
        n == want,
        "{what}: gort counts {n} sleeps of pid {pid}; the program slept {want} times"
    );
    Ok(())
}

/// gort's process entries for `pid`.
fn processes_of(gort: &Gort, pid: u32) -> Result<Vec<Value>> {
    Ok(gort
        .get_json("/api/v1/processes")?
        .as_array()
        .context("processes is not an array")?
        .iter()
        .filter(|p| p["pid"] == pid)
        .cloned()
        .collect())
}

/// Waits until gort has `pid` attached through another attachment than `not_slot`; returns
/// its attachment slot. (A program that started anew is attached anew: the ~50 ms until then
/// are not measured.)
fn wait_attached(gort: &Gort, pid: u32, not_slot: Option<u64>) -> Result<u64> {
    eventually(Duration::from_secs(10), || {
        let procs = processes_of(gort, pid)?;
        let slot = procs
            .iter()
            .find(|q| q["state"] == "attached")
            .and_then(|q| q["attach_slot"].as_u64())
            .filter(|&s| Some(s) != not_slot);
        slot.with_context(|| format!("pid {pid} is not attached (anew): {procs:?}"))
    })
}

fn expect_slept(p: &mut GoProgram, n: u64, generation: u64) -> Result<()> {
    let line = p.read_json()?;
    ensure!(
        line["slept"] == n && line["generation"] == generation,
        "the program said {line}, want slept {n} in generation {generation}"
    );
    Ok(())
}

/// `gort run --pid`: the target execs its own binary again (same pid, same start time). gort
/// attaches to the new program anew (a pid-scoped uprobe stays with the first thread's task,
/// which an exec from another thread ends); the new program is a new process to gort, its
/// counts start from zero.
#[test]
fn reexec_under_pid_starts_a_new_identity() -> Result<()> {
    let _serial = serial();
    let exe = build_go_program("churn", "1.22.10", Variant::DEFAULT);
    let mut p = GoProgram::start(&exe, &["-sleeps=30", "-exec-sleeps=50", "-hold"], &[])?;
    let gort = Gort::attach(p.pid, &[])?;
    p.proceed()?;
    expect_slept(&mut p, 30, 1)?;
    expect_sleeps(&gort, p.pid, 30, "first program")?;
    let before = processes_of(&gort, p.pid)?;
    ensure!(before.len() == 1, "processes of pid {}: {before:?}", p.pid);
    let first_slot = wait_attached(&gort, p.pid, None)?;

    p.proceed()?; // exec
    let ready = p.read_json()?;
    ensure!(
        ready["ready"] == true && ready["pid"] == p.pid && ready["generation"] == 2,
        "after the exec the program said {ready}"
    );
    wait_attached(&gort, p.pid, Some(first_slot))?;
    p.proceed()?;
    expect_slept(&mut p, 50, 2)?;
    expect_sleeps(&gort, p.pid, 50, "the exec'd program")?;
    let after = processes_of(&gort, p.pid)?;
    ensure!(
        after.len() == 1
            && after[0]["state"] == "attached"
            && after[0]["first_seen_unix_ns"].as_u64() > before[0]["first_seen_unix_ns"].as_u64(),
        "after the exec gort lists {after:?} (before: {before:?})"
    );
    let pid = p.pid;
    p.finish()?;
    let err = gort.stop()?;
    ensure!(
        err.contains(&format!("process {pid} started"))
            && err.contains("following the new program"),
        "gort did not say it follows the exec'd program: {err}"
    );
    Ok(())
}

/// `gort run --exe`: a process exits and another process of the same binary gets its pid
/// (set through /proc/sys/kernel/ns_last_pid): the second one's counts are its own.
#[test]
fn reused_pid_under_exe_starts_a_new_identity() -> Result<()> {
    let _serial = serial();
    let exe = build_go_program("churn", "1.27.3", Variant::DEFAULT);
    let exe_arg = exe.display().to_string();
    let gort = Gort::start(&["--exe", &exe_arg])?;
    let mut first = GoProgram::start(&exe, &["-sleeps=20"], &[])?;
    let pid = first.pid;
    first.proceed()?;
    expect_slept(&mut first, 20, 1)?;
    ensure!(first.wait()?.success(), "the first program failed");
    expect_sleeps(&gort, pid, 20, "first program")?;
    eventually(Duration::from_secs(5), || {
        let procs = processes_of(&gort, pid)?;
        ensure!(
            procs.len() == 1 && procs[0]["state"] == "exited",
            "the first program is not marked exited: {procs:?}"
        );
        Ok(())
    })?;

    // Another process on the same pid.
    let mut second = None;
    for _ in 0..100 {
        std::fs::write("/proc/sys/kernel/ns_last_pid", (pid - 1).to_string())
            .context("write /proc/sys/kernel/ns_last_pid")?;
        let p = GoProgram::start(&exe, &["-sleeps=40", "-hold"], &[])?;
        if p.pid == pid {
            second = Some(p);
            break;
        }
    }
    let mut second = second.context("no process got the pid again in 100 tries")?;
    second.proceed()?;
    expect_slept(&mut second, 40, 1)?;
    expect_sleeps(&gort, pid, 40, "second program on the reused pid")?;
    let procs = processes_of(&gort, pid)?;
    ensure!(
        procs.len() == 1 && procs[0]["state"] == "attached",
        "the reused pid: {procs:?}"
    );
    second.finish()?;
    Ok(())
}

/// `gort run --exe`: processes that run about 50 ms each; every one is measured under its
/// own pid, completely.
#[test]
fn short_lived_processes_under_exe_are_each_their_own() -> Result<()> {
    let _serial = serial();
    let exe = build_go_program("churn", "1.21.13", Variant::DEFAULT);
    let exe_arg = exe.display().to_string();
    let gort = Gort::start(&["--exe", &exe_arg])?;
    let mut pids = Vec::new();
    for i in 0..10u64 {
        let sleeps = 3 + i;
        let start = std::time::Instant::now();
        let mut p = GoProgram::start(
            &exe,
            &["-nowait", &format!("-sleeps={sleeps}"), "-sleep=4ms"],
            &[],
        )?;
        expect_slept(&mut p, sleeps, 1)?;
        ensure!(p.wait()?.success(), "program {i} failed");
        let lived = start.elapsed();
        ensure!(
            lived < Duration::from_millis(500),
            "program {i} lived {lived:?}: not short"
        );
        pids.push((p.pid, sleeps));
    }
    for (pid, sleeps) in pids {
        expect_sleeps(&gort, pid, sleeps, "short-lived program")?;
    }
    Ok(())
}

/// `gort run --all`: the target execs its own binary again; gort attaches to the new program
/// anew and counts it from zero.
#[test]
fn reexec_under_all_starts_a_new_identity() -> Result<()> {
    let _serial = serial();
    let exe = build_go_program("churn", "1.24.11", Variant::DEFAULT);
    let include = format!("exe={}", exe.display());
    let gort = Gort::start(&["--all", "--include", &include])?;
    let mut p = GoProgram::start(&exe, &["-sleeps=30", "-exec-sleeps=50", "-hold"], &[])?;
    let first_slot = wait_attached(&gort, p.pid, None)?;
    p.proceed()?;
    expect_slept(&mut p, 30, 1)?;
    expect_sleeps(&gort, p.pid, 30, "first program")?;

    p.proceed()?; // exec
    let ready = p.read_json()?;
    ensure!(
        ready["pid"] == p.pid && ready["generation"] == 2,
        "after the exec the program said {ready}"
    );
    wait_attached(&gort, p.pid, Some(first_slot))?;
    p.proceed()?;
    expect_slept(&mut p, 50, 2)?;
    expect_sleeps(&gort, p.pid, 50, "the exec'd program")?;
    p.finish()?;
    Ok(())
}
