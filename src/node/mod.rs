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
pub mod identity;
pub mod master;
pub mod worker;

use std::time::Duration;

use crate::agent::AgentConfig;
use crate::nodeconfig::NodeConfig;

/// Where Docker looks for a registry's own CA (`<host>/ca.crt`), read at every pull.
pub const REGISTRY_CAS: &str = "/etc/docker/certs.d";
/// Docker's settings file, whose `registry-mirrors` a node keeps as its config says.
pub const DOCKER_DAEMON_JSON: &str = "/etc/docker/daemon.json";

/// Sets `registry-mirrors` in Docker's `daemon.json` at `path` to the registries that mirror
/// Docker Hub (`https://<host>`), keeping every other setting; returns whether the file changed
/// (then Docker must reload it: `registry-mirrors` is one of the settings dockerd reloads on
/// SIGHUP, with no restart of its containers).
pub fn set_registry_mirrors(registries: &[crate::spec::TrustedRegistry], path: &std::path::Path) -> std::io::Result<bool> {
    let text = match std::fs::read_to_string(path) {
        Ok(t) => t,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => "{}".into(),
        Err(e) => return Err(e),
    };
    let mut settings: serde_json::Map<String, serde_json::Value> = serde_json::from_str(&text).map_err(|e| std::io::Error::new(std::io::ErrorKind::InvalidData, format!("{}: {e}", path.display())))?;
    let mirrors: Vec<serde_json::Value> =
        registries.iter().filter(|r| r.mirror_of.as_deref() == Some(crate::spec::MIRRORABLE)).map(|r| serde_json::Value::String(format!("https://{}", r.host))).collect();
    if settings.get("registry-mirrors").and_then(serde_json::Value::as_array).map_or(mirrors.is_empty(), |now| *now == mirrors) {
        return Ok(false);
    }
    settings.insert("registry-mirrors".into(), serde_json::Value::Array(mirrors));
    let written = serde_json::to_string_pretty(&settings).map_err(std::io::Error::other)? + "\n";
    let next = path.with_extension("json.clusterctl");
    std::fs::write(&next, written)?;
    std::fs::rename(&next, path)?;
    Ok(true)
}

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

/// [`trust_registries`] at [`REGISTRY_CAS`] and [`set_registry_mirrors`] in [`DOCKER_DAEMON_JSON`]
/// (reloading Docker when the mirrors changed), logged when it fails (pulls from those registries
/// then fail with the runtime's TLS error, or go to Docker Hub itself).
pub fn trust_registries_logged(config: &NodeConfig) {
    if let Err(e) = trust_registries(&config.registries, std::path::Path::new(REGISTRY_CAS)) {
        tracing::warn!(error = %e, dir = REGISTRY_CAS, "writing the registries' CAs");
    }
    match set_registry_mirrors(&config.registries, std::path::Path::new(DOCKER_DAEMON_JSON)) {
        Ok(false) => {}
        Ok(true) => match std::process::Command::new("systemctl").args(["reload", "docker"]).output() {
            Ok(out) if out.status.success() => tracing::info!("Docker reloaded with the spec's registry mirrors"),
            Ok(out) => tracing::warn!(stderr = %String::from_utf8_lossy(&out.stderr).trim(), "reloading Docker for the registry mirrors"),
            Err(e) => tracing::warn!(error = %e, "reloading Docker for the registry mirrors"),
        },
        Err(e) => tracing::warn!(error = %e, file = DOCKER_DAEMON_JSON, "writing the registry mirrors"),
    }
}


/// `clusterctl node rotate-admin`: issues this master's admin certificate again
/// (`clusterctl rotate-certs` runs it on every master, then revokes the old ones).
pub fn rotate_admin(config: &NodeConfig) -> anyhow::Result<()> {
    use anyhow::Context;
    let dir = config.data_dir.join("pki");
    let read = |f: &str| std::fs::read_to_string(dir.join(f)).with_context(|| format!("reading {}", dir.join(f).display()));
    let ca = crate::pki::ClusterCa::from_pem(&read("ca.crt")?, &read("ca.key")?).context("loading the cluster CA")?;
    crate::pki::rotate_admin_certificate(&ca, &dir).context("writing the new admin certificate")?;
    Ok(())
}

