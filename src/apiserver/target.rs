//! Request paths, parsed against the resource registry:
//!
//! ```text
//! /api/v1/{plural}[/{name}[/status]]                          cluster-scoped, or all namespaces
//! /api/v1/namespaces/{ns}/{plural}[/{name}[/status]]          namespaced
//! /apis/{group}/{version}/...                                 the same for other groups
//! /apis/apps/v1/namespaces/{ns}/deployments/{name}/scale      the scale subresource
//! ```

use super::error::ApiError;
use super::objects::{valid_name, valid_namespace};
use crate::api::resource::ResourceType;

/// What a path names.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Target {
    pub resource: &'static ResourceType,
    pub namespace: Option<String>,
    pub name: Option<String>,
    /// `status`, or `scale` for deployments.
    pub subresource: Option<String>,
}

fn find(group: &str, version: &str, plural: &str) -> Result<&'static ResourceType, ApiError> {
    ResourceType::find(group, version, plural).ok_or_else(ApiError::no_route)
}

impl Target {
    /// Parses a request path; unknown paths are 404, malformed names 400.
    pub fn parse(path: &str) -> Result<Target, ApiError> {
        let path = path.strip_suffix('/').unwrap_or(path);
        let segments: Vec<&str> = path.split('/').skip(1).collect();
        if segments.iter().any(|s| s.is_empty()) {
            return Err(ApiError::no_route());
        }
        let (group, version, rest) = match segments.as_slice() {
            ["api", version, rest @ ..] => ("", *version, rest),
            ["apis", group, version, rest @ ..] => (*group, *version, rest),
            _ => return Err(ApiError::no_route()),
        };
        let namespaced_plural = |p: &str| ResourceType::find(group, version, p).is_some_and(|r| r.namespaced);
        let (resource, namespace, name, sub) = match rest {
            ["namespaces", ns, plural, tail @ ..] if namespaced_plural(plural) => {
                let r = find(group, version, plural)?;
                match tail {
                    [] => (r, Some(*ns), None, None),
                    [name] => (r, Some(*ns), Some(*name), None),
                    [name, sub] => (r, Some(*ns), Some(*name), Some(*sub)),
                    _ => return Err(ApiError::no_route()),
                }
            }
            [plural] => (find(group, version, plural)?, None, None, None),
            [plural, name] => (find(group, version, plural)?, None, Some(*name), None),
            [plural, name, sub] => (find(group, version, plural)?, None, Some(*name), Some(*sub)),
            _ => return Err(ApiError::no_route()),
        };
        // A namespaced object is only reachable inside its namespace.
        if resource.namespaced && namespace.is_none() && name.is_some() {
            return Err(ApiError::no_route());
        }
        if sub.is_some_and(|s| s != "status" && !(s == "scale" && super::discovery::has_scale(resource)) && !(s == "eviction" && *resource == crate::api::resource::PODS)) {
            return Err(ApiError::no_route());
        }
        if let Some(ns) = namespace.filter(|ns| !valid_namespace(ns)) {
            return Err(ApiError::bad_request(format!("{ns:?} is not a valid namespace name")));
        }
        if let Some(n) = name.filter(|n| !valid_name(n)) {
            return Err(ApiError::bad_request(format!("{n:?} is not a valid name")));
        }
        Ok(Target {
            resource,
            namespace: namespace.map(String::from),
            name: name.map(String::from),
            subresource: sub.map(String::from),
        })
    }

    /// The store key of the named object.
    pub fn key(&self, name: &str) -> String {
        self.resource.store_key(self.namespace.as_deref(), name)
    }

    /// The store prefix of the collection (one namespace, or all of them).
    pub fn prefix(&self) -> String {
        match (&self.namespace, self.resource.namespaced) {
            (Some(ns), true) => self.resource.store_prefix(Some(ns)),
            (None, true) => self.resource.store_prefix_all(),
            _ => self.resource.store_prefix(None),
        }
    }
}

