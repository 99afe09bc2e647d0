//! Applying manifest objects to a cluster: create what is missing, replace what differs (keeping
//! what the cluster filled in: status, a pod's node, allocated node ports), leave the rest.

use serde_json::{Value, json};

use super::{Document, Object};
use crate::client::{ApiClient, ClientError};

/// What applying one object did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Outcome {
    Created,
    Configured,
    Unchanged,
}

impl std::fmt::Display for Outcome {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            Outcome::Created => "created",
            Outcome::Configured => "configured",
            Outcome::Unchanged => "unchanged",
        })
    }
}

/// Whether every field `desired` sets has the same value in `actual` (lists element by element).
pub fn is_subset(desired: &Value, actual: &Value) -> bool {
    match (desired, actual) {
        (Value::Object(d), Value::Object(a)) => d.iter().all(|(k, v)| match a.get(k) {
            Some(av) => is_subset(v, av),
            None => v.is_null() || v.as_object().is_some_and(|m| m.is_empty()) || v.as_array().is_some_and(|l| l.is_empty()),
        }),
        (Value::Array(d), Value::Array(a)) => d.len() == a.len() && d.iter().zip(a).all(|(x, y)| is_subset(x, y)),
        (d, a) => d == a,
    }
}

/// The object to PUT over `existing`: `desired`, with the existing resource version and the
/// fields the cluster owns carried over.
pub fn update_of(desired: &Value, existing: &Value) -> Value {
    let mut next = desired.clone();
    next["metadata"]["resourceVersion"] = existing.pointer("/metadata/resourceVersion").cloned().unwrap_or(Value::Null);
    if let Some(status) = existing.get("status") {
        next["status"] = status.clone();
    }
    if let (Some(node), None) = (existing.pointer("/spec/nodeName"), desired.pointer("/spec/nodeName")) {
        next["spec"]["nodeName"] = node.clone();
    }
    // Allocated node ports stay with their port.
    if let (Some(ports), Some(old)) = (next.pointer_mut("/spec/ports").and_then(Value::as_array_mut), existing.pointer("/spec/ports").and_then(Value::as_array)) {
        for p in ports.iter_mut().filter(|p| p.get("nodePort").is_none()) {
            let same = old.iter().find(|o| o.get("port") == p.get("port") && o.get("protocol").and_then(Value::as_str).unwrap_or("TCP") == p.get("protocol").and_then(Value::as_str).unwrap_or("TCP"));
            if let Some(np) = same.and_then(|o| o.get("nodePort")) {
                p["nodePort"] = np.clone();
            }
        }
    }
    next
}

fn namespace_of<'a>(object: &'a Object, default_namespace: &'a str) -> Option<&'a str> {
    object.resource().namespaced.then(|| object.metadata().namespace.as_deref().filter(|n| !n.is_empty()).unwrap_or(default_namespace))
}

/// Creates the object, or replaces it when it differs. `default_namespace` is used for objects
/// that name none.
pub async fn apply(client: &ApiClient, object: &Object, default_namespace: &str) -> Result<Outcome, ClientError> {
    let rt = object.resource();
    let ns = namespace_of(object, default_namespace);
    let name = &object.metadata().name;
    let mut desired = object.to_value();
    if let Some(ns) = ns {
        desired["metadata"]["namespace"] = json!(ns);
    }
    match client.get_value(&rt.object_path(ns, name)).await {
        Err(e) if e.is_not_found() => {
            client.create_value(&rt.collection_path(ns), &desired).await?;
            Ok(Outcome::Created)
        }
        Err(e) => Err(e),
        Ok(existing) => {
            let mut compare = desired.clone();
            if let Some(m) = compare.as_object_mut() {
                m.remove("status");
            }
            if is_subset(&compare, &existing) {
                return Ok(Outcome::Unchanged);
            }
            client.replace_value(&rt.object_path(ns, name), &update_of(&desired, &existing)).await?;
            Ok(Outcome::Configured)
        }
    }
}

/// Deletes the object; `false` when it did not exist.
pub async fn delete(client: &ApiClient, object: &Object, default_namespace: &str) -> Result<bool, ClientError> {
    let rt = object.resource();
    match client.delete(rt, namespace_of(object, default_namespace), &object.metadata().name).await {
        Ok(()) => Ok(true),
        Err(e) if e.is_not_found() => Ok(false),
        Err(e) => Err(e),
    }
}

/// The documents in the order to apply them: namespaces first, then the file order.
pub fn apply_order(docs: &[Document]) -> Vec<&Document> {
    let mut out: Vec<&Document> = docs.iter().filter(|d| matches!(d.object, Object::Namespace(_))).collect();
    out.extend(docs.iter().filter(|d| !matches!(d.object, Object::Namespace(_))));
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn what_the_server_adds_does_not_make_an_object_differ() {
        let desired = json!({"metadata": {"name": "web", "labels": {}}, "spec": {"replicas": 3, "ports": [{"port": 80}]}});
        let actual = json!({"metadata": {"name": "web", "uid": "u", "resourceVersion": "7"}, "spec": {"replicas": 3, "ports": [{"port": 80, "nodePort": 30000}]}, "status": {"replicas": 3}});
        assert!(is_subset(&desired, &actual));
        assert!(!is_subset(&json!({"spec": {"replicas": 4}}), &actual));
        assert!(!is_subset(&json!({"spec": {"ports": [{"port": 80}, {"port": 81}]}}), &actual));
    }

    #[test]
    fn an_update_keeps_status_node_and_allocated_node_ports() {
        let desired = json!({"metadata": {"name": "web"}, "spec": {"ports": [{"port": 80}, {"port": 81, "nodePort": 31000}]}});
        let existing = json!({"metadata": {"name": "web", "resourceVersion": "9"}, "spec": {"nodeName": "w1", "ports": [{"port": 80, "nodePort": 30000}]}, "status": {"phase": "Running"}});
        let next = update_of(&desired, &existing);
        assert_eq!(next["metadata"]["resourceVersion"], "9");
        assert_eq!(next["spec"]["nodeName"], "w1");
        assert_eq!(next["spec"]["ports"][0]["nodePort"], 30000);
        assert_eq!(next["spec"]["ports"][1]["nodePort"], 31000);
        assert_eq!(next["status"]["phase"], "Running");
    }
}
