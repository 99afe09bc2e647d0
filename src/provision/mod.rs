//! Plans and converges a cluster's infrastructure, and destroys it.
//!
//! Layout:
//! - [`inventory`]: what the cloud already holds for a cluster, found by its
//!   ownership tag ([`crate::cloud::OWNER_TAG`]) and never from a local file alone;
//! - [`plan`]: the difference between a spec and an inventory, as ordered steps
//!   that `--dry-run` prints and [`converge`] applies;
//! - [`converge`]: applies a plan (instances launched in parallel), then waits
//!   until instances run and the API's targets are registered;
//! - [`destroy`]: deletes everything the cluster owns, in dependency order;
//! - [`iam`]: the nodes' IAM roles (masters', workers'), their least-privilege policies and instance profiles.
//!
//! Everything here talks to a [`crate::cloud::Cloud`], normally a
//! [`crate::cloud::Resilient`], and reports through a [`crate::report::Reporter`].

pub mod converge;
pub mod destroy;
pub mod iam;
pub mod inventory;
pub mod plan;

use std::time::Duration;

use thiserror::Error;

use crate::cloud::{CloudError, Tags, OWNER_TAG, POOL_TAG, ROLE_TAG, SLOT_TAG};
use crate::spec::{ClusterSpec, NodePool, Role};

pub use converge::{converge, register_masters, ConvergeOptions, Converged, Registration};
pub use destroy::{destroy, DestroyReport};
pub use inventory::{discover, Inventory};
pub use plan::{plan, Plan, Step};

/// Errors of planning, converging and destroying.
#[derive(Debug, Error)]
pub enum ProvisionError {
    /// A cloud call failed.
    #[error(transparent)]
    Cloud(#[from] CloudError),
    /// Something did not come up before its deadline.
    #[error("timed out after {waited:?} waiting for {what}: {pending}")]
    Timeout { what: String, waited: Duration, pending: String },
    /// The cloud holds something the spec cannot be reconciled with.
    #[error("{0}")]
    Conflict(String),
    /// Several independent steps failed (e.g. parallel launches).
    #[error("{}", .0.iter().map(|e| e.to_string()).collect::<Vec<_>>().join("; "))]
    Many(Vec<ProvisionError>),
}

/// The role of a network resource inside a cluster, as written in its role tag.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum GroupRole {
    /// Security group of the master instances.
    Masters,
    /// Security group of the worker instances.
    Workers,
    /// Security group of the API load balancer.
    ApiLb,
}

impl GroupRole {
    /// Every role, in creation order.
    pub const ALL: [GroupRole; 3] = [GroupRole::Masters, GroupRole::Workers, GroupRole::ApiLb];

    /// The value of the role tag.
    pub fn tag(self) -> &'static str {
        match self {
            GroupRole::Masters => "masters",
            GroupRole::Workers => "workers",
            GroupRole::ApiLb => "api-lb",
        }
    }

    /// The security group of a pool of this role.
    pub fn of(role: Role) -> GroupRole {
        match role {
            Role::Master => GroupRole::Masters,
            Role::Worker => GroupRole::Workers,
        }
    }
}

/// Names and tags of a cluster's resources, derived from its spec.
pub struct Names<'a> {
    spec: &'a ClusterSpec,
}

impl<'a> Names<'a> {
    /// Names for a spec.
    pub fn new(spec: &'a ClusterSpec) -> Self {
        Names { spec }
    }

    fn cluster(&self) -> &str {
        self.spec.name.as_str()
    }

    /// Tags of a cluster resource with a role and a display name.
    pub fn tags(&self, role: &str, name: &str) -> Tags {
        let mut tags = self.spec.tags.clone();
        tags.insert(OWNER_TAG.into(), self.cluster().into());
        tags.insert(ROLE_TAG.into(), role.into());
        tags.insert("Name".into(), name.into());
        tags
    }

    /// Tags of a network resource whose name is the cluster name plus the role.
    pub fn network_tags(&self, role: &str) -> Tags {
        self.tags(role, &format!("{}-{role}", self.cluster()))
    }

    /// Name of a security group.
    pub fn group_name(&self, role: GroupRole) -> String {
        format!("{}-{}", self.cluster(), role.tag())
    }

    /// Name of the imported key pair.
    pub fn key_pair(&self) -> String {
        format!("clusterctl-{}", self.cluster())
    }

    /// Name of a kind of node's IAM role and of the instance profile that carries it.
    pub fn instance_role(&self, kind: iam::InstanceRole) -> String {
        kind.name(self.cluster())
    }

    /// Name of the API load balancer and of its target group (at most 32 characters by spec validation).
    pub fn api_lb(&self) -> String {
        format!("{}-api", self.cluster())
    }

    /// Display name of an instance.
    pub fn instance_name(&self, pool: &NodePool, slot: u32) -> String {
        format!("{}-{}-{slot}", self.cluster(), pool.name.as_str())
    }

    /// Tags of an instance, set at launch.
    pub fn instance_tags(&self, pool: &NodePool, slot: u32) -> Tags {
        let role = match pool.role {
            Role::Master => "master",
            Role::Worker => "worker",
        };
        let mut tags = self.tags(role, &self.instance_name(pool, slot));
        tags.insert(POOL_TAG.into(), pool.name.as_str().into());
        tags.insert(SLOT_TAG.into(), slot.to_string());
        tags
    }

    /// A launch token that is the same for every retry of one slot's launch in one VPC.
    pub fn client_token(&self, pool: &NodePool, slot: u32, vpc_id: &str, attempt: u32) -> String {
        use sha2::{Digest, Sha256};
        let digest = Sha256::digest(format!("{}/{}/{slot}/{vpc_id}/{attempt}", self.cluster(), pool.name.as_str()));
        format!("clusterctl-{}", &hex::encode(digest)[..40])
    }
}

#[cfg(test)]
mod tests;
