//! Plan, converge and destroy against the in-memory fake cloud.

use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use super::*;
use crate::cloud::fake::FakeCloud;
use crate::cloud::{Cloud, ErrorKind, IngressRule, Protocol, RuleSource, Resilient, RetryPolicy};
use crate::report::{NoReport, RecordingReport};
use crate::spec::ClusterSpec;

fn spec_with(workers: u32) -> ClusterSpec {
    let text = format!(
        r#"
[cluster]
name = "t1"
region = "us-east-1"
availability_zones = ["us-east-1a", "us-east-1b"]

[network]
vpc_cidr = "10.42.0.0/16"
admin_cidrs = ["10.42.0.1/32"]

[masters]
count = 1
instance_type = "t3.medium"
image = {{ name = "debian-12-*" }}

[[workers]]
name = "default"
count = {workers}
instance_type = "t3.small"
image = {{ name = "debian-12-*" }}
"#
    );
    ClusterSpec::parse(Path::new("test.toml"), &text).expect("valid test spec")
}

fn setup() -> (Arc<FakeCloud>, Resilient) {
    let fake = Arc::new(FakeCloud::new());
    let policy = RetryPolicy { retry_budget: 50, ..RetryPolicy::default() };
    let cloud = Resilient::new(fake.clone(), policy);
    (fake, cloud)
}

fn options() -> ConvergeOptions {
    ConvergeOptions::new("ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIBxvl8bXzBVu8d1wRcR1UcQlkrZ2mW7bWeH2cBq3fU0u test".into())
}

async fn create(cloud: &dyn Cloud, spec: &ClusterSpec) -> Converged {
    converge(cloud, spec, &options(), &NoReport).await.expect("converge succeeds")
}

#[tokio::test(start_paused = true)]
async fn converge_from_nothing_creates_the_whole_tagged_infrastructure() {
    let (fake, cloud) = setup();
    let spec = spec_with(2);
    let done = create(&cloud, &spec).await;
    let inv = discover(&cloud, "t1").await.unwrap();
    assert_eq!(inv.vpcs.len(), 1);
    assert_eq!(inv.subnets.len(), 2);
    assert!(inv.subnets.iter().all(|s| s.map_public_ip_on_launch));
    assert_eq!(inv.internet_gateways.len(), 1);
    assert_eq!(inv.internet_gateways[0].attached_vpcs, vec![inv.vpcs[0].id.clone()]);
    assert_eq!(inv.route_tables.len(), 1, "only our own route table is tagged");
    assert_eq!(inv.route_tables[0].associations.len(), 2);
    assert_eq!(inv.security_groups.len(), 3);
    assert_eq!(inv.key_pairs.len(), 1);
    assert_eq!(inv.instances.len(), 3);
    assert!(inv.instances.iter().all(|i| i.state == crate::cloud::InstanceState::Running));
    assert_eq!(inv.load_balancers.len(), 1);
    assert_eq!(inv.target_groups.len(), 1);
    assert_eq!(inv.listeners.len(), 1);
    let master = &done.instances[&("masters".to_string(), 0)];
    assert_eq!(inv.targets[&inv.target_groups[0].arn].iter().map(|t| t.instance_id.clone()).collect::<Vec<_>>(), vec![master.id.clone()]);
    assert_eq!(fake.resource_count(), inv.len() + 1, "plus the VPC's untagged main route table");
}

