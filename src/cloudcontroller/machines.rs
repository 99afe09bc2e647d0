//! The machine controller: keeps every worker pool at the size its `MachinePool` object asks for
//! (and an HA control plane at its three masters),
//! and replaces machines that are unhealthy.
//!
//! A machine is unhealthy when the cloud says so: its instance fails EC2's status checks (a machine
//! that died outside the API) or is stopped; or when, by the controller's own records, no node
//! joined for it within [`JOIN_TIMEOUT`]. Its node's Ready condition, which the node writes itself,
//! counts only when the spec's `[health].replace_not_ready_after_seconds` says so (not by default:
//! a forged or partitioned Node must not get a healthy machine terminated). Each pass, per pool:
//! - fewer machines than desired (terminated ones are gone from the count): launch the missing ones;
//! - else, one unhealthy machine is replaced: a new one launched and bootstrapped over SSH (the same
//!   converge and bootstrap code as `clusterctl create`), and only when it is Ready the old one is
//!   terminated and its Node deleted. Never more than one replacement at a time per pool, none
//!   until two passes running see the same unhealthy machines ([`settled`]: machines that die
//!   together are seen failing seconds apart), and none while more than `max_unhealthy_percent` of
//!   the pool is unhealthy (a network split must not replace the cluster): the pool's
//!   `ReplacementBlocked` condition says why.
//!
//! On an HA control plane the masters are kept at their count the same way, one at a time: an
//! unhealthy master's machine is terminated first (its etcd member cannot be doubled), then a new
//! one is launched in the free slot and bootstrapped from this master, its etcd member swapped in
//! only while the others keep a quorum ([`bootstrap::add_master`]). The master running the
//! controller never replaces itself.
//!
//! Machines are never removed for being too many: `clusterctl scale` drains and removes machines itself.
//!
//! A pass runs every 5 s, and at once when a pool's desired size changes ([`wake_on_resize`]: the
//! `scale` that writes it need not wait for the next pass).

use std::collections::{BTreeMap, BTreeSet};
use std::time::{Duration, Instant};

use crate::api::machinepool::{MachinePool, MachinePoolStatus};
use crate::api::node::NodeCondition;
use crate::api::resource::{MACHINE_POOLS, NODES};
use crate::api::time::Time;
use crate::api::Node;
use crate::bootstrap::{self, BootstrapOptions, Join};
use crate::bootstrap::hostkeys::KnownHosts;
use crate::api::event::{NORMAL, WARNING};
use crate::client::ApiClient;
use crate::runtime::events::Recorder;
use crate::cloud::{owned_by, Cloud, Instance, InstanceState, POOL_TAG, ROLE_TAG};
use crate::provision::{self, ConvergeOptions};
use crate::report::LogReport;
use crate::spec::{ClusterSpec, Role};

use super::services::instance_id;

/// How long a new machine may take to boot and join.
pub const JOIN_TIMEOUT: Duration = Duration::from_secs(240);

/// How long a stopped machine is given to start again.
pub const STOPPED_TIMEOUT: Duration = Duration::from_secs(60);

/// What the controller makes of one machine.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Health {
    Healthy,
    /// Booting or joining, not yet judged.
    Starting,
    /// Its node is not Ready, which alone does not get the machine replaced.
    NotReady,
    /// Why it is unhealthy.
    Unhealthy(String),
}

/// One machine of a pool as the controller sees it.
#[derive(Debug, Clone)]
pub struct Machine {
    pub instance: Instance,
    /// Its node's name, when it has one.
    pub node: Option<String>,
    pub health: Health,
}

/// What to do for one pool.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Action {
    Nothing,
    /// Launch this many machines.
    Launch(u32),
    /// Replace the machine (instance id) for the reason given.
    Replace { instance: String, reason: String },
    /// Unhealthy machines are left alone; the message says why.
    Blocked(String),
}

