//! Reads the test program `testdata/waiter` built with every supported Go release in four
//! variants (default, PIE, stripped, both) and checks exact facts: what the Go toolchain
//! stamped, what `.symtab` and DWARF say, what the source says, and what the committed
//! table says.

use std::{fs, path::PathBuf};

use crate::common::{Variant, build, line_of, toolchain, waiter_dir};
use gobinary::{Arch, Func, GoBinary, GoVersion, Source, table_entry_for, table_entry_from};
use iced_x86::{Decoder, DecoderOptions, Mnemonic};

/// What each release is known to do; the numbers come from the unstripped binaries and
/// are checked against them, so a new release that moves them fails loudly here.
struct Expected {
    minor: &'static str,
    /// `runtime.g.goid`: 152, or 160 in Go 1.23 and 1.24 where `g.syscallbp` had been added
    /// and `gobuf.ret` not yet removed (runtime/runtime2.go).
    goid: u32,
    /// waitReason values of "chan receive", "select", "sleep", "IO wait",
    /// "sync.Mutex.Lock"; Go 1.26 regrouped them (runtime/runtime2.go `waitReason`).
    reasons: [u8; 5],
}

const REASONS: [&str; 5] = [
    "chan receive",
    "select",
    "sleep",
    "IO wait",
    "sync.Mutex.Lock",
];

const EXPECTED: &[Expected] = &[
    Expected {
        minor: "1.21",
        goid: 152,
        reasons: [14, 9, 19, 2, 21],
    },
    Expected {
        minor: "1.22",
        goid: 152,
        reasons: [14, 9, 19, 2, 21],
    },
    Expected {
        minor: "1.23",
        goid: 160,
        reasons: [14, 9, 19, 2, 21],
    },
    Expected {
        minor: "1.24",
        goid: 160,
        reasons: [14, 9, 19, 2, 21],
    },
    Expected {
        minor: "1.25",
        goid: 152,
        reasons: [14, 9, 20, 2, 22],
    },
    Expected {
        minor: "1.26",
        goid: 152,
        reasons: [19, 18, 14, 2, 22],
    },
    Expected {
        minor: "1.27",
        goid: 152,
        reasons: [19, 18, 14, 2, 22],
    },
];

/// A built variant and what was read from it.
struct Built {
    variant: Variant,
    path: PathBuf,
    bin: GoBinary,
}

/// The return address of the one call from `caller` to `callee_entry`.
fn call_site(bin: &GoBinary, caller: &Func, callee_entry: u64) -> u64 {
    let sites = calls(bin, caller, callee_entry);
    assert_eq!(
        sites.len(),
        1,
        "calls from {} to {callee_entry:#x}",
        caller.name
    );
    sites[0]
}

/// The return addresses of every call from `caller` to `callee_entry`.
fn calls(bin: &GoBinary, caller: &Func, callee_entry: u64) -> Vec<u64> {
    let len = usize::try_from(caller.end - caller.entry).unwrap();
    let code = bin
        .read_bytes(caller.entry, len)
        .expect("caller code is in the file");
    let mut decoder = Decoder::with_ip(64, code, caller.entry, DecoderOptions::NONE);
    decoder
        .iter()
        .filter(|i| i.mnemonic() == Mnemonic::Call && i.near_branch_target() == callee_entry)
        .map(|i| i.next_ip())
        .collect()
}

/// A copy of the file without section headers, as `sstrip`-like tools leave it: gobinary
/// must then find build info, pclntab and runtime.text from the segments alone.
fn without_section_headers(data: &[u8]) -> Vec<u8> {
    let mut copy = data.to_vec();
    // e_shoff (8 bytes at 0x28), e_shnum (2 at 0x3c), e_shstrndx (2 at 0x3e) of ELF64.
    copy[0x28..0x30].fill(0);
    copy[0x3c..0x40].fill(0);
    copy
}

