//! The node contract: what a machine is given to become a node, shared by the operator's side
//! (`bootstrap`, the cloud controller) and the node's side (`node`): the config file
//! `/etc/clusterctl/node.toml`, the paths the node software keeps its state in, and an HA
//! master's etcd member naming ([`etcd`]).
//!
//! The config file is rendered by `clusterctl create` and read by
//! `clusterctl node master|worker --config ...`.
//!
//! The file is mode 0600 (a worker's holds its join token). Unknown keys are errors, and the role
//! must agree with the sections: a master has `[master]` and no `[worker]`, a worker the reverse.
//!
//! ```toml
//! cluster = "demo"
//! role = "worker"
//! node_name = "demo-default-0"
//! instance_id = "i-0123456789abcdef0"
//! internal_ip = "10.0.1.10"
//! zone = "us-east-1a"
//! pool = "default"
//! data_dir = "/var/lib/clusterctl"
//!
//! [labels]
//! "clusterctl.io/pool" = "default"
//!
//! [api]
//! endpoint = "demo-api-0123.elb.localhost.localstack.cloud"  # the LB: DNS name or IP, no port
//! port = 6443
//!
//! [worker]
//! join_token = "abcdef.0123456789abcdef"
//! ca_hash = "sha256:<64 hex digits>"
//! heartbeat_seconds = 2
//! ```
//!
//! A master has instead:
//!
//! ```toml
//! [master]
//! listen = "0.0.0.0:6443"
//! serving_names = ["demo-api-0123.elb.localhost.localstack.cloud", "localhost"]
//! serving_ips = ["10.0.1.5", "127.0.0.1"]
//! node_grace_seconds = 40
//! ```

pub mod etcd;

use std::collections::BTreeMap;
use std::fmt;
use std::net::{IpAddr, SocketAddr};
use std::path::{Path, PathBuf};
use std::str::FromStr;

use serde::{Deserialize, Serialize};
use thiserror::Error;

use crate::pki::JoinToken;

/// Where the node config lives on a node.
pub const CONFIG_PATH: &str = "/etc/clusterctl/node.toml";
/// The node software's state folder (PKI, store) unless configured.
pub const DEFAULT_DATA_DIR: &str = "/var/lib/clusterctl";
/// Where a master keeps the cluster's PKI (the CA, the admin's and etcd's certificates).
pub const PKI_DIR: &str = "/var/lib/clusterctl/pki";
/// Where a node keeps the image tarballs loaded into the cluster (`clusterctl image load`).
pub const IMAGES_DIR: &str = "/var/lib/clusterctl/images";
/// Where a master's API server writes its audit log (0600; rotated beside it as `.1`, `.2`, `.3`).
pub const AUDIT_LOG: &str = "/var/log/clusterctl/audit.log";