/// Judges a pool's machines (`instances` not terminated) from their status checks and, when
/// `not_ready_timeout` is given, from how long their nodes have not been Ready. `first_seen` is
/// when the controller first saw each instance, `now` the same clock's time.
pub fn assess(instances: &[Instance], nodes: &[Node], impaired: &BTreeSet<String>, first_seen: &BTreeMap<String, Instant>, now: Instant, not_ready_timeout: Option<Duration>) -> Vec<Machine> {
    instances
        .iter()
        .map(|i| {
            let node = nodes.iter().find(|n| instance_id(n).as_deref() == Some(i.id.as_str()));
            let seen = first_seen.get(&i.id).map(|t| now.saturating_duration_since(*t)).unwrap_or_default();
            let health = if impaired.contains(&i.id) {
                Health::Unhealthy("the machine failed its status checks".into())
            } else if i.state == InstanceState::Stopped && seen >= STOPPED_TIMEOUT {
                Health::Unhealthy("the machine is stopped".into())
            } else if let Some(n) = node {
                match n.status.conditions.iter().find(|c| c.condition_type == "Ready") {
                    Some(c) if c.status == "True" => Health::Healthy,
                    Some(c) => {
                        let since = c.last_transition_time.map(|t| t.age()).unwrap_or(seen);
                        match not_ready_timeout {
                            Some(timeout) if since >= timeout && seen >= timeout => Health::Unhealthy(format!("node {} not Ready for {}s", n.metadata.name, since.as_secs())),
                            _ => Health::NotReady,
                        }
                    }
                    None if seen >= JOIN_TIMEOUT => Health::Unhealthy(format!("node {} never reported Ready", n.metadata.name)),
                    None => Health::Starting,
                }
            } else if seen >= JOIN_TIMEOUT {
                Health::Unhealthy(format!("no node joined in {}s", seen.as_secs()))
            } else {
                Health::Starting
            };
            Machine { instance: i.clone(), node: node.map(|n| n.metadata.name.clone()), health }
        })
        .collect()
}

/// Decides what to do for a pool that should have `desired` machines.
pub fn decide(desired: u32, machines: &[Machine], max_unhealthy_percent: u32) -> Action {
    let live = machines.len() as u32;
    if live < desired {
        return Action::Launch(desired - live);
    }
    let unhealthy: Vec<&Machine> = machines.iter().filter(|m| matches!(m.health, Health::Unhealthy(_))).collect();
    let Some(first) = unhealthy.first() else { return Action::Nothing };
    let share = unhealthy.len() as u32 * 100 / live.max(1);
    if share > max_unhealthy_percent {
        let which = unhealthy
            .iter()
            .map(|m| format!("{} ({})", m.node.clone().unwrap_or_else(|| m.instance.id.clone()), if let Health::Unhealthy(r) = &m.health { r.as_str() } else { "" }))
            .collect::<Vec<_>>()
            .join(", ");
        return Action::Blocked(format!(
            "{} of {live} machines are unhealthy ({share}%, more than the {max_unhealthy_percent}% limit): not replacing any, as this looks like a network split or an outage rather than failed machines: {which}",
            unhealthy.len()
        ));
    }
    let reason = if let Health::Unhealthy(r) = &first.health { r.clone() } else { String::new() };
    Action::Replace { instance: first.instance.id.clone(), reason }
}

/// A replacement waits until the pool's unhealthy machines are the same two passes running.
/// Machines that die together are seldom seen failing in the same pass (their status checks fail
/// seconds apart), and replacing the first one seen would start the very replacement that the
/// unhealthy-share limit is there to prevent; a machine that is really dead is replaced one pass
/// (5 s) later.
pub fn settled(action: Action, unhealthy_now: &BTreeSet<String>, unhealthy_before: Option<&BTreeSet<String>>) -> Action {
    match action {
        Action::Replace { .. } if unhealthy_before != Some(unhealthy_now) => Action::Nothing,
        other => other,
    }
}

/// What the controller needs besides the API client.
pub struct Context {
    pub cloud: std::sync::Arc<dyn Cloud>,
    pub spec_path: std::path::PathBuf,
    pub ssh_key: std::path::PathBuf,
    pub known_hosts: KnownHosts,
    pub join: Join,
    /// This master's data folder (its PKI and the images loaded into the cluster), and its instance.
    pub data_dir: std::path::PathBuf,
    pub own_instance: String,
    /// This master's cloud settings, given to a master it bootstraps.
    pub cloud_settings: crate::nodeconfig::CloudSettings,
}

/// The controller's memory between passes.
#[derive(Default)]
pub struct State {
    first_seen: BTreeMap<String, Instant>,
    /// The unhealthy instances of each worker pool in the last pass.
    unhealthy: BTreeMap<String, BTreeSet<String>>,
}

