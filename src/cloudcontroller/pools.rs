//! Resizing a worker pool from the operator's side (`clusterctl scale -f SPEC --pool NAME=N`).
//!
//! The new size is recorded in the pool's `MachinePool` object and in the spec file, so that both
//! agree afterwards. Up: the master's machine controller ([`super::machines`]) launches and
//! bootstraps the new machines, and [`resize`] shows each machine's progress until all are Ready.
//! Down: the machines with the fewest pods are cordoned (which takes them out of every service
//! load balancer), deregistered from the balancers' target groups, drained (their pods Running
//! elsewhere first), and only then terminated and their nodes deleted. The machine controller never
//! removes machines itself: removal needs a drain, done here in front of the operator.

use std::collections::{BTreeMap, BTreeSet};
use std::path::Path;
use std::time::{Duration, Instant};

use super::services::{self, instance_id};
use crate::api::pod::Pod;
use crate::api::resource::{NODES, PODS};
use crate::api::Node;
use crate::bootstrap::record_pool_size;
use crate::client::ApiClient;
use crate::cloud::{owned_by, Cloud, Instance, POOL_TAG, ROLE_TAG, SLOT_TAG};
use crate::report::Reporter;
use crate::spec::set_pool_count;

/// One pool's resize.
#[derive(Debug, Clone)]
pub struct PoolResize<'a> {
    /// The cluster's name.
    pub cluster: &'a str,
    /// The worker pool.
    pub pool: &'a str,
    /// Its new number of workers.
    pub workers: u32,
    /// The spec file whose `count` is updated.
    pub spec_file: &'a Path,
    /// How long new machines may take to be Ready, or old ones to be drained.
    pub deadline: Duration,
}

/// Records the pool's new size (its `MachinePool` and the spec file's `count`), then waits until
/// the machine controller has grown it, or shrinks it.
pub async fn resize(cloud: &dyn Cloud, client: &ApiClient, r: &PoolResize<'_>, report: &dyn Reporter) -> anyhow::Result<()> {
    let (pool, n, file) = (r.pool, r.workers, r.spec_file);
    record_pool_size(client, pool, n).await?;
    let text = std::fs::read_to_string(file)?;
    let updated = set_pool_count(file, &text, pool, n)?;
    if updated != text {
        std::fs::write(file, updated).map_err(|e| anyhow::anyhow!("writing {}: {e}", file.display()))?;
    }
    let live = pool_instances(cloud, r.cluster, pool).await?;
    if (live.len() as u32) < n {
        report.phase(&format!("pool {pool}: {} → {n} workers (launched and bootstrapped by the master's machine controller)", live.len()));
        wait_grown(cloud, client, r.cluster, pool, n, r.deadline, report).await?;
    } else if (live.len() as u32) > n {
        report.phase(&format!("pool {pool}: {} → {n} workers", live.len()));
        shrink(cloud, client, r.cluster, live, n, r.deadline, report).await?;
    } else {
        report.done(&format!("pool {pool} already has {n} workers"));
    }
    Ok(())
}

/// The pool's machines that are not terminated or on their way out.
async fn pool_instances(cloud: &dyn Cloud, cluster: &str, pool: &str) -> anyhow::Result<Vec<Instance>> {
    let mut selector = owned_by(cluster);
    selector.insert(ROLE_TAG.into(), "worker".into());
    selector.insert(POOL_TAG.into(), pool.into());
    Ok(cloud.instances(&selector).await?.into_iter().filter(|i| !i.state.is_gone()).collect())
}

fn is_ready(node: &Node) -> bool {
    node.status.conditions.iter().any(|c| c.condition_type == "Ready" && c.status == "True")
}

/// Shows each machine of the pool until `n` of them have Ready nodes.
async fn wait_grown(cloud: &dyn Cloud, client: &ApiClient, cluster: &str, pool: &str, n: u32, deadline: Duration, report: &dyn Reporter) -> anyhow::Result<()> {
    let start = Instant::now();
    loop {
        let instances = pool_instances(cloud, cluster, pool).await?;
        let nodes: Vec<Node> = client.list(&NODES, None, &Default::default()).await?.items;
        let mut ready = 0;
        for i in &instances {
            let name = i.tags.get("Name").cloned().unwrap_or_else(|| i.id.clone());
            match nodes.iter().find(|node| instance_id(node).as_deref() == Some(i.id.as_str())) {
                Some(node) if is_ready(node) => {
                    ready += 1;
                    report.item_done(&name, "Ready");
                }
                Some(_) => report.item(&name, "joined, not Ready yet"),
                None => report.item(&name, &format!("instance {}, bootstrapping", i.state)),
            }
        }
        if ready >= n && instances.len() as u32 == n {
            return Ok(());
        }
        if start.elapsed() > deadline {
            anyhow::bail!("{ready} of {n} workers Ready after {deadline:?}; the master's log (journalctl -u clusterctl-master) says why");
        }
        tokio::time::sleep(Duration::from_secs(1)).await;
    }
}

/// The machines to remove: those whose nodes run the fewest pods (ties: the highest slot).
pub fn pick_for_removal<'a>(instances: &'a [Instance], nodes: &[Node], pods: &[Pod], count: usize) -> Vec<&'a Instance> {
    let pods_on = |i: &Instance| {
        let node = nodes.iter().find(|n| instance_id(n).as_deref() == Some(i.id.as_str())).map(|n| n.metadata.name.as_str());
        node.map_or(0, |name| pods.iter().filter(|p| p.spec.node_name.as_deref() == Some(name)).count())
    };
    let slot = |i: &Instance| i.tags.get(SLOT_TAG).and_then(|s| s.parse::<u32>().ok()).unwrap_or(0);
    let mut ranked: Vec<&Instance> = instances.iter().collect();
    ranked.sort_by_key(|i| (pods_on(i), std::cmp::Reverse(slot(i))));
    ranked.into_iter().take(count).collect()
}

