//! What the server does to an object's JSON on its way into the store: names checked, server-owned
//! metadata (uid, creationTimestamp, generation) set or kept, status kept apart from spec on update,
//! JSON merge patches applied, and the result validated against its kind's schema ([`validate`]).

use std::collections::HashMap;

use serde::Deserialize;
use serde_json::{Map, Value, json};

use super::error::ApiError;
use crate::api::resource::ResourceType;
use crate::api::schema::{self, FieldError, FieldErrorKind};
use crate::api::time::Time;

/// Whether `name` is a valid object name: a DNS subdomain (lower-case letters, digits, `-` and `.`,
/// starting and ending with a letter or digit, at most 253 characters).
pub fn valid_name(name: &str) -> bool {
    let b = name.as_bytes();
    !b.is_empty()
        && b.len() <= 253
        && b.iter().all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || *c == b'-' || *c == b'.')
        && b[0].is_ascii_alphanumeric()
        && b[b.len() - 1].is_ascii_alphanumeric()
}

/// Whether `name` is a valid namespace name: a DNS label (no dots, at most 63 characters).
pub fn valid_namespace(name: &str) -> bool {
    valid_name(name) && name.len() <= 63 && !name.contains('.')
}

/// A random version 4 UUID.
pub fn new_uid() -> String {
    let mut b = rand::random::<u128>().to_be_bytes();
    b[6] = (b[6] & 0x0f) | 0x40;
    b[8] = (b[8] & 0x3f) | 0x80;
    let h = hex::encode(b);
    format!("{}-{}-{}-{}-{}", &h[0..8], &h[8..12], &h[12..16], &h[16..20], &h[20..32])
}

/// Five random characters for `generateName`, from Kubernetes' alphabet (no vowels, no look-alikes).
pub fn name_suffix() -> String {
    const ALPHABET: &[u8] = b"bcdfghjklmnpqrstvwxz2456789";
    (0..5).map(|_| ALPHABET[rand::random_range(0..ALPHABET.len())] as char).collect()
}

/// The string at `/metadata/<field>`, if any.
pub fn meta_str<'a>(object: &'a Value, field: &str) -> Option<&'a str> {
    object.get("metadata")?.get(field)?.as_str()
}

/// The `metadata` map, created if missing.
pub fn metadata_mut(object: &mut Value) -> &mut Map<String, Value> {
    if !object.get("metadata").is_some_and(Value::is_object) {
        object["metadata"] = json!({});
    }
    object["metadata"].as_object_mut().expect("metadata was just made an object")
}

/// Parses a request body that must be a JSON object.
pub fn parse_object(body: &[u8]) -> Result<Value, String> {
    let v: Value = serde_json::from_slice(body).map_err(|e| format!("the request body is not valid JSON: {e}"))?;
    if v.is_object() { Ok(v) } else { Err("the request body is not a JSON object".into()) }
}

/// Checks `apiVersion` and `kind` against the resource, filling them when absent.
pub fn check_type(resource: &ResourceType, object: &mut Value) -> Result<(), String> {
    let api_version = resource.api_version();
    match object.get("apiVersion").and_then(Value::as_str) {
        None | Some("") => object["apiVersion"] = json!(api_version),
        Some(v) if v == api_version => {}
        Some(v) => return Err(format!("apiVersion {v:?} does not match the request's {api_version:?}")),
    }
    match object.get("kind").and_then(Value::as_str) {
        None | Some("") => object["kind"] = json!(resource.kind),
        Some(k) if k == resource.kind => {}
        Some(k) => return Err(format!("kind {k:?} does not match the request's {:?}", resource.kind)),
    }
    Ok(())
}

/// What a write's `fieldValidation` parameter asks of fields the schema does not know. They are
/// dropped in every case; `Warn` names each in a `Warning` header, `Strict` refuses the write.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub enum FieldValidation {
    #[default]
    Ignore,
    Warn,
    Strict,
}

impl FieldValidation {
    /// Reads `fieldValidation` from the query (absent is `Ignore`); another value is a bad request.
    pub fn from_query(query: &HashMap<String, String>) -> Result<Self, ApiError> {
        match query.get("fieldValidation").map(String::as_str) {
            None | Some("" | "Ignore") => Ok(FieldValidation::Ignore),
            Some("Warn") => Ok(FieldValidation::Warn),
            Some("Strict") => Ok(FieldValidation::Strict),
            Some(other) => Err(ApiError::bad_request(format!(
                "fieldValidation: Unsupported value: {other:?}: supported values: \"\", \"Ignore\", \"Strict\", \"Warn\""
            ))),
        }
    }
}

