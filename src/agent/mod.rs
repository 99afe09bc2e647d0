//! The node agent (kubelet): registers its Node, renews its Lease, reports its status.
//!
//! Layout: this file holds the registration and heartbeat loop; [`host`] reads the machine's
//! capacity and identity; [`pods`] runs the pods bound to the node through a [`runtime`]
//! (Docker), fed by a [`reflector`].

pub mod host;
pub mod pods;
pub mod reflector;
pub mod runtime;

use std::collections::BTreeMap;
use std::net::IpAddr;
use std::time::Duration;

use serde_json::{json, Value};

use crate::api::time::now_rfc3339;
use crate::client::{ApiClient, ClientError};

/// Namespace of node leases.
pub const LEASE_NAMESPACE: &str = "kube-node-lease";

/// Who this agent is and how often it reports.
#[derive(Debug, Clone)]
pub struct AgentConfig {
    pub node_name: String,
    pub internal_ip: IpAddr,
    /// `aws:///<zone>/<instance id>`.
    pub provider_id: String,
    pub labels: BTreeMap<String, String>,
    /// How often the lease is renewed.
    pub heartbeat: Duration,
    /// How often the full node status is written even when nothing changed.
    pub status_every: Duration,
}

/// The node object this agent registers.
pub fn node_object(config: &AgentConfig, host: &host::HostInfo) -> Value {
    json!({
        "apiVersion": "v1",
        "kind": "Node",
        "metadata": { "name": config.node_name, "labels": config.labels },
        "spec": { "providerID": config.provider_id },
        "status": status(config, host, "True", "KubeletReady", "agent is posting ready status"),
    })
}

fn status(config: &AgentConfig, host: &host::HostInfo, ready: &str, reason: &str, message: &str) -> Value {
    let now = now_rfc3339();
    let capacity = json!({ "cpu": host.cpus.to_string(), "memory": format!("{}Ki", host.memory_kib), "pods": "110" });
    json!({
        "capacity": capacity,
        "allocatable": capacity,
        "addresses": [
            { "type": "InternalIP", "address": config.internal_ip.to_string() },
            { "type": "Hostname", "address": config.node_name },
        ],
        "conditions": [{
            "type": "Ready", "status": ready, "reason": reason, "message": message,
            "lastHeartbeatTime": now, "lastTransitionTime": now,
        }],
        "nodeInfo": {
            "machineID": host.machine_id,
            "kubeletVersion": concat!("clusterctl-", env!("CARGO_PKG_VERSION")),
            "osImage": host.os_image,
            "architecture": std::env::consts::ARCH,
            "operatingSystem": "linux",
        },
    })
}

/// Registers the node (or takes over its existing object) and writes a Ready status.
async fn report(client: &ApiClient, config: &AgentConfig, host: &host::HostInfo) -> Result<(), ClientError> {
    let path = format!("/api/v1/nodes/{}", config.node_name);
    match client.get_value(&path).await {
        Err(e) if e.is_not_found() => {
            client.create_value("/api/v1/nodes", &node_object(config, host)).await?;
        }
        Err(e) => return Err(e),
        Ok(mut node) => {
            if take_over(&mut node, config) {
                node = client.replace_value(&path, &node).await?;
            }
            let mut new_status = status(config, host, "True", "KubeletReady", "agent is posting ready status");
            // Keep the transition time while the condition does not change.
            if let Some(old) = ready_condition(&node)
                && old.get("status").and_then(Value::as_str) == Some("True")
                && let Some(t) = old.get("lastTransitionTime")
            {
                new_status["conditions"][0]["lastTransitionTime"] = t.clone();
            }
            node["status"] = new_status;
            client.replace_value(&format!("{path}/status"), &node).await?;
        }
    }
    Ok(())
}

/// Makes an existing Node object this machine's: a machine that replaced an earlier one of the
/// same name (a worker slot filled again) writes its own `providerID` and labels, which the
/// object otherwise keeps from the machine that is gone. Returns whether anything changed.
pub fn take_over(node: &mut Value, config: &AgentConfig) -> bool {
    let mut changed = false;
    if node.pointer("/spec/providerID").and_then(Value::as_str) != Some(config.provider_id.as_str()) {
        node["spec"]["providerID"] = json!(config.provider_id);
        changed = true;
    }
    for (key, value) in &config.labels {
        if node.pointer("/metadata/labels").and_then(|l| l.get(key)).and_then(Value::as_str) != Some(value.as_str()) {
            node["metadata"]["labels"][key] = json!(value);
            changed = true;
        }
    }
    changed
}

/// The node's Ready condition, if any.
pub fn ready_condition(node: &Value) -> Option<&Value> {
    node.pointer("/status/conditions")?.as_array()?.iter().find(|c| c.get("type").and_then(Value::as_str) == Some("Ready"))
}

