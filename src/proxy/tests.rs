use tokio::io::{AsyncReadExt, AsyncWriteExt};

use super::*;
use crate::api::ObjectMeta;
use crate::api::quantity::IntOrString;
use crate::api::service::{EndpointPort, EndpointSubset, ServicePort, ServiceSpec};

/// A backend that answers every connection with its `name`.
async fn backend(name: &'static str) -> SocketAddr {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move {
        while let Ok((mut s, _)) = listener.accept().await {
            let _ = s.write_all(name.as_bytes()).await;
        }
    });
    addr
}

async fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0").await.unwrap().local_addr().unwrap().port()
}

async fn ask(port: u16) -> String {
    let mut s = TcpStream::connect(("127.0.0.1", port)).await.unwrap();
    let mut out = String::new();
    s.read_to_string(&mut out).await.unwrap();
    out
}

/// A store holding `items`, as if listed.
fn store<T: Object>(items: Vec<T>) -> Store<T> {
    let store = Store::new();
    store.replace_all(items, 1);
    store
}

fn web_service(node_port: u16) -> Service {
    let port = ServicePort { port: 80, target_port: Some(IntOrString::Int(8080)), node_port: Some(i64::from(node_port)), ..Default::default() };
    Service {
        metadata: ObjectMeta::namespaced("default", "web"),
        spec: ServiceSpec { service_type: Some("NodePort".into()), ports: vec![port], ..Default::default() },
        ..Default::default()
    }
}

fn service(node_port: u16) -> Store<Service> {
    store(vec![web_service(node_port)])
}

fn address(ip: IpAddr) -> EndpointAddress {
    EndpointAddress { ip: ip.to_string(), ..Default::default() }
}

fn endpoints(ready: &[SocketAddr], not_ready: &[SocketAddr]) -> Store<Endpoints> {
    let port = |a: &SocketAddr| vec![EndpointPort { port: i64::from(a.port()), ..Default::default() }];
    let mut subsets: Vec<EndpointSubset> = ready.iter().map(|a| EndpointSubset { addresses: vec![address(a.ip())], ports: port(a), ..Default::default() }).collect();
    subsets.extend(not_ready.iter().map(|a| EndpointSubset { not_ready_addresses: vec![address(a.ip())], ports: port(a), ..Default::default() }));
    store(vec![Endpoints { metadata: ObjectMeta::namespaced("default", "web"), subsets, ..Default::default() }])
}

#[tokio::test]
async fn connections_go_round_robin_to_ready_endpoints_only() {
    let (a, b, sick) = (backend("a").await, backend("b").await, backend("sick").await);
    let port = free_port().await;
    let t = table(&service(port), &endpoints(&[a, b], &[sick]));
    let mut proxy = ServiceProxy::new("127.0.0.1".parse().unwrap());
    proxy.apply(&t).await.unwrap();
    let mut answers = Vec::new();
    for _ in 0..4 {
        answers.push(ask(port).await);
    }
    answers.sort();
    assert_eq!(answers, vec!["a", "a", "b", "b"]);
}

#[tokio::test]
async fn an_endpoint_change_is_applied_to_the_open_listener_and_a_deleted_service_closes_it() {
    let (a, b) = (backend("a").await, backend("b").await);
    let port = free_port().await;
    let services = service(port);
    let mut proxy = ServiceProxy::new("127.0.0.1".parse().unwrap());
    proxy.apply(&table(&services, &endpoints(&[a], &[]))).await.unwrap();
    assert_eq!(ask(port).await, "a");
    proxy.apply(&table(&services, &endpoints(&[b], &[]))).await.unwrap();
    assert_eq!(ask(port).await, "b");
    assert_eq!(ask(port).await, "b");
    proxy.apply(&Table::new()).await.unwrap();
    assert!(proxy.ports().is_empty());
    tokio::time::sleep(Duration::from_millis(50)).await;
    assert!(TcpStream::connect(("127.0.0.1", port)).await.is_err(), "the listener of a deleted service is closed");
}

#[tokio::test]
async fn a_dead_endpoint_is_skipped_for_the_next() {
    let a = backend("a").await;
    let dead = SocketAddr::new("127.0.0.1".parse().unwrap(), free_port().await);
    let port = free_port().await;
    let mut proxy = ServiceProxy::new("127.0.0.1".parse().unwrap());
    proxy.apply(&table(&service(port), &endpoints(&[dead, a], &[]))).await.unwrap();
    assert_eq!(ask(port).await, "a");
    assert_eq!(ask(port).await, "a");
}

#[test]
fn cluster_ip_services_get_no_node_port() {
    let mut service = web_service(30080);
    service.spec.service_type = Some("ClusterIP".into());
    assert!(table(&store(vec![service]), &Store::new()).is_empty());
}

/// The proxy on the fake API and tokio's paused clock: a node port another process holds fails
/// the reconcile, which is backed off (0.5 s, 1 s, 2 s, ...) until the port is free, while a
/// change of the endpoints is applied at once.
#[tokio::test(start_paused = true)]
async fn the_proxy_on_the_fake_api_backs_off_a_port_it_cannot_listen_on_and_follows_changes() {
    use crate::runtime::fake::FakeClient;
    let fake = FakeClient::new();
    let (a, b) = (backend("a").await, backend("b").await);
    let port = free_port().await;
    let squatter = std::net::TcpListener::bind(("127.0.0.1", port)).unwrap();
    fake.create(&web_service(port)).await.unwrap();
    fake.create(&endpoints(&[a], &[]).cloned().remove(0)).await.unwrap();
    let ctx = Arc::new(Context::new(&fake, IpAddr::V4(Ipv4Addr::LOCALHOST)));
    let task = tokio::spawn(run_with(ctx.clone()));
    let started = tokio::time::Instant::now();
    // Tries at 0 s, 0.5 s and 1.5 s fail; the port is freed at 2 s; the next try is at 3.5 s (not
    // at once, and not only at the 5 s resync).
    tokio::time::sleep_until(started + Duration::from_secs(2)).await;
    assert!(ctx.ports().await.is_empty(), "the port is held by another process");
    drop(squatter);
    tokio::time::sleep_until(started + Duration::from_millis(3300)).await;
    assert!(ctx.ports().await.is_empty(), "the next try waits for its back-off");
    tokio::time::sleep_until(started + Duration::from_millis(3700)).await;
    assert_eq!(ctx.ports().await, vec![port], "listened on after the back-off, before the resync");
    assert_eq!(ask(port).await, "a");
    // A change of the endpoints is applied at once.
    let mut moved = fake.objects::<Endpoints>().remove(0);
    moved.subsets = endpoints(&[b], &[]).cloned().remove(0).subsets;
    fake.replace(&moved).await.unwrap();
    tokio::time::sleep(Duration::from_millis(100)).await;
    assert_eq!(ask(port).await, "b");
    task.abort();
}
