//! Where a pod may and would rather run, beyond `nodeSelector` and tolerations: `affinity` (node
//! affinity, pod affinity and anti-affinity) and `topologySpreadConstraints`, with Kubernetes' field
//! names and matching rules. The scheduler ([`crate::scheduler`]) applies them.

use std::collections::BTreeMap;

use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

use super::meta::UnknownFields;
use super::networkpolicy::Selector;

/// A pod's node affinity, pod affinity and pod anti-affinity.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct Affinity {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub node_affinity: Option<NodeAffinity>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub pod_affinity: Option<PodAffinity>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub pod_anti_affinity: Option<PodAffinity>,
    #[serde(flatten)]
    #[schemars(skip)]
    pub extra: UnknownFields,
}

#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct NodeAffinity {
    /// The node must match one of the terms.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub required_during_scheduling_ignored_during_execution: Option<NodeSelector>,
    /// Each matching term adds its weight to the node's score.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schemars(extend("x-kubernetes-list-type" = "atomic"))]
    pub preferred_during_scheduling_ignored_during_execution: Vec<PreferredSchedulingTerm>,
    #[serde(flatten)]
    #[schemars(skip)]
    pub extra: UnknownFields,
}

/// Terms ORed; an empty list matches no node.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct NodeSelector {
    #[schemars(extend("x-kubernetes-list-type" = "atomic"))]
    pub node_selector_terms: Vec<NodeSelectorTerm>,
    #[serde(flatten)]
    #[schemars(skip)]
    pub extra: UnknownFields,
}

/// Requirements ANDed; a term with none matches no node.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct NodeSelectorTerm {
    /// On the node's labels.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schemars(extend("x-kubernetes-list-type" = "atomic"))]
    pub match_expressions: Vec<NodeSelectorRequirement>,
    /// On the node's fields; only `metadata.name` is supported, as in Kubernetes.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schemars(extend("x-kubernetes-list-type" = "atomic"))]
    pub match_fields: Vec<NodeSelectorRequirement>,
    #[serde(flatten)]
    #[schemars(skip)]
    pub extra: UnknownFields,
}

#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct NodeSelectorRequirement {
    pub key: String,
    #[schemars(extend("enum" = ["DoesNotExist", "Exists", "Gt", "In", "Lt", "NotIn"]))]
    pub operator: String,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schemars(extend("x-kubernetes-list-type" = "atomic"))]
    pub values: Vec<String>,
    #[serde(flatten)]
    #[schemars(skip)]
    pub extra: UnknownFields,
}

#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct PreferredSchedulingTerm {
    /// 1 to 100.
    pub weight: i32,
    pub preference: NodeSelectorTerm,
    #[serde(flatten)]
    #[schemars(skip)]
    pub extra: UnknownFields,
}

/// Pod affinity or anti-affinity (the same shape).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct PodAffinity {
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schemars(extend("x-kubernetes-list-type" = "atomic"))]
    pub required_during_scheduling_ignored_during_execution: Vec<PodAffinityTerm>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schemars(extend("x-kubernetes-list-type" = "atomic"))]
    pub preferred_during_scheduling_ignored_during_execution: Vec<WeightedPodAffinityTerm>,
    #[serde(flatten)]
    #[schemars(skip)]
    pub extra: UnknownFields,
}

/// Pods matching `labelSelector` in `namespaces` (default: the pod's own) on nodes with the same
/// value of the `topologyKey` label.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct PodAffinityTerm {
    /// Absent matches no pod (Kubernetes' rule for a nil selector here).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub label_selector: Option<Selector>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schemars(extend("x-kubernetes-list-type" = "atomic"))]
    pub namespaces: Vec<String>,
    pub topology_key: String,
    #[serde(flatten)]
    #[schemars(skip)]
    pub extra: UnknownFields,
}

impl PodAffinityTerm {
    /// Whether a pod in `namespace` with `labels` is one this term (of a pod in `own_namespace`) names.
    pub fn selects(&self, own_namespace: &str, namespace: &str, labels: &BTreeMap<String, String>) -> bool {
        let in_namespace = if self.namespaces.is_empty() { namespace == own_namespace } else { self.namespaces.iter().any(|n| n == namespace) };
        in_namespace && self.label_selector.as_ref().is_some_and(|s| s.matches(labels))
    }
}

#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct WeightedPodAffinityTerm {
    /// 1 to 100.
    pub weight: i32,
    pub pod_affinity_term: PodAffinityTerm,
    #[serde(flatten)]
    #[schemars(skip)]
    pub extra: UnknownFields,
}

