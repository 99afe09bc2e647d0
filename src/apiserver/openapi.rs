//! The OpenAPI documents kubectl reads, generated from the one schema of the api types
//! ([`crate::api::schema`]):
//!
//! - `GET /openapi/v2`: Swagger 2.0, as JSON, or as the gnostic protobuf (`openapi_v2.Document`)
//!   kubectl 1.20 asks for (`Accept: application/com.github.proto-openapi.spec.v2@v1.0+protobuf`)
//!   to validate manifests and to `explain` fields;
//! - `GET /openapi/v3` (the index of group versions, each with a `serverRelativeURL` carrying the
//!   document's hash) and `GET /openapi/v3/api/v1`, `/openapi/v3/apis/<group>/<version>`:
//!   OpenAPI 3.0, which newer kubectl reads to learn that the server validates (`fieldValidation`
//!   on every write operation, so `kubectl apply` sends `fieldValidation=Strict` and the server's
//!   422 names the bad field) and to `explain`.
//!
//! Definitions carry Kubernetes' names (`io.k8s.api.apps.v1.Deployment`), the
//! `x-kubernetes-group-version-kind` extension kubectl finds them by, and the list extensions
//! strategic merge patch uses. The JSON Schema of the types is translated to the OpenAPI subset:
//! `const`/`oneOf` enums become `enum`, int-or-string fields `type: string, format: int-or-string`
//! (as Kubernetes publishes them), and keywords OpenAPI 2 lacks are dropped. Namespaces, which have
//! no typed model, have no definition (kubectl then skips validating them).

use std::sync::OnceLock;

use serde_json::{Map, Value, json};
use sha2::{Digest, Sha512};

use crate::api::resource::{self, ResourceType};
use crate::api::schema::schema_for;

/// The content type of the protobuf form of `/openapi/v2`, as kube-openapi answers it (clients ask
/// for `...spec.v2@v1.0+protobuf`, which Go's media type parser cannot read back).
pub const V2_PROTOBUF: &str = "application/com.github.proto-openapi.spec.v2.v1.0+protobuf";

/// A document for `path`, given the request's `Accept` header: its content type and body.
pub fn serve(path: &str, accept: &str) -> Option<(&'static str, Vec<u8>)> {
    let path = path.strip_suffix('/').unwrap_or(path);
    if path == "/openapi/v2" {
        // kubectl 1.20 sends `...spec.v2@v1.0+protobuf`; older clients the `.v2.v1.0` spelling.
        if accept.contains("com.github.proto-openapi.spec.v2") {
            return Some((V2_PROTOBUF, v2_protobuf().clone()));
        }
        return Some(("application/json", serde_json::to_vec(v2()).unwrap_or_default()));
    }
    if path == "/openapi/v3" {
        return Some(("application/json", serde_json::to_vec(&v3_index()).unwrap_or_default()));
    }
    let gv = path.strip_prefix("/openapi/v3/")?;
    let (_, doc) = v3_documents().iter().find(|(p, _)| p == gv)?;
    Some(("application/json", serde_json::to_vec(doc).unwrap_or_default()))
}

/// Kubernetes' definition name of a kind: `io.k8s.api.core.v1.Pod`, `io.k8s.api.apps.v1.Deployment`,
/// `io.k8s.api.coordination.v1.Lease`; a group of our own reversed (`io.clusterctl.v1.MachinePool`).
pub fn definition_name(rt: &ResourceType) -> String {
    let package = match rt.group {
        "" => "io.k8s.api.core".to_string(),
        g if g.ends_with(".k8s.io") => format!("io.k8s.api.{}", g.trim_end_matches(".k8s.io")),
        g if !g.contains('.') => format!("io.k8s.api.{g}"),
        g => g.split('.').rev().collect::<Vec<_>>().join("."),
    };
    format!("{package}.{}.{}", rt.version, rt.kind)
}

/// The typed kinds, each with its definition name and its schema in OpenAPI form.
fn definitions() -> &'static [(ResourceType, String, Value)] {
    static DEFS: OnceLock<Vec<(ResourceType, String, Value)>> = OnceLock::new();
    DEFS.get_or_init(|| {
        resource::ALL
            .iter()
            .filter_map(|rt| {
                let mut schema = openapi_schema(schema_for(rt)?);
                if let Value::Object(m) = &mut schema {
                    m.insert("x-kubernetes-group-version-kind".into(), json!([{ "group": rt.group, "kind": rt.kind, "version": rt.version }]));
                }
                Some((*rt, definition_name(rt), schema))
            })
            .collect()
    })
}

