//! What a pod's containers are given besides their image: environment variables from ConfigMaps,
//! Secrets and the pod's own fields (`env[].valueFrom`, `envFrom`), and volumes (`emptyDir`,
//! `configMap`, `secret`, `downwardAPI`, `projected`, `hostPath`) with their mounts.
//!
//! Everything here is computed from the pod and a snapshot of the ConfigMaps and Secrets it names
//! ([`Sources`], fetched by pod sync through the node's credential, which the API server's node
//! authorizer lets read only what a pod bound to the node references). Volume files are written as
//! kubelet's atomic writer writes them: the payload goes into a fresh hidden directory
//! `..<time>`, the symlink `..data` is swapped to it with one rename, and each visible name is a
//! symlink through `..data`, so that a reader sees the old files or the new ones, never a mix;
//! an update of the ConfigMap reaches a running pod's files this way (a `subPath` mount does not
//! follow, as in Kubernetes).
//!
//! Where they live on the node: volumes on disk under [`VolumeRoots::disk`]
//! (`/var/lib/clusterctl/agent/pods/<uid>/volumes/<name>`); Secrets and `medium: Memory` emptyDirs
//! under [`VolumeRoots::memory`] (`/run/clusterctl/pods/...`, a tmpfs), so that no secret reaches
//! the node's disk. Both go with the pod. An emptyDir's `sizeLimit` is enforced as kubelet does:
//! a memory-backed one is its own tmpfs of that size (when [`VolumeRoots::sized_tmpfs`]), and a pod
//! whose emptyDir holds more than its limit is evicted ([`over_size_limit`], checked by pod sync).

use std::collections::{BTreeMap, HashMap};
use std::net::IpAddr;
use std::os::unix::fs::PermissionsExt;
use std::path::{Component, Path, PathBuf};

use crate::api::pod::{Container, DownwardApiVolumeFile, KeyToPath, ObjectFieldSelector, Pod, ResourceFieldSelector, Volume};
use super::runtime::{Mount, Security};
use crate::api::quantity::Quantity;

/// A ConfigMap or a Secret a pod names.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct SourceKey {
    pub secret: bool,
    pub namespace: String,
    pub name: String,
}

impl SourceKey {
    fn describe(&self) -> String {
        format!("{} {:?}", if self.secret { "secret" } else { "configmap" }, self.name)
    }
}

/// The ConfigMaps' and Secrets' contents (decoded), `None` for one that does not exist. A key
/// missing from the map was not fetched (the API did not answer): treated as not there yet.
pub type Sources = HashMap<SourceKey, Option<SourceData>>;

/// One ConfigMap's or Secret's keys and (decoded) values.
pub type SourceData = BTreeMap<String, Vec<u8>>;

/// The ConfigMaps and Secrets `pod` reads, in its namespace.
pub fn referenced(pod: &Pod) -> Vec<SourceKey> {
    let ns = pod.metadata.namespace_or_default();
    let (config_maps, secrets) = pod.spec.referenced();
    let key = |secret: bool| move |name: String| SourceKey { secret, namespace: ns.to_string(), name };
    config_maps.into_iter().map(key(false)).chain(secrets.into_iter().map(key(true))).collect()
}

/// What the downward API reads besides the pod: its addresses and the node's allocatable, for
/// `resourceFieldRef` of a container without that limit.
#[derive(Debug, Clone, Copy)]
pub struct PodContext {
    pub pod_ip: Option<IpAddr>,
    pub host_ip: IpAddr,
    pub node_cpu_millis: u64,
    pub node_memory_bytes: u64,
}

fn lookup<'a>(sources: &'a Sources, key: &SourceKey) -> Result<Option<&'a BTreeMap<String, Vec<u8>>>, String> {
    match sources.get(key) {
        Some(Some(data)) => Ok(Some(data)),
        Some(None) => Ok(None),
        None => Err(format!("{} could not be read from the API", key.describe())),
    }
}

/// Whether `name` may be an environment variable (Kubernetes: any printable ASCII but `=`, not
/// starting with a digit).
fn valid_env_name(name: &str) -> bool {
    !name.is_empty() && !name.starts_with(|c: char| c.is_ascii_digit()) && name.chars().all(|c| c.is_ascii_graphic() && c != '=')
}

