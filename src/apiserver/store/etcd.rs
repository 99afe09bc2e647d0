//! The etcd store, for clusters with three masters: every master's API server is a client of one
//! etcd cluster (a member on each master), so any of them can serve any request and a master can die.
//!
//! Mapping onto etcd's v3 API:
//! - an object is one key whose value is the JSON bytes; its `create_rev`/`mod_rev` are etcd's
//!   `create_revision`/`mod_revision`, and the store's revision is etcd's (which starts at 1);
//! - `create` is a transaction "create_revision == 0 then put"; `update`/`delete` are "version > 0
//!   (and mod_revision == expected) then write, else read the key", so a refused write tells
//!   `NotFound` from a `Conflict` with the key's actual revision without a second round trip;
//! - reads are linearizable (etcd's default), `list` pages through the prefix at one revision;
//! - `watch` is an etcd watch from `from_rev + 1` with previous values (`prev_kv`); whether the start
//!   is compacted or ahead is asked first with a range at that revision, since etcd itself would
//!   cancel a compacted watch only later and wait silently for a future one.
//!
//! History: etcd keeps every revision until it is compacted. Each store compacts etcd itself to
//! `revision - history` once that is `history / 8` past the last compaction it made, so etcd keeps
//! between `history` and `history * 9 / 8` events; no `--auto-compaction-*` flags are needed. With
//! several API servers on one etcd each compacts on its own writes; a compaction that another one
//! already passed is answered "required revision has been compacted", which is fine.
//!
//! Connection: the client balances requests over its endpoints, and until the next member check
//! ([`EtcdStore::follow_members`]) drops a dead member's endpoint, still hands some to it (each
//! fails, at once when refused, after the connect timeout when the address is gone). Requests are
//! therefore retried for up to 10 s, which covers one such timeout and a leader election (1 to 2 s).
//!
//! Writes survive a leader change without ever applying twice. Every write is a transaction guarded
//! by a compare the write itself falsifies (`create_revision == 0` for a create, `mod_revision ==
//! expected` for an update or delete; one without an expected revision is made guarded at the
//! revision just read), so an attempt whose outcome is unknown (the connection broke, no answer
//! within 2 s because the proposal went to a leader that died, "leader changed") is simply sent again.
//! When the retry is refused, the refusal may be the earlier attempt's own doing: a create checks
//! the key's value at its creation revision, an update or delete the first change after its
//! expected revision (a watch over etcd's history), and when that is the write's own, the write
//! answers as its first attempt would have, with that revision (not 409). Objects the API server
//! writes carry a uid and timestamps, so no other writer's value is byte-for-byte the same.
//!
//! Every request has a 5 s timeout and connecting one too, so a member that does not answer never
//! stalls one; HTTP/2 keep-alive pings find a connection whose peer vanished, and `require_leader`
//! makes a member cut off from the others refuse requests and end watches instead of serving stale
//! state. A watch on a lost connection ends with a `Backend` error; one that etcd cancels for
//! compaction ends `TooOld`.
//!
//! [`EtcdCluster`] is the handle for operating the etcd cluster itself: members, adding and removing
//! them, per-endpoint status and snapshots.

use std::fmt;
use std::path::Path;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use async_trait::async_trait;
use etcd_client::{
    Certificate, Client, Compare, CompareOp, ConnectOptions, DeleteOptions, EventType, GetOptions, GetResponse, Identity, KeyValue, ResponseHeader,
    TlsOptions, Txn, TxnOp, TxnOpResponse, TxnResponse, WatchOptions, WatchResponse, WatchStream,
};
use futures::StreamExt;
use serde_json::Value;
use tokio::io::AsyncWriteExt;

use super::{DEFAULT_HISTORY, EventStream, Store, StoreError, StoreEvent, StoreEventKind, StoredObject};

/// Whether something accepts a TCP connection at an endpoint URL's host and port within 1 s.
async fn answers(endpoint: &str) -> bool {
    let authority = endpoint.split_once("://").map_or(endpoint, |(_, rest)| rest);
    let authority = authority.split('/').next().unwrap_or(authority);
    matches!(tokio::time::timeout(Duration::from_secs(1), tokio::net::TcpStream::connect(authority)).await, Ok(Ok(_)))
}

/// How long one request may take, and connecting to one endpoint.
const REQUEST_TIMEOUT: Duration = Duration::from_secs(5);
/// HTTP/2 pings on connections with open streams; etcd refuses pings more often than every 5 s.
const KEEP_ALIVE_INTERVAL: Duration = Duration::from_secs(10);
const KEEP_ALIVE_TIMEOUT: Duration = Duration::from_secs(5);
/// Objects per range request of a `list`.
const LIST_PAGE: i64 = 1000;
/// A key no object has, for requests that only want the response header.
const PROBE_KEY: &str = "/";

/// The cluster CA's certificate and this client's certificate and key, all PEM, for etcd's TLS
/// client port (etcd runs with `--client-cert-auth`).
#[derive(Clone)]
pub struct EtcdTls {
    pub ca_pem: String,
    pub cert_pem: String,
    pub key_pem: String,
}

impl fmt::Debug for EtcdTls {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("EtcdTls").field("ca_pem", &self.ca_pem).field("cert_pem", &self.cert_pem).field("key_pem", &"<redacted>").finish()
    }
}

/// Where etcd is and how to reach it.
#[derive(Debug, Clone)]
pub struct EtcdOptions {
    /// Client URLs of the members, `https://10.0.1.10:2379` (or `http://` without TLS).
    pub endpoints: Vec<String>,
    pub tls: Option<EtcdTls>,
    /// How many past events the store keeps for watches (see the module docs); unused by [`EtcdCluster`].
    pub history: u64,
}