/// A JSON Schema (2020-12, as schemars writes it) in the subset OpenAPI 2 and 3.0 share.
pub fn openapi_schema(schema: &Value) -> Value {
    let Value::Object(s) = schema else { return json!({}) };
    let mut out = Map::new();
    if s.get("x-kubernetes-int-or-string") == Some(&Value::Bool(true)) {
        out.insert("type".into(), json!("string"));
        out.insert("format".into(), json!("int-or-string"));
    } else {
        // An enum written as `oneOf`/`anyOf` of constants (documented variants) or as `const`.
        let alternatives = s.get("oneOf").or_else(|| s.get("anyOf")).and_then(Value::as_array);
        let constants: Option<Vec<Value>> = alternatives.map(|alts| alts.iter().map(|a| a.get("const").or_else(|| a.get("enum").and_then(|e| e.get(0))).cloned()).collect::<Option<Vec<_>>>()).unwrap_or(None);
        if let Some(values) = constants {
            out.insert("type".into(), json!("string"));
            out.insert("enum".into(), Value::Array(values));
        } else if let Some(c) = s.get("const") {
            out.insert("enum".into(), json!([c]));
        } else if let Some(alts) = alternatives {
            // Anything else of several shapes: the first that is not null (OpenAPI 2 has no unions).
            if let Some(first) = alts.iter().find(|a| a.get("type").is_none_or(|t| t != "null")) {
                return openapi_schema(first);
            }
        }
        match s.get("type") {
            Some(Value::String(t)) => {
                out.insert("type".into(), json!(t));
            }
            Some(Value::Array(types)) => {
                if let Some(t) = types.iter().find(|t| *t != "null") {
                    out.insert("type".into(), t.clone());
                }
            }
            _ => {}
        }
    }
    for (k, v) in s {
        match k.as_str() {
            "format" if !out.contains_key("format") => {
                // Kubernetes' formats; schemars' unsigned ones are plain integers there.
                if let Some(f) = v.as_str().filter(|f| !f.starts_with("uint")) {
                    out.insert(k.clone(), json!(f));
                }
            }
            "description" | "required" | "default" | "minimum" | "maximum" | "pattern" | "minItems" | "maxItems" | "minLength" | "maxLength" => {
                out.insert(k.clone(), v.clone());
            }
            "enum" if !out.contains_key("enum") => {
                out.insert(k.clone(), Value::Array(v.as_array().map(|a| a.iter().filter(|x| !x.is_null()).cloned().collect()).unwrap_or_default()));
            }
            "properties" => {
                let props: Map<String, Value> = v.as_object().map(|p| p.iter().map(|(name, sub)| (name.clone(), openapi_schema(sub))).collect()).unwrap_or_default();
                out.insert(k.clone(), Value::Object(props));
            }
            "items" => {
                out.insert(k.clone(), openapi_schema(v));
            }
            "additionalProperties" => {
                out.insert(k.clone(), if v.is_object() { openapi_schema(v) } else { v.clone() });
            }
            x if x.starts_with("x-kubernetes-") && x != "x-kubernetes-int-or-string" => {
                out.insert(k.clone(), v.clone());
            }
            _ => {}
        }
    }
    Value::Object(out)
}