/// A container's environment, as kubelet makes it: `envFrom` sources in order, then `env` (which
/// wins), each value's `$(VAR)` references expanded with the variables before it. A missing
/// source or key that is not `optional` is an error: the container waits with
/// `CreateContainerConfigError` and this message.
pub fn container_env(pod: &Pod, container: &Container, sources: &Sources, ctx: &PodContext) -> Result<Vec<(String, String)>, String> {
    let ns = pod.metadata.namespace_or_default();
    let mut env: Vec<(String, String)> = Vec::new();
    let set = |env: &mut Vec<(String, String)>, name: String, value: String| match env.iter_mut().find(|(n, _)| *n == name) {
        Some(slot) => slot.1 = value,
        None => env.push((name, value)),
    };
    for from in &container.env_from {
        let (secret, reference) = match (&from.config_map_ref, &from.secret_ref) {
            (Some(r), None) => (false, r),
            (None, Some(r)) => (true, r),
            _ => return Err("envFrom: exactly one of configMapRef and secretRef must be set".into()),
        };
        let key = SourceKey { secret, namespace: ns.to_string(), name: reference.name.clone() };
        match lookup(sources, &key)? {
            Some(data) => {
                for (k, v) in data {
                    let name = format!("{}{k}", from.prefix.as_deref().unwrap_or(""));
                    if valid_env_name(&name) {
                        set(&mut env, name, String::from_utf8_lossy(v).into_owned());
                    }
                }
            }
            None if reference.optional == Some(true) => {}
            None => return Err(format!("{} not found", key.describe())),
        }
    }
    for var in &container.env {
        let value = match &var.value_from {
            None => expand(&var.value, &env),
            Some(from) => {
                let selector = match (&from.config_map_key_ref, &from.secret_key_ref) {
                    (Some(s), _) => Some((false, s)),
                    (None, Some(s)) => Some((true, s)),
                    (None, None) => None,
                };
                if let Some((secret, selector)) = selector {
                    let key = SourceKey { secret, namespace: ns.to_string(), name: selector.name.clone() };
                    let optional = selector.optional == Some(true);
                    match lookup(sources, &key)? {
                        Some(data) => match data.get(&selector.key) {
                            Some(v) => String::from_utf8_lossy(v).into_owned(),
                            None if optional => continue,
                            None => return Err(format!("couldn't find key {} in {} {ns}/{}", selector.key, if secret { "Secret" } else { "ConfigMap" }, selector.name)),
                        },
                        None if optional => continue,
                        None => return Err(format!("{} not found", key.describe())),
                    }
                } else if let Some(field) = &from.field_ref {
                    field_value(pod, field, ctx)?
                } else if let Some(resource) = &from.resource_field_ref {
                    resource_value(pod, Some(&container.name), resource, ctx)?
                } else {
                    return Err(format!("env {}: valueFrom names no source", var.name));
                }
            }
        };
        set(&mut env, var.name.clone(), value);
    }
    Ok(env)
}

/// Kubernetes' `$(VAR)` expansion: a reference to a defined variable is replaced, `$$` is a
/// literal `$`, and anything else (an undefined name, an unclosed reference) stays as written.
pub fn expand(text: &str, env: &[(String, String)]) -> String {
    let mut out = String::with_capacity(text.len());
    let mut rest = text;
    while let Some(i) = rest.find('$') {
        out.push_str(&rest[..i]);
        let after = &rest[i + 1..];
        if let Some(more) = after.strip_prefix('$') {
            out.push('$');
            rest = more;
        } else if let Some(inner) = after.strip_prefix('(')
            && let Some(end) = inner.find(')')
        {
            let name = &inner[..end];
            match env.iter().rev().find(|(n, _)| n == name) {
                Some((_, v)) => out.push_str(v),
                None => {
                    out.push_str("$(");
                    out.push_str(name);
                    out.push(')');
                }
            }
            rest = &inner[end + 1..];
        } else {
            out.push('$');
            rest = after;
        }
    }
    out.push_str(rest);
    out
}

/// `metadata.labels['app']` → `app`.
fn subscript<'a>(path: &'a str, field: &str) -> Option<&'a str> {
    let inner = path.strip_prefix(field)?.strip_prefix("['")?.strip_suffix("']")?;
    Some(inner)
}

