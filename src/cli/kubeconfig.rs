//! `clusterctl kubeconfig`: print a cluster's kubeconfig, or (re)merge it into kubectl's own file.

use clap::Args;

use super::{ClusterSelection, Failure};
use crate::client::kubeconfig::Kubeconfig;
use crate::client::kubectl_config::{self, Merged};
use crate::home::ClusterHome;

/// Arguments of `kubeconfig`.
#[derive(Debug, Args)]
pub struct KubeconfigArgs {
    #[command(flatten)]
    pub cluster: ClusterSelection,
    /// Merge the cluster's context, cluster and user into kubectl's kubeconfig ($KUBECONFIG's first
    /// file, else ~/.kube/config) instead of printing them.
    #[arg(long)]
    pub write: bool,
    /// With --write: make the cluster's context the current one even when another is.
    #[arg(long, requires = "write")]
    pub set_current_context: bool,
}

/// Runs `kubeconfig`.
pub async fn run(args: &KubeconfigArgs) -> Result<(), Failure> {
    let name = args.cluster.name()?;
    if args.write {
        let merged = merge_into_kubectl_config(&name, args.set_current_context)?;
        println!("{}", summary(&merged));
    } else {
        let path = ClusterHome::of(&name).dir.join("kubeconfig");
        let text = std::fs::read_to_string(&path).map_err(|e| no_credentials(&name, &path, e))?;
        print!("{text}");
    }
    Ok(())
}

/// Merges the credentials `create` wrote for the cluster into kubectl's kubeconfig.
pub fn merge_into_kubectl_config(cluster: &str, make_current: bool) -> Result<Merged, Failure> {
    let path = ClusterHome::of(cluster).dir.join("kubeconfig");
    let own = Kubeconfig::load(&path).map_err(|e| no_credentials(cluster, &path, e))?;
    let merged = kubectl_config::default_location().and_then(|target| kubectl_config::merge(&target, &own, make_current));
    merged.map_err(|e| Failure::Operation(anyhow::Error::new(e).context(format!("adding cluster {cluster} to kubectl's kubeconfig"))))
}

/// One line saying where the context is and how to use it.
pub fn summary(merged: &Merged) -> String {
    let how = if merged.current { "the current context".to_string() } else { format!("use kubectl --context {}, or --set-current-context", merged.context) };
    format!("context {} in {} ({how})", merged.context, merged.path.display())
}

fn no_credentials(cluster: &str, path: &std::path::Path, e: impl std::fmt::Display) -> Failure {
    Failure::Operation(anyhow::anyhow!("reading the credentials of cluster {cluster} ({}): {e}; run clusterctl create first", path.display()))
}
