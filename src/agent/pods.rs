//! Pod sync: makes the node's containers match the pods bound to it, and reports their status.
//!
//! Level-triggered: every second (and whenever the watched pods change) [`PodSync::sync`] compares
//! the pods with the runtime's containers, found by their labels (so that a restarted agent adopts
//! what runs instead of recreating it), and acts: create, restart after a crash-loop back-off
//! (10 s doubling to 300 s, reset after 10 minutes running), probe, stop gracefully. It returns the
//! pod statuses that changed; [`run`] writes them with `replace_status`, 8 at a time. [`run`] is a
//! controller on [`crate::runtime`]: a store of the pods with `spec.nodeName` = this node feeds one
//! key, each pass asks for the next after 1 s, and container-runtime failures are backed off.
//!
//! # Networking
//! Every pod has a sandbox ([`super::runtime`]): the holder of its network namespace, wired by the
//! agent to the node (routed, `runtime/podnet.rs`) with an address from the node's pod range (`spec.podCIDR`,
//! [`super::runtime::podnet`]). The pod's containers join it, so they share `localhost` and the
//! address, reported as `status.podIP`/`podIPs` (`hostIP` is the node's). Pod addresses are routed
//! between nodes by the VPC, so a pod's port P is reached from any node and pod at `podIP:P`;
//! a `hostPort` is forwarded from the node's addresses by the agent. A sandbox that dies takes
//! its pod's containers with it: they are made again in a new one (a new address), as kubelet
//! does.

use std::collections::{BTreeMap, HashMap, HashSet};
use std::net::{IpAddr, SocketAddr};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use futures::StreamExt;
use sha2::{Digest, Sha256};
use tokio::time::Instant;

use super::images;
use super::podconfig::{self, PodContext, SourceData, SourceKey, Sources, VolumeRoots};
use crate::api::config::{ConfigMap, Secret};
use super::runtime::{ContainerInfo, ContainerRuntime, ContainerSpec, DnsPolicy, PodDns, PortSpec, RuntimeError, Sandbox, SandboxSpec, labels};
use crate::api::pod::{
    LifecycleHandler, Container, ContainerState, ContainerStateRunning, ContainerStateTerminated, ContainerStateWaiting, ContainerStatus, Pod,
    PodCondition, PodIp, PodSpec, PodStatus, Probe,
};
use crate::api::node::Taint;
use crate::api::quantity::{IntOrString, Quantity};
use crate::api::time::Time;
use crate::client::ListOptions;
use crate::api::event::{NORMAL, WARNING};
use crate::runtime::events::Recorder;
use crate::runtime::{Action, Backoff, Client, Controller, ObjectKey, Store};

/// First crash-loop back-off.
pub const BACKOFF_START: Duration = Duration::from_secs(10);
/// Longest crash-loop back-off.
pub const BACKOFF_CAP: Duration = Duration::from_secs(300);
/// A container running this long has its back-off reset.
pub const BACKOFF_RESET: Duration = Duration::from_secs(600);
/// Default termination grace period.
pub const DEFAULT_GRACE: Duration = Duration::from_secs(30);

/// Consecutive results of one probe.
#[derive(Debug, Default)]
struct HealthTrack {
    next: Option<Instant>,
    successes: u32,
    failures: u32,
    /// The probe's verdict: ready (readiness) or alive (liveness).
    passing: bool,
}

/// What the agent remembers of one pod container between syncs.
#[derive(Debug)]
struct ContainerTrack {
    restart_count: u32,
    backoff: Duration,
    /// When the crash-loop back-off ends.
    restart_at: Option<Instant>,
    /// When the current container was started (or adopted).
    running_since: Option<Instant>,
    container_id: Option<String>,
    waiting: Option<(String, String)>,
    last_terminated: Option<ContainerStateTerminated>,
    liveness: HealthTrack,
    readiness: HealthTrack,
    /// The startup probe: passing once it has passed (at once without one).
    startup: HealthTrack,
    /// The back-off of the image's next pull after a failed one, and when that pull may be.
    pull_backoff: Duration,
    pull_retry_at: Option<Instant>,
    /// When the last pull failed.
    pull_failed_at: Option<Instant>,
}

impl ContainerTrack {
    fn new(restart_count: u32) -> Self {
        ContainerTrack {
            restart_count,
            backoff: BACKOFF_START,
            restart_at: None,
            running_since: None,
            container_id: None,
            waiting: Some(("ContainerCreating".into(), String::new())),
            last_terminated: None,
            liveness: HealthTrack::default(),
            readiness: HealthTrack::default(),
            startup: HealthTrack::default(),
            pull_backoff: BACKOFF_START,
            pull_retry_at: None,
            pull_failed_at: None,
        }
    }
}

/// A container to stop: after its preStop handler (with its spec and what the runtime said of it)
/// when it has one and is killed by its node (liveness, startup, postStart failure, deadline,
/// eviction), as kubelet runs the handler before every kill; then removed when `remove`.
struct Stop {
    id: String,
    grace: Duration,
    remove: bool,
    pre_stop: Option<(LifecycleHandler, Container, ContainerInfo)>,
}

impl Stop {
    fn plain(id: &str, grace: Duration, remove: bool) -> Self {
        Stop { id: id.to_string(), grace, remove, pre_stop: None }
    }

    fn hooked(c: &ContainerInfo, spec: &Container, grace: Duration, remove: bool) -> Self {
        let handler = spec.lifecycle.as_ref().and_then(|l| l.pre_stop.clone()).filter(|_| c.running);
        Stop { pre_stop: handler.map(|h| (h, spec.clone(), c.clone())), ..Stop::plain(&c.id, grace, remove) }
    }
}

#[derive(Debug)]
struct PodTrack {
    containers: HashMap<String, ContainerTrack>,
    start_time: Time,
    /// The status last written (or read back), to write only changes.
    last_status: Option<PodStatus>,
    /// Why the pod was evicted, once it was.
    evicted: Option<String>,
    /// When its emptyDirs' usage was last measured.
    usage_checked: Option<Instant>,
}

/// The node side of pods: desired pods in, containers and statuses out.
pub struct PodSync<R: ContainerRuntime> {
    runtime: Arc<R>,
    node_ip: IpAddr,
    pods: HashMap<String, PodTrack>,
    /// Containers being stopped in the background.
    terminating: Arc<Mutex<HashSet<String>>>,
    /// Containers being started in the background, by `<pod uid>/<container name>`.
    starting: Starts,
    /// Start of Docker container names (`k8s_`; tests use `clusterctl-test-`).
    name_prefix: String,
    /// What the last syncs saw happen, to be reported as Events.
    happened: Vec<Happening>,
    /// Deleted pods (marked with `deletionTimestamp`) whose containers are all gone: the API
    /// object may go now.
    finished: Vec<Pod>,
    /// Each live pod's sandbox, by pod uid: made by the first container start that needs it.
    sandboxes: Sandboxes,
    /// The ConfigMaps and Secrets the pods name, as last fetched ([`Context`] sets them).
    sources: Sources,
    /// Where the pods' volumes are made.
    volumes: VolumeRoots,
    /// Containers whose postStart handler failed, with why: killed by the next sync.
    hook_failures: HookFailures,
    /// The node's CPU (millicores) and memory (bytes): a `resourceFieldRef` to a limit not set.
    capacity: (u64, u64),
    /// The node's `NoSchedule` and `NoExecute` taints: a new pod that does not tolerate them is
    /// refused (it was bound around the scheduler, by `nodeName`).
    taints: Vec<Taint>,
    /// The node's own credentials for Amazon ECR's registries, when it has them.
    ecr: Option<Arc<images::EcrCredentials>>,
}

/// A pod's sandbox as the agent knows it: the running one and when it was made (or adopted), or
/// none yet. Locked while a start makes one.
type SandboxCell = Arc<tokio::sync::Mutex<Option<(Sandbox, Instant)>>>;
/// The sandbox cells by pod uid.
type Sandboxes = Arc<Mutex<HashMap<String, SandboxCell>>>;

/// Something that happened to a container of a pod, as the kubelet reports it in an Event
/// (`Started`, `Failed`, `BackOff`, `Unhealthy`, `Killing`).
#[derive(Debug, Clone)]
pub struct Happening {
    pub pod: Pod,
    pub container: String,
    pub event_type: &'static str,
    pub reason: &'static str,
    pub message: String,
}

/// Where a container start made in the background stands.
#[derive(Debug, Clone)]
enum Start {
    Running,
    /// Finished at this instant: created and started, or why not (reason, message).
    Done(Instant, Result<(), (String, String)>),
}

/// Containers whose postStart handler failed, by id, with the message to report.
type HookFailures = Arc<Mutex<HashMap<String, String>>>;

/// Runs a lifecycle handler against a running container (a command in it, an HTTP GET or a TCP
/// connect to it, or a pause).
async fn run_handler<R: ContainerRuntime>(runtime: &R, handler: &LifecycleHandler, container: &Container, info: &ContainerInfo) -> Result<(), String> {
    if let Some(exec) = &handler.exec {
        return match runtime.exec(&info.id, &exec.command).await {
            Ok(0) => Ok(()),
            Ok(code) => Err(format!("Exec lifecycle hook ({:?}) for Container {:?} failed - error: command '{}' exited with {code}", exec.command, container.name, exec.command.join(" "))),
            Err(e) => Err(format!("Exec lifecycle hook ({:?}) for Container {:?} failed - error: {e}", exec.command, container.name)),
        };
    }
    if let Some(http) = &handler.http_get {
        let addr = probe_target(http.host.as_deref(), &http.port, container, info).ok_or("HTTP lifecycle hook: no such port")?;
        let path = http.path.as_deref().unwrap_or("/");
        return match http_get(addr, path).await {
            Some(code) if (200..400).contains(&code) => Ok(()),
            Some(code) => Err(format!("HTTP lifecycle hook ({path}) for Container {:?} failed - error: status {code}", container.name)),
            None => Err(format!("HTTP lifecycle hook ({path}) for Container {:?} failed - error: no answer from {addr}", container.name)),
        };
    }
    if let Some(tcp) = &handler.tcp_socket {
        let addr = probe_target(tcp.host.as_deref(), &tcp.port, container, info).ok_or("TCP lifecycle hook: no such port")?;
        return tokio::net::TcpStream::connect(addr).await.map(|_| ()).map_err(|e| format!("TCP lifecycle hook for Container {:?} failed - error: {e}", container.name));
    }
    if let Some(sleep) = &handler.sleep {
        tokio::time::sleep(Duration::from_secs(u64::try_from(sleep.seconds).unwrap_or(0))).await;
        return Ok(());
    }
    Err(format!("lifecycle hook for Container {:?}: no handler given", container.name))
}

/// Runs a container's postStart handler in the background; a failure is left for the next sync,
/// which kills the container, as kubelet does.
fn run_post_start<R: ContainerRuntime>(env: &SyncEnv<'_, R>, pod: &Pod, spec: &Container, info: &ContainerInfo, hook: LifecycleHandler) {
    let (runtime, failures, spec, info) = (env.shared.clone(), env.hook_failures.clone(), spec.clone(), info.clone());
    let grace = grace_of(pod);
    tokio::spawn(async move {
        let outcome = tokio::time::timeout(grace, run_handler(&*runtime, &hook, &spec, &info)).await.unwrap_or_else(|_| Err(format!("PostStartHook for Container {:?} did not end within {}s", spec.name, grace.as_secs())));
        if let Err(message) = outcome {
            tracing::info!(container = %info.id, %message, "postStart handler failed");
            failures.lock().unwrap_or_else(|e| e.into_inner()).insert(info.id, message);
        }
    });
}

/// The container starts in flight or finished, by `<pod uid>/<container name>`.
type Starts = Arc<Mutex<HashMap<String, Start>>>;

/// How long a failed pull is shown as `ErrImagePull` before `ImagePullBackOff`.
const PULL_ERROR_SHOWN: Duration = Duration::from_secs(3);

/// How long a sync waits for the container starts it made before it reports what it has; the
/// starts that take longer finish in the background and are seen by a later sync, so that a pod
/// bound later, or one that started at once, is not held behind a busy runtime.
const START_WAIT: Duration = Duration::from_millis(500);

/// A pod status to write.
#[derive(Debug, Clone, PartialEq)]
pub struct StatusUpdate {
    pub namespace: String,
    pub name: String,
    pub status: PodStatus,
}

/// Hash of what the container is run with (not of its JSON, which a rewrite of the pod by a typed
/// client may reorder or fill with defaults): a change means a new container. The hashed text is
/// the one earlier agents hashed, so that an upgraded agent adopts the containers that run.
fn spec_hash(container: &Container) -> String {
    let s = runtime_spec(container);
    let mut key = format!("{:?}", (&s.image, &s.command, &s.args, &s.env, &s.working_dir, s.cpu_millis, s.memory_bytes));
    // Where values and volumes come from (not their contents: a changed ConfigMap does not
    // restart a container, as in Kubernetes); appended only when used, so that the hash of a
    // container without them stays what it was.
    let sourced: Vec<_> = container.env.iter().map(|e| &e.value_from).collect();
    if !container.env_from.is_empty() || sourced.iter().any(|v| v.is_some()) || !container.volume_mounts.is_empty() {
        key.push_str(&format!("{:?}", (&container.env_from, sourced, &container.volume_mounts)));
    }
    if let Some(security) = &container.security_context {
        key.push_str(&format!("{security:?}"));
    }
    hex::encode(&Sha256::digest(key.as_bytes())[..8])
}

fn grace_of(pod: &Pod) -> Duration {
    pod.spec.termination_grace_period_seconds.and_then(|s| u64::try_from(s).ok()).map(Duration::from_secs).unwrap_or(DEFAULT_GRACE)
}

/// A limit as a number; a limit that is not a quantity counts as none (the API server's validation
/// refuses it, so only an object stored before that check can have one).
fn limit(container: &Container, resource: &str, amount: fn(&Quantity) -> Result<u64, crate::api::quantity::QuantityError>) -> Option<u64> {
    amount(container.resources.limits.get(resource)?).ok()
}

/// What the container runs (image, command, environment, limits), without its name and labels.
fn runtime_spec(container: &Container) -> ContainerSpec {
    ContainerSpec {
        image: container.image.clone(),
        command: container.command.clone(),
        args: container.args.clone(),
        env: container.env.iter().map(|e| (e.name.clone(), e.value.clone())).collect(),
        working_dir: container.working_dir.clone(),
        cpu_millis: limit(container, "cpu", Quantity::millicores),
        memory_bytes: limit(container, "memory", Quantity::bytes),
        stdin: container.stdin,
        stdin_once: container.stdin_once,
        tty: container.tty,
        ..Default::default()
    }
}

/// The labels that name a container's or sandbox's pod.
fn pod_labels(pod: &Pod) -> BTreeMap<String, String> {
    BTreeMap::from([
        (labels::NAMESPACE.to_string(), pod.metadata.namespace_or_default().to_string()),
        (labels::POD.to_string(), pod.metadata.name.clone()),
        (labels::UID.to_string(), pod.metadata.uid.clone()),
        (labels::GRACE.to_string(), grace_of(pod).as_secs().to_string()),
    ])
}

/// The runtime's spec for one pod container: what it runs, named and labelled after its pod.
fn container_spec(prefix: &str, pod: &Pod, container: &Container, attempt: u32) -> ContainerSpec {
    let (ns, name, uid) = (pod.metadata.namespace_or_default(), pod.metadata.name.as_str(), pod.metadata.uid.as_str());
    let cname = container.name.as_str();
    let mut labelled = pod_labels(pod);
    labelled.insert(labels::CONTAINER.to_string(), cname.to_string());
    labelled.insert(labels::SPEC_HASH.to_string(), spec_hash(container));
    ContainerSpec { name: format!("{prefix}{cname}_{name}_{ns}_{}_{attempt}", uid.get(..8).unwrap_or(uid)), labels: labelled, ..runtime_spec(container) }
}

/// The runtime's spec for a pod's sandbox: named as dockershim named them (`k8s_POD_...`, with a
/// random suffix: a dead one may still hold its name), with the pod's TCP host ports.
fn sandbox_spec(prefix: &str, pod: &Pod) -> SandboxSpec {
    let (ns, name, uid) = (pod.metadata.namespace_or_default(), pod.metadata.name.as_str(), pod.metadata.uid.as_str());
    let host_ports = pod
        .spec
        .containers
        .iter()
        .flat_map(|c| &c.ports)
        .filter(|p| p.protocol().eq_ignore_ascii_case("TCP"))
        .filter_map(|p| Some(PortSpec { container_port: u16::try_from(p.container_port).ok()?, host_port: p.host_port.and_then(|h| u16::try_from(h).ok()).filter(|h| *h != 0)? }))
        .collect();
    let hostname = pod.spec.hostname.clone().filter(|h| !h.is_empty()).unwrap_or_else(|| name.chars().take(63).collect::<String>().trim_end_matches(['-', '.']).to_string());
    let host_aliases = match pod.spec.subdomain.as_deref().filter(|s| !s.is_empty()) {
        Some(sub) => vec![format!("{hostname}.{sub}.{ns}.svc.{}", crate::dns::DOMAIN)],
        None => Vec::new(),
    };
    SandboxSpec {
        name: format!("{prefix}POD_{name}_{ns}_{}_{}", uid.get(..8).unwrap_or(uid), hex::encode(rand::random::<[u8; 3]>())),
        labels: pod_labels(pod),
        host_ports,
        hostname,
        host_aliases,
        extra_hosts: pod.spec.host_aliases.iter().map(|a| (a.ip.clone(), a.hostnames.clone())).collect(),
        dns: pod_dns(pod),
    }
}

