//! What gort needs to know about the Go runtime of a binary: field offsets of
//! `runtime.g` and `runtime.schedt` (from DWARF) and the names of `waitReason` values
//! (from `runtime.waitReasonStrings`), with the generated table as the fallback for
//! stripped binaries.

use std::{borrow::Cow, collections::HashMap};

use gimli::{EndianSlice, RunTimeEndian};
use object::{Object, ObjectSection};

/// Where a piece of runtime knowledge came from.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Source {
    /// Read from a symbol of the binary (`runtime.waitReasonStrings`).
    Symbol,
    /// Read from the binary's DWARF.
    Dwarf,
    /// Taken from the table generated per Go release by `cargo xtask offsetgen`.
    Table,
    /// Found by disassembling the runtime function that writes it.
    Code,
}

/// The names of the values of a runtime enum: `runtime.waitReason` (runtime/runtime2.go
/// `waitReasonStrings`) or `runtime.stwReason` (`stwReasonStrings`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ReasonNames {
    /// Names indexed by the raw `waitReason` value; index 0 (`waitReasonZero`) is "".
    pub names: Vec<String>,
    /// Where the names came from.
    pub source: Source,
}

impl ReasonNames {
    /// The name of raw value `reason`, if the release defines it.
    pub fn name(&self, reason: u8) -> Option<&str> {
        self.names.get(usize::from(reason)).map(String::as_str)
    }

    /// The raw value whose name is `name`, like 14 for "chan receive" in Go 1.22.
    pub fn value_of(&self, name: &str) -> Option<u8> {
        self.names
            .iter()
            .position(|n| n == name)
            .and_then(|i| u8::try_from(i).ok())
    }
}

/// Byte offsets of the runtime struct fields gort's probes read.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct RuntimeOffsets {
    /// `runtime.g.goid` (uint64): the goroutine id.
    pub g_goid: u32,
    /// `runtime.g.gopc` (uintptr): pc of the `go` statement that created the goroutine.
    pub g_gopc: u32,
    /// `runtime.g.startpc` (uintptr): pc of the goroutine's function.
    pub g_startpc: u32,
    /// `runtime.g.atomicstatus` (atomic.Uint32): `_Grunning`, `_Gwaiting`, ...
    pub g_atomicstatus: u32,
    /// `runtime.g.waitreason` (uint8): why a waiting goroutine waits.
    pub g_waitreason: u32,
    /// `runtime.g.sched` (gobuf) and `runtime.gobuf.bp`: where a parked goroutine's frame
    /// pointer is saved (by `mcall`), to walk its stack from outside.
    pub g_sched: Option<u32>,
    /// `runtime.gobuf.bp`.
    pub gobuf_bp: Option<u32>,
    /// `runtime.schedt.timeToRun` (timeHistogram): the scheduling latency histogram.
    pub schedt_time_to_run: Option<u32>,
    /// `runtime.schedt.goidgen` and `.ngsys`: how `runtime.sched` is found in the code of
    /// `runtime.newproc1` when its symbol is gone.
    pub schedt_goidgen: Option<u32>,
    /// `runtime.schedt.ngsys` (atomic.Int32): the number of system goroutines.
    pub schedt_ngsys: Option<u32>,
    /// `runtime.timeHistogram.underflow`: the end of its `counts` array, so the number of
    /// buckets is this over 8 (checked against [`TimeHistogramLayout`]).
    pub time_histogram_underflow: Option<u32>,
    /// `runtime.moduledata.types` and `internal/abi.Type`'s `Str` and `TFlag`: how a type's
    /// name is found (runtime/type.go `resolveNameOff`), to name a panic's value.
    pub moduledata_types: Option<u32>,
    /// `internal/abi.Type.Str` (NameOff).
    pub type_str: Option<u32>,
    /// `internal/abi.Type.TFlag`.
    pub type_tflag: Option<u32>,
    /// `net/http.Request.Method` (string).
    pub request_method: Option<u32>,
    /// `net/http.Request.Header` (a map).
    pub request_header: Option<u32>,
    /// `net/http.Request.Pattern` (Go 1.23+): the `ServeMux` route.
    pub request_pattern: Option<u32>,
    /// `net/http.response.status`: the status code written.
    pub response_status: Option<u32>,
    /// `runtime.hmap.B` (Go ≤ 1.23 maps): log2 of the bucket count.
    pub hmap_b: Option<u32>,
    /// `runtime.hmap.buckets`.
    pub hmap_buckets: Option<u32>,
    /// `internal/runtime/maps.Map.dirPtr` (Go 1.24+ Swiss maps).
    pub swiss_dir_ptr: Option<u32>,
    /// `internal/runtime/maps.Map.dirLen`.
    pub swiss_dir_len: Option<u32>,
    /// `internal/runtime/maps.table.groups`.
    pub swiss_table_groups: Option<u32>,
    /// `internal/runtime/maps.groupsReference.data`.
    pub swiss_groups_data: Option<u32>,
    /// `internal/runtime/maps.groupsReference.lengthMask`.
    pub swiss_groups_mask: Option<u32>,
    /// `runtime.moduledata.gofunc` (uintptr): the base of funcdata offsets (`go:func.*`),
    /// where the inline trees are.
    pub moduledata_gofunc: u32,
    /// Where the offsets came from.
    pub source: Source,
}

