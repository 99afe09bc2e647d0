//! Node IPAM: every Node gets a pod CIDR (`spec.podCIDR` and `spec.podCIDRs`), a /24 of the
//! cluster CIDR that no other Node holds, as Kubernetes' node IPAM controller (its range
//! allocator) gives them. What is taken is read from the Nodes themselves, so a restarted or newly
//! elected controller needs no state of its own, and a Node's range is free again once the Node is
//! gone. A full cluster CIDR leaves the Node without one, with a `CIDRNotAvailable` event on it,
//! until a range frees up. The API server keeps a range once given (`spec.podCIDR` may not change).

use std::collections::{BTreeSet, HashMap};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use ipnet::Ipv4Net;

use crate::api::Node;
use crate::api::event::{NORMAL, WARNING};
use crate::client::{ClientError, ListOptions};
use crate::runtime::events::Recorder;
use crate::runtime::{Action, Client, Controller, ObjectKey, Store};

/// The size of each node's range.
pub const NODE_MASK: u8 = 24;

/// The ranges the Nodes hold (those whose `podCIDR` parses).
pub fn taken<'a>(nodes: impl IntoIterator<Item = &'a Node>) -> BTreeSet<Ipv4Net> {
    nodes.into_iter().filter_map(|n| n.spec.pod_cidr.as_deref()?.parse().ok()).collect()
}

/// The lowest /24 of `cluster` that is not in `taken`; `None` when every one is.
pub fn next_free(cluster: Ipv4Net, taken: &BTreeSet<Ipv4Net>) -> Option<Ipv4Net> {
    let subnets = cluster.subnets(NODE_MASK).ok()?;
    subnets.into_iter().find(|candidate| !taken.iter().any(|t| t.contains(&candidate.network()) || candidate.contains(&t.network())))
}

/// The controller's stores, client and the block it allocates from.
pub struct Context<C> {
    pub client: C,
    pub nodes: Store<Node>,
    pub cluster_cidr: Ipv4Net,
    pub events: Recorder<C>,
    /// Ranges given but not yet seen in the store (node name → range): never given twice.
    given: Mutex<HashMap<String, Ipv4Net>>,
}

impl<C: Client> Context<C> {
    pub fn new(client: C, cluster_cidr: Ipv4Net) -> Arc<Self> {
        Arc::new(Context {
            nodes: Store::reflect(client.clone(), None, ListOptions::default()),
            events: Recorder::new(client.clone(), "node-controller", ""),
            client,
            cluster_cidr,
            given: Mutex::new(HashMap::new()),
        })
    }
}

/// Keyed by node name; every node is looked at again every minute (a range may have freed up).
pub fn controller<C: Client>(ctx: &Context<C>) -> Controller {
    Controller::new("node-ipam").owns(&ctx.nodes, Duration::from_secs(60))
}

/// Gives the node a range when it has none.
pub async fn reconcile<C: Client>(key: ObjectKey, ctx: Arc<Context<C>>) -> Result<Action, ClientError> {
    let nodes = ctx.nodes.snapshot();
    let range = {
        let mut given = ctx.given.lock().unwrap_or_else(PoisonError::into_inner);
        // What the store shows (or a node that went) needs no memory of its own.
        given.retain(|name, _| nodes.iter().any(|n| n.metadata.name == *name && n.spec.pod_cidr.is_none()));
        let Some(node) = nodes.iter().find(|n| n.metadata.name == key.name) else { return Ok(Action::AwaitChange) };
        if node.spec.pod_cidr.is_some() {
            return Ok(Action::AwaitChange);
        }
        if let Some(range) = given.get(&key.name) {
            *range
        } else {
            let mut used = taken(nodes.iter().map(|n| n.as_ref()));
            used.extend(given.values().copied());
            match next_free(ctx.cluster_cidr, &used) {
                Some(range) => {
                    given.insert(key.name.clone(), range);
                    range
                }
                None => {
                    let message = format!("Node {} status is now: CIDRNotAvailable (every /{NODE_MASK} of {} is taken)", key.name, ctx.cluster_cidr);
                    ctx.events.record(node.as_ref(), WARNING, "CIDRNotAvailable", message);
                    return Ok(Action::RequeueAfter(Duration::from_secs(30)));
                }
            }
        }
    };
    let patch = serde_json::json!({ "spec": { "podCIDR": range.to_string(), "podCIDRs": [range.to_string()] } });
    let node: Node = ctx.client.patch(&key, &patch).await?;
    tracing::info!(node = %key.name, %range, "gave the node its pod range");
    ctx.events.record(&node, NORMAL, "CIDRAssigned", format!("Pod range {range} assigned"));
    Ok(Action::AwaitChange)
}

/// Runs the controller until dropped.
pub async fn run<C: Client>(client: C, cluster_cidr: Ipv4Net) {
    let ctx = Context::new(client, cluster_cidr);
    controller(&ctx).run(reconcile, ctx.clone()).await;
}

#[cfg(test)]
mod tests {
    use super::*;

    fn node(name: &str, cidr: Option<&str>) -> Node {
        let mut n = Node::new(name);
        n.spec.pod_cidr = cidr.map(String::from);
        n
    }

    #[test]
    fn the_lowest_free_range_is_given_and_taken_ones_are_skipped() {
        let cluster: Ipv4Net = "100.64.0.0/22".parse().unwrap();
        let nodes = [node("a", Some("100.64.0.0/24")), node("b", Some("100.64.2.0/24")), node("c", None), node("d", Some("not a cidr"))];
        let used = taken(&nodes);
        assert_eq!(next_free(cluster, &used), Some("100.64.1.0/24".parse().unwrap()));
        let mut full = used.clone();
        full.extend(["100.64.1.0/24".parse::<Ipv4Net>().unwrap(), "100.64.3.0/24".parse().unwrap()]);
        assert_eq!(next_free(cluster, &full), None, "a /22 has four /24s");
    }
}
