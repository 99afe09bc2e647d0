//! `clusterctl node worker`: joins the cluster once, then runs the node agent.
//!
//! Joining, as `kubeadm join --discovery-token-ca-cert-hash` does: fetch the CA from the public
//! `cluster-info`, accept it only if its public-key hash is the pinned one, then send a
//! certificate signing request authenticated by the join token. The node's key never leaves it.

use std::path::Path;
use std::time::Duration;

use anyhow::{bail, Context, Result};
use base64::Engine;
use serde_json::json;

use crate::agent;
use crate::client::{ApiClient, ClientAuth};
use crate::nodeconfig::NodeConfig;
use crate::pki;

/// The node's credentials: CA, certificate, key.
struct Credentials {
    ca_pem: String,
    cert_pem: String,
    key_pem: String,
}

fn load(dir: &Path) -> Option<Credentials> {
    Some(Credentials {
        ca_pem: std::fs::read_to_string(dir.join("ca.crt")).ok()?,
        cert_pem: std::fs::read_to_string(dir.join("node.crt")).ok()?,
        key_pem: std::fs::read_to_string(dir.join("node.key")).ok()?,
    })
}

async fn join(server: &str, config: &NodeConfig, dir: &Path) -> Result<Credentials> {
    let worker = config.worker.as_ref().context("the config has no [worker] section")?;
    let discovery = ApiClient::new(server, ClientAuth::Insecure)?;
    let info = discovery.get_value("/api/v1/namespaces/kube-public/configmaps/cluster-info").await.context("fetching cluster-info")?;
    let ca_pem = info.pointer("/data/ca.crt").and_then(|v| v.as_str()).context("cluster-info has no ca.crt")?.to_string();
    let hash = pki::ca_hash(&ca_pem).context("hashing the offered CA")?;
    if hash != worker.ca_hash {
        bail!("the API server offers a CA with hash {hash}, but this node pins {}; refusing to join", worker.ca_hash);
    }
    let (csr_pem, key_pem) = pki::node_csr(&config.node_name).context("making the node's key and signing request")?;
    let b64 = base64::engine::general_purpose::STANDARD;
    let request = json!({
        "apiVersion": "certificates.k8s.io/v1",
        "kind": "CertificateSigningRequest",
        "metadata": { "name": format!("node-csr-{}-{}", config.node_name, &hex::encode(rand::random::<[u8; 4]>())) },
        "spec": {
            "request": b64.encode(&csr_pem),
            "signerName": "kubernetes.io/kube-apiserver-client-kubelet",
            "usages": ["digital signature", "client auth"],
        },
    });
    let joining = ApiClient::new(server, ClientAuth::Token { ca_pem: ca_pem.clone(), token: worker.join_token.clone() })?;
    let signed = joining.create_value("/apis/certificates.k8s.io/v1/certificatesigningrequests", &request).await.context("sending the signing request")?;
    let cert_b64 = signed.pointer("/status/certificate").and_then(|v| v.as_str()).context("the signing request came back without a certificate")?;
    let cert_pem = String::from_utf8(b64.decode(cert_b64).context("decoding the certificate")?).context("the certificate is not text")?;
    std::fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))?;
    crate::home::restrict_dir(dir)?;
    pki::write_key_file(&dir.join("node.key"), &key_pem)?;
    std::fs::write(dir.join("ca.crt"), &ca_pem)?;
    // Written last: its presence means the node has joined.
    pki::write_key_file(&dir.join("node.crt"), &cert_pem)?;
    Ok(Credentials { ca_pem, cert_pem, key_pem })
}

/// Runs the worker until the process is stopped.
pub async fn run(config: NodeConfig) -> Result<()> {
    let _ = rustls::crypto::ring::default_provider().install_default();
    let worker = config.worker.clone().context("the config has no [worker] section")?;
    let server = format!("https://{}:{}", config.api.endpoint, config.api.port);
    let dir = config.data_dir.join("pki");
    let creds = match load(&dir) {
        Some(c) => c,
        None => {
            let mut last_error = String::new();
            loop {
                match join(&server, &config, &dir).await {
                    Ok(c) => {
                        tracing::info!(%server, "joined the cluster");
                        break c;
                    }
                    Err(e) => {
                        // Mostly: the API load balancer has no healthy target yet (it refuses at once).
                        // A short pause, so that the node joins within half a second of it having one.
                        // The journal gets each different failure once, not one line per attempt.
                        let error = format!("{e:#}");
                        if error != last_error {
                            tracing::warn!(%server, "joining: {error}; retrying every 0.5 s");
                        } else {
                            tracing::debug!(%server, "joining: {error}");
                        }
                        last_error = error;
                        tokio::time::sleep(Duration::from_millis(500)).await;
                    }
                }
            }
        }
    };
    let client = ApiClient::new(&server, ClientAuth::Certificate { ca_pem: creds.ca_pem, cert_pem: creds.cert_pem, key_pem: creds.key_pem })?;
    tokio::spawn(crate::proxy::run(client.clone()));
    tokio::select! {
        _ = agent::run(client, super::agent_config(&config, Duration::from_secs(worker.heartbeat_seconds.max(1)))) => {}
        _ = super::master::shutdown_signal() => {}
    }
    Ok(())
}
