//! `gort run --all`: every Go process on the host. Processes are found by a scan of `/proc`
//! at start, then as they start programs (the `procs` watch: `sched_process_exec`), with a
//! periodic rescan as a safety net; each selected Go process gets its own attachment
//! (uprobes scoped to its pid), released when it exits. A process that cannot be attached is
//! reported once, with the reason, and not retried.

pub mod k8s;
pub mod select;

use std::{
    collections::HashMap,
    sync::{Arc, Weak},
};

use crate::{
    aggregate::{AttachedBinary, Binaries, sampling::ProbesIn},
    probes::{Attachment, Probes, Scope},
    target::{
        GoTarget, TargetError,
        process::{self, ContainerIdentity, ProcessId},
    },
};
use k8s::PodNamer;
use select::{ProcessFacts, Selector};

/// Binaries looked at and found not attachable are remembered (by device and inode) up to
/// this many; beyond, the memory is cleared (they are looked at again).
const MAX_REMEMBERED_BINARIES: usize = 4096;

/// A process just attached, for the aggregator.
pub struct NewProcess {
    pub pid: u32,
    pub binary: Arc<AttachedBinary>,
    pub container: ContainerIdentity,
}

/// A process gort attached to.
struct Watched {
    id: ProcessId,
    exe: (u64, u64),
    attachment: Attachment,
    /// When the probes were attached (CLOCK_MONOTONIC ns): an exec before that is the
    /// program they are attached to.
    attached_ns: u64,
}

/// A process gort looked at and left alone (not Go, not selected, or not attachable).
#[derive(PartialEq, Eq)]
struct Passed {
    id: ProcessId,
    exe: Option<(u64, u64)>,
}

/// The Go processes of the host that gort watches.
pub struct Fleet {
    selector: Selector,
    pods: Option<PodNamer>,
    /// Overrides the `service` label (`--service`).
    service: Option<String>,
    /// Go binaries in use, by (device, inode) of the executable: read once for all their
    /// processes, dropped with the last of them.
    targets: HashMap<(u64, u64), Weak<GoTarget>>,
    /// Executables that are not Go, or that gort cannot attach to, and why.
    refused: HashMap<(u64, u64), Refusal>,
    watched: HashMap<u32, Watched>,
    passed: HashMap<u32, Passed>,
    own_pid: u32,
    /// Whether the lack of CAP_SYS_PTRACE was reported.
    warned_permission: bool,
    /// Time sampling (`--overhead-budget`) has the probes out: processes found meanwhile get
    /// theirs at the next [`Fleet::resume_all`].
    suspended: bool,
}

#[derive(Clone)]
enum Refusal {
    NotGo,
    Unsupported(String),
}

impl Fleet {
    pub fn new(selector: Selector, pods: Option<PodNamer>, service: Option<String>) -> Fleet {
        Fleet {
            selector,
            pods,
            service,
            targets: HashMap::new(),
            refused: HashMap::new(),
            watched: HashMap::new(),
            passed: HashMap::new(),
            own_pid: std::process::id(),
            warned_permission: false,
            suspended: false,
        }
    }

    /// Takes every watched process's probes out (time sampling), keeping their slots.
    pub fn suspend_all(&mut self, probes: &mut Probes) {
        self.suspended = true;
        for w in self.watched.values_mut() {
            drop(probes.suspend(&mut w.attachment));
        }
    }

    /// Puts every watched process's probes back; returns when each family's were in for
    /// every process (the window's start), if any. A process whose probes cannot go back is
    /// released.
    pub fn resume_all(&mut self, probes: &mut Probes, binaries: &Binaries) -> Option<ProbesIn> {
        self.suspended = false;
        let mut all_in = None;
        let mut failed = Vec::new();
        for (&pid, w) in &mut self.watched {
            let Some(target) = binaries
                .read()
                .expect("not poisoned")
                .get(&w.attachment.slot)
                .map(|b| b.target.clone())
            else {
                continue;
            };
            match probes.resume(
                &target,
                &process::exe_path(pid),
                Scope::Process(pid),
                &mut w.attachment,
            ) {
                Ok(ns) => all_in = Some(all_in.map_or(ns, |a: ProbesIn| a.latest(ns))),
                Err(e) => {
                    if w.id.is_alive() {
                        eprintln!("gort: cannot attach the probes to pid {pid} again: {e}");
                    }
                    failed.push(pid);
                }
            }
        }
        for pid in failed {
            self.release(pid, probes, binaries);
        }
        all_in
    }

