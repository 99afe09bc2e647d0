//! `clusterctl node master`: the control plane on a master machine.
//!
//! On first start it makes the cluster's PKI under `<data_dir>/pki` through [`crate::pki`] (CA, the API server's serving
//! certificate, the admin's client certificate; keys mode 0600, never sent anywhere by the
//! master), re-issuing the serving certificate when the names it is reached by change. Then it
//! runs the API server on its durable store, the scheduler, the node lifecycle, deployment and
//! endpoints controllers, and an agent for the master's own Node, all but the server as
//! in-process clients of the API server.

use std::sync::Arc;
use std::time::Duration;

use anyhow::{Context, Result};

use crate::agent;
use crate::apiserver::store::{EtcdStore, SqliteStore, Store};
use crate::apiserver::{self, ApiServerConfig, ServerTls};
use crate::client::leader::LeaderElection;
use crate::client::{ApiClient, ClientAuth, RenewableCertificate};
use crate::controllers::{api_service, deployment, endpoints, event_ttl, node_ipam, node_lifecycle, token_cleaner};
use crate::nodeconfig::{MasterSettings, NodeConfig};
use crate::pki;

/// The certificates the master issues itself for its own processes (controllers, scheduler, its
/// agent's client and serving certificates, the API server's towards the agents): issued at start,
/// held only in memory, and issued again together two thirds into their life.
struct InProcess {
    ca: Arc<pki::ClusterCa>,
    /// The CAs the master trusts (the signing one first; two during a CA rotation).
    trust: String,
    lifetime: Duration,
    certs: Vec<(InProcessCert, RenewableCertificate)>,
}

/// What one in-process certificate is.
#[derive(Clone)]
enum InProcessCert {
    Client { user: String, group: Option<&'static str> },
    NodeServing { node: String },
}

impl InProcess {
    fn issue(&self, what: &InProcessCert) -> Result<pki::Issued> {
        Ok(match what {
            InProcessCert::Client { user, group } => self.ca.issue_client_valid_for(user, group.as_slice(), self.lifetime)?,
            InProcessCert::NodeServing { node } => self.ca.issue_node_serving_valid_for(node, self.lifetime)?,
        })
    }

    /// A new certificate of this kind, renewed with the others from now on.
    fn certificate(&mut self, what: InProcessCert) -> Result<RenewableCertificate> {
        let issued = self.issue(&what)?;
        let cert = RenewableCertificate::new(&issued.cert_pem, &issued.key_pem).map_err(anyhow::Error::msg)?;
        self.certs.push((what, cert.clone()));
        Ok(cert)
    }

    /// A client of the local API server as `user` (in `group`).
    fn client(&mut self, local: &str, user: &str, group: Option<&'static str>) -> Result<ApiClient> {
        let cert = self.certificate(InProcessCert::Client { user: user.to_string(), group })?;
        Ok(ApiClient::new(local, ClientAuth::Renewable { ca_pem: self.trust.clone(), cert })?)
    }

