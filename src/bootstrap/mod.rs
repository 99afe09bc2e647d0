//! From machines to a cluster over SSH: the operator's `create` and the master's machine
//! controller both bootstrap through here.
//!
//! Layout:
//! - [`hostkeys`]: host keys as cloud-init prints them on the console, fingerprints, and the
//!   trust decision (pinned from the console, else trust on first use);
//! - [`ssh`]: the [`ssh::NodeShell`] trait (a shell on one node) and its real implementation,
//!   SSH sessions on ssh2 run on blocking threads: connect with bounded back-off while a machine
//!   boots, verified host keys, commands through `sudo -n`, checked uploads; [`fake`]: the
//!   recording [`fake::FakeShell`] the unit tests use;
//! - [`templates`]: the install script and systemd units;
//! - [`machines`]: the machines of a converged cluster and what each becomes, connecting to them,
//!   waiting for their nodes;
//! - [`install`]: the node software on one machine (binary, units, config, install script), a
//!   master's own files and the cluster CA's copy;
//! - [`create`]: the create flow (masters, then workers, then every node Ready);
//! - [`join`]: workers joined with a token, upgraded one at a time, or added by the machine
//!   controller;
//! - [`replace`]: a lost master of an HA control plane replaced (etcd membership, CA, install);
//! - [`images`]: image tarballs side-loaded into the nodes' Docker;
//! - [`backup`]: `clusterctl backup`/`restore` from the operator's side (snapshots over SSH);
//!
//! Re-running on an installed cluster changes nothing: uploads are skipped when the node already
//! has identical files, and the install script restarts a service only when something changed.

pub mod backup;
pub mod certs;
pub mod create;
pub mod fake;
pub mod hostkeys;
pub mod images;
pub mod install;
pub mod join;
pub mod machines;
pub mod replace;
pub mod ssh;
pub mod templates;

use std::path::PathBuf;
use std::time::Duration;

use thiserror::Error;

pub use create::{bootstrap, record_pool_size, Bootstrapped};
pub use install::{copy_ca, etcd_settings, install_master, master_cloud_settings, upload_ca, Artifacts, ArtifactsTask, BinaryFetch, ControlPlane, Delivery, MasterInstall, Packing, INSTANCE_CLOUD_ENDPOINT};
pub use join::{add_workers, Join};
pub use machines::{connect, machine, machines, wait_ready, Machine};
pub use replace::{add_master, MasterReplacement};
use ssh::SshError;

/// Where the node software keeps its state on a node.
pub const DATA_DIR: &str = crate::nodeconfig::DEFAULT_DATA_DIR;
/// Where the master keeps the cluster's PKI.
pub const PKI_DIR: &str = crate::nodeconfig::PKI_DIR;
/// Where a node keeps the image tarballs loaded into the cluster (`clusterctl image load`).
pub const IMAGES_DIR: &str = crate::nodeconfig::IMAGES_DIR;

/// Errors of bootstrapping, each naming the node and what was being done.
#[derive(Debug, Error)]
pub enum BootstrapError {
    #[error("{node}: {step}: {source}")]
    Ssh { node: String, step: String, #[source] source: Box<SshError> },
    #[error("{node}: {step}: {message}")]
    Node { node: String, step: String, message: String },
    #[error("{0}")]
    Other(String),
    #[error("{}", .0.iter().map(|e| e.to_string()).collect::<Vec<_>>().join("\n"))]
    Many(Vec<BootstrapError>),
    #[error("timed out after {waited:?} waiting for {what}: {pending}")]
    Timeout { what: String, waited: Duration, pending: String },
}

impl BootstrapError {
    /// Ok when nothing failed; the one error, or all of them, otherwise.
    pub fn all(mut errors: Vec<BootstrapError>) -> Result<(), BootstrapError> {
        match errors.len() {
            0 => Ok(()),
            1 => Err(errors.remove(0)),
            _ => Err(BootstrapError::Many(errors)),
        }
    }
}

/// How bootstrapping runs.
#[derive(Debug, Clone)]
pub struct BootstrapOptions {
    /// The binary to install on the nodes (the running one).
    pub binary: PathBuf,
    /// How long machines may take to accept SSH.
    pub ssh_deadline: Duration,
    /// How long nodes may take to become Ready.
    pub ready_deadline: Duration,
    /// Lifetime of the join token made for new workers.
    pub token_ttl: Duration,
}

impl BootstrapOptions {
    /// Defaults: the running binary (or `$CLUSTERCTL_NODE_BINARY`, another build to roll out),
    /// 5 minutes for SSH and for readiness, 1 hour tokens.
    pub fn new() -> std::io::Result<Self> {
        let binary = match std::env::var_os("CLUSTERCTL_NODE_BINARY") {
            Some(path) => PathBuf::from(path),
            None => std::env::current_exe()?,
        };
        Ok(BootstrapOptions {
            binary,
            ssh_deadline: Duration::from_secs(300),
            ready_deadline: Duration::from_secs(300),
            token_ttl: Duration::from_secs(3600),
        })
    }
}
