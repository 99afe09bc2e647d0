//! The master's API server: HTTPS REST and watch in Kubernetes' conventions, over a durable store.
//!
//! # Layout
//! - this file: [`serve`] (accept loop, TLS, per-connection identity, graceful shutdown), the router,
//!   the authentication middleware and the health, version and discovery endpoints.
//! - [`auth`]: identities (client certificate, bootstrap token, anonymous) and the authorizer.
//! - [`target`]: request paths parsed against the resource registry ([`crate::api::resource`]).
//! - [`handlers`]: get, list, create, update, patch, delete; [`watch`]: streaming watches.
//! - [`objects`]: what happens to an object's JSON on its way in (server-owned metadata, status kept
//!   apart from spec, merge patches); [`selectors`]: label and field selectors.
//! - [`patch`]: strategic merge patch and JSON patch.
//! - [`discovery`]: `/api`, `/apis` and the resource lists of each group version, for kubectl;
//!   [`openapi`]: `/openapi/v2` (JSON and protobuf) and `/openapi/v3`, from the api types' schema.
//! - [`table`]: `Table` answers to lists and gets for kubectl's printing.
//! - [`events_v1`]: `events.k8s.io/v1` Events, a read-only view of the core Events.
//! - [`scale`]: the `scale` subresource of deployments (`autoscaling/v1` `Scale`).
//! - [`podproxy`]: a pod's `log` and `exec`, from the agent of its node over mutually verified TLS.
//! - [`csr`]: node certificate signing requests, signed through the [`CsrSigner`] trait.
//! - [`store`]: the [`store::Store`] trait and the embedded SQLite store.
//! - [`error`]: failures as Kubernetes `Status` objects.
//!
//! Besides the Kubernetes paths, [`NODE_BINARY_PATH`] serves the clusterctl binary the master
//! runs, to the machines that join or upgrade (see [`node_binary`]).
//!
//! Objects live in the store under `/registry/{group or core}/{plural}/{namespace or _cluster}/{name}`;
//! an object's `resourceVersion` is the store revision of its last write.

pub mod auth;
pub mod csr;
pub mod discovery;
pub mod error;
mod events_v1;
mod handlers;
pub mod noderestriction;
pub mod limits;
pub mod objects;
pub mod openapi;
pub mod patch;
pub mod podproxy;
pub mod podsecurity;
pub mod revocation;
mod scale;
pub mod serviceips;
mod table;
mod view;
pub mod selectors;
pub mod store;
pub mod target;
pub mod tls;
mod watch;

use std::collections::HashMap;
use std::future::Future;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use axum::Router;
use axum::body::{Body, Bytes};
use axum::extract::{Query, Request, State};
use axum::http::{HeaderMap, Method, StatusCode, Uri, header};
use axum::middleware::{self, Next};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use axum::{Extension, Json};
use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
use serde_json::json;
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::watch as signal;
use tokio::task::JoinSet;
use tokio_rustls::TlsAcceptor;
use tower::ServiceExt;

pub use auth::Identity;
pub use csr::CsrSigner;
pub use error::ApiError;
use auth::PeerIdentity;
use store::Store;

/// The discovery ConfigMap anyone may read: `data["ca.crt"]` is the cluster CA (kubeadm style; the
/// joining node checks it against the CA hash it was given).
pub const CLUSTER_INFO_PATH: &str = "/api/v1/namespaces/kube-public/configmaps/cluster-info";

/// Where `system:masters` revoke certificates of a user ([`revocation::create`]).
pub const REVOCATIONS_PATH: &str = "/clusterctl/v1/revocations";

/// Where machines of the cluster fetch the clusterctl binary the master runs.
pub const NODE_BINARY_PATH: &str = "/clusterctl/v1/binary";

