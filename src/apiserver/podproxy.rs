//! A pod's `log` and `exec` subresources, served by the agent of the pod's node and proxied through
//! here, as kube-apiserver does with its kubelet client.
//!
//! `GET /api/v1/namespaces/{ns}/pods/{name}/log` is authorized as `get pods/log`, the container
//! chosen (the `container` parameter, else the pod's only container), and the request forwarded to
//! `https://<node InternalIP>:<kubelet port>/containerLogs/{ns}/{name}/{container}` with the log
//! options (`follow`, `tailLines`, `sinceSeconds`, `sinceTime`, `timestamps`, `previous`,
//! `limitBytes`). The API server presents its [`KubeletClientTls`] certificate and accepts only a
//! serving certificate of the cluster CA for the pod's node name (the agent's, see
//! `crate::pki::ClusterCa::issue_node_serving`), so that another node cannot answer for it. The
//! answer streams through; an agent's refusal becomes a `Status` with its code and message.
//!
//! `exec`, `attach` and `portforward` (authorized as `create pods/<subresource>`) are upgrades: the
//! client's handshake (a WebSocket's, `v5.channel.k8s.io`/`v4.channel.k8s.io` or
//! `SPDY/3.1+portforward.k8s.io`, or SPDY/3.1's with its `X-Stream-Protocol-Version`) is sent on
//! to the agent's `/exec/...`, `/attach/...` or `/portForward/...`, and once the agent has
//! switched protocols the two connections are joined byte for byte, so that the streaming
//! protocol runs between the client and the agent (kube-apiserver's upgrade-aware proxy; it
//! translates WebSocket to SPDY for kubelets that speak only SPDY, which the agent does not need).

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use axum::body::Body;
use axum::extract::{Path, Query, State};
use axum::http::{StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::Extension;
use http_body_util::BodyExt;
use hyper_util::rt::TokioIo;
use rustls::RootCertStore;
use rustls_pki_types::pem::PemObject;
use rustls_pki_types::{CertificateDer, ServerName};
use tokio::net::TcpStream;
use tokio_rustls::TlsConnector;

use super::auth::{Identity, Verb};
use super::error::ApiError;
use super::handlers::authorize;
use super::target::Target;
use super::{AppState, ApiServerError};
use crate::api::resource::{NODES, PODS};
use crate::api::Node;
use crate::api::pod::Pod;

/// How long connecting to an agent (TCP and TLS) may take.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(5);
/// How long an agent may take to start answering.
const ANSWER_TIMEOUT: Duration = Duration::from_secs(30);

/// The API server's client certificate towards the node agents and the CA their serving
/// certificates are checked against (all PEM).
#[derive(Clone)]
pub struct KubeletClientTls {
    /// The API server's client certificate towards the agents, which its owner may renew.
    pub cert: crate::client::RenewableCertificate,
    pub ca_pem: String,
}

/// The rustls configuration of connections to agents.
pub(crate) fn client_config(tls: &KubeletClientTls) -> Result<Arc<rustls::ClientConfig>, ApiServerError> {
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let pem = |what: &'static str| move |source| ApiServerError::Pem { what, source };
    let mut roots = RootCertStore::empty();
    for ca in CertificateDer::pem_slice_iter(tls.ca_pem.as_bytes()) {
        roots.add(ca.map_err(pem("agent CA"))?).map_err(|source| ApiServerError::Tls { action: "adding the agent CA", source })?;
    }
    let mut config = rustls::ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .map_err(|source| ApiServerError::Tls { action: "choosing protocol versions", source })?
        .with_root_certificates(roots)
        .with_client_cert_resolver(tls.cert.client_resolver());
    config.alpn_protocols = vec![b"http/1.1".to_vec()];
    Ok(Arc::new(config))
}

/// `GET .../pods/{name}/log`.
pub(crate) async fn log(
    State(state): State<AppState>,
    Extension(identity): Extension<Identity>,
    Path((namespace, name)): Path<(String, String)>,
    Query(query): Query<HashMap<String, String>>,
) -> Response {
    match serve_log(&state, &identity, &namespace, &name, &query).await {
        Ok(response) => response,
        Err(e) => e.into_response(),
    }
}

/// The log parameters passed on to the agent, each checked here first.
const LOG_FLAGS: &[&str] = &["follow", "timestamps", "previous"];
const LOG_NUMBERS: &[&str] = &["tailLines", "sinceSeconds", "limitBytes"];

/// The agent's query for a log request: known parameters only, numbers and flags checked (400
/// with the parameter's name otherwise), `sinceSeconds` and `sinceTime` not both.
fn agent_query(query: &HashMap<String, String>) -> Result<String, ApiError> {
    let mut out = url::form_urlencoded::Serializer::new(String::new());
    for key in LOG_FLAGS {
        if let Some(v) = query.get(*key) {
            match super::target::query_bool(v) {
                Some(true) => {
                    out.append_pair(key, "true");
                }
                Some(false) => {}
                None if v.is_empty() => {}
                None => return Err(ApiError::bad_request(format!("{key}: Invalid value: {v:?}: must be true or false"))),
            }
        }
    }
    for key in LOG_NUMBERS {
        if let Some(v) = query.get(*key) {
            let n: i64 = v.parse().map_err(|_| ApiError::bad_request(format!("{key}: Invalid value: {v:?}: must be an integer")))?;
            let least = if *key == "tailLines" { 0 } else { 1 };
            if n < least {
                return Err(ApiError::bad_request(format!("{key}: Invalid value: {n}: must be greater than or equal to {least}")));
            }
            out.append_pair(key, &n.to_string());
        }
    }
    if let Some(t) = query.get("sinceTime") {
        if query.contains_key("sinceSeconds") {
            return Err(ApiError::bad_request("at most one of sinceTime or sinceSeconds may be specified"));
        }
        crate::api::Time::parse(t).map_err(|_| ApiError::bad_request(format!("sinceTime: Invalid value: {t:?}: must be an RFC 3339 time")))?;
        out.append_pair("sinceTime", t);
    }
    Ok(out.finish())
}

/// The container a request is for: the named one, or the pod's only container.
fn container_of<'a>(pod: &'a Pod, asked: Option<&'a str>) -> Result<&'a str, ApiError> {
    let names: Vec<&str> = pod.spec.containers.iter().map(|c| c.name.as_str()).collect();
    let name = &pod.metadata.name;
    match (asked.filter(|a| !a.is_empty()), names.as_slice()) {
        (Some(asked), _) if names.contains(&asked) => Ok(asked),
        (Some(asked), _) => Err(ApiError::bad_request(format!("container {asked} is not valid for pod {name}"))),
        (None, [only]) => Ok(only),
        (None, _) => Err(ApiError::bad_request(format!("a container name must be specified for pod {name}, choose one of: [{}]", names.join(" ")))),
    }
}

async fn stored<T: serde::de::DeserializeOwned>(state: &AppState, key: &str, resource: &crate::api::resource::ResourceType, name: &str) -> Result<T, ApiError> {
    let found = state.store.get(key).await.map_err(|e| ApiError::from_store(e, resource, name))?.ok_or_else(|| ApiError::not_found(resource, name))?;
    serde_json::from_value(found.value).map_err(|e| ApiError::internal(format!("reading the stored {resource} {name:?}: {e}")))
}

async fn serve_log(state: &AppState, identity: &Identity, namespace: &str, name: &str, query: &HashMap<String, String>) -> Result<Response, ApiError> {
    let target = Target::parse(&format!("/api/v1/namespaces/{namespace}/pods/{name}"))?;
    let target = Target { subresource: Some("log".into()), ..target };
    authorize(state, identity, &target, Verb::Get, None).await?;
    let agent_query = agent_query(query)?;
    let (node_name, ip, port, container) = pod_target(state, &target, name, query.get("container").map(String::as_str)).await?;
    let path = format!("/containerLogs/{namespace}/{name}/{container}?{agent_query}");
    agent_get(state, &node_name, &ip, port, &path).await
}

/// An HTTP/1.1 connection (upgrades allowed) to the agent of `node_name` at `ip:port`, its
/// serving certificate checked to be that node's.
async fn agent_connection(state: &AppState, node_name: &str, ip: &str, port: u16) -> Result<hyper::client::conn::http1::SendRequest<http_body_util::Empty<bytes::Bytes>>, ApiError> {
    let Some(config) = state.kubelet_client.clone() else {
        return Err(ApiError::unavailable("this API server has no client certificate for the node agents"));
    };
    let unreachable = |e: String| ApiError::unavailable(format!("reaching the agent of node {node_name} at {ip}:{port}: {e}"));
    let server_name = ServerName::try_from(node_name.to_string()).map_err(|e| unreachable(e.to_string()))?;
    let connect = async {
        let tcp = TcpStream::connect((ip, port)).await.map_err(|e| unreachable(e.to_string()))?;
        let _ = tcp.set_nodelay(true);
        TlsConnector::from(config).connect(server_name, tcp).await.map_err(|e| unreachable(e.to_string()))
    };
    let tls = tokio::time::timeout(CONNECT_TIMEOUT, connect).await.map_err(|_| unreachable("timed out connecting".into()))??;
    let (sender, connection) = hyper::client::conn::http1::handshake(TokioIo::new(tls)).await.map_err(|e| unreachable(e.to_string()))?;
    tokio::spawn(async move {
        let _ = connection.with_upgrades().await;
    });
    Ok(sender)
}

/// An agent's refusal (any answer but the one wanted) as a `Status`.
async fn agent_refusal(node_name: &str, answer: hyper::Response<hyper::body::Incoming>) -> ApiError {
    let status = answer.status();
    let body = tokio::time::timeout(ANSWER_TIMEOUT, answer.into_body().collect()).await.ok().and_then(Result::ok).map(|b| b.to_bytes()).unwrap_or_default();
    let message = String::from_utf8_lossy(&body[..body.len().min(4096)]).trim().to_string();
    match status {
        StatusCode::BAD_REQUEST | StatusCode::NOT_FOUND => ApiError::bad_request(message),
        _ => ApiError::unavailable(format!("the agent of node {node_name} answered {status}: {message}")),
    }
}

/// `GET path` on the agent of `node_name` at `ip:port`, its answer streamed back.
async fn agent_get(state: &AppState, node_name: &str, ip: &str, port: u16, path: &str) -> Result<Response, ApiError> {
    let mut sender = agent_connection(state, node_name, ip, port).await?;
    let unreachable = |e: String| ApiError::unavailable(format!("reaching the agent of node {node_name} at {ip}:{port}: {e}"));
    let request = hyper::Request::get(path)
        .header(header::HOST, node_name)
        .body(http_body_util::Empty::<bytes::Bytes>::new())
        .map_err(|e| ApiError::internal(e.to_string()))?;
    let answer = tokio::time::timeout(ANSWER_TIMEOUT, sender.send_request(request))
        .await
        .map_err(|_| unreachable("no answer in 30 s".into()))?
        .map_err(|e| unreachable(e.to_string()))?;
    if answer.status() != StatusCode::OK {
        return Err(agent_refusal(node_name, answer).await);
    }
    let content_type = answer.headers().get(header::CONTENT_TYPE).cloned();
    let mut response = Response::new(Body::new(answer.into_body()));
    if let Some(ct) = content_type {
        response.headers_mut().insert(header::CONTENT_TYPE, ct);
    }
    Ok(response)
}

/// The pod's node, its agent's address, and the container a request is for.
async fn pod_target(state: &AppState, target: &Target, name: &str, container: Option<&str>) -> Result<(String, String, u16, String), ApiError> {
    let pod: Pod = stored(state, &target.key(name), &PODS, name).await?;
    let container = container_of(&pod, container)?.to_string();
    let Some(node_name) = pod.spec.node_name.clone().filter(|n| !n.is_empty()) else {
        return Err(ApiError::bad_request(format!("pod {name} does not have a host assigned")));
    };
    let node: Node = stored(state, &NODES.store_key(None, &node_name), &NODES, &node_name).await?;
    let Some((ip, port)) = node.agent_endpoint() else {
        return Err(ApiError::unavailable(format!("node {node_name} reports no InternalIP to reach its agent at")));
    };
    Ok((node_name, ip, port, container))
}

/// `GET` or `POST .../pods/{name}/exec`: an upgrade joined to the agent's.
pub(crate) async fn exec(state: State<AppState>, identity: Extension<Identity>, path: Path<(String, String)>, request: axum::extract::Request) -> Response {
    upgrade(state, identity, path, request, Subresource::Exec).await
}

/// `GET` or `POST .../pods/{name}/attach`.
pub(crate) async fn attach(state: State<AppState>, identity: Extension<Identity>, path: Path<(String, String)>, request: axum::extract::Request) -> Response {
    upgrade(state, identity, path, request, Subresource::Attach).await
}

/// `GET` or `POST .../pods/{name}/portforward`.
pub(crate) async fn portforward(state: State<AppState>, identity: Extension<Identity>, path: Path<(String, String)>, request: axum::extract::Request) -> Response {
    upgrade(state, identity, path, request, Subresource::PortForward).await
}

/// The pod subresources that switch protocols.
#[derive(Debug, Clone, Copy, PartialEq)]
enum Subresource {
    Exec,
    Attach,
    PortForward,
}

impl Subresource {
    fn name(self) -> &'static str {
        match self {
            Subresource::Exec => "exec",
            Subresource::Attach => "attach",
            Subresource::PortForward => "portforward",
        }
    }

    /// The query parameters passed on to the agent (the container is in its path).
    fn forwarded(self) -> &'static [&'static str] {
        match self {
            Subresource::Exec => &["command", "stdin", "stdout", "stderr", "tty"],
            Subresource::Attach => &["stdin", "stdout", "stderr", "tty"],
            Subresource::PortForward => &["ports"],
        }
    }
}

