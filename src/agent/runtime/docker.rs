//! [`ContainerRuntime`] on the Docker Engine API (bollard) over the node's local socket, with
//! the pods' network wired by the agent ([`super::podnet`]), not by Docker.

use std::collections::{BTreeMap, HashMap, HashSet};
use std::net::{IpAddr, Ipv4Addr};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use async_trait::async_trait;
use bollard::Docker;
use bollard::exec::{CreateExecOptions, StartExecResults};
use bollard::models::{ContainerCreateBody, HostConfig};
use bollard::query_parameters::{
    CreateContainerOptionsBuilder, ListContainersOptionsBuilder, LogsOptionsBuilder, RemoveContainerOptionsBuilder, StartContainerOptions,
    StopContainerOptionsBuilder,
};
use futures::StreamExt;

use super::podnet::{self, HostPorts, PodNetwork};
use super::{ContainerInfo, ContainerRuntime, ContainerSpec, RuntimeError, Sandbox, SandboxSpec, labels, pause};

/// How many processes (threads count) one container may have.
pub const PIDS_LIMIT: i64 = 4096;

/// The node's Docker daemon.
#[derive(Debug, Clone)]
pub struct DockerRuntime {
    docker: Docker,
    /// What the last inspection of each container said, with the state the listing showed then:
    /// a listing inspects only the containers that are new or changed state. The agent lists at
    /// every pass, and inspecting 30 unchanged containers each time kept the node's dockerd busy
    /// (and an inspection waits for a container that is being started).
    inspected: Arc<Mutex<HashMap<String, (String, ContainerInfo)>>>,
    /// The node's pod network, once the node has a pod range.
    net: Arc<Mutex<Option<Arc<PodNetwork>>>>,
    /// Set once the bridge and its rules were made by this process (for the network in `net`).
    net_ready: Arc<std::sync::atomic::AtomicBool>,
    /// Set once the sandbox image is known to be there.
    pause_ready: Arc<std::sync::atomic::AtomicBool>,
    ports: Arc<HostPorts>,
    /// Pod addresses in use: those in the labels of the containers last listed, and those of
    /// containers being made (by container name).
    addresses: Arc<Mutex<Addresses>>,
    /// Where each sandbox's `/etc/hosts` and `/etc/resolv.conf` are written (a folder per sandbox
    /// id), mounted into every container of its pod.
    files: std::path::PathBuf,
}

/// Where the pods' `/etc/hosts` and `/etc/resolv.conf` live on a node.
pub const SANDBOX_FILES: &str = "/var/lib/clusterctl/agent/sandboxes";

#[derive(Debug, Default)]
struct Addresses {
    listed: HashSet<Ipv4Addr>,
    being_made: HashMap<String, Ipv4Addr>,
    /// The address handed out last.
    last: Option<Ipv4Addr>,
}

impl Addresses {
    fn take_free(&mut self, net: &PodNetwork, name: &str) -> Option<Ipv4Addr> {
        let used: HashSet<Ipv4Addr> = self.listed.iter().chain(self.being_made.values()).copied().collect();
        let ip = net.free_address(&used, self.last)?;
        self.being_made.insert(name.to_string(), ip);
        self.last = Some(ip);
        Some(ip)
    }
}

fn failed(action: impl Into<String>, e: bollard::errors::Error) -> RuntimeError {
    let action = action.into();
    match e {
        bollard::errors::Error::DockerResponseServerError { status_code: 404, message } => RuntimeError::NotFound(message),
        bollard::errors::Error::DockerResponseServerError { message, .. } => RuntimeError::Failed { action, message },
        other => RuntimeError::Unreachable { action, message: other.to_string() },
    }
}

/// The Docker daemon's version as Kubernetes names a node's runtime (`docker://20.10.24`), when
/// Docker answers.
pub async fn runtime_version() -> Option<String> {
    let docker = Docker::connect_with_unix_defaults().ok()?;
    let version = docker.version().await.ok()?.version?;
    Some(format!("docker://{version}"))
}

impl DockerRuntime {
    /// Connects to `/var/run/docker.sock` and agrees on an API version (nodes run Docker 20.10);
    /// pods have no network until [`DockerRuntime::set_network`] gives the node's.
    pub async fn connect() -> Result<Self, RuntimeError> {
        let docker = Docker::connect_with_unix_defaults().map_err(|e| failed("connecting to the Docker socket", e))?;
        let docker = docker.negotiate_version().await.map_err(|e| failed("negotiating the Docker API version", e))?;
        Ok(DockerRuntime {
            docker,
            inspected: Arc::default(),
            net: Arc::default(),
            net_ready: Arc::default(),
            pause_ready: Arc::default(),
            ports: Arc::default(),
            addresses: Arc::default(),
            files: SANDBOX_FILES.into(),
        })
    }

