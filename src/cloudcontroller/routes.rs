//! The route controller: pod traffic between nodes is routed by the VPC, not encapsulated. Every
//! node with a pod range (`spec.podCIDR`, from [`crate::controllers::node_ipam`]) gets one route
//! `podCIDR → the node's instance` in each of the cluster's route tables, and its instance's
//! source/destination check is turned off (AWS drops traffic not addressed to an instance
//! otherwise). Routes inside the cluster CIDR that no node claims (its node deleted, or the range
//! given to another machine) are deleted, as Kubernetes' route controller does
//! (`cloud-provider/controllers/route`); a blackhole route whose node still stands (its machine
//! stopped) is left for the machine to come back or be replaced.
//!
//! Only routes whose destination lies in the cluster CIDR are ever touched: the tables' other
//! routes (the internet gateway's, an operator's peering) are not the controller's.

use std::collections::{BTreeMap, BTreeSet};

use ipnet::Ipv4Net;

use crate::api::Node;
use crate::cloud::{owned_by, Cloud, CloudError};

use super::services::instance_id;

/// What a pass did, for events and logs: `(node, reason, message)`.
pub type Happened = Vec<(String, &'static str, String)>;

/// The routes the nodes ask for: pod range → instance id, and the node that owns each range.
pub fn wanted(nodes: &[Node], cluster_cidr: Ipv4Net) -> BTreeMap<Ipv4Net, (String, String)> {
    let mut out = BTreeMap::new();
    for n in nodes {
        let Some(cidr) = n.spec.pod_cidr.as_deref().and_then(|c| c.parse::<Ipv4Net>().ok()) else { continue };
        let Some(instance) = instance_id(n) else { continue };
        if cluster_cidr.contains(&cidr) {
            out.insert(cidr, (instance, n.metadata.name.clone()));
        }
    }
    out
}

/// One pass: the cluster's route tables made to hold exactly the wanted routes inside `cluster_cidr`.
pub async fn reconcile(cloud: &dyn Cloud, cluster: &str, cluster_cidr: Ipv4Net, nodes: &[Node], happened: &mut Happened) -> Result<(), CloudError> {
    let want = wanted(nodes, cluster_cidr);
    let owned = owned_by(cluster);
    let tables = cloud.route_tables(&owned).await?;
    if want.is_empty() && tables.iter().all(|t| t.routes.iter().all(|r| !cluster_cidr.contains(&r.destination))) {
        return Ok(());
    }
    // Every instance a route will point at takes traffic for other addresses.
    let checked: BTreeSet<String> = want.values().map(|(i, _)| i.clone()).collect();
    for instance in cloud.instances(&owned).await?.into_iter().filter(|i| checked.contains(&i.id) && i.source_dest_check) {
        cloud.disable_source_dest_check(&instance.id).await?;
    }
    let mut first_error = None;
    for table in &tables {
        let mut present: BTreeMap<Ipv4Net, Option<&str>> = BTreeMap::new();
        for route in table.routes.iter().filter(|r| cluster_cidr.contains(&r.destination)) {
            let claimed = want.get(&route.destination).is_some_and(|(i, _)| route.instance_id.as_deref() == Some(i.as_str()));
            if claimed {
                present.insert(route.destination, route.instance_id.as_deref());
                continue;
            }
            match cloud.delete_route(&table.id, route.destination).await {
                Ok(()) => tracing::info!(table = %table.id, destination = %route.destination, target = ?route.instance_id, "deleted a route no node claims"),
                Err(e) => {
                    tracing::warn!(error = %e, table = %table.id, destination = %route.destination, "deleting a stale route");
                    first_error.get_or_insert(e);
                }
            }
        }
        for (cidr, (instance, node)) in &want {
            if present.contains_key(cidr) {
                continue;
            }
            match cloud.create_instance_route(&table.id, *cidr, instance).await {
                Ok(()) => {
                    tracing::info!(table = %table.id, destination = %cidr, %instance, %node, "created a route to a node's pods");
                    happened.push((node.clone(), "RouteCreated", format!("Created route {cidr} to {instance} in {}", table.id)));
                }
                Err(e) => {
                    happened.push((node.clone(), "FailedToCreateRoute", format!("Could not create route {cidr} to {instance} in {}: {e}", table.id)));
                    first_error.get_or_insert(e);
                }
            }
        }
    }
    match first_error {
        Some(e) => Err(e),
        None => Ok(()),
    }
}