    /// Issues every certificate again two thirds into its life, for ever.
    async fn renew(self) {
        loop {
            tokio::time::sleep(self.lifetime * 2 / 3).await;
            let renewed = self.certs.iter().try_for_each(|(what, cert)| {
                let issued = self.issue(what)?;
                cert.replace(&issued.cert_pem, &issued.key_pem).map_err(anyhow::Error::msg)
            });
            match renewed {
                Ok(()) => tracing::info!(count = self.certs.len(), "renewed the master's in-process certificates"),
                Err(e) => tracing::error!(error = format!("{e:#}"), "renewing the master's in-process certificates"),
            }
        }
    }
}

/// Runs the master until the process is stopped.
pub async fn run(config: NodeConfig) -> Result<()> {
    let _ = rustls::crypto::ring::default_provider().install_default();
    let settings = config.master.clone().context("the config has no [master] section")?;
    let pki_dir = config.data_dir.join("pki");
    std::fs::create_dir_all(&pki_dir).with_context(|| format!("creating {}", pki_dir.display()))?;
    crate::home::restrict_dir(&pki_dir).context("restricting the PKI folder")?;
    let ca = pki::load_or_create_ca(&pki_dir, &config.cluster).with_context(|| format!("loading or making the cluster CA in {}", pki_dir.display()))?;
    // A year, or the test-only shorter life of every leaf this cluster issues.
    let leaf_lifetime = settings.node_cert_seconds.map_or(pki::LEAF_VALIDITY, Duration::from_secs);
    let (serving_cert, serving_key) = pki::serving_certificate(&ca, &pki_dir, &settings.serving_names, &settings.serving_ips, leaf_lifetime).context("the serving certificate")?;
    // Every CA the master accepts: the signing one, and during a CA rotation the other one too.
    let trust = pki::rotation::trust_bundle(&pki_dir, &ca);
    let api_tls = ServerTls::from_pem(&serving_cert, &serving_key, &trust).map_err(anyhow::Error::msg)?;

    let (store, etcd_store) = open_store(&config, &settings).await?;
    if let Some(etcd_store) = etcd_store {
        // etcd's certificates renew with the others: etcd reads its member certificate at each new
        // handshake; the API server connects again with its renewed client certificate.
        let etcd_ca = pki::load_or_create_etcd_ca(&pki_dir, &config.cluster).context("loading etcd's CA")?;
        let files = crate::nodeconfig::etcd::EtcdFiles::in_dir(&pki_dir);
        let (config, etcd_ca) = (config.clone(), Arc::new(etcd_ca));
        tokio::spawn(super::renew_when_due("this master's etcd certificates", files.client_cert.clone(), move || {
            let (config, etcd_ca, store) = (config.clone(), etcd_ca.clone(), etcd_store.clone());
            async move {
                super::etcd::certificates(&config, &etcd_ca, leaf_lifetime)?;
                let options = crate::nodeconfig::etcd::local_options(&config.data_dir)?;
                store.reconnect(options.tls.as_ref().context("no etcd client certificate")?).await?;
                Ok(())
            }
        }));
    }
    let listener = tokio::net::TcpListener::bind(settings.listen).await.with_context(|| format!("listening on {}", settings.listen))?;
    let ca = Arc::new(ca);
    let mut in_process = InProcess { ca: ca.clone(), trust: trust.clone(), lifetime: leaf_lifetime, certs: Vec::new() };
    let join_verifier = match &settings.cloud {
        Some(cloud) => crate::cloudcontroller::join::verifier(cloud, crate::cloudcontroller::connect(cloud).await, &config.cluster),
        None => None,
    };
    let api_config = ApiServerConfig {
        join_verifier,
        tls: api_tls.clone(),
        csr_signer: Arc::new(apiserver::csr::NodeCertSigner {
            ca: ca.clone(),
            lifetime: leaf_lifetime,
        }),
        cluster_info_ca_pem: trust.clone(),
        // The running binary, even after an upgrade has replaced the file on disk.
        node_binary: Some("/proc/self/exe".into()),
        kubelet_client: Some(apiserver::podproxy::KubeletClientTls {
            cert: in_process.certificate(InProcessCert::Client { user: pki::KUBELET_CLIENT_CN.to_string(), group: None })?,
            ca_pem: trust.clone(),
        }),
        service_cidr: config.network.as_ref().map(|n| n.service_cidr),
        limits: crate::apiserver::limits::LimitSettings::default(),
        audit: Some(crate::apiserver::limits::AuditSettings::at(crate::nodeconfig::AUDIT_LOG)),
        default_toleration_seconds: Some(settings.pod_eviction_seconds),
    };
    {
        // Renewed two thirds into its life; new connections get the new one.
        let (ca, dir, names, ips, cert) = (ca.clone(), pki_dir.clone(), settings.serving_names.clone(), settings.serving_ips.clone(), api_tls.cert.clone());
        tokio::spawn(super::renew_when_due("the API server's serving certificate", pki_dir.join("apiserver.crt"), move || {
            let (ca, dir, names, ips, cert) = (ca.clone(), dir.clone(), names.clone(), ips.clone(), cert.clone());
            async move {
                let (cert_pem, key_pem) = pki::serving_certificate(&ca, &dir, &names, &ips, leaf_lifetime)?;
                cert.replace(&cert_pem, &key_pem).map_err(anyhow::Error::msg)
            }
        }));
    }
    // The server stops after the leases are given up (below), so that giving them up can reach it.
    let (stop_server, server_stopped) = tokio::sync::oneshot::channel::<()>();
    let mut server = tokio::spawn(apiserver::serve(api_config, store, listener, server_stopped));
    pki::admin_certificate(&ca, &pki_dir).context("the admin certificate")?;

    // In-process clients with certificates that exist only in memory.
    let local = format!("https://127.0.0.1:{}", settings.listen.port());
    // The control loops, each under its own lease (one master of an HA control plane acts). The
    // identity names the machine, not only the node: a replacement master reuses the dead one's
    // node name, and must not mistake the dead one's lease for its own (client-go appends a UUID
    // to the host name for the same reason).
    let identity = leader_identity(&config.node_name, &config.instance_id);
    let mut elections: Vec<(LeaderElection, ApiClient, tokio::task::JoinHandle<()>)> = Vec::new();
    let controller_client = in_process.client(&local, "system:kube-controller-manager", Some("system:masters"))?;
    {
        let client = controller_client.clone();
        let lifecycle = node_lifecycle::Settings {
            grace: Duration::from_secs(settings.node_grace_seconds),
            toleration: Duration::from_secs(settings.pod_eviction_seconds),
            unhealthy_zone_percent: settings.unhealthy_zone_percent,
        };
        let cluster_cidr = config.network.map(|n| n.cluster_cidr);
        let api_port = settings.listen.port();
        let election = LeaderElection::new(CONTROLLERS_LEASE, &identity);
        let task = tokio::spawn(election.clone().run(controller_client.clone(), move || {
            let client = client.clone();
            async move {
                let ipam_client = client.clone();
                let ipam = async move {
                    match cluster_cidr {
                        Some(block) => node_ipam::run(ipam_client, block).await,
                        None => std::future::pending().await,
                    }
                };
                tokio::join!(
                    ipam,
                    api_service::run(client.clone(), api_port),
                    node_lifecycle::run(client.clone(), lifecycle),
                    deployment::run(client.clone()),
                    endpoints::run(client.clone()),
                    event_ttl::run(client.clone(), event_ttl::TTL),
                    token_cleaner::run(client),
                );
            }
        }));
        elections.push((election, controller_client.clone(), task));
    }
    if let Some(cloud) = settings.cloud.clone() {
        let (client, config, ca_pem) = (controller_client.clone(), config.clone(), trust.clone());
        let election = LeaderElection::new(CLOUD_CONTROLLER_LEASE, &identity);
        let task = tokio::spawn(election.clone().run(controller_client.clone(), move || {
            let (client, cloud, config, ca_pem) = (client.clone(), cloud.clone(), config.clone(), ca_pem.clone());
            async move {
                if let Err(e) = crate::cloudcontroller::run(client, cloud, config, ca_pem).await {
                    tracing::error!(error = format!("{e:#}"), "the cloud controller manager stopped");
                }
            }
        }));
        elections.push((election, controller_client, task));
    }
    let scheduler_client = in_process.client(&local, "system:kube-scheduler", Some("system:masters"))?;
    tokio::spawn(mark_control_plane(scheduler_client.clone(), config.node_name.clone()));
    {
        let client = scheduler_client.clone();
        let election = LeaderElection::new(SCHEDULER_LEASE, &identity);
        let task = tokio::spawn(election.clone().run(scheduler_client.clone(), move || crate::scheduler::run(client.clone())));
        elections.push((election, scheduler_client, task));
    }

    if settings.snapshot_every_minutes > 0 {
        let every = Duration::from_secs(settings.snapshot_every_minutes * 60);
        tokio::spawn(super::backup::run_scheduled(config.clone(), every, settings.snapshots_kept as usize));
    }

    let node_client = in_process.client(&local, &format!("system:node:{}", config.node_name), Some("system:nodes"))?;
    tokio::spawn(crate::proxy::run(node_client.clone()));
    let serving = apiserver::ServerTls { cert: in_process.certificate(InProcessCert::NodeServing { node: config.node_name.clone() })?, client_ca_pem: trust.clone() };
    tokio::spawn(in_process.renew());
    super::trust_registries_logged(&config);
    tokio::spawn(agent::run(node_client, super::agent_config(&config, Duration::from_secs(2), serving)));

    tokio::select! {
        ended = &mut server => {
            ended.context("the API server task")?.context("the API server")?;
            anyhow::bail!("the API server stopped by itself");
        }
        _ = shutdown_signal() => {}
    }
    release_leases(elections).await;
    let _ = stop_server.send(());
    server.await.context("the API server task")?.context("the API server")?;
    Ok(())
}

/// Stops the control loops and gives up the leases this master holds, so that another master
/// takes them within one retry period (2 s) instead of after their 15 s expiry.
async fn release_leases(elections: Vec<(LeaderElection, ApiClient, tokio::task::JoinHandle<()>)>) {
    let releases = elections.into_iter().map(|(election, client, task)| async move {
        task.abort();
        let _ = task.await;
        match tokio::time::timeout(Duration::from_secs(3), election.release(&client)).await {
            Ok(Ok(true)) => tracing::info!(lease = %election.lease, "released the lease"),
            Ok(Ok(false)) => {}
            Ok(Err(e)) => tracing::warn!(lease = %election.lease, error = %e, "releasing the lease"),
            Err(_) => tracing::warn!(lease = %election.lease, "releasing the lease took over 3 s; it expires by itself"),
        }
    });
    futures::future::join_all(releases).await;
}

/// A master's identity in the control loops' leases: `<node name>_<instance id>`.
pub fn leader_identity(node_name: &str, instance_id: &str) -> String {
    format!("{node_name}_{instance_id}")
}

/// The node name in a lease holder's identity (`<node name>_<instance id>`).
pub fn leader_node(identity: &str) -> &str {
    identity.split_once('_').map_or(identity, |(node, _)| node)
}

/// The leases of the control loops, in `kube-system`, as Kubernetes names them.
pub const SCHEDULER_LEASE: &str = "kube-scheduler";
pub const CONTROLLERS_LEASE: &str = "kube-controller-manager";
pub const CLOUD_CONTROLLER_LEASE: &str = "cloud-controller-manager";

/// How often a master's API server checks etcd's member list for its endpoints.
const ETCD_MEMBERS_EVERY: Duration = Duration::from_secs(5);

/// The API server's store: this master's etcd member and its peers (following etcd's member
/// list) when the config has `[master.etcd]` (retried until etcd answers: the members may still
/// be forming), else the embedded store in `<data_dir>/store.db`.
/// The store, and on an HA master the etcd store itself (whose connection is renewed).
async fn open_store(config: &NodeConfig, settings: &MasterSettings) -> Result<(Arc<dyn Store>, Option<EtcdStore>)> {
    let Some(etcd) = &settings.etcd else {
        let path = config.data_dir.join("store.db");
        let store = SqliteStore::open(&path).with_context(|| format!("opening the store {}", path.display()))?;
        return Ok((Arc::new(store), None));
    };
    let options = crate::nodeconfig::etcd::client_options(config, etcd)?;
    let started = std::time::Instant::now();
    let mut attempts = 0u32;
    loop {
        let (error, what) = match EtcdStore::connect(options.clone()).await {
            Ok(store) => match store.revision().await {
                Ok(_) => {
                    // Its own member always; the others as etcd lists them now, not as they were
                    // at create (a master replaced since has another address).
                    store.follow_members(options.endpoints[..1].to_vec(), ETCD_MEMBERS_EVERY);
                    return Ok((Arc::new(store.clone()), Some(store)));
                }
                Err(e) => (e.to_string(), "etcd does not answer yet"),
            },
            Err(e) => (e.to_string(), "connecting to etcd"),
        };
        // The journal says once what the master waits for, not every second while members form.
        if attempts == 0 {
            tracing::info!(%error, "{what}; retrying every second");
        } else {
            tracing::debug!(%error, attempts, "{what}");
        }
        attempts += 1;
        if started.elapsed() > Duration::from_secs(600) {
            anyhow::bail!("etcd at {:?} did not answer within 10 minutes", options.endpoints);
        }
        tokio::time::sleep(Duration::from_secs(1)).await;
    }
}

/// Resolves when systemd (or a user) asks the process to stop.
pub async fn shutdown_signal() {
    let mut term = match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
        Ok(s) => s,
        Err(_) => return std::future::pending().await,
    };
    tokio::select! {
        _ = term.recv() => {}
        _ = tokio::signal::ctrl_c() => {}
    }
}

