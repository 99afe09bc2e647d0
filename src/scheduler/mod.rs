//! The scheduler: places unbound pods (`spec.nodeName` empty) on nodes.
//!
//! Decisions are pure functions over [`NodeInfo`] snapshots ([`filter`], [`score`], [`place`]):
//! a node passes when it is Ready, not cordoned, has no taint the pod does not tolerate (a master
//! registers with `node-role.kubernetes.io/control-plane:NoSchedule`), has room for the pod's CPU and memory requests
//! (allocatable minus what its pods request), carries the pod's `nodeSelector` labels and has
//! the pod's host ports free, passes its required node affinity, pod affinity and anti-affinity
//! (the pod's own and existing pods' against it, [`Topology`]) and `DoNotSchedule` topology spread
//! constraints; among those the least requested node wins (plus preferred node and pod affinity,
//! minus preferred anti-affinity and soft spread skew), with a bonus for nodes
//! and zones (`topology.kubernetes.io/zone`) holding fewer pods of the same owner; a [`Placer`]
//! keeps each owner's spread as a pass places pods, so a decision is one walk over the nodes. [`run`] feeds
//! them from the [`runtime`](crate::runtime)'s stores of nodes and pods (one controller with one
//! key: every change of a node or pod queues the pass, de-duplicated while one runs), binds by replacing the pod with its
//! `resourceVersion`, and writes `PodScheduled=False` with the reasons on pods that fit nowhere;
//! those are retried whenever a node or pod changes, and every few seconds.

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::sync::Arc;
use std::time::Duration;

use futures::StreamExt;

use crate::api::affinity::PodAffinityTerm;
use crate::api::pod::{Pod, PodCondition, ResourceAmounts};
use crate::api::quantity::Quantity;
use crate::api::{Node, Time};
use crate::client::{ClientError, ListOptions};
use crate::api::event::{NORMAL, WARNING};
use crate::runtime::events::Recorder;
use crate::runtime::{Action, Client, Controller, ObjectKey, Store};

/// The zone label nodes carry.
pub const ZONE_LABEL: &str = "topology.kubernetes.io/zone";
/// How often unschedulable pods are retried without any change.
pub const RESYNC: Duration = Duration::from_secs(3);

/// What the scheduler knows of one node.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct NodeInfo {
    pub name: String,
    pub labels: BTreeMap<String, String>,
    pub ready: bool,
    pub unschedulable: bool,
    pub allocatable: ResourceAmounts,
    /// Sum of the requests of the pods bound here.
    pub requested: ResourceAmounts,
    /// `(port, protocol)` taken by pods bound here.
    pub host_ports: BTreeSet<(u16, String)>,
    /// Pods bound here per owner uid.
    pub owned: HashMap<String, u32>,
    /// `NoSchedule` and `NoExecute` taints as `(key, value, effect)`.
    pub taints: Vec<(String, Option<String>, String)>,
    /// The zone label's value, read once.
    pub zone: Option<String>,
    /// The pods bound here as affinity, anti-affinity and topology spread see them.
    pub pods: Vec<Placed>,
    /// How many of them have required anti-affinity terms (which every new pod must respect).
    pub with_anti: u32,
}

/// A pod bound to a node, as pod affinity and topology spread read it.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Placed {
    pub namespace: String,
    pub labels: BTreeMap<String, String>,
    /// Its required anti-affinity terms, which keep new pods they select out of its domain.
    pub anti: Vec<PodAffinityTerm>,
}

impl NodeInfo {
    /// The node's facts from its object; requests are added by [`NodeInfo::add_pod`].
    pub fn from_node(node: &Node) -> Self {
        let map: BTreeMap<String, Quantity> = node.status.allocatable.iter().map(|(k, v)| (k.clone(), Quantity(v.clone()))).collect();
        let capacity: BTreeMap<String, Quantity> = node.status.capacity.iter().map(|(k, v)| (k.clone(), Quantity(v.clone()))).collect();
        let allocatable = ResourceAmounts::from_map(if map.is_empty() { &capacity } else { &map }).unwrap_or_default();
        NodeInfo {
            name: node.metadata.name.clone(),
            labels: node.metadata.labels.clone(),
            ready: node.is_ready(),
            unschedulable: node.spec.unschedulable,
            allocatable,
            taints: node
                .spec
                .taints
                .iter()
                .filter(|t| t.effect == "NoSchedule" || t.effect == "NoExecute")
                .map(|t| (t.key.clone(), t.value.clone(), t.effect.clone()))
                .collect(),
            zone: node.metadata.labels.get(ZONE_LABEL).cloned(),
            ..Default::default()
        }
    }

