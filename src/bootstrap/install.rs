//! The node software on one machine, over its [`NodeShell`]: the binary (checked by SHA-256,
//! fetched from a master or sent), the systemd units, the node config and the install script, then
//! the script run; a master's own files (the spec copy, the cluster's SSH key) and the cluster CA
//! copied between masters.

use std::io::Write;
use std::net::{IpAddr, SocketAddr};
use std::path::PathBuf;
use std::sync::Arc;

use sha2::{Digest, Sha256};

use super::machines::Machine;
use super::ssh::{self, NodeShell, SharedShell, SshError};
use super::{templates, BootstrapError, DATA_DIR, PKI_DIR};
use crate::nodeconfig::etcd;
use crate::nodeconfig::{ApiEndpoint, CloudSettings, EtcdSettings, MasterSettings, NodeConfig, NodeRole};
use crate::spec::ClusterSpec;

/// How the binary travels to the nodes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Packing {
    /// gzip-compressed (about 40 % of the size): from the operator's machine, whose uplink to the
    /// cloud is the narrow part.
    Gzip,
    /// As it is: from a master to machines of its own VPC, where bytes are cheap and unpacking
    /// 40 MB on every new machine is not (about 0.4 s of CPU each).
    Plain,
}

/// The binary and scripts every node gets, prepared once.
pub struct Artifacts {
    pub(super) binary_sha256: String,
    /// The binary, packed as `staged_path` says.
    binary_staged: Vec<u8>,
    /// Where the binary is uploaded to (the install script unpacks it when the name ends in .gz).
    staged_path: &'static str,
    install_script: String,
}

impl Artifacts {
    pub(super) fn prepare(binary: &std::path::Path, packing: Packing) -> Result<Self, BootstrapError> {
        let raw = std::fs::read(binary).map_err(|e| BootstrapError::Other(format!("reading the binary to install {}: {e}", binary.display())))?;
        let binary_sha256 = hex::encode(Sha256::digest(&raw));
        let (binary_staged, staged_path) = match packing {
            Packing::Gzip => {
                let mut gz = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
                gz.write_all(&raw).map_err(|e| BootstrapError::Other(format!("compressing the binary: {e}")))?;
                (gz.finish().map_err(|e| BootstrapError::Other(format!("compressing the binary: {e}")))?, templates::STAGED_BINARY_PATH)
            }
            Packing::Plain => (raw, templates::STAGED_PLAIN_BINARY_PATH),
        };
        Ok(Artifacts { binary_sha256, binary_staged, staged_path, install_script: templates::install_script() })
    }

    pub(super) async fn prepare_async(binary: PathBuf, packing: Packing) -> Result<Arc<Self>, BootstrapError> {
        ArtifactsTask::start(binary, packing).wait().await
    }
}

/// [`Artifacts`] being prepared (read, hashed, packed) on a blocking thread, so that `create`
/// can start it before the infrastructure converges instead of after (half a second of gzip
/// that was on the critical path).
pub struct ArtifactsTask(tokio::task::JoinHandle<Result<Artifacts, BootstrapError>>);

impl ArtifactsTask {
    pub fn start(binary: PathBuf, packing: Packing) -> Self {
        ArtifactsTask(tokio::task::spawn_blocking(move || Artifacts::prepare(&binary, packing)))
    }

    pub(super) async fn wait(self) -> Result<Arc<Artifacts>, BootstrapError> {
        Ok(Arc::new(self.0.await.map_err(|e| BootstrapError::Other(format!("preparing the node software: {e}")))??))
    }
}

/// Where a joining machine may fetch the binary instead of being sent it: a master's
/// [`crate::apiserver::NODE_BINARY_PATH`], inside the VPC (with a bootstrap token).
#[derive(Debug, Clone)]
pub struct BinaryFetch {
    /// `https://<master's private address>:<port>/clusterctl/v1/binary`.
    pub url: String,
    /// The cluster CA, pinned by the fetch.
    pub ca_pem: String,
}

/// How the binary reached a machine at install.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Delivery {
    /// The installed binary was the one wanted already.
    Installed,
    /// Fetched from the master.
    FromMaster,
    /// Sent over SSH; with why fetching it from the master failed, when that was tried.
    Sent { fetch_failed: Option<String> },
}

