//! `clusterctl logs POD --spec SPEC [-c CONTAINER] [-f] [--tail N]`: a pod container's logs, read
//! where they are: on the pod's node, over SSH with the cluster's key and the node's pinned host key,
//! with `sudo -n docker logs` on the newest container the agent made for that pod and container
//! (found by the agent's labels). `-f` streams until interrupted.
//!
//! The spec is needed (not only the cluster name) because reaching a node takes the cloud (its
//! address and console host keys) and the spec's SSH user.

use std::path::PathBuf;
use std::time::Duration;

use clap::Args;
use serde_json::Value;

use super::{connect, load_spec, Failure, Global};
use crate::agent::runtime::labels;
use crate::api::resource::{NODES, PODS};
use crate::bootstrap::cluster::{self, Machine};
use crate::bootstrap::hostkeys::KnownHosts;
use crate::bootstrap::ssh::shell_quote;
use crate::home::ClusterHome;
use crate::provision::inventory::pool_slot;
use crate::spec::Role;

/// The exit status of the remote command when no container carries the pod's labels.
const NO_CONTAINER: i32 = 97;

/// Arguments of `logs`.
#[derive(Debug, Args)]
pub struct LogsArgs {
    /// The pod's name.
    pub pod: String,
    /// The container (needed when the pod has several).
    #[arg(short = 'c', long)]
    pub container: Option<String>,
    /// Keep printing new output until interrupted.
    #[arg(short = 'f', long)]
    pub follow: bool,
    /// Only the last N lines.
    #[arg(long)]
    pub tail: Option<u32>,
    /// The pod's namespace.
    #[arg(short = 'n', long, default_value = "default")]
    pub namespace: String,
    /// The cluster spec (its SSH user, and the cloud to find the node in).
    #[arg(long)]
    pub spec: PathBuf,
}

/// A problem with the pod that makes logs impossible (before any node is reached).
#[derive(Debug, PartialEq, Eq, thiserror::Error)]
pub enum PodLogsError {
    #[error("pod {pod} is not scheduled yet ({why}), so it has no logs")]
    NotScheduled { pod: String, why: String },
    #[error("container {container:?} is not in pod {pod}; its containers: {}", .known.join(", "))]
    NoSuchContainer { pod: String, container: String, known: Vec<String> },
    #[error("pod {pod} has several containers, name one with -c: {}", .known.join(", "))]
    ContainerNotNamed { pod: String, known: Vec<String> },
}

fn s<'a>(v: &'a Value, pointer: &str) -> &'a str {
    v.pointer(pointer).and_then(Value::as_str).unwrap_or("")
}

/// Where the logs are: the pod's node and the container whose logs are asked for.
pub fn log_source(pod: &Value, container: Option<&str>) -> Result<(String, String), PodLogsError> {
    let name = s(pod, "/metadata/name").to_string();
    let node = s(pod, "/spec/nodeName");
    if node.is_empty() {
        let why = pod
            .pointer("/status/conditions")
            .and_then(Value::as_array)
            .and_then(|cs| cs.iter().find(|c| s(c, "/type") == "PodScheduled"))
            .map(|c| s(c, "/message"))
            .filter(|m| !m.is_empty())
            .unwrap_or("not bound to a node")
            .to_string();
        return Err(PodLogsError::NotScheduled { pod: name, why });
    }
    let known: Vec<String> = pod.pointer("/spec/containers").and_then(Value::as_array).into_iter().flatten().map(|c| s(c, "/name").to_string()).collect();
    let chosen = match (container, known.as_slice()) {
        (Some(c), _) if known.iter().any(|k| k == c) => c.to_string(),
        (Some(c), _) => return Err(PodLogsError::NoSuchContainer { pod: name, container: c.into(), known }),
        (None, [only]) => only.clone(),
        (None, _) => return Err(PodLogsError::ContainerNotNamed { pod: name, known }),
    };
    Ok((node.to_string(), chosen))
}

/// The command run on the node: `docker logs` of the newest container labelled with the pod's uid
/// and the container's name; exits [`NO_CONTAINER`] when there is none.
pub fn docker_logs_command(pod_uid: &str, container: &str, follow: bool, tail: Option<u32>) -> String {
    let filter = |label: &str, value: &str| shell_quote(&format!("label={label}={value}"));
    let mut options = String::new();
    if follow {
        options.push_str(" --follow");
    }
    if let Some(n) = tail {
        options.push_str(&format!(" --tail {n}"));
    }
    let script = format!(
        "id=$(docker ps -a --latest -q --filter {} --filter {}); [ -n \"$id\" ] || exit {NO_CONTAINER}; exec docker logs{options} \"$id\"",
        filter(labels::UID, pod_uid),
        filter(labels::CONTAINER, container),
    );
    format!("sudo -n sh -c {}", shell_quote(&script))
}

