//! Recording events ([`Event`]) about the objects a controller works on, as client-go's recorder
//! does: the same reason and message about the same object from the same component within ten
//! minutes raise one Event's `count` (a merge patch) instead of making a new one. Recording never
//! fails or slows the caller: the write happens in a task of its own (at most [`IN_FLIGHT`] at
//! once, more are dropped, as client-go's broadcaster drops when its queue is full), and an event
//! that cannot be written is logged and dropped.

use std::collections::HashMap;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use serde_json::json;

use super::client::Client;
use super::object::{Object, ObjectKey};
use crate::api::event::{Event, EventSource};
use crate::api::service::ObjectReference;
use crate::api::time::{MicroTime, Time};
use crate::api::ObjectMeta;

/// How long repeats of an event are counted on the same object.
const AGGREGATE_FOR: Duration = Duration::from_secs(600);
/// How many recent events are remembered for aggregation.
const REMEMBERED: usize = 4096;
/// How many event writes may be under way at once.
pub const IN_FLIGHT: usize = 256;

/// What identifies repeats: the object, the kind of event, reason and message.
type Fingerprint = (String, String, String, String, String);

/// Records events as `component` (on `host`, for a node's agent); clones share one memory of
/// recent events.
pub struct Recorder<C> {
    inner: Arc<Inner<C>>,
}

impl<C> Clone for Recorder<C> {
    fn clone(&self) -> Self {
        Recorder { inner: self.inner.clone() }
    }
}

struct Inner<C> {
    client: C,
    component: String,
    host: String,
    recent: Mutex<HashMap<Fingerprint, (ObjectKey, i32, Instant)>>,
    in_flight: AtomicUsize,
}

impl<C: Client> Recorder<C> {
    /// A recorder writing through `client`.
    pub fn new(client: C, component: &str, host: &str) -> Self {
        let inner = Inner { client, component: component.into(), host: host.into(), recent: Mutex::new(HashMap::new()), in_flight: AtomicUsize::new(0) };
        Recorder { inner: Arc::new(inner) }
    }

    /// Records that `reason` (`message`) happened to `object`; `event_type` is `Normal` or `Warning`.
    pub fn record<T: Object>(&self, object: &T, event_type: &str, reason: &str, message: impl Into<String>) {
        self.record_at(object, "", event_type, reason, message);
    }

    /// The same about one part of `object` (`spec.containers{app}`).
    pub fn record_at<T: Object>(&self, object: &T, field_path: &str, event_type: &str, reason: &str, message: impl Into<String>) {
        if self.inner.in_flight.fetch_add(1, Ordering::SeqCst) >= IN_FLIGHT {
            self.inner.in_flight.fetch_sub(1, Ordering::SeqCst);
            tracing::debug!(%reason, "dropping an event: too many being written");
            return;
        }
        let (inner, object, field_path, event_type, reason, message) = (self.inner.clone(), object.clone(), field_path.to_string(), event_type.to_string(), reason.to_string(), message.into());
        tokio::spawn(async move {
            inner.write(&object, &field_path, &event_type, &reason, message).await;
            inner.in_flight.fetch_sub(1, Ordering::SeqCst);
        });
    }
}

impl<C: Client> Inner<C> {
    async fn write<T: Object>(&self, object: &T, field_path: &str, event_type: &str, reason: &str, message: String) {
        let meta = object.meta();
        let namespace = meta.namespace.clone().filter(|n| !n.is_empty()).unwrap_or_else(|| "default".into());
        let fingerprint: Fingerprint = (meta.uid.clone(), format!("{}{field_path}", meta.name), event_type.into(), reason.into(), message.clone());
        let now = Time::now();
        let repeat = {
            let recent = self.recent.lock().unwrap_or_else(|e| e.into_inner());
            recent.get(&fingerprint).filter(|(_, _, at)| at.elapsed() < AGGREGATE_FOR).cloned()
        };
        if let Some((key, count, _)) = repeat {
            let patch = json!({ "count": count + 1, "lastTimestamp": now });
            match self.client.patch::<Event>(&key, &patch).await {
                Ok(_) => {
                    self.remember(fingerprint, key, count + 1);
                    return;
                }
                // Expired or deleted: a new one below.
                Err(e) if e.is_not_found() => {}
                Err(e) => {
                    tracing::debug!(error = %e, %reason, "raising the count of an event");
                    return;
                }
            }
        }
        let nanos = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map(|d| d.as_nanos()).unwrap_or(0);
        let event = Event {
            metadata: ObjectMeta::namespaced(&namespace, format!("{}.{nanos:x}", meta.name)),
            involved_object: ObjectReference {
                api_version: T::TYPE.api_version(),
                kind: T::TYPE.kind.into(),
                namespace: meta.namespace.clone().unwrap_or_default(),
                name: meta.name.clone(),
                uid: meta.uid.clone(),
                field_path: field_path.into(),
                ..Default::default()
            },
            reason: reason.into(),
            message,
            source: EventSource { component: self.component.clone(), host: self.host.clone(), ..Default::default() },
            first_timestamp: Some(now),
            last_timestamp: Some(now),
            count: 1,
            event_type: event_type.into(),
            event_time: Some(MicroTime::now()),
            reporting_component: self.component.clone(),
            reporting_instance: if self.host.is_empty() { self.component.clone() } else { self.host.clone() },
            ..Default::default()
        };
        match self.client.create(&event).await {
            Ok(created) => self.remember(fingerprint, ObjectKey::of(&created.metadata), 1),
            Err(e) => tracing::debug!(error = %e, %reason, "recording an event"),
        }
    }

    fn remember(&self, fingerprint: Fingerprint, key: ObjectKey, count: i32) {
        let mut recent = self.recent.lock().unwrap_or_else(|e| e.into_inner());
        if recent.len() >= REMEMBERED {
            recent.retain(|_, (_, _, at)| at.elapsed() < AGGREGATE_FOR);
            if recent.len() >= REMEMBERED {
                recent.clear();
            }
        }
        recent.insert(fingerprint, (key, count, Instant::now()));
    }
}
