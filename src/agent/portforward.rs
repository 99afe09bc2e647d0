//! `port-forward` as kubelet serves it: `portforward.k8s.io` over SPDY/3.1 (kubectl 1.20), also
//! tunnelled through a WebSocket (`SPDY/3.1+portforward.k8s.io`, newer kubectl: the bytes of the
//! SPDY connection ride in binary messages), and in the WebSocket channel protocol
//! (`v4.channel.k8s.io`, what the official Python client speaks; see [`over_websocket_channels`]).
//!
//! For every local connection the client opens two streams with the same `requestID` header (or,
//! from clients too old to send one, consecutive stream ids): `streamType: error` and
//! `streamType: data`, both with the `port` header. Once both are there the agent connects to
//! that port of the pod (its containers' pod address, the one that declares
//! the port first) and copies bytes both ways: the client's `FIN` on the data stream ends the
//! write side towards the pod, the pod's end of the connection ends the data stream, and then the
//! error stream (empty when all went well, else the reason, as kubelet writes it).

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

use super::runtime::{ContainerInfo, ContainerRuntime, labels};
use super::spdy;

/// The SPDY sub-protocol, and the WebSocket protocol that tunnels it.
pub const PROTOCOL: &str = "portforward.k8s.io";
pub const TUNNEL_PROTOCOL: &str = "SPDY/3.1+portforward.k8s.io";
const CONNECT_TIMEOUT: Duration = Duration::from_secs(5);

/// The pod a connection forwards to.
#[derive(Debug, Clone)]
pub struct PodRef {
    pub namespace: String,
    pub name: String,
}

/// Which request a stream belongs to: its `requestID`, else (old clients) derived from its id as
/// kubelet does (the error stream's id; a data stream follows its error stream by 2).
fn request_key(stream: &spdy::Stream) -> String {
    match stream.header("requestID") {
        Some(id) if !id.is_empty() => id.to_string(),
        _ if stream.header("streamType") == Some("data") => format!("#{}", stream.id.saturating_sub(2)),
        _ => format!("#{}", stream.id),
    }
}

/// The WebSocket channel protocols of port-forward (binary messages whose first byte is the
/// channel), as kubelet names them.
pub const CHANNEL_PROTOCOLS: [&str; 2] = ["v4.channel.k8s.io", "channel.k8s.io"];

/// The `ports` of a WebSocket port-forward (`?ports=80&ports=443` or `?ports=80,443`).
pub fn ports_of(query: &HashMap<String, Vec<String>>) -> Result<Vec<u16>, String> {
    let mut ports = Vec::new();
    for value in query.get("ports").into_iter().flatten() {
        for p in value.split(',').map(str::trim).filter(|p| !p.is_empty()) {
            match p.parse::<u16>() {
                Ok(n) if n > 0 => ports.push(n),
                _ => return Err(format!("invalid port {p:?}")),
            }
        }
    }
    if ports.is_empty() {
        return Err("port forwarding over a WebSocket needs at least one port (`ports`)".into());
    }
    Ok(ports)
}