/// `clusterctl node rotate-ca --step STEP`: one step of a CA rotation on this master's files
/// ([`crate::pki::rotation`]); every step but the first then restarts the master, so that it
/// takes the new trust and signing CA up, and waits until its API server answers again.
pub async fn rotate_ca(config: &NodeConfig, step: crate::pki::rotation::Step) -> anyhow::Result<()> {
    use anyhow::Context;
    let _ = rustls::crypto::ring::default_provider().install_default();
    let dir = config.data_dir.join("pki");
    let settings = config.master.as_ref().context("rotate-ca runs on masters only (the config has no [master] section)")?;
    let changed = crate::pki::rotation::apply(&dir, &config.cluster, step).with_context(|| format!("the CA rotation's {step:?} step in {}", dir.display()))?;
    tracing::info!(?step, changed, "CA rotation step done on the files");
    if step == crate::pki::rotation::Step::Prepare {
        return Ok(());
    }
    let restart = std::process::Command::new("systemctl").args(["restart", "clusterctl-master.service"]).output().context("running systemctl")?;
    anyhow::ensure!(restart.status.success(), "restarting the master: {}", String::from_utf8_lossy(&restart.stderr).trim());
    let read = |f: &str| std::fs::read_to_string(dir.join(f)).with_context(|| format!("reading {}", dir.join(f).display()));
    let ca = crate::pki::ClusterCa::from_pem(&read("ca.crt")?, &read("ca.key")?).context("loading the cluster CA")?;
    let auth = crate::client::ClientAuth::Certificate { ca_pem: crate::pki::rotation::trust_bundle(&dir, &ca), cert_pem: read("admin.crt")?, key_pem: read("admin.key")? };
    let client = crate::client::ApiClient::new(&format!("https://127.0.0.1:{}", settings.listen.port()), auth)?;
    let started = std::time::Instant::now();
    loop {
        match client.request_text("GET", "/readyz").await {
            Ok(_) => return Ok(()),
            Err(e) if started.elapsed() > Duration::from_secs(120) => anyhow::bail!("the restarted master's API server did not answer within 120 s: {e}"),
            Err(_) => tokio::time::sleep(Duration::from_millis(250)).await,
        }
    }
}

/// How long after a failed renewal the next attempt comes.
const RENEW_RETRY: Duration = Duration::from_secs(10);

/// Renews a certificate two thirds into its life, as kubelet rotates its own: sleeps until the
/// certificate at `cert_path` is due ([`crate::pki::renewal_due`]), then `renew`s it (which
/// replaces the file and what is presented). A failed attempt is retried every [`RENEW_RETRY`];
/// a certificate past its end is refused, so a node cut off until then has to be replaced.
pub(crate) async fn renew_when_due<F, Fut>(what: &'static str, cert_path: std::path::PathBuf, mut renew: F)
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = anyhow::Result<()>>,
{
    loop {
        let due = std::fs::read_to_string(&cert_path).map_err(anyhow::Error::from).and_then(|c| Ok(crate::pki::renewal_due(&c)?));
        let wait = match due {
            Ok(due) => due.duration_since(std::time::SystemTime::now()).unwrap_or_default(),
            Err(e) => {
                tracing::warn!(error = format!("{e:#}"), "reading {what} to renew it");
                RENEW_RETRY
            }
        };
        tokio::time::sleep(wait).await;
        match renew().await {
            Ok(()) => tracing::info!("renewed {what}"),
            Err(e) => {
                tracing::warn!(error = format!("{e:#}"), "renewing {what}; again in {}s", RENEW_RETRY.as_secs());
                tokio::time::sleep(RENEW_RETRY).await;
            }
        }
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
        cloud_endpoint: config.cloud_endpoint.clone(),
    }
}

#[cfg(test)]
mod tests {
    use crate::spec::TrustedRegistry;

    #[test]
    fn registries_cas_are_written_for_their_hosts_and_removed_with_them() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::create_dir_all(dir.path().join("someone.else:5000")).unwrap();
        let one = TrustedRegistry { host: "registry.example:5443".into(), ca: "PEM".into(), mirror_of: None };
        super::trust_registries(std::slice::from_ref(&one), dir.path()).unwrap();
        assert_eq!(std::fs::read_to_string(dir.path().join("registry.example:5443/ca.crt")).unwrap(), "PEM");
        super::trust_registries(&[], dir.path()).unwrap();
        assert!(!dir.path().join("registry.example:5443").exists(), "gone with the spec's entry");
        assert!(dir.path().join("someone.else:5000").exists(), "what clusterctl did not write stays");
    }

    #[test]
    fn docker_hub_mirrors_go_into_daemon_json_beside_its_other_settings() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("daemon.json");
        std::fs::write(&path, r#"{"default-runtime": "crun", "registry-mirrors": []}"#).unwrap();
        let plain = TrustedRegistry { host: "private.example:5443".into(), ca: "PEM".into(), mirror_of: None };
        assert!(!super::set_registry_mirrors(std::slice::from_ref(&plain), &path).unwrap(), "no mirror, nothing to change");
        let mirror = TrustedRegistry { host: "mirror.example:5444".into(), mirror_of: Some("docker.io".into()), ..plain.clone() };
        assert!(super::set_registry_mirrors(&[plain.clone(), mirror.clone()], &path).unwrap());
        let written: serde_json::Value = serde_json::from_str(&std::fs::read_to_string(&path).unwrap()).unwrap();
        assert_eq!(written["registry-mirrors"], serde_json::json!(["https://mirror.example:5444"]));
        assert_eq!(written["default-runtime"], "crun", "other settings stay");
        assert!(!super::set_registry_mirrors(&[plain.clone(), mirror], &path).unwrap(), "once");
        assert!(super::set_registry_mirrors(&[plain], &path).unwrap(), "a mirror taken out of the spec goes");
    }
}
