//! `events.k8s.io/v1` Events, read-only: the core `v1` Events seen through the newer group, as
//! Kubernetes serves one set of objects in both. A `get`, `list` or `watch` under
//! `/apis/events.k8s.io/v1` is served (and authorized) as the same request on the core path, and
//! every Event in the answer is converted field by field as Kubernetes' conversion does
//! (`involvedObject` → `regarding`, `message` → `note`, `source` → `deprecatedSource`, ...).
//! Writes there answer 405: the cluster's recorders write core Events (the documented difference).

use axum::body::{Body, Bytes};
use axum::response::{IntoResponse, Response};
use futures::StreamExt;
use serde_json::{Map, Value, json};

use super::error::ApiError;

pub const GROUP: &str = "events.k8s.io";
pub const VERSION: &str = "v1";

/// The core path of an `events.k8s.io/v1` events path: `/apis/events.k8s.io/v1/namespaces/x/events`
/// is `/api/v1/namespaces/x/events`; `None` for any other path.
pub fn core_path(path: &str) -> Option<String> {
    let rest = path.strip_prefix("/apis/events.k8s.io/v1/")?;
    let segments: Vec<&str> = rest.trim_end_matches('/').split('/').collect();
    let is_events = matches!(segments.as_slice(), ["events"] | ["namespaces", _, "events"] | ["namespaces", _, "events", _]);
    is_events.then(|| format!("/api/v1/{}", segments.join("/")))
}

/// The `APIResourceList` of `/apis/events.k8s.io/v1`.
pub fn resource_list() -> Value {
    json!({
        "kind": "APIResourceList",
        "apiVersion": "v1",
        "groupVersion": format!("{GROUP}/{VERSION}"),
        "resources": [{
            "name": "events",
            "singularName": "event",
            "namespaced": true,
            "kind": "Event",
            "verbs": ["get", "list", "watch"],
            "shortNames": ["ev"],
        }],
    })
}

/// A core `v1` Event as an `events.k8s.io/v1` Event.
pub fn from_core(core: &Value) -> Value {
    let mut out = Map::new();
    out.insert("apiVersion".into(), json!(format!("{GROUP}/{VERSION}")));
    out.insert("kind".into(), json!("Event"));
    out.insert("metadata".into(), core.get("metadata").cloned().unwrap_or_else(|| json!({})));
    // Required in events.k8s.io; core Events from older recorders may lack it (then null, as
    // Kubernetes answers).
    out.insert("eventTime".into(), core.get("eventTime").cloned().unwrap_or(Value::Null));
    for (from, to) in [
        ("series", "series"),
        ("reportingComponent", "reportingController"),
        ("reportingInstance", "reportingInstance"),
        ("action", "action"),
        ("reason", "reason"),
        ("involvedObject", "regarding"),
        ("related", "related"),
        ("message", "note"),
        ("type", "type"),
        ("source", "deprecatedSource"),
        ("firstTimestamp", "deprecatedFirstTimestamp"),
        ("lastTimestamp", "deprecatedLastTimestamp"),
        ("count", "deprecatedCount"),
    ] {
        if let Some(v) = core.get(from).filter(|v| !v.is_null() && *v != "") {
            out.insert(to.into(), v.clone());
        }
    }
    Value::Object(out)
}

/// An answer of the core path converted: an Event, an EventList's items, or a watch event's
/// object; anything else (a `Status`, a `Table`) as it is.
fn convert(mut answer: Value) -> Value {
    match answer.get("kind").and_then(Value::as_str) {
        Some("Event") if answer.get("apiVersion").and_then(Value::as_str) == Some("v1") => from_core(&answer),
        Some("EventList") => {
            if let Some(items) = answer.get_mut("items").and_then(Value::as_array_mut) {
                for item in items.iter_mut() {
                    *item = from_core(item);
                }
            }
            answer["apiVersion"] = json!(format!("{GROUP}/{VERSION}"));
            answer
        }
        _ => {
            if answer.get("type").is_some()
                && let Some(object) = answer.get_mut("object")
            {
                *object = convert(object.take());
            }
            answer
        }
    }
}

