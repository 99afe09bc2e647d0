//! Cordon and drain over the API, as `kubectl drain` does: used by `clusterctl scale` before it
//! removes machines and by `create` before it upgrades a node's software.

//!
//! As with kubectl, pods that no controller owns would be lost for good, so `clusterctl drain`
//! refuses them unless `--force`. What to evict ([`plan_evictions`]) and the wait condition
//! ([`pending`]) are pure functions; the rest only talks to the API.

use std::collections::{BTreeMap, BTreeSet};
use std::time::{Duration, Instant};

use serde_json::Value;

use super::{ApiClient, ClientError, ListOptions};
use crate::api::deployment::ReplicaSet;
use crate::api::lease::{Lease, NODE_LEASE_NAMESPACE};
use crate::api::pod::Pod;
use crate::api::resource::{LEASES, NODES, PODS, REPLICA_SETS};
use crate::api::Node;
use crate::report::Reporter;

/// How often a drain looks at the pods while it waits.
const POLL: Duration = Duration::from_millis(500);

/// Sets (`true`) or clears a node's `spec.unschedulable` (cordon, uncordon); returns whether it changed.
pub async fn set_unschedulable(client: &ApiClient, node: &str, unschedulable: bool) -> Result<bool, ClientError> {
    let current: Node = client.get(&NODES, None, node).await?;
    if current.spec.unschedulable == unschedulable {
        return Ok(false);
    }
    // A merge patch, not a typed update: it touches this one field whatever else the Node holds,
    // and its null (which a typed Node cannot say) removes the field, as kubectl leaves an
    // uncordoned node.
    let patch = serde_json::json!({ "spec": { "unschedulable": if unschedulable { Value::Bool(true) } else { Value::Null } } });
    client.patch::<Node>(&NODES, None, node, &patch).await?;
    Ok(true)
}

/// The controller that owns a pod (a ReplicaSet here).
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
pub struct Owner {
    pub kind: String,
    pub name: String,
    pub uid: String,
}

/// A pod drain deletes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Eviction {
    pub namespace: String,
    pub name: String,
    pub uid: String,
    /// `None` for a pod no controller owns (only evicted with `--force`).
    pub owner: Option<Owner>,
}

fn controller_of(pod: &Pod) -> Option<Owner> {
    let r = pod.metadata.controller_owner()?;
    Some(Owner { kind: r.kind.clone(), name: r.name.clone(), uid: r.uid.clone() })
}

/// What to evict of the pods bound to the node; without `force`, the names (`namespace/name`) of
/// the pods no controller owns are an error.
pub fn plan_evictions(pods_on_node: &[Pod], force: bool) -> Result<Vec<Eviction>, Vec<String>> {
    let evictions: Vec<Eviction> = pods_on_node
        .iter()
        .map(|p| Eviction {
            namespace: p.metadata.namespace.clone().unwrap_or_default(),
            name: p.metadata.name.clone(),
            uid: p.metadata.uid.clone(),
            owner: controller_of(p),
        })
        .collect();
    let unowned: Vec<String> = evictions.iter().filter(|e| e.owner.is_none()).map(|e| format!("{}/{}", e.namespace, e.name)).collect();
    if !unowned.is_empty() && !force {
        return Err(unowned);
    }
    Ok(evictions)
}

fn running_and_ready(pod: &Pod) -> bool {
    pod.status.phase.as_deref() == Some("Running") && pod.is_ready()
}

/// What drain still waits for, one line each: evicted pods that still exist, and owners with fewer
/// Running and Ready pods off the drained `nodes` than they want (`wanted`: replicas per owner uid). Empty when
/// the drain is complete.
pub fn pending(evicted: &[Eviction], pods_now: &[Pod], wanted: &BTreeMap<String, i64>, nodes: &BTreeSet<String>) -> Vec<String> {
    let mut waiting = Vec::new();
    for e in evicted {
        if pods_now.iter().any(|p| p.metadata.uid == e.uid) {
            waiting.push(format!("pod {}/{} to terminate", e.namespace, e.name));
        }
    }
    let mut owners: Vec<(&Owner, &str)> = evicted.iter().filter_map(|e| e.owner.as_ref().map(|o| (o, e.namespace.as_str()))).collect();
    owners.sort();
    owners.dedup();
    for (owner, namespace) in owners {
        let want = wanted.get(&owner.uid).copied().unwrap_or(0);
        let elsewhere = pods_now
            .iter()
            .filter(|p| controller_of(p).is_some_and(|o| o.uid == owner.uid) && !p.spec.bound_node().is_some_and(|n| nodes.contains(n)) && running_and_ready(p))
            .count() as i64;
        if elsewhere < want {
            waiting.push(format!("{} {namespace}/{}: {elsewhere}/{want} replicas running elsewhere", owner.kind, owner.name));
        }
    }
    waiting
}

