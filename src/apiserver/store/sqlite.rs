//! The embedded store: one SQLite file through rusqlite, in WAL mode with `synchronous=FULL`.
//!
//! Why SQLite: the whole state is one file that any tool can open; it is the most tested embedded
//! database there is; and with `synchronous=FULL` every commit is fsynced (the WAL frame reaches the
//! disk) before `COMMIT` returns, so a write this store has acknowledged survives `kill -9` of the
//! master and also a crash of the machine. (A killed process alone would not lose a committed WAL
//! frame even without fsync, because it already sits in the kernel's page cache; `FULL` is what keeps
//! it across power loss.) WAL lets readers run beside the single writer, and a writer costs one fsync.
//!
//! Schema (`PRAGMA user_version = 1`):
//! - `objects(key TEXT PRIMARY KEY, value TEXT, create_rev INTEGER, mod_rev INTEGER)`: current state;
//! - `events(rev INTEGER PRIMARY KEY, key TEXT, type TEXT, value TEXT, prev_value TEXT)`: the last
//!   `history` writes, replayed to watches that start at an older revision;
//! - `meta(name TEXT PRIMARY KEY, value INTEGER)`: `revision` (the global counter) and `compacted`
//!   (history holds every event after it).
//!
//! Every write is one `BEGIN IMMEDIATE` transaction that bumps the revision, writes the object and its
//! event, trims the history and commits; only then is the event broadcast to live watches. The
//! connection sits behind a `std::sync::Mutex`, taken only inside `spawn_blocking`, and the broadcast
//! happens while it is held, so live events go out in revision order and a new watch can subscribe
//! and read history without a write slipping between the two.

use std::path::Path;
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};

use async_trait::async_trait;
use rusqlite::{Connection, OptionalExtension, TransactionBehavior, params};
use serde_json::Value;
use tokio::sync::{broadcast, mpsc};
use tokio_stream::wrappers::ReceiverStream;

use super::{DEFAULT_HISTORY, EventStream, Store, StoreError, StoreEvent, StoreEventKind, StoredObject};

/// How many live events a slow watch may fall behind before it catches up from the history table.
const LIVE_BUFFER: usize = 1024;
/// How many events a watch stream buffers for its consumer.
const WATCH_BUFFER: usize = 64;

/// The embedded, durable store (see the module docs for the schema and the durability argument).
#[derive(Clone)]
pub struct SqliteStore {
    inner: Arc<Inner>,
}

struct Inner {
    conn: Mutex<Connection>,
    live: broadcast::Sender<Arc<StoreEvent>>,
    history: u64,
}

fn db_err(action: &str) -> impl FnOnce(rusqlite::Error) -> StoreError + '_ {
    move |e| StoreError::backend(action, e)
}

impl SqliteStore {
    /// Opens (or creates) the store file at `path`, keeping the default history.
    pub fn open(path: impl AsRef<Path>) -> Result<Self, StoreError> {
        Self::open_with_history(path, DEFAULT_HISTORY)
    }

    /// Opens (or creates) the store file at `path`, keeping the last `history` events for watches.
    pub fn open_with_history(path: impl AsRef<Path>, history: u64) -> Result<Self, StoreError> {
        let path = path.as_ref();
        let conn = Connection::open(path).map_err(|e| StoreError::backend(format!("opening {}", path.display()), e))?;
        let mode: String = conn
            .query_row("PRAGMA journal_mode=WAL", [], |r| r.get(0))
            .map_err(db_err("switching to write-ahead logging"))?;
        if !mode.eq_ignore_ascii_case("wal") {
            return Err(StoreError::backend(
                format!("switching {} to write-ahead logging", path.display()),
                std::io::Error::other(format!("journal mode stayed {mode}")),
            ));
        }
        Self::init(conn, history)
    }

    /// A store in memory, for tests.
    pub fn in_memory() -> Result<Self, StoreError> {
        Self::in_memory_with_history(DEFAULT_HISTORY)
    }

    /// A store in memory that keeps only `history` events, for tests of compaction.
    pub fn in_memory_with_history(history: u64) -> Result<Self, StoreError> {
        let conn = Connection::open_in_memory().map_err(db_err("opening an in-memory database"))?;
        Self::init(conn, history)
    }