    /// The pods' `/etc/hosts` and `/etc/resolv.conf` under `dir` (tests).
    pub fn with_files_dir(mut self, dir: impl Into<std::path::PathBuf>) -> Self {
        self.files = dir.into();
        self
    }

    /// Writes a sandbox's `/etc/hosts` and `/etc/resolv.conf` (readable by all: a pod's processes
    /// run as any user); the node's resolvers from its own `/etc/resolv.conf`.
    fn write_sandbox_files(&self, id: &str, net: &PodNetwork, spec: &SandboxSpec, ip: Ipv4Addr) -> Result<(), RuntimeError> {
        let dir = self.files.join(id);
        let write = || -> std::io::Result<()> {
            std::fs::create_dir_all(&dir)?;
            let node_resolv = std::fs::read_to_string("/etc/resolv.conf").unwrap_or_default();
            std::fs::write(dir.join("resolv.conf"), podnet::resolv_conf(&spec.dns, net.gateway(), &node_resolv))?;
            std::fs::write(dir.join("hosts"), podnet::hosts_file(ip, &spec.hostname, &spec.host_aliases, &spec.extra_hosts))
        };
        write().map_err(|e| RuntimeError::Failed { action: format!("writing the name files of sandbox {}", spec.name), message: e.to_string() })
    }

    /// The same with pods on another bridge at once (the runtime's tests on an operator's machine).
    pub async fn connect_with(net: PodNetwork) -> Result<Self, RuntimeError> {
        let rt = Self::connect().await?;
        rt.set_network(net);
        Ok(rt)
    }

    /// The node's pod network from now on (its range given, or changed, by the control plane);
    /// the bridge is made or readdressed before the next sandbox.
    pub fn set_network(&self, net: PodNetwork) {
        let mut current = self.net.lock().unwrap_or_else(|e| e.into_inner());
        if current.as_ref().is_some_and(|c| c.cidr() == net.cidr()) {
            return;
        }
        tracing::info!(range = %net.cidr(), "the node's pod range");
        *current = Some(Arc::new(net));
        self.net_ready.store(false, std::sync::atomic::Ordering::Relaxed);
    }

    fn network(&self) -> Option<Arc<PodNetwork>> {
        self.net.lock().unwrap_or_else(|e| e.into_inner()).clone()
    }

    /// Creates and starts a sandbox routed by the node with the pod's host ports forwarded to it;
    /// undone on failure.
    async fn run_sandbox_at(&self, net: &PodNetwork, spec: &SandboxSpec, ip: Ipv4Addr) -> Result<String, RuntimeError> {
        use std::sync::atomic::Ordering;
        if !self.net_ready.load(Ordering::Relaxed) || !net.present() {
            net.ensure().await?;
            self.net_ready.store(true, Ordering::Relaxed);
        }
        if !self.pause_ready.load(Ordering::Relaxed) {
            pause::ensure_image(&self.docker).await.map_err(|message| RuntimeError::Failed { action: "making the pod sandbox image".into(), message })?;
            self.pause_ready.store(true, Ordering::Relaxed);
        }
        let bound = HostPorts::bind(&spec.host_ports)?;
        let mut sandbox_labels: HashMap<String, String> = spec.labels.clone().into_iter().collect();
        sandbox_labels.insert(labels::SANDBOX.into(), "true".into());
        sandbox_labels.insert(labels::POD_IP.into(), ip.to_string());
        sandbox_labels.insert(labels::HOST_PORTS.into(), podnet::ports_label(&bound));
        let body = ContainerCreateBody {
            image: Some(pause::IMAGE.into()),
            hostname: (!spec.hostname.is_empty()).then(|| spec.hostname.clone()),
            entrypoint: Some(vec![pause::PROGRAM.into()]),
            labels: Some(sandbox_labels),
            network_disabled: Some(true),
            host_config: Some(HostConfig { network_mode: Some("none".into()), pids_limit: Some(16), ..Default::default() }),
            ..Default::default()
        };
        let options = CreateContainerOptionsBuilder::default().name(&spec.name).build();
        let created = self.docker.create_container(Some(options), body).await.map_err(|e| failed(format!("creating sandbox {}", spec.name), e))?;
        let wired = async {
            self.docker.start_container(&created.id, None::<StartContainerOptions>).await.map_err(|e| failed(format!("starting sandbox {}", spec.name), e))?;
            let inspected = self.docker.inspect_container(&created.id, None).await.map_err(|e| failed(format!("inspecting sandbox {}", spec.name), e))?;
            let pid = inspected.state.filter(|s| s.running == Some(true)).and_then(|s| s.pid).filter(|p| *p > 0);
            let pid = pid.ok_or_else(|| RuntimeError::Failed { action: format!("starting sandbox {}", spec.name), message: "it exited at once".into() })?;
            net.attach(pid, &created.id, ip).await?;
            self.write_sandbox_files(&created.id, net, spec, ip)?;
            self.ports.serve(&created.id, ip, bound)
        };
        match wired.await {
            Ok(()) => Ok(created.id),
            Err(e) => {
                let _ = self.remove(&created.id).await;
                Err(e)
            }
        }
    }

