//! `MachinePool` (`clusterctl.io/v1`, cluster-scoped): how many machines a worker pool should have,
//! as recorded by `clusterctl create` and `clusterctl scale`, and what the machine controller last
//! saw and did. One object per worker pool, named after the pool.

use serde::{Deserialize, Serialize};

use super::meta::{ObjectMeta, UnknownFields};
use super::node::NodeCondition;
use super::resource::{Resource, ResourceType, MACHINE_POOLS};

/// A worker pool's desired size and observed state.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct MachinePool {
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub api_version: String,
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub kind: String,
    #[serde(default)]
    pub metadata: ObjectMeta,
    #[serde(default)]
    pub spec: MachinePoolSpec,
    #[serde(default)]
    pub status: MachinePoolStatus,
    #[serde(flatten)]
    pub extra: UnknownFields,
}

/// What the operator asked for.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct MachinePoolSpec {
    /// How many machines the pool keeps.
    pub replicas: u32,
    #[serde(flatten)]
    pub extra: UnknownFields,
}

/// What the machine controller saw at its last pass.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct MachinePoolStatus {
    /// Machines (instances not terminated) of the pool.
    #[serde(default)]
    pub replicas: u32,
    /// Of those, machines whose node is Ready.
    #[serde(default)]
    pub ready_replicas: u32,
    /// `Healthy` (every machine is fine) and `ReplacementBlocked` (too many unhealthy machines to
    /// replace any), with the reason and the machines in the message.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub conditions: Vec<NodeCondition>,
    #[serde(flatten)]
    pub extra: UnknownFields,
}

impl Resource for MachinePool {
    const TYPE: ResourceType = MACHINE_POOLS;
}

impl MachinePool {
    /// A pool object asking for `replicas` machines.
    pub fn new(pool: &str, replicas: u32) -> Self {
        MachinePool {
            api_version: MACHINE_POOLS.api_version(),
            kind: MACHINE_POOLS.kind.into(),
            metadata: ObjectMeta { name: pool.into(), ..ObjectMeta::default() },
            spec: MachinePoolSpec { replicas, ..Default::default() },
            status: MachinePoolStatus::default(),
            ..Default::default()
        }
    }

    /// The condition of a type, if set.
    pub fn condition(&self, condition_type: &str) -> Option<&NodeCondition> {
        self.status.conditions.iter().find(|c| c.condition_type == condition_type)
    }
}
