//! Shared types of the panic probe family: `runtime.gopanic`, `runtime.gorecover`'s RETs,
//! `runtime.fatalpanic`, `runtime.throw` and `runtime.fatal`.

/// What a [`PanicEvent`] says.
pub mod panic_kind {
    /// A goroutine began to panic (`runtime.gopanic`).
    pub const PANIC: u8 = 1;
    /// A deferred function recovered the goroutine's panic (`runtime.gorecover` returned a
    /// value).
    pub const RECOVERED: u8 = 2;
    /// The goroutine's panic was not recovered: the process dies (`runtime.fatalpanic`).
    pub const FATAL_PANIC: u8 = 3;
    /// A fatal error (`runtime.throw`, `runtime.fatal`): the process dies.
    pub const THROW: u8 = 4;
}

/// Bytes of a panic's message kept.
pub const PANIC_MESSAGE_LEN: usize = 256;
/// Return addresses of a panicking goroutine's stack kept.
pub const PANIC_FRAMES: usize = 32;

/// One panic-family event. Large, and rare: written in place in the ring buffer.
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct PanicEvent {
    /// One of [`panic_kind`].
    pub kind: u8,
    /// The binary's attach slot.
    pub binary: u8,
    /// Valid entries of `frames`.
    pub nframes: u8,
    pub _pad: u8,
    /// Valid bytes of `message`.
    pub message_len: u16,
    pub _pad2: u16,
    /// Process id (kernel tgid).
    pub pid: u32,
    pub _pad3: u32,
    pub goid: u64,
    /// CLOCK_MONOTONIC nanoseconds.
    pub ns: u64,
    /// The panic value (`any`): its type (`*internal/abi.Type`) and data pointer.
    pub value_type: u64,
    pub value_data: u64,
    /// The first 32 bytes the data pointer points at (a string header, an error struct's
    /// first field, a `runtime.boundsError` ...).
    pub value_words: [u64; 4],
    /// Return addresses, innermost first, from the caller of the probed function.
    pub frames: [u64; PANIC_FRAMES],
    /// The message: the string the value's first words describe, or `throw`'s argument.
    pub message: [u8; PANIC_MESSAGE_LEN],
}
const _: () =
    assert!(core::mem::size_of::<PanicEvent>() == 80 + 8 * PANIC_FRAMES + PANIC_MESSAGE_LEN);

#[cfg(feature = "user")]
// SAFETY: `#[repr(C)]` plain integers with explicit padding, valid for any bit pattern.
unsafe impl aya::Pod for PanicEvent {}
