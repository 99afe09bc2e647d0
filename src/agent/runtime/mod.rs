//! What the agent needs from a container runtime, behind one trait.
//!
//! [`docker::DockerRuntime`] speaks the Docker Engine API on the node's local socket;
//! [`fake::FakeRuntime`] is an in-memory recording fake for unit tests. Images come onto
//! nodes by `clusterctl image load` or are pulled when a pod asks ([`ContainerRuntime::pull`]). Volumes come made (see
//! [`super::podconfig`]): the runtime only binds them.
//!
//! A pod is a *sandbox* and its containers, as in Kubernetes' CRI: the sandbox is a container that
//! only holds the pod's network namespace (its address from the node's pod range, its host
//! ports), and every container of the pod joins that namespace, so they share `localhost` and
//! the pod's IP.

pub mod docker;
pub mod fake;
pub mod fastpath;
pub mod pause;
pub mod podnet;

use std::collections::BTreeMap;
use std::net::IpAddr;
use std::time::Duration;

use async_trait::async_trait;

/// Label keys by which the agent finds (and, after a restart, adopts) the containers of its pods.
pub mod labels {
    pub const NAMESPACE: &str = "io.clusterctl.pod.namespace";
    pub const POD: &str = "io.clusterctl.pod.name";
    pub const UID: &str = "io.clusterctl.pod.uid";
    pub const CONTAINER: &str = "io.clusterctl.container.name";
    /// Hash of the container's spec: a changed spec means a new container.
    pub const SPEC_HASH: &str = "io.clusterctl.container.hash";
    /// Grace period in seconds, so that orphans found after a restart stop as gracefully.
    pub const GRACE: &str = "io.clusterctl.pod.grace";
    /// The pod's address of the node's pod range ([`super::podnet`]), on its sandbox and on
    /// each of its containers.
    pub const POD_IP: &str = "io.clusterctl.pod.ip";
    /// On a sandbox: the host ports forwarded to the pod, `containerPort:hostPort,...`
    /// ([`super::podnet::ports_label`]).
    pub const HOST_PORTS: &str = "io.clusterctl.pod.host-ports";
    /// On a sandbox: `true`.
    pub const SANDBOX: &str = "io.clusterctl.pod.sandbox";
    /// On a pod's container: the node's file mounted at its termination-message path.
    pub const TERMINATION_LOG: &str = "io.clusterctl.container.termination-log";
    /// On a pod's container: the id of the sandbox whose network namespace it joined.
    pub const SANDBOX_ID: &str = "io.clusterctl.pod.sandbox-id";
}

/// A pod port published on the node's `host_port` (a container's `hostPort`).
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct PortSpec {
    pub container_port: u16,
    pub host_port: u16,
}

/// What a pod's sandbox is made with.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct SandboxSpec {
    /// Docker's container name (unique on the node).
    pub name: String,
    /// The pod's identity ([`labels`]).
    pub labels: BTreeMap<String, String>,
    /// The pod's host ports.
    pub host_ports: Vec<PortSpec>,
    /// The pod's host name (its name, or `spec.hostname`) and the names `/etc/hosts` gives its address.
    pub hostname: String,
    pub host_aliases: Vec<String>,
    /// The pod's `spec.hostAliases`: more `/etc/hosts` lines, `(ip, names)`.
    pub extra_hosts: Vec<(String, Vec<String>)>,
    /// What the pod's `/etc/resolv.conf` holds.
    pub dns: PodDns,
}

/// Where a pod's DNS queries go (`spec.dnsPolicy`).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub enum DnsPolicy {
    /// The node's cluster DNS (see [`crate::dns`]), which forwards other names.
    #[default]
    ClusterFirst,
    /// The node's own resolvers.
    Default,
    /// Only what the pod's `dnsConfig` gives.
    None,
}

/// A pod's `/etc/resolv.conf`: its policy, then its own name servers, search domains and options
/// (the cluster's search domains already among them for `ClusterFirst`).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct PodDns {
    pub policy: DnsPolicy,
    pub nameservers: Vec<String>,
    pub searches: Vec<String>,
    pub options: Vec<String>,
}

/// A running sandbox: the network namespace a pod's containers join.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Sandbox {
    pub id: String,
    pub ip: IpAddr,
}

/// A directory or file of the node bound into a container (a pod's volume).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Mount {
    pub host_path: std::path::PathBuf,
    pub container_path: String,
    pub read_only: bool,
}

