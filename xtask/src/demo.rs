//! `cargo xtask demo`: installs what is missing, builds gort and a small Go shop service
//! (`tests/go/demo`), starts the service, attaches gort to it and shows, live, where the
//! service's goroutines block — from gort's own API.

use std::{
    collections::BTreeMap,
    io::{BufRead, BufReader},
    process::{Child, Command, Stdio},
    thread,
    time::{Duration, Instant},
};

use anyhow::{Context, Result, bail};
use serde_json::Value;

use crate::{
    build_ebpf,
    setup::{self, DEMO_GO_VERSION, run_cmd, workspace_root},
};

#[derive(clap::Args)]
pub struct Options {
    /// Stop after this many seconds (default: run until Ctrl-C).
    #[arg(long)]
    seconds: Option<u64>,
    /// Where gort serves /metrics and its API.
    #[arg(long, default_value = "127.0.0.1:9464")]
    listen: String,
}

/// Kills the child when dropped.
struct Guard(Child);

impl Drop for Guard {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

pub fn run(o: Options) -> Result<()> {
    let root = workspace_root();
    let go = setup::ensure_go(DEMO_GO_VERSION)?;
    build_ebpf::run(build_ebpf::Options::default())?;
    setup::build_gort_release()?;
    let demo = root.join("target/demo/shop");
    run_cmd(&mut setup::go_build(
        &go,
        &root.join("tests/go/demo"),
        &demo,
    ))?;

    let mut shop = Command::new(&demo)
        .env("OTEL_SERVICE_NAME", "demo-shop")
        .stdout(Stdio::piped())
        .spawn()
        .context("start the demo service")?;
    let mut first = String::new();
    BufReader::new(shop.stdout.take().expect("piped")).read_line(&mut first)?;
    let shop = Guard(shop);
    println!("{}", first.trim());

    let gort = Guard(
        Command::new(root.join("target/release/gort"))
            .args([
                "run",
                "--pid",
                &shop.0.id().to_string(),
                "--listen",
                &o.listen,
            ])
            .spawn()
            .context("start gort (the demo needs root)")?,
    );
    let base = format!("http://{}", o.listen);
    let start = Instant::now();
    let mut previous: BTreeMap<String, f64> = BTreeMap::new();
    let mut gort = gort;
    loop {
        thread::sleep(Duration::from_secs(2));
        if let Some(status) = gort.0.try_wait()? {
            bail!("gort exited: {status}");
        }
        let Ok(metrics) = get(&format!("{base}/metrics")) else {
            continue;
        };
        let goroutines: Value = get(&format!("{base}/api/v1/goroutines"))
            .ok()
            .and_then(|s| serde_json::from_str(&s).ok())
            .unwrap_or(Value::Null);
        print!("\x1b[2J\x1b[H");
        println!(
            "gort demo — pid {} — {:.0} s — {base}/metrics, {base}/api/v1/goroutines — Ctrl-C to stop\n",
            shop.0.id(),
            start.elapsed().as_secs_f64()
        );
        render(&metrics, &goroutines, &mut previous);
        if o.seconds
            .is_some_and(|s| start.elapsed() >= Duration::from_secs(s))
        {
            break;
        }
    }
    Ok(())
}

fn get(url: &str) -> Result<String> {
    Ok(ureq::get(url).call()?.body_mut().read_to_string()?)
}

/// Prints blocking by wait reason (rates over the last refresh) and the most blocked
/// goroutines with where they block.
fn render(metrics: &str, goroutines: &Value, previous: &mut BTreeMap<String, f64>) {
    let mut rows: BTreeMap<String, [f64; 3]> = BTreeMap::new();
    for line in metrics.lines().filter(|l| !l.starts_with('#')) {
        let Some((series, value)) = line.rsplit_once(' ') else {
            continue;
        };
        let Ok(value) = value.parse::<f64>() else {
            continue;
        };
        let Some(reason) = series
            .split("reason=\"")
            .nth(1)
            .and_then(|r| r.split('"').next())
        else {
            continue;
        };
        let col = if series.starts_with("gort_goroutine_blocks_total") {
            0
        } else if series.starts_with("gort_goroutine_blocked_seconds_total") {
            1
        } else if series.starts_with("gort_goroutines_blocked{") {
            2
        } else {
            continue;
        };
        rows.entry(reason.to_string()).or_default()[col] += value;
    }
    println!(
        "{:<28} {:>10} {:>12} {:>14} {:>10}",
        "wait reason", "parks/s", "total parks", "blocked total", "parked now"
    );
    for (reason, [parks, seconds, now]) in &rows {
        let rate = (parks - previous.get(reason).copied().unwrap_or(*parks)) / 2.0;
        previous.insert(reason.clone(), *parks);
        println!("{reason:<28} {rate:>10.0} {parks:>12.0} {seconds:>13.2}s {now:>10.0}");
    }
    let mut gs: Vec<&Value> = goroutines
        .as_array()
        .map(|a| a.iter().collect())
        .unwrap_or_default();
    gs.sort_by_key(|g| std::cmp::Reverse(g["blocked_ns"].as_u64().unwrap_or(0)));
    println!("\nmost blocked goroutines:");
    println!(
        "{:>6} {:<8} {:>12}  {:<22} where",
        "goid", "state", "blocked", "mostly on"
    );
    for g in gs.iter().take(12) {
        let b = &g["blocking"][0];
        let frame = &b["max_frame"];
        let at = if frame.is_null() {
            g["start_function"].as_str().unwrap_or("?").to_string()
        } else {
            format!(
                "{} {}:{}",
                frame["function"].as_str().unwrap_or("?"),
                short(frame["file"].as_str().unwrap_or("?")),
                frame["line"]
            )
        };
        println!(
            "{:>6} {:<8} {:>11.3}s  {:<22} {}",
            g["goid"].as_u64().unwrap_or(0),
            g["state"].as_str().unwrap_or("?"),
            g["blocked_ns"].as_f64().unwrap_or(0.0) / 1e9,
            b["reason"].as_str().unwrap_or("-"),
            at
        );
    }
}

fn short(file: &str) -> &str {
    file.rsplit('/').next().unwrap_or(file)
}
