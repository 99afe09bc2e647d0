//! Snapshots of a master's store, and restoring one: what `clusterctl backup` and `clusterctl
//! restore` run on the masters over SSH (`clusterctl node snapshot|restore`), and the scheduled
//! snapshots every master keeps in `<data_dir>/snapshots`.
//!
//! An HA master's snapshot is an etcd snapshot (etcd's maintenance API, through the local member);
//! a single master's is a consistent copy of the embedded SQLite store (`VACUUM INTO`, safe while
//! the API server writes). Restoring needs the master (and etcd) stopped: the embedded store's file
//! is replaced; an etcd member's data folder is rebuilt from the snapshot by `etcdctl snapshot
//! restore` with the cluster's current members. The data they replace is kept beside them, named
//! `*.before-restore-<unix time>`.

use std::path::{Path, PathBuf};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use anyhow::{Context, Result};

use crate::nodeconfig::NodeConfig;
use crate::apiserver::store::EtcdCluster;

fn unix_now() -> u64 {
    SystemTime::now().duration_since(UNIX_EPOCH).map(|d| d.as_secs()).unwrap_or(0)
}

/// The embedded store's file.
pub fn store_path(config: &NodeConfig) -> PathBuf {
    config.data_dir.join("store.db")
}

fn is_ha(config: &NodeConfig) -> bool {
    config.master.as_ref().is_some_and(|m| m.etcd.is_some())
}

/// Writes a snapshot of this master's store to `out` (mode 0600).
pub async fn snapshot(config: &NodeConfig, out: &Path) -> Result<()> {
    let tmp = out.with_extension("partial");
    let _ = std::fs::remove_file(&tmp);
    if is_ha(config) {
        let cluster = EtcdCluster::connect(&crate::nodeconfig::etcd::local_options(&config.data_dir)?).await.context("connecting to the local etcd member")?;
        cluster.snapshot_to(&tmp).await.context("taking an etcd snapshot")?;
    } else {
        let db = store_path(config);
        let target = tmp.to_str().context("the snapshot path is not UTF-8")?.to_string();
        tokio::task::spawn_blocking(move || -> Result<()> {
            let conn = rusqlite::Connection::open_with_flags(&db, rusqlite::OpenFlags::SQLITE_OPEN_READ_ONLY).with_context(|| format!("opening {}", db.display()))?;
            conn.busy_timeout(Duration::from_secs(10))?;
            conn.execute("VACUUM INTO ?1", [target]).with_context(|| format!("copying {}", db.display()))?;
            Ok(())
        })
        .await??;
    }
    restrict(&tmp)?;
    std::fs::rename(&tmp, out).with_context(|| format!("moving the snapshot to {}", out.display()))?;
    Ok(())
}

fn restrict(path: &Path) -> Result<()> {
    use std::os::unix::fs::PermissionsExt;
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o600)).with_context(|| format!("restricting {}", path.display()))
}