async fn upgrade(
    State(state): State<AppState>,
    Extension(identity): Extension<Identity>,
    Path((namespace, name)): Path<(String, String)>,
    request: axum::extract::Request,
    what: Subresource,
) -> Response {
    match serve_upgrade(&state, &identity, &namespace, &name, request, what).await {
        Ok(response) => response,
        Err(e) => e.into_response(),
    }
}

/// A query split into the container and what the agent is sent.
fn upgrade_query(raw_query: &str, forwarded: &[&str]) -> (Option<String>, String) {
    let mut container = None;
    let mut onward = url::form_urlencoded::Serializer::new(String::new());
    for (key, value) in url::form_urlencoded::parse(raw_query.as_bytes()) {
        if key == "container" {
            container = Some(value.into_owned());
        } else if forwarded.contains(&key.as_ref()) {
            onward.append_pair(&key, &value);
        }
    }
    (container, onward.finish())
}

/// The handshake headers passed on to the agent (WebSocket's, and SPDY's protocol version).
const UPGRADE_HEADERS: &[&str] = &["connection", "upgrade", "sec-websocket-key", "sec-websocket-version", "sec-websocket-protocol", "x-stream-protocol-version"];

async fn serve_upgrade(state: &AppState, identity: &Identity, namespace: &str, name: &str, mut request: axum::extract::Request, what: Subresource) -> Result<Response, ApiError> {
    let target = Target::parse(&format!("/api/v1/namespaces/{namespace}/pods/{name}"))?;
    let target = Target { subresource: Some(what.name().into()), ..target };
    authorize(state, identity, &target, Verb::Create, None).await?;
    let raw_query = request.uri().query().unwrap_or("").to_string();
    let (container, forwarded) = upgrade_query(&raw_query, what.forwarded());
    if !request.headers().contains_key(header::UPGRADE) {
        return Err(ApiError::bad_request("Upgrade request required"));
    }
    let (node_name, ip, port, container) = pod_target(state, &target, name, container.as_deref()).await?;
    let path = match what {
        Subresource::PortForward => format!("/portForward/{namespace}/{name}?{forwarded}"),
        _ => format!("/{}/{namespace}/{name}/{container}?{forwarded}", what.name()),
    };
    let mut sender = agent_connection(state, &node_name, &ip, port).await?;
    let mut onward = hyper::Request::builder().method(request.method().clone()).uri(path).header(header::HOST, node_name.as_str());
    for (key, value) in request.headers() {
        if UPGRADE_HEADERS.contains(&key.as_str()) {
            onward = onward.header(key, value);
        }
    }
    let onward = onward.body(http_body_util::Empty::<bytes::Bytes>::new()).map_err(|e| ApiError::internal(e.to_string()))?;
    let unreachable = |e: String| ApiError::unavailable(format!("reaching the agent of node {node_name} at {ip}:{port}: {e}"));
    let mut answer = tokio::time::timeout(ANSWER_TIMEOUT, sender.send_request(onward))
        .await
        .map_err(|_| unreachable("no answer in 30 s".into()))?
        .map_err(|e| unreachable(e.to_string()))?;
    if answer.status() != StatusCode::SWITCHING_PROTOCOLS {
        return Err(agent_refusal(&node_name, answer).await);
    }
    let mut response = Response::new(Body::empty());
    *response.status_mut() = StatusCode::SWITCHING_PROTOCOLS;
    for (key, value) in answer.headers() {
        response.headers_mut().append(key, value.clone());
    }
    let from_client = hyper::upgrade::on(&mut request);
    let from_agent = hyper::upgrade::on(&mut answer);
    tokio::spawn(async move {
        let (Ok(client), Ok(agent)) = (from_client.await, from_agent.await) else { return };
        join_streams(TokioIo::new(client), TokioIo::new(agent)).await;
    });
    Ok(response)
}

