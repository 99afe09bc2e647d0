//! The API client used by the operator's CLI, the node agents and the controllers.
//!
//! [`ApiClient`] speaks HTTPS to the API server with one of three [`ClientAuth`]s: a client
//! certificate, a bootstrap token, or nothing at all (`Insecure`, only for the discovery read of
//! `kube-public/cluster-info`, whose CA the caller then checks against a pinned hash). Typed methods
//! build paths from the resource registry; `*_value` methods take a path and plain JSON.
//!
//! Errors say what was being done; [`ClientError::Api`] carries the server's `Status` so that callers
//! can match `NotFound` or `Conflict`, [`ClientError::Transport`] is worth retrying. Connecting may
//! take 5 s and a request 30 s; watches have no overall limit.

pub mod drain;
pub mod kubeconfig;
pub mod kubectl_config;
pub mod leader;
#[cfg(test)]
pub mod test_server;

use std::sync::Arc;
use std::time::Duration;

use futures::stream::BoxStream;
use futures::{Stream, StreamExt};
use reqwest::header::{AUTHORIZATION, CONTENT_TYPE, HeaderMap, HeaderValue};
use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
use rustls::crypto::CryptoProvider;
use rustls::{DigitallySignedStruct, RootCertStore, SignatureScheme};
use rustls_pki_types::pem::PemObject;
use rustls_pki_types::{CertificateDer, PrivateKeyDer, ServerName, UnixTime};
use serde::Serialize;
use serde::de::DeserializeOwned;
use serde_json::Value;

use crate::api::resource::ResourceType;
use crate::api::{List, Status, StatusReason, WatchEvent, WatchEventType};

pub use reqwest::Method;

/// How long connecting may take.
pub const CONNECT_TIMEOUT: Duration = Duration::from_secs(5);
/// How long a request (other than a watch) may take.
pub const REQUEST_TIMEOUT: Duration = Duration::from_secs(30);

/// How the client proves who it is and checks the server.
#[derive(Clone)]
pub enum ClientAuth {
    /// A client certificate and key signed by the cluster CA; the server is checked against `ca_pem`.
    Certificate { ca_pem: String, cert_pem: String, key_pem: String },
    /// A client certificate that is replaced while the client runs (a node's, renewed before it
    /// expires): each new connection presents the current one.
    Renewable { ca_pem: String, cert: RenewableCertificate },
    /// A bearer token (a bootstrap token when joining); the server is checked against `ca_pem`.
    Token { ca_pem: String, token: String },
    /// No credentials and no server check: only for reading `cluster-info`, whose content the caller
    /// verifies by hash.
    Insecure,
}

impl std::fmt::Debug for ClientAuth {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            ClientAuth::Certificate { .. } => "ClientAuth::Certificate",
            ClientAuth::Renewable { .. } => "ClientAuth::Renewable",
            ClientAuth::Token { .. } => "ClientAuth::Token",
            ClientAuth::Insecure => "ClientAuth::Insecure",
        })
    }
}

/// A certificate and key that can be swapped for new ones; clones share them. A client presents
/// it ([`ClientAuth::Renewable`]); a server serves it ([`Self::serving_resolver`]).
#[derive(Clone)]
pub struct RenewableCertificate(Arc<CurrentCertificate>);

#[derive(Debug)]
struct CurrentCertificate(std::sync::RwLock<Arc<rustls::sign::CertifiedKey>>);

impl std::fmt::Debug for RenewableCertificate {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("RenewableCertificate(<redacted>)")
    }
}

impl RenewableCertificate {
    /// Starts with a certificate and its key (PEM).
    pub fn new(cert_pem: &str, key_pem: &str) -> Result<Self, String> {
        Ok(RenewableCertificate(Arc::new(CurrentCertificate(std::sync::RwLock::new(certified_key(cert_pem, key_pem)?)))))
    }

    /// New connections present this certificate from now on; open ones keep theirs.
    pub fn replace(&self, cert_pem: &str, key_pem: &str) -> Result<(), String> {
        let next = certified_key(cert_pem, key_pem)?;
        *self.0.0.write().unwrap_or_else(std::sync::PoisonError::into_inner) = next;
        Ok(())
    }

