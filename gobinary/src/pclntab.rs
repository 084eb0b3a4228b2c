//! The Go 1.18+ pclntab (magic `0xfffffff0`, and `0xfffffff1` since Go 1.20): the function
//! table, names and pc-value tables that survive stripping. Decoded as `debug/gosym`
//! (pclntab.go: `parsePclnTab`, `findFunc`, `pcvalue`, `go12PCToFile`) and the runtime
//! (runtime/symtab.go: `pcHeader`, `findfunc`, `pcvalue`, `funcline1`) do, with every
//! read bounds-checked so a corrupt table yields None rather than a panic.

use std::{ops::Range, path::PathBuf, sync::Arc};

use crate::Error;

/// `abi.Go118PCLnTabMagic`: Go 1.18 and 1.19.
const MAGIC_GO118: u32 = 0xffff_fff0;
/// `abi.Go120PCLnTabMagic`: Go 1.20 and later.
const MAGIC_GO120: u32 = 0xffff_fff1;

/// A function of the pclntab.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct Func {
    /// The Go symbol name, like `runtime.gopark` or `main.(*server).handle`.
    pub name: String,
    /// The link-time virtual address of its first instruction.
    pub entry: u64,
    /// The link-time virtual address just past its code (the next function's entry,
    /// so it includes the INT3 padding).
    pub end: u64,
}

impl Func {
    /// Whether `pc` lies in `[entry, end)`.
    pub fn contains(&self, pc: u64) -> bool {
        (self.entry..self.end).contains(&pc)
    }
}

/// A decoded pclntab header with its tables, sharing the bytes of the file it is in.
#[derive(Debug, Clone)]
pub struct Pclntab {
    data: Arc<Vec<u8>>,
    /// Where the table lies in `data`; checked in-bounds at construction.
    range: Range<usize>,
    text_start: u64,
    /// The header's `textStart` word: 0 since Go 1.26, and unrelocated in a PIE.
    header_text_start: u64,
    little_endian: bool,
    quantum: u64,
    nfunc: usize,
    /// Offsets of the sub-tables from the start of the table, checked `<= range.len()`.
    funcnametab: usize,
    cutab: usize,
    filetab: usize,
    pctab: usize,
    /// `pclnOffset`: the function table, and the base of `_func` records' offsets.
    functab: usize,
    /// Where `go:func.*` (`moduledata.gofunc`, the base of funcdata offsets) lies in
    /// `data`, once known: it holds the inline trees.
    gofunc: Option<usize>,
}

/// One logical frame at a PC: a function that may have been inlined into its caller.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SourceFrame {
    /// The function, as the runtime names it.
    pub function: String,
    /// The source file.
    pub file: String,
    /// The line in `file`.
    pub line: u32,
}

/// `abi.PCDATA_InlTreeIndex` and `abi.FUNCDATA_InlTree` (internal/abi/symtab.go).
const PCDATA_INL_TREE_INDEX: usize = 2;
const FUNCDATA_INL_TREE: usize = 3;
/// `runtime.inlinedCall` (runtime/symtabinl.go): funcID, 3 pad bytes, nameOff, parentPc,
/// startLine.
const INLINED_CALL_SIZE: usize = 16;
/// Inlining depth followed at most: a bound against corrupt trees that loop.
const MAX_INLINE_DEPTH: usize = 64;

/// Byte offsets of `runtime._func` fields (runtime/runtime2.go), the same in Go 1.18
/// through 1.27.
mod func_field {
    pub const NAME_OFF: usize = 4;
    pub const PCFILE: usize = 20;
    pub const PCLN: usize = 24;
    pub const NPCDATA: usize = 28;
    pub const CU_OFFSET: usize = 32;
    pub const NFUNCDATA: usize = 43;
    /// The fixed part of the record, up to and including `nfuncdata`.
    pub const SIZE: usize = 44;
}

impl Pclntab {
    /// Decodes a pclntab held in `bytes`. `text_start` is the address of `runtime.text`;
    /// when None the header's `textStart` is used, which Go 1.26+ leaves 0.
    pub fn parse(bytes: Vec<u8>, text_start: Option<u64>) -> Result<Pclntab, Error> {
        let len = bytes.len();
        Pclntab::from_shared(Arc::new(bytes), 0..len, text_start).map_err(|reason| Error::Pclntab {
            path: PathBuf::from("<memory>"),
            reason,
        })
    }

