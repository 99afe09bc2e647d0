//! The behaviour every [`Store`] must have, as one async function per behaviour. An implementation's
//! tests run them all with `store_suite!(<expression that builds a fresh store>)`; the expression may
//! `.await`, and may build a fixture that owns what the store needs (an etcd process) as long as it
//! implements [`SuiteStore`]. The store must keep [`SUITE_HISTORY`] events of history: at least that
//! many, and few enough more that the compaction test sees `TooOld` (etcd's keeps up to 1/8 more).

use std::time::Duration;

use futures::StreamExt;
use serde_json::json;

use super::{EventStream, Store, StoreError, StoreEvent, StoreEventKind};

/// The history length the suite's stores are built with.
pub(crate) const SUITE_HISTORY: u64 = 20;

/// What `store_suite!` builds for each test: a store, or something that owns one.
pub(crate) trait SuiteStore {
    fn store(&self) -> &dyn Store;
}

impl SuiteStore for super::SqliteStore {
    fn store(&self) -> &dyn Store {
        self
    }
}

async fn next(watch: &mut EventStream) -> StoreEvent {
    match tokio::time::timeout(Duration::from_secs(5), watch.next()).await {
        Ok(Some(Ok(e))) => e,
        Ok(Some(Err(e))) => panic!("the watch failed: {e}"),
        Ok(None) => panic!("the watch ended"),
        Err(_) => panic!("no watch event within 5 s"),
    }
}

async fn nothing_pending(watch: &mut EventStream) {
    if let Ok(e) = tokio::time::timeout(Duration::from_millis(100), watch.next()).await {
        panic!("unexpected watch item {e:?}");
    }
}

pub(crate) async fn create_get_update_delete_round_trip(store: &dyn Store) {
    assert!(store.get("/r/a").await.unwrap().is_none());
    let r1 = store.create("/r/a", json!({"v": 1})).await.unwrap();
    let got = store.get("/r/a").await.unwrap().unwrap();
    assert_eq!((got.value.clone(), got.create_rev, got.mod_rev), (json!({"v": 1}), r1, r1));
    let r2 = store.update("/r/a", json!({"v": 2}), Some(r1)).await.unwrap();
    assert!(r2 > r1);
    let got = store.get("/r/a").await.unwrap().unwrap();
    assert_eq!((got.value.clone(), got.create_rev, got.mod_rev), (json!({"v": 2}), r1, r2));
    let (old, r3) = store.delete("/r/a", Some(r2)).await.unwrap();
    assert_eq!(old, json!({"v": 2}));
    assert!(r3 > r2);
    assert!(store.get("/r/a").await.unwrap().is_none());
    assert_eq!(store.revision().await.unwrap(), r3);
}

pub(crate) async fn creating_an_existing_key_is_already_exists(store: &dyn Store) {
    store.create("/r/a", json!({})).await.unwrap();
    let rev = store.revision().await.unwrap();
    assert!(matches!(store.create("/r/a", json!({})).await, Err(StoreError::AlreadyExists { .. })));
    assert_eq!(store.revision().await.unwrap(), rev, "a refused write does not bump the revision");
}

pub(crate) async fn writes_with_a_stale_revision_conflict(store: &dyn Store) {
    let r1 = store.create("/r/a", json!({"v": 1})).await.unwrap();
    store.update("/r/a", json!({"v": 2}), Some(r1)).await.unwrap();
    match store.update("/r/a", json!({"v": 3}), Some(r1)).await {
        Err(StoreError::Conflict { expected, .. }) => assert_eq!(expected, r1),
        other => panic!("expected a conflict, got {other:?}"),
    }
    assert!(matches!(store.delete("/r/a", Some(r1)).await, Err(StoreError::Conflict { .. })));
    assert_eq!(store.get("/r/a").await.unwrap().unwrap().value, json!({"v": 2}));
    // Without a precondition the write goes through.
    store.update("/r/a", json!({"v": 4}), None).await.unwrap();
    assert_eq!(store.get("/r/a").await.unwrap().unwrap().value, json!({"v": 4}));
}

pub(crate) async fn writes_to_a_missing_key_are_not_found(store: &dyn Store) {
    assert!(matches!(store.update("/r/x", json!({}), None).await, Err(StoreError::NotFound { .. })));
    assert!(matches!(store.delete("/r/x", None).await, Err(StoreError::NotFound { .. })));
}

