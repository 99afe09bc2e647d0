//! Node lifecycle: a node whose lease is older than the grace period is marked `Ready=Unknown`;
//! the pods of a node that stays not ready longer than they tolerate (and of nodes that no longer
//! exist) are deleted, so that their controllers replace them on healthy nodes.
//!
//! As in Kubernetes, a pod tolerates a node shown not ready for the `tolerationSeconds` of its
//! toleration of `node.kubernetes.io/unreachable` (status `Unknown`: the node stopped reporting)
//! or `node.kubernetes.io/not-ready` (status `False`: the node says so), with effect `NoExecute`;
//! the API server gives every pod both for the spec's `[health].eviction_seconds` (default 300)
//! unless it names its own ([`crate::apiserver`]'s default-toleration admission), a toleration
//! without seconds tolerates for ever, and a pod with no matching toleration (made before the
//! admission) gets the same default. The toleration is counted from the Ready condition's last
//! transition; Kubernetes counts it from the taint, which it adds at the same moment (this
//! controller does not write the taints: see docs/ARCHITECTURE.md).
//!
//! Evictions stop where they would make an outage worse ([`eviction_paused`]): in a zone none of
//! whose nodes is Ready, or with more than two not-ready nodes making up at least the spec's
//! `unhealthy_zone_percent` of it, and everywhere when that share of the whole cluster is not
//! ready: a partitioned zone or a master cut off from the nodes must not delete every pod. The
//! pods of a node that is gone are deleted at once whatever the guard says: the cloud controller
//! deletes a Node only when the cloud says its machine is terminated.
//!
//! On the [`runtime`](crate::runtime), keyed by node name: its lease and the pods bound to it map
//! to it, and each node is looked at again every second (a lease goes stale without any change).
//! A reconcile compares the node's Ready condition with its lease and writes only when they
//! disagree. A node comes back Ready when its agent reports again (the agent rewrites its status
//! whenever it is not shown Ready). Leases are never counted as older than the controller's own
//! start: after the master was down, every lease is stale, and the agents get the grace period to
//! reach the master again before their nodes are marked (as Kubernetes' node lifecycle controller
//! counts from when it observed a lease).

use std::collections::{BTreeMap, BTreeSet};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use futures::StreamExt;

pub use crate::api::node::{NOT_READY, UNREACHABLE};

use crate::api::lease::{Lease, NODE_LEASE_NAMESPACE};
use crate::api::pod::Pod;
use crate::api::time::{MicroTime, Time};
use crate::api::{Node, NodeCondition};
use crate::api::event::NORMAL;
use crate::client::{ClientError, ListOptions};
use crate::runtime::events::Recorder;
use crate::runtime::{Action, Client, Controller, ObjectKey, Store};

/// How often each node is looked at without a change.
pub const TICK: Duration = Duration::from_secs(1);

/// What a tick decided for one node.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Verdict {
    /// Lease fresh (or the node already shown not ready): nothing to do.
    Keep,
    /// The lease is stale but the node is shown Ready: mark it Unknown.
    MarkUnknown { stale_for: Duration },
}

fn seconds(t: Time) -> f64 {
    MicroTime::from(t).unix_seconds_f64()
}

/// Decides from a node, its lease's renew time (seconds since the epoch), when this controller
/// started watching (no heartbeat counts as older) and now.
pub fn verdict(node: &Node, lease_renewed: Option<f64>, watching_since: f64, now: f64, grace: Duration) -> Verdict {
    let ready = node.ready_condition();
    let shown = ready.map_or("Unknown", |c| c.status.as_str());
    // Without a lease, the node's own heartbeat time counts.
    let heartbeat = lease_renewed.or_else(|| ready.and_then(|c| c.last_heartbeat_time).map(seconds)).map(|t| t.max(watching_since));
    let age = heartbeat.map(|t| (now - t).max(0.0)).unwrap_or(f64::INFINITY);
    if shown == "True" && age > grace.as_secs_f64() {
        Verdict::MarkUnknown { stale_for: Duration::from_secs_f64(age.min(1e9)) }
    } else {
        Verdict::Keep
    }
}

