//! `clusterctl describe node|pod|deployment|service NAME`: one object as readable text, in the
//! manner of `kubectl describe`: labels, the important spec fields, status, conditions with their
//! reasons and messages, and the related objects (a node's pods and what they request, a pod's
//! containers, a deployment's replica sets, a service's endpoints).
//!
//! The rendering functions are pure (JSON objects in, text out); [`run`] only fetches.

use std::fmt::Write as _;

use clap::{Args, ValueEnum};
use serde_json::Value;

use super::table::render;
use crate::api::columns::{age, pod_status};
use super::{ClusterSelection, Failure};
use crate::api::quantity::{parse_cpu_millicores, parse_memory_bytes};
use crate::api::resource::{self, ResourceType};
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
    let object: Value = client.get(rt, namespace, &args.name).await.map_err(|e| {
        if e.is_not_found() {
            let place = namespace.map(|ns| format!(" in namespace {ns}")).unwrap_or_default();
            Failure::Operation(anyhow::anyhow!("{} {:?} not found{place}", rt.kind.to_lowercase(), args.name))
        } else {
            Failure::Operation(anyhow::anyhow!("reading {} {}: {e}", rt.kind.to_lowercase(), args.name))
        }
    })?;
    let text = match args.kind {
        DescribeKind::Pod => describe_pod(&object),
        DescribeKind::Node => {
            let pods = list(&client, &resource::PODS, None, ListOptions::fields(format!("spec.nodeName={}", args.name))).await?;
            describe_node(&object, &pods)
        }
        DescribeKind::Deployment => {
            let sets = list(&client, &resource::REPLICA_SETS, namespace, ListOptions::default()).await?;
            describe_deployment(&object, &sets)
        }
        DescribeKind::Service => {
            let endpoints = match client.get::<Value>(&resource::ENDPOINTS, namespace, &args.name).await {
                Ok(e) => Some(e),
                Err(e) if e.is_not_found() => None,
                Err(e) => return Err(Failure::Operation(anyhow::anyhow!("reading the endpoints of service {}: {e}", args.name))),
            };
            describe_service(&object, endpoints.as_ref())
        }
    };
    print!("{text}");
    Ok(())
}

async fn list(client: &ApiClient, rt: &ResourceType, namespace: Option<&str>, options: ListOptions) -> Result<Vec<Value>, Failure> {
    let list = client.list::<Value>(rt, namespace, &options).await.map_err(|e| Failure::Operation(anyhow::anyhow!("listing {}: {e}", rt.plural)))?;
    Ok(list.items)
}

fn s<'a>(v: &'a Value, pointer: &str) -> &'a str {
    v.pointer(pointer).and_then(Value::as_str).unwrap_or("")
}