    /// Creates and starts a container in its sandbox's network; undone on failure.
    async fn run_in_sandbox(&self, spec: &ContainerSpec) -> Result<String, RuntimeError> {
        let mut container_labels: HashMap<String, String> = spec.labels.clone().into_iter().collect();
        let mut binds = Vec::new();
        let network_mode = match &spec.sandbox {
            Some(sandbox) => {
                let files = self.files.join(&sandbox.id);
                if files.join("resolv.conf").exists() {
                    binds.push(format!("{}:/etc/hosts", files.join("hosts").display()));
                    binds.push(format!("{}:/etc/resolv.conf:ro", files.join("resolv.conf").display()));
                }
                container_labels.insert(labels::POD_IP.into(), sandbox.ip.to_string());
                container_labels.insert(labels::SANDBOX_ID.into(), sandbox.id.clone());
                format!("container:{}", sandbox.id)
            }
            None => "none".into(),
        };
        for m in &spec.mounts {
            binds.push(format!("{}:{}{}", m.host_path.display(), m.container_path, if m.read_only { ":ro" } else { "" }));
        }
        let non_empty = |v: &Vec<String>| (!v.is_empty()).then(|| v.clone());
        let sec = &spec.security;
        let mut security_opt = Vec::new();
        if sec.no_new_privileges {
            security_opt.push("no-new-privileges".to_string());
        }
        if let Some(profile) = &sec.seccomp {
            security_opt.push(format!("seccomp={profile}"));
        }
        let body = ContainerCreateBody {
            image: Some(spec.image.clone()),
            user: sec.user.clone(),
            entrypoint: non_empty(&spec.command),
            cmd: non_empty(&spec.args),
            env: Some(spec.env.iter().map(|(k, v)| format!("{k}={v}")).collect()),
            working_dir: spec.working_dir.clone(),
            open_stdin: Some(spec.stdin),
            stdin_once: Some(spec.stdin_once),
            attach_stdin: Some(spec.stdin),
            tty: Some(spec.tty),
            labels: Some(container_labels),
            host_config: Some(HostConfig {
                // docker-init (tini, shipped with Debian's docker.io) as PID 1 passes SIGTERM on,
                // so that a process without a handler (busybox httpd) stops at once, not after
                // the whole grace period.
                init: Some(true),
                network_mode: Some(network_mode),
                binds: (!binds.is_empty()).then_some(binds),
                nano_cpus: spec.cpu_millis.map(|m| (m * 1_000_000) as i64),
                // A fork bomb in one container cannot take the node's process table.
                pids_limit: Some(PIDS_LIMIT),
                memory: spec.memory_bytes.map(|b| b as i64),
                // Swap would let a container run past its memory limit instead of being killed.
                memory_swap: spec.memory_bytes.map(|b| b as i64),
                privileged: Some(sec.privileged),
                readonly_rootfs: Some(sec.read_only_root),
                cap_add: non_empty(&sec.cap_add),
                cap_drop: non_empty(&sec.cap_drop),
                group_add: non_empty(&sec.groups),
                security_opt: non_empty(&security_opt),
                ..Default::default()
            }),
            ..Default::default()
        };
        let options = CreateContainerOptionsBuilder::default().name(&spec.name).build();
        let created = self.docker.create_container(Some(options), body).await.map_err(|e| failed(format!("creating container {}", spec.name), e))?;
        // A container that exits at once (a crash loop) is seen exited by the next sync.
        if let Err(e) = self.docker.start_container(&created.id, None::<StartContainerOptions>).await {
            let _ = self.remove(&created.id).await;
            return Err(failed(format!("starting container {}", spec.name), e));
        }
        Ok(created.id)
    }

