//! The bpftrace configuration of `cargo xtask bench`: the same measurement as gort's default
//! park probes (per wait reason, how long goroutines stay parked), written as a bpftrace script
//! the way one would by hand: `runtime.gopark`'s entry records the time and the wait reason
//! (its third argument, RCX in Go's register ABI) under the goroutine (R14); `runtime.ready`'s
//! entry (the waker making the goroutine, its first argument RAX, runnable) ends it, into a
//! per-reason histogram. Two traps per park, as gort's. (bpftrace 0.17 refuses probes at an
//! offset inside a function, so the end is the park → ready time, not park → running.)

use std::{
    io::{BufRead, BufReader, Read},
    path::Path,
    process::{Child, Command, Stdio},
    thread,
    time::{Duration, Instant},
};

use anyhow::{Context, Result, bail, ensure};

/// A running bpftrace; stopped (SIGINT, so it prints its maps) by [`Bpftrace::finish`].
pub struct Bpftrace {
    child: Child,
}

impl Bpftrace {
    /// Starts the script on process `pid` of `exe` and waits until its probes are attached.
    pub fn start(exe: &Path, pid: u32) -> Result<Bpftrace> {
        ensure_tracefs()?;
        let exe = exe.display();
        let script = format!(
            r#"uprobe:{exe}:"runtime.gopark" /pid == {pid}/ {{ @start[reg("r14")] = nsecs; @why[reg("r14")] = reg("cx") & 0xff; }}
uprobe:{exe}:"runtime.ready" /pid == {pid}/ {{ $g = reg("ax"); if (@start[$g]) {{ @ns[@why[$g]] = hist(nsecs - @start[$g]); @n[@why[$g]] = count(); delete(@start[$g]); delete(@why[$g]); }} }}"#
        );
        let mut child = Command::new("bpftrace")
            .arg("-e")
            .arg(script)
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .spawn()
            .context("run bpftrace (Debian package bpftrace)")?;
        let mut stdout = BufReader::new(child.stdout.take().expect("piped"));
        let mut line = String::new();
        stdout.read_line(&mut line)?;
        ensure!(line.starts_with("Attaching"), "bpftrace said {line:?}");
        // It says so before attaching.
        thread::sleep(Duration::from_millis(1500));
        child.stdout = Some(stdout.into_inner());
        Ok(Bpftrace { child })
    }

    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// Stops it; returns how many parks it measured.
    pub fn finish(mut self) -> Result<f64> {
        // SAFETY: kill has no memory preconditions.
        unsafe { libc::kill(self.child.id() as i32, libc::SIGINT) };
        let mut out = String::new();
        self.child
            .stdout
            .take()
            .context("no stdout")?
            .read_to_string(&mut out)?;
        let deadline = Instant::now() + Duration::from_secs(10);
        while self.child.try_wait()?.is_none() {
            if Instant::now() > deadline {
                let _ = self.child.kill();
                bail!("bpftrace did not stop");
            }
            thread::sleep(Duration::from_millis(20));
        }
        Ok(out
            .lines()
            .filter(|l| l.starts_with("@n["))
            .filter_map(|l| l.rsplit(':').next()?.trim().parse::<f64>().ok())
            .sum())
    }
}

impl Drop for Bpftrace {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// bpftrace 0.17 makes its uprobes through tracefs; mount it where a host has none.
fn ensure_tracefs() -> Result<()> {
    if Path::new("/sys/kernel/tracing/uprobe_events").exists() {
        return Ok(());
    }
    let status = Command::new("mount")
        .args(["-t", "tracefs", "nodev", "/sys/kernel/tracing"])
        .status()?;
    ensure!(status.success(), "cannot mount tracefs for bpftrace");
    eprintln!("bench: mounted tracefs at /sys/kernel/tracing (bpftrace needs it)");
    Ok(())
}
