//! `Service` and `Endpoints` (v1): a Service selects pods by label and exposes their ports
//! (`NodePort`: on every node); the endpoints controller lists the selected pods' addresses in the
//! Endpoints object of the same name, which the node proxies forward to.

use std::collections::BTreeMap;

use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

use super::meta::{ObjectMeta, UnknownFields};
use super::quantity::IntOrString;
use super::resource::{ENDPOINTS, Resource, ResourceType, SERVICES};

/// The lowest port handed out as a NodePort.
pub const NODE_PORT_MIN: u16 = 30000;
/// The highest port handed out as a NodePort.
pub const NODE_PORT_MAX: u16 = 32767;

/// A stable way to reach a set of pods.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct Service {
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub api_version: String,
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub kind: String,
    #[serde(default)]
    pub metadata: ObjectMeta,
    #[serde(default)]
    pub spec: ServiceSpec,
    #[serde(default)]
    pub status: ServiceStatus,
    #[serde(flatten)]
    #[schemars(skip)]
    pub extra: UnknownFields,
}

impl Resource for Service {
    const TYPE: ResourceType = SERVICES;
}

/// What the Service exposes.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct ServiceSpec {
    /// `ClusterIP` (default), `NodePort` or `LoadBalancer`.
    #[serde(default, rename = "type", skip_serializing_if = "Option::is_none")]
    #[schemars(extend("enum" = ["ClusterIP", "ExternalName", "LoadBalancer", "NodePort"]))]
    pub service_type: Option<String>,
    /// Pods with all these labels are the Service's endpoints; none means endpoints are managed by hand.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub selector: BTreeMap<String, String>,
    #[serde(default)]
    #[schemars(extend("x-kubernetes-patch-merge-key" = "port", "x-kubernetes-patch-strategy" = "merge", "x-kubernetes-list-type" = "map", "x-kubernetes-list-map-keys" = ["port", "protocol"]))]
    pub ports: Vec<ServicePort>,
    /// The Service's address in the service CIDR, given by the API server; `None` for a headless
    /// Service (its name resolves to its pods).
    #[serde(default, rename = "clusterIP", skip_serializing_if = "Option::is_none")]
    pub cluster_ip: Option<String>,
    /// `clusterIP` and, on dual-stack clusters, the other family's (this cluster is IPv4 only).
    #[serde(default, rename = "clusterIPs", skip_serializing_if = "Vec::is_empty")]
    #[schemars(extend("x-kubernetes-list-type" = "atomic"))]
    pub cluster_ips: Vec<String>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schemars(extend("x-kubernetes-list-type" = "atomic"))]
    pub ip_families: Vec<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(extend("enum" = ["PreferDualStack", "RequireDualStack", "SingleStack"]))]
    pub ip_family_policy: Option<String>,
    /// `ClientIP`: a client's connections go to one endpoint (for `sessionAffinityConfig`'s
    /// timeout, 10800 s by default); `None` (default): each connection to any ready endpoint.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(extend("enum" = ["ClientIP", "None"]))]
    pub session_affinity: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub session_affinity_config: Option<SessionAffinityConfig>,
    /// The DNS name an `ExternalName` Service stands for.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub external_name: Option<String>,
    #[serde(flatten)]
    #[schemars(skip)]
    pub extra: UnknownFields,
}

impl ServiceSpec {
    /// The type, `ClusterIP` when unset.
    pub fn service_type(&self) -> &str {
        self.service_type.as_deref().unwrap_or("ClusterIP")
    }

    /// Whether every node listens on the Service's node ports (`NodePort` and `LoadBalancer`).
    pub fn uses_node_ports(&self) -> bool {
        matches!(self.service_type(), "NodePort" | "LoadBalancer")
    }
}

/// How long `ClientIP` affinity lasts.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct SessionAffinityConfig {
    #[serde(default, rename = "clientIP", skip_serializing_if = "Option::is_none")]
    pub client_ip: Option<ClientIpConfig>,
    #[serde(flatten)]
    #[schemars(skip)]
    pub extra: UnknownFields,
}

#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct ClientIpConfig {
    /// Seconds of affinity, 1 to 86400 (default 10800).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub timeout_seconds: Option<i64>,
    #[serde(flatten)]
    #[schemars(skip)]
    pub extra: UnknownFields,
}

impl ServiceSpec {
    /// The `ClientIP` affinity timeout in seconds, if the Service asks for affinity.
    pub fn affinity_seconds(&self) -> Option<u32> {
        if self.session_affinity.as_deref() != Some("ClientIP") {
            return None;
        }
        let given = self.session_affinity_config.as_ref().and_then(|c| c.client_ip.as_ref()).and_then(|c| c.timeout_seconds);
        Some(given.and_then(|s| u32::try_from(s).ok()).filter(|s| (1..=86_400).contains(s)).unwrap_or(10_800))
    }

    /// The cluster IP, when the Service has one (not headless, not yet unallocated).
    pub fn cluster_address(&self) -> Option<std::net::Ipv4Addr> {
        self.cluster_ip.as_deref().and_then(|ip| ip.parse().ok())
    }
}

