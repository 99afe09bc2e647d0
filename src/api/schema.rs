//! The API's schema, derived from the types of this module, and the check of an object against it.
//!
//! The serde types are the single source: `schemars` derives a JSON Schema from them (field names,
//! types, which fields are required, enums, and Kubernetes' list extensions added with
//! `#[schemars(extend(...))]`: `x-kubernetes-patch-merge-key`, `x-kubernetes-patch-strategy`,
//! `x-kubernetes-list-type`, `x-kubernetes-list-map-keys`). The remainder of unknown fields
//! ([`super::meta::UnknownFields`]) is skipped, so it is not part of the schema. `Option` is written as
//! the plain type (Kubernetes' OpenAPI has no nulls: a null is an absent field).
//!
//! [`check`] walks an object against its kind's schema the way the API server admits it: unknown
//! fields and nulls are removed (Kubernetes prunes them too) and reported, numbers given for
//! quantities are stored as their text (`"cpu": 4` is `"4"`), and every wrong type, missing required
//! field, unsupported enum value, bad quantity or timestamp is a [`FieldError`] with the field's path
//! in Kubernetes' form (`spec.containers[0].resources.requests[cpu]`). After a clean check the object
//! also decodes into its Rust type ([`decodes`]), which is what every controller relies on.

use std::fmt::Write as _;
use std::sync::OnceLock;

use schemars::JsonSchema;
use schemars::generate::SchemaSettings;
use serde::de::DeserializeOwned;
use serde_json::{Map, Value};

use super::quantity::is_quantity;
use super::resource::{self, ResourceType};
use super::time::Time;

/// One kind with a typed model: its resource, its schema and its decoder.
struct Kind {
    resource: ResourceType,
    schema: Value,
    decode: fn(&Value) -> Result<(), serde_json::Error>,
}

fn kind<T: JsonSchema + DeserializeOwned>(resource: ResourceType) -> Kind {
    Kind { resource, schema: generate::<T>(), decode: |v| T::deserialize(v).map(drop) }
}

fn kinds() -> &'static [Kind] {
    static KINDS: OnceLock<Vec<Kind>> = OnceLock::new();
    KINDS.get_or_init(|| {
        vec![
            kind::<super::Node>(resource::NODES),
            kind::<super::pod::Pod>(resource::PODS),
            kind::<super::service::Service>(resource::SERVICES),
            kind::<super::service::Endpoints>(resource::ENDPOINTS),
            kind::<super::ConfigMap>(resource::CONFIG_MAPS),
            kind::<super::Secret>(resource::SECRETS),
            kind::<super::event::Event>(resource::EVENTS),
            kind::<super::deployment::Deployment>(resource::DEPLOYMENTS),
            kind::<super::deployment::ReplicaSet>(resource::REPLICA_SETS),
            kind::<super::Lease>(resource::LEASES),
            kind::<super::CertificateSigningRequest>(resource::CERTIFICATE_SIGNING_REQUESTS),
            kind::<super::networkpolicy::NetworkPolicy>(resource::NETWORK_POLICIES),
            kind::<super::MachinePool>(resource::MACHINE_POOLS),
        ]
    })
}

fn find(resource: &ResourceType) -> Option<&'static Kind> {
    kinds().iter().find(|k| k.resource == *resource)
}

/// The JSON Schema of the kind served as `resource` (every subschema inline), ready to be served as
/// OpenAPI; `None` for a kind without a typed model (namespaces), which is stored as sent.
pub fn schema_for(resource: &ResourceType) -> Option<&'static Value> {
    find(resource).map(|k| &k.schema)
}

/// Whether `object` decodes into the Rust type of its kind (`Ok` for kinds without one).
pub fn decodes(resource: &ResourceType, object: &Value) -> Result<(), serde_json::Error> {
    find(resource).map_or(Ok(()), |k| (k.decode)(object))
}

fn generate<T: JsonSchema>() -> Value {
    let settings = SchemaSettings::draft2020_12().with(|s| {
        s.inline_subschemas = true;
        s.meta_schema = None;
    });
    let mut schema = settings.into_generator().into_root_schema_for::<T>().to_value();
    without_null(&mut schema);
    schema
}

