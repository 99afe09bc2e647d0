//! Pod Security admission, as Kubernetes' built-in `PodSecurity` plugin enforces the Pod Security
//! Standards: a namespace labelled `pod-security.kubernetes.io/enforce: baseline` or `restricted`
//! refuses a new pod that breaks that level, with every reason (`403 Forbidden`, Kubernetes'
//! wording: `pods "x" is forbidden: violates PodSecurity "restricted:latest": ...`). Without the
//! label (or `privileged`) everything is allowed, as in Kubernetes. Checked on create only; the
//! fields checked cannot change on a pod afterwards.

use serde_json::Value;

use super::error::ApiError;
use crate::api::schema::{FieldError, FieldErrorKind};
use super::store::Store;
use crate::api::pod::{Container, Pod};
use crate::api::resource::{NAMESPACES, PODS};

/// The namespace label that names the enforced level.
pub const ENFORCE_LABEL: &str = "pod-security.kubernetes.io/enforce";

/// The levels, least to most restrictive.
pub const LEVELS: [&str; 3] = ["privileged", "baseline", "restricted"];

/// The capabilities `baseline` allows to be added (Docker's default set).
const BASELINE_CAPABILITIES: [&str; 13] = ["AUDIT_WRITE", "CHOWN", "DAC_OVERRIDE", "FOWNER", "FSETID", "KILL", "MKNOD", "NET_BIND_SERVICE", "SETFCAP", "SETGID", "SETPCAP", "SETUID", "SYS_CHROOT"];

/// The volume types `restricted` allows.
const RESTRICTED_VOLUMES: [&str; 8] = ["configMap", "csi", "downwardAPI", "emptyDir", "ephemeral", "persistentVolumeClaim", "projected", "secret"];

fn quoted(names: &[String]) -> String {
    names.iter().map(|n| format!("{n:?}")).collect::<Vec<_>>().join(", ")
}

fn containers(pod: &Pod) -> impl Iterator<Item = &Container> {
    pod.spec.init_containers.iter().chain(&pod.spec.containers)
}

/// "container "a" must ..." or "containers "a", "b" must ...".
fn who(names: &[String]) -> String {
    if names.len() == 1 { format!("container {}", quoted(names)) } else { format!("containers {}", quoted(names)) }
}

