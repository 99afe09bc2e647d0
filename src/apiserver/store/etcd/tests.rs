//! The store suite and the cluster operations against real etcd processes on loopback.

use std::time::{Duration, Instant};

use futures::StreamExt;
use serde_json::json;

use super::*;
use crate::apiserver::store::etcd_process::{EtcdProcess, MemberConfig, TestPki, chain, free_ports};
use crate::apiserver::store::suite::{self, SuiteStore};

/// A store on its own single-member etcd (revisions are global, so the suite needs one each).
struct OwnEtcd {
    store: EtcdStore,
    _etcd: EtcdProcess,
}

impl SuiteStore for OwnEtcd {
    fn store(&self) -> &dyn Store {
        &self.store
    }
}

async fn own_etcd(history: u64) -> OwnEtcd {
    let etcd = EtcdProcess::start(None).await;
    let store = EtcdStore::connect(EtcdProcess::options(&[&etcd], None).with_history(history)).await.unwrap();
    OwnEtcd { store, _etcd: etcd }
}

suite::store_suite!(own_etcd(suite::SUITE_HISTORY).await);

#[tokio::test]
async fn a_watch_that_falls_behind_catches_up_in_order() {
    let fixture = own_etcd(DEFAULT_HISTORY).await;
    suite::a_watch_that_falls_behind_catches_up_in_order(&fixture.store).await;
}

async fn next_item(watch: &mut EventStream) -> Option<Result<StoreEvent, StoreError>> {
    tokio::time::timeout(Duration::from_secs(10), watch.next()).await.expect("no watch item within 10 s")
}

#[tokio::test]
async fn several_stores_on_one_etcd_share_objects_revisions_conflicts_and_compaction() {
    let etcd = EtcdProcess::start(None).await;
    let options = EtcdProcess::options(&[&etcd], None).with_history(suite::SUITE_HISTORY);
    let a = EtcdStore::connect(options.clone()).await.unwrap();
    let b = EtcdStore::connect(options).await.unwrap();

    let r1 = a.create("/r/x", json!({"v": 1})).await.unwrap();
    assert!(matches!(b.create("/r/x", json!({})).await, Err(StoreError::AlreadyExists { .. })));
    assert_eq!(b.get("/r/x").await.unwrap().unwrap().mod_rev, r1);
    let mut watch = b.watch("/r/", Some(r1)).await.unwrap();
    let r2 = b.update("/r/x", json!({"v": 2}), Some(r1)).await.unwrap();
    match a.update("/r/x", json!({"v": 3}), Some(r1)).await {
        Err(StoreError::Conflict { expected, actual, .. }) => assert_eq!((expected, actual), (r1, r2)),
        other => panic!("expected a conflict, got {other:?}"),
    }
    let e = next_item(&mut watch).await.unwrap().unwrap();
    assert_eq!((e.kind, e.rev, e.prev_value), (StoreEventKind::Updated, r2, Some(json!({"v": 1}))));

    // Both compact on their own writes; neither trips over the other's compaction.
    for i in 0..2 * suite::SUITE_HISTORY {
        let store = if i % 2 == 0 { &a } else { &b };
        store.update("/r/x", json!({"v": i}), None).await.unwrap();
    }
    let current = a.revision().await.unwrap();
    assert_eq!(b.revision().await.unwrap(), current);
    for store in [&a, &b] {
        match store.watch("/r/", Some(r1)).await {
            Err(StoreError::TooOld { requested, compacted }) => {
                assert_eq!(requested, r1);
                assert!(compacted > r1 && compacted <= current - suite::SUITE_HISTORY, "etcd compacted to {compacted} at {current}");
            }
            Err(e) => panic!("expected too old, got {e}"),
            Ok(_) => panic!("expected too old, got a watch"),
        }
        let _recent = store.watch("/r/", Some(current - suite::SUITE_HISTORY)).await.unwrap();
    }
}

