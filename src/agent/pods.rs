//! Pod sync: makes the node's containers match the pods bound to it, and reports their status.
//!
//! Level-triggered: every second (and whenever the watched pods change) [`PodSync::sync`] compares
//! the pods with the runtime's containers, found by their labels (so that a restarted agent adopts
//! what runs instead of recreating it), and acts: create, restart after a crash-loop back-off
//! (10 s doubling to 300 s, reset after 10 minutes running), probe, stop gracefully. It returns the
//! pod statuses that changed; [`run`] writes them with `replace_status`.
//!
//! # Networking contract
//! Containers run on their node's pod bridge, wired by the agent ([`super::runtime::podnet`]).
//! Every TCP `containerPort` is published on the node: on its `hostPort` when given, otherwise on
//! an ephemeral port the kernel picks, forwarded by the agent to the container. The pod's
//! `status.podIP` is the node's internal IP (equal to `hostIP`), and `status.publishedPorts` lists
//! `{containerName, containerPort, hostPort}`, so that the pod's port P is reached from anywhere in
//! the VPC at `podIP:<hostPort of P>`. The service proxy ([`crate::proxy`]) makes that translation
//! for endpoints that name their pod; an endpoint without a known pod is dialled as written.

use std::collections::{BTreeMap, HashMap, HashSet};
use std::net::{IpAddr, SocketAddr};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use futures::StreamExt;
use serde_json::{Value, json};
use sha2::{Digest, Sha256};
use tokio::time::Instant;

use super::runtime::{ContainerInfo, ContainerRuntime, ContainerSpec, PortSpec, RuntimeError, labels};
use crate::api::resource::PODS;
use crate::api::time::now_rfc3339;
use crate::client::{ApiClient, ListOptions};

/// First crash-loop back-off.
pub const BACKOFF_START: Duration = Duration::from_secs(10);
/// Longest crash-loop back-off.
pub const BACKOFF_CAP: Duration = Duration::from_secs(300);
/// A container running this long has its back-off reset.
pub const BACKOFF_RESET: Duration = Duration::from_secs(600);
/// Default termination grace period.
pub const DEFAULT_GRACE: Duration = Duration::from_secs(30);

fn str_at<'a>(v: &'a Value, pointer: &str) -> Option<&'a str> {
    v.pointer(pointer).and_then(Value::as_str)
}

/// A probe's settings with Kubernetes' defaults.
#[derive(Debug, Clone)]
struct ProbeSpec {
    action: Value,
    initial_delay: Duration,
    period: Duration,
    timeout: Duration,
    failure_threshold: u32,
    success_threshold: u32,
}

impl ProbeSpec {
    fn parse(probe: Option<&Value>) -> Option<ProbeSpec> {
        let p = probe?;
        let num = |k: &str, d: u64| p.get(k).and_then(Value::as_u64).unwrap_or(d);
        Some(ProbeSpec {
            action: p.clone(),
            initial_delay: Duration::from_secs(num("initialDelaySeconds", 0)),
            period: Duration::from_secs(num("periodSeconds", 10).max(1)),
            timeout: Duration::from_secs(num("timeoutSeconds", 1).max(1)),
            failure_threshold: num("failureThreshold", 3).max(1) as u32,
            success_threshold: num("successThreshold", 1).max(1) as u32,
        })
    }
}

/// Consecutive results of one probe.
#[derive(Debug, Default)]
struct ProbeTrack {
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
    last_terminated: Option<Value>,
    liveness: ProbeTrack,
    readiness: ProbeTrack,
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
            liveness: ProbeTrack::default(),
            readiness: ProbeTrack::default(),
        }
    }
}

#[derive(Debug)]
struct PodTrack {
    containers: HashMap<String, ContainerTrack>,
    start_time: String,
    /// The status last written (or read back), to write only changes.
    last_status: Option<Value>,
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
}

/// Where a container start made in the background stands.
#[derive(Debug, Clone)]
enum Start {
    Running,
    /// Finished at this instant: created and started, or why not (reason, message).
    Done(Instant, Result<(), (String, String)>),
}

/// The container starts in flight or finished, by `<pod uid>/<container name>`.
type Starts = Arc<Mutex<HashMap<String, Start>>>;

/// How long a sync waits for the container starts it made before it reports what it has; the
/// starts that take longer finish in the background and are seen by a later sync, so that a pod
/// bound later, or one that started at once, is not held behind a busy runtime.
const START_WAIT: Duration = Duration::from_millis(500);

/// A pod status to write.
#[derive(Debug, Clone, PartialEq)]
pub struct StatusUpdate {
    pub namespace: String,
    pub name: String,
    pub status: Value,
}

/// Hash of what the container is run with (not of its JSON, which a rewrite of the pod by a typed
/// client may reorder or fill with defaults): a change means a new container.
fn spec_hash(container: &Value) -> String {
    let s = container_spec("", &Value::Null, container, 0);
    let key = format!("{:?}", (&s.image, &s.command, &s.args, &s.env, &s.working_dir, &s.ports, s.cpu_millis, s.memory_bytes));
    hex::encode(&Sha256::digest(key.as_bytes())[..8])
}

