//! The endpoints controller: for every Service with a selector, an Endpoints object of the same
//! name listing the selected pods that have an IP (ready ones as `addresses`, the others as
//! `notReadyAddresses`) with the Service's ports resolved against each pod (`targetPort` by
//! number or by container port name). Endpoints of deleted Services are deleted.
//!
//! NodePorts are allocated here too: a `NodePort` or `LoadBalancer` Service port without a
//! `nodePort` gets the lowest free port of 30000-32767. One task allocates, so two Services never
//! get the same port; a port given in a manifest is kept as written.

use std::collections::{BTreeMap, BTreeSet, HashSet};
use std::sync::Arc;
use std::time::Duration;

use tokio::sync::Notify;

use super::cache::Cache;
use crate::api::ObjectMeta;
use crate::api::pod::Pod;
use crate::api::quantity::IntOrString;
use crate::api::resource::{ENDPOINTS, PODS, SERVICES};
use crate::api::service::{EndpointAddress, EndpointPort, EndpointSubset, Endpoints, NODE_PORT_MAX, NODE_PORT_MIN, ObjectReference, Service};
use crate::client::{ApiClient, ClientError};

/// How often everything is reconciled without any change.
pub const RESYNC: Duration = Duration::from_secs(5);

/// The port of `pod` a Service port targets, if the pod has it.
pub fn resolve_target(target: &IntOrString, pod: &Pod) -> Option<i64> {
    match target {
        IntOrString::Int(n) => Some(*n),
        IntOrString::String(name) => pod
            .spec
            .containers
            .iter()
            .flat_map(|c| c.ports.iter())
            .find(|p| p.name.as_deref() == Some(name.as_str()))
            .map(|p| p.container_port),
    }
}

/// The subsets a Service's Endpoints should hold, from every pod (those of other namespaces,
/// not selected, without IP or terminating are left out). Pods that resolve the ports alike share
/// a subset; addresses and subsets are sorted so that equal inputs give equal output.
pub fn desired_subsets(service: &Service, pods: &[Pod]) -> Vec<EndpointSubset> {
    let ns = service.metadata.namespace_or_default();
    let selector = &service.spec.selector;
    let mut groups: BTreeMap<Vec<EndpointPort>, (BTreeSet<EndpointAddress>, BTreeSet<EndpointAddress>)> = BTreeMap::new();
    for pod in pods {
        let selected = pod.metadata.namespace_or_default() == ns
            && !selector.is_empty()
            && selector.iter().all(|(k, v)| pod.metadata.labels.get(k) == Some(v))
            && !pod.is_terminating()
            && !pod.is_terminal();
        let Some(ip) = pod.status.pod_ip.as_deref().filter(|ip| !ip.is_empty() && selected) else { continue };
        let ports: Vec<EndpointPort> = service
            .spec
            .ports
            .iter()
            .filter_map(|sp| {
                Some(EndpointPort { name: sp.name.clone(), port: resolve_target(&sp.target(), pod)?, protocol: Some(sp.protocol().to_string()), ..Default::default() })
            })
            .collect();
        if ports.is_empty() {
            continue;
        }
        let address = EndpointAddress {
            ip: ip.to_string(),
            node_name: pod.spec.bound_node().map(String::from),
            target_ref: Some(ObjectReference { kind: "Pod".into(), namespace: ns.to_string(), name: pod.metadata.name.clone(), uid: pod.metadata.uid.clone(), ..Default::default() }),
            ..Default::default()
        };
        let entry = groups.entry(ports).or_default();
        if pod.is_ready() {
            entry.0.insert(address);
        } else {
            entry.1.insert(address);
        }
    }
    groups
        .into_iter()
        .map(|(ports, (ready, not_ready))| EndpointSubset { addresses: ready.into_iter().collect(), not_ready_addresses: not_ready.into_iter().collect(), ports, ..Default::default() })
        .collect()
}

