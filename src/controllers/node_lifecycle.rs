//! Node lifecycle: a node whose lease is older than the grace period is marked `Ready=Unknown`;
//! the pods of a node that stays not ready longer than the eviction toleration (and of nodes
//! that no longer exist) are deleted, so that their controllers replace them on healthy nodes.
//!
//! On the [`runtime`](crate::runtime), keyed by node name: its lease and the pods bound to it map
//! to it, and each node is looked at again every second (a lease goes stale without any change).
//! A reconcile compares the node's Ready condition with its lease and writes only when they
//! disagree. A node comes back Ready when its agent reports again (the agent rewrites its status
//! whenever it is not shown Ready). Leases are never counted as older than the controller's own
//! start: after the master was down, every lease is stale, and the agents get the grace period to
//! reach the master again before their nodes are marked (as Kubernetes' node lifecycle controller
//! counts from when it observed a lease).

use std::collections::BTreeSet;
use std::sync::Arc;
use std::time::Duration;

use futures::StreamExt;

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

/// Whether the pods of `node` should be evicted: it has been shown not ready (its Ready condition
/// not `True`) for longer than `toleration`, counted from the condition's last transition.
pub fn evicts(node: &Node, now: f64, toleration: Duration) -> bool {
    let Some(ready) = node.ready_condition() else { return false };
    if ready.status == "True" {
        return false;
    }
    let since = ready.last_transition_time.or(ready.last_heartbeat_time).map(seconds);
    since.is_some_and(|t| now - t > toleration.as_secs_f64())
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
    pub toleration: Duration,
    /// When the controller started (seconds since the epoch): no lease counts as older.
    pub watching_since: f64,
}

impl<C: Client> Context<C> {
    /// Stores of nodes, node leases and pods fed by `client`.
    pub fn new(client: C, grace: Duration, toleration: Duration) -> Arc<Self> {
        Arc::new(Context {
            nodes: Store::reflect(client.clone(), None, ListOptions::default()),
            leases: Store::reflect(client.clone(), Some(NODE_LEASE_NAMESPACE), ListOptions::default()),
            pods: Store::reflect(client.clone(), None, ListOptions::default()),
            events: Recorder::new(client.clone(), "node-controller", ""),
            client,
            grace,
            toleration,
            watching_since: crate::api::time::now_seconds(),
        })
    }

    fn pods_on(&self, node: &str) -> Vec<Arc<Pod>> {
        self.pods.snapshot().into_iter().filter(|p| p.spec.bound_node() == Some(node)).collect()
    }
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
    } else if evicts(&node, now, ctx.toleration) {
        let pods = ctx.pods_on(&key.name);
        if !pods.is_empty() {
            ctx.events.record(node.as_ref(), NORMAL, "DeletingAllPods", format!("Deleting all Pods from Node {}.", key.name));
            evict(&ctx.client, &ctx.events, &key.name, &pods).await?;
        }
    }
    Ok(Action::RequeueAfter(TICK))
}

/// Runs the controller until dropped: nodes marked after `grace`, their pods evicted after
/// `toleration`.
pub async fn run<C: Client>(client: C, grace: Duration, toleration: Duration) {
    let ctx = Context::new(client, grace, toleration);
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
    fn pods_are_evicted_only_after_the_node_stayed_not_ready_beyond_the_toleration() {
        let now = parse_rfc3339("2026-01-01T00:01:00Z").unwrap();
        let tol = Duration::from_secs(10);
        assert!(!evicts(&with_transition("Unknown", "2026-01-01T00:00:55Z"), now, tol));
        assert!(evicts(&with_transition("Unknown", "2026-01-01T00:00:45Z"), now, tol));
        assert!(evicts(&with_transition("False", "2026-01-01T00:00:00Z"), now, tol));
        assert!(!evicts(&with_transition("True", "2026-01-01T00:00:00Z"), now, tol));
        assert!(!evicts(&Node::new("n"), now, tol));
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