    /// Counts a pod bound to this node.
    pub fn add_pod(&mut self, pod: &Pod) {
        self.requested = self.requested.plus(pod.spec.requests().unwrap_or_default());
        self.host_ports.extend(pod.spec.host_ports());
        if let Some(owner) = pod.metadata.controller_owner() {
            *self.owned.entry(owner.uid.clone()).or_default() += 1;
        }
        let anti = pod.spec.affinity.as_ref().and_then(|a| a.pod_anti_affinity.as_ref()).map(|a| a.required_during_scheduling_ignored_during_execution.clone()).unwrap_or_default();
        self.with_anti += u32::from(!anti.is_empty());
        self.pods.push(Placed { namespace: pod.metadata.namespace_or_default().to_string(), labels: pod.metadata.labels.clone(), anti });
    }

    fn zone(&self) -> Option<&str> {
        self.zone.as_deref()
    }
}

/// Why a node cannot take a pod, in the words of Kubernetes' scheduler.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Rejection {
    NotReady,
    Unschedulable,
    Taint,
    NodeSelector,
    PodAffinity,
    PodAntiAffinity,
    TopologySpread,
    HostPorts,
    InsufficientCpu,
    InsufficientMemory,
}

impl Rejection {
    fn text(self) -> &'static str {
        match self {
            Rejection::NotReady => "node(s) were not ready",
            Rejection::Unschedulable => "node(s) were unschedulable",
            Rejection::Taint => "node(s) had untolerated taint(s)",
            Rejection::NodeSelector => "node(s) didn't match Pod's node affinity/selector",
            Rejection::PodAffinity => "node(s) didn't match pod affinity rules",
            Rejection::PodAntiAffinity => "node(s) didn't match pod anti-affinity rules",
            Rejection::TopologySpread => "node(s) didn't match pod topology spread constraints",
            Rejection::HostPorts => "node(s) didn't have free ports for the requested pod ports",
            Rejection::InsufficientCpu => "Insufficient cpu",
            Rejection::InsufficientMemory => "Insufficient memory",
        }
    }
}

/// What the scheduler reads of a pod, computed once per decision.
#[derive(Debug, Clone)]
pub struct PodFacts<'a> {
    pub pod: &'a Pod,
    pub requests: ResourceAmounts,
    pub host_ports: Vec<(u16, String)>,
    /// The uid of the controlling owner (e.g. the ReplicaSet).
    pub owner: Option<&'a str>,
    /// Where pod affinity, anti-affinity and topology spread allow the pod, given the nodes.
    pub topology: Topology,
}

impl<'a> PodFacts<'a> {
    /// The facts of `pod` among `nodes`; unparsable requests count as none (manifests are validated).
    pub fn of(pod: &'a Pod, nodes: &[NodeInfo]) -> Self {
        PodFacts {
            pod,
            requests: pod.spec.requests().unwrap_or_default(),
            host_ports: pod.spec.host_ports(),
            owner: pod.metadata.controller_owner().map(|o| o.uid.as_str()),
            topology: Topology::of(pod, nodes),
        }
    }
}

/// One topology term resolved against the nodes: its key and the values of that key (domains)
/// that hold a pod it selects.
#[derive(Debug, Clone, Default)]
pub struct Domains {
    pub key: String,
    pub values: BTreeSet<String>,
    pub weight: i64,
}

/// A topology spread constraint resolved against the nodes: the matching pods per domain.
#[derive(Debug, Clone, Default)]
pub struct SpreadCount {
    pub key: String,
    pub max_skew: i64,
    pub hard: bool,
    pub counts: BTreeMap<String, i64>,
    /// The fewest matching pods in any eligible domain.
    pub min: i64,
    /// Whether the pod itself matches the constraint's selector (it counts once placed).
    pub self_match: i64,
}

