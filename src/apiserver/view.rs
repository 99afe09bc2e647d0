//! How a client asks to see objects (the first media type of its `Accept`): whole, as a
//! `meta.k8s.io/v1` Table ([`super::table`]), or, for pods only, their network view.
//!
//! The pod network view ([`crate::api::pod::POD_NETWORK_ACCEPT`]) is ours,
//! not Kubernetes': Pods with only what a node's network policy rules are made of (name,
//! namespace, uid, labels, `spec.nodeName`, the containers' names and ports, `status.phase`,
//! `podIP`, `podIPs`). It is the only way a node reads pods that are not bound to it: its
//! proxy enforces every NetworkPolicy, whose peers may be any pod, but a node's credential must not
//! read other pods' commands, environment or volumes (Kubernetes gives network policy agents such
//! as Calico a credential that reads whole pods; this is least privilege for the same job).

use axum::http::{HeaderMap, header};
use serde_json::{Map, Value};

use super::error::ApiError;
use crate::api::resource::{self, ResourceType};

#[cfg(test)]
use crate::api::pod::POD_NETWORK_ACCEPT;

/// What shape the objects of a response take.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum View {
    Object,
    Table,
    PodNetwork,
}

impl View {
    /// The view the first media type of `Accept` asks for. `as=PodNetwork` on anything but pods
    /// is 406, as Kubernetes answers a conversion it does not serve.
    pub fn of(headers: &HeaderMap, rt: &ResourceType) -> Result<View, ApiError> {
        let accept = headers.get(header::ACCEPT).and_then(|v| v.to_str().ok()).unwrap_or("");
        let first: Vec<&str> = accept.split(',').next().unwrap_or("").split(';').map(str::trim).collect();
        let asks = |wanted: &[&str]| wanted.iter().all(|w| first.contains(w));
        if asks(&["as=Table", "g=meta.k8s.io", "v=v1"]) {
            return Ok(View::Table);
        }
        if asks(&["as=PodNetwork", "g=clusterctl.io", "v=v1"]) {
            if *rt != resource::PODS {
                return Err(ApiError::not_acceptable(format!("only pods have the PodNetwork view, not {}", rt.plural)));
            }
            return Ok(View::PodNetwork);
        }
        Ok(View::Object)
    }

    /// `object` as this view shows it (Tables are made of whole objects: see [`super::table`]).
    pub fn shown(self, object: Value) -> Value {
        match self {
            View::PodNetwork => pod_network(&object),
            View::Object | View::Table => object,
        }
    }
}

fn pick(from: &Value, fields: &[&str]) -> Value {
    let mut out = Map::new();
    for f in fields {
        if let Some(v) = from.get(*f) {
            out.insert((*f).to_string(), v.clone());
        }
    }
    Value::Object(out)
}

/// A pod's network view.
pub fn pod_network(pod: &Value) -> Value {
    let null = Value::Null;
    let spec = pod.get("spec").unwrap_or(&null);
    let containers: Vec<Value> = spec.get("containers").and_then(Value::as_array).map(|cs| cs.iter().map(|c| pick(c, &["name", "ports"])).collect()).unwrap_or_default();
    let mut out = pick(pod, &["apiVersion", "kind"]);
    out["metadata"] = pick(pod.get("metadata").unwrap_or(&null), &["name", "namespace", "uid", "labels", "resourceVersion", "creationTimestamp", "deletionTimestamp"]);
    let mut view_spec = pick(spec, &["nodeName"]);
    view_spec["containers"] = Value::Array(containers);
    out["spec"] = view_spec;
    out["status"] = pick(pod.get("status").unwrap_or(&null), &["phase", "podIP", "podIPs"]);
    out
}

#[cfg(test)]
mod tests {
    use axum::http::HeaderValue;
    use serde_json::json;

    use super::*;

    fn accept(v: &str) -> HeaderMap {
        let mut h = HeaderMap::new();
        h.insert(header::ACCEPT, HeaderValue::from_str(v).unwrap());
        h
    }

    #[test]
    fn the_first_media_type_chooses_the_view() {
        let kubectl = "application/json;as=Table;v=v1;g=meta.k8s.io,application/json;as=Table;v=v1beta1;g=meta.k8s.io,application/json";
        assert_eq!(View::of(&accept(kubectl), &resource::PODS).unwrap(), View::Table);
        assert_eq!(View::of(&accept("application/json;as=Table;v=v1beta1;g=meta.k8s.io,application/json"), &resource::PODS).unwrap(), View::Object);
        assert_eq!(View::of(&accept(POD_NETWORK_ACCEPT), &resource::PODS).unwrap(), View::PodNetwork);
        assert_eq!(View::of(&accept("application/json"), &resource::PODS).unwrap(), View::Object);
        assert_eq!(View::of(&HeaderMap::new(), &resource::PODS).unwrap(), View::Object);
        assert_eq!(View::of(&accept(POD_NETWORK_ACCEPT), &resource::SECRETS).unwrap_err().0.code, 406);
    }

    #[test]
    fn the_network_view_keeps_addresses_labels_and_ports_and_nothing_a_container_is_given() {
        let pod = json!({"apiVersion": "v1", "kind": "Pod",
            "metadata": {"name": "p", "namespace": "shop", "uid": "u", "labels": {"app": "db"}, "annotations": {"a": "b"}, "resourceVersion": "7"},
            "spec": {"nodeName": "w1", "serviceAccountName": "sa", "volumes": [{"name": "s", "secret": {"secretName": "db"}}],
                "containers": [{"name": "c", "image": "db:1", "command": ["run"], "env": [{"name": "PASSWORD", "value": "hunter2"}], "ports": [{"name": "sql", "containerPort": 5432}]}]},
            "status": {"phase": "Running", "podIP": "100.64.1.5", "podIPs": [{"ip": "100.64.1.5"}], "hostIP": "10.0.0.4", "containerStatuses": [{"name": "c"}]}});
        let view = pod_network(&pod);
        assert_eq!(view, json!({"apiVersion": "v1", "kind": "Pod",
            "metadata": {"name": "p", "namespace": "shop", "uid": "u", "labels": {"app": "db"}, "resourceVersion": "7"},
            "spec": {"nodeName": "w1", "containers": [{"name": "c", "ports": [{"name": "sql", "containerPort": 5432}]}]},
            "status": {"phase": "Running", "podIP": "100.64.1.5", "podIPs": [{"ip": "100.64.1.5"}]}}));
        assert!(!view.to_string().contains("hunter2"));
    }
}
