//! The operator's credentials in kubeconfig format: `$CLUSTERCTL_HOME/<cluster>/kubeconfig`, mode 0600.
//!
//! Written with one cluster, one user and one context, all named after the cluster (the user
//! `clusterctl-<cluster>`, a name no other tool's user entry takes when these entries are merged into
//! kubectl's own file by [`super::kubectl_config`]), with the CA, client certificate and key embedded
//! as base64 `*-data` fields, so that `kubectl --kubeconfig` can read it too:
//!
//! ```yaml
//! apiVersion: v1
//! kind: Config
//! clusters:
//! - name: demo
//!   cluster:
//!     server: https://demo-api.elb.example:6443
//!     certificate-authority-data: LS0t...
//! users:
//! - name: clusterctl-demo
//!   user:
//!     client-certificate-data: LS0t...
//!     client-key-data: LS0t...
//! contexts:
//! - name: demo
//!   context:
//!     cluster: demo
//!     user: clusterctl-demo
//! current-context: demo
//! ```
//!
//! Reading takes the current context (or the only one) and follows it to its cluster and user;
//! fields it does not use (`preferences`, `extensions`, ...) are ignored, credentials given as file
//! paths instead of `*-data` are refused with a message that says so.

use std::fmt;
use std::path::{Path, PathBuf};

use base64::Engine;
use base64::engine::general_purpose::STANDARD;
use serde::{Deserialize, Serialize};
use thiserror::Error;

/// Errors reading or writing a kubeconfig.
#[derive(Debug, Error)]
pub enum KubeconfigError {
    #[error("reading kubeconfig {path}")]
    Read { path: PathBuf, #[source] source: std::io::Error },
    #[error("writing kubeconfig {path}")]
    Write { path: PathBuf, #[source] source: std::io::Error },
    #[error("parsing kubeconfig")]
    Yaml(#[from] serde_yaml_ng::Error),
    #[error("kubeconfig: {0}")]
    Invalid(String),
}

/// What clusterctl needs from a kubeconfig: where the API is and the admin's credentials.
#[derive(Clone, PartialEq, Eq)]
pub struct Kubeconfig {
    pub cluster_name: String,
    /// `https://host:port`: the API load balancer.
    pub server: String,
    pub ca_pem: String,
    pub client_cert_pem: String,
    pub client_key_pem: String,
}

impl fmt::Debug for Kubeconfig {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Kubeconfig")
            .field("cluster_name", &self.cluster_name)
            .field("server", &self.server)
            .field("client_key_pem", &"<redacted>")
            .finish_non_exhaustive()
    }
}

#[derive(Debug, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
struct File {
    #[serde(rename = "apiVersion", default)]
    api_version: String,
    #[serde(default)]
    kind: String,
    #[serde(default)]
    clusters: Vec<Named<ClusterEntry>>,
    #[serde(default)]
    users: Vec<Named<UserEntry>>,
    #[serde(default)]
    contexts: Vec<Named<ContextEntry>>,
    #[serde(default)]
    current_context: String,
}

#[derive(Debug, Serialize, Deserialize)]
struct Named<T> {
    name: String,
    #[serde(flatten)]
    item: T,
}

#[derive(Debug, Serialize, Deserialize)]
struct ClusterEntry {
    cluster: ClusterData,
}

#[derive(Debug, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
struct ClusterData {
    server: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    certificate_authority_data: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    certificate_authority: Option<String>,
}

#[derive(Debug, Serialize, Deserialize)]
struct UserEntry {
    user: UserData,
}

#[derive(Debug, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
struct UserData {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    client_certificate_data: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    client_key_data: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    client_certificate: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    client_key: Option<String>,
}

#[derive(Debug, Serialize, Deserialize)]
struct ContextEntry {
    context: ContextData,
}

#[derive(Debug, Serialize, Deserialize)]
struct ContextData {
    cluster: String,
    user: String,
}

fn decode(field: &str, data: Option<&String>, file_form: Option<&String>) -> Result<String, KubeconfigError> {
    let Some(data) = data else {
        return Err(KubeconfigError::Invalid(match file_form {
            Some(path) => format!("{field} is given as a file ({path}); only embedded {field}-data is supported"),
            None => format!("{field}-data is missing"),
        }));
    };
    let bytes = STANDARD.decode(data.trim()).map_err(|e| KubeconfigError::Invalid(format!("{field}-data is not base64: {e}")))?;
    String::from_utf8(bytes).map_err(|_| KubeconfigError::Invalid(format!("{field}-data is not PEM text")))
}

fn find<'a, T>(items: &'a [Named<T>], kind: &str, name: &str) -> Result<&'a T, KubeconfigError> {
    items.iter().find(|i| i.name == name).map(|i| &i.item).ok_or_else(|| KubeconfigError::Invalid(format!("{kind} {name:?} is not defined")))
}

