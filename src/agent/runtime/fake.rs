//! An in-memory [`ContainerRuntime`] that records what it is asked and can be told to fail.

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use async_trait::async_trait;

use super::{ContainerInfo, ContainerRuntime, ContainerSpec, RuntimeError, Sandbox, SandboxSpec, labels};

#[derive(Debug, Default)]
struct State {
    images: BTreeSet<String>,
    containers: BTreeMap<String, (ContainerSpec, ContainerInfo)>,
    calls: Vec<String>,
    next_id: u64,
    /// Sandboxes made, for their addresses (`100.64.1.<n>`).
    sandboxes_made: u8,
    /// Operation names ("run", "stop", ...) whose next call fails.
    fail_next: BTreeSet<String>,
    /// Exit code that exec returns, per container id (0 when unset).
    exec_results: HashMap<String, i64>,
    /// What the container has written, per container id.
    logs: HashMap<String, String>,
    /// The `USER` of images (root when unset).
    image_users: HashMap<String, String>,
    /// Images a pull finds, with the user whose credentials it needs (empty: none).
    registry: HashMap<String, String>,
}

/// The fake exec's output: `first`, then what `rest` yields (stdin, once closed).
fn async_stream_echo(
    first: bytes::Bytes,
    rest: impl std::future::Future<Output = bytes::Bytes> + Send + 'static,
) -> futures::stream::BoxStream<'static, Result<super::ExecOutput, RuntimeError>> {
    use futures::StreamExt;
    let head = futures::stream::iter([Ok(super::ExecOutput::Stdout(first))]);
    let tail = futures::stream::once(rest).map(|b| Ok(super::ExecOutput::Stdout(b)));
    head.chain(tail).boxed()
}

/// The fake runtime; clones share one state.
#[derive(Debug, Clone, Default)]
pub struct FakeRuntime {
    state: Arc<Mutex<State>>,
}

impl FakeRuntime {
    /// A runtime that has `images`.
    pub fn with_images(images: &[&str]) -> Self {
        let fake = FakeRuntime::default();
        fake.lock().images = images.iter().map(|s| s.to_string()).collect();
        fake
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Makes `image` pullable, with `user`'s credentials (empty: by anyone).
    pub fn publish(&self, image: &str, user: &str) {
        self.lock().registry.insert(image.into(), user.into());
    }

    /// Makes `image` run as `user`.
    pub fn set_image_user(&self, image: &str, user: &str) {
        self.lock().image_users.insert(image.into(), user.into());
    }

    /// Every call so far, e.g. `run web-1`, `stop <id> 30s`, `remove <id>`.
    pub fn calls(&self) -> Vec<String> {
        self.lock().calls.clone()
    }

    /// The next call of `operation` fails.
    pub fn fail_next(&self, operation: &str) {
        self.lock().fail_next.insert(operation.to_string());
    }

    /// The container's process ends with `code` (as if it crashed or was killed).
    pub fn exit(&self, id: &str, code: i64) {
        if let Some((_, info)) = self.lock().containers.get_mut(id) {
            info.running = false;
            info.exit_code = Some(code);
            info.finished_at = Some("2026-01-01T00:00:01Z".into());
        }
    }

    /// The container's pod address.
    pub fn set_ip(&self, id: &str, ip: std::net::IpAddr) {
        if let Some((_, info)) = self.lock().containers.get_mut(id) {
            info.ip = Some(ip);
        }
    }

    /// What exec (exec probes) returns for the container.
    pub fn set_exec_result(&self, id: &str, code: i64) {
        self.lock().exec_results.insert(id.to_string(), code);
    }

    /// What the container has written (its log stream, whole: the fake ignores the options).
    pub fn set_logs(&self, id: &str, text: &str) {
        self.lock().logs.insert(id.to_string(), text.to_string());
    }

    /// The containers that exist (not the sandboxes), with their specs.
    pub fn containers(&self) -> Vec<(ContainerSpec, ContainerInfo)> {
        self.lock().containers.values().filter(|(_, i)| !i.is_sandbox()).cloned().collect()
    }

    /// The sandboxes that exist.
    pub fn sandboxes(&self) -> Vec<ContainerInfo> {
        self.lock().containers.values().filter(|(_, i)| i.is_sandbox()).map(|(_, i)| i.clone()).collect()
    }

    fn call(&self, operation: &str, text: String) -> Result<(), RuntimeError> {
        let mut s = self.lock();
        s.calls.push(text);
        if s.fail_next.remove(operation) {
            return Err(RuntimeError::Failed { action: operation.to_string(), message: "injected failure".into() });
        }
        Ok(())
    }
}

#[async_trait]
impl ContainerRuntime for FakeRuntime {
    async fn list(&self, label_key: &str) -> Result<Vec<ContainerInfo>, RuntimeError> {
        self.call("list", "list".into())?;
        Ok(self.lock().containers.values().filter(|(_, i)| i.labels.contains_key(label_key)).map(|(_, i)| i.clone()).collect())
    }