/// The text of a field of the pod (`fieldRef`).
pub fn field_value(pod: &Pod, field: &ObjectFieldSelector, ctx: &PodContext) -> Result<String, String> {
    let m = &pod.metadata;
    let path = field.field_path.as_str();
    let all = |map: &BTreeMap<String, String>| map.iter().map(|(k, v)| format!("{k}={v:?}\n")).collect::<String>();
    Ok(match path {
        "metadata.name" => m.name.clone(),
        "metadata.namespace" => m.namespace_or_default().to_string(),
        "metadata.uid" => m.uid.clone(),
        "metadata.labels" => all(&m.labels),
        "metadata.annotations" => all(&m.annotations),
        "spec.nodeName" => pod.spec.node_name.clone().unwrap_or_default(),
        "spec.serviceAccountName" => pod.spec.extra.0.get("serviceAccountName").and_then(|v| v.as_str()).unwrap_or("default").to_string(),
        "status.hostIP" | "status.hostIPs" => ctx.host_ip.to_string(),
        "status.podIP" | "status.podIPs" => ctx.pod_ip.map(|ip| ip.to_string()).unwrap_or_default(),
        _ => {
            if let Some(k) = subscript(path, "metadata.labels") {
                m.labels.get(k).cloned().unwrap_or_default()
            } else if let Some(k) = subscript(path, "metadata.annotations") {
                m.annotations.get(k).cloned().unwrap_or_default()
            } else {
                return Err(format!("fieldRef: unsupported fieldPath {path:?}"));
            }
        }
    })
}

/// A container's request or limit in units of `divisor` (rounded up, at least 1 for a non-zero
/// amount, as kubelet does); a limit not set is the node's allocatable.
pub fn resource_value(pod: &Pod, default_container: Option<&str>, selector: &ResourceFieldSelector, ctx: &PodContext) -> Result<String, String> {
    let name = selector.container_name.as_deref().filter(|n| !n.is_empty()).or(default_container).ok_or("resourceFieldRef: containerName is required in a volume")?;
    let container = pod.spec.containers.iter().chain(&pod.spec.init_containers).find(|c| c.name == name).ok_or_else(|| format!("resourceFieldRef: no container {name:?}"))?;
    let (kind, resource) = selector.resource.split_once('.').ok_or_else(|| format!("resourceFieldRef: unsupported resource {:?}", selector.resource))?;
    let map = match kind {
        "limits" => &container.resources.limits,
        "requests" => &container.resources.requests,
        _ => return Err(format!("resourceFieldRef: unsupported resource {:?}", selector.resource)),
    };
    let bad = |e: crate::api::quantity::QuantityError| format!("resourceFieldRef {}: {e}", selector.resource);
    let (amount, unit) = match resource {
        "cpu" => {
            let set = map.get("cpu").map(Quantity::millicores).transpose().map_err(bad)?;
            let amount = set.unwrap_or(if kind == "limits" { ctx.node_cpu_millis } else { 0 });
            let unit = selector.divisor.as_ref().map(Quantity::millicores).transpose().map_err(bad)?.unwrap_or(1000);
            (amount, unit)
        }
        "memory" | "ephemeral-storage" => {
            let set = map.get(resource).map(Quantity::bytes).transpose().map_err(bad)?;
            let amount = set.unwrap_or(if kind == "limits" && resource == "memory" { ctx.node_memory_bytes } else { 0 });
            (amount, selector.divisor.as_ref().map(Quantity::bytes).transpose().map_err(bad)?.unwrap_or(1))
        }
        _ => return Err(format!("resourceFieldRef: unsupported resource {:?}", selector.resource)),
    };
    if unit == 0 {
        return Err("resourceFieldRef: divisor must be more than 0".into());
    }
    Ok(amount.div_ceil(unit).to_string())
}

/// Where Localhost seccomp profiles live on a node (`seccompProfile.localhostProfile` is relative
/// to it, as to kubelet's `/var/lib/kubelet/seccomp`).
pub const SECCOMP_PROFILES: &str = "/var/lib/clusterctl/agent/seccomp";

/// Whether an image's `USER` is root (`""`, `root`, `0`, with or without a group).
fn image_runs_as_root(user: &str) -> Option<bool> {
    let name = user.split(':').next().unwrap_or("");
    match name {
        "" | "root" => Some(true),
        n => n.parse::<u32>().ok().map(|uid| uid == 0),
    }
}

