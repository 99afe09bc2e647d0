//! The runtime's guarantees, on the fake client and tokio's paused clock.

use std::collections::HashMap;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use serde_json::json;
use tokio::time::Instant;

use super::fake::FakeClient;
use super::*;
use crate::api::ObjectMeta;
use crate::api::deployment::Deployment;
use crate::api::resource::DEPLOYMENTS;
use crate::client::ListOptions;

fn key(name: &str) -> ObjectKey {
    ObjectKey::namespaced("default", name)
}

/// When each reconcile of each key started.
#[derive(Default)]
struct Log {
    starts: Mutex<Vec<(ObjectKey, Instant)>>,
    running: Mutex<HashMap<ObjectKey, usize>>,
    most_at_once: AtomicUsize,
}

impl Log {
    fn start(&self, key: &ObjectKey) {
        self.starts.lock().unwrap().push((key.clone(), Instant::now()));
        let mut running = self.running.lock().unwrap();
        let n = running.entry(key.clone()).or_default();
        *n += 1;
        self.most_at_once.fetch_max(*n, Ordering::SeqCst);
    }

    fn end(&self, key: &ObjectKey) {
        *self.running.lock().unwrap().get_mut(key).unwrap() -= 1;
    }

    fn gaps(&self, of: &ObjectKey) -> Vec<Duration> {
        let starts: Vec<Instant> = self.starts.lock().unwrap().iter().filter(|(k, _)| k == of).map(|(_, t)| *t).collect();
        starts.windows(2).map(|w| w[1] - w[0]).collect()
    }

    fn count(&self, of: &ObjectKey) -> usize {
        self.starts.lock().unwrap().iter().filter(|(k, _)| k == of).count()
    }
}

/// The outcomes a test's reconcile returns, one per call.
type Outcomes = Arc<Mutex<Vec<Result<Action, &'static str>>>>;

#[tokio::test]
async fn a_key_queued_twice_is_handed_out_once() {
    let queue = WorkQueue::new();
    queue.add(key("a"));
    queue.add(key("a"));
    queue.add_after(key("a"), Duration::from_secs(60));
    assert_eq!(queue.len(), 1);
    assert_eq!(queue.next().await, key("a"));
    assert!(queue.is_empty());
}

#[tokio::test(start_paused = true)]
async fn a_key_queued_while_handed_out_waits_until_it_is_done() {
    let queue = WorkQueue::new();
    queue.add(key("a"));
    assert_eq!(queue.next().await, key("a"));
    queue.add(key("a"));
    queue.add(key("b"));
    assert_eq!(queue.next().await, key("b"), "a is still being worked on");
    assert!(tokio::time::timeout(Duration::from_secs(5), queue.next()).await.is_err(), "a is not handed out twice at once");
    queue.done(&key("a"));
    assert_eq!(queue.next().await, key("a"), "and is handed out again once done");
}

#[tokio::test(start_paused = true)]
async fn a_key_queued_for_later_is_handed_out_when_due() {
    let queue = WorkQueue::new();
    let start = Instant::now();
    queue.add_after(key("late"), Duration::from_secs(10));
    queue.add_after(key("early"), Duration::from_secs(2));
    assert_eq!(queue.next().await, key("early"));
    assert_eq!(queue.next().await, key("late"));
    assert_eq!(Instant::now() - start, Duration::from_secs(10));
}

#[test]
fn back_off_doubles_per_failure_up_to_its_maximum() {
    let b = Backoff { initial: Duration::from_millis(500), max: Duration::from_secs(5) };
    let delays: Vec<Duration> = (1..=6).map(|n| b.delay(n)).collect();
    assert_eq!(delays, [500, 1000, 2000, 4000, 5000, 5000].map(Duration::from_millis));
    assert_eq!(b.delay(200), Duration::from_secs(5));
}

/// A store with nothing feeding it, synced empty, for controllers driven by hand.
fn synced_store() -> Store<Deployment> {
    let store = Store::new();
    store.replace_all(Vec::new(), 1);
    store
}