/// The pod's `/etc/resolv.conf` settings, as kubelet derives them from `dnsPolicy` and `dnsConfig`:
/// `ClusterFirst` searches `<namespace>.svc`, `svc` and the cluster domain with `ndots:5`.
fn pod_dns(pod: &Pod) -> PodDns {
    let ns = pod.metadata.namespace_or_default();
    let policy = match pod.spec.dns_policy.as_deref() {
        Some("Default") => DnsPolicy::Default,
        Some("None") => DnsPolicy::None,
        _ => DnsPolicy::ClusterFirst,
    };
    let domain = crate::dns::DOMAIN;
    let mut dns = PodDns { policy, ..Default::default() };
    if policy == DnsPolicy::ClusterFirst {
        dns.searches = vec![format!("{ns}.svc.{domain}"), format!("svc.{domain}"), domain.to_string()];
        dns.options = vec!["ndots:5".into()];
    }
    if let Some(config) = &pod.spec.dns_config {
        dns.nameservers.extend(config.nameservers.iter().cloned());
        dns.searches.extend(config.searches.iter().cloned());
        for option in &config.options {
            let Some(name) = option.name.as_deref().filter(|n| !n.is_empty()) else { continue };
            // a pod's option replaces the policy's of the same name
            dns.options.retain(|o| o.split(':').next() != Some(name));
            dns.options.push(match option.value.as_deref() {
                Some(v) => format!("{name}:{v}"),
                None => name.to_string(),
            });
        }
    }
    dns
}

/// A probe's port: a number, or the name of one of the container's ports.
fn probe_port(port: &IntOrString, container: &Container) -> Option<u16> {
    match port {
        IntOrString::Int(n) => u16::try_from(*n).ok(),
        IntOrString::String(name) => container.ports.iter().find(|p| p.name.as_deref() == Some(name.as_str())).and_then(|p| u16::try_from(p.container_port).ok()),
    }
}

/// Where a TCP or HTTP probe connects: its `host`, else the container's address.
fn probe_target(host: Option<&str>, port: &IntOrString, container: &Container, info: &ContainerInfo) -> Option<SocketAddr> {
    let port = probe_port(port, container)?;
    let ip = host.and_then(|h| h.parse().ok()).or(info.ip)?;
    Some(SocketAddr::new(ip, port))
}

/// Runs one probe against a running container; `true` when it passes.
async fn probe<R: ContainerRuntime>(runtime: &R, probe: &Probe, container: &Container, info: &ContainerInfo) -> bool {
    let attempt = async {
        if let Some(exec) = &probe.exec {
            return matches!(runtime.exec(&info.id, &exec.command).await, Ok(0));
        }
        if let Some(tcp) = &probe.tcp_socket {
            let Some(addr) = probe_target(tcp.host.as_deref(), &tcp.port, container, info) else { return false };
            return tokio::net::TcpStream::connect(addr).await.is_ok();
        }
        if let Some(http) = &probe.http_get {
            let Some(addr) = probe_target(http.host.as_deref(), &http.port, container, info) else { return false };
            let path = http.path.as_deref().unwrap_or("/");
            return http_get(addr, path).await.is_some_and(|code| (200..400).contains(&code));
        }
        false
    };
    tokio::time::timeout(probe.timeout(), attempt).await.unwrap_or(false)
}

/// A minimal HTTP/1.0 GET; returns the status code.
async fn http_get(addr: SocketAddr, path: &str) -> Option<u16> {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let mut stream = tokio::net::TcpStream::connect(addr).await.ok()?;
    stream.write_all(format!("GET {path} HTTP/1.0\r\nHost: {addr}\r\nUser-Agent: clusterctl-probe\r\n\r\n").as_bytes()).await.ok()?;
    let mut head = vec![0u8; 64];
    let n = stream.read(&mut head).await.ok()?;
    let line = String::from_utf8_lossy(&head[..n]);
    line.split_whitespace().nth(1)?.parse().ok()
}

/// Advances a probe track if due; returns whether it ran.
async fn step_probe<R: ContainerRuntime>(runtime: &R, spec: Option<&Probe>, track: &mut HealthTrack, since: Instant, container: &Container, info: &ContainerInfo, now: Instant) {
    let Some(spec) = spec else {
        track.passing = true;
        return;
    };
    let due = track.next.unwrap_or(since + spec.initial_delay());
    if now < due {
        return;
    }
    track.next = Some(now + spec.period());
    if probe(runtime, spec, container, info).await {
        track.successes += 1;
        track.failures = 0;
        if track.successes >= spec.successes() {
            track.passing = true;
        }
    } else {
        track.failures += 1;
        track.successes = 0;
        if track.failures >= spec.failures() {
            track.passing = false;
        }
    }
}

impl<R: ContainerRuntime> PodSync<R> {
    /// Pod sync for the node at `node_ip`.
    pub fn new(runtime: Arc<R>, node_ip: IpAddr) -> Self {
        PodSync {
            runtime,
            node_ip,
            pods: HashMap::new(),
            terminating: Arc::default(),
            starting: Arc::default(),
            name_prefix: "k8s_".into(),
            happened: Vec::new(),
            finished: Vec::new(),
            sandboxes: Arc::default(),
            sources: Sources::new(),
            volumes: VolumeRoots::default(),
            hook_failures: Arc::default(),
            taints: Vec::new(),
            ecr: None,
            capacity: {
                let host = super::host::HostInfo::read();
                (host.cpus as u64 * 1000, host.memory_kib * 1024)
            },
        }
    }

    /// Pulls from Amazon ECR's registries that no pull secret names with `ecr`'s credentials.
    pub fn with_ecr(mut self, ecr: Arc<images::EcrCredentials>) -> Self {
        self.ecr = Some(ecr);
        self
    }

    /// Makes the pods' volumes under `roots` (tests).
    pub fn with_volume_roots(mut self, roots: VolumeRoots) -> Self {
        self.volumes = roots;
        self
    }

    /// The ConfigMaps and Secrets the next syncs read.
    pub fn set_sources(&mut self, sources: Sources) {
        self.sources = sources;
    }

    /// The node's taints, which pods bound here must tolerate to be admitted.
    pub fn with_taints(mut self, taints: Vec<Taint>) -> Self {
        self.taints = taints;
        self
    }

    /// Names containers `<prefix><container>_<pod>_<namespace>_<uid>_<attempt>`.
    pub fn with_name_prefix(mut self, prefix: &str) -> Self {
        self.name_prefix = prefix.to_string();
        self
    }

    /// Stops (SIGTERM, grace, SIGKILL) and removes a container in the background.
    fn terminate(&self, id: &str, grace: Duration) {
        self.stop_in_background(id, grace, true);
    }

    /// Stops a container in the background, and removes it when `remove`; a container only stopped
    /// is then restarted by its restart policy, with back-off and a counted restart.
    fn stop_in_background(&self, id: &str, grace: Duration, remove: bool) {
        if !self.terminating.lock().unwrap_or_else(|e| e.into_inner()).insert(id.to_string()) {
            return;
        }
        let (runtime, terminating, id) = (self.runtime.clone(), self.terminating.clone(), id.to_string());
        tokio::spawn(async move {
            if let Err(e) = runtime.stop(&id, grace).await {
                tracing::warn!(container = %id, error = %e, "stopping a container");
            }
            if remove
                && let Err(e) = runtime.remove(&id).await
            {
                tracing::warn!(container = %id, error = %e, "removing a container");
            }
            terminating.lock().unwrap_or_else(|e| e.into_inner()).remove(&id);
        });
    }

    /// Runs the container's preStop handler (within the grace period), then stops it with what is
    /// left of the grace (at least 2 s, as kubelet extends it) and removes it when `remove`, in the
    /// background.
    fn terminate_after_pre_stop(&self, c: &ContainerInfo, grace: Duration, handler: LifecycleHandler, spec: Container, remove: bool) {
        if !self.terminating.lock().unwrap_or_else(|e| e.into_inner()).insert(c.id.clone()) {
            return;
        }
        let (runtime, terminating, info) = (self.runtime.clone(), self.terminating.clone(), c.clone());
        tokio::spawn(async move {
            let t0 = Instant::now();
            match tokio::time::timeout(grace, run_handler(&*runtime, &handler, &spec, &info)).await {
                Ok(Err(message)) => tracing::info!(container = %info.id, %message, "preStop handler failed"),
                Err(_) => tracing::info!(container = %info.id, "preStop handler did not end within the grace period"),
                Ok(Ok(())) => {}
            }
            let left = grace.saturating_sub(t0.elapsed()).max(Duration::from_secs(2));
            if let Err(e) = runtime.stop(&info.id, left).await {
                tracing::warn!(container = %info.id, error = %e, "stopping a container");
            }
            if remove
                && let Err(e) = runtime.remove(&info.id).await
            {
                tracing::warn!(container = %info.id, error = %e, "removing a container");
            }
            terminating.lock().unwrap_or_else(|e| e.into_inner()).remove(&info.id);
        });
    }

    fn is_terminating(&self, id: &str) -> bool {
        self.terminating.lock().unwrap_or_else(|e| e.into_inner()).contains(id)
    }

    /// One pass: `desired` are the pods bound to this node. Returns the statuses to write.
    pub async fn sync(&mut self, desired: &[Pod]) -> Result<Vec<StatusUpdate>, RuntimeError> {
        let now = Instant::now();
        let (listed_sandboxes, actual): (Vec<ContainerInfo>, Vec<ContainerInfo>) = self.runtime.list(labels::UID).await?.into_iter().partition(|c| c.is_sandbox());
        let live: HashMap<&str, &Pod> = desired.iter().filter(|p| !p.is_terminating() && !p.metadata.uid.is_empty()).map(|p| (p.metadata.uid.as_str(), p)).collect();
        // Pods deleted through the API: stopped within the grace period their delete gave them.
        let deleting: HashMap<&str, &Pod> = desired.iter().filter(|p| p.is_terminating() && !p.metadata.uid.is_empty()).map(|p| (p.metadata.uid.as_str(), p)).collect();
        let with_containers: HashSet<String> = actual.iter().filter_map(|c| c.labels.get(labels::UID)).cloned().collect();
        // Volumes of pods that are gone, once their containers are.
        for uid in self.volumes.pods() {
            if !live.contains_key(uid.as_str()) && !with_containers.contains(&uid) && !deleting.contains_key(uid.as_str()) {
                self.volumes.remove_pod(&uid);
            }
        }
        self.finished = deleting.iter().filter(|(uid, _)| !with_containers.contains(**uid)).map(|(_, p)| (*p).clone()).collect();
        let deleting_grace: HashMap<String, Duration> = deleting
            .iter()
            .filter_map(|(uid, p)| Some((uid.to_string(), Duration::from_secs(u64::try_from(p.metadata.deletion_grace_period_seconds?).ok()?))))
            .collect();

        // Containers of pods that are gone: stop them gracefully.
        let mut by_pod: HashMap<String, HashMap<String, Vec<ContainerInfo>>> = HashMap::new();
        for c in actual {
            let uid = c.labels.get(labels::UID).cloned().unwrap_or_default();
            if !live.contains_key(uid.as_str()) {
                if !self.is_terminating(&c.id) {
                    let labelled = c.labels.get(labels::GRACE).and_then(|g| g.parse().ok()).map(Duration::from_secs).unwrap_or(DEFAULT_GRACE);
                    let grace = deleting_grace.get(&uid).copied().unwrap_or(labelled);
                    tracing::info!(container = %c.id, pod = ?c.labels.get(labels::POD), "stopping the container of a deleted pod");
                    // Reported as kubelet does, on the pod while the API still has it.
                    if let Some(pod) = deleting.get(uid.as_str()).filter(|_| c.running) {
                        let cname = c.labels.get(labels::CONTAINER).cloned().unwrap_or_default();
                        let message = format!("Stopping container {cname}");
                        self.happened.push(Happening { pod: (*pod).clone(), container: cname, event_type: NORMAL, reason: "Killing", message });
                    }
                    let hook = deleting.get(uid.as_str()).and_then(|pod| {
                        let cname = c.labels.get(labels::CONTAINER)?;
                        let spec = pod.spec.containers.iter().chain(&pod.spec.init_containers).find(|s| &s.name == cname)?;
                        Some((spec.lifecycle.as_ref()?.pre_stop.clone()?, spec.clone()))
                    });
                    match hook.filter(|_| c.running) {
                        Some((handler, spec)) => self.terminate_after_pre_stop(&c, grace, handler, spec, true),
                        None => self.terminate(&c.id, grace),
                    }
                }
                continue;
            }
            let cname = c.labels.get(labels::CONTAINER).cloned().unwrap_or_default();
            by_pod.entry(uid).or_default().entry(cname).or_default().push(c);
        }
        // Sandboxes of pods that are gone go once the last of their containers has (the pod
        // keeps its network while it stops gracefully); those of live pods go to their pod's sync.
        let mut sandboxes_of: HashMap<String, Vec<ContainerInfo>> = HashMap::new();
        for sandbox in listed_sandboxes {
            let uid = sandbox.labels.get(labels::UID).cloned().unwrap_or_default();
            if live.contains_key(uid.as_str()) {
                sandboxes_of.entry(uid).or_default().push(sandbox);
            } else if !with_containers.contains(&uid) && !self.is_terminating(&sandbox.id) {
                self.terminate(&sandbox.id, Duration::ZERO);
            }
        }
        self.sandboxes.lock().unwrap_or_else(|e| e.into_inner()).retain(|uid, _| live.contains_key(uid.as_str()));
        self.pods.retain(|uid, _| live.contains_key(uid.as_str()));
        self.starting.lock().unwrap_or_else(|e| e.into_inner()).retain(|key, start| {
            matches!(start, Start::Running) || key.split_once('/').is_some_and(|(uid, _)| live.contains_key(uid))
        });
        for (uid, pod) in &live {
            self.pods.entry(uid.to_string()).or_insert_with(|| PodTrack {
                containers: HashMap::new(),
                start_time: pod.status.start_time.unwrap_or_else(Time::now),
                last_status: None,
                evicted: None,
                usage_checked: None,
            });
        }

        // Pods are synced concurrently: a node starting 30 pods waits for Docker once, not 30 times.
        let started = Mutex::new(Vec::new());
        let happened = Mutex::new(Vec::new());
        let env = SyncEnv {
            happened: &happened,
            runtime: &*self.runtime,
            shared: &self.runtime,
            prefix: &self.name_prefix,
            terminating: &self.terminating,
            starting: &self.starting,
            started: &started,
            listed_at: now,
            node_ip: self.node_ip,
            sandboxes: &self.sandboxes,
            sources: &self.sources,
            volumes: &self.volumes,
            hook_failures: &self.hook_failures,
            capacity: self.capacity,
            taints: &self.taints,
            ecr: self.ecr.as_ref(),
        };
        let env = &env;
        let work = self.pods.iter_mut().filter_map(|(uid, track)| {
            let pod = *live.get(uid.as_str())?;
            let containers = by_pod.remove(uid).unwrap_or_default();
            let sandboxes = sandboxes_of.remove(uid).unwrap_or_default();
            Some(async move { (pod, sync_pod(env, track, pod, containers, sandboxes, now).await) })
        });
        let results = futures::future::join_all(work).await;
        self.happened.extend(happened.into_inner().unwrap_or_else(|e| e.into_inner()));
        let started = started.into_inner().unwrap_or_else(|e| e.into_inner());
        if !started.is_empty() {
            let _ = tokio::time::timeout(START_WAIT, futures::future::join_all(started)).await;
        }
        let mut updates = Vec::new();
        for (pod, (status, to_terminate)) in results {
            for stop in to_terminate {
                match stop.pre_stop {
                    Some((handler, spec, info)) => self.terminate_after_pre_stop(&info, stop.grace, handler, spec, stop.remove),
                    None => self.stop_in_background(&stop.id, stop.grace, stop.remove),
                }
            }
            if let Some(status) = status {
                updates.push(StatusUpdate {
                    namespace: pod.metadata.namespace_or_default().to_string(),
                    name: pod.metadata.name.clone(),
                    status,
                });
            }
        }
        Ok(updates)
    }

    /// The deleted pods the last sync found without containers: their API objects may go.
    pub fn take_finished(&mut self) -> Vec<Pod> {
        std::mem::take(&mut self.finished)
    }

