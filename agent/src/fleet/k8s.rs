//! Kubernetes names of a process's pod and container (`k8s_namespace`, `k8s_pod`,
//! `k8s_container`): its cgroup gives the pod uid and container id; the API server's list of
//! the pods on this node gives their names. In a cluster the API server and the node name
//! come from the service account and the downward API (`NODE_NAME`).

use std::{
    collections::HashMap,
    path::PathBuf,
    time::{Duration, Instant},
};

use serde::Deserialize;

use crate::target::process::ContainerIdentity;

/// Where the service account's credentials are mounted in a pod.
const SERVICE_ACCOUNT: &str = "/var/run/secrets/kubernetes.io/serviceaccount";
/// The pod list is fetched again for an unknown pod at most this often.
const REFRESH_AT_MOST_EVERY: Duration = Duration::from_secs(5);
/// The API server may be slow; gort must not wait on it long.
const TIMEOUT: Duration = Duration::from_secs(3);

/// How to reach the API server.
#[derive(Debug, Clone)]
pub struct KubeConfig {
    /// e.g. `https://10.96.0.1:443`.
    pub api: String,
    pub token_file: Option<PathBuf>,
    pub ca_file: Option<PathBuf>,
    /// Only this node's pods are listed.
    pub node: Option<String>,
}

impl KubeConfig {
    /// `--kubernetes-api` if given, else the in-cluster service (KUBERNETES_SERVICE_HOST);
    /// None outside a cluster.
    pub fn resolve(api: Option<&str>, node: Option<&str>) -> Option<KubeConfig> {
        let sa = PathBuf::from(SERVICE_ACCOUNT);
        let existing = |p: PathBuf| p.exists().then_some(p);
        let api = match api {
            Some(a) => a.trim_end_matches('/').to_string(),
            None => {
                let host = std::env::var("KUBERNETES_SERVICE_HOST").ok()?;
                let port = std::env::var("KUBERNETES_SERVICE_PORT").unwrap_or("443".into());
                let host = if host.contains(':') {
                    format!("[{host}]")
                } else {
                    host
                };
                format!("https://{host}:{port}")
            }
        };
        Some(KubeConfig {
            api,
            token_file: std::env::var_os("GORT_KUBERNETES_TOKEN_FILE")
                .map(PathBuf::from)
                .or_else(|| existing(sa.join("token"))),
            ca_file: existing(sa.join("ca.crt")),
            node: node.map(str::to_string),
        })
    }
}

/// The names of one container of a pod.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PodNames {
    pub namespace: String,
    pub pod: String,
    /// Container id (64 hex digits, runtime prefix removed) → container name.
    pub containers: HashMap<String, String>,
}

/// Pods by uid, from a `PodList`.
#[derive(Debug, Default)]
pub struct PodIndex(pub HashMap<String, PodNames>);

#[derive(Deserialize)]
struct PodList {
    #[serde(default)]
    items: Vec<Pod>,
}

#[derive(Deserialize)]
struct Pod {
    metadata: Metadata,
    #[serde(default)]
    status: Option<PodStatus>,
}