/// Runs `logs`.
pub async fn run(global: &Global, args: &LogsArgs) -> Result<(), Failure> {
    let spec = load_spec(&args.spec)?;
    let client = super::get::cluster_client(Some(&args.spec), None)?;
    let pod: Value = client.get(&PODS, Some(&args.namespace), &args.pod).await.map_err(|e| {
        if e.is_not_found() {
            Failure::Operation(anyhow::anyhow!("pod {:?} not found in namespace {}", args.pod, args.namespace))
        } else {
            Failure::Operation(anyhow::anyhow!("reading pod {}: {e}", args.pod))
        }
    })?;
    let (node_name, container) = log_source(&pod, args.container.as_deref()).map_err(|e| match e {
        PodLogsError::ContainerNotNamed { .. } => Failure::Input(e.into()),
        _ => Failure::Operation(e.into()),
    })?;
    let node: Value = client.get(&NODES, None, &node_name).await.map_err(|e| Failure::Operation(anyhow::anyhow!("reading node {node_name} of pod {}: {e}", args.pod)))?;
    let instance_id = s(&node, "/spec/providerID").rsplit('/').next().unwrap_or("").to_string();
    let cloud = connect(global, &spec).await;
    let inventory = crate::provision::discover(cloud.as_ref(), spec.name.as_str())
        .await
        .map_err(|e| Failure::Operation(anyhow::Error::new(e).context(format!("finding the machine of node {node_name}"))))?;
    let instance = inventory
        .instances
        .into_iter()
        .find(|i| !instance_id.is_empty() && i.id == instance_id)
        .ok_or_else(|| Failure::Operation(anyhow::anyhow!("node {node_name} (instance {instance_id:?}) has no running machine in cluster {}", spec.name)))?;
    let pool = pool_slot(&instance).map(|(pool, _)| pool).unwrap_or_default();
    let role = if spec.masters.name.as_str() == pool { Role::Master } else { Role::Worker };
    let machine = Machine { name: node_name.clone(), role, pool, zone: String::new(), instance, labels: Default::default() };
    let home = ClusterHome::of(spec.name.as_str());
    let key = home.ssh_key(&spec)?;
    let known = KnownHosts::at(home.dir.join("known_hosts"));
    let session = cluster::connect(cloud.as_ref(), &machine, &spec.ssh.user, &key.private_path, &known, Duration::from_secs(30))
        .await
        .map_err(|e| Failure::Operation(anyhow::Error::new(e).context(format!("reaching node {node_name} for the logs of pod {}", args.pod))))?;
    let command = docker_logs_command(s(&pod, "/metadata/uid"), &container, args.follow, args.tail);
    let status = tokio::task::spawn_blocking(move || session.stream(&command, &mut std::io::stdout().lock()))
        .await
        .map_err(|e| Failure::Operation(anyhow::anyhow!("reading logs: {e}")))?
        .map_err(|e| Failure::Operation(anyhow::Error::new(e).context(format!("reading the logs of pod {} on node {node_name}", args.pod))))?;
    match status {
        0 => Ok(()),
        NO_CONTAINER => Err(Failure::Operation(anyhow::anyhow!(
            "container {container:?} of pod {} has not been started on node {node_name} yet (no Docker container carries its labels)",
            args.pod
        ))),
        n => Err(Failure::Operation(anyhow::anyhow!("docker logs on node {node_name} exited with status {n}"))),
    }
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    fn pod(node: Option<&str>, containers: &[&str]) -> Value {
        let containers: Vec<Value> = containers.iter().map(|c| json!({"name": c, "image": "busybox"})).collect();
        let mut p = json!({"metadata": {"name": "web-1", "uid": "u-1"}, "spec": {"containers": containers},
            "status": {"conditions": [{"type": "PodScheduled", "status": "False", "message": "0/3 nodes are available: 3 Insufficient memory."}]}});
        if let Some(n) = node {
            p["spec"]["nodeName"] = json!(n);
        }
        p
    }

    #[test]
    fn the_only_container_is_chosen_without_a_name() {
        assert_eq!(log_source(&pod(Some("w1"), &["httpd"]), None), Ok(("w1".into(), "httpd".into())));
        assert_eq!(log_source(&pod(Some("w1"), &["httpd", "side"]), Some("side")), Ok(("w1".into(), "side".into())));
    }

    #[test]
    fn an_unscheduled_pod_says_why_it_has_no_node() {
        let e = log_source(&pod(None, &["httpd"]), None).unwrap_err();
        assert_eq!(e.to_string(), "pod web-1 is not scheduled yet (0/3 nodes are available: 3 Insufficient memory.), so it has no logs");
    }

    #[test]
    fn an_unknown_or_missing_container_name_lists_the_pods_containers() {
        let e = log_source(&pod(Some("w1"), &["httpd"]), Some("nginx")).unwrap_err();
        assert_eq!(e.to_string(), "container \"nginx\" is not in pod web-1; its containers: httpd");
        let e = log_source(&pod(Some("w1"), &["a", "b"]), None).unwrap_err();
        assert_eq!(e, PodLogsError::ContainerNotNamed { pod: "web-1".into(), known: vec!["a".into(), "b".into()] });
    }

    #[test]
    fn the_node_command_reads_the_newest_labelled_container() {
        let cmd = docker_logs_command("u-1", "httpd", true, Some(5));
        assert!(cmd.starts_with("sudo -n sh -c '"), "{cmd}");
        assert!(cmd.contains("docker ps -a --latest -q --filter '\\''label=io.clusterctl.pod.uid=u-1'\\'' --filter '\\''label=io.clusterctl.container.name=httpd'\\''"), "{cmd}");
        assert!(cmd.contains("exec docker logs --follow --tail 5 \"$id\""), "{cmd}");
        assert!(docker_logs_command("u-1", "httpd", false, None).contains("exec docker logs \"$id\""));
    }
}