/// Errors reading, checking or writing a node config.
#[derive(Debug, Error)]
pub enum NodeConfigError {
    #[error("reading node config {path}")]
    Read { path: PathBuf, #[source] source: std::io::Error },
    #[error("parsing node config {path}")]
    Parse { path: PathBuf, #[source] source: Box<toml::de::Error> },
    #[error("node config {path}: {problem}")]
    Invalid { path: PathBuf, problem: String },
    #[error("rendering the node config of {node}")]
    Render { node: String, #[source] source: toml::ser::Error },
}

/// What a node runs.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum NodeRole {
    /// The API server, scheduler and controllers (and its own agent).
    Master,
    /// The agent that runs pods.
    Worker,
}

impl NodeRole {
    /// `master` or `worker`, as in the config file, the unit name and `clusterctl node <role>`.
    pub fn as_str(self) -> &'static str {
        match self {
            NodeRole::Master => "master",
            NodeRole::Worker => "worker",
        }
    }
}

impl fmt::Display for NodeRole {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl FromStr for NodeRole {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        match s {
            "master" => Ok(NodeRole::Master),
            "worker" => Ok(NodeRole::Worker),
            other => Err(format!("unknown node role {other:?} (expected master or worker)")),
        }
    }
}

/// The node's config.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct NodeConfig {
    /// The cluster's name.
    pub cluster: String,
    pub role: NodeRole,
    /// The node's name in the API, e.g. `demo-default-0`.
    pub node_name: String,
    /// The cloud's id of the machine (`i-...`).
    pub instance_id: String,
    /// The address other nodes reach this one at.
    pub internal_ip: IpAddr,
    pub zone: String,
    /// The pool the machine belongs to.
    pub pool: String,
    /// Where the node software keeps its state (PKI, store).
    #[serde(default = "default_data_dir")]
    pub data_dir: PathBuf,
    /// Labels of the node's Node object.
    #[serde(default)]
    pub labels: BTreeMap<String, String>,
    pub api: ApiEndpoint,
    /// Present exactly on masters.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub master: Option<MasterSettings>,
    /// Present exactly on workers.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub worker: Option<WorkerSettings>,
    /// The cluster's address blocks, as the node's pod network needs them (absent in the
    /// configs of nodes installed before pods had addresses of their own).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub network: Option<NodeNetwork>,
    /// Registries with a CA of their own, which the node's container runtime trusts for them.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub registries: Vec<crate::spec::TrustedRegistry>,
    /// An endpoint other than AWS's for the node's own cloud calls (its agent's ECR tokens, on the
    /// instance's role): only the LocalStack harness's, as the machine reaches it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cloud_endpoint: Option<String>,
}

/// The cluster's address blocks as every node sees them: pods' traffic to the cluster CIDR and
/// to the VPC keeps its source address (it is routed); only the rest leaves through the node's
/// address.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct NodeNetwork {
    /// The VPC's block.
    pub vpc_cidr: ipnet::Ipv4Net,
    /// The block every node's pod range (`spec.podCIDR`) is taken from.
    pub cluster_cidr: ipnet::Ipv4Net,
    /// The services' cluster IPs.
    pub service_cidr: ipnet::Ipv4Net,
}

impl NodeNetwork {
    /// The blocks of a cluster spec.
    pub fn of(spec: &crate::spec::Network) -> Self {
        NodeNetwork { vpc_cidr: spec.vpc_cidr, cluster_cidr: spec.cluster_cidr, service_cidr: spec.service_cidr }
    }
}

/// How nodes reach the API: through the load balancer.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ApiEndpoint {
    /// The LB's address: a DNS name or an IP, without port.
    pub endpoint: String,
    /// The API port (the LB's listener and the masters' port).
    pub port: u16,
}

impl ApiEndpoint {
    /// `https://<endpoint>:<port>`, with an IPv6 address in brackets.
    pub fn url(&self) -> String {
        match self.endpoint.parse::<IpAddr>() {
            Ok(IpAddr::V6(ip)) => format!("https://[{ip}]:{}", self.port),
            _ => format!("https://{}:{}", self.endpoint, self.port),
        }
    }
}

/// A master's settings.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct MasterSettings {
    /// Where the API server listens, e.g. `0.0.0.0:6443`.
    pub listen: SocketAddr,
    /// DNS names in the serving certificate (the LB's, `localhost`); IPs here count as IPs.
    #[serde(default)]
    pub serving_names: Vec<String>,
    /// IP addresses in the serving certificate (the masters', `127.0.0.1`).
    #[serde(default)]
    pub serving_ips: Vec<IpAddr>,
    /// How old a node's lease may get before the node is NotReady.
    #[serde(default = "default_grace")]
    pub node_grace_seconds: u64,
    /// How long a node may stay NotReady before its pods are evicted (deleted, so that their
    /// controllers replace them elsewhere): the `tolerationSeconds` every pod gets for the
    /// `not-ready` and `unreachable` taints unless it says otherwise.
    #[serde(default = "default_pod_eviction")]
    pub pod_eviction_seconds: u64,
    /// No eviction in a zone with no Ready node or with more than two not-ready nodes making up
    /// at least this share of it (percent); the same share of the whole cluster stops them all.
    #[serde(default = "default_unhealthy_zone_percent")]
    pub unhealthy_zone_percent: u32,
    /// How long the node client certificates the API server signs are valid (the agents renew
    /// them at two thirds); None: a year. A test-only setting (`CLUSTERCTL_NODE_CERT_SECONDS`
    /// when `create` runs).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub node_cert_seconds: Option<u64>,
    /// The cloud controller manager's settings; without them it does not run.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cloud: Option<CloudSettings>,
    /// This master's etcd member (highly available control planes); without it the API server keeps
    /// its objects in the embedded store.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub etcd: Option<EtcdSettings>,
    /// Minutes between the scheduled snapshots of the store kept on this master (0: none).
    #[serde(default = "default_snapshot_minutes")]
    pub snapshot_every_minutes: u64,
    /// How many scheduled snapshots are kept.
    #[serde(default = "default_snapshots_kept")]
    pub snapshots_kept: u32,
}