/// The runtime's security settings for `container` (its security context over the pod's), with
/// kubelet's check of `runAsNonRoot` against the user the image would run as.
pub fn security(pod: &Pod, container: &Container, image_user: &str) -> Result<Security, String> {
    let eff = pod.spec.security_of(container);
    let m = &pod.metadata;
    let whose = format!("(pod: \"{}_{}({})\", container: {})", m.name, m.namespace_or_default(), m.uid, container.name);
    if eff.run_as_non_root {
        match eff.run_as_user {
            Some(0) => return Err(format!("container's runAsUser breaks non-root policy {whose}")),
            Some(_) => {}
            None => match image_runs_as_root(image_user) {
                Some(true) => return Err(format!("container has runAsNonRoot and image will run as root {whose}")),
                None => return Err(format!("container has runAsNonRoot and image has non-numeric user ({image_user}), cannot verify user is non-root {whose}")),
                Some(false) => {}
            },
        }
    }
    let user = match (eff.run_as_user, eff.run_as_group) {
        (Some(u), Some(g)) => Some(format!("{u}:{g}")),
        (Some(u), None) => Some(u.to_string()),
        (None, Some(g)) => Some(format!("{}:{g}", image_user.split(':').next().filter(|u| !u.is_empty()).unwrap_or("0"))),
        (None, None) => None,
    };
    let seccomp = match eff.seccomp.as_ref().map(|s| (s.profile_type.as_str(), s.localhost_profile.as_deref())) {
        None | Some(("RuntimeDefault", _)) => None,
        Some(("Unconfined", _)) => Some("unconfined".to_string()),
        Some(("Localhost", Some(path))) => {
            safe_relative(path).map_err(|e| format!("seccompProfile.localhostProfile: {e}"))?;
            let file = Path::new(SECCOMP_PROFILES).join(path);
            Some(std::fs::read_to_string(&file).map_err(|e| format!("seccomp profile {}: {e}", file.display()))?)
        }
        Some((other, _)) => return Err(format!("seccompProfile: unsupported type {other:?}")),
    };
    Ok(Security {
        user,
        groups: eff.groups.iter().map(i64::to_string).collect(),
        read_only_root: eff.read_only_root_filesystem,
        no_new_privileges: eff.allow_privilege_escalation == Some(false),
        privileged: eff.privileged,
        cap_add: eff.add,
        cap_drop: eff.drop,
        seccomp,
    })
}

/// Where a node keeps its pods' volumes.
#[derive(Debug, Clone)]
pub struct VolumeRoots {
    pub disk: PathBuf,
    /// A tmpfs: Secrets and memory-backed emptyDirs.
    pub memory: PathBuf,
    /// Whether a memory-backed emptyDir with a `sizeLimit` is mounted as a tmpfs of its own of
    /// that size (on nodes, where the agent may mount; tests keep plain directories).
    pub sized_tmpfs: bool,
}

impl Default for VolumeRoots {
    fn default() -> Self {
        VolumeRoots { disk: "/var/lib/clusterctl/agent/pods".into(), memory: "/run/clusterctl/pods".into(), sized_tmpfs: true }
    }
}

/// Bytes in use under `dir` (allocated blocks, as `du` counts them; not following symlinks).
fn usage(dir: &Path) -> u64 {
    use std::os::unix::fs::MetadataExt;
    let Ok(entries) = std::fs::read_dir(dir) else { return 0 };
    entries
        .filter_map(Result::ok)
        .map(|e| match e.metadata() {
            Ok(m) if m.is_dir() => m.blocks() * 512 + usage(&e.path()),
            Ok(m) => m.blocks() * 512,
            Err(_) => 0,
        })
        .sum()
}

/// The eviction message for the first emptyDir of the pod that holds more than its `sizeLimit`,
/// in kubelet's words (`Usage of EmptyDir volume "scratch" exceeds the limit "1Mi". `).
pub fn over_size_limit(roots: &VolumeRoots, pod: &Pod) -> Option<String> {
    pod.spec.volumes.iter().find_map(|v| {
        let e = v.empty_dir.as_ref()?;
        let limit = e.size_limit.as_ref()?;
        let bytes = limit.bytes().ok()?;
        let used = usage(&roots.dir(e.medium.as_deref() == Some("Memory"), &pod.metadata.uid, &v.name));
        (used > bytes).then(|| format!("Usage of EmptyDir volume {:?} exceeds the limit {:?}. ", v.name, limit.0))
    })
}

/// Whether `dir` is a mount point (its device differs from its parent's).
fn is_mount_point(dir: &Path) -> bool {
    use std::os::unix::fs::MetadataExt;
    match (std::fs::metadata(dir), dir.parent().map(std::fs::metadata)) {
        (Ok(d), Some(Ok(p))) => d.dev() != p.dev(),
        _ => false,
    }
}

