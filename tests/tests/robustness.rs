//! gort never harms the process it watches: killed with SIGKILL in the middle of a stream of
//! events, it leaves no probe behind (the breakpoints are gone from the target's code, no
//! gort program stays loaded, no perf event stays attached) and the target runs on and
//! finishes its work correctly. And no program of gort is a uretprobe.

use std::{os::unix::fs::FileExt, path::Path, process::Command, time::Duration};

use anyhow::{Context, Result, ensure};
use gort_e2e::{GoProgram, Gort, Variant, build_go_program, serial};
use serde_json::Value;

/// The first byte of `runtime.gopark` in the running process, and in the file.
fn gopark_bytes(exe: &Path, pid: u32) -> Result<(u8, u8)> {
    let bin = gobinary::GoBinary::open(exe)?;
    let gopark = bin
        .function("runtime.gopark")
        .context("no runtime.gopark")?;
    let offset = bin.file_offset(gopark.entry).context("not in the file")?;
    let file = std::fs::read(exe)?;
    let mut in_memory = [0u8];
    // Not PIE: the link-time address is the run-time address.
    std::fs::File::open(format!("/proc/{pid}/mem"))?.read_exact_at(&mut in_memory, gopark.entry)?;
    Ok((in_memory[0], file[offset as usize]))
}

