//! What `/proc` tells about a target process: its executable, its identity across pid reuse,
//! its service name, where its binary is loaded, and its memory.

use std::{
    fs::{self, File},
    io,
    os::unix::fs::{FileExt, MetadataExt},
    path::{Path, PathBuf},
};

use thiserror::Error;

#[derive(Debug, Error)]
pub enum ProcessError {
    #[error("process {pid} does not exist (or has exited)")]
    NotFound { pid: u32 },
    #[error("cannot read /proc/{pid}/{file}: {source}")]
    Proc {
        pid: u32,
        file: &'static str,
        #[source]
        source: io::Error,
    },
    #[error("/proc/{pid}/stat is malformed")]
    BadStat { pid: u32 },
    #[error("the executable of process {pid} is not mapped at file offset {offset:#x}")]
    NotMapped { pid: u32, offset: u64 },
}

/// One process instance: a pid plus its start time, so a reused pid is a different process.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct ProcessId {
    pub pid: u32,
    /// Start time in clock ticks since boot (`/proc/PID/stat` field 22).
    pub start_ticks: u64,
}

impl ProcessId {
    /// Identifies the process running as `pid` now.
    pub fn of(pid: u32) -> Result<ProcessId, ProcessError> {
        let stat = read_proc(pid, "stat")?;
        Ok(ProcessId {
            pid,
            start_ticks: parse_start_ticks(&stat).ok_or(ProcessError::BadStat { pid })?,
        })
    }

    /// Whether this very process (not a reuse of its pid) is still running.
    /// A zombie (exited, not yet reaped by its parent) is not running.
    pub fn is_alive(&self) -> bool {
        let Ok(stat) = read_proc(self.pid, "stat") else {
            return false;
        };
        parse_start_ticks(&stat) == Some(self.start_ticks)
            && !matches!(parse_state(&stat), Some('Z' | 'X' | 'x'))
    }
}

/// CPU time of every thread of `pid` so far, in ns (`/proc/PID/task/*/schedstat`: ns, where
/// `/proc/PID/stat` has clock ticks).
pub fn cpu_time_ns(pid: u32) -> Option<u64> {
    let tasks = fs::read_dir(format!("/proc/{pid}/task")).ok()?;
    Some(
        tasks
            .filter_map(|t| fs::read_to_string(t.ok()?.path().join("schedstat")).ok())
            .filter_map(|s| s.split_whitespace().next()?.parse::<u64>().ok())
            .sum(),
    )
}

/// Field 3 of `/proc/PID/stat`: R, S, D, Z (zombie), X (dead) ...
fn parse_state(stat: &str) -> Option<char> {
    stat[stat.rfind(')')? + 1..]
        .split_whitespace()
        .next()?
        .chars()
        .next()
}

/// Field 22 of `/proc/PID/stat`. The command name (field 2) may hold spaces and parentheses,
/// so fields are counted from the last `)`.
fn parse_start_ticks(stat: &str) -> Option<u64> {
    let after_comm = &stat[stat.rfind(')')? + 1..];
    // After `)`: field 3 (state) is the first; field 22 is the 20th.
    after_comm.split_whitespace().nth(19)?.parse().ok()
}

fn read_proc(pid: u32, file: &'static str) -> Result<String, ProcessError> {
    fs::read(format!("/proc/{pid}/{file}"))
        .map(|b| String::from_utf8_lossy(&b).into_owned())
        .map_err(|source| match source.kind() {
            io::ErrorKind::NotFound => ProcessError::NotFound { pid },
            _ => ProcessError::Proc { pid, file, source },
        })
}

/// The path that opens the process's executable, even if it was deleted or lives in another
/// mount namespace (a container): the kernel resolves `/proc/PID/exe` to the mapped inode.
pub fn exe_path(pid: u32) -> PathBuf {
    PathBuf::from(format!("/proc/{pid}/exe"))
}

/// The executable's path as the process sees it (for display and the service name).
pub fn exe_name(pid: u32) -> Result<PathBuf, ProcessError> {
    fs::read_link(exe_path(pid)).map_err(|source| match source.kind() {
        io::ErrorKind::NotFound => ProcessError::NotFound { pid },
        _ => ProcessError::Proc {
            pid,
            file: "exe",
            source,
        },
    })
}

/// (device, inode) of the process's executable: how `--exe` recognises its processes.
pub fn exe_identity(pid: u32) -> Option<(u64, u64)> {
    fs::metadata(exe_path(pid)).ok().map(|m| (m.dev(), m.ino()))
}

/// (device, inode) of a file.
pub fn file_identity(path: &Path) -> io::Result<(u64, u64)> {
    fs::metadata(path).map(|m| (m.dev(), m.ino()))
}

/// The `service` label: the process's `OTEL_SERVICE_NAME` if set, else its executable's name.
pub fn service_name(pid: u32) -> Result<String, ProcessError> {
    let environ =
        fs::read(format!("/proc/{pid}/environ")).map_err(|source| ProcessError::Proc {
            pid,
            file: "environ",
            source,
        })?;
    if let Some(name) = otel_service_name(&environ) {
        return Ok(name);
    }
    let exe = exe_name(pid)?;
    let base = exe
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default();
    Ok(base.trim_end_matches(" (deleted)").to_string())
}