/// How long `node` has been shown not ready (its Ready condition not `True`), counted from the
/// condition's last transition, and the taint that stands for it; None while it is Ready.
pub fn not_ready_for(node: &Node, now: f64) -> Option<(Duration, &'static str)> {
    let ready = node.ready_condition()?;
    if ready.status == "True" {
        return None;
    }
    let since = ready.last_transition_time.or(ready.last_heartbeat_time).map(seconds)?;
    let taint = if ready.status == "False" { NOT_READY } else { UNREACHABLE };
    Some((Duration::from_secs_f64((now - since).max(0.0)), taint))
}

/// How long `pod` stays on a node with the `NoExecute` taint `taint`, as Kubernetes' taint
/// manager reads its tolerations: the least `tolerationSeconds` of those that match (0 or less:
/// none), for ever (None) when the matching ones give no seconds, and `default` when none matches.
pub fn toleration_of(pod: &Pod, taint: &str, default: Duration) -> Option<Duration> {
    let matching: Vec<_> = pod.spec.tolerations.iter().filter(|t| t.tolerates(taint, None, "NoExecute")).collect();
    if matching.is_empty() {
        return Some(default);
    }
    matching.iter().filter_map(|t| t.toleration_seconds).min().map(|s| Duration::from_secs(s.max(0).unsigned_abs()))
}

/// The zone a node is in (its `topology.kubernetes.io/zone` label), "" without one.
pub fn zone_of(node: &Node) -> &str {
    node.metadata.labels.get("topology.kubernetes.io/zone").map(String::as_str).unwrap_or("")
}

fn is_ready(node: &Node) -> bool {
    node.ready_condition().is_some_and(|c| c.status == "True")
}

/// Why evictions are paused for the nodes of `zone`, if they are: the zone has no Ready node, or
/// more than two of its nodes are not ready and they make up at least `threshold_percent` of
/// it; or the same share of the whole cluster is not ready. Nodes without a Ready condition
/// count as not ready, as Kubernetes counts them.
pub fn eviction_paused(nodes: &[Arc<Node>], zone: &str, threshold_percent: u32) -> Option<String> {
    let disrupted = |total: usize, not_ready: usize| not_ready > 2 && not_ready * 100 >= threshold_percent as usize * total;
    let in_zone: Vec<&Arc<Node>> = nodes.iter().filter(|n| zone_of(n) == zone).collect();
    let not_ready = in_zone.iter().filter(|n| !is_ready(n)).count();
    let name = if zone.is_empty() { "the nodes without a zone".to_string() } else { format!("zone {zone}") };
    if not_ready > 0 && not_ready == in_zone.len() {
        return Some(format!("{name} has no Ready node ({not_ready} not ready): a partition or an outage, not failed machines"));
    }
    if disrupted(in_zone.len(), not_ready) {
        return Some(format!("{not_ready} of the {} nodes of {name} are not ready (at least {threshold_percent}%)", in_zone.len()));
    }
    let all_not_ready = nodes.iter().filter(|n| !is_ready(n)).count();
    if disrupted(nodes.len(), all_not_ready) {
        return Some(format!("{all_not_ready} of the cluster's {} nodes are not ready (at least {threshold_percent}%)", nodes.len()));
    }
    None
}

/// How many evictions are in flight at once: a dead worker's 30 pods cost a few round trips.
const EVICTIONS_IN_FLIGHT: usize = 16;

