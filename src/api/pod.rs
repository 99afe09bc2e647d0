//! `Pod` (v1): one or more containers that run together on one node, placed by the scheduler
//! (`spec.nodeName`) and run by that node's agent, which reports `status`.

use std::collections::BTreeMap;
use std::time::Duration;

use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

use super::affinity::{Affinity, TopologySpreadConstraint};
use super::meta::{ObjectMeta, UnknownFields};
use super::quantity::{IntOrString, Quantity, QuantityError};
use super::resource::{PODS, Resource, ResourceType};
use super::time::Time;

/// A group of containers on one node.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct Pod {
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub api_version: String,
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub kind: String,
    #[serde(default)]
    pub metadata: ObjectMeta,
    #[serde(default)]
    pub spec: PodSpec,
    #[serde(default)]
    pub status: PodStatus,
    #[serde(flatten)]
    #[schemars(skip)]
    pub extra: UnknownFields,
}

impl Resource for Pod {
    const TYPE: ResourceType = PODS;
}

/// The pod template of a Deployment or ReplicaSet: metadata (labels) and spec of the pods it makes.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct PodTemplateSpec {
    #[serde(default)]
    pub metadata: ObjectMeta,
    #[serde(default)]
    pub spec: PodSpec,
    #[serde(flatten)]
    #[schemars(skip)]
    pub extra: UnknownFields,
}

/// What the pod should run and where.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct PodSpec {
    #[serde(default)]
    #[schemars(extend("x-kubernetes-patch-merge-key" = "name", "x-kubernetes-patch-strategy" = "merge", "x-kubernetes-list-type" = "map", "x-kubernetes-list-map-keys" = ["name"]))]
    pub containers: Vec<Container>,
    /// Containers run one after the other to completion before `containers` start.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schemars(extend("x-kubernetes-patch-merge-key" = "name", "x-kubernetes-patch-strategy" = "merge", "x-kubernetes-list-type" = "map", "x-kubernetes-list-map-keys" = ["name"]))]
    pub init_containers: Vec<Container>,
    /// Volumes the containers can mount.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schemars(extend("x-kubernetes-patch-merge-key" = "name", "x-kubernetes-patch-strategy" = "merge,retainKeys", "x-kubernetes-list-type" = "map", "x-kubernetes-list-map-keys" = ["name"]))]
    pub volumes: Vec<Volume>,
    /// `Always` (default), `OnFailure` or `Never`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(extend("enum" = ["Always", "Never", "OnFailure"]))]
    pub restart_policy: Option<String>,
    /// The node the pod is bound to; empty until the scheduler binds it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub node_name: Option<String>,
    /// Node labels the pod requires.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub node_selector: BTreeMap<String, String>,
    /// Seconds between SIGTERM and SIGKILL (default 30).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub termination_grace_period_seconds: Option<i64>,
    /// Node taints the pod accepts.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schemars(extend("x-kubernetes-list-type" = "atomic"))]
    pub tolerations: Vec<Toleration>,
    /// `ClusterFirst` (default): the cluster's DNS, then the node's resolvers for other names;
    /// `Default`: the node's resolvers only; `None`: only what `dnsConfig` gives.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(extend("enum" = ["ClusterFirst", "ClusterFirstWithHostNet", "Default", "None"]))]
    pub dns_policy: Option<String>,
    /// Name servers, search domains and options added to what `dnsPolicy` gives.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub dns_config: Option<PodDnsConfig>,
    /// The pod's host name (default: its name).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub hostname: Option<String>,
    /// With `hostname`: the pod is `<hostname>.<subdomain>.<namespace>.svc.<domain>`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub subdomain: Option<String>,
    /// Secrets (`kubernetes.io/dockerconfigjson`) with the registries' credentials for pulls.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schemars(extend("x-kubernetes-patch-merge-key" = "name", "x-kubernetes-patch-strategy" = "merge", "x-kubernetes-list-type" = "map", "x-kubernetes-list-map-keys" = ["name"]))]
    pub image_pull_secrets: Vec<LocalObjectReference>,
    /// Defaults for every container's security context, and the group volumes are given to.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub security_context: Option<PodSecurityContext>,
    /// Node affinity and pod (anti-)affinity, applied by the scheduler.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub affinity: Option<Affinity>,
    /// How the pod's replicas spread over zones or nodes, applied by the scheduler.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schemars(extend("x-kubernetes-patch-merge-key" = "topologyKey", "x-kubernetes-patch-strategy" = "merge", "x-kubernetes-list-type" = "map", "x-kubernetes-list-map-keys" = ["topologyKey", "whenUnsatisfiable"]))]
    pub topology_spread_constraints: Vec<TopologySpreadConstraint>,
    /// The scheduler that places the pod; the cluster's own is `default-scheduler` (the default),
    /// a pod naming another stays unbound until that scheduler binds it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub scheduler_name: Option<String>,
    /// Seconds from the pod's start after which its node stops it (phase `Failed`, reason
    /// `DeadlineExceeded`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub active_deadline_seconds: Option<i64>,
    /// Extra lines of the pod's `/etc/hosts`.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schemars(extend("x-kubernetes-patch-merge-key" = "ip", "x-kubernetes-patch-strategy" = "merge", "x-kubernetes-list-type" = "map", "x-kubernetes-list-map-keys" = ["ip"]))]
    pub host_aliases: Vec<HostAlias>,
    // Kubernetes fields this cluster stores (so they survive every copy and round trip) but does
    // not act on; a write that sets one is answered with a `Warning` naming it ([`PodSpec::not_acted_on`]).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub service_account_name: Option<String>,
    /// Deprecated alias of `serviceAccountName`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub service_account: Option<String>,
    /// No service account token is mounted in any pod; `false` says so, `true` is not acted on.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub automount_service_account_token: Option<bool>,
    /// Service environment variables are not injected; `false` says so, `true` is not acted on.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub enable_service_links: Option<bool>,
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub host_network: bool,
    #[serde(default, skip_serializing_if = "std::ops::Not::not", rename = "hostPID")]
    pub host_pid: bool,
    #[serde(default, skip_serializing_if = "std::ops::Not::not", rename = "hostIPC")]
    pub host_ipc: bool,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub share_process_namespace: Option<bool>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub priority_class_name: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub priority: Option<i32>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub preemption_policy: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub runtime_class_name: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none", rename = "setHostnameAsFQDN")]
    pub set_hostname_as_fqdn: Option<bool>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub host_users: Option<bool>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub readiness_gates: Option<serde_json::Value>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub os: Option<serde_json::Value>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub overhead: Option<serde_json::Value>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub scheduling_gates: Option<serde_json::Value>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub resource_claims: Option<serde_json::Value>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub resources: Option<serde_json::Value>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ephemeral_containers: Option<serde_json::Value>,
    #[serde(flatten)]
    #[schemars(skip)]
    pub extra: UnknownFields,
}

