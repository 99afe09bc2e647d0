//! `clusterctl node worker`: joins the cluster once, then runs the node agent.
//!
//! Joining, as `kubeadm join --discovery-token-ca-cert-hash` does: fetch the CA from the public
//! `cluster-info`, accept it only if its public-key hash is the pinned one, then send a
//! certificate signing request authenticated by the join token. The node's key never leaves it.
//! The client certificate is renewed two thirds into its life with a request sent with itself.

use std::path::Path;
use std::time::Duration;

use anyhow::{bail, Context, Result};
use base64::Engine;
use serde_json::json;

use crate::agent;
use crate::client::{ApiClient, ClientAuth, RenewableCertificate};
use crate::nodeconfig::NodeConfig;
use crate::pki;

/// The node's credentials: CA, certificate, key.
struct Credentials {
    ca_pem: String,
    cert_pem: String,
    key_pem: String,
}

fn load(dir: &Path) -> Option<Credentials> {
    finish_renewal(dir, "node");
    Some(Credentials {
        ca_pem: std::fs::read_to_string(dir.join("ca.crt")).ok()?,
        cert_pem: std::fs::read_to_string(dir.join("node.crt")).ok()?,
        key_pem: std::fs::read_to_string(dir.join("node.key")).ok()?,
    })
}

/// A `certificates.k8s.io/v1` request for `csr_pem` named `<prefix>-<random>`, to `signer`.
fn signing_request(prefix: &str, csr_pem: &str, signer: &str, usage: &str) -> serde_json::Value {
    json!({
        "apiVersion": "certificates.k8s.io/v1",
        "kind": "CertificateSigningRequest",
        "metadata": { "name": format!("{prefix}-{}", &hex::encode(rand::random::<[u8; 4]>())) },
        "spec": {
            "request": base64::engine::general_purpose::STANDARD.encode(csr_pem),
            "signerName": signer,
            "usages": ["digital signature", usage],
        },
    })
}

/// Sends a signing request with `client` and returns the certificate it came back with (PEM).
async fn signed_certificate(client: &ApiClient, request: &serde_json::Value) -> Result<String> {
    let signed = client.create_value("/apis/certificates.k8s.io/v1/certificatesigningrequests", request).await.context("sending the signing request")?;
    let cert_b64 = signed.pointer("/status/certificate").and_then(|v| v.as_str()).context("the signing request came back without a certificate")?;
    let cert = base64::engine::general_purpose::STANDARD.decode(cert_b64).context("decoding the certificate")?;
    String::from_utf8(cert).context("the certificate is not text")
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
    let mut request = signing_request(&format!("node-csr-{}", config.node_name), &csr_pem, crate::api::KUBELET_CLIENT_SIGNER, "client auth");
    // Which machine this is, in the cloud's signed words: where the cluster has a cloud, the API
    // server signs only for the name the cloud gives this machine.
    match super::identity::read().await {
        Ok(identity) => request["metadata"]["annotations"] = identity.annotations(),
        Err(why) => tracing::info!(%why, "joining without an instance identity"),
    }
    let joining = ApiClient::new(server, ClientAuth::Token { ca_pem: ca_pem.clone(), token: worker.join_token.clone() })?;
    let cert_pem = signed_certificate(&joining, &request).await?;
    std::fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))?;
    crate::home::restrict_dir(dir)?;
    pki::write_key_file(&dir.join("node.key"), &key_pem)?;
    std::fs::write(dir.join("ca.crt"), &ca_pem)?;
    // Written last: its presence means the node has joined.
    pki::write_key_file(&dir.join("node.crt"), &cert_pem)?;
    Ok(Credentials { ca_pem, cert_pem, key_pem })
}