fn or_none(text: impl Into<String>) -> String {
    let text = text.into();
    if text.is_empty() { "<none>".into() } else { text }
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
    fn map(&mut self, indent: usize, name: &str, map: Option<&Value>) {
        let entries: Vec<String> = map
            .and_then(Value::as_object)
            .map(|m| m.iter().map(|(k, v)| format!("{k}={}", v.as_str().unwrap_or(""))).collect())
            .unwrap_or_default();
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

    /// `Conditions:` with TYPE STATUS REASON MESSAGE rows.
    fn conditions(&mut self, conditions: Option<&Value>) {
        let conditions = conditions.and_then(Value::as_array).cloned().unwrap_or_default();
        if conditions.is_empty() {
            self.field(0, "Conditions", "<none>");
            return;
        }
        self.heading(0, "Conditions");
        let mut rows = vec![vec!["Type".to_string(), "Status".into(), "Reason".into(), "Message".into()]];
        for c in &conditions {
            rows.push(vec![s(c, "/type").into(), s(c, "/status").into(), s(c, "/reason").into(), s(c, "/message").into()]);
        }
        self.table(2, rows);
    }
}

/// `State: Running / Started: ...`, `Waiting / Reason`, or `Terminated / Reason / Exit Code`.
fn container_state(d: &mut Describer, indent: usize, name: &str, state: Option<&Value>) {
    let Some(state) = state.and_then(Value::as_object).filter(|m| !m.is_empty()) else {
        d.field(indent, name, "<none>");
        return;
    };
    if let Some(running) = state.get("running") {
        d.field(indent, name, "Running");
        d.field(indent + 2, "Started", or_none(s(running, "/startedAt")));
    } else if let Some(waiting) = state.get("waiting") {
        d.field(indent, name, "Waiting");
        d.field(indent + 2, "Reason", or_none(s(waiting, "/reason")));
        if !s(waiting, "/message").is_empty() {
            d.field(indent + 2, "Message", s(waiting, "/message"));
        }
    } else if let Some(terminated) = state.get("terminated") {
        d.field(indent, name, "Terminated");
        d.field(indent + 2, "Reason", or_none(s(terminated, "/reason")));
        d.field(indent + 2, "Exit Code", terminated.get("exitCode").and_then(Value::as_i64).unwrap_or(0));
        if !s(terminated, "/finishedAt").is_empty() {
            d.field(indent + 2, "Finished", s(terminated, "/finishedAt"));
        }
    }
}

fn controlled_by(object: &Value) -> String {
    object
        .pointer("/metadata/ownerReferences")
        .and_then(Value::as_array)
        .and_then(|refs| refs.iter().find(|r| r.get("controller").and_then(Value::as_bool) == Some(true)))
        .map(|r| format!("{}/{}", s(r, "/kind"), s(r, "/name")))
        .unwrap_or_default()
}

/// A pod: where it runs, its status and conditions, and each container's image, ports, state,
/// readiness and restart count.
pub fn describe_pod(pod: &Value) -> String {
    let mut d = Describer::new();
    d.field(0, "Name", s(pod, "/metadata/name"));
    d.field(0, "Namespace", s(pod, "/metadata/namespace"));
    let node = s(pod, "/spec/nodeName");
    let host = s(pod, "/status/hostIP");
    d.field(0, "Node", match (node, host) {
        ("", _) => "<none>".to_string(),
        (n, "") => n.to_string(),
        (n, h) => format!("{n}/{h}"),
    });
    d.field(0, "Start Time", or_none(s(pod, "/status/startTime")));
    d.map(0, "Labels", pod.pointer("/metadata/labels"));
    d.field(0, "Status", pod_status(pod));
    d.field(0, "IP", or_none(s(pod, "/status/podIP")));
    if let Some(by) = Some(controlled_by(pod)).filter(|c| !c.is_empty()) {
        d.field(0, "Controlled By", by);
    }
    let statuses = pod.pointer("/status/containerStatuses").and_then(Value::as_array).cloned().unwrap_or_default();
    d.heading(0, "Containers");
    for c in pod.pointer("/spec/containers").and_then(Value::as_array).into_iter().flatten() {
        let name = s(c, "/name");
        d.heading(2, name);
        d.field(4, "Image", s(c, "/image"));
        let ports: Vec<String> = c
            .get("ports")
            .and_then(Value::as_array)
            .into_iter()
            .flatten()
            .map(|p| format!("{}/{}", p.get("containerPort").and_then(Value::as_i64).unwrap_or(0), p.get("protocol").and_then(Value::as_str).unwrap_or("TCP")))
            .collect();
        d.field(4, "Port", or_none(ports.join(", ")));
        let command: Vec<&str> = c.get("command").and_then(Value::as_array).into_iter().flatten().filter_map(Value::as_str).collect();
        if !command.is_empty() {
            d.field(4, "Command", command.join(" "));
        }
        let status = statuses.iter().find(|st| s(st, "/name") == name);
        container_state(&mut d, 4, "State", status.and_then(|st| st.get("state")));
        if let Some(last) = status.and_then(|st| st.get("lastState")).filter(|l| l.as_object().is_some_and(|m| !m.is_empty())) {
            container_state(&mut d, 4, "Last State", Some(last));
        }
        let ready = status.and_then(|st| st.get("ready")).and_then(Value::as_bool).unwrap_or(false);
        d.field(4, "Ready", if ready { "True" } else { "False" });
        d.field(4, "Restart Count", status.and_then(|st| st.get("restartCount")).and_then(Value::as_i64).unwrap_or(0));
        for (key, label) in [("requests", "Requests"), ("limits", "Limits")] {
            if let Some(map) = c.pointer(&format!("/resources/{key}")).and_then(Value::as_object).filter(|m| !m.is_empty()) {
                d.heading(4, label);
                for (k, v) in map {
                    d.field(6, k, v.as_str().map(String::from).unwrap_or_else(|| v.to_string()));
                }
            }
        }
    }
    d.conditions(pod.pointer("/status/conditions"));
    d.out
}

/// Sums of the CPU (millicores) and memory (bytes) requests of pods' containers.
fn requested(pods: &[&Value]) -> (u64, u64) {
    let mut cpu = 0;
    let mut memory = 0;
    for c in pods.iter().flat_map(|p| p.pointer("/spec/containers").and_then(Value::as_array).into_iter().flatten()) {
        cpu += parse_cpu_millicores(s(c, "/resources/requests/cpu")).unwrap_or(0);
        memory += parse_memory_bytes(s(c, "/resources/requests/memory")).unwrap_or(0);
    }
    (cpu, memory)
}

fn percent(part: u64, whole: u64) -> u64 {
    (part * 100).checked_div(whole).unwrap_or(0)
}

fn pod_is_terminal(pod: &Value) -> bool {
    matches!(s(pod, "/status/phase"), "Succeeded" | "Failed")
}

/// A node: labels, whether it is cordoned, conditions, addresses, capacity and allocatable, what its
/// pods request of that, and the pods themselves (`pods`: those bound to it).
pub fn describe_node(node: &Value, pods: &[Value]) -> String {
    let mut d = Describer::new();
    d.field(0, "Name", s(node, "/metadata/name"));
    let role = if node.pointer("/metadata/labels/node-role.kubernetes.io~1control-plane").is_some() { "control-plane" } else { "<none>" };
    d.field(0, "Roles", role);
    d.map(0, "Labels", node.pointer("/metadata/labels"));
    d.field(0, "CreationTimestamp", or_none(s(node, "/metadata/creationTimestamp")));
    let taints: Vec<String> = node
        .pointer("/spec/taints")
        .and_then(Value::as_array)
        .into_iter()
        .flatten()
        .map(|t| match s(t, "/value") {
            "" => format!("{}:{}", s(t, "/key"), s(t, "/effect")),
            v => format!("{}={v}:{}", s(t, "/key"), s(t, "/effect")),
        })
        .collect();
    d.field(0, "Taints", or_none(taints.join(", ")));
    d.field(0, "Unschedulable", node.pointer("/spec/unschedulable").and_then(Value::as_bool).unwrap_or(false));
    d.field(0, "ProviderID", or_none(s(node, "/spec/providerID")));
    d.conditions(node.pointer("/status/conditions"));
    d.heading(0, "Addresses");
    for a in node.pointer("/status/addresses").and_then(Value::as_array).into_iter().flatten() {
        d.field(2, s(a, "/type"), s(a, "/address"));
    }
    for (key, label) in [("capacity", "Capacity"), ("allocatable", "Allocatable")] {
        d.heading(0, label);
        for (k, v) in node.pointer(&format!("/status/{key}")).and_then(Value::as_object).into_iter().flatten() {
            d.field(2, k, v.as_str().unwrap_or(""));
        }
    }
    let running: Vec<&Value> = pods.iter().filter(|p| !pod_is_terminal(p)).collect();
    d.field(0, "Non-terminated Pods", format!("({} in total)", running.len()));
    if !running.is_empty() {
        let mut rows = vec![vec!["Namespace".to_string(), "Name".into(), "CPU Requests".into(), "Memory Requests".into(), "Age".into()]];
        for p in &running {
            let (cpu, memory) = requested(&[*p]);
            rows.push(vec![
                s(p, "/metadata/namespace").into(),
                s(p, "/metadata/name").into(),
                format!("{cpu}m"),
                format!("{}Mi", memory >> 20),
                age(p.pointer("/metadata/creationTimestamp").and_then(Value::as_str)),
            ]);
        }
        d.table(2, rows);
    }
    let (cpu, memory) = requested(&running);
    let allocatable_cpu = parse_cpu_millicores(s(node, "/status/allocatable/cpu")).unwrap_or(0);
    let allocatable_memory = parse_memory_bytes(s(node, "/status/allocatable/memory")).unwrap_or(0);
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
pub fn describe_deployment(deployment: &Value, replica_sets: &[Value]) -> String {
    let mut d = Describer::new();
    let n = |p: &str| deployment.pointer(p).and_then(Value::as_i64).unwrap_or(0);
    d.field(0, "Name", s(deployment, "/metadata/name"));
    d.field(0, "Namespace", s(deployment, "/metadata/namespace"));
    d.field(0, "CreationTimestamp", or_none(s(deployment, "/metadata/creationTimestamp")));
    d.map(0, "Labels", deployment.pointer("/metadata/labels"));
    d.map(0, "Selector", deployment.pointer("/spec/selector/matchLabels"));
    let wanted = deployment.pointer("/spec/replicas").and_then(Value::as_i64).unwrap_or(1);
    d.field(
        0,
        "Replicas",
        format!(
            "{wanted} desired | {} updated | {} total | {} available | {} unavailable",
            n("/status/updatedReplicas"),
            n("/status/replicas"),
            n("/status/availableReplicas"),
            n("/status/unavailableReplicas")
        ),
    );
    let strategy = match s(deployment, "/spec/strategy/type") {
        "" => "RollingUpdate",
        t => t,
    };
    d.field(0, "StrategyType", strategy);
    if strategy == "RollingUpdate" {
        let param = |p: &str, default: &str| deployment.pointer(p).map(|v| v.as_str().map(String::from).unwrap_or_else(|| v.to_string())).unwrap_or_else(|| default.into());
        d.field(
            0,
            "RollingUpdateStrategy",
            format!("{} max unavailable, {} max surge", param("/spec/strategy/rollingUpdate/maxUnavailable", "25%"), param("/spec/strategy/rollingUpdate/maxSurge", "25%")),
        );
    }
    d.heading(0, "Pod Template");
    d.map(2, "Labels", deployment.pointer("/spec/template/metadata/labels"));
    d.heading(2, "Containers");
    for c in deployment.pointer("/spec/template/spec/containers").and_then(Value::as_array).into_iter().flatten() {
        d.heading(4, s(c, "/name"));
        d.field(6, "Image", s(c, "/image"));
    }
    d.conditions(deployment.pointer("/status/conditions"));
    let uid = s(deployment, "/metadata/uid");
    let owned: Vec<&Value> = replica_sets
        .iter()
        .filter(|rs| rs.pointer("/metadata/ownerReferences").and_then(Value::as_array).into_iter().flatten().any(|r| !uid.is_empty() && s(r, "/uid") == uid))
        .collect();
    let line = |rs: &Value| {
        format!("{} ({}/{} replicas created)", s(rs, "/metadata/name"), rs.pointer("/status/replicas").and_then(Value::as_i64).unwrap_or(0), rs.pointer("/spec/replicas").and_then(Value::as_i64).unwrap_or(0))
    };
    let template_hash = |rs: &Value| s(rs, "/metadata/labels/pod-template-hash").to_string();
    let current = owned.iter().max_by_key(|rs| s(rs, "/metadata/creationTimestamp").to_string());
    let old: Vec<String> = owned.iter().filter(|rs| current.is_some_and(|c| template_hash(c) != template_hash(rs))).map(|rs| line(rs)).collect();
    d.field(0, "OldReplicaSets", or_none(old.join(", ")));
    d.field(0, "NewReplicaSet", or_none(current.map(|rs| line(rs)).unwrap_or_default()));
    d.out
}

/// A service: type, selector, ports with their node ports, and the addresses behind it.
pub fn describe_service(service: &Value, endpoints: Option<&Value>) -> String {
    let mut d = Describer::new();
    d.field(0, "Name", s(service, "/metadata/name"));
    d.field(0, "Namespace", s(service, "/metadata/namespace"));
    d.map(0, "Labels", service.pointer("/metadata/labels"));
    d.map(0, "Selector", service.pointer("/spec/selector"));
    d.field(0, "Type", or_none(s(service, "/spec/type")));
    let ready: Vec<String> = endpoints
        .and_then(|e| e.get("subsets"))
        .and_then(Value::as_array)
        .into_iter()
        .flatten()
        .flat_map(|subset| {
            let ports: Vec<i64> = subset.get("ports").and_then(Value::as_array).into_iter().flatten().filter_map(|p| p.get("port").and_then(Value::as_i64)).collect();
            subset
                .get("addresses")
                .and_then(Value::as_array)
                .into_iter()
                .flatten()
                .flat_map(move |a| {
                    let ip = s(a, "/ip").to_string();
                    ports.clone().into_iter().map(move |p| format!("{ip}:{p}"))
                })
                .collect::<Vec<_>>()
        })
        .collect();
    for p in service.pointer("/spec/ports").and_then(Value::as_array).into_iter().flatten() {
        let name = or_none(s(p, "/name"));
        let protocol = p.get("protocol").and_then(Value::as_str).unwrap_or("TCP");
        d.field(0, "Port", format!("{name}  {}/{protocol}", p.get("port").and_then(Value::as_i64).unwrap_or(0)));
        let target = p.get("targetPort").map(|t| t.as_str().map(String::from).unwrap_or_else(|| t.to_string())).unwrap_or_default();
        d.field(0, "TargetPort", format!("{}/{protocol}", or_none(target)));
        if let Some(node_port) = p.get("nodePort").and_then(Value::as_i64) {
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

    fn web_pod(node: &str, cpu: &str, phase: &str) -> Value {
        json!({
            "metadata": {"name": format!("web-{node}"), "namespace": "default", "labels": {"app": "web"},
                "ownerReferences": [{"kind": "ReplicaSet", "name": "web-5d4f", "uid": "rs1", "controller": true}]},
            "spec": {"nodeName": node, "containers": [{"name": "httpd", "image": "clusterctl-busybox:latest",
                "ports": [{"containerPort": 80}], "resources": {"requests": {"cpu": cpu, "memory": "16Mi"}}}]},
            "status": {"phase": phase, "hostIP": "10.70.0.5", "podIP": "10.70.0.5",
                "conditions": [{"type": "Ready", "status": "False", "reason": "ContainersNotReady", "message": "containers with unready status: [httpd]"}],
                "containerStatuses": [{"name": "httpd", "ready": false, "restartCount": 3,
                    "state": {"waiting": {"reason": "CrashLoopBackOff", "message": "back-off 40s restarting failed container"}},
                    "lastState": {"terminated": {"reason": "Error", "exitCode": 1}}}]},
        })
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
        let pod = json!({"metadata": {"name": "p", "namespace": "default"}, "spec": {"containers": [{"name": "c", "image": "i"}]}});
        let text = describe_pod(&pod);
        assert_eq!(line_of(&text, "Node:"), "Node:           <none>");
        assert_eq!(line_of(&text, "Status:"), "Status:         Pending");
        assert_eq!(line_of(&text, "State:"), "    State:          <none>");
    }

    #[test]
    fn a_node_sums_the_requests_of_its_running_pods_against_allocatable() {
        let node = json!({
            "metadata": {"name": "w1", "labels": {"clusterctl.io/pool": "default"}},
            "spec": {"unschedulable": true, "providerID": "aws:///us-east-1a/i-1"},
            "status": {"allocatable": {"cpu": "2", "memory": "1Gi", "pods": "110"},
                "conditions": [{"type": "Ready", "status": "True", "reason": "KubeletReady", "message": "agent is posting ready status"}],
                "addresses": [{"type": "InternalIP", "address": "10.70.0.5"}]},
        });
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
        let deployment = json!({
            "metadata": {"name": "web", "namespace": "default", "uid": "d1"},
            "spec": {"replicas": 3, "selector": {"matchLabels": {"app": "web"}}, "strategy": {"rollingUpdate": {"maxUnavailable": 1}},
                "template": {"metadata": {"labels": {"app": "web"}}, "spec": {"containers": [{"name": "httpd", "image": "busybox:2"}]}}},
            "status": {"replicas": 3, "updatedReplicas": 2, "availableReplicas": 3},
        });
        let rs = |name: &str, hash: &str, created: &str, owner: &str| {
            json!({"metadata": {"name": name, "creationTimestamp": created, "labels": {"pod-template-hash": hash}, "ownerReferences": [{"uid": owner}]},
                "spec": {"replicas": 2}, "status": {"replicas": 2}})
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
        let service = json!({"metadata": {"name": "web", "namespace": "default"},
            "spec": {"type": "NodePort", "selector": {"app": "web"}, "ports": [{"name": "http", "port": 80, "targetPort": "http", "nodePort": 30080}]}});
        let endpoints = json!({"subsets": [{"addresses": [{"ip": "10.70.0.5"}, {"ip": "10.70.0.6"}], "ports": [{"port": 80}]}]});
        let text = describe_service(&service, Some(&endpoints));
        assert_eq!(line_of(&text, "NodePort:"), "NodePort:       http  30080/TCP");
        assert_eq!(line_of(&text, "TargetPort:"), "TargetPort:     http/TCP");
        assert_eq!(line_of(&text, "Endpoints:"), "Endpoints:      10.70.0.5:80,10.70.0.6:80");
        assert_eq!(line_of(&describe_service(&service, None), "Endpoints:"), "Endpoints:      <none>");
    }
}