fn grace_of(pod: &Value) -> Duration {
    pod.pointer("/spec/terminationGracePeriodSeconds").and_then(Value::as_u64).map(Duration::from_secs).unwrap_or(DEFAULT_GRACE)
}

/// CPU quantity (`500m`, `1`, `0.5`) in millicores.
fn cpu_millis(q: &str) -> Option<u64> {
    match q.strip_suffix('m') {
        Some(m) => m.parse().ok(),
        None => q.parse::<f64>().ok().map(|c| (c * 1000.0) as u64),
    }
}

/// Memory quantity (`64Mi`, `1G`, `1000`) in bytes.
fn memory_bytes(q: &str) -> Option<u64> {
    const UNITS: &[(&str, u64)] =
        &[("Ki", 1 << 10), ("Mi", 1 << 20), ("Gi", 1 << 30), ("Ti", 1 << 40), ("k", 1000), ("M", 1_000_000), ("G", 1_000_000_000), ("T", 1_000_000_000_000)];
    for (suffix, mult) in UNITS {
        if let Some(n) = q.strip_suffix(suffix) {
            return n.parse::<f64>().ok().map(|n| (n * *mult as f64) as u64);
        }
    }
    q.parse::<f64>().ok().map(|n| n as u64)
}

fn quantity(container: &Value, resource: &str) -> Option<String> {
    let v = container.pointer(&format!("/resources/limits/{resource}"))?;
    Some(match v {
        Value::String(s) => s.clone(),
        other => other.to_string(),
    })
}

/// The runtime's spec for one pod container.
fn container_spec(prefix: &str, pod: &Value, container: &Value, attempt: u32) -> ContainerSpec {
    let (ns, name, uid) = (str_at(pod, "/metadata/namespace").unwrap_or("default"), str_at(pod, "/metadata/name").unwrap_or(""), str_at(pod, "/metadata/uid").unwrap_or(""));
    let cname = str_at(container, "/name").unwrap_or("");
    let strings = |k: &str| container.get(k).and_then(Value::as_array).map(|a| a.iter().filter_map(|s| s.as_str().map(String::from)).collect()).unwrap_or_default();
    let env = container
        .get("env")
        .and_then(Value::as_array)
        .map(|a| a.iter().filter_map(|e| Some((e.get("name")?.as_str()?.to_string(), e.get("value").and_then(Value::as_str).unwrap_or("").to_string()))).collect())
        .unwrap_or_default();
    let ports = container
        .get("ports")
        .and_then(Value::as_array)
        .map(|a| {
            a.iter()
                .filter(|p| p.get("protocol").and_then(Value::as_str).is_none_or(|p| p.eq_ignore_ascii_case("TCP")))
                .filter_map(|p| {
                    Some(PortSpec {
                        container_port: u16::try_from(p.get("containerPort")?.as_u64()?).ok()?,
                        host_port: p.get("hostPort").and_then(Value::as_u64).and_then(|h| u16::try_from(h).ok()).filter(|h| *h != 0),
                    })
                })
                .collect()
        })
        .unwrap_or_default();
    let mut spec = ContainerSpec {
        name: format!("{prefix}{cname}_{name}_{ns}_{}_{attempt}", uid.get(..8).unwrap_or(uid)),
        image: str_at(container, "/image").unwrap_or("").to_string(),
        command: strings("command"),
        args: strings("args"),
        env,
        working_dir: str_at(container, "/workingDir").map(String::from),
        ports,
        cpu_millis: quantity(container, "cpu").and_then(|q| cpu_millis(&q)),
        memory_bytes: quantity(container, "memory").and_then(|q| memory_bytes(&q)),
        labels: BTreeMap::new(),
    };
    if !pod.is_null() {
        spec.labels = BTreeMap::from([
            (labels::NAMESPACE.to_string(), ns.to_string()),
            (labels::POD.to_string(), name.to_string()),
            (labels::UID.to_string(), uid.to_string()),
            (labels::CONTAINER.to_string(), cname.to_string()),
            (labels::SPEC_HASH.to_string(), spec_hash(container)),
            (labels::GRACE.to_string(), grace_of(pod).as_secs().to_string()),
        ]);
    }
    spec
}