/// The reasons `pod` breaks `level` (none: allowed), as Kubernetes words them.
pub fn violations(level: &str, pod: &Pod) -> Vec<String> {
    let mut out = Vec::new();
    if level == "privileged" {
        return out;
    }
    let spec = &pod.spec;
    let names = |pred: &dyn Fn(&Container) -> bool| containers(pod).filter(|c| pred(c)).map(|c| c.name.clone()).collect::<Vec<_>>();
    // baseline
    let host: Vec<&str> = [("hostNetwork", spec.host_network), ("hostPID", spec.host_pid), ("hostIPC", spec.host_ipc)].into_iter().filter(|(_, set)| *set).map(|(f, _)| f).collect();
    if !host.is_empty() {
        out.push(format!("host namespaces ({})", host.iter().map(|h| format!("{h}=true")).collect::<Vec<_>>().join(", ")));
    }
    let privileged = names(&|c| spec.security_of(c).privileged);
    if !privileged.is_empty() {
        out.push(format!("privileged ({} must not set securityContext.privileged=true)", who(&privileged)));
    }
    let beyond_baseline = |c: &Container| -> Vec<String> {
        spec.security_of(c).add.iter().map(|a| a.trim_start_matches("CAP_").to_string()).filter(|a| !BASELINE_CAPABILITIES.contains(&a.as_str())).collect()
    };
    let beyond = names(&|c| !beyond_baseline(c).is_empty());
    if !beyond.is_empty() {
        let mut added: Vec<String> = containers(pod).flat_map(beyond_baseline).collect();
        added.sort();
        added.dedup();
        out.push(format!("non-default capabilities ({} must not include {} in securityContext.capabilities.add)", who(&beyond), quoted(&added)));
    }
    let host_paths: Vec<String> = spec.volumes.iter().filter(|v| v.host_path.is_some()).map(|v| v.name.clone()).collect();
    if !host_paths.is_empty() {
        out.push(format!("hostPath volumes (volume{} {})", if host_paths.len() == 1 { "" } else { "s" }, quoted(&host_paths)));
    }
    let host_ports: Vec<String> = containers(pod).flat_map(|c| &c.ports).filter_map(|p| p.host_port.filter(|h| *h != 0)).map(|h| h.to_string()).collect();
    if !host_ports.is_empty() {
        out.push(format!("hostPort (containers use hostPorts {})", host_ports.join(", ")));
    }
    let unconfined = names(&|c| spec.security_of(c).seccomp.is_some_and(|s| s.profile_type == "Unconfined"));
    if !unconfined.is_empty() {
        out.push(format!("seccompProfile ({} must not set securityContext.seccompProfile.type to \"Unconfined\")", who(&unconfined)));
    }
    if level != "restricted" {
        return out;
    }
    // restricted
    let bad_volumes: Vec<String> = spec
        .volumes
        .iter()
        .filter(|v| {
            let typed = [(v.empty_dir.is_some(), "emptyDir"), (v.config_map.is_some(), "configMap"), (v.secret.is_some(), "secret"), (v.downward_api.is_some(), "downwardAPI"), (v.projected.is_some(), "projected")];
            let known = typed.iter().any(|(set, _)| *set);
            let other_ok = v.extra.0.keys().all(|k| RESTRICTED_VOLUMES.contains(&k.as_str()));
            v.host_path.is_some() || (!known && !other_ok)
        })
        .map(|v| v.name.clone())
        .collect();
    if !bad_volumes.is_empty() {
        out.push(format!("restricted volume types (volume{} {} use{} a restricted volume type)", if bad_volumes.len() == 1 { "" } else { "s" }, quoted(&bad_volumes), if bad_volumes.len() == 1 { "s" } else { "" }));
    }
    let escalation = names(&|c| spec.security_of(c).allow_privilege_escalation != Some(false));
    if !escalation.is_empty() {
        out.push(format!("allowPrivilegeEscalation != false ({} must set securityContext.allowPrivilegeEscalation=false)", who(&escalation)));
    }
    let not_dropped = names(&|c| !spec.security_of(c).drop.iter().any(|d| d == "ALL"));
    let wrong_add = names(&|c| spec.security_of(c).add.iter().any(|a| a.trim_start_matches("CAP_") != "NET_BIND_SERVICE"));
    if !not_dropped.is_empty() || !wrong_add.is_empty() {
        let mut parts = Vec::new();
        if !not_dropped.is_empty() {
            parts.push(format!("{} must set securityContext.capabilities.drop=[\"ALL\"]", who(&not_dropped)));
        }
        if !wrong_add.is_empty() {
            parts.push(format!("{} must not include capabilities beyond \"NET_BIND_SERVICE\" in securityContext.capabilities.add", who(&wrong_add)));
        }
        out.push(format!("unrestricted capabilities ({})", parts.join("; ")));
    }
    let pod_non_root = spec.security_context.as_ref().and_then(|s| s.run_as_non_root);
    let root_allowed = names(&|c| !spec.security_of(c).run_as_non_root);
    if pod_non_root == Some(false) || !root_allowed.is_empty() {
        out.push(if root_allowed.len() == containers(pod).count() && pod_non_root != Some(false) {
            "runAsNonRoot != true (pod or containers ".to_string() + &quoted(&root_allowed) + " must set securityContext.runAsNonRoot=true)"
        } else {
            format!("runAsNonRoot != true ({} must not set securityContext.runAsNonRoot=false)", who(&root_allowed))
        });
    }
    let as_root = names(&|c| spec.security_of(c).run_as_user == Some(0));
    if !as_root.is_empty() {
        out.push(format!("runAsUser=0 ({} must not set runAsUser=0)", who(&as_root)));
    }
    let no_seccomp = names(&|c| !spec.security_of(c).seccomp.is_some_and(|s| s.profile_type == "RuntimeDefault" || s.profile_type == "Localhost"));
    if !no_seccomp.is_empty() {
        out.push(format!(
            "seccompProfile (pod or {} must set securityContext.seccompProfile.type to \"RuntimeDefault\" or \"Localhost\")",
            who(&no_seccomp)
        ));
    }
    out
}

