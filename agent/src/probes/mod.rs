//! Loading gort's eBPF programs and attaching them to Go binaries.
//!
//! Each probe family is one eBPF object (`agent-ebpf/src/bin/<family>.rs`), loaded once and
//! attached to every target binary: each attachment carries a cookie naming its binary's
//! slot (of `BINARY_CONFIG`, where the scheduler family finds per-binary struct offsets).
//! A family whose functions a binary lacks is left out for that binary, with the reason,
//! and the others keep working. Probes never format output; they hand raw events to
//! [`crate::collect`].

pub mod calibrate;
pub mod gc;
pub mod http;
pub mod lifecycle;
pub mod multi;
pub mod panics;
pub mod procs;
pub mod sched;

use std::path::Path;

use agent_common::{
    BinaryConfig, MAX_BINARIES,
    http::HttpConfig,
    sched::{ParkKey, Parked},
};
use aya::{
    Ebpf, EbpfLoader,
    maps::{Array, HashMap, MapData, PerCpuArray, RingBuf},
    programs::{ProgramError, UProbe, uprobe::UProbeLinkId},
};
use thiserror::Error;

use crate::{aggregate::sampling::ProbesIn, target::GoTarget};

#[derive(Debug, Error)]
pub enum ProbeError {
    #[error(
        "cannot load gort's eBPF programs (gort needs root, or CAP_BPF and CAP_PERFMON): {source}"
    )]
    Load {
        #[source]
        source: Box<aya::EbpfError>,
    },
    #[error("cannot find gort's own code in /proc/self/maps")]
    OwnCode,
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
    #[error("cannot attach `{program}` to `{path}`: {source}")]
    AttachMulti {
        program: &'static str,
        path: String,
        #[source]
        source: multi::MultiError,
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
#[derive(Debug, Clone)]
pub struct ProbeSettings {
    /// Blocks at least this long get their frames captured.
    pub frame_min_ns: u64,
    /// Size of the event ring buffer (a power of two, multiple of the page size).
    pub ringbuf_bytes: u32,
    /// Capacity of the in-flight park map.
    pub max_parked: u32,
    /// The families to attach (`--probes`); the scheduler's always is.
    pub families: Vec<Family>,
}

/// Why a family the user turned off is out.
pub const TURNED_OFF: &str = "turned off (--probes)";

/// The maps the collector reads. Taken out of the loaded objects so the collector owns them.
pub struct KernelMaps {
    pub sched_events: RingBuf<MapData>,
    pub gc_events: RingBuf<MapData>,
    pub lifecycle_events: RingBuf<MapData>,
    pub panic_events: RingBuf<MapData>,
    /// Drop counters of every family.
    pub drops: Vec<PerCpuArray<MapData, u64>>,
    /// The scheduler family's activity counters.
    pub stats: PerCpuArray<MapData, u64>,
    pub parked: HashMap<MapData, ParkKey, Parked>,
}

/// Which processes an attachment fires for.
#[derive(Debug, Clone, Copy)]
pub enum Scope {
    /// Only this process.
    Process(u32),
    /// Every process running the binary, now and later.
    AllProcesses,
}

/// A probe family: one eBPF object.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum Family {
    /// Parks and wake-ups (always on).
    Sched,
    /// Stop-the-world pauses and GC cycles.
    Gc,
    /// Goroutine creation and exit (goroutine counts, leak suspects).
    Lifecycle,
    /// Panics and fatal errors.
    Panics,
    /// HTTP requests (programs of the scheduler's object).
    Http,
}

/// Which of an attachment's families to attach.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Which {
    All,
    /// Those time sampling takes out and puts back ([`Family::sampled`]).
    Sampled,
    /// Those that stay in.
    Kept,
}

impl Family {
    /// Whether time sampling (`--overhead-budget`) takes the family's probes out for part of
    /// each period: those that fire per park, per goroutine or per request. The GC and panic
    /// probes fire rarely and stay in, so that no pause and no panic goes unseen.
    pub fn sampled(self) -> bool {
        matches!(self, Family::Sched | Family::Lifecycle | Family::Http)
    }

    pub const ALL: [Family; 5] = [
        Family::Sched,
        Family::Gc,
        Family::Lifecycle,
        Family::Panics,
        Family::Http,
    ];
}

