//! API server write throughput and watch delivery latency in process: the real server
//! ([`apiserver::serve`]) on each of its stores in turn, in the same run: the embedded SQLite store
//! (WAL, fsync before every commit returns) and etcd (Debian's etcd 3.4, one member started here on
//! loopback, TLS with certificates from the cluster CA, as the HA masters run it), both with their
//! data in a temporary folder on disk, over HTTPS with client certificates from the real cluster CA.
//! 100 watchers (each its own connection) watch ConfigMaps. First a burst: 8 writers (each its
//! own connection) create 2,000 ConfigMaps as fast as they are acknowledged (writes/s, and the
//! delivery latency of that saturated burst); then, once every watcher has caught up, 200 creates
//! paced 50 ms apart (delivery latency at a steady rate, without a backlog). Each ConfigMap
//! carries the moment its create was sent; every watcher measures when the event reached it.
//!
//!   cargo run --release --example apiserver_throughput [-- RUNS]
//!
//! Client and server share the machine's cores, as a master's controllers do. Prints one line
//! per run and store and, for `scripts/bench`, `RESULT <figure> <value>` lines (the etcd figures
//! named `apiserver-etcd-*`). The store's folder is
//! made under `$CLUSTERCTL_BENCH_DIR` (default: the system's temporary folder).

use std::sync::Arc;
use std::time::{Duration, Instant};

use clusterctl::api::resource::CONFIG_MAPS;
use clusterctl::apiserver::store::{EtcdOptions, EtcdStore, EtcdTls, SqliteStore, Store};
use clusterctl::apiserver::{ApiServerConfig, ServerTls, serve};
use clusterctl::client::{ApiClient, ClientAuth, ListOptions};
use clusterctl::pki::ClusterCa;
use futures::StreamExt;
use serde_json::{Value, json};

const WATCHERS: usize = 100;
const WRITERS: usize = 8;
const WRITES: usize = 2_000;
const PACED: usize = 200;
const PACE: Duration = Duration::from_millis(50);

fn percentile(sorted: &[f64], p: f64) -> f64 {
    sorted[((sorted.len() as f64 - 1.0) * p).round() as usize]
}

/// A one-member etcd on loopback, killed when dropped.
struct Etcd(std::process::Child);

