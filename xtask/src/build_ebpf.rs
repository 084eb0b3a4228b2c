//! `cargo xtask build-ebpf`: builds `agent-ebpf` for `bpfel-unknown-none` into
//! `target/ebpf/`, where the agent's build script picks the objects up and embeds them.

use std::path::PathBuf;

use anyhow::Result;

use crate::setup::{ebpf_toolchain, run_cmd, workspace_root};

#[derive(clap::Args, Default)]
pub struct Options {
    /// Build with debug assertions (the release profile is what ships).
    #[arg(long)]
    pub debug: bool,
}

/// Builds the eBPF objects and returns the directory holding them.
pub fn run(o: Options) -> Result<PathBuf> {
    let tc = ebpf_toolchain()?;
    let root = workspace_root();
    let target_dir = root.join("target/ebpf");
    let mut cmd = tc.command();
    cmd.current_dir(&root)
        .args([
            "build",
            "--package",
            "agent-ebpf",
            "--bins",
            "--target",
            "bpfel-unknown-none",
        ])
        .args(["-Z", "build-std=core"])
        .arg("--target-dir")
        .arg(&target_dir)
        // The same flags aya-build passes: the target architecture of pt_regs, and BTF.
        .env(
            "CARGO_ENCODED_RUSTFLAGS",
            [
                "--cfg=bpf_target_arch=\"x86_64\"",
                "-Cdebuginfo=2",
                "-Clink-arg=--btf",
            ]
            .join("\x1f"),
        );
    if !o.debug {
        cmd.arg("--release");
    }
    run_cmd(&mut cmd)?;
    let out = target_dir
        .join("bpfel-unknown-none")
        .join(if o.debug { "debug" } else { "release" });
    println!("eBPF objects in {}", out.display());
    Ok(out)
}
