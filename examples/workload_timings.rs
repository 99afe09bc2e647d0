//! Workload timings against a running cluster (made by `scripts/bench` on the realizer harness):
//!   1. 100 pods created one by one at 5 a second, as ClusterLoader2 (Kubernetes' own
//!      scalability tests) creates the latency pods its pod startup SLO is measured on
//!      (`Uniform5QPS`): each pod's startup latency (its create sent to first seen Running; p50
//!      and p99); then deleted and awaited gone;
//!   2. a 100-replica Deployment applied at once: seconds until all 100 pods are Running, and each
//!      pod's startup latency (first listed to first seen Running; p50 and p99) in that burst;
//!   3. one worker's instance terminated through the EC2 API: seconds until 100 pods are Running
//!      again, none on that worker;
//!   4. the Deployment deleted, and its pods awaited gone (not timed).
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

/// ClusterLoader2's rate for latency pods (its `Uniform5QPS` tuning set).
const PACED_PER_SECOND: u32 = 5;

fn paced_pod(i: usize) -> Value {
    json!({
        "apiVersion": "v1", "kind": "Pod",
        "metadata": { "name": format!("paced-{i}"), "namespace": "default", "labels": { "app": "paced" } },
        "spec": { "terminationGracePeriodSeconds": 1, "containers": [{
            "name": "sleep", "image": "clusterctl-busybox:latest", "imagePullPolicy": "Never",
            "command": ["sleep", "100000"],
            "resources": { "requests": { "cpu": "10m", "memory": "8Mi" } },
        }] },
    })
}

/// The latency quantile `q` of sorted `latencies`.
fn quantile(latencies: &[f64], q: f64) -> f64 {
    latencies[((latencies.len() as f64 * q).ceil() as usize).clamp(1, latencies.len()) - 1]
}

/// Phase 1: [`REPLICAS`] pods created at [`PACED_PER_SECOND`]; each one's create sent to first
/// seen Running (listed every 100 ms); the pods deleted and awaited gone.
async fn paced_startup(client: &ApiClient) -> anyhow::Result<Vec<f64>> {
    let list = || async { client.list_values("/api/v1/namespaces/default/pods?labelSelector=app%3Dpaced").await.unwrap_or_default() };
    let sent = std::sync::Arc::new(std::sync::Mutex::new(std::collections::HashMap::<String, Instant>::new()));
    let creator = {
        let (client, sent) = (client.clone(), sent.clone());
        tokio::spawn(async move {
            let start = tokio::time::Instant::now();
            for i in 0..REPLICAS {
                tokio::time::sleep_until(start + Duration::from_secs(1) * i as u32 / PACED_PER_SECOND).await;
                sent.lock().unwrap().insert(format!("paced-{i}"), Instant::now());
                client.create_value("/api/v1/namespaces/default/pods", &paced_pod(i)).await.with_context(|| format!("creating paced-{i}"))?;
            }
            anyhow::Ok(())
        })
    };
    let start = Instant::now();
    let mut running_at = std::collections::HashMap::<String, Instant>::new();
    while running_at.len() < REPLICAS {
        let now = Instant::now();
        for p in list().await {
            if p.pointer("/status/phase").and_then(Value::as_str) == Some("Running") {
                running_at.entry(p.pointer("/metadata/name").and_then(Value::as_str).unwrap_or_default().to_string()).or_insert(now);
            }
        }
        if creator.is_finished() && start.elapsed() > Duration::from_secs(300) {
            bail!("paced pods running: not within 300 s ({} running)", running_at.len());
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    creator.await??;
    let sent = sent.lock().unwrap().clone();
    let mut latencies: Vec<f64> = running_at.iter().filter_map(|(name, at)| Some(at.duration_since(*sent.get(name)?).as_secs_f64())).collect();
    latencies.sort_by(f64::total_cmp);
    for i in 0..REPLICAS {
        client.delete_value(&format!("/api/v1/namespaces/default/pods/paced-{i}")).await.with_context(|| format!("deleting paced-{i}"))?;
    }
    let gone = Instant::now();
    while !list().await.is_empty() {
        if gone.elapsed() > Duration::from_secs(300) {
            bail!("paced pods gone: not within 300 s");
        }
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
    Ok(latencies)
}

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

    let paced = paced_startup(&client).await?;
    println!(
        "pod startup latency over {} pods created at {PACED_PER_SECOND} a second (image present): p50 {:.2} s, p99 {:.2} s",
        paced.len(),
        quantile(&paced, 0.5),
        quantile(&paced, 0.99)
    );
    println!("RESULT pod-startup-paced-p50 {:.3}", quantile(&paced, 0.5));
    println!("RESULT pod-startup-paced-p99 {:.3}", quantile(&paced, 0.99));

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
    println!("pod startup latency over {} pods created at once (image present): p50 {:.2} s, p99 {:.2} s", latencies.len(), quantile(&latencies, 0.5), quantile(&latencies, 0.99));
    println!("RESULT pod-startup-p50 {:.3}", quantile(&latencies, 0.5));
    println!("RESULT pod-startup-p99 {:.3}", quantile(&latencies, 0.99));

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
