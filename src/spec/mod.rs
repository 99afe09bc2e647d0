//! The cluster spec: the TOML file a user writes, checked once here into types that cannot hold
//! invalid values, so that the cloud, SSH and control-loop layers can trust what they are given.
//!
//! The format is documented in `docs/spec.md`; `clusters/localstack.toml` is the full example.
//!
//! Layout:
//! - `raw.rs`: the file as written, every field optional and spanned;
//! - `validate.rs`: raw to [`ClusterSpec`], collecting every problem with its position;
//! - `names.rs`: the checked names ([`ClusterName`], [`Region`], [`Zone`], [`PoolName`]);
//! - `error.rs`: [`SpecError`] and the byte-offset to line:column translation;
//! - `edit.rs`: [`set_pool_count`], changing a pool's size in the file with comments and layout kept.

mod edit;
mod error;
mod names;
mod raw;
mod validate;

#[cfg(test)]
mod tests;

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use ipnet::Ipv4Net;
use serde::{Serialize, Serializer};

pub use edit::{SpecEditError, set_pool_count};
pub use error::SpecError;
pub use names::{CLUSTER_NAME_MAX, ClusterName, POOL_NAME_MAX, PoolName, Region, Zone};

/// A validated cluster spec: the desired shape of one cluster.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct ClusterSpec {
    /// The file the spec was read from (as named by the caller).
    pub source: PathBuf,
    /// The cluster's name, used in every AWS resource name and tag.
    pub name: ClusterName,
    /// The AWS region everything is created in.
    pub region: Region,
    /// The availability zones, in the order written; nodes are spread over them in this order.
    pub zones: Vec<Zone>,
    /// Extra tags put on every resource, besides clusterctl's own.
    pub tags: BTreeMap<String, String>,
    /// The region's RSA certificate of AWS's instance identity signatures (PEM, as AWS publishes
    /// it): with it, a joining machine must prove its identity ([`crate::cloudcontroller::join`]).
    pub instance_identity_certificate: Option<String>,
    /// The VPC, its subnets and who may reach the cluster.
    pub network: Network,
    /// How clusterctl logs into the nodes.
    pub ssh: SshConfig,
    /// The API server's port and load balancer.
    pub api: ApiConfig,
    /// The master pool (named "masters", role [`Role::Master`]).
    pub masters: NodePool,
    /// The worker pools, at least one, in the order written.
    pub workers: Vec<NodePool>,
    /// The snapshots of the store every master keeps.
    pub backups: Backups,
    /// When a node counts as not ready, when its pods move and when its machine is replaced.
    pub health: Health,
    /// Registries whose TLS certificates are signed by a CA of their own, which the nodes trust
    /// for pulls from that registry only.
    pub registries: Vec<TrustedRegistry>,
}

/// `[[registries]]`: a registry (`host` or `host:port`) and the CA (PEM, inline) its certificate
/// chains to; with `mirror_of = "docker.io"` the nodes' Docker also pulls Docker Hub's images
/// through it (a pull-through cache or a copy, answering without credentials).
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct TrustedRegistry {
    pub host: String,
    pub ca: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub mirror_of: Option<String>,
}

/// The one registry Docker takes mirrors for.
pub const MIRRORABLE: &str = "docker.io";

/// `[backups]`: the scheduled snapshots of the cluster's store kept on every master
/// (`clusterctl backup` takes one on demand).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
pub struct Backups {
    /// Minutes between two snapshots, 0 for none (default 60).
    pub snapshot_every_minutes: u32,
    /// How many are kept (default 5).
    pub snapshots_kept: u32,
}

impl Default for Backups {
    fn default() -> Self {
        Backups { snapshot_every_minutes: 60, snapshots_kept: 5 }
    }
}

/// `[health]`: when a node counts as not ready, when its pods are moved, when its machine is
/// replaced. The defaults are Kubernetes' (a 40 s node monitor grace period, a 300 s toleration
/// of `not-ready`/`unreachable`, a 55 % unhealthy-zone threshold).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
pub struct Health {
    /// A node whose lease is older than this is shown not ready (default 40).
    pub node_grace_seconds: u32,
    /// How long pods stay on a node shown not ready before they are deleted, for those that do
    /// not say otherwise with a `tolerationSeconds` (default 300).
    pub eviction_seconds: u32,
    /// No pod is evicted in a zone with no Ready node, or with more than two not-ready nodes
    /// making up at least this share of it; the same share over the whole cluster stops every
    /// eviction (default 55).
    pub unhealthy_zone_percent: u32,
    /// None: a machine is replaced only when the cloud says it failed (status checks, stopped);
    /// Some(s): also when its node stayed not ready for s seconds.
    pub replace_not_ready_after_seconds: Option<u32>,
    /// No machine of a pool is replaced while more than this share of it is unhealthy (default 50).
    pub max_unhealthy_percent: u32,
}

impl Default for Health {
    fn default() -> Self {
        Health { node_grace_seconds: 40, eviction_seconds: 300, unhealthy_zone_percent: 55, replace_not_ready_after_seconds: None, max_unhealthy_percent: 50 }
    }
}