/// The container a process runs in, when its cgroup says (Docker, containerd, CRI-O, podman,
/// Kubernetes): for the `container.id` and `k8s.pod.uid` resource attributes.
#[derive(Debug, Clone, Default, PartialEq, Eq, Hash)]
pub struct ContainerIdentity {
    pub container_id: Option<String>,
    pub pod_uid: Option<String>,
    /// Names from the Kubernetes API server, when gort runs in a cluster (`fleet::k8s`).
    pub k8s_namespace: Option<String>,
    pub k8s_pod: Option<String>,
    pub k8s_container: Option<String>,
}

pub fn container_identity(pid: u32) -> ContainerIdentity {
    fs::read_to_string(format!("/proc/{pid}/cgroup"))
        .map(|c| parse_cgroup(&c))
        .unwrap_or_default()
}

/// Finds the 64-hex-digit container id and the pod uid in cgroup paths such as
/// `0::/kubepods.slice/kubepods-burstable-pod1f2e..._x.slice/cri-containerd-<id>.scope` or
/// `12:cpu:/kubepods/besteffort/pod<uid>/<id>` or `0::/system.slice/docker-<id>.scope`.
fn parse_cgroup(cgroup: &str) -> ContainerIdentity {
    let mut out = ContainerIdentity::default();
    for path in cgroup.lines().filter_map(|l| l.splitn(3, ':').nth(2)) {
        for segment in path.split('/').rev() {
            let name = segment.strip_suffix(".scope").unwrap_or(segment);
            let name = name.strip_suffix(".slice").unwrap_or(name);
            if out.container_id.is_none() {
                let tail = name.rsplit(['-', ':']).next().unwrap_or(name);
                if tail.len() == 64 && tail.bytes().all(|b| b.is_ascii_hexdigit()) {
                    out.container_id = Some(tail.to_ascii_lowercase());
                }
            }
            if out.pod_uid.is_none() {
                if let Some(i) = name.rfind("pod") {
                    let uid = name[i + 3..].replace('_', "-");
                    let dashes = uid.bytes().filter(|&b| b == b'-').count();
                    if uid.len() == 36
                        && dashes == 4
                        && uid.bytes().all(|b| b.is_ascii_hexdigit() || b == b'-')
                    {
                        out.pod_uid = Some(uid);
                    }
                }
            }
        }
    }
    out
}

fn otel_service_name(environ: &[u8]) -> Option<String> {
    environ
        .split(|&b| b == 0)
        .find_map(|kv| kv.strip_prefix(b"OTEL_SERVICE_NAME="))
        .map(|v| String::from_utf8_lossy(v).into_owned())
        .filter(|v| !v.is_empty())
}

/// The load bias of the executable in `pid`: runtime address = link-time address + bias.
/// Found from where the mapping holding `file_offset` (of link-time address `vaddr`) starts.
pub fn load_bias(pid: u32, file_offset: u64, vaddr: u64) -> Result<u64, ProcessError> {
    let maps = read_proc(pid, "maps")?;
    let (dev, ino) = exe_identity(pid).ok_or(ProcessError::NotFound { pid })?;
    load_bias_from_maps(&maps, (dev, ino), file_offset, vaddr).ok_or(ProcessError::NotMapped {
        pid,
        offset: file_offset,
    })
}

fn load_bias_from_maps(
    maps: &str,
    (dev, ino): (u64, u64),
    file_offset: u64,
    vaddr: u64,
) -> Option<u64> {
    for line in maps.lines() {
        let mut f = line.split_whitespace();
        let (Some(range), Some(_perms), Some(offset), Some(device), Some(inode)) =
            (f.next(), f.next(), f.next(), f.next(), f.next())
        else {
            continue;
        };
        if inode.parse::<u64>().ok() != Some(ino) || !same_device(device, dev) {
            continue;
        }
        let (start, end) = range.split_once('-')?;
        let start = u64::from_str_radix(start, 16).ok()?;
        let end = u64::from_str_radix(end, 16).ok()?;
        let offset = u64::from_str_radix(offset, 16).ok()?;
        if file_offset >= offset && file_offset < offset + (end - start) {
            let runtime_addr = start + (file_offset - offset);
            return Some(runtime_addr.wrapping_sub(vaddr));
        }
    }
    None
}

/// `/proc/PID/maps` prints the device as `major:minor` in hex.
fn same_device(field: &str, dev: u64) -> bool {
    let Some((major, minor)) = field.split_once(':') else {
        return false;
    };
    let (Ok(major), Ok(minor)) = (
        u64::from_str_radix(major, 16),
        u64::from_str_radix(minor, 16),
    ) else {
        return false;
    };
    // Linux's new_encode_dev / MAJOR / MINOR (include/linux/kdev_t.h), as glibc's gnu_dev_*.
    let dev_major = ((dev >> 32) & 0xffff_f000) | ((dev >> 8) & 0x0fff);
    let dev_minor = ((dev >> 12) & 0xffff_ff00) | (dev & 0x00ff);
    major == dev_major && minor == dev_minor
}

