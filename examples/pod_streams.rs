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
//!   3. port-forward throughput: a pod serves a 64 MiB file over HTTP; curl fetches it straight
//!      from the pod's address (`status.podIP`, from inside its node, which routes it)
//!      and through `kubectl port-forward` (the newest kubectl on PATH:
//!      SPDY tunnelled through a WebSocket to the API server, then on to the node's agent), three
//!      times each; the figure is the ratio of the medians, measured in one run.
//!
//!   cargo run --release --example pod_streams -- CLUSTER-NAME
//!
//! Reads `$CLUSTERCTL_HOME/<cluster>/kubeconfig`. Prints `RESULT <figure> <seconds>` lines for
//! `scripts/bench`. The pod is deleted at the end.

use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use anyhow::{Context, bail};
use clusterctl::api::MicroTime;
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
        "spec": { "terminationGracePeriodSeconds": 0, "containers": [{
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
            let written = MicroTime::parse(stamp).map_err(|e| anyhow::anyhow!("{stamp:?}: {e}"))?.to_system_time().duration_since(UNIX_EPOCH)?;
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

    // 3. port-forward throughput against a direct copy.
    let blob = json!({
        "apiVersion": "v1", "kind": "Pod", "metadata": { "name": BLOB_POD, "namespace": "default" },
        "spec": { "terminationGracePeriodSeconds": 0, "containers": [{
            "name": "blob", "image": "clusterctl-busybox:latest", "imagePullPolicy": "Never",
            "command": ["sh", "-c", format!("mkdir -p /www && head -c {BLOB_BYTES} /dev/urandom > /www/blob && exec httpd -f -p 80 -h /www")],
            "ports": [{ "containerPort": 80 }],
            "readinessProbe": { "httpGet": { "path": "/blob", "port": 80 }, "periodSeconds": 1 },
            "resources": { "requests": { "cpu": "10m", "memory": "8Mi" } },
        }] },
    });
    client.create_value("/api/v1/namespaces/default/pods", &blob).await.context("creating the blob pod")?;
    let result = forward_throughput(&client, &home.join(&cluster).join("kubeconfig")).await;
    client.delete_value(&format!("/api/v1/namespaces/default/pods/{BLOB_POD}")).await?;
    let (direct, forwarded) = result?;
    println!("port-forward: {:.0} MB/s through kubectl port-forward, {:.0} MB/s straight to the pod, ratio {:.2}", forwarded / 1e6, direct / 1e6, forwarded / direct);
    println!("RESULT portforward-MBps {:.1}", forwarded / 1e6);
    println!("RESULT direct-to-pod-MBps {:.1}", direct / 1e6);
    println!("RESULT portforward-vs-direct-ratio {:.3}", forwarded / direct);
    Ok(())
}

const BLOB_POD: &str = "bench-blob";
const BLOB_BYTES: u64 = 64 << 20;

/// Median bytes per second of three fetches of the blob with curl from `url`, run here or inside
/// the node container `via`.
fn fetch_rate(url: &str, via: Option<&str>) -> anyhow::Result<f64> {
    let mut rates = Vec::new();
    for _ in 0..3 {
        let curl = ["curl", "-sS", "--fail", "--max-time", "60", "-o", "/dev/null", "-w", "%{size_download} %{speed_download}", url];
        let out = match via {
            Some(instance) => std::process::Command::new("docker").args(["exec", instance]).args(curl).output()?,
            None => std::process::Command::new(curl[0]).args(&curl[1..]).output()?,
        };
        let text = String::from_utf8_lossy(&out.stdout).to_string();
        let (size, speed) = text.split_once(' ').with_context(|| format!("curl {url}: {text} {}", String::from_utf8_lossy(&out.stderr)))?;
        if !out.status.success() || size.parse::<u64>()? != BLOB_BYTES {
            bail!("curl {url} fetched {size} bytes: {}", String::from_utf8_lossy(&out.stderr));
        }
        rates.push(speed.parse::<f64>()?);
    }
    rates.sort_by(f64::total_cmp);
    Ok(rates[1])
}

/// (direct, through port-forward) bytes per second.
async fn forward_throughput(client: &ApiClient, kubeconfig: &std::path::Path) -> anyhow::Result<(f64, f64)> {
    use std::io::BufRead;
    let deadline = Instant::now() + Duration::from_secs(120);
    let (ip, instance) = loop {
        let p = client.get_value(&format!("/api/v1/namespaces/default/pods/{BLOB_POD}")).await?;
        let ready = p.pointer("/status/conditions").and_then(Value::as_array).is_some_and(|cs| cs.iter().any(|c| c["type"] == "Ready" && c["status"] == "True"));
        // The pod's own address, routed inside the VPC: fetched from its node.
        if let (true, Some(ip), Some(node)) = (ready, p.pointer("/status/podIP").and_then(Value::as_str), p.pointer("/spec/nodeName").and_then(Value::as_str)) {
            let n = client.get_value(&format!("/api/v1/nodes/{node}")).await?;
            let instance = n.pointer("/spec/providerID").and_then(Value::as_str).and_then(|p| p.rsplit('/').next()).context("the node's providerID")?.to_string();
            break (format!("{ip}:80"), instance);
        }
        if Instant::now() > deadline {
            bail!("the blob pod is not Ready after 120 s");
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    };
    let direct = fetch_rate(&format!("http://{ip}/blob"), Some(&instance))?;
    let mut forward = std::process::Command::new("kubectl")
        .args(["port-forward", &format!("pod/{BLOB_POD}"), ":80"])
        .env("KUBECONFIG", kubeconfig)
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::null())
        .spawn()
        .context("running kubectl port-forward")?;
    // Read kubectl's output to its end: a Go program writing to a closed pipe dies of SIGPIPE.
    let stdout = forward.stdout.take().context("kubectl's stdout")?;
    let (first_tx, first_rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        let mut lines = std::io::BufReader::new(stdout).lines().map_while(Result::ok);
        let _ = first_tx.send(lines.next());
        lines.for_each(drop);
    });
    let line = first_rx.recv_timeout(Duration::from_secs(20)).ok().flatten();
    let port = line.as_deref().and_then(|l| l.strip_prefix("Forwarding from 127.0.0.1:")).and_then(|l| l.split(' ').next()).map(str::to_string);
    let forwarded = match port {
        Some(port) => fetch_rate(&format!("http://127.0.0.1:{port}/blob"), None),
        None => Err(anyhow::anyhow!("kubectl port-forward printed {line:?}")),
    };
    let _ = forward.kill();
    let _ = forward.wait();
    Ok((direct, forwarded?))
}
