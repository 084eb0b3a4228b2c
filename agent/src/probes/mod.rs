//! Loading gort's eBPF programs and attaching them to Go binaries.
//!
//! One set of programs and maps serves every target binary: each attachment carries a cookie
//! naming its binary's slot of `BINARY_CONFIG`, where the per-binary struct offsets live.
//! Probes never format output; they hand raw events to [`crate::collect`].

pub mod sched;

use std::path::Path;

use agent_common::{MAX_BINARIES, sched::BinaryConfig};
use aya::{
    Ebpf, EbpfLoader,
    maps::{Array, HashMap, MapData, PerCpuArray, RingBuf},
    programs::{ProgramError, UProbe, uprobe::UProbeLinkId},
};
use thiserror::Error;

use crate::target::GoTarget;

#[derive(Debug, Error)]
pub enum ProbeError {
    #[error(
        "cannot load gort's eBPF programs (gort needs root, or CAP_BPF and CAP_PERFMON): {source}"
    )]
    Load {
        #[source]
        source: Box<aya::EbpfError>,
    },
    #[error("the eBPF object has no {kind} `{name}`")]
    Missing {
        kind: &'static str,
        name: &'static str,
    },
    #[error("cannot load eBPF program `{name}`: {source}")]
    Program {
        name: &'static str,
        #[source]
        source: Box<ProgramError>,
    },
    #[error("cannot attach `{program}` to `{path}` at file offset {offset:#x}: {source}")]
    Attach {
        program: &'static str,
        path: String,
        offset: u64,
        #[source]
        source: Box<ProgramError>,
    },
    #[error("cannot use eBPF map `{name}`: {source}")]
    Map {
        name: &'static str,
        #[source]
        source: Box<aya::maps::MapError>,
    },
    #[error("gort attaches to at most {MAX_BINARIES} distinct binaries at once")]
    TooManyBinaries,
}

/// Load-time settings of the kernel side.
#[derive(Debug, Clone, Copy)]
pub struct ProbeSettings {
    /// Blocks at least this long get their frames captured.
    pub frame_min_ns: u64,
    /// Size of the event ring buffer (a power of two, multiple of the page size).
    pub ringbuf_bytes: u32,
    /// Capacity of the in-flight park map.
    pub max_parked: u32,
}

/// The maps the collector reads. Taken out of the loaded object so the collector owns them.
pub struct KernelMaps {
    pub events: RingBuf<MapData>,
    pub drops: PerCpuArray<MapData, u64>,
    pub stats: PerCpuArray<MapData, u64>,
    pub parked: HashMap<MapData, agent_common::sched::ParkKey, agent_common::sched::Parked>,
}

/// Which processes an attachment fires for.
#[derive(Debug, Clone, Copy)]
pub enum Scope {
    /// Only this process.
    Process(u32),
    /// Every process running the binary, now and later.
    AllProcesses,
}

/// The probes of one binary, attached; dropping the value does not detach (call
/// [`Probes::detach`]).
#[derive(Debug)]
pub struct Attachment {
    /// The binary's slot of `BINARY_CONFIG` (the attach cookie).
    pub slot: u32,
    links: Vec<(&'static str, UProbeLinkId)>,
}

/// gort's loaded eBPF programs.
pub struct Probes {
    ebpf: Ebpf,
    config: Array<MapData, BinaryConfig>,
    used_slots: Vec<bool>,
}

impl Probes {
    /// Loads the programs into the kernel (not yet attached anywhere).
    pub fn load(settings: ProbeSettings) -> Result<(Probes, KernelMaps), ProbeError> {
        let mut ebpf = EbpfLoader::new()
            .override_global("FRAME_MIN_NS", &settings.frame_min_ns, true)
            .map_max_entries("EVENTS", settings.ringbuf_bytes)
            .map_max_entries("PARKED", settings.max_parked)
            .load(sched::OBJECT)
            .map_err(|source| ProbeError::Load {
                source: Box::new(source),
            })?;
        for name in sched::PROGRAMS {
            program(&mut ebpf, name)?
                .load()
                .map_err(|source| ProbeError::Program {
                    name,
                    source: Box::new(source),
                })?;
        }
        let maps = KernelMaps {
            events: take_map(&mut ebpf, "EVENTS")?,
            drops: take_map(&mut ebpf, "DROPS")?,
            stats: take_map(&mut ebpf, "STATS")?,
            parked: take_map(&mut ebpf, "PARKED")?,
        };
        let config = take_map(&mut ebpf, "BINARY_CONFIG")?;
        Ok((
            Probes {
                ebpf,
                config,
                used_slots: vec![false; MAX_BINARIES as usize],
            },
            maps,
        ))
    }

