//! Certificate signing requests from joining nodes: checked, signed at once with the cluster CA and
//! stored approved, so that a node holding only a bootstrap token leaves the `POST` with its client
//! certificate (kubeadm's auto-approval of node client certificates, in one step).
//!
//! A bootstrap identity may only ask for `kubernetes.io/kube-apiserver-client-kubelet` certificates
//! whose subject is exactly `CN=system:node:<name>, O=system:nodes` with a valid node name. As with
//! kubeadm, a bootstrap token may claim any node name. A node may ask, with its own client
//! certificate, for a new client certificate (renewal) and for its agent's serving certificate
//! (`kubernetes.io/kubelet-serving`), each for its own name only; the CA writes the node name as the certificate's one DNS name, which is what the
//! API server checks when it connects to the agent. Requests created by other identities are
//! stored as they are, unsigned.
//!
//! Unlike kubeadm's, a bootstrap token does not name its node at will where the cluster has a
//! cloud: [`check_join`] asks the request for the machine's signed instance identity document
//! (annotations), and a [`JoinVerifier`] checks with the cloud that the document is a live machine
//! of this cluster carrying that node name; a Node of that name registered by another machine
//! stays its own. So a leaked token yields a certificate only for a machine of the cluster that
//! presents its own identity, which only processes on that machine can read (IMDSv2, hop limit 1).

use base64::Engine;
use base64::engine::general_purpose::STANDARD;
use serde_json::{Value, json};
use x509_parser::prelude::FromDer;

use super::auth::{Identity, NODE_USER_PREFIX, NODES_GROUP};
use super::error::ApiError;
use super::objects::valid_name;
use crate::api::resource::CERTIFICATE_SIGNING_REQUESTS;
use crate::api::{
    CertificateSigningRequest, INSTANCE_IDENTITY_DOCUMENT_ANNOTATION, INSTANCE_IDENTITY_SIGNATURE_ANNOTATION, KUBELET_CLIENT_SIGNER, KUBELET_SERVING_SIGNER, Time,
};

/// Signs node certificates with the cluster CA (implemented by `pki::ClusterCa`).
pub trait CsrSigner: Send + Sync {
    /// Signs a PEM certificate request already checked to ask for `CN=system:node:<name>,
    /// O=system:nodes`, returning the client certificate in PEM; the error says why it could not.
    fn sign_node_csr(&self, csr_pem: &str) -> Result<String, String>;
    /// The same for the node agent's serving certificate (`kubelet-serving`: serverAuth, the node
    /// name as the one DNS name).
    fn sign_node_serving_csr(&self, csr_pem: &str) -> Result<String, String>;
}

/// The cluster CA signing node client and serving certificates valid for `lifetime` (the
/// master's setting; the agents renew both at two thirds of it).
pub struct NodeCertSigner {
    pub ca: std::sync::Arc<crate::pki::ClusterCa>,
    pub lifetime: std::time::Duration,
}

impl CsrSigner for NodeCertSigner {
    fn sign_node_csr(&self, csr_pem: &str) -> Result<String, String> {
        self.ca.sign_node_csr_valid_for(csr_pem, self.lifetime).map_err(|e| e.to_string())
    }

    fn sign_node_serving_csr(&self, csr_pem: &str) -> Result<String, String> {
        self.ca.sign_node_serving_csr_valid_for(csr_pem, self.lifetime).map_err(|e| e.to_string())
    }
}

/// The cluster CA signs node CSRs for the API server (its errors are plain text here).
impl CsrSigner for crate::pki::ClusterCa {
    fn sign_node_csr(&self, csr_pem: &str) -> Result<String, String> {
        crate::pki::ClusterCa::sign_node_csr(self, csr_pem).map_err(|e| e.to_string())
    }

    fn sign_node_serving_csr(&self, csr_pem: &str) -> Result<String, String> {
        crate::pki::ClusterCa::sign_node_serving_csr(self, csr_pem).map_err(|e| e.to_string())
    }
}

/// Checks a joining machine's claim to a node name (implemented with the cloud by
/// `cloudcontroller::join::InstanceIdentityVerifier`).
#[async_trait::async_trait]
pub trait JoinVerifier: Send + Sync {
    /// The machine's instance id when `document`, signed with `signature` (base64), is the
    /// identity of a live machine of this cluster named `node`; otherwise why not.
    async fn verify(&self, node: &str, document: &[u8], signature: &str) -> Result<String, String>;
}

