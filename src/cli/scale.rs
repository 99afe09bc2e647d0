//! `clusterctl scale deployment NAME --replicas N`. The group leaves room for
//! `clusterctl scale -f spec --workers N` (scaling worker pools), which comes with a later issue.

use std::path::PathBuf;

use clap::{Args, Subcommand};
use serde_json::json;

use super::Failure;
use super::get::cluster_client;
use crate::api::deployment::Deployment;
use crate::api::resource::DEPLOYMENTS;

/// Arguments of `scale`.
#[derive(Debug, Args)]
#[command(args_conflicts_with_subcommands = true)]
pub struct ScaleArgs {
    #[command(subcommand)]
    pub target: Option<ScaleTarget>,
    /// The cluster spec whose worker pool to scale (not available yet).
    #[arg(short = 'f', long = "file")]
    pub file: Option<PathBuf>,
    /// The number of workers (not available yet).
    #[arg(long)]
    pub workers: Option<u32>,
}

/// What to scale.
#[derive(Debug, Subcommand)]
pub enum ScaleTarget {
    /// Set the replicas of a Deployment.
    Deployment(ScaleDeploymentArgs),
}

/// Arguments of `scale deployment`.
#[derive(Debug, Args)]
pub struct ScaleDeploymentArgs {
    /// The Deployment's name.
    pub name: String,
    /// The wanted number of pods.
    #[arg(long)]
    pub replicas: u32,
    /// The Deployment's namespace.
    #[arg(short = 'n', long, default_value = "default")]
    pub namespace: String,
    /// The cluster's name.
    #[arg(long, conflicts_with = "spec")]
    pub cluster: Option<String>,
    /// The cluster spec (to name the cluster).
    #[arg(long)]
    pub spec: Option<PathBuf>,
}

/// Runs `scale`.
pub async fn run(args: &ScaleArgs) -> Result<(), Failure> {
    match &args.target {
        Some(ScaleTarget::Deployment(d)) => {
            let replicas = i32::try_from(d.replicas).map_err(|_| Failure::Input(anyhow::anyhow!("--replicas {} is too large", d.replicas)))?;
            let client = cluster_client(d.spec.as_ref(), d.cluster.as_ref())?;
            let patch = json!({ "spec": { "replicas": replicas } });
            match client.patch::<Deployment>(&DEPLOYMENTS, Some(&d.namespace), &d.name, &patch).await {
                Ok(_) => {
                    println!("deployment.apps/{} scaled", d.name);
                    Ok(())
                }
                Err(e) if e.is_not_found() => Err(Failure::Input(anyhow::anyhow!("deployment {:?} not found in namespace {}", d.name, d.namespace))),
                Err(e) => Err(Failure::Operation(anyhow::anyhow!("scaling deployment {}: {e}", d.name))),
            }
        }
        None if args.workers.is_some() || args.file.is_some() => {
            Err(Failure::Input(anyhow::anyhow!("scaling worker pools (scale -f SPEC --workers N) is not available yet; edit the spec and run create")))
        }
        None => Err(Failure::Input(anyhow::anyhow!("say what to scale: clusterctl scale deployment NAME --replicas N"))),
    }
}