/// The status of the node's Ready condition (`True`, `False`, `Unknown`), if it has one.
pub fn ready_status(node: &Value) -> Option<&str> {
    ready_condition(node)?.get("status")?.as_str()
}

/// Renews (or creates) the node's lease.
async fn renew_lease(client: &ApiClient, config: &AgentConfig) -> Result<(), ClientError> {
    let path = format!("/apis/coordination.k8s.io/v1/namespaces/{LEASE_NAMESPACE}/leases/{}", config.node_name);
    let now = now_rfc3339();
    let duration = (config.heartbeat.as_secs() * 5).max(10);
    match client.get_value(&path).await {
        Err(e) if e.is_not_found() => {
            let lease = json!({
                "apiVersion": "coordination.k8s.io/v1", "kind": "Lease",
                "metadata": { "name": config.node_name, "namespace": LEASE_NAMESPACE },
                "spec": { "holderIdentity": config.node_name, "leaseDurationSeconds": duration, "acquireTime": now, "renewTime": now },
            });
            client.create_value(&format!("/apis/coordination.k8s.io/v1/namespaces/{LEASE_NAMESPACE}/leases"), &lease).await?;
        }
        Err(e) => return Err(e),
        Ok(mut lease) => {
            lease["spec"]["renewTime"] = json!(now);
            lease["spec"]["holderIdentity"] = json!(config.node_name);
            client.replace_value(&path, &lease).await?;
        }
    }
    Ok(())
}

/// Runs the agent until the process ends: report at once, then renew the lease every heartbeat
/// and write the status every `status_every` (and whenever the node is not shown Ready).
pub async fn run(client: ApiClient, config: AgentConfig) {
    tokio::spawn(run_pods(client.clone(), config.node_name.clone(), config.internal_ip));
    let host = host::HostInfo::read();
    let mut last_status = None::<tokio::time::Instant>;
    let mut ticker = tokio::time::interval(config.heartbeat);
    ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        ticker.tick().await;
        if let Err(e) = renew_lease(&client, &config).await {
            tracing::warn!(error = %e, "renewing the node lease");
        }
        let due = last_status.is_none_or(|t| t.elapsed() >= config.status_every);
        let shown_ready = match client.get_value(&format!("/api/v1/nodes/{}", config.node_name)).await {
            Ok(node) => ready_status(&node) == Some("True"),
            Err(_) => false,
        };
        if due || !shown_ready {
            match report(&client, &config, &host).await {
                Ok(()) => last_status = Some(tokio::time::Instant::now()),
                Err(e) => tracing::warn!(error = %e, "reporting node status"),
            }
        }
    }
}

/// Where the agent keeps the last known pods of its node (see [`pods::save_checkpoint`]).
pub const POD_CHECKPOINT: &str = "/var/lib/clusterctl/agent/pods.json";

/// Runs pod sync on the node's Docker, waiting for Docker to answer first.
async fn run_pods(client: ApiClient, node_name: String, node_ip: IpAddr) {
    let docker = loop {
        match runtime::docker::DockerRuntime::connect().await {
            Ok(d) => break d,
            Err(e) => {
                tracing::warn!(error = %e, "connecting to Docker for pods; retrying in 1 s");
                tokio::time::sleep(Duration::from_secs(1)).await;
            }
        }
    };
    pods::run(client, std::sync::Arc::new(docker), node_name, node_ip, Some(POD_CHECKPOINT.into())).await;
}

#[cfg(test)]
mod tests {
    use super::*;

    fn config(provider_id: &str) -> AgentConfig {
        AgentConfig {
            node_name: "c-default-1".into(),
            internal_ip: "10.0.0.5".parse().unwrap(),
            provider_id: provider_id.into(),
            labels: [("tier".to_string(), "web".to_string())].into(),
            heartbeat: Duration::from_secs(2),
            status_every: Duration::from_secs(10),
        }
    }

    #[test]
    fn a_replacement_machine_takes_over_the_node_object_with_its_own_provider_id() {
        let mut node = json!({ "metadata": { "name": "c-default-1", "labels": { "tier": "web", "other": "kept" } }, "spec": { "providerID": "aws:///us-east-1a/i-old" } });
        assert!(take_over(&mut node, &config("aws:///us-east-1b/i-new")));
        assert_eq!(node["spec"]["providerID"], "aws:///us-east-1b/i-new");
        assert_eq!(node["metadata"]["labels"]["other"], "kept", "labels set by others stay");
        assert!(!take_over(&mut node, &config("aws:///us-east-1b/i-new")), "the same machine again changes nothing");
    }

    #[test]
    fn missing_labels_and_spec_are_filled_in() {
        let mut node = json!({ "metadata": { "name": "c-default-1" } });
        assert!(take_over(&mut node, &config("aws:///us-east-1a/i-1")));
        assert_eq!(node["metadata"]["labels"]["tier"], "web");
        assert_eq!(node["spec"]["providerID"], "aws:///us-east-1a/i-1");
    }
}
