//! What one uprobe hit costs on this machine, measured: `--overhead-budget` turns event rates
//! into CPU time with it. An empty uprobe (`agent-ebpf/src/bin/floor.rs`) is attached to a
//! function of gort's own executable, which is then called in a loop with and without it.

use std::{
    hint::black_box,
    path::PathBuf,
    time::{Duration, Instant},
};

use aya::{
    EbpfLoader,
    programs::{
        UProbe,
        uprobe::{UProbeAttachLocation, UProbeScope},
    },
};

use super::ProbeError;

/// The empty uprobe.
static OBJECT: &[u8] = aya::include_bytes_aligned!(concat!(env!("OUT_DIR"), "/floor"));

/// Calls per measurement: ~20 ms of traps at the ~10 µs a trap costs in a VM.
const CALLS: u32 = 2_000;

/// The probed function: does nothing, is never inlined.
#[inline(never)]
#[unsafe(no_mangle)]
extern "C" fn gort_calibration_target(x: u64) -> u64 {
    black_box(x)
}

fn call_loop() -> Duration {
    let start = Instant::now();
    for i in 0..CALLS {
        black_box(gort_calibration_target(black_box(u64::from(i))));
    }
    start.elapsed()
}

/// The file offset of `addr` in gort's own executable, from `/proc/self/maps`.
fn own_file_offset(addr: u64) -> Option<(PathBuf, u64)> {
    let maps = std::fs::read_to_string("/proc/self/maps").ok()?;
    maps.lines().find_map(|line| {
        let mut fields = line.split_whitespace();
        let (start, end) = fields.next()?.split_once('-')?;
        let (start, end) = (
            u64::from_str_radix(start, 16).ok()?,
            u64::from_str_radix(end, 16).ok()?,
        );
        let _perms = fields.next()?;
        let offset = u64::from_str_radix(fields.next()?, 16).ok()?;
        let path = fields.nth(2)?;
        (start <= addr && addr < end).then(|| (PathBuf::from(path), addr - start + offset))
    })
}

/// What calibration measured.
#[derive(Debug, Clone, Copy)]
pub struct TrapCost {
    /// Nanoseconds one uprobe hit adds to the probed thread (median of three runs).
    pub hit_ns: u64,
    /// How long a uprobe keeps firing after its link is dropped (the kernel removes the
    /// breakpoint, then waits out grace periods).
    pub removal: Duration,
}

/// Measures what a uprobe hit costs, and how long removing one takes to take effect.
pub fn measure() -> Result<TrapCost, ProbeError> {
    let mut ebpf = EbpfLoader::new()
        .btf(None)
        .load(OBJECT)
        .map_err(|source| ProbeError::Load {
            source: Box::new(source),
        })?;
    let (path, offset) = own_file_offset(gort_calibration_target as *const () as usize as u64)
        .ok_or(ProbeError::OwnCode)?;
    let own = std::num::NonZeroU32::new(std::process::id()).ok_or(ProbeError::OwnCode)?;
    let bare = call_loop();
    // The same kind of link as the probes use: a uprobe_multi link where the kernel has
    // them (removed at once), else aya's (removed after a grace period).
    let link: Box<dyn Send> = match super::multi::load(OBJECT, &ebpf, &["empty"]) {
        Ok(programs) => {
            let link = programs["empty"]
                .attach(&path, &[offset], 0, own.get())
                .map_err(|source| ProbeError::AttachMulti {
                    program: "empty",
                    path: path.display().to_string(),
                    source,
                })?;
            // The program stays loaded while a link holds it.
            Box::new(link)
        }
        Err(_) => Box::new(attach_single(&mut ebpf, &path, offset, own)?),
    };
    let mut runs: Vec<Duration> = (0..3).map(|_| call_loop()).collect();
    runs.sort();
    let hit = runs[1].saturating_sub(bare) / CALLS;
    // Drop the link elsewhere and call on until a call is cheap again.
    let dropped = Instant::now();
    std::thread::spawn(move || drop(link));
    let mut removal = REMOVAL_LIMIT;
    while dropped.elapsed() < REMOVAL_LIMIT {
        let t = Instant::now();
        black_box(gort_calibration_target(black_box(1)));
        if t.elapsed() < hit / 4 {
            removal = dropped.elapsed();
            break;
        }
    }
    Ok(TrapCost {
        hit_ns: hit.as_nanos() as u64,
        removal,
    })
}

/// Attaches the empty program with aya's link (kernels without uprobe_multi).
fn attach_single(
    ebpf: &mut aya::Ebpf,
    path: &std::path::Path,
    offset: u64,
    own: std::num::NonZeroU32,
) -> Result<aya::programs::uprobe::UProbeLink, ProbeError> {
    let program: &mut UProbe = ebpf
        .program_mut("empty")
        .and_then(|p| p.try_into().ok())
        .ok_or(ProbeError::Missing {
            kind: "uprobe program",
            name: "empty",
        })?;
    program.load().map_err(|source| ProbeError::Program {
        name: "empty",
        source: Box::new(source),
    })?;
    let link = program
        .attach(
            UProbeAttachLocation::AbsoluteOffset(offset),
            path,
            UProbeScope::OneProcess(own),
        )
        .map_err(|source| ProbeError::Attach {
            program: "empty",
            path: path.display().to_string(),
            offset,
            source: Box::new(source),
        })?;
    program
        .take_link(link)
        .map_err(|source| ProbeError::Program {
            name: "empty",
            source: Box::new(source),
        })
}

/// How long calibration waits for a removal to take effect.
const REMOVAL_LIMIT: Duration = Duration::from_secs(3);