/// The name of a cluster's user entry.
pub fn user_name(cluster: &str) -> String {
    format!("clusterctl-{cluster}")
}

impl Kubeconfig {
    /// The user entry's name.
    pub fn user_name(&self) -> String {
        user_name(&self.cluster_name)
    }

    /// The kubeconfig YAML.
    pub fn to_yaml(&self) -> Result<String, KubeconfigError> {
        Ok(serde_yaml_ng::to_string(&self.file())?)
    }

    /// The kubeconfig as a generic YAML document (what [`super::kubectl_config`] merges).
    pub(crate) fn to_value(&self) -> Result<serde_yaml_ng::Value, KubeconfigError> {
        Ok(serde_yaml_ng::to_value(self.file())?)
    }

    fn file(&self) -> File {
        File {
            api_version: "v1".into(),
            kind: "Config".into(),
            clusters: vec![Named {
                name: self.cluster_name.clone(),
                item: ClusterEntry {
                    cluster: ClusterData { server: self.server.clone(), certificate_authority_data: Some(STANDARD.encode(&self.ca_pem)), certificate_authority: None },
                },
            }],
            users: vec![Named {
                name: self.user_name(),
                item: UserEntry {
                    user: UserData {
                        client_certificate_data: Some(STANDARD.encode(&self.client_cert_pem)),
                        client_key_data: Some(STANDARD.encode(&self.client_key_pem)),
                        client_certificate: None,
                        client_key: None,
                    },
                },
            }],
            contexts: vec![Named { name: self.cluster_name.clone(), item: ContextEntry { context: ContextData { cluster: self.cluster_name.clone(), user: self.user_name() } } }],
            current_context: self.cluster_name.clone(),
        }
    }

    /// Reads kubeconfig YAML through its current context (or its only context).
    pub fn from_yaml(text: &str) -> Result<Self, KubeconfigError> {
        let file: File = serde_yaml_ng::from_str(text)?;
        if !file.kind.is_empty() && file.kind != "Config" {
            return Err(KubeconfigError::Invalid(format!("kind is {:?}, expected Config", file.kind)));
        }
        let context_name = match (file.current_context.as_str(), file.contexts.as_slice()) {
            ("", [only]) => only.name.clone(),
            ("", _) => return Err(KubeconfigError::Invalid("no current-context, and not exactly one context".into())),
            (name, _) => name.to_string(),
        };
        let context = &find(&file.contexts, "context", &context_name)?.context;
        let cluster = &find(&file.clusters, "cluster", &context.cluster)?.cluster;
        let user = &find(&file.users, "user", &context.user)?.user;
        Ok(Kubeconfig {
            cluster_name: context.cluster.clone(),
            server: cluster.server.clone(),
            ca_pem: decode("certificate-authority", cluster.certificate_authority_data.as_ref(), cluster.certificate_authority.as_ref())?,
            client_cert_pem: decode("client-certificate", user.client_certificate_data.as_ref(), user.client_certificate.as_ref())?,
            client_key_pem: decode("client-key", user.client_key_data.as_ref(), user.client_key.as_ref())?,
        })
    }

    /// Writes the kubeconfig with mode 0600 (temporary file, then rename).
    pub fn write(&self, path: &Path) -> Result<(), KubeconfigError> {
        let yaml = self.to_yaml()?;
        crate::pki::write_file_atomic(path, yaml.as_bytes(), 0o600).map_err(|source| KubeconfigError::Write { path: path.to_path_buf(), source })
    }