    fn init(conn: Connection, history: u64) -> Result<Self, StoreError> {
        conn.execute_batch(
            "PRAGMA synchronous=FULL;
             PRAGMA busy_timeout=5000;
             CREATE TABLE IF NOT EXISTS objects (
                 key TEXT PRIMARY KEY NOT NULL,
                 value TEXT NOT NULL,
                 create_rev INTEGER NOT NULL,
                 mod_rev INTEGER NOT NULL
             );
             CREATE TABLE IF NOT EXISTS events (
                 rev INTEGER PRIMARY KEY NOT NULL,
                 key TEXT NOT NULL,
                 type TEXT NOT NULL,
                 value TEXT NOT NULL,
                 prev_value TEXT
             );
             CREATE TABLE IF NOT EXISTS meta (
                 name TEXT PRIMARY KEY NOT NULL,
                 value INTEGER NOT NULL
             );
             INSERT OR IGNORE INTO meta (name, value) VALUES ('revision', 0), ('compacted', 0);
             PRAGMA user_version = 1;",
        )
        .map_err(db_err("creating the schema"))?;
        let (live, _) = broadcast::channel(LIVE_BUFFER);
        Ok(SqliteStore { inner: Arc::new(Inner { conn: Mutex::new(conn), live, history: history.max(1) }) })
    }

    /// Runs `f` on a blocking thread with the store.
    async fn run<T, F>(&self, f: F) -> Result<T, StoreError>
    where
        T: Send + 'static,
        F: FnOnce(&Inner) -> Result<T, StoreError> + Send + 'static,
    {
        let inner = self.inner.clone();
        tokio::task::spawn_blocking(move || f(&inner)).await.map_err(|e| StoreError::backend("running a store task", e))?
    }
}

fn parse_value(key: &str, text: &str) -> Result<Value, StoreError> {
    serde_json::from_str(text).map_err(|source| StoreError::Corrupt { key: key.to_string(), source })
}

fn to_rev(v: i64) -> u64 {
    v.max(0) as u64
}

fn to_sql(rev: u64) -> i64 {
    rev.min(i64::MAX as u64) as i64
}

/// The smallest string greater than every string starting with `prefix`, if there is a simple one.
fn prefix_end(prefix: &str) -> Option<String> {
    let mut bytes = prefix.as_bytes().to_vec();
    while let Some(last) = bytes.pop() {
        if last < 0x7f {
            bytes.push(last + 1);
            return String::from_utf8(bytes).ok();
        }
    }
    None
}

fn meta(conn: &Connection, name: &str) -> Result<u64, StoreError> {
    conn.query_row("SELECT value FROM meta WHERE name = ?1", [name], |r| r.get::<_, i64>(0))
        .map(to_rev)
        .map_err(db_err("reading the revision"))
}

