//! The agent's HTTPS server (the kubelet's port 10250): what the API server proxies a pod's `log`,
//! `exec`, `attach` and `portforward` subresources to.
//!
//! It serves with the node's serving certificate (`CN=system:node:<name>`, the node name as its one
//! DNS name, signed by the cluster CA: the API server verifies that name) and lets in only client
//! certificates of the cluster CA whose common name is [`KUBELET_CLIENT_CN`], the API server's.
//! Paths are kubelet's:
//! - `GET /containerLogs/{namespace}/{pod}/{container}` with `follow`, `tailLines`,
//!   `sinceSeconds`, `sinceTime`, `timestamps`, `previous` and `limitBytes`;
//! - `/exec/{namespace}/{pod}/{container}?command=...&stdin&stdout&stderr&tty` and
//!   `/attach/{namespace}/{pod}/{container}?stdin&stdout&stderr&tty`, a WebSocket or a SPDY/3.1
//!   upgrade ([`super::remotecommand`]);
//! - `/portForward/{namespace}/{pod}`, SPDY/3.1 or SPDY tunnelled through a WebSocket
//!   ([`super::portforward`]).

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use axum::Router;
use axum::body::Body;
use axum::extract::ws::{Message, WebSocket, WebSocketUpgrade};
use axum::extract::{Path, Query, Request, State};
use axum::extract::FromRequestParts;
use axum::http::{StatusCode, header};
use axum::middleware::{self, Next};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use futures::StreamExt;
use hyper_util::rt::{TokioExecutor, TokioIo};
use tokio::net::{TcpListener, TcpStream};
use tokio_rustls::TlsAcceptor;
use tower::ServiceExt;

use super::remotecommand::{self, Command};
use super::runtime::{ContainerInfo, ContainerRuntime, ExecRequest, LogOptions, labels};
use super::{portforward, spdy};
use crate::api::Time;
use crate::apiserver::ServerTls;
use crate::apiserver::target::query_bool;
use crate::apiserver::tls::{self, ClientCerts};
use crate::pki::KUBELET_CLIENT_CN;

/// The header in which SPDY clients offer, and the server names, the streaming protocol.
const STREAM_PROTOCOL_HEADER: &str = "x-stream-protocol-version";

/// The port the agent serves on (kubelet's).
pub const PORT: u16 = 10250;

/// How long a TLS handshake may take.
const HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(10);

#[derive(Clone)]
struct AgentState {
    runtime: Arc<dyn ContainerRuntime>,
}

