//! Node lifecycle: a node whose lease is older than the grace period is marked `Ready=Unknown`;
//! the pods of a node that stays not ready longer than the eviction toleration (and of nodes
//! that no longer exist) are deleted, so that their controllers replace them on healthy nodes.
//!
//! Level-triggered: every tick compares each node's Ready condition with its lease and writes
//! only when they disagree. A node comes back Ready when its agent reports again (the agent
//! rewrites its status whenever it is not shown Ready). Leases are never counted as older than
//! the controller's own start: after the master was down, every lease is stale, and the agents
//! get the grace period to reach the master again before their nodes are marked (as Kubernetes'
//! node lifecycle controller counts from when it observed a lease).

use std::collections::HashMap;
use std::time::Duration;

use futures::StreamExt;
use serde_json::{json, Value};

use crate::api::lease::NODE_LEASE_NAMESPACE as LEASE_NAMESPACE;
use crate::api::time::{now_rfc3339, parse_rfc3339};
use crate::client::{ApiClient, ClientError};

// Until this controller reads typed Nodes (the runtime port), it reads the Ready condition from
// JSON itself: the agent it used to borrow these from now reports typed Nodes.
fn ready_condition(node: &Value) -> Option<&Value> {
    node.pointer("/status/conditions")?.as_array()?.iter().find(|c| c.get("type").and_then(Value::as_str) == Some("Ready"))
}

fn ready_status(node: &Value) -> Option<&str> {
    ready_condition(node)?.get("status")?.as_str()
}

/// What a tick decided for one node.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Verdict {
    /// Lease fresh (or the node already shown not ready): nothing to do.
    Keep,
    /// The lease is stale but the node is shown Ready: mark it Unknown.
    MarkUnknown { stale_for: Duration },
}

/// Decides from a node, its lease's renew time (seconds since the epoch), when this controller
/// started watching (no heartbeat counts as older) and now.
pub fn verdict(node: &Value, lease_renewed: Option<f64>, watching_since: f64, now: f64, grace: Duration) -> Verdict {
    let shown = ready_status(node).unwrap_or("Unknown");
    // Without a lease, the node's own heartbeat time counts.
    let heartbeat = lease_renewed
        .or_else(|| ready_condition(node).and_then(|c| c.get("lastHeartbeatTime")).and_then(Value::as_str).and_then(parse_rfc3339))
        .map(|t| t.max(watching_since));
    let age = heartbeat.map(|t| (now - t).max(0.0)).unwrap_or(f64::INFINITY);
    if shown == "True" && age > grace.as_secs_f64() {
        Verdict::MarkUnknown { stale_for: Duration::from_secs_f64(age.min(1e9)) }
    } else {
        Verdict::Keep
    }
}

/// Whether the pods of `node` should be evicted: it has been shown not ready (its Ready condition
/// not `True`) for longer than `toleration`, counted from the condition's last transition.
pub fn evicts(node: &Value, now: f64, toleration: Duration) -> bool {
    let Some(ready) = ready_condition(node) else { return false };
    if ready.get("status").and_then(Value::as_str) == Some("True") {
        return false;
    }
    let since = ready
        .get("lastTransitionTime")
        .and_then(Value::as_str)
        .and_then(parse_rfc3339)
        .or_else(|| ready.get("lastHeartbeatTime").and_then(Value::as_str).and_then(parse_rfc3339));
    since.is_some_and(|t| now - t > toleration.as_secs_f64())
}

/// How many evictions are in flight at once: a dead worker's 30 pods cost a few round trips.
const EVICTIONS_IN_FLIGHT: usize = 16;

