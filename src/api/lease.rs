//! `Lease` (coordination.k8s.io/v1): a node's heartbeat, renewed by its agent every few seconds in the
//! `kube-node-lease` namespace.

use serde::{Deserialize, Serialize};

use super::meta::{ObjectMeta, UnknownFields};
use super::resource::{LEASES, Resource, ResourceType};
use super::time::MicroTime;

/// The namespace that holds one lease per node, named after the node.
pub const NODE_LEASE_NAMESPACE: &str = "kube-node-lease";

/// A lease held by one identity and renewed while it lives.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Lease {
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub api_version: String,
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub kind: String,
    #[serde(default)]
    pub metadata: ObjectMeta,
    #[serde(default)]
    pub spec: LeaseSpec,
    #[serde(flatten)]
    pub extra: UnknownFields,
}

impl Resource for Lease {
    const TYPE: ResourceType = LEASES;
}

/// Who holds the lease and when it was last renewed.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct LeaseSpec {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub holder_identity: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub lease_duration_seconds: Option<i32>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub acquire_time: Option<MicroTime>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub renew_time: Option<MicroTime>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub lease_transitions: Option<i32>,
    #[serde(flatten)]
    pub extra: UnknownFields,
}

impl Lease {
    /// A node's lease, acquired and renewed now.
    pub fn for_node(node_name: &str, duration_seconds: i32) -> Self {
        let now = MicroTime::now();
        Lease {
            api_version: LEASES.api_version(),
            kind: LEASES.kind.into(),
            metadata: ObjectMeta::namespaced(NODE_LEASE_NAMESPACE, node_name),
            spec: LeaseSpec {
                holder_identity: Some(node_name.into()),
                lease_duration_seconds: Some(duration_seconds),
                acquire_time: Some(now),
                renew_time: Some(now),
                lease_transitions: None,
                ..Default::default()
            },
            ..Default::default()
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn writes_renew_time_to_the_microsecond() {
        let mut lease = Lease::for_node("w1", 40);
        lease.spec.renew_time = Some(MicroTime::parse("2026-01-01T00:00:00.000042Z").unwrap());
        let v = serde_json::to_value(&lease).unwrap();
        assert_eq!(v["spec"]["renewTime"], "2026-01-01T00:00:00.000042Z");
        assert_eq!(v["metadata"]["namespace"], "kube-node-lease");
        assert_eq!(v["apiVersion"], "coordination.k8s.io/v1");
    }
}
