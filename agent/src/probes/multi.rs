//! uprobe_multi links (kernel 6.6 and later): every offset of one program in one binary
//! attached by one `BPF_LINK_CREATE`, and removed together when the link is closed.
//!
//! A link per offset (aya 0.14's only way) is removed one grace period after another, ~40 ms
//! each on kernel 6.18, and each probe fires until its turn comes: ~1 s to take a binary's
//! probes out, at full cost to a busy target under time sampling. A multi link takes all its
//! breakpoints out first and waits one grace period after.
//!
//! aya 0.14 cannot load a uprobe program for such links (the kernel wants
//! `expected_attach_type = BPF_TRACE_UPROBE_MULTI` at load), so the programs are loaded here
//! from the same object, against the maps aya created for it: parsed and relocated with
//! aya-obj, then `BPF_PROG_LOAD`. Where the kernel refuses, gort falls back to aya's links.

use std::{
    collections::{HashMap, HashSet},
    ffi::CString,
    os::fd::{AsFd, AsRawFd, BorrowedFd, FromRawFd, OwnedFd},
    path::Path,
};

use aya::{Ebpf, maps::Map};
use aya_obj::generated::{
    bpf_attach_type::BPF_TRACE_UPROBE_MULTI, bpf_attr, bpf_cmd, bpf_prog_type::BPF_PROG_TYPE_KPROBE,
};

/// A program loaded for uprobe_multi links.
#[derive(Debug)]
pub struct MultiProgram {
    fd: OwnedFd,
}

/// An attached uprobe_multi link: closing it (dropping the value) removes every breakpoint
/// of it, then waits one grace period.
#[derive(Debug)]
pub struct MultiLink {
    _fd: OwnedFd,
}

/// Why a program could not be loaded or attached this way.
#[derive(Debug, thiserror::Error)]
pub enum MultiError {
    #[error("cannot parse the eBPF object: {0}")]
    Parse(String),
    #[error("the eBPF object has no program `{0}`")]
    Missing(String),
    #[error("BPF_PROG_LOAD of `{name}` as uprobe_multi: {source}{log}")]
    Load {
        name: String,
        source: std::io::Error,
        log: String,
    },
    #[error("BPF_LINK_CREATE (uprobe_multi): {0}")]
    Link(std::io::Error),
    #[error("path has a NUL byte")]
    Path,
}

fn bpf(cmd: bpf_cmd, attr: &mut bpf_attr) -> std::io::Result<OwnedFd> {
    // SAFETY: `attr` is a valid, zero-padded bpf_attr for `cmd`, and every pointer in it
    // outlives the call.
    let ret = unsafe {
        libc::syscall(
            libc::SYS_bpf,
            cmd as libc::c_long,
            std::ptr::from_mut(attr),
            size_of::<bpf_attr>(),
        )
    };
    if ret < 0 {
        return Err(std::io::Error::last_os_error());
    }
    // SAFETY: the kernel returned a new file descriptor, owned by nobody else.
    Ok(unsafe { OwnedFd::from_raw_fd(ret as i32) })
}

/// The file descriptor of one of aya's maps.
fn map_fd(map: &Map) -> BorrowedFd<'_> {
    let data = match map {
        Map::Array(d)
        | Map::ArrayOfMaps(d)
        | Map::BloomFilter(d)
        | Map::CgroupArray(d)
        | Map::CgroupStorage(d)
        | Map::CgrpStorage(d)
        | Map::CpuMap(d)
        | Map::DevMap(d)
        | Map::DevMapHash(d)
        | Map::HashMap(d)
        | Map::HashOfMaps(d)
        | Map::InodeStorage(d)
        | Map::LpmTrie(d)
        | Map::LruHashMap(d)
        | Map::PerCpuArray(d)
        | Map::PerCpuCgroupStorage(d)
        | Map::PerCpuHashMap(d)
        | Map::PerCpuLruHashMap(d)
        | Map::PerfEventArray(d)
        | Map::ProgramArray(d)
        | Map::Queue(d)
        | Map::ReusePortSockArray(d)
        | Map::RingBuf(d)
        | Map::SockHash(d)
        | Map::SockMap(d)
        | Map::SkStorage(d)
        | Map::Stack(d)
        | Map::StackTraceMap(d)
        | Map::Unsupported(d)
        | Map::XskMap(d) => d,
    };
    data.fd().as_fd()
}

