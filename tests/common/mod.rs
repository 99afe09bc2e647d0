//! Shared helpers of the integration tests: the LocalStack harness, unique specs, the binary.

#![allow(dead_code)]

use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use std::sync::OnceLock;
use std::time::Duration;

/// The repository root.
pub fn root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

/// Starts the LocalStack harness once per test process (idempotent) and points AWS config at it.
pub fn harness() -> &'static str {
    static ENDPOINT: OnceLock<String> = OnceLock::new();
    ENDPOINT.get_or_init(|| {
        let out = Command::new(root().join("localstack/up")).output().expect("running localstack/up");
        assert!(out.status.success(), "localstack/up failed:\n{}\n{}", String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr));
        let stdout = String::from_utf8_lossy(&out.stdout);
        let endpoint = stdout
            .lines()
            .rev()
            .find_map(|l| l.trim().strip_prefix("AWS_ENDPOINT_URL=").map(|v| v.trim_matches('"').to_string()))
            .expect("localstack/up prints AWS_ENDPOINT_URL=... last");
        // SAFETY: set once, before any test thread reads the environment through the SDK.
        unsafe {
            std::env::set_var("AWS_ENDPOINT_URL", &endpoint);
            std::env::set_var("AWS_ACCESS_KEY_ID", "test");
            std::env::set_var("AWS_SECRET_ACCESS_KEY", "test");
            std::env::set_var("AWS_REGION", "us-east-1");
            std::env::remove_var("AWS_PROFILE");
        }
        endpoint
    })
}

/// A fresh CLUSTERCTL_HOME for one test.
pub fn temp_home() -> tempfile::TempDir {
    tempfile::tempdir().expect("temporary folder")
}

/// Writes a copy of `clusters/localstack.toml` with a unique name, VPC CIDR and worker count.
pub fn unique_spec(dir: &Path, name: &str, second_octet: u8, workers: u32) -> PathBuf {
    unique_spec_from("clusters/localstack.toml", dir, name, second_octet, workers)
}

/// The same from another example spec of the repository.
pub fn unique_spec_from(example: &str, dir: &Path, name: &str, second_octet: u8, workers: u32) -> PathBuf {
    let text = std::fs::read_to_string(root().join(example)).expect("example spec");
    let mut doc: toml::Table = text.parse().expect("example spec is TOML");
    doc["cluster"].as_table_mut().unwrap().insert("name".into(), name.into());
    let network = doc["network"].as_table_mut().unwrap();
    network.insert("vpc_cidr".into(), format!("10.{second_octet}.0.0/16").into());
    network.insert("admin_cidrs".into(), toml::Value::Array(vec![format!("10.{second_octet}.0.1/32").into()]));
    network.remove("subnets");
    let pools = doc["workers"].as_array_mut().unwrap();
    pools.truncate(1);
    pools[0].as_table_mut().unwrap().insert("count".into(), i64::from(workers).into());
    let path = dir.join(format!("{name}.toml"));
    std::fs::write(&path, toml::to_string(&doc).unwrap()).unwrap();
    path
}

/// Sets fields of the spec's `[health]` table (the tests' clusters shorten Kubernetes' timings).
pub fn set_health(spec: &Path, fields: &[(&str, i64)]) {
    let mut doc: toml::Table = std::fs::read_to_string(spec).unwrap().parse().unwrap();
    let health = doc.entry("health").or_insert_with(|| toml::Value::Table(toml::Table::new())).as_table_mut().unwrap();
    for (k, v) in fields {
        health.insert((*k).into(), (*v).into());
    }
    std::fs::write(spec, toml::to_string(&doc).unwrap()).unwrap();
}

/// Cuts the node machine `instance` off from the API server (`cut`), or heals it: every packet to
/// or from the API port is dropped in the machine's raw table, which the node's proxy never
/// touches. Its processes keep running: a partition, not a stop.
pub fn cut_off_from_the_api(instance: &str, api_port: u16, cut: bool) {
    let op = if cut { "-I" } else { "-D" };
    for rule in [format!("OUTPUT -p tcp --dport {api_port}"), format!("PREROUTING -p tcp --sport {api_port}")] {
        let command = format!("iptables -w 5 -t raw {op} {rule} -j DROP");
        let out = Command::new("docker").args(["exec", instance, "sh", "-c", &command]).output().unwrap();
        assert!(out.status.success(), "{command} on {instance}: {}", String::from_utf8_lossy(&out.stderr));
    }
}

/// The kubeconfig `create` merges into and `destroy` edits in the tests: a file in the test's home
/// folder, never the real `~/.kube/config`.
pub fn kubectl_config(home: &Path) -> PathBuf {
    home.join("kube").join("config")
}

