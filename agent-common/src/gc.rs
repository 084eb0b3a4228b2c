//! Shared types of the GC probe family: stop-the-world pauses and GC cycles
//! (`runtime.stopTheWorldWithSema` entry, `runtime.startTheWorldWithSema` RETs,
//! `runtime.gcMarkTermination` entry).

/// A stop-the-world in progress, per process (only one at a time: `worldsema`).
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct WorldStopped {
    /// CLOCK_MONOTONIC nanoseconds at `runtime.stopTheWorldWithSema` entry.
    pub stop_ns: u64,
    /// Raw `stwReason` (index into the binary's `runtime.stwReasonStrings`).
    pub reason: u8,
    pub _pad: [u8; 7],
}
const _: () = assert!(core::mem::size_of::<WorldStopped>() == 16);

/// What a [`GcEvent`] carries.
pub mod gc_event_kind {
    /// A stop-the-world pause from `stop_ns` to `start_ns`.
    pub const PAUSE: u8 = 1;
    /// A GC cycle completed (`runtime.gcMarkTermination` ran) at `stop_ns`.
    pub const CYCLE: u8 = 2;
}

/// One GC-family event.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct GcEvent {
    /// One of [`gc_event_kind`].
    pub kind: u8,
    /// Raw `stwReason` of a pause.
    pub reason: u8,
    /// The binary's attach slot.
    pub binary: u8,
    pub _pad: u8,
    /// Process id (kernel tgid).
    pub pid: u32,
    pub stop_ns: u64,
    /// When the world ran again (pauses only).
    pub start_ns: u64,
}
const _: () = assert!(core::mem::size_of::<GcEvent>() == 24);

#[cfg(feature = "user")]
mod pod {
    // SAFETY: `#[repr(C)]` plain integers with explicit padding, valid for any bit pattern.
    unsafe impl aya::Pod for super::WorldStopped {}
    unsafe impl aya::Pod for super::GcEvent {}
}