/// Installs the node software on one machine (blocking). Returns whether anything changed and
/// how the binary got there (fetched from `fetch` when given, else, or when that fails, sent).
pub(super) fn install(session: &dyn NodeShell, artifacts: &Artifacts, role: NodeRole, config_toml: &str, fetch: Option<(&BinaryFetch, &str)>) -> Result<(bool, Delivery), BootstrapError> {
    let node = session.node().to_string();
    let ssh_err = |step: &str| {
        let node = node.clone();
        let step = step.to_string();
        move |source| BootstrapError::Ssh { node, step, source: Box::new(source) }
    };
    let installed = session.exec(&ssh::sha256_command(&ssh::shell_quote(templates::BINARY_PATH))).map_err(ssh_err("checking the installed binary"))?;
    let mut delivery = Delivery::Installed;
    let mut staged_path = artifacts.staged_path;
    if installed.stdout.trim() != artifacts.binary_sha256 {
        // The node's agent needs the container runtime: on an image that starts Docker on first
        // use (socket activation), it starts now, while the binary travels, instead of when the
        // agent's unit starts. Without Docker the agent says so when it runs.
        // (In the same command as the fetch, when there is one: one SSH command less per machine.)
        let start_docker = "systemctl start --no-block docker.service >/dev/null 2>&1 || true";
        let mut fetch_failed = None;
        if let Some((from, token)) = fetch {
            let script = format!("{start_docker}\n{}", templates::fetch_binary_script(&from.url, &from.ca_pem, token, &artifacts.binary_sha256, templates::STAGED_PLAIN_BINARY_PATH));
            let out = session.sudo_script(&script).map_err(ssh_err("fetching the binary from the master"))?;
            if out.status == 0 {
                delivery = Delivery::FromMaster;
                staged_path = templates::STAGED_PLAIN_BINARY_PATH;
            } else {
                fetch_failed = Some(format!("exit status {}: {}", out.status, out.stderr.trim()));
            }
        } else {
            session.sudo(start_docker).map_err(ssh_err("starting the container runtime"))?;
        }
        if delivery != Delivery::FromMaster {
            session.upload(&artifacts.binary_staged, artifacts.staged_path, 0o644).map_err(ssh_err("uploading the binary"))?;
            delivery = Delivery::Sent { fetch_failed };
        }
    }
    let (unit_name, unit) = templates::unit(role);
    let unit_name = format!("{}/{unit_name}", templates::UNIT_DIR);
    let (etcd_name, etcd_unit) = templates::etcd_unit();
    let etcd_name = format!("{}/{etcd_name}", templates::UNIT_DIR);
    let mut files = vec![
        ssh::FileUpload { contents: unit.as_bytes(), path: &unit_name, mode: 0o644 },
        ssh::FileUpload { contents: config_toml.as_bytes(), path: "/etc/clusterctl/node.toml", mode: 0o600 },
        ssh::FileUpload { contents: artifacts.install_script.as_bytes(), path: templates::INSTALL_SCRIPT_PATH, mode: 0o755 },
    ];
    if role == NodeRole::Master && config_toml.contains("[master.etcd]") {
        files.push(ssh::FileUpload { contents: etcd_unit.as_bytes(), path: &etcd_name, mode: 0o644 });
    }
    session.upload_files(&files).map_err(ssh_err("uploading the systemd unit, the node config and the install script"))?;
    let out = session.sudo(&templates::install_command(role, &artifacts.binary_sha256, staged_path)).map_err(ssh_err("running the install script"))?;
    let changed = templates::install_changed(&out.stdout).ok_or_else(|| BootstrapError::Node { node: node.clone(), step: "running the install script".into(), message: format!("unexpected output: {}", out.stdout.trim()) })?;
    Ok((changed, delivery))
}

/// Where a machine of the LocalStack harness finds the cloud endpoint as it reaches it (the harness's
/// stand-in for the instance metadata service's view of the region's endpoints).
pub const INSTANCE_CLOUD_ENDPOINT: &str = "/etc/clusterctl-instance/cloud-endpoint";

