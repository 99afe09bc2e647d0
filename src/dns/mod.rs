//! Cluster DNS: every node's agent answers its pods' DNS queries, on its pod range's gateway
//! address (port 53, UDP and TCP), which is the `nameserver` of every pod's `/etc/resolv.conf`
//! (dnsPolicy `ClusterFirst`). Node-local, as Kubernetes' NodeLocal DNSCache is: a query never
//! leaves the node for a cluster name, and no DNS pod has to be scheduled before the first pod.
//!
//! Names under the cluster domain (`cluster.local`) are answered from Services and Endpoints
//! reflected from the API, as Kubernetes' DNS specification has them:
//! - `<service>.<namespace>.svc.cluster.local` A: the cluster IP; for a headless Service
//!   (`clusterIP: None`), the addresses of its ready endpoints; `ExternalName`: a CNAME;
//! - `_<port>._<proto>.<service>.<namespace>.svc.cluster.local` SRV: the named port;
//! - `<a-b-c-d>.<namespace>.pod.cluster.local` A: the address written in the name.
//!
//! Other names under the domain are NXDOMAIN (authoritative). Every other name is forwarded, as
//! received, to the node's own resolvers (`/etc/resolv.conf`), and their answer returned. Records
//! live 5 s (the TTL kube-dns and CoreDNS give cluster records by default: 5 s and 30 s).
//!
//! Built on `hickory-proto` (the wire format of the maintained Hickory DNS project); the server
//! loop is ours because it is two sockets and a lookup.

use std::net::{Ipv4Addr, SocketAddr};
use std::sync::Arc;
use std::time::Duration;

use hickory_proto::op::{Message, MessageType, OpCode, ResponseCode};
use hickory_proto::rr::rdata::{A, CNAME, SRV};
use hickory_proto::rr::{Name, RData, Record, RecordType};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream, UdpSocket};

use crate::api::service::{Endpoints, Service};
use crate::client::ListOptions;
use crate::runtime::{Client, ObjectKey, Store};

/// The cluster's DNS domain.
pub const DOMAIN: &str = "cluster.local";
/// Seconds cluster records may be cached.
const TTL: u32 = 5;
/// How long a forwarded query may take.
const FORWARD_TIMEOUT: Duration = Duration::from_secs(3);

/// What the server answers from: the Services and Endpoints of the cluster.
#[derive(Clone)]
pub struct Records {
    pub services: Store<Service>,
    pub endpoints: Store<Endpoints>,
    /// Where other names are forwarded: the node's resolvers.
    pub upstreams: Arc<Vec<SocketAddr>>,
}

impl Records {
    /// Stores reflected from `client`, forwarding to the node's resolvers.
    pub fn reflect<C: Client>(client: &C) -> Self {
        Records {
            services: Store::reflect(client.clone(), None, ListOptions::default()),
            endpoints: Store::reflect(client.clone(), None, ListOptions::default()),
            upstreams: Arc::new(upstreams(&std::fs::read_to_string("/etc/resolv.conf").unwrap_or_default())),
        }
    }
}

