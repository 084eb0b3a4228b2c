//! Go binary parsing on hostile files (gort reads executables of processes it did not start):
//! whatever the bytes, `GoBinary::parse` returns an error or a binary whose every query
//! answers without panicking. Seeded by `cargo xtask fuzz` with real Go binaries (stripped
//! and not, PIE and not), so mutations land in ELF headers, build info, .gopclntab and DWARF.
#![no_main]

use gobinary::GoBinary;
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let Ok(bin) = GoBinary::parse(data.to_vec()) else {
        return;
    };
    let _ = bin.build_info();
    let _ = (bin.arch(), bin.is_pie(), bin.has_symtab(), bin.has_dwarf());
    let _ = bin.runtime_offsets();
    let _ = bin.wait_reasons();
    let _ = bin.stw_reasons();
    let _ = bin.allg_variables();
    let _ = bin.sched_variable();
    for name in ["runtime.gopark", "runtime.newproc1", "main.main"] {
        if let Some(f) = bin.function(name) {
            let _ = bin.ret_instructions(&f);
            let _ = bin.file_offset(f.entry);
            for pc in (f.entry..f.end.min(f.entry + 4096)).step_by(13) {
                let _ = bin.pclntab().frames_at(pc);
                let _ = bin.pclntab().line_at(pc);
            }
        }
    }
    for f in bin.pclntab().functions().take(64) {
        let _ = bin.pclntab().func_at(f.entry);
    }
});
