//! The REST verbs on any registered resource: get, list, create, update (PUT), patch (merge,
//! strategic merge and JSON patch, in [`super::patch`]), delete; watch is in [`super::watch`].

use std::collections::HashMap;
use std::sync::Mutex;

use axum::Json;
use axum::body::Bytes;
use axum::http::{HeaderMap, HeaderValue, Method, StatusCode, header};
use axum::response::{IntoResponse, Response};
use serde_json::{Value, json};

use super::auth::{self, Attributes, Decision, Identity, Verb};
use super::error::ApiError;
use super::objects::{self, FieldValidation, meta_str, with_revision};
use super::patch::{self, PatchError, PatchType};
use super::selectors::Selectors;
use super::store::StoreError;
use super::target::Target;
use super::view::View;
use super::{AppState, csr, noderestriction, podsecurity, scale, serviceips, table, watch};
use crate::api::resource;
use crate::api::schema::{FieldError, FieldErrorKind, schema_for};

/// How often an update without a precondition is retried when another write slips in between.
const UNCONDITIONAL_RETRIES: usize = 5;

/// Serves one request on a resource path.
pub(crate) async fn resource(
    state: AppState,
    identity: Identity,
    method: Method,
    path: &str,
    query: HashMap<String, String>,
    headers: HeaderMap,
    body: Bytes,
) -> Result<Response, ApiError> {
    let target = Target::parse(path)?;
    let dry_run = dry_run(&query)?;
    if target.subresource.as_deref() == Some("scale") {
        return scale::serve(&state, &identity, &target, &method, &headers, &body, dry_run).await;
    }
    if target.subresource.as_deref() == Some("eviction") {
        return match method {
            Method::POST => evict(&state, &identity, &target, &body, &query, dry_run).await,
            _ => Err(ApiError::method_not_allowed()),
        };
    }
    let status_sub = target.subresource.is_some();
    match (&method, &target.name) {
        (&Method::GET, Some(_)) => get(&state, &identity, &target, View::of(&headers, target.resource)?).await,
        (&Method::GET, None) => {
            let selectors = Selectors::parse(query.get("labelSelector").map(String::as_str), query.get("fieldSelector").map(String::as_str))
                .map_err(ApiError::bad_request)?;
            let view = View::of(&headers, target.resource)?;
            if query.get("watch").and_then(|w| super::target::query_bool(w)) == Some(true) {
                authorize_read(&state, &identity, &target, Verb::Watch, &selectors, view).await?;
                watch::serve(state, target, selectors, &query, view).await
            } else {
                list(&state, &identity, &target, &selectors, view, &query).await
            }
        }
        (&Method::DELETE, None) => {
            let selectors = Selectors::parse(query.get("labelSelector").map(String::as_str), query.get("fieldSelector").map(String::as_str))
                .map_err(ApiError::bad_request)?;
            delete_collection(&state, &identity, &target, &selectors, &body, &query, dry_run).await
        }
        (&Method::POST, None) => create(&state, &identity, target, &body, WriteOptions::new(&query, dry_run)?).await,
        (&Method::PUT, Some(_)) => update(&state, &identity, &target, &body, status_sub, WriteOptions::new(&query, dry_run)?).await,
        (&Method::PATCH, Some(_)) => {
            patch(&state, &identity, &target, &headers, &body, status_sub, WriteOptions::new(&query, dry_run)?).await
        }
        (&Method::DELETE, Some(_)) if !status_sub => delete(&state, &identity, &target, &body, &query, dry_run).await,
        _ => Err(ApiError::method_not_allowed()),
    }
}

/// How a create, update or patch is made: what happens to unknown fields, and whether it is stored.
#[derive(Debug, Clone, Copy)]
struct WriteOptions {
    mode: FieldValidation,
    dry_run: bool,
}

impl WriteOptions {
    fn new(query: &HashMap<String, String>, dry_run: bool) -> Result<Self, ApiError> {
        Ok(WriteOptions { mode: FieldValidation::from_query(query)?, dry_run })
    }
}

/// Whether a write is a dry run (`?dryRun=All`): it is authorized, admitted and validated as the
/// real one would be, and answered with the object it would store, but nothing is stored.
fn dry_run(query: &HashMap<String, String>) -> Result<bool, ApiError> {
    match query.get("dryRun").map(String::as_str) {
        None | Some("") => Ok(false),
        Some("All") => Ok(true),
        Some(other) => Err(ApiError::bad_request(format!("dryRun: Unsupported value: {other:?}: supported values: \"All\""))),
    }
}

/// Checks the request against the authorizer; a pod-status write by a node is checked against the
/// stored pod.
pub(super) async fn authorize(state: &AppState, identity: &Identity, target: &Target, verb: Verb, name: Option<&str>) -> Result<(), ApiError> {
    let attrs = Attributes {
        verb,
        resource: target.resource,
        subresource: target.subresource.as_deref(),
        namespace: target.namespace.as_deref(),
        name: name.or(target.name.as_deref()),
    };
    match auth::authorize(identity, &attrs) {
        Decision::Allow => Ok(()),
        Decision::Deny => Err(auth::forbidden(identity, &attrs)),
        Decision::AllowIfOwnPodsOrNetworkView(_) => Err(auth::forbidden(identity, &attrs)),
        Decision::AllowIfPodOnNode(node) => {
            let name = attrs.name.unwrap_or("");
            let stored = state.store.get(&target.key(name)).await.map_err(|e| ApiError::from_store(e, target.resource, name))?;
            let bound = stored.as_ref().and_then(|s| s.value.pointer("/spec/nodeName")).and_then(Value::as_str) == Some(node.as_str());
            if bound { Ok(()) } else { Err(auth::forbidden(identity, &attrs)) }
        }
        Decision::AllowIfReferencedOnNode(node) => {
            let (name, namespace) = (attrs.name.unwrap_or(""), attrs.namespace.unwrap_or("default"));
            let secret = *target.resource == crate::api::resource::SECRETS;
            let prefix = crate::api::resource::PODS.store_prefix(Some(namespace));
            let (pods, _) = state.store.list(&prefix).await.map_err(|e| ApiError::from_store(e, target.resource, name))?;
            let referenced = pods.iter().filter(|p| p.value.pointer("/spec/nodeName").and_then(Value::as_str) == Some(node.as_str())).any(|p| {
                let Ok(spec) = serde_json::from_value::<crate::api::pod::PodSpec>(p.value.get("spec").cloned().unwrap_or_default()) else { return false };
                let (config_maps, secrets) = spec.referenced();
                if secret { secrets.contains(name) } else { config_maps.contains(name) }
            });
            if referenced { Ok(()) } else { Err(auth::forbidden(identity, &attrs)) }
        }
    }
}

