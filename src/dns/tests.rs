use std::net::{Ipv4Addr, SocketAddr};

use hickory_proto::op::{Message, MessageType, OpCode, Query, ResponseCode};
use hickory_proto::rr::{Name, RData, RecordType};
use serde_json::json;

use super::*;

fn records() -> Records {
    let services: Vec<Service> = vec![
        serde_json::from_value(json!({"metadata": {"name": "store", "namespace": "shop"}, "spec": {"clusterIP": "10.96.4.5", "ports": [{"name": "http", "port": 80, "protocol": "TCP"}]}})).unwrap(),
        serde_json::from_value(json!({"metadata": {"name": "db", "namespace": "shop"}, "spec": {"clusterIP": "None", "ports": [{"port": 5432}]}})).unwrap(),
        serde_json::from_value(json!({"metadata": {"name": "ext", "namespace": "shop"}, "spec": {"type": "ExternalName", "externalName": "db.example.com"}})).unwrap(),
    ];
    let endpoints: Vec<Endpoints> = vec![serde_json::from_value(json!({"metadata": {"name": "db", "namespace": "shop"}, "subsets": [{
        "addresses": [{"ip": "100.64.2.9"}, {"ip": "100.64.1.4"}], "notReadyAddresses": [{"ip": "100.64.3.3"}], "ports": [{"port": 5432}]}]})).unwrap()];
    let r = Records { services: Store::new(), endpoints: Store::new(), upstreams: Arc::new(Vec::new()) };
    r.services.replace_all(services, 1);
    r.endpoints.replace_all(endpoints, 1);
    r
}

fn a(records: &Records, name: &str) -> Result<Vec<Ipv4Addr>, ResponseCode> {
    resolve(records, name, RecordType::A).expect("a cluster name").map(|data| data.into_iter().filter_map(|d| if let RData::A(a) = d { Some(a.0) } else { None }).collect())
}

#[test]
fn services_resolve_to_their_cluster_ip_and_headless_ones_to_their_ready_pods() {
    let r = records();
    assert_eq!(a(&r, "store.shop.svc.cluster.local."), Ok(vec!["10.96.4.5".parse().unwrap()]));
    assert_eq!(a(&r, "STORE.shop.svc.cluster.local"), Ok(vec!["10.96.4.5".parse().unwrap()]), "names are case-insensitive");
    assert_eq!(a(&r, "db.shop.svc.cluster.local."), Ok(vec!["100.64.1.4".parse().unwrap(), "100.64.2.9".parse().unwrap()]));
    assert_eq!(a(&r, "nothing.shop.svc.cluster.local."), Err(ResponseCode::NXDomain));
    assert_eq!(a(&r, "store.other.svc.cluster.local."), Err(ResponseCode::NXDomain));
    assert_eq!(a(&r, "100-64-1-4.shop.pod.cluster.local."), Ok(vec!["100.64.1.4".parse().unwrap()]));
    assert_eq!(resolve(&r, "store.shop.svc.cluster.local.", RecordType::AAAA), Some(Ok(vec![])), "no IPv6: an empty answer, not NXDOMAIN");
    assert!(resolve(&r, "example.com.", RecordType::A).is_none(), "other names are forwarded");
    let srv = resolve(&r, "_http._tcp.store.shop.svc.cluster.local.", RecordType::SRV).unwrap().unwrap();
    assert!(matches!(&srv[..], [RData::SRV(s)] if s.port() == 80 && s.target().to_ascii() == "store.shop.svc.cluster.local."), "{srv:?}");
    let cname = resolve(&r, "ext.shop.svc.cluster.local.", RecordType::A).unwrap().unwrap();
    assert!(matches!(&cname[..], [RData::CNAME(c)] if c.0.to_ascii() == "db.example.com."), "{cname:?}");
}

