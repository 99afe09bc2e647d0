//! Replacing a lost master of an HA control plane, from a running master (the machine
//! controller): etcd membership first (stale members removed while a quorum remains, the new one
//! added), then the new machine gets the masters' CAs (the cluster's and etcd's), the images
//! loaded into the cluster and the master software, and its node must become Ready.

use std::net::IpAddr;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use super::hostkeys::KnownHosts;
use super::install::{install_master, node_spec_copy, upload_ca, Artifacts, CaPair, ControlPlane, Packing, MASTER_CAS};
use super::machines::{connect, wait_ready, Machine};
use super::ssh::{NodeShell, SharedShell};
use super::{BootstrapError, BootstrapOptions, IMAGES_DIR, PKI_DIR};
use crate::client::ApiClient;
use crate::cloud::Cloud;
use crate::nodeconfig::etcd;
use crate::nodeconfig::CloudSettings;
use crate::report::Reporter;
use crate::spec::ClusterSpec;

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
/// others keep a quorum; the new machine is added as a member; it gets the masters' CAs, the images
/// loaded into the cluster and the master software with `initial_cluster_state = existing`; then
/// its node must become Ready.
pub async fn add_master(cloud: &dyn Cloud, client: &ApiClient, r: &MasterReplacement<'_>, options: &BootstrapOptions, reporter: &dyn Reporter) -> Result<(), BootstrapError> {
    use crate::apiserver::store::EtcdCluster;
    let other = |step: &str, e: &dyn std::fmt::Display| BootstrapError::Node { node: r.new.name.clone(), step: step.into(), message: e.to_string() };
    let pki_dir = r.data_dir.join("pki");
    let local = etcd::local_options(r.data_dir).map_err(|e| other("reading this master's etcd credentials", &format!("{e:#}")))?;
    let mut cas = Vec::new();
    for stem in MASTER_CAS {
        let read = |ext: &str| std::fs::read_to_string(pki_dir.join(format!("{stem}.{ext}"))).map_err(|e| other(&format!("reading this master's {stem}.{ext}"), &e));
        cas.push(CaPair { stem: stem.into(), cert: read("crt")?, key: read("key")? });
    }
    // A CA rotation under way: its files too (`pki::rotation::FILES`, those this master has).
    let rotation: Vec<RotationFile> =
        crate::pki::rotation::FILES.iter().filter_map(|(name, mode)| Some(((*name).to_string(), std::fs::read_to_string(pki_dir.join(name)).ok()?, *mode))).collect();
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
    let session: SharedShell = Arc::new(std::sync::Mutex::new(session));
    {
        let (session, cas, rotation) = (session.clone(), cas.clone(), rotation.clone());
        let images: Vec<PathBuf> = std::fs::read_dir(IMAGES_DIR).map(|d| d.filter_map(|e| e.ok()).map(|e| e.path()).collect()).unwrap_or_default();
        tokio::task::spawn_blocking(move || -> Result<(), BootstrapError> {
            let s = session.lock().map_err(|_| BootstrapError::Other("session lock poisoned".into()))?;
            give_ca_and_images(&*s, &cas, &rotation, &images)
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

/// A file of a CA rotation under way: its name in the PKI folder, contents and mode.
pub(super) type RotationFile = (String, String, u32);

/// Gives a new master the cluster CA (refused when it has another), the files of a CA rotation
/// under way, and then the image tarballs loaded into the cluster (`images`: the `.tar` files
/// among them), each 0600 in [`IMAGES_DIR`], before its install starts the agent that needs them
/// (blocking).
pub(super) fn give_ca_and_images(s: &dyn NodeShell, cas: &[CaPair], rotation: &[RotationFile], images: &[PathBuf]) -> Result<(), BootstrapError> {
    cas.iter().try_for_each(|pair| upload_ca(s, pair))?;
    let node = s.node().to_string();
    for (name, contents, mode) in rotation {
        s.upload(contents.as_bytes(), &format!("{PKI_DIR}/{name}"), *mode)
            .map_err(|source| BootstrapError::Ssh { node: node.clone(), step: format!("copying the CA rotation's {name}"), source: Box::new(source) })?;
    }
    for tar in images.iter().filter(|p| p.extension().is_some_and(|x| x == "tar")) {
        let bytes = std::fs::read(tar).map_err(|e| BootstrapError::Node { node: node.clone(), step: format!("reading {}", tar.display()), message: e.to_string() })?;
        let remote = format!("{IMAGES_DIR}/{}", tar.file_name().and_then(|f| f.to_str()).unwrap_or("image.tar"));
        s.upload(&bytes, &remote, 0o600).map_err(|source| BootstrapError::Ssh { node: node.clone(), step: format!("copying image {}", tar.display()), source: Box::new(source) })?;
    }
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

    use crate::bootstrap::fake::FakeShell;

    fn images() -> (tempfile::TempDir, Vec<PathBuf>) {
        let dir = tempfile::tempdir().unwrap();
        let tar = dir.path().join("web.tar");
        let other = dir.path().join("notes.txt");
        std::fs::write(&tar, b"tar").unwrap();
        std::fs::write(&other, b"not an image").unwrap();
        (dir, vec![other, tar])
    }

    fn cas() -> Vec<CaPair> {
        MASTER_CAS.iter().map(|stem| CaPair { stem: (*stem).into(), cert: "CERT".into(), key: "KEY".into() }).collect()
    }

    #[test]
    fn a_replacement_master_gets_the_ca_then_the_clusters_images() {
        let shell = FakeShell::new("demo-masters-2");
        shell.answer("cat", 1, "");
        let (_dir, images) = images();
        give_ca_and_images(&shell, &cas(), &[], &images).unwrap();
        let pki = crate::nodeconfig::PKI_DIR;
        assert_eq!(
            shell.uploads(),
            vec![
                (format!("{pki}/ca.key"), 0o600),
                (format!("{pki}/ca.crt"), 0o644),
                (format!("{pki}/etcd-ca.key"), 0o600),
                (format!("{pki}/etcd-ca.crt"), 0o644),
                (format!("{IMAGES_DIR}/web.tar"), 0o600)
            ],
            "both CAs, then only the .tar files as images"
        );
    }

    #[test]
    fn a_replacement_during_a_ca_rotation_gets_its_files_after_the_cas() {
        let shell = FakeShell::new("demo-masters-2");
        shell.answer("cat", 1, "");
        let rotation: Vec<RotationFile> = crate::pki::rotation::FILES.iter().map(|(n, m)| ((*n).to_string(), "PEM".to_string(), *m)).collect();
        give_ca_and_images(&shell, &cas(), &rotation, &[]).unwrap();
        let pki = crate::nodeconfig::PKI_DIR;
        assert_eq!(
            shell.uploads()[4..],
            [(format!("{pki}/ca-trusted.crt"), 0o644), (format!("{pki}/ca-next.crt"), 0o644), (format!("{pki}/ca-next.key"), 0o600)],
            "the trust and the next CA, its key 0600"
        );
    }

    #[test]
    fn a_replacement_with_another_ca_gets_nothing_more() {
        let shell = FakeShell::new("demo-masters-2");
        shell.answer("cat", 0, "ANOTHER");
        let (_dir, images) = images();
        assert!(give_ca_and_images(&shell, &cas(), &[], &images).is_err());
        assert!(shell.uploads().is_empty());
    }

    #[test]
    fn a_failed_image_copy_names_the_image() {
        let shell = FakeShell::new("demo-masters-2");
        shell.answer("cat", 1, "");
        shell.fail_upload("web.tar");
        let (_dir, images) = images();
        let err = give_ca_and_images(&shell, &cas(), &[], &images).unwrap_err();
        assert!(matches!(&err, BootstrapError::Ssh { node, step, .. } if node == "demo-masters-2" && step.contains("web.tar")), "{err}");
    }
}
