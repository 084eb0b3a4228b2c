//! `gort run --all`: every Go process of the host, found at start and as they start, released
//! as they exit, selected by --include/--exclude, labelled with their container and pod.

use std::{
    io::{BufRead, BufReader, Write},
    net::TcpListener,
    sync::{Arc, Mutex},
    time::Duration,
};

use anyhow::{Result, ensure};
use gort_e2e::{
    GoProgram, Gort, Metrics, PodCgroup, Variant, build_go_program, eventually, serial,
    workspace_root,
};

const POD_UID: &str = "0b1c2d3e-4f50-4617-8293-a4b5c6d7e8f9";
const CONTAINER_ID: &str = "5e6f708192a3b4c5d6e7f8091a2b3c4d5e6f708192a3b4c5d6e7f8091a2b3c4d";
const TOKEN: &str = "gort-test-token";
const NODE: &str = "node-7";

/// The `v1` `PodList` the fake API server returns: the pod whose cgroup the first program
/// runs in, with the container, and another pod.
fn pod_list() -> String {
    serde_json::json!({
        "kind": "PodList", "apiVersion": "v1", "metadata": {"resourceVersion": "1"},
        "items": [
            {"metadata": {"name": "checkout-5f7d9", "namespace": "shop", "uid": POD_UID},
             "spec": {"nodeName": NODE, "containers": [{"name": "api", "image": "x"}]},
             "status": {"phase": "Running", "containerStatuses": [
                 {"name": "api", "containerID": format!("containerd://{CONTAINER_ID}"),
                  "ready": true, "restartCount": 0, "image": "x", "imageID": "y"}]}},
            {"metadata": {"name": "other", "namespace": "kube-system", "uid": "u-2"},
             "spec": {"nodeName": NODE, "containers": [{"name": "c", "image": "x"}]}}
        ]
    })
    .to_string()
}

/// A minimal Kubernetes API server answering the pod list of one node to one bearer token;
/// records the request lines it got.
fn fake_api_server() -> Result<(String, Arc<Mutex<Vec<String>>>)> {
    let listener = TcpListener::bind("127.0.0.1:0")?;
    let url = format!("http://{}", listener.local_addr()?);
    let seen = Arc::new(Mutex::new(Vec::new()));
    let log = seen.clone();
    std::thread::spawn(move || {
        for stream in listener.incoming() {
            let Ok(mut stream) = stream else { continue };
            let mut reader = BufReader::new(stream.try_clone().expect("clone"));
            let mut request_line = String::new();
            let _ = reader.read_line(&mut request_line);
            let mut authorized = false;
            loop {
                let mut line = String::new();
                if reader.read_line(&mut line).unwrap_or(0) == 0 || line == "\r\n" {
                    break;
                }
                if line.to_ascii_lowercase().trim() == format!("authorization: bearer {TOKEN}") {
                    authorized = true;
                }
            }
            let want = format!("GET /api/v1/pods?fieldSelector=spec.nodeName%3D{NODE} ");
            let (status, body) = if !authorized {
                ("401 Unauthorized", "{}".to_string())
            } else if request_line.starts_with(&want) {
                ("200 OK", pod_list())
            } else {
                ("404 Not Found", "{}".to_string())
            };
            log.lock()
                .unwrap()
                .push(format!("{} {status}", request_line.trim()));
            let _ = write!(
                stream,
                "HTTP/1.1 {status}\r\nContent-Type: application/json\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
                body.len()
            );
        }
    });
    Ok((url, seen))
}

/// A copy of `exe` whose build info claims Go 1.20 (it still runs; gort must refuse it).
fn claiming_go_1_20(exe: &std::path::Path) -> Result<std::path::PathBuf> {
    use std::os::unix::fs::PermissionsExt;
    let mut data = std::fs::read(exe)?;
    let (from, to) = (b"go1.22.10", b"go1.20.10");
    let mut n = 0;
    let mut i = 0;
    while i + from.len() <= data.len() {
        if &data[i..i + from.len()] == from {
            data[i..i + from.len()].copy_from_slice(to);
            n += 1;
        }
        i += 1;
    }
    ensure!(n > 0, "no version string in {}", exe.display());
    let out = workspace_root().join("target/e2e-bin/parks-claims-go1.20");
    std::fs::write(&out, data)?;
    std::fs::set_permissions(&out, std::fs::Permissions::from_mode(0o755))?;
    Ok(out)
}