/// Puts a renewed certificate and key in place (`<stem>.crt`, `<stem>.key`: the client pair
/// `node`, the serving pair `serving`): the key is written beside the current one first
/// (`<stem>.key.new`), then the certificate (`<stem>.crt.new`), and they are renamed over the
/// current ones in the same order. `<stem>.crt.new` is therefore there only once both are
/// written: a renewal interrupted before it leaves a lone key, which is dropped; one interrupted
/// between the renames is finished here at the next start.
fn finish_renewal(dir: &Path, stem: &str) {
    let (key_new, cert_new) = (dir.join(format!("{stem}.key.new")), dir.join(format!("{stem}.crt.new")));
    let result = if cert_new.exists() {
        let key = if key_new.exists() { std::fs::rename(&key_new, dir.join(format!("{stem}.key"))) } else { Ok(()) };
        key.and_then(|()| std::fs::rename(&cert_new, dir.join(format!("{stem}.crt"))))
    } else if key_new.exists() {
        std::fs::remove_file(&key_new)
    } else {
        Ok(())
    };
    if let Err(e) = result {
        tracing::warn!(error = %e, "putting the renewed {stem} certificate and key in place");
    }
}

/// Writes a renewed pair as [`finish_renewal`] expects, and puts it in place.
fn write_renewed(dir: &Path, stem: &str, cert_pem: &str, key_pem: &str) -> Result<()> {
    pki::write_key_file(&dir.join(format!("{stem}.key.new")), key_pem)?;
    pki::write_key_file(&dir.join(format!("{stem}.crt.new")), cert_pem)?;
    finish_renewal(dir, stem);
    Ok(())
}

async fn renew_client(client: &ApiClient, cert: &RenewableCertificate, node_name: &str, dir: &Path) -> Result<()> {
    let (csr_pem, key_pem) = pki::node_csr(node_name).context("making a new key and signing request")?;
    let request = signing_request(&format!("node-csr-{node_name}"), &csr_pem, crate::api::KUBELET_CLIENT_SIGNER, "client auth");
    let cert_pem = signed_certificate(client, &request).await?;
    cert.replace(&cert_pem, &key_pem).map_err(anyhow::Error::msg)?;
    write_renewed(dir, "node", &cert_pem, &key_pem)
}

/// A new serving certificate for the agent, asked for with the node's own credential
/// (`kubernetes.io/kubelet-serving`; the key never leaves the node).
async fn request_serving(client: &ApiClient, node_name: &str) -> Result<(String, String)> {
    let (csr_pem, key_pem) = pki::node_csr(node_name).context("making the serving key and signing request")?;
    let request = signing_request(&format!("node-serving-{node_name}"), &csr_pem, crate::api::KUBELET_SERVING_SIGNER, "server auth");
    let cert_pem = signed_certificate(client, &request).await.context("the serving certificate")?;
    Ok((cert_pem, key_pem))
}

/// The agent's serving certificate and key (PEM): the ones in `dir` (`serving.crt`,
/// `serving.key`) when there, not yet due for renewal and issued by the newest CA the node trusts,
/// else new ones ([`request_serving`]).
async fn serving_certificate(client: &ApiClient, node_name: &str, dir: &Path, ca_pem: &str) -> Result<(String, String)> {
    finish_renewal(dir, "serving");
    if let (Ok(cert), Ok(key)) = (std::fs::read_to_string(dir.join("serving.crt")), std::fs::read_to_string(dir.join("serving.key"))) {
        let due = pki::renewal_due(&cert).map(|due| due <= std::time::SystemTime::now()).unwrap_or(true);
        if !due && from_newest_ca(&cert, ca_pem) {
            return Ok((cert, key));
        }
    }
    let (cert_pem, key_pem) = request_serving(client, node_name).await?;
    write_renewed(dir, "serving", &cert_pem, &key_pem)?;
    Ok((cert_pem, key_pem))
}