/// Runs one probe against a running container; `true` when it passes.
async fn probe<R: ContainerRuntime>(runtime: &R, spec: &ProbeSpec, container: &Value, info: &ContainerInfo) -> bool {
    let port_of = |p: &Value| -> Option<u16> {
        match p {
            Value::Number(n) => n.as_u64().and_then(|n| u16::try_from(n).ok()),
            Value::String(name) => container
                .get("ports")?
                .as_array()?
                .iter()
                .find(|cp| cp.get("name").and_then(Value::as_str) == Some(name))?
                .get("containerPort")?
                .as_u64()
                .and_then(|n| u16::try_from(n).ok()),
            _ => None,
        }
    };
    let target = |action: &Value| -> Option<SocketAddr> {
        let port = port_of(action.get("port")?)?;
        let ip = action.get("host").and_then(Value::as_str).and_then(|h| h.parse().ok()).or(info.ip)?;
        Some(SocketAddr::new(ip, port))
    };
    let attempt = async {
        if let Some(exec) = spec.action.get("exec") {
            let cmd: Vec<String> = exec.get("command").and_then(Value::as_array).map(|a| a.iter().filter_map(|s| s.as_str().map(String::from)).collect()).unwrap_or_default();
            return matches!(runtime.exec(&info.id, &cmd).await, Ok(0));
        }
        if let Some(tcp) = spec.action.get("tcpSocket") {
            let Some(addr) = target(tcp) else { return false };
            return tokio::net::TcpStream::connect(addr).await.is_ok();
        }
        if let Some(http) = spec.action.get("httpGet") {
            let Some(addr) = target(http) else { return false };
            let path = http.get("path").and_then(Value::as_str).unwrap_or("/");
            return http_get(addr, path).await.is_some_and(|code| (200..400).contains(&code));
        }
        false
    };
    tokio::time::timeout(spec.timeout, attempt).await.unwrap_or(false)
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
async fn step_probe<R: ContainerRuntime>(runtime: &R, spec: Option<&ProbeSpec>, track: &mut ProbeTrack, since: Instant, container: &Value, info: &ContainerInfo, now: Instant) {
    let Some(spec) = spec else {
        track.passing = true;
        return;
    };
    let due = track.next.unwrap_or(since + spec.initial_delay);
    if now < due {
        return;
    }
    track.next = Some(now + spec.period);
    if probe(runtime, spec, container, info).await {
        track.successes += 1;
        track.failures = 0;
        if track.successes >= spec.success_threshold {
            track.passing = true;
        }
    } else {
        track.failures += 1;
        track.successes = 0;
        if track.failures >= spec.failure_threshold {
            track.passing = false;
        }
    }
}

impl<R: ContainerRuntime> PodSync<R> {
    /// Pod sync for the node at `node_ip`.
    pub fn new(runtime: Arc<R>, node_ip: IpAddr) -> Self {
        PodSync { runtime, node_ip, pods: HashMap::new(), terminating: Arc::default(), starting: Arc::default(), name_prefix: "k8s_".into() }
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

    fn is_terminating(&self, id: &str) -> bool {
        self.terminating.lock().unwrap_or_else(|e| e.into_inner()).contains(id)
    }

    /// One pass: `desired` are the pods bound to this node. Returns the statuses to write.
    pub async fn sync(&mut self, desired: &[Value]) -> Result<Vec<StatusUpdate>, RuntimeError> {
        let now = Instant::now();
        let actual = self.runtime.list(labels::UID).await?;
        let live: HashMap<&str, &Value> = desired
            .iter()
            .filter(|p| p.pointer("/metadata/deletionTimestamp").is_none_or(Value::is_null))
            .filter_map(|p| Some((str_at(p, "/metadata/uid")?, p)))
            .collect();

        // Containers of pods that are gone: stop them gracefully.
        let mut by_pod: HashMap<String, HashMap<String, Vec<ContainerInfo>>> = HashMap::new();
        for c in actual {
            let uid = c.labels.get(labels::UID).cloned().unwrap_or_default();
            if !live.contains_key(uid.as_str()) {
                if !self.is_terminating(&c.id) {
                    let grace = c.labels.get(labels::GRACE).and_then(|g| g.parse().ok()).map(Duration::from_secs).unwrap_or(DEFAULT_GRACE);
                    tracing::info!(container = %c.id, pod = ?c.labels.get(labels::POD), "stopping the container of a deleted pod");
                    self.terminate(&c.id, grace);
                }
                continue;
            }
            let cname = c.labels.get(labels::CONTAINER).cloned().unwrap_or_default();
            by_pod.entry(uid).or_default().entry(cname).or_default().push(c);
        }
        self.pods.retain(|uid, _| live.contains_key(uid.as_str()));
        self.starting.lock().unwrap_or_else(|e| e.into_inner()).retain(|key, start| {
            matches!(start, Start::Running) || key.split_once('/').is_some_and(|(uid, _)| live.contains_key(uid))
        });
        for (uid, pod) in &live {
            self.pods.entry(uid.to_string()).or_insert_with(|| PodTrack {
                containers: HashMap::new(),
                start_time: str_at(pod, "/status/startTime").map(String::from).unwrap_or_else(now_rfc3339),
                last_status: None,
            });
        }

        // Pods are synced concurrently: a node starting 30 pods waits for Docker once, not 30 times.
        let started = Mutex::new(Vec::new());
        let env = SyncEnv {
            runtime: &*self.runtime,
            shared: &self.runtime,
            prefix: &self.name_prefix,
            terminating: &self.terminating,
            starting: &self.starting,
            started: &started,
            listed_at: now,
            node_ip: self.node_ip,
        };
        let env = &env;
        let work = self.pods.iter_mut().filter_map(|(uid, track)| {
            let pod = *live.get(uid.as_str())?;
            let containers = by_pod.remove(uid).unwrap_or_default();
            Some(async move { (pod, sync_pod(env, track, pod, containers, now).await) })
        });
        let results = futures::future::join_all(work).await;
        let started = started.into_inner().unwrap_or_else(|e| e.into_inner());
        if !started.is_empty() {
            let _ = tokio::time::timeout(START_WAIT, futures::future::join_all(started)).await;
        }
        let mut updates = Vec::new();
        for (pod, (status, to_terminate)) in results {
            for (id, grace, remove) in to_terminate {
                self.stop_in_background(&id, grace, remove);
            }
            if let Some(status) = status {
                updates.push(StatusUpdate {
                    namespace: str_at(pod, "/metadata/namespace").unwrap_or("default").to_string(),
                    name: str_at(pod, "/metadata/name").unwrap_or("").to_string(),
                    status,
                });
            }
        }
        Ok(updates)
    }

    /// Remembers that `status` was written for the pod `uid`.
    pub fn written(&mut self, uid: &str, status: Value) {
        if let Some(t) = self.pods.get_mut(uid) {
            t.last_status = Some(status);
        }
    }
}

/// What every pod's sync shares.
struct SyncEnv<'a, R> {
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
}

/// Syncs one pod; returns its status when it differs from the last one written, and the
/// containers to stop.
async fn sync_pod<R: ContainerRuntime>(env: &SyncEnv<'_, R>, track: &mut PodTrack, pod: &Value, mut actual: HashMap<String, Vec<ContainerInfo>>, now: Instant) -> (Option<Value>, Vec<(String, Duration, bool)>) {
    let policy = str_at(pod, "/spec/restartPolicy").unwrap_or("Always").to_string();
    let grace = grace_of(pod);
    let specs: Vec<Value> = pod.pointer("/spec/containers").and_then(Value::as_array).cloned().unwrap_or_default();
    let known_restarts: HashMap<String, u32> = pod
        .pointer("/status/containerStatuses")
        .and_then(Value::as_array)
        .map(|a| a.iter().filter_map(|s| Some((s.get("name")?.as_str()?.to_string(), s.get("restartCount")?.as_u64()? as u32))).collect())
        .unwrap_or_default();
    let mut to_terminate = Vec::new();
    let mut infos: HashMap<String, Option<ContainerInfo>> = HashMap::new();

    for spec in &specs {
        let cname = str_at(spec, "/name").unwrap_or("").to_string();
        let ct = track.containers.entry(cname.clone()).or_insert_with(|| ContainerTrack::new(known_restarts.get(&cname).copied().unwrap_or(0)));
        let hash = spec_hash(spec);
        let mut found = actual.remove(&cname).unwrap_or_default();
        // A container of an older spec is replaced.
        found.retain(|c| {
            let same = c.labels.get(labels::SPEC_HASH) == Some(&hash);
            if !same {
                to_terminate.push((c.id.clone(), grace, true));
            }
            same
        });
        found.sort_by_key(|c| (c.running, c.started_at.clone()));
        let current = found.pop();
        let start_key = format!("{}/{cname}", str_at(pod, "/metadata/uid").unwrap_or(""));
        if current.is_some() {
            let mut starting = env.starting.lock().unwrap_or_else(|e| e.into_inner());
            if matches!(starting.get(&start_key), Some(Start::Done(..))) {
                starting.remove(&start_key);
            }
        }
        for extra in found {
            to_terminate.push((extra.id, grace, true));
        }
        if current.as_ref().is_some_and(|c| env.terminating.lock().unwrap_or_else(|e| e.into_inner()).contains(&c.id)) {
            // Being stopped (liveness failure, new spec): look again once it is gone.
            infos.insert(cname, None);
            continue;
        }
        let liveness = ProbeSpec::parse(spec.get("livenessProbe"));
        let readiness = ProbeSpec::parse(spec.get("readinessProbe"));
        match current {
            Some(c) if c.running => {
                if ct.container_id.as_deref() != Some(&c.id) {
                    // Started by us just now, or adopted after an agent restart.
                    ct.container_id = Some(c.id.clone());
                    ct.running_since = Some(now);
                    ct.liveness = ProbeTrack { passing: true, ..Default::default() };
                    ct.readiness = ProbeTrack::default();
                }
                ct.waiting = None;
                ct.restart_at = None;
                let since = ct.running_since.unwrap_or(now);
                if now.duration_since(since) >= BACKOFF_RESET {
                    ct.backoff = BACKOFF_START;
                }
                step_probe(env.runtime, liveness.as_ref(), &mut ct.liveness, since, spec, &c, now).await;
                step_probe(env.runtime, readiness.as_ref(), &mut ct.readiness, since, spec, &c, now).await;
                if !ct.liveness.passing {
                    tracing::info!(pod = ?str_at(pod, "/metadata/name"), container = %cname, "liveness probe failed; restarting");
                    to_terminate.push((c.id.clone(), grace, false));
                    ct.liveness = ProbeTrack { passing: true, ..Default::default() };
                }
                infos.insert(cname, Some(c));
            }
            Some(c) => {
                // Exited.
                let exit = c.exit_code.unwrap_or(-1);
                ct.last_terminated = Some(json!({
                    "exitCode": exit,
                    "reason": if exit == 0 { "Completed" } else { "Error" },
                    "startedAt": c.started_at, "finishedAt": c.finished_at, "containerID": format!("docker://{}", c.id),
                }));
                ct.readiness = ProbeTrack::default();
                let restart = match policy.as_str() {
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
                        if let Err(e) = env.runtime.remove(&c.id).await {
                            tracing::warn!(container = %c.id, error = %e, "removing an exited container");
                        }
                        start(env, start_key, pod, spec, ct).await;
                        infos.insert(cname, None);
                    } else {
                        ct.waiting = Some(("CrashLoopBackOff".into(), format!("back-off {}s restarting failed container {cname}", ct.backoff.as_secs())));
                        infos.insert(cname, Some(c));
                    }
                } else {
                    ct.waiting = None;
                    infos.insert(cname, Some(c));
                }
            }
            None => {
                start(env, start_key, pod, spec, ct).await;
                infos.insert(cname, None);
            }
        }
    }
    // Containers no longer in the spec.
    for rest in actual.values().flatten() {
        to_terminate.push((rest.id.clone(), grace, true));
    }
    let status = pod_status(pod, &specs, track, &infos, env.node_ip, &policy);
    let current = pod.get("status").filter(|s| !s.is_null());
    // Written when it changed, or when the stored status is not ours (a fresh agent, someone
    // else's write, or our write not yet seen by the watch).
    if track.last_status.as_ref() == Some(&status) && current == Some(&status) {
        return (None, to_terminate);
    }
    (Some(status), to_terminate)
}