/// Parks of `pid` in `chan receive`.
fn chan_receives(m: &Metrics, pid: u32, service: &str) -> Option<f64> {
    m.get(
        "gort_goroutine_blocks_total",
        &[
            ("pid", &pid.to_string()),
            ("service", service),
            ("reason", "chan receive"),
        ],
    )
}

/// Lets `program` run its 10 parks per scenario and checks gort saw exactly its 10 chan
/// receives (counted from a settled baseline: gort may have seen the runtime start up).
fn check_measured(gort: &Gort, program: &mut GoProgram, service: &str) -> Result<()> {
    let pid = program.pid;
    let baseline = eventually(Duration::from_secs(10), || {
        let m = gort.metrics()?;
        ensure!(
            target_up(&m, pid) == Some(1.0),
            "{service} (pid {pid}) not watched yet"
        );
        let first = chan_receives(&m, pid, service);
        std::thread::sleep(Duration::from_millis(200));
        let second = chan_receives(&gort.metrics()?, pid, service);
        ensure!(first == second, "{service}: start-up parks not settled");
        Ok(second.unwrap_or_default())
    })?;
    program.proceed()?;
    let report = program.read_json()?;
    let want = report["totals"]["chan receive"]["count"]
        .as_f64()
        .unwrap_or_default();
    ensure!(want == 10.0, "{service} reported {want} chan receives");
    eventually(Duration::from_secs(10), || {
        let seen = chan_receives(&gort.metrics()?, pid, service).unwrap_or_default() - baseline;
        ensure!(seen == want, "{service} (pid {pid}): {seen} of {want}");
        Ok(())
    })
}

fn target_up(m: &Metrics, pid: u32) -> Option<f64> {
    m.all("gort_target_up", &[])
        .into_iter()
        .find(|(labels, _)| labels.get("pid").map(String::as_str) == Some(&pid.to_string()))
        .map(|(_, v)| v)
}

/// Three Go services of three Go releases (one in a Kubernetes pod's cgroup, one started
/// after gort, one killed and started again), an excluded one, a Go binary gort refuses and a
/// process that is not Go: each treated as it should be, with the right labels, and no
/// series left of the dead one after the grace period.
#[test]
fn all_mode_follows_the_fleet() {
    let _serial = serial();
    run().unwrap_or_else(|e| panic!("{e:#}"));
}

