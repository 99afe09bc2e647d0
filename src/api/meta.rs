//! What every object, list, watch event and error shares: `metadata`, list metadata, the watch event
//! envelope and the `Status` failure object.

use std::collections::BTreeMap;
use std::fmt;

use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

use super::time::Time;

/// The fields of an object (or of a part of one) that this version does not know, kept so that a
/// client that reads an object and writes it back never drops what a newer client put there.
///
/// Every typed object and each of its parts carry one as `#[serde(flatten)] pub extra`. It is not
/// part of the API's schema: the API server prunes unknown fields before it stores an object, as
/// Kubernetes does, so what lands here comes from a newer server or from a client-side document.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(transparent)]
pub struct UnknownFields(pub serde_json::Map<String, serde_json::Value>);

impl UnknownFields {
    /// No unknown field was read.
    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }
}

// Endpoint addresses and ports are sorted to compare subsets; JSON values have no order of their own,
// so unknown fields order by their canonical text (maps are sorted by key), which is total and stable.
impl PartialOrd for UnknownFields {
    fn partial_cmp(&self, other: &Self) -> Option<std::cmp::Ordering> {
        Some(self.cmp(other))
    }
}

impl Ord for UnknownFields {
    fn cmp(&self, other: &Self) -> std::cmp::Ordering {
        if self.0 == other.0 {
            return std::cmp::Ordering::Equal;
        }
        serde_json::Value::Object(self.0.clone()).to_string().cmp(&serde_json::Value::Object(other.0.clone()).to_string())
    }
}

/// The `metadata` of every object.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct ObjectMeta {
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub name: String,
    /// A prefix to which the server appends a random suffix when `name` is empty.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub generate_name: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub namespace: Option<String>,
    /// Set by the server on create, never changes.
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub uid: String,
    /// The store revision of the last write; send it back on update for optimistic concurrency.
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub resource_version: String,
    /// Bumped by the server when anything outside `metadata` and `status` changes.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub generation: Option<i64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub creation_timestamp: Option<Time>,
    /// Set by the server when a delete waits: for a pod's graceful termination (`now + grace`)
    /// or for the finalizers to be removed.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub deletion_timestamp: Option<Time>,
    /// The grace period the pending delete was given, in seconds (0 once it may go).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub deletion_grace_period_seconds: Option<i64>,
    /// What must happen before a deleted object goes: each name is removed by whoever did it.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schemars(extend("x-kubernetes-patch-strategy" = "merge", "x-kubernetes-list-type" = "set"))]
    pub finalizers: Vec<String>,
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub labels: BTreeMap<String, String>,
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub annotations: BTreeMap<String, String>,
    /// The objects this one belongs to (a pod's ReplicaSet, a ReplicaSet's Deployment).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schemars(extend("x-kubernetes-patch-merge-key" = "uid", "x-kubernetes-patch-strategy" = "merge", "x-kubernetes-list-type" = "map", "x-kubernetes-list-map-keys" = ["uid"]))]
    pub owner_references: Vec<OwnerReference>,
    #[serde(flatten)]
    #[schemars(skip)]
    pub extra: UnknownFields,
}

/// Names the object that owns another; the owner's controller manages it.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct OwnerReference {
    pub api_version: String,
    pub kind: String,
    pub name: String,
    pub uid: String,
    /// The owner is the managing controller (at most one reference has this).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub controller: Option<bool>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub block_owner_deletion: Option<bool>,
    #[serde(flatten)]
    #[schemars(skip)]
    pub extra: UnknownFields,
}

impl ObjectMeta {
    /// Metadata with just a name (cluster-scoped objects).
    pub fn named(name: impl Into<String>) -> Self {
        ObjectMeta { name: name.into(), ..Default::default() }
    }

    /// Metadata with a namespace and a name.
    pub fn namespaced(namespace: impl Into<String>, name: impl Into<String>) -> Self {
        ObjectMeta { name: name.into(), namespace: Some(namespace.into()), ..Default::default() }
    }

    /// The owner reference marked as the managing controller, if any.
    pub fn controller_owner(&self) -> Option<&OwnerReference> {
        self.owner_references.iter().find(|o| o.controller == Some(true))
    }

    /// The namespace, `default` when unset.
    pub fn namespace_or_default(&self) -> &str {
        self.namespace.as_deref().filter(|n| !n.is_empty()).unwrap_or("default")
    }

    /// The resource version as a number, if it is one.
    pub fn revision(&self) -> Option<u64> {
        self.resource_version.parse().ok()
    }
}

/// The `metadata` of a list.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct ListMeta {
    /// The store revision the list was read at: watch from here to miss nothing.
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub resource_version: String,
}