    /// The container's inspection, reused while the listing shows it in the same state.
    async fn inspect_once_per_state(&self, id: String, state: String) -> Result<ContainerInfo, RuntimeError> {
        let known = self.inspected.lock().unwrap_or_else(|e| e.into_inner()).get(&id).filter(|(seen, _)| *seen == state).map(|(_, info)| info.clone());
        if let Some(info) = known {
            return Ok(info);
        }
        let info = self.inspect(&id).await?;
        self.inspected.lock().unwrap_or_else(|e| e.into_inner()).insert(id, (state, info.clone()));
        Ok(info)
    }
}

fn info_from_inspect(r: bollard::models::ContainerInspectResponse) -> ContainerInfo {
    let state = r.state.unwrap_or_default();
    let labels: BTreeMap<String, String> = r.config.and_then(|c| c.labels).unwrap_or_default().into_iter().collect();
    // Wired by the agent: the pod's address in the labels.
    let ip = labels.get(labels::POD_IP).and_then(|a| a.parse::<IpAddr>().ok());
    let zero = |t: Option<String>| t.filter(|s| !s.starts_with("0001-"));
    ContainerInfo {
        id: r.id.unwrap_or_default(),
        image_id: r.image.unwrap_or_default(),
        labels,
        running: state.running.unwrap_or(false),
        exit_code: state.exit_code,
        oom_killed: state.oom_killed.unwrap_or(false),
        started_at: zero(state.started_at),
        finished_at: zero(state.finished_at),
        ip,
    }
}

impl DockerRuntime {
    /// After a listing: the addresses in use are the sandboxes' listed (plus those being made),
    /// and the host ports of running sandboxes are forwarded, of stopped and removed ones not.
    /// A restarted agent so takes over the forwarding of the sandboxes it adopts.
    fn reconcile_network(&self, listed: &[ContainerInfo]) {
        {
            let mut addresses = self.addresses.lock().unwrap_or_else(|e| e.into_inner());
            addresses.listed = listed.iter().filter(|c| c.is_sandbox()).filter_map(|c| c.labels.get(labels::POD_IP)?.parse().ok()).collect();
        }
        let running: HashSet<String> = listed.iter().filter(|c| c.running && c.is_sandbox()).map(|c| c.id.clone()).collect();
        self.ports.retain(&running);
        for c in listed.iter().filter(|c| running.contains(&c.id) && !self.ports.is_open(&c.id)) {
            let Some(IpAddr::V4(ip)) = c.ip else { continue };
            let published = c.labels.get(labels::HOST_PORTS).map(|v| podnet::parse_ports_label(v)).unwrap_or_default();
            let specs: Vec<super::PortSpec> = published.iter().map(|(cport, hport)| super::PortSpec { container_port: *cport, host_port: *hport }).collect();
            match HostPorts::bind(&specs).and_then(|bound| self.ports.serve(&c.id, ip, bound)) {
                Ok(()) => tracing::info!(container = %c.id, "forwarding the published ports of an adopted container"),
                Err(e) => tracing::warn!(container = %c.id, error = %e, "cannot forward the published ports of an adopted container"),
            }
        }
    }
}

#[async_trait]
impl ContainerRuntime for DockerRuntime {
    async fn list(&self, label_key: &str) -> Result<Vec<ContainerInfo>, RuntimeError> {
        let filters = HashMap::from([("label".to_string(), vec![label_key.to_string()])]);
        let options = ListContainersOptionsBuilder::default().all(true).filters(&filters).build();
        let summaries = self.docker.list_containers(Some(options)).await.map_err(|e| failed("listing containers", e))?;
        // The summaries lack exit codes and start times: each container is inspected once per
        // state it is seen in (a few at a time), and that answer reused while its state stays.
        let listed: Vec<(String, String)> = summaries.into_iter().filter_map(|s| Some((s.id?, format!("{:?}", s.state)))).collect();
        let inspected: Vec<_> = futures::stream::iter(listed.clone()).map(|(id, state)| self.inspect_once_per_state(id, state)).buffered(8).collect().await;
        let mut out = Vec::new();
        for r in inspected {
            match r {
                Ok(info) => out.push(info),
                Err(RuntimeError::NotFound(_)) => {}
                Err(e) => return Err(e),
            }
        }
        let present: HashSet<&str> = listed.iter().map(|(id, _)| id.as_str()).collect();
        self.inspected.lock().unwrap_or_else(|e| e.into_inner()).retain(|id, _| present.contains(id.as_str()));
        self.reconcile_network(&out);
        Ok(out)
    }

    async fn inspect(&self, id: &str) -> Result<ContainerInfo, RuntimeError> {
        let r = self.docker.inspect_container(id, None).await.map_err(|e| failed(format!("inspecting container {id}"), e))?;
        Ok(info_from_inspect(r))
    }

