//! The ELF layer: what gobinary keeps of the headers (loadable segments, section table,
//! `.symtab`, relative relocations) so the Go-specific parsers can translate virtual
//! addresses to file bytes without re-parsing the file.

use std::{collections::HashMap, fmt};

use object::{
    Endianness, Object, ObjectSymbol, elf,
    read::elf::{ElfFile64, FileHeader, ProgramHeader, Rela, SectionHeader},
};

/// The instruction set a binary was built for, from the ELF header's `e_machine`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Arch {
    /// x86-64 (`EM_X86_64`), Go's `amd64`.
    Amd64,
    /// AArch64 (`EM_AARCH64`), Go's `arm64`.
    Arm64,
    /// Any other `e_machine` value.
    Other(u16),
}

impl Arch {
    fn from_machine(machine: u16) -> Arch {
        match machine {
            elf::EM_X86_64 => Arch::Amd64,
            elf::EM_AARCH64 => Arch::Arm64,
            other => Arch::Other(other),
        }
    }
}

impl fmt::Display for Arch {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Arch::Amd64 => f.write_str("amd64"),
            Arch::Arm64 => f.write_str("arm64"),
            Arch::Other(m) => write!(f, "ELF machine {m}"),
        }
    }
}

/// A symbol of `.symtab`.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct Symbol {
    /// The symbol's name, like `runtime.gopark`.
    pub name: String,
    /// Its link-time virtual address.
    pub addr: u64,
    /// Its size in bytes (0 for markers like `runtime.text`).
    pub size: u64,
}

/// A section header, as far as gobinary needs it.
#[derive(Debug, Clone)]
pub(crate) struct Section {
    pub name: String,
    pub addr: u64,
    pub size: u64,
    pub sh_type: u32,
}

/// A `PT_LOAD` program header.
#[derive(Debug, Clone, Copy)]
struct Segment {
    vaddr: u64,
    offset: u64,
    filesz: u64,
    writable: bool,
}

/// The owned summary of an ELF file's headers.
#[derive(Debug)]
pub(crate) struct Elf {
    pub arch: Arch,
    pub little_endian: bool,
    pub is_pie: bool,
    pub sections: Vec<Section>,
    segments: Vec<Segment>,
    symbols: HashMap<String, Symbol>,
    /// `(r_offset, r_addend)` of every relative relocation, sorted by offset.
    relative: Vec<(u64, u64)>,
}

impl Elf {
    /// Reads the headers of `data`; fails when it is not a 64-bit ELF file.
    pub fn parse(data: &[u8]) -> Result<Elf, object::Error> {
        let file = ElfFile64::<Endianness>::parse(data)?;
        let endian = file.endian();
        let header = file.elf_header();
        let machine = header.e_machine(endian);
        let arch = Arch::from_machine(machine);

        let segments = file
            .elf_program_headers()
            .iter()
            .filter(|ph| ph.p_type(endian) == elf::PT_LOAD)
            .map(|ph| Segment {
                vaddr: ph.p_vaddr(endian),
                offset: ph.p_offset(endian),
                filesz: ph.p_filesz(endian),
                writable: ph.p_flags(endian) & elf::PF_W != 0,
            })
            .collect();

        let table = file.elf_section_table();
        let mut sections = Vec::new();
        let mut relative = Vec::new();
        // The relocation type meaning "base + addend" on the architectures Go builds PIEs for.
        let relative_type = match arch {
            Arch::Amd64 => Some(elf::R_X86_64_RELATIVE),
            Arch::Arm64 => Some(elf::R_AARCH64_RELATIVE),
            Arch::Other(_) => None,
        };
        for sh in table.iter() {
            let name = table
                .section_name(endian, sh)
                .map(|n| String::from_utf8_lossy(n).into_owned())
                .unwrap_or_default();
            let sh_type = sh.sh_type(endian);
            // Go's internal linker names the table `.rela`, external linkers `.rela.dyn`:
            // take every SHT_RELA section rather than one name.
            if let (elf::SHT_RELA, Some(relative_type)) = (sh_type, relative_type) {
                let relas = sh
                    .data_as_array::<elf::Rela64<Endianness>, _>(endian, data)
                    .unwrap_or_default();
                relative.extend(
                    relas
                        .iter()
                        .filter(|r| r.r_type(endian, false) == relative_type)
                        // The addend is the link-time address, stored as i64 by the format.
                        .map(|r| (r.r_offset(endian), r.r_addend(endian).cast_unsigned())),
                );
            }
            sections.push(Section {
                name,
                addr: sh.sh_addr(endian),
                size: sh.sh_size(endian),
                sh_type,
            });
        }
        relative.sort_unstable();

        let mut symbols = HashMap::new();
        for sym in file.symbols() {
            let Ok(name) = sym.name() else { continue };
            if name.is_empty() {
                continue;
            }
            // Keep the first definition: Go emits each name once, and a duplicate would be
            // a local symbol of some C object in an externally linked binary.
            symbols.entry(name.to_owned()).or_insert_with(|| Symbol {
                name: name.to_owned(),
                addr: sym.address(),
                size: sym.size(),
            });
        }

        Ok(Elf {
            arch,
            little_endian: endian == Endianness::Little,
            is_pie: header.e_type(endian) == elf::ET_DYN,
            sections,
            segments,
            symbols,
            relative,
        })
    }