/// Checks a list or watch against the authorizer: a node reads the pods bound to it
/// (`fieldSelector=spec.nodeName=<node>`, as Kubernetes' node authorizer with selectors requires)
/// and every pod in its network view ([`View::PodNetwork`]) only.
async fn authorize_read(state: &AppState, identity: &Identity, target: &Target, verb: Verb, selectors: &Selectors, view: View) -> Result<(), ApiError> {
    let attrs = Attributes { verb, resource: target.resource, subresource: None, namespace: target.namespace.as_deref(), name: None };
    if let Decision::AllowIfOwnPodsOrNetworkView(node) = auth::authorize(identity, &attrs) {
        if view == View::PodNetwork || selectors.field_equals("spec.nodeName") == Some(node.as_str()) {
            return Ok(());
        }
        let mut refused = auth::forbidden(identity, &attrs);
        refused.0.message.push_str(&format!(": can only {verb} pods with the spec.nodeName={node} field selector, or in their network view"));
        return Err(refused);
    }
    authorize(state, identity, target, verb, None).await
}

/// `response` with one `Warning` header per unknown field dropped from the object, as Kubernetes
/// answers `fieldValidation=Warn` (`299 - "unknown field \"spec.foo\""`), and, whatever the mode,
/// one per Kubernetes field the object sets that this cluster stores but does not act on
/// ([`objects::not_acted_on`]), as Kubernetes always answers with its deprecation warnings.
fn with_warnings(mut response: Response, unknown: &[String], mode: FieldValidation, notes: &[String]) -> Response {
    let unknown = unknown.iter().filter(|_| mode == FieldValidation::Warn).map(|path| format!("unknown field {path:?}"));
    for text in unknown.chain(notes.iter().cloned()) {
        let text = text.replace('\\', "\\\\").replace('"', "\\\"");
        if let Ok(value) = HeaderValue::from_str(&format!("299 - \"{text}\"")) {
            response.headers_mut().append(header::WARNING, value);
        }
    }
    response
}

fn name_of(target: &Target) -> &str {
    target.name.as_deref().unwrap_or("")
}

async fn get(state: &AppState, identity: &Identity, target: &Target, view: View) -> Result<Response, ApiError> {
    authorize(state, identity, target, Verb::Get, None).await?;
    let name = name_of(target);
    let stored = state
        .store
        .get(&target.key(name))
        .await
        .map_err(|e| ApiError::from_store(e, target.resource, name))?
        .ok_or_else(|| ApiError::not_found(target.resource, name))?;
    let object = with_revision(stored.value, stored.mod_rev);
    if view == View::Table {
        return Ok(Json(table::table(target.resource, &[object], &stored.mod_rev.to_string())).into_response());
    }
    Ok(Json(view.shown(object)).into_response())
}

/// A list's page: `limit` objects from where `continue` left off (in key order), and the token
/// for the next page with the count left. The token holds the next key and the list's revision:
/// a continued list reads the snapshot of the first page's revision, as Kubernetes does, and
/// answers 410 once that is compacted.
struct Page {
    limit: Option<usize>,
    start: Option<String>,
    /// The revision of the list this page continues.
    rev: Option<u64>,
}

fn page_of(query: &HashMap<String, String>) -> Result<Page, ApiError> {
    let limit = match query.get("limit").filter(|l| !l.is_empty()) {
        None => None,
        Some(l) => match l.parse::<i64>() {
            Ok(n) if n > 0 => Some(n as usize),
            Ok(_) => None,
            Err(_) => return Err(ApiError::bad_request(format!("limit: {l:?} is not an integer"))),
        },
    };
    let (start, rev) = match query.get("continue").filter(|c| !c.is_empty()) {
        None => (None, None),
        Some(token) => {
            let bad = || ApiError::bad_request("continue key is not valid: the token was not made by this server");
            let raw = base64::Engine::decode(&base64::engine::general_purpose::URL_SAFE_NO_PAD, token).map_err(|_| bad())?;
            let decoded: Value = serde_json::from_slice(&raw).map_err(|_| bad())?;
            (Some(decoded.get("start").and_then(Value::as_str).ok_or_else(bad)?.to_string()), Some(decoded.get("rv").and_then(Value::as_u64).ok_or_else(bad)?))
        }
    };
    Ok(Page { limit, start, rev })
}

/// What an invalid list request is about, as Kubernetes names it (`ListOptions.meta.k8s.io`).
pub(super) const LIST_OPTIONS: resource::ResourceType = resource::ResourceType { group: "meta.k8s.io", version: "v1", plural: "listoptions", kind: "ListOptions", namespaced: false };

