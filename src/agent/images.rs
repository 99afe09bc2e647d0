//! Which images a pod's containers pull and with what credentials: Kubernetes' default pull
//! policy (`Always` for `:latest` or no tag, else `IfNotPresent`), an image reference's registry,
//! and the `kubernetes.io/dockerconfigjson` Secrets of `imagePullSecrets`.

use serde_json::Value;

pub use super::runtime::split_tag;
use super::runtime::RegistryAuth;
use crate::api::pod::Container;

/// Docker Hub's name in credentials and references without a registry.
const DOCKER_HUB: &str = "docker.io";

/// The registry a reference names: its first component when that looks like a host (has a `.` or
/// a `:`, or is `localhost`), else Docker Hub.
pub fn registry_of(image: &str) -> &str {
    match image.split_once('/') {
        Some((first, _)) if first.contains(['.', ':']) || first == "localhost" => first,
        _ => DOCKER_HUB,
    }
}

/// The container's pull policy, given or Kubernetes' default.
pub fn pull_policy(container: &Container) -> &str {
    if let Some(policy) = container.image_pull_policy.as_deref().filter(|p| !p.is_empty()) {
        return policy;
    }
    let image = container.image.as_str();
    let untagged = !image.contains('@') && split_tag(image).1 == "latest";
    if untagged { "Always" } else { "IfNotPresent" }
}

/// The credentials a `.dockerconfigjson` holds for `registry` (`auths` keys may be a bare host or a
/// URL; `auth` is base64 of `user:password`).
pub fn credentials(dockerconfigjson: &[u8], registry: &str) -> Option<RegistryAuth> {
    use base64::Engine;
    let config: Value = serde_json::from_slice(dockerconfigjson).ok()?;
    let auths = config.get("auths")?.as_object()?;
    let host_of = |key: &str| -> String {
        let key = key.trim_start_matches("https://").trim_start_matches("http://");
        let host = key.split('/').next().unwrap_or(key);
        if host == "index.docker.io" || host == "registry-1.docker.io" { DOCKER_HUB.to_string() } else { host.to_string() }
    };
    let (key, entry) = auths.iter().find(|(k, _)| host_of(k) == registry)?;
    let (mut username, mut password) = (entry.get("username").and_then(Value::as_str).map(str::to_string), entry.get("password").and_then(Value::as_str).map(str::to_string));
    if let Some(auth) = entry.get("auth").and_then(Value::as_str)
        && let Ok(decoded) = base64::engine::general_purpose::STANDARD.decode(auth)
        && let Some((u, p)) = String::from_utf8_lossy(&decoded).split_once(':')
    {
        username = Some(u.to_string());
        password = Some(p.to_string());
    }
    Some(RegistryAuth { server: key.clone(), username: username?, password: password? })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn references_split_into_registry_repository_and_tag() {
        assert_eq!(split_tag("busybox"), ("busybox", "latest"));
        assert_eq!(split_tag("172.17.0.1:5443/private/busybox:v1"), ("172.17.0.1:5443/private/busybox", "v1"));
        assert_eq!(split_tag("172.17.0.1:5443/busybox"), ("172.17.0.1:5443/busybox", "latest"));
        assert_eq!(split_tag("app@sha256:abc"), ("app", "sha256:abc"));
        assert_eq!(registry_of("172.17.0.1:5443/private/busybox:v1"), "172.17.0.1:5443");
        assert_eq!(registry_of("library/busybox"), "docker.io");
        assert_eq!(registry_of("localhost/app"), "localhost");
        assert_eq!(registry_of("busybox:1.36"), "docker.io");
    }

    #[test]
    fn the_default_pull_policy_is_kubernetes() {
        let c = |image: &str, policy: Option<&str>| Container { image: image.into(), image_pull_policy: policy.map(str::to_string), ..Default::default() };
        assert_eq!(pull_policy(&c("busybox", None)), "Always");
        assert_eq!(pull_policy(&c("busybox:latest", None)), "Always");
        assert_eq!(pull_policy(&c("busybox:1.36", None)), "IfNotPresent");
        assert_eq!(pull_policy(&c("busybox@sha256:abc", None)), "IfNotPresent");
        assert_eq!(pull_policy(&c("busybox", Some("Never"))), "Never");
    }

    #[test]
    fn credentials_come_from_a_dockerconfigjson_by_registry() {
        let config = br#"{"auths": {"172.17.0.1:5443": {"username": "ann", "password": "pw"}, "https://index.docker.io/v1/": {"auth": "Ym9iOnNlY3JldA=="}}}"#;
        let a = credentials(config, "172.17.0.1:5443").unwrap();
        assert_eq!((a.username.as_str(), a.password.as_str()), ("ann", "pw"));
        let hub = credentials(config, "docker.io").unwrap();
        assert_eq!((hub.username.as_str(), hub.password.as_str(), hub.server.as_str()), ("bob", "secret", "https://index.docker.io/v1/"));
        assert!(credentials(config, "quay.io").is_none());
        assert!(!format!("{a:?}").contains("pw"), "no password in Debug");
    }
}