#[tokio::test]
async fn a_watch_that_etcd_cancels_for_compaction_ends_too_old() {
    let fixture = own_etcd(suite::SUITE_HISTORY).await;
    let store = &fixture.store;
    let first = store.create("/r/a", json!({"v": 0})).await.unwrap();
    for i in 1..=2 * suite::SUITE_HISTORY {
        store.update("/r/a", json!({"v": i}), None).await.unwrap();
    }
    // What a watch created just before a compaction meets: etcd accepts it, then cancels it.
    let options = WatchOptions::new().with_prefix().with_prev_key().with_start_revision(to_etcd(first + 1));
    let mut raw = store.client().watch_client().watch("/r/", Some(options)).await.unwrap();
    assert!(raw.message().await.unwrap().unwrap().created());
    let mut watch = follow(raw, "/r/".into(), first);
    match next_item(&mut watch).await {
        Some(Err(StoreError::TooOld { requested, compacted })) => assert_eq!(requested, first, "compacted at {compacted}"),
        other => panic!("expected too old, got {other:?}"),
    }
    assert!(next_item(&mut watch).await.is_none(), "the watch ends after the error");
}

#[tokio::test]
async fn a_watch_ends_with_a_backend_error_when_etcd_dies() {
    let mut fixture = own_etcd(DEFAULT_HISTORY).await;
    let mut watch = fixture.store.watch("/r/", None).await.unwrap();
    let rev = fixture.store.create("/r/a", json!({})).await.unwrap();
    assert_eq!(next_item(&mut watch).await.unwrap().unwrap().rev, rev);
    fixture._etcd.kill();
    match next_item(&mut watch).await {
        Some(Err(e @ StoreError::Backend { .. })) => assert!(chain(&e).contains("watching /r/"), "{}", chain(&e)),
        other => panic!("expected a backend error, got {other:?}"),
    }
    assert!(next_item(&mut watch).await.is_none(), "the watch ends after the error");
    // Requests to a dead etcd are retried for the retry budget, then fail instead of hanging.
    let started = Instant::now();
    assert!(matches!(fixture.store.revision().await, Err(StoreError::Backend { .. })));
    assert!(started.elapsed() < RETRY_BUDGET + REQUEST_TIMEOUT, "took {:?}", started.elapsed());
}

#[tokio::test]
async fn a_store_reaches_etcd_over_tls_with_certificates_of_the_cluster_ca() {
    let pki = TestPki::generate();
    let etcd = EtcdProcess::start(Some(&pki.ca)).await;
    assert!(etcd.client_url.starts_with("https://"));
    let store = EtcdStore::connect(EtcdProcess::options(&[&etcd], Some(&pki))).await.unwrap();
    let mut watch = store.watch("/r/", None).await.unwrap();
    let rev = store.create("/r/a", json!({"v": 1})).await.unwrap();
    assert_eq!(store.get("/r/a").await.unwrap().unwrap().value, json!({"v": 1}));
    assert_eq!(next_item(&mut watch).await.unwrap().unwrap().rev, rev);

    // etcd checks client certificates: one from another CA is refused.
    let other = TestPki::generate();
    let stranger = EtcdTls { ca_pem: pki.client.ca_pem.clone(), ..other.client };
    let store = EtcdStore::connect(EtcdProcess::options(&[&etcd], None).with_tls(stranger)).await.unwrap();
    match store.revision().await {
        Err(StoreError::Backend { .. }) => {}
        other => panic!("a client certificate from another CA was accepted: {other:?}"),
    }
}

/// A client certificate's end refuses new connections made with it; the store connects again
/// with the renewed one and carries on (what a master does when it renews its etcd certificates).
#[tokio::test]
async fn a_store_connects_again_with_a_renewed_client_certificate() {
    let pki = TestPki::generate();
    let etcd = EtcdProcess::start(Some(&pki.ca)).await;
    let short = pki.ca.issue_client_valid_for("clusterctl-apiserver", &[], Duration::from_secs(2)).unwrap();
    let expiring = EtcdTls { cert_pem: short.cert_pem, key_pem: short.key_pem, ..pki.client.clone() };
    let store = EtcdStore::connect(EtcdProcess::options(&[&etcd], None).with_tls(expiring.clone())).await.unwrap();
    store.create("/r/a", json!({"v": 1})).await.unwrap();
    tokio::time::sleep(Duration::from_secs(3)).await;
    let late = EtcdStore::connect(EtcdProcess::options(&[&etcd], None).with_tls(expiring)).await.unwrap();
    // Refused: an error, or (while the client retries the handshake) no answer within 3 s.
    let refused = tokio::time::timeout(Duration::from_secs(3), late.revision()).await.map_or(true, |r| r.is_err());
    assert!(refused, "etcd refuses an expired client certificate");
    store.reconnect(&pki.client).await.unwrap();
    assert_eq!(store.get("/r/a").await.unwrap().unwrap().value, json!({"v": 1}));
    store.create("/r/b", json!({"v": 2})).await.unwrap();
}