fn condition(kind: &str, status: bool, reason: &str, message: &str) -> NodeCondition {
    NodeCondition {
        condition_type: kind.into(),
        status: if status { "True" } else { "False" }.into(),
        reason: reason.into(),
        message: message.into(),
        last_heartbeat_time: None,
        last_transition_time: Some(Time::now()),
        ..Default::default()
    }
}

/// One pass over every worker pool.
pub async fn pass(ctx: &Context, client: &ApiClient, events: &Recorder<ApiClient>, state: &mut State) -> anyhow::Result<()> {
    let spec = ClusterSpec::load(&ctx.spec_path)?;
    let not_ready_timeout = spec.health.replace_not_ready_after_seconds.map(|s| Duration::from_secs(u64::from(s)));
    let cluster = spec.name.as_str().to_string();
    let all: Vec<Instance> = ctx.cloud.instances(&owned_by(&cluster)).await?.into_iter().filter(|i| !i.state.is_gone()).collect();
    let now = Instant::now();
    for i in &all {
        state.first_seen.entry(i.id.clone()).or_insert(now);
    }
    state.first_seen.retain(|id, _| all.iter().any(|i| &i.id == id));
    let running: Vec<String> = all.iter().filter(|i| i.state == InstanceState::Running).map(|i| i.id.clone()).collect();
    let impaired: BTreeSet<String> =
        if running.is_empty() { BTreeSet::new() } else { ctx.cloud.instance_statuses(&running).await?.into_iter().filter(|s| s.impaired()).map(|s| s.instance_id).collect() };
    let nodes: Vec<Node> = client.list(&NODES, None, &Default::default()).await?.items;
    let role = |i: &Instance, r: &str| i.tags.get(ROLE_TAG).map(String::as_str) == Some(r);
    let masters: Vec<Instance> = all.iter().filter(|i| role(i, "master")).cloned().collect();
    if spec.masters.count > 1 {
        let machines = assess(&masters, &nodes, &impaired, &state.first_seen, now, not_ready_timeout);
        match decide(spec.masters.count, &machines, spec.health.max_unhealthy_percent) {
            Action::Nothing => {}
            Action::Blocked(message) => tracing::warn!(pool = "masters", "{message}"),
            Action::Launch(_) => {
                tracing::info!("the control plane has {} of {} masters: launching one", masters.len(), spec.masters.count);
                replace_master(ctx, client, &spec, &all).await?;
                return Ok(());
            }
            Action::Replace { instance, .. } if instance == ctx.own_instance => {}
            Action::Replace { instance, reason } => {
                // A master's etcd member cannot be doubled: the lost machine goes first, then the
                // next pass launches its successor.
                let node = machines.iter().find(|m| m.instance.id == instance).and_then(|m| m.node.clone());
                tracing::info!(instance = %instance, node = ?node, "terminating an unhealthy master to replace it: {reason}");
                ctx.cloud.terminate_instances(std::slice::from_ref(&instance)).await?;
                if let Some(node) = node {
                    let _ = client.delete(&NODES, None, &node).await;
                }
                return Ok(());
            }
        }
    }
    let instances: Vec<Instance> = all.iter().filter(|i| role(i, "worker")).cloned().collect();
    let live_masters = masters.len() as u32;

    for pool in spec.workers.iter() {
        let name = pool.name.as_str();
        let object = match client.get::<MachinePool>(&MACHINE_POOLS, None, name).await {
            Ok(p) => p,
            Err(e) if e.is_not_found() => client.create(&MACHINE_POOLS, None, &MachinePool::new(name, pool.count)).await?,
            Err(e) => return Err(e.into()),
        };
        let mine: Vec<Instance> = instances.iter().filter(|i| i.tags.get(POOL_TAG).map(String::as_str) == Some(name)).cloned().collect();
        let machines = assess(&mine, &nodes, &impaired, &state.first_seen, now, not_ready_timeout);
        let unhealthy: BTreeSet<String> = machines.iter().filter(|m| matches!(m.health, Health::Unhealthy(_))).map(|m| m.instance.id.clone()).collect();
        let decided = decide(object.spec.replicas, &machines, spec.health.max_unhealthy_percent);
        let action = settled(decided.clone(), &unhealthy, state.unhealthy.get(name));
        if action != decided {
            tracing::info!(pool = name, unhealthy = ?unhealthy, "unhealthy machines seen: replacing when the next pass sees the same");
        }
        state.unhealthy.insert(name.to_string(), unhealthy);
        let ready = machines.iter().filter(|m| m.health == Health::Healthy).count() as u32;
        let conditions = match &action {
            Action::Blocked(message) => vec![condition("ReplacementBlocked", true, "TooManyUnhealthy", message)],
            _ => vec![condition("ReplacementBlocked", false, "", "")],
        };
        let blocked_before = object.condition("ReplacementBlocked").is_some_and(|c| c.status == "True");
        let changed = object.status.replicas != mine.len() as u32 || object.status.ready_replicas != ready || blocked_before != matches!(action, Action::Blocked(_));
        if changed || object.status.conditions.is_empty() {
            let mut next = object.clone();
            next.status = MachinePoolStatus { replicas: mine.len() as u32, ready_replicas: ready, conditions, ..Default::default() };
            if let Err(e) = client.replace_status(&MACHINE_POOLS, None, name, &next).await {
                tracing::warn!(error = %e, pool = name, "writing the pool's status");
            }
        }
        match action {
            Action::Nothing => {}
            Action::Blocked(message) => {
                tracing::warn!(pool = name, "{message}");
                if !blocked_before {
                    events.record(&object, WARNING, "ReplacementBlocked", message);
                }
            }
            Action::Launch(n) => {
                tracing::info!(pool = name, "the pool has {} of {} machines: launching {n}", mine.len(), object.spec.replicas);
                events.record(&object, NORMAL, "ScalingUp", format!("Launching {n} machine(s): the pool has {} of {}", mine.len(), object.spec.replicas));
                grow(ctx, client, &spec, &instances, live_masters, name, n).await?;
            }
            Action::Replace { instance, reason } => {
                let node = machines.iter().find(|m| m.instance.id == instance).and_then(|m| m.node.clone());
                tracing::info!(pool = name, instance = %instance, node = ?node, "replacing an unhealthy machine: {reason}");
                let which = node.as_deref().map_or_else(|| instance.clone(), |n| format!("{instance} (node {n})"));
                events.record(&object, WARNING, "MachineUnhealthy", format!("Replacing machine {which}: {reason}"));
                grow(ctx, client, &spec, &instances, live_masters, name, 1).await?;
                ctx.cloud.terminate_instances(std::slice::from_ref(&instance)).await?;
                if let Some(node) = node {
                    match client.delete(&NODES, None, &node).await {
                        Ok(()) => {}
                        Err(e) if e.is_not_found() => {}
                        Err(e) => tracing::warn!(error = %e, node = %node, "deleting the replaced machine's node"),
                    }
                }
                tracing::info!(pool = name, instance = %instance, "replaced");
                events.record(&object, NORMAL, "MachineReplaced", format!("Machine {which} replaced by a new one and terminated"));
            }
        }
    }
    Ok(())
}

