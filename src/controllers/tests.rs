//! The scheduler and the controllers together against an in-process API server (127.0.0.1:0),
//! with the agents' part (pod IP, Ready) played by the test.

use std::sync::Arc;
use std::time::Duration;

use serde_json::json;

use crate::api::deployment::Deployment;
use crate::api::pod::{Pod, PodCondition};
use crate::api::resource::{DEPLOYMENTS, ENDPOINTS, NODES, PODS, SERVICES};
use crate::api::service::{Endpoints, Service};
use crate::api::{Node, NodeCondition, Time};
use crate::client::{ApiClient, ListOptions};
use crate::manifest::{self, apply};

pub(crate) use crate::client::test_server::start;

async fn add_node(client: &ApiClient, name: &str, zone: &str, memory: &str) {
    let mut node = Node::new(name);
    node.metadata.labels.insert(crate::scheduler::ZONE_LABEL.into(), zone.into());
    let created = client.create(&NODES, None, &node).await.unwrap();
    let mut status = created.clone();
    status.status.allocatable = [("cpu".to_string(), "2".to_string()), ("memory".to_string(), memory.to_string())].into();
    status.status.conditions = vec![NodeCondition { condition_type: "Ready".into(), status: "True".into(), last_heartbeat_time: Some(Time::now()), ..Default::default() }];
    client.replace_status(&NODES, None, name, &status).await.unwrap();
}

