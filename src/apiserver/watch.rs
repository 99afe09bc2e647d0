//! `?watch=true`: a chunked `application/json` response with one `{"type": .., "object": ..}` per line.
//!
//! Without `resourceVersion` (or with `0`) the stream starts with an `ADDED` event for every current
//! object, read at one revision, then continues from that revision (list and watch in one). With
//! `resourceVersion=N` it carries every change after N; if N is older than the store's history the
//! stream holds one `ERROR` event with a 410 `Expired` status, as Kubernetes does; so does an N ahead
//! of the store's revision (as after a restore from backup), so that the client re-lists. With
//! selectors, an object that starts matching arrives as `ADDED` and one that stops matching as
//! `DELETED`. The stream ends after `timeoutSeconds` if given, when the server shuts down, or when
//! the client goes away. A client that asks for Tables (`kubectl get -w`) gets each object as a
//! one-row Table.
//!
//! With `allowWatchBookmarks=true` a `BOOKMARK` event (an object of the kind with only
//! `metadata.resourceVersion`) comes every [`BOOKMARK_EVERY`], carrying the last revision this watch
//! has passed, so that a client resuming from it does not replay what it saw. `sendInitialEvents=true`
//! (with `resourceVersionMatch=NotOlderThan`, as client-go's watch-list asks it) starts with `ADDED`
//! for every current object whatever the `resourceVersion`, and marks their end with a bookmark
//! annotated `k8s.io/initial-events-end: "true"`.

use std::collections::HashMap;
use std::convert::Infallible;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use axum::body::{Body, Bytes};
use axum::http::header;
use axum::response::{IntoResponse, Response};
use futures::{StreamExt, future, stream};
use serde_json::{Value, json};

use super::AppState;
use super::error::ApiError;
use super::objects::with_revision;
use super::selectors::Selectors;
use super::store::{StoreError, StoreEvent, StoreEventKind};
use super::target::Target;
use super::view::View;
use crate::api::resource::ResourceType;
use crate::api::schema::{FieldError, FieldErrorKind};
use crate::api::{Status, WatchEventType};

fn line(event_type: WatchEventType, object: &impl serde::Serialize) -> Bytes {
    let mut text = serde_json::to_vec(&json!({ "type": event_type, "object": object })).unwrap_or_default();
    text.push(b'\n');
    Bytes::from(text)
}

/// How often a watch that allows bookmarks gets one.
pub(crate) const BOOKMARK_EVERY: Duration = Duration::from_secs(5);

/// The annotation of the bookmark that ends the initial events of `sendInitialEvents`.
const INITIAL_EVENTS_END: &str = "k8s.io/initial-events-end";

fn bookmark_line(rt: &ResourceType, rev: u64, initial_end: bool) -> Bytes {
    let mut metadata = json!({ "resourceVersion": rev.to_string() });
    if initial_end {
        metadata["annotations"] = json!({ INITIAL_EVENTS_END: "true" });
    }
    line(WatchEventType::Bookmark, &json!({ "kind": rt.kind, "apiVersion": rt.api_version(), "metadata": metadata }))
}

fn error_line(status: &Status) -> Bytes {
    line(WatchEventType::Error, status)
}

/// The watch event a store event becomes for a watcher with `selectors`, if any.
fn to_watch_event(event: StoreEvent, selectors: &Selectors) -> Option<(WatchEventType, Value)> {
    let object = with_revision(event.value, event.rev);
    let now = selectors.matches(&object);
    let event_type = match event.kind {
        StoreEventKind::Created => now.then_some(WatchEventType::Added)?,
        StoreEventKind::Deleted => now.then_some(WatchEventType::Deleted)?,
        StoreEventKind::Updated => {
            let before = event.prev_value.as_ref().is_none_or(|p| selectors.matches(p));
            match (before, now) {
                (true, true) => WatchEventType::Modified,
                (false, true) => WatchEventType::Added,
                (true, false) => WatchEventType::Deleted,
                (false, false) => return None,
            }
        }
    };
    Some((event_type, object))
}

/// The object as the watcher wants it: in its view, or a one-row Table of it.
fn shown(rt: &ResourceType, view: View, object: Value) -> Value {
    if view != View::Table {
        return view.shown(object);
    }
    let rv = object.pointer("/metadata/resourceVersion").and_then(Value::as_str).unwrap_or("").to_string();
    super::table::table(rt, &[object], &rv)
}

fn streaming(body: Body) -> Response {
    ([(header::CONTENT_TYPE, "application/json"), (header::CACHE_CONTROL, "no-cache, private")], body).into_response()
}

