//! Helpers shared by gort's eBPF programs: the Go amd64 register ABI, bounded reads of the
//! target's memory, and the drop and activity counters every program reports into.
//!
//! Go's internal register ABI (`cmd/compile/abi-internal.md`): integer arguments in RAX, RBX,
//! RCX, RDI, RSI, R8, R9, R10, R11, and the current goroutine's `g` in R14 at every function
//! boundary.
#![no_std]

pub mod gomap;

use agent_common::{BinaryConfig, DropCause, MAX_BINARIES, Stat};
use aya_ebpf::{
    EbpfContext,
    helpers::{bpf_get_attach_cookie, bpf_get_current_pid_tgid},
    macros::map,
    maps::{Array, PerCpuArray},
    programs::ProbeContext,
};

/// Per-binary settings, indexed by the attach cookie; filled by the agent at attach.
#[map]
pub static BINARY_CONFIG: Array<BinaryConfig> = Array::with_max_entries(MAX_BINARIES, 0);

/// The attach cookie (the binary's slot) and that binary's settings.
#[inline(always)]
pub fn binary_config(ctx: &ProbeContext) -> Result<(u32, BinaryConfig), u32> {
    // SAFETY: plain helper call on our own context.
    let slot = unsafe { bpf_get_attach_cookie(ctx.as_ptr()) } as u32;
    match BINARY_CONFIG.get(slot) {
        Some(c) if c.valid != 0 => Ok((slot, *c)),
        _ => Err(1),
    }
}

/// The current process (kernel tgid).
#[inline(always)]
pub fn current_pid() -> u32 {
    (bpf_get_current_pid_tgid() >> 32) as u32
}

/// Drops by cause; per-CPU so counting never contends. Summed by the agent.
#[map]
pub static DROPS: PerCpuArray<u64> = PerCpuArray::with_max_entries(DropCause::COUNT, 0);

/// Probe activity by [`Stat`]; per-CPU, summed by the agent.
#[map]
pub static STATS: PerCpuArray<u64> = PerCpuArray::with_max_entries(Stat::COUNT, 0);

/// Counts one drop of `cause`.
#[inline(always)]
pub fn count_drop(cause: DropCause) {
    bump(&DROPS, cause as u32);
}

/// Counts one `stat` event.
#[inline(always)]
pub fn count(stat: Stat) {
    bump(&STATS, stat as u32);
}

#[inline(always)]
fn bump(array: &PerCpuArray<u64>, index: u32) {
    if let Some(slot) = array.get_ptr_mut(index) {
        // SAFETY: a per-CPU slot is only touched by programs on this CPU, which do not
        // preempt each other.
        unsafe { *slot += 1 };
    }
}

/// The registers of the probed instruction.
#[inline(always)]
fn regs(ctx: &ProbeContext) -> &aya_ebpf::bindings::pt_regs {
    // SAFETY: `regs` is the kernel-provided context pointer of a uprobe program, valid for
    // the whole program run.
    unsafe { &*ctx.regs }
}

/// The current goroutine: Go keeps `g` in R14 on amd64 (ABIInternal).
#[inline(always)]
pub fn current_g(ctx: &ProbeContext) -> u64 {
    regs(ctx).r14
}

/// Integer argument `n` (0-based) of an ABIInternal Go function, at its entry.
#[inline(always)]
pub fn go_arg(ctx: &ProbeContext, n: usize) -> u64 {
    let r = regs(ctx);
    match n {
        0 => r.rax,
        1 => r.rbx,
        2 => r.rcx,
        3 => r.rdi,
        4 => r.rsi,
        5 => r.r8,
        6 => r.r9,
        7 => r.r10,
        _ => r.r11,
    }
}

/// Integer result `n` (0-based) of an ABIInternal Go function, at a RET: results use the
/// same registers as arguments.
#[inline(always)]
pub fn go_result(ctx: &ProbeContext, n: usize) -> u64 {
    go_arg(ctx, n)
}

/// The stack pointer.
#[inline(always)]
pub fn stack_pointer(ctx: &ProbeContext) -> u64 {
    regs(ctx).rsp
}

/// The frame pointer.
#[inline(always)]
pub fn frame_pointer(ctx: &ProbeContext) -> u64 {
    regs(ctx).rbp
}

/// Reads a `u64` of the target's memory that must be there; a failed read is counted as a
/// drop, because the event that needed it is lost.
#[inline(always)]
pub fn read_user_u64(addr: u64) -> Result<u64, u32> {
    try_read_user_u64(addr).inspect_err(|_| count_drop(DropCause::ReadFailed))
}

/// Reads a `u64` of the target's memory that may legitimately be absent (the end of a frame
/// chain), without counting a drop.
#[inline(always)]
pub fn try_read_user_u64(addr: u64) -> Result<u64, u32> {
    // SAFETY: bpf_probe_read_user checks the address; a bad one is an error, not a fault.
    unsafe { aya_ebpf::helpers::bpf_probe_read_user(addr as *const u64) }.map_err(|_| 1)
}
