//! [`ContainerRuntime`] on the Docker Engine API (bollard) over the node's local socket.

use std::collections::{BTreeMap, HashMap, HashSet};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use async_trait::async_trait;
use bollard::Docker;
use bollard::exec::{CreateExecOptions, StartExecResults};
use bollard::models::{ContainerCreateBody, HostConfig, PortBinding};
use bollard::query_parameters::{
    CreateContainerOptionsBuilder, ListContainersOptionsBuilder, LogsOptionsBuilder, RemoveContainerOptionsBuilder, StartContainerOptions,
    StopContainerOptionsBuilder,
};
use futures::StreamExt;

use super::{ContainerInfo, ContainerRuntime, ContainerSpec, RuntimeError};

/// The node's Docker daemon.
#[derive(Debug, Clone)]
pub struct DockerRuntime {
    docker: Docker,
    /// What the last inspection of each container said, with the state the listing showed then:
    /// a listing inspects only the containers that are new or changed state. The agent lists at
    /// every pass, and inspecting 30 unchanged containers each time kept the node's dockerd busy
    /// (and an inspection waits for a container that is being started).
    inspected: Arc<Mutex<HashMap<String, (String, ContainerInfo)>>>,
}

fn failed(action: impl Into<String>, e: bollard::errors::Error) -> RuntimeError {
    let action = action.into();
    match e {
        bollard::errors::Error::DockerResponseServerError { status_code: 404, message } => RuntimeError::NotFound(message),
        bollard::errors::Error::DockerResponseServerError { message, .. } => RuntimeError::Failed { action, message },
        other => RuntimeError::Unreachable { action, message: other.to_string() },
    }
}

