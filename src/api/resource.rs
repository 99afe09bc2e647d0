//! The resource registry: every kind of object the API serves, where its REST path and its store key
//! are, and whether it lives in a namespace.

use std::fmt;

/// One kind of object the API serves, e.g. `v1 nodes` or `apps/v1 deployments`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct ResourceType {
    /// API group; empty for the core group (`/api/v1`).
    pub group: &'static str,
    pub version: &'static str,
    /// The lower-case plural used in paths, e.g. `nodes`.
    pub plural: &'static str,
    /// The `kind` of one object, e.g. `Node`.
    pub kind: &'static str,
    /// Whether objects live in a namespace.
    pub namespaced: bool,
}

const fn core(plural: &'static str, kind: &'static str, namespaced: bool) -> ResourceType {
    ResourceType { group: "", version: "v1", plural, kind, namespaced }
}

pub const NODES: ResourceType = core("nodes", "Node", false);
pub const NAMESPACES: ResourceType = core("namespaces", "Namespace", false);
pub const PODS: ResourceType = core("pods", "Pod", true);
pub const SERVICES: ResourceType = core("services", "Service", true);
pub const ENDPOINTS: ResourceType = core("endpoints", "Endpoints", true);
pub const CONFIG_MAPS: ResourceType = core("configmaps", "ConfigMap", true);
pub const EVENTS: ResourceType = core("events", "Event", true);
pub const SECRETS: ResourceType = core("secrets", "Secret", true);
pub const DEPLOYMENTS: ResourceType =
    ResourceType { group: "apps", version: "v1", plural: "deployments", kind: "Deployment", namespaced: true };
pub const REPLICA_SETS: ResourceType =
    ResourceType { group: "apps", version: "v1", plural: "replicasets", kind: "ReplicaSet", namespaced: true };
pub const LEASES: ResourceType =
    ResourceType { group: "coordination.k8s.io", version: "v1", plural: "leases", kind: "Lease", namespaced: true };
pub const CERTIFICATE_SIGNING_REQUESTS: ResourceType = ResourceType {
    group: "certificates.k8s.io",
    version: "v1",
    plural: "certificatesigningrequests",
    kind: "CertificateSigningRequest",
    namespaced: false,
};

pub const NETWORK_POLICIES: ResourceType =
    ResourceType { group: "networking.k8s.io", version: "v1", plural: "networkpolicies", kind: "NetworkPolicy", namespaced: true };

pub const MACHINE_POOLS: ResourceType =
    ResourceType { group: "clusterctl.io", version: "v1", plural: "machinepools", kind: "MachinePool", namespaced: false };

/// Every resource the API serves.
pub const ALL: &[ResourceType] = &[
    NODES,
    NAMESPACES,
    PODS,
    SERVICES,
    ENDPOINTS,
    CONFIG_MAPS,
    SECRETS,
    EVENTS,
    DEPLOYMENTS,
    REPLICA_SETS,
    LEASES,
    CERTIFICATE_SIGNING_REQUESTS,
    NETWORK_POLICIES,
    MACHINE_POOLS,
];

/// A typed object that knows which resource it is.
pub trait Resource {
    /// The resource this type is an object of.
    const TYPE: ResourceType;
}

