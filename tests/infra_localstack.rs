//! Infrastructure against LocalStack: create, check through the AWS API, re-run, resume after kill -9, destroy.

mod common;

use std::collections::BTreeSet;
use std::sync::Arc;
use std::time::{Duration, Instant};

use clusterctl::cloud::aws::{AwsCloud, AwsOptions};
use clusterctl::cloud::{IngressRule, InstanceState, Protocol, Resilient, RetryPolicy, RuleSource};
use clusterctl::provision::{self, ConvergeOptions};
use clusterctl::report::NoReport;
use clusterctl::spec::ClusterSpec;
use common::*;

async fn cloud() -> Resilient {
    harness();
    let aws = AwsCloud::connect(&AwsOptions::default(), "us-east-1").await;
    Resilient::new(Arc::new(aws), RetryPolicy::default())
}

async fn raw_iam() -> aws_sdk_iam::Client {
    harness();
    let conf = aws_config::defaults(aws_config::BehaviorVersion::latest()).http_client(clusterctl::cloud::aws::https_client()).region(aws_config::Region::new("us-east-1")).load().await;
    aws_sdk_iam::Client::new(&conf)
}

/// Names of the roles and instance profiles under clusterctl's IAM path that belong to `cluster`.
async fn iam_leftovers(cluster: &str) -> Vec<String> {
    let iam = raw_iam().await;
    let names: Vec<String> = provision::iam::InstanceRole::ALL.iter().map(|k| k.name(cluster)).collect();
    let roles = iam.list_roles().path_prefix("/clusterctl/").send().await.unwrap();
    let profiles = iam.list_instance_profiles().path_prefix("/clusterctl/").send().await.unwrap();
    let mut left: Vec<String> = roles.roles().iter().filter(|r| names.iter().any(|n| n == r.role_name())).map(|r| format!("role {}", r.role_name())).collect();
    left.extend(profiles.instance_profiles().iter().filter(|p| names.iter().any(|n| n == p.instance_profile_name())).map(|p| format!("instance profile {}", p.instance_profile_name())));
    left
}

async fn raw_ec2() -> aws_sdk_ec2::Client {
    harness();
    let conf = aws_config::defaults(aws_config::BehaviorVersion::latest()).http_client(clusterctl::cloud::aws::https_client()).region(aws_config::Region::new("us-east-1")).load().await;
    aws_sdk_ec2::Client::new(&conf)
}

