//! Workload timings against a running cluster (made by `scripts/bench` on the realizer harness):
//!   1. a 100-replica Deployment applied: seconds until all 100 pods are Running, and each pod's
//!      startup latency (first listed to first seen Running; p50 and p99);
//!   2. one worker's instance terminated through the EC2 API: seconds until 100 pods are Running
//!      again, none on that worker;
//!   3. the Deployment deleted, and its pods awaited gone (not timed).
//!
//!   cargo run --release --example workload_timings -- CLUSTER-NAME
//!
//! Reads `$CLUSTERCTL_HOME/<cluster>/kubeconfig` and the standard AWS environment. Prints
//! `RESULT <figure> <seconds>` lines for `scripts/bench`. The terminated worker is gone
//! afterwards; `clusterctl create` replaces it.

use std::time::{Duration, Instant};

use anyhow::{Context, bail};
use clusterctl::client::kubeconfig::Kubeconfig;
use clusterctl::client::{ApiClient, ClientAuth};
use serde_json::{Value, json};

const REPLICAS: usize = 100;

fn deployment() -> Value {
    json!({
        "apiVersion": "apps/v1", "kind": "Deployment",
        "metadata": { "name": "bench", "namespace": "default" },
        "spec": {
            "replicas": REPLICAS,
            "selector": { "matchLabels": { "app": "bench" } },
            "template": {
                "metadata": { "labels": { "app": "bench" } },
                "spec": { "terminationGracePeriodSeconds": 1, "containers": [{
                    "name": "sleep", "image": "clusterctl-busybox:latest", "imagePullPolicy": "Never",
                    "command": ["sleep", "100000"],
                    "resources": { "requests": { "cpu": "10m", "memory": "8Mi" } },
                }] },
            },
        },
    })
}

async fn bench_pods(client: &ApiClient) -> Vec<Value> {
    client.list_values("/api/v1/namespaces/default/pods?labelSelector=app%3Dbench").await.unwrap_or_default()
}

fn running_off(pods: &[Value], node: Option<&str>) -> usize {
    pods.iter()
        .filter(|p| p.pointer("/metadata/deletionTimestamp").is_none_or(Value::is_null))
        .filter(|p| p.pointer("/status/phase").and_then(Value::as_str) == Some("Running"))
        .filter(|p| node.is_none_or(|n| p.pointer("/spec/nodeName").and_then(Value::as_str) != Some(n)))
        .count()
}

