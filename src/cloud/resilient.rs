//! [`Resilient`]: the retry and idempotency semantics of every cloud call.
//!
//! The raw implementations ([`super::aws`], [`super::fake`]) report what the
//! cloud said. This decorator decides what it means:
//! - throttling and transport failures are retried with full-jitter exponential
//!   back-off, every retry paid from one budget shared by all calls of a run;
//! - not-found right after a create is eventual consistency: reads by id and
//!   mutations of a resource are polled until a deadline;
//! - not-found on delete is success, already-exists on an attach, rule or
//!   association is success;
//! - `DependencyViolation` on delete is retried until a deadline;
//! - creates are not retried after a transport failure (the create may have
//!   happened), except launches, which carry an idempotency token;
//! - a launch that names something not visible yet (an instance profile made
//!   seconds ago: IAM is eventually consistent) is retried until a deadline.
//!
//! It also records every mutating call, so that "no changes" can be proved.

use std::future::Future;
use std::sync::atomic::{AtomicI64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use async_trait::async_trait;
use ipnet::Ipv4Net;
use rand::RngExt;
use tokio::time::Instant;

use super::*;

/// Timing and budget of retries.
#[derive(Debug, Clone)]
pub struct RetryPolicy {
    /// First back-off step for throttling and transport failures.
    pub base_backoff: Duration,
    /// Largest single back-off.
    pub max_backoff: Duration,
    /// How long one call may keep being throttled.
    pub throttle_deadline: Duration,
    /// How long a just-created resource may stay invisible.
    pub consistency_deadline: Duration,
    /// How long a delete may keep failing with `DependencyViolation`.
    pub dependency_deadline: Duration,
    /// Pause between `DependencyViolation` retries.
    pub dependency_interval: Duration,
    /// Retries (of throttling and transport failures) that all calls together may spend.
    pub retry_budget: i64,
}

impl Default for RetryPolicy {
    fn default() -> Self {
        RetryPolicy {
            base_backoff: Duration::from_millis(200),
            max_backoff: Duration::from_secs(20),
            throttle_deadline: Duration::from_secs(180),
            consistency_deadline: Duration::from_secs(60),
            dependency_deadline: Duration::from_secs(600),
            dependency_interval: Duration::from_secs(2),
            retry_budget: 1000,
        }
    }
}

/// How a call behaves on failure.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Class {
    /// Listing or describing.
    Read,
    /// Creating something new: never retried after a transport failure.
    Create,
    /// Launching: like a create, but idempotent through its token.
    Launch,
    /// Changing an existing resource: idempotent, may hit eventual consistency.
    Mutate,
    /// Deleting.
    Delete,
}

/// The cloud decorator that gives every call its retry semantics; see the module docs.
pub struct Resilient {
    inner: Arc<dyn Cloud>,
    policy: RetryPolicy,
    budget: Arc<AtomicI64>,
    mutations: Mutex<Vec<String>>,
}

impl Resilient {
    /// Wraps a raw cloud implementation.
    pub fn new(inner: Arc<dyn Cloud>, policy: RetryPolicy) -> Self {
        let budget = Arc::new(AtomicI64::new(policy.retry_budget));
        Resilient { inner, policy, budget, mutations: Mutex::new(Vec::new()) }
    }

    /// The mutating calls made so far, in order (`create_vpc 10.0.0.0/16`, ...).
    pub fn mutations(&self) -> Vec<String> {
        self.mutations.lock().map(|m| m.clone()).unwrap_or_default()
    }

    /// Retries left in the shared budget.
    pub fn retries_left(&self) -> i64 {
        self.budget.load(Ordering::Relaxed)
    }

    fn record(&self, class: Class, what: String) {
        if class != Class::Read
            && let Ok(mut m) = self.mutations.lock()
        {
            m.push(what);
        }
    }

    fn backoff(&self, attempt: u32) -> Duration {
        let cap = self
            .policy
            .base_backoff
            .saturating_mul(2u32.saturating_pow(attempt.min(16)))
            .min(self.policy.max_backoff);
        let millis = cap.as_millis().max(1) as u64;
        Duration::from_millis(rand::rng().random_range(0..=millis))
    }

