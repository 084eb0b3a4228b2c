//! An empty uprobe: `cargo xtask bench` attaches it where gort's probes go to measure the
//! cost of the traps alone (the floor every uprobe-based tool pays).
#![no_std]
#![no_main]

use aya_ebpf::{macros::uprobe, programs::ProbeContext};

#[uprobe]
pub fn empty(_ctx: ProbeContext) -> u32 {
    0
}

#[cfg(not(test))]
#[panic_handler]
fn panic(_info: &core::panic::PanicInfo) -> ! {
    loop {}
}

#[unsafe(link_section = "license")]
#[unsafe(no_mangle)]
static LICENSE: [u8; 13] = *b"Dual MIT/GPL\0";
