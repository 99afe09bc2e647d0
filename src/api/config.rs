//! `Secret` and `ConfigMap` (v1), typed because the server itself reads them: bootstrap tokens are
//! Secrets, and `kube-public/cluster-info` is a ConfigMap.

use std::collections::BTreeMap;

use base64::Engine;
use base64::engine::general_purpose::STANDARD;
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

use super::meta::{ObjectMeta, UnknownFields};
use super::resource::{CONFIG_MAPS, Resource, ResourceType, SECRETS};
use super::time::Time;

/// The `type` of a Secret that holds a bootstrap (join) token.
pub const BOOTSTRAP_TOKEN_SECRET_TYPE: &str = "bootstrap.kubernetes.io/token";
/// The prefix of a bootstrap token Secret's name; the token id follows.
pub const BOOTSTRAP_TOKEN_SECRET_PREFIX: &str = "bootstrap-token-";
/// The namespace that holds bootstrap token Secrets.
pub const BOOTSTRAP_TOKEN_NAMESPACE: &str = "kube-system";

/// Confidential data; values are base64-encoded in `data`.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct Secret {
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub api_version: String,
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub kind: String,
    #[serde(default)]
    pub metadata: ObjectMeta,
    #[serde(default, rename = "type", skip_serializing_if = "Option::is_none")]
    pub secret_type: Option<String>,
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub data: BTreeMap<String, String>,
    /// Values as text, a write-only convenience: the API server merges them into `data` (encoded)
    /// and never stores or returns this field, as Kubernetes does.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub string_data: BTreeMap<String, String>,
    #[serde(flatten)]
    #[schemars(skip)]
    pub extra: UnknownFields,
}

impl Resource for Secret {
    const TYPE: ResourceType = SECRETS;
}

impl Secret {
    /// The decoded value of one key; `None` when absent or not base64.
    pub fn get(&self, key: &str) -> Option<Vec<u8>> {
        STANDARD.decode(self.data.get(key)?).ok()
    }

    /// The decoded value of one key as text.
    pub fn get_str(&self, key: &str) -> Option<String> {
        String::from_utf8(self.get(key)?).ok()
    }

    /// Sets one key, encoding the value.
    pub fn set(&mut self, key: impl Into<String>, value: impl AsRef<[u8]>) {
        self.data.insert(key.into(), STANDARD.encode(value));
    }

    /// The Secret that makes `<id>.<secret>` a bootstrap token valid until `expiration`, in the form
    /// the API server checks (kubeadm's layout).
    pub fn bootstrap_token(id: &str, secret: &str, expiration: Time) -> Self {
        let mut s = Secret {
            api_version: SECRETS.api_version(),
            kind: SECRETS.kind.into(),
            metadata: ObjectMeta::namespaced(BOOTSTRAP_TOKEN_NAMESPACE, format!("{BOOTSTRAP_TOKEN_SECRET_PREFIX}{id}")),
            secret_type: Some(BOOTSTRAP_TOKEN_SECRET_TYPE.into()),
            data: BTreeMap::new(),
            ..Default::default()
        };
        s.set("token-id", id);
        s.set("token-secret", secret);
        s.set("expiration", expiration.to_string());
        s.set("usage-bootstrap-authentication", "true");
        s
    }
}

/// Plain configuration data.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct ConfigMap {
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub api_version: String,
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub kind: String,
    #[serde(default)]
    pub metadata: ObjectMeta,
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub data: BTreeMap<String, String>,
    /// Values that are not UTF-8 text, base64-encoded.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub binary_data: BTreeMap<String, String>,
    #[serde(flatten)]
    #[schemars(skip)]
    pub extra: UnknownFields,
}

impl Resource for ConfigMap {
    const TYPE: ResourceType = CONFIG_MAPS;
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bootstrap_token_secret_has_kubeadm_layout() {
        let s = Secret::bootstrap_token("abcdef", "0123456789abcdef", Time::from_unix_seconds(0));
        assert_eq!(s.metadata.name, "bootstrap-token-abcdef");
        assert_eq!(s.metadata.namespace.as_deref(), Some("kube-system"));
        assert_eq!(s.get_str("token-secret").as_deref(), Some("0123456789abcdef"));
        assert_eq!(s.get_str("expiration").as_deref(), Some("1970-01-01T00:00:00Z"));
        let v = serde_json::to_value(&s).unwrap();
        assert_eq!(v["type"], "bootstrap.kubernetes.io/token");
        assert_eq!(v["data"]["token-id"], "YWJjZGVm");
    }
}
