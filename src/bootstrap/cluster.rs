//! From running machines to a working cluster: install and start the node software over SSH,
//! masters first, then every worker in parallel; join the workers; wait until every node is Ready;
//! write the operator's credentials.
//!
//! Re-running on an installed cluster changes nothing: uploads are skipped when the node already
//! has identical files, and the install script restarts a service only when something changed.

use std::collections::BTreeMap;
use std::io::Write;
use std::net::{IpAddr, SocketAddr};
use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, Instant};

use sha2::{Digest, Sha256};
use thiserror::Error;

use super::hostkeys::{self, KnownHosts};
use super::ssh::{self, HostKeyTrust, SshError, SshSession, SshTarget};
use super::templates;
use crate::client::kubeconfig::Kubeconfig;
use crate::client::{ApiClient, ClientAuth};
use crate::cloud::{Cloud, Instance};
use crate::home::ClusterHome;
use crate::node::config::{ApiEndpoint, CloudSettings, EtcdSettings, MasterSettings, NodeConfig, NodeRole, WorkerSettings};
use crate::node::etcd;
use crate::pki::{self, JoinToken};
use crate::provision::Converged;
use crate::report::Reporter;
use crate::spec::{ClusterSpec, Role};

/// Where the node software keeps its state on a node.
pub const DATA_DIR: &str = "/var/lib/clusterctl";
/// Where the master keeps the cluster's PKI.
pub const PKI_DIR: &str = "/var/lib/clusterctl/pki";

/// Errors of bootstrapping, each naming the node and what was being done.
#[derive(Debug, Error)]
pub enum BootstrapError {
    #[error("{node}: {step}: {source}")]
    Ssh { node: String, step: String, #[source] source: Box<SshError> },
    #[error("{node}: {step}: {message}")]
    Node { node: String, step: String, message: String },
    #[error("{0}")]
    Other(String),
    #[error("{}", .0.iter().map(|e| e.to_string()).collect::<Vec<_>>().join("\n"))]
    Many(Vec<BootstrapError>),
    #[error("timed out after {waited:?} waiting for {what}: {pending}")]
    Timeout { what: String, waited: Duration, pending: String },
}

impl BootstrapError {
    /// Ok when nothing failed; the one error, or all of them, otherwise.
    pub fn all(mut errors: Vec<BootstrapError>) -> Result<(), BootstrapError> {
        match errors.len() {
            0 => Ok(()),
            1 => Err(errors.remove(0)),
            _ => Err(BootstrapError::Many(errors)),
        }
    }
}

/// How bootstrapping runs.
#[derive(Debug, Clone)]
pub struct BootstrapOptions {
    /// The binary to install on the nodes (the running one).
    pub binary: PathBuf,
    /// How long machines may take to accept SSH.
    pub ssh_deadline: Duration,
    /// How long nodes may take to become Ready.
    pub ready_deadline: Duration,
    /// Lifetime of the join token made for new workers.
    pub token_ttl: Duration,
}

impl BootstrapOptions {
    /// Defaults: the running binary (or `$CLUSTERCTL_NODE_BINARY`, another build to roll out),
    /// 5 minutes for SSH and for readiness, 1 hour tokens.
    pub fn new() -> std::io::Result<Self> {
        let binary = match std::env::var_os("CLUSTERCTL_NODE_BINARY") {
            Some(path) => PathBuf::from(path),
            None => std::env::current_exe()?,
        };
        Ok(BootstrapOptions {
            binary,
            ssh_deadline: Duration::from_secs(300),
            ready_deadline: Duration::from_secs(300),
            token_ttl: Duration::from_secs(3600),
        })
    }
}

/// A machine of the cluster and what it should become.
#[derive(Debug, Clone)]
pub struct Machine {
    pub name: String,
    pub role: Role,
    pub pool: String,
    pub zone: String,
    pub instance: Instance,
    pub labels: BTreeMap<String, String>,
}

impl Machine {
    /// The node config of this machine, without the role's own section.
    fn node_config(&self, cluster: &str, role: NodeRole, api: ApiEndpoint) -> Result<NodeConfig, BootstrapError> {
        Ok(NodeConfig {
            cluster: cluster.into(),
            role,
            node_name: self.name.clone(),
            instance_id: self.instance.id.clone(),
            internal_ip: self.private_ip()?,
            zone: self.zone.clone(),
            pool: self.pool.clone(),
            labels: self.labels.clone(),
            api,
            data_dir: DATA_DIR.into(),
            master: None,
            worker: None,
        })
    }

    fn address(&self) -> Result<IpAddr, BootstrapError> {
        self.instance
            .public_ip
            .or(self.instance.private_ip)
            .map(IpAddr::V4)
            .ok_or_else(|| BootstrapError::Node { node: self.name.clone(), step: "finding its address".into(), message: "the instance has no IP address".into() })
    }

    fn private_ip(&self) -> Result<IpAddr, BootstrapError> {
        self.instance.private_ip.map(IpAddr::V4).ok_or_else(|| BootstrapError::Node {
            node: self.name.clone(),
            step: "finding its address".into(),
            message: "the instance has no private IP address".into(),
        })
    }
}

/// What bootstrapping produced.
#[derive(Debug, Clone)]
pub struct Bootstrapped {
    /// `https://host:port` of the API, through the load balancer when there is one.
    pub server: String,
    pub kubeconfig: PathBuf,
    /// Nodes on which something was installed or restarted.
    pub changed: Vec<String>,
    /// Every node and whether it is Ready.
    pub nodes: Vec<(String, bool)>,
}

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
    binary_sha256: String,
    /// The binary, packed as `staged_path` says.
    binary_staged: Vec<u8>,
    /// Where the binary is uploaded to (the install script unpacks it when the name ends in .gz).
    staged_path: &'static str,
    install_script: String,
}