/// Launches `n` more machines in a pool (every other pool kept at its current size) through the
/// same converge as `create`, then bootstraps them over SSH and waits until they are Ready.
async fn grow(ctx: &Context, client: &ApiClient, spec: &ClusterSpec, instances: &[Instance], live_masters: u32, pool: &str, n: u32) -> anyhow::Result<()> {
    let mut target = spec.clone();
    // Masters are replaced by their own path, never launched as a side effect of a worker pool.
    target.masters.count = live_masters;
    for p in target.workers.iter_mut() {
        let live = instances.iter().filter(|i| i.tags.get(POOL_TAG).map(String::as_str) == Some(p.name.as_str())).count() as u32;
        p.count = if p.name.as_str() == pool { live + n } else { live };
    }
    let key_text = std::fs::read_to_string(&ctx.ssh_key)?;
    let public = ssh_key::PrivateKey::from_openssh(&key_text)?.public_key().to_openssh()?;
    let report = LogReport::default();
    let converged = provision::converge(ctx.cloud.as_ref(), &target, &ConvergeOptions { set_instance_profiles: false, ..ConvergeOptions::new(public) }, &report).await?;
    let known: BTreeSet<&str> = instances.iter().map(|i| i.id.as_str()).collect();
    let pool_spec = target.pool(pool).ok_or_else(|| anyhow::anyhow!("pool {pool} is not in the spec"))?;
    let new: Vec<bootstrap::Machine> = converged
        .instances
        .iter()
        .filter(|((p, _), i)| p == pool && !known.contains(i.id.as_str()))
        .map(|((_, slot), i)| bootstrap::machine(&target, pool_spec, *slot, i))
        .collect();
    debug_assert!(new.iter().all(|m| m.role == Role::Worker));
    let options = BootstrapOptions::new()?;
    // The images loaded into the cluster, as this master keeps them, go to the new machines too.
    let images: Vec<std::path::PathBuf> = std::fs::read_dir(bootstrap::IMAGES_DIR)
        .map(|d| d.filter_map(|e| e.ok()).map(|e| e.path()).filter(|p| p.extension().is_some_and(|x| x == "tar")).collect())
        .unwrap_or_default();
    bootstrap::add_workers(ctx.cloud.as_ref(), client, &ctx.join, &new, &spec.ssh.user, &ctx.ssh_key, &ctx.known_hosts, &images, &options, &report).await?;
    Ok(())
}

