//! A watch-fed cache of one resource, shared by the scheduler and the controllers: lists, then
//! watches from the list's revision, re-listing when the watch ends or is too old. Readers take
//! snapshots; a [`Notify`] wakes the owner on every change.

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex, Weak};
use std::time::Duration;

use futures::StreamExt;
use serde::de::DeserializeOwned;
use tokio::sync::Notify;

use crate::api::deployment::{Deployment, ReplicaSet};
use crate::api::pod::Pod;
use crate::api::resource::ResourceType;
use crate::api::service::{Endpoints, Service};
use crate::api::{Node, ObjectMeta, WatchEventType};
use crate::client::{ApiClient, ListOptions};

/// An object with metadata, so that the cache can key it.
pub trait Keyed {
    /// The object's metadata.
    fn meta(&self) -> &ObjectMeta;

    /// `namespace/name` (or `name` when cluster-scoped).
    fn key(&self) -> String {
        let m = self.meta();
        match m.namespace.as_deref().filter(|n| !n.is_empty()) {
            Some(ns) => format!("{ns}/{}", m.name),
            None => m.name.clone(),
        }
    }
}

macro_rules! keyed {
    ($($t:ty),*) => { $(impl Keyed for $t { fn meta(&self) -> &ObjectMeta { &self.metadata } })* };
}
keyed!(Pod, Node, Deployment, ReplicaSet, Service, Endpoints);

struct Inner<T> {
    items: BTreeMap<String, T>,
    /// The newest revision seen (list or event).
    revision: u64,
    synced: bool,
}

/// The cached objects of one resource.
pub struct Cache<T> {
    inner: Mutex<Inner<T>>,
    changed: Arc<Notify>,
}

impl<T: Clone> Cache<T> {
    /// An empty, unsynced cache that wakes `changed` on every change.
    pub fn new(changed: Arc<Notify>) -> Self {
        Cache { inner: Mutex::new(Inner { items: BTreeMap::new(), revision: 0, synced: false }), changed }
    }

    /// Every cached object, in key order.
    pub fn snapshot(&self) -> Vec<T> {
        self.lock().items.values().cloned().collect()
    }

    /// Whether the first list has arrived.
    pub fn synced(&self) -> bool {
        self.lock().synced
    }

    /// The newest revision seen.
    pub fn revision(&self) -> u64 {
        self.lock().revision
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Inner<T>> {
        self.inner.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    /// Waits (polling) until the cache has seen `revision`, or `deadline` passes; true if seen.
    pub async fn wait_for(&self, revision: u64, deadline: Duration) -> bool {
        let until = tokio::time::Instant::now() + deadline;
        while self.revision() < revision {
            if tokio::time::Instant::now() >= until {
                return false;
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        true
    }
}

impl<T: Keyed + Clone + DeserializeOwned + Send + 'static> Cache<T> {
    /// Starts a cache of `resource` (all namespaces) fed by a background list+watch.
    pub fn spawn(client: ApiClient, resource: ResourceType, changed: Arc<Notify>) -> Arc<Self> {
        let cache = Arc::new(Cache::new(changed));
        tokio::spawn(reflect(client, resource, Arc::downgrade(&cache)));
        cache
    }

    fn replace_all(&self, items: Vec<T>, revision: u64) {
        let mut inner = self.lock();
        inner.items = items.into_iter().map(|i| (i.key(), i)).collect();
        inner.revision = inner.revision.max(revision);
        inner.synced = true;
        drop(inner);
        self.changed.notify_one();
    }

    fn apply(&self, event: WatchEventType, object: T) {
        let mut inner = self.lock();
        let rev = object.meta().revision().unwrap_or(0);
        match event {
            WatchEventType::Deleted => {
                inner.items.remove(&object.key());
            }
            _ => {
                inner.items.insert(object.key(), object);
            }
        }
        inner.revision = inner.revision.max(rev);
        drop(inner);
        self.changed.notify_one();
    }
}

/// Lists and watches forever.
/// Lists and watches into the cache until every other holder of the cache has dropped it (a
/// controller whose leadership ended).
async fn reflect<T: Keyed + Clone + DeserializeOwned + Send + 'static>(client: ApiClient, resource: ResourceType, cache: Weak<Cache<T>>) {
    loop {
        if cache.strong_count() == 0 {
            return;
        }
        match client.list::<T>(&resource, None, &ListOptions::default()).await {
            Ok(list) => {
                let rev: u64 = list.metadata.resource_version.parse().unwrap_or(0);
                let Some(c) = cache.upgrade() else { return };
                c.replace_all(list.items, rev);
                drop(c);
                match client.watch::<T>(&resource, None, Some(&list.metadata.resource_version), &ListOptions::default()).await {
                    Ok(mut events) => {
                        while let Some(event) = events.next().await {
                            let Some(c) = cache.upgrade() else { return };
                            match event {
                                Ok(e) => c.apply(e.event_type, e.object),
                                Err(e) => {
                                    tracing::debug!(error = %e, "watch of {resource} ended");
                                    break;
                                }
                            }
                        }
                    }
                    Err(e) => tracing::warn!(error = %e, "watching {resource}"),
                }
            }
            Err(e) => tracing::warn!(error = %e, "listing {resource}"),
        }
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
}
