//! A master's etcd member, for highly available control planes: its certificates, its settings file
//! and how the API server reaches it.
//!
//! `clusterctl node etcd-setup --config /etc/clusterctl/node.toml`, run by the install script as
//! root before it (re)starts the `clusterctl-etcd` unit, makes the cluster CA if this master has
//! none (the first master; `create` copies it to the others), issues the member's certificate
//! (serverAuth + clientAuth, for clients and peers, SANs the master's IP, `127.0.0.1`, `localhost`)
//! and the API server's etcd client certificate, and writes [`ENV_PATH`], the unit's
//! `EnvironmentFile` (etcd reads its flags from `ETCD_*` variables). Peer and client traffic is TLS
//! with client certificates required on both. Data lives in `<data_dir>/etcd`.

use std::net::IpAddr;
use std::path::{Path, PathBuf};

use anyhow::{Context, Result};

use super::config::{EtcdSettings, NodeConfig};
use crate::pki;

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
            ca: pki_dir.join("ca.crt"),
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

/// Makes (or keeps) this master's etcd certificates and writes the unit's environment file.
pub fn setup(config: &NodeConfig, env_path: &Path) -> Result<()> {
    let master = config.master.as_ref().context("the config has no [master] section")?;
    let etcd = master.etcd.as_ref().context("the config has no [master.etcd] section: this master keeps the embedded store")?;
    let pki_dir = config.data_dir.join("pki");
    std::fs::create_dir_all(&pki_dir).with_context(|| format!("creating {}", pki_dir.display()))?;
    crate::home::restrict_dir(&pki_dir).context("restricting the PKI folder")?;
    let ca = super::master::load_or_create_ca(&pki_dir, &config.cluster)?;
    let files = EtcdFiles::in_dir(&pki_dir);
    let ip = config.internal_ip;
    let wanted = vec![ip.to_string(), "127.0.0.1".to_string(), "localhost".to_string()];
    let current = std::fs::read_to_string(&files.member_cert).ok();
    let fits = current.as_deref().is_some_and(|c| ca.verify_issued(c).is_ok() && pki::cert_matches_names(c, &wanted).unwrap_or(false));
    if !fits || !files.member_key.exists() {
        let issued = ca.issue_etcd_member(&config.node_name, &["localhost".to_string()], &[ip, IpAddr::from([127, 0, 0, 1])])?;
        pki::write_key_file(&files.member_key, &issued.key_pem)?;
        pki::write_key_file(&files.member_cert, &issued.cert_pem)?;
    }
    let client_fits = std::fs::read_to_string(&files.client_cert).ok().is_some_and(|c| ca.verify_issued(&c).is_ok());
    if !client_fits || !files.client_key.exists() {
        let issued = ca.issue_client("clusterctl-apiserver-etcd-client", &[])?;
        pki::write_key_file(&files.client_key, &issued.key_pem)?;
        pki::write_key_file(&files.client_cert, &issued.cert_pem)?;
    }
    let data_dir = config.data_dir.join("etcd");
    std::fs::create_dir_all(&data_dir).with_context(|| format!("creating {}", data_dir.display()))?;
    crate::home::restrict_dir(&data_dir).context("restricting etcd's data folder")?;
    let env = environment(config, etcd, &files);
    if std::fs::read_to_string(env_path).ok().as_deref() != Some(env.as_str()) {
        pki::files::write_file_atomic(env_path, env.as_bytes(), 0o600).with_context(|| format!("writing {}", env_path.display()))?;
    }
    Ok(())
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

/// Every member of the etcd cluster (as the local member lists them) and its health, as JSON:
/// `[{"name", "endpoint", "healthy", "leader", "revision", "error"}]`.
pub async fn status(config: &NodeConfig) -> Result<serde_json::Value> {
    use crate::apiserver::store::EtcdCluster;
    config.master.as_ref().and_then(|m| m.etcd.as_ref()).context("this master has no etcd member (single-master clusters keep the embedded store)")?;
    let options = local_options(&config.data_dir)?;
    let local = EtcdCluster::connect(&options).await.context("connecting to the local etcd member")?;
    let members = local.members().await.context("listing etcd's members")?;
    let mut out = Vec::new();
    for m in members {
        let endpoint = m.client_urls.first().cloned().unwrap_or_default();
        let mut one = options.clone();
        one.endpoints = vec![endpoint.clone()];
        let status = match EtcdCluster::connect(&one).await {
            Ok(c) => c.endpoint_status().await.into_iter().next().map(|s| s.status.map_err(|e| e.to_string())).unwrap_or_else(|| Err("no answer".into())),
            Err(e) => Err(e.to_string()),
        };
        out.push(match status {
            Ok(s) => serde_json::json!({"name": m.name, "endpoint": endpoint, "healthy": s.healthy(), "leader": s.is_leader(), "revision": s.revision, "error": null}),
            Err(e) => serde_json::json!({"name": m.name, "endpoint": endpoint, "healthy": false, "leader": false, "revision": null, "error": e}),
        });
    }
    Ok(serde_json::Value::Array(out))
}