/// Creates and starts a container in the background (a start already under way is left to
/// finish); records in `ct.waiting` where it stands, or why it cannot start.
async fn start<R: ContainerRuntime>(env: &SyncEnv<'_, R>, key: String, pod: &Value, spec: &Value, ct: &mut ContainerTrack) {
    {
        let mut starting = env.starting.lock().unwrap_or_else(|e| e.into_inner());
        match starting.get(&key) {
            Some(Start::Running) => return,
            // Started after the containers were listed: the next sync sees it.
            Some(Start::Done(at, Ok(()))) if *at >= env.listed_at => return,
            Some(Start::Done(_, Err(why))) => {
                ct.waiting = Some(why.clone());
                starting.remove(&key);
                return;
            }
            // Started, and gone since: start again.
            Some(Start::Done(_, Ok(()))) | None => {
                starting.remove(&key);
            }
        }
    }
    let image = str_at(spec, "/image").unwrap_or("");
    let never = str_at(spec, "/imagePullPolicy") == Some("Never");
    match env.runtime.image_present(image).await {
        Ok(true) => {}
        Ok(false) => {
            let reason = if never { "ErrImageNeverPull" } else { "ImageNotPresent" };
            ct.waiting = Some((reason.into(), format!("image {image} is not present on this node; load it with `clusterctl image load` (nodes never pull)")));
            return;
        }
        Err(e) => {
            ct.waiting = Some(("RuntimeUnavailable".into(), e.to_string()));
            return;
        }
    }
    ct.container_id = None; // set when seen running, which resets probes
    ct.waiting = Some(("ContainerCreating".into(), String::new()));
    env.starting.lock().unwrap_or_else(|e| e.into_inner()).insert(key.clone(), Start::Running);
    let (runtime, starting, container) = (env.shared.clone(), env.starting.clone(), container_spec(env.prefix, pod, spec, ct.restart_count));
    let task = tokio::spawn(async move {
        let outcome = match runtime.run(&container).await {
            Ok(_) => Ok(()),
            Err(e) => Err(("CreateContainerError".to_string(), e.to_string())),
        };
        starting.lock().unwrap_or_else(|e| e.into_inner()).insert(key, Start::Done(Instant::now(), outcome));
    });
    env.started.lock().unwrap_or_else(|e| e.into_inner()).push(task);
}

