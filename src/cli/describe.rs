//! `clusterctl describe node|pod|deployment|service NAME`: one object as readable text, in the
//! manner of `kubectl describe`: labels, the important spec fields, status, conditions with their
//! reasons and messages, and the related objects (a node's pods and what they request, a pod's
//! containers, a deployment's replica sets, a service's endpoints).
//!
//! The rendering functions are pure (api objects in, text out); [`run`] only fetches. An object that
//! does not read as its kind (stored before the API server validated objects) is shown as stored.

use std::collections::BTreeMap;
use std::fmt::Write as _;

use clap::{Args, ValueEnum};
use serde::Deserialize;
use serde::de::DeserializeOwned;
use serde_json::Value;

use super::table::render;
use super::{ClusterSelection, Failure};
use crate::api::columns::{age, pod_status};
use crate::api::deployment::{Deployment, ReplicaSet, POD_TEMPLATE_HASH_LABEL};
use crate::api::event::Event;
use crate::api::pod::{ContainerState, Pod, ResourceAmounts};
use crate::api::quantity::{parse_cpu_millicores, parse_memory_bytes, IntOrString};
use crate::api::resource::{self, Resource, ResourceType};
use crate::api::service::{Endpoints, Service};
use crate::api::Node;
use crate::client::{ApiClient, ListOptions};

/// What to describe.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum DescribeKind {
    #[value(alias = "nodes", alias = "no")]
    Node,
    #[value(alias = "pods", alias = "po")]
    Pod,
    #[value(alias = "deployments", alias = "deploy")]
    Deployment,
    #[value(alias = "services", alias = "svc")]
    Service,
}

impl DescribeKind {
    fn resource(self) -> &'static ResourceType {
        match self {
            DescribeKind::Node => &resource::NODES,
            DescribeKind::Pod => &resource::PODS,
            DescribeKind::Deployment => &resource::DEPLOYMENTS,
            DescribeKind::Service => &resource::SERVICES,
        }
    }
}

/// Arguments of `describe`.
#[derive(Debug, Args)]
pub struct DescribeArgs {
    /// What kind of object.
    #[arg(value_enum)]
    pub kind: DescribeKind,
    /// The object's name.
    pub name: String,
    /// The namespace (pods, deployments, services).
    #[arg(short = 'n', long, default_value = "default")]
    pub namespace: String,
    #[command(flatten)]
    pub cluster: ClusterSelection,
}

/// Runs `describe`.
pub async fn run(args: &DescribeArgs) -> Result<(), Failure> {
    let client = args.cluster.client()?;
    let rt = args.kind.resource();
    let namespace = rt.namespaced.then_some(args.namespace.as_str());
    // Read as JSON first so that an object that does not decode can still be shown as stored.
    let object: Value = client.get(rt, namespace, &args.name).await.map_err(|e| {
        if e.is_not_found() {
            let place = namespace.map(|ns| format!(" in namespace {ns}")).unwrap_or_default();
            Failure::Operation(anyhow::anyhow!("{} {:?} not found{place}", rt.kind.to_lowercase(), args.name))
        } else {
            Failure::Operation(anyhow::anyhow!("reading {} {}: {e}", rt.kind.to_lowercase(), args.name))
        }
    })?;
    let text = match args.kind {
        DescribeKind::Pod => Pod::deserialize(&object).map(|pod| describe_pod(&pod)),
        DescribeKind::Node => match Node::deserialize(&object) {
            Ok(node) => {
                let pods: Vec<Pod> = list(&client, None, ListOptions::fields(format!("spec.nodeName={}", args.name))).await?;
                Ok(describe_node(&node, &pods))
            }
            Err(e) => Err(e),
        },
        DescribeKind::Deployment => match Deployment::deserialize(&object) {
            Ok(deployment) => {
                let sets: Vec<ReplicaSet> = list(&client, namespace, ListOptions::default()).await?;
                Ok(describe_deployment(&deployment, &sets))
            }
            Err(e) => Err(e),
        },
        DescribeKind::Service => match Service::deserialize(&object) {
            Ok(service) => {
                let endpoints = match client.get::<Value>(&resource::ENDPOINTS, namespace, &args.name).await {
                    Ok(e) => decoded::<Endpoints>(e),
                    Err(e) if e.is_not_found() => None,
                    Err(e) => return Err(Failure::Operation(anyhow::anyhow!("reading the endpoints of service {}: {e}", args.name))),
                };
                Ok(describe_service(&service, endpoints.as_ref()))
            }
            Err(e) => Err(e),
        },
    };
    match text {
        Ok(text) => {
            // The events about this object, as kubectl describe finds them.
            let uid = object.pointer("/metadata/uid").and_then(Value::as_str).unwrap_or("");
            let selector = format!("involvedObject.kind={},involvedObject.name={},involvedObject.uid={uid}", rt.kind, args.name);
            let events: Vec<Event> = list(&client, namespace, ListOptions::fields(selector)).await.unwrap_or_default();
            print!("{text}{}", describe_events(&events));
        }
        Err(e) => {
            eprintln!("warning: {} {} does not read as a {} ({e}); shown as stored", rt.kind.to_lowercase(), args.name, rt.kind);
            print!("{}", serde_yaml_ng::to_string(&object)?);
        }
    }
    Ok(())
}

