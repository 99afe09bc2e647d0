//! A watch-fed local copy of one collection (as client-go's reflector): list, then watch from the
//! list's revision, list again when the watch ends or fails. While the API server is unreachable
//! the last known copy stays, so a node keeps running what it last knew.
//!
//! Objects are decoded into `T` one by one: an object stored before a schema change that no longer
//! decodes is left out of the copy with a logged error naming it, and the rest of the collection
//! is still seen.

use std::collections::BTreeMap;
use std::time::Duration;

use futures::StreamExt;
use serde::de::DeserializeOwned;
use serde_json::Value;
use tokio::sync::watch;

use super::{ApiClient, ListOptions};
use crate::api::WatchEventType;
use crate::api::resource::ResourceType;

/// Objects by `namespace/name`.
pub type Objects<T> = BTreeMap<String, T>;

/// `namespace/name` of an object as the API sends it (before decoding, so that an object that does
/// not decode can still be named and removed).
pub fn key_of(object: &Value) -> String {
    let ns = object.pointer("/metadata/namespace").and_then(Value::as_str).unwrap_or("");
    let name = object.pointer("/metadata/name").and_then(Value::as_str).unwrap_or("");
    format!("{ns}/{name}")
}

/// The object decoded, or `None` (logged) when it does not decode as `T`.
fn decode<T: DeserializeOwned>(resource: &ResourceType, key: &str, object: Value) -> Option<T> {
    match serde_json::from_value(object) {
        Ok(o) => Some(o),
        Err(e) => {
            tracing::error!(resource = resource.plural, object = key, error = %e, "skipping an object that does not decode");
            None
        }
    }
}

/// Keeps `copy` equal to the collection until the receivers are all gone.
pub async fn reflect<T: DeserializeOwned + Send + Sync + 'static>(client: ApiClient, resource: &'static ResourceType, options: ListOptions, copy: watch::Sender<Objects<T>>) {
    let retry = Duration::from_secs(1);
    loop {
        if copy.is_closed() {
            return;
        }
        // Read as JSON and decoded object by object: one bad object must not hide the others.
        let list = match client.list::<Value>(resource, None, &options).await {
            Ok(l) => l,
            Err(e) => {
                tracing::debug!(error = %e, resource = resource.plural, "listing; keeping the last known copy");
                tokio::time::sleep(retry).await;
                continue;
            }
        };
        let objects: Objects<T> = list
            .items
            .into_iter()
            .filter_map(|o| {
                let key = key_of(&o);
                Some((key.clone(), decode(resource, &key, o)?))
            })
            .collect();
        copy.send_replace(objects);
        let rv = list.metadata.resource_version;
        let mut stream = match client.watch::<Value>(resource, None, Some(&rv), &options).await {
            Ok(s) => s,
            Err(e) => {
                tracing::debug!(error = %e, resource = resource.plural, "watching");
                tokio::time::sleep(retry).await;
                continue;
            }
        };
        while let Some(event) = stream.next().await {
            let Ok(event) = event else { break };
            let key = key_of(&event.object);
            match event.event_type {
                WatchEventType::Added | WatchEventType::Modified => match decode(resource, &key, event.object) {
                    Some(object) => {
                        copy.send_modify(|m| {
                            m.insert(key, object);
                        });
                    }
                    // What it was before is no longer what is stored.
                    None => {
                        copy.send_if_modified(|m| m.remove(&key).is_some());
                    }
                },
                WatchEventType::Deleted => {
                    copy.send_modify(|m| {
                        m.remove(&key);
                    });
                }
                WatchEventType::Error => break,
            }
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}
