//! `clusterctl node master`: the control plane on a master machine.
//!
//! On first start it makes the cluster's PKI under `<data_dir>/pki` (CA, the API server's serving
//! certificate, the admin's client certificate; keys mode 0600, never sent anywhere by the
//! master), re-issuing the serving certificate when the names it is reached by change. Then it
//! runs the API server on its durable store, the scheduler, the node lifecycle, deployment and
//! endpoints controllers, and an agent for the master's own Node, all but the server as
//! in-process clients of the API server.

use std::net::IpAddr;
use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use anyhow::{Context, Result};

use crate::agent;
use crate::apiserver::store::SqliteStore;
use crate::apiserver::{self, ApiServerConfig, ServerTls};
use crate::client::{ApiClient, ClientAuth};
use crate::controllers::{deployment, endpoints, node_lifecycle};
use crate::node::config::NodeConfig;
use crate::pki::{self, ClusterCa};

fn read(path: &Path) -> Option<String> {
    std::fs::read_to_string(path).ok()
}

/// Loads the cluster CA, making it on the very first start.
fn load_or_create_ca(dir: &Path, cluster: &str) -> Result<ClusterCa> {
    let (cert, key) = (dir.join("ca.crt"), dir.join("ca.key"));
    if let (Some(c), Some(k)) = (read(&cert), read(&key)) {
        return ClusterCa::from_pem(&c, &k).with_context(|| format!("loading the cluster CA from {}", dir.display()));
    }
    let ca = ClusterCa::generate(cluster).context("generating the cluster CA")?;
    pki::write_key_file(&key, &ca.key_pem().to_string()).context("writing the CA key")?;
    std::fs::write(&cert, ca.cert_pem().to_string()).with_context(|| format!("writing {}", cert.display()))?;
    Ok(ca)
}

/// Serving certificate and key, re-issued when they do not cover every wanted name.
fn serving_certificate(ca: &ClusterCa, dir: &Path, names: &[String], ips: &[IpAddr]) -> Result<(String, String)> {
    let (cert, key) = (dir.join("apiserver.crt"), dir.join("apiserver.key"));
    let wanted: Vec<String> = names.iter().cloned().chain(ips.iter().map(|i| i.to_string())).collect();
    if let (Some(c), Some(k)) = (read(&cert), read(&key)) {
        if pki::cert_matches_names(&c, &wanted).unwrap_or(false) {
            return Ok((c, k));
        }
        tracing::info!("re-issuing the serving certificate for {wanted:?}");
    }
    let issued = ca.issue_server(names, ips).context("issuing the serving certificate")?;
    pki::write_key_file(&key, &issued.key_pem).context("writing the serving key")?;
    std::fs::write(&cert, &issued.cert_pem).with_context(|| format!("writing {}", cert.display()))?;
    Ok((issued.cert_pem, issued.key_pem))
}

/// The admin's client certificate, made once; the operator fetches it over SSH.
fn admin_certificate(ca: &ClusterCa, dir: &Path) -> Result<()> {
    let (cert, key) = (dir.join("admin.crt"), dir.join("admin.key"));
    if cert.exists() && key.exists() {
        return Ok(());
    }
    let issued = ca.issue_client("admin", &["system:masters"]).context("issuing the admin certificate")?;
    pki::write_key_file(&key, &issued.key_pem).context("writing the admin key")?;
    // Written last: its presence tells the operator that the PKI is complete.
    pki::write_key_file(&cert, &issued.cert_pem).context("writing the admin certificate")?;
    Ok(())
}

/// Runs the master until the process is stopped.
pub async fn run(config: NodeConfig) -> Result<()> {
    let _ = rustls::crypto::ring::default_provider().install_default();
    let settings = config.master.clone().context("the config has no [master] section")?;
    let pki_dir = config.data_dir.join("pki");
    std::fs::create_dir_all(&pki_dir).with_context(|| format!("creating {}", pki_dir.display()))?;
    crate::home::restrict_dir(&pki_dir).context("restricting the PKI folder")?;
    let ca = load_or_create_ca(&pki_dir, &config.cluster)?;
    let (serving_cert, serving_key) = serving_certificate(&ca, &pki_dir, &settings.serving_names, &settings.serving_ips)?;

    let store_path = config.data_dir.join("store.db");
    let store = Arc::new(SqliteStore::open(&store_path).with_context(|| format!("opening the store {}", store_path.display()))?);
    let listener = tokio::net::TcpListener::bind(settings.listen).await.with_context(|| format!("listening on {}", settings.listen))?;
    let ca = Arc::new(ca);
    let api_config = ApiServerConfig {
        tls: ServerTls { cert_pem: serving_cert, key_pem: serving_key, client_ca_pem: ca.cert_pem().to_string() },
        csr_signer: ca.clone(),
        cluster_info_ca_pem: ca.cert_pem().to_string(),
    };
    let server = tokio::spawn(apiserver::serve(api_config, store, listener, shutdown_signal()));
    admin_certificate(&ca, &pki_dir)?;

    // In-process clients with certificates that exist only in memory.
    let local = format!("https://127.0.0.1:{}", settings.listen.port());
    let controller = ca.issue_client("system:kube-controller-manager", &["system:masters"])?;
    let controller_client = ApiClient::new(&local, ClientAuth::Certificate { ca_pem: ca.cert_pem().to_string(), cert_pem: controller.cert_pem, key_pem: controller.key_pem })?;
    tokio::spawn(node_lifecycle::run(
        controller_client.clone(),
        Duration::from_secs(settings.node_grace_seconds),
        Duration::from_secs(settings.pod_eviction_seconds),
    ));
    tokio::spawn(deployment::run(controller_client.clone()));
    tokio::spawn(endpoints::run(controller_client.clone()));
    if let Some(cloud) = settings.cloud.clone() {
        let (client, config, ca_pem) = (controller_client, config.clone(), ca.cert_pem().to_string());
        tokio::spawn(async move {
            if let Err(e) = crate::cloudcontroller::run(client, cloud, config, ca_pem).await {
                tracing::error!(error = format!("{e:#}"), "the cloud controller manager stopped");
            }
        });
    }
    let scheduler = ca.issue_client("system:kube-scheduler", &["system:masters"])?;
    let scheduler_client = ApiClient::new(&local, ClientAuth::Certificate { ca_pem: ca.cert_pem().to_string(), cert_pem: scheduler.cert_pem, key_pem: scheduler.key_pem })?;
    tokio::spawn(crate::scheduler::run(scheduler_client));

    let node = ca.issue_client(&format!("system:node:{}", config.node_name), &["system:nodes"])?;
    let node_client = ApiClient::new(&local, ClientAuth::Certificate { ca_pem: ca.cert_pem().to_string(), cert_pem: node.cert_pem, key_pem: node.key_pem })?;
    tokio::spawn(crate::proxy::run(node_client.clone()));
    tokio::spawn(agent::run(node_client, super::agent_config(&config, Duration::from_secs(2))));

    server.await.context("the API server task")?.context("the API server")?;
    Ok(())
}

/// Resolves when systemd (or a user) asks the process to stop.
pub async fn shutdown_signal() {
    let mut term = match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
        Ok(s) => s,
        Err(_) => return std::future::pending().await,
    };
    tokio::select! {
        _ = term.recv() => {}
        _ = tokio::signal::ctrl_c() => {}
    }
}