fn deployment(name: &str) -> Deployment {
    Deployment { metadata: ObjectMeta::namespaced("default", name), ..Default::default() }
}

#[tokio::test(start_paused = true)]
async fn no_two_reconciles_of_one_key_run_at_once_and_a_change_meanwhile_reconciles_it_again() {
    let store = synced_store();
    let log = Arc::new(Log::default());
    let controller = Controller::new("test").watches(&store, |d: &Deployment| vec![d.key()]).concurrency(4);
    let task = tokio::spawn(controller.run(
        |key, log: Arc<Log>| async move {
            log.start(&key);
            tokio::time::sleep(Duration::from_secs(1)).await;
            log.end(&key);
            Ok::<_, String>(Action::AwaitChange)
        },
        log.clone(),
    ));
    store.apply(crate::api::WatchEventType::Added, deployment("a"), 2);
    tokio::time::sleep(Duration::from_millis(100)).await;
    // Changes while the first reconcile runs: five of a, one of b.
    for rev in 3..8 {
        store.apply(crate::api::WatchEventType::Modified, deployment("a"), rev);
    }
    store.apply(crate::api::WatchEventType::Added, deployment("b"), 8);
    tokio::time::sleep(Duration::from_secs(10)).await;
    task.abort();
    assert_eq!(log.most_at_once.load(Ordering::SeqCst), 1, "never two reconciles of one key at once");
    assert_eq!(log.count(&key("a")), 2, "the changes during the first reconcile are one more, after it");
    assert_eq!(log.count(&key("b")), 1, "b ran beside a");
}

#[tokio::test(start_paused = true)]
async fn a_failing_key_backs_off_exponentially_and_a_success_resets_it() {
    let store = synced_store();
    let log = Arc::new(Log::default());
    let outcomes = Arc::new(Mutex::new(vec![Err("e1"), Err("e2"), Err("e3"), Ok(Action::RequeueAfter(Duration::from_secs(1))), Err("e4"), Ok(Action::AwaitChange)]));
    let controller = Controller::new("test").backoff(Backoff { initial: Duration::from_secs(1), max: Duration::from_secs(60) });
    let queue = controller.queue();
    let ctx = (log.clone(), outcomes.clone());
    let task = tokio::spawn(controller.watches(&store, |d: &Deployment| vec![d.key()]).run(
        |key, ctx: Arc<(Arc<Log>, Outcomes)>| async move {
            ctx.0.start(&key);
            ctx.0.end(&key);
            ctx.1.lock().unwrap().remove(0)
        },
        Arc::new(ctx),
    ));
    queue.add(key("a"));
    tokio::time::sleep(Duration::from_secs(60)).await;
    task.abort();
    // Failures 1, 2, 3 wait 1 s, 2 s, 4 s; the success asks for 1 s; the next failure starts at 1 s again.
    assert_eq!(log.gaps(&key("a")), [1, 2, 4, 1, 1].map(Duration::from_secs));
}

#[tokio::test(start_paused = true)]
async fn requeue_after_reconciles_again_after_that_time_without_a_change() {
    let store = synced_store();
    let log = Arc::new(Log::default());
    let controller = Controller::new("test").watches(&store, |d: &Deployment| vec![d.key()]);
    let queue = controller.queue();
    let task = tokio::spawn(controller.run(
        |key, log: Arc<Log>| async move {
            log.start(&key);
            log.end(&key);
            Ok::<_, String>(Action::RequeueAfter(Duration::from_secs(7)))
        },
        log.clone(),
    ));
    queue.add(key("a"));
    tokio::time::sleep(Duration::from_secs(22)).await;
    task.abort();
    assert_eq!(log.gaps(&key("a")), [7, 7, 7].map(Duration::from_secs));
}

