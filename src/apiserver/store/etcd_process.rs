//! Real etcd processes for tests: members on free loopback ports with data in a temporary directory
//! (on tmpfs when there is one, so that etcd's fsyncs cost nothing), killed when dropped.
//!
//! `/usr/bin/etcd` (Debian's `etcd-server`) must be installed; `scripts/lib/ensure-packages` installs
//! it. A test that needs it fails when it is missing rather than skipping.

use std::fs;
use std::net::{IpAddr, Ipv4Addr, TcpListener};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use tempfile::TempDir;

use super::etcd::{EtcdCluster, EtcdOptions, EtcdTls};
use crate::pki::ClusterCa;

/// Where Debian installs etcd.
pub(crate) const ETCD: &str = "/usr/bin/etcd";
/// How long a member may take to answer with a leader.
const READY_TIMEOUT: Duration = Duration::from_secs(30);

/// TLS material for a test cluster: the CA, and a client certificate from it for the store.
pub(crate) struct TestPki {
    pub ca: ClusterCa,
    pub client: EtcdTls,
}

impl TestPki {
    pub fn generate() -> Self {
        let ca = ClusterCa::generate("etcd-test").unwrap();
        let client = ca.issue_client("clusterctl-apiserver", &[]).unwrap();
        let client = EtcdTls { ca_pem: ca.cert_pem().to_string(), cert_pem: client.cert_pem, key_pem: client.key_pem };
        TestPki { ca, client }
    }
}

/// How one member is started.
pub(crate) struct MemberConfig<'a> {
    pub name: String,
    pub client_port: u16,
    pub peer_port: u16,
    /// `name=peer_url,...` of every member, this one included.
    pub initial_cluster: String,
    /// Joining a running cluster (after `member add`) rather than forming a new one.
    pub existing: bool,
    /// Serve clients and peers over TLS with a certificate from this CA (client certificates required).
    pub tls: Option<&'a ClusterCa>,
}

impl MemberConfig<'_> {
    fn scheme(&self) -> &'static str {
        if self.tls.is_some() { "https" } else { "http" }
    }

    pub fn client_url(&self) -> String {
        format!("{}://127.0.0.1:{}", self.scheme(), self.client_port)
    }

    pub fn peer_url(&self) -> String {
        format!("{}://127.0.0.1:{}", self.scheme(), self.peer_port)
    }
}

/// A running etcd member, killed (and its data removed) on drop.
pub(crate) struct EtcdProcess {
    pub name: String,
    pub client_url: String,
    pub peer_url: String,
    child: Option<Child>,
    dir: TempDir,
}

/// `n` distinct ports nobody listens on now, on loopback (held together while picked, so that
/// they differ).
pub(crate) fn free_ports(n: usize) -> Vec<u16> {
    let listeners: Vec<TcpListener> = (0..n).map(|_| TcpListener::bind((Ipv4Addr::LOCALHOST, 0)).unwrap()).collect();
    listeners.iter().map(|l| l.local_addr().unwrap().port()).collect()
}

fn data_root() -> TempDir {
    let builder = {
        let mut b = tempfile::Builder::new();
        b.prefix("clusterctl-etcd-");
        b
    };
    match builder.tempdir_in("/dev/shm") {
        Ok(dir) => dir,
        Err(_) => builder.tempdir().unwrap(),
    }
}

impl EtcdProcess {
    /// Starts one member (without waiting for it).
    pub fn spawn(config: &MemberConfig<'_>) -> Self {
        assert!(Path::new(ETCD).exists(), "{ETCD} is missing: scripts/lib/ensure-packages installs it (Debian package etcd-server)");
        let dir = data_root();
        let mut args: Vec<String> = vec![
            format!("--name={}", config.name),
            format!("--data-dir={}", dir.path().join("data").display()),
            format!("--listen-client-urls={}", config.client_url()),
            format!("--advertise-client-urls={}", config.client_url()),
            format!("--listen-peer-urls={}", config.peer_url()),
            format!("--initial-advertise-peer-urls={}", config.peer_url()),
            format!("--initial-cluster={}", config.initial_cluster),
            format!("--initial-cluster-state={}", if config.existing { "existing" } else { "new" }),
            "--initial-cluster-token=clusterctl-test".into(),
            "--logger=zap".into(),
            "--log-outputs=stderr".into(),
            "--log-level=warn".into(),
        ];
        if let Some(ca) = config.tls {
            let cert = ca.issue_etcd_member(&config.name, &[], &[IpAddr::V4(Ipv4Addr::LOCALHOST)]).unwrap();
            let write = |name: &str, text: &str| -> PathBuf {
                let path = dir.path().join(name);
                fs::write(&path, text).unwrap();
                path
            };
            let ca_file = write("ca.crt", ca.cert_pem());
            let cert_file = write("member.crt", &cert.cert_pem);
            let key_file = write("member.key", &cert.key_pem);
            for side in ["", "peer-"] {
                args.push(format!("--{side}trusted-ca-file={}", ca_file.display()));
                args.push(format!("--{side}cert-file={}", cert_file.display()));
                args.push(format!("--{side}key-file={}", key_file.display()));
                args.push(format!("--{side}client-cert-auth"));
            }
        }
        let log = fs::File::create(dir.path().join("etcd.log")).unwrap();
        // setpriv makes the kernel kill etcd when the test thread that started it goes away, even
        // when the test binary itself is killed and no destructor runs.
        let mut command = if Path::new("/usr/bin/setpriv").exists() {
            let mut c = Command::new("/usr/bin/setpriv");
            c.args(["--pdeathsig", "KILL", "--", ETCD]);
            c
        } else {
            Command::new(ETCD)
        };
        let child = command.args(&args).stdin(Stdio::null()).stdout(log.try_clone().unwrap()).stderr(log).spawn().unwrap();
        EtcdProcess { name: config.name.clone(), client_url: config.client_url(), peer_url: config.peer_url(), child: Some(child), dir }
    }

