//! A typed cache of one collection fed by a reflector: list, then watch from the list's revision;
//! list again when the watch ends or its revision is too old (410 Gone). Readers take snapshots.
//! Every object added, changed or removed is also sent to the store's subscribers (a controller's
//! triggers). Objects that do not decode into the type are skipped with a logged error; one that
//! stops decoding leaves the store.

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex, MutexGuard, PoisonError, Weak};
use std::time::Duration;

use futures::StreamExt;
use tokio::sync::{mpsc, watch};

use super::client::Client;
use super::object::{Object, ObjectKey, decode};
use crate::api::WatchEventType;
use crate::client::ListOptions;

/// How long the reflector waits after a failed list or watch before listing again.
const RETRY: Duration = Duration::from_secs(1);
/// How long it waits after a watch that ended normally (the server closes watches now and then).
const RELIST: Duration = Duration::from_millis(200);

struct State<T> {
    items: BTreeMap<ObjectKey, Arc<T>>,
    /// The newest revision seen (list or event).
    revision: u64,
    synced: bool,
    subscribers: Vec<mpsc::UnboundedSender<Arc<T>>>,
}

struct Shared<T> {
    state: Mutex<State<T>>,
    /// The newest revision seen, for [`Store::wait_for`]; `u64::MAX` never, 0 before the first list.
    revision: watch::Sender<u64>,
    synced: watch::Sender<bool>,
    /// The reflector task, stopped when the last handle of the store goes.
    reflector: Mutex<Option<tokio::task::AbortHandle>>,
}

impl<T> Drop for Shared<T> {
    fn drop(&mut self) {
        if let Some(task) = self.reflector.get_mut().unwrap_or_else(PoisonError::into_inner).take() {
            task.abort();
        }
    }
}

/// The cached objects of one collection; clones share it.
pub struct Store<T> {
    shared: Arc<Shared<T>>,
}

impl<T> Clone for Store<T> {
    fn clone(&self) -> Self {
        Store { shared: self.shared.clone() }
    }
}

impl<T: Object> Default for Store<T> {
    fn default() -> Self {
        Store::new()
    }
}

impl<T: Object> Store<T> {
    /// An empty store that nothing feeds (tests fill it with [`Store::apply`] and [`Store::replace_all`]).
    pub fn new() -> Self {
        let state = State { items: BTreeMap::new(), revision: 0, synced: false, subscribers: Vec::new() };
        Store {
            shared: Arc::new(Shared { state: Mutex::new(state), revision: watch::channel(0).0, synced: watch::channel(false).0, reflector: Mutex::new(None) }),
        }
    }

    /// A store of every object of `T` (in `namespace`, or all with `None`) kept by a reflector on
    /// `client` until the last handle of the store is dropped.
    pub fn reflect<C: Client>(client: C, namespace: Option<&str>, options: ListOptions) -> Self {
        let store = Store::new();
        let task = tokio::spawn(reflector(client, namespace.map(String::from), options, Arc::downgrade(&store.shared)));
        *store.shared.reflector.lock().unwrap_or_else(PoisonError::into_inner) = Some(task.abort_handle());
        store
    }

    fn lock(&self) -> MutexGuard<'_, State<T>> {
        self.shared.state.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// Every cached object, in key order.
    pub fn snapshot(&self) -> Vec<Arc<T>> {
        self.lock().items.values().cloned().collect()
    }

    /// Every cached object cloned, in key order (for functions over plain slices).
    pub fn cloned(&self) -> Vec<T> {
        self.lock().items.values().map(|o| T::clone(o)).collect()
    }

    /// The cached object of `key`.
    pub fn get(&self, key: &ObjectKey) -> Option<Arc<T>> {
        self.lock().items.get(key).cloned()
    }

    /// Every key, in order.
    pub fn keys(&self) -> Vec<ObjectKey> {
        self.lock().items.keys().cloned().collect()
    }

    /// Whether the first list has arrived.
    pub fn synced(&self) -> bool {
        self.lock().synced
    }

    /// The newest revision seen.
    pub fn revision(&self) -> u64 {
        self.lock().revision
    }

    /// Waits until the first list has arrived.
    pub async fn wait_synced(&self) {
        let mut rx = self.shared.synced.subscribe();
        let _ = rx.wait_for(|s| *s).await;
    }

    /// Waits until the store has seen `revision` (a write's own), or `deadline` passes; true if seen.
    pub async fn wait_for(&self, revision: u64, deadline: Duration) -> bool {
        let mut rx = self.shared.revision.subscribe();
        tokio::time::timeout(deadline, rx.wait_for(|seen| *seen >= revision)).await.is_ok_and(|r| r.is_ok())
    }

