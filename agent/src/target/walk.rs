//! Finding the goroutines that existed before gort attached: a walk of the runtime's
//! goroutine list (`runtime.allgptr`/`runtime.allglen`, runtime/proc.go `forEachGRace`) in the
//! target's memory, through `/proc/PID/mem`. The probes see every park and resume from the
//! moment they attach; this walk, done right after, fills in the goroutines already parked.

use gobinary::{AllGVariables, RuntimeOffsets};
use thiserror::Error;

use super::process::ProcessMemory;

/// At most this many `g`s are read (a corrupt length must not make the agent read forever).
pub const MAX_WALKED: usize = 10_000_000;

#[derive(Debug, Error)]
pub enum WalkError {
    #[error("cannot read runtime.allglen/allgptr at {addr:#x}")]
    Variables { addr: u64 },
    #[error("runtime.allglen is {len}, more than gort walks ({MAX_WALKED})")]
    TooMany { len: u64 },
    #[error("cannot read the goroutine list at {addr:#x}")]
    List { addr: u64 },
}

/// One goroutine as the walk found it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct WalkedGoroutine {
    pub g: u64,
    pub goid: u64,
    /// `atomicstatus` without the `_Gscan` bit.
    pub status: u32,
    pub waitreason: u8,
    pub gopc: u64,
    pub startpc: u64,
}

/// `_Gidle`, `_Gwaiting` and `_Gdead` (runtime/runtime2.go); `_Gscan` is a bit or'ed onto
/// the status.
pub const G_IDLE: u32 = 0;
pub const G_WAITING: u32 = 4;
pub const G_DEAD: u32 = 6;
pub const G_SCAN: u32 = 0x1000;

/// Reads every goroutine of the list; `bias` turns link-time into runtime addresses.
/// Goroutines whose `g` cannot be read are skipped (they may be freed as we read).
pub fn walk(
    mem: &ProcessMemory,
    vars: AllGVariables,
    bias: u64,
    offsets: &RuntimeOffsets,
) -> Result<Vec<WalkedGoroutine>, WalkError> {
    // allglen first, then allgptr: the runtime publishes the pointer before the length.
    let len_addr = vars.allglen.wrapping_add(bias);
    let len = mem
        .read_u64(len_addr)
        .ok_or(WalkError::Variables { addr: len_addr })?;
    let ptr_addr = vars.allgptr.wrapping_add(bias);
    let list = mem
        .read_u64(ptr_addr)
        .ok_or(WalkError::Variables { addr: ptr_addr })?;
    if len > MAX_WALKED as u64 {
        return Err(WalkError::TooMany { len });
    }
    let mut gs = Vec::with_capacity(len as usize);
    const CHUNK: usize = 8192;
    let mut buf = vec![0u8; CHUNK * 8];
    let mut read = 0usize;
    while read < len as usize {
        let n = CHUNK.min(len as usize - read);
        let addr = list + (read * 8) as u64;
        if !mem.read(addr, &mut buf[..n * 8]) {
            return Err(WalkError::List { addr });
        }
        gs.extend(
            buf[..n * 8]
                .chunks_exact(8)
                .map(|c| u64::from_le_bytes(c.try_into().expect("8 bytes"))),
        );
        read += n;
    }
    let fields = [
        offsets.g_goid,
        offsets.g_atomicstatus,
        offsets.g_waitreason,
        offsets.g_gopc,
        offsets.g_startpc,
    ];
    let lo = *fields.iter().min().expect("non-empty") as usize;
    let hi = *fields.iter().max().expect("non-empty") as usize + 8;
    let mut g_bytes = vec![0u8; hi - lo];
    let word = |b: &[u8], off: u32| {
        let at = off as usize - lo;
        u64::from_le_bytes(b[at..at + 8].try_into().expect("8 bytes"))
    };
    Ok(gs
        .into_iter()
        .filter(|&g| g != 0)
        .filter_map(|g| {
            if !mem.read(g + lo as u64, &mut g_bytes) {
                return None;
            }
            Some(WalkedGoroutine {
                g,
                goid: word(&g_bytes, offsets.g_goid),
                status: (word(&g_bytes, offsets.g_atomicstatus) as u32) & !G_SCAN,
                waitreason: word(&g_bytes, offsets.g_waitreason) as u8,
                gopc: word(&g_bytes, offsets.g_gopc),
                startpc: word(&g_bytes, offsets.g_startpc),
            })
        })
        .collect())
}