    /// Decodes the pclntab at `range` of `data`.
    pub(crate) fn from_shared(
        data: Arc<Vec<u8>>,
        range: Range<usize>,
        text_start: Option<u64>,
    ) -> Result<Pclntab, String> {
        let tab = data
            .get(range.clone())
            .ok_or("table lies outside the file")?;
        let header = Header::parse(tab)?;
        let text_start = match text_start {
            Some(t) => t,
            None if header.text_start != 0 => header.text_start,
            None => return Err("the header holds no text start and none was found".into()),
        };
        let offset = |word: usize| -> Result<usize, String> {
            let off = header.words[word];
            usize::try_from(off)
                .ok()
                .filter(|&o| o <= tab.len())
                .ok_or_else(|| format!("header word {word} ({off:#x}) points outside the table"))
        };
        let nfunc = usize::try_from(header.words[0])
            .map_err(|_| "function count does not fit in memory".to_string())?;
        let functab = offset(7)?;
        // nfunc (entryOff, funcOff) pairs and the final end PC (runtime/symtab.go functab).
        let functab_len = nfunc
            .checked_mul(8)
            .and_then(|n| n.checked_add(4))
            .ok_or("function count overflows")?;
        if functab
            .checked_add(functab_len)
            .is_none_or(|e| e > tab.len())
        {
            return Err(format!(
                "function table of {nfunc} entries does not fit in the table"
            ));
        }
        Ok(Pclntab {
            text_start,
            header_text_start: header.text_start,
            little_endian: header.little_endian,
            quantum: u64::from(header.quantum),
            nfunc,
            funcnametab: offset(3)?,
            cutab: offset(4)?,
            filetab: offset(5)?,
            pctab: offset(6)?,
            functab,
            gofunc: None,
            data,
            range,
        })
    }

    /// Records where `go:func.*` lies in the file, enabling [`Pclntab::frames_at`] to expand
    /// inlined calls.
    pub(crate) fn set_gofunc(&mut self, file_offset: usize) {
        self.gofunc = Some(file_offset);
    }

    /// The number of functions.
    pub fn len(&self) -> usize {
        self.nfunc
    }

    /// Whether the table has no functions.
    pub fn is_empty(&self) -> bool {
        self.nfunc == 0
    }

    /// The address the functions' entry offsets are relative to (`runtime.text`).
    pub fn text_start(&self) -> u64 {
        self.text_start
    }

    /// The header's `textStart` (0 since Go 1.26).
    pub(crate) fn header_text_start(&self) -> u64 {
        self.header_text_start
    }

    /// The offsets from the text start of the first function's entry and of the end of
    /// the last function.
    pub(crate) fn entry_offsets(&self) -> Option<(u64, u64)> {
        let first = self.pc(0)?.checked_sub(self.text_start)?;
        let last = self.pc(self.nfunc)?.checked_sub(self.text_start)?;
        Some((first, last))
    }