/// The cluster's network: one VPC, one subnet per availability zone.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Network {
    /// The VPC's address block: private, /16 to /24.
    #[serde(serialize_with = "serialize_cidr")]
    pub vpc_cidr: Ipv4Net,
    /// One subnet per zone, in the order of [`ClusterSpec::zones`]; derived when not written.
    pub subnets: Vec<SubnetSpec>,
    /// Who may reach SSH and the API port; never empty.
    #[serde(serialize_with = "serialize_cidrs")]
    pub admin_cidrs: Vec<Ipv4Net>,
    /// The pods' addresses: each node gets a /24 of it (default `100.64.0.0/16`).
    #[serde(serialize_with = "serialize_cidr")]
    pub cluster_cidr: Ipv4Net,
    /// The services' cluster IPs (default `10.96.0.0/16`).
    #[serde(serialize_with = "serialize_cidr")]
    pub service_cidr: Ipv4Net,
}

/// The pods' addresses when the spec does not say: shared address space (RFC 6598), outside the
/// private ranges a VPC must be in.
pub const DEFAULT_CLUSTER_CIDR: &str = "100.64.0.0/16";
/// The services' addresses when the spec does not say (Kubernetes' usual block).
pub const DEFAULT_SERVICE_CIDR: &str = "10.96.0.0/16";

/// One subnet: a block of the VPC in one availability zone.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct SubnetSpec {
    /// The zone the subnet lies in.
    pub zone: Zone,
    /// The subnet's block, inside the VPC's and overlapping no other subnet.
    #[serde(serialize_with = "serialize_cidr")]
    pub cidr: Ipv4Net,
}

/// How clusterctl logs into the nodes.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct SshConfig {
    /// The login user on the node image (Debian's images use "admin").
    pub user: String,
    /// Where the key pair comes from.
    pub key: SshKeySource,
}

/// Where the SSH key pair for the nodes comes from.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum SshKeySource {
    /// clusterctl generates a dedicated ED25519 key for the cluster.
    Generated,
    /// The user's own key pair; both files existed and were readable when the spec was loaded.
    File {
        /// The private key, resolved against the spec file's folder with `~` expanded.
        private: PathBuf,
        /// The public key: the private key's path with ".pub" appended.
        public: PathBuf,
    },
}

/// The API server's endpoint.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct ApiConfig {
    /// The port the API server listens on (never 22, which SSH has).
    pub port: u16,
    /// Whether a network load balancer stands in front of the masters.
    pub load_balancer: bool,
}

/// A group of identical nodes: the masters, or one pool of workers.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct NodePool {
    /// The pool's name: "masters" for the master pool.
    pub name: PoolName,
    /// What the pool's nodes do.
    pub role: Role,
    /// How many nodes: 1 or 3 masters, 0 to 100 workers.
    pub count: u32,
    /// The EC2 instance type, such as "t3.medium".
    pub instance_type: String,
    /// The machine image the nodes boot.
    pub image: ImageRef,
    /// The root disk size in GiB, 8 to 16384.
    pub disk_gb: u32,
    /// Node labels, Kubernetes-shaped.
    pub labels: BTreeMap<String, String>,
}

/// What a node does in the cluster.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Role {
    /// Runs the control plane.
    Master,
    /// Runs pods.
    Worker,
}

/// Which machine image a pool boots.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum ImageRef {
    /// An AMI id such as "ami-0123456789abcdef0".
    Id(String),
    /// The newest image whose name matches `pattern` (AWS wildcards `*` and `?`), optionally only
    /// among images of `owner` (an account id, "self", "amazon" or "aws-marketplace").
    Name {
        /// The name filter, such as "debian-12-amd64-*".
        pattern: String,
        /// The image owner filter.
        owner: Option<String>,
    },
}

impl ClusterSpec {
    /// Reads and validates the spec at `path`.
    pub fn load(path: &Path) -> Result<ClusterSpec, SpecError> {
        let text = std::fs::read_to_string(path).map_err(|source| SpecError::Io {
            path: path.to_path_buf(),
            source,
        })?;
        Self::parse(path, &text)
    }

    /// Validates spec `text`; `source` names the file in errors and is the folder a relative
    /// `ssh.private_key` is resolved against.
    pub fn parse(source: &Path, text: &str) -> Result<ClusterSpec, SpecError> {
        validate::parse(source, text)
    }

    /// Every pool, masters first, then the workers in the order written.
    pub fn pools(&self) -> impl Iterator<Item = &NodePool> {
        std::iter::once(&self.masters).chain(self.workers.iter())
    }

    /// The pool called `name` ("masters" for the master pool).
    pub fn pool(&self, name: &str) -> Option<&NodePool> {
        self.pools().find(|pool| pool.name.as_str() == name)
    }

    /// The subnet a pool's node number `slot` goes in: slots go round the zones in order.
    pub fn subnet_for_slot(&self, slot: u32) -> &SubnetSpec {
        // Validation guarantees at least one zone and exactly one subnet per zone.
        let index = slot as usize % self.network.subnets.len();
        &self.network.subnets[index]
    }
}

fn serialize_cidr<S: Serializer>(cidr: &Ipv4Net, serializer: S) -> Result<S::Ok, S::Error> {
    serializer.collect_str(cidr)
}

fn serialize_cidrs<S: Serializer>(cidrs: &[Ipv4Net], serializer: S) -> Result<S::Ok, S::Error> {
    serializer.collect_seq(cidrs.iter().map(|cidr| cidr.to_string()))
}
