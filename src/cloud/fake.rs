//! A stateful in-memory cloud with failure injection, for unit tests of the layers above.
//!
//! It behaves like AWS where the layers above depend on it: ids are unique,
//! tags are kept, deleting something missing is not-found, deleting something
//! still in use is a dependency violation, instances go through `pending`
//! before `running`, and a repeated launch token returns the first instance.
//! Tests can make chosen operations fail, hide new instances for a while
//! (eventual consistency), and read the log of every call made.

use std::collections::{BTreeMap, HashMap};
use std::net::Ipv4Addr;
use std::sync::Mutex;

use async_trait::async_trait;
use ipnet::Ipv4Net;

use super::*;

#[derive(Default)]
struct State {
    next_id: u64,
    vpcs: BTreeMap<String, Vpc>,
    subnets: BTreeMap<String, Subnet>,
    gateways: BTreeMap<String, InternetGateway>,
    route_tables: BTreeMap<String, RouteTable>,
    groups: BTreeMap<String, SecurityGroup>,
    key_pairs: BTreeMap<String, KeyPair>,
    instances: BTreeMap<String, FakeInstance>,
    /// The first answer to each launch token, given again as AWS does (even after the machine
    /// was terminated).
    tokens: HashMap<String, Instance>,
    load_balancers: BTreeMap<String, LoadBalancer>,
    target_groups: BTreeMap<String, TargetGroup>,
    listeners: BTreeMap<String, Listener>,
    targets: BTreeMap<String, Vec<(String, u16)>>,
    images: Vec<Image>,
    failures: Vec<Injected>,
    calls: Vec<String>,
    hide_new_instances_for: u32,
    /// Instances whose status checks fail (a machine that died outside the API).
    impaired: std::collections::BTreeSet<String>,
    ignore_client_tokens: bool,
    consoles: HashMap<String, String>,
    roles: BTreeMap<String, Role>,
    /// Inline policies by (role, policy name).
    role_policies: BTreeMap<(String, String), String>,
    profiles: BTreeMap<String, InstanceProfile>,
    /// Launches left that do not see instance profiles yet (IAM's eventual consistency).
    profile_invisible_launches: u32,
}

struct FakeInstance {
    instance: Instance,
    /// Reads left during which the instance is invisible.
    hidden_reads: u32,
    /// Reads left before a pending instance runs or a shutting-down one is terminated.
    transition_reads: u32,
    /// Security groups the instance uses.
    groups: Vec<String>,
}

struct Injected {
    op: String,
    kind: ErrorKind,
    times: u32,
}

/// The in-memory cloud.
pub struct FakeCloud {
    state: Mutex<State>,
}

impl Default for FakeCloud {
    fn default() -> Self {
        Self::new()
    }
}

const MUTATING_PREFIXES: &[&str] =
    &["create_", "enable_", "attach_", "associate_", "authorize_", "revoke_", "import_", "run_", "terminate_", "register_", "deregister_", "delete_", "disassociate_", "detach_", "put_", "add_", "remove_"];

impl FakeCloud {
    /// An empty cloud with a small image catalogue.
    pub fn new() -> Self {
        let images = vec![
            Image { id: "ami-0debian12000001".into(), name: Some("debian-12-amd64-20240101-1".into()), root_device_name: Some("/dev/xvda".into()) },
            Image { id: "ami-0debian12000002".into(), name: Some("debian-12-amd64-20250101-2".into()), root_device_name: Some("/dev/xvda".into()) },
            Image { id: "ami-0ubuntu22000001".into(), name: Some("ubuntu-jammy-22.04".into()), root_device_name: Some("/dev/sda1".into()) },
        ];
        FakeCloud { state: Mutex::new(State { images, ..State::default() }) }
    }

    /// Makes the next `times` calls of `op` (a trait method name) fail with `kind`.
    pub fn fail(&self, op: &str, kind: ErrorKind, times: u32) {
        self.lock().failures.push(Injected { op: op.into(), kind, times });
    }

    /// Makes every instance launched from now on invisible for its first `reads` reads.
    pub fn hide_new_instances_for(&self, reads: u32) {
        self.lock().hide_new_instances_for = reads;
    }

    /// Makes launches ignore their idempotency token, as LocalStack's moto does.
    pub fn ignore_client_tokens(&self) {
        self.lock().ignore_client_tokens = true;
    }

    /// Makes an instance fail its status checks, as a machine that died outside the API does.
    pub fn impair(&self, instance_id: &str) {
        self.lock().impaired.insert(instance_id.to_string());
    }

    /// Makes the next `launches` launches that name an instance profile fail as EC2 does while a
    /// new profile has not reached it yet.
    pub fn hide_instance_profiles_from_launches(&self, launches: u32) {
        self.lock().profile_invisible_launches = launches;
    }

    /// Takes an instance's profile away, as on a machine launched before its kind had one.
    pub fn drop_instance_profile(&self, instance_id: &str) {
        if let Some(f) = self.lock().instances.get_mut(instance_id) {
            f.instance.instance_profile = None;
        }
    }

    /// The inline policy document of a role, if any.
    pub fn role_policy_document(&self, role: &str, policy_name: &str) -> Option<String> {
        self.lock().role_policies.get(&(role.to_string(), policy_name.to_string())).cloned()
    }

    /// Sets what an instance's console shows.
    pub fn set_console(&self, instance_id: &str, text: &str) {
        self.lock().consoles.insert(instance_id.into(), text.into());
    }

    /// Every call made so far, by trait method name.
    pub fn calls(&self) -> Vec<String> {
        self.lock().calls.clone()
    }