/// Copies bytes both ways until the agent's side ends, then ends the client's side cleanly (TLS
/// `close_notify` after everything the agent sent): the agent may drop its connection without
/// one, which must not cut off the last bytes (the exec's final `Status` and close frame).
async fn join_streams<C, A>(client: C, agent: A)
where
    C: tokio::io::AsyncRead + tokio::io::AsyncWrite + Send + 'static,
    A: tokio::io::AsyncRead + tokio::io::AsyncWrite + Send + 'static,
{
    use tokio::io::{AsyncWriteExt, BufReader};
    // 128 KiB at a time (tokio's `copy` moves 8 KiB): fewer, fuller TLS records each way, which
    // is most of a port-forward's throughput.
    const CHUNK: usize = 128 * 1024;
    let (from_client, mut to_client) = tokio::io::split(client);
    let (from_agent, mut to_agent) = tokio::io::split(agent);
    let (mut from_client, mut from_agent) = (BufReader::with_capacity(CHUNK, from_client), BufReader::with_capacity(CHUNK, from_agent));
    let up = tokio::spawn(async move {
        let _ = tokio::io::copy_buf(&mut from_client, &mut to_agent).await;
        let _ = to_agent.shutdown().await;
    });
    let _ = tokio::io::copy_buf(&mut from_agent, &mut to_client).await;
    let _ = to_client.flush().await;
    let _ = to_client.shutdown().await;
    up.abort();
}

