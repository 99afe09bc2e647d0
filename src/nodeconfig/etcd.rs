//! An HA master's etcd member as the node contract names it: its ports and URLs, the files of its
//! certificates in the master's PKI folder, the `ETCD_*` environment of the `clusterctl-etcd`
//! unit, and how the API server (and the operator's tools on a master) connect to it.
//!
//! Peer and client traffic is TLS with client certificates required on both, from etcd's own CA
//! (`etcd-ca.crt`, not the cluster CA that signs nodes' and users' certificates). Data lives in
//! `<data_dir>/etcd`. `clusterctl node etcd-setup` (`crate::node`) writes these files.

use std::net::IpAddr;
use std::path::{Path, PathBuf};

use anyhow::{Context, Result};

use super::{EtcdSettings, NodeConfig};

/// etcd's client port.
pub const CLIENT_PORT: u16 = 2379;
/// etcd's peer port.
pub const PEER_PORT: u16 = 2380;
/// The etcd unit's environment file.
pub const ENV_PATH: &str = "/etc/clusterctl/etcd.env";
/// The etcd unit's name.
pub const UNIT: &str = "clusterctl-etcd.service";
/// How many revisions etcd keeps for watches (as the embedded store's history).
pub const HISTORY: u64 = crate::apiserver::store::DEFAULT_HISTORY;

/// A member's peer URL.
pub fn peer_url(ip: IpAddr) -> String {
    format!("https://{}", std::net::SocketAddr::new(ip, PEER_PORT))
}

/// A member's client URL.
pub fn client_url(ip: IpAddr) -> String {
    format!("https://{}", std::net::SocketAddr::new(ip, CLIENT_PORT))
}

/// The files of a master's PKI that etcd and its clients use.
pub struct EtcdFiles {
    pub ca: PathBuf,
    pub member_cert: PathBuf,
    pub member_key: PathBuf,
    pub client_cert: PathBuf,
    pub client_key: PathBuf,
}

impl EtcdFiles {
    pub fn in_dir(pki_dir: &Path) -> Self {
        EtcdFiles {
            ca: pki_dir.join(format!("{}.crt", crate::pki::ETCD_CA)),
            member_cert: pki_dir.join("etcd-member.crt"),
            member_key: pki_dir.join("etcd-member.key"),
            client_cert: pki_dir.join("etcd-client.crt"),
            client_key: pki_dir.join("etcd-client.key"),
        }
    }

    /// The API server's client credentials: (CA, certificate, key), PEM.
    pub fn client_credentials(&self) -> Result<(String, String, String)> {
        let read = |p: &Path| std::fs::read_to_string(p).with_context(|| format!("reading {}", p.display()));
        Ok((read(&self.ca)?, read(&self.client_cert)?, read(&self.client_key)?))
    }
}

/// The `ETCD_*` environment of a member.
pub fn environment(config: &NodeConfig, etcd: &EtcdSettings, files: &EtcdFiles) -> String {
    let ip = config.internal_ip;
    let data_dir = config.data_dir.join("etcd");
    let vars: Vec<(&str, String)> = vec![
        ("ETCD_NAME", config.node_name.clone()),
        ("ETCD_DATA_DIR", data_dir.display().to_string()),
        ("ETCD_LISTEN_PEER_URLS", peer_url(ip)),
        ("ETCD_LISTEN_CLIENT_URLS", format!("{},{}", client_url(ip), client_url(IpAddr::from([127, 0, 0, 1])))),
        ("ETCD_INITIAL_ADVERTISE_PEER_URLS", peer_url(ip)),
        ("ETCD_ADVERTISE_CLIENT_URLS", client_url(ip)),
        ("ETCD_INITIAL_CLUSTER", etcd.initial_cluster.join(",")),
        ("ETCD_INITIAL_CLUSTER_STATE", etcd.initial_cluster_state.clone()),
        ("ETCD_INITIAL_CLUSTER_TOKEN", config.cluster.clone()),
        ("ETCD_CLIENT_CERT_AUTH", "true".into()),
        ("ETCD_TRUSTED_CA_FILE", files.ca.display().to_string()),
        ("ETCD_CERT_FILE", files.member_cert.display().to_string()),
        ("ETCD_KEY_FILE", files.member_key.display().to_string()),
        ("ETCD_PEER_CLIENT_CERT_AUTH", "true".into()),
        ("ETCD_PEER_TRUSTED_CA_FILE", files.ca.display().to_string()),
        ("ETCD_PEER_CERT_FILE", files.member_cert.display().to_string()),
        ("ETCD_PEER_KEY_FILE", files.member_key.display().to_string()),
        // A member that missed heartbeats asks whether it could win before it starts an election
        // (the default from etcd 3.5 on): when a leader stalls for a moment, a follower does not
        // raise the term, which would depose the leader and, with the follower's log behind,
        // leave the cluster without one until the old leader campaigns again.
        ("ETCD_PRE_VOTE", "true".into()),
        // No auto-compaction: the API servers compact to their watch history themselves.
        ("ETCD_LOGGER", "zap".into()),
        ("ETCD_LOG_OUTPUTS", "stderr".into()),
    ];
    let mut out = String::from("# clusterctl's etcd member, written by `clusterctl node etcd-setup`.\n");
    for (k, v) in vars {
        out.push_str(&format!("{k}={v}\n"));
    }
    out
}

/// A connection to this master's own etcd member only (on loopback), with the API server's client
/// credentials from the master's PKI folder under `data_dir`.
pub fn local_options(data_dir: &Path) -> Result<crate::apiserver::store::EtcdOptions> {
    use crate::apiserver::store::{EtcdOptions, EtcdTls};
    let (ca_pem, cert_pem, key_pem) = EtcdFiles::in_dir(&data_dir.join("pki")).client_credentials()?;
    Ok(EtcdOptions::new(vec![client_url(IpAddr::from([127, 0, 0, 1]))]).with_tls(EtcdTls { ca_pem, cert_pem, key_pem }).with_history(HISTORY))
}

/// The API server's etcd connection: this master's member first, then the others.
pub fn client_options(config: &NodeConfig, etcd: &EtcdSettings) -> Result<crate::apiserver::store::EtcdOptions> {
    let mut options = local_options(&config.data_dir)?;
    options.endpoints.extend(etcd.endpoints.iter().cloned());
    Ok(options)
}
