//! Event expiry: an Event is deleted [`TTL`] after it last happened, as the Kubernetes API server
//! does (its `--event-ttl`, one hour), so that events do not pile up. Keyed by Event; a reconcile
//! deletes an expired event or asks to be run again when it will have expired.

use std::sync::Arc;
use std::time::Duration;

use crate::api::event::Event;
use crate::client::{ClientError, ListOptions};
use crate::runtime::{Action, Client, Controller, ObjectKey, Store};

/// How long an event is kept after its last occurrence.
pub const TTL: Duration = Duration::from_secs(3600);

/// The controller's store and client.
pub struct Context<C> {
    pub client: C,
    pub events: Store<Event>,
    pub ttl: Duration,
}

/// The controller: every event, as it comes and at each resync.
pub fn controller<C: Client>(ctx: &Context<C>) -> Controller {
    Controller::new("event-ttl").owns(&ctx.events, Duration::from_secs(600)).concurrency(4)
}

/// Deletes the event at `key` once it is `ttl` old, else looks again when it will be.
pub async fn reconcile<C: Client>(key: ObjectKey, ctx: Arc<Context<C>>) -> Result<Action, ClientError> {
    let Some(event) = ctx.events.get(&key) else { return Ok(Action::AwaitChange) };
    let age = event.last_seen().map(|t| t.age()).unwrap_or(ctx.ttl);
    if age < ctx.ttl {
        return Ok(Action::RequeueAfter(ctx.ttl - age + Duration::from_secs(1)));
    }
    match ctx.client.delete::<Event>(&key).await {
        Ok(()) => Ok(Action::AwaitChange),
        Err(e) if e.is_not_found() => Ok(Action::AwaitChange),
        Err(e) => Err(e),
    }
}

/// Runs event expiry until dropped, on `client` (a `system:masters` identity), with `ttl`.
pub async fn run<C: Client>(client: C, ttl: Duration) {
    let ctx = Arc::new(Context { events: Store::reflect(client.clone(), None, ListOptions::default()), client, ttl });
    controller(&ctx).run(reconcile, ctx.clone()).await;
}