impl Inner {
    fn lock(&self) -> MutexGuard<'_, Connection> {
        // A panic inside a transaction rolled it back when the transaction dropped; the connection is fine.
        self.conn.lock().unwrap_or_else(PoisonError::into_inner)
    }

    fn get(&self, key: &str) -> Result<Option<StoredObject>, StoreError> {
        let conn = self.lock();
        let row = conn
            .query_row("SELECT value, create_rev, mod_rev FROM objects WHERE key = ?1", [key], |r| {
                Ok((r.get::<_, String>(0)?, r.get::<_, i64>(1)?, r.get::<_, i64>(2)?))
            })
            .optional()
            .map_err(db_err("reading an object"))?;
        row.map(|(text, create_rev, mod_rev)| {
            Ok(StoredObject { key: key.to_string(), value: parse_value(key, &text)?, create_rev: to_rev(create_rev), mod_rev: to_rev(mod_rev) })
        })
        .transpose()
    }

    fn list(&self, prefix: &str) -> Result<(Vec<StoredObject>, u64), StoreError> {
        let mut conn = self.lock();
        let tx = conn.transaction().map_err(db_err("starting a read"))?;
        let rev = meta(&tx, "revision")?;
        let end = prefix_end(prefix);
        let mut stmt = tx
            .prepare("SELECT key, value, create_rev, mod_rev FROM objects WHERE key >= ?1 AND (?2 IS NULL OR key < ?2) ORDER BY key")
            .map_err(db_err("listing objects"))?;
        let rows = stmt
            .query_map(params![prefix, end], |r| {
                Ok((r.get::<_, String>(0)?, r.get::<_, String>(1)?, r.get::<_, i64>(2)?, r.get::<_, i64>(3)?))
            })
            .map_err(db_err("listing objects"))?;
        let mut items = Vec::new();
        for row in rows {
            let (key, text, create_rev, mod_rev) = row.map_err(db_err("listing objects"))?;
            if key.starts_with(prefix) {
                let value = parse_value(&key, &text)?;
                items.push(StoredObject { key, value, create_rev: to_rev(create_rev), mod_rev: to_rev(mod_rev) });
            }
        }
        Ok((items, rev))
    }

    /// The objects under `prefix` at `rev`: today's, with every change after `rev` undone from
    /// the history (the first change of a key after `rev` holds its value then). The revisions a
    /// key had at `rev` come from the history too (its creation also from today's object when that
    /// is the same one); a key last written before the history begins and changed since cannot be
    /// told, which is `TooOld` as a compacted revision is.
    fn list_at(&self, prefix: &str, rev: u64) -> Result<Vec<StoredObject>, StoreError> {
        let mut conn = self.lock();
        let tx = conn.transaction().map_err(db_err("starting a read"))?;
        let (current, compacted) = (meta(&tx, "revision")?, meta(&tx, "compacted")?);
        if rev > current {
            return Err(StoreError::FutureRevision { requested: rev, current });
        }
        if rev < compacted {
            return Err(StoreError::TooOld { requested: rev, compacted });
        }
        let end = prefix_end(prefix);
        let mut objects: std::collections::BTreeMap<String, StoredObject> = std::collections::BTreeMap::new();
        {
            let mut stmt = tx
                .prepare("SELECT key, value, create_rev, mod_rev FROM objects WHERE key >= ?1 AND (?2 IS NULL OR key < ?2) AND mod_rev <= ?3")
                .map_err(db_err("listing objects"))?;
            let rows = stmt
                .query_map(params![prefix, end, to_sql(rev)], |r| Ok((r.get::<_, String>(0)?, r.get::<_, String>(1)?, r.get::<_, i64>(2)?, r.get::<_, i64>(3)?)))
                .map_err(db_err("listing objects"))?;
            for row in rows {
                let (key, text, create_rev, mod_rev) = row.map_err(db_err("listing objects"))?;
                if key.starts_with(prefix) {
                    let value = parse_value(&key, &text)?;
                    objects.insert(key.clone(), StoredObject { key, value, create_rev: to_rev(create_rev), mod_rev: to_rev(mod_rev) });
                }
            }
        }
        // Keys changed after `rev`: the first change says what the key held at `rev`.
        let mut stmt = tx
            .prepare(
                "SELECT e.key, e.type, e.value, e.prev_value,
                        (SELECT MAX(b.rev) FROM events b WHERE b.key = e.key AND b.rev <= ?1),
                        (SELECT MAX(c.rev) FROM events c WHERE c.key = e.key AND c.rev <= ?1 AND c.type = 'created'),
                        (SELECT o.create_rev FROM objects o WHERE o.key = e.key AND o.create_rev <= ?1)
                 FROM events e
                 WHERE e.rev = (SELECT MIN(f.rev) FROM events f WHERE f.key = e.key AND f.rev > ?1)
                   AND e.key >= ?2 AND (?3 IS NULL OR e.key < ?3)",
            )
            .map_err(db_err("reading the event history"))?;
        let rows = stmt
            .query_map(params![to_sql(rev), prefix, end], |r| {
                let created = r.get::<_, Option<i64>>(5)?.or(r.get::<_, Option<i64>>(6)?);
                Ok((r.get::<_, String>(0)?, r.get::<_, String>(1)?, r.get::<_, String>(2)?, r.get::<_, Option<String>>(3)?, r.get::<_, Option<i64>>(4)?, created))
            })
            .map_err(db_err("reading the event history"))?;
        for row in rows {
            let (key, kind, value, prev, mod_rev, create_rev) = row.map_err(db_err("reading the event history"))?;
            if !key.starts_with(prefix) {
                continue;
            }
            let held = match StoreEventKind::parse(&kind) {
                Some(StoreEventKind::Created) => None,
                Some(StoreEventKind::Updated) => prev,
                Some(StoreEventKind::Deleted) => Some(value),
                None => return Err(StoreError::backend("reading the event history", std::io::Error::other(format!("unknown event type {kind:?}")))),
            };
            let Some(text) = held else { continue };
            let (Some(mod_rev), Some(create_rev)) = (mod_rev, create_rev) else {
                return Err(StoreError::TooOld { requested: rev, compacted });
            };
            let value = parse_value(&key, &text)?;
            objects.insert(key.clone(), StoredObject { key, value, create_rev: to_rev(create_rev), mod_rev: to_rev(mod_rev) });
        }
        Ok(objects.into_values().collect())
    }

    /// Applies one write in one transaction, commits, then broadcasts its event.
    fn write(&self, kind: StoreEventKind, key: &str, value: Option<&Value>, expected_rev: Option<u64>) -> Result<(u64, Option<Value>), StoreError> {
        let mut conn = self.lock();
        let tx = conn.transaction_with_behavior(TransactionBehavior::Immediate).map_err(db_err("starting a write"))?;
        let existing = tx
            .query_row("SELECT value, mod_rev FROM objects WHERE key = ?1", [key], |r| Ok((r.get::<_, String>(0)?, r.get::<_, i64>(1)?)))
            .optional()
            .map_err(db_err("reading an object before writing it"))?;
        match (&existing, kind) {
            (Some(_), StoreEventKind::Created) => return Err(StoreError::AlreadyExists { key: key.into() }),
            (None, StoreEventKind::Updated | StoreEventKind::Deleted) => return Err(StoreError::NotFound { key: key.into() }),
            _ => {}
        }
        if let (Some(expected), Some((_, actual))) = (expected_rev, &existing)
            && to_rev(*actual) != expected
        {
            return Err(StoreError::Conflict { key: key.into(), expected, actual: to_rev(*actual) });
        }
        let rev = meta(&tx, "revision")? + 1;
        let new_text = value.map(Value::to_string);
        let old_text = existing.map(|(text, _)| text);
        match kind {
            StoreEventKind::Created => tx.execute(
                "INSERT INTO objects (key, value, create_rev, mod_rev) VALUES (?1, ?2, ?3, ?3)",
                params![key, new_text, to_sql(rev)],
            ),
            StoreEventKind::Updated => {
                tx.execute("UPDATE objects SET value = ?2, mod_rev = ?3 WHERE key = ?1", params![key, new_text, to_sql(rev)])
            }
            StoreEventKind::Deleted => tx.execute("DELETE FROM objects WHERE key = ?1", [key]),
        }
        .map_err(db_err("writing an object"))?;
        // A delete's event carries the last value; an update's also the one before.
        let (event_text, prev_text) = match kind {
            StoreEventKind::Deleted => (old_text.clone(), None),
            StoreEventKind::Updated => (new_text.clone(), old_text.clone()),
            StoreEventKind::Created => (new_text.clone(), None),
        };
        let event_text = event_text.unwrap_or_else(|| "null".into());
        tx.execute(
            "INSERT INTO events (rev, key, type, value, prev_value) VALUES (?1, ?2, ?3, ?4, ?5)",
            params![to_sql(rev), key, kind.as_str(), event_text, prev_text],
        )
        .map_err(db_err("recording an event"))?;
        tx.execute("UPDATE meta SET value = ?1 WHERE name = 'revision'", [to_sql(rev)]).map_err(db_err("bumping the revision"))?;
        if rev > self.history {
            let compacted = rev - self.history;
            tx.execute("DELETE FROM events WHERE rev <= ?1", [to_sql(compacted)]).map_err(db_err("trimming the history"))?;
            tx.execute("UPDATE meta SET value = MAX(value, ?1) WHERE name = 'compacted'", [to_sql(compacted)])
                .map_err(db_err("trimming the history"))?;
        }
        tx.commit().map_err(db_err("committing a write"))?;

        let event_value = parse_value(key, &event_text)?;
        let prev_value = prev_text.as_deref().map(|t| parse_value(key, t)).transpose()?;
        // Nobody listening is fine.
        let _ = self.live.send(Arc::new(StoreEvent { kind, key: key.into(), value: event_value, prev_value, rev }));
        drop(conn);
        let old = old_text.as_deref().map(|t| parse_value(key, t)).transpose()?;
        Ok((rev, old))
    }

    /// Subscribes to live events and reads the history after `from_rev` under one lock, so that
    /// nothing is missed or seen twice. Returns the replay, the subscription and the revision after
    /// which live events start.
    #[allow(clippy::type_complexity)]
    fn subscribe(&self, prefix: &str, from_rev: Option<u64>) -> Result<(Vec<StoreEvent>, broadcast::Receiver<Arc<StoreEvent>>, u64), StoreError> {
        let conn = self.lock();
        let current = meta(&conn, "revision")?;
        let live = self.live.subscribe();
        let Some(from) = from_rev else { return Ok((Vec::new(), live, current)) };
        if from > current {
            return Err(StoreError::FutureRevision { requested: from, current });
        }
        let compacted = meta(&conn, "compacted")?;
        if from < compacted {
            return Err(StoreError::TooOld { requested: from, compacted });
        }
        let end = prefix_end(prefix);
        let mut stmt = conn
            .prepare("SELECT rev, key, type, value, prev_value FROM events WHERE rev > ?1 AND key >= ?2 AND (?3 IS NULL OR key < ?3) ORDER BY rev")
            .map_err(db_err("reading the event history"))?;
        let rows = stmt
            .query_map(params![to_sql(from), prefix, end], |r| {
                Ok((r.get::<_, i64>(0)?, r.get::<_, String>(1)?, r.get::<_, String>(2)?, r.get::<_, String>(3)?, r.get::<_, Option<String>>(4)?))
            })
            .map_err(db_err("reading the event history"))?;
        let mut replay = Vec::new();
        for row in rows {
            let (rev, key, kind, value, prev) = row.map_err(db_err("reading the event history"))?;
            if !key.starts_with(prefix) {
                continue;
            }
            let kind = StoreEventKind::parse(&kind).ok_or_else(|| {
                StoreError::backend("reading the event history", std::io::Error::other(format!("unknown event type {kind:?} at revision {rev}")))
            })?;
            let value = parse_value(&key, &value)?;
            let prev_value = prev.as_deref().map(|t| parse_value(&key, t)).transpose()?;
            replay.push(StoreEvent { kind, key, value, prev_value, rev: to_rev(rev) });
        }
        Ok((replay, live, current.max(from)))
    }
}

