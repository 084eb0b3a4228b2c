//! Helpers for gort's end-to-end tests: build the Go test programs of `tests/go/` with real Go
//! toolchains, start them, attach the real `gort` binary (real eBPF programs in the real
//! kernel) and read what it serves.
//!
//! The tests need root, the eBPF object and the Go toolchains: `cargo xtask test` provides
//! all three. Nothing here skips a test: a missing piece is a failure that says what to run.

use std::{
    collections::BTreeMap,
    io::{BufRead, BufReader, Read, Write},
    net::TcpListener,
    path::{Path, PathBuf},
    process::{Child, ChildStdin, ChildStdout, Command, Stdio},
    sync::{Mutex, MutexGuard},
    thread,
    time::{Duration, Instant},
};

use anyhow::{Context, Result, bail, ensure};
use serde_json::Value;

pub fn workspace_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .expect("tests/ is in the workspace")
        .to_path_buf()
}

/// End-to-end tests run one at a time: they assert timings, and the machine has 2 cores.
pub fn serial() -> MutexGuard<'static, ()> {
    static LOCK: Mutex<()> = Mutex::new(());
    LOCK.lock().unwrap_or_else(|e| e.into_inner())
}

/// The `go` binary of a Go release installed by `cargo xtask setup`.
pub fn go(version: &str) -> PathBuf {
    let go = workspace_root()
        .join("target/toolchains/go")
        .join(version)
        .join("go/bin/go");
    assert!(
        go.exists(),
        "Go {version} is not installed at {}: run `cargo xtask setup` (or `cargo xtask test`)",
        go.display()
    );
    go
}

/// How a test program is linked.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Variant {
    pub pie: bool,
    pub stripped: bool,
}

impl Variant {
    pub const DEFAULT: Variant = Variant {
        pie: false,
        stripped: false,
    };
    pub const PIE: Variant = Variant {
        pie: true,
        stripped: false,
    };
    pub const STRIPPED: Variant = Variant {
        pie: false,
        stripped: true,
    };
    pub const PIE_STRIPPED: Variant = Variant {
        pie: true,
        stripped: true,
    };

    fn suffix(&self) -> &'static str {
        match (self.pie, self.stripped) {
            (false, false) => "exe",
            (true, false) => "pie",
            (false, true) => "exe-stripped",
            (true, true) => "pie-stripped",
        }
    }
}

/// Builds `tests/go/<program>` with Go `version`, returns the executable.
pub fn build_go_program(program: &str, version: &str, variant: Variant) -> PathBuf {
    static BUILD: Mutex<()> = Mutex::new(());
    let _one_at_a_time = BUILD.lock().unwrap_or_else(|e| e.into_inner());
    let root = workspace_root();
    let out = root
        .join("target/e2e-bin")
        .join(format!("{program}-go{version}-{}", variant.suffix()));
    let mut cmd = Command::new(go(version));
    cmd.arg("build").arg("-o").arg(&out);
    if variant.pie {
        cmd.arg("-buildmode=pie");
    }
    if variant.stripped {
        cmd.arg("-ldflags=-s -w");
    }
    cmd.arg(".")
        .current_dir(root.join("tests/go").join(program))
        .env("GOTOOLCHAIN", "local")
        .env("GOPROXY", "off")
        .env("GOFLAGS", "-mod=mod")
        .env("CGO_ENABLED", "0")
        .env("GOCACHE", root.join("target/go-cache"))
        .env("GOPATH", root.join("target/go-path"));
    let output = cmd.output().expect("run go build");
    assert!(
        output.status.success(),
        "go build of {program} with Go {version} failed:\n{}",
        String::from_utf8_lossy(&output.stderr)
    );
    out
}

/// A running Go test program speaking the line protocol of `tests/go/parks`.
pub struct GoProgram {
    child: Child,
    stdin: Option<ChildStdin>,
    stdout: BufReader<ChildStdout>,
    pub pid: u32,
    /// The program's first line (`{"ready":true,...}`).
    pub ready: Value,
}