impl EtcdOptions {
    /// Plain-text connections to `endpoints`, keeping the default history.
    pub fn new(endpoints: Vec<String>) -> Self {
        EtcdOptions { endpoints, tls: None, history: DEFAULT_HISTORY }
    }

    /// The same, over TLS with a client certificate.
    pub fn with_tls(mut self, tls: EtcdTls) -> Self {
        self.tls = Some(tls);
        self
    }

    /// The same, keeping `history` events.
    pub fn with_history(mut self, history: u64) -> Self {
        self.history = history;
        self
    }
}

/// A client of `endpoints`. Does not wait for etcd to answer: the first request tells. With
/// `require_leader` a member without a leader refuses requests (and ends watches) at once.
async fn connect(endpoints: &[String], tls: Option<&EtcdTls>, require_leader: bool) -> Result<Client, StoreError> {
    let what = || format!("connecting to etcd at {}", endpoints.join(","));
    if endpoints.is_empty() {
        return Err(StoreError::backend(what(), std::io::Error::other("no endpoints given")));
    }
    let mut options = ConnectOptions::new()
        .with_timeout(REQUEST_TIMEOUT)
        .with_connect_timeout(REQUEST_TIMEOUT)
        .with_keep_alive(KEEP_ALIVE_INTERVAL, KEEP_ALIVE_TIMEOUT)
        .with_require_leader(require_leader);
    if let Some(tls) = tls {
        options = options.with_tls(
            TlsOptions::new()
                .ca_certificate(Certificate::from_pem(&tls.ca_pem))
                .identity(Identity::from_pem(&tls.cert_pem, &tls.key_pem)),
        );
    }
    Client::connect(endpoints, Some(options)).await.map_err(|e| StoreError::backend(what(), e))
}

/// Every member of the cluster the client reaches, retried.
async fn member_list(client: &Client) -> Result<etcd_client::MemberListResponse, StoreError> {
    retried(|| {
        let mut cluster = client.cluster_client();
        async move { cluster.member_list().await }
    })
    .await
    .map_err(|e| StoreError::backend("listing etcd's members", e))
}

/// What a failed request may have done.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Failed {
    /// It certainly was not carried out: it never left this process (the balancer picked an
    /// endpoint it could not connect to), or the member refused it for want of a leader.
    NotApplied,
    /// Its outcome is unknown: the connection broke, no answer came in time, or the leader changed
    /// while it was in flight (a proposal the old leader replicated may still commit).
    Unknown,
}

/// Whether a failed request may be sent again, and what it may have done; `None` for failures
/// another attempt would not change (a refused argument, a compacted revision, a permission).
fn failure(e: &etcd_client::Error) -> Option<Failed> {
    let etcd_client::Error::GRpcStatus(status) = e else { return None };
    // Errors of this process's transport carry their cause; statuses sent by etcd carry none.
    let local = std::error::Error::source(status);
    let mut source = local;
    while let Some(s) = source {
        if s.is::<tonic::ConnectError>() {
            return Some(Failed::NotApplied);
        }
        source = s.source();
    }
    match status.code() {
        tonic::Code::Unavailable if status.message().contains("no leader") => Some(Failed::NotApplied),
        // etcd's "request timed out", "leader changed", "timed out due to previous leader failure",
        // and a transport that failed mid-request.
        tonic::Code::Unavailable | tonic::Code::Cancelled | tonic::Code::DeadlineExceeded => Some(Failed::Unknown),
        tonic::Code::Unknown if local.is_some() => Some(Failed::Unknown),
        _ => None,
    }
}

/// How long a request is retried: one request or connect timeout (a dead member whose address no
/// longer answers), then a leader election (1 to 2 s with etcd's defaults), with room to spare.
const RETRY_BUDGET: Duration = Duration::from_secs(10);

/// How long one attempt of a write may take before it is given up and sent again. A write whose
/// proposal went to a leader that then died gets no answer until etcd's own timeout (7 s); since a
/// retried write cannot apply twice, waiting that long only delays the client.
const WRITE_ATTEMPT_TIMEOUT: Duration = Duration::from_secs(2);

/// Runs `attempt` until it succeeds, fails in a way another attempt would not change, or the retry
/// budget is spent; the balanced channel sends each attempt to a ready endpoint of its choice.
/// Returns with the answer whether an earlier attempt failed with an unknown outcome.
async fn retrying<T, F, Fut>(mut attempt: F) -> Result<(T, bool), etcd_client::Error>
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = Result<T, etcd_client::Error>>,
{
    let deadline = tokio::time::Instant::now() + RETRY_BUDGET;
    let mut backoff = Duration::from_millis(20);
    let mut unknown = false;
    loop {
        match attempt().await {
            Ok(answer) => return Ok((answer, unknown)),
            Err(e) => match failure(&e) {
                Some(failed) if tokio::time::Instant::now() + backoff < deadline => {
                    tracing::debug!(error = %e, ?failed, "retrying an etcd request");
                    unknown |= failed == Failed::Unknown;
                    tokio::time::sleep(backoff).await;
                    backoff = (backoff * 2).min(Duration::from_millis(500));
                }
                _ => return Err(e),
            },
        }
    }
}

/// Like [`retrying`], for requests whose repetition is harmless (reads, member changes etcd
/// recognises), where what a failed attempt did does not matter.
async fn retried<T, F, Fut>(attempt: F) -> Result<T, etcd_client::Error>
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = Result<T, etcd_client::Error>>,
{
    retrying(attempt).await.map(|(answer, _)| answer)
}

/// The first change to a key after a revision, as its history tells.
#[derive(Debug)]
struct Change {
    rev: u64,
    /// The value written, `None` for a delete.
    written: Option<Vec<u8>>,
    /// The value before the change.
    before: Option<Vec<u8>>,
}

/// What a guarded write did: its revision, and for a delete the value it removed.
#[derive(Debug)]
struct Written {
    rev: u64,
    before: Option<Vec<u8>>,
}

