//! What one API server takes at once, and who did what: in-flight caps with a share kept for the
//! cluster itself, a cap on each user's open watches, and the audit log.
//!
//! - **In flight** (kube-apiserver's `--max-requests-inflight`, with priority as API Priority and
//!   Fairness gives it to `system` and `node-high`): requests of the control plane and the nodes
//!   (`system:masters`, `system:nodes`) draw from one pool, everyone else's (operators' other
//!   identities, bootstrap tokens, anonymous) from another, so a flood of other clients cannot
//!   starve heartbeats, leases and controllers. Long-running requests (watches, `exec`, `attach`,
//!   `portforward`, `log`) are not counted, as in Kubernetes. Beyond the cap: 429
//!   `TooManyRequests` with `Retry-After: 1`, Kubernetes' answer.
//! - **Watches per user**: at most [`LimitSettings::watches_per_user`] open at once per user name
//!   (a leaked client that opens watches in a loop stops there); the next is 429 too.
//! - **Audit log** ([`AuditLog`]): one JSON line per request in `audit.k8s.io/v1` `Event` shape at
//!   level `Metadata` (who, verb, object, outcome, when; never a body, so no Secret reaches it),
//!   written by a thread of its own through a bounded queue (a request never waits on the disk;
//!   lines beyond the queue are counted and reported), to a file of mode 0600 rotated at a size
//!   (`audit.log` → `audit.log.1` ...).

use std::collections::HashMap;
use std::io::Write as _;
use std::path::PathBuf;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, mpsc};

use axum::body::Body;
use axum::extract::{Request, State};
use axum::http::{HeaderValue, header};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use futures::StreamExt;
use serde_json::json;
use tokio::sync::Semaphore;

use super::AppState;
use super::auth::{Identity, MASTERS_GROUP, NODES_GROUP};
use super::error::ApiError;
use crate::api::time::MicroTime;

/// The caps of one API server.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct LimitSettings {
    /// Requests in flight from the control plane and the nodes.
    pub system_in_flight: usize,
    /// Requests in flight from everyone else.
    pub others_in_flight: usize,
    /// Open watches per user.
    pub watches_per_user: u32,
}

impl Default for LimitSettings {
    /// kube-apiserver's 400 requests in flight for the cluster itself, half of that for the rest;
    /// 200 watches per user (an agent opens about ten, a controller manager about twenty).
    fn default() -> Self {
        LimitSettings { system_in_flight: 400, others_in_flight: 200, watches_per_user: 200 }
    }
}

/// The server's pools and its count of open watches per user.
pub struct Limits {
    settings: LimitSettings,
    system: Arc<Semaphore>,
    others: Arc<Semaphore>,
    watches: Arc<Mutex<HashMap<String, u32>>>,
}

impl Limits {
    pub fn new(settings: LimitSettings) -> Self {
        Limits {
            settings,
            system: Arc::new(Semaphore::new(settings.system_in_flight)),
            others: Arc::new(Semaphore::new(settings.others_in_flight)),
            watches: Arc::default(),
        }
    }

    /// A place for one more watch of `user`, held until the guard drops; `None` at the cap.
    fn watch(&self, user: &str) -> Option<WatchGuard> {
        let mut open = self.watches.lock().unwrap_or_else(|e| e.into_inner());
        let count = open.entry(user.to_string()).or_default();
        if *count >= self.settings.watches_per_user {
            return None;
        }
        *count += 1;
        Some(WatchGuard { watches: self.watches.clone(), user: user.to_string() })
    }
}

struct WatchGuard {
    watches: Arc<Mutex<HashMap<String, u32>>>,
    user: String,
}

impl Drop for WatchGuard {
    fn drop(&mut self) {
        let mut open = self.watches.lock().unwrap_or_else(|e| e.into_inner());
        if let Some(count) = open.get_mut(&self.user) {
            *count = count.saturating_sub(1);
            if *count == 0 {
                open.remove(&self.user);
            }
        }
    }
}

/// Whether the request (its URI) is a watch.
fn is_watch(uri: &axum::http::Uri) -> bool {
    uri.query().is_some_and(|q| q.split('&').any(|kv| kv.split_once('=').is_some_and(|(k, v)| k == "watch" && super::target::query_bool(v) == Some(true))))
}

/// Whether the request runs as long as its client keeps it open (not counted in flight).
fn is_long_running(uri: &axum::http::Uri) -> bool {
    is_watch(uri) || ["/exec", "/attach", "/portforward", "/log"].iter().any(|end| uri.path().ends_with(end))
}

/// Kubernetes' answer beyond a cap.
fn too_many() -> Response {
    let mut response = ApiError::too_many_requests("Too many requests, please try again later.", 1).into_response();
    response.headers_mut().insert(header::RETRY_AFTER, HeaderValue::from_static("1"));
    response
}

