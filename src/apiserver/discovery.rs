//! API discovery in Kubernetes' shapes, built from the resource registry, so that standard clients
//! (kubectl) find what the server serves:
//!
//! ```text
//! /api                      APIVersions      (the core group's versions)
//! /apis                     APIGroupList     (every named group and its one version)
//! /api/v1, /apis/{g}/{v}    APIResourceList  (resources with kind, namespaced, verbs, short names,
//!                                             and their status and scale subresources)
//! ```

use serde_json::{Value, json};

use crate::api::resource::{self, ALL, ResourceType};

/// The verbs every registered resource serves (no `deletecollection`).
const VERBS: &[&str] = &["create", "delete", "get", "list", "patch", "update", "watch"];

/// The short names kubectl accepts for a resource (`kubectl get no`), as Kubernetes defines them.
fn short_names(rt: &ResourceType) -> &'static [&'static str] {
    match rt.plural {
        "nodes" => &["no"],
        "namespaces" => &["ns"],
        "pods" => &["po"],
        "services" => &["svc"],
        "endpoints" => &["ep"],
        "configmaps" => &["cm"],
        "events" => &["ev"],
        "deployments" => &["deploy"],
        "replicasets" => &["rs"],
        "certificatesigningrequests" => &["csr"],
        _ => &[],
    }
}

/// The categories a resource belongs to: `all` (what `kubectl get all` lists) as Kubernetes puts
/// pods, services, deployments and replica sets in it.
fn categories(rt: &ResourceType) -> &'static [&'static str] {
    match rt.plural {
        "pods" | "services" | "deployments" | "replicasets" => &["all"],
        _ => &[],
    }
}

/// Whether a resource has the `scale` subresource (`/apis/apps/v1/namespaces/{ns}/deployments/{name}/scale`).
pub fn has_scale(rt: &ResourceType) -> bool {
    *rt == resource::DEPLOYMENTS
}

/// `GET /api`.
pub fn core_versions() -> Value {
    json!({
        "kind": "APIVersions",
        "versions": ["v1"],
        "serverAddressByClientCIDRs": [],
    })
}

/// The named groups (not the core group), each with its one version, in registry order.
fn groups() -> Vec<(&'static str, &'static str)> {
    let mut out: Vec<(&str, &str)> = Vec::new();
    for rt in ALL.iter().filter(|r| !r.group.is_empty()) {
        if !out.iter().any(|(g, _)| *g == rt.group) {
            out.push((rt.group, rt.version));
        }
    }
    out
}

/// `GET /apis`.
pub fn group_list() -> Value {
    let groups: Vec<Value> = groups()
        .into_iter()
        .chain([(super::events_v1::GROUP, super::events_v1::VERSION)])
        .map(|(group, version)| {
            let gv = json!({ "groupVersion": format!("{group}/{version}"), "version": version });
            json!({ "name": group, "versions": [gv.clone()], "preferredVersion": gv })
        })
        .collect();
    json!({ "kind": "APIGroupList", "apiVersion": "v1", "groups": groups })
}

/// `GET /api/v1` or `GET /apis/{group}/{version}`; `None` for a group version the server does not serve.
pub fn resource_list(group: &str, version: &str) -> Option<Value> {
    let served: Vec<&ResourceType> = ALL.iter().filter(|r| r.group == group && r.version == version).collect();
    if served.is_empty() {
        return None;
    }
    let mut resources = Vec::new();
    for rt in served {
        resources.push(json!({
            "name": rt.plural,
            "singularName": rt.kind.to_lowercase(),
            "namespaced": rt.namespaced,
            "kind": rt.kind,
            "verbs": VERBS,
            "shortNames": short_names(rt),
            "categories": categories(rt),
        }));
        resources.push(json!({
            "name": format!("{}/status", rt.plural),
            "singularName": "",
            "namespaced": rt.namespaced,
            "kind": rt.kind,
            "verbs": ["get", "patch", "update"],
        }));
        if *rt == crate::api::resource::PODS {
            resources.push(json!({
                "name": "pods/log",
                "singularName": "",
                "namespaced": true,
                "kind": "Pod",
                "verbs": ["get"],
            }));
            // kubectl drain evicts (rather than deletes) when discovery lists this, with its group.
            resources.push(json!({
                "name": "pods/eviction",
                "singularName": "",
                "namespaced": true,
                "group": "policy",
                "version": "v1",
                "kind": "Eviction",
                "verbs": ["create"],
            }));
            for (name, kind) in [("pods/attach", "PodAttachOptions"), ("pods/exec", "PodExecOptions"), ("pods/portforward", "PodPortForwardOptions")] {
                resources.push(json!({
                    "name": name,
                    "singularName": "",
                    "namespaced": true,
                    "kind": kind,
                    "verbs": ["create", "get"],
                }));
            }
        }
        if has_scale(rt) {
            resources.push(json!({
                "name": format!("{}/scale", rt.plural),
                "singularName": "",
                "namespaced": rt.namespaced,
                "group": "autoscaling",
                "version": "v1",
                "kind": "Scale",
                "verbs": ["get", "patch", "update"],
            }));
        }
    }
    let group_version = if group.is_empty() { version.to_string() } else { format!("{group}/{version}") };
    Some(json!({ "kind": "APIResourceList", "apiVersion": "v1", "groupVersion": group_version, "resources": resources }))
}