fn to_rev(v: i64) -> u64 {
    v.max(0) as u64
}

fn to_etcd(rev: u64) -> i64 {
    rev.min(i64::MAX as u64) as i64
}

fn header_rev(header: Option<&ResponseHeader>) -> u64 {
    header.map_or(0, |h| to_rev(h.revision()))
}

fn parse_value(key: &str, bytes: &[u8]) -> Result<Value, StoreError> {
    serde_json::from_slice(bytes).map_err(|source| StoreError::Corrupt { key: key.to_string(), source })
}

fn key_of(kv: &KeyValue) -> String {
    String::from_utf8_lossy(kv.key()).into_owned()
}

fn stored(kv: &KeyValue) -> Result<StoredObject, StoreError> {
    let key = key_of(kv);
    let value = parse_value(&key, kv.value())?;
    Ok(StoredObject { key, value, create_rev: to_rev(kv.create_revision()), mod_rev: to_rev(kv.mod_revision()) })
}

fn grpc_message(e: &etcd_client::Error) -> Option<&str> {
    match e {
        etcd_client::Error::GRpcStatus(status) => Some(status.message()),
        _ => None,
    }
}

/// etcd's answer to a read at, or a compaction to, a revision it has already compacted.
fn is_compacted(e: &etcd_client::Error) -> bool {
    grpc_message(e).is_some_and(|m| m.contains("required revision has been compacted"))
}

/// etcd's answer to a read at a revision it has not reached.
fn is_future_revision(e: &etcd_client::Error) -> bool {
    grpc_message(e).is_some_and(|m| m.contains("required revision is a future revision"))
}

/// The end of the key range holding every key that starts with `prefix` (etcd's convention: `\0`
/// for "to the end").
fn prefix_range_end(prefix: &[u8]) -> Vec<u8> {
    let mut end = prefix.to_vec();
    while let Some(last) = end.pop() {
        if last < 0xff {
            end.push(last + 1);
            return end;
        }
    }
    vec![0]
}

/// The store on an etcd cluster (see the module docs for the mapping).
#[derive(Clone)]
pub struct EtcdStore {
    /// Swapped for a new connection when the client certificate is renewed ([`EtcdStore::reconnect`]).
    client: Arc<std::sync::RwLock<Client>>,
    history: u64,
    /// The revision this store last compacted etcd to (others may have compacted further).
    compacted: Arc<AtomicU64>,
    /// The endpoints the client balances over (see [`EtcdStore::follow_members`]).
    endpoints: Arc<std::sync::Mutex<std::collections::BTreeSet<String>>>,
    /// Tests: how many answers to write attempts that etcd did apply to drop, as a broken
    /// connection or a timeout would, so that the retry after a lost answer is exercised.
    #[cfg(test)]
    lose_answers: Arc<std::sync::atomic::AtomicU32>,
}

impl fmt::Debug for EtcdStore {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("EtcdStore").field("history", &self.history).finish_non_exhaustive()
    }
}

impl EtcdStore {
    /// A store on the etcd cluster at `options.endpoints`. Does not wait for etcd; [`Store::revision`]
    /// tells when it answers.
    pub async fn connect(options: EtcdOptions) -> Result<Self, StoreError> {
        let client = connect(&options.endpoints, options.tls.as_ref(), true).await?;
        let endpoints = Arc::new(std::sync::Mutex::new(options.endpoints.iter().cloned().collect()));
        Ok(EtcdStore {
            client: Arc::new(std::sync::RwLock::new(client)),
            history: options.history.max(1),
            compacted: Arc::new(AtomicU64::new(0)),
            endpoints,
            #[cfg(test)]
            lose_answers: Arc::default(),
        })
    }

    /// The current connection (cheap to clone; requests under way keep theirs).
    fn client(&self) -> Client {
        self.client.read().unwrap_or_else(std::sync::PoisonError::into_inner).clone()
    }

    /// Connects again to the same endpoints with `tls` (a renewed client certificate: a connection
    /// made with the old one would be refused once it expires); later requests and watches use the
    /// new connection, those under way finish on the old one.
    pub async fn reconnect(&self, tls: &EtcdTls) -> Result<(), StoreError> {
        let endpoints: Vec<String> = self.endpoints.lock().unwrap_or_else(|e| e.into_inner()).iter().cloned().collect();
        let client = connect(&endpoints, Some(tls), true).await?;
        *self.client.write().unwrap_or_else(std::sync::PoisonError::into_inner) = client;
        Ok(())
    }

    /// Makes the client balance over `keep` and the client URL of every current member that
    /// accepts connections: a member added since the store connected (a replaced master's) is
    /// added, one removed or not answering is dropped.
    /// Returns the endpoints added and removed.
    pub async fn sync_endpoints(&self, keep: &[String]) -> Result<(Vec<String>, Vec<String>), StoreError> {
        let response = member_list(&self.client()).await?;
        let mut want: std::collections::BTreeSet<String> = keep.iter().cloned().collect();
        // Only members that accept connections: the machine of a dead one may not even refuse
        // (its address is simply gone), and each request the balancer handed it would wait for
        // its connect timeout. It comes back at the first check after it answers again.
        let listed: Vec<String> = response.members().iter().filter_map(|m| m.client_urls().first().cloned()).filter(|u| !want.contains(u)).collect();
        let answering = futures::future::join_all(listed.iter().map(|u| answers(u))).await;
        want.extend(listed.into_iter().zip(answering).filter(|(_, ok)| *ok).map(|(u, _)| u));
        let current = self.endpoints.lock().unwrap_or_else(|e| e.into_inner()).clone();
        let added: Vec<String> = want.difference(&current).cloned().collect();
        let removed: Vec<String> = current.difference(&want).cloned().collect();
        for endpoint in &added {
            self.client().add_endpoint(endpoint).await.map_err(|e| StoreError::backend(format!("adding the etcd endpoint {endpoint}"), e))?;
        }
        for endpoint in &removed {
            self.client().remove_endpoint(endpoint).await.map_err(|e| StoreError::backend(format!("removing the etcd endpoint {endpoint}"), e))?;
        }
        *self.endpoints.lock().unwrap_or_else(|e| e.into_inner()) = want;
        Ok((added, removed))
    }

