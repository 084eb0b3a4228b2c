//! The GC probe family: stop-the-world pauses and GC cycles, measured as the runtime itself
//! measures them (what `MemStats.PauseNs` and `/sched/pauses/total/gc:seconds` record).
//!
//! The end of a pause is what `runtime.startTheWorldWithSema` returns (`now`, in RAX at its
//! RETs: `stw_start_return`). Its start, recorded per process (one stop-the-world at a time:
//! the runtime holds `worldsema`), comes from:
//! - Go 1.22+: `func startTheWorldWithSema(now int64, w worldStop) int64` is called with the
//!   runtime's own start of the pause in `w` (its second field, `start` in 1.22 and
//!   `startedStopping` since 1.23); by the register ABI `now` is in RAX, `w.reason` in RBX and
//!   the start in RCX (`stw_start_entry`);
//! - Go 1.21: `startTheWorldWithSema(emitTraceEvent bool)` has no such argument, so
//!   `stw_stop` takes the time at `runtime.stopTheWorldWithSema(reason)`'s entry.
//!
//! `gc_cycle` at `runtime.gcMarkTermination`'s entry marks a completed GC cycle (a cycle can
//! stop the world for mark termination more than once, runtime/mgc.go `gcMarkDone`).
//!
//! Events are written without waking the agent (`BPF_RB_NO_WAKEUP`); it drains on its timer.
//! An allocation-heavy server runs a GC cycle every few ms, and a wakeup costs a self-IPI
//! (a VM exit on a VM) per event, inside the stop-the-world: `stw_start_return` ran in
//! 6.5 µs with wakeups, while the world waited for it.
#![no_std]
#![no_main]

use agent_common::{
    DropCause,
    gc::{GcEvent, WorldStopped, gc_event_kind},
};
use agent_ebpf::{count_drop, current_pid, go_arg, go_result};
use aya_ebpf::{
    EbpfContext,
    bindings::BPF_RB_NO_WAKEUP,
    helpers::{bpf_get_attach_cookie, bpf_ktime_get_ns},
    macros::{map, uprobe},
    maps::{HashMap, RingBuf},
    programs::ProbeContext,
};

/// Stop-the-worlds in progress, by process.
#[map]
static STOPPED: HashMap<u32, WorldStopped> = HashMap::with_max_entries(4096, 0);

#[map]
static GC_EVENTS: RingBuf = RingBuf::with_byte_size(256 << 10, 0);

#[uprobe]
pub fn stw_start_entry(ctx: ProbeContext) -> u32 {
    let stopped = WorldStopped {
        stop_ns: go_arg(&ctx, 2),
        reason: go_arg(&ctx, 1) as u8,
        _pad: [0; 7],
    };
    if STOPPED.insert(current_pid(), stopped, 0).is_err() {
        count_drop(DropCause::InflightFull);
    }
    0
}

/// `func stopTheWorldWithSema(reason stwReason)` (Go 1.21): the reason is the first argument.
#[uprobe]
pub fn stw_stop(ctx: ProbeContext) -> u32 {
    let stopped = WorldStopped {
        // SAFETY: plain helper call.
        stop_ns: unsafe { bpf_ktime_get_ns() },
        reason: go_arg(&ctx, 0) as u8,
        _pad: [0; 7],
    };
    if STOPPED.insert(current_pid(), stopped, 0).is_err() {
        count_drop(DropCause::InflightFull);
    }
    0
}

/// At a RET of `startTheWorldWithSema` (Go 1.21): its result, the runtime's end of the
/// pause, is in RAX.
#[uprobe]
pub fn stw_start_return(ctx: ProbeContext) -> u32 {
    let now = go_result(&ctx, 0);
    let pid = current_pid();
    // SAFETY: copied out at once; only this process's stop-the-world writes its entry.
    let Some(stopped) = (unsafe { STOPPED.get(pid) }).copied() else {
        // The world was stopped before gort attached.
        return 0;
    };
    let _ = STOPPED.remove(pid);
    emit(
        &ctx,
        gc_event_kind::PAUSE,
        stopped.reason,
        stopped.stop_ns,
        now,
    );
    0
}

#[uprobe]
pub fn gc_cycle(ctx: ProbeContext) -> u32 {
    // SAFETY: plain helper call.
    let now = unsafe { bpf_ktime_get_ns() };
    emit(&ctx, gc_event_kind::CYCLE, 0, now, 0);
    0
}

#[inline(always)]
fn emit(ctx: &ProbeContext, kind: u8, reason: u8, stop_ns: u64, start_ns: u64) {
    let event = GcEvent {
        kind,
        reason,
        // SAFETY: plain helper call on our own context.
        binary: unsafe { bpf_get_attach_cookie(ctx.as_ptr()) } as u8,
        _pad: 0,
        pid: current_pid(),
        stop_ns,
        start_ns,
    };
    if GC_EVENTS
        .output::<GcEvent>(&event, BPF_RB_NO_WAKEUP as u64)
        .is_err()
    {
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