#[tokio::test]
async fn a_single_member_reports_itself_and_writes_a_snapshot_etcdctl_can_read() {
    let etcd = EtcdProcess::start(None).await;
    let options = EtcdProcess::options(&[&etcd], None);
    let store = EtcdStore::connect(options.clone()).await.unwrap();
    let rev = store.create("/r/a", json!({"v": 1})).await.unwrap();
    let cluster = EtcdCluster::connect(&options).await.unwrap();

    let members = cluster.members().await.unwrap();
    assert_eq!(members.len(), 1);
    assert_eq!((members[0].name.as_str(), members[0].client_urls.clone(), members[0].peer_urls.clone()), ("m0", vec![etcd.client_url.clone()], vec![etcd.peer_url.clone()]));
    let statuses = cluster.endpoint_status().await;
    let status = statuses[0].status.as_ref().unwrap();
    assert!(status.is_leader() && status.healthy(), "{status:?}");
    assert_eq!((status.member_id, status.revision), (members[0].id, rev));

    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("etcd.snapshot");
    let size = cluster.snapshot_to(&path).await.unwrap();
    assert_eq!(std::fs::metadata(&path).unwrap().len(), size);
    let out = std::process::Command::new("/usr/bin/etcdctl")
        .args(["snapshot", "status", "--write-out=json"])
        .arg(&path)
        .env("ETCDCTL_API", "3")
        .output()
        .expect("etcdctl runs (scripts/lib/ensure-packages installs it)");
    assert!(out.status.success(), "etcdctl snapshot status: {}", String::from_utf8_lossy(&out.stderr));
    let status: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(status["revision"].as_u64(), Some(rev), "{status}");
}

#[tokio::test]
async fn a_member_left_mostly_free_by_compaction_is_defragmented() {
    let etcd = EtcdProcess::start(None).await;
    let options = EtcdProcess::options(&[&etcd], None).with_history(16);
    let store = EtcdStore::connect(options.clone()).await.unwrap();
    let cluster = EtcdCluster::connect(&options).await.unwrap();
    // A fresh member's file (32 KiB) may well be half free: not worth a defragmentation at the
    // 1 MiB floor used below (asking with 0 made this test fail about 1 run in 20).
    assert_eq!(cluster.defragment_when_fragmented(1 << 20).await.unwrap(), None, "a fresh member is not fragmented");
    let blob = "x".repeat(16 * 1024);
    for i in 0..200 {
        store.create(&format!("/r/big-{i}"), json!({ "blob": blob })).await.unwrap();
    }
    for i in 0..200 {
        store.delete(&format!("/r/big-{i}"), None).await.unwrap();
    }
    // The store compacts as it writes; a few more writes take it past the deletions.
    for i in 0..20 {
        store.create(&format!("/r/small-{i}"), json!({ "i": i })).await.unwrap();
    }
    assert_eq!(cluster.defragment_when_fragmented(1 << 40).await.unwrap(), None, "less free than asked for");
    let (before, after) = cluster.defragment_when_fragmented(1 << 20).await.unwrap().expect("defragmented");
    assert!(before > 3 << 20 && after * 4 < before, "{before} bytes before, {after} after");
    assert_eq!(store.get("/r/small-19").await.unwrap().unwrap().value, json!({ "i": 19 }), "the data is still there");
}

/// Three members and a store given only the first, as a master's API server is given its own.
async fn store_on_the_first_of_three() -> (Vec<EtcdProcess>, String, EtcdStore) {
    let members = EtcdProcess::start_cluster(3, None).await;
    let first = members[0].client_url.clone();
    let store = EtcdStore::connect(EtcdProcess::options(&[&members[0]], None)).await.unwrap();
    (members, first, store)
}

#[tokio::test]
async fn a_store_follows_the_members_and_keeps_serving_when_the_one_it_was_given_dies() {
    let (mut members, first, store) = store_on_the_first_of_three().await;
    let (added, removed) = store.sync_endpoints(std::slice::from_ref(&first)).await.unwrap();
    let mut expected = vec![members[1].client_url.clone(), members[2].client_url.clone()];
    expected.sort();
    assert_eq!((added, removed), (expected, vec![]));
    assert_eq!(store.sync_endpoints(std::slice::from_ref(&first)).await.unwrap(), (vec![], vec![]), "nothing changed");
    store.create("/r/before", json!({})).await.unwrap();

    // The member it was given dies: the others serve it.
    members[0].kill();
    let deadline = Instant::now() + Duration::from_secs(20);
    let mut attempt = 0;
    while let Err(e) = store.create(&format!("/r/after-{attempt}"), json!({})).await {
        assert!(Instant::now() < deadline, "no write succeeded within 20 s without the first member: {}", chain(&e));
        attempt += 1;
    }
    assert!(store.get("/r/before").await.unwrap().is_some());
}