/// The pods bound to a node.
pub async fn pods_on(client: &ApiClient, node: &str) -> anyhow::Result<Vec<Pod>> {
    let list = client.list::<Pod>(&PODS, None, &ListOptions::fields(format!("spec.nodeName={node}"))).await.map_err(|e| anyhow::anyhow!("listing the pods on node {node}: {e}"))?;
    Ok(list.items)
}

/// The replicas each owner of an evicted pod wants now (a ReplicaSet that is gone wants none).
async fn wanted_replicas(client: &ApiClient, evicted: &[Eviction]) -> anyhow::Result<BTreeMap<String, i64>> {
    let mut wanted = BTreeMap::new();
    for e in evicted {
        let Some(owner) = e.owner.as_ref().filter(|o| o.kind == "ReplicaSet" && !wanted.contains_key(&o.uid)) else { continue };
        let replicas = match client.get::<ReplicaSet>(&REPLICA_SETS, Some(&e.namespace), &owner.name).await {
            Ok(rs) if rs.metadata.uid == owner.uid => rs.spec.replicas.map(i64::from).unwrap_or(1),
            Ok(_) => 0,
            Err(err) if err.is_not_found() => 0,
            Err(err) => anyhow::bail!("reading replicaset {}/{}: {err}", e.namespace, owner.name),
        };
        wanted.insert(owner.uid.clone(), replicas);
    }
    Ok(wanted)
}

/// Evicts (deletes) the planned pods and waits until none of them is left and every owner has its
/// replicas Running and Ready off the drained `nodes`; `progress` gets what is still awaited.
pub async fn evict_and_wait_for(client: &ApiClient, evictions: &[Eviction], nodes: &BTreeSet<String>, deadline: Duration, progress: &mut dyn FnMut(&[String])) -> anyhow::Result<()> {
    for e in evictions {
        match client.delete(&PODS, Some(&e.namespace), &e.name).await {
            Ok(()) => progress(&[format!("evicted pod {}/{}", e.namespace, e.name)]),
            Err(err) if err.is_not_found() => {}
            Err(err) => anyhow::bail!("evicting pod {}/{}: {err}", e.namespace, e.name),
        }
    }
    let start = Instant::now();
    loop {
        let pods = client.list::<Pod>(&PODS, None, &ListOptions::default()).await.map_err(|e| anyhow::anyhow!("listing pods while draining: {e}"))?;
        let waiting = pending(evictions, &pods.items, &wanted_replicas(client, evictions).await?, nodes);
        if waiting.is_empty() {
            return Ok(());
        }
        progress(&waiting);
        if start.elapsed() > deadline {
            let names: Vec<&str> = nodes.iter().map(String::as_str).collect();
            anyhow::bail!("draining {}: still waiting after {} s for {}", names.join(", "), deadline.as_secs(), waiting.join("; "));
        }
        tokio::time::sleep(POLL).await;
    }
}

/// Drains `nodes` for clusterctl itself (scale-down, upgrades): every pod is evicted, owned or not,
/// and the wait is [`evict_and_wait_for`]'s.
pub async fn evict_and_wait(client: &ApiClient, nodes: &BTreeSet<String>, deadline: Duration, reporter: &dyn Reporter) -> anyhow::Result<()> {
    let mut on_nodes = Vec::new();
    for node in nodes {
        on_nodes.extend(pods_on(client, node).await?);
    }
    let evictions = plan_evictions(&on_nodes, true).unwrap_or_default();
    let label = nodes.iter().cloned().collect::<Vec<_>>().join(", ");
    evict_and_wait_for(client, &evictions, nodes, deadline, &mut |lines| reporter.item(&label, &format!("draining: {}", lines.join("; ")))).await
}