    /// Keeps the client's endpoints at `keep` and the current members ([`EtcdStore::sync_endpoints`]),
    /// checked every `every` by a task that runs as long as the process: the API server of a
    /// master that survived a master's replacement reaches the new member, and no longer dials the
    /// dead one, without a restart.
    pub fn follow_members(&self, keep: Vec<String>, every: Duration) {
        let store = self.clone();
        tokio::spawn(async move {
            loop {
                match store.sync_endpoints(&keep).await {
                    Ok((added, removed)) if !added.is_empty() || !removed.is_empty() => tracing::info!(?added, ?removed, "etcd endpoints follow the members"),
                    Ok(_) => {}
                    Err(e) => tracing::debug!(error = %e, "following etcd's members"),
                }
                tokio::time::sleep(every).await;
            }
        });
    }

    /// A range read, retried.
    async fn range(&self, key: impl Into<Vec<u8>>, options: GetOptions) -> Result<GetResponse, etcd_client::Error> {
        let key = key.into();
        retried(|| {
            let (mut kv, key, options) = (self.client().kv_client(), key.clone(), options.clone());
            async move { kv.get(key, Some(options)).await }
        })
        .await
    }

    /// A write transaction, sent until an attempt answers. Every write is guarded by compares that
    /// the write itself falsifies (the key's absence, its revision), so an attempt sent again after
    /// one whose outcome is unknown can never apply it a second time; the flag says whether such an
    /// attempt came first, in which case a refusal may be the earlier attempt's own doing.
    async fn write_txn(&self, txn: Txn) -> Result<(TxnResponse, bool), etcd_client::Error> {
        retrying(|| {
            let (mut kv, txn) = (self.client().kv_client(), txn.clone());
            async move {
                match tokio::time::timeout(WRITE_ATTEMPT_TIMEOUT, kv.txn(txn)).await {
                    #[cfg(test)]
                    Ok(Ok(_)) if self.lose_answers.fetch_update(Ordering::AcqRel, Ordering::Acquire, |n| n.checked_sub(1)).is_ok() => {
                        Err(etcd_client::Error::GRpcStatus(tonic::Status::unavailable("the answer was lost (test)")))
                    }
                    Ok(answer) => answer,
                    Err(_) => Err(etcd_client::Error::GRpcStatus(tonic::Status::deadline_exceeded(format!(
                        "no answer within {WRITE_ATTEMPT_TIMEOUT:?}"
                    )))),
                }
            }
        })
        .await
    }

    /// The first change to `key` after revision `after`, when `after` is the revision of a write of
    /// `key` and the key has changed since (as a refused write tells): read from etcd's history with
    /// a watch that starts there. `None` when there is no such change or that history is compacted.
    async fn first_change_after(&self, key: &str, after: u64) -> Option<Change> {
        // Without a write of the key at `after` there may be no change to wait for.
        let at = self.range(key, GetOptions::new().with_revision(to_etcd(after))).await.ok()?;
        if at.kvs().first().map(|kv| to_rev(kv.mod_revision())) != Some(after) {
            return None;
        }
        let options = WatchOptions::new().with_prev_key().with_start_revision(to_etcd(after.saturating_add(1)));
        let mut stream = retried(|| {
            let (mut client, options) = (self.client().watch_client(), options.clone());
            async move { client.watch(key, Some(options)).await }
        })
        .await
        .ok()?;
        let change = tokio::time::timeout(REQUEST_TIMEOUT, async {
            loop {
                let response = stream.message().await.ok()??;
                if response.canceled() {
                    return None;
                }
                let Some(event) = response.events().first() else { continue };
                let kv = event.kv()?;
                return Some(Change {
                    rev: to_rev(kv.mod_revision()),
                    written: (event.event_type() == EventType::Put).then(|| kv.value().to_vec()),
                    before: event.prev_kv().map(|p| p.value().to_vec()),
                });
            }
        })
        .await;
        change.ok().flatten()
    }

    /// Whether the key `kv` (found existing by a create) holds, as of its creation, the value
    /// `bytes`: then the create that wrote them is the one whose answer was lost. Objects the API
    /// server creates carry a fresh uid, so no other create writes the same bytes.
    async fn created_with(&self, key: &str, kv: &KeyValue, bytes: &[u8]) -> bool {
        if kv.create_revision() == kv.mod_revision() {
            return kv.value() == bytes;
        }
        match self.range(key, GetOptions::new().with_revision(kv.create_revision())).await {
            Ok(at_creation) => at_creation.kvs().first().is_some_and(|first| first.value() == bytes),
            // Compacted already: the write is too old to be the one in question.
            Err(_) => false,
        }
    }

    /// After a write at `rev`: compacts etcd's history when it has grown `history / 8` past the
    /// last compaction. A failed compaction does not fail the write (the next write tries again).
    async fn compact_after(&self, rev: u64) {
        let slack = (self.history / 8).max(1);
        let Some(target) = rev.checked_sub(self.history) else { return };
        let last = self.compacted.load(Ordering::Acquire);
        if target < last.saturating_add(slack) {
            return;
        }
        if self.compacted.compare_exchange(last, target, Ordering::AcqRel, Ordering::Acquire).is_err() {
            // Another write of this store is compacting.
            return;
        }
        match self.client().kv_client().compact(to_etcd(target), None).await {
            Ok(_) => {}
            Err(e) if is_compacted(&e) => {}
            Err(e) => {
                tracing::warn!(error = %e, revision = target, "compacting etcd's history failed");
                let _ = self.compacted.compare_exchange(target, last, Ordering::AcqRel, Ordering::Acquire);
            }
        }
    }

