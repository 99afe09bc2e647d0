//! The cloud controllers' decisions, and the service controller against the in-memory fake cloud.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::Arc;
use std::time::{Duration, Instant};

use super::machines::{assess, decide, settled, Action, Health};
use super::services::{self, Network};
use crate::api::node::NodeCondition;
use crate::api::service::{Service, ServicePort};
use crate::api::{Node, ObjectMeta};
use crate::cloud::fake::FakeCloud;
use crate::cloud::{owned_by, Cloud, Instance, InstanceState, Resilient, RetryPolicy, ROLE_TAG};

fn node(name: &str, instance: &str, ready: &str, worker: bool) -> Node {
    let mut n = Node { metadata: ObjectMeta { name: name.into(), ..ObjectMeta::default() }, ..Node::default() };
    if !worker {
        n.metadata.labels.insert("node-role.kubernetes.io/control-plane".into(), String::new());
    }
    n.spec.provider_id = Some(format!("aws:///us-east-1a/{instance}"));
    n.status.conditions.push(NodeCondition { condition_type: "Ready".into(), status: ready.into(), ..NodeCondition::default() });
    n
}

fn lb_service(name: &str, port: i64, node_port: Option<i64>) -> Service {
    let mut s = Service { metadata: ObjectMeta::namespaced("default", name), ..Service::default() };
    s.spec.service_type = Some("LoadBalancer".into());
    s.spec.ports.push(ServicePort { port, node_port, ..ServicePort::default() });
    s
}

fn instance(id: &str) -> Instance {
    Instance {
        id: id.into(),
        state: InstanceState::Running,
        instance_type: "t3.small".into(),
        image_id: "ami-1".into(),
        subnet_id: None,
        private_ip: None,
        public_ip: None,
        instance_profile: None,
        source_dest_check: true,
        tags: Default::default(),
    }
}

#[test]
fn only_ready_schedulable_workers_take_balancer_traffic() {
    let mut cordoned = node("w3", "i-3", "True", true);
    cordoned.spec.unschedulable = true;
    let nodes = vec![node("m", "i-0", "True", false), node("w1", "i-1", "True", true), node("w2", "i-2", "Unknown", true), cordoned];
    assert_eq!(services::targets(&nodes), BTreeSet::from(["i-1".to_string()]));
}

#[test]
fn balancer_names_fit_aws_limits_and_differ_per_cluster() {
    let a = services::balancer_name("a-cluster-name-of-twenty-eight", "default/web");
    assert!(a.len() <= 23 && !a.contains("--"), "{a}");
    assert_ne!(a, services::balancer_name("another", "default/web"));
    assert_eq!(a, services::balancer_name("a-cluster-name-of-twenty-eight", "default/web"), "stable across passes");
}

/// A VPC with one subnet and two running workers.
async fn network(cloud: &dyn Cloud) -> (Network, Vec<String>) {
    let vpc = cloud.create_vpc("10.9.0.0/16".parse().unwrap(), &owned_by("c1")).await.unwrap();
    let subnet = cloud.create_subnet(&vpc.id, "us-east-1a", "10.9.0.0/20".parse().unwrap(), &owned_by("c1")).await.unwrap();
    cloud.import_key_pair("k", "ssh-ed25519 AAAA", &owned_by("c1")).await.unwrap();
    let image = cloud.image("ami-0debian12000001").await.unwrap();
    let mut ids = Vec::new();
    for n in 0..2 {
        let request = crate::cloud::LaunchRequest {
            image: image.clone(),
            instance_type: "t3.small".into(),
            subnet_id: subnet.id.clone(),
            security_group_ids: vec![],
            key_name: "k".into(),
            disk_gb: 8,
            client_token: format!("t{n}"),
            user_data: None,
            instance_profile: None,
            tags: owned_by("c1"),
        };
        ids.push(cloud.run_instance(&request).await.unwrap().id);
    }
    while cloud.instances_by_id(&ids).await.unwrap().iter().any(|i| i.state != InstanceState::Running) {}
    (Network { vpc_id: vpc.id, subnet_ids: vec![subnet.id] }, ids)
}