/// Polls `check` every 50 ms until it returns `Some`, or fails naming `what`.
async fn eventually<T, F, Fut>(what: &str, mut check: F) -> T
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = Option<T>>,
{
    // Generous: the whole unit suite shares two cores with etcd processes and other servers.
    let deadline = tokio::time::Instant::now() + Duration::from_secs(60);
    loop {
        if let Some(v) = check().await {
            return v;
        }
        assert!(tokio::time::Instant::now() < deadline, "timed out waiting until {what}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

async fn pods(client: &ApiClient) -> Vec<Pod> {
    client.list::<Pod>(&PODS, Some("default"), &ListOptions::default()).await.unwrap().items
}

/// Plays the agents: every bound pod gets an IP and is Ready; a deleted one (marked for its
/// grace period) goes, as its agent deletes it once its containers are stopped.
async fn make_ready(client: &ApiClient) {
    for (i, mut p) in pods(client).await.into_iter().enumerate() {
        if p.is_terminating() {
            let _ = client.delete_with(&PODS, Some("default"), &p.metadata.name, &json!({"gracePeriodSeconds": 0})).await;
            continue;
        }
        if p.spec.bound_node().is_none() || p.is_ready() {
            continue;
        }
        p.status.phase = Some("Running".into());
        p.status.pod_ip = Some(format!("172.17.0.{}", 10 + i));
        p.set_condition(PodCondition { condition_type: "Ready".into(), status: "True".into(), ..Default::default() });
        let _ = client.replace_status(&PODS, Some("default"), &p.metadata.name.clone(), &p).await;
    }
}

const APP: &str = r#"
apiVersion: apps/v1
kind: Deployment
metadata: {name: web}
spec:
  replicas: 3
  selector: {matchLabels: {app: web}}
  template:
    metadata: {labels: {app: web}}
    spec:
      containers:
        - name: web
          image: busybox
          ports: [{containerPort: 8080, name: http}]
          resources: {requests: {cpu: 100m, memory: 64Mi}}
---
apiVersion: v1
kind: Service
metadata: {name: web}
spec:
  type: NodePort
  selector: {app: web}
  ports: [{port: 80, targetPort: http}]
"#;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_deployment_is_spread_over_nodes_served_by_endpoints_scaled_and_rolled() {
    let client = start().await;
    for (n, z) in [("w1", "a"), ("w2", "a"), ("w3", "b")] {
        add_node(&client, n, z, "1Gi").await;
    }
    tokio::spawn(crate::scheduler::run(client.clone()));
    tokio::spawn(super::deployment::run(client.clone()));
    tokio::spawn(super::endpoints::run(client.clone()));

    let docs = manifest::parse("app.yaml", APP).unwrap();
    for d in &docs {
        assert_eq!(apply::apply(&client, &d.object, "default").await.unwrap(), apply::Outcome::Created);
    }
    for d in &docs {
        assert_eq!(apply::apply(&client, &d.object, "default").await.unwrap(), apply::Outcome::Unchanged);
    }

    // Three pods, one per node.
    let nodes = eventually("3 pods are bound to 3 nodes", || async {
        let ps = pods(&client).await;
        let mut nodes: Vec<String> = ps.iter().filter_map(|p| p.spec.bound_node().map(String::from)).collect();
        nodes.sort();
        (ps.len() == 3 && nodes.len() == 3).then_some(nodes)
    })
    .await;
    assert_eq!(nodes, ["w1", "w2", "w3"]);

    // The service gets a node port and, once the pods are ready, three endpoints.
    make_ready(&client).await;
    eventually("the service has a node port", || async {
        let s: Service = client.get(&SERVICES, Some("default"), "web").await.ok()?;
        (s.spec.ports[0].node_port == Some(30000)).then_some(())
    })
    .await;
    eventually("the endpoints list 3 ready pods on port 8080", || async {
        // A status write that raced a controller's write of the same pod is made again.
        make_ready(&client).await;
        let e: Endpoints = client.get(&ENDPOINTS, Some("default"), "web").await.ok()?;
        let s = e.subsets.first()?;
        (s.addresses.len() == 3 && s.ports[0].port == 8080).then_some(())
    })
    .await;
    eventually("the deployment's status shows 3 ready", || async {
        let d: Deployment = client.get(&DEPLOYMENTS, Some("default"), "web").await.ok()?;
        (d.status.ready_replicas == 3 && d.status.updated_replicas == 3).then_some(())
    })
    .await;
    // Re-applying the service keeps its allocated node port.
    assert_eq!(apply::apply(&client, &docs[1].object, "default").await.unwrap(), apply::Outcome::Unchanged);

    // Scale down.
    client.patch::<Deployment>(&DEPLOYMENTS, Some("default"), "web", &json!({"spec": {"replicas": 1}})).await.unwrap();
    eventually("one pod is left", || async {
        make_ready(&client).await;
        (pods(&client).await.len() == 1).then_some(())
    })
    .await;

    // A new image rolls: the old pod stays until a new one is ready (maxUnavailable 25% of 1 = 0).
    // Read, change, write, again on a conflict: the controller writes the status meanwhile.
    loop {
        let mut d: Deployment = client.get(&DEPLOYMENTS, Some("default"), "web").await.unwrap();
        d.spec.template.spec.containers[0].image = "busybox:2".into();
        match client.replace(&DEPLOYMENTS, Some("default"), "web", &d).await {
            Ok(_) => break,
            Err(e) if e.is_conflict() => continue,
            Err(e) => panic!("updating the deployment: {e}"),
        }
    }
    eventually("the rollout finishes with one new pod", || async {
        make_ready(&client).await;
        let ps = pods(&client).await;
        let ready_count = ps.iter().filter(|p| p.is_ready()).count();
        assert!(ready_count >= 1, "a ready pod must always remain");
        (ps.len() == 1 && ps[0].spec.containers[0].image == "busybox:2").then_some(())
    })
    .await;

    // A pod that fits nowhere says why.
    let big = Pod {
        metadata: crate::api::ObjectMeta::namespaced("default", "big"),
        spec: serde_json::from_value(json!({"containers": [{"name": "c", "image": "i", "resources": {"requests": {"memory": "4Gi"}}}]})).unwrap(),
        ..Default::default()
    };
    client.create(&PODS, Some("default"), &big).await.unwrap();
    eventually("the big pod is marked unschedulable", || async {
        let p: Pod = client.get(&PODS, Some("default"), "big").await.ok()?;
        let c = p.condition("PodScheduled")?;
        (c.status == "False" && c.message.as_deref() == Some("0/3 nodes are available: 3 Insufficient memory.")).then_some(())
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sixty_replicas_are_created_in_batches_and_bound_concurrently_exactly_once() {
    let client = start().await;
    for (n, z) in [("w1", "a"), ("w2", "a"), ("w3", "b")] {
        add_node(&client, n, z, "4Gi").await;
    }
    tokio::spawn(crate::scheduler::run(client.clone()));
    tokio::spawn(super::deployment::run(client.clone()));
    let app = APP.split("\n---\n").next().unwrap().replace("replicas: 3", "replicas: 60").replace("cpu: 100m, memory: 64Mi", "cpu: 10m, memory: 16Mi");
    let docs = manifest::parse("app.yaml", &app).unwrap();
    apply::apply(&client, &docs[0].object, "default").await.unwrap();
    let per_node = eventually("60 pods are bound", || async {
        let ps = pods(&client).await;
        let bound: Vec<&str> = ps.iter().filter_map(|p| p.spec.bound_node()).collect();
        (bound.len() == 60).then(|| {
            let mut counts = std::collections::BTreeMap::<String, usize>::new();
            for n in bound {
                *counts.entry(n.to_string()).or_default() += 1;
            }
            counts
        })
    })
    .await;
    assert!(per_node.len() == 3 && per_node.values().all(|c| *c >= 15), "replicas spread over the three nodes: {per_node:?}");
    // Concurrent creates and binds made no pod twice: the count stays at 60 over further passes.
    tokio::time::sleep(super::deployment::RESYNC + Duration::from_secs(1)).await;
    let ps = pods(&client).await;
    assert_eq!(ps.len(), 60, "exactly the replicas, no duplicates");
    assert!(ps.iter().all(|p| p.condition("PodScheduled").is_some_and(|c| c.status == "True")), "every pod is marked scheduled");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_pod_of_a_node_not_ready_beyond_the_toleration_is_evicted_in_one_pass() {
    let client = start().await;
    add_node(&client, "w1", "a", "1Gi").await;
    add_node(&client, "w2", "a", "1Gi").await;
    let mut dead: Node = client.get(&NODES, None, "w1").await.unwrap();
    dead.status.conditions[0].status = "Unknown".into();
    dead.status.conditions[0].last_transition_time = Some(Time::parse("2026-01-01T00:00:00Z").unwrap());
    client.replace_status(&NODES, None, "w1", &dead).await.unwrap();
    for i in 0..20 {
        let node = if i < 15 { "w1" } else { "w2" };
        let pod = Pod {
            metadata: crate::api::ObjectMeta::namespaced("default", format!("p{i}")),
            spec: serde_json::from_value(json!({"nodeName": node, "containers": [{"name": "c", "image": "i"}]})).unwrap(),
            ..Default::default()
        };
        client.create(&PODS, Some("default"), &pod).await.unwrap();
    }
    let dead: Node = client.get(&NODES, None, "w1").await.unwrap();
    let now = crate::api::time::now_seconds();
    assert!(super::node_lifecycle::not_ready_for(&dead, now).is_some_and(|(since, _)| since > Duration::from_secs(10)));
    let on_dead: Vec<Arc<Pod>> = pods(&client).await.into_iter().filter(|p| p.spec.bound_node() == Some("w1")).map(Arc::new).collect();
    let events = crate::runtime::events::Recorder::new(client.clone(), "node-controller", "");
    let evicted = super::node_lifecycle::evict(&client, &events, "w1", &on_dead).await.unwrap();
    assert_eq!(evicted, 15, "every pod of the dead node, none of the healthy one");
    let left: Vec<String> = pods(&client).await.into_iter().filter(|p| !p.is_terminating()).filter_map(|p| p.spec.bound_node().map(String::from)).collect();
    assert_eq!(left, vec!["w2"; 5]);
}

/// `propagationPolicy: Foreground` (kubectl's `--cascade=foreground`): the Deployment stays,
/// marked with the `foregroundDeletion` finalizer, while its ReplicaSet (itself in the
/// foreground) and the set's pods go; the pods are Terminating until their agent's delete (played
/// here); then the set goes, and then the Deployment.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_foreground_delete_removes_the_pods_and_the_set_before_the_deployment() {
    use crate::api::deployment::ReplicaSet;
    use crate::api::resource::REPLICA_SETS;
    let client = start().await;
    add_node(&client, "w1", "a", "1Gi").await;
    tokio::spawn(crate::scheduler::run(client.clone()));
    tokio::spawn(super::deployment::run(client.clone()));
    let docs = manifest::parse("app.yaml", APP).unwrap();
    apply::apply(&client, &docs[0].object, "default").await.unwrap();
    eventually("3 bound pods", || async { (pods(&client).await.iter().filter(|p| p.spec.bound_node().is_some()).count() == 3).then_some(()) }).await;
    make_ready(&client).await;
    client.delete_with(&DEPLOYMENTS, Some("default"), "web", &json!({"propagationPolicy": "Foreground"})).await.unwrap();
    let marked: Deployment = client.get(&DEPLOYMENTS, Some("default"), "web").await.unwrap();
    assert!(marked.metadata.deletion_timestamp.is_some() && marked.metadata.finalizers == ["foregroundDeletion"], "{:?}", marked.metadata);
    eventually("the pods are marked", || async { pods(&client).await.iter().all(|p| p.is_terminating()).then_some(()) }).await;
    let sets = client.list::<ReplicaSet>(&REPLICA_SETS, Some("default"), &ListOptions::default()).await.unwrap().items;
    assert_eq!(sets.len(), 1, "the set waits for its pods");
    assert!(sets[0].metadata.finalizers == ["foregroundDeletion"]);
    assert!(client.get::<Deployment>(&DEPLOYMENTS, Some("default"), "web").await.is_ok(), "the Deployment waits for its set");
    eventually("the pods, the set and the Deployment are gone", || async {
        make_ready(&client).await;
        let sets = client.list::<ReplicaSet>(&REPLICA_SETS, Some("default"), &ListOptions::default()).await.unwrap().items;
        let gone = client.get::<Deployment>(&DEPLOYMENTS, Some("default"), "web").await.is_err();
        (pods(&client).await.is_empty() && sets.is_empty() && gone).then_some(())
    })
    .await;
}

/// A pod template using fields the cluster acts on (affinity, topology spread, host aliases, a
/// deadline) and Kubernetes fields it only stores (service account, priority class, readiness
/// gates): the API keeps every one, the ReplicaSet's template is the Deployment's, and so is
/// each pod's spec (with its node added).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_pod_field_survives_the_deployments_template_copy_into_its_replica_set_and_pods() {
    use crate::api::resource::REPLICA_SETS;
    let client = start().await;
    add_node(&client, "w1", "a", "1Gi").await;
    tokio::spawn(crate::scheduler::run(client.clone()));
    tokio::spawn(super::deployment::run(client.clone()));
    let pod_spec = json!({
        "containers": [{"name": "app", "image": "busybox", "stdin": true, "workingDir": "/srv"}],
        "affinity": {"nodeAffinity": {"requiredDuringSchedulingIgnoredDuringExecution": {"nodeSelectorTerms": [
            {"matchExpressions": [{"key": crate::scheduler::ZONE_LABEL, "operator": "In", "values": ["a"]}]}]}},
            "podAntiAffinity": {"preferredDuringSchedulingIgnoredDuringExecution": [{"weight": 10, "podAffinityTerm": {
                "labelSelector": {"matchLabels": {"app": "full"}}, "topologyKey": "kubernetes.io/hostname"}}]}},
        "topologySpreadConstraints": [{"maxSkew": 1, "topologyKey": crate::scheduler::ZONE_LABEL, "whenUnsatisfiable": "ScheduleAnyway", "labelSelector": {"matchLabels": {"app": "full"}}}],
        "hostAliases": [{"ip": "10.1.2.3", "hostnames": ["db.local"]}],
        "activeDeadlineSeconds": 3600,
        "serviceAccountName": "builder",
        "automountServiceAccountToken": false,
        "priorityClassName": "high",
        "readinessGates": [{"conditionType": "example.com/ready"}],
        "schedulerName": "default-scheduler",
        "enableServiceLinks": false
    });
    let deployment = json!({"apiVersion": "apps/v1", "kind": "Deployment", "metadata": {"name": "full"}, "spec": {"replicas": 1,
        "selector": {"matchLabels": {"app": "full"}}, "template": {"metadata": {"labels": {"app": "full"}}, "spec": pod_spec.clone()}}});
    let created = client.request_raw(reqwest::Method::POST, "/apis/apps/v1/namespaces/default/deployments?fieldValidation=Strict", &deployment).await;
    assert_eq!(created.status().as_u16(), 201, "Strict accepts every Kubernetes pod field");
    let mut warnings: Vec<String> = created.headers().get_all("warning").iter().map(|v| v.to_str().unwrap().to_string()).collect();
    warnings.sort();
    assert_eq!(warnings.len(), 3, "{warnings:?}");
    assert!(warnings[0].starts_with("299 - \"spec.template.spec.priorityClassName is stored but not acted on: "), "{warnings:?}");
    assert!(warnings[1].contains("spec.template.spec.readinessGates") && warnings[2].contains("spec.template.spec.serviceAccountName"), "{warnings:?}");
    let set = eventually("the ReplicaSet", || async {
        client.list::<serde_json::Value>(&REPLICA_SETS, Some("default"), &ListOptions::default()).await.ok()?.items.into_iter().next()
    })
    .await;
    assert_eq!(set["spec"]["template"]["spec"], pod_spec, "the ReplicaSet's template is the Deployment's");
    let pod = eventually("the bound pod", || async {
        client.list::<serde_json::Value>(&PODS, Some("default"), &ListOptions::default()).await.ok()?.items.into_iter().find(|p| p["spec"]["nodeName"] == "w1")
    })
    .await;
    let mut spec = pod["spec"].clone();
    spec.as_object_mut().unwrap().remove("nodeName");
    // The API server gave the pod the default tolerations of a node shown not ready, as
    // Kubernetes' DefaultTolerationSeconds admission does.
    let added = spec.as_object_mut().unwrap().remove("tolerations").unwrap();
    assert_eq!(added, serde_json::json!([
        {"key": "node.kubernetes.io/not-ready", "operator": "Exists", "effect": "NoExecute", "tolerationSeconds": 300},
        {"key": "node.kubernetes.io/unreachable", "operator": "Exists", "effect": "NoExecute", "tolerationSeconds": 300},
    ]));
    assert_eq!(spec, pod_spec, "the pod's spec is the template's");
}