/// One connection in the channel protocol, as kubelet's `handleWebSocketStreams`: for the i-th
/// port, channel 2i carries data and 2i+1 errors, and each starts with the port, two bytes
/// little-endian; one connection to the pod per port, made at once; the WebSocket closes when
/// every one of them has ended (or the client goes).
pub async fn over_websocket_channels(socket: axum::extract::ws::WebSocket, ports: Vec<u16>, runtime: Arc<dyn ContainerRuntime>, pod: PodRef) {
    use axum::extract::ws::Message;
    use futures::{SinkExt, StreamExt};
    let framed = |channel: usize, data: &[u8]| super::remotecommand::channel_message(channel as u8, data);
    let (mut sink, mut incoming) = socket.split();
    let (out, mut outgoing) = tokio::sync::mpsc::channel::<Message>(16);
    let writer = tokio::spawn(async move {
        while let Some(message) = outgoing.recv().await {
            if sink.send(message).await.is_err() {
                return;
            }
        }
        super::remotecommand::close_normally(&mut sink).await;
    });
    for (i, port) in ports.iter().enumerate() {
        for channel in [2 * i, 2 * i + 1] {
            let _ = out.send(framed(channel, &port.to_le_bytes())).await;
        }
    }
    let mut to_pods: Vec<Option<tokio::net::tcp::OwnedWriteHalf>> = Vec::new();
    let mut copies = tokio::task::JoinSet::new();
    for (i, port) in ports.iter().copied().enumerate() {
        match connect(&runtime, &pod, port).await {
            Ok(tcp) => {
                let (mut from_pod, to_pod) = tcp.into_split();
                to_pods.push(Some(to_pod));
                let out = out.clone();
                copies.spawn(async move {
                    let mut buffer = vec![0u8; 128 * 1024];
                    loop {
                        match from_pod.read(&mut buffer).await {
                            Ok(0) | Err(_) => return,
                            Ok(n) => {
                                if out.send(framed(2 * i, &buffer[..n])).await.is_err() {
                                    return;
                                }
                            }
                        }
                    }
                });
            }
            Err(reason) => {
                to_pods.push(None);
                let message = format!("error forwarding port {port} to pod {}/{}: {reason}", pod.namespace, pod.name);
                tracing::debug!("{message}");
                let _ = out.send(framed(2 * i + 1, message.as_bytes())).await;
            }
        }
    }
    drop(out);
    let from_client = async {
        while let Some(Ok(message)) = incoming.next().await {
            let data = match message {
                Message::Binary(data) => data,
                Message::Close(_) => break,
                _ => continue,
            };
            let Some((&channel, payload)) = data.split_first() else { continue };
            let channel = usize::from(channel);
            // Data for a port goes on its data channel; anything else is ignored, as kubelet does.
            if channel % 2 != 0 || payload.is_empty() {
                continue;
            }
            if let Some(Some(to_pod)) = to_pods.get_mut(channel / 2)
                && to_pod.write_all(payload).await.is_err()
            {
                to_pods[channel / 2] = None;
            }
        }
    };
    let pods_done = async { while copies.join_next().await.is_some() {} };
    tokio::select! {
        () = from_client => copies.abort_all(),
        () = pods_done => {}
    }
    let _ = writer.await;
}

/// Serves one port-forward connection until the client ends it.
pub async fn over_spdy<IO>(io: IO, runtime: Arc<dyn ContainerRuntime>, pod: PodRef)
where
    IO: tokio::io::AsyncRead + tokio::io::AsyncWrite + Send + 'static,
{
    let (connection, mut new_streams) = spdy::serve(io);
    let mut waiting: HashMap<String, (Option<spdy::Stream>, Option<spdy::Stream>)> = HashMap::new();
    while let Some(stream) = new_streams.recv().await {
        let port = stream.header("port").and_then(|p| p.parse::<u16>().ok()).filter(|p| *p > 0);
        let Some(port) = port else {
            let _ = stream.writer.reset(spdy::PROTOCOL_ERROR).await;
            continue;
        };
        let key = request_key(&stream);
        let pair = waiting.entry(key.clone()).or_default();
        match stream.header("streamType") {
            Some("error") => pair.0 = Some(stream),
            Some("data") => pair.1 = Some(stream),
            _ => {
                let _ = stream.writer.reset(spdy::PROTOCOL_ERROR).await;
                continue;
            }
        }
        if let (Some(_), Some(_)) = pair {
            let Some((Some(error), Some(data))) = waiting.remove(&key) else { continue };
            tokio::spawn(forward(runtime.clone(), pod.clone(), port, error, data));
        }
    }
    connection.close().await;
}