#[tokio::test]
async fn a_member_that_does_not_answer_is_left_out_of_the_balancer() {
    let (mut members, first, store) = store_on_the_first_of_three().await;
    let (added, _) = store.sync_endpoints(std::slice::from_ref(&first)).await.unwrap();
    assert_eq!(added.len(), 2);
    let dead = members[2].client_url.clone();
    members[2].kill();
    assert_eq!(store.sync_endpoints(std::slice::from_ref(&first)).await.unwrap(), (vec![], vec![dead]), "still a member, but not answering");
    store.create("/r/without-it", json!({})).await.unwrap();
}

#[tokio::test]
async fn a_three_member_cluster_keeps_serving_without_a_member_and_replaces_it() {
    let pki = TestPki::generate();
    let mut members = EtcdProcess::start_cluster(3, Some(&pki.ca)).await;
    let options = EtcdProcess::options(&members.iter().collect::<Vec<_>>(), Some(&pki));
    let store = EtcdStore::connect(options.clone()).await.unwrap();
    let cluster = EtcdCluster::connect(&options).await.unwrap();
    store.create("/r/before", json!({})).await.unwrap();
    let listed = cluster.members().await.unwrap();
    let mut names: Vec<&str> = listed.iter().map(|m| m.name.as_str()).collect();
    names.sort();
    assert_eq!(names, ["m0", "m1", "m2"]);
    let statuses = cluster.endpoint_status().await;
    assert_eq!(statuses.iter().filter(|s| s.status.as_ref().is_ok_and(MemberStatus::is_leader)).count(), 1, "{statuses:?}");

    // The leader dies. Writes may fail until the others have elected a new one; after that every
    // request through the balanced client works, promptly, although one endpoint is dead.
    let leader = statuses.iter().position(|s| s.status.as_ref().is_ok_and(MemberStatus::is_leader)).unwrap();
    let dead = members.remove(leader);
    let dead_id = listed.iter().find(|m| m.name == dead.name).unwrap().id;
    let dead_url = dead.client_url.clone();
    drop(dead);
    let deadline = Instant::now() + Duration::from_secs(20);
    let mut attempt = 0;
    while let Err(e) = store.create(&format!("/r/election-{attempt}"), json!({})).await {
        assert!(Instant::now() < deadline, "no write succeeded within 20 s of the leader's death: {}", chain(&e));
        attempt += 1;
    }
    for i in 0..20 {
        let started = Instant::now();
        // A write whose outcome is unknown (sent on a connection to the dead member that broke
        // under it) fails rather than being retried blindly; the caller's retry goes through.
        let key = format!("/r/while-down-{i}");
        if let Err(first) = store.create(&key, json!({})).await {
            match store.create(&key, json!({})).await {
                Ok(_) | Err(StoreError::AlreadyExists { .. }) => {}
                Err(e) => panic!("a write failed twice with a member down: {} / {}", chain(&first), chain(&e)),
            }
        }
        store.list("/r/").await.unwrap();
        assert!(started.elapsed() < Duration::from_secs(2), "a write and a list took {:?} with a member down", started.elapsed());
    }
    let statuses = cluster.endpoint_status().await;
    for status in &statuses {
        assert_eq!(status.status.is_err(), status.endpoint == dead_url, "{statuses:?}");
    }

    // Replace it: remove the dead member, add a new one, start it joining the existing cluster.
    cluster.remove_member(dead_id).await.unwrap();
    assert_eq!(cluster.members().await.unwrap().len(), 2);
    let ports = free_ports(2);
    let config = MemberConfig { name: "m3".into(), client_port: ports[0], peer_port: ports[1], initial_cluster: String::new(), existing: true, tls: Some(&pki.ca) };
    let added = cluster.add_member(&config.peer_url()).await.unwrap();
    let initial_cluster = added.initial_cluster("m3");
    assert!(initial_cluster.contains(&format!("m3={}", config.peer_url())) && initial_cluster.split(',').count() == 3, "{initial_cluster}");
    let mut joined = EtcdProcess::spawn(&MemberConfig { initial_cluster, ..config });
    joined.wait_ready(Some(&pki.ca)).await;
    let listed = cluster.members().await.unwrap();
    assert!(listed.iter().any(|m| m.id == added.id && m.name == "m3" && m.client_urls == [joined.client_url.clone()]), "{listed:?}");

    // The new member serves the whole keyspace.
    let on_new = EtcdStore::connect(EtcdProcess::options(&[&joined], Some(&pki))).await.unwrap();
    let (items, _) = on_new.list("/r/").await.unwrap();
    assert!(items.len() >= 22, "{} objects", items.len());
    assert!(on_new.get("/r/while-down-19").await.unwrap().is_some());
}

