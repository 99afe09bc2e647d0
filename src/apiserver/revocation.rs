//! A deleted Node's credentials stop working: a deny list.
//!
//! When a Node is deleted, the API server records (one store key per node name, under
//! [`PREFIX`]) when; from then on a client certificate of that node (`CN=system:node:<name>`)
//! issued up to that moment is refused with 401: the one that registered the Node, every renewal
//! of it, and any copy of its key. A machine that joins under the same name afterwards (a worker
//! slot filled again) holds a certificate issued after the deletion and is let through. A
//! certificate's issue time is its `notBefore` plus the CA's backdating (`pki::BACKDATE`).
//!
//! Kubernetes has no revocation for client certificates; it relies on their lifetime (here a
//! year unless the master is told otherwise; the agents renew at two thirds). Two consequences
//! of cutting a node off at once: a node whose Node an operator deletes (`kubectl delete node`)
//! cannot register again with its certificate, and a machine that joined while a stale Node of
//! its name was still there (the agent waits for the cloud controller to delete it) is cut off
//! with it; the machine controller replaces a machine that has no Node for its join timeout.
//!
//! Each API server looks a node name up at most every [`CACHE_FOR`] (a deletion through another
//! API server of an HA control plane is seen within it; one through this server at once).

use std::collections::HashMap;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use serde_json::{Value, json};

use super::store::{Store, StoreError};

/// Where the records live: `<PREFIX><node name>`.
pub const PREFIX: &str = "/registry/clusterctl/revokednodes/";
/// How long a lookup is trusted.
pub const CACHE_FOR: Duration = Duration::from_secs(2);

/// Records that the certificates of the node `name` issued up to now are revoked (its Node was
/// just deleted).
pub async fn revoke(store: &dyn Store, name: &str) -> Result<(), StoreError> {
    let now = crate::api::Time::now();
    let record = json!({"node": name, "issuedUpTo": now});
    let key = format!("{PREFIX}{name}");
    let mut attempts = 0;
    loop {
        let result = match store.get(&key).await? {
            Some(old) => store.update(&key, record.clone(), Some(old.mod_rev)).await.map(drop),
            None => store.create(&key, record.clone()).await.map(drop),
        };
        attempts += 1;
        match result {
            // Another API server wrote it in between: read it again.
            Err(StoreError::Conflict { .. } | StoreError::AlreadyExists { .. }) if attempts < 5 => continue,
            other => return other,
        }
    }
}

/// The revocations this API server has looked up lately.
#[derive(Default)]
pub struct Revocations {
    /// Node name → (certificates issued up to this Unix time are refused, when it was read).
    cache: Mutex<HashMap<String, (Option<i64>, Instant)>>,
}

impl Revocations {
    /// Whether a certificate of `node` issued at `issued_at` (Unix seconds) is revoked.
    pub async fn refuses(&self, store: &dyn Store, node: &str, issued_at: i64) -> Result<bool, StoreError> {
        let cached = self.lock().get(node).filter(|(_, read)| read.elapsed() < CACHE_FOR).map(|(up_to, _)| *up_to);
        let up_to = match cached {
            Some(up_to) => up_to,
            None => {
                let stored = store.get(&format!("{PREFIX}{node}")).await?;
                let up_to = stored.and_then(|s| s.value.get("issuedUpTo").and_then(Value::as_str).and_then(|t| crate::api::Time::parse(t).ok())).map(|t| t.unix_seconds());
                self.lock().insert(node.to_string(), (up_to, Instant::now()));
                up_to
            }
        };
        Ok(up_to.is_some_and(|up_to| issued_at <= up_to))
    }

    /// Drops what is known of `node` (after this server revoked it).
    pub fn forget(&self, node: &str) {
        self.lock().remove(node);
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<String, (Option<i64>, Instant)>> {
        self.cache.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
    }
}
