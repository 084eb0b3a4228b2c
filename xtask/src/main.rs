//! `cargo xtask`: everything beyond `cargo build` — installing what the project needs,
//! building the eBPF object, the demo, the test suite, benchmarks and generated tables.
//! Each subcommand is a module with an `Options` struct and a `run` function.

mod bench;
mod build_ebpf;
mod demo;
mod fuzz;
mod offsetgen;
mod setup;
mod test;

use anyhow::Result;
use clap::{Parser, Subcommand};

#[derive(Parser)]
#[command(name = "cargo xtask", about = "gort's development tasks")]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Install whatever is missing: apt packages, bpf-linker, Go toolchains.
    Setup(setup::Options),
    /// Build the eBPF object that the agent embeds.
    BuildEbpf(build_ebpf::Options),
    /// Build everything, start the bundled Go demo service and show live what gort sees.
    Demo(demo::Options),
    /// Install what is missing, then run lints and the whole test suite.
    Test(test::Options),
    /// Measure what gort costs a park-heavy Go program.
    Bench(bench::Options),
    /// Regenerate the per-Go-version struct offset and waitReason tables.
    Offsetgen(offsetgen::Options),
    /// Fuzz the parsers of untrusted input.
    Fuzz(fuzz::Options),
}

fn main() -> Result<()> {
    match Cli::parse().command {
        Command::Setup(o) => setup::run(o),
        Command::BuildEbpf(o) => build_ebpf::run(o).map(|_| ()),
        Command::Demo(o) => demo::run(o),
        Command::Test(o) => test::run(o),
        Command::Bench(o) => bench::run(o),
        Command::Offsetgen(o) => offsetgen::run(o),
        Command::Fuzz(o) => fuzz::run(o),
    }
}