    async fn call<T, F, Fut>(&self, class: Class, what: String, mut f: F) -> CloudResult<T>
    where
        F: FnMut() -> Fut + Send,
        Fut: Future<Output = CloudResult<T>> + Send,
        T: Send,
    {
        self.record(class, what);
        let start = Instant::now();
        let mut attempt: u32 = 0;
        loop {
            let err = match f().await {
                Ok(v) => return Ok(v),
                Err(e) => e,
            };
            let elapsed = start.elapsed();
            let wait = match err.kind {
                ErrorKind::Throttled => (elapsed < self.policy.throttle_deadline).then(|| self.backoff(attempt)),
                ErrorKind::Transport if class != Class::Create => {
                    (elapsed < self.policy.throttle_deadline).then(|| self.backoff(attempt))
                }
                // A launch refers to a subnet, groups, a key pair and an instance profile that may
                // have been created a moment ago.
                ErrorKind::NotFound if matches!(class, Class::Read | Class::Mutate | Class::Launch) => {
                    (elapsed < self.policy.consistency_deadline).then(|| self.backoff(attempt.min(4)))
                }
                ErrorKind::DependencyViolation if class == Class::Delete => {
                    (elapsed < self.policy.dependency_deadline).then_some(self.policy.dependency_interval)
                }
                _ => None,
            };
            let Some(wait) = wait else {
                return Err(if attempt == 0 { err } else { gave_up(err, attempt, elapsed) });
            };
            if matches!(err.kind, ErrorKind::Throttled | ErrorKind::Transport)
                && self.budget.fetch_sub(1, Ordering::Relaxed) <= 0
            {
                let mut e = gave_up(err, attempt, elapsed);
                e.kind = ErrorKind::GaveUp;
                e.message = format!("the shared retry budget is spent; last answer: {}", e.message);
                return Err(e);
            }
            tracing::debug!(error = %err, ?wait, attempt, "retrying cloud call");
            tokio::time::sleep(wait).await;
            attempt += 1;
        }
    }

    async fn delete<F, Fut>(&self, what: String, f: F) -> CloudResult<()>
    where
        F: FnMut() -> Fut + Send,
        Fut: Future<Output = CloudResult<()>> + Send,
    {
        match self.call(Class::Delete, what, f).await {
            Err(e) if e.kind == ErrorKind::NotFound => Ok(()),
            other => other,
        }
    }

    async fn mutate<F, Fut>(&self, what: String, f: F) -> CloudResult<()>
    where
        F: FnMut() -> Fut + Send,
        Fut: Future<Output = CloudResult<()>> + Send,
    {
        match self.call(Class::Mutate, what, f).await {
            Err(e) if e.kind == ErrorKind::AlreadyExists => Ok(()),
            other => other,
        }
    }
}

fn gave_up(mut err: CloudError, attempts: u32, elapsed: Duration) -> CloudError {
    err.message = format!("{} (after {} attempts over {:.1}s)", err.message, attempts + 1, elapsed.as_secs_f64());
    err
}

#[async_trait]
impl Cloud for Resilient {
    async fn vpcs(&self, tags: &Tags) -> CloudResult<Vec<Vpc>> {
        self.call(Class::Read, String::new(), || self.inner.vpcs(tags)).await
    }
    async fn subnets(&self, tags: &Tags) -> CloudResult<Vec<Subnet>> {
        self.call(Class::Read, String::new(), || self.inner.subnets(tags)).await
    }
    async fn internet_gateways(&self, tags: &Tags) -> CloudResult<Vec<InternetGateway>> {
        self.call(Class::Read, String::new(), || self.inner.internet_gateways(tags)).await
    }
    async fn route_tables(&self, tags: &Tags) -> CloudResult<Vec<RouteTable>> {
        self.call(Class::Read, String::new(), || self.inner.route_tables(tags)).await
    }
    async fn security_groups(&self, tags: &Tags) -> CloudResult<Vec<SecurityGroup>> {
        self.call(Class::Read, String::new(), || self.inner.security_groups(tags)).await
    }
    async fn key_pairs(&self, tags: &Tags) -> CloudResult<Vec<KeyPair>> {
        self.call(Class::Read, String::new(), || self.inner.key_pairs(tags)).await
    }
    async fn instances(&self, tags: &Tags) -> CloudResult<Vec<Instance>> {
        self.call(Class::Read, String::new(), || self.inner.instances(tags)).await
    }
    async fn instances_by_id(&self, ids: &[String]) -> CloudResult<Vec<Instance>> {
        self.call(Class::Read, String::new(), || self.inner.instances_by_id(ids)).await
    }
    async fn load_balancers(&self, tags: &Tags) -> CloudResult<Vec<LoadBalancer>> {
        self.call(Class::Read, String::new(), || self.inner.load_balancers(tags)).await
    }
    async fn target_groups(&self, tags: &Tags) -> CloudResult<Vec<TargetGroup>> {
        self.call(Class::Read, String::new(), || self.inner.target_groups(tags)).await
    }
    async fn listeners(&self, load_balancer_arn: &str) -> CloudResult<Vec<Listener>> {
        self.call(Class::Read, String::new(), || self.inner.listeners(load_balancer_arn)).await
    }
    async fn target_health(&self, target_group_arn: &str) -> CloudResult<Vec<TargetHealth>> {
        self.call(Class::Read, String::new(), || self.inner.target_health(target_group_arn)).await
    }
    async fn instance_statuses(&self, ids: &[String]) -> CloudResult<Vec<InstanceStatus>> {
        self.call(Class::Read, String::new(), || self.inner.instance_statuses(ids)).await
    }
    async fn find_image(&self, pattern: &str, owner: Option<&str>) -> CloudResult<Option<Image>> {
        self.call(Class::Read, String::new(), || self.inner.find_image(pattern, owner)).await
    }
    async fn image(&self, id: &str) -> CloudResult<Image> {
        self.call(Class::Read, String::new(), || self.inner.image(id)).await
    }