impl RuntimeOffsets {
    /// The same offsets, attributed to `source`; for comparing offsets of different origin.
    pub fn with_source(self, source: Source) -> RuntimeOffsets {
        RuntimeOffsets { source, ..self }
    }
}

/// The struct members gort needs, as (struct, member).
const MEMBERS: &[(&str, &str)] = &[
    ("runtime.g", "goid"),
    ("runtime.g", "gopc"),
    ("runtime.g", "startpc"),
    ("runtime.g", "atomicstatus"),
    ("runtime.g", "waitreason"),
    ("runtime.g", "sched"),
    ("runtime.gobuf", "bp"),
    ("runtime.schedt", "timeToRun"),
    ("runtime.schedt", "goidgen"),
    ("runtime.schedt", "ngsys"),
    ("runtime.moduledata", "gofunc"),
    ("runtime.moduledata", "types"),
    ("internal/abi.Type", "Str"),
    ("internal/abi.Type", "TFlag"),
    ("runtime.timeHistogram", "underflow"),
    ("internal/runtime/maps.Map", "dirPtr"),
    ("internal/runtime/maps.Map", "dirLen"),
    ("internal/runtime/maps.groupsReference", "data"),
    ("internal/runtime/maps.groupsReference", "lengthMask"),
    ("internal/runtime/maps.table", "groups"),
    ("net/http.Request", "Method"),
    ("net/http.Request", "Header"),
    ("net/http.Request", "Pattern"),
    ("net/http.response", "status"),
    ("runtime.hmap", "B"),
    ("runtime.hmap", "buckets"),
];

/// The largest decompressed DWARF section accepted (the biggest Go binaries have a few
/// hundred megabytes of DWARF).
const MAX_DWARF_SECTION: u64 = 4 << 30;

/// Why offsets could not be read from DWARF.
pub(crate) enum DwarfError {
    Load(object::Error),
    TooLarge { section: &'static str, size: u64 },
    Parse(gimli::Error),
    Missing(String),
}

/// Reads the offsets from the DWARF of the ELF file `data`.
pub(crate) fn offsets_from_dwarf(data: &[u8]) -> Result<RuntimeOffsets, DwarfError> {
    let file = object::File::parse(data).map_err(DwarfError::Load)?;
    let endian = if file.is_little_endian() {
        RunTimeEndian::Little
    } else {
        RunTimeEndian::Big
    };
    // Go compresses its DWARF (SHF_COMPRESSED since Go 1.11's -compressdwarf, .zdebug_*
    // before): `uncompressed_data` undoes either.
    let sections = gimli::DwarfSections::load(|id| -> Result<Cow<'_, [u8]>, DwarfError> {
        match file
            .section_by_name(id.name())
            .or_else(|| file.section_by_name(&id.name().replacen(".debug_", ".zdebug_", 1)))
        {
            Some(section) => {
                // A corrupt compression header could ask for any size: refuse the absurd
                // before allocating.
                let size = section
                    .compressed_data()
                    .map_err(DwarfError::Load)?
                    .uncompressed_size;
                if size > MAX_DWARF_SECTION {
                    return Err(DwarfError::TooLarge {
                        section: id.name(),
                        size,
                    });
                }
                section.uncompressed_data().map_err(DwarfError::Load)
            }
            None => Ok(Cow::Borrowed(&[])),
        }
    })?;
    let dwarf = sections.borrow(|s| EndianSlice::new(s, endian));
    let found = struct_members(&dwarf).map_err(DwarfError::Parse)?;