/// gort's programs loaded in the kernel (by the names it gives them; the kernel keeps 15
/// characters): their ids.
fn gort_programs() -> Result<Vec<u64>> {
    const NAMES: &[&str] = &[
        "gopark_entry",
        "gopark_return",
        "goroutine_exite",
        "process_exec",
    ];
    let out = Command::new("bpftool")
        .args(["-j", "prog", "show"])
        .output()?;
    ensure!(
        out.status.success(),
        "bpftool prog: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let progs: Vec<Value> = serde_json::from_slice(&out.stdout)?;
    Ok(progs
        .iter()
        .filter(|p| p["name"].as_str().is_some_and(|n| NAMES.contains(&n)))
        .filter_map(|p| p["id"].as_u64())
        .collect())
}

/// BPF links (gort attaches every uprobe through a perf-event link) to those programs.
fn links_to(programs: &[u64]) -> Result<usize> {
    let out = Command::new("bpftool")
        .args(["-j", "link", "show"])
        .output()?;
    ensure!(
        out.status.success(),
        "bpftool link: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let links: Vec<Value> = serde_json::from_slice(&out.stdout)?;
    Ok(links
        .iter()
        .filter(|l| {
            l["prog_id"]
                .as_u64()
                .is_some_and(|id| programs.contains(&id))
        })
        .count())
}

/// Every program in gort's eBPF objects is a uprobe (or the process watch's raw
/// tracepoints): no uretprobe, which would rewrite return addresses on goroutine stacks
/// that Go moves.
#[test]
fn no_uretprobe_in_any_object() {
    use object::{Object, ObjectSection};
    let dir = gort_e2e::workspace_root().join("target/ebpf/bpfel-unknown-none/release");
    for family in ["sched", "gc", "lifecycle", "panics", "procs"] {
        let data = std::fs::read(dir.join(family)).expect("built by cargo xtask build-ebpf");
        let file = object::File::parse(&*data).unwrap();
        let programs: Vec<String> = file
            .sections()
            .filter_map(|s| s.name().ok().map(str::to_string))
            .filter(|n| {
                n.starts_with("uprobe")
                    || n.starts_with("uretprobe")
                    || n.starts_with("raw_tracepoint")
                    || n.starts_with("raw_tp")
            })
            .collect();
        assert!(!programs.is_empty(), "{family}: no programs");
        for name in &programs {
            assert!(!name.starts_with("uretprobe"), "{family}: {name}");
        }
    }
}

#[test]
fn sigkill_leaves_no_probe_behind() {
    let _serial = serial();
    run().unwrap_or_else(|e| panic!("{e:#}"));
}

fn run() -> Result<()> {
    let exe = build_go_program("pingpong", "1.22.10", Variant::DEFAULT);
    const ROUND_TRIPS: u64 = 300_000;
    let mut program = GoProgram::start(&exe, &["-n", &ROUND_TRIPS.to_string(), "-wait"], &[])?;
    let (before, original) = gopark_bytes(&exe, program.pid)?;
    ensure!(before == original, "a breakpoint before gort attached");

    let gort = Gort::attach(program.pid, &[])?;
    // Attached: gopark starts with a breakpoint (int3), and gort's links are in the kernel.
    let (attached, _) = gopark_bytes(&exe, program.pid)?;
    ensure!(
        attached == 0xcc,
        "no breakpoint at runtime.gopark: {attached:#x}"
    );
    let programs = gort_programs()?;
    ensure!(!programs.is_empty(), "gort's programs not loaded");
    ensure!(links_to(&programs)? > 0, "no link to gort's programs");

    // Mid-stream: the program hands values back and forth as fast as it can.
    program.proceed()?;
    std::thread::sleep(Duration::from_millis(300));
    let metrics = gort.metrics()?;
    ensure!(
        metrics
            .get("gort_probe_events_total", &[("kind", "parks")])
            .unwrap_or(0.0)
            > 1000.0,
        "no stream of events yet"
    );
    gort.kill()?;

    // The target finishes its work, correctly, with nothing of gort left.
    let report = program.read_json()?;
    ensure!(
        report["round_trips"].as_u64() == Some(ROUND_TRIPS),
        "{report}"
    );
    let (after, _) = gopark_bytes(&exe, program.pid)?;
    ensure!(
        after == original,
        "a breakpoint left at runtime.gopark: {after:#x}"
    );
    // The kernel frees a killed process's links and programs as it closes its descriptors
    // (within milliseconds here).
    let killed = std::time::Instant::now();
    gort_e2e::eventually(Duration::from_secs(10), || {
        ensure!(links_to(&programs)? == 0, "links of the killed gort remain");
        let left: Vec<u64> = gort_programs()?
            .into_iter()
            .filter(|id| programs.contains(id))
            .collect();
        ensure!(
            left.is_empty(),
            "programs of the killed gort remain: {left:?}"
        );
        Ok(())
    })?;
    eprintln!(
        "the kernel removed the killed gort's links and programs within {:?}",
        killed.elapsed()
    );
    program.finish()?;
    Ok(())
}

/// Probes coming and going never harm the target: every probe family attached and detached
/// again and again while a busy program checks its own invariants (values through channels,
/// checksums of stacks that grow and move, a mutex-protected counter, timers); it reports
/// every check passed.
#[test]
fn attach_detach_cycles_leave_the_target_whole() {
    let _serial = serial();
    (|| -> Result<()> {
        let exe = build_go_program("invariants", "1.27.3", Variant::PIE_STRIPPED);
        let mut program = GoProgram::start(&exe, &[], &[])?;
        let out = Command::new(gort_e2e::gort_bin())
            .args([
                "stress-attach",
                "--pid",
                &program.pid.to_string(),
                "--cycles",
            ])
            .arg(CYCLES.to_string())
            .output()?;
        ensure!(
            out.status.success(),
            "gort stress-attach: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        let done: Value = serde_json::from_slice(&out.stdout)?;
        ensure!(done["cycles"] == *CYCLES, "{done}");
        program.send("stop\n")?;
        let report = program.read_json()?;
        ensure!(
            report["ok"] == true,
            "the target's invariants broke: {report}"
        );
        ensure!(report["checks"].as_u64().unwrap_or(0) > 10_000, "{report}");
        program.finish()
    })()
    .unwrap_or_else(|e| panic!("{e:#}"));
}

/// Attach/detach cycles in the test suite. Each takes ~0.1 s on kernel 6.18 (a grace period
/// as the kernel removes each uprobe_multi link), so the 10,000 of the issue (~15 min) are a
/// bench job (`cargo xtask bench --attach-cycles 10000`) or a long run:
/// `GORT_STRESS_CYCLES=10000 cargo test --test robustness`.
static CYCLES: std::sync::LazyLock<u64> = std::sync::LazyLock::new(|| {
    std::env::var("GORT_STRESS_CYCLES")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(200)
});

/// `gort run` keeps only the capabilities it uses (CAP_SYS_ADMIN, CAP_SYS_PTRACE,
/// CAP_DAC_READ_SEARCH, CAP_BPF, CAP_PERFMON), in every thread and in its bounding set, and
/// measures with them, exactly, a program whose executable only its owner (not root) may
/// read.
#[test]
fn gort_keeps_only_the_capabilities_it_uses() {
    let _serial = serial();
    (|| -> Result<()> {
        use std::os::unix::fs::PermissionsExt;
        const KEPT: u64 = 1 << 21 | 1 << 19 | 1 << 2 | 1 << 39 | 1 << 38;
        const NOBODY: u32 = 65534;
        let built = build_go_program("parks", "1.22.10", Variant::DEFAULT);
        let exe = std::env::temp_dir().join(format!("gort-parks-private-{}", std::process::id()));
        std::fs::copy(&built, &exe)?;
        std::os::unix::fs::chown(&exe, Some(NOBODY), Some(NOBODY))?;
        std::fs::set_permissions(&exe, std::fs::Permissions::from_mode(0o700))?;
        let mut p = GoProgram::start(&exe, &["-workers=1", "-ops=10", "-block=5ms"], &[])?;
        let gort = Gort::attach(p.pid, &[])?;
        let caps_of = |status: &str, field: &str| -> Result<u64> {
            let hex = status
                .lines()
                .find_map(|l| l.strip_prefix(field))
                .with_context(|| format!("no {field}"))?;
            Ok(u64::from_str_radix(hex.trim(), 16)?)
        };
        let mut threads = 0;
        for task in std::fs::read_dir(format!("/proc/{}/task", gort.pid()))? {
            let status = std::fs::read_to_string(task?.path().join("status"))?;
            for field in ["CapEff:", "CapPrm:", "CapBnd:"] {
                let caps = caps_of(&status, field)?;
                ensure!(caps == KEPT, "{field} {caps:#x}, want {KEPT:#x}");
            }
            ensure!(
                caps_of(&status, "CapInh:")? == 0,
                "inheritable capabilities left"
            );
            ensure!(status.contains("NoNewPrivs:\t1"), "no_new_privs not set");
            threads += 1;
        }
        ensure!(threads > 1, "gort has {threads} thread");
        // And it measures, exactly: the ten 5 ms channel receives the program reports.
        let pid = p.pid.to_string();
        let labels = [("pid", pid.as_str()), ("reason", "chan receive")];
        let baseline = gort
            .metrics()?
            .get("gort_goroutine_blocks_total", &labels)
            .unwrap_or(0.0);
        p.proceed()?;
        let report = p.read_json()?;
        let want = report["totals"]["chan receive"]["count"]
            .as_f64()
            .context("no chan receive total")?;
        ensure!(want == 10.0, "the program did {want} receives");
        gort_e2e::eventually(Duration::from_secs(10), || {
            let seen = gort
                .metrics()?
                .get("gort_goroutine_blocks_total", &labels)
                .unwrap_or(0.0)
                - baseline;
            ensure!(seen == want, "{seen} of {want} receives measured");
            Ok(())
        })?;
        p.finish()?;
        std::fs::remove_file(&exe)?;
        Ok(())
    })()
    .unwrap_or_else(|e| panic!("{e:#}"));
}