/// At most `maxSkew` more matching pods in one domain of `topologyKey` than in the emptiest.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct TopologySpreadConstraint {
    pub max_skew: i32,
    pub topology_key: String,
    /// `DoNotSchedule` (a filter) or `ScheduleAnyway` (a score).
    #[schemars(extend("enum" = ["DoNotSchedule", "ScheduleAnyway"]))]
    pub when_unsatisfiable: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub label_selector: Option<Selector>,
    #[serde(flatten)]
    #[schemars(skip)]
    pub extra: UnknownFields,
}

impl NodeSelectorTerm {
    /// Whether a node named `name` with `labels` satisfies every requirement (a term without any
    /// matches nothing, as in Kubernetes).
    pub fn matches(&self, name: &str, labels: &BTreeMap<String, String>) -> bool {
        if self.match_expressions.is_empty() && self.match_fields.is_empty() {
            return false;
        }
        self.match_expressions.iter().all(|r| r.matches(labels.get(&r.key).map(String::as_str)))
            && self.match_fields.iter().all(|r| r.key == "metadata.name" && r.matches(Some(name)))
    }
}

impl NodeSelector {
    pub fn matches(&self, name: &str, labels: &BTreeMap<String, String>) -> bool {
        self.node_selector_terms.iter().any(|t| t.matches(name, labels))
    }
}

impl NodeSelectorRequirement {
    /// Whether a label (or field) `value` satisfies this requirement; `Gt`/`Lt` compare integers.
    pub fn matches(&self, value: Option<&str>) -> bool {
        let number = |s: &str| s.parse::<i64>().ok();
        match self.operator.as_str() {
            "In" => value.is_some_and(|v| self.values.iter().any(|x| x == v)),
            "NotIn" => value.is_none_or(|v| !self.values.iter().any(|x| x == v)),
            "Exists" => value.is_some(),
            "DoesNotExist" => value.is_none(),
            "Gt" | "Lt" => {
                let (Some(have), Some(bound)) = (value.and_then(number), self.values.first().and_then(|v| number(v))) else { return false };
                if self.operator == "Gt" { have > bound } else { have < bound }
            }
            _ => false,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn labels(pairs: &[(&str, &str)]) -> BTreeMap<String, String> {
        pairs.iter().map(|(k, v)| (k.to_string(), v.to_string())).collect()
    }

    #[test]
    fn node_selector_terms_are_ored_and_their_requirements_anded() {
        let selector: NodeSelector = serde_json::from_value(json!({"nodeSelectorTerms": [
            {"matchExpressions": [{"key": "zone", "operator": "In", "values": ["a", "b"]}, {"key": "gpu", "operator": "DoesNotExist"}]},
            {"matchFields": [{"key": "metadata.name", "operator": "In", "values": ["special"]}]},
        ]}))
        .unwrap();
        assert!(selector.matches("n1", &labels(&[("zone", "a")])));
        assert!(!selector.matches("n1", &labels(&[("zone", "a"), ("gpu", "1")])));
        assert!(!selector.matches("n1", &labels(&[("zone", "c")])));
        assert!(selector.matches("special", &labels(&[])));
        let empty: NodeSelector = serde_json::from_value(json!({"nodeSelectorTerms": [{}]})).unwrap();
        assert!(!empty.matches("n1", &labels(&[])), "an empty term matches no node");
    }

    #[test]
    fn gt_and_lt_compare_integers_and_fail_on_text() {
        let gt = NodeSelectorRequirement { key: "cores".into(), operator: "Gt".into(), values: vec!["4".into()], ..Default::default() };
        assert!(gt.matches(Some("8")));
        assert!(!gt.matches(Some("4")));
        assert!(!gt.matches(Some("many")));
        assert!(!gt.matches(None));
        let lt = NodeSelectorRequirement { operator: "Lt".into(), ..gt };
        assert!(lt.matches(Some("2")));
    }

    #[test]
    fn an_affinity_term_selects_pods_of_its_own_namespace_unless_it_names_others() {
        let term: PodAffinityTerm = serde_json::from_value(json!({"labelSelector": {"matchLabels": {"app": "db"}}, "topologyKey": "kubernetes.io/hostname"})).unwrap();
        assert!(term.selects("default", "default", &labels(&[("app", "db")])));
        assert!(!term.selects("default", "other", &labels(&[("app", "db")])));
        let named = PodAffinityTerm { namespaces: vec!["other".into()], ..term.clone() };
        assert!(named.selects("default", "other", &labels(&[("app", "db")])));
        let nil = PodAffinityTerm { label_selector: None, ..term };
        assert!(!nil.selects("default", "default", &labels(&[("app", "db")])));
    }
}
