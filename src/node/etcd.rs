//! A master's etcd member on the node: `clusterctl node etcd-setup --config /etc/clusterctl/node.toml`,
//! run by the install script as root before it (re)starts the `clusterctl-etcd` unit, makes the
//! cluster CA and etcd's own CA if this master has none (the first master; `create` copies both to
//! the others), issues from etcd's CA the member's certificate (serverAuth + clientAuth, for clients
//! and peers, SANs the master's IP, `127.0.0.1`, `localhost`) and the API server's etcd client
//! certificate, and writes
//! [`crate::nodeconfig::etcd::ENV_PATH`], the unit's `EnvironmentFile` (etcd reads its flags from `ETCD_*` variables);
//! `node etcd-status` shows every member's health. The names and files are the node contract's
//! ([`crate::nodeconfig::etcd`]).

use std::net::IpAddr;
use std::path::Path;

use anyhow::{Context, Result};

use crate::nodeconfig::etcd::{environment, local_options, EtcdFiles};
use crate::nodeconfig::NodeConfig;
use crate::pki;

/// Makes (or keeps) this master's etcd certificates and writes the unit's environment file.
pub fn setup(config: &NodeConfig, env_path: &Path) -> Result<()> {
    let master = config.master.as_ref().context("the config has no [master] section")?;
    let etcd = master.etcd.as_ref().context("the config has no [master.etcd] section: this master keeps the embedded store")?;
    let pki_dir = config.data_dir.join("pki");
    std::fs::create_dir_all(&pki_dir).with_context(|| format!("creating {}", pki_dir.display()))?;
    crate::home::restrict_dir(&pki_dir).context("restricting the PKI folder")?;
    pki::load_or_create_ca(&pki_dir, &config.cluster).with_context(|| format!("loading or making the cluster CA in {}", pki_dir.display()))?;
    // etcd trusts its own CA only: a node's or a user's certificate from the cluster CA is refused.
    let ca = pki::load_or_create_etcd_ca(&pki_dir, &config.cluster).with_context(|| format!("loading or making etcd's CA in {}", pki_dir.display()))?;
    let lifetime = master.node_cert_seconds.map_or(pki::LEAF_VALIDITY, std::time::Duration::from_secs);
    let files = certificates(config, &ca, lifetime)?;
    let data_dir = config.data_dir.join("etcd");
    std::fs::create_dir_all(&data_dir).with_context(|| format!("creating {}", data_dir.display()))?;
    crate::home::restrict_dir(&data_dir).context("restricting etcd's data folder")?;
    let env = environment(config, etcd, &files);
    if std::fs::read_to_string(env_path).ok().as_deref() != Some(env.as_str()) {
        pki::files::write_file_atomic(env_path, env.as_bytes(), 0o600).with_context(|| format!("writing {}", env_path.display()))?;
    }
    Ok(())
}

