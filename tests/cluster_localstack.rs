//! A whole cluster against LocalStack with realized machines: create until every node is Ready,
//! credentials and authorization, re-run without changes, node liveness, master crash durability.

mod common;

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};

use clusterctl::bootstrap::hostkeys;
use clusterctl::bootstrap::ssh::{connect_async, HostKeyTrust, SshSession, SshTarget};
use clusterctl::client::kubeconfig::Kubeconfig;
use clusterctl::client::{ApiClient, ClientAuth};
use clusterctl::cloud::aws::{AwsCloud, AwsOptions};
use clusterctl::cloud::{Cloud, Instance, Resilient, RetryPolicy};
use clusterctl::provision;
use common::*;
use serde_json::{json, Value};

async fn ssh_to(cloud: &Resilient, instance: &Instance, key: &std::path::Path) -> SshSession {
    let console = cloud.console_output(&instance.id).await.unwrap().unwrap_or_default();
    let keys = hostkeys::from_console(&console);
    assert!(!keys.is_empty(), "console of {} has host keys", instance.id);
    let ip = instance.private_ip.unwrap();
    let target = SshTarget { node: instance.tags["Name"].clone(), address: SocketAddr::from((ip, 22)), user: "admin".into(), private_key: key.into(), trust: HostKeyTrust::Pinned(keys) };
    connect_async(target, Duration::from_secs(60)).await.unwrap()
}

async fn sudo(session: &Arc<std::sync::Mutex<SshSession>>, command: &str) -> String {
    let session = session.clone();
    let command = command.to_string();
    tokio::task::spawn_blocking(move || session.lock().unwrap().sudo(&command).unwrap().stdout).await.unwrap()
}

fn ready_of(nodes: &[Value], name: &str) -> Option<String> {
    let n = nodes.iter().find(|n| n.pointer("/metadata/name").and_then(Value::as_str) == Some(name))?;
    let node: clusterctl::api::Node = serde_json::from_value(n.clone()).ok()?;
    node.ready_condition().map(|c| c.status.clone())
}

