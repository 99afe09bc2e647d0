//! The highly available control plane end to end against LocalStack with realized machines:
//! `clusters/localstack-ha.toml` (3 masters on etcd, 2 workers) is created; three healthy etcd
//! members; one leader each for the scheduler, the controllers and the cloud controller; the master
//! holding the leases is terminated while a client writes and reads through the API load balancer:
//! the API answers again within 15 s, no acknowledged write is lost, the leases move, a workload
//! change afterwards is carried out, and the dead master is replaced with etcd back at three
//! healthy members; backup, delete a deployment, restore: it is back; two masters lost at once
//! (no quorum), restore: the survivor takes the snapshot and the lost two are replaced.

mod common;

use std::collections::BTreeSet;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use clusterctl::client::kubeconfig::Kubeconfig;
use clusterctl::client::{ApiClient, ClientAuth};
use clusterctl::cloud::aws::{AwsCloud, AwsOptions};
use clusterctl::cloud::{owned_by, Cloud, ROLE_TAG};
use clusterctl::node::master::leader_node;
use common::*;
use serde_json::{json, Value};

const CLUSTER: &str = "it-ha";
const LEASES: [&str; 3] = ["kube-scheduler", "kube-controller-manager", "cloud-controller-manager"];

fn admin(home: &std::path::Path) -> ApiClient {
    let kc = Kubeconfig::load(&home.join(CLUSTER).join("kubeconfig")).unwrap();
    ApiClient::new(&kc.server, ClientAuth::Certificate { ca_pem: kc.ca_pem, cert_pem: kc.client_cert_pem, key_pem: kc.client_key_pem }).unwrap()
}

/// The holders of the three control-loop leases (`<node name>_<instance id>`).
async fn holders(client: &ApiClient) -> Result<Vec<String>, String> {
    let mut out = Vec::new();
    for lease in LEASES {
        let l = client.get_value(&format!("/apis/coordination.k8s.io/v1/namespaces/kube-system/leases/{lease}")).await.map_err(|e| e.to_string())?;
        out.push(l.pointer("/spec/holderIdentity").and_then(Value::as_str).unwrap_or_default().to_string());
    }
    Ok(out)
}

async fn worker_instances(cloud: &dyn Cloud) -> Vec<String> {
    let mut selector = owned_by(CLUSTER);
    selector.insert(ROLE_TAG.into(), "worker".into());
    cloud.instances(&selector).await.unwrap().into_iter().filter(|i| !i.state.is_gone()).map(|i| i.id).collect()
}

/// A node machine's client certificate (PEM).
fn pki_file(instance: &str, file: &str) -> String {
    let out = std::process::Command::new("docker").args(["exec", instance, "cat", &format!("/var/lib/clusterctl/pki/{file}")]).output().unwrap();
    assert!(out.status.success(), "reading {instance}'s {file}");
    String::from_utf8(out.stdout).unwrap()
}

fn node_cert(instance: &str) -> String {
    pki_file(instance, "node.crt")
}

fn serving_cert(instance: &str) -> String {
    pki_file(instance, "serving.crt")
}

async fn master_instances(cloud: &dyn Cloud) -> Vec<String> {
    let mut selector = owned_by(CLUSTER);
    selector.insert(ROLE_TAG.into(), "master".into());
    cloud.instances(&selector).await.unwrap().into_iter().filter(|i| !i.state.is_gone()).map(|i| i.id).collect()
}

/// `clusterctl status -o json`'s etcd members, or why not.
fn etcd_members(home: &std::path::Path, spec: &str) -> Result<Vec<Value>, String> {
    let out = clusterctl(home, &["status", "-f", spec, "-o", "json"]);
    let v: Value = serde_json::from_slice(&out.stdout).map_err(|e| format!("{e}: {}", String::from_utf8_lossy(&out.stderr)))?;
    v.pointer("/etcd/members").and_then(Value::as_array).cloned().ok_or_else(|| v["etcd"].to_string())
}