/// Removes `null` from `type` lists and `anyOf`s, recursively: an `Option` is its plain type.
fn without_null(schema: &mut Value) {
    let Value::Object(map) = schema else { return };
    if let Some(Value::Array(types)) = map.get_mut("type") {
        types.retain(|t| t != "null");
        if types.len() == 1 {
            let only = types.remove(0);
            map.insert("type".into(), only);
        }
    }
    if let Some(Value::Array(any)) = map.get_mut("anyOf") {
        any.retain(|s| s.get("type").is_none_or(|t| t != "null"));
        if any.len() == 1
            && let Some(Value::Object(only)) = any.pop()
        {
            map.remove("anyOf");
            for (k, v) in only {
                map.entry(k).or_insert(v);
            }
        }
    }
    if let Some(Value::Array(values)) = map.get_mut("enum") {
        values.retain(|v| !v.is_null());
    }
    for v in map.values_mut() {
        match v {
            Value::Object(_) => without_null(v),
            Value::Array(items) => items.iter_mut().for_each(without_null),
            _ => {}
        }
    }
}

/// Why a field is refused, with Kubernetes' cause types (`k8s.io/apimachinery` field errors).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FieldErrorKind {
    /// `FieldValueInvalid`: a value of the right type that is not acceptable (a bad quantity).
    Invalid,
    /// `FieldValueRequired`: a required field is missing.
    Required,
    /// `FieldValueNotSupported`: a value outside the field's enum.
    NotSupported,
    /// `FieldValueTypeInvalid`: a value of the wrong JSON type.
    TypeInvalid,
    /// An unknown field, refused when the request asks `fieldValidation=Strict`.
    Unknown,
    /// `FieldValueForbidden`: a field not allowed together with another.
    Forbidden,
}

impl FieldErrorKind {
    /// The cause's `reason` in a `Status`.
    pub fn reason(self) -> &'static str {
        match self {
            FieldErrorKind::Invalid | FieldErrorKind::Unknown => "FieldValueInvalid",
            FieldErrorKind::Required => "FieldValueRequired",
            FieldErrorKind::NotSupported => "FieldValueNotSupported",
            FieldErrorKind::TypeInvalid => "FieldValueTypeInvalid",
            FieldErrorKind::Forbidden => "FieldValueForbidden",
        }
    }
}

/// One refused field: its path (`spec.replicas`) and what is wrong, worded as Kubernetes does
/// (`Invalid value: "string": spec.replicas in body must be of type integer: "string"`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FieldError {
    pub kind: FieldErrorKind,
    pub field: String,
    pub message: String,
}

impl std::fmt::Display for FieldError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        if self.field.is_empty() { f.write_str(&self.message) } else { write!(f, "{}: {}", self.field, self.message) }
    }
}

/// What [`check`] found.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct Checked {
    /// Wrong values; the object must not be stored while there is one.
    pub errors: Vec<FieldError>,
    /// Paths of the fields the schema does not know, removed from the object.
    pub unknown: Vec<String>,
}

impl Checked {
    /// The unknown fields as errors, for `fieldValidation=Strict`, worded as Kubernetes' strict decoder.
    pub fn unknown_as_errors(&self) -> Vec<FieldError> {
        self.unknown
            .iter()
            .map(|path| FieldError { kind: FieldErrorKind::Unknown, field: path.clone(), message: format!("strict decoding error: unknown field {path:?}") })
            .collect()
    }
}

/// Checks `object` against `schema`, pruning unknown fields and nulls and normalizing quantities in
/// place. `apiVersion`, `kind` and `metadata` are checked like any other field.
pub fn check(schema: &Value, object: &mut Value) -> Checked {
    let mut out = Checked::default();
    walk(schema, object, &mut String::new(), &mut out);
    out.unknown.sort();
    out
}

/// The JSON type name Kubernetes' messages use for a value.
fn type_name(v: &Value) -> &'static str {
    match v {
        Value::Null => "null",
        Value::Bool(_) => "boolean",
        Value::Number(n) if n.is_f64() => "number",
        Value::Number(_) => "integer",
        Value::String(_) => "string",
        Value::Array(_) => "array",
        Value::Object(_) => "object",
    }
}