/// One API path and the operations it serves (method, Kubernetes action, takes a body).
struct PathOps {
    path: String,
    rt: ResourceType,
    ops: Vec<(&'static str, &'static str, bool)>,
    /// The kind the operations answer with (a Scale for the scale subresource).
    kind: (&'static str, &'static str, &'static str),
}

fn api_paths(filter: impl Fn(&ResourceType) -> bool) -> Vec<PathOps> {
    let mut out = Vec::new();
    for rt in resource::ALL.iter().filter(|rt| filter(rt)) {
        let prefix = if rt.group.is_empty() { format!("/api/{}", rt.version) } else { format!("/apis/{}/{}", rt.group, rt.version) };
        let collection = if rt.namespaced { format!("{prefix}/namespaces/{{namespace}}/{}", rt.plural) } else { format!("{prefix}/{}", rt.plural) };
        let kind = (rt.group, rt.version, rt.kind);
        out.push(PathOps { path: collection.clone(), rt: *rt, ops: vec![("get", "list", false), ("post", "post", true)], kind });
        let object = format!("{collection}/{{name}}");
        out.push(PathOps { path: object.clone(), rt: *rt, ops: vec![("get", "get", false), ("put", "put", true), ("patch", "patch", true), ("delete", "delete", false)], kind });
        out.push(PathOps { path: format!("{object}/status"), rt: *rt, ops: vec![("get", "get", false), ("put", "put", true), ("patch", "patch", true)], kind });
        if crate::apiserver::discovery::has_scale(rt) {
            out.push(PathOps { path: format!("{object}/scale"), rt: *rt, ops: vec![("get", "get", false), ("put", "put", true), ("patch", "patch", true)], kind: ("autoscaling", "v1", "Scale") });
        }
    }
    out
}

/// The parameters of an operation: the path's, and for writes the query parameters the server
/// honours (only those: kubectl decides what to send by them).
fn parameters(path: &str, writes: bool) -> Vec<(&'static str, &'static str, &'static str)> {
    let mut params = Vec::new();
    if path.contains("{namespace}") {
        params.push(("namespace", "path", "object name and auth scope, such as for teams and projects"));
    }
    if path.contains("{name}") {
        params.push(("name", "path", "name of the object"));
    }
    if writes {
        params.push(("dryRun", "query", "when present (the only value is All), the request is admitted and validated and answered as it would be, but nothing is stored"));
        params.push(("fieldValidation", "query", "what to do with unknown fields in the request: Ignore (drop them, the default), Warn (drop them and answer with a Warning header), or Strict (refuse the request)"));
    }
    params
}

fn gvk(kind: (&str, &str, &str)) -> Value {
    json!({ "group": kind.0, "version": kind.1, "kind": kind.2 })
}

fn operation_id(method: &str, rt: &ResourceType, path: &str) -> String {
    let suffix = if path.ends_with("/status") { "Status" } else if path.ends_with("/scale") { "Scale" } else { "" };
    format!("{method}{}{}{suffix}", rt.kind, if path.ends_with("}") || !suffix.is_empty() { "" } else { "List" })
}

/// The Swagger 2.0 document.
fn v2() -> &'static Value {
    static DOC: OnceLock<Value> = OnceLock::new();
    DOC.get_or_init(|| {
        let mut paths = Map::new();
        for p in api_paths(|_| true) {
            let mut item = Map::new();
            for (method, action, body) in &p.ops {
                let params: Vec<Value> = parameters(&p.path, *body)
                    .into_iter()
                    .map(|(name, place, description)| json!({ "name": name, "in": place, "required": place == "path", "type": "string", "uniqueItems": true, "description": description }))
                    .collect();
                item.insert(
                    (*method).to_string(),
                    json!({
                        "operationId": operation_id(method, &p.rt, &p.path),
                        "consumes": if *method == "patch" { json!(crate::apiserver::patch::PatchType::ALL) } else { json!(["application/json"]) },
                        "produces": ["application/json"],
                        "parameters": params,
                        "responses": { "200": { "description": "OK" } },
                        "x-kubernetes-action": action,
                        "x-kubernetes-group-version-kind": gvk(p.kind),
                    }),
                );
            }
            paths.insert(p.path.clone(), Value::Object(item));
        }
        let definitions: Map<String, Value> = definitions().iter().map(|(_, name, schema)| (name.clone(), schema.clone())).collect();
        json!({
            "swagger": "2.0",
            "info": { "title": "Kubernetes", "version": crate::apiserver::KUBERNETES_VERSION },
            "paths": paths,
            "definitions": definitions,
        })
    })
}

