//! `clusterctl node master|worker`: the node software, run by systemd on each machine.

use std::path::PathBuf;

use clap::{Args, Subcommand};

use super::Failure;
use crate::node::config::NodeConfig;

/// Arguments of `node`.
#[derive(Debug, Args)]
pub struct NodeArgs {
    #[command(subcommand)]
    pub role: NodeCommand,
}

/// Which node software to run.
#[derive(Debug, Subcommand)]
pub enum NodeCommand {
    /// Run the control plane: API server, controllers, and the master's own agent.
    Master {
        /// The node's config file.
        #[arg(long, default_value = "/etc/clusterctl/node.toml")]
        config: PathBuf,
    },
    /// Join the cluster (once) and run the node agent.
    Worker {
        /// The node's config file.
        #[arg(long, default_value = "/etc/clusterctl/node.toml")]
        config: PathBuf,
    },
}

/// Runs the node software until it is stopped.
pub async fn run(args: &NodeArgs) -> Result<(), Failure> {
    let path = match &args.role {
        NodeCommand::Master { config } | NodeCommand::Worker { config } => config,
    };
    let config = NodeConfig::load(path).map_err(|e| Failure::Input(anyhow::Error::new(e)))?;
    match &args.role {
        NodeCommand::Master { .. } => crate::node::master::run(config).await?,
        NodeCommand::Worker { .. } => crate::node::worker::run(config).await?,
    }
    Ok(())
}
