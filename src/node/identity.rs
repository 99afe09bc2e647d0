//! The machine's instance identity as its metadata service gives it (AWS's IMDS, or the
//! harness's at the same address): IMDSv2, a session token first, then the identity document and
//! its signature, which a joining node sends with its signing request
//! ([`crate::apiserver::csr::check_join`]).

use std::time::Duration;

use base64::Engine;

/// The metadata service.
const ENDPOINT: &str = "http://169.254.169.254";
/// How long one request may take: the service answers in milliseconds where there is one.
const TIMEOUT: Duration = Duration::from_secs(2);

/// The identity document (as served) and its base64 signature.
pub struct InstanceIdentity {
    pub document: String,
    pub signature: String,
}

impl InstanceIdentity {
    /// The annotations that carry it on a signing request.
    pub fn annotations(&self) -> serde_json::Value {
        serde_json::json!({
            crate::api::INSTANCE_IDENTITY_DOCUMENT_ANNOTATION: base64::engine::general_purpose::STANDARD.encode(&self.document),
            crate::api::INSTANCE_IDENTITY_SIGNATURE_ANNOTATION: self.signature.trim(),
        })
    }
}

/// This machine's identity, or why there is none (no metadata service: not a cloud machine).
pub async fn read() -> Result<InstanceIdentity, String> {
    let _ = rustls::crypto::ring::default_provider().install_default();
    let http = reqwest::Client::builder().no_proxy().timeout(TIMEOUT).build().map_err(|e| e.to_string())?;
    let failed = |what: &str, e: reqwest::Error| format!("reading {what} from the metadata service: {e}");
    let token = http
        .put(format!("{ENDPOINT}/latest/api/token"))
        .header("X-aws-ec2-metadata-token-ttl-seconds", "60")
        .send()
        .await
        .and_then(reqwest::Response::error_for_status)
        .map_err(|e| failed("a session token", e))?
        .text()
        .await
        .map_err(|e| failed("a session token", e))?;
    let get = |path: &'static str| {
        let request = http.get(format!("{ENDPOINT}{path}")).header("X-aws-ec2-metadata-token", token.trim());
        async move { request.send().await.and_then(reqwest::Response::error_for_status).map_err(|e| failed(path, e))?.text().await.map_err(|e| failed(path, e)) }
    };
    Ok(InstanceIdentity { document: get("/latest/dynamic/instance-identity/document").await?, signature: get("/latest/dynamic/instance-identity/signature").await? })
}