/// One `/etc/hosts` line: `ip` and its names.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct HostAlias {
    pub ip: String,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schemars(extend("x-kubernetes-list-type" = "atomic"))]
    pub hostnames: Vec<String>,
    #[serde(flatten)]
    #[schemars(skip)]
    pub extra: UnknownFields,
}

/// The scheduler's name in `schedulerName`.
pub const DEFAULT_SCHEDULER: &str = "default-scheduler";

/// The media type that asks the API server for pods in their network view (ours, not
/// Kubernetes'): only name, namespace, uid, labels, `spec.nodeName`, the containers' names and
/// ports, `status.phase`, `podIP` and `podIPs`. The only way a node reads pods not bound to it.
pub const POD_NETWORK_ACCEPT: &str = "application/json;as=PodNetwork;v=v1;g=clusterctl.io";

impl PodSpec {
    /// The Kubernetes fields set here that this cluster stores but does not act on, each with what
    /// happens instead; the API server answers a write that sets one with a `Warning` per field.
    pub fn not_acted_on(&self) -> Vec<(&'static str, &'static str)> {
        let mut out = Vec::new();
        let mut note = |set: bool, field: &'static str, what: &'static str| {
            if set {
                out.push((field, what));
            }
        };
        let account = self.service_account_name.as_deref().or(self.service_account.as_deref());
        note(account.is_some_and(|a| a != "default"), "serviceAccountName", "service accounts are not modelled; the pod runs without a token");
        note(self.automount_service_account_token == Some(true), "automountServiceAccountToken", "no service account token is mounted");
        note(self.enable_service_links == Some(true), "enableServiceLinks", "service environment variables are not injected; use the cluster DNS");
        note(self.host_network, "hostNetwork", "the pod gets its own network namespace and pod IP");
        note(self.host_pid, "hostPID", "the pod gets its own PID namespace");
        note(self.host_ipc, "hostIPC", "the pod gets its own IPC namespace");
        note(self.share_process_namespace == Some(true), "shareProcessNamespace", "each container has its own PID namespace");
        note(self.priority_class_name.is_some() || self.priority.is_some(), "priorityClassName", "pods are scheduled in arrival order without preemption");
        note(self.preemption_policy.is_some(), "preemptionPolicy", "there is no preemption");
        note(self.runtime_class_name.is_some(), "runtimeClassName", "every pod runs on the node's one runtime");
        note(self.set_hostname_as_fqdn == Some(true), "setHostnameAsFQDN", "the host name stays the short name");
        note(self.host_users == Some(false), "hostUsers", "user namespaces are not used");
        note(self.readiness_gates.is_some(), "readinessGates", "readiness follows the containers only");
        note(self.os.is_some(), "os", "every node runs Linux");
        note(self.overhead.is_some(), "overhead", "no pod overhead is accounted");
        note(self.scheduling_gates.is_some(), "schedulingGates", "the pod is scheduled at once");
        note(self.resource_claims.is_some(), "resourceClaims", "dynamic resource allocation is not modelled");
        note(self.resources.is_some(), "resources", "pod-level resources are not applied; set them per container");
        note(self.ephemeral_containers.is_some(), "ephemeralContainers", "ephemeral containers are not run");
        out
    }
}

/// A pod's own additions to its `/etc/resolv.conf`.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct PodDnsConfig {
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schemars(extend("x-kubernetes-list-type" = "atomic"))]
    pub nameservers: Vec<String>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schemars(extend("x-kubernetes-list-type" = "atomic"))]
    pub searches: Vec<String>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schemars(extend("x-kubernetes-list-type" = "atomic"))]
    pub options: Vec<PodDnsConfigOption>,
    #[serde(flatten)]
    #[schemars(skip)]
    pub extra: UnknownFields,
}

/// One `options` entry of `/etc/resolv.conf` (`ndots:5`).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct PodDnsConfigOption {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub name: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub value: Option<String>,
    #[serde(flatten)]
    #[schemars(skip)]
    pub extra: UnknownFields,
}

/// Lets a pod onto nodes with a matching taint.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct Toleration {
    /// Empty with `operator: Exists` matches every key.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub key: Option<String>,
    /// `Equal` (default) or `Exists`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(extend("enum" = ["Equal", "Exists"]))]
    pub operator: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub value: Option<String>,
    /// Empty matches every effect.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub effect: Option<String>,
    /// For a `NoExecute` taint: how long the pod stays once the taint is there (none: for ever).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub toleration_seconds: Option<i64>,
    #[serde(flatten)]
    #[schemars(skip)]
    pub extra: UnknownFields,
}

impl Toleration {
    /// Whether this toleration matches a taint `(key, value, effect)`.
    pub fn tolerates(&self, key: &str, value: Option<&str>, effect: &str) -> bool {
        let effect_ok = self.effect.as_deref().is_none_or(|e| e.is_empty() || e == effect);
        let key_ok = match self.key.as_deref().filter(|k| !k.is_empty()) {
            None => self.operator.as_deref() == Some("Exists"),
            Some(k) => k == key,
        };
        let value_ok = self.operator.as_deref() == Some("Exists") || self.value.as_deref().unwrap_or("") == value.unwrap_or("");
        effect_ok && key_ok && value_ok
    }
}

/// The restart policy when none is given.
pub const DEFAULT_RESTART_POLICY: &str = "Always";
/// The grace period when none is given.
pub const DEFAULT_TERMINATION_GRACE_SECONDS: i64 = 30;

impl PodSpec {
    /// The restart policy, `Always` when unset.
    pub fn restart_policy(&self) -> &str {
        self.restart_policy.as_deref().unwrap_or(DEFAULT_RESTART_POLICY)
    }

    /// The node the pod is bound to, `None` when unbound.
    pub fn bound_node(&self) -> Option<&str> {
        self.node_name.as_deref().filter(|n| !n.is_empty())
    }

