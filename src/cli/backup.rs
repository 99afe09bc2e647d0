//! `clusterctl backup` and `clusterctl restore`: a snapshot of the cluster's store, taken on a
//! master and downloaded over SSH, and putting one back on every master
//! ([`crate::bootstrap::backup`] does the work and says what runs where).

use std::path::PathBuf;
use std::time::{Instant, SystemTime, UNIX_EPOCH};

use clap::Args;

use super::progress::TerminalReport;
use super::{connect, load_spec, Failure, Global};
use crate::bootstrap::backup::{self, MasterSession};
use crate::bootstrap::hostkeys::KnownHosts;
use crate::home::ClusterHome;
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

/// The cluster's running masters, in slot order, each with an SSH session.
pub async fn master_sessions(global: &Global, spec: &ClusterSpec) -> Result<Vec<MasterSession>, Failure> {
    let cloud = connect(global, spec).await;
    let home = ClusterHome::of(spec.name.as_str());
    let key = home.ssh_key(spec)?;
    let known = KnownHosts::at(home.dir.join("known_hosts"));
    Ok(backup::master_sessions(cloud.as_ref(), spec, &key.private_path, &known).await?)
}

/// The cluster's running workers of the spec's pools, each with an SSH session.
pub async fn worker_sessions(global: &Global, spec: &ClusterSpec) -> Result<Vec<MasterSession>, Failure> {
    let cloud = connect(global, spec).await;
    let home = ClusterHome::of(spec.name.as_str());
    let key = home.ssh_key(spec)?;
    let known = KnownHosts::at(home.dir.join("known_hosts"));
    Ok(backup::node_sessions(cloud.as_ref(), spec, &key.private_path, &known, false).await?)
}

fn unix_now() -> u64 {
    SystemTime::now().duration_since(UNIX_EPOCH).map(|d| d.as_secs()).unwrap_or(0)
}

/// Runs `backup`.
pub async fn run_backup(global: &Global, args: &BackupArgs) -> Result<(), Failure> {
    let spec = load_spec(&args.file)?;
    let out = args.out.clone().unwrap_or_else(|| PathBuf::from(format!("{}-{}.snapshot", spec.name, unix_now())));
    let masters = master_sessions(global, &spec).await?;
    let report = TerminalReport::new(global.quiet);
    let snapshot = backup::take_snapshot(&spec, masters, &report).await;
    report.finish();
    let snapshot = snapshot?;
    crate::pki::files::write_file_atomic(&out, &snapshot.bytes, 0o600).map_err(|e| Failure::Operation(anyhow::Error::new(e).context(format!("writing {}", out.display()))))?;
    println!("backup of cluster {} written to {} ({} bytes, {} from {})", spec.name, out.display(), snapshot.bytes.len(), snapshot.kind, snapshot.master);
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
    let client = super::get::cluster_client(Some(&args.file), None)?;
    let masters = master_sessions(global, &spec).await?;
    let report = TerminalReport::new(global.quiet);
    let restored = backup::restore(&spec, masters, bytes, &client, &report).await;
    report.finish();
    restored?;
    println!("restored cluster {} from {} in {:.1}s", spec.name, args.from.display(), started.elapsed().as_secs_f64());
    Ok(())
}