/// Mounts a tmpfs of `bytes` on `dir` (once), world-writable as an emptyDir is.
fn mount_sized_tmpfs(dir: &Path, bytes: u64) -> Result<(), String> {
    if is_mount_point(dir) {
        return Ok(());
    }
    let out = std::process::Command::new("mount")
        .args(["-t", "tmpfs", "-o", &format!("size={bytes},mode=0777,nosuid,nodev"), "tmpfs"])
        .arg(dir)
        .output()
        .map_err(|e| format!("mount: {e}"))?;
    if out.status.success() { Ok(()) } else { Err(format!("mount: {}", String::from_utf8_lossy(&out.stderr).trim())) }
}

impl VolumeRoots {
    fn dir(&self, memory: bool, uid: &str, volume: &str) -> PathBuf {
        (if memory { &self.memory } else { &self.disk }).join(uid).join("volumes").join(volume)
    }

    /// Removes a pod's volumes (its containers are gone), unmounting its sized tmpfs first.
    pub fn remove_pod(&self, uid: &str) {
        if let Ok(volumes) = std::fs::read_dir(self.memory.join(uid).join("volumes")) {
            for dir in volumes.filter_map(Result::ok).map(|e| e.path()).filter(|d| is_mount_point(d)) {
                if let Err(e) = std::process::Command::new("umount").arg(&dir).output() {
                    tracing::warn!(dir = %dir.display(), error = %e, "unmounting an emptyDir");
                }
            }
        }
        for root in [&self.disk, &self.memory] {
            let dir = root.join(uid);
            if dir.exists()
                && let Err(e) = std::fs::remove_dir_all(&dir)
            {
                tracing::warn!(dir = %dir.display(), error = %e, "removing a pod's volumes");
            }
        }
    }

    /// The pod uids that have volumes on this node.
    pub fn pods(&self) -> Vec<String> {
        let mut uids: Vec<String> = [&self.disk, &self.memory]
            .iter()
            .filter_map(|root| std::fs::read_dir(root).ok())
            .flatten()
            .filter_map(|e| e.ok()?.file_name().into_string().ok())
            .collect();
        uids.sort();
        uids.dedup();
        uids
    }
}

/// The files of a volume made from API data: relative path → (content, mode).
pub type Payload = BTreeMap<String, (Vec<u8>, u32)>;

/// Kubernetes' default file mode of such volumes (0644).
const DEFAULT_MODE: u32 = 0o644;

fn mode_of(mode: Option<i32>, default: u32) -> u32 {
    mode.and_then(|m| u32::try_from(m).ok()).map_or(default, |m| m & 0o777)
}

/// A relative path that stays inside its volume: no `..`, not absolute.
fn safe_relative(path: &str) -> Result<(), String> {
    let p = Path::new(path);
    if path.is_empty() || p.is_absolute() || p.components().any(|c| !matches!(c, Component::Normal(_))) || path.starts_with("..") {
        return Err(format!("path {path:?} must be relative and may not contain '..'"));
    }
    Ok(())
}

/// A ConfigMap's or Secret's keys as files (`items` picks and renames; a key `items` names must be
/// there unless the source is optional).
fn keys_payload(key: &SourceKey, items: &[KeyToPath], optional: bool, mode: u32, sources: &Sources, out: &mut Payload) -> Result<(), String> {
    let Some(data) = lookup(sources, key)? else {
        return if optional { Ok(()) } else { Err(format!("{} not found", key.describe())) };
    };
    if items.is_empty() {
        for (k, v) in data {
            out.insert(k.clone(), (v.clone(), mode));
        }
        return Ok(());
    }
    for item in items {
        safe_relative(&item.path)?;
        match data.get(&item.key) {
            Some(v) => {
                out.insert(item.path.clone(), (v.clone(), mode_of(item.mode, mode)));
            }
            None if optional => {}
            None => return Err(format!("configmap references non-existent config key: {}", item.key).replace("configmap", if key.secret { "secret" } else { "configmap" })),
        }
    }
    Ok(())
}

fn downward_payload(pod: &Pod, items: &[DownwardApiVolumeFile], mode: u32, ctx: &PodContext, out: &mut Payload) -> Result<(), String> {
    for item in items {
        safe_relative(&item.path)?;
        let value = match (&item.field_ref, &item.resource_field_ref) {
            (Some(f), None) => field_value(pod, f, ctx)?,
            (None, Some(r)) => resource_value(pod, None, r, ctx)?,
            _ => return Err(format!("downwardAPI item {:?}: exactly one of fieldRef and resourceFieldRef", item.path)),
        };
        out.insert(item.path.clone(), (value.into_bytes(), mode_of(item.mode, mode)));
    }
    Ok(())
}