/// Marks this master's Node as the control plane once its agent has registered it, as kubeadm's
/// mark-control-plane phase does with the admin credential: the
/// `node-role.kubernetes.io/control-plane` label, which NodeRestriction keeps the node's own
/// credential from setting (`apiserver/noderestriction.rs`), and its `NoSchedule` taint (for a Node
/// registered without it). Tried every second until done.
async fn mark_control_plane(client: ApiClient, name: String) {
    use crate::api::node::{CONTROL_PLANE, Taint};
    use crate::api::resource::NODES;
    loop {
        match client.get::<crate::api::Node>(&NODES, None, &name).await {
            Ok(mut node) => {
                let tainted = node.spec.taints.iter().any(|t| t.key == CONTROL_PLANE && t.effect == "NoSchedule");
                if node.metadata.labels.contains_key(CONTROL_PLANE) && tainted {
                    return;
                }
                node.metadata.labels.insert(CONTROL_PLANE.into(), String::new());
                if !tainted {
                    node.spec.taints.push(Taint { key: CONTROL_PLANE.into(), effect: "NoSchedule".into(), ..Default::default() });
                }
                match client.replace(&NODES, None, &name, &node).await {
                    Ok(_) => {
                        tracing::info!(node = %name, "marked as the control plane");
                        return;
                    }
                    Err(e) => tracing::debug!(error = %e, "marking the node as the control plane"),
                }
            }
            Err(e) if e.is_not_found() => {}
            Err(e) => tracing::debug!(error = %e, "reading the node to mark it as the control plane"),
        }
        tokio::time::sleep(Duration::from_secs(1)).await;
    }
}


#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_lease_holder_names_the_node_and_the_machine() {
        let identity = leader_identity("c-masters-2", "i-0abc");
        assert_eq!(identity, "c-masters-2_i-0abc");
        assert_eq!(leader_node(&identity), "c-masters-2");
        assert_eq!(leader_node("c-masters-2"), "c-masters-2", "an identity without a machine is all node");
    }
}