pub(crate) async fn every_write_bumps_the_revision_by_one(store: &dyn Store) {
    let start = store.revision().await.unwrap();
    let r1 = store.create("/r/a", json!({})).await.unwrap();
    let r2 = store.create("/r/b", json!({})).await.unwrap();
    let r3 = store.update("/r/a", json!({"x": 1}), None).await.unwrap();
    let (_, r4) = store.delete("/r/b", None).await.unwrap();
    assert_eq!(vec![r1, r2, r3, r4], vec![start + 1, start + 2, start + 3, start + 4]);
}

pub(crate) async fn list_returns_the_prefix_in_key_order_at_the_current_revision(store: &dyn Store) {
    store.create("/r/pods/ns1/b", json!({"n": "b"})).await.unwrap();
    store.create("/r/pods/ns1/a", json!({"n": "a"})).await.unwrap();
    store.create("/r/pods/ns10/c", json!({"n": "c"})).await.unwrap();
    let last = store.create("/r/nodes/_cluster/w1", json!({})).await.unwrap();
    let (items, rev) = store.list("/r/pods/ns1/").await.unwrap();
    assert_eq!(rev, last);
    let keys: Vec<&str> = items.iter().map(|i| i.key.as_str()).collect();
    assert_eq!(keys, vec!["/r/pods/ns1/a", "/r/pods/ns1/b"]);
    assert_eq!(items[0].value, json!({"n": "a"}));
    let (items, _) = store.list("/r/pods/").await.unwrap();
    assert_eq!(items.len(), 3);
    let (items, _) = store.list("/r/services/").await.unwrap();
    assert!(items.is_empty());
}

pub(crate) async fn list_at_a_past_revision_shows_the_prefix_as_it_was_then(store: &dyn Store) {
    let a1 = store.create("/r/pods/a", json!({"v": 1})).await.unwrap();
    let b1 = store.create("/r/pods/b", json!({"v": 1})).await.unwrap();
    let then = store.create("/r/pods/c", json!({"v": 1})).await.unwrap();
    // After `then`: a changed twice, b deleted, c deleted and made again, d new, a key outside.
    store.update("/r/pods/a", json!({"v": 2}), None).await.unwrap();
    store.update("/r/pods/a", json!({"v": 3}), None).await.unwrap();
    store.delete("/r/pods/b", None).await.unwrap();
    store.delete("/r/pods/c", None).await.unwrap();
    store.create("/r/pods/c", json!({"v": 2})).await.unwrap();
    store.create("/r/pods/d", json!({"v": 1})).await.unwrap();
    store.create("/r/other/e", json!({})).await.unwrap();
    let items = store.list_at("/r/pods/", then).await.unwrap();
    let seen: Vec<(&str, serde_json::Value, u64, u64)> = items.iter().map(|i| (i.key.as_str(), i.value.clone(), i.create_rev, i.mod_rev)).collect();
    assert_eq!(
        seen,
        vec![("/r/pods/a", json!({"v": 1}), a1, a1), ("/r/pods/b", json!({"v": 1}), b1, b1), ("/r/pods/c", json!({"v": 1}), then, then)]
    );
    let now = store.revision().await.unwrap();
    let (current, _) = store.list("/r/pods/").await.unwrap();
    assert_eq!(store.list_at("/r/pods/", now).await.unwrap(), current, "at the current revision, the current list");
    assert!(matches!(store.list_at("/r/pods/", now + 3).await, Err(StoreError::FutureRevision { .. })));
    for i in 0..SUITE_HISTORY + 5 {
        store.update("/r/pods/a", json!({"v": 10 + i}), None).await.unwrap();
    }
    assert!(matches!(store.list_at("/r/pods/", then).await, Err(StoreError::TooOld { .. })), "a compacted revision");
}

pub(crate) async fn watch_from_a_revision_replays_then_streams_live(store: &dyn Store) {
    let r1 = store.create("/r/a", json!({"v": 1})).await.unwrap();
    let r2 = store.update("/r/a", json!({"v": 2}), None).await.unwrap();
    let r3 = store.create("/r/b", json!({"v": 1})).await.unwrap();
    let mut watch = store.watch("/r/", Some(r1)).await.unwrap();
    let e = next(&mut watch).await;
    assert_eq!((e.kind, e.key.as_str(), e.rev, e.value.clone()), (StoreEventKind::Updated, "/r/a", r2, json!({"v": 2})));
    assert_eq!(e.prev_value, Some(json!({"v": 1})));
    let e = next(&mut watch).await;
    assert_eq!((e.kind, e.rev), (StoreEventKind::Created, r3));
    nothing_pending(&mut watch).await;
    let (_, r4) = store.delete("/r/a", None).await.unwrap();
    let r5 = store.create("/other/z", json!({})).await.unwrap();
    let r6 = store.update("/r/b", json!({"v": 2}), None).await.unwrap();
    let e = next(&mut watch).await;
    assert_eq!((e.kind, e.key.as_str(), e.rev, e.value.clone()), (StoreEventKind::Deleted, "/r/a", r4, json!({"v": 2})));
    let e = next(&mut watch).await;
    assert_eq!((e.kind, e.rev), (StoreEventKind::Updated, r6), "revision {r5} is outside the prefix");
}

