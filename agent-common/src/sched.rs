//! Shared types of the scheduler probe family (`runtime.gopark` entry and its RET instructions).

/// Key of the in-flight park map: one parked goroutine of one process.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
pub struct ParkKey {
    /// Process id (kernel tgid).
    pub pid: u32,
    pub _pad: u32,
    /// Address of the goroutine's `runtime.g` (R14 on amd64).
    pub g: u64,
}
const _: () = assert!(core::mem::size_of::<ParkKey>() == 16);

/// Value of the in-flight park map: what was known when the goroutine parked.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Parked {
    /// `g.goid`.
    pub goid: u64,
    /// CLOCK_MONOTONIC nanoseconds at `runtime.gopark` entry.
    pub park_ns: u64,
    /// Raw `waitReason` (index into the binary's `runtime.waitReasonStrings`).
    pub reason: u8,
    pub _pad: [u8; 7],
}
const _: () = assert!(core::mem::size_of::<Parked>() == 24);

/// Maximum stack frames captured for a long block.
pub const MAX_FRAMES: usize = 16;

/// What a [`BlockHead`] carries.
pub mod event_kind {
    /// A park seen from start to end.
    pub const BLOCK: u8 = 1;
    /// The goroutine resumed, but its park began before gort attached: only `resume_ns`,
    /// `goid` and `g` are meaningful.
    pub const RESUME_UNMATCHED: u8 = 2;
}

/// One completed park, written to the ring buffer when the goroutine runs again: alone for a
/// park without stack frames (most: shorter than the frame-capture threshold), the start of
/// a [`BlockEvent`] otherwise. A record is ~40 bytes instead of ~170 where it can be: the
/// ring buffer is shared by every CPU, and what each park writes into it is traffic the
/// others wait on.
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct BlockHead {
    /// One of [`event_kind`].
    pub kind: u8,
    /// Raw `waitReason`.
    pub reason: u8,
    /// Number of valid entries in the [`BlockEvent`]'s `frames` (0 in a lone head).
    pub nframes: u8,
    /// The binary's slot of `BINARY_CONFIG` (the attach cookie), so events of a process that
    /// has already exited can still be decoded.
    pub binary: u8,
    /// Process id (kernel tgid).
    pub pid: u32,
    /// `g.goid`.
    pub goid: u64,
    /// Address of the goroutine's `runtime.g`.
    pub g: u64,
    /// CLOCK_MONOTONIC nanoseconds at `runtime.gopark` entry.
    pub park_ns: u64,
    /// CLOCK_MONOTONIC nanoseconds when the goroutine returned from `runtime.gopark`.
    pub resume_ns: u64,
}
const _: () = assert!(core::mem::size_of::<BlockHead>() == 40);

/// A completed park with its stack frames.
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct BlockEvent {
    pub head: BlockHead,
    /// Return addresses, innermost first, starting with `runtime.gopark`'s caller.
    pub frames: [u64; MAX_FRAMES],
}
const _: () = assert!(core::mem::size_of::<BlockEvent>() == 40 + 8 * MAX_FRAMES);

#[cfg(feature = "user")]
mod pod {
    // SAFETY: all of these are `#[repr(C)]` plain integers with explicit padding, valid for any
    // bit pattern.
    unsafe impl aya::Pod for super::ParkKey {}
    unsafe impl aya::Pod for super::Parked {}
    unsafe impl aya::Pod for super::BlockHead {}
    unsafe impl aya::Pod for super::BlockEvent {}
}
