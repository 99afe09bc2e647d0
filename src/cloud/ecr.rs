//! Amazon ECR's registry credentials, as kubelet's ECR credential provider gets them on EKS.
//!
//! An image of a registry `<account>.dkr.ecr[-fips].<region>.amazonaws.com[.cn]` is pulled with
//! the user and password inside an authorization token that `ecr:GetAuthorizationToken` gives the
//! machine's own identity: the standard credential chain, which on an instance finds its
//! instance profile's role through the metadata service (the workers' and masters' roles allow
//! exactly ECR's read calls: `provision::iam::AGENT_CALLS`). The node agent asks through
//! [`RegistryTokens`] (`src/agent/images.rs` keeps the tokens until they are near expiry). No SDK
//! type leaves this file.

use std::collections::HashMap;
use std::time::{Duration, SystemTime};

use async_trait::async_trait;
use aws_config::retry::RetryConfig;
use aws_config::timeout::TimeoutConfig;
use aws_config::{BehaviorVersion, Region};

/// An ECR registry, from its host name.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct EcrRegistry {
    /// The registry's (its account's) 12-digit id.
    pub account: String,
    pub region: String,
}

impl EcrRegistry {
    /// The registry a host names, if it is ECR's: `<12 digits>.dkr.ecr.<region>.amazonaws.com`
    /// (`.amazonaws.com.cn` in China; `dkr.ecr-fips.` for FIPS endpoints), as kubelet's provider
    /// matches it. Anything else (a port, other labels) is not ECR.
    pub fn parse(host: &str) -> Option<Self> {
        let host = host.to_ascii_lowercase();
        let rest = host.strip_suffix(".amazonaws.com").or_else(|| host.strip_suffix(".amazonaws.com.cn"))?;
        let (account, rest) = rest.split_once('.')?;
        let region = rest.strip_prefix("dkr.ecr.").or_else(|| rest.strip_prefix("dkr.ecr-fips."))?;
        let account_ok = account.len() == 12 && account.bytes().all(|b| b.is_ascii_digit());
        let region_ok = !region.is_empty() && region.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-') && region.bytes().next().is_some_and(|b| b.is_ascii_alphanumeric());
        (account_ok && region_ok).then(|| EcrRegistry { account: account.into(), region: region.into() })
    }
}

/// The credentials an authorization token holds, and until when.
#[derive(Clone, PartialEq, Eq)]
pub struct AuthorizationToken {
    pub username: String,
    pub password: String,
    /// None when ECR did not say.
    pub expires_at: Option<SystemTime>,
}

impl std::fmt::Debug for AuthorizationToken {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // never the password (it would reach logs)
        f.debug_struct("AuthorizationToken").field("username", &self.username).field("expires_at", &self.expires_at).finish_non_exhaustive()
    }
}

/// The user and password of an authorization token: base64 of `user:password` (the user is `AWS`).
pub fn decode_token(token: &str) -> Result<(String, String), String> {
    use base64::Engine;
    let bytes = base64::engine::general_purpose::STANDARD.decode(token.trim()).map_err(|e| format!("the authorization token is not base64: {e}"))?;
    let text = String::from_utf8(bytes).map_err(|_| "the authorization token is not text".to_string())?;
    let (user, password) = text.split_once(':').ok_or_else(|| "the authorization token is not user:password".to_string())?;
    if user.is_empty() || password.is_empty() {
        return Err("the authorization token has an empty user or password".into());
    }
    Ok((user.into(), password.into()))
}

/// Where an agent gets ECR's authorization tokens.
#[async_trait]
pub trait RegistryTokens: Send + Sync {
    /// A token for `registry` (asked of ECR in the registry's region).
    async fn authorization_token(&self, registry: &EcrRegistry) -> Result<AuthorizationToken, String>;
}

/// ECR through aws-sdk-ecr on the machine's own credentials (the standard chain: on an instance,
/// its role through the metadata service).
pub struct EcrTokens {
    /// An endpoint other than AWS's: only the LocalStack harness's, as the machine reaches it.
    endpoint_url: Option<String>,
    /// One client per region, made at first use (its credential provider caches the role's keys).
    clients: tokio::sync::Mutex<HashMap<String, aws_sdk_ecr::Client>>,
}

impl EcrTokens {
    pub fn new(endpoint_url: Option<String>) -> Self {
        EcrTokens { endpoint_url, clients: tokio::sync::Mutex::default() }
    }

