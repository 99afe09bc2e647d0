//! The cloud controller manager, run by the master: the cluster's desired state turned into cloud
//! calls through the same [`Cloud`] abstraction (and the same `Resilient` retries) as `create`.
//!
//! - [`services`]: a network load balancer for every Service of type LoadBalancer;
//! - [`nodes`]: Nodes of terminated machines deleted at once, their pods with them;
//! - [`machines`]: worker pools kept at their `MachinePool` size, unhealthy machines replaced.
//!
//! Credentials: the master's config (`[master.cloud]`) names the region and, against the LocalStack
//! harness, the endpoint and LocalStack's fixed test credentials; on AWS the instance's own.

pub mod machines;
pub mod pools;
pub mod nodes;
pub mod services;

use std::sync::Arc;
use std::time::Duration;

use tokio::sync::Notify;

use crate::api::resource::{NODES, SERVICES};
use crate::api::service::Service;
use crate::api::Node;
use crate::bootstrap::{BinaryFetch, Join};
use crate::bootstrap::hostkeys::KnownHosts;
use crate::client::ApiClient;
use crate::cloud::aws::{AwsCloud, AwsOptions};
use crate::cloud::{owned_by, Cloud, Resilient, RetryPolicy};
use crate::controllers::cache::Cache;
use crate::nodeconfig::{CloudSettings, NodeConfig};

/// How often the service controller re-checks the cloud when nothing changed in the API.
const SERVICE_RESYNC: Duration = Duration::from_secs(30);
/// How often the node controller looks for terminated machines.
const NODE_PERIOD: Duration = Duration::from_secs(2);

/// The cloud as the settings describe it, behind the retry decorator.
pub async fn connect(settings: &CloudSettings) -> Arc<dyn Cloud> {
    let credentials = settings.access_key_id.clone().zip(settings.secret_access_key.clone());
    let options = AwsOptions { region: Some(settings.region.clone()), profile: None, endpoint_url: settings.endpoint_url.clone(), static_credentials: credentials };
    let aws = AwsCloud::connect(&options, &settings.region).await;
    Arc::new(Resilient::new(Arc::new(aws), RetryPolicy::default()))
}

/// Runs the three controllers forever on `client` (a `system:masters` identity).
pub async fn run(client: ApiClient, settings: CloudSettings, config: NodeConfig, ca_pem: String) -> anyhow::Result<()> {
    let cloud = connect(&settings).await;
    let cluster = config.cluster.clone();
    let join = Join {
        cluster: cluster.clone(),
        api_host: config.api.endpoint.clone(),
        port: config.api.port,
        ca_hash: crate::pki::ca_hash(&ca_pem)?,
        token_ttl: Duration::from_secs(3600),
        // The machines this master adds fetch its binary from it over HTTPS, inside the VPC, as
        // create's workers do: sending 43 MB to each over SSH (libssh2's SCP on the master, sshd
        // on the machine) cost more CPU while eight machines joined at once.
        binary: Some(BinaryFetch {
            url: format!("https://{}:{}{}", config.internal_ip, config.api.port, crate::apiserver::NODE_BINARY_PATH),
            ca_pem: ca_pem.clone(),
        }),
    };
    let ctx = machines::Context {
        cloud: cloud.clone(),
        spec_path: settings.spec_path.clone(),
        ssh_key: settings.ssh_key_path.clone(),
        known_hosts: KnownHosts::at(config.data_dir.join("known_hosts")),
        join,
        health_timeout: Duration::from_secs(settings.health_timeout_seconds),
        max_unhealthy_percent: settings.max_unhealthy_percent,
        data_dir: config.data_dir.clone(),
        own_instance: config.instance_id.clone(),
        cloud_settings: settings.clone(),
    };
    // All three in this one task, so that a leader that loses its lease stops every one of them.
    let node_controller = {
        let (cloud, client, cluster) = (cloud.clone(), client.clone(), cluster.clone());
        async move {
            loop {
                if let Err(e) = nodes::pass(cloud.as_ref(), &client, &cluster).await {
                    tracing::warn!(error = format!("{e:#}"), "node controller pass");
                }
                tokio::time::sleep(NODE_PERIOD).await;
            }
        }
    };
    tokio::join!(machines::run(ctx, client.clone()), node_controller, run_services(cloud, client, cluster));
    Ok(())
}

