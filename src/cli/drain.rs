//! `clusterctl drain NODE [--force] [--timeout 5m]`: cordon the node, evict (delete) every pod on
//! it, and wait until each evicted pod is gone and the controllers that owned them have their
//! replicas Running and Ready on other nodes again.
//!
//! As with kubectl, pods that no controller owns would be lost for good, so drain refuses (before
//! cordoning) unless `--force`. The choice of what to evict ([`plan_evictions`]) and the wait
//! condition ([`pending`]) are pure functions; [`run`] only talks to the API.

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use clap::Args;
use serde_json::Value;

use super::cordon::set_unschedulable;
use super::{ClusterSelection, Failure};
use crate::api::resource::{PODS, REPLICA_SETS};
use crate::client::{ApiClient, ListOptions};

/// How often drain looks at the pods while it waits.
const POLL: Duration = Duration::from_secs(1);

/// Arguments of `drain`.
#[derive(Debug, Args)]
pub struct DrainArgs {
    /// The node's name (as `get nodes` shows it).
    pub node: String,
    /// Also delete pods that no controller owns (they are not recreated anywhere).
    #[arg(long)]
    pub force: bool,
    /// How long to wait for the replacements, e.g. `90s`, `5m`.
    #[arg(long, default_value = "5m", value_parser = parse_duration)]
    pub timeout: Duration,
    #[command(flatten)]
    pub cluster: ClusterSelection,
}

