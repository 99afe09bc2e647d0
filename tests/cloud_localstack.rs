//! The cluster's own control loops end to end against LocalStack with realized machines: a
//! LoadBalancer service gets a real balancer; terminated and dead workers are replaced by the
//! master's machine controller; `scale --workers` grows and drains pools without failed requests;
//! replacement stops when too much of a pool is unhealthy; destroy leaves nothing tagged.

mod common;

use std::collections::{BTreeMap, BTreeSet};
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use clusterctl::client::kubeconfig::Kubeconfig;
use clusterctl::client::{ApiClient, ClientAuth};
use clusterctl::cloud::aws::{AwsCloud, AwsOptions};
use clusterctl::cloud::{owned_by, Cloud, ROLE_TAG};
use common::*;
use serde_json::Value;

const CLUSTER: &str = "it-cloud";

fn admin(home: &std::path::Path) -> ApiClient {
    let kc = Kubeconfig::load(&home.join(CLUSTER).join("kubeconfig")).unwrap();
    ApiClient::new(&kc.server, ClientAuth::Certificate { ca_pem: kc.ca_pem, cert_pem: kc.client_cert_pem, key_pem: kc.client_key_pem }).unwrap()
}

fn is_ready(object: &Value) -> bool {
    object.pointer("/status/conditions").and_then(Value::as_array).is_some_and(|cs| cs.iter().any(|c| c["type"] == "Ready" && c["status"] == "True"))
}

fn name(object: &Value) -> String {
    object["metadata"]["name"].as_str().unwrap_or_default().to_string()
}

fn instance_of(node: &Value) -> String {
    node["spec"]["providerID"].as_str().unwrap_or_default().rsplit('/').next().unwrap_or_default().to_string()
}

async fn workers(client: &ApiClient) -> Vec<Value> {
    client.list_values("/api/v1/nodes").await.unwrap_or_default().into_iter().filter(|n| n.pointer("/metadata/labels/clusterctl.io~1pool") == Some(&Value::from("default"))).collect()
}

async fn worker_instances(cloud: &dyn Cloud) -> Vec<String> {
    let mut selector = owned_by(CLUSTER);
    selector.insert(ROLE_TAG.into(), "worker".into());
    cloud.instances(&selector).await.unwrap().into_iter().filter(|i| !i.state.is_gone()).map(|i| i.id).collect()
}

/// Waits until the pool has `n` machines, all with Ready nodes, and no node of a machine that is gone.
async fn pool_settles(client: &ApiClient, cloud: &dyn Cloud, n: usize, within: Duration, what: &str) -> Duration {
    let (_, took) = eventually(what, within, || async {
        let ids = worker_instances(cloud).await;
        let nodes = workers(client).await;
        let ready: Vec<String> = nodes.iter().filter(|n| is_ready(n)).map(instance_of).collect();
        let stale: Vec<String> = nodes.iter().map(instance_of).filter(|i| !ids.contains(i)).collect();
        if ids.len() == n && ids.iter().all(|i| ready.contains(i)) && stale.is_empty() {
            Ok(())
        } else {
            Err(format!("instances {ids:?}, ready nodes of {ready:?}, nodes of gone machines {stale:?}"))
        }
    })
    .await;
    took
}

/// A GET of `/` and what went wrong, if anything.
async fn http_get_detailed(ip: &str, port: u16) -> Result<(), String> {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let mut s = match tokio::time::timeout(Duration::from_secs(3), tokio::net::TcpStream::connect((ip, port))).await {
        Err(_) => return Err("connect timed out".into()),
        Ok(Err(e)) => return Err(format!("connect: {e}")),
        Ok(Ok(s)) => s,
    };
    s.write_all(format!("GET / HTTP/1.0\r\nHost: {ip}\r\n\r\n").as_bytes()).await.map_err(|e| format!("write: {e}"))?;
    let mut buf = Vec::new();
    match tokio::time::timeout(Duration::from_secs(3), s.read_to_end(&mut buf)).await {
        Err(_) => return Err(format!("read timed out after {} bytes", buf.len())),
        Ok(Err(e)) => return Err(format!("read: {e} after {} bytes", buf.len())),
        Ok(Ok(_)) => {}
    }
    let text = String::from_utf8_lossy(&buf);
    let first = text.lines().next().unwrap_or("");
    if first.starts_with("HTTP/1.") && first.contains(" 200") { Ok(()) } else { Err(format!("answer {first:?} ({} bytes)", buf.len())) }
}

