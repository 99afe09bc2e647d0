//! Workers joining: a join token made through the API, the workers installed in parallel with it
//! (a joined worker keeps its own token), joined workers with another binary upgraded one at a
//! time (cordon, drain, install, wait, uncordon), and new workers added from inside the cluster by
//! the machine controller.

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use super::hostkeys::KnownHosts;
use super::install::{install, Artifacts, BinaryFetch, Delivery, Packing};
use super::machines::{connect, wait_ready, Machine, Sessions};
use super::ssh::{self, SharedShell};
use super::{templates, BootstrapError, BootstrapOptions, DATA_DIR, IMAGES_DIR};
use crate::client::ApiClient;
use crate::cloud::Cloud;
use crate::nodeconfig::{ApiEndpoint, NodeConfig, NodeRole, WorkerSettings};
use crate::pki::JoinToken;
use crate::report::Reporter;

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
    /// The cluster's address blocks, for the workers' pod networks.
    pub network: Option<crate::nodeconfig::NodeNetwork>,
    /// The registries with CAs of their own the workers trust.
    pub registries: Vec<crate::spec::TrustedRegistry>,
    /// An endpoint other than AWS's for the workers' own cloud calls (the harness's).
    pub cloud_endpoint: Option<String>,
}

/// Makes a join token (a bootstrap-token Secret, through `client`) and installs the workers in
/// parallel over their sessions; returns the workers on which something changed.
pub(super) async fn install_workers(client: &ApiClient, join: &Join, workers: &[&Machine], sessions: &Sessions, artifacts: &Arc<Artifacts>, reporter: &dyn Reporter) -> Result<Vec<String>, BootstrapError> {
    let token = create_join_token(client, join.token_ttl).await?;
    install_with_token(join, workers, sessions, artifacts, &token, reporter).await
}

/// Whether a worker has joined and runs another binary than the one to install (then it is
/// upgraded, drained first).
pub(super) async fn needs_upgrade(session: &SharedShell, artifacts: &Arc<Artifacts>) -> Result<bool, BootstrapError> {
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
pub(super) async fn upgrade_worker(client: &ApiClient, join: &Join, m: &Machine, sessions: &Sessions, artifacts: &Arc<Artifacts>, token: &JoinToken, deadline: Duration, reporter: &dyn Reporter) -> Result<(), BootstrapError> {
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
pub(super) async fn create_join_token(client: &ApiClient, ttl: Duration) -> Result<JoinToken, BootstrapError> {
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
pub(super) async fn install_with_token(join: &Join, workers: &[&Machine], sessions: &Sessions, artifacts: &Arc<Artifacts>, token: &JoinToken, reporter: &dyn Reporter) -> Result<Vec<String>, BootstrapError> {
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
                    network: join.network,
                    registries: join.registries,
                    cloud_endpoint: join.cloud_endpoint,
                    ..m.node_config(&join.cluster, NodeRole::Worker, ApiEndpoint { endpoint: join.api_host, port: join.port })?
                };
                let toml = config.to_toml().map_err(|e| BootstrapError::Other(format!("rendering the config of {}: {e}", m.name)))?;
                let fetch = join.binary.as_ref().map(|b| (b, fetch_token.as_str()));
                install(&*s, &artifacts, NodeRole::Worker, &toml, fetch)
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
