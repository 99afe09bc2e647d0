//! The difference between a spec and what exists, as ordered steps.
//!
//! A plan names resources by what they are in the cluster (zone, pool and
//! slot, role), not by cloud ids, because most of them do not exist yet;
//! [`super::converge`] resolves the ids while it applies the steps in order.

use std::collections::{BTreeMap, BTreeSet};
use std::fmt;

use ipnet::Ipv4Net;
use serde::Serialize;

use crate::cloud::{Instance, IngressRule, Protocol, RuleSource, ROLE_TAG};
use crate::spec::ClusterSpec;

use super::iam::{same_policy, InstanceRole};
use super::inventory::{pool_slot, Inventory};
use super::{GroupRole, Names, ProvisionError};

/// One change to make.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(tag = "step", rename_all = "snake_case")]
pub enum Step {
    CreateVpc { cidr: Ipv4Net },
    CreateSubnet { zone: String, cidr: Ipv4Net },
    EnablePublicIps { zone: String },
    CreateInternetGateway,
    AttachInternetGateway,
    CreateRouteTable,
    CreateDefaultRoute,
    AssociateRouteTable { zone: String },
    CreateSecurityGroup { group: String },
    AuthorizeIngress { group: String, rules: Vec<IngressRule> },
    RevokeIngress { group: String, rules: Vec<IngressRule> },
    ImportKeyPair { name: String },
    CreateRole { name: String, kind: InstanceRole },
    PutRolePolicy { role: String, policy: String, kind: InstanceRole },
    UpdateRolePolicy { role: String, policy: String, kind: InstanceRole },
    CreateInstanceProfile { name: String, kind: InstanceRole },
    AddRoleToInstanceProfile { profile: String, role: String },
    LaunchInstance { pool: String, slot: u32, name: String, zone: String, instance_type: String },
    TerminateInstance { id: String, name: String, reason: String },
    SetInstanceProfile { id: String, name: String, profile: String },
    CreateTargetGroup { name: String, port: u16 },
    CreateLoadBalancer { name: String },
    CreateListener { port: u16 },
    RegisterMasters { slots: Vec<u32> },
    DeregisterTargets { ids: Vec<String> },
    DeleteListener { arn: String },
    DeleteLoadBalancer { name: String, arn: String },
    DeleteTargetGroup { name: String, arn: String },
}

impl Step {
    /// `+` creates, `~` changes, `-` deletes.
    pub fn sign(&self) -> char {
        match self {
            Step::EnablePublicIps { .. }
            | Step::AttachInternetGateway
            | Step::AssociateRouteTable { .. }
            | Step::AuthorizeIngress { .. }
            | Step::RevokeIngress { .. }
            | Step::RegisterMasters { .. }
            | Step::DeregisterTargets { .. }
            | Step::UpdateRolePolicy { .. }
            | Step::AddRoleToInstanceProfile { .. }
            | Step::SetInstanceProfile { .. } => '~',
            Step::TerminateInstance { .. } | Step::DeleteListener { .. } | Step::DeleteLoadBalancer { .. } | Step::DeleteTargetGroup { .. } => '-',
            _ => '+',
        }
    }
}