/// The answer to a cluster name, or `None` for a name outside the cluster domain (forwarded).
pub fn resolve(records: &Records, name: &str, qtype: RecordType) -> Option<Result<Vec<RData>, ResponseCode>> {
    let name = name.trim_end_matches('.').to_ascii_lowercase();
    let inner = if name == DOMAIN { "" } else { name.strip_suffix(&format!(".{DOMAIN}"))? };
    let labels: Vec<&str> = if inner.is_empty() { Vec::new() } else { inner.split('.').collect() };
    let nx = Some(Err(ResponseCode::NXDomain));
    match labels.as_slice() {
        [] | ["svc"] | ["pod"] | [_, "svc"] | [_, "pod"] => Some(Ok(Vec::new())),
        [service, namespace, "svc"] => {
            let Some(svc) = records.services.get(&ObjectKey::namespaced(*namespace, *service)) else { return nx };
            if svc.spec.service_type() == "ExternalName" {
                let target = svc.spec.external_name.as_deref().and_then(|n| Name::from_ascii(format!("{}.", n.trim_end_matches('.'))).ok());
                return Some(Ok(target.map(|t| RData::CNAME(CNAME(t))).into_iter().collect()));
            }
            if qtype != RecordType::A {
                return Some(Ok(Vec::new()));
            }
            let addresses: Vec<Ipv4Addr> = match svc.spec.cluster_address() {
                Some(ip) => vec![ip],
                None if svc.spec.cluster_ip.as_deref() == Some("None") => ready_addresses(records, namespace, service),
                None => Vec::new(),
            };
            Some(Ok(addresses.into_iter().map(|ip| RData::A(A(ip))).collect()))
        }
        [port, protocol, service, namespace, "svc"] if port.starts_with('_') && protocol.starts_with('_') => {
            let Some(svc) = records.services.get(&ObjectKey::namespaced(*namespace, *service)) else { return nx };
            let wanted = svc.spec.ports.iter().find(|p| p.name.as_deref() == Some(&port[1..]) && p.protocol().eq_ignore_ascii_case(&protocol[1..]));
            let Some(sp) = wanted else { return nx };
            if qtype != RecordType::SRV {
                return Some(Ok(Vec::new()));
            }
            let target = Name::from_ascii(format!("{service}.{namespace}.svc.{DOMAIN}.")).ok()?;
            Some(Ok(vec![RData::SRV(SRV::new(0, 100, u16::try_from(sp.port).unwrap_or(0), target))]))
        }
        [address, _namespace, "pod"] => match address.replace('-', ".").parse::<Ipv4Addr>() {
            Ok(ip) if qtype == RecordType::A => Some(Ok(vec![RData::A(A(ip))])),
            Ok(_) => Some(Ok(Vec::new())),
            Err(_) => nx,
        },
        _ => nx,
    }
}

/// The ready addresses of a Service's Endpoints.
fn ready_addresses(records: &Records, namespace: &str, service: &str) -> Vec<Ipv4Addr> {
    let Some(ep) = records.endpoints.get(&ObjectKey::namespaced(namespace, service)) else { return Vec::new() };
    let mut out: Vec<Ipv4Addr> = ep.subsets.iter().flat_map(|s| &s.addresses).filter_map(|a| a.ip.parse().ok()).collect();
    out.sort();
    out.dedup();
    out
}

/// The answer to one query message (wire format); `None` when it is to be forwarded.
pub fn answer(records: &Records, query: &Message) -> Option<Message> {
    let mut reply = Message::new();
    reply.set_id(query.id()).set_message_type(MessageType::Response).set_op_code(query.op_code()).set_recursion_desired(query.recursion_desired()).set_recursion_available(true);
    let Some(q) = query.queries().first().filter(|_| query.op_code() == OpCode::Query && query.queries().len() == 1) else {
        reply.set_response_code(ResponseCode::FormErr);
        return Some(reply);
    };
    let resolved = resolve(records, &q.name().to_ascii(), q.query_type())?;
    reply.add_query(q.clone()).set_authoritative(true);
    match resolved {
        Ok(data) => {
            for rdata in data {
                reply.add_answer(Record::from_rdata(q.name().clone(), TTL, rdata));
            }
        }
        Err(code) => {
            reply.set_response_code(code);
        }
    }
    Some(reply)
}

/// The resolvers a `resolv.conf` names.
pub fn upstreams(resolv_conf: &str) -> Vec<SocketAddr> {
    resolv_conf
        .lines()
        .filter_map(|l| l.trim().strip_prefix("nameserver"))
        .filter_map(|a| a.trim().parse::<std::net::IpAddr>().ok())
        .map(|ip| SocketAddr::new(ip, 53))
        .collect()
}

/// Sends `query` (wire format) to the resolvers in turn; the first answer.
async fn forward(upstreams: &[SocketAddr], query: &[u8]) -> Option<Vec<u8>> {
    for &upstream in upstreams {
        let bind: SocketAddr = if upstream.is_ipv4() { ([0, 0, 0, 0], 0).into() } else { (std::net::Ipv6Addr::UNSPECIFIED, 0).into() };
        let Ok(socket) = UdpSocket::bind(bind).await else { continue };
        if socket.send_to(query, upstream).await.is_err() {
            continue;
        }
        let mut buf = vec![0u8; 4096];
        if let Ok(Ok((n, _))) = tokio::time::timeout(FORWARD_TIMEOUT, socket.recv_from(&mut buf)).await {
            buf.truncate(n);
            return Some(buf);
        }
    }
    None
}

