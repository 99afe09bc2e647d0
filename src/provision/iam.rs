//! The nodes' IAM roles, their least-privilege policies, and the instance profiles that carry them.
//!
//! Every machine runs on its instance's own credentials, one role per kind of node
//! ([`InstanceRole`]): `clusterctl-<cluster>-master` and `clusterctl-<cluster>-worker` under the
//! path `/clusterctl/`, each in the instance profile of the same name.
//! - The masters' cloud controller (service load balancers, machine replacement through the same
//!   converge as `create`, bootstrap of new machines): exactly the calls [`MASTER_CALLS`] lists,
//!   mutations only on resources tagged with the cluster (or created with its tag), and
//!   `iam:PassRole` only on the cluster's two roles (a replacement is launched with its profile).
//! - Every node's agent (masters run one too): exactly [`AGENT_CALLS`], the ECR read calls with
//!   which it pulls images from Amazon ECR (`src/agent/images.rs`), as kubelet's ECR credential
//!   provider does on EKS.
//!
//! IAM is global, so the roles and profiles are found by name and then checked for the cluster's tag.

use serde_json::{json, Value};

use crate::cloud::OWNER_TAG;

/// The IAM path of every role and instance profile clusterctl makes.
pub const IAM_PATH: &str = "/clusterctl/";

/// A kind of node, as IAM knows it: one role, inline policy and instance profile each.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, serde::Serialize)]
#[serde(rename_all = "lowercase")]
pub enum InstanceRole {
    Master,
    Worker,
}

impl InstanceRole {
    /// Both, in creation order.
    pub const ALL: [InstanceRole; 2] = [InstanceRole::Master, InstanceRole::Worker];

    /// The role of a pool's machines.
    pub fn of(role: crate::spec::Role) -> Self {
        match role {
            crate::spec::Role::Master => InstanceRole::Master,
            crate::spec::Role::Worker => InstanceRole::Worker,
        }
    }

    /// `master` or `worker`.
    pub fn as_str(self) -> &'static str {
        match self {
            InstanceRole::Master => "master",
            InstanceRole::Worker => "worker",
        }
    }

    /// Name of the role and of its instance profile (cluster names are at most 28 characters, so
    /// this stays under IAM's 64).
    pub fn name(self, cluster: &str) -> String {
        format!("clusterctl-{cluster}-{}", self.as_str())
    }

    /// Name of the inline policy inside the role.
    pub fn policy_name(self) -> &'static str {
        match self {
            InstanceRole::Master => "clusterctl-master",
            InstanceRole::Worker => "clusterctl-worker",
        }
    }

    /// The value of the role tag on the role and its profile.
    pub fn tag(self) -> &'static str {
        match self {
            InstanceRole::Master => "master-role",
            InstanceRole::Worker => "worker-role",
        }
    }

    /// The inline policy of the role.
    pub fn policy(self, cluster: &str) -> Value {
        match self {
            InstanceRole::Master => master_policy(cluster),
            InstanceRole::Worker => worker_policy(),
        }
    }
}

/// Who may assume the nodes' roles: EC2, on behalf of the instances launched with the profile.
pub fn trust_policy() -> Value {
    json!({
        "Version": "2012-10-17",
        "Statement": [{
            "Effect": "Allow",
            "Principal": { "Service": "ec2.amazonaws.com" },
            "Action": "sts:AssumeRole"
        }]
    })
}