#[tokio::test(flavor = "multi_thread")]
async fn example_cluster_is_created_checked_rerun_without_changes_and_destroyed_without_leaks() {
    let cloud = cloud().await;
    let home = temp_home();
    let spec_path = unique_spec(home.path(), "it-full", 61, 2);
    let _guard = DestroyGuard { home: home.path().into(), spec: spec_path.clone() };
    let s = spec_path.to_str().unwrap();

    let out = clusterctl(home.path(), &["create", "-f", s, "--infra-only"]);
    let stdout = assert_ok(&out, "create");
    assert!(stdout.contains("API endpoint:"), "{stdout}");

    // Every resource, through the AWS API.
    let inv = provision::discover(&cloud, "it-full").await.unwrap();
    assert_eq!(inv.vpcs.len(), 1);
    assert_eq!(inv.vpcs[0].cidr.to_string(), "10.61.0.0/16");
    let cidrs: BTreeSet<String> = inv.subnets.iter().map(|s| format!("{} {}", s.zone, s.cidr)).collect();
    assert_eq!(cidrs, BTreeSet::from(["us-east-1a 10.61.0.0/20".to_string(), "us-east-1b 10.61.16.0/20".to_string()]));
    assert_eq!(inv.internet_gateways.len(), 1);
    assert_eq!(inv.internet_gateways[0].attached_vpcs, vec![inv.vpcs[0].id.clone()]);
    assert_eq!(inv.route_tables.len(), 1);
    assert!(inv.route_tables[0].routes.iter().any(|r| r.destination.to_string() == "0.0.0.0/0" && r.gateway_id.as_deref() == Some(inv.internet_gateways[0].id.as_str())));
    assert_eq!(inv.route_tables[0].associations.iter().filter(|a| a.subnet_id.is_some()).count(), 2);
    assert_eq!(inv.key_pairs.len(), 1);
    assert_eq!(inv.instances.len(), 3);
    assert!(inv.instances.iter().all(|i| i.state == InstanceState::Running), "{:?}", inv.instances);
    for i in &inv.instances {
        assert_eq!(i.tags["clusterctl:cluster"], "it-full");
        assert!(i.tags.contains_key("clusterctl:pool") && i.tags.contains_key("clusterctl:slot"));
    }
    let admin = "10.61.0.1/32".parse().unwrap();
    let vpc = "10.61.0.0/16".parse().unwrap();
    let rule = |protocol, from_port, to_port, source| IngressRule { protocol, from_port, to_port, source };
    let tcp = |port, source| rule(Protocol::Tcp, port, port, RuleSource::Cidr(source));
    let from_vpc = |protocol, from, to| rule(protocol, from, to, RuleSource::Cidr(vpc));
    let rules = |name: &str| inv.security_groups.iter().find(|g| g.name == name).unwrap_or_else(|| panic!("group {name}")).ingress.iter().cloned().collect::<BTreeSet<_>>();
    // The masters take everything from the VPC but etcd's ports, which only their own group
    // reaches (read back through EC2 as the group's id).
    let masters_group = inv.security_groups.iter().find(|g| g.name == "it-full-masters").unwrap().id.clone();
    let masters = [
        tcp(22, admin),
        tcp(6443, admin),
        from_vpc(Protocol::Tcp, 0, 2378),
        from_vpc(Protocol::Tcp, 2381, 65535),
        from_vpc(Protocol::Udp, 0, 65535),
        from_vpc(Protocol::Icmp, 0, 0),
        rule(Protocol::Tcp, 2379, 2380, RuleSource::Group(masters_group)),
    ];
    assert_eq!(rules("it-full-masters"), BTreeSet::from(masters));
    assert_eq!(rules("it-full-workers"), BTreeSet::from([tcp(22, admin), from_vpc(Protocol::All, 0, 0)]));
    assert_eq!(rules("it-full-api-lb"), BTreeSet::from([tcp(6443, admin)]));
    assert_eq!(inv.load_balancers.len(), 1);
    assert_eq!(inv.target_groups.len(), 1);
    assert_eq!(inv.listeners.len(), 1);
    assert_eq!(inv.listeners[0].port, 6443);
    assert_eq!(inv.listeners[0].target_group_arn.as_deref(), Some(inv.target_groups[0].arn.as_str()));
    let master = inv.instances.iter().find(|i| i.tags["clusterctl:pool"] == "masters").unwrap();
    let targets: Vec<_> = inv.targets[&inv.target_groups[0].arn].iter().map(|t| (t.instance_id.clone(), t.port)).collect();
    assert_eq!(targets, vec![(master.id.clone(), 6443)]);

    // Each kind's role, its policy and the instance profile, and the machines launched with it.
    for kind in provision::iam::InstanceRole::ALL {
        let found = inv.iam(kind);
        let role = found.role.as_ref().expect("the role");
        assert_eq!((role.name.as_str(), role.path.as_str()), (kind.name("it-full").as_str(), "/clusterctl/"));
        assert_eq!(role.tags["clusterctl:cluster"], "it-full");
        let policy = found.policy.as_deref().expect("the inline policy");
        assert!(provision::iam::same_policy(policy, &kind.policy("it-full")), "{policy}");
        let profile = found.profile.as_ref().expect("the instance profile");
        assert_eq!(profile.roles, vec![role.name.clone()]);
        let raw = raw_iam().await.get_instance_profile().instance_profile_name(kind.name("it-full")).send().await.unwrap();
        let raw_roles: Vec<&str> = raw.instance_profile().unwrap().roles().iter().map(|r| r.role_name()).collect();
        assert_eq!(raw_roles, vec![kind.name("it-full").as_str()]);
    }
    let profile_arn = |kind| inv.iam(kind).profile.as_ref().map(|p| p.arn.clone());
    assert_eq!(master.instance_profile, profile_arn(provision::iam::InstanceRole::Master), "DescribeInstances shows the master's profile");
    for worker in inv.instances.iter().filter(|i| i.tags["clusterctl:pool"] != "masters") {
        assert_eq!(worker.instance_profile, profile_arn(provision::iam::InstanceRole::Worker), "a worker runs on the workers' role");
    }

    // The raw SDK agrees on instances by tag.
    let ec2 = raw_ec2().await;
    let found = ec2
        .describe_instances()
        .filters(aws_sdk_ec2::types::Filter::builder().name("tag:clusterctl:cluster").values("it-full").build())
        .filters(aws_sdk_ec2::types::Filter::builder().name("instance-state-name").values("running").build())
        .send()
        .await
        .unwrap();
    assert_eq!(found.reservations().iter().map(|r| r.instances().len()).sum::<usize>(), 3);
    // Every machine answers metadata requests only with IMDSv2 tokens, one hop away (not to pods).
    for instance in found.reservations().iter().flat_map(|r| r.instances()) {
        let options = instance.metadata_options().expect("metadata options");
        assert_eq!(options.http_tokens(), Some(&aws_sdk_ec2::types::HttpTokensState::Required), "{instance:?}");
        assert_eq!(options.http_put_response_hop_limit(), Some(1), "{instance:?}");
    }

    // Re-running makes no mutating call.
    let spec = ClusterSpec::load(&spec_path).unwrap();
    let key = clusterctl::home::ClusterHome { dir: home.path().join("it-full") }.ssh_key(&spec).unwrap();
    let rerun = cloud_fresh().await;
    let done = provision::converge(&rerun, &spec, &ConvergeOptions::new(key.public_openssh), &NoReport).await.unwrap();
    assert!(done.plan.is_empty(), "{}", done.plan);
    assert_eq!(rerun.mutations(), Vec::<String>::new());
    let stdout = assert_ok(&clusterctl(home.path(), &["create", "-f", s, "--infra-only"]), "second create");
    assert!(stdout.contains("no changes"), "{stdout}");

    // A worker without a profile (as in a cluster made before the workers' role) and a master on
    // the workers' profile (given by hand) are each put back on their own kind's, in place.
    let association = |id: String| {
        let ec2 = ec2.clone();
        async move {
            let found = ec2
                .describe_iam_instance_profile_associations()
                .filters(aws_sdk_ec2::types::Filter::builder().name("instance-id").values(id).build())
                .send()
                .await
                .unwrap();
            found.iam_instance_profile_associations().first().map(|a| (a.association_id().unwrap().to_string(), a.iam_instance_profile().unwrap().arn().unwrap().to_string()))
        }
    };
    let worker = inv.instances.iter().find(|i| i.tags["clusterctl:pool"] != "masters").unwrap();
    let (worker_association, _) = association(worker.id.clone()).await.expect("the worker's profile association");
    ec2.disassociate_iam_instance_profile().association_id(worker_association).send().await.unwrap();
    let (master_association, _) = association(master.id.clone()).await.expect("the master's profile association");
    let workers_profile = aws_sdk_ec2::types::IamInstanceProfileSpecification::builder().name(provision::iam::InstanceRole::Worker.name("it-full")).build();
    ec2.replace_iam_instance_profile_association().association_id(master_association).iam_instance_profile(workers_profile).send().await.unwrap();
    let plan = assert_ok(&clusterctl(home.path(), &["create", "-f", s, "--infra-only", "--dry-run"]), "dry run after the profiles changed");
    for (i, kind) in [(worker, "worker"), (master, "master")] {
        let line = format!("~ instance {} ({}): run on instance profile clusterctl-it-full-{kind}", i.tags["Name"], i.id);
        assert!(plan.contains(&line), "{line} in {plan}");
    }
    let stdout = assert_ok(&clusterctl(home.path(), &["create", "-f", s, "--infra-only"]), "create after the profiles changed");
    assert!(stdout.contains("2 changes applied (2 cloud calls that change something)"), "{stdout}");
    let fixed = provision::discover(&cloud, "it-full").await.unwrap();
    for i in &fixed.instances {
        let kind = if i.id == master.id { provision::iam::InstanceRole::Master } else { provision::iam::InstanceRole::Worker };
        assert_eq!(i.instance_profile, profile_arn(kind), "DescribeInstances shows {}'s own profile again", i.tags["Name"]);
        assert_eq!(association(i.id.clone()).await.map(|(_, arn)| arn), profile_arn(kind), "the association of {}", i.tags["Name"]);
    }
    let stdout = assert_ok(&clusterctl(home.path(), &["create", "-f", s, "--infra-only"]), "create once more");
    assert!(stdout.contains("no changes"), "{stdout}");

    let status = assert_ok(&clusterctl(home.path(), &["status", "-f", s, "-o", "json"]), "status");
    let status: serde_json::Value = serde_json::from_str(&status).unwrap();
    assert_eq!(status["in_sync"], true);

    // Destroy leaves nothing; a second destroy has nothing to do.
    let stdout = assert_ok(&clusterctl(home.path(), &["destroy", "-f", s, "--yes"]), "destroy");
    assert!(stdout.contains("nothing tagged with it remains"), "{stdout}");
    let after = provision::discover(&cloud, "it-full").await.unwrap();
    assert!(after.is_empty(), "left behind: {:?}", after.describe());
    assert_eq!(iam_leftovers("it-full").await, Vec::<String>::new());
    let stdout = assert_ok(&clusterctl(home.path(), &["destroy", "-f", s, "--yes"]), "second destroy");
    assert!(stdout.contains("nothing to destroy"), "{stdout}");
}

