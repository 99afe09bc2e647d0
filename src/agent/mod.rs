//! The node agent (kubelet): registers its Node, renews its Lease, reports its status.
//!
//! Layout: this file holds the registration and heartbeat loop; [`host`] reads the machine's
//! capacity and identity; [`pods`] runs the pods bound to the node through a [`runtime`]
//! (Docker), as a controller of the [controller runtime](crate::runtime) fed by a store of the
//! node's pods; [`server`] is its HTTPS port (10250), where the API server reads pod logs.

pub mod host;
pub mod images;
pub mod podconfig;
pub mod pods;
pub mod portforward;
pub mod remotecommand;
pub mod runtime;
pub mod server;
pub mod spdy;

use std::collections::BTreeMap;
use std::net::IpAddr;
use std::time::Duration;

use crate::api::lease::{Lease, NODE_LEASE_NAMESPACE};
use crate::api::resource::{LEASES, NODES};
use crate::api::time::{MicroTime, Time};
use crate::api::node::{CONTROL_PLANE, Taint};
use crate::api::{DaemonEndpoint, Node, NodeAddress, NodeCondition, NodeDaemonEndpoints, NodeSpec, NodeStatus, NodeSystemInfo, ObjectMeta};
use crate::client::{ApiClient, ClientError};

/// Who this agent is and how often it reports.
#[derive(Debug, Clone)]
pub struct AgentConfig {
    pub node_name: String,
    pub internal_ip: IpAddr,
    /// `aws:///<zone>/<instance id>`.
    pub provider_id: String,
    pub labels: BTreeMap<String, String>,
    /// How often the lease is renewed.
    pub heartbeat: Duration,
    /// How often the full node status is written even when nothing changed.
    pub status_every: Duration,
    /// The agent's serving certificate and the CA of its clients (the API server); no server
    /// without it.
    pub serving: Option<crate::apiserver::ServerTls>,
    /// The cluster's blocks (its cluster CIDR and VPC): pods' traffic to them keeps the pod's
    /// address; to elsewhere it leaves through the node's.
    pub routed: Vec<ipnet::Ipv4Net>,
    /// An endpoint other than AWS's for the node's own cloud calls (ECR's tokens): only the
    /// LocalStack harness's, as the machine reaches it.
    pub cloud_endpoint: Option<String>,
}

/// The taints a node is registered with (kubelet's `--register-with-taints`): a control-plane
/// node (by its label) takes `node-role.kubernetes.io/control-plane:NoSchedule`, as kubeadm
/// taints it, so that only pods that tolerate it are scheduled there.
pub fn registered_taints(config: &AgentConfig) -> Vec<Taint> {
    let control_plane = config.labels.contains_key(CONTROL_PLANE);
    control_plane.then(|| Taint { key: CONTROL_PLANE.into(), effect: "NoSchedule".into(), ..Default::default() }).into_iter().collect()
}

/// The labels this agent registers its node with: its configured ones but those a node may not set
/// itself (a role, `node-restriction.kubernetes.io/`: the master marks itself with its admin
/// credential, see [`crate::apiserver::noderestriction`]), and kubelet's well-known
/// `kubernetes.io/hostname`, `kubernetes.io/os` and `kubernetes.io/arch`, which affinity and
/// spread constraints name.
pub fn registered_labels(config: &AgentConfig) -> BTreeMap<String, String> {
    let mut labels = config.labels.clone();
    labels.retain(|k, _| !crate::apiserver::noderestriction::RESTRICTED_PREFIXES.iter().any(|p| k.starts_with(p)));
    labels.insert("kubernetes.io/hostname".into(), config.node_name.clone());
    labels.insert("kubernetes.io/os".into(), std::env::consts::OS.into());
    labels.insert("kubernetes.io/arch".into(), match std::env::consts::ARCH { "x86_64" => "amd64", "aarch64" => "arm64", other => other }.into());
    labels
}

/// The node object this agent registers.
pub fn node_object(config: &AgentConfig, host: &host::HostInfo) -> Node {
    Node {
        metadata: ObjectMeta { labels: registered_labels(config), ..ObjectMeta::named(&config.node_name) },
        spec: NodeSpec { provider_id: Some(config.provider_id.clone()), taints: registered_taints(config), ..Default::default() },
        status: reported_status(config, host, None),
        ..Node::new(&config.node_name)
    }
}