/// A list of objects, e.g. `NodeList`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct List<T> {
    #[serde(default)]
    pub api_version: String,
    #[serde(default)]
    pub kind: String,
    #[serde(default)]
    pub metadata: ListMeta,
    #[serde(default = "Vec::new")]
    pub items: Vec<T>,
}

/// What happened to an object, as a watch reports it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "UPPERCASE")]
pub enum WatchEventType {
    Added,
    Modified,
    Deleted,
    /// The watch failed; the object is a [`Status`].
    Error,
    /// Progress only (asked for with `allowWatchBookmarks`): the object carries just the
    /// `resourceVersion` the watch has reached.
    Bookmark,
}

impl fmt::Display for WatchEventType {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            WatchEventType::Added => "ADDED",
            WatchEventType::Modified => "MODIFIED",
            WatchEventType::Deleted => "DELETED",
            WatchEventType::Error => "ERROR",
            WatchEventType::Bookmark => "BOOKMARK",
        })
    }
}

/// One line of a watch stream: `{"type": "ADDED", "object": {...}}`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct WatchEvent<T> {
    #[serde(rename = "type")]
    pub event_type: WatchEventType,
    pub object: T,
}

/// Why a request failed, in Kubernetes' words.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub enum StatusReason {
    NotFound,
    AlreadyExists,
    Conflict,
    Unauthorized,
    Forbidden,
    BadRequest,
    Invalid,
    MethodNotAllowed,
    UnsupportedMediaType,
    /// HTTP 406: the response cannot be given in the media type asked for.
    NotAcceptable,
    /// The requested resource version is older than the server's history (HTTP 410).
    Expired,
    Gone,
    InternalError,
    ServiceUnavailable,
    Timeout,
    /// HTTP 429: beyond a cap; retry after `details.retryAfterSeconds`.
    TooManyRequests,
    /// A reason this version does not know.
    #[serde(other)]
    Unknown,
}

/// Which object a [`Status`] is about.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct StatusDetails {
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub name: String,
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub group: String,
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub kind: String,
    /// The fields that made a request invalid.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub causes: Vec<StatusCause>,
    /// For `TooManyRequests`: when to try again.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub retry_after_seconds: Option<i32>,
}

/// One reason a request failed, for `Invalid`: the field's path and what is wrong with it.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct StatusCause {
    /// `FieldValueInvalid`, `FieldValueRequired`, `FieldValueNotSupported`, `FieldValueTypeInvalid`, ...
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub reason: String,
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub message: String,
    /// The field's path, `spec.containers[0].image`.
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub field: String,
}

/// The failure object every error response carries (`kind: Status`).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Status {
    #[serde(default = "status_api_version")]
    pub api_version: String,
    #[serde(default = "status_kind")]
    pub kind: String,
    /// `Failure` for errors, `Success` otherwise.
    #[serde(default)]
    pub status: String,
    #[serde(default)]
    pub message: String,
    pub reason: StatusReason,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub details: Option<StatusDetails>,
    /// The HTTP status code.
    #[serde(default)]
    pub code: u16,
}

fn status_api_version() -> String {
    "v1".into()
}

fn status_kind() -> String {
    "Status".into()
}

impl Status {
    /// A failure with the given reason, HTTP code and message.
    pub fn failure(reason: StatusReason, code: u16, message: impl Into<String>) -> Self {
        Status {
            api_version: status_api_version(),
            kind: status_kind(),
            status: "Failure".into(),
            message: message.into(),
            reason,
            details: None,
            code,
        }
    }

    /// The same failure, naming the object it is about.
    pub fn with_details(mut self, details: StatusDetails) -> Self {
        self.details = Some(details);
        self
    }
}

impl fmt::Display for Status {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{} ({:?}, {})", self.message, self.reason, self.code)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn metadata_leaves_out_what_is_empty() {
        let meta = ObjectMeta::named("w1");
        assert_eq!(serde_json::to_value(&meta).unwrap(), serde_json::json!({"name": "w1"}));
    }

    #[test]
    fn status_reads_unknown_reasons() {
        let s: Status = serde_json::from_value(serde_json::json!({
            "kind": "Status", "apiVersion": "v1", "status": "Failure", "message": "m", "reason": "SomethingNew", "code": 418
        }))
        .unwrap();
        assert_eq!(s.reason, StatusReason::Unknown);
        let s = Status::failure(StatusReason::NotFound, 404, "nodes \"x\" not found");
        let v = serde_json::to_value(&s).unwrap();
        assert_eq!(v["reason"], "NotFound");
        assert_eq!(v["kind"], "Status");
    }

    #[test]
    fn watch_events_use_upper_case_types() {
        let e = WatchEvent { event_type: WatchEventType::Modified, object: 1 };
        assert_eq!(serde_json::to_string(&e).unwrap(), r#"{"type":"MODIFIED","object":1}"#);
    }
}
