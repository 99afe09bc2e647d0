use super::*;
use crate::api::node::CONTROL_PLANE;
use crate::api::OwnerReference;
use crate::api::pod::{Container, ContainerPort, PodSpec, ResourceRequirements};

fn node(name: &str, cpu: u64, mem_mi: u64, zone: &str) -> NodeInfo {
    NodeInfo {
        name: name.into(),
        labels: [(ZONE_LABEL.to_string(), zone.to_string())].into(),
        zone: Some(zone.to_string()),
        ready: true,
        allocatable: ResourceAmounts { cpu_millis: cpu, memory_bytes: mem_mi << 20 },
        ..Default::default()
    }
}

fn pod(name: &str, cpu: &str, mem: &str, owner: Option<&str>) -> Pod {
    let mut p = Pod::default();
    p.metadata.name = name.into();
    if let Some(uid) = owner {
        p.metadata.owner_references.push(OwnerReference { kind: "ReplicaSet".into(), name: "rs".into(), uid: uid.into(), controller: Some(true), ..Default::default() });
    }
    p.spec.containers.push(Container {
        name: "c".into(),
        image: "i".into(),
        resources: ResourceRequirements { requests: [("cpu".to_string(), Quantity::from(cpu)), ("memory".to_string(), Quantity::from(mem))].into(), limits: BTreeMap::new(), ..Default::default() },
        ..Default::default()
    });
    p
}

#[test]
fn a_pod_that_fits_nowhere_gets_the_reasons_counted_per_node() {
    let nodes = [node("a", 2000, 512, "z1"), node("b", 2000, 512, "z1"), node("c", 2000, 512, "z2")];
    assert_eq!(place(&pod("big", "100m", "1Gi", None), &nodes), Err("0/3 nodes are available: 3 Insufficient memory.".into()));
    let mut mixed = nodes.clone();
    mixed[0].ready = false;
    mixed[1].unschedulable = true;
    assert_eq!(
        place(&pod("big", "100m", "1Gi", None), &mixed),
        Err("0/3 nodes are available: 1 node(s) were not ready, 1 node(s) were unschedulable, 3 Insufficient memory.".into())
    );
}

#[test]
fn requests_of_bound_pods_use_up_allocatable() {
    let mut nodes = vec![node("a", 1000, 1024, "z1")];
    let decisions = place_all(&[pod("p1", "600m", "10Mi", None), pod("p2", "600m", "10Mi", None)], &mut nodes);
    assert_eq!(decisions[0], Ok("a".into()));
    assert_eq!(decisions[1], Err("0/1 nodes are available: 1 Insufficient cpu.".into()));
}

#[test]
fn replicas_of_one_owner_spread_over_nodes_and_zones() {
    let mut nodes = vec![node("a", 4000, 4096, "z1"), node("b", 4000, 4096, "z1"), node("c", 4000, 4096, "z2")];
    let pods: Vec<Pod> = (0..3).map(|i| pod(&format!("web-{i}"), "100m", "16Mi", Some("rs-1"))).collect();
    let mut placed: Vec<String> = place_all(&pods, &mut nodes).into_iter().map(Result::unwrap).collect();
    placed.sort();
    assert_eq!(placed, ["a", "b", "c"]);
}

#[test]
fn the_least_requested_node_wins() {
    let mut busy = node("a", 2000, 2048, "z1");
    busy.requested = ResourceAmounts { cpu_millis: 1500, memory_bytes: 1500 << 20 };
    let nodes = [busy, node("b", 2000, 2048, "z1")];
    assert_eq!(place(&pod("p", "100m", "10Mi", None), &nodes), Ok("b".into()));
}

#[test]
fn node_selector_and_host_ports_filter_nodes() {
    let mut a = node("a", 2000, 2048, "z1");
    a.labels.insert("disk".into(), "ssd".into());
    a.host_ports.insert((8080, "TCP".into()));
    let nodes = [a, node("b", 2000, 2048, "z1")];
    let mut p = pod("p", "100m", "10Mi", None);
    p.spec.node_selector.insert("disk".into(), "ssd".into());
    assert_eq!(place(&p, &nodes), Ok("a".into()));
    p.spec.containers[0].ports.push(ContainerPort { container_port: 80, host_port: Some(8080), ..Default::default() });
    assert_eq!(
        place(&p, &nodes),
        Err("0/2 nodes are available: 1 node(s) didn't have free ports for the requested pod ports, 1 node(s) didn't match Pod's node affinity/selector.".into())
    );
}

