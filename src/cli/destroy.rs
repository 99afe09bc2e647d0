//! `clusterctl destroy`: remove everything a cluster created.

use std::io::{BufRead, IsTerminal, Write};
use std::path::PathBuf;
use std::time::{Duration, Instant};

use clap::Args;

use super::progress::TerminalReport;
use super::{connect, load_spec, Failure, Global};
use crate::client::kubectl_config::{self, Removed};
use crate::home::ClusterHome;
use crate::provision;

/// Arguments of `destroy`.
#[derive(Debug, Args)]
pub struct DestroyArgs {
    /// The cluster spec (TOML).
    #[arg(short = 'f', long = "file")]
    pub file: PathBuf,
    /// Do not ask for confirmation.
    #[arg(long)]
    pub yes: bool,
    /// Leave kubectl's kubeconfig alone (by default the cluster's context, cluster and user entries
    /// are removed from it).
    #[arg(long)]
    pub no_kubeconfig: bool,
}

/// Runs `destroy`.
pub async fn run(global: &Global, args: &DestroyArgs) -> Result<(), Failure> {
    let spec = load_spec(&args.file)?;
    if !args.yes {
        if !std::io::stdin().is_terminal() {
            return Err(Failure::Input(anyhow::anyhow!("destroying cluster {} needs confirmation: pass --yes", spec.name)));
        }
        eprint!("Destroy cluster {} and everything it created in {}? Type the cluster name to confirm: ", spec.name, spec.region);
        std::io::stderr().flush().ok();
        let mut answer = String::new();
        std::io::stdin().lock().read_line(&mut answer).ok();
        if answer.trim() != spec.name.as_str() {
            return Err(Failure::Input(anyhow::anyhow!("not confirmed; nothing was changed")));
        }
    }
    let started = Instant::now();
    let cloud = connect(global, &spec).await;
    let report = TerminalReport::new(global.quiet);
    let result = provision::destroy(cloud.as_ref(), spec.name.as_str(), Duration::from_secs(600), &report).await;
    report.finish();
    let result = result.map_err(|e| Failure::Operation(anyhow::Error::new(e).context(format!("destroying cluster {}", spec.name))))?;
    if !result.remaining.is_empty() || !result.errors.is_empty() {
        let mut msg = format!("destroying cluster {}: {} resources remain", spec.name, result.remaining.len());
        for r in &result.remaining {
            msg.push_str(&format!("\n  {r}"));
        }
        for e in &result.errors {
            msg.push_str(&format!("\n  error: {e}"));
        }
        msg.push_str("\nrun destroy again to retry");
        return Err(Failure::Operation(anyhow::anyhow!(msg)));
    }
    let kubectl = if args.no_kubeconfig { None } else { remove_from_kubectl_config(spec.name.as_str())? };
    ClusterHome::of(spec.name.as_str()).remove()?;
    if result.deleted.is_empty() {
        println!("cluster {}: nothing to destroy", spec.name);
    } else {
        println!("cluster {}: destroyed {} resources in {:.1}s; nothing tagged with it remains", spec.name, result.deleted.len(), started.elapsed().as_secs_f64());
    }
    if let Some(removed) = kubectl.filter(|r| r.removed || r.cleared_current) {
        println!("  kubectl: context {} removed from {}", spec.name, removed.path.display());
    }
    Ok(())
}

/// Takes the cluster's entries out of kubectl's kubeconfig; None when there is no such file to look
/// in (neither KUBECONFIG nor HOME set).
fn remove_from_kubectl_config(cluster: &str) -> Result<Option<Removed>, Failure> {
    let Ok(path) = kubectl_config::default_location() else {
        return Ok(None);
    };
    let removed = kubectl_config::remove(&path, cluster)
        .map_err(|e| Failure::Operation(anyhow::Error::new(e).context(format!("removing cluster {cluster} from kubectl's kubeconfig (the cloud resources are gone; fix the file and run destroy again, or pass --no-kubeconfig)"))))?;
    Ok(Some(removed))
}