/// What pod affinity, anti-affinity and topology spread say about the nodes for one pod: computed
/// once per decision from the pods already bound (and placed earlier in the pass), empty (and so
/// free) for the pods that use none of them.
#[derive(Debug, Clone, Default)]
pub struct Topology {
    /// Required pod affinity: the node's value must be one of these (a term no pod matches yet
    /// is satisfied by a pod that matches it itself, as in Kubernetes, so that the first replica
    /// of a self-affine set can land).
    pub affinity: Vec<Domains>,
    /// Required anti-affinity, the pod's own and existing pods' against it: the node's value must
    /// not be one of these.
    pub anti: Vec<Domains>,
    pub preferred: Vec<Domains>,
    pub preferred_anti: Vec<Domains>,
    pub spread: Vec<SpreadCount>,
}

impl Topology {
    fn of(pod: &Pod, nodes: &[NodeInfo]) -> Self {
        let mut t = Topology::default();
        let ns = pod.metadata.namespace_or_default();
        let affinity = pod.spec.affinity.as_ref();
        let (pod_affinity, anti) = (affinity.and_then(|a| a.pod_affinity.as_ref()), affinity.and_then(|a| a.pod_anti_affinity.as_ref()));
        let has_existing_anti = nodes.iter().any(|n| n.with_anti > 0);
        if pod_affinity.is_none() && anti.is_none() && pod.spec.topology_spread_constraints.is_empty() && !has_existing_anti {
            return t;
        }
        let domains = |term: &PodAffinityTerm, weight: i64| {
            let values = nodes
                .iter()
                .filter(|n| n.pods.iter().any(|p| term.selects(ns, &p.namespace, &p.labels)))
                .filter_map(|n| n.labels.get(&term.topology_key).cloned())
                .collect();
            Domains { key: term.topology_key.clone(), values, weight }
        };
        if let Some(a) = pod_affinity {
            for term in &a.required_during_scheduling_ignored_during_execution {
                let d = domains(term, 0);
                // No pod matches anywhere and the pod matches its own term: any node with the key.
                if d.values.is_empty() && term.selects(ns, ns, &pod.metadata.labels) {
                    let values = nodes.iter().filter_map(|n| n.labels.get(&term.topology_key).cloned()).collect();
                    t.affinity.push(Domains { values, ..d });
                } else {
                    t.affinity.push(d);
                }
            }
            t.preferred = a.preferred_during_scheduling_ignored_during_execution.iter().map(|w| domains(&w.pod_affinity_term, i64::from(w.weight))).collect();
        }
        if let Some(a) = anti {
            t.anti = a.required_during_scheduling_ignored_during_execution.iter().map(|term| domains(term, 0)).collect();
            t.preferred_anti = a.preferred_during_scheduling_ignored_during_execution.iter().map(|w| domains(&w.pod_affinity_term, i64::from(w.weight))).collect();
        }
        // Existing pods whose required anti-affinity selects this pod keep it out of their domain.
        for node in nodes.iter().filter(|n| n.with_anti > 0) {
            for placed in node.pods.iter().filter(|p| !p.anti.is_empty()) {
                for term in placed.anti.iter().filter(|term| term.selects(&placed.namespace, ns, &pod.metadata.labels)) {
                    if let Some(value) = node.labels.get(&term.topology_key) {
                        t.anti.push(Domains { key: term.topology_key.clone(), values: BTreeSet::from([value.clone()]), weight: 0 });
                    }
                }
            }
        }
        for c in &pod.spec.topology_spread_constraints {
            let selects = |namespace: &str, labels: &BTreeMap<String, String>| namespace == ns && c.label_selector.as_ref().is_some_and(|s| s.matches(labels));
            let mut counts: BTreeMap<String, i64> = BTreeMap::new();
            // Domains are those of the nodes the pod's node selector and affinity allow (Kubernetes'
            // default `nodeAffinityPolicy: Honor`).
            for node in nodes.iter().filter(|n| node_selected(pod, n)) {
                let Some(value) = node.labels.get(&c.topology_key) else { continue };
                *counts.entry(value.clone()).or_default() += node.pods.iter().filter(|p| selects(&p.namespace, &p.labels)).count() as i64;
            }
            let min = counts.values().copied().min().unwrap_or(0);
            let self_match = i64::from(selects(ns, &pod.metadata.labels));
            t.spread.push(SpreadCount { key: c.topology_key.clone(), max_skew: i64::from(c.max_skew.max(1)), hard: c.when_unsatisfiable == "DoNotSchedule", counts, min, self_match });
        }
        t
    }

