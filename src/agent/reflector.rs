//! A watch-fed local copy of one collection (as client-go's reflector): list, then watch from the
//! list's revision, list again when the watch ends or fails. While the API server is unreachable
//! the last known copy stays, so the node keeps running what it last knew.

use std::collections::BTreeMap;
use std::time::Duration;

use futures::StreamExt;
use serde_json::Value;
use tokio::sync::watch;

use crate::api::WatchEventType;
use crate::api::resource::ResourceType;
use crate::client::{ApiClient, ListOptions};

/// Objects by `namespace/name`.
pub type Objects = BTreeMap<String, Value>;

/// `namespace/name` of an object.
pub fn key_of(object: &Value) -> String {
    let ns = object.pointer("/metadata/namespace").and_then(Value::as_str).unwrap_or("");
    let name = object.pointer("/metadata/name").and_then(Value::as_str).unwrap_or("");
    format!("{ns}/{name}")
}

/// Keeps `copy` equal to the collection until the receivers are all gone.
pub async fn reflect(client: ApiClient, resource: &'static ResourceType, options: ListOptions, copy: watch::Sender<Objects>) {
    let retry = Duration::from_secs(1);
    loop {
        if copy.is_closed() {
            return;
        }
        let list = match client.list::<Value>(resource, None, &options).await {
            Ok(l) => l,
            Err(e) => {
                tracing::debug!(error = %e, resource = resource.plural, "listing; keeping the last known copy");
                tokio::time::sleep(retry).await;
                continue;
            }
        };
        let objects: Objects = list.items.into_iter().map(|o| (key_of(&o), o)).collect();
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
                WatchEventType::Added | WatchEventType::Modified => {
                    copy.send_modify(|m| {
                        m.insert(key, event.object);
                    });
                }
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