    async fn console_output(&self, instance_id: &str) -> CloudResult<Option<String>> {
        self.call(Class::Read, String::new(), || self.inner.console_output(instance_id)).await
    }
    async fn role(&self, name: &str) -> CloudResult<Option<Role>> {
        self.call(Class::Read, String::new(), || self.inner.role(name)).await
    }
    async fn role_policy(&self, role: &str, policy_name: &str) -> CloudResult<Option<String>> {
        self.call(Class::Read, String::new(), || self.inner.role_policy(role, policy_name)).await
    }
    async fn instance_profile(&self, name: &str) -> CloudResult<Option<InstanceProfile>> {
        self.call(Class::Read, String::new(), || self.inner.instance_profile(name)).await
    }

    async fn create_vpc(&self, cidr: Ipv4Net, tags: &Tags) -> CloudResult<Vpc> {
        self.call(Class::Create, format!("create_vpc {cidr}"), || self.inner.create_vpc(cidr, tags)).await
    }
    async fn create_subnet(&self, vpc_id: &str, zone: &str, cidr: Ipv4Net, tags: &Tags) -> CloudResult<Subnet> {
        self.call(Class::Create, format!("create_subnet {cidr} {zone}"), || {
            self.inner.create_subnet(vpc_id, zone, cidr, tags)
        })
        .await
    }
    async fn enable_public_ips(&self, subnet_id: &str) -> CloudResult<()> {
        self.mutate(format!("enable_public_ips {subnet_id}"), || self.inner.enable_public_ips(subnet_id)).await
    }
    async fn create_internet_gateway(&self, tags: &Tags) -> CloudResult<InternetGateway> {
        self.call(Class::Create, "create_internet_gateway".into(), || self.inner.create_internet_gateway(tags)).await
    }
    async fn attach_internet_gateway(&self, gateway_id: &str, vpc_id: &str) -> CloudResult<()> {
        self.mutate(format!("attach_internet_gateway {gateway_id} {vpc_id}"), || {
            self.inner.attach_internet_gateway(gateway_id, vpc_id)
        })
        .await
    }
    async fn create_route_table(&self, vpc_id: &str, tags: &Tags) -> CloudResult<RouteTable> {
        self.call(Class::Create, format!("create_route_table {vpc_id}"), || self.inner.create_route_table(vpc_id, tags)).await
    }
    async fn create_route(&self, route_table_id: &str, destination: Ipv4Net, gateway_id: &str) -> CloudResult<()> {
        self.mutate(format!("create_route {route_table_id} {destination}"), || {
            self.inner.create_route(route_table_id, destination, gateway_id)
        })
        .await
    }
    async fn create_instance_route(&self, route_table_id: &str, destination: Ipv4Net, instance_id: &str) -> CloudResult<()> {
        self.mutate(format!("create_instance_route {route_table_id} {destination} {instance_id}"), || {
            self.inner.create_instance_route(route_table_id, destination, instance_id)
        })
        .await
    }
    async fn delete_route(&self, route_table_id: &str, destination: Ipv4Net) -> CloudResult<()> {
        self.call(Class::Delete, format!("delete_route {route_table_id} {destination}"), || self.inner.delete_route(route_table_id, destination)).await
    }
    async fn disable_source_dest_check(&self, instance_id: &str) -> CloudResult<()> {
        self.mutate(format!("disable_source_dest_check {instance_id}"), || self.inner.disable_source_dest_check(instance_id)).await
    }
    async fn set_instance_profile(&self, instance_id: &str, profile: &str) -> CloudResult<()> {
        self.mutate(format!("set_instance_profile {instance_id} {profile}"), || self.inner.set_instance_profile(instance_id, profile)).await
    }
    async fn associate_route_table(&self, route_table_id: &str, subnet_id: &str) -> CloudResult<()> {
        self.mutate(format!("associate_route_table {route_table_id} {subnet_id}"), || {
            self.inner.associate_route_table(route_table_id, subnet_id)
        })
        .await
    }
    async fn create_security_group(&self, vpc_id: &str, name: &str, description: &str, tags: &Tags) -> CloudResult<SecurityGroup> {
        self.call(Class::Create, format!("create_security_group {name}"), || {
            self.inner.create_security_group(vpc_id, name, description, tags)
        })
        .await
    }
    async fn authorize_ingress(&self, group_id: &str, rules: &[IngressRule]) -> CloudResult<()> {
        self.mutate(format!("authorize_ingress {group_id}"), || self.inner.authorize_ingress(group_id, rules)).await
    }
    async fn revoke_ingress(&self, group_id: &str, rules: &[IngressRule]) -> CloudResult<()> {
        self.delete(format!("revoke_ingress {group_id}"), || self.inner.revoke_ingress(group_id, rules)).await
    }
    async fn import_key_pair(&self, name: &str, public_key: &str, tags: &Tags) -> CloudResult<KeyPair> {
        self.call(Class::Create, format!("import_key_pair {name}"), || self.inner.import_key_pair(name, public_key, tags)).await
    }
    async fn run_instance(&self, request: &LaunchRequest) -> CloudResult<Instance> {
        self.call(Class::Launch, format!("run_instance {}", request.client_token), || self.inner.run_instance(request)).await
    }
    async fn terminate_instances(&self, ids: &[String]) -> CloudResult<()> {
        self.delete(format!("terminate_instances {}", ids.join(",")), || self.inner.terminate_instances(ids)).await
    }
    async fn create_load_balancer(&self, name: &str, subnet_ids: &[String], security_group_ids: &[String], tags: &Tags) -> CloudResult<LoadBalancer> {
        self.call(Class::Create, format!("create_load_balancer {name}"), || {
            self.inner.create_load_balancer(name, subnet_ids, security_group_ids, tags)
        })
        .await
    }
    async fn create_target_group(&self, name: &str, vpc_id: &str, port: u16, tags: &Tags) -> CloudResult<TargetGroup> {
        self.call(Class::Create, format!("create_target_group {name}"), || self.inner.create_target_group(name, vpc_id, port, tags)).await
    }
    async fn create_listener(&self, load_balancer_arn: &str, port: u16, target_group_arn: &str, tags: &Tags) -> CloudResult<Listener> {
        self.call(Class::Create, format!("create_listener {port}"), || {
            self.inner.create_listener(load_balancer_arn, port, target_group_arn, tags)
        })
        .await
    }
    async fn register_targets(&self, target_group_arn: &str, instance_ids: &[String], port: u16) -> CloudResult<()> {
        self.mutate(format!("register_targets {}", instance_ids.join(",")), || {
            self.inner.register_targets(target_group_arn, instance_ids, port)
        })
        .await
    }
    async fn deregister_targets(&self, target_group_arn: &str, instance_ids: &[String], port: u16) -> CloudResult<()> {
        let result = self.delete(format!("deregister_targets {}", instance_ids.join(",")), || self.inner.deregister_targets(target_group_arn, instance_ids, port)).await;
        // A target that is not registered (any more) is deregistered: retry one by one, so that
        // one already gone does not keep the others registered.
        match result {
            Err(e) if e.code.as_deref() == Some("InvalidTarget") => {
                for id in instance_ids {
                    let one = std::slice::from_ref(id);
                    match self.delete(format!("deregister_targets {id}"), || self.inner.deregister_targets(target_group_arn, one, port)).await {
                        Err(e) if e.code.as_deref() == Some("InvalidTarget") => {}
                        other => other?,
                    }
                }
                Ok(())
            }
            other => other,
        }
    }