    /// All functions, in address order.
    pub fn functions(&self) -> impl Iterator<Item = Func> + '_ {
        (0..self.nfunc).filter_map(|i| self.func(i))
    }

    /// The function called `name` (the first one, should a corrupt table repeat it).
    pub fn func_by_name(&self, name: &str) -> Option<Func> {
        (0..self.nfunc)
            .find(|&i| self.name_bytes(i) == Some(name.as_bytes()))
            .and_then(|i| self.func(i))
    }

    /// The function whose code contains `pc`.
    pub fn func_at(&self, pc: u64) -> Option<Func> {
        self.func(self.index_at(pc)?)
    }

    /// The source file and line of the instruction at `pc`. For a call site pass the
    /// return address minus one: the return address may belong to the next line.
    pub fn line_at(&self, pc: u64) -> Option<(String, u32)> {
        let i = self.index_at(pc)?;
        self.line_in(self.record(i)?, self.pc(i)?, pc)
    }

    /// The logical frames at `pc`, innermost first: the functions inlined at `pc`, then the
    /// function that holds the code, each with its file and line, as the runtime's own
    /// tracebacks expand them (runtime/symtabinl.go `inlineUnwinder`). Without the inline
    /// tree (its `go:func.*` base not found) this is the physical function alone. For a
    /// call site pass the return address minus one.
    pub fn frames_at(&self, pc: u64) -> Vec<SourceFrame> {
        let mut frames = Vec::new();
        let Some(i) = self.index_at(pc) else {
            return frames;
        };
        let (Some(record), Some(entry)) = (self.record(i), self.pc(i)) else {
            return frames;
        };
        let tree = self.funcdata(record, FUNCDATA_INL_TREE);
        let mut at = pc;
        for _ in 0..MAX_INLINE_DEPTH {
            let Some((file, line)) = self.line_in(record, entry, at) else {
                break;
            };
            let call = tree.and_then(|tree| {
                let index = self.pcdata(record, PCDATA_INL_TREE_INDEX, entry, at)?;
                self.inlined_call(tree, usize::try_from(index).ok()?)
            });
            match call {
                Some((name_off, parent_pc)) => {
                    let name = self.cstr(self.funcnametab, name_off).unwrap_or_default();
                    frames.push(SourceFrame {
                        function: String::from_utf8_lossy(name).into_owned(),
                        file,
                        line,
                    });
                    match entry.checked_add_signed(i64::from(parent_pc)) {
                        Some(parent) => at = parent,
                        None => break,
                    }
                }
                None => {
                    let name = self.name_bytes(i).unwrap_or_default();
                    frames.push(SourceFrame {
                        function: String::from_utf8_lossy(name).into_owned(),
                        file,
                        line,
                    });
                    break;
                }
            }
        }
        frames
    }

    /// File and line at `pc` of the function whose record is at `record`.
    fn line_in(&self, record: usize, entry: u64, pc: u64) -> Option<(String, u32)> {
        let line = self.pcvalue(self.u32(record + func_field::PCLN)?, entry, pc)?;
        let file_index = self.pcvalue(self.u32(record + func_field::PCFILE)?, entry, pc)?;
        // Since Go 1.16 the file value indexes the compilation unit's slice of the cutab,
        // which holds offsets into the filetab (debug/gosym go12PCToFile).
        let cu = self.u32(record + func_field::CU_OFFSET)?;
        let slot = u64::from(cu).checked_add(u64::try_from(file_index).ok()?)?;
        let at = usize::try_from(slot.checked_mul(4)?).ok()?;
        let file_off = self.u32(self.cutab.checked_add(at)?)?;
        if file_off == u32::MAX {
            return None;
        }
        let file = self.cstr(self.filetab, file_off)?;
        Some((
            String::from_utf8_lossy(file).into_owned(),
            u32::try_from(line).ok()?,
        ))
    }

    /// The value at `pc` of pc-data table `table` of a function (runtime/symtab.go
    /// `pcdatavalue1`); None for a negative value (-1: not inlined here).
    fn pcdata(&self, record: usize, table: usize, entry: u64, pc: u64) -> Option<u32> {
        let npcdata = usize::try_from(self.u32(record + func_field::NPCDATA)?).ok()?;
        if table >= npcdata {
            return None;
        }
        let off = self.u32(
            record
                .checked_add(func_field::SIZE)?
                .checked_add(table * 4)?,
        )?;
        u32::try_from(self.pcvalue(off, entry, pc)?).ok()
    }

    /// Where funcdata `index` of a function lies in the file (runtime/symtab.go `funcdata`:
    /// an offset from `go:func.*`, all ones for none).
    fn funcdata(&self, record: usize, index: usize) -> Option<usize> {
        let gofunc = self.gofunc?;
        let nfuncdata = usize::from(*self.tab().get(record + func_field::NFUNCDATA)?);
        if index >= nfuncdata {
            return None;
        }
        let npcdata = usize::try_from(self.u32(record + func_field::NPCDATA)?).ok()?;
        let slot = npcdata.checked_add(index)?.checked_mul(4)?;
        let off = self.u32(record.checked_add(func_field::SIZE)?.checked_add(slot)?)?;
        if off == u32::MAX {
            return None;
        }
        gofunc.checked_add(usize::try_from(off).ok()?)
    }

    /// (nameOff, parentPc) of entry `index` of the inline tree at file offset `tree`.
    fn inlined_call(&self, tree: usize, index: usize) -> Option<(u32, i32)> {
        let at = tree.checked_add(index.checked_mul(INLINED_CALL_SIZE)?)?;
        let b = self.data.get(at..at.checked_add(INLINED_CALL_SIZE)?)?;
        let word = |o: usize| -> [u8; 4] { [b[o], b[o + 1], b[o + 2], b[o + 3]] };
        let (name_off, parent_pc) = if self.little_endian {
            (u32::from_le_bytes(word(4)), i32::from_le_bytes(word(8)))
        } else {
            (u32::from_be_bytes(word(4)), i32::from_be_bytes(word(8)))
        };
        Some((name_off, parent_pc))
    }

    /// The bytes of the table.
    fn tab(&self) -> &[u8] {
        // The range was checked at construction; an empty slice keeps this total anyway.
        self.data.get(self.range.clone()).unwrap_or_default()
    }

    fn u32(&self, off: usize) -> Option<u32> {
        let b: [u8; 4] = self.tab().get(off..off.checked_add(4)?)?.try_into().ok()?;
        Some(if self.little_endian {
            u32::from_le_bytes(b)
        } else {
            u32::from_be_bytes(b)
        })
    }

    /// The NUL-terminated string at `off` of the sub-table starting at `table`.
    fn cstr(&self, table: usize, off: u32) -> Option<&[u8]> {
        let start = table.checked_add(usize::try_from(off).ok()?)?;
        let rest = self.tab().get(start..)?;
        let len = rest.iter().position(|&b| b == 0)?;
        Some(&rest[..len])
    }

    /// The entry PC of function `i`; `i == nfunc` gives the end of the last function.
    fn pc(&self, i: usize) -> Option<u64> {
        let off = self.u32(self.functab.checked_add(i.checked_mul(8)?)?)?;
        self.text_start.checked_add(u64::from(off))
    }

    /// The offset of function `i`'s `_func` record in the table.
    fn record(&self, i: usize) -> Option<usize> {
        if i >= self.nfunc {
            return None;
        }
        let func_off = self.u32(
            self.functab
                .checked_add(i.checked_mul(8)?.checked_add(4)?)?,
        )?;
        let record = self.functab.checked_add(usize::try_from(func_off).ok()?)?;
        (record.checked_add(func_field::SIZE)? <= self.tab().len()).then_some(record)
    }

    fn name_bytes(&self, i: usize) -> Option<&[u8]> {
        let record = self.record(i)?;
        self.cstr(self.funcnametab, self.u32(record + func_field::NAME_OFF)?)
    }

    fn func(&self, i: usize) -> Option<Func> {
        Some(Func {
            name: String::from_utf8_lossy(self.name_bytes(i)?).into_owned(),
            entry: self.pc(i)?,
            end: self.pc(i + 1)?,
        })
    }

    /// The index of the function containing `pc`, by binary search of the sorted
    /// function table (runtime/symtab.go `findfunc` uses a bucket index for speed; the
    /// answer is the same).
    fn index_at(&self, pc: u64) -> Option<usize> {
        if pc < self.pc(0)? || pc >= self.pc(self.nfunc)? {
            return None;
        }
        // The last function whose entry is <= pc; entries that cannot be read sort last.
        let (mut lo, mut hi) = (0, self.nfunc);
        while hi - lo > 1 {
            let mid = lo + (hi - lo) / 2;
            if self.pc(mid).unwrap_or(u64::MAX) <= pc {
                lo = mid;
            } else {
                hi = mid;
            }
        }
        Some(lo)
    }

    /// The value a pc-value table at `off` of the pctab gives `target`, in a function
    /// starting at `entry` (debug/gosym `pcvalue`; runtime/symtab.go `pcvalue`).
    fn pcvalue(&self, off: u32, entry: u64, target: u64) -> Option<i32> {
        // Offset 0 means "no table" (runtime/symtab.go pcvalue).
        if off == 0 {
            return None;
        }
        let table = self.tab().get(self.pctab..)?;
        decode_pcvalue(table, off, entry, target, self.quantum)
    }
}

