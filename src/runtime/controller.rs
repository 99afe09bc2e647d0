//! A controller: triggers (store changes mapped to keys, periodic resyncs) feed a [`WorkQueue`];
//! workers take keys from it and run `reconcile(key, ctx)`. Its [`Action`] says when to look at the
//! key again without a change; an error backs the key off exponentially ([`Backoff`]), and the
//! key's next success resets that.

use std::collections::HashMap;
use std::fmt::Display;
use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use futures::future::BoxFuture;
use futures::stream::FuturesUnordered;
use futures::{FutureExt, StreamExt};

use super::object::{Object, ObjectKey};
use super::queue::WorkQueue;
use super::store::Store;

/// What a reconcile asks for next.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Action {
    /// Reconcile the key again after this long, even if nothing changes.
    RequeueAfter(Duration),
    /// Reconcile the key again only when something mapped to it changes (or at the next resync).
    AwaitChange,
}

/// Per-key exponential back-off after failed reconciles: `initial`, doubled per further failure,
/// at most `max`. A change of the key's objects queues it at once (as client-go's and
/// kube-runtime's queues do); a periodic resync does not cut its back-off short.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Backoff {
    pub initial: Duration,
    pub max: Duration,
}

impl Default for Backoff {
    fn default() -> Self {
        Backoff { initial: Duration::from_millis(500), max: Duration::from_secs(60) }
    }
}

impl Backoff {
    /// The delay after the `failures`-th failure in a row (1 for the first).
    pub fn delay(&self, failures: u32) -> Duration {
        let factor = 1u32.checked_shl(failures.saturating_sub(1)).unwrap_or(u32::MAX);
        self.initial.checked_mul(factor).unwrap_or(self.max).min(self.max)
    }
}

type Trigger = BoxFuture<'static, ()>;
type Keys = Box<dyn Fn() -> Vec<ObjectKey> + Send + Sync>;

/// A control loop under construction: name it, add its stores and triggers, then [`Controller::run`].
pub struct Controller {
    name: &'static str,
    queue: WorkQueue,
    triggers: Vec<Trigger>,
    synced: Vec<BoxFuture<'static, ()>>,
    resync: Option<(Duration, Keys)>,
    backoff: Backoff,
    concurrency: usize,
}

impl Controller {
    /// A controller without triggers, one reconcile at a time, default back-off.
    pub fn new(name: &'static str) -> Self {
        Controller { name, queue: WorkQueue::new(), triggers: Vec::new(), synced: Vec::new(), resync: None, backoff: Backoff::default(), concurrency: 1 }
    }

    /// The controller's queue (to queue keys from outside, e.g. tests).
    pub fn queue(&self) -> WorkQueue {
        self.queue.clone()
    }

    /// Reconciles every object of `store` when it changes (keyed by itself) and at every resync.
    pub fn owns<T: Object>(self, store: &Store<T>, resync: Duration) -> Self {
        let keys = store.clone();
        self.watches(store, |o: &T| vec![o.key()]).resync_every(resync, move || keys.keys())
    }

    /// Reconciles the keys `map` gives for every object of `store` that changes (or goes). Reconciles
    /// wait for the store's first list.
    pub fn watches<T: Object>(mut self, store: &Store<T>, map: impl Fn(&T) -> Vec<ObjectKey> + Send + Sync + 'static) -> Self {
        let mut changes = store.subscribe();
        let queue = self.queue.clone();
        self.triggers.push(
            async move {
                while let Some(object) = changes.recv().await {
                    for key in map(&object) {
                        queue.add(key);
                    }
                }
            }
            .boxed(),
        );
        let synced = store.clone();
        self.synced.push(async move { synced.wait_synced().await }.boxed());
        self
    }

    /// Queues every key `keys` gives once the stores are synced, and again every `period` (a key
    /// already queued, for a back-off or a requeue, keeps its time). Several calls add up.
    pub fn resync_every(mut self, period: Duration, keys: impl Fn() -> Vec<ObjectKey> + Send + Sync + 'static) -> Self {
        self.resync = Some(match self.resync.take() {
            None => (period, Box::new(keys)),
            Some((p, before)) => (p.min(period), Box::new(move || before().into_iter().chain(keys()).collect())),
        });
        self
    }

    /// The back-off of failing keys.
    pub fn backoff(mut self, backoff: Backoff) -> Self {
        self.backoff = backoff;
        self
    }

    /// How many different keys may be reconciled at once (at least 1).
    pub fn concurrency(mut self, workers: usize) -> Self {
        self.concurrency = workers.max(1);
        self
    }

    /// Runs the controller until the returned future is dropped (leader election aborts it).
    pub async fn run<Ctx, F, Fut, E>(self, reconcile: F, ctx: Arc<Ctx>)
    where
        Ctx: Send + Sync + 'static,
        F: Fn(ObjectKey, Arc<Ctx>) -> Fut + Send + Sync + 'static,
        Fut: Future<Output = Result<Action, E>> + Send + 'static,
        E: Display + Send + 'static,
    {
        let Controller { name, queue, triggers, synced, resync, backoff, concurrency } = self;
        let triggers = futures::future::join_all(triggers);
        let all_synced = futures::future::join_all(synced).map(drop).shared();
        let resync = {
            let queue = queue.clone();
            let all_synced = all_synced.clone();
            async move {
                all_synced.await;
                let Some((period, keys)) = resync else { return std::future::pending().await };
                loop {
                    for key in keys() {
                        queue.add_unless_queued(key);
                    }
                    tokio::time::sleep(period).await;
                }
            }
        };
        let workers = async {
            all_synced.await;
            let mut failures: HashMap<ObjectKey, u32> = HashMap::new();
            let mut running = FuturesUnordered::new();
            loop {
                tokio::select! {
                    key = queue.next(), if running.len() < concurrency => {
                        let work = reconcile(key.clone(), ctx.clone());
                        running.push(async move { (key, work.await) });
                    }
                    Some((key, result)) = running.next(), if !running.is_empty() => {
                        let failed = &mut failures;
                        match result {
                            Ok(action) => {
                                failed.remove(&key);
                                if let Action::RequeueAfter(delay) = action {
                                    queue.add_after(key.clone(), delay);
                                }
                            }
                            Err(e) => {
                                let n = failed.entry(key.clone()).or_insert(0);
                                *n += 1;
                                let delay = backoff.delay(*n);
                                tracing::warn!(controller = name, object = %key, failures = *n, retry_in = ?delay, error = %e, "reconcile failed");
                                queue.add_after(key.clone(), delay);
                            }
                        }
                        queue.done(&key);
                    }
                }
            }
        };
        // Workers start once every store has listed; triggers before that only queue keys.
        tokio::join!(triggers, resync, workers);
    }
}