/// Deletes `pods` (those of a node that is gone or not ready), each with a `NodeControllerEviction`
/// event as Kubernetes' node lifecycle controller records; returns how many were deleted.
pub async fn evict<C: Client>(client: &C, events: &Recorder<C>, node: &str, pods: &[Arc<Pod>]) -> Result<usize, ClientError> {
    // At once (grace 0): no agent is there to stop them and confirm, and their replacements must
    // not wait for one (Kubernetes leaves them Terminating until the node is gone; see
    // docs/ARCHITECTURE.md).
    let results: Vec<Result<bool, ClientError>> = futures::stream::iter(pods.iter().cloned())
        .map(|pod: Arc<Pod>| async move {
            let key = ObjectKey::of(&pod.metadata);
            match client.delete_now::<Pod>(&key, &pod.metadata.uid).await {
                Ok(()) => {
                    tracing::info!(pod = %key, node = %node, "evicted: the node is not ready");
                    events.record(pod.as_ref(), NORMAL, "NodeControllerEviction", format!("Marking for deletion Pod {} from Node {node}", pod.metadata.name));
                    Ok(true)
                }
                Err(e) if e.is_not_found() || matches!(e, ClientError::Api { code: 409, .. }) => Ok(false),
                Err(e) => Err(e),
            }
        })
        .buffer_unordered(EVICTIONS_IN_FLIGHT)
        .collect()
        .await;
    let mut evicted = 0;
    for r in results {
        evicted += usize::from(r?);
    }
    Ok(evicted)
}

/// The controller's stores, client and timings.
pub struct Context<C> {
    pub client: C,
    pub nodes: Store<Node>,
    pub leases: Store<Lease>,
    pub pods: Store<Pod>,
    /// Events as `node-controller` records them.
    pub events: Recorder<C>,
    pub grace: Duration,
    /// How long a pod without its own toleration stays on a node shown not ready.
    pub toleration: Duration,
    /// The share of not-ready nodes (percent) at which evictions stop ([`eviction_paused`]).
    pub unhealthy_zone_percent: u32,
    /// The zones whose evictions are paused, with why: a change is logged once.
    paused: Mutex<BTreeMap<String, String>>,
    /// When the controller started (seconds since the epoch): no lease counts as older.
    pub watching_since: f64,
}

impl<C: Client> Context<C> {
    /// Stores of nodes, node leases and pods fed by `client`.
    pub fn new(client: C, settings: Settings) -> Arc<Self> {
        Arc::new(Context {
            nodes: Store::reflect(client.clone(), None, ListOptions::default()),
            leases: Store::reflect(client.clone(), Some(NODE_LEASE_NAMESPACE), ListOptions::default()),
            pods: Store::reflect(client.clone(), None, ListOptions::default()),
            events: Recorder::new(client.clone(), "node-controller", ""),
            client,
            grace: settings.grace,
            toleration: settings.toleration,
            unhealthy_zone_percent: settings.unhealthy_zone_percent,
            paused: Mutex::default(),
            watching_since: crate::api::time::now_seconds(),
        })
    }

    fn pods_on(&self, node: &str) -> Vec<Arc<Pod>> {
        self.pods.snapshot().into_iter().filter(|p| p.spec.bound_node() == Some(node)).collect()
    }

    /// Whether evictions in `zone` are paused now; logs when that changes.
    fn paused(&self, zone: &str) -> bool {
        let why = eviction_paused(&self.nodes.snapshot(), zone, self.unhealthy_zone_percent);
        let mut paused = self.paused.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
        let before = paused.get(zone).cloned();
        match (&why, before) {
            (Some(why), before) if before.as_ref() != Some(why) => {
                tracing::info!(zone = %zone, "evictions paused: {why}");
                paused.insert(zone.to_string(), why.clone());
            }
            (None, Some(_)) => {
                tracing::info!(zone = %zone, "evictions resumed");
                paused.remove(zone);
            }
            _ => {}
        }
        why.is_some()
    }
}

/// When nodes are shown not ready and their pods evicted.
#[derive(Debug, Clone, Copy)]
pub struct Settings {
    /// A lease older than this shows the node not ready (Kubernetes' default 40 s).
    pub grace: Duration,
    /// The toleration of a pod that names none (Kubernetes' default 300 s).
    pub toleration: Duration,
    /// Evictions stop at this share of not-ready nodes (Kubernetes' default 55 %).
    pub unhealthy_zone_percent: u32,
}