/// Where `port` of the pod is dialled: its address (its running sandbox's, which every container
/// of the pod shares), as kubelet dials inside the pod's network namespace.
fn candidates(containers: Vec<ContainerInfo>, pod: &PodRef, port: u16) -> Vec<SocketAddr> {
    let of_pod = |c: &ContainerInfo, key: &str, value: &str| c.labels.get(key).map(String::as_str) == Some(value);
    let mut found: Vec<SocketAddr> = containers
        .into_iter()
        .filter(|c| c.running && c.is_sandbox() && of_pod(c, labels::NAMESPACE, &pod.namespace) && of_pod(c, labels::POD, &pod.name))
        .filter_map(|c| c.ip)
        .map(|ip| SocketAddr::new(ip, port))
        .collect();
    found.dedup();
    found
}

/// A connection to `port` of the pod, or why there is none.
async fn connect(runtime: &Arc<dyn ContainerRuntime>, pod: &PodRef, port: u16) -> Result<TcpStream, String> {
    let listed = runtime.list(labels::UID).await.map_err(|e| e.to_string())?;
    let addresses = candidates(listed, pod, port);
    if addresses.is_empty() {
        return Err("the pod has no running container".into());
    }
    let mut last = String::new();
    for address in addresses {
        match tokio::time::timeout(CONNECT_TIMEOUT, TcpStream::connect(address)).await {
            Ok(Ok(tcp)) => {
                let _ = tcp.set_nodelay(true);
                return Ok(tcp);
            }
            Ok(Err(e)) => last = format!("dial tcp {address}: {e}"),
            Err(_) => last = format!("dial tcp {address}: timed out"),
        }
    }
    Err(last)
}