/// Walks the pc-value table at `off` of `pctab` (a sequence of (value delta, pc delta)
/// varint pairs, the value delta zig-zag encoded) until the range containing `target`.
pub(crate) fn decode_pcvalue(
    pctab: &[u8],
    off: u32,
    entry: u64,
    target: u64,
    quantum: u64,
) -> Option<i32> {
    let mut p = pctab.get(usize::try_from(off).ok()?..)?;
    let mut value: i32 = -1;
    let mut pc = entry;
    loop {
        let first = pc == entry;
        let uvdelta = read_varint(&mut p)?;
        // A zero value delta ends the table, except the first (debug/gosym `step`).
        if uvdelta == 0 && !first {
            return None;
        }
        let vdelta = if uvdelta & 1 != 0 {
            !(uvdelta >> 1)
        } else {
            uvdelta >> 1
        };
        let pcdelta = read_varint(&mut p)?;
        pc = pc.checked_add(u64::from(pcdelta).checked_mul(quantum)?)?;
        value = value.wrapping_add(vdelta.cast_signed());
        if target < pc {
            return Some(value);
        }
    }
}

/// Reads a little-endian base-128 varint of at most 32 bits (runtime/symtab.go
/// `readvarint`), advancing `p`.
pub(crate) fn read_varint(p: &mut &[u8]) -> Option<u32> {
    let mut value = 0u32;
    for (i, &b) in p.iter().enumerate().take(5) {
        value |= u32::from(b & 0x7f).checked_shl(7 * i as u32)?;
        if b & 0x80 == 0 {
            *p = &p[i + 1..];
            return Some(value);
        }
    }
    None
}