    /// A single-member etcd, answering.
    pub async fn start(tls: Option<&ClusterCa>) -> Self {
        Self::start_cluster(1, tls).await.remove(0)
    }

    /// A cluster of `n` members, all answering with one leader.
    pub async fn start_cluster(n: usize, tls: Option<&ClusterCa>) -> Vec<Self> {
        let ports = free_ports(2 * n);
        let configs: Vec<MemberConfig<'_>> = (0..n)
            .map(|i| MemberConfig {
                name: format!("m{i}"),
                client_port: ports[2 * i],
                peer_port: ports[2 * i + 1],
                initial_cluster: String::new(),
                existing: false,
                tls,
            })
            .collect();
        let initial_cluster = configs.iter().map(|c| format!("{}={}", c.name, c.peer_url())).collect::<Vec<_>>().join(",");
        let mut members: Vec<Self> = configs.into_iter().map(|c| Self::spawn(&MemberConfig { initial_cluster: initial_cluster.clone(), ..c })).collect();
        for member in &mut members {
            member.wait_ready(tls).await;
        }
        members
    }

    /// Options for a store or cluster handle on these members, with a client certificate from `pki`
    /// when they serve TLS.
    pub fn options(members: &[&EtcdProcess], pki: Option<&TestPki>) -> EtcdOptions {
        let options = EtcdOptions::new(members.iter().map(|m| m.client_url.clone()).collect());
        match pki {
            Some(pki) => options.with_tls(pki.client.clone()),
            None => options,
        }
    }

    /// Waits until the member answers a status request and knows a leader.
    pub async fn wait_ready(&mut self, tls: Option<&ClusterCa>) {
        let client_tls = tls.map(|ca| {
            let cert = ca.issue_client("etcd-test-probe", &[]).unwrap();
            EtcdTls { ca_pem: ca.cert_pem().to_string(), cert_pem: cert.cert_pem, key_pem: cert.key_pem }
        });
        let mut options = EtcdOptions::new(vec![self.client_url.clone()]);
        options.tls = client_tls;
        let cluster = EtcdCluster::connect(&options).await.unwrap();
        let deadline = Instant::now() + READY_TIMEOUT;
        let mut last = String::from("no answer yet");
        while Instant::now() < deadline {
            if let Some(exit) = self.child.as_mut().and_then(|c| c.try_wait().unwrap()) {
                panic!("etcd member {} exited ({exit}) before answering; its log:\n{}", self.name, self.log());
            }
            match cluster.endpoint_status().await.into_iter().next().map(|s| s.status) {
                Some(Ok(status)) if status.healthy() => return,
                Some(Ok(status)) => last = format!("no leader yet: {status:?}"),
                Some(Err(e)) => last = chain(&e),
                None => {}
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        panic!("etcd member {} at {} did not answer with a leader within {READY_TIMEOUT:?} ({last}); its log:\n{}", self.name, self.client_url, self.log());
    }

    /// What etcd wrote so far.
    pub fn log(&self) -> String {
        fs::read_to_string(self.dir.path().join("etcd.log")).unwrap_or_default()
    }

    /// Kills the member now (SIGKILL), as a crashed machine would stop it.
    pub fn kill(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

/// An error and its sources, for test messages.
pub(crate) use crate::apiserver::error::error_chain as chain;

impl Drop for EtcdProcess {
    fn drop(&mut self) {
        self.kill();
    }
}