/// What the running masters (harness containers named by instance id) logged about leases, etcd
/// and errors in the last 3 minutes: printed before a failover assertion fails, since the guard
/// destroys the cluster after it.
async fn dump_master_logs(cloud: &dyn Cloud) {
    for instance in master_instances(cloud).await {
        let lines = journal_lines(&instance, "-u clusterctl-master -u clusterctl-etcd --since -3min -o short-precise", "lead|lease|etcd|error|warn|elect|connections");
        eprintln!("--- {instance}:\n{}", lines.unwrap_or_else(|e| e.to_string()));
    }
}

/// The journal lines (`journalctl ARGS`) of a harness machine that match `pattern` (an extended
/// regular expression, any case), the last 120.
fn journal_lines(instance: &str, args: &str, pattern: &str) -> std::io::Result<String> {
    let command = format!("journalctl {args} --no-pager | grep -iE '{pattern}' | tail -n 120");
    let out = std::process::Command::new("docker").args(["exec", instance, "sh", "-c", &command]).output()?;
    Ok(String::from_utf8_lossy(&out.stdout).into_owned())
}

fn healthy_members(members: &[Value]) -> usize {
    members.iter().filter(|m| m["healthy"] == true).count()
}

async fn ready_pods(client: &ApiClient, app: &str) -> usize {
    client
        .list_values("/api/v1/namespaces/default/pods")
        .await
        .unwrap_or_default()
        .iter()
        .filter(|p| p.pointer("/metadata/labels/app") == Some(&Value::from(app)))
        .filter(|p| p.pointer("/status/conditions").and_then(Value::as_array).is_some_and(|cs| cs.iter().any(|c| c["type"] == "Ready" && c["status"] == "True")))
        .count()
}