/// The node ports to give the Service's ports that lack one (index, port), avoiding `used`
/// (which is extended with them).
pub fn allocate_node_ports(service: &Service, used: &mut HashSet<i64>) -> Vec<(usize, i64)> {
    if !service.spec.uses_node_ports() {
        return Vec::new();
    }
    let mut out = Vec::new();
    for (i, port) in service.spec.ports.iter().enumerate() {
        if port.node_port.is_some_and(|p| p > 0) {
            continue;
        }
        if let Some(free) = (i64::from(NODE_PORT_MIN)..=i64::from(NODE_PORT_MAX)).find(|p| !used.contains(p)) {
            used.insert(free);
            out.push((i, free));
        }
    }
    out
}

async fn reconcile_service(client: &ApiClient, service: &Service, pods: &[Pod], existing: Option<&Endpoints>) -> Result<(), ClientError> {
    let ns = service.metadata.namespace_or_default().to_string();
    let name = &service.metadata.name;
    let subsets = desired_subsets(service, pods);
    match existing {
        Some(e) if e.subsets == subsets => Ok(()),
        Some(e) => {
            let mut next = e.clone();
            next.subsets = subsets;
            match client.replace(&ENDPOINTS, Some(&ns), name, &next).await {
                Ok(_) => Ok(()),
                Err(e) if e.is_conflict() || e.is_not_found() => Ok(()),
                Err(e) => Err(e),
            }
        }
        None => {
            let mut meta = ObjectMeta::namespaced(&ns, name.clone());
            meta.labels = service.metadata.labels.clone();
            let endpoints = Endpoints { metadata: meta, subsets, ..Default::default() };
            match client.create(&ENDPOINTS, Some(&ns), &endpoints).await {
                Ok(_) => Ok(()),
                Err(e) if e.is_already_exists() || e.is_conflict() => Ok(()),
                Err(e) => Err(e),
            }
        }
    }
}

/// The controller's view.
pub struct Caches {
    pub services: Arc<Cache<Service>>,
    pub endpoints: Arc<Cache<Endpoints>>,
    pub pods: Arc<Cache<Pod>>,
}

/// One pass: node ports, then every Service's Endpoints, then Endpoints without a Service.
pub async fn pass(client: &ApiClient, caches: &Caches) {
    let services = caches.services.snapshot();
    let mut used: HashSet<i64> = services.iter().flat_map(|s| s.spec.ports.iter().filter_map(|p| p.node_port)).collect();
    for s in &services {
        let allocations = allocate_node_ports(s, &mut used);
        if allocations.is_empty() {
            continue;
        }
        let mut next = s.clone();
        for (i, port) in &allocations {
            next.spec.ports[*i].node_port = Some(*port);
        }
        let ns = s.metadata.namespace_or_default();
        match client.replace(&SERVICES, Some(ns), &s.metadata.name, &next).await {
            Ok(_) => tracing::info!(service = %s.metadata.name, ports = ?allocations, "allocated node ports"),
            Err(e) => tracing::debug!(error = %e, "allocating node ports for {ns}/{}", s.metadata.name),
        }
    }
    let pods = caches.pods.snapshot();
    let endpoints: BTreeMap<String, Endpoints> = caches.endpoints.snapshot().into_iter().map(|e| (format!("{}/{}", e.metadata.namespace_or_default(), e.metadata.name), e)).collect();
    let mut wanted = HashSet::new();
    for s in services.iter().filter(|s| !s.spec.selector.is_empty()) {
        let key = format!("{}/{}", s.metadata.namespace_or_default(), s.metadata.name);
        if let Err(e) = reconcile_service(client, s, &pods, endpoints.get(&key)).await {
            tracing::warn!(error = %e, service = %key, "reconciling endpoints");
        }
        wanted.insert(key);
    }
    let all_services: HashSet<String> = services.iter().map(|s| format!("{}/{}", s.metadata.namespace_or_default(), s.metadata.name)).collect();
    for (key, e) in &endpoints {
        if !all_services.contains(key) {
            match client.delete(&ENDPOINTS, Some(e.metadata.namespace_or_default()), &e.metadata.name).await {
                Ok(()) => tracing::info!(endpoints = %key, "deleted: its service is gone"),
                Err(err) if err.is_not_found() => {}
                Err(err) => tracing::warn!(error = %err, "deleting endpoints {key}"),
            }
        }
    }
}

