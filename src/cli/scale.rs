//! `clusterctl scale deployment NAME --replicas N`, and `clusterctl scale -f SPEC --workers N`
//! (`--pool NAME=N` for any pool) for worker pools.
//!
//! Scaling a pool records the new size in its `MachinePool` object and in the spec file, so that
//! both agree afterwards. Up: the master's machine controller launches and bootstraps the new
//! machines in parallel (the same converge and bootstrap code as `create`), and this command shows
//! each machine's progress until all are Ready. Down: this command picks the machines with the
//! fewest pods, cordons them (which takes them out of every service load balancer), deregisters
//! them from the balancers' target groups, evicts their pods and waits until their controllers run
//! them elsewhere, and only then terminates the machines and deletes their nodes.

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
    /// The cluster spec whose worker pools to scale (its counts are updated too).
    #[arg(short = 'f', long = "file")]
    pub file: Option<PathBuf>,
    /// The number of workers of the spec's first worker pool.
    #[arg(long, conflicts_with = "pool")]
    pub workers: Option<u32>,
    /// `NAME=N`: the number of workers of pool NAME (repeatable).
    #[arg(long)]
    pub pool: Vec<String>,
    /// How long to wait for new machines to be Ready or old ones to be drained, in seconds.
    #[arg(long, default_value_t = 600)]
    pub timeout: u64,
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
pub async fn run(global: &super::Global, args: &ScaleArgs) -> Result<(), Failure> {
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
        None if args.workers.is_some() || args.file.is_some() || !args.pool.is_empty() => super::scale_pools::run(global, args).await,
        None => Err(Failure::Input(anyhow::anyhow!("say what to scale: clusterctl scale deployment NAME --replicas N, or clusterctl scale -f SPEC --workers N"))),
    }
}
