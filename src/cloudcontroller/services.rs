//! The service controller: every Service of type LoadBalancer gets a network load balancer with a
//! security group, one target group per port (every Ready, schedulable worker registered on the
//! port's NodePort) and one listener per port; `status.loadBalancer.ingress` shows its address.
//! Balancers, target groups and groups of services that are gone (or no longer of that type) are
//! deleted. Everything carries the cluster's ownership tag, the role `service-lb` and
//! `clusterctl:service=<namespace>/<name>`, so that `destroy` finds it.

use std::collections::{BTreeMap, BTreeSet};

use sha2::{Digest, Sha256};

use crate::api::service::{LoadBalancerIngress, LoadBalancerStatus, Service};
use crate::api::Node;
use crate::cloud::{owned_by, Cloud, CloudError, IngressRule, Protocol, Tags, ROLE_TAG};

/// The role tag of everything this controller makes.
pub const ROLE: &str = "service-lb";
/// The tag naming the service a resource belongs to (`namespace/name`).
pub const SERVICE_TAG: &str = "clusterctl:service";

/// Where service balancers go: the cluster's VPC and subnets.
#[derive(Debug, Clone)]
pub struct Network {
    pub vpc_id: String,
    pub subnet_ids: Vec<String>,
}

/// `namespace/name` of a service.
pub fn service_key(s: &Service) -> String {
    format!("{}/{}", s.metadata.namespace_or_default(), s.metadata.name)
}

/// The balancer's name: at most 23 characters (target groups add `-<port>` within AWS's 32), from
/// the cluster's name and a hash of the service, so names never collide across clusters.
pub fn balancer_name(cluster: &str, key: &str) -> String {
    let digest = hex::encode(Sha256::digest(format!("{cluster}/{key}")));
    let prefix: String = cluster.chars().take(14).collect();
    format!("{}-{}", prefix.trim_end_matches('-'), &digest[..8])
}

/// The instance id in a node's `providerID` (`aws:///zone/i-...`).
pub fn instance_id(node: &Node) -> Option<String> {
    let id = node.spec.provider_id.as_deref()?.rsplit('/').next()?;
    id.starts_with("i-").then(|| id.to_string())
}

/// Whether a node is a worker that should take balancer traffic: Ready and not cordoned.
pub fn takes_traffic(node: &Node) -> bool {
    let master = node.metadata.labels.contains_key("node-role.kubernetes.io/control-plane");
    let ready = node.status.conditions.iter().any(|c| c.condition_type == "Ready" && c.status == "True");
    !master && ready && !node.spec.unschedulable
}

/// The instances every service balancer should send traffic to.
pub fn targets(nodes: &[Node]) -> BTreeSet<String> {
    nodes.iter().filter(|n| takes_traffic(n)).filter_map(instance_id).collect()
}

/// Services of type LoadBalancer whose every port has a NodePort (allocated by the endpoints controller).
fn wanted(services: &[Service]) -> Vec<&Service> {
    services
        .iter()
        .filter(|s| s.spec.service_type.as_deref() == Some("LoadBalancer"))
        .filter(|s| !s.spec.ports.is_empty() && s.spec.ports.iter().all(|p| p.node_port.is_some()))
        .collect()
}