/// The `/openapi/v3/...` documents, by group-version path (`api/v1`, `apis/apps/v1`).
fn v3_documents() -> &'static [(String, Value)] {
    static DOCS: OnceLock<Vec<(String, Value)>> = OnceLock::new();
    DOCS.get_or_init(|| {
        let mut gvs: Vec<(&str, &str)> = resource::ALL.iter().map(|rt| (rt.group, rt.version)).collect();
        gvs.sort();
        gvs.dedup();
        gvs.into_iter()
            .map(|(group, version)| {
                let in_gv = |rt: &ResourceType| rt.group == group && rt.version == version;
                let mut paths = Map::new();
                for p in api_paths(in_gv) {
                    let mut item = Map::new();
                    for (method, action, body) in &p.ops {
                        let params: Vec<Value> = parameters(&p.path, *body)
                            .into_iter()
                            .map(|(name, place, description)| json!({ "name": name, "in": place, "required": place == "path", "schema": { "type": "string", "uniqueItems": true }, "description": description }))
                            .collect();
                        let mut op = json!({
                            "operationId": operation_id(method, &p.rt, &p.path),
                            "parameters": params,
                            "responses": { "200": { "description": "OK" } },
                            "x-kubernetes-action": action,
                            "x-kubernetes-group-version-kind": gvk(p.kind),
                        });
                        if *body && p.kind.2 == p.rt.kind {
                            let reference = json!({ "schema": { "$ref": format!("#/components/schemas/{}", definition_name(&p.rt)) } });
                            let content: Map<String, Value> = if *method == "patch" {
                                crate::apiserver::patch::PatchType::ALL.iter().map(|t| (t.to_string(), json!({ "schema": { "type": "object" } }))).collect()
                            } else {
                                [("application/json".to_string(), reference)].into_iter().collect()
                            };
                            op["requestBody"] = json!({ "content": content, "required": true });
                        }
                        item.insert((*method).to_string(), op);
                    }
                    paths.insert(p.path.clone(), Value::Object(item));
                }
                let schemas: Map<String, Value> = definitions().iter().filter(|(rt, _, _)| in_gv(rt)).map(|(_, name, schema)| (name.clone(), schema.clone())).collect();
                let key = if group.is_empty() { format!("api/{version}") } else { format!("apis/{group}/{version}") };
                let doc = json!({
                    "openapi": "3.0.0",
                    "info": { "title": "Kubernetes", "version": crate::apiserver::KUBERNETES_VERSION },
                    "paths": paths,
                    "components": { "schemas": schemas },
                });
                (key, doc)
            })
            .collect()
    })
}

/// `/openapi/v3`: each group version's document with the hash clients cache it by.
fn v3_index() -> Value {
    let paths: Map<String, Value> = v3_documents()
        .iter()
        .map(|(gv, doc)| {
            let hash = hex::encode_upper(Sha512::digest(serde_json::to_vec(doc).unwrap_or_default()));
            (gv.clone(), json!({ "serverRelativeURL": format!("/openapi/v3/{gv}?hash={hash}") }))
        })
        .collect();
    json!({ "paths": paths })
}

// ---- the protobuf form of the v2 document (gnostic's openapiv2/OpenAPIv2.proto) ----

fn v2_protobuf() -> &'static Vec<u8> {
    static PB: OnceLock<Vec<u8>> = OnceLock::new();
    PB.get_or_init(|| document_pb(v2()))
}

/// Protobuf wire format, written by hand for the few messages of one document.
#[derive(Default)]
struct Pb(Vec<u8>);

impl Pb {
    fn varint(&mut self, mut v: u64) {
        while v >= 0x80 {
            self.0.push((v as u8) | 0x80);
            v >>= 7;
        }
        self.0.push(v as u8);
    }
    fn bytes(&mut self, field: u32, bytes: &[u8]) {
        self.varint(u64::from(field) << 3 | 2);
        self.varint(bytes.len() as u64);
        self.0.extend_from_slice(bytes);
    }
    fn string(&mut self, field: u32, s: &str) {
        if !s.is_empty() {
            self.bytes(field, s.as_bytes());
        }
    }
    fn message(&mut self, field: u32, m: Pb) {
        self.bytes(field, &m.0);
    }
    fn bool(&mut self, field: u32, b: bool) {
        if b {
            self.varint(u64::from(field) << 3);
            self.varint(1);
        }
    }
    fn double(&mut self, field: u32, d: f64) {
        self.varint(u64::from(field) << 3 | 1);
        self.0.extend_from_slice(&d.to_le_bytes());
    }
}

/// `Any { yaml = 2 }`: a value as YAML text (JSON is YAML).
fn any_pb(v: &Value) -> Pb {
    let mut a = Pb::default();
    a.string(2, &serde_json::to_string(v).unwrap_or_default());
    a
}

/// `NamedAny { name = 1; value = 2 }` for each vendor extension of `m`.
fn extensions_pb(out: &mut Pb, field: u32, m: &Map<String, Value>) {
    for (k, v) in m.iter().filter(|(k, _)| k.starts_with("x-")) {
        let mut named = Pb::default();
        named.string(1, k);
        named.message(2, any_pb(v));
        out.message(field, named);
    }
}