    /// Sum of the containers' requests (a container's limit counts when it requests nothing, as in
    /// Kubernetes).
    pub fn requests(&self) -> Result<ResourceAmounts, QuantityError> {
        let mut total = ResourceAmounts::default();
        for c in &self.containers {
            total = total.plus(c.resources.effective_requests()?);
        }
        Ok(total)
    }

    /// The pod's quality-of-service class, as Kubernetes derives it: `Guaranteed` when every
    /// container limits CPU and memory and requests (if any) equal the limits, `BestEffort` when
    /// none requests or limits anything, else `Burstable`.
    pub fn qos_class(&self) -> &'static str {
        let all: Vec<&Container> = self.containers.iter().chain(&self.init_containers).collect();
        let set = |c: &Container| ["cpu", "memory"].iter().any(|r| c.resources.requests.contains_key(*r) || c.resources.limits.contains_key(*r));
        if !all.iter().any(|c| set(c)) {
            return "BestEffort";
        }
        let guaranteed = all.iter().all(|c| {
            ["cpu", "memory"].iter().all(|r| match c.resources.limits.get(*r) {
                Some(limit) => c.resources.requests.get(*r).is_none_or(|req| {
                    let amount = |q: &Quantity| if *r == "cpu" { q.millicores().ok() } else { q.bytes().ok() };
                    amount(req).is_some() && amount(req) == amount(limit)
                }),
                None => false,
            })
        });
        if guaranteed { "Guaranteed" } else { "Burstable" }
    }

    /// The init containers that are sidecars (`restartPolicy: Always`).
    pub fn is_sidecar(container: &Container) -> bool {
        container.restart_policy.as_deref() == Some("Always")
    }

    /// The ConfigMaps and the Secrets (by name, in the pod's namespace) the pod reads: through its
    /// containers' `env` and `envFrom` (init containers too) and its volumes. What a node may read
    /// for the pods bound to it (the node authorizer), and what the node's agent fetches.
    pub fn referenced(&self) -> (std::collections::BTreeSet<String>, std::collections::BTreeSet<String>) {
        let (mut config_maps, mut secrets) = (std::collections::BTreeSet::new(), std::collections::BTreeSet::new());
        for c in self.containers.iter().chain(&self.init_containers) {
            for from in &c.env_from {
                if let Some(r) = &from.config_map_ref {
                    config_maps.insert(r.name.clone());
                }
                if let Some(r) = &from.secret_ref {
                    secrets.insert(r.name.clone());
                }
            }
            for source in c.env.iter().filter_map(|e| e.value_from.as_ref()) {
                if let Some(r) = &source.config_map_key_ref {
                    config_maps.insert(r.name.clone());
                }
                if let Some(r) = &source.secret_key_ref {
                    secrets.insert(r.name.clone());
                }
            }
        }
        secrets.extend(self.image_pull_secrets.iter().map(|r| r.name.clone()));
        for v in &self.volumes {
            if let Some(c) = &v.config_map {
                config_maps.insert(c.name.clone());
            }
            if let Some(name) = v.secret.as_ref().and_then(|s| s.secret_name.clone()) {
                secrets.insert(name);
            }
            for p in v.projected.iter().flat_map(|p| &p.sources) {
                if let Some(c) = &p.config_map {
                    config_maps.insert(c.name.clone());
                }
                if let Some(s) = &p.secret {
                    secrets.insert(s.name.clone());
                }
            }
        }
        (config_maps, secrets)
    }

    /// The host ports the pod's containers take, with their protocol.
    pub fn host_ports(&self) -> Vec<(u16, String)> {
        self.containers
            .iter()
            .flat_map(|c| c.ports.iter())
            .filter_map(|p| Some((u16::try_from(p.host_port?).ok().filter(|p| *p > 0)?, p.protocol().to_string())))
            .collect()
    }
}

/// CPU and memory as numbers.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct ResourceAmounts {
    pub cpu_millis: u64,
    pub memory_bytes: u64,
}

impl ResourceAmounts {
    /// The sum of two amounts.
    pub fn plus(self, other: ResourceAmounts) -> Self {
        ResourceAmounts {
            cpu_millis: self.cpu_millis.saturating_add(other.cpu_millis),
            memory_bytes: self.memory_bytes.saturating_add(other.memory_bytes),
        }
    }

    /// `cpu` and `memory` read from a map such as a node's `allocatable`; absent keys count 0.
    pub fn from_map(map: &BTreeMap<String, Quantity>) -> Result<Self, QuantityError> {
        Ok(ResourceAmounts {
            cpu_millis: map.get("cpu").map(Quantity::millicores).transpose()?.unwrap_or(0),
            memory_bytes: map.get("memory").map(Quantity::bytes).transpose()?.unwrap_or(0),
        })
    }
}

