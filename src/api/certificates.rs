//! `CertificateSigningRequest` (certificates.k8s.io/v1): how a joining node, holding only a bootstrap
//! token, obtains its client certificate.

use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

use super::meta::{ObjectMeta, UnknownFields};
use super::resource::{CERTIFICATE_SIGNING_REQUESTS, Resource, ResourceType};
use super::time::Time;

/// The signer for node client certificates (`CN=system:node:<name>, O=system:nodes`).
pub const KUBELET_CLIENT_SIGNER: &str = "kubernetes.io/kube-apiserver-client-kubelet";
/// The signer of a node agent's serving certificate (what the API server verifies when it
/// connects to the agent for a pod's logs, exec, attach and port-forward).
pub const KUBELET_SERVING_SIGNER: &str = "kubernetes.io/kubelet-serving";

/// On a joining node's request (bootstrap token): its instance identity document, base64, as the
/// cloud's metadata service gave it (ours, not Kubernetes': the API server checks with the cloud
/// that the machine is the cluster's and carries the node name it asks for).
pub const INSTANCE_IDENTITY_DOCUMENT_ANNOTATION: &str = "clusterctl.io/instance-identity-document";
/// The cloud's signature of that document (base64 RSA-SHA256, AWS's `instance-identity/signature`).
pub const INSTANCE_IDENTITY_SIGNATURE_ANNOTATION: &str = "clusterctl.io/instance-identity-signature";

/// A request for a certificate, and the certificate once issued.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct CertificateSigningRequest {
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub api_version: String,
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub kind: String,
    #[serde(default)]
    pub metadata: ObjectMeta,
    #[serde(default)]
    pub spec: CertificateSigningRequestSpec,
    #[serde(default)]
    pub status: CertificateSigningRequestStatus,
    #[serde(flatten)]
    #[schemars(skip)]
    pub extra: UnknownFields,
}

impl Resource for CertificateSigningRequest {
    const TYPE: ResourceType = CERTIFICATE_SIGNING_REQUESTS;
}

/// What is asked for; `username` and `groups` are filled by the server from the requester.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct CertificateSigningRequestSpec {
    /// The PKCS#10 request in PEM, base64-encoded.
    pub request: String,
    pub signer_name: String,
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub username: String,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub groups: Vec<String>,
    /// e.g. `digital signature`, `client auth`.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub usages: Vec<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub expiration_seconds: Option<i64>,
    #[serde(flatten)]
    #[schemars(skip)]
    pub extra: UnknownFields,
}

/// The outcome: conditions and, once signed, the certificate.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct CertificateSigningRequestStatus {
    /// The issued certificate in PEM, base64-encoded.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub certificate: Option<String>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub conditions: Vec<CertificateSigningRequestCondition>,
    #[serde(flatten)]
    #[schemars(skip)]
    pub extra: UnknownFields,
}

/// `Approved`, `Denied` or `Failed`.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct CertificateSigningRequestCondition {
    #[serde(rename = "type")]
    pub condition_type: String,
    pub status: String,
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub reason: String,
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub message: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_update_time: Option<Time>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_transition_time: Option<Time>,
    #[serde(flatten)]
    #[schemars(skip)]
    pub extra: UnknownFields,
}
