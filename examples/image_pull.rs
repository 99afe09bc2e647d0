//! An image pulled from a registry onto three nodes (issue 21's pull figure), against a running
//! cluster made by `scripts/bench` on the realizer harness that trusts the harness registry:
//! the 10 MiB image `bench/pull:10mb` (`localstack/registry/up` pushes it: the workload image and a
//! layer of 10 MiB of random bytes, so that it does not compress) is removed from every worker,
//! then a 3-replica Deployment of it (one replica per node by required anti-affinity, pulled with
//! its pull secret) is applied: seconds until the 3 pods are Running.
//!
//!   cargo run --release --example image_pull -- CLUSTER-NAME REGISTRY-HOST:PORT
//!
//! Reads `$CLUSTERCTL_HOME/<cluster>/kubeconfig` and the registry's password from the harness's
//! state folder (`localstack/.state/registry/password`, or under `CLUSTERCTL_LOCALSTACK_STATE_DIR`).
//! Prints `RESULT image-pull-10MiB-3-nodes <seconds>` for `scripts/bench`.

use std::time::{Duration, Instant};

use anyhow::{Context, bail};
use base64::Engine;
use clusterctl::client::kubeconfig::Kubeconfig;
use clusterctl::client::{ApiClient, ClientAuth};
use serde_json::{Value, json};

const REPLICAS: usize = 3;
const IMAGE: &str = "bench/pull:10mb";

async fn pull_pods(client: &ApiClient) -> Vec<Value> {
    client.list_values("/api/v1/namespaces/default/pods?labelSelector=app%3Dpull").await.unwrap_or_default()
}

fn running(pods: &[Value]) -> usize {
    pods.iter().filter(|p| p.pointer("/status/phase").and_then(Value::as_str) == Some("Running")).count()
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let mut args = std::env::args().skip(1);
    let (cluster, registry) = (args.next().context("usage: image_pull CLUSTER-NAME REGISTRY")?, args.next().context("usage: image_pull CLUSTER-NAME REGISTRY")?);
    let home = std::env::var_os("CLUSTERCTL_HOME").map(std::path::PathBuf::from).context("CLUSTERCTL_HOME is not set")?;
    let kc = Kubeconfig::load(&home.join(&cluster).join("kubeconfig"))?;
    let client = ApiClient::new(&kc.server, ClientAuth::Certificate { ca_pem: kc.ca_pem, cert_pem: kc.client_cert_pem, key_pem: kc.client_key_pem })?;
    let root = std::path::Path::new(env!("CARGO_MANIFEST_DIR"));
    let state = std::env::var_os("CLUSTERCTL_LOCALSTACK_STATE_DIR").map(std::path::PathBuf::from).unwrap_or_else(|| root.join("localstack/.state"));
    let password = std::fs::read_to_string(state.join("registry/password")).context("the harness registry's password")?.trim().to_string();
    let image = format!("{registry}/{IMAGE}");

    // No worker has it: each pull is a whole one.
    let nodes = client.list_values("/api/v1/nodes").await?;
    for node in nodes.iter().filter(|n| n.pointer("/metadata/labels/node-role.kubernetes.io~1control-plane").is_none()) {
        let Some(instance) = node.pointer("/spec/providerID").and_then(Value::as_str).and_then(|p| p.rsplit('/').next()) else { continue };
        let _ = std::process::Command::new("docker").args(["exec", instance, "docker", "rmi", "-f", &image]).output();
    }

    let auth = base64::engine::general_purpose::STANDARD.encode(format!("clusterctl:{password}"));
    let config = json!({"auths": {registry.clone(): {"username": "clusterctl", "password": password, "auth": auth}}}).to_string();
    let secret = json!({"apiVersion": "v1", "kind": "Secret", "metadata": {"name": "pullcred"}, "type": "kubernetes.io/dockerconfigjson", "stringData": {".dockerconfigjson": config}});
    let _ = client.delete_value("/api/v1/namespaces/default/secrets/pullcred").await;
    client.create_value("/api/v1/namespaces/default/secrets", &secret).await.context("creating the pull secret")?;
    let deployment = json!({
        "apiVersion": "apps/v1", "kind": "Deployment",
        "metadata": {"name": "pull", "namespace": "default"},
        "spec": {"replicas": REPLICAS, "selector": {"matchLabels": {"app": "pull"}}, "template": {
            "metadata": {"labels": {"app": "pull"}},
            "spec": {
                "terminationGracePeriodSeconds": 1,
                "imagePullSecrets": [{"name": "pullcred"}],
                "affinity": {"podAntiAffinity": {"requiredDuringSchedulingIgnoredDuringExecution": [
                    {"labelSelector": {"matchLabels": {"app": "pull"}}, "topologyKey": "kubernetes.io/hostname"}]}},
                "containers": [{"name": "app", "image": image, "imagePullPolicy": "Always", "command": ["sleep", "100000"]}],
            },
        }},
    });
    let start = Instant::now();
    client.create_value("/apis/apps/v1/namespaces/default/deployments", &deployment).await.context("creating the pull Deployment")?;
    loop {
        let pods = pull_pods(&client).await;
        if running(&pods) == REPLICAS {
            break;
        }
        if start.elapsed() > Duration::from_secs(180) {
            bail!("3 pods of the pulled image running: not within 180 s: {}", serde_json::to_string(&pods.iter().map(|p| &p["status"]).collect::<Vec<_>>())?);
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let took = start.elapsed().as_secs_f64();
    println!("a 10 MiB image pulled from the registry onto {REPLICAS} nodes: all Running {took:.2} s after the create");
    println!("RESULT image-pull-10MiB-3-nodes {took:.3}");

    client.delete_value("/apis/apps/v1/namespaces/default/deployments/pull").await.context("deleting the pull Deployment")?;
    let gone = Instant::now();
    while !pull_pods(&client).await.is_empty() && gone.elapsed() < Duration::from_secs(120) {
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
    let _ = client.delete_value("/api/v1/namespaces/default/secrets/pullcred").await;
    Ok(())
}