    /// The calls made so far that change something.
    pub fn mutating_calls(&self) -> Vec<String> {
        self.calls().into_iter().filter(|c| MUTATING_PREFIXES.iter().any(|p| c.starts_with(p))).collect()
    }

    /// Forgets the call log.
    pub fn clear_calls(&self) {
        self.lock().calls.clear();
    }

    /// Every instance that is neither terminated nor shutting down.
    pub fn live_instances(&self) -> Vec<Instance> {
        self.lock().instances.values().map(|f| f.instance.clone()).filter(|i| !i.state.is_gone()).collect()
    }

    /// How many resources of any kind exist (terminated instances excluded).
    pub fn resource_count(&self) -> usize {
        let s = self.lock();
        s.vpcs.len()
            + s.subnets.len()
            + s.gateways.len()
            + s.route_tables.len()
            + s.groups.len()
            + s.key_pairs.len()
            + s.instances.values().filter(|f| f.instance.state != InstanceState::Terminated).count()
            + s.load_balancers.len()
            + s.target_groups.len()
            + s.listeners.len()
            + s.roles.len()
            + s.role_policies.len()
            + s.profiles.len()
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    /// Logs the call and returns an injected failure if one is due.
    fn enter(&self, op: &str, action: impl FnOnce() -> String) -> Result<std::sync::MutexGuard<'_, State>, CloudError> {
        let mut s = self.lock();
        s.calls.push(op.to_string());
        if let Some(f) = s.failures.iter_mut().find(|f| f.op == op && f.times > 0) {
            f.times -= 1;
            let kind = f.kind.clone();
            return Err(CloudError::new(action(), kind, Some("Injected".into()), "injected by the fake cloud"));
        }
        Ok(s)
    }
}

impl State {
    fn id(&mut self, prefix: &str) -> String {
        self.next_id += 1;
        format!("{prefix}-{:017x}", self.next_id)
    }
}

fn not_found(action: String, code: &str) -> CloudError {
    CloudError::new(action, ErrorKind::NotFound, Some(code.into()), "does not exist")
}

/// As EC2 answers (and aws.rs classifies) an instance profile it does not see (yet).
fn profile_not_seen(action: String, name: &str) -> CloudError {
    CloudError::new(action, ErrorKind::NotFound, Some("InvalidParameterValue".into()), format!("Value ({name}) for parameter iamInstanceProfile.name is invalid. Invalid IAM Instance Profile name"))
}

fn in_use(action: String, what: &str) -> CloudError {
    CloudError::new(action, ErrorKind::DependencyViolation, Some("DependencyViolation".into()), format!("still used by {what}"))
}

fn glob_match(pattern: &str, name: &str) -> bool {
    match pattern.split_once('*') {
        None => pattern == name,
        Some((head, rest)) => {
            name.starts_with(head) && (0..=name.len() - head.len()).any(|i| glob_match(rest, &name[head.len() + i..]))
        }
    }
}