/// Feeds one watch: the replay, then live events, catching up from history when it lags.
async fn follow(
    store: SqliteStore,
    prefix: String,
    replay: Vec<StoreEvent>,
    mut live: broadcast::Receiver<Arc<StoreEvent>>,
    mut last: u64,
    out: mpsc::Sender<Result<StoreEvent, StoreError>>,
) {
    for event in replay {
        if out.send(Ok(event)).await.is_err() {
            return;
        }
    }
    loop {
        let received = tokio::select! {
            r = live.recv() => r,
            () = out.closed() => return,
        };
        match received {
            Ok(event) => {
                if event.rev <= last || !event.key.starts_with(&prefix) {
                    continue;
                }
                last = event.rev;
                if out.send(Ok((*event).clone())).await.is_err() {
                    return;
                }
            }
            Err(broadcast::error::RecvError::Lagged(_)) => {
                let p = prefix.clone();
                match store.run(move |inner| inner.subscribe(&p, Some(last))).await {
                    Ok((catch_up, resubscribed, after)) => {
                        live = resubscribed;
                        for event in catch_up {
                            if out.send(Ok(event)).await.is_err() {
                                return;
                            }
                        }
                        last = after;
                    }
                    Err(e) => {
                        let _ = out.send(Err(e)).await;
                        return;
                    }
                }
            }
            Err(broadcast::error::RecvError::Closed) => return,
        }
    }
}