    /// Reads a kubeconfig file.
    pub fn load(path: &Path) -> Result<Self, KubeconfigError> {
        let text = std::fs::read_to_string(path).map_err(|source| KubeconfigError::Read { path: path.to_path_buf(), source })?;
        Self::from_yaml(&text).map_err(|e| match e {
            KubeconfigError::Invalid(m) => KubeconfigError::Invalid(format!("{}: {m}", path.display())),
            KubeconfigError::Yaml(y) => KubeconfigError::Invalid(format!("{}: {y}", path.display())),
            other => other,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::PermissionsExt;

    fn sample() -> Kubeconfig {
        Kubeconfig {
            cluster_name: "demo".into(),
            server: "https://demo-api.elb.localhost.localstack.cloud:6443".into(),
            ca_pem: "-----BEGIN CERTIFICATE-----\nCA\n-----END CERTIFICATE-----\n".into(),
            client_cert_pem: "-----BEGIN CERTIFICATE-----\nADMIN\n-----END CERTIFICATE-----\n".into(),
            client_key_pem: "-----BEGIN PRIVATE KEY-----\nKEY\n-----END PRIVATE KEY-----\n".into(),
        }
    }

    #[test]
    fn a_kubeconfig_round_trips_through_yaml() {
        let yaml = sample().to_yaml().unwrap();
        assert_eq!(Kubeconfig::from_yaml(&yaml).unwrap(), sample());
    }

    #[test]
    fn the_yaml_has_the_kubernetes_shape() {
        let yaml = sample().to_yaml().unwrap();
        let v: serde_yaml_ng::Value = serde_yaml_ng::from_str(&yaml).unwrap();
        assert_eq!(v["apiVersion"].as_str(), Some("v1"));
        assert_eq!(v["kind"].as_str(), Some("Config"));
        assert_eq!(v["current-context"].as_str(), Some("demo"));
        assert_eq!(v["clusters"][0]["name"].as_str(), Some("demo"));
        assert_eq!(v["clusters"][0]["cluster"]["server"].as_str(), Some("https://demo-api.elb.localhost.localstack.cloud:6443"));
        let ca = v["clusters"][0]["cluster"]["certificate-authority-data"].as_str().unwrap();
        assert_eq!(STANDARD.decode(ca).unwrap(), sample().ca_pem.as_bytes());
        assert_eq!(v["users"][0]["name"].as_str(), Some("clusterctl-demo"));
        assert!(v["users"][0]["user"]["client-certificate-data"].is_string());
        assert!(v["users"][0]["user"]["client-key-data"].is_string());
        assert_eq!(v["contexts"][0]["context"]["cluster"].as_str(), Some("demo"));
        assert_eq!(v["contexts"][0]["context"]["user"].as_str(), Some("clusterctl-demo"));
    }

    #[test]
    fn the_file_is_written_0600_and_loads_back() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("demo/kubeconfig");
        sample().write(&path).unwrap();
        assert_eq!(std::fs::metadata(&path).unwrap().permissions().mode() & 0o777, 0o600);
        assert_eq!(Kubeconfig::load(&path).unwrap(), sample());
        let mut other = sample();
        other.server = "https://10.0.0.1:6443".into();
        other.write(&path).unwrap();
        assert_eq!(Kubeconfig::load(&path).unwrap().server, "https://10.0.0.1:6443");
        assert_eq!(std::fs::metadata(&path).unwrap().permissions().mode() & 0o777, 0o600);
    }

    #[test]
    fn a_kubectl_style_file_with_several_contexts_is_read_through_current_context() {
        let data = |s: &str| STANDARD.encode(s);
        let yaml = format!(
            r#"
apiVersion: v1
kind: Config
preferences: {{}}
clusters:
- name: other
  cluster: {{server: "https://other:6443", certificate-authority-data: {}}}
- name: demo
  cluster:
    server: https://demo:6443
    certificate-authority-data: {}
    extensions: []
users:
- name: admin
  user: {{client-certificate-data: {}, client-key-data: {}}}
contexts:
- name: a
  context: {{cluster: other, user: admin}}
- name: b
  context: {{cluster: demo, user: admin, namespace: default}}
current-context: b
"#,
            data("OTHER CA"),
            data("DEMO CA"),
            data("CERT"),
            data("KEY")
        );
        let kc = Kubeconfig::from_yaml(&yaml).unwrap();
        assert_eq!((kc.cluster_name.as_str(), kc.server.as_str(), kc.ca_pem.as_str()), ("demo", "https://demo:6443", "DEMO CA"));
        assert_eq!((kc.client_cert_pem.as_str(), kc.client_key_pem.as_str()), ("CERT", "KEY"));
    }

    #[test]
    fn credentials_given_as_files_or_missing_are_refused_with_a_reason() {
        let yaml = sample().to_yaml().unwrap();
        let v = yaml.replace("client-key-data:", "client-key: /home/me/key.pem\n    x-unused:");
        let err = Kubeconfig::from_yaml(&v).unwrap_err().to_string();
        assert!(err.contains("client-key is given as a file"), "{err}");
        let v = yaml.replace("current-context: demo", "current-context: nope");
        assert!(Kubeconfig::from_yaml(&v).unwrap_err().to_string().contains("context \"nope\""));
        assert!(Kubeconfig::from_yaml("kind: Pod\n").is_err());
        assert!(Kubeconfig::from_yaml(": not yaml").is_err());
    }

    #[test]
    fn load_names_the_file_in_errors_and_debug_hides_the_key() {
        let dir = tempfile::tempdir().unwrap();
        let missing = dir.path().join("missing");
        assert!(matches!(Kubeconfig::load(&missing), Err(KubeconfigError::Read { .. })));
        let bad = dir.path().join("bad");
        std::fs::write(&bad, "kind: Config\n").unwrap();
        assert!(Kubeconfig::load(&bad).unwrap_err().to_string().contains(&bad.display().to_string()));
        assert!(!format!("{:?}", sample()).contains("KEY"));
    }
}