#[tokio::test(start_paused = true)]
async fn a_load_balancer_service_gets_a_tagged_balancer_that_follows_the_workers_and_goes_with_it() {
    let fake = Arc::new(FakeCloud::new());
    let cloud = Resilient::new(fake.clone(), RetryPolicy::default());
    let (net, ids) = network(&cloud).await;
    let svc = lb_service("web", 80, Some(30080));
    let targets: BTreeSet<String> = ids.iter().cloned().collect();

    // No node port yet: nothing is made.
    let mut happened = Vec::new();
    let none = services::reconcile(&cloud, "c1", &net, &[lb_service("web", 80, None)], &targets, &mut happened).await.unwrap();
    assert!(none.is_empty() && happened.is_empty());

    let addresses = services::reconcile(&cloud, "c1", &net, std::slice::from_ref(&svc), &targets, &mut happened).await.unwrap();
    let reasons: Vec<&str> = happened.drain(..).map(|(key, reason, _)| { assert_eq!(key, "default/web"); reason }).collect();
    assert_eq!(reasons, ["EnsuringLoadBalancer", "EnsuredLoadBalancer"], "the events Kubernetes' service controller records");
    let mut selector = owned_by("c1");
    selector.insert(ROLE_TAG.into(), services::ROLE.into());
    let lbs = cloud.load_balancers(&selector).await.unwrap();
    assert_eq!(lbs.len(), 1);
    assert_eq!(lbs[0].tags.get(services::SERVICE_TAG).map(String::as_str), Some("default/web"));
    assert_eq!(addresses.get("default/web"), Some(&lbs[0].dns_name));
    let tgs = cloud.target_groups(&selector).await.unwrap();
    assert_eq!((tgs.len(), tgs[0].port), (1, 30080), "one target group on the NodePort");
    let registered: BTreeSet<String> = cloud.target_health(&tgs[0].arn).await.unwrap().into_iter().map(|t| t.instance_id).collect();
    assert_eq!(registered, targets);
    let listeners = cloud.listeners(&lbs[0].arn).await.unwrap();
    assert_eq!((listeners.len(), listeners[0].port), (1, 80));
    assert_eq!(cloud.security_groups(&selector).await.unwrap().len(), 1, "the balancer has its own group");

    // A second pass changes nothing; a worker leaving is deregistered.
    let calls = fake.calls().len();
    services::reconcile(&cloud, "c1", &net, std::slice::from_ref(&svc), &targets, &mut happened).await.unwrap();
    assert!(happened.is_empty(), "{happened:?}");
    let mutations: Vec<String> = fake.calls()[calls..].iter().filter(|c| c.starts_with("create") || c.starts_with("register") || c.starts_with("delete")).cloned().collect();
    assert!(mutations.is_empty(), "an unchanged service changes nothing: {mutations:?}");
    let fewer = BTreeSet::from([ids[1].clone()]);
    services::reconcile(&cloud, "c1", &net, std::slice::from_ref(&svc), &fewer, &mut happened).await.unwrap();
    assert_eq!(happened.drain(..).map(|(_, r, _)| r).collect::<Vec<_>>(), ["UpdatedLoadBalancer"]);
    let registered: BTreeSet<String> = cloud.target_health(&tgs[0].arn).await.unwrap().into_iter().map(|t| t.instance_id).collect();
    assert_eq!(registered, fewer);

    // Deregistering a target already gone (the controller and `scale` race) still deregisters the rest.
    services::reconcile(&cloud, "c1", &net, std::slice::from_ref(&svc), &targets, &mut happened).await.unwrap();
    cloud.deregister_targets(&tgs[0].arn, &[ids[0].clone()], 30080).await.unwrap();
    cloud.deregister_targets(&tgs[0].arn, &ids, 30080).await.unwrap();
    assert!(cloud.target_health(&tgs[0].arn).await.unwrap().is_empty());

    // The service gone: balancer, listener, target group and security group go too.
    services::reconcile(&cloud, "c1", &net, &[], &fewer, &mut happened).await.unwrap();
    assert!(cloud.load_balancers(&selector).await.unwrap().is_empty());
    assert!(cloud.target_groups(&selector).await.unwrap().is_empty());
    assert!(cloud.security_groups(&selector).await.unwrap().is_empty());
}