/// How long a TLS handshake may take.
const HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(10);
/// How long a client may take to send a request's head, counted from the connection's start or
/// the end of the previous response (so it is also how long a kept-alive connection may idle), as
/// kube-apiserver's 32 s `ReadHeaderTimeout`.
pub(crate) const HEADER_READ_TIMEOUT: Duration = Duration::from_secs(30);
/// How long open requests may run on after shutdown was asked for.
const DRAIN_TIMEOUT: Duration = Duration::from_secs(10);

/// The server's certificate and key, which its owner may replace while it serves (renewal), and
/// the CA that signs client certificates (PEM).
#[derive(Clone, Debug)]
pub struct ServerTls {
    pub cert: crate::client::RenewableCertificate,
    pub client_ca_pem: String,
}

impl ServerTls {
    /// A serving certificate and key (PEM), checked to be a pair, and the client CA (PEM).
    pub fn from_pem(cert_pem: &str, key_pem: &str, client_ca_pem: &str) -> Result<Self, String> {
        Ok(ServerTls { cert: crate::client::RenewableCertificate::new(cert_pem, key_pem)?, client_ca_pem: client_ca_pem.to_string() })
    }
}

/// Everything the API server needs besides its store and listener.
#[derive(Clone)]
pub struct ApiServerConfig {
    pub tls: ServerTls,
    /// Signs node client certificates for bootstrap-token requests.
    pub csr_signer: Arc<dyn CsrSigner>,
    /// Checks a bootstrap-token request's instance identity ([`csr::check_join`]); None (a
    /// cluster without a cloud) lets a token name any node, as kubeadm's does.
    pub join_verifier: Option<Arc<dyn csr::JoinVerifier>>,
    /// The CA published in `kube-public/cluster-info`.
    pub cluster_info_ca_pem: String,
    /// The binary served at [`NODE_BINARY_PATH`] (a master serves its own, `/proc/self/exe`);
    /// None answers 404 there.
    pub node_binary: Option<std::path::PathBuf>,
    /// The client certificate for the node agents (pod logs); None answers 503 there.
    pub kubelet_client: Option<podproxy::KubeletClientTls>,
    /// Where Services' cluster IPs come from (`serviceips`); None gives Services none.
    pub service_cidr: Option<ipnet::Ipv4Net>,
    /// What the server takes at once ([`limits`]).
    pub limits: limits::LimitSettings,
    /// Where the audit log goes; None keeps none.
    pub audit: Option<limits::AuditSettings>,
    /// The `tolerationSeconds` a new pod gets for the `not-ready` and `unreachable` taints unless
    /// it tolerates them itself (Kubernetes' DefaultTolerationSeconds admission); None adds none.
    pub default_toleration_seconds: Option<u64>,
}