    /// What a rustls client presents it with: every new handshake gets the current certificate.
    pub fn client_resolver(&self) -> Arc<dyn rustls::client::ResolvesClientCert> {
        self.0.clone()
    }

    /// What a rustls server serves it with: every new handshake gets the current certificate.
    pub fn serving_resolver(&self) -> Arc<dyn rustls::server::ResolvesServerCert> {
        self.0.clone()
    }
}

impl rustls::server::ResolvesServerCert for CurrentCertificate {
    fn resolve(&self, _client_hello: rustls::server::ClientHello<'_>) -> Option<Arc<rustls::sign::CertifiedKey>> {
        Some(self.0.read().unwrap_or_else(std::sync::PoisonError::into_inner).clone())
    }
}

impl rustls::client::ResolvesClientCert for CurrentCertificate {
    fn resolve(&self, _root_hint_subjects: &[&[u8]], _sigschemes: &[SignatureScheme]) -> Option<Arc<rustls::sign::CertifiedKey>> {
        Some(self.0.read().unwrap_or_else(std::sync::PoisonError::into_inner).clone())
    }

    fn has_certs(&self) -> bool {
        true
    }
}

fn certified_key(cert_pem: &str, key_pem: &str) -> Result<Arc<rustls::sign::CertifiedKey>, String> {
    let chain = CertificateDer::pem_slice_iter(cert_pem.as_bytes()).collect::<Result<Vec<_>, _>>().map_err(|e| format!("reading the certificate PEM: {e}"))?;
    if chain.is_empty() {
        return Err("the certificate PEM holds no certificate".into());
    }
    let key = PrivateKeyDer::from_pem_slice(key_pem.as_bytes()).map_err(|e| format!("reading the key PEM: {e}"))?;
    let key = rustls::crypto::ring::sign::any_supported_type(&key).map_err(|e| format!("loading the key: {e}"))?;
    let certified = rustls::sign::CertifiedKey::new(chain, key);
    certified.keys_match().map_err(|e| format!("the key is not the certificate's: {e}"))?;
    Ok(Arc::new(certified))
}

/// A failed API call, with what was being done.
#[derive(Debug, thiserror::Error)]
pub enum ClientError {
    /// The server answered with an error status.
    #[error("{action}: {} (HTTP {code})", status.message)]
    Api { action: String, status: Box<Status>, code: u16 },
    /// No usable answer: connection refused or reset, TLS failure, timeout. Worth retrying.
    #[error("{action}: no answer from the API server")]
    Transport {
        action: String,
        #[source]
        source: reqwest::Error,
    },
    /// The answer was not the JSON expected.
    #[error("{action}: the answer is not the expected JSON")]
    Decode {
        action: String,
        #[source]
        source: serde_json::Error,
    },
    /// The client could not be built (bad server URL, unreadable PEM).
    #[error("building the API client for {server}: {reason}")]
    Config { server: String, reason: String },
}

impl ClientError {
    /// The HTTP status code, for errors the server answered.
    pub fn code(&self) -> Option<u16> {
        match self {
            ClientError::Api { code, .. } => Some(*code),
            _ => None,
        }
    }

    /// The server's reason, for errors the server answered.
    pub fn reason(&self) -> Option<&StatusReason> {
        match self {
            ClientError::Api { status, .. } => Some(&status.reason),
            _ => None,
        }
    }

    /// The object does not exist.
    pub fn is_not_found(&self) -> bool {
        self.code() == Some(404)
    }

    /// The object exists already.
    pub fn is_already_exists(&self) -> bool {
        self.reason() == Some(&StatusReason::AlreadyExists)
    }

    /// The object changed since it was read (or exists already): read again and retry.
    pub fn is_conflict(&self) -> bool {
        self.reason() == Some(&StatusReason::Conflict)
    }

    /// A watch asked for a resource version older than the server's history: list again.
    pub fn is_gone(&self) -> bool {
        self.code() == Some(410)
    }

    /// Trying again later may succeed (transport failures, overload, server errors).
    pub fn is_retryable(&self) -> bool {
        match self {
            ClientError::Transport { .. } => true,
            ClientError::Api { code, .. } => *code == 429 || *code >= 500,
            _ => false,
        }
    }
}