fn quoted(v: &Value) -> String {
    match v {
        Value::String(s) => format!("{s:?}"),
        other => other.to_string(),
    }
}

fn type_error(out: &mut Checked, path: &str, want: &str, got: &Value) {
    let got = type_name(got);
    out.errors.push(FieldError {
        kind: FieldErrorKind::TypeInvalid,
        field: path.to_string(),
        message: format!("Invalid value: {got:?}: {path} in body must be of type {want}: {got:?}"),
    });
}

fn child(path: &str, key: &str) -> String {
    if path.is_empty() { key.to_string() } else { format!("{path}.{key}") }
}

fn walk(schema: &Value, value: &mut Value, path: &mut String, out: &mut Checked) {
    let Some(schema) = schema.as_object() else { return };
    if schema.get("x-kubernetes-int-or-string").is_some_and(|b| b == true) {
        return int_or_string(schema, value, path, out);
    }
    match schema.get("type").and_then(Value::as_str) {
        Some("object") => {
            let Value::Object(map) = value else { return type_error(out, path, "object", value) };
            object(schema, map, path, out);
        }
        Some("array") => {
            let Value::Array(items) = value else { return type_error(out, path, "array", value) };
            if let Some(item_schema) = schema.get("items") {
                for (i, item) in items.iter_mut().enumerate() {
                    let mut item_path = format!("{path}[{i}]");
                    walk(item_schema, item, &mut item_path, out);
                }
            }
        }
        Some("string") => {
            let Value::String(s) = value else { return type_error(out, path, "string", value) };
            if schema.get("format").and_then(Value::as_str) == Some("date-time") && Time::parse(s).is_err() {
                out.errors.push(FieldError {
                    kind: FieldErrorKind::Invalid,
                    field: path.clone(),
                    message: format!("Invalid value: {s:?}: {path} in body must be of type date-time: {s:?}"),
                });
            }
        }
        Some("integer") => {
            let in_range = match value {
                Value::Number(n) => match schema.get("format").and_then(Value::as_str) {
                    Some("int32") => n.as_i64().is_some_and(|i| i32::try_from(i).is_ok()),
                    Some("uint32") => n.as_u64().is_some_and(|i| u32::try_from(i).is_ok()),
                    Some("uint" | "uint64") => n.is_u64(),
                    _ => n.is_i64() || n.is_u64(),
                },
                _ => return type_error(out, path, "integer", value),
            };
            if value.as_f64().is_some_and(|f| f.fract() != 0.0) || !(value.is_i64() || value.is_u64()) {
                return type_error(out, path, "integer", value);
            }
            if !in_range {
                out.errors.push(FieldError {
                    kind: FieldErrorKind::Invalid,
                    field: path.clone(),
                    message: format!("Invalid value: {value}: {path} in body is out of range for its type"),
                });
            }
        }
        Some("number") if !value.is_number() => type_error(out, path, "number", value),
        Some("boolean") if !value.is_boolean() => type_error(out, path, "boolean", value),
        _ => {}
    }
    if let Some(Value::Array(allowed)) = schema.get("enum")
        && !allowed.contains(value)
    {
        let mut supported: Vec<String> = allowed.iter().map(quoted).collect();
        supported.sort();
        out.errors.push(FieldError {
            kind: FieldErrorKind::NotSupported,
            field: path.clone(),
            message: format!("Unsupported value: {}: supported values: {}", quoted(value), supported.join(", ")),
        });
    }
}