/// `Events:` as kubectl describe shows them, oldest first: type, reason, age (with the count and
/// since when, for repeats), the reporting component and the message.
pub fn describe_events(events: &[Event]) -> String {
    let mut d = Describer::new();
    if events.is_empty() {
        d.field(0, "Events", "<none>");
        return d.out;
    }
    let mut sorted: Vec<&Event> = events.iter().collect();
    sorted.sort_by_key(|e| e.last_seen());
    let mut rows = vec![
        ["Type", "Reason", "Age", "From", "Message"].map(String::from).to_vec(),
        ["----", "------", "----", "----", "-------"].map(String::from).to_vec(),
    ];
    for e in sorted {
        let last = age(e.last_seen());
        let age = if e.count > 1 { format!("{last} (x{} over {})", e.count, age(e.first_timestamp.or(e.last_seen()))) } else { last };
        let from = if e.source.host.is_empty() { e.source.component.clone() } else { format!("{}, {}", e.source.component, e.source.host) };
        rows.push(vec![e.event_type.clone(), e.reason.clone(), age, from, e.message.clone()]);
    }
    d.heading(0, "Events");
    d.table(2, rows);
    d.out
}

/// `item` as a `T`, or `None` with a warning naming it when it does not read as one.
fn decoded<T: DeserializeOwned + Resource>(item: Value) -> Option<T> {
    match T::deserialize(&item) {
        Ok(object) => Some(object),
        Err(e) => {
            let name = item.pointer("/metadata/name").and_then(Value::as_str).unwrap_or("?");
            eprintln!("warning: {} {name} left out: it does not read as a {} ({e})", T::TYPE.kind.to_lowercase(), T::TYPE.kind);
            None
        }
    }
}

/// The objects of a kind; one that does not read as its kind is left out with a warning, so that it
/// does not hide the others.
async fn list<T: DeserializeOwned + Resource>(client: &ApiClient, namespace: Option<&str>, options: ListOptions) -> Result<Vec<T>, Failure> {
    let rt = &T::TYPE;
    let list = client.list::<Value>(rt, namespace, &options).await.map_err(|e| Failure::Operation(anyhow::anyhow!("listing {}: {e}", rt.plural)))?;
    Ok(list.items.into_iter().filter_map(decoded).collect())
}

fn or_none(text: impl Into<String>) -> String {
    let text = text.into();
    if text.is_empty() { "<none>".into() } else { text }
}

/// An optional text (a name, an address, a time), `<none>` when absent or empty.
fn opt(value: Option<impl ToString>) -> String {
    or_none(value.map(|v| v.to_string()).unwrap_or_default())
}