#[async_trait]
impl Cloud for FakeCloud {
    async fn vpcs(&self, tags: &Tags) -> CloudResult<Vec<Vpc>> {
        let s = self.enter("vpcs", || "listing VPCs".into())?;
        Ok(s.vpcs.values().filter(|v| tags_match(&v.tags, tags)).cloned().collect())
    }
    async fn subnets(&self, tags: &Tags) -> CloudResult<Vec<Subnet>> {
        let s = self.enter("subnets", || "listing subnets".into())?;
        Ok(s.subnets.values().filter(|v| tags_match(&v.tags, tags)).cloned().collect())
    }
    async fn internet_gateways(&self, tags: &Tags) -> CloudResult<Vec<InternetGateway>> {
        let s = self.enter("internet_gateways", || "listing internet gateways".into())?;
        Ok(s.gateways.values().filter(|v| tags_match(&v.tags, tags)).cloned().collect())
    }
    async fn route_tables(&self, tags: &Tags) -> CloudResult<Vec<RouteTable>> {
        let s = self.enter("route_tables", || "listing route tables".into())?;
        let mut out: Vec<RouteTable> = s.route_tables.values().filter(|v| tags_match(&v.tags, tags)).cloned().collect();
        for route in out.iter_mut().flat_map(|t| t.routes.iter_mut()) {
            if let Some(id) = &route.instance_id {
                // As AWS: a route to an instance that is not running carries no traffic.
                route.blackhole = s.instances.get(id).is_none_or(|f| f.instance.state != InstanceState::Running);
            }
        }
        Ok(out)
    }
    async fn security_groups(&self, tags: &Tags) -> CloudResult<Vec<SecurityGroup>> {
        let s = self.enter("security_groups", || "listing security groups".into())?;
        Ok(s.groups.values().filter(|v| tags_match(&v.tags, tags)).cloned().collect())
    }
    async fn key_pairs(&self, tags: &Tags) -> CloudResult<Vec<KeyPair>> {
        let s = self.enter("key_pairs", || "listing key pairs".into())?;
        Ok(s.key_pairs.values().filter(|v| tags_match(&v.tags, tags)).cloned().collect())
    }
    async fn instances(&self, tags: &Tags) -> CloudResult<Vec<Instance>> {
        let mut s = self.enter("instances", || "listing instances".into())?;
        let mut out = Vec::new();
        for f in s.instances.values_mut() {
            if f.hidden_reads > 0 {
                f.hidden_reads -= 1;
                continue;
            }
            advance(f);
            if f.instance.state != InstanceState::Terminated && tags_match(&f.instance.tags, tags) {
                out.push(f.instance.clone());
            }
        }
        Ok(out)
    }
    async fn instances_by_id(&self, ids: &[String]) -> CloudResult<Vec<Instance>> {
        let mut s = self.enter("instances_by_id", || format!("describing instances {}", ids.join(", ")))?;
        let mut out = Vec::new();
        for id in ids {
            let action = || format!("describing instance {id}");
            let f = s.instances.get_mut(id).ok_or_else(|| not_found(action(), "InvalidInstanceID.NotFound"))?;
            if f.hidden_reads > 0 {
                f.hidden_reads -= 1;
                return Err(not_found(action(), "InvalidInstanceID.NotFound"));
            }
            advance(f);
            out.push(f.instance.clone());
        }
        Ok(out)
    }
    async fn load_balancers(&self, tags: &Tags) -> CloudResult<Vec<LoadBalancer>> {
        let s = self.enter("load_balancers", || "listing load balancers".into())?;
        Ok(s.load_balancers.values().filter(|v| tags_match(&v.tags, tags)).cloned().collect())
    }
    async fn target_groups(&self, tags: &Tags) -> CloudResult<Vec<TargetGroup>> {
        let s = self.enter("target_groups", || "listing target groups".into())?;
        Ok(s.target_groups.values().filter(|v| tags_match(&v.tags, tags)).cloned().collect())
    }
    async fn listeners(&self, load_balancer_arn: &str) -> CloudResult<Vec<Listener>> {
        let s = self.enter("listeners", || format!("listing listeners of {load_balancer_arn}"))?;
        if !s.load_balancers.contains_key(load_balancer_arn) {
            return Err(not_found(format!("listing listeners of {load_balancer_arn}"), "LoadBalancerNotFound"));
        }
        Ok(s.listeners.values().filter(|l| l.load_balancer_arn == load_balancer_arn).cloned().collect())
    }
    async fn target_health(&self, target_group_arn: &str) -> CloudResult<Vec<TargetHealth>> {
        let s = self.enter("target_health", || format!("reading target health of {target_group_arn}"))?;
        let targets = s
            .targets
            .get(target_group_arn)
            .ok_or_else(|| not_found(format!("reading target health of {target_group_arn}"), "TargetGroupNotFound"))?;
        Ok(targets.iter().map(|(id, port)| TargetHealth { instance_id: id.clone(), port: *port, state: "initial".into() }).collect())
    }
    async fn instance_statuses(&self, ids: &[String]) -> CloudResult<Vec<InstanceStatus>> {
        let s = self.enter("instance_statuses", || format!("reading the status checks of {}", ids.join(", ")))?;
        Ok(ids
            .iter()
            .filter_map(|id| s.instances.get(id))
            .filter(|f| f.instance.state == InstanceState::Running)
            .map(|f| {
                let check = if s.impaired.contains(&f.instance.id) { "impaired" } else { "ok" };
                InstanceStatus { instance_id: f.instance.id.clone(), instance_check: check.into(), system_check: check.into() }
            })
            .collect())
    }
    async fn find_image(&self, pattern: &str, _owner: Option<&str>) -> CloudResult<Option<Image>> {
        let s = self.enter("find_image", || format!("looking up images named {pattern}"))?;
        let mut found: Vec<&Image> =
            s.images.iter().filter(|i| i.name.as_deref().is_some_and(|n| glob_match(pattern, n))).collect();
        found.sort_by(|a, b| a.name.cmp(&b.name));
        Ok(found.last().map(|i| (*i).clone()))
    }
    async fn image(&self, id: &str) -> CloudResult<Image> {
        let s = self.enter("image", || format!("looking up image {id}"))?;
        s.images.iter().find(|i| i.id == id).cloned().ok_or_else(|| not_found(format!("looking up image {id}"), "InvalidAMIID.NotFound"))
    }

    async fn console_output(&self, instance_id: &str) -> CloudResult<Option<String>> {
        let s = self.enter("console_output", || format!("reading the console of {instance_id}"))?;
        let f = s.instances.get(instance_id).ok_or_else(|| not_found(format!("reading the console of {instance_id}"), "InvalidInstanceID.NotFound"))?;
        Ok(s.consoles.get(&f.instance.id).cloned())
    }

    async fn role(&self, name: &str) -> CloudResult<Option<Role>> {
        let s = self.enter("role", || format!("reading role {name}"))?;
        Ok(s.roles.get(name).cloned())
    }
    async fn role_policy(&self, role: &str, policy_name: &str) -> CloudResult<Option<String>> {
        let s = self.enter("role_policy", || format!("reading policy {policy_name} of role {role}"))?;
        Ok(s.role_policies.get(&(role.to_string(), policy_name.to_string())).cloned())
    }
    async fn instance_profile(&self, name: &str) -> CloudResult<Option<InstanceProfile>> {
        let s = self.enter("instance_profile", || format!("reading instance profile {name}"))?;
        Ok(s.profiles.get(name).cloned())
    }