/// How long a scale-down waits at most for the balancers to drain the connections they forwarded
/// to the machines it removes.
const DRAIN_WAIT: Duration = Duration::from_secs(60);

/// The instances of `ids` that any of the target groups still lists (draining, typically).
async fn still_targets(cloud: &dyn Cloud, target_groups: &[String], ids: &[String]) -> anyhow::Result<BTreeSet<String>> {
    let mut listed = BTreeSet::new();
    for arn in target_groups {
        listed.extend(cloud.target_health(arn).await?.into_iter().map(|t| t.instance_id).filter(|id| ids.contains(id)));
    }
    Ok(listed)
}

/// Cordons, deregisters and drains the machines with the fewest pods (their pods, and the
/// connections the balancers forwarded to them), then terminates them.
async fn shrink(cloud: &dyn Cloud, client: &ApiClient, cluster: &str, live: Vec<Instance>, n: u32, deadline: Duration, report: &dyn Reporter) -> anyhow::Result<()> {
    let nodes: Vec<Node> = client.list(&NODES, None, &Default::default()).await?.items;
    let pods: Vec<Pod> = client.list(&PODS, None, &Default::default()).await?.items;
    let leaving = pick_for_removal(&live, &nodes, &pods, live.len() - n as usize);
    let ids: Vec<String> = leaving.iter().map(|i| i.id.clone()).collect();
    let node_names: BTreeMap<String, String> =
        nodes.iter().filter_map(|node| instance_id(node).filter(|id| ids.contains(id)).map(|id| (node.metadata.name.clone(), id))).collect();
    let label = |id: &str| leaving.iter().find(|i| i.id == id).and_then(|i| i.tags.get("Name").cloned()).unwrap_or_else(|| id.to_string());

    // Cordon: no new pods, and out of every service balancer.
    let names: Vec<String> = node_names.keys().cloned().collect();
    for name in &names {
        crate::client::drain::set_unschedulable(client, name, true).await?;
        report.item(name, "cordoned");
    }
    let mut selector = owned_by(cluster);
    selector.insert(ROLE_TAG.into(), services::ROLE.into());
    let groups = cloud.target_groups(&selector).await?;
    for tg in &groups {
        let registered: Vec<String> = cloud.target_health(&tg.arn).await?.into_iter().map(|t| t.instance_id).filter(|id| ids.contains(id)).collect();
        if !registered.is_empty() {
            cloud.deregister_targets(&tg.arn, &registered, tg.port).await?;
            report.done(&format!("deregistered {} from target group {}", registered.iter().map(|id| label(id)).collect::<Vec<_>>().join(", "), tg.name));
        }
    }

    // Drain: evict every pod of the leaving nodes, then wait until their owners have them back elsewhere.
    let leaving_nodes: BTreeSet<String> = node_names.keys().cloned().collect();
    crate::client::drain::evict_and_wait(client, &leaving_nodes, deadline, report).await?;
    // The balancers drain the machines too: connections already forwarded to them finish before
    // the machines go (as long as the target groups' deregistration delay allows, at most DRAIN_WAIT).
    let arns: Vec<String> = groups.iter().map(|tg| tg.arn.clone()).collect();
    let started = Instant::now();
    while !(still_targets(cloud, &arns, &ids).await?).is_empty() {
        if started.elapsed() > DRAIN_WAIT.min(deadline) {
            report.item(&names.join(", "), "still draining in a target group; terminating anyway");
            break;
        }
        tokio::time::sleep(Duration::from_millis(300)).await;
    }
    for name in node_names.keys() {
        report.item(name, "drained; terminating");
    }

    // Terminate, then forget the nodes.
    cloud.terminate_instances(&ids).await?;
    for name in node_names.keys() {
        match client.delete(&NODES, None, name).await {
            Ok(()) => {}
            Err(e) if e.is_not_found() => {}
            Err(e) => return Err(anyhow::anyhow!("deleting node {name}: {e}")),
        }
        report.item_done(name, "removed");
    }
    for id in ids.iter().filter(|id| !node_names.values().any(|v| v == *id)) {
        report.item_done(&label(id), "terminated (it had no node)");
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn removal_takes_the_machines_with_the_fewest_pods_then_the_highest_slots() {
        let machine = |id: &str, slot: u32| Instance {
            id: id.into(),
            state: crate::cloud::InstanceState::Running,
            instance_type: "t3.small".into(),
            image_id: "ami".into(),
            subnet_id: None,
            private_ip: None,
            public_ip: None,
            instance_profile: None,
            source_dest_check: true,
            tags: [(SLOT_TAG.to_string(), slot.to_string())].into(),
        };
        let node = |name: &str, id: &str| {
            let mut n = Node::default();
            n.metadata.name = name.into();
            n.spec.provider_id = Some(format!("aws:///z/{id}"));
            n
        };
        let pod = |node: &str| {
            let mut p = Pod::default();
            p.spec.node_name = Some(node.into());
            p
        };
        let instances = vec![machine("i-0", 0), machine("i-1", 1), machine("i-2", 2)];
        let nodes = vec![node("w0", "i-0"), node("w1", "i-1"), node("w2", "i-2")];
        let pods = vec![pod("w0"), pod("w2"), pod("w2")];
        let picked: Vec<&str> = pick_for_removal(&instances, &nodes, &pods, 2).iter().map(|i| i.id.as_str()).collect();
        assert_eq!(picked, vec!["i-1", "i-0"], "no pods first, then one pod; the busiest stays");
    }
}