    async fn inspect(&self, id: &str) -> Result<ContainerInfo, RuntimeError> {
        self.lock().containers.get(id).map(|(_, i)| i.clone()).ok_or_else(|| RuntimeError::NotFound(id.to_string()))
    }

    async fn image_present(&self, image: &str) -> Result<bool, RuntimeError> {
        Ok(self.lock().images.contains(image))
    }

    async fn image_user(&self, image: &str) -> Result<Option<String>, RuntimeError> {
        let s = self.lock();
        Ok(s.images.contains(image).then(|| s.image_users.get(image).cloned().unwrap_or_default()))
    }

    async fn pull(&self, image: &str, auth: Option<&super::RegistryAuth>) -> Result<(), RuntimeError> {
        self.call("pull", format!("pull {image} {}", auth.map_or("anonymous".to_string(), |a| a.username.clone())))?;
        let mut s = self.lock();
        match s.registry.get(image) {
            Some(user) if user.is_empty() || auth.is_some_and(|a| &a.username == user) => {
                s.images.insert(image.to_string());
                Ok(())
            }
            Some(_) => Err(RuntimeError::PullFailed(format!("Error response from daemon: Head \"https://registry/v2/{image}\": no basic auth credentials"))),
            None => Err(RuntimeError::PullFailed(format!("Error response from daemon: manifest for {image} not found: manifest unknown"))),
        }
    }

    async fn run_sandbox(&self, spec: &SandboxSpec) -> Result<Sandbox, RuntimeError> {
        self.call("run_sandbox", format!("run_sandbox {}", spec.name))?;
        let mut s = self.lock();
        s.next_id += 1;
        s.sandboxes_made = s.sandboxes_made.wrapping_add(1);
        let (id, ip) = (format!("s{}", s.next_id), std::net::IpAddr::from([100, 64, 1, s.sandboxes_made]));
        let mut sandbox_labels = spec.labels.clone();
        sandbox_labels.insert(labels::SANDBOX.into(), "true".into());
        sandbox_labels.insert(labels::POD_IP.into(), ip.to_string());
        let ports: Vec<String> = spec.host_ports.iter().map(|p| format!("{}:{}", p.container_port, p.host_port)).collect();
        sandbox_labels.insert(labels::HOST_PORTS.into(), ports.join(","));
        let info = ContainerInfo { oom_killed: false,
            id: id.clone(),
            image_id: String::new(),
            labels: sandbox_labels,
            running: true,
            exit_code: None,
            started_at: Some("2026-01-01T00:00:00Z".into()),
            finished_at: None,
            ip: Some(ip),
        };
        let as_container = ContainerSpec { name: spec.name.clone(), labels: spec.labels.clone(), ..Default::default() };
        s.containers.insert(id.clone(), (as_container, info));
        Ok(Sandbox { id, ip })
    }

    async fn run(&self, spec: &ContainerSpec) -> Result<String, RuntimeError> {
        self.call("run", format!("run {}", spec.name))?;
        let mut s = self.lock();
        if !s.images.contains(&spec.image) {
            return Err(RuntimeError::ImageNotPresent(spec.image.clone()));
        }
        if let Some(sandbox) = &spec.sandbox
            && !s.containers.get(&sandbox.id).is_some_and(|(_, i)| i.running)
        {
            return Err(RuntimeError::Failed { action: format!("starting container {}", spec.name), message: format!("cannot join the network of {}: not running", sandbox.id) });
        }
        s.next_id += 1;
        let id = format!("c{}", s.next_id);
        let mut container_labels = spec.labels.clone();
        if let Some(sandbox) = &spec.sandbox {
            container_labels.insert(labels::POD_IP.into(), sandbox.ip.to_string());
            container_labels.insert(labels::SANDBOX_ID.into(), sandbox.id.clone());
        }
        let info = ContainerInfo { oom_killed: false,
            id: id.clone(),
            image_id: format!("sha256:{:0>64}", spec.image.len()),
            labels: container_labels,
            running: true,
            exit_code: None,
            // Later containers started later (one second apart), as the current one is chosen by time.
            started_at: Some(format!("2026-01-01T{:02}:{:02}:{:02}Z", s.next_id / 3600 % 24, s.next_id / 60 % 60, s.next_id % 60)),
            finished_at: None,
            ip: spec.sandbox.as_ref().map(|s| s.ip),
        };
        s.containers.insert(id.clone(), (spec.clone(), info));
        Ok(id)
    }