/// Loads `names` of `object` for uprobe_multi links, against the maps of `ebpf` (loaded from
/// the same object; call before any map is taken out of it).
pub fn load(
    object: &[u8],
    ebpf: &Ebpf,
    names: &[&'static str],
) -> Result<HashMap<&'static str, MultiProgram>, MultiError> {
    let mut obj = aya_obj::Object::parse(object).map_err(|e| MultiError::Parse(e.to_string()))?;
    let fds: HashMap<&str, i32> = ebpf
        .maps()
        .map(|(name, map)| (name, map_fd(map).as_raw_fd()))
        .collect();
    let maps: Vec<(String, i32, aya_obj::Map)> = obj
        .maps
        .iter()
        .filter_map(|(name, map)| Some((name.clone(), *fds.get(name.as_str())?, map.clone())))
        .collect();
    let text_sections: HashSet<usize> = obj.functions.keys().map(|(section, _)| *section).collect();
    obj.relocate_maps(
        maps.iter().map(|(name, fd, map)| (name.as_str(), *fd, map)),
        &text_sections,
    )
    .map_err(|e| MultiError::Parse(e.to_string()))?;
    obj.relocate_calls(&text_sections)
        .map_err(|e| MultiError::Parse(e.to_string()))?;
    let mut loaded = HashMap::new();
    for &name in names {
        let program = obj
            .programs
            .get(name)
            .ok_or_else(|| MultiError::Missing(name.to_string()))?;
        let function = obj
            .functions
            .get(&program.function_key())
            .ok_or_else(|| MultiError::Missing(name.to_string()))?;
        let fd = load_program(name, &function.instructions, &program.license)?;
        loaded.insert(name, MultiProgram { fd });
    }
    Ok(loaded)
}

fn load_program(
    name: &str,
    insns: &[aya_obj::generated::bpf_insn],
    license: &CString,
) -> Result<OwnedFd, MultiError> {
    let attempt = |log: &mut [u8]| {
        // SAFETY: bpf_attr is plain data; all zeros is its default.
        let mut attr: bpf_attr = unsafe { std::mem::zeroed() };
        // SAFETY: writing the BPF_PROG_LOAD member of a zeroed union.
        let load = unsafe { &mut attr.__bindgen_anon_3 };
        load.prog_type = BPF_PROG_TYPE_KPROBE as u32;
        load.expected_attach_type = BPF_TRACE_UPROBE_MULTI as u32;
        load.insns = insns.as_ptr() as u64;
        load.insn_cnt = insns.len() as u32;
        load.license = license.as_ptr() as u64;
        // The kernel's name is at most 15 bytes.
        for (dst, src) in load.prog_name.iter_mut().zip(name.bytes().take(15)) {
            *dst = src as libc::c_char;
        }
        if !log.is_empty() {
            load.log_level = 1;
            load.log_buf = log.as_mut_ptr() as u64;
            load.log_size = log.len() as u32;
        }
        bpf(bpf_cmd::BPF_PROG_LOAD, &mut attr)
    };
    attempt(&mut []).or_else(|_| {
        // Again with the verifier's log, to say why.
        let mut log = vec![0u8; 1 << 20];
        attempt(&mut log).map_err(|source| {
            let text = String::from_utf8_lossy(&log);
            let text = text.trim_end_matches('\0');
            let tail: Vec<&str> = text.lines().rev().take(3).collect();
            MultiError::Load {
                name: name.to_string(),
                source,
                log: if tail.is_empty() {
                    String::new()
                } else {
                    format!(
                        " (verifier: {})",
                        tail.into_iter().rev().collect::<Vec<_>>().join(" / ")
                    )
                },
            }
        })
    })
}

impl MultiProgram {
    /// Attaches the program at `offsets` (file offsets) of `path`, every hit carrying
    /// `cookie`; for `pid`'s process only, or every process running the file with `pid` 0.
    pub fn attach(
        &self,
        path: &Path,
        offsets: &[u64],
        cookie: u64,
        pid: u32,
    ) -> Result<MultiLink, MultiError> {
        use std::os::unix::ffi::OsStrExt;
        let path = CString::new(path.as_os_str().as_bytes()).map_err(|_| MultiError::Path)?;
        let cookies = vec![cookie; offsets.len()];
        // SAFETY: bpf_attr is plain data; all zeros is its default.
        let mut attr: bpf_attr = unsafe { std::mem::zeroed() };
        // SAFETY: writing the BPF_LINK_CREATE member of a zeroed union.
        let create = unsafe { &mut attr.link_create };
        create.__bindgen_anon_1.prog_fd = self.fd.as_raw_fd() as u32;
        create.attach_type = BPF_TRACE_UPROBE_MULTI as u32;
        // SAFETY: writing the uprobe_multi member of a zeroed union.
        let multi = unsafe { &mut create.__bindgen_anon_3.uprobe_multi };
        multi.path = path.as_ptr() as u64;
        multi.offsets = offsets.as_ptr() as u64;
        multi.cookies = cookies.as_ptr() as u64;
        multi.cnt = offsets.len() as u32;
        multi.pid = pid;
        let fd = bpf(bpf_cmd::BPF_LINK_CREATE, &mut attr).map_err(MultiError::Link)?;
        Ok(MultiLink { _fd: fd })
    }
}