impl GoProgram {
    /// Starts `exe` and waits for its `{"ready":true}` line.
    pub fn start(exe: &Path, args: &[&str], env: &[(&str, &str)]) -> Result<GoProgram> {
        let mut cmd = Command::new(exe);
        cmd.args(args)
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit());
        for (k, v) in env {
            cmd.env(k, v);
        }
        let mut child = cmd
            .spawn()
            .with_context(|| format!("start {}", exe.display()))?;
        let stdin = child.stdin.take();
        let stdout = BufReader::new(child.stdout.take().expect("piped"));
        let mut p = GoProgram {
            pid: child.id(),
            child,
            stdin,
            stdout,
            ready: Value::Null,
        };
        let ready = p.read_json()?;
        ensure!(
            ready["ready"] == Value::Bool(true),
            "unexpected first line {ready}"
        );
        p.ready = ready;
        Ok(p)
    }

    /// Tells the program to go on.
    pub fn proceed(&mut self) -> Result<()> {
        let stdin = self.stdin.as_mut().context("stdin already closed")?;
        stdin.write_all(b"go\n")?;
        stdin.flush()?;
        Ok(())
    }

    /// Writes a line to the program's stdin.
    pub fn send(&mut self, line: &str) -> Result<()> {
        let stdin = self.stdin.as_mut().context("stdin already closed")?;
        stdin.write_all(line.as_bytes())?;
        stdin.flush()?;
        Ok(())
    }

    /// Waits for the program to exit on its own.
    pub fn wait(&mut self) -> Result<std::process::ExitStatus> {
        Ok(self.child.wait()?)
    }

    /// Reads the next JSON line of the program's stdout.
    pub fn read_json(&mut self) -> Result<Value> {
        let mut line = String::new();
        let n = self.stdout.read_line(&mut line)?;
        ensure!(n > 0, "the Go program closed its stdout");
        serde_json::from_str(&line).with_context(|| format!("not JSON: {line}"))
    }

    /// Closes stdin (the program exits) and waits for it.
    pub fn finish(mut self) -> Result<()> {
        drop(self.stdin.take());
        let status = self.child.wait()?;
        ensure!(status.success(), "the Go program failed: {status}");
        Ok(())
    }
}

impl Drop for GoProgram {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// The `gort` binary under test (built by `cargo xtask test`; `GORT_BIN` overrides).
pub fn gort_bin() -> PathBuf {
    let bin = std::env::var_os("GORT_BIN")
        .map(PathBuf::from)
        .unwrap_or_else(|| workspace_root().join("target/debug/gort"));
    assert!(
        bin.exists(),
        "{} does not exist: run `cargo xtask test` (it builds the eBPF object and gort)",
        bin.display()
    );
    bin
}

/// A running `gort run`.
pub struct Gort {
    child: Child,
    pub base: String,
}

impl Gort {
    /// Starts `gort run ARGS --listen 127.0.0.1:<free port>` and waits until it serves.
    pub fn start(args: &[&str]) -> Result<Gort> {
        Gort::start_with_env(args, &[])
    }

    /// [`Gort::start`] with more environment variables.
    pub fn start_with_env(args: &[&str], env: &[(&str, &str)]) -> Result<Gort> {
        let port = free_port()?;
        let listen = format!("127.0.0.1:{port}");
        let child = Command::new(gort_bin())
            .arg("run")
            .args(args)
            .args(["--listen", &listen])
            .envs(env.iter().copied())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .context("start gort")?;
        let mut gort = Gort {
            child,
            base: format!("http://{listen}"),
        };
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            if let Some(status) = gort.child.try_wait()? {
                let mut err = String::new();
                gort.child
                    .stderr
                    .take()
                    .map(|mut e| e.read_to_string(&mut err));
                bail!("gort exited ({status}) before serving: {err}");
            }
            if gort.get("/healthz").is_ok() {
                return Ok(gort);
            }
            ensure!(Instant::now() < deadline, "gort did not serve within 30 s");
            thread::sleep(Duration::from_millis(50));
        }
    }

    /// Attaches to one process; returns once its probes are attached.
    pub fn attach(pid: u32, extra: &[&str]) -> Result<Gort> {
        let pid = pid.to_string();
        let mut args = vec!["--pid", &pid];
        args.extend_from_slice(extra);
        // gort binds, attaches, then serves: serving means attached.
        Gort::start(&args)
    }

    pub fn get(&self, path: &str) -> Result<String> {
        let mut resp = ureq::get(&format!("{}{path}", self.base)).call()?;
        Ok(resp.body_mut().read_to_string()?)
    }

    pub fn get_bytes(&self, path: &str) -> Result<Vec<u8>> {
        let mut resp = ureq::get(&format!("{}{path}", self.base)).call()?;
        Ok(resp.body_mut().with_config().limit(1 << 30).read_to_vec()?)
    }

    pub fn get_json(&self, path: &str) -> Result<Value> {
        Ok(serde_json::from_str(&self.get(path)?)?)
    }