/// The pod's status from what the sync saw.
fn pod_status(pod: &Value, specs: &[Value], track: &PodTrack, infos: &HashMap<String, Option<ContainerInfo>>, node_ip: IpAddr, policy: &str) -> Value {
    let mut statuses = Vec::new();
    let mut published = Vec::new();
    let (mut all_ready, mut any_running, mut all_terminated, mut any_failed, mut all_started) = (true, false, true, false, true);
    for spec in specs {
        let cname = str_at(spec, "/name").unwrap_or("");
        let Some(ct) = track.containers.get(cname) else { continue };
        let info = infos.get(cname).cloned().flatten();
        let (state, ready, started) = match (&info, &ct.waiting) {
            (Some(c), None) if c.running => (json!({ "running": { "startedAt": c.started_at } }), ct.readiness.passing, true),
            (Some(c), None) => {
                let exit = c.exit_code.unwrap_or(-1);
                any_failed |= exit != 0;
                (json!({ "terminated": ct.last_terminated }), false, true)
            }
            (_, Some((reason, message))) => (json!({ "waiting": { "reason": reason, "message": message } }), false, ct.last_terminated.is_some()),
            (None, None) => (json!({ "waiting": { "reason": "ContainerCreating" } }), false, false),
        };
        let running = state.get("running").is_some();
        any_running |= running;
        all_ready &= ready;
        all_terminated &= state.get("terminated").is_some();
        all_started &= started;
        if let Some(c) = &info {
            for (cport, hport) in &c.published {
                published.push(json!({ "containerName": cname, "containerPort": cport, "hostPort": hport }));
            }
        }
        let mut s = json!({
            "name": cname, "image": str_at(spec, "/image").unwrap_or(""), "ready": ready,
            "restartCount": ct.restart_count, "started": running, "state": state,
        });
        if let Some(c) = &info {
            s["containerID"] = json!(format!("docker://{}", c.id));
        }
        if let Some(t) = &ct.last_terminated
            && state.get("terminated").is_none()
        {
            s["lastState"] = json!({ "terminated": t });
        }
        statuses.push(s);
    }
    let phase = if all_terminated && !specs.is_empty() && policy != "Always" {
        if any_failed { "Failed" } else { "Succeeded" }
    } else if any_running || (all_started && !specs.is_empty()) {
        "Running"
    } else {
        "Pending"
    };
    let ready = all_ready && !specs.is_empty();
    // Keep each condition's transition time while its status holds.
    let old_conditions: Vec<Value> = pod.pointer("/status/conditions").and_then(Value::as_array).cloned().unwrap_or_default();
    let condition = |kind: &str, ok: bool| {
        let status = if ok { "True" } else { "False" };
        let since = old_conditions
            .iter()
            .find(|c| c.get("type").and_then(Value::as_str) == Some(kind) && c.get("status").and_then(Value::as_str) == Some(status))
            .and_then(|c| c.get("lastTransitionTime").cloned())
            .unwrap_or_else(|| json!(now_rfc3339()));
        json!({ "type": kind, "status": status, "lastTransitionTime": since })
    };
    json!({
        "phase": phase,
        "conditions": [condition("PodScheduled", true), condition("Initialized", true), condition("ContainersReady", ready), condition("Ready", ready)],
        "containerStatuses": statuses,
        "hostIP": node_ip.to_string(),
        "podIP": node_ip.to_string(),
        "podIPs": [{ "ip": node_ip.to_string() }],
        "publishedPorts": published,
        "startTime": track.start_time,
    })
}

