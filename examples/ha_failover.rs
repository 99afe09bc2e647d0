//! Failover of an HA control plane (issue 7), against a cluster `scripts/bench ha` created: RUNS
//! times, a client writes a ConfigMap and reads it back through the API load balancer every 100 ms
//! while the master holding the controllers' lease is terminated through the EC2 API. Measures
//! - API failover: from the termination to the first write and read answered after it (a request
//!   in flight at the termination counts until it fails or is answered);
//! - control-loop takeover: until every control-loop lease is held by a surviving master;
//! - master replacement: until the machine controller's new master is Ready and etcd has three
//!   healthy members again (the next run starts only then).
//!
//!   CLUSTERCTL_HOME=... cargo run --release --example ha_failover -- SPEC CLUSTERCTL-BINARY [RUNS]
//!
//! Prints one line and `RESULT <figure> <value>` lines per run (for `scripts/bench`), then medians.

use std::process::Command;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use clusterctl::client::kubeconfig::Kubeconfig;
use clusterctl::client::{ApiClient, ClientAuth};
use clusterctl::cloud::aws::{AwsCloud, AwsOptions};
use clusterctl::cloud::Cloud;
use clusterctl::node::master::leader_node;
use serde_json::{json, Value};

const LEASES: [&str; 3] = ["kube-scheduler", "kube-controller-manager", "cloud-controller-manager"];

async fn holders(client: &ApiClient) -> Vec<String> {
    let mut out = Vec::new();
    for lease in LEASES {
        let l = client.get_value(&format!("/apis/coordination.k8s.io/v1/namespaces/kube-system/leases/{lease}")).await.unwrap_or_default();
        out.push(l.pointer("/spec/holderIdentity").and_then(Value::as_str).unwrap_or_default().to_string());
    }
    out
}

/// What to look at when a lease did not move: every lease whole, and what each master that
/// still runs (a harness container named by its instance id) logged about leases and etcd.
async fn print_diagnostics(client: &ApiClient) {
    for lease in LEASES {
        let l = client.get_value(&format!("/apis/coordination.k8s.io/v1/namespaces/kube-system/leases/{lease}")).await.unwrap_or_default();
        eprintln!("lease {lease}: {}", l.get("spec").cloned().unwrap_or_default());
    }
    for (node, instance) in ready_masters(client).await {
        let out = Command::new("docker")
            .args(["exec", &instance, "sh", "-c", "journalctl -u clusterctl-master --since -3min --no-pager -o cat | grep -iE 'lead|lease|etcd' | tail -n 30"])
            .output();
        match out {
            Ok(out) => eprintln!("--- {node} ({instance}):\n{}", String::from_utf8_lossy(&out.stdout)),
            Err(e) => eprintln!("--- {node} ({instance}): {e}"),
        }
    }
}

fn healthy_etcd_members(binary: &str, spec: &str) -> usize {
    let out = Command::new(binary).args(["status", "-f", spec, "-o", "json"]).output().expect("running clusterctl status");
    let v: Value = serde_json::from_slice(&out.stdout).unwrap_or_default();
    v.pointer("/etcd/members").and_then(Value::as_array).map(|m| m.iter().filter(|m| m["healthy"] == true).count()).unwrap_or(0)
}