#[tokio::test(flavor = "multi_thread")]
async fn the_cluster_balances_services_replaces_machines_scales_and_leaves_nothing() {
    harness();
    let home = temp_home();
    let spec_path = unique_spec(home.path(), CLUSTER, 67, 2);
    let guard = DestroyGuard { home: home.path().into(), spec: spec_path.clone() };
    let s = spec_path.to_str().unwrap();
    let cloud: Arc<dyn Cloud> = Arc::new(AwsCloud::connect(&AwsOptions::default(), "us-east-1").await);
    assert_ok(&clusterctl(home.path(), &["create", "-f", s]), "create");
    let tarball = std::env::var("CLUSTERCTL_BUSYBOX_TAR").unwrap_or_else(|_| root().join(".cache/images/busybox.tar").to_string_lossy().into_owned());
    assert_ok(&clusterctl(home.path(), &["load-image", "-f", s, &tarball]), "load-image");
    for m in ["manifests/web.yaml", "manifests/web-lb.yaml"] {
        assert_ok(&clusterctl(home.path(), &["apply", "-f", root().join(m).to_str().unwrap(), "--cluster", CLUSTER]), "apply");
    }
    let client = admin(home.path());
    let pool: Value = client.get_value("/apis/clusterctl.io/v1/machinepools/default").await.unwrap();
    assert_eq!(pool["spec"]["replicas"], 2, "create records the pool's size: {pool}");

    // The LoadBalancer service gets a balancer whose address answers.
    let (address, _) = eventually("the service's load balancer address", Duration::from_secs(60), || async {
        let svc = client.get_value("/api/v1/namespaces/default/services/web-lb").await.map_err(|e| e.to_string())?;
        svc.pointer("/status/loadBalancer/ingress/0/ip").and_then(Value::as_str).map(str::to_string).ok_or_else(|| svc["status"].to_string())
    })
    .await;
    let lb = address.clone();
    eventually("an answer through the load balancer", Duration::from_secs(90), || async { http_get(&lb, 80).await.ok_or_else(|| "no answer".to_string()) }).await;

    // A client loop through the balancer counts failed requests for the rest of the test's scaling.
    let (failures, requests, stop) = (Arc::new(AtomicUsize::new(0)), Arc::new(AtomicUsize::new(0)), Arc::new(AtomicBool::new(false)));
    // When each failed request was made, and what each step took, from the start of counting:
    // the assertion says where a failure fell.
    let timeline: Arc<Mutex<Vec<String>>> = Arc::default();
    let counting_since = Instant::now();
    let mark = |what: &str| timeline.lock().unwrap().push(format!("{:.1}s {what}", counting_since.elapsed().as_secs_f64()));
    let counting = Arc::new(AtomicBool::new(false));

    // Terminate a worker through the API: its Node goes at once, its pods run elsewhere within 15 s,
    // and within 90 s the pool is back at 2 Ready machines.
    let nodes = workers(&client).await;
    let victim = nodes.iter().find(|n| is_ready(n)).unwrap().clone();
    let victim_instance = instance_of(&victim);
    cloud.terminate_instances(std::slice::from_ref(&victim_instance)).await.unwrap();
    let terminated = Instant::now();
    eventually("the terminated worker's Node deleted", Duration::from_secs(15), || async {
        let nodes = workers(&client).await;
        if nodes.iter().any(|n| name(n) == name(&victim)) { Err("still there".into()) } else { Ok(()) }
    })
    .await;
    eventually("3 web pods ready on the other nodes", Duration::from_secs(15).saturating_sub(terminated.elapsed()).max(Duration::from_secs(1)), || async {
        let pods = client.list_values("/api/v1/namespaces/default/pods").await.map_err(|e| e.to_string())?;
        let ready = pods.iter().filter(|p| is_ready(p) && p["spec"]["nodeName"] != victim["metadata"]["name"]).count();
        if ready >= 3 { Ok(()) } else { Err(format!("{ready} ready")) }
    })
    .await;
    let took = pool_settles(&client, cloud.as_ref(), 2, Duration::from_secs(90).saturating_sub(terminated.elapsed()), "a replacement for the terminated worker Ready").await;
    eprintln!("terminated worker replaced {:.1}s after its termination", terminated.elapsed().as_secs_f64().max(took.as_secs_f64()));

    // docker kill a worker machine: it fails its status checks and is replaced the same way.
    let nodes = workers(&client).await;
    let dead = instance_of(nodes.iter().find(|n| is_ready(n)).unwrap());
    let killed = std::process::Command::new("docker").args(["kill", &dead]).output().unwrap();
    assert!(killed.status.success(), "docker kill {dead}");
    let killed_at = Instant::now();
    eventually("the dead machine terminated by the machine controller", Duration::from_secs(120), || async {
        let ids = worker_instances(cloud.as_ref()).await;
        if ids.contains(&dead) { Err(format!("{ids:?}")) } else { Ok(()) }
    })
    .await;
    pool_settles(&client, cloud.as_ref(), 2, Duration::from_secs(120).saturating_sub(killed_at.elapsed()), "the dead worker replaced").await;

    {
        let (failures, requests, stop, counting, lb, timeline) = (failures.clone(), requests.clone(), stop.clone(), counting.clone(), address.clone(), timeline.clone());
        tokio::spawn(async move {
            while !stop.load(Ordering::Relaxed) {
                if counting.load(Ordering::Relaxed) {
                    requests.fetch_add(1, Ordering::Relaxed);
                    let sent = counting_since.elapsed().as_secs_f64();
                    if let Err(why) = http_get_detailed(&lb, 80).await {
                        failures.fetch_add(1, Ordering::Relaxed);
                        timeline.lock().unwrap().push(format!("{sent:.1}s a request FAILED ({:.1}s later): {why}", counting_since.elapsed().as_secs_f64() - sent));
                    }
                }
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
        });
    }

    // From here a client loop through the balancer counts failed requests: scaling the deployment
    // and the workers must not fail any.
    counting.store(true, Ordering::Relaxed);
    mark("counting; scaling the deployment to 4");
    assert_ok(&clusterctl(home.path(), &["scale", "deployment", "web", "--replicas", "4", "--cluster", CLUSTER]), "scale deployment");
    eventually("4 ready web pods", Duration::from_secs(60), || async {
        let ready = client.list_values("/api/v1/namespaces/default/pods").await.map_err(|e| e.to_string())?.iter().filter(|p| is_ready(p)).count();
        if ready == 4 { Ok(()) } else { Err(format!("{ready} ready")) }
    })
    .await;

    // Scale up from 2 to 5 workers.
    mark("scaling to 5 workers");
    let out = assert_ok(&clusterctl(home.path(), &["scale", "-f", s, "--workers", "5"]), "scale --workers 5");
    eprintln!("{out}");
    pool_settles(&client, cloud.as_ref(), 5, Duration::from_secs(30), "5 Ready workers").await;
    mark("5 workers Ready");
    // Every node, the new ones too, has a pod range of its own from the cluster CIDR.
    let (ranges, _) = eventually("every node with a pod range", Duration::from_secs(10), || async {
        let nodes = client.list_values("/api/v1/nodes").await.map_err(|e| e.to_string())?;
        let ranges: Vec<String> = nodes.iter().filter_map(|n| n["spec"]["podCIDR"].as_str().map(String::from)).collect();
        if ranges.len() == nodes.len() { Ok(ranges) } else { Err(format!("{} of {} nodes have one", ranges.len(), nodes.len())) }
    })
    .await;
    let distinct: BTreeSet<&String> = ranges.iter().collect();
    assert_eq!(distinct.len(), ranges.len(), "no two nodes share a range: {ranges:?}");
    assert!(ranges.iter().all(|r| r.starts_with("100.64.") && r.ends_with("/24")), "/24s of the default 100.64.0.0/16: {ranges:?}");
    assert!(std::fs::read_to_string(&spec_path).unwrap().contains("count = 5"), "the spec file says 5 workers too");

    // Scale down to 1 while a client loop counts failed requests through the balancer; the removed
    // nodes' pods must be gone (and running elsewhere) before their machines are terminated.
    let pod_deleted: Arc<Mutex<BTreeMap<String, Instant>>> = Arc::default();
    let terminated_at: Arc<Mutex<BTreeMap<String, Instant>>> = Arc::default();
    let watching = Arc::new(AtomicBool::new(true));
    let before: BTreeMap<String, String> = client.list_values("/api/v1/namespaces/default/pods").await.unwrap().iter().map(|p| (name(p), p["spec"]["nodeName"].as_str().unwrap_or("").to_string())).collect();
    let node_instance: BTreeMap<String, String> = workers(&client).await.iter().map(|n| (name(n), instance_of(n))).collect();
    let watcher = {
        let (client, pod_deleted, terminated_at, watching, cloud, before) = (client.clone(), pod_deleted.clone(), terminated_at.clone(), watching.clone(), cloud.clone(), before.clone());
        let machines: Vec<String> = node_instance.values().cloned().collect();
        tokio::spawn(async move {
            while watching.load(Ordering::Relaxed) {
                let pods: BTreeSet<String> = client.list_values("/api/v1/namespaces/default/pods").await.unwrap_or_default().iter().map(name).collect();
                let alive = worker_instances(cloud.as_ref()).await;
                let now = Instant::now();
                for p in before.keys().filter(|p| !pods.contains(*p)) {
                    pod_deleted.lock().unwrap().entry(p.clone()).or_insert(now);
                }
                // The first time a machine is seen terminating or gone.
                for m in machines.iter().filter(|m| !alive.contains(*m)) {
                    terminated_at.lock().unwrap().entry(m.clone()).or_insert(now);
                }
                tokio::time::sleep(Duration::from_millis(200)).await;
            }
        })
    };
    mark("scaling to 1 worker");
    let out = assert_ok(&clusterctl(home.path(), &["scale", "-f", s, "--workers", "1"]), "scale --workers 1");
    mark("scaled to 1 worker");
    eprintln!("{out}");
    pool_settles(&client, cloud.as_ref(), 1, Duration::from_secs(30), "1 Ready worker").await;
    // The loop goes on through the one worker left until it has made enough requests to mean
    // something: a fast machine scales in fewer than 50 tenths of a second.
    eventually("50 requests through the balancer", Duration::from_secs(30), || async {
        let made = requests.load(Ordering::Relaxed);
        if made >= 50 { Ok(()) } else { Err(format!("{made} made")) }
    })
    .await;
    counting.store(false, Ordering::Relaxed);
    watching.store(false, Ordering::Relaxed);
    watcher.await.unwrap();
    let (requests_made, failed) = (requests.load(Ordering::Relaxed), failures.load(Ordering::Relaxed));
    eprintln!("scaling the deployment and the workers: {requests_made} requests through the balancer, {failed} failed");
    eprintln!("{}", timeline.lock().unwrap().join("\n"));
    assert!(requests_made >= 50, "the client loop ran: {requests_made}");
    assert_eq!(failed, 0, "no request fails while the deployment and the workers scale; timeline:\n{}", timeline.lock().unwrap().join("\n"));
    let remaining = worker_instances(cloud.as_ref()).await;
    let deleted = pod_deleted.lock().unwrap().clone();
    let gone = terminated_at.lock().unwrap().clone();
    for (node, instance) in node_instance.iter().filter(|(_, i)| !remaining.contains(i)) {
        let t = gone.get(instance).unwrap_or_else(|| panic!("saw no termination of {instance}"));
        for pod in before.iter().filter(|(_, n)| *n == node).map(|(p, _)| p) {
            let d = deleted.get(pod).unwrap_or_else(|| panic!("pod {pod} of removed node {node} was never evicted"));
            assert!(d <= t, "pod {pod} was evicted after its machine {instance} was terminated");
        }
    }
    let ready = client.list_values("/api/v1/namespaces/default/pods").await.unwrap().iter().filter(|p| is_ready(p)).count();
    assert_eq!(ready, 4, "all 4 web pods run on the remaining worker");

    // Deleting the service deletes its balancer and target groups.
    assert_ok(&clusterctl(home.path(), &["delete", "-f", root().join("manifests/web-lb.yaml").to_str().unwrap(), "--cluster", CLUSTER]), "delete service");
    eventually("the service's balancer and target groups deleted", Duration::from_secs(30), || async {
        let mut selector = owned_by(CLUSTER);
        selector.insert(ROLE_TAG.into(), "service-lb".into());
        let (lbs, tgs) = (cloud.load_balancers(&selector).await.unwrap(), cloud.target_groups(&selector).await.unwrap());
        if lbs.is_empty() && tgs.is_empty() { Ok(()) } else { Err(format!("{} balancers, {} target groups", lbs.len(), tgs.len())) }
    })
    .await;

    // 2 of 3 workers dead at once, with the limit at 50%: nothing is replaced, and the pool says why.
    assert_ok(&clusterctl(home.path(), &["scale", "-f", s, "--workers", "3"]), "scale --workers 3");
    pool_settles(&client, cloud.as_ref(), 3, Duration::from_secs(30), "3 Ready workers").await;

    // create with another build of the node software rolls it out node by node: master first, then
    // each worker drained, upgraded, Ready and uncordoned before the next is touched.
    let newer = home.path().join("clusterctl-newer");
    let mut bytes = std::fs::read(env!("CARGO_BIN_EXE_clusterctl")).unwrap();
    bytes.extend_from_slice(b"\n-- a newer build --\n");
    std::fs::write(&newer, &bytes).unwrap();
    let newer_sha = {
        use sha2::Digest;
        hex::encode(sha2::Sha256::digest(&bytes))
    };
    let cordoned_at_once = Arc::new(AtomicUsize::new(0));
    let upgrading = Arc::new(AtomicBool::new(true));
    let observer = {
        let (client, cordoned_at_once, upgrading) = (client.clone(), cordoned_at_once.clone(), upgrading.clone());
        tokio::spawn(async move {
            while upgrading.load(Ordering::Relaxed) {
                let cordoned = workers(&client).await.iter().filter(|n| n["spec"]["unschedulable"] == true).count();
                cordoned_at_once.fetch_max(cordoned, Ordering::Relaxed);
                tokio::time::sleep(Duration::from_millis(200)).await;
            }
        })
    };
    let out = clusterctl_command(home.path()).args(["create", "-f", s]).env("CLUSTERCTL_NODE_BINARY", &newer).output().unwrap();
    let text = assert_ok(&out, "create with a newer binary");
    upgrading.store(false, Ordering::Relaxed);
    observer.await.unwrap();
    eprintln!("{text}");
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("upgrading the node software on 3 workers, one at a time"), "{err}");
    assert_eq!(cordoned_at_once.load(Ordering::Relaxed), 1, "one worker at a time is taken out");
    for id in worker_instances(cloud.as_ref()).await {
        let sha = std::process::Command::new("docker").args(["exec", &id, "sha256sum", "/usr/local/bin/clusterctl"]).output().unwrap();
        assert!(String::from_utf8_lossy(&sha.stdout).starts_with(&newer_sha), "{id} runs the newer build");
    }
    pool_settles(&client, cloud.as_ref(), 3, Duration::from_secs(30), "3 Ready workers after the upgrade").await;
    let ready = client.list_values("/api/v1/namespaces/default/pods").await.unwrap().iter().filter(|p| is_ready(p)).count();
    assert_eq!(ready, 4, "the web pods run after the upgrade");

    let ids = worker_instances(cloud.as_ref()).await;
    for id in &ids[..2] {
        assert!(std::process::Command::new("docker").args(["kill", id]).output().unwrap().status.success());
    }
    eventually("the pool's ReplacementBlocked condition", Duration::from_secs(30), || async {
        let pool = client.get_value("/apis/clusterctl.io/v1/machinepools/default").await.map_err(|e| e.to_string())?;
        let blocked = pool.pointer("/status/conditions").and_then(Value::as_array).and_then(|cs| cs.iter().find(|c| c["type"] == "ReplacementBlocked" && c["status"] == "True")).cloned();
        blocked.map(|c| eprintln!("ReplacementBlocked: {}", c["message"])).ok_or_else(|| pool["status"].to_string())
    })
    .await;
    tokio::time::sleep(Duration::from_secs(10)).await;
    let after = worker_instances(cloud.as_ref()).await;
    assert_eq!(after.iter().collect::<BTreeSet<_>>(), ids.iter().collect::<BTreeSet<_>>(), "no machine was launched or terminated");
    stop.store(true, Ordering::Relaxed);

    // Destroy: nothing tagged with the cluster remains, and no node container.
    drop(guard);
    let left = clusterctl::provision::discover(cloud.as_ref(), CLUSTER).await.unwrap();
    assert!(left.is_empty(), "left after destroy: {:?}", left.describe());
    for id in ids.iter().chain(remaining.iter()) {
        let out = std::process::Command::new("docker").args(["ps", "-aq", "--filter", &format!("name=^{id}$")]).output().unwrap();
        assert!(String::from_utf8_lossy(&out.stdout).trim().is_empty(), "node container {id} remains");
    }
}