/// `pod` with labels and an `affinity` / `topologySpreadConstraints` given as Kubernetes JSON.
fn with(mut p: Pod, labels: &[(&str, &str)], spec: serde_json::Value) -> Pod {
    p.metadata.labels = labels.iter().map(|(k, v)| (k.to_string(), v.to_string())).collect();
    let extra: PodSpec = serde_json::from_value(spec).unwrap();
    p.spec.affinity = extra.affinity;
    p.spec.topology_spread_constraints = extra.topology_spread_constraints;
    p
}

fn hostname(mut n: NodeInfo) -> NodeInfo {
    n.labels.insert("kubernetes.io/hostname".into(), n.name.clone());
    n
}

#[test]
fn required_node_affinity_filters_and_preferred_node_affinity_scores() {
    let nodes = [node("a", 4000, 4096, "z1"), node("b", 4000, 4096, "z2"), node("c", 4000, 4096, "z3")];
    let required = with(pod("r", "100m", "16Mi", None), &[], serde_json::json!({"affinity": {"nodeAffinity": {"requiredDuringSchedulingIgnoredDuringExecution": {
        "nodeSelectorTerms": [{"matchExpressions": [{"key": ZONE_LABEL, "operator": "NotIn", "values": ["z1", "z2"]}]}]}}}}));
    assert_eq!(place(&required, &nodes), Ok("c".into()));
    let nowhere = with(pod("n", "100m", "16Mi", None), &[], serde_json::json!({"affinity": {"nodeAffinity": {"requiredDuringSchedulingIgnoredDuringExecution": {
        "nodeSelectorTerms": [{"matchExpressions": [{"key": ZONE_LABEL, "operator": "In", "values": ["z9"]}]}]}}}}));
    assert_eq!(place(&nowhere, &nodes), Err("0/3 nodes are available: 3 node(s) didn't match Pod's node affinity/selector.".into()));
    let preferred = with(pod("p", "100m", "16Mi", None), &[], serde_json::json!({"affinity": {"nodeAffinity": {"preferredDuringSchedulingIgnoredDuringExecution": [
        {"weight": 50, "preference": {"matchExpressions": [{"key": ZONE_LABEL, "operator": "In", "values": ["z2"]}]}}]}}}));
    assert_eq!(place(&preferred, &nodes), Ok("b".into()));
}

#[test]
fn required_pod_anti_affinity_keeps_replicas_apart_and_existing_pods_keep_theirs() {
    let mut nodes = vec![hostname(node("a", 4000, 4096, "z1")), hostname(node("b", 4000, 4096, "z1"))];
    let apart = serde_json::json!({"affinity": {"podAntiAffinity": {"requiredDuringSchedulingIgnoredDuringExecution": [
        {"labelSelector": {"matchLabels": {"app": "db"}}, "topologyKey": "kubernetes.io/hostname"}]}}});
    let pods: Vec<Pod> = (0..3).map(|i| with(pod(&format!("db-{i}"), "1m", "1Mi", None), &[("app", "db")], apart.clone())).collect();
    let decisions = place_all(&pods, &mut nodes);
    let mut placed: Vec<String> = decisions[..2].iter().cloned().map(Result::unwrap).collect();
    placed.sort();
    assert_eq!(placed, ["a", "b"]);
    assert_eq!(decisions[2], Err("0/2 nodes are available: 2 node(s) didn't match pod anti-affinity rules.".into()));
    // A plain pod with the label is kept out too: the placed pods' anti-affinity selects it.
    let plain = with(pod("db-plain", "1m", "1Mi", None), &[("app", "db")], serde_json::json!({}));
    assert!(place(&plain, &nodes).is_err());
    // By zone: both nodes are one domain.
    let mut zoned = vec![node("a", 4000, 4096, "z1"), node("b", 4000, 4096, "z1"), node("c", 4000, 4096, "z2")];
    let by_zone = serde_json::json!({"affinity": {"podAntiAffinity": {"requiredDuringSchedulingIgnoredDuringExecution": [
        {"labelSelector": {"matchExpressions": [{"key": "app", "operator": "In", "values": ["web"]}]}, "topologyKey": ZONE_LABEL}]}}});
    let web: Vec<Pod> = (0..3).map(|i| with(pod(&format!("web-{i}"), "1m", "1Mi", None), &[("app", "web")], by_zone.clone())).collect();
    let decisions = place_all(&web, &mut zoned);
    assert_eq!(decisions.iter().filter(|d| d.is_ok()).count(), 2, "{decisions:?}");
}