fn judged(health: &[Health]) -> Vec<super::machines::Machine> {
    health.iter().enumerate().map(|(i, h)| super::machines::Machine { instance: instance(&format!("i-{i}")), node: Some(format!("w{i}")), health: h.clone() }).collect()
}

#[test]
fn a_short_pool_launches_and_an_unhealthy_machine_is_replaced_one_at_a_time() {
    let bad = Health::Unhealthy("node w1 not Ready for 70s".into());
    assert_eq!(decide(3, &judged(&[Health::Healthy, Health::Healthy]), 50), Action::Launch(1));
    assert_eq!(decide(2, &judged(&[Health::Healthy, Health::Healthy]), 50), Action::Nothing);
    assert_eq!(decide(1, &judged(&[Health::Healthy, Health::Healthy]), 50), Action::Nothing, "never removes: scale does");
    assert_eq!(decide(2, &judged(&[Health::Healthy, Health::Starting]), 50), Action::Nothing);
    assert!(matches!(decide(3, &judged(&[Health::Healthy, bad.clone(), bad.clone()]), 50), Action::Blocked(m) if m.contains("2 of 3") && m.contains("50%")));
    assert_eq!(
        decide(2, &judged(&[Health::Healthy, bad.clone()]), 50),
        Action::Replace { instance: "i-1".into(), reason: "node w1 not Ready for 70s".into() },
        "1 of 2 is exactly the limit"
    );
}

#[test]
fn a_replacement_waits_until_two_passes_see_the_same_unhealthy_machines() {
    let replace = Action::Replace { instance: "i-1".into(), reason: "the machine failed its status checks".into() };
    let one = BTreeSet::from(["i-1".to_string()]);
    let two = BTreeSet::from(["i-1".to_string(), "i-2".to_string()]);
    assert_eq!(settled(replace.clone(), &one, None), Action::Nothing, "first seen unhealthy");
    assert_eq!(settled(replace.clone(), &one, Some(&BTreeSet::new())), Action::Nothing);
    assert_eq!(settled(replace.clone(), &one, Some(&one)), replace, "the same two passes running");
    // Two of three die a second apart: the first pass sees one of them, the next both (and blocks).
    assert_eq!(settled(replace.clone(), &two, Some(&one)), Action::Nothing);
    let blocked = Action::Blocked("2 of 3".into());
    assert_eq!(settled(blocked.clone(), &two, Some(&one)), blocked, "blocking needs no second look");
    assert_eq!(settled(Action::Launch(1), &BTreeSet::new(), None), Action::Launch(1));
}

#[test]
fn machines_are_judged_by_the_clouds_word_their_own_records_and_node_readiness_only_when_asked() {
    let timeout = Duration::from_secs(60);
    let t0 = Instant::now();
    let later = t0 + Duration::from_secs(61);
    let instances = vec![instance("i-1"), instance("i-2"), instance("i-3"), instance("i-4")];
    let mut notready = node("w2", "i-2", "False", true);
    notready.status.conditions[0].last_transition_time = Some(crate::api::time::Time::from_unix_seconds(0));
    let nodes = vec![node("w1", "i-1", "True", true), notready, node("w3", "i-3", "True", true)];
    let first_seen: BTreeMap<String, Instant> = instances.iter().map(|i| (i.id.clone(), t0)).collect();
    let impaired = BTreeSet::from(["i-3".to_string()]);

    let early = assess(&instances, &nodes, &impaired, &first_seen, t0, Some(timeout));
    let health: Vec<&Health> = early.iter().map(|m| &m.health).collect();
    assert_eq!(health[0], &Health::Healthy);
    assert_eq!(health[1], &Health::NotReady, "just seen: not judged yet");
    assert!(matches!(health[2], Health::Unhealthy(r) if r.contains("status checks")), "a failed status check counts at once");
    assert_eq!(health[3], &Health::Starting, "no node yet, within the time to join");

    let late = assess(&instances, &nodes, &impaired, &first_seen, later, Some(timeout));
    assert!(matches!(&late[1].health, Health::Unhealthy(r) if r.contains("not Ready")), "the spec asked for NotReady machines to be replaced");
    assert_eq!(late[3].health, Health::Starting, "a machine may take the join timeout to join");
    // By default the node's own word never gets its machine replaced: a partition or a forged
    // Node with the victim's providerID and Ready=False changes nothing in the cloud.
    let by_default = assess(&instances, &nodes, &impaired, &first_seen, t0 + Duration::from_secs(3600), None);
    assert_eq!(by_default[1].health, Health::NotReady);
    assert!(matches!(&by_default[2].health, Health::Unhealthy(r) if r.contains("status checks")));
    let much_later = assess(&instances, &nodes, &impaired, &first_seen, t0 + super::machines::JOIN_TIMEOUT, None);
    assert!(matches!(&much_later[3].health, Health::Unhealthy(r) if r.contains("no node joined")), "the controller's own record of the launch counts");
}