#[tokio::test(start_paused = true)]
async fn security_groups_open_ssh_and_api_only_to_admins() {
    let (_fake, cloud) = setup();
    let spec = spec_with(1);
    create(&cloud, &spec).await;
    let inv = discover(&cloud, "t1").await.unwrap();
    let admin = "10.42.0.1/32".parse().unwrap();
    let vpc = "10.42.0.0/16".parse().unwrap();
    let group = |name: &str| inv.security_groups.iter().find(|g| g.name == name).unwrap().ingress.iter().cloned().collect::<std::collections::BTreeSet<_>>();
    let rule = |protocol, from_port, to_port, source| IngressRule { protocol, from_port, to_port, source };
    let tcp = |port, source| rule(Protocol::Tcp, port, port, RuleSource::Cidr(source));
    let from_vpc = |protocol, from, to| rule(protocol, from, to, RuleSource::Cidr(vpc));
    let masters_id = inv.security_groups.iter().find(|g| g.name == "t1-masters").unwrap().id.clone();
    // Every port of the masters from the VPC but etcd's, which only the masters' own group reaches
    // (the cloud names the group by id).
    let masters = [
        tcp(22, admin),
        tcp(6443, admin),
        from_vpc(Protocol::Tcp, 0, 2378),
        from_vpc(Protocol::Tcp, 2381, 65535),
        from_vpc(Protocol::Udp, 0, 65535),
        from_vpc(Protocol::Icmp, 0, 0),
        rule(Protocol::Tcp, 2379, 2380, RuleSource::Group(masters_id)),
    ];
    assert_eq!(group("t1-masters"), masters.into());
    assert_eq!(group("t1-workers"), [tcp(22, admin), from_vpc(Protocol::All, 0, 0)].into());
    assert_eq!(group("t1-api-lb"), [tcp(6443, admin)].into());
    // The plan reads the group rule back by name: nothing to change.
    assert!(plan(&spec, &inv).unwrap().is_empty(), "{}", plan(&spec, &inv).unwrap());
}

#[tokio::test(start_paused = true)]
async fn rerunning_converge_on_a_complete_cluster_makes_no_mutating_call() {
    let (fake, cloud) = setup();
    let spec = spec_with(2);
    create(&cloud, &spec).await;
    fake.clear_calls();
    let again = Resilient::new(fake.clone(), RetryPolicy::default());
    let done = create(&again, &spec).await;
    assert!(done.plan.is_empty(), "plan: {}", done.plan);
    assert_eq!(fake.mutating_calls(), Vec::<String>::new());
    assert!(again.mutations().is_empty());
}

#[tokio::test(start_paused = true)]
async fn dry_run_plan_lists_every_creation_and_changes_nothing() {
    let (fake, cloud) = setup();
    let spec = spec_with(2);
    let inv = discover(&cloud, "t1").await.unwrap();
    let p = plan(&spec, &inv).unwrap();
    let text = p.to_string();
    assert!(text.contains("+ vpc 10.42.0.0/16"), "{text}");
    assert!(text.contains("+ subnet 10.42.0.0/20 in us-east-1a"), "{text}");
    assert!(text.contains("+ instance t1-default-1 (t3.small in us-east-1b)"), "{text}");
    assert!(text.contains("+ network load balancer t1-api"), "{text}");
    assert_eq!(p.steps.iter().filter(|s| matches!(s, Step::LaunchInstance { .. })).count(), 3);
    assert!(fake.mutating_calls().is_empty());
}

#[tokio::test(start_paused = true)]
async fn throttled_calls_are_retried_with_back_off() {
    let (fake, cloud) = setup();
    fake.fail("create_vpc", ErrorKind::Throttled, 2);
    fake.fail("run_instance", ErrorKind::Throttled, 5);
    fake.fail("subnets", ErrorKind::Throttled, 1);
    create(&cloud, &spec_with(2)).await;
    assert_eq!(fake.live_instances().len(), 3);
    assert_eq!(fake.calls().iter().filter(|c| *c == "create_vpc").count(), 3);
    assert_eq!(cloud.retries_left(), 50 - 8);
}

#[tokio::test(start_paused = true)]
async fn throttling_beyond_the_shared_budget_gives_up_with_a_clear_error() {
    let fake = Arc::new(FakeCloud::new());
    let cloud = Resilient::new(fake.clone(), RetryPolicy { retry_budget: 3, ..RetryPolicy::default() });
    fake.fail("create_vpc", ErrorKind::Throttled, 100);
    let err = converge(&cloud, &spec_with(1), &options(), &NoReport).await.unwrap_err();
    let text = err.to_string();
    assert!(text.contains("creating VPC 10.42.0.0/16"), "{text}");
    assert!(text.contains("retry budget"), "{text}");
}