    async fn create_vpc(&self, cidr: Ipv4Net, tags: &Tags) -> CloudResult<Vpc> {
        let mut s = self.enter("create_vpc", || format!("creating VPC {cidr}"))?;
        let vpc = Vpc { id: s.id("vpc"), cidr, tags: tags.clone() };
        s.vpcs.insert(vpc.id.clone(), vpc.clone());
        // AWS gives every VPC a main route table, which is not ours and not tagged.
        let main = RouteTable {
            id: s.id("rtb"),
            vpc_id: vpc.id.clone(),
            routes: vec![],
            associations: vec![RouteTableAssociation { id: s.id("rtbassoc"), subnet_id: None, main: true }],
            tags: Tags::new(),
        };
        s.route_tables.insert(main.id.clone(), main);
        Ok(vpc)
    }
    async fn create_subnet(&self, vpc_id: &str, zone: &str, cidr: Ipv4Net, tags: &Tags) -> CloudResult<Subnet> {
        let action = || format!("creating subnet {cidr} in {zone}");
        let mut s = self.enter("create_subnet", action)?;
        if !s.vpcs.contains_key(vpc_id) {
            return Err(not_found(action(), "InvalidVpcID.NotFound"));
        }
        let subnet = Subnet { id: s.id("subnet"), vpc_id: vpc_id.into(), zone: zone.into(), cidr, map_public_ip_on_launch: false, tags: tags.clone() };
        s.subnets.insert(subnet.id.clone(), subnet.clone());
        Ok(subnet)
    }
    async fn enable_public_ips(&self, subnet_id: &str) -> CloudResult<()> {
        let action = || format!("enabling public addresses in subnet {subnet_id}");
        let mut s = self.enter("enable_public_ips", action)?;
        let subnet = s.subnets.get_mut(subnet_id).ok_or_else(|| not_found(action(), "InvalidSubnetID.NotFound"))?;
        subnet.map_public_ip_on_launch = true;
        Ok(())
    }
    async fn create_internet_gateway(&self, tags: &Tags) -> CloudResult<InternetGateway> {
        let mut s = self.enter("create_internet_gateway", || "creating internet gateway".into())?;
        let gw = InternetGateway { id: s.id("igw"), attached_vpcs: vec![], tags: tags.clone() };
        s.gateways.insert(gw.id.clone(), gw.clone());
        Ok(gw)
    }
    async fn attach_internet_gateway(&self, gateway_id: &str, vpc_id: &str) -> CloudResult<()> {
        let action = || format!("attaching internet gateway {gateway_id} to {vpc_id}");
        let mut s = self.enter("attach_internet_gateway", action)?;
        let gw = s.gateways.get_mut(gateway_id).ok_or_else(|| not_found(action(), "InvalidInternetGatewayID.NotFound"))?;
        if !gw.attached_vpcs.is_empty() {
            return Err(CloudError::new(action(), ErrorKind::AlreadyExists, Some("Resource.AlreadyAssociated".into()), "already attached"));
        }
        gw.attached_vpcs.push(vpc_id.into());
        Ok(())
    }
    async fn create_route_table(&self, vpc_id: &str, tags: &Tags) -> CloudResult<RouteTable> {
        let action = || format!("creating route table in {vpc_id}");
        let mut s = self.enter("create_route_table", action)?;
        if !s.vpcs.contains_key(vpc_id) {
            return Err(not_found(action(), "InvalidVpcID.NotFound"));
        }
        let rt = RouteTable { id: s.id("rtb"), vpc_id: vpc_id.into(), routes: vec![], associations: vec![], tags: tags.clone() };
        s.route_tables.insert(rt.id.clone(), rt.clone());
        Ok(rt)
    }
    async fn create_route(&self, route_table_id: &str, destination: Ipv4Net, gateway_id: &str) -> CloudResult<()> {
        let action = || format!("adding route {destination} to {route_table_id}");
        let mut s = self.enter("create_route", action)?;
        let rt = s.route_tables.get_mut(route_table_id).ok_or_else(|| not_found(action(), "InvalidRouteTableID.NotFound"))?;
        if rt.routes.iter().any(|r| r.destination == destination) {
            return Err(CloudError::new(action(), ErrorKind::AlreadyExists, Some("RouteAlreadyExists".into()), ""));
        }
        rt.routes.push(Route { destination, gateway_id: Some(gateway_id.into()), instance_id: None, blackhole: false });
        Ok(())
    }
    async fn create_instance_route(&self, route_table_id: &str, destination: Ipv4Net, instance_id: &str) -> CloudResult<()> {
        let action = || format!("adding route {destination} to instance {instance_id} in {route_table_id}");
        let mut s = self.enter("create_instance_route", action)?;
        if !s.instances.contains_key(instance_id) {
            return Err(not_found(action(), "InvalidInstanceID.NotFound"));
        }
        let rt = s.route_tables.get_mut(route_table_id).ok_or_else(|| not_found(action(), "InvalidRouteTableID.NotFound"))?;
        if rt.routes.iter().any(|r| r.destination == destination) {
            return Err(CloudError::new(action(), ErrorKind::AlreadyExists, Some("RouteAlreadyExists".into()), ""));
        }
        rt.routes.push(Route { destination, gateway_id: None, instance_id: Some(instance_id.into()), blackhole: false });
        Ok(())
    }
    async fn delete_route(&self, route_table_id: &str, destination: Ipv4Net) -> CloudResult<()> {
        let action = || format!("deleting route {destination} from {route_table_id}");
        let mut s = self.enter("delete_route", action)?;
        let rt = s.route_tables.get_mut(route_table_id).ok_or_else(|| not_found(action(), "InvalidRouteTableID.NotFound"))?;
        let before = rt.routes.len();
        rt.routes.retain(|r| r.destination != destination);
        if rt.routes.len() == before {
            return Err(not_found(action(), "InvalidRoute.NotFound"));
        }
        Ok(())
    }
    async fn disable_source_dest_check(&self, instance_id: &str) -> CloudResult<()> {
        let action = || format!("turning off the source/destination check of {instance_id}");
        let mut s = self.enter("disable_source_dest_check", action)?;
        let f = s.instances.get_mut(instance_id).ok_or_else(|| not_found(action(), "InvalidInstanceID.NotFound"))?;
        f.instance.source_dest_check = false;
        Ok(())
    }
    async fn set_instance_profile(&self, instance_id: &str, profile: &str) -> CloudResult<()> {
        let action = || format!("giving instance {instance_id} the instance profile {profile}");
        let mut s = self.enter("set_instance_profile", action)?;
        let arn = s.profiles.get(profile).map(|p| p.arn.clone()).ok_or_else(|| profile_not_seen(action(), profile))?;
        let f = s.instances.get_mut(instance_id).ok_or_else(|| not_found(action(), "InvalidInstanceID.NotFound"))?;
        f.instance.instance_profile = Some(arn);
        Ok(())
    }
    async fn associate_route_table(&self, route_table_id: &str, subnet_id: &str) -> CloudResult<()> {
        let action = || format!("associating route table {route_table_id} with {subnet_id}");
        let mut s = self.enter("associate_route_table", action)?;
        let id = s.id("rtbassoc");
        let rt = s.route_tables.get_mut(route_table_id).ok_or_else(|| not_found(action(), "InvalidRouteTableID.NotFound"))?;
        rt.associations.push(RouteTableAssociation { id, subnet_id: Some(subnet_id.into()), main: false });
        Ok(())
    }
    async fn create_security_group(&self, vpc_id: &str, name: &str, _description: &str, tags: &Tags) -> CloudResult<SecurityGroup> {
        let action = || format!("creating security group {name}");
        let mut s = self.enter("create_security_group", action)?;
        if s.groups.values().any(|g| g.vpc_id == vpc_id && g.name == name) {
            return Err(CloudError::new(action(), ErrorKind::AlreadyExists, Some("InvalidGroup.Duplicate".into()), ""));
        }
        let sg = SecurityGroup { id: s.id("sg"), vpc_id: vpc_id.into(), name: name.into(), ingress: vec![], tags: tags.clone() };
        s.groups.insert(sg.id.clone(), sg.clone());
        Ok(sg)
    }
    async fn authorize_ingress(&self, group_id: &str, rules: &[IngressRule]) -> CloudResult<()> {
        let action = || format!("allowing traffic into security group {group_id}");
        let mut s = self.enter("authorize_ingress", action)?;
        let sg = s.groups.get_mut(group_id).ok_or_else(|| not_found(action(), "InvalidGroup.NotFound"))?;
        if rules.iter().any(|r| sg.ingress.contains(r)) {
            return Err(CloudError::new(action(), ErrorKind::AlreadyExists, Some("InvalidPermission.Duplicate".into()), ""));
        }
        sg.ingress.extend(rules.iter().cloned());
        Ok(())
    }
    async fn revoke_ingress(&self, group_id: &str, rules: &[IngressRule]) -> CloudResult<()> {
        let action = || format!("revoking traffic into security group {group_id}");
        let mut s = self.enter("revoke_ingress", action)?;
        let sg = s.groups.get_mut(group_id).ok_or_else(|| not_found(action(), "InvalidGroup.NotFound"))?;
        sg.ingress.retain(|r| !rules.contains(r));
        Ok(())
    }
    async fn import_key_pair(&self, name: &str, _public_key: &str, tags: &Tags) -> CloudResult<KeyPair> {
        let action = || format!("importing key pair {name}");
        let mut s = self.enter("import_key_pair", action)?;
        if s.key_pairs.contains_key(name) {
            return Err(CloudError::new(action(), ErrorKind::AlreadyExists, Some("InvalidKeyPair.Duplicate".into()), ""));
        }
        let kp = KeyPair { name: name.into(), id: Some(s.id("key")), tags: tags.clone() };
        s.key_pairs.insert(name.into(), kp.clone());
        Ok(kp)
    }
    async fn run_instance(&self, request: &LaunchRequest) -> CloudResult<Instance> {
        let action = || format!("launching instance {} in {}", request.tags.get("Name").map(String::as_str).unwrap_or("?"), request.subnet_id);
        let mut s = self.enter("run_instance", action)?;
        if !s.ignore_client_tokens
            && let Some(first) = s.tokens.get(&request.client_token).cloned()
        {
            return Ok(first);
        }
        let subnet = s.subnets.get(&request.subnet_id).cloned().ok_or_else(|| not_found(action(), "InvalidSubnetID.NotFound"))?;
        let mut instance_profile = None;
        if let Some(name) = &request.instance_profile {
            let invisible = || profile_not_seen(action(), name);
            if s.profile_invisible_launches > 0 {
                s.profile_invisible_launches -= 1;
                return Err(invisible());
            }
            instance_profile = Some(s.profiles.get(name).ok_or_else(invisible)?.arn.clone());
        }
        if !s.key_pairs.contains_key(&request.key_name) {
            return Err(not_found(action(), "InvalidKeyPair.NotFound"));
        }
        let host = s.instances.len() as u32 + 10;
        let private_ip = Ipv4Addr::from(u32::from(subnet.cidr.network()) + host);
        let public_ip = subnet.map_public_ip_on_launch.then_some(private_ip);
        let instance = Instance {
            id: s.id("i"),
            state: InstanceState::Pending,
            instance_type: request.instance_type.clone(),
            image_id: request.image.id.clone(),
            subnet_id: Some(subnet.id.clone()),
            private_ip: Some(private_ip),
            public_ip,
            instance_profile,
            source_dest_check: true,
            tags: request.tags.clone(),
        };
        let hidden_reads = s.hide_new_instances_for;
        s.tokens.insert(request.client_token.clone(), instance.clone());
        s.instances.insert(instance.id.clone(), FakeInstance { instance: instance.clone(), hidden_reads, transition_reads: 1, groups: request.security_group_ids.clone() });
        Ok(instance)
    }
    async fn terminate_instances(&self, ids: &[String]) -> CloudResult<()> {
        let action = || format!("terminating instances {}", ids.join(", "));
        let mut s = self.enter("terminate_instances", action)?;
        if let Some(missing) = ids.iter().find(|id| !s.instances.contains_key(*id)) {
            return Err(not_found(format!("terminating instance {missing}"), "InvalidInstanceID.NotFound"));
        }
        for id in ids {
            if let Some(f) = s.instances.get_mut(id)
                && f.instance.state != InstanceState::Terminated
            {
                f.instance.state = InstanceState::ShuttingDown;
                f.transition_reads = 1;
            }
        }
        Ok(())
    }
    async fn create_load_balancer(&self, name: &str, subnet_ids: &[String], security_group_ids: &[String], tags: &Tags) -> CloudResult<LoadBalancer> {
        let action = || format!("creating load balancer {name}");
        let mut s = self.enter("create_load_balancer", action)?;
        if s.load_balancers.values().any(|l| l.name == name) {
            return Err(CloudError::new(action(), ErrorKind::AlreadyExists, Some("DuplicateLoadBalancerName".into()), ""));
        }
        let vpc_id = subnet_ids.first().and_then(|id| s.subnets.get(id)).map(|sn| sn.vpc_id.clone());
        let lb = LoadBalancer {
            arn: format!("arn:aws:elasticloadbalancing:fake:loadbalancer/net/{name}/{}", s.id("lb")),
            name: name.into(),
            dns_name: format!("{name}.elb.fake"),
            vpc_id,
            subnet_ids: subnet_ids.to_vec(),
            security_group_ids: security_group_ids.to_vec(),
            tags: tags.clone(),
        };
        s.load_balancers.insert(lb.arn.clone(), lb.clone());
        Ok(lb)
    }
    async fn create_target_group(&self, name: &str, vpc_id: &str, port: u16, tags: &Tags) -> CloudResult<TargetGroup> {
        let action = || format!("creating target group {name}");
        let mut s = self.enter("create_target_group", action)?;
        if s.target_groups.values().any(|t| t.name == name) {
            return Err(CloudError::new(action(), ErrorKind::AlreadyExists, Some("DuplicateTargetGroupName".into()), ""));
        }
        let tg = TargetGroup {
            arn: format!("arn:aws:elasticloadbalancing:fake:targetgroup/{name}/{}", s.id("tg")),
            name: name.into(),
            port,
            vpc_id: Some(vpc_id.into()),
            tags: tags.clone(),
        };
        s.targets.insert(tg.arn.clone(), vec![]);
        s.target_groups.insert(tg.arn.clone(), tg.clone());
        Ok(tg)
    }
    async fn create_listener(&self, load_balancer_arn: &str, port: u16, target_group_arn: &str, _tags: &Tags) -> CloudResult<Listener> {
        let action = || format!("creating listener on port {port}");
        let mut s = self.enter("create_listener", action)?;
        if !s.load_balancers.contains_key(load_balancer_arn) {
            return Err(not_found(action(), "LoadBalancerNotFound"));
        }
        let l = Listener {
            arn: format!("{load_balancer_arn}/listener/{}", s.id("l")),
            load_balancer_arn: load_balancer_arn.into(),
            port,
            target_group_arn: Some(target_group_arn.into()),
        };
        s.listeners.insert(l.arn.clone(), l.clone());
        Ok(l)
    }
    async fn register_targets(&self, target_group_arn: &str, instance_ids: &[String], port: u16) -> CloudResult<()> {
        let action = || format!("registering targets in {target_group_arn}");
        let mut s = self.enter("register_targets", action)?;
        // As on AWS, only running instances can be registered.
        if let Some(id) = instance_ids.iter().find(|id| s.instances.get(*id).is_none_or(|f| f.instance.state != InstanceState::Running)) {
            return Err(CloudError::new(action(), ErrorKind::Invalid, Some("InvalidTarget".into()), format!("{id} is not in a running state")));
        }
        let targets = s.targets.get_mut(target_group_arn).ok_or_else(|| not_found(action(), "TargetGroupNotFound"))?;
        for id in instance_ids {
            if !targets.iter().any(|(t, p)| t == id && *p == port) {
                targets.push((id.clone(), port));
            }
        }
        Ok(())
    }
    async fn deregister_targets(&self, target_group_arn: &str, instance_ids: &[String], port: u16) -> CloudResult<()> {
        let action = || format!("deregistering targets from {target_group_arn}");
        let mut s = self.enter("deregister_targets", action)?;
        let targets = s.targets.get_mut(target_group_arn).ok_or_else(|| not_found(action(), "TargetGroupNotFound"))?;
        // As LocalStack's moto: one target that is not registered fails the whole call.
        if let Some(missing) = instance_ids.iter().find(|id| !targets.iter().any(|(t, p)| t == *id && *p == port)) {
            return Err(CloudError::new(action(), ErrorKind::Invalid, Some("InvalidTarget".into()), format!("{missing} is not a registered target")));
        }
        targets.retain(|(t, p)| !(instance_ids.contains(t) && *p == port));
        Ok(())
    }