/// The status this agent reports: capacity, addresses, machine facts and a Ready condition that
/// keeps the transition time of `previous` (the Ready condition last shown) while it was already
/// Ready.
pub fn reported_status(config: &AgentConfig, host: &host::HostInfo, previous: Option<&NodeCondition>) -> NodeStatus {
    let now = Time::now();
    let capacity = BTreeMap::from([
        ("cpu".to_string(), host.cpus.to_string()),
        ("memory".to_string(), format!("{}Ki", host.memory_kib)),
        ("pods".to_string(), "110".to_string()),
    ]);
    let since = previous.filter(|c| c.status == "True").and_then(|c| c.last_transition_time).unwrap_or(now);
    let address = |kind: &str, address: String| NodeAddress { address_type: kind.into(), address, ..Default::default() };
    NodeStatus {
        allocatable: capacity.clone(),
        capacity,
        addresses: vec![address("InternalIP", config.internal_ip.to_string()), address("Hostname", config.node_name.clone())],
        conditions: vec![NodeCondition {
            condition_type: "Ready".into(),
            status: "True".into(),
            reason: "KubeletReady".into(),
            message: "agent is posting ready status".into(),
            last_heartbeat_time: Some(now),
            last_transition_time: Some(since),
            ..Default::default()
        }],
        node_info: Some(NodeSystemInfo {
            machine_id: host.machine_id.clone(),
            system_uuid: host.system_uuid.clone(),
            boot_id: host.boot_id.clone(),
            kernel_version: host.kernel_version.clone(),
            container_runtime_version: host.container_runtime_version.clone(),
            kubelet_version: concat!("clusterctl-", env!("CARGO_PKG_VERSION")).into(),
            // The service proxy runs inside the agent: the same binary.
            kube_proxy_version: concat!("clusterctl-", env!("CARGO_PKG_VERSION")).into(),
            os_image: host.os_image.clone(),
            architecture: std::env::consts::ARCH.into(),
            operating_system: "linux".into(),
            ..Default::default()
        }),
        daemon_endpoints: Some(NodeDaemonEndpoints { kubelet_endpoint: Some(DaemonEndpoint { port: i32::from(server::PORT), ..Default::default() }), ..Default::default() }),
        ..Default::default()
    }
}

/// Registers the node (or takes over its existing object) and writes a Ready status.
async fn report(client: &ApiClient, config: &AgentConfig, host: &host::HostInfo) -> Result<(), ClientError> {
    match client.get::<Node>(&NODES, None, &config.node_name).await {
        Err(e) if e.is_not_found() => {
            client.create(&NODES, None, &node_object(config, host)).await?;
        }
        Err(e) => return Err(e),
        Ok(mut node) => {
            let taken = take_over(&mut node, config).map_err(|reason| ClientError::Config { server: "the Node object".into(), reason })?;
            if taken {
                node = client.replace(&NODES, None, &config.node_name, &node).await?;
            }
            node.status = reported_status(config, host, node.ready_condition());
            client.replace_status(&NODES, None, &config.node_name, &node).await?;
        }
    }
    Ok(())
}

/// Brings an existing Node object of this machine up to date with the labels it registers
/// (`Ok(true)` when one changed). An object of another machine (a `providerID` of another
/// instance: the slot was filled again before the cloud controller removed the old Node) is not
/// this agent's to take: a node may not change a `providerID` nor its taints, so it waits (`Err`)
/// until the cloud controller has deleted that object, and then registers anew.
pub fn take_over(node: &mut Node, config: &AgentConfig) -> Result<bool, String> {
    if let Some(other) = node.spec.provider_id.as_deref().filter(|p| !p.is_empty() && *p != config.provider_id) {
        return Err(format!("the Node {:?} belongs to another machine ({other}); waiting for the cloud controller to remove it", config.node_name));
    }
    let mut changed = false;
    if node.spec.provider_id.as_deref().is_none_or(str::is_empty) {
        node.spec.provider_id = Some(config.provider_id.clone());
        changed = true;
    }
    for (key, value) in &registered_labels(config) {
        if node.metadata.labels.get(key) != Some(value) {
            node.metadata.labels.insert(key.clone(), value.clone());
            changed = true;
        }
    }
    Ok(changed)
}