fn default_snapshot_minutes() -> u64 {
    60
}
fn default_snapshots_kept() -> u32 {
    5
}

/// A master's etcd member. Peer and client traffic is TLS with certificates from the cluster CA
/// (made on the master by `clusterctl node etcd-setup`); the member's name is its node's name.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct EtcdSettings {
    /// Every member the cluster starts with, `name=https://<ip>:2380`, this one included.
    pub initial_cluster: Vec<String>,
    /// `new` when the members form the cluster together (create); `existing` when this member
    /// joins a running cluster (a replaced master).
    pub initial_cluster_state: String,
    /// The client URLs of every member, as this master's API server dials them.
    pub endpoints: Vec<String>,
}

/// How the master's cloud controller manager reaches the cloud and makes machines.
///
/// On AWS the master uses its instance's credentials (no key is ever written here); against the
/// LocalStack harness the endpoint as the node reaches it and LocalStack's fixed `test` credentials.
#[derive(Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CloudSettings {
    /// The region of the cluster.
    pub region: String,
    /// An endpoint other than AWS's.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub endpoint_url: Option<String>,
    /// Fixed credentials: only LocalStack's `test` pair.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub access_key_id: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub secret_access_key: Option<String>,
    /// The cluster spec as validated by `create` (pools, network, images), for launching machines.
    #[serde(default = "default_spec_path")]
    pub spec_path: PathBuf,
    /// The cluster's dedicated SSH private key, for bootstrapping new machines.
    #[serde(default = "default_ssh_key_path")]
    pub ssh_key_path: PathBuf,
}

/// Where `create` puts the master's copy of the cluster spec.
pub const SPEC_PATH: &str = "/etc/clusterctl/cluster.toml";
/// Where `create` puts the cluster's SSH key on the master.
pub const SSH_KEY_PATH: &str = "/etc/clusterctl/ssh/id_ed25519";

fn default_spec_path() -> PathBuf {
    SPEC_PATH.into()
}
fn default_ssh_key_path() -> PathBuf {
    SSH_KEY_PATH.into()
}

impl fmt::Debug for CloudSettings {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("CloudSettings")
            .field("region", &self.region)
            .field("endpoint_url", &self.endpoint_url)
            .field("access_key_id", &self.access_key_id)
            .field("secret_access_key", &self.secret_access_key.as_ref().map(|_| "<hidden>"))
            .field("spec_path", &self.spec_path)
            .field("ssh_key_path", &self.ssh_key_path)
            .finish()
    }
}

/// A worker's settings. `Debug` hides the join token.
#[derive(Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct WorkerSettings {
    /// The bootstrap token the worker joins with (`abcdef.0123456789abcdef`).
    pub join_token: String,
    /// The cluster CA the worker trusts, by hash (`sha256:<hex>`, as kubeadm's).
    pub ca_hash: String,
    /// How often the agent renews its lease.
    #[serde(default = "default_heartbeat")]
    pub heartbeat_seconds: u64,
}

impl fmt::Debug for WorkerSettings {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("WorkerSettings")
            .field("join_token", &"<redacted>")
            .field("ca_hash", &self.ca_hash)
            .field("heartbeat_seconds", &self.heartbeat_seconds)
            .finish()
    }
}