    /// A write of `key` guarded by "its mod_revision is `expected`" (and so "it exists"); a refused
    /// one becomes `NotFound` or `Conflict`, unless an earlier attempt of this very write, whose
    /// answer was lost, is what changed the key: then it answers as that attempt would have, with the
    /// change it made. `written` is the value a put writes, `None` for a delete.
    async fn guarded(&self, key: &str, expected: u64, op: TxnOp, written: Option<&[u8]>, action: &str) -> Result<Written, StoreError> {
        let compares = [Compare::version(key, CompareOp::Greater, 0), Compare::mod_revision(key, CompareOp::Equal, to_etcd(expected))];
        let txn = Txn::new().when(compares).and_then([op]).or_else([TxnOp::get(key, None)]);
        let (response, maybe_applied) = self.write_txn(txn).await.map_err(|e| StoreError::backend(format!("{action} {key} in etcd"), e))?;
        if response.succeeded() {
            let rev = header_rev(response.header());
            let before = response.op_responses().into_iter().find_map(|r| match r {
                TxnOpResponse::Delete(mut delete) => delete.take_prev_kvs().into_iter().next().map(|kv| kv.value().to_vec()),
                _ => None,
            });
            return Ok(Written { rev, before });
        }
        if maybe_applied
            && let Some(change) = self.first_change_after(key, expected).await
            && change.written.as_deref() == written
        {
            tracing::info!(key, rev = change.rev, "an etcd write whose answer was lost had been applied");
            return Ok(Written { rev: change.rev, before: change.before });
        }
        let actual = response.op_responses().into_iter().find_map(|r| match r {
            TxnOpResponse::Get(get) => get.kvs().first().map(|kv| to_rev(kv.mod_revision())),
            _ => None,
        });
        match actual {
            None => Err(StoreError::NotFound { key: key.into() }),
            Some(actual) => Err(StoreError::Conflict { key: key.into(), expected, actual }),
        }
    }

    /// A write of `key` whatever its revision, as long as it exists: a guarded write at the revision
    /// just read, read and tried again while another write comes in between.
    async fn unguarded(&self, key: &str, op: TxnOp, written: Option<&[u8]>, action: &str) -> Result<Written, StoreError> {
        let deadline = tokio::time::Instant::now() + RETRY_BUDGET;
        loop {
            let current = self.range(key, GetOptions::new()).await.map_err(|e| StoreError::backend(format!("{action} {key} in etcd"), e))?;
            let Some(kv) = current.kvs().first() else { return Err(StoreError::NotFound { key: key.into() }) };
            match self.guarded(key, to_rev(kv.mod_revision()), op.clone(), written, action).await {
                Err(StoreError::Conflict { .. }) if tokio::time::Instant::now() < deadline => continue,
                result => return result,
            }
        }
    }

    /// Every object under `prefix`, read page by page at one revision (`at`, else the first
    /// page's), and that revision.
    async fn list_from(&self, prefix: &str, mut at: Option<u64>) -> Result<(Vec<StoredObject>, u64), StoreError> {
        let end = prefix_range_end(prefix.as_bytes());
        let mut start = if prefix.is_empty() { vec![0] } else { prefix.as_bytes().to_vec() };
        let mut items = Vec::new();
        loop {
            let mut options = GetOptions::new().with_range(end.clone()).with_limit(LIST_PAGE);
            if let Some(rev) = at {
                options = options.with_revision(to_etcd(rev));
            }
            let response = match self.range(start.clone(), options).await {
                Ok(r) => r,
                Err(e) if is_compacted(&e) => {
                    let requested = at.unwrap_or(0);
                    return Err(StoreError::TooOld { requested, compacted: self.compact_revision(prefix, requested).await });
                }
                Err(e) if is_future_revision(&e) => return Err(StoreError::FutureRevision { requested: at.unwrap_or(0), current: self.revision().await? }),
                Err(e) => return Err(StoreError::backend(format!("listing {prefix} in etcd"), e)),
            };
            let rev = *at.get_or_insert(header_rev(response.header()));
            for kv in response.kvs() {
                items.push(stored(kv)?);
            }
            match response.kvs().last() {
                Some(last) if response.more() => {
                    start = last.key().to_vec();
                    start.push(0);
                }
                _ => return Ok((items, rev)),
            }
        }
    }

    /// Refuses a watch from a revision etcd has compacted or not reached yet.
    async fn check_watchable(&self, prefix: &str, from: u64) -> Result<(), StoreError> {
        // Revision 0 means "the current one" to etcd; 1 is the oldest there is.
        let at = GetOptions::new().with_count_only().with_revision(to_etcd(from.max(1)));
        match self.range(PROBE_KEY, at).await {
            Ok(_) => Ok(()),
            Err(e) if is_compacted(&e) => Err(StoreError::TooOld { requested: from, compacted: self.compact_revision(prefix, from).await }),
            Err(e) if is_future_revision(&e) => Err(StoreError::FutureRevision { requested: from, current: self.revision().await? }),
            Err(e) => Err(StoreError::backend(format!("checking that etcd still has revision {from}"), e)),
        }
    }

