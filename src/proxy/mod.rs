//! The service proxy: every node listens on the NodePort of every NodePort or LoadBalancer Service
//! and forwards each TCP connection, round robin, to the service's ready endpoints; and writes the
//! kernel rules that send connections to a Service's cluster IP to its endpoints (`clusterips`).
//!
//! Endpoints are dialled as written (pod address, container port): pod addresses are routed
//! between nodes by the VPC (see the agent's `pods` module). The table is rebuilt whenever
//! Services or Endpoints change.

use std::collections::{BTreeMap, HashMap};
use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, RwLock};
use std::time::Duration;

use tokio::net::{TcpListener, TcpStream};
use tokio::task::JoinHandle;

use crate::api::networkpolicy::{Namespace, NetworkPolicy};
use crate::api::pod::Pod;
use crate::api::service::{EndpointAddress, Endpoints, Service};
use crate::client::ListOptions;
use crate::runtime::{Action, Backoff, Client, Controller, Object, ObjectKey, Store};

pub mod clusterips;
pub mod policy;

/// How long dialling one endpoint may take before the next is tried.
const DIAL_TIMEOUT: Duration = Duration::from_secs(2);

/// Backends per node port.
pub type Table = BTreeMap<u16, Vec<SocketAddr>>;

/// Where an endpoint address is dialled.
fn dial_address(address: &EndpointAddress, port: u16) -> Option<SocketAddr> {
    Some(SocketAddr::new(address.ip.parse().ok()?, port))
}

/// The forwarding table: node port -> ready backends, from Services and Endpoints.
pub fn table(services: &Store<Service>, endpoints: &Store<Endpoints>) -> Table {
    let mut out = Table::new();
    for service in services.snapshot() {
        if !service.spec.uses_node_ports() {
            continue;
        }
        for sp in &service.spec.ports {
            if !sp.protocol().eq_ignore_ascii_case("TCP") {
                continue;
            }
            let Some(node_port) = sp.node_port.and_then(|p| u16::try_from(p).ok()) else { continue };
            let backends = out.entry(node_port).or_default();
            let Some(ep) = endpoints.get(&service.key()) else { continue };
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
                backends.extend(subset.addresses.iter().filter_map(|a| dial_address(a, port)));
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
    pub async fn apply(&mut self, table: &Table) -> Result<(), Unbound> {
        let mut unbound = Vec::new();
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
                    // The reconcile fails and is backed off; or a change comes first.
                    unbound.push((*port, e.to_string()));
                    continue;
                }
            };
            tracing::info!(port, "listening on node port");
            let backends = Arc::new(Backends { addresses: RwLock::new(addresses.clone()), next: AtomicUsize::new(0) });
            let task = tokio::spawn(serve(listener, backends.clone()));
            self.listeners.insert(*port, (backends, task));
        }
        if unbound.is_empty() { Ok(()) } else { Err(Unbound(unbound)) }
    }
}

/// Node ports that could not be listened on, with why.
#[derive(Debug)]
pub struct Unbound(pub Vec<(u16, String)>);

impl std::fmt::Display for Unbound {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let ports: Vec<String> = self.0.iter().map(|(port, e)| format!("{port} ({e})")).collect();
        write!(f, "listening on node ports: {}", ports.join(", "))
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

/// How often the listeners are made to match the table without a change (a port that could not
/// be bound is tried again).
pub const RESYNC: Duration = Duration::from_secs(5);

/// The proxy's stores and listeners.
pub struct Context {
    pub services: Store<Service>,
    pub endpoints: Store<Endpoints>,
    proxy: tokio::sync::Mutex<ServiceProxy>,
    /// The node's cluster IP and network policy rules, and what the policies are read from;
    /// None where the proxy may not touch the kernel's (tests).
    kernel: Option<Kernel>,
}

/// The rules the proxy writes into the node's kernel.
pub struct Kernel {
    cluster_ips: tokio::sync::Mutex<clusterips::ClusterIpRules>,
    policy_rules: tokio::sync::Mutex<policy::PolicyRules>,
    /// When the rules were last written whether or not they changed.
    checked: tokio::sync::Mutex<Option<std::time::Instant>>,
    policies: Store<NetworkPolicy>,
    pods: Store<Pod>,
    namespaces: Store<Namespace>,
}

impl Context {
    /// Stores of every Service and Endpoints reflected from `client`, and listeners on `bind_ip`.
    pub fn new<C: Client>(client: &C, bind_ip: IpAddr) -> Self {
        Context {
            services: Store::reflect(client.clone(), None, ListOptions::default()),
            endpoints: Store::reflect(client.clone(), None, ListOptions::default()),
            proxy: tokio::sync::Mutex::new(ServiceProxy::new(bind_ip)),
            kernel: None,
        }
    }