/// Reads the pods last saved by [`save_checkpoint`].
pub fn load_checkpoint(path: &Path) -> Option<Vec<Value>> {
    serde_json::from_slice(&std::fs::read(path).ok()?).ok()
}

/// Saves the pods bound to the node (write to a temporary file, then rename), so that an agent
/// restarted while the API server is unreachable keeps running and restarting them.
pub fn save_checkpoint(path: &Path, pods: &[Value]) -> std::io::Result<()> {
    if let Some(dir) = path.parent() {
        std::fs::create_dir_all(dir)?;
    }
    let tmp = path.with_extension("tmp");
    std::fs::write(&tmp, serde_json::to_vec(pods).map_err(std::io::Error::other)?)?;
    std::fs::rename(&tmp, path)
}

/// Runs pod sync for `node_name` until the process ends: a reflector keeps the bound pods, a
/// second-by-second sync drives the runtime, and changed statuses are written. Runtime and API
/// failures are logged and retried; what runs keeps running. With a `checkpoint` file, the last
/// known pods are saved there and used at start until the API server answers.
pub async fn run<R: ContainerRuntime>(client: ApiClient, runtime: Arc<R>, node_name: String, node_ip: IpAddr, checkpoint: Option<PathBuf>) {
    let (tx, mut rx) = tokio::sync::watch::channel(super::reflector::Objects::new());
    tokio::spawn(super::reflector::reflect(client.clone(), &PODS, ListOptions::fields(format!("spec.nodeName={node_name}")), tx));
    let mut sync = PodSync::new(runtime, node_ip);
    let mut ticker = tokio::time::interval(Duration::from_secs(1));
    ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    // Until the first list arrives, an empty copy must not stop the containers that run: the
    // checkpoint stands in for it, or nothing is done.
    let saved = checkpoint.as_deref().and_then(load_checkpoint);
    let mut listed = false;
    loop {
        let fired = tokio::select! {
            _ = ticker.tick() => false,
            changed = rx.changed() => {
                if changed.is_err() {
                    return;
                }
                true
            }
        };
        let fresh = fired || rx.has_changed().unwrap_or(false);
        listed |= fresh;
        if !listed {
            if let Some(pods) = &saved
                && let Err(e) = sync.sync(pods).await
            {
                tracing::warn!(error = %e, "syncing the checkpointed pods with the container runtime");
            }
            continue;
        }
        if fresh
            && let Some(path) = &checkpoint
        {
            let pods: Vec<Value> = rx.borrow().values().cloned().collect();
            if let Err(e) = save_checkpoint(path, &pods) {
                tracing::warn!(path = %path.display(), error = %e, "saving the pods checkpoint");
            }
        }
        let desired: Vec<Value> = rx.borrow_and_update().values().cloned().collect();
        let updates = match sync.sync(&desired).await {
            Ok(u) => u,
            Err(e) => {
                tracing::warn!(error = %e, "syncing pods with the container runtime");
                continue;
            }
        };
        // The writes wait on the API server concurrently: a node that started 30 pods reports
        // them in a few round trips, not 30.
        let writes = updates.into_iter().filter_map(|u| {
            let pod = desired.iter().find(|p| str_at(p, "/metadata/name") == Some(&u.name) && str_at(p, "/metadata/namespace") == Some(&u.namespace))?;
            let (client, path) = (&client, format!("{}/status", PODS.object_path(Some(&u.namespace), &u.name)));
            let mut object = pod.clone();
            object["status"] = u.status.clone();
            Some(async move {
                match client.replace_value(&path, &object).await {
                    Ok(_) => Some((str_at(pod, "/metadata/uid").unwrap_or("").to_string(), u.status)),
                    Err(e) => {
                        tracing::debug!(pod = %u.name, error = %e, "writing pod status; retrying on the next sync");
                        None
                    }
                }
            })
        });
        let written: Vec<Option<(String, Value)>> = futures::stream::iter(writes).buffer_unordered(STATUS_WRITES_IN_FLIGHT).collect().await;
        for (uid, status) in written.into_iter().flatten() {
            sync.written(&uid, status);
        }
    }
}

