//! The create flow: from running machines to a working cluster. Install and start the node
//! software over SSH, masters first, then every worker in parallel; join the workers; wait until
//! every node is Ready; write the operator's credentials.

use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, Instant};

use super::hostkeys::KnownHosts;
use super::install::{copy_ca, install_master, node_spec_copy, read_root_file, ArtifactsTask, BinaryFetch, ControlPlane};
use super::join::{create_join_token, install_with_token, needs_upgrade, upgrade_worker, Join};
use super::machines::{connect, machines, wait_ready, wait_until, Machine, Sessions};
use super::{BootstrapError, BootstrapOptions, PKI_DIR};
use crate::client::kubeconfig::Kubeconfig;
use crate::client::{ApiClient, ClientAuth};
use crate::cloud::Cloud;
use crate::home::ClusterHome;
use crate::pki;
use crate::provision::Converged;
use crate::report::Reporter;
use crate::spec::{ClusterSpec, Role};

/// What bootstrapping produced.
#[derive(Debug, Clone)]
pub struct Bootstrapped {
    /// `https://host:port` of the API, through the load balancer when there is one.
    pub server: String,
    pub kubeconfig: PathBuf,
    /// Nodes on which something was installed or restarted.
    pub changed: Vec<String>,
    /// Every node and whether it is Ready.
    pub nodes: Vec<(String, bool)>,
}

