//! What `deploy/` ships, checked with the tools a cluster operator would use, offline: the
//! alert rules with `promtool` (Debian's `prometheus`), the manifests with yamllint and the
//! Kubernetes OpenAPI schemas (`kubernetes-validate`, strict), and the DaemonSet's
//! capabilities by running the real agent with exactly those capabilities.

use std::{
    path::{Path, PathBuf},
    process::Command,
    time::Duration,
};

use anyhow::{Context, Result, ensure};
use gort_e2e::{
    GoProgram, Variant, build_go_program, eventually, free_port, serial, workspace_root,
};
use serde_json::Value;

fn deploy() -> PathBuf {
    workspace_root().join("deploy")
}

/// Runs a tool; fails with its output unless it succeeds.
fn run(cmd: &mut Command) -> Result<String> {
    let out = cmd.output().with_context(|| format!("run {cmd:?}"))?;
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    ensure!(out.status.success(), "{cmd:?} failed:\n{text}");
    Ok(text)
}

fn python() -> Command {
    let mut cmd = Command::new("python3");
    cmd.env(
        "PYTHONPATH",
        workspace_root().join("target/toolchains/python"),
    );
    cmd
}

/// The documents of a YAML file, as JSON (PyYAML reads it: an independent parser).
fn yaml_documents(path: &Path) -> Result<Vec<Value>> {
    let out = run(python().args([
        "-c",
        "import json, sys, yaml; print(json.dumps([d for d in yaml.safe_load_all(open(sys.argv[1])) if d is not None]))",
    ]).arg(path))?;
    Ok(serde_json::from_str(&out)?)
}

#[test]
fn alert_rules_pass_promtool() {
    let dir = deploy().join("prometheus");
    let out = run(Command::new("promtool")
        .args(["check", "rules", "alerts.yaml"])
        .current_dir(&dir))
    .unwrap();
    assert!(out.contains("SUCCESS: 10 rules found"), "{out}");
    // Each rule fires on the series that should fire it, and on no other.
    let out = run(Command::new("promtool")
        .args(["test", "rules", "alerts_test.yaml"])
        .current_dir(&dir))
    .unwrap();
    assert!(out.contains("SUCCESS"), "{out}");
    // Every rule is exercised by the tests and carries a runbook.
    let rules = yaml_documents(&dir.join("alerts.yaml")).unwrap();
    let tests = std::fs::read_to_string(dir.join("alerts_test.yaml")).unwrap();
    for group in rules[0]["groups"].as_array().unwrap() {
        for rule in group["rules"].as_array().unwrap() {
            let name = rule["alert"].as_str().unwrap();
            assert!(
                tests.contains(&format!("alertname: {name}\n")),
                "{name} is not tested"
            );
            assert!(
                rule["annotations"]["runbook"]
                    .as_str()
                    .is_some_and(|r| !r.is_empty()),
                "{name} has no runbook"
            );
        }
    }
}