/// Admits `object` (`resource` `name`) as it is about to be stored: its kind's schema prunes unknown
/// fields and nulls and turns numbers given for quantities into text, then every wrong field is a
/// 422 `Invalid` (with `Strict`, every unknown field too), and the object must decode into its Rust
/// type, so that nothing stored fails to decode. Returns the paths of the unknown fields dropped.
pub fn validate(resource: &ResourceType, name: &str, object: &mut Value, mode: FieldValidation) -> Result<Vec<String>, ApiError> {
    let Some(kind_schema) = schema::schema_for(resource) else { return Ok(Vec::new()) };
    let checked = schema::check(kind_schema, object);
    let mut errors = checked.errors.clone();
    if mode == FieldValidation::Strict {
        errors.extend(checked.unknown_as_errors());
    }
    if !errors.is_empty() {
        return Err(ApiError::invalid_fields(resource, name, &errors));
    }
    if *resource == crate::api::resource::SECRETS {
        merge_string_data(object);
    }
    schema::decodes(resource, object).map_err(|e| {
        let error = FieldError { kind: FieldErrorKind::Invalid, field: String::new(), message: format!("Invalid value: the object does not decode: {e}") };
        ApiError::invalid_fields(resource, name, &[error])
    })?;
    Ok(checked.unknown)
}

/// The warnings for the Kubernetes pod fields `object` (a pod, or a workload's pod template) sets
/// that this cluster stores but does not act on: `spec.template.spec.priorityClassName is stored but
/// not acted on: pods are scheduled in arrival order without preemption`.
pub fn not_acted_on(resource: &ResourceType, object: &Value) -> Vec<String> {
    use crate::api::resource::{DEPLOYMENTS, PODS, REPLICA_SETS};
    let (pointer, prefix) = match resource {
        r if *r == PODS => ("/spec", "spec"),
        r if *r == DEPLOYMENTS || *r == REPLICA_SETS => ("/spec/template/spec", "spec.template.spec"),
        _ => return Vec::new(),
    };
    let Some(Ok(spec)) = object.pointer(pointer).map(crate::api::pod::PodSpec::deserialize) else { return Vec::new() };
    spec.not_acted_on().into_iter().map(|(field, what)| format!("{prefix}.{field} is stored but not acted on: {what}")).collect()
}

/// A Secret's `stringData` merged into `data` (encoded; it wins over a key of the same name) and
/// dropped, as Kubernetes stores a Secret.
fn merge_string_data(secret: &mut Value) {
    use base64::Engine;
    let Some(map) = secret.as_object_mut() else { return };
    let Some(Value::Object(strings)) = map.remove("stringData") else { return };
    let data = map.entry("data").or_insert_with(|| json!({}));
    if !data.is_object() {
        *data = json!({});
    }
    for (k, v) in strings {
        if let Some(text) = v.as_str() {
            data[k] = json!(base64::engine::general_purpose::STANDARD.encode(text));
        }
    }
}

/// Gives a new pod the tolerations of a node shown not ready that it does not have itself, for
/// `seconds`, as Kubernetes' DefaultTolerationSeconds admission does: one for
/// `node.kubernetes.io/not-ready` and one for `node.kubernetes.io/unreachable`, `NoExecute`. A
/// toleration of the same key (or of every key) with effect `NoExecute` or any effect counts as
/// its own.
pub fn default_tolerations(pod: &mut Value, seconds: u64) {
    use crate::api::node::{NOT_READY, UNREACHABLE};
    let Some(spec) = pod.get_mut("spec").and_then(Value::as_object_mut) else { return };
    let list = spec.entry("tolerations").or_insert_with(|| json!([]));
    let Some(list) = list.as_array_mut() else { return };
    for key in [NOT_READY, UNREACHABLE] {
        let own = list.iter().any(|t| {
            let k = t.get("key").and_then(Value::as_str).unwrap_or("");
            let effect = t.get("effect").and_then(Value::as_str).unwrap_or("");
            let operator = t.get("operator").and_then(Value::as_str).unwrap_or("Equal");
            (k == key || (k.is_empty() && operator == "Exists")) && (effect.is_empty() || effect == "NoExecute")
        });
        if !own {
            list.push(json!({"key": key, "operator": "Exists", "effect": "NoExecute", "tolerationSeconds": seconds}));
        }
    }
}