impl fmt::Display for Step {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let rules = |r: &[IngressRule]| r.iter().map(|r| r.to_string()).collect::<Vec<_>>().join(", ");
        match self {
            Step::CreateVpc { cidr } => write!(f, "vpc {cidr}"),
            Step::CreateSubnet { zone, cidr } => write!(f, "subnet {cidr} in {zone}"),
            Step::EnablePublicIps { zone } => write!(f, "subnet in {zone}: give instances public addresses"),
            Step::CreateInternetGateway => write!(f, "internet gateway"),
            Step::AttachInternetGateway => write!(f, "internet gateway: attach to the vpc"),
            Step::CreateRouteTable => write!(f, "route table"),
            Step::CreateDefaultRoute => write!(f, "route table: default route 0.0.0.0/0 through the internet gateway"),
            Step::AssociateRouteTable { zone } => write!(f, "route table: associate with the subnet in {zone}"),
            Step::CreateSecurityGroup { group } => write!(f, "security group {group}"),
            Step::AuthorizeIngress { group, rules: r } => write!(f, "security group {group}: allow {}", rules(r)),
            Step::RevokeIngress { group, rules: r } => write!(f, "security group {group}: revoke {}", rules(r)),
            Step::ImportKeyPair { name } => write!(f, "key pair {name}"),
            Step::CreateRole { name, kind } => write!(f, "iam role {name} (for the {}s' instances)", kind.as_str()),
            Step::PutRolePolicy { role, policy, .. } => write!(f, "iam role {role}: inline policy {policy}"),
            Step::UpdateRolePolicy { role, policy, .. } => write!(f, "iam role {role}: update inline policy {policy}"),
            Step::CreateInstanceProfile { name, .. } => write!(f, "instance profile {name}"),
            Step::AddRoleToInstanceProfile { profile, role } => write!(f, "instance profile {profile}: add role {role}"),
            Step::LaunchInstance { name, zone, instance_type, .. } => write!(f, "instance {name} ({instance_type} in {zone})"),
            Step::TerminateInstance { id, name, reason } => write!(f, "instance {name} ({id}): {reason}"),
            Step::SetInstanceProfile { id, name, profile } => write!(f, "instance {name} ({id}): run on instance profile {profile}"),
            Step::CreateTargetGroup { name, port } => write!(f, "target group {name} (tcp/{port})"),
            Step::CreateLoadBalancer { name } => write!(f, "network load balancer {name}"),
            Step::CreateListener { port } => write!(f, "listener tcp/{port}"),
            Step::RegisterMasters { slots } => {
                write!(f, "target group: register masters {}", slots.iter().map(|s| s.to_string()).collect::<Vec<_>>().join(", "))
            }
            Step::DeregisterTargets { ids } => write!(f, "target group: deregister {}", ids.join(", ")),
            Step::DeleteListener { arn } => write!(f, "listener {arn}"),
            Step::DeleteLoadBalancer { name, .. } => write!(f, "load balancer {name}"),
            Step::DeleteTargetGroup { name, .. } => write!(f, "target group {name}"),
        }
    }
}

/// The ordered steps that take what exists to what the spec asks for.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct Plan {
    pub steps: Vec<Step>,
    /// Things noticed but deliberately left alone.
    pub notes: Vec<String>,
}

impl Plan {
    /// Whether nothing needs to change.
    pub fn is_empty(&self) -> bool {
        self.steps.is_empty()
    }
}

impl fmt::Display for Plan {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.steps.is_empty() {
            writeln!(f, "no changes")?;
        }
        for step in &self.steps {
            writeln!(f, "  {} {step}", step.sign())?;
        }
        for note in &self.notes {
            writeln!(f, "  note: {note}")?;
        }
        let count = |c: char| self.steps.iter().filter(|s| s.sign() == c).count();
        if !self.steps.is_empty() {
            writeln!(f, "{} to create, {} to change, {} to delete", count('+'), count('~'), count('-'))?;
        }
        Ok(())
    }
}

/// etcd's client and peer ports, open on the masters to the masters only.
pub const ETCD_PORTS: (u16, u16) = (2379, 2380);

/// The inbound rules each security group must have, exactly; a group source is named by the
/// group's name (the plan maps it to and from the cloud's ids).
///
/// The VPC reaches every port of the workers, and every port of the masters but etcd's: those
/// only the masters' own group reaches, so that no worker, pod or load balancer can even open a
/// connection to etcd (which also trusts a CA of its own, see `node::etcd`).
pub fn desired_rules(spec: &ClusterSpec, role: GroupRole) -> BTreeSet<IngressRule> {
    let vpc = RuleSource::Cidr(spec.network.vpc_cidr);
    let tcp = |port: u16, source: Ipv4Net| IngressRule { protocol: Protocol::Tcp, from_port: port, to_port: port, source: RuleSource::Cidr(source) };
    let range = |protocol: Protocol, from_port: u16, to_port: u16, source: &RuleSource| IngressRule { protocol, from_port, to_port, source: source.clone() };
    let admins = &spec.network.admin_cidrs;
    let mut rules = BTreeSet::new();
    match role {
        GroupRole::Masters => {
            rules.extend(admins.iter().map(|a| tcp(22, *a)));
            rules.extend(admins.iter().map(|a| tcp(spec.api.port, *a)));
            let (etcd_from, etcd_to) = ETCD_PORTS;
            rules.insert(range(Protocol::Tcp, 0, etcd_from - 1, &vpc));
            rules.insert(range(Protocol::Tcp, etcd_to + 1, 65535, &vpc));
            rules.insert(range(Protocol::Udp, 0, 65535, &vpc));
            rules.insert(range(Protocol::Icmp, 0, 0, &vpc));
            let masters = RuleSource::Group(Names::new(spec).group_name(GroupRole::Masters));
            rules.insert(range(Protocol::Tcp, etcd_from, etcd_to, &masters));
        }
        GroupRole::Workers => {
            rules.extend(admins.iter().map(|a| tcp(22, *a)));
            rules.insert(range(Protocol::All, 0, 0, &vpc));
        }
        GroupRole::ApiLb => {
            rules.extend(admins.iter().map(|a| tcp(spec.api.port, *a)));
        }
    }
    rules
}