    /// What happened since the last call, to report as Events.
    pub fn take_happenings(&mut self) -> Vec<Happening> {
        std::mem::take(&mut self.happened)
    }

    /// Remembers that `status` was written for the pod `uid`.
    pub fn written(&mut self, uid: &str, status: PodStatus) {
        if let Some(t) = self.pods.get_mut(uid) {
            t.last_status = Some(status);
        }
    }
}

/// What every pod's sync shares.
struct SyncEnv<'a, R> {
    /// What this sync saw happen.
    happened: &'a Mutex<Vec<Happening>>,
    runtime: &'a R,
    shared: &'a Arc<R>,
    prefix: &'a str,
    terminating: &'a Mutex<HashSet<String>>,
    starting: &'a Starts,
    /// The starts this sync made.
    started: &'a Mutex<Vec<tokio::task::JoinHandle<()>>>,
    /// When the containers this sync works from were listed.
    listed_at: Instant,
    node_ip: IpAddr,
    sandboxes: &'a Sandboxes,
    sources: &'a Sources,
    volumes: &'a VolumeRoots,
    hook_failures: &'a HookFailures,
    capacity: (u64, u64),
    taints: &'a [Taint],
    ecr: Option<&'a Arc<images::EcrCredentials>>,
}

impl<R> SyncEnv<'_, R> {
    /// What the downward API reads of the node, with the pod's address.
    fn pod_context(&self, pod_ip: Option<IpAddr>) -> PodContext {
        PodContext { pod_ip, host_ip: self.node_ip, node_cpu_millis: self.capacity.0, node_memory_bytes: self.capacity.1 }
    }

    /// The sandbox cell of the pod `uid`.
    fn sandbox_cell(&self, uid: &str) -> SandboxCell {
        self.sandboxes.lock().unwrap_or_else(|e| e.into_inner()).entry(uid.to_string()).or_default().clone()
    }

    /// Notes that `reason` happened to `container` of `pod`, to be reported as an Event.
    fn happen(&self, pod: &Pod, container: &str, event_type: &'static str, reason: &'static str, message: String) {
        let happening = Happening { pod: pod.clone(), container: container.into(), event_type, reason, message };
        self.happened.lock().unwrap_or_else(|e| e.into_inner()).push(happening);
    }
}

/// Syncs one pod; returns its status when it differs from the last one written, and the
/// containers to stop.
#[allow(clippy::too_many_lines)]
async fn sync_pod<R: ContainerRuntime>(
    env: &SyncEnv<'_, R>,
    track: &mut PodTrack,
    pod: &Pod,
    mut actual: HashMap<String, Vec<ContainerInfo>>,
    sandboxes: Vec<ContainerInfo>,
    now: Instant,
) -> (Option<PodStatus>, Vec<Stop>) {
    let policy = pod.spec.restart_policy();
    let grace = grace_of(pod);
    let specs = &pod.spec.containers;
    let known_restarts: HashMap<&str, u32> =
        pod.status.container_statuses.iter().chain(&pod.status.init_container_statuses).map(|s| (s.name.as_str(), u32::try_from(s.restart_count).unwrap_or(0))).collect();
    let mut to_terminate = Vec::new();
    let mut infos: HashMap<String, Option<ContainerInfo>> = HashMap::new();

    // The pod's sandbox: `Some(current)` when known (none: there is none running), `None` while a
    // start is making one (then nothing is judged by it in this pass).
    let cell = env.sandbox_cell(&pod.metadata.uid);
    let sandbox: Option<Option<Sandbox>> = match cell.try_lock() {
        Ok(mut known) => {
            // A sandbox made after the listing is not in it yet; one made before must be running.
            let alive = |s: &Sandbox, made: Instant| sandboxes.iter().find(|c| c.id == s.id).map_or(made >= env.listed_at, |c| c.running);
            if known.as_ref().is_some_and(|(s, made)| !alive(s, *made)) {
                *known = None;
            }
            if known.is_none()
                && let Some(c) = sandboxes.iter().filter(|c| c.running && c.ip.is_some()).max_by_key(|c| c.started_at.clone())
                && let Some(ip) = c.ip
            {
                // Adopted: made by this agent before it restarted.
                *known = Some((Sandbox { id: c.id.clone(), ip }, env.listed_at));
            }
            Some(known.as_ref().map(|(s, _)| s.clone()))
        }
        Err(_) => None,
    };
    if let Some(current) = &sandbox {
        for other in sandboxes.iter().filter(|c| current.as_ref().is_none_or(|s| s.id != c.id)) {
            to_terminate.push(Stop::plain(&other.id, Duration::ZERO, true));
        }
    }
    if let Some(why) = stop_reason(env, track, pod, actual.is_empty(), now) {
        return stop_failed(pod, track, actual, sandboxes, grace, to_terminate, env.node_ip, why);
    }
    // The pod's volumes, made or brought up to date (a changed ConfigMap reaches the files of
    // running containers this way); a container that needs one that cannot be made waits.
    let current_ip = sandbox.clone().flatten().map(|s| s.ip);
    let volumes = if pod.spec.volumes.is_empty() { Ok(HashMap::new()) } else { podconfig::set_up(env.volumes, pod, env.sources, &env.pod_context(current_ip)) };
    let in_sandbox = |c: &ContainerInfo| match &sandbox {
        Some(Some(s)) => c.labels.get(labels::SANDBOX_ID) == Some(&s.id),
        Some(None) => false,
        None => true,
    };

    // Init containers run one after another, each to success, before the app containers (a
    // sidecar, `restartPolicy: Always`, only has to have started, and then runs beside them); one
    // that succeeded is left as it is. A new sandbox runs them again, as kubelet does.
    let mut active: Vec<(&Container, &str)> = Vec::new();
    let mut init = Init::Done;
    for spec in &pod.spec.init_containers {
        let hash = spec_hash(spec);
        let mine = |c: &&ContainerInfo| in_sandbox(c) && c.labels.get(labels::SPEC_HASH) == Some(&hash);
        let found = actual.get(&spec.name).map(Vec::as_slice).unwrap_or_default();
        if PodSpec::is_sidecar(spec) {
            active.push((spec, "Always"));
            // Once it has run, its restarts do not hold the app containers back.
            if found.iter().any(|c| mine(&c)) {
                continue;
            }
            init = Init::Running;
            break;
        }
        if let Some(done) = found.iter().filter(mine).filter(|c| !c.running && c.exit_code == Some(0)).max_by_key(|c| c.started_at.clone()).cloned() {
            for other in actual.remove(&spec.name).unwrap_or_default().into_iter().filter(|c| c.id != done.id) {
                to_terminate.push(Stop::plain(&other.id, grace, true));
            }
            let ct = track.containers.entry(spec.name.clone()).or_insert_with(|| ContainerTrack::new(known_restarts.get(spec.name.as_str()).copied().unwrap_or(0)));
            ct.waiting = None;
            ct.last_terminated = None;
            infos.insert(spec.name.clone(), Some(done));
            continue;
        }
        let failed = policy == "Never" && found.iter().filter(mine).any(|c| !c.running && c.exit_code.unwrap_or(-1) != 0);
        init = if failed { Init::Failed } else { Init::Running };
        active.push((spec, if policy == "Never" { "Never" } else { "OnFailure" }));
        break;
    }
    if init == Init::Done {
        active.extend(specs.iter().map(|c| (c, policy)));
    }
    for (spec, policy) in active {
        let cname = spec.name.clone();
        let ct = track.containers.entry(cname.clone()).or_insert_with(|| ContainerTrack::new(known_restarts.get(cname.as_str()).copied().unwrap_or(0)));
        let hash = spec_hash(spec);
        let mut found = actual.remove(&cname).unwrap_or_default();
        // A container of an older spec is replaced; so is one outside the pod's sandbox (it died,
        // and the containers are made again in a new one, a restart each, as kubelet does).
        found.retain(|c| {
            let same = c.labels.get(labels::SPEC_HASH) == Some(&hash);
            let here = in_sandbox(c);
            if !same || !here {
                to_terminate.push(Stop::plain(&c.id, grace, true));
            }
            if same && !here && c.running {
                ct.restart_count += 1;
            }
            same && here
        });
        found.sort_by_key(|c| (c.running, c.started_at.clone()));
        let current = found.pop();
        let start_key = format!("{}/{cname}", pod.metadata.uid);
        let mut just_started = false;
        if current.is_some() {
            let mut starting = env.starting.lock().unwrap_or_else(|e| e.into_inner());
            if matches!(starting.get(&start_key), Some(Start::Done(..)))
                && let Some(Start::Done(_, Ok(()))) = starting.remove(&start_key)
            {
                just_started = true;
                env.happen(pod, &cname, NORMAL, "Created", format!("Created container {cname}"));
                env.happen(pod, &cname, NORMAL, "Started", format!("Started container {cname}"));
            }
        }
        // The newest exited container before the current one stays, for `logs --previous` (as
        // kubelet keeps one dead container per container); any older one goes.
        let previous = if current.is_some() { found.iter().rposition(|c| !c.running) } else { None };
        for (i, extra) in found.into_iter().enumerate() {
            if Some(i) != previous {
                to_terminate.push(Stop::plain(&extra.id, grace, true));
            }
        }
        if current.as_ref().is_some_and(|c| env.terminating.lock().unwrap_or_else(|e| e.into_inner()).contains(&c.id)) {
            // Being stopped (liveness failure, new spec): look again once it is gone.
            infos.insert(cname, None);
            continue;
        }
        match current {
            Some(c) if c.running => {
                if ct.container_id.as_deref() != Some(&c.id) {
                    // Started by us just now, or adopted after an agent restart.
                    ct.container_id = Some(c.id.clone());
                    ct.running_since = Some(now);
                    ct.liveness = HealthTrack { passing: true, ..Default::default() };
                    ct.readiness = HealthTrack::default();
                    ct.startup = HealthTrack::default();
                    if let Some(hook) = spec.lifecycle.as_ref().and_then(|l| l.post_start.clone()).filter(|_| just_started) {
                        run_post_start(env, pod, spec, &c, hook);
                    }
                }
                ct.waiting = None;
                ct.restart_at = None;
                let since = ct.running_since.unwrap_or(now);
                if now.duration_since(since) >= BACKOFF_RESET {
                    ct.backoff = BACKOFF_START;
                }
                if let Some(message) = env.hook_failures.lock().unwrap_or_else(|e| e.into_inner()).remove(&c.id) {
                    // Its postStart handler failed: the container is killed (and restarted by its policy).
                    env.happen(pod, &cname, WARNING, "FailedPostStartHook", message);
                    to_terminate.push(Stop::hooked(&c, spec, grace, false));
                    infos.insert(cname, Some(c));
                    continue;
                }
                // Liveness and readiness wait for the startup probe, which restarts the container
                // once it has failed `failureThreshold` times.
                step_probe(env.runtime, spec.startup_probe.as_ref(), &mut ct.startup, since, spec, &c, now).await;
                if !ct.startup.passing {
                    if spec.startup_probe.as_ref().is_some_and(|p| ct.startup.failures >= p.failures()) {
                        env.happen(pod, &cname, WARNING, "Unhealthy", "Startup probe failed".into());
                        env.happen(pod, &cname, NORMAL, "Killing", format!("Container {cname} failed startup probe, will be restarted"));
                        to_terminate.push(Stop::hooked(&c, spec, grace, false));
                        ct.startup = HealthTrack::default();
                    }
                    ct.readiness = HealthTrack::default();
                    infos.insert(cname, Some(c));
                    continue;
                }
                step_probe(env.runtime, spec.liveness_probe.as_ref(), &mut ct.liveness, since, spec, &c, now).await;
                step_probe(env.runtime, spec.readiness_probe.as_ref(), &mut ct.readiness, since, spec, &c, now).await;
                if !ct.liveness.passing {
                    tracing::info!(pod = %pod.metadata.name, container = %cname, "liveness probe failed; restarting");
                    env.happen(pod, &cname, WARNING, "Unhealthy", "Liveness probe failed".into());
                    env.happen(pod, &cname, NORMAL, "Killing", format!("Container {cname} failed liveness probe, will be restarted"));
                    to_terminate.push(Stop::hooked(&c, spec, grace, false));
                    ct.liveness = HealthTrack { passing: true, ..Default::default() };
                }
                infos.insert(cname, Some(c));
            }
            Some(c) => {
                // Exited.
                let exit = c.exit_code.unwrap_or(-1);
                let mut terminated = terminated_state(&c);
                if terminated.message.is_none() && exit != 0 && spec.termination_message_policy.as_deref() == Some("FallbackToLogsOnError") {
                    // The end of its log (80 lines, 2 KiB at most), as kubelet falls back.
                    if let Ok(log) = env.runtime.logs(&c.id, 80).await {
                        let start = log.len().saturating_sub(2048);
                        terminated.message = Some(log[log.ceil_char_boundary(start)..].to_string()).filter(|m| !m.is_empty());
                    }
                }
                ct.last_terminated = Some(terminated);
                ct.readiness = HealthTrack::default();
                let restart = match policy {
                    "Never" => false,
                    "OnFailure" => exit != 0,
                    _ => true,
                };
                // A restart already under way (the exited container's removal failed): wait for it.
                let restarting = matches!(env.starting.lock().unwrap_or_else(|e| e.into_inner()).get(&start_key), Some(Start::Running));
                if restart && restarting {
                    infos.insert(cname, None);
                } else if restart {
                    let at = *ct.restart_at.get_or_insert_with(|| now + ct.backoff);
                    if now >= at {
                        ct.restart_count += 1;
                        ct.backoff = (ct.backoff * 2).min(BACKOFF_CAP);
                        ct.restart_at = None;
                        // The exited container stays as the previous one (removed at the next
                        // restart, see above).
                        start(env, start_key, pod, spec, ct, &volumes).await;
                        infos.insert(cname, None);
                    } else {
                        if ct.waiting.as_ref().is_none_or(|(reason, _)| reason != "CrashLoopBackOff") {
                            let message = format!("Back-off restarting failed container {cname} in pod {}_{}({})", pod.metadata.name, pod.metadata.namespace_or_default(), pod.metadata.uid);
                            env.happen(pod, &cname, WARNING, "BackOff", message);
                        }
                        ct.waiting = Some(("CrashLoopBackOff".into(), format!("back-off {}s restarting failed container {cname}", ct.backoff.as_secs())));
                        infos.insert(cname, Some(c));
                    }
                } else {
                    ct.waiting = None;
                    infos.insert(cname, Some(c));
                }
            }
            None => {
                start(env, start_key, pod, spec, ct, &volumes).await;
                infos.insert(cname, None);
            }
        }
    }
    // Containers no longer in the spec.
    for rest in actual.values().flatten() {
        to_terminate.push(Stop::plain(&rest.id, grace, true));
    }
    let pod_ip = sandbox.flatten().map(|s| s.ip);
    let status = pod_status(pod, track, &infos, init, env.node_ip, pod_ip);
    // Written when it changed, or when the stored status is not ours (a fresh agent, someone
    // else's write, or our write not yet seen by the watch).
    if track.last_status.as_ref() == Some(&status) && pod.status == status {
        return (None, to_terminate);
    }
    (Some(status), to_terminate)
}

/// The reason and message of a pod stopped for its `activeDeadlineSeconds`, in kubelet's words.
const DEADLINE_EXCEEDED: (&str, &str) = ("DeadlineExceeded", "Pod was active on the node longer than the specified deadline");

/// The reason of a pod the node refuses for a taint it does not tolerate.
const TAINTED: &str = "TaintToleration";

/// Why a pod new to the node (never started: no `startTime`, no container) is refused, as
/// kubelet's admission refuses what the scheduler would not have placed here: a `NoSchedule` or
/// `NoExecute` taint of the node it does not tolerate (a pod bound by `nodeName` to a master, say).
fn refused_by_taints(taints: &[Taint], pod: &Pod, no_containers: bool) -> Option<(String, String)> {
    if pod.status.start_time.is_some() || !no_containers {
        return None;
    }
    let taint = taints
        .iter()
        .filter(|t| t.effect == "NoSchedule" || t.effect == "NoExecute")
        .find(|t| !pod.spec.tolerations.iter().any(|tol| tol.tolerates(&t.key, t.value.as_deref(), &t.effect)))?;
    let shown = format!("{{{}: {}}}", taint.key, taint.value.as_deref().unwrap_or(""));
    Some((TAINTED.into(), format!("Pod was rejected: the node had taint {shown}, that the pod didn't tolerate")))
}

/// The reason of a pod evicted by its node.
const EVICTED: &str = "Evicted";

/// How often a pod's emptyDir usage is measured against its `sizeLimit`.
const USAGE_CHECK: Duration = Duration::from_secs(5);

