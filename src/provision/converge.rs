//! Applies a plan, then waits until the machines run and the API's targets are registered.
//!
//! `create` defers the masters' registration ([`ConvergeOptions::defer_registration`]) until their
//! API servers answer ([`register_masters`]): a load balancer counts a target healthy after two
//! passing health checks in a row, 5 s apart, and checks that fail while the master is still being
//! installed only push that back.

use std::collections::BTreeMap;
use std::time::Duration;

use futures::future::join_all;
use ipnet::Ipv4Net;
use tokio::time::Instant;

use crate::cloud::{Cloud, Image, Instance, InstanceState, LaunchRequest, LoadBalancer};
use crate::report::Reporter;
use crate::spec::{ClusterSpec, ImageRef, NodePool};

use super::iam::{trust_policy, InstanceRole, IAM_PATH};
use super::inventory::{discover, Inventory};
use super::plan::{desired_rules, group_roles, instances_by_slot, plan, Plan, Step};
use super::{Names, ProvisionError};

/// Launch tokens tried per slot: each machine of a slot that was terminated (and replaced) uses
/// one up, so a slot can be refilled this many times.
const LAUNCH_ATTEMPTS: u32 = 32;

/// How long, and how often, the first polls for running instances are.
const FAST_POLLING: Duration = Duration::from_secs(10);
const FAST_POLL: Duration = Duration::from_millis(250);

/// What converging needs beyond the spec.
#[derive(Debug, Clone)]
pub struct ConvergeOptions {
    /// The OpenSSH public key imported as the cluster's key pair.
    pub public_key: String,
    /// How long instances may take to reach `running`.
    pub instance_deadline: Duration,
    /// How long the API's targets may take to show up as registered.
    pub target_deadline: Duration,
    /// Pause between polls while waiting.
    pub poll_interval: Duration,
    /// Leave the masters' registration with the API load balancer to the caller (in
    /// [`Converged::registration`]), which registers them once they serve.
    pub defer_registration: bool,
    /// Give a machine on no instance profile, or on the other kind's, its own
    /// ([`Step::SetInstanceProfile`]): the operator's `create` does; the master's machine
    /// controller may not (its policy passes only the masters' role), so it leaves them, noted.
    pub set_instance_profiles: bool,
}

impl ConvergeOptions {
    /// Options with default deadlines.
    pub fn new(public_key: String) -> Self {
        ConvergeOptions {
            public_key,
            instance_deadline: Duration::from_secs(300),
            target_deadline: Duration::from_secs(120),
            poll_interval: Duration::from_secs(1),
            defer_registration: false,
            set_instance_profiles: true,
        }
    }
}

/// Masters to register with the API load balancer's target group (and those already registered).
#[derive(Debug, Clone)]
pub struct Registration {
    pub target_group: String,
    /// The instances of the masters that must be registered, whether they are already or not.
    pub masters: Vec<String>,
    /// The plan's registration step, when some are not registered yet.
    pub step: Option<Step>,
    /// The API port, the targets' port.
    pub port: u16,
    /// How long registering may take (the converge's deadlines), and the pause between polls.
    pub instance_deadline: Duration,
    pub target_deadline: Duration,
    pub poll_interval: Duration,
}

/// The result of a converge.
#[derive(Debug, Clone)]
pub struct Converged {
    /// What was applied (empty when nothing had to change).
    pub plan: Plan,
    /// The cluster's instances by pool and slot, all running.
    pub instances: BTreeMap<(String, u32), Instance>,
    /// The API load balancer, when the spec asks for one.
    pub load_balancer: Option<LoadBalancer>,
    /// With [`ConvergeOptions::defer_registration`] and a load balancer: what [`register_masters`]
    /// must still do.
    pub registration: Option<Registration>,
}

/// Ids resolved so far: from the inventory, then from each step applied.
#[derive(Default)]
struct Resolved {
    vpc: Option<String>,
    subnets: BTreeMap<String, String>,
    gateway: Option<String>,
    route_table: Option<String>,
    groups: BTreeMap<String, String>,
    instances: BTreeMap<(String, u32), Instance>,
    target_group: Option<String>,
    load_balancer: Option<LoadBalancer>,
    images: BTreeMap<String, Image>,
}

fn need<'a>(value: &'a Option<String>, what: &str) -> Result<&'a str, ProvisionError> {
    value.as_deref().ok_or_else(|| ProvisionError::Conflict(format!("cannot continue: the cluster's {what} is missing")))
}

