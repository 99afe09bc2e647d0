//! Deletes everything a cluster owns, found by its ownership tag, in dependency order.
//!
//! First the cluster's controllers are stopped: the masters' instances are terminated (and waited
//! for) before anything else, and what the cluster owns is then found again, so that a machine
//! controller relaunching workers, a service controller recreating a balancer or a route
//! controller writing a route cannot act mid-destroy and leave something behind. Terminating the
//! masters stops them whatever state their API is in. Then, in order: listeners, load balancers, target groups, instances (and wait until
//! terminated), the masters' and workers' instance profiles and roles (only once no instance
//! can use them any more), security groups, subnets, route tables, internet
//! gateway (detach, delete), VPC, key pair. Every step goes on after a failure so
//! that as much as possible is removed; the report lists what remains.

use std::time::Duration;

use tokio::time::Instant;

use crate::cloud::{Cloud, CloudError, Instance, InstanceState, ROLE_TAG};
use crate::report::Reporter;

use super::iam::InstanceRole;
use super::inventory::discover;
use super::ProvisionError;

/// What a destroy did and what it could not do.
#[derive(Debug, Clone, Default)]
pub struct DestroyReport {
    /// One line per deleted resource.
    pub deleted: Vec<String>,
    /// Errors met on the way (each names what was being deleted).
    pub errors: Vec<String>,
    /// Resources still tagged with the cluster afterwards.
    pub remaining: Vec<String>,
}

impl DestroyReport {
    /// Whether everything is gone.
    pub fn is_clean(&self) -> bool {
        self.remaining.is_empty() && self.errors.is_empty()
    }
}

struct Run<'a> {
    reporter: &'a dyn Reporter,
    report: DestroyReport,
}

impl Run<'_> {
    fn record(&mut self, what: String, result: Result<(), CloudError>) {
        match result {
            Ok(()) => {
                self.reporter.done(&format!("- {what}"));
                self.report.deleted.push(what);
            }
            Err(e) => {
                self.reporter.warn(&e.to_string());
                self.report.errors.push(e.to_string());
            }
        }
    }
}

