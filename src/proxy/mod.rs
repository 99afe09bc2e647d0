//! The service proxy: every node listens on the NodePort of every NodePort or LoadBalancer Service
//! and forwards each TCP connection, round robin, to the service's ready endpoints.
//!
//! Endpoints are dialled as the agent's networking contract says (see the agent's `pods` module): an
//! endpoint that names its pod (`targetRef`) is reached at the pod's `podIP` (its node's address)
//! on the node port that publishes the endpoint's container port (`status.publishedPorts`), so
//! endpoints on other nodes are reached over the VPC. An endpoint without a known pod is dialled
//! as written. The table is rebuilt whenever Services, Endpoints or Pods change.

use std::collections::{BTreeMap, HashMap};
use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, RwLock};
use std::time::Duration;

use tokio::net::{TcpListener, TcpStream};
use tokio::sync::watch;
use tokio::task::JoinHandle;

use crate::api::pod::Pod;
use crate::api::resource::{ENDPOINTS, PODS, ResourceType, SERVICES};
use crate::api::service::{EndpointAddress, Endpoints, Service};
use crate::client::reflector::{self, Objects};
use crate::client::{ApiClient, ListOptions};

/// How long dialling one endpoint may take before the next is tried.
const DIAL_TIMEOUT: Duration = Duration::from_secs(2);

/// Backends per node port.
pub type Table = BTreeMap<u16, Vec<SocketAddr>>;

/// Where an endpoint address and port are dialled, after the published-port translation.
fn dial_address(address: &EndpointAddress, port: u16, namespace: &str, pods: &Objects<Pod>) -> Option<SocketAddr> {
    let ip: IpAddr = address.ip.parse().ok()?;
    let pod = address.target_ref.as_ref().filter(|r| r.kind == "Pod").and_then(|r| {
        let ns = if r.namespace.is_empty() { namespace } else { r.namespace.as_str() };
        pods.get(&format!("{ns}/{}", r.name))
    });
    if let Some(pod) = pod
        && let Some(host_port) = pod.status.published_port(i64::from(port)).and_then(|p| u16::try_from(p).ok())
    {
        let pod_ip = pod.status.pod_ip.as_deref().and_then(|i| i.parse().ok()).unwrap_or(ip);
        return Some(SocketAddr::new(pod_ip, host_port));
    }
    Some(SocketAddr::new(ip, port))
}

/// The forwarding table: node port -> ready backends, from Services, Endpoints and Pods.
pub fn table(services: &Objects<Service>, endpoints: &Objects<Endpoints>, pods: &Objects<Pod>) -> Table {
    let mut out = Table::new();
    for (key, service) in services {
        if !service.spec.uses_node_ports() {
            continue;
        }
        let namespace = service.metadata.namespace_or_default();
        for sp in &service.spec.ports {
            if !sp.protocol().eq_ignore_ascii_case("TCP") {
                continue;
            }
            let Some(node_port) = sp.node_port.and_then(|p| u16::try_from(p).ok()) else { continue };
            let backends = out.entry(node_port).or_default();
            let Some(ep) = endpoints.get(key) else { continue };
            let name = sp.name.as_deref().unwrap_or("");
            for subset in &ep.subsets {
                let ports = &subset.ports;
                let port = ports
                    .iter()
                    .find(|p| p.name.as_deref().unwrap_or("") == name)
                    .or_else(|| (ports.len() == 1).then(|| &ports[0]))
                    .and_then(|p| u16::try_from(p.port).ok());
                let Some(port) = port else { continue };
                // Only `addresses`: `notReadyAddresses` are skipped.
                backends.extend(subset.addresses.iter().filter_map(|a| dial_address(a, port, namespace, pods)));
            }
        }
    }
    out
}

/// One node port's backends and its round-robin position.
#[derive(Debug, Default)]
struct Backends {
    addresses: RwLock<Vec<SocketAddr>>,
    next: AtomicUsize,
}

impl Backends {
    /// The backends to try for one connection, starting at the next in turn.
    fn order(&self) -> Vec<SocketAddr> {
        let all = self.addresses.read().unwrap_or_else(|e| e.into_inner()).clone();
        if all.is_empty() {
            return all;
        }
        let start = self.next.fetch_add(1, Ordering::Relaxed) % all.len();
        all[start..].iter().chain(&all[..start]).copied().collect()
    }
}

