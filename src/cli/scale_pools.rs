//! `clusterctl scale -f SPEC --workers N | --pool NAME=N`: see [`super::scale`] for what it does.

use std::collections::{BTreeMap, BTreeSet};
use std::time::{Duration, Instant};

use super::progress::TerminalReport;
use super::scale::ScaleArgs;
use super::{connect, load_spec, Failure, Global};
use crate::api::pod::Pod;
use crate::api::resource::{NODES, PODS};
use crate::api::Node;
use crate::bootstrap::cluster::record_pool_size;
use crate::client::ApiClient;
use crate::cloud::{owned_by, Cloud, Instance, POOL_TAG, ROLE_TAG, SLOT_TAG};
use crate::cloudcontroller::services::{self, instance_id};
use crate::report::Reporter;
use crate::spec::{set_pool_count, ClusterSpec};

/// The most workers a pool may have (as the spec says).
const MAX_WORKERS: u32 = 100;

/// The pools to scale and their new sizes, from `--workers` or `--pool NAME=N`.
pub fn wanted_sizes(spec: &ClusterSpec, workers: Option<u32>, pools: &[String]) -> Result<Vec<(String, u32)>, String> {
    let mut out = Vec::new();
    if let Some(n) = workers {
        let first = spec.workers.first().ok_or("the spec has no worker pool to scale")?;
        out.push((first.name.as_str().to_string(), n));
    }
    for p in pools {
        let (name, n) = p.split_once('=').ok_or_else(|| format!("--pool {p:?}: write NAME=COUNT, e.g. --pool default=3"))?;
        let n: u32 = n.trim().parse().map_err(|_| format!("--pool {p:?}: the count must be a whole number from 0 to {MAX_WORKERS}"))?;
        if spec.pool(name.trim()).is_none_or(|pool| pool.role != crate::spec::Role::Worker) {
            let names: Vec<&str> = spec.workers.iter().map(|w| w.name.as_str()).collect();
            return Err(format!("--pool {p:?}: the spec has no worker pool {name:?} (its worker pools: {})", names.join(", ")));
        }
        out.push((name.trim().to_string(), n));
    }
    if out.is_empty() {
        return Err("say how many workers: --workers N, or --pool NAME=N".into());
    }
    if let Some((name, n)) = out.iter().find(|(_, n)| *n > MAX_WORKERS) {
        return Err(format!("pool {name}: {n} workers is more than the {MAX_WORKERS} a pool may have"));
    }
    Ok(out)
}

/// Runs `scale -f SPEC --workers N | --pool NAME=N`.
pub async fn run(global: &Global, args: &ScaleArgs) -> Result<(), Failure> {
    let file = args.file.as_ref().ok_or_else(|| Failure::Input(anyhow::anyhow!("name the cluster spec: clusterctl scale -f SPEC --workers N")))?;
    let spec = load_spec(file)?;
    let sizes = wanted_sizes(&spec, args.workers, &args.pool).map_err(|e| Failure::Input(anyhow::anyhow!("{}: {e}", file.display())))?;
    let started = Instant::now();
    let client = super::get::cluster_client(Some(file), None)?;
    let cloud = connect(global, &spec).await;
    let report = TerminalReport::new(global.quiet);
    let deadline = Duration::from_secs(args.timeout);
    for (pool, n) in &sizes {
        let op = |e: anyhow::Error| Failure::Operation(e.context(format!("scaling pool {pool} of cluster {} to {n}", spec.name)));
        record_pool_size(&client, pool, *n).await.map_err(|e| op(e.into()))?;
        let text = std::fs::read_to_string(file).map_err(|e| op(e.into()))?;
        let updated = set_pool_count(file, &text, pool, *n).map_err(|e| op(e.into()))?;
        if updated != text {
            std::fs::write(file, updated).map_err(|e| op(anyhow::anyhow!("writing {}: {e}", file.display())))?;
        }
        let live = pool_instances(cloud.as_ref(), spec.name.as_str(), pool).await.map_err(op)?;
        if (live.len() as u32) < *n {
            report.phase(&format!("pool {pool}: {} → {n} workers (launched and bootstrapped by the master's machine controller)", live.len()));
            wait_grown(cloud.as_ref(), &client, spec.name.as_str(), pool, *n, deadline, &report).await.map_err(op)?;
        } else if (live.len() as u32) > *n {
            report.phase(&format!("pool {pool}: {} → {n} workers", live.len()));
            shrink(cloud.as_ref(), &client, spec.name.as_str(), live, *n, deadline, &report).await.map_err(op)?;
        } else {
            report.done(&format!("pool {pool} already has {n} workers"));
        }
    }
    report.finish();
    println!("cluster {}: {} (spec {} updated) in {:.1}s", spec.name, sizes.iter().map(|(p, n)| format!("pool {p} has {n} workers")).collect::<Vec<_>>().join(", "), file.display(), started.elapsed().as_secs_f64());
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

/// Cordons, deregisters and drains the machines with the fewest pods, then terminates them.
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
    for tg in cloud.target_groups(&selector).await? {
        let registered: Vec<String> = cloud.target_health(&tg.arn).await?.into_iter().map(|t| t.instance_id).filter(|id| ids.contains(id)).collect();
        if !registered.is_empty() {
            cloud.deregister_targets(&tg.arn, &registered, tg.port).await?;
            report.done(&format!("deregistered {} from target group {}", registered.iter().map(|id| label(id)).collect::<Vec<_>>().join(", "), tg.name));
        }
    }

    // Drain: evict every pod of the leaving nodes, then wait until their owners have them back elsewhere.
    let leaving_nodes: BTreeSet<String> = node_names.keys().cloned().collect();
    crate::client::drain::evict_and_wait(client, &leaving_nodes, deadline, report).await?;
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

    const SPEC: &str = r#"[cluster]
name = "t1"
region = "us-east-1"
availability_zones = ["us-east-1a"]

[network]
vpc_cidr = "10.42.0.0/16"
admin_cidrs = ["10.42.0.1/32"]

[masters]
count = 1
instance_type = "t3.medium"
image = { name = "debian-12-*" }

[[workers]]
name = "default"
count = 2   # the web tier
instance_type = "t3.small"
image = { name = "debian-12-*" }

[[workers]]
count = 1
instance_type = "t3.large"
name = "big"
image = { name = "debian-12-*" }
"#;

    fn spec() -> ClusterSpec {
        ClusterSpec::parse(std::path::Path::new("t.toml"), SPEC).unwrap()
    }

    #[test]
    fn sizes_come_from_workers_or_pool_flags_and_bad_ones_are_refused() {
        let s = spec();
        assert_eq!(wanted_sizes(&s, Some(4), &[]).unwrap(), vec![("default".to_string(), 4)]);
        assert_eq!(wanted_sizes(&s, None, &["big=2".into()]).unwrap(), vec![("big".to_string(), 2)]);
        assert!(wanted_sizes(&s, None, &["masters=2".into()]).unwrap_err().contains("no worker pool"));
        assert!(wanted_sizes(&s, None, &["big".into()]).unwrap_err().contains("NAME=COUNT"));
        assert!(wanted_sizes(&s, None, &["big=-1".into()]).unwrap_err().contains("whole number"));
        assert!(wanted_sizes(&s, Some(101), &[]).unwrap_err().contains("more than the 100"));
        assert!(wanted_sizes(&s, None, &[]).is_err());
    }

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