#[derive(Deserialize)]
struct Metadata {
    #[serde(default)]
    name: String,
    #[serde(default)]
    namespace: String,
    #[serde(default)]
    uid: String,
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct PodStatus {
    #[serde(default)]
    container_statuses: Vec<ContainerStatus>,
    #[serde(default)]
    init_container_statuses: Vec<ContainerStatus>,
    #[serde(default)]
    ephemeral_container_statuses: Vec<ContainerStatus>,
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct ContainerStatus {
    name: String,
    #[serde(default, rename = "containerID")]
    container_id: Option<String>,
}

impl PodIndex {
    /// Parses the API server's `v1` `PodList` JSON.
    pub fn from_pod_list(json: &[u8]) -> Result<PodIndex, String> {
        let list: PodList =
            serde_json::from_slice(json).map_err(|e| format!("not a PodList: {e}"))?;
        let mut pods = HashMap::new();
        for pod in list.items {
            let mut containers = HashMap::new();
            if let Some(status) = pod.status {
                for c in status
                    .container_statuses
                    .into_iter()
                    .chain(status.init_container_statuses)
                    .chain(status.ephemeral_container_statuses)
                {
                    // `containerd://<id>`, `cri-o://<id>`, `docker://<id>`.
                    if let Some(id) = c
                        .container_id
                        .as_deref()
                        .and_then(|id| id.rsplit('/').next())
                    {
                        if !id.is_empty() {
                            containers.insert(id.to_ascii_lowercase(), c.name);
                        }
                    }
                }
            }
            pods.insert(
                pod.metadata.uid,
                PodNames {
                    namespace: pod.metadata.namespace,
                    pod: pod.metadata.name,
                    containers,
                },
            );
        }
        Ok(PodIndex(pods))
    }

    /// Fills in the names of `identity`'s pod and container; false if the pod is unknown.
    pub fn name(&self, identity: &mut ContainerIdentity) -> bool {
        let Some(pod) = identity.pod_uid.as_ref().and_then(|uid| self.0.get(uid)) else {
            return false;
        };
        identity.k8s_namespace = Some(pod.namespace.clone());
        identity.k8s_pod = Some(pod.pod.clone());
        identity.k8s_container = identity
            .container_id
            .as_ref()
            .and_then(|id| pod.containers.get(id))
            .cloned();
        true
    }
}

/// Names pods from the API server, listing this node's pods again when one is unknown.
pub struct PodNamer {
    config: KubeConfig,
    agent: ureq::Agent,
    index: PodIndex,
    last_fetch: Option<Instant>,
    /// The last error, reported once until it changes.
    last_error: Option<String>,
}

impl PodNamer {
    pub fn new(config: KubeConfig) -> PodNamer {
        let mut builder = ureq::Agent::config_builder()
            .timeout_global(Some(TIMEOUT))
            .http_status_as_error(false);
        if let Some(pem) = config.ca_file.as_ref().and_then(|f| std::fs::read(f).ok()) {
            builder = builder.tls_config(crate::tls::trusting(&pem));
        }
        PodNamer {
            config,
            agent: builder.build().into(),
            index: PodIndex::default(),
            last_fetch: None,
            last_error: None,
        }
    }

    /// Fills in `identity`'s Kubernetes names if it runs in a pod the API server knows.
    pub fn name(&mut self, identity: &mut ContainerIdentity) {
        if identity.pod_uid.is_none() {
            return;
        }
        let known_container = |index: &PodIndex, identity: &ContainerIdentity| {
            let pod = identity.pod_uid.as_ref().and_then(|uid| index.0.get(uid));
            pod.is_some_and(|p| {
                identity
                    .container_id
                    .as_ref()
                    .is_none_or(|id| p.containers.contains_key(id))
            })
        };
        let may_refresh = self
            .last_fetch
            .is_none_or(|t| t.elapsed() >= REFRESH_AT_MOST_EVERY);
        if !known_container(&self.index, identity) && may_refresh {
            self.last_fetch = Some(Instant::now());
            match self.fetch() {
                Ok(index) => {
                    self.index = index;
                    self.last_error = None;
                }
                Err(e) => {
                    if self.last_error.as_ref() != Some(&e) {
                        eprintln!("gort: cannot list pods from {}: {e}", self.config.api);
                    }
                    self.last_error = Some(e);
                }
            }
        }
        self.index.name(identity);
    }

    fn fetch(&self) -> Result<PodIndex, String> {
        let mut url = format!("{}/api/v1/pods", self.config.api);
        if let Some(node) = &self.config.node {
            url.push_str("?fieldSelector=spec.nodeName%3D");
            url.push_str(&percent_encode(node));
        }
        let mut request = self.agent.get(&url).header("Accept", "application/json");
        // Read each time: projected service account tokens are rotated.
        if let Some(file) = &self.config.token_file {
            let token = std::fs::read_to_string(file)
                .map_err(|e| format!("cannot read the token {}: {e}", file.display()))?;
            request = request.header("Authorization", format!("Bearer {}", token.trim()));
        }
        let mut response = request.call().map_err(|e| e.to_string())?;
        let status = response.status();
        let body = response
            .body_mut()
            .with_config()
            .limit(64 << 20)
            .read_to_vec()
            .map_err(|e| e.to_string())?;
        if !status.is_success() {
            let text = String::from_utf8_lossy(&body[..body.len().min(200)]).into_owned();
            return Err(format!("HTTP {status}: {text}"));
        }
        PodIndex::from_pod_list(&body)
    }
}

fn percent_encode(s: &str) -> String {
    let mut out = String::new();
    for b in s.bytes() {
        if b.is_ascii_alphanumeric() || matches!(b, b'-' | b'.' | b'_' | b'~') {
            out.push(b as char);
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    const POD_LIST: &str = r#"{
      "kind": "PodList", "apiVersion": "v1", "metadata": {"resourceVersion": "42"},
      "items": [
        {"metadata": {"name": "checkout-7d9f", "namespace": "shop",
                      "uid": "1f2e3d4c-0000-4000-8000-00000000abcd"},
         "spec": {"nodeName": "node-1"},
         "status": {"phase": "Running",
           "containerStatuses": [
             {"name": "app", "containerID": "containerd://AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA"},
             {"name": "sidecar", "containerID": "containerd://bbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbb"}],
           "initContainerStatuses": [{"name": "init", "containerID": "cri-o://cccccccccccccccccccccccccccccccccccccccccccccccccccccccccccccccc"}]}},
        {"metadata": {"name": "pending", "namespace": "shop", "uid": "u2"},
         "status": {"containerStatuses": [{"name": "app"}]}}
      ]}"#;

    #[test]
    fn names_containers_from_a_pod_list() {
        let index = PodIndex::from_pod_list(POD_LIST.as_bytes()).unwrap();
        let mut id = ContainerIdentity {
            container_id: Some("a".repeat(64)),
            pod_uid: Some("1f2e3d4c-0000-4000-8000-00000000abcd".into()),
            ..Default::default()
        };
        assert!(index.name(&mut id));
        assert_eq!(id.k8s_namespace.as_deref(), Some("shop"));
        assert_eq!(id.k8s_pod.as_deref(), Some("checkout-7d9f"));
        assert_eq!(id.k8s_container.as_deref(), Some("app"));
        id.container_id = Some("c".repeat(64));
        assert!(index.name(&mut id));
        assert_eq!(id.k8s_container.as_deref(), Some("init"));
        // A pod not (yet) listed, and a container not (yet) reported.
        let mut unknown = ContainerIdentity {
            pod_uid: Some("nope".into()),
            ..Default::default()
        };
        assert!(!index.name(&mut unknown));
        assert_eq!(unknown.k8s_pod, None);
        id.container_id = Some("d".repeat(64));
        assert!(index.name(&mut id));
        assert_eq!(id.k8s_container, None);
    }

    #[test]
    fn rejects_what_is_not_a_pod_list() {
        assert!(PodIndex::from_pod_list(b"<html>").is_err());
        assert!(PodIndex::from_pod_list(b"{}").unwrap().0.is_empty());
    }

    #[test]
    fn encodes_node_names() {
        assert_eq!(percent_encode("node-1.example"), "node-1.example");
        assert_eq!(percent_encode("a b&c"), "a%20b%26c");
    }
}
