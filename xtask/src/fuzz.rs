//! `cargo xtask fuzz`: runs the fuzz targets of `fuzz/` (libFuzzer through `libfuzzer-sys`,
//! with the same coverage instrumentation `cargo fuzz` uses, built by the stable compiler) for
//! a while each, from the seed corpus in `fuzz/corpus/<target>`. A crash fails the run and
//! leaves the input in `target/fuzz/artifacts/<target>/`.

use std::{fs, process::Command};

use anyhow::Result;

use crate::setup::{run_cmd, workspace_root};

/// (target, largest input): the traceparent parser gets header-sized inputs, the binary
/// parser whole (small) Go executables.
pub const TARGETS: &[(&str, usize)] = &[("traceparent", 4096), ("gobinary", 4 << 20)];

#[derive(clap::Args)]
pub struct Options {
    /// How long to fuzz each target.
    #[arg(long, default_value_t = 60)]
    pub seconds: u64,
}

pub fn run(o: Options) -> Result<()> {
    let root = workspace_root();
    let target_dir = root.join("target/fuzz");
    let triple = "x86_64-unknown-linux-gnu";
    // Flags for the fuzzed code only (--target keeps them off build scripts).
    let rustflags = [
        "-Cpasses=sancov-module",
        "-Cllvm-args=-sanitizer-coverage-level=4",
        "-Cllvm-args=-sanitizer-coverage-inline-8bit-counters",
        "-Cllvm-args=-sanitizer-coverage-pc-table",
        "-Cllvm-args=-sanitizer-coverage-trace-compares",
        "--cfg=fuzzing",
        "-Cdebug-assertions",
        "-Coverflow-checks",
    ]
    .join(" ");
    run_cmd(
        Command::new(std::env::var_os("CARGO").unwrap_or_else(|| "cargo".into()))
            .current_dir(root.join("fuzz"))
            .args(["build", "--release", "--target", triple, "--target-dir"])
            .arg(&target_dir)
            .env("RUSTFLAGS", rustflags),
    )?;
    for &(t, max_len) in TARGETS {
        // Work on a copy: the checked-in seeds stay as they are.
        let corpus = target_dir.join("corpus").join(t);
        let artifacts = target_dir.join("artifacts").join(t);
        fs::create_dir_all(&corpus)?;
        fs::create_dir_all(&artifacts)?;
        let seeds = root.join("fuzz/corpus").join(t);
        if seeds.is_dir() {
            for seed in fs::read_dir(seeds)? {
                let seed = seed?;
                fs::copy(seed.path(), corpus.join(seed.file_name()))?;
            }
        }
        if t == "gobinary" {
            go_binary_seeds(&corpus)?;
        }
        println!("fuzzing {t} for {} s", o.seconds);
        run_cmd(
            Command::new(target_dir.join(triple).join("release").join(t))
                .arg(format!("-max_total_time={}", o.seconds))
                .arg(format!("-max_len={max_len}"))
                .arg("-rss_limit_mb=4096")
                .arg(format!("-artifact_prefix={}/", artifacts.display()))
                .arg("-print_final_stats=1")
                .arg(&corpus),
        )?;
    }
    Ok(())
}

/// Real Go binaries to start from (too large to check in): a small program built with the
/// oldest and the newest supported Go, stripped and not, PIE and not.
fn go_binary_seeds(corpus: &std::path::Path) -> Result<()> {
    let root = workspace_root();
    let package = root.join("fuzz/seeds/tiny");
    let versions = crate::setup::GO_VERSIONS;
    for version in [versions[0], versions[versions.len() - 1]] {
        let go = crate::setup::ensure_go(version)?;
        for (name, flags) in [
            ("default", &[][..]),
            ("stripped-pie", &["-buildmode=pie", "-ldflags=-s -w"][..]),
        ] {
            let out = corpus.join(format!("go{version}-{name}"));
            let mut cmd = crate::setup::go_build_with(&go, &package, &out, flags);
            run_cmd(&mut cmd)?;
        }
    }
    Ok(())
}