/// What happened to one service's balancer, as Kubernetes' service controller reports it in
/// events: (`namespace/name`, reason, message).
pub type Happened = (String, &'static str, String);

/// Makes the cloud match the services; returns each balanced service's address (`namespace/name` →
/// address). `happened` gets what changed for each service (a balancer made, its targets changed).
pub async fn reconcile(cloud: &dyn Cloud, cluster: &str, network: &Network, services: &[Service], targets: &BTreeSet<String>, happened: &mut Vec<Happened>) -> Result<BTreeMap<String, String>, CloudError> {
    let mut selector = owned_by(cluster);
    selector.insert(ROLE_TAG.into(), ROLE.into());
    let (balancers, groups, security_groups) = tokio::try_join!(cloud.load_balancers(&selector), cloud.target_groups(&selector), cloud.security_groups(&selector))?;
    let of = |tags: &Tags, key: &str| tags.get(SERVICE_TAG).map(String::as_str) == Some(key);
    let mut addresses = BTreeMap::new();
    let wanted = wanted(services);
    for svc in &wanted {
        let key = service_key(svc);
        let name = balancer_name(cluster, &key);
        let mut tags = selector.clone();
        tags.insert(SERVICE_TAG.into(), key.clone());
        tags.insert("Name".into(), name.clone());

        let sg = match security_groups.iter().find(|g| of(&g.tags, &key)) {
            Some(g) => g.id.clone(),
            None => {
                let g = cloud.create_security_group(&network.vpc_id, &format!("{name}-lb"), &format!("load balancer of service {key}"), &tags).await?;
                let rules: Vec<IngressRule> = svc
                    .spec
                    .ports
                    .iter()
                    .map(|p| IngressRule { protocol: Protocol::Tcp, from_port: p.port as u16, to_port: p.port as u16, source: crate::cloud::RuleSource::Cidr(Default::default()) })
                    .collect();
                cloud.authorize_ingress(&g.id, &rules).await?;
                tracing::info!(service = %key, group = %g.id, "created the balancer's security group");
                g.id
            }
        };
        let lb = match balancers.iter().find(|l| of(&l.tags, &key)) {
            Some(l) => l.clone(),
            None => {
                happened.push((key.clone(), "EnsuringLoadBalancer", "Ensuring load balancer".into()));
                let l = cloud.create_load_balancer(&name, &network.subnet_ids, &[sg], &tags).await?;
                tracing::info!(service = %key, balancer = %l.name, address = %l.dns_name, "created a load balancer");
                happened.push((key.clone(), "EnsuredLoadBalancer", "Ensured load balancer".into()));
                l
            }
        };
        let listeners = cloud.listeners(&lb.arn).await?;
        let mut wanted_groups = BTreeSet::new();
        for port in &svc.spec.ports {
            let (listen, node_port) = (port.port as u16, port.node_port.unwrap_or_default() as u16);
            let group_name = format!("{name}-{listen}");
            wanted_groups.insert(group_name.clone());
            let tg = match groups.iter().find(|g| g.name == group_name && g.port == node_port) {
                Some(g) => g.clone(),
                None => cloud.create_target_group(&group_name, &network.vpc_id, node_port, &tags).await?,
            };
            let registered: BTreeSet<String> = cloud.target_health(&tg.arn).await?.into_iter().map(|t| t.instance_id).collect();
            let add: Vec<String> = targets.difference(&registered).cloned().collect();
            let remove: Vec<String> = registered.difference(targets).cloned().collect();
            if !add.is_empty() {
                cloud.register_targets(&tg.arn, &add, node_port).await?;
                tracing::info!(service = %key, port = listen, targets = ?add, "registered");
            }
            if !remove.is_empty() {
                cloud.deregister_targets(&tg.arn, &remove, node_port).await?;
                tracing::info!(service = %key, port = listen, targets = ?remove, "deregistered");
            }
            let changed = !add.is_empty() || !remove.is_empty();
            if changed && !registered.is_empty() {
                happened.push((key.clone(), "UpdatedLoadBalancer", "Updated load balancer with new hosts".into()));
            }
            match listeners.iter().find(|l| l.port == listen) {
                Some(l) if l.target_group_arn.as_deref() == Some(tg.arn.as_str()) => {}
                Some(l) => {
                    cloud.delete_listener(&l.arn).await?;
                    cloud.create_listener(&lb.arn, listen, &tg.arn, &tags).await?;
                }
                None => {
                    cloud.create_listener(&lb.arn, listen, &tg.arn, &tags).await?;
                }
            }
        }
        // Ports the service no longer has.
        for l in listeners.iter().filter(|l| !svc.spec.ports.iter().any(|p| p.port as u16 == l.port)) {
            cloud.delete_listener(&l.arn).await?;
        }
        for g in groups.iter().filter(|g| of(&g.tags, &key) && !wanted_groups.contains(&g.name)) {
            cloud.delete_target_group(&g.arn).await?;
        }
        addresses.insert(key, lb.dns_name.clone());
    }

    // Balancers of services that are gone.
    let keep: BTreeSet<String> = wanted.iter().map(|s| service_key(s)).collect();
    let stale = |tags: &Tags| tags.get(SERVICE_TAG).is_none_or(|k| !keep.contains(k));
    for lb in balancers.iter().filter(|l| stale(&l.tags)) {
        for l in cloud.listeners(&lb.arn).await? {
            cloud.delete_listener(&l.arn).await?;
        }
        cloud.delete_load_balancer(&lb.arn).await?;
        tracing::info!(balancer = %lb.name, service = ?lb.tags.get(SERVICE_TAG), "deleted the load balancer of a service that is gone");
    }
    for g in groups.iter().filter(|g| stale(&g.tags)) {
        cloud.delete_target_group(&g.arn).await?;
    }
    for g in security_groups.iter().filter(|g| stale(&g.tags)) {
        cloud.delete_security_group(&g.id).await?;
    }
    Ok(addresses)
}

/// The load balancer status a balanced service should show for its address.
pub fn ingress_status(address: &str) -> LoadBalancerStatus {
    let ingress = match address.parse::<std::net::IpAddr>() {
        Ok(_) => LoadBalancerIngress { ip: Some(address.to_string()), ..Default::default() },
        Err(_) => LoadBalancerIngress { hostname: Some(address.to_string()), ..Default::default() },
    };
    LoadBalancerStatus { ingress: vec![ingress], ..Default::default() }
}
