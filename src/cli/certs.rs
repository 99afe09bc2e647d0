//! `clusterctl rotate-certs -f SPEC`: a new admin credential, the old one refused at once
//! ([`crate::bootstrap::certs`] does the masters' part; [`crate::apiserver::revocation`] says
//! how a certificate is refused). The cluster's kubeconfig gets the new pair, and so does
//! kubectl's file unless `--no-kubeconfig`.
//!
//! `clusterctl rotate-certs -f SPEC --ca`: a new cluster CA, rotated with overlap
//! ([`crate::bootstrap::certs::rotate_ca`]); every certificate of the old CA stops working.

use std::path::PathBuf;

use clap::Args;
use serde_json::json;

use super::backup::master_sessions;
use super::progress::TerminalReport;
use super::{kubeconfig, load_spec, Failure, Global};
use crate::client::kubeconfig::Kubeconfig;
use crate::client::{ApiClient, ClientAuth};
use crate::home::ClusterHome;

/// Arguments of `rotate-certs`.
#[derive(Debug, Args)]
pub struct RotateCertsArgs {
    /// The cluster spec (TOML).
    #[arg(short = 'f', long = "file")]
    pub file: PathBuf,
    /// Leave kubectl's kubeconfig alone (only the cluster's own file gets the new credential).
    #[arg(long)]
    pub no_kubeconfig: bool,
    /// Rotate the cluster CA instead: a new CA, trusted beside the old one until every master
    /// and node holds certificates of the new one, then trusted alone.
    #[arg(long)]
    pub ca: bool,
}

/// Runs `rotate-certs`.
pub async fn run(global: &Global, args: &RotateCertsArgs) -> Result<(), Failure> {
    let spec = load_spec(&args.file)?;
    let path = ClusterHome::of(spec.name.as_str()).dir.join("kubeconfig");
    let mut own = Kubeconfig::load(&path).map_err(|e| Failure::Operation(anyhow::anyhow!("reading {} (run clusterctl create first): {e}", path.display())))?;
    if args.ca {
        return rotate_ca(global, args, &spec, own, &path).await;
    }
    let masters = master_sessions(global, &spec).await?;
    let report = TerminalReport::new(global.quiet);
    let rotated = crate::bootstrap::certs::rotate_admin(masters, &report).await;
    report.finish();
    let credential = rotated?;
    let issued = crate::pki::issued_at(&credential.cert_pem).map_err(|e| Failure::Operation(anyhow::Error::new(e).context("reading the new admin certificate")))?;
    own.ca_pem = credential.ca_pem.clone();
    own.client_cert_pem = credential.cert_pem.clone();
    own.client_key_pem = credential.key_pem.clone();
    own.write(&path).map_err(|e| Failure::Operation(anyhow::anyhow!("writing {}: {e}", path.display())))?;
    let client = ApiClient::new(&own.server, ClientAuth::Certificate { ca_pem: credential.ca_pem, cert_pem: credential.cert_pem, key_pem: credential.key_pem })
        .map_err(|e| Failure::Operation(anyhow::Error::new(e)))?;
    // Every admin certificate issued before the new one (the other masters' new ones come after).
    let up_to = crate::api::Time::from_unix_seconds(issued - 1);
    let revocation = json!({"user": "admin", "issuedUpTo": up_to});
    client
        .create_value(crate::apiserver::REVOCATIONS_PATH, &revocation)
        .await
        .map_err(|e| Failure::Operation(anyhow::Error::new(e).context("revoking the old admin certificates (the new credential is in place; run rotate-certs again)")))?;
    println!("rotated the admin credential of cluster {}: admin certificates issued before {up_to} are refused", spec.name);
    print_kubeconfigs(args, spec.name.as_str(), &path)
}

/// Says where the new credential went: the cluster's kubeconfig, and kubectl's unless
/// `--no-kubeconfig` (merged into it here).
fn print_kubeconfigs(args: &RotateCertsArgs, cluster: &str, path: &std::path::Path) -> Result<(), Failure> {
    println!("  kubeconfig: {}", path.display());
    if !args.no_kubeconfig {
        let merged = kubeconfig::merge_into_kubectl_config(cluster, false)?;
        println!("  kubectl: {}", kubeconfig::summary(&merged));
    }
    Ok(())
}

/// `rotate-certs --ca`: checks first that every Node of the cluster is a machine it can reach
/// (a node left out would lose the API when the old CA goes), then rotates.
async fn rotate_ca(global: &Global, args: &RotateCertsArgs, spec: &crate::spec::ClusterSpec, mut own: Kubeconfig, path: &std::path::Path) -> Result<(), Failure> {
    let client = super::get::cluster_client(Some(&args.file), None)?;
    let nodes = client.list_values("/api/v1/nodes").await.map_err(|e| Failure::Operation(anyhow::Error::new(e).context("listing the cluster's nodes")))?;
    let masters = master_sessions(global, spec).await?;
    let workers = super::backup::worker_sessions(global, spec).await?;
    let reached: std::collections::BTreeSet<&str> = masters.iter().chain(&workers).map(|(m, _)| m.name.as_str()).collect();
    let missing: Vec<String> = nodes.iter().filter_map(|n| n.pointer("/metadata/name").and_then(|v| v.as_str())).filter(|n| !reached.contains(n)).map(String::from).collect();
    if !missing.is_empty() {
        return Err(Failure::Operation(anyhow::anyhow!(
            "node(s) {} are not running machines of the spec's pools that rotate-certs can reach over SSH; they would lose the API when the old CA goes. Nothing was changed: delete or replace them first",
            missing.join(", ")
        )));
    }
    let (master_count, worker_count) = (masters.len(), workers.len());
    let report = TerminalReport::new(global.quiet);
    let mut update = |credential: &crate::bootstrap::certs::AdminCredential| -> Result<(), crate::bootstrap::BootstrapError> {
        own.ca_pem = credential.ca_pem.clone();
        own.client_cert_pem = credential.cert_pem.clone();
        own.client_key_pem = credential.key_pem.clone();
        own.write(path).map_err(|e| crate::bootstrap::BootstrapError::Other(format!("writing {}: {e}", path.display())))?;
        // kubectl follows each stage too: the masters' serving certificates change at the switch.
        if !args.no_kubeconfig {
            kubeconfig::merge_into_kubectl_config(spec.name.as_str(), false).map_err(|e| crate::bootstrap::BootstrapError::Other(format!("updating kubectl's kubeconfig: {:#}", e.error())))?;
        }
        Ok(())
    };
    let rotated = crate::bootstrap::certs::rotate_ca(masters, workers, &report, &mut update).await;
    report.finish();
    let credential = rotated?;
    let hash = crate::pki::ca_hash(&credential.ca_pem).map_err(|e| Failure::Operation(anyhow::Error::new(e)))?;
    println!("rotated the CA of cluster {}: {master_count} master(s) and {worker_count} worker(s) trust only the new CA ({hash})", spec.name);
    print_kubeconfigs(args, spec.name.as_str(), path)
}
