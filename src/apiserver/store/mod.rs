//! The durable store behind the API server: a key-value map of JSON objects with one global revision
//! counter, as etcd has.
//!
//! Every write bumps the revision and records an event; an object's `resourceVersion` is the revision
//! of its last write (`mod_rev`). A watch starts after a given revision by replaying the retained
//! history of events, then follows live writes, so "list at revision N, then watch from N" misses
//! nothing.
//!
//! # Layout
//! - this file: the [`Store`] trait, its values and [`StoreError`].
//! - [`sqlite`]: the embedded implementation, [`SqliteStore`] (one master; see there why SQLite).
//! - [`etcd`]: [`EtcdStore`] on an etcd cluster (three masters, one member on each, every API server
//!   a client of all of them), and [`EtcdCluster`] for operating that cluster (members, status,
//!   snapshots).
//! - `suite` (tests only): one behaviour suite every implementation passes, run by `store_suite!`.
//! - `etcd_process` (tests only): real etcd members on loopback ports, killed when dropped.

use std::pin::Pin;

use async_trait::async_trait;
use futures::Stream;
use serde_json::Value;

pub mod etcd;
#[cfg(test)]
pub(crate) mod etcd_process;
pub mod sqlite;
#[cfg(test)]
pub(crate) mod suite;

pub use etcd::{EtcdCluster, EtcdOptions, EtcdStore, EtcdTls};
pub use sqlite::SqliteStore;

/// How many past events a store keeps for watches that start at an older revision.
pub const DEFAULT_HISTORY: u64 = 10_000;

/// One stored object and the revisions that created and last modified it.
#[derive(Debug, Clone, PartialEq)]
pub struct StoredObject {
    pub key: String,
    pub value: Value,
    /// The revision of the write that created the key.
    pub create_rev: u64,
    /// The revision of the last write to the key: the object's `resourceVersion`.
    pub mod_rev: u64,
}

/// What a write did.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum StoreEventKind {
    Created,
    Updated,
    Deleted,
}

impl StoreEventKind {
    /// The name stored in the event history.
    pub fn as_str(self) -> &'static str {
        match self {
            StoreEventKind::Created => "created",
            StoreEventKind::Updated => "updated",
            StoreEventKind::Deleted => "deleted",
        }
    }

    fn parse(text: &str) -> Option<Self> {
        match text {
            "created" => Some(StoreEventKind::Created),
            "updated" => Some(StoreEventKind::Updated),
            "deleted" => Some(StoreEventKind::Deleted),
            _ => None,
        }
    }
}

/// One committed write, as a watch sees it.
#[derive(Debug, Clone, PartialEq)]
pub struct StoreEvent {
    pub kind: StoreEventKind,
    pub key: String,
    /// The new value; for a delete, the last value before it.
    pub value: Value,
    /// The value before an update (so that a filtered watch can tell an object leaving its filter).
    pub prev_value: Option<Value>,
    /// The revision of this write.
    pub rev: u64,
}

/// A watch: committed events in revision order, until dropped or an error ends it.
pub type EventStream = Pin<Box<dyn Stream<Item = Result<StoreEvent, StoreError>> + Send>>;

/// A store operation that failed.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    #[error("{key} not found")]
    NotFound { key: String },
    #[error("{key} already exists")]
    AlreadyExists { key: String },
    #[error("{key} is at revision {actual}, not the expected {expected}")]
    Conflict { key: String, expected: u64, actual: u64 },
    #[error("revision {requested} is older than the retained history, which starts after revision {compacted}")]
    TooOld { requested: u64, compacted: u64 },
    /// A watch from a revision the store has not reached: the client's state comes from elsewhere
    /// (typically from before a backup was restored, which set the revision back) and must be re-listed.
    #[error("revision {requested} is ahead of the store's current revision {current}")]
    FutureRevision { requested: u64, current: u64 },
    #[error("the stored value of {key} is not valid JSON")]
    Corrupt {
        key: String,
        #[source]
        source: serde_json::Error,
    },
    #[error("store backend failed while {action}")]
    Backend {
        action: String,
        #[source]
        source: Box<dyn std::error::Error + Send + Sync>,
    },
}

impl StoreError {
    pub(crate) fn backend(action: impl Into<String>, source: impl std::error::Error + Send + Sync + 'static) -> Self {
        StoreError::Backend { action: action.into(), source: Box::new(source) }
    }
}

/// A durable, revisioned key-value store of JSON objects.
///
/// Writes are acknowledged only once durable. Keys are `/registry/...` paths; `list` and `watch` take a
/// prefix (ending in `/` to stay within one folder).
#[async_trait]
pub trait Store: Send + Sync {
    /// One object, or `None`.
    async fn get(&self, key: &str) -> Result<Option<StoredObject>, StoreError>;

    /// Every object under `prefix`, in key order, and the revision the list was read at.
    async fn list(&self, prefix: &str) -> Result<(Vec<StoredObject>, u64), StoreError>;

    /// Every object under `prefix` as it was at revision `rev` (a consistent snapshot, for
    /// `resourceVersionMatch=Exact` and for `continue` pages), in key order. `TooOld` when the
    /// history no longer tells that state, `FutureRevision` past the current revision.
    async fn list_at(&self, prefix: &str, rev: u64) -> Result<Vec<StoredObject>, StoreError>;

    /// Creates a key; `AlreadyExists` if it is there. Returns the new revision.
    async fn create(&self, key: &str, value: Value) -> Result<u64, StoreError>;

    /// Replaces a key's value; `NotFound` if absent, `Conflict` if `expected_rev` is given and is not
    /// the key's `mod_rev`. Returns the new revision.
    async fn update(&self, key: &str, value: Value, expected_rev: Option<u64>) -> Result<u64, StoreError>;

    /// Deletes a key, with the same precondition as `update`. Returns the last value and the revision of
    /// the delete.
    async fn delete(&self, key: &str, expected_rev: Option<u64>) -> Result<(Value, u64), StoreError>;

    /// Events under `prefix` after `from_rev` (replayed from history, then live); with `None`, live
    /// events from now on. `TooOld` if history no longer reaches back to `from_rev`, `FutureRevision`
    /// if `from_rev` is ahead of the current revision.
    async fn watch(&self, prefix: &str, from_rev: Option<u64>) -> Result<EventStream, StoreError>;

    /// The current revision; also tells that the store answers (readiness).
    async fn revision(&self) -> Result<u64, StoreError>;
}
