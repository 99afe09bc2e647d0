//! Workloads end to end against LocalStack with realized machines: an app applied from YAML runs
//! as real containers on the workers, is reached through its NodePort on every node, restarts
//! when its container dies, scales, and moves when a worker machine dies.

mod common;

use std::collections::BTreeSet;
use std::time::{Duration, Instant};

use clusterctl::client::kubeconfig::Kubeconfig;
use clusterctl::client::{ApiClient, ClientAuth};
use common::*;
use serde_json::Value;

fn admin(home: &std::path::Path, cluster: &str) -> ApiClient {
    let kc = Kubeconfig::load(&home.join(cluster).join("kubeconfig")).unwrap();
    ApiClient::new(&kc.server, ClientAuth::Certificate { ca_pem: kc.ca_pem, cert_pem: kc.client_cert_pem, key_pem: kc.client_key_pem }).unwrap()
}

async fn pods(client: &ApiClient) -> Vec<Value> {
    client.list_values("/api/v1/namespaces/default/pods").await.unwrap_or_default()
}

fn is_ready(pod: &Value) -> bool {
    pod.pointer("/status/conditions")
        .and_then(Value::as_array)
        .is_some_and(|cs| cs.iter().any(|c| c["type"] == "Ready" && c["status"] == "True"))
}

async fn wait_for<F: Fn(&[Value]) -> bool>(client: &ApiClient, what: &str, within: Duration, done: F) -> Vec<Value> {
    let start = Instant::now();
    loop {
        let ps = pods(client).await;
        if done(&ps) {
            eprintln!("{what}: {:.1}s", start.elapsed().as_secs_f64());
            return ps;
        }
        assert!(start.elapsed() < within, "{what} not within {within:?}; pods: {}", serde_json::to_string_pretty(&ps).unwrap());
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
}

/// GETs `http://ip:port/` with a plain TCP client (the node is a container the harness made).
async fn http_get(ip: &str, port: u16) -> Option<String> {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let mut s = tokio::time::timeout(Duration::from_secs(3), tokio::net::TcpStream::connect((ip, port))).await.ok()?.ok()?;
    s.write_all(format!("GET / HTTP/1.0\r\nHost: {ip}\r\n\r\n").as_bytes()).await.ok()?;
    let mut buf = Vec::new();
    tokio::time::timeout(Duration::from_secs(3), s.read_to_end(&mut buf)).await.ok()?.ok()?;
    let text = String::from_utf8_lossy(&buf).to_string();
    text.starts_with("HTTP/1.").then(|| text.split("\r\n\r\n").nth(1).unwrap_or("").trim().to_string())
}

#[tokio::test(flavor = "multi_thread")]
async fn an_app_runs_is_reached_restarts_scales_and_moves_off_a_dead_worker() {
    harness();
    let home = temp_home();
    let spec_path = unique_spec(home.path(), "it-apps", 66, 3);
    let _guard = DestroyGuard { home: home.path().into(), spec: spec_path.clone() };
    let s = spec_path.to_str().unwrap();
    assert_ok(&clusterctl(home.path(), &["create", "-f", s]), "create");
    let tarball = std::env::var("CLUSTERCTL_BUSYBOX_TAR").unwrap_or_else(|_| root().join(".cache/images/busybox.tar").to_string_lossy().into_owned());
    assert_ok(&clusterctl(home.path(), &["load-image", "-f", s, &tarball]), "load-image");
    let manifest = root().join("manifests/web.yaml");
    let out = assert_ok(&clusterctl(home.path(), &["apply", "-f", manifest.to_str().unwrap(), "--cluster", "it-apps"]), "apply");
    assert!(out.contains("created"), "{out}");
    let client = admin(home.path(), "it-apps");

    // Three ready replicas, one on each of the three workers.
    let ps = wait_for(&client, "3 ready replicas", Duration::from_secs(120), |ps| ps.iter().filter(|p| is_ready(p)).count() == 3).await;
    let nodes: BTreeSet<&str> = ps.iter().filter_map(|p| p.pointer("/spec/nodeName").and_then(Value::as_str)).collect();
    assert_eq!(nodes.len(), 3, "replicas spread over the three workers: {nodes:?}");

    // Reached through the NodePort on every node, answered by every replica.
    let node_ips: Vec<String> = client
        .list_values("/api/v1/nodes")
        .await
        .unwrap()
        .iter()
        .filter_map(|n| n.pointer("/status/addresses/0/address").and_then(Value::as_str).map(str::to_string))
        .collect();
    let mut answers = BTreeSet::new();
    for round in 0..16 {
        let ip = &node_ips[round % node_ips.len()];
        let body = http_get(ip, 30080).await.unwrap_or_else(|| panic!("no answer from {ip}:30080"));
        answers.insert(body);
    }
    assert_eq!(answers.len(), 3, "round robin reaches all replicas: {answers:?}");

    // A container that dies is restarted in place (restartPolicy Always).
    let ps = pods(&client).await;
    let pod = ps.iter().find(|p| is_ready(p)).unwrap().clone();
    let pod_name = pod["metadata"]["name"].as_str().unwrap().to_string();
    let node = pod["spec"]["nodeName"].as_str().unwrap().to_string();
    let container = pod["status"]["containerStatuses"][0]["containerID"].as_str().unwrap().trim_start_matches("docker://").to_string();
    let instance = client.get_value(&format!("/api/v1/nodes/{node}")).await.unwrap()["spec"]["providerID"].as_str().unwrap().rsplit('/').next().unwrap().to_string();
    let killed = std::process::Command::new("docker").args(["exec", &instance, "docker", "kill", &container]).output().unwrap();
    assert!(killed.status.success(), "killing the container inside {instance}: {}", String::from_utf8_lossy(&killed.stderr));
    wait_for(&client, "the killed container restarted", Duration::from_secs(60), |ps| {
        ps.iter().any(|p| p["metadata"]["name"] == pod_name.as_str() && is_ready(p) && p["status"]["containerStatuses"][0]["restartCount"].as_u64().unwrap_or(0) >= 1)
    })
    .await;

    // Scale to 5.
    assert_ok(&clusterctl(home.path(), &["scale", "deployment", "web", "--replicas", "5", "--cluster", "it-apps"]), "scale");
    wait_for(&client, "5 ready replicas", Duration::from_secs(90), |ps| ps.iter().filter(|p| is_ready(p)).count() == 5).await;

    // A dead worker machine: its pods are replaced on the other nodes.
    let ps = pods(&client).await;
    let victim = ps.iter().filter_map(|p| p.pointer("/spec/nodeName").and_then(Value::as_str)).find(|n| n.contains("default")).unwrap().to_string();
    let victim_instance = client.get_value(&format!("/api/v1/nodes/{victim}")).await.unwrap()["spec"]["providerID"].as_str().unwrap().rsplit('/').next().unwrap().to_string();
    let killed = std::process::Command::new("docker").args(["kill", &victim_instance]).output().unwrap();
    assert!(killed.status.success(), "docker kill {victim_instance}");
    wait_for(&client, "5 ready replicas off the dead worker", Duration::from_secs(120), |ps| {
        ps.iter().filter(|p| is_ready(p) && p.pointer("/spec/nodeName").and_then(Value::as_str) != Some(victim.as_str())).count() == 5
    })
    .await;
}