impl ResourceType {
    /// Looks a resource up by the parts of its path.
    pub fn find(group: &str, version: &str, plural: &str) -> Option<&'static ResourceType> {
        ALL.iter().find(|r| r.group == group && r.version == version && r.plural == plural)
    }

    /// Looks a resource up by an object's `apiVersion` and `kind`.
    pub fn find_by_kind(api_version: &str, kind: &str) -> Option<&'static ResourceType> {
        let (group, version) = split_api_version(api_version);
        ALL.iter().find(|r| r.group == group && r.version == version && r.kind == kind)
    }

    /// `v1` or `group/version`, as objects write it.
    pub fn api_version(&self) -> String {
        if self.group.is_empty() { self.version.to_string() } else { format!("{}/{}", self.group, self.version) }
    }

    /// The `kind` of a list of these, e.g. `NodeList`.
    pub fn list_kind(&self) -> String {
        format!("{}List", self.kind)
    }

    /// `/api/v1` or `/apis/{group}/{version}`.
    pub fn path_prefix(&self) -> String {
        if self.group.is_empty() {
            format!("/api/{}", self.version)
        } else {
            format!("/apis/{}/{}", self.group, self.version)
        }
    }

    /// The path of the collection, in a namespace or across all of them (or cluster-scoped).
    pub fn collection_path(&self, namespace: Option<&str>) -> String {
        match namespace.filter(|_| self.namespaced) {
            Some(ns) => format!("{}/namespaces/{ns}/{}", self.path_prefix(), self.plural),
            None => format!("{}/{}", self.path_prefix(), self.plural),
        }
    }

    /// The path of one object.
    pub fn object_path(&self, namespace: Option<&str>, name: &str) -> String {
        format!("{}/{name}", self.collection_path(namespace))
    }

    /// The store key of one object: `/registry/{group or core}/{plural}/{namespace or _cluster}/{name}`.
    pub fn store_key(&self, namespace: Option<&str>, name: &str) -> String {
        format!("{}{name}", self.store_prefix(if self.namespaced { namespace } else { None }))
    }

    /// The store prefix of a namespace's objects (or of a cluster-scoped resource's objects).
    pub fn store_prefix(&self, namespace: Option<&str>) -> String {
        let scope = match namespace {
            Some(ns) if self.namespaced => ns,
            _ => "_cluster",
        };
        format!("{}{scope}/", self.store_prefix_all())
    }

    /// The store prefix of every object of this resource, in every namespace.
    pub fn store_prefix_all(&self) -> String {
        let group = if self.group.is_empty() { "core" } else { self.group };
        format!("/registry/{group}/{}/", self.plural)
    }
}

impl fmt::Display for ResourceType {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.group.is_empty() { f.write_str(self.plural) } else { write!(f, "{}.{}", self.plural, self.group) }
    }
}

/// Splits `group/version` (or the core group's bare `v1`).
pub fn split_api_version(api_version: &str) -> (&str, &str) {
    api_version.split_once('/').unwrap_or(("", api_version))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn finds_resources_by_path_and_by_kind() {
        assert_eq!(ResourceType::find("", "v1", "nodes"), Some(&NODES));
        assert_eq!(ResourceType::find("apps", "v1", "deployments"), Some(&DEPLOYMENTS));
        assert_eq!(ResourceType::find("", "v1", "deployments"), None);
        assert_eq!(ResourceType::find_by_kind("coordination.k8s.io/v1", "Lease"), Some(&LEASES));
        assert_eq!(ResourceType::find_by_kind("v1", "Secret"), Some(&SECRETS));
    }

    #[test]
    fn builds_paths_and_keys() {
        assert_eq!(NODES.object_path(None, "w1"), "/api/v1/nodes/w1");
        assert_eq!(NODES.object_path(Some("ignored"), "w1"), "/api/v1/nodes/w1");
        assert_eq!(LEASES.object_path(Some("kube-node-lease"), "w1"), "/apis/coordination.k8s.io/v1/namespaces/kube-node-lease/leases/w1");
        assert_eq!(PODS.collection_path(None), "/api/v1/pods");
        assert_eq!(NODES.store_key(None, "w1"), "/registry/core/nodes/_cluster/w1");
        assert_eq!(DEPLOYMENTS.store_key(Some("default"), "web"), "/registry/apps/deployments/default/web");
        assert_eq!(PODS.store_prefix_all(), "/registry/core/pods/");
        assert_eq!(LEASES.api_version(), "coordination.k8s.io/v1");
        assert_eq!(NODES.list_kind(), "NodeList");
    }
}