async fn ready_masters(client: &ApiClient) -> Vec<(String, String)> {
    client
        .list_values("/api/v1/nodes")
        .await
        .unwrap_or_default()
        .iter()
        .filter(|n| n.pointer("/metadata/labels/node-role.kubernetes.io~1control-plane").is_some())
        .filter(|n| n.pointer("/status/conditions").and_then(Value::as_array).is_some_and(|cs| cs.iter().any(|c| c["type"] == "Ready" && c["status"] == "True")))
        .map(|n| (n["metadata"]["name"].as_str().unwrap_or("").to_string(), n["spec"]["providerID"].as_str().unwrap_or("").rsplit('/').next().unwrap_or("").to_string()))
        .collect()
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let args: Vec<String> = std::env::args().collect();
    anyhow::ensure!(args.len() >= 3, "usage: ha_failover SPEC CLUSTERCTL-BINARY [RUNS]");
    let (spec, binary) = (args[1].clone(), args[2].clone());
    let runs: usize = args.get(3).and_then(|a| a.parse().ok()).unwrap_or(3);
    let name = clusterctl::spec::ClusterSpec::load(std::path::Path::new(&spec))?.name.as_str().to_string();
    let home = std::env::var("CLUSTERCTL_HOME").map(std::path::PathBuf::from)?;
    let kc = Kubeconfig::load(&home.join(&name).join("kubeconfig"))?;
    let client = ApiClient::new(&kc.server, ClientAuth::Certificate { ca_pem: kc.ca_pem, cert_pem: kc.client_cert_pem, key_pem: kc.client_key_pem })?;
    let cloud = AwsCloud::connect(&AwsOptions::default(), "us-east-1").await;
    let (mut failover, mut takeover, mut replaced) = (Vec::new(), Vec::new(), Vec::new());
    for run in 1..=runs {
        let start = Instant::now();
        while ready_masters(&client).await.len() < 3 || healthy_etcd_members(&binary, &spec) < 3 {
            anyhow::ensure!(start.elapsed() < Duration::from_secs(600), "the control plane did not have 3 Ready masters and 3 healthy etcd members within 10 minutes");
            tokio::time::sleep(Duration::from_secs(1)).await;
        }
        // The controllers' holder (`<node>_<instance>`): a replacement in the same slot has another identity.
        let leader = holders(&client).await[1].clone();
        let instance = ready_masters(&client).await.into_iter().find(|(n, _)| n == leader_node(&leader)).map(|(_, i)| i).ok_or_else(|| anyhow::anyhow!("no Ready master {leader}"))?;
        // The client loop: the time of every answered write+read.
        let answered: Arc<Mutex<Vec<Instant>>> = Arc::default();
        let stop = Arc::new(std::sync::atomic::AtomicBool::new(false));
        let writer = {
            let (client, answered, stop) = (client.clone(), answered.clone(), stop.clone());
            tokio::spawn(async move {
                let mut i = 0u64;
                while !stop.load(std::sync::atomic::Ordering::Relaxed) {
                    let name = format!("failover-{run}-{i}");
                    i += 1;
                    let body = json!({"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": name}, "data": {"i": i.to_string()}});
                    let ok = tokio::time::timeout(Duration::from_secs(10), async {
                        client.create_value("/api/v1/namespaces/default/configmaps", &body).await?;
                        client.get_value(&format!("/api/v1/namespaces/default/configmaps/{name}")).await
                    })
                    .await;
                    if let Ok(Ok(_)) = ok {
                        answered.lock().unwrap().push(Instant::now());
                    }
                    tokio::time::sleep(Duration::from_millis(100)).await;
                }
            })
        };
        tokio::time::sleep(Duration::from_secs(2)).await;
        let killed = Instant::now();
        cloud.terminate_instances(std::slice::from_ref(&instance)).await?;
        let mut took_over = None;
        loop {
            let h = holders(&client).await;
            if took_over.is_none() && h.iter().all(|x| !x.is_empty() && *x != leader) {
                took_over = Some(killed.elapsed());
            }
            let answered_after = answered.lock().unwrap().iter().any(|t| *t > killed + Duration::from_millis(50));
            if took_over.is_some() && answered_after {
                break;
            }
            if killed.elapsed() >= Duration::from_secs(120) {
                print_diagnostics(&client).await;
            }
            anyhow::ensure!(
                killed.elapsed() < Duration::from_secs(120),
                "2 minutes after terminating {leader}: {}; {}",
                if took_over.is_some() { "every lease moved".to_string() } else { format!("leases held by {h:?}") },
                if answered_after { "writes answered" } else { "no write through the balancer answered" }
            );
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
        stop.store(true, std::sync::atomic::Ordering::Relaxed);
        writer.await?;
        // The first answer after the termination whose request was sent after it.
        let first = answered.lock().unwrap().iter().copied().find(|t| *t > killed + Duration::from_millis(50)).expect("checked above");
        let api = first.duration_since(killed);
        let takeover_s = took_over.expect("checked above");
        let mut new_ready = None;
        while new_ready.is_none() {
            if ready_masters(&client).await.len() == 3 && healthy_etcd_members(&binary, &spec) == 3 {
                new_ready = Some(killed.elapsed());
            } else {
                anyhow::ensure!(killed.elapsed() < Duration::from_secs(600), "the master was not replaced within 10 minutes");
                tokio::time::sleep(Duration::from_secs(1)).await;
            }
        }
        let replaced_s = new_ready.expect("set");
        println!(
            "run {run}: terminated {leader}: API answered again after {:.2} s, every control loop led by another master after {:.1} s, replacement Ready with 3 healthy etcd members after {:.1} s",
            api.as_secs_f64(),
            takeover_s.as_secs_f64(),
            replaced_s.as_secs_f64()
        );
        println!("RESULT ha-api-failover-s {:.2}", api.as_secs_f64());
        println!("RESULT ha-leases-takeover-s {:.1}", takeover_s.as_secs_f64());
        println!("RESULT ha-master-replaced-s {:.1}", replaced_s.as_secs_f64());
        failover.push(api.as_secs_f64());
        takeover.push(takeover_s.as_secs_f64());
        replaced.push(replaced_s.as_secs_f64());
    }
    let median = |mut v: Vec<f64>| {
        v.sort_by(f64::total_cmp);
        (v[v.len() / 2], v[0], v[v.len() - 1])
    };
    let (f, fmin, fmax) = median(failover);
    let (t, tmin, tmax) = median(takeover);
    let (r, rmin, rmax) = median(replaced);
    println!("{runs} runs (median, min-max): API failover {f:.2} s ({fmin:.2}-{fmax:.2}); control-loop takeover {t:.1} s ({tmin:.1}-{tmax:.1}); master replaced {r:.1} s ({rmin:.1}-{rmax:.1})");
    Ok(())
}