/// A worker's own credential (its node certificate from the cluster CA) is refused by every etcd
/// member at the TLS handshake, even with etcd's CA to trust the member: etcd trusts a CA of its
/// own, whose certificates only the masters hold.
async fn worker_credentials_do_not_reach_etcd(client: &ApiClient, cloud: &dyn Cloud) {
    use clusterctl::apiserver::store::{EtcdCluster, EtcdOptions, EtcdTls};
    let read = |instance: &str, path: &str| {
        let out = std::process::Command::new("docker").args(["exec", instance, "cat", path]).output().unwrap();
        assert!(out.status.success(), "reading {path} on {instance}");
        String::from_utf8(out.stdout).unwrap()
    };
    let nodes = client.list_values("/api/v1/nodes").await.unwrap();
    let worker = nodes.iter().find(|n| n["metadata"]["name"].as_str().is_some_and(|n| n.contains("-default-"))).unwrap();
    let worker_instance = worker["spec"]["providerID"].as_str().unwrap().rsplit('/').next().unwrap().to_string();
    let masters = cloud.instances(&owned_by(CLUSTER)).await.unwrap().into_iter().filter(|i| i.tags.get(ROLE_TAG).map(String::as_str) == Some("master") && !i.state.is_gone()).collect::<Vec<_>>();
    let etcd_ca = read(&masters[0].id, "/var/lib/clusterctl/pki/etcd-ca.crt");
    let cluster_ca = read(&masters[0].id, "/var/lib/clusterctl/pki/ca.crt");
    assert_ne!(etcd_ca, cluster_ca, "etcd has a CA of its own");
    let tls = EtcdTls { ca_pem: etcd_ca, cert_pem: read(&worker_instance, "/var/lib/clusterctl/pki/node.crt"), key_pem: read(&worker_instance, "/var/lib/clusterctl/pki/node.key") };
    for m in &masters {
        let ip = m.private_ip.unwrap();
        let options = EtcdOptions::new(vec![format!("https://{ip}:2379")]).with_tls(tls.clone());
        let answer = match EtcdCluster::connect(&options).await {
            Ok(cluster) => cluster.endpoint_status().await.into_iter().next().map(|s| s.status.map(|_| ()).map_err(|e| e.to_string())),
            Err(e) => Some(Err(e.to_string())),
        };
        assert!(matches!(answer, Some(Err(_))), "etcd on {ip} answered a worker's certificate: {answer:?}");
        eprintln!("etcd on {ip} refuses a worker's certificate: {answer:?}");
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn three_masters_survive_losing_the_leader_and_restore_a_backup() {
    harness();
    let home = temp_home();
    let spec_path = unique_spec_from("clusters/localstack-ha.toml", home.path(), CLUSTER, 68, 2);
    let guard = DestroyGuard { home: home.path().into(), spec: spec_path.clone() };
    let s = spec_path.to_str().unwrap();
    let cloud: Arc<dyn Cloud> = Arc::new(AwsCloud::connect(&AwsOptions::default(), "us-east-1").await);
    let t0 = Instant::now();
    // Node client and serving certificates and the masters' serving and etcd certificates live 120 s here
    // (the test-only setting): agents and masters renew them every 80 s, and the cluster runs
    // well past the first ones' end.
    let out = clusterctl_command(home.path()).args(["create", "-f", s]).env("CLUSTERCTL_NODE_CERT_SECONDS", "120").output().unwrap();
    assert_ok(&out, "create");
    let workers_at_create = worker_instances(cloud.as_ref()).await;
    let first_certs: Vec<String> = workers_at_create.iter().map(|w| node_cert(w)).collect();
    let first_serving: Vec<String> = workers_at_create.iter().map(|w| serving_cert(w)).collect();
    eprintln!("create (3 masters, 2 workers): {:.1}s", t0.elapsed().as_secs_f64());

    let members = etcd_members(home.path(), s).unwrap();
    assert_eq!((members.len(), healthy_members(&members)), (3, 3), "three healthy etcd members: {members:?}");
    assert_eq!(members.iter().filter(|m| m["leader"] == true).count(), 1, "one etcd leader: {members:?}");
    let client = admin(home.path());
    worker_credentials_do_not_reach_etcd(&client, cloud.as_ref()).await;
    let status: Value = serde_json::from_slice(&clusterctl(home.path(), &["status", "-f", s, "-o", "json"]).stdout).unwrap();
    let lb = status.pointer("/resources/load_balancers/0/dns_name").and_then(Value::as_str).unwrap_or_default().to_string();
    assert_eq!(client.server(), format!("https://{lb}:6443"), "the kubeconfig points at the API load balancer");
    let masters: BTreeSet<String> = (0..3).map(|i| format!("{CLUSTER}-masters-{i}")).collect();
    let (before, _) = eventually("a leader for every control loop", Duration::from_secs(30), || async {
        let h = holders(&client).await?;
        if h.iter().all(|x| masters.contains(leader_node(x))) { Ok(h) } else { Err(format!("{h:?}")) }
    })
    .await;
    eprintln!("lease holders: {before:?}");

    // A master stopped cleanly gives its leases up: the others hold them within a retry period or
    // two, not after the 15 s the leases would take to expire.
    let stopped = before[1].clone();
    let node: Value = client.get_value(&format!("/api/v1/nodes/{}", leader_node(&stopped))).await.unwrap();
    let stopped_instance = node["spec"]["providerID"].as_str().unwrap().rsplit('/').next().unwrap().to_string();
    let systemctl = |verb: &str| {
        let out = std::process::Command::new("docker").args(["exec", &stopped_instance, "systemctl", verb, "clusterctl-master"]).output().unwrap();
        assert!(out.status.success(), "systemctl {verb} clusterctl-master on {stopped}: {}", String::from_utf8_lossy(&out.stderr));
    };
    let t = Instant::now();
    systemctl("stop");
    let (moved, _) = eventually("the stopped master's leases held by the others", Duration::from_secs(30), || async {
        let h = holders(&client).await?;
        if h.iter().all(|x| masters.contains(leader_node(x)) && *x != stopped) { Ok(h) } else { Err(format!("{h:?}")) }
    })
    .await;
    let took = t.elapsed();
    eprintln!("{stopped} stopped cleanly: leases {moved:?} after {:.1}s", took.as_secs_f64());
    assert!(took < Duration::from_secs(8), "released leases were taken over in {took:?}, as if they had expired");
    systemctl("start");
    let (before, _) = eventually("a leader for every control loop", Duration::from_secs(30), || async {
        let h = holders(&client).await?;
        if h.iter().all(|x| masters.contains(leader_node(x))) { Ok(h) } else { Err(format!("{h:?}")) }
    })
    .await;

    let tarball = std::env::var("CLUSTERCTL_BUSYBOX_TAR").unwrap_or_else(|_| root().join(".cache/images/busybox.tar").to_string_lossy().into_owned());
    assert_ok(&clusterctl(home.path(), &["load-image", "-f", s, &tarball]), "load-image");
    assert_ok(&clusterctl(home.path(), &["apply", "-f", root().join("manifests/web.yaml").to_str().unwrap(), "--cluster", CLUSTER]), "apply");
    eventually("3 web pods ready", Duration::from_secs(90), || async {
        let n = ready_pods(&client, "web").await;
        if n == 3 { Ok(()) } else { Err(format!("{n} ready")) }
    })
    .await;

    // A client loop writes ConfigMaps and reads them back through the balancer; it records every
    // acknowledged write and the longest time without a successful request.
    let acknowledged: Arc<Mutex<Vec<String>>> = Arc::default();
    let longest_gap = Arc::new(Mutex::new(Duration::ZERO));
    let stop = Arc::new(AtomicBool::new(false));
    let writer = {
        let (client, acknowledged, longest_gap, stop) = (client.clone(), acknowledged.clone(), longest_gap.clone(), stop.clone());
        tokio::spawn(async move {
            let mut last_ok = Instant::now();
            let mut i = 0u32;
            while !stop.load(Ordering::Relaxed) {
                let name = format!("probe-{i}");
                let body = json!({"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": name, "namespace": "default"}, "data": {"i": i.to_string()}});
                let write = tokio::time::timeout(Duration::from_secs(5), client.create_value("/api/v1/namespaces/default/configmaps", &body)).await;
                if let Ok(Ok(_)) = write {
                    acknowledged.lock().unwrap().push(name.clone());
                    i += 1;
                    let read = tokio::time::timeout(Duration::from_secs(5), client.get_value(&format!("/api/v1/namespaces/default/configmaps/{name}"))).await;
                    if let Ok(Ok(_)) = read {
                        let gap = last_ok.elapsed();
                        let mut g = longest_gap.lock().unwrap();
                        *g = (*g).max(gap);
                        last_ok = Instant::now();
                    }
                } else if let Ok(Err(e)) = write
                    && e.is_already_exists()
                {
                    // Acknowledged before, its answer lost: it counts as written.
                    acknowledged.lock().unwrap().push(name.clone());
                    i += 1;
                }
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
        })
    };
    tokio::time::sleep(Duration::from_secs(3)).await;

    let before_ids = master_instances(cloud.as_ref()).await;
    // Terminate the machine of the master that leads the controllers.
    let leader = before[1].clone();
    let node: Value = client.get_value(&format!("/api/v1/nodes/{}", leader_node(&leader))).await.unwrap();
    let instance = node["spec"]["providerID"].as_str().unwrap().rsplit('/').next().unwrap().to_string();
    let gap_before = *longest_gap.lock().unwrap();
    *longest_gap.lock().unwrap() = Duration::ZERO;
    cloud.terminate_instances(std::slice::from_ref(&instance)).await.unwrap();
    let killed = Instant::now();
    eprintln!("terminated {leader} ({instance}); longest gap before: {:.1}s", gap_before.as_secs_f64());
    let (after, _) = eventually("every lease held by a surviving master", Duration::from_secs(40), || async {
        let h = holders(&client).await?;
        if h.iter().all(|x| masters.contains(leader_node(x)) && *x != leader) { Ok(h) } else { Err(format!("{h:?}")) }
    })
    .await;
    let after_took = killed.elapsed();
    eprintln!("lease holders after {:.1}s: {after:?}", after_took.as_secs_f64());
    tokio::time::sleep(Duration::from_secs(3)).await;
    let gap = std::mem::take(&mut *longest_gap.lock().unwrap());
    eprintln!("longest time without an answer through the balancer after the termination: {:.1}s", gap.as_secs_f64());
    if gap > Duration::from_secs(15) || after_took > Duration::from_secs(20) {
        dump_master_logs(cloud.as_ref()).await;
    }
    assert!(gap <= Duration::from_secs(15), "the API answered again within 15 s (longest gap {gap:?})");

    // A workload change after the failover is carried out.
    assert_ok(&clusterctl(home.path(), &["scale", "deployment", "web", "--replicas", "4", "--cluster", CLUSTER]), "scale deployment");
    eventually("4 web pods ready after the failover", Duration::from_secs(60), || async {
        let n = ready_pods(&client, "web").await;
        if n == 4 { Ok(()) } else { Err(format!("{n} ready")) }
    })
    .await;

    // The dead master is replaced, and etcd has three healthy members again, while the client
    // goes on writing and reading: changing etcd's membership must not stall it.
    eventually("the dead master replaced, etcd at three healthy members", Duration::from_secs(300), || async {
        let ids = master_instances(cloud.as_ref()).await;
        if ids.len() != 3 || ids.contains(&instance) {
            return Err(format!("master instances {ids:?}"));
        }
        let members = etcd_members(home.path(), s)?;
        if members.len() == 3 && healthy_members(&members) == 3 { Ok(()) } else { Err(format!("members {members:?}")) }
    })
    .await;
    // Before removing the dead member the survivors closed their connections to its address
    // (`bootstrap::cluster::drop_connections` warns when it could not).
    for master in master_instances(cloud.as_ref()).await {
        let warnings = journal_lines(&master, "-u clusterctl-master", "connections to the lost master are still open|closing connections to the lost master").unwrap();
        assert!(warnings.trim().is_empty(), "{master} could not close its connections to the dead master:\n{warnings}");
    }
    stop.store(true, Ordering::Relaxed);
    writer.await.unwrap();
    let gap = *longest_gap.lock().unwrap();
    eprintln!("longest time without an answer through the balancer while the master was replaced: {:.1}s", gap.as_secs_f64());
    if gap > Duration::from_secs(10) {
        dump_master_logs(cloud.as_ref()).await;
    }
    assert!(gap <= Duration::from_secs(10), "the API kept answering while etcd's membership changed (longest gap {gap:?})");
    let written = acknowledged.lock().unwrap().clone();
    // Availability is the gaps above; here only what was kept counts, so a failed list is retried.
    let listing_since = Instant::now();
    let listed = loop {
        match client.list_values("/api/v1/namespaces/default/configmaps").await {
            Ok(listed) => break listed,
            Err(e) if listing_since.elapsed() < Duration::from_secs(30) => {
                eprintln!("listing the written config maps: {e} (retrying)");
                tokio::time::sleep(Duration::from_secs(1)).await;
            }
            Err(e) => {
                dump_master_logs(cloud.as_ref()).await;
                panic!("listing the written config maps after the failover: {e}");
            }
        }
    };
    let stored: BTreeSet<String> = listed.iter().map(|c| c["metadata"]["name"].as_str().unwrap_or("").to_string()).collect();
    let lost: Vec<&String> = written.iter().filter(|n| !stored.contains(*n)).collect();
    assert!(lost.is_empty(), "acknowledged writes lost: {lost:?} of {}", written.len());
    eprintln!("{} acknowledged writes, none lost", written.len());

    // The new master's cloud controller reaches the cloud as the others do (it may lead next).
    let new_master = master_instances(cloud.as_ref()).await.into_iter().find(|i| !before_ids.contains(i)).expect("a new master instance");
    let config = std::process::Command::new("docker").args(["exec", &new_master, "cat", "/etc/clusterctl/node.toml"]).output().unwrap();
    let config = String::from_utf8_lossy(&config.stdout);
    assert!(config.contains("endpoint_url") && config.contains("[master.etcd]") && config.contains("initial_cluster_state = \"existing\""), "the new master's config:\n{config}");

    // Back up, delete the deployment, restore: it is back, and runs.
    let backup = home.path().join("it-ha.snapshot");
    let out = assert_ok(&clusterctl(home.path(), &["backup", "-f", s, "--out", backup.to_str().unwrap()]), "backup");
    eprintln!("{out}");
    assert!(std::fs::metadata(&backup).unwrap().len() > 0);
    assert_ok(&clusterctl(home.path(), &["delete", "-f", root().join("manifests/web.yaml").to_str().unwrap(), "--cluster", CLUSTER]), "delete");
    eventually("the deployment gone", Duration::from_secs(30), || async {
        match client.get_value("/apis/apps/v1/namespaces/default/deployments/web").await {
            Err(e) if e.is_not_found() => Ok(()),
            other => Err(format!("{other:?}")),
        }
    })
    .await;
    // Its pods go, and the app stops answering on a worker's NodePort.
    let worker_ip = client
        .list_values("/api/v1/nodes")
        .await
        .unwrap()
        .iter()
        .filter(|n| n.pointer("/metadata/labels/clusterctl.io~1pool") == Some(&Value::from("default")))
        .find_map(|n| n.pointer("/status/addresses").and_then(Value::as_array).and_then(|a| a.iter().find(|x| x["type"] == "InternalIP")).and_then(|x| x["address"].as_str()).map(str::to_string))
        .unwrap();
    eventually("no web pod left and no answer on the NodePort", Duration::from_secs(60), || async {
        let pods = client.list_values("/api/v1/namespaces/default/pods").await.map_err(|e| e.to_string())?;
        let left = pods.iter().filter(|p| p.pointer("/metadata/labels/app") == Some(&Value::from("web"))).count();
        if left == 0 && http_get(&worker_ip, 30080).await.is_none() { Ok(()) } else { Err(format!("{left} pods left")) }
    })
    .await;
    let out = assert_ok(&clusterctl(home.path(), &["restore", "-f", s, "--from", backup.to_str().unwrap()]), "restore");
    eprintln!("{out}");
    eventually("the deployment back, its app answering on the NodePort", Duration::from_secs(120), || async {
        client.get_value("/apis/apps/v1/namespaces/default/deployments/web").await.map_err(|e| e.to_string())?;
        http_get(&worker_ip, 30080).await.ok_or_else(|| "no answer".to_string())
    })
    .await;
    eventually("4 ready web pods", Duration::from_secs(60), || async {
        let n = ready_pods(&client, "web").await;
        if n == 4 { Ok(()) } else { Err(format!("{n} ready")) }
    })
    .await;
    // Quorum lost: two of the three masters terminated at once, so etcd has no quorum and the
    // survivor cannot act. `restore` from the backup makes the survivor a one-member etcd with
    // the snapshot's objects; its machine controller then replaces the lost masters one at a
    // time: three masters and three healthy members again, the snapshot's objects there, every
    // node Ready.
    let masters_before = master_instances(cloud.as_ref()).await;
    assert_eq!(masters_before.len(), 3, "{masters_before:?}");
    let lost: Vec<String> = masters_before[..2].to_vec();
    cloud.terminate_instances(&lost).await.unwrap();
    let lost_at = Instant::now();
    eventually("the two masters terminated", Duration::from_secs(60), || async {
        let ids = master_instances(cloud.as_ref()).await;
        if ids.iter().any(|i| lost.contains(i)) { Err(format!("{ids:?}")) } else { Ok(()) }
    })
    .await;
    let out = assert_ok(&clusterctl(home.path(), &["restore", "-f", s, "--from", backup.to_str().unwrap()]), "restore after losing two of three masters");
    eprintln!("{out}");
    eprintln!("the API answers {:.1}s after two masters were lost", lost_at.elapsed().as_secs_f64());
    let (_, took) = eventually("the lost masters replaced, etcd at three healthy members", Duration::from_secs(600), || async {
        let ids = master_instances(cloud.as_ref()).await;
        if ids.len() != 3 || ids.iter().any(|i| lost.contains(i)) {
            return Err(format!("master instances {ids:?}"));
        }
        let members = etcd_members(home.path(), s)?;
        if members.len() == 3 && healthy_members(&members) == 3 { Ok(()) } else { Err(format!("members {members:?}")) }
    })
    .await;
    eprintln!("two lost masters replaced {:.1}s after the restore", took.as_secs_f64());
    eventually("every node Ready, the snapshot's deployment and its 4 ready pods", Duration::from_secs(180), || async {
        let nodes = client.list_values("/api/v1/nodes").await.map_err(|e| e.to_string())?;
        let ready = |n: &Value| n.pointer("/status/conditions").and_then(Value::as_array).is_some_and(|cs| cs.iter().any(|c| c["type"] == "Ready" && c["status"] == "True"));
        let not_ready: Vec<&str> = nodes.iter().filter(|n| !ready(n)).filter_map(|n| n["metadata"]["name"].as_str()).collect();
        if nodes.len() != 5 || !not_ready.is_empty() {
            return Err(format!("{} nodes, not ready: {not_ready:?}", nodes.len()));
        }
        client.get_value("/apis/apps/v1/namespaces/default/deployments/web").await.map_err(|e| e.to_string())?;
        let n = ready_pods(&client, "web").await;
        if n == 4 { Ok(()) } else { Err(format!("{n} ready web pods")) }
    })
    .await;
    // Every worker's client certificate was renewed, and the workers keep reporting after the
    // first ones have expired: the test waits for that moment if the run was quicker, then sees
    // every worker's lease renewed after it.
    let expiry = first_certs.iter().map(|c| clusterctl::pki::not_after(c).unwrap()).max().unwrap();
    if let Ok(left) = expiry.duration_since(std::time::SystemTime::now()) {
        tokio::time::sleep(left + Duration::from_secs(1)).await;
    }
    let expired_at = clusterctl::api::time::Time::from_system_time(expiry).unix_seconds() as f64;
    eventually("every worker's lease renewed after the first certificates expired", Duration::from_secs(30), || async {
        let leases = client.list_values("/apis/coordination.k8s.io/v1/namespaces/kube-node-lease/leases").await.map_err(|e| e.to_string())?;
        let workers: Vec<&Value> = leases.iter().filter(|l| l["metadata"]["name"].as_str().is_some_and(|n| n.contains("-default-"))).collect();
        let renewed = workers.iter().filter(|l| l["spec"]["renewTime"].as_str().and_then(clusterctl::api::time::parse_rfc3339).is_some_and(|t| t > expired_at + 1.0)).count();
        if workers.len() == 2 && renewed == 2 { Ok(()) } else { Err(format!("{renewed} of {} worker leases renewed since", workers.len())) }
    })
    .await;
    for (worker, first) in workers_at_create.iter().zip(&first_certs) {
        let expired = clusterctl::pki::not_after(first).unwrap();
        assert!(expired < std::time::SystemTime::now(), "{worker}'s first certificate has expired");
        let now = node_cert(worker);
        assert_ne!(&now, first, "{worker}'s client certificate was renewed");
        assert!(clusterctl::pki::not_after(&now).unwrap() > std::time::SystemTime::now(), "{worker} holds a valid certificate");
        let renewals = journal_lines(worker, "-u clusterctl-worker", "renewed the node.s client certificate").unwrap();
        eprintln!("{worker}: {} renewals of its 120 s client certificate", renewals.lines().count());
    }
    // Serving certificates live 120 s here too: every master serves one valid now (renewed by the
    // master two thirds in), and every worker's agent holds a renewed one, which the API server
    // verifies when it reads a pod's log from that agent.
    let masters = cloud.instances_by_id(&master_instances(cloud.as_ref()).await).await.unwrap();
    for master in &masters {
        let ip = master.private_ip.unwrap();
        let check = format!("openssl s_client -connect {ip}:6443 </dev/null 2>/dev/null | openssl x509 -noout -enddate -checkend 0");
        let out = std::process::Command::new("sh").args(["-c", &check]).output().unwrap();
        assert!(out.status.success(), "master {} serves a valid certificate: {}", master.id, String::from_utf8_lossy(&out.stdout));
    }
    // etcd's certificates too: every member holds a valid one and all three answer to a client
    // that connects now. (Here the restores and replacements issue them again before a running
    // master's renewal comes due, so the count printed is usually 0; the renewal itself, and the
    // store connecting again with the renewed client certificate, are unit-tested:
    // `node::etcd`, `store::etcd::a_store_connects_again_with_a_renewed_client_certificate`.)
    for master in &masters {
        let member = pki_file(&master.id, "etcd-member.crt");
        assert!(clusterctl::pki::not_after(&member).unwrap() > std::time::SystemTime::now(), "master {}'s etcd member certificate is valid", master.id);
        let renewals = journal_lines(&master.id, "-u clusterctl-master", "renewed this master.s etcd certificates").unwrap();
        eprintln!("master {}: {} renewals of its 120 s etcd certificates", master.id, renewals.lines().count());
    }
    let members = etcd_members(home.path(), s).unwrap();
    assert_eq!((members.len(), healthy_members(&members)), (3, 3), "three healthy etcd members after the first certificates expired: {members:?}");
    for (worker, first) in workers_at_create.iter().zip(&first_serving) {
        let now = serving_cert(worker);
        assert!(&now != first && clusterctl::pki::not_after(&now).unwrap() > std::time::SystemTime::now(), "{worker}'s agent serving certificate was renewed");
        let renewals = journal_lines(worker, "-u clusterctl-worker", "renewed the agent.s serving certificate").unwrap();
        eprintln!("{worker}: {} renewals of its 120 s serving certificate", renewals.lines().count());
    }
    let pods = client.list_values("/api/v1/namespaces/default/pods").await.unwrap();
    for pod in pods.iter().filter(|p| p.pointer("/metadata/labels/app") == Some(&Value::from("web"))) {
        let name = pod["metadata"]["name"].as_str().unwrap();
        client.request_text("GET", &format!("/api/v1/namespaces/default/pods/{name}/log")).await.unwrap_or_else(|e| panic!("the log of {name} through its agent: {e}"));
    }
    let kept = client.list_values("/api/v1/namespaces/default/configmaps").await.unwrap();
    let kept: BTreeSet<String> = kept.iter().map(|c| c["metadata"]["name"].as_str().unwrap_or("").to_string()).collect();
    let missing: Vec<&String> = written.iter().filter(|n| !kept.contains(*n)).collect();
    assert!(missing.is_empty(), "objects written before the backup are missing after the quorum restore: {missing:?}");

    // --- rotate-certs --ca on three masters: the API answers through the balancer throughout ---
    let old_ca = pki_file(&masters[0].id, "ca.crt");
    // The kubeconfig as rotate-certs leaves it at each stage.
    let gauge = {
        let home = home.path().to_path_buf();
        UnansweredGauge::start(Duration::from_millis(200), move || admin(&home))
    };
    let t = Instant::now();
    let rotated = assert_ok(&clusterctl(home.path(), &["rotate-certs", "-f", s, "--ca", "-q"]), "rotate-certs --ca");
    let gap = gauge.stop().await;
    eprintln!("rotate-certs --ca on 3 masters and 2 workers: {:.1}s; longest time without an answer through the balancer: {:.1}s", t.elapsed().as_secs_f64(), gap.as_secs_f64());
    assert!(rotated.contains("3 master(s) and 2 worker(s) trust only the new CA"), "{rotated}");
    assert!(gap < Duration::from_secs(10), "the API was unanswered for {gap:?} during the rotation");
    let new_ca = pki_file(&masters[0].id, "ca.crt");
    assert_ne!(new_ca, old_ca);
    for master in &masters {
        assert_eq!(pki_file(&master.id, "ca.crt"), new_ca, "master {} signs with the new CA", master.id);
        let leftovers = std::process::Command::new("docker").args(["exec", &master.id, "ls", "/var/lib/clusterctl/pki"]).output().unwrap();
        let leftovers = String::from_utf8_lossy(&leftovers.stdout);
        assert!(!leftovers.contains("ca-next") && !leftovers.contains("ca-trusted"), "master {}: {leftovers}", master.id);
        let ip = master.private_ip.unwrap();
        let served = std::process::Command::new("sh").args(["-c", &format!("openssl s_client -connect {ip}:6443 </dev/null 2>/dev/null | openssl x509")]).output().unwrap();
        clusterctl::pki::verify_issued_by(&String::from_utf8_lossy(&served.stdout), &new_ca).unwrap_or_else(|e| panic!("master {} serves a certificate of the new CA: {e}", master.id));
    }
    for worker in &worker_instances(cloud.as_ref()).await {
        assert_eq!(pki_file(worker, "ca.crt"), new_ca, "{worker} trusts the new CA alone");
        for cert in [node_cert(worker), serving_cert(worker)] {
            clusterctl::pki::verify_issued_by(&cert, &new_ca).unwrap_or_else(|e| panic!("{worker}'s certificates are the new CA's: {e}"));
        }
    }
    let client = admin(home.path());
    eventually("the app's 4 pods ready after the rotation", Duration::from_secs(30), || async {
        let n = ready_pods(&client, "web").await;
        if n == 4 { Ok(()) } else { Err(format!("{n} ready web pods")) }
    })
    .await;
    let members = etcd_members(home.path(), s).unwrap();
    assert_eq!((members.len(), healthy_members(&members)), (3, 3), "etcd (its own CA) is untouched: {members:?}");

    drop(guard);
}
