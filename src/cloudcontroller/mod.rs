//! The cloud controller manager, run by the master: the cluster's desired state turned into cloud
//! calls through the same [`Cloud`] abstraction (and the same `Resilient` retries) as `create`.
//!
//! - [`services`]: a network load balancer for every Service of type LoadBalancer;
//! - [`nodes`]: Nodes of terminated machines deleted at once, their pods with them;
//! - [`machines`]: worker pools kept at their `MachinePool` size, unhealthy machines replaced;
//! - [`routes`]: one VPC route per node's pod range to its instance.
//!
//! Credentials: the master's config (`[master.cloud]`) names the region and, against the LocalStack
//! harness, the endpoint and LocalStack's fixed test credentials; on AWS the instance's own.

pub mod join;
pub mod machines;
pub mod pools;
pub mod nodes;
pub mod routes;
pub mod services;

use std::collections::BTreeSet;
use std::sync::{Arc, Mutex, PoisonError};
use std::time::{Duration, Instant};

use anyhow::Context as _;

use crate::api::machinepool::MachinePool;
use crate::api::pod::Pod;
use crate::api::service::{Service, ServiceStatus};
use crate::api::Node;
use crate::bootstrap::{BinaryFetch, Join};
use crate::bootstrap::hostkeys::KnownHosts;
use crate::client::{ApiClient, ListOptions};
use crate::cloud::aws::{AwsCloud, AwsOptions};
use crate::cloud::{owned_by, Cloud, Resilient, RetryPolicy};
use crate::nodeconfig::{CloudSettings, NodeConfig};
use crate::api::event::{NORMAL, WARNING};
use crate::runtime::events::Recorder;
use crate::runtime::{Action, Backoff, Client, Controller, ObjectKey, Store};

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

/// How often the route controller re-checks the cloud when no node changed.
const ROUTE_RESYNC: Duration = Duration::from_secs(30);

/// Runs the controllers forever on `client` (a `system:masters` identity); the route controller
/// only when the config names the cluster's blocks.
pub async fn run(client: ApiClient, settings: CloudSettings, config: NodeConfig, ca_pem: String) -> anyhow::Result<()> {
    let cluster_cidr = config.network.map(|n| n.cluster_cidr);
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
        network: config.network,
        registries: config.registries.clone(),
        cloud_endpoint: settings.endpoint_url.clone(),
    };
    let ctx = machines::Context {
        cloud: cloud.clone(),
        spec_path: settings.spec_path.clone(),
        ssh_key: settings.ssh_key_path.clone(),
        known_hosts: KnownHosts::at(config.data_dir.join("known_hosts")),
        join,
        data_dir: config.data_dir.clone(),
        own_instance: config.instance_id.clone(),
        cloud_settings: settings.clone(),
    };
    let stores = Stores {
        services: Store::reflect(client.clone(), None, ListOptions::default()),
        nodes: Store::reflect(client.clone(), None, ListOptions::default()),
        pods: Store::reflect(client.clone(), None, ListOptions::default()),
        pools: Store::reflect(client.clone(), None, ListOptions::default()),
    };
    let machine_ctx = Arc::new(MachineContext {
        machines: ctx,
        events: Recorder::new(client.clone(), "machine-controller", ""),
        client: client.clone(),
        state: tokio::sync::Mutex::new(machines::State::default()),
    });
    let ctx = Arc::new(Context::new(cloud, cluster, client, stores).with_cluster_cidr(cluster_cidr));
    let routes = async {
        match cluster_cidr {
            Some(_) => route_controller(&ctx).run(reconcile_routes, ctx.clone()).await,
            None => std::future::pending().await,
        }
    };
    // All in this one task, so that a leader that loses its lease stops every one of them.
    tokio::join!(
        machine_controller(&ctx.stores).run(reconcile_machines, machine_ctx),
        node_controller(&ctx).run(reconcile_nodes, ctx.clone()),
        service_controller(&ctx).run(reconcile_services, ctx.clone()),
        routes,
    );
    Ok(())
}

/// The stores the three controllers read.
pub struct Stores {
    pub services: Store<Service>,
    pub nodes: Store<Node>,
    pub pods: Store<Pod>,
    pub pools: Store<MachinePool>,
}

/// What the three controllers share: the cloud, the cluster's name, the API and its stores.
pub struct Context<C> {
    pub cloud: Arc<dyn Cloud>,
    pub cluster: String,
    pub client: C,
    pub stores: Stores,
    /// The cluster's VPC and subnets, found once.
    network: tokio::sync::Mutex<Option<services::Network>>,
    /// What the service controller last made the cloud match, and when.
    last_services: Mutex<Option<(BTreeSet<String>, String, Instant)>>,
    /// Events as Kubernetes' `service-controller` records them.
    service_events: Recorder<C>,
    /// The block of the nodes' pod ranges: the route controller's routes lie in it.
    cluster_cidr: Option<ipnet::Ipv4Net>,
    /// The routes the route controller last made the cloud hold, and when.
    last_routes: Mutex<Option<(String, Instant)>>,
    /// Events on nodes as Kubernetes' `route_controller` records them.
    route_events: Recorder<C>,
}

