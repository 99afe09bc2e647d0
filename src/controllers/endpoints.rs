//! The endpoints controller: for every Service with a selector, an Endpoints object of the same
//! name listing the selected pods that have an IP (ready ones as `addresses`, the others as
//! `notReadyAddresses`) with the Service's ports resolved against each pod (`targetPort` by
//! number or by container port name). Endpoints of deleted Services are deleted.
//!
//! NodePorts are allocated here too: a `NodePort` or `LoadBalancer` Service port without a
//! `nodePort` gets the lowest free port of 30000-32767. Reconciles run one at a time and wait for
//! their Service write to reach the store, so two Services never get the same port; a port given
//! in a manifest is kept as written.
//!
//! On the [`runtime`](crate::runtime): keyed by Service; its Endpoints map to it by name, a pod to
//! every Service of its namespace whose selector it matches.

use std::collections::{BTreeMap, BTreeSet, HashSet};
use std::sync::Arc;
use std::time::Duration;

use crate::api::ObjectMeta;
use crate::api::pod::Pod;
use crate::api::quantity::IntOrString;
use crate::api::service::{EndpointAddress, EndpointPort, EndpointSubset, Endpoints, NODE_PORT_MAX, NODE_PORT_MIN, ObjectReference, Service};
use crate::client::{ClientError, ListOptions};
use crate::runtime::{Action, Client, Controller, ObjectKey, Store};

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

async fn reconcile_service<C: Client>(client: &C, service: &Service, pods: &[Pod], existing: Option<&Endpoints>) -> Result<(), ClientError> {
    let ns = service.metadata.namespace_or_default().to_string();
    let name = &service.metadata.name;
    let subsets = desired_subsets(service, pods);
    match existing {
        Some(e) if e.subsets == subsets => Ok(()),
        Some(e) => {
            let mut next = e.clone();
            next.subsets = subsets;
            match client.replace(&next).await {
                Ok(_) => Ok(()),
                Err(e) if e.is_conflict() || e.is_not_found() => Ok(()),
                Err(e) => Err(e),
            }
        }
        None => {
            let mut meta = ObjectMeta::namespaced(&ns, name.clone());
            meta.labels = service.metadata.labels.clone();
            let endpoints = Endpoints { metadata: meta, subsets, ..Default::default() };
            match client.create(&endpoints).await {
                Ok(_) => Ok(()),
                Err(e) if e.is_already_exists() || e.is_conflict() => Ok(()),
                Err(e) => Err(e),
            }
        }
    }
}

/// The controller's view of the cluster and its client.
pub struct Context<C> {
    pub client: C,
    pub services: Store<Service>,
    pub endpoints: Store<Endpoints>,
    pub pods: Store<Pod>,
}

impl<C: Client> Context<C> {
    /// Stores of every Service, Endpoints and Pod fed by `client`.
    pub fn new(client: C) -> Arc<Self> {
        Arc::new(Context {
            services: Store::reflect(client.clone(), None, ListOptions::default()),
            endpoints: Store::reflect(client.clone(), None, ListOptions::default()),
            pods: Store::reflect(client.clone(), None, ListOptions::default()),
            client,
        })
    }
}

/// Whether `service` selects `pod`.
fn selects(service: &Service, pod: &Pod) -> bool {
    let selector = &service.spec.selector;
    pod.metadata.namespace_or_default() == service.metadata.namespace_or_default() && !selector.is_empty() && selector.iter().all(|(k, v)| pod.metadata.labels.get(k) == Some(v))
}

/// The endpoints controller: keyed by Service, one reconcile at a time (node port allocation).
pub fn controller<C: Client>(ctx: &Context<C>) -> Controller {
    let services = ctx.services.clone();
    Controller::new("endpoints")
        .owns(&ctx.services, RESYNC)
        .watches(&ctx.endpoints, |e: &Endpoints| vec![ObjectKey::of(&e.metadata)])
        // a pod's Services: those that select it now, and those whose Endpoints still list it (its
        // labels changed, or it went): the watch gives only the new object, as an informer's
        // update handler also gets the old one
        .watches(&ctx.pods, {
            let endpoints = ctx.endpoints.clone();
            move |pod: &Pod| {
                let mut keys: Vec<ObjectKey> = services.snapshot().iter().filter(|s| selects(s, pod)).map(|s| ObjectKey::of(&s.metadata)).collect();
                let listed = |e: &Endpoints| {
                    e.subsets.iter().flat_map(|s| s.addresses.iter().chain(&s.not_ready_addresses)).any(|a| a.target_ref.as_ref().is_some_and(|r| r.name == pod.metadata.name && r.namespace == pod.metadata.namespace_or_default()))
                };
                keys.extend(endpoints.snapshot().iter().filter(|e| e.metadata.namespace == pod.metadata.namespace && listed(e)).map(|e| ObjectKey::of(&e.metadata)));
                keys.sort();
                keys.dedup();
                keys
            }
        })
        .resync_every(RESYNC, {
            // Endpoints whose Service went while no one watched.
            let (endpoints, services) = (ctx.endpoints.clone(), ctx.services.clone());
            move || endpoints.keys().into_iter().filter(|k| services.get(k).is_none()).collect()
        })
}

/// Reconciles the Service at `key`: node ports, then its Endpoints; the Endpoints of a Service
/// that is gone are deleted.
pub async fn reconcile<C: Client>(key: ObjectKey, ctx: Arc<Context<C>>) -> Result<Action, ClientError> {
    let Some(service) = ctx.services.get(&key) else {
        if ctx.endpoints.get(&key).is_some() {
            match ctx.client.delete::<Endpoints>(&key).await {
                Ok(()) => tracing::info!(endpoints = %key, "deleted: its service is gone"),
                Err(e) if e.is_not_found() => {}
                Err(e) => return Err(e),
            }
        }
        return Ok(Action::AwaitChange);
    };
    let mut used: HashSet<i64> = ctx.services.snapshot().iter().flat_map(|s| s.spec.ports.iter().filter_map(|p| p.node_port).collect::<Vec<_>>()).collect();
    let allocations = allocate_node_ports(&service, &mut used);
    if !allocations.is_empty() {
        let mut next = Service::clone(&service);
        for (i, port) in &allocations {
            next.spec.ports[*i].node_port = Some(*port);
        }
        // The write is the allocation: the next reconcile must see it, or it would give the port again.
        let written = ctx.client.replace(&next).await?;
        tracing::info!(service = %key, ports = ?allocations, "allocated node ports");
        ctx.services.wait_for(written.metadata.revision().unwrap_or(0), Duration::from_secs(5)).await;
    }
    if !service.spec.selector.is_empty() {
        let pods = ctx.pods.cloned();
        reconcile_service(&ctx.client, &service, &pods, ctx.endpoints.get(&key).as_deref()).await?;
    }
    Ok(Action::AwaitChange)
}

/// Runs the controller until dropped, on the given client (a `system:masters` identity).
pub async fn run<C: Client>(client: C) {
    let ctx = Context::new(client);
    controller(&ctx).run(reconcile, ctx.clone()).await;
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
