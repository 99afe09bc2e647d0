//! `clusterctl logs POD (--spec SPEC | --cluster NAME) [-c CONTAINER] [-f] [--tail N] [-p]
//! [--timestamps] [--since 5m]`: a pod container's logs through the API (the pod's `log`
//! subresource, which the API server reads from the agent of the pod's node). `-f` streams until
//! interrupted.

use std::io::Write;
use std::path::PathBuf;
use std::time::Duration;

use clap::Args;
use futures::StreamExt;

use super::Failure;
use crate::api::pod::Pod;
use crate::api::resource::PODS;

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
    /// The logs of the container's previous run (after a crash or restart).
    #[arg(short = 'p', long)]
    pub previous: bool,
    /// Each line prefixed with the time it was written.
    #[arg(long)]
    pub timestamps: bool,
    /// Only what was written in this last stretch of time (`30s`, `5m`, `1h`).
    #[arg(long, value_parser = super::drain::parse_duration)]
    pub since: Option<Duration>,
    /// The pod's namespace.
    #[arg(short = 'n', long, default_value = "default")]
    pub namespace: String,
    /// The cluster spec (to name the cluster).
    #[arg(long, conflicts_with = "cluster")]
    pub spec: Option<PathBuf>,
    /// The cluster's name (instead of a spec).
    #[arg(long)]
    pub cluster: Option<String>,
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

/// The path of the pod's `log` subresource for `args` and the chosen container.
pub fn log_path(args: &LogsArgs, container: &str) -> String {
    let mut query = url::form_urlencoded::Serializer::new(String::new());
    query.append_pair("container", container);
    if args.follow {
        query.append_pair("follow", "true");
    }
    if let Some(n) = args.tail {
        query.append_pair("tailLines", &n.to_string());
    }
    if args.previous {
        query.append_pair("previous", "true");
    }
    if args.timestamps {
        query.append_pair("timestamps", "true");
    }
    if let Some(since) = args.since {
        query.append_pair("sinceSeconds", &since.as_secs().max(1).to_string());
    }
    format!("{}/log?{}", PODS.object_path(Some(&args.namespace), &args.pod), query.finish())
}

/// Runs `logs`.
pub async fn run(args: &LogsArgs) -> Result<(), Failure> {
    let client = super::get::cluster_client(args.spec.as_ref(), args.cluster.as_ref())?;
    let pod: Pod = client.get(&PODS, Some(&args.namespace), &args.pod).await.map_err(|e| {
        if e.is_not_found() {
            Failure::Operation(anyhow::anyhow!("pod {:?} not found in namespace {}", args.pod, args.namespace))
        } else {
            Failure::Operation(anyhow::anyhow!("reading pod {}: {e}", args.pod))
        }
    })?;
    let (_, container) = log_source(&pod, args.container.as_deref()).map_err(|e| match e {
        PodLogsError::ContainerNotNamed { .. } => Failure::Input(e.into()),
        _ => Failure::Operation(e.into()),
    })?;
    let mut stream = client.get_stream(&log_path(args, &container)).await.map_err(|e| Failure::Operation(anyhow::anyhow!("reading the logs of pod {}: {e}", args.pod)))?;
    let mut out = std::io::stdout().lock();
    while let Some(chunk) = stream.next().await {
        let chunk = chunk.map_err(|e| Failure::Operation(anyhow::anyhow!("reading the logs of pod {}: {e}", args.pod)))?;
        // A closed pipe (`| head`) ends the command quietly.
        if out.write_all(&chunk).and_then(|()| out.flush()).is_err() {
            return Ok(());
        }
    }
    Ok(())
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
    fn the_log_path_carries_every_option() {
        use clap::Parser;
        #[derive(Parser)]
        struct Cli {
            #[command(flatten)]
            args: LogsArgs,
        }
        let cli = Cli::parse_from(["x", "web-1", "--cluster", "demo", "-n", "shop", "-f", "--tail", "5", "-p", "--timestamps", "--since", "2m"]);
        assert_eq!(
            log_path(&cli.args, "httpd"),
            "/api/v1/namespaces/shop/pods/web-1/log?container=httpd&follow=true&tailLines=5&previous=true&timestamps=true&sinceSeconds=120"
        );
        let cli = Cli::parse_from(["x", "web-1", "--spec", "c.toml"]);
        assert_eq!(log_path(&cli.args, "httpd"), "/api/v1/namespaces/default/pods/web-1/log?container=httpd");
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