    fn affinity_ok(&self, node: &NodeInfo) -> bool {
        self.affinity.iter().all(|d| node.labels.get(&d.key).is_some_and(|v| d.values.contains(v)))
    }

    fn anti_ok(&self, node: &NodeInfo) -> bool {
        self.anti.iter().all(|d| node.labels.get(&d.key).is_none_or(|v| !d.values.contains(v)))
    }

    fn spread_ok(&self, node: &NodeInfo) -> bool {
        self.spread.iter().filter(|c| c.hard).all(|c| match node.labels.get(&c.key) {
            Some(v) => c.counts.get(v).copied().unwrap_or(0) + c.self_match - c.min <= c.max_skew,
            None => false,
        })
    }

    /// Preferred affinity adds its weights, preferred anti-affinity subtracts them, and each soft
    /// spread constraint costs 10 per pod above the emptiest domain.
    fn score(&self, node: &NodeInfo) -> i64 {
        let hit = |d: &Domains| node.labels.get(&d.key).is_some_and(|v| d.values.contains(v));
        let soft_skew: i64 = self.spread.iter().filter(|c| !c.hard).map(|c| node.labels.get(&c.key).and_then(|v| c.counts.get(v)).map_or(0, |n| n - c.min)).sum();
        self.preferred.iter().filter(|d| hit(d)).map(|d| d.weight).sum::<i64>() - self.preferred_anti.iter().filter(|d| hit(d)).map(|d| d.weight).sum::<i64>() - 10 * soft_skew
    }
}

/// Whether the node carries the pod's `nodeSelector` labels and passes its required node affinity.
fn node_selected(pod: &Pod, node: &NodeInfo) -> bool {
    (pod.spec.node_selector.is_empty() || pod.spec.node_selector.iter().all(|(k, v)| node.labels.get(k) == Some(v)))
        && pod
            .spec
            .affinity
            .as_ref()
            .and_then(|a| a.node_affinity.as_ref())
            .and_then(|a| a.required_during_scheduling_ignored_during_execution.as_ref())
            .is_none_or(|required| required.matches(&node.name, &node.labels))
}

/// The summed weights of the pod's preferred node affinity terms the node matches.
fn node_preference(pod: &Pod, node: &NodeInfo) -> i64 {
    let Some(preferred) = pod.spec.affinity.as_ref().and_then(|a| a.node_affinity.as_ref()).map(|a| &a.preferred_during_scheduling_ignored_during_execution) else { return 0 };
    preferred.iter().filter(|t| t.preference.matches(&node.name, &node.labels)).map(|t| i64::from(t.weight)).sum()
}

/// Every reason `node` cannot take the pod (empty: it can).
pub fn filter(facts: &PodFacts<'_>, node: &NodeInfo) -> Vec<Rejection> {
    let (pod, requests) = (facts.pod, facts.requests);
    let mut out = Vec::new();
    if !node.ready {
        out.push(Rejection::NotReady);
    }
    if node.unschedulable {
        out.push(Rejection::Unschedulable);
    }
    if node.taints.iter().any(|(k, v, e)| !pod.spec.tolerations.iter().any(|t| t.tolerates(k, v.as_deref(), e))) {
        out.push(Rejection::Taint);
    }
    if !node_selected(pod, node) {
        out.push(Rejection::NodeSelector);
    }
    if !facts.topology.affinity_ok(node) {
        out.push(Rejection::PodAffinity);
    }
    if !facts.topology.anti_ok(node) {
        out.push(Rejection::PodAntiAffinity);
    }
    if !facts.topology.spread_ok(node) {
        out.push(Rejection::TopologySpread);
    }
    if facts.host_ports.iter().any(|p| node.host_ports.contains(p)) {
        out.push(Rejection::HostPorts);
    }
    if node.requested.cpu_millis.saturating_add(requests.cpu_millis) > node.allocatable.cpu_millis && requests.cpu_millis > 0 {
        out.push(Rejection::InsufficientCpu);
    }
    if node.requested.memory_bytes.saturating_add(requests.memory_bytes) > node.allocatable.memory_bytes && requests.memory_bytes > 0 {
        out.push(Rejection::InsufficientMemory);
    }
    out
}

