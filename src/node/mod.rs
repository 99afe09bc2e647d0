//! The node side of the one binary: `clusterctl node master|worker --config /etc/clusterctl/node.toml`,
//! run by systemd units rendered from `templates/`.
//!
//! Layout: [`config`] is the node's config file; [`master`] runs the control plane (PKI, API
//! server, controllers under leader election, the master's own agent); [`etcd`] is an HA master's
//! etcd member (certificates, settings); [`backup`] takes and restores store snapshots; [`worker`]
//! joins and runs the agent.

pub mod backup;
pub mod config;
pub mod etcd;
pub mod master;
pub mod worker;

use std::time::Duration;

use crate::agent::AgentConfig;
use config::NodeConfig;

/// The agent settings a node's config implies.
pub fn agent_config(config: &NodeConfig, heartbeat: Duration) -> AgentConfig {
    AgentConfig {
        node_name: config.node_name.clone(),
        internal_ip: config.internal_ip,
        provider_id: format!("aws:///{}/{}", config.zone, config.instance_id),
        labels: config.labels.clone(),
        heartbeat,
        status_every: Duration::from_secs(10),
    }
}
