//! Capabilities: `gort run` keeps only what it uses and drops the rest, at start, before any
//! other thread exists (capabilities are per thread; the runtime's threads inherit the set).
//!
//! What it uses, measured with `setpriv` on kernel 6.18 (`tests/tests/deploy.rs`):
//! CAP_SYS_ADMIN (a uprobe's perf event; loading BPF), CAP_SYS_PTRACE (other processes'
//! `/proc/PID/mem` and `/proc/PID/exe`), CAP_DAC_READ_SEARCH (reading a target's executable
//! that only its owner may read: read, never write); CAP_BPF and CAP_PERFMON are kept for
//! kernels that accept them in place of CAP_SYS_ADMIN, and CAP_NET_BIND_SERVICE when it
//! listens on a port below 1024. Everything else (writing other users' files, changing
//! users, loading modules, the network stack ...) goes, from the effective, permitted, inheritable and bounding sets, and
//! `no_new_privs` is set. It cannot drop more after loading the programs: it attaches probes
//! for as long as it runs (new processes, an exec, time sampling), and the kernel checks
//! CAP_SYS_ADMIN for every attachment.

use caps::{CapSet, Capability, CapsHashSet};

/// What `gort run` keeps.
pub fn kept(listen_port: u16) -> CapsHashSet {
    let mut keep: CapsHashSet = [
        Capability::CAP_SYS_ADMIN,
        Capability::CAP_SYS_PTRACE,
        Capability::CAP_DAC_READ_SEARCH,
        Capability::CAP_BPF,
        Capability::CAP_PERFMON,
    ]
    .into_iter()
    .collect();
    if listen_port < 1024 {
        keep.insert(Capability::CAP_NET_BIND_SERVICE);
    }
    keep
}

/// Drops every capability but `keep` (those it has). Without CAP_SETPCAP (not root) the
/// bounding set stays as it is.
pub fn drop_all_but(keep: &CapsHashSet) -> Result<(), caps::errors::CapsError> {
    let permitted = caps::read(None, CapSet::Permitted)?;
    let keep: CapsHashSet = permitted.intersection(keep).copied().collect();
    if permitted.contains(&Capability::CAP_SETPCAP) {
        for cap in caps::all() {
            if !keep.contains(&cap) {
                caps::drop(None, CapSet::Bounding, cap)?;
            }
        }
    }
    caps::set(None, CapSet::Inheritable, &CapsHashSet::new())?;
    caps::set(None, CapSet::Effective, &keep)?;
    caps::set(None, CapSet::Permitted, &keep)?;
    // SAFETY: prctl with integer arguments only.
    unsafe { libc::prctl(libc::PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0) };
    Ok(())
}