/// Bootstraps every machine of a converged cluster and waits until all nodes are Ready.
/// `artifacts`: the binary as the operator sends it, `ArtifactsTask::start(options.binary, Packing::Gzip)`.
#[allow(clippy::too_many_arguments)]
pub async fn bootstrap(
    cloud: &dyn Cloud,
    spec: &ClusterSpec,
    converged: &Converged,
    home: &ClusterHome,
    ssh_key: &std::path::Path,
    options: &BootstrapOptions,
    artifacts: ArtifactsTask,
    reporter: &dyn Reporter,
) -> Result<Bootstrapped, BootstrapError> {
    let machines = machines(spec, converged);
    let masters: Vec<&Machine> = machines.iter().filter(|m| m.role == Role::Master).collect();
    let workers: Vec<&Machine> = machines.iter().filter(|m| m.role == Role::Worker).collect();
    let master = *masters.first().ok_or_else(|| BootstrapError::Other("the cluster has no master machine".into()))?;
    let lb_host = converged.load_balancer.as_ref().map(|l| l.dns_name.clone());
    let api_host = lb_host.clone().unwrap_or(master.private_ip()?.to_string());
    let server = format!("https://{api_host}:{}", spec.api.port);
    let known = KnownHosts::at(home.dir.join("known_hosts"));
    let user = spec.ssh.user.clone();

    reporter.phase("preparing the node software");
    let artifacts = artifacts.wait().await?;

    reporter.phase("connecting to the machines over SSH");
    let connects = machines.iter().map(|m| {
        let known = &known;
        let user = &user;
        async move {
            reporter.item(&m.name, "connecting");
            let s = connect(cloud, m, user, ssh_key, known, options.ssh_deadline).await;
            if s.is_ok() {
                reporter.item_done(&m.name, "connected, host key verified");
            }
            s
        }
    });
    let mut sessions = Sessions::new();
    let mut errors = Vec::new();
    for (m, result) in machines.iter().zip(futures::future::join_all(connects).await) {
        match result {
            Ok(s) => {
                sessions.insert(m.name.clone(), Arc::new(std::sync::Mutex::new(s)));
            }
            Err(e) => errors.push(e),
        }
    }
    BootstrapError::all(errors)?;

    // Masters. Meanwhile, each worker is checked: joined with another binary, it is upgraded later,
    // one at a time. (Starting the workers' Docker now, too, made the master's install twice as
    // slow in the harness, where ten booting workers share the cores with it: the master is on the
    // critical path, through the load balancer's health checks.)
    reporter.phase("installing the master");
    let plane = ControlPlane::new(spec, &masters, lb_host.as_deref(), api_host.clone())?;
    let spec_copy = node_spec_copy(spec)?;
    let ssh_key_bytes = std::fs::read(ssh_key).map_err(|e| BootstrapError::Other(format!("reading the cluster's SSH key {}: {e}", ssh_key.display())))?;
    let install_masters = async {
        let (mut changed, mut cloud_endpoint) = (Vec::new(), None);
        // An HA control plane: an etcd member on every master, formed together; the first master
        // makes the cluster CA and etcd's CA, and the others get a copy of both before they start.
        for (index, m) in masters.iter().enumerate() {
            if plane.etcd.is_some() && index > 0 {
                copy_ca(&sessions[&master.name], &sessions[&m.name]).await?;
            }
            reporter.item(&m.name, "installing");
            let installed = install_master(&sessions[&m.name], spec, m, &plane, &spec_copy, &ssh_key_bytes, &artifacts, None).await?;
            reporter.item_done(&m.name, if installed.changed { "installed and started" } else { "already up to date" });
            if installed.changed {
                changed.push(m.name.clone());
            }
            cloud_endpoint = installed.cloud_endpoint;
        }
        Ok::<_, BootstrapError>((changed, cloud_endpoint))
    };
    let check_workers = futures::future::join_all(workers.iter().map(|m| needs_upgrade(&sessions[&m.name], &artifacts)));
    let (masters_changed, upgrade_checks) = tokio::join!(install_masters, check_workers);
    let (mut changed, cloud_endpoint) = masters_changed?;

    // The master made the cluster's PKI on its first start: fetch the CA and the admin credentials.
    reporter.phase("waiting for the API server");
    let creds = {
        let session = sessions[&master.name].clone();
        let deadline = options.ready_deadline;
        let node = master.name.clone();
        tokio::task::spawn_blocking(move || -> Result<(String, String, String), BootstrapError> {
            let s = session.lock().map_err(|_| BootstrapError::Other("session lock poisoned".into()))?;
            let start = Instant::now();
            loop {
                let read = |f: &str| read_root_file(&*s, &format!("{PKI_DIR}/{f}")).map_err(|source| BootstrapError::Ssh { node: node.clone(), step: format!("reading {f}"), source: Box::new(source) });
                if let (Some(ca), Some(cert), Some(key)) = (read("ca.crt")?, read("admin.crt")?, read("admin.key")?) {
                    return Ok((ca, cert, key));
                }
                if start.elapsed() > deadline {
                    let journal = s.exec("sudo -n journalctl -u clusterctl-master -n 20 --no-pager").map(|o| o.stdout).unwrap_or_default();
                    return Err(BootstrapError::Node { node: node.clone(), step: "waiting for the master to create the cluster's certificates".into(), message: format!("not there after {deadline:?}; last log lines:\n{journal}") });
                }
                std::thread::sleep(Duration::from_millis(300));
            }
        })
        .await
        .map_err(|e| BootstrapError::Other(e.to_string()))??
    };
    let (ca_pem, admin_cert, admin_key) = creds;
    let direct = ApiClient::new(&format!("https://{}:{}", master.address()?, spec.api.port), ClientAuth::Certificate { ca_pem: ca_pem.clone(), cert_pem: admin_cert.clone(), key_pem: admin_key.clone() })
        .map_err(|e| BootstrapError::Other(format!("building the API client: {e}")))?;
    wait_until(options.ready_deadline, "the API server on the master to be ready", || async { direct.request_text("GET", "/readyz").await.is_ok().then_some(()) }).await?;
    // Only now do the load balancer's health checks start to count (see provision::converge).
    if let Some(registration) = &converged.registration {
        crate::provision::register_masters(cloud, registration, reporter).await.map_err(|e| BootstrapError::Other(format!("registering the masters with the API load balancer: {e}")))?;
    }
    let kubeconfig_path = home.dir.join("kubeconfig");
    let kubeconfig = Kubeconfig { cluster_name: spec.name.as_str().into(), server: server.clone(), ca_pem: ca_pem.clone(), client_cert_pem: admin_cert.clone(), client_key_pem: admin_key.clone() };
    kubeconfig.write(&kubeconfig_path).map_err(|e| BootstrapError::Other(format!("writing {}: {e}", kubeconfig_path.display())))?;

    // Workers.
    if !workers.is_empty() {
        reporter.phase("installing and joining the workers");
        let ca_hash = pki::ca_hash(&ca_pem).map_err(|e| BootstrapError::Other(format!("hashing the cluster CA: {e}")))?;
        // The workers fetch the binary from the master inside the VPC: one copy crosses the
        // operator's link instead of one per worker (and nothing is unpacked on them).
        let binary = BinaryFetch { url: format!("https://{}:{}{}", master.private_ip()?, spec.api.port, crate::apiserver::NODE_BINARY_PATH), ca_pem: ca_pem.clone() };
        let join = Join {
            cluster: spec.name.as_str().into(),
            api_host: api_host.clone(),
            port: spec.api.port,
            ca_hash,
            token_ttl: options.token_ttl,
            binary: Some(binary),
            network: Some(crate::nodeconfig::NodeNetwork::of(&spec.network)),
            registries: spec.registries.clone(),
            // The workers' own cloud calls go where the masters' do.
            cloud_endpoint,
        };
        // Joined workers running another binary are upgraded one at a time, drained first; the
        // others (new machines, config changes) are installed in parallel.
        let mut upgrades = Vec::new();
        let mut others = Vec::new();
        for (m, check) in workers.iter().zip(upgrade_checks) {
            if check? {
                upgrades.push(*m);
            } else {
                others.push(*m);
            }
        }
        let token = create_join_token(&direct, options.token_ttl).await?;
        changed.extend(install_with_token(&join, &others, &sessions, &artifacts, &token, reporter).await?);
        if !upgrades.is_empty() {
            reporter.phase(&format!("upgrading the node software on {} workers, one at a time", upgrades.len()));
        }
        for m in upgrades {
            upgrade_worker(&direct, &join, m, &sessions, &artifacts, &token, options.ready_deadline, reporter).await?;
            changed.push(m.name.clone());
        }
    }

    // Every node Ready, seen through the load balancer as the operator will see it.
    reporter.phase("waiting for every node to be Ready");
    let client = ApiClient::new(&server, ClientAuth::Certificate { ca_pem, cert_pem: admin_cert, key_pem: admin_key }).map_err(|e| BootstrapError::Other(format!("building the API client: {e}")))?;
    let wanted: Vec<String> = machines.iter().map(|m| m.name.clone()).collect();
    let nodes = wait_ready(&client, &wanted, options.ready_deadline, reporter).await?;
    // The spec's worker counts become the cluster's desired sizes (the spec wins at create).
    for pool in &spec.workers {
        record_pool_size(&client, pool.name.as_str(), pool.count).await?;
    }
    Ok(Bootstrapped { server, kubeconfig: kubeconfig_path, changed, nodes })
}

/// Records a worker pool's desired size in its `MachinePool` object, which the machine controller keeps.
pub async fn record_pool_size(client: &ApiClient, pool: &str, replicas: u32) -> Result<(), BootstrapError> {
    use crate::api::machinepool::MachinePool;
    use crate::api::resource::MACHINE_POOLS;
    let failed = |e: crate::client::ClientError| BootstrapError::Other(format!("recording pool {pool}'s size: {e}"));
    match client.get::<MachinePool>(&MACHINE_POOLS, None, pool).await {
        Ok(p) if p.spec.replicas == replicas => Ok(()),
        Ok(_) => client.patch::<MachinePool>(&MACHINE_POOLS, None, pool, &serde_json::json!({ "spec": { "replicas": replicas } })).await.map(|_| ()).map_err(failed),
        Err(e) if e.is_not_found() => client.create(&MACHINE_POOLS, None, &MachinePool::new(pool, replicas)).await.map(|_| ()).map_err(failed),
        Err(e) => Err(failed(e)),
    }
}