/// One container of a pod.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct Container {
    pub name: String,
    #[serde(default)]
    pub image: String,
    /// Replaces the image's entrypoint.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schemars(extend("x-kubernetes-list-type" = "atomic"))]
    pub command: Vec<String>,
    /// Replaces the image's command.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schemars(extend("x-kubernetes-list-type" = "atomic"))]
    pub args: Vec<String>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schemars(extend("x-kubernetes-patch-merge-key" = "name", "x-kubernetes-patch-strategy" = "merge", "x-kubernetes-list-type" = "map", "x-kubernetes-list-map-keys" = ["name"]))]
    pub env: Vec<EnvVar>,
    /// Whole ConfigMaps and Secrets as environment variables (`env` wins over them).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schemars(extend("x-kubernetes-list-type" = "atomic"))]
    pub env_from: Vec<EnvFromSource>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub working_dir: Option<String>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schemars(extend("x-kubernetes-patch-merge-key" = "containerPort", "x-kubernetes-patch-strategy" = "merge", "x-kubernetes-list-type" = "map", "x-kubernetes-list-map-keys" = ["containerPort", "protocol"]))]
    pub ports: Vec<ContainerPort>,
    /// Where the pod's volumes appear in the container.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schemars(extend("x-kubernetes-patch-merge-key" = "mountPath", "x-kubernetes-patch-strategy" = "merge", "x-kubernetes-list-type" = "map", "x-kubernetes-list-map-keys" = ["mountPath"]))]
    pub volume_mounts: Vec<VolumeMount>,
    #[serde(default, skip_serializing_if = "ResourceRequirements::is_empty")]
    pub resources: ResourceRequirements,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub liveness_probe: Option<Probe>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub readiness_probe: Option<Probe>,
    /// Until it passes, liveness and readiness wait; failing it restarts the container.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub startup_probe: Option<Probe>,
    /// Handlers run after the container starts and before it is stopped.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub lifecycle: Option<Lifecycle>,
    /// The file the container may write why it ended to (default `/dev/termination-log`),
    /// reported as its terminated state's `message`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub termination_message_path: Option<String>,
    /// `File` (default) or `FallbackToLogsOnError`: the end of its log when it failed without a message.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(extend("enum" = ["File", "FallbackToLogsOnError"]))]
    pub termination_message_policy: Option<String>,
    /// `IfNotPresent` or `Never` (images are never pulled implicitly here); `Always` is accepted
    /// and treated like `IfNotPresent`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(extend("enum" = ["Always", "IfNotPresent", "Never"]))]
    pub image_pull_policy: Option<String>,
    /// The user, groups, capabilities and privileges the container runs with.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub security_context: Option<SecurityContext>,
    /// Only on an init container, only `Always`: a sidecar, started before the app containers and
    /// kept running (restarted) beside them.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(extend("enum" = ["Always"]))]
    pub restart_policy: Option<String>,
    /// The container gets a stdin that `attach -i` writes to (else it reads end-of-file).
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub stdin: bool,
    /// Stdin closes when the first attached client detaches (the container then reads end-of-file).
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub stdin_once: bool,
    /// The container gets a terminal (with `stdin`, what `kubectl run -it` asks for).
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub tty: bool,
    #[serde(flatten)]
    #[schemars(skip)]
    pub extra: UnknownFields,
}

/// One address of a pod.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct PodIp {
    pub ip: String,
    #[serde(flatten)]
    #[schemars(skip)]
    pub extra: UnknownFields,
}

/// A named volume of a pod and its source. The sources the agent makes are typed; any other
/// (`persistentVolumeClaim`, `nfs`, ...) is kept as given, and a pod using one does not start (its
/// container waits with `CreateContainerConfigError` naming the volume).
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
#[schemars(extend("x-kubernetes-preserve-unknown-fields" = true))]
pub struct Volume {
    pub name: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub empty_dir: Option<EmptyDirVolumeSource>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub config_map: Option<ConfigMapVolumeSource>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub secret: Option<SecretVolumeSource>,
    #[serde(default, rename = "downwardAPI", skip_serializing_if = "Option::is_none")]
    #[schemars(rename = "downwardAPI")]
    pub downward_api: Option<DownwardApiVolumeSource>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub projected: Option<ProjectedVolumeSource>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub host_path: Option<HostPathVolumeSource>,
    #[serde(flatten)]
    #[schemars(skip)]
    pub extra: UnknownFields,
}

/// A directory that lives as long as its pod: on the node's disk, or in memory (`medium: Memory`, a
/// tmpfs of at most `sizeLimit`).
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct EmptyDirVolumeSource {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(extend("enum" = ["", "Memory"]))]
    pub medium: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub size_limit: Option<Quantity>,
    #[serde(flatten)]
    #[schemars(skip)]
    pub extra: UnknownFields,
}

/// One key of a ConfigMap or Secret written to a file at `path` (relative) with `mode`.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct KeyToPath {
    pub key: String,
    pub path: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub mode: Option<i32>,
    #[serde(flatten)]
    #[schemars(skip)]
    pub extra: UnknownFields,
}

/// The seccomp profile a container runs under: `RuntimeDefault` (the runtime's default filter),
/// `Unconfined` or `Localhost` (a profile file on the node).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct SeccompProfile {
    #[serde(rename = "type")]
    #[schemars(rename = "type", extend("enum" = ["RuntimeDefault", "Unconfined", "Localhost"]))]
    pub profile_type: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub localhost_profile: Option<String>,
    #[serde(flatten)]
    #[schemars(skip)]
    pub extra: UnknownFields,
}

/// Capabilities added to and dropped from the runtime's default set.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct Capabilities {
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schemars(extend("x-kubernetes-list-type" = "atomic"))]
    pub add: Vec<String>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schemars(extend("x-kubernetes-list-type" = "atomic"))]
    pub drop: Vec<String>,
    #[serde(flatten)]
    #[schemars(skip)]
    pub extra: UnknownFields,
}

/// A container's security settings (its fields win over the pod's).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct SecurityContext {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub run_as_user: Option<i64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub run_as_group: Option<i64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub run_as_non_root: Option<bool>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub read_only_root_filesystem: Option<bool>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub allow_privilege_escalation: Option<bool>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub privileged: Option<bool>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub capabilities: Option<Capabilities>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub seccomp_profile: Option<SeccompProfile>,
    #[serde(flatten)]
    #[schemars(skip)]
    pub extra: UnknownFields,
}

/// The pod's security settings: defaults for its containers, and `fsGroup`, the group that owns
/// its volumes and that every container has.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct PodSecurityContext {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub run_as_user: Option<i64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub run_as_group: Option<i64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub run_as_non_root: Option<bool>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub fs_group: Option<i64>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schemars(extend("x-kubernetes-list-type" = "atomic"))]
    pub supplemental_groups: Vec<i64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub seccomp_profile: Option<SeccompProfile>,
    #[serde(flatten)]
    #[schemars(skip)]
    pub extra: UnknownFields,
}

/// A container's effective security settings: its own, else the pod's.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct EffectiveSecurity {
    pub run_as_user: Option<i64>,
    pub run_as_group: Option<i64>,
    pub run_as_non_root: bool,
    pub read_only_root_filesystem: bool,
    /// `None`: not set (the runtime's default, which allows it unless `no_new_privileges`).
    pub allow_privilege_escalation: Option<bool>,
    pub privileged: bool,
    pub add: Vec<String>,
    pub drop: Vec<String>,
    pub seccomp: Option<SeccompProfile>,
    /// `fsGroup` and the supplemental groups.
    pub groups: Vec<i64>,
}

