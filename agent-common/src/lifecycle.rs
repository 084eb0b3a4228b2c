//! Shared types of the goroutine lifecycle probe family (`runtime.newproc1`'s RETs and
//! `runtime.goexit1`'s entry).

/// What a [`GoroutineEvent`] says.
pub mod lifecycle_kind {
    /// A goroutine was created (`runtime.newproc1` returned it).
    pub const CREATED: u8 = 1;
    /// A goroutine exited (`runtime.goexit1` ran on it).
    pub const EXITED: u8 = 2;
}

/// A goroutine was created or exited.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct GoroutineEvent {
    /// One of [`lifecycle_kind`].
    pub kind: u8,
    /// The binary's attach slot.
    pub binary: u8,
    pub _pad: [u8; 2],
    /// Process id (kernel tgid).
    pub pid: u32,
    pub goid: u64,
    /// Address of its `runtime.g`.
    pub g: u64,
    /// `g.gopc`: where the `go` statement is.
    pub gopc: u64,
    /// `g.startpc`: the function it starts in.
    pub startpc: u64,
    /// CLOCK_MONOTONIC nanoseconds.
    pub ns: u64,
}
const _: () = assert!(core::mem::size_of::<GoroutineEvent>() == 48);

#[cfg(feature = "user")]
// SAFETY: `#[repr(C)]` plain integers with explicit padding, valid for any bit pattern.
unsafe impl aya::Pod for GoroutineEvent {}