impl WorkerSettings {
    /// The join token, parsed.
    pub fn token(&self) -> Result<JoinToken, crate::pki::PkiError> {
        JoinToken::parse(&self.join_token)
    }
}

fn default_data_dir() -> PathBuf {
    PathBuf::from(DEFAULT_DATA_DIR)
}

fn default_grace() -> u64 {
    40
}

fn default_pod_eviction() -> u64 {
    300
}

fn default_unhealthy_zone_percent() -> u32 {
    55
}

fn default_heartbeat() -> u64 {
    2
}

fn is_ca_hash(s: &str) -> bool {
    s.strip_prefix("sha256:").is_some_and(|h| h.len() == 64 && h.bytes().all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b)))
}

impl NodeConfig {
    /// Reads and checks a config file.
    pub fn load(path: &Path) -> Result<Self, NodeConfigError> {
        let text = std::fs::read_to_string(path).map_err(|source| NodeConfigError::Read { path: path.to_path_buf(), source })?;
        Self::parse(&text, path)
    }

    /// Parses and checks config text (errors name the file as `node.toml`).
    pub fn from_toml(text: &str) -> Result<Self, NodeConfigError> {
        Self::parse(text, Path::new("node.toml"))
    }

    fn parse(text: &str, path: &Path) -> Result<Self, NodeConfigError> {
        let config: NodeConfig = toml::from_str(text).map_err(|e| NodeConfigError::Parse { path: path.to_path_buf(), source: Box::new(e) })?;
        config.validate().map_err(|problem| NodeConfigError::Invalid { path: path.to_path_buf(), problem })?;
        Ok(config)
    }

    /// The config as TOML, after checking it (so that no invalid config is ever installed).
    pub fn to_toml(&self) -> Result<String, NodeConfigError> {
        self.validate().map_err(|problem| NodeConfigError::Invalid { path: PathBuf::from(format!("of node {}", self.node_name)), problem })?;
        toml::to_string(self).map_err(|source| NodeConfigError::Render { node: self.node_name.clone(), source })
    }