/// How a volume is made on the node.
#[derive(Debug, Clone, PartialEq)]
pub enum VolumeKind {
    /// A directory of the pod's own (memory-backed: on the tmpfs), and its `sizeLimit` in bytes.
    Empty { memory: bool, size_limit: Option<u64> },
    /// Files written from API data (secrets: on the tmpfs).
    Files { memory: bool, payload: Payload },
    /// A path of the node, checked (or made) per its type.
    Host { path: PathBuf, path_type: String },
}

/// What `volume` is made of now.
pub fn volume_kind(pod: &Pod, volume: &Volume, sources: &Sources, ctx: &PodContext) -> Result<VolumeKind, String> {
    let ns = pod.metadata.namespace_or_default().to_string();
    let key = |secret: bool, name: &str| SourceKey { secret, namespace: ns.clone(), name: name.to_string() };
    let v = volume;
    let sources_set = [v.empty_dir.is_some(), v.config_map.is_some(), v.secret.is_some(), v.downward_api.is_some(), v.projected.is_some(), v.host_path.is_some()];
    let count = sources_set.iter().filter(|s| **s).count();
    if count != 1 || !v.extra.is_empty() {
        let other: Vec<&String> = v.extra.0.keys().collect();
        return Err(if other.is_empty() { format!("volume {:?}: exactly one source must be given", v.name) } else { format!("volume {:?}: unsupported volume type {other:?} (this cluster makes emptyDir, configMap, secret, downwardAPI, projected and hostPath volumes)", v.name) });
    }
    let mut payload = Payload::new();
    if let Some(e) = &v.empty_dir {
        let size_limit = e.size_limit.as_ref().map(|q| q.bytes().map_err(|err| format!("sizeLimit {:?}: {err}", q.0))).transpose()?;
        return Ok(VolumeKind::Empty { memory: e.medium.as_deref() == Some("Memory"), size_limit });
    }
    if let Some(c) = &v.config_map {
        keys_payload(&key(false, &c.name), &c.items, c.optional == Some(true), mode_of(c.default_mode, DEFAULT_MODE), sources, &mut payload)?;
        return Ok(VolumeKind::Files { memory: false, payload });
    }
    if let Some(s) = &v.secret {
        let name = s.secret_name.as_deref().unwrap_or("");
        keys_payload(&key(true, name), &s.items, s.optional == Some(true), mode_of(s.default_mode, DEFAULT_MODE), sources, &mut payload)?;
        return Ok(VolumeKind::Files { memory: true, payload });
    }
    if let Some(d) = &v.downward_api {
        downward_payload(pod, &d.items, mode_of(d.default_mode, DEFAULT_MODE), ctx, &mut payload)?;
        return Ok(VolumeKind::Files { memory: false, payload });
    }
    if let Some(p) = &v.projected {
        let mode = mode_of(p.default_mode, DEFAULT_MODE);
        let mut memory = false;
        for source in &p.sources {
            if !source.extra.is_empty() {
                return Err(format!("volume {:?}: unsupported projection {:?}", v.name, source.extra.0.keys().collect::<Vec<_>>()));
            }
            if let Some(c) = &source.config_map {
                keys_payload(&key(false, &c.name), &c.items, c.optional == Some(true), mode, sources, &mut payload)?;
            }
            if let Some(s) = &source.secret {
                memory = true;
                keys_payload(&key(true, &s.name), &s.items, s.optional == Some(true), mode, sources, &mut payload)?;
            }
            if let Some(d) = &source.downward_api {
                downward_payload(pod, &d.items, mode, ctx, &mut payload)?;
            }
        }
        return Ok(VolumeKind::Files { memory, payload });
    }
    let h = v.host_path.as_ref().expect("one source is set");
    if !Path::new(&h.path).is_absolute() {
        return Err(format!("volume {:?}: hostPath {:?} must be absolute", v.name, h.path));
    }
    Ok(VolumeKind::Host { path: PathBuf::from(&h.path), path_type: h.path_type.clone().unwrap_or_default() })
}