#[tokio::test]
async fn a_list_larger_than_a_page_is_read_at_one_revision() {
    let fixture = own_etcd(DEFAULT_HISTORY).await;
    let store = &fixture.store;
    let n = LIST_PAGE as usize + 5;
    let puts: Vec<TxnOp> = (0..n).map(|i| TxnOp::put(format!("/r/k{i:05}"), "{}", None)).collect();
    // One transaction writes them all at one revision (etcd allows 128 operations per transaction by default).
    for chunk in puts.chunks(100) {
        store.client().kv_client().txn(Txn::new().and_then(chunk.to_vec())).await.unwrap();
    }
    let (items, rev) = store.list("/r/").await.unwrap();
    assert_eq!(items.len(), n);
    assert!(items.windows(2).all(|w| w[0].key < w[1].key));
    assert_eq!(rev, store.revision().await.unwrap());
}

#[tokio::test]
async fn a_value_that_is_not_json_is_corrupt() {
    let fixture = own_etcd(DEFAULT_HISTORY).await;
    fixture.store.client().kv_client().put("/r/bad", "not json", None).await.unwrap();
    assert!(matches!(fixture.store.get("/r/bad").await, Err(StoreError::Corrupt { .. })));
    assert!(matches!(fixture.store.list("/r/").await, Err(StoreError::Corrupt { .. })));
}

#[test]
fn prefix_range_end_is_the_next_key() {
    assert_eq!(prefix_range_end(b"/registry/pods/"), b"/registry/pods0");
    assert_eq!(prefix_range_end(b"a\xff"), b"b");
    assert_eq!(prefix_range_end(b""), b"\0");
}

#[test]
fn initial_cluster_names_the_new_member() {
    let member = |id, name: &str, port| EtcdMember { id, name: name.into(), peer_urls: vec![format!("https://10.0.1.{port}:2380")], client_urls: vec![] };
    let added = AddedMember { id: 3, members: vec![member(1, "m1", 1), member(3, "", 3)] };
    assert_eq!(added.initial_cluster("m3"), "m1=https://10.0.1.1:2380,m3=https://10.0.1.3:2380");
}

/// Every event a watch from `from` delivers within `quiet` of the last one.
async fn events_since(store: &EtcdStore, from: u64, quiet: Duration) -> Vec<StoreEvent> {
    let mut watch = store.watch("/r/", Some(from)).await.unwrap();
    let mut events = Vec::new();
    while let Ok(Some(item)) = tokio::time::timeout(quiet, watch.next()).await {
        events.push(item.unwrap());
    }
    events
}

#[tokio::test]
async fn a_write_whose_answer_was_lost_answers_as_its_first_attempt_would_have_and_applies_once() {
    let fixture = own_etcd(DEFAULT_HISTORY).await;
    let store = &fixture.store;
    let start = store.revision().await.unwrap();
    let lose_next_answer = || store.lose_answers.store(1, Ordering::Release);

    // A create that committed but whose answer was lost is not reported as "already exists".
    lose_next_answer();
    let created = store.create("/r/a", json!({"v": 1})).await.unwrap();
    assert_eq!(store.get("/r/a").await.unwrap().unwrap().create_rev, created);
    // An update, and an update without an expected revision.
    lose_next_answer();
    let updated = store.update("/r/a", json!({"v": 2}), Some(created)).await.unwrap();
    lose_next_answer();
    let replaced = store.update("/r/a", json!({"v": 3}), None).await.unwrap();
    assert_eq!(store.get("/r/a").await.unwrap().unwrap().mod_rev, replaced);
    // A delete answers with the value it removed.
    lose_next_answer();
    let (old, deleted) = store.delete("/r/a", Some(replaced)).await.unwrap();
    assert_eq!(old, json!({"v": 3}));
    assert_eq!(store.lose_answers.load(Ordering::Acquire), 0, "every lost answer was taken");

    let events = events_since(store, start, Duration::from_millis(500)).await;
    let seen: Vec<(StoreEventKind, u64)> = events.iter().map(|e| (e.kind, e.rev)).collect();
    assert_eq!(
        seen,
        [(StoreEventKind::Created, created), (StoreEventKind::Updated, updated), (StoreEventKind::Updated, replaced), (StoreEventKind::Deleted, deleted)],
        "each write applied exactly once"
    );
}

