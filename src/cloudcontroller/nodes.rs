//! The node controller: a Node whose machine is terminated (or gone from the cloud) is deleted at
//! once, and so are the pods bound to a node that no longer exists (as Kubernetes' pod garbage
//! collector does), so that their controllers replace them on the nodes that are left.

use std::collections::BTreeSet;

use crate::api::pod::Pod;
use crate::api::Node;
use crate::cloud::{owned_by, Cloud, CloudError, InstanceState};
use crate::runtime::{Client, ObjectKey, Store};

use super::services::instance_id;

/// Nodes whose machine is not among the cluster's live instances (pending, running, stopping, stopped).
pub fn orphaned<'a>(nodes: &'a [Node], live: &BTreeSet<String>) -> Vec<&'a Node> {
    nodes.iter().filter(|n| instance_id(n).is_some_and(|id| !live.contains(&id))).collect()
}

/// Pods bound to a node that does not exist.
pub fn stranded<'a>(pods: &'a [Pod], nodes: &BTreeSet<String>) -> Vec<&'a Pod> {
    pods.iter().filter(|p| p.spec.node_name.as_deref().is_some_and(|n| !nodes.contains(n))).collect()
}

/// The cluster's instances that are still machines.
pub async fn live_instances(cloud: &dyn Cloud, cluster: &str) -> Result<BTreeSet<String>, CloudError> {
    Ok(cloud
        .instances(&owned_by(cluster))
        .await?
        .into_iter()
        .filter(|i| !matches!(i.state, InstanceState::ShuttingDown | InstanceState::Terminated))
        .map(|i| i.id)
        .collect())
}

/// One pass over the stores' nodes and pods; returns how many nodes and pods were deleted.
pub async fn pass<C: Client>(cloud: &dyn Cloud, client: &C, cluster: &str, nodes: &Store<Node>, pods: &Store<Pod>) -> anyhow::Result<(usize, usize)> {
    let live = live_instances(cloud, cluster).await?;
    let nodes: Vec<Node> = nodes.cloned();
    let mut deleted = BTreeSet::new();
    for n in orphaned(&nodes, &live) {
        // A listing can miss a machine; only one described as terminated (or unknown) is gone.
        let id = instance_id(n).unwrap_or_default();
        match cloud.instances_by_id(std::slice::from_ref(&id)).await {
            Ok(found) if found.iter().all(|i| i.state.is_gone()) => {}
            Ok(_) => continue,
            Err(e) if e.is_not_found() => {}
            Err(e) => {
                tracing::warn!(error = %e, node = %n.metadata.name, "describing the machine of a node that seems gone");
                continue;
            }
        }
        match client.delete::<Node>(&ObjectKey::of(&n.metadata)).await {
            Ok(()) => {
                deleted.insert(n.metadata.name.clone());
                tracing::info!(node = %n.metadata.name, instance = ?instance_id(n), "deleted the node: its machine is terminated or gone");
            }
            Err(e) if e.is_not_found() => {}
            Err(e) => tracing::warn!(error = %e, node = %n.metadata.name, "deleting a node whose machine is gone"),
        }
    }
    let remaining: BTreeSet<String> = nodes.iter().map(|n| n.metadata.name.clone()).filter(|n| !deleted.contains(n)).collect();
    let pods: Vec<Pod> = pods.cloned();
    let mut deleted_pods = 0;
    for p in stranded(&pods, &remaining) {
        match client.delete_now::<Pod>(&ObjectKey::of(&p.metadata), &p.metadata.uid).await {
            Ok(()) => {
                deleted_pods += 1;
                tracing::info!(pod = %p.metadata.name, node = ?p.spec.node_name, "deleted a pod of a node that is gone");
            }
            Err(e) if e.is_not_found() => {}
            Err(e) => tracing::warn!(error = %e, pod = %p.metadata.name, "deleting a pod of a node that is gone"),
        }
    }
    Ok((deleted.len(), deleted_pods))
}
