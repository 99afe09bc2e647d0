//! `clusterctl backup` and `clusterctl restore`: a snapshot of the cluster's store, taken on a
//! master and downloaded over SSH, and putting one back on every master.
//!
//! What runs on the masters is `clusterctl node snapshot|restore` ([`crate::node::backup`]): an
//! etcd snapshot on an HA control plane, a copy of the embedded store on a single master. Restore
//! stops every master's control plane (workloads keep running on the workers), rebuilds each
//! master's store from the snapshot (etcd members with the cluster's current membership), starts
//! them again and waits until the API answers through the load balancer.

use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use clap::Args;

use super::{connect, load_spec, Failure, Global};
use crate::bootstrap::cluster::{self, Machine};
use crate::bootstrap::hostkeys::KnownHosts;
use crate::bootstrap::ssh::{shell_quote, SshSession};
use crate::home::ClusterHome;
use crate::provision::inventory::pool_slot;
use crate::spec::ClusterSpec;

/// Arguments of `backup`.
#[derive(Debug, Args)]
pub struct BackupArgs {
    /// The cluster spec (TOML).
    #[arg(short = 'f', long = "file")]
    pub file: PathBuf,
    /// Where to write the snapshot (default: `<cluster>-<unix time>.snapshot` here).
    #[arg(long)]
    pub out: Option<PathBuf>,
}

/// Arguments of `restore`.
#[derive(Debug, Args)]
pub struct RestoreArgs {
    /// The cluster spec (TOML).
    #[arg(short = 'f', long = "file")]
    pub file: PathBuf,
    /// The snapshot `clusterctl backup` wrote.
    #[arg(long)]
    pub from: PathBuf,
}

fn op(e: impl Into<anyhow::Error>, what: &str) -> Failure {
    Failure::Operation(e.into().context(what.to_string()))
}

/// The cluster's running masters, in slot order, each with an SSH session.
pub async fn master_sessions(global: &Global, spec: &ClusterSpec) -> Result<Vec<(Machine, SshSession)>, Failure> {
    let cloud = connect(global, spec).await;
    let inventory = crate::provision::discover(cloud.as_ref(), spec.name.as_str()).await?;
    let mut masters: Vec<(u32, Machine)> = inventory
        .instances
        .iter()
        .filter(|i| i.state == crate::cloud::InstanceState::Running)
        .filter_map(|i| pool_slot(i).filter(|(pool, _)| pool == spec.masters.name.as_str()).map(|(_, slot)| (slot, cluster::machine(spec, &spec.masters, slot, i))))
        .collect();
    masters.sort_by_key(|(slot, _)| *slot);
    if masters.is_empty() {
        return Err(Failure::Operation(anyhow::anyhow!("cluster {} has no running master", spec.name)));
    }
    let home = ClusterHome::of(spec.name.as_str());
    let key = home.ssh_key(spec)?;
    let known = KnownHosts::at(home.dir.join("known_hosts"));
    let mut out = Vec::new();
    for (_, m) in masters {
        let session = cluster::connect(cloud.as_ref(), &m, &spec.ssh.user, &key.private_path, &known, Duration::from_secs(60))
            .await
            .map_err(|e| op(e, &format!("reaching master {}", m.name)))?;
        out.push((m, session));
    }
    Ok(out)
}

/// Runs a root command on a session in a blocking thread.
async fn sudo(session: &Arc<std::sync::Mutex<SshSession>>, command: String, what: String) -> Result<String, Failure> {
    let session = session.clone();
    tokio::task::spawn_blocking(move || {
        let s = session.lock().map_err(|_| Failure::Operation(anyhow::anyhow!("session lock poisoned")))?;
        s.sudo(&command).map(|o| o.stdout).map_err(|e| op(e, &what))
    })
    .await
    .map_err(|e| op(e, "running a command on a master"))?
}

fn unix_now() -> u64 {
    SystemTime::now().duration_since(UNIX_EPOCH).map(|d| d.as_secs()).unwrap_or(0)
}

