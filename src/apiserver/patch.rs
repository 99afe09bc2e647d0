//! The three patch formats of `PATCH`, as the Kubernetes API applies them to a stored object:
//!
//! - JSON merge patch (RFC 7386, `application/merge-patch+json`): maps merge, `null` deletes, every
//!   other value (lists included) replaces.
//! - Strategic merge patch (`application/strategic-merge-patch+json`, kubectl's default): a merge
//!   patch whose lists follow the schema's `x-kubernetes-patch-strategy`/`-merge-key` (containers and
//!   env by `name`, ports by `containerPort`, volumes by `name`, conditions by `type`): elements merge
//!   by key instead of the list being replaced, and the directives kubectl sends are honoured:
//!   `$patch: replace|delete|merge` (on a map, or as a list element), `$retainKeys`,
//!   `$setElementOrder/<list>` and `$deleteFromPrimitiveList/<list>`. A field the schema does not
//!   describe (a remainder kept for a newer client) merges as in a merge patch.
//! - JSON patch (RFC 6902, `application/json-patch+json`): `add`, `remove`, `replace`, `move`,
//!   `copy` and `test` at JSON pointers.
//!
//! Server-side apply (`application/apply-patch+yaml`) is not served: it answers 415, so kubectl
//! falls back to its client-side apply (which sends a strategic merge patch).
//!
//! A patch that is not JSON, or not of its format's shape, is a 400; one that cannot be applied to
//! the object (a JSON patch path that does not exist, a failed `test`) is a 422, as in Kubernetes.

use serde_json::{Map, Value};

/// The patch formats, by the request's media type.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PatchType {
    Merge,
    Strategic,
    Json,
}

impl PatchType {
    /// The format of a `Content-Type` (parameters ignored); `None` for one not served.
    pub fn from_content_type(content_type: &str) -> Option<Self> {
        match content_type.split(';').next().unwrap_or("").trim() {
            "application/merge-patch+json" => Some(PatchType::Merge),
            "application/strategic-merge-patch+json" => Some(PatchType::Strategic),
            "application/json-patch+json" => Some(PatchType::Json),
            _ => None,
        }
    }

    /// The media types served, for discovery and errors.
    pub const ALL: [&'static str; 3] = ["application/json-patch+json", "application/merge-patch+json", "application/strategic-merge-patch+json"];
}

/// Why a patch was refused.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum PatchError {
    /// Not of the format's shape (400).
    BadRequest(String),
    /// Well formed, but not applicable to this object (422).
    Unprocessable(String),
}

/// `patch` (already parsed from JSON) applied to `original` in format `kind`; `schema` is the
/// kind's schema (its list extensions steer a strategic merge).
pub fn apply(kind: PatchType, original: &Value, patch: &Value, schema: Option<&Value>) -> Result<Value, PatchError> {
    match kind {
        PatchType::Merge => {
            let mut out = original.clone();
            crate::apiserver::objects::merge_patch(&mut out, patch);
            Ok(out)
        }
        PatchType::Strategic => {
            let Value::Object(p) = patch else { return Err(PatchError::BadRequest("a strategic merge patch must be a JSON object".into())) };
            let Value::Object(o) = original else { return Err(PatchError::Unprocessable("the object is not a JSON object".into())) };
            Ok(merge_map(o.clone(), p, schema)?.map_or_else(|| Value::Object(Map::new()), Value::Object))
        }
        PatchType::Json => json_patch(original, patch),
    }
}

// ---- strategic merge patch ----

const PATCH: &str = "$patch";
const RETAIN_KEYS: &str = "$retainKeys";
const SET_ORDER: &str = "$setElementOrder/";
const DELETE_PRIMITIVE: &str = "$deleteFromPrimitiveList/";

/// The schema of field `key` of an object schema (a property, or the map's value schema).
fn field<'a>(schema: Option<&'a Value>, key: &str) -> Option<&'a Value> {
    let s = schema?;
    s.get("properties").and_then(|p| p.get(key)).or_else(|| s.get("additionalProperties").filter(|a| a.is_object()))
}