#[async_trait]
impl Store for SqliteStore {
    async fn get(&self, key: &str) -> Result<Option<StoredObject>, StoreError> {
        let key = key.to_string();
        self.run(move |inner| inner.get(&key)).await
    }

    async fn list(&self, prefix: &str) -> Result<(Vec<StoredObject>, u64), StoreError> {
        let prefix = prefix.to_string();
        self.run(move |inner| inner.list(&prefix)).await
    }

    async fn list_at(&self, prefix: &str, rev: u64) -> Result<Vec<StoredObject>, StoreError> {
        let prefix = prefix.to_string();
        self.run(move |inner| inner.list_at(&prefix, rev)).await
    }

    async fn create(&self, key: &str, value: Value) -> Result<u64, StoreError> {
        let key = key.to_string();
        self.run(move |inner| inner.write(StoreEventKind::Created, &key, Some(&value), None)).await.map(|(rev, _)| rev)
    }

    async fn update(&self, key: &str, value: Value, expected_rev: Option<u64>) -> Result<u64, StoreError> {
        let key = key.to_string();
        self.run(move |inner| inner.write(StoreEventKind::Updated, &key, Some(&value), expected_rev)).await.map(|(rev, _)| rev)
    }

    async fn delete(&self, key: &str, expected_rev: Option<u64>) -> Result<(Value, u64), StoreError> {
        let key = key.to_string();
        let (rev, old) = self.run(move |inner| inner.write(StoreEventKind::Deleted, &key, None, expected_rev)).await?;
        Ok((old.unwrap_or(Value::Null), rev))
    }

