//! The cloud's word on a joining machine: the API server's [`JoinVerifier`] for bootstrap-token
//! requests ([`crate::apiserver::csr::check_join`]).
//!
//! A machine proves which instance it is with its instance identity document and the cloud's
//! signature of it (AWS's `instance-identity/document` and `signature`: RSA-SHA256), which only
//! processes on that machine can read from the metadata service (IMDSv2 with hop limit 1, so not
//! its pods). The verifier checks the signature against the cloud's identity certificate, that
//! the document is of this cluster's region, and asks the cloud that the instance is pending or
//! running, carries this cluster's owner tag, and is named (`Name` tag) as the node it asks for.
//!
//! The certificate: AWS publishes one per region (its "RSA" certificate, for the base64
//! signature), which the spec names as `[cluster] instance_identity_certificate`; without it, on AWS
//! the verifier is off (a token names any node, as kubeadm's, logged at start). The LocalStack
//! harness serves its own at `<endpoint>/_clusterctl/instance-identity-certificate`, read when first
//! needed and again until it is read (a join meanwhile is refused, never let through).

use std::sync::Arc;

use async_trait::async_trait;
use base64::Engine;
use base64::engine::general_purpose::STANDARD;
use serde_json::Value;

use crate::apiserver::csr::JoinVerifier;
use crate::cloud::{Cloud, ErrorKind, InstanceState, OWNER_TAG};
use crate::nodeconfig::CloudSettings;

/// Where the harness serves its identity certificate, under its endpoint.
pub const HARNESS_CERTIFICATE_PATH: &str = "/_clusterctl/instance-identity-certificate";

/// Checks instance identities with `cloud` for `cluster` in `region`.
pub struct InstanceIdentityVerifier {
    cloud: Arc<dyn Cloud>,
    cluster: String,
    region: String,
    /// Where the certificate comes from: its PEM, or the URL it is read from.
    certificate: CertificateSource,
    /// The certificate's RSA public key (PKCS#1 DER), once read.
    public_key: tokio::sync::OnceCell<Vec<u8>>,
}

/// Where the identity certificate comes from.
pub enum CertificateSource {
    Pem(String),
    Url(String),
}

/// The verifier for a master's cloud settings, if there is an identity certificate: the one the
/// spec names (`[cluster] instance_identity_certificate`, read from the master's copy), else the
/// harness's when the cloud is the harness; on AWS without one, none (logged).
pub fn verifier(settings: &CloudSettings, cloud: Arc<dyn Cloud>, cluster: &str) -> Option<Arc<dyn JoinVerifier>> {
    let named = match crate::spec::ClusterSpec::load(&settings.spec_path) {
        Ok(spec) => spec.instance_identity_certificate,
        Err(e) => {
            tracing::warn!(error = %e, "reading the spec copy for an instance identity certificate");
            None
        }
    };
    let source = match (named, &settings.endpoint_url) {
        (Some(pem), _) => CertificateSource::Pem(pem),
        (None, Some(endpoint)) => CertificateSource::Url(format!("{}{HARNESS_CERTIFICATE_PATH}", endpoint.trim_end_matches('/'))),
        (None, None) => {
            tracing::warn!("joining machines are not checked against their instance identity: name the region's AWS RSA certificate as [cluster] instance_identity_certificate in the spec");
            return None;
        }
    };
    Some(Arc::new(InstanceIdentityVerifier::new(cloud, cluster, &settings.region, source)))
}

/// The RSA public key (PKCS#1 DER) of a PEM certificate.
fn rsa_public_key(pem: &str) -> Result<Vec<u8>, String> {
    let (_, pem) = x509_parser::pem::parse_x509_pem(pem.as_bytes()).map_err(|_| "the identity certificate is not PEM".to_string())?;
    let cert = pem.parse_x509().map_err(|e| format!("the identity certificate does not parse: {e}"))?;
    Ok(cert.public_key().subject_public_key.data.to_vec())
}

impl InstanceIdentityVerifier {
    pub fn new(cloud: Arc<dyn Cloud>, cluster: &str, region: &str, certificate: CertificateSource) -> Self {
        InstanceIdentityVerifier { cloud, cluster: cluster.into(), region: region.into(), certificate, public_key: Default::default() }
    }

    async fn public_key(&self) -> Result<&[u8], String> {
        let key = self
            .public_key
            .get_or_try_init(|| async {
                let pem = match &self.certificate {
                    CertificateSource::Pem(pem) => pem.clone(),
                    CertificateSource::Url(url) => {
                        let _ = rustls::crypto::ring::default_provider().install_default();
                        let read = async { reqwest::Client::builder().no_proxy().timeout(std::time::Duration::from_secs(5)).build()?.get(url).send().await?.error_for_status()?.text().await };
                        read.await.map_err(|e| format!("the cloud's identity certificate could not be read from {url}: {e}"))?
                    }
                };
                rsa_public_key(&pem)
            })
            .await?;
        Ok(key)
    }
}

#[async_trait]
impl JoinVerifier for InstanceIdentityVerifier {
    async fn verify(&self, node: &str, document: &[u8], signature: &str) -> Result<String, String> {
        let key = self.public_key().await?;
        let signature = STANDARD.decode(signature.trim()).map_err(|_| "the instance identity signature is not base64".to_string())?;
        ring::signature::UnparsedPublicKey::new(&ring::signature::RSA_PKCS1_2048_8192_SHA256, key)
            .verify(document, &signature)
            .map_err(|_| "the instance identity document's signature does not verify".to_string())?;
        let doc: Value = serde_json::from_slice(document).map_err(|_| "the instance identity document is not JSON".to_string())?;
        let field = |name: &str| doc.get(name).and_then(Value::as_str).unwrap_or_default().to_string();
        let (id, region) = (field("instanceId"), field("region"));
        if region != self.region {
            return Err(format!("the instance is in region {region:?}, the cluster in {:?}", self.region));
        }
        let instances = match self.cloud.instances_by_id(std::slice::from_ref(&id)).await {
            Ok(instances) => instances,
            Err(e) if e.kind == ErrorKind::NotFound => Vec::new(),
            Err(e) => return Err(format!("asking the cloud about instance {id}: {e}")),
        };
        let instance = instances.into_iter().find(|i| i.id == id).ok_or_else(|| format!("the cloud has no instance {id:?}"))?;
        if !matches!(instance.state, InstanceState::Pending | InstanceState::Running) {
            return Err(format!("instance {id} is {:?}", instance.state));
        }
        if instance.tags.get(OWNER_TAG) != Some(&self.cluster) {
            return Err(format!("instance {id} is not a machine of cluster {:?}", self.cluster));
        }
        match instance.tags.get("Name") {
            Some(name) if name == node => Ok(id),
            other => Err(format!("instance {id} is named {:?}, not {node:?}", other.map(String::as_str).unwrap_or(""))),
        }
    }
}

#[cfg(test)]
mod tests;