/// Why the pod must stop for good, `(reason, message)`: it was stopped for good before (its
/// status says so, or this agent evicted it and has not seen that written yet); it is new here and
/// does not tolerate the node's taints ([`refused_by_taints`]); it ran longer than its
/// `activeDeadlineSeconds` (counted from its start on this node, `status.startTime`, as kubelet
/// counts it); or an emptyDir holds more than its `sizeLimit` (evicted, measured every
/// [`USAGE_CHECK`]).
fn stop_reason<R: ContainerRuntime>(env: &SyncEnv<'_, R>, track: &mut PodTrack, pod: &Pod, no_containers: bool, now: Instant) -> Option<(String, String)> {
    if let Some(reason) = pod.status.reason.as_deref().filter(|r| [TAINTED, DEADLINE_EXCEEDED.0, EVICTED].contains(r))
        && pod.status.phase.as_deref() == Some("Failed")
    {
        return Some((reason.into(), pod.status.message.clone().unwrap_or_default()));
    }
    if let Some(message) = &track.evicted {
        return Some((EVICTED.into(), message.clone()));
    }
    if let Some(refused) = refused_by_taints(env.taints, pod, no_containers) {
        return Some(refused);
    }
    if let Some(deadline) = pod.spec.active_deadline_seconds
        && track.start_time.age() >= Duration::from_secs(u64::try_from(deadline).unwrap_or(0))
    {
        return Some((DEADLINE_EXCEEDED.0.into(), DEADLINE_EXCEEDED.1.into()));
    }
    let limited = pod.spec.volumes.iter().any(|v| v.empty_dir.as_ref().is_some_and(|e| e.size_limit.is_some()));
    if limited && track.usage_checked.is_none_or(|at| now.duration_since(at) >= USAGE_CHECK) {
        track.usage_checked = Some(now);
        if let Some(message) = podconfig::over_size_limit(env.volumes, pod) {
            tracing::info!(pod = %pod.metadata.name, "evicting: {message}");
            env.happen(pod, "", WARNING, EVICTED, message.clone());
            track.evicted = Some(message.clone());
            return Some((EVICTED.into(), message));
        }
    }
    None
}

/// A pod that must stop for good: every container and then the sandbox stopped, nothing started
/// again, and the pod `Failed` with `reason` and `message`; the containers' states follow what
/// they became.
#[allow(clippy::too_many_arguments)]
fn stop_failed(
    pod: &Pod,
    track: &mut PodTrack,
    actual: HashMap<String, Vec<ContainerInfo>>,
    sandboxes: Vec<ContainerInfo>,
    grace: Duration,
    mut to_terminate: Vec<Stop>,
    node_ip: IpAddr,
    (reason, message): (String, String),
) -> (Option<PodStatus>, Vec<Stop>) {
    let running: Vec<&ContainerInfo> = actual.values().flatten().filter(|c| c.running).collect();
    for c in &running {
        let spec = c.labels.get(labels::CONTAINER).and_then(|name| pod.spec.containers.iter().chain(&pod.spec.init_containers).find(|s| &s.name == name));
        to_terminate.push(match spec {
            Some(spec) => Stop::hooked(c, spec, grace, false),
            None => Stop::plain(&c.id, grace, false),
        });
    }
    if running.is_empty() {
        to_terminate.extend(sandboxes.iter().filter(|c| c.running).map(|c| Stop::plain(&c.id, Duration::ZERO, false)));
    }
    let state_of = |spec: &Container| -> ContainerStatus {
        let newest = actual.get(&spec.name).and_then(|cs| cs.iter().max_by_key(|c| c.started_at.clone()));
        let before = pod.status.container_statuses.iter().chain(&pod.status.init_container_statuses).find(|s| s.name == spec.name);
        let state = match newest {
            Some(c) if c.running => ContainerState { running: Some(ContainerStateRunning { started_at: c.started_at.as_deref().and_then(|t| Time::parse(t).ok()), ..Default::default() }), ..Default::default() },
            Some(c) => ContainerState { terminated: Some(terminated_state(c)), ..Default::default() },
            None => before.map(|b| b.state.clone()).filter(|s| s.terminated.is_some()).unwrap_or_else(|| ContainerState {
                terminated: Some(ContainerStateTerminated { exit_code: 137, reason: Some("ContainerStatusUnknown".into()), ..Default::default() }),
                ..Default::default()
            }),
        };
        ContainerStatus {
            name: spec.name.clone(),
            image: spec.image.clone(),
            state,
            restart_count: before.map_or(0, |b| b.restart_count),
            container_id: newest.map(|c| format!("docker://{}", c.id)),
            ..Default::default()
        }
    };
    let status = PodStatus {
        phase: Some("Failed".into()),
        reason: Some(reason),
        message: Some(message),
        conditions: vec![held_condition(pod, "PodScheduled", true), held_condition(pod, "ContainersReady", false), held_condition(pod, "Ready", false)],
        container_statuses: pod.spec.containers.iter().map(state_of).collect(),
        init_container_statuses: if pod.spec.init_containers.is_empty() { Vec::new() } else { pod.spec.init_containers.iter().map(state_of).collect() },
        qos_class: Some(pod.spec.qos_class().into()),
        host_ip: Some(node_ip.to_string()),
        pod_ip: pod.status.pod_ip.clone(),
        pod_ips: pod.status.pod_ips.clone(),
        start_time: Some(track.start_time),
        ..Default::default()
    };
    if track.last_status.as_ref() == Some(&status) && pod.status == status {
        return (None, to_terminate);
    }
    (Some(status), to_terminate)
}

/// Creates and starts a container in the background (a start already under way is left to
/// finish); records in `ct.waiting` where it stands, or why it cannot start.
async fn start<R: ContainerRuntime>(env: &SyncEnv<'_, R>, key: String, pod: &Pod, spec: &Container, ct: &mut ContainerTrack, volumes: &Result<HashMap<String, PathBuf>, String>) {
    {
        let mut starting = env.starting.lock().unwrap_or_else(|e| e.into_inner());
        match starting.get(&key) {
            Some(Start::Running) => return,
            // Started after the containers were listed: the next sync sees it.
            Some(Start::Done(at, Ok(()))) if *at >= env.listed_at => return,
            Some(Start::Done(_, Err(why))) => {
                if why.0 == "ErrImagePull" {
                    // Tried again after a back-off (10 s doubling to 300 s), as kubelet does.
                    env.happen(pod, &spec.name, WARNING, "Failed", why.1.clone());
                    env.happen(pod, &spec.name, WARNING, "Failed", "Error: ErrImagePull".into());
                    ct.pull_retry_at = Some(Instant::now() + ct.pull_backoff);
                    ct.pull_failed_at = Some(Instant::now());
                    ct.pull_backoff = (ct.pull_backoff * 2).min(BACKOFF_CAP);
                } else if why.0 == "ContainerCreating" {
                    env.happen(pod, &spec.name, WARNING, "FailedCreatePodSandBox", format!("Failed to create pod sandbox: {}", why.1));
                } else {
                    env.happen(pod, &spec.name, WARNING, "Failed", format!("Error: {}", why.1));
                }
                ct.waiting = Some(why.clone());
                starting.remove(&key);
                return;
            }
            // Started, and gone since: start again.
            Some(Start::Done(_, Ok(()))) | None => {
                if starting.remove(&key).is_some() {
                    ct.pull_backoff = BACKOFF_START;
                    ct.pull_retry_at = None;
                }
            }
        }
    }
    // Its configuration first, as kubelet checks it: a missing ConfigMap, Secret or key leaves the
    // container waiting (and the next sync tries again, so that adding the key starts it).
    let dirs = match volumes {
        Ok(dirs) => dirs,
        Err(message) => {
            if ct.waiting.as_ref().is_none_or(|(_, m)| m != message) {
                env.happen(pod, &spec.name, WARNING, "FailedMount", message.clone());
            }
            ct.waiting = Some(("ContainerCreating".into(), message.clone()));
            return;
        }
    };
    let config = podconfig::container_env(pod, spec, env.sources, &env.pod_context(None)).and_then(|_| podconfig::mounts(spec, dirs));
    let mounts = match config {
        Ok(mounts) => mounts,
        Err(message) => {
            if ct.waiting.as_ref().is_none_or(|(_, m)| *m != message) {
                env.happen(pod, &spec.name, WARNING, "Failed", format!("Error: {message}"));
            }
            ct.waiting = Some(("CreateContainerConfigError".into(), message));
            return;
        }
    };
    let image = spec.image.as_str();
    let policy = images::pull_policy(spec);
    if ct.pull_retry_at.is_some_and(|at| Instant::now() < at) {
        // The failure itself (`ErrImagePull`, the registry's words) stays shown for a while, as it
        // does until kubelet's next sync of the pod (ours come every second and on every change).
        if ct.pull_failed_at.is_some_and(|t| t.elapsed() < PULL_ERROR_SHOWN) {
            return;
        }
        if ct.waiting.as_ref().is_none_or(|(r, _)| r != "ImagePullBackOff") {
            env.happen(pod, &spec.name, NORMAL, "BackOff", format!("Back-off pulling image {image:?}"));
        }
        ct.waiting = Some(("ImagePullBackOff".into(), format!("Back-off pulling image {image:?}")));
        return;
    }
    let present = match env.runtime.image_user(image).await {
        Ok(user) => user,
        Err(e) => {
            ct.waiting = Some(("RuntimeUnavailable".into(), e.to_string()));
            return;
        }
    };
    // A pull when the policy asks (`Always`, or `IfNotPresent` without the image), with the
    // credentials of the pod's `imagePullSecrets` for the image's registry; in the background,
    // before the sandbox, with the security check once the image's user is known.
    let pull = (policy == "Always" || (policy == "IfNotPresent" && present.is_none())).then(|| {
        let registry = images::registry_of(image);
        let ns = pod.metadata.namespace_or_default();
        pod.spec.image_pull_secrets.iter().find_map(|r| {
            let key = SourceKey { secret: true, namespace: ns.to_string(), name: r.name.clone() };
            images::credentials(env.sources.get(&key)?.as_ref()?.get(".dockerconfigjson")?, registry)
        })
    });
    if pull.is_some() {
        env.happen(pod, &spec.name, NORMAL, "Pulling", format!("Pulling image {image:?}"));
    }
    let security = match present.filter(|_| pull.is_none()) {
        None if pull.is_some() => None,
        // The image is there, as kubelet words it for `IfNotPresent`.
        Some(user) => Some(match podconfig::security(pod, spec, &user) {
            Ok(security) => {
                env.happen(pod, &spec.name, NORMAL, "Pulled", format!("Container image {image:?} already present on machine"));
                security
            }
            Err(message) => {
                if ct.waiting.as_ref().is_none_or(|(_, m)| *m != message) {
                    env.happen(pod, &spec.name, WARNING, "Failed", format!("Error: {message}"));
                }
                ct.waiting = Some(("CreateContainerConfigError".into(), message));
                return;
            }
        }),
        None => {
            let reason = "ErrImageNeverPull";
            let message = format!("Container image {image:?} is not present with pull policy of Never");
            if ct.waiting.as_ref().is_none_or(|(r, _)| r != reason) {
                env.happen(pod, &spec.name, WARNING, reason, message.clone());
            }
            ct.waiting = Some((reason.into(), message));
            return;
        }
    };
    ct.container_id = None; // set when seen running, which resets probes
    ct.waiting = Some(("ContainerCreating".into(), String::new()));
    env.starting.lock().unwrap_or_else(|e| e.into_inner()).insert(key.clone(), Start::Running);
    let (runtime, starting, mut container) = (env.shared.clone(), env.starting.clone(), container_spec(env.prefix, pod, spec, ct.restart_count));
    container.mounts = mounts;
    container.security = security.clone().unwrap_or_default();
    // The termination-message file: made per start, writable by any user of the pod.
    let log_dir = env.volumes.disk.join(&pod.metadata.uid).join("containers").join(&spec.name);
    let log_file = log_dir.join(format!("{}-{}", ct.restart_count, hex::encode(rand::random::<[u8; 4]>())));
    let made = std::fs::create_dir_all(&log_dir).and_then(|()| std::fs::write(&log_file, b"")).and_then(|()| {
        use std::os::unix::fs::PermissionsExt;
        std::fs::set_permissions(&log_file, std::fs::Permissions::from_mode(0o666))
    });
    match made {
        Ok(()) => {
            let path = spec.termination_message_path.clone().filter(|p| !p.is_empty()).unwrap_or_else(|| "/dev/termination-log".into());
            container.mounts.push(super::runtime::Mount { host_path: log_file.clone(), container_path: path, read_only: false });
            container.labels.insert(labels::TERMINATION_LOG.into(), log_file.display().to_string());
        }
        Err(e) => tracing::warn!(path = %log_file.display(), error = %e, "making a termination-message file"),
    }
    let (cell, sandbox_spec) = (env.sandbox_cell(&pod.metadata.uid), sandbox_spec(env.prefix, pod));
    // The environment is made once the pod's address is known (`status.podIP`), from the sources
    // as they are now.
    let own: Sources = podconfig::referenced(pod).into_iter().filter_map(|k| Some((k.clone(), env.sources.get(&k)?.clone()))).collect();
    let (pod_for_env, spec_for_env, context) = (pod.clone(), spec.clone(), env.pod_context(None));
    let always = policy == "Always";
    let ecr = env.ecr.cloned();
    let task = tokio::spawn(async move {
        let outcome = async {
            if let Some(auth) = pull {
                let image = spec_for_env.image.as_str();
                // The pod's pull secret's credentials first, then, for an ECR registry, the node's
                // own token (kubelet's ECR credential provider: kubelet tries each credential
                // that matches the registry until one pulls). With no secret, ECR's refusal to give
                // a token is the pull's error.
                let registry = images::registry_of(image);
                let node_token = || async {
                    match &ecr {
                        Some(ecr) => ecr.for_registry(registry).await,
                        None => None,
                    }
                };
                let pulled = match auth {
                    Some(secret) => match runtime.pull(image, Some(&secret)).await {
                        Err(e) => match node_token().await {
                            Some(Ok(node)) => runtime.pull(image, Some(&node)).await,
                            _ => Err(e),
                        },
                        pulled => pulled,
                    },
                    None => match node_token().await {
                        Some(Ok(node)) => runtime.pull(image, Some(&node)).await,
                        Some(Err(e)) => return Err(("ErrImagePull".to_string(), format!("Failed to pull image {image:?}: getting the node's credentials for Amazon ECR: {e}"))),
                        None => runtime.pull(image, None).await,
                    },
                };
                if let Err(e) = pulled {
                    // `Always`, an image named without a registry (Docker Hub's) that the node has and
                    // Docker Hub does not give: the node's copy (a deliberate difference from kubelet,
                    // for images side-loaded with `image load`). A named registry's refusal stands, so
                    // a pod without its credentials never runs a private image another pod pulled.
                    let side_loaded = always && images::registry_of(image) == "docker.io";
                    let local = if side_loaded { runtime.image_user(image).await.ok().flatten() } else { None };
                    if local.is_none() {
                        return Err(("ErrImagePull".to_string(), format!("Failed to pull image {image:?}: {e}")));
                    }
                    tracing::info!(image, error = %e, "pulling failed; the image on the node is used");
                }
                let user = runtime.image_user(image).await.map_err(|e| ("ErrImagePull".to_string(), e.to_string()))?.unwrap_or_default();
                container.security = podconfig::security(&pod_for_env, &spec_for_env, &user).map_err(|m| ("CreateContainerConfigError".to_string(), m))?;
            }
            // The pod's first container start makes its sandbox; the others wait for it.
            let sandbox = {
                let mut known = cell.lock().await;
                match known.as_ref() {
                    Some((s, _)) => s.clone(),
                    None => {
                        let made = runtime.run_sandbox(&sandbox_spec).await.map_err(|e| ("ContainerCreating".to_string(), e.to_string()))?;
                        *known = Some((made.clone(), Instant::now()));
                        made
                    }
                }
            };
            let env = podconfig::container_env(&pod_for_env, &spec_for_env, &own, &PodContext { pod_ip: Some(sandbox.ip), ..context })
                .map_err(|e| ("CreateContainerConfigError".to_string(), e))?;
            container.command = spec_for_env.command.iter().map(|c| podconfig::expand(c, &env)).collect();
            container.args = spec_for_env.args.iter().map(|a| podconfig::expand(a, &env)).collect();
            container.env = env;
            container.sandbox = Some(sandbox);
            runtime.run(&container).await.map(|_| ()).map_err(|e| ("CreateContainerError".to_string(), e.to_string()))
        }
        .await;
        starting.lock().unwrap_or_else(|e| e.into_inner()).insert(key, Start::Done(Instant::now(), outcome));
    });
    env.started.lock().unwrap_or_else(|e| e.into_inner()).push(task);
}

