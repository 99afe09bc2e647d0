//! Kubernetes' NodeRestriction admission for a node's writes of its own Node object (the
//! authorizer already limits a node to its own Node, [`super::auth`]): a node may not give itself
//! a role or a restricted label (`node-role.kubernetes.io/*`, `node-restriction.kubernetes.io/*`,
//! which the control plane and the operator set), may register with taints but not change them
//! afterwards (the control plane taints and untaints nodes), and its `spec.providerID` is fixed once
//! set (Kubernetes' validation, for every writer: [`immutable_changes`]). So a worker's
//! credential cannot make its node a master, shed the taint that keeps workloads off it, or claim
//! another machine's instance.

use std::collections::BTreeMap;

use serde_json::Value;

use super::auth::Identity;
use super::error::ApiError;
use crate::api::resource::NODES;
use crate::api::schema::{FieldError, FieldErrorKind};

/// Label prefixes only the control plane and the operator may set on a Node.
pub const RESTRICTED_PREFIXES: &[&str] = &["node-role.kubernetes.io/", "node-restriction.kubernetes.io/"];

fn restricted(key: &str) -> bool {
    RESTRICTED_PREFIXES.iter().any(|p| key.starts_with(p))
}

fn labels(node: &Value) -> BTreeMap<String, Value> {
    node.pointer("/metadata/labels").and_then(Value::as_object).map(|m| m.iter().map(|(k, v)| (k.clone(), v.clone())).collect()).unwrap_or_default()
}

fn refuse(name: &str, what: String) -> ApiError {
    ApiError::forbidden(&NODES, name, format!("nodes {name:?} is forbidden: node {name:?} is not allowed to {what}"))
}

/// A node creating its own Node (registering): no restricted label.
pub fn admit_create(identity: &Identity, node: &Value) -> Result<(), ApiError> {
    let Some(name) = identity.node_name() else { return Ok(()) };
    let set: Vec<String> = labels(node).into_keys().filter(|k| restricted(k)).collect();
    if set.is_empty() { Ok(()) } else { Err(refuse(name, format!("set the following labels: {}", set.join(", ")))) }
}

/// A node updating or patching its own Node: restricted labels and taints stay as they are.
pub fn admit_update(identity: &Identity, stored: &Value, next: &Value) -> Result<(), ApiError> {
    let Some(name) = identity.node_name() else { return Ok(()) };
    let (before, after) = (labels(stored), labels(next));
    let mut changed: Vec<&String> = before.keys().chain(after.keys()).filter(|k| restricted(k) && before.get(*k) != after.get(*k)).collect();
    changed.sort();
    changed.dedup();
    if !changed.is_empty() {
        return Err(refuse(name, format!("modify labels: {}", changed.iter().map(|k| k.as_str()).collect::<Vec<_>>().join(", "))));
    }
    let taints = |v: &Value| v.pointer("/spec/taints").filter(|t| t.as_array().is_some_and(|a| !a.is_empty())).cloned();
    if taints(stored) != taints(next) {
        return Err(refuse(name, "modify taints".into()));
    }
    Ok(())
}

/// `spec.providerID` may be set once and never changed, as Kubernetes' validation refuses it
/// (422 for every writer): the machine controller matches instances to Nodes by it.
pub fn immutable_changes(stored: &Value, next: &Value) -> Vec<FieldError> {
    let id = |v: &Value| v.pointer("/spec/providerID").and_then(Value::as_str).filter(|s| !s.is_empty()).map(str::to_string);
    match (id(stored), id(next)) {
        (Some(before), after) if Some(&before) != after.as_ref() => vec![FieldError {
            kind: FieldErrorKind::Forbidden,
            field: "spec.providerID".into(),
            message: "Forbidden: node updates may not change providerID except from \"\" to valid".into(),
        }],
        _ => Vec::new(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::apiserver::auth::NODES_GROUP;
    use serde_json::json;

    fn node(name: &str) -> Identity {
        Identity::new(format!("system:node:{name}"), vec![NODES_GROUP.into()])
    }

    fn object(labels: Value, taints: Value, provider: &str) -> Value {
        json!({"metadata": {"name": "w1", "labels": labels}, "spec": {"taints": taints, "providerID": provider}})
    }

    #[test]
    fn a_node_registers_without_a_role_and_keeps_its_role_labels_and_taints_as_the_control_plane_set_them() {
        let w1 = node("w1");
        let plain = object(json!({"kubernetes.io/hostname": "w1"}), json!([{"key": "x", "effect": "NoSchedule"}]), "aws:///a/i-1");
        assert!(admit_create(&w1, &plain).is_ok(), "taints and ordinary labels at registration");
        let master = object(json!({"node-role.kubernetes.io/control-plane": ""}), json!([]), "aws:///a/i-1");
        let refused = admit_create(&w1, &master).unwrap_err();
        assert_eq!(refused.0.message, "nodes \"w1\" is forbidden: node \"w1\" is not allowed to set the following labels: node-role.kubernetes.io/control-plane");
        assert_eq!(refused.0.code, 403);

        let stored = object(json!({"node-role.kubernetes.io/control-plane": "", "a": "1"}), json!([{"key": "node-role.kubernetes.io/control-plane", "effect": "NoSchedule"}]), "aws:///a/i-1");
        let relabelled = object(json!({"node-role.kubernetes.io/control-plane": "", "a": "2"}), json!([{"key": "node-role.kubernetes.io/control-plane", "effect": "NoSchedule"}]), "aws:///a/i-1");
        assert!(admit_update(&w1, &stored, &relabelled).is_ok(), "ordinary labels change");
        let dropped_role = object(json!({"a": "1"}), json!([{"key": "node-role.kubernetes.io/control-plane", "effect": "NoSchedule"}]), "aws:///a/i-1");
        assert!(admit_update(&w1, &stored, &dropped_role).unwrap_err().0.message.ends_with("is not allowed to modify labels: node-role.kubernetes.io/control-plane"));
        let untainted = object(json!({"node-role.kubernetes.io/control-plane": "", "a": "1"}), json!([]), "aws:///a/i-1");
        assert!(admit_update(&w1, &stored, &untainted).unwrap_err().0.message.ends_with("is not allowed to modify taints"));
        let restricted_label = object(json!({"node-role.kubernetes.io/control-plane": "", "a": "1", "node-restriction.kubernetes.io/pci": "yes"}), json!([{"key": "node-role.kubernetes.io/control-plane", "effect": "NoSchedule"}]), "aws:///a/i-1");
        assert!(admit_update(&w1, &stored, &restricted_label).is_err());
        let admin = Identity::new("admin", vec![super::super::auth::MASTERS_GROUP.into()]);
        assert!(admit_update(&admin, &stored, &untainted).is_ok(), "the control plane may");
    }

    #[test]
    fn a_provider_id_is_set_once() {
        let none = object(json!({}), json!([]), "");
        let one = object(json!({}), json!([]), "aws:///a/i-1");
        let other = object(json!({}), json!([]), "aws:///a/i-2");
        assert!(immutable_changes(&none, &one).is_empty());
        assert!(immutable_changes(&one, &one).is_empty());
        assert_eq!(immutable_changes(&one, &other)[0].field, "spec.providerID");
        assert_eq!(immutable_changes(&one, &none).len(), 1);
    }
}