#[tokio::test]
async fn a_lost_answer_does_not_turn_another_writers_change_into_ours() {
    let fixture = own_etcd(DEFAULT_HISTORY).await;
    let store = &fixture.store;
    let theirs = store.create("/r/a", json!({"by": "them"})).await.unwrap();
    // Refusals whose answers were lost stay refusals: the object is not the one this create wrote.
    store.lose_answers.store(1, Ordering::Release);
    assert!(matches!(store.create("/r/a", json!({"by": "us"})).await, Err(StoreError::AlreadyExists { .. })));
    assert_eq!(store.lose_answers.load(Ordering::Acquire), 0, "the lost answer was taken");
    let next = store.update("/r/a", json!({"by": "them", "v": 2}), Some(theirs)).await.unwrap();
    // A stale update stays a conflict: the change after its revision is not the value it wrote.
    store.lose_answers.store(1, Ordering::Release);
    match store.update("/r/a", json!({"by": "us"}), Some(theirs)).await {
        Err(StoreError::Conflict { expected, actual, .. }) => assert_eq!((expected, actual), (theirs, next)),
        other => panic!("expected a conflict, got {other:?}"),
    }
    // A delete of a key that never was, at a revision that is not its, is answered at once.
    store.lose_answers.store(1, Ordering::Release);
    let started = Instant::now();
    assert!(matches!(store.delete("/r/never", Some(theirs)).await, Err(StoreError::NotFound { .. })));
    assert!(started.elapsed() < Duration::from_secs(1), "took {:?}", started.elapsed());
}

#[tokio::test]
async fn writes_go_through_when_the_leader_is_killed_and_none_applies_twice() {
    let mut members = EtcdProcess::start_cluster(3, None).await;
    let options = EtcdProcess::options(&members.iter().collect::<Vec<_>>(), None);
    let store = EtcdStore::connect(options.clone()).await.unwrap();
    let cluster = EtcdCluster::connect(&options).await.unwrap();
    let start = store.revision().await.unwrap();

    // A writer creates and updates keys one after another, every answer checked, while the
    // leader is killed under it.
    let writer = {
        let store = store.clone();
        tokio::spawn(async move {
            let mut revisions = Vec::new();
            let mut slowest = Duration::ZERO;
            for i in 0..60 {
                let key = format!("/r/k-{i}");
                let started = Instant::now();
                let created = store.create(&key, json!({"i": i})).await.unwrap_or_else(|e| panic!("creating {key}: {}", chain(&e)));
                let updated = store.update(&key, json!({"i": i, "v": 2}), Some(created)).await.unwrap_or_else(|e| panic!("updating {key}: {}", chain(&e)));
                slowest = slowest.max(started.elapsed());
                revisions.push((key, created, updated));
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
            (revisions, slowest)
        })
    };
    tokio::time::sleep(Duration::from_millis(400)).await;
    let statuses = cluster.endpoint_status().await;
    let leader = statuses.iter().position(|s| s.status.as_ref().is_ok_and(MemberStatus::is_leader)).expect("a leader");
    members[leader].kill();
    let (revisions, slowest) = writer.await.unwrap();
    eprintln!("the slowest create and update took {slowest:?}");
    assert!(slowest < RETRY_BUDGET, "a create and update took {slowest:?} across the election");

    let events = events_since(&store, start, Duration::from_secs(1)).await;
    let mut expected: Vec<(String, StoreEventKind, u64)> = Vec::new();
    for (key, created, updated) in revisions {
        expected.push((key.clone(), StoreEventKind::Created, created));
        expected.push((key, StoreEventKind::Updated, updated));
    }
    let seen: Vec<(String, StoreEventKind, u64)> = events.into_iter().map(|e| (e.key, e.kind, e.rev)).collect();
    assert_eq!(seen, expected, "every write applied once, at the revision its caller was told");
}
