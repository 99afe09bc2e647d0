//! Certificates cut off before they expire: a deny list by user.
//!
//! A record (one store key per user name, under [`PREFIX`]) says that the client certificates of
//! that user (`CN`) issued up to a moment are refused with 401. Two things write one:
//! - deleting a Node revokes `system:node:<name>` up to the deletion: the certificate that
//!   registered the Node, every renewal of it and any copy of its key. A machine that joins under
//!   the same name afterwards (a worker slot filled again) holds a newer one and is let through;
//! - `clusterctl rotate-certs` revokes the `admin` certificates issued before the new one
//!   (`POST /clusterctl/v1/revocations`, for `system:masters` only).
//!
//! A certificate's issue time is its `notBefore` plus the CA's backdating (`pki::BACKDATE`).
//!
//! Kubernetes has no revocation for client certificates; it relies on their lifetime (here a
//! year unless the master is told otherwise; the agents renew at two thirds). Two consequences
//! of cutting a node off at once: a node whose Node an operator deletes (`kubectl delete node`)
//! cannot register again with its certificate, and a machine that joined while a stale Node of
//! its name was still there (the agent waits for the cloud controller to delete it) is cut off
//! with it; the machine controller replaces a machine that has no Node for its join timeout.
//!
//! Each API server looks a user up at most every [`CACHE_FOR`] (a revocation through another
//! API server of an HA control plane is seen within it; one through this server at once).

use std::collections::HashMap;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use serde_json::{Value, json};

use super::store::{Store, StoreError};

/// Where the records live: `<PREFIX><node name>`.
pub const PREFIX: &str = "/registry/clusterctl/revokedcerts/";
/// How long a lookup is trusted.
pub const CACHE_FOR: Duration = Duration::from_secs(2);

/// Records that the certificates of the node `name` issued up to now are revoked (its Node was
/// just deleted).
pub async fn revoke_node(store: &dyn Store, name: &str) -> Result<(), StoreError> {
    revoke(store, &format!("{}{name}", super::auth::NODE_USER_PREFIX), crate::api::Time::now().unix_seconds()).await
}

/// Records that the certificates of `user` issued up to `issued_up_to` (Unix seconds) are
/// revoked; a later record for the user replaces it.
pub async fn revoke(store: &dyn Store, user: &str, issued_up_to: i64) -> Result<(), StoreError> {
    let record = json!({"user": user, "issuedUpTo": crate::api::Time::from_unix_seconds(issued_up_to), "revokedAt": crate::api::Time::now()});
    let key = format!("{PREFIX}{user}");
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

/// `POST /clusterctl/v1/revocations` with `{"user": NAME, "issuedUpTo": TIME}`: the certificates
/// of that user issued up to then are refused from now on (`system:masters` only; 422 when it
/// would refuse the certificate the request is made with).
pub(crate) async fn create(
    axum::extract::State(state): axum::extract::State<super::AppState>,
    axum::Extension(identity): axum::Extension<super::auth::Identity>,
    peer: Option<axum::Extension<super::auth::PeerIdentity>>,
    body: axum::body::Bytes,
) -> axum::response::Response {
    use axum::response::IntoResponse;
    use super::error::ApiError;
    if !identity.in_group(super::auth::MASTERS_GROUP) {
        return ApiError::forbidden_path(&identity.user, "post", super::REVOCATIONS_PATH).into_response();
    }
    let request: Value = match serde_json::from_slice(&body) {
        Ok(v) => v,
        Err(e) => return ApiError::bad_request(format!("the body is not JSON: {e}")).into_response(),
    };
    let user = request.get("user").and_then(Value::as_str).filter(|u| !u.is_empty());
    let up_to = request.get("issuedUpTo").and_then(Value::as_str).and_then(|t| crate::api::Time::parse(t).ok());
    let (Some(user), Some(up_to)) = (user, up_to) else {
        return ApiError::bad_request("the body must be {\"user\": NAME, \"issuedUpTo\": RFC 3339 time}").into_response();
    };
    let own = peer.and_then(|p| p.0.0.clone());
    if let Some((me, issued_at)) = own
        && me.user == user
        && issued_at <= up_to.unix_seconds()
    {
        return ApiError::bad_request("this would refuse the certificate the request is made with").into_response();
    }
    if let Err(e) = revoke(state.store.as_ref(), user, up_to.unix_seconds()).await {
        return ApiError::internal(format!("recording the revocation: {e}")).into_response();
    }
    state.revocations.forget(user);
    tracing::info!(user, up_to = %up_to, by = %identity.user, "revoked certificates");
    axum::Json(json!({"kind": "Status", "apiVersion": "v1", "metadata": {}, "status": "Success", "code": 201})).into_response()
}

/// The revocations this API server has looked up lately.
#[derive(Default)]
pub struct Revocations {
    /// Node name → (certificates issued up to this Unix time are refused, when it was read).
    cache: Mutex<HashMap<String, (Option<i64>, Instant)>>,
}

impl Revocations {
    /// Whether a certificate of `user` issued at `issued_at` (Unix seconds) is revoked.
    pub async fn refuses(&self, store: &dyn Store, user: &str, issued_at: i64) -> Result<bool, StoreError> {
        let cached = self.lock().get(user).filter(|(_, read)| read.elapsed() < CACHE_FOR).map(|(up_to, _)| *up_to);
        let up_to = match cached {
            Some(up_to) => up_to,
            None => {
                let stored = store.get(&format!("{PREFIX}{user}")).await?;
                let up_to = stored.and_then(|s| s.value.get("issuedUpTo").and_then(Value::as_str).and_then(|t| crate::api::Time::parse(t).ok())).map(|t| t.unix_seconds());
                self.lock().insert(user.to_string(), (up_to, Instant::now()));
                up_to
            }
        };
        Ok(up_to.is_some_and(|up_to| issued_at <= up_to))
    }

    /// Drops what is known of `user` (after this server revoked its certificates).
    pub fn forget(&self, user: &str) {
        self.lock().remove(user);
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<String, (Option<i64>, Instant)>> {
        self.cache.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
    }
}