    /// Attaches the probes to `target`, whose executable is opened as `path`.
    pub fn attach(
        &mut self,
        target: &GoTarget,
        path: &Path,
        scope: Scope,
    ) -> Result<Attachment, ProbeError> {
        let slot = self
            .used_slots
            .iter()
            .position(|used| !used)
            .ok_or(ProbeError::TooManyBinaries)? as u32;
        let config = BinaryConfig {
            goid_offset: target.offsets.g_goid,
            valid: 1,
        };
        self.config
            .set(slot, config, 0)
            .map_err(|source| ProbeError::Map {
                name: "BINARY_CONFIG",
                source: Box::new(source),
            })?;
        self.used_slots[slot as usize] = true;
        let mut attachment = Attachment {
            slot,
            links: Vec::new(),
        };
        let result = sched::attach(self, target, path, scope, &mut attachment);
        if let Err(e) = result {
            self.detach(attachment);
            return Err(e);
        }
        Ok(attachment)
    }

    /// Detaches every probe of an attachment and frees its slot.
    pub fn detach(&mut self, attachment: Attachment) {
        for (name, link) in attachment.links {
            if let Ok(p) = program(&mut self.ebpf, name) {
                // The link may already be gone with its process; nothing else to do then.
                let _ = p.detach(link);
            }
        }
        let _ = self.config.set(attachment.slot, BinaryConfig::default(), 0);
        self.used_slots[attachment.slot as usize] = false;
    }

    /// Attaches one program at one file offset of `path`.
    fn attach_at(
        &mut self,
        attachment: &mut Attachment,
        name: &'static str,
        path: &Path,
        offset: u64,
        scope: Scope,
    ) -> Result<(), ProbeError> {
        let scope = match scope {
            Scope::Process(pid) => match std::num::NonZeroU32::new(pid) {
                Some(pid) => aya::programs::uprobe::UProbeScope::OneProcess(pid),
                None => aya::programs::uprobe::UProbeScope::AllProcesses,
            },
            Scope::AllProcesses => aya::programs::uprobe::UProbeScope::AllProcesses,
        };
        let point = aya::programs::uprobe::UProbeAttachPoint {
            location: aya::programs::uprobe::UProbeAttachLocation::AbsoluteOffset(offset),
            cookie: Some(attachment.slot as u64),
        };
        let link = program(&mut self.ebpf, name)?
            .attach(point, path, scope)
            .map_err(|source| ProbeError::Attach {
                program: name,
                path: path.display().to_string(),
                offset,
                source: Box::new(source),
            })?;
        attachment.links.push((name, link));
        Ok(())
    }
}

fn program<'a>(ebpf: &'a mut Ebpf, name: &'static str) -> Result<&'a mut UProbe, ProbeError> {
    ebpf.program_mut(name)
        .and_then(|p| p.try_into().ok())
        .ok_or(ProbeError::Missing {
            kind: "uprobe program",
            name,
        })
}

fn take_map<T>(ebpf: &mut Ebpf, name: &'static str) -> Result<T, ProbeError>
where
    T: TryFrom<aya::maps::Map, Error = aya::maps::MapError>,
{
    let map = ebpf
        .take_map(name)
        .ok_or(ProbeError::Missing { kind: "map", name })?;
    T::try_from(map).map_err(|source| ProbeError::Map {
        name,
        source: Box::new(source),
    })
}