    /// etcd's compaction revision, which only a watch that starts before it tells; this store's own
    /// last compaction if etcd does not say.
    async fn compact_revision(&self, prefix: &str, from: u64) -> u64 {
        let fallback = self.compacted.load(Ordering::Acquire);
        let options = WatchOptions::new().with_prefix().with_start_revision(to_etcd(from.saturating_add(1)));
        let Ok(mut stream) = self.client().watch_client().watch(prefix, Some(options)).await else { return fallback };
        let answer = tokio::time::timeout(REQUEST_TIMEOUT, async {
            loop {
                match stream.message().await {
                    Ok(Some(r)) if r.compact_revision() > 0 => return Some(to_rev(r.compact_revision())),
                    Ok(Some(r)) if r.canceled() || !r.events().is_empty() => return None,
                    Ok(Some(_)) => {}
                    Ok(None) | Err(_) => return None,
                }
            }
        })
        .await;
        answer.ok().flatten().unwrap_or(fallback)
    }
}

#[async_trait]
impl Store for EtcdStore {
    async fn get(&self, key: &str) -> Result<Option<StoredObject>, StoreError> {
        let response = self.range(key, GetOptions::new()).await.map_err(|e| StoreError::backend(format!("reading {key} from etcd"), e))?;
        response.kvs().first().map(stored).transpose()
    }

    async fn list(&self, prefix: &str) -> Result<(Vec<StoredObject>, u64), StoreError> {
        self.list_from(prefix, None).await
    }

    async fn list_at(&self, prefix: &str, rev: u64) -> Result<Vec<StoredObject>, StoreError> {
        Ok(self.list_from(prefix, Some(rev.max(1))).await?.0)
    }

    async fn create(&self, key: &str, value: Value) -> Result<u64, StoreError> {
        let action = || format!("creating {key} in etcd");
        let bytes = value.to_string();
        let txn = Txn::new()
            .when([Compare::create_revision(key, CompareOp::Equal, 0)])
            .and_then([TxnOp::put(key, bytes.as_str(), None)])
            .or_else([TxnOp::get(key, None)]);
        let (response, maybe_applied) = self.write_txn(txn).await.map_err(|e| StoreError::backend(action(), e))?;
        let rev = if response.succeeded() {
            header_rev(response.header())
        } else {
            let existing = response.op_responses().into_iter().find_map(|r| match r {
                TxnOpResponse::Get(mut get) => get.take_kvs().into_iter().next(),
                _ => None,
            });
            match existing {
                Some(kv) if maybe_applied && self.created_with(key, &kv, bytes.as_bytes()).await => {
                    tracing::info!(key, rev = kv.create_revision(), "an etcd create whose answer was lost had been applied");
                    to_rev(kv.create_revision())
                }
                _ => return Err(StoreError::AlreadyExists { key: key.into() }),
            }
        };
        self.compact_after(rev).await;
        Ok(rev)
    }

    async fn update(&self, key: &str, value: Value, expected_rev: Option<u64>) -> Result<u64, StoreError> {
        let bytes = value.to_string();
        let op = TxnOp::put(key, bytes.as_str(), None);
        let written = match expected_rev {
            Some(expected) => self.guarded(key, expected, op, Some(bytes.as_bytes()), "updating").await?,
            None => self.unguarded(key, op, Some(bytes.as_bytes()), "updating").await?,
        };
        self.compact_after(written.rev).await;
        Ok(written.rev)
    }

    async fn delete(&self, key: &str, expected_rev: Option<u64>) -> Result<(Value, u64), StoreError> {
        let op = TxnOp::delete(key, Some(DeleteOptions::new().with_prev_key()));
        let written = match expected_rev {
            Some(expected) => self.guarded(key, expected, op, None, "deleting").await?,
            None => self.unguarded(key, op, None, "deleting").await?,
        };
        let old = match written.before {
            Some(bytes) => parse_value(key, &bytes)?,
            None => Value::Null,
        };
        self.compact_after(written.rev).await;
        Ok((old, written.rev))
    }

    async fn watch(&self, prefix: &str, from_rev: Option<u64>) -> Result<EventStream, StoreError> {
        let mut options = WatchOptions::new().with_prefix().with_prev_key();
        if let Some(from) = from_rev {
            self.check_watchable(prefix, from).await?;
            options = options.with_start_revision(to_etcd(from.saturating_add(1)));
        }
        let action = || format!("starting a watch on {prefix} in etcd");
        let mut stream = retried(|| {
            let (mut client, options) = (self.client().watch_client(), options.clone());
            async move { client.watch(prefix, Some(options)).await }
        })
        .await
        .map_err(|e| StoreError::backend(action(), e))?;
        // Events written after this returns must reach the watch, so wait until etcd has set it up.
        let created = match tokio::time::timeout(REQUEST_TIMEOUT, stream.message()).await {
            Ok(Ok(Some(response))) => response,
            Ok(Ok(None)) => return Err(StoreError::backend(action(), std::io::Error::other("etcd ended the watch stream"))),
            Ok(Err(e)) => return Err(StoreError::backend(action(), e)),
            Err(_) => return Err(StoreError::backend(action(), std::io::Error::other(format!("no answer within {REQUEST_TIMEOUT:?}")))),
        };
        let last = from_rev.unwrap_or_else(|| header_rev(created.header()));
        if created.canceled() {
            return Err(cancelled(prefix, last, &created));
        }
        Ok(follow(stream, prefix.to_string(), last))
    }

    async fn revision(&self) -> Result<u64, StoreError> {
        let response =
            self.range(PROBE_KEY, GetOptions::new().with_count_only()).await.map_err(|e| StoreError::backend("reading etcd's revision", e))?;
        Ok(header_rev(response.header()))
    }
}

/// Why etcd cancelled a watch on `prefix` that had delivered everything up to `last`.
fn cancelled(prefix: &str, last: u64, response: &WatchResponse) -> StoreError {
    if response.compact_revision() > 0 {
        return StoreError::TooOld { requested: last, compacted: to_rev(response.compact_revision()) };
    }
    let reason = match response.cancel_reason() {
        "" => "etcd cancelled the watch".to_string(),
        reason => format!("etcd cancelled the watch: {reason}"),
    };
    StoreError::backend(format!("watching {prefix} in etcd"), std::io::Error::other(reason))
}