    async fn image_present(&self, image: &str) -> Result<bool, RuntimeError> {
        match self.docker.inspect_image(image).await {
            Ok(_) => Ok(true),
            Err(bollard::errors::Error::DockerResponseServerError { status_code: 404, .. }) => Ok(false),
            Err(e) => Err(failed(format!("inspecting image {image}"), e)),
        }
    }

    async fn image_user(&self, image: &str) -> Result<Option<String>, RuntimeError> {
        match self.docker.inspect_image(image).await {
            Ok(i) => Ok(Some(i.config.and_then(|c| c.user).unwrap_or_default())),
            Err(bollard::errors::Error::DockerResponseServerError { status_code: 404, .. }) => Ok(None),
            Err(e) => Err(failed(format!("inspecting image {image}"), e)),
        }
    }

    async fn pull(&self, image: &str, auth: Option<&super::RegistryAuth>) -> Result<(), RuntimeError> {
        use futures::StreamExt;
        let (repo, tag) = super::split_tag(image);
        let options = bollard::query_parameters::CreateImageOptionsBuilder::default().from_image(repo).tag(tag).build();
        let credentials = auth.map(|a| bollard::auth::DockerCredentials {
            username: Some(a.username.clone()),
            password: Some(a.password.clone()),
            serveraddress: Some(a.server.clone()),
            ..Default::default()
        });
        let mut progress = self.docker.create_image(Some(options), None, credentials);
        while let Some(item) = progress.next().await {
            match item {
                Ok(info) if info.error_detail.is_some() => {
                    let message = info.error_detail.and_then(|d| d.message).unwrap_or_default();
                    return Err(RuntimeError::PullFailed(message));
                }
                Ok(_) => {}
                Err(bollard::errors::Error::DockerResponseServerError { message, .. }) => return Err(RuntimeError::PullFailed(format!("Error response from daemon: {message}"))),
                Err(e) => return Err(failed(format!("pulling image {image}"), e)),
            }
        }
        Ok(())
    }

    async fn run_sandbox(&self, spec: &SandboxSpec) -> Result<Sandbox, RuntimeError> {
        let net = self.network().ok_or(RuntimeError::NoPodNetwork)?;
        let ip = self
            .addresses
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .take_free(&net, &spec.name)
            .ok_or_else(|| RuntimeError::Failed { action: format!("creating sandbox {}", spec.name), message: format!("the node's pod range {} has no free address", net.cidr()) })?;
        let result = self.run_sandbox_at(&net, spec, ip).await;
        let mut addresses = self.addresses.lock().unwrap_or_else(|e| e.into_inner());
        addresses.being_made.remove(&spec.name);
        let id = result?;
        addresses.listed.insert(ip);
        Ok(Sandbox { id, ip: IpAddr::V4(ip) })
    }

    async fn run(&self, spec: &ContainerSpec) -> Result<String, RuntimeError> {
        if !self.image_present(&spec.image).await? {
            return Err(RuntimeError::ImageNotPresent(spec.image.clone()));
        }
        self.run_in_sandbox(spec).await
    }

    async fn stop(&self, id: &str, grace: Duration) -> Result<(), RuntimeError> {
        // The published ports close first: a connection sent to one from now on is refused (and a
        // node's proxy dials the next endpoint) instead of being accepted here and then cut when
        // the container is gone. A stopped container is never started again (a restart is a new
        // container), so nothing reopens them.
        self.ports.close(id);
        let options = StopContainerOptionsBuilder::default().t(grace.as_secs() as i32).build();
        match self.docker.stop_container(id, Some(options)).await {
            Ok(()) => Ok(()),
            // 304: already stopped.
            Err(bollard::errors::Error::DockerResponseServerError { status_code: 304, .. }) => Ok(()),
            Err(e) => Err(failed(format!("stopping container {id}"), e)),
        }
    }

    async fn remove(&self, id: &str) -> Result<(), RuntimeError> {
        self.ports.close(id);
        if !id.is_empty() && !id.contains('/') {
            let _ = std::fs::remove_dir_all(self.files.join(id)); // a sandbox's name files
        }
        let options = RemoveContainerOptionsBuilder::default().force(true).build();
        match self.docker.remove_container(id, Some(options)).await {
            Ok(()) | Err(bollard::errors::Error::DockerResponseServerError { status_code: 404, .. }) => Ok(()),
            Err(e) => Err(failed(format!("removing container {id}"), e)),
        }
    }

    async fn logs(&self, id: &str, tail: usize) -> Result<String, RuntimeError> {
        let options = LogsOptionsBuilder::default().stdout(true).stderr(true).tail(&tail.to_string()).build();
        let mut stream = self.docker.logs(id, Some(options));
        let mut out = String::new();
        while let Some(chunk) = stream.next().await {
            let chunk = chunk.map_err(|e| failed(format!("reading the logs of {id}"), e))?;
            out.push_str(&chunk.to_string());
        }
        Ok(out)
    }

