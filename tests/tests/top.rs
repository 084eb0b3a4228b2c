//! `gort top`, driven in tmux at 80×24 as a person over SSH would: the processes it watches,
//! sorting, filtering, one process in detail (wait reasons, the blocking call site, its
//! goroutines, the leak suspects with their exact count), back, and quit.

use std::{process::Command, time::Duration};

use anyhow::{Result, ensure};
use gort_e2e::{GoProgram, Variant, build_go_program, eventually, gort_bin, serial};

struct Tmux(String);

impl Tmux {
    fn start(session: &str, command: &str) -> Result<Tmux> {
        let _ = Command::new("tmux")
            .args(["kill-session", "-t", session])
            .status();
        let status = Command::new("tmux")
            .args([
                "new-session",
                "-d",
                "-s",
                session,
                "-x",
                "80",
                "-y",
                "24",
                command,
            ])
            .status()?;
        ensure!(status.success(), "tmux new-session failed");
        Ok(Tmux(session.to_string()))
    }

    fn keys(&self, keys: &[&str]) -> Result<()> {
        let status = Command::new("tmux")
            .args(["send-keys", "-t", &self.0])
            .args(keys)
            .status()?;
        ensure!(status.success(), "tmux send-keys failed");
        Ok(())
    }

    fn screen(&self) -> Result<String> {
        let out = Command::new("tmux")
            .args(["capture-pane", "-p", "-t", &self.0])
            .output()?;
        ensure!(out.status.success(), "tmux capture-pane failed");
        Ok(String::from_utf8_lossy(&out.stdout).into_owned())
    }

    /// Waits until the screen passes `check`.
    fn expect(&self, what: &str, check: impl Fn(&str) -> bool) -> Result<String> {
        eventually(Duration::from_secs(20), || {
            let screen = self.screen()?;
            ensure!(check(&screen), "waiting for {what}; screen:\n{screen}");
            Ok(screen)
        })
    }

    fn alive(&self) -> bool {
        Command::new("tmux")
            .args(["has-session", "-t", &self.0])
            .status()
            .is_ok_and(|s| s.success())
    }
}

impl Drop for Tmux {
    fn drop(&mut self) {
        let _ = Command::new("tmux")
            .args(["kill-session", "-t", &self.0])
            .status();
    }
}

#[test]
fn top_in_tmux() {
    let _serial = serial();
    run().unwrap_or_else(|e| panic!("{e:#}"));
}

fn run() -> Result<()> {
    let leaky_exe = build_go_program("leaky", "1.22.10", Variant::DEFAULT);
    let parks_exe = build_go_program("parks", "1.27.3", Variant::PIE_STRIPPED);
    let mut leaky = GoProgram::start(
        &leaky_exe,
        &["-rate", "50", "-leak-for", "3s"],
        &[("OTEL_SERVICE_NAME", "top-leaky")],
    )?;
    let parks = GoProgram::start(&parks_exe, &[], &[("OTEL_SERVICE_NAME", "top-parks")])?;
    let other = GoProgram::start(&parks_exe, &[], &[("OTEL_SERVICE_NAME", "not-shown")])?;
    let tmux = Tmux::start(
        "gort-top-test",
        &format!(
            "{} top --include 'service=top-*' --leak-after 2s --interval 500ms",
            gort_bin().display()
        ),
    )?;
    let (leaky_pid, parks_pid) = (leaky.pid.to_string(), parks.pid.to_string());
    // Both watched processes listed, with their pids; the third is not.
    let screen = tmux.expect("the process list", |s| {
        s.contains("gort top — 2 processes")
            && s.lines()
                .any(|l| l.contains(&leaky_pid) && l.contains("top-leaky"))
            && s.lines()
                .any(|l| l.contains(&parks_pid) && l.contains("top-parks"))
    })?;
    ensure!(!screen.contains("not-shown"), "{screen}");
    ensure!(
        screen.lines().count() <= 24 && screen.lines().all(|l| l.chars().count() <= 80),
        "does not fit 80×24:\n{screen}"
    );
    // The leaky program's ping-pong shows as chan receive and sleep, all processes summed.
    tmux.expect("blocking by reason", |s| {
        s.lines().any(|l| l.starts_with("chan receive"))
            && s.lines().any(|l| l.starts_with("sleep"))
    })?;

    // Sort.
    tmux.keys(&["s"])?;
    tmux.expect("sort by parks", |s| s.contains("sort: parks"))?;
    tmux.keys(&["s", "s", "s", "s"])?;
    tmux.expect("back to sort by blocked", |s| s.contains("sort: blocked"))?;

    // Filter to the leaky one.
    tmux.keys(&["/", "leaky", "Enter"])?;
    tmux.expect("the filtered list", |s| {
        s.contains("filter: leaky") && s.contains("top-leaky") && !s.contains("top-parks")
    })?;

    // Leak, then look at it in detail.
    leaky.proceed()?;
    let report = leaky.read_json()?;
    let leaked = report["leaked"].as_u64().unwrap_or(0);
    ensure!(leaked > 100, "{report}");
    let created = &report["created_by"];
    let file = created["file"].as_str().unwrap_or("");
    let created_by = format!(
        "{} {}:{}",
        created["function"].as_str().unwrap_or(""),
        file.rsplit('/').next().unwrap_or(file),
        created["line"]
    );
    tmux.keys(&["Enter"])?;
    let want_leak = format!("leak suspects: {leaked} in {created_by} (chan receive)");
    let screen = tmux.expect("the detail view with the leak", |s| {
        s.contains(&format!("pid {leaky_pid} top-leaky")) && s.contains(&want_leak)
    })?;
    ensure!(
        screen.lines().any(|l| l.starts_with("chan receive")),
        "no chan receive: {screen}"
    );
    // The healthy ping-pong's blocking line is a call site; goroutines are listed.
    ensure!(
        screen.contains("CALL SITE") && screen.contains("main.main.func"),
        "{screen}"
    );
    ensure!(
        screen.contains("GOID") && screen.contains("main.main main.go:"),
        "{screen}"
    );

    // Back, and quit.
    tmux.keys(&["Escape"])?;
    tmux.expect("the list again", |s| {
        s.contains("PARKS/s") && s.contains("top-leaky")
    })?;
    tmux.keys(&["q"])?;
    eventually(Duration::from_secs(10), || {
        ensure!(!tmux.alive(), "gort top still running");
        Ok(())
    })?;
    drop((leaky, parks, other));
    Ok(())
}
