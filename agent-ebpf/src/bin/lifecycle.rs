//! The goroutine lifecycle probe family: every goroutine created and every one that exits.
//!
//! - `goroutine_created` at each RET of `runtime.newproc1`, which returns the new `*g` (in
//!   RAX): its id, where it was created (`gopc`) and the function it starts in (`startpc`);
//! - `goroutine_exited` at `runtime.goexit1`'s entry, which runs on the exiting goroutine
//!   (`g` in R14) before `mcall(goexit0)` frees it (runtime/proc.go).
//!
//! Events are submitted without waking the consumer; the agent drains on a timer.
#![no_std]
#![no_main]

use agent_common::{
    DropCause,
    lifecycle::{GoroutineEvent, lifecycle_kind},
};
use agent_ebpf::{binary_config, count_drop, current_g, current_pid, go_result, read_user_u64};
use aya_ebpf::{
    bindings::BPF_RB_NO_WAKEUP,
    helpers::bpf_ktime_get_ns,
    macros::{map, uprobe},
    maps::RingBuf,
    programs::ProbeContext,
};

#[map]
static LIFECYCLE_EVENTS: RingBuf = RingBuf::with_byte_size(4 << 20, 0);

#[uprobe]
pub fn goroutine_created(ctx: ProbeContext) -> u32 {
    match emit(&ctx, lifecycle_kind::CREATED, go_result(&ctx, 0)) {
        Ok(r) | Err(r) => r,
    }
}

#[uprobe]
pub fn goroutine_exited(ctx: ProbeContext) -> u32 {
    match emit(&ctx, lifecycle_kind::EXITED, current_g(&ctx)) {
        Ok(r) | Err(r) => r,
    }
}

fn emit(ctx: &ProbeContext, kind: u8, g: u64) -> Result<u32, u32> {
    let (slot, config) = binary_config(ctx)?;
    let event = GoroutineEvent {
        kind,
        binary: slot as u8,
        _pad: [0; 2],
        pid: current_pid(),
        goid: read_user_u64(g + config.goid_offset as u64)?,
        g,
        gopc: read_user_u64(g + config.gopc_offset as u64)?,
        startpc: read_user_u64(g + config.startpc_offset as u64)?,
        // SAFETY: plain helper call.
        ns: unsafe { bpf_ktime_get_ns() },
    };
    if LIFECYCLE_EVENTS
        .output::<GoroutineEvent>(&event, BPF_RB_NO_WAKEUP as u64)
        .is_err()
    {
        count_drop(DropCause::RingbufFull);
        return Err(1);
    }
    Ok(0)
}

#[cfg(not(test))]
#[panic_handler]
fn panic(_info: &core::panic::PanicInfo) -> ! {
    loop {}
}

#[unsafe(link_section = "license")]
#[unsafe(no_mangle)]
static LICENSE: [u8; 13] = *b"Dual MIT/GPL\0";