fn check_release(minor: &str) {
    let expected = EXPECTED
        .iter()
        .find(|e| e.minor == minor)
        .expect("an expectation per release");
    let (version, go) = toolchain(minor);
    let go_version = GoVersion::parse(&format!("go{version}")).unwrap();
    let built: Vec<Built> = Variant::ALL
        .iter()
        .map(|&variant| {
            let path = build(&version, &go, variant);
            let bin =
                GoBinary::open(&path).unwrap_or_else(|e| panic!("go{version} {variant:?}: {e}"));
            Built { variant, path, bin }
        })
        .collect();
    let unstripped = |pie: bool| {
        &built
            .iter()
            .find(|b| b.variant.is_pie() == pie && !b.variant.is_stripped())
            .unwrap()
            .bin
    };
    let reference = unstripped(false);
    let reference_reasons = reference.wait_reasons_from_symbol().unwrap();
    let table = table_entry_for(go_version)
        .unwrap_or_else(|| panic!("no table entry for go{version}: run `cargo xtask offsetgen`"));
    let main_go = fs::canonicalize(waiter_dir().join("main.go")).unwrap();
    let call_line = line_of("gobinary-test: callsite");

    for Built { variant, path, bin } in &built {
        let ctx = format!("go{version} {variant:?}");
        let stripped = variant.is_stripped();

        // Build info, as `go version -m` shows it.
        let info = bin.build_info();
        assert_eq!(info.go_version_raw, format!("go{version}"), "{ctx}");
        assert_eq!(info.go_version, go_version, "{ctx}");
        assert_eq!(info.go_version.to_string(), format!("go{version}"), "{ctx}");
        assert_eq!(info.path.as_deref(), Some("example.com/waiter"), "{ctx}");
        let main_module = info.main_module.as_ref().expect("a main module");
        assert_eq!(main_module.path, "example.com/waiter", "{ctx}");
        assert!(info.deps.is_empty(), "{ctx}: {:?}", info.deps);
        let buildmode = if variant.is_pie() { "pie" } else { "exe" };
        assert_eq!(info.setting("-buildmode"), Some(buildmode), "{ctx}");
        assert_eq!(
            info.setting("-ldflags"),
            stripped.then_some("-s -w"),
            "{ctx}"
        );
        assert_eq!(info.setting("CGO_ENABLED"), Some("0"), "{ctx}");
        assert_eq!(info.setting("GOARCH"), Some("amd64"), "{ctx}");

        // ELF facts.
        assert_eq!(bin.arch(), Arch::Amd64, "{ctx}");
        assert_eq!(bin.is_pie(), variant.is_pie(), "{ctx}");
        assert_eq!(bin.has_symtab(), !stripped, "{ctx}");
        assert_eq!(bin.has_dwarf(), !stripped, "{ctx}");
        assert_eq!(bin.symbol("runtime.gopark").is_some(), !stripped, "{ctx}");

        // runtime.gopark from the pclntab, checked against .symtab.
        let gopark = bin.function("runtime.gopark").expect("runtime.gopark");
        let with_symbols = unstripped(variant.is_pie());
        let sym = with_symbols.symbol("runtime.gopark").unwrap();
        assert_eq!(gopark.entry, sym.addr, "{ctx}");
        assert!(
            sym.addr + sym.size <= gopark.end,
            "{ctx}: {sym:?} {gopark:?}"
        );
        assert_eq!(bin.pclntab().func_at(gopark.entry), Some(gopark.clone()));
        assert_eq!(bin.pclntab().func_at(gopark.end - 1), Some(gopark.clone()));
        let text = with_symbols.symbol("runtime.text").unwrap();
        assert_eq!(bin.pclntab().text_start(), text.addr, "{ctx}");

        // Its RET instructions: 0xC3 in memory and at the file offset uprobes attach at.
        let rets = bin.ret_instructions(&gopark).unwrap();
        assert!(!rets.is_empty(), "{ctx}: gopark has no RET");
        let file = fs::read(path).unwrap();
        for &ret in &rets {
            assert!(gopark.contains(ret), "{ctx}: {ret:#x}");
            assert_eq!(bin.read_bytes(ret, 1), Some(&[0xc3][..]), "{ctx}: {ret:#x}");
            let offset = usize::try_from(bin.file_offset(ret).unwrap()).unwrap();
            assert_eq!(
                file[offset], 0xc3,
                "{ctx}: {ret:#x} at file offset {offset:#x}"
            );
        }

        // The call site of main.marker in main.main, by file and line.
        let main = bin.function("main.main").expect("main.main");
        let marker = bin.function("main.marker").expect("main.marker");
        let ret_addr = call_site(bin, &main, marker.entry);
        assert_eq!(
            bin.pclntab().func_at(ret_addr - 1),
            Some(main.clone()),
            "{ctx}"
        );
        assert_eq!(
            bin.pclntab().line_at(ret_addr - 1),
            Some((main_go.display().to_string(), call_line)),
            "{ctx}"
        );
        // A leaf without a stack check starts with its body's first statement.
        assert_eq!(
            bin.pclntab().line_at(marker.entry),
            Some((main_go.display().to_string(), line_of("return n * 3"))),
            "{ctx}"
        );

        // Inlined calls expand as the runtime's tracebacks do: the call to the Mutex slow path
        // sits in sync.(*Mutex).Lock (and, since Go 1.24, internal/sync's), inlined into the
        // goroutine's function at the line of `mu.Lock()`.
        let func3 = bin.function("main.main.func3").expect("main.main.func3");
        let ret_addr = bin
            .pclntab()
            .functions()
            .filter(|f| f.name.ends_with("(*Mutex).lockSlow"))
            .find_map(|slow| calls(bin, &func3, slow.entry).first().copied())
            .expect("main.main.func3 calls a (*Mutex).lockSlow");
        let frames = bin.pclntab().frames_at(ret_addr - 1);
        let outer = frames.last().expect("at least the physical frame");
        assert_eq!(outer.function, "main.main.func3", "{ctx}: {frames:?}");
        assert_eq!(
            (outer.file.as_str(), outer.line),
            (
                main_go.to_str().unwrap(),
                line_of("gobinary-test: inlined lock")
            ),
            "{ctx}"
        );
        assert!(
            frames.len() >= 2 && frames[0].function.ends_with("(*Mutex).Lock"),
            "{ctx}: {frames:?}"
        );
        assert!(frames[0].file.ends_with("mutex.go"), "{ctx}: {frames:?}");

        // The goroutine list: by disassembly of runtime.allgadd where stripped. In a binary
        // with symbols both ways agree; stripping moves data (the build info is shorter), so
        // a stripped binary is checked by the distance between the two variables.
        let allg = bin.allg_variables().unwrap();
        assert_eq!(
            allg.source,
            if stripped {
                Source::Code
            } else {
                Source::Symbol
            },
            "{ctx}"
        );
        let (len_sym, ptr_sym) = (
            with_symbols.symbol("runtime.allglen").unwrap().addr,
            with_symbols.symbol("runtime.allgptr").unwrap().addr,
        );
        if stripped {
            assert_eq!(
                allg.allglen.wrapping_sub(allg.allgptr),
                len_sym.wrapping_sub(ptr_sym),
                "{ctx}"
            );
        } else {
            assert_eq!((allg.allglen, allg.allgptr), (len_sym, ptr_sym), "{ctx}");
            let from_code = bin.allg_variables_from_code().unwrap();
            assert_eq!(
                (from_code.allglen, from_code.allgptr),
                (len_sym, ptr_sym),
                "{ctx}"
            );
        }

        // Type names: an itab `go:itab.T,I` holds T's type in its second word
        // (internal/abi.ITab).
        if !stripped {
            let mut checked = 0;
            for sym in bin.symbols().filter(|s| s.name.starts_with("go:itab.")) {
                let concrete = sym.name["go:itab.".len()..].rsplit_once(',').unwrap().0;
                if concrete.contains(['[', ' ', '(']) {
                    continue;
                }
                // The runtime names a type by its package's name, not its import path; a
                // major-version suffix (`math/rand/v2`) is not part of the name (`rand`).
                let star = if concrete.starts_with('*') { "*" } else { "" };
                let want = format!(
                    "{star}{}",
                    runtime_type_name(concrete.trim_start_matches('*'))
                );
                let ty = bin.read_pointer(sym.addr + 8).unwrap();
                assert_eq!(bin.type_name(ty), Some(want), "{ctx}: {}", sym.name);
                checked += 1;
            }
            // Go 1.27 keeps its itabs without symbols (moduledata.itaboffset); its type names
            // are checked by the end-to-end panic tests.
            let min = if go_version.minor >= 27 { 0 } else { 5 };
            assert!(checked >= min, "{ctx}: only {checked} itabs");
        }

        // runtime.sched: by its symbol, or found in runtime.newproc1; checked like the list.
        let (sched, source) = bin.sched_variable().unwrap();
        assert_eq!(
            source,
            if stripped {
                Source::Code
            } else {
                Source::Symbol
            },
            "{ctx}"
        );
        let sched_sym = with_symbols.symbol("runtime.sched").unwrap().addr;
        if stripped {
            assert_eq!(
                sched.wrapping_sub(allg.allgptr),
                sched_sym.wrapping_sub(ptr_sym),
                "{ctx}"
            );
        } else {
            assert_eq!(bin.sched_variable_from_code().unwrap(), sched_sym, "{ctx}");
        }

        // waitReason names: the symbol when there is one, else the table; the same.
        let reasons = bin.wait_reasons().unwrap();
        let source = if stripped {
            Source::Table
        } else {
            Source::Symbol
        };
        assert_eq!(reasons.source, source, "{ctx}");
        assert_eq!(reasons.names, reference_reasons.names, "{ctx}");
        // stwReason names likewise.
        let stw = bin.stw_reasons().unwrap();
        assert_eq!(stw.source, source, "{ctx}");
        assert_eq!(
            stw.names,
            reference.stw_reasons_from_symbol().unwrap().names,
            "{ctx}"
        );
        assert_eq!(stw.value_of("GC mark termination"), Some(1), "{ctx}");
        assert_eq!(stw.value_of("GC sweep termination"), Some(2), "{ctx}");
        for (name, value) in REASONS.iter().zip(expected.reasons) {
            assert_eq!(reasons.value_of(name), Some(value), "{ctx}: {name}");
            assert_eq!(
                reference_reasons.value_of(name),
                Some(value),
                "{ctx}: {name}"
            );
        }

        // Struct offsets: DWARF when there is DWARF, else the table; the same.
        let offsets = bin.runtime_offsets().unwrap();
        let source = if stripped {
            Source::Table
        } else {
            Source::Dwarf
        };
        assert_eq!(offsets.source, source, "{ctx}");
        assert_eq!(offsets.with_source(Source::Table), table.offsets, "{ctx}");
        assert_eq!(offsets.g_goid, expected.goid, "{ctx}");
        assert!(offsets.schedt_time_to_run.is_some(), "{ctx}");

        // The same binary without section headers: everything from segments.
        let bare = GoBinary::parse(without_section_headers(&file))
            .unwrap_or_else(|e| panic!("{ctx} without section headers: {e}"));
        assert_eq!(bare.build_info(), info, "{ctx}");
        assert!(!bare.has_symtab() && !bare.has_dwarf(), "{ctx}");
        assert_eq!(bare.pclntab().text_start(), text.addr, "{ctx}");
        assert_eq!(
            bare.function("runtime.gopark"),
            Some(gopark.clone()),
            "{ctx}"
        );
        assert_eq!(bare.ret_instructions(&gopark).unwrap(), rets, "{ctx}");
        assert_eq!(bare.pclntab().len(), bin.pclntab().len(), "{ctx}");
        assert_eq!(bare.wait_reasons().unwrap().names, reasons.names, "{ctx}");
    }

    // The committed table is what these binaries say.
    for pie in [false, true] {
        let entry = table_entry_from(unstripped(pie)).unwrap();
        assert!(entry.go_version.same_minor(&table.go_version));
        assert_eq!(entry.offsets, table.offsets, "go{version} pie={pie}");
        assert_eq!(
            entry.wait_reasons, table.wait_reasons,
            "go{version} pie={pie}"
        );
    }
}

