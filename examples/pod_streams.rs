//! A pod's streams through the API against a running cluster (made by `scripts/bench` on the
//! realizer harness):
//!   1. `logs -f` latency: a pod writes a line every 100 ms; the follow stream is read with
//!      `timestamps=true`, whose prefix is the time Docker took the line from the container, and
//!      each line's latency is the client's clock at arrival minus that time (every node is a
//!      container on this one machine: one clock). p50 and p99 of 100 lines.
//!   2. exec round trip: `true` run over the WebSocket exec (`v5.channel.k8s.io`) through the API
//!      server and the node's agent, from the handshake until the final `Status`; median and p99
//!      of 30.
//!
//!   cargo run --release --example pod_streams -- CLUSTER-NAME
//!
//! Reads `$CLUSTERCTL_HOME/<cluster>/kubeconfig`. Prints `RESULT <figure> <seconds>` lines for
//! `scripts/bench`. The pod is deleted at the end.

use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use anyhow::{Context, bail};
use clusterctl::api::Time;
use clusterctl::client::kubeconfig::Kubeconfig;
use clusterctl::client::{ApiClient, ClientAuth};
use futures::StreamExt;
use rustls_pki_types::pem::PemObject;
use rustls_pki_types::{CertificateDer, PrivateKeyDer, ServerName};
use serde_json::{Value, json};
use tokio_tungstenite::tungstenite::{Message, client::IntoClientRequest};

const POD: &str = "bench-streams";
const LINES: usize = 100;
const EXECS: usize = 30;

fn percentile(sorted: &[f64], p: f64) -> f64 {
    let i = ((sorted.len() as f64 - 1.0) * p).round() as usize;
    sorted[i.min(sorted.len() - 1)]
}

/// One exec of `true` over the WebSocket, timed from connecting to the final status.
async fn exec_once(kc: &Kubeconfig, config: Arc<rustls::ClientConfig>) -> anyhow::Result<f64> {
    let url = format!("{}/api/v1/namespaces/default/pods/{POD}/exec?command=true&stdout=true&stderr=true", kc.server.replacen("https://", "wss://", 1));
    let host_port = kc.server.trim_start_matches("https://").to_string();
    let host = host_port.rsplit_once(':').map_or(host_port.as_str(), |(h, _)| h).to_string();
    let start = Instant::now();
    let tcp = tokio::net::TcpStream::connect(&host_port).await?;
    tcp.set_nodelay(true)?;
    let tls = tokio_rustls::TlsConnector::from(config).connect(ServerName::try_from(host)?, tcp).await?;
    let mut request = url.as_str().into_client_request()?;
    request.headers_mut().insert("Sec-WebSocket-Protocol", "v5.channel.k8s.io".parse()?);
    let (mut ws, _) = tokio_tungstenite::client_async(request, tls).await?;
    let mut status = None;
    while let Some(message) = ws.next().await {
        if let Message::Binary(data) = message?
            && data.first() == Some(&3)
        {
            status = Some(serde_json::from_slice::<Value>(&data[1..])?);
        }
    }
    let took = start.elapsed().as_secs_f64();
    let _ = ws.close(None).await;
    match status {
        Some(s) if s["status"] == "Success" => Ok(took),
        other => bail!("exec ended with {other:?}"),
    }
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let _ = rustls::crypto::ring::default_provider().install_default();
    let cluster = std::env::args().nth(1).context("usage: pod_streams CLUSTER-NAME")?;
    let home = std::env::var_os("CLUSTERCTL_HOME").map(std::path::PathBuf::from).context("CLUSTERCTL_HOME is not set")?;
    let kc = Kubeconfig::load(&home.join(&cluster).join("kubeconfig"))?;
    let client = ApiClient::new(&kc.server, ClientAuth::Certificate { ca_pem: kc.ca_pem.clone(), cert_pem: kc.client_cert_pem.clone(), key_pem: kc.client_key_pem.clone() })?;

    let pod = json!({
        "apiVersion": "v1", "kind": "Pod", "metadata": { "name": POD, "namespace": "default" },
        "spec": { "containers": [{
            "name": "ticker", "image": "clusterctl-busybox:latest", "imagePullPolicy": "Never",
            "command": ["sh", "-c", "while true; do echo tick; usleep 100000; done"],
            "resources": { "requests": { "cpu": "10m", "memory": "8Mi" } },
        }] },
    });
    client.create_value("/api/v1/namespaces/default/pods", &pod).await.context("creating the bench pod")?;
    let deadline = Instant::now() + Duration::from_secs(120);
    loop {
        let p = client.get_value(&format!("/api/v1/namespaces/default/pods/{POD}")).await?;
        if p.pointer("/status/phase").and_then(Value::as_str) == Some("Running") {
            break;
        }
        if Instant::now() > deadline {
            bail!("the bench pod is not Running after 120 s");
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }

    // 1. logs -f latency.
    let mut stream = client.get_stream(&format!("/api/v1/namespaces/default/pods/{POD}/log?follow=true&timestamps=true&tailLines=0")).await?;
    let mut latencies = Vec::new();
    let mut pending = String::new();
    while latencies.len() < LINES {
        let chunk = tokio::time::timeout(Duration::from_secs(10), stream.next()).await.context("no log line in 10 s")?.context("the log stream ended")??;
        let now = SystemTime::now().duration_since(UNIX_EPOCH)?.as_secs_f64();
        pending.push_str(&String::from_utf8_lossy(&chunk));
        while let Some(end) = pending.find('\n') {
            let line: String = pending.drain(..=end).collect();
            let Some((stamp, _)) = line.split_once(' ') else { continue };
            let written = Time::parse(stamp).map_err(|e| anyhow::anyhow!("{stamp:?}: {e}"))?.to_system_time().duration_since(UNIX_EPOCH)?;
            latencies.push(now - written.as_secs_f64());
        }
    }
    drop(stream);
    latencies.sort_by(f64::total_cmp);
    let (p50, p99) = (percentile(&latencies, 0.5), percentile(&latencies, 0.99));
    println!("logs -f: {LINES} lines, latency p50 {:.1} ms, p99 {:.1} ms", p50 * 1e3, p99 * 1e3);
    println!("RESULT logs-follow-latency-p50 {p50:.4}");
    println!("RESULT logs-follow-latency-p99 {p99:.4}");

    // 2. exec round trip.
    let mut roots = rustls::RootCertStore::empty();
    for ca in CertificateDer::pem_slice_iter(kc.ca_pem.as_bytes()) {
        roots.add(ca?)?;
    }
    let chain = CertificateDer::pem_slice_iter(kc.client_cert_pem.as_bytes()).collect::<Result<Vec<_>, _>>()?;
    let key = PrivateKeyDer::from_pem_slice(kc.client_key_pem.as_bytes())?;
    let config = Arc::new(rustls::ClientConfig::builder().with_root_certificates(roots).with_client_auth_cert(chain, key)?);
    let mut trips = Vec::new();
    for _ in 0..EXECS {
        trips.push(exec_once(&kc, config.clone()).await?);
    }
    trips.sort_by(f64::total_cmp);
    let (median, p99) = (percentile(&trips, 0.5), percentile(&trips, 0.99));
    println!("exec true: {EXECS} round trips, median {:.1} ms, p99 {:.1} ms", median * 1e3, p99 * 1e3);
    println!("RESULT exec-round-trip-median {median:.4}");
    println!("RESULT exec-round-trip-p99 {p99:.4}");

    client.delete_value(&format!("/api/v1/namespaces/default/pods/{POD}")).await?;
    Ok(())
}