/// Which state of a collection a list reads.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum ListAt {
    /// The newest (no `resourceVersion`, or `0`: "any", which the newest is).
    Latest,
    /// At least this revision (`resourceVersionMatch=NotOlderThan`, or a bare `resourceVersion`).
    NotOlderThan(u64),
    /// Exactly this revision (`resourceVersionMatch=Exact`, a bare `resourceVersion` with `limit`,
    /// and every `continue` page).
    Exact(u64),
}

/// How long a list waits for the store to reach a revision it asks for before answering 504.
const WAIT_FOR_REVISION: std::time::Duration = std::time::Duration::from_secs(3);

/// `resourceVersion`, `resourceVersionMatch` and `continue`, checked as Kubernetes'
/// `ValidateListOptions` does (422 on `ListOptions`) and read as its storage does.
fn list_at(query: &HashMap<String, String>, page: &Page) -> Result<ListAt, ApiError> {
    let rv = query.get("resourceVersion").map(String::as_str).filter(|v| !v.is_empty());
    let matching = query.get("resourceVersionMatch").map(String::as_str).filter(|v| !v.is_empty());
    let invalid = |why: String| {
        ApiError::invalid_fields(&LIST_OPTIONS, "", &[FieldError { field: "resourceVersionMatch".into(), kind: FieldErrorKind::Forbidden, message: format!("Forbidden: {why}") }])
    };
    if let Some(m) = matching {
        if rv.is_none() {
            return Err(invalid("resourceVersionMatch is forbidden unless resourceVersion is provided".into()));
        }
        if page.start.is_some() {
            return Err(invalid("resourceVersionMatch is forbidden when continue is provided".into()));
        }
        if !matches!(m, "NotOlderThan" | "Exact") {
            return Err(ApiError::invalid_fields(
                &LIST_OPTIONS,
                "",
                &[FieldError { field: "resourceVersionMatch".into(), kind: FieldErrorKind::NotSupported, message: format!("Unsupported value: {m:?}: supported values: \"Exact\", \"NotOlderThan\"") }],
            ));
        }
        if m == "Exact" && rv == Some("0") {
            return Err(invalid("resourceVersionMatch \"exact\" is forbidden for resourceVersion \"0\"".into()));
        }
    }
    if let Some(rev) = page.rev {
        if rv.is_some_and(|v| v != "0") {
            return Err(ApiError::bad_request("specifying resource version is not allowed when using continue"));
        }
        return Ok(ListAt::Exact(rev));
    }
    let Some(rv) = rv.filter(|v| *v != "0") else { return Ok(ListAt::Latest) };
    let rev: u64 = rv.parse().map_err(|_| ApiError::bad_request(format!("invalid resource version: {rv:?}")))?;
    Ok(match matching {
        Some("Exact") => ListAt::Exact(rev),
        None if page.limit.is_some() => ListAt::Exact(rev),
        _ => ListAt::NotOlderThan(rev),
    })
}

/// Waits (up to [`WAIT_FOR_REVISION`]) until the store has reached `rev`; then 504 "Too large
/// resource version", as Kubernetes answers a client that has seen a newer revision elsewhere.
async fn wait_for_revision(state: &AppState, rev: u64) -> Result<(), ApiError> {
    let deadline = tokio::time::Instant::now() + WAIT_FOR_REVISION;
    loop {
        let current = state.store.revision().await.map_err(|e| ApiError::from_store(e, &LIST_OPTIONS, ""))?;
        if current >= rev {
            return Ok(());
        }
        if tokio::time::Instant::now() >= deadline {
            return Err(ApiError::too_large_resource_version(rev, current));
        }
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
    }
}

/// The objects of a list in key order and the revision they are at.
async fn read_list(state: &AppState, target: &Target, at: ListAt, continuing: bool) -> Result<(Vec<super::store::StoredObject>, u64), ApiError> {
    let from_store = |e| ApiError::from_store(e, target.resource, "");
    let (mut stored, rev) = match at {
        ListAt::Latest => state.store.list(&target.prefix()).await.map_err(from_store)?,
        ListAt::NotOlderThan(rev) => {
            wait_for_revision(state, rev).await?;
            state.store.list(&target.prefix()).await.map_err(from_store)?
        }
        ListAt::Exact(rev) => {
            wait_for_revision(state, rev).await?;
            match state.store.list_at(&target.prefix(), rev).await {
                Ok(stored) => (stored, rev),
                Err(StoreError::TooOld { .. }) if continuing => {
                    return Err(ApiError::expired(
                        "The provided continue parameter is too old to display a consistent list result. You can start a new list without the continue parameter.",
                    ));
                }
                Err(e) => return Err(from_store(e)),
            }
        }
    };
    stored.sort_by(|a, b| a.key.cmp(&b.key));
    Ok((stored, rev))
}

