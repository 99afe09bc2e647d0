//! Cordon and drain over the API, as `kubectl drain` does: used by `clusterctl scale` before it
//! removes machines and by `create` before it upgrades a node's software.

use std::collections::BTreeSet;
use std::time::{Duration, Instant};

use super::{ApiClient, ClientError};
use crate::api::deployment::ReplicaSet;
use crate::api::lease::{Lease, NODE_LEASE_NAMESPACE};
use crate::api::pod::Pod;
use crate::api::resource::{LEASES, NODES, PODS, REPLICA_SETS};
use crate::api::Node;
use crate::report::Reporter;

/// Marks nodes (un)schedulable.
pub async fn set_unschedulable(client: &ApiClient, nodes: &[String], unschedulable: bool) -> Result<(), ClientError> {
    for name in nodes {
        client.patch::<Node>(&NODES, None, name, &serde_json::json!({ "spec": { "unschedulable": unschedulable } })).await?;
    }
    Ok(())
}

fn ready(p: &Pod) -> bool {
    p.status.conditions.iter().any(|c| c.condition_type == "Ready" && c.status == "True")
}

/// Evicts (deletes) every pod bound to `nodes` and waits until none is left there and every
/// ReplicaSet that had one is back to its full count of Ready pods on other nodes.
pub async fn evict_and_wait(client: &ApiClient, nodes: &BTreeSet<String>, deadline: Duration, reporter: &dyn Reporter) -> anyhow::Result<()> {
    let on_nodes = |p: &Pod| p.spec.node_name.as_ref().is_some_and(|n| nodes.contains(n));
    let pods: Vec<Pod> = client.list(&PODS, None, &Default::default()).await?.items;
    let evicted: Vec<&Pod> = pods.iter().filter(|p| on_nodes(p)).collect();
    let owners: BTreeSet<(String, String)> = evicted
        .iter()
        .filter_map(|p| p.metadata.owner_references.iter().find(|o| o.kind == "ReplicaSet").map(|o| (p.metadata.namespace_or_default().to_string(), o.name.clone())))
        .collect();
    for p in &evicted {
        match client.delete(&PODS, Some(p.metadata.namespace_or_default()), &p.metadata.name).await {
            Ok(()) => {}
            Err(e) if e.is_not_found() => {}
            Err(e) => anyhow::bail!("evicting pod {}: {e}", p.metadata.name),
        }
        if let Some(node) = &p.spec.node_name {
            reporter.item(node, &format!("evicted {}", p.metadata.name));
        }
    }
    let start = Instant::now();
    loop {
        let pods: Vec<Pod> = client.list(&PODS, None, &Default::default()).await?.items;
        let left_behind = pods.iter().filter(|p| on_nodes(p)).count();
        let mut short = Vec::new();
        for (ns, rs) in &owners {
            let want = match client.get::<ReplicaSet>(&REPLICA_SETS, Some(ns), rs).await {
                Ok(r) => r.spec.replicas.unwrap_or(1).max(0) as usize,
                Err(e) if e.is_not_found() => continue,
                Err(e) => return Err(e.into()),
            };
            let elsewhere = pods
                .iter()
                .filter(|p| p.metadata.namespace_or_default() == ns && p.metadata.owner_references.iter().any(|o| &o.name == rs))
                .filter(|p| p.spec.node_name.is_some() && !on_nodes(p) && ready(p))
                .count();
            if elsewhere < want {
                short.push(format!("{ns}/{rs} {elsewhere}/{want}"));
            }
        }
        if left_behind == 0 && short.is_empty() {
            return Ok(());
        }
        for name in nodes {
            reporter.item(name, &format!("draining: {left_behind} pods left{}", if short.is_empty() { String::new() } else { format!("; waiting for {}", short.join(", ")) }));
        }
        if start.elapsed() > deadline {
            let names: Vec<&str> = nodes.iter().map(String::as_str).collect();
            anyhow::bail!("draining {} did not finish in {deadline:?}: {left_behind} pods still there, replicas short: {}", names.join(", "), short.join(", "));
        }
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
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
