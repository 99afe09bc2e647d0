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
    #[serde(default, rename = "clusterIP", skip_serializing_if = "Option::is_none")]
    pub cluster_ip: Option<String>,
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