/// Replaces this master's store with the snapshot `from`; the master and etcd must be stopped.
/// `initial_cluster` is the cluster's current members (`name=peer-url,...`), for an etcd member.
pub fn restore(config: &NodeConfig, from: &Path, initial_cluster: Option<&str>) -> Result<()> {
    let stamp = unix_now();
    if is_ha(config) {
        let initial_cluster = initial_cluster.context("restoring an etcd member needs --initial-cluster")?;
        let data = config.data_dir.join("etcd");
        let fresh = config.data_dir.join("etcd.restoring");
        if fresh.exists() {
            std::fs::remove_dir_all(&fresh).with_context(|| format!("removing {}", fresh.display()))?;
        }
        let out = std::process::Command::new("etcdctl")
            .env("ETCDCTL_API", "3")
            .arg("snapshot")
            .arg("restore")
            .arg(from)
            .arg("--name")
            .arg(&config.node_name)
            .arg("--initial-cluster")
            .arg(initial_cluster)
            .arg("--initial-cluster-token")
            .arg(&config.cluster)
            .arg("--initial-advertise-peer-urls")
            .arg(crate::nodeconfig::etcd::peer_url(config.internal_ip))
            .arg("--data-dir")
            .arg(&fresh)
            .output()
            .context("running etcdctl snapshot restore (Debian's etcd-client package)")?;
        if !out.status.success() {
            anyhow::bail!("etcdctl snapshot restore failed: {}", String::from_utf8_lossy(&out.stderr).trim());
        }
        if data.exists() {
            let old = config.data_dir.join(format!("etcd.before-restore-{stamp}"));
            std::fs::rename(&data, &old).with_context(|| format!("moving {} aside", data.display()))?;
        }
        std::fs::rename(&fresh, &data).with_context(|| format!("moving the restored data to {}", data.display()))?;
        crate::home::restrict_dir(&data).context("restricting etcd's data folder")?;
    } else {
        let db = store_path(config);
        // Checked before anything is moved: a file that is not a store changes nothing.
        let conn = rusqlite::Connection::open_with_flags(from, rusqlite::OpenFlags::SQLITE_OPEN_READ_ONLY).with_context(|| format!("opening {}", from.display()))?;
        let objects: i64 = conn.query_row("SELECT count(*) FROM objects", [], |r| r.get(0)).with_context(|| format!("{} is not a snapshot of the embedded store", from.display()))?;
        drop(conn);
        tracing::info!(objects, "restoring the embedded store");
        if db.exists() {
            std::fs::rename(&db, db.with_extension(format!("db.before-restore-{stamp}"))).with_context(|| format!("moving {} aside", db.display()))?;
        }
        for suffix in ["db-wal", "db-shm"] {
            let _ = std::fs::remove_file(db.with_extension(suffix));
        }
        std::fs::copy(from, &db).with_context(|| format!("copying the snapshot to {}", db.display()))?;
        restrict(&db)?;
    }
    Ok(())
}

/// An etcd member is defragmented after a scheduled snapshot when at least this much of its
/// database file, and half of it, is free.
pub const DEFRAGMENT_MIN_FREE: i64 = 16 << 20;

/// Defragments this master's own etcd member when compaction has left most of its file free (see
/// [`crate::apiserver::store::EtcdCluster::defragment_when_fragmented`]); each master does its own
/// member on its own schedule, so they are not all blocked at once.
async fn defragment_local_member(config: &NodeConfig) {
    if config.master.as_ref().is_none_or(|m| m.etcd.is_none()) {
        return;
    }
    let result = async {
        let options = crate::nodeconfig::etcd::local_options(&config.data_dir)?;
        let cluster = crate::apiserver::store::EtcdCluster::connect(&options).await?;
        anyhow::Ok(cluster.defragment_when_fragmented(DEFRAGMENT_MIN_FREE).await?)
    }
    .await;
    match result {
        Ok(Some((before, after))) => tracing::info!(before, after, "defragmented the local etcd member"),
        Ok(None) => {}
        Err(e) => tracing::warn!(error = format!("{e:#}"), "defragmenting the local etcd member"),
    }
}

/// Takes a snapshot into `<data_dir>/snapshots` every `every`, keeping the newest `keep`; an HA
/// master then defragments its own etcd member when that is worth it.
pub async fn run_scheduled(config: NodeConfig, every: Duration, keep: usize) {
    let dir = config.data_dir.join("snapshots");
    loop {
        tokio::time::sleep(every).await;
        let result = async {
            std::fs::create_dir_all(&dir).with_context(|| format!("creating {}", dir.display()))?;
            crate::home::restrict_dir(&dir)?;
            snapshot(&config, &dir.join(format!("snapshot-{}.db", unix_now()))).await?;
            defragment_local_member(&config).await;
            let mut taken: Vec<PathBuf> = std::fs::read_dir(&dir)?
                .filter_map(|e| e.ok().map(|e| e.path()))
                .filter(|p| p.file_name().and_then(|n| n.to_str()).is_some_and(|n| n.starts_with("snapshot-") && n.ends_with(".db")))
                .collect();
            taken.sort();
            let excess = taken.len().saturating_sub(keep);
            for old in &taken[..excess] {
                std::fs::remove_file(old).with_context(|| format!("removing {}", old.display()))?;
            }
            anyhow::Ok(())
        }
        .await;
        if let Err(e) = result {
            tracing::warn!(error = format!("{e:#}"), "taking the scheduled snapshot");
        }
    }
}