    let get =
        |strukt: &str, member: &str| -> Option<u32> { found.get(strukt)?.get(member).copied() };
    let need = |strukt: &str, member: &str| -> Result<u32, DwarfError> {
        get(strukt, member)
            .ok_or_else(|| DwarfError::Missing(format!("DWARF member `{member}` of `{strukt}`")))
    };
    Ok(RuntimeOffsets {
        g_goid: need("runtime.g", "goid")?,
        g_gopc: need("runtime.g", "gopc")?,
        g_startpc: need("runtime.g", "startpc")?,
        g_atomicstatus: need("runtime.g", "atomicstatus")?,
        g_waitreason: need("runtime.g", "waitreason")?,
        // timeToRun exists since Go 1.19; keep it optional for forward compatibility.
        g_sched: get("runtime.g", "sched"),
        gobuf_bp: get("runtime.gobuf", "bp"),
        schedt_time_to_run: get("runtime.schedt", "timeToRun"),
        moduledata_gofunc: need("runtime.moduledata", "gofunc")?,
        request_method: get("net/http.Request", "Method"),
        request_header: get("net/http.Request", "Header"),
        request_pattern: get("net/http.Request", "Pattern"),
        response_status: get("net/http.response", "status"),
        hmap_b: get("runtime.hmap", "B"),
        hmap_buckets: get("runtime.hmap", "buckets"),
        swiss_dir_ptr: get("internal/runtime/maps.Map", "dirPtr"),
        swiss_dir_len: get("internal/runtime/maps.Map", "dirLen"),
        swiss_table_groups: get("internal/runtime/maps.table", "groups"),
        swiss_groups_data: get("internal/runtime/maps.groupsReference", "data"),
        swiss_groups_mask: get("internal/runtime/maps.groupsReference", "lengthMask"),
        moduledata_types: get("runtime.moduledata", "types"),
        type_str: get("internal/abi.Type", "Str"),
        type_tflag: get("internal/abi.Type", "TFlag"),
        time_histogram_underflow: get("runtime.timeHistogram", "underflow"),
        schedt_goidgen: get("runtime.schedt", "goidgen"),
        schedt_ngsys: get("runtime.schedt", "ngsys"),
        source: Source::Dwarf,
    })
}

/// The offsets of the members listed in [`MEMBERS`], per struct, from the first
/// definition of each struct.
fn struct_members(
    dwarf: &gimli::Dwarf<EndianSlice<'_, RunTimeEndian>>,
) -> Result<HashMap<&'static str, HashMap<&'static str, u32>>, gimli::Error> {
    let mut found: HashMap<&'static str, HashMap<&'static str, u32>> = HashMap::new();
    let structs: Vec<&'static str> = {
        let mut s: Vec<_> = MEMBERS.iter().map(|&(s, _)| s).collect();
        s.dedup();
        s
    };
    let mut units = dwarf.units();
    while let Some(header) = units.next()? {
        let unit = dwarf.unit(header)?;
        let mut entries = unit.entries();
        let mut depth: isize = 0;
        // The wanted struct being walked and its depth.
        let mut inside: Option<(&'static str, isize)> = None;
        while let Some((delta, entry)) = entries.next_dfs()? {
            depth += delta;
            if let Some((_, d)) = inside {
                if depth <= d {
                    inside = None;
                }
            }
            match (entry.tag(), inside) {
                (gimli::DW_TAG_structure_type, None) => {
                    let Some(name) = entry.attr_value(gimli::DW_AT_name)? else {
                        continue;
                    };
                    let name = dwarf.attr_string(&unit, name)?;
                    if let Some(&s) = structs.iter().find(|s| s.as_bytes() == name.slice()) {
                        if !found.contains_key(s) {
                            found.insert(s, HashMap::new());
                            inside = Some((s, depth));
                        }
                    }
                }
                (gimli::DW_TAG_member, Some((s, d))) if depth == d + 1 => {
                    let Some(name) = entry.attr_value(gimli::DW_AT_name)? else {
                        continue;
                    };
                    let name = dwarf.attr_string(&unit, name)?;
                    let wanted = MEMBERS
                        .iter()
                        .find(|&&(ws, wm)| ws == s && wm.as_bytes() == name.slice());
                    let offset = entry
                        .attr_value(gimli::DW_AT_data_member_location)?
                        .and_then(|v| v.udata_value())
                        .and_then(|v| u32::try_from(v).ok());
                    if let (Some(&(_, member)), Some(offset)) = (wanted, offset) {
                        found.entry(s).or_default().insert(member, offset);
                    }
                }
                _ => {}
            }
        }
        if inside.is_none() && structs.iter().all(|s| found.contains_key(s)) {
            break;
        }
    }
    Ok(found)
}