/// How the owner's pods are spread: on each node, per zone, and the most on one node and in
/// one zone. Computed once per owner and pass ([`Placer`]) and then kept up to date as pods are
/// placed, so a decision costs no look-up per node.
#[derive(Debug, Default, Clone)]
pub struct Spread {
    /// The owner's pods on each node, in the order of the pass's nodes.
    pub per_node: Vec<u32>,
    /// The owner's pods in each zone, by the pass's zone index.
    pub per_zone: Vec<u32>,
    pub max_node: u32,
    pub max_zone: u32,
}

impl Spread {
    fn of(uid: &str, nodes: &[NodeInfo], zone_of: &[Option<usize>], zones: usize) -> Self {
        let mut spread = Spread { per_node: Vec::with_capacity(nodes.len()), per_zone: vec![0; zones], ..Default::default() };
        for (n, zone) in nodes.iter().zip(zone_of) {
            let count = n.owned.get(uid).copied().unwrap_or(0);
            spread.per_node.push(count);
            if let Some(z) = zone {
                spread.per_zone[*z] += count;
            }
        }
        spread.max_node = spread.per_node.iter().copied().max().unwrap_or(0);
        spread.max_zone = spread.per_zone.iter().copied().max().unwrap_or(0);
        spread
    }

    fn count(&mut self, node: usize, zone: Option<usize>) {
        self.per_node[node] += 1;
        self.max_node = self.max_node.max(self.per_node[node]);
        if let Some(z) = zone {
            self.per_zone[z] += 1;
            self.max_zone = self.max_zone.max(self.per_zone[z]);
        }
    }
}

/// Whether `node` can take the pod: [`filter`] without collecting the reasons, for the loop that
/// runs once per node and pod.
fn fits(facts: &PodFacts<'_>, node: &NodeInfo) -> bool {
    let (pod, requests) = (facts.pod, facts.requests);
    node.ready
        && !node.unschedulable
        && (requests.cpu_millis == 0 || node.requested.cpu_millis.saturating_add(requests.cpu_millis) <= node.allocatable.cpu_millis)
        && (requests.memory_bytes == 0 || node.requested.memory_bytes.saturating_add(requests.memory_bytes) <= node.allocatable.memory_bytes)
        && (node.taints.is_empty() || node.taints.iter().all(|(k, v, e)| pod.spec.tolerations.iter().any(|t| t.tolerates(k, v.as_deref(), e))))
        && node_selected(pod, node)
        && (facts.host_ports.is_empty() || !facts.host_ports.iter().any(|p| node.host_ports.contains(p)))
        && facts.topology.affinity_ok(node)
        && facts.topology.anti_ok(node)
        && facts.topology.spread_ok(node)
}

/// How much a node is worth for the pod (higher is better): least requested (0-100) plus spread
/// of the owner's pods over nodes (0-200) and zones (0-50); `here` and `in_zone` are how many of
/// the owner's pods the node and its zone hold.
pub fn score(facts: &PodFacts<'_>, node: &NodeInfo, here: u32, in_zone: Option<u32>, spread: Option<&Spread>) -> i64 {
    let requests = facts.requests;
    let free = |alloc: u64, used: u64| (alloc.saturating_sub(used) * 100).checked_div(alloc).unwrap_or(0) as i64;
    let least_requested = (free(node.allocatable.cpu_millis, node.requested.cpu_millis + requests.cpu_millis)
        + free(node.allocatable.memory_bytes, node.requested.memory_bytes + requests.memory_bytes))
        / 2
        + node_preference(facts.pod, node)
        + facts.topology.score(node);
    let Some(spread) = spread else { return least_requested };
    let max = i64::from(spread.max_node.max(1));
    let node_spread = 100 * (max - i64::from(here).min(max)) / max;
    let zone_spread = match in_zone {
        Some(count) => {
            let max_zone = i64::from(spread.max_zone.max(1));
            50 * (max_zone - i64::from(count).min(max_zone)) / max_zone
        }
        None => 0,
    };
    least_requested + 2 * node_spread + zone_spread
}