/// Starts a watch on `target`'s collection.
pub(crate) async fn serve(state: AppState, target: Target, selectors: Selectors, query: &HashMap<String, String>, view: View) -> Result<Response, ApiError> {
    let rt = target.resource;
    let prefix = target.prefix();
    let timeout = match query.get("timeoutSeconds") {
        Some(t) => Some(Duration::from_secs(t.parse().map_err(|_| ApiError::bad_request(format!("timeoutSeconds {t:?} is not a number")))?)),
        None => None,
    };
    let flag = |name: &str| query.get(name).and_then(|v| super::target::query_bool(v)) == Some(true);
    let bookmarks = flag("allowWatchBookmarks") && view != View::Table;
    let send_initial = flag("sendInitialEvents");
    let matching = query.get("resourceVersionMatch").map(String::as_str).filter(|m| !m.is_empty());
    let forbidden = |field: &str, why: &str| {
        let error = FieldError { field: field.into(), kind: FieldErrorKind::Forbidden, message: format!("Forbidden: {why}") };
        ApiError::invalid_fields(&super::handlers::LIST_OPTIONS, "", &[error])
    };
    if send_initial && matching != Some("NotOlderThan") {
        return Err(forbidden("sendInitialEvents", "sendInitialEvents is forbidden unless resourceVersionMatch is \"NotOlderThan\""));
    }
    if matching.is_some() && !send_initial {
        return Err(forbidden("resourceVersionMatch", "resourceVersionMatch is forbidden for watch unless sendInitialEvents is provided"));
    }
    let from = match query.get("resourceVersion").map(String::as_str) {
        None | Some("" | "0") => None,
        Some(v) => Some(v.parse::<u64>().map_err(|_| ApiError::bad_request(format!("resourceVersion {v:?} is not a resource version")))?),
    };

    let mut initial = Vec::new();
    let start = match from.filter(|_| !send_initial) {
        Some(rev) => rev,
        None => {
            let (items, rev) = state.store.list(&prefix).await.map_err(|e| ApiError::from_store(e, rt, ""))?;
            for item in items {
                let object = with_revision(item.value, item.mod_rev);
                if selectors.matches(&object) {
                    initial.push(line(WatchEventType::Added, &shown(rt, view, object)));
                }
            }
            if send_initial {
                initial.push(bookmark_line(rt, rev, true));
            }
            rev
        }
    };
    let events = match state.store.watch(&prefix, Some(start)).await {
        Ok(events) => events,
        Err(e @ (StoreError::TooOld { .. } | StoreError::FutureRevision { .. })) => {
            let status = ApiError::from_store(e, rt, "").0;
            let body = Body::from_stream(stream::once(future::ready(Ok::<_, Infallible>(error_line(&status)))));
            return Ok(streaming(body));
        }
        Err(e) => return Err(ApiError::from_store(e, rt, "")),
    };

    // The revision this watch has passed: every event up to it has been sent (or filtered out).
    let passed = Arc::new(AtomicU64::new(start));
    let seen = passed.clone();
    let live = events
        .scan(false, move |failed, item| {
            if *failed {
                return future::ready(None);
            }
            let out = match item {
                Ok(event) => {
                    seen.fetch_max(event.rev, Ordering::AcqRel);
                    to_watch_event(event, &selectors).map(|(t, o)| line(t, &shown(rt, view, o)))
                }
                Err(e) => {
                    *failed = true;
                    Some(error_line(&ApiError::from_store(e, rt, "").0))
                }
            };
            future::ready(Some(out))
        })
        .filter_map(future::ready);
    let mut stopping = state.stopping.clone();
    let stop = async move {
        let shutdown = async {
            let _ = stopping.wait_for(|s| *s).await;
        };
        match timeout {
            Some(t) => {
                tokio::select! {
                    () = shutdown => {}
                    () = tokio::time::sleep(t) => {}
                }
            }
            None => shutdown.await,
        }
    };
    let ticks = if bookmarks {
        let mut every = tokio::time::interval_at(tokio::time::Instant::now() + BOOKMARK_EVERY, BOOKMARK_EVERY);
        stream::poll_fn(move |cx| every.poll_tick(cx).map(|_| Some(bookmark_line(rt, passed.load(Ordering::Acquire), false)))).boxed()
    } else {
        stream::pending().boxed()
    };
    // The watch ends when its events do (an error), whatever the bookmarks.
    let live = live.map(Some).chain(stream::once(future::ready(None)));
    let merged = stream::select(live, ticks.map(Some)).take_while(|line| future::ready(line.is_some())).filter_map(future::ready);
    let lines = stream::iter(initial).chain(merged).take_until(Box::pin(stop)).map(Ok::<_, Infallible>);
    Ok(streaming(Body::from_stream(lines)))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn event(kind: StoreEventKind, value: Value, prev: Option<Value>) -> StoreEvent {
        StoreEvent { kind, key: "/k".into(), value, prev_value: prev, rev: 7 }
    }

    #[test]
    fn objects_entering_and_leaving_a_selector_are_added_and_deleted() {
        let sel = Selectors::parse(None, Some("spec.nodeName=w1")).unwrap();
        let unbound = json!({"metadata": {"name": "p"}, "spec": {}});
        let bound = json!({"metadata": {"name": "p"}, "spec": {"nodeName": "w1"}});
        let (t, o) = to_watch_event(event(StoreEventKind::Updated, bound.clone(), Some(unbound.clone())), &sel).unwrap();
        assert_eq!(t, WatchEventType::Added);
        assert_eq!(o["metadata"]["resourceVersion"], "7");
        let (t, _) = to_watch_event(event(StoreEventKind::Updated, unbound.clone(), Some(bound.clone())), &sel).unwrap();
        assert_eq!(t, WatchEventType::Deleted);
        assert!(to_watch_event(event(StoreEventKind::Created, unbound, None), &sel).is_none());
        let (t, _) = to_watch_event(event(StoreEventKind::Updated, bound.clone(), Some(bound)), &Selectors::default()).unwrap();
        assert_eq!(t, WatchEventType::Modified);
    }
}
