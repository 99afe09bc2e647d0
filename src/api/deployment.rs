//! `Deployment` and `ReplicaSet` (apps/v1): a Deployment keeps `replicas` pods of its template
//! running through one ReplicaSet per template revision (label `pod-template-hash`), and rolls
//! from one to the next within `maxSurge`/`maxUnavailable`.

use std::collections::BTreeMap;

use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

use super::meta::{ObjectMeta, UnknownFields};
use super::pod::PodTemplateSpec;
use super::quantity::IntOrString;
use super::resource::{DEPLOYMENTS, REPLICA_SETS, Resource, ResourceType};
use super::time::Time;

/// The label that ties a ReplicaSet and its pods to one template revision.
pub const POD_TEMPLATE_HASH_LABEL: &str = "pod-template-hash";
/// The annotation that numbers a Deployment's ReplicaSets in the order they were made.
pub const REVISION_ANNOTATION: &str = "deployment.kubernetes.io/revision";
/// The earlier revisions a ReplicaSet held (comma-separated), when a rollback made it new again.
pub const REVISION_HISTORY_ANNOTATION: &str = "deployment.kubernetes.io/revision-history";
/// Annotations of a Deployment that are not copied to its ReplicaSets (and that `kubectl rollout
/// undo` keeps on the Deployment): Kubernetes' `annotationsToSkip`.
pub const ANNOTATIONS_NOT_COPIED: &[&str] = &[
    "kubectl.kubernetes.io/last-applied-configuration",
    REVISION_ANNOTATION,
    REVISION_HISTORY_ANNOTATION,
    "deployment.kubernetes.io/desired-replicas",
    "deployment.kubernetes.io/max-replicas",
    "deprecated.deployment.rollback.to",
];

/// Equality-based label selection (`matchLabels`).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct LabelSelector {
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub match_labels: BTreeMap<String, String>,
    #[serde(flatten)]
    #[schemars(skip)]
    pub extra: UnknownFields,
}

impl LabelSelector {
    /// Whether `labels` carry every required label (an empty selector matches nothing, as
    /// Kubernetes' workload controllers treat it).
    pub fn matches(&self, labels: &BTreeMap<String, String>) -> bool {
        !self.match_labels.is_empty() && self.match_labels.iter().all(|(k, v)| labels.get(k) == Some(v))
    }

    /// The selector as a `labelSelector` query value (`a=b,c=d`).
    pub fn to_query(&self) -> String {
        self.match_labels.iter().map(|(k, v)| format!("{k}={v}")).collect::<Vec<_>>().join(",")
    }
}

/// Runs `replicas` copies of a pod template, updating them gradually.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct Deployment {
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub api_version: String,
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub kind: String,
    #[serde(default)]
    pub metadata: ObjectMeta,
    #[serde(default)]
    pub spec: DeploymentSpec,
    #[serde(default)]
    pub status: DeploymentStatus,
    #[serde(flatten)]
    #[schemars(skip)]
    pub extra: UnknownFields,
}

impl Resource for Deployment {
    const TYPE: ResourceType = DEPLOYMENTS;
}

/// What the Deployment wants.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct DeploymentSpec {
    /// Default 1.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub replicas: Option<i32>,
    #[serde(default)]
    pub selector: LabelSelector,
    #[serde(default)]
    pub template: PodTemplateSpec,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub strategy: Option<DeploymentStrategy>,
    /// Seconds a new pod must be ready before it counts as available (default 0).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub min_ready_seconds: Option<i32>,
    /// Old ReplicaSets (scaled to 0) kept for `rollout undo` (default 10).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub revision_history_limit: Option<i32>,
    /// Seconds a rollout may go without progress before `Progressing` turns False with
    /// `ProgressDeadlineExceeded` (default 600).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub progress_deadline_seconds: Option<i32>,
    #[serde(flatten)]
    #[schemars(skip)]
    pub extra: UnknownFields,
}

impl DeploymentSpec {
    /// Old ReplicaSets to keep, 10 when unset.
    pub fn revision_history_limit(&self) -> usize {
        self.revision_history_limit.map_or(10, |l| l.max(0) as usize)
    }