/// Renews (or creates) the node's lease.
async fn renew_lease(client: &ApiClient, config: &AgentConfig) -> Result<(), ClientError> {
    let duration = i32::try_from((config.heartbeat.as_secs() * 5).max(10)).unwrap_or(i32::MAX);
    match client.get::<Lease>(&LEASES, Some(NODE_LEASE_NAMESPACE), &config.node_name).await {
        Err(e) if e.is_not_found() => {
            client.create(&LEASES, Some(NODE_LEASE_NAMESPACE), &Lease::for_node(&config.node_name, duration)).await?;
        }
        Err(e) => return Err(e),
        Ok(mut lease) => {
            lease.spec.renew_time = Some(MicroTime::now());
            lease.spec.holder_identity = Some(config.node_name.clone());
            client.replace(&LEASES, Some(NODE_LEASE_NAMESPACE), &config.node_name, &lease).await?;
        }
    }
    Ok(())
}

/// Runs the agent until the process ends: report at once, then renew the lease every heartbeat
/// and write the status every `status_every` (and whenever the node is not shown Ready).
pub async fn run(client: ApiClient, config: AgentConfig) {
    let (pod_range, pod_range_seen) = tokio::sync::watch::channel(None);
    tokio::spawn(run_pods(client.clone(), config.clone(), pod_range_seen));
    let mut host = host::HostInfo::read();
    let mut last_status = None::<tokio::time::Instant>;
    let mut ticker = tokio::time::interval(config.heartbeat);
    ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        ticker.tick().await;
        if let Err(e) = renew_lease(&client, &config).await {
            tracing::warn!(error = %e, "renewing the node lease");
        }
        if host.container_runtime_version.is_empty()
            && let Some(v) = runtime::docker::runtime_version().await
        {
            host.container_runtime_version = v;
            last_status = None;
        }
        let due = last_status.is_none_or(|t| t.elapsed() >= config.status_every);
        let shown = client.get::<Node>(&NODES, None, &config.node_name).await.ok();
        let shown_ready = shown.as_ref().is_some_and(Node::is_ready);
        // The pod range the control plane gave the node (it never changes once given).
        if let Some(range) = shown.and_then(|n| n.spec.pod_cidr).and_then(|c| c.parse::<ipnet::Ipv4Net>().ok()) {
            pod_range.send_if_modified(|known| {
                let changed = *known != Some(range);
                *known = Some(range);
                changed
            });
        }
        if due || !shown_ready {
            match report(&client, &config, &host).await {
                Ok(()) => last_status = Some(tokio::time::Instant::now()),
                Err(e) => tracing::warn!(error = %e, "reporting node status"),
            }
        }
    }
}

/// Where the agent keeps the last known pods of its node (see [`pods::save_checkpoint`]).
pub const POD_CHECKPOINT: &str = "/var/lib/clusterctl/agent/pods.json";

