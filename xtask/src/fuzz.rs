//! `cargo xtask fuzz`: runs the fuzz targets of `fuzz/` (libFuzzer through `libfuzzer-sys`,
//! with the same coverage instrumentation `cargo fuzz` uses, built by the stable compiler) for
//! a while each, from the seed corpus in `fuzz/corpus/<target>`. A crash fails the run and
//! leaves the input in `target/fuzz/artifacts/<target>/`.

use std::{fs, process::Command};

use anyhow::Result;

use crate::setup::{run_cmd, workspace_root};

pub const TARGETS: &[&str] = &["traceparent"];

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
    for t in TARGETS {
        // Work on a copy: the checked-in seeds stay as they are.
        let corpus = target_dir.join("corpus").join(t);
        let artifacts = target_dir.join("artifacts").join(t);
        fs::create_dir_all(&corpus)?;
        fs::create_dir_all(&artifacts)?;
        for seed in fs::read_dir(root.join("fuzz/corpus").join(t))? {
            let seed = seed?;
            fs::copy(seed.path(), corpus.join(seed.file_name()))?;
        }
        println!("fuzzing {t} for {} s", o.seconds);
        run_cmd(
            Command::new(target_dir.join(triple).join("release").join(t))
                .arg(format!("-max_total_time={}", o.seconds))
                .arg("-max_len=4096")
                .arg(format!("-artifact_prefix={}/", artifacts.display()))
                .arg("-print_final_stats=1")
                .arg(&corpus),
        )?;
    }
    Ok(())
}
