//! The GC probe family (kernel side: `agent-ebpf/src/bin/gc.rs`, shared types:
//! `agent_common::gc`): stop-the-world pauses as the runtime measures them, and completed GC
//! cycles at `runtime.gcMarkTermination`'s entry. Go 1.22+ passes the pause's start (and
//! usually its end) to `runtime.startTheWorldWithSema`: one probe at its entry. Go 1.21 does
//! not: a probe at `runtime.stopTheWorldWithSema`'s entry and at `startTheWorldWithSema`'s
//! RETs (whose result is the end).

use std::path::Path;

use agent_common::gc::{GcEvent, gc_event_kind};

use super::{Attachment, Family, ProbeError, Probes, Scope};
use crate::target::GoTarget;

/// The eBPF object of this family.
pub static OBJECT: &[u8] = aya::include_bytes_aligned!(concat!(env!("OUT_DIR"), "/gc"));

const START_ENTRY: &str = "stw_start_entry";
const STOP: &str = "stw_stop";
const START_RETURN: &str = "stw_start_return";
const CYCLE: &str = "gc_cycle";

/// The programs of the object.
pub const PROGRAMS: [&str; 4] = [START_ENTRY, STOP, START_RETURN, CYCLE];

/// The functions of the runtime this family attaches to.
pub const STOP_THE_WORLD: &str = "runtime.stopTheWorldWithSema";
pub const START_THE_WORLD: &str = "runtime.startTheWorldWithSema";
pub const MARK_TERMINATION: &str = "runtime.gcMarkTermination";

/// File offsets where this family attaches in one binary.
#[derive(Debug, Clone)]
pub struct GcPoints {
    pub pauses: PausePoints,
    pub mark_termination_entry: u64,
}

/// Where a pause is seen to begin (its end is always at `startTheWorldWithSema`'s RETs).
#[derive(Debug, Clone)]
pub struct PausePoints {
    pub begin: PauseBegin,
    pub start_returns: Vec<u64>,
}

#[derive(Debug, Clone, Copy)]
pub enum PauseBegin {
    /// Go 1.22+: `startTheWorldWithSema(now int64, w worldStop)`'s entry, from `w`.
    StartEntry(u64),
    /// Go 1.21: `stopTheWorldWithSema`'s entry.
    StopEntry(u64),
}

/// Where to attach in `target`, or why this family cannot (a missing or inlined function).
pub fn points(target: &GoTarget) -> Result<GcPoints, String> {
    let bin = &target.binary;
    let func = |name: &str| {
        bin.function(name)
            .ok_or_else(|| format!("no function {name} in the binary"))
    };
    let offset = |vaddr: u64, name: &str| {
        bin.file_offset(vaddr)
            .ok_or_else(|| format!("{name} at {vaddr:#x} is not in the file"))
    };
    let start = func(START_THE_WORLD)?;
    let mark = func(MARK_TERMINATION)?;
    let v = target.go_version();
    let begin = if (v.major, v.minor) >= (1, 22) {
        PauseBegin::StartEntry(offset(start.entry, START_THE_WORLD)?)
    } else {
        PauseBegin::StopEntry(offset(func(STOP_THE_WORLD)?.entry, STOP_THE_WORLD)?)
    };
    let rets = bin.ret_instructions(&start).map_err(|e| e.to_string())?;
    if rets.is_empty() {
        return Err(format!("no RET instruction in {START_THE_WORLD}"));
    }
    let start_returns = rets
        .into_iter()
        .map(|r| offset(r, START_THE_WORLD))
        .collect::<Result<_, _>>()?;
    Ok(GcPoints {
        pauses: PausePoints {
            begin,
            start_returns,
        },
        mark_termination_entry: offset(mark.entry, MARK_TERMINATION)?,
    })
}

pub(super) fn attach(
    probes: &mut Probes,
    points: &GcPoints,
    path: &Path,
    scope: Scope,
    attachment: &mut Attachment,
) -> Result<(), ProbeError> {
    probes.attach_points(
        attachment,
        (Family::Gc, CYCLE),
        path,
        &[points.mark_termination_entry],
        scope,
    )?;
    // Ends first, so that a pause whose start is seen is seen to end.
    probes.attach_points(
        attachment,
        (Family::Gc, START_RETURN),
        path,
        &points.pauses.start_returns,
        scope,
    )?;
    match points.pauses.begin {
        PauseBegin::StartEntry(offset) => probes.attach_points(
            attachment,
            (Family::Gc, START_ENTRY),
            path,
            &[offset],
            scope,
        ),
        PauseBegin::StopEntry(offset) => {
            probes.attach_points(attachment, (Family::Gc, STOP), path, &[offset], scope)
        }
    }
}

/// One decoded GC-family event.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum GcProbeEvent {
    /// The world was stopped for `reason` (raw `stwReason`) from `stop_ns` to `start_ns`.
    Pause {
        binary: u8,
        pid: u32,
        reason: u8,
        stop_ns: u64,
        start_ns: u64,
    },
    /// A GC cycle completed (mark termination ran, with the world stopped) at `at_ns`.
    Cycle { binary: u8, pid: u32, at_ns: u64 },
}

/// Decodes one ring buffer record.
pub fn decode(bytes: &[u8]) -> Option<GcProbeEvent> {
    if bytes.len() < size_of::<GcEvent>() {
        return None;
    }
    // SAFETY: the length was checked; GcEvent is plain integers, valid for any bytes.
    let e: GcEvent = unsafe { std::ptr::read_unaligned(bytes.as_ptr().cast()) };
    match e.kind {
        gc_event_kind::PAUSE => Some(GcProbeEvent::Pause {
            binary: e.binary,
            pid: e.pid,
            reason: e.reason,
            stop_ns: e.stop_ns,
            start_ns: e.start_ns.max(e.stop_ns),
        }),
        gc_event_kind::CYCLE => Some(GcProbeEvent::Cycle {
            binary: e.binary,
            pid: e.pid,
            at_ns: e.stop_ns,
        }),
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn raw(e: &GcEvent) -> Vec<u8> {
        // SAFETY: GcEvent is plain integers without padding holes.
        unsafe {
            std::slice::from_raw_parts((e as *const GcEvent).cast::<u8>(), size_of::<GcEvent>())
        }
        .to_vec()
    }

    #[test]
    fn decodes_pauses_and_cycles() {
        let e = GcEvent {
            kind: gc_event_kind::PAUSE,
            reason: 2,
            binary: 1,
            _pad: 0,
            pid: 7,
            stop_ns: 10,
            start_ns: 30,
        };
        assert_eq!(
            decode(&raw(&e)),
            Some(GcProbeEvent::Pause {
                binary: 1,
                pid: 7,
                reason: 2,
                stop_ns: 10,
                start_ns: 30
            })
        );
        let e = GcEvent {
            kind: gc_event_kind::CYCLE,
            stop_ns: 99,
            ..e
        };
        assert_eq!(
            decode(&raw(&e)),
            Some(GcProbeEvent::Cycle {
                binary: 1,
                pid: 7,
                at_ns: 99
            })
        );
        assert_eq!(decode(&raw(&GcEvent { kind: 9, ..e })), None);
        assert_eq!(decode(&raw(&e)[..8]), None);
    }
}