/// Runs pod sync on the node's Docker, waiting for Docker to answer first, and the agent's
/// server beside it; the pods' network follows the node's pod range as `pod_range` shows it.
async fn run_pods(client: ApiClient, config: AgentConfig, mut pod_range: tokio::sync::watch::Receiver<Option<ipnet::Ipv4Net>>) {
    let (node_name, node_ip, serving) = (config.node_name.clone(), config.internal_ip, config.serving.clone());
    let docker = loop {
        match runtime::docker::DockerRuntime::connect().await {
            Ok(d) => break d,
            Err(e) => {
                tracing::warn!(error = %e, "connecting to Docker for pods; retrying in 1 s");
                tokio::time::sleep(Duration::from_secs(1)).await;
            }
        }
    };
    let docker = std::sync::Arc::new(docker);
    {
        let docker = docker.clone();
        let routed = config.routed.clone();
        let dns_client = client.clone();
        tokio::spawn(async move {
            // The cluster DNS on the pod range's gateway, the pods' name server; moved if the
            // range ever changes.
            let mut dns: Option<(std::net::Ipv4Addr, crate::client::leader::AbortOnDrop)> = None;
            let records = crate::dns::Records::reflect(&dns_client);
            loop {
                let range = *pod_range.borrow_and_update();
                if let Some(range) = range {
                    let net = runtime::podnet::PodNetwork::on_node(range, routed.clone());
                    let gateway = net.gateway();
                    if dns.as_ref().is_none_or(|(at, _)| *at != gateway) {
                        let records = records.clone();
                        let task = tokio::spawn(async move {
                            let address = std::net::SocketAddr::from((gateway, 53));
                            loop {
                                if let Err(e) = crate::dns::serve(address, records.clone()).await {
                                    tracing::warn!(error = %e, %address, "serving cluster DNS; again in 2 s");
                                }
                                tokio::time::sleep(Duration::from_secs(2)).await;
                            }
                        });
                        dns = Some((gateway, crate::client::leader::AbortOnDrop(task)));
                    }
                    docker.set_network(net);
                }
                if pod_range.changed().await.is_err() {
                    return;
                }
            }
        });
    }
    if let Some(tls) = serving {
        let runtime: std::sync::Arc<dyn runtime::ContainerRuntime> = docker.clone();
        tokio::spawn(async move {
            // Bound again after a failure (the port still held by the agent being replaced).
            loop {
                let served = match tokio::net::TcpListener::bind(("0.0.0.0", server::PORT)).await {
                    Ok(listener) => server::serve(listener, &tls, runtime.clone()).await,
                    Err(e) => Err(e.into()),
                };
                if let Err(e) = served {
                    tracing::warn!(error = format!("{e:#}"), port = server::PORT, "the agent's server; again in 2 s");
                }
                tokio::time::sleep(Duration::from_secs(2)).await;
            }
        });
    }
    let taints = registered_taints(&config);
    // Images of Amazon ECR's registries with the machine's own role, as on EKS.
    let ecr = images::EcrCredentials::new(std::sync::Arc::new(crate::cloud::ecr::EcrTokens::new(config.cloud_endpoint.clone())));
    let sync = pods::PodSync::new(docker, node_ip).with_taints(taints).with_ecr(std::sync::Arc::new(ecr));
    pods::run(client, sync, &node_name, Some(POD_CHECKPOINT.into())).await;
}

#[cfg(test)]
mod tests {
    use super::*;

    fn config(provider_id: &str) -> AgentConfig {
        AgentConfig {
            node_name: "c-default-1".into(),
            internal_ip: "10.0.0.5".parse().unwrap(),
            provider_id: provider_id.into(),
            labels: [("tier".to_string(), "web".to_string())].into(),
            heartbeat: Duration::from_secs(2),
            status_every: Duration::from_secs(10),
            serving: None,
            routed: Vec::new(),
            cloud_endpoint: None,
        }
    }

    fn node(provider_id: Option<&str>, labels: &[(&str, &str)]) -> Node {
        Node {
            metadata: ObjectMeta { labels: labels.iter().map(|(k, v)| (k.to_string(), v.to_string())).collect(), ..ObjectMeta::named("c-default-1") },
            spec: NodeSpec { provider_id: provider_id.map(String::from), ..Default::default() },
            ..Default::default()
        }
    }

    fn host() -> host::HostInfo {
        host::HostInfo {
            cpus: 2,
            memory_kib: 2048 * 1024,
            machine_id: "m-1".into(),
            os_image: "Debian GNU/Linux 12".into(),
            boot_id: "b-1".into(),
            kernel_version: "6.1.0".into(),
            system_uuid: "u-1".into(),
            container_runtime_version: "docker://20.10.24".into(),
        }
    }

    #[test]
    fn a_node_object_of_another_machine_is_not_taken_over_and_its_own_gets_its_labels() {
        let mut node = node(Some("aws:///us-east-1a/i-old"), &[("tier", "web"), ("other", "kept")]);
        let refused = take_over(&mut node, &config("aws:///us-east-1b/i-new")).unwrap_err();
        assert!(refused.contains("belongs to another machine (aws:///us-east-1a/i-old)"), "{refused}");
        assert_eq!(node.spec.provider_id.as_deref(), Some("aws:///us-east-1a/i-old"), "a node may not change a providerID");
        let mut own = node.clone();
        own.spec.provider_id = Some("aws:///us-east-1b/i-new".into());
        own.metadata.labels.remove("tier");
        assert_eq!(take_over(&mut own, &config("aws:///us-east-1b/i-new")), Ok(true));
        assert_eq!(own.metadata.labels["other"], "kept", "labels set by others stay");
        assert_eq!(take_over(&mut own, &config("aws:///us-east-1b/i-new")), Ok(false), "the same machine again changes nothing");
    }

