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

/// Where Docker looks for a registry's own CA (`<host>/ca.crt`), read at every pull.
pub const REGISTRY_CAS: &str = "/etc/docker/certs.d";

/// Makes the node's container runtime trust each registry's CA, for that registry only (Docker's
/// `certs.d/<host>/ca.crt`); a registry no longer in the config loses its trust. Readable by all:
/// a CA is no secret.
pub fn trust_registries(registries: &[crate::spec::TrustedRegistry], dir: &std::path::Path) -> std::io::Result<()> {
    let marker = ".clusterctl";
    std::fs::create_dir_all(dir)?;
    for entry in std::fs::read_dir(dir)?.flatten() {
        let name = entry.file_name().to_string_lossy().into_owned();
        if entry.path().join(marker).exists() && !registries.iter().any(|r| r.host == name) {
            std::fs::remove_dir_all(entry.path())?;
        }
    }
    for r in registries {
        let host_dir = dir.join(&r.host);
        std::fs::create_dir_all(&host_dir)?;
        std::fs::write(host_dir.join("ca.crt"), &r.ca)?;
        std::fs::write(host_dir.join(marker), b"written by clusterctl from the cluster spec's [[registries]]\n")?;
    }
    Ok(())
}

/// [`trust_registries`] at [`REGISTRY_CAS`], logged when it fails (pulls from those registries then
/// fail with the runtime's TLS error).
pub fn trust_registries_logged(config: &NodeConfig) {
    if let Err(e) = trust_registries(&config.registries, std::path::Path::new(REGISTRY_CAS)) {
        tracing::warn!(error = %e, dir = REGISTRY_CAS, "writing the registries' CAs");
    }
}

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

#[cfg(test)]
mod tests {
    use crate::spec::TrustedRegistry;

    #[test]
    fn registries_cas_are_written_for_their_hosts_and_removed_with_them() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::create_dir_all(dir.path().join("someone.else:5000")).unwrap();
        let one = TrustedRegistry { host: "registry.example:5443".into(), ca: "PEM".into() };
        super::trust_registries(std::slice::from_ref(&one), dir.path()).unwrap();
        assert_eq!(std::fs::read_to_string(dir.path().join("registry.example:5443/ca.crt")).unwrap(), "PEM");
        super::trust_registries(&[], dir.path()).unwrap();
        assert!(!dir.path().join("registry.example:5443").exists(), "gone with the spec's entry");
        assert!(dir.path().join("someone.else:5000").exists(), "what clusterctl did not write stays");
    }
}
