use serde_json::json;
use tokio::io::{AsyncReadExt, AsyncWriteExt};

use super::*;

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

fn objects(items: Vec<Value>) -> Objects {
    items.into_iter().map(|o| (reflector::key_of(&o), o)).collect()
}

fn service(node_port: u16) -> Value {
    json!({ "metadata": { "name": "web", "namespace": "default" },
            "spec": { "type": "NodePort", "ports": [{ "port": 80, "targetPort": 8080, "nodePort": node_port }] } })
}

fn endpoints(ready: &[SocketAddr], not_ready: &[SocketAddr]) -> Value {
    let addr = |a: &SocketAddr| json!({ "ip": a.ip().to_string() });
    let mut subsets: Vec<Value> = ready
        .iter()
        .map(|a| json!({ "addresses": [addr(a)], "ports": [{ "port": a.port() }] }))
        .collect();
    subsets.extend(not_ready.iter().map(|a| json!({ "notReadyAddresses": [addr(a)], "ports": [{ "port": a.port() }] })));
    json!({ "metadata": { "name": "web", "namespace": "default" }, "subsets": subsets })
}

#[tokio::test]
async fn connections_go_round_robin_to_ready_endpoints_only() {
    let (a, b, sick) = (backend("a").await, backend("b").await, backend("sick").await);
    let port = free_port().await;
    let t = table(&objects(vec![service(port)]), &objects(vec![endpoints(&[a, b], &[sick])]), &Objects::new());
    let mut proxy = ServiceProxy::new("127.0.0.1".parse().unwrap());
    proxy.apply(&t).await;
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
    let services = objects(vec![service(port)]);
    let mut proxy = ServiceProxy::new("127.0.0.1".parse().unwrap());
    proxy.apply(&table(&services, &objects(vec![endpoints(&[a], &[])]), &Objects::new())).await;
    assert_eq!(ask(port).await, "a");
    proxy.apply(&table(&services, &objects(vec![endpoints(&[b], &[])]), &Objects::new())).await;
    assert_eq!(ask(port).await, "b");
    assert_eq!(ask(port).await, "b");
    proxy.apply(&Table::new()).await;
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
    proxy.apply(&table(&objects(vec![service(port)]), &objects(vec![endpoints(&[dead, a], &[])]), &Objects::new())).await;
    assert_eq!(ask(port).await, "a");
    assert_eq!(ask(port).await, "a");
}

#[test]
fn an_endpoint_naming_its_pod_is_dialled_on_the_published_port_of_its_node() {
    let ep = json!({ "metadata": { "name": "web", "namespace": "default" }, "subsets": [{
        "addresses": [{ "ip": "10.0.1.7", "targetRef": { "kind": "Pod", "namespace": "default", "name": "web-1" } },
                      { "ip": "10.0.1.8" }],
        "ports": [{ "port": 8080 }] }] });
    let pod = json!({ "metadata": { "name": "web-1", "namespace": "default" },
                      "status": { "podIP": "10.0.1.7", "publishedPorts": [{ "containerName": "web", "containerPort": 8080, "hostPort": 32801 }] } });
    let t = table(&objects(vec![service(30080)]), &objects(vec![ep]), &objects(vec![pod]));
    assert_eq!(t[&30080], vec!["10.0.1.7:32801".parse().unwrap(), "10.0.1.8:8080".parse().unwrap()]);
}

#[test]
fn cluster_ip_services_get_no_node_port() {
    let mut s = service(30080);
    s["spec"]["type"] = json!("ClusterIP");
    assert!(table(&objects(vec![s]), &Objects::new(), &Objects::new()).is_empty());
}