/// The master's copy of the spec: the operator's, less the operator's own key path (the master uses
/// the key `create` uploads to it).
pub(super) fn node_spec_copy(spec: &ClusterSpec) -> Result<String, BootstrapError> {
    let text = std::fs::read_to_string(&spec.source).map_err(|e| BootstrapError::Other(format!("reading {}: {e}", spec.source.display())))?;
    let mut table: toml::Table = text.parse().map_err(|e| BootstrapError::Other(format!("reading {}: {e}", spec.source.display())))?;
    if let Some(ssh) = table.get_mut("ssh").and_then(toml::Value::as_table_mut) {
        ssh.remove("private_key");
    }
    toml::to_string(&table).map_err(|e| BootstrapError::Other(format!("rendering the master's copy of the spec: {e}")))
}

/// How the master's cloud controller reaches the cloud. With an endpoint override (the LocalStack
/// harness) the master gets the endpoint as the machine reaches it, and only LocalStack's fixed
/// `test` credentials, never the operator's; on AWS neither (the instance's own credentials).
pub fn master_cloud_settings(region: &str, operator_endpoint: Option<String>, instance_endpoint: Option<String>, operator_key_id: Option<String>) -> CloudSettings {
    let endpoint_url = machine_endpoint(operator_endpoint, instance_endpoint);
    let test_credentials = endpoint_url.is_some() && operator_key_id.as_deref() == Some("test");
    CloudSettings {
        region: region.into(),
        endpoint_url,
        access_key_id: test_credentials.then(|| "test".into()),
        secret_access_key: test_credentials.then(|| "test".into()),
        spec_path: crate::nodeconfig::SPEC_PATH.into(),
        ssh_key_path: crate::nodeconfig::SSH_KEY_PATH.into(),
    }
}

/// The cloud endpoint a machine's own calls go to: with the operator's endpoint override (the
/// LocalStack harness), the override as the machine reaches it (else the operator's); on AWS none.
fn machine_endpoint(operator_endpoint: Option<String>, instance_endpoint: Option<String>) -> Option<String> {
    operator_endpoint.map(|op| instance_endpoint.map(|i| i.trim().to_string()).filter(|i| !i.is_empty()).unwrap_or(op))
}

/// The environment variable of the test-only node certificate lifetime.
pub const NODE_CERT_SECONDS_ENV: &str = "CLUSTERCTL_NODE_CERT_SECONDS";

/// The node client certificates' lifetime `create` gives the masters: a year unless the
/// test-only [`NODE_CERT_SECONDS_ENV`] says otherwise (at least 120 s).
fn node_cert_seconds() -> Result<Option<u64>, BootstrapError> {
    match std::env::var(NODE_CERT_SECONDS_ENV) {
        Err(_) => Ok(None),
        Ok(v) => match v.trim().parse::<u64>() {
            Ok(s) if s >= 120 => Ok(Some(s)),
            _ => Err(BootstrapError::Other(format!("{NODE_CERT_SECONDS_ENV} must be a number of seconds, at least 120, got {v:?}"))),
        },
    }
}

/// Reads a file as root, or None when it does not exist yet.
pub(super) fn read_root_file(session: &dyn NodeShell, path: &str) -> Result<Option<String>, SshError> {
    let out = session.exec(&format!("sudo -n cat {} 2>/dev/null", ssh::shell_quote(path)))?;
    Ok((out.status == 0).then_some(out.stdout))
}

/// What every master of the cluster is told about the control plane.
#[derive(Debug, Clone)]
pub struct ControlPlane {
    /// Names and addresses in the API servers' serving certificates.
    pub serving_names: Vec<String>,
    pub serving_ips: Vec<IpAddr>,
    /// The API's host (the load balancer's address, else the first master's).
    pub api_host: String,
    /// The etcd members (HA control planes); None keeps the embedded store.
    pub etcd: Option<EtcdSettings>,
}