    /// Pids attached now.
    pub fn watched(&self) -> impl Iterator<Item = u32> + '_ {
        self.watched.keys().copied()
    }

    /// Looks at every process of the host (new ones only: a process already looked at, same
    /// start and same executable, is not looked at again).
    pub fn scan(&mut self, probes: &mut Probes, binaries: &Binaries) -> Vec<NewProcess> {
        let Ok(dir) = std::fs::read_dir("/proc") else {
            return Vec::new();
        };
        let mut pids: Vec<u32> = dir
            .filter_map(|e| e.ok()?.file_name().to_str()?.parse().ok())
            .collect();
        pids.sort_unstable();
        // Forget processes that are gone.
        self.passed
            .retain(|pid, p| pids.binary_search(pid).is_ok() && p.id.is_alive());
        pids.into_iter()
            .filter_map(|pid| self.consider(pid, probes, binaries))
            .collect()
    }

    /// A process started a new program (exec) at `exec_ns`: look at it again.
    pub fn on_exec(
        &mut self,
        pid: u32,
        exec_ns: u64,
        probes: &mut Probes,
        binaries: &Binaries,
    ) -> Option<NewProcess> {
        self.passed.remove(&pid);
        if let Some(w) = self.watched.get(&pid) {
            if w.attached_ns >= exec_ns {
                // A rescan found the new program first: the probes are on it already.
                return None;
            }
            // Its Go program is gone (replaced by another): release it first.
            self.release(pid, probes, binaries);
        }
        self.consider(pid, probes, binaries)
    }

    /// Releases the probes of watched processes that are gone; returns their pids.
    pub fn release_exited(&mut self, probes: &mut Probes, binaries: &Binaries) -> Vec<u32> {
        let gone: Vec<u32> = self
            .watched
            .iter()
            .filter(|(_, w)| !w.id.is_alive())
            .map(|(&pid, _)| pid)
            .collect();
        for &pid in &gone {
            self.release(pid, probes, binaries);
        }
        gone
    }

    /// Detaches everything (at shutdown).
    pub fn release_all(&mut self, probes: &mut Probes, binaries: &Binaries) {
        let pids: Vec<u32> = self.watched.keys().copied().collect();
        for pid in pids {
            self.release(pid, probes, binaries);
        }
    }

    fn release(&mut self, pid: u32, probes: &mut Probes, binaries: &Binaries) {
        if let Some(w) = self.watched.remove(&pid) {
            log::info!("releasing process {pid}");
            binaries
                .write()
                .expect("not poisoned")
                .remove(&w.attachment.slot);
            probes.detach(w.attachment);
        }
    }

    /// Attaches to `pid` if it is a selected Go process not yet watched.
    fn consider(
        &mut self,
        pid: u32,
        probes: &mut Probes,
        binaries: &Binaries,
    ) -> Option<NewProcess> {
        if pid == self.own_pid {
            return None;
        }
        let id = ProcessId::of(pid).ok()?;
        let exe = process::exe_identity(pid);
        if let Some(w) = self.watched.get(&pid) {
            if w.id == id && Some(w.exe) == exe {
                return None;
            }
            // A new process on the same pid, or a missed exec.
            self.release(pid, probes, binaries);
        }
        let passed = Passed { id, exe };
        if self.passed.get(&pid) == Some(&passed) {
            return None;
        }
        // Kernel threads have no executable.
        let Some(exe) = exe else {
            if !self.warned_permission
                && !has_sys_ptrace()
                && std::fs::metadata(process::exe_path(pid))
                    .is_err_and(|e| e.kind() == std::io::ErrorKind::PermissionDenied)
            {
                self.warned_permission = true;
                eprintln!(
                    "gort: cannot read the executable of pid {pid} (permission denied): gort \
                     needs CAP_SYS_PTRACE to look at other processes; such processes are skipped"
                );
            }
            self.passed.insert(pid, passed);
            return None;
        };
        let result = self.attach(pid, id, exe, probes, binaries);
        if result.is_none() {
            self.passed.insert(pid, passed);
        }
        result
    }

    fn attach(
        &mut self,
        pid: u32,
        id: ProcessId,
        exe: (u64, u64),
        probes: &mut Probes,
        binaries: &Binaries,
    ) -> Option<NewProcess> {
        let exe_name = process::exe_name(pid).ok()?.display().to_string();
        let target = match self.target(pid, exe) {
            Ok(t) => t,
            Err(Refusal::NotGo) => return None,
            Err(Refusal::Unsupported(why)) => {
                eprintln!("gort: not attaching to pid {pid} ({exe_name}): {why}");
                return None;
            }
        };
        let service = self
            .service
            .clone()
            .or_else(|| process::service_name(pid).ok())
            .unwrap_or_default();
        let cgroup = std::fs::read_to_string(format!("/proc/{pid}/cgroup")).unwrap_or_default();
        let facts = ProcessFacts {
            exe: exe_name.clone(),
            service,
            cgroup,
        };
        if !self.selector.selects(&facts) {
            log::info!("pid {pid} ({exe_name}) is not selected");
            return None;
        }
        let attached_ns = crate::collect::monotonic_ns();
        let path = process::exe_path(pid);
        let attached = if self.suspended {
            probes.attach_suspended(&target, &path, Scope::Process(pid))
        } else {
            probes.attach(&target, &path, Scope::Process(pid))
        };
        let attachment = match attached {
            Ok(a) => a,
            Err(e) => {
                if id.is_alive() {
                    eprintln!("gort: cannot attach to pid {pid} ({exe_name}): {e}");
                }
                return None;
            }
        };
        if !id.is_alive() {
            probes.detach(attachment);
            return None;
        }
        let mut container = process::container_identity(pid);
        if let Some(pods) = &mut self.pods {
            pods.name(&mut container);
        }
        let binary = Arc::new(AttachedBinary::new(
            &attachment,
            target.clone(),
            exe_name.clone(),
        ));
        for (family, why) in &binary.unavailable {
            // Most Go programs are not HTTP servers: that is no news.
            if family != "http" {
                eprintln!("gort: {family} probes unavailable for pid {pid} ({exe_name}): {why}");
            }
        }
        binaries
            .write()
            .expect("not poisoned")
            .insert(attachment.slot, binary.clone());
        eprintln!(
            "gort: attached to pid {pid} ({exe_name}, {})",
            target.go_version()
        );
        self.watched.insert(
            pid,
            Watched {
                id,
                exe,
                attachment,
                attached_ns,
            },
        );
        Some(NewProcess {
            pid,
            binary,
            container,
        })
    }

    /// The Go binary `pid` runs, read once per executable.
    fn target(&mut self, pid: u32, exe: (u64, u64)) -> Result<Arc<GoTarget>, Refusal> {
        if let Some(t) = self.targets.get(&exe).and_then(Weak::upgrade) {
            return Ok(t);
        }
        if let Some(r) = self.refused.get(&exe) {
            return Err(r.clone());
        }
        match GoTarget::open(&process::exe_path(pid)) {
            Ok(t) => {
                let t = Arc::new(t);
                self.targets.retain(|_, w| w.strong_count() > 0);
                self.targets.insert(exe, Arc::downgrade(&t));
                Ok(t)
            }
            Err(e) => {
                let refusal = match &e {
                    TargetError::Read {
                        source: gobinary::Error::NotGo { .. } | gobinary::Error::NotElf { .. },
                        ..
                    } => Refusal::NotGo,
                    // The file could not be read (gone, or the process exited): not
                    // remembered, it may be read next time.
                    TargetError::Read {
                        source: gobinary::Error::Read { .. },
                        ..
                    } => return Err(Refusal::NotGo),
                    _ => Refusal::Unsupported(e.to_string()),
                };
                if self.refused.len() >= MAX_REMEMBERED_BINARIES {
                    self.refused.clear();
                }
                self.refused.insert(exe, refusal.clone());
                Err(refusal)
            }
        }
    }
}

/// Whether gort runs with CAP_SYS_PTRACE (bit 19 of `CapEff` in /proc/self/status). Without
/// it, other users' processes are out of reach; with it, an unreadable executable is just
/// one protected process.
fn has_sys_ptrace() -> bool {
    const CAP_SYS_PTRACE: u32 = 19;
    std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|s| {
            let hex = s
                .lines()
                .find_map(|l| l.strip_prefix("CapEff:"))?
                .trim()
                .to_string();
            u64::from_str_radix(&hex, 16).ok()
        })
        .is_some_and(|caps| caps & (1 << CAP_SYS_PTRACE) != 0)
}
