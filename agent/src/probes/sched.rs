//! The scheduler probe family (kernel side: `agent-ebpf/src/bin/sched.rs`, shared types:
//! `agent_common::sched`): a uprobe at `runtime.gopark`'s entry and one at each of its RET
//! instructions. Decodes the [`BlockHead`]s and [`BlockEvent`]s they write.

use std::path::Path;

use agent_common::sched::{BlockEvent, BlockHead, event_kind};

use super::{Attachment, Family, ProbeError, Probes, Scope};
use crate::target::GoTarget;

/// The eBPF object of this family.
pub static OBJECT: &[u8] = aya::include_bytes_aligned!(concat!(env!("OUT_DIR"), "/sched"));

const ENTRY: &str = "gopark_entry";
const RETURN: &str = "gopark_return";

/// The programs of the object, loaded together.
pub const PROGRAMS: [&str; 2] = [ENTRY, RETURN];

pub(super) fn attach(
    probes: &mut Probes,
    target: &GoTarget,
    path: &Path,
    scope: Scope,
    attachment: &mut Attachment,
) -> Result<(), ProbeError> {
    // Returns first: a park whose entry is seen is then always seen to end.
    probes.attach_points(
        attachment,
        (Family::Sched, RETURN),
        path,
        &target.gopark_returns,
        scope,
    )?;
    probes.attach_points(
        attachment,
        (Family::Sched, ENTRY),
        path,
        &[target.gopark_entry],
        scope,
    )
}

/// One decoded scheduler event.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum SchedEvent {
    /// A goroutine was parked from `park_ns` and ran again at `resume_ns`.
    Block {
        /// The binary's attach slot.
        binary: u8,
        pid: u32,
        goid: u64,
        g: u64,
        reason: u8,
        park_ns: u64,
        resume_ns: u64,
        /// Return addresses (runtime addresses), innermost first; empty for short blocks.
        frames: Box<[u64]>,
    },
    /// A goroutine ran again whose park began before gort attached.
    ResumeUnmatched {
        binary: u8,
        pid: u32,
        goid: u64,
        g: u64,
        resume_ns: u64,
    },
}

/// Decodes one ring buffer record; None for a record that is not a [`BlockHead`] (alone, or
/// the start of a [`BlockEvent`]).
pub fn decode(bytes: &[u8]) -> Option<SchedEvent> {
    if bytes.len() < size_of::<BlockHead>() {
        return None;
    }
    // SAFETY: the length was checked; BlockHead is plain integers, valid for any bytes.
    let e: BlockHead = unsafe { std::ptr::read_unaligned(bytes.as_ptr().cast()) };
    match e.kind {
        event_kind::BLOCK => {
            let frames: Box<[u64]> = if bytes.len() >= size_of::<BlockEvent>() {
                // SAFETY: as above, for the longer record.
                let full: BlockEvent = unsafe { std::ptr::read_unaligned(bytes.as_ptr().cast()) };
                let n = (e.nframes as usize).min(full.frames.len());
                full.frames[..n].into()
            } else {
                Box::default()
            };
            Some(SchedEvent::Block {
                binary: e.binary,
                pid: e.pid,
                goid: e.goid,
                g: e.g,
                reason: e.reason,
                park_ns: e.park_ns,
                resume_ns: e.resume_ns.max(e.park_ns),
                frames,
            })
        }
        event_kind::RESUME_UNMATCHED => Some(SchedEvent::ResumeUnmatched {
            binary: e.binary,
            pid: e.pid,
            goid: e.goid,
            g: e.g,
            resume_ns: e.resume_ns,
        }),
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use agent_common::sched::MAX_FRAMES;

    use super::*;

    fn raw(e: &BlockEvent) -> Vec<u8> {
        // SAFETY: BlockEvent is plain integers without padding holes.
        unsafe {
            std::slice::from_raw_parts(
                (e as *const BlockEvent).cast::<u8>(),
                size_of::<BlockEvent>(),
            )
        }
        .to_vec()
    }

    #[test]
    fn decodes_blocks_and_bounds_frames() {
        let mut frames = [0u64; MAX_FRAMES];
        frames[0] = 0x401000;
        frames[1] = 0x402000;
        let mut e = BlockEvent {
            head: BlockHead {
                kind: event_kind::BLOCK,
                reason: 14,
                nframes: 2,
                binary: 3,
                pid: 42,
                goid: 19,
                g: 0xc000001000,
                park_ns: 100,
                resume_ns: 250,
            },
            frames,
        };
        assert_eq!(
            decode(&raw(&e)),
            Some(SchedEvent::Block {
                binary: 3,
                pid: 42,
                goid: 19,
                g: 0xc000001000,
                reason: 14,
                park_ns: 100,
                resume_ns: 250,
                frames: vec![0x401000, 0x402000].into(),
            })
        );
        // A lone head: no frames.
        let Some(SchedEvent::Block {
            frames, park_ns, ..
        }) = decode(&raw(&e)[..size_of::<BlockHead>()])
        else {
            panic!()
        };
        assert_eq!((frames.len(), park_ns), (0, 100));
        e.head.nframes = u8::MAX;
        let Some(SchedEvent::Block { frames, .. }) = decode(&raw(&e)) else {
            panic!()
        };
        assert_eq!(frames.len(), MAX_FRAMES);
        e.head.kind = 99;
        assert_eq!(decode(&raw(&e)), None);
        assert_eq!(decode(&raw(&e)[..10]), None);
    }
}