/// Who a container runs as and what it may do (from its security context).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Security {
    /// `uid` or `uid:gid` (none: the image's user).
    pub user: Option<String>,
    /// Extra groups (`fsGroup`, supplemental groups).
    pub groups: Vec<String>,
    pub read_only_root: bool,
    pub no_new_privileges: bool,
    pub privileged: bool,
    pub cap_add: Vec<String>,
    pub cap_drop: Vec<String>,
    /// `unconfined`, a profile's JSON text, or none: the runtime's default filter.
    pub seccomp: Option<String>,
}

/// Everything needed to create one container.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct ContainerSpec {
    /// Docker's container name (unique on the node).
    pub name: String,
    pub image: String,
    /// Replaces the image's entrypoint when not empty.
    pub command: Vec<String>,
    /// Replaces the image's cmd when not empty.
    pub args: Vec<String>,
    pub env: Vec<(String, String)>,
    pub working_dir: Option<String>,
    /// The sandbox whose network the container joins (none: a network of its own, loopback only).
    pub sandbox: Option<Sandbox>,
    pub cpu_millis: Option<u64>,
    pub memory_bytes: Option<u64>,
    /// The pod's volumes as the container mounts them.
    pub mounts: Vec<Mount>,
    pub security: Security,
    pub labels: BTreeMap<String, String>,
    /// Stdin kept open for `attach` (`stdin`), closed after the first attach (`stdin_once`), a
    /// terminal (`tty`): the container's fields of the same names.
    pub stdin: bool,
    pub stdin_once: bool,
    pub tty: bool,
}

/// What the runtime knows of one container.
#[derive(Debug, Clone, PartialEq)]
pub struct ContainerInfo {
    pub id: String,
    /// The image by content, as the runtime names it (`sha256:...`).
    pub image_id: String,
    pub labels: BTreeMap<String, String>,
    pub running: bool,
    pub exit_code: Option<i64>,
    /// The kernel killed it for its memory limit.
    pub oom_killed: bool,
    /// RFC 3339, as the runtime reports it.
    pub started_at: Option<String>,
    pub finished_at: Option<String>,
    /// Its pod's address of the node's pod range.
    pub ip: Option<IpAddr>,
}

impl ContainerInfo {
    /// Whether this is a pod's sandbox rather than one of its containers.
    pub fn is_sandbox(&self) -> bool {
        self.labels.contains_key(labels::SANDBOX)
    }
}

/// What a read of a container's log asks for (kubelet's `PodLogOptions`, as the runtime takes them).
#[derive(Debug, Clone, Default, PartialEq)]
pub struct LogOptions {
    /// Keep streaming what the container writes until it stops (or the reader goes).
    pub follow: bool,
    /// Only the last lines.
    pub tail_lines: Option<u64>,
    /// Only what was written since this Unix time (seconds).
    pub since_unix: Option<i64>,
    /// Each line prefixed with its RFC 3339 time (nanoseconds) and a space.
    pub timestamps: bool,
}

/// A stream of a container's output, bytes as the container wrote them (stdout and stderr mixed).
pub type LogStream = futures::stream::BoxStream<'static, Result<bytes::Bytes, RuntimeError>>;

/// What an interactive exec asks for (`kubectl exec`).
#[derive(Debug, Clone, Default, PartialEq)]
pub struct ExecRequest {
    pub command: Vec<String>,
    pub stdin: bool,
    pub stdout: bool,
    pub stderr: bool,
    pub tty: bool,
}

/// One piece of an exec's output.
#[derive(Debug, Clone, PartialEq)]
pub enum ExecOutput {
    Stdout(bytes::Bytes),
    Stderr(bytes::Bytes),
}

/// A running exec: its output, its input, and its id for resizing and the exit code.
pub struct ExecSession {
    pub exec_id: String,
    pub output: futures::stream::BoxStream<'static, Result<ExecOutput, RuntimeError>>,
    pub input: std::pin::Pin<Box<dyn tokio::io::AsyncWrite + Send>>,
}

/// `repo` and `tag` of a reference (`latest` when it has none; a digest reference is its own tag).
pub fn split_tag(image: &str) -> (&str, &str) {
    if let Some((repo, digest)) = image.split_once('@') {
        return (repo, digest);
    }
    let last = image.rsplit('/').next().unwrap_or(image);
    match last.rsplit_once(':') {
        Some((_, tag)) => (&image[..image.len() - tag.len() - 1], tag),
        None => (image, "latest"),
    }
}