    /// Resident memory of the gort process, in KiB.
    pub fn rss_kib(&self) -> Result<u64> {
        let status = std::fs::read_to_string(format!("/proc/{}/status", self.child.id()))?;
        let line = status
            .lines()
            .find(|l| l.starts_with("VmRSS:"))
            .context("no VmRSS")?;
        Ok(line
            .split_whitespace()
            .nth(1)
            .context("malformed VmRSS")?
            .parse()?)
    }

    pub fn metrics(&self) -> Result<Metrics> {
        Ok(Metrics::parse(&self.get("/metrics")?))
    }

    /// gort's process id.
    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// Kills gort with SIGKILL (no chance to clean up) and waits for it.
    pub fn kill(mut self) -> Result<()> {
        self.child.kill()?;
        self.child.wait()?;
        Ok(())
    }

    /// Stops gort with SIGTERM, as a service manager would; returns what it printed on stderr.
    pub fn stop(mut self) -> Result<String> {
        let status = Command::new("kill")
            .arg(self.child.id().to_string())
            .status()?;
        ensure!(status.success(), "kill failed: {status}");
        let status = self.child.wait()?;
        let mut err = String::new();
        if let Some(mut e) = self.child.stderr.take() {
            e.read_to_string(&mut err)?;
        }
        ensure!(
            status.success(),
            "gort exited with {status} after SIGTERM: {err}"
        );
        Ok(err)
    }
}

impl Drop for Gort {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Samples of a Prometheus/OpenMetrics text exposition: (name, sorted labels) → value.
#[derive(Debug, Default)]
pub struct Metrics(pub BTreeMap<(String, BTreeMap<String, String>), f64>);

impl Metrics {
    pub fn parse(text: &str) -> Metrics {
        let mut m = BTreeMap::new();
        for line in text
            .lines()
            .filter(|l| !l.starts_with('#') && !l.is_empty())
        {
            // Drop an exemplar (`... # {..} v`).
            let line = line.split(" # ").next().unwrap_or(line);
            let (series, value) = line.rsplit_once(' ').expect("sample line has a value");
            let (name, labels) = match series.split_once('{') {
                Some((n, rest)) => (n, parse_labels(rest.trim_end_matches('}'))),
                None => (series, BTreeMap::new()),
            };
            let value = match value {
                "+Inf" => f64::INFINITY,
                v => v.parse().unwrap_or(f64::NAN),
            };
            m.insert((name.to_string(), labels), value);
        }
        Metrics(m)
    }

    /// The value of the one series of `name` whose labels include all of `labels`.
    pub fn get(&self, name: &str, labels: &[(&str, &str)]) -> Option<f64> {
        let mut found = self.0.iter().filter(|((n, l), _)| {
            n == name
                && labels
                    .iter()
                    .all(|(k, v)| l.get(*k).map(String::as_str) == Some(*v))
        });
        let first = found.next().map(|(_, v)| *v);
        assert!(
            found.next().is_none(),
            "more than one series of {name} matches {labels:?}"
        );
        first
    }

    /// The sum of the series of `name` whose labels include all of `labels`.
    pub fn sum(&self, name: &str, labels: &[(&str, &str)]) -> f64 {
        self.all(name, labels).iter().map(|(_, v)| v).sum()
    }