    async fn delete_listener(&self, arn: &str) -> CloudResult<()> {
        let action = || format!("deleting listener {arn}");
        let mut s = self.enter("delete_listener", action)?;
        s.listeners.remove(arn).map(|_| ()).ok_or_else(|| not_found(action(), "ListenerNotFound"))
    }
    async fn delete_load_balancer(&self, arn: &str) -> CloudResult<()> {
        let action = || format!("deleting load balancer {arn}");
        let mut s = self.enter("delete_load_balancer", action)?;
        s.load_balancers.remove(arn).ok_or_else(|| not_found(action(), "LoadBalancerNotFound"))?;
        s.listeners.retain(|_, l| l.load_balancer_arn != arn);
        Ok(())
    }
    async fn delete_target_group(&self, arn: &str) -> CloudResult<()> {
        let action = || format!("deleting target group {arn}");
        let mut s = self.enter("delete_target_group", action)?;
        if s.listeners.values().any(|l| l.target_group_arn.as_deref() == Some(arn)) {
            return Err(CloudError::new(action(), ErrorKind::DependencyViolation, Some("ResourceInUse".into()), "used by a listener"));
        }
        s.targets.remove(arn);
        s.target_groups.remove(arn).map(|_| ()).ok_or_else(|| not_found(action(), "TargetGroupNotFound"))
    }
    async fn delete_security_group(&self, id: &str) -> CloudResult<()> {
        let action = || format!("deleting security group {id}");
        let mut s = self.enter("delete_security_group", action)?;
        if !s.groups.contains_key(id) {
            return Err(not_found(action(), "InvalidGroup.NotFound"));
        }
        if s.load_balancers.values().any(|l| l.security_group_ids.iter().any(|g| g == id)) {
            return Err(in_use(action(), "a load balancer"));
        }
        // Instances only release their groups once fully terminated.
        if s.instances.values().any(|f| f.instance.state != InstanceState::Terminated && f.groups.iter().any(|g| g == id)) {
            return Err(in_use(action(), "instances"));
        }
        s.groups.remove(id);
        Ok(())
    }
    async fn delete_subnet(&self, id: &str) -> CloudResult<()> {
        let action = || format!("deleting subnet {id}");
        let mut s = self.enter("delete_subnet", action)?;
        if !s.subnets.contains_key(id) {
            return Err(not_found(action(), "InvalidSubnetID.NotFound"));
        }
        if s.instances.values().any(|f| f.instance.state != InstanceState::Terminated && f.instance.subnet_id.as_deref() == Some(id)) {
            return Err(in_use(action(), "instances"));
        }
        if s.load_balancers.values().any(|l| l.subnet_ids.iter().any(|x| x == id)) {
            return Err(in_use(action(), "a load balancer"));
        }
        s.subnets.remove(id);
        for rt in s.route_tables.values_mut() {
            rt.associations.retain(|a| a.subnet_id.as_deref() != Some(id));
        }
        Ok(())
    }
    async fn disassociate_route_table(&self, association_id: &str) -> CloudResult<()> {
        let action = || format!("disassociating route table link {association_id}");
        let mut s = self.enter("disassociate_route_table", action)?;
        for rt in s.route_tables.values_mut() {
            if let Some(pos) = rt.associations.iter().position(|a| a.id == association_id) {
                rt.associations.remove(pos);
                return Ok(());
            }
        }
        Err(not_found(action(), "InvalidAssociationID.NotFound"))
    }
    async fn delete_route_table(&self, id: &str) -> CloudResult<()> {
        let action = || format!("deleting route table {id}");
        let mut s = self.enter("delete_route_table", action)?;
        let rt = s.route_tables.get(id).ok_or_else(|| not_found(action(), "InvalidRouteTableID.NotFound"))?;
        if !rt.associations.is_empty() {
            return Err(in_use(action(), "subnet associations"));
        }
        s.route_tables.remove(id);
        Ok(())
    }
    async fn detach_internet_gateway(&self, gateway_id: &str, vpc_id: &str) -> CloudResult<()> {
        let action = || format!("detaching internet gateway {gateway_id}");
        let mut s = self.enter("detach_internet_gateway", action)?;
        let gw = s.gateways.get_mut(gateway_id).ok_or_else(|| not_found(action(), "InvalidInternetGatewayID.NotFound"))?;
        if !gw.attached_vpcs.iter().any(|v| v == vpc_id) {
            return Err(not_found(action(), "Gateway.NotAttached"));
        }
        gw.attached_vpcs.retain(|v| v != vpc_id);
        Ok(())
    }
    async fn delete_internet_gateway(&self, id: &str) -> CloudResult<()> {
        let action = || format!("deleting internet gateway {id}");
        let mut s = self.enter("delete_internet_gateway", action)?;
        let gw = s.gateways.get(id).ok_or_else(|| not_found(action(), "InvalidInternetGatewayID.NotFound"))?;
        if !gw.attached_vpcs.is_empty() {
            return Err(in_use(action(), "an attached VPC"));
        }
        s.gateways.remove(id);
        Ok(())
    }
    async fn delete_vpc(&self, id: &str) -> CloudResult<()> {
        let action = || format!("deleting VPC {id}");
        let mut s = self.enter("delete_vpc", action)?;
        if !s.vpcs.contains_key(id) {
            return Err(not_found(action(), "InvalidVpcID.NotFound"));
        }
        if s.subnets.values().any(|x| x.vpc_id == id) {
            return Err(in_use(action(), "subnets"));
        }
        if s.groups.values().any(|x| x.vpc_id == id) {
            return Err(in_use(action(), "security groups"));
        }
        if s.gateways.values().any(|g| g.attached_vpcs.iter().any(|v| v == id)) {
            return Err(in_use(action(), "an internet gateway"));
        }
        if s.route_tables.values().any(|r| r.vpc_id == id && !r.associations.iter().any(|a| a.main)) {
            return Err(in_use(action(), "route tables"));
        }
        s.vpcs.remove(id);
        s.route_tables.retain(|_, r| r.vpc_id != id);
        Ok(())
    }
    async fn delete_key_pair(&self, name: &str) -> CloudResult<()> {
        let action = || format!("deleting key pair {name}");
        let mut s = self.enter("delete_key_pair", action)?;
        s.key_pairs.remove(name).map(|_| ()).ok_or_else(|| not_found(action(), "InvalidKeyPair.NotFound"))
    }