impl DockerRuntime {
    /// Connects to `/var/run/docker.sock` and agrees on an API version (nodes run Docker 20.10).
    pub async fn connect() -> Result<Self, RuntimeError> {
        let docker = Docker::connect_with_unix_defaults().map_err(|e| failed("connecting to the Docker socket", e))?;
        let docker = docker.negotiate_version().await.map_err(|e| failed("negotiating the Docker API version", e))?;
        Ok(DockerRuntime { docker, inspected: Arc::default() })
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
    let labels = r.config.and_then(|c| c.labels).unwrap_or_default().into_iter().collect();
    let net = r.network_settings.unwrap_or_default();
    let ip = net
        .networks
        .unwrap_or_default()
        .values()
        .filter_map(|n| n.ip_address.as_deref())
        .find(|a| !a.is_empty())
        .and_then(|a| a.parse().ok());
    let mut published = BTreeMap::new();
    for (key, bindings) in net.ports.unwrap_or_default() {
        let Some(cport) = key.split('/').next().and_then(|p| p.parse::<u16>().ok()) else { continue };
        if let Some(hport) = bindings.unwrap_or_default().iter().filter_map(|b| b.host_port.as_deref()?.parse::<u16>().ok()).next() {
            published.insert(cport, hport);
        }
    }
    let zero = |t: Option<String>| t.filter(|s| !s.starts_with("0001-"));
    ContainerInfo {
        id: r.id.unwrap_or_default(),
        labels,
        running: state.running.unwrap_or(false),
        exit_code: state.exit_code,
        started_at: zero(state.started_at),
        finished_at: zero(state.finished_at),
        ip,
        published,
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

    async fn run(&self, spec: &ContainerSpec) -> Result<String, RuntimeError> {
        if !self.image_present(&spec.image).await? {
            return Err(RuntimeError::ImageNotPresent(spec.image.clone()));
        }
        let mut bindings: HashMap<String, Option<Vec<PortBinding>>> = HashMap::new();
        for p in &spec.ports {
            let host_port = p.host_port.map(|h| h.to_string()).unwrap_or_default();
            bindings.insert(format!("{}/tcp", p.container_port), Some(vec![PortBinding { host_ip: None, host_port: Some(host_port) }]));
        }
        let non_empty = |v: &Vec<String>| (!v.is_empty()).then(|| v.clone());
        let body = ContainerCreateBody {
            image: Some(spec.image.clone()),
            entrypoint: non_empty(&spec.command),
            cmd: non_empty(&spec.args),
            env: Some(spec.env.iter().map(|(k, v)| format!("{k}={v}")).collect()),
            working_dir: spec.working_dir.clone(),
            labels: Some(spec.labels.clone().into_iter().collect()),
            exposed_ports: Some(spec.ports.iter().map(|p| format!("{}/tcp", p.container_port)).collect()),
            host_config: Some(HostConfig {
                // docker-init (tini, shipped with Debian's docker.io) as PID 1 passes SIGTERM on,
                // so that a process without a handler (busybox httpd) stops at once, not after
                // the whole grace period.
                init: Some(true),
                port_bindings: Some(bindings),
                nano_cpus: spec.cpu_millis.map(|m| (m * 1_000_000) as i64),
                memory: spec.memory_bytes.map(|b| b as i64),
                ..Default::default()
            }),
            ..Default::default()
        };
        let options = CreateContainerOptionsBuilder::default().name(&spec.name).build();
        let created = self.docker.create_container(Some(options), body).await.map_err(|e| failed(format!("creating container {}", spec.name), e))?;
        self.docker
            .start_container(&created.id, None::<StartContainerOptions>)
            .await
            .map_err(|e| failed(format!("starting container {}", spec.name), e))?;
        Ok(created.id)
    }

    async fn stop(&self, id: &str, grace: Duration) -> Result<(), RuntimeError> {
        let options = StopContainerOptionsBuilder::default().t(grace.as_secs() as i32).build();
        match self.docker.stop_container(id, Some(options)).await {
            Ok(()) => Ok(()),
            // 304: already stopped.
            Err(bollard::errors::Error::DockerResponseServerError { status_code: 304, .. }) => Ok(()),
            Err(e) => Err(failed(format!("stopping container {id}"), e)),
        }
    }

    async fn remove(&self, id: &str) -> Result<(), RuntimeError> {
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

#[cfg(test)]
mod tests {
    use super::*;

    const IMAGE: &str = "clusterctl-busybox:latest";

    /// The host's Docker with the local busybox image, or `None` (the test is then skipped).
    async fn docker() -> Option<DockerRuntime> {
        let rt = DockerRuntime::connect().await.ok()?;
        rt.image_present(IMAGE).await.ok()?.then_some(rt)
    }

    #[tokio::test]
    async fn a_container_runs_with_labels_and_published_ports_answers_exec_and_stops_gracefully() {
        let Some(rt) = docker().await else {
            eprintln!("skipped: no Docker with {IMAGE}");
            return;
        };
        let name = format!("clusterctl-test-{}", hex::encode(rand::random::<[u8; 4]>()));
        let spec = ContainerSpec {
            name: name.clone(),
            image: IMAGE.into(),
            command: vec!["sh".into(), "-c".into()],
            args: vec!["echo hello-$GREETING; exec httpd -f -p 8080 -h /www".into()],
            env: vec![("GREETING".into(), "world".into())],
            ports: vec![super::super::PortSpec { container_port: 8080, host_port: None }],
            memory_bytes: Some(32 << 20),
            cpu_millis: Some(200),
            labels: [("io.clusterctl.test".to_string(), name.clone())].into(),
            ..Default::default()
        };
        let id = rt.run(&spec).await.expect("running the container");
        let outcome = async {
            let info = rt.inspect(&id).await?;
            assert!(info.running);
            assert_eq!(info.labels["io.clusterctl.test"], name);
            let host_port = info.published[&8080];
            assert!(host_port > 0);
            assert!(rt.list("io.clusterctl.test").await?.iter().any(|c| c.id == id));
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
        }
        .await;
        rt.remove(&id).await.expect("removing the container");
        outcome.expect("runtime calls");
        assert!(matches!(rt.inspect(&id).await, Err(RuntimeError::NotFound(_))));
    }

    #[tokio::test]
    async fn a_missing_image_is_an_error_and_never_pulled() {
        let Some(rt) = docker().await else { return };
        let spec = ContainerSpec { name: "clusterctl-test-missing".into(), image: "clusterctl-test-no-such-image:1".into(), ..Default::default() };
        assert!(matches!(rt.run(&spec).await, Err(RuntimeError::ImageNotPresent(_))));
    }
}
