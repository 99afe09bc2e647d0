//! Which images a pod's containers pull and with what credentials: Kubernetes' default pull
//! policy (`Always` for `:latest` or no tag, else `IfNotPresent`), an image reference's registry,
//! the `kubernetes.io/dockerconfigjson` Secrets of `imagePullSecrets`, and, for Amazon ECR's
//! registries that no pull secret names, the node's own ECR credentials ([`EcrCredentials`]).

use std::collections::HashMap;
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use serde_json::Value;

use crate::cloud::ecr::{EcrRegistry, RegistryTokens};

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

/// How long before its expiry a token is asked for again (ECR's last 12 hours).
const TOKEN_MARGIN: Duration = Duration::from_secs(30 * 60);

/// The node's credentials for Amazon ECR registries, as kubelet's ECR credential provider gives
/// them: an authorization token from the machine's instance role, per registry host, kept until
/// [`TOKEN_MARGIN`] before it expires (one that does not say when, or is past that, is not kept).
pub struct EcrCredentials {
    tokens: Arc<dyn RegistryTokens>,
    cache: tokio::sync::Mutex<HashMap<String, (RegistryAuth, SystemTime)>>,
}

impl EcrCredentials {
    pub fn new(tokens: Arc<dyn RegistryTokens>) -> Self {
        EcrCredentials { tokens, cache: tokio::sync::Mutex::default() }
    }

    /// The credentials for `registry` (a host) if it is ECR's (None otherwise), or why there are none.
    /// The cache stays locked while ECR is asked, so that a node starting many pods of one
    /// registry asks once.
    pub async fn for_registry(&self, registry: &str) -> Option<Result<RegistryAuth, String>> {
        let ecr = EcrRegistry::parse(registry)?;
        let mut cache = self.cache.lock().await;
        let now = SystemTime::now();
        if let Some((auth, until)) = cache.get(registry)
            && now < *until
        {
            return Some(Ok(auth.clone()));
        }
        cache.remove(registry);
        let token = match self.tokens.authorization_token(&ecr).await {
            Ok(t) => t,
            Err(e) => return Some(Err(e)),
        };
        let auth = RegistryAuth { server: registry.to_string(), username: token.username, password: token.password };
        if let Some(until) = token.expires_at.and_then(|at| at.checked_sub(TOKEN_MARGIN)).filter(|until| *until > now) {
            cache.insert(registry.to_string(), (auth.clone(), until));
        }
        Some(Ok(auth))
    }
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

    /// ECR as a test sees it: counts the tokens asked for, each valid for `lifetime`.
    struct CountedTokens {
        asked: std::sync::Mutex<Vec<EcrRegistry>>,
        lifetime: Option<Duration>,
        fail: bool,
    }

    #[async_trait::async_trait]
    impl RegistryTokens for CountedTokens {
        async fn authorization_token(&self, registry: &EcrRegistry) -> Result<crate::cloud::ecr::AuthorizationToken, String> {
            let mut asked = self.asked.lock().unwrap();
            asked.push(registry.clone());
            if self.fail {
                return Err("ecr:GetAuthorizationToken in us-east-1: no credentials".into());
            }
            let expires_at = self.lifetime.map(|l| SystemTime::now() + l);
            Ok(crate::cloud::ecr::AuthorizationToken { username: "AWS".into(), password: format!("token-{}", asked.len()), expires_at })
        }
    }

    fn ecr(lifetime: Option<Duration>, fail: bool) -> (Arc<CountedTokens>, EcrCredentials) {
        let tokens = Arc::new(CountedTokens { asked: Default::default(), lifetime, fail });
        (tokens.clone(), EcrCredentials::new(tokens))
    }

    #[tokio::test]
    async fn ecr_registries_get_the_nodes_token_and_keep_it_until_near_expiry() {
        let host = "123456789012.dkr.ecr.eu-west-1.amazonaws.com";
        let (tokens, creds) = ecr(Some(Duration::from_secs(12 * 3600)), false);
        let first = creds.for_registry(host).await.unwrap().unwrap();
        assert_eq!((first.server.as_str(), first.username.as_str(), first.password.as_str()), (host, "AWS", "token-1"));
        assert_eq!(creds.for_registry(host).await.unwrap().unwrap(), first, "kept");
        assert_eq!(*tokens.asked.lock().unwrap(), vec![EcrRegistry { account: "123456789012".into(), region: "eu-west-1".into() }]);
        // Not ECR: no credentials of the node's, no call.
        assert!(creds.for_registry("172.17.0.1:5443").await.is_none());
        assert!(creds.for_registry("docker.io").await.is_none());
        assert_eq!(tokens.asked.lock().unwrap().len(), 1);
    }

    #[tokio::test]
    async fn a_token_near_or_past_its_expiry_or_without_one_is_asked_for_again() {
        let host = "123456789012.dkr.ecr.us-east-1.amazonaws.com";
        for lifetime in [Some(Duration::from_secs(60)), None] {
            let (tokens, creds) = ecr(lifetime, false);
            assert_eq!(creds.for_registry(host).await.unwrap().unwrap().password, "token-1");
            assert_eq!(creds.for_registry(host).await.unwrap().unwrap().password, "token-2", "{lifetime:?}");
            assert_eq!(tokens.asked.lock().unwrap().len(), 2);
        }
    }

    #[tokio::test]
    async fn ecrs_refusal_is_the_answer() {
        let (_, creds) = ecr(None, true);
        let err = creds.for_registry("123456789012.dkr.ecr.us-east-1.amazonaws.com").await.unwrap().unwrap_err();
        assert!(err.contains("no credentials"), "{err}");
    }
}