/// Selectors for list and watch: `labelSelector` and `fieldSelector` in their equality forms.
#[derive(Debug, Clone, Default)]
pub struct ListOptions {
    /// e.g. `app=web,tier=front`.
    pub label_selector: Option<String>,
    /// e.g. `spec.nodeName=w1`.
    pub field_selector: Option<String>,
    /// The media type asked for instead of plain JSON: the pod network view
    /// ([`crate::api::pod::POD_NETWORK_ACCEPT`]), which is what a node may read of pods not
    /// bound to it.
    pub accept: Option<&'static str>,
}

impl ListOptions {
    /// Objects whose labels match `selector`.
    pub fn labels(selector: impl Into<String>) -> Self {
        ListOptions { label_selector: Some(selector.into()), ..Default::default() }
    }

    /// Objects whose fields match `selector`.
    pub fn fields(selector: impl Into<String>) -> Self {
        ListOptions { field_selector: Some(selector.into()), ..Default::default() }
    }

    /// Every pod in its network view.
    pub fn pod_network() -> Self {
        ListOptions { accept: Some(crate::api::pod::POD_NETWORK_ACCEPT), ..Default::default() }
    }

    fn query(&self, extra: &[(&str, &str)]) -> String {
        let mut pairs: Vec<(&str, &str)> = Vec::new();
        if let Some(l) = &self.label_selector {
            pairs.push(("labelSelector", l));
        }
        if let Some(f) = &self.field_selector {
            pairs.push(("fieldSelector", f));
        }
        pairs.extend_from_slice(extra);
        if pairs.is_empty() {
            return String::new();
        }
        let encoded: Vec<String> = pairs.iter().map(|(k, v)| format!("{k}={}", percent_encode(v))).collect();
        format!("?{}", encoded.join("&"))
    }
}