impl PodSpec {
    /// `container`'s security settings with the pod's filled in.
    pub fn security_of(&self, container: &Container) -> EffectiveSecurity {
        let pod = self.security_context.clone().unwrap_or_default();
        let own = container.security_context.clone().unwrap_or_default();
        let caps = own.capabilities.unwrap_or_default();
        EffectiveSecurity {
            run_as_user: own.run_as_user.or(pod.run_as_user),
            run_as_group: own.run_as_group.or(pod.run_as_group),
            run_as_non_root: own.run_as_non_root.or(pod.run_as_non_root).unwrap_or(false),
            read_only_root_filesystem: own.read_only_root_filesystem.unwrap_or(false),
            allow_privilege_escalation: own.allow_privilege_escalation,
            privileged: own.privileged.unwrap_or(false),
            add: caps.add,
            drop: caps.drop,
            seccomp: own.seccomp_profile.or(pod.seccomp_profile),
            groups: pod.fs_group.into_iter().chain(pod.supplemental_groups).collect(),
        }
    }
}

/// An object of the same namespace, by name.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct LocalObjectReference {
    #[serde(default)]
    pub name: String,
    #[serde(flatten)]
    #[schemars(skip)]
    pub extra: UnknownFields,
}

/// `postStart` and `preStop` handlers.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct Lifecycle {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub post_start: Option<LifecycleHandler>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub pre_stop: Option<LifecycleHandler>,
    #[serde(flatten)]
    #[schemars(skip)]
    pub extra: UnknownFields,
}

/// One lifecycle handler: a command in the container, an HTTP GET, a TCP connect, or a pause.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct LifecycleHandler {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub exec: Option<ExecAction>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub http_get: Option<HttpGetAction>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tcp_socket: Option<TcpSocketAction>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub sleep: Option<SleepAction>,
    #[serde(flatten)]
    #[schemars(skip)]
    pub extra: UnknownFields,
}

/// A pause of `seconds`.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct SleepAction {
    pub seconds: i64,
    #[serde(flatten)]
    #[schemars(skip)]
    pub extra: UnknownFields,
}

/// A ConfigMap's keys as files (every key, or only `items`).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct ConfigMapVolumeSource {
    #[serde(default)]
    pub name: String,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schemars(extend("x-kubernetes-list-type" = "atomic"))]
    pub items: Vec<KeyToPath>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub default_mode: Option<i32>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub optional: Option<bool>,
    #[serde(flatten)]
    #[schemars(skip)]
    pub extra: UnknownFields,
}

/// A Secret's keys as files (every key, or only `items`), kept in memory on the node.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct SecretVolumeSource {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub secret_name: Option<String>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schemars(extend("x-kubernetes-list-type" = "atomic"))]
    pub items: Vec<KeyToPath>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub default_mode: Option<i32>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub optional: Option<bool>,
    #[serde(flatten)]
    #[schemars(skip)]
    pub extra: UnknownFields,
}

/// The pod's own fields as files.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct DownwardApiVolumeSource {
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schemars(extend("x-kubernetes-list-type" = "atomic"))]
    pub items: Vec<DownwardApiVolumeFile>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub default_mode: Option<i32>,
    #[serde(flatten)]
    #[schemars(skip)]
    pub extra: UnknownFields,
}

/// One file of a downward API volume: a field of the pod or a resource of one of its containers.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct DownwardApiVolumeFile {
    pub path: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub field_ref: Option<ObjectFieldSelector>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub resource_field_ref: Option<ResourceFieldSelector>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub mode: Option<i32>,
    #[serde(flatten)]
    #[schemars(skip)]
    pub extra: UnknownFields,
}

/// Several sources in one directory.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct ProjectedVolumeSource {
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schemars(extend("x-kubernetes-list-type" = "atomic"))]
    pub sources: Vec<VolumeProjection>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub default_mode: Option<i32>,
    #[serde(flatten)]
    #[schemars(skip)]
    pub extra: UnknownFields,
}

/// One source of a projected volume (others, such as `serviceAccountToken`, are kept as given and
/// refused by the agent).
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
#[schemars(extend("x-kubernetes-preserve-unknown-fields" = true))]
pub struct VolumeProjection {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub config_map: Option<ConfigMapProjection>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub secret: Option<ConfigMapProjection>,
    #[serde(default, rename = "downwardAPI", skip_serializing_if = "Option::is_none")]
    #[schemars(rename = "downwardAPI")]
    pub downward_api: Option<DownwardApiProjection>,
    #[serde(flatten)]
    #[schemars(skip)]
    pub extra: UnknownFields,
}

/// A ConfigMap's (or Secret's) keys in a projected volume.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct ConfigMapProjection {
    #[serde(default)]
    pub name: String,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schemars(extend("x-kubernetes-list-type" = "atomic"))]
    pub items: Vec<KeyToPath>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub optional: Option<bool>,
    #[serde(flatten)]
    #[schemars(skip)]
    pub extra: UnknownFields,
}

/// The pod's fields in a projected volume.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct DownwardApiProjection {
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schemars(extend("x-kubernetes-list-type" = "atomic"))]
    pub items: Vec<DownwardApiVolumeFile>,
    #[serde(flatten)]
    #[schemars(skip)]
    pub extra: UnknownFields,
}

/// A file or directory of the node.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct HostPathVolumeSource {
    pub path: String,
    #[serde(default, rename = "type", skip_serializing_if = "Option::is_none")]
    #[schemars(rename = "type", extend("enum" = ["", "DirectoryOrCreate", "Directory", "FileOrCreate", "File", "Socket", "CharDevice", "BlockDevice"]))]
    pub path_type: Option<String>,
    #[serde(flatten)]
    #[schemars(skip)]
    pub extra: UnknownFields,
}

/// A field of the pod (`metadata.name`, `metadata.labels['app']`, `status.podIP`, ...).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct ObjectFieldSelector {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub api_version: Option<String>,
    pub field_path: String,
    #[serde(flatten)]
    #[schemars(skip)]
    pub extra: UnknownFields,
}

/// A resource request or limit of a container (`limits.memory`, ...), in units of `divisor`.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct ResourceFieldSelector {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub container_name: Option<String>,
    pub resource: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub divisor: Option<Quantity>,
    #[serde(flatten)]
    #[schemars(skip)]
    pub extra: UnknownFields,
}

/// One key of a ConfigMap or Secret (`configMapKeyRef`, `secretKeyRef`).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct KeySelector {
    #[serde(default)]
    pub name: String,
    pub key: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub optional: Option<bool>,
    #[serde(flatten)]
    #[schemars(skip)]
    pub extra: UnknownFields,
}