    /// The progress deadline, 600 s when unset.
    pub fn progress_deadline(&self) -> std::time::Duration {
        std::time::Duration::from_secs(self.progress_deadline_seconds.map_or(600, |s| s.max(1) as u64))
    }

    /// The wanted replicas, 1 when unset.
    pub fn replicas(&self) -> u32 {
        self.replicas.map(|r| r.max(0) as u32).unwrap_or(1)
    }

    /// `(maxSurge, maxUnavailable)` as absolute numbers for the wanted replicas; both default to 25%
    /// (surge rounded up, unavailable down) and are never both 0.
    pub fn rolling_limits(&self) -> (u32, u32) {
        let replicas = self.replicas();
        let default = IntOrString::String("25%".into());
        let rolling = self.strategy.as_ref().and_then(|s| s.rolling_update.as_ref());
        let surge = rolling.and_then(|r| r.max_surge.as_ref()).unwrap_or(&default).scaled_value(replicas, true).unwrap_or(1);
        let unavailable =
            rolling.and_then(|r| r.max_unavailable.as_ref()).unwrap_or(&default).scaled_value(replicas, false).unwrap_or(0);
        if surge == 0 && unavailable == 0 { (0, 1) } else { (surge, unavailable) }
    }

    /// Whether old pods are all removed before new ones are made (`type: Recreate`).
    pub fn is_recreate(&self) -> bool {
        self.strategy.as_ref().and_then(|s| s.strategy_type.as_deref()) == Some("Recreate")
    }
}

/// How pods are replaced on a template change.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct DeploymentStrategy {
    /// `RollingUpdate` (default) or `Recreate`.
    #[serde(default, rename = "type", skip_serializing_if = "Option::is_none")]
    #[schemars(extend("enum" = ["Recreate", "RollingUpdate"]))]
    pub strategy_type: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub rolling_update: Option<RollingUpdateDeployment>,
    #[serde(flatten)]
    #[schemars(skip)]
    pub extra: UnknownFields,
}

/// Bounds of a rolling update.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct RollingUpdateDeployment {
    /// Pods above `replicas` allowed during the update (number or percent, default 25%).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_surge: Option<IntOrString>,
    /// Pods below `replicas` allowed to be unavailable (number or percent, default 25%).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_unavailable: Option<IntOrString>,
    #[serde(flatten)]
    #[schemars(skip)]
    pub extra: UnknownFields,
}

/// What the deployment controller observed.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct DeploymentStatus {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub observed_generation: Option<i64>,
    #[serde(default)]
    pub replicas: i32,
    #[serde(default)]
    pub updated_replicas: i32,
    #[serde(default)]
    pub ready_replicas: i32,
    #[serde(default)]
    pub available_replicas: i32,
    #[serde(default)]
    pub unavailable_replicas: i32,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schemars(extend("x-kubernetes-patch-merge-key" = "type", "x-kubernetes-patch-strategy" = "merge", "x-kubernetes-list-type" = "map", "x-kubernetes-list-map-keys" = ["type"]))]
    pub conditions: Vec<DeploymentCondition>,
    #[serde(flatten)]
    #[schemars(skip)]
    pub extra: UnknownFields,
}

/// One condition of a Deployment (`Available`, `Progressing`).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct DeploymentCondition {
    #[serde(rename = "type")]
    pub condition_type: String,
    pub status: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reason: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub message: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_update_time: Option<Time>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_transition_time: Option<Time>,
    #[serde(flatten)]
    #[schemars(skip)]
    pub extra: UnknownFields,
}

/// One condition of a ReplicaSet (`ReplicaFailure`).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct ReplicaSetCondition {
    #[serde(rename = "type")]
    pub condition_type: String,
    pub status: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reason: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub message: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_transition_time: Option<Time>,
    #[serde(flatten)]
    #[schemars(skip)]
    pub extra: UnknownFields,
}