/// The fixed header (runtime/symtab.go `pcHeader`).
struct Header {
    little_endian: bool,
    quantum: u8,
    /// nfunc, nfiles, textStart, funcnameOffset, cuOffset, filetabOffset, pctabOffset,
    /// pclnOffset.
    words: [u64; 8],
    text_start: u64,
}

impl Header {
    fn parse(tab: &[u8]) -> Result<Header, String> {
        let fixed: [u8; 8] = tab
            .get(..8)
            .and_then(|b| b.try_into().ok())
            .ok_or("shorter than its header")?;
        let magic_le = u32::from_le_bytes([fixed[0], fixed[1], fixed[2], fixed[3]]);
        let magic_be = u32::from_be_bytes([fixed[0], fixed[1], fixed[2], fixed[3]]);
        let little_endian = match (magic_le, magic_be) {
            (MAGIC_GO118 | MAGIC_GO120, _) => true,
            (_, MAGIC_GO118 | MAGIC_GO120) => false,
            _ => {
                return Err(format!(
                    "unsupported magic {magic_le:#x}: only the Go 1.18+ format is read"
                ));
            }
        };
        let (pad1, pad2, quantum, ptr_size) = (fixed[4], fixed[5], fixed[6], fixed[7]);
        if pad1 != 0 || pad2 != 0 || !matches!(quantum, 1 | 2 | 4) {
            return Err("malformed header".into());
        }
        let ptr_size = usize::from(ptr_size);
        if ptr_size != 4 && ptr_size != 8 {
            return Err(format!("pointer size {ptr_size} is neither 4 nor 8"));
        }
        let mut words = [0u64; 8];
        for (i, w) in words.iter_mut().enumerate() {
            let start = 8 + i * ptr_size;
            let b = tab
                .get(start..start + ptr_size)
                .ok_or("shorter than its header")?;
            *w = match (ptr_size, little_endian) {
                (4, true) => u64::from(u32::from_le_bytes(b.try_into().unwrap_or_default())),
                (4, false) => u64::from(u32::from_be_bytes(b.try_into().unwrap_or_default())),
                (_, true) => u64::from_le_bytes(b.try_into().unwrap_or_default()),
                (_, false) => u64::from_be_bytes(b.try_into().unwrap_or_default()),
            };
        }
        Ok(Header {
            little_endian,
            quantum,
            text_start: words[2],
            words,
        })
    }
}