    async fn log_stream(&self, id: &str, options: &super::LogOptions) -> Result<super::LogStream, RuntimeError> {
        let mut builder = LogsOptionsBuilder::default().stdout(true).stderr(true).follow(options.follow).timestamps(options.timestamps);
        builder = builder.tail(&options.tail_lines.map_or("all".to_string(), |n| n.to_string()));
        if let Some(since) = options.since_unix {
            builder = builder.since(i32::try_from(since).unwrap_or(i32::MAX));
        }
        // Fails early for a container that is gone, instead of as the stream's first item.
        self.inspect(id).await?;
        let id = id.to_string();
        let stream = self.docker.logs(&id, Some(builder.build())).map(move |chunk| match chunk {
            Ok(output) => Ok(output.into_bytes()),
            Err(e) => Err(failed(format!("reading the logs of {id}"), e)),
        });
        Ok(Box::pin(stream))
    }

    async fn exec_attached(&self, id: &str, request: &super::ExecRequest) -> Result<super::ExecSession, RuntimeError> {
        let options = CreateExecOptions {
            cmd: Some(request.command.clone()),
            attach_stdin: Some(request.stdin),
            attach_stdout: Some(request.stdout),
            attach_stderr: Some(request.stderr),
            tty: Some(request.tty),
            ..Default::default()
        };
        let action = format!("exec in {id}");
        let exec = self.docker.create_exec(id, options).await.map_err(|e| failed(action.clone(), e))?;
        let start = bollard::exec::StartExecOptions { detach: false, tty: request.tty, output_capacity: None };
        match self.docker.start_exec(&exec.id, Some(start)).await.map_err(|e| failed(action.clone(), e))? {
            StartExecResults::Attached { output, input } => Ok(super::ExecSession { exec_id: exec.id, output: session_output(output, action), input }),
            StartExecResults::Detached => Err(RuntimeError::Failed { action, message: "the exec started detached".into() }),
        }
    }

    async fn attach(&self, id: &str, request: &super::ExecRequest) -> Result<super::ExecSession, RuntimeError> {
        let options = bollard::query_parameters::AttachContainerOptions {
            stdin: request.stdin,
            stdout: request.stdout,
            stderr: request.stderr,
            stream: true,
            logs: false,
            detach_keys: None,
        };
        let action = format!("attaching to {id}");
        let attached = self.docker.attach_container(id, Some(options)).await.map_err(|e| failed(action.clone(), e))?;
        Ok(super::ExecSession { exec_id: id.to_string(), output: session_output(attached.output, action), input: attached.input })
    }

    async fn resize(&self, id: &str, width: u16, height: u16) -> Result<(), RuntimeError> {
        let options = bollard::query_parameters::ResizeContainerTTYOptions { h: i32::from(height), w: i32::from(width) };
        self.docker.resize_container_tty(id, options).await.map_err(|e| failed(format!("resizing container {id}"), e))
    }

    async fn exec_resize(&self, exec_id: &str, width: u16, height: u16) -> Result<(), RuntimeError> {
        let options = bollard::query_parameters::ResizeExecOptions { h: i32::from(height), w: i32::from(width) };
        self.docker.resize_exec(exec_id, options).await.map_err(|e| failed(format!("resizing exec {exec_id}"), e))
    }

    async fn exec_exit_code(&self, exec_id: &str) -> Result<Option<i64>, RuntimeError> {
        let done = self.docker.inspect_exec(exec_id).await.map_err(|e| failed(format!("inspecting exec {exec_id}"), e))?;
        Ok(if done.running == Some(true) { None } else { done.exit_code })
    }

    async fn exec(&self, id: &str, command: &[String]) -> Result<i64, RuntimeError> {
        let options = CreateExecOptions { cmd: Some(command.to_vec()), attach_stdout: Some(true), attach_stderr: Some(true), ..Default::default() };
        let exec = self.docker.create_exec(id, options).await.map_err(|e| failed(format!("exec in {id}"), e))?;
        if let StartExecResults::Attached { mut output, .. } = self.docker.start_exec(&exec.id, None).await.map_err(|e| failed(format!("exec in {id}"), e))? {
            while output.next().await.is_some() {}
        }
        let done = self.docker.inspect_exec(&exec.id).await.map_err(|e| failed(format!("exec in {id}"), e))?;
        Ok(done.exit_code.unwrap_or(-1))
    }
}