/// Serves `method` on an `events.k8s.io/v1` path by `serve_core` on the core path, converted.
pub async fn serve<F>(method: &axum::http::Method, path: &str, watch: bool, serve_core: F) -> Response
where
    F: AsyncFnOnce(String) -> Response,
{
    let Some(core) = core_path(path) else { return ApiError::no_route().into_response() };
    if method != axum::http::Method::GET {
        return ApiError::method_not_allowed().into_response();
    }
    let response = serve_core(core).await;
    let (parts, body) = response.into_parts();
    if !parts.status.is_success() {
        return Response::from_parts(parts, body);
    }
    if watch {
        // One JSON document per line; a line may in principle span chunks.
        let lines = body
            .into_data_stream()
            .scan(Vec::<u8>::new(), |pending, chunk| {
                let out = match chunk {
                    Ok(bytes) => {
                        pending.extend_from_slice(&bytes);
                        let mut converted = Vec::new();
                        while let Some(end) = pending.iter().position(|b| *b == b'\n') {
                            let line: Vec<u8> = pending.drain(..=end).collect();
                            let mut text = match serde_json::from_slice::<Value>(&line) {
                                Ok(event) => serde_json::to_vec(&convert(event)).unwrap_or(line),
                                Err(_) => line,
                            };
                            if text.last() != Some(&b'\n') {
                                text.push(b'\n');
                            }
                            converted.extend_from_slice(&text);
                        }
                        Ok(Bytes::from(converted))
                    }
                    Err(e) => Err(e),
                };
                futures::future::ready(Some(out))
            })
            .filter(|chunk| futures::future::ready(!matches!(chunk, Ok(b) if b.is_empty())));
        return Response::from_parts(parts, Body::from_stream(lines));
    }
    let bytes = match axum::body::to_bytes(body, usize::MAX).await {
        Ok(b) => b,
        Err(e) => return ApiError::internal(format!("reading the events answer: {e}")).into_response(),
    };
    let converted = match serde_json::from_slice::<Value>(&bytes) {
        Ok(answer) => serde_json::to_vec(&convert(answer)).unwrap_or_else(|_| bytes.to_vec()),
        Err(_) => bytes.to_vec(),
    };
    let mut parts = parts;
    parts.headers.remove(axum::http::header::CONTENT_LENGTH);
    Response::from_parts(parts, Body::from(converted))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_event_paths_map_to_the_core_group() {
        assert_eq!(core_path("/apis/events.k8s.io/v1/events").as_deref(), Some("/api/v1/events"));
        assert_eq!(core_path("/apis/events.k8s.io/v1/namespaces/default/events").as_deref(), Some("/api/v1/namespaces/default/events"));
        assert_eq!(core_path("/apis/events.k8s.io/v1/namespaces/default/events/e1").as_deref(), Some("/api/v1/namespaces/default/events/e1"));
        assert_eq!(core_path("/apis/events.k8s.io/v1/namespaces/default/pods"), None);
        assert_eq!(core_path("/apis/events.k8s.io/v1"), None);
        assert_eq!(core_path("/api/v1/events"), None);
    }

    #[test]
    fn a_core_event_converts_as_kubernetes_converts_it() {
        let core = json!({
            "apiVersion": "v1", "kind": "Event",
            "metadata": {"name": "web.1", "namespace": "default", "resourceVersion": "7"},
            "involvedObject": {"kind": "Pod", "name": "web", "namespace": "default"},
            "reason": "Scheduled", "message": "Successfully assigned default/web to w1", "type": "Normal",
            "source": {"component": "default-scheduler"}, "reportingComponent": "default-scheduler", "reportingInstance": "",
            "firstTimestamp": "2026-12-06T00:00:00Z", "lastTimestamp": "2026-12-06T00:00:05Z", "count": 2,
        });
        let v1 = from_core(&core);
        assert_eq!(v1["apiVersion"], "events.k8s.io/v1");
        assert_eq!(v1["regarding"]["name"], "web");
        assert_eq!(v1["note"], "Successfully assigned default/web to w1");
        assert_eq!(v1["reportingController"], "default-scheduler");
        assert_eq!(v1["deprecatedSource"]["component"], "default-scheduler");
        assert_eq!((v1["deprecatedCount"].as_i64(), v1["deprecatedLastTimestamp"].as_str()), (Some(2), Some("2026-12-06T00:00:05Z")));
        assert!(v1["eventTime"].is_null() && v1.get("reportingInstance").is_none() && v1.get("message").is_none(), "{v1}");
        let list = convert(json!({"apiVersion": "v1", "kind": "EventList", "metadata": {"resourceVersion": "9"}, "items": [core.clone()]}));
        assert_eq!((list["apiVersion"].as_str(), list["items"][0]["note"].is_string()), (Some("events.k8s.io/v1"), true));
        let watched = convert(json!({"type": "ADDED", "object": core}));
        assert_eq!(watched["object"]["apiVersion"], "events.k8s.io/v1");
    }
}
