//! A pod container's logs, read where they are: on the pod's node, over SSH with the cluster's key
//! and the node's pinned host key, with `sudo -n docker logs` on the newest container the agent
//! made for that pod and container (found by the agent's labels). Following streams the SSH
//! channel (no read timeout) until the reader stops; closing the connection ends the remote
//! `docker logs`. The API has no `log` subresource: the masters cannot reach the agents' Docker.

use std::path::Path;
use std::time::Duration;

use thiserror::Error;

use super::hostkeys::KnownHosts;
use super::machines::{connect, Machine};
use super::ssh::{shell_quote, SshError};
use super::BootstrapError;
use crate::agent::runtime::labels;
use crate::cloud::Cloud;
use crate::provision::inventory::pool_slot;
use crate::provision::ProvisionError;
use crate::spec::{ClusterSpec, Role};

/// The exit status of the remote command when no container carries the pod's labels.
pub const NO_CONTAINER: i32 = 97;

/// How long reaching the node may take.
const CONNECT_DEADLINE: Duration = Duration::from_secs(30);

/// Whose logs to read, and how.
#[derive(Debug, Clone)]
pub struct LogRequest<'a> {
    /// The pod's name, for messages.
    pub pod: &'a str,
    /// The pod's uid (the agent labels its containers with it).
    pub pod_uid: &'a str,
    /// The container's name in the pod.
    pub container: &'a str,
    /// The pod's node.
    pub node: &'a str,
    /// The node's `providerID` (`aws:///<zone>/<instance id>`).
    pub provider_id: &'a str,
    /// Keep reading new output until the connection ends.
    pub follow: bool,
    /// Only the last N lines.
    pub tail: Option<u32>,
}

/// Why the logs could not be read.
#[derive(Debug, Error)]
pub enum LogsError {
    /// The cluster's machines could not be listed.
    #[error("finding the machine of node {node}")]
    Discover { node: String, #[source] source: ProvisionError },
    /// No running machine is the node's instance.
    #[error("node {node} (instance {instance:?}) has no running machine in cluster {cluster}")]
    NoMachine { node: String, instance: String, cluster: String },
    /// The node could not be reached over SSH.
    #[error("reaching node {node} for the logs of pod {pod}")]
    Reach { node: String, pod: String, #[source] source: BootstrapError },
    /// The SSH session broke while reading.
    #[error("reading the logs of pod {pod} on node {node}")]
    Read { node: String, pod: String, #[source] source: SshError },
    /// The blocking reader stopped abnormally.
    #[error("reading logs: {0}")]
    Reader(String),
    /// No Docker container carries the pod's and container's labels.
    #[error("container {container:?} of pod {pod} has not been started on node {node} yet (no Docker container carries its labels)")]
    NotStarted { container: String, pod: String, node: String },
    /// `docker logs` failed on the node.
    #[error("docker logs on node {node} exited with status {status}")]
    Exit { node: String, status: i32 },
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

/// Finds the node's machine, connects to it and copies the container's logs (standard error
/// merged in) to `sink` as they arrive, until `docker logs` ends.
pub async fn copy_logs<W>(cloud: &dyn Cloud, spec: &ClusterSpec, ssh_key: &Path, known: &KnownHosts, request: &LogRequest<'_>, mut sink: W) -> Result<(), LogsError>
where
    W: std::io::Write + Send + 'static,
{
    let node = request.node.to_string();
    let instance_id = request.provider_id.rsplit('/').next().unwrap_or("").to_string();
    let inventory = crate::provision::discover(cloud, spec.name.as_str()).await.map_err(|source| LogsError::Discover { node: node.clone(), source })?;
    let instance = inventory
        .instances
        .into_iter()
        .find(|i| !instance_id.is_empty() && i.id == instance_id)
        .ok_or_else(|| LogsError::NoMachine { node: node.clone(), instance: instance_id.clone(), cluster: spec.name.to_string() })?;
    let pool = pool_slot(&instance).map(|(pool, _)| pool).unwrap_or_default();
    let role = if spec.masters.name.as_str() == pool { Role::Master } else { Role::Worker };
    let machine = Machine { name: node.clone(), role, pool, zone: String::new(), instance, labels: Default::default() };
    let session = connect(cloud, &machine, &spec.ssh.user, ssh_key, known, CONNECT_DEADLINE)
        .await
        .map_err(|source| LogsError::Reach { node: node.clone(), pod: request.pod.to_string(), source })?;
    let command = docker_logs_command(request.pod_uid, request.container, request.follow, request.tail);
    let status = tokio::task::spawn_blocking(move || session.stream(&command, &mut sink))
        .await
        .map_err(|e| LogsError::Reader(e.to_string()))?
        .map_err(|source| LogsError::Read { node: node.clone(), pod: request.pod.to_string(), source })?;
    match status {
        0 => Ok(()),
        NO_CONTAINER => Err(LogsError::NotStarted { container: request.container.to_string(), pod: request.pod.to_string(), node }),
        status => Err(LogsError::Exit { node, status }),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_node_command_reads_the_newest_labelled_container() {
        let cmd = docker_logs_command("u-1", "httpd", true, Some(5));
        assert!(cmd.starts_with("sudo -n sh -c '"), "{cmd}");
        assert!(cmd.contains("docker ps -a --latest -q --filter '\\''label=io.clusterctl.pod.uid=u-1'\\'' --filter '\\''label=io.clusterctl.container.name=httpd'\\''"), "{cmd}");
        assert!(cmd.contains("exec docker logs --follow --tail 5 \"$id\""), "{cmd}");
        assert!(docker_logs_command("u-1", "httpd", false, None).contains("exec docker logs \"$id\""));
    }
}