    /// Also writes the node's cluster IP and network policy rules.
    pub fn with_kernel_rules<C: Client>(mut self, client: &C) -> Self {
        self.kernel = Some(Kernel {
            cluster_ips: Default::default(),
            policy_rules: Default::default(),
            checked: Default::default(),
            policies: Store::reflect(client.clone(), None, ListOptions::default()),
            // Every pod may be a policy's peer; a node reads other nodes' pods in their network view only.
            pods: Store::reflect(client.clone(), None, ListOptions::pod_network()),
            namespaces: Store::reflect(client.clone(), None, ListOptions::default()),
        });
        self
    }

    /// The node ports listened on.
    pub async fn ports(&self) -> Vec<u16> {
        self.proxy.lock().await.ports()
    }
}

/// The one key of the proxy: the table is built from every Service at once.
fn table_key() -> ObjectKey {
    ObjectKey::cluster("node-ports")
}

/// The proxy as a controller: any change of a Service or Endpoints rebuilds the table.
pub fn controller(ctx: &Context) -> Controller {
    let mut controller = Controller::new("proxy")
        .watches(&ctx.services, |_: &Service| vec![table_key()])
        .watches(&ctx.endpoints, |_: &Endpoints| vec![table_key()]);
    if let Some(kernel) = &ctx.kernel {
        controller = controller
            .watches(&kernel.policies, |_: &NetworkPolicy| vec![table_key()])
            .watches(&kernel.pods, |_: &Pod| vec![table_key()])
            .watches(&kernel.namespaces, |_: &Namespace| vec![table_key()]);
    }
    controller.resync_every(RESYNC, || vec![table_key()]).backoff(Backoff { initial: Duration::from_millis(500), max: RESYNC })
}

/// Makes the listeners and the cluster IP rules match the stores. A port that cannot be listened
/// on (another process has it) or rules the kernel refused fail the reconcile, which is backed off
/// (0.5 s, doubling, at most [`RESYNC`]); every other port is served meanwhile.
async fn reconcile(_key: ObjectKey, ctx: Arc<Context>) -> Result<Action, String> {
    let t = table(&ctx.services, &ctx.endpoints);
    let listened = ctx.proxy.lock().await.apply(&t).await.map_err(|e| e.to_string());
    if let Some(kernel) = &ctx.kernel {
        // Once per resync the jumps into our chains are checked again: another program (the
        // agent's pod network, Docker) may have put rules before them meanwhile.
        if kernel.checked.lock().await.is_none_or(|t| t.elapsed() >= RESYNC) {
            kernel.cluster_ips.lock().await.recheck();
            kernel.policy_rules.lock().await.recheck();
            *kernel.checked.lock().await = Some(std::time::Instant::now());
        }
        let ports = clusterips::service_ports(&ctx.services, &ctx.endpoints);
        kernel.cluster_ips.lock().await.apply(&ports).await.map_err(|e| format!("writing the cluster IP rules: {e}"))?;
        kernel.policy_rules.lock().await.apply(&kernel.policies, &kernel.pods, &kernel.namespaces).await.map_err(|e| format!("writing the network policy rules: {e}"))?;
    }
    listened?;
    Ok(Action::AwaitChange)
}

/// Runs the proxy until dropped, on `ctx`'s stores.
pub async fn run_with(ctx: Arc<Context>) {
    controller(&ctx).run(reconcile, ctx.clone()).await;
}

/// Runs the proxy until the process ends, listening on all of the node's addresses.
pub async fn run<C: Client>(client: C) {
    run_with(Arc::new(Context::new(&client, IpAddr::V4(Ipv4Addr::UNSPECIFIED)).with_kernel_rules(&client))).await;
}

#[cfg(test)]
mod tests;
