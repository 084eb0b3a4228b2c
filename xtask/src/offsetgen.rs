//! `cargo xtask offsetgen`: regenerates `gobinary/src/tables.rs`, the per-Go-release table
//! of runtime struct offsets and waitReason names that gort falls back on for stripped
//! binaries. Each entry is read (DWARF and `runtime.waitReasonStrings`) from the test
//! program `gobinary/testdata/waiter` built with that release; `--check` verifies that the
//! committed file is what this would write.

use std::fs;

use anyhow::{Context, Result, ensure};
use gobinary::{GoBinary, TableEntry, render_tables, table_entry_from};

use crate::setup;

#[derive(clap::Args)]
pub struct Options {
    /// Fail if the committed table differs from what would be generated, instead of
    /// writing it.
    #[arg(long)]
    check: bool,
}

pub fn run(o: Options) -> Result<()> {
    let root = setup::workspace_root();
    let package = root.join("gobinary/testdata/waiter");
    let table = root.join("gobinary/src/tables.rs");

    let mut entries: Vec<TableEntry> = Vec::new();
    for version in setup::GO_VERSIONS {
        let go = setup::ensure_go(version)?;
        let out = root.join("target/offsetgen").join(version).join("waiter");
        let mut build = setup::go_build(&go, &package, &out);
        // No VCS stamping: the table must not depend on the state of the checkout.
        build.env("GOFLAGS", "-mod=mod -buildvcs=false");
        setup::run_cmd(&mut build)?;
        let bin = GoBinary::open(&out)?;
        let built_with = &bin.build_info().go_version_raw;
        ensure!(
            *built_with == format!("go{version}"),
            "{} was built by {built_with}, not go{version}",
            out.display()
        );
        let entry = table_entry_from(&bin)
            .with_context(|| format!("could not read the table entry of go{version}"))?;
        // The table is keyed by minor release: one toolchain per minor.
        if let Some(previous) = entries.last() {
            ensure!(
                previous.go_version < entry.go_version
                    && !previous.go_version.same_minor(&entry.go_version),
                "GO_VERSIONS must list one release per minor, oldest first: {} then {}",
                previous.go_version,
                entry.go_version
            );
        }
        println!(
            "{}: g.goid at {}, {} wait reasons",
            entry.go_version,
            entry.offsets.g_goid,
            entry.wait_reasons.len()
        );
        entries.push(entry);
    }

    let rendered = render_tables(&entries);
    if o.check {
        let committed = fs::read_to_string(&table)
            .with_context(|| format!("could not read {}", table.display()))?;
        ensure!(
            committed == rendered,
            "{} is out of date: run `cargo xtask offsetgen`",
            table.display()
        );
        println!("{} is up to date", table.display());
    } else {
        fs::write(&table, rendered)
            .with_context(|| format!("could not write {}", table.display()))?;
        println!("wrote {}", table.display());
    }
    Ok(())
}
