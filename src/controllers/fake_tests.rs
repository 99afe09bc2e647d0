//! The controllers on the runtime's fake client and tokio's paused clock: requeue and back-off per
//! controller, and objects that no longer decode (written before validation) left aside while
//! every other object is served.

use std::sync::Arc;
use std::time::Duration;

use serde_json::json;
use tokio::time::Instant;

use crate::api::deployment::{Deployment, ReplicaSet};
use crate::api::lease::{Lease, NODE_LEASE_NAMESPACE};
use crate::api::pod::{Pod, PodCondition};
use crate::api::resource::{DEPLOYMENTS, ENDPOINTS, PODS, REPLICA_SETS, SERVICES};
use crate::api::service::{Endpoints, Service};
use crate::api::time::{MicroTime, Time};
use crate::api::{Node, ObjectMeta};
use crate::runtime::fake::FakeClient;
use crate::runtime::{Client, ObjectKey};

async fn eventually<T>(what: &str, check: impl Fn() -> Option<T>) -> T {
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        if let Some(v) = check() {
            return v;
        }
        assert!(Instant::now() < deadline, "timed out waiting until {what}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

fn deployment(name: &str, replicas: i32) -> Deployment {
    serde_json::from_value(json!({
        "metadata": {"name": name, "namespace": "default"},
        "spec": {"replicas": replicas, "selector": {"matchLabels": {"app": name}},
                 "template": {"metadata": {"labels": {"app": name}}, "spec": {"containers": [{"name": "c", "image": "i", "ports": [{"containerPort": 8080, "name": "http"}]}]}}}
    }))
    .unwrap()
}

fn service(name: &str) -> Service {
    serde_json::from_value(json!({"metadata": {"name": name, "namespace": "default"}, "spec": {"selector": {"app": name}, "ports": [{"port": 80, "targetPort": "http"}]}})).unwrap()
}

/// Plays the agents: bound pods get an IP and are Ready.
async fn make_ready(fake: &FakeClient) {
    for (i, mut p) in fake.objects::<Pod>().into_iter().enumerate() {
        if p.spec.bound_node().is_none() || p.is_ready() {
            continue;
        }
        p.status.pod_ip = Some(format!("10.0.0.{}", 10 + i));
        p.set_condition(PodCondition { condition_type: "Ready".into(), status: "True".into(), ..Default::default() });
        let _ = fake.replace_status(&p).await;
    }
}

#[tokio::test(start_paused = true)]
async fn the_deployment_controller_backs_off_failing_pod_creates_and_then_makes_every_replica() {
    let fake = FakeClient::new();
    fake.create(&deployment("web", 3)).await.unwrap();
    fake.fail_next("create", &PODS, 3, 500);
    let task = tokio::spawn(super::deployment::run(fake.clone()));
    let set = eventually("a replica set exists", || fake.objects::<ReplicaSet>().into_iter().next()).await;
    assert_eq!(set.spec.replicas(), 3);
    // Three failed creates: retried after 0.5 s, 1 s, 2 s (not at once, not every resync only).
    let started = Instant::now();
    eventually("three pods exist", || (fake.objects::<Pod>().len() == 3).then_some(())).await;
    let waited = Instant::now() - started;
    assert!(waited >= Duration::from_millis(3500), "the failures were backed off: {waited:?}");
    assert!(waited < super::deployment::RESYNC + Duration::from_secs(3), "and retried before long: {waited:?}");
    // The status follows once the pods are ready; then a resync changes nothing.
    let key = ObjectKey::namespaced("default", "web");
    for mut p in fake.objects::<Pod>() {
        p.spec.node_name = Some("w1".into());
        fake.replace(&p).await.unwrap();
    }
    make_ready(&fake).await;
    let d = eventually("the deployment shows 3 ready", || fake.objects::<Deployment>().into_iter().find(|d| ObjectKey::of(&d.metadata) == key).filter(|d| d.status.ready_replicas == 3)).await;
    // The conditions `kubectl wait --for=condition=available` and `rollout status` read.
    let condition = |kind: &str| d.status.conditions.iter().find(|c| c.condition_type == kind).map(|c| (c.status.clone(), c.reason.clone().unwrap_or_default()));
    assert_eq!(condition("Available"), Some(("True".into(), "MinimumReplicasAvailable".into())));
    assert_eq!(condition("Progressing"), Some(("True".into(), "NewReplicaSetAvailable".into())));
    let writes = fake.writes().len();
    tokio::time::sleep(super::deployment::RESYNC * 3).await;
    assert_eq!(fake.writes().len(), writes, "resyncs of a settled deployment write nothing");
    assert_eq!(fake.objects::<Pod>().len(), 3);
    task.abort();
}

/// The ReplicaSet controller on its own (a set no deployment owns): failing pod creates are
/// backed off, a deleted pod is replaced at once (its change queues its set), and the pods of a
/// deleted set are deleted.
#[tokio::test(start_paused = true)]
async fn the_replica_set_controller_backs_off_failing_creates_replaces_a_deleted_pod_and_deletes_orphans() {
    let fake = FakeClient::new();
    let set: ReplicaSet = serde_json::from_value(json!({
        "metadata": {"name": "solo", "namespace": "default"},
        "spec": {"replicas": 2, "selector": {"matchLabels": {"app": "solo"}},
                 "template": {"metadata": {"labels": {"app": "solo"}}, "spec": {"containers": [{"name": "c", "image": "i"}]}}}
    }))
    .unwrap();
    let task = tokio::spawn(super::deployment::run(fake.clone()));
    tokio::time::sleep(Duration::from_secs(1)).await;
    fake.fail_next("create", &PODS, 2, 500);
    let started = Instant::now();
    fake.create(&set).await.unwrap();
    eventually("two pods exist", || (fake.objects::<Pod>().len() == 2).then_some(())).await;
    let took = Instant::now() - started;
    assert!(took >= Duration::from_millis(1500) && took < Duration::from_millis(2500), "two failures backed off 0.5 s then 1 s: {took:?}");
    assert!(fake.objects::<Pod>().iter().all(|p| p.metadata.controller_owner().is_some_and(|o| o.name == "solo")));
    // What it did and what failed, as events on the set.
    let events = fake.objects::<crate::api::event::Event>();
    let reasons = |reason: &str| events.iter().filter(|e| e.reason == reason && e.involved_object.name == "solo").map(|e| e.count).sum::<i32>();
    assert_eq!((reasons("SuccessfulCreate"), reasons("FailedCreate")), (2, 2), "{events:?}");

    // A pod deleted: replaced at once, not at the resync.
    let victim = fake.objects::<Pod>().remove(0);
    let deleted = Instant::now();
    fake.delete::<Pod>(&ObjectKey::of(&victim.metadata)).await.unwrap();
    eventually("the pod is replaced", || {
        let pods = fake.objects::<Pod>();
        (pods.len() == 2 && pods.iter().all(|p| p.metadata.name != victim.metadata.name)).then_some(())
    })
    .await;
    assert!(Instant::now() - deleted < Duration::from_millis(500));

    // The set deleted (no garbage collector here): the controller deletes the pods it left.
    fake.delete::<ReplicaSet>(&ObjectKey::namespaced("default", "solo")).await.unwrap();
    eventually("the orphaned pods are deleted", || fake.objects::<Pod>().is_empty().then_some(())).await;
    task.abort();
}

#[tokio::test(start_paused = true)]
async fn the_endpoints_controller_backs_off_a_failing_write_and_follows_its_pods() {
    let fake = FakeClient::new();
    let mut pod = Pod { metadata: ObjectMeta::namespaced("default", "web-1"), ..Default::default() };
    pod.metadata.labels.insert("app".into(), "web".into());
    pod.spec = serde_json::from_value(json!({"nodeName": "w1", "containers": [{"name": "c", "image": "i", "ports": [{"containerPort": 8080, "name": "http"}]}]})).unwrap();
    fake.create(&pod).await.unwrap();
    make_ready(&fake).await;
    fake.create(&service("web")).await.unwrap();
    let task = tokio::spawn(super::endpoints::run(fake.clone()));
    let endpoints = eventually("the endpoints exist", || fake.objects::<Endpoints>().into_iter().next()).await;
    assert_eq!(endpoints.subsets[0].addresses.len(), 1);
    assert_eq!(endpoints.subsets[0].ports[0].port, 8080);
    tokio::time::sleep(Duration::from_secs(1)).await;
    // The pod goes (its change maps to the service) while writes fail twice: retried after 0.5 s
    // and 1 s more.
    fake.fail_next("replace", &ENDPOINTS, 2, 503);
    let started = Instant::now();
    fake.delete::<Pod>(&ObjectKey::namespaced("default", "web-1")).await.unwrap();
    eventually("the pod is taken out", || fake.objects::<Endpoints>()[0].subsets.is_empty().then_some(())).await;
    let took = Instant::now() - started;
    assert!(took >= Duration::from_millis(1500) && took < Duration::from_millis(2500), "two failures backed off 0.5 s then 1 s: {took:?}");
    // A pod labelled out of the service leaves its endpoints at once, not at the resync: its new
    // labels select no service, its old ones are only in the endpoints.
    let mut again = pod.clone();
    again.metadata.resource_version = String::new();
    again.metadata.name = "web-2".into();
    fake.create(&again).await.unwrap();
    make_ready(&fake).await;
    eventually("the second pod is listed", || (fake.objects::<Endpoints>()[0].subsets.iter().map(|s| s.addresses.len()).sum::<usize>() == 1).then_some(())).await;
    let mut relabelled: Pod = fake.get(&ObjectKey::namespaced("default", "web-2")).await.unwrap();
    relabelled.metadata.labels.insert("app".into(), "other".into());
    let started = Instant::now();
    fake.replace(&relabelled).await.unwrap();
    eventually("the relabelled pod is taken out", || fake.objects::<Endpoints>()[0].subsets.is_empty().then_some(())).await;
    assert!(Instant::now() - started < Duration::from_millis(500), "at once: {:?}", Instant::now() - started);
    // The service goes: so do its endpoints.
    fake.delete::<Service>(&ObjectKey::namespaced("default", "web")).await.unwrap();
    eventually("the endpoints are gone", || fake.objects::<Endpoints>().is_empty().then_some(())).await;
    task.abort();
}

// On the real clock: leases age in wall-clock time.
#[tokio::test]
async fn the_node_lifecycle_controller_requeues_each_node_marks_a_stale_one_and_backs_off_a_failing_write() {
    let fake = FakeClient::new();
    fake.ready_node("w1").await;
    let lease = Lease {
        metadata: ObjectMeta::namespaced(NODE_LEASE_NAMESPACE, "w1"),
        spec: crate::api::LeaseSpec { renew_time: Some(MicroTime::now()), ..Default::default() },
        ..Default::default()
    };
    fake.create(&lease).await.unwrap();
    let mut pod = Pod { metadata: ObjectMeta::namespaced("default", "p"), ..Default::default() };
    pod.spec.node_name = Some("w1".into());
    fake.create(&pod).await.unwrap();
    // Two more nodes whose agents keep renewing their leases: with w1 alone not ready its zone
    // still has Ready nodes, so its pod is evicted (the disruption guard stays open).
    for other in ["w2", "w3"] {
        fake.ready_node(other).await;
        create_lease(&fake, other).await;
    }
    let renewing = renew_leases(&fake, &["w2", "w3"]);
    fake.fail_next("replace_status", &crate::api::resource::NODES, 2, 500);
    let (grace, toleration) = (Duration::from_secs(1), Duration::from_secs(1));
    let settings = super::node_lifecycle::Settings { grace, toleration, unhealthy_zone_percent: 55 };
    let task = tokio::spawn(super::node_lifecycle::run(fake.clone(), settings));
    // Nothing changes in the API, yet the node is looked at again every second: once the lease is
    // older than the grace it is marked, after two failed writes backed off 0.5 s and 1 s.
    let started = Instant::now();
    let w1 = || fake.objects::<Node>().into_iter().find(|n| n.metadata.name == "w1").unwrap();
    eventually("the node is marked Unknown", || w1().ready_condition().filter(|c| c.status == "Unknown").map(drop)).await;
    let took = Instant::now() - started;
    assert!(took >= grace + Duration::from_millis(1500) && took < grace + Duration::from_secs(5), "marked after the grace and two back-offs: {took:?}");
    // The toleration later, its pod is evicted.
    eventually("the pod is evicted", || fake.objects::<Pod>().is_empty().then_some(())).await;
    assert!(Instant::now() - started >= grace + toleration);
    let others: Vec<String> = fake.objects::<Node>().iter().filter(|n| n.ready_condition().is_some_and(|c| c.status == "True")).map(|n| n.metadata.name.clone()).collect();
    assert_eq!(others, ["w2", "w3"], "the nodes whose leases are renewed stay Ready");
    task.abort();
    renewing.abort();
}

/// A node's lease, renewed now.
async fn create_lease(fake: &FakeClient, node: &str) {
    let lease = Lease { metadata: ObjectMeta::namespaced(NODE_LEASE_NAMESPACE, node), spec: crate::api::LeaseSpec { renew_time: Some(MicroTime::now()), ..Default::default() }, ..Default::default() };
    fake.create(&lease).await.unwrap();
}

/// Renews the leases of `nodes` every 200 ms, as their agents would (a lease not there yet is
/// skipped); abort the task to stop.
fn renew_leases(fake: &FakeClient, nodes: &[&'static str]) -> tokio::task::JoinHandle<()> {
    let (fake, nodes) = (fake.clone(), nodes.to_vec());
    tokio::spawn(async move {
        loop {
            tokio::time::sleep(Duration::from_millis(200)).await;
            for node in &nodes {
                if let Ok(mut lease) = fake.get::<Lease>(&ObjectKey::namespaced(NODE_LEASE_NAMESPACE, *node)).await {
                    lease.spec.renew_time = Some(MicroTime::now());
                    fake.replace(&lease).await.unwrap();
                }
            }
        }
    })
}

/// With every node of a zone not ready (a partition), nothing is evicted however long it lasts;
/// once one of them is back, the pods of those still not ready go.
#[tokio::test]
async fn a_zone_without_a_ready_node_keeps_its_pods_until_one_is_back() {
    let fake = FakeClient::new();
    for (name, zone) in [("a0", "a"), ("b0", "b"), ("b1", "b")] {
        fake.ready_node(name).await;
        let mut node: Node = fake.get(&ObjectKey::cluster(name)).await.unwrap();
        node.metadata.labels.insert("topology.kubernetes.io/zone".into(), zone.into());
        fake.replace(&node).await.unwrap();
        let mut pod = Pod { metadata: ObjectMeta::namespaced("default", format!("on-{name}")), ..Default::default() };
        pod.spec.node_name = Some(name.into());
        fake.create(&pod).await.unwrap();
    }
    // a0's agent keeps renewing its lease; zone b's two nodes stop (their leases never exist, so
    // their heartbeats age from the controller's start).
    create_lease(&fake, "a0").await;
    // b0's lease exists once its agent is back.
    let renewing = renew_leases(&fake, &["a0", "b0"]);
    let settings = super::node_lifecycle::Settings { grace: Duration::from_secs(1), toleration: Duration::from_secs(1), unhealthy_zone_percent: 55 };
    let task = tokio::spawn(super::node_lifecycle::run(fake.clone(), settings));
    let not_ready = |name: &str| fake.objects::<Node>().iter().any(|n| n.metadata.name == name && n.ready_condition().is_some_and(|c| c.status == "Unknown"));
    eventually("zone b's nodes marked Unknown", || (not_ready("b0") && not_ready("b1")).then_some(())).await;
    tokio::time::sleep(Duration::from_secs(4)).await;
    let pods: Vec<String> = fake.objects::<Pod>().iter().map(|p| p.metadata.name.clone()).collect();
    assert_eq!(pods, ["on-a0", "on-b0", "on-b1"], "well past the toleration, a zone with no Ready node keeps its pods");
    // b0 reports Ready again (its agent is back): b1's pod goes, b0's stays.
    let mut b0: Node = fake.get(&ObjectKey::cluster("b0")).await.unwrap();
    for c in b0.status.conditions.iter_mut().filter(|c| c.condition_type == "Ready") {
        c.status = "True".into();
        c.last_heartbeat_time = Some(crate::api::time::Time::now());
    }
    fake.replace_status(&b0).await.unwrap();
    create_lease(&fake, "b0").await;
    eventually("b1's pod evicted", || (!fake.objects::<Pod>().iter().any(|p| p.metadata.name == "on-b1")).then_some(())).await;
    let pods: Vec<String> = fake.objects::<Pod>().iter().map(|p| p.metadata.name.clone()).collect();
    assert_eq!(pods, ["on-a0", "on-b0"]);
    task.abort();
    renewing.abort();
}

/// Issue 18's acceptance: objects with wrong-typed fields already in the store (from before
/// validation) are skipped with a logged error; the scheduler, the deployment controller and the
/// endpoints controller keep serving every other object.
#[tokio::test(start_paused = true)]
async fn objects_that_do_not_decode_are_skipped_and_every_other_object_is_served() {
    let fake = FakeClient::new();
    fake.ready_node("w1").await;
    fake.ready_node("w2").await;
    fake.insert_raw(&DEPLOYMENTS, json!({"apiVersion": "apps/v1", "kind": "Deployment", "metadata": {"name": "bad", "namespace": "default"}, "spec": {"replicas": "three"}}));
    fake.insert_raw(&PODS, json!({"apiVersion": "v1", "kind": "Pod", "metadata": {"name": "bad", "namespace": "default", "labels": {"app": "web"}}, "spec": {"containers": "x"}}));
    fake.insert_raw(&SERVICES, json!({"apiVersion": "v1", "kind": "Service", "metadata": {"name": "bad", "namespace": "default"}, "spec": {"selector": {"app": "web"}, "ports": [{"port": "eighty"}]}}));
    fake.insert_raw(&REPLICA_SETS, json!({"apiVersion": "apps/v1", "kind": "ReplicaSet", "metadata": {"name": "bad", "namespace": "default"}, "spec": {"replicas": []}}));
    let tasks = [
        tokio::spawn(crate::scheduler::run(fake.clone())),
        tokio::spawn(super::deployment::run(fake.clone())),
        tokio::spawn(super::endpoints::run(fake.clone())),
    ];
    fake.create(&deployment("web", 2)).await.unwrap();
    fake.create(&service("web")).await.unwrap();

    let bound = eventually("the good deployment's two pods are bound", || {
        let pods = fake.objects::<Pod>();
        let bound: Vec<String> = pods.iter().filter_map(|p| p.spec.bound_node().map(String::from)).collect();
        (pods.len() == 2 && bound.len() == 2).then_some(bound)
    })
    .await;
    assert!(bound.iter().all(|n| n == "w1" || n == "w2"));
    make_ready(&fake).await;
    let endpoints = eventually("the good service has both pods as endpoints", || {
        let e = fake.objects::<Endpoints>().into_iter().find(|e| e.metadata.name == "web")?;
        (e.subsets.first()?.addresses.len() == 2).then_some(e)
    })
    .await;
    assert_eq!(endpoints.subsets[0].ports[0].port, 8080);
    // The bad objects are still there, untouched, and got nothing.
    for (resource, name) in [(&DEPLOYMENTS, "bad"), (&PODS, "bad"), (&SERVICES, "bad"), (&REPLICA_SETS, "bad")] {
        assert!(fake.raw(resource, &ObjectKey::namespaced("default", name)).is_some(), "{} bad is left as it was", resource.plural);
    }
    assert!(fake.raw(&ENDPOINTS, &ObjectKey::namespaced("default", "bad")).is_none());
    assert_eq!(fake.objects::<ReplicaSet>().len(), 1, "one set, for the good deployment only");
    let _ = Arc::new(());
    for t in tasks {
        t.abort();
    }
}

/// Events expire their TTL after they last happened, not before (on the real clock: event times
/// are wall-clock times).
#[tokio::test]
async fn expired_events_are_deleted_and_fresh_ones_kept_until_their_ttl() {
    use crate::api::event::Event;
    let fake = FakeClient::new();
    let event = |name: &str, last: Time| Event {
        metadata: ObjectMeta::namespaced("default", name),
        reason: "Test".into(),
        last_timestamp: Some(last),
        count: 1,
        ..Default::default()
    };
    let hours_ago = Time::from_system_time(std::time::SystemTime::now() - Duration::from_secs(7200));
    fake.create(&event("old", hours_ago)).await.unwrap();
    fake.create(&event("fresh", Time::now())).await.unwrap();
    let task = tokio::spawn(super::event_ttl::run(fake.clone(), Duration::from_secs(5)));
    let names = || fake.objects::<Event>().into_iter().map(|e| e.metadata.name).collect::<Vec<_>>();
    let started = tokio::time::Instant::now();
    while names().len() == 2 {
        assert!(started.elapsed() < Duration::from_secs(4), "the expired event is still there");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert_eq!(names(), ["fresh"], "the old one goes at once, the fresh one stays");
    while !names().is_empty() {
        assert!(started.elapsed() < Duration::from_secs(15), "the fresh one outlived its TTL: {:?}", names());
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert!(started.elapsed() >= Duration::from_secs(4), "the fresh one went only after its TTL: {:?}", started.elapsed());
    task.abort();
}

/// Binds every pod to a node and makes it Ready (the scheduler's and the agents' part).
async fn bind_and_make_ready(fake: &FakeClient) {
    for mut p in fake.objects::<Pod>() {
        if p.spec.bound_node().is_none() {
            p.spec.node_name = Some("w1".into());
            let _ = fake.replace(&p).await;
        }
    }
    make_ready(fake).await;
}

/// Changes the Deployment `web` as a client would: read, change, write, again on a conflict.
async fn update_web(fake: &FakeClient, change: impl Fn(&mut Deployment)) {
    loop {
        let mut d: Deployment = fake.get(&ObjectKey::namespaced("default", "web")).await.unwrap();
        change(&mut d);
        match fake.replace(&d).await {
            Ok(_) => return,
            Err(crate::client::ClientError::Api { code: 409, .. }) => continue,
            Err(e) => panic!("{e}"),
        }
    }
}

fn set_template(d: &mut Deployment, version: &str) {
    d.metadata.annotations.insert("kubernetes.io/change-cause".into(), format!("deploy {version}"));
    d.spec.template.spec.containers[0].image = format!("i:{version}");
}

/// Rollout history as `kubectl rollout history/undo` read it: each set carries the Deployment's
/// `change-cause`; the Deployment its new set's revision; a rollback makes the old set new again
/// under the next revision (its earlier one in `revision-history`); old empty sets beyond
/// `revisionHistoryLimit` go once a rollout is complete.
#[tokio::test(start_paused = true)]
async fn rollbacks_renumber_the_revived_set_and_history_beyond_the_limit_is_dropped() {
    let fake = FakeClient::new();
    let mut d = deployment("web", 2);
    d.spec.revision_history_limit = Some(1);
    set_template(&mut d, "v1");
    fake.create(&d).await.unwrap();
    let task = tokio::spawn(super::deployment::run(fake.clone()));
    let revision = |rs: &ReplicaSet| rs.metadata.annotations.get("deployment.kubernetes.io/revision").cloned().unwrap_or_default();
    let set_of = |version: &str| fake.objects::<ReplicaSet>().into_iter().find(|rs| rs.spec.template.spec.containers[0].image == format!("i:{version}"));
    let settle = |version: &'static str, wanted_revision: &'static str| {
        let fake = fake.clone();
        async move {
            let deadline = Instant::now() + Duration::from_secs(60);
            loop {
                bind_and_make_ready(&fake).await;
                let d: Deployment = fake.get(&ObjectKey::namespaced("default", "web")).await.unwrap();
                let done = d.status.updated_replicas == 2 && d.status.replicas == 2 && d.status.available_replicas == 2;
                if done && d.metadata.annotations.get("deployment.kubernetes.io/revision").map(String::as_str) == Some(wanted_revision) {
                    return d;
                }
                assert!(Instant::now() < deadline, "rollout to {version} did not finish: {:?}", d.status);
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
        }
    };
    settle("v1", "1").await;
    let v1 = set_of("v1").unwrap();
    assert_eq!((revision(&v1).as_str(), v1.metadata.annotations.get("kubernetes.io/change-cause").map(String::as_str)), ("1", Some("deploy v1")));
    update_web(&fake, |d| set_template(d, "v2")).await;
    settle("v2", "2").await;
    // `rollout undo`: the template of revision 1 again.
    update_web(&fake, |d| set_template(d, "v1")).await;
    settle("v1", "3").await;
    let v1 = set_of("v1").unwrap();
    assert_eq!(revision(&v1), "3");
    assert_eq!(v1.metadata.annotations.get("deployment.kubernetes.io/revision-history").map(String::as_str), Some("1"));
    assert_eq!(fake.objects::<ReplicaSet>().len(), 2, "v2 stays: one old set is within the limit");
    update_web(&fake, |d| set_template(d, "v3")).await;
    settle("v3", "4").await;
    eventually("the oldest empty set is deleted", || (fake.objects::<ReplicaSet>().len() == 2).then_some(())).await;
    assert!(set_of("v2").is_none() && set_of("v1").is_some_and(|rs| revision(&rs) == "3"));
    task.abort();
}

/// A rollout that makes no progress for `progressDeadlineSeconds` reports `Progressing` False
/// with `ProgressDeadlineExceeded` (what `kubectl rollout status` stops on), and True again once a
/// pod moves.
#[tokio::test(start_paused = true)]
async fn a_rollout_without_progress_past_its_deadline_is_reported() {
    let fake = FakeClient::new();
    let mut d = deployment("web", 1);
    d.spec.progress_deadline_seconds = Some(30);
    fake.create(&d).await.unwrap();
    let task = tokio::spawn(super::deployment::run(fake.clone()));
    let progressing = || {
        let d: Deployment = fake.objects::<Deployment>().into_iter().next().unwrap();
        d.status.conditions.iter().find(|c| c.condition_type == "Progressing").map(|c| (c.status.clone(), c.reason.clone().unwrap_or_default(), c.last_update_time))
    };
    let (_, reason, _) = eventually("a Progressing condition", &progressing).await;
    assert_eq!(reason, "ReplicaSetUpdated");
    // The pod never gets ready; the condition's clock (the real one) is put 31 s back.
    loop {
        let mut d: Deployment = fake.get(&ObjectKey::namespaced("default", "web")).await.unwrap();
        for c in d.status.conditions.iter_mut().filter(|c| c.condition_type == "Progressing") {
            c.last_update_time = Some(Time::from_unix_seconds(Time::now().unix_seconds() - 31));
        }
        if fake.replace_status(&d).await.is_ok() {
            break;
        }
    }
    let timed_out = eventually("the deadline is exceeded", || progressing().filter(|(s, _, _)| s == "False")).await;
    assert_eq!(timed_out.1, "ProgressDeadlineExceeded");
    tokio::time::sleep(super::deployment::RESYNC * 2).await;
    assert_eq!(progressing().map(|p| p.1).as_deref(), Some("ProgressDeadlineExceeded"), "it stays timed out while nothing moves");
    bind_and_make_ready(&fake).await;
    let done = eventually("the rollout completes", || progressing().filter(|(s, _, _)| s == "True")).await;
    assert_eq!(done.1, "NewReplicaSetAvailable");
    task.abort();
}

/// `delete --cascade=orphan` and apply again: the new Deployment adopts the set its selector
/// matches (no second set, no new pods), and the set its pods.
#[tokio::test(start_paused = true)]
async fn a_new_deployment_adopts_the_orphaned_set_and_its_pods() {
    let fake = FakeClient::new();
    fake.create(&deployment("web", 2)).await.unwrap();
    let task = tokio::spawn(super::deployment::run(fake.clone()));
    eventually("two pods", || (fake.objects::<Pod>().len() == 2).then_some(())).await;
    bind_and_make_ready(&fake).await;
    task.abort();
    // What the API server's Orphan propagation leaves: the owner gone, the references removed.
    let old_uid = fake.objects::<Deployment>()[0].metadata.uid.clone();
    fake.delete::<Deployment>(&ObjectKey::namespaced("default", "web")).await.unwrap();
    let set = fake.objects::<ReplicaSet>().remove(0);
    let mut orphan = set.clone();
    orphan.metadata.owner_references.clear();
    fake.replace(&orphan).await.unwrap();
    for mut p in fake.objects::<Pod>() {
        p.metadata.owner_references.clear();
        fake.replace(&p).await.unwrap();
    }
    let pods_before: Vec<String> = fake.objects::<Pod>().into_iter().map(|p| p.metadata.name).collect();
    let created = fake.create(&deployment("web", 2)).await.unwrap();
    assert_ne!(created.metadata.uid, old_uid);
    let task = tokio::spawn(super::deployment::run(fake.clone()));
    eventually("the set is adopted", || {
        fake.objects::<ReplicaSet>().into_iter().find(|rs| rs.metadata.controller_owner().is_some_and(|o| o.uid == created.metadata.uid))
    })
    .await;
    eventually("its pods are adopted", || {
        fake.objects::<Pod>().iter().all(|p| p.metadata.controller_owner().is_some_and(|o| o.uid == set.metadata.uid)).then_some(())
    })
    .await;
    tokio::time::sleep(super::deployment::RESYNC * 2).await;
    assert_eq!(fake.objects::<ReplicaSet>().len(), 1, "no second set");
    let pods_after: Vec<String> = fake.objects::<Pod>().into_iter().map(|p| p.metadata.name).collect();
    assert_eq!(pods_after, pods_before, "the same pods, none made or deleted");
    task.abort();
}

/// Node IPAM: each Node gets the lowest free /24 of the cluster CIDR, never one another holds;
/// a full block leaves a Node waiting (with a `CIDRNotAvailable` event) until a range frees up
/// when a Node goes.
#[tokio::test(start_paused = true)]
async fn every_node_gets_a_pod_range_of_its_own_and_a_gone_nodes_range_is_given_again() {
    let fake = FakeClient::new();
    let mut given = Node::new("w0");
    given.spec.pod_cidr = Some("100.64.1.0/24".into());
    fake.create(&given).await.unwrap();
    fake.create(&Node::new("w1")).await.unwrap();
    fake.create(&Node::new("w2")).await.unwrap();
    let task = tokio::spawn(super::node_ipam::run(fake.clone(), "100.64.0.0/23".parse().unwrap()));
    let range = |name: &str| fake.objects::<Node>().into_iter().find(|n| n.metadata.name == name).and_then(|n| n.spec.pod_cidr);
    let w1 = eventually("w1 gets the free range", || range("w1")).await;
    assert_eq!(w1, "100.64.0.0/24", "the lowest one w0 does not hold");
    let node = fake.objects::<Node>().into_iter().find(|n| n.metadata.name == "w1").unwrap();
    assert_eq!(node.spec.pod_cidrs, vec![w1.clone()]);
    eventually("w2 is told there is none", || {
        fake.objects::<crate::api::event::Event>().into_iter().find(|e| e.reason == "CIDRNotAvailable" && e.involved_object.name == "w2").map(drop)
    })
    .await;
    assert_eq!(range("w2"), None, "a /23 holds two nodes");
    fake.delete::<Node>(&ObjectKey::cluster("w0")).await.unwrap();
    let w2 = eventually("w2 gets w0's range once w0 is gone", || range("w2")).await;
    assert_eq!(w2, "100.64.1.0/24");
    task.abort();
}