/// The reply bytes to one query's bytes (answered, forwarded, or SERVFAIL when forwarding failed).
async fn handle(records: &Records, bytes: &[u8]) -> Option<Vec<u8>> {
    let query = Message::from_vec(bytes).ok()?;
    if let Some(reply) = answer(records, &query) {
        return reply.to_vec().ok();
    }
    if let Some(reply) = forward(&records.upstreams, bytes).await {
        return Some(reply);
    }
    let mut fail = Message::error_msg(query.id(), query.op_code(), ResponseCode::ServFail);
    fail.add_queries(query.queries().to_vec());
    fail.to_vec().ok()
}

/// A socket bound to `address` even before the address is on an interface (the pod bridge is
/// made with the node's first pod), as `IP_FREEBIND` allows.
fn freebind(address: SocketAddr, kind: socket2::Type) -> std::io::Result<socket2::Socket> {
    let protocol = if kind == socket2::Type::DGRAM { socket2::Protocol::UDP } else { socket2::Protocol::TCP };
    let socket = socket2::Socket::new(socket2::Domain::IPV4, kind, Some(protocol))?;
    socket.set_freebind_v4(true)?;
    socket.set_reuse_address(true)?;
    socket.set_nonblocking(true)?;
    socket.bind(&address.into())?;
    Ok(socket)
}

/// Serves DNS on `address` (UDP and TCP) until dropped.
pub async fn serve(address: SocketAddr, records: Records) -> std::io::Result<()> {
    let udp = UdpSocket::from_std(freebind(address, socket2::Type::DGRAM)?.into())?;
    let tcp = freebind(address, socket2::Type::STREAM)?;
    tcp.listen(128)?;
    let tcp = TcpListener::from_std(tcp.into())?;
    tracing::info!(%address, "serving cluster DNS");
    let udp = Arc::new(udp);
    let tcp_records = records.clone();
    // the TCP side ends with the UDP side (dropped with it)
    let _tcp_task = crate::client::leader::AbortOnDrop(tokio::spawn(async move {
        loop {
            let Ok((stream, _)) = tcp.accept().await else {
                tokio::time::sleep(Duration::from_millis(50)).await;
                continue;
            };
            tokio::spawn(serve_tcp(stream, tcp_records.clone()));
        }
    }));
    let mut buf = vec![0u8; 4096];
    loop {
        let (n, peer) = match udp.recv_from(&mut buf).await {
            Ok(r) => r,
            Err(_) => {
                tokio::time::sleep(Duration::from_millis(50)).await;
                continue;
            }
        };
        let (bytes, udp, records) = (buf[..n].to_vec(), udp.clone(), records.clone());
        tokio::spawn(async move {
            if let Some(reply) = handle(&records, &bytes).await {
                let _ = udp.send_to(&reply, peer).await;
            }
        });
    }
}

/// Queries over one TCP connection (two-byte length prefixes), until it closes or idles 10 s.
async fn serve_tcp(mut stream: TcpStream, records: Records) {
    loop {
        let mut len = [0u8; 2];
        match tokio::time::timeout(Duration::from_secs(10), stream.read_exact(&mut len)).await {
            Ok(Ok(_)) => {}
            _ => return,
        }
        let mut bytes = vec![0u8; usize::from(u16::from_be_bytes(len))];
        if stream.read_exact(&mut bytes).await.is_err() {
            return;
        }
        let Some(reply) = handle(&records, &bytes).await else { return };
        let Ok(n) = u16::try_from(reply.len()) else { return };
        if stream.write_all(&n.to_be_bytes()).await.is_err() || stream.write_all(&reply).await.is_err() {
            return;
        }
    }
}

#[cfg(test)]
mod tests;