/// Where an environment variable's value comes from.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct EnvVarSource {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub config_map_key_ref: Option<KeySelector>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub secret_key_ref: Option<KeySelector>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub field_ref: Option<ObjectFieldSelector>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub resource_field_ref: Option<ResourceFieldSelector>,
    #[serde(flatten)]
    #[schemars(skip)]
    pub extra: UnknownFields,
}

/// A whole ConfigMap or Secret (`configMapRef`, `secretRef`).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct EnvSourceRef {
    #[serde(default)]
    pub name: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub optional: Option<bool>,
    #[serde(flatten)]
    #[schemars(skip)]
    pub extra: UnknownFields,
}

/// Every key of a ConfigMap or Secret as environment variables, each name after `prefix`.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct EnvFromSource {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub prefix: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub config_map_ref: Option<EnvSourceRef>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub secret_ref: Option<EnvSourceRef>,
    #[serde(flatten)]
    #[schemars(skip)]
    pub extra: UnknownFields,
}

/// A volume of the pod mounted into a container.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct VolumeMount {
    pub name: String,
    pub mount_path: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub read_only: Option<bool>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub sub_path: Option<String>,
    #[serde(flatten)]
    #[schemars(skip)]
    pub extra: UnknownFields,
}

/// One environment variable.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct EnvVar {
    pub name: String,
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub value: String,
    /// Where the value comes from instead (a ConfigMap's or Secret's key, a field of the pod).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub value_from: Option<EnvVarSource>,
    #[serde(flatten)]
    #[schemars(skip)]
    pub extra: UnknownFields,
}

/// A port a container listens on, optionally published on the node (`hostPort`).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct ContainerPort {
    pub container_port: i64,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub host_port: Option<i64>,
    /// `TCP` (default), `UDP` or `SCTP`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(extend("enum" = ["SCTP", "TCP", "UDP"]))]
    pub protocol: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub name: Option<String>,
    #[serde(flatten)]
    #[schemars(skip)]
    pub extra: UnknownFields,
}

impl ContainerPort {
    /// The protocol, `TCP` when unset.
    pub fn protocol(&self) -> &str {
        self.protocol.as_deref().unwrap_or("TCP")
    }
}

/// CPU and memory a container requests (for scheduling) and may use at most (enforced).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct ResourceRequirements {
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub requests: BTreeMap<String, Quantity>,
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub limits: BTreeMap<String, Quantity>,
    #[serde(flatten)]
    #[schemars(skip)]
    pub extra: UnknownFields,
}

impl ResourceRequirements {
    /// Nothing requested and nothing limited.
    pub fn is_empty(&self) -> bool {
        self.requests.is_empty() && self.limits.is_empty() && self.extra.is_empty()
    }

    /// The requests, where a resource with a limit but no request requests its limit.
    pub fn effective_requests(&self) -> Result<ResourceAmounts, QuantityError> {
        let pick = |key: &str| self.requests.get(key).or_else(|| self.limits.get(key));
        Ok(ResourceAmounts {
            cpu_millis: pick("cpu").map(Quantity::millicores).transpose()?.unwrap_or(0),
            memory_bytes: pick("memory").map(Quantity::bytes).transpose()?.unwrap_or(0),
        })
    }

    /// The limits as numbers (0 = unlimited).
    pub fn limit_amounts(&self) -> Result<ResourceAmounts, QuantityError> {
        ResourceAmounts::from_map(&self.limits)
    }
}

/// A health check of a container: exactly one of `httpGet`, `tcpSocket`, `exec`.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct Probe {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub http_get: Option<HttpGetAction>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tcp_socket: Option<TcpSocketAction>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub exec: Option<ExecAction>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub initial_delay_seconds: Option<i64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub period_seconds: Option<i64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub timeout_seconds: Option<i64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub failure_threshold: Option<i64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub success_threshold: Option<i64>,
    #[serde(flatten)]
    #[schemars(skip)]
    pub extra: UnknownFields,
}

impl Probe {
    /// Time before the first probe (default 0; a negative value counts as 0).
    pub fn initial_delay(&self) -> Duration {
        seconds_at_least(self.initial_delay_seconds.unwrap_or(0), 0)
    }
    /// Time between probes (default 10 s, at least 1 s).
    pub fn period(&self) -> Duration {
        seconds_at_least(self.period_seconds.unwrap_or(10), 1)
    }
    /// Time a probe may take (default 1 s, at least 1 s).
    pub fn timeout(&self) -> Duration {
        seconds_at_least(self.timeout_seconds.unwrap_or(1), 1)
    }
    /// Consecutive failures that count as failed (default 3, at least 1).
    pub fn failures(&self) -> u32 {
        count_at_least_one(self.failure_threshold.unwrap_or(3))
    }
    /// Consecutive successes that count as succeeded (default 1, at least 1).
    pub fn successes(&self) -> u32 {
        count_at_least_one(self.success_threshold.unwrap_or(1))
    }
}

fn seconds_at_least(seconds: i64, min: i64) -> Duration {
    Duration::from_secs(seconds.max(min).unsigned_abs())
}

fn count_at_least_one(n: i64) -> u32 {
    u32::try_from(n.max(1)).unwrap_or(u32::MAX)
}

/// An HTTP GET against the container; 200-399 is success.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct HttpGetAction {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub path: Option<String>,
    /// The address to connect to; the container's own address when unset.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub host: Option<String>,
    /// A number or the name of a container port.
    pub port: IntOrString,
    #[serde(flatten)]
    #[schemars(skip)]
    pub extra: UnknownFields,
}

/// A TCP connect to the container.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct TcpSocketAction {
    /// A number or the name of a container port.
    pub port: IntOrString,
    /// The address to connect to; the container's own address when unset.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub host: Option<String>,
    #[serde(flatten)]
    #[schemars(skip)]
    pub extra: UnknownFields,
}

/// A command run in the container; exit 0 is success.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct ExecAction {
    #[serde(default)]
    #[schemars(extend("x-kubernetes-list-type" = "atomic"))]
    pub command: Vec<String>,
    #[serde(flatten)]
    #[schemars(skip)]
    pub extra: UnknownFields,
}