async fn list(state: &AppState, identity: &Identity, target: &Target, selectors: &Selectors, view: View, query: &HashMap<String, String>) -> Result<Response, ApiError> {
    authorize_read(state, identity, target, Verb::List, selectors, view).await?;
    let page = page_of(query)?;
    let at = list_at(query, &page)?;
    let (stored, rev) = read_list(state, target, at, page.start.is_some()).await?;
    let mut matching = stored.into_iter().filter(|o| page.start.as_ref().is_none_or(|s| o.key >= *s)).map(|o| (o.key, with_revision(o.value, o.mod_rev))).filter(|(_, o)| selectors.matches(o));
    let mut items = Vec::new();
    let mut next = None;
    let mut remaining = 0usize;
    for (key, object) in matching.by_ref() {
        if page.limit.is_some_and(|l| items.len() >= l) {
            next = Some(key);
            remaining = 1;
            break;
        }
        items.push(view.shown(object));
    }
    remaining += matching.count();
    let mut metadata = json!({ "resourceVersion": rev.to_string() });
    if let Some(key) = next {
        let token = serde_json::to_vec(&json!({ "start": key, "rv": rev })).unwrap_or_default();
        metadata["continue"] = json!(base64::Engine::encode(&base64::engine::general_purpose::URL_SAFE_NO_PAD, token));
        metadata["remainingItemCount"] = json!(remaining);
    }
    if view == View::Table {
        let mut table = table::table(target.resource, &items, &rev.to_string());
        if let Some(m) = table.get_mut("metadata") {
            *m = metadata;
        }
        return Ok(Json(table).into_response());
    }
    Ok(Json(json!({
        "apiVersion": target.resource.api_version(),
        "kind": target.resource.list_kind(),
        "metadata": metadata,
        "items": items,
    }))
    .into_response())
}

/// `DELETE` on a collection (`deletecollection`): every object the selectors match, each deleted
/// as a single delete with the same options would be (graceful pods, finalizers, propagation);
/// answered with a success `Status`. Namespaced kinds only within one namespace.
async fn delete_collection(state: &AppState, identity: &Identity, target: &Target, selectors: &Selectors, body: &[u8], query: &HashMap<String, String>, dry_run: bool) -> Result<Response, ApiError> {
    if target.subresource.is_some() || (target.resource.namespaced && target.namespace.is_none()) {
        return Err(ApiError::method_not_allowed());
    }
    authorize(state, identity, target, Verb::DeleteCollection, None).await?;
    let (stored, _) = state.store.list(&target.prefix()).await.map_err(|e| ApiError::from_store(e, target.resource, ""))?;
    for object in stored.into_iter().map(|o| with_revision(o.value, o.mod_rev)).filter(|o| selectors.matches(o)) {
        let Some(name) = meta_str(&object, "name").map(String::from) else { continue };
        let one = Target { name: Some(name), ..target.clone() };
        match delete(state, identity, &one, body, query, dry_run).await {
            Ok(_) => {}
            Err(e) if e.0.code == 404 => {}
            Err(e) => return Err(e),
        }
    }
    Ok(Json(json!({ "kind": "Status", "apiVersion": "v1", "metadata": {}, "status": "Success" })).into_response())
}

async fn create(state: &AppState, identity: &Identity, mut target: Target, body: &[u8], opts: WriteOptions) -> Result<Response, ApiError> {
    let WriteOptions { mode, dry_run } = opts;
    let rt = target.resource;
    let mut object = objects::parse_object(body).map_err(ApiError::bad_request)?;
    objects::check_type(rt, &mut object).map_err(ApiError::bad_request)?;
    if rt.namespaced {
        let body_ns = meta_str(&object, "namespace").filter(|ns| !ns.is_empty()).map(String::from);
        match (&target.namespace, body_ns) {
            (Some(path_ns), Some(body_ns)) if *path_ns != body_ns => {
                return Err(ApiError::bad_request(format!(
                    "the namespace of the provided object ({body_ns}) does not match the namespace sent on the request ({path_ns})"
                )));
            }
            (None, body_ns) => target.namespace = Some(body_ns.unwrap_or_else(|| "default".into())),
            _ => {}
        }
        if let Some(ns) = target.namespace.as_deref().filter(|ns| !objects::valid_namespace(ns)) {
            return Err(ApiError::bad_request(format!("{ns:?} is not a valid namespace name")));
        }
    }
    let generate = meta_str(&object, "generateName").filter(|g| !g.is_empty()).map(String::from);
    let given = meta_str(&object, "name").filter(|n| !n.is_empty()).map(String::from);
    let attempts = if given.is_none() && generate.is_some() { 5 } else { 1 };
    for attempt in 1..=attempts {
        let name = match (&given, &generate) {
            (Some(n), _) => n.clone(),
            (None, Some(prefix)) => format!("{prefix}{}", objects::name_suffix()),
            (None, None) => {
                let error = FieldError { kind: FieldErrorKind::Required, field: "metadata.name".into(), message: "Required value: name or generateName is required".into() };
                return Err(ApiError::invalid_fields(rt, "", &[error]));
            }
        };
        if !objects::valid_name(&name) {
            let message = format!("Invalid value: {name:?}: a lowercase RFC 1123 subdomain must consist of lower case alphanumeric characters, '-' or '.', and must start and end with an alphanumeric character");
            return Err(ApiError::invalid_fields(rt, &name, &[FieldError { kind: FieldErrorKind::Invalid, field: "metadata.name".into(), message }]));
        }
        if attempt == 1 {
            authorize(state, identity, &target, Verb::Create, Some(&name)).await?;
        }
        let mut candidate = object.clone();
        objects::metadata_mut(&mut candidate).insert("name".into(), json!(name));
        objects::prepare_create(&mut candidate, target.namespace.as_deref().filter(|_| rt.namespaced));
        let unknown = objects::validate(rt, &name, &mut candidate, mode)?;
        if *rt == resource::CERTIFICATE_SIGNING_REQUESTS {
            if let Some(verifier) = &state.config.join_verifier {
                csr::check_join(identity, &candidate, verifier.as_ref(), state.store.as_ref()).await?;
            }
            csr::admit(identity, &mut candidate, state.config.csr_signer.as_ref())?;
        }
        if *rt == resource::PODS {
            if let Some(seconds) = state.config.default_toleration_seconds {
                objects::default_tolerations(&mut candidate, seconds);
            }
            podsecurity::admit(state.store.as_ref(), target.namespace.as_deref().unwrap_or("default"), &name, &candidate).await?;
        }
        if *rt == resource::NAMESPACES {
            podsecurity::check_labels(&name, &candidate)?;
        }
        if *rt == resource::NODES {
            noderestriction::admit_create(identity, &candidate)?;
        }
        if *rt == resource::SERVICES {
            let namespace = target.namespace.as_deref().unwrap_or("default");
            serviceips::allocate(state.store.as_ref(), state.config.service_cidr, namespace, &name, &mut candidate, dry_run).await?;
        }
        let notes = objects::not_acted_on(rt, &candidate);
        if dry_run {
            if state.store.get(&target.key(&name)).await.map_err(|e| ApiError::from_store(e, rt, &name))?.is_some() {
                return Err(ApiError::already_exists(rt, &name));
            }
            let response = (StatusCode::CREATED, Json(candidate)).into_response();
            return Ok(with_warnings(response, &unknown, mode, &notes));
        }
        match state.store.create(&target.key(&name), candidate.clone()).await {
            Ok(rev) => {
                let response = (StatusCode::CREATED, Json(with_revision(candidate, rev))).into_response();
                return Ok(with_warnings(response, &unknown, mode, &notes));
            }
            Err(StoreError::AlreadyExists { .. }) if attempt < attempts => continue,
            Err(e) => return Err(ApiError::from_store(e, rt, &name)),
        }
    }
    Err(ApiError::internal("could not generate a free name"))
}