    async fn stop(&self, id: &str, grace: Duration) -> Result<(), RuntimeError> {
        self.call("stop", format!("stop {id} {}s", grace.as_secs()))?;
        if let Some((_, info)) = self.lock().containers.get_mut(id)
            && info.running
        {
            info.running = false;
            info.exit_code = Some(143);
        }
        Ok(())
    }

    async fn remove(&self, id: &str) -> Result<(), RuntimeError> {
        self.call("remove", format!("remove {id}"))?;
        self.lock().containers.remove(id);
        Ok(())
    }

    async fn logs(&self, id: &str, _tail: usize) -> Result<String, RuntimeError> {
        self.call("logs", format!("logs {id}"))?;
        Ok(String::new())
    }

    async fn exec(&self, id: &str, command: &[String]) -> Result<i64, RuntimeError> {
        self.call("exec", format!("exec {id} {}", command.join(" ")))?;
        Ok(self.lock().exec_results.get(id).copied().unwrap_or(0))
    }

    async fn log_stream(&self, id: &str, options: &super::LogOptions) -> Result<super::LogStream, RuntimeError> {
        self.call("log_stream", format!("log_stream {id} {options:?}"))?;
        let text = self.lock().logs.get(id).cloned().unwrap_or_default();
        Ok(Box::pin(futures::stream::iter([Ok(bytes::Bytes::from(text))])))
    }

    /// Echoes: the command's words on stdout, then whatever comes in on stdin; exits with the
    /// container's exec result.
    async fn exec_attached(&self, id: &str, request: &super::ExecRequest) -> Result<super::ExecSession, RuntimeError> {
        self.call("exec_attached", format!("exec_attached {id} {}", request.command.join(" ")))?;
        let (input, mut read) = tokio::io::duplex(1 << 16);
        let words = bytes::Bytes::from(format!("{}\n", request.command.join(" ")));
        let echoed = async_stream_echo(words, async move {
            let mut all = Vec::new();
            let _ = tokio::io::AsyncReadExt::read_to_end(&mut read, &mut all).await;
            bytes::Bytes::from(all)
        });
        Ok(super::ExecSession { exec_id: format!("exec-{id}"), output: echoed, input: Box::pin(input) })
    }

    async fn exec_resize(&self, exec_id: &str, width: u16, height: u16) -> Result<(), RuntimeError> {
        self.call("exec_resize", format!("exec_resize {exec_id} {width}x{height}"))
    }

    /// Prints `attached <id>`, then echoes the input.
    async fn attach(&self, id: &str, _request: &super::ExecRequest) -> Result<super::ExecSession, RuntimeError> {
        self.call("attach", format!("attach {id}"))?;
        let (input, mut read) = tokio::io::duplex(1 << 16);
        let echoed = async_stream_echo(bytes::Bytes::from(format!("attached {id}\n")), async move {
            let mut all = Vec::new();
            let _ = tokio::io::AsyncReadExt::read_to_end(&mut read, &mut all).await;
            bytes::Bytes::from(all)
        });
        Ok(super::ExecSession { exec_id: id.to_string(), output: echoed, input: Box::pin(input) })
    }

    async fn resize(&self, id: &str, width: u16, height: u16) -> Result<(), RuntimeError> {
        self.call("resize", format!("resize {id} {width}x{height}"))
    }

    async fn exec_exit_code(&self, exec_id: &str) -> Result<Option<i64>, RuntimeError> {
        let id = exec_id.trim_start_matches("exec-");
        Ok(Some(self.lock().exec_results.get(id).copied().unwrap_or(0)))
    }
}
