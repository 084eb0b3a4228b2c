//! The goroutine lifecycle probe family (kernel side: `agent-ebpf/src/bin/lifecycle.rs`,
//! shared types: `agent_common::lifecycle`): goroutines created (`runtime.newproc1`'s RETs)
//! and exited (`runtime.goexit1`'s entry), the same functions in Go 1.21 to 1.27.

use std::path::Path;

use agent_common::lifecycle::{GoroutineEvent, lifecycle_kind};

use super::{Attachment, Family, ProbeError, Probes, Scope};
use crate::target::GoTarget;

/// The eBPF object of this family.
pub static OBJECT: &[u8] = aya::include_bytes_aligned!(concat!(env!("OUT_DIR"), "/lifecycle"));

const CREATED: &str = "goroutine_created";
const EXITED: &str = "goroutine_exited";

/// The programs of the object.
pub const PROGRAMS: [&str; 2] = [CREATED, EXITED];

pub const NEWPROC1: &str = "runtime.newproc1";
pub const GOEXIT1: &str = "runtime.goexit1";

/// File offsets where this family attaches in one binary.
#[derive(Debug, Clone)]
pub struct LifecyclePoints {
    pub newproc1_returns: Vec<u64>,
    pub goexit1_entry: u64,
}

/// Where to attach in `target`, or why this family cannot.
pub fn points(target: &GoTarget) -> Result<LifecyclePoints, String> {
    let bin = &target.binary;
    let func = |name: &str| {
        bin.function(name)
            .ok_or_else(|| format!("no function {name} in the binary"))
    };
    let offset = |vaddr: u64, name: &str| {
        bin.file_offset(vaddr)
            .ok_or_else(|| format!("{name} at {vaddr:#x} is not in the file"))
    };
    let newproc1 = func(NEWPROC1)?;
    let rets = bin.ret_instructions(&newproc1).map_err(|e| e.to_string())?;
    if rets.is_empty() {
        return Err(format!("no RET instruction in {NEWPROC1}"));
    }
    Ok(LifecyclePoints {
        newproc1_returns: rets
            .into_iter()
            .map(|r| offset(r, NEWPROC1))
            .collect::<Result<_, _>>()?,
        goexit1_entry: offset(func(GOEXIT1)?.entry, GOEXIT1)?,
    })
}

pub(super) fn attach(
    probes: &mut Probes,
    points: &LifecyclePoints,
    path: &Path,
    scope: Scope,
    attachment: &mut Attachment,
) -> Result<(), ProbeError> {
    probes.attach_points(
        attachment,
        (Family::Lifecycle, CREATED),
        path,
        &points.newproc1_returns,
        scope,
    )?;
    probes.attach_points(
        attachment,
        (Family::Lifecycle, EXITED),
        path,
        &[points.goexit1_entry],
        scope,
    )
}

/// A goroutine created or exited.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct LifecycleEvent {
    pub created: bool,
    pub binary: u8,
    pub pid: u32,
    pub goid: u64,
    pub g: u64,
    pub gopc: u64,
    pub startpc: u64,
    pub ns: u64,
}

/// Decodes one ring buffer record.
pub fn decode(bytes: &[u8]) -> Option<LifecycleEvent> {
    if bytes.len() < size_of::<GoroutineEvent>() {
        return None;
    }
    // SAFETY: the length was checked; GoroutineEvent is plain integers, valid for any bytes.
    let e: GoroutineEvent = unsafe { std::ptr::read_unaligned(bytes.as_ptr().cast()) };
    let created = match e.kind {
        lifecycle_kind::CREATED => true,
        lifecycle_kind::EXITED => false,
        _ => return None,
    };
    Some(LifecycleEvent {
        created,
        binary: e.binary,
        pid: e.pid,
        goid: e.goid,
        g: e.g,
        gopc: e.gopc,
        startpc: e.startpc,
        ns: e.ns,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn decodes_both_kinds() {
        let e = GoroutineEvent {
            kind: lifecycle_kind::EXITED,
            binary: 2,
            _pad: [0; 2],
            pid: 9,
            goid: 77,
            g: 0xc000,
            gopc: 0x401000,
            startpc: 0x402000,
            ns: 5,
        };
        // SAFETY: GoroutineEvent is plain integers without padding holes.
        let raw = unsafe {
            std::slice::from_raw_parts(
                (&e as *const GoroutineEvent).cast::<u8>(),
                size_of::<GoroutineEvent>(),
            )
        };
        let d = decode(raw).unwrap();
        assert!(!d.created);
        assert_eq!(
            (d.binary, d.pid, d.goid, d.g, d.gopc, d.startpc, d.ns),
            (2, 9, 77, 0xc000, 0x401000, 0x402000, 5)
        );
        let mut bad = raw.to_vec();
        bad[0] = 7;
        assert_eq!(decode(&bad), None);
        assert_eq!(decode(&raw[..20]), None);
    }
}