/// Deletes the pods bound to nodes that [`evicts`] picks or that do not exist.
pub async fn evict(client: &ApiClient, nodes: &[Value], toleration: Duration) -> Result<usize, ClientError> {
    let now = crate::api::time::now_seconds();
    let known: HashMap<&str, &Value> = nodes.iter().filter_map(|n| Some((n.pointer("/metadata/name")?.as_str()?, n))).collect();
    let pods = client.list_values("/api/v1/pods").await?;
    let mut doomed = Vec::new();
    for pod in &pods {
        let Some(node) = pod.pointer("/spec/nodeName").and_then(Value::as_str).filter(|n| !n.is_empty()) else { continue };
        let gone = match known.get(node) {
            Some(n) => evicts(n, now, toleration),
            None => true,
        };
        if !gone {
            continue;
        }
        let (Some(ns), Some(name)) = (pod.pointer("/metadata/namespace").and_then(Value::as_str), pod.pointer("/metadata/name").and_then(Value::as_str)) else { continue };
        doomed.push((ns.to_string(), name.to_string(), node.to_string()));
    }
    let results: Vec<Result<bool, ClientError>> = futures::stream::iter(doomed)
        .map(|(ns, name, node)| async move {
            match client.delete_value(&format!("/api/v1/namespaces/{ns}/pods/{name}")).await {
                Ok(_) => {
                    tracing::info!(pod = %format!("{ns}/{name}"), node = %node, "evicted: the node is not ready");
                    Ok(true)
                }
                Err(e) if e.is_not_found() => Ok(false),
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

/// One pass over all nodes; `watching_since` is when the controller started (seconds since the
/// epoch).
pub async fn tick(client: &ApiClient, grace: Duration, watching_since: f64) -> Result<usize, ClientError> {
    let nodes = client.list_values("/api/v1/nodes").await?;
    let leases = client.list_values(&format!("/apis/coordination.k8s.io/v1/namespaces/{LEASE_NAMESPACE}/leases")).await?;
    let renewed: HashMap<String, f64> = leases
        .iter()
        .filter_map(|l| Some((l.pointer("/metadata/name")?.as_str()?.to_string(), parse_rfc3339(l.pointer("/spec/renewTime")?.as_str()?)?)))
        .collect();
    let now = crate::api::time::now_seconds();
    let mut changed = 0;
    for mut node in nodes {
        let Some(name) = node.pointer("/metadata/name").and_then(Value::as_str).map(str::to_string) else { continue };
        if let Verdict::MarkUnknown { stale_for } = verdict(&node, renewed.get(&name).copied(), watching_since, now, grace) {
            let message = format!("Kubelet stopped posting node status ({}s without a lease renewal).", stale_for.as_secs());
            if let Some(conditions) = node.pointer_mut("/status/conditions").and_then(Value::as_array_mut) {
                for c in conditions.iter_mut().filter(|c| c.get("type").and_then(Value::as_str) == Some("Ready")) {
                    c["status"] = json!("Unknown");
                    c["reason"] = json!("NodeStatusUnknown");
                    c["message"] = json!(message);
                    c["lastTransitionTime"] = json!(now_rfc3339());
                }
            }
            match client.replace_value(&format!("/api/v1/nodes/{name}/status"), &node).await {
                Ok(_) => {
                    tracing::info!(node = %name, "node not ready: {message}");
                    changed += 1;
                }
                // The agent wrote in between: the next tick looks again.
                Err(e) if e.is_conflict() => {}
                Err(e) => return Err(e),
            }
        }
    }
    Ok(changed)
}

/// Runs the controller forever, one tick a second: nodes marked, then pods evicted after
/// `toleration`.
pub async fn run(client: ApiClient, grace: Duration, toleration: Duration) {
    let watching_since = crate::api::time::now_seconds();
    let mut ticker = tokio::time::interval(Duration::from_secs(1));
    loop {
        ticker.tick().await;
        if let Err(e) = tick(&client, grace, watching_since).await {
            tracing::warn!(error = %e, "node lifecycle pass");
        }
        let evicted = match client.list_values("/api/v1/nodes").await {
            Ok(nodes) => evict(&client, &nodes, toleration).await,
            Err(e) => Err(e),
        };
        if let Err(e) = evicted {
            tracing::warn!(error = %e, "pod eviction pass");
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn node(status: &str, heartbeat: &str) -> Value {
        json!({ "metadata": { "name": "n" }, "status": { "conditions": [{ "type": "Ready", "status": status, "lastHeartbeatTime": heartbeat }] } })
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
        let with_transition = |status: &str, t: &str| json!({"status": {"conditions": [{"type": "Ready", "status": status, "lastTransitionTime": t}]}});
        let tol = Duration::from_secs(10);
        assert!(!evicts(&with_transition("Unknown", "2026-01-01T00:00:55Z"), now, tol));
        assert!(evicts(&with_transition("Unknown", "2026-01-01T00:00:45Z"), now, tol));
        assert!(evicts(&with_transition("False", "2026-01-01T00:00:00Z"), now, tol));
        assert!(!evicts(&with_transition("True", "2026-01-01T00:00:00Z"), now, tol));
        assert!(!evicts(&json!({"status": {}}), now, tol));
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
