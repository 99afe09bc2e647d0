//! The `default/kubernetes` Service: the API server reached from pods at the first address of the
//! service CIDR, port 443, as in every Kubernetes cluster (client libraries' in-cluster
//! configuration dials `kubernetes.default.svc`). Its Endpoints, which no selector fills, list the
//! InternalIP of every Ready control-plane node with the API server's port, as the Kubernetes API
//! server's endpoint reconciler keeps them. Rewritten only when they differ; checked every 10 s and
//! on every Node change.

use std::sync::Arc;
use std::time::Duration;

use crate::api::node::Node;
use crate::api::service::{EndpointAddress, EndpointPort, EndpointSubset, Endpoints, Service, ServicePort, ServiceSpec};
use crate::api::quantity::IntOrString;
use crate::client::{ClientError, ListOptions};
use crate::runtime::{Action, Client, Controller, ObjectKey, Store};

const NAMESPACE: &str = "default";
const NAME: &str = "kubernetes";

/// The controller's client, the Nodes, and the API server's port.
pub struct Context<C> {
    pub client: C,
    pub nodes: Store<Node>,
    pub api_port: u16,
}

fn key() -> ObjectKey {
    ObjectKey::namespaced(NAMESPACE, NAME)
}

/// The addresses the Endpoints should list: every Ready control-plane node's InternalIP, sorted.
pub fn api_addresses(nodes: &[Arc<Node>]) -> Vec<EndpointAddress> {
    let mut out: Vec<EndpointAddress> = nodes
        .iter()
        .filter(|n| n.metadata.labels.contains_key(crate::api::node::CONTROL_PLANE) && n.is_ready())
        .filter_map(|n| n.address("InternalIP").map(|ip| EndpointAddress { ip: ip.to_string(), ..Default::default() }))
        .collect();
    out.sort_by(|a, b| a.ip.cmp(&b.ip));
    out.dedup_by(|a, b| a.ip == b.ip);
    out
}

fn https(port: i64) -> (Option<String>, Option<String>, i64) {
    (Some("https".into()), Some("TCP".into()), port)
}

/// Makes the Service exist and its Endpoints list the Ready masters.
pub async fn reconcile<C: Client>(_key: ObjectKey, ctx: Arc<Context<C>>) -> Result<Action, ClientError> {
    let (name, protocol, _) = https(443);
    match ctx.client.get::<Service>(&key()).await {
        Ok(_) => {}
        Err(e) if e.is_not_found() => {
            let mut service = Service { spec: ServiceSpec { ports: vec![ServicePort { name: name.clone(), protocol: protocol.clone(), port: 443, target_port: Some(IntOrString::Int(i64::from(ctx.api_port))), ..Default::default() }], ..Default::default() }, ..Default::default() };
            service.metadata.name = NAME.into();
            service.metadata.namespace = Some(NAMESPACE.into());
            service.metadata.labels.insert("component".into(), "apiserver".into());
            service.metadata.labels.insert("provider".into(), "kubernetes".into());
            match ctx.client.create(&service).await {
                Ok(_) => tracing::info!("created the kubernetes Service"),
                Err(e) if e.is_already_exists() => {}
                Err(e) => return Err(e),
            }
        }
        Err(e) => return Err(e),
    }
    let addresses = api_addresses(&ctx.nodes.snapshot());
    let subsets = if addresses.is_empty() {
        Vec::new()
    } else {
        vec![EndpointSubset { addresses, ports: vec![EndpointPort { name, protocol, port: i64::from(ctx.api_port), ..Default::default() }], ..Default::default() }]
    };
    match ctx.client.get::<Endpoints>(&key()).await {
        Ok(mut existing) if existing.subsets != subsets => {
            existing.subsets = subsets;
            ctx.client.replace(&existing).await?;
        }
        Ok(_) => {}
        Err(e) if e.is_not_found() => {
            let mut endpoints = Endpoints { subsets, ..Default::default() };
            endpoints.metadata.name = NAME.into();
            endpoints.metadata.namespace = Some(NAMESPACE.into());
            match ctx.client.create(&endpoints).await {
                Ok(_) => {}
                Err(e) if e.is_already_exists() => {}
                Err(e) => return Err(e),
            }
        }
        Err(e) => return Err(e),
    }
    Ok(Action::RequeueAfter(Duration::from_secs(10)))
}

/// Runs the controller until dropped.
pub async fn run<C: Client>(client: C, api_port: u16) {
    let nodes = Store::reflect(client.clone(), None, ListOptions::default());
    let ctx = Arc::new(Context { client, nodes, api_port });
    Controller::new("kubernetes-service")
        .watches(&ctx.nodes, |_: &Node| vec![key()])
        .resync_every(Duration::from_secs(10), || vec![key()])
        .run(reconcile, ctx.clone())
        .await;
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn node(name: &str, ip: &str, master: bool, ready: bool) -> Arc<Node> {
        let labels = if master { json!({"node-role.kubernetes.io/control-plane": ""}) } else { json!({}) };
        Arc::new(
            serde_json::from_value(json!({"metadata": {"name": name, "labels": labels}, "status": {
                "addresses": [{"type": "InternalIP", "address": ip}],
                "conditions": [{"type": "Ready", "status": if ready { "True" } else { "False" }}]}}))
            .unwrap(),
        )
    }

    #[test]
    fn the_endpoints_are_the_ready_masters() {
        let nodes = [node("m1", "10.0.1.10", true, true), node("m2", "10.0.1.9", true, false), node("m3", "10.0.1.8", true, true), node("w1", "10.0.1.20", false, true)];
        let ips: Vec<String> = api_addresses(&nodes).into_iter().map(|a| a.ip).collect();
        assert_eq!(ips, ["10.0.1.10", "10.0.1.8"]);
    }
}
