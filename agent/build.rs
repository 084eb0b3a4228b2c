//! Embeds the eBPF objects built by `cargo xtask build-ebpf` (they need a different
//! toolchain, so they are not built here). `GORT_EBPF_DIR` overrides where they are taken from.

use std::{env, fs, path::PathBuf};

const PROGRAMS: &[&str] = &["sched", "gc", "lifecycle", "panics", "procs", "floor"];

fn main() {
    println!("cargo::rerun-if-env-changed=GORT_EBPF_DIR");
    let manifest = PathBuf::from(env::var_os("CARGO_MANIFEST_DIR").expect("set by cargo"));
    let dir = env::var_os("GORT_EBPF_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| manifest.join("../target/ebpf/bpfel-unknown-none/release"));
    let out = PathBuf::from(env::var_os("OUT_DIR").expect("set by cargo"));
    for program in PROGRAMS {
        let object = dir.join(program);
        println!("cargo::rerun-if-changed={}", object.display());
        if let Err(e) = fs::copy(&object, out.join(program)) {
            panic!(
                "the eBPF object `{}` is missing ({e}): run `cargo xtask build-ebpf` first \
                 (or `cargo xtask test` / `cargo xtask demo`, which do it)",
                object.display()
            );
        }
    }
}