/// The middleware (inside authentication): counts the request against its pool, or its watch
/// against its user, and answers 429 beyond a cap.
pub(crate) async fn admit(State(state): State<AppState>, req: Request, next: Next) -> Response {
    let Some(identity) = req.extensions().get::<Identity>().cloned() else { return next.run(req).await };
    let limits = &state.limits;
    if is_watch(req.uri()) {
        let Some(guard) = limits.watch(&identity.user) else {
            tracing::warn!(user = %identity.user, "refusing a watch: the user has {} open", limits.settings.watches_per_user);
            return too_many();
        };
        // The place is held while the watch's body streams.
        let response = next.run(req).await;
        let (parts, body) = response.into_parts();
        let body = Body::from_stream(body.into_data_stream().map(move |chunk| {
            let _held = &guard;
            chunk
        }));
        return Response::from_parts(parts, body);
    }
    if is_long_running(req.uri()) {
        return next.run(req).await;
    }
    let pool = if identity.in_group(MASTERS_GROUP) || identity.in_group(NODES_GROUP) { &limits.system } else { &limits.others };
    let Ok(_permit) = pool.clone().try_acquire_owned() else {
        tracing::warn!(user = %identity.user, "refusing a request: too many in flight");
        return too_many();
    };
    next.run(req).await
}

/// The audit log: lines go to a writer thread through a bounded queue.
#[derive(Clone)]
pub struct AuditLog {
    lines: mpsc::SyncSender<String>,
    dropped: Arc<AtomicU64>,
}

/// Where the audit log goes and how big a file grows before it is rotated.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AuditSettings {
    pub path: PathBuf,
    pub max_bytes: u64,
    /// Rotated files kept (`audit.log.1` ... `.N`).
    pub keep: u32,
}

impl AuditSettings {
    /// 100 MiB files, three kept, at `path`.
    pub fn at(path: impl Into<PathBuf>) -> Self {
        AuditSettings { path: path.into(), max_bytes: 100 << 20, keep: 3 }
    }
}

/// Lines waiting for the writer before new ones are dropped (and counted).
const QUEUE: usize = 10_000;

impl AuditLog {
    /// Starts the writer thread.
    pub fn start(settings: AuditSettings) -> std::io::Result<Self> {
        if let Some(dir) = settings.path.parent() {
            std::fs::create_dir_all(dir)?;
        }
        let mut file = open(&settings.path)?;
        let mut size = file.metadata()?.len();
        let (tx, rx) = mpsc::sync_channel::<String>(QUEUE);
        std::thread::Builder::new().name("audit-log".into()).spawn(move || {
            while let Ok(first) = rx.recv() {
                let mut batch = vec![first];
                batch.extend(rx.try_iter());
                for line in batch {
                    if size + line.len() as u64 + 1 > settings.max_bytes && size > 0 {
                        match rotate(&settings).and_then(|()| open(&settings.path)) {
                            Ok(f) => {
                                file = f;
                                size = 0;
                            }
                            Err(e) => tracing::warn!(error = %e, path = %settings.path.display(), "rotating the audit log"),
                        }
                    }
                    if let Err(e) = writeln!(file, "{line}") {
                        tracing::warn!(error = %e, path = %settings.path.display(), "writing the audit log");
                    }
                    size += line.len() as u64 + 1;
                }
                let _ = file.flush();
            }
        })?;
        Ok(AuditLog { lines: tx, dropped: Arc::default() })
    }

    fn record(&self, line: String) {
        if self.lines.try_send(line).is_err() {
            let dropped = self.dropped.fetch_add(1, Ordering::Relaxed) + 1;
            if dropped.is_power_of_two() {
                tracing::warn!(dropped, "audit lines dropped: the writer is behind");
            }
        }
    }
}

/// Appends, creating the file 0600 (who did what is for the cluster's admins only).
fn open(path: &std::path::Path) -> std::io::Result<std::fs::File> {
    use std::os::unix::fs::OpenOptionsExt;
    std::fs::OpenOptions::new().create(true).append(true).mode(0o600).open(path)
}

/// `audit.log.{keep-1}` → `.{keep}` ... `audit.log` → `audit.log.1`; the oldest goes.
fn rotate(settings: &AuditSettings) -> std::io::Result<()> {
    let numbered = |n: u32| PathBuf::from(format!("{}.{n}", settings.path.display()));
    for n in (1..settings.keep).rev() {
        if numbered(n).exists() {
            std::fs::rename(numbered(n), numbered(n + 1))?;
        }
    }
    if settings.keep == 0 {
        return std::fs::remove_file(&settings.path);
    }
    std::fs::rename(&settings.path, numbered(1))
}

/// Kubernetes' verb for a request: `get`/`list`/`watch` by whether it names an object and asks to
/// watch, `create`, `update`, `patch`, `delete`/`deletecollection`.
fn verb(method: &axum::http::Method, named: bool, watch: bool) -> &'static str {
    use axum::http::Method;
    match *method {
        Method::GET if watch => "watch",
        Method::GET | Method::HEAD if named => "get",
        Method::GET | Method::HEAD => "list",
        Method::POST => "create",
        Method::PUT => "update",
        Method::PATCH => "patch",
        Method::DELETE if named => "delete",
        Method::DELETE => "deletecollection",
        _ => "unknown",
    }
}