/// Whether `tab` starts like a Go 1.18+ pclntab header; used to scan for the table.
pub(crate) fn looks_like_header(tab: &[u8]) -> bool {
    Header::parse(tab).is_ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn uvarint(mut v: u32, out: &mut Vec<u8>) {
        while v >= 0x80 {
            out.push((v as u8) | 0x80);
            v >>= 7;
        }
        out.push(v as u8);
    }

    /// Encodes (value, end pc offset) steps as the linker does (cmd/internal/obj
    /// `funcpctab`): zig-zag value deltas, pc deltas divided by the quantum.
    fn pcvalue_table(steps: &[(i32, u32)], quantum: u32) -> Vec<u8> {
        let mut out = Vec::new();
        let (mut value, mut pc) = (-1i32, 0u32);
        for &(v, end) in steps {
            let delta = v - value;
            let zz = if delta < 0 {
                ((-delta - 1) as u32) << 1 | 1
            } else {
                (delta as u32) << 1
            };
            uvarint(zz, &mut out);
            uvarint((end - pc) / quantum, &mut out);
            value = v;
            pc = end;
        }
        out.push(0);
        out
    }

    #[test]
    fn varints() {
        let mut p: &[u8] = &[0x96, 0x01, 0x05];
        assert_eq!(read_varint(&mut p), Some(150));
        assert_eq!(read_varint(&mut p), Some(5));
        assert_eq!(read_varint(&mut p), None);
        let mut p: &[u8] = &[0xff, 0xff, 0xff, 0xff, 0x0f];
        assert_eq!(read_varint(&mut p), Some(u32::MAX));
        let mut p: &[u8] = &[0xff, 0xff, 0xff, 0xff, 0xff, 0x01];
        assert_eq!(read_varint(&mut p), None, "longer than 32 bits");
        let mut p: &[u8] = &[0x80];
        assert_eq!(read_varint(&mut p), None, "truncated");
    }

    #[test]
    fn pcvalues() {
        // Line 10 for [0, 5), 12 for [5, 9), 11 for [9, 20).
        let mut pctab = vec![0xee]; // offset 0 means "no table"
        pctab.extend(pcvalue_table(&[(10, 5), (12, 9), (11, 20)], 1));
        let at = |pc: u64| decode_pcvalue(&pctab, 1, 0x1000, 0x1000 + pc, 1);
        assert_eq!(at(0), Some(10));
        assert_eq!(at(4), Some(10));
        assert_eq!(at(5), Some(12));
        assert_eq!(at(8), Some(12));
        assert_eq!(at(9), Some(11));
        assert_eq!(at(19), Some(11));
        assert_eq!(at(20), None, "past the end");
        // A quantum of 4 (arm64) scales pc deltas.
        let t = pcvalue_table(&[(3, 8), (-2, 16)], 4);
        assert_eq!(decode_pcvalue(&t, 0, 0, 7, 4), Some(3));
        assert_eq!(decode_pcvalue(&t, 0, 0, 8, 4), Some(-2));
        // Truncated and out-of-range tables.
        assert_eq!(decode_pcvalue(&t[..1], 0, 0, 7, 4), None);
        assert_eq!(decode_pcvalue(&t, 1000, 0, 7, 4), None);
        assert_eq!(decode_pcvalue(&[], 0, 0, 0, 1), None);
        // Huge pc deltas must not overflow.
        let huge = [
            0x02, 0xff, 0xff, 0xff, 0xff, 0x0f, 0x02, 0xff, 0xff, 0xff, 0xff, 0x0f,
        ];
        assert_eq!(decode_pcvalue(&huge, 0, u64::MAX - 10, u64::MAX, 4), None);
    }

    /// Builds a small table: two functions in one compilation unit with two files.
    fn sample(text_start_in_header: u64) -> Vec<u8> {
        let funcnametab = b"main.a\0main.b\0".to_vec();
        let filetab = b"/src/a.go\0/src/b.go\0".to_vec();
        let cutab: Vec<u8> = [0u32, 10].iter().flat_map(|v| v.to_le_bytes()).collect();
        let mut pctab = vec![0u8];
        let line_a = pctab.len() as u32;
        pctab.extend(pcvalue_table(&[(7, 0x10), (8, 0x20)], 1));
        let file_a = pctab.len() as u32;
        pctab.extend(pcvalue_table(&[(0, 0x20)], 1));
        let line_b = pctab.len() as u32;
        pctab.extend(pcvalue_table(&[(42, 0x10)], 1));
        let file_b = pctab.len() as u32;
        pctab.extend(pcvalue_table(&[(1, 0x10)], 1));

        let header_len = 8 + 8 * 8;
        let funcname_off = header_len;
        let cu_off = funcname_off + funcnametab.len();
        let filetab_off = cu_off + cutab.len();
        let pctab_off = filetab_off + filetab.len();
        let functab_off = pctab_off + pctab.len();
        let mut t = Vec::new();
        t.extend(MAGIC_GO120.to_le_bytes());
        t.extend([0, 0, 1, 8]);
        for w in [
            2,
            2,
            text_start_in_header,
            funcname_off as u64,
            cu_off as u64,
            filetab_off as u64,
            pctab_off as u64,
            functab_off as u64,
        ] {
            t.extend(w.to_le_bytes());
        }
        t.extend(funcnametab);
        t.extend(cutab);
        t.extend(filetab);
        t.extend(pctab);
        // functab: (entryOff, funcOff) x2, end; the records follow.
        let records_off = 5 * 4;
        let record = |entry: u32, name: u32, file: u32, line: u32| {
            let mut r = vec![0u8; func_field::SIZE];
            r[0..4].copy_from_slice(&entry.to_le_bytes());
            r[4..8].copy_from_slice(&name.to_le_bytes());
            r[20..24].copy_from_slice(&file.to_le_bytes());
            r[24..28].copy_from_slice(&line.to_le_bytes());
            r
        };
        for w in [
            0u32,
            records_off,
            0x20,
            records_off + func_field::SIZE as u32,
            0x30,
        ] {
            t.extend(w.to_le_bytes());
        }
        t.extend(record(0, 0, file_a, line_a));
        t.extend(record(0x20, 7, file_b, line_b));
        t
    }

    #[test]
    fn hand_made_table() {
        let tab = Pclntab::parse(sample(0x40_1000), None).unwrap();
        assert_eq!(tab.len(), 2);
        assert_eq!(tab.text_start(), 0x40_1000);
        let names: Vec<String> = tab.functions().map(|f| f.name).collect();
        assert_eq!(names, ["main.a", "main.b"]);
        let b = tab.func_by_name("main.b").unwrap();
        assert_eq!((b.entry, b.end), (0x40_1020, 0x40_1030));
        assert_eq!(tab.func_at(0x40_101f).unwrap().name, "main.a");
        assert_eq!(tab.func_at(0x40_1020).unwrap().name, "main.b");
        assert_eq!(tab.func_at(0x40_1030), None);
        assert_eq!(tab.func_at(0x40_0fff), None);
        assert_eq!(tab.func_by_name("main.c"), None);
        assert_eq!(tab.line_at(0x40_1000), Some(("/src/a.go".into(), 7)));
        assert_eq!(tab.line_at(0x40_1010), Some(("/src/a.go".into(), 8)));
        assert_eq!(tab.line_at(0x40_1025), Some(("/src/b.go".into(), 42)));
        assert_eq!(tab.line_at(0x40_1030), None);
    }

    #[test]
    fn text_start_argument_wins_and_is_needed_when_header_has_none() {
        let tab = Pclntab::parse(sample(0), Some(0x50_0000)).unwrap();
        assert_eq!(tab.func_by_name("main.b").unwrap().entry, 0x50_0020);
        assert!(Pclntab::parse(sample(0), None).is_err());
    }

    #[test]
    fn corrupt_tables_do_not_panic() {
        let good = sample(0x1000);
        for len in 0..good.len() {
            if let Ok(tab) = Pclntab::parse(good[..len].to_vec(), None) {
                let _ = tab.functions().count();
                let _ = tab.line_at(0x1025);
                let _ = tab.func_at(0x1010);
            }
        }
        for i in 0..good.len() {
            for v in [0x00, 0x7f, 0x80, 0xff] {
                let mut bad = good.clone();
                bad[i] = v;
                if let Ok(tab) = Pclntab::parse(bad, None) {
                    for pc in (0x0ff0..0x1040).step_by(3) {
                        let _ = tab.line_at(pc);
                        let _ = tab.func_at(pc);
                    }
                    let _ = tab.functions().count();
                    let _ = tab.func_by_name("main.b");
                }
            }
        }
        assert!(Pclntab::parse(vec![], None).is_err());
        assert!(Pclntab::parse(vec![0xff; 100], None).is_err());
        let mut old = good.clone();
        old[0..4].copy_from_slice(&0xffff_fffbu32.to_le_bytes());
        let err = Pclntab::parse(old, None).unwrap_err().to_string();
        assert!(err.contains("unsupported magic 0xfffffffb"), "{err}");
    }
}