/// Keeps `replicas` pods of one template revision.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct ReplicaSet {
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub api_version: String,
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub kind: String,
    #[serde(default)]
    pub metadata: ObjectMeta,
    #[serde(default)]
    pub spec: ReplicaSetSpec,
    #[serde(default)]
    pub status: ReplicaSetStatus,
    #[serde(flatten)]
    #[schemars(skip)]
    pub extra: UnknownFields,
}

impl Resource for ReplicaSet {
    const TYPE: ResourceType = REPLICA_SETS;
}

/// What the ReplicaSet wants.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct ReplicaSetSpec {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub replicas: Option<i32>,
    #[serde(default)]
    pub selector: LabelSelector,
    #[serde(default)]
    pub template: PodTemplateSpec,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub min_ready_seconds: Option<i32>,
    #[serde(flatten)]
    #[schemars(skip)]
    pub extra: UnknownFields,
}

impl ReplicaSetSpec {
    /// The wanted replicas, 1 when unset.
    pub fn replicas(&self) -> u32 {
        self.replicas.map(|r| r.max(0) as u32).unwrap_or(1)
    }
}

/// What the controller observed of a ReplicaSet's pods.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct ReplicaSetStatus {
    #[serde(default)]
    pub replicas: i32,
    /// Pods whose labels match the template's labels (all of ours: they are made from it).
    #[serde(default)]
    pub fully_labeled_replicas: i32,
    #[serde(default)]
    pub ready_replicas: i32,
    #[serde(default)]
    pub available_replicas: i32,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub observed_generation: Option<i64>,
    /// `ReplicaFailure` (reason `FailedCreate`/`FailedDelete`) while pods cannot be created or deleted.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schemars(extend("x-kubernetes-patch-merge-key" = "type", "x-kubernetes-patch-strategy" = "merge", "x-kubernetes-list-type" = "map", "x-kubernetes-list-map-keys" = ["type"]))]
    pub conditions: Vec<ReplicaSetCondition>,
    #[serde(flatten)]
    #[schemars(skip)]
    pub extra: UnknownFields,
}

#[cfg(test)]
mod tests {
    use super::*;

    fn spec(replicas: i32, surge: Option<IntOrString>, unavailable: Option<IntOrString>) -> DeploymentSpec {
        DeploymentSpec {
            replicas: Some(replicas),
            strategy: Some(DeploymentStrategy {
                strategy_type: None,
                rolling_update: Some(RollingUpdateDeployment { max_surge: surge, max_unavailable: unavailable, ..Default::default() }),
                ..Default::default()
            }),
            ..Default::default()
        }
    }

    #[test]
    fn rolling_limits_default_to_25_percent_surge_up_unavailable_down() {
        assert_eq!(DeploymentSpec { replicas: Some(3), ..Default::default() }.rolling_limits(), (1, 0));
        assert_eq!(DeploymentSpec { replicas: Some(10), ..Default::default() }.rolling_limits(), (3, 2));
        assert_eq!(spec(4, Some(IntOrString::Int(0)), Some(IntOrString::Int(0))).rolling_limits(), (0, 1));
        assert_eq!(spec(4, Some(IntOrString::Int(2)), Some(IntOrString::String("50%".into()))).rolling_limits(), (2, 2));
    }

    #[test]
    fn reads_a_deployment_as_written_in_a_manifest() {
        let d: Deployment = serde_json::from_value(serde_json::json!({
            "apiVersion": "apps/v1", "kind": "Deployment", "metadata": {"name": "web"},
            "spec": {"replicas": 3, "selector": {"matchLabels": {"app": "web"}},
                     "strategy": {"type": "RollingUpdate", "rollingUpdate": {"maxSurge": 1, "maxUnavailable": "0%"}},
                     "template": {"metadata": {"labels": {"app": "web"}}, "spec": {"containers": [{"name": "web", "image": "busybox"}]}}}
        }))
        .unwrap();
        assert_eq!(d.spec.replicas(), 3);
        assert!(d.spec.selector.matches(&d.spec.template.metadata.labels));
        assert_eq!(d.spec.rolling_limits(), (1, 0));
    }
}
