//! `gort inspect BINARY`: what gort finds in a Go binary and whether it can attach — without
//! root and without running anything.

use std::path::Path;

use anyhow::Result;
use gobinary::GoBinary;
use serde_json::{Value, json};

use crate::{
    cli::InspectOptions,
    target::{GOPARK, GoTarget},
};

/// Prints the report; returns whether gort can attach to the binary.
pub fn run(o: &InspectOptions) -> Result<bool> {
    let report = report(&o.binary);
    if o.json {
        println!("{}", serde_json::to_string_pretty(&report)?);
    } else {
        print!("{}", render_text(&report));
    }
    Ok(report["attachable"] == json!(true))
}

/// Everything inspect knows about `path`, as JSON.
pub fn report(path: &Path) -> Value {
    let binary = match GoBinary::open(path) {
        Ok(b) => std::sync::Arc::new(b),
        Err(e) => {
            return json!({ "path": path.display().to_string(), "attachable": false, "reason": error_chain(&e) });
        }
    };
    let info = binary.build_info();
    let mut r = json!({
        "path": path.display().to_string(),
        "go_version": info.go_version_raw,
        "arch": format!("{:?}", binary.arch()).to_lowercase(),
        "pie": binary.is_pie(),
        "stripped": !binary.has_symtab(),
        "dwarf": binary.has_dwarf(),
        "main_module": info.main_module.as_ref().map(|m| format!("{} {}", m.path, m.version)),
        "functions_in_pclntab": binary.pclntab().len(),
    });
    match GoTarget::from_binary(path, binary.clone()) {
        Ok(t) => {
            let o = &t.offsets;
            r["attachable"] = json!(true);
            r["gopark"] = json!({
                "vaddr": format!("{:#x}", t.gopark_vaddr),
                "file_offset": format!("{:#x}", t.gopark_entry),
                "ret_file_offsets": t.gopark_returns.iter().map(|x| format!("{x:#x}")).collect::<Vec<_>>(),
            });
            r["offsets"] = json!({
                "source": format!("{:?}", o.source).to_lowercase(),
                "g.goid": o.g_goid,
                "g.gopc": o.g_gopc,
                "g.startpc": o.g_startpc,
                "g.atomicstatus": o.g_atomicstatus,
                "g.waitreason": o.g_waitreason,
                "schedt.timeToRun": o.schedt_time_to_run,
            });
            r["goroutine_list"] = match t.allg {
                Some(v) => json!({
                    "source": format!("{:?}", v.source).to_lowercase(),
                    "runtime.allglen": format!("{:#x}", v.allglen),
                    "runtime.allgptr": format!("{:#x}", v.allgptr),
                }),
                None => json!({ "unavailable": t.allg_error }),
            };
            let family = |points: Result<(), String>| match points {
                Ok(()) => json!("available"),
                Err(why) => json!(format!("unavailable: {why}")),
            };
            r["probe_families"] = json!({
                "sched": "available",
                "gc": family(crate::probes::gc::points(&t).map(drop)),
                "lifecycle": family(crate::probes::lifecycle::points(&t).map(drop)),
                "panics": family(crate::probes::panics::points(&t).map(drop)),
            });
            r["sched_latency_histogram"] = match t.sched_latency {
                Some(h) => json!({ "runtime.sched.timeToRun": format!("{:#x}", h.vaddr) }),
                None => {
                    json!({ "unavailable": "runtime.sched or the histogram's layout not found" })
                }
            };
            r["wait_reasons"] = json!({
                "source": format!("{:?}", t.wait_reasons.source).to_lowercase(),
                "names": t.wait_reasons.names,
            });
        }
        Err(e) => {
            r["attachable"] = json!(false);
            r["reason"] = json!(error_chain(&e));
            if let Some(f) = binary.function(GOPARK) {
                r["gopark"] = json!({ "vaddr": format!("{:#x}", f.entry) });
            }
        }
    }
    r
}

fn render_text(r: &Value) -> String {
    use std::fmt::Write;
    let s = |v: &Value| match v {
        Value::String(s) => s.clone(),
        Value::Null => "-".into(),
        other => other.to_string(),
    };
    let mut out = String::new();
    let _ = writeln!(out, "binary:        {}", s(&r["path"]));
    if r.get("go_version").is_some() {
        let _ = writeln!(out, "go version:    {}", s(&r["go_version"]));
        let _ = writeln!(out, "arch:          {}", s(&r["arch"]));
        let _ = writeln!(
            out,
            "build:         {}, {}, {}",
            if r["pie"] == json!(true) {
                "PIE"
            } else {
                "not PIE"
            },
            if r["stripped"] == json!(true) {
                "stripped (no .symtab)"
            } else {
                "with symbols"
            },
            if r["dwarf"] == json!(true) {
                "with DWARF"
            } else {
                "no DWARF"
            },
        );
        let _ = writeln!(out, "main module:   {}", s(&r["main_module"]));
        let _ = writeln!(
            out,
            "functions:     {} in .gopclntab",
            s(&r["functions_in_pclntab"])
        );
    }
    if let Some(g) = r.get("gopark") {
        let _ = writeln!(
            out,
            "runtime.gopark: entry {} (file offset {}), RET at file offsets {}",
            s(&g["vaddr"]),
            s(&g["file_offset"]),
            g["ret_file_offsets"]
                .as_array()
                .map(|a| a.iter().map(s).collect::<Vec<_>>().join(", "))
                .unwrap_or("-".into()),
        );
    }
    if let Some(o) = r.get("offsets").and_then(Value::as_object) {
        let _ = writeln!(out, "offsets (from {}):", s(&o["source"]));
        for (k, v) in o.iter().filter(|(k, _)| *k != "source") {
            let _ = writeln!(out, "  {k:<18} {}", s(v));
        }
    }
    if let Some(f) = r.get("probe_families").and_then(Value::as_object) {
        let parts: Vec<String> = f.iter().map(|(k, v)| format!("{k} {}", s(v))).collect();
        let _ = writeln!(out, "probes:        {}", parts.join(", "));
    }
    for (key, title) in [
        ("goroutine_list", "goroutine list"),
        ("sched_latency_histogram", "scheduling latency histogram"),
    ] {
        if let Some(o) = r.get(key).and_then(Value::as_object) {
            let parts: Vec<String> = o.iter().map(|(k, v)| format!("{k} {}", s(v))).collect();
            let _ = writeln!(out, "{title}: {}", parts.join(", "));
        }
    }
    if let Some(w) = r.get("wait_reasons") {
        let _ = writeln!(out, "waitReason table (from {}):", s(&w["source"]));
        for (i, name) in w["names"].as_array().into_iter().flatten().enumerate() {
            let _ = writeln!(out, "  {i:>3}  {}", s(name));
        }
    }
    if r["attachable"] == json!(true) {
        let _ = writeln!(out, "can attach:    yes");
    } else {
        let _ = writeln!(out, "can attach:    no: {}", s(&r["reason"]));
    }
    out
}

/// An error and its causes on one line.
fn error_chain(e: &dyn std::error::Error) -> String {
    let mut s = e.to_string();
    let mut cause = e.source();
    while let Some(c) = cause {
        let next = c.to_string();
        if !s.contains(&next) {
            s.push_str(": ");
            s.push_str(&next);
        }
        cause = c.source();
    }
    s
}
