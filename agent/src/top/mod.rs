//! `gort top`: a live view in the terminal (ratatui) of what gort measures: the processes,
//! their blocking by wait reason and call site, their most blocked goroutines, GC pauses and
//! leak suspects. It watches every Go process itself (like `gort run --all`, so it needs
//! root), or shows what a running `gort run` serves (`--agent`). Works in 80×24, over SSH.
//!
//! The viewer is a client of the agent's JSON API (`/api/v1/top`, `/api/v1/goroutines`):
//! `model` holds the state and the keys (pure, tested), `ui` draws it.

pub mod model;
pub mod snapshot;
mod ui;

use std::{
    net::SocketAddr,
    time::{Duration, Instant},
};

use anyhow::{Context, Result, bail};
use clap::Parser;
use ratatui::crossterm::event::{self, Event, KeyCode, KeyEventKind, KeyModifiers};
use serde::Deserialize;

use crate::cli::{Cli, Command, TopOptions};
use model::{Key, Model};
use snapshot::TopSnapshot;

/// Goroutines listed in the detail view.
const GOROUTINES_SHOWN: usize = 8;

/// A goroutine line of the detail view.
#[derive(Debug, Clone)]
pub struct GoroutineLine {
    pub goid: u64,
    pub state: String,
    pub blocked_ns: u64,
    pub created_by: String,
}

pub fn run(o: TopOptions) -> Result<()> {
    if let Some(agent) = &o.agent {
        return view(agent, o.interval);
    }
    // An agent of our own: `gort run --all` on a loopback port, with the same selection.
    let mut args = vec![
        "gort".to_string(),
        "run".into(),
        "--all".into(),
        "--listen".into(),
        "127.0.0.1:0".into(),
    ];
    for rule in &o.include {
        args.extend(["--include".into(), rule.clone()]);
    }
    for rule in &o.exclude {
        args.extend(["--exclude".into(), rule.clone()]);
    }
    if let Some(after) = &o.leak_after {
        args.extend(["--leak-after".into(), after.clone()]);
    }
    let cli = Cli::try_parse_from(args)?;
    let Command::Run(run_options) = cli.command else {
        unreachable!("parsed as run")
    };
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()?;
    let (ready_tx, ready_rx) = tokio::sync::oneshot::channel::<SocketAddr>();
    let (stop_tx, stop_rx) = tokio::sync::oneshot::channel::<()>();
    let agent = runtime.spawn(crate::run::run_until(
        *run_options,
        async {
            let _ = stop_rx.await;
        },
        Some(ready_tx),
    ));
    let Ok(addr) = runtime.block_on(ready_rx) else {
        runtime.block_on(agent)??;
        bail!("gort stopped before serving");
    };
    // The agent's own messages (a process attached, exited) would scribble over the view.
    let log = std::env::temp_dir().join(format!("gort-top-{}.log", std::process::id()));
    redirect_stderr(&log)?;
    let shown = view(&addr.to_string(), o.interval);
    let _ = stop_tx.send(());
    runtime.block_on(agent)??;
    shown
}

fn redirect_stderr(path: &std::path::Path) -> Result<()> {
    use std::os::fd::AsRawFd;
    let file =
        std::fs::File::create(path).with_context(|| format!("cannot create {}", path.display()))?;
    // SAFETY: dup2 on two open descriptors; stderr then refers to the file.
    if unsafe { libc::dup2(file.as_raw_fd(), 2) } < 0 {
        bail!(
            "cannot redirect stderr: {}",
            std::io::Error::last_os_error()
        );
    }
    Ok(())
}

#[derive(Deserialize)]
struct ApiGoroutine {
    goid: u64,
    state: String,
    reason: Option<String>,
    blocked_ns: u64,
    created_by: Option<ApiFrame>,
}

#[derive(Deserialize)]
struct ApiFrame {
    function: String,
    file: String,
    line: u32,
}

/// The view loop: polls the agent every `interval`, redraws, answers keys.
fn view(agent: &str, interval: Duration) -> Result<()> {
    let http: ureq::Agent = ureq::Agent::config_builder()
        .timeout_global(Some(Duration::from_secs(2)))
        .build()
        .into();
    let get = |path: &str| -> Result<String> {
        Ok(http
            .get(&format!("http://{agent}{path}"))
            .call()?
            .body_mut()
            .with_config()
            .limit(64 << 20)
            .read_to_string()?)
    };
    let mut terminal = ratatui::init();
    let mut model = Model::default();
    let mut goroutines: Vec<GoroutineLine> = Vec::new();
    let mut next = Instant::now();
    let result = (|| -> Result<()> {
        loop {
            if Instant::now() >= next {
                next = Instant::now() + interval;
                match get("/api/v1/top")
                    .and_then(|b| serde_json::from_str::<TopSnapshot>(&b).map_err(Into::into))
                {
                    Ok(s) => model.update(s),
                    Err(e) => model.error = Some(format!("{agent}: {e}")),
                }
                goroutines = match model.detail {
                    Some(pid) => get(&format!(
                        "/api/v1/goroutines?pid={pid}&top={GOROUTINES_SHOWN}"
                    ))
                    .ok()
                    .and_then(|b| serde_json::from_str::<Vec<ApiGoroutine>>(&b).ok())
                    .unwrap_or_default()
                    .into_iter()
                    .map(|g| GoroutineLine {
                        goid: g.goid,
                        state: match g.reason {
                            Some(r) => r,
                            None => g.state,
                        },
                        blocked_ns: g.blocked_ns,
                        created_by: g
                            .created_by
                            .map(|f| {
                                let file = f.file.rsplit('/').next().unwrap_or(&f.file).to_string();
                                format!("{} {file}:{}", f.function, f.line)
                            })
                            .unwrap_or_default(),
                    })
                    .collect(),
                    None => Vec::new(),
                };
            }
            terminal.draw(|f| ui::draw(f, &model, &goroutines))?;
            let wait = next.saturating_duration_since(Instant::now());
            if event::poll(wait)? {
                if let Event::Key(k) = event::read()? {
                    if k.kind != KeyEventKind::Press {
                        continue;
                    }
                    let key = match k.code {
                        KeyCode::Char('c') if k.modifiers.contains(KeyModifiers::CONTROL) => {
                            Key::Char('q')
                        }
                        KeyCode::Up => Key::Up,
                        KeyCode::Down => Key::Down,
                        KeyCode::Enter => Key::Enter,
                        KeyCode::Esc | KeyCode::Left => Key::Back,
                        KeyCode::Backspace => Key::Backspace,
                        KeyCode::Char(c) => Key::Char(c),
                        _ => continue,
                    };
                    let detail = model.detail;
                    model.key(key);
                    if model.quit {
                        return Ok(());
                    }
                    if model.detail != detail {
                        // Show the process's goroutines at once.
                        next = Instant::now();
                    }
                }
            }
        }
    })();
    ratatui::restore();
    result
}
