//! The panic probe family (kernel side: `agent-ebpf/src/bin/panics.rs`, shared types:
//! `agent_common::panics`): `runtime.gopanic`'s entry, `runtime.gorecover`'s RETs,
//! `runtime.fatalpanic`'s entry, and `runtime.throw`/`runtime.fatal`'s entries. The same
//! functions in Go 1.21 to 1.27.

use std::path::Path;

use agent_common::panics::{PanicEvent, panic_kind};

use super::{Attachment, Family, ProbeError, Probes, Scope};
use crate::target::GoTarget;

/// The eBPF object of this family.
pub static OBJECT: &[u8] = aya::include_bytes_aligned!(concat!(env!("OUT_DIR"), "/panics"));

const START: &str = "panic_start";
const RECOVERED: &str = "panic_recovered";
const FATAL: &str = "panic_fatal";
const FATAL_ERROR: &str = "fatal_error";

/// The programs of the object.
pub const PROGRAMS: [&str; 4] = [START, RECOVERED, FATAL, FATAL_ERROR];

/// File offsets where this family attaches in one binary.
#[derive(Debug, Clone)]
pub struct PanicPoints {
    pub gopanic: u64,
    pub gorecover_returns: Vec<u64>,
    pub fatalpanic: u64,
    /// `runtime.throw` and `runtime.fatal`.
    pub fatal_errors: Vec<u64>,
}

pub fn points(target: &GoTarget) -> Result<PanicPoints, String> {
    let bin = &target.binary;
    let func = |name: &str| {
        bin.function(name)
            .ok_or_else(|| format!("no function {name} in the binary"))
    };
    let offset = |vaddr: u64, name: &str| {
        bin.file_offset(vaddr)
            .ok_or_else(|| format!("{name} at {vaddr:#x} is not in the file"))
    };
    let gorecover = func("runtime.gorecover")?;
    let rets = bin
        .ret_instructions(&gorecover)
        .map_err(|e| e.to_string())?;
    if rets.is_empty() {
        return Err("no RET instruction in runtime.gorecover".into());
    }
    let mut fatal_errors = vec![offset(func("runtime.throw")?.entry, "runtime.throw")?];
    if let Some(f) = bin.function("runtime.fatal") {
        fatal_errors.push(offset(f.entry, "runtime.fatal")?);
    }
    Ok(PanicPoints {
        gopanic: offset(func("runtime.gopanic")?.entry, "runtime.gopanic")?,
        gorecover_returns: rets
            .into_iter()
            .map(|r| offset(r, "runtime.gorecover"))
            .collect::<Result<_, _>>()?,
        fatalpanic: offset(func("runtime.fatalpanic")?.entry, "runtime.fatalpanic")?,
        fatal_errors,
    })
}

pub(super) fn attach(
    probes: &mut Probes,
    points: &PanicPoints,
    path: &Path,
    scope: Scope,
    attachment: &mut Attachment,
) -> Result<(), ProbeError> {
    probes.attach_points(
        attachment,
        (Family::Panics, RECOVERED),
        path,
        &points.gorecover_returns,
        scope,
    )?;
    probes.attach_points(
        attachment,
        (Family::Panics, FATAL),
        path,
        &[points.fatalpanic],
        scope,
    )?;
    probes.attach_points(
        attachment,
        (Family::Panics, FATAL_ERROR),
        path,
        &points.fatal_errors,
        scope,
    )?;
    probes.attach_points(
        attachment,
        (Family::Panics, START),
        path,
        &[points.gopanic],
        scope,
    )
}

/// What happened.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PanicEventKind {
    Panic,
    Recovered,
    FatalPanic,
    FatalError,
}

/// One decoded panic-family event.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PanicProbeEvent {
    pub kind: PanicEventKind,
    pub binary: u8,
    pub pid: u32,
    pub goid: u64,
    pub ns: u64,
    pub value_type: u64,
    pub value_data: u64,
    pub value_words: [u64; 4],
    pub message: Vec<u8>,
    pub frames: Vec<u64>,
}

/// Decodes one ring buffer record.
pub fn decode(bytes: &[u8]) -> Option<PanicProbeEvent> {
    if bytes.len() < size_of::<PanicEvent>() {
        return None;
    }
    // SAFETY: the length was checked; PanicEvent is plain integers, valid for any bytes.
    let e: PanicEvent = unsafe { std::ptr::read_unaligned(bytes.as_ptr().cast()) };
    let kind = match e.kind {
        panic_kind::PANIC => PanicEventKind::Panic,
        panic_kind::RECOVERED => PanicEventKind::Recovered,
        panic_kind::FATAL_PANIC => PanicEventKind::FatalPanic,
        panic_kind::THROW => PanicEventKind::FatalError,
        _ => return None,
    };
    Some(PanicProbeEvent {
        kind,
        binary: e.binary,
        pid: e.pid,
        goid: e.goid,
        ns: e.ns,
        value_type: e.value_type,
        value_data: e.value_data,
        value_words: e.value_words,
        message: e.message[..(e.message_len as usize).min(e.message.len())].to_vec(),
        frames: e.frames[..(e.nframes as usize).min(e.frames.len())].to_vec(),
    })
}