/// How many pod status writes one sync has waiting on the API server at once.
const STATUS_WRITES_IN_FLIGHT: usize = 8;

#[cfg(test)]
mod tests {
    use super::*;
    use crate::agent::runtime::fake::FakeRuntime;

    const IMAGE: &str = "clusterctl-busybox:latest";

    fn pod(name: &str, restart_policy: &str, container: Value) -> Value {
        json!({
            "apiVersion": "v1", "kind": "Pod",
            "metadata": { "name": name, "namespace": "default", "uid": format!("uid-{name}-0000") },
            "spec": { "nodeName": "w1", "restartPolicy": restart_policy, "terminationGracePeriodSeconds": 5, "containers": [container] },
        })
    }

    fn web() -> Value {
        json!({ "name": "web", "image": IMAGE, "command": ["httpd", "-f"], "ports": [{ "containerPort": 80 }],
                "resources": { "limits": { "cpu": "500m", "memory": "64Mi" } } })
    }

    fn sync_of(fake: &FakeRuntime) -> PodSync<FakeRuntime> {
        PodSync::new(Arc::new(fake.clone()), "10.0.1.5".parse().unwrap())
    }

    fn container_status(update: &[StatusUpdate]) -> Value {
        update.last().expect("a status").status["containerStatuses"][0].clone()
    }

    fn running_ids(fake: &FakeRuntime) -> Vec<String> {
        fake.containers().into_iter().filter(|(_, i)| i.running).map(|(_, i)| i.id).collect()
    }

    #[tokio::test(start_paused = true)]
    async fn a_bound_pod_gets_one_labelled_container_with_its_ports_published_and_limits() {
        let fake = FakeRuntime::with_images(&[IMAGE]);
        let mut sync = sync_of(&fake);
        let p = pod("web-1", "Always", web());
        sync.sync(std::slice::from_ref(&p)).await.unwrap();
        let created = fake.containers();
        assert_eq!(created.len(), 1);
        let (spec, info) = &created[0];
        assert_eq!(spec.labels[labels::POD], "web-1");
        assert_eq!(spec.labels[labels::UID], "uid-web-1-0000");
        assert_eq!(spec.command, vec!["httpd", "-f"]);
        assert_eq!(spec.cpu_millis, Some(500));
        assert_eq!(spec.memory_bytes, Some(64 << 20));
        assert_eq!(spec.ports, vec![PortSpec { container_port: 80, host_port: None }]);
        let updates = sync.sync(std::slice::from_ref(&p)).await.unwrap();
        let status = &updates[0].status;
        assert_eq!(status["phase"], "Running");
        assert_eq!(status["podIP"], "10.0.1.5");
        assert_eq!(status["publishedPorts"][0]["containerPort"], 80);
        assert_eq!(status["publishedPorts"][0]["hostPort"], info.published[&80]);
        assert_eq!(container_status(&updates)["ready"], true);
        assert_eq!(status["conditions"][3]["type"], "Ready");
        assert_eq!(status["conditions"][3]["status"], "True");
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
        assert_eq!(fake.calls().iter().filter(|c| c.starts_with("run")).count(), 1);
    }