/// How an exited container ended, as its `terminated` state.
fn terminated_state(c: &ContainerInfo) -> ContainerStateTerminated {
    let exit = c.exit_code.unwrap_or(-1);
    let time = |t: &Option<String>| t.as_deref().and_then(|t| Time::parse(t).ok());
    ContainerStateTerminated {
        exit_code: i32::try_from(exit).unwrap_or(-1),
        reason: Some(if c.oom_killed { "OOMKilled" } else if exit == 0 { "Completed" } else { "Error" }.into()),
        started_at: time(&c.started_at),
        finished_at: time(&c.finished_at),
        container_id: Some(format!("docker://{}", c.id)),
        message: termination_message(c),
        ..Default::default()
    }
}

/// What the container wrote to its termination-message file (4 KiB at most).
fn termination_message(c: &ContainerInfo) -> Option<String> {
    use std::io::Read;
    let path = c.labels.get(labels::TERMINATION_LOG)?;
    let mut text = String::new();
    std::fs::File::open(path).ok()?.take(4096).read_to_string(&mut text).ok()?;
    Some(text).filter(|t| !t.is_empty())
}

/// One container's status from what the sync saw: the status, whether it is ready, whether it
/// has started (ran at least once).
fn container_status(spec: &Container, ct: &ContainerTrack, info: Option<&ContainerInfo>) -> (ContainerStatus, bool, bool) {
    let waiting = |reason: &str, message: &str| ContainerState {
        waiting: Some(ContainerStateWaiting { reason: Some(reason.into()), message: Some(message.to_string()).filter(|m| !m.is_empty()), ..Default::default() }),
        ..Default::default()
    };
    let (state, ready, started) = match (info, &ct.waiting) {
        (Some(c), None) if c.running => {
            let started_at = c.started_at.as_deref().and_then(|t| Time::parse(t).ok());
            (ContainerState { running: Some(ContainerStateRunning { started_at, ..Default::default() }), ..Default::default() }, ct.readiness.passing, true)
        }
        (Some(c), None) => {
            let terminated = ct.last_terminated.clone().unwrap_or_else(|| terminated_state(c));
            (ContainerState { terminated: Some(terminated), ..Default::default() }, false, true)
        }
        (_, Some((reason, message))) => (waiting(reason, message), false, ct.last_terminated.is_some()),
        (None, None) => (waiting("ContainerCreating", ""), false, false),
    };
    let last_state = match &ct.last_terminated {
        Some(t) if state.terminated.is_none() => ContainerState { terminated: Some(t.clone()), ..Default::default() },
        _ => ContainerState::default(),
    };
    let running = state.running.is_some();
    let status = ContainerStatus {
        name: spec.name.clone(),
        image: spec.image.clone(),
        ready,
        restart_count: i32::try_from(ct.restart_count).unwrap_or(i32::MAX),
        started: Some(running && ct.startup.passing),
        state,
        last_state,
        container_id: info.map(|c| format!("docker://{}", c.id)),
        image_id: info.filter(|c| !c.image_id.is_empty()).map(|c| format!("docker://{}", c.image_id)).unwrap_or_default(),
        ..Default::default()
    };
    (status, ready, started)
}

/// Where a pod's init containers stand.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Init {
    /// Every init container has succeeded (sidecars: started): the app containers run.
    Done,
    /// One is running or waiting to.
    Running,
    /// One failed and will not be restarted (`restartPolicy: Never`): the pod has failed.
    Failed,
}

/// A pod condition of `kind`, keeping its transition time while its status holds.
fn held_condition(pod: &Pod, kind: &str, ok: bool) -> PodCondition {
    let status = if ok { "True" } else { "False" };
    let since = pod.status.conditions.iter().find(|c| c.condition_type == kind && c.status == status).and_then(|c| c.last_transition_time);
    PodCondition { condition_type: kind.into(), status: status.into(), last_transition_time: Some(since.unwrap_or_else(Time::now)), ..Default::default() }
}

/// The pod's status from what the sync saw.
fn pod_status(pod: &Pod, track: &PodTrack, infos: &HashMap<String, Option<ContainerInfo>>, init: Init, node_ip: IpAddr, pod_ip: Option<IpAddr>) -> PodStatus {
    let specs = &pod.spec.containers;
    let mut init_statuses = Vec::new();
    let mut sidecars_ready = true;
    for spec in &pod.spec.init_containers {
        let status = match track.containers.get(&spec.name) {
            Some(ct) => {
                let (status, ready, _) = container_status(spec, ct, infos.get(&spec.name).and_then(Option::as_ref));
                if PodSpec::is_sidecar(spec) {
                    sidecars_ready &= ready;
                }
                status
            }
            None => ContainerStatus { name: spec.name.clone(), image: spec.image.clone(), state: pod_initializing(), ..Default::default() },
        };
        init_statuses.push(status);
    }
    let mut statuses = Vec::new();
    let (mut all_ready, mut any_running, mut all_terminated, mut any_failed, mut all_started) = (sidecars_ready, false, true, false, true);
    for spec in specs {
        let Some(ct) = track.containers.get(&spec.name).filter(|_| init == Init::Done) else {
            statuses.push(ContainerStatus { name: spec.name.clone(), image: spec.image.clone(), state: pod_initializing(), ..Default::default() });
            all_ready = false;
            continue;
        };
        let info = infos.get(&spec.name).and_then(Option::as_ref);
        let (status, ready, started) = container_status(spec, ct, info);
        if status.state.terminated.is_some() {
            any_failed |= info.and_then(|c| c.exit_code).unwrap_or(-1) != 0;
        }
        any_running |= status.state.running.is_some();
        all_ready &= ready;
        all_terminated &= status.state.terminated.is_some();
        all_started &= started;
        statuses.push(status);
    }
    let phase = if init == Init::Failed {
        "Failed"
    } else if init == Init::Running {
        "Pending"
    } else if all_terminated && !specs.is_empty() && pod.spec.restart_policy() != "Always" {
        if any_failed { "Failed" } else { "Succeeded" }
    } else if any_running || (all_started && !specs.is_empty()) {
        "Running"
    } else {
        "Pending"
    };
    let ready = all_ready && !specs.is_empty();
    // Keep each condition's transition time while its status holds.
    PodStatus {
        phase: Some(phase.into()),
        conditions: vec![
            held_condition(pod, "PodScheduled", true),
            held_condition(pod, "Initialized", init == Init::Done),
            held_condition(pod, "ContainersReady", ready),
            held_condition(pod, "Ready", ready),
        ],
        container_statuses: statuses,
        init_container_statuses: init_statuses,
        qos_class: Some(pod.spec.qos_class().into()),
        host_ip: Some(node_ip.to_string()),
        pod_ip: pod_ip.map(|ip| ip.to_string()),
        pod_ips: pod_ip.map(|ip| PodIp { ip: ip.to_string(), ..Default::default() }).into_iter().collect(),
        start_time: Some(track.start_time),
        ..Default::default()
    }
}

/// A container that waits for the pod's init containers.
fn pod_initializing() -> ContainerState {
    ContainerState { waiting: Some(ContainerStateWaiting { reason: Some("PodInitializing".into()), ..Default::default() }), ..Default::default() }
}

/// Reads the pods last saved by [`save_checkpoint`].
pub fn load_checkpoint(path: &Path) -> Option<Vec<Pod>> {
    serde_json::from_slice(&std::fs::read(path).ok()?).ok()
}

/// Saves the pods bound to the node (write to a temporary file, then rename), so that an agent
/// restarted while the API server is unreachable keeps running and restarting them.
pub fn save_checkpoint(path: &Path, pods: &[Pod]) -> std::io::Result<()> {
    if let Some(dir) = path.parent() {
        std::fs::create_dir_all(dir)?;
    }
    let tmp = path.with_extension("tmp");
    std::fs::write(&tmp, serde_json::to_vec(pods).map_err(std::io::Error::other)?)?;
    std::fs::rename(&tmp, path)
}

/// How often a node's pods are synced without a change (probes and crash-loop back-offs are
/// timed in seconds).
pub const SYNC_EVERY: Duration = Duration::from_secs(1);

/// How many pod status writes one sync has waiting on the API server at once.
const STATUS_WRITES_IN_FLIGHT: usize = 8;

/// The back-off of a pod sync that failed (the container runtime did not answer): 2 s, doubling
/// up to 16 s, so that a Docker restart does not make the agent spin and is noticed soon.
pub const RUNTIME_BACKOFF: Backoff = Backoff { initial: Duration::from_secs(2), max: Duration::from_secs(16) };

/// Pod sync's state and inputs, shared by its reconciles.
pub struct Context<C, R: ContainerRuntime> {
    pub client: C,
    /// The pods bound to the node.
    pub pods: Store<Pod>,
    /// Events about the node's pods, as the kubelet reports them (`kubelet` on this node).
    events: Recorder<C>,
    sync: tokio::sync::Mutex<PodSync<R>>,
    checkpoint: Option<PathBuf>,
    /// The store revision last saved to the checkpoint.
    saved: std::sync::atomic::AtomicU64,
    /// The ConfigMaps and Secrets the pods name, with when each was fetched.
    fetched: tokio::sync::Mutex<HashMap<SourceKey, (Instant, Option<SourceData>)>>,
}

impl<C: Client, R: ContainerRuntime> Context<C, R> {
    /// Pod sync for `node_name` on `runtime`, its pods reflected from `client`, the last known pods
    /// kept in `checkpoint`.
    pub fn new(client: C, sync: PodSync<R>, node_name: &str, checkpoint: Option<PathBuf>) -> Self {
        let pods = Store::reflect(client.clone(), None, ListOptions::fields(format!("spec.nodeName={node_name}")));
        let events = Recorder::new(client.clone(), "kubelet", node_name);
        Context { client, pods, events, sync: tokio::sync::Mutex::new(sync), checkpoint, saved: std::sync::atomic::AtomicU64::new(0), fetched: tokio::sync::Mutex::default() }
    }
}

/// The one key of pod sync: a sync looks at every pod of the node and every container at once
/// (the runtime is listed once, the pods are synced concurrently).
fn node_key() -> ObjectKey {
    ObjectKey::cluster("node-pods")
}

/// Pod sync as a controller: the first list and any change of a bound pod queue a sync, and a sync
/// asks for the next one after [`SYNC_EVERY`] (a failed one after its back-off; the resync,
/// rare, only makes sure the loop never stops).
pub fn controller<C: Client, R: ContainerRuntime>(ctx: &Context<C, R>) -> Controller {
    Controller::new("pod-sync").watches(&ctx.pods, |_: &Pod| vec![node_key()]).resync_every(RESYNC, || vec![node_key()]).backoff(RUNTIME_BACKOFF)
}

/// How old a fetched ConfigMap or Secret may be before a sync reads it again: a change reaches the
/// pods' files and new containers' environments within this and a sync (Kubernetes' kubelet takes
/// up to a minute and its cache's TTL).
const SOURCES_FRESH: Duration = Duration::from_secs(3);

/// The ConfigMaps and Secrets the `pods` name, fetched again when older than [`SOURCES_FRESH`]
/// (concurrently; one that cannot be read keeps its last contents, or is left out).
async fn fetch_sources<C: Client, R: ContainerRuntime>(ctx: &Context<C, R>, pods: &[Pod]) -> Sources {
    let wanted: HashSet<SourceKey> = pods.iter().flat_map(podconfig::referenced).collect();
    let mut fetched = ctx.fetched.lock().await;
    fetched.retain(|k, _| wanted.contains(k));
    let now = Instant::now();
    let stale: Vec<SourceKey> = wanted.iter().filter(|k| fetched.get(*k).is_none_or(|(at, _)| now.duration_since(*at) >= SOURCES_FRESH)).cloned().collect();
    let reads = stale.into_iter().map(|k| async move {
        let key = ObjectKey::namespaced(k.namespace.clone(), k.name.clone());
        let read = if k.secret {
            ctx.client.get::<Secret>(&key).await.map(|s| s.data.keys().filter_map(|name| Some((name.clone(), s.get(name)?))).collect())
        } else {
            ctx.client.get::<ConfigMap>(&key).await.map(|c| {
                let mut data: BTreeMap<String, Vec<u8>> = c.data.into_iter().map(|(k, v)| (k, v.into_bytes())).collect();
                for (name, value) in c.binary_data {
                    if let Ok(bytes) = base64::Engine::decode(&base64::engine::general_purpose::STANDARD, value) {
                        data.insert(name, bytes);
                    }
                }
                data
            })
        };
        (k, read)
    });
    let results: Vec<_> = futures::stream::iter(reads).buffer_unordered(STATUS_WRITES_IN_FLIGHT).collect().await;
    for (k, read) in results {
        match read {
            Ok(data) => {
                fetched.insert(k, (now, Some(data)));
            }
            Err(e) if e.is_not_found() => {
                fetched.insert(k, (now, None));
            }
            Err(e) => tracing::debug!(source = ?k, error = %e, "reading a pod's ConfigMap or Secret; trying again next sync"),
        }
    }
    fetched.iter().map(|(k, (_, data))| (k.clone(), data.clone())).collect()
}

/// How often a sync is queued whatever else happens.
const RESYNC: Duration = Duration::from_secs(60);

/// One sync of the node's pods with the runtime, and the writes of the statuses that changed (a
/// failed write is retried by the next sync). A runtime failure fails the reconcile (backed off);
/// what runs keeps running.
async fn reconcile<C: Client, R: ContainerRuntime>(_key: ObjectKey, ctx: Arc<Context<C, R>>) -> Result<Action, RuntimeError> {
    let revision = ctx.pods.revision();
    let desired = ctx.pods.cloned();
    if let Some(path) = &ctx.checkpoint
        && ctx.saved.swap(revision, std::sync::atomic::Ordering::Relaxed) != revision
        && let Err(e) = save_checkpoint(path, &desired)
    {
        tracing::warn!(path = %path.display(), error = %e, "saving the pods checkpoint");
    }
    let sources = fetch_sources(&ctx, &desired).await;
    let mut sync = ctx.sync.lock().await;
    sync.set_sources(sources);
    let updates = sync.sync(&desired).await;
    for h in sync.take_happenings() {
        // A pod-level happening (an eviction) names no container, as kubelet reports it.
        let field_path = if h.container.is_empty() { String::new() } else { format!("spec.containers{{{}}}", h.container) };
        ctx.events.record_at(&h.pod, &field_path, h.event_type, h.reason, h.message);
    }
    let updates = updates?;
    // Deleted pods whose containers are gone: the delete that lets the API object go.
    for pod in sync.take_finished() {
        match ctx.client.delete_now::<Pod>(&ObjectKey::of(&pod.metadata), &pod.metadata.uid).await {
            Ok(()) => tracing::info!(pod = %pod.metadata.name, "its containers are stopped: deleted"),
            Err(e) if e.is_not_found() || matches!(e, crate::client::ClientError::Api { code: 409, .. }) => {}
            Err(e) => tracing::debug!(pod = %pod.metadata.name, error = %e, "deleting a stopped pod; retrying on the next sync"),
        }
    }
    // The writes wait on the API server concurrently: a node that started 30 pods reports them in
    // a few round trips, not 30.
    let writes = updates.into_iter().filter_map(|u| {
        let pod = desired.iter().find(|p| p.metadata.name == u.name && p.metadata.namespace_or_default() == u.namespace)?;
        let client = &ctx.client;
        // An update of the status subresource: the server takes only `status` from it, and the
        // pod's `resourceVersion` makes a write based on a stale pod fail (and retry next sync).
        let object = Pod { status: u.status.clone(), ..pod.clone() };
        Some(async move {
            match client.replace_status(&object).await {
                Ok(_) => Some((object.metadata.uid, u.status)),
                Err(e) => {
                    tracing::debug!(pod = %u.name, error = %e, "writing pod status; retrying on the next sync");
                    None
                }
            }
        })
    });
    let written: Vec<Option<(String, PodStatus)>> = futures::stream::iter(writes).buffer_unordered(STATUS_WRITES_IN_FLIGHT).collect().await;
    for (uid, status) in written.into_iter().flatten() {
        sync.written(&uid, status);
    }
    Ok(Action::RequeueAfter(SYNC_EVERY))
}

/// Runs pod sync for `node_name` until dropped: a runtime store keeps the bound pods, a
/// controller syncs them with the container runtime on every change and every second, and
/// changed statuses are written. With a `checkpoint` file, the last known pods are saved there;
/// until the first list of pods arrives (the API server may be down) they are synced instead of
/// nothing, so that an agent restarted while the master is away keeps running what it ran.
pub async fn run<C: Client, R: ContainerRuntime>(client: C, sync: PodSync<R>, node_name: &str, checkpoint: Option<PathBuf>) {
    let ctx = Arc::new(Context::new(client, sync, node_name, checkpoint));
    run_with(ctx).await;
}