/// The probes of one binary, attached; dropping the value does not detach (call
/// [`Probes::detach`]).
#[derive(Debug)]
pub struct Attachment {
    /// The binary's slot of `BINARY_CONFIG` (the attach cookie).
    pub slot: u32,
    links: Vec<(Family, &'static str, LinkId)>,
    /// Families left out for this binary, and why.
    pub unavailable: Vec<(Family, String)>,
}

/// One attached program: a uprobe_multi link holding all its offsets, or aya's link ids
/// (one per offset) where the kernel has no uprobe_multi.
#[derive(Debug)]
enum LinkId {
    Multi(multi::MultiLink),
    Single(UProbeLinkId),
}

/// A link taken out of its attachment, detached when dropped.
#[expect(dead_code, reason = "held only to be dropped: dropping detaches")]
enum Link {
    Multi(multi::MultiLink),
    Single(aya::programs::uprobe::UProbeLink),
}

/// gort's loaded eBPF programs.
pub struct Probes {
    sched: Ebpf,
    gc: Ebpf,
    lifecycle: Ebpf,
    panics: Ebpf,
    http_config: Array<MapData, HttpConfig>,
    /// `BINARY_CONFIG` of the families that read the target's `g`.
    configs: [Array<MapData, BinaryConfig>; 3],
    used_slots: Vec<bool>,
    /// Detaches under way in the background, and the slots they free once done.
    detaching: Vec<std::thread::JoinHandle<u32>>,
    /// The scheduler family's in-flight parks.
    parked: HashMap<MapData, ParkKey, Parked>,
    /// The families attached (`ProbeSettings::families`).
    families: Vec<Family>,
    /// Every program, loaded for uprobe_multi links; empty where the kernel has none (aya's
    /// programs, loaded instead, attach one link per offset).
    multi: std::collections::HashMap<&'static str, multi::MultiProgram>,
}

impl Probes {
    /// Loads the programs into the kernel (not yet attached anywhere).
    pub fn load(settings: ProbeSettings) -> Result<(Probes, KernelMaps), ProbeError> {
        // The programs use no kernel types (no CO-RE), so the kernel's BTF, large to parse,
        // is not loaded.
        let mut sched = EbpfLoader::new()
            .btf(None)
            .override_global("FRAME_MIN_NS", &settings.frame_min_ns, true)
            .map_max_entries("EVENTS", settings.ringbuf_bytes)
            .map_max_entries("PARKED", settings.max_parked)
            .load(sched::OBJECT)
            .map_err(|source| ProbeError::Load {
                source: Box::new(source),
            })?;
        let load = |object| {
            EbpfLoader::new()
                .btf(None)
                .load(object)
                .map_err(|source| ProbeError::Load {
                    source: Box::new(source),
                })
        };
        let mut gc = load(gc::OBJECT)?;
        let mut lifecycle = load(lifecycle::OBJECT)?;
        let mut panics = load(panics::OBJECT)?;
        let sched_programs: Vec<&'static str> =
            [&sched::PROGRAMS[..], &http::PROGRAMS[..]].concat();
        let objects: [(&[u8], &mut Ebpf, &[&'static str]); 4] = [
            (sched::OBJECT, &mut sched, &sched_programs),
            (gc::OBJECT, &mut gc, &gc::PROGRAMS),
            (lifecycle::OBJECT, &mut lifecycle, &lifecycle::PROGRAMS),
            (panics::OBJECT, &mut panics, &panics::PROGRAMS),
        ];
        let mut multi = std::collections::HashMap::new();
        for (object, ebpf, names) in &objects {
            match multi::load(object, ebpf, names) {
                Ok(programs) => multi.extend(programs),
                Err(e) => {
                    log::info!("one link per probe: no uprobe_multi links here ({e})");
                    multi.clear();
                    break;
                }
            }
        }
        if multi.is_empty() {
            for (_, ebpf, names) in objects {
                load_programs(ebpf, names)?;
            }
        }
        // A second handle on the in-flight map, for `resume`: the collector owns the first.
        let parked_id = match sched.map("PARKED") {
            Some(aya::maps::Map::HashMap(data)) => data.info().map(|i| i.id()),
            _ => Err(aya::maps::MapError::InvalidName {
                name: "PARKED".into(),
            }),
        };
        let parked = parked_id
            .and_then(MapData::from_id)
            .and_then(|data| HashMap::try_from(aya::maps::Map::HashMap(data)))
            .map_err(|source| ProbeError::Map {
                name: "PARKED",
                source: Box::new(source),
            })?;
        let maps = KernelMaps {
            sched_events: take_map(&mut sched, "EVENTS")?,
            gc_events: take_map(&mut gc, "GC_EVENTS")?,
            lifecycle_events: take_map(&mut lifecycle, "LIFECYCLE_EVENTS")?,
            panic_events: take_map(&mut panics, "PANIC_EVENTS")?,
            drops: vec![
                take_map(&mut sched, "DROPS")?,
                take_map(&mut gc, "DROPS")?,
                take_map(&mut lifecycle, "DROPS")?,
                take_map(&mut panics, "DROPS")?,
            ],
            stats: take_map(&mut sched, "STATS")?,
            parked: take_map(&mut sched, "PARKED")?,
        };
        let http_config = take_map(&mut sched, "HTTP_CONFIG")?;
        let configs = [
            take_map(&mut sched, "BINARY_CONFIG")?,
            take_map(&mut lifecycle, "BINARY_CONFIG")?,
            take_map(&mut panics, "BINARY_CONFIG")?,
        ];
        Ok((
            Probes {
                sched,
                gc,
                lifecycle,
                panics,
                http_config,
                configs,
                used_slots: vec![false; MAX_BINARIES as usize],
                detaching: Vec::new(),
                parked,
                families: settings.families,
                multi,
            },
            maps,
        ))
    }

    /// Attaches the probes to `target`, whose executable is opened as `path`. The scheduler
    /// family must attach; another family that cannot is listed in `unavailable`.
    pub fn attach(
        &mut self,
        target: &GoTarget,
        path: &Path,
        scope: Scope,
    ) -> Result<Attachment, ProbeError> {
        self.attach_which(target, path, scope, Which::All)
    }

    /// An attachment as if suspended (a process found while time sampling has the probes
    /// out): the families that stay in are attached, the others wait for [`Probes::resume`].
    pub fn attach_suspended(
        &mut self,
        target: &GoTarget,
        path: &Path,
        scope: Scope,
    ) -> Result<Attachment, ProbeError> {
        self.attach_which(target, path, scope, Which::Kept)
    }

    fn attach_which(
        &mut self,
        target: &GoTarget,
        path: &Path,
        scope: Scope,
        which: Which,
    ) -> Result<Attachment, ProbeError> {
        let mut attachment = self.reserve(target)?;
        if let Err(e) = self.attach_links(target, path, scope, &mut attachment, which) {
            self.detach(attachment);
            return Err(e);
        }
        Ok(attachment)
    }

    /// A slot for `target`, its settings written, no probe attached yet.
    fn reserve(&mut self, target: &GoTarget) -> Result<Attachment, ProbeError> {
        self.reclaim_slots(false);
        let slot = self
            .used_slots
            .iter()
            .position(|used| !used)
            .ok_or(ProbeError::TooManyBinaries)? as u32;
        let o = &target.offsets;
        let config = BinaryConfig {
            goid_offset: o.g_goid,
            gopc_offset: o.g_gopc,
            startpc_offset: o.g_startpc,
            valid: 1,
        };
        self.set_config(slot, config)?;
        self.used_slots[slot as usize] = true;
        // The families left out: turned off, or lacking their functions in this binary.
        let lacking = [
            (Family::Gc, gc::points(target).err()),
            (Family::Lifecycle, lifecycle::points(target).err()),
            (Family::Panics, panics::points(target).err()),
            (Family::Http, http::points(target).err()),
        ];
        let unavailable = lacking
            .into_iter()
            .filter_map(|(family, why)| {
                if !self.families.contains(&family) {
                    Some((family, TURNED_OFF.to_string()))
                } else {
                    why.map(|why| (family, why))
                }
            })
            .collect();
        Ok(Attachment {
            slot,
            links: Vec::new(),
            unavailable,
        })
    }

    /// Takes an attachment's sampled probes ([`Family::sampled`]) out of the target but keeps
    /// its slot, for [`Probes::resume`] (time sampling under `--overhead-budget`). The kernel
    /// removes the breakpoints at once; the grace period after runs in the background.
    /// The returned thread ends, with the time, once the kernel has removed them.
    pub fn suspend(
        &mut self,
        attachment: &mut Attachment,
    ) -> std::thread::JoinHandle<std::time::Instant> {
        let (out, kept) = std::mem::take(&mut attachment.links)
            .into_iter()
            .partition(|(family, _, _)| family.sampled());
        attachment.links = kept;
        let links = self.take_links(out);
        std::thread::spawn(move || {
            drop_links(links);
            std::time::Instant::now()
        })
    }

    /// Puts a suspended attachment's probes back, into the same slot (late hits of the old
    /// probes are the same binary's). A family that could not attach at first stays out.
    /// Returns when each family's probes were in: the sampled window's start (the parks').
    pub fn resume(
        &mut self,
        target: &GoTarget,
        path: &Path,
        scope: Scope,
        attachment: &mut Attachment,
    ) -> Result<ProbesIn, ProbeError> {
        // Parks recorded before the suspension whose resume went unseen: a later RET of the
        // same goroutine must not match them (the time between would count as one block).
        let stale: Vec<ParkKey> = self
            .parked
            .keys()
            .filter_map(Result::ok)
            .filter(|k| match scope {
                Scope::Process(pid) => k.pid == pid,
                Scope::AllProcesses => true,
            })
            .collect();
        for key in stale {
            let _ = self.parked.remove(&key);
        }
        // The families left out stay out (`attach_links` skips them).
        let result = self.attach_links(target, path, scope, attachment, Which::Sampled);
        if result.is_err() {
            drop(self.suspend(attachment));
        }
        result
    }

    /// Attaches `which` families' probes of `target` into `attachment`'s slot (not those left
    /// out); returns when (CLOCK_MONOTONIC ns) each family's were in.
    fn attach_links(
        &mut self,
        target: &GoTarget,
        path: &Path,
        scope: Scope,
        attachment: &mut Attachment,
        which: Which,
    ) -> Result<ProbesIn, ProbeError> {
        let skipped: Vec<Family> = attachment.unavailable.iter().map(|(f, _)| *f).collect();
        let wanted = |family: Family| {
            !skipped.contains(&family)
                && match which {
                    Which::All => true,
                    Which::Sampled => family.sampled(),
                    Which::Kept => !family.sampled(),
                }
        };
        if wanted(Family::Sched) {
            sched::attach(self, target, path, scope, attachment)?;
        }
        let parks_from_ns = crate::collect::monotonic_ns();
        let gc = gc::points(target).map(|points| {
            move |probes: &mut Probes, a: &mut Attachment| {
                gc::attach(probes, &points, path, scope, a)
            }
        });
        if wanted(Family::Gc) {
            self.attach_optional(Family::Gc, gc, attachment);
        }
        let lifecycle = lifecycle::points(target).map(|points| {
            move |probes: &mut Probes, a: &mut Attachment| {
                lifecycle::attach(probes, &points, path, scope, a)
            }
        });
        if wanted(Family::Lifecycle) {
            self.attach_optional(Family::Lifecycle, lifecycle, attachment);
        }
        let lifecycle_ns = crate::collect::monotonic_ns();
        let panics = panics::points(target).map(|points| {
            move |probes: &mut Probes, a: &mut Attachment| {
                panics::attach(probes, &points, path, scope, a)
            }
        });
        if wanted(Family::Panics) {
            self.attach_optional(Family::Panics, panics, attachment);
        }
        let http = http::points(target).map(|points| {
            move |probes: &mut Probes, a: &mut Attachment| {
                http::attach(probes, &points, path, scope, a)
            }
        });
        if wanted(Family::Http) {
            self.attach_optional(Family::Http, http, attachment);
        }
        Ok(ProbesIn {
            parks_ns: parks_from_ns,
            lifecycle_ns,
            http_ns: crate::collect::monotonic_ns(),
        })
    }

    /// Attaches a family that may be left out: on failure its links are undone and the
    /// reason recorded.
    fn attach_optional(
        &mut self,
        family: Family,
        attach: Result<impl FnOnce(&mut Probes, &mut Attachment) -> Result<(), ProbeError>, String>,
        attachment: &mut Attachment,
    ) {
        let before = attachment.links.len();
        let result = attach.and_then(|f| f(self, attachment).map_err(|e| e.to_string()));
        if let Err(why) = result {
            let links: Vec<_> = attachment.links.drain(before..).collect();
            drop(self.take_links(links));
            attachment.unavailable.push((family, why));
        }
    }

    fn set_http_config(&mut self, slot: u32, config: HttpConfig) -> Result<(), ProbeError> {
        self.http_config
            .set(slot, config, 0)
            .map_err(|source| ProbeError::Map {
                name: "HTTP_CONFIG",
                source: Box::new(source),
            })
    }

    fn set_config(&mut self, slot: u32, config: BinaryConfig) -> Result<(), ProbeError> {
        for map in &mut self.configs {
            map.set(slot, config, 0).map_err(|source| ProbeError::Map {
                name: "BINARY_CONFIG",
                source: Box::new(source),
            })?;
        }
        Ok(())
    }

    /// Detaches every probe of an attachment, in the background: the slot is freed once the
    /// kernel has removed them all (so no late hit of them can be taken for another
    /// binary's). [`Probes::settle`] waits for it.
    pub fn detach(&mut self, attachment: Attachment) {
        let links = self.take_links(attachment.links);
        let slot = attachment.slot;
        self.detaching.push(std::thread::spawn(move || {
            drop_links(links);
            slot
        }));
    }

    fn take_links(&mut self, links: Vec<(Family, &'static str, LinkId)>) -> Vec<Link> {
        let mut taken = Vec::with_capacity(links.len());
        for (family, name, link) in links {
            match link {
                LinkId::Multi(link) => taken.push(Link::Multi(link)),
                LinkId::Single(link) => {
                    if let Ok(p) = program(self.ebpf(family), name) {
                        // The link may already be gone with its process; nothing else to do.
                        if let Ok(link) = p.take_link(link) {
                            taken.push(Link::Single(link));
                        }
                    }
                }
            }
        }
        taken
    }

    /// Waits until every detach under way is done.
    pub fn settle(&mut self) {
        self.reclaim_slots(true);
    }

    /// Frees the slots of finished detaches (of all of them, waiting, with `wait`).
    fn reclaim_slots(&mut self, wait: bool) {
        let (done, running): (Vec<_>, Vec<_>) = std::mem::take(&mut self.detaching)
            .into_iter()
            .partition(|h| wait || h.is_finished());
        self.detaching = running;
        for handle in done {
            if let Ok(slot) = handle.join() {
                let _ = self.set_config(slot, BinaryConfig::default());
                let _ = self.set_http_config(slot, HttpConfig::default());
                self.used_slots[slot as usize] = false;
            }
        }
    }

    fn ebpf(&mut self, family: Family) -> &mut Ebpf {
        match family {
            Family::Sched => &mut self.sched,
            Family::Gc => &mut self.gc,
            Family::Lifecycle => &mut self.lifecycle,
            Family::Panics => &mut self.panics,
            Family::Http => &mut self.sched,
        }
    }

    /// Attaches one program at file offsets of `path`: one uprobe_multi link, or where the
    /// kernel has none, a link per offset.
    fn attach_points(
        &mut self,
        attachment: &mut Attachment,
        (family, name): (Family, &'static str),
        path: &Path,
        offsets: &[u64],
        scope: Scope,
    ) -> Result<(), ProbeError> {
        if offsets.is_empty() {
            return Ok(());
        }
        let Some(program) = self.multi.get(name) else {
            for &offset in offsets {
                self.attach_at(attachment, (family, name), path, offset, scope)?;
            }
            return Ok(());
        };
        let pid = match scope {
            Scope::Process(pid) => pid,
            Scope::AllProcesses => 0,
        };
        let link = program
            .attach(path, offsets, u64::from(attachment.slot), pid)
            .map_err(|source| ProbeError::AttachMulti {
                program: name,
                path: path.display().to_string(),
                source,
            })?;
        attachment.links.push((family, name, LinkId::Multi(link)));
        Ok(())
    }

    /// Attaches one program at one file offset of `path` (aya's link).
    fn attach_at(
        &mut self,
        attachment: &mut Attachment,
        (family, name): (Family, &'static str),
        path: &Path,
        offset: u64,
        scope: Scope,
    ) -> Result<(), ProbeError> {
        use aya::programs::uprobe::{UProbeAttachLocation, UProbeAttachPoint, UProbeScope};
        let scope = match scope {
            Scope::Process(pid) => match std::num::NonZeroU32::new(pid) {
                Some(pid) => UProbeScope::OneProcess(pid),
                None => UProbeScope::AllProcesses,
            },
            Scope::AllProcesses => UProbeScope::AllProcesses,
        };
        let point = UProbeAttachPoint {
            location: UProbeAttachLocation::AbsoluteOffset(offset),
            cookie: Some(attachment.slot as u64),
        };
        let link = program(self.ebpf(family), name)?
            .attach(point, path, scope)
            .map_err(|source| ProbeError::Attach {
                program: name,
                path: path.display().to_string(),
                offset,
                source: Box::new(source),
            })?;
        attachment.links.push((family, name, LinkId::Single(link)));
        Ok(())
    }
}

/// Dropping a link detaches its uprobes, and the kernel waits out a grace period after:
/// one for a uprobe_multi link, one per uprobe for aya's (one after another: the ~30 links
/// of a binary took 1.1 s on kernel 6.18), too long to hold up the agent (`--all` attaches
/// new processes meanwhile): callers run this in the background.
fn drop_links(links: Vec<Link>) {
    std::thread::scope(|scope| {
        for link in links {
            scope.spawn(move || drop(link));
        }
    });
}

fn load_programs(ebpf: &mut Ebpf, names: &[&'static str]) -> Result<(), ProbeError> {
    for &name in names {
        program(ebpf, name)?
            .load()
            .map_err(|source| ProbeError::Program {
                name,
                source: Box::new(source),
            })?;
    }
    Ok(())
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