fn object(schema: &Map<String, Value>, map: &mut Map<String, Value>, path: &str, out: &mut Checked) {
    // A null is an absent field, as Kubernetes' decoder treats it.
    map.retain(|_, v| !v.is_null());
    // `x-kubernetes-preserve-unknown-fields` keeps what the schema does not describe (a part not typed yet).
    let preserve = schema.get("x-kubernetes-preserve-unknown-fields").is_some_and(|b| b == true);
    match schema.get("properties").and_then(Value::as_object) {
        Some(properties) => {
            let unknown: Vec<String> = map.keys().filter(|k| !preserve && !properties.contains_key(*k)).cloned().collect();
            for key in unknown {
                map.remove(&key);
                out.unknown.push(child(path, &key));
            }
            for (key, value) in map.iter_mut() {
                if let Some(field_schema) = properties.get(key) {
                    walk(field_schema, value, &mut child(path, key), out);
                }
            }
        }
        None => {
            if let Some(values) = schema.get("additionalProperties").filter(|s| s.is_object()) {
                for (key, value) in map.iter_mut() {
                    let mut entry_path = String::new();
                    let _ = write!(entry_path, "{path}[{key}]");
                    walk(values, value, &mut entry_path, out);
                }
            }
        }
    }
    for required in schema.get("required").and_then(Value::as_array).into_iter().flatten().filter_map(Value::as_str) {
        if !map.contains_key(required) {
            out.errors.push(FieldError { kind: FieldErrorKind::Required, field: child(path, required), message: "Required value".into() });
        }
    }
}