impl<C: Client> Context<C> {
    /// The shared context of the service and node controllers.
    pub fn new(cloud: Arc<dyn Cloud>, cluster: String, client: C, stores: Stores) -> Self {
        let service_events = Recorder::new(client.clone(), "service-controller", "");
        let route_events = Recorder::new(client.clone(), "route_controller", "");
        Context {
            cloud,
            cluster,
            client,
            stores,
            network: tokio::sync::Mutex::new(None),
            last_services: Mutex::new(None),
            service_events,
            cluster_cidr: None,
            last_routes: Mutex::new(None),
            route_events,
        }
    }

    /// The same, with the route controller's block.
    pub fn with_cluster_cidr(mut self, cidr: Option<ipnet::Ipv4Net>) -> Self {
        self.cluster_cidr = cidr;
        self
    }
}

/// The machine controller's context: it bootstraps machines over SSH with the real client.
struct MachineContext {
    machines: machines::Context,
    /// Events on `MachinePool`s: replacements, launches, a blocked replacement.
    events: Recorder<ApiClient>,
    client: ApiClient,
    state: tokio::sync::Mutex<machines::State>,
}

/// The one key of each of these controllers: every pass looks at everything.
fn pass_key() -> ObjectKey {
    ObjectKey::cluster("cloud")
}

/// The service controller: a pass on every change of services or nodes, and every 30 s.
pub fn service_controller<C: Client>(ctx: &Context<C>) -> Controller {
    Controller::new("cloud-services")
        .watches(&ctx.stores.services, |_: &Service| vec![pass_key()])
        .watches(&ctx.stores.nodes, |_: &Node| vec![pass_key()])
        .resync_every(SERVICE_RESYNC, || vec![pass_key()])
        .backoff(Backoff { initial: Duration::from_secs(2), max: SERVICE_RESYNC })
}

/// The route controller: a pass on every change of nodes, and every 30 s.
pub fn route_controller<C: Client>(ctx: &Context<C>) -> Controller {
    Controller::new("cloud-routes")
        .watches(&ctx.stores.nodes, |_: &Node| vec![pass_key()])
        .resync_every(ROUTE_RESYNC, || vec![pass_key()])
        .backoff(Backoff { initial: Duration::from_secs(1), max: ROUTE_RESYNC })
}

/// A route controller pass, when the nodes' ranges or machines changed or 30 s passed.
pub async fn reconcile_routes<C: Client>(_key: ObjectKey, ctx: Arc<Context<C>>) -> anyhow::Result<Action> {
    let Some(cidr) = ctx.cluster_cidr else { return Ok(Action::AwaitChange) };
    let nodes = ctx.stores.nodes.cloned();
    let fingerprint = format!("{:?}", routes::wanted(&nodes, cidr));
    let unchanged = ctx.last_routes.lock().unwrap_or_else(PoisonError::into_inner).as_ref().is_some_and(|(f, at)| *f == fingerprint && at.elapsed() < ROUTE_RESYNC);
    if unchanged {
        return Ok(Action::AwaitChange);
    }
    let mut happened = Vec::new();
    let result = routes::reconcile(ctx.cloud.as_ref(), &ctx.cluster, cidr, &nodes, &mut happened).await;
    for (node, reason, message) in happened {
        if let Some(n) = nodes.iter().find(|n| n.metadata.name == node) {
            let kind = if reason == "RouteCreated" { NORMAL } else { WARNING };
            ctx.route_events.record(n, kind, reason, message);
        }
    }
    result?;
    *ctx.last_routes.lock().unwrap_or_else(PoisonError::into_inner) = Some((fingerprint, Instant::now()));
    Ok(Action::AwaitChange)
}

/// The node controller: a pass every 2 s (it polls the cloud for terminated machines). Its
/// stores trigger nothing: it only waits for them to list before its first pass.
pub fn node_controller<C: Client>(ctx: &Context<C>) -> Controller {
    Controller::new("cloud-nodes")
        .watches(&ctx.stores.nodes, |_: &Node| Vec::new())
        .watches(&ctx.stores.pods, |_: &Pod| Vec::new())
        .resync_every(Duration::from_secs(3600), || vec![pass_key()])
        .backoff(Backoff { initial: NODE_PERIOD, max: Duration::from_secs(30) })
}