/// Why the API server could not start.
#[derive(Debug, thiserror::Error)]
pub enum ApiServerError {
    #[error("reading the {what} PEM")]
    Pem {
        what: &'static str,
        #[source]
        source: rustls_pki_types::pem::Error,
    },
    #[error("the {what} PEM holds no certificate")]
    NoCertificate { what: &'static str },
    #[error("building the TLS configuration: {action}")]
    Tls {
        action: &'static str,
        #[source]
        source: rustls::Error,
    },
    #[error("building the client certificate verifier")]
    ClientVerifier(#[source] rustls::server::VerifierBuilderError),
    #[error("opening the audit log")]
    Audit(#[source] std::io::Error),
}

/// What every request handler shares.
#[derive(Clone)]
pub(crate) struct AppState {
    pub(crate) store: Arc<dyn Store>,
    pub(crate) config: Arc<ApiServerConfig>,
    /// Turns true when the server shuts down (ends watches).
    pub(crate) stopping: signal::Receiver<bool>,
    /// TLS towards the node agents, from [`ApiServerConfig::kubelet_client`].
    pub(crate) kubelet_client: Option<Arc<rustls::ClientConfig>>,
    pub(crate) limits: Arc<limits::Limits>,
    pub(crate) audit: Option<limits::AuditLog>,
    /// Deleted nodes' certificates, as lately looked up ([`revocation`]).
    pub(crate) revocations: Arc<revocation::Revocations>,
}

/// Serves the API on `listener` until `shutdown` resolves, then lets open requests finish (watches
/// end at once) for up to 10 s.
pub async fn serve(
    config: ApiServerConfig,
    store: Arc<dyn Store>,
    listener: TcpListener,
    shutdown: impl Future,
) -> Result<(), ApiServerError> {
    let _ = rustls::crypto::ring::default_provider().install_default();
    let acceptor = TlsAcceptor::from(Arc::new(tls::server_config(&config.tls, tls::ClientCerts::Optional)?));
    let (stop_tx, stop_rx) = signal::channel(false);
    let kubelet_client = config.kubelet_client.as_ref().map(podproxy::client_config).transpose()?;
    let audit = config.audit.clone().map(limits::AuditLog::start).transpose().map_err(ApiServerError::Audit)?;
    let limits = Arc::new(limits::Limits::new(config.limits));
    let state = AppState { store, config: Arc::new(config), stopping: stop_rx.clone(), kubelet_client, limits, audit, revocations: Arc::default() };
    let app = router(state);
    let mut connections = JoinSet::new();
    tokio::pin!(shutdown);
    loop {
        tokio::select! {
            _ = &mut shutdown => break,
            accepted = listener.accept() => match accepted {
                Ok((tcp, peer)) => {
                    connections.spawn(serve_connection(tcp, peer, acceptor.clone(), app.clone(), stop_rx.clone()));
                }
                Err(e) => {
                    // Out of file descriptors and the like: give the system a moment.
                    tracing::warn!(error = %e, "accepting a connection");
                    tokio::time::sleep(Duration::from_millis(100)).await;
                }
            },
            Some(_) = connections.join_next(), if !connections.is_empty() => {}
        }
    }
    let _ = stop_tx.send(true);
    let drained = tokio::time::timeout(DRAIN_TIMEOUT, async { while connections.join_next().await.is_some() {} }).await;
    if drained.is_err() {
        tracing::warn!(open = connections.len(), "closing connections still open after shutdown");
        connections.abort_all();
    }
    Ok(())
}

async fn serve_connection(tcp: TcpStream, peer: SocketAddr, acceptor: TlsAcceptor, app: Router, mut stopping: signal::Receiver<bool>) {
    let _ = tcp.set_nodelay(true);
    let tls = match tokio::time::timeout(HANDSHAKE_TIMEOUT, acceptor.accept(tcp)).await {
        Ok(Ok(tls)) => tls,
        Ok(Err(e)) => {
            tracing::debug!(%peer, error = %e, "TLS handshake failed");
            return;
        }
        Err(_) => {
            tracing::debug!(%peer, "TLS handshake timed out");
            return;
        }
    };
    let identity = PeerIdentity(tls::peer_identity(tls.get_ref().1));
    let service = hyper::service::service_fn(move |mut req: hyper::Request<hyper::body::Incoming>| {
        req.extensions_mut().insert(identity.clone());
        app.clone().oneshot(req.map(Body::new))
    });
    let mut builder = hyper_util::server::conn::auto::Builder::new(TokioExecutor::new());
    // A client that sends a request's head slowly (or not at all) loses its connection, instead of
    // holding it for ever (slowloris); an HTTP/2 peer that stops answering pings is dropped.
    builder.http1().timer(TokioTimer::new()).header_read_timeout(HEADER_READ_TIMEOUT);
    builder.http2().timer(TokioTimer::new()).keep_alive_interval(Some(Duration::from_secs(30))).keep_alive_timeout(Duration::from_secs(20));
    // With upgrades: a pod's exec, attach and port-forward switch the connection to a stream.
    let conn = builder.serve_connection_with_upgrades(TokioIo::new(tls), service);
    tokio::pin!(conn);
    let stop = async move {
        let _ = stopping.wait_for(|s| *s).await;
    };
    tokio::select! {
        result = conn.as_mut() => {
            if let Err(e) = result {
                tracing::debug!(%peer, error = %e, "connection ended with an error");
            }
        }
        () = stop => {
            conn.as_mut().graceful_shutdown();
            let _ = conn.await;
        }
    }
}

fn router(state: AppState) -> Router {
    Router::new()
        .route("/healthz", get(healthz))
        .route("/livez", get(healthz))
        .route("/readyz", get(readyz))
        .route("/version", get(version))
        .route(NODE_BINARY_PATH, get(node_binary))
        .route(REVOCATIONS_PATH, axum::routing::post(revocation::create))
        .route("/api/v1/namespaces/{namespace}/pods/{name}/log", get(podproxy::log))
        .route("/api/v1/namespaces/{namespace}/pods/{name}/exec", get(podproxy::exec).post(podproxy::exec))
        .route("/api/v1/namespaces/{namespace}/pods/{name}/attach", get(podproxy::attach).post(podproxy::attach))
        .route("/api/v1/namespaces/{namespace}/pods/{name}/portforward", get(podproxy::portforward).post(podproxy::portforward))
        .fallback(resource)
        // Inside authentication (layers added later run first): the caps, and the audit line
        // around them so that a refusal is logged too.
        .layer(middleware::from_fn_with_state(state.clone(), limits::admit))
        .layer(middleware::from_fn_with_state(state.clone(), limits::audit))
        .layer(middleware::from_fn_with_state(state.clone(), authenticate))
        .with_state(state)
}

/// Finds out who is asking and refuses anonymous requests outside the allowed paths.
async fn authenticate(State(state): State<AppState>, mut req: Request, next: Next) -> Response {
    let from_cert = req.extensions().get::<PeerIdentity>().and_then(|p| p.0.clone());
    // A deleted node's certificates, and those an operator revoked (`revocation`).
    if let Some((identity, issued_at)) = &from_cert {
        match state.revocations.refuses(state.store.as_ref(), &identity.user, *issued_at).await {
            Ok(false) => {}
            Ok(true) => {
                tracing::info!(user = %identity.user, "refused a revoked certificate");
                let why = match identity.node_name() {
                    Some(node) => format!("the certificate of node {node:?} was revoked when its Node was deleted"),
                    None => format!("this certificate of {:?} was revoked (clusterctl rotate-certs)", identity.user),
                };
                return ApiError::unauthorized(why).into_response();
            }
            Err(e) => return ApiError::internal(format!("reading the revoked certificates: {e}")).into_response(),
        }
    }
    let from_cert = from_cert.map(|(identity, _)| identity);
    let bearer = req
        .headers()
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.strip_prefix("Bearer "))
        .map(|t| t.trim().to_string());
    let identity = match (from_cert, bearer) {
        (Some(identity), _) => identity,
        (None, Some(token)) => match auth::bootstrap_token_identity(state.store.as_ref(), &token).await {
            Ok(identity) => identity,
            Err(e) => return e.into_response(),
        },
        (None, None) if auth::anonymous_allowed(req.method(), req.uri().path()) => Identity::anonymous(),
        (None, None) => return ApiError::unauthorized("Unauthorized").into_response(),
    };
    req.extensions_mut().insert(identity);
    next.run(req).await
}

async fn resource(
    State(state): State<AppState>,
    Extension(identity): Extension<Identity>,
    method: Method,
    uri: Uri,
    Query(query): Query<HashMap<String, String>>,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    if method == Method::GET && uri.path() == CLUSTER_INFO_PATH {
        return Json(json!({
            "apiVersion": "v1",
            "kind": "ConfigMap",
            "metadata": { "name": "cluster-info", "namespace": "kube-public" },
            "data": { "ca.crt": state.config.cluster_info_ca_pem },
        }))
        .into_response();
    }
    if method == Method::GET
        && let Some(document) = discovery::document(uri.path())
    {
        return Json(document).into_response();
    }
    if method == Method::GET && uri.path().starts_with("/openapi/") {
        let accept = headers.get(header::ACCEPT).and_then(|v| v.to_str().ok()).unwrap_or("");
        return match openapi::serve(uri.path(), accept) {
            Some((content_type, body)) => ([(header::CONTENT_TYPE, content_type)], body).into_response(),
            None => ApiError::no_route().into_response(),
        };
    }
    let path = uri.path().to_string();
    if path.starts_with("/apis/events.k8s.io/v1/") {
        let watch = query.get("watch").and_then(|w| target::query_bool(w)) == Some(true);
        let core_method = method.clone();
        return events_v1::serve(&method, &path, watch, async move |core: String| match handlers::resource(state, identity, core_method, &core, query, headers, body).await {
            Ok(response) => response,
            Err(e) => e.into_response(),
        })
        .await;
    }
    let verb = method.clone();
    match handlers::resource(state, identity.clone(), method, &path, query, headers, body).await {
        Ok(response) => response,
        Err(e) => {
            tracing::debug!(user = %identity.user, %verb, %path, code = e.0.code, "{}", e.0.message);
            e.into_response()
        }
    }
}

async fn healthz() -> &'static str {
    "ok"
}

async fn readyz(State(state): State<AppState>) -> Response {
    match tokio::time::timeout(Duration::from_secs(2), state.store.revision()).await {
        Ok(Ok(_)) => "ok".into_response(),
        Ok(Err(e)) => (StatusCode::SERVICE_UNAVAILABLE, format!("store: {e}")).into_response(),
        Err(_) => (StatusCode::SERVICE_UNAVAILABLE, "store: no answer within 2 s").into_response(),
    }
}

/// The clusterctl binary this master runs, streamed: a machine joining or being upgraded inside
/// the VPC fetches it here, so that `create` sends one copy over the operator's own link (to the
/// master) instead of one per machine. Admins, nodes and bootstrap tokens (machines about to join)
/// may read it; whoever installs it checks its SHA-256 against the one it was told.
async fn node_binary(State(state): State<AppState>, Extension(identity): Extension<Identity>) -> Response {
    let may = identity.in_group(auth::MASTERS_GROUP) || identity.node_name().is_some() || identity.is_bootstrapper();
    if !may {
        return ApiError::forbidden_path(&identity.user, "get", NODE_BINARY_PATH).into_response();
    }
    let Some(path) = state.config.node_binary.clone() else {
        return ApiError::no_route().into_response();
    };
    let file = match tokio::fs::File::open(&path).await {
        Ok(f) => f,
        Err(e) => return (StatusCode::SERVICE_UNAVAILABLE, format!("reading {}: {e}", path.display())).into_response(),
    };
    let length = match file.metadata().await {
        Ok(m) => m.len(),
        Err(e) => return (StatusCode::SERVICE_UNAVAILABLE, format!("reading {}: {e}", path.display())).into_response(),
    };
    let chunks = futures::stream::try_unfold(file, |mut file| async move {
        use tokio::io::AsyncReadExt;
        let mut chunk = vec![0u8; 256 * 1024];
        let n = file.read(&mut chunk).await?;
        chunk.truncate(n);
        Ok::<_, std::io::Error>((n > 0).then(|| (Bytes::from(chunk), file)))
    });
    Response::builder()
        .header(header::CONTENT_TYPE, "application/octet-stream")
        .header(header::CONTENT_LENGTH, length)
        .body(Body::from_stream(chunks))
        .unwrap_or_else(|e| (StatusCode::INTERNAL_SERVER_ERROR, e.to_string()).into_response())
}

/// The Kubernetes version whose API this server speaks (in `/version` and the OpenAPI documents).
pub const KUBERNETES_VERSION: &str = "v1.30.0";

async fn version() -> Json<serde_json::Value> {
    Json(json!({
        "major": "1",
        "minor": "30",
        "gitVersion": format!("{KUBERNETES_VERSION}-clusterctl.{}", env!("CARGO_PKG_VERSION")),
        "platform": format!("{}/{}", std::env::consts::OS, std::env::consts::ARCH),
    }))
}

#[cfg(test)]
mod tests;