/// One port of a Service.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct ServicePort {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub name: Option<String>,
    /// `TCP` (default), `UDP` or `SCTP`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(extend("enum" = ["SCTP", "TCP", "UDP"]))]
    pub protocol: Option<String>,
    pub port: i64,
    /// The pods' port: a number or a container port's name; defaults to `port`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub target_port: Option<IntOrString>,
    /// The port on every node (30000-32767), allocated when not given.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub node_port: Option<i64>,
    #[serde(flatten)]
    #[schemars(skip)]
    pub extra: UnknownFields,
}

impl ServicePort {
    /// The protocol, `TCP` when unset.
    pub fn protocol(&self) -> &str {
        self.protocol.as_deref().unwrap_or("TCP")
    }

    /// The target port, `port` when unset.
    pub fn target(&self) -> IntOrString {
        self.target_port.clone().unwrap_or(IntOrString::Int(self.port))
    }
}

/// What the cloud made for the Service.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct ServiceStatus {
    #[serde(default, skip_serializing_if = "LoadBalancerStatus::is_empty")]
    pub load_balancer: LoadBalancerStatus,
    #[serde(flatten)]
    #[schemars(skip)]
    pub extra: UnknownFields,
}

/// The addresses of a Service's load balancer.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct LoadBalancerStatus {
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub ingress: Vec<LoadBalancerIngress>,
    #[serde(flatten)]
    #[schemars(skip)]
    pub extra: UnknownFields,
}

impl LoadBalancerStatus {
    /// No address yet.
    pub fn is_empty(&self) -> bool {
        self.ingress.is_empty() && self.extra.is_empty()
    }
}

/// One address of a load balancer.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct LoadBalancerIngress {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ip: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub hostname: Option<String>,
    #[serde(flatten)]
    #[schemars(skip)]
    pub extra: UnknownFields,
}

/// The addresses behind a Service, named like it.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct Endpoints {
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub api_version: String,
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub kind: String,
    #[serde(default)]
    pub metadata: ObjectMeta,
    #[serde(default)]
    pub subsets: Vec<EndpointSubset>,
    #[serde(flatten)]
    #[schemars(skip)]
    pub extra: UnknownFields,
}

impl Resource for Endpoints {
    const TYPE: ResourceType = ENDPOINTS;
}

/// Addresses that share a set of ports.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct EndpointSubset {
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub addresses: Vec<EndpointAddress>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub not_ready_addresses: Vec<EndpointAddress>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub ports: Vec<EndpointPort>,
    #[serde(flatten)]
    #[schemars(skip)]
    pub extra: UnknownFields,
}

/// One pod's address.
#[derive(Debug, Clone, Default, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct EndpointAddress {
    pub ip: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub node_name: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub target_ref: Option<ObjectReference>,
    #[serde(flatten)]
    #[schemars(skip)]
    pub extra: UnknownFields,
}

/// Names an object (the pod behind an address).
#[derive(Debug, Clone, Default, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct ObjectReference {
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub api_version: String,
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub kind: String,
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub namespace: String,
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub name: String,
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub uid: String,
    /// A part of the object (`spec.containers{app}`), for events about one container.
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub field_path: String,
    #[serde(flatten)]
    #[schemars(skip)]
    pub extra: UnknownFields,
}

/// One resolved port of the addresses.
#[derive(Debug, Clone, Default, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct EndpointPort {
    /// The Service port's name.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub name: Option<String>,
    pub port: i64,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub protocol: Option<String>,
    #[serde(flatten)]
    #[schemars(skip)]
    pub extra: UnknownFields,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_a_node_port_service_and_its_endpoints() {
        let s: Service = serde_json::from_value(serde_json::json!({
            "apiVersion": "v1", "kind": "Service", "metadata": {"name": "web"},
            "spec": {"type": "NodePort", "selector": {"app": "web"},
                     "ports": [{"name": "http", "port": 80, "targetPort": "http", "nodePort": 30080}]},
            "status": {"loadBalancer": {"ingress": [{"hostname": "lb.example"}]}}
        }))
        .unwrap();
        assert!(s.spec.uses_node_ports());
        assert_eq!(s.spec.ports[0].target(), IntOrString::String("http".into()));
        let e: Endpoints = serde_json::from_value(serde_json::json!({
            "metadata": {"name": "web"},
            "subsets": [{"addresses": [{"ip": "172.17.0.2", "nodeName": "w1", "targetRef": {"kind": "Pod", "name": "web-1"}}],
                         "notReadyAddresses": [{"ip": "172.17.0.3"}], "ports": [{"name": "http", "port": 8080, "protocol": "TCP"}]}]
        }))
        .unwrap();
        assert_eq!(e.subsets[0].addresses[0].node_name.as_deref(), Some("w1"));
        assert_eq!(serde_json::to_value(&e).unwrap()["subsets"][0]["notReadyAddresses"][0]["ip"], "172.17.0.3");
    }
}