/// The clusterctl binary with a CLUSTERCTL_HOME and a KUBECONFIG of the test's own.
pub fn clusterctl_command(home: &Path) -> Command {
    let mut command = Command::new(env!("CARGO_BIN_EXE_clusterctl"));
    command.env("CLUSTERCTL_HOME", home).env("KUBECONFIG", kubectl_config(home));
    command
}

/// Runs the clusterctl binary with a CLUSTERCTL_HOME and a KUBECONFIG of the test's own.
pub fn clusterctl(home: &Path, args: &[&str]) -> Output {
    clusterctl_command(home).args(args).output().expect("running clusterctl")
}

/// Panics with the command's output unless it succeeded.
pub fn assert_ok(out: &Output, what: &str) -> String {
    let stdout = String::from_utf8_lossy(&out.stdout).to_string();
    assert!(out.status.success(), "{what} failed ({:?}):\nstdout:\n{stdout}\nstderr:\n{}", out.status, String::from_utf8_lossy(&out.stderr));
    stdout
}

/// Destroys a cluster when dropped, so that a failing test leaves nothing behind.
pub struct DestroyGuard {
    pub home: PathBuf,
    pub spec: PathBuf,
}

impl Drop for DestroyGuard {
    fn drop(&mut self) {
        let out = clusterctl(&self.home, &["destroy", "-f", self.spec.to_str().unwrap(), "--yes", "-q"]);
        if !out.status.success() {
            eprintln!("destroy guard for {} failed: {}", self.spec.display(), String::from_utf8_lossy(&out.stderr));
        }
    }
}

/// GETs `http://ip:port/` with a plain TCP client (an address of a container the harness made);
/// the body of a 200 answer, or None.
pub async fn http_get(ip: &str, port: u16) -> Option<String> {
    http_get_path(ip, port, "/").await
}

/// The same for another path.
pub async fn http_get_path(ip: &str, port: u16, path: &str) -> Option<String> {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let mut s = tokio::time::timeout(Duration::from_secs(3), tokio::net::TcpStream::connect((ip, port))).await.ok()?.ok()?;
    s.write_all(format!("GET {path} HTTP/1.0\r\nHost: {ip}\r\n\r\n").as_bytes()).await.ok()?;
    let mut buf = Vec::new();
    tokio::time::timeout(Duration::from_secs(8), s.read_to_end(&mut buf)).await.ok()?.ok()?;
    let text = String::from_utf8_lossy(&buf).to_string();
    // a CGI program's own headers may end in a bare "\n\n"
    let body = text.split_once("\r\n\r\n").or_else(|| text.split_once("\n\n")).map_or("", |(_, body)| body);
    text.lines().next().is_some_and(|l| l.starts_with("HTTP/1.") && l.contains(" 200")).then(|| body.trim().to_string())
}

/// Polls `probe` every half second until it gives a value (printing how long that took); panics
/// after `within` with the last thing it saw.
pub async fn eventually<T, F, Fut>(what: &str, within: Duration, mut probe: F) -> (T, Duration)
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = Result<T, String>>,
{
    let start = std::time::Instant::now();
    loop {
        match probe().await {
            Ok(v) => {
                eprintln!("{what}: {:.1}s", start.elapsed().as_secs_f64());
                return (v, start.elapsed());
            }
            Err(last) => assert!(start.elapsed() < within, "{what}: not within {within:?}; last seen: {last}"),
        }
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
}

/// Polls the API's `/readyz` every `every` with a client that `client()` makes afresh each time
/// (a kubeconfig may change meanwhile) until [`UnansweredGauge::stop`], which gives the longest
/// time without an answer.
pub struct UnansweredGauge {
    polling: std::sync::Arc<std::sync::atomic::AtomicBool>,
    task: tokio::task::JoinHandle<Duration>,
}

impl UnansweredGauge {
    pub fn start(every: Duration, client: impl Fn() -> clusterctl::client::ApiClient + Send + 'static) -> Self {
        use std::sync::atomic::Ordering;
        let polling = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(true));
        let still = polling.clone();
        let task = tokio::spawn(async move {
            let (mut last_answer, mut longest) = (std::time::Instant::now(), Duration::ZERO);
            while still.load(Ordering::SeqCst) {
                if client().request_text("GET", "/readyz").await.is_ok() {
                    longest = longest.max(last_answer.elapsed());
                    last_answer = std::time::Instant::now();
                }
                tokio::time::sleep(every).await;
            }
            longest.max(last_answer.elapsed())
        });
        UnansweredGauge { polling, task }
    }

    pub async fn stop(self) -> Duration {
        self.polling.store(false, std::sync::atomic::Ordering::SeqCst);
        self.task.await.expect("the API poller")
    }
}