fn run() -> Result<()> {
    // Build everything first: the Go toolchain is itself a Go program gort would watch.
    let alpha_exe = build_go_program("parks", "1.22.10", Variant::DEFAULT);
    let beta_exe = build_go_program("parks", "1.24.11", Variant::STRIPPED);
    let gamma_exe = build_go_program("parks", "1.27.3", Variant::PIE_STRIPPED);
    let refused_exe = claiming_go_1_20(&alpha_exe)?;
    let args = ["-workers=1", "-ops=10", "-block=5ms"];
    let env = |service: &'static str| [("GOGC", "off"), ("OTEL_SERVICE_NAME", service)];

    let mut alpha = GoProgram::start(&alpha_exe, &args, &env("alpha"))?;
    let _pod = PodCgroup::enter(alpha.pid, POD_UID, CONTAINER_ID)?;
    let mut beta = GoProgram::start(&beta_exe, &args, &env("beta"))?;
    let skipped = GoProgram::start(&alpha_exe, &args, &env("skipped"))?;
    let refused = GoProgram::start(&refused_exe, &args, &env("refused"))?;
    let mut not_go = std::process::Command::new("sleep").arg("60").spawn()?;

    let (api, api_requests) = fake_api_server()?;
    let token_file = workspace_root().join("target/e2e-bin/k8s-token");
    std::fs::write(&token_file, TOKEN)?;
    let gort = Gort::start_with_env(
        &[
            "--all",
            "--exclude",
            "service=skip*",
            "--rescan-interval",
            "300ms",
            "--retain-exited-process-for",
            "3s",
            "--kubernetes-api",
            &api,
            "--node-name",
            NODE,
        ],
        &[(
            "GORT_KUBERNETES_TOKEN_FILE",
            token_file.to_str().expect("utf-8"),
        )],
    )?;

    // Started after gort: found at its exec.
    let mut gamma = GoProgram::start(&gamma_exe, &args, &env("gamma"))?;

    let m = gort.metrics()?;
    ensure!(
        target_up(&m, skipped.pid).is_none(),
        "excluded process watched"
    );
    ensure!(
        target_up(&m, refused.pid).is_none(),
        "refused process watched"
    );
    ensure!(target_up(&m, not_go.id()).is_none(), "sleep watched");

    check_measured(&gort, &mut alpha, "alpha")?;
    check_measured(&gort, &mut beta, "beta")?;
    check_measured(&gort, &mut gamma, "gamma")?;

    // Labels: the pod's names from the API server, the container id from the cgroup.
    let m = gort.metrics()?;
    let alpha_up = m
        .all("gort_target_up", &[])
        .into_iter()
        .find(|(l, _)| l.get("service").map(String::as_str) == Some("alpha"))
        .map(|(l, _)| l.clone());
    let labels = alpha_up.ok_or_else(|| anyhow::anyhow!("no alpha series"))?;
    let label = |k: &str| labels.get(k).map(String::as_str);
    ensure!(label("pid") == Some(&*alpha.pid.to_string()));
    ensure!(label("container_id") == Some(CONTAINER_ID), "{labels:?}");
    ensure!(label("k8s_namespace") == Some("shop"), "{labels:?}");
    ensure!(label("k8s_pod") == Some("checkout-5f7d9"), "{labels:?}");
    ensure!(label("k8s_container") == Some("api"), "{labels:?}");
    let beta_labels = m
        .all("gort_target_up", &[])
        .into_iter()
        .find(|(l, _)| l.get("service").map(String::as_str) == Some("beta"))
        .map(|(l, _)| l.clone())
        .ok_or_else(|| anyhow::anyhow!("no beta series"))?;
    ensure!(
        !beta_labels.contains_key("container_id") && !beta_labels.contains_key("k8s_pod"),
        "beta runs in no container: {beta_labels:?}"
    );
    let requests = api_requests.lock().unwrap().clone();
    ensure!(
        !requests.is_empty() && requests.iter().all(|r| r.ends_with("200 OK")),
        "API requests: {requests:?}"
    );

    // Beta dies and starts again: the new process is watched; the old one's series go after
    // the grace period.
    let old_beta = beta.pid;
    drop(beta);
    eventually(Duration::from_secs(5), || {
        ensure!(
            target_up(&gort.metrics()?, old_beta) == Some(0.0),
            "still up"
        );
        Ok(())
    })?;
    let mut beta = GoProgram::start(&beta_exe, &args, &env("beta"))?;
    check_measured(&gort, &mut beta, "beta")?;
    eventually(Duration::from_secs(8), || {
        let m = gort.metrics()?;
        let stale: Vec<_> =
            m.0.keys()
                .filter(|(_, l)| l.get("pid").map(String::as_str) == Some(&*old_beta.to_string()))
                .collect();
        ensure!(stale.is_empty(), "stale series: {stale:?}");
        Ok(())
    })?;
    let procs = gort.get_json("/api/v1/processes")?;
    let live: Vec<u64> = procs
        .as_array()
        .into_iter()
        .flatten()
        .filter(|p| p["state"] == "attached")
        .filter_map(|p| p["pid"].as_u64())
        .collect();
    let mut want = vec![alpha.pid, beta.pid, gamma.pid]
        .into_iter()
        .map(u64::from)
        .collect::<Vec<_>>();
    want.sort_unstable();
    let mut live_sorted = live.clone();
    live_sorted.sort_unstable();
    ensure!(live_sorted == want, "attached {live:?}, want {want:?}");

    // Many rescans later: the refused binary was reported once, with the reason.
    let _ = not_go.kill();
    let _ = not_go.wait();
    drop((alpha, beta, gamma, skipped));
    drop(refused);
    let err = gort.stop()?;
    let refusals: Vec<_> = err
        .lines()
        .filter(|l| l.contains("parks-claims-go1.20"))
        .collect();
    ensure!(
        refusals.len() == 1 && refusals[0].contains("go1.20.10; gort supports go1.21 to go1.27"),
        "refusal lines: {refusals:?}\n{err}"
    );
    Ok(())
}
