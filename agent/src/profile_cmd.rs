//! `gort profile`: a pprof block profile of one process, written to a file. Either attaches
//! for the window itself (what `gort run` does, serving on a loopback port only for this), or
//! asks a `gort run` that already watches the process.

use std::{net::SocketAddr, time::Duration};

use anyhow::{Context, Result, bail};
use clap::Parser;

use crate::cli::{Cli, Command, ProfileOptions};

pub async fn run(o: ProfileOptions) -> Result<()> {
    let url = |agent: &str| {
        format!(
            "http://{agent}/debug/pprof/block?pid={}&seconds={}&runtime={}",
            o.pid,
            o.seconds.max(1),
            u8::from(o.runtime)
        )
    };
    let body = match &o.agent {
        Some(agent) => fetch(url(agent), agent.clone(), o.seconds).await?,
        None => {
            // The options of `gort run --pid N`, defaults and all.
            let cli = Cli::try_parse_from([
                "gort",
                "run",
                "--pid",
                &o.pid.to_string(),
                "--listen",
                "127.0.0.1:0",
            ])?;
            let Command::Run(run_options) = cli.command else {
                unreachable!("parsed as run")
            };
            let (ready_tx, ready_rx) = tokio::sync::oneshot::channel::<SocketAddr>();
            let (stop_tx, stop_rx) = tokio::sync::oneshot::channel::<()>();
            let agent = tokio::spawn(crate::run::run_until(
                *run_options,
                async {
                    let _ = stop_rx.await;
                },
                Some(ready_tx),
            ));
            let addr = match ready_rx.await {
                Ok(addr) => addr,
                // It failed before serving: its error says why.
                Err(_) => {
                    agent.await??;
                    bail!("gort stopped before attaching");
                }
            };
            eprintln!("gort: profiling pid {} for {} s", o.pid, o.seconds.max(1));
            let body = fetch(url(&addr.to_string()), addr.to_string(), o.seconds).await;
            let _ = stop_tx.send(());
            agent.await??;
            body?
        }
    };
    std::fs::write(&o.output, &body)
        .with_context(|| format!("cannot write {}", o.output.display()))?;
    eprintln!(
        "gort: wrote {} ({} bytes); read it with `go tool pprof {}`",
        o.output.display(),
        body.len(),
        o.output.display()
    );
    Ok(())
}

async fn fetch(url: String, agent: String, seconds: u64) -> Result<Vec<u8>> {
    tokio::task::spawn_blocking(move || -> Result<Vec<u8>> {
        let agent_config = ureq::Agent::config_builder()
            .timeout_global(Some(Duration::from_secs(seconds + 60)))
            .http_status_as_error(false)
            .build();
        let agent_http: ureq::Agent = agent_config.into();
        let mut resp = agent_http
            .get(&url)
            .call()
            .with_context(|| format!("cannot reach gort at {agent}"))?;
        if !resp.status().is_success() {
            let text = resp.body_mut().read_to_string().unwrap_or_default();
            bail!("gort at {agent}: {}", text.trim());
        }
        Ok(resp.body_mut().with_config().limit(1 << 30).read_to_vec()?)
    })
    .await?
}