    /// The first section called `name`.
    pub fn section(&self, name: &str) -> Option<&Section> {
        self.sections.iter().find(|s| s.name == name)
    }

    /// Whether the file has a `.symtab` section.
    pub fn has_symtab(&self) -> bool {
        self.sections
            .iter()
            .any(|s| s.sh_type == elf::SHT_SYMTAB && s.name == ".symtab")
    }

    /// Whether the file has DWARF type information (compressed or not).
    pub fn has_dwarf(&self) -> bool {
        self.sections
            .iter()
            .any(|s| (s.name == ".debug_info" || s.name == ".zdebug_info") && s.size > 0)
    }

    /// A symbol of `.symtab`.
    pub fn symbols(&self) -> impl Iterator<Item = &Symbol> + '_ {
        self.symbols.values()
    }

    pub fn symbol(&self, name: &str) -> Option<&Symbol> {
        self.symbols.get(name)
    }

    /// The file offset of `vaddr`, when a `PT_LOAD` segment maps it from the file.
    pub fn file_offset(&self, vaddr: u64) -> Option<u64> {
        self.segments.iter().find_map(|s| {
            let delta = vaddr.checked_sub(s.vaddr)?;
            (delta < s.filesz).then(|| s.offset.checked_add(delta))?
        })
    }

    /// The file range holding `len` bytes at `vaddr`, all within one segment.
    pub fn file_range(&self, vaddr: u64, len: u64) -> Option<(usize, usize)> {
        self.segments.iter().find_map(|s| {
            let delta = vaddr.checked_sub(s.vaddr)?;
            if delta.checked_add(len)? > s.filesz {
                return None;
            }
            let start = usize::try_from(s.offset.checked_add(delta)?).ok()?;
            let end = start.checked_add(usize::try_from(len).ok()?)?;
            Some((start, end))
        })
    }

    /// The file range from `vaddr` to the end of the file data of its segment.
    pub fn file_rest(&self, vaddr: u64) -> Option<(usize, usize)> {
        self.segments.iter().find_map(|s| {
            let delta = vaddr.checked_sub(s.vaddr)?;
            if delta >= s.filesz {
                return None;
            }
            let start = usize::try_from(s.offset.checked_add(delta)?).ok()?;
            let end = usize::try_from(s.offset.checked_add(s.filesz)?).ok()?;
            Some((start, end))
        })
    }

    /// The link-time address a relative relocation stores at `vaddr`, if there is one.
    pub fn relocated(&self, vaddr: u64) -> Option<u64> {
        let i = self
            .relative
            .binary_search_by_key(&vaddr, |&(off, _)| off)
            .ok()?;
        Some(self.relative[i].1)
    }

    /// The offsets of relative relocations whose addend is `value`: the places a PIE
    /// stores a pointer to `value`.
    pub fn relocations_to(&self, value: u64) -> impl Iterator<Item = u64> + '_ {
        self.relative
            .iter()
            .filter(move |&&(_, addend)| addend == value)
            .map(|&(off, _)| off)
    }

    /// `(vaddr, file start, file end)` of the writable loaded segments, where Go keeps
    /// its build info and module data.
    pub fn writable_segments(&self) -> impl Iterator<Item = (u64, usize, usize)> + '_ {
        self.segments.iter().filter(|s| s.writable).filter_map(|s| {
            let start = usize::try_from(s.offset).ok()?;
            let end = start.checked_add(usize::try_from(s.filesz).ok()?)?;
            Some((s.vaddr, start, end))
        })
    }

    /// `(vaddr, file start, file end)` of every loaded segment.
    pub fn segments(&self) -> impl Iterator<Item = (u64, usize, usize)> + '_ {
        self.segments.iter().filter_map(|s| {
            let start = usize::try_from(s.offset).ok()?;
            let end = start.checked_add(usize::try_from(s.filesz).ok()?)?;
            Some((s.vaddr, start, end))
        })
    }
}
