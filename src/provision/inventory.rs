//! What the cloud already holds for a cluster, found by its ownership tag.

use std::collections::BTreeMap;

use serde::Serialize;

use crate::cloud::{
    owned_by, tags_match, Cloud, Instance, InstanceProfile, InternetGateway, KeyPair, Listener, LoadBalancer, Role, RouteTable,
    SecurityGroup, Subnet, TargetGroup, TargetHealth, Vpc, POOL_TAG, ROLE_TAG, SLOT_TAG,
};

use super::iam::InstanceRole;
use super::ProvisionError;

/// Every resource carrying a cluster's ownership tag.
#[derive(Debug, Clone, Default, Serialize)]
pub struct Inventory {
    pub vpcs: Vec<Vpc>,
    pub subnets: Vec<Subnet>,
    pub internet_gateways: Vec<InternetGateway>,
    pub route_tables: Vec<RouteTable>,
    pub security_groups: Vec<SecurityGroup>,
    pub key_pairs: Vec<KeyPair>,
    /// Instances in any state but terminated.
    pub instances: Vec<Instance>,
    pub load_balancers: Vec<LoadBalancer>,
    pub target_groups: Vec<TargetGroup>,
    /// Listeners of the cluster's load balancers.
    pub listeners: Vec<Listener>,
    /// Registered targets per target group ARN.
    pub targets: BTreeMap<String, Vec<TargetHealth>>,
    /// The masters' IAM role, policy and instance profile.
    pub masters_iam: FoundIdentity,
    /// The workers' IAM role, policy and instance profile.
    pub workers_iam: FoundIdentity,
}

/// One kind of node's IAM identity as found ([`InstanceRole`]).
#[derive(Debug, Clone, Default, Serialize)]
pub struct FoundIdentity {
    /// The role (global, found by name, kept only when it carries the cluster's tag).
    pub role: Option<Role>,
    /// Its inline policy document (JSON text), when the role has it.
    pub policy: Option<String>,
    /// The instance profile (found by name, kept only when it carries the cluster's tag).
    pub profile: Option<InstanceProfile>,
}

impl FoundIdentity {
    fn len(&self) -> usize {
        usize::from(self.role.is_some()) + usize::from(self.policy.is_some()) + usize::from(self.profile.is_some())
    }
}

/// Finds a kind of node's role, policy and profile by name, kept only with the cluster's tag.
async fn find_identity(cloud: &dyn Cloud, cluster: &str, kind: InstanceRole) -> Result<FoundIdentity, ProvisionError> {
    let owned = owned_by(cluster);
    let name = kind.name(cluster);
    let (role, profile) = tokio::try_join!(cloud.role(&name), cloud.instance_profile(&name))?;
    let role = role.filter(|r| tags_match(&r.tags, &owned));
    let profile = profile.filter(|p| tags_match(&p.tags, &owned));
    let policy = match &role {
        Some(r) => cloud.role_policy(&r.name, kind.policy_name()).await?,
        None => None,
    };
    Ok(FoundIdentity { role, policy, profile })
}

/// Lists everything tagged as owned by the cluster.
pub async fn discover(cloud: &dyn Cloud, cluster: &str) -> Result<Inventory, ProvisionError> {
    let owned = owned_by(cluster);
    let (vpcs, subnets, internet_gateways, route_tables, security_groups, key_pairs, instances, load_balancers, target_groups) = tokio::try_join!(
        cloud.vpcs(&owned),
        cloud.subnets(&owned),
        cloud.internet_gateways(&owned),
        cloud.route_tables(&owned),
        cloud.security_groups(&owned),
        cloud.key_pairs(&owned),
        cloud.instances(&owned),
        cloud.load_balancers(&owned),
        cloud.target_groups(&owned),
    )?;
    let mut listeners = Vec::new();
    for lb in &load_balancers {
        listeners.extend(cloud.listeners(&lb.arn).await?);
    }
    let mut targets = BTreeMap::new();
    for tg in &target_groups {
        targets.insert(tg.arn.clone(), cloud.target_health(&tg.arn).await?);
    }
    // IAM is global and has no tag filters: the names are the cluster's, the tag proves it.
    let (masters_iam, workers_iam) = tokio::try_join!(find_identity(cloud, cluster, InstanceRole::Master), find_identity(cloud, cluster, InstanceRole::Worker))?;
    Ok(Inventory {
        vpcs,
        subnets,
        internet_gateways,
        route_tables,
        security_groups,
        key_pairs,
        instances,
        load_balancers,
        target_groups,
        listeners,
        targets,
        masters_iam,
        workers_iam,
    })
}

