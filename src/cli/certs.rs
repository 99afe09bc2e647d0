//! `clusterctl rotate-certs -f SPEC`: a new admin credential, the old one refused at once
//! ([`crate::bootstrap::certs`] does the masters' part; [`crate::apiserver::revocation`] says
//! how a certificate is refused). The cluster's kubeconfig gets the new pair, and so does
//! kubectl's file unless `--no-kubeconfig`. The CA itself is not rotated.

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
}

/// Runs `rotate-certs`.
pub async fn run(global: &Global, args: &RotateCertsArgs) -> Result<(), Failure> {
    let spec = load_spec(&args.file)?;
    let path = ClusterHome::of(spec.name.as_str()).dir.join("kubeconfig");
    let mut own = Kubeconfig::load(&path).map_err(|e| Failure::Operation(anyhow::anyhow!("reading {} (run clusterctl create first): {e}", path.display())))?;
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
    println!("  kubeconfig: {}", path.display());
    if !args.no_kubeconfig {
        let merged = kubeconfig::merge_into_kubectl_config(spec.name.as_str(), false)?;
        println!("  kubectl: {}", kubeconfig::summary(&merged));
    }
    Ok(())
}