/// The discovery document a path asks for, if it is a discovery path.
pub fn document(path: &str) -> Option<Value> {
    let path = path.strip_suffix('/').unwrap_or(path);
    let segments: Vec<&str> = path.split('/').skip(1).collect();
    match segments.as_slice() {
        ["api"] => Some(core_versions()),
        ["apis"] => Some(group_list()),
        ["api", version] => resource_list("", version),
        ["apis", super::events_v1::GROUP, super::events_v1::VERSION] => Some(super::events_v1::resource_list()),
        ["apis", group, version] => resource_list(group, version),
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn names(list: &Value) -> Vec<&str> {
        list["resources"].as_array().unwrap().iter().map(|r| r["name"].as_str().unwrap()).collect()
    }

    #[test]
    fn the_core_group_lists_v1_only() {
        assert_eq!(document("/api").unwrap(), json!({"kind": "APIVersions", "versions": ["v1"], "serverAddressByClientCIDRs": []}));
    }

    #[test]
    fn the_group_list_names_every_named_group_once_with_its_preferred_version() {
        let list = document("/apis/").unwrap();
        assert_eq!(list["kind"], "APIGroupList");
        let groups: Vec<&str> = list["groups"].as_array().unwrap().iter().map(|g| g["name"].as_str().unwrap()).collect();
        assert_eq!(groups, ["apps", "coordination.k8s.io", "certificates.k8s.io", "networking.k8s.io", "clusterctl.io", "events.k8s.io"]);
        assert_eq!(list["groups"][0]["preferredVersion"], json!({"groupVersion": "apps/v1", "version": "v1"}));
    }

    #[test]
    fn a_resource_list_describes_each_resource_as_kubectl_needs_it() {
        let core = document("/api/v1").unwrap();
        assert_eq!((core["kind"].as_str(), core["groupVersion"].as_str()), (Some("APIResourceList"), Some("v1")));
        let nodes = &core["resources"].as_array().unwrap().iter().find(|r| r["name"] == "nodes").unwrap();
        assert_eq!(nodes["kind"], "Node");
        assert_eq!(nodes["namespaced"], false);
        assert_eq!(nodes["shortNames"], json!(["no"]));
        assert!(nodes["verbs"].as_array().unwrap().contains(&json!("delete")));
        assert!(names(&core).contains(&"pods/status"));
        assert!(!names(&core).contains(&"deployments"));
    }

    #[test]
    fn deployments_have_the_autoscaling_scale_subresource() {
        let apps = document("/apis/apps/v1").unwrap();
        assert_eq!(apps["groupVersion"], "apps/v1");
        assert_eq!(names(&apps), ["deployments", "deployments/status", "deployments/scale", "replicasets", "replicasets/status"]);
        let scale = &apps["resources"][2];
        assert_eq!((scale["group"].as_str(), scale["version"].as_str(), scale["kind"].as_str()), (Some("autoscaling"), Some("v1"), Some("Scale")));
    }

    #[test]
    fn unknown_group_versions_and_resource_paths_are_not_discovery() {
        assert_eq!(document("/apis/apps/v2"), None);
        assert_eq!(document("/api/v2"), None);
        assert_eq!(document("/api/v1/nodes"), None);
        assert_eq!(document("/apis/batch/v1"), None);
    }
}