/// Reads a target's memory through `/proc/PID/mem` (the agent's cost, not the target's).
#[derive(Debug)]
pub struct ProcessMemory {
    file: File,
}

impl ProcessMemory {
    pub fn open(pid: u32) -> Result<ProcessMemory, ProcessError> {
        File::open(format!("/proc/{pid}/mem"))
            .map(|file| ProcessMemory { file })
            .map_err(|source| ProcessError::Proc {
                pid,
                file: "mem",
                source,
            })
    }

    /// Fills `buf` from address `addr`; false if any of it is unreadable.
    pub fn read(&self, addr: u64, buf: &mut [u8]) -> bool {
        self.file.read_exact_at(buf, addr).is_ok()
    }

    pub fn read_u64(&self, addr: u64) -> Option<u64> {
        let mut b = [0u8; 8];
        self.read(addr, &mut b).then(|| u64::from_le_bytes(b))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn start_ticks_survive_odd_command_names() {
        let stat = "1234 (my (odd) name) S 1 1234 1234 0 -1 4194560 100 0 0 0 1 2 0 0 20 0 3 0 98765 1000 200";
        assert_eq!(parse_start_ticks(stat), Some(98765));
        assert_eq!(parse_start_ticks("garbage"), None);
        assert_eq!(parse_start_ticks("1 (x) S 1"), None);
        assert_eq!(parse_state(stat), Some('S'));
        assert_eq!(parse_state("7 (a) b) Z 1"), Some('Z'));
        assert_eq!(parse_state("garbage"), None);
    }

    #[test]
    fn own_process_identity() {
        let me = ProcessId::of(std::process::id()).unwrap();
        assert!(me.is_alive());
        assert!(
            !ProcessId {
                start_ticks: me.start_ticks + 1,
                ..me
            }
            .is_alive()
        );
    }

    #[test]
    fn container_and_pod_from_cgroup_paths() {
        let id = "3f1d2c4b5a69788776655443322110ffeeddccbbaa99887766554433221100aa";
        let systemd = format!(
            "0::/kubepods.slice/kubepods-burstable.slice/kubepods-burstable-pod1f2e3d4c_5b6a_7980_a1b2_c3d4e5f60718.slice/cri-containerd-{id}.scope\n"
        );
        assert_eq!(
            parse_cgroup(&systemd),
            ContainerIdentity {
                container_id: Some(id.into()),
                pod_uid: Some("1f2e3d4c-5b6a-7980-a1b2-c3d4e5f60718".into()),
                ..Default::default()
            }
        );
        let cgroupfs = format!(
            "12:cpu,cpuacct:/kubepods/besteffort/pod1f2e3d4c-5b6a-7980-a1b2-c3d4e5f60718/{id}\n"
        );
        assert_eq!(
            parse_cgroup(&cgroupfs).pod_uid.as_deref(),
            Some("1f2e3d4c-5b6a-7980-a1b2-c3d4e5f60718")
        );
        assert_eq!(
            parse_cgroup(&format!("0::/system.slice/docker-{id}.scope\n")).container_id,
            Some(id.into())
        );
        assert_eq!(
            parse_cgroup("0::/user.slice/user-0.slice/session-3.scope\n"),
            ContainerIdentity::default()
        );
        assert_eq!(
            parse_cgroup("garbage\n::\n0::/pod/\n"),
            ContainerIdentity::default()
        );
    }

    #[test]
    fn service_name_prefers_otel_variable() {
        assert_eq!(
            otel_service_name(b"A=1\0OTEL_SERVICE_NAME=checkout\0B=2\0"),
            Some("checkout".into())
        );
        assert_eq!(otel_service_name(b"A=1\0OTEL_SERVICE_NAME=\0"), None);
        assert_eq!(otel_service_name(b""), None);
    }

    #[test]
    fn bias_from_maps() {
        // makedev(0xfe, 0x01) encoded as the kernel does.
        let dev = (0x01 & 0xff) | (0xfe << 8);
        let maps = "\
555555554000-555555600000 r--p 00000000 fe:01 42 /srv/app
555555600000-555555700000 r-xp 000ac000 fe:01 42 /srv/app
7ffff7dd0000-7ffff7df0000 r-xp 00000000 fe:01 7 /lib/ld.so
";
        // A PIE text symbol at link-time 0xad000 lies at file offset 0xad000.
        assert_eq!(
            load_bias_from_maps(maps, (dev, 42), 0xad000, 0xad000),
            Some(0x555555554000)
        );
        // Non-PIE: link-time address equals runtime address.
        let maps = "00400000-00500000 r-xp 00000000 fe:01 42 /srv/app\n";
        assert_eq!(
            load_bias_from_maps(maps, (dev, 42), 0x1000, 0x401000),
            Some(0)
        );
        assert_eq!(load_bias_from_maps(maps, (dev, 43), 0x1000, 0x401000), None);
    }
}