/// Each [`crate::cloud::Cloud`] method the master calls, with the IAM actions it needs.
///
/// These are the calls of the cloud controller (`src/cloudcontroller/`), of the converge it runs
/// to replace machines (discovery, launches, API target registration) and of the bootstrap of new
/// machines (console output for host keys). The unit tests check that the policy allows all of
/// them and that every `cloud.<method>(` under `src/cloudcontroller/` is listed.
pub const MASTER_CALLS: &[(&str, &[&str])] = &[
    ("vpcs", &["ec2:DescribeVpcs"]),
    ("subnets", &["ec2:DescribeSubnets"]),
    ("internet_gateways", &["ec2:DescribeInternetGateways"]),
    ("route_tables", &["ec2:DescribeRouteTables"]),
    ("security_groups", &["ec2:DescribeSecurityGroups"]),
    ("key_pairs", &["ec2:DescribeKeyPairs"]),
    ("instances", &["ec2:DescribeInstances"]),
    ("instances_by_id", &["ec2:DescribeInstances"]),
    ("instance_statuses", &["ec2:DescribeInstanceStatus"]),
    ("find_image", &["ec2:DescribeImages"]),
    ("image", &["ec2:DescribeImages"]),
    ("console_output", &["ec2:GetConsoleOutput"]),
    ("load_balancers", &["elasticloadbalancing:DescribeLoadBalancers", "elasticloadbalancing:DescribeTags"]),
    ("target_groups", &["elasticloadbalancing:DescribeTargetGroups", "elasticloadbalancing:DescribeTags"]),
    ("listeners", &["elasticloadbalancing:DescribeListeners"]),
    ("target_health", &["elasticloadbalancing:DescribeTargetHealth"]),
    ("role", &["iam:GetRole"]),
    ("role_policy", &["iam:GetRolePolicy"]),
    ("instance_profile", &["iam:GetInstanceProfile"]),
    ("run_instance", &["ec2:RunInstances", "ec2:CreateTags", "iam:PassRole"]),
    ("terminate_instances", &["ec2:TerminateInstances"]),
    ("create_instance_route", &["ec2:CreateRoute"]),
    ("delete_route", &["ec2:DeleteRoute"]),
    ("disable_source_dest_check", &["ec2:ModifyInstanceAttribute"]),
    ("create_security_group", &["ec2:CreateSecurityGroup", "ec2:CreateTags"]),
    ("authorize_ingress", &["ec2:AuthorizeSecurityGroupIngress"]),
    ("revoke_ingress", &["ec2:RevokeSecurityGroupIngress"]),
    ("delete_security_group", &["ec2:DeleteSecurityGroup"]),
    ("create_load_balancer", &["elasticloadbalancing:CreateLoadBalancer", "elasticloadbalancing:AddTags"]),
    ("create_target_group", &["elasticloadbalancing:CreateTargetGroup", "elasticloadbalancing:AddTags"]),
    ("create_listener", &["elasticloadbalancing:CreateListener", "elasticloadbalancing:AddTags"]),
    ("register_targets", &["elasticloadbalancing:RegisterTargets"]),
    ("deregister_targets", &["elasticloadbalancing:DeregisterTargets"]),
    ("delete_listener", &["elasticloadbalancing:DeleteListener"]),
    ("delete_load_balancer", &["elasticloadbalancing:DeleteLoadBalancer"]),
    ("delete_target_group", &["elasticloadbalancing:DeleteTargetGroup"]),
];

/// What every node's agent calls, with the IAM actions it needs: an ECR authorization token
/// (`cloud::ecr`), with which the container runtime then pulls, each pull being authorized on
/// the role for the repository's image and layers.
pub const AGENT_CALLS: &[(&str, &[&str])] = &[
    ("ecr authorization_token", &["ecr:GetAuthorizationToken"]),
    ("the runtime's pull with the token", &["ecr:BatchCheckLayerAvailability", "ecr:GetDownloadUrlForLayer", "ecr:BatchGetImage"]),
];

/// The agent's statements: ECR's token (which has no resource-level permission) and reads of any
/// repository (images may come from other accounts' registries that share them with this one).
fn agent_statements() -> Vec<Value> {
    vec![
        json!({ "Sid": "EcrToken", "Effect": "Allow", "Action": "ecr:GetAuthorizationToken", "Resource": "*" }),
        json!({
            "Sid": "EcrPull",
            "Effect": "Allow",
            "Action": ["ecr:BatchCheckLayerAvailability", "ecr:GetDownloadUrlForLayer", "ecr:BatchGetImage"],
            "Resource": "arn:aws:ecr:*:*:repository/*"
        }),
    ]
}

/// The workers' inline policy: the agent's calls and nothing else.
pub fn worker_policy() -> Value {
    json!({ "Version": "2012-10-17", "Statement": agent_statements() })
}