/// The service controller's loop: a pass on every change of services or nodes, and every 30 s.
async fn run_services(cloud: Arc<dyn Cloud>, client: ApiClient, cluster: String) {
    let changed = Arc::new(Notify::new());
    let services: Arc<Cache<Service>> = Cache::spawn(client.clone(), SERVICES, changed.clone());
    let nodes: Arc<Cache<Node>> = Cache::spawn(client.clone(), NODES, changed.clone());
    let mut network = None;
    let mut last_targets = None;
    let mut last_services = None;
    loop {
        tokio::select! {
            _ = changed.notified() => {}
            _ = tokio::time::sleep(SERVICE_RESYNC) => { last_services = None; }
        }
        if !(services.synced() && nodes.synced()) {
            continue;
        }
        let svcs = services.snapshot();
        let targets = services::targets(&nodes.snapshot());
        // Node heartbeats change nodes every few seconds; only a change of what matters calls the cloud.
        let fingerprint = serde_json::to_string(&svcs.iter().map(|s| (&s.metadata.name, &s.metadata.namespace, &s.spec)).collect::<Vec<_>>()).unwrap_or_default();
        if last_targets.as_ref() == Some(&targets) && last_services.as_ref() == Some(&fingerprint) {
            continue;
        }
        if network.is_none() {
            network = match find_network(cloud.as_ref(), &cluster).await {
                Ok(n) => Some(n),
                Err(e) => {
                    tracing::warn!(error = format!("{e:#}"), "finding the cluster's network");
                    tokio::time::sleep(Duration::from_secs(2)).await;
                    changed.notify_one();
                    continue;
                }
            };
        }
        let Some(net) = network.as_ref() else { continue };
        match services::reconcile(cloud.as_ref(), &cluster, net, &svcs, &targets).await {
            Ok(addresses) => {
                for s in &svcs {
                    let key = services::service_key(s);
                    let want = addresses.get(&key).map(|a| services::ingress_status(a));
                    let have = serde_json::to_value(&s.status).unwrap_or_default();
                    let shown = have.pointer("/loadBalancer/ingress").and_then(|v| v.as_array()).is_some_and(|a| !a.is_empty());
                    let patch = match &want {
                        Some(w) if w.pointer("/loadBalancer") != have.pointer("/loadBalancer") => w.clone(),
                        None if shown => serde_json::json!({ "loadBalancer": {} }),
                        _ => continue,
                    };
                    if let Err(e) = client.patch_status::<Service>(&SERVICES, Some(s.metadata.namespace_or_default()), &s.metadata.name, &serde_json::json!({ "status": patch })).await {
                        tracing::warn!(error = %e, service = %key, "writing the load balancer's address");
                    }
                }
                last_targets = Some(targets);
                last_services = Some(fingerprint);
            }
            Err(e) => {
                tracing::warn!(error = %e, "service controller pass");
                tokio::time::sleep(Duration::from_secs(2)).await;
                changed.notify_one();
            }
        }
    }
}

async fn find_network(cloud: &dyn Cloud, cluster: &str) -> anyhow::Result<services::Network> {
    let owned = owned_by(cluster);
    let vpc = cloud.vpcs(&owned).await?.into_iter().next().ok_or_else(|| anyhow::anyhow!("the cluster has no VPC"))?;
    let subnet_ids = cloud.subnets(&owned).await?.into_iter().filter(|s| s.vpc_id == vpc.id).map(|s| s.id).collect();
    Ok(services::Network { vpc_id: vpc.id, subnet_ids })
}

#[cfg(test)]
mod tests;