/// An attached exec's or container's output as the agent passes it on (stdin echoes dropped).
fn session_output(
    output: std::pin::Pin<Box<dyn futures::Stream<Item = Result<bollard::container::LogOutput, bollard::errors::Error>> + Send>>,
    action: String,
) -> futures::stream::BoxStream<'static, Result<super::ExecOutput, RuntimeError>> {
    output
        .filter_map(move |chunk| {
            let item = match chunk {
                Ok(bollard::container::LogOutput::StdErr { message }) => Some(Ok(super::ExecOutput::Stderr(message))),
                Ok(bollard::container::LogOutput::StdOut { message } | bollard::container::LogOutput::Console { message }) => Some(Ok(super::ExecOutput::Stdout(message))),
                Ok(bollard::container::LogOutput::StdIn { .. }) => None,
                Err(e) => Some(Err(failed(action.clone(), e))),
            };
            async move { item }
        })
        .boxed()
}

#[cfg(test)]
mod tests {
    use super::*;
    use futures::FutureExt;

    const IMAGE: &str = "clusterctl-busybox:latest";

    /// The host's Docker with the local busybox image, or `None` (the test is then skipped);
    /// pods on a bridge of the test's own (`subnet`: one per test), without firewall rules.
    async fn docker(bridge: &str, subnet: &str) -> Option<DockerRuntime> {
        let rt = DockerRuntime::connect_with(PodNetwork::without_nat(bridge, subnet.parse().unwrap())).await.ok()?;
        rt.image_present(IMAGE).await.ok()?.then_some(rt)
    }