/// Sets the metadata the server owns on a new object.
pub fn prepare_create(object: &mut Value, namespace: Option<&str>) {
    let meta = metadata_mut(object);
    match namespace {
        Some(ns) => meta.insert("namespace".into(), json!(ns)),
        None => meta.remove("namespace"),
    };
    meta.insert("uid".into(), json!(new_uid()));
    meta.insert("creationTimestamp".into(), json!(Time::now()));
    meta.insert("generation".into(), json!(1));
    meta.remove("resourceVersion");
    meta.remove("deletionTimestamp");
    meta.remove("deletionGracePeriodSeconds");
}

/// Everything but `apiVersion`, `kind`, `metadata` and `status`: what a generation counts changes of.
fn desired_part(object: &Value) -> Map<String, Value> {
    let mut m = object.as_object().cloned().unwrap_or_default();
    for k in ["apiVersion", "kind", "metadata", "status"] {
        m.remove(k);
    }
    m
}

/// The object to store for an update of `stored` with `incoming`: a plain update takes everything but
/// `status` from `incoming`; a `status` update takes only `status`. Server-owned metadata is kept and
/// `generation` is bumped when the desired part changed.
/// Fields an update may not change once set, as Kubernetes' validation refuses them: a Node's
/// pod range (`spec.podCIDR`, `spec.podCIDRs`), which only its IPAM controller gives, and its
/// `spec.providerID`.
pub fn immutable_changes(resource: &ResourceType, stored: &Value, next: &Value) -> Vec<FieldError> {
    let mut refused = Vec::new();
    if *resource == crate::api::resource::NODES {
        let set = |v: Option<&Value>| v.filter(|v| !v.is_null() && *v != "" && v.as_array().is_none_or(|a| !a.is_empty())).cloned();
        for (field, pointer, what) in [("spec.podCIDR", "/spec/podCIDR", "podCIDR except from \"\" to valid"), ("spec.podCIDRs", "/spec/podCIDRs", "podCIDRs except from empty to valid")] {
            let before = set(stored.pointer(pointer));
            if before.is_some() && before != set(next.pointer(pointer)) {
                refused.push(FieldError { field: field.into(), kind: FieldErrorKind::Forbidden, message: format!("Forbidden: node updates may not change {what}") });
            }
        }
        refused.extend(super::noderestriction::immutable_changes(stored, next));
    }
    refused
}

pub fn merge_update(stored: &Value, incoming: Value, status_only: bool) -> Value {
    let mut next = if status_only {
        let mut next = stored.clone();
        match incoming.get("status") {
            Some(status) => next["status"] = status.clone(),
            None => {
                if let Some(m) = next.as_object_mut() {
                    m.remove("status");
                }
            }
        }
        next
    } else {
        let mut next = incoming;
        match stored.get("status") {
            Some(status) => next["status"] = status.clone(),
            None => {
                if let Some(m) = next.as_object_mut() {
                    m.remove("status");
                }
            }
        }
        next
    };
    let stored_meta = stored.get("metadata").cloned().unwrap_or_else(|| json!({}));
    let generation = stored_meta.get("generation").and_then(Value::as_i64).unwrap_or(1);
    let bump = !status_only && desired_part(stored) != desired_part(&next);
    let meta = metadata_mut(&mut next);
    for owned in ["uid", "creationTimestamp", "deletionTimestamp", "deletionGracePeriodSeconds", "namespace", "name"] {
        match stored_meta.get(owned) {
            Some(v) => meta.insert(owned.into(), v.clone()),
            None => meta.remove(owned),
        };
    }
    meta.insert("generation".into(), json!(if bump { generation + 1 } else { generation }));
    meta.remove("resourceVersion");
    next
}

/// Applies a JSON merge patch (RFC 7386) to `target`.
pub fn merge_patch(target: &mut Value, patch: &Value) {
    let Value::Object(patch) = patch else {
        *target = patch.clone();
        return;
    };
    if !target.is_object() {
        *target = json!({});
    }
    let map = target.as_object_mut().expect("target was just made an object");
    for (k, v) in patch {
        if v.is_null() {
            map.remove(k);
        } else {
            merge_patch(map.entry(k.clone()).or_insert(Value::Null), v);
        }
    }
}