#[tokio::test(start_paused = true)]
async fn instances_invisible_right_after_launch_are_polled_not_failed() {
    let (fake, cloud) = setup();
    fake.hide_new_instances_for(4);
    create(&cloud, &spec_with(2)).await;
    assert_eq!(fake.live_instances().len(), 3);
}

#[tokio::test(start_paused = true)]
async fn not_found_right_after_create_is_eventual_consistency_for_mutations() {
    let (fake, cloud) = setup();
    fake.fail("authorize_ingress", ErrorKind::NotFound, 2);
    fake.fail("attach_internet_gateway", ErrorKind::NotFound, 1);
    create(&cloud, &spec_with(1)).await;
    let inv = discover(&cloud, "t1").await.unwrap();
    assert!(inv.security_groups.iter().all(|g| !g.ingress.is_empty()));
}

#[tokio::test(start_paused = true)]
async fn an_interrupted_create_is_finished_by_the_next_with_no_duplicates() {
    let (fake, cloud) = setup();
    // The launches fail part-way, as if the process died after the network was made.
    fake.fail("run_instance", ErrorKind::Invalid, 2);
    let err = converge(&cloud, &spec_with(3), &options(), &NoReport).await.unwrap_err();
    assert!(err.to_string().contains("launching instance"), "{err}");
    let partial = fake.live_instances().len();
    assert_eq!(partial, 2, "two of four launches failed");
    create(&cloud, &spec_with(3)).await;
    assert_eq!(fake.live_instances().len(), 4);
    let inv = discover(&cloud, "t1").await.unwrap();
    assert_eq!(inv.vpcs.len(), 1);
    assert_eq!(inv.subnets.len(), 2);
    assert_eq!(inv.security_groups.len(), 3);
}

#[tokio::test(start_paused = true)]
async fn instances_are_found_by_tag_even_when_the_cloud_ignores_launch_tokens() {
    let (fake, cloud) = setup();
    fake.ignore_client_tokens();
    create(&cloud, &spec_with(2)).await;
    create(&cloud, &spec_with(2)).await;
    assert_eq!(fake.live_instances().len(), 3);
}

#[tokio::test(start_paused = true)]
async fn a_terminated_machine_is_replaced_although_its_launch_token_answers_with_it_as_first_launched() {
    let (fake, cloud) = setup();
    let spec = spec_with(2);
    let mut old = create(&cloud, &spec).await.instances[&("default".to_string(), 1)].id.clone();
    // Again and again: every replacement uses up one launch token.
    for _ in 0..5 {
        cloud.terminate_instances(std::slice::from_ref(&old)).await.unwrap();
        let again = create(&cloud, &spec).await;
        let new = &again.instances[&("default".to_string(), 1)];
        assert_ne!(new.id, old, "the slot got a new machine");
        assert_eq!(new.state, crate::cloud::InstanceState::Running);
        assert_eq!(fake.live_instances().len(), 3);
        old = new.id.clone();
    }
}

#[tokio::test(start_paused = true)]
async fn a_smaller_pool_terminates_the_highest_slots() {
    let (fake, cloud) = setup();
    create(&cloud, &spec_with(3)).await;
    let inv = discover(&cloud, "t1").await.unwrap();
    let p = plan(&spec_with(1), &inv).unwrap();
    let terminated: Vec<_> = p.steps.iter().filter_map(|s| if let Step::TerminateInstance { name, .. } = s { Some(name.clone()) } else { None }).collect();
    assert_eq!(terminated, vec!["t1-default-1", "t1-default-2"]);
    create(&cloud, &spec_with(1)).await;
    assert_eq!(fake.live_instances().len(), 2);
}