impl Resolved {
    fn new(spec: &ClusterSpec, inventory: &Inventory) -> Self {
        let names = Names::new(spec);
        let mut r = Resolved {
            vpc: inventory.vpcs.first().map(|v| v.id.clone()),
            gateway: inventory.internet_gateways.first().map(|g| g.id.clone()),
            route_table: inventory
                .route_tables
                .iter()
                .find(|r| r.tags.get(crate::cloud::ROLE_TAG).map(String::as_str) == Some("public"))
                .map(|r| r.id.clone()),
            target_group: inventory.target_groups.iter().find(|t| t.name == names.api_lb()).map(|t| t.arn.clone()),
            load_balancer: inventory.load_balancers.iter().find(|l| l.name == names.api_lb()).cloned(),
            ..Resolved::default()
        };
        for want in &spec.network.subnets {
            if let Some(s) = inventory.subnets.iter().find(|s| s.zone == want.zone.as_str() && s.cidr == want.cidr) {
                r.subnets.insert(s.zone.clone(), s.id.clone());
            }
        }
        for g in &inventory.security_groups {
            r.groups.insert(g.name.clone(), g.id.clone());
        }
        for (key, instances) in instances_by_slot(inventory) {
            r.instances.insert(key, instances[0].clone());
        }
        r
    }

    /// `rules` with their source groups named by id, as the cloud takes them (a source that is
    /// no group of the cluster's is an id already, see `plan`).
    fn with_group_ids(&self, rules: &[crate::cloud::IngressRule]) -> Result<Vec<crate::cloud::IngressRule>, ProvisionError> {
        Ok(rules.iter().filter_map(|r| r.map_group(|g| Some(self.groups.get(g).cloned().unwrap_or_else(|| g.to_string())))).collect())
    }

    fn subnet(&self, zone: &str) -> Result<&str, ProvisionError> {
        self.subnets.get(zone).map(String::as_str).ok_or_else(|| ProvisionError::Conflict(format!("cannot continue: the subnet in {zone} is missing")))
    }
}

/// Converges the cloud to the spec: discover, plan, apply, wait.
pub async fn converge(cloud: &dyn Cloud, spec: &ClusterSpec, options: &ConvergeOptions, reporter: &dyn Reporter) -> Result<Converged, ProvisionError> {
    reporter.phase("discovering existing resources");
    let inventory = discover(cloud, spec.name.as_str()).await?;
    let mut plan = plan(spec, &inventory)?;
    if !options.set_instance_profiles {
        let (left, steps): (Vec<Step>, Vec<Step>) = plan.steps.into_iter().partition(|s| matches!(s, Step::SetInstanceProfile { .. }));
        plan.steps = steps;
        plan.notes.extend(left.iter().map(|s| format!("{s}: left to `clusterctl create`")));
    }
    for note in &plan.notes {
        reporter.warn(note);
    }
    let mut r = Resolved::new(spec, &inventory);
    let names = Names::new(spec);

    if !plan.is_empty() {
        reporter.phase("applying changes");
    }
    let mut launches = Vec::new();
    // Only running instances can be registered as targets: registration waits for them (and
    // registers every master, so that a master launched after the step was planned is included).
    let mut registration_step = None;
    for step in &plan.steps {
        if let Step::LaunchInstance { pool, slot, .. } = step {
            launches.push((pool.clone(), *slot));
            continue;
        }
        if matches!(step, Step::RegisterMasters { .. }) {
            registration_step = Some(step.clone());
            continue;
        }
        if !launches.is_empty() {
            launch_all(cloud, spec, &mut r, std::mem::take(&mut launches), reporter).await?;
        }
        apply(cloud, spec, &names, options, &mut r, step).await?;
        reporter.done(&format!("{} {step}", step.sign()));
    }
    if !launches.is_empty() {
        launch_all(cloud, spec, &mut r, launches, reporter).await?;
    }

    wait_running(cloud, &names, spec, &mut r, options, reporter).await?;
    let registration = match &r.target_group {
        Some(tg) if spec.api.load_balancer => {
            let masters = r.instances.iter().filter(|((pool, _), _)| pool == spec.masters.name.as_str()).map(|(_, i)| i.id.clone()).collect();
            Some(Registration {
                target_group: tg.clone(),
                masters,
                step: registration_step,
                port: spec.api.port,
                instance_deadline: options.instance_deadline,
                target_deadline: options.target_deadline,
                poll_interval: options.poll_interval,
            })
        }
        _ => None,
    };
    let registration = match registration {
        Some(reg) if !options.defer_registration => {
            register_masters(cloud, &reg, reporter).await?;
            None
        }
        other => other,
    };
    Ok(Converged { plan, instances: r.instances, load_balancer: r.load_balancer, registration })
}