/// The node lifecycle controller: keyed by node name; leases and bound pods map to their node.
/// Resyncs also cover nodes that only pods still name (their pods are deleted).
pub fn controller<C: Client>(ctx: &Context<C>) -> Controller {
    let (nodes, pods) = (ctx.nodes.clone(), ctx.pods.clone());
    Controller::new("node-lifecycle")
        .owns(&ctx.nodes, Duration::from_secs(30))
        .watches(&ctx.leases, |l: &Lease| vec![ObjectKey::cluster(l.metadata.name.clone())])
        .watches(&ctx.pods, |p: &Pod| p.spec.bound_node().map(ObjectKey::cluster).into_iter().collect())
        .resync_every(Duration::from_secs(30), move || {
            let bound: BTreeSet<ObjectKey> = pods.snapshot().iter().filter_map(|p| p.spec.bound_node().map(ObjectKey::cluster)).collect();
            bound.into_iter().filter(|k| nodes.get(k).is_none()).collect()
        })
}

/// Reconciles one node: marks it Unknown when its lease is stale, evicts its pods after the
/// toleration, deletes the pods of a node that does not exist; looks again in [`TICK`].
pub async fn reconcile<C: Client>(key: ObjectKey, ctx: Arc<Context<C>>) -> Result<Action, ClientError> {
    let Some(node) = ctx.nodes.get(&key) else {
        let pods = ctx.pods_on(&key.name);
        if !pods.is_empty() {
            evict(&ctx.client, &ctx.events, &key.name, &pods).await?;
        }
        return Ok(Action::AwaitChange);
    };
    let now = crate::api::time::now_seconds();
    let lease_key = ObjectKey::namespaced(NODE_LEASE_NAMESPACE, key.name.clone());
    let renewed = ctx.leases.get(&lease_key).and_then(|l| l.spec.renew_time).map(MicroTime::unix_seconds_f64);
    if let Verdict::MarkUnknown { stale_for } = verdict(&node, renewed, ctx.watching_since, now, ctx.grace) {
        let message = format!("Kubelet stopped posting node status ({}s without a lease renewal).", stale_for.as_secs());
        let mut next = Node::clone(&node);
        for c in next.status.conditions.iter_mut().filter(|c| c.condition_type == "Ready") {
            *c = NodeCondition {
                status: "Unknown".into(),
                reason: "NodeStatusUnknown".into(),
                message: message.clone(),
                last_transition_time: Some(Time::now()),
                ..c.clone()
            };
        }
        match ctx.client.replace_status(&next).await {
            Ok(_) => {
                tracing::info!(node = %key, "node not ready: {message}");
                ctx.events.record(node.as_ref(), NORMAL, "NodeNotReady", format!("Node {} status is now: NodeNotReady", key.name));
            }
            // The agent wrote in between: the next tick looks again.
            Err(e) if e.is_conflict() => {}
            Err(e) => return Err(e),
        }
    } else if let Some((since, taint)) = not_ready_for(&node, now) {
        let due: Vec<Arc<Pod>> = ctx.pods_on(&key.name).into_iter().filter(|p| !p.is_terminating() && toleration_of(p, taint, ctx.toleration).is_some_and(|t| since >= t)).collect();
        if !due.is_empty() && !ctx.paused(zone_of(&node)) {
            evict(&ctx.client, &ctx.events, &key.name, &due).await?;
        }
    }
    Ok(Action::RequeueAfter(TICK))
}

