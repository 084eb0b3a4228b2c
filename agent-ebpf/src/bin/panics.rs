//! The panic probe family: panics, whether they were recovered, and fatal errors.
//!
//! - `panic_start` at `runtime.gopanic(e any)`'s entry: the value's type and data (RAX,
//!   RBX), the 32 bytes its data points at, the string those describe (for a string, an
//!   `*errors.errorString`, a `runtime.plainError` ... the first words are a string header),
//!   and the stack;
//! - `panic_recovered` at each RET of `runtime.gorecover`: a non-nil result (its type in RAX)
//!   means a deferred call recovered the goroutine's panic;
//! - `panic_fatal` at `runtime.fatalpanic`'s entry: the panic was not recovered;
//! - `fatal_error` at `runtime.throw(s string)` and `runtime.fatal(s string)`: the message.
//!
//! Panics are rare; each event is written in place in the ring buffer and wakes the agent.
#![no_std]
#![no_main]

use agent_common::{
    DropCause,
    panics::{PANIC_FRAMES, PANIC_MESSAGE_LEN, PanicEvent, panic_kind},
};
use agent_ebpf::{
    binary_config, count_drop, current_g, current_pid, frame_pointer, go_arg, go_result,
    read_user_u64, stack_pointer, try_read_user_u64,
};
use aya_ebpf::{
    helpers::{bpf_ktime_get_ns, generated::bpf_probe_read_user},
    macros::{map, uprobe},
    maps::RingBuf,
    programs::ProbeContext,
};

#[map]
static PANIC_EVENTS: RingBuf = RingBuf::with_byte_size(256 << 10, 0);

#[uprobe]
pub fn panic_start(ctx: ProbeContext) -> u32 {
    let (ty, data) = (go_arg(&ctx, 0), go_arg(&ctx, 1));
    match emit(&ctx, panic_kind::PANIC, ty, data, 0, 0, true) {
        Ok(r) | Err(r) => r,
    }
}

#[uprobe]
pub fn panic_recovered(ctx: ProbeContext) -> u32 {
    let ty = go_result(&ctx, 0);
    if ty == 0 {
        // recover() returned nil: nothing was recovered.
        return 0;
    }
    match emit(
        &ctx,
        panic_kind::RECOVERED,
        ty,
        go_result(&ctx, 1),
        0,
        0,
        false,
    ) {
        Ok(r) | Err(r) => r,
    }
}

#[uprobe]
pub fn panic_fatal(ctx: ProbeContext) -> u32 {
    match emit(&ctx, panic_kind::FATAL_PANIC, 0, 0, 0, 0, false) {
        Ok(r) | Err(r) => r,
    }
}

/// `func throw(s string)`, `func fatal(s string)`: the message's pointer and length.
#[uprobe]
pub fn fatal_error(ctx: ProbeContext) -> u32 {
    match emit(
        &ctx,
        panic_kind::THROW,
        0,
        0,
        go_arg(&ctx, 0),
        go_arg(&ctx, 1),
        true,
    ) {
        Ok(r) | Err(r) => r,
    }
}

/// Writes one event. The message comes from `msg_ptr`/`msg_len` when given, else from the
/// value's first two words when they look like a string header. Inlined: BPF calls take at
/// most five arguments.
#[inline(always)]
fn emit(
    ctx: &ProbeContext,
    kind: u8,
    value_type: u64,
    value_data: u64,
    msg_ptr: u64,
    msg_len: u64,
    with_stack: bool,
) -> Result<u32, u32> {
    let (slot, config) = binary_config(ctx)?;
    let g = current_g(ctx);
    let goid = read_user_u64(g + config.goid_offset as u64)?;
    let Some(mut entry) = PANIC_EVENTS.reserve::<PanicEvent>(0) else {
        count_drop(DropCause::RingbufFull);
        return Err(1);
    };
    let e = entry.as_mut_ptr();
    // SAFETY: `e` points at a reserved, exclusively owned ring buffer record; every field
    // is written before it is submitted.
    unsafe {
        (*e).kind = kind;
        (*e).binary = slot as u8;
        (*e).nframes = 0;
        (*e)._pad = 0;
        (*e).message_len = 0;
        (*e)._pad2 = 0;
        (*e).pid = current_pid();
        (*e)._pad3 = 0;
        (*e).goid = goid;
        (*e).ns = bpf_ktime_get_ns();
        (*e).value_type = value_type;
        (*e).value_data = value_data;
        (*e).value_words = [0; 4];
        if value_data != 0 {
            for (i, w) in (*e).value_words.iter_mut().enumerate() {
                *w = try_read_user_u64(value_data + 8 * i as u64).unwrap_or(0);
            }
        }
        let (ptr, len) = if msg_ptr != 0 {
            (msg_ptr, msg_len)
        } else {
            ((*e).value_words[0], (*e).value_words[1])
        };
        if ptr != 0 && len > 0 && len <= 1 << 20 {
            let n = if len > PANIC_MESSAGE_LEN as u64 {
                PANIC_MESSAGE_LEN as u64
            } else {
                len
            };
            // The mask keeps the size provably within the buffer for the verifier.
            let n = (n as u32) & (PANIC_MESSAGE_LEN as u32 * 2 - 1);
            if n as usize <= PANIC_MESSAGE_LEN
                && bpf_probe_read_user((*e).message.as_mut_ptr().cast(), n, ptr as *const _) == 0
            {
                (*e).message_len = n as u16;
            }
        }
        if with_stack {
            (*e).nframes = capture_frames(ctx, &mut (*e).frames);
        }
    }
    entry.submit(0);
    Ok(0)
}

/// Walks the frame-pointer chain from a function's entry: `[RSP]` is the return address into
/// its caller, RBP the caller's frame pointer.
#[inline(always)]
fn capture_frames(ctx: &ProbeContext, frames: &mut [u64; PANIC_FRAMES]) -> u8 {
    let Ok(first) = try_read_user_u64(stack_pointer(ctx)) else {
        return 0;
    };
    frames[0] = first;
    let mut n: u8 = 1;
    let mut fp = frame_pointer(ctx);
    for slot in frames.iter_mut().skip(1) {
        if fp == 0 {
            break;
        }
        let Ok(ret) = try_read_user_u64(fp + 8) else {
            break;
        };
        let Ok(next) = try_read_user_u64(fp) else {
            break;
        };
        if ret == 0 {
            break;
        }
        *slot = ret;
        n += 1;
        if next <= fp {
            break;
        }
        fp = next;
    }
    n
}

#[cfg(not(test))]
#[panic_handler]
fn panic(_info: &core::panic::PanicInfo) -> ! {
    loop {}
}

#[unsafe(link_section = "license")]
#[unsafe(no_mangle)]
static LICENSE: [u8; 13] = *b"Dual MIT/GPL\0";