async fn cloud_fresh() -> Resilient {
    cloud().await
}

#[tokio::test(flavor = "multi_thread")]
async fn a_create_killed_midway_is_finished_by_the_next_with_exactly_the_expected_instances() {
    let cloud = cloud().await;
    let home = temp_home();
    let spec_path = unique_spec(home.path(), "it-kill", 62, 4);
    let _guard = DestroyGuard { home: home.path().into(), spec: spec_path.clone() };
    let s = spec_path.to_str().unwrap();

    let mut child = clusterctl_command(home.path())
        .args(["create", "-f", s, "-q", "--infra-only"])
        .spawn()
        .unwrap();
    // Kill it as soon as the first instances exist: the network is done, launches are under way.
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let inv = provision::discover(&cloud, "it-kill").await.unwrap();
        if !inv.instances.is_empty() {
            break;
        }
        assert!(Instant::now() < deadline, "create never launched an instance");
        if let Some(status) = child.try_wait().unwrap() {
            panic!("create finished ({status}) before it could be killed");
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    child.kill().unwrap(); // SIGKILL
    child.wait().unwrap();

    assert_ok(&clusterctl(home.path(), &["create", "-f", s, "--infra-only"]), "create after kill");
    let inv = provision::discover(&cloud, "it-kill").await.unwrap();
    assert_eq!(inv.instances.len(), 5, "{:?}", inv.describe());
    assert_eq!(inv.vpcs.len(), 1);
    assert_eq!(inv.subnets.len(), 2);
    assert_eq!(inv.security_groups.len(), 3);
    assert_eq!(inv.load_balancers.len(), 1);
    let stdout = assert_ok(&clusterctl(home.path(), &["create", "-f", s, "--infra-only"]), "third create");
    assert!(stdout.contains("no changes"), "{stdout}");

    assert_ok(&clusterctl(home.path(), &["destroy", "-f", s, "--yes"]), "destroy");
    assert!(provision::discover(&cloud, "it-kill").await.unwrap().is_empty());
    assert_eq!(iam_leftovers("it-kill").await, Vec::<String>::new());
}

#[tokio::test(flavor = "multi_thread")]
async fn dry_run_prints_the_plan_and_changes_nothing() {
    let cloud = cloud().await;
    let home = temp_home();
    let spec_path = unique_spec(home.path(), "it-dry", 63, 2);
    let s = spec_path.to_str().unwrap();
    let stdout = assert_ok(&clusterctl(home.path(), &["create", "-f", s, "--dry-run"]), "dry run");
    assert!(stdout.contains("+ vpc 10.63.0.0/16"), "{stdout}");
    assert!(stdout.contains("+ instance it-dry-default-1"), "{stdout}");
    assert!(stdout.contains("+ instance profile clusterctl-it-dry-master"), "{stdout}");
    assert!(stdout.contains("+ instance profile clusterctl-it-dry-worker"), "{stdout}");
    assert!(stdout.contains("to create"), "{stdout}");
    assert!(provision::discover(&cloud, "it-dry").await.unwrap().is_empty());
    assert_eq!(iam_leftovers("it-dry").await, Vec::<String>::new());
    assert!(!home.path().join("it-dry").exists(), "dry run wrote no key");
}

#[test]
fn an_invalid_spec_exits_2_naming_the_line_and_makes_no_cloud_call() {
    let home = temp_home();
    let path = home.path().join("bad.toml");
    let text = std::fs::read_to_string(root().join("clusters/localstack.toml")).unwrap().replacen("count = 1", "count = 2", 1);
    std::fs::write(&path, text).unwrap();
    // An endpoint where nothing listens: any cloud call would fail with exit 1 and a transport error.
    let out = clusterctl_command(home.path())
        .args(["create", "-f", path.to_str().unwrap()])
        .env("AWS_ENDPOINT_URL", "http://127.0.0.1:9")
        .env("AWS_ACCESS_KEY_ID", "test")
        .env("AWS_SECRET_ACCESS_KEY", "test")
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(2), "{stderr}");
    assert!(stderr.contains("bad.toml:") && stderr.contains("masters.count"), "{stderr}");
    assert!(!stderr.contains("no answer from the cloud API"), "{stderr}");
    assert!(!home.path().join("demo").exists());
}
