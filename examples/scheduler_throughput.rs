//! Scheduler throughput in process: 10,000 pods of 100 Deployments bound onto 1,000 simulated
//! nodes in 10 zones by the scheduler's own decision code ([`scheduler::node_infos`] and
//! [`scheduler::place_all`]: filter every node, score the ones that fit, count the pod on the
//! chosen node before the next pod). No API server is involved: this is the cost of the
//! decisions, which the real scheduler pays once per pod before its bind request.
//!
//!   cargo run --release --example scheduler_throughput [-- RUNS]
//!
//! Prints one line per run and, for `scripts/bench`, `RESULT scheduler-pods-per-s <value>` lines.

use std::collections::BTreeMap;
use std::time::Instant;

use clusterctl::api::Node;
use clusterctl::api::pod::Pod;
use clusterctl::scheduler;
use serde_json::json;

const NODES: usize = 1_000;
const PODS: usize = 10_000;
const OWNERS: usize = 100;
const ZONES: usize = 10;

fn nodes() -> Vec<Node> {
    (0..NODES)
        .map(|i| {
            serde_json::from_value(json!({
                "metadata": { "name": format!("node-{i:04}"), "labels": { "topology.kubernetes.io/zone": format!("zone-{}", i % ZONES) } },
                "status": {
                    "allocatable": { "cpu": "4", "memory": "16Gi", "pods": "110" },
                    "conditions": [{ "type": "Ready", "status": "True" }],
                },
            }))
            .expect("a node object")
        })
        .collect()
}

fn pods() -> Vec<Pod> {
    (0..PODS)
        .map(|i| {
            let owner = i % OWNERS;
            serde_json::from_value(json!({
                "metadata": {
                    "name": format!("app-{owner}-{i}"), "namespace": "default", "uid": format!("pod-{i}"),
                    "ownerReferences": [{ "apiVersion": "apps/v1", "kind": "ReplicaSet", "name": format!("app-{owner}"), "uid": format!("rs-{owner}"), "controller": true }],
                },
                "spec": { "containers": [{
                    "name": "app", "image": "clusterctl-busybox:latest",
                    "resources": { "requests": { "cpu": "100m", "memory": "128Mi" } },
                }] },
            }))
            .expect("a pod object")
        })
        .collect()
}

fn main() {
    let runs: usize = std::env::args().nth(1).and_then(|a| a.parse().ok()).unwrap_or(5);
    let (nodes, pods) = (nodes(), pods());
    let mut rates = Vec::new();
    for run in 1..=runs {
        let start = Instant::now();
        let mut infos = scheduler::node_infos(&nodes, &[]);
        let decisions = scheduler::place_all(&pods, &mut infos);
        let elapsed = start.elapsed().as_secs_f64();
        let unplaced = decisions.iter().filter(|d| d.is_err()).count();
        assert_eq!(unplaced, 0, "every pod fits: {:?}", decisions.iter().find(|d| d.is_err()));
        // The spread score must have spread each owner's 100 pods over 100 nodes.
        let mut per_owner_node: BTreeMap<(usize, &str), u32> = BTreeMap::new();
        for (i, d) in decisions.iter().enumerate() {
            *per_owner_node.entry((i % OWNERS, d.as_deref().unwrap_or(""))).or_default() += 1;
        }
        let most = per_owner_node.values().copied().max().unwrap_or(0);
        let rate = PODS as f64 / elapsed;
        println!("run {run}: {PODS} pods on {NODES} nodes in {:.3} s = {rate:.0} pods/s (most replicas of one owner on one node: {most})", elapsed);
        println!("RESULT scheduler-pods-per-s {rate:.0}");
        rates.push(rate);
    }
    rates.sort_by(f64::total_cmp);
    println!(
        "scheduler throughput: median {:.0} pods/s, min {:.0}, max {:.0} over {runs} runs (goal: at least 10000)",
        rates[rates.len() / 2],
        rates[0],
        rates[rates.len() - 1]
    );
}