    async fn delete_listener(&self, arn: &str) -> CloudResult<()> {
        self.delete(format!("delete_listener {arn}"), || self.inner.delete_listener(arn)).await
    }
    async fn delete_load_balancer(&self, arn: &str) -> CloudResult<()> {
        self.delete(format!("delete_load_balancer {arn}"), || self.inner.delete_load_balancer(arn)).await
    }
    async fn delete_target_group(&self, arn: &str) -> CloudResult<()> {
        self.delete(format!("delete_target_group {arn}"), || self.inner.delete_target_group(arn)).await
    }
    async fn delete_security_group(&self, id: &str) -> CloudResult<()> {
        self.delete(format!("delete_security_group {id}"), || self.inner.delete_security_group(id)).await
    }
    async fn delete_subnet(&self, id: &str) -> CloudResult<()> {
        self.delete(format!("delete_subnet {id}"), || self.inner.delete_subnet(id)).await
    }
    async fn disassociate_route_table(&self, association_id: &str) -> CloudResult<()> {
        self.delete(format!("disassociate_route_table {association_id}"), || self.inner.disassociate_route_table(association_id)).await
    }
    async fn delete_route_table(&self, id: &str) -> CloudResult<()> {
        self.delete(format!("delete_route_table {id}"), || self.inner.delete_route_table(id)).await
    }
    async fn detach_internet_gateway(&self, gateway_id: &str, vpc_id: &str) -> CloudResult<()> {
        self.delete(format!("detach_internet_gateway {gateway_id}"), || self.inner.detach_internet_gateway(gateway_id, vpc_id)).await
    }
    async fn delete_internet_gateway(&self, id: &str) -> CloudResult<()> {
        self.delete(format!("delete_internet_gateway {id}"), || self.inner.delete_internet_gateway(id)).await
    }
    async fn delete_vpc(&self, id: &str) -> CloudResult<()> {
        self.delete(format!("delete_vpc {id}"), || self.inner.delete_vpc(id)).await
    }
    async fn delete_key_pair(&self, name: &str) -> CloudResult<()> {
        self.delete(format!("delete_key_pair {name}"), || self.inner.delete_key_pair(name)).await
    }