async fn wait_ready(client: &ApiClient, name: &str, want: &str, within: Duration) -> Duration {
    let start = Instant::now();
    loop {
        if let Ok(nodes) = client.list_values("/api/v1/nodes").await
            && ready_of(&nodes, name).as_deref() == Some(want)
        {
            return start.elapsed();
        }
        assert!(start.elapsed() < within, "{name} did not become Ready={want} within {within:?}");
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
}

/// The plain progress lines (`[  12.3s] text`) whose text appears more than once.
fn repeated_progress_lines(stderr: &str) -> Vec<String> {
    let mut seen = std::collections::BTreeMap::<&str, usize>::new();
    for line in stderr.lines() {
        if let Some((stamp, text)) = line.split_once("] ")
            && stamp.starts_with('[')
            && stamp.ends_with('s')
        {
            *seen.entry(text).or_default() += 1;
        }
    }
    seen.into_iter().filter(|(_, n)| *n > 1).map(|(text, n)| format!("{n}x {text}")).collect()
}

/// How many INFO lines each `tracing` target wrote to a journal.
fn info_lines_by_target(journal: &str) -> std::collections::BTreeMap<String, usize> {
    let mut counts = std::collections::BTreeMap::new();
    for line in journal.lines() {
        // `<time>  INFO <spans{...}:> <target>: <message>`
        if let Some((_, rest)) = line.split_once(" INFO ") {
            let target = rest.split_whitespace().find(|t| t.ends_with(':') && !t.contains('{')).unwrap_or("?");
            *counts.entry(target.trim_end_matches(':').to_string()).or_default() += 1;
        }
    }
    counts
}

#[tokio::test(flavor = "multi_thread")]
async fn a_cluster_is_created_ready_secured_idempotent_and_survives_failures() {
    harness();
    let home = temp_home();
    let spec_path = unique_spec(home.path(), "it-boot", 65, 2);
    // Shorter than Kubernetes' 40 s and 300 s, so that not-ready nodes and evictions are seen.
    set_health(&spec_path, &[("node_grace_seconds", 10), ("eviction_seconds", 10)]);
    let _guard = DestroyGuard { home: home.path().into(), spec: spec_path.clone() };
    let s = spec_path.to_str().unwrap();

    // From nothing to every node Ready.
    let started = Instant::now();
    let out = clusterctl(home.path(), &["create", "-f", s]);
    let stdout = assert_ok(&out, "create");
    eprintln!("create took {:.1}s", started.elapsed().as_secs_f64());
    assert!(stdout.contains("nodes: 3/3 Ready"), "{stdout}");
    // The operator sent the binary to the master only; the workers fetched it from the master.
    let progress = String::from_utf8_lossy(&out.stderr);
    assert_eq!(progress.matches("installed (binary from the master), joining").count(), 2, "{progress}");
    // On a pipe, progress reads like a log: no escape codes, and no line printed twice (each
    // node's state once, not every time a wait polls it).
    assert!(!progress.contains('\u{1b}'), "escape codes in create's stderr:\n{progress}");
    let repeated = repeated_progress_lines(&progress);
    assert!(repeated.is_empty(), "progress lines printed more than once: {repeated:?}\n{progress}");

    // get nodes, through the realized load balancer.
    let table = assert_ok(&clusterctl(home.path(), &["get", "nodes", "-f", s]), "get nodes");
    for name in ["it-boot-masters-0", "it-boot-default-0", "it-boot-default-1"] {
        let line = table.lines().find(|l| l.starts_with(name)).unwrap_or_else(|| panic!("{name} in\n{table}"));
        assert!(line.contains(" Ready"), "{line}");
    }
    let kubeconfig_path = home.path().join("it-boot/kubeconfig");
    let kc = Kubeconfig::load(&kubeconfig_path).unwrap();
    assert!(kc.server.starts_with("https://10.65.0.1:"), "the API is reached through the load balancer: {}", kc.server);

    // Credentials: files with keys are 0600 on the operator's machine.
    use std::os::unix::fs::PermissionsExt;
    for f in ["it-boot/kubeconfig", "it-boot/ssh/id_ed25519"] {
        let mode = std::fs::metadata(home.path().join(f)).unwrap().permissions().mode() & 0o777;
        assert_eq!(mode, 0o600, "{f}");
    }

    // No credentials: 401. A node's credentials on another node: 403.
    let anonymous = ApiClient::new(&kc.server, ClientAuth::Insecure).unwrap();
    let err = anonymous.get_value("/api/v1/nodes").await.unwrap_err();
    assert_eq!(err.code(), Some(401), "{err}");
    let err = anonymous.request_text("GET", clusterctl::apiserver::NODE_BINARY_PATH).await.unwrap_err();
    assert_eq!(err.code(), Some(401), "the binary is served to the cluster's machines only: {err}");
    let aws = AwsCloud::connect(&AwsOptions::default(), "us-east-1").await;
    let cloud = Resilient::new(Arc::new(aws), RetryPolicy::default());
    let inv = provision::discover(&cloud, "it-boot").await.unwrap();
    let key = home.path().join("it-boot/ssh/id_ed25519");
    let by_name = |n: &str| inv.instances.iter().find(|i| i.tags["Name"] == n).unwrap().clone();
    let worker0 = Arc::new(std::sync::Mutex::new(ssh_to(&cloud, &by_name("it-boot-default-0"), &key).await));
    let master = Arc::new(std::sync::Mutex::new(ssh_to(&cloud, &by_name("it-boot-masters-0"), &key).await));
    let node_cert = sudo(&worker0, "cat /var/lib/clusterctl/pki/node.crt").await;
    let node_key = sudo(&worker0, "cat /var/lib/clusterctl/pki/node.key").await;
    let as_worker0 = ApiClient::new(&kc.server, ClientAuth::Certificate { ca_pem: kc.ca_pem.clone(), cert_pem: node_cert, key_pem: node_key }).unwrap();
    let mut other = as_worker0.get_value("/api/v1/nodes/it-boot-default-1").await.unwrap();
    other["metadata"]["labels"]["evil"] = json!("yes");
    let err = as_worker0.replace_value("/api/v1/nodes/it-boot-default-1/status", &other).await.unwrap_err();
    assert_eq!(err.code(), Some(403), "{err}");
    let own = as_worker0.get_value("/api/v1/nodes/it-boot-default-0").await.unwrap();
    as_worker0.replace_value("/api/v1/nodes/it-boot-default-0/status", &own).await.unwrap();
    // Nor can it give itself a role, change its taints or providerID, or make another Node.
    let merge = "application/merge-patch+json";
    let taint = json!({"spec": {"taints": [{"key": "mine", "effect": "NoSchedule"}]}});
    // providerID is immutable for every writer (Kubernetes' validation: 422).
    for (patch, code) in [(json!({"metadata": {"labels": {"node-role.kubernetes.io/control-plane": ""}}}), 403), (taint, 403), (json!({"spec": {"providerID": "aws:///us-east-1a/i-0"}}), 422)] {
        let err = as_worker0.patch_path("/api/v1/nodes/it-boot-default-0", merge, &patch).await.unwrap_err();
        assert_eq!(err.code(), Some(code), "{patch}: {err}");
    }
    let err = as_worker0.create_value("/api/v1/nodes", &json!({"apiVersion": "v1", "kind": "Node", "metadata": {"name": "forged"}})).await.unwrap_err();
    assert_eq!(err.code(), Some(403), "{err}");
    for path in ["/api/v1/secrets", "/api/v1/configmaps", "/api/v1/namespaces/kube-system/configmaps"] {
        let err = as_worker0.get_value(path).await.unwrap_err();
        assert_eq!(err.code(), Some(403), "{path}: {err}");
    }

    // A leaked join token (this worker's own, from its config) yields a certificate only for the
    // machine whose cloud-signed identity names the node: none without an identity, and not
    // default-1's name with default-0's identity (which only default-0's processes can read).
    let config = sudo(&worker0, "cat /etc/clusterctl/node.toml").await;
    let token = config.lines().find_map(|l| l.trim().strip_prefix("join_token = ")).expect("the worker's join token").trim_matches('"').to_string();
    let leaked = ApiClient::new(&kc.server, ClientAuth::Token { ca_pem: kc.ca_pem.clone(), token }).unwrap();
    let imds = "t=$(curl -s -m 5 -X PUT -H 'X-aws-ec2-metadata-token-ttl-seconds: 60' http://169.254.169.254/latest/api/token) && curl -sf -m 5 -H \"X-aws-ec2-metadata-token: $t\" http://169.254.169.254/latest/dynamic/instance-identity";
    let document = sudo(&worker0, &format!("{imds}/document")).await;
    let signature = sudo(&worker0, &format!("{imds}/signature")).await;
    assert!(document.contains(&by_name("it-boot-default-0").id), "{document}");
    let b64 = |text: &str| base64::Engine::encode(&base64::engine::general_purpose::STANDARD, text);
    let (csr_pem, _) = clusterctl::pki::node_csr("it-boot-default-1").unwrap();
    let own_identity = json!({clusterctl::api::INSTANCE_IDENTITY_DOCUMENT_ANNOTATION: b64(&document), clusterctl::api::INSTANCE_IDENTITY_SIGNATURE_ANNOTATION: signature.trim()});
    for (annotations, why) in [(json!({}), "carries no instance identity"), (own_identity, "is named \"it-boot-default-0\", not \"it-boot-default-1\"")] {
        let request = json!({"apiVersion": "certificates.k8s.io/v1", "kind": "CertificateSigningRequest", "metadata": {"generateName": "leaked-", "annotations": annotations},
            "spec": {"request": b64(&csr_pem), "signerName": clusterctl::api::KUBELET_CLIENT_SIGNER, "usages": ["digital signature", "client auth"]}});
        let err = leaked.create_value("/apis/certificates.k8s.io/v1/certificatesigningrequests", &request).await.unwrap_err();
        assert_eq!(err.code(), Some(403), "{why}: {err}");
        assert!(err.to_string().contains(why), "{why}: {err}");
    }

    // Key and token files on nodes are 0600.
    let modes = sudo(&master, "stat -c '%a %n' /etc/clusterctl/node.toml /var/lib/clusterctl/pki/*.key").await;
    assert!(modes.lines().count() >= 4 && modes.lines().all(|l| l.starts_with("600 ")), "{modes}");
    let modes = sudo(&worker0, "stat -c '%a %n' /etc/clusterctl/node.toml /var/lib/clusterctl/pki/node.key").await;
    assert!(modes.lines().all(|l| l.starts_with("600 ")), "{modes}");

    // Re-running create: no cloud mutation, no reinstall, in a few seconds.
    let started = Instant::now();
    let out = assert_ok(&clusterctl(home.path(), &["create", "-f", s, "-o", "json"]), "second create");
    let summary: Value = serde_json::from_str(&out).unwrap();
    assert_eq!(summary["mutating_calls"], 0, "{out}");
    assert_eq!(summary["nodes_changed"], json!([]), "{out}");
    let rerun = started.elapsed();
    eprintln!("re-run took {:.1}s", rerun.as_secs_f64());
    assert!(rerun < Duration::from_secs(30), "re-run took {rerun:?}");

    // Safe under partition (this spec: grace 10 s, eviction 10 s). Zone b's only worker cut off
    // from the API, its processes running: it is shown not ready, but a zone with no Ready node
    // keeps its pods however long. Then zone a's worker stops reporting while the master of its
    // zone stays Ready: a failed machine, whose pod is evicted.
    let admin = ApiClient::new(&kc.server, ClientAuth::Certificate { ca_pem: kc.ca_pem.clone(), cert_pem: kc.client_cert_pem.clone(), key_pem: kc.client_key_pem.clone() }).unwrap();
    let nodes = admin.list_values("/api/v1/nodes").await.unwrap();
    let zone_of = |name: &str| nodes.iter().find(|n| n["metadata"]["name"] == name).and_then(|n| n.pointer("/metadata/labels/topology.kubernetes.io~1zone")).and_then(Value::as_str).unwrap_or_default().to_string();
    assert_eq!(zone_of("it-boot-masters-0"), zone_of("it-boot-default-0"));
    assert_ne!(zone_of("it-boot-default-1"), zone_of("it-boot-default-0"), "default-1 is alone in its zone");
    for node in ["it-boot-default-0", "it-boot-default-1"] {
        // Bound past the scheduler; the image is never pulled (the pod object is what matters).
        let pod = json!({"apiVersion": "v1", "kind": "Pod", "metadata": {"name": format!("pinned-{node}"), "namespace": "default"},
            "spec": {"nodeName": node, "containers": [{"name": "c", "image": "clusterctl.invalid/none:1", "imagePullPolicy": "Never"}]}});
        let created = admin.create_value("/api/v1/namespaces/default/pods", &pod).await.unwrap();
        let tolerations = created["spec"]["tolerations"].as_array().cloned().unwrap_or_default();
        assert!(tolerations.iter().any(|t| t["key"] == "node.kubernetes.io/unreachable" && t["tolerationSeconds"] == 10), "the spec's eviction_seconds as the default toleration: {tolerations:?}");
    }
    // A worker's credential reads the pods bound to it, whole, and the others in their network
    // view only (what its network policy rules need): never another node's pod, nor all pods.
    for path in ["/api/v1/pods", "/api/v1/namespaces/default/pods", "/api/v1/pods?fieldSelector=spec.nodeName%3Dit-boot-default-1", "/api/v1/namespaces/default/pods/pinned-it-boot-default-1"] {
        let err = as_worker0.get_value(path).await.unwrap_err();
        assert_eq!(err.code(), Some(403), "{path}: {err}");
    }
    as_worker0.get_value("/api/v1/namespaces/default/pods/pinned-it-boot-default-0").await.expect("a pod bound to it");
    let own: Vec<String> = as_worker0.list_values("/api/v1/pods?fieldSelector=spec.nodeName%3Dit-boot-default-0").await.unwrap().iter().map(|p| p["metadata"]["name"].as_str().unwrap().to_string()).collect();
    assert!(own.contains(&"pinned-it-boot-default-0".to_string()) && !own.contains(&"pinned-it-boot-default-1".to_string()), "{own:?}");
    let view = as_worker0.list::<Value>(&clusterctl::api::resource::PODS, None, &clusterctl::client::ListOptions::pod_network()).await.unwrap();
    let other = view.items.iter().find(|p| p["metadata"]["name"] == "pinned-it-boot-default-1").expect("every pod in the network view");
    assert!(other["spec"]["containers"][0].get("image").is_none() && other["spec"].get("tolerations").is_none(), "{other}");
    let lone = by_name("it-boot-default-1").id.clone();
    cut_off_from_the_api(&lone, 6443, true);
    let took = wait_ready(&admin, "it-boot-default-1", "Unknown", Duration::from_secs(25)).await;
    eprintln!("the cut-off worker shown not ready after {:.1}s", took.as_secs_f64());
    tokio::time::sleep(Duration::from_secs(20)).await;
    let pod = admin.get_value("/api/v1/namespaces/default/pods/pinned-it-boot-default-1").await.unwrap();
    assert!(pod["metadata"]["deletionTimestamp"].is_null(), "twice the toleration later, the pod of a zone without a Ready node is kept: {}", pod["metadata"]);
    cut_off_from_the_api(&lone, 6443, false);
    let took = wait_ready(&admin, "it-boot-default-1", "True", Duration::from_secs(30)).await;
    eprintln!("the cut-off worker Ready again {:.1}s after the partition healed", took.as_secs_f64());

    // A worker whose agent stops goes NotReady within 15 s, and Ready again when it returns.
    sudo(&worker0, "systemctl stop clusterctl-worker").await;
    let took = wait_ready(&admin, "it-boot-default-0", "Unknown", Duration::from_secs(15)).await;
    eprintln!("NotReady after {:.1}s", took.as_secs_f64());
    let (_, evicted) = eventually("the stopped worker's pod evicted", Duration::from_secs(30), || async {
        match admin.get_value("/api/v1/namespaces/default/pods/pinned-it-boot-default-0").await {
            Err(e) if e.code() == Some(404) => Ok(()),
            other => Err(format!("{other:?}")),
        }
    })
    .await;
    eprintln!("its pod evicted {:.1}s after the node was shown not ready", evicted.as_secs_f64());
    sudo(&worker0, "systemctl start clusterctl-worker").await;
    let took = wait_ready(&admin, "it-boot-default-0", "True", Duration::from_secs(15)).await;
    eprintln!("Ready again after {:.1}s", took.as_secs_f64());

    // The nodes' journals carry no escape codes, and the master's shows what the control loops
    // decided at info: here the node lifecycle controller marking the stopped worker.
    let journal = sudo(&master, "journalctl -u clusterctl-master -a -o cat --no-pager").await;
    assert!(!journal.contains('\u{1b}'), "escape codes in the master's journal");
    eprintln!("master journal: {} lines; info lines by target: {:?}", journal.lines().count(), info_lines_by_target(&journal));
    let marked = journal.lines().find(|l| l.contains(" INFO ") && l.contains("clusterctl::controllers::node_lifecycle") && l.contains("node not ready"));
    assert!(marked.is_some(), "no info line of the node lifecycle controller in the master's journal:\n{journal}");
    let zone_b = zone_of("it-boot-default-1");
    let paused = journal.lines().find(|l| l.contains("evictions paused") && l.contains(&zone_b) && l.contains("no Ready node"));
    assert!(paused.is_some(), "the master's journal says why zone {zone_b} kept its pods:\n{journal}");
    let journal = sudo(&worker0, "journalctl -u clusterctl-worker -a -o cat --no-pager").await;
    assert!(!journal.contains('\u{1b}'), "escape codes in the worker's journal");
    eprintln!("worker journal: {} lines; info lines by target: {:?}", journal.lines().count(), info_lines_by_target(&journal));

    // A deleted Node's certificate stops working: default-1's own credential answers until its
    // Node is deleted, then is refused with 401 (its agent is locked out; nothing below needs it).
    let read = |path: &str| {
        let out = std::process::Command::new("docker").args(["exec", &lone, "cat", path]).output().unwrap();
        String::from_utf8(out.stdout).unwrap()
    };
    let as_default1 = ApiClient::new(&kc.server, ClientAuth::Certificate { ca_pem: kc.ca_pem.clone(), cert_pem: read("/var/lib/clusterctl/pki/node.crt"), key_pem: read("/var/lib/clusterctl/pki/node.key") }).unwrap();
    as_default1.get_value("/api/v1/nodes/it-boot-default-1").await.expect("a node's certificate works while its Node exists");
    admin.delete_value("/api/v1/nodes/it-boot-default-1").await.unwrap();
    let err = as_default1.get_value("/api/v1/nodes/it-boot-default-0").await.unwrap_err();
    assert_eq!(err.code(), Some(401), "a deleted node's certificate is refused: {err}");
    as_worker0.get_value("/api/v1/nodes/it-boot-default-0").await.expect("another node's certificate still works");

    // kill -9 of the master during 1,000 writes: every acknowledged write survives.
    let master_ip = by_name("it-boot-masters-0").private_ip.unwrap();
    let direct = ApiClient::new(&format!("https://{master_ip}:6443"), ClientAuth::Certificate { ca_pem: kc.ca_pem.clone(), cert_pem: kc.client_cert_pem.clone(), key_pem: kc.client_key_pem.clone() }).unwrap();
    let writer = {
        let direct = direct.clone();
        tokio::spawn(async move {
            let mut acked = Vec::new();
            let mut failed = 0;
            for i in 0..1000 {
                let cm = json!({ "apiVersion": "v1", "kind": "ConfigMap", "metadata": { "name": format!("burst-{i}"), "namespace": "default" }, "data": { "i": i.to_string() } });
                match direct.create_value("/api/v1/namespaces/default/configmaps", &cm).await {
                    Ok(_) => acked.push(i),
                    Err(_) => {
                        failed += 1;
                        tokio::time::sleep(Duration::from_millis(50)).await;
                    }
                }
            }
            (acked, failed)
        })
    };
    tokio::time::sleep(Duration::from_millis(700)).await;
    sudo(&master, "systemctl kill -s KILL clusterctl-master").await;
    let (acked, failed) = writer.await.unwrap();
    eprintln!("{} writes acknowledged, {failed} failed while the master was down", acked.len());
    assert!(failed > 0, "the kill happened during the burst");
    let start = Instant::now();
    let stored = loop {
        match direct.list_values("/api/v1/namespaces/default/configmaps").await {
            Ok(items) => break items,
            Err(e) => {
                assert!(start.elapsed() < Duration::from_secs(30), "the master did not come back: {e}");
                tokio::time::sleep(Duration::from_millis(200)).await;
            }
        }
    };
    let names: std::collections::HashSet<String> = stored.iter().filter_map(|c| c.pointer("/metadata/name").and_then(Value::as_str).map(str::to_string)).collect();
    let lost: Vec<_> = acked.iter().filter(|i| !names.contains(&format!("burst-{i}"))).collect();
    assert!(lost.is_empty(), "acknowledged writes lost after kill -9: {lost:?}");

    // Destroy leaves nothing.
    assert_ok(&clusterctl(home.path(), &["destroy", "-f", s, "--yes"]), "destroy");
    assert!(provision::discover(&cloud, "it-boot").await.unwrap().is_empty());
}