/// What the agent (and the scheduler, for `PodScheduled`) observed.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct PodStatus {
    /// `Pending`, `Running`, `Succeeded`, `Failed` or `Unknown`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub phase: Option<String>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schemars(extend("x-kubernetes-patch-merge-key" = "type", "x-kubernetes-patch-strategy" = "merge", "x-kubernetes-list-type" = "map", "x-kubernetes-list-map-keys" = ["type"]))]
    pub conditions: Vec<PodCondition>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schemars(extend("x-kubernetes-list-type" = "atomic"))]
    pub container_statuses: Vec<ContainerStatus>,
    /// `Guaranteed`, `Burstable` or `BestEffort`, from the containers' requests and limits.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub qos_class: Option<String>,
    /// The init containers' statuses, in their order.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schemars(extend("x-kubernetes-list-type" = "atomic"))]
    pub init_container_statuses: Vec<ContainerStatus>,
    #[serde(default, rename = "podIP", skip_serializing_if = "Option::is_none")]
    pub pod_ip: Option<String>,
    #[serde(default, rename = "hostIP", skip_serializing_if = "Option::is_none")]
    pub host_ip: Option<String>,
    /// The pod's addresses, the first being `podIP`.
    #[serde(default, rename = "podIPs", skip_serializing_if = "Vec::is_empty")]
    #[schemars(extend("x-kubernetes-patch-merge-key" = "ip", "x-kubernetes-patch-strategy" = "merge", "x-kubernetes-list-type" = "map", "x-kubernetes-list-map-keys" = ["ip"]))]
    pub pod_ips: Vec<PodIp>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub start_time: Option<Time>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub message: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reason: Option<String>,
    #[serde(flatten)]
    #[schemars(skip)]
    pub extra: UnknownFields,
}

/// One condition of a pod: `PodScheduled`, `Initialized`, `ContainersReady`, `Ready`.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct PodCondition {
    #[serde(rename = "type")]
    pub condition_type: String,
    /// `True`, `False` or `Unknown`.
    pub status: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reason: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub message: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_probe_time: Option<Time>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_transition_time: Option<Time>,
    #[serde(flatten)]
    #[schemars(skip)]
    pub extra: UnknownFields,
}

/// The observed state of one container.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct ContainerStatus {
    pub name: String,
    #[serde(default)]
    pub ready: bool,
    #[serde(default)]
    pub restart_count: i32,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub started: Option<bool>,
    #[serde(default)]
    pub state: ContainerState,
    /// The state before the last restart.
    #[serde(default, skip_serializing_if = "ContainerState::is_empty")]
    pub last_state: ContainerState,
    /// `docker://<id>`.
    #[serde(default, rename = "containerID", skip_serializing_if = "Option::is_none")]
    pub container_id: Option<String>,
    #[serde(default)]
    pub image: String,
    /// The image the container runs, by content (`docker://sha256:...`); always present, as
    /// Kubernetes writes it (clients such as the Python one require it).
    #[serde(default, rename = "imageID")]
    pub image_id: String,
    #[serde(flatten)]
    #[schemars(skip)]
    pub extra: UnknownFields,
}

/// One of waiting, running or terminated.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct ContainerState {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub waiting: Option<ContainerStateWaiting>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub running: Option<ContainerStateRunning>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub terminated: Option<ContainerStateTerminated>,
    #[serde(flatten)]
    #[schemars(skip)]
    pub extra: UnknownFields,
}

impl ContainerState {
    /// No state recorded.
    pub fn is_empty(&self) -> bool {
        self.waiting.is_none() && self.running.is_none() && self.terminated.is_none() && self.extra.is_empty()
    }
}

/// Not running yet (or again): e.g. `ContainerCreating`, `ErrImageNeverPull`, `CrashLoopBackOff`.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct ContainerStateWaiting {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reason: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub message: Option<String>,
    #[serde(flatten)]
    #[schemars(skip)]
    pub extra: UnknownFields,
}

/// Running since `startedAt`.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct ContainerStateRunning {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub started_at: Option<Time>,
    #[serde(flatten)]
    #[schemars(skip)]
    pub extra: UnknownFields,
}

/// Exited.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct ContainerStateTerminated {
    #[serde(default)]
    pub exit_code: i32,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub signal: Option<i32>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reason: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub message: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub started_at: Option<Time>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub finished_at: Option<Time>,
    #[serde(default, rename = "containerID", skip_serializing_if = "Option::is_none")]
    pub container_id: Option<String>,
    #[serde(flatten)]
    #[schemars(skip)]
    pub extra: UnknownFields,
}

impl Pod {
    /// The condition of the given type, if written.
    pub fn condition(&self, condition_type: &str) -> Option<&PodCondition> {
        self.status.conditions.iter().find(|c| c.condition_type == condition_type)
    }

    /// Whether the pod's `Ready` condition is `True`.
    pub fn is_ready(&self) -> bool {
        self.condition("Ready").is_some_and(|c| c.status == "True")
    }

    /// Whether the pod has finished for good (`Succeeded` or `Failed`).
    pub fn is_terminal(&self) -> bool {
        matches!(self.status.phase.as_deref(), Some("Succeeded" | "Failed"))
    }

    /// Whether the pod is being deleted.
    pub fn is_terminating(&self) -> bool {
        self.metadata.deletion_timestamp.is_some()
    }

    /// The phase, `Pending` when unset.
    pub fn phase(&self) -> &str {
        self.status.phase.as_deref().unwrap_or("Pending")
    }

    /// Sets (or replaces) a condition, keeping its transition time when the status is unchanged.
    pub fn set_condition(&mut self, mut condition: PodCondition) {
        match self.status.conditions.iter_mut().find(|c| c.condition_type == condition.condition_type) {
            Some(existing) => {
                if existing.status == condition.status {
                    condition.last_transition_time = existing.last_transition_time.or(condition.last_transition_time);
                }
                *existing = condition;
            }
            None => self.status.conditions.push(condition),
        }
    }
}

#[cfg(test)]
mod tests {
    #[test]
    fn probe_timings_take_kubernetes_defaults_and_raise_values_below_the_minimum() {
        let defaults = Probe::default();
        let timings = |p: &Probe| (p.initial_delay(), p.period(), p.timeout(), p.failures(), p.successes());
        assert_eq!(timings(&defaults), (Duration::ZERO, Duration::from_secs(10), Duration::from_secs(1), 3, 1));
        let nonsense = Probe { initial_delay_seconds: Some(-5), period_seconds: Some(0), timeout_seconds: Some(-1), failure_threshold: Some(0), success_threshold: Some(-2), ..Default::default() };
        assert_eq!(timings(&nonsense), (Duration::ZERO, Duration::from_secs(1), Duration::from_secs(1), 1, 1));
    }