impl ControlPlane {
    /// The control plane of `masters`: etcd members formed together when there are several.
    pub fn new(spec: &ClusterSpec, masters: &[&Machine], lb_host: Option<&str>, api_host: String) -> Result<Self, BootstrapError> {
        let mut serving_ips: Vec<IpAddr> = Vec::new();
        let mut serving_names: Vec<String> = vec!["localhost".into()];
        for m in masters {
            serving_ips.push(m.private_ip()?);
            if let Ok(a) = m.address() {
                serving_ips.push(a);
            }
        }
        match lb_host.map(|h| h.parse::<IpAddr>()) {
            Some(Ok(ip)) => serving_ips.push(ip),
            Some(Err(_)) => serving_names.push(lb_host.unwrap_or_default().to_string()),
            None => {}
        }
        serving_ips.push(IpAddr::from([127, 0, 0, 1]));
        serving_ips.sort();
        serving_ips.dedup();
        let etcd = if spec.masters.count > 1 { Some(etcd_settings(masters, "new")?) } else { None };
        Ok(ControlPlane { serving_names, serving_ips, api_host, etcd })
    }
}

/// What installing a master did, and what the machines beside it are told.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MasterInstall {
    /// Whether anything changed on it.
    pub changed: bool,
    /// Where its own cloud calls go (its cloud controller's endpoint: the harness's as the machine
    /// reaches it, none on AWS); the workers' agents are given the same.
    pub cloud_endpoint: Option<String>,
}

/// Installs the master software on one machine (the spec copy, the cluster's SSH key, the config
/// with the control plane's settings, binary and units). `cloud` is how its cloud controller
/// reaches the cloud; without it, what `create` sees (its endpoint override as the machine reaches
/// it, LocalStack's test credentials).
#[allow(clippy::too_many_arguments)]
pub async fn install_master(
    session: &SharedShell,
    spec: &ClusterSpec,
    m: &Machine,
    plane: &ControlPlane,
    spec_copy: &str,
    ssh_key: &[u8],
    artifacts: &Arc<Artifacts>,
    cloud: Option<CloudSettings>,
) -> Result<MasterInstall, BootstrapError> {
    let cloud_settings = {
        let session = session.clone();
        let region = spec.region.as_str().to_string();
        let (spec_copy, key) = (spec_copy.to_string(), ssh_key.to_vec());
        tokio::task::spawn_blocking(move || -> Result<CloudSettings, BootstrapError> {
            let s = session.lock().map_err(|_| BootstrapError::Other("session lock poisoned".into()))?;
            master_files(&*s, &region, &spec_copy, &key, cloud)
        })
        .await
        .map_err(|e| BootstrapError::Other(e.to_string()))??
    };
    // Its agent's own cloud calls (ECR's tokens) go where its cloud controller's do.
    let cloud_endpoint = cloud_settings.endpoint_url.clone();
    let config = NodeConfig {
        master: Some(MasterSettings {
            listen: SocketAddr::new(IpAddr::from([0, 0, 0, 0]), spec.api.port),
            serving_names: plane.serving_names.clone(),
            serving_ips: plane.serving_ips.clone(),
            node_grace_seconds: u64::from(spec.health.node_grace_seconds),
            pod_eviction_seconds: u64::from(spec.health.eviction_seconds),
            unhealthy_zone_percent: spec.health.unhealthy_zone_percent,
            node_cert_seconds: node_cert_seconds()?,
            cloud: Some(cloud_settings),
            etcd: plane.etcd.clone(),
            snapshot_every_minutes: u64::from(spec.backups.snapshot_every_minutes),
            snapshots_kept: spec.backups.snapshots_kept,
        }),
        network: Some(crate::nodeconfig::NodeNetwork::of(&spec.network)),
        registries: spec.registries.clone(),
        cloud_endpoint,
        ..m.node_config(spec.name.as_str(), NodeRole::Master, ApiEndpoint { endpoint: plane.api_host.clone(), port: spec.api.port })?
    };
    let toml = config.to_toml().map_err(|e| BootstrapError::Other(format!("rendering the config of {}: {e}", m.name)))?;
    let (session, artifacts) = (session.clone(), artifacts.clone());
    let changed = tokio::task::spawn_blocking(move || {
        let s = session.lock().map_err(|_| BootstrapError::Other("session lock poisoned".into()))?;
        install(&*s, &artifacts, NodeRole::Master, &toml, None).map(|(changed, _)| changed)
    })
    .await
    .map_err(|e| BootstrapError::Other(e.to_string()))??;
    Ok(MasterInstall { changed, cloud_endpoint: config.cloud_endpoint })
}