#[tokio::test(start_paused = true)]
async fn a_rule_added_out_of_band_is_revoked() {
    let (_fake, cloud) = setup();
    create(&cloud, &spec_with(1)).await;
    let inv = discover(&cloud, "t1").await.unwrap();
    let workers = inv.security_groups.iter().find(|g| g.name == "t1-workers").unwrap();
    let open = IngressRule { protocol: Protocol::Tcp, from_port: 80, to_port: 80, source: RuleSource::Cidr("0.0.0.0/0".parse().unwrap()) };
    cloud.authorize_ingress(&workers.id, std::slice::from_ref(&open)).await.unwrap();
    let p = plan(&spec_with(1), &discover(&cloud, "t1").await.unwrap()).unwrap();
    assert_eq!(p.steps, vec![Step::RevokeIngress { group: "t1-workers".into(), rules: vec![open] }]);
    create(&cloud, &spec_with(1)).await;
    assert!(plan(&spec_with(1), &discover(&cloud, "t1").await.unwrap()).unwrap().is_empty());
}

#[tokio::test(start_paused = true)]
async fn destroy_removes_everything_and_a_second_destroy_has_nothing_to_do() {
    let (fake, cloud) = setup();
    create(&cloud, &spec_with(2)).await;
    let report = RecordingReport::default();
    let done = destroy(&cloud, "t1", Duration::from_secs(60), &report).await.unwrap();
    assert!(done.is_clean(), "{done:?}");
    assert_eq!(fake.resource_count(), 0);
    let again = destroy(&cloud, "t1", Duration::from_secs(60), &NoReport).await.unwrap();
    assert!(again.deleted.is_empty() && again.is_clean());
}

#[tokio::test(start_paused = true)]
async fn destroy_stops_the_controllers_by_terminating_the_masters_before_anything_else() {
    let (fake, cloud) = setup();
    create(&cloud, &spec_with(2)).await;
    let before = fake.calls().len();
    let report = RecordingReport::default();
    let done = destroy(&cloud, "t1", Duration::from_secs(60), &report).await.unwrap();
    assert!(done.is_clean(), "{done:?}");
    let calls: Vec<String> = fake.calls()[before..].to_vec();
    let first = |name: &str| calls.iter().position(|c| c == name).unwrap_or_else(|| panic!("no {name} in {calls:?}"));
    let terminations: Vec<usize> = calls.iter().enumerate().filter(|(_, c)| *c == "terminate_instances").map(|(i, _)| i).collect();
    assert_eq!(terminations.len(), 2, "the masters, then the workers: {calls:?}");
    assert!(terminations[0] < first("delete_load_balancer"), "the masters go before their controllers' balancers: {calls:?}");
    assert!(done.deleted[0].starts_with("masters "), "{:?}", done.deleted);
    assert!(done.deleted[1].starts_with("listener "), "{:?}", done.deleted);
}

#[tokio::test(start_paused = true)]
async fn destroy_retries_dependency_violation_until_the_group_is_free() {
    let (fake, cloud) = setup();
    create(&cloud, &spec_with(1)).await;
    fake.fail("delete_security_group", ErrorKind::DependencyViolation, 4);
    fake.fail("delete_vpc", ErrorKind::DependencyViolation, 2);
    let done = destroy(&cloud, "t1", Duration::from_secs(60), &NoReport).await.unwrap();
    assert!(done.is_clean(), "{done:?}");
    assert_eq!(fake.resource_count(), 0);
}

#[tokio::test(start_paused = true)]
async fn destroy_treats_not_found_on_delete_as_success() {
    let (fake, cloud) = setup();
    create(&cloud, &spec_with(1)).await;
    // Someone else deleted things between our listing and our deletes.
    fake.fail("delete_listener", ErrorKind::NotFound, 1);
    fake.fail("delete_key_pair", ErrorKind::NotFound, 1);
    let done = destroy(&cloud, "t1", Duration::from_secs(60), &NoReport).await.unwrap();
    assert!(done.errors.is_empty(), "{done:?}");
}

