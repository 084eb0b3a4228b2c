//! Builds the test program `testdata/waiter` with the Go toolchains `cargo xtask setup`
//! installs under `target/toolchains/go/<version>`, in the four variants gort supports.

use std::{
    fs,
    path::{Path, PathBuf},
    process::Command,
    sync::Mutex,
};

/// How a test binary is linked.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Variant {
    /// `go build`: static, with `.symtab` and DWARF.
    Default,
    /// `go build -buildmode=pie`.
    Pie,
    /// `go build -ldflags='-s -w'`: no `.symtab`, no DWARF.
    Stripped,
    /// Both.
    PieStripped,
}

impl Variant {
    pub const ALL: [Variant; 4] = [
        Variant::Default,
        Variant::Pie,
        Variant::Stripped,
        Variant::PieStripped,
    ];

    pub fn is_pie(self) -> bool {
        matches!(self, Variant::Pie | Variant::PieStripped)
    }

    pub fn is_stripped(self) -> bool {
        matches!(self, Variant::Stripped | Variant::PieStripped)
    }

    fn dir_name(self) -> &'static str {
        match self {
            Variant::Default => "default",
            Variant::Pie => "pie",
            Variant::Stripped => "stripped",
            Variant::PieStripped => "pie-stripped",
        }
    }
}

/// The workspace root (the parent of `gobinary/`).
pub fn workspace_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .expect("gobinary lives in the workspace")
        .to_path_buf()
}

/// The test program's package directory.
pub fn waiter_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("testdata/waiter")
}

/// The installed Go toolchains as (release like "1.22.10", path of `go`), oldest first.
pub fn toolchains() -> Vec<(String, PathBuf)> {
    let dir = workspace_root().join("target/toolchains/go");
    let mut found: Vec<(String, PathBuf)> = fs::read_dir(&dir)
        .into_iter()
        .flatten()
        .flatten()
        .filter_map(|e| {
            let version = e.file_name().into_string().ok()?;
            let go = e.path().join("go/bin/go");
            go.exists().then_some((version, go))
        })
        .collect();
    found.sort_by_key(|(v, _)| {
        v.split('.')
            .map(|n| n.parse::<u32>().unwrap_or(0))
            .collect::<Vec<_>>()
    });
    assert!(
        !found.is_empty(),
        "no Go toolchain under {}: run `cargo xtask setup`",
        dir.display()
    );
    found
}

/// The toolchain of minor release `minor` (like "1.22"): (release, path of `go`).
pub fn toolchain(minor: &str) -> (String, PathBuf) {
    let prefix = format!("{minor}.");
    toolchains()
        .into_iter()
        .rfind(|(v, _)| v.starts_with(&prefix))
        .unwrap_or_else(|| {
            panic!(
                "no Go {minor} toolchain under {}: run `cargo xtask setup`",
                workspace_root().join("target/toolchains/go").display()
            )
        })
}

/// Go builds share one cache and may share outputs: one at a time.
static BUILD: Mutex<()> = Mutex::new(());

/// Builds the test program with `go` (release `version`) as `variant`; returns the binary.
pub fn build(version: &str, go: &Path, variant: Variant) -> PathBuf {
    let root = workspace_root();
    let out = root
        .join("target/gobinary-tests")
        .join(version)
        .join(variant.dir_name())
        .join("waiter");
    let mut cmd = Command::new(go);
    cmd.arg("build").arg("-o").arg(&out);
    if variant.is_pie() {
        cmd.arg("-buildmode=pie");
    }
    if variant.is_stripped() {
        cmd.arg("-ldflags=-s -w");
    }
    cmd.arg(".")
        .current_dir(waiter_dir())
        .env("GOTOOLCHAIN", "local")
        .env("GOPROXY", "off")
        // No VCS stamping: the binaries must not depend on the state of the checkout.
        .env("GOFLAGS", "-mod=mod -buildvcs=false")
        .env("CGO_ENABLED", "0")
        .env("GOCACHE", root.join("target/go-cache"))
        .env("GOPATH", root.join("target/go-path"));
    let _guard = BUILD.lock().unwrap_or_else(|e| e.into_inner());
    let output = cmd
        .output()
        .unwrap_or_else(|e| panic!("could not run {}: {e}", go.display()));
    assert!(
        output.status.success(),
        "{cmd:?} failed: {}",
        String::from_utf8_lossy(&output.stderr)
    );
    out
}

/// The 1-based line of `main.go` holding `marker`.
pub fn line_of(marker: &str) -> u32 {
    let source = fs::read_to_string(waiter_dir().join("main.go")).expect("main.go is readable");
    let index = source
        .lines()
        .position(|l| l.contains(marker))
        .unwrap_or_else(|| panic!("main.go has no line containing {marker:?}"));
    u32::try_from(index + 1).expect("main.go is short")
}