fn percent_encode(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    for b in text.bytes() {
        if b.is_ascii_alphanumeric() || b"-_.~".contains(&b) {
            out.push(b as char);
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    out
}

/// A connection to one API server.
#[derive(Clone)]
pub struct ApiClient {
    http: reqwest::Client,
    server: String,
}

impl std::fmt::Debug for ApiClient {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ApiClient").field("server", &self.server).finish_non_exhaustive()
    }
}

/// Accepts any server certificate; only for [`ClientAuth::Insecure`].
#[derive(Debug)]
struct AcceptAnyServer(Arc<CryptoProvider>);

impl ServerCertVerifier for AcceptAnyServer {
    fn verify_server_cert(
        &self,
        _end_entity: &CertificateDer<'_>,
        _intermediates: &[CertificateDer<'_>],
        _server_name: &ServerName<'_>,
        _ocsp_response: &[u8],
        _now: UnixTime,
    ) -> Result<ServerCertVerified, rustls::Error> {
        Ok(ServerCertVerified::assertion())
    }

    fn verify_tls12_signature(&self, message: &[u8], cert: &CertificateDer<'_>, dss: &DigitallySignedStruct) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls12_signature(message, cert, dss, &self.0.signature_verification_algorithms)
    }

    fn verify_tls13_signature(&self, message: &[u8], cert: &CertificateDer<'_>, dss: &DigitallySignedStruct) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls13_signature(message, cert, dss, &self.0.signature_verification_algorithms)
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.0.signature_verification_algorithms.supported_schemes()
    }
}

fn tls_config(auth: &ClientAuth) -> Result<rustls::ClientConfig, String> {
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let builder = rustls::ClientConfig::builder_with_provider(provider.clone())
        .with_safe_default_protocol_versions()
        .map_err(|e| format!("choosing TLS versions: {e}"))?;
    let roots = |ca_pem: &str| -> Result<RootCertStore, String> {
        let mut roots = RootCertStore::empty();
        for cert in CertificateDer::pem_slice_iter(ca_pem.as_bytes()) {
            roots.add(cert.map_err(|e| format!("reading the CA PEM: {e}"))?).map_err(|e| format!("adding the CA: {e}"))?;
        }
        if roots.is_empty() {
            return Err("the CA PEM holds no certificate".into());
        }
        Ok(roots)
    };
    Ok(match auth {
        ClientAuth::Certificate { ca_pem, cert_pem, key_pem } => {
            let chain = CertificateDer::pem_slice_iter(cert_pem.as_bytes())
                .collect::<Result<Vec<_>, _>>()
                .map_err(|e| format!("reading the client certificate PEM: {e}"))?;
            if chain.is_empty() {
                return Err("the client certificate PEM holds no certificate".into());
            }
            let key = PrivateKeyDer::from_pem_slice(key_pem.as_bytes()).map_err(|e| format!("reading the client key PEM: {e}"))?;
            builder
                .with_root_certificates(roots(ca_pem)?)
                .with_client_auth_cert(chain, key)
                .map_err(|e| format!("loading the client certificate and key: {e}"))?
        }
        ClientAuth::Renewable { ca_pem, cert } => builder.with_root_certificates(roots(ca_pem)?).with_client_cert_resolver(cert.client_resolver()),
        ClientAuth::Token { ca_pem, .. } => builder.with_root_certificates(roots(ca_pem)?).with_no_client_auth(),
        ClientAuth::Insecure => {
            builder.dangerous().with_custom_certificate_verifier(Arc::new(AcceptAnyServer(provider))).with_no_client_auth()
        }
    })
}

/// The raw shape of a watch line, before the object is typed.
#[derive(serde::Deserialize)]
struct RawWatchEvent {
    #[serde(rename = "type")]
    event_type: WatchEventType,
    object: Value,
}

fn fill_type(object: &mut Value, resource: &ResourceType) {
    if let Some(map) = object.as_object_mut() {
        for (field, value) in [("apiVersion", resource.api_version()), ("kind", resource.kind.to_string())] {
            let missing = map.get(field).and_then(Value::as_str).is_none_or(str::is_empty);
            if missing {
                map.insert(field.into(), Value::String(value));
            }
        }
    }
}

fn describe(verb: &str, resource: &ResourceType, namespace: Option<&str>, name: Option<&str>) -> String {
    let mut text = format!("{verb} {resource}");
    if let Some(name) = name {
        text.push_str(&format!(" {name:?}"));
    }
    if let Some(ns) = namespace.filter(|_| resource.namespaced) {
        text.push_str(&format!(" in namespace {ns}"));
    }
    text
}

impl ApiClient {
    /// A client for `server` (`https://host:port`).
    pub fn new(server: &str, auth: ClientAuth) -> Result<Self, ClientError> {
        let _ = rustls::crypto::ring::default_provider().install_default();
        let config_err = |reason: String| ClientError::Config { server: server.to_string(), reason };
        if !server.starts_with("https://") {
            return Err(config_err("the server address must start with https://".into()));
        }
        let tls = tls_config(&auth).map_err(config_err)?;
        let mut headers = HeaderMap::new();
        if let ClientAuth::Token { token, .. } = &auth {
            let mut value = HeaderValue::from_str(&format!("Bearer {token}")).map_err(|_| config_err("the token is not a valid header value".into()))?;
            value.set_sensitive(true);
            headers.insert(AUTHORIZATION, value);
        }
        let http = reqwest::Client::builder()
            .tls_backend_preconfigured(tls)
            .connect_timeout(CONNECT_TIMEOUT)
            .tcp_keepalive(Duration::from_secs(30))
            // Shorter than the API server's header read timeout (30 s), which also closes idle
            // kept-alive connections: a pooled connection is never reused as the server drops it.
            .pool_idle_timeout(Duration::from_secs(20))
            .default_headers(headers)
            .build()
            .map_err(|e| config_err(format!("{e}")))?;
        Ok(ApiClient { http, server: server.trim_end_matches('/').to_string() })
    }

    /// The server this client talks to.
    pub fn server(&self) -> &str {
        &self.server
    }

    /// Sends one request and returns the response if it succeeded.
    async fn send(&self, method: Method, path: &str, body: Option<(&str, Vec<u8>)>, action: &str, timeout: Option<Duration>) -> Result<reqwest::Response, ClientError> {
        self.send_accepting(method, path, body, action, timeout, "application/json").await
    }

    async fn send_accepting(&self, method: Method, path: &str, body: Option<(&str, Vec<u8>)>, action: &str, timeout: Option<Duration>, accept: &str) -> Result<reqwest::Response, ClientError> {
        let mut req = self.http.request(method, format!("{}{path}", self.server)).header("Accept", accept);
        if let Some(t) = timeout {
            req = req.timeout(t);
        }
        if let Some((content_type, bytes)) = body {
            req = req.header(CONTENT_TYPE, content_type).body(bytes);
        }
        let response = req.send().await.map_err(|source| ClientError::Transport { action: action.to_string(), source })?;
        let code = response.status().as_u16();
        if response.status().is_success() {
            return Ok(response);
        }
        let text = response.text().await.unwrap_or_default();
        let status = serde_json::from_str::<Status>(&text)
            .ok()
            .filter(|s| s.kind == "Status")
            .unwrap_or_else(|| Status::failure(reason_for(code), code, text.trim().chars().take(500).collect::<String>()));
        Err(ClientError::Api { action: action.to_string(), status: Box::new(status), code })
    }

    async fn json<T: DeserializeOwned>(&self, method: Method, path: &str, body: Option<(&str, Vec<u8>)>, action: &str) -> Result<T, ClientError> {
        let response = self.send(method, path, body, action, Some(REQUEST_TIMEOUT)).await?;
        let bytes = response.bytes().await.map_err(|source| ClientError::Transport { action: action.to_string(), source })?;
        serde_json::from_slice(&bytes).map_err(|source| ClientError::Decode { action: action.to_string(), source })
    }

    fn encode(object: &impl Serialize, action: &str) -> Result<Value, ClientError> {
        serde_json::to_value(object).map_err(|source| ClientError::Decode { action: action.to_string(), source })
    }

    /// Reads one object.
    pub async fn get<T: DeserializeOwned>(&self, resource: &ResourceType, namespace: Option<&str>, name: &str) -> Result<T, ClientError> {
        let action = describe("getting", resource, namespace, Some(name));
        self.json(Method::GET, &resource.object_path(namespace, name), None, &action).await
    }

    /// Lists objects in a namespace (or across all of them with `None`), filtered by `options`.
    pub async fn list<T: DeserializeOwned>(&self, resource: &ResourceType, namespace: Option<&str>, options: &ListOptions) -> Result<List<T>, ClientError> {
        let action = describe("listing", resource, namespace, None);
        let path = format!("{}{}", resource.collection_path(namespace), options.query(&[]));
        let response = self.send_accepting(Method::GET, &path, None, &action, Some(REQUEST_TIMEOUT), options.accept.unwrap_or("application/json")).await?;
        let bytes = response.bytes().await.map_err(|source| ClientError::Transport { action: action.clone(), source })?;
        serde_json::from_slice(&bytes).map_err(|source| ClientError::Decode { action, source })
    }

    /// Creates an object; the namespace defaults to the object's own. `apiVersion` and `kind` are
    /// filled from `resource` when empty.
    pub async fn create<T: Serialize + DeserializeOwned>(&self, resource: &ResourceType, namespace: Option<&str>, object: &T) -> Result<T, ClientError> {
        let mut action = describe("creating", resource, namespace, None);
        let mut value = Self::encode(object, &action)?;
        fill_type(&mut value, resource);
        let name = value.pointer("/metadata/name").and_then(Value::as_str).map(String::from);
        let own_ns = value.pointer("/metadata/namespace").and_then(Value::as_str).map(String::from);
        let namespace = namespace.map(String::from).or(own_ns);
        if let Some(name) = &name {
            action = describe("creating", resource, namespace.as_deref(), Some(name));
        }
        let body = serde_json::to_vec(&value).map_err(|source| ClientError::Decode { action: action.clone(), source })?;
        self.json(Method::POST, &resource.collection_path(namespace.as_deref()), Some(("application/json", body)), &action).await
    }

    async fn put<T: Serialize + DeserializeOwned>(&self, resource: &ResourceType, namespace: Option<&str>, name: &str, object: &T, status: bool) -> Result<T, ClientError> {
        let verb = if status { "updating the status of" } else { "updating" };
        let action = describe(verb, resource, namespace, Some(name));
        let mut value = Self::encode(object, &action)?;
        fill_type(&mut value, resource);
        let mut path = resource.object_path(namespace, name);
        if status {
            path.push_str("/status");
        }
        let body = serde_json::to_vec(&value).map_err(|source| ClientError::Decode { action: action.clone(), source })?;
        self.json(Method::PUT, &path, Some(("application/json", body)), &action).await
    }

    /// Replaces an object (not its status); a `resourceVersion` in it must still be current.
    pub async fn replace<T: Serialize + DeserializeOwned>(&self, resource: &ResourceType, namespace: Option<&str>, name: &str, object: &T) -> Result<T, ClientError> {
        self.put(resource, namespace, name, object, false).await
    }

    /// Replaces an object's status only; a `resourceVersion` in it must still be current.
    pub async fn replace_status<T: Serialize + DeserializeOwned>(&self, resource: &ResourceType, namespace: Option<&str>, name: &str, object: &T) -> Result<T, ClientError> {
        self.put(resource, namespace, name, object, true).await
    }

    /// Applies a JSON merge patch to an object (`status` is ignored; use [`Self::patch_status`]).
    pub async fn patch<T: DeserializeOwned>(&self, resource: &ResourceType, namespace: Option<&str>, name: &str, patch: &Value) -> Result<T, ClientError> {
        let action = describe("patching", resource, namespace, Some(name));
        let body = serde_json::to_vec(patch).map_err(|source| ClientError::Decode { action: action.clone(), source })?;
        self.json(Method::PATCH, &resource.object_path(namespace, name), Some(("application/merge-patch+json", body)), &action).await
    }

    /// Applies a JSON merge patch to an object's status.
    pub async fn patch_status<T: DeserializeOwned>(&self, resource: &ResourceType, namespace: Option<&str>, name: &str, patch: &Value) -> Result<T, ClientError> {
        let action = describe("patching the status of", resource, namespace, Some(name));
        let body = serde_json::to_vec(patch).map_err(|source| ClientError::Decode { action: action.clone(), source })?;
        let path = format!("{}/status", resource.object_path(namespace, name));
        self.json(Method::PATCH, &path, Some(("application/merge-patch+json", body)), &action).await
    }

    /// Sends a patch of any format (`content_type`: `application/merge-patch+json`,
    /// `application/strategic-merge-patch+json` or `application/json-patch+json`) to `path`.
    pub async fn patch_path(&self, path: &str, content_type: &str, patch: &Value) -> Result<Value, ClientError> {
        let action = format!("PATCH {path}");
        let body = serde_json::to_vec(patch).map_err(|source| ClientError::Decode { action: action.clone(), source })?;
        self.json(Method::PATCH, path, Some((content_type, body)), &action).await
    }

    /// Deletes an object.
    pub async fn delete(&self, resource: &ResourceType, namespace: Option<&str>, name: &str) -> Result<(), ClientError> {
        let action = describe("deleting", resource, namespace, Some(name));
        self.json::<Value>(Method::DELETE, &resource.object_path(namespace, name), None, &action).await.map(drop)
    }

    /// Deletes an object with `DeleteOptions` (grace period, preconditions, propagation).
    pub async fn delete_with(&self, resource: &ResourceType, namespace: Option<&str>, name: &str, options: &Value) -> Result<(), ClientError> {
        let action = describe("deleting", resource, namespace, Some(name));
        let body = serde_json::to_vec(options).map_err(|source| ClientError::Decode { action: action.clone(), source })?;
        self.json::<Value>(Method::DELETE, &resource.object_path(namespace, name), Some(("application/json", body)), &action).await.map(drop)
    }

    /// Watches a collection: every change after `resource_version`, or, without one, `ADDED` for every
    /// current object and then every change. An `ERROR` line becomes an `Err` item (410 when the
    /// version is too old: list again); the stream ends when the server ends the watch.
    pub async fn watch<T: DeserializeOwned + Send + 'static>(
        &self,
        resource: &ResourceType,
        namespace: Option<&str>,
        resource_version: Option<&str>,
        options: &ListOptions,
    ) -> Result<BoxStream<'static, Result<WatchEvent<T>, ClientError>>, ClientError> {
        let action = describe("watching", resource, namespace, None);
        let mut extra = vec![("watch", "true")];
        if let Some(rv) = resource_version {
            extra.push(("resourceVersion", rv));
        }
        let path = format!("{}{}", resource.collection_path(namespace), options.query(&extra));
        let response = self.send_accepting(Method::GET, &path, None, &action, None, options.accept.unwrap_or("application/json")).await?;
        Ok(watch_lines(response.bytes_stream(), action).boxed())
    }

    /// `GET path` answered as a stream of bytes (a pod's log, `follow` included): no overall time
    /// limit, the stream ends when the server ends the answer.
    pub async fn get_stream(&self, path: &str) -> Result<BoxStream<'static, Result<bytes::Bytes, ClientError>>, ClientError> {
        let action = format!("GET {path}");
        let response = self.send(Method::GET, path, None, &action, None).await?;
        Ok(response.bytes_stream().map(move |chunk| chunk.map_err(|source| ClientError::Transport { action: action.clone(), source })).boxed())
    }

    /// Sends any request with an optional JSON body and returns the JSON answer.
    pub async fn request(&self, method: Method, path: &str, body: Option<&Value>) -> Result<Value, ClientError> {
        let action = format!("{method} {path}");
        let body = match body {
            Some(b) => Some(("application/json", serde_json::to_vec(b).map_err(|source| ClientError::Decode { action: action.clone(), source })?)),
            None => None,
        };
        self.json(method, path, body, &action).await
    }

    /// Sends a JSON request and returns the raw answer, whatever its status: for tests that read the
    /// response's headers.
    #[cfg(test)]
    pub(crate) async fn request_raw(&self, method: Method, path: &str, body: &Value) -> reqwest::Response {
        let bytes = serde_json::to_vec(body).expect("a JSON value serializes");
        let request = self.http.request(method, format!("{}{path}", self.server)).header(CONTENT_TYPE, "application/json").body(bytes);
        request.send().await.expect("the API server answers")
    }

    /// Sends a request without a body and returns the answer as text (health endpoints).
    pub async fn request_text(&self, method: &str, path: &str) -> Result<String, ClientError> {
        let action = format!("{method} {path}");
        let method = Method::from_bytes(method.as_bytes()).map_err(|_| ClientError::Config { server: self.server.clone(), reason: format!("{method:?} is not an HTTP method") })?;
        let response = self.send(method, path, None, &action, Some(REQUEST_TIMEOUT)).await?;
        response.text().await.map_err(|source| ClientError::Transport { action, source })
    }

    /// Reads the object at `path` as JSON.
    pub async fn get_value(&self, path: &str) -> Result<Value, ClientError> {
        self.request(Method::GET, path, None).await
    }

    /// Lists the collection at `path` (which may carry a query) and returns its items.
    pub async fn list_values(&self, path: &str) -> Result<Vec<Value>, ClientError> {
        let list: List<Value> = self.json(Method::GET, path, None, &format!("listing {path}")).await?;
        Ok(list.items)
    }

    /// Creates `object` in the collection at `path`.
    pub async fn create_value(&self, path: &str, object: &Value) -> Result<Value, ClientError> {
        self.request(Method::POST, path, Some(object)).await
    }

    /// Replaces the object at `path` (`.../status` for the status only).
    pub async fn replace_value(&self, path: &str, object: &Value) -> Result<Value, ClientError> {
        self.request(Method::PUT, path, Some(object)).await
    }

    /// Deletes the object at `path`.
    pub async fn delete_value(&self, path: &str) -> Result<Value, ClientError> {
        self.request(Method::DELETE, path, None).await
    }
}

