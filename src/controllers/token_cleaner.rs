//! Token cleaner: a bootstrap token Secret (`kube-system`, type `bootstrap.kubernetes.io/token`)
//! is deleted once its `expiration` has passed, as Kubernetes' tokencleaner controller does, so
//! that spent join tokens do not pile up in the store (the API server refuses them already).
//! Keyed by Secret; a reconcile deletes an expired token (with its `uid` as precondition, so a
//! new token of the same name is never hit) or asks to be run again when it will have expired.

use std::sync::Arc;
use std::time::{Duration, SystemTime};

use crate::api::config::{BOOTSTRAP_TOKEN_NAMESPACE, BOOTSTRAP_TOKEN_SECRET_TYPE};
use crate::api::{Secret, Time};
use crate::client::{ClientError, ListOptions};
use crate::runtime::{Action, Client, Controller, ObjectKey, Store};

/// The controller's store and client.
pub struct Context<C> {
    pub client: C,
    pub secrets: Store<Secret>,
}

/// The controller: every Secret of `kube-system`, as it comes and at each resync.
pub fn controller<C: Client>(ctx: &Context<C>) -> Controller {
    Controller::new("token-cleaner").owns(&ctx.secrets, Duration::from_secs(600))
}

/// When a bootstrap token expires: None for another Secret or a token without `expiration`; an
/// unreadable expiration counts as expired, as the API server reads it.
pub fn expires(secret: &Secret) -> Option<SystemTime> {
    if secret.secret_type.as_deref() != Some(BOOTSTRAP_TOKEN_SECRET_TYPE) {
        return None;
    }
    let expiration = secret.get_str("expiration")?;
    Some(Time::parse(&expiration).map(Time::to_system_time).unwrap_or(SystemTime::UNIX_EPOCH))
}

/// Deletes the token at `key` once expired, else looks again when it will be.
pub async fn reconcile<C: Client>(key: ObjectKey, ctx: Arc<Context<C>>) -> Result<Action, ClientError> {
    let Some(secret) = ctx.secrets.get(&key) else { return Ok(Action::AwaitChange) };
    let Some(at) = expires(&secret) else { return Ok(Action::AwaitChange) };
    if let Ok(left) = at.duration_since(SystemTime::now()) {
        return Ok(Action::RequeueAfter(left + Duration::from_secs(1)));
    }
    match ctx.client.delete_now::<Secret>(&key, &secret.metadata.uid).await {
        Ok(()) => {
            tracing::info!(secret = %key, "deleted an expired bootstrap token");
            Ok(Action::AwaitChange)
        }
        Err(e) if e.is_not_found() || e.is_conflict() => Ok(Action::AwaitChange),
        Err(e) => Err(e),
    }
}

/// Runs the token cleaner until dropped, on `client` (a `system:masters` identity).
pub async fn run<C: Client>(client: C) {
    let ctx = Arc::new(Context { secrets: Store::reflect(client.clone(), Some(BOOTSTRAP_TOKEN_NAMESPACE), ListOptions::default()), client });
    controller(&ctx).run(reconcile, ctx.clone()).await;
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::api::ObjectMeta;
    use crate::runtime::fake::FakeClient;

    fn secret(name: &str, kind: &str, expiration: Option<String>) -> Secret {
        let mut s = Secret { metadata: ObjectMeta::namespaced(BOOTSTRAP_TOKEN_NAMESPACE, name), secret_type: Some(kind.into()), ..Default::default() };
        if let Some(e) = expiration {
            s.set("expiration", e);
        }
        s
    }

    #[tokio::test]
    async fn expired_bootstrap_tokens_are_deleted_and_nothing_else() {
        let fake = FakeClient::new();
        let now = crate::api::time::now_seconds() as i64;
        let at = |offset: i64| Some(Time::from_unix_seconds(now + offset).to_string());
        for s in [
            secret("bootstrap-token-old111", BOOTSTRAP_TOKEN_SECRET_TYPE, at(-60)),
            secret("bootstrap-token-soon22", BOOTSTRAP_TOKEN_SECRET_TYPE, at(2)),
            secret("bootstrap-token-late33", BOOTSTRAP_TOKEN_SECRET_TYPE, at(3600)),
            secret("bootstrap-token-never4", BOOTSTRAP_TOKEN_SECRET_TYPE, None),
            secret("bootstrap-token-garble", BOOTSTRAP_TOKEN_SECRET_TYPE, Some("next tuesday".into())),
            secret("not-a-token", "Opaque", at(-60)),
        ] {
            fake.create(&s).await.unwrap();
        }
        let task = tokio::spawn(run(fake.clone()));
        let names = || fake.objects::<Secret>().into_iter().map(|s| s.metadata.name).collect::<Vec<_>>();
        let started = std::time::Instant::now();
        while names().len() > 4 {
            assert!(started.elapsed() < Duration::from_secs(10), "{:?}", names());
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        assert_eq!(names(), ["bootstrap-token-late33", "bootstrap-token-never4", "bootstrap-token-soon22", "not-a-token"], "the expired and the unreadable go at once");
        while names().len() > 3 {
            assert!(started.elapsed() < Duration::from_secs(10), "{:?}", names());
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        assert!(started.elapsed() >= Duration::from_secs(1), "the one expiring in 2 s goes when it expires");
        assert_eq!(names(), ["bootstrap-token-late33", "bootstrap-token-never4", "not-a-token"]);
        task.abort();
    }
}