fn schema_pb(schema: &Value) -> Pb {
    let mut s = Pb::default();
    let Value::Object(m) = schema else { return s };
    let text = |k: &str| m.get(k).and_then(Value::as_str).unwrap_or("");
    s.string(1, text("$ref"));
    s.string(2, text("format"));
    s.string(4, text("description"));
    if let Some(d) = m.get("default") {
        s.message(5, any_pb(d));
    }
    if let Some(x) = m.get("maximum").and_then(Value::as_f64) {
        s.double(7, x);
    }
    if let Some(x) = m.get("minimum").and_then(Value::as_f64) {
        s.double(9, x);
    }
    for r in m.get("required").and_then(Value::as_array).into_iter().flatten().filter_map(Value::as_str) {
        s.string(19, r);
    }
    for e in m.get("enum").and_then(Value::as_array).into_iter().flatten() {
        s.message(20, any_pb(e));
    }
    match m.get("additionalProperties") {
        Some(Value::Bool(b)) => {
            let mut item = Pb::default();
            item.varint(2 << 3);
            item.varint(u64::from(*b));
            s.message(21, item);
        }
        Some(sub @ Value::Object(_)) => {
            let mut item = Pb::default();
            item.message(1, schema_pb(sub));
            s.message(21, item);
        }
        _ => {}
    }
    if let Some(t) = m.get("type").and_then(Value::as_str) {
        let mut item = Pb::default();
        item.string(1, t);
        s.message(22, item);
    }
    if let Some(items) = m.get("items") {
        let mut item = Pb::default();
        item.message(1, schema_pb(items));
        s.message(23, item);
    }
    if let Some(Value::Object(props)) = m.get("properties") {
        let mut properties = Pb::default();
        for (name, sub) in props {
            let mut named = Pb::default();
            named.string(1, name);
            named.message(2, schema_pb(sub));
            properties.message(1, named);
        }
        s.message(25, properties);
    }
    extensions_pb(&mut s, 31, m);
    s
}

fn operation_pb(op: &Map<String, Value>) -> Pb {
    let mut o = Pb::default();
    o.string(5, op.get("operationId").and_then(Value::as_str).unwrap_or(""));
    for list in ["produces", "consumes"] {
        let field = if list == "produces" { 6 } else { 7 };
        for t in op.get(list).and_then(Value::as_array).into_iter().flatten().filter_map(Value::as_str) {
            o.string(field, t);
        }
    }
    for p in op.get("parameters").and_then(Value::as_array).into_iter().flatten() {
        let text = |k: &str| p.get(k).and_then(Value::as_str).unwrap_or("");
        // ParametersItem.parameter(1) → Parameter.non_body_parameter(2) → NonBodyParameter's
        // path(4)/query(3) sub-schema {required 1, in 2, description 3, name 4, type 5|6}.
        let (which, type_field) = if text("in") == "path" { (4, 5) } else { (3, 6) };
        let mut sub = Pb::default();
        sub.bool(1, p.get("required").and_then(Value::as_bool).unwrap_or(false));
        sub.string(2, text("in"));
        sub.string(3, text("description"));
        sub.string(4, text("name"));
        sub.string(type_field, text("type"));
        let mut non_body = Pb::default();
        non_body.message(which, sub);
        let mut parameter = Pb::default();
        parameter.message(2, non_body);
        let mut item = Pb::default();
        item.message(1, parameter);
        o.message(8, item);
    }
    // Responses { response_code = 1: NamedResponseValue { name, ResponseValue { response = 1: Response { description = 1 } } } }
    let mut response = Pb::default();
    response.string(1, "OK");
    let mut value = Pb::default();
    value.message(1, response);
    let mut named = Pb::default();
    named.string(1, "200");
    named.message(2, value);
    let mut responses = Pb::default();
    responses.message(1, named);
    o.message(9, responses);
    extensions_pb(&mut o, 13, op);
    o
}

fn document_pb(doc: &Value) -> Vec<u8> {
    let mut d = Pb::default();
    d.string(1, "2.0");
    let mut info = Pb::default();
    info.string(1, doc["info"]["title"].as_str().unwrap_or(""));
    info.string(2, doc["info"]["version"].as_str().unwrap_or(""));
    d.message(2, info);
    let mut paths = Pb::default();
    for (path, item) in doc["paths"].as_object().into_iter().flatten() {
        let mut path_item = Pb::default();
        for (method, field) in [("get", 2), ("put", 3), ("post", 4), ("delete", 5), ("patch", 8)] {
            if let Some(Value::Object(op)) = item.get(method) {
                path_item.message(field, operation_pb(op));
            }
        }
        let mut named = Pb::default();
        named.string(1, path);
        named.message(2, path_item);
        paths.message(2, named);
    }
    d.message(8, paths);
    let mut definitions = Pb::default();
    for (name, schema) in doc["definitions"].as_object().into_iter().flatten() {
        let mut named = Pb::default();
        named.string(1, name);
        named.message(2, schema_pb(schema));
        definitions.message(1, named);
    }
    d.message(9, definitions);
    d.0
}

#[cfg(test)]
mod tests;