    /// All series of `name` whose labels include all of `labels`.
    pub fn all(
        &self,
        name: &str,
        labels: &[(&str, &str)],
    ) -> Vec<(&BTreeMap<String, String>, f64)> {
        self.0
            .iter()
            .filter(|((n, l), _)| {
                n == name
                    && labels
                        .iter()
                        .all(|(k, v)| l.get(*k).map(String::as_str) == Some(*v))
            })
            .map(|((_, l), v)| (l, *v))
            .collect()
    }
}

fn parse_labels(s: &str) -> BTreeMap<String, String> {
    let mut out = BTreeMap::new();
    let mut rest = s;
    while let Some((key, after)) = rest.split_once("=\"") {
        let mut value = String::new();
        let mut chars = after.char_indices();
        let mut end = after.len();
        while let Some((i, c)) = chars.next() {
            match c {
                '\\' => {
                    if let Some((_, n)) = chars.next() {
                        value.push(match n {
                            'n' => '\n',
                            other => other,
                        });
                    }
                }
                '"' => {
                    end = i + 1;
                    break;
                }
                c => value.push(c),
            }
        }
        out.insert(key.trim_start_matches(',').trim().to_string(), value);
        rest = &after[end..];
    }
    out
}

/// A TCP port free on loopback right now.
pub fn free_port() -> Result<u16> {
    Ok(TcpListener::bind("127.0.0.1:0")?.local_addr()?.port())
}

/// The independent OTLP receiver (`tests/otlp/receiver.py`: the official protobuf
/// definitions from PyPI's `opentelemetry-proto`, and grpcio), collecting what it decodes.
pub struct OtlpReceiver {
    child: Child,
    pub grpc_port: u16,
    pub http_port: u16,
    received: std::sync::Arc<Mutex<Vec<Value>>>,
}

impl OtlpReceiver {
    /// Starts the receiver, on the given ports (0: any free one).
    pub fn start(grpc_port: u16, http_port: u16) -> Result<OtlpReceiver> {
        let python = workspace_root().join("target/toolchains/python");
        ensure!(
            python.join(".installed").exists(),
            "the OTLP receiver's Python packages are not installed at {}: run `cargo xtask setup`",
            python.display()
        );
        let mut child = Command::new("python3")
            .arg(workspace_root().join("tests/otlp/receiver.py"))
            .args(["--grpc-port", &grpc_port.to_string()])
            .args(["--http-port", &http_port.to_string()])
            .env("PYTHONPATH", &python)
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .spawn()
            .context("start the OTLP receiver")?;
        let mut stdout = BufReader::new(child.stdout.take().expect("piped"));
        let mut line = String::new();
        stdout.read_line(&mut line)?;
        let ports: Value =
            serde_json::from_str(&line).with_context(|| format!("receiver said `{line}`"))?;
        let received = std::sync::Arc::new(Mutex::new(Vec::new()));
        let sink = received.clone();
        thread::spawn(move || {
            for line in stdout.lines().map_while(Result::ok) {
                if let Ok(v) = serde_json::from_str(&line) {
                    sink.lock().unwrap_or_else(|e| e.into_inner()).push(v);
                }
            }
        });
        Ok(OtlpReceiver {
            child,
            grpc_port: ports["grpc_port"].as_u64().context("grpc port")? as u16,
            http_port: ports["http_port"].as_u64().context("http port")? as u16,
            received,
        })
    }

    /// Every export received so far, decoded.
    pub fn received(&self) -> Vec<Value> {
        self.received
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .clone()
    }

    /// Every span received so far, each with its resource's attributes under `resource`.
    pub fn spans(&self) -> Vec<Value> {
        let mut out = Vec::new();
        for export in self.received().iter().filter(|e| e["signal"] == "traces") {
            for r in export["resources"].as_array().into_iter().flatten() {
                for scope in r["scopes"].as_array().into_iter().flatten() {
                    for span in scope["spans"].as_array().into_iter().flatten() {
                        let mut span = span.clone();
                        span["resource"] = r["resource"].clone();
                        out.push(span);
                    }
                }
            }
        }
        out
    }
}

impl Drop for OtlpReceiver {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Polls `check` until it returns Ok or `timeout` passes; returns the last error then.
pub fn eventually<T>(timeout: Duration, mut check: impl FnMut() -> Result<T>) -> Result<T> {
    let deadline = Instant::now() + timeout;
    loop {
        match check() {
            Ok(v) => return Ok(v),
            Err(e) if Instant::now() >= deadline => {
                return Err(e.context(format!("still failing after {timeout:?}")));
            }
            Err(_) => thread::sleep(Duration::from_millis(100)),
        }
    }
}

/// A cgroup laid out as the kubelet lays out a container's (cgroupfs driver, in the `pids`
/// hierarchy): `kubepods/besteffort/pod<uid>/<container id>`. Removed on drop.
pub struct PodCgroup(PathBuf);

impl PodCgroup {
    /// Moves `pid` into the cgroup of container `container_id` of pod `pod_uid`.
    pub fn enter(pid: u32, pod_uid: &str, container_id: &str) -> Result<PodCgroup> {
        let dir = std::path::Path::new("/sys/fs/cgroup/pids/kubepods/besteffort")
            .join(format!("pod{pod_uid}"))
            .join(container_id);
        std::fs::create_dir_all(&dir).with_context(|| format!("mkdir {}", dir.display()))?;
        std::fs::write(dir.join("cgroup.procs"), pid.to_string())?;
        Ok(PodCgroup(dir))
    }
}

impl Drop for PodCgroup {
    fn drop(&mut self) {
        // Empty once the program has exited.
        for dir in self.0.ancestors().take(4) {
            let _ = std::fs::remove_dir(dir);
        }
    }
}

/// A Prometheus server scraping one target every second, with its data in a fresh directory.
pub struct Prometheus {
    child: Child,
    pub base: String,
    dir: PathBuf,
}

impl Prometheus {
    /// Starts it (exemplar storage on), scraping `target` (`host:port`), and waits until ready.
    pub fn start(target: &str) -> Result<Prometheus> {
        let port = free_port()?;
        let dir = std::env::temp_dir().join(format!("gort-prometheus-{port}"));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir)?;
        let config = dir.join("prometheus.yml");
        std::fs::write(
            &config,
            format!(
                "global:\n  scrape_interval: 1s\n  scrape_timeout: 1s\n\
                 scrape_configs:\n  - job_name: gort\n    static_configs:\n      \
                 - targets: ['{target}']\n"
            ),
        )?;
        let child = Command::new("prometheus")
            .arg(format!("--config.file={}", config.display()))
            .arg(format!(
                "--storage.tsdb.path={}",
                dir.join("data").display()
            ))
            .arg(format!("--web.listen-address=127.0.0.1:{port}"))
            .arg("--enable-feature=exemplar-storage")
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .context("start prometheus (Debian package `prometheus`, installed by xtask)")?;
        let p = Prometheus {
            child,
            base: format!("http://127.0.0.1:{port}"),
            dir,
        };
        eventually(Duration::from_secs(30), || {
            ureq::get(&format!("{}/-/ready", p.base)).call()?;
            Ok(())
        })?;
        Ok(p)
    }