/// The nodes of one pass, with each owner's [`Spread`] kept as pods are placed on them.
pub struct Placer<'n> {
    nodes: &'n mut [NodeInfo],
    /// Each node's zone as an index into the pass's zones.
    zone_of: Vec<Option<usize>>,
    zones: usize,
    spreads: HashMap<String, Spread>,
}

impl<'n> Placer<'n> {
    pub fn new(nodes: &'n mut [NodeInfo]) -> Self {
        let mut names: Vec<&str> = Vec::new();
        let zone_of = nodes
            .iter()
            .map(|n| {
                n.zone().map(|z| match names.iter().position(|known| *known == z) {
                    Some(i) => i,
                    None => {
                        names.push(z);
                        names.len() - 1
                    }
                })
            })
            .collect();
        let zones = names.len();
        Placer { nodes, zone_of, zones, spreads: HashMap::new() }
    }

    pub fn nodes(&self) -> &[NodeInfo] {
        self.nodes
    }

    /// The node the pod goes to (its index), counted there before the next decision; or the
    /// message of why none fits (`0/3 nodes are available: 3 Insufficient memory.`).
    pub fn place(&mut self, pod: &Pod) -> Result<usize, String> {
        let facts = PodFacts::of(pod, self.nodes);
        let spread = match facts.owner {
            Some(uid) => Some(&*self.spreads.entry(uid.to_string()).or_insert_with(|| Spread::of(uid, self.nodes, &self.zone_of, self.zones))),
            None => None,
        };
        let mut best: Option<(i64, usize)> = None;
        for (i, node) in self.nodes.iter().enumerate() {
            if !fits(&facts, node) {
                continue;
            }
            let (here, in_zone) = match spread {
                Some(s) => (s.per_node[i], self.zone_of[i].map(|z| s.per_zone[z])),
                None => (0, None),
            };
            let s = score(&facts, node, here, in_zone, spread);
            // Ties go to the name that sorts first, so that decisions are reproducible.
            let better = match best {
                None => true,
                Some((bs, bi)) => s > bs || (s == bs && node.name < self.nodes[bi].name),
            };
            if better {
                best = Some((s, i));
            }
        }
        let Some((_, i)) = best else { return Err(unschedulable_message(&facts, self.nodes)) };
        self.nodes[i].add_pod(pod);
        if let Some(spread) = facts.owner.and_then(|uid| self.spreads.get_mut(uid)) {
            spread.count(i, self.zone_of[i]);
        }
        Ok(i)
    }
}

/// Why no node takes the pod, counted per reason as Kubernetes' scheduler says it.
fn unschedulable_message(facts: &PodFacts<'_>, nodes: &[NodeInfo]) -> String {
    let mut reasons: BTreeMap<Rejection, usize> = BTreeMap::new();
    for node in nodes {
        for r in filter(facts, node) {
            *reasons.entry(r).or_default() += 1;
        }
    }
    let mut parts: Vec<String> = reasons.iter().map(|(r, n)| format!("{n} {}", r.text())).collect();
    parts.sort();
    let detail = if parts.is_empty() { String::new() } else { format!(": {}", parts.join(", ")) };
    format!("0/{} nodes are available{detail}.", nodes.len())
}

/// The node the pod should go to, or the message of why none fits.
pub fn place(pod: &Pod, nodes: &[NodeInfo]) -> Result<String, String> {
    let mut scratch = nodes.to_vec();
    let mut placer = Placer::new(&mut scratch);
    placer.place(pod).map(|i| nodes[i].name.clone())
}

/// Places every pod of `pending` in turn, counting each placement before the next; returns the
/// decisions in order.
pub fn place_all(pending: &[Pod], nodes: &mut [NodeInfo]) -> Vec<Result<String, String>> {
    let mut placer = Placer::new(nodes);
    pending.iter().map(|pod| placer.place(pod).map(|i| placer.nodes()[i].name.clone())).collect()
}