    use super::*;

    #[test]
    fn reads_a_pod_with_kubernetes_field_names_and_ignores_unknown_ones() {
        let pod: Pod = serde_json::from_value(serde_json::json!({
            "apiVersion": "v1", "kind": "Pod",
            "metadata": {"name": "web-1", "namespace": "default", "ownerReferences": [{"apiVersion": "apps/v1", "kind": "ReplicaSet", "name": "web-abc", "uid": "u", "controller": true}]},
            "spec": {
                "containers": [{
                    "name": "web", "image": "busybox:1", "command": ["httpd"], "args": ["-f"],
                    "env": [{"name": "A", "value": "b"}], "workingDir": "/www",
                    "ports": [{"containerPort": 80, "hostPort": 8080, "name": "http"}],
                    "resources": {"requests": {"cpu": "100m", "memory": "64Mi"}, "limits": {"cpu": 1}},
                    "livenessProbe": {"httpGet": {"path": "/", "port": "http"}, "periodSeconds": 5},
                    "readinessProbe": {"tcpSocket": {"port": 80}},
                    "imagePullPolicy": "Never",
                    "stdin": true
                }],
                "restartPolicy": "OnFailure", "nodeSelector": {"disk": "ssd"}, "terminationGracePeriodSeconds": 5,
                "dnsPolicy": "ClusterFirst"
            },
            "status": {
                "phase": "Running", "podIP": "172.17.0.2", "hostIP": "10.0.1.5", "startTime": "2026-01-01T00:00:00Z",
                "conditions": [{"type": "Ready", "status": "True"}],
                "containerStatuses": [{"name": "web", "ready": true, "restartCount": 2, "image": "busybox:1", "containerID": "docker://abc",
                                       "state": {"running": {"startedAt": "2026-01-01T00:00:01Z"}},
                                       "lastState": {"terminated": {"exitCode": 137, "reason": "Error", "finishedAt": "2026-01-01T00:00:00Z"}}}]
            }
        }))
        .unwrap();
        assert!(pod.is_ready());
        assert_eq!(pod.metadata.controller_owner().map(|o| o.name.as_str()), Some("web-abc"));
        let c = &pod.spec.containers[0];
        assert_eq!(c.liveness_probe.as_ref().unwrap().http_get.as_ref().unwrap().port, IntOrString::String("http".into()));
        assert_eq!(c.readiness_probe.as_ref().unwrap().period(), Duration::from_secs(10));
        assert_eq!(pod.spec.requests().unwrap(), ResourceAmounts { cpu_millis: 100, memory_bytes: 64 << 20 });
        assert_eq!(pod.spec.host_ports(), vec![(8080, "TCP".to_string())]);
        assert_eq!(pod.status.container_statuses[0].last_state.terminated.as_ref().unwrap().exit_code, 137);
        let back = serde_json::to_value(&pod).unwrap();
        assert_eq!(back["status"]["podIP"], "172.17.0.2");
        assert_eq!(back["spec"]["containers"][0]["resources"]["limits"]["cpu"], "1");
        assert_eq!(back["status"]["containerStatuses"][0]["containerID"], "docker://abc");
    }

    #[test]
    fn unknown_fields_at_every_level_survive_a_round_trip() {
        let written = serde_json::json!({
            "apiVersion": "v1", "kind": "Pod", "newTopLevel": {"a": [1, 2]},
            "metadata": {"name": "web-1", "managedFields": [{"manager": "kubectl"}],
                         "ownerReferences": [{"apiVersion": "apps/v1", "kind": "ReplicaSet", "name": "rs", "uid": "u", "futureFlag": true}]},
            "spec": {
                "containers": [{
                    "name": "web", "image": "busybox:1", "stdin": true,
                    "ports": [{"containerPort": 80, "appProtocol": "http"}],
                    "resources": {"requests": {"cpu": "100m"}, "claims": [{"name": "gpu"}]},
                    "livenessProbe": {"httpGet": {"port": 80, "scheme": "HTTPS"}, "terminationGracePeriodSeconds": 3}
                }],
                "dnsPolicy": "ClusterFirst",
                "tolerations": [{"key": "k", "operator": "Exists", "tolerationSeconds": 30}]
            },
            "status": {"phase": "Running", "qosClass": "Burstable",
                       "conditions": [{"type": "Ready", "status": "True", "observedGeneration": 4}],
                       "containerStatuses": [{"name": "web", "ready": true, "restartCount": 0, "image": "busybox:1", "imageID": "",
                                              "state": {"running": {"startedAt": "2026-01-01T00:00:01Z"}, "future": {}},
                                              "volumeMounts": []}]}
        });
        let pod: Pod = serde_json::from_value(written.clone()).unwrap();
        assert_eq!(pod.spec.dns_policy.as_deref(), Some("ClusterFirst"));
        assert_eq!(pod.spec.tolerations[0].toleration_seconds, Some(30));
        assert_eq!(pod.spec.containers[0].ports[0].extra.0["appProtocol"], "http");
        assert_eq!(serde_json::to_value(&pod).unwrap(), written);
    }

    #[test]
    fn the_qos_class_follows_requests_and_limits() {
        let spec = |resources: serde_json::Value| -> PodSpec { serde_json::from_value(serde_json::json!({"containers": [{"name": "c", "resources": resources}]})).unwrap() };
        assert_eq!(spec(serde_json::json!({})).qos_class(), "BestEffort");
        assert_eq!(spec(serde_json::json!({"requests": {"cpu": "100m"}})).qos_class(), "Burstable");
        assert_eq!(spec(serde_json::json!({"limits": {"cpu": "1", "memory": "1Gi"}, "requests": {"cpu": "1000m"}})).qos_class(), "Guaranteed");
        assert_eq!(spec(serde_json::json!({"limits": {"cpu": "1", "memory": "1Gi"}, "requests": {"cpu": "500m"}})).qos_class(), "Burstable");
    }

    #[test]
    fn a_limit_without_a_request_counts_as_the_request() {
        let r = ResourceRequirements { requests: BTreeMap::new(), limits: [("memory".to_string(), Quantity::from("1Gi"))].into(), ..Default::default() };
        assert_eq!(r.effective_requests().unwrap().memory_bytes, 1 << 30);
    }
}