/// What the audit line reads of a request, taken before the request is handed on.
struct Head {
    method: axum::http::Method,
    uri: axum::http::Uri,
    user_agent: Option<String>,
    received: MicroTime,
}

/// The audit event of one request, as kube-apiserver writes it at level `Metadata`.
fn event(identity: &Identity, head: &Head, code: u16) -> serde_json::Value {
    let target = super::target::Target::parse(head.uri.path()).ok();
    let mut event = json!({
        "kind": "Event",
        "apiVersion": "audit.k8s.io/v1",
        "level": "Metadata",
        "auditID": uuid_like(),
        "stage": "ResponseComplete",
        "requestURI": head.uri.to_string(),
        "verb": verb(&head.method, target.as_ref().is_some_and(|t| t.name.is_some()), is_watch(&head.uri)),
        "user": {"username": identity.user, "groups": identity.groups},
        "responseStatus": {"metadata": {}, "code": code},
        "requestReceivedTimestamp": head.received,
        "stageTimestamp": MicroTime::now(),
    });
    if let Some(agent) = &head.user_agent {
        event["userAgent"] = json!(agent);
    }
    if let Some(t) = target {
        let mut object = json!({"resource": t.resource.plural, "apiVersion": t.resource.version});
        if !t.resource.group.is_empty() {
            object["apiGroup"] = json!(t.resource.group);
        }
        for (key, value) in [("namespace", t.namespace), ("name", t.name), ("subresource", t.subresource)] {
            if let Some(v) = value {
                object[key] = json!(v);
            }
        }
        event["objectRef"] = object;
    }
    event
}

fn uuid_like() -> String {
    let b: [u8; 16] = rand::random();
    let h = hex::encode(b);
    format!("{}-{}-{}-{}-{}", &h[..8], &h[8..12], &h[12..16], &h[16..20], &h[20..])
}

/// The middleware (inside authentication): one audit line per request, once its response is
/// made (for a watch or an exec: once it began streaming).
pub(crate) async fn audit(State(state): State<AppState>, req: Request, next: Next) -> Response {
    let (Some(log), Some(identity)) = (state.audit.clone(), req.extensions().get::<Identity>().cloned()) else { return next.run(req).await };
    let head = Head {
        method: req.method().clone(),
        uri: req.uri().clone(),
        user_agent: req.headers().get(header::USER_AGENT).and_then(|v| v.to_str().ok()).map(String::from),
        received: MicroTime::now(),
    };
    let response = next.run(req).await;
    log.record(event(&identity, &head, response.status().as_u16()).to_string());
    response
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_users_watches_stop_at_the_cap_and_free_their_place_when_they_end() {
        let limits = Limits::new(LimitSettings { watches_per_user: 2, ..Default::default() });
        let a = limits.watch("ann").unwrap();
        let _b = limits.watch("ann").unwrap();
        assert!(limits.watch("ann").is_none(), "the third");
        assert!(limits.watch("bob").is_some(), "per user");
        drop(a);
        assert!(limits.watch("ann").is_some(), "a place came free");
    }

    #[test]
    fn verbs_are_kubernetes_words() {
        use axum::http::Method;
        assert_eq!(verb(&Method::GET, true, false), "get");
        assert_eq!(verb(&Method::GET, false, false), "list");
        assert_eq!(verb(&Method::GET, false, true), "watch");
        assert_eq!(verb(&Method::DELETE, false, false), "deletecollection");
        assert_eq!(verb(&Method::PATCH, true, false), "patch");
    }

    #[test]
    fn the_audit_log_is_private_and_rotated_at_its_size() {
        use std::os::unix::fs::PermissionsExt;
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("audit/audit.log");
        let log = AuditLog::start(AuditSettings { path: path.clone(), max_bytes: 1000, keep: 2 }).unwrap();
        for i in 0..100 {
            log.record(format!("{{\"n\":{i},\"pad\":\"{}\"}}", "x".repeat(40)));
        }
        let rotated = |n: u32| PathBuf::from(format!("{}.{n}", path.display()));
        for _ in 0..100 {
            if rotated(2).exists() && std::fs::read_to_string(&path).is_ok_and(|t| t.contains("\"n\":99,")) {
                break;
            }
            std::thread::sleep(std::time::Duration::from_millis(20));
        }
        assert!(std::fs::read_to_string(&path).unwrap().contains("\"n\":99,"), "the newest line in the live file");
        assert!(rotated(2).exists() && !rotated(3).exists(), "two rotated files kept");
        for p in [path.clone(), rotated(1)] {
            assert!(std::fs::metadata(&p).unwrap().len() <= 1000);
            assert_eq!(std::fs::metadata(&p).unwrap().permissions().mode() & 0o777, 0o600);
        }
    }
}
