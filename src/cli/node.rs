//! `clusterctl node master|worker`: the node software, run by systemd on each machine.

use std::path::PathBuf;

use clap::{Args, Subcommand};

use super::Failure;
use crate::nodeconfig::NodeConfig;

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
    /// Make an HA master's etcd certificates and settings file (run by the install script).
    EtcdSetup {
        /// The node's config file.
        #[arg(long, default_value = "/etc/clusterctl/node.toml")]
        config: PathBuf,
        /// Where to write the etcd unit's environment file.
        #[arg(long, default_value = crate::nodeconfig::etcd::ENV_PATH)]
        env_file: PathBuf,
    },
    /// Print the etcd members and their health as JSON (HA masters).
    EtcdStatus {
        /// The node's config file.
        #[arg(long, default_value = "/etc/clusterctl/node.toml")]
        config: PathBuf,
    },
    /// Write a snapshot of this master's store (etcd, or the embedded store) to a file.
    Snapshot {
        /// The node's config file.
        #[arg(long, default_value = "/etc/clusterctl/node.toml")]
        config: PathBuf,
        /// The snapshot file to write.
        #[arg(long)]
        out: PathBuf,
    },
    /// Issue this master's admin certificate again (`clusterctl rotate-certs` runs it).
    RotateAdmin {
        /// The node's config file.
        #[arg(long, default_value = "/etc/clusterctl/node.toml")]
        config: PathBuf,
    },
    /// Run one step of a rotation of the cluster CA on this master, then restart it and wait until
    /// its API server answers (`clusterctl rotate-certs --ca` runs the steps in order).
    RotateCa {
        /// The node's config file.
        #[arg(long, default_value = "/etc/clusterctl/node.toml")]
        config: PathBuf,
        /// The step.
        #[arg(long, value_enum)]
        step: crate::pki::rotation::Step,
    },
    /// Replace this master's store with a snapshot (the master and etcd must be stopped).
    Restore {
        /// The node's config file.
        #[arg(long, default_value = "/etc/clusterctl/node.toml")]
        config: PathBuf,
        /// The snapshot file.
        #[arg(long)]
        from: PathBuf,
        /// The etcd cluster's current members, `name=https://ip:2380,...` (HA masters).
        #[arg(long)]
        initial_cluster: Option<String>,
    },
}

/// Runs the node software until it is stopped.
pub async fn run(args: &NodeArgs) -> Result<(), Failure> {
    let path = match &args.role {
        NodeCommand::Master { config }
        | NodeCommand::Worker { config }
        | NodeCommand::EtcdSetup { config, .. }
        | NodeCommand::EtcdStatus { config }
        | NodeCommand::Snapshot { config, .. }
        | NodeCommand::RotateAdmin { config }
        | NodeCommand::RotateCa { config, .. }
        | NodeCommand::Restore { config, .. } => config,
    };
    let config = NodeConfig::load(path).map_err(|e| Failure::Input(anyhow::Error::new(e)))?;
    match &args.role {
        NodeCommand::Master { .. } => crate::node::master::run(config).await?,
        NodeCommand::Worker { .. } => crate::node::worker::run(config).await?,
        NodeCommand::EtcdSetup { env_file, .. } => crate::node::etcd::setup(&config, env_file)?,
        NodeCommand::EtcdStatus { .. } => println!("{}", crate::node::etcd::status(&config).await?),
        NodeCommand::Snapshot { out, .. } => crate::node::backup::snapshot(&config, out).await?,
        NodeCommand::RotateAdmin { .. } => crate::node::rotate_admin(&config)?,
        NodeCommand::RotateCa { step, .. } => crate::node::rotate_ca(&config, *step).await?,
        NodeCommand::Restore { from, initial_cluster, .. } => crate::node::backup::restore(&config, from, initial_cluster.as_deref())?,
    }
    Ok(())
}