    #[tokio::test(start_paused = true)]
    async fn a_missing_image_is_reported_and_never_pulled() {
        let fake = FakeRuntime::with_images(&[]);
        let mut sync = sync_of(&fake);
        let mut c = web();
        c["imagePullPolicy"] = json!("Never");
        let updates = sync.sync(&[pod("web-1", "Always", c)]).await.unwrap();
        assert_eq!(container_status(&updates)["state"]["waiting"]["reason"], "ErrImageNeverPull");
        assert_eq!(updates[0].status["phase"], "Pending");
        assert!(fake.containers().is_empty());
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
                    if let Some(u) = last.last() {
                        assert_eq!(u.status["containerStatuses"][0]["state"]["waiting"]["reason"], "CrashLoopBackOff");
                    }
                    tokio::time::sleep(Duration::from_secs(1)).await;
                }
            }
            waits.push(crashed.elapsed().as_secs());
            let _ = last;
        }
        assert_eq!(waits, vec![10, 20, 40, 80]);
        let updates = sync.sync(std::slice::from_ref(&p)).await.unwrap();
        assert_eq!(container_status(&updates)["restartCount"], 4);
        assert_eq!(container_status(&updates)["lastState"]["terminated"]["exitCode"], 1);
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
        assert_eq!(updates[0].status["phase"], "Succeeded");
        assert_eq!(fake.calls().iter().filter(|c| c.starts_with("run")).count(), 1);
    }

    #[tokio::test(start_paused = true)]
    async fn a_readiness_probe_drives_the_ready_condition() {
        let fake = FakeRuntime::with_images(&[IMAGE]);
        let mut sync = sync_of(&fake);
        let mut c = web();
        c["readinessProbe"] = json!({ "exec": { "command": ["true"] }, "periodSeconds": 2, "failureThreshold": 2 });
        let mut p = pod("web-1", "Always", c);
        sync.sync(std::slice::from_ref(&p)).await.unwrap();
        let id = running_ids(&fake)[0].clone();
        let u = sync.sync(std::slice::from_ref(&p)).await.unwrap();
        assert_eq!(container_status(&u)["ready"], true);
        sync.written("uid-web-1-0000", u[0].status.clone());
        p["status"] = u[0].status.clone();
        fake.set_exec_result(&id, 1);
        tokio::time::sleep(Duration::from_secs(2)).await;
        assert!(sync.sync(std::slice::from_ref(&p)).await.unwrap().is_empty(), "one failure is below the threshold");
        tokio::time::sleep(Duration::from_secs(2)).await;
        let u = sync.sync(std::slice::from_ref(&p)).await.unwrap();
        assert_eq!(container_status(&u)["ready"], false);
        assert_eq!(u[0].status["conditions"][3]["status"], "False");
        assert_eq!(running_ids(&fake), vec![id], "readiness never restarts");
    }

    #[tokio::test(start_paused = true)]
    async fn a_failing_liveness_probe_restarts_the_container() {
        let fake = FakeRuntime::with_images(&[IMAGE]);
        let mut sync = sync_of(&fake);
        let mut c = web();
        c["livenessProbe"] = json!({ "exec": { "command": ["false"] }, "initialDelaySeconds": 5, "periodSeconds": 1, "failureThreshold": 2 });
        let p = pod("web-1", "Always", c);
        sync.sync(std::slice::from_ref(&p)).await.unwrap();
        let id = running_ids(&fake)[0].clone();
        fake.set_exec_result(&id, 1);
        for _ in 0..30 {
            sync.sync(std::slice::from_ref(&p)).await.unwrap();
            tokio::time::sleep(Duration::from_secs(1)).await;
        }
        assert!(fake.calls().contains(&format!("stop {id} 5s")));
        let u = sync.sync(std::slice::from_ref(&p)).await.unwrap();
        assert_eq!(fake.calls().iter().filter(|c| c.starts_with("run")).count(), 2);
        assert_eq!(container_status(&u)["restartCount"], 1, "a liveness restart counts");
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

    #[tokio::test]
    async fn on_the_hosts_docker_a_pod_becomes_ready_serves_on_its_published_port_and_is_removed_when_deleted() {
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
        let mut p = pod("web-1", "Always", json!({
            "name": "web", "image": IMAGE, "command": ["httpd", "-f", "-p", "8080", "-h", "/www"],
            "ports": [{ "containerPort": 8080 }],
            "readinessProbe": { "httpGet": { "path": "/", "port": 8080 }, "periodSeconds": 1 },
        }));
        let uid = format!("clusterctl-test-{}", hex::encode(rand::random::<[u8; 4]>()));
        p["metadata"]["uid"] = json!(uid);
        p["spec"]["terminationGracePeriodSeconds"] = json!(1);
        let mut sync = PodSync::new(rt.clone(), "127.0.0.1".parse().unwrap()).with_name_prefix("clusterctl-test-");
        let outcome = async {
            let deadline = Instant::now() + Duration::from_secs(20);
            let status = loop {
                let u = sync.sync(std::slice::from_ref(&p)).await.expect("sync");
                if let Some(u) = u.last()
                    && u.status["conditions"][3]["status"] == "True"
                {
                    break u.status.clone();
                }
                assert!(Instant::now() < deadline, "the pod never became ready");
                tokio::time::sleep(Duration::from_millis(500)).await;
            };
            let host_port = status["publishedPorts"][0]["hostPort"].as_u64().expect("a published port") as u16;
            assert_eq!(http_get(SocketAddr::new("127.0.0.1".parse().unwrap(), host_port), "/").await, Some(200));
            sync.sync(&[]).await.expect("sync");
            let deadline = Instant::now() + Duration::from_secs(15);
            while rt.list(labels::UID).await.expect("list").iter().any(|c| c.labels.get(labels::UID) == Some(&uid)) {
                assert!(Instant::now() < deadline, "the deleted pod's container was not removed");
                tokio::time::sleep(Duration::from_millis(200)).await;
            }
        };
        // A failed assertion must not leave the container behind.
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
        let mut same = web();
        same["args"] = json!([]);
        same["env"] = json!([]);
        same["readinessProbe"] = Value::Null;
        same["resources"]["limits"]["cpu"] = json!("0.5");
        sync.sync(&[pod("web-1", "Always", same)]).await.unwrap();
        let mut other = web();
        other["image"] = json!("other:1");
        sync.sync(&[pod("web-1", "Always", other)]).await.unwrap();
        let runs = fake.calls().iter().filter(|c| c.starts_with("run")).count();
        assert_eq!(runs, 2, "only the new image makes a new container: {:?}", fake.calls());
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
    fn quantities_parse_as_kubernetes_writes_them() {
        assert_eq!(cpu_millis("250m"), Some(250));
        assert_eq!(cpu_millis("2"), Some(2000));
        assert_eq!(cpu_millis("0.5"), Some(500));
        assert_eq!(memory_bytes("128Mi"), Some(128 << 20));
        assert_eq!(memory_bytes("1G"), Some(1_000_000_000));
    }
}