/// A boolean query parameter as Kubernetes reads one (Go's `strconv.ParseBool`): `1`, `t`, `T`,
/// `true`, `TRUE`, `True` and their `0`/`f`/`false` counterparts; anything else is not a boolean.
/// (The official Python client sends `watch=True`.)
pub fn query_bool(value: &str) -> Option<bool> {
    match value {
        "1" | "t" | "T" | "true" | "TRUE" | "True" => Some(true),
        "0" | "f" | "F" | "false" | "FALSE" | "False" => Some(false),
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::api::resource::{DEPLOYMENTS, LEASES, NAMESPACES, NODES, PODS};

    #[test]
    fn query_booleans_are_read_as_go_reads_them() {
        for yes in ["1", "t", "T", "true", "TRUE", "True"] {
            assert_eq!(query_bool(yes), Some(true), "{yes}");
        }
        for no in ["0", "f", "F", "false", "FALSE", "False"] {
            assert_eq!(query_bool(no), Some(false), "{no}");
        }
        assert_eq!(query_bool("yes"), None);
        assert_eq!(query_bool(""), None);
    }

    fn t(path: &str) -> Target {
        Target::parse(path).unwrap_or_else(|e| panic!("{path}: {:?}", e.0.message))
    }

    #[test]
    fn parses_core_and_group_paths() {
        assert_eq!(t("/api/v1/nodes"), Target { resource: &NODES, namespace: None, name: None, subresource: None });
        let w1 = t("/api/v1/nodes/w1/status");
        assert_eq!((w1.name.as_deref(), w1.subresource.as_deref()), (Some("w1"), Some("status")));
        let p = t("/api/v1/namespaces/default/pods/web-1");
        assert_eq!((p.resource, p.namespace.as_deref(), p.name.as_deref()), (&PODS, Some("default"), Some("web-1")));
        assert_eq!(t("/api/v1/pods").namespace, None);
        let l = t("/apis/coordination.k8s.io/v1/namespaces/kube-node-lease/leases/w1");
        assert_eq!((l.resource, l.name.as_deref()), (&LEASES, Some("w1")));
        assert_eq!(t("/apis/apps/v1/deployments").resource, &DEPLOYMENTS);
    }

    #[test]
    fn namespaces_themselves_are_cluster_scoped_objects() {
        let ns = t("/api/v1/namespaces/default");
        assert_eq!((ns.resource, ns.name.as_deref(), ns.namespace), (&NAMESPACES, Some("default"), None));
        assert_eq!(t("/api/v1/namespaces/default/status").subresource.as_deref(), Some("status"));
    }

    #[test]
    fn refuses_unknown_and_malformed_paths() {
        for path in ["/", "/api", "/api/v2/nodes", "/api/v1/widgets", "/api/v1/pods/p1", "/api/v1/nodes/w1/proxy", "/apis/apps/v1/namespaces/x/nodes", "/api/v1//nodes"] {
            let e = Target::parse(path).unwrap_err();
            assert_eq!(e.0.code, 404, "{path}");
        }
        assert_eq!(Target::parse("/api/v1/nodes/W1").unwrap_err().0.code, 400);
        assert_eq!(Target::parse("/api/v1/namespaces/default/pods/p1/scale").unwrap_err().0.code, 404);
        assert_eq!(t("/apis/apps/v1/namespaces/default/deployments/web/scale").subresource.as_deref(), Some("scale"));
    }

    #[test]
    fn keys_and_prefixes() {
        assert_eq!(t("/api/v1/namespaces/default/pods").prefix(), "/registry/core/pods/default/");
        assert_eq!(t("/api/v1/pods").prefix(), "/registry/core/pods/");
        assert_eq!(t("/api/v1/nodes").prefix(), "/registry/core/nodes/_cluster/");
        assert_eq!(t("/api/v1/nodes").key("w1"), "/registry/core/nodes/_cluster/w1");
    }
}