/// Puts a master's own files on it (blocking): the spec copy and the cluster's SSH key, both
/// 0600 (its machine controller launches and reaches machines with them). Returns how its cloud
/// controller reaches the cloud: `cloud` when given, else what `create` sees, with the endpoint
/// override as this machine reaches it.
pub(super) fn master_files(s: &dyn NodeShell, region: &str, spec_copy: &str, key: &[u8], cloud: Option<CloudSettings>) -> Result<CloudSettings, BootstrapError> {
    let ssh_err = |step: &str| {
        let (node, step) = (s.node().to_string(), step.to_string());
        move |source| BootstrapError::Ssh { node, step, source: Box::new(source) }
    };
    s.upload(spec_copy.as_bytes(), crate::nodeconfig::SPEC_PATH, 0o600).map_err(ssh_err("uploading the cluster spec"))?;
    s.upload(key, crate::nodeconfig::SSH_KEY_PATH, 0o600).map_err(ssh_err("uploading the cluster's SSH key"))?;
    if let Some(cloud) = cloud {
        return Ok(cloud);
    }
    let instance_endpoint = read_root_file(s, INSTANCE_CLOUD_ENDPOINT).map_err(ssh_err("reading the instance's cloud endpoint"))?;
    Ok(master_cloud_settings(region, std::env::var("AWS_ENDPOINT_URL").ok(), instance_endpoint, std::env::var("AWS_ACCESS_KEY_ID").ok()))
}

/// The etcd settings of an HA control plane's masters: every master a member.
pub fn etcd_settings(masters: &[&Machine], state: &str) -> Result<EtcdSettings, BootstrapError> {
    let mut initial_cluster = Vec::new();
    let mut endpoints = Vec::new();
    for m in masters {
        let ip = m.private_ip()?;
        initial_cluster.push(format!("{}={}", m.name, etcd::peer_url(ip)));
        endpoints.push(etcd::client_url(ip));
    }
    Ok(EtcdSettings { initial_cluster, initial_cluster_state: state.into(), endpoints })
}

/// The CAs every master of an HA control plane holds, by file stem in the PKI folder: the cluster
/// CA (nodes, users, serving certificates) and etcd's own (members and their clients only).
pub const MASTER_CAS: [&str; 2] = ["ca", crate::pki::ETCD_CA];

/// A CA's certificate and key (PEM) by its file stem.
#[derive(Debug, Clone)]
pub struct CaPair {
    pub stem: String,
    pub cert: String,
    pub key: String,
}

/// Copies the masters' CAs ([`MASTER_CAS`], certificate and key) from one master to another over
/// the operator's sessions, in memory only: every master of an HA control plane signs with the
/// same CAs. The files of a CA rotation under way ([`crate::pki::rotation::FILES`]) go with them.
pub async fn copy_ca(from: &SharedShell, to: &SharedShell) -> Result<(), BootstrapError> {
    let (from, to) = (from.clone(), to.clone());
    tokio::task::spawn_blocking(move || -> Result<(), BootstrapError> {
        let source = from.lock().map_err(|_| BootstrapError::Other("session lock poisoned".into()))?;
        let node = source.node().to_string();
        let read = |f: &str| -> Result<String, BootstrapError> {
            read_root_file(&*source, &format!("{PKI_DIR}/{f}"))
                .map_err(|e| BootstrapError::Ssh { node: node.clone(), step: format!("reading the CA file {f}"), source: Box::new(e) })?
                .ok_or_else(|| BootstrapError::Node { node: node.clone(), step: "copying the masters' CAs".into(), message: format!("{PKI_DIR}/{f} is missing") })
        };
        let mut pairs = Vec::new();
        for stem in MASTER_CAS {
            pairs.push(CaPair { stem: stem.into(), cert: read(&format!("{stem}.crt"))?, key: read(&format!("{stem}.key"))? });
        }
        // A CA rotation under way: its files too, those the source has.
        let mut rotation = Vec::new();
        for (name, mode) in crate::pki::rotation::FILES {
            let found = read_root_file(&*source, &format!("{PKI_DIR}/{name}")).map_err(|e| BootstrapError::Ssh { node: node.clone(), step: format!("reading {name}"), source: Box::new(e) })?;
            rotation.extend(found.map(|contents| (name, contents, mode)));
        }
        drop(source);
        let target = to.lock().map_err(|_| BootstrapError::Other("session lock poisoned".into()))?;
        pairs.iter().try_for_each(|pair| upload_ca(&*target, pair))?;
        for (name, contents, mode) in rotation {
            target
                .upload(contents.as_bytes(), &format!("{PKI_DIR}/{name}"), mode)
                .map_err(|e| BootstrapError::Ssh { node: target.node().to_string(), step: format!("copying the CA rotation's {name}"), source: Box::new(e) })?;
        }
        Ok(())
    })
    .await
    .map_err(|e| BootstrapError::Other(e.to_string()))?
}