    #[test]
    fn a_control_plane_node_registers_tainted_without_giving_itself_the_role() {
        let mut master = config("aws:///us-east-1a/i-m");
        master.labels.insert(CONTROL_PLANE.into(), String::new());
        let registered = node_object(&master, &host());
        assert_eq!(registered.spec.taints.iter().map(|t| (t.key.as_str(), t.effect.as_str())).collect::<Vec<_>>(), [(CONTROL_PLANE, "NoSchedule")]);
        assert!(!registered.metadata.labels.contains_key(CONTROL_PLANE), "the role label is the master's to set, not the node's");
        assert_eq!(registered.metadata.labels["kubernetes.io/hostname"], registered.metadata.name);
        assert!(node_object(&config("aws:///us-east-1a/i-w"), &host()).spec.taints.is_empty(), "workers take no taint");
    }

    #[test]
    fn missing_labels_and_spec_are_filled_in() {
        let mut node = node(None, &[]);
        assert_eq!(take_over(&mut node, &config("aws:///us-east-1a/i-1")), Ok(true));
        assert_eq!(node.metadata.labels["tier"], "web");
        assert_eq!(node.spec.provider_id.as_deref(), Some("aws:///us-east-1a/i-1"));
    }

    #[test]
    fn the_registered_node_reports_capacity_addresses_and_a_ready_condition_on_the_wire() {
        let wire = serde_json::to_value(node_object(&config("aws:///us-east-1a/i-1"), &host())).unwrap();
        assert_eq!(wire["apiVersion"], "v1");
        assert_eq!(wire["kind"], "Node");
        assert_eq!(wire["metadata"]["labels"]["tier"], "web");
        assert_eq!(wire["spec"]["providerID"], "aws:///us-east-1a/i-1");
        let status = &wire["status"];
        for field in ["capacity", "allocatable"] {
            assert_eq!(status[field]["cpu"], "2");
            assert_eq!(status[field]["memory"], "2097152Ki");
            assert_eq!(status[field]["pods"], "110");
        }
        assert_eq!(status["addresses"][0]["type"], "InternalIP");
        assert_eq!(status["addresses"][0]["address"], "10.0.0.5");
        assert_eq!(status["addresses"][1]["type"], "Hostname");
        let ready = &status["conditions"][0];
        assert_eq!((ready["type"].as_str(), ready["status"].as_str(), ready["reason"].as_str()), (Some("Ready"), Some("True"), Some("KubeletReady")));
        assert!(ready["lastHeartbeatTime"].is_string() && ready["lastTransitionTime"].is_string());
        assert_eq!(status["nodeInfo"]["machineID"], "m-1");
        assert_eq!(status["nodeInfo"]["operatingSystem"], "linux");
    }

    #[test]
    fn a_ready_node_keeps_its_transition_time_and_a_node_shown_not_ready_gets_a_new_one() {
        let long_ago = Time::parse("2026-01-01T00:00:00Z").unwrap();
        let shown = |status: &str| NodeCondition { condition_type: "Ready".into(), status: status.into(), last_transition_time: Some(long_ago), ..Default::default() };
        let kept = reported_status(&config("p"), &host(), Some(&shown("True")));
        assert_eq!(kept.conditions[0].last_transition_time, Some(long_ago));
        let renewed = reported_status(&config("p"), &host(), Some(&shown("Unknown")));
        assert!(renewed.conditions[0].last_transition_time > Some(long_ago), "a transition from Unknown to True is now");
    }

    /// Clients that check what Kubernetes always fills (the official Python client refuses a
    /// `nodeInfo` without any of these) find every field, even one the machine could not read.
    #[test]
    fn node_info_carries_every_field_kubernetes_always_fills() {
        let mut h = host();
        h.system_uuid.clear();
        let status = serde_json::to_value(reported_status(&config("p"), &h, None)).unwrap();
        let info = status["nodeInfo"].as_object().unwrap();
        for field in ["architecture", "bootID", "containerRuntimeVersion", "kernelVersion", "kubeProxyVersion", "kubeletVersion", "machineID", "operatingSystem", "osImage", "systemUUID"] {
            assert!(info.get(field).is_some_and(serde_json::Value::is_string), "nodeInfo.{field} in {info:?}");
        }
        assert_eq!(info["containerRuntimeVersion"], "docker://20.10.24");
    }
}
