//! Types shared by gort's eBPF programs (`agent-ebpf`) and its userspace agent (`agent`).
//!
//! Every type here crosses the kernel/user boundary byte for byte: `#[repr(C)]`, `Copy`,
//! explicit padding, fixed-width integers only, and a size assertion so that a layout change
//! on one side fails the build instead of corrupting data.
#![no_std]

pub mod gc;
pub mod http;
pub mod lifecycle;
pub mod panics;
pub mod procs;
pub mod sched;

/// Number of distinct target binaries one loaded probe set can serve. The uprobe attach
/// cookie of every attachment is an index below this into the per-binary config map.
pub const MAX_BINARIES: u32 = 256;

/// Per-binary settings the probes need, stored at index `cookie` of each family's
/// `BINARY_CONFIG` array. Offsets in `runtime.g`, from the target's DWARF or from gort's
/// generated per-Go-version table.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct BinaryConfig {
    pub goid_offset: u32,
    pub gopc_offset: u32,
    pub startpc_offset: u32,
    /// Non-zero once the agent has filled this slot; probes ignore unset slots.
    pub valid: u32,
}
const _: () = assert!(core::mem::size_of::<BinaryConfig>() == 16);

#[cfg(feature = "user")]
// SAFETY: `#[repr(C)]` plain integers, valid for any bit pattern.
unsafe impl aya::Pod for BinaryConfig {}

/// Why the kernel side could not deliver something. Each is a slot of the per-CPU `DROPS`
/// counter array and is exported as `gort_events_lost_total{cause}`.
#[repr(u32)]
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum DropCause {
    /// The event ring buffer was full when an event had to be written.
    RingbufFull = 0,
    /// The in-flight park map was full, so a park could not be recorded.
    InflightFull = 1,
    /// Reading the target's memory (the `g` struct) failed.
    ReadFailed = 2,
}

impl DropCause {
    /// All causes, in slot order.
    pub const ALL: [DropCause; 3] = [
        DropCause::RingbufFull,
        DropCause::InflightFull,
        DropCause::ReadFailed,
    ];
    /// Number of slots of the `DROPS` array.
    pub const COUNT: u32 = Self::ALL.len() as u32;

    /// The label value on `gort_events_lost_total`.
    pub const fn label(self) -> &'static str {
        match self {
            DropCause::RingbufFull => "ringbuf_full",
            DropCause::InflightFull => "inflight_map_full",
            DropCause::ReadFailed => "read_failed",
        }
    }
}

/// Probe activity counters: slots of the per-CPU `STATS` array. They let the agent (and the
/// tests) check that every park the kernel saw was accounted for.
#[repr(u32)]
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Stat {
    /// `runtime.gopark` entries seen.
    Parks = 0,
    /// `runtime.gopark` returns (goroutine running again) matched to a recorded park.
    Resumes = 1,
    /// `runtime.gopark` returns whose park was not seen (it began before gort attached).
    ResumesUnmatched = 2,
}

impl Stat {
    /// Number of slots of the `STATS` array.
    pub const COUNT: u32 = 3;
}