/// Checks (or makes) a hostPath per its type, as kubelet does.
fn check_host_path(path: &Path, path_type: &str) -> Result<(), String> {
    use std::os::unix::fs::FileTypeExt;
    let meta = std::fs::metadata(path);
    let fail = |what: &str| Err(format!("hostPath type check failed: {} is not {what}", path.display()));
    match path_type {
        "" => Ok(()),
        "DirectoryOrCreate" => {
            if meta.is_err() {
                std::fs::create_dir_all(path).map_err(|e| format!("creating {}: {e}", path.display()))?;
                std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o755)).map_err(|e| e.to_string())?;
                return Ok(());
            }
            if meta.is_ok_and(|m| m.is_dir()) { Ok(()) } else { fail("a directory") }
        }
        "FileOrCreate" => {
            if meta.is_err() {
                std::fs::OpenOptions::new().create(true).append(true).open(path).map_err(|e| format!("creating {}: {e}", path.display()))?;
                std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o644)).map_err(|e| e.to_string())?;
                return Ok(());
            }
            if meta.is_ok_and(|m| m.is_file()) { Ok(()) } else { fail("a file") }
        }
        "Directory" => if meta.is_ok_and(|m| m.is_dir()) { Ok(()) } else { fail("a directory") },
        "File" => if meta.is_ok_and(|m| m.is_file()) { Ok(()) } else { fail("a file") },
        "Socket" => if meta.is_ok_and(|m| m.file_type().is_socket()) { Ok(()) } else { fail("a socket") },
        "CharDevice" => if meta.is_ok_and(|m| m.file_type().is_char_device()) { Ok(()) } else { fail("a character device") },
        "BlockDevice" => if meta.is_ok_and(|m| m.file_type().is_block_device()) { Ok(()) } else { fail("a block device") },
        other => Err(format!("hostPath: unsupported type {other:?}")),
    }
}

/// Makes (or brings up to date) every volume of the pod; the host directory of each, by name.
pub fn set_up(roots: &VolumeRoots, pod: &Pod, sources: &Sources, ctx: &PodContext) -> Result<HashMap<String, PathBuf>, String> {
    let uid = pod.metadata.uid.as_str();
    // `fsGroup`: the volumes belong to that group, and its members may read them (and write
    // an emptyDir), as kubelet sets a volume's ownership.
    let group = pod.spec.security_context.as_ref().and_then(|s| s.fs_group).and_then(|g| u32::try_from(g).ok());
    let mut dirs = HashMap::new();
    for volume in &pod.spec.volumes {
        let failed = |e: String| format!("MountVolume.SetUp failed for volume {:?} : {e}", volume.name);
        let dir = match volume_kind(pod, volume, sources, ctx).map_err(failed)? {
            VolumeKind::Empty { memory, size_limit } => {
                let dir = roots.dir(memory, uid, &volume.name);
                std::fs::create_dir_all(&dir).map_err(|e| failed(e.to_string()))?;
                if let Some(bytes) = size_limit.filter(|_| memory && roots.sized_tmpfs) {
                    mount_sized_tmpfs(&dir, bytes).map_err(failed)?;
                }
                // Writable by every user of the pod, as kubelet makes an emptyDir (0777).
                std::fs::set_permissions(&dir, std::fs::Permissions::from_mode(0o777)).map_err(|e| failed(e.to_string()))?;
                if group.is_some() {
                    std::os::unix::fs::chown(&dir, None, group).map_err(|e| failed(e.to_string()))?;
                    std::fs::set_permissions(&dir, std::fs::Permissions::from_mode(0o2777)).map_err(|e| failed(e.to_string()))?;
                }
                dir
            }
            VolumeKind::Files { memory, mut payload } => {
                let dir = roots.dir(memory, uid, &volume.name);
                if group.is_some() {
                    for (_, mode) in payload.values_mut() {
                        *mode |= 0o440;
                    }
                }
                write_atomic(&dir, &payload, group).map_err(|e| failed(e.to_string()))?;
                dir
            }
            VolumeKind::Host { path, path_type } => {
                check_host_path(&path, &path_type).map_err(failed)?;
                path
            }
        };
        dirs.insert(volume.name.clone(), dir);
    }
    Ok(dirs)
}

