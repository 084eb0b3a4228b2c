//! `gort stress-attach` (hidden; for the robustness tests): attaches every probe family to a
//! process and detaches them again, over and over, to show that the target is never harmed
//! by probes coming and going while it runs.

use std::time::Instant;

use anyhow::{Context, Result, bail};

use crate::{
    cli::StressAttachOptions,
    probes::{ProbeSettings, Probes, Scope},
    target::{
        GoTarget,
        process::{self, ProcessId},
    },
};

pub fn run(o: &StressAttachOptions) -> Result<()> {
    let id = ProcessId::of(o.pid)?;
    let path = process::exe_path(o.pid);
    let target = GoTarget::open(&path).with_context(|| format!("process {}", o.pid))?;
    let (mut probes, _maps) = Probes::load(ProbeSettings {
        frame_min_ns: 1_000_000,
        ringbuf_bytes: 8 << 20,
        max_parked: 131_072,
        families: o.probes.clone(),
    })?;
    let start = Instant::now();
    let (mut attaching, mut detaching) = (0.0, 0.0);
    for cycle in 0..o.cycles {
        let t = Instant::now();
        let attachment = probes
            .attach(&target, &path, Scope::Process(o.pid))
            .with_context(|| format!("attach, cycle {cycle}"))?;
        attaching += t.elapsed().as_secs_f64();
        std::thread::sleep(std::time::Duration::from_millis(o.hold_ms));
        let t = Instant::now();
        probes.detach(attachment);
        probes.settle();
        detaching += t.elapsed().as_secs_f64();
        if !id.is_alive() {
            bail!("the target exited during cycle {cycle}");
        }
    }
    let seconds = start.elapsed().as_secs_f64();
    println!(
        "{}",
        serde_json::json!({
            "cycles": o.cycles,
            "seconds": seconds,
            "attach_seconds": attaching,
            "detach_seconds": detaching,
        })
    );
    Ok(())
}