/// Text in `Name:   value` lines, values aligned, sections indented by two spaces.
struct Describer {
    out: String,
}

/// Where values start, counted from a field's indentation.
const VALUE_COLUMN: usize = 16;

impl Describer {
    fn new() -> Self {
        Describer { out: String::new() }
    }

    fn field(&mut self, indent: usize, name: &str, value: impl std::fmt::Display) {
        let label = format!("{:indent$}{name}:", "");
        let width = (indent + VALUE_COLUMN).max(label.len() + 1);
        let _ = writeln!(self.out, "{label:<width$}{value}");
    }

    /// `Labels:  a=b` then one label per line under it.
    fn map(&mut self, indent: usize, name: &str, map: &BTreeMap<String, String>) {
        let entries: Vec<String> = map.iter().map(|(k, v)| format!("{k}={v}")).collect();
        match entries.split_first() {
            None => self.field(indent, name, "<none>"),
            Some((first, rest)) => {
                self.field(indent, name, first);
                let pad = (indent + VALUE_COLUMN).max(indent + name.len() + 2);
                for e in rest {
                    let _ = writeln!(self.out, "{:pad$}{e}", "");
                }
            }
        }
    }

    fn heading(&mut self, indent: usize, name: &str) {
        let _ = writeln!(self.out, "{:indent$}{name}:", "");
    }

    /// A table under a heading, indented.
    fn table(&mut self, indent: usize, rows: Vec<Vec<String>>) {
        for line in render(&rows).lines() {
            let _ = writeln!(self.out, "{:indent$}{line}", "");
        }
    }

    /// `Conditions:` with TYPE STATUS REASON MESSAGE rows, one per `[type, status, reason, message]`.
    fn conditions<'a>(&mut self, conditions: impl IntoIterator<Item = [&'a str; 4]>) {
        let mut rows = vec![vec!["Type".to_string(), "Status".into(), "Reason".into(), "Message".into()]];
        rows.extend(conditions.into_iter().map(|c| Vec::from(c.map(String::from))));
        if rows.len() == 1 {
            self.field(0, "Conditions", "<none>");
            return;
        }
        self.heading(0, "Conditions");
        self.table(2, rows);
    }
}

/// `State: Running / Started: ...`, `Waiting / Reason`, or `Terminated / Reason / Exit Code`.
fn container_state(d: &mut Describer, indent: usize, name: &str, state: Option<&ContainerState>) {
    let Some(state) = state.filter(|s| !s.is_empty()) else {
        d.field(indent, name, "<none>");
        return;
    };
    if let Some(running) = &state.running {
        d.field(indent, name, "Running");
        d.field(indent + 2, "Started", opt(running.started_at));
    } else if let Some(waiting) = &state.waiting {
        d.field(indent, name, "Waiting");
        d.field(indent + 2, "Reason", opt(waiting.reason.as_deref()));
        if let Some(message) = waiting.message.as_deref().filter(|m| !m.is_empty()) {
            d.field(indent + 2, "Message", message);
        }
    } else if let Some(terminated) = &state.terminated {
        d.field(indent, name, "Terminated");
        d.field(indent + 2, "Reason", opt(terminated.reason.as_deref()));
        d.field(indent + 2, "Exit Code", terminated.exit_code);
        if let Some(finished) = terminated.finished_at {
            d.field(indent + 2, "Finished", finished);
        }
    }
}

