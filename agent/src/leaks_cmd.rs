//! `gort leaks`: the leak suspects of a running `gort run`, as a table a person can read.

use std::fmt::Write;

use anyhow::{Context, Result};
use serde_json::Value;

use crate::cli::LeaksOptions;

pub fn run(o: &LeaksOptions) -> Result<()> {
    let mut url = format!("http://{}/api/v1/leaks", o.agent);
    if let Some(pid) = o.pid {
        url.push_str(&format!("?pid={pid}"));
    }
    let body = ureq::get(&url)
        .call()
        .with_context(|| {
            format!(
                "cannot reach gort at {} (is `gort run` serving there?)",
                o.agent
            )
        })?
        .body_mut()
        .read_to_string()?;
    if o.json {
        println!("{body}");
        return Ok(());
    }
    let groups: Vec<Value> =
        serde_json::from_str(&body).context("the agent's answer is not a list")?;
    print!("{}", render(&groups));
    Ok(())
}

fn frame(v: &Value) -> String {
    if v.is_null() {
        return "?".into();
    }
    let file = v["file"].as_str().unwrap_or("?");
    let file = file.rsplit('/').next().unwrap_or(file);
    format!(
        "{} {file}:{}",
        v["function"].as_str().unwrap_or("?"),
        v["line"]
    )
}

/// The table: one line per suspect group, largest first.
pub fn render(groups: &[Value]) -> String {
    let mut out = String::new();
    if groups.is_empty() {
        out.push_str("no goroutine leak suspects\n");
        return out;
    }
    let _ = writeln!(
        out,
        "{:>7}  {:>10}  {:>11}  {:>7}  {:<16}  {:<40}  blocked at",
        "PID", "GOROUTINES", "GROWTH/s", "OLDEST", "REASON", "CREATED BY"
    );
    for g in groups {
        let age_s = g["oldest_park_age_ns"].as_f64().unwrap_or(0.0) / 1e9;
        let at_least = if g["parked_before_attach"] == true {
            ">"
        } else {
            ""
        };
        let _ = writeln!(
            out,
            "{:>7}  {:>10}  {:>11.1}  {:>7}  {:<16}  {:<40}  {}",
            g["pid"],
            g["goroutines"],
            g["growth_per_second"].as_f64().unwrap_or(0.0),
            format!("{at_least}{age_s:.0}s"),
            g["reason"].as_str().unwrap_or("?"),
            frame(&g["created_by"]),
            frame(&g["blocking_frame"]),
        );
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn renders_a_row_per_group() {
        let groups: Vec<Value> = serde_json::from_str(
            r#"[{"pid": 42, "goroutines": 300, "growth_per_second": 50.0, "oldest_park_age_ns": 6200000000,
                 "parked_before_attach": false, "reason": "chan receive",
                 "created_by": {"function": "main.leak", "file": "/src/main.go", "line": 42},
                 "blocking_frame": {"function": "main.leak.func1", "file": "/src/main.go", "line": 45}}]"#,
        )
        .unwrap();
        let table = render(&groups);
        let row = table.lines().nth(1).unwrap();
        assert!(
            row.contains("300") && row.contains("50.0") && row.contains("6s"),
            "{row}"
        );
        assert!(
            row.contains("main.leak main.go:42") && row.ends_with("main.leak.func1 main.go:45"),
            "{row}"
        );
        assert_eq!(render(&[]), "no goroutine leak suspects\n");
    }
}
