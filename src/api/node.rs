//! `Node` (v1): a machine that runs pods, registered and kept current by its agent.

use std::collections::BTreeMap;

use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

use super::meta::{ObjectMeta, UnknownFields};
use super::quantity::Quantity;
use super::resource::{NODES, Resource, ResourceType};
use super::time::Time;

/// A machine of the cluster.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct Node {
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub api_version: String,
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub kind: String,
    #[serde(default)]
    pub metadata: ObjectMeta,
    #[serde(default)]
    pub spec: NodeSpec,
    #[serde(default)]
    pub status: NodeStatus,
    #[serde(flatten)]
    #[schemars(skip)]
    pub extra: UnknownFields,
}

impl Resource for Node {
    const TYPE: ResourceType = NODES;
}

/// What the cluster wants of a node.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct NodeSpec {
    /// No new pods are scheduled here (cordoned).
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub unschedulable: bool,
    /// The cloud's id of the machine, e.g. `aws:///us-east-1a/i-0123`.
    #[serde(default, rename = "providerID", skip_serializing_if = "Option::is_none")]
    pub provider_id: Option<String>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schemars(extend("x-kubernetes-list-type" = "atomic"))]
    pub taints: Vec<Taint>,
    /// The node's range of pod addresses, given by the node IPAM controller; fixed once given.
    #[serde(default, rename = "podCIDR", skip_serializing_if = "Option::is_none")]
    pub pod_cidr: Option<String>,
    /// The same, as a list (one entry: the cluster is IPv4 only).
    #[serde(default, rename = "podCIDRs", skip_serializing_if = "Vec::is_empty")]
    #[schemars(extend("x-kubernetes-list-type" = "set", "x-kubernetes-patch-strategy" = "merge"))]
    pub pod_cidrs: Vec<String>,
    #[serde(flatten)]
    #[schemars(skip)]
    pub extra: UnknownFields,
}

/// The label of a control-plane node, and the key of the `NoSchedule` taint it is registered with.
pub const CONTROL_PLANE: &str = "node-role.kubernetes.io/control-plane";
/// The `NoExecute` taint Kubernetes puts on a node that stopped reporting (`Ready=Unknown`).
pub const UNREACHABLE: &str = "node.kubernetes.io/unreachable";
/// The same when the node itself reports `Ready=False`.
pub const NOT_READY: &str = "node.kubernetes.io/not-ready";

/// Keeps pods that do not tolerate it away from a node.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct Taint {
    pub key: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub value: Option<String>,
    /// `NoSchedule`, `PreferNoSchedule` or `NoExecute`.
    #[schemars(extend("enum" = ["NoExecute", "NoSchedule", "PreferNoSchedule"]))]
    pub effect: String,
    #[serde(flatten)]
    #[schemars(skip)]
    pub extra: UnknownFields,
}

/// What the node's agent observes.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct NodeStatus {
    /// Total resources, e.g. `cpu: "2"`, `memory: "2048Mi"`, `pods: "110"`.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    #[schemars(with = "BTreeMap<String, Quantity>")]
    pub capacity: BTreeMap<String, String>,
    /// What is left for pods.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    #[schemars(with = "BTreeMap<String, Quantity>")]
    pub allocatable: BTreeMap<String, String>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schemars(extend("x-kubernetes-patch-merge-key" = "type", "x-kubernetes-patch-strategy" = "merge", "x-kubernetes-list-type" = "map", "x-kubernetes-list-map-keys" = ["type"]))]
    pub addresses: Vec<NodeAddress>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schemars(extend("x-kubernetes-patch-merge-key" = "type", "x-kubernetes-patch-strategy" = "merge", "x-kubernetes-list-type" = "map", "x-kubernetes-list-map-keys" = ["type"]))]
    pub conditions: Vec<NodeCondition>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub node_info: Option<NodeSystemInfo>,
    /// Where the node's agent serves (the API server proxies pod logs there).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub daemon_endpoints: Option<NodeDaemonEndpoints>,
    #[serde(flatten)]
    #[schemars(skip)]
    pub extra: UnknownFields,
}

/// The ports of the node's daemons.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct NodeDaemonEndpoints {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub kubelet_endpoint: Option<DaemonEndpoint>,
    #[serde(flatten)]
    #[schemars(skip)]
    pub extra: UnknownFields,
}

/// One daemon's port.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
pub struct DaemonEndpoint {
    #[serde(rename = "Port")]
    pub port: i32,
    #[serde(flatten)]
    #[schemars(skip)]
    pub extra: UnknownFields,
}