#[tokio::test(start_paused = true)]
async fn destroy_lists_what_it_could_not_remove() {
    let fake = Arc::new(FakeCloud::new());
    let cloud = Resilient::new(fake.clone(), RetryPolicy { dependency_deadline: Duration::from_secs(10), ..RetryPolicy::default() });
    create(&cloud, &spec_with(1)).await;
    fake.fail("delete_security_group", ErrorKind::DependencyViolation, 1000);
    let done = destroy(&cloud, "t1", Duration::from_secs(60), &NoReport).await.unwrap();
    assert!(!done.is_clean());
    assert!(done.remaining.iter().any(|r| r.contains("security group")), "{:?}", done.remaining);
    assert!(done.remaining.iter().any(|r| r.starts_with("vpc ")), "{:?}", done.remaining);
}

#[tokio::test(start_paused = true)]
async fn pools_keep_a_count_of_machines_whatever_their_slots() {
    let (_fake, cloud) = setup();
    let done = create(&cloud, &spec_with(3)).await;
    // A scale-down removed the machine in slot 1 (the one with the fewest pods, say).
    let slot1 = done.instances[&("default".to_string(), 1)].id.clone();
    cloud.terminate_instances(std::slice::from_ref(&slot1)).await.unwrap();
    let inv = discover(&cloud, "t1").await.unwrap();
    assert!(plan(&spec_with(2), &inv).unwrap().is_empty(), "slots 0 and 2 make a pool of 2");

    let grow = plan(&spec_with(4), &inv).unwrap();
    let launched: Vec<u32> = grow.steps.iter().filter_map(|s| if let Step::LaunchInstance { slot, .. } = s { Some(*slot) } else { None }).collect();
    assert_eq!(launched, vec![1, 3], "new machines take the lowest free slots");

    let shrink = plan(&spec_with(1), &inv).unwrap();
    let gone: Vec<String> = shrink.steps.iter().filter_map(|s| if let Step::TerminateInstance { name, .. } = s { Some(name.clone()) } else { None }).collect();
    assert_eq!(gone, vec!["t1-default-2".to_string()], "a shrinking pool loses its highest slots");

    let done = converge(&cloud, &spec_with(1), &options(), &NoReport).await.unwrap();
    let workers: Vec<u32> = done.instances.keys().filter(|(p, _)| p == "default").map(|(_, s)| *s).collect();
    assert_eq!(workers, vec![0], "terminated machines are not among the converged ones");
}

#[tokio::test(start_paused = true)]
async fn the_plan_makes_the_masters_role_policy_and_profile_before_any_launch() {
    let (_fake, cloud) = setup();
    let spec = spec_with(1);
    let p = plan(&spec, &discover(&cloud, "t1").await.unwrap()).unwrap();
    let position = |want: &Step| p.steps.iter().position(|s| s == want).unwrap_or_else(|| panic!("{want:?} missing from\n{p}"));
    let first_launch = p.steps.iter().position(|s| matches!(s, Step::LaunchInstance { .. })).unwrap();
    for kind in iam::InstanceRole::ALL {
        let role = kind.name("t1");
        let create_role = position(&Step::CreateRole { name: role.clone(), kind });
        let put = position(&Step::PutRolePolicy { role: role.clone(), policy: kind.policy_name().into(), kind });
        let profile = position(&Step::CreateInstanceProfile { name: role.clone(), kind });
        let add = position(&Step::AddRoleToInstanceProfile { profile: role.clone(), role: role.clone() });
        assert!(create_role < put && put < add && profile < add && add < first_launch, "{p}");
        assert!(p.to_string().contains(&format!("+ instance profile {role}")), "{p}");
    }
    assert!(p.to_string().contains("+ iam role clusterctl-t1-worker (for the workers' instances)"), "{p}");
}