fn query(name: &str, qtype: RecordType) -> Vec<u8> {
    let mut m = Message::new();
    m.set_id(4242).set_message_type(MessageType::Query).set_op_code(OpCode::Query).set_recursion_desired(true);
    m.add_query(Query::query(Name::from_ascii(name).unwrap(), qtype));
    m.to_vec().unwrap()
}

/// The server over real sockets, UDP and TCP, on a loopback address of its own.
#[tokio::test]
async fn the_server_answers_over_udp_and_tcp() {
    let address: SocketAddr = (Ipv4Addr::new(127, 0, 53, 1 + rand::random::<u8>() % 200), 10053 + u16::from(rand::random::<u8>())).into();
    // an upstream resolver that answers every name with 192.0.2.7
    let upstream = UdpSocket::bind("127.0.0.1:0").await.unwrap();
    let upstream_address = upstream.local_addr().unwrap();
    let upstream_task = tokio::spawn(async move {
        let mut buf = [0u8; 512];
        while let Ok((n, peer)) = upstream.recv_from(&mut buf).await {
            let q = Message::from_vec(&buf[..n]).unwrap();
            let mut reply = Message::new();
            reply.set_id(q.id()).set_message_type(MessageType::Response);
            reply.add_query(q.queries()[0].clone());
            reply.add_answer(hickory_proto::rr::Record::from_rdata(q.queries()[0].name().clone(), 60, RData::A(hickory_proto::rr::rdata::A(Ipv4Addr::new(192, 0, 2, 7)))));
            upstream.send_to(&reply.to_vec().unwrap(), peer).await.unwrap();
        }
    });
    let mut with_upstream = records();
    with_upstream.upstreams = Arc::new(upstreams(&format!("search x\nnameserver {}\n", upstream_address.ip())).into_iter().map(|_| upstream_address).collect());
    let server = tokio::spawn(serve(address, with_upstream));
    tokio::time::sleep(Duration::from_millis(100)).await;
    let udp = UdpSocket::bind("127.0.0.1:0").await.unwrap();
    udp.send_to(&query("store.shop.svc.cluster.local.", RecordType::A), address).await.unwrap();
    let mut buf = [0u8; 512];
    let (n, _) = tokio::time::timeout(Duration::from_secs(2), udp.recv_from(&mut buf)).await.expect("an answer").unwrap();
    let reply = Message::from_vec(&buf[..n]).unwrap();
    assert_eq!(reply.id(), 4242);
    assert!(reply.authoritative());
    assert!(matches!(reply.answers()[0].data(), RData::A(a) if a.0 == Ipv4Addr::new(10, 96, 4, 5)));
    assert_eq!(reply.answers()[0].ttl(), 5);

    let mut tcp = TcpStream::connect(address).await.unwrap();
    let q = query("missing.shop.svc.cluster.local.", RecordType::A);
    tcp.write_all(&(q.len() as u16).to_be_bytes()).await.unwrap();
    tcp.write_all(&q).await.unwrap();
    let mut len = [0u8; 2];
    tcp.read_exact(&mut len).await.unwrap();
    let mut body = vec![0u8; usize::from(u16::from_be_bytes(len))];
    tcp.read_exact(&mut body).await.unwrap();
    assert_eq!(Message::from_vec(&body).unwrap().response_code(), ResponseCode::NXDomain);

    // a name outside the cluster goes to the node's resolver, and its answer comes back
    udp.send_to(&query("example.org.", RecordType::A), address).await.unwrap();
    let (n, _) = tokio::time::timeout(Duration::from_secs(2), udp.recv_from(&mut buf)).await.expect("a forwarded answer").unwrap();
    let reply = Message::from_vec(&buf[..n]).unwrap();
    assert_eq!(reply.id(), 4242);
    assert!(matches!(reply.answers()[0].data(), RData::A(a) if a.0 == Ipv4Addr::new(192, 0, 2, 7)));
    server.abort();
    upstream_task.abort();
}