#[tokio::test(start_paused = true)]
async fn resync_reconciles_every_key_periodically_and_await_change_waits_for_it() {
    let store = synced_store();
    store.apply(crate::api::WatchEventType::Added, deployment("a"), 2);
    store.apply(crate::api::WatchEventType::Added, deployment("b"), 3);
    let log = Arc::new(Log::default());
    let controller = Controller::new("test").owns(&store, Duration::from_secs(30));
    let task = tokio::spawn(controller.run(
        |key, log: Arc<Log>| async move {
            log.start(&key);
            log.end(&key);
            Ok::<_, String>(Action::AwaitChange)
        },
        log.clone(),
    ));
    tokio::time::sleep(Duration::from_secs(65)).await;
    task.abort();
    assert_eq!(log.count(&key("a")), 3, "at 0, 30 and 60 s");
    assert_eq!(log.gaps(&key("b")), [30, 30].map(Duration::from_secs));
}

/// A resync every second must not turn a failing key's back-off into a retry every second.
#[tokio::test(start_paused = true)]
async fn a_resync_does_not_cut_a_back_off_short() {
    let store = synced_store();
    store.apply(crate::api::WatchEventType::Added, deployment("a"), 2);
    let log = Arc::new(Log::default());
    let controller = Controller::new("test").owns(&store, Duration::from_secs(1)).backoff(Backoff { initial: Duration::from_secs(2), max: Duration::from_secs(8) });
    let task = tokio::spawn(controller.run(
        |key, log: Arc<Log>| async move {
            log.start(&key);
            log.end(&key);
            Err::<Action, _>("always fails")
        },
        log.clone(),
    ));
    tokio::time::sleep(Duration::from_secs(31)).await;
    task.abort();
    assert_eq!(log.gaps(&key("a")), [2, 4, 8, 8, 8].map(Duration::from_secs));
}

#[tokio::test(start_paused = true)]
async fn reconciles_wait_for_every_store_to_list_first() {
    let fed = synced_store();
    let unsynced: Store<Deployment> = Store::new();
    let log = Arc::new(Log::default());
    let controller = Controller::new("test").owns(&fed, Duration::from_secs(30)).watches(&unsynced, |d: &Deployment| vec![d.key()]);
    let queue = controller.queue();
    let task = tokio::spawn(controller.run(
        |key, log: Arc<Log>| async move {
            log.start(&key);
            log.end(&key);
            Ok::<_, String>(Action::AwaitChange)
        },
        log.clone(),
    ));
    queue.add(key("a"));
    tokio::time::sleep(Duration::from_secs(5)).await;
    assert_eq!(log.count(&key("a")), 0);
    unsynced.replace_all(vec![], 1);
    tokio::time::sleep(Duration::from_secs(1)).await;
    assert_eq!(log.count(&key("a")), 1);
    task.abort();
}

