//! Backups from the operator's side: a snapshot of the cluster's store taken on a master and
//! downloaded over SSH, and a snapshot put back on every master.
//!
//! What runs on the masters is `clusterctl node snapshot|restore` ([`crate::node::backup`]): an
//! etcd snapshot on an HA control plane, a copy of the embedded store on a single master. Restore
//! stops every master's control plane (workloads keep running on the workers), rebuilds each
//! master's store from the snapshot (etcd members with the cluster's current membership), starts
//! them again and waits until the API answers through the load balancer.

use std::path::Path;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use super::machines::Machine;
use super::{BootstrapError, DATA_DIR};
use super::hostkeys::KnownHosts;
use super::ssh::{shell_quote, SshError, SshSession};
use crate::client::ApiClient;
use crate::cloud::{Cloud, InstanceState};
use crate::provision::inventory::pool_slot;
use crate::provision::ProvisionError;
use crate::report::Reporter;
use crate::spec::ClusterSpec;

/// How long the API may take to answer again after a restore.
const RESTORE_DEADLINE: Duration = Duration::from_secs(300);

/// Why a backup or a restore failed.
#[derive(Debug, thiserror::Error)]
pub enum BackupError {
    /// The cluster's machines could not be listed.
    #[error("finding the masters of cluster {cluster}")]
    Discover {
        /// The cluster.
        cluster: String,
        /// What the cloud said.
        #[source]
        source: ProvisionError,
    },
    /// No master is running.
    #[error("cluster {0} has no running master")]
    NoMaster(String),
    /// Reaching a master, or a step on one, failed.
    #[error(transparent)]
    Bootstrap(#[from] BootstrapError),
    /// The control plane did not come back after a restore.
    #[error("the API did not answer within {} minutes of the restore; the masters' journals (journalctl -u clusterctl-master -u clusterctl-etcd) say why", .0.as_secs() / 60)]
    NotBack(Duration),
}

/// A master reached over SSH.
pub type MasterSession = (Machine, SshSession);

/// The cluster's running masters, in slot order, each with an SSH session.
pub async fn master_sessions(cloud: &dyn Cloud, spec: &ClusterSpec, ssh_key: &Path, known: &KnownHosts) -> Result<Vec<MasterSession>, BackupError> {
    let masters = node_sessions(cloud, spec, ssh_key, known, true).await?;
    if masters.is_empty() {
        return Err(BackupError::NoMaster(spec.name.to_string()));
    }
    Ok(masters)
}

/// The cluster's running machines of the master pool (`masters`) or of the spec's worker pools,
/// in pool and slot order, each with an SSH session.
pub async fn node_sessions(cloud: &dyn Cloud, spec: &ClusterSpec, ssh_key: &Path, known: &KnownHosts, masters: bool) -> Result<Vec<MasterSession>, BackupError> {
    let inventory = crate::provision::discover(cloud, spec.name.as_str()).await.map_err(|source| BackupError::Discover { cluster: spec.name.to_string(), source })?;
    let is_master = |pool: &str| pool == spec.masters.name.as_str();
    let mut machines: Vec<(String, u32, Machine)> = inventory
        .instances
        .iter()
        .filter(|i| i.state == InstanceState::Running)
        .filter_map(|i| {
            let (pool, slot) = pool_slot(i).filter(|(pool, _)| is_master(pool) == masters)?;
            let node_pool = spec.pool(&pool)?;
            Some((pool.clone(), slot, super::machine(spec, node_pool, slot, i)))
        })
        .collect();
    machines.sort_by(|a, b| (&a.0, a.1).cmp(&(&b.0, b.1)));
    let mut out = Vec::new();
    for (_, _, m) in machines {
        let session = super::connect(cloud, &m, &spec.ssh.user, ssh_key, known, Duration::from_secs(60)).await?;
        out.push((m, session));
    }
    Ok(out)
}

/// A snapshot downloaded from a master.
#[derive(Debug)]
pub struct Snapshot {
    /// The snapshot file's contents.
    pub bytes: Vec<u8>,
    /// What it is a snapshot of: `etcd snapshot` or `copy of the embedded store`.
    pub kind: &'static str,
    /// The master it was taken on.
    pub master: String,
}

/// Takes a snapshot of the store on the first of `masters` and downloads it.
pub async fn take_snapshot(spec: &ClusterSpec, masters: Vec<MasterSession>, reporter: &dyn Reporter) -> Result<Snapshot, BackupError> {
    let (machine, session) = masters.into_iter().next().ok_or_else(|| BackupError::NoMaster(spec.name.to_string()))?;
    let kind = if spec.masters.count > 1 { "etcd snapshot" } else { "copy of the embedded store" };
    reporter.phase(&format!("taking a {kind} on {}", machine.name));
    let remote = format!("{}/backups/backup-{}.db", DATA_DIR, unix_now());
    let session = Arc::new(Mutex::new(session));
    let command = format!("install -d -m 700 {dir} && /usr/local/bin/clusterctl node snapshot --out {r}", dir = shell_quote(&format!("{}/backups", DATA_DIR)), r = shell_quote(&remote));
    on_master(&session, &machine.name, "taking the snapshot", move |s| s.sudo(&command)).await?;
    reporter.item(&machine.name, "downloading the snapshot");
    let bytes = on_master(&session, &machine.name, "downloading the snapshot", move |s| {
        let bytes = s.download(&remote)?;
        // The copy on the master was only the way out; a failed removal leaves a file in backups/.
        let _ = s.sudo(&format!("rm -f {}", shell_quote(&remote)));
        Ok(bytes)
    })
    .await?;
    reporter.item_done(&machine.name, &format!("{kind} downloaded ({} bytes)", bytes.len()));
    Ok(Snapshot { bytes, kind, master: machine.name })
}

/// Puts `snapshot` back on every one of `masters` (the control plane restarts; workloads keep
/// running) and waits until `api` answers again.
pub async fn restore(spec: &ClusterSpec, masters: Vec<MasterSession>, snapshot: Vec<u8>, api: &ApiClient, reporter: &dyn Reporter) -> Result<(), BackupError> {
    let machines: Vec<Machine> = masters.iter().map(|(m, _)| m.clone()).collect();
    let sessions: Vec<Arc<Mutex<SshSession>>> = masters.into_iter().map(|(_, s)| Arc::new(Mutex::new(s))).collect();
    let ha = spec.masters.count > 1;
    let initial_cluster = if ha {
        let refs: Vec<&Machine> = machines.iter().collect();
        Some(super::etcd_settings(&refs, "existing")?.initial_cluster.join(","))
    } else {
        None
    };
    let remote = format!("{}/restore.db", DATA_DIR);
    let snapshot = Arc::new(snapshot);
    reporter.phase(&format!("uploading the snapshot to {} masters", machines.len()));
    for (m, s) in machines.iter().zip(&sessions) {
        reporter.item(&m.name, "uploading the snapshot");
        let (snapshot, remote) = (snapshot.clone(), remote.clone());
        on_master(s, &m.name, "uploading the snapshot", move |s| s.upload(&snapshot, &remote, 0o600)).await?;
        reporter.item_done(&m.name, "snapshot uploaded");
    }
    reporter.phase(&format!("stopping the control plane on {} masters", machines.len()));
    for (m, s) in machines.iter().zip(&sessions) {
        on_master(s, &m.name, "stopping the control plane", |s| s.sudo("systemctl stop clusterctl-master.service; systemctl stop clusterctl-etcd.service 2>/dev/null; true")).await?;
        reporter.item_done(&m.name, "control plane stopped");
    }
    reporter.phase("restoring the store on every master");
    for (m, s) in machines.iter().zip(&sessions) {
        reporter.item(&m.name, "restoring the store");
        let mut command = format!("/usr/local/bin/clusterctl node restore --from {}", shell_quote(&remote));
        if let Some(ic) = &initial_cluster {
            command.push_str(&format!(" --initial-cluster {}", shell_quote(ic)));
        }
        on_master(s, &m.name, "restoring the store", move |s| s.sudo(&command)).await?;
        reporter.item_done(&m.name, "store restored");
    }
    reporter.phase("starting the control plane again");
    for (m, s) in machines.iter().zip(&sessions) {
        let start = if ha { "systemctl start --no-block clusterctl-etcd.service && systemctl start clusterctl-master.service" } else { "systemctl start clusterctl-master.service" };
        let command = format!("{start} && rm -f {}", shell_quote(&remote));
        on_master(s, &m.name, "starting the control plane", move |s| s.sudo(&command)).await?;
        reporter.item_done(&m.name, "control plane started");
    }
    let started = Instant::now();
    loop {
        if api.request_text("GET", "/readyz").await.is_ok() {
            reporter.done("the API answers");
            return Ok(());
        }
        if started.elapsed() > RESTORE_DEADLINE {
            return Err(BackupError::NotBack(RESTORE_DEADLINE));
        }
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
}

/// Runs `step` (blocking SSH) with a master's session on a blocking thread.
pub(super) async fn on_master<T, F>(session: &Arc<Mutex<SshSession>>, node: &str, step: &str, work: F) -> Result<T, BootstrapError>
where
    T: Send + 'static,
    F: FnOnce(&SshSession) -> Result<T, SshError> + Send + 'static,
{
    let failed = |source| BootstrapError::Ssh { node: node.to_string(), step: step.to_string(), source: Box::new(source) };
    let session = session.clone();
    tokio::task::spawn_blocking(move || {
        // A poisoned lock only means another step panicked; the session itself is still usable.
        let s = session.lock().unwrap_or_else(|p| p.into_inner());
        work(&s)
    })
    .await
    .map_err(|e| BootstrapError::Node { node: node.to_string(), step: step.to_string(), message: e.to_string() })?
    .map_err(failed)
}

fn unix_now() -> u64 {
    SystemTime::now().duration_since(UNIX_EPOCH).map(|d| d.as_secs()).unwrap_or(0)
}