/// Launches one master in the free slot of an HA control plane and bootstraps it from this master
/// (etcd membership, CA, master software; see [`bootstrap::add_master`]).
async fn replace_master(ctx: &Context, client: &ApiClient, spec: &ClusterSpec, all: &[Instance]) -> anyhow::Result<()> {
    let mut target = spec.clone();
    let has = |i: &Instance, tag: &str, value: &str| i.tags.get(tag).map(String::as_str) == Some(value);
    target.masters.count = all.iter().filter(|i| has(i, ROLE_TAG, "master")).count() as u32 + 1;
    for p in target.workers.iter_mut() {
        p.count = all.iter().filter(|i| has(i, ROLE_TAG, "worker") && has(i, POOL_TAG, p.name.as_str())).count() as u32;
    }
    let key_text = std::fs::read_to_string(&ctx.ssh_key)?;
    let public = ssh_key::PrivateKey::from_openssh(&key_text)?.public_key().to_openssh()?;
    let report = LogReport::default();
    let converged = provision::converge(ctx.cloud.as_ref(), &target, &ConvergeOptions { set_instance_profiles: false, ..ConvergeOptions::new(public) }, &report).await?;
    let known: BTreeSet<&str> = all.iter().map(|i| i.id.as_str()).collect();
    let masters: Vec<bootstrap::Machine> = converged
        .instances
        .iter()
        .filter(|((p, _), _)| p == target.masters.name.as_str())
        .map(|((_, slot), i)| bootstrap::machine(&target, &target.masters, *slot, i))
        .collect();
    let new = masters.iter().find(|m| !known.contains(m.instance.id.as_str())).ok_or_else(|| anyhow::anyhow!("converge launched no master"))?;
    tracing::info!(node = %new.name, instance = %new.instance.id, "bootstrapping the new master");
    let replacement = bootstrap::MasterReplacement {
        spec: &target,
        new,
        masters: &masters,
        lb_host: converged.load_balancer.as_ref().map(|l| l.dns_name.clone()),
        api_host: ctx.join.api_host.clone(),
        data_dir: &ctx.data_dir,
        ssh_key: &ctx.ssh_key,
        known: &ctx.known_hosts,
        cloud: ctx.cloud_settings.clone(),
    };
    bootstrap::add_master(ctx.cloud.as_ref(), client, &replacement, &BootstrapOptions::new()?, &report).await?;
    tracing::info!(node = %new.name, "the new master is Ready");
    Ok(())
}

/// How often the machine controller passes without a change.
pub const PERIOD: Duration = Duration::from_secs(5);

/// A trigger that queues `key` whenever a `MachinePool` is new or its spec (its desired size)
/// changed; the controller's own status writes do not count.
pub fn resize_trigger(key: crate::runtime::ObjectKey) -> impl Fn(&MachinePool) -> Vec<crate::runtime::ObjectKey> + Send + Sync + 'static {
    let seen: std::sync::Mutex<BTreeMap<String, crate::api::machinepool::MachinePoolSpec>> = std::sync::Mutex::default();
    move |pool: &MachinePool| {
        let mut seen = seen.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
        if seen.get(&pool.metadata.name) == Some(&pool.spec) {
            return Vec::new();
        }
        seen.insert(pool.metadata.name.clone(), pool.spec.clone());
        tracing::info!(pool = %pool.metadata.name, replicas = pool.spec.replicas, "a pool's desired size changed: passing now");
        vec![key.clone()]
    }
}