/// The bucket layout of `runtime.timeHistogram` (runtime/histogram.go: `timeHistMinBucketBits`,
/// `timeHistMaxBucketBits`, `timeHistSubBucketBits`), the same 9, 48 and 2 in Go 1.21 to
/// 1.27. Constants are not in DWARF; the array length is, and [`TimeHistogramLayout::of`]
/// refuses a binary whose array does not have the length these imply.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct TimeHistogramLayout {
    min_bucket_bits: u32,
    max_bucket_bits: u32,
    sub_bucket_bits: u32,
}

impl TimeHistogramLayout {
    const GO121: TimeHistogramLayout = TimeHistogramLayout {
        min_bucket_bits: 9,
        max_bucket_bits: 48,
        sub_bucket_bits: 2,
    };

    /// The layout of a binary whose `timeHistogram.underflow` is at `underflow_offset`.
    pub fn of(underflow_offset: u32) -> Option<TimeHistogramLayout> {
        let layout = Self::GO121;
        (underflow_offset as usize == layout.counts() * 8).then_some(layout)
    }

    /// Number of `counts`.
    pub fn counts(&self) -> usize {
        ((self.max_bucket_bits - self.min_bucket_bits + 1) << self.sub_bucket_bits) as usize
    }

    /// The lower bound in nanoseconds of `counts[i]`, and, for `i == counts()`, the lower
    /// bound of the overflow bucket (runtime/histogram.go `timeHistogramMetricsBuckets`).
    pub fn lower_bound_ns(&self, i: usize) -> u64 {
        let sub = 1usize << self.sub_bucket_bits;
        if i >= self.counts() {
            return 1u64 << (self.max_bucket_bits - 1);
        }
        let (bucket, j) = (i / sub, (i % sub) as u64);
        if bucket == 0 {
            // No bucket bit: just sub-bucket bits below the min bucket bit.
            return j << (self.min_bucket_bits - 1 - self.sub_bucket_bits);
        }
        let bit = self.min_bucket_bits + bucket as u32 - 1;
        (1u64 << (bit - 1)) | (j << (bit - 1 - self.sub_bucket_bits))
    }
}

#[cfg(test)]
mod histogram_tests {
    use super::*;

    #[test]
    fn time_histogram_bounds_match_the_runtime() {
        let l = TimeHistogramLayout::of(1280).expect("Go 1.21+ layout");
        assert_eq!(l.counts(), 160);
        assert_eq!(TimeHistogramLayout::of(1288), None);
        // runtime/histogram.go: 0, 64, 128, 192 ns, then 256 ns (bit 9), 320, 384, 448, 512 ...
        let first: Vec<u64> = (0..10).map(|i| l.lower_bound_ns(i)).collect();
        assert_eq!(first, [0, 64, 128, 192, 256, 320, 384, 448, 512, 640]);
        // Bounds strictly increase up to the overflow bucket at 2^47 ns.
        for i in 1..=160 {
            assert!(l.lower_bound_ns(i) > l.lower_bound_ns(i - 1), "bucket {i}");
        }
        assert_eq!(l.lower_bound_ns(160), 1 << 47);
        assert_eq!(l.lower_bound_ns(159), (1 << 46) | (3 << 44));
    }
}