/// A pod: where it runs, its status and conditions, and each container's image, ports, state,
/// readiness and restart count.
pub fn describe_pod(pod: &Pod) -> String {
    let mut d = Describer::new();
    d.field(0, "Name", &pod.metadata.name);
    d.field(0, "Namespace", pod.metadata.namespace.as_deref().unwrap_or(""));
    let host = pod.status.host_ip.as_deref().unwrap_or("");
    d.field(0, "Node", match (pod.spec.bound_node(), host) {
        (None, _) => "<none>".to_string(),
        (Some(n), "") => n.to_string(),
        (Some(n), h) => format!("{n}/{h}"),
    });
    d.field(0, "Start Time", opt(pod.status.start_time));
    d.map(0, "Labels", &pod.metadata.labels);
    d.field(0, "Status", pod_status(pod));
    d.field(0, "IP", opt(pod.status.pod_ip.as_deref()));
    if let Some(owner) = pod.metadata.controller_owner() {
        d.field(0, "Controlled By", format!("{}/{}", owner.kind, owner.name));
    }
    d.heading(0, "Containers");
    for c in &pod.spec.containers {
        d.heading(2, &c.name);
        d.field(4, "Image", &c.image);
        let ports: Vec<String> = c.ports.iter().map(|p| format!("{}/{}", p.container_port, p.protocol())).collect();
        d.field(4, "Port", or_none(ports.join(", ")));
        if !c.command.is_empty() {
            d.field(4, "Command", c.command.join(" "));
        }
        let status = pod.status.container_statuses.iter().find(|st| st.name == c.name);
        container_state(&mut d, 4, "State", status.map(|st| &st.state));
        if let Some(last) = status.map(|st| &st.last_state).filter(|l| !l.is_empty()) {
            container_state(&mut d, 4, "Last State", Some(last));
        }
        let ready = status.is_some_and(|st| st.ready);
        d.field(4, "Ready", if ready { "True" } else { "False" });
        d.field(4, "Restart Count", status.map_or(0, |st| st.restart_count));
        for (map, label) in [(&c.resources.requests, "Requests"), (&c.resources.limits, "Limits")] {
            if !map.is_empty() {
                d.heading(4, label);
                for (k, v) in map {
                    d.field(6, k, v);
                }
            }
        }
    }
    d.conditions(pod.status.conditions.iter().map(|c| {
        [c.condition_type.as_str(), c.status.as_str(), c.reason.as_deref().unwrap_or(""), c.message.as_deref().unwrap_or("")]
    }));
    d.out
}

/// Sums of the CPU and memory requests of pods' containers (a container's limit counts when it
/// requests nothing, as in Kubernetes); a quantity that does not parse counts 0.
fn requested<'a>(pods: impl IntoIterator<Item = &'a Pod>) -> ResourceAmounts {
    pods.into_iter()
        .flat_map(|p| &p.spec.containers)
        .map(|c| c.resources.effective_requests().unwrap_or_default())
        .fold(ResourceAmounts::default(), ResourceAmounts::plus)
}

fn percent(part: u64, whole: u64) -> u64 {
    (part * 100).checked_div(whole).unwrap_or(0)
}