    async fn create_role(&self, name: &str, path: &str, trust_policy: &str, tags: &Tags) -> CloudResult<Role> {
        self.call(Class::Create, format!("create_role {name}"), || self.inner.create_role(name, path, trust_policy, tags)).await
    }
    async fn put_role_policy(&self, role: &str, policy_name: &str, document: &str) -> CloudResult<()> {
        // Replacing a policy is idempotent; the role may have been created a moment ago.
        self.mutate(format!("put_role_policy {role} {policy_name}"), || self.inner.put_role_policy(role, policy_name, document)).await
    }
    async fn create_instance_profile(&self, name: &str, path: &str, tags: &Tags) -> CloudResult<InstanceProfile> {
        self.call(Class::Create, format!("create_instance_profile {name}"), || self.inner.create_instance_profile(name, path, tags)).await
    }
    async fn add_role_to_instance_profile(&self, profile: &str, role: &str) -> CloudResult<()> {
        self.mutate(format!("add_role_to_instance_profile {profile} {role}"), || self.inner.add_role_to_instance_profile(profile, role)).await
    }
    async fn remove_role_from_instance_profile(&self, profile: &str, role: &str) -> CloudResult<()> {
        self.delete(format!("remove_role_from_instance_profile {profile} {role}"), || self.inner.remove_role_from_instance_profile(profile, role)).await
    }
    async fn delete_instance_profile(&self, name: &str) -> CloudResult<()> {
        self.delete(format!("delete_instance_profile {name}"), || self.inner.delete_instance_profile(name)).await
    }
    async fn delete_role_policy(&self, role: &str, policy_name: &str) -> CloudResult<()> {
        self.delete(format!("delete_role_policy {role} {policy_name}"), || self.inner.delete_role_policy(role, policy_name)).await
    }
    async fn delete_role(&self, name: &str) -> CloudResult<()> {
        self.delete(format!("delete_role {name}"), || self.inner.delete_role(name)).await
    }
}