impl Artifacts {
    fn prepare(binary: &std::path::Path, packing: Packing) -> Result<Self, BootstrapError> {
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

    async fn prepare_async(binary: PathBuf, packing: Packing) -> Result<Arc<Self>, BootstrapError> {
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

    async fn wait(self) -> Result<Arc<Artifacts>, BootstrapError> {
        Ok(Arc::new(self.0.await.map_err(|e| BootstrapError::Other(format!("preparing the node software: {e}")))??))
    }
}

/// The machines of a converged cluster, masters first.
pub fn machines(spec: &ClusterSpec, converged: &Converged) -> Vec<Machine> {
    let mut out = Vec::new();
    for pool in spec.pools() {
        for ((pool_name, slot), instance) in &converged.instances {
            if pool_name == pool.name.as_str() {
                out.push(machine(spec, pool, *slot, instance));
            }
        }
    }
    out
}

/// What the machine in a pool's slot should become: its node name, zone and labels.
pub fn machine(spec: &ClusterSpec, pool: &crate::spec::NodePool, slot: u32, instance: &Instance) -> Machine {
    let name = format!("{}-{}-{slot}", spec.name, pool.name.as_str());
    let zone = spec.subnet_for_slot(slot).zone.as_str().to_string();
    let mut labels = pool.labels.clone();
    labels.insert("clusterctl.io/pool".into(), pool.name.as_str().into());
    labels.insert("topology.kubernetes.io/zone".into(), zone.clone());
    labels.insert("node.kubernetes.io/instance-type".into(), pool.instance_type.clone());
    if pool.role == Role::Master {
        labels.insert("node-role.kubernetes.io/control-plane".into(), String::new());
    }
    Machine { name, role: pool.role, pool: pool.name.as_str().into(), zone, instance: instance.clone(), labels }
}

/// Connects to a machine with its host key pinned from the console (else trusted on first use and recorded).
pub async fn connect(cloud: &dyn Cloud, machine: &Machine, user: &str, key: &std::path::Path, known: &KnownHosts, deadline: Duration) -> Result<SshSession, BootstrapError> {
    let console = cloud.console_output(&machine.instance.id).await.map_err(|e| BootstrapError::Other(e.to_string()))?.unwrap_or_default();
    let mut pinned = hostkeys::from_console(&console);
    if pinned.is_empty() {
        pinned = known.get(&machine.instance.id);
    }
    let trust = if pinned.is_empty() { HostKeyTrust::FirstUse } else { HostKeyTrust::Pinned(pinned) };
    let first_use = matches!(trust, HostKeyTrust::FirstUse);
    let target = SshTarget { node: machine.name.clone(), address: SocketAddr::new(machine.address()?, 22), user: user.into(), private_key: key.into(), trust };
    let session = ssh::connect_async(target, deadline).await.map_err(|source| BootstrapError::Ssh { node: machine.name.clone(), step: "connecting".into(), source: Box::new(source) })?;
    if first_use {
        known.record(&machine.instance.id, session.host_key()).map_err(|e| BootstrapError::Other(format!("recording the host key of {}: {e}", machine.name)))?;
    }
    Ok(session)
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
fn install(session: &SshSession, artifacts: &Artifacts, role: NodeRole, config_toml: &str, fetch: Option<(&BinaryFetch, &str)>) -> Result<(bool, Delivery), BootstrapError> {
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
fn node_spec_copy(spec: &ClusterSpec) -> Result<String, BootstrapError> {
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
    let endpoint_url = operator_endpoint.map(|op| instance_endpoint.map(|i| i.trim().to_string()).filter(|i| !i.is_empty()).unwrap_or(op));
    let test_credentials = endpoint_url.is_some() && operator_key_id.as_deref() == Some("test");
    CloudSettings {
        region: region.into(),
        endpoint_url,
        access_key_id: test_credentials.then(|| "test".into()),
        secret_access_key: test_credentials.then(|| "test".into()),
        spec_path: crate::node::config::SPEC_PATH.into(),
        ssh_key_path: crate::node::config::SSH_KEY_PATH.into(),
        health_timeout_seconds: 60,
        max_unhealthy_percent: 50,
    }
}

/// Reads a file as root, or None when it does not exist yet.
fn read_root_file(session: &SshSession, path: &str) -> Result<Option<String>, SshError> {
    let out = session.exec(&format!("sudo -n cat {} 2>/dev/null", ssh::shell_quote(path)))?;
    Ok((out.status == 0).then_some(out.stdout))
}

/// Bootstraps every machine of a converged cluster and waits until all nodes are Ready.
/// `artifacts`: the binary as the operator sends it, `ArtifactsTask::start(options.binary, Packing::Gzip)`.
#[allow(clippy::too_many_arguments)]
pub async fn bootstrap(
    cloud: &dyn Cloud,
    spec: &ClusterSpec,
    converged: &Converged,
    home: &ClusterHome,
    ssh_key: &std::path::Path,
    options: &BootstrapOptions,
    artifacts: ArtifactsTask,
    reporter: &dyn Reporter,
) -> Result<Bootstrapped, BootstrapError> {
    let machines = machines(spec, converged);
    let masters: Vec<&Machine> = machines.iter().filter(|m| m.role == Role::Master).collect();
    let workers: Vec<&Machine> = machines.iter().filter(|m| m.role == Role::Worker).collect();
    let master = *masters.first().ok_or_else(|| BootstrapError::Other("the cluster has no master machine".into()))?;
    let lb_host = converged.load_balancer.as_ref().map(|l| l.dns_name.clone());
    let api_host = lb_host.clone().unwrap_or(master.private_ip()?.to_string());
    let server = format!("https://{api_host}:{}", spec.api.port);
    let known = KnownHosts::at(home.dir.join("known_hosts"));
    let user = spec.ssh.user.clone();

    reporter.phase("preparing the node software");
    let artifacts = artifacts.wait().await?;

    reporter.phase("connecting to the machines over SSH");
    let connects = machines.iter().map(|m| {
        let known = &known;
        let user = &user;
        async move {
            reporter.item(&m.name, "connecting");
            let s = connect(cloud, m, user, ssh_key, known, options.ssh_deadline).await;
            if s.is_ok() {
                reporter.item_done(&m.name, "connected, host key verified");
            }
            s
        }
    });
    let mut sessions = Sessions::new();
    let mut errors = Vec::new();
    for (m, result) in machines.iter().zip(futures::future::join_all(connects).await) {
        match result {
            Ok(s) => {
                sessions.insert(m.name.clone(), Arc::new(std::sync::Mutex::new(s)));
            }
            Err(e) => errors.push(e),
        }
    }
    BootstrapError::all(errors)?;

    // Masters. Meanwhile, each worker is checked: joined with another binary, it is upgraded later,
    // one at a time. (Starting the workers' Docker now, too, made the master's install twice as
    // slow in the harness, where ten booting workers share the cores with it: the master is on the
    // critical path, through the load balancer's health checks.)
    reporter.phase("installing the master");
    let plane = ControlPlane::new(spec, &masters, lb_host.as_deref(), api_host.clone())?;
    let spec_copy = node_spec_copy(spec)?;
    let ssh_key_bytes = std::fs::read(ssh_key).map_err(|e| BootstrapError::Other(format!("reading the cluster's SSH key {}: {e}", ssh_key.display())))?;
    let install_masters = async {
        let mut changed = Vec::new();
        // An HA control plane: an etcd member on every master, formed together; the first master
        // makes the cluster CA, and the others get a copy of it before they start.
        for (index, m) in masters.iter().enumerate() {
            if plane.etcd.is_some() && index > 0 {
                copy_ca(&sessions[&master.name], &sessions[&m.name]).await?;
            }
            reporter.item(&m.name, "installing");
            let did = install_master(&sessions[&m.name], spec, m, &plane, &spec_copy, &ssh_key_bytes, &artifacts, None).await?;
            reporter.item_done(&m.name, if did { "installed and started" } else { "already up to date" });
            if did {
                changed.push(m.name.clone());
            }
        }
        Ok::<_, BootstrapError>(changed)
    };
    let check_workers = futures::future::join_all(workers.iter().map(|m| needs_upgrade(&sessions[&m.name], &artifacts)));
    let (masters_changed, upgrade_checks) = tokio::join!(install_masters, check_workers);
    let mut changed = masters_changed?;

    // The master made the cluster's PKI on its first start: fetch the CA and the admin credentials.
    reporter.phase("waiting for the API server");
    let creds = {
        let session = sessions[&master.name].clone();
        let deadline = options.ready_deadline;
        let node = master.name.clone();
        tokio::task::spawn_blocking(move || -> Result<(String, String, String), BootstrapError> {
            let s = session.lock().map_err(|_| BootstrapError::Other("session lock poisoned".into()))?;
            let start = Instant::now();
            loop {
                let read = |f: &str| read_root_file(&s, &format!("{PKI_DIR}/{f}")).map_err(|source| BootstrapError::Ssh { node: node.clone(), step: format!("reading {f}"), source: Box::new(source) });
                if let (Some(ca), Some(cert), Some(key)) = (read("ca.crt")?, read("admin.crt")?, read("admin.key")?) {
                    return Ok((ca, cert, key));
                }
                if start.elapsed() > deadline {
                    let journal = s.exec("sudo -n journalctl -u clusterctl-master -n 20 --no-pager").map(|o| o.stdout).unwrap_or_default();
                    return Err(BootstrapError::Node { node: node.clone(), step: "waiting for the master to create the cluster's certificates".into(), message: format!("not there after {deadline:?}; last log lines:\n{journal}") });
                }
                std::thread::sleep(Duration::from_millis(300));
            }
        })
        .await
        .map_err(|e| BootstrapError::Other(e.to_string()))??
    };
    let (ca_pem, admin_cert, admin_key) = creds;
    let direct = ApiClient::new(&format!("https://{}:{}", master.address()?, spec.api.port), ClientAuth::Certificate { ca_pem: ca_pem.clone(), cert_pem: admin_cert.clone(), key_pem: admin_key.clone() })
        .map_err(|e| BootstrapError::Other(format!("building the API client: {e}")))?;
    wait_until(options.ready_deadline, "the API server on the master to be ready", || async { direct.request_text("GET", "/readyz").await.is_ok().then_some(()) }).await?;
    // Only now do the load balancer's health checks start to count (see provision::converge).
    if let Some(registration) = &converged.registration {
        crate::provision::register_masters(cloud, registration, reporter).await.map_err(|e| BootstrapError::Other(format!("registering the masters with the API load balancer: {e}")))?;
    }
    let kubeconfig_path = home.dir.join("kubeconfig");
    let kubeconfig = Kubeconfig { cluster_name: spec.name.as_str().into(), server: server.clone(), ca_pem: ca_pem.clone(), client_cert_pem: admin_cert.clone(), client_key_pem: admin_key.clone() };
    kubeconfig.write(&kubeconfig_path).map_err(|e| BootstrapError::Other(format!("writing {}: {e}", kubeconfig_path.display())))?;

    // Workers.
    if !workers.is_empty() {
        reporter.phase("installing and joining the workers");
        let ca_hash = pki::ca_hash(&ca_pem).map_err(|e| BootstrapError::Other(format!("hashing the cluster CA: {e}")))?;
        // The workers fetch the binary from the master inside the VPC: one copy crosses the
        // operator's link instead of one per worker (and nothing is unpacked on them).
        let binary = BinaryFetch { url: format!("https://{}:{}{}", master.private_ip()?, spec.api.port, crate::apiserver::NODE_BINARY_PATH), ca_pem: ca_pem.clone() };
        let join = Join { cluster: spec.name.as_str().into(), api_host: api_host.clone(), port: spec.api.port, ca_hash, token_ttl: options.token_ttl, binary: Some(binary) };
        // Joined workers running another binary are upgraded one at a time, drained first; the
        // others (new machines, config changes) are installed in parallel.
        let mut upgrades = Vec::new();
        let mut others = Vec::new();
        for (m, check) in workers.iter().zip(upgrade_checks) {
            if check? {
                upgrades.push(*m);
            } else {
                others.push(*m);
            }
        }
        let token = create_join_token(&direct, options.token_ttl).await?;
        changed.extend(install_with_token(&join, &others, &sessions, &artifacts, &token, reporter).await?);
        if !upgrades.is_empty() {
            reporter.phase(&format!("upgrading the node software on {} workers, one at a time", upgrades.len()));
        }
        for m in upgrades {
            upgrade_worker(&direct, &join, m, &sessions, &artifacts, &token, options.ready_deadline, reporter).await?;
            changed.push(m.name.clone());
        }
    }

    // Every node Ready, seen through the load balancer as the operator will see it.
    reporter.phase("waiting for every node to be Ready");
    let client = ApiClient::new(&server, ClientAuth::Certificate { ca_pem, cert_pem: admin_cert, key_pem: admin_key }).map_err(|e| BootstrapError::Other(format!("building the API client: {e}")))?;
    let wanted: Vec<String> = machines.iter().map(|m| m.name.clone()).collect();
    let nodes = wait_ready(&client, &wanted, options.ready_deadline, reporter).await?;
    // The spec's worker counts become the cluster's desired sizes (the spec wins at create).
    for pool in &spec.workers {
        record_pool_size(&client, pool.name.as_str(), pool.count).await?;
    }
    Ok(Bootstrapped { server, kubeconfig: kubeconfig_path, changed, nodes })
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

/// Installs the master software on one machine (the spec copy, the cluster's SSH key, the config
/// with the control plane's settings, binary and units). `cloud` is how its cloud controller
/// reaches the cloud; without it, what `create` sees (its endpoint override as the machine reaches
/// it, LocalStack's test credentials). Returns whether anything changed.
#[allow(clippy::too_many_arguments)]
pub async fn install_master(
    session: &Arc<std::sync::Mutex<SshSession>>,
    spec: &ClusterSpec,
    m: &Machine,
    plane: &ControlPlane,
    spec_copy: &str,
    ssh_key: &[u8],
    artifacts: &Arc<Artifacts>,
    cloud: Option<CloudSettings>,
) -> Result<bool, BootstrapError> {
    let cloud_settings = {
        let session = session.clone();
        let region = spec.region.as_str().to_string();
        let (spec_copy, key) = (spec_copy.to_string(), ssh_key.to_vec());
        let node = m.name.clone();
        tokio::task::spawn_blocking(move || -> Result<CloudSettings, BootstrapError> {
            let s = session.lock().map_err(|_| BootstrapError::Other("session lock poisoned".into()))?;
            let ssh_err = |step: &str| {
                let (node, step) = (node.clone(), step.to_string());
                move |source| BootstrapError::Ssh { node, step, source: Box::new(source) }
            };
            s.upload(spec_copy.as_bytes(), crate::node::config::SPEC_PATH, 0o600).map_err(ssh_err("uploading the cluster spec"))?;
            s.upload(&key, crate::node::config::SSH_KEY_PATH, 0o600).map_err(ssh_err("uploading the cluster's SSH key"))?;
            if let Some(cloud) = cloud {
                return Ok(cloud);
            }
            let instance_endpoint = read_root_file(&s, INSTANCE_CLOUD_ENDPOINT).map_err(ssh_err("reading the instance's cloud endpoint"))?;
            Ok(master_cloud_settings(&region, std::env::var("AWS_ENDPOINT_URL").ok(), instance_endpoint, std::env::var("AWS_ACCESS_KEY_ID").ok()))
        })
        .await
        .map_err(|e| BootstrapError::Other(e.to_string()))??
    };
    let config = NodeConfig {
        master: Some(MasterSettings {
            listen: SocketAddr::new(IpAddr::from([0, 0, 0, 0]), spec.api.port),
            serving_names: plane.serving_names.clone(),
            serving_ips: plane.serving_ips.clone(),
            node_grace_seconds: 10,
            pod_eviction_seconds: 10,
            cloud: Some(cloud_settings),
            etcd: plane.etcd.clone(),
            snapshot_every_minutes: u64::from(spec.backups.snapshot_every_minutes),
            snapshots_kept: spec.backups.snapshots_kept,
        }),
        ..m.node_config(spec.name.as_str(), NodeRole::Master, ApiEndpoint { endpoint: plane.api_host.clone(), port: spec.api.port })?
    };
    let toml = config.to_toml().map_err(|e| BootstrapError::Other(format!("rendering the config of {}: {e}", m.name)))?;
    let (session, artifacts) = (session.clone(), artifacts.clone());
    tokio::task::spawn_blocking(move || {
        let s = session.lock().map_err(|_| BootstrapError::Other("session lock poisoned".into()))?;
        install(&s, &artifacts, NodeRole::Master, &toml, None).map(|(changed, _)| changed)
    })
    .await
    .map_err(|e| BootstrapError::Other(e.to_string()))?
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

/// Copies the cluster CA (certificate and key) from one master to another over the operator's
/// sessions, in memory only: every master of an HA control plane signs with the same CA.
pub async fn copy_ca(from: &Arc<std::sync::Mutex<SshSession>>, to: &Arc<std::sync::Mutex<SshSession>>) -> Result<(), BootstrapError> {
    let (from, to) = (from.clone(), to.clone());
    tokio::task::spawn_blocking(move || -> Result<(), BootstrapError> {
        let source = from.lock().map_err(|_| BootstrapError::Other("session lock poisoned".into()))?;
        let node = source.node().to_string();
        let read = |f: &str| -> Result<String, BootstrapError> {
            read_root_file(&source, &format!("{PKI_DIR}/{f}"))
                .map_err(|e| BootstrapError::Ssh { node: node.clone(), step: format!("reading the cluster CA's {f}"), source: Box::new(e) })?
                .ok_or_else(|| BootstrapError::Node { node: node.clone(), step: "copying the cluster CA".into(), message: format!("{PKI_DIR}/{f} is missing") })
        };
        let (cert, key) = (read("ca.crt")?, read("ca.key")?);
        drop(source);
        let target = to.lock().map_err(|_| BootstrapError::Other("session lock poisoned".into()))?;
        upload_ca(&target, &cert, &key)
    })
    .await
    .map_err(|e| BootstrapError::Other(e.to_string()))?
}

/// Puts the cluster CA on a master that has none (blocking); a master with another CA is an error.
pub fn upload_ca(target: &SshSession, cert: &str, key: &str) -> Result<(), BootstrapError> {
    let node = target.node().to_string();
    let err = |step: &str| {
        let (node, step) = (node.clone(), step.to_string());
        move |e| BootstrapError::Ssh { node, step, source: Box::new(e) }
    };
    if let Some(existing) = read_root_file(target, &format!("{PKI_DIR}/ca.crt")).map_err(err("reading its cluster CA"))? {
        if existing == cert {
            return Ok(());
        }
        return Err(BootstrapError::Node { node, step: "copying the cluster CA".into(), message: format!("{PKI_DIR}/ca.crt is another CA than the first master's; a master of another cluster?") });
    }
    target.sudo(&format!("install -d -m 700 {DATA_DIR} {PKI_DIR}")).map_err(err("creating the PKI folder"))?;
    target.upload(key.as_bytes(), &format!("{PKI_DIR}/ca.key"), 0o600).map_err(err("uploading the CA key"))?;
    target.upload(cert.as_bytes(), &format!("{PKI_DIR}/ca.crt"), 0o644).map_err(err("uploading the CA certificate"))?;
    Ok(())
}

/// Where new workers join and how they trust the API.
#[derive(Debug, Clone)]
pub struct Join {
    pub cluster: String,
    /// The API's host (the load balancer's address, else the master's) and port.
    pub api_host: String,
    pub port: u16,
    /// The cluster CA's hash (`sha256:<hex>`) the workers pin.
    pub ca_hash: String,
    /// Lifetime of the join token made for them.
    pub token_ttl: Duration,
    /// Where they fetch the binary (a master inside the VPC); None sends it to each over SSH.
    pub binary: Option<BinaryFetch>,
}

type Sessions = BTreeMap<String, Arc<std::sync::Mutex<SshSession>>>;

/// Makes a join token (a bootstrap-token Secret, through `client`) and installs the workers in
/// parallel over their sessions; returns the workers on which something changed.
async fn install_workers(client: &ApiClient, join: &Join, workers: &[&Machine], sessions: &Sessions, artifacts: &Arc<Artifacts>, reporter: &dyn Reporter) -> Result<Vec<String>, BootstrapError> {
    let token = create_join_token(client, join.token_ttl).await?;
    install_with_token(join, workers, sessions, artifacts, &token, reporter).await
}

/// Whether a worker has joined and runs another binary than the one to install (then it is
/// upgraded, drained first).
async fn needs_upgrade(session: &Arc<std::sync::Mutex<SshSession>>, artifacts: &Arc<Artifacts>) -> Result<bool, BootstrapError> {
    let (session, want) = (session.clone(), artifacts.binary_sha256.clone());
    tokio::task::spawn_blocking(move || {
        let s = session.lock().map_err(|_| BootstrapError::Other("session lock poisoned".into()))?;
        let node = s.node().to_string();
        let err = |source| BootstrapError::Ssh { node: node.clone(), step: "checking the installed binary".into(), source: Box::new(source) };
        let joined = s.exec(&format!("sudo -n test -f {DATA_DIR}/pki/node.crt")).map_err(err)?.status == 0;
        let installed = s.exec(&ssh::sha256_command(&ssh::shell_quote(templates::BINARY_PATH))).map_err(err)?.stdout.trim().to_string();
        Ok(joined && !installed.is_empty() && installed != want)
    })
    .await
    .map_err(|e| BootstrapError::Other(e.to_string()))?
}

/// Upgrades one joined worker: cordon, drain (its pods Ready elsewhere first), install the new
/// binary (which restarts the agent; its containers of pods that return are adopted), wait until
/// the restarted agent has renewed its lease and the node is Ready, uncordon.
#[allow(clippy::too_many_arguments)]
async fn upgrade_worker(client: &ApiClient, join: &Join, m: &Machine, sessions: &Sessions, artifacts: &Arc<Artifacts>, token: &JoinToken, deadline: Duration, reporter: &dyn Reporter) -> Result<(), BootstrapError> {
    use crate::client::drain;
    let fail = |step: &str, e: String| BootstrapError::Node { node: m.name.clone(), step: step.into(), message: e };
    reporter.item(&m.name, "cordoning");
    drain::set_unschedulable(client, &m.name, true).await.map_err(|e| fail("cordoning", e.to_string()))?;
    drain::evict_and_wait(client, &std::collections::BTreeSet::from([m.name.clone()]), deadline, reporter).await.map_err(|e| fail("draining", format!("{e:#}")))?;
    reporter.item(&m.name, "drained; installing the new binary");
    let since = std::time::SystemTime::now();
    install_with_token(join, &[m], sessions, artifacts, token, reporter).await?;
    drain::wait_renewed_and_ready(client, &m.name, since, deadline).await.map_err(|e| fail("waiting for the upgraded node", format!("{e:#}")))?;
    drain::set_unschedulable(client, &m.name, false).await.map_err(|e| fail("uncordoning", e.to_string()))?;
    reporter.item_done(&m.name, "upgraded, Ready, schedulable");
    Ok(())
}

/// Makes a join token: a bootstrap-token Secret that expires after `ttl`.
async fn create_join_token(client: &ApiClient, ttl: Duration) -> Result<JoinToken, BootstrapError> {
    let token = JoinToken::generate();
    let expires = crate::api::time::rfc3339_after(ttl);
    let mut data = BTreeMap::new();
    for (k, v) in token.secret_data(&expires) {
        use base64::Engine;
        data.insert(k, base64::engine::general_purpose::STANDARD.encode(v));
    }
    let secret = serde_json::json!({
        "apiVersion": "v1", "kind": "Secret", "type": "bootstrap.kubernetes.io/token",
        "metadata": { "name": format!("bootstrap-token-{}", token.id()), "namespace": "kube-system" },
        "data": data,
    });
    client.create_value("/api/v1/namespaces/kube-system/secrets", &secret).await.map_err(|e| BootstrapError::Other(format!("creating the join token: {e}")))?;
    Ok(token)
}

/// Installs workers in parallel with a join token that exists already.
async fn install_with_token(join: &Join, workers: &[&Machine], sessions: &Sessions, artifacts: &Arc<Artifacts>, token: &JoinToken, reporter: &dyn Reporter) -> Result<Vec<String>, BootstrapError> {
    let installs = workers.iter().map(|m| {
        let m = (*m).clone();
        let session = sessions[&m.name].clone();
        let artifacts = artifacts.clone();
        let token = token.to_string();
        let fetch_token = token.clone();
        let join = join.clone();
        async move {
            reporter.item(&m.name, "installing");
            let name = m.name.clone();
            let result = tokio::task::spawn_blocking(move || -> Result<(bool, Delivery), BootstrapError> {
                let s = session.lock().map_err(|_| BootstrapError::Other("session lock poisoned".into()))?;
                // A joined worker keeps the token it joined with, so that its config does not change.
                let probe = s.exec(&format!("sudo -n sh -c 'if test -f {DATA_DIR}/pki/node.crt; then echo joined; else echo new; fi; cat /etc/clusterctl/node.toml 2>/dev/null'")).ok();
                let (joined, current) = match probe.as_ref().and_then(|o| o.stdout.split_once('\n')) {
                    Some((state, toml)) => (state == "joined", NodeConfig::from_toml(toml).ok()),
                    None => (false, None),
                };
                let join_token = match current.and_then(|c| c.worker).map(|w| w.join_token) {
                    Some(old) if joined => old,
                    _ => token,
                };
                let config = NodeConfig {
                    worker: Some(WorkerSettings { join_token, ca_hash: join.ca_hash, heartbeat_seconds: 2 }),
                    ..m.node_config(&join.cluster, NodeRole::Worker, ApiEndpoint { endpoint: join.api_host, port: join.port })?
                };
                let toml = config.to_toml().map_err(|e| BootstrapError::Other(format!("rendering the config of {}: {e}", m.name)))?;
                let fetch = join.binary.as_ref().map(|b| (b, fetch_token.as_str()));
                install(&s, &artifacts, NodeRole::Worker, &toml, fetch)
            })
            .await
            .map_err(|e| BootstrapError::Other(e.to_string()))
            .and_then(|r| r);
            match &result {
                Ok((true, Delivery::FromMaster)) => reporter.item(&name, "installed (binary from the master), joining"),
                Ok((true, _)) => reporter.item(&name, "installed, joining"),
                Ok((false, _)) => reporter.item(&name, "already up to date"),
                Err(_) => reporter.item_done(&name, "failed"),
            }
            if let Ok((_, Delivery::Sent { fetch_failed: Some(why) })) = &result {
                reporter.warn(&format!("{name}: fetching the binary from the master failed ({why}); sent it over SSH instead"));
            }
            (name, result.map(|(changed, _)| changed))
        }
    });
    let mut changed = Vec::new();
    let mut errors = Vec::new();
    for (name, result) in futures::future::join_all(installs).await {
        match result {
            Ok(true) => changed.push(name),
            Ok(false) => {}
            Err(e) => errors.push(e),
        }
    }
    BootstrapError::all(errors)?;
    Ok(changed)
}

/// Records a worker pool's desired size in its `MachinePool` object, which the machine controller keeps.
pub async fn record_pool_size(client: &ApiClient, pool: &str, replicas: u32) -> Result<(), BootstrapError> {
    use crate::api::machinepool::MachinePool;
    use crate::api::resource::MACHINE_POOLS;
    let failed = |e: crate::client::ClientError| BootstrapError::Other(format!("recording pool {pool}'s size: {e}"));
    match client.get::<MachinePool>(&MACHINE_POOLS, None, pool).await {
        Ok(p) if p.spec.replicas == replicas => Ok(()),
        Ok(_) => client.patch::<MachinePool>(&MACHINE_POOLS, None, pool, &serde_json::json!({ "spec": { "replicas": replicas } })).await.map(|_| ()).map_err(failed),
        Err(e) if e.is_not_found() => client.create(&MACHINE_POOLS, None, &MachinePool::new(pool, replicas)).await.map(|_| ()).map_err(failed),
        Err(e) => Err(failed(e)),
    }
}

/// Waits until every named node is Ready; returns each node and whether it is.
pub async fn wait_ready(client: &ApiClient, wanted: &[String], deadline: Duration, reporter: &dyn Reporter) -> Result<Vec<(String, bool)>, BootstrapError> {
    let start = Instant::now();
    loop {
        let ready: Vec<(String, bool)> = match client.list_values("/api/v1/nodes").await {
            Ok(items) => wanted
                .iter()
                .map(|w| {
                    let node = items.iter().find(|n| n.pointer("/metadata/name").and_then(|v| v.as_str()) == Some(w.as_str()));
                    let ok = node.and_then(|n| serde_json::from_value::<crate::api::Node>(n.clone()).ok()).is_some_and(|n| n.is_ready());
                    (w.clone(), ok)
                })
                .collect(),
            Err(e) => wanted.iter().map(|w| (w.clone(), false)).inspect(|_| tracing::debug!(error = %e, "listing nodes")).collect(),
        };
        for (n, ok) in &ready {
            if *ok {
                reporter.item_done(n, "Ready");
            } else {
                reporter.item(n, "not ready yet");
            }
        }
        if ready.iter().all(|(_, ok)| *ok) {
            return Ok(ready);
        }
        if start.elapsed() > deadline {
            let pending = ready.iter().filter(|(_, ok)| !ok).map(|(n, _)| n.clone()).collect::<Vec<_>>().join(", ");
            return Err(BootstrapError::Timeout { what: "every node to be Ready".into(), waited: deadline, pending });
        }
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
}

/// Where a node keeps the image tarballs loaded into the cluster (`clusterctl image load`).
pub const IMAGES_DIR: &str = "/var/lib/clusterctl/images";

/// Bootstraps new workers from inside the cluster (the master's machine controller): connects
/// over SSH with the cluster's key and pinned host keys, loads the cluster's images (`images`:
/// tarballs on this machine) before the node can get pods, installs the running binary, joins them
/// with a fresh token, and waits until they are Ready.
#[allow(clippy::too_many_arguments)]
pub async fn add_workers(cloud: &dyn Cloud, client: &ApiClient, join: &Join, machines: &[Machine], user: &str, ssh_key: &std::path::Path, known: &KnownHosts, images: &[PathBuf], options: &BootstrapOptions, reporter: &dyn Reporter) -> Result<(), BootstrapError> {
    // From the master, inside the VPC.
    let artifacts = Artifacts::prepare_async(options.binary.clone(), Packing::Plain).await?;
    let connects = machines.iter().map(|m| async move { (m.name.clone(), connect(cloud, m, user, ssh_key, known, options.ssh_deadline).await) });
    let mut sessions = Sessions::new();
    let mut errors = Vec::new();
    for (name, result) in futures::future::join_all(connects).await {
        match result {
            Ok(s) => {
                sessions.insert(name, Arc::new(std::sync::Mutex::new(s)));
            }
            Err(e) => errors.push(e),
        }
    }
    BootstrapError::all(errors)?;
    let loads = sessions.iter().map(|(name, session)| {
        let (name, session, images) = (name.clone(), session.clone(), images.to_vec());
        async move {
            reporter.item(&name, &format!("loading {} images", images.len()));
            tokio::task::spawn_blocking(move || -> Result<(), BootstrapError> {
                let s = session.lock().map_err(|_| BootstrapError::Other("session lock poisoned".into()))?;
                for tar in &images {
                    let step = format!("loading image {}", tar.display());
                    let bytes = std::fs::read(tar).map_err(|e| BootstrapError::Node { node: name.clone(), step: step.clone(), message: e.to_string() })?;
                    let remote = format!("{IMAGES_DIR}/{}", tar.file_name().and_then(|f| f.to_str()).unwrap_or("image.tar"));
                    s.upload(&bytes, &remote, 0o600).map_err(|source| BootstrapError::Ssh { node: name.clone(), step: step.clone(), source: Box::new(source) })?;
                    s.sudo(&format!("docker load -i {}", ssh::shell_quote(&remote))).map_err(|source| BootstrapError::Ssh { node: name.clone(), step: step.clone(), source: Box::new(source) })?;
                }
                Ok(())
            })
            .await
            .map_err(|e| BootstrapError::Other(e.to_string()))?
        }
    });
    BootstrapError::all(futures::future::join_all(loads).await.into_iter().filter_map(Result::err).collect())?;
    let workers: Vec<&Machine> = machines.iter().collect();
    install_workers(client, join, &workers, &sessions, &artifacts, reporter).await?;
    let names: Vec<String> = machines.iter().map(|m| m.name.clone()).collect();
    wait_ready(client, &names, options.ready_deadline, reporter).await?;
    Ok(())
}

/// What a running master of an HA control plane needs to bootstrap a new one.
pub struct MasterReplacement<'a> {
    pub spec: &'a ClusterSpec,
    /// The new machine.
    pub new: &'a Machine,
    /// Every master that should run afterwards, the new one included.
    pub masters: &'a [Machine],
    /// The API load balancer's address, and the API host the nodes use.
    pub lb_host: Option<String>,
    pub api_host: String,
    /// This master's data folder: its PKI (the cluster CA, its etcd client credentials) and the
    /// images loaded into the cluster.
    pub data_dir: &'a std::path::Path,
    pub ssh_key: &'a std::path::Path,
    pub known: &'a KnownHosts,
    /// How the new master's cloud controller reaches the cloud: the same as this master's.
    pub cloud: CloudSettings,
}

/// Bootstraps a master that replaces a lost one, from a running master (the machine controller):
/// etcd's member in the new machine's slot, or of a master that is gone, is removed while the
/// others keep a quorum; the new machine is added as a member; it gets the cluster CA, the images
/// loaded into the cluster and the master software with `initial_cluster_state = existing`; then
/// its node must become Ready.
pub async fn add_master(cloud: &dyn Cloud, client: &ApiClient, r: &MasterReplacement<'_>, options: &BootstrapOptions, reporter: &dyn Reporter) -> Result<(), BootstrapError> {
    use crate::apiserver::store::EtcdCluster;
    let other = |step: &str, e: &dyn std::fmt::Display| BootstrapError::Node { node: r.new.name.clone(), step: step.into(), message: e.to_string() };
    let pki_dir = r.data_dir.join("pki");
    let local = etcd::local_options(r.data_dir).map_err(|e| other("reading this master's etcd credentials", &format!("{e:#}")))?;
    let ca_pem = std::fs::read_to_string(pki_dir.join("ca.crt")).map_err(|e| other("reading the cluster CA", &e))?;
    let ca_key = std::fs::read_to_string(pki_dir.join("ca.key")).map_err(|e| other("reading the cluster CA key", &e))?;
    let cluster = EtcdCluster::connect(&local).await.map_err(|e| other("connecting to the local etcd member", &e))?;
    let new_peer = etcd::peer_url(r.new.private_ip()?);
    let live_peers: Vec<String> = r.masters.iter().filter_map(|m| m.private_ip().ok()).map(etcd::peer_url).collect();
    let members = cluster.members().await.map_err(|e| other("listing etcd's members", &e))?;
    let (stale, kept): (Vec<_>, Vec<_>) = members.into_iter().partition(|m| !m.peer_urls.iter().any(|u| live_peers.contains(u)) || (m.name == r.new.name && !m.peer_urls.contains(&new_peer)));
    // Only while the remaining members keep a quorum of the membership without the stale ones.
    let mut healthy = 0;
    for m in kept.iter().filter(|m| !m.peer_urls.contains(&new_peer)) {
        let mut one = local.clone();
        one.endpoints = m.client_urls.clone();
        if let Ok(c) = EtcdCluster::connect(&one).await
            && c.endpoint_status().await.iter().any(|s| s.status.as_ref().is_ok_and(|s| s.healthy()))
        {
            healthy += 1;
        }
    }
    let voters = kept.iter().filter(|m| !m.peer_urls.contains(&new_peer)).count();
    if healthy < voters / 2 + 1 {
        return Err(other("checking etcd's quorum", &format!("only {healthy} of {voters} remaining etcd members are healthy: not changing the membership")));
    }
    let lost: Vec<IpAddr> = stale.iter().flat_map(|m| &m.peer_urls).filter_map(|u| url_ip(u)).collect();
    if !lost.is_empty() {
        reporter.item(&r.new.name, "closing the surviving masters' connections to the lost etcd member");
        drop_connections(cloud, r, &lost, options).await;
    }
    for m in &stale {
        reporter.item(&r.new.name, &format!("removing etcd member {} ({:?})", m.name, m.peer_urls));
        cluster.remove_member(m.id).await.map_err(|e| other("removing the lost etcd member", &e))?;
    }
    let added = cluster.add_member(&new_peer).await.map_err(|e| other("adding the new etcd member", &e))?;
    let refs: Vec<&Machine> = r.masters.iter().collect();
    let mut plane = ControlPlane::new(r.spec, &refs, r.lb_host.as_deref(), r.api_host.clone())?;
    let etcd = plane.etcd.as_mut().ok_or_else(|| BootstrapError::Other("a single master is not replaced by another master".into()))?;
    etcd.initial_cluster = added.initial_cluster(&r.new.name).split(',').map(str::to_string).collect();
    etcd.initial_cluster_state = "existing".into();

    reporter.item(&r.new.name, "connecting");
    let session = connect(cloud, r.new, &r.spec.ssh.user, r.ssh_key, r.known, options.ssh_deadline).await?;
    let session = Arc::new(std::sync::Mutex::new(session));
    {
        let (session, ca_pem, ca_key) = (session.clone(), ca_pem.clone(), ca_key.clone());
        let images: Vec<PathBuf> = std::fs::read_dir(IMAGES_DIR).map(|d| d.filter_map(|e| e.ok()).map(|e| e.path()).collect()).unwrap_or_default();
        let node = r.new.name.clone();
        tokio::task::spawn_blocking(move || -> Result<(), BootstrapError> {
            let s = session.lock().map_err(|_| BootstrapError::Other("session lock poisoned".into()))?;
            upload_ca(&s, &ca_pem, &ca_key)?;
            for tar in images.iter().filter(|p| p.extension().is_some_and(|x| x == "tar")) {
                let bytes = std::fs::read(tar).map_err(|e| BootstrapError::Node { node: node.clone(), step: format!("reading {}", tar.display()), message: e.to_string() })?;
                let remote = format!("{IMAGES_DIR}/{}", tar.file_name().and_then(|f| f.to_str()).unwrap_or("image.tar"));
                s.upload(&bytes, &remote, 0o600).map_err(|source| BootstrapError::Ssh { node: node.clone(), step: format!("copying image {}", tar.display()), source: Box::new(source) })?;
            }
            Ok(())
        })
        .await
        .map_err(|e| BootstrapError::Other(e.to_string()))??;
    }
    // From the master, inside the VPC.
    let artifacts = Artifacts::prepare_async(options.binary.clone(), Packing::Plain).await?;
    let ssh_key = std::fs::read(r.ssh_key).map_err(|e| other("reading the cluster's SSH key", &e))?;
    reporter.item(&r.new.name, "installing");
    install_master(&session, r.spec, r.new, &plane, &node_spec_copy(r.spec)?, &ssh_key, &artifacts, Some(r.cloud.clone())).await?;
    wait_ready(client, std::slice::from_ref(&r.new.name), options.ready_deadline, reporter).await?;
    reporter.item_done(&r.new.name, "master Ready");
    Ok(())
}

/// The IP address in a URL such as `https://10.0.1.12:2380` (none for a host name).
fn url_ip(url: &str) -> Option<IpAddr> {
    let url = reqwest::Url::parse(url).ok()?;
    url.host_str()?.trim_start_matches('[').trim_end_matches(']').parse().ok()
}

/// Closes, on every surviving master, the TCP connections to `lost` addresses (`ss -K`), before
/// their etcd member is removed. A terminated machine's address black-holes rather than refuses:
/// the etcd leader's stream to the dead member stays open, and once its send buffer is full a
/// write blocks for etcd's 5 s write timeout. Removing the member stops that stream from inside
/// the raft loop (etcd 3.4), so the leader then sends no heartbeats until the write gives up: the
/// other members elect, the cluster has no leader for 5 to 10 s, and every API server fails its
/// requests meanwhile. With the connections closed first the stream is already gone and the
/// removal takes milliseconds. Best effort: a master that cannot be reached, or a kernel without
/// socket destruction, is logged, and the member is removed anyway.
async fn drop_connections(cloud: &dyn Cloud, r: &MasterReplacement<'_>, lost: &[IpAddr], options: &BootstrapOptions) {
    let filter = lost.iter().map(|ip| format!("dst {ip}")).collect::<Vec<_>>().join(" or ");
    let script = format!("ss -K -t -n '( {filter} )' >/dev/null\nss -H -t -n state established '( {filter} )' | wc -l\n");
    let survivors = r.masters.iter().filter(|m| m.name != r.new.name);
    let drops = survivors.map(|m| {
        let script = script.clone();
        async move {
            let session = connect(cloud, m, &r.spec.ssh.user, r.ssh_key, r.known, Duration::from_secs(10).min(options.ssh_deadline)).await?;
            let out = tokio::task::spawn_blocking(move || session.sudo_script(&script))
                .await
                .map_err(|e| BootstrapError::Other(e.to_string()))?
                .map_err(|source| BootstrapError::Ssh { node: m.name.clone(), step: "closing connections to the lost master".into(), source: Box::new(source) })?;
            Ok::<_, BootstrapError>((m.name.as_str(), out))
        }
    });
    for result in futures::future::join_all(drops).await {
        match result {
            Ok((node, out)) if out.status == 0 && out.stdout.trim() == "0" => tracing::info!(node, ?lost, "closed the connections to the lost master"),
            Ok((node, out)) => tracing::warn!(node, ?lost, status = out.status, open = out.stdout.trim(), stderr = out.stderr.trim(), "connections to the lost master are still open"),
            Err(e) => tracing::warn!(error = %e, "closing connections to the lost master"),
        }
    }
}

async fn wait_until<F, Fut>(deadline: Duration, what: &str, mut probe: F) -> Result<(), BootstrapError>
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = Option<()>>,
{
    let start = Instant::now();
    loop {
        if probe().await.is_some() {
            return Ok(());
        }
        if start.elapsed() > deadline {
            return Err(BootstrapError::Timeout { what: what.into(), waited: deadline, pending: "no answer".into() });
        }
        tokio::time::sleep(Duration::from_millis(300)).await;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn url_ip_reads_the_address_of_a_member_url() {
        assert_eq!(url_ip("https://10.0.1.12:2380"), Some(IpAddr::from([10, 0, 1, 12])));
        assert_eq!(url_ip("http://127.0.0.1:2379/"), Some(IpAddr::from([127, 0, 0, 1])));
        assert_eq!(url_ip("https://[fd00::5]:2380"), "fd00::5".parse().ok());
        assert_eq!(url_ip("https://etcd.example:2380"), None);
    }
}