/// The security group roles a spec needs.
pub fn group_roles(spec: &ClusterSpec) -> Vec<GroupRole> {
    GroupRole::ALL.into_iter().filter(|r| *r != GroupRole::ApiLb || spec.api.load_balancer).collect()
}

/// Instances of the inventory by pool and slot; extra instances in one slot come after the first.
pub fn instances_by_slot(inventory: &Inventory) -> BTreeMap<(String, u32), Vec<&Instance>> {
    let mut map: BTreeMap<(String, u32), Vec<&Instance>> = BTreeMap::new();
    for i in inventory.instances.iter().filter(|i| !i.state.is_gone()) {
        if let Some(key) = pool_slot(i) {
            map.entry(key).or_default().push(i);
        }
    }
    map
}

/// Computes the steps from `inventory` to `spec`.
pub fn plan(spec: &ClusterSpec, inventory: &Inventory) -> Result<Plan, ProvisionError> {
    let names = Names::new(spec);
    let mut p = Plan::default();
    let steps = &mut p.steps;

    // Network.
    if inventory.vpcs.len() > 1 {
        let ids: Vec<_> = inventory.vpcs.iter().map(|v| v.id.as_str()).collect();
        return Err(ProvisionError::Conflict(format!(
            "cluster {} owns {} VPCs ({}); expected one. Destroy the cluster or delete the extra VPC",
            spec.name,
            ids.len(),
            ids.join(", ")
        )));
    }
    let vpc = inventory.vpcs.first();
    match vpc {
        None => steps.push(Step::CreateVpc { cidr: spec.network.vpc_cidr }),
        Some(v) if v.cidr != spec.network.vpc_cidr => {
            return Err(ProvisionError::Conflict(format!(
                "the cluster's VPC {} has CIDR {} but the spec asks for {}; a VPC's CIDR cannot change",
                v.id, v.cidr, spec.network.vpc_cidr
            )));
        }
        Some(_) => {}
    }
    for want in &spec.network.subnets {
        let zone = want.zone.as_str().to_string();
        match inventory.subnets.iter().find(|s| s.zone == zone && s.cidr == want.cidr) {
            None => {
                steps.push(Step::CreateSubnet { zone: zone.clone(), cidr: want.cidr });
                steps.push(Step::EnablePublicIps { zone });
            }
            Some(s) if !s.map_public_ip_on_launch => steps.push(Step::EnablePublicIps { zone }),
            Some(_) => {}
        }
    }
    for s in &inventory.subnets {
        if !spec.network.subnets.iter().any(|w| w.zone.as_str() == s.zone && w.cidr == s.cidr) {
            p.notes.push(format!("subnet {} ({} in {}) is not in the spec; left alone until destroy", s.id, s.cidr, s.zone));
        }
    }
    match inventory.internet_gateways.first() {
        None => {
            steps.push(Step::CreateInternetGateway);
            steps.push(Step::AttachInternetGateway);
        }
        Some(g) if vpc.is_none_or(|v| !g.attached_vpcs.contains(&v.id)) => steps.push(Step::AttachInternetGateway),
        Some(_) => {}
    }
    let route_table = inventory.route_tables.iter().find(|r| r.tags.get(ROLE_TAG).map(String::as_str) == Some("public"));
    match route_table {
        None => {
            steps.push(Step::CreateRouteTable);
            steps.push(Step::CreateDefaultRoute);
        }
        Some(r) => {
            let default: Ipv4Net = Ipv4Net::default();
            if !r.routes.iter().any(|rt| rt.destination == default && rt.gateway_id.as_deref().is_some_and(|g| g.starts_with("igw-"))) {
                steps.push(Step::CreateDefaultRoute);
            }
        }
    }
    for want in &spec.network.subnets {
        let existing = inventory.subnets.iter().find(|s| s.zone == want.zone.as_str() && s.cidr == want.cidr);
        let associated = match (route_table, existing) {
            (Some(r), Some(s)) => r.associations.iter().any(|a| a.subnet_id.as_deref() == Some(s.id.as_str())),
            _ => false,
        };
        if !associated {
            steps.push(Step::AssociateRouteTable { zone: want.zone.as_str().to_string() });
        }
    }

    // Security groups and their rules.
    for role in group_roles(spec) {
        let name = names.group_name(role);
        let want = desired_rules(spec, role);
        match inventory.security_groups.iter().find(|g| g.name == name) {
            None => {
                steps.push(Step::CreateSecurityGroup { group: name.clone() });
                steps.push(Step::AuthorizeIngress { group: name, rules: want.into_iter().collect() });
            }
            Some(g) => {
                // The cloud names a source group by id, the plan by name; a group the cluster
                // does not own keeps its id, and so never matches a wanted rule.
                let name_of = |id: &str| Some(inventory.security_groups.iter().find(|g| g.id == id).map_or_else(|| id.to_string(), |g| g.name.clone()));
                let have: BTreeSet<IngressRule> = g.ingress.iter().filter_map(|r| r.map_group(name_of)).collect();
                let missing: Vec<_> = want.difference(&have).cloned().collect();
                let extra: Vec<_> = have.difference(&want).cloned().collect();
                if !missing.is_empty() {
                    steps.push(Step::AuthorizeIngress { group: name.clone(), rules: missing });
                }
                if !extra.is_empty() {
                    steps.push(Step::RevokeIngress { group: name, rules: extra });
                }
            }
        }
    }

    // The nodes' credentials, before any machine is launched with them.
    for kind in InstanceRole::ALL {
        let role = kind.name(spec.name.as_str());
        let found = inventory.iam(kind);
        let policy = kind.policy_name().to_string();
        match (&found.role, &found.policy) {
            (None, _) => {
                steps.push(Step::CreateRole { name: role.clone(), kind });
                steps.push(Step::PutRolePolicy { role: role.clone(), policy, kind });
            }
            (Some(_), None) => steps.push(Step::PutRolePolicy { role: role.clone(), policy, kind }),
            (Some(_), Some(doc)) if !same_policy(doc, &kind.policy(spec.name.as_str())) => steps.push(Step::UpdateRolePolicy { role: role.clone(), policy, kind }),
            (Some(_), Some(_)) => {}
        }
        match &found.profile {
            None => {
                steps.push(Step::CreateInstanceProfile { name: role.clone(), kind });
                steps.push(Step::AddRoleToInstanceProfile { profile: role.clone(), role: role.clone() });
            }
            Some(p) if p.roles.is_empty() => steps.push(Step::AddRoleToInstanceProfile { profile: role.clone(), role: role.clone() }),
            Some(p) if !p.roles.contains(&role) => {
                return Err(ProvisionError::Conflict(format!(
                    "the instance profile {} holds role {} instead of {role}; remove that role from it (aws iam remove-role-from-instance-profile) and run create again",
                    p.name,
                    p.roles.join(", ")
                )));
            }
            Some(_) => {}
        }
    }

    // Key pair.
    if !inventory.key_pairs.iter().any(|k| k.name == names.key_pair()) {
        steps.push(Step::ImportKeyPair { name: names.key_pair() });
    }

    // Instances: each pool keeps `count` machines; new ones take the lowest free slots, and a pool
    // that shrinks loses its highest slots. (`clusterctl scale` picks and drains the machines it
    // removes itself before this ever sees too many.)
    let by_slot = instances_by_slot(inventory);
    let mut live_slots: BTreeMap<String, Vec<u32>> = BTreeMap::new();
    for pool in spec.pools() {
        let name = pool.name.as_str().to_string();
        let have: Vec<u32> = by_slot.keys().filter(|(p, _)| *p == name).map(|(_, s)| *s).collect();
        let mut keep: Vec<u32> = have.iter().copied().take(pool.count as usize).collect();
        let missing = (pool.count as usize).saturating_sub(have.len());
        for slot in (0u32..).filter(|s| !have.contains(s)).take(missing) {
            steps.push(Step::LaunchInstance {
                pool: name.clone(),
                slot,
                name: names.instance_name(pool, slot),
                zone: spec.subnet_for_slot(slot).zone.as_str().into(),
                instance_type: pool.instance_type.clone(),
            });
            keep.push(slot);
        }
        keep.sort_unstable();
        live_slots.insert(name, keep);
    }
    for ((pool, slot), instances) in &by_slot {
        let wanted = live_slots.get(pool).is_some_and(|slots| slots.contains(slot));
        for (n, i) in instances.iter().enumerate() {
            let name = i.tags.get("Name").cloned().unwrap_or_else(|| format!("{pool}-{slot}"));
            if !wanted {
                steps.push(Step::TerminateInstance { id: i.id.clone(), name, reason: format!("pool {pool} wants fewer machines") });
            } else if n > 0 {
                steps.push(Step::TerminateInstance { id: i.id.clone(), name, reason: format!("a second machine in slot {pool}/{slot}") });
            } else if let Some(kind) = spec.pool(pool).map(|p| InstanceRole::of(p.role)) {
                // A machine launched before its kind had a profile (or given another by hand) runs
                // on the kind's profile from now on: EC2 changes a running machine's profile in place.
                let profile = names.instance_role(kind);
                if !i.instance_profile.as_deref().is_some_and(|arn| arn.ends_with(&format!("/{profile}"))) {
                    steps.push(Step::SetInstanceProfile { id: i.id.clone(), name, profile });
                }
            }
        }
    }

    // API load balancer.
    let lb_name = names.api_lb();
    let lb = inventory.load_balancers.iter().find(|l| l.name == lb_name);
    let tg = inventory.target_groups.iter().find(|t| t.name == lb_name);
    if spec.api.load_balancer {
        if tg.is_none() {
            steps.push(Step::CreateTargetGroup { name: lb_name.clone(), port: spec.api.port });
        }
        if lb.is_none() {
            steps.push(Step::CreateLoadBalancer { name: lb_name.clone() });
        }
        let listening = lb.is_some_and(|l| inventory.listeners.iter().any(|x| x.load_balancer_arn == l.arn && x.port == spec.api.port));
        if !listening {
            steps.push(Step::CreateListener { port: spec.api.port });
        }
        let registered: Vec<&str> = tg.and_then(|t| inventory.targets.get(&t.arn)).map(|ts| ts.iter().map(|t| t.instance_id.as_str()).collect()).unwrap_or_default();
        let master_slots = live_slots.get(spec.masters.name.as_str()).cloned().unwrap_or_default();
        let unregistered: Vec<u32> = master_slots
            .iter()
            .copied()
            .filter(|slot| match by_slot.get(&(spec.masters.name.as_str().to_string(), *slot)) {
                Some(is) => !registered.contains(&is[0].id.as_str()),
                None => true,
            })
            .collect();
        if !unregistered.is_empty() {
            steps.push(Step::RegisterMasters { slots: unregistered });
        }
        let current: Vec<&str> = master_slots
            .iter()
            .filter_map(|slot| by_slot.get(&(spec.masters.name.as_str().to_string(), *slot)).map(|is| is[0].id.as_str()))
            .collect();
        let stale: Vec<String> = registered.iter().filter(|id| !current.contains(id)).map(|id| id.to_string()).collect();
        if !stale.is_empty() {
            steps.push(Step::DeregisterTargets { ids: stale });
        }
    } else {
        for l in inventory.listeners.iter() {
            steps.push(Step::DeleteListener { arn: l.arn.clone() });
        }
        if let Some(l) = lb {
            steps.push(Step::DeleteLoadBalancer { name: l.name.clone(), arn: l.arn.clone() });
        }
        if let Some(t) = tg {
            steps.push(Step::DeleteTargetGroup { name: t.name.clone(), arn: t.arn.clone() });
        }
    }
    Ok(p)
}