#[test]
fn manifests_are_valid() {
    let dir = deploy().join("kubernetes");
    run(python()
        .args(["-m", "yamllint", "--strict", "-c"])
        .arg(deploy().join(".yamllint.yaml"))
        .arg(deploy()))
    .unwrap();

    // kustomization.yaml lists every manifest of the directory.
    let kustomization = &yaml_documents(&dir.join("kustomization.yaml")).unwrap()[0];
    let mut listed: Vec<String> = kustomization["resources"]
        .as_array()
        .unwrap()
        .iter()
        .map(|r| r.as_str().unwrap().to_string())
        .collect();
    listed.sort();
    let mut files: Vec<String> = std::fs::read_dir(&dir)
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .filter(|f| f.ends_with(".yaml") && f != "kustomization.yaml")
        .collect();
    files.sort();
    assert_eq!(listed, files);

    // The built-in kinds against the schemas of an old and a new Kubernetes release, strict
    // (unknown fields are errors). The PodMonitor is the Prometheus Operator's, whose schema
    // is not among them: checked by hand below.
    let builtin: Vec<PathBuf> = files
        .iter()
        .filter(|f| *f != "podmonitor.yaml")
        .map(|f| dir.join(f))
        .collect();
    for version in ["1.28.0", "1.35.0"] {
        let out = run(python()
            .args(["-m", "kubernetes_validate", "--strict", "-k", version])
            .args(&builtin))
        .unwrap();
        let passed = out.matches(" passed for resource ").count();
        assert_eq!(passed, 8, "{out}");
    }

    let docs = |f: &str| yaml_documents(&dir.join(f)).unwrap();
    let daemonset = &docs("daemonset.yaml")[0];
    let pod = &daemonset["spec"]["template"];
    let container = &pod["spec"]["containers"][0];
    assert_eq!(pod["spec"]["hostPID"], true);
    assert_eq!(container["securityContext"]["privileged"], false);
    assert_eq!(
        container["securityContext"]["capabilities"]["drop"][0],
        "ALL"
    );
    let pod_labels = &pod["metadata"]["labels"];
    let port = container["ports"][0]["name"].as_str().unwrap();

    // The PodMonitor selects gort's pods and scrapes the port by its name.
    let monitor = &docs("podmonitor.yaml")[0];
    assert_eq!(monitor["apiVersion"], "monitoring.coreos.com/v1");
    for (k, v) in monitor["spec"]["selector"]["matchLabels"]
        .as_object()
        .unwrap()
    {
        assert_eq!(&pod_labels[k], v, "PodMonitor selects {k}={v}");
    }
    assert_eq!(monitor["spec"]["podMetricsEndpoints"][0]["port"], port);
    // So does the Service.
    let service = &docs("service.yaml")[0];
    for (k, v) in service["spec"]["selector"].as_object().unwrap() {
        assert_eq!(&pod_labels[k], v, "Service selects {k}={v}");
    }
    assert_eq!(service["spec"]["ports"][0]["targetPort"], port);
    // The NetworkPolicy guards gort's pods and port.
    let policy = &docs("networkpolicy.yaml")[0];
    for (k, v) in policy["spec"]["podSelector"]["matchLabels"]
        .as_object()
        .unwrap()
    {
        assert_eq!(&pod_labels[k], v, "NetworkPolicy selects {k}={v}");
    }
    assert_eq!(policy["spec"]["ingress"][0]["ports"][0]["port"], port);
    // The RBAC grants reading pods, nothing more, to the DaemonSet's service account.
    let rbac = docs("rbac.yaml");
    let role = rbac.iter().find(|d| d["kind"] == "ClusterRole").unwrap();
    assert_eq!(role["rules"].as_array().unwrap().len(), 1);
    assert_eq!(role["rules"][0]["resources"], serde_json::json!(["pods"]));
    assert_eq!(
        role["rules"][0]["verbs"],
        serde_json::json!(["get", "list"])
    );
    let binding = rbac
        .iter()
        .find(|d| d["kind"] == "ClusterRoleBinding")
        .unwrap();
    assert_eq!(
        binding["subjects"][0]["name"],
        pod["spec"]["serviceAccountName"]
    );
    // Every key of the ConfigMap is an environment variable gort reads.
    let help = run(Command::new(gort_e2e::gort_bin()).args(["run", "--help"])).unwrap();
    let config = &docs("configmap.yaml")[0];
    for key in config["data"].as_object().unwrap().keys() {
        assert!(
            key.starts_with("OTEL_") || help.contains(&format!("[env: {key}=")),
            "gort does not read {key}"
        );
    }

    // The image runs what the DaemonSet runs by default.
    let dockerfile = std::fs::read_to_string(workspace_root().join("Dockerfile")).unwrap();
    assert_eq!(dockerfile.matches("\nFROM ").count(), 2, "two stages");
    let cmd = dockerfile
        .lines()
        .find_map(|l| l.strip_prefix("CMD "))
        .unwrap();
    let cmd: Value = serde_json::from_str(cmd).unwrap();
    assert_eq!(cmd, container["args"]);
}