/// Reads the stored object, builds the new one with `build` and writes it with optimistic concurrency:
/// a `resourceVersion` in the request must match; without one the write is retried on a race.
/// Returns the written object with its new `resourceVersion`.
pub(super) async fn write_back<F>(state: &AppState, target: &Target, requested_rev: Option<u64>, dry_run: bool, build: F) -> Result<Value, ApiError>
where
    F: Fn(&Value) -> Result<Value, ApiError>,
{
    let (rt, name) = (target.resource, name_of(target));
    let key = target.key(name);
    for _ in 0..UNCONDITIONAL_RETRIES {
        let stored = state.store.get(&key).await.map_err(|e| ApiError::from_store(e, rt, name))?.ok_or_else(|| ApiError::not_found(rt, name))?;
        if requested_rev.is_some_and(|r| r != stored.mod_rev) {
            return Err(ApiError::conflict(rt, name));
        }
        let next = build(&with_revision(stored.value.clone(), stored.mod_rev))?;
        if dry_run {
            return Ok(with_revision(next, stored.mod_rev));
        }
        match state.store.update(&key, next.clone(), Some(stored.mod_rev)).await {
            Ok(rev) => {
                // The write removed the last finalizer of an object being deleted: it goes now.
                if ready_to_go(&next) {
                    match state.store.delete(&key, Some(rev)).await {
                        Ok(_) | Err(StoreError::NotFound { .. } | StoreError::Conflict { .. }) => {}
                        Err(e) => return Err(ApiError::from_store(e, rt, name)),
                    }
                }
                return Ok(with_revision(next, rev));
            }
            Err(StoreError::Conflict { .. }) if requested_rev.is_none() => continue,
            Err(e) => return Err(ApiError::from_store(e, rt, name)),
        }
    }
    Err(ApiError::conflict(rt, name))
}

fn requested_revision(object: &Value, target: &Target) -> Result<Option<u64>, ApiError> {
    match meta_str(object, "resourceVersion").filter(|v| !v.is_empty()) {
        None => Ok(None),
        Some(v) => v
            .parse()
            .map(Some)
            .map_err(|_| ApiError::invalid(target.resource, name_of(target), format!("metadata.resourceVersion: {v:?} is not a resource version"))),
    }
}

fn check_identity(object: &mut Value, target: &Target) -> Result<(), ApiError> {
    let name = name_of(target);
    match meta_str(object, "name") {
        None | Some("") => {
            objects::metadata_mut(object).insert("name".into(), json!(name));
        }
        Some(n) if n == name => {}
        Some(n) => return Err(ApiError::bad_request(format!("the name of the object ({n}) does not match the name on the URL ({name})"))),
    }
    if let (Some(path_ns), Some(body_ns)) = (target.namespace.as_deref(), meta_str(object, "namespace").filter(|n| !n.is_empty()))
        && path_ns != body_ns
    {
        return Err(ApiError::bad_request(format!(
            "the namespace of the provided object ({body_ns}) does not match the namespace sent on the request ({path_ns})"
        )));
    }
    Ok(())
}

async fn update(
    state: &AppState,
    identity: &Identity,
    target: &Target,
    body: &[u8],
    status_only: bool,
    opts: WriteOptions,
) -> Result<Response, ApiError> {
    let WriteOptions { mode, dry_run } = opts;
    authorize(state, identity, target, Verb::Update, None).await?;
    let mut incoming = objects::parse_object(body).map_err(ApiError::bad_request)?;
    objects::check_type(target.resource, &mut incoming).map_err(ApiError::bad_request)?;
    check_identity(&mut incoming, target)?;
    let requested = requested_revision(&incoming, target)?;
    let unknown = Mutex::new(Vec::new());
    let written = write_back(state, target, requested, dry_run, |stored| {
        let next = objects::merge_update(stored, incoming.clone(), status_only);
        validated(identity, target, stored, next, mode, &unknown)
    })
    .await?;
    let unknown = unknown.into_inner().unwrap_or_default();
    let notes = if status_only { Vec::new() } else { objects::not_acted_on(target.resource, &written) };
    Ok(with_warnings(Json(written).into_response(), &unknown, mode, &notes))
}

