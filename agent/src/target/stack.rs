//! The stack of a parked goroutine, read from outside: when a goroutine parks, `mcall`
//! saves its caller's frame pointer in `g.sched.bp` (runtime/asm_amd64.s `mcall`: the frame
//! pointer of `gopark`'s caller), and Go keeps frame pointers on amd64, so the chain of
//! `[saved BP, return address]` pairs leads up the goroutine's stack.

use gobinary::RuntimeOffsets;

use super::process::ProcessMemory;

/// Frames read at most.
pub const MAX_FRAMES: usize = 32;

/// Return addresses (runtime addresses) of the parked goroutine whose `g` is at `g`,
/// innermost first, starting with the caller of `gopark`'s caller. Empty when the binary's
/// offsets are unknown or the memory cannot be read.
pub fn parked_stack(mem: &ProcessMemory, g: u64, offsets: &RuntimeOffsets) -> Vec<u64> {
    let (Some(sched), Some(bp_off)) = (offsets.g_sched, offsets.gobuf_bp) else {
        return Vec::new();
    };
    let Some(mut fp) = mem.read_u64(g + u64::from(sched) + u64::from(bp_off)) else {
        return Vec::new();
    };
    let mut frames = Vec::new();
    while fp != 0 && frames.len() < MAX_FRAMES {
        let mut pair = [0u8; 16];
        if !mem.read(fp, &mut pair) {
            break;
        }
        let next = u64::from_le_bytes(pair[..8].try_into().expect("8 bytes"));
        let ret = u64::from_le_bytes(pair[8..].try_into().expect("8 bytes"));
        if ret == 0 {
            break;
        }
        frames.push(ret);
        // Callers' frames are at higher addresses; anything else ends the chain.
        if next <= fp {
            break;
        }
        fp = next;
    }
    frames
}