/// The listeners of one node: one per node port.
#[derive(Debug)]
pub struct ServiceProxy {
    bind_ip: IpAddr,
    listeners: HashMap<u16, (Arc<Backends>, JoinHandle<()>)>,
}

impl Drop for ServiceProxy {
    fn drop(&mut self) {
        for (_, task) in self.listeners.values() {
            task.abort();
        }
    }
}

impl ServiceProxy {
    /// A proxy whose listeners bind `bind_ip` (0.0.0.0 on nodes, loopback in tests).
    pub fn new(bind_ip: IpAddr) -> Self {
        ServiceProxy { bind_ip, listeners: HashMap::new() }
    }

    /// The node ports listened on.
    pub fn ports(&self) -> Vec<u16> {
        let mut p: Vec<u16> = self.listeners.keys().copied().collect();
        p.sort();
        p
    }

    /// Makes the listeners match `table`: new ports opened, gone ports closed, backends replaced.
    pub async fn apply(&mut self, table: &Table) {
        let gone: Vec<u16> = self.listeners.keys().filter(|p| !table.contains_key(p)).copied().collect();
        for port in gone {
            if let Some((_, task)) = self.listeners.remove(&port) {
                task.abort();
                tracing::info!(port, "closed node port");
            }
        }
        for (port, addresses) in table {
            if let Some((backends, _)) = self.listeners.get(port) {
                *backends.addresses.write().unwrap_or_else(|e| e.into_inner()) = addresses.clone();
                continue;
            }
            let listener = match TcpListener::bind(SocketAddr::new(self.bind_ip, *port)).await {
                Ok(l) => l,
                Err(e) => {
                    // Retried on the next change or resync.
                    tracing::warn!(port, error = %e, "listening on a node port");
                    continue;
                }
            };
            tracing::info!(port, "listening on node port");
            let backends = Arc::new(Backends { addresses: RwLock::new(addresses.clone()), next: AtomicUsize::new(0) });
            let task = tokio::spawn(serve(listener, backends.clone()));
            self.listeners.insert(*port, (backends, task));
        }
    }
}

async fn serve(listener: TcpListener, backends: Arc<Backends>) {
    loop {
        let (mut inbound, peer) = match listener.accept().await {
            Ok(c) => c,
            Err(e) => {
                // Out of file descriptors and the like: do not spin.
                tracing::warn!(error = %e, "accepting on a node port");
                tokio::time::sleep(Duration::from_millis(100)).await;
                continue;
            }
        };
        let backends = backends.clone();
        tokio::spawn(async move {
            for backend in backends.order() {
                match tokio::time::timeout(DIAL_TIMEOUT, TcpStream::connect(backend)).await {
                    Ok(Ok(mut outbound)) => {
                        let _ = tokio::io::copy_bidirectional(&mut inbound, &mut outbound).await;
                        return;
                    }
                    _ => tracing::debug!(%peer, %backend, "endpoint does not answer; trying the next"),
                }
            }
            tracing::debug!(%peer, "no endpoint answers; closing");
        });
    }
}

/// Runs the proxy until the process ends, listening on all of the node's addresses.
pub async fn run(client: ApiClient) {
    fn copy_of<T: serde::de::DeserializeOwned + Send + Sync + 'static>(client: &ApiClient, resource: &'static ResourceType) -> watch::Receiver<Objects<T>> {
        let (tx, rx) = watch::channel(Objects::new());
        tokio::spawn(reflector::reflect(client.clone(), resource, ListOptions::default(), tx));
        rx
    }
    let mut services = copy_of::<Service>(&client, &SERVICES);
    let mut endpoints = copy_of::<Endpoints>(&client, &ENDPOINTS);
    let mut pods = copy_of::<Pod>(&client, &PODS);
    let mut proxy = ServiceProxy::new(IpAddr::V4(Ipv4Addr::UNSPECIFIED));
    let mut resync = tokio::time::interval(Duration::from_secs(5));
    loop {
        let t = table(&services.borrow_and_update(), &endpoints.borrow_and_update(), &pods.borrow_and_update());
        proxy.apply(&t).await;
        tokio::select! {
            r = services.changed() => if r.is_err() { return },
            r = endpoints.changed() => if r.is_err() { return },
            r = pods.changed() => if r.is_err() { return },
            _ = resync.tick() => {}
        }
    }
}

#[cfg(test)]
mod tests;