/// The object an update or patch is about to write, validated; the unknown fields it dropped are left
/// in `unknown` (the last attempt's, when a race made `write_back` build it again).
fn validated(identity: &Identity, target: &Target, stored: &Value, mut next: Value, mode: FieldValidation, unknown: &Mutex<Vec<String>>) -> Result<Value, ApiError> {
    if *target.resource == resource::SERVICES {
        serviceips::keep_allocated(stored, &mut next);
    }
    let dropped = objects::validate(target.resource, name_of(target), &mut next, mode)?;
    if *target.resource == resource::NAMESPACES {
        podsecurity::check_labels(name_of(target), &next)?;
    }
    if *target.resource == resource::NODES {
        noderestriction::admit_update(identity, stored, &next)?;
    }
    let mut changed = objects::immutable_changes(target.resource, stored, &next);
    if *target.resource == resource::SERVICES {
        changed.extend(serviceips::immutable_changes(stored, &next));
    }
    if !changed.is_empty() {
        return Err(ApiError::invalid_fields(target.resource, name_of(target), &changed));
    }
    if let Ok(mut slot) = unknown.lock() {
        *slot = dropped;
    }
    Ok(next)
}

async fn patch(
    state: &AppState,
    identity: &Identity,
    target: &Target,
    headers: &HeaderMap,
    body: &[u8],
    status_only: bool,
    opts: WriteOptions,
) -> Result<Response, ApiError> {
    let WriteOptions { mode, dry_run } = opts;
    let content_type = headers.get(header::CONTENT_TYPE).and_then(|v| v.to_str().ok()).unwrap_or("");
    let Some(kind) = PatchType::from_content_type(content_type) else { return Err(ApiError::unsupported_media_type(content_type)) };
    authorize(state, identity, target, Verb::Patch, None).await?;
    let patch: Value = serde_json::from_slice(body).map_err(|e| ApiError::bad_request(format!("the patch is not valid JSON: {e}")))?;
    // A merge patch may carry `metadata.resourceVersion` as a precondition; a JSON patch states
    // its own (`test`), and one that changes the version is refused as Kubernetes does.
    let requested = if kind == PatchType::Json { None } else { requested_revision(&patch, target)? };
    let unknown = Mutex::new(Vec::new());
    let written = write_back(state, target, requested, dry_run, |stored| {
        let mut patched = patch_object(kind, stored, &patch, target)?;
        check_identity(&mut patched, target)?;
        validated(identity, target, stored, objects::merge_update(stored, patched, status_only), mode, &unknown)
    })
    .await?;
    let unknown = unknown.into_inner().unwrap_or_default();
    let notes = if status_only { Vec::new() } else { objects::not_acted_on(target.resource, &written) };
    Ok(with_warnings(Json(written).into_response(), &unknown, mode, &notes))
}

/// `patch` applied to `stored` (which carries its `resourceVersion`); the patch's own errors as
/// Kubernetes answers them (400 for a malformed patch, 422 for one that does not apply, 409 for
/// a JSON patch that changes the version).
pub(super) fn patch_object(kind: PatchType, stored: &Value, patch: &Value, target: &Target) -> Result<Value, ApiError> {
    let (rt, name) = (target.resource, name_of(target));
    let patched = patch::apply(kind, stored, patch, schema_for(rt)).map_err(|e| patch_error(e, target))?;
    if kind == PatchType::Json && meta_str(&patched, "resourceVersion") != meta_str(stored, "resourceVersion") {
        return Err(ApiError::conflict(rt, name));
    }
    Ok(patched)
}

/// A patch's error as the API answers it: 400 when malformed, 422 `Invalid` when it does not apply.
pub(super) fn patch_error(e: PatchError, target: &Target) -> ApiError {
    match e {
        PatchError::BadRequest(m) => ApiError::bad_request(m),
        PatchError::Unprocessable(m) => ApiError::invalid(target.resource, name_of(target), m),
    }
}

/// How a delete treats the objects that name the deleted one as an owner
/// (`DeleteOptions.propagationPolicy`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Propagation {
    /// The dependents are deleted afterwards, by the controllers' garbage collection.
    Background,
    /// The dependents are deleted before the owner: it is kept, marked, with the
    /// `foregroundDeletion` finalizer until they are gone.
    Foreground,
    /// The dependents stay, with their owner reference to the deleted object removed.
    Orphan,
}

/// The finalizer a `Foreground` delete adds; its garbage collector removes it.
pub const FOREGROUND_DELETION: &str = "foregroundDeletion";

/// A delete's options, from its body (`DeleteOptions`) and query.
struct DeleteOptions {
    /// `preconditions.resourceVersion`.
    expected_rev: Option<u64>,
    /// `preconditions.uid`.
    expected_uid: Option<String>,
    propagation: Propagation,
    /// `gracePeriodSeconds`: for a pod, instead of its `terminationGracePeriodSeconds`.
    grace: Option<i64>,
}