fn to_event(event: &etcd_client::Event) -> Result<StoreEvent, StoreError> {
    let (Some(kv), prev) = (event.kv(), event.prev_kv()) else {
        return Err(StoreError::backend("reading a watch event from etcd", std::io::Error::other("the event has no key")));
    };
    let key = key_of(kv);
    let prev_value = prev.map(|p| parse_value(&key, p.value())).transpose()?;
    let rev = to_rev(kv.mod_revision());
    Ok(match event.event_type() {
        EventType::Put if kv.create_revision() == kv.mod_revision() => {
            StoreEvent { kind: StoreEventKind::Created, value: parse_value(&key, kv.value())?, key, prev_value: None, rev }
        }
        EventType::Put => StoreEvent { kind: StoreEventKind::Updated, value: parse_value(&key, kv.value())?, key, prev_value, rev },
        // A delete's kv holds only the key; its last value comes with prev_kv, which etcd keeps for
        // every event after the compaction revision.
        EventType::Delete => StoreEvent { kind: StoreEventKind::Deleted, value: prev_value.unwrap_or(Value::Null), key, prev_value: None, rev },
    })
}

/// The events of an etcd watch whose creation was confirmed, ending with the first error.
fn follow(stream: WatchStream, prefix: String, last: u64) -> EventStream {
    struct Following {
        stream: WatchStream,
        prefix: String,
        last: u64,
    }
    let start = Following { stream, prefix, last };
    let batches = futures::stream::unfold(Some(start), |state| async move {
        let mut f = state?;
        loop {
            let response = match f.stream.message().await {
                Ok(Some(response)) => response,
                Ok(None) => {
                    let e = StoreError::backend(format!("watching {} in etcd", f.prefix), std::io::Error::other("etcd ended the watch stream"));
                    return Some((vec![Err(e)], None));
                }
                Err(e) => return Some((vec![Err(StoreError::backend(format!("watching {} in etcd", f.prefix), e))], None)),
            };
            if response.canceled() {
                return Some((vec![Err(cancelled(&f.prefix, f.last, &response))], None));
            }
            if response.events().is_empty() {
                continue;
            }
            let mut batch = Vec::with_capacity(response.events().len());
            for event in response.events() {
                match to_event(event) {
                    Ok(event) => {
                        f.last = event.rev;
                        batch.push(Ok(event));
                    }
                    Err(e) => {
                        batch.push(Err(e));
                        return Some((batch, None));
                    }
                }
            }
            return Some((batch, Some(f)));
        }
    });
    Box::pin(batches.flat_map(futures::stream::iter))
}

/// One member of the etcd cluster.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct EtcdMember {
    pub id: u64,
    /// Empty until a member that was added has started.
    pub name: String,
    pub peer_urls: Vec<String>,
    pub client_urls: Vec<String>,
}

impl From<&etcd_client::Member> for EtcdMember {
    fn from(m: &etcd_client::Member) -> Self {
        EtcdMember { id: m.id(), name: m.name().to_string(), peer_urls: m.peer_urls().to_vec(), client_urls: m.client_urls().to_vec() }
    }
}

/// A member just added to the cluster, and the cluster's members including it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AddedMember {
    pub id: u64,
    pub members: Vec<EtcdMember>,
}

impl AddedMember {
    /// The `--initial-cluster` value the new member starts with (with `--initial-cluster-state
    /// existing`), naming it `name`: `name1=peer_url1,...`, as `etcdctl member add` prints it.
    pub fn initial_cluster(&self, name: &str) -> String {
        let mut entries = Vec::new();
        for member in &self.members {
            let member_name = if member.id == self.id { name } else { member.name.as_str() };
            entries.extend(member.peer_urls.iter().map(|url| format!("{member_name}={url}")));
        }
        entries.join(",")
    }
}

/// What one member says about itself.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MemberStatus {
    pub member_id: u64,
    /// The leader's member id, 0 while there is none.
    pub leader_id: u64,
    pub revision: u64,
    pub raft_term: u64,
    pub db_size: i64,
    pub version: String,
    /// Alarms and other errors the member reports (such as `NOSPACE`).
    pub errors: Vec<String>,
}

impl MemberStatus {
    /// Whether this member is the leader.
    pub fn is_leader(&self) -> bool {
        self.leader_id != 0 && self.leader_id == self.member_id
    }

    /// Whether the member has a leader and reports no errors.
    pub fn healthy(&self) -> bool {
        self.leader_id != 0 && self.errors.is_empty()
    }
}

/// One endpoint's status, or why it did not answer.
#[derive(Debug)]
pub struct EndpointStatus {
    pub endpoint: String,
    pub status: Result<MemberStatus, StoreError>,
}

/// A handle for operating the etcd cluster: members, their status, snapshots.
#[derive(Clone)]
pub struct EtcdCluster {
    client: Client,
    endpoints: Vec<String>,
    tls: Option<EtcdTls>,
}

impl fmt::Debug for EtcdCluster {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("EtcdCluster").field("endpoints", &self.endpoints).finish_non_exhaustive()
    }
}

impl EtcdCluster {
    /// A handle on the cluster at `options.endpoints` (its `history` is not used).
    pub async fn connect(options: &EtcdOptions) -> Result<Self, StoreError> {
        let client = connect(&options.endpoints, options.tls.as_ref(), true).await?;
        Ok(EtcdCluster { client, endpoints: options.endpoints.clone(), tls: options.tls.clone() })
    }

    /// Every member, started or not.
    pub async fn members(&self) -> Result<Vec<EtcdMember>, StoreError> {
        let response = member_list(&self.client).await?;
        Ok(response.members().iter().map(EtcdMember::from).collect())
    }