/// A node: labels, whether it is cordoned, conditions, addresses, capacity and allocatable, what its
/// pods request of that, and the pods themselves (`pods`: those bound to it).
pub fn describe_node(node: &Node, pods: &[Pod]) -> String {
    let mut d = Describer::new();
    d.field(0, "Name", &node.metadata.name);
    let role = if node.metadata.labels.contains_key("node-role.kubernetes.io/control-plane") { "control-plane" } else { "<none>" };
    d.field(0, "Roles", role);
    d.map(0, "Labels", &node.metadata.labels);
    d.field(0, "CreationTimestamp", opt(node.metadata.creation_timestamp));
    let taints: Vec<String> = node
        .spec
        .taints
        .iter()
        .map(|t| match t.value.as_deref().filter(|v| !v.is_empty()) {
            None => format!("{}:{}", t.key, t.effect),
            Some(v) => format!("{}={v}:{}", t.key, t.effect),
        })
        .collect();
    d.field(0, "Taints", or_none(taints.join(", ")));
    d.field(0, "Unschedulable", node.spec.unschedulable);
    d.field(0, "ProviderID", opt(node.spec.provider_id.as_deref()));
    d.conditions(node.status.conditions.iter().map(|c| [c.condition_type.as_str(), c.status.as_str(), c.reason.as_str(), c.message.as_str()]));
    d.heading(0, "Addresses");
    for a in &node.status.addresses {
        d.field(2, &a.address_type, &a.address);
    }
    for (map, label) in [(&node.status.capacity, "Capacity"), (&node.status.allocatable, "Allocatable")] {
        d.heading(0, label);
        for (k, v) in map {
            d.field(2, k, v);
        }
    }
    let running: Vec<&Pod> = pods.iter().filter(|p| !p.is_terminal()).collect();
    d.field(0, "Non-terminated Pods", format!("({} in total)", running.len()));
    if !running.is_empty() {
        let mut rows = vec![vec!["Namespace".to_string(), "Name".into(), "CPU Requests".into(), "Memory Requests".into(), "Age".into()]];
        for p in &running {
            let amounts = requested([*p]);
            rows.push(vec![
                p.metadata.namespace.clone().unwrap_or_default(),
                p.metadata.name.clone(),
                format!("{}m", amounts.cpu_millis),
                format!("{}Mi", amounts.memory_bytes >> 20),
                age(p.metadata.creation_timestamp),
            ]);
        }
        d.table(2, rows);
    }
    let ResourceAmounts { cpu_millis: cpu, memory_bytes: memory } = requested(running.iter().copied());
    let allocatable_cpu = node.status.allocatable.get("cpu").and_then(|q| parse_cpu_millicores(q).ok()).unwrap_or(0);
    let allocatable_memory = node.status.allocatable.get("memory").and_then(|q| parse_memory_bytes(q).ok()).unwrap_or(0);
    d.heading(0, "Allocated resources");
    d.table(
        2,
        vec![
            vec!["Resource".into(), "Requests".into(), "Allocatable".into()],
            vec!["cpu".into(), format!("{cpu}m ({}%)", percent(cpu, allocatable_cpu)), format!("{allocatable_cpu}m")],
            vec!["memory".into(), format!("{}Mi ({}%)", memory >> 20, percent(memory, allocatable_memory)), format!("{}Mi", allocatable_memory >> 20)],
        ],
    );
    d.out
}

/// A deployment: replicas wanted and observed, strategy, the pod template's containers, conditions
/// and its replica sets (`replica_sets`: the namespace's; those it owns are shown).
pub fn describe_deployment(deployment: &Deployment, replica_sets: &[ReplicaSet]) -> String {
    let mut d = Describer::new();
    let (spec, status) = (&deployment.spec, &deployment.status);
    d.field(0, "Name", &deployment.metadata.name);
    d.field(0, "Namespace", deployment.metadata.namespace.as_deref().unwrap_or(""));
    d.field(0, "CreationTimestamp", opt(deployment.metadata.creation_timestamp));
    d.map(0, "Labels", &deployment.metadata.labels);
    d.map(0, "Selector", &spec.selector.match_labels);
    d.field(
        0,
        "Replicas",
        format!(
            "{} desired | {} updated | {} total | {} available | {} unavailable",
            spec.replicas(),
            status.updated_replicas,
            status.replicas,
            status.available_replicas,
            status.unavailable_replicas
        ),
    );
    let strategy = spec.strategy.as_ref();
    let strategy_type = strategy.and_then(|s| s.strategy_type.as_deref()).filter(|t| !t.is_empty()).unwrap_or("RollingUpdate");
    d.field(0, "StrategyType", strategy_type);
    if strategy_type == "RollingUpdate" {
        let rolling = strategy.and_then(|s| s.rolling_update.as_ref());
        let param = |value: Option<&IntOrString>| value.map_or_else(|| "25%".to_string(), ToString::to_string);
        d.field(
            0,
            "RollingUpdateStrategy",
            format!(
                "{} max unavailable, {} max surge",
                param(rolling.and_then(|r| r.max_unavailable.as_ref())),
                param(rolling.and_then(|r| r.max_surge.as_ref()))
            ),
        );
    }
    d.heading(0, "Pod Template");
    d.map(2, "Labels", &spec.template.metadata.labels);
    d.heading(2, "Containers");
    for c in &spec.template.spec.containers {
        d.heading(4, &c.name);
        d.field(6, "Image", &c.image);
    }
    d.conditions(status.conditions.iter().map(|c| {
        [c.condition_type.as_str(), c.status.as_str(), c.reason.as_deref().unwrap_or(""), c.message.as_deref().unwrap_or("")]
    }));
    let uid = deployment.metadata.uid.as_str();
    let owned: Vec<&ReplicaSet> =
        replica_sets.iter().filter(|rs| !uid.is_empty() && rs.metadata.owner_references.iter().any(|r| r.uid == uid)).collect();
    let line = |rs: &ReplicaSet| format!("{} ({}/{} replicas created)", rs.metadata.name, rs.status.replicas, rs.spec.replicas.unwrap_or(0));
    let template_hash = |rs: &ReplicaSet| rs.metadata.labels.get(POD_TEMPLATE_HASH_LABEL).cloned().unwrap_or_default();
    let current = owned.iter().max_by_key(|rs| rs.metadata.creation_timestamp);
    let old: Vec<String> = owned.iter().filter(|rs| current.is_some_and(|c| template_hash(c) != template_hash(rs))).map(|rs| line(rs)).collect();
    d.field(0, "OldReplicaSets", or_none(old.join(", ")));
    d.field(0, "NewReplicaSet", opt(current.map(|rs| line(rs))));
    d.out
}