/// Runs pod sync on a prepared context (tests give it a runtime with a test name prefix).
pub async fn run_with<C: Client, R: ContainerRuntime>(ctx: Arc<Context<C, R>>) {
    if let Some(saved) = ctx.checkpoint.as_deref().and_then(load_checkpoint) {
        while !ctx.pods.synced() {
            if let Err(e) = ctx.sync.lock().await.sync(&saved).await {
                tracing::warn!(error = %e, "syncing the checkpointed pods with the container runtime");
            }
            tokio::select! {
                () = tokio::time::sleep(SYNC_EVERY) => {}
                () = ctx.pods.wait_synced() => {}
            }
        }
    }
    controller(&ctx).run(reconcile, ctx.clone()).await;
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::agent::runtime::fake::FakeRuntime;
    use crate::api::ObjectMeta;
    use crate::api::pod::{ContainerPort, ExecAction, HttpGetAction, ResourceRequirements, TcpSocketAction};

    const IMAGE: &str = "clusterctl-busybox:latest";

    fn pod(name: &str, restart_policy: &str, container: Container) -> Pod {
        Pod {
            metadata: ObjectMeta { uid: format!("uid-{name}-0000"), ..ObjectMeta::namespaced("default", name) },
            spec: PodSpec {
                node_name: Some("w1".into()),
                restart_policy: Some(restart_policy.into()),
                termination_grace_period_seconds: Some(5),
                containers: vec![container],
                ..Default::default()
            },
            ..Default::default()
        }
    }

    fn strings(items: &[&str]) -> Vec<String> {
        items.iter().map(|s| s.to_string()).collect()
    }

    fn limits(cpu: &str, memory: &str) -> ResourceRequirements {
        ResourceRequirements { limits: [("cpu".to_string(), Quantity::from(cpu)), ("memory".to_string(), Quantity::from(memory))].into(), ..Default::default() }
    }

    fn web() -> Container {
        Container {
            name: "web".into(),
            image: IMAGE.into(),
            command: strings(&["httpd", "-f"]),
            ports: vec![ContainerPort { container_port: 80, ..Default::default() }],
            resources: limits("500m", "64Mi"),
            ..Default::default()
        }
    }

    fn exec_probe(command: &str, tune: impl FnOnce(&mut Probe)) -> Probe {
        let mut probe = Probe { exec: Some(ExecAction { command: strings(&[command]), ..Default::default() }), ..Default::default() };
        tune(&mut probe);
        probe
    }

    fn phase(update: &[StatusUpdate]) -> Option<&str> {
        update.last().expect("a status").status.phase.as_deref()
    }

    fn sync_of(fake: &FakeRuntime) -> PodSync<FakeRuntime> {
        // (the termination-message files go to a folder of the test's own, left in /tmp)
        let dir = tempfile::tempdir().unwrap().keep();
        PodSync::new(Arc::new(fake.clone()), "10.0.1.5".parse().unwrap()).with_volume_roots(VolumeRoots { disk: dir.join("disk"), memory: dir.join("memory"), sized_tmpfs: false })
    }

    fn container_status(update: &[StatusUpdate]) -> ContainerStatus {
        update.last().expect("a status").status.container_statuses[0].clone()
    }

    fn waiting_reason(status: &ContainerStatus) -> Option<&str> {
        status.state.waiting.as_ref()?.reason.as_deref()
    }

    fn running_ids(fake: &FakeRuntime) -> Vec<String> {
        fake.containers().into_iter().filter(|(_, i)| i.running).map(|(_, i)| i.id).collect()
    }

    #[tokio::test(start_paused = true)]
    async fn a_bound_pod_gets_a_sandbox_with_its_host_ports_and_one_labelled_container_in_it_with_limits() {
        let fake = FakeRuntime::with_images(&[IMAGE]);
        let mut sync = sync_of(&fake);
        let mut p = pod("web-1", "Always", web());
        p.spec.containers[0].ports.push(ContainerPort { container_port: 443, host_port: Some(8443), ..Default::default() });
        sync.sync(std::slice::from_ref(&p)).await.unwrap();
        let created = fake.containers();
        assert_eq!(created.len(), 1);
        let (spec, info) = &created[0];
        assert_eq!(spec.labels[labels::POD], "web-1");
        assert_eq!(spec.labels[labels::UID], "uid-web-1-0000");
        assert_eq!(spec.command, vec!["httpd", "-f"]);
        assert_eq!(spec.cpu_millis, Some(500));
        assert_eq!(spec.memory_bytes, Some(64 << 20));
        let sandboxes = fake.sandboxes();
        assert_eq!(sandboxes.len(), 1, "one sandbox per pod");
        assert_eq!(sandboxes[0].labels[labels::UID], "uid-web-1-0000");
        assert_eq!(sandboxes[0].labels[labels::HOST_PORTS], "443:8443", "only the ports with a hostPort are published");
        assert_eq!(spec.sandbox.as_ref().map(|s| s.id.as_str()), Some(sandboxes[0].id.as_str()), "the container joins the sandbox's network");
        assert_eq!(info.ip, sandboxes[0].ip);
        let updates = sync.sync(std::slice::from_ref(&p)).await.unwrap();
        let status = &updates[0].status;
        assert_eq!(phase(&updates), Some("Running"));
        assert_eq!(status.pod_ip.as_deref(), Some("100.64.1.1"), "the sandbox's address");
        assert_eq!(status.host_ip.as_deref(), Some("10.0.1.5"));
        assert!(container_status(&updates).ready);
        assert_eq!(status.conditions[3].condition_type, "Ready");
        assert_eq!(status.conditions[3].status, "True");
    }

    #[tokio::test(start_paused = true)]
    async fn a_restarted_agent_adopts_running_containers_instead_of_recreating_them() {
        let fake = FakeRuntime::with_images(&[IMAGE]);
        let p = pod("web-1", "Always", web());
        sync_of(&fake).sync(std::slice::from_ref(&p)).await.unwrap();
        let before = running_ids(&fake);
        let mut fresh = sync_of(&fake);
        fresh.sync(std::slice::from_ref(&p)).await.unwrap();
        fresh.sync(std::slice::from_ref(&p)).await.unwrap();
        assert_eq!(running_ids(&fake), before);
        assert_eq!(fake.calls().iter().filter(|c| c.starts_with("run ")).count(), 1);
    }

    #[tokio::test(start_paused = true)]
    async fn a_missing_image_is_reported_and_never_pulled() {
        let fake = FakeRuntime::with_images(&[]);
        let mut sync = sync_of(&fake);
        let c = Container { image_pull_policy: Some("Never".into()), ..web() };
        let updates = sync.sync(&[pod("web-1", "Always", c)]).await.unwrap();
        assert_eq!(waiting_reason(&container_status(&updates)), Some("ErrImageNeverPull"));
        assert_eq!(phase(&updates), Some("Pending"));
        assert!(fake.containers().is_empty());
    }

    #[tokio::test(start_paused = true)]
    async fn a_private_image_is_pulled_with_the_pods_pull_secret_and_backs_off_without_it() {
        const PRIVATE: &str = "registry.test:5443/private/app:v1";
        let fake = FakeRuntime::with_images(&[]);
        fake.publish(PRIVATE, "ann");
        let mut sync = sync_of(&fake);
        let key = SourceKey { secret: true, namespace: "default".into(), name: "regcred".into() };
        let config = br#"{"auths": {"registry.test:5443": {"username": "ann", "password": "pw"}}}"#.to_vec();
        sync.set_sources(Sources::from([(key, Some(BTreeMap::from([(".dockerconfigjson".to_string(), config)])))]));
        let mut with_secret = pod("pulled", "Always", Container { image: PRIVATE.into(), ..web() });
        with_secret.spec.image_pull_secrets = vec![crate::api::pod::LocalObjectReference { name: "regcred".into(), ..Default::default() }];
        sync.sync(std::slice::from_ref(&with_secret)).await.unwrap();
        assert!(fake.calls().contains(&format!("pull {PRIVATE} ann")), "{:?}", fake.calls());
        assert_eq!(running_ids(&fake).len(), 1, "pulled (IfNotPresent: a tag) and started");

        let fake = FakeRuntime::with_images(&[]);
        fake.publish(PRIVATE, "ann");
        let mut sync = sync_of(&fake);
        let without = pod("denied", "Always", Container { image: PRIVATE.into(), ..web() });
        sync.sync(std::slice::from_ref(&without)).await.unwrap();
        let updates = sync.sync(std::slice::from_ref(&without)).await.unwrap();
        let status = container_status(&updates);
        assert_eq!(waiting_reason(&status), Some("ErrImagePull"));
        assert!(status.state.waiting.unwrap().message.unwrap().contains("no basic auth credentials"));
        let updates = sync.sync(std::slice::from_ref(&without)).await.unwrap();
        assert_eq!(waiting_reason(&container_status(&updates)), Some("ErrImagePull"), "shown a while, not replaced by the next sync at once");
        tokio::time::sleep(Duration::from_secs(4)).await;
        let updates = sync.sync(std::slice::from_ref(&without)).await.unwrap();
        assert_eq!(waiting_reason(&container_status(&updates)), Some("ImagePullBackOff"));
        let pulls = || fake.calls().iter().filter(|c| c.starts_with("pull ")).count();
        assert_eq!(pulls(), 1, "no pull during the back-off");
        tokio::time::sleep(Duration::from_secs(7)).await;
        sync.sync(std::slice::from_ref(&without)).await.unwrap();
        assert_eq!(pulls(), 2, "pulled again after 10 s");

        let wrong = pod("wrong", "Always", Container { image: "registry.test:5443/private/app:v9".into(), ..web() });
        let mut sync = sync_of(&fake);
        sync.sync(std::slice::from_ref(&wrong)).await.unwrap();
        let updates = sync.sync(std::slice::from_ref(&wrong)).await.unwrap();
        let message = container_status(&updates).state.waiting.unwrap().message.unwrap();
        assert!(message.contains("Failed to pull image \"registry.test:5443/private/app:v9\"") && message.contains("manifest unknown"), "{message}");
    }

    /// ECR as the node's agent sees it: a token for user `AWS`, or a refusal.
    struct NodeRole(bool);

    #[async_trait::async_trait]
    impl crate::cloud::ecr::RegistryTokens for NodeRole {
        async fn authorization_token(&self, _: &crate::cloud::ecr::EcrRegistry) -> Result<crate::cloud::ecr::AuthorizationToken, String> {
            if self.0 { Ok(crate::cloud::ecr::AuthorizationToken { username: "AWS".into(), password: "token".into(), expires_at: None }) } else { Err("no credentials in the chain".into()) }
        }
    }

    #[tokio::test(start_paused = true)]
    async fn an_ecr_image_is_pulled_with_the_nodes_token_after_any_pull_secret_that_fails() {
        const ECR: &str = "123456789012.dkr.ecr.us-east-1.amazonaws.com/app:v1";
        let ecr_sync = |fake: &FakeRuntime, role: bool| sync_of(fake).with_ecr(Arc::new(images::EcrCredentials::new(Arc::new(NodeRole(role)))));
        // No secret: the node's token.
        let fake = FakeRuntime::with_images(&[]);
        fake.publish(ECR, "AWS");
        let mut sync = ecr_sync(&fake, true);
        sync.sync(&[pod("plain", "Always", Container { image: ECR.into(), ..web() })]).await.unwrap();
        assert!(fake.calls().contains(&format!("pull {ECR} AWS")), "{:?}", fake.calls());
        assert_eq!(running_ids(&fake).len(), 1);
        // A secret for the registry that does not pull: then the node's token, as kubelet tries each.
        let fake = FakeRuntime::with_images(&[]);
        fake.publish(ECR, "AWS");
        let mut sync = ecr_sync(&fake, true);
        let key = SourceKey { secret: true, namespace: "default".into(), name: "stale".into() };
        let config = br#"{"auths": {"123456789012.dkr.ecr.us-east-1.amazonaws.com": {"username": "bob", "password": "old"}}}"#.to_vec();
        sync.set_sources(Sources::from([(key, Some(BTreeMap::from([(".dockerconfigjson".to_string(), config)])))]));
        let mut stale = pod("stale", "Always", Container { image: ECR.into(), ..web() });
        stale.spec.image_pull_secrets = vec![crate::api::pod::LocalObjectReference { name: "stale".into(), ..Default::default() }];
        sync.sync(std::slice::from_ref(&stale)).await.unwrap();
        let pulls: Vec<String> = fake.calls().into_iter().filter(|c| c.starts_with("pull ")).collect();
        assert_eq!(pulls, vec![format!("pull {ECR} bob"), format!("pull {ECR} AWS")]);
        assert_eq!(running_ids(&fake).len(), 1);
        // No token to be had: the pull fails with why, and nothing is pulled.
        let fake = FakeRuntime::with_images(&[]);
        fake.publish(ECR, "AWS");
        let mut sync = ecr_sync(&fake, false);
        let denied = pod("denied", "Always", Container { image: ECR.into(), ..web() });
        sync.sync(std::slice::from_ref(&denied)).await.unwrap();
        let updates = sync.sync(std::slice::from_ref(&denied)).await.unwrap();
        let status = container_status(&updates);
        assert_eq!(waiting_reason(&status), Some("ErrImagePull"));
        let message = status.state.waiting.unwrap().message.unwrap();
        assert!(message.contains("getting the node's credentials for Amazon ECR: no credentials in the chain"), "{message}");
        assert!(!fake.calls().iter().any(|c| c.starts_with("pull ")), "{:?}", fake.calls());
    }

    #[tokio::test(start_paused = true)]
    async fn a_pod_past_its_active_deadline_is_stopped_and_failed_and_never_restarted() {
        let fake = FakeRuntime::with_images(&[IMAGE]);
        let mut sync = sync_of(&fake);
        let mut p = pod("job-1", "Always", Container { image_pull_policy: Some("IfNotPresent".into()), ..web() });
        sync.sync(std::slice::from_ref(&p)).await.unwrap();
        assert_eq!(running_ids(&fake).len(), 1);
        p.spec.active_deadline_seconds = Some(0);
        let updates = sync.sync(std::slice::from_ref(&p)).await.unwrap();
        let status = &updates[0].status;
        assert_eq!((status.phase.as_deref(), status.reason.as_deref()), (Some("Failed"), Some("DeadlineExceeded")));
        assert_eq!(status.message.as_deref(), Some("Pod was active on the node longer than the specified deadline"));
        // The stop runs in the background; once it is done, nothing starts again and the state shows it.
        for _ in 0..50 {
            if running_ids(&fake).is_empty() {
                break;
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        assert!(running_ids(&fake).is_empty(), "stopped");
        p.status = status.clone();
        for _ in 0..3 {
            let updates = sync.sync(std::slice::from_ref(&p)).await.unwrap();
            if let Some(u) = updates.first() {
                p.status = u.status.clone();
            }
            tokio::time::sleep(Duration::from_secs(1)).await;
        }
        assert!(running_ids(&fake).is_empty(), "never restarted");
        assert_eq!(p.status.phase.as_deref(), Some("Failed"));
        assert!(p.status.container_statuses[0].state.terminated.is_some(), "{:?}", p.status.container_statuses);
    }

    #[tokio::test(start_paused = true)]
    async fn a_pod_bound_around_the_scheduler_to_a_tainted_node_is_refused_unless_it_tolerates_the_taint() {
        let fake = FakeRuntime::with_images(&[IMAGE]);
        let master_taint = Taint { key: crate::api::node::CONTROL_PLANE.into(), effect: "NoSchedule".into(), ..Default::default() };
        let mut sync = sync_of(&fake).with_taints(vec![master_taint]);
        let intruder = pod("intruder", "Always", Container { image_pull_policy: Some("IfNotPresent".into()), ..web() });
        let updates = sync.sync(std::slice::from_ref(&intruder)).await.unwrap();
        let status = &updates[0].status;
        assert_eq!((status.phase.as_deref(), status.reason.as_deref()), (Some("Failed"), Some("TaintToleration")));
        assert_eq!(status.message.as_deref(), Some("Pod was rejected: the node had taint {node-role.kubernetes.io/control-plane: }, that the pod didn't tolerate"));
        assert!(running_ids(&fake).is_empty(), "nothing ran");
        let mut welcome = pod("welcome", "Always", Container { image_pull_policy: Some("IfNotPresent".into()), ..web() });
        welcome.spec.tolerations.push(crate::api::pod::Toleration { key: Some(crate::api::node::CONTROL_PLANE.into()), operator: Some("Exists".into()), effect: Some("NoSchedule".into()), ..Default::default() });
        sync.sync(&[intruder.clone(), welcome]).await.unwrap();
        assert_eq!(running_ids(&fake).len(), 1, "the tolerating pod runs");
        let mut admitted = intruder;
        admitted.metadata.uid = "u-admitted".into();
        admitted.status.start_time = Some(Time::now());
        let updates = sync.sync(&[admitted]).await.unwrap();
        assert_ne!(updates[0].status.reason.as_deref(), Some("TaintToleration"), "a pod already started here is not judged again");
    }

    #[tokio::test(start_paused = true)]
    async fn latest_images_are_pulled_and_a_side_loaded_one_is_used_when_its_registry_fails() {
        let fake = FakeRuntime::with_images(&[IMAGE]);
        let mut sync = sync_of(&fake);
        sync.sync(&[pod("web-1", "Always", web())]).await.unwrap();
        assert!(fake.calls().iter().any(|c| c.starts_with(&format!("pull {IMAGE}"))), "Always for :latest: {:?}", fake.calls());
        assert_eq!(running_ids(&fake).len(), 1, "the node's copy runs");
    }

    #[tokio::test(start_paused = true)]
    async fn a_crashing_container_restarts_after_a_doubling_back_off() {
        let fake = FakeRuntime::with_images(&[IMAGE]);
        let mut sync = sync_of(&fake);
        let p = pod("web-1", "Always", web());
        sync.sync(std::slice::from_ref(&p)).await.unwrap();
        let mut waits = Vec::new();
        for _ in 0..4 {
            let id = running_ids(&fake)[0].clone();
            fake.exit(&id, 1);
            let crashed = Instant::now();
            let mut last = Vec::new();
            while running_ids(&fake).is_empty() {
                last = sync.sync(std::slice::from_ref(&p)).await.unwrap();
                if running_ids(&fake).is_empty() {
                    if !last.is_empty() {
                        assert_eq!(waiting_reason(&container_status(&last)), Some("CrashLoopBackOff"));
                    }
                    tokio::time::sleep(Duration::from_secs(1)).await;
                }
            }
            waits.push(crashed.elapsed().as_secs());
            let _ = last;
        }
        assert_eq!(waits, vec![10, 20, 40, 80]);
        let updates = sync.sync(std::slice::from_ref(&p)).await.unwrap();
        assert_eq!(container_status(&updates).restart_count, 4);
        assert_eq!(container_status(&updates).last_state.terminated.map(|t| t.exit_code), Some(1));
        // As Events: each start (its image pulled: `:latest`, created, started), and one BackOff per crash (not one per sync while it waits).
        let happened = sync.take_happenings();
        let count = |reason: &str| happened.iter().filter(|h| h.reason == reason).count();
        assert_eq!((count("Pulling"), count("Created"), count("Started"), count("BackOff")), (5, 5, 5, 4), "{happened:?}");
        assert!(happened.iter().all(|h| h.container == "web" && h.pod.metadata.name == "web-1"));
        assert!(container_status(&updates).image_id.starts_with("docker://sha256:"), "{:?}", container_status(&updates).image_id);
    }

    #[tokio::test(start_paused = true)]
    async fn a_container_that_succeeds_under_on_failure_is_not_restarted() {
        let fake = FakeRuntime::with_images(&[IMAGE]);
        let mut sync = sync_of(&fake);
        let p = pod("job", "OnFailure", web());
        sync.sync(std::slice::from_ref(&p)).await.unwrap();
        fake.exit(&running_ids(&fake)[0].clone(), 0);
        tokio::time::sleep(Duration::from_secs(30)).await;
        let updates = sync.sync(std::slice::from_ref(&p)).await.unwrap();
        assert_eq!(phase(&updates), Some("Succeeded"));
        assert_eq!(fake.calls().iter().filter(|c| c.starts_with("run ")).count(), 1);
    }

    /// The containers made, in order, by container name (removed ones too).
    fn created_names(fake: &FakeRuntime) -> Vec<String> {
        fake.calls().iter().filter_map(|c| c.strip_prefix("run k8s_")).map(|name| name.split('_').next().unwrap_or_default().to_string()).collect()
    }

    fn running_of(fake: &FakeRuntime, container: &str) -> String {
        fake.containers().into_iter().find(|(spec, info)| info.running && spec.labels[labels::CONTAINER] == container).expect("running").1.id
    }

    fn sleeper(name: &str) -> Container {
        Container { name: name.into(), image: IMAGE.into(), command: strings(&["sleep", "1"]), ..Default::default() }
    }

    #[tokio::test(start_paused = true)]
    async fn init_containers_run_one_after_another_to_success_before_the_app_containers() {
        let fake = FakeRuntime::with_images(&[IMAGE]);
        let mut sync = sync_of(&fake);
        let mut p = pod("inits", "Always", web());
        p.spec.init_containers = vec![sleeper("first"), sleeper("second")];
        let updates = sync.sync(std::slice::from_ref(&p)).await.unwrap();
        assert_eq!(created_names(&fake), vec!["first"]);
        let status = &updates.last().unwrap().status;
        assert_eq!((status.phase.as_deref(), status.init_container_statuses.len()), (Some("Pending"), 2));
        assert_eq!(waiting_reason(&status.container_statuses[0]), Some("PodInitializing"));
        assert_eq!(status.conditions.iter().find(|c| c.condition_type == "Initialized").unwrap().status, "False");
        // a failure is restarted (OnFailure for init containers of an Always pod), not passed over
        fake.exit(&running_of(&fake, "first"), 1);
        tokio::time::sleep(Duration::from_secs(11)).await;
        sync.sync(std::slice::from_ref(&p)).await.unwrap();
        tokio::time::sleep(Duration::from_secs(11)).await;
        sync.sync(std::slice::from_ref(&p)).await.unwrap();
        assert_eq!(created_names(&fake), vec!["first", "first"]);
        fake.exit(&running_of(&fake, "first"), 0);
        sync.sync(std::slice::from_ref(&p)).await.unwrap();
        assert_eq!(created_names(&fake), vec!["first", "first", "second"]);
        fake.exit(&running_of(&fake, "second"), 0);
        sync.sync(std::slice::from_ref(&p)).await.unwrap();
        let updates = sync.sync(std::slice::from_ref(&p)).await.unwrap();
        assert_eq!(created_names(&fake), vec!["first", "first", "second", "web"]);
        let status = &updates.last().unwrap().status;
        assert_eq!(status.phase.as_deref(), Some("Running"));
        assert!(status.init_container_statuses.iter().all(|s| s.state.terminated.as_ref().is_some_and(|t| t.exit_code == 0)), "{:?}", status.init_container_statuses);
        assert_eq!(status.init_container_statuses[0].restart_count, 1);
        assert_eq!(status.conditions.iter().find(|c| c.condition_type == "Initialized").unwrap().status, "True");
        // done init containers stay done
        tokio::time::sleep(Duration::from_secs(5)).await;
        sync.sync(std::slice::from_ref(&p)).await.unwrap();
        assert_eq!(created_names(&fake).len(), 4);
    }

    #[tokio::test(start_paused = true)]
    async fn a_failed_init_container_fails_a_never_pod_and_a_sidecar_runs_beside_the_app() {
        let fake = FakeRuntime::with_images(&[IMAGE]);
        let mut sync = sync_of(&fake);
        let mut p = pod("never", "Never", web());
        p.spec.init_containers = vec![sleeper("setup")];
        sync.sync(std::slice::from_ref(&p)).await.unwrap();
        fake.exit(&running_of(&fake, "setup"), 3);
        let updates = sync.sync(std::slice::from_ref(&p)).await.unwrap();
        assert_eq!(phase(&updates), Some("Failed"));
        assert_eq!(created_names(&fake), vec!["setup"]);

        let fake = FakeRuntime::with_images(&[IMAGE]);
        let mut sync = sync_of(&fake);
        let mut p = pod("sidecar", "Always", web());
        p.spec.init_containers = vec![Container { restart_policy: Some("Always".into()), ..sleeper("proxy") }];
        sync.sync(std::slice::from_ref(&p)).await.unwrap();
        sync.sync(std::slice::from_ref(&p)).await.unwrap();
        let updates = sync.sync(std::slice::from_ref(&p)).await.unwrap();
        assert_eq!(created_names(&fake), vec!["proxy", "web"], "the app starts once the sidecar runs");
        assert_eq!(phase(&updates), Some("Running"));
        fake.exit(&running_of(&fake, "proxy"), 0);
        for _ in 0..2 {
            tokio::time::sleep(Duration::from_secs(11)).await;
            sync.sync(std::slice::from_ref(&p)).await.unwrap();
        }
        assert!(fake.containers().iter().any(|(spec, info)| info.running && spec.labels[labels::CONTAINER] == "web"), "the app keeps running meanwhile");
        assert_eq!(created_names(&fake).iter().filter(|n| *n == "proxy").count(), 2, "a sidecar that exits is restarted");
    }

    #[tokio::test(start_paused = true)]
    async fn a_missing_secret_key_holds_the_container_with_create_container_config_error_until_it_is_there() {
        let fake = FakeRuntime::with_images(&[IMAGE]);
        let mut sync = sync_of(&fake);
        let mut c = web();
        c.env = serde_json::from_value(serde_json::json!([
            {"name": "USER", "valueFrom": {"secretKeyRef": {"name": "creds", "key": "user"}}},
            {"name": "IP", "valueFrom": {"fieldRef": {"fieldPath": "status.podIP"}}},
            {"name": "HELLO", "value": "hi $(USER)"}
        ]))
        .unwrap();
        c.args = strings(&["--user", "$(USER)"]);
        let p = pod("creds", "Always", c);
        let key = SourceKey { secret: true, namespace: "default".into(), name: "creds".into() };
        sync.set_sources(Sources::from([(key.clone(), Some(BTreeMap::from([("other".to_string(), b"x".to_vec())])))]));
        let updates = sync.sync(std::slice::from_ref(&p)).await.unwrap();
        let status = container_status(&updates);
        assert_eq!(waiting_reason(&status), Some("CreateContainerConfigError"));
        assert_eq!(status.state.waiting.as_ref().unwrap().message.as_deref(), Some("couldn't find key user in Secret default/creds"));
        assert!(fake.containers().is_empty(), "nothing made, no sandbox either");
        assert!(sync.take_happenings().iter().any(|h| h.reason == "Failed" && h.message == "Error: couldn't find key user in Secret default/creds"));
        sync.set_sources(Sources::from([(key, Some(BTreeMap::from([("user".to_string(), b"ann".to_vec())])))]));
        sync.sync(std::slice::from_ref(&p)).await.unwrap();
        let (spec, _) = &fake.containers()[0];
        let env: BTreeMap<_, _> = spec.env.iter().cloned().collect();
        assert_eq!(env["USER"], "ann");
        assert_eq!(env["HELLO"], "hi ann");
        assert!(env["IP"].parse::<IpAddr>().is_ok(), "the sandbox's address: {:?}", env["IP"]);
        assert_eq!(spec.args, vec!["--user", "ann"], "arguments expanded");
    }

    fn hooked(post_start: Option<&str>, pre_stop: Option<&str>) -> Container {
        let handler = |cmd: &str| LifecycleHandler { exec: Some(ExecAction { command: strings(&["sh", "-c", cmd]), ..Default::default() }), ..Default::default() };
        Container { lifecycle: Some(crate::api::pod::Lifecycle { post_start: post_start.map(handler), pre_stop: pre_stop.map(handler), ..Default::default() }), ..web() }
    }

    #[tokio::test(start_paused = true)]
    async fn a_startup_probe_holds_liveness_and_readiness_and_restarts_a_container_that_never_starts() {
        let fake = FakeRuntime::with_images(&[IMAGE]);
        let mut sync = sync_of(&fake);
        let c = Container {
            startup_probe: Some(exec_probe("started", |p| {
                p.period_seconds = Some(1);
                p.failure_threshold = Some(3);
            })),
            liveness_probe: Some(exec_probe("alive", |p| p.period_seconds = Some(1))),
            ..web()
        };
        let p = pod("slow", "Always", c);
        sync.sync(std::slice::from_ref(&p)).await.unwrap();
        let id = running_ids(&fake)[0].clone();
        fake.set_exec_result(&id, 1);
        let mut last = Vec::new();
        for _ in 0..3 {
            last = sync.sync(std::slice::from_ref(&p)).await.unwrap();
            if let Some(u) = last.last() {
                assert_eq!(u.status.container_statuses[0].started, Some(false), "not started while its startup probe fails");
            }
            tokio::time::sleep(Duration::from_millis(1100)).await;
        }
        let _ = last;
        assert!(!fake.calls().iter().any(|c| c.ends_with(" alive")), "liveness waits for the startup probe: {:?}", fake.calls());
        tokio::time::sleep(Duration::from_millis(10)).await;
        assert!(fake.calls().iter().any(|c| c.starts_with(&format!("stop {id}"))), "restarted after 3 failures: {:?}", fake.calls());
        assert!(sync.take_happenings().iter().any(|h| h.message == "Startup probe failed"));
    }

    #[tokio::test(start_paused = true)]
    async fn a_failing_post_start_handler_kills_the_container_and_pre_stop_runs_before_a_deleted_pods_stop() {
        let fake = FakeRuntime::with_images(&[IMAGE]);
        let mut sync = sync_of(&fake);
        let p = pod("hooks", "Always", hooked(Some("exit 3"), None));
        sync.sync(std::slice::from_ref(&p)).await.unwrap();
        let id = running_ids(&fake)[0].clone();
        fake.set_exec_result(&id, 3);
        sync.sync(std::slice::from_ref(&p)).await.unwrap();
        tokio::time::sleep(Duration::from_millis(10)).await;
        assert!(fake.calls().contains(&format!("exec {id} sh -c exit 3")), "{:?}", fake.calls());
        sync.sync(std::slice::from_ref(&p)).await.unwrap();
        tokio::time::sleep(Duration::from_millis(10)).await;
        let happened = sync.take_happenings();
        assert!(happened.iter().any(|h| h.reason == "FailedPostStartHook" && h.message.contains("exited with 3")), "{happened:?}");
        assert!(fake.calls().iter().any(|c| c.starts_with(&format!("stop {id}"))), "{:?}", fake.calls());

        let fake = FakeRuntime::with_images(&[IMAGE]);
        let mut sync = sync_of(&fake);
        let mut p = pod("drain", "Always", hooked(None, Some("drain")));
        sync.sync(std::slice::from_ref(&p)).await.unwrap();
        let id = running_ids(&fake)[0].clone();
        p.metadata.deletion_timestamp = Some(Time::now());
        p.metadata.deletion_grace_period_seconds = Some(10);
        sync.sync(std::slice::from_ref(&p)).await.unwrap();
        tokio::time::sleep(Duration::from_millis(10)).await;
        let calls = fake.calls();
        let hook = calls.iter().position(|c| *c == format!("exec {id} sh -c drain")).expect("the preStop handler ran");
        let stop = calls.iter().position(|c| c.starts_with(&format!("stop {id}"))).expect("then the stop");
        assert!(hook < stop, "{calls:?}");
    }

    #[tokio::test(start_paused = true)]
    async fn a_termination_message_and_the_qos_class_are_reported() {
        let fake = FakeRuntime::with_images(&[IMAGE]);
        let mut sync = sync_of(&fake);
        let p = pod("ends", "Never", web());
        sync.sync(std::slice::from_ref(&p)).await.unwrap();
        let (spec, info) = fake.containers().into_iter().next().unwrap();
        let file = spec.labels[labels::TERMINATION_LOG].clone();
        assert!(spec.mounts.iter().any(|m| m.container_path == "/dev/termination-log" && m.host_path.display().to_string() == file));
        std::fs::write(&file, "disk full").unwrap();
        fake.exit(&info.id, 2);
        let updates = sync.sync(std::slice::from_ref(&p)).await.unwrap();
        let terminated = container_status(&updates).state.terminated.unwrap();
        assert_eq!((terminated.exit_code, terminated.message.as_deref()), (2, Some("disk full")));
        assert_eq!(updates.last().unwrap().status.qos_class.as_deref(), Some("Guaranteed"), "limits only: requests equal them");
    }

    #[tokio::test(start_paused = true)]
    async fn a_readiness_probe_drives_the_ready_condition() {
        let fake = FakeRuntime::with_images(&[IMAGE]);
        let mut sync = sync_of(&fake);
        let c = Container {
            readiness_probe: Some(exec_probe("true", |p| {
                p.period_seconds = Some(2);
                p.failure_threshold = Some(2);
            })),
            ..web()
        };
        let mut p = pod("web-1", "Always", c);
        sync.sync(std::slice::from_ref(&p)).await.unwrap();
        let id = running_ids(&fake)[0].clone();
        let u = sync.sync(std::slice::from_ref(&p)).await.unwrap();
        assert!(container_status(&u).ready);
        sync.written("uid-web-1-0000", u[0].status.clone());
        p.status = u[0].status.clone();
        fake.set_exec_result(&id, 1);
        tokio::time::sleep(Duration::from_secs(2)).await;
        assert!(sync.sync(std::slice::from_ref(&p)).await.unwrap().is_empty(), "one failure is below the threshold");
        tokio::time::sleep(Duration::from_secs(2)).await;
        let u = sync.sync(std::slice::from_ref(&p)).await.unwrap();
        assert!(!container_status(&u).ready);
        assert_eq!(u[0].status.conditions[3].status, "False");
        assert_eq!(running_ids(&fake), vec![id], "readiness never restarts");
    }

    #[tokio::test(start_paused = true)]
    async fn a_failing_liveness_probe_restarts_the_container_after_its_pre_stop_handler() {
        let fake = FakeRuntime::with_images(&[IMAGE]);
        let mut sync = sync_of(&fake);
        let c = Container {
            liveness_probe: Some(exec_probe("false", |p| {
                p.initial_delay_seconds = Some(5);
                p.period_seconds = Some(1);
                p.failure_threshold = Some(2);
            })),
            ..hooked(None, Some("drain"))
        };
        let p = pod("web-1", "Always", c);
        sync.sync(std::slice::from_ref(&p)).await.unwrap();
        let id = running_ids(&fake)[0].clone();
        fake.set_exec_result(&id, 1);
        for _ in 0..30 {
            sync.sync(std::slice::from_ref(&p)).await.unwrap();
            tokio::time::sleep(Duration::from_secs(1)).await;
        }
        let calls = fake.calls();
        let pre_stop = calls.iter().position(|c| *c == format!("exec {id} sh -c drain")).expect("the preStop handler ran");
        let stop = calls.iter().position(|c| c.starts_with(&format!("stop {id} "))).expect("stopped");
        assert!(pre_stop < stop, "preStop before the stop: {calls:?}");
        let u = sync.sync(std::slice::from_ref(&p)).await.unwrap();
        assert_eq!(fake.calls().iter().filter(|c| c.starts_with("run ")).count(), 2);
        assert_eq!(container_status(&u).restart_count, 1, "a liveness restart counts");
    }

    #[tokio::test(start_paused = true)]
    async fn a_deleted_pod_is_stopped_with_its_grace_period_and_removed() {
        let fake = FakeRuntime::with_images(&[IMAGE]);
        let mut sync = sync_of(&fake);
        sync.sync(&[pod("web-1", "Always", web())]).await.unwrap();
        let id = running_ids(&fake)[0].clone();
        sync.sync(&[]).await.unwrap();
        tokio::time::sleep(Duration::from_millis(10)).await;
        let calls = fake.calls();
        assert!(calls.contains(&format!("stop {id} 5s")), "{calls:?}");
        assert!(calls.contains(&format!("remove {id}")), "{calls:?}");
        assert!(fake.containers().is_empty());
    }

    /// A pod deleted through the API (still there, marked): stopped with the grace its delete gave,
    /// and handed back once no container is left, for the delete that lets it go.
    #[tokio::test]
    async fn a_pod_marked_for_deletion_is_stopped_with_its_deletion_grace_and_then_finished() {
        let fake = FakeRuntime::with_images(&[IMAGE]);
        let mut sync = sync_of(&fake);
        let mut p = pod("web-1", "Always", web());
        sync.sync(std::slice::from_ref(&p)).await.unwrap();
        let id = running_ids(&fake)[0].clone();
        p.metadata.deletion_timestamp = Some(Time::now());
        p.metadata.deletion_grace_period_seconds = Some(2);
        sync.sync(std::slice::from_ref(&p)).await.unwrap();
        assert!(sync.take_finished().is_empty(), "its container is still there");
        let killing: Vec<String> = sync.take_happenings().into_iter().filter(|h| h.reason == "Killing").map(|h| h.message).collect();
        assert_eq!(killing, ["Stopping container web"], "reported as kubelet does");
        tokio::time::sleep(Duration::from_millis(10)).await;
        assert!(fake.calls().contains(&format!("stop {id} 2s")), "{:?}", fake.calls());
        sync.sync(std::slice::from_ref(&p)).await.unwrap();
        let finished = sync.take_finished();
        assert_eq!(finished.iter().map(|p| p.metadata.name.as_str()).collect::<Vec<_>>(), ["web-1"]);
        assert!(fake.containers().is_empty());
    }

    #[tokio::test]
    async fn on_the_hosts_docker_a_pod_becomes_ready_serves_on_its_address_and_host_port_and_is_removed_when_deleted() {
        use crate::agent::runtime::docker::DockerRuntime;
        use crate::agent::runtime::podnet::PodNetwork;
        let bridge = format!("cct{}", hex::encode(rand::random::<[u8; 3]>()));
        let Ok(rt) = DockerRuntime::connect_with(PodNetwork::without_nat(&bridge, "100.65.3.0/24".parse().unwrap())).await else { return };
        // Skipped without the image, or when something else runs pods on this Docker (a sync
        // stops every pod container it was not asked for).
        if !rt.image_present(IMAGE).await.unwrap_or(false) || !rt.list(labels::UID).await.map(|l| l.is_empty()).unwrap_or(false) {
            eprintln!("skipped: no usable Docker");
            return;
        }
        let rt = Arc::new(rt);
        let host_port = i64::from(std::net::TcpListener::bind("0.0.0.0:0").unwrap().local_addr().unwrap().port());
        let mut p = pod("web-1", "Always", Container {
            name: "web".into(),
            image: IMAGE.into(),
            // (side-loaded: no pull, which would go to Docker Hub from this machine)
            image_pull_policy: Some("IfNotPresent".into()),
            command: strings(&["httpd", "-f", "-p", "8080", "-h", "/www"]),
            ports: vec![ContainerPort { container_port: 8080, host_port: Some(host_port), ..Default::default() }],
            readiness_probe: Some(Probe {
                http_get: Some(HttpGetAction { path: Some("/".into()), port: IntOrString::Int(8080), ..Default::default() }),
                period_seconds: Some(1),
                ..Default::default()
            }),
            ..Default::default()
        });
        let uid = format!("clusterctl-test-{}", hex::encode(rand::random::<[u8; 4]>()));
        p.metadata.uid = uid.clone();
        p.spec.termination_grace_period_seconds = Some(1);
        let mut sync = PodSync::new(rt.clone(), "127.0.0.1".parse().unwrap()).with_name_prefix("clusterctl-test-");
        let outcome = async {
            let deadline = Instant::now() + Duration::from_secs(20);
            let status = loop {
                let u = sync.sync(std::slice::from_ref(&p)).await.expect("sync");
                if let Some(u) = u.last()
                    && u.status.conditions[3].status == "True"
                {
                    break u.status.clone();
                }
                assert!(Instant::now() < deadline, "the pod never became ready");
                tokio::time::sleep(Duration::from_millis(500)).await;
            };
            let pod_ip: IpAddr = status.pod_ip.as_deref().expect("an address").parse().expect("an IP");
            assert!("100.65.3.0/24".parse::<ipnet::IpNet>().unwrap().contains(&pod_ip), "{pod_ip} is from the node's pod range");
            assert_eq!(http_get(SocketAddr::new(pod_ip, 8080), "/").await, Some(200), "the pod answers at its own address");
            assert_eq!(http_get(SocketAddr::new("127.0.0.1".parse().unwrap(), u16::try_from(host_port).unwrap()), "/").await, Some(200), "and on its host port");
            // Its container stops, then its sandbox goes (a sync every 200 ms).
            let deadline = Instant::now() + Duration::from_secs(15);
            sync.sync(&[]).await.expect("sync");
            while rt.list(labels::UID).await.expect("list").iter().any(|c| c.labels.get(labels::UID) == Some(&uid)) {
                assert!(Instant::now() < deadline, "the deleted pod's containers were not removed");
                tokio::time::sleep(Duration::from_millis(200)).await;
                sync.sync(&[]).await.expect("sync");
            }
        };
        // A failed assertion must not leave the containers behind.
        let result = futures::FutureExt::catch_unwind(std::panic::AssertUnwindSafe(tokio::time::timeout(Duration::from_secs(60), outcome))).await;
        for c in rt.list(labels::UID).await.unwrap_or_default() {
            if c.labels.get(labels::UID) == Some(&uid) {
                let _ = rt.remove(&c.id).await;
            }
        }
        let _ = std::process::Command::new("ip").args(["link", "del", &bridge]).status();
        match result {
            Ok(done) => done.expect("the test finished in time"),
            Err(panic) => std::panic::resume_unwind(panic),
        }
    }

    #[tokio::test(start_paused = true)]
    async fn a_pod_rewritten_with_the_same_meaning_keeps_its_container() {
        let fake = FakeRuntime::with_images(&[IMAGE, "other:1"]);
        let mut sync = sync_of(&fake);
        sync.sync(&[pod("web-1", "Always", web())]).await.unwrap();
        // The same limit written another way, and fields that do not change what runs.
        let same = Container { resources: limits("0.5", "64Mi"), image_pull_policy: Some("IfNotPresent".into()), ..web() };
        sync.sync(&[pod("web-1", "Always", same)]).await.unwrap();
        let other = Container { image: "other:1".into(), ..web() };
        sync.sync(&[pod("web-1", "Always", other)]).await.unwrap();
        let runs = fake.calls().iter().filter(|c| c.starts_with("run ")).count();
        assert_eq!(runs, 2, "only the new image makes a new container: {:?}", fake.calls());
    }

    /// Pod sync as a runtime controller on the fake API: the pods bound to the node run, a sync
    /// follows every second without a change (a crashed container is restarted after its
    /// crash-loop back-off), a failing runtime backs the sync off, and the checkpoint follows the pods.
    #[tokio::test(start_paused = true)]
    async fn pod_sync_on_the_fake_api_requeues_every_second_and_backs_off_runtime_failures() {
        use crate::runtime::fake::FakeClient;
        let api = FakeClient::new();
        let docker = FakeRuntime::with_images(&[IMAGE]);
        api.create(&pod("web-1", "Always", web())).await.unwrap();
        let mut elsewhere = pod("db-1", "Always", web());
        elsewhere.spec.node_name = Some("w2".into());
        api.create(&elsewhere).await.unwrap();
        let dir = tempfile::tempdir().unwrap();
        let checkpoint = dir.path().join("pods.json");
        let ctx = Arc::new(Context::new(api.clone(), sync_of(&docker), "w1", Some(checkpoint.clone())));
        let task = tokio::spawn(run_with(ctx));
        tokio::time::sleep(Duration::from_secs(2)).await;
        assert_eq!(running_ids(&docker).len(), 1, "only the pod bound to this node runs");
        let web = |api: &FakeClient| api.objects::<Pod>().into_iter().find(|p| p.metadata.name == "web-1").unwrap();
        assert_eq!(web(&api).status.phase.as_deref(), Some("Running"), "its status is written");
        let saved = load_checkpoint(&checkpoint).expect("a checkpoint");
        assert_eq!(saved.iter().map(|p| p.metadata.name.as_str()).collect::<Vec<_>>(), ["web-1"]);

        // Requeue: nothing changes in the API, yet the crashed container is restarted once its
        // back-off is over.
        docker.exit(&running_ids(&docker)[0].clone(), 1);
        tokio::time::sleep(BACKOFF_START + Duration::from_secs(3)).await;
        assert_eq!(docker.calls().iter().filter(|c| c.starts_with("run ")).count(), 2, "{:?}", docker.calls());
        assert_eq!(web(&api).status.container_statuses[0].restart_count, 1);

        // Back-off: a failed sync is retried after 2 s, not at the next second.
        tokio::time::sleep(Duration::from_secs(3)).await;
        let lists = || docker.calls().iter().filter(|c| c.as_str() == "list").count();
        docker.fail_next("list");
        let before = lists();
        while lists() == before {
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        tokio::time::sleep(Duration::from_millis(1500)).await;
        assert_eq!(lists(), before + 1, "no sync while backed off");
        tokio::time::sleep(Duration::from_millis(700)).await;
        assert_eq!(lists(), before + 2, "retried after the back-off");
        tokio::time::sleep(Duration::from_millis(1000)).await;
        assert_eq!(lists(), before + 3, "and every second again after a success");
        task.abort();
    }

    #[test]
    fn the_checkpoint_gives_back_the_pods_it_saved() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("agent/pods.json");
        assert!(load_checkpoint(&path).is_none());
        let pods = vec![pod("web-1", "Always", web())];
        save_checkpoint(&path, &pods).unwrap();
        assert_eq!(load_checkpoint(&path), Some(pods));
    }

    #[test]
    fn limits_become_the_runtimes_numbers_and_a_limit_that_is_no_quantity_counts_as_none() {
        let spec = runtime_spec(&Container { resources: limits("0.25", "1G"), ..web() });
        assert_eq!((spec.cpu_millis, spec.memory_bytes), (Some(250), Some(1_000_000_000)));
        let spec = runtime_spec(&Container { resources: limits("lots", "64MB"), ..web() });
        assert_eq!((spec.cpu_millis, spec.memory_bytes), (None, None));
    }

    #[test]
    fn the_spec_hash_is_stable_across_agents() {
        // An agent that computes another hash for the same container replaces every running one.
        assert_eq!(spec_hash(&web()), "f16dfd166a0bcd3b");
    }

    fn info_at(ip: &str) -> ContainerInfo {
        ContainerInfo { oom_killed: false, id: "c1".into(), image_id: String::new(), labels: BTreeMap::new(), running: true, exit_code: None, started_at: None, finished_at: None, ip: ip.parse().ok() }
    }

    #[tokio::test]
    async fn tcp_and_http_probes_reach_a_named_port_and_fail_on_a_closed_one() {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let port = listener.local_addr().unwrap().port();
        tokio::spawn(async move {
            use tokio::io::{AsyncReadExt, AsyncWriteExt};
            while let Ok((mut s, _)) = listener.accept().await {
                let mut buf = [0u8; 256];
                let _ = s.read(&mut buf).await;
                let _ = s.write_all(b"HTTP/1.0 204 No Content\r\n\r\n").await;
            }
        });
        let closed = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap().local_addr().unwrap().port();
        let container = Container { ports: vec![ContainerPort { container_port: i64::from(port), name: Some("http".into()), ..Default::default() }], ..web() };
        let fake = FakeRuntime::with_images(&[]);
        let on = |port: IntOrString| Probe { tcp_socket: Some(TcpSocketAction { port, ..Default::default() }), ..Default::default() };
        let http = |port: IntOrString| Probe { http_get: Some(HttpGetAction { port, path: Some("/healthz".into()), ..Default::default() }), ..Default::default() };
        let info = info_at("127.0.0.1");
        assert!(probe(&fake, &on(IntOrString::String("http".into())), &container, &info).await);
        assert!(probe(&fake, &http(IntOrString::String("http".into())), &container, &info).await);
        assert!(!probe(&fake, &on(IntOrString::String("metrics".into())), &container, &info).await, "an unknown port name fails");
        assert!(!probe(&fake, &on(IntOrString::Int(i64::from(closed))), &container, &info).await);
        let elsewhere = Probe { tcp_socket: Some(TcpSocketAction { port: IntOrString::Int(i64::from(port)), host: Some("127.0.0.1".into()), ..Default::default() }), ..Default::default() };
        assert!(probe(&fake, &elsewhere, &container, &info_at("192.0.2.1")).await, "host wins over the container's address");
        assert!(!probe(&fake, &Probe::default(), &container, &info).await, "a probe without an action fails");
    }

    #[tokio::test(start_paused = true)]
    async fn the_status_is_written_with_the_field_names_it_always_had() {
        let fake = FakeRuntime::with_images(&[IMAGE]);
        let mut sync = sync_of(&fake);
        let p = pod("web-1", "Always", web());
        sync.sync(std::slice::from_ref(&p)).await.unwrap();
        let updates = sync.sync(std::slice::from_ref(&p)).await.unwrap();
        let wire = serde_json::to_value(&updates[0].status).unwrap();
        let mut fields: Vec<&str> = wire.as_object().unwrap().keys().map(String::as_str).collect();
        fields.sort();
        assert_eq!(fields, ["conditions", "containerStatuses", "hostIP", "phase", "podIP", "podIPs", "qosClass", "startTime"]);
        let container = wire["containerStatuses"][0].as_object().unwrap();
        let mut fields: Vec<&str> = container.keys().map(String::as_str).collect();
        fields.sort();
        assert_eq!(fields, ["containerID", "image", "imageID", "name", "ready", "restartCount", "started", "state"], "imageID always, as Kubernetes writes it");
        assert!(wire["containerStatuses"][0]["state"]["running"]["startedAt"].is_string());
        assert_eq!(wire["podIPs"][0]["ip"], "100.64.1.1");
        assert!(wire["conditions"].as_array().unwrap().iter().all(|c| c["lastTransitionTime"].is_string()));
    }

    #[tokio::test(start_paused = true)]
    async fn an_unchanged_status_is_not_written_again_and_transition_times_hold() {
        let fake = FakeRuntime::with_images(&[IMAGE]);
        let mut sync = sync_of(&fake);
        let mut p = pod("web-1", "Always", web());
        sync.sync(std::slice::from_ref(&p)).await.unwrap();
        let u = sync.sync(std::slice::from_ref(&p)).await.unwrap();
        sync.written("uid-web-1-0000", u[0].status.clone());
        p.status = u[0].status.clone();
        tokio::time::sleep(Duration::from_secs(5)).await;
        assert!(sync.sync(std::slice::from_ref(&p)).await.unwrap().is_empty(), "nothing changed, nothing written");
        let before = p.status.conditions.clone();
        p.status.phase = Some("Pending".into());
        let again = sync.sync(std::slice::from_ref(&p)).await.unwrap();
        assert_eq!(again.len(), 1, "a status someone else wrote is written back");
        assert_eq!(again[0].status.conditions, before, "conditions whose status held keep their transition times");
    }
}