/// The container's mounts from its `volumeMounts` (a `subPath` inside the volume is made as a
/// directory when missing, as kubelet does).
pub fn mounts(container: &Container, dirs: &HashMap<String, PathBuf>) -> Result<Vec<Mount>, String> {
    container
        .volume_mounts
        .iter()
        .map(|m| {
            let dir = dirs.get(&m.name).ok_or_else(|| format!("volumeMounts: no volume named {:?}", m.name))?;
            if !m.mount_path.starts_with('/') {
                return Err(format!("volumeMounts {:?}: mountPath {:?} must be absolute", m.name, m.mount_path));
            }
            let host_path = match m.sub_path.as_deref().filter(|s| !s.is_empty()) {
                Some(sub) => {
                    safe_relative(sub).map_err(|e| format!("volumeMounts {:?}: subPath: {e}", m.name))?;
                    let path = dir.join(sub);
                    if !path.exists() {
                        std::fs::create_dir_all(&path).map_err(|e| format!("subPath {}: {e}", path.display()))?;
                    }
                    // Through `..data` in a file volume: the file as it is now (kubelet resolves the
                    // link too, which is why such a mount keeps the old content).
                    path.canonicalize().map_err(|e| format!("subPath {}: {e}", path.display()))?
                }
                None => dir.clone(),
            };
            Ok(Mount { host_path, container_path: m.mount_path.clone(), read_only: m.read_only == Some(true) })
        })
        .collect()
}

/// Writes `payload` into `dir` as kubelet's atomic writer does: only when it differs from what
/// `..data` holds; true when it wrote. The directory is readable by all (0755), so that a pod's
/// non-root users read their files.
pub fn write_atomic(dir: &Path, payload: &Payload, group: Option<u32>) -> std::io::Result<bool> {
    let data = dir.join("..data");
    if current_payload(&data).as_ref() == Some(payload) {
        return Ok(false);
    }
    std::fs::create_dir_all(dir)?;
    std::fs::set_permissions(dir, std::fs::Permissions::from_mode(0o755))?;
    let stamp = format!("..{}", crate::api::time::Time::now().to_string().replace([':', '-'], "_"));
    let fresh = dir.join(format!("{stamp}.{}", hex::encode(rand::random::<[u8; 4]>())));
    std::fs::create_dir(&fresh)?;
    std::fs::set_permissions(&fresh, std::fs::Permissions::from_mode(0o755))?;
    for (path, (content, mode)) in payload {
        let file = fresh.join(path);
        if let Some(parent) = file.parent() {
            std::fs::create_dir_all(parent)?;
        }
        std::fs::write(&file, content)?;
        std::fs::set_permissions(&file, std::fs::Permissions::from_mode(*mode))?;
        if group.is_some() {
            std::os::unix::fs::chown(&file, None, group)?;
        }
    }
    // The swap: `..data_tmp` → the fresh directory, renamed over `..data` in one step.
    let tmp = dir.join("..data_tmp");
    let _ = std::fs::remove_file(&tmp);
    std::os::unix::fs::symlink(fresh.file_name().expect("a name"), &tmp)?;
    let old = std::fs::read_link(&data).ok();
    std::fs::rename(&tmp, &data)?;
    // The visible names: a link per top-level entry through `..data`; names no longer there go.
    let top: std::collections::BTreeSet<String> = payload.keys().filter_map(|p| p.split('/').next().map(str::to_string)).collect();
    for name in &top {
        let link = dir.join(name);
        if std::fs::symlink_metadata(&link).is_err() {
            std::os::unix::fs::symlink(Path::new("..data").join(name), &link)?;
        }
    }
    for entry in std::fs::read_dir(dir)?.flatten() {
        let name = entry.file_name().to_string_lossy().into_owned();
        if !name.starts_with("..") && !top.contains(&name) {
            let _ = std::fs::remove_file(entry.path());
        }
    }
    if let Some(old) = old.filter(|o| *o != fresh.file_name().map(PathBuf::from).unwrap_or_default()) {
        let _ = std::fs::remove_dir_all(dir.join(old));
    }
    Ok(true)
}

/// What `..data` holds now (None: nothing yet, or unreadable).
fn current_payload(data: &Path) -> Option<Payload> {
    fn walk(base: &Path, dir: &Path, out: &mut Payload) -> std::io::Result<()> {
        for entry in std::fs::read_dir(dir)? {
            let entry = entry?;
            let path = entry.path();
            if entry.file_type()?.is_dir() {
                walk(base, &path, out)?;
            } else {
                let rel = path.strip_prefix(base).map_err(std::io::Error::other)?.to_string_lossy().into_owned();
                let mode = entry.metadata()?.permissions().mode() & 0o777;
                out.insert(rel, (std::fs::read(&path)?, mode));
            }
        }
        Ok(())
    }
    let target = std::fs::canonicalize(data).ok()?;
    let mut out = Payload::new();
    walk(&target, &target, &mut out).ok()?;
    Some(out)
}

#[cfg(test)]
mod tests;