impl Inventory {
    /// Whether nothing of the cluster exists.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// How many resources were found.
    pub fn len(&self) -> usize {
        self.vpcs.len()
            + self.subnets.len()
            + self.internet_gateways.len()
            + self.route_tables.len()
            + self.security_groups.len()
            + self.key_pairs.len()
            + self.instances.len()
            + self.load_balancers.len()
            + self.target_groups.len()
            + self.listeners.len()
            + self.masters_iam.len()
            + self.workers_iam.len()
    }

    /// One line per resource: `kind id (name)`, for listings of what remains.
    pub fn describe(&self) -> Vec<String> {
        let mut out = Vec::new();
        let name = |tags: &crate::cloud::Tags| tags.get("Name").map(|n| format!(" ({n})")).unwrap_or_default();
        out.extend(self.vpcs.iter().map(|v| format!("vpc {} {}{}", v.id, v.cidr, name(&v.tags))));
        out.extend(self.subnets.iter().map(|s| format!("subnet {} {} {}{}", s.id, s.cidr, s.zone, name(&s.tags))));
        out.extend(self.internet_gateways.iter().map(|g| format!("internet gateway {}{}", g.id, name(&g.tags))));
        out.extend(self.route_tables.iter().map(|r| format!("route table {}{}", r.id, name(&r.tags))));
        out.extend(self.security_groups.iter().map(|g| format!("security group {} {}", g.id, g.name)));
        out.extend(self.key_pairs.iter().map(|k| format!("key pair {}", k.name)));
        out.extend(self.instances.iter().map(|i| format!("instance {} {}{}", i.id, i.state, name(&i.tags))));
        out.extend(self.load_balancers.iter().map(|l| format!("load balancer {}", l.name)));
        out.extend(self.target_groups.iter().map(|t| format!("target group {}", t.name)));
        out.extend(self.listeners.iter().map(|l| format!("listener {} port {}", l.arn, l.port)));
        for kind in InstanceRole::ALL {
            let found = self.iam(kind);
            if let Some(r) = &found.role {
                out.push(format!("iam role {}{}", r.path, r.name));
                if found.policy.is_some() {
                    out.push(format!("iam role policy {} of {}", kind.policy_name(), r.name));
                }
            }
            if let Some(p) = &found.profile {
                let roles = if p.roles.is_empty() { "no role".to_string() } else { format!("role {}", p.roles.join(", ")) };
                out.push(format!("instance profile {}{} ({roles})", p.path, p.name));
            }
        }
        out
    }

    /// A kind of node's IAM identity as found.
    pub fn iam(&self, kind: InstanceRole) -> &FoundIdentity {
        match kind {
            InstanceRole::Master => &self.masters_iam,
            InstanceRole::Worker => &self.workers_iam,
        }
    }

    /// The resource of a kind that carries a role tag.
    pub fn with_role<'a, T>(items: &'a [T], role: &str, tags: impl Fn(&T) -> &crate::cloud::Tags) -> Vec<&'a T> {
        items.iter().filter(|i| tags(i).get(ROLE_TAG).map(String::as_str) == Some(role)).collect()
    }
}

/// The pool and slot an instance was launched for, from its tags.
pub fn pool_slot(instance: &Instance) -> Option<(String, u32)> {
    Some((instance.tags.get(POOL_TAG)?.clone(), instance.tags.get(SLOT_TAG)?.parse().ok()?))
}