/// The nodes with the pods bound to them counted in.
pub fn node_infos(nodes: &[Node], pods: &[Pod]) -> Vec<NodeInfo> {
    let mut infos: Vec<NodeInfo> = nodes.iter().map(NodeInfo::from_node).collect();
    let index: HashMap<String, usize> = infos.iter().enumerate().map(|(i, n)| (n.name.clone(), i)).collect();
    for pod in pods.iter().filter(|p| !p.is_terminal()) {
        if let Some(i) = pod.spec.bound_node().and_then(|n| index.get(n)) {
            infos[*i].add_pod(pod);
        }
    }
    infos
}

/// How many bind (or unschedulable) writes one pass has in flight: decisions are made one pod at
/// a time in memory, and the writes that carry them out wait on the API server concurrently, so a
/// burst of 100 pods costs a few round trips, not 200.
pub const WRITES_IN_FLIGHT: usize = 16;

/// What a pass decided for one pending pod.
enum Decision {
    Bind(Pod, String),
    Unschedulable(Pod, String),
}

/// One pass: every unbound pod placed or marked unschedulable. Returns how many were bound, or
/// the first write that failed for a reason other than a conflict or a pod gone (after every
/// other write was made and is seen), so that the pass is backed off and run again.
pub async fn pass<C: Client>(client: &C, events: &Recorder<C>, nodes: &Store<Node>, pods: &Store<Pod>) -> Result<usize, ClientError> {
    let all_pods = pods.cloned();
    let mut infos = node_infos(&nodes.cloned(), &all_pods);
    // A pod naming another scheduler is left to it, as Kubernetes' scheduler does.
    let ours = |p: &Pod| p.spec.scheduler_name.as_deref().is_none_or(|n| n.is_empty() || n == crate::api::pod::DEFAULT_SCHEDULER);
    let mut pending: Vec<Pod> = all_pods.into_iter().filter(|p| p.spec.bound_node().is_none() && !p.is_terminating() && !p.is_terminal() && ours(p)).collect();
    pending.sort_by_key(|p| (p.metadata.creation_timestamp, p.metadata.name.clone()));
    // Decide every pod in order, each placement counted before the next (as if already bound).
    let mut placer = Placer::new(&mut infos);
    let mut decisions = Vec::new();
    for pod in pending {
        match placer.place(&pod) {
            Ok(i) => {
                let node = placer.nodes()[i].name.clone();
                decisions.push(Decision::Bind(pod, node));
            }
            Err(message) => {
                let current = pod.condition("PodScheduled");
                if !current.is_some_and(|c| c.status == "False" && c.message.as_deref() == Some(message.as_str())) {
                    decisions.push(Decision::Unschedulable(pod, message));
                }
            }
        }
    }
    let results: Vec<Result<(bool, u64), ClientError>> = futures::stream::iter(decisions)
        .map(|d| async move {
            match d {
                Decision::Bind(pod, node) => {
                    let bound = bind(client, &pod, &node).await;
                    if let Ok(Some(_)) = bound {
                        let message = format!("Successfully assigned {}/{} to {node}", pod.metadata.namespace_or_default(), pod.metadata.name);
                        events.record(&pod, NORMAL, "Scheduled", message);
                    }
                    bound.map(|rev| rev.map_or((false, 0), |rev| (true, rev)))
                }
                Decision::Unschedulable(pod, message) => {
                    let marked = mark_unschedulable(client, &pod, &message).await;
                    if let Ok(Some(_)) = marked {
                        events.record(&pod, WARNING, "FailedScheduling", message);
                    }
                    marked.map(|rev| (false, rev.unwrap_or(0)))
                }
            }
        })
        .buffer_unordered(WRITES_IN_FLIGHT)
        .collect()
        .await;
    let written = results.iter().filter_map(|r| r.as_ref().ok());
    let bound = written.clone().filter(|(b, _)| *b).count();
    let last_rev = written.map(|(_, r)| *r).max().unwrap_or(0);
    // The next pass must see these writes, or it would place the same pods again.
    if last_rev > 0 {
        pods.wait_for(last_rev, Duration::from_secs(5)).await;
    }
    match results.into_iter().find_map(Result::err) {
        Some(e) => Err(e),
        None => Ok(bound),
    }
}