fn reason_for(code: u16) -> StatusReason {
    match code {
        400 => StatusReason::BadRequest,
        401 => StatusReason::Unauthorized,
        403 => StatusReason::Forbidden,
        404 => StatusReason::NotFound,
        405 => StatusReason::MethodNotAllowed,
        409 => StatusReason::Conflict,
        410 => StatusReason::Expired,
        406 => StatusReason::NotAcceptable,
        415 => StatusReason::UnsupportedMediaType,
        422 => StatusReason::Invalid,
        500 => StatusReason::InternalError,
        503 => StatusReason::ServiceUnavailable,
        504 => StatusReason::Timeout,
        _ => StatusReason::Unknown,
    }
}

/// Splits a watch body into lines and types them.
fn watch_lines<T: DeserializeOwned + Send + 'static, B: AsRef<[u8]>>(
    bytes: impl Stream<Item = reqwest::Result<B>> + Send + 'static,
    action: String,
) -> impl Stream<Item = Result<WatchEvent<T>, ClientError>> + Send + 'static {
    struct State<S> {
        bytes: std::pin::Pin<Box<S>>,
        buffer: Vec<u8>,
        done: bool,
        action: String,
    }
    let state = State { bytes: Box::pin(bytes), buffer: Vec::new(), done: false, action };
    futures::stream::unfold(state, |mut st| async move {
        loop {
            if st.done {
                return None;
            }
            if let Some(end) = st.buffer.iter().position(|b| *b == b'\n') {
                let line: Vec<u8> = st.buffer.drain(..=end).collect();
                if line.iter().all(u8::is_ascii_whitespace) {
                    continue;
                }
                let item = parse_watch_line(&line, &st.action);
                if item.is_err() {
                    st.done = true;
                }
                return Some((item, st));
            }
            match st.bytes.next().await {
                Some(Ok(chunk)) => st.buffer.extend_from_slice(chunk.as_ref()),
                Some(Err(source)) => {
                    st.done = true;
                    return Some((Err(ClientError::Transport { action: st.action.clone(), source }), st));
                }
                None => {
                    st.done = true;
                    if st.buffer.iter().all(u8::is_ascii_whitespace) {
                        return None;
                    }
                    let line = std::mem::take(&mut st.buffer);
                    return Some((parse_watch_line(&line, &st.action), st));
                }
            }
        }
    })
}