/// The DaemonSet's capabilities are enough: gort run --all with exactly those (and uid 0)
/// and the ConfigMap's settings attaches to a Go program and measures it; without
/// CAP_SYS_PTRACE it says what is missing.
#[test]
fn daemonset_capabilities_are_enough() {
    let _serial = serial();
    let daemonset = &yaml_documents(&deploy().join("kubernetes/daemonset.yaml")).unwrap()[0];
    let caps: Vec<String> = daemonset["spec"]["template"]["spec"]["containers"][0]
        ["securityContext"]["capabilities"]["add"]
        .as_array()
        .unwrap()
        .iter()
        .map(|c| c.as_str().unwrap().to_ascii_lowercase())
        .collect();
    // And the ConfigMap's settings, as the DaemonSet passes them (empty ones included).
    let config = &yaml_documents(&deploy().join("kubernetes/configmap.yaml")).unwrap()[0];
    let settings: Vec<(String, String)> = config["data"]
        .as_object()
        .unwrap()
        .iter()
        .map(|(k, v)| (k.clone(), v.as_str().unwrap().to_string()))
        .collect();
    let exe = build_go_program("parks", "1.22.10", Variant::DEFAULT);
    let mut program = GoProgram::start(
        &exe,
        &["-workers=1", "-ops=10", "-block=5ms"],
        &[("OTEL_SERVICE_NAME", "capped")],
    )
    .unwrap();

    let start = |caps: &[String]| -> (std::process::Child, String) {
        let port = free_port().unwrap();
        let bounding = format!(
            "-all,{}",
            caps.iter()
                .map(|c| format!("+{c}"))
                .collect::<Vec<_>>()
                .join(",")
        );
        let child = Command::new("setpriv")
            .arg(format!("--bounding-set={bounding}"))
            .arg("--inh-caps=-all")
            .arg(gort_e2e::gort_bin())
            .envs(settings.iter().map(|(k, v)| (k, v)))
            .args(["run", "--all", "--include", "service=capped", "--listen"])
            .arg(format!("127.0.0.1:{port}"))
            .stderr(std::process::Stdio::piped())
            .spawn()
            .unwrap();
        (child, format!("http://127.0.0.1:{port}"))
    };
    let get = |base: &str, path: &str| -> Result<String> {
        Ok(ureq::get(&format!("{base}{path}"))
            .call()?
            .body_mut()
            .read_to_string()?)
    };

    let (mut gort, base) = start(&caps);
    let pid = program.pid.to_string();
    eventually(Duration::from_secs(20), || {
        let m = get(&base, "/metrics")?;
        ensure!(
            m.contains(&format!(
                "gort_target_up{{pid=\"{pid}\",service=\"capped\"}} 1"
            )),
            "not attached"
        );
        Ok(())
    })
    .unwrap();
    program.proceed().unwrap();
    let report = program.read_json().unwrap();
    assert_eq!(report["totals"]["chan receive"]["count"], 10);
    eventually(Duration::from_secs(10), || {
        let m = gort_e2e::Metrics::parse(&get(&base, "/metrics")?);
        let n = m
            .get(
                "gort_goroutine_blocks_total",
                &[("pid", &pid), ("reason", "chan receive")],
            )
            .unwrap_or(0.0);
        ensure!(n == 10.0, "{n} chan receives");
        // The ConfigMap's budget is on: the estimates the dashboards read, all measured.
        let estimated = m
            .get(
                "gort_goroutine_blocks_estimated_total",
                &[("pid", &pid), ("reason", "chan receive")],
            )
            .unwrap_or(0.0);
        ensure!(estimated == 10.0, "{estimated} chan receives estimated");
        Ok(())
    })
    .unwrap();
    let _ = gort.kill();
    let _ = gort.wait();

    // Without CAP_SYS_PTRACE: one clear line, nothing attached.
    let fewer: Vec<String> = caps
        .iter()
        .filter(|c| *c != "sys_ptrace")
        .cloned()
        .collect();
    let (mut gort, base) = start(&fewer);
    eventually(Duration::from_secs(20), || {
        get(&base, "/healthz").map(|_| ())
    })
    .unwrap();
    let _ = Command::new("kill").arg(gort.id().to_string()).status();
    let output = {
        let mut err = String::new();
        use std::io::Read;
        gort.stderr
            .take()
            .unwrap()
            .read_to_string(&mut err)
            .unwrap();
        let _ = gort.wait();
        err
    };
    assert!(
        output.contains("permission denied): gort needs CAP_SYS_PTRACE"),
        "{output}"
    );
    assert!(!output.contains("attached to pid"), "{output}");
    drop(program);
}
