//! The work queue: keys due at a time, one entry per key (queuing a key again only moves it
//! earlier), and a key handed out is not handed out again until it is marked done; a key queued
//! meanwhile waits for that.

use std::collections::{HashMap, HashSet};
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::time::Duration;

use tokio::sync::Notify;
use tokio::time::Instant;

use super::object::ObjectKey;

#[derive(Default)]
struct Entries {
    /// Queued keys and when each is due.
    due: HashMap<ObjectKey, Instant>,
    /// Keys handed out and not yet done.
    active: HashSet<ObjectKey>,
}

/// A de-duplicating, delaying queue of keys, shared by clones.
#[derive(Clone, Default)]
pub struct WorkQueue {
    entries: Arc<Mutex<Entries>>,
    changed: Arc<Notify>,
}

impl WorkQueue {
    /// An empty queue.
    pub fn new() -> Self {
        WorkQueue::default()
    }

    fn lock(&self) -> MutexGuard<'_, Entries> {
        self.entries.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// Queues `key` now.
    pub fn add(&self, key: ObjectKey) {
        self.add_at(key, Instant::now());
    }

    /// Queues `key` after `delay` (or keeps it earlier if it is queued for sooner).
    pub fn add_after(&self, key: ObjectKey, delay: Duration) {
        self.add_at(key, Instant::now() + delay);
    }

    /// Queues `key` now unless it is queued already, for whatever time, or handed out (a resync:
    /// it must not cut short the back-off of a failing key or a requeue a reconcile asked for, nor
    /// queue again a key being reconciled).
    pub fn add_unless_queued(&self, key: ObjectKey) {
        let mut entries = self.lock();
        if entries.due.contains_key(&key) || entries.active.contains(&key) {
            return;
        }
        entries.due.insert(key, Instant::now());
        drop(entries);
        self.changed.notify_waiters();
    }

    fn add_at(&self, key: ObjectKey, at: Instant) {
        let mut entries = self.lock();
        let due = entries.due.entry(key).or_insert(at);
        *due = (*due).min(at);
        drop(entries);
        self.changed.notify_waiters();
    }

    /// How many keys are queued (handed-out ones not counted unless queued again).
    pub fn len(&self) -> usize {
        self.lock().due.len()
    }

    /// Whether no key is queued.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Waits for the earliest due key that is not handed out, and hands it out. Cancel-safe: a key
    /// is taken only in the poll that returns it.
    pub async fn next(&self) -> ObjectKey {
        loop {
            let notified = self.changed.notified();
            tokio::pin!(notified);
            notified.as_mut().enable();
            let wake_at = {
                let mut entries = self.lock();
                let now = Instant::now();
                let ready = entries.due.iter().filter(|(k, _)| !entries.active.contains(*k)).min_by_key(|(k, at)| (**at, (*k).clone())).map(|(k, at)| (k.clone(), *at));
                match ready {
                    Some((key, at)) if at <= now => {
                        entries.due.remove(&key);
                        entries.active.insert(key.clone());
                        return key;
                    }
                    Some((_, at)) => Some(at),
                    None => None,
                }
            };
            match wake_at {
                Some(at) => {
                    tokio::select! {
                        () = &mut notified => {}
                        () = tokio::time::sleep_until(at) => {}
                    }
                }
                None => notified.await,
            }
        }
    }

    /// Marks a handed-out key done, so that it can be handed out again if it was queued meanwhile.
    pub fn done(&self, key: &ObjectKey) {
        self.lock().active.remove(key);
        self.changed.notify_waiters();
    }
}
