//! `gort`: where the goroutines of a running Go service spend their time blocked, measured
//! from outside with eBPF uprobes on any unmodified Go binary.
//!
//! This file only parses the command line, starts the work and turns errors into one line
//! and an exit code.

mod aggregate;
mod budget;
mod cli;
mod collect;
mod export;
mod fleet;
mod inspect;
mod leaks_cmd;
mod privileges;
mod probes;
mod profile_cmd;
mod run;
mod stress_cmd;
mod target;
mod tls;
mod top;

use std::process::ExitCode;

use clap::Parser;

use crate::cli::{Cli, Command};

fn main() -> ExitCode {
    env_logger::Builder::from_env(env_logger::Env::default().default_filter_or("warn")).init();
    unset_empty_settings();
    let cli = Cli::parse();
    let result = match cli.command {
        Command::Inspect(o) => inspect::run(&o).map(|attachable| {
            if attachable {
                ExitCode::SUCCESS
            } else {
                ExitCode::from(2)
            }
        }),
        Command::Leaks(o) => leaks_cmd::run(&o).map(|()| ExitCode::SUCCESS),
        Command::Top(o) => top::run(o).map(|()| ExitCode::SUCCESS),
        Command::StressAttach(o) => stress_cmd::run(&o).map(|()| ExitCode::SUCCESS),
        Command::Run(o) => privileges::drop_all_but(&privileges::kept(o.listen.port()))
            .map_err(|e| anyhow::anyhow!("cannot drop capabilities: {e}"))
            .and_then(|()| runtime())
            .and_then(|rt| rt.block_on(run::run(*o)))
            .map(|()| ExitCode::SUCCESS),
        Command::Profile(o) => runtime()
            .and_then(|rt| rt.block_on(profile_cmd::run(o)))
            .map(|()| ExitCode::SUCCESS),
    };
    match result {
        Ok(code) => code,
        Err(e) => {
            // One line: the error and its causes.
            eprintln!("gort: {}", chain(&e));
            ExitCode::FAILURE
        }
    }
}

fn runtime() -> anyhow::Result<tokio::runtime::Runtime> {
    Ok(tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()?)
}

fn chain(e: &anyhow::Error) -> String {
    let mut parts: Vec<String> = Vec::new();
    for cause in e.chain() {
        let s = cause.to_string();
        // thiserror messages often embed their source already.
        if !parts.last().is_some_and(|p| p.contains(&s)) {
            parts.push(s);
        }
    }
    parts.join(": ")
}

/// A setting given as an empty environment variable (a ConfigMap's `GORT_INCLUDE: ""`) is
/// not given: clap would parse the empty string as its value.
fn unset_empty_settings() {
    let empty: Vec<_> = std::env::vars_os()
        .filter(|(k, v)| k.to_str().is_some_and(|k| k.starts_with("GORT_")) && v.is_empty())
        .map(|(k, _)| k)
        .collect();
    for key in empty {
        // SAFETY: at the start of main, before any other thread exists.
        unsafe { std::env::remove_var(key) };
    }
}