/// One address of a node.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
pub struct NodeAddress {
    /// `InternalIP`, `ExternalIP` or `Hostname`.
    #[serde(rename = "type")]
    pub address_type: String,
    pub address: String,
    #[serde(flatten)]
    #[schemars(skip)]
    pub extra: UnknownFields,
}

/// One observed condition of a node, e.g. `Ready`.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct NodeCondition {
    #[serde(rename = "type")]
    pub condition_type: String,
    /// `True`, `False` or `Unknown`.
    pub status: String,
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub reason: String,
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub message: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_heartbeat_time: Option<Time>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_transition_time: Option<Time>,
    #[serde(flatten)]
    #[schemars(skip)]
    pub extra: UnknownFields,
}

/// Facts about the machine and its software.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct NodeSystemInfo {
    #[serde(default, rename = "machineID")]
    pub machine_id: String,
    #[serde(default, rename = "systemUUID")]
    pub system_uuid: String,
    #[serde(default, rename = "bootID")]
    pub boot_id: String,
    #[serde(default)]
    pub kernel_version: String,
    #[serde(default)]
    pub os_image: String,
    #[serde(default)]
    pub container_runtime_version: String,
    #[serde(default)]
    pub kubelet_version: String,
    #[serde(default)]
    pub kube_proxy_version: String,
    #[serde(default)]
    pub operating_system: String,
    #[serde(default)]
    pub architecture: String,
    #[serde(flatten)]
    #[schemars(skip)]
    pub extra: UnknownFields,
}

impl Node {
    /// The node's `InternalIP`, and the port its agent serves on (kubelet's 10250 when the
    /// status does not say).
    pub fn agent_endpoint(&self) -> Option<(String, u16)> {
        let ip = self.status.addresses.iter().find(|a| a.address_type == "InternalIP")?.address.clone();
        let port = self.status.daemon_endpoints.as_ref().and_then(|d| d.kubelet_endpoint.as_ref()).and_then(|e| u16::try_from(e.port).ok()).unwrap_or(10250);
        Some((ip, port))
    }

    /// A node object with the given name and nothing else.
    pub fn new(name: impl Into<String>) -> Self {
        Node {
            api_version: NODES.api_version(),
            kind: NODES.kind.into(),
            metadata: ObjectMeta::named(name),
            ..Default::default()
        }
    }

    /// The `Ready` condition, if the agent has written one.
    pub fn ready_condition(&self) -> Option<&NodeCondition> {
        self.status.conditions.iter().find(|c| c.condition_type == "Ready")
    }

    /// Whether the node is shown Ready.
    pub fn is_ready(&self) -> bool {
        self.ready_condition().is_some_and(|c| c.status == "True")
    }

    /// The first address of the given type (`InternalIP`, ...).
    pub fn address(&self, address_type: &str) -> Option<&str> {
        self.status.addresses.iter().find(|a| a.address_type == address_type).map(|a| a.address.as_str())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_a_node_written_by_an_agent() {
        let node: Node = serde_json::from_value(serde_json::json!({
            "apiVersion": "v1", "kind": "Node",
            "metadata": {"name": "w1", "labels": {"pool": "workers"}},
            "spec": {"providerID": "aws:///us-east-1a/i-1"},
            "status": {
                "capacity": {"cpu": "2", "memory": "2048Mi", "pods": "110"},
                "addresses": [{"type": "InternalIP", "address": "10.0.1.5"}],
                "conditions": [{"type": "Ready", "status": "True", "reason": "KubeletReady",
                                "lastHeartbeatTime": "2026-01-01T00:00:00Z", "lastTransitionTime": "2026-01-01T00:00:00Z"}],
                "nodeInfo": {"machineID": "abc", "kubeletVersion": "clusterctl-0.1.0", "osImage": "Debian", "architecture": "x86_64"}
            }
        }))
        .unwrap();
        assert!(node.is_ready());
        assert_eq!(node.address("InternalIP"), Some("10.0.1.5"));
        assert_eq!(node.spec.provider_id.as_deref(), Some("aws:///us-east-1a/i-1"));
        let back = serde_json::to_value(&node).unwrap();
        assert_eq!(back["spec"], serde_json::json!({"providerID": "aws:///us-east-1a/i-1"}));
        assert_eq!(back["status"]["nodeInfo"]["machineID"], "abc");
    }
}