/// How a list field merges: `Some(merge key)` for a list of objects merged by that key, `Some("")`
/// for a list of primitives merged as a set, `None` for a list replaced whole.
fn list_merge(schema: Option<&Value>) -> Option<String> {
    let s = schema?;
    let strategy = s.get("x-kubernetes-patch-strategy").and_then(Value::as_str).unwrap_or("");
    if !strategy.split(',').any(|p| p.trim() == "merge") {
        return None;
    }
    Some(s.get("x-kubernetes-patch-merge-key").and_then(Value::as_str).unwrap_or("").to_string())
}

/// Merges patch map `patch` into `original`; `None` when the map is to be deleted (`$patch: delete`).
fn merge_map(mut original: Map<String, Value>, patch: &Map<String, Value>, schema: Option<&Value>) -> Result<Option<Map<String, Value>>, PatchError> {
    match patch.get(PATCH) {
        None => {}
        Some(Value::String(d)) if d == "merge" => {}
        Some(Value::String(d)) if d == "delete" => return Ok(None),
        Some(Value::String(d)) if d == "replace" => {
            let mut replaced = Map::new();
            for (k, v) in patch.iter().filter(|(k, _)| k.as_str() != PATCH) {
                if !v.is_null() {
                    replaced.insert(k.clone(), without_directives(v, field(schema, k))?);
                }
            }
            return Ok(Some(replaced));
        }
        Some(other) => return Err(PatchError::Unprocessable(format!("unknown patch directive {PATCH}: {other}"))),
    }
    if let Some(retain) = patch.get(RETAIN_KEYS) {
        let Value::Array(keys) = retain else { return Err(PatchError::BadRequest(format!("{RETAIN_KEYS} must be a list of field names"))) };
        let keys: Vec<&str> = keys.iter().filter_map(Value::as_str).collect();
        // Every field the patch sets must be among the kept ones, as Kubernetes checks.
        if let Some(k) = patch.keys().find(|k| !k.starts_with('$') && !patch[k.as_str()].is_null() && !keys.contains(&k.as_str())) {
            return Err(PatchError::Unprocessable(format!("the patch sets {k}, which its {RETAIN_KEYS} list does not keep")));
        }
        original.retain(|k, _| keys.contains(&k.as_str()));
    }
    for (k, v) in patch {
        if let Some(list) = k.strip_prefix(DELETE_PRIMITIVE) {
            let Value::Array(gone) = v else { return Err(PatchError::BadRequest(format!("{k} must be a list"))) };
            if let Some(Value::Array(items)) = original.get_mut(list) {
                items.retain(|i| !gone.contains(i));
            }
            continue;
        }
        if k.starts_with('$') {
            continue;
        }
        let sub = field(schema, k);
        if v.is_null() {
            original.remove(k);
            continue;
        }
        let current = original.remove(k);
        let merged = match (current, v) {
            (Some(Value::Object(o)), Value::Object(p)) => merge_map(o, p, sub)?.map(Value::Object),
            (None, Value::Object(p)) => merge_map(Map::new(), p, sub)?.map(Value::Object),
            (Some(Value::Array(o)), Value::Array(p)) => Some(Value::Array(merge_list(o, p, sub)?)),
            (None, Value::Array(p)) => Some(Value::Array(merge_list(Vec::new(), p, sub)?)),
            (_, other) => Some(other.clone()),
        };
        if let Some(value) = merged {
            original.insert(k.clone(), value);
        }
    }
    // `$setElementOrder/<list>` orders the merged list as the patch's author had it.
    for (k, order) in patch {
        if let Some(list) = k.strip_prefix(SET_ORDER) {
            let Value::Array(order) = order else { return Err(PatchError::BadRequest(format!("{k} must be a list"))) };
            let key = list_merge(field(schema, list)).unwrap_or_default();
            if let Some(Value::Array(items)) = original.get_mut(list) {
                reorder(items, order, &key);
            }
        }
    }
    Ok(Some(original))
}