    /// Announces a new member at `peer_url` (`https://10.0.1.12:2380`), which must then start with
    /// [`AddedMember::initial_cluster`] and `--initial-cluster-state existing`. Until it does, a
    /// cluster of two grown to three needs both old members for quorum. A peer URL that is already
    /// a member's (as when an earlier attempt's answer was lost) gives that member.
    pub async fn add_member(&self, peer_url: &str) -> Result<AddedMember, StoreError> {
        let action = || format!("adding an etcd member at {peer_url}");
        let added = retried(|| {
            let mut cluster = self.client.cluster_client();
            async move { cluster.member_add(vec![peer_url.to_string()], None).await }
        })
        .await;
        let response = match added {
            Ok(response) => response,
            Err(e) if grpc_message(&e).is_some_and(|m| m.contains("Peer URLs already exists")) => {
                let members = self.members().await?;
                let Some(id) = members.iter().find(|m| m.peer_urls.iter().any(|u| u == peer_url)).map(|m| m.id) else {
                    return Err(StoreError::backend(action(), e));
                };
                return Ok(AddedMember { id, members });
            }
            Err(e) => return Err(StoreError::backend(action(), e)),
        };
        let Some(member) = response.member() else {
            return Err(StoreError::backend(action(), std::io::Error::other("etcd did not say which member it added")));
        };
        Ok(AddedMember { id: member.id(), members: response.member_list().iter().map(EtcdMember::from).collect() })
    }

    /// Removes member `id` from the cluster (it stops serving once it learns of it). A member that
    /// is not there (any more) is not an error.
    pub async fn remove_member(&self, id: u64) -> Result<(), StoreError> {
        let removed = retried(|| {
            let mut cluster = self.client.cluster_client();
            async move { cluster.member_remove(id).await }
        })
        .await;
        match removed {
            Ok(_) => Ok(()),
            Err(e) if grpc_message(&e).is_some_and(|m| m.contains("member not found")) => Ok(()),
            Err(e) => Err(StoreError::backend(format!("removing etcd member {id:x}"), e)),
        }
    }

    /// Asks every endpoint for its status, each on its own connection, all at once.
    pub async fn endpoint_status(&self) -> Vec<EndpointStatus> {
        let asks = self.endpoints.iter().map(|endpoint| async move {
            EndpointStatus { endpoint: endpoint.clone(), status: member_status(endpoint, self.tls.as_ref()).await }
        });
        futures::future::join_all(asks).await
    }

    /// Defragments the member this handle reaches (make it a handle on that one endpoint, such as
    /// the local member) when compaction has left at least half of its database file, and at least
    /// `min_free` bytes, free: etcd reuses the freed pages but never gives them back, as
    /// `etcdctl defrag` does. Defragmenting blocks that member's reads and writes while it runs
    /// (milliseconds for the few MB a cluster keeps); the other members serve meanwhile. Returns
    /// the file's size before and after, or `None` when it was not worth it.
    pub async fn defragment_when_fragmented(&self, min_free: i64) -> Result<Option<(i64, i64)>, StoreError> {
        let action = "defragmenting the etcd member";
        let mut maintenance = self.client.maintenance_client();
        let status = maintenance.status().await.map_err(|e| StoreError::backend(action, e))?;
        let (size, in_use) = (status.db_size(), status.raft_used_db_size());
        let free = size - in_use;
        if in_use <= 0 || free < min_free || free * 2 < size {
            return Ok(None);
        }
        maintenance.defragment().await.map_err(|e| StoreError::backend(action, e))?;
        let after = maintenance.status().await.map_err(|e| StoreError::backend(action, e))?.db_size();
        Ok(Some((size, after)))
    }

    /// Writes a snapshot of the keyspace (from whichever member answers) to `path`, through a
    /// temporary file that is synced and renamed, so that `path` is complete or absent. Returns its
    /// size in bytes.
    pub async fn snapshot_to(&self, path: &Path) -> Result<u64, StoreError> {
        let action = format!("writing an etcd snapshot to {}", path.display());
        let partial = path.with_extension("partial");
        let result = async {
            let mut stream = retried(|| {
                let mut maintenance = self.client.maintenance_client();
                async move { maintenance.snapshot().await }
            })
            .await
            .map_err(|e| StoreError::backend(&action, e))?;
            let mut file = tokio::fs::File::create(&partial).await.map_err(|e| StoreError::backend(&action, e))?;
            let mut size = 0u64;
            while let Some(chunk) = stream.message().await.map_err(|e| StoreError::backend(&action, e))? {
                file.write_all(chunk.blob()).await.map_err(|e| StoreError::backend(&action, e))?;
                size += chunk.blob().len() as u64;
            }
            file.sync_all().await.map_err(|e| StoreError::backend(&action, e))?;
            tokio::fs::rename(&partial, path).await.map_err(|e| StoreError::backend(&action, e))?;
            Ok(size)
        }
        .await;
        if result.is_err() {
            let _ = tokio::fs::remove_file(&partial).await;
        }
        result
    }
}

/// The status of the member at `endpoint`, asked on a connection to it alone (without requiring a
/// leader, so that a member cut off from the others still tells its state).
async fn member_status(endpoint: &str, tls: Option<&EtcdTls>) -> Result<MemberStatus, StoreError> {
    let client = connect(&[endpoint.to_string()], tls, false).await?;
    let status = client.maintenance_client().status().await.map_err(|e| StoreError::backend(format!("asking {endpoint} for its status"), e))?;
    Ok(MemberStatus {
        member_id: status.header().map_or(0, |h| h.member_id()),
        leader_id: status.leader(),
        revision: header_rev(status.header()),
        raft_term: status.raft_term(),
        db_size: status.db_size(),
        version: status.version().to_string(),
        errors: status.errors().to_vec(),
    })
}

#[cfg(test)]
mod tests;