/// Sets `metadata.resourceVersion` for a response or event.
pub fn with_revision(mut object: Value, rev: u64) -> Value {
    metadata_mut(&mut object).insert("resourceVersion".into(), json!(rev.to_string()));
    object
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_new_pod_tolerates_a_not_ready_node_for_the_default_unless_it_says_otherwise() {
        let mut plain = json!({"spec": {"containers": []}});
        default_tolerations(&mut plain, 300);
        assert_eq!(plain["spec"]["tolerations"], json!([
            {"key": "node.kubernetes.io/not-ready", "operator": "Exists", "effect": "NoExecute", "tolerationSeconds": 300},
            {"key": "node.kubernetes.io/unreachable", "operator": "Exists", "effect": "NoExecute", "tolerationSeconds": 300},
        ]));
        let own = json!({"key": "node.kubernetes.io/unreachable", "operator": "Exists", "effect": "NoExecute", "tolerationSeconds": 6000});
        let mut given = json!({"spec": {"tolerations": [own.clone()]}});
        default_tolerations(&mut given, 300);
        assert_eq!(given["spec"]["tolerations"].as_array().unwrap().len(), 2);
        assert_eq!(given["spec"]["tolerations"][0], own, "its own is kept");
        assert_eq!(given["spec"]["tolerations"][1]["key"], "node.kubernetes.io/not-ready");
        let mut everything = json!({"spec": {"tolerations": [{"operator": "Exists"}]}});
        default_tolerations(&mut everything, 300);
        assert_eq!(everything["spec"]["tolerations"], json!([{"operator": "Exists"}]), "tolerating every taint for ever needs nothing added");
    }

    #[test]
    fn names_are_dns_subdomains() {
        for ok in ["w1", "ip-10-0-1-5.ec2.internal", "a"] {
            assert!(valid_name(ok), "{ok}");
        }
        for bad in ["", "W1", "-a", "a-", "a_b", "a/b", "system:node"] {
            assert!(!valid_name(bad), "{bad}");
        }
        assert!(!valid_namespace("a.b"));
    }

    #[test]
    fn uids_look_like_uuid_v4() {
        let u = new_uid();
        assert_eq!(u.len(), 36);
        assert_eq!(&u[14..15], "4");
        assert_ne!(u, new_uid());
    }

    #[test]
    fn a_plain_update_keeps_the_stored_status_and_bumps_generation_on_spec_change() {
        let stored = json!({"metadata": {"name": "n", "uid": "u1", "generation": 3, "creationTimestamp": "2026-01-01T00:00:00Z"},
                            "spec": {"a": 1}, "status": {"s": "old"}});
        let incoming = json!({"metadata": {"name": "n", "uid": "forged", "labels": {"x": "y"}}, "spec": {"a": 2}, "status": {"s": "new"}});
        let next = merge_update(&stored, incoming, false);
        assert_eq!(next["status"], json!({"s": "old"}));
        assert_eq!(next["spec"], json!({"a": 2}));
        assert_eq!(next["metadata"]["uid"], "u1");
        assert_eq!(next["metadata"]["labels"], json!({"x": "y"}));
        assert_eq!(next["metadata"]["generation"], 4);
    }

    #[test]
    fn a_status_update_changes_only_status() {
        let stored = json!({"metadata": {"name": "n", "generation": 1, "labels": {"a": "b"}}, "spec": {"a": 1}, "status": {"s": "old"}});
        let incoming = json!({"metadata": {"name": "n", "labels": {}}, "spec": {"a": 9}, "status": {"s": "new"}});
        let next = merge_update(&stored, incoming, true);
        assert_eq!(next["status"], json!({"s": "new"}));
        assert_eq!(next["spec"], json!({"a": 1}));
        assert_eq!(next["metadata"]["labels"], json!({"a": "b"}));
        assert_eq!(next["metadata"]["generation"], 1);
    }

    #[test]
    fn a_secrets_string_data_is_stored_encoded_in_data() {
        let mut secret = json!({"metadata": {"name": "s"}, "data": {"a": "YQ==", "b": "eA=="}, "stringData": {"b": "bee", "c": "see"}});
        validate(&crate::api::resource::SECRETS, "s", &mut secret, FieldValidation::Strict).unwrap();
        assert_eq!(secret, json!({"metadata": {"name": "s"}, "data": {"a": "YQ==", "b": "YmVl", "c": "c2Vl"}}));
    }

    #[test]
    fn merge_patch_follows_rfc_7386() {
        let mut doc = json!({"a": "b", "c": {"d": "e", "f": "g"}, "l": [1, 2]});
        merge_patch(&mut doc, &json!({"a": "z", "c": {"f": null}, "l": [3], "n": {"m": 1}}));
        assert_eq!(doc, json!({"a": "z", "c": {"d": "e"}, "l": [3], "n": {"m": 1}}));
    }
}