    async fn create_role(&self, name: &str, path: &str, trust_policy: &str, tags: &Tags) -> CloudResult<Role> {
        let action = || format!("creating role {name}");
        let mut s = self.enter("create_role", action)?;
        if s.roles.contains_key(name) {
            return Err(CloudError::new(action(), ErrorKind::AlreadyExists, Some("EntityAlreadyExists".into()), ""));
        }
        serde_json::from_str::<serde_json::Value>(trust_policy)
            .map_err(|e| CloudError::new(action(), ErrorKind::Invalid, Some("MalformedPolicyDocument".into()), e.to_string()))?;
        let role = Role { name: name.into(), arn: format!("arn:aws:iam::000000000000:role{path}{name}"), path: path.into(), trust_policy: trust_policy.into(), tags: tags.clone() };
        s.roles.insert(name.into(), role.clone());
        Ok(role)
    }
    async fn put_role_policy(&self, role: &str, policy_name: &str, document: &str) -> CloudResult<()> {
        let action = || format!("putting policy {policy_name} on role {role}");
        let mut s = self.enter("put_role_policy", action)?;
        if !s.roles.contains_key(role) {
            return Err(not_found(action(), "NoSuchEntity"));
        }
        serde_json::from_str::<serde_json::Value>(document)
            .map_err(|e| CloudError::new(action(), ErrorKind::Invalid, Some("MalformedPolicyDocument".into()), e.to_string()))?;
        s.role_policies.insert((role.into(), policy_name.into()), document.into());
        Ok(())
    }
    async fn create_instance_profile(&self, name: &str, path: &str, tags: &Tags) -> CloudResult<InstanceProfile> {
        let action = || format!("creating instance profile {name}");
        let mut s = self.enter("create_instance_profile", action)?;
        if s.profiles.contains_key(name) {
            return Err(CloudError::new(action(), ErrorKind::AlreadyExists, Some("EntityAlreadyExists".into()), ""));
        }
        let profile = InstanceProfile { name: name.into(), arn: format!("arn:aws:iam::000000000000:instance-profile{path}{name}"), path: path.into(), roles: vec![], tags: tags.clone() };
        s.profiles.insert(name.into(), profile.clone());
        Ok(profile)
    }
    async fn add_role_to_instance_profile(&self, profile: &str, role: &str) -> CloudResult<()> {
        let action = || format!("adding role {role} to instance profile {profile}");
        let mut s = self.enter("add_role_to_instance_profile", action)?;
        if !s.roles.contains_key(role) {
            return Err(not_found(action(), "NoSuchEntity"));
        }
        let p = s.profiles.get_mut(profile).ok_or_else(|| not_found(action(), "NoSuchEntity"))?;
        if !p.roles.is_empty() {
            // AWS allows one role per profile, and says so with a quota error even for the same role.
            return Err(CloudError::new(action(), ErrorKind::Other, Some("LimitExceeded".into()), "Cannot exceed quota for InstanceSessionsPerInstanceProfile: 1"));
        }
        p.roles.push(role.into());
        Ok(())
    }
    async fn remove_role_from_instance_profile(&self, profile: &str, role: &str) -> CloudResult<()> {
        let action = || format!("removing role {role} from instance profile {profile}");
        let mut s = self.enter("remove_role_from_instance_profile", action)?;
        let p = s.profiles.get_mut(profile).ok_or_else(|| not_found(action(), "NoSuchEntity"))?;
        let before = p.roles.len();
        p.roles.retain(|r| r != role);
        if p.roles.len() == before {
            return Err(not_found(action(), "NoSuchEntity"));
        }
        Ok(())
    }
    async fn delete_instance_profile(&self, name: &str) -> CloudResult<()> {
        let action = || format!("deleting instance profile {name}");
        let mut s = self.enter("delete_instance_profile", action)?;
        let p = s.profiles.get(name).ok_or_else(|| not_found(action(), "NoSuchEntity"))?;
        if !p.roles.is_empty() {
            return Err(CloudError::new(action(), ErrorKind::DependencyViolation, Some("DeleteConflict".into()), "the profile still holds a role"));
        }
        s.profiles.remove(name);
        Ok(())
    }
    async fn delete_role_policy(&self, role: &str, policy_name: &str) -> CloudResult<()> {
        let action = || format!("deleting policy {policy_name} of role {role}");
        let mut s = self.enter("delete_role_policy", action)?;
        s.role_policies.remove(&(role.to_string(), policy_name.to_string())).map(|_| ()).ok_or_else(|| not_found(action(), "NoSuchEntity"))
    }
    async fn delete_role(&self, name: &str) -> CloudResult<()> {
        let action = || format!("deleting role {name}");
        let mut s = self.enter("delete_role", action)?;
        if !s.roles.contains_key(name) {
            return Err(not_found(action(), "NoSuchEntity"));
        }
        if s.role_policies.keys().any(|(r, _)| r == name) {
            return Err(CloudError::new(action(), ErrorKind::DependencyViolation, Some("DeleteConflict".into()), "the role still has inline policies"));
        }
        if s.profiles.values().any(|p| p.roles.iter().any(|r| r == name)) {
            return Err(CloudError::new(action(), ErrorKind::DependencyViolation, Some("DeleteConflict".into()), "the role is still in an instance profile"));
        }
        s.roles.remove(name);
        Ok(())
    }
}

/// Moves an instance one read further through its lifecycle.
fn advance(f: &mut FakeInstance) {
    if f.transition_reads > 0 {
        f.transition_reads -= 1;
        return;
    }
    f.instance.state = match f.instance.state {
        InstanceState::Pending => InstanceState::Running,
        InstanceState::ShuttingDown => InstanceState::Terminated,
        other => other,
    };
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn globs_match_like_ec2_name_filters() {
        assert!(glob_match("debian-12-*", "debian-12-amd64-1"));
        assert!(glob_match("*-12-*", "debian-12-amd64-1"));
        assert!(!glob_match("debian-11-*", "debian-12-amd64-1"));
        assert!(glob_match("exact", "exact"));
    }
}