/// Binds `pod` to `node` and marks it scheduled; the revision of the bind, or `None` when it
/// did not happen because the pod changed or is gone (its change queues the next pass); any other
/// failure is the pass's error.
async fn bind<C: Client>(client: &C, pod: &Pod, node: &str) -> Result<Option<u64>, ClientError> {
    let ns = pod.metadata.namespace_or_default();
    let name = &pod.metadata.name;
    let mut next = pod.clone();
    next.spec.node_name = Some(node.to_string());
    match client.replace(&next).await {
        Ok(written) => {
            tracing::info!(pod = %format!("{ns}/{name}"), node = %node, "bound");
            let rev = written.metadata.revision().unwrap_or(0);
            // The PodScheduled condition is written with the status.
            let mut status = written;
            status.set_condition(PodCondition {
                condition_type: "PodScheduled".into(),
                status: "True".into(),
                last_transition_time: Some(Time::now()),
                ..Default::default()
            });
            if let Err(e) = client.replace_status(&status).await {
                tracing::debug!(error = %e, "marking {ns}/{name} scheduled");
            }
            Ok(Some(rev))
        }
        Err(e) if e.is_conflict() || e.is_not_found() => Ok(None),
        Err(e) => {
            tracing::warn!(error = %e, "binding {ns}/{name} to {node}");
            Err(e)
        }
    }
}

/// Writes `PodScheduled=False` with the reasons; the revision written, if any (`None` when the
/// pod changed or is gone).
async fn mark_unschedulable<C: Client>(client: &C, pod: &Pod, message: &str) -> Result<Option<u64>, ClientError> {
    let ns = pod.metadata.namespace_or_default();
    let name = &pod.metadata.name;
    let mut next = pod.clone();
    next.set_condition(PodCondition {
        condition_type: "PodScheduled".into(),
        status: "False".into(),
        reason: Some("Unschedulable".into()),
        message: Some(message.to_string()),
        last_transition_time: Some(Time::now()),
        last_probe_time: None,
        ..Default::default()
    });
    next.status.phase.get_or_insert_with(|| "Pending".into());
    match client.replace_status(&next).await {
        Ok(written) => {
            tracing::info!(pod = %format!("{ns}/{name}"), "unschedulable: {message}");
            Ok(written.metadata.revision())
        }
        Err(e) if e.is_conflict() || e.is_not_found() => Ok(None),
        Err(e) => {
            tracing::warn!(error = %e, "marking {ns}/{name} unschedulable");
            Err(e)
        }
    }
}

/// The scheduler's stores and client.
pub struct Context<C> {
    pub client: C,
    /// Events as `default-scheduler`, as Kubernetes' scheduler reports them.
    pub events: Recorder<C>,
    pub nodes: Store<Node>,
    pub pods: Store<Pod>,
}

/// The one key of the scheduler's queue: a pass places every pending pod, so that each
/// placement counts before the next.
fn pass_key() -> ObjectKey {
    ObjectKey::cluster("pending-pods")
}

/// The scheduler as a controller: any change of a node or pod queues a pass; a pass also runs
/// every [`RESYNC`] for pods that fit nowhere yet.
pub fn controller<C: Client>(ctx: &Context<C>) -> Controller {
    Controller::new("scheduler").watches(&ctx.nodes, |_: &Node| vec![pass_key()]).watches(&ctx.pods, |_: &Pod| vec![pass_key()]).resync_every(RESYNC, || vec![pass_key()])
}

/// One pass, as a reconcile: a failed write fails it, and the pass is backed off (a conflict or
/// a pod gone is no failure: the pod's change queues the next pass).
async fn reconcile<C: Client>(_key: ObjectKey, ctx: Arc<Context<C>>) -> Result<Action, ClientError> {
    pass(&ctx.client, &ctx.events, &ctx.nodes, &ctx.pods).await?;
    Ok(Action::AwaitChange)
}

/// Runs the scheduler until dropped, on the given client (a `system:masters` identity).
pub async fn run<C: Client>(client: C) {
    let ctx = Arc::new(Context {
        nodes: Store::reflect(client.clone(), None, ListOptions::default()),
        pods: Store::reflect(client.clone(), None, ListOptions::default()),
        events: Recorder::new(client.clone(), "default-scheduler", ""),
        client,
    });
    controller(&ctx).run(reconcile, ctx.clone()).await;
}

#[cfg(test)]
mod tests;