    /// GET of the HTTP API: its `data`, or an error unless `status` is `success`.
    pub fn api(&self, path: &str, query: &[(&str, &str)]) -> Result<Value> {
        let mut req = ureq::get(&format!("{}{path}", self.base));
        for (k, v) in query {
            req = req.query(*k, *v);
        }
        let v: Value = serde_json::from_str(&req.call()?.body_mut().read_to_string()?)?;
        ensure!(v["status"] == "success", "{path}: {v}");
        Ok(v["data"].clone())
    }

    /// An instant query at `at` (Unix seconds): each series' labels and value.
    pub fn query_at(&self, query: &str, at: f64) -> Result<Vec<(Value, f64)>> {
        let data = self.api(
            "/api/v1/query",
            &[("query", query), ("time", &format!("{at:.3}"))],
        )?;
        Ok(data["result"]
            .as_array()
            .into_iter()
            .flatten()
            .filter_map(|s| {
                let v = s["value"][1].as_str()?.parse().ok()?;
                Some((s["metric"].clone(), v))
            })
            .collect())
    }
}

/// Every `expr` of every panel (rows included) of a Grafana dashboard of
/// `deploy/grafana/dashboards/`: (panel title, expr, whether it asks for exemplars).
pub fn dashboard_queries(dashboard: &Value) -> Vec<(String, String, bool)> {
    fn walk(panels: &Value, out: &mut Vec<(String, String, bool)>) {
        for p in panels.as_array().into_iter().flatten() {
            let title = p["title"].as_str().unwrap_or("").to_string();
            for t in p["targets"].as_array().into_iter().flatten() {
                if let Some(expr) = t["expr"].as_str() {
                    out.push((title.clone(), expr.to_string(), t["exemplar"] == true));
                }
            }
            walk(&p["panels"], out);
        }
    }
    let mut out = Vec::new();
    walk(&dashboard["panels"], &mut out);
    out
}

/// gort's dashboard (`deploy/grafana/dashboards/gort.json`).
pub fn gort_dashboard() -> Result<Value> {
    let path = workspace_root().join("deploy/grafana/dashboards/gort.json");
    serde_json::from_str(&std::fs::read_to_string(&path)?)
        .with_context(|| format!("{}", path.display()))
}

/// A panel's query as Grafana sends it with every variable at "All" and `rate_window` for
/// `$__rate_interval`.
pub fn grafana_query(expr: &str, rate_window: &str) -> String {
    expr.replace("$__rate_interval", rate_window)
        .replace("$__interval", "15s")
        .replace("$cluster", ".*")
        .replace("$namespace", ".*")
        .replace("$service", ".*")
        .replace("$pid", ".*")
}

impl Drop for Prometheus {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_openmetrics() {
        let m = Metrics::parse(
            "# TYPE x counter\nx_total{pid=\"1\",reason=\"chan receive\"} 3\nh_bucket{le=\"+Inf\",a=\"q\\\"x\"} 2 # {trace_id=\"ab\"} 0.5\nup 1\n# EOF\n",
        );
        assert_eq!(m.get("x_total", &[("reason", "chan receive")]), Some(3.0));
        assert_eq!(m.get("h_bucket", &[("a", "q\"x")]), Some(2.0));
        assert_eq!(m.get("up", &[]), Some(1.0));
        assert_eq!(m.get("x_total", &[("reason", "select")]), None);
    }
}