/// Credentials for one registry (from an `imagePullSecret`).
#[derive(Clone, PartialEq, Eq)]
pub struct RegistryAuth {
    pub server: String,
    pub username: String,
    pub password: String,
}

impl std::fmt::Debug for RegistryAuth {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // never the password (it would reach logs)
        f.debug_struct("RegistryAuth").field("server", &self.server).field("username", &self.username).finish_non_exhaustive()
    }
}

/// A failed runtime call.
#[derive(Debug, thiserror::Error)]
pub enum RuntimeError {
    /// The image is not on this node (and the agent never pulls).
    #[error("image {0} is not present on this node")]
    ImageNotPresent(String),
    /// The node has no pod range yet (`spec.podCIDR`, given by the control plane after it registers).
    #[error("the node has no pod address range yet")]
    NoPodNetwork,
    #[error("container {0} not found")]
    NotFound(String),
    /// An image could not be pulled: the registry's or the runtime's words.
    #[error("{0}")]
    PullFailed(String),
    /// The runtime refused or failed the call.
    #[error("{action}: {message}")]
    Failed { action: String, message: String },
    /// The runtime could not be reached.
    #[error("{action}: the container runtime does not answer")]
    Unreachable { action: String, message: String },
}

/// The side of a container runtime the agent uses.
#[async_trait]
pub trait ContainerRuntime: Send + Sync + 'static {
    /// Every container (running or not) that carries `label_key`, sandboxes included.
    async fn list(&self, label_key: &str) -> Result<Vec<ContainerInfo>, RuntimeError>;
    async fn inspect(&self, id: &str) -> Result<ContainerInfo, RuntimeError>;
    async fn image_present(&self, image: &str) -> Result<bool, RuntimeError>;
    /// The user an image runs as (its `USER`, empty for root by default); none when the image is
    /// not on the node.
    async fn image_user(&self, image: &str) -> Result<Option<String>, RuntimeError>;
    /// Pulls an image from its registry, with the registry's credentials when given; the error
    /// is the registry's (or the runtime's) message.
    async fn pull(&self, image: &str, auth: Option<&RegistryAuth>) -> Result<(), RuntimeError>;
    /// Creates and starts a pod's sandbox with an address from the node's pod range and the
    /// pod's host ports forwarded to it.
    async fn run_sandbox(&self, spec: &SandboxSpec) -> Result<Sandbox, RuntimeError>;
    /// Creates and starts a container (in its sandbox's network); returns its id.
    async fn run(&self, spec: &ContainerSpec) -> Result<String, RuntimeError>;
    /// SIGTERM, then SIGKILL after `grace`.
    async fn stop(&self, id: &str, grace: Duration) -> Result<(), RuntimeError>;
    async fn remove(&self, id: &str) -> Result<(), RuntimeError>;
    /// The last `tail` lines of output (stdout and stderr).
    async fn logs(&self, id: &str, tail: usize) -> Result<String, RuntimeError>;
    /// Runs a command inside the container and returns its exit code.
    async fn exec(&self, id: &str, command: &[String]) -> Result<i64, RuntimeError>;
    /// The container's log as a stream (what `kubectl logs` reads through the agent's server).
    async fn log_stream(&self, id: &str, options: &LogOptions) -> Result<LogStream, RuntimeError>;
    /// Starts a command in the container attached to its input and output (`kubectl exec`).
    async fn exec_attached(&self, id: &str, request: &ExecRequest) -> Result<ExecSession, RuntimeError>;
    /// Resizes an exec's terminal.
    async fn exec_resize(&self, exec_id: &str, width: u16, height: u16) -> Result<(), RuntimeError>;
    /// An exec's exit code once it has ended (`None` while it runs).
    async fn exec_exit_code(&self, exec_id: &str) -> Result<Option<i64>, RuntimeError>;
    /// Attaches to a running container's input and output (`kubectl attach`; the request's
    /// command is unused; the session's id is the container's).
    async fn attach(&self, id: &str, request: &ExecRequest) -> Result<ExecSession, RuntimeError>;
    /// Resizes a container's terminal.
    async fn resize(&self, id: &str, width: u16, height: u16) -> Result<(), RuntimeError>;
}