#[test]
fn required_pod_affinity_follows_the_selected_pods_and_lets_the_first_of_a_set_land() {
    let mut nodes = vec![hostname(node("a", 4000, 4096, "z1")), hostname(node("b", 4000, 4096, "z2"))];
    nodes[1].add_pod(&with(pod("cache", "1m", "1Mi", None), &[("app", "cache")], serde_json::json!({})));
    let near = serde_json::json!({"affinity": {"podAffinity": {"requiredDuringSchedulingIgnoredDuringExecution": [
        {"labelSelector": {"matchLabels": {"app": "cache"}}, "topologyKey": ZONE_LABEL}]}}});
    assert_eq!(place(&with(pod("web", "1m", "1Mi", None), &[("app", "web")], near), &nodes), Ok("b".into()));
    let missing = serde_json::json!({"affinity": {"podAffinity": {"requiredDuringSchedulingIgnoredDuringExecution": [
        {"labelSelector": {"matchLabels": {"app": "nothing"}}, "topologyKey": ZONE_LABEL}]}}});
    assert_eq!(place(&with(pod("lost", "1m", "1Mi", None), &[("app", "web")], missing.clone()), &nodes), Err("0/2 nodes are available: 2 node(s) didn't match pod affinity rules.".into()));
    assert!(place(&with(pod("first", "1m", "1Mi", None), &[("app", "nothing")], missing), &nodes).is_ok(), "a pod matching its own term may start the set");
}

#[test]
fn topology_spread_do_not_schedule_bounds_the_skew_between_zones() {
    let mut nodes = vec![node("a", 4000, 4096, "z1"), node("b", 4000, 4096, "z1"), node("c", 4000, 4096, "z2")];
    // Make zone z1 the least requested, so that without the constraint every pod would go there.
    nodes[2].requested = ResourceAmounts { cpu_millis: 3000, memory_bytes: 3 << 30 };
    let spread = serde_json::json!({"topologySpreadConstraints": [{"maxSkew": 1, "topologyKey": ZONE_LABEL, "whenUnsatisfiable": "DoNotSchedule", "labelSelector": {"matchLabels": {"app": "api"}}}]});
    let pods: Vec<Pod> = (0..4).map(|i| with(pod(&format!("api-{i}"), "1m", "1Mi", None), &[("app", "api")], spread.clone())).collect();
    let decisions: Vec<String> = place_all(&pods, &mut nodes).into_iter().map(Result::unwrap).collect();
    let in_z2 = decisions.iter().filter(|n| *n == "c").count();
    assert_eq!(in_z2, 2, "two of four in each zone: {decisions:?}");
    // A node without the topology key is not a candidate for a hard constraint.
    let mut unlabelled = node("d", 4000, 4096, "z3");
    unlabelled.labels.clear();
    assert_eq!(place(&pods[0], &[unlabelled]), Err("0/1 nodes are available: 1 node(s) didn't match pod topology spread constraints.".into()));
}

#[test]
fn a_node_without_requests_takes_pods_without_requests() {
    let nodes = [node("a", 0, 0, "z1")];
    let mut p = pod("p", "0", "0", None);
    p.spec.containers[0].resources = ResourceRequirements::default();
    assert_eq!(place(&p, &nodes), Ok("a".into()));
}

#[test]
fn masters_and_tainted_nodes_take_only_pods_that_tolerate_them() {
    let mut master = Node::new("m");
    master.spec.taints.push(crate::api::node::Taint { key: CONTROL_PLANE.into(), effect: "NoSchedule".into(), ..Default::default() });
    master.status.allocatable = [("cpu".to_string(), "2".to_string()), ("memory".to_string(), "1Gi".to_string())].into();
    master.status.conditions.push(crate::api::NodeCondition { condition_type: "Ready".into(), status: "True".into(), ..Default::default() });
    let nodes = [NodeInfo::from_node(&master)];
    let mut p = pod("p", "100m", "10Mi", None);
    assert_eq!(place(&p, &nodes), Err("0/1 nodes are available: 1 node(s) had untolerated taint(s).".into()));
    p.spec.tolerations.push(crate::api::pod::Toleration { key: Some(CONTROL_PLANE.into()), operator: Some("Exists".into()), ..Default::default() });
    assert_eq!(place(&p, &nodes), Ok("m".into()));
}