pub(crate) async fn watch_without_a_revision_sees_only_new_writes(store: &dyn Store) {
    store.create("/r/a", json!({})).await.unwrap();
    let mut watch = store.watch("/r/", None).await.unwrap();
    nothing_pending(&mut watch).await;
    let rev = store.create("/r/b", json!({})).await.unwrap();
    let e = next(&mut watch).await;
    assert_eq!((e.key.as_str(), e.rev), ("/r/b", rev));
}

pub(crate) async fn watch_from_a_compacted_revision_is_too_old(store: &dyn Store) {
    let first = store.create("/r/a", json!({"v": 0})).await.unwrap();
    for i in 1..=SUITE_HISTORY + 5 {
        store.update("/r/a", json!({"v": i}), None).await.unwrap();
    }
    match store.watch("/r/", Some(first)).await {
        Err(StoreError::TooOld { requested, .. }) => assert_eq!(requested, first),
        Err(e) => panic!("expected too old, got {e}"),
        Ok(_) => panic!("expected too old, got a watch"),
    }
    // The recent past is still there.
    let current = store.revision().await.unwrap();
    let mut watch = store.watch("/r/", Some(current - 2)).await.unwrap();
    assert_eq!(next(&mut watch).await.rev, current - 1);
    assert_eq!(next(&mut watch).await.rev, current);
}

pub(crate) async fn watch_from_a_revision_ahead_of_the_store_is_refused(store: &dyn Store) {
    let current = store.create("/r/a", json!({})).await.unwrap();
    match store.watch("/r/", Some(current + 5)).await {
        Err(StoreError::FutureRevision { requested, current: at }) => assert_eq!((requested, at), (current + 5, current)),
        Err(e) => panic!("expected a future revision, got {e}"),
        Ok(_) => panic!("expected a future revision, got a watch"),
    }
    // The current revision itself is not ahead.
    let mut watch = store.watch("/r/", Some(current)).await.unwrap();
    let rev = store.create("/r/b", json!({})).await.unwrap();
    assert_eq!(next(&mut watch).await.rev, rev);
}

pub(crate) async fn a_watch_that_falls_behind_catches_up_in_order(store: &dyn Store) {
    let start = store.revision().await.unwrap();
    let mut watch = store.watch("/r/", Some(start)).await.unwrap();
    // More writes than the live buffer holds, nobody reading meanwhile.
    let n = 1500u64;
    store.create("/r/a", json!({"v": 0})).await.unwrap();
    for i in 1..n {
        store.update("/r/a", json!({"v": i}), None).await.unwrap();
    }
    for i in 0..n {
        let e = next(&mut watch).await;
        assert_eq!(e.rev, start + 1 + i);
    }
}

/// Defines one `#[tokio::test]` per suite behaviour, each on a fresh [`SuiteStore`] built by `$make`.
macro_rules! store_suite {
    ($make:expr) => {
        $crate::apiserver::store::suite::store_suite!(@tests $make;
            create_get_update_delete_round_trip,
            creating_an_existing_key_is_already_exists,
            writes_with_a_stale_revision_conflict,
            writes_to_a_missing_key_are_not_found,
            every_write_bumps_the_revision_by_one,
            list_returns_the_prefix_in_key_order_at_the_current_revision,
            list_at_a_past_revision_shows_the_prefix_as_it_was_then,
            watch_from_a_revision_replays_then_streams_live,
            watch_without_a_revision_sees_only_new_writes,
            watch_from_a_compacted_revision_is_too_old,
            watch_from_a_revision_ahead_of_the_store_is_refused,
        );
    };
    (@tests $make:expr; $($name:ident),* $(,)?) => {
        $(
            #[tokio::test]
            async fn $name() {
                let fixture = $make;
                $crate::apiserver::store::suite::$name($crate::apiserver::store::suite::SuiteStore::store(&fixture)).await;
            }
        )*
    };
}
pub(crate) use store_suite;