#[tokio::test(start_paused = true)]
async fn converge_launches_every_machine_with_its_kinds_profile_and_a_rerun_changes_nothing() {
    let (fake, cloud) = setup();
    let spec = spec_with(1);
    create(&cloud, &spec).await;
    let inv = discover(&cloud, "t1").await.unwrap();
    for kind in iam::InstanceRole::ALL {
        let found = inv.iam(kind);
        let role = found.role.as_ref().expect("role");
        assert_eq!((role.name.as_str(), role.path.as_str()), (kind.name("t1").as_str(), "/clusterctl/"));
        assert_eq!(role.tags["clusterctl:cluster"], "t1");
        assert_eq!(role.tags["clusterctl:role"], kind.tag());
        let trust: serde_json::Value = serde_json::from_str(&role.trust_policy).unwrap();
        assert_eq!(trust["Statement"][0]["Principal"]["Service"], "ec2.amazonaws.com");
        let profile = found.profile.as_ref().expect("profile");
        assert_eq!(profile.roles, vec![role.name.clone()]);
        let policy: serde_json::Value = serde_json::from_str(found.policy.as_deref().expect("policy")).unwrap();
        assert_eq!(policy, kind.policy("t1"));
        let line = format!("instance profile /clusterctl/{0} (role {0})", role.name);
        assert!(inv.describe().contains(&line), "{:?}", inv.describe());
    }
    for i in &inv.instances {
        let kind = if i.tags["clusterctl:pool"] == "masters" { iam::InstanceRole::Master } else { iam::InstanceRole::Worker };
        assert_eq!(i.instance_profile, inv.iam(kind).profile.as_ref().map(|p| p.arn.clone()), "{}", i.tags["Name"]);
    }

    fake.clear_calls();
    let done = create(&Resilient::new(fake.clone(), RetryPolicy::default()), &spec).await;
    assert!(done.plan.is_empty(), "{}", done.plan);
    assert_eq!(fake.mutating_calls(), Vec::<String>::new());
}

#[tokio::test(start_paused = true)]
async fn a_machine_without_its_kinds_profile_or_with_another_is_given_its_own_in_place() {
    let (fake, cloud) = setup();
    let spec = spec_with(1);
    create(&cloud, &spec).await;
    let inv = discover(&cloud, "t1").await.unwrap();
    let id_of = |masters: bool| inv.instances.iter().find(|i| (i.tags["clusterctl:pool"] == "masters") == masters).unwrap().id.clone();
    let (master, worker) = (id_of(true), id_of(false));
    // A worker of a cluster made before the workers' role; a master given the workers' by hand.
    fake.drop_instance_profile(&worker);
    cloud.set_instance_profile(&master, &iam::InstanceRole::Worker.name("t1")).await.unwrap();

    // The master's machine controller may not pass the workers' role: it leaves them, noted.
    fake.clear_calls();
    let master_run = ConvergeOptions { set_instance_profiles: false, ..options() };
    let done = converge(&cloud, &spec, &master_run, &NoReport).await.unwrap();
    assert!(done.plan.is_empty(), "{}", done.plan);
    assert!(done.plan.notes.iter().any(|n| n.contains(&worker) && n.contains("left to `clusterctl create`")), "{:?}", done.plan.notes);
    assert_eq!(fake.mutating_calls(), Vec::<String>::new());

    fake.clear_calls();
    let done = create(&cloud, &spec).await;
    let shown = done.plan.to_string();
    for (id, kind) in [(&master, iam::InstanceRole::Master), (&worker, iam::InstanceRole::Worker)] {
        assert!(done.plan.steps.contains(&Step::SetInstanceProfile { id: id.clone(), name: fake_name(&inv, id), profile: kind.name("t1") }), "{shown}");
    }
    assert_eq!(done.plan.steps.len(), 2, "nothing else changes, nothing is launched or terminated: {shown}");
    assert!(shown.contains(&format!("~ instance {} ({worker}): run on instance profile clusterctl-t1-worker", fake_name(&inv, &worker))), "{shown}");
    let after = discover(&cloud, "t1").await.unwrap();
    for i in &after.instances {
        let kind = if i.id == master { iam::InstanceRole::Master } else { iam::InstanceRole::Worker };
        assert_eq!(i.instance_profile, after.iam(kind).profile.as_ref().map(|p| p.arn.clone()), "{}", i.tags["Name"]);
    }
    assert!(create(&cloud, &spec).await.plan.is_empty());
}