/// Waits until a node's agent renews its lease after `since` and the node is Ready: the proof that
/// a restarted agent is back (a Ready condition alone may be the old agent's last word).
pub async fn wait_renewed_and_ready(client: &ApiClient, node: &str, since: std::time::SystemTime, deadline: Duration) -> anyhow::Result<()> {
    let start = Instant::now();
    loop {
        let renewed = match client.get::<Lease>(&LEASES, Some(NODE_LEASE_NAMESPACE), node).await {
            Ok(l) => l.spec.renew_time.is_some_and(|t| t.to_system_time() > since),
            Err(_) => false,
        };
        let is_ready = match client.get::<Node>(&NODES, None, node).await {
            Ok(n) => n.status.conditions.iter().any(|c| c.condition_type == "Ready" && c.status == "True"),
            Err(_) => false,
        };
        if renewed && is_ready {
            return Ok(());
        }
        if start.elapsed() > deadline {
            anyhow::bail!("node {node} did not come back Ready within {deadline:?} (lease renewed since the restart: {renewed})");
        }
        tokio::time::sleep(Duration::from_millis(300)).await;
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::api::pod::{PodCondition, PodSpec, PodStatus};
    use crate::api::{ObjectMeta, OwnerReference};

    fn pod(name: &str, node: &str, owner: Option<&str>, phase: &str, ready: bool) -> Pod {
        let owner_references = owner
            .map(|rs| OwnerReference { kind: "ReplicaSet".into(), name: rs.into(), uid: format!("uid-{rs}"), controller: Some(true), ..Default::default() })
            .into_iter()
            .collect();
        let ready = PodCondition { condition_type: "Ready".into(), status: if ready { "True" } else { "False" }.into(), ..Default::default() };
        Pod {
            metadata: ObjectMeta { uid: format!("uid-{name}"), owner_references, ..ObjectMeta::namespaced("default", name) },
            spec: PodSpec { node_name: Some(node.into()), ..Default::default() },
            status: PodStatus { phase: Some(phase.into()), conditions: vec![ready], ..Default::default() },
            ..Default::default()
        }
    }

    #[test]
    fn pods_without_a_controller_make_drain_refuse_unless_forced() {
        let pods = [pod("web-1", "w1", Some("web-a"), "Running", true), pod("lonely", "w1", None, "Running", true)];
        assert_eq!(plan_evictions(&pods, false), Err(vec!["default/lonely".to_string()]));
        let forced = plan_evictions(&pods, true).unwrap();
        assert_eq!(forced.iter().map(|e| e.name.as_str()).collect::<Vec<_>>(), ["web-1", "lonely"]);
        assert_eq!(forced[0].owner.as_ref().map(|o| o.name.as_str()), Some("web-a"));
    }

    #[test]
    fn an_owned_pod_is_evicted_with_its_controller() {
        let plan = plan_evictions(&[pod("web-1", "w1", Some("web-a"), "Running", true)], false).unwrap();
        assert_eq!(plan, [Eviction {
            namespace: "default".into(),
            name: "web-1".into(),
            uid: "uid-web-1".into(),
            owner: Some(Owner { kind: "ReplicaSet".into(), name: "web-a".into(), uid: "uid-web-a".into() }),
        }]);
    }

    #[test]
    fn drain_waits_for_the_evicted_pod_to_go_and_for_replacements_running_and_ready_elsewhere() {
        let evicted = plan_evictions(&[pod("web-1", "w1", Some("web-a"), "Running", true)], false).unwrap();
        let wanted = BTreeMap::from([("uid-web-a".to_string(), 2)]);
        let still_there = [pod("web-1", "w1", Some("web-a"), "Running", true), pod("web-2", "w2", Some("web-a"), "Running", true)];
        assert_eq!(pending(&evicted, &still_there, &wanted, &BTreeSet::from(["w1".to_string()])), ["pod default/web-1 to terminate", "ReplicaSet default/web-a: 1/2 replicas running elsewhere"]);
        let replacement_starting = [pod("web-2", "w2", Some("web-a"), "Running", true), pod("web-3", "w2", Some("web-a"), "Running", false)];
        assert_eq!(pending(&evicted, &replacement_starting, &wanted, &BTreeSet::from(["w1".to_string()])), ["ReplicaSet default/web-a: 1/2 replicas running elsewhere"]);
        let done = [pod("web-2", "w2", Some("web-a"), "Running", true), pod("web-3", "w3", Some("web-a"), "Running", true)];
        assert!(pending(&evicted, &done, &wanted, &BTreeSet::from(["w1".to_string()])).is_empty());
    }

    #[test]
    fn a_replacement_on_the_drained_node_itself_does_not_count() {
        let evicted = plan_evictions(&[pod("web-1", "w1", Some("web-a"), "Running", true)], false).unwrap();
        let wanted = BTreeMap::from([("uid-web-a".to_string(), 1)]);
        assert_eq!(pending(&evicted, &[pod("web-9", "w1", Some("web-a"), "Running", true)], &wanted, &BTreeSet::from(["w1".to_string()])).len(), 1);
    }

    #[test]
    fn a_forced_unowned_pod_is_only_waited_for_until_it_is_gone() {
        let evicted = plan_evictions(&[pod("lonely", "w1", None, "Running", true)], true).unwrap();
        assert!(pending(&evicted, &[], &BTreeMap::new(), &BTreeSet::from(["w1".to_string()])).is_empty());
    }

}