    #[tokio::test]
    async fn a_pods_containers_share_its_sandboxs_address_and_localhost_its_host_port_forwards_and_they_stop_gracefully() {
        // one bridge name for this test: a run killed half-way leaves a bridge that the next run
        // takes over, not a second route to the same subnet
        let Some(rt) = docker("cctsandbox", "100.65.1.0/24").await else {
            eprintln!("skipped: no Docker with {IMAGE}");
            return;
        };
        let files = tempfile::tempdir().unwrap();
        let rt = rt.with_files_dir(files.path());
        let name = format!("clusterctl-test-{}", hex::encode(rand::random::<[u8; 4]>()));
        let test_label = || BTreeMap::from([("io.clusterctl.test".to_string(), name.clone())]);
        let sandbox_spec = SandboxSpec {
            name: format!("{name}-pod"),
            labels: test_label(),
            host_ports: vec![super::super::PortSpec { container_port: 8080, host_port: 0 }],
            hostname: "web-0".into(),
            host_aliases: vec!["web-0.web.shop.svc.cluster.local".into()],
            extra_hosts: vec![("10.9.8.7".into(), vec!["db.local".into()])],
            dns: super::super::PodDns { searches: vec!["shop.svc.cluster.local".into()], options: vec!["ndots:5".into()], ..Default::default() },
        };
        let sandbox = rt.run_sandbox(&sandbox_spec).await.expect("running the sandbox");
        let web = ContainerSpec {
            name: format!("{name}-web"),
            image: IMAGE.into(),
            command: vec!["sh".into(), "-c".into()],
            args: vec!["echo hello-$GREETING; exec httpd -f -p 8080 -h /www".into()],
            env: vec![("GREETING".into(), "world".into())],
            sandbox: Some(sandbox.clone()),
            memory_bytes: Some(32 << 20),
            cpu_millis: Some(200),
            labels: test_label(),
            ..Default::default()
        };
        let side = ContainerSpec { name: format!("{name}-side"), image: IMAGE.into(), command: vec!["sleep".into(), "600".into()], sandbox: Some(sandbox.clone()), labels: test_label(), ..Default::default() };
        let mut ids = vec![sandbox.id.clone()];
        let outcome = std::panic::AssertUnwindSafe(async {
            let id = rt.run(&web).await?;
            ids.push(id.clone());
            let side_id = rt.run(&side).await?;
            ids.push(side_id.clone());
            let info = rt.inspect(&id).await?;
            assert!(info.running);
            assert_eq!(info.labels["io.clusterctl.test"], name);
            assert_eq!(sandbox.ip, "100.65.1.2".parse::<IpAddr>().unwrap(), "the first address of the pod range after its gateway");
            assert_eq!((info.ip, rt.inspect(&side_id).await?.ip), (Some(sandbox.ip), Some(sandbox.ip)), "one address per pod");
            let listed = rt.list("io.clusterctl.test").await?;
            let host_port = listed.iter().find(|c| c.id == sandbox.id).and_then(|c| podnet::parse_ports_label(&c.labels[labels::HOST_PORTS]).first().map(|p| p.1)).expect("the sandbox's host port");
            assert!(listed.iter().find(|c| c.id == sandbox.id).is_some_and(|c| c.is_sandbox()) && !info.is_sandbox());
            // the host port forwards to the pod's address, and the other container reaches the
            // web server on localhost
            let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
            loop {
                use tokio::io::{AsyncReadExt, AsyncWriteExt};
                let answer = async {
                    let mut s = tokio::net::TcpStream::connect(("127.0.0.1", host_port)).await.ok()?;
                    s.write_all(b"GET /nothing HTTP/1.0\r\n\r\n").await.ok()?;
                    let mut out = String::new();
                    s.read_to_string(&mut out).await.ok()?;
                    Some(out)
                }
                .await;
                if answer.as_deref().is_some_and(|a| a.starts_with("HTTP/1.")) {
                    break;
                }
                assert!(tokio::time::Instant::now() < deadline, "nothing answered HTTP on the host port: {answer:?}");
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
            let over_localhost = ["sh".to_string(), "-c".into(), "wget -q -O /dev/null http://127.0.0.1:8080/index.html".into()];
            assert_eq!(rt.exec(&side_id, &over_localhost).await?, 0, "the pod's containers share localhost");
            // the pod's names: its host name, /etc/hosts and the cluster DNS on the range's gateway
            let names = "[ \"$(hostname)\" = web-0 ] && grep -q '^100.65.1.2\tweb-0.web.shop.svc.cluster.local\tweb-0$' /etc/hosts && grep -q '^10.9.8.7\tdb.local$' /etc/hosts && grep -qx 'nameserver 100.65.1.1' /etc/resolv.conf && grep -q '^search shop.svc.cluster.local' /etc/resolv.conf";
            assert_eq!(rt.exec(&side_id, &["sh".into(), "-c".into(), names.into()]).await?, 0, "the pod's host name, hosts and resolv.conf");
            // routed, not bridged: the pod has its address alone and the gateway as its only
            // neighbour, and the node a route to that address on the pod's own link
            let routed = "ip -4 -o addr show dev eth0 | grep -q ' 100.65.1.2/32 ' && ip route | grep -q '^default via 100.65.1.1 dev eth0' && ip route | grep -q '^100.65.1.1 dev eth0'";
            assert_eq!(rt.exec(&side_id, &["sh".into(), "-c".into(), routed.into()]).await?, 0, "the pod's address and routes");
            let host_route = std::process::Command::new("ip").args(["-4", "route", "show", "100.65.1.2/32"]).output().expect("ip route");
            let host_route = String::from_utf8_lossy(&host_route.stdout);
            assert!(host_route.contains(&format!("dev cc{}", &sandbox.id[..12])) && host_route.contains("src 100.65.1.1"), "the node's route to the pod: {host_route}");
            assert_eq!(rt.exec(&id, &["true".into()]).await?, 0);
            assert_eq!(rt.exec(&id, &["false".into()]).await?, 1);
            let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
            while !rt.logs(&id, 10).await?.contains("hello-world") {
                assert!(tokio::time::Instant::now() < deadline, "the container's output never showed hello-world");
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
            assert!(!rt.image_present("clusterctl-test-no-such-image:1").await?);
            let asked = std::time::Instant::now();
            rt.stop(&id, Duration::from_secs(10)).await?;
            assert!(asked.elapsed() < Duration::from_secs(5), "SIGTERM stopped the container, not the grace period's SIGKILL");
            let stopped = rt.inspect(&id).await?;
            assert!(!stopped.running);
            Ok::<_, RuntimeError>(())
        })
        .catch_unwind()
        .await;
        // cleaned up also when an assertion failed
        for id in ids.iter().rev() {
            rt.remove(id).await.expect("removing a container");
        }
        if let Some(net) = rt.network() {
            net.remove().await;
        }
        assert!(!files.path().join(&ids[0]).exists(), "the sandbox's name files go with it");
        match outcome {
            Ok(result) => result.expect("runtime calls"),
            Err(panic) => std::panic::resume_unwind(panic),
        }
        assert!(matches!(rt.inspect(&ids[0]).await, Err(RuntimeError::NotFound(_))));
    }

    #[tokio::test]
    async fn a_missing_image_is_an_error_and_never_pulled() {
        let Some(rt) = docker("cctmissing", "100.65.2.0/24").await else { return };
        let spec = ContainerSpec { name: "clusterctl-test-missing".into(), image: "clusterctl-test-no-such-image:1".into(), ..Default::default() };
        assert!(matches!(rt.run(&spec).await, Err(RuntimeError::ImageNotPresent(_))));
    }
}