async fn eventually(what: &str, check: impl Fn() -> bool) {
    let deadline = Instant::now() + Duration::from_secs(30);
    while !check() {
        assert!(Instant::now() < deadline, "timed out waiting until {what}");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

#[tokio::test(start_paused = true)]
async fn an_object_that_does_not_decode_is_skipped_and_the_reflector_keeps_going() {
    let fake = FakeClient::new();
    fake.insert_raw(&DEPLOYMENTS, json!({"apiVersion": "apps/v1", "kind": "Deployment", "metadata": {"name": "bad", "namespace": "default"}, "spec": {"replicas": "three"}}));
    fake.create(&deployment("good")).await.unwrap();
    let store: Store<Deployment> = Store::reflect(fake.clone(), None, ListOptions::default());
    store.wait_synced().await;
    assert_eq!(store.keys(), [key("good")], "the list skipped the bad object, not failed");

    // Through the watch: a bad change removes the object, a good one after it still arrives.
    fake.insert_raw(&DEPLOYMENTS, json!({"apiVersion": "apps/v1", "kind": "Deployment", "metadata": {"name": "good", "namespace": "default"}, "spec": {"replicas": "many"}}));
    fake.create(&deployment("later")).await.unwrap();
    eventually("the later deployment is seen", || store.get(&key("later")).is_some()).await;
    assert_eq!(store.keys(), [key("later")]);
}

#[tokio::test(start_paused = true)]
async fn the_reflector_lists_again_after_410_gone_and_after_a_watch_ends() {
    let fake = FakeClient::new();
    fake.create(&deployment("a")).await.unwrap();
    let store: Store<Deployment> = Store::reflect(fake.clone(), None, ListOptions::default());
    store.wait_synced().await;
    let mut changes = store.subscribe();

    fake.compact();
    fake.create(&deployment("b")).await.unwrap();
    eventually("b is seen after the 410", || store.get(&key("b")).is_some()).await;

    fake.end_watches();
    fake.delete::<Deployment>(&key("a")).await.unwrap();
    eventually("a's deletion is seen after the watch ended", || store.get(&key("a")).is_none()).await;
    assert!(changes.try_recv().is_ok(), "subscribers heard of the changes");
    let rev = fake.create(&deployment("c")).await.unwrap().metadata.revision().unwrap();
    assert!(store.wait_for(rev, Duration::from_secs(5)).await);
}

#[tokio::test]
async fn the_fake_refuses_a_stale_resource_version_and_keeps_status_apart() {
    let fake = FakeClient::new();
    let created = fake.create(&deployment("a")).await.unwrap();
    let mut changed = created.clone();
    changed.spec.replicas = Some(2);
    changed.status.ready_replicas = 5;
    let written = fake.replace(&changed).await.unwrap();
    assert_eq!(written.spec.replicas, Some(2));
    assert_eq!(written.status.ready_replicas, 0, "a plain update leaves the status");
    assert!(fake.replace(&changed).await.unwrap_err().is_conflict(), "the first write made the version stale");
    fake.fail_next("delete", &DEPLOYMENTS, 1, 500);
    assert!(fake.delete::<Deployment>(&key("a")).await.unwrap_err().is_retryable());
    fake.delete::<Deployment>(&key("a")).await.unwrap();
    assert_eq!(fake.writes(), ["create deployments default/a", "replace deployments default/a", "delete deployments default/a"]);
}

/// The recorder aggregates repeats into one Event's count, keeps different messages apart, and
/// names the object, the component and the times.
#[tokio::test(start_paused = true)]
async fn the_recorder_counts_repeats_of_an_event_on_one_object() {
    use crate::api::event::{Event, NORMAL, WARNING};
    use super::events::Recorder;
    let fake = FakeClient::new();
    let d = fake.create(&deployment("web")).await.unwrap();
    let recorder = Recorder::new(fake.clone(), "deployment-controller", "");
    for _ in 0..3 {
        recorder.record(&d, WARNING, "FailedCreate", "Error creating: quota");
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    recorder.record(&d, NORMAL, "ScalingReplicaSet", "Scaled up replica set web-1 from 0 to 2");
    tokio::time::sleep(Duration::from_millis(10)).await;
    let mut events = fake.objects::<Event>();
    events.sort_by_key(|e| e.reason.clone());
    assert_eq!(events.len(), 2, "{events:?}");
    let failed = &events[0];
    assert_eq!((failed.reason.as_str(), failed.count, failed.event_type.as_str()), ("FailedCreate", 3, "Warning"));
    assert_eq!((failed.involved_object.kind.as_str(), failed.involved_object.name.as_str(), failed.involved_object.uid.as_str()), ("Deployment", "web", d.metadata.uid.as_str()));
    assert_eq!(failed.involved_object.api_version, "apps/v1");
    assert_eq!(failed.metadata.namespace.as_deref(), Some("default"));
    assert_eq!(failed.source.component, "deployment-controller");
    assert!(failed.first_timestamp.is_some() && failed.last_timestamp.is_some());
    assert_eq!(events[1].count, 1);
}
