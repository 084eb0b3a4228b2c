//! The pprof block profile, read back by Go's own `go tool pprof -raw`: the parks program
//! blocks a known number of times for known lengths at known call sites; the samples whose
//! stacks hold a site add up to exactly its count and, within 2 %, to the time the program
//! measured, and the blocking function is the top of each such stack's user frames.
//! Both ways of getting one: `gort profile --pid N --seconds S` (attaches by itself for the
//! window) and `GET /debug/pprof/block?pid=N` of a running `gort run` (since it attached).

use std::{
    collections::BTreeMap,
    io::{BufRead, BufReader},
    path::Path,
    process::{Command, Stdio},
    time::Duration,
};

use anyhow::{Context, Result, ensure};
use gort_e2e::{GoProgram, Gort, Variant, build_go_program, go, gort_bin, serial};
use serde_json::Value;

/// A sample of `go tool pprof -raw`: count, delay, its stack as (function, line), innermost
/// first, and its labels.
#[derive(Debug)]
struct Sample {
    count: u64,
    delay_ns: u64,
    stack: Vec<(String, u32)>,
    labels: String,
}

/// Parses what `go tool pprof -raw` prints: a `Samples:` section, then `Locations`, each
/// location a line `ID: ADDRESS M=N FUNCTION FILE:LINE s=0` plus one line per inlined caller.
fn pprof_raw(go_version: &str, file: &Path) -> Result<(String, Vec<Sample>)> {
    let out = Command::new(go(go_version))
        .args(["tool", "pprof", "-raw"])
        .arg(file)
        .env("GOTOOLCHAIN", "local")
        .output()?;
    let text = String::from_utf8_lossy(&out.stdout).into_owned();
    ensure!(
        out.status.success(),
        "go tool pprof -raw failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let mut raw: Vec<(u64, u64, Vec<u64>, String)> = Vec::new();
    let mut locations: BTreeMap<u64, Vec<(String, u32)>> = BTreeMap::new();
    let mut section = "";
    let mut current: Option<u64> = None;
    for line in text.lines() {
        match line.trim() {
            "Samples:" | "Locations" | "Mappings" => {
                section = line.trim();
                continue;
            }
            _ => {}
        }
        let t = line.trim();
        if t.is_empty() {
            continue;
        }
        match section {
            "Samples:" => {
                if let Some((values, ids)) = t.split_once(':') {
                    let v: Vec<u64> = values
                        .split_whitespace()
                        .filter_map(|x| x.parse().ok())
                        .collect();
                    if v.len() == 2 {
                        let ids = ids
                            .split_whitespace()
                            .filter_map(|x| x.parse().ok())
                            .collect();
                        raw.push((v[0], v[1], ids, String::new()));
                        continue;
                    }
                }
                if let Some(last) = raw.last_mut() {
                    last.3.push_str(t);
                }
            }
            "Locations" => {
                let mut words: Vec<&str> = t.split_whitespace().collect();
                // Drop `s=0`; the last word left is FILE:LINE, then the function.
                if words.last().is_some_and(|w| w.starts_with("s=")) {
                    words.pop();
                }
                // FILE:LINE, or FILE:LINE:COLUMN (newer pprof).
                let line_no = words
                    .last()
                    .map(|w| {
                        let parts: Vec<&str> = w.rsplitn(3, ':').collect();
                        let numeric = |s: &str| s.parse::<u32>().ok();
                        match parts.as_slice() {
                            [col, line, _] if numeric(col).is_some() && numeric(line).is_some() => {
                                numeric(line).unwrap_or(0)
                            }
                            [line, ..] => numeric(line).unwrap_or(0),
                            [] => 0,
                        }
                    })
                    .unwrap_or(0);
                words.pop();
                if let Some(id) = words
                    .first()
                    .and_then(|w| w.strip_suffix(':'))
                    .and_then(|w| w.parse().ok())
                {
                    current = Some(id);
                    // ID ADDRESS M=N FUNCTION
                    let function = words[3..].join(" ");
                    locations.entry(id).or_default().push((function, line_no));
                } else if let Some(id) = current {
                    locations
                        .entry(id)
                        .or_default()
                        .push((words.join(" "), line_no));
                }
            }
            _ => {}
        }
    }
    let samples = raw
        .into_iter()
        .map(|(count, delay_ns, ids, labels)| Sample {
            count,
            delay_ns,
            stack: ids
                .iter()
                .flat_map(|id| locations.get(id).cloned().unwrap_or_default())
                .collect(),
            labels,
        })
        .collect();
    Ok((text, samples))
}

/// Checks the profile against the program's report.
fn check_profile(go_version: &str, file: &Path, report: &Value) -> Result<()> {
    let (text, samples) = pprof_raw(go_version, file)?;
    ensure!(
        text.contains("contentions/count delay/nanoseconds"),
        "sample types:\n{text}"
    );
    let mut sites: BTreeMap<String, (String, u32)> = BTreeMap::new();
    for w in report["workers"].as_array().context("workers")? {
        let site = &w["block_site"];
        sites.insert(
            w["kind"].as_str().unwrap_or("").to_string(),
            (
                site["function"].as_str().unwrap_or("").to_string(),
                site["line"].as_u64().unwrap_or(0) as u32,
            ),
        );
    }
    ensure!(sites.len() >= 8, "sites {sites:?}");
    for (kind, site) in &sites {
        let at_site: Vec<&Sample> = samples
            .iter()
            .filter(|s| s.stack.iter().any(|f| f == site))
            .collect();
        let count: u64 = at_site.iter().map(|s| s.count).sum();
        let delay: u64 = at_site.iter().map(|s| s.delay_ns).sum();
        let want = &report["totals"][kind];
        let (want_count, want_ns) = (
            want["count"].as_u64().context("count")?,
            want["blocked_ns"].as_u64().context("blocked_ns")?,
        );
        ensure!(
            count == want_count,
            "{kind} at {site:?}: {count} contentions in the profile, the program blocked \
             {want_count} times; samples {at_site:?}"
        );
        ensure!(
            delay <= want_ns && delay as f64 >= 0.98 * want_ns as f64,
            "{kind} at {site:?}: {delay} ns in the profile, the program measured {want_ns} ns"
        );
        // The first frame of the program's own code (past the runtime and standard library)
        // is the blocking closure, at the site or called from it.
        for s in &at_site {
            let first_user = s
                .stack
                .iter()
                .find(|(f, _)| f.starts_with("main."))
                .context("no main. frame")?;
            ensure!(
                first_user.0.starts_with(&site.0),
                "{kind}: first user frame {first_user:?}, site {site:?}"
            );
            ensure!(s.labels.contains("reason:["), "{kind}: labels {}", s.labels);
        }
    }
    // `go tool pprof -top` reads it too, and the program's blocking is what it shows.
    let top = Command::new(go(go_version))
        .args(["tool", "pprof", "-top", "-cum"])
        .arg(file)
        .env("GOTOOLCHAIN", "local")
        .output()?;
    let top_text = String::from_utf8_lossy(&top.stdout);
    ensure!(
        top.status.success() && top_text.contains("main.(*worker).measure"),
        "go tool pprof -top:\n{top_text}{}",
        String::from_utf8_lossy(&top.stderr)
    );
    Ok(())
}

/// `gort_goroutine_site_blocks_total` / `_site_blocked_seconds_total`: per blocking line of
/// the program (every park of 20 ms has its stack captured), exactly its count, and its
/// time within 2 %.
fn check_site_series(gort: &Gort, pid: &str, report: &Value) -> Result<()> {
    let mut want: BTreeMap<u64, (f64, f64)> = BTreeMap::new();
    for w in report["workers"].as_array().context("workers")? {
        let kind = w["kind"].as_str().unwrap_or("");
        let line = w["block_site"]["line"].as_u64().context("line")?;
        let totals = &report["totals"][kind];
        let e = want.entry(line).or_default();
        e.0 = totals["count"].as_f64().context("count")?;
        e.1 = totals["blocked_ns"].as_f64().context("blocked_ns")? / 1e9;
    }
    let m = gort.metrics()?;
    for (line, (count, seconds)) in &want {
        let suffix = format!(" main.go:{line}");
        let sum = |name: &str| -> f64 {
            m.all(name, &[("pid", pid)])
                .iter()
                .filter(|(l, _)| l.get("site").is_some_and(|s| s.ends_with(&suffix)))
                .map(|(_, v)| v)
                .sum()
        };
        let got = sum("gort_goroutine_site_blocks_total");
        ensure!(
            got == *count,
            "site main.go:{line}: {got} parks, the program {count}"
        );
        let got = sum("gort_goroutine_site_blocked_seconds_total");
        ensure!(
            got <= *seconds && got >= 0.98 * seconds,
            "site main.go:{line}: {got} s, the program {seconds} s"
        );
    }
    Ok(())
}

const ARGS: &[&str] = &["-workers=2", "-ops=10", "-block=20ms"];

/// `gort profile --pid N --seconds S -o FILE`, attaching by itself.
#[test]
fn gort_profile_command_go1_22() {
    let _serial = serial();
    (|| -> Result<()> {
        let go_version = "1.22.10";
        let exe = build_go_program("parks", go_version, Variant::DEFAULT);
        let mut program = GoProgram::start(&exe, ARGS, &[])?;
        let file = std::env::temp_dir().join(format!("gort-block-{}.pb.gz", program.pid));
        let mut profiler = Command::new(gort_bin())
            .args([
                "profile",
                "--pid",
                &program.pid.to_string(),
                "--seconds",
                "5",
            ])
            .arg("-o")
            .arg(&file)
            .stderr(Stdio::piped())
            .spawn()?;
        // Attached once it says it is profiling.
        let mut stderr = BufReader::new(profiler.stderr.take().context("stderr")?);
        let mut said = String::new();
        loop {
            let mut line = String::new();
            ensure!(
                stderr.read_line(&mut line)? > 0,
                "gort profile ended: {said}"
            );
            said.push_str(&line);
            if line.contains("profiling pid") {
                break;
            }
        }
        program.proceed()?;
        let report = program.read_json()?;
        let status = profiler.wait()?;
        let mut rest = String::new();
        std::io::Read::read_to_string(&mut stderr, &mut rest)?;
        ensure!(status.success(), "gort profile: {status}: {said}{rest}");
        check_profile(go_version, &file, &report)?;
        let _ = std::fs::remove_file(&file);
        program.finish()
    })()
    .unwrap_or_else(|e| panic!("{e:#}"));
}

/// `GET /debug/pprof/block?pid=N` of `gort run`: everything since it attached; a stripped
/// position-independent binary, symbolized from its .gopclntab.
#[test]
fn debug_pprof_block_go1_27_pie_stripped() {
    let _serial = serial();
    (|| -> Result<()> {
        let go_version = "1.27.3";
        let exe = build_go_program("parks", go_version, Variant::PIE_STRIPPED);
        let mut program = GoProgram::start(&exe, ARGS, &[])?;
        let pid = program.pid.to_string();
        let gort = Gort::attach(program.pid, &[])?;
        program.proceed()?;
        let report = program.read_json()?;
        // The last blocks reach the aggregator within a drain interval.
        std::thread::sleep(Duration::from_millis(300));
        let body = gort.get_bytes(&format!("/debug/pprof/block?pid={pid}"))?;
        let file = std::env::temp_dir().join(format!("gort-block-{pid}.pb.gz"));
        std::fs::write(&file, body)?;
        check_profile(go_version, &file, &report)?;
        let _ = std::fs::remove_file(&file);
        check_site_series(&gort, &pid, &report)?;
        check_site_series(&gort, &pid, &report)?;
        // Hostile or wrong queries get a clear answer.
        let bad = ureq::get(&format!(
            "{}/debug/pprof/block?pid=1&seconds=99999",
            gort.base
        ))
        .call();
        ensure!(bad.is_err(), "seconds=99999 accepted");
        let missing = ureq::get(&format!("{}/debug/pprof/block?pid=1", gort.base)).call();
        ensure!(missing.is_err(), "an unwatched pid answered");
        program.finish()?;
        gort.stop()?;
        Ok(())
    })()
    .unwrap_or_else(|e| panic!("{e:#}"));
}