    async fn watch(&self, prefix: &str, from_rev: Option<u64>) -> Result<EventStream, StoreError> {
        let p = prefix.to_string();
        let (replay, live, last) = self.run(move |inner| inner.subscribe(&p, from_rev)).await?;
        let (tx, rx) = mpsc::channel(WATCH_BUFFER);
        tokio::spawn(follow(self.clone(), prefix.to_string(), replay, live, last, tx));
        Ok(Box::pin(ReceiverStream::new(rx)))
    }

    async fn revision(&self) -> Result<u64, StoreError> {
        self.run(|inner| meta(&inner.lock(), "revision")).await
    }
}

#[cfg(test)]
mod tests {
    use std::io::{BufRead, BufReader};
    use std::process::{Command, Stdio};

    use super::*;
    use crate::apiserver::store::suite;

    suite::store_suite!(SqliteStore::in_memory_with_history(suite::SUITE_HISTORY).unwrap());

    #[tokio::test]
    async fn a_watch_that_falls_behind_catches_up_in_order() {
        suite::a_watch_that_falls_behind_catches_up_in_order(&SqliteStore::in_memory().unwrap()).await;
    }

    #[test]
    fn prefix_end_is_the_next_string() {
        assert_eq!(prefix_end("/registry/core/pods/").as_deref(), Some("/registry/core/pods0"));
        assert_eq!(prefix_end(""), None);
    }

    #[tokio::test]
    async fn a_reopened_file_keeps_objects_revision_and_history() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("store.db");
        {
            let store = SqliteStore::open(&path).unwrap();
            store.create("/a", serde_json::json!({"n": 1})).await.unwrap();
            store.update("/a", serde_json::json!({"n": 2}), Some(1)).await.unwrap();
        }
        let store = SqliteStore::open(&path).unwrap();
        let got = store.get("/a").await.unwrap().unwrap();
        assert_eq!((got.value["n"].as_i64(), got.create_rev, got.mod_rev), (Some(2), 1, 2));
        assert_eq!(store.revision().await.unwrap(), 2);
        assert_eq!(store.create("/b", serde_json::json!({})).await.unwrap(), 3);
        let mut watch = store.watch("/", Some(0)).await.unwrap();
        use futures::StreamExt;
        let revs: Vec<u64> = (&mut watch).take(3).map(|e| e.unwrap().rev).collect().await;
        assert_eq!(revs, vec![1, 2, 3]);
    }

    /// Where the child writer finds its database; set only in the child process.
    const CHILD_DB_ENV: &str = "CLUSTERCTL_TEST_STORE_CHILD_DB";

    /// The child half of the kill -9 test: writes objects until killed, printing each acknowledged key.
    /// Without the environment variable (a normal test run) it does nothing.
    #[tokio::test]
    async fn durability_child_writer() {
        let Ok(path) = std::env::var(CHILD_DB_ENV) else { return };
        let store = SqliteStore::open(&path).unwrap();
        for i in 0..100_000u32 {
            let key = format!("/registry/core/configmaps/default/cm-{i}");
            store.create(&key, serde_json::json!({"metadata": {"name": format!("cm-{i}")}, "data": {"i": i.to_string()}})).await.unwrap();
            println!("acked {key}");
        }
    }

    #[test]
    fn acknowledged_writes_survive_kill_9() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("store.db");
        let mut child = Command::new(std::env::current_exe().unwrap())
            .args(["apiserver::store::sqlite::tests::durability_child_writer", "--exact", "--nocapture", "--test-threads=1"])
            .env(CHILD_DB_ENV, &path)
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .spawn()
            .unwrap();
        let stdout = BufReader::new(child.stdout.take().unwrap());
        let mut acked = Vec::new();
        for line in stdout.lines() {
            let line = line.unwrap();
            if let Some(key) = line.strip_prefix("acked ") {
                acked.push(key.to_string());
                if acked.len() == 300 {
                    // SIGKILL, in the middle of the following writes.
                    child.kill().unwrap();
                    break;
                }
            }
        }
        child.wait().unwrap();
        assert_eq!(acked.len(), 300, "the child stopped before 300 writes");

        let rt = tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap();
        rt.block_on(async {
            let store = SqliteStore::open(&path).unwrap();
            for key in &acked {
                assert!(store.get(key).await.unwrap().is_some(), "acknowledged {key} is missing after kill -9");
            }
            let (items, rev) = store.list("/registry/").await.unwrap();
            assert!(items.len() >= acked.len());
            assert_eq!(rev as usize, items.len(), "every write was a create, so the revision counts the objects");
        });
    }
}