/// Serves on `listener` until the process ends.
pub async fn serve(listener: TcpListener, tls: &ServerTls, runtime: Arc<dyn ContainerRuntime>) -> anyhow::Result<()> {
    let _ = rustls::crypto::ring::default_provider().install_default();
    let mut config = tls::server_config(tls, ClientCerts::Required)?;
    config.alpn_protocols = vec![b"http/1.1".to_vec()];
    let acceptor = TlsAcceptor::from(Arc::new(config));
    let app = router(AgentState { runtime });
    loop {
        match listener.accept().await {
            Ok((tcp, peer)) => {
                tokio::spawn(serve_connection(tcp, peer, acceptor.clone(), app.clone()));
            }
            Err(e) => {
                tracing::warn!(error = %e, "accepting a connection");
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
        }
    }
}

/// The common name of a connection's verified client certificate.
#[derive(Clone)]
struct Peer(Option<String>);

async fn serve_connection(tcp: TcpStream, peer: SocketAddr, acceptor: TlsAcceptor, app: Router) {
    let _ = tcp.set_nodelay(true);
    let tls = match tokio::time::timeout(HANDSHAKE_TIMEOUT, acceptor.accept(tcp)).await {
        Ok(Ok(tls)) => tls,
        Ok(Err(e)) => {
            tracing::debug!(%peer, error = %e, "TLS handshake failed");
            return;
        }
        Err(_) => return,
    };
    let who = Peer(tls::peer_identity(tls.get_ref().1).map(|(i, _)| i.user));
    let service = hyper::service::service_fn(move |mut req: hyper::Request<hyper::body::Incoming>| {
        req.extensions_mut().insert(who.clone());
        app.clone().oneshot(req.map(Body::new))
    });
    let builder = hyper_util::server::conn::auto::Builder::new(TokioExecutor::new());
    if let Err(e) = builder.serve_connection_with_upgrades(TokioIo::new(tls), service).await {
        tracing::debug!(%peer, error = %e, "connection ended with an error");
    }
}

fn router(state: AgentState) -> Router {
    Router::new()
        .route("/containerLogs/{namespace}/{pod}/{container}", get(container_logs))
        .route("/exec/{namespace}/{pod}/{container}", get(exec).post(exec))
        .route("/attach/{namespace}/{pod}/{container}", get(attach).post(attach))
        .route("/portForward/{namespace}/{pod}", get(port_forward).post(port_forward))
        .layer(middleware::from_fn(only_the_api_server))
        .with_state(state)
}

/// Lets in the API server's certificate only (the TLS layer already verified it against the CA).
async fn only_the_api_server(req: Request, next: Next) -> Response {
    match req.extensions().get::<Peer>().and_then(|p| p.0.as_deref()) {
        Some(KUBELET_CLIENT_CN) => next.run(req).await,
        Some(user) => (StatusCode::FORBIDDEN, format!("user {user:?} may not use the node's API\n")).into_response(),
        None => (StatusCode::UNAUTHORIZED, "Unauthorized\n").into_response(),
    }
}

/// A failure answered as kubelet does: a status code and a line of text.
fn refuse(code: StatusCode, message: impl Into<String>) -> Response {
    (code, format!("{}\n", message.into())).into_response()
}

fn flag(query: &HashMap<String, String>, key: &str) -> bool {
    query.get(key).and_then(|v| query_bool(v)) == Some(true)
}

fn number(query: &HashMap<String, String>, key: &str) -> Result<Option<u64>, String> {
    match query.get(key) {
        None => Ok(None),
        Some(v) => v.parse().map(Some).map_err(|_| format!("{key}: {v:?} is not a non-negative integer")),
    }
}

/// A log read's options from kubelet's query parameters; the error says which is wrong.
fn log_options(query: &HashMap<String, String>) -> Result<(LogOptions, Option<u64>), String> {
    let since_seconds = number(query, "sinceSeconds")?;
    let since_time = match query.get("sinceTime") {
        None => None,
        Some(t) => Some(Time::parse(t).map_err(|_| format!("sinceTime: {t:?} is not an RFC 3339 time"))?),
    };
    let now = SystemTime::now().duration_since(UNIX_EPOCH).unwrap_or_default().as_secs();
    let since_unix = match (since_seconds, since_time) {
        (Some(s), _) => Some(now.saturating_sub(s)),
        (None, Some(t)) => Some(t.to_system_time().duration_since(UNIX_EPOCH).unwrap_or_default().as_secs()),
        (None, None) => None,
    };
    let options = LogOptions {
        follow: flag(query, "follow"),
        tail_lines: number(query, "tailLines")?,
        since_unix: since_unix.map(|s| i64::try_from(s).unwrap_or(i64::MAX)),
        timestamps: flag(query, "timestamps"),
    };
    Ok((options, number(query, "limitBytes")?))
}

/// The runtime's container for a pod's container: the current one (running, else the newest), or
/// with `previous` the one before it.
pub fn pick_container(mut found: Vec<ContainerInfo>, previous: bool) -> Option<ContainerInfo> {
    found.sort_by_key(|c| (c.running, c.started_at.clone()));
    let current = found.pop()?;
    if !previous {
        return Some(current);
    }
    found.into_iter().rev().find(|c| !c.running)
}

/// The runtime's current container for a pod's container, or kubelet's refusal.
async fn current_container(state: &AgentState, namespace: &str, pod: &str, container: &str, previous: bool) -> Result<ContainerInfo, Response> {
    let listed = state.runtime.list(labels::UID).await.map_err(|e| refuse(StatusCode::SERVICE_UNAVAILABLE, e.to_string()))?;
    let of_pod = |c: &ContainerInfo, key: &str, value: &str| c.labels.get(key).map(String::as_str) == Some(value);
    let found: Vec<ContainerInfo> = listed
        .into_iter()
        .filter(|c| of_pod(c, labels::NAMESPACE, namespace) && of_pod(c, labels::POD, pod) && of_pod(c, labels::CONTAINER, container))
        .collect();
    pick_container(found, previous).ok_or_else(|| {
        let message = if previous {
            format!("previous terminated container {container:?} in pod {pod:?} not found")
        } else {
            format!("container {container:?} in pod {pod:?} is waiting to start: no container has run yet")
        };
        refuse(StatusCode::BAD_REQUEST, message)
    })
}

/// A session's command and streams from its query (`command` repeats, one word each); an
/// attach has no command.
fn exec_request(raw_query: Option<&str>, attach: bool) -> Result<ExecRequest, String> {
    let mut request = ExecRequest::default();
    for (key, value) in url::form_urlencoded::parse(raw_query.unwrap_or("").as_bytes()) {
        let on = query_bool(&value) == Some(true);
        match key.as_ref() {
            "command" => request.command.push(value.into_owned()),
            "stdin" | "input" => request.stdin = on,
            "stdout" | "output" => request.stdout = on,
            "stderr" | "error" => request.stderr = on,
            "tty" => request.tty = on,
            _ => {}
        }
    }
    if request.command.is_empty() && !attach {
        return Err("you must specify at least one command for the container".into());
    }
    if !(request.stdin || request.stdout || request.stderr) {
        return Err("you must specify at least one of stdin, stdout, stderr".into());
    }
    // A terminal has one output stream.
    if request.tty {
        request.stderr = false;
    }
    Ok(request)
}

/// Whether a request asks to switch to SPDY/3.1 (else it is a WebSocket handshake).
fn wants_spdy(request: &Request) -> bool {
    request.headers().get(header::UPGRADE).and_then(|v| v.to_str().ok()).is_some_and(|v| v.trim().eq_ignore_ascii_case(spdy::UPGRADE))
}

/// Switches to SPDY/3.1 in `protocol` when the client offers it (`X-Stream-Protocol-Version`,
/// repeated or comma-separated, as `httpstream.Handshake` reads it) and serves the connection.
fn spdy_upgrade<F, Fut>(mut request: Request, protocol: &'static str, serve: F) -> Response
where
    F: FnOnce(TokioIo<hyper::upgrade::Upgraded>) -> Fut + Send + 'static,
    Fut: std::future::Future<Output = ()> + Send + 'static,
{
    let offered: Vec<String> = request
        .headers()
        .get_all(STREAM_PROTOCOL_HEADER)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .map(|p| p.trim().to_string())
        .filter(|p| !p.is_empty())
        .collect();
    if !offered.iter().any(|p| p == protocol) {
        return refuse(StatusCode::FORBIDDEN, format!("unable to upgrade: unable to negotiate protocol: client supports {offered:?}, server supports [{protocol}]"));
    }
    let upgraded = hyper::upgrade::on(&mut request);
    tokio::spawn(async move {
        match upgraded.await {
            Ok(io) => serve(TokioIo::new(io)).await,
            Err(e) => tracing::debug!(error = %e, "a SPDY upgrade failed"),
        }
    });
    Response::builder()
        .status(StatusCode::SWITCHING_PROTOCOLS)
        .header(header::CONNECTION, "Upgrade")
        .header(header::UPGRADE, spdy::UPGRADE)
        .header(STREAM_PROTOCOL_HEADER, protocol)
        .body(Body::empty())
        .unwrap_or_else(|e| refuse(StatusCode::INTERNAL_SERVER_ERROR, e.to_string()))
}

/// The WebSocket handshake of a request, or its refusal.
async fn websocket(request: Request) -> Result<WebSocketUpgrade, Response> {
    let (mut parts, _body) = request.into_parts();
    WebSocketUpgrade::from_request_parts(&mut parts, &()).await.map_err(IntoResponse::into_response)
}

/// `GET|POST /exec/{namespace}/{pod}/{container}?command=...&stdin&stdout&stderr&tty`.
async fn exec(State(state): State<AgentState>, Path((namespace, pod, container)): Path<(String, String, String)>, request: Request) -> Response {
    command_session(state, &namespace, &pod, &container, request, false).await
}

/// `GET|POST /attach/{namespace}/{pod}/{container}?stdin&stdout&stderr&tty`.
async fn attach(State(state): State<AgentState>, Path((namespace, pod, container)): Path<(String, String, String)>, request: Request) -> Response {
    command_session(state, &namespace, &pod, &container, request, true).await
}

async fn command_session(state: AgentState, namespace: &str, pod: &str, container: &str, request: Request, attach: bool) -> Response {
    let asked = match exec_request(request.uri().query(), attach) {
        Ok(r) => r,
        Err(message) => return refuse(StatusCode::BAD_REQUEST, message),
    };
    let chosen = match current_container(&state, namespace, pod, container, false).await {
        Ok(c) if c.running => c,
        Ok(_) => return refuse(StatusCode::BAD_REQUEST, format!("container {container:?} in pod {pod:?} is not running")),
        Err(response) => return response,
    };
    let command = if attach {
        Command::Attach { container_id: chosen.id, request: asked }
    } else {
        Command::Exec { container_id: chosen.id, request: asked }
    };
    let runtime = state.runtime.clone();
    if wants_spdy(&request) {
        return spdy_upgrade(request, remotecommand::V4, move |io| remotecommand::over_spdy(io, runtime, command));
    }
    let upgrade = match websocket(request).await {
        Ok(u) => u.protocols([remotecommand::V5, remotecommand::V4]),
        Err(response) => return response,
    };
    let v5 = upgrade.selected_protocol().is_some_and(|p| p.as_bytes() == remotecommand::V5.as_bytes());
    upgrade.on_upgrade(move |socket| remotecommand::over_websocket(socket, v5, runtime, command))
}

/// `GET|POST /portForward/{namespace}/{pod}`: SPDY, SPDY tunnelled through a WebSocket, or the
/// WebSocket channel protocol for the `ports` of the query.
async fn port_forward(State(state): State<AgentState>, Path((namespace, name)): Path<(String, String)>, request: Request) -> Response {
    let pod = portforward::PodRef { namespace, name };
    let runtime = state.runtime.clone();
    if wants_spdy(&request) {
        return spdy_upgrade(request, portforward::PROTOCOL, move |io| portforward::over_spdy(io, runtime, pod));
    }
    let mut query: HashMap<String, Vec<String>> = HashMap::new();
    for (key, value) in url::form_urlencoded::parse(request.uri().query().unwrap_or("").as_bytes()) {
        query.entry(key.into_owned()).or_default().push(value.into_owned());
    }
    let upgrade = match websocket(request).await {
        Ok(u) => u.protocols([portforward::TUNNEL_PROTOCOL, portforward::CHANNEL_PROTOCOLS[0], portforward::CHANNEL_PROTOCOLS[1]]),
        Err(response) => return response,
    };
    let tunnel = upgrade.selected_protocol().is_some_and(|p| p.as_bytes() == portforward::TUNNEL_PROTOCOL.as_bytes());
    if tunnel {
        return upgrade.on_upgrade(move |socket| portforward::over_spdy(websocket_bytes(socket), runtime, pod));
    }
    // The channel protocol, also when the client names none (as kubelet takes it).
    let ports = match portforward::ports_of(&query) {
        Ok(p) => p,
        Err(message) => return refuse(StatusCode::BAD_REQUEST, message),
    };
    upgrade.on_upgrade(move |socket| portforward::over_websocket_channels(socket, ports, runtime, pod))
}

/// The bytes carried in a WebSocket's binary messages as one stream (client-go's
/// `TunnelingConnection`): what is written goes out as binary messages.
fn websocket_bytes(socket: WebSocket) -> tokio::io::DuplexStream {
    use futures::SinkExt;
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let (ours, theirs) = tokio::io::duplex(256 * 1024);
    tokio::spawn(async move {
        let (mut sink, mut incoming) = socket.split();
        let (mut read, mut write) = tokio::io::split(theirs);
        let inbound = async move {
            while let Some(Ok(message)) = incoming.next().await {
                match message {
                    Message::Binary(data)
                        if write.write_all(&data).await.is_err() => {
                            break;
                        }
                    Message::Close(_) => break,
                    _ => {}
                }
            }
            let _ = write.shutdown().await;
        };
        let outbound = async move {
            let mut buffer = vec![0u8; 128 * 1024];
            loop {
                match read.read(&mut buffer).await {
                    Ok(0) | Err(_) => break,
                    Ok(n) => {
                        if sink.send(Message::Binary(bytes::Bytes::copy_from_slice(&buffer[..n]))).await.is_err() {
                            break;
                        }
                    }
                }
            }
            remotecommand::close_normally(&mut sink).await;
        };
        tokio::join!(inbound, outbound);
    });
    ours
}

async fn container_logs(
    State(state): State<AgentState>,
    Path((namespace, pod, container)): Path<(String, String, String)>,
    Query(query): Query<HashMap<String, String>>,
) -> Response {
    let (options, limit) = match log_options(&query) {
        Ok(o) => o,
        Err(message) => return refuse(StatusCode::BAD_REQUEST, message),
    };
    let previous = flag(&query, "previous");
    let chosen = match current_container(&state, &namespace, &pod, &container, previous).await {
        Ok(c) => c,
        Err(response) => return response,
    };
    let stream = match state.runtime.log_stream(&chosen.id, &options).await {
        Ok(s) => s,
        Err(e) => return refuse(StatusCode::SERVICE_UNAVAILABLE, e.to_string()),
    };
    let body = match limit {
        None => Body::from_stream(stream),
        Some(limit) => Body::from_stream(limited(stream, limit)),
    };
    ([(axum::http::header::CONTENT_TYPE, "text/plain")], body).into_response()
}

/// The stream cut after `limit` bytes (`limitBytes`).
fn limited(stream: super::runtime::LogStream, limit: u64) -> impl futures::Stream<Item = Result<bytes::Bytes, super::runtime::RuntimeError>> {
    let mut left = limit;
    stream
        .take_while(move |_| {
            let go = left > 0;
            async move { go }
        })
        .map(move |chunk| {
            chunk.map(|mut bytes| {
                let keep = usize::try_from(left).unwrap_or(usize::MAX).min(bytes.len());
                bytes.truncate(keep);
                left -= keep as u64;
                bytes
            })
        })
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::BTreeMap;

    fn info(id: &str, running: bool, started: &str) -> ContainerInfo {
        ContainerInfo { oom_killed: false,
            id: id.into(),
            image_id: String::new(),
            labels: BTreeMap::new(),
            running,
            exit_code: (!running).then_some(1),
            started_at: Some(started.into()),
            finished_at: None,
            ip: None,
        }
    }

    #[test]
    fn the_current_container_is_the_running_one_and_previous_the_newest_exited_before_it() {
        let found = vec![info("old", false, "2026-12-05T10:00:00Z"), info("now", true, "2026-12-05T10:00:05Z"), info("older", false, "2026-12-05T09:00:00Z")];
        assert_eq!(pick_container(found.clone(), false).unwrap().id, "now");
        assert_eq!(pick_container(found, true).unwrap().id, "old");
        let crashed = vec![info("first", false, "2026-12-05T10:00:00Z"), info("second", false, "2026-12-05T10:00:09Z")];
        assert_eq!(pick_container(crashed.clone(), false).unwrap().id, "second", "a crashed container is still the current one");
        assert_eq!(pick_container(crashed, true).unwrap().id, "first");
        assert!(pick_container(vec![info("only", true, "2026-12-05T10:00:00Z")], true).is_none());
        assert!(pick_container(Vec::new(), false).is_none());
    }

    #[test]
    fn log_options_are_read_from_kubelets_parameters_and_bad_numbers_refused() {
        let q = |pairs: &[(&str, &str)]| pairs.iter().map(|(k, v)| (k.to_string(), v.to_string())).collect::<HashMap<_, _>>();
        let (o, limit) = log_options(&q(&[("follow", "true"), ("tailLines", "5"), ("timestamps", "true"), ("limitBytes", "100")])).unwrap();
        assert_eq!((o.follow, o.tail_lines, o.timestamps, o.since_unix, limit), (true, Some(5), true, None, Some(100)));
        let (o, _) = log_options(&q(&[("sinceTime", "2026-12-05T10:00:00Z")])).unwrap();
        assert_eq!(o.since_unix, Some(Time::parse("2026-12-05T10:00:00Z").unwrap().to_system_time().duration_since(UNIX_EPOCH).unwrap().as_secs() as i64));
        let (o, _) = log_options(&q(&[("sinceSeconds", "60")])).unwrap();
        let now = SystemTime::now().duration_since(UNIX_EPOCH).unwrap().as_secs() as i64;
        assert!((now - 61..=now - 59).contains(&o.since_unix.unwrap()));
        assert!(log_options(&q(&[("tailLines", "-1")])).is_err());
        assert!(log_options(&q(&[("sinceTime", "yesterday")])).is_err());
    }

    /// An agent of `node` (its serving certificate from `ca`) on a port of its own, serving `fake`.
    async fn agent(ca: &crate::pki::ClusterCa, node: &str, fake: &crate::agent::runtime::fake::FakeRuntime) -> u16 {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let port = listener.local_addr().unwrap().port();
        let serving = ca.issue_node_serving(node).unwrap();
        let tls = ServerTls::from_pem(&serving.cert_pem, &serving.key_pem, ca.cert_pem()).unwrap();
        let runtime: Arc<dyn ContainerRuntime> = Arc::new(fake.clone());
        tokio::spawn(async move { serve(listener, &tls, runtime).await });
        port
    }

    /// An API server, and node-a's agent at 127.0.0.1 on a fake runtime; pod `web-1` (one
    /// container, `web`) is bound to node-a.
    struct Rig {
        ca: Arc<crate::pki::ClusterCa>,
        admin: crate::client::ApiClient,
        fake: crate::agent::runtime::fake::FakeRuntime,
    }

    impl Rig {
        async fn start() -> Rig {
            use crate::api::Node;
            use crate::api::resource::NODES;
            let ca = Arc::new(crate::pki::ClusterCa::generate("t").unwrap());
            let admin = crate::client::test_server::start_with_ca(ca.clone()).await;
            let fake = crate::agent::runtime::fake::FakeRuntime::with_images(&["img"]);
            let port = agent(&ca, "node-a", &fake).await;
            let rig = Rig { ca, admin, fake };
            let created: Node = rig.admin.create(&NODES, None, &Node::new("node-a")).await.unwrap();
            rig.admin.replace_status(&NODES, None, "node-a", &Node { metadata: created.metadata, ..Self::node_at(port) }).await.unwrap();
            let pod = serde_json::json!({
                "apiVersion": "v1", "kind": "Pod", "metadata": { "name": "web-1" },
                "spec": { "nodeName": "node-a", "containers": [{ "name": "web", "image": "img" }] },
            });
            rig.admin.create_value("/api/v1/namespaces/default/pods", &pod).await.unwrap();
            rig
        }

        /// node-a with its agent at 127.0.0.1:`port`.
        fn node_at(port: u16) -> crate::api::Node {
            use crate::api::{DaemonEndpoint, NodeAddress, NodeDaemonEndpoints};
            let mut node = crate::api::Node::new("node-a");
            node.status.addresses = vec![NodeAddress { address_type: "InternalIP".into(), address: "127.0.0.1".into(), ..Default::default() }];
            node.status.daemon_endpoints = Some(NodeDaemonEndpoints { kubelet_endpoint: Some(DaemonEndpoint { port: i32::from(port), ..Default::default() }), ..Default::default() });
            node
        }

        /// Starts a container of `web-1`'s `web` in the fake runtime.
        async fn run_web(&self, name: &str) -> String {
            let labels = BTreeMap::from([
                (labels::NAMESPACE.to_string(), "default".to_string()),
                (labels::POD.to_string(), "web-1".to_string()),
                (labels::UID.to_string(), "u-1".to_string()),
                (labels::CONTAINER.to_string(), "web".to_string()),
            ]);
            self.fake.run(&super::super::runtime::ContainerSpec { name: name.into(), image: "img".into(), labels, ..Default::default() }).await.unwrap()
        }

        /// Starts the sandbox of `web-1` in the fake runtime, at 127.0.0.1.
        async fn run_web_sandbox(&self) -> String {
            let labels = BTreeMap::from([
                (labels::NAMESPACE.to_string(), "default".to_string()),
                (labels::POD.to_string(), "web-1".to_string()),
                (labels::UID.to_string(), "u-1".to_string()),
            ]);
            let id = self.fake.run_sandbox(&super::super::runtime::SandboxSpec { name: "web-1".into(), labels, ..Default::default() }).await.unwrap().id;
            self.fake.set_ip(&id, "127.0.0.1".parse().unwrap());
            id
        }

        /// A TLS connection to the API server with a client certificate for `user`.
        async fn connect(&self, user: &str, groups: &[&str]) -> tokio_rustls::client::TlsStream<TcpStream> {
            use rustls_pki_types::pem::PemObject;
            let issued = self.ca.issue_client(user, groups).unwrap();
            let mut roots = rustls::RootCertStore::empty();
            roots.add(rustls_pki_types::CertificateDer::from_pem_slice(self.ca.cert_pem().as_bytes()).unwrap()).unwrap();
            let chain = vec![rustls_pki_types::CertificateDer::from_pem_slice(issued.cert_pem.as_bytes()).unwrap()];
            let key = rustls_pki_types::PrivateKeyDer::from_pem_slice(issued.key_pem.as_bytes()).unwrap();
            let config = rustls::ClientConfig::builder_with_provider(Arc::new(rustls::crypto::ring::default_provider()))
                .with_safe_default_protocol_versions()
                .unwrap()
                .with_root_certificates(roots)
                .with_client_auth_cert(chain, key)
                .unwrap();
            let tcp = TcpStream::connect(self.server()).await.unwrap();
            let name = rustls_pki_types::ServerName::try_from("127.0.0.1").unwrap();
            tokio_rustls::TlsConnector::from(Arc::new(config)).connect(name, tcp).await.unwrap()
        }

        fn server(&self) -> String {
            self.admin.server().trim_start_matches("https://").to_string()
        }

        /// A SPDY/3.1 upgrade of `path` as client-go sends it; the answer's head, and the
        /// connection when it switched.
        async fn spdy(&self, path: &str, protocols: &[&str], user: &str, groups: &[&str]) -> (String, Option<tokio_rustls::client::TlsStream<TcpStream>>) {
            use tokio::io::{AsyncReadExt, AsyncWriteExt};
            let mut tls = self.connect(user, groups).await;
            let offered: String = protocols.iter().map(|p| format!("X-Stream-Protocol-Version: {p}\r\n")).collect();
            let head = format!("POST {path} HTTP/1.1\r\nHost: api\r\nConnection: Upgrade\r\nUpgrade: SPDY/3.1\r\n{offered}Content-Length: 0\r\n\r\n");
            tls.write_all(head.as_bytes()).await.unwrap();
            let mut answer = Vec::new();
            while !answer.ends_with(b"\r\n\r\n") {
                let mut byte = [0u8; 1];
                if tls.read(&mut byte).await.unwrap() == 0 {
                    break;
                }
                answer.push(byte[0]);
            }
            let answer = String::from_utf8_lossy(&answer).into_owned();
            let switched = answer.starts_with("HTTP/1.1 101");
            (answer, switched.then_some(tls))
        }
    }

    #[tokio::test]
    async fn the_api_server_reads_a_pods_log_from_the_agent_of_its_node_and_only_from_it() {
        use crate::api::Node;
        use crate::api::resource::NODES;
        use crate::client::{ApiClient, ClientAuth};
        let rig = Rig::start().await;
        let (admin, fake, ca) = (&rig.admin, &rig.fake, &rig.ca);
        let first = rig.run_web("a").await;
        fake.set_logs(&first, "first run\n");
        fake.exit(&first, 1);
        let second = rig.run_web("b").await;
        fake.set_logs(&second, "hello\nworld\n");

        let log = "/api/v1/namespaces/default/pods/web-1/log";
        assert_eq!(admin.request_text("GET", log).await.unwrap(), "hello\nworld\n");
        assert_eq!(admin.request_text("GET", &format!("{log}?previous=true&tailLines=5")).await.unwrap(), "first run\n");
        assert!(fake.calls().iter().any(|c| c.contains("tail_lines: Some(5)")), "{:?}", fake.calls());
        let e = admin.request_text("GET", &format!("{log}?container=db")).await.unwrap_err();
        assert_eq!((e.code(), e.to_string().contains("container db is not valid for pod web-1")), (Some(400), true), "{e}");

        // A node may read pods, not their logs.
        let node_cert = ca.issue_client("system:node:node-a", &["system:nodes"]).unwrap();
        let as_node = ApiClient::new(admin.server(), ClientAuth::Certificate { ca_pem: ca.cert_pem().to_string(), cert_pem: node_cert.cert_pem, key_pem: node_cert.key_pem }).unwrap();
        assert_eq!(as_node.request_text("GET", log).await.unwrap_err().code(), Some(403));

        // Another node's agent at node-a's address is not believed.
        let impostor = agent(ca, "node-b", fake).await;
        let latest: Node = admin.get(&NODES, None, "node-a").await.unwrap();
        admin.replace_status(&NODES, None, "node-a", &Node { metadata: latest.metadata, ..Rig::node_at(impostor) }).await.unwrap();
        let e = admin.request_text("GET", log).await.unwrap_err();
        assert_eq!(e.code(), Some(503), "{e}");
    }

    /// `kubectl exec` over WebSocket (`v5.channel.k8s.io`) through the API server to the agent:
    /// the command's output on channel 1, stdin on channel 0 closed with the v5 close message, the
    /// `Status` on channel 3; a node may not exec.
    #[tokio::test]
    async fn exec_runs_through_the_api_server_in_the_websocket_channel_protocol() {
        use futures::SinkExt;
        use tokio_tungstenite::tungstenite::{Message as WsMessage, client::IntoClientRequest};
        let rig = Rig::start().await;
        let id = rig.run_web("a").await;
        let url = format!("wss://{}/api/v1/namespaces/default/pods/web-1/exec?command=echo&command=hi&stdin=true&stdout=true&stderr=true", rig.server());
        let request = || {
            let mut r = url.as_str().into_client_request().unwrap();
            r.headers_mut().insert("Sec-WebSocket-Protocol", "v5.channel.k8s.io, v4.channel.k8s.io".parse().unwrap());
            r
        };
        let (mut ws, answer) = tokio_tungstenite::client_async(request(), rig.connect("admin", &["system:masters"]).await).await.unwrap();
        assert_eq!(answer.headers()["sec-websocket-protocol"], "v5.channel.k8s.io");
        ws.send(WsMessage::Binary([&[0u8][..], b"typed"].concat().into())).await.unwrap();
        ws.send(WsMessage::Binary(vec![255u8, 0].into())).await.unwrap();
        let mut seen: Vec<(u8, String)> = Vec::new();
        while let Some(Ok(message)) = ws.next().await {
            if let WsMessage::Binary(data) = message
                && let Some((channel, rest)) = data.split_first()
            {
                seen.push((*channel, String::from_utf8_lossy(rest).into_owned()));
            }
        }
        let output: String = seen.iter().filter(|(c, _)| *c == 1).map(|(_, t)| t.as_str()).collect();
        assert_eq!(output, "echo hi\ntyped");
        let status: serde_json::Value = serde_json::from_str(&seen.iter().find(|(c, _)| *c == 3).expect("a final status").1).unwrap();
        assert_eq!(status["status"], "Success");

        rig.fake.set_exec_result(&id, 3);
        let (mut ws, _) = tokio_tungstenite::client_async(request(), rig.connect("admin", &["system:masters"]).await).await.unwrap();
        ws.send(WsMessage::Binary(vec![255u8, 0].into())).await.unwrap();
        let mut status = None;
        while let Some(Ok(WsMessage::Binary(data))) = ws.next().await {
            if data.first() == Some(&3) {
                status = Some(serde_json::from_slice::<serde_json::Value>(&data[1..]).unwrap());
            }
        }
        let status = status.expect("a final status");
        assert_eq!((status["reason"].as_str(), status["details"]["causes"][0]["message"].as_str()), (Some("NonZeroExitCode"), Some("3")), "{status}");

        let refused = tokio_tungstenite::client_async(request(), rig.connect("system:node:node-a", &["system:nodes"]).await).await.unwrap_err();
        assert!(refused.to_string().contains("403"), "{refused}");
    }

    /// Frames read from `reader` until every stream in `until` has ended (`FIN`), with the data
    /// received per stream.
    async fn read_streams<R: tokio::io::AsyncRead + Unpin>(reader: &mut R, until: &[u32]) -> HashMap<u32, Vec<u8>> {
        use spdy::Frame;
        let (mut decoder, mut data, mut ended) = (spdy::Decoder::new(), HashMap::<u32, Vec<u8>>::new(), Vec::new());
        while !until.iter().all(|id| ended.contains(id)) {
            let frame = tokio::time::timeout(Duration::from_secs(10), decoder.read(reader)).await.expect("frames within 10 s").unwrap().expect("a frame");
            if let Frame::Data { stream_id, fin, data: bytes } = frame {
                data.entry(stream_id).or_default().extend_from_slice(&bytes);
                if fin {
                    ended.push(stream_id);
                }
            }
        }
        data
    }

    /// kubectl 1.20's exec and attach: SPDY/3.1 in `v4.channel.k8s.io` through the API server,
    /// one stream per channel, the `Status` on the error stream.
    #[tokio::test]
    async fn exec_and_attach_run_through_the_api_server_over_spdy() {
        use bytes::Bytes;
        use spdy::Frame;
        use tokio::io::AsyncWriteExt;
        let rig = Rig::start().await;
        let id = rig.run_web("a").await;
        rig.fake.set_exec_result(&id, 3);
        let syn = |stream_id: u32, kind: &str| Frame::SynStream { stream_id, associated: 0, priority: 0, fin: false, unidirectional: false, headers: vec![("streamtype".into(), kind.into())] };
        let admin = ("admin", &["system:masters"][..]);
        for (path, expected) in [
            ("/api/v1/namespaces/default/pods/web-1/exec?command=echo&command=hi&stdin=true&stdout=true&stderr=true", "echo hi\ntyped"),
            ("/api/v1/namespaces/default/pods/web-1/attach?container=web&stdin=true&stdout=true&stderr=true", &*format!("attached {id}\ntyped")),
        ] {
            let (answer, tls) = rig.spdy(path, &["v4.channel.k8s.io", "v3.channel.k8s.io", "channel.k8s.io"], admin.0, admin.1).await;
            assert!(answer.to_ascii_lowercase().contains("x-stream-protocol-version: v4.channel.k8s.io"), "{answer}");
            let (mut from_server, mut to_server) = tokio::io::split(tls.expect("switched to SPDY"));
            let mut encoder = spdy::Encoder::new();
            for frame in [syn(1, "error"), syn(3, "stdin"), syn(5, "stdout"), syn(7, "stderr"), Frame::Data { stream_id: 3, fin: true, data: Bytes::from_static(b"typed") }] {
                to_server.write_all(&encoder.encode(&frame)).await.unwrap();
            }
            let data = read_streams(&mut from_server, &[1, 5, 7]).await;
            assert_eq!(String::from_utf8_lossy(&data[&5]), expected);
            let status: serde_json::Value = serde_json::from_slice(&data[&1]).unwrap();
            if path.contains("/exec") {
                assert_eq!((status["reason"].as_str(), status["details"]["causes"][0]["message"].as_str()), (Some("NonZeroExitCode"), Some("3")), "{status}");
            } else {
                assert_eq!(status["status"], "Success", "{status}");
            }
        }
        // Only v4 is spoken; a node may not exec.
        let (answer, tls) = rig.spdy("/api/v1/namespaces/default/pods/web-1/exec?command=sh&stdout=true", &["channel.k8s.io"], admin.0, admin.1).await;
        assert!(tls.is_none() && answer.starts_with("HTTP/1.1 503"), "{answer}");
        let (answer, tls) = rig.spdy("/api/v1/namespaces/default/pods/web-1/exec?command=sh&stdout=true", &["v4.channel.k8s.io"], "system:node:node-a", &["system:nodes"]).await;
        assert!(tls.is_none() && answer.starts_with("HTTP/1.1 403"), "{answer}");
    }

    /// The WebSocket channel protocol (`v4.channel.k8s.io`, the Python client's), through the API
    /// server: each channel starts with its port (two bytes, little-endian), data goes both ways on
    /// the port's even channel, a port nobody listens on is reported on its odd one, and the
    /// socket closes once the pod's side has.
    #[tokio::test]
    async fn port_forward_speaks_the_websocket_channel_protocol() {
        use futures::SinkExt;
        use tokio::io::{AsyncReadExt, AsyncWriteExt};
        use tokio_tungstenite::tungstenite::{Message as WsMessage, client::IntoClientRequest};
        let rig = Rig::start().await;
        rig.run_web_sandbox().await;
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let port = listener.local_addr().unwrap().port();
        tokio::spawn(async move {
            let (mut socket, _) = listener.accept().await.unwrap();
            let mut got = [0u8; 4];
            socket.read_exact(&mut got).await.unwrap();
            socket.write_all(&[b"echo:".as_slice(), &got].concat()).await.unwrap();
        });
        let closed = TcpListener::bind("127.0.0.1:0").await.unwrap().local_addr().unwrap().port();
        let path = format!("/api/v1/namespaces/default/pods/web-1/portforward?ports={port},{closed}");
        let mut request = format!("wss://{}{path}", rig.server()).into_client_request().unwrap();
        request.headers_mut().insert("Sec-WebSocket-Protocol", "v4.channel.k8s.io".parse().unwrap());
        let (ws, answer) = tokio_tungstenite::client_async(request, rig.connect("admin", &["system:masters"]).await).await.unwrap();
        assert_eq!(answer.headers()["sec-websocket-protocol"], "v4.channel.k8s.io");
        let (mut sink, mut incoming) = ws.split();
        sink.send(WsMessage::Binary([&[0u8][..], b"ping"].concat().into())).await.unwrap();
        let mut channels: BTreeMap<u8, Vec<Vec<u8>>> = BTreeMap::new();
        let read_all = async {
            while let Some(Ok(message)) = incoming.next().await {
                match message {
                    WsMessage::Binary(bytes) if !bytes.is_empty() => channels.entry(bytes[0]).or_default().push(bytes[1..].to_vec()),
                    WsMessage::Close(_) => break,
                    _ => {}
                }
            }
        };
        tokio::time::timeout(Duration::from_secs(10), read_all).await.expect("the socket closes once the pod's side has");
        for (channel, p) in [(0, port), (1, port), (2, closed), (3, closed)] {
            assert_eq!(channels[&channel][0], p.to_le_bytes(), "channel {channel} starts with its port");
        }
        assert_eq!(channels[&0][1..].concat(), b"echo:ping");
        assert!(channels.get(&1).is_none_or(|m| m.len() == 1), "no error for the open port: {channels:?}");
        let error = String::from_utf8(channels[&3][1..].concat()).unwrap();
        assert!(error.contains(&format!("error forwarding port {closed}")), "{error}");
    }

    /// The pod's port through the API server: `portforward.k8s.io` over SPDY (kubectl 1.20) and
    /// tunnelled through a WebSocket (`SPDY/3.1+portforward.k8s.io`, newer kubectl).
    #[tokio::test]
    async fn port_forward_reaches_the_pods_port_over_spdy_and_through_a_websocket() {
        use bytes::Bytes;
        use futures::SinkExt;
        use spdy::Frame;
        use tokio::io::{AsyncReadExt, AsyncWriteExt};
        use tokio_tungstenite::tungstenite::{Message as WsMessage, client::IntoClientRequest};
        let rig = Rig::start().await;
        rig.run_web_sandbox().await;
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let port = listener.local_addr().unwrap().port();
        tokio::spawn(async move {
            loop {
                let (mut socket, _) = listener.accept().await.unwrap();
                tokio::spawn(async move {
                    let mut got = Vec::new();
                    socket.read_to_end(&mut got).await.unwrap();
                    socket.write_all(&[b"echo:".as_slice(), &got].concat()).await.unwrap();
                });
            }
        });
        let syn = |stream_id: u32, kind: &str| Frame::SynStream {
            stream_id,
            associated: 0,
            priority: 0,
            fin: false,
            unidirectional: false,
            headers: vec![("streamtype".into(), kind.into()), ("port".into(), port.to_string()), ("requestid".into(), "0".into())],
        };
        let frames = [syn(1, "error"), Frame::Data { stream_id: 1, fin: true, data: Bytes::new() }, syn(3, "data"), Frame::Data { stream_id: 3, fin: true, data: Bytes::from_static(b"ping") }];
        let path = "/api/v1/namespaces/default/pods/web-1/portforward";

        let (answer, tls) = rig.spdy(path, &["portforward.k8s.io"], "admin", &["system:masters"]).await;
        let (mut from_server, mut to_server) = tokio::io::split(tls.unwrap_or_else(|| panic!("{answer}")));
        let mut encoder = spdy::Encoder::new();
        for frame in &frames {
            to_server.write_all(&encoder.encode(frame)).await.unwrap();
        }
        let data = read_streams(&mut from_server, &[1, 3]).await;
        assert_eq!(data[&3], b"echo:ping");
        assert!(data.get(&1).is_none_or(Vec::is_empty), "{data:?}");

        // The same bytes in WebSocket binary messages.
        let mut request = format!("wss://{}{path}", rig.server()).into_client_request().unwrap();
        request.headers_mut().insert("Sec-WebSocket-Protocol", "SPDY/3.1+portforward.k8s.io".parse().unwrap());
        let (ws, answer) = tokio_tungstenite::client_async(request, rig.connect("admin", &["system:masters"]).await).await.unwrap();
        assert_eq!(answer.headers()["sec-websocket-protocol"], "SPDY/3.1+portforward.k8s.io");
        let (mut sink, mut incoming) = ws.split();
        let (mut ours, theirs) = tokio::io::duplex(1 << 16);
        let (mut read_theirs, _keep) = tokio::io::split(theirs);
        let mut encoder = spdy::Encoder::new();
        for frame in &frames {
            sink.send(WsMessage::Binary(encoder.encode(frame).into())).await.unwrap();
        }
        let pump = tokio::spawn(async move {
            while let Some(Ok(message)) = incoming.next().await {
                if let WsMessage::Binary(bytes) = message
                    && ours.write_all(&bytes).await.is_err()
                {
                    break;
                }
            }
        });
        let data = read_streams(&mut read_theirs, &[1, 3]).await;
        assert_eq!(data[&3], b"echo:ping");
        pump.abort();

        // A node may not forward ports.
        let (answer, _) = rig.spdy(path, &["portforward.k8s.io"], "system:node:node-a", &["system:nodes"]).await;
        assert!(answer.starts_with("HTTP/1.1 403"), "{answer}");
    }

    #[tokio::test]
    async fn limit_bytes_cuts_the_stream() {
        let chunks: Vec<Result<bytes::Bytes, super::super::runtime::RuntimeError>> =
            vec![Ok(bytes::Bytes::from_static(b"hello ")), Ok(bytes::Bytes::from_static(b"world\n")), Ok(bytes::Bytes::from_static(b"more\n"))];
        let out: Vec<_> = limited(Box::pin(futures::stream::iter(chunks)), 8).collect().await;
        let text: Vec<u8> = out.into_iter().flat_map(|c| c.unwrap().to_vec()).collect();
        assert_eq!(text, b"hello wo");
    }
}