/// Whether `cert_pem` was issued by the first CA of the node's trust bundle (`ca.crt`: the
/// newest, during a CA rotation).
fn from_newest_ca(cert_pem: &str, ca_pem: &str) -> bool {
    pki::bundle_certificates(ca_pem).first().is_some_and(|newest| pki::verify_issued_by(cert_pem, newest).is_ok())
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
    let ca_pem = creds.ca_pem.clone();
    let cert = RenewableCertificate::new(&creds.cert_pem, &creds.key_pem).map_err(anyhow::Error::msg)?;
    let client = ApiClient::new(&server, ClientAuth::Renewable { ca_pem: creds.ca_pem, cert: cert.clone() })?;
    if !from_newest_ca(&creds.cert_pem, &ca_pem) {
        // The cluster's CA is being rotated (`rotate-certs --ca` put the new CA first in
        // `ca.crt`): renew at once, with the certificate of the old CA, which the masters still
        // accept.
        let (client, cert, node_name, dir) = (client.clone(), cert.clone(), config.node_name.clone(), dir.clone());
        tokio::spawn(async move {
            while let Err(e) = renew_client(&client, &cert, &node_name, &dir).await {
                tracing::warn!(error = format!("{e:#}"), "renewing the node's client certificate from the new CA; again in 2 s");
                tokio::time::sleep(Duration::from_secs(2)).await;
            }
            tracing::info!("renewed the node's client certificate from the new CA");
        });
    }
    {
        let (client, node_name, dir) = (client.clone(), config.node_name.clone(), dir.clone());
        tokio::spawn(super::renew_when_due("the node's client certificate", dir.join("node.crt"), move || {
            let (client, cert, node_name, dir) = (client.clone(), cert.clone(), node_name.clone(), dir.clone());
            async move { renew_client(&client, &cert, &node_name, &dir).await }
        }));
    }
    let serving = loop {
        match serving_certificate(&client, &config.node_name, &dir, &ca_pem).await {
            Ok((cert_pem, key_pem)) => break crate::apiserver::ServerTls::from_pem(&cert_pem, &key_pem, &ca_pem).map_err(anyhow::Error::msg)?,
            Err(e) => {
                tracing::warn!(error = format!("{e:#}"), "getting the agent's serving certificate; again in 1 s");
                tokio::time::sleep(Duration::from_secs(1)).await;
            }
        }
    };
    {
        let (client, node_name, dir, cert) = (client.clone(), config.node_name.clone(), dir.clone(), serving.cert.clone());
        tokio::spawn(super::renew_when_due("the agent's serving certificate", dir.join("serving.crt"), move || {
            let (client, node_name, dir, cert) = (client.clone(), node_name.clone(), dir.clone(), cert.clone());
            async move {
                let (cert_pem, key_pem) = request_serving(&client, &node_name).await?;
                cert.replace(&cert_pem, &key_pem).map_err(anyhow::Error::msg)?;
                write_renewed(&dir, "serving", &cert_pem, &key_pem)
            }
        }));
    }
    tokio::spawn(crate::proxy::run(client.clone()));
    super::trust_registries_logged(&config);
    tokio::select! {
        _ = agent::run(client, super::agent_config(&config, Duration::from_secs(worker.heartbeat_seconds.max(1)), serving)) => {}
        _ = super::master::shutdown_signal() => {}
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn files(dir: &Path) -> Vec<(String, String)> {
        let mut out: Vec<(String, String)> = std::fs::read_dir(dir).unwrap().map(|e| e.unwrap()).map(|e| (e.file_name().to_string_lossy().into_owned(), std::fs::read_to_string(e.path()).unwrap())).collect();
        out.sort();
        out
    }

    /// A renewal is taken whole or not at all, wherever it was interrupted.
    #[test]
    fn a_renewal_interrupted_anywhere_leaves_a_matching_key_and_certificate() {
        let pair = |key: &str, cert: &str| vec![("node.crt".to_string(), cert.to_string()), ("node.key".to_string(), key.to_string())];
        for (written, want) in [
            (vec![], pair("old-key", "old-cert")),
            (vec![("node.key.new", "new-key")], pair("old-key", "old-cert")),
            (vec![("node.key.new", "new-key"), ("node.crt.new", "new-cert")], pair("new-key", "new-cert")),
        ] {
            let dir = tempfile::tempdir().unwrap();
            std::fs::write(dir.path().join("node.key"), "old-key").unwrap();
            std::fs::write(dir.path().join("node.crt"), "old-cert").unwrap();
            for (f, text) in &written {
                std::fs::write(dir.path().join(f), text).unwrap();
            }
            finish_renewal(dir.path(), "node");
            assert_eq!(files(dir.path()), want, "after writing {written:?}");
        }
        // Interrupted between the renames: the key is new already, the certificate follows.
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join("node.key"), "new-key").unwrap();
        std::fs::write(dir.path().join("node.crt"), "old-cert").unwrap();
        std::fs::write(dir.path().join("node.crt.new"), "new-cert").unwrap();
        finish_renewal(dir.path(), "node");
        assert_eq!(files(dir.path()), pair("new-key", "new-cert"));
    }
}