#[test]
fn go1_21() {
    check_release("1.21");
}

#[test]
fn go1_22() {
    check_release("1.22");
}

#[test]
fn go1_23() {
    check_release("1.23");
}

#[test]
fn go1_24() {
    check_release("1.24");
}

#[test]
fn go1_25() {
    check_release("1.25");
}

#[test]
fn go1_26() {
    check_release("1.26");
}

#[test]
fn go1_27() {
    check_release("1.27");
}

/// `math/rand/v2.runtimeSource` → `rand.runtimeSource`, `net/http.Header` → `http.Header`:
/// how the runtime names a type, given its import path (the package name by convention).
fn runtime_type_name(qualified: &str) -> String {
    let (path, ty) = match qualified.rfind('/') {
        Some(slash) => match qualified[slash..].find('.') {
            Some(dot) => qualified.split_at(slash + dot),
            None => return qualified.to_string(),
        },
        None => match qualified.split_once('.') {
            Some((pkg, _)) => qualified.split_at(pkg.len()),
            None => return qualified.to_string(),
        },
    };
    let mut elems = path.rsplit('/');
    let mut name = elems.next().unwrap_or(path);
    let is_major_version =
        |e: &str| e.len() > 1 && e.starts_with('v') && e[1..].bytes().all(|b| b.is_ascii_digit());
    if is_major_version(name) {
        name = elems.next().unwrap_or(name);
    }
    format!("{name}{ty}")
}

#[test]
fn runtime_type_names() {
    assert_eq!(
        runtime_type_name("math/rand/v2.runtimeSource"),
        "rand.runtimeSource"
    );
    assert_eq!(runtime_type_name("net/http.Header"), "http.Header");
    assert_eq!(runtime_type_name("main.T"), "main.T");
    assert_eq!(runtime_type_name("example.com/v2pkg.T"), "v2pkg.T");
}