/// Runs the controller forever on the given client (a `system:masters` identity).
pub async fn run(client: ApiClient) {
    let changed = Arc::new(Notify::new());
    let caches = Caches {
        services: Cache::spawn(client.clone(), SERVICES, changed.clone()),
        endpoints: Cache::spawn(client.clone(), ENDPOINTS, changed.clone()),
        pods: Cache::spawn(client.clone(), PODS, changed.clone()),
    };
    loop {
        tokio::select! {
            _ = changed.notified() => {}
            _ = tokio::time::sleep(RESYNC) => {}
        }
        if caches.services.synced() && caches.endpoints.synced() && caches.pods.synced() {
            pass(&client, &caches).await;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::api::pod::{Container, ContainerPort, PodCondition};
    use crate::api::service::ServicePort;

    fn pod(name: &str, ip: Option<&str>, ready: bool, app: &str) -> Pod {
        let mut p = Pod { metadata: ObjectMeta::namespaced("default", name), ..Pod::default() };
        p.metadata.labels.insert("app".into(), app.into());
        p.spec.node_name = Some("w1".into());
        p.spec.containers.push(Container { name: "c".into(), ports: vec![ContainerPort { container_port: 8080, name: Some("http".into()), ..Default::default() }], ..Default::default() });
        p.status.pod_ip = ip.map(String::from);
        p.status.conditions.push(PodCondition { condition_type: "Ready".into(), status: if ready { "True" } else { "False" }.into(), ..Default::default() });
        p
    }

    fn service(target: IntOrString) -> Service {
        let mut s = Service { metadata: ObjectMeta::namespaced("default", "web"), ..Service::default() };
        s.spec.service_type = Some("NodePort".into());
        s.spec.selector.insert("app".into(), "web".into());
        s.spec.ports.push(ServicePort { name: Some("http".into()), port: 80, target_port: Some(target), ..Default::default() });
        s
    }

    #[test]
    fn ready_pods_are_addresses_and_others_not_ready_addresses() {
        let pods = [pod("a", Some("172.17.0.2"), true, "web"), pod("b", Some("172.17.0.3"), false, "web"), pod("c", None, true, "web"), pod("d", Some("172.17.0.9"), true, "db")];
        let subsets = desired_subsets(&service(IntOrString::String("http".into())), &pods);
        assert_eq!(subsets.len(), 1);
        assert_eq!(subsets[0].addresses.iter().map(|a| a.ip.as_str()).collect::<Vec<_>>(), ["172.17.0.2"]);
        assert_eq!(subsets[0].not_ready_addresses.iter().map(|a| a.ip.as_str()).collect::<Vec<_>>(), ["172.17.0.3"]);
        assert_eq!(subsets[0].ports, [EndpointPort { name: Some("http".into()), port: 8080, protocol: Some("TCP".into()), ..Default::default() }]);
        assert_eq!(subsets[0].addresses[0].node_name.as_deref(), Some("w1"));
    }

    #[test]
    fn a_target_port_name_the_pod_lacks_leaves_the_pod_out() {
        let pods = [pod("a", Some("172.17.0.2"), true, "web")];
        assert!(desired_subsets(&service(IntOrString::String("metrics".into())), &pods).is_empty());
        assert_eq!(desired_subsets(&service(IntOrString::Int(9000)), &pods)[0].ports[0].port, 9000);
    }

    #[test]
    fn node_ports_are_allocated_lowest_free_first_and_given_ones_kept() {
        let mut used: HashSet<i64> = [30000, 30002].into();
        let mut s = service(IntOrString::Int(80));
        s.spec.ports.push(ServicePort { name: Some("b".into()), port: 81, node_port: Some(31000), ..Default::default() });
        s.spec.ports.push(ServicePort { name: Some("c".into()), port: 82, ..Default::default() });
        assert_eq!(allocate_node_ports(&s, &mut used), [(0, 30001), (2, 30003)]);
        s.spec.service_type = None;
        assert!(allocate_node_ports(&s, &mut used).is_empty());
    }
}