fn int_or_string(schema: &Map<String, Value>, value: &mut Value, path: &str, out: &mut Checked) {
    let quantity = schema.get("format").and_then(Value::as_str) == Some("quantity");
    match value {
        Value::String(s) if quantity && !is_quantity(s) => out.errors.push(FieldError {
            kind: FieldErrorKind::Invalid,
            field: path.to_string(),
            message: format!(
                "Invalid value: {s:?}: quantities must match the regular expression '^([+-]?[0-9.]+)([eEinumkKMGTP]*[-+]?[0-9]*)$'"
            ),
        }),
        Value::String(_) => {}
        // Kubernetes' Quantity reads a JSON number; it is kept as its text, which the types expect.
        Value::Number(n) if quantity => *value = Value::String(n.to_string()),
        Value::Number(n) if n.is_i64() || n.is_u64() => {}
        other => {
            let got = type_name(other);
            out.errors.push(FieldError {
                kind: FieldErrorKind::TypeInvalid,
                field: path.to_string(),
                message: format!("Invalid value: {got:?}: {path} in body must be of type integer or string: {got:?}"),
            });
        }
    }
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    fn pod_schema() -> &'static Value {
        schema_for(&resource::PODS).unwrap()
    }

    #[test]
    fn the_pod_schema_has_kubernetes_names_required_fields_and_list_extensions() {
        let s = pod_schema();
        let containers = &s["properties"]["spec"]["properties"]["containers"];
        assert_eq!(containers["type"], "array");
        assert_eq!(containers["x-kubernetes-patch-merge-key"], "name");
        assert_eq!(containers["x-kubernetes-patch-strategy"], "merge");
        assert_eq!(containers["x-kubernetes-list-type"], "map");
        let container = &containers["items"];
        assert_eq!(container["required"], json!(["name"]));
        assert_eq!(container["properties"]["ports"]["x-kubernetes-patch-merge-key"], "containerPort");
        assert_eq!(container["properties"]["env"]["x-kubernetes-list-map-keys"], json!(["name"]));
        assert_eq!(container["properties"]["imagePullPolicy"]["type"], "string");
        assert_eq!(s["properties"]["status"]["properties"]["conditions"]["x-kubernetes-patch-merge-key"], "type");
        assert_eq!(s["properties"]["status"]["properties"]["podIP"]["type"], "string");
        assert_eq!(s["properties"]["spec"]["properties"]["restartPolicy"]["enum"], json!(["Always", "Never", "OnFailure"]));
        assert_eq!(s["properties"]["metadata"]["properties"]["ownerReferences"]["x-kubernetes-list-map-keys"], json!(["uid"]));
        // The remainder of unknown fields is not part of the schema.
        assert!(!s.to_string().contains("\"extra\""));
        assert!(!s.to_string().contains("null"));
    }

    #[test]
    fn every_served_kind_with_a_type_has_a_schema_and_namespaces_have_none() {
        for r in resource::ALL {
            assert_eq!(schema_for(r).is_some(), *r != resource::NAMESPACES, "{}", r.plural);
        }
        let node = schema_for(&resource::NODES).unwrap();
        assert_eq!(node["properties"]["status"]["properties"]["capacity"]["additionalProperties"]["format"], "quantity");
        assert_eq!(node["properties"]["status"]["properties"]["addresses"]["x-kubernetes-patch-merge-key"], "type");
        let service = schema_for(&resource::SERVICES).unwrap();
        assert_eq!(service["properties"]["spec"]["properties"]["ports"]["x-kubernetes-list-map-keys"], json!(["port", "protocol"]));
        assert_eq!(service["properties"]["spec"]["properties"]["ports"]["items"]["required"], json!(["port"]));
        let target_port = &service["properties"]["spec"]["properties"]["ports"]["items"]["properties"]["targetPort"];
        assert_eq!(target_port["x-kubernetes-int-or-string"], true);
        let deployment = schema_for(&resource::DEPLOYMENTS).unwrap();
        let rolling = &deployment["properties"]["spec"]["properties"]["strategy"]["properties"]["rollingUpdate"]["properties"];
        assert_eq!(rolling["maxSurge"]["x-kubernetes-int-or-string"], true);
        assert_eq!(pod_schema()["properties"]["metadata"]["properties"]["creationTimestamp"]["format"], "date-time");
    }

    #[test]
    fn the_lists_strategic_merge_patch_needs_carry_their_merge_keys() {
        let spec = &pod_schema()["properties"]["spec"]["properties"];
        let container = &spec["containers"]["items"]["properties"];
        let keyed = [
            (&spec["initContainers"], "name"),
            (&spec["volumes"], "name"),
            (&container["volumeMounts"], "mountPath"),
            (&container["env"], "name"),
            (&container["ports"], "containerPort"),
        ];
        for (list, key) in keyed {
            assert_eq!(list["x-kubernetes-patch-merge-key"], key, "{list}");
            assert_eq!(list["x-kubernetes-list-type"], "map", "{list}");
        }
        assert_eq!(spec["tolerations"]["x-kubernetes-list-type"], "atomic");
        let node = schema_for(&resource::NODES).unwrap();
        assert_eq!(node["properties"]["spec"]["properties"]["taints"]["x-kubernetes-list-type"], "atomic");
    }

    #[test]
    fn a_pod_status_as_the_agent_writes_it_passes_whole() {
        let started = "2026-01-01T00:00:00.123456789Z";
        let mut pod = json!({"metadata": {"name": "web"}, "spec": {"containers": [{"name": "web", "image": "nginx"}]},
            "status": {"phase": "Running", "hostIP": "10.0.1.5", "podIP": "100.64.3.7", "podIPs": [{"ip": "100.64.3.7"}], "startTime": "2026-01-01T00:00:00Z",
                "conditions": [{"type": "Ready", "status": "True", "lastTransitionTime": "2026-01-01T00:00:00Z"}],
                "containerStatuses": [{"name": "web", "image": "nginx", "ready": true, "restartCount": 1, "started": true,
                    "containerID": "docker://abc", "state": {"running": {"startedAt": started}},
                    "lastState": {"terminated": {"exitCode": 1, "reason": "Error", "startedAt": started, "finishedAt": started, "containerID": "docker://abd"}}}]}});
        let before = pod.clone();
        assert_eq!(check(pod_schema(), &mut pod), Checked::default());
        assert_eq!(pod, before);
        assert!(decodes(&resource::PODS, &pod).is_ok());
    }

    #[test]
    fn a_volume_keeps_its_source_until_volume_sources_are_typed() {
        let mut pod = json!({"spec": {"containers": [{"name": "c", "volumeMounts": [{"name": "data", "mountPath": "/data"}]}],
                             "volumes": [{"name": "data", "emptyDir": {}}]}});
        let before = pod.clone();
        assert_eq!(check(pod_schema(), &mut pod), Checked::default());
        assert_eq!(pod, before);
    }

    #[test]
    fn a_wrong_type_is_refused_with_the_field_path() {
        let mut pod = json!({"metadata": {"name": "p"}, "spec": {"containers": "x"}});
        let checked = check(pod_schema(), &mut pod);
        assert_eq!(checked.errors.len(), 1);
        let e = &checked.errors[0];
        assert_eq!((e.kind, e.field.as_str()), (FieldErrorKind::TypeInvalid, "spec.containers"));
        assert_eq!(e.message, "Invalid value: \"string\": spec.containers in body must be of type array: \"string\"");

        let mut deployment = json!({"spec": {"replicas": "three", "template": {"spec": {"containers": [{"name": "c", "ports": [{"containerPort": "80"}]}]}}}});
        let checked = check(schema_for(&resource::DEPLOYMENTS).unwrap(), &mut deployment);
        let fields: Vec<&str> = checked.errors.iter().map(|e| e.field.as_str()).collect();
        assert_eq!(fields, ["spec.replicas", "spec.template.spec.containers[0].ports[0].containerPort"]);
    }

    #[test]
    fn missing_required_fields_and_unsupported_values_are_named() {
        let mut pod = json!({"spec": {"restartPolicy": "Sometimes", "containers": [{"image": "busybox"}]}});
        let checked = check(pod_schema(), &mut pod);
        let found: Vec<(FieldErrorKind, &str, &str)> = checked.errors.iter().map(|e| (e.kind, e.field.as_str(), e.message.as_str())).collect();
        assert!(found.contains(&(FieldErrorKind::Required, "spec.containers[0].name", "Required value")), "{found:?}");
        assert!(
            found.contains(&(
                FieldErrorKind::NotSupported,
                "spec.restartPolicy",
                "Unsupported value: \"Sometimes\": supported values: \"Always\", \"Never\", \"OnFailure\""
            )),
            "{found:?}"
        );
    }

    #[test]
    fn quantities_accept_numbers_as_text_and_refuse_other_types() {
        let nodes = schema_for(&resource::NODES).unwrap();
        let mut node = json!({"metadata": {"name": "w1"}, "status": {"capacity": {"cpu": 4, "memory": "2Gi"}}});
        assert_eq!(check(nodes, &mut node), Checked::default());
        assert_eq!(node["status"]["capacity"]["cpu"], "4");
        assert!(decodes(&resource::NODES, &node).is_ok());

        let mut node = json!({"status": {"capacity": {"cpu": [4], "memory": "x", "pods": {"n": 1}}}});
        let checked = check(nodes, &mut node);
        let fields: Vec<(&str, FieldErrorKind)> = checked.errors.iter().map(|e| (e.field.as_str(), e.kind)).collect();
        assert_eq!(
            fields,
            [
                ("status.capacity[cpu]", FieldErrorKind::TypeInvalid),
                ("status.capacity[memory]", FieldErrorKind::Invalid),
                ("status.capacity[pods]", FieldErrorKind::TypeInvalid)
            ]
        );
    }

    #[test]
    fn unknown_fields_and_nulls_are_pruned_and_reported() {
        let mut pod = json!({"metadata": {"name": "p", "labels": null, "bogus": 1},
                             "spec": {"foo": "bar", "nodeName": null, "containers": [{"name": "c", "image": "i", "sidecar": true}]}});
        let checked = check(pod_schema(), &mut pod);
        assert!(checked.errors.is_empty(), "{checked:?}");
        assert_eq!(checked.unknown, ["metadata.bogus", "spec.containers[0].sidecar", "spec.foo"]);
        assert_eq!(pod, json!({"metadata": {"name": "p"}, "spec": {"containers": [{"name": "c", "image": "i"}]}}));
        let strict = checked.unknown_as_errors();
        assert_eq!(strict[2].message, "strict decoding error: unknown field \"spec.foo\"");
    }

    #[test]
    fn an_object_that_passes_the_check_decodes_into_its_type() {
        let mut service = json!({"apiVersion": "v1", "kind": "Service", "metadata": {"name": "web", "creationTimestamp": "2026-01-01T00:00:00Z"},
                                 "spec": {"type": "NodePort", "ports": [{"port": 80, "targetPort": "http"}], "selector": {"app": "web"}}});
        assert_eq!(check(schema_for(&resource::SERVICES).unwrap(), &mut service), Checked::default());
        assert!(decodes(&resource::SERVICES, &service).is_ok());
        let mut bad = json!({"spec": {"ports": [{"port": "eighty"}]}, "metadata": {"creationTimestamp": "yesterday"}});
        let checked = check(schema_for(&resource::SERVICES).unwrap(), &mut bad);
        let fields: Vec<&str> = checked.errors.iter().map(|e| e.field.as_str()).collect();
        assert_eq!(fields, ["metadata.creationTimestamp", "spec.ports[0].port"]);
    }
}