fn delete_options(body: &[u8], query: &HashMap<String, String>) -> Result<DeleteOptions, ApiError> {
    let options: Value = if body.iter().all(u8::is_ascii_whitespace) {
        Value::Null
    } else {
        serde_json::from_slice(body).map_err(|e| ApiError::bad_request(format!("the delete options are not valid JSON: {e}")))?
    };
    let expected_rev = match options.pointer("/preconditions/resourceVersion").and_then(Value::as_str) {
        Some(v) => Some(v.parse::<u64>().map_err(|_| ApiError::bad_request(format!("{v:?} is not a resource version")))?),
        None => None,
    };
    let expected_uid = options.pointer("/preconditions/uid").and_then(Value::as_str).map(String::from);
    let grace = match (options.get("gracePeriodSeconds"), query.get("gracePeriodSeconds")) {
        (Some(v), _) if !v.is_null() => Some(v.as_i64().ok_or_else(|| ApiError::bad_request(format!("gracePeriodSeconds: {v} is not an integer")))?),
        (_, Some(q)) => Some(q.parse::<i64>().map_err(|_| ApiError::bad_request(format!("gracePeriodSeconds: {q:?} is not an integer")))?),
        _ => None,
    };
    let policy = options.get("propagationPolicy").and_then(Value::as_str).map(String::from).or_else(|| query.get("propagationPolicy").cloned());
    let orphan = options.get("orphanDependents").and_then(Value::as_bool).or_else(|| query.get("orphanDependents").and_then(|v| super::target::query_bool(v)));
    let propagation = match (policy.as_deref(), orphan) {
        (Some(_), Some(_)) => return Err(ApiError::bad_request("propagationPolicy: Invalid value: both propagationPolicy and orphanDependents are set")),
        (Some("Orphan"), None) | (None, Some(true)) => Propagation::Orphan,
        (Some("Foreground"), None) => Propagation::Foreground,
        (Some("Background"), None) | (None, Some(false) | None) => Propagation::Background,
        (Some(other), None) => {
            return Err(ApiError::bad_request(format!("propagationPolicy: Unsupported value: {other:?}: supported values: \"Foreground\", \"Background\", \"Orphan\"")));
        }
    };
    Ok(DeleteOptions { expected_rev, expected_uid, propagation, grace })
}

/// The seconds a pod is given to stop when deleted: the request's, else its
/// `terminationGracePeriodSeconds` (30 when unset); 0 for a pod no node runs (unbound, or
/// finished), which goes at once, as Kubernetes' pod strategy decides.
fn pod_grace(pod: &Value, requested: Option<i64>) -> i64 {
    let unbound = pod.pointer("/spec/nodeName").and_then(Value::as_str).is_none_or(str::is_empty);
    let finished = matches!(pod.pointer("/status/phase").and_then(Value::as_str), Some("Succeeded" | "Failed"));
    if unbound || finished {
        return 0;
    }
    requested.unwrap_or_else(|| pod.pointer("/spec/terminationGracePeriodSeconds").and_then(Value::as_i64).unwrap_or(30)).max(0)
}

fn finalizers_of(object: &Value) -> Vec<String> {
    object.pointer("/metadata/finalizers").and_then(Value::as_array).map(|f| f.iter().filter_map(Value::as_str).map(String::from).collect()).unwrap_or_default()
}

/// Whether a written object is done with its delete: marked, no finalizer left, no grace left.
fn ready_to_go(object: &Value) -> bool {
    object.pointer("/metadata/deletionTimestamp").is_some_and(|t| !t.is_null())
        && finalizers_of(object).is_empty()
        && object.pointer("/metadata/deletionGracePeriodSeconds").and_then(Value::as_i64).unwrap_or(0) == 0
}

/// Removes the owner reference to `owner_uid` from every object of the owner's namespace (or,
/// for a cluster-scoped owner, every cluster-scoped object) that has one, so that garbage
/// collection leaves them alone (`propagationPolicy: Orphan`).
async fn orphan_dependents(state: &AppState, target: &Target, owner_uid: &str) -> Result<(), ApiError> {
    let namespaced = target.resource.namespaced;
    for rt in resource::ALL.iter().filter(|r| r.namespaced == namespaced) {
        let (objects, _) = state.store.list(&rt.store_prefix(target.namespace.as_deref())).await.map_err(|e| ApiError::from_store(e, rt, ""))?;
        for object in objects {
            let owned = |v: &Value| v.pointer("/metadata/ownerReferences").and_then(Value::as_array).is_some_and(|refs| refs.iter().any(|r| r["uid"] == owner_uid));
            if !owned(&object.value) {
                continue;
            }
            let (mut value, mut rev) = (object.value, object.mod_rev);
            for _ in 0..UNCONDITIONAL_RETRIES {
                if let Some(refs) = value.pointer_mut("/metadata/ownerReferences").and_then(Value::as_array_mut) {
                    refs.retain(|r| r["uid"] != owner_uid);
                    if refs.is_empty() {
                        value["metadata"].as_object_mut().map(|m| m.remove("ownerReferences"));
                    }
                }
                match state.store.update(&object.key, value.clone(), Some(rev)).await {
                    Ok(_) => break,
                    Err(super::store::StoreError::Conflict { .. }) => match state.store.get(&object.key).await.map_err(|e| ApiError::from_store(e, rt, ""))? {
                        Some(fresh) if owned(&fresh.value) => (value, rev) = (fresh.value, fresh.mod_rev),
                        _ => break,
                    },
                    Err(super::store::StoreError::NotFound { .. }) => break,
                    Err(e) => return Err(ApiError::from_store(e, rt, "")),
                }
            }
        }
    }
    Ok(())
}

/// `DELETE`: at once, or, for a pod a node runs (its grace period) and for an object with
/// finalizers, marked with `deletionTimestamp` and answered 202, to go when the node's agent has
/// stopped it (its delete with grace 0) and the last finalizer is removed. A second delete may
/// only shorten a pod's grace.
async fn delete(state: &AppState, identity: &Identity, target: &Target, body: &[u8], query: &HashMap<String, String>, dry_run: bool) -> Result<Response, ApiError> {
    authorize(state, identity, target, Verb::Delete, None).await?;
    let options = delete_options(body, query)?;
    delete_object(state, target, &options, dry_run).await
}