#[cfg(test)]
mod tests {
    use super::*;

    fn q(pairs: &[(&str, &str)]) -> HashMap<String, String> {
        pairs.iter().map(|(k, v)| (k.to_string(), v.to_string())).collect()
    }

    #[test]
    fn log_options_are_checked_and_passed_on() {
        assert_eq!(agent_query(&q(&[("follow", "true"), ("tailLines", "10"), ("container", "web"), ("pretty", "1")])).unwrap(), "follow=true&tailLines=10");
        assert_eq!(agent_query(&q(&[("previous", "false"), ("timestamps", "1")])).unwrap(), "timestamps=true");
        assert_eq!(agent_query(&q(&[("follow", "True"), ("previous", "False")])).unwrap(), "follow=true", "Go's booleans, as the Python client sends them");
        assert_eq!(agent_query(&q(&[("sinceTime", "2026-12-05T10:00:00Z")])).unwrap(), "sinceTime=2026-12-05T10%3A00%3A00Z");
        for bad in [&[("tailLines", "x")][..], &[("tailLines", "-1")], &[("sinceSeconds", "0")], &[("follow", "yes")], &[("sinceTime", "then")], &[("sinceSeconds", "5"), ("sinceTime", "2026-12-05T10:00:00Z")]] {
            let e = agent_query(&q(bad)).unwrap_err();
            assert_eq!(e.0.code, 400, "{bad:?}");
        }
    }

    #[test]
    fn the_container_is_the_named_one_or_the_only_one() {
        let pod: Pod = serde_json::from_value(serde_json::json!({
            "metadata": { "name": "web-1" },
            "spec": { "containers": [{ "name": "web", "image": "i" }, { "name": "side", "image": "i" }] },
        }))
        .unwrap();
        assert_eq!(container_of(&pod, Some("side")).unwrap(), "side");
        assert_eq!(container_of(&pod, Some("db")).unwrap_err().0.message, "container db is not valid for pod web-1");
        assert_eq!(container_of(&pod, None).unwrap_err().0.message, "a container name must be specified for pod web-1, choose one of: [web side]");
        let single: Pod = serde_json::from_value(serde_json::json!({ "metadata": { "name": "one" }, "spec": { "containers": [{ "name": "only", "image": "i" }] } })).unwrap();
        assert_eq!(container_of(&single, None).unwrap(), "only");
    }
}
