//! `clusterctl logs POD --spec SPEC [-c CONTAINER] [-f] [--tail N]`: a pod container's logs, read
//! on the pod's node over SSH ([`crate::bootstrap::logs`] does that). `-f` streams until
//! interrupted.
//!
//! The spec is needed (not only the cluster name) because reaching a node takes the cloud (its
//! address and console host keys) and the spec's SSH user.

use std::path::PathBuf;

use clap::Args;
use super::{connect, load_spec, Failure, Global};
use crate::api::pod::Pod;
use crate::api::resource::{NODES, PODS};
use crate::api::Node;
use crate::bootstrap::hostkeys::KnownHosts;
use crate::bootstrap::logs::{copy_logs, LogRequest};
use crate::home::ClusterHome;

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

/// Where the logs are: the pod's node and the container whose logs are asked for.
pub fn log_source(pod: &Pod, container: Option<&str>) -> Result<(String, String), PodLogsError> {
    let name = pod.metadata.name.clone();
    let Some(node) = pod.spec.node_name.as_deref().filter(|n| !n.is_empty()) else {
        let why = pod
            .status
            .conditions
            .iter()
            .find(|c| c.condition_type == "PodScheduled")
            .and_then(|c| c.message.as_deref())
            .filter(|m| !m.is_empty())
            .unwrap_or("not bound to a node")
            .to_string();
        return Err(PodLogsError::NotScheduled { pod: name, why });
    };
    let known: Vec<String> = pod.spec.containers.iter().map(|c| c.name.clone()).collect();
    let chosen = match (container, known.as_slice()) {
        (Some(c), _) if known.iter().any(|k| k == c) => c.to_string(),
        (Some(c), _) => return Err(PodLogsError::NoSuchContainer { pod: name, container: c.into(), known }),
        (None, [only]) => only.clone(),
        (None, _) => return Err(PodLogsError::ContainerNotNamed { pod: name, known }),
    };
    Ok((node.to_string(), chosen))
}

/// Runs `logs`.
pub async fn run(global: &Global, args: &LogsArgs) -> Result<(), Failure> {
    let spec = load_spec(&args.spec)?;
    let client = super::get::cluster_client(Some(&args.spec), None)?;
    let pod: Pod = client.get(&PODS, Some(&args.namespace), &args.pod).await.map_err(|e| {
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
    let node: Node = client.get(&NODES, None, &node_name).await.map_err(|e| Failure::Operation(anyhow::anyhow!("reading node {node_name} of pod {}: {e}", args.pod)))?;
    let cloud = connect(global, &spec).await;
    let home = ClusterHome::of(spec.name.as_str());
    let key = home.ssh_key(&spec)?;
    let known = KnownHosts::at(home.dir.join("known_hosts"));
    let request = LogRequest {
        pod: &args.pod,
        pod_uid: &pod.metadata.uid,
        container: &container,
        node: &node_name,
        provider_id: node.spec.provider_id.as_deref().unwrap_or(""),
        follow: args.follow,
        tail: args.tail,
    };
    copy_logs(cloud.as_ref(), &spec, &key.private_path, &known, &request, std::io::stdout()).await.map_err(|e| Failure::Operation(e.into()))
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    fn pod(node: Option<&str>, containers: &[&str]) -> Pod {
        let containers: Vec<serde_json::Value> = containers.iter().map(|c| json!({"name": c, "image": "busybox"})).collect();
        let mut p = json!({"metadata": {"name": "web-1", "uid": "u-1"}, "spec": {"containers": containers},
            "status": {"conditions": [{"type": "PodScheduled", "status": "False", "message": "0/3 nodes are available: 3 Insufficient memory."}]}});
        if let Some(n) = node {
            p["spec"]["nodeName"] = json!(n);
        }
        serde_json::from_value(p).unwrap()
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
}