/// Registers the masters with the API load balancer's target group, and waits until it lists them.
pub async fn register_masters(cloud: &dyn Cloud, reg: &Registration, reporter: &dyn Reporter) -> Result<(), ProvisionError> {
    if let Some(step) = &reg.step {
        // The load balancer may see an instance as running a little after EC2 reports it so.
        let start = Instant::now();
        loop {
            match cloud.register_targets(&reg.target_group, &reg.masters, reg.port).await {
                Err(e) if e.code.as_deref() == Some("InvalidTarget") && start.elapsed() < reg.instance_deadline => {
                    tracing::debug!(error = %e, "targets not registrable yet");
                    tokio::time::sleep(reg.poll_interval).await;
                }
                other => break other?,
            }
        }
        reporter.done(&format!("{} {step}", step.sign()));
    }
    wait_registered(cloud, reg, reporter).await
}

async fn apply(cloud: &dyn Cloud, spec: &ClusterSpec, names: &Names<'_>, options: &ConvergeOptions, r: &mut Resolved, step: &Step) -> Result<(), ProvisionError> {
    match step {
        Step::CreateVpc { cidr } => {
            r.vpc = Some(cloud.create_vpc(*cidr, &names.network_tags("vpc")).await?.id);
        }
        Step::CreateSubnet { zone, cidr } => {
            let vpc = need(&r.vpc, "VPC")?;
            let subnet = cloud.create_subnet(vpc, zone, *cidr, &names.network_tags(&format!("subnet-{zone}"))).await?;
            r.subnets.insert(zone.clone(), subnet.id);
        }
        Step::EnablePublicIps { zone } => cloud.enable_public_ips(r.subnet(zone)?).await?,
        Step::CreateInternetGateway => {
            r.gateway = Some(cloud.create_internet_gateway(&names.network_tags("gateway")).await?.id);
        }
        Step::AttachInternetGateway => cloud.attach_internet_gateway(need(&r.gateway, "internet gateway")?, need(&r.vpc, "VPC")?).await?,
        Step::CreateRouteTable => {
            r.route_table = Some(cloud.create_route_table(need(&r.vpc, "VPC")?, &names.network_tags("public")).await?.id);
        }
        Step::CreateDefaultRoute => {
            cloud.create_route(need(&r.route_table, "route table")?, Ipv4Net::default(), need(&r.gateway, "internet gateway")?).await?
        }
        Step::AssociateRouteTable { zone } => cloud.associate_route_table(need(&r.route_table, "route table")?, r.subnet(zone)?).await?,
        Step::CreateSecurityGroup { group } => {
            let role = group.rsplit_once(&format!("{}-", spec.name.as_str())).map(|(_, role)| role).unwrap_or(group);
            let description = format!("clusterctl cluster {}: {role}", spec.name);
            let sg = cloud.create_security_group(need(&r.vpc, "VPC")?, group, &description, &names.network_tags(role)).await?;
            r.groups.insert(group.clone(), sg.id);
        }
        Step::AuthorizeIngress { group, rules } => {
            let id = need(&r.groups.get(group).cloned(), &format!("security group {group}"))?.to_string();
            cloud.authorize_ingress(&id, &r.with_group_ids(rules)?).await?;
        }
        Step::RevokeIngress { group, rules } => {
            let id = need(&r.groups.get(group).cloned(), &format!("security group {group}"))?.to_string();
            cloud.revoke_ingress(&id, &r.with_group_ids(rules)?).await?;
        }
        Step::ImportKeyPair { name } => {
            cloud.import_key_pair(name, &options.public_key, &names.tags("ssh", name)).await?;
        }
        Step::CreateRole { name, kind } => {
            cloud.create_role(name, IAM_PATH, &trust_policy().to_string(), &names.tags(kind.tag(), name)).await?;
        }
        Step::PutRolePolicy { role, policy, kind } | Step::UpdateRolePolicy { role, policy, kind } => {
            cloud.put_role_policy(role, policy, &kind.policy(spec.name.as_str()).to_string()).await?;
        }
        Step::CreateInstanceProfile { name, kind } => {
            cloud.create_instance_profile(name, IAM_PATH, &names.tags(kind.tag(), name)).await?;
        }
        Step::AddRoleToInstanceProfile { profile, role } => cloud.add_role_to_instance_profile(profile, role).await?,
        Step::LaunchInstance { .. } => unreachable!("launches are applied together by launch_all"),
        Step::SetInstanceProfile { id, profile, .. } => cloud.set_instance_profile(id, profile).await?,
        Step::TerminateInstance { id, .. } => {
            cloud.terminate_instances(std::slice::from_ref(id)).await?;
            r.instances.retain(|_, i| &i.id != id);
        }
        Step::CreateTargetGroup { name, port } => {
            r.target_group = Some(cloud.create_target_group(name, need(&r.vpc, "VPC")?, *port, &names.tags("api", name)).await?.arn);
        }
        Step::CreateLoadBalancer { name } => {
            let subnets: Vec<String> = spec.network.subnets.iter().map(|s| r.subnet(s.zone.as_str()).map(str::to_string)).collect::<Result<_, _>>()?;
            let groups: Vec<String> = r.groups.get(&names.group_name(super::GroupRole::ApiLb)).cloned().into_iter().collect();
            r.load_balancer = Some(cloud.create_load_balancer(name, &subnets, &groups, &names.tags("api", name)).await?);
        }
        Step::CreateListener { port } => {
            let lb = r.load_balancer.as_ref().map(|l| l.arn.clone());
            cloud.create_listener(need(&lb, "API load balancer")?, *port, need(&r.target_group, "API target group")?, &names.tags("api", &names.api_lb())).await?;
        }
        Step::RegisterMasters { .. } => unreachable!("registrations are applied by register_masters"),
        Step::DeregisterTargets { ids } => cloud.deregister_targets(need(&r.target_group, "API target group")?, ids, spec.api.port).await?,
        Step::DeleteListener { arn } => cloud.delete_listener(arn).await?,
        Step::DeleteLoadBalancer { arn, .. } => {
            cloud.delete_load_balancer(arn).await?;
            r.load_balancer = None;
        }
        Step::DeleteTargetGroup { arn, .. } => {
            cloud.delete_target_group(arn).await?;
            r.target_group = None;
        }
    }
    Ok(())
}