/// A namespace's Pod Security labels name levels that exist (422 otherwise: an unknown level
/// would silently enforce nothing).
pub fn check_labels(name: &str, namespace: &Value) -> Result<(), ApiError> {
    let labels = namespace.pointer("/metadata/labels").and_then(Value::as_object);
    let errors: Vec<FieldError> = labels
        .into_iter()
        .flatten()
        .filter(|(k, _)| *k == ENFORCE_LABEL || *k == "pod-security.kubernetes.io/warn" || *k == "pod-security.kubernetes.io/audit")
        .filter(|(_, v)| !v.as_str().is_some_and(|v| LEVELS.contains(&v)))
        .map(|(k, v)| FieldError {
            kind: FieldErrorKind::NotSupported,
            field: format!("metadata.labels[{k}]"),
            message: format!("Unsupported value: {v}: supported values: \"privileged\", \"baseline\", \"restricted\""),
        })
        .collect();
    if errors.is_empty() { Ok(()) } else { Err(ApiError::invalid_fields(&NAMESPACES, name, &errors)) }
}

/// The level a namespace enforces (`privileged` when unlabelled or when it does not exist yet).
pub async fn enforced_level(store: &dyn Store, namespace: &str) -> Result<String, ApiError> {
    let key = NAMESPACES.store_key(None, namespace);
    let stored = store.get(&key).await.map_err(|e| ApiError::from_store(e, &NAMESPACES, namespace))?;
    let level = stored.as_ref().and_then(|s| s.value.pointer("/metadata/labels")).and_then(|l| l.get(ENFORCE_LABEL)).and_then(Value::as_str).unwrap_or("privileged");
    Ok(level.to_string())
}

/// Admits a new pod into `namespace`: 403 with every reason when it breaks the namespace's level.
pub async fn admit(store: &dyn Store, namespace: &str, name: &str, pod: &Value) -> Result<(), ApiError> {
    let level = enforced_level(store, namespace).await?;
    if level == "privileged" {
        return Ok(());
    }
    let Ok(pod) = serde_json::from_value::<Pod>(pod.clone()) else { return Ok(()) }; // validation has decoded it
    let reasons = violations(&level, &pod);
    if reasons.is_empty() {
        return Ok(());
    }
    Err(ApiError::forbidden(&PODS, name, format!("pods {name:?} is forbidden: violates PodSecurity \"{level}:latest\": {}", reasons.join(", "))))
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    fn pod(spec: Value) -> Pod {
        serde_json::from_value(json!({"metadata": {"name": "p"}, "spec": spec})).unwrap()
    }

    #[test]
    fn a_plain_pod_is_baseline_but_not_restricted() {
        let p = pod(json!({"containers": [{"name": "app", "image": "i"}]}));
        assert!(violations("baseline", &p).is_empty());
        let reasons = violations("restricted", &p);
        assert_eq!(reasons.len(), 4, "{reasons:#?}");
        assert!(reasons[0].starts_with("allowPrivilegeEscalation != false (container \"app\" must set"), "{reasons:?}");
        assert!(reasons.iter().any(|r| r.starts_with("unrestricted capabilities")));
        assert!(reasons.iter().any(|r| r.starts_with("runAsNonRoot != true")));
        assert!(reasons.iter().any(|r| r.starts_with("seccompProfile")));
    }

    #[test]
    fn a_privileged_pod_breaks_baseline_with_every_reason() {
        let p = pod(json!({"hostNetwork": true, "containers": [{"name": "app", "image": "i", "ports": [{"containerPort": 80, "hostPort": 8080}],
            "securityContext": {"privileged": true, "capabilities": {"add": ["NET_ADMIN", "CHOWN"]}}}],
            "volumes": [{"name": "root", "hostPath": {"path": "/"}}]}));
        let reasons = violations("baseline", &p);
        assert_eq!(reasons, vec![
            "host namespaces (hostNetwork=true)".to_string(),
            "privileged (container \"app\" must not set securityContext.privileged=true)".into(),
            "non-default capabilities (container \"app\" must not include \"NET_ADMIN\" in securityContext.capabilities.add)".into(),
            "hostPath volumes (volume \"root\")".into(),
            "hostPort (containers use hostPorts 8080)".into(),
        ]);
        assert!(violations("privileged", &p).is_empty());
    }

    #[test]
    fn a_pod_written_for_restricted_passes_it() {
        let p = pod(json!({"securityContext": {"runAsNonRoot": true, "runAsUser": 1000, "seccompProfile": {"type": "RuntimeDefault"}},
            "containers": [{"name": "app", "image": "i", "securityContext": {"allowPrivilegeEscalation": false, "capabilities": {"drop": ["ALL"], "add": ["NET_BIND_SERVICE"]}}}],
            "volumes": [{"name": "c", "configMap": {"name": "x"}}, {"name": "d", "persistentVolumeClaim": {"claimName": "x"}}]}));
        assert_eq!(violations("restricted", &p), Vec::<String>::new());
    }
}