/// Runs the controller until dropped.
pub async fn run<C: Client>(client: C, settings: Settings) {
    let ctx = Context::new(client, settings);
    controller(&ctx).concurrency(4).run(reconcile, ctx.clone()).await;
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::api::time::parse_rfc3339;

    fn node(status: &str, heartbeat: &str) -> Node {
        let mut n = Node::new("n");
        n.status.conditions.push(NodeCondition { condition_type: "Ready".into(), status: status.into(), last_heartbeat_time: Some(Time::parse(heartbeat).unwrap()), ..Default::default() });
        n
    }

    fn with_transition(status: &str, at: &str) -> Node {
        let mut n = Node::new("n");
        n.status.conditions.push(NodeCondition { condition_type: "Ready".into(), status: status.into(), last_transition_time: Some(Time::parse(at).unwrap()), ..Default::default() });
        n
    }

    #[test]
    fn a_ready_node_with_a_fresh_lease_is_kept() {
        let now = parse_rfc3339("2026-01-01T00:00:10Z").unwrap();
        assert_eq!(verdict(&node("True", "2026-01-01T00:00:00Z"), Some(now - 3.0), 0.0, now, Duration::from_secs(10)), Verdict::Keep);
    }

    #[test]
    fn a_ready_node_whose_lease_is_older_than_the_grace_is_marked_unknown() {
        let now = parse_rfc3339("2026-01-01T00:01:00Z").unwrap();
        assert_eq!(
            verdict(&node("True", "2026-01-01T00:00:00Z"), Some(now - 11.0), 0.0, now, Duration::from_secs(10)),
            Verdict::MarkUnknown { stale_for: Duration::from_secs(11) }
        );
    }

    #[test]
    fn a_node_already_not_ready_is_not_written_again() {
        let now = parse_rfc3339("2026-01-01T00:01:00Z").unwrap();
        assert_eq!(verdict(&node("Unknown", "2026-01-01T00:00:00Z"), Some(now - 60.0), 0.0, now, Duration::from_secs(10)), Verdict::Keep);
    }

    #[test]
    fn a_node_is_not_ready_from_its_conditions_last_transition_unreachable_when_unknown() {
        let now = parse_rfc3339("2026-01-01T00:01:00Z").unwrap();
        assert_eq!(not_ready_for(&with_transition("Unknown", "2026-01-01T00:00:45Z"), now), Some((Duration::from_secs(15), UNREACHABLE)));
        assert_eq!(not_ready_for(&with_transition("False", "2026-01-01T00:00:00Z"), now), Some((Duration::from_secs(60), NOT_READY)));
        assert_eq!(not_ready_for(&with_transition("True", "2026-01-01T00:00:00Z"), now), None);
        assert_eq!(not_ready_for(&Node::new("n"), now), None, "a node that never reported is not judged");
    }

    fn pod(tolerations: serde_json::Value) -> Pod {
        Pod { spec: serde_json::from_value(serde_json::json!({"containers": [{"name": "c", "image": "i"}], "tolerations": tolerations})).unwrap(), ..Default::default() }
    }

    #[test]
    fn a_pod_tolerates_a_not_ready_node_as_its_tolerations_say() {
        let default = Duration::from_secs(300);
        assert_eq!(toleration_of(&pod(serde_json::json!([])), UNREACHABLE, default), Some(default), "none of its own: the default");
        let own = pod(serde_json::json!([
            {"key": UNREACHABLE, "operator": "Exists", "effect": "NoExecute", "tolerationSeconds": 30},
            {"key": NOT_READY, "operator": "Exists", "effect": "NoExecute"},
        ]));
        assert_eq!(toleration_of(&own, UNREACHABLE, default), Some(Duration::from_secs(30)));
        assert_eq!(toleration_of(&own, NOT_READY, default), None, "without seconds: for ever");
        let two = pod(serde_json::json!([
            {"operator": "Exists", "tolerationSeconds": 100},
            {"key": UNREACHABLE, "operator": "Exists", "effect": "NoExecute", "tolerationSeconds": 20},
        ]));
        assert_eq!(toleration_of(&two, UNREACHABLE, default), Some(Duration::from_secs(20)), "the least of those that match");
        let other_effect = pod(serde_json::json!([{"key": UNREACHABLE, "operator": "Exists", "effect": "NoSchedule"}]));
        assert_eq!(toleration_of(&other_effect, UNREACHABLE, default), Some(default), "a NoSchedule toleration does not count");
        let negative = pod(serde_json::json!([{"key": NOT_READY, "operator": "Exists", "effect": "NoExecute", "tolerationSeconds": -5}]));
        assert_eq!(toleration_of(&negative, NOT_READY, default), Some(Duration::ZERO));
    }

    fn zoned(name: &str, zone: &str, ready: bool) -> Arc<Node> {
        let mut n = Node::new(name);
        n.metadata.labels.insert("topology.kubernetes.io/zone".into(), zone.into());
        n.status.conditions.push(NodeCondition { condition_type: "Ready".into(), status: if ready { "True" } else { "Unknown" }.into(), ..Default::default() });
        Arc::new(n)
    }

    #[test]
    fn evictions_stop_in_a_zone_without_a_ready_node_or_when_too_many_nodes_are_not_ready() {
        // Zone a: a master and a worker; zone b: one worker.
        let healthy = vec![zoned("m", "a", true), zoned("w0", "a", true), zoned("w1", "b", true)];
        assert_eq!(eviction_paused(&healthy, "a", 55), None);
        let one_down = vec![zoned("m", "a", true), zoned("w0", "a", false), zoned("w1", "b", true)];
        assert_eq!(eviction_paused(&one_down, "a", 55), None, "one of two in a zone: evict (a failed machine)");
        let zone_cut = vec![zoned("m", "a", true), zoned("w0", "a", true), zoned("w1", "b", false)];
        assert!(eviction_paused(&zone_cut, "b", 55).is_some_and(|m| m.contains("zone b has no Ready node")));
        // Ten nodes in one zone: three down is 30 %, five down is 50 %, six is 60 %.
        let zone = |down: usize| (0..10).map(|i| zoned(&format!("n{i}"), "a", i >= down)).collect::<Vec<_>>();
        assert_eq!(eviction_paused(&zone(3), "a", 55), None);
        assert_eq!(eviction_paused(&zone(5), "a", 55), None);
        assert!(eviction_paused(&zone(6), "a", 55).is_some_and(|m| m.contains("6 of the 10 nodes of zone a")));
        assert!(eviction_paused(&zone(3), "a", 30).is_some(), "the threshold is the spec's");
        // Two zones of three, each with two not ready: no zone is disrupted (two are never
        // enough), but four of the cluster's six nodes are.
        let most: Vec<Arc<Node>> = ["a", "b"].iter().flat_map(|z| (0..3).map(move |i| zoned(&format!("{z}{i}"), z, i == 0))).collect();
        assert!(eviction_paused(&most, "a", 55).is_some_and(|m| m.contains("4 of the cluster's 6 nodes")));
        assert!(eviction_paused(&most[..3], "a", 55).is_none(), "zone a alone is not disrupted");
        let three_of_three = vec![zoned("x", "", false), zoned("y", "", false), zoned("z", "", true)];
        assert!(eviction_paused(&three_of_three, "", 55).is_none(), "two not ready are never a disruption");
    }

    #[test]
    fn after_a_master_restart_stale_leases_get_the_grace_counted_from_the_controllers_start() {
        // The master was down for a minute: every lease is a minute old when the controller starts.
        let started = parse_rfc3339("2026-01-01T00:01:00Z").unwrap();
        let lease = Some(started - 60.0);
        let ready = node("True", "2026-01-01T00:00:00Z");
        let grace = Duration::from_secs(10);
        assert_eq!(verdict(&ready, lease, started, started + 1.0, grace), Verdict::Keep, "agents get the grace to reconnect");
        assert_eq!(verdict(&ready, lease, started, started + 9.0, grace), Verdict::Keep);
        assert!(matches!(verdict(&ready, lease, started, started + 11.0, grace), Verdict::MarkUnknown { .. }), "an agent that never comes back is still noticed");
    }

    #[test]
    fn without_a_lease_the_heartbeat_time_counts() {
        let now = parse_rfc3339("2026-01-01T00:00:30Z").unwrap();
        assert!(matches!(verdict(&node("True", "2026-01-01T00:00:00Z"), None, 0.0, now, Duration::from_secs(10)), Verdict::MarkUnknown { .. }));
    }
}