fn parse_watch_line<T: DeserializeOwned>(line: &[u8], action: &str) -> Result<WatchEvent<T>, ClientError> {
    let decode = |source| ClientError::Decode { action: action.to_string(), source };
    let raw: RawWatchEvent = serde_json::from_slice(line).map_err(decode)?;
    if raw.event_type == WatchEventType::Error {
        let status: Status = serde_json::from_value(raw.object).map_err(decode)?;
        let code = status.code;
        return Err(ClientError::Api { action: action.to_string(), status: Box::new(status), code });
    }
    let object = serde_json::from_value(raw.object).map_err(decode)?;
    Ok(WatchEvent { event_type: raw.event_type, object })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn selectors_are_percent_encoded() {
        let q = ListOptions { label_selector: Some("app=web,tier!=db".into()), field_selector: Some("spec.nodeName=w1".into()), accept: None }
            .query(&[("watch", "true")]);
        assert_eq!(q, "?labelSelector=app%3Dweb%2Ctier%21%3Ddb&fieldSelector=spec.nodeName%3Dw1&watch=true");
        assert_eq!(ListOptions::default().query(&[]), "");
    }

    #[tokio::test]
    async fn watch_lines_split_across_chunks_and_error_lines_end_the_stream() {
        let lines: [&'static [u8]; 3] = [
            b"{\"type\":\"ADDED\",\"object\":{\"a\":1}}\n{\"type\":\"MOD",
            b"IFIED\",\"object\":{\"a\":2}}\n",
            b"{\"type\":\"ERROR\",\"object\":{\"kind\":\"Status\",\"apiVersion\":\"v1\",\"status\":\"Failure\",\"message\":\"too old\",\"reason\":\"Expired\",\"code\":410}}\n{\"type\":\"ADDED\",\"object\":{}}\n",
        ];
        let chunks: Vec<reqwest::Result<&'static [u8]>> = lines.into_iter().map(Ok).collect();
        let events: Vec<Result<WatchEvent<Value>, ClientError>> = watch_lines(futures::stream::iter(chunks), "watching".into()).collect().await;
        assert_eq!(events.len(), 3);
        assert_eq!(events[0].as_ref().unwrap().event_type, WatchEventType::Added);
        assert_eq!(events[1].as_ref().unwrap().object["a"], 2);
        assert!(events[2].as_ref().unwrap_err().is_gone());
    }
}