fn fake_name(inv: &crate::provision::Inventory, id: &str) -> String {
    inv.instances.iter().find(|i| i.id == id).unwrap().tags["Name"].clone()
}

#[tokio::test(start_paused = true)]
async fn a_policy_that_differs_is_replaced_and_a_profile_without_its_role_gets_it() {
    let (fake, cloud) = setup();
    let spec = spec_with(1);
    create(&cloud, &spec).await;
    cloud.put_role_policy("clusterctl-t1-master", "clusterctl-master", r#"{"Version":"2012-10-17","Statement":[]}"#).await.unwrap();
    cloud.remove_role_from_instance_profile("clusterctl-t1-master", "clusterctl-t1-master").await.unwrap();
    let p = plan(&spec, &discover(&cloud, "t1").await.unwrap()).unwrap();
    assert_eq!(
        p.steps,
        vec![
            Step::UpdateRolePolicy { role: "clusterctl-t1-master".into(), policy: "clusterctl-master".into(), kind: iam::InstanceRole::Master },
            Step::AddRoleToInstanceProfile { profile: "clusterctl-t1-master".into(), role: "clusterctl-t1-master".into() },
        ]
    );
    assert!(p.to_string().contains("~ iam role clusterctl-t1-master: update inline policy"), "{p}");
    create(&cloud, &spec).await;
    let doc = fake.role_policy_document("clusterctl-t1-master", "clusterctl-master").unwrap();
    assert!(iam::same_policy(&doc, &iam::master_policy("t1")));
    assert!(plan(&spec, &discover(&cloud, "t1").await.unwrap()).unwrap().is_empty());
}

#[tokio::test(start_paused = true)]
async fn a_role_of_the_same_name_without_the_cluster_tag_is_not_the_clusters() {
    let (_fake, cloud) = setup();
    cloud.create_role("clusterctl-t1-master", "/clusterctl/", "{}", &crate::cloud::owned_by("someone-else")).await.unwrap();
    let inv = discover(&cloud, "t1").await.unwrap();
    assert!(inv.masters_iam.role.is_none() && inv.is_empty());
}

#[tokio::test(start_paused = true)]
async fn a_launch_waits_until_a_new_instance_profile_is_visible_to_ec2() {
    let (fake, cloud) = setup();
    let spec = spec_with(1);
    fake.hide_instance_profiles_from_launches(3);
    create(&cloud, &spec).await;
    let inv = discover(&cloud, "t1").await.unwrap();
    let master = inv.instances.iter().find(|i| i.tags["clusterctl:pool"] == "masters").unwrap();
    assert!(master.instance_profile.is_some());
    assert_eq!(inv.instances.len(), 2);
}

#[tokio::test(start_paused = true)]
async fn a_failed_role_creation_stops_before_any_launch_and_the_next_run_finishes() {
    let (fake, cloud) = setup();
    let spec = spec_with(1);
    fake.fail("create_role", ErrorKind::AccessDenied, 1);
    let err = converge(&cloud, &spec, &options(), &NoReport).await.unwrap_err();
    assert!(err.to_string().contains("access denied"), "{err}");
    assert!(fake.live_instances().is_empty());
    create(&cloud, &spec).await;
    let inv = discover(&cloud, "t1").await.unwrap();
    assert!(inv.masters_iam.profile.is_some() && inv.workers_iam.profile.is_some());
}

#[tokio::test(start_paused = true)]
async fn destroy_removes_the_profile_and_role_after_the_instances() {
    let (fake, cloud) = setup();
    let spec = spec_with(1);
    create(&cloud, &spec).await;
    fake.clear_calls();
    let report = destroy(&cloud, "t1", Duration::from_secs(60), &NoReport).await.unwrap();
    assert!(report.is_clean(), "{report:?}");
    assert_eq!(fake.resource_count(), 0);
    let calls = fake.mutating_calls();
    let at = |op: &str| calls.iter().position(|c| c == op).unwrap_or_else(|| panic!("{op} not called: {calls:?}"));
    assert!(at("terminate_instances") < at("remove_role_from_instance_profile"));
    assert!(at("remove_role_from_instance_profile") < at("delete_instance_profile"));
    assert!(at("delete_role_policy") < at("delete_role"));
    for role in ["clusterctl-t1-master", "clusterctl-t1-worker"] {
        assert!(report.deleted.iter().any(|d| *d == format!("iam role {role}")), "{:?}", report.deleted);
    }
}

#[tokio::test(start_paused = true)]
async fn destroy_keeps_the_profile_while_instances_may_still_use_it() {
    let (fake, cloud) = setup();
    let spec = spec_with(1);
    create(&cloud, &spec).await;
    // Both attempts fail: the masters' (to stop the controllers) and the one of every instance.
    fake.fail("terminate_instances", ErrorKind::AccessDenied, 2);
    let report = destroy(&cloud, "t1", Duration::from_secs(60), &NoReport).await.unwrap();
    assert!(report.remaining.iter().any(|r| r.starts_with("instance profile")), "{:?}", report.remaining);
    assert!(!fake.calls().iter().any(|c| c == "delete_instance_profile"));
    let report = destroy(&cloud, "t1", Duration::from_secs(60), &NoReport).await.unwrap();
    assert!(report.is_clean(), "{report:?}");
    assert_eq!(fake.resource_count(), 0);
}

#[tokio::test(start_paused = true)]
async fn destroy_retries_a_role_still_in_use_and_treats_a_missing_one_as_gone() {
    let (fake, cloud) = setup();
    let spec = spec_with(1);
    create(&cloud, &spec).await;
    fake.fail("delete_role", ErrorKind::DependencyViolation, 2);
    let report = destroy(&cloud, "t1", Duration::from_secs(60), &NoReport).await.unwrap();
    assert!(report.is_clean(), "{report:?}");
    assert_eq!(fake.calls().iter().filter(|c| *c == "delete_role").count(), 4, "two failures, then each of the two roles once");
    assert_eq!(fake.resource_count(), 0);
    cloud.delete_role("clusterctl-t1-master").await.expect("not found is success");
    cloud.delete_instance_profile("clusterctl-t1-master").await.expect("not found is success");
    cloud.remove_role_from_instance_profile("clusterctl-t1-master", "clusterctl-t1-master").await.expect("not found is success");
}

#[tokio::test(start_paused = true)]
async fn a_deferred_registration_is_left_to_the_caller_and_a_rerun_finds_it_done() {
    let (_fake, cloud) = setup();
    let spec = spec_with(1);
    let mut deferred = options();
    deferred.defer_registration = true;
    let done = converge(&cloud, &spec, &deferred, &NoReport).await.unwrap();
    let inv = discover(&cloud, "t1").await.unwrap();
    let tg = inv.target_groups[0].arn.clone();
    assert!(inv.targets.get(&tg).is_none_or(|t| t.is_empty()), "nothing registered yet");
    let registration = done.registration.expect("left to the caller");
    assert!(matches!(registration.step, Some(Step::RegisterMasters { .. })));
    let master = done.instances[&("masters".to_string(), 0)].id.clone();
    assert_eq!(registration.masters, vec![master.clone()]);

    // Until the caller registers them, a re-run plans the registration again.
    assert!(plan(&spec, &inv).unwrap().steps.iter().any(|s| matches!(s, Step::RegisterMasters { .. })));
    register_masters(&cloud, &registration, &NoReport).await.unwrap();
    let inv = discover(&cloud, "t1").await.unwrap();
    assert_eq!(inv.targets[&tg].iter().map(|t| t.instance_id.clone()).collect::<Vec<_>>(), vec![master]);
    assert!(plan(&spec, &inv).unwrap().is_empty(), "complete");
    let again = converge(&cloud, &spec, &deferred, &NoReport).await.unwrap();
    assert!(again.registration.is_some_and(|r| r.step.is_none()), "nothing left to register");
}
