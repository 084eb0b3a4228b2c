//! The process watch: `gort run --all` learns from these two scheduler tracepoints when a
//! process starts a new program (and may be a Go program to attach to) or exits (to release
//! its probes), instead of polling `/proc`.
//!
//! Raw tracepoints: attached by name, they need no tracefs mount (often absent on hosts and
//! in containers). Both fire rarely next to the uprobes.
#![no_std]
#![no_main]

use agent_common::{
    DropCause,
    procs::{ProcessEvent, process_kind},
};
use agent_ebpf::count_drop;
use aya_ebpf::{
    helpers::{bpf_get_current_pid_tgid, bpf_ktime_get_ns},
    macros::{map, raw_tracepoint},
    maps::RingBuf,
    programs::RawTracePointContext,
};

#[map]
static PROCESS_EVENTS: RingBuf = RingBuf::with_byte_size(256 << 10, 0);

/// `sched:sched_process_exec`: runs in the process after its new image is loaded.
#[raw_tracepoint(tracepoint = "sched_process_exec")]
pub fn process_exec(_ctx: RawTracePointContext) -> u32 {
    emit(process_kind::EXEC);
    0
}

/// `sched:sched_process_exit`: runs for every exiting thread; only the thread group leader's
/// is reported (the agent checks that the whole process is gone).
#[raw_tracepoint(tracepoint = "sched_process_exit")]
pub fn process_exit(_ctx: RawTracePointContext) -> u32 {
    let id = bpf_get_current_pid_tgid();
    if (id >> 32) as u32 == id as u32 {
        emit(process_kind::EXIT);
    }
    0
}

fn emit(kind: u32) {
    let event = ProcessEvent {
        kind,
        pid: (bpf_get_current_pid_tgid() >> 32) as u32,
        // SAFETY: plain helper call.
        ns: unsafe { bpf_ktime_get_ns() },
    };
    // A full ring loses an event, not a process: the agent also rescans /proc periodically.
    if PROCESS_EVENTS.output::<ProcessEvent>(&event, 0).is_err() {
        count_drop(DropCause::RingbufFull);
    }
}

#[cfg(not(test))]
#[panic_handler]
fn panic(_info: &core::panic::PanicInfo) -> ! {
    loop {}
}

#[unsafe(link_section = "license")]
#[unsafe(no_mangle)]
static LICENSE: [u8; 13] = *b"Dual MIT/GPL\0";