/// Polls every 250 ms until `done`; the seconds it took.
async fn time_until(client: &ApiClient, what: &str, within: Duration, done: impl Fn(&[Value]) -> bool) -> anyhow::Result<f64> {
    let start = Instant::now();
    let mut last_shown = (usize::MAX, 0, 0);
    loop {
        let pods = bench_pods(client).await;
        // Progress on stderr: how many exist, are bound, run.
        let bound = pods.iter().filter(|p| p.pointer("/spec/nodeName").and_then(Value::as_str).is_some_and(|n| !n.is_empty())).count();
        let shown = (pods.len(), bound, running_off(&pods, None));
        if shown != last_shown {
            eprintln!("  {:6.1}s  pods {:3}  bound {:3}  running {:3}", start.elapsed().as_secs_f64(), shown.0, shown.1, shown.2);
            last_shown = shown;
        }
        if done(&pods) {
            return Ok(start.elapsed().as_secs_f64());
        }
        if start.elapsed() > within {
            bail!("{what}: not within {within:?} ({} pods, {} running)", pods.len(), running_off(&pods, None));
        }
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let cluster = std::env::args().nth(1).context("usage: workload_timings CLUSTER-NAME")?;
    let home = std::env::var_os("CLUSTERCTL_HOME").map(std::path::PathBuf::from).context("CLUSTERCTL_HOME is not set")?;
    let kc = Kubeconfig::load(&home.join(&cluster).join("kubeconfig"))?;
    let client = ApiClient::new(&kc.server, ClientAuth::Certificate { ca_pem: kc.ca_pem, cert_pem: kc.client_cert_pem, key_pem: kc.client_key_pem })?;

    let start = Instant::now();
    client.create_value("/apis/apps/v1/namespaces/default/deployments", &deployment()).await.context("creating the bench Deployment")?;
    // Each pod's startup latency, as Kubernetes' pod startup SLO counts it (image present): from
    // when the pod is first listed (created by its ReplicaSet) to when it is first seen Running,
    // listed every 100 ms.
    let (mut first_seen, mut running_at) = (std::collections::HashMap::<String, Instant>::new(), std::collections::HashMap::<String, Instant>::new());
    loop {
        let pods = bench_pods(&client).await;
        let now = Instant::now();
        for p in &pods {
            let uid = p.pointer("/metadata/uid").and_then(Value::as_str).unwrap_or_default().to_string();
            first_seen.entry(uid.clone()).or_insert(now);
            if p.pointer("/status/phase").and_then(Value::as_str) == Some("Running") {
                running_at.entry(uid).or_insert(now);
            }
        }
        if running_off(&pods, None) == REPLICAS {
            break;
        }
        if start.elapsed() > Duration::from_secs(300) {
            bail!("100 replicas running: not within 300 s ({} pods, {} running)", pods.len(), running_off(&pods, None));
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let deploy = start.elapsed().as_secs_f64();
    println!("{REPLICAS} replicas Running {deploy:.1} s after the create");
    println!("RESULT deploy-100-running {deploy:.2}");
    let mut latencies: Vec<f64> = running_at.iter().filter_map(|(uid, at)| Some(at.duration_since(*first_seen.get(uid)?).as_secs_f64())).collect();
    latencies.sort_by(f64::total_cmp);
    let quantile = |q: f64| latencies[((latencies.len() as f64 * q).ceil() as usize).clamp(1, latencies.len()) - 1];
    println!("pod startup latency over {} pods (image present): p50 {:.2} s, p99 {:.2} s", latencies.len(), quantile(0.5), quantile(0.99));
    println!("RESULT pod-startup-p50 {:.3}", quantile(0.5));
    println!("RESULT pod-startup-p99 {:.3}", quantile(0.99));

    // The worker with the most pods dies.
    let pods = bench_pods(&client).await;
    let mut per_node = std::collections::BTreeMap::<String, usize>::new();
    for p in &pods {
        *per_node.entry(p.pointer("/spec/nodeName").and_then(Value::as_str).unwrap_or("").to_string()).or_default() += 1;
    }
    let (victim, on_victim) = per_node.iter().max_by_key(|(_, n)| **n).map(|(n, c)| (n.clone(), *c)).context("no pods")?;
    let node = client.get_value(&format!("/api/v1/nodes/{victim}")).await?;
    let instance = node.pointer("/spec/providerID").and_then(Value::as_str).and_then(|p| p.rsplit('/').next()).context("the node has no providerID")?.to_string();
    let conf = aws_config::defaults(aws_config::BehaviorVersion::latest()).http_client(clusterctl::cloud::aws::https_client()).load().await;
    let ec2 = aws_sdk_ec2::Client::new(&conf);
    let start = Instant::now();
    ec2.terminate_instances().instance_ids(&instance).send().await.context("terminating the worker")?;
    time_until(&client, "replicas running off the terminated worker", Duration::from_secs(300), |p| running_off(p, Some(&victim)) == REPLICAS).await?;
    let moved = start.elapsed().as_secs_f64();
    println!("{on_victim} pods of the terminated worker {victim} Running elsewhere {moved:.1} s after TerminateInstances");
    println!("RESULT worker-terminated-pods-running {moved:.2}");

    client.delete_value("/apis/apps/v1/namespaces/default/deployments/bench").await.context("deleting the bench Deployment")?;
    time_until(&client, "bench pods gone", Duration::from_secs(300), |p| p.is_empty()).await?;
    Ok(())
}