/// The masters' inline policy: least privilege for [`MASTER_CALLS`], scoped to the cluster's tag.
pub fn master_policy(cluster: &str) -> Value {
    let roles: Vec<String> = InstanceRole::ALL.iter().map(|r| r.name(cluster)).collect();
    let role_arns: Vec<String> = roles.iter().map(|r| format!("arn:aws:iam::*:role{IAM_PATH}{r}")).collect();
    let profile_arns = roles.iter().map(|r| format!("arn:aws:iam::*:instance-profile{IAM_PATH}{r}"));
    let resource_tag = json!({ "StringEquals": { format!("ec2:ResourceTag/{OWNER_TAG}"): cluster } });
    let request_tag = json!({ "StringEquals": { format!("aws:RequestTag/{OWNER_TAG}"): cluster } });
    let elb_resource_tag = json!({ "StringEquals": { format!("aws:ResourceTag/{OWNER_TAG}"): cluster } });
    let elb = ["arn:aws:elasticloadbalancing:*:*:loadbalancer/net/*/*", "arn:aws:elasticloadbalancing:*:*:targetgroup/*/*", "arn:aws:elasticloadbalancing:*:*:listener/net/*/*/*"];
    let mut policy = json!({
        "Version": "2012-10-17",
        "Statement": [
            {
                // Describe calls have no resource-level permissions.
                "Sid": "Read",
                "Effect": "Allow",
                "Action": [
                    "ec2:DescribeVpcs", "ec2:DescribeSubnets", "ec2:DescribeInternetGateways", "ec2:DescribeRouteTables",
                    "ec2:DescribeSecurityGroups", "ec2:DescribeKeyPairs", "ec2:DescribeInstances", "ec2:DescribeInstanceStatus",
                    "ec2:DescribeImages",
                    "elasticloadbalancing:DescribeLoadBalancers", "elasticloadbalancing:DescribeTargetGroups",
                    "elasticloadbalancing:DescribeListeners", "elasticloadbalancing:DescribeTargetHealth",
                    "elasticloadbalancing:DescribeTags"
                ],
                "Resource": "*"
            },
            {
                // The route controller: nodes' pod ranges in the cluster's own route tables.
                "Sid": "OwnRouteTables",
                "Effect": "Allow",
                "Action": ["ec2:CreateRoute", "ec2:DeleteRoute"],
                "Resource": "arn:aws:ec2:*:*:route-table/*",
                "Condition": resource_tag
            },
            {
                "Sid": "OwnInstances",
                "Effect": "Allow",
                "Action": ["ec2:TerminateInstances", "ec2:GetConsoleOutput", "ec2:ModifyInstanceAttribute"],
                "Resource": "arn:aws:ec2:*:*:instance/*",
                "Condition": resource_tag
            },
            {
                // What a launch creates must carry the cluster's tag from the start.
                "Sid": "LaunchTagged",
                "Effect": "Allow",
                "Action": "ec2:RunInstances",
                "Resource": ["arn:aws:ec2:*:*:instance/*", "arn:aws:ec2:*:*:volume/*"],
                "Condition": request_tag
            },
            {
                "Sid": "LaunchIntoOwnNetwork",
                "Effect": "Allow",
                "Action": "ec2:RunInstances",
                "Resource": ["arn:aws:ec2:*:*:subnet/*", "arn:aws:ec2:*:*:security-group/*"],
                "Condition": resource_tag
            },
            {
                // Images are not the cluster's; the network interface is made by the launch itself.
                "Sid": "LaunchWith",
                "Effect": "Allow",
                "Action": "ec2:RunInstances",
                "Resource": [
                    "arn:aws:ec2:*::image/*",
                    "arn:aws:ec2:*:*:network-interface/*",
                    format!("arn:aws:ec2:*:*:key-pair/clusterctl-{cluster}")
                ]
            },
            {
                "Sid": "TagOnCreate",
                "Effect": "Allow",
                "Action": "ec2:CreateTags",
                "Resource": ["arn:aws:ec2:*:*:instance/*", "arn:aws:ec2:*:*:volume/*", "arn:aws:ec2:*:*:security-group/*"],
                "Condition": { "StringEquals": { "ec2:CreateAction": ["RunInstances", "CreateSecurityGroup"] } }
            },
            {
                "Sid": "CreateServiceGroups",
                "Effect": "Allow",
                "Action": "ec2:CreateSecurityGroup",
                "Resource": "arn:aws:ec2:*:*:security-group/*",
                "Condition": request_tag
            },
            {
                "Sid": "CreateServiceGroupsInOwnVpc",
                "Effect": "Allow",
                "Action": "ec2:CreateSecurityGroup",
                "Resource": "arn:aws:ec2:*:*:vpc/*",
                "Condition": resource_tag
            },
            {
                "Sid": "OwnSecurityGroups",
                "Effect": "Allow",
                "Action": ["ec2:AuthorizeSecurityGroupIngress", "ec2:RevokeSecurityGroupIngress", "ec2:DeleteSecurityGroup"],
                "Resource": "arn:aws:ec2:*:*:security-group/*",
                "Condition": resource_tag
            },
            {
                "Sid": "CreateBalancers",
                "Effect": "Allow",
                "Action": ["elasticloadbalancing:CreateLoadBalancer", "elasticloadbalancing:CreateTargetGroup", "elasticloadbalancing:CreateListener"],
                "Resource": elb,
                "Condition": request_tag
            },
            {
                "Sid": "TagBalancersOnCreate",
                "Effect": "Allow",
                "Action": "elasticloadbalancing:AddTags",
                "Resource": elb,
                "Condition": { "StringEquals": { "elasticloadbalancing:CreateAction": ["CreateLoadBalancer", "CreateTargetGroup", "CreateListener"] } }
            },
            {
                "Sid": "OwnBalancers",
                "Effect": "Allow",
                "Action": [
                    "elasticloadbalancing:CreateListener", "elasticloadbalancing:RegisterTargets", "elasticloadbalancing:DeregisterTargets",
                    "elasticloadbalancing:DeleteListener", "elasticloadbalancing:DeleteLoadBalancer", "elasticloadbalancing:DeleteTargetGroup"
                ],
                "Resource": elb,
                "Condition": elb_resource_tag
            },
            {
                // A replacement is launched with its kind's profile (the cluster's own), and nothing else.
                "Sid": "PassOwnRoles",
                "Effect": "Allow",
                "Action": "iam:PassRole",
                "Resource": role_arns,
                "Condition": { "StringEquals": { "iam:PassedToService": "ec2.amazonaws.com" } }
            },
            {
                // The converge a replacement runs reads the roles and profiles it would otherwise create.
                "Sid": "ReadOwnRoles",
                "Effect": "Allow",
                "Action": ["iam:GetRole", "iam:GetRolePolicy", "iam:GetInstanceProfile"],
                "Resource": role_arns.iter().cloned().chain(profile_arns).collect::<Vec<_>>()
            }
        ]
    });
    // The master's own agent pulls as every node's does.
    if let Some(statements) = policy["Statement"].as_array_mut() {
        statements.extend(agent_statements());
    }
    policy
}