/// A patch value with its directives applied to nothing (what a field new to the object becomes).
fn without_directives(v: &Value, schema: Option<&Value>) -> Result<Value, PatchError> {
    Ok(match v {
        Value::Object(p) => merge_map(Map::new(), p, schema)?.map_or(Value::Object(Map::new()), Value::Object),
        Value::Array(p) => Value::Array(merge_list(Vec::new(), p, schema)?),
        other => other.clone(),
    })
}

fn merge_list(original: Vec<Value>, patch: &[Value], schema: Option<&Value>) -> Result<Vec<Value>, PatchError> {
    let items_schema = schema.and_then(|s| s.get("items"));
    let Some(key) = list_merge(schema) else {
        // Replaced whole (its elements may still carry directives of their own maps).
        return patch.iter().map(|v| without_directives(v, items_schema)).collect();
    };
    // An element `{"$patch": "replace"}` replaces the list with the patch's other elements.
    let directive = |v: &Value| v.get(PATCH).and_then(Value::as_str).map(str::to_string);
    if patch.iter().any(|v| directive(v).as_deref() == Some("replace")) {
        return patch.iter().filter(|v| directive(v).as_deref() != Some("replace")).map(|v| without_directives(v, items_schema)).collect();
    }
    if key.is_empty() {
        // Primitives (or objects without a key): a set union, the patch's new values appended.
        let mut out = original;
        for v in patch {
            if !out.contains(v) {
                out.push(v.clone());
            }
        }
        return Ok(out);
    }
    let mut out = original;
    for element in patch {
        let Value::Object(p) = element else { return Err(PatchError::BadRequest(format!("the elements of a list merged by {key} must be objects"))) };
        let Some(id) = p.get(&key) else { return Err(PatchError::Unprocessable(format!("an element of a list merged by {key} has no {key}"))) };
        let at = out.iter().position(|o| o.get(&key) == Some(id));
        match (at, directive(element).as_deref()) {
            (Some(i), Some("delete")) => {
                out.remove(i);
            }
            (None, Some("delete")) => {}
            (Some(i), _) => {
                let Value::Object(o) = out[i].take() else { unreachable!("found by a key of an object") };
                match merge_map(o, p, items_schema)? {
                    Some(m) => out[i] = Value::Object(m),
                    None => {
                        out.remove(i);
                    }
                }
            }
            (None, _) => {
                if let Some(m) = merge_map(Map::new(), p, items_schema)? {
                    out.push(Value::Object(m));
                }
            }
        }
    }
    Ok(out)
}

/// Orders `items` as `order` lists them (by `key`, or by value for primitives); items the order
/// does not name (added by someone else) follow, in the order they had.
fn reorder(items: &mut Vec<Value>, order: &[Value], key: &str) {
    let id = |v: &Value| if key.is_empty() { Some(v.clone()) } else { v.get(key).cloned() };
    let position = |v: &Value| id(v).and_then(|i| order.iter().position(|o| id(o).as_ref() == Some(&i) || (!key.is_empty() && o == &i)));
    let (mut named, rest): (Vec<Value>, Vec<Value>) = std::mem::take(items).into_iter().partition(|v| position(v).is_some());
    named.sort_by_key(|v| position(v));
    named.extend(rest);
    *items = named;
}

// ---- JSON patch (RFC 6902) ----

