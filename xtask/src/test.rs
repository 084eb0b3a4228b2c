//! `cargo xtask test`: installs whatever is missing, builds the eBPF object and gort, checks
//! formatting, lints and the generated tables, then runs every test — unit tests and the
//! end-to-end tests that load the real eBPF programs and attach them to real Go programs
//! (root needed). This is what `.ci/run` runs.

use std::process::Command;

use anyhow::Result;

use crate::{
    build_ebpf,
    setup::{self, GO_VERSIONS, run_cmd, workspace_root},
};

#[derive(clap::Args)]
pub struct Options {
    /// Only run tests whose name contains this (passed to the test harness).
    filter: Option<String>,
    /// Skip `cargo fmt --check` and clippy.
    #[arg(long)]
    no_lint: bool,
}

pub fn run(o: Options) -> Result<()> {
    let root = workspace_root();
    for v in GO_VERSIONS {
        setup::ensure_go(v)?;
    }
    setup::ensure_apt(setup::TEST_PACKAGES)?;
    setup::ensure_python_packages()?;
    build_ebpf::run(build_ebpf::Options::default())?;

    let cargo = || {
        let mut c = Command::new(std::env::var_os("CARGO").unwrap_or_else(|| "cargo".into()));
        c.current_dir(&root);
        c
    };
    if !o.no_lint {
        run_cmd(cargo().args(["fmt", "--all", "--check"]))?;
        // The default members: agent-ebpf builds only for the BPF target.
        run_cmd(cargo().args(["clippy", "--all-targets", "--", "-D", "warnings"]))?;
    }
    run_cmd(cargo().args([
        "run",
        "--quiet",
        "--package",
        "xtask",
        "--",
        "offsetgen",
        "--check",
    ]))?;
    run_cmd(cargo().args(["build", "--package", "gort"]))?;
    // A short run of every fuzz target: they build, and find nothing in that time.
    crate::fuzz::run(crate::fuzz::Options { seconds: 15 })?;
    let mut test = cargo();
    test.args(["test"])
        .env("GORT_BIN", root.join("target/debug/gort"));
    if let Some(f) = &o.filter {
        test.arg("--").arg(f);
    }
    run_cmd(&mut test)
}