    /// A receiver of every object added, changed or removed from now on (removed ones as last seen).
    pub fn subscribe(&self) -> mpsc::UnboundedReceiver<Arc<T>> {
        let (tx, rx) = mpsc::unbounded_channel();
        self.lock().subscribers.push(tx);
        rx
    }

    fn publish(&self, mut state: MutexGuard<'_, State<T>>, touched: Vec<Arc<T>>) {
        state.subscribers.retain(|s| touched.iter().all(|o| s.send(o.clone()).is_ok()));
        let (revision, synced) = (state.revision, state.synced);
        drop(state);
        self.shared.revision.send_replace(revision);
        self.shared.synced.send_replace(synced);
    }

    /// Replaces the whole content with a list's objects at `revision`.
    pub fn replace_all(&self, objects: Vec<T>, revision: u64) {
        let mut state = self.lock();
        let mut next: BTreeMap<ObjectKey, Arc<T>> = objects.into_iter().map(|o| (o.key(), Arc::new(o))).collect();
        let mut touched: Vec<Arc<T>> = state.items.iter().filter(|(k, _)| !next.contains_key(*k)).map(|(_, o)| o.clone()).collect();
        touched.extend(next.values().cloned());
        std::mem::swap(&mut state.items, &mut next);
        state.revision = state.revision.max(revision);
        state.synced = true;
        self.publish(state, touched);
    }

    /// Applies one watch event: `object` added or changed, or removed (`Deleted`), at `revision`.
    pub fn apply(&self, event: WatchEventType, object: T, revision: u64) {
        let mut state = self.lock();
        let key = object.key();
        let object = Arc::new(object);
        match event {
            WatchEventType::Deleted => {
                state.items.remove(&key);
            }
            _ => {
                state.items.insert(key, object.clone());
            }
        }
        state.revision = state.revision.max(revision);
        self.publish(state, vec![object]);
    }

    /// Removes `key` (its object no longer decodes) at `revision`.
    fn remove(&self, key: &ObjectKey, revision: u64) {
        let mut state = self.lock();
        let removed = state.items.remove(key);
        state.revision = state.revision.max(revision);
        self.publish(state, removed.into_iter().collect());
    }
}

fn revision_of(object: &serde_json::Value) -> u64 {
    object.pointer("/metadata/resourceVersion").and_then(serde_json::Value::as_str).and_then(|v| v.parse().ok()).unwrap_or(0)
}

/// Lists and watches into the store until every handle of it is gone.
async fn reflector<T: Object, C: Client>(client: C, namespace: Option<String>, options: ListOptions, store: Weak<Shared<T>>) {
    let resource = T::TYPE;
    let namespace = namespace.as_deref();
    loop {
        let list = match client.list_raw(&resource, namespace, &options).await {
            Ok(list) => list,
            Err(e) => {
                tracing::warn!(error = %e, "listing {resource}; the last known copy stays");
                tokio::time::sleep(RETRY).await;
                continue;
            }
        };
        let Some(shared) = store.upgrade() else { return };
        let revision: u64 = list.metadata.resource_version.parse().unwrap_or(0);
        Store { shared }.replace_all(list.items.into_iter().filter_map(decode::<T>).collect(), revision);
        let mut events = match client.watch_raw(&resource, namespace, &list.metadata.resource_version, &options).await {
            Ok(events) => events,
            Err(e) => {
                tracing::debug!(error = %e, "watching {resource}; listing again");
                tokio::time::sleep(if e.is_gone() { RELIST } else { RETRY }).await;
                continue;
            }
        };
        while let Some(event) = events.next().await {
            let Some(shared) = store.upgrade() else { return };
            let store = Store { shared };
            match event {
                Ok(event) if event.event_type == WatchEventType::Error => break,
                Ok(event) if event.event_type == WatchEventType::Bookmark => {}
                Ok(event) => {
                    let revision = revision_of(&event.object);
                    let key = super::object::ObjectKey::of_value(&event.object);
                    match decode::<T>(event.object) {
                        Some(object) => store.apply(event.event_type, object, revision),
                        None => store.remove(&key, revision),
                    }
                }
                Err(e) => {
                    tracing::debug!(error = %e, "the watch of {resource} ended; listing again");
                    break;
                }
            }
        }
        tokio::time::sleep(RELIST).await;
    }
}
