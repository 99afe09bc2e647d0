//! The machines of a converged cluster and what each should become (node name, zone, labels),
//! connecting to them with verified host keys, and waiting until their nodes are Ready.

use std::collections::BTreeMap;
use std::net::{IpAddr, SocketAddr};
use std::time::{Duration, Instant};

use super::hostkeys::{self, KnownHosts};
use super::ssh::{self, HostKeyTrust, SharedShell, SshSession, SshTarget};
use super::{BootstrapError, DATA_DIR};
use crate::client::ApiClient;
use crate::cloud::{Cloud, Instance};
use crate::nodeconfig::{ApiEndpoint, NodeConfig, NodeRole};
use crate::provision::Converged;
use crate::report::Reporter;
use crate::spec::{ClusterSpec, Role};

/// A machine of the cluster and what it should become.
#[derive(Debug, Clone)]
pub struct Machine {
    pub name: String,
    pub role: Role,
    pub pool: String,
    pub zone: String,
    pub instance: Instance,
    pub labels: BTreeMap<String, String>,
}

impl Machine {
    /// The node config of this machine, without the role's own section.
    pub(super) fn node_config(&self, cluster: &str, role: NodeRole, api: ApiEndpoint) -> Result<NodeConfig, BootstrapError> {
        Ok(NodeConfig {
            cluster: cluster.into(),
            role,
            node_name: self.name.clone(),
            instance_id: self.instance.id.clone(),
            internal_ip: self.private_ip()?,
            zone: self.zone.clone(),
            pool: self.pool.clone(),
            labels: self.labels.clone(),
            api,
            data_dir: DATA_DIR.into(),
            master: None,
            worker: None,
            network: None,
            registries: Vec::new(),
            cloud_endpoint: None,
        })
    }

    pub(super) fn address(&self) -> Result<IpAddr, BootstrapError> {
        self.instance
            .public_ip
            .or(self.instance.private_ip)
            .map(IpAddr::V4)
            .ok_or_else(|| BootstrapError::Node { node: self.name.clone(), step: "finding its address".into(), message: "the instance has no IP address".into() })
    }

    pub(super) fn private_ip(&self) -> Result<IpAddr, BootstrapError> {
        self.instance.private_ip.map(IpAddr::V4).ok_or_else(|| BootstrapError::Node {
            node: self.name.clone(),
            step: "finding its address".into(),
            message: "the instance has no private IP address".into(),
        })
    }
}

/// The machines of a converged cluster, masters first.
pub fn machines(spec: &ClusterSpec, converged: &Converged) -> Vec<Machine> {
    let mut out = Vec::new();
    for pool in spec.pools() {
        for ((pool_name, slot), instance) in &converged.instances {
            if pool_name == pool.name.as_str() {
                out.push(machine(spec, pool, *slot, instance));
            }
        }
    }
    out
}

/// What the machine in a pool's slot should become: its node name, zone and labels.
pub fn machine(spec: &ClusterSpec, pool: &crate::spec::NodePool, slot: u32, instance: &Instance) -> Machine {
    let name = format!("{}-{}-{slot}", spec.name, pool.name.as_str());
    let zone = spec.subnet_for_slot(slot).zone.as_str().to_string();
    let mut labels = pool.labels.clone();
    labels.insert("clusterctl.io/pool".into(), pool.name.as_str().into());
    labels.insert("topology.kubernetes.io/zone".into(), zone.clone());
    labels.insert("node.kubernetes.io/instance-type".into(), pool.instance_type.clone());
    if pool.role == Role::Master {
        labels.insert(crate::api::node::CONTROL_PLANE.into(), String::new());
    }
    Machine { name, role: pool.role, pool: pool.name.as_str().into(), zone, instance: instance.clone(), labels }
}

/// Connects to a machine with its host key pinned from the console (else trusted on first use and recorded).
pub async fn connect(cloud: &dyn Cloud, machine: &Machine, user: &str, key: &std::path::Path, known: &KnownHosts, deadline: Duration) -> Result<SshSession, BootstrapError> {
    let console = cloud.console_output(&machine.instance.id).await.map_err(|e| BootstrapError::Other(e.to_string()))?.unwrap_or_default();
    let mut pinned = hostkeys::from_console(&console);
    if pinned.is_empty() {
        pinned = known.get(&machine.instance.id);
    }
    let trust = if pinned.is_empty() { HostKeyTrust::FirstUse } else { HostKeyTrust::Pinned(pinned) };
    let first_use = matches!(trust, HostKeyTrust::FirstUse);
    let target = SshTarget { node: machine.name.clone(), address: SocketAddr::new(machine.address()?, 22), user: user.into(), private_key: key.into(), trust };
    let session = ssh::connect_async(target, deadline).await.map_err(|source| BootstrapError::Ssh { node: machine.name.clone(), step: "connecting".into(), source: Box::new(source) })?;
    if first_use {
        known.record(&machine.instance.id, session.host_key()).map_err(|e| BootstrapError::Other(format!("recording the host key of {}: {e}", machine.name)))?;
    }
    Ok(session)
}

pub(super) type Sessions = BTreeMap<String, SharedShell>;

/// Waits until every named node is Ready; returns each node and whether it is.
pub async fn wait_ready(client: &ApiClient, wanted: &[String], deadline: Duration, reporter: &dyn Reporter) -> Result<Vec<(String, bool)>, BootstrapError> {
    let start = Instant::now();
    loop {
        let ready: Vec<(String, bool)> = match client.list_values("/api/v1/nodes").await {
            Ok(items) => wanted
                .iter()
                .map(|w| {
                    let node = items.iter().find(|n| n.pointer("/metadata/name").and_then(|v| v.as_str()) == Some(w.as_str()));
                    let ok = node.and_then(|n| serde_json::from_value::<crate::api::Node>(n.clone()).ok()).is_some_and(|n| n.is_ready());
                    (w.clone(), ok)
                })
                .collect(),
            Err(e) => wanted.iter().map(|w| (w.clone(), false)).inspect(|_| tracing::debug!(error = %e, "listing nodes")).collect(),
        };
        for (n, ok) in &ready {
            if *ok {
                reporter.item_done(n, "Ready");
            } else {
                reporter.item(n, "not ready yet");
            }
        }
        if ready.iter().all(|(_, ok)| *ok) {
            return Ok(ready);
        }
        if start.elapsed() > deadline {
            let pending = ready.iter().filter(|(_, ok)| !ok).map(|(n, _)| n.clone()).collect::<Vec<_>>().join(", ");
            return Err(BootstrapError::Timeout { what: "every node to be Ready".into(), waited: deadline, pending });
        }
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
}

pub(super) async fn wait_until<F, Fut>(deadline: Duration, what: &str, mut probe: F) -> Result<(), BootstrapError>
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = Option<()>>,
{
    let start = Instant::now();
    loop {
        if probe().await.is_some() {
            return Ok(());
        }
        if start.elapsed() > deadline {
            return Err(BootstrapError::Timeout { what: what.into(), waited: deadline, pending: "no answer".into() });
        }
        tokio::time::sleep(Duration::from_millis(300)).await;
    }
}