#[test]
fn nodes_of_gone_machines_and_pods_of_gone_nodes_are_found() {
    let nodes = vec![node("w1", "i-1", "True", true), node("w2", "i-2", "True", true)];
    let live = BTreeSet::from(["i-1".to_string()]);
    let orphaned: Vec<&str> = super::nodes::orphaned(&nodes, &live).iter().map(|n| n.metadata.name.as_str()).collect();
    assert_eq!(orphaned, vec!["w2"]);
    let mut on_w2 = crate::api::pod::Pod::default();
    on_w2.spec.node_name = Some("w2".into());
    let unbound = crate::api::pod::Pod::default();
    let pods = vec![on_w2, unbound];
    let names = BTreeSet::from(["w1".to_string()]);
    assert_eq!(super::nodes::stranded(&pods, &names).len(), 1, "only bound pods of missing nodes");
}

#[tokio::test(start_paused = true)]
async fn a_pool_resize_queues_a_machine_pass_at_once_but_its_status_writes_do_not() {
    use crate::api::machinepool::MachinePool;
    use crate::runtime::fake::FakeClient;
    use crate::runtime::{Client, Controller, ObjectKey, Store};
    let fake = FakeClient::new();
    fake.create(&MachinePool::new("default", 2)).await.unwrap();
    let pools: Store<MachinePool> = Store::reflect(fake.clone(), None, Default::default());
    let controller = Controller::new("test").watches(&pools, super::machines::resize_trigger(ObjectKey::cluster("cloud")));
    let queue = controller.queue();
    let passes = Arc::new(std::sync::atomic::AtomicUsize::new(0));
    let task = tokio::spawn(controller.run(
        |_, passes: Arc<std::sync::atomic::AtomicUsize>| async move {
            passes.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
            Ok::<_, String>(crate::runtime::Action::AwaitChange)
        },
        passes.clone(),
    ));
    let count = || passes.load(std::sync::atomic::Ordering::SeqCst);
    tokio::time::sleep(Duration::from_secs(1)).await;
    assert_eq!(count(), 1, "the first listing is one pass");

    // The controller writing the pool's status: no pass.
    let status = serde_json::json!({ "status": { "replicas": 2, "readyReplicas": 2 } });
    fake.patch_status::<MachinePool>(&ObjectKey::cluster("default"), &status).await.unwrap();
    tokio::time::sleep(Duration::from_secs(1)).await;
    assert_eq!(count(), 1, "a status write is no resize");

    // `scale` changing the desired size: a pass at once.
    fake.patch::<MachinePool>(&ObjectKey::cluster("default"), &serde_json::json!({ "spec": { "replicas": 5 } })).await.unwrap();
    tokio::time::sleep(Duration::from_millis(100)).await;
    assert_eq!(count(), 2, "a resize queues a pass");

    // A new pool is a change too.
    fake.create(&MachinePool::new("gpu", 1)).await.unwrap();
    tokio::time::sleep(Duration::from_millis(100)).await;
    assert_eq!(count(), 3, "a new pool queues a pass");
    assert!(queue.is_empty());
    task.abort();
}

