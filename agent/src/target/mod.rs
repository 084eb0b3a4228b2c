//! Finding and reading Go targets: whether gort can attach to a binary, where its probes go,
//! and the facts about it that decoding needs (struct offsets, waitReason names, symbols).
//!
//! The binary formats themselves (ELF, build info, `.gopclntab`, DWARF, RET scanning) are read
//! by the `gobinary` crate; this module turns what it finds into an attach plan or a one-line
//! reason why not.

pub mod process;
pub mod stack;
pub mod walk;

use std::{path::Path, sync::Arc};

use gobinary::{
    AllGVariables, Arch, GoBinary, GoVersion, ReasonNames, RuntimeOffsets, TimeHistogramLayout,
};
use thiserror::Error;

/// Oldest Go release gort supports.
pub const MIN_GO: (u32, u32) = (1, 21);
/// Newest Go release gort supports (and has generated offset tables for).
pub const MAX_GO: (u32, u32) = (1, 27);

/// The function whose entry and RET instructions the scheduler probes attach to.
pub const GOPARK: &str = "runtime.gopark";

/// Why gort cannot attach to a binary.
#[derive(Debug, Error)]
pub enum TargetError {
    #[error("cannot read `{path}`: {source}")]
    Read {
        path: String,
        #[source]
        source: gobinary::Error,
    },
    #[error("`{path}` is built for {arch}; gort supports amd64 only")]
    UnsupportedArch { path: String, arch: String },
    #[error(
        "`{path}` is built with {version}; gort supports go{}.{} to go{}.{}",
        MIN_GO.0, MIN_GO.1, MAX_GO.0, MAX_GO.1
    )]
    UnsupportedGo { path: String, version: GoVersion },
    #[error("`{path}` has no function `{function}` (not found in .gopclntab)")]
    MissingFunction {
        path: String,
        function: &'static str,
    },
    #[error("no RET instruction found in `{function}` of `{path}`")]
    NoReturn {
        path: String,
        function: &'static str,
    },
    #[error("cannot map {function} at {vaddr:#x} to a file offset in `{path}`")]
    NoFileOffset {
        path: String,
        function: &'static str,
        vaddr: u64,
    },
    #[error("cannot read runtime {what} of `{path}`: {source}")]
    RuntimeData {
        path: String,
        what: &'static str,
        #[source]
        source: gobinary::Error,
    },
}

/// Everything needed to attach the probes to one Go binary and decode what they report.
#[derive(Debug)]
pub struct GoTarget {
    pub binary: Arc<GoBinary>,
    /// File offset of `runtime.gopark`'s first instruction.
    pub gopark_entry: u64,
    /// Link-time address of `runtime.gopark`'s first instruction.
    pub gopark_vaddr: u64,
    /// File offsets of every RET instruction of `runtime.gopark`.
    pub gopark_returns: Vec<u64>,
    pub offsets: RuntimeOffsets,
    pub wait_reasons: ReasonNames,
    /// `stwReason` names; absent names print as `stwReason(N)`.
    pub stw_reasons: ReasonNames,
    /// Where the runtime's scheduling-latency histogram (`runtime.sched.timeToRun`) is, if
    /// the binary says: the `runtime.sched` symbol is gone from stripped binaries.
    pub sched_latency: Option<SchedLatencyHistogram>,
    /// Where the runtime's goroutine list is, to find goroutines that existed before gort
    /// attached (None: the binary does not say, see `allg_error`).
    pub allg: Option<AllGVariables>,
    pub allg_error: Option<String>,
}

/// The runtime's `sched.timeToRun` of a binary.
#[derive(Debug, Clone, Copy)]
pub struct SchedLatencyHistogram {
    /// Link-time address.
    pub vaddr: u64,
    pub layout: TimeHistogramLayout,
    /// Link-time address of `sched.goidgen`, the goroutine id generator beside it: how many
    /// goroutines the program has created, for the pace of creations under a budget.
    pub goidgen_vaddr: Option<u64>,
}

impl GoTarget {
    /// Reads `path` and checks that gort can attach to it.
    pub fn open(path: &Path) -> Result<GoTarget, TargetError> {
        let binary = GoBinary::open(path).map_err(|source| TargetError::Read {
            path: path.display().to_string(),
            source,
        })?;
        Self::from_binary(path, Arc::new(binary))
    }