/// Resolves a pool's image once per converge.
async fn image_for(cloud: &dyn Cloud, pool: &NodePool) -> Result<Image, ProvisionError> {
    match &pool.image {
        ImageRef::Id(id) => Ok(cloud.image(id).await?),
        ImageRef::Name { pattern, owner } => cloud.find_image(pattern, owner.as_deref()).await?.ok_or_else(|| {
            ProvisionError::Conflict(format!(
                "no image matches name {pattern}{} for pool {}",
                owner.as_ref().map(|o| format!(" of owner {o}")).unwrap_or_default(),
                pool.name.as_str()
            ))
        }),
    }
}

/// Launches instances for the given slots in parallel.
async fn launch_all(cloud: &dyn Cloud, spec: &ClusterSpec, r: &mut Resolved, slots: Vec<(String, u32)>, reporter: &dyn Reporter) -> Result<(), ProvisionError> {
    let names = Names::new(spec);
    for pool in spec.pools() {
        if slots.iter().any(|(p, _)| p == pool.name.as_str()) && !r.images.contains_key(pool.name.as_str()) {
            r.images.insert(pool.name.as_str().into(), image_for(cloud, pool).await?);
        }
    }
    let vpc = need(&r.vpc, "VPC")?.to_string();
    let key_name = names.key_pair();
    let mut requests = Vec::new();
    for (pool_name, slot) in &slots {
        let pool = spec.pool(pool_name).ok_or_else(|| ProvisionError::Conflict(format!("unknown pool {pool_name}")))?;
        let group = names.group_name(super::GroupRole::of(pool.role));
        let request = LaunchRequest {
            image: r.images[pool_name].clone(),
            instance_type: pool.instance_type.clone(),
            subnet_id: r.subnet(spec.subnet_for_slot(*slot).zone.as_str())?.to_string(),
            security_group_ids: vec![need(&r.groups.get(&group).cloned(), &format!("security group {group}"))?.to_string()],
            key_name: key_name.clone(),
            disk_gb: pool.disk_gb,
            client_token: String::new(),
            user_data: None,
            // Every machine runs on its own kind's credentials (the masters' cloud controller, every
            // agent's pulls from ECR).
            instance_profile: Some(names.instance_role(InstanceRole::of(pool.role))),
            tags: names.instance_tags(pool, *slot),
        };
        requests.push((pool, *slot, request));
    }
    let launches = requests.into_iter().map(|(pool, slot, mut request)| {
        let names = &names;
        let vpc = &vpc;
        async move {
            let name = names.instance_name(pool, slot);
            reporter.item(&name, "launching");
            // A token already used by a terminated machine returns that machine: launch again with the next token.
            // The answer to a reused token is its first launch's, as it was then (pending), so the
            // machine's state now decides.
            for attempt in 0..LAUNCH_ATTEMPTS {
                request.client_token = names.client_token(pool, slot, vpc, attempt);
                let instance = cloud.run_instance(&request).await?;
                let gone = instance.state.is_gone() || cloud.instances_by_id(std::slice::from_ref(&instance.id)).await?.iter().any(|i| i.state.is_gone());
                if !gone {
                    reporter.item(&name, &format!("{} {}", instance.id, instance.state));
                    return Ok(((pool.name.as_str().to_string(), slot), instance));
                }
            }
            Err(ProvisionError::Conflict(format!("launching {name}: every launch token returned a terminated machine")))
        }
    });
    let mut errors = Vec::new();
    for result in join_all(launches).await {
        match result {
            Ok((key, instance)) => {
                r.instances.insert(key, instance);
            }
            Err(e) => errors.push(e),
        }
    }
    match errors.len() {
        0 => Ok(()),
        1 => Err(errors.remove(0)),
        _ => Err(ProvisionError::Many(errors)),
    }
}