/// A bootstrap token's request for a node client certificate must carry the machine's instance
/// identity document and signature, which `verifier` accepts for the node name asked for, and
/// no Node of that name may be registered by another machine (`spec.providerID`). 403 otherwise.
/// Requests from other identities, and malformed ones (which [`admit`] refuses), pass.
pub async fn check_join(identity: &Identity, object: &Value, verifier: &dyn JoinVerifier, store: &dyn super::store::Store) -> Result<(), ApiError> {
    if !identity.is_bootstrapper() {
        return Ok(());
    }
    let name = object.pointer("/metadata/name").and_then(Value::as_str).unwrap_or("").to_string();
    let request = object.pointer("/spec/request").and_then(Value::as_str).and_then(|r| STANDARD.decode(r.trim()).ok()).and_then(|pem| String::from_utf8(pem).ok());
    let Some(node) = request.and_then(|pem| node_name_of_request(&pem).ok()) else { return Ok(()) };
    let refuse = |why: String| ApiError::forbidden(&CERTIFICATE_SIGNING_REQUESTS, &name, format!("a bootstrap token may not obtain a certificate for node {node:?}: {why}"));
    let annotation = |key: &str| object.pointer("/metadata/annotations").and_then(|a| a.get(key)).and_then(Value::as_str).map(str::to_string);
    let (Some(document), Some(signature)) = (annotation(INSTANCE_IDENTITY_DOCUMENT_ANNOTATION), annotation(INSTANCE_IDENTITY_SIGNATURE_ANNOTATION)) else {
        return Err(refuse(format!("the request carries no instance identity (annotations {INSTANCE_IDENTITY_DOCUMENT_ANNOTATION} and {INSTANCE_IDENTITY_SIGNATURE_ANNOTATION})")));
    };
    let document = STANDARD.decode(document.trim()).map_err(|_| refuse("the instance identity document is not base64".into()))?;
    let instance = verifier.verify(&node, &document, &signature).await.map_err(refuse)?;
    let key = crate::api::resource::NODES.store_key(None, &node);
    let stored = store.get(&key).await.map_err(|e| ApiError::from_store(e, &crate::api::resource::NODES, &node))?;
    let holder = stored.as_ref().and_then(|s| s.value.pointer("/spec/providerID")).and_then(Value::as_str).map(str::to_string);
    if let Some(holder) = holder
        && holder.rsplit('/').next() != Some(instance.as_str())
    {
        return Err(refuse(format!("the Node is registered by another machine ({holder})")));
    }
    tracing::info!(node = %node, instance = %instance, "a joining machine's instance identity checked");
    Ok(())
}

const CLIENT_USAGES: &[&str] = &["digital signature", "key encipherment", "client auth"];
const SERVING_USAGES: &[&str] = &["digital signature", "key encipherment", "server auth"];

/// The node name a PEM request asks a client certificate for, after checking its signature and that
/// its subject is exactly `CN=system:node:<name>, O=system:nodes`.
pub fn node_name_of_request(csr_pem: &str) -> Result<String, String> {
    let (_, pem) = x509_parser::pem::parse_x509_pem(csr_pem.as_bytes()).map_err(|_| "the request is not PEM".to_string())?;
    if pem.label != "CERTIFICATE REQUEST" {
        return Err(format!("the request is a PEM {:?}, not a CERTIFICATE REQUEST", pem.label));
    }
    let (_, csr) = x509_parser::certification_request::X509CertificationRequest::from_der(&pem.contents)
        .map_err(|_| "the request is not a PKCS#10 certificate request".to_string())?;
    csr.verify_signature().map_err(|_| "the request's signature does not verify".to_string())?;
    let subject = &csr.certification_request_info.subject;
    let cns: Vec<&str> = subject.iter_common_name().filter_map(|a| a.as_str().ok()).collect();
    let orgs: Vec<&str> = subject.iter_organization().filter_map(|a| a.as_str().ok()).collect();
    let attributes = subject.iter_attributes().count();
    let name = match cns.as_slice() {
        [cn] => cn.strip_prefix(NODE_USER_PREFIX).ok_or_else(|| format!("the subject's CN {cn:?} does not start with {NODE_USER_PREFIX:?}"))?,
        _ => return Err("the subject must have exactly one CN".into()),
    };
    if orgs != [NODES_GROUP] || attributes != 2 {
        return Err(format!("the subject must be exactly CN=system:node:<name>, O={NODES_GROUP}"));
    }
    if !valid_name(name) {
        return Err(format!("{name:?} is not a valid node name"));
    }
    Ok(name.to_string())
}