impl Drop for Etcd {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

fn free_port() -> anyhow::Result<u16> {
    Ok(std::net::TcpListener::bind("127.0.0.1:0")?.local_addr()?.port())
}

/// Starts etcd with its data in `dir` and returns a store on it, once it answers.
async fn etcd_store(dir: &std::path::Path, ca: &ClusterCa) -> anyhow::Result<(Etcd, Arc<dyn Store>)> {
    let member = ca.issue_etcd_member("bench", &["localhost".to_string()], &["127.0.0.1".parse()?])?;
    let client = ca.issue_client("bench-apiserver", &[])?;
    let file = |name: &str, text: &str| -> anyhow::Result<String> {
        let path = dir.join(name);
        std::fs::write(&path, text)?;
        Ok(path.display().to_string())
    };
    let (ca_file, cert, key) = (file("ca.crt", ca.cert_pem())?, file("member.crt", &member.cert_pem)?, file("member.key", &member.key_pem)?);
    let (client_port, peer_port) = (free_port()?, free_port()?);
    let client_url = format!("https://127.0.0.1:{client_port}");
    let peer_url = format!("https://127.0.0.1:{peer_port}");
    let child = std::process::Command::new("etcd")
        .args(["--name", "bench", "--data-dir"])
        .arg(dir.join("etcd"))
        .args(["--listen-client-urls", &client_url, "--advertise-client-urls", &client_url])
        .args(["--listen-peer-urls", &peer_url, "--initial-advertise-peer-urls", &peer_url])
        .args(["--initial-cluster", &format!("bench={peer_url}"), "--logger", "zap", "--log-outputs", "stderr"])
        .args(["--client-cert-auth", "--trusted-ca-file", &ca_file, "--cert-file", &cert, "--key-file", &key])
        .args(["--peer-client-cert-auth", "--peer-trusted-ca-file", &ca_file, "--peer-cert-file", &cert, "--peer-key-file", &key])
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .spawn()
        .map_err(|e| anyhow::anyhow!("starting etcd (Debian's etcd-server, installed by scripts/lib/ensure-packages): {e}"))?;
    let etcd = Etcd(child);
    let options = EtcdOptions::new(vec![client_url]).with_tls(EtcdTls { ca_pem: ca.cert_pem().to_string(), cert_pem: client.cert_pem, key_pem: client.key_pem });
    let started = Instant::now();
    loop {
        if let Ok(store) = EtcdStore::connect(options.clone()).await
            && store.revision().await.is_ok()
        {
            return Ok((etcd, Arc::new(store)));
        }
        anyhow::ensure!(started.elapsed() < Duration::from_secs(30), "etcd did not answer within 30 s");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// The store a run measures.
#[derive(Debug, Clone, Copy, PartialEq)]
enum Backend {
    Sqlite,
    Etcd,
}

async fn run_once(run: usize, backend: Backend) -> anyhow::Result<(f64, f64, f64, f64)> {
    let dir = tempfile::tempdir_in(std::env::var_os("CLUSTERCTL_BENCH_DIR").map(std::path::PathBuf::from).unwrap_or_else(std::env::temp_dir))?;
    let ca = Arc::new(ClusterCa::generate("bench")?);
    let (_etcd, store): (Option<Etcd>, Arc<dyn Store>) = match backend {
        Backend::Sqlite => (None, Arc::new(SqliteStore::open(dir.path().join("store.db"))?)),
        Backend::Etcd => {
            let (etcd, store) = etcd_store(dir.path(), &ca).await?;
            (Some(etcd), store)
        }
    };
    let serving = ca.issue_server(&["localhost".to_string()], &["127.0.0.1".parse()?])?;
    let config = ApiServerConfig {
        tls: ServerTls::from_pem(&serving.cert_pem, &serving.key_pem, ca.cert_pem()).map_err(anyhow::Error::msg)?,
        csr_signer: ca.clone(),
        join_verifier: None,
        cluster_info_ca_pem: ca.cert_pem().to_string(),
        node_binary: None,
        kubelet_client: None,
        service_cidr: Some("10.96.0.0/16".parse()?),
        limits: clusterctl::apiserver::limits::LimitSettings::default(),
        audit: None,
        default_toleration_seconds: Some(300),
    };
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
    let url = format!("https://127.0.0.1:{}", listener.local_addr()?.port());
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    let server = tokio::spawn(serve(config, store, listener, async move {
        let _ = stopped.await;
    }));
    let admin = ca.issue_client("bench", &["system:masters"])?;
    let client = || ApiClient::new(&url, ClientAuth::Certificate { ca_pem: ca.cert_pem().to_string(), cert_pem: admin.cert_pem.clone(), key_pem: admin.key_pem.clone() });
    let epoch = Instant::now();

    // Watchers: each counts the events of the measured writes and records their delivery time.
    let mut streams = Vec::new();
    for _ in 0..WATCHERS {
        streams.push(client()?.watch::<Value>(&CONFIG_MAPS, Some("default"), None, &ListOptions::default()).await?);
    }
    let (warm_tx, mut warm_rx) = tokio::sync::mpsc::channel::<()>(WATCHERS);
    let mut watchers = Vec::new();
    for mut stream in streams {
        let warm_tx = warm_tx.clone();
        watchers.push(tokio::spawn(async move {
            let (mut burst, mut paced) = (Vec::with_capacity(WRITES), Vec::with_capacity(PACED));
            while let Some(event) = stream.next().await {
                let now = epoch.elapsed().as_secs_f64();
                let object = event?.object;
                let sent = object.pointer("/data/sent").and_then(Value::as_str).and_then(|s| s.parse::<f64>().ok());
                match (sent, object.pointer("/data/phase").and_then(Value::as_str)) {
                    (Some(sent), Some("burst")) => {
                        burst.push(now - sent);
                        if burst.len() == WRITES {
                            let _ = warm_tx.send(()).await;
                        }
                    }
                    (Some(sent), _) => paced.push(now - sent),
                    (None, _) => {
                        let _ = warm_tx.send(()).await;
                    }
                }
                if paced.len() == PACED {
                    break;
                }
            }
            anyhow::Ok((burst, paced))
        }));
    }
    // Every watch is live once a first object reached all of them.
    client()?.create_value("/api/v1/namespaces/default/configmaps", &json!({"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": "warm-up"}})).await?;
    for _ in 0..WATCHERS {
        tokio::time::timeout(Duration::from_secs(30), warm_rx.recv()).await?.ok_or_else(|| anyhow::anyhow!("a watcher ended before the warm-up event"))?;
    }

    let start = Instant::now();
    let mut writers = Vec::new();
    for w in 0..WRITERS {
        let c = client()?;
        writers.push(tokio::spawn(async move {
            for i in (w..WRITES).step_by(WRITERS) {
                let sent = format!("{:.6}", epoch.elapsed().as_secs_f64());
                let cm = json!({"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": format!("cm-{i}")}, "data": {"sent": sent, "phase": "burst"}});
                c.create_value("/api/v1/namespaces/default/configmaps", &cm).await?;
            }
            anyhow::Ok(())
        }));
    }
    for w in writers {
        w.await??;
    }
    let write_secs = start.elapsed().as_secs_f64();
    // Every watcher has the whole burst before the paced writes start.
    for _ in 0..WATCHERS {
        tokio::time::timeout(Duration::from_secs(300), warm_rx.recv()).await?.ok_or_else(|| anyhow::anyhow!("a watcher ended during the burst"))?;
    }
    let c = client()?;
    let mut ticker = tokio::time::interval(PACE);
    for i in 0..PACED {
        ticker.tick().await;
        let sent = format!("{:.6}", epoch.elapsed().as_secs_f64());
        let cm = json!({"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": format!("paced-{i}")}, "data": {"sent": sent, "phase": "paced"}});
        c.create_value("/api/v1/namespaces/default/configmaps", &cm).await?;
    }
    let (mut burst, mut paced) = (Vec::with_capacity(WATCHERS * WRITES), Vec::with_capacity(WATCHERS * PACED));
    for w in watchers {
        let (b, p) = tokio::time::timeout(Duration::from_secs(120), w).await???;
        burst.extend(b);
        paced.extend(p);
    }
    anyhow::ensure!(burst.len() == WATCHERS * WRITES && paced.len() == WATCHERS * PACED, "not every event was delivered");
    burst.sort_by(f64::total_cmp);
    paced.sort_by(f64::total_cmp);
    let ms = |v: &[f64], p: f64| percentile(v, p) * 1000.0;
    let rate = WRITES as f64 / write_secs;
    let prefix = if backend == Backend::Etcd { "apiserver-etcd" } else { "apiserver" };
    println!(
        "run {run} ({backend:?}): {WRITES} creates by {WRITERS} writers in {write_secs:.2} s = {rate:.0} writes/s, delivered to {WATCHERS} watchers with p50 {:.1} ms, p99 {:.1} ms; \
         then {PACED} creates {PACE:?} apart: p50 {:.1} ms, p99 {:.1} ms, max {:.1} ms",
        ms(&burst, 0.5),
        ms(&burst, 0.99),
        ms(&paced, 0.5),
        ms(&paced, 0.99),
        ms(&paced, 1.0)
    );
    println!("RESULT {prefix}-writes-per-s {rate:.0}");
    println!("RESULT {prefix}-burst-watch-p99-ms {:.1}", ms(&burst, 0.99));
    println!("RESULT {prefix}-watch-p50-ms {:.1}", ms(&paced, 0.5));
    println!("RESULT {prefix}-watch-p99-ms {:.1}", ms(&paced, 0.99));
    let _ = stop.send(());
    let _ = server.await;
    Ok((rate, ms(&burst, 0.99), ms(&paced, 0.5), ms(&paced, 0.99)))
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let runs: usize = std::env::args().nth(1).and_then(|a| a.parse().ok()).unwrap_or(3);
    // The two stores alternate within each run, so that they share the machine's noise.
    let (mut sqlite, mut etcd) = (Vec::new(), Vec::new());
    for run in 1..=runs {
        sqlite.push(run_once(run, Backend::Sqlite).await?);
        etcd.push(run_once(run, Backend::Etcd).await?);
    }
    let median = |mut v: Vec<f64>| {
        v.sort_by(f64::total_cmp);
        (v[v.len() / 2], v[0], v[v.len() - 1])
    };
    for (name, results) in [("embedded store", &sqlite), ("etcd", &etcd)] {
        let (r, rmin, rmax) = median(results.iter().map(|r| r.0).collect());
        let (b, bmin, bmax) = median(results.iter().map(|r| r.1).collect());
        let (p, pmin, pmax) = median(results.iter().map(|r| r.3).collect());
        println!(
            "api server on the {name}, {WATCHERS} watchers, {runs} runs (median, min-max): {r:.0} writes/s ({rmin:.0}-{rmax:.0}); watch delivery p99 during the burst {b:.1} ms ({bmin:.1}-{bmax:.1}), at a steady 20 writes/s {p:.1} ms ({pmin:.1}-{pmax:.1})"
        );
    }
    let ratios: Vec<f64> = etcd.iter().zip(&sqlite).map(|(e, s)| e.0 / s.0).collect();
    let (q, qmin, qmax) = median(ratios);
    println!("writes/s on etcd / on the embedded store, per run: median {q:.2} ({qmin:.2}-{qmax:.2})");
    println!("RESULT apiserver-etcd-vs-embedded-writes-ratio {q:.2}");
    Ok(())
}