/// The machine controller: a pass every 5 s, and at once when a pool's desired size changes.
pub fn machine_controller(stores: &Stores) -> Controller {
    Controller::new("cloud-machines")
        .watches(&stores.pools, machines::resize_trigger(pass_key()))
        .resync_every(Duration::from_secs(3600), || vec![pass_key()])
        .backoff(Backoff { initial: machines::PERIOD, max: Duration::from_secs(30) })
}

/// A service controller pass: the cloud made to match the services (when they or the workers
/// changed, or 30 s passed), then each service's status shows its balancer's address.
pub async fn reconcile_services<C: Client>(_key: ObjectKey, ctx: Arc<Context<C>>) -> anyhow::Result<Action> {
    let svcs = ctx.stores.services.cloned();
    let targets = services::targets(&ctx.stores.nodes.cloned());
    // Node heartbeats change nodes every few seconds; only a change of what matters calls the cloud.
    let fingerprint = serde_json::to_string(&svcs.iter().map(|s| (&s.metadata.name, &s.metadata.namespace, &s.spec)).collect::<Vec<_>>()).unwrap_or_default();
    let unchanged = ctx.last_services.lock().unwrap_or_else(PoisonError::into_inner).as_ref().is_some_and(|(t, f, at)| *t == targets && *f == fingerprint && at.elapsed() < SERVICE_RESYNC);
    if unchanged {
        return Ok(Action::AwaitChange);
    }
    let mut network = ctx.network.lock().await;
    if network.is_none() {
        *network = Some(find_network(ctx.cloud.as_ref(), &ctx.cluster).await.context("finding the cluster's network")?);
    }
    let Some(net) = network.as_ref() else { return Ok(Action::AwaitChange) };
    let mut happened = Vec::new();
    let result = services::reconcile(ctx.cloud.as_ref(), &ctx.cluster, net, &svcs, &targets, &mut happened).await;
    drop(network);
    let by_key = |key: &str| svcs.iter().find(|s| services::service_key(s) == key);
    for (key, reason, message) in happened {
        if let Some(svc) = by_key(&key) {
            ctx.service_events.record(svc, NORMAL, reason, message);
        }
    }
    let addresses = match result {
        Ok(a) => a,
        Err(e) => {
            for svc in svcs.iter().filter(|s| s.spec.service_type.as_deref() == Some("LoadBalancer")) {
                ctx.service_events.record(svc, WARNING, "SyncLoadBalancerFailed", format!("Error syncing load balancer: {e}"));
            }
            return Err(e.into());
        }
    };
    for s in &svcs {
        let key = services::service_key(s);
        let want = addresses.get(&key).map(|a| services::ingress_status(a)).unwrap_or_default();
        if want == s.status.load_balancer {
            continue;
        }
        let status = ServiceStatus { load_balancer: want, ..Default::default() };
        let patch = serde_json::json!({ "status": serde_json::to_value(&status)? });
        if let Err(e) = ctx.client.patch_status::<Service>(&ObjectKey::of(&s.metadata), &patch).await {
            tracing::warn!(error = %e, service = %key, "writing the load balancer's address");
        }
    }
    *ctx.last_services.lock().unwrap_or_else(PoisonError::into_inner) = Some((targets, fingerprint, Instant::now()));
    Ok(Action::AwaitChange)
}

/// A node controller pass, then the next in [`NODE_PERIOD`].
pub async fn reconcile_nodes<C: Client>(_key: ObjectKey, ctx: Arc<Context<C>>) -> anyhow::Result<Action> {
    nodes::pass(ctx.cloud.as_ref(), &ctx.client, &ctx.cluster, &ctx.stores.nodes, &ctx.stores.pods).await?;
    Ok(Action::RequeueAfter(NODE_PERIOD))
}

/// A machine controller pass, then the next in [`machines::PERIOD`].
async fn reconcile_machines(_key: ObjectKey, ctx: Arc<MachineContext>) -> anyhow::Result<Action> {
    let mut state = ctx.state.lock().await;
    machines::pass(&ctx.machines, &ctx.client, &ctx.events, &mut state).await?;
    Ok(Action::RequeueAfter(machines::PERIOD))
}

async fn find_network(cloud: &dyn Cloud, cluster: &str) -> anyhow::Result<services::Network> {
    let owned = owned_by(cluster);
    let vpc = cloud.vpcs(&owned).await?.into_iter().next().ok_or_else(|| anyhow::anyhow!("the cluster has no VPC"))?;
    let subnet_ids = cloud.subnets(&owned).await?.into_iter().filter(|s| s.vpc_id == vpc.id).map(|s| s.id).collect();
    Ok(services::Network { vpc_id: vpc.id, subnet_ids })
}

#[cfg(test)]
mod tests;