/// Fills the server-owned parts of a new request (`username`, `groups`, empty `status`) and signs
/// the two kinds that are approved at once: a node client certificate asked for with a bootstrap
/// token (kubeadm's auto-approval, in one step), and a node's serving certificate asked for by
/// that node itself (`kubelet-serving`, for its own name only). Other requests are stored unsigned.
pub fn admit(identity: &Identity, object: &mut Value, signer: &dyn CsrSigner) -> Result<(), ApiError> {
    let name = object.pointer("/metadata/name").and_then(Value::as_str).unwrap_or("").to_string();
    let invalid = |m: String| ApiError::invalid(&CERTIFICATE_SIGNING_REQUESTS, &name, m);
    let csr: CertificateSigningRequest = serde_json::from_value(object.clone()).map_err(|e| invalid(format!("not a certificate signing request: {e}")))?;
    object["spec"]["username"] = json!(identity.user);
    object["spec"]["groups"] = json!(identity.groups);
    object["status"] = json!({});
    let (signer_name, needed_usage) = if identity.is_bootstrapper() {
        if csr.spec.signer_name != KUBELET_CLIENT_SIGNER {
            return Err(ApiError::forbidden(
                &CERTIFICATE_SIGNING_REQUESTS,
                &name,
                format!("bootstrap tokens may only request node client certificates (signerName {KUBELET_CLIENT_SIGNER})"),
            ));
        }
        (KUBELET_CLIENT_SIGNER, "client auth")
    } else if identity.node_name().is_some() {
        match csr.spec.signer_name.as_str() {
            // Renewing its own client certificate (kubelet's rotation; Kubernetes' approver
            // signs a node's "selfnodeclient" request the same way).
            KUBELET_CLIENT_SIGNER => (KUBELET_CLIENT_SIGNER, "client auth"),
            KUBELET_SERVING_SIGNER => (KUBELET_SERVING_SIGNER, "server auth"),
            _ => {
                return Err(ApiError::forbidden(
                    &CERTIFICATE_SIGNING_REQUESTS,
                    &name,
                    format!("nodes may only request their own client or serving certificates (signerName {KUBELET_CLIENT_SIGNER} or {KUBELET_SERVING_SIGNER})"),
                ));
            }
        }
    } else {
        return Ok(());
    };
    let allowed_usages: &[&str] = if needed_usage == "client auth" { CLIENT_USAGES } else { SERVING_USAGES };
    if !csr.spec.usages.is_empty() {
        if !csr.spec.usages.iter().any(|u| u == needed_usage) {
            return Err(invalid(format!("spec.usages must include {needed_usage:?}")));
        }
        if let Some(u) = csr.spec.usages.iter().find(|u| !allowed_usages.contains(&u.as_str())) {
            return Err(invalid(format!("spec.usages: {u:?} is not allowed for {signer_name}")));
        }
    }
    let pem = STANDARD.decode(csr.spec.request.trim()).map_err(|_| invalid("spec.request is not base64".into()))?;
    let pem = String::from_utf8(pem).map_err(|_| invalid("spec.request is not a PEM text".into()))?;
    let node = node_name_of_request(&pem).map_err(|m| invalid(format!("spec.request: {m}")))?;
    let what = if signer_name == KUBELET_CLIENT_SIGNER { "client" } else { "serving" };
    if let Some(own) = identity.node_name()
        && own != node
    {
        return Err(ApiError::forbidden(&CERTIFICATE_SIGNING_REQUESTS, &name, format!("node {own:?} may not request a {what} certificate for node {node:?}")));
    }
    let cert = if signer_name == KUBELET_CLIENT_SIGNER { signer.sign_node_csr(&pem) } else { signer.sign_node_serving_csr(&pem) };
    let cert = cert.map_err(|e| ApiError::internal(format!("signing the {what} certificate for node {node:?}: {e}")))?;
    let now = Time::now();
    object["status"] = json!({
        "certificate": STANDARD.encode(cert),
        "conditions": [{
            "type": "Approved",
            "status": "True",
            "reason": "AutoApproved",
            "message": format!("node {what} certificate for {node} signed for {}", identity.user),
            "lastUpdateTime": now,
            "lastTransitionTime": now,
        }],
    });
    tracing::info!(node = %node, requester = %identity.user, "signed a node {what} certificate");
    Ok(())
}