    /// Checks what serde cannot: the role against the sections, and the values' shapes.
    pub fn validate(&self) -> Result<(), String> {
        for (field, value) in [("cluster", &self.cluster), ("node_name", &self.node_name), ("instance_id", &self.instance_id), ("api.endpoint", &self.api.endpoint)] {
            if value.trim().is_empty() {
                return Err(format!("{field} is empty"));
            }
        }
        if self.api.endpoint.contains(['/', ' ']) || (self.api.endpoint.contains(':') && self.api.endpoint.parse::<IpAddr>().is_err()) {
            return Err(format!("api.endpoint {:?} must be a host name or IP address without scheme or port", self.api.endpoint));
        }
        if self.api.port == 0 {
            return Err("api.port is 0".into());
        }
        if !self.data_dir.is_absolute() {
            return Err(format!("data_dir {} is not an absolute path", self.data_dir.display()));
        }
        match (self.role, &self.master, &self.worker) {
            (NodeRole::Master, None, _) => return Err("role is master but there is no [master] section".into()),
            (NodeRole::Master, Some(_), Some(_)) => return Err("role is master but there is a [worker] section".into()),
            (NodeRole::Worker, _, None) => return Err("role is worker but there is no [worker] section".into()),
            (NodeRole::Worker, Some(_), Some(_)) => return Err("role is worker but there is a [master] section".into()),
            _ => {}
        }
        if let Some(m) = &self.master {
            if m.node_grace_seconds == 0 {
                return Err("master.node_grace_seconds is 0".into());
            }
            if let Some(e) = &m.etcd {
                if !matches!(e.initial_cluster_state.as_str(), "new" | "existing") {
                    return Err(format!("master.etcd.initial_cluster_state is {:?}, expected \"new\" or \"existing\"", e.initial_cluster_state));
                }
                if e.endpoints.is_empty() {
                    return Err("master.etcd.endpoints is empty".into());
                }
                if !e.initial_cluster.iter().any(|m| m.split_once('=').is_some_and(|(name, _)| name == self.node_name)) {
                    return Err(format!("master.etcd.initial_cluster has no member named {}", self.node_name));
                }
            }
            if let Some(bad) = m.serving_names.iter().find(|n| n.trim().is_empty() || (n.contains(['/', ' ', ':']) && n.parse::<IpAddr>().is_err())) {
                return Err(format!("master.serving_names has {bad:?}, which is neither a DNS name nor an IP address"));
            }
        }
        if let Some(w) = &self.worker {
            w.token().map_err(|e| format!("worker.join_token: {e}"))?;
            if !is_ca_hash(&w.ca_hash) {
                return Err(format!("worker.ca_hash {:?} is not of the form sha256:<64 lowercase hex digits>", w.ca_hash));
            }
            if w.heartbeat_seconds == 0 {
                return Err("worker.heartbeat_seconds is 0".into());
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const HASH: &str = "sha256:0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef";

    fn worker() -> NodeConfig {
        NodeConfig {
            cluster: "demo".into(),
            role: NodeRole::Worker,
            node_name: "demo-default-0".into(),
            instance_id: "i-0123456789abcdef0".into(),
            internal_ip: "10.0.1.10".parse().unwrap(),
            zone: "us-east-1a".into(),
            pool: "default".into(),
            data_dir: DEFAULT_DATA_DIR.into(),
            labels: BTreeMap::from([("clusterctl.io/pool".into(), "default".into()), ("node-role.kubernetes.io/worker".into(), String::new())]),
            api: ApiEndpoint { endpoint: "demo-api.elb.localhost.localstack.cloud".into(), port: 6443 },
            master: None,
            worker: Some(WorkerSettings { join_token: "abcdef.0123456789abcdef".into(), ca_hash: HASH.into(), heartbeat_seconds: 2 }),
            network: Some(NodeNetwork {
                vpc_cidr: "10.0.0.0/16".parse().unwrap(),
                cluster_cidr: "100.64.0.0/16".parse().unwrap(),
                service_cidr: "10.96.0.0/16".parse().unwrap(),
            }),
            registries: vec![crate::spec::TrustedRegistry { host: "registry.example:5443".into(), ca: "-----BEGIN CERTIFICATE-----\nMIIB\n-----END CERTIFICATE-----\n".into(), mirror_of: Some("docker.io".into()) }],
            cloud_endpoint: Some("http://172.17.0.1:4566".into()),
        }
    }

    fn master() -> NodeConfig {
        NodeConfig {
            role: NodeRole::Master,
            node_name: "demo-master-0".into(),
            master: Some(MasterSettings {
                listen: "0.0.0.0:6443".parse().unwrap(),
                serving_names: vec!["demo-api.elb.localhost.localstack.cloud".into(), "localhost".into()],
                serving_ips: vec!["10.0.1.5".parse().unwrap(), "127.0.0.1".parse().unwrap()],
                node_grace_seconds: 10,
                pod_eviction_seconds: 10,
                unhealthy_zone_percent: 55,
                node_cert_seconds: None,
                cloud: None,
                etcd: None,
                snapshot_every_minutes: 60,
                snapshots_kept: 5,
            }),
            worker: None,
            ..worker()
        }
    }

    #[test]
    fn worker_and_master_configs_round_trip_through_toml() {
        for config in [worker(), master()] {
            let text = config.to_toml().unwrap();
            assert_eq!(NodeConfig::from_toml(&text).unwrap(), config, "{text}");
        }
    }

    #[test]
    fn the_documented_example_parses_with_defaults() {
        let text = format!(
            r#"
cluster = "demo"
role = "worker"
node_name = "demo-default-0"
instance_id = "i-1"
internal_ip = "10.0.1.10"
zone = "us-east-1a"
pool = "default"

[api]
endpoint = "10.0.0.100"
port = 6443

[worker]
join_token = "abcdef.0123456789abcdef"
ca_hash = "{HASH}"
"#
        );
        let config = NodeConfig::from_toml(&text).unwrap();
        assert_eq!(config.data_dir, PathBuf::from("/var/lib/clusterctl"));
        assert_eq!(config.worker.as_ref().unwrap().heartbeat_seconds, 2);
        assert!(config.labels.is_empty());
        assert_eq!(config.api.url(), "https://10.0.0.100:6443");
        assert_eq!(config.worker.unwrap().token().unwrap().id(), "abcdef");
    }

    #[test]
    fn master_defaults_to_kubernetes_grace_and_toleration() {
        let text = master().to_toml().unwrap().replace("node_grace_seconds = 10\n", "").replace("pod_eviction_seconds = 10\n", "");
        let master = NodeConfig::from_toml(&text).unwrap().master.unwrap();
        assert_eq!((master.node_grace_seconds, master.pod_eviction_seconds), (40, 300));
    }

    #[test]
    fn unknown_keys_are_refused() {
        let text = worker().to_toml().unwrap();
        let err = NodeConfig::from_toml(&format!("colour = \"blue\"\n{text}")).unwrap_err();
        assert!(matches!(err, NodeConfigError::Parse { .. }), "{err}");
        let err = NodeConfig::from_toml(&text.replace("heartbeat_seconds", "heartbeat")).unwrap_err();
        assert!(matches!(err, NodeConfigError::Parse { .. }), "{err}");
    }

    #[test]
    fn the_role_must_agree_with_the_sections() {
        let mut c = worker();
        c.role = NodeRole::Master;
        assert!(c.validate().unwrap_err().contains("no [master] section"));
        let mut c = master();
        c.worker = worker().worker;
        assert!(c.validate().unwrap_err().contains("[worker] section"));
        let mut c = worker();
        c.worker = None;
        assert!(c.validate().unwrap_err().contains("no [worker] section"));
        let mut c = worker();
        c.master = master().master;
        assert!(c.validate().unwrap_err().contains("[master] section"));
        assert!(c.to_toml().is_err(), "an invalid config is never rendered");
    }

    #[test]
    fn a_bad_token_hash_or_endpoint_is_refused_naming_the_field() {
        let mut c = worker();
        c.worker.as_mut().unwrap().join_token = "short.token".into();
        assert!(c.validate().unwrap_err().starts_with("worker.join_token"));
        let mut c = worker();
        c.worker.as_mut().unwrap().ca_hash = "sha1:abc".into();
        assert!(c.validate().unwrap_err().starts_with("worker.ca_hash"));
        let mut c = worker();
        c.api.endpoint = "https://lb:6443".into();
        assert!(c.validate().unwrap_err().starts_with("api.endpoint"));
        let mut c = worker();
        c.data_dir = "relative".into();
        assert!(c.validate().unwrap_err().starts_with("data_dir"));
    }

    #[test]
    fn load_names_the_file_in_errors() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("node.toml");
        std::fs::write(&path, "role = \"worker\"\n").unwrap();
        let err = NodeConfig::load(&path).unwrap_err();
        assert!(err.to_string().contains(&path.display().to_string()), "{err}");
        let err = NodeConfig::load(&dir.path().join("missing.toml")).unwrap_err();
        assert!(matches!(err, NodeConfigError::Read { .. }));
        std::fs::write(&path, worker().to_toml().unwrap()).unwrap();
        assert_eq!(NodeConfig::load(&path).unwrap(), worker());
    }

    #[test]
    fn debug_output_hides_the_join_token() {
        let text = format!("{:?}", worker());
        assert!(!text.contains("abcdef.0123456789abcdef"), "{text}");
        assert!(text.contains("redacted"));
    }

    #[test]
    fn ipv6_endpoints_get_brackets_in_the_url() {
        let api = ApiEndpoint { endpoint: "fd00::1".into(), port: 6443 };
        assert_eq!(api.url(), "https://[fd00::1]:6443");
    }

    #[test]
    fn roles_print_and_parse_as_in_the_file() {
        assert_eq!(NodeRole::Master.to_string(), "master");
        assert_eq!("worker".parse::<NodeRole>().unwrap(), NodeRole::Worker);
        assert!("boss".parse::<NodeRole>().is_err());
    }
}