fn json_patch(original: &Value, patch: &Value) -> Result<Value, PatchError> {
    let Value::Array(ops) = patch else { return Err(PatchError::BadRequest("a JSON patch must be a list of operations".into())) };
    let mut doc = original.clone();
    for (n, op) in ops.iter().enumerate() {
        let bad = |what: &str| PatchError::BadRequest(format!("operation {n} of the JSON patch: {what}"));
        let name = op.get("op").and_then(Value::as_str).ok_or_else(|| bad("no \"op\""))?;
        let path = op.get("path").and_then(Value::as_str).ok_or_else(|| bad("no \"path\""))?;
        let value = || op.get("value").cloned().ok_or_else(|| bad("no \"value\""));
        let from = || op.get("from").and_then(Value::as_str).ok_or_else(|| bad("no \"from\""));
        let failed = |e: String| PatchError::Unprocessable(format!("operation {n} of the JSON patch ({name} {path}): {e}"));
        match name {
            "add" => add(&mut doc, path, value()?).map_err(failed)?,
            "remove" => drop(remove(&mut doc, path).map_err(failed)?),
            "replace" => {
                let v = value()?;
                *pointer_mut(&mut doc, path).map_err(failed)? = v;
            }
            "move" => {
                let from = from()?;
                if path.starts_with(from) && path[from.len()..].starts_with('/') {
                    return Err(failed(format!("cannot move {from} into one of its own children")));
                }
                let v = remove(&mut doc, from).map_err(failed)?;
                add(&mut doc, path, v).map_err(failed)?;
            }
            "copy" => {
                let v = pointer_mut(&mut doc, from()?).map_err(failed)?.clone();
                add(&mut doc, path, v).map_err(failed)?;
            }
            "test" => {
                let want = value()?;
                let have = pointer_mut(&mut doc, path).map_err(failed)?;
                if *have != want {
                    return Err(failed(format!("testing value {path} failed: it is {have}, not {want}")));
                }
            }
            other => return Err(bad(&format!("unknown op {other:?}"))),
        }
    }
    Ok(doc)
}

/// The tokens of a JSON pointer (`~1` is `/`, `~0` is `~`).
fn tokens(path: &str) -> Result<Vec<String>, String> {
    if path.is_empty() {
        return Ok(Vec::new());
    }
    let Some(rest) = path.strip_prefix('/') else { return Err(format!("{path:?} is not a JSON pointer")) };
    Ok(rest.split('/').map(|t| t.replace("~1", "/").replace("~0", "~")).collect())
}

fn index(token: &str, len: usize, allow_end: bool) -> Result<usize, String> {
    if allow_end && token == "-" {
        return Ok(len);
    }
    let valid = !token.is_empty() && token.bytes().all(|b| b.is_ascii_digit()) && (token == "0" || !token.starts_with('0'));
    let i: usize = if valid { token.parse().map_err(|_| format!("{token:?} is not an index"))? } else { return Err(format!("{token:?} is not an index")) };
    if i > len || (!allow_end && i == len) {
        return Err(format!("index {i} is out of range (the list has {len})"));
    }
    Ok(i)
}

fn pointer_mut<'a>(doc: &'a mut Value, path: &str) -> Result<&'a mut Value, String> {
    let mut at = doc;
    for t in tokens(path)? {
        at = match at {
            Value::Object(m) => m.get_mut(&t).ok_or_else(|| format!("{path} does not exist"))?,
            Value::Array(a) => {
                let i = index(&t, a.len(), false)?;
                &mut a[i]
            }
            _ => return Err(format!("{path} does not exist")),
        };
    }
    Ok(at)
}

/// The container of the last token of `path`, and that token.
fn parent<'a>(doc: &'a mut Value, path: &str) -> Result<(&'a mut Value, String), String> {
    let mut t = tokens(path)?;
    let Some(last) = t.pop() else { return Err("the document itself has no parent".into()) };
    let parent_path: String = t.iter().map(|t| format!("/{}", t.replace('~', "~0").replace('/', "~1"))).collect();
    Ok((pointer_mut(doc, &parent_path)?, last))
}

fn add(doc: &mut Value, path: &str, value: Value) -> Result<(), String> {
    if path.is_empty() {
        *doc = value;
        return Ok(());
    }
    let (container, last) = parent(doc, path)?;
    match container {
        Value::Object(m) => {
            m.insert(last, value);
        }
        Value::Array(a) => {
            let i = index(&last, a.len(), true)?;
            a.insert(i, value);
        }
        _ => return Err(format!("the parent of {path} is not an object or a list")),
    }
    Ok(())
}

fn remove(doc: &mut Value, path: &str) -> Result<Value, String> {
    let (container, last) = parent(doc, path)?;
    match container {
        Value::Object(m) => m.remove(&last).ok_or_else(|| format!("{path} does not exist")),
        Value::Array(a) => {
            let i = index(&last, a.len(), false)?;
            Ok(a.remove(i))
        }
        _ => Err(format!("{path} does not exist")),
    }
}

#[cfg(test)]
mod tests;