/// A service: type, selector, ports with their node ports, and the addresses behind it.
pub fn describe_service(service: &Service, endpoints: Option<&Endpoints>) -> String {
    let mut d = Describer::new();
    d.field(0, "Name", &service.metadata.name);
    d.field(0, "Namespace", service.metadata.namespace.as_deref().unwrap_or(""));
    d.map(0, "Labels", &service.metadata.labels);
    d.map(0, "Selector", &service.spec.selector);
    d.field(0, "Type", opt(service.spec.service_type.as_deref()));
    let ready: Vec<String> = endpoints
        .into_iter()
        .flat_map(|e| &e.subsets)
        .flat_map(|subset| subset.addresses.iter().flat_map(move |a| subset.ports.iter().map(move |p| format!("{}:{}", a.ip, p.port))))
        .collect();
    for p in &service.spec.ports {
        let name = opt(p.name.as_deref());
        let protocol = p.protocol();
        d.field(0, "Port", format!("{name}  {}/{protocol}", p.port));
        d.field(0, "TargetPort", format!("{}/{protocol}", opt(p.target_port.as_ref())));
        if let Some(node_port) = p.node_port {
            d.field(0, "NodePort", format!("{name}  {node_port}/{protocol}"));
        }
    }
    d.field(0, "Endpoints", or_none(ready.join(",")));
    d.out
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    fn web_pod(node: &str, cpu: &str, phase: &str) -> Pod {
        serde_json::from_value(json!({
            "metadata": {"name": format!("web-{node}"), "namespace": "default", "labels": {"app": "web"},
                "ownerReferences": [{"apiVersion": "apps/v1", "kind": "ReplicaSet", "name": "web-5d4f", "uid": "rs1", "controller": true}]},
            "spec": {"nodeName": node, "containers": [{"name": "httpd", "image": "clusterctl-busybox:latest",
                "ports": [{"containerPort": 80}], "resources": {"requests": {"cpu": cpu, "memory": "16Mi"}}}]},
            "status": {"phase": phase, "hostIP": "10.70.0.5", "podIP": "10.70.0.5",
                "conditions": [{"type": "Ready", "status": "False", "reason": "ContainersNotReady", "message": "containers with unready status: [httpd]"}],
                "containerStatuses": [{"name": "httpd", "ready": false, "restartCount": 3,
                    "state": {"waiting": {"reason": "CrashLoopBackOff", "message": "back-off 40s restarting failed container"}},
                    "lastState": {"terminated": {"reason": "Error", "exitCode": 1}}}]},
        }))
        .unwrap()
    }

    fn line_of<'a>(text: &'a str, label: &str) -> &'a str {
        text.lines().find(|l| l.trim_start().starts_with(label)).unwrap_or_else(|| panic!("no {label:?} line in:\n{text}"))
    }

    #[test]
    fn a_pod_shows_its_node_owner_container_states_restarts_and_conditions_with_reasons() {
        let text = describe_pod(&web_pod("w1", "50m", "Running"));
        assert_eq!(line_of(&text, "Node:"), "Node:           w1/10.70.0.5");
        assert_eq!(line_of(&text, "Controlled By:"), "Controlled By:  ReplicaSet/web-5d4f");
        assert_eq!(line_of(&text, "Status:"), "Status:         CrashLoopBackOff");
        assert!(text.contains("  httpd:\n    Image:          clusterctl-busybox:latest\n    Port:           80/TCP\n"), "{text}");
        assert!(text.contains("    State:          Waiting\n      Reason:         CrashLoopBackOff\n"), "{text}");
        assert!(text.contains("    Last State:     Terminated\n      Reason:         Error\n      Exit Code:      1\n"), "{text}");
        assert_eq!(line_of(&text, "Restart Count:").trim(), "Restart Count:  3");
        assert_eq!(line_of(&text, "Ready:"), "    Ready:          False");
        assert!(text.contains("  Ready   False    ContainersNotReady   containers with unready status: [httpd]"), "{text}");
    }

    #[test]
    fn a_pod_not_yet_scheduled_has_no_node() {
        let pod = serde_json::from_value(json!({"metadata": {"name": "p", "namespace": "default"}, "spec": {"containers": [{"name": "c", "image": "i"}]}})).unwrap();
        let text = describe_pod(&pod);
        assert_eq!(line_of(&text, "Node:"), "Node:           <none>");
        assert_eq!(line_of(&text, "Status:"), "Status:         Pending");
        assert_eq!(line_of(&text, "State:"), "    State:          <none>");
    }

    #[test]
    fn a_node_sums_the_requests_of_its_running_pods_against_allocatable() {
        let node = serde_json::from_value(json!({
            "metadata": {"name": "w1", "labels": {"clusterctl.io/pool": "default"}},
            "spec": {"unschedulable": true, "providerID": "aws:///us-east-1a/i-1"},
            "status": {"allocatable": {"cpu": "2", "memory": "1Gi", "pods": "110"},
                "conditions": [{"type": "Ready", "status": "True", "reason": "KubeletReady", "message": "agent is posting ready status"}],
                "addresses": [{"type": "InternalIP", "address": "10.70.0.5"}]},
        }))
        .unwrap();
        let pods = [web_pod("w1", "500m", "Running"), web_pod("w1", "250m", "Running"), web_pod("w1", "1", "Succeeded")];
        let text = describe_node(&node, &pods);
        assert_eq!(line_of(&text, "Unschedulable:"), "Unschedulable:  true");
        assert_eq!(line_of(&text, "Roles:"), "Roles:          <none>");
        assert_eq!(line_of(&text, "InternalIP:"), "  InternalIP:     10.70.0.5");
        assert_eq!(line_of(&text, "Non-terminated Pods:"), "Non-terminated Pods: (2 in total)");
        assert!(text.contains("  Ready   True     KubeletReady   agent is posting ready status"), "{text}");
        assert_eq!(line_of(&text, "cpu ").trim(), "cpu        750m (37%)   2000m");
        assert_eq!(line_of(&text, "memory ").trim(), "memory     32Mi (3%)    1024Mi");
    }

    #[test]
    fn a_deployment_shows_replica_counts_strategy_and_its_newest_replica_set() {
        let deployment = serde_json::from_value(json!({
            "metadata": {"name": "web", "namespace": "default", "uid": "d1"},
            "spec": {"replicas": 3, "selector": {"matchLabels": {"app": "web"}}, "strategy": {"rollingUpdate": {"maxUnavailable": 1}},
                "template": {"metadata": {"labels": {"app": "web"}}, "spec": {"containers": [{"name": "httpd", "image": "busybox:2"}]}}},
            "status": {"replicas": 3, "updatedReplicas": 2, "availableReplicas": 3},
        }))
        .unwrap();
        let rs = |name: &str, hash: &str, created: &str, owner: &str| -> ReplicaSet {
            let owner = json!({"apiVersion": "apps/v1", "kind": "Deployment", "name": "web", "uid": owner});
            serde_json::from_value(json!({"metadata": {"name": name, "creationTimestamp": created, "labels": {"pod-template-hash": hash}, "ownerReferences": [owner]},
                "spec": {"replicas": 2}, "status": {"replicas": 2}}))
            .unwrap()
        };
        let sets = [rs("web-a", "a", "2026-11-25T10:00:00Z", "d1"), rs("web-b", "b", "2026-11-25T11:00:00Z", "d1"), rs("other-c", "c", "2026-11-25T12:00:00Z", "d2")];
        let text = describe_deployment(&deployment, &sets);
        assert_eq!(line_of(&text, "Replicas:"), "Replicas:       3 desired | 2 updated | 3 total | 3 available | 0 unavailable");
        assert_eq!(line_of(&text, "RollingUpdateStrategy:"), "RollingUpdateStrategy: 1 max unavailable, 25% max surge");
        assert_eq!(line_of(&text, "NewReplicaSet:"), "NewReplicaSet:  web-b (2/2 replicas created)");
        assert_eq!(line_of(&text, "OldReplicaSets:"), "OldReplicaSets: web-a (2/2 replicas created)");
    }

    #[test]
    fn a_service_lists_its_ports_node_ports_and_ready_endpoints() {
        let service = serde_json::from_value(json!({"metadata": {"name": "web", "namespace": "default"},
            "spec": {"type": "NodePort", "selector": {"app": "web"}, "ports": [{"name": "http", "port": 80, "targetPort": "http", "nodePort": 30080}]}}))
        .unwrap();
        let endpoints = serde_json::from_value(json!({"subsets": [{"addresses": [{"ip": "10.70.0.5"}, {"ip": "10.70.0.6"}], "ports": [{"port": 80}]}]})).unwrap();
        let text = describe_service(&service, Some(&endpoints));
        assert_eq!(line_of(&text, "NodePort:"), "NodePort:       http  30080/TCP");
        assert_eq!(line_of(&text, "TargetPort:"), "TargetPort:     http/TCP");
        assert_eq!(line_of(&text, "Endpoints:"), "Endpoints:      10.70.0.5:80,10.70.0.6:80");
        assert_eq!(line_of(&describe_service(&service, None), "Endpoints:"), "Endpoints:      <none>");
    }

    #[test]
    fn events_show_type_reason_age_with_repeats_source_and_message() {
        use crate::api::event::{Event, EventSource};
        use crate::api::Time;
        let ago = |s: u64| Some(Time::from_system_time(std::time::SystemTime::now() - std::time::Duration::from_secs(s)));
        let event = |reason: &str, count: i32, first: u64, last: u64| Event {
            reason: reason.into(),
            message: format!("{reason} happened"),
            event_type: "Normal".into(),
            count,
            first_timestamp: ago(first),
            last_timestamp: ago(last),
            source: EventSource { component: "default-scheduler".into(), ..Default::default() },
            ..Default::default()
        };
        let text = describe_events(&[event("Pulled", 3, 300, 10), event("Scheduled", 1, 400, 400)]);
        let lines: Vec<&str> = text.lines().collect();
        assert_eq!(lines[0], "Events:");
        assert!(lines[1].split_whitespace().eq(["Type", "Reason", "Age", "From", "Message"]), "{text}");
        assert!(lines[3].contains("Scheduled") && lines[3].contains("6m"), "oldest first: {text}");
        assert!(lines[4].contains("10s (x3 over 5m)") && lines[4].contains("default-scheduler") && lines[4].contains("Pulled happened"), "{text}");
        let none = describe_events(&[]);
        assert!(none.starts_with("Events:") && none.trim_end().ends_with("<none>"), "{none}");
    }
}
