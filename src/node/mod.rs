//! The node side of the one binary: `clusterctl node master|worker --config /etc/clusterctl/node.toml`,
//! run by systemd units rendered from `templates/`.
//!
//! This is the top of the node side, as k3s's `server` and `agent` commands are: it wires the parts
//! together and nothing below imports it. What a node is given (its config file, paths, etcd
//! naming) is the node contract, [`crate::nodeconfig`], which `bootstrap` and the cloud controller
//! share with it; the cluster CA is made by [`crate::pki::load_or_create_ca`].
//!
//! Layout: [`master`] runs the control plane (PKI, API server, controllers under leader election,
//! the master's own agent); [`etcd`] sets up an HA master's etcd member (certificates, settings
//! file) and reports its health; [`backup`] takes and restores store snapshots; [`worker`] joins
//! and runs the agent.

pub mod backup;
pub mod etcd;
pub mod master;
pub mod worker;

use std::time::Duration;

use crate::agent::AgentConfig;
use crate::nodeconfig::NodeConfig;

/// The agent settings a node's config implies.
pub fn agent_config(config: &NodeConfig, heartbeat: Duration, serving: crate::apiserver::ServerTls) -> AgentConfig {
    AgentConfig {
        serving: Some(serving),
        node_name: config.node_name.clone(),
        internal_ip: config.internal_ip,
        provider_id: format!("aws:///{}/{}", config.zone, config.instance_id),
        labels: config.labels.clone(),
        heartbeat,
        status_every: Duration::from_secs(10),
        routed: config.network.iter().flat_map(|n| [n.cluster_cidr, n.vpc_cidr]).collect(),
    }
}