#[test]
fn a_thousand_pods_of_ten_owners_spread_evenly_over_a_thousand_nodes() {
    let mut nodes: Vec<NodeInfo> = (0..1000).map(|i| node(&format!("n{i:04}"), 64_000, 256 * 1024, &format!("z{}", i % 3))).collect();
    let pods: Vec<Pod> = (0..1_000).map(|i| pod(&format!("p{i}"), "100m", "64Mi", Some(&format!("rs-{}", i % 10)))).collect();
    let started = std::time::Instant::now();
    let decisions = place_all(&pods, &mut nodes);
    let elapsed = started.elapsed();
    assert!(decisions.iter().all(Result::is_ok));
    let most = nodes.iter().map(|n| n.owned.values().copied().max().unwrap_or(0)).max().unwrap();
    assert_eq!(most, 1, "no node holds two pods of one owner while others hold none");
    eprintln!("placed 1000 pods on 1000 nodes in {elapsed:?} ({:.0} pods/s)", 1_000.0 / elapsed.as_secs_f64());
}

/// The scheduler on the fake API and tokio's paused clock: failing binds back the pass off (0.5 s,
/// then 1 s), a new pod is placed at once, and a pod that fits nowhere is marked and then placed
/// as soon as a node comes.
#[tokio::test(start_paused = true)]
async fn the_scheduler_on_the_fake_api_backs_off_failing_binds_and_places_pods_as_they_come() {
    use crate::api::resource::PODS;
    use crate::runtime::fake::FakeClient;
    use tokio::time::Instant;
    async fn until(what: &str, within: Duration, check: impl Fn() -> bool) -> Duration {
        let started = Instant::now();
        while !check() {
            assert!(started.elapsed() < within, "not within {within:?}: {what}");
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        started.elapsed()
    }
    let fake = FakeClient::new();
    fake.ready_node("w1").await;
    let named = |name: &str, cpu: &str| {
        let mut p = pod(name, cpu, "64Mi", None);
        p.metadata.namespace = Some("default".into());
        p
    };
    let task = tokio::spawn(run(fake.clone()));
    tokio::time::sleep(Duration::from_secs(1)).await;
    fake.fail_next("replace", &PODS, 2, 500);
    fake.create(&named("p1", "100m")).await.unwrap();
    let node_of = |name: &str| fake.objects::<Pod>().into_iter().find(|p| p.metadata.name == name).and_then(|p| p.spec.node_name);
    let took = until("p1 is bound", Duration::from_secs(10), || node_of("p1").is_some()).await;
    assert!(took >= Duration::from_millis(1500) && took < RESYNC, "bound after two back-offs, before a resync: {took:?}");

    // A new pod: placed at once.
    fake.create(&named("p2", "100m")).await.unwrap();
    until("p2 is bound at once", Duration::from_millis(200), || node_of("p2").is_some()).await;

    // A pod too big for w1: marked unschedulable; a bigger node comes and it is placed there.
    fake.create(&named("big", "3")).await.unwrap();
    let condition = || fake.objects::<Pod>().into_iter().find(|p| p.metadata.name == "big").and_then(|p| p.condition("PodScheduled").cloned());
    until("big is marked unschedulable", Duration::from_millis(200), || condition().is_some_and(|c| c.status == "False")).await;
    let mut bigger = crate::api::Node::new("w2");
    bigger.status.allocatable = [("cpu".to_string(), "8".to_string()), ("memory".to_string(), "8Gi".to_string())].into();
    bigger.status.conditions = fake.objects::<crate::api::Node>()[0].status.conditions.clone();
    let created = fake.create(&bigger).await.unwrap();
    fake.replace_status(&crate::api::Node { metadata: created.metadata, ..bigger }).await.unwrap();
    until("big is bound to the new node", Duration::from_millis(200), || node_of("big").as_deref() == Some("w2")).await;
    // Each decision is an event on its pod, as kubectl describe shows them.
    tokio::time::sleep(Duration::from_millis(50)).await;
    let events = fake.objects::<crate::api::event::Event>();
    let about = |pod: &str, reason: &str| events.iter().find(|e| e.involved_object.name == pod && e.reason == reason).map(|e| e.message.clone());
    assert_eq!(about("p1", "Scheduled").as_deref(), Some("Successfully assigned default/p1 to w1"));
    assert!(about("big", "FailedScheduling").is_some_and(|m| m.contains("Insufficient cpu")), "{events:?}");
    assert!(about("big", "Scheduled").is_some());
    assert!(events.iter().all(|e| e.source.component == "default-scheduler"));
    task.abort();
}