    async fn client(&self, region: &str) -> aws_sdk_ecr::Client {
        let mut clients = self.clients.lock().await;
        if let Some(c) = clients.get(region) {
            return c.clone();
        }
        let mut loader = aws_config::defaults(BehaviorVersion::latest())
            .retry_config(RetryConfig::standard().with_max_attempts(3))
            .timeout_config(TimeoutConfig::builder().connect_timeout(Duration::from_secs(5)).operation_attempt_timeout(Duration::from_secs(20)).build())
            .http_client(super::aws::https_client())
            .region(Region::new(region.to_string()));
        if let Some(url) = &self.endpoint_url {
            loader = loader.endpoint_url(url);
        }
        let client = aws_sdk_ecr::Client::new(&loader.load().await);
        clients.insert(region.to_string(), client.clone());
        client
    }
}

#[async_trait]
impl RegistryTokens for EcrTokens {
    async fn authorization_token(&self, registry: &EcrRegistry) -> Result<AuthorizationToken, String> {
        let client = self.client(&registry.region).await;
        // Without registry ids: the token is good for every registry the identity may read.
        let out = client.get_authorization_token().send().await.map_err(|e| format!("ecr:GetAuthorizationToken in {}: {}", registry.region, causes(&e)))?;
        let data = out.authorization_data().first().ok_or_else(|| "ecr:GetAuthorizationToken returned no authorization data".to_string())?;
        let token = data.authorization_token().ok_or_else(|| "ecr:GetAuthorizationToken returned no token".to_string())?;
        let (username, password) = decode_token(token)?;
        let expires_at = data.expires_at().and_then(|t| SystemTime::try_from(*t).ok());
        Ok(AuthorizationToken { username, password, expires_at })
    }
}

/// An error and its causes, each said once (`a: b: c`), without the SDK's debug dump of the
/// response it came with.
fn causes(e: &(dyn std::error::Error + 'static)) -> String {
    let mut said: Vec<String> = Vec::new();
    let mut next = Some(e);
    while let Some(err) = next {
        let text = err.to_string();
        if !said.iter().any(|s| s.contains(&text)) {
            said.push(text);
        }
        next = err.source();
    }
    said.join(": ")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ecr_hosts_are_recognised_as_kubelet_recognises_them() {
        let r = EcrRegistry::parse("123456789012.dkr.ecr.us-east-1.amazonaws.com").unwrap();
        assert_eq!((r.account.as_str(), r.region.as_str()), ("123456789012", "us-east-1"));
        assert_eq!(EcrRegistry::parse("123456789012.dkr.ecr.cn-north-1.amazonaws.com.cn").unwrap().region, "cn-north-1");
        assert_eq!(EcrRegistry::parse("123456789012.dkr.ecr-fips.us-gov-west-1.amazonaws.com").unwrap().region, "us-gov-west-1");
        assert_eq!(EcrRegistry::parse("123456789012.DKR.ECR.eu-west-1.AMAZONAWS.COM").unwrap().region, "eu-west-1");
        for not in [
            "docker.io",
            "172.17.0.1:5443",
            "12345678901.dkr.ecr.us-east-1.amazonaws.com",
            "1234567890123.dkr.ecr.us-east-1.amazonaws.com",
            "abcdefghijkl.dkr.ecr.us-east-1.amazonaws.com",
            "123456789012.dkr.ecr.us-east-1.amazonaws.com:443",
            "123456789012.dkr.ecr.amazonaws.com",
            "123456789012.dkr.ecr.us.east.amazonaws.com",
            "123456789012.dkr.ecr.us-east-1.amazonaws.com.evil.example",
            "public.ecr.aws",
        ] {
            assert_eq!(EcrRegistry::parse(not), None, "{not}");
        }
    }

    #[test]
    fn a_token_is_base64_of_user_and_password() {
        use base64::Engine;
        let token = base64::engine::general_purpose::STANDARD.encode("AWS:000000000000-auth-token");
        assert_eq!(decode_token(&token).unwrap(), ("AWS".to_string(), "000000000000-auth-token".to_string()));
        assert_eq!(decode_token(&base64::engine::general_purpose::STANDARD.encode("AWS:a:b")).unwrap().1, "a:b");
        assert!(decode_token("not base64!").is_err());
        assert!(decode_token(&base64::engine::general_purpose::STANDARD.encode("nocolon")).is_err());
        assert!(decode_token(&base64::engine::general_purpose::STANDARD.encode("AWS:")).is_err());
        let shown = format!("{:?}", AuthorizationToken { username: "AWS".into(), password: "secret-pw".into(), expires_at: None });
        assert!(!shown.contains("secret-pw"), "{shown}");
    }
}