/// Waits until every instance of the spec is running.
async fn wait_running(cloud: &dyn Cloud, names: &Names<'_>, spec: &ClusterSpec, r: &mut Resolved, options: &ConvergeOptions, reporter: &dyn Reporter) -> Result<(), ProvisionError> {
    let label = |key: &(String, u32)| spec.pool(&key.0).map(|p| names.instance_name(p, key.1)).unwrap_or_else(|| format!("{}-{}", key.0, key.1));
    let mut waiting: Vec<(String, u32)> = r.instances.iter().filter(|(_, i)| i.state != InstanceState::Running).map(|(k, _)| k.clone()).collect();
    if waiting.is_empty() {
        return Ok(());
    }
    reporter.phase("waiting for instances to run");
    let start = Instant::now();
    loop {
        let ids: Vec<String> = waiting.iter().map(|k| r.instances[k].id.clone()).collect();
        let current = cloud.instances_by_id(&ids).await?;
        for i in current {
            if let Some(key) = waiting.iter().find(|k| r.instances[*k].id == i.id).cloned() {
                if i.state == InstanceState::Running {
                    reporter.item_done(&label(&key), &format!("{} running at {}", i.id, i.private_ip.map(|a| a.to_string()).unwrap_or_default()));
                } else if i.state.is_gone() {
                    return Err(ProvisionError::Conflict(format!("instance {} ({}) was terminated while it started; run create again", label(&key), i.id)));
                } else {
                    reporter.item(&label(&key), &format!("{} {}", i.id, i.state));
                }
                r.instances.insert(key, i);
            }
        }
        waiting.retain(|k| r.instances[k].state != InstanceState::Running);
        if waiting.is_empty() {
            return Ok(());
        }
        if start.elapsed() >= options.instance_deadline {
            let pending = waiting.iter().map(|k| format!("{} ({}) is {}", label(k), r.instances[k].id, r.instances[k].state)).collect::<Vec<_>>().join(", ");
            return Err(ProvisionError::Timeout { what: "instances to run".into(), waited: options.instance_deadline, pending });
        }
        // Every 250 ms in the first seconds, when a machine that boots fast can be used at once;
        // then at the usual pace, which spares the API's request budget during long boots.
        let pause = if start.elapsed() < FAST_POLLING { options.poll_interval.min(FAST_POLL) } else { options.poll_interval };
        tokio::time::sleep(pause).await;
    }
}

/// Waits until every master is registered in the API target group.
async fn wait_registered(cloud: &dyn Cloud, reg: &Registration, reporter: &dyn Reporter) -> Result<(), ProvisionError> {
    let start = Instant::now();
    let mut announced = false;
    loop {
        let health = cloud.target_health(&reg.target_group).await?;
        let missing: Vec<&String> = reg.masters.iter().filter(|m| !health.iter().any(|h| &h.instance_id == *m)).collect();
        if missing.is_empty() {
            if announced {
                reporter.done("masters registered with the API load balancer");
            }
            return Ok(());
        }
        if !announced {
            reporter.phase("waiting for the API load balancer's targets");
            announced = true;
        }
        if start.elapsed() >= reg.target_deadline {
            let pending = missing.iter().map(|m| format!("{m} is not registered")).collect::<Vec<_>>().join(", ");
            return Err(ProvisionError::Timeout { what: "the masters to be registered with the API load balancer".into(), waited: reg.target_deadline, pending });
        }
        tokio::time::sleep(reg.poll_interval).await;
    }
}

/// The rules of every group, for status output.
pub fn all_desired_rules(spec: &ClusterSpec) -> BTreeMap<String, Vec<crate::cloud::IngressRule>> {
    let names = Names::new(spec);
    group_roles(spec).into_iter().map(|role| (names.group_name(role), desired_rules(spec, role).into_iter().collect())).collect()
}