/// Runs `backup`.
pub async fn run_backup(global: &Global, args: &BackupArgs) -> Result<(), Failure> {
    let spec = load_spec(&args.file)?;
    let out = args.out.clone().unwrap_or_else(|| PathBuf::from(format!("{}-{}.snapshot", spec.name, unix_now())));
    let masters = master_sessions(global, &spec).await?;
    let (machine, session) = masters.into_iter().next().expect("at least one master");
    let kind = if spec.masters.count > 1 { "etcd snapshot" } else { "copy of the embedded store" };
    eprintln!("taking a {kind} on {}", machine.name);
    let remote = format!("{}/backups/backup-{}.db", cluster::DATA_DIR, unix_now());
    let session = Arc::new(std::sync::Mutex::new(session));
    sudo(
        &session,
        format!("install -d -m 700 {dir} && /usr/local/bin/clusterctl node snapshot --out {r}", dir = shell_quote(&format!("{}/backups", cluster::DATA_DIR)), r = shell_quote(&remote)),
        format!("taking the snapshot on {}", machine.name),
    )
    .await?;
    let bytes = {
        let (session, remote) = (session.clone(), remote.clone());
        tokio::task::spawn_blocking(move || {
            let s = session.lock().map_err(|_| Failure::Operation(anyhow::anyhow!("session lock poisoned")))?;
            let bytes = s.download(&remote).map_err(|e| op(e, "downloading the snapshot"))?;
            let _ = s.sudo(&format!("rm -f {}", shell_quote(&remote)));
            Ok::<_, Failure>(bytes)
        })
        .await
        .map_err(|e| op(e, "downloading the snapshot"))??
    };
    crate::pki::files::write_file_atomic(&out, &bytes, 0o600).map_err(|e| op(e, &format!("writing {}", out.display())))?;
    println!("backup of cluster {} written to {} ({} bytes, {kind} from {})", spec.name, out.display(), bytes.len(), machine.name);
    Ok(())
}

/// Runs `restore`.
pub async fn run_restore(global: &Global, args: &RestoreArgs) -> Result<(), Failure> {
    let spec = load_spec(&args.file)?;
    let bytes = std::fs::read(&args.from).map_err(|e| Failure::Input(anyhow::anyhow!("{}: cannot read the snapshot: {e}", args.from.display())))?;
    if bytes.is_empty() {
        return Err(Failure::Input(anyhow::anyhow!("{}: the snapshot is empty", args.from.display())));
    }
    let started = Instant::now();
    let masters = master_sessions(global, &spec).await?;
    let machines: Vec<Machine> = masters.iter().map(|(m, _)| m.clone()).collect();
    let sessions: Vec<Arc<std::sync::Mutex<SshSession>>> = masters.into_iter().map(|(_, s)| Arc::new(std::sync::Mutex::new(s))).collect();
    let ha = spec.masters.count > 1;
    let initial_cluster = if ha {
        let refs: Vec<&Machine> = machines.iter().collect();
        Some(cluster::etcd_settings(&refs, "existing").map_err(|e| op(e, "listing the etcd members"))?.initial_cluster.join(","))
    } else {
        None
    };
    let remote = format!("{}/restore.db", cluster::DATA_DIR);
    let bytes = Arc::new(bytes);
    for (m, s) in machines.iter().zip(&sessions) {
        eprintln!("{}: uploading the snapshot", m.name);
        let (s, bytes, remote) = (s.clone(), bytes.clone(), remote.clone());
        tokio::task::spawn_blocking(move || {
            let s = s.lock().map_err(|_| Failure::Operation(anyhow::anyhow!("session lock poisoned")))?;
            s.upload(&bytes, &remote, 0o600).map_err(|e| op(e, "uploading the snapshot"))
        })
        .await
        .map_err(|e| op(e, "uploading the snapshot"))??;
    }
    eprintln!("stopping the control plane on {} masters", machines.len());
    for (m, s) in machines.iter().zip(&sessions) {
        sudo(s, "systemctl stop clusterctl-master.service; systemctl stop clusterctl-etcd.service 2>/dev/null; true".into(), format!("stopping the control plane on {}", m.name)).await?;
    }
    for (m, s) in machines.iter().zip(&sessions) {
        eprintln!("{}: restoring the store", m.name);
        let mut command = format!("/usr/local/bin/clusterctl node restore --from {}", shell_quote(&remote));
        if let Some(ic) = &initial_cluster {
            command.push_str(&format!(" --initial-cluster {}", shell_quote(ic)));
        }
        sudo(s, command, format!("restoring the store on {}", m.name)).await?;
    }
    eprintln!("starting the control plane again");
    for (m, s) in machines.iter().zip(&sessions) {
        let command = if ha { "systemctl start --no-block clusterctl-etcd.service && systemctl start clusterctl-master.service" } else { "systemctl start clusterctl-master.service" };
        sudo(s, format!("{command} && rm -f {}", shell_quote(&remote)), format!("starting the control plane on {}", m.name)).await?;
    }
    let client = super::get::cluster_client(Some(&args.file), None)?;
    let deadline = Instant::now() + Duration::from_secs(300);
    loop {
        if client.request_text("GET", "/readyz").await.is_ok() {
            break;
        }
        if Instant::now() > deadline {
            return Err(Failure::Operation(anyhow::anyhow!("the API did not answer within 5 minutes of the restore; the masters' journals (journalctl -u clusterctl-master -u clusterctl-etcd) say why")));
        }
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
    println!("restored cluster {} from {} in {:.1}s", spec.name, args.from.display(), started.elapsed().as_secs_f64());
    Ok(())
}