/// Puts a CA on a master that has none (blocking); a master with another one is an error.
pub fn upload_ca(target: &dyn NodeShell, pair: &CaPair) -> Result<(), BootstrapError> {
    let node = target.node().to_string();
    let stem = &pair.stem;
    let err = |step: &str| {
        let (node, step) = (node.clone(), step.to_string());
        move |e| BootstrapError::Ssh { node, step, source: Box::new(e) }
    };
    if let Some(existing) = read_root_file(target, &format!("{PKI_DIR}/{stem}.crt")).map_err(err(&format!("reading its {stem}.crt")))? {
        if existing == pair.cert {
            return Ok(());
        }
        return Err(BootstrapError::Node { node, step: format!("copying the CA {stem}"), message: format!("{PKI_DIR}/{stem}.crt is another CA than the first master's; a master of another cluster?") });
    }
    target.sudo(&format!("install -d -m 700 {DATA_DIR} {PKI_DIR}")).map_err(err("creating the PKI folder"))?;
    target.upload(pair.key.as_bytes(), &format!("{PKI_DIR}/{stem}.key"), 0o600).map_err(err(&format!("uploading {stem}.key")))?;
    target.upload(pair.cert.as_bytes(), &format!("{PKI_DIR}/{stem}.crt"), 0o644).map_err(err(&format!("uploading {stem}.crt")))?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::bootstrap::fake::{FakeShell, ShellEvent};
    use crate::bootstrap::templates::{INSTALL_SCRIPT_PATH, STAGED_BINARY_PATH, STAGED_PLAIN_BINARY_PATH, UNIT_DIR};

    #[tokio::test]
    async fn a_master_added_during_a_ca_rotation_gets_its_files_with_the_cas() {
        let source = Arc::new(std::sync::Mutex::new(FakeShell::new("demo-masters-0")));
        {
            let s = source.lock().unwrap();
            s.answer("cat", 0, "PEM");
            s.answer("ca-trusted.crt", 1, ""); // between a rotation's first step and its second
        }
        let target = Arc::new(std::sync::Mutex::new(FakeShell::new("demo-masters-1")));
        target.lock().unwrap().answer("cat", 1, "");
        let (from, to): (SharedShell, SharedShell) = (source.clone(), target.clone());
        copy_ca(&from, &to).await.unwrap();
        let uploads: Vec<(String, u32)> = target.lock().unwrap().uploads();
        let names: Vec<(&str, u32)> = uploads.iter().map(|(p, m)| (p.rsplit('/').next().unwrap(), *m)).collect();
        assert_eq!(names, [("ca.key", 0o600), ("ca.crt", 0o644), ("etcd-ca.key", 0o600), ("etcd-ca.crt", 0o644), ("ca-next.crt", 0o644), ("ca-next.key", 0o600)]);
    }

    fn artifacts(packing: Packing) -> Artifacts {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("clusterctl");
        std::fs::write(&path, b"the node binary").unwrap();
        Artifacts::prepare(&path, packing).unwrap()
    }

    /// A node on which the install script reports a change.
    fn node(name: &str) -> FakeShell {
        let shell = FakeShell::new(name);
        shell.answer(INSTALL_SCRIPT_PATH, 0, "changed\n");
        shell
    }

    fn unit_path(role: NodeRole) -> String {
        format!("{UNIT_DIR}/{}", templates::unit(role).0)
    }

    const CONFIG: &str = "cluster = \"demo\"\n";

    #[test]
    fn a_new_worker_gets_the_binary_then_its_unit_config_and_script_then_the_install_runs() {
        let shell = node("demo-default-0");
        let a = artifacts(Packing::Gzip);
        let (changed, delivery) = install(&shell, &a, NodeRole::Worker, CONFIG, None).unwrap();
        assert!(changed);
        assert_eq!(delivery, Delivery::Sent { fetch_failed: None });
        let events = shell.events();
        assert!(matches!(&events[0], ShellEvent::Command(c) if c.contains("openssl dgst") && c.contains(templates::BINARY_PATH)), "the installed binary is checked first: {events:?}");
        assert!(matches!(&events[1], ShellEvent::Command(c) if c.contains("systemctl start --no-block docker.service")), "{events:?}");
        assert_eq!(
            shell.uploads(),
            vec![
                (STAGED_BINARY_PATH.to_string(), 0o644),
                (unit_path(NodeRole::Worker), 0o644),
                ("/etc/clusterctl/node.toml".to_string(), 0o600),
                (INSTALL_SCRIPT_PATH.to_string(), 0o755),
            ],
            "the binary, then the unit, the config (0600: it holds the join token) and the script"
        );
        assert_eq!(shell.file("/etc/clusterctl/node.toml").unwrap().0, CONFIG.as_bytes());
        let last = shell.commands().pop().unwrap();
        assert_eq!(last, format!("sudo -n sh -c {}", ssh::shell_quote(&templates::install_command(NodeRole::Worker, &a.binary_sha256, STAGED_BINARY_PATH))), "the install script runs last");
    }

    #[test]
    fn a_node_that_has_the_binary_is_not_sent_it_again() {
        let shell = node("demo-default-0");
        let a = artifacts(Packing::Gzip);
        shell.answer("openssl dgst", 0, &format!("{}\n", a.binary_sha256));
        let (_, delivery) = install(&shell, &a, NodeRole::Worker, CONFIG, None).unwrap();
        assert_eq!(delivery, Delivery::Installed);
        assert!(!shell.uploads().iter().any(|(p, _)| p == STAGED_BINARY_PATH));
        assert!(!shell.commands().iter().any(|c| c.contains("docker.service")), "Docker is started only while a binary travels");
    }

    #[test]
    fn a_worker_fetches_the_binary_from_the_master_and_the_token_stays_off_command_lines() {
        let shell = node("demo-default-1");
        let a = artifacts(Packing::Plain);
        let from = BinaryFetch { url: "https://10.0.1.5:6443/clusterctl/v1/binary".into(), ca_pem: "CA".into() };
        let (_, delivery) = install(&shell, &a, NodeRole::Worker, CONFIG, Some((&from, "abcdef.0123456789abcdef"))).unwrap();
        assert_eq!(delivery, Delivery::FromMaster);
        assert!(!shell.uploads().iter().any(|(p, _)| p == STAGED_PLAIN_BINARY_PATH), "nothing sent over SSH");
        let events = shell.events();
        assert!(events.iter().any(|e| matches!(e, ShellEvent::Script(s) if s.contains("abcdef.0123456789abcdef") && s.contains(&from.url))));
        assert!(!events.iter().any(|e| matches!(e, ShellEvent::Command(c) if c.contains("abcdef.0123456789abcdef"))), "a token never shows in a process list");
        assert!(shell.commands().last().unwrap().contains(STAGED_PLAIN_BINARY_PATH));
    }

    #[test]
    fn a_failed_fetch_falls_back_to_sending_the_binary_and_says_why() {
        let shell = node("demo-default-1");
        let a = artifacts(Packing::Plain);
        shell.answer("curl", 22, "");
        let from = BinaryFetch { url: "https://10.0.1.5:6443/clusterctl/v1/binary".into(), ca_pem: "CA".into() };
        let (_, delivery) = install(&shell, &a, NodeRole::Worker, CONFIG, Some((&from, "abcdef.0123456789abcdef"))).unwrap();
        let Delivery::Sent { fetch_failed: Some(why) } = delivery else { panic!("{delivery:?}") };
        assert!(why.contains("exit status 22"), "{why}");
        assert_eq!(shell.uploads()[0], (STAGED_PLAIN_BINARY_PATH.to_string(), 0o644));
    }

    #[test]
    fn an_ha_master_also_gets_the_etcd_unit() {
        let shell = node("demo-masters-0");
        install(&shell, &artifacts(Packing::Gzip), NodeRole::Master, "[master.etcd]\n", None).unwrap();
        let etcd = format!("{UNIT_DIR}/{}", templates::etcd_unit().0);
        let paths: Vec<String> = shell.uploads().into_iter().map(|(p, _)| p).collect();
        assert!(paths.contains(&unit_path(NodeRole::Master)) && paths.contains(&etcd), "{paths:?}");
        let single = node("demo-masters-0");
        install(&single, &artifacts(Packing::Gzip), NodeRole::Master, CONFIG, None).unwrap();
        assert!(!single.uploads().iter().any(|(p, _)| *p == etcd), "a single master keeps the embedded store");
    }

    #[test]
    fn a_failing_install_script_names_the_node_and_the_step() {
        let shell = node("demo-default-0");
        shell.answer(INSTALL_SCRIPT_PATH, 1, "");
        let err = install(&shell, &artifacts(Packing::Gzip), NodeRole::Worker, CONFIG, None).unwrap_err();
        assert!(matches!(&err, BootstrapError::Ssh { node, step, .. } if node == "demo-default-0" && step == "running the install script"), "{err}");
        let odd = node("demo-default-0");
        odd.answer(INSTALL_SCRIPT_PATH, 0, "what?\n");
        let err = install(&odd, &artifacts(Packing::Gzip), NodeRole::Worker, CONFIG, None).unwrap_err();
        assert!(err.to_string().contains("unexpected output: what?"), "{err}");
    }

    #[test]
    fn a_failed_upload_stops_the_install_before_the_script_runs() {
        let shell = node("demo-default-0");
        shell.fail_upload("node.toml");
        let err = install(&shell, &artifacts(Packing::Gzip), NodeRole::Worker, CONFIG, None).unwrap_err();
        assert!(matches!(&err, BootstrapError::Ssh { step, .. } if step.contains("the node config")), "{err}");
        assert!(!shell.commands().iter().any(|c| c.contains(INSTALL_SCRIPT_PATH)), "the install script did not run");
    }

    #[test]
    fn a_master_gets_the_spec_and_the_cluster_key_readable_by_root_only() {
        let shell = FakeShell::new("demo-masters-0");
        let given = master_cloud_settings("us-east-1", None, None, None);
        let settings = master_files(&shell, "us-east-1", "[cluster]\n", b"KEY", Some(given.clone())).unwrap();
        assert_eq!(settings.region, given.region);
        assert_eq!(shell.uploads(), vec![(crate::nodeconfig::SPEC_PATH.to_string(), 0o600), (crate::nodeconfig::SSH_KEY_PATH.to_string(), 0o600)]);
        assert!(shell.commands().is_empty(), "with settings given, nothing is read from the machine");
        let harness = FakeShell::new("demo-masters-0");
        master_files(&harness, "us-east-1", "[cluster]\n", b"KEY", None).unwrap();
        assert!(harness.commands().iter().any(|c| c.contains(INSTANCE_CLOUD_ENDPOINT)), "the machine's view of the endpoint is read");
    }

    fn pair() -> CaPair {
        CaPair { stem: "ca".into(), cert: "CERT".into(), key: "KEY".into() }
    }

    #[test]
    fn the_ca_goes_to_a_master_without_one_key_first() {
        let shell = FakeShell::new("demo-masters-1");
        shell.answer("cat", 1, "");
        upload_ca(&shell, &pair()).unwrap();
        assert!(shell.commands().iter().any(|c| c.contains("install -d -m 700")));
        assert_eq!(shell.uploads(), vec![(format!("{PKI_DIR}/ca.key"), 0o600), (format!("{PKI_DIR}/ca.crt"), 0o644)]);
    }

    #[test]
    fn a_master_with_the_same_ca_is_left_alone_and_one_with_another_is_refused() {
        let same = FakeShell::new("demo-masters-1");
        same.answer("cat", 0, "CERT");
        upload_ca(&same, &pair()).unwrap();
        assert!(same.uploads().is_empty());
        let other = FakeShell::new("demo-masters-1");
        other.answer("cat", 0, "ANOTHER");
        let err = upload_ca(&other, &pair()).unwrap_err();
        assert!(err.to_string().contains("another CA"), "{err}");
        assert!(other.uploads().is_empty(), "nothing is overwritten");
    }
}