    /// Checks an already read binary.
    pub fn from_binary(path: &Path, binary: Arc<GoBinary>) -> Result<GoTarget, TargetError> {
        let p = || path.display().to_string();
        check_supported(&binary).map_err(|e| match e {
            Unsupported::Arch(arch) => TargetError::UnsupportedArch { path: p(), arch },
            Unsupported::Go(version) => TargetError::UnsupportedGo { path: p(), version },
        })?;
        let gopark = binary
            .function(GOPARK)
            .ok_or_else(|| TargetError::MissingFunction {
                path: p(),
                function: GOPARK,
            })?;
        let to_file = |vaddr: u64| {
            binary
                .file_offset(vaddr)
                .ok_or_else(|| TargetError::NoFileOffset {
                    path: p(),
                    function: GOPARK,
                    vaddr,
                })
        };
        let gopark_entry = to_file(gopark.entry)?;
        let rets = binary
            .ret_instructions(&gopark)
            .map_err(|source| TargetError::RuntimeData {
                path: p(),
                what: "gopark code",
                source,
            })?;
        if rets.is_empty() {
            return Err(TargetError::NoReturn {
                path: p(),
                function: GOPARK,
            });
        }
        let gopark_returns = rets
            .into_iter()
            .map(to_file)
            .collect::<Result<Vec<_>, _>>()?;
        let offsets = binary
            .runtime_offsets()
            .map_err(|source| TargetError::RuntimeData {
                path: p(),
                what: "struct offsets",
                source,
            })?;
        let wait_reasons = binary
            .wait_reasons()
            .map_err(|source| TargetError::RuntimeData {
                path: p(),
                what: "waitReason names",
                source,
            })?;
        let sched_latency = (|| {
            let (sched, _) = binary.sched_variable().ok()?;
            let layout = TimeHistogramLayout::of(offsets.time_histogram_underflow?)?;
            Some(SchedLatencyHistogram {
                vaddr: sched + u64::from(offsets.schedt_time_to_run?),
                layout,
                goidgen_vaddr: offsets.schedt_goidgen.map(|o| sched + u64::from(o)),
            })
        })();
        let (allg, allg_error) = match binary.allg_variables() {
            Ok(v) => (Some(v), None),
            Err(e) => (None, Some(e.to_string())),
        };
        // Only the GC metrics need these: an error leaves them numbered, not the binary out.
        let stw_reasons = binary.stw_reasons().unwrap_or(ReasonNames {
            names: Vec::new(),
            source: gobinary::Source::Table,
        });
        Ok(GoTarget {
            stw_reasons,
            allg,
            allg_error,
            sched_latency,
            gopark_vaddr: gopark.entry,
            binary,
            gopark_entry,
            gopark_returns,
            offsets,
            wait_reasons,
        })
    }

    /// The Go release the binary was built with.
    pub fn go_version(&self) -> GoVersion {
        self.binary.build_info().go_version
    }

    /// The runtime's name of a raw `waitReason`, as `runtime.Stack` prints it.
    pub fn wait_reason_name(&self, raw: u8) -> WaitReasonName {
        WaitReasonName::of(&self.wait_reasons, raw, "waitReason")
    }

    /// The runtime's name of a raw `stwReason`.
    pub fn stw_reason_name(&self, raw: u8) -> WaitReasonName {
        WaitReasonName::of(&self.stw_reasons, raw, "stwReason")
    }
}

/// A reason as a label value: the runtime's own string, or `waitReason(N)` (`stwReason(N)`)
/// for a number the binary does not name (so nothing is silently merged).
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct WaitReasonName(pub Arc<str>);

impl WaitReasonName {
    pub fn of(reasons: &ReasonNames, raw: u8, kind: &str) -> WaitReasonName {
        match reasons.names.get(raw as usize) {
            Some(n) if !n.is_empty() => WaitReasonName(n.as_str().into()),
            _ => WaitReasonName(format!("{kind}({raw})").into()),
        }
    }
}

enum Unsupported {
    Arch(String),
    Go(GoVersion),
}

fn check_supported(binary: &GoBinary) -> Result<(), Unsupported> {
    match binary.arch() {
        Arch::Amd64 => {}
        Arch::Arm64 => return Err(Unsupported::Arch("arm64".into())),
        Arch::Other(machine) => return Err(Unsupported::Arch(format!("ELF machine {machine}"))),
    }
    let v = binary.build_info().go_version;
    if (v.major, v.minor) < MIN_GO || (v.major, v.minor) > MAX_GO {
        return Err(Unsupported::Go(v));
    }
    Ok(())
}