/// Whether a policy document as the cloud returned it says the same as `want` (the JSON is
/// compared, not the text: IAM may reformat it).
pub fn same_policy(have: &str, want: &Value) -> bool {
    serde_json::from_str::<Value>(have).is_ok_and(|have| &have == want)
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeSet;

    use super::*;

    fn statements(policy: &Value) -> Vec<&Value> {
        policy["Statement"].as_array().expect("statements").iter().collect()
    }

    fn list(v: &Value) -> Vec<String> {
        match v {
            Value::String(s) => vec![s.clone()],
            Value::Array(a) => a.iter().map(|x| x.as_str().expect("string").to_string()).collect(),
            other => panic!("not a string or a list: {other}"),
        }
    }

    fn allowed(policy: &Value) -> BTreeSet<String> {
        statements(policy).iter().flat_map(|s| list(&s["Action"])).collect()
    }

    #[test]
    fn the_master_policy_allows_every_call_the_master_makes_and_nothing_wildcarded() {
        let policy = master_policy("demo");
        assert_eq!(policy["Version"], "2012-10-17");
        let actions = allowed(&policy);
        for (method, needs) in MASTER_CALLS {
            for action in *needs {
                assert!(actions.contains(*action), "{method} needs {action}, which the policy does not allow");
            }
        }
        for s in statements(&policy) {
            assert_eq!(s["Effect"], "Allow");
            for a in list(&s["Action"]) {
                assert!(!a.contains('*'), "wildcard action {a}");
            }
        }
        // Nothing is allowed that no call needs.
        let needed: BTreeSet<String> = MASTER_CALLS.iter().chain(AGENT_CALLS).flat_map(|(_, a)| a.iter().map(|s| s.to_string())).collect();
        assert_eq!(actions, needed);
    }

    #[test]
    fn the_worker_policy_allows_exactly_the_ecr_reads() {
        let policy = worker_policy();
        let needed: BTreeSet<String> = AGENT_CALLS.iter().flat_map(|(_, a)| a.iter().map(|s| s.to_string())).collect();
        assert_eq!(allowed(&policy), needed);
        assert_eq!(needed, ["ecr:BatchCheckLayerAvailability", "ecr:BatchGetImage", "ecr:GetAuthorizationToken", "ecr:GetDownloadUrlForLayer"].map(String::from).into());
        for s in statements(&policy) {
            assert_eq!(s["Effect"], "Allow");
            let resources = list(&s["Resource"]);
            if list(&s["Action"]) != ["ecr:GetAuthorizationToken"] {
                assert_eq!(resources, ["arn:aws:ecr:*:*:repository/*"], "{}", s["Sid"]);
            }
        }
        assert_eq!(InstanceRole::Worker.policy("demo"), policy);
        assert_eq!(InstanceRole::Worker.name("demo"), "clusterctl-demo-worker");
        assert_ne!(InstanceRole::Worker.policy_name(), InstanceRole::Master.policy_name());
    }

    #[test]
    fn the_master_policy_changes_only_what_carries_the_cluster_tag() {
        let policy = master_policy("demo");
        for s in statements(&policy) {
            let actions = list(&s["Action"]);
            let ecr_read = |a: &str| AGENT_CALLS.iter().any(|(_, needs)| needs.contains(&a));
            let read_only = actions.iter().all(|a| a.contains(":Describe") || a.contains(":Get") || ecr_read(a));
            let resources = list(&s["Resource"]);
            if read_only {
                continue;
            }
            assert!(!resources.iter().any(|r| r == "*"), "mutating statement {} on every resource", s["Sid"]);
            let scoped = s.get("Condition").is_some() || resources.iter().all(|r| r.contains("demo") || r.contains(":image/") || r.contains(":network-interface/"));
            assert!(scoped, "statement {} is not scoped to the cluster", s["Sid"]);
        }
        let pass = statements(&policy).into_iter().find(|s| list(&s["Action"]) == ["iam:PassRole"]).expect("PassRole statement");
        assert_eq!(list(&pass["Resource"]), vec!["arn:aws:iam::*:role/clusterctl/clusterctl-demo-master".to_string(), "arn:aws:iam::*:role/clusterctl/clusterctl-demo-worker".to_string()]);
        let terminate = statements(&policy).into_iter().find(|s| list(&s["Action"]).contains(&"ec2:TerminateInstances".to_string())).expect("terminate statement");
        assert_eq!(terminate["Condition"]["StringEquals"]["ec2:ResourceTag/clusterctl:cluster"], "demo");
        let launch = statements(&policy).into_iter().find(|s| s["Sid"] == "LaunchTagged").expect("launch statement");
        assert_eq!(launch["Condition"]["StringEquals"]["aws:RequestTag/clusterctl:cluster"], "demo");
    }

    #[test]
    fn every_cloud_call_of_the_cloud_controller_is_listed() {
        let sources = [
            include_str!("../cloudcontroller/mod.rs"),
            include_str!("../cloudcontroller/machines.rs"),
            include_str!("../cloudcontroller/nodes.rs"),
            include_str!("../cloudcontroller/services.rs"),
        ];
        let listed: BTreeSet<&str> = MASTER_CALLS.iter().map(|(m, _)| *m).collect();
        for source in sources {
            for (i, _) in source.match_indices("cloud.") {
                let rest = &source[i + "cloud.".len()..];
                let name: String = rest.chars().take_while(|c| c.is_ascii_alphanumeric() || *c == '_').collect();
                let is_call = rest[name.len()..].starts_with('(');
                if is_call && !matches!(name.as_str(), "as_ref" | "clone") {
                    assert!(listed.contains(name.as_str()), "the cloud controller calls {name}, which MASTER_CALLS does not list");
                }
            }
        }
    }

    #[test]
    fn names_fit_iam_limits() {
        let longest = "a".repeat(28);
        assert!(InstanceRole::ALL.iter().all(|r| r.name(&longest).len() <= 64));
        assert!(same_policy(&master_policy("x").to_string(), &master_policy("x")));
        assert!(!same_policy(&master_policy("x").to_string(), &master_policy("y")));
        assert!(!same_policy("not json", &master_policy("x")));
    }
}