/// This master's etcd certificates, issued (valid for `lifetime`) when missing, not of `ca`, not
/// covering its addresses, not matching their keys, or due for renewal ([`pki::renewal_due`]):
/// then the member's and the API server's client certificate are issued again together, each
/// key written before its certificate (etcd reads both at every new TLS handshake, so a renewed
/// member certificate needs no restart). Returns the files.
pub fn certificates(config: &NodeConfig, ca: &pki::ClusterCa, lifetime: std::time::Duration) -> Result<EtcdFiles> {
    let files = EtcdFiles::in_dir(&config.data_dir.join("pki"));
    let ip = config.internal_ip;
    let wanted = vec![ip.to_string(), "127.0.0.1".to_string(), "localhost".to_string()];
    let read = |cert: &Path, key: &Path| std::fs::read_to_string(cert).ok().zip(std::fs::read_to_string(key).ok());
    let usable = |pair: Option<(String, String)>, names: &[String]| {
        pair.is_some_and(|(c, k)| {
            let due = pki::renewal_due(&c).map(|due| due <= std::time::SystemTime::now()).unwrap_or(true);
            ca.verify_issued(&c).is_ok() && pki::pair_matches(&c, &k) && !due && pki::cert_matches_names(&c, names).unwrap_or(false)
        })
    };
    let member_ok = usable(read(&files.member_cert, &files.member_key), &wanted);
    let client_ok = usable(read(&files.client_cert, &files.client_key), &[]);
    if member_ok && client_ok {
        return Ok(files);
    }
    let member = ca.issue_etcd_member_valid_for(&config.node_name, &["localhost".to_string()], &[ip, IpAddr::from([127, 0, 0, 1])], lifetime)?;
    pki::write_key_file(&files.member_key, &member.key_pem)?;
    pki::write_key_file(&files.member_cert, &member.cert_pem)?;
    let client = ca.issue_client_valid_for("clusterctl-apiserver-etcd-client", &[], lifetime)?;
    pki::write_key_file(&files.client_key, &client.key_pem)?;
    pki::write_key_file(&files.client_cert, &client.cert_pem)?;
    tracing::info!("issued this master's etcd certificates");
    Ok(files)
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

#[cfg(test)]
mod tests {
    use super::*;

    fn config(data_dir: &Path) -> NodeConfig {
        let text = format!(
            r#"cluster = "demo"
role = "master"
node_name = "demo-masters-0"
instance_id = "i-0123456789abcdef0"
internal_ip = "10.0.1.5"
zone = "us-east-1a"
pool = "masters"
data_dir = "{}"
api = {{ endpoint = "10.0.1.5", port = 6443 }}

[master]
listen = "0.0.0.0:6443"

[master.etcd]
initial_cluster = ["demo-masters-0=https://10.0.1.5:2380"]
initial_cluster_state = "new"
endpoints = ["https://10.0.1.5:2379"]
"#,
            data_dir.display()
        );
        NodeConfig::from_toml(&text).unwrap()
    }

    /// etcd trusts a CA of its own: its member's and the API server's certificates come from it,
    /// and no certificate of the cluster CA (a node's, a user's) verifies against it.
    #[test]
    fn etcd_gets_a_ca_of_its_own_that_signs_nothing_but_etcd_certificates() {
        let dir = tempfile::tempdir().unwrap();
        let env_path = dir.path().join("etcd.env");
        let config = config(dir.path());
        setup(&config, &env_path).unwrap();
        let pki_dir = dir.path().join("pki");
        let read = |f: &str| std::fs::read_to_string(pki_dir.join(f)).unwrap();
        let cluster_ca = pki::ClusterCa::from_pem(&read("ca.crt"), &read("ca.key")).unwrap();
        let etcd_ca = pki::ClusterCa::from_pem(&read("etcd-ca.crt"), &read("etcd-ca.key")).unwrap();
        assert_ne!(cluster_ca.cert_pem(), etcd_ca.cert_pem());
        for cert in ["etcd-member.crt", "etcd-client.crt"] {
            etcd_ca.verify_issued(&read(cert)).unwrap_or_else(|e| panic!("{cert} from etcd's CA: {e}"));
            assert!(cluster_ca.verify_issued(&read(cert)).is_err(), "{cert} is not the cluster CA's");
        }
        let node = cluster_ca.issue_client("system:node:demo-default-0", &["system:nodes"]).unwrap();
        assert!(etcd_ca.verify_issued(&node.cert_pem).is_err(), "a node's certificate does not verify against etcd's CA");
        let env = std::fs::read_to_string(&env_path).unwrap();
        let trusted = pki_dir.join("etcd-ca.crt").display().to_string();
        assert!(env.contains(&format!("ETCD_TRUSTED_CA_FILE={trusted}\n")) && env.contains(&format!("ETCD_PEER_TRUSTED_CA_FILE={trusted}\n")), "{env}");
        // A second run keeps everything.
        let member = read("etcd-member.crt");
        setup(&config, &env_path).unwrap();
        assert_eq!(read("etcd-member.crt"), member);
    }

    /// Both certificates are issued again together once either is due, or when a key is not its
    /// certificate's; otherwise they are kept.
    #[test]
    fn etcd_certificates_are_issued_again_together_when_due() {
        let dir = tempfile::tempdir().unwrap();
        let config = config(dir.path());
        setup(&config, &dir.path().join("etcd.env")).unwrap();
        let pki_dir = dir.path().join("pki");
        let read = |f: &str| std::fs::read_to_string(pki_dir.join(f)).unwrap();
        let ca = pki::ClusterCa::from_pem(&read("etcd-ca.crt"), &read("etcd-ca.key")).unwrap();
        let before = (read("etcd-member.crt"), read("etcd-client.crt"));
        certificates(&config, &ca, std::time::Duration::from_secs(1)).unwrap();
        assert_eq!((read("etcd-member.crt"), read("etcd-client.crt")), before, "not due: kept");
        std::fs::write(pki_dir.join("etcd-client.key"), rcgen::KeyPair::generate().unwrap().serialize_pem()).unwrap();
        certificates(&config, &ca, std::time::Duration::from_secs(1)).unwrap();
        let short = (read("etcd-member.crt"), read("etcd-client.crt"));
        assert!(short.0 != before.0 && short.1 != before.1, "a mismatched key: both issued again");
        assert!(pki::pair_matches(&short.1, &read("etcd-client.key")));
        std::thread::sleep(std::time::Duration::from_millis(1100));
        certificates(&config, &ca, pki::LEAF_VALIDITY).unwrap();
        let renewed = (read("etcd-member.crt"), read("etcd-client.crt"));
        assert!(renewed.0 != short.0 && renewed.1 != short.1, "due: both issued again");
        assert!(pki::not_after(&renewed.0).unwrap() > std::time::SystemTime::now() + std::time::Duration::from_secs(3600));
    }
}