/// `90s`, `5m`, `1h` or a number of seconds.
fn parse_duration(text: &str) -> Result<Duration, String> {
    let (number, unit) = text.split_at(text.find(|c: char| !c.is_ascii_digit()).unwrap_or(text.len()));
    let n: u64 = number.parse().map_err(|_| format!("{text:?} is not a duration (e.g. 90s, 5m, 1h)"))?;
    match unit {
        "" | "s" => Ok(Duration::from_secs(n)),
        "m" => Ok(Duration::from_secs(n * 60)),
        "h" => Ok(Duration::from_secs(n * 3600)),
        _ => Err(format!("{text:?} is not a duration (e.g. 90s, 5m, 1h)")),
    }
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

fn s(v: &Value, pointer: &str) -> String {
    v.pointer(pointer).and_then(Value::as_str).unwrap_or("").to_string()
}

fn controller_of(pod: &Value) -> Option<Owner> {
    let r = pod.pointer("/metadata/ownerReferences")?.as_array()?.iter().find(|r| r.get("controller").and_then(Value::as_bool) == Some(true))?;
    Some(Owner { kind: s(r, "/kind"), name: s(r, "/name"), uid: s(r, "/uid") })
}

/// What to evict of the pods bound to the node; without `force`, the names (`namespace/name`) of
/// the pods no controller owns are an error.
pub fn plan_evictions(pods_on_node: &[Value], force: bool) -> Result<Vec<Eviction>, Vec<String>> {
    let evictions: Vec<Eviction> = pods_on_node
        .iter()
        .map(|p| Eviction { namespace: s(p, "/metadata/namespace"), name: s(p, "/metadata/name"), uid: s(p, "/metadata/uid"), owner: controller_of(p) })
        .collect();
    let unowned: Vec<String> = evictions.iter().filter(|e| e.owner.is_none()).map(|e| format!("{}/{}", e.namespace, e.name)).collect();
    if !unowned.is_empty() && !force {
        return Err(unowned);
    }
    Ok(evictions)
}

fn running_and_ready(pod: &Value) -> bool {
    s(pod, "/status/phase") == "Running"
        && pod
            .pointer("/status/conditions")
            .and_then(Value::as_array)
            .is_some_and(|cs| cs.iter().any(|c| s(c, "/type") == "Ready" && s(c, "/status") == "True"))
}

/// What drain still waits for, one line each: evicted pods that still exist, and owners with fewer
/// Running and Ready pods off `node` than they want (`wanted`: replicas per owner uid). Empty when
/// the drain is complete.
pub fn pending(evicted: &[Eviction], pods_now: &[Value], wanted: &BTreeMap<String, i64>, node: &str) -> Vec<String> {
    let mut waiting = Vec::new();
    for e in evicted {
        if pods_now.iter().any(|p| s(p, "/metadata/uid") == e.uid) {
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
            .filter(|p| controller_of(p).is_some_and(|o| o.uid == owner.uid) && s(p, "/spec/nodeName") != node && running_and_ready(p))
            .count() as i64;
        if elsewhere < want {
            waiting.push(format!("{} {namespace}/{}: {elsewhere}/{want} replicas running elsewhere", owner.kind, owner.name));
        }
    }
    waiting
}

async fn pods_on(client: &ApiClient, node: &str) -> Result<Vec<Value>, Failure> {
    let list = client
        .list::<Value>(&PODS, None, &ListOptions::fields(format!("spec.nodeName={node}")))
        .await
        .map_err(|e| Failure::Operation(anyhow::anyhow!("listing the pods on node {node}: {e}")))?;
    Ok(list.items)
}

/// The replicas each owner of an evicted pod wants now (a ReplicaSet that is gone wants none).
async fn wanted_replicas(client: &ApiClient, evicted: &[Eviction]) -> Result<BTreeMap<String, i64>, Failure> {
    let mut wanted = BTreeMap::new();
    for e in evicted {
        let Some(owner) = e.owner.as_ref().filter(|o| o.kind == "ReplicaSet" && !wanted.contains_key(&o.uid)) else { continue };
        let replicas = match client.get::<Value>(&REPLICA_SETS, Some(&e.namespace), &owner.name).await {
            Ok(rs) if s(&rs, "/metadata/uid") == owner.uid => rs.pointer("/spec/replicas").and_then(Value::as_i64).unwrap_or(1),
            Ok(_) => 0,
            Err(err) if err.is_not_found() => 0,
            Err(err) => return Err(Failure::Operation(anyhow::anyhow!("reading replicaset {}/{}: {err}", e.namespace, owner.name))),
        };
        wanted.insert(owner.uid.clone(), replicas);
    }
    Ok(wanted)
}

/// Runs `drain`.
pub async fn run(args: &DrainArgs) -> Result<(), Failure> {
    let client = args.cluster.client()?;
    let node = args.node.as_str();
    let evictions = match plan_evictions(&pods_on(&client, node).await?, args.force) {
        Ok(e) => e,
        Err(unowned) => {
            return Err(Failure::Operation(anyhow::anyhow!(
                "cannot drain node {node}: no controller owns pod(s) {} (they would not be recreated); use --force to delete them anyway",
                unowned.join(", ")
            )));
        }
    };
    set_unschedulable(&client, node, true).await?;
    println!("node/{node} cordoned");
    for e in &evictions {
        match client.delete(&PODS, Some(&e.namespace), &e.name).await {
            Ok(()) => println!("evicting pod {}/{}", e.namespace, e.name),
            Err(err) if err.is_not_found() => {}
            Err(err) => return Err(Failure::Operation(anyhow::anyhow!("evicting pod {}/{} from node {node}: {err}", e.namespace, e.name))),
        }
    }
    let start = Instant::now();
    let mut last = Vec::new();
    loop {
        let pods = client.list::<Value>(&PODS, None, &ListOptions::default()).await.map_err(|e| Failure::Operation(anyhow::anyhow!("listing pods while draining node {node}: {e}")))?;
        let waiting = pending(&evictions, &pods.items, &wanted_replicas(&client, &evictions).await?, node);
        if waiting.is_empty() {
            break;
        }
        if waiting != last {
            println!("waiting for {}", waiting.join("; "));
            last = waiting;
        }
        if start.elapsed() > args.timeout {
            return Err(Failure::Operation(anyhow::anyhow!(
                "draining node {node}: still waiting after {} s for {} (the node stays cordoned; re-run drain to wait again)",
                args.timeout.as_secs(),
                last.join("; ")
            )));
        }
        tokio::time::sleep(POLL).await;
    }
    println!("node/{node} drained ({} pods evicted in {:.1} s)", evictions.len(), start.elapsed().as_secs_f64());
    Ok(())
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    fn pod(name: &str, node: &str, owner: Option<&str>, phase: &str, ready: bool) -> Value {
        let mut p = json!({
            "metadata": {"name": name, "namespace": "default", "uid": format!("uid-{name}")},
            "spec": {"nodeName": node},
            "status": {"phase": phase, "conditions": [{"type": "Ready", "status": if ready { "True" } else { "False" }}]},
        });
        if let Some(rs) = owner {
            p["metadata"]["ownerReferences"] = json!([{"kind": "ReplicaSet", "name": rs, "uid": format!("uid-{rs}"), "controller": true}]);
        }
        p
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
        assert_eq!(pending(&evicted, &still_there, &wanted, "w1"), ["pod default/web-1 to terminate", "ReplicaSet default/web-a: 1/2 replicas running elsewhere"]);
        let replacement_starting = [pod("web-2", "w2", Some("web-a"), "Running", true), pod("web-3", "w2", Some("web-a"), "Running", false)];
        assert_eq!(pending(&evicted, &replacement_starting, &wanted, "w1"), ["ReplicaSet default/web-a: 1/2 replicas running elsewhere"]);
        let done = [pod("web-2", "w2", Some("web-a"), "Running", true), pod("web-3", "w3", Some("web-a"), "Running", true)];
        assert!(pending(&evicted, &done, &wanted, "w1").is_empty());
    }

    #[test]
    fn a_replacement_on_the_drained_node_itself_does_not_count() {
        let evicted = plan_evictions(&[pod("web-1", "w1", Some("web-a"), "Running", true)], false).unwrap();
        let wanted = BTreeMap::from([("uid-web-a".to_string(), 1)]);
        assert_eq!(pending(&evicted, &[pod("web-9", "w1", Some("web-a"), "Running", true)], &wanted, "w1").len(), 1);
    }

    #[test]
    fn a_forced_unowned_pod_is_only_waited_for_until_it_is_gone() {
        let evicted = plan_evictions(&[pod("lonely", "w1", None, "Running", true)], true).unwrap();
        assert!(pending(&evicted, &[], &BTreeMap::new(), "w1").is_empty());
    }

    #[test]
    fn timeouts_are_written_as_kubectl_writes_them() {
        assert_eq!(parse_duration("90s"), Ok(Duration::from_secs(90)));
        assert_eq!(parse_duration("5m"), Ok(Duration::from_secs(300)));
        assert_eq!(parse_duration("120"), Ok(Duration::from_secs(120)));
        assert!(parse_duration("5 minutes").is_err());
        assert!(parse_duration("m").is_err());
    }
}
