//! The one error type of the crate: everything that can go wrong reading a Go binary.

use std::path::PathBuf;

use crate::{Arch, GoVersion};

/// Why a Go binary, or a part of it, could not be read.
///
/// `path` fields name the file as given to [`crate::GoBinary::open`], or `<memory>` for
/// [`crate::GoBinary::parse`].
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// The file could not be read from disk.
    #[error("could not read `{path}`")]
    Read {
        /// The file.
        path: PathBuf,
        /// What the operating system said.
        #[source]
        source: std::io::Error,
    },
    /// The bytes are not a 64-bit ELF file (or its headers are broken).
    #[error("not a 64-bit ELF file: `{path}`")]
    NotElf {
        /// The file.
        path: PathBuf,
        /// What the ELF parser said.
        #[source]
        source: object::Error,
    },
    /// The ELF file has no Go build info: it was not built by the Go toolchain.
    #[error("not a Go binary: no Go build info in `{path}`")]
    NotGo {
        /// The file.
        path: PathBuf,
    },
    /// The Go build info is present but cannot be decoded.
    #[error("malformed Go build info in `{path}`: {reason}")]
    BuildInfo {
        /// The file.
        path: PathBuf,
        /// What is wrong with it.
        reason: String,
    },
    /// No usable pclntab was found: neither by section, symbol nor header magic.
    #[error("no Go pclntab in `{path}`")]
    NoPclntab {
        /// The file.
        path: PathBuf,
    },
    /// A pclntab was found but cannot be decoded.
    #[error("malformed Go pclntab in `{path}`: {reason}")]
    Pclntab {
        /// The file, or `<memory>` for [`crate::Pclntab::parse`].
        path: PathBuf,
        /// What is wrong with it.
        reason: String,
    },
    /// Instructions of this architecture cannot be decoded.
    #[error("cannot decode {arch} instructions: only amd64 is supported")]
    UnsupportedArch {
        /// The binary's architecture.
        arch: Arch,
    },
    /// A function's code is not backed by bytes of the file.
    #[error("code of function `{name}` at {entry:#x}..{end:#x} is not in the file")]
    CodeNotInFile {
        /// The function.
        name: String,
        /// Its first instruction's address.
        entry: u64,
        /// The address just past its last byte.
        end: u64,
    },
    /// The binary's Go release has no generated table entry and the binary lacks the
    /// symbols or DWARF to read the data from.
    #[error("unsupported Go version {version}: gort supports {oldest} to {newest}")]
    UnsupportedGoVersion {
        /// The binary's Go release.
        version: GoVersion,
        /// The oldest supported minor release, like `go1.21`.
        oldest: String,
        /// The newest supported minor release, like `go1.27`.
        newest: String,
    },
    /// The DWARF sections could not be decoded.
    #[error("could not read the DWARF of `{path}`")]
    Dwarf {
        /// The file.
        path: PathBuf,
        /// What the DWARF parser said.
        #[source]
        source: gimli::Error,
    },
    /// The DWARF sections could not be loaded (for instance decompressed).
    #[error("could not load the DWARF sections of `{path}`")]
    DwarfSections {
        /// The file.
        path: PathBuf,
        /// What the ELF parser said.
        #[source]
        source: object::Error,
    },
    /// A compressed DWARF section claims an implausible uncompressed size.
    #[error("DWARF section `{section}` of `{path}` claims {size} bytes uncompressed")]
    DwarfTooLarge {
        /// The file.
        path: PathBuf,
        /// The section, like `.debug_info`.
        section: &'static str,
        /// The size its compression header claims.
        size: u64,
    },
    /// Something the caller asked for is not described by the binary.
    #[error("`{path}` has no {what}")]
    Missing {
        /// The file.
        path: PathBuf,
        /// What is missing, like "DWARF" or "symbol `runtime.waitReasonStrings`".
        what: String,
    },
    /// A `[N]string` of the runtime (`runtime.waitReasonStrings`, `runtime.stwReasonStrings`)
    /// exists but does not hold Go strings.
    #[error("malformed {symbol} in `{path}`: {reason}")]
    StringArray {
        /// The file.
        path: PathBuf,
        /// The symbol.
        symbol: &'static str,
        /// What is wrong with it.
        reason: String,
    },
}