/// The node controller on the fake API and the fake cloud: a node whose machine is terminated
/// goes with its pods, every 2 s; a failing cloud backs the pass off.
#[tokio::test(start_paused = true)]
async fn the_node_controller_deletes_nodes_of_terminated_machines_requeues_and_backs_off_on_cloud_errors() {
    use crate::api::pod::Pod;
    use crate::cloud::ErrorKind;
    use crate::runtime::fake::FakeClient;
    use crate::runtime::{Client, ObjectKey, Store};
    let cloud = Arc::new(FakeCloud::new());
    let (net, _) = network(cloud.as_ref()).await;
    let _ = net;
    let fake = FakeClient::new();
    let stores = super::Stores {
        services: Store::reflect(fake.clone(), None, Default::default()),
        nodes: Store::reflect(fake.clone(), None, Default::default()),
        pods: Store::reflect(fake.clone(), None, Default::default()),
        pools: Store::reflect(fake.clone(), None, Default::default()),
    };
    let ctx = Arc::new(super::Context::new(cloud.clone(), "c1".into(), fake.clone(), stores));
    let task = tokio::spawn(super::node_controller(&ctx).run(super::reconcile_nodes, ctx.clone()));
    let nodes_described = || cloud.calls().iter().filter(|c| c.as_str() == "instances").count();

    // Cloud failures: the pass is retried after 2 s, then 4 s, not every 2 s.
    cloud.fail("instances", ErrorKind::Invalid, 2);
    tokio::time::sleep(Duration::from_millis(100)).await;
    let first = nodes_described();
    tokio::time::sleep(Duration::from_millis(2000)).await;
    assert_eq!(nodes_described(), first + 1, "retried after the first back-off");
    tokio::time::sleep(Duration::from_millis(2000)).await;
    assert_eq!(nodes_described(), first + 1, "the second failure waits 4 s");
    tokio::time::sleep(Duration::from_millis(2100)).await;
    assert_eq!(nodes_described(), first + 2);

    // A node of a machine that does not exist, with a pod: both go within a pass (2 s).
    fake.create(&node("gone", "i-0000dead", "True", true)).await.unwrap();
    let mut pod = Pod { metadata: ObjectMeta::namespaced("default", "p"), ..Default::default() };
    pod.spec.node_name = Some("gone".into());
    fake.create(&pod).await.unwrap();
    tokio::time::sleep(Duration::from_secs(5)).await;
    assert!(fake.objects::<Node>().is_empty(), "the node of the missing machine is deleted");
    assert!(fake.objects::<Pod>().is_empty(), "and its pod");
    let before = nodes_described();
    tokio::time::sleep(Duration::from_secs(10)).await;
    assert!((4..=6).contains(&(nodes_described() - before)), "a pass every 2 s after successes: {}", nodes_described() - before);
    let _ = ObjectKey::cluster("x");
    task.abort();
}

