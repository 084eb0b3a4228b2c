//! gobinary must never panic: empty, random, truncated, corrupted and non-Go inputs all
//! give an `Err` (or, for harmless damage, an `Ok` whose queries still do not panic).

use std::path::Path;

use crate::common::{Variant, build, toolchain};
use gobinary::{Error, GoBinary};

/// A small deterministic generator (xorshift64*), so failures can be replayed.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_f491_4f6c_dd1d)
    }

    fn below(&mut self, n: usize) -> usize {
        (self.next() % n as u64) as usize
    }
}

/// Parses `data` and, when that works, runs every query on it.
fn exercise(data: Vec<u8>, deep: bool) {
    let Ok(bin) = GoBinary::parse(data) else {
        return;
    };
    let _ = bin.build_info();
    let _ = (bin.arch(), bin.is_pie(), bin.has_symtab(), bin.has_dwarf());
    for name in ["runtime.gopark", "main.main", "main.marker"] {
        if let Some(f) = bin.function(name) {
            let _ = bin.ret_instructions(&f);
            let _ = bin.file_offset(f.entry);
            for pc in (f.entry..f.end).step_by(7) {
                let _ = bin.pclntab().line_at(pc);
                let _ = bin.pclntab().func_at(pc);
            }
        }
        let _ = bin.symbol(name);
    }
    let _ = bin.pclntab().functions().take(200).count();
    let _ = bin.read_pointer(bin.pclntab().text_start());
    let _ = bin.wait_reasons();
    if deep {
        let _ = bin.runtime_offsets();
    }
}

fn real_binary(variant: Variant) -> Vec<u8> {
    let (version, go) = toolchain("1.22");
    std::fs::read(build(&version, &go, variant)).unwrap()
}

#[test]
fn empty_and_random_bytes_are_not_elf() {
    let err = GoBinary::parse(Vec::new()).unwrap_err();
    assert!(matches!(err, Error::NotElf { .. }), "{err}");
    assert_eq!(err.to_string(), "not a 64-bit ELF file: `<memory>`");
    let mut rng = Rng(0x9e37_79b9_7f4a_7c15);
    for len in (0..4096).step_by(37) {
        let data: Vec<u8> = (0..len).map(|_| rng.next() as u8).collect();
        assert!(GoBinary::parse(data).is_err());
    }
    // Random bytes behind a valid ELF identification.
    for _ in 0..200 {
        let mut data: Vec<u8> = (0..rng.below(8192)).map(|_| rng.next() as u8).collect();
        if data.len() >= 16 {
            data[..7].copy_from_slice(b"\x7fELF\x02\x01\x01");
        }
        exercise(data, true);
    }
}

#[test]
fn an_elf_header_alone_is_not_go() {
    let mut header = vec![0u8; 64];
    header[..7].copy_from_slice(b"\x7fELF\x02\x01\x01");
    header[16] = 2; // ET_EXEC
    header[18] = 62; // EM_X86_64
    header[20] = 1; // EV_CURRENT
    header[52] = 64; // e_ehsize
    let err = GoBinary::parse(header).unwrap_err();
    assert!(matches!(err, Error::NotGo { .. }), "{err}");
}

#[test]
fn a_c_program_is_not_go() {
    let path = Path::new("/bin/true");
    let err = GoBinary::open(path).unwrap_err();
    assert_eq!(
        err.to_string(),
        "not a Go binary: no Go build info in `/bin/true`"
    );
}

#[test]
fn a_missing_file_is_a_read_error() {
    let err = GoBinary::open(Path::new("/nonexistent/gort-test")).unwrap_err();
    assert!(matches!(err, Error::Read { .. }), "{err}");
    assert_eq!(err.to_string(), "could not read `/nonexistent/gort-test`");
}

#[test]
fn truncated_go_binaries_do_not_panic() {
    for variant in [Variant::PieStripped, Variant::Default] {
        let full = real_binary(variant);
        let mut cuts: Vec<usize> = (0..512).step_by(7).collect();
        cuts.extend((0..400).map(|i| full.len() * i / 400));
        cuts.extend((full.len().saturating_sub(8192)..full.len()).step_by(61));
        for cut in cuts {
            exercise(full[..cut].to_vec(), false);
        }
        // The same lengths with the headers kept and the rest zeroed, which gets past the
        // ELF parser into the Go parsers.
        for i in 1..120 {
            let cut = full.len() * i / 120;
            let mut hollow = full.clone();
            let tail = hollow.len().saturating_sub(16384).max(cut);
            hollow[cut..tail].fill(0);
            exercise(hollow, variant == Variant::Default && i % 10 == 0);
        }
    }
}

#[test]
fn corrupted_go_binaries_do_not_panic() {
    let mut rng = Rng(0x0123_4567_89ab_cdef);
    for variant in [Variant::PieStripped, Variant::Pie] {
        let full = real_binary(variant);
        let iterations = if variant == Variant::Pie { 40 } else { 200 };
        for i in 0..iterations {
            let mut bad = full.clone();
            // Damage a run of bytes somewhere, and a few single bytes anywhere.
            let start = rng.below(bad.len());
            let run = rng.below(256).min(bad.len() - start);
            for b in &mut bad[start..start + run] {
                *b = rng.next() as u8;
            }
            for _ in 0..16 {
                let at = rng.below(bad.len());
                bad[at] = rng.next() as u8;
            }
            exercise(bad, i % 4 == 0);
        }
    }
}

#[test]
fn corrupted_go_headers_do_not_panic() {
    // Damage aimed at the pclntab header and function table, the build info and the ELF
    // program and section headers, where every byte is an offset, address or length.
    let mut rng = Rng(0xfeed_f00d_dead_beef);
    for variant in [Variant::PieStripped, Variant::Stripped] {
        let full = real_binary(variant);
        let find = |needle: &[u8]| {
            full.windows(needle.len())
                .position(|w| w == needle)
                .expect("the needle is in the binary")
        };
        let pclntab = find(&[0xf1, 0xff, 0xff, 0xff, 0x00, 0x00, 0x01, 0x08]);
        let buildinfo = find(b"\xff Go buildinf:");
        // ELF64: e_shoff at 0x28, e_phnum at 0x38, program headers of 56 bytes at 0x40.
        let shoff =
            usize::try_from(u64::from_le_bytes(full[0x28..0x30].try_into().unwrap())).unwrap();
        let phnum = usize::from(u16::from_le_bytes([full[0x38], full[0x39]]));
        for i in 0..500 {
            let mut bad = full.clone();
            let (base, span) = match i % 5 {
                0 => (pclntab, 72),
                1 => (pclntab, 64 * 1024),
                2 => (buildinfo, 64),
                3 => (0, 0x40 + 56 * phnum),
                _ => (shoff, full.len() - shoff),
            };
            for _ in 0..1 + rng.below(4) {
                let at = (base + rng.below(span)).min(bad.len() - 1);
                bad[at] = rng.next() as u8;
            }
            exercise(bad, false);
        }
    }
}
