//! Shared types of the process watch (`sched:sched_process_exec` and `sched_process_exit`
//! tracepoints), which `gort run --all` uses to find Go processes as they start.

/// What a [`ProcessEvent`] says.
pub mod process_kind {
    /// A process replaced its image (`execve`): it may now be a Go program.
    pub const EXEC: u32 = 1;
    /// A process (its last thread, the thread group leader) exited.
    pub const EXIT: u32 = 2;
}

/// A process started a new program or exited.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct ProcessEvent {
    /// One of [`process_kind`].
    pub kind: u32,
    /// Process id (kernel tgid), in the initial pid namespace.
    pub pid: u32,
    /// CLOCK_MONOTONIC nanoseconds.
    pub ns: u64,
}
const _: () = assert!(core::mem::size_of::<ProcessEvent>() == 16);

#[cfg(feature = "user")]
// SAFETY: `#[repr(C)]` plain integers, valid for any bit pattern.
unsafe impl aya::Pod for ProcessEvent {}