/// The service controller on the fake API and the fake cloud: a failing cloud backs the pass off
/// (2 s, then 4 s), a new service gets its balancer at once, and the address reaches the status.
#[tokio::test(start_paused = true)]
async fn the_service_controller_backs_off_cloud_errors_and_makes_a_new_service_s_balancer_at_once() {
    use crate::cloud::ErrorKind;
    use crate::runtime::fake::FakeClient;
    use crate::runtime::{Client, Store};
    use tokio::time::Instant;
    let cloud = Arc::new(FakeCloud::new());
    let (_, ids) = network(cloud.as_ref()).await;
    let fake = FakeClient::new();
    for (n, id) in ids.iter().enumerate() {
        fake.create(&node(&format!("w{n}"), id, "True", true)).await.unwrap();
    }
    fake.create(&lb_service("web", 80, Some(30080))).await.unwrap();
    let stores = super::Stores {
        services: Store::reflect(fake.clone(), None, Default::default()),
        nodes: Store::reflect(fake.clone(), None, Default::default()),
        pods: Store::reflect(fake.clone(), None, Default::default()),
        pools: Store::reflect(fake.clone(), None, Default::default()),
    };
    let ctx = Arc::new(super::Context::new(cloud.clone(), "c1".into(), fake.clone(), stores));
    cloud.fail("create_load_balancer", ErrorKind::Invalid, 2);
    let started = Instant::now();
    let task = tokio::spawn(super::service_controller(&ctx).run(super::reconcile_services, ctx.clone()));
    let address = |name: &str| {
        let s = fake.objects::<Service>().into_iter().find(|s| s.metadata.name == name)?;
        s.status.load_balancer.ingress.first().and_then(|i| i.hostname.clone().or(i.ip.clone()))
    };
    while address("web").is_none() {
        assert!(started.elapsed() < Duration::from_secs(30), "the balancer's address never reached the status");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let took = started.elapsed();
    assert!(took >= Duration::from_secs(6) && took < Duration::from_secs(7), "two failures backed off 2 s and 4 s: {took:?}");
    let creates = || cloud.calls().iter().filter(|c| c.as_str() == "create_load_balancer").count();
    assert_eq!(creates(), 3);

    // A new service: its balancer is made at once, not at the 30 s resync.
    let added = Instant::now();
    fake.create(&lb_service("api", 81, Some(30081))).await.unwrap();
    while address("api").is_none() {
        assert!(added.elapsed() < Duration::from_secs(1), "the new service waited for a resync");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert_eq!(creates(), 4);
    task.abort();
}

/// The machine controller's real pass (the spec file, the fake cloud, an in-process API server):
/// a failing cloud backs it off (5 s, then 10 s); once it succeeds it makes the pool's
/// MachinePool and passes again every 5 s. On the real clock: the API server's TLS and HTTP
/// timers must not jump.
#[tokio::test]
async fn the_machine_controller_backs_off_cloud_errors_then_makes_the_pools_and_requeues() {
    use crate::api::machinepool::MachinePool;
    use crate::cloud::ErrorKind;
    use crate::runtime::Store;
    use tokio::time::Instant;
    let dir = tempfile::tempdir().unwrap();
    let spec_path = dir.path().join("cluster.toml");
    std::fs::write(
        &spec_path,
        "[cluster]\nname = \"c1\"\nregion = \"us-east-1\"\navailability_zones = [\"us-east-1a\"]\n\n[network]\nvpc_cidr = \"10.9.0.0/16\"\nadmin_cidrs = [\"10.9.0.1/32\"]\n\n\
         [masters]\ncount = 1\ninstance_type = \"t3.medium\"\nimage = { name = \"debian-12-*\" }\n\n\
         [[workers]]\nname = \"default\"\ncount = 0\ninstance_type = \"t3.small\"\nimage = { name = \"debian-12-*\" }\n",
    )
    .unwrap();
    let cloud = Arc::new(FakeCloud::new());
    let client = crate::client::test_server::start().await;
    let machines = super::machines::Context {
        cloud: cloud.clone(),
        spec_path,
        ssh_key: dir.path().join("id"),
        known_hosts: crate::bootstrap::hostkeys::KnownHosts::at(dir.path().join("known_hosts")),
        join: crate::bootstrap::Join { cluster: "c1".into(), api_host: "127.0.0.1".into(), port: 6443, ca_hash: "sha256:00".into(), token_ttl: Duration::from_secs(60), binary: None, network: None, registries: Vec::new(), cloud_endpoint: None },
        data_dir: dir.path().to_path_buf(),
        own_instance: "i-master".into(),
        cloud_settings: serde_json::from_value(serde_json::json!({"region": "us-east-1"})).unwrap(),
    };
    let stores = super::Stores {
        services: Store::reflect(client.clone(), None, Default::default()),
        nodes: Store::reflect(client.clone(), None, Default::default()),
        pods: Store::reflect(client.clone(), None, Default::default()),
        pools: Store::reflect(client.clone(), None, Default::default()),
    };
    let ctx = Arc::new(super::MachineContext { machines, events: crate::runtime::events::Recorder::new(client.clone(), "machine-controller", ""), client: client.clone(), state: tokio::sync::Mutex::new(super::machines::State::default()) });
    cloud.fail("instances", ErrorKind::Invalid, 2);
    let controller = super::machine_controller(&stores);
    let task = tokio::spawn(controller.run(super::reconcile_machines, ctx));
    let passes = || cloud.calls().iter().filter(|c| c.as_str() == "instances").count();
    let pool = || {
        let client = client.clone();
        async move { client.get::<MachinePool>(&crate::api::resource::MACHINE_POOLS, None, "default").await.ok() }
    };
    // Times from the first pass (the stores list the API server first, slower on a loaded machine):
    // it and the pass 5 s later fail; the next is 10 s after that, then every 5 s.
    let deadline = Instant::now() + Duration::from_secs(30);
    while passes() == 0 {
        assert!(Instant::now() < deadline, "no machine pass within 30 s");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let first = Instant::now();
    tokio::time::sleep_until(first + Duration::from_secs(13)).await;
    assert_eq!(passes(), 2, "failed at 0 s and 5 s, backed off 10 s");
    assert!(pool().await.is_none(), "nothing made while the cloud fails");
    tokio::time::sleep_until(first + Duration::from_secs(17)).await;
    assert!(pool().await.is_some(), "the pool's MachinePool is made by the first pass that succeeds");
    assert_eq!(passes(), 4, "at 15 s, and at once again for the new pool");
    tokio::time::sleep_until(first + Duration::from_secs(22)).await;
    assert_eq!(passes(), 5, "and the next pass follows 5 s later");
    task.abort();
}

#[tokio::test(start_paused = true)]
async fn every_node_gets_one_route_to_its_pod_range_and_loses_it_with_the_node() {
    use super::routes;
    let fake = Arc::new(FakeCloud::new());
    let cloud = Resilient::new(fake.clone(), RetryPolicy::default());
    let (net, ids) = network(&cloud).await;
    let table = cloud.create_route_table(&net.vpc_id, &owned_by("c1")).await.unwrap();
    cloud.create_route(&table.id, "0.0.0.0/0".parse().unwrap(), "igw-1").await.unwrap();
    let block: ipnet::Ipv4Net = "100.64.0.0/16".parse().unwrap();
    let with_range = |name: &str, id: &str, cidr: Option<&str>| {
        let mut n = node(name, id, "True", true);
        n.spec.pod_cidr = cidr.map(String::from);
        n
    };
    let mut nodes = vec![with_range("w1", &ids[0], Some("100.64.1.0/24")), with_range("w2", &ids[1], Some("100.64.2.0/24")), with_range("w3", "i-none", None)];
    let mut happened = Vec::new();
    routes::reconcile(&cloud, "c1", block, &nodes, &mut happened).await.unwrap();
    let routes_now = || async {
        let t = cloud.route_tables(&owned_by("c1")).await.unwrap();
        t[0].routes.iter().map(|r| (r.destination.to_string(), r.instance_id.clone(), r.gateway_id.clone(), r.blackhole)).collect::<Vec<_>>()
    };
    assert_eq!(
        routes_now().await,
        vec![
            ("0.0.0.0/0".into(), None, Some("igw-1".into()), false),
            ("100.64.1.0/24".into(), Some(ids[0].clone()), None, false),
            ("100.64.2.0/24".into(), Some(ids[1].clone()), None, false),
        ]
    );
    assert_eq!(happened.iter().map(|(n, r, _)| (n.as_str(), *r)).collect::<Vec<_>>(), [("w1", "RouteCreated"), ("w2", "RouteCreated")]);
    let checks: Vec<bool> = cloud.instances_by_id(&ids).await.unwrap().iter().map(|i| i.source_dest_check).collect();
    assert_eq!(checks, [false, false], "both instances take their pods' traffic");

    // A second pass changes nothing.
    let before = cloud.mutations().len();
    routes::reconcile(&cloud, "c1", block, &nodes, &mut happened).await.unwrap();
    assert_eq!(cloud.mutations().len(), before, "{:?}", &cloud.mutations()[before..]);

    // w2's machine is terminated: its route turns blackhole but stays while the Node stands...
    cloud.terminate_instances(&ids[1..]).await.unwrap();
    while cloud.instances_by_id(&ids[1..]).await.unwrap()[0].state != InstanceState::Terminated {}
    routes::reconcile(&cloud, "c1", block, &nodes, &mut happened).await.unwrap();
    assert!(routes_now().await[2].3, "a route to a terminated instance is a blackhole");
    // ...and goes with the Node.
    nodes.remove(1);
    routes::reconcile(&cloud, "c1", block, &nodes, &mut happened).await.unwrap();
    assert_eq!(routes_now().await.len(), 2, "the gateway's route and w1's");
    // Routes outside the cluster CIDR are never touched, even with no node left.
    routes::reconcile(&cloud, "c1", block, &[], &mut happened).await.unwrap();
    assert_eq!(routes_now().await, vec![("0.0.0.0/0".into(), None, Some("igw-1".into()), false)]);
}
