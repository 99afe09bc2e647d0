//! `clusterctl cordon NODE` and `uncordon NODE`: set or clear the Node's `spec.unschedulable`, which
//! the scheduler's filter honours (pods already on the node stay; see `drain` to move them).

use clap::Args;

use super::{ClusterSelection, Failure};
use crate::client::ApiClient;

/// Arguments of `cordon` and `uncordon`.
#[derive(Debug, Args)]
pub struct NodeNameArgs {
    /// The node's name (as `get nodes` shows it).
    pub node: String,
    #[command(flatten)]
    pub cluster: ClusterSelection,
}

/// Sets (`true`) or clears the node's `spec.unschedulable`; returns whether it changed.
pub async fn set_unschedulable(client: &ApiClient, node: &str, unschedulable: bool) -> Result<bool, Failure> {
    let doing = if unschedulable { "cordoning" } else { "uncordoning" };
    crate::client::drain::set_unschedulable(client, node, unschedulable).await.map_err(|e| {
        if e.is_not_found() { Failure::Operation(anyhow::anyhow!("node {node:?} not found")) } else { Failure::Operation(anyhow::anyhow!("{doing} node {node}: {e}")) }
    })
}

/// Runs `cordon` (`unschedulable` true) or `uncordon`.
pub async fn run(args: &NodeNameArgs, unschedulable: bool) -> Result<(), Failure> {
    let client = args.cluster.client()?;
    let changed = set_unschedulable(&client, &args.node, unschedulable).await?;
    let done = if unschedulable { "cordoned" } else { "uncordoned" };
    if changed {
        println!("node/{} {done}", args.node);
    } else {
        println!("node/{} already {done}", args.node);
    }
    Ok(())
}