/// Deletes every resource tagged with the cluster; waits up to `instance_deadline` for instances to terminate.
pub async fn destroy(cloud: &dyn Cloud, cluster: &str, instance_deadline: Duration, reporter: &dyn Reporter) -> Result<DestroyReport, ProvisionError> {
    reporter.phase("discovering resources tagged with the cluster");
    let mut inv = discover(cloud, cluster).await?;
    let mut run = Run { reporter, report: DestroyReport::default() };
    if inv.is_empty() {
        return Ok(run.report);
    }

    let masters: Vec<Instance> = inv.instances.iter().filter(|i| i.tags.get(ROLE_TAG).map(String::as_str) == Some("master")).cloned().collect();
    if !masters.is_empty() {
        reporter.phase("stopping the cluster's controllers: terminating the masters first");
        let ids: Vec<String> = masters.iter().map(|i| i.id.clone()).collect();
        let result = cloud.terminate_instances(&ids).await;
        let terminated = result.is_ok();
        run.record(format!("masters {}", ids.join(", ")), result);
        let stopped = terminated && match wait_terminated(cloud, &masters, instance_deadline, reporter).await {
            Ok(()) => true,
            Err(e) => {
                reporter.warn(&e.to_string());
                run.report.errors.push(e.to_string());
                false
            }
        };
        // What the controllers made up to their last moment; masters that did not go are tried
        // again with the other instances.
        inv = discover(cloud, cluster).await?;
        if stopped {
            inv.instances.retain(|i| !ids.contains(&i.id));
        }
    }

    reporter.phase("deleting load balancers");
    for l in &inv.listeners {
        run.record(format!("listener {} port {}", l.arn, l.port), cloud.delete_listener(&l.arn).await);
    }
    for lb in &inv.load_balancers {
        run.record(format!("load balancer {}", lb.name), cloud.delete_load_balancer(&lb.arn).await);
    }
    for tg in &inv.target_groups {
        run.record(format!("target group {}", tg.name), cloud.delete_target_group(&tg.arn).await);
    }

    let mut instances_gone = true;
    if !inv.instances.is_empty() {
        reporter.phase("terminating instances");
        let ids: Vec<String> = inv.instances.iter().map(|i| i.id.clone()).collect();
        let result = cloud.terminate_instances(&ids).await;
        instances_gone = result.is_ok();
        run.record(format!("instances {}", ids.join(", ")), result);
        if instances_gone && let Err(e) = wait_terminated(cloud, &inv.instances, instance_deadline, reporter).await {
            instances_gone = false;
            reporter.warn(&e.to_string());
            run.report.errors.push(e.to_string());
        }
    }

    for kind in InstanceRole::ALL {
        let found = inv.iam(kind);
        if found.role.is_none() && found.profile.is_none() {
            continue;
        }
        if !instances_gone {
            let e = format!("kept the {}s' instance profile and role: instances may still use them; run destroy again", kind.as_str());
            reporter.warn(&e);
            run.report.errors.push(e);
            continue;
        }
        reporter.phase(&format!("deleting the {}s' instance profile and role", kind.as_str()));
        if let Some(p) = &found.profile {
            for role in &p.roles {
                run.record(format!("role {role} in instance profile {}", p.name), cloud.remove_role_from_instance_profile(&p.name, role).await);
            }
            run.record(format!("instance profile {}", p.name), cloud.delete_instance_profile(&p.name).await);
        }
        if let Some(r) = &found.role {
            if found.policy.is_some() {
                run.record(format!("policy {} of role {}", kind.policy_name(), r.name), cloud.delete_role_policy(&r.name, kind.policy_name()).await);
            }
            run.record(format!("iam role {}", r.name), cloud.delete_role(&r.name).await);
        }
    }

    reporter.phase("deleting the network");
    for g in &inv.security_groups {
        run.record(format!("security group {} {}", g.id, g.name), cloud.delete_security_group(&g.id).await);
    }
    for s in &inv.subnets {
        run.record(format!("subnet {} {}", s.id, s.cidr), cloud.delete_subnet(&s.id).await);
    }
    for rt in &inv.route_tables {
        for a in rt.associations.iter().filter(|a| !a.main) {
            // Deleting the subnet removed its association already; not-found is success.
            let _ = cloud.disassociate_route_table(&a.id).await;
        }
        run.record(format!("route table {}", rt.id), cloud.delete_route_table(&rt.id).await);
    }
    for g in &inv.internet_gateways {
        for vpc in &g.attached_vpcs {
            run.record(format!("attachment of {} to {vpc}", g.id), cloud.detach_internet_gateway(&g.id, vpc).await);
        }
        run.record(format!("internet gateway {}", g.id), cloud.delete_internet_gateway(&g.id).await);
    }
    for v in &inv.vpcs {
        run.record(format!("vpc {} {}", v.id, v.cidr), cloud.delete_vpc(&v.id).await);
    }
    for k in &inv.key_pairs {
        run.record(format!("key pair {}", k.name), cloud.delete_key_pair(&k.name).await);
    }

    reporter.phase("checking that nothing remains");
    let after = discover(cloud, cluster).await?;
    run.report.remaining = after.describe();
    Ok(run.report)
}

async fn wait_terminated(cloud: &dyn Cloud, instances: &[Instance], deadline: Duration, reporter: &dyn Reporter) -> Result<(), ProvisionError> {
    let start = Instant::now();
    let mut ids: Vec<String> = instances.iter().map(|i| i.id.clone()).collect();
    let name = |id: &str| instances.iter().find(|i| i.id == id).and_then(|i| i.tags.get("Name").cloned()).unwrap_or_else(|| id.to_string());
    loop {
        let current = match cloud.instances_by_id(&ids).await {
            Ok(c) => c,
            // Terminated instances eventually vanish from the API altogether.
            Err(e) if e.is_not_found() => Vec::new(),
            Err(e) => return Err(e.into()),
        };
        for i in &current {
            if i.state == InstanceState::Terminated {
                reporter.item_done(&name(&i.id), "terminated");
            } else {
                reporter.item(&name(&i.id), &i.state.to_string());
            }
        }
        ids.retain(|id| current.iter().any(|i| &i.id == id && i.state != InstanceState::Terminated));
        if ids.is_empty() {
            return Ok(());
        }
        if start.elapsed() >= deadline {
            return Err(ProvisionError::Timeout { what: "instances to terminate".into(), waited: deadline, pending: ids.join(", ") });
        }
        tokio::time::sleep(Duration::from_secs(1)).await;
    }
}