/// `POST .../pods/{name}/eviction` (`policy/v1` `Eviction`, as `kubectl drain` sends it): the pod
/// is deleted with the eviction's `deleteOptions`, authorized as `create pods/eviction`, and
/// answered 201 with a `Success` status. There are no PodDisruptionBudgets here, so no eviction
/// is refused with 429 for one (the documented difference).
async fn evict(state: &AppState, identity: &Identity, target: &Target, body: &[u8], query: &HashMap<String, String>, dry_run: bool) -> Result<Response, ApiError> {
    authorize(state, identity, target, Verb::Create, None).await?;
    let eviction: Value = serde_json::from_slice(body).map_err(|e| ApiError::bad_request(format!("the eviction is not JSON: {e}")))?;
    let kind_ok = eviction.get("kind").and_then(Value::as_str) == Some("Eviction")
        && matches!(eviction.get("apiVersion").and_then(Value::as_str), Some("policy/v1" | "policy/v1beta1"));
    if !kind_ok {
        return Err(ApiError::bad_request("the body must be a policy/v1 Eviction"));
    }
    let name = name_of(target);
    let named = eviction.pointer("/metadata/name").and_then(Value::as_str).unwrap_or("");
    if named != name {
        return Err(ApiError::bad_request(format!("name in URL does not match name in Eviction object: {name:?} is not {named:?}")));
    }
    let options_body = match eviction.get("deleteOptions") {
        Some(o) if !o.is_null() => serde_json::to_vec(o).unwrap_or_default(),
        _ => Vec::new(),
    };
    let options = delete_options(&options_body, query)?;
    let pod = Target { subresource: None, ..target.clone() };
    delete_object(state, &pod, &options, dry_run).await?;
    let status = json!({ "kind": "Status", "apiVersion": "v1", "metadata": {}, "status": "Success", "code": 201 });
    Ok((StatusCode::CREATED, Json(status)).into_response())
}

/// Deletes (or marks for deletion) one object, the request already authorized.
async fn delete_object(state: &AppState, target: &Target, options: &DeleteOptions, dry_run: bool) -> Result<Response, ApiError> {
    let (rt, name) = (target.resource, name_of(target));
    let key = target.key(name);
    for _ in 0..UNCONDITIONAL_RETRIES {
        let stored = state.store.get(&key).await.map_err(|e| ApiError::from_store(e, rt, name))?.ok_or_else(|| ApiError::not_found(rt, name))?;
        if options.expected_rev.is_some_and(|e| e != stored.mod_rev) {
            return Err(ApiError::conflict(rt, name));
        }
        let uid = stored.value.pointer("/metadata/uid").and_then(Value::as_str).unwrap_or("").to_string();
        if let Some(expected) = options.expected_uid.as_deref().filter(|e| *e != uid) {
            return Err(ApiError::conflict_because(rt, name, format!("Precondition failed: UID in precondition: {expected}, UID in object meta: {uid}")));
        }
        if dry_run {
            return Ok(Json(with_revision(stored.value, stored.mod_rev)).into_response());
        }
        let marked = stored.value.pointer("/metadata/deletionTimestamp").is_some_and(|t| !t.is_null());
        if options.propagation == Propagation::Orphan && !marked && !uid.is_empty() {
            orphan_dependents(state, target, &uid).await?;
        }
        let grace = if rt.kind == "Pod" { pod_grace(&stored.value, options.grace) } else { 0 };
        let current = stored.value.pointer("/metadata/deletionGracePeriodSeconds").and_then(Value::as_i64);
        let grace = current.map_or(grace, |c| grace.min(c));
        // Foreground: the object stays, marked, until its garbage collector (the deployment
        // controller, for Deployments and ReplicaSets, the kinds with dependents) has deleted its
        // dependents; other kinds have none to wait for.
        let mut finalizers = finalizers_of(&stored.value);
        let collected = matches!(rt.kind, "Deployment" | "ReplicaSet");
        let added = options.propagation == Propagation::Foreground && collected && !marked && !finalizers.iter().any(|f| f == FOREGROUND_DELETION);
        if added {
            finalizers.push(FOREGROUND_DELETION.into());
        }
        if grace == 0 && finalizers.is_empty() {
            match state.store.delete(&key, Some(stored.mod_rev)).await {
                Ok((old, rev)) => {
                    if *rt == resource::NODES {
                        // The node's certificates go with it; a failure here is reported, the
                        // Node stays deleted (a repeated delete is 404 and cannot retry it).
                        super::revocation::revoke_node(state.store.as_ref(), name).await.map_err(|e| ApiError::from_store(e, rt, name))?;
                        state.revocations.forget(&format!("{}{name}", super::auth::NODE_USER_PREFIX));
                    }
                    return Ok(Json(with_revision(old, rev)).into_response());
                }
                Err(StoreError::Conflict { .. }) if options.expected_rev.is_none() => continue,
                Err(e) => return Err(ApiError::from_store(e, rt, name)),
            }
        }
        if marked && current == Some(grace) && !added {
            return Ok((StatusCode::ACCEPTED, Json(with_revision(stored.value, stored.mod_rev))).into_response());
        }
        let mut next = stored.value.clone();
        let meta = objects::metadata_mut(&mut next);
        if added {
            meta.insert("finalizers".into(), json!(finalizers));
        }
        let at = crate::api::Time::from_unix_seconds(crate::api::Time::now().unix_seconds() + grace);
        meta.insert("deletionTimestamp".into(), json!(at));
        meta.insert("deletionGracePeriodSeconds".into(), json!(grace));
        match state.store.update(&key, next.clone(), Some(stored.mod_rev)).await {
            Ok(rev) => return Ok((StatusCode::ACCEPTED, Json(with_revision(next, rev))).into_response()),
            Err(StoreError::Conflict { .. }) if options.expected_rev.is_none() => continue,
            Err(e) => return Err(ApiError::from_store(e, rt, name)),
        }
    }
    Err(ApiError::conflict(rt, name))
}