/// Copies between one pair of streams and a connection to the pod.
async fn forward(runtime: Arc<dyn ContainerRuntime>, pod: PodRef, port: u16, error: spdy::Stream, data: spdy::Stream) {
    let tcp = match connect(&runtime, &pod, port).await {
        Ok(tcp) => tcp,
        Err(reason) => {
            let message = format!("error forwarding port {port} to pod {}/{}: {reason}", pod.namespace, pod.name);
            tracing::debug!("{message}");
            let _ = error.writer.write(message.as_bytes()).await;
            let _ = error.writer.finish().await;
            let _ = data.writer.finish().await;
            return;
        }
    };
    let (mut from_pod, mut to_pod) = tcp.into_split();
    let spdy::Stream { data: mut from_client, writer: to_client, .. } = data;
    let upstream = tokio::spawn(async move {
        while let Some(chunk) = from_client.recv().await {
            if to_pod.write_all(&chunk).await.is_err() {
                return;
            }
        }
        // The client's FIN: no more bytes for the pod.
        let _ = to_pod.shutdown().await;
    });
    // Large reads: each becomes one SPDY frame and one WebSocket message on the way out.
    let mut buffer = vec![0u8; 128 * 1024];
    loop {
        match from_pod.read(&mut buffer).await {
            Ok(0) | Err(_) => break,
            Ok(n) => {
                if to_client.write(&buffer[..n]).await.is_err() {
                    upstream.abort();
                    return;
                }
            }
        }
    }
    let _ = to_client.finish().await;
    let _ = error.writer.finish().await;
    // The upstream copy ends with the client's FIN or the connection.
    drop(upstream);
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::BTreeMap;

    fn container(pod: &str, ip: &str, running: bool, sandbox: bool) -> ContainerInfo {
        let mut labels = BTreeMap::from([(labels::NAMESPACE.to_string(), "default".to_string()), (labels::POD.to_string(), pod.to_string())]);
        if sandbox {
            labels.insert(labels::SANDBOX.into(), "true".into());
        }
        ContainerInfo { oom_killed: false, id: format!("{pod}-{ip}-{sandbox}"), image_id: String::new(), labels, running, exit_code: None, started_at: None, finished_at: None, ip: Some(ip.parse().unwrap()) }
    }

    #[test]
    fn the_pods_address_is_its_running_sandboxs() {
        let pod = PodRef { namespace: "default".into(), name: "web".into() };
        let found = candidates(
            vec![
                container("web", "100.64.0.3", true, false),
                container("web", "100.64.0.3", true, true),
                container("web", "100.64.0.4", false, true),
                container("db", "100.64.0.5", true, true),
            ],
            &pod,
            80,
        );
        assert_eq!(found, vec!["100.64.0.3:80".parse().unwrap()]);
    }

    /// A SPDY client (the codec's other side) forwards to a local listener through the fake
    /// runtime's container address, and a refused port comes back on the error stream.
    #[tokio::test]
    async fn a_pair_of_streams_is_joined_to_the_pods_port() {
        use bytes::Bytes;
        use spdy::{Decoder, Encoder, Frame};
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let port = listener.local_addr().unwrap().port();
        tokio::spawn(async move {
            let (mut socket, _) = listener.accept().await.unwrap();
            let mut got = Vec::new();
            socket.read_to_end(&mut got).await.unwrap();
            socket.write_all(&[b"echo:".as_slice(), &got].concat()).await.unwrap();
        });
        let fake = super::super::runtime::fake::FakeRuntime::with_images(&["i"]);
        let spec = super::super::runtime::SandboxSpec {
            name: "web".into(),
            labels: BTreeMap::from([(labels::NAMESPACE.into(), "default".into()), (labels::POD.into(), "web".into()), (labels::UID.into(), "u".into())]),
            ..Default::default()
        };
        let id = fake.run_sandbox(&spec).await.unwrap().id;
        fake.set_ip(&id, "127.0.0.1".parse().unwrap());
        let runtime: Arc<dyn ContainerRuntime> = Arc::new(fake);
        let (client, server) = tokio::io::duplex(1 << 16);
        tokio::spawn(over_spdy(server, runtime, PodRef { namespace: "default".into(), name: "web".into() }));
        let (mut from_server, mut to_server) = tokio::io::split(client);
        let mut encoder = Encoder::new();
        let syn = |id: u32, kind: &str, port: u16, request: &str| Frame::SynStream {
            stream_id: id,
            associated: 0,
            priority: 0,
            fin: false,
            unidirectional: false,
            headers: vec![("streamtype".into(), kind.into()), ("port".into(), port.to_string()), ("requestid".into(), request.into())],
        };
        let closed_port = {
            let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
            l.local_addr().unwrap().port()
        };
        for frame in [
            syn(1, "error", port, "0"),
            Frame::Data { stream_id: 1, fin: true, data: Bytes::new() },
            syn(3, "data", port, "0"),
            Frame::Data { stream_id: 3, fin: true, data: Bytes::from_static(b"ping") },
            syn(5, "error", closed_port, "1"),
            syn(7, "data", closed_port, "1"),
        ] {
            to_server.write_all(&encoder.encode(&frame)).await.unwrap();
        }
        let mut decoder = Decoder::new();
        let (mut data, mut errors, mut finished) = (HashMap::<u32, Vec<u8>>::new(), HashMap::<u32, Vec<u8>>::new(), 0);
        while finished < 4 {
            if let Frame::Data { stream_id, fin, data: bytes } = tokio::time::timeout(Duration::from_secs(10), decoder.read(&mut from_server)).await.unwrap().unwrap().unwrap() {
                let into = if stream_id % 4 == 1 { &mut errors } else { &mut data };
                into.entry(stream_id).or_default().extend_from_slice(&bytes);
                finished += usize::from(fin);
            }
        }
        assert_eq!(data[&3], b"echo:ping");
        assert!(errors.get(&1).is_none_or(Vec::is_empty), "no error for the open port");
        let refused = String::from_utf8_lossy(&errors[&5]);
        assert!(refused.starts_with(&format!("error forwarding port {closed_port} to pod default/web: dial tcp 127.0.0.1:{closed_port}: ")), "{refused}");
        let _ = to_server.write_all(&encoder.encode(&Frame::GoAway { last_good: 7, status: 0 })).await;
    }
}
