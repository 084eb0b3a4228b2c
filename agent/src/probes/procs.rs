//! The process watch (kernel side: `agent-ebpf/src/bin/procs.rs`, shared types:
//! `agent_common::procs`): the raw tracepoints `sched_process_exec` and `sched_process_exit`, so that
//! `gort run --all` attaches to Go programs as they start and releases them as they exit, and
//! so that the aggregator never files a new program's data under an old one's identity (an
//! exec keeps the pid and the start time; a reused pid keeps the pid).

use agent_common::procs::{ProcessEvent, process_kind};
use aya::{
    Ebpf, EbpfLoader,
    maps::{MapData, PerCpuArray, RingBuf},
    programs::RawTracePoint,
};

use super::{ProbeError, take_map};

/// The eBPF object of this family.
pub static OBJECT: &[u8] = aya::include_bytes_aligned!(concat!(env!("OUT_DIR"), "/procs"));

/// (program, raw tracepoint).
const TRACEPOINTS: [(&str, &str); 2] = [
    ("process_exec", "sched_process_exec"),
    ("process_exit", "sched_process_exit"),
];

/// What the watch reports.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ProcessChange {
    /// `pid` started a program at `ns` (CLOCK_MONOTONIC).
    Exec { pid: u32, ns: u64 },
    /// Process `pid` exited at `ns`.
    Exit { pid: u32, ns: u64 },
}

/// The loaded and attached tracepoints; detached when dropped.
pub struct ProcessWatch {
    _ebpf: Ebpf,
    events: RingBuf<MapData>,
}

impl ProcessWatch {
    /// Loads the object and attaches both tracepoints. Also returns the object's drop
    /// counters (a full ring), for `gort_events_lost_total`.
    pub fn start() -> Result<(ProcessWatch, PerCpuArray<MapData, u64>), ProbeError> {
        let mut ebpf =
            EbpfLoader::new()
                .btf(None)
                .load(OBJECT)
                .map_err(|source| ProbeError::Load {
                    source: Box::new(source),
                })?;
        for (name, event) in TRACEPOINTS {
            let program: &mut RawTracePoint = ebpf
                .program_mut(name)
                .and_then(|p| p.try_into().ok())
                .ok_or(ProbeError::Missing {
                    kind: "tracepoint program",
                    name,
                })?;
            program
                .load()
                .and_then(|()| program.attach(event).map(|_| ()))
                .map_err(|source| ProbeError::Program {
                    name,
                    source: Box::new(source),
                })?;
        }
        let events = take_map(&mut ebpf, "PROCESS_EVENTS")?;
        let drops = take_map(&mut ebpf, "DROPS")?;
        Ok((
            ProcessWatch {
                _ebpf: ebpf,
                events,
            },
            drops,
        ))
    }

    /// What happened since the last call, in order.
    pub fn drain(&mut self) -> Vec<ProcessChange> {
        let mut out = Vec::new();
        while let Some(item) = self.events.next() {
            if item.len() < size_of::<ProcessEvent>() {
                continue;
            }
            // SAFETY: the ring holds `ProcessEvent`s (plain integers), possibly unaligned.
            let e: ProcessEvent = unsafe { std::ptr::read_unaligned(item.as_ptr().cast()) };
            match e.kind {
                process_kind::EXEC => out.push(ProcessChange::Exec {
                    pid: e.pid,
                    ns: e.ns,
                }),
                process_kind::EXIT => out.push(ProcessChange::Exit {
                    pid: e.pid,
                    ns: e.ns,
                }),
                _ => {}
            }
        }
        out
    }
}
