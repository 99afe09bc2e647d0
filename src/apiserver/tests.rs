//! The API server end to end: `serve` on 127.0.0.1:0 with certificates made here by rcgen, driven
//! through [`ApiClient`].

use std::sync::Arc;
use std::time::Duration;

use base64::Engine;
use base64::engine::general_purpose::STANDARD;
use futures::StreamExt;
use rcgen::{
    BasicConstraints, CertificateParams, CertificateSigningRequestParams, DnType, ExtendedKeyUsagePurpose, IsCa, Issuer, KeyPair,
    KeyUsagePurpose,
};
use serde_json::{Value, json};
use tokio::net::TcpListener;
use tokio::sync::oneshot;
use tokio::task::JoinHandle;

use super::store::{SqliteStore, Store};
use super::{ApiServerConfig, ApiServerError, CsrSigner, ServerTls, serve};
use crate::api::resource::{CERTIFICATE_SIGNING_REQUESTS, DEPLOYMENTS, LEASES, NODES, PODS, SECRETS, SERVICES};
use crate::api::{
    CertificateSigningRequest, KUBELET_CLIENT_SIGNER, Lease, List, Node, NodeCondition, ObjectMeta, Secret, StatusReason, Time,
    WatchEvent, WatchEventType,
};
use crate::client::{ApiClient, ClientAuth, ClientError, ListOptions, Method};

/// A throw-away cluster CA that also signs node CSRs like `pki::ClusterCa` will.
struct TestCa {
    pem: String,
    issuer: Issuer<'static, KeyPair>,
}

impl TestCa {
    fn new(name: &str) -> Self {
        let mut params = CertificateParams::new(Vec::<String>::new()).unwrap();
        params.distinguished_name.push(DnType::CommonName, name);
        params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        params.key_usages = vec![KeyUsagePurpose::KeyCertSign, KeyUsagePurpose::CrlSign, KeyUsagePurpose::DigitalSignature];
        let key = KeyPair::generate().unwrap();
        let pem = params.self_signed(&key).unwrap().pem();
        TestCa { pem, issuer: Issuer::new(params, key) }
    }

    fn serving(&self) -> (String, String) {
        let mut params = CertificateParams::new(vec!["localhost".to_string(), "127.0.0.1".to_string()]).unwrap();
        params.distinguished_name.push(DnType::CommonName, "kube-apiserver");
        params.extended_key_usages = vec![ExtendedKeyUsagePurpose::ServerAuth];
        let key = KeyPair::generate().unwrap();
        (params.signed_by(&key, &self.issuer).unwrap().pem(), key.serialize_pem())
    }

    /// A client certificate dated as the cluster CA dates them (issued now, `notBefore` backdated).
    fn client_issued_now(&self, user: &str, groups: &[&str]) -> (String, String) {
        self.client_with(user, groups, |params| {
            let now = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap().as_secs() as i64;
            params.not_before = x509_parser::time::ASN1Time::from_timestamp(now - crate::pki::BACKDATE.as_secs() as i64).unwrap().to_datetime();
        })
    }

    fn client(&self, user: &str, groups: &[&str]) -> (String, String) {
        self.client_with(user, groups, |_| {})
    }

    fn client_with(&self, user: &str, groups: &[&str], tune: impl FnOnce(&mut CertificateParams)) -> (String, String) {
        let mut params = CertificateParams::new(Vec::<String>::new()).unwrap();
        tune(&mut params);
        params.distinguished_name.push(DnType::CommonName, user);
        for g in groups {
            params.distinguished_name.push(DnType::OrganizationName, *g);
        }
        params.extended_key_usages = vec![ExtendedKeyUsagePurpose::ClientAuth];
        let key = KeyPair::generate().unwrap();
        (params.signed_by(&key, &self.issuer).unwrap().pem(), key.serialize_pem())
    }
}

impl CsrSigner for TestCa {
    fn sign_node_csr(&self, csr_pem: &str) -> Result<String, String> {
        let mut request = CertificateSigningRequestParams::from_pem(csr_pem).map_err(|e| e.to_string())?;
        request.params.extended_key_usages = vec![ExtendedKeyUsagePurpose::ClientAuth];
        request.signed_by(&self.issuer).map(|c| c.pem()).map_err(|e| e.to_string())
    }

    fn sign_node_serving_csr(&self, csr_pem: &str) -> Result<String, String> {
        let mut request = CertificateSigningRequestParams::from_pem(csr_pem).map_err(|e| e.to_string())?;
        request.params.extended_key_usages = vec![ExtendedKeyUsagePurpose::ServerAuth];
        request.signed_by(&self.issuer).map(|c| c.pem()).map_err(|e| e.to_string())
    }
}

/// A running server and the means to reach it.
struct TestServer {
    url: String,
    ca: Arc<TestCa>,
    stop: Option<oneshot::Sender<()>>,
    task: JoinHandle<Result<(), ApiServerError>>,
}

impl TestServer {
    async fn start() -> Self {
        Self::start_with(SqliteStore::in_memory().unwrap()).await
    }

    async fn start_with(store: SqliteStore) -> Self {
        Self::start_serving(store, None).await
    }

    async fn start_serving(store: SqliteStore, node_binary: Option<std::path::PathBuf>) -> Self {
        Self::start_configured(store, |c| c.node_binary = node_binary).await
    }

    async fn start_configured(store: SqliteStore, tune: impl FnOnce(&mut ApiServerConfig)) -> Self {
        let ca = Arc::new(TestCa::new("test-ca"));
        let (cert_pem, key_pem) = ca.serving();
        let mut config = ApiServerConfig {
            tls: ServerTls::from_pem(&cert_pem, &key_pem, &ca.pem).unwrap(),
            csr_signer: ca.clone(),
            join_verifier: None,
            cluster_info_ca_pem: ca.pem.clone(),
            node_binary: None,
            kubelet_client: None,
            service_cidr: Some("10.96.0.0/16".parse().unwrap()),
            limits: crate::apiserver::limits::LimitSettings::default(),
            audit: None,
            default_toleration_seconds: None,
        };
        tune(&mut config);
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let url = format!("https://127.0.0.1:{}", listener.local_addr().unwrap().port());
        let (stop, stopped) = oneshot::channel::<()>();
        let store: Arc<dyn Store> = Arc::new(store);
        let task = tokio::spawn(serve(config, store, listener, async move {
            let _ = stopped.await;
        }));
        TestServer { url, ca, stop: Some(stop), task }
    }

    fn as_user(&self, user: &str, groups: &[&str]) -> ApiClient {
        let (cert_pem, key_pem) = self.ca.client(user, groups);
        ApiClient::new(&self.url, ClientAuth::Certificate { ca_pem: self.ca.pem.clone(), cert_pem, key_pem }).unwrap()
    }

    fn admin(&self) -> ApiClient {
        self.as_user("admin", &["system:masters"])
    }

    fn node(&self, name: &str) -> ApiClient {
        self.as_user(&format!("system:node:{name}"), &["system:nodes"])
    }

    /// A node's client with a certificate issued now, as the cluster CA issues them.
    fn node_issued_now(&self, name: &str) -> ApiClient {
        let (cert_pem, key_pem) = self.ca.client_issued_now(&format!("system:node:{name}"), &["system:nodes"]);
        ApiClient::new(&self.url, ClientAuth::Certificate { ca_pem: self.ca.pem.clone(), cert_pem, key_pem }).unwrap()
    }

    fn anonymous(&self) -> ApiClient {
        ApiClient::new(&self.url, ClientAuth::Insecure).unwrap()
    }

    fn with_token(&self, token: &str) -> ApiClient {
        ApiClient::new(&self.url, ClientAuth::Token { ca_pem: self.ca.pem.clone(), token: token.into() }).unwrap()
    }

    async fn stop(mut self) {
        let _ = self.stop.take().unwrap().send(());
        tokio::time::timeout(Duration::from_secs(5), &mut self.task).await.expect("the server did not stop within 5 s").unwrap().unwrap();
    }
}

fn code(r: Result<impl std::fmt::Debug, ClientError>) -> u16 {
    match r {
        Err(e) => e.code().unwrap_or_else(|| panic!("expected an API error, got {e}")),
        Ok(v) => panic!("expected an API error, got {v:?}"),
    }
}

fn ready(status: &str) -> NodeCondition {
    NodeCondition {
        condition_type: "Ready".into(),
        status: status.into(),
        reason: "KubeletReady".into(),
        last_heartbeat_time: Some(Time::now()),
        ..Default::default()
    }
}

async fn next_event<T: std::fmt::Debug>(watch: &mut futures::stream::BoxStream<'static, Result<WatchEvent<T>, ClientError>>) -> WatchEvent<T> {
    match tokio::time::timeout(Duration::from_secs(5), watch.next()).await {
        Ok(Some(Ok(e))) => e,
        other => panic!("expected a watch event within 5 s, got {other:?}"),
    }
}

fn pod(name: &str, node: Option<&str>, app: &str) -> Value {
    let mut p = json!({
        "metadata": {"name": name, "labels": {"app": app}},
        "spec": {"containers": [{"name": "c", "image": "busybox"}]},
    });
    if let Some(n) = node {
        p["spec"]["nodeName"] = json!(n);
    }
    p
}

#[tokio::test]
async fn a_request_without_credentials_is_401_but_health_and_discovery_are_open() {
    let server = TestServer::start().await;
    let anon = server.anonymous();
    let err = anon.get::<Value>(&NODES, None, "w1").await.unwrap_err();
    assert_eq!((err.code(), err.reason()), (Some(401), Some(&StatusReason::Unauthorized)));
    assert_eq!(code(anon.list_values("/api/v1/nodes").await), 401);
    assert_eq!(anon.request_text("GET", "/healthz").await.unwrap(), "ok");
    assert_eq!(anon.request_text("GET", "/readyz").await.unwrap(), "ok");
    assert!(anon.get_value("/version").await.unwrap()["gitVersion"].as_str().unwrap().contains("clusterctl"));
    let info = anon.get_value("/api/v1/namespaces/kube-public/configmaps/cluster-info").await.unwrap();
    assert_eq!(info["data"]["ca.crt"], server.ca.pem.as_str());
    // Writing cluster-info is not discovery.
    assert_eq!(code(anon.replace_value("/api/v1/namespaces/kube-public/configmaps/cluster-info", &json!({})).await), 401);
    server.stop().await;
}

#[tokio::test]
async fn a_certificate_from_another_ca_is_refused() {
    let server = TestServer::start().await;
    let other = TestCa::new("other-ca");
    let (cert_pem, key_pem) = other.client("admin", &["system:masters"]);
    let client = ApiClient::new(&server.url, ClientAuth::Certificate { ca_pem: server.ca.pem.clone(), cert_pem, key_pem }).unwrap();
    let err = client.list_values("/api/v1/nodes").await.unwrap_err();
    assert!(matches!(err, ClientError::Transport { .. }), "{err}");
    server.stop().await;
}

#[tokio::test]
async fn an_admin_creates_lists_gets_and_updates_nodes() {
    let server = TestServer::start().await;
    let admin = server.admin();
    let mut node = Node::new("w1");
    node.metadata.labels.insert("pool".into(), "workers".into());
    node.spec.provider_id = Some("aws:///us-east-1a/i-1".into());
    let created: Node = admin.create(&NODES, None, &node).await.unwrap();
    assert!(!created.metadata.uid.is_empty());
    assert!(created.metadata.creation_timestamp.is_some());
    assert_eq!(created.metadata.generation, Some(1));
    let rv1: u64 = created.metadata.resource_version.parse().unwrap();
    assert_eq!(code(admin.create(&NODES, None, &node).await), 409);

    admin.create(&NODES, None, &Node::new("w2")).await.unwrap();
    let list: List<Node> = admin.list(&NODES, None, &ListOptions::default()).await.unwrap();
    assert_eq!(list.kind, "NodeList");
    assert_eq!(list.items.iter().map(|n| n.metadata.name.as_str()).collect::<Vec<_>>(), vec!["w1", "w2"]);
    assert!(list.metadata.resource_version.parse::<u64>().unwrap() > rv1);

    let mut got: Node = admin.get(&NODES, None, "w1").await.unwrap();
    assert_eq!(got, created);
    got.spec.unschedulable = true;
    let updated: Node = admin.replace(&NODES, None, "w1", &got).await.unwrap();
    assert!(updated.spec.unschedulable);
    assert_eq!(updated.metadata.uid, created.metadata.uid);
    assert_eq!(updated.metadata.generation, Some(2));
    assert!(updated.metadata.resource_version.parse::<u64>().unwrap() > rv1);
    assert_eq!(code(admin.get::<Node>(&NODES, None, "nope").await), 404);
    server.stop().await;
}

#[tokio::test]
async fn an_update_with_a_stale_resource_version_is_409() {
    let server = TestServer::start().await;
    let admin = server.admin();
    let stale: Node = admin.create(&NODES, None, &Node::new("w1")).await.unwrap();
    let mut fresh = stale.clone();
    fresh.spec.unschedulable = true;
    admin.replace(&NODES, None, "w1", &fresh).await.unwrap();
    let mut late = stale.clone();
    late.metadata.labels.insert("late".into(), "yes".into());
    let err = admin.replace(&NODES, None, "w1", &late).await.unwrap_err();
    assert!(err.is_conflict(), "{err}");
    assert_eq!(err.code(), Some(409));
    // The status subresource is guarded the same way.
    late.status.conditions.push(ready("True"));
    assert!(admin.replace_status(&NODES, None, "w1", &late).await.unwrap_err().is_conflict());
    // Without a resourceVersion the write goes through.
    late.metadata.resource_version.clear();
    admin.replace(&NODES, None, "w1", &late).await.unwrap();
    server.stop().await;
}

#[tokio::test]
async fn a_plain_update_keeps_the_status_and_a_status_update_keeps_the_rest() {
    let server = TestServer::start().await;
    let admin = server.admin();
    let mut node = Node::new("w1");
    node.status.conditions.push(ready("True"));
    let created: Node = admin.create(&NODES, None, &node).await.unwrap();
    assert!(created.is_ready());

    let mut spec_change = created.clone();
    spec_change.spec.unschedulable = true;
    spec_change.status.conditions.clear();
    let after: Node = admin.replace(&NODES, None, "w1", &spec_change).await.unwrap();
    assert!(after.spec.unschedulable && after.is_ready(), "a plain PUT must not touch status");

    let mut status_change = after.clone();
    status_change.spec.unschedulable = false;
    status_change.status.conditions = vec![ready("False")];
    let after: Node = admin.replace_status(&NODES, None, "w1", &status_change).await.unwrap();
    assert!(after.spec.unschedulable && !after.is_ready(), "a status PUT must touch only status");
    server.stop().await;
}

#[tokio::test]
async fn a_node_writes_its_own_node_but_not_another_one() {
    let server = TestServer::start().await;
    server.admin().create(&NODES, None, &Node::new("w2")).await.unwrap();
    let w1 = server.node("w1");
    let mut mine: Node = w1.create(&NODES, None, &Node::new("w1")).await.unwrap();
    mine.status.conditions.push(ready("True"));
    let mine: Node = w1.replace_status(&NODES, None, "w1", &mine).await.unwrap();
    assert!(mine.is_ready());

    let mut theirs: Node = w1.get(&NODES, None, "w2").await.unwrap();
    theirs.status.conditions.push(ready("False"));
    let err = w1.replace_status(&NODES, None, "w2", &theirs).await.unwrap_err();
    assert_eq!(err.code(), Some(403));
    assert!(err.to_string().contains(r#"User "system:node:w1" cannot update resource "nodes/status""#), "{err}");
    assert_eq!(code(w1.replace(&NODES, None, "w2", &theirs).await), 403);
    assert_eq!(code(w1.create(&NODES, None, &Node::new("w3")).await), 403);
    assert_eq!(code(w1.delete(&NODES, None, "w1").await), 403);
    assert_eq!(code(w1.list::<Value>(&SECRETS, Some("kube-system"), &ListOptions::default()).await), 403);
    server.stop().await;
}

/// NodeRestriction: a worker's own credential cannot make its node a master, shed or add taints,
/// or move its Node to another instance; the control plane can label and taint it.
#[tokio::test]
async fn a_node_cannot_give_itself_a_role_change_its_taints_or_its_provider_id() {
    let server = TestServer::start().await;
    let admin = server.admin();
    let w1 = server.node("w1");
    let mut master_like = Node::new("w1");
    master_like.metadata.labels.insert(crate::api::node::CONTROL_PLANE.into(), String::new());
    let refused = w1.create(&NODES, None, &master_like).await.unwrap_err();
    assert_eq!(refused.code(), Some(403));
    assert!(refused.to_string().contains("node \"w1\" is not allowed to set the following labels: node-role.kubernetes.io/control-plane"), "{refused}");
    let mut plain = Node::new("w1");
    plain.spec.provider_id = Some("aws:///us-east-1a/i-1".into());
    plain.spec.taints.push(crate::api::node::Taint { key: "dedicated".into(), value: Some("db".into()), effect: "NoSchedule".into(), ..Default::default() });
    w1.create::<Node>(&NODES, None, &plain).await.expect("registering with taints");
    for (patch, code_wanted) in [
        (json!({"metadata": {"labels": {"node-role.kubernetes.io/control-plane": ""}}}), 403),
        (json!({"metadata": {"labels": {"node-restriction.kubernetes.io/pci": "true"}}}), 403),
        (json!({"spec": {"taints": []}}), 403),
        (json!({"spec": {"providerID": "aws:///us-east-1b/i-victim"}}), 422),
    ] {
        assert_eq!(code(w1.patch::<Value>(&NODES, None, "w1", &patch).await), code_wanted, "{patch}");
    }
    let own_label: Node = w1.patch(&NODES, None, "w1", &json!({"metadata": {"labels": {"tier": "web"}}})).await.unwrap();
    assert_eq!(own_label.metadata.labels["tier"], "web", "ordinary labels are the node's");
    let marked: Node = admin.patch(&NODES, None, "w1", &json!({"metadata": {"labels": {"node-role.kubernetes.io/control-plane": ""}}, "spec": {"taints": []}})).await.unwrap();
    assert!(marked.metadata.labels.contains_key(crate::api::node::CONTROL_PLANE) && marked.spec.taints.is_empty(), "the control plane may");
    assert_eq!(code(admin.patch::<Value>(&NODES, None, "w1", &json!({"spec": {"providerID": "aws:///x/i-2"}})).await), 422, "providerID is fixed for everyone");
    server.stop().await;
}

/// Issue 22's API limits: the cluster's own identities keep a pool of their own (here the others'
/// is empty: every other request is 429 with `Retry-After`), a user's watches stop at the cap and
/// free their place when they end, and every request, refused or not, is one audit line.
#[tokio::test]
async fn the_cluster_keeps_its_share_watches_are_capped_per_user_and_every_request_is_audited() {
    use crate::apiserver::limits::{AuditSettings, LimitSettings};
    let dir = tempfile::tempdir().unwrap();
    let audit_path = dir.path().join("audit.log");
    let audit = AuditSettings::at(&audit_path);
    let server = TestServer::start_configured(SqliteStore::in_memory().unwrap(), |c| {
        c.limits = LimitSettings { others_in_flight: 0, watches_per_user: 2, ..LimitSettings::default() };
        c.audit = Some(audit);
    })
    .await;
    let admin = server.admin();
    admin.create::<Node>(&NODES, None, &Node::new("w1")).await.unwrap();
    let _: Node = server.node("w1").get(&NODES, None, "w1").await.expect("nodes draw from the cluster's pool");
    let operator = server.as_user("ann", &["developers"]);
    let refused = operator.request_raw(Method::GET, "/api/v1/namespaces/default/pods", &json!(null)).await;
    assert_eq!(refused.status().as_u16(), 429);
    assert_eq!(refused.headers().get("retry-after").map(|v| v.to_str().unwrap()), Some("1"));
    let status: crate::api::Status = refused.json().await.unwrap();
    assert_eq!((status.reason, status.message.as_str()), (crate::api::StatusReason::TooManyRequests, "Too many requests, please try again later."));
    assert_eq!(status.details.unwrap().retry_after_seconds, Some(1));

    let watch = || admin.request_raw(Method::GET, "/api/v1/nodes?watch=true", &json!(null));
    let first = watch().await;
    let second = watch().await;
    assert_eq!((first.status().as_u16(), second.status().as_u16()), (200, 200));
    assert_eq!(watch().await.status().as_u16(), 429, "a third watch of the same user");
    drop(first);
    let mut again = 0;
    for _ in 0..50 {
        again = watch().await.status().as_u16();
        if again == 200 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert_eq!(again, 200, "an ended watch frees its place");
    drop(second);

    server.stop().await;
    let mut lines = Vec::new();
    for _ in 0..50 {
        lines = std::fs::read_to_string(&audit_path).unwrap_or_default().lines().map(|l| serde_json::from_str::<Value>(l).unwrap()).collect();
        if lines.iter().any(|l| l["responseStatus"]["code"] == 429 && l["verb"] == "watch") {
            break;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let created = lines.iter().find(|l| l["verb"] == "create").expect("the create is audited");
    assert_eq!(created["user"]["username"], "admin");
    assert_eq!(created["objectRef"], json!({"resource": "nodes", "apiVersion": "v1"}));
    assert_eq!(created["responseStatus"]["code"], 201);
    assert_eq!(created["apiVersion"], "audit.k8s.io/v1");
    let got = lines.iter().find(|l| l["user"]["username"] == "system:node:w1").unwrap();
    assert_eq!((got["verb"].as_str(), got["objectRef"]["name"].as_str()), (Some("get"), Some("w1")));
    assert!(lines.iter().any(|l| l["user"]["username"] == "ann" && l["verb"] == "list" && l["responseStatus"]["code"] == 429), "refusals are audited");
    assert!(lines.iter().any(|l| l["verb"] == "watch" && l["responseStatus"]["code"] == 429));
    use std::os::unix::fs::PermissionsExt;
    assert_eq!(std::fs::metadata(&audit_path).unwrap().permissions().mode() & 0o777, 0o600);
}

#[tokio::test]
async fn a_node_reads_only_the_config_maps_and_secrets_its_own_pods_name() {
    let server = TestServer::start().await;
    let admin = server.admin();
    let w1 = server.node("w1");
    for name in ["mine", "theirs", "nobodys"] {
        let _: Value = admin.create(&SECRETS, Some("default"), &json!({"metadata": {"name": name}, "data": {"k": "dg=="}})).await.unwrap();
        let _: Value = admin.create(&crate::api::resource::CONFIG_MAPS, Some("default"), &json!({"metadata": {"name": name}, "data": {"k": "v"}})).await.unwrap();
    }
    for (pod, node, source) in [("p1", "w1", "mine"), ("p2", "w2", "theirs")] {
        let spec = json!({"nodeName": node, "containers": [{"name": "c", "image": "i",
            "env": [{"name": "K", "valueFrom": {"secretKeyRef": {"name": source, "key": "k"}}}]}],
            "volumes": [{"name": "v", "configMap": {"name": source}}]});
        let _: Value = admin.create(&PODS, Some("default"), &json!({"metadata": {"name": pod}, "spec": spec})).await.unwrap();
    }
    let secret: Value = w1.get(&SECRETS, Some("default"), "mine").await.unwrap();
    assert_eq!(secret["data"]["k"], "dg==");
    let _: Value = w1.get(&crate::api::resource::CONFIG_MAPS, Some("default"), "mine").await.unwrap();
    for resource in [SECRETS, crate::api::resource::CONFIG_MAPS] {
        for name in ["theirs", "nobodys"] {
            let err = w1.get::<Value>(&resource, Some("default"), name).await.unwrap_err();
            assert_eq!(err.code(), Some(403), "{} {name}: {err}", resource.plural);
        }
        assert_eq!(code(w1.list::<Value>(&resource, Some("default"), &ListOptions::default()).await), 403);
    }
    server.stop().await;
}

#[tokio::test]
async fn a_node_reads_only_its_own_pods_and_every_pod_in_its_network_view() {
    let server = TestServer::start().await;
    let admin = server.admin();
    let w1 = server.node("w1");
    let mut theirs = pod("theirs", Some("w2"), "db");
    theirs["spec"]["containers"][0]["env"] = json!([{"name": "PASSWORD", "value": "hunter2"}]);
    theirs["spec"]["containers"][0]["ports"] = json!([{"name": "sql", "containerPort": 5432}]);
    let _: Value = admin.create(&PODS, Some("default"), &theirs).await.unwrap();
    let _: Value = admin.create(&PODS, Some("default"), &pod("mine", Some("w1"), "web")).await.unwrap();
    let _: Value = admin.create(&PODS, Some("default"), &pod("pending", None, "web")).await.unwrap();

    // Whole pods: the ones bound to it, by the field selector or by name.
    for options in [ListOptions::default(), ListOptions::fields("spec.nodeName=w2"), ListOptions::labels("app=db")] {
        let err = w1.list::<Value>(&PODS, None, &options).await.unwrap_err();
        assert_eq!(err.code(), Some(403), "{options:?}: {err}");
        assert!(err.to_string().contains("spec.nodeName=w1 field selector"), "{err}");
        assert_eq!(code(w1.watch::<Value>(&PODS, Some("default"), None, &options).await.map(drop)), 403);
    }
    let own = w1.list::<Value>(&PODS, None, &ListOptions::fields("spec.nodeName=w1")).await.unwrap();
    assert_eq!(own.items.iter().map(|p| p["metadata"]["name"].as_str().unwrap()).collect::<Vec<_>>(), ["mine"]);
    assert!(own.items[0]["spec"]["containers"][0]["image"].is_string(), "its own pods whole");
    let _: Value = w1.get(&PODS, Some("default"), "mine").await.unwrap();
    for name in ["theirs", "pending"] {
        assert_eq!(code(w1.get::<Value>(&PODS, Some("default"), name).await), 403, "{name}");
    }

    // Every pod in its network view: addresses, labels and ports, nothing a container is given.
    let view = w1.list::<Value>(&PODS, None, &ListOptions::pod_network()).await.unwrap();
    assert_eq!(view.items.len(), 3);
    let text = serde_json::to_string(&view.items).unwrap();
    assert!(!text.contains("hunter2") && !text.contains("busybox"), "{text}");
    let seen = view.items.iter().find(|p| p["metadata"]["name"] == "theirs").unwrap();
    assert_eq!((&seen["metadata"]["labels"]["app"], &seen["spec"]["nodeName"]), (&json!("db"), &json!("w2")));
    assert_eq!(seen["spec"]["containers"][0]["ports"][0]["containerPort"], 5432);
    let mut watch = w1.watch::<Value>(&PODS, None, None, &ListOptions::pod_network()).await.unwrap();
    let _: Value = admin.patch(&PODS, Some("default"), "theirs", &json!({"metadata": {"labels": {"tier": "data"}}})).await.unwrap();
    let mut events = Vec::new();
    while events.len() < 4 {
        events.push(next_event(&mut watch).await);
    }
    assert!(events.iter().all(|e| !e.object.to_string().contains("hunter2")), "{events:?}");
    assert_eq!(events[3].event_type, WatchEventType::Modified);
    assert_eq!(events[3].object["metadata"]["labels"]["tier"], "data");
    drop(watch);
    let secrets_view = ListOptions { accept: ListOptions::pod_network().accept, ..Default::default() };
    assert_eq!(code(admin.list::<Value>(&SECRETS, None, &secrets_view).await), 406, "only pods have a network view");
    server.stop().await;
}

/// A raw TLS connector that trusts the test server's CA and presents no client certificate.
fn tls_connector(server: &TestServer) -> tokio_rustls::TlsConnector {
    use rustls_pki_types::pem::PemObject;
    let mut roots = rustls::RootCertStore::empty();
    roots.add(rustls_pki_types::CertificateDer::from_pem_slice(server.ca.pem.as_bytes()).unwrap()).unwrap();
    let config = rustls::ClientConfig::builder_with_provider(Arc::new(rustls::crypto::ring::default_provider()))
        .with_safe_default_protocol_versions()
        .unwrap()
        .with_root_certificates(roots)
        .with_no_client_auth();
    tokio_rustls::TlsConnector::from(Arc::new(config))
}

/// The certificate (DER) a server presents to a new TLS connection.
async fn served_certificate(server: &TestServer) -> Vec<u8> {
    let tcp = tokio::net::TcpStream::connect(server.url.trim_start_matches("https://")).await.unwrap();
    let tls = tls_connector(server).connect("localhost".try_into().unwrap(), tcp).await.unwrap();
    tls.get_ref().1.peer_certificates().unwrap()[0].to_vec()
}

#[tokio::test]
async fn a_renewed_serving_certificate_is_served_to_new_connections() {
    let mut handle = None;
    let server = TestServer::start_configured(SqliteStore::in_memory().unwrap(), |c| handle = Some(c.tls.cert.clone())).await;
    let before = served_certificate(&server).await;
    let admin = server.admin();
    let _: List<Node> = admin.list(&NODES, None, &ListOptions::default()).await.unwrap();
    let (cert_pem, key_pem) = server.ca.serving();
    handle.unwrap().replace(&cert_pem, &key_pem).unwrap();
    let after = served_certificate(&server).await;
    let (_, renewed) = x509_parser::pem::parse_x509_pem(cert_pem.as_bytes()).unwrap();
    assert!(after != before && after == renewed.contents, "new connections get the renewed certificate");
    let _: List<Node> = admin.list(&NODES, None, &ListOptions::default()).await.expect("a client keeps working across the renewal");
    server.stop().await;
}

#[tokio::test]
async fn a_node_creates_and_renews_only_its_own_lease() {
    let server = TestServer::start().await;
    let w1 = server.node("w1");
    let lease: Lease = w1.create(&LEASES, None, &Lease::for_node("w1", 40)).await.unwrap();
    assert_eq!(lease.metadata.namespace.as_deref(), Some("kube-node-lease"));
    let mut renewed = lease.clone();
    let sent = Some(crate::api::MicroTime::now());
    renewed.spec.renew_time = sent;
    let renewed: Lease = w1.replace(&LEASES, Some("kube-node-lease"), "w1", &renewed).await.unwrap();
    assert_eq!(renewed.spec.renew_time, sent);
    assert_eq!(code(w1.create(&LEASES, None, &Lease::for_node("w2", 40)).await), 403);
    let mut elsewhere = Lease::for_node("w1", 40);
    elsewhere.metadata.namespace = Some("default".into());
    assert_eq!(code(w1.create(&LEASES, None, &elsewhere).await), 403);
    server.stop().await;
}

#[tokio::test]
async fn a_node_writes_the_status_only_of_pods_bound_to_it() {
    let server = TestServer::start().await;
    let admin = server.admin();
    admin.create(&PODS, Some("default"), &pod("p1", Some("w1"), "web")).await.unwrap();
    admin.create(&PODS, Some("default"), &pod("p2", Some("w2"), "web")).await.unwrap();
    let w1 = server.node("w1");
    let mut p1: Value = w1.get(&PODS, Some("default"), "p1").await.unwrap();
    p1["status"] = json!({"phase": "Running"});
    let p1: Value = w1.replace_status(&PODS, Some("default"), "p1", &p1).await.unwrap();
    assert_eq!(p1["status"]["phase"], "Running");
    let mut p2: Value = admin.get(&PODS, Some("default"), "p2").await.unwrap();
    p2["status"] = json!({"phase": "Running"});
    assert_eq!(code(w1.replace_status(&PODS, Some("default"), "p2", &p2).await), 403);
    assert_eq!(code(w1.replace(&PODS, Some("default"), "p1", &p1).await), 403);
    assert_eq!(code(w1.replace_status(&PODS, Some("default"), "missing", &p2).await), 403);
    server.stop().await;
}

#[tokio::test]
async fn watch_from_a_resource_version_sees_modifications_in_order() {
    let server = TestServer::start().await;
    let admin = server.admin();
    admin.create(&NODES, None, &Node::new("w0")).await.unwrap();
    let created: Node = admin.create(&NODES, None, &Node::new("w1")).await.unwrap();
    let mut watch = admin.watch::<Node>(&NODES, None, Some(&created.metadata.resource_version), &ListOptions::default()).await.unwrap();
    let mut current = created;
    for i in 0..3 {
        current.metadata.labels.insert("step".into(), i.to_string());
        current = admin.replace(&NODES, None, "w1", &current).await.unwrap();
    }
    let mut last = 0u64;
    for i in 0..3 {
        let e = next_event(&mut watch).await;
        assert_eq!(e.event_type, WatchEventType::Modified);
        assert_eq!(e.object.metadata.labels["step"], i.to_string());
        let rv: u64 = e.object.metadata.resource_version.parse().unwrap();
        assert!(rv > last);
        last = rv;
    }
    assert_eq!(last.to_string(), current.metadata.resource_version);
    admin.delete(&NODES, None, "w1").await.unwrap();
    let e = next_event(&mut watch).await;
    assert_eq!((e.event_type, e.object.metadata.name.as_str()), (WatchEventType::Deleted, "w1"));
    drop(watch);
    server.stop().await;
}

/// The lines of a raw watch stream, as JSON, until `n` have come (10 s at most).
async fn watch_lines(stream: &mut futures::stream::BoxStream<'static, Result<bytes::Bytes, ClientError>>, pending: &mut String, n: usize) -> Vec<Value> {
    let mut out = Vec::new();
    while out.len() < n {
        while let Some(end) = pending.find('\n') {
            let line: String = pending.drain(..=end).collect();
            out.push(serde_json::from_str(&line).unwrap());
            if out.len() == n {
                return out;
            }
        }
        let chunk = tokio::time::timeout(Duration::from_secs(10), stream.next()).await.expect("a watch line within 10 s").expect("the watch goes on").unwrap();
        pending.push_str(&String::from_utf8_lossy(&chunk));
    }
    out
}

/// `allowWatchBookmarks`: a `BOOKMARK` every few seconds with the revision the watch has passed;
/// `sendInitialEvents` (watch-list): the current objects as `ADDED`, then the bookmark that ends
/// them, then changes; without `resourceVersionMatch=NotOlderThan` it is 422.
#[tokio::test]
async fn watches_send_bookmarks_and_initial_events_when_asked() {
    let server = TestServer::start().await;
    let admin = server.admin();
    admin.create(&NODES, None, &Node::new("w0")).await.unwrap();
    let w1: Node = admin.create(&NODES, None, &Node::new("w1")).await.unwrap();
    let path = format!("/api/v1/nodes?watch=true&allowWatchBookmarks=true&resourceVersion={}", w1.metadata.resource_version);
    let mut stream = admin.get_stream(&path).await.unwrap();
    let mut pending = String::new();
    let w2: Node = admin.create(&NODES, None, &Node::new("w2")).await.unwrap();
    let started = std::time::Instant::now();
    let lines = watch_lines(&mut stream, &mut pending, 2).await;
    assert_eq!((lines[0]["type"].as_str(), lines[0]["object"]["metadata"]["name"].as_str()), (Some("ADDED"), Some("w2")));
    assert_eq!(lines[1]["type"], "BOOKMARK", "{}", lines[1]);
    assert_eq!(lines[1]["object"]["kind"], "Node");
    assert_eq!(lines[1]["object"]["metadata"]["resourceVersion"].as_str(), Some(w2.metadata.resource_version.as_str()), "the revision passed");
    assert!(started.elapsed() <= crate::apiserver::watch::BOOKMARK_EVERY + Duration::from_secs(2));
    drop(stream);

    let path = "/api/v1/nodes?watch=true&allowWatchBookmarks=true&sendInitialEvents=true&resourceVersionMatch=NotOlderThan&resourceVersion=1";
    let mut stream = admin.get_stream(path).await.unwrap();
    let mut pending = String::new();
    let lines = watch_lines(&mut stream, &mut pending, 4).await;
    let names: Vec<&str> = lines[..3].iter().map(|l| l["object"]["metadata"]["name"].as_str().unwrap()).collect();
    assert_eq!(names, ["w0", "w1", "w2"]);
    assert!(lines[..3].iter().all(|l| l["type"] == "ADDED"));
    assert_eq!(lines[3]["type"], "BOOKMARK");
    assert_eq!(lines[3]["object"]["metadata"]["annotations"]["k8s.io/initial-events-end"], "true");
    admin.delete(&NODES, None, "w0").await.unwrap();
    let next = watch_lines(&mut stream, &mut pending, 1).await;
    assert_eq!((next[0]["type"].as_str(), next[0]["object"]["metadata"]["name"].as_str()), (Some("DELETED"), Some("w0")));
    drop(stream);
    let e = admin.get_value("/api/v1/nodes?watch=true&sendInitialEvents=true").await.unwrap_err();
    assert_eq!(e.code(), Some(422), "{e}");
    server.stop().await;
}

#[tokio::test]
async fn watch_without_a_resource_version_starts_with_added_for_existing_objects() {
    let server = TestServer::start().await;
    let admin = server.admin();
    admin.create(&NODES, None, &Node::new("w1")).await.unwrap();
    admin.create(&NODES, None, &Node::new("w2")).await.unwrap();
    let mut watch = admin.watch::<Node>(&NODES, None, None, &ListOptions::default()).await.unwrap();
    let first = next_event(&mut watch).await;
    let second = next_event(&mut watch).await;
    assert_eq!((first.event_type, first.object.metadata.name.as_str()), (WatchEventType::Added, "w1"));
    assert_eq!((second.event_type, second.object.metadata.name.as_str()), (WatchEventType::Added, "w2"));
    admin.create(&NODES, None, &Node::new("w3")).await.unwrap();
    let third = next_event(&mut watch).await;
    assert_eq!((third.event_type, third.object.metadata.name.as_str()), (WatchEventType::Added, "w3"));
    drop(watch);
    server.stop().await;
}

#[tokio::test]
async fn a_node_watching_its_pods_sees_a_pod_bound_later_as_added() {
    let server = TestServer::start().await;
    let admin = server.admin();
    admin.create(&PODS, Some("default"), &pod("p1", None, "web")).await.unwrap();
    admin.create(&PODS, Some("other"), &pod("p0", Some("w1"), "web")).await.unwrap();
    let w1 = server.node("w1");
    let mut watch = w1.watch::<Value>(&PODS, None, None, &ListOptions::fields("spec.nodeName=w1")).await.unwrap();
    let e = next_event(&mut watch).await;
    assert_eq!((e.event_type, e.object["metadata"]["name"].as_str()), (WatchEventType::Added, Some("p0")));
    let _: Value = admin.patch(&PODS, Some("default"), "p1", &json!({"spec": {"nodeName": "w1"}})).await.unwrap();
    let e = next_event(&mut watch).await;
    assert_eq!((e.event_type, e.object["metadata"]["name"].as_str()), (WatchEventType::Added, Some("p1")));
    // A bound pod's delete is graceful: marked first (its agent stops it), gone at grace 0.
    admin.delete(&PODS, Some("default"), "p1").await.unwrap();
    let e = next_event(&mut watch).await;
    assert_eq!(e.event_type, WatchEventType::Modified);
    assert!(e.object["metadata"]["deletionTimestamp"].is_string() && e.object["metadata"]["deletionGracePeriodSeconds"] == 30, "{}", e.object);
    admin.delete_with(&PODS, Some("default"), "p1", &json!({"gracePeriodSeconds": 0})).await.unwrap();
    assert_eq!(next_event(&mut watch).await.event_type, WatchEventType::Deleted);
    drop(watch);
    server.stop().await;
}

#[tokio::test]
async fn a_watch_from_a_version_older_than_the_history_is_410() {
    let server = TestServer::start_with(SqliteStore::in_memory_with_history(5).unwrap()).await;
    let admin = server.admin();
    let first: Node = admin.create(&NODES, None, &Node::new("w1")).await.unwrap();
    for i in 0..10 {
        let _: Node = admin.patch(&NODES, None, "w1", &json!({"metadata": {"labels": {"i": i.to_string()}}})).await.unwrap();
    }
    let mut watch = admin.watch::<Node>(&NODES, None, Some(&first.metadata.resource_version), &ListOptions::default()).await.unwrap();
    let err = tokio::time::timeout(Duration::from_secs(5), watch.next()).await.unwrap().unwrap().unwrap_err();
    assert!(err.is_gone(), "{err}");
    assert_eq!(err.reason(), Some(&StatusReason::Expired));
    server.stop().await;
}

fn node_csr(cn: &str, org: &str) -> (String, KeyPair) {
    let key = KeyPair::generate().unwrap();
    let mut params = CertificateParams::new(Vec::<String>::new()).unwrap();
    params.distinguished_name.push(DnType::CommonName, cn);
    params.distinguished_name.push(DnType::OrganizationName, org);
    (params.serialize_request(&key).unwrap().pem().unwrap(), key)
}

fn csr_object(name: &str, csr_pem: &str) -> CertificateSigningRequest {
    let mut csr = CertificateSigningRequest { metadata: ObjectMeta::named(name), ..Default::default() };
    csr.spec.request = STANDARD.encode(csr_pem);
    csr.spec.signer_name = KUBELET_CLIENT_SIGNER.into();
    csr.spec.usages = vec!["digital signature".into(), "client auth".into()];
    csr
}

#[tokio::test]
async fn the_node_binary_is_served_to_admins_nodes_and_bootstrap_tokens_only() {
    let dir = tempfile::tempdir().unwrap();
    let binary = dir.path().join("clusterctl");
    // Larger than one streamed chunk, so that the chunks are seen to join up.
    let contents: String = (0..40_000).map(|i| format!("line {i}\n")).collect();
    std::fs::write(&binary, &contents).unwrap();
    let server = TestServer::start_serving(SqliteStore::in_memory().unwrap(), Some(binary)).await;
    let path = super::NODE_BINARY_PATH;
    let admin = server.admin();
    assert_eq!(admin.request_text("GET", path).await.unwrap(), contents);
    assert_eq!(server.as_user("system:node:w1", &["system:nodes"]).request_text("GET", path).await.unwrap(), contents);
    create_token(&admin, "abcdef", "0123456789abcdef", Time::from_system_time(std::time::SystemTime::now() + Duration::from_secs(3600))).await;
    assert_eq!(server.with_token("abcdef.0123456789abcdef").request_text("GET", path).await.unwrap(), contents);
    assert_eq!(code(server.with_token("abcdef.0123456789abcdeX").request_text("GET", path).await), 401);
    assert_eq!(code(server.anonymous().request_text("GET", path).await), 401);
    assert_eq!(code(server.as_user("jane", &["developers"]).request_text("GET", path).await), 403);
    server.stop().await;

    // A server given no binary has none to serve.
    let server = TestServer::start().await;
    assert_eq!(code(server.admin().request_text("GET", path).await), 404);
    server.stop().await;
}

async fn create_token(admin: &ApiClient, id: &str, secret: &str, expires: Time) {
    let token = Secret::bootstrap_token(id, secret, expires);
    let _: Secret = admin.create(&SECRETS, None, &token).await.unwrap();
}

#[tokio::test]
async fn a_bootstrap_token_gets_a_node_certificate_that_then_authenticates_as_the_node() {
    let server = TestServer::start().await;
    let admin = server.admin();
    create_token(&admin, "abcdef", "0123456789abcdef", Time::from_system_time(std::time::SystemTime::now() + Duration::from_secs(3600))).await;
    let joining = server.with_token("abcdef.0123456789abcdef");
    let (csr_pem, key) = node_csr("system:node:w9", "system:nodes");
    let signed: CertificateSigningRequest = joining.create(&CERTIFICATE_SIGNING_REQUESTS, None, &csr_object("node-csr-w9", &csr_pem)).await.unwrap();
    assert_eq!(signed.spec.username, "system:bootstrap:abcdef");
    assert!(signed.spec.groups.contains(&"system:bootstrappers".to_string()));
    assert_eq!(signed.status.conditions[0].condition_type, "Approved");
    let cert_pem = String::from_utf8(STANDARD.decode(signed.status.certificate.unwrap()).unwrap()).unwrap();

    // The token itself may do nothing else.
    assert_eq!(code(joining.list::<Node>(&NODES, None, &ListOptions::default()).await), 403);
    assert_eq!(code(joining.get::<Value>(&CERTIFICATE_SIGNING_REQUESTS, None, "node-csr-w9").await), 403);

    let node = ApiClient::new(&server.url, ClientAuth::Certificate { ca_pem: server.ca.pem.clone(), cert_pem, key_pem: key.serialize_pem() }).unwrap();
    let mut w9: Node = node.create(&NODES, None, &Node::new("w9")).await.unwrap();
    w9.status.conditions.push(ready("True"));
    node.replace_status(&NODES, None, "w9", &w9).await.unwrap();
    assert_eq!(code(node.create(&NODES, None, &Node::new("w8")).await), 403);

    // The node renews its own client certificate with itself, for its own name only.
    let (renewal, new_key) = node_csr("system:node:w9", "system:nodes");
    let renewed: CertificateSigningRequest = node.create(&CERTIFICATE_SIGNING_REQUESTS, None, &csr_object("node-csr-w9-renewal", &renewal)).await.unwrap();
    assert_eq!((renewed.spec.username.as_str(), renewed.status.conditions[0].condition_type.as_str()), ("system:node:w9", "Approved"));
    let renewed_pem = String::from_utf8(STANDARD.decode(renewed.status.certificate.unwrap()).unwrap()).unwrap();
    let renewed_node = ApiClient::new(&server.url, ClientAuth::Certificate { ca_pem: server.ca.pem.clone(), cert_pem: renewed_pem, key_pem: new_key.serialize_pem() }).unwrap();
    renewed_node.get::<Node>(&NODES, None, "w9").await.expect("the renewed certificate authenticates as the node");
    let (for_other, _) = node_csr("system:node:w8", "system:nodes");
    assert_eq!(code(node.create(&CERTIFICATE_SIGNING_REQUESTS, None, &csr_object("node-csr-w8", &for_other)).await), 403, "not for another node");
    server.stop().await;
}

/// Accepts the document `i-1:<name>` (signature `ok`) for node `<name>`, as instance `i-1`.
struct TestVerifier;

#[async_trait::async_trait]
impl super::csr::JoinVerifier for TestVerifier {
    async fn verify(&self, node: &str, document: &[u8], signature: &str) -> Result<String, String> {
        if signature != "ok" {
            return Err("the signature does not verify".into());
        }
        match std::str::from_utf8(document).ok().and_then(|d| d.strip_prefix("i-1:")) {
            Some(name) if name == node => Ok("i-1".into()),
            _ => Err(format!("instance i-1 is not named {node:?}")),
        }
    }
}

#[tokio::test]
async fn where_there_is_a_cloud_a_bootstrap_token_gets_only_the_name_its_machine_proves() {
    let server = TestServer::start_configured(SqliteStore::in_memory().unwrap(), |c| c.join_verifier = Some(Arc::new(TestVerifier))).await;
    let admin = server.admin();
    create_token(&admin, "abcdef", "0123456789abcdef", Time::from_system_time(std::time::SystemTime::now() + Duration::from_secs(3600))).await;
    let joining = server.with_token("abcdef.0123456789abcdef");
    let proved = |name: &str, csr_pem: &str, document: &str, signature: &str| {
        let mut csr = csr_object(&format!("node-csr-{name}"), csr_pem);
        csr.metadata.annotations.insert(crate::api::INSTANCE_IDENTITY_DOCUMENT_ANNOTATION.into(), STANDARD.encode(document));
        csr.metadata.annotations.insert(crate::api::INSTANCE_IDENTITY_SIGNATURE_ANNOTATION.into(), signature.into());
        csr
    };
    let (w9, _) = node_csr("system:node:w9", "system:nodes");
    for (csr, why) in [
        (csr_object("node-csr-w9", &w9), "carries no instance identity"),
        (proved("w9", &w9, "i-1:w9", "forged"), "does not verify"),
        (proved("w9", &w9, "i-1:w8", "ok"), "is not named \"w9\""),
    ] {
        let err = joining.create(&CERTIFICATE_SIGNING_REQUESTS, None, &csr).await.unwrap_err();
        assert_eq!(err.code(), Some(403), "{why}: {err}");
        assert!(err.to_string().contains(why), "{why}: {err}");
    }
    let signed: CertificateSigningRequest = joining.create(&CERTIFICATE_SIGNING_REQUESTS, None, &proved("w9", &w9, "i-1:w9", "ok")).await.unwrap();
    assert_eq!(signed.status.conditions[0].condition_type, "Approved");
    // A Node of that name registered by another machine stays its own; by this one, it may rejoin.
    let mut other = Node::new("w8");
    other.spec.provider_id = Some("aws:///us-east-1a/i-2".into());
    let _: Node = admin.create(&NODES, None, &other).await.unwrap();
    let (w8, _) = node_csr("system:node:w8", "system:nodes");
    let err = joining.create(&CERTIFICATE_SIGNING_REQUESTS, None, &proved("w8", &w8, "i-1:w8", "ok")).await.unwrap_err();
    assert!(err.code() == Some(403) && err.to_string().contains("registered by another machine (aws:///us-east-1a/i-2)"), "{err}");
    let mut mine = Node::new("w9");
    mine.spec.provider_id = Some("aws:///us-east-1a/i-1".into());
    let _: Node = admin.create(&NODES, None, &mine).await.unwrap();
    let mut again = proved("w9", &w9, "i-1:w9", "ok");
    again.metadata.name = "node-csr-w9-again".into();
    let _: CertificateSigningRequest = joining.create(&CERTIFICATE_SIGNING_REQUESTS, None, &again).await.unwrap();
    server.stop().await;
}

#[tokio::test]
async fn an_expired_or_unknown_bootstrap_token_is_401() {
    let server = TestServer::start().await;
    let admin = server.admin();
    create_token(&admin, "abcdef", "0123456789abcdef", Time::from_system_time(std::time::SystemTime::now() - Duration::from_secs(1))).await;
    let (csr_pem, _) = node_csr("system:node:w9", "system:nodes");
    let request = csr_object("node-csr-w9", &csr_pem);
    for token in ["abcdef.0123456789abcdef", "abcdef.0123456789abcdeX", "zzzzzz.0123456789abcdef", "not-a-token"] {
        let err = server.with_token(token).create(&CERTIFICATE_SIGNING_REQUESTS, None, &request).await.unwrap_err();
        assert_eq!(err.code(), Some(401), "{token}: {err}");
    }
    server.stop().await;
}

#[tokio::test]
async fn a_bootstrap_token_cannot_get_a_certificate_outside_system_nodes() {
    let server = TestServer::start().await;
    let admin = server.admin();
    create_token(&admin, "abcdef", "0123456789abcdef", Time::from_system_time(std::time::SystemTime::now() + Duration::from_secs(3600))).await;
    let joining = server.with_token("abcdef.0123456789abcdef");
    for (cn, org) in [("system:node:w9", "system:masters"), ("admin", "system:nodes"), ("system:node:W9", "system:nodes")] {
        let (csr_pem, _) = node_csr(cn, org);
        let err = joining.create(&CERTIFICATE_SIGNING_REQUESTS, None, &csr_object("c", &csr_pem)).await.unwrap_err();
        assert_eq!(err.code(), Some(422), "{cn}/{org}: {err}");
    }
    let (csr_pem, _) = node_csr("system:node:w9", "system:nodes");
    let mut other_signer = csr_object("c", &csr_pem);
    other_signer.spec.signer_name = "kubernetes.io/kube-apiserver-client".into();
    assert_eq!(code(joining.create(&CERTIFICATE_SIGNING_REQUESTS, None, &other_signer).await), 403);
    server.stop().await;
}

#[tokio::test]
async fn merge_patch_changes_what_it_names_and_keeps_the_rest() {
    let server = TestServer::start().await;
    let admin = server.admin();
    admin.create(&PODS, Some("default"), &pod("p1", None, "web")).await.unwrap();
    let patched: Value = admin.patch(&PODS, Some("default"), "p1", &json!({"metadata": {"labels": {"tier": "front", "app": null}}})).await.unwrap();
    assert_eq!(patched["metadata"]["labels"], json!({"tier": "front"}));
    assert_eq!(patched["spec"]["containers"][0]["image"], "busybox");
    let patched: Value = admin.patch_status(&PODS, Some("default"), "p1", &json!({"status": {"phase": "Pending"}, "spec": {"nodeName": "x"}})).await.unwrap();
    assert_eq!(patched["status"]["phase"], "Pending");
    assert!(patched["spec"].get("nodeName").is_none(), "a status patch must not touch spec");
    let stale = json!({"metadata": {"resourceVersion": "1"}, "spec": {"nodeName": "w1"}});
    assert_eq!(code(admin.patch::<Value>(&PODS, Some("default"), "p1", &stale).await), 409);
    let raw = admin.request(Method::PATCH, "/api/v1/namespaces/default/pods/p1", Some(&json!({}))).await.unwrap_err();
    assert_eq!(raw.code(), Some(415));
    server.stop().await;
}

/// kubectl's patches through the server: strategic merge (its default), JSON patch (`rollout
/// undo`, `patch --type json`), on the object, its status and its scale.
#[tokio::test]
async fn strategic_merge_and_json_patches_apply_on_objects_status_and_scale() {
    const SMP: &str = "application/strategic-merge-patch+json";
    const JSON_PATCH: &str = "application/json-patch+json";
    let server = TestServer::start().await;
    let admin = server.admin();
    let deployment = json!({
        "apiVersion": "apps/v1", "kind": "Deployment", "metadata": {"name": "web", "namespace": "default"},
        "spec": {"replicas": 1, "selector": {"matchLabels": {"app": "web"}}, "template": {"metadata": {"labels": {"app": "web"}}, "spec": {
            "containers": [{"name": "app", "image": "app:1", "env": [{"name": "A", "value": "1"}]}, {"name": "side", "image": "side:1"}]}}}
    });
    admin.create(&DEPLOYMENTS, Some("default"), &deployment).await.unwrap();
    let path = "/apis/apps/v1/namespaces/default/deployments/web";
    // `kubectl set image deployment/web app=app:2` sends this.
    let patched = admin.patch_path(path, SMP, &json!({"spec": {"template": {"spec": {"containers": [{"name": "app", "image": "app:2"}]}}}})).await.unwrap();
    let containers = &patched["spec"]["template"]["spec"]["containers"];
    assert_eq!((containers[0]["image"].as_str(), containers[1]["image"].as_str()), (Some("app:2"), Some("side:1")), "{containers}");
    assert_eq!(containers[0]["env"][0]["name"], "A");
    // JSON patch with a precondition, and one whose test fails.
    let rv = patched["metadata"]["resourceVersion"].as_str().unwrap().to_string();
    let ops = json!([{"op": "test", "path": "/metadata/resourceVersion", "value": rv}, {"op": "replace", "path": "/spec/replicas", "value": 3}]);
    let patched = admin.patch_path(path, JSON_PATCH, &ops).await.unwrap();
    assert_eq!(patched["spec"]["replicas"], 3);
    assert_eq!(code(admin.patch_path(path, JSON_PATCH, &ops).await), 422, "the version moved on: the test op fails");
    // A patch whose result breaks the schema is refused with the field's path, and nothing changes.
    let err = admin.patch_path(path, JSON_PATCH, &json!([{"op": "replace", "path": "/spec/replicas", "value": "three"}])).await.unwrap_err();
    assert_eq!(err.code(), Some(422));
    assert!(err.to_string().contains("spec.replicas"), "{err}");
    let err = admin.patch_path(path, SMP, &json!({"spec": {"template": {"spec": {"containers": [{"image": "keyless"}]}}}})).await.unwrap_err();
    assert_eq!(err.code(), Some(422), "{err}");
    assert_eq!(code(admin.patch_path(path, SMP, &json!([1])).await), 400);
    assert_eq!(code(admin.patch_path(path, "application/apply-patch+yaml", &json!({})).await), 415);
    let stored: Value = admin.get(&DEPLOYMENTS, Some("default"), "web").await.unwrap();
    assert_eq!((stored["spec"]["replicas"].as_i64(), stored["metadata"]["resourceVersion"].as_str()), (Some(3), patched["metadata"]["resourceVersion"].as_str()));
    // The status and scale subresources take them too.
    let status = admin.patch_path(&format!("{path}/status"), SMP, &json!({"status": {"conditions": [{"type": "Available", "status": "True"}]}})).await.unwrap();
    assert_eq!(status["status"]["conditions"][0]["type"], "Available");
    let scale = admin.patch_path(&format!("{path}/scale"), JSON_PATCH, &json!([{"op": "replace", "path": "/spec/replicas", "value": 5}])).await.unwrap();
    assert_eq!(scale["spec"]["replicas"], 5);
    let scale = admin.patch_path(&format!("{path}/scale"), SMP, &json!({"spec": {"replicas": 2}})).await.unwrap();
    assert_eq!(scale["spec"]["replicas"], 2);
    server.stop().await;
}

/// `dryRun=All` (kubectl's `--dry-run=server`): each write is checked and answered as the real one
/// would be, and nothing is stored.
#[tokio::test]
async fn dry_run_writes_answer_as_the_real_ones_and_store_nothing() {
    let server = TestServer::start().await;
    let admin = server.admin();
    let path = "/api/v1/namespaces/default/pods";
    let created = admin.request(Method::POST, &format!("{path}?dryRun=All"), Some(&pod("p1", None, "web"))).await.unwrap();
    assert_eq!(created["metadata"]["name"], "p1");
    assert!(created["metadata"]["uid"].is_string(), "filled in as for a real create");
    assert_eq!(code(admin.get::<Value>(&PODS, Some("default"), "p1").await), 404, "nothing stored");
    let mut bad = pod("p2", None, "web");
    bad["spec"]["containers"] = json!("x");
    assert_eq!(code(admin.request(Method::POST, &format!("{path}?dryRun=All"), Some(&bad)).await), 422, "validated as for real");
    assert_eq!(code(admin.request(Method::POST, &format!("{path}?dryRun=Yes"), Some(&pod("p1", None, "web"))).await), 400);

    let stored: Value = admin.create(&PODS, Some("default"), &pod("p1", None, "web")).await.unwrap();
    assert_eq!(code(admin.request(Method::POST, &format!("{path}?dryRun=All"), Some(&pod("p1", None, "web"))).await), 409, "an existing name conflicts");
    let mut changed = stored.clone();
    changed["metadata"]["labels"]["tier"] = json!("front");
    let updated = admin.request(Method::PUT, &format!("{path}/p1?dryRun=All"), Some(&changed)).await.unwrap();
    assert_eq!(updated["metadata"]["labels"]["tier"], "front");
    let patched = admin.patch_path(&format!("{path}/p1?dryRun=All"), "application/merge-patch+json", &json!({"metadata": {"labels": {"x": "y"}}})).await.unwrap();
    assert_eq!(patched["metadata"]["labels"]["x"], "y");
    admin.request(Method::DELETE, &format!("{path}/p1?dryRun=All"), None).await.unwrap();
    let now: Value = admin.get(&PODS, Some("default"), "p1").await.unwrap();
    assert_eq!(now["metadata"]["labels"], stored["metadata"]["labels"], "neither the update nor the patch was stored");
    assert_eq!(now["metadata"]["resourceVersion"], stored["metadata"]["resourceVersion"], "and the pod was not deleted");
    server.stop().await;
}

#[tokio::test]
async fn label_and_field_selectors_filter_lists_across_namespaces() {
    let server = TestServer::start().await;
    let admin = server.admin();
    admin.create(&PODS, Some("default"), &pod("a", Some("w1"), "web")).await.unwrap();
    admin.create(&PODS, Some("default"), &pod("b", Some("w2"), "web")).await.unwrap();
    admin.create(&PODS, Some("other"), &pod("c", Some("w1"), "db")).await.unwrap();
    let names = |l: List<Value>| l.items.iter().map(|p| p["metadata"]["name"].as_str().unwrap().to_string()).collect::<Vec<_>>();
    assert_eq!(names(admin.list(&PODS, None, &ListOptions::default()).await.unwrap()), vec!["a", "b", "c"]);
    assert_eq!(names(admin.list(&PODS, Some("default"), &ListOptions::default()).await.unwrap()), vec!["a", "b"]);
    assert_eq!(names(admin.list(&PODS, None, &ListOptions::fields("spec.nodeName=w1")).await.unwrap()), vec!["a", "c"]);
    assert_eq!(names(admin.list(&PODS, None, &ListOptions::labels("app=web")).await.unwrap()), vec!["a", "b"]);
    let both = ListOptions { label_selector: Some("app=web".into()), field_selector: Some("spec.nodeName=w1".into()), accept: None };
    assert_eq!(names(admin.list(&PODS, None, &both).await.unwrap()), vec!["a"]);
    assert_eq!(code(admin.list::<Value>(&PODS, None, &ListOptions::fields("spec.nodeName")).await), 400);
    server.stop().await;
}

#[tokio::test]
async fn create_fills_namespace_and_generated_names_and_refuses_mismatches() {
    let server = TestServer::start().await;
    let admin = server.admin();
    let made: Value = admin.create(&PODS, Some("default"), &json!({"metadata": {"generateName": "web-"}, "spec": {}})).await.unwrap();
    let name = made["metadata"]["name"].as_str().unwrap();
    assert!(name.starts_with("web-") && name.len() == 9, "{name}");
    assert_eq!(made["metadata"]["namespace"], "default");
    assert_eq!((made["apiVersion"].as_str(), made["kind"].as_str()), (Some("v1"), Some("Pod")));
    let mismatch = json!({"metadata": {"name": "x", "namespace": "other"}});
    assert_eq!(code(admin.create_value("/api/v1/namespaces/default/pods", &mismatch).await), 400);
    let wrong_kind = json!({"kind": "Service", "metadata": {"name": "x"}});
    assert_eq!(code(admin.create_value("/api/v1/namespaces/default/pods", &wrong_kind).await), 400);
    assert_eq!(code(admin.create_value("/api/v1/namespaces/default/pods", &json!({"metadata": {"name": "Bad_Name"}})).await), 422);
    assert_eq!(code(admin.create_value("/api/v1/namespaces/default/pods", &json!({"metadata": {}})).await), 422);
    assert_eq!(code(admin.get_value("/api/v1/widgets").await), 404);
    server.stop().await;
}

#[tokio::test]
async fn delete_returns_the_last_state_and_a_second_delete_is_404() {
    let server = TestServer::start().await;
    let admin = server.admin();
    admin.create(&NODES, None, &Node::new("w1")).await.unwrap();
    let gone = admin.delete_value("/api/v1/nodes/w1").await.unwrap();
    assert_eq!(gone["metadata"]["name"], "w1");
    assert_eq!(code(admin.delete(&NODES, None, "w1").await), 404);
    server.stop().await;
}

/// A pod a node runs is deleted gracefully: marked with `deletionTimestamp` and its grace period
/// (the request's, else its `terminationGracePeriodSeconds`), which a second delete may shorten but
/// not lengthen; it goes at grace 0 (its agent's delete, with the uid as precondition). An unbound
/// pod goes at once.
#[tokio::test]
async fn a_running_pod_is_deleted_gracefully_and_goes_at_grace_zero() {
    let server = TestServer::start().await;
    let admin = server.admin();
    let mut bound = pod("web-1", Some("w1"), "web");
    bound["spec"]["terminationGracePeriodSeconds"] = json!(5);
    admin.create_value("/api/v1/namespaces/default/pods", &bound).await.unwrap();
    admin.delete(&PODS, Some("default"), "web-1").await.unwrap();
    let marked = admin.get_value("/api/v1/namespaces/default/pods/web-1").await.unwrap();
    assert_eq!(marked["metadata"]["deletionGracePeriodSeconds"], 5);
    let at = Time::parse(marked["metadata"]["deletionTimestamp"].as_str().unwrap()).unwrap();
    assert!((at.unix_seconds() - Time::now().unix_seconds() - 5).abs() <= 1, "now + grace: {at}");
    admin.delete_with(&PODS, Some("default"), "web-1", &json!({"gracePeriodSeconds": 60})).await.unwrap();
    assert_eq!(admin.get_value("/api/v1/namespaces/default/pods/web-1").await.unwrap()["metadata"]["deletionGracePeriodSeconds"], 5, "never longer");
    // An update keeps the server's marks.
    let mut changed = admin.get_value("/api/v1/namespaces/default/pods/web-1").await.unwrap();
    changed["metadata"]["deletionTimestamp"] = Value::Null;
    changed["metadata"]["labels"]["x"] = json!("y");
    let written = admin.replace_value("/api/v1/namespaces/default/pods/web-1", &changed).await.unwrap();
    assert_eq!(written["metadata"]["deletionTimestamp"], marked["metadata"]["deletionTimestamp"]);
    let wrong_uid = json!({"gracePeriodSeconds": 0, "preconditions": {"uid": "not-this-one"}});
    assert_eq!(code(admin.delete_with(&PODS, Some("default"), "web-1", &wrong_uid).await), 409);
    let right_uid = json!({"gracePeriodSeconds": 0, "preconditions": {"uid": marked["metadata"]["uid"]}});
    // The node the pod is bound to ends it (its agent, once the containers are stopped); no other.
    assert_eq!(code(server.node("w2").delete_with(&PODS, Some("default"), "web-1", &right_uid).await), 403);
    server.node("w1").delete_with(&PODS, Some("default"), "web-1", &right_uid).await.unwrap();
    assert_eq!(code(admin.get::<Value>(&PODS, Some("default"), "web-1").await), 404);
    admin.create_value("/api/v1/namespaces/default/pods", &pod("pending", None, "web")).await.unwrap();
    admin.delete(&PODS, Some("default"), "pending").await.unwrap();
    assert_eq!(code(admin.get::<Value>(&PODS, Some("default"), "pending").await), 404, "an unbound pod goes at once");
    server.stop().await;
}

/// `pods/{name}/eviction` (what `kubectl drain` posts when discovery lists it): the pod is deleted
/// as a delete would, with the eviction's `deleteOptions`; answered 201 `Success`. A node may not
/// evict, a mismatched name is 400, and only POST is served.
#[tokio::test]
async fn an_eviction_deletes_the_pod_as_a_delete_with_its_options_would() {
    let server = TestServer::start().await;
    let admin = server.admin();
    let mut bound = pod("web-1", Some("w1"), "web");
    bound["spec"]["terminationGracePeriodSeconds"] = json!(30);
    admin.create_value("/api/v1/namespaces/default/pods", &bound).await.unwrap();
    let path = "/api/v1/namespaces/default/pods/web-1/eviction";
    let eviction = |name: &str| json!({"apiVersion": "policy/v1", "kind": "Eviction", "metadata": {"name": name, "namespace": "default"}, "deleteOptions": {"gracePeriodSeconds": 7}});
    assert_eq!(code(admin.request(Method::POST, path, Some(&eviction("other"))).await), 400);
    assert_eq!(code(server.node("w1").request(Method::POST, path, Some(&eviction("web-1"))).await), 403);
    assert_eq!(code(admin.request(Method::GET, path, None).await), 405);
    let answer = admin.request(Method::POST, path, Some(&eviction("web-1"))).await.unwrap();
    assert_eq!((answer["kind"].as_str(), answer["status"].as_str()), (Some("Status"), Some("Success")), "{answer}");
    let marked = admin.get_value("/api/v1/namespaces/default/pods/web-1").await.unwrap();
    assert_eq!(marked["metadata"]["deletionGracePeriodSeconds"], 7, "the eviction's grace: {marked}");
    admin.create_value("/api/v1/namespaces/default/pods", &pod("pending", None, "web")).await.unwrap();
    let v1beta1 = json!({"apiVersion": "policy/v1beta1", "kind": "Eviction", "metadata": {"name": "pending"}});
    admin.request(Method::POST, "/api/v1/namespaces/default/pods/pending/eviction", Some(&v1beta1)).await.unwrap();
    assert_eq!(code(admin.get::<Value>(&PODS, Some("default"), "pending").await), 404, "an unbound pod goes at once");
    assert_eq!(code(admin.request(Method::POST, "/api/v1/namespaces/default/pods/gone/eviction", Some(&eviction("gone"))).await), 404);
    server.stop().await;
}

/// `events.k8s.io/v1` serves the core Events, converted, to the same readers: list (also
/// across namespaces), get, and watch; writes there are 405; a node may not list them.
#[tokio::test]
async fn events_are_listed_and_watched_through_events_k8s_io_too() {
    let server = TestServer::start().await;
    let admin = server.admin();
    let event = json!({"apiVersion": "v1", "kind": "Event", "metadata": {"name": "web.1", "namespace": "default"},
        "involvedObject": {"kind": "Pod", "name": "web", "namespace": "default"}, "reason": "Scheduled",
        "message": "Successfully assigned default/web to w1", "type": "Normal", "source": {"component": "default-scheduler"},
        "firstTimestamp": "2026-12-06T00:00:00Z", "lastTimestamp": "2026-12-06T00:00:00Z", "count": 1});
    admin.create_value("/api/v1/namespaces/default/events", &event).await.unwrap();
    for path in ["/apis/events.k8s.io/v1/events", "/apis/events.k8s.io/v1/namespaces/default/events"] {
        let list = admin.get_value(path).await.unwrap();
        assert_eq!((list["apiVersion"].as_str(), list["kind"].as_str()), (Some("events.k8s.io/v1"), Some("EventList")), "{list}");
        assert_eq!(list["items"][0]["note"], "Successfully assigned default/web to w1");
        assert_eq!(list["items"][0]["regarding"]["name"], "web");
    }
    let one = admin.get_value("/apis/events.k8s.io/v1/namespaces/default/events/web.1").await.unwrap();
    assert_eq!((one["apiVersion"].as_str(), one["deprecatedCount"].as_i64()), (Some("events.k8s.io/v1"), Some(1)), "{one}");
    assert_eq!(code(admin.get_value("/apis/events.k8s.io/v1/namespaces/default/events/nope").await), 404);
    assert_eq!(code(admin.create_value("/apis/events.k8s.io/v1/namespaces/default/events", &event).await), 405);
    assert_eq!(code(server.node("w1").get_value("/apis/events.k8s.io/v1/events").await), 403);
    let mut stream = admin.get_stream("/apis/events.k8s.io/v1/namespaces/default/events?watch=true").await.unwrap();
    let mut pending = String::new();
    let first = watch_lines(&mut stream, &mut pending, 1).await;
    assert_eq!((first[0]["type"].as_str(), first[0]["object"]["apiVersion"].as_str()), (Some("ADDED"), Some("events.k8s.io/v1")), "{}", first[0]);
    let discovered = admin.get_value("/apis/events.k8s.io/v1").await.unwrap();
    assert_eq!(discovered["resources"][0]["verbs"], json!(["get", "list", "watch"]));
    let groups = admin.get_value("/apis").await.unwrap();
    assert!(groups["groups"].as_array().unwrap().iter().any(|g| g["name"] == "events.k8s.io"), "{groups}");
    server.stop().await;
}

/// A Node's pod range is given once (from empty) and never changed: 422 naming the field.
#[tokio::test]
async fn a_nodes_pod_range_may_be_set_once_and_not_changed() {
    let server = TestServer::start().await;
    let admin = server.admin();
    admin.create(&NODES, None, &Node::new("w1")).await.unwrap();
    let set = json!({"spec": {"podCIDR": "100.64.3.0/24", "podCIDRs": ["100.64.3.0/24"]}});
    let node: Node = admin.patch(&NODES, None, "w1", &set).await.unwrap();
    assert_eq!(node.spec.pod_cidr.as_deref(), Some("100.64.3.0/24"));
    let other = json!({"spec": {"podCIDR": "100.64.4.0/24", "podCIDRs": ["100.64.4.0/24"]}});
    let fields = invalid_causes(admin.patch::<Value>(&NODES, None, "w1", &other).await);
    assert_eq!(fields.iter().map(|(f, _)| f.as_str()).collect::<Vec<_>>(), ["spec.podCIDR", "spec.podCIDRs"], "{fields:?}");
    let unset = json!({"spec": {"podCIDR": null}});
    assert_eq!(code(admin.patch::<Value>(&NODES, None, "w1", &unset).await), 422, "not taken away either");
    let same = json!({"metadata": {"labels": {"x": "y"}}, "spec": {"podCIDR": "100.64.3.0/24"}});
    admin.patch::<Value>(&NODES, None, "w1", &same).await.unwrap();
    server.stop().await;
}

/// 500 clients that never finish a request's head (slowloris) lose their connections after
/// `HEADER_READ_TIMEOUT`, while complete requests on other connections, a raw one and the admin's
/// lists, are answered all along.
#[tokio::test]
async fn five_hundred_connections_that_never_finish_their_request_heads_are_closed_while_others_are_answered() {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    const SLOW: usize = 500;
    let server = TestServer::start().await;
    let connector = tls_connector(&server);
    let address = server.url.trim_start_matches("https://").to_string();
    let connect = || async {
        let tcp = tokio::net::TcpStream::connect(&address).await.unwrap();
        connector.connect(rustls_pki_types::ServerName::try_from("127.0.0.1").unwrap(), tcp).await.unwrap()
    };
    let started = std::time::Instant::now();
    let mut slow = Vec::with_capacity(SLOW);
    for _ in 0..SLOW {
        let mut c = connect().await;
        c.write_all(b"GET /healthz HTTP/1.1\r\nHost: x\r\n").await.unwrap();
        slow.push(c);
    }
    let opened = started.elapsed();
    let mut whole = connect().await;
    whole.write_all(b"GET /healthz HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n").await.unwrap();
    let mut answer = String::new();
    whole.read_to_string(&mut answer).await.unwrap();
    assert!(answer.starts_with("HTTP/1.1 200"), "{answer}");
    // The admin's lists keep answering, each within a second, while the slow ones hang.
    let admin = server.admin();
    let mut slowest = Duration::ZERO;
    while started.elapsed() < super::HEADER_READ_TIMEOUT - Duration::from_secs(5) {
        let asked = std::time::Instant::now();
        admin.list::<Value>(&NODES, None, &Default::default()).await.unwrap();
        slowest = slowest.max(asked.elapsed());
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
    assert!(slowest < Duration::from_secs(1), "a list took {slowest:?} with {SLOW} slow clients holding connections");
    // Every slow connection is closed by the server within the timeout (counted from its own start).
    let closed = futures::future::join_all(slow.into_iter().map(|mut c| async move {
        let mut rest = Vec::new();
        tokio::time::timeout(super::HEADER_READ_TIMEOUT + Duration::from_secs(10), c.read_to_end(&mut rest)).await.is_ok()
    }))
    .await;
    let open = closed.iter().filter(|c| !**c).count();
    assert_eq!(open, 0, "{open} of {SLOW} slow connections still open {:?} after the first was opened", started.elapsed());
    assert!(started.elapsed() >= super::HEADER_READ_TIMEOUT - Duration::from_secs(1), "closed by the timeout, not at once: {:?}", started.elapsed());
    assert!(started.elapsed() <= opened + super::HEADER_READ_TIMEOUT + Duration::from_secs(10), "all closed within the timeout of the last: {:?}", started.elapsed());
    eprintln!("{SLOW} slow connections opened in {opened:?}, all closed after {:?}; slowest list meanwhile {slowest:?}", started.elapsed());
    server.stop().await;
}

/// A deleted Node's certificates stop working: the one that registered it is refused with 401
/// from the deletion on, while one issued afterwards (a machine joining again under the name)
/// registers the Node again, and other nodes are not touched.
#[tokio::test]
async fn a_deleted_nodes_certificate_is_refused_and_a_later_one_registers_again() {
    let server = TestServer::start().await;
    let old = server.node_issued_now("w1");
    let other = server.node_issued_now("w2");
    old.create(&NODES, None, &Node::new("w1")).await.unwrap();
    other.create(&NODES, None, &Node::new("w2")).await.unwrap();
    old.get::<Node>(&NODES, None, "w1").await.unwrap();
    server.admin().delete(&NODES, None, "w1").await.unwrap();
    let err = old.get::<Value>(&NODES, None, "w2").await.unwrap_err();
    assert_eq!(err.code(), Some(401), "{err}");
    assert!(err.to_string().contains("revoked"), "{err}");
    let err = old.create(&NODES, None, &Node::new("w1")).await.unwrap_err();
    assert_eq!(err.code(), Some(401), "the old certificate cannot register the node again: {err}");
    other.get::<Node>(&NODES, None, "w2").await.expect("another node's certificate still works");
    // A machine that joins under the name later gets a certificate issued after the old Node.
    tokio::time::sleep(Duration::from_millis(1100)).await;
    let new = server.node_issued_now("w1");
    new.create(&NODES, None, &Node::new("w1")).await.expect("a newer certificate registers the node");
    new.get::<Node>(&NODES, None, "w1").await.unwrap();
    assert_eq!(old.get::<Value>(&NODES, None, "w1").await.unwrap_err().code(), Some(401), "the old one stays refused");
    server.stop().await;
}

/// `POST /clusterctl/v1/revocations`: a master refuses a user's certificates issued up to a time
/// (what `clusterctl rotate-certs` does for `admin`); nobody else may, and not the certificate
/// the request is made with.
#[tokio::test]
async fn masters_revoke_a_users_certificates_and_nobody_else_can() {
    let server = TestServer::start().await;
    let admin = server.admin();
    let jane = server.as_user("jane", &["developers"]);
    assert_eq!(code(jane.list::<Node>(&NODES, None, &ListOptions::default()).await), 403, "jane is known, not allowed");
    let now = Time::now();
    let path = super::REVOCATIONS_PATH;
    assert_eq!(code(jane.create_value(path, &json!({"user": "admin", "issuedUpTo": now})).await), 403);
    assert_eq!(code(admin.create_value(path, &json!({"user": "jane"})).await), 400);
    admin.create_value(path, &json!({"user": "jane", "issuedUpTo": now})).await.unwrap();
    let err = jane.list::<Node>(&NODES, None, &ListOptions::default()).await.unwrap_err();
    assert_eq!(err.code(), Some(401), "{err}");
    assert!(err.to_string().contains("rotate-certs"), "{err}");
    assert_eq!(code(admin.create_value(path, &json!({"user": "admin", "issuedUpTo": now})).await), 400, "not the certificate the request is made with");
    admin.list::<Node>(&NODES, None, &ListOptions::default()).await.expect("the admin still works");
    server.stop().await;
}

/// `limit` and `continue`: pages in key order with `remainingItemCount`, after the selectors;
/// a token the server did not make is 400.
#[tokio::test]
async fn lists_come_in_pages_with_limit_and_continue() {
    let server = TestServer::start().await;
    let admin = server.admin();
    for i in 0..5 {
        admin.create_value("/api/v1/namespaces/default/pods", &pod(&format!("p{i}"), None, if i == 2 { "other" } else { "web" })).await.unwrap();
    }
    let mut names = Vec::new();
    let mut path = "/api/v1/namespaces/default/pods?limit=2&labelSelector=app%3Dweb".to_string();
    let mut remaining = Vec::new();
    loop {
        let page = admin.get_value(&path).await.unwrap();
        names.extend(page["items"].as_array().unwrap().iter().map(|p| p["metadata"]["name"].as_str().unwrap().to_string()));
        match page["metadata"]["continue"].as_str() {
            Some(token) => {
                remaining.push(page["metadata"]["remainingItemCount"].as_i64().unwrap());
                path = format!("/api/v1/namespaces/default/pods?limit=2&labelSelector=app%3Dweb&continue={token}");
            }
            None => break,
        }
    }
    assert_eq!(names, ["p0", "p1", "p3", "p4"]);
    assert_eq!(remaining, [2]);
    assert_eq!(code(admin.get_value("/api/v1/namespaces/default/pods?continue=bogus").await), 400);
    server.stop().await;
}

/// `resourceVersion` on list as Kubernetes reads it: `0` and unset the newest, `NotOlderThan`
/// waits for a revision the store has not reached and then answers 504 `ResourceVersionTooLarge`,
/// `Exact` the snapshot at that revision (410 once compacted); `continue` pages read the first
/// page's snapshot; bad combinations are 422 on `ListOptions`.
#[tokio::test]
async fn lists_read_the_revision_they_ask_for() {
    let server = TestServer::start().await;
    let admin = server.admin();
    let pods = "/api/v1/namespaces/default/pods";
    for i in 0..3 {
        admin.create_value(pods, &pod(&format!("p{i}"), None, "web")).await.unwrap();
    }
    let first = admin.get_value(&format!("{pods}?limit=2")).await.unwrap();
    let then: u64 = first["metadata"]["resourceVersion"].as_str().unwrap().parse().unwrap();
    let token = first["metadata"]["continue"].as_str().unwrap().to_string();
    // Changed after the first page: p2 deleted, p3 made. The next page still shows p2 and not p3.
    admin.delete(&PODS, Some("default"), "p2").await.unwrap();
    admin.create_value(pods, &pod("p3", None, "web")).await.unwrap();
    let next = admin.get_value(&format!("{pods}?limit=2&continue={token}")).await.unwrap();
    let names = |list: &Value| list["items"].as_array().unwrap().iter().map(|p| p["metadata"]["name"].as_str().unwrap().to_string()).collect::<Vec<_>>();
    assert_eq!(names(&next), ["p2"], "the first page's snapshot");
    assert_eq!(next["metadata"]["resourceVersion"], first["metadata"]["resourceVersion"]);
    let exact = admin.get_value(&format!("{pods}?resourceVersion={then}&resourceVersionMatch=Exact")).await.unwrap();
    assert_eq!(names(&exact), ["p0", "p1", "p2"]);
    for any in ["", "?resourceVersion=0", &format!("?resourceVersion={then}&resourceVersionMatch=NotOlderThan"), &format!("?resourceVersion={then}")] {
        let list = admin.get_value(&format!("{pods}{any}")).await.unwrap();
        assert_eq!(names(&list), ["p0", "p1", "p3"], "{any}: the newest");
    }
    let now: u64 = admin.get_value(pods).await.unwrap()["metadata"]["resourceVersion"].as_str().unwrap().parse().unwrap();
    let started = std::time::Instant::now();
    let ahead = admin.get_value(&format!("{pods}?resourceVersion={}&resourceVersionMatch=NotOlderThan", now + 100)).await.unwrap_err();
    assert_eq!(ahead.code(), Some(504), "{ahead}");
    assert!(ahead.to_string().contains("Too large resource version"), "{ahead}");
    assert!(started.elapsed() >= Duration::from_secs(2), "it waits for the store first");
    // A revision reached while the list waits is served.
    let waiting = {
        let admin = admin.clone();
        tokio::spawn(async move { admin.get_value(&format!("/api/v1/namespaces/default/pods?resourceVersion={}", now + 1)).await })
    };
    tokio::time::sleep(Duration::from_millis(300)).await;
    admin.create_value(pods, &pod("p4", None, "web")).await.unwrap();
    assert_eq!(names(&waiting.await.unwrap().unwrap()).len(), 4);
    for bad in ["resourceVersionMatch=Exact", "resourceVersion=0&resourceVersionMatch=Exact", "resourceVersion=1&resourceVersionMatch=Newest"] {
        let e = admin.get_value(&format!("{pods}?{bad}")).await.unwrap_err();
        assert_eq!(e.code(), Some(422), "{bad}: {e}");
    }
    assert_eq!(code(admin.get_value(&format!("{pods}?resourceVersion=abc")).await), 400);
    assert_eq!(code(admin.get_value(&format!("{pods}?limit=2&continue={token}&resourceVersion={then}")).await), 400);
    server.stop().await;
}

/// `deletecollection` deletes what the selector matches, each as its own delete would.
#[tokio::test]
async fn delete_collection_deletes_what_the_selector_matches() {
    let server = TestServer::start().await;
    let admin = server.admin();
    for (name, app) in [("a", "web"), ("b", "web"), ("c", "db")] {
        admin.create_value("/api/v1/namespaces/default/pods", &pod(name, None, app)).await.unwrap();
    }
    let status = admin.delete_value("/api/v1/namespaces/default/pods?labelSelector=app%3Dweb").await.unwrap();
    assert_eq!(status["status"], "Success");
    let left = admin.get_value("/api/v1/namespaces/default/pods").await.unwrap();
    assert_eq!(left["items"].as_array().unwrap().iter().map(|p| p["metadata"]["name"].as_str().unwrap()).collect::<Vec<_>>(), ["c"]);
    assert_eq!(code(server.node("w1").delete_value("/api/v1/namespaces/default/pods").await), 403, "nodes may not");
    server.stop().await;
}

/// An object with finalizers stays, marked, until the last one is removed; then it goes.
#[tokio::test]
async fn an_object_with_finalizers_goes_when_the_last_one_is_removed() {
    let server = TestServer::start().await;
    let admin = server.admin();
    let service = json!({"metadata": {"name": "held", "finalizers": ["example.com/a", "example.com/b"]}, "spec": {"ports": [{"port": 80}]}});
    admin.create_value("/api/v1/namespaces/default/services", &service).await.unwrap();
    admin.delete_value("/api/v1/namespaces/default/services/held").await.unwrap();
    let marked = admin.get_value("/api/v1/namespaces/default/services/held").await.unwrap();
    assert!(marked["metadata"]["deletionTimestamp"].is_string(), "{marked}");
    assert_eq!(marked["metadata"]["deletionGracePeriodSeconds"], 0);
    let path = "/api/v1/namespaces/default/services/held";
    let _: Value = admin.patch_path(path, "application/json-patch+json", &json!([{"op": "remove", "path": "/metadata/finalizers/0"}])).await.unwrap();
    assert_eq!(admin.get_value(path).await.unwrap()["metadata"]["finalizers"], json!(["example.com/b"]), "one left: it stays");
    let _: Value = admin.patch_path(path, "application/merge-patch+json", &json!({"metadata": {"finalizers": null}})).await.unwrap();
    assert_eq!(code(admin.get::<Value>(&SERVICES, Some("default"), "held").await), 404);
    server.stop().await;
}

/// `propagationPolicy: Orphan` (kubectl's `--cascade=orphan`, 1.20's `--cascade=false`) keeps the
/// dependents and takes the deleted owner out of their owner references; the old
/// `orphanDependents` says the same; an unknown policy is refused and deletes nothing.
#[tokio::test]
async fn an_orphaning_delete_keeps_the_dependents_without_their_owner_reference() {
    let server = TestServer::start().await;
    let admin = server.admin();
    let rs = |name: &str, owner: Option<(&str, &str)>| {
        let mut v = json!({
            "apiVersion": "apps/v1", "kind": "ReplicaSet", "metadata": { "name": name },
            "spec": { "replicas": 0, "selector": { "matchLabels": { "app": name } }, "template": { "metadata": { "labels": { "app": name } }, "spec": { "containers": [{ "name": "c", "image": "i" }] } } },
        });
        if let Some((owner, uid)) = owner {
            v["metadata"]["ownerReferences"] = json!([{ "apiVersion": "apps/v1", "kind": "Deployment", "name": owner, "uid": uid, "controller": true }, { "apiVersion": "v1", "kind": "ConfigMap", "name": "keep", "uid": "other-uid" }]);
        }
        v
    };
    let deployment = |name: &str| json!({
        "apiVersion": "apps/v1", "kind": "Deployment", "metadata": { "name": name },
        "spec": { "replicas": 0, "selector": { "matchLabels": { "app": name } }, "template": { "metadata": { "labels": { "app": name } }, "spec": { "containers": [{ "name": "c", "image": "i" }] } } },
    });
    let path = "/apis/apps/v1/namespaces/default";
    let d = admin.create_value(&format!("{path}/deployments"), &deployment("web")).await.unwrap();
    let uid = d["metadata"]["uid"].as_str().unwrap().to_string();
    admin.create_value(&format!("{path}/replicasets"), &rs("web-1", Some(("web", &uid)))).await.unwrap();

    let bad = admin.request_raw(Method::DELETE, &format!("{path}/deployments/web"), &json!({ "propagationPolicy": "Sometimes" })).await;
    assert_eq!(bad.status().as_u16(), 400);
    admin.get_value(&format!("{path}/deployments/web")).await.expect("a refused delete deletes nothing");

    let gone = admin.request_raw(Method::DELETE, &format!("{path}/deployments/web"), &json!({ "kind": "DeleteOptions", "apiVersion": "v1", "propagationPolicy": "Orphan" })).await;
    assert_eq!(gone.status().as_u16(), 200);
    let kept = admin.get_value(&format!("{path}/replicasets/web-1")).await.unwrap();
    assert_eq!(kept["metadata"]["ownerReferences"], json!([{ "apiVersion": "v1", "kind": "ConfigMap", "name": "keep", "uid": "other-uid" }]), "only the deleted owner's reference goes");

    let d = admin.create_value(&format!("{path}/deployments"), &deployment("api")).await.unwrap();
    let uid = d["metadata"]["uid"].as_str().unwrap().to_string();
    let mut only = rs("api-1", Some(("api", &uid)));
    only["metadata"]["ownerReferences"].as_array_mut().unwrap().truncate(1);
    admin.create_value(&format!("{path}/replicasets"), &only).await.unwrap();
    admin.delete_value(&format!("{path}/deployments/api?orphanDependents=true")).await.unwrap();
    let kept = admin.get_value(&format!("{path}/replicasets/api-1")).await.unwrap();
    assert!(kept["metadata"].get("ownerReferences").is_none(), "{kept}");
    server.stop().await;
}

#[tokio::test]
async fn shutdown_ends_open_watches_promptly() {
    let server = TestServer::start().await;
    let admin = server.admin();
    let mut watch = admin.watch::<Node>(&NODES, None, None, &ListOptions::default()).await.unwrap();
    let started = std::time::Instant::now();
    server.stop().await;
    assert!(started.elapsed() < Duration::from_secs(3));
    let end = tokio::time::timeout(Duration::from_secs(5), watch.next()).await.expect("the watch did not end");
    assert!(end.is_none() || end.unwrap().is_err());
}

/// Debian's kubectl 1.20 (fetched by `scripts/test` into `.cache/kubectl`), if present.
fn debian_kubectl() -> Option<std::path::PathBuf> {
    let path = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join(".cache/kubectl/usr/bin/kubectl");
    path.is_file().then_some(path)
}

/// Runs kubectl with `kubeconfig`; panics unless it succeeds, returns its standard output.
async fn kubectl(kubectl: &std::path::Path, kubeconfig: &std::path::Path, args: &[&str]) -> String {
    let home = kubeconfig.parent().unwrap();
    let out = tokio::process::Command::new(kubectl).args(args).env("KUBECONFIG", kubeconfig).env("HOME", home).output().await.unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout).to_string();
    assert!(out.status.success(), "kubectl {args:?} failed: {stdout}{}", String::from_utf8_lossy(&out.stderr));
    stdout
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn debian_kubectl_prints_the_server_tables_scales_and_deletes_through_discovery() {
    let Some(kubectl_bin) = debian_kubectl() else {
        eprintln!("skipped: no .cache/kubectl/usr/bin/kubectl (scripts/test fetches Debian's kubernetes-client)");
        return;
    };
    let server = TestServer::start().await;
    let admin = server.admin();
    admin.create(&NODES, None, &Node { metadata: ObjectMeta { name: "w1".into(), ..Default::default() }, ..Default::default() }).await.unwrap();
    admin.create_value("/api/v1/namespaces/default/pods", &pod("web-1", Some("w1"), "web")).await.unwrap();
    admin.create_value("/api/v1/namespaces/kube-system/pods", &pod("dns-1", Some("w1"), "dns")).await.unwrap();
    let deployment = json!({"metadata": {"name": "web"}, "spec": {"replicas": 2, "selector": {"matchLabels": {"app": "web"}},
        "template": {"metadata": {"labels": {"app": "web"}}, "spec": {"containers": [{"name": "c", "image": "busybox"}]}}}});
    admin.create_value("/apis/apps/v1/namespaces/default/deployments", &deployment).await.unwrap();
    let (client_cert_pem, client_key_pem) = server.ca.client("admin", &["system:masters"]);
    let dir = tempfile::tempdir().unwrap();
    let kc = crate::client::kubeconfig::Kubeconfig { cluster_name: "t".into(), server: server.url.clone(), ca_pem: server.ca.pem.clone(), client_cert_pem, client_key_pem };
    let path = dir.path().join("kubeconfig");
    kc.write(&path).unwrap();
    let run = |args: &'static [&'static str]| kubectl(&kubectl_bin, &path, args);

    let nodes = run(&["get", "nodes"]).await;
    assert!(nodes.starts_with("NAME   ROLE     STATUS     INTERNAL-IP"), "the server's columns:\n{nodes}");
    assert!(nodes.lines().any(|l| l.starts_with("w1 ") && l.contains("NotReady")), "{nodes}");
    let pods = run(&["get", "pods", "-A"]).await;
    assert!(pods.starts_with("NAMESPACE     NAME    READY   STATUS    RESTARTS"), "{pods}");
    assert!(pods.lines().any(|l| l.starts_with("default ") && l.contains("web-1")), "{pods}");
    assert!(pods.lines().any(|l| l.starts_with("kube-system ") && l.contains("dns-1")), "{pods}");
    let deployments = run(&["get", "deployments"]).await;
    assert!(deployments.lines().any(|l| l.starts_with("web ") && l.contains("0/2")), "{deployments}");
    let one = run(&["get", "pod", "web-1", "-o", "wide"]).await;
    assert!(one.lines().nth(1).is_some_and(|l| l.starts_with("web-1 ") && l.ends_with("w1")), "{one}");
    let json_list: Value = serde_json::from_str(&run(&["get", "nodes", "-o", "json"]).await).unwrap();
    assert_eq!(json_list["items"][0]["metadata"]["name"], "w1", "-o json still gets objects");
    assert_eq!(run(&["scale", "deployment", "web", "--replicas", "5"]).await.trim(), "deployment.apps/web scaled");
    let scaled = admin.get_value("/apis/apps/v1/namespaces/default/deployments/web").await.unwrap();
    assert_eq!(scaled["spec"]["replicas"], 5);
    assert_eq!(scaled["spec"]["template"], deployment["spec"]["template"], "scaling changes only the replicas");
    // A bound pod waits for its agent: Terminating; --force --grace-period=0 takes it at once.
    assert_eq!(run(&["delete", "pod", "web-1", "--wait=false"]).await.trim(), "pod \"web-1\" deleted");
    let terminating = run(&["get", "pod", "web-1"]).await;
    assert!(terminating.lines().nth(1).is_some_and(|l| l.split_whitespace().nth(2) == Some("Terminating")), "{terminating}");
    assert!(run(&["delete", "pod", "web-1", "--force", "--grace-period=0"]).await.contains("pod \"web-1\" force deleted"));
    assert_eq!(code(admin.get::<Value>(&PODS, Some("default"), "web-1").await), 404);
    server.stop().await;
}

#[tokio::test]
async fn the_scale_subresource_reads_and_writes_only_a_deployments_replicas() {
    let server = TestServer::start().await;
    let admin = server.admin();
    let deployment = json!({"metadata": {"name": "web"}, "spec": {"replicas": 2, "selector": {"matchLabels": {"app": "web"}},
        "template": {"metadata": {"labels": {"app": "web"}}, "spec": {"containers": [{"name": "c", "image": "busybox"}]}}}});
    admin.create_value("/apis/apps/v1/namespaces/default/deployments", &deployment).await.unwrap();
    let path = "/apis/apps/v1/namespaces/default/deployments/web/scale";
    let scale = admin.get_value(path).await.unwrap();
    assert_eq!((scale["kind"].as_str(), scale["spec"]["replicas"].as_i64(), scale["status"]["selector"].as_str()), (Some("Scale"), Some(2), Some("app=web")));

    let mut wanted = scale.clone();
    wanted["spec"]["replicas"] = json!(7);
    let written = admin.request(Method::PUT, path, Some(&wanted)).await.unwrap();
    assert_eq!(written["spec"]["replicas"], 7);
    let stored = admin.get_value("/apis/apps/v1/namespaces/default/deployments/web").await.unwrap();
    assert_eq!(stored["spec"]["replicas"], 7);
    assert_eq!(stored["spec"]["template"], deployment["spec"]["template"]);
    assert_eq!(stored["metadata"]["generation"], 2, "a changed replica count is a new generation");

    // The Scale read before that write is stale now.
    wanted["spec"]["replicas"] = json!(9);
    assert_eq!(code(admin.request(Method::PUT, path, Some(&wanted)).await), 409);

    assert_eq!(code(admin.request(Method::PUT, path, Some(&json!({"spec": {"replicas": -1}}))).await), 400);
    assert_eq!(code(admin.get_value("/apis/apps/v1/namespaces/default/deployments/nope/scale").await), 404);
    assert_eq!(code(admin.get_value("/api/v1/namespaces/default/pods/web/scale").await), 404);
    server.stop().await;
}

#[tokio::test]
async fn discovery_is_served_to_any_authenticated_client_but_not_anonymously() {
    let server = TestServer::start().await;
    let groups = server.node("w1").get_value("/apis").await.unwrap();
    assert_eq!(groups["kind"], "APIGroupList");
    assert_eq!(server.admin().get_value("/apis/apps/v1").await.unwrap()["groupVersion"], "apps/v1");
    assert_eq!(code(server.anonymous().get_value("/api/v1").await), 401);
    server.stop().await;
}

/// The `(field, reason)` of each cause of a 422 `Invalid` answer.
fn invalid_causes(r: Result<Value, ClientError>) -> Vec<(String, String)> {
    match r {
        Err(ClientError::Api { status, code: 422, .. }) => {
            assert_eq!(status.reason, StatusReason::Invalid);
            status.details.unwrap().causes.into_iter().map(|c| (c.field, c.reason)).collect()
        }
        other => panic!("expected 422 Invalid, got {other:?}"),
    }
}

fn cause(field: &str, reason: &str) -> (String, String) {
    (field.to_string(), reason.to_string())
}

#[tokio::test]
async fn objects_with_wrong_typed_fields_are_refused_with_422_naming_the_field() {
    let server = TestServer::start().await;
    let admin = server.admin();
    let bad_pod = json!({"metadata": {"name": "bad"}, "spec": {"containers": "x"}});
    let err = admin.create(&PODS, Some("default"), &bad_pod).await.unwrap_err();
    let ClientError::Api { status, .. } = &err else { panic!("{err:?}") };
    assert_eq!(
        status.message,
        "Pod \"bad\" is invalid: spec.containers: Invalid value: \"string\": spec.containers in body must be of type array: \"string\""
    );
    let details = status.details.as_ref().unwrap();
    assert_eq!((details.kind.as_str(), details.name.as_str(), details.group.as_str()), ("Pod", "bad", ""));
    assert_eq!(invalid_causes(Err(err)), [cause("spec.containers", "FieldValueTypeInvalid")]);
    assert_eq!(code(admin.get::<Value>(&PODS, Some("default"), "bad").await), 404, "nothing is stored");

    let deployment = json!({"metadata": {"name": "web"}, "spec": {"replicas": "three", "selector": {"matchLabels": {"app": "web"}},
        "template": {"metadata": {"labels": {"app": "web"}}, "spec": {"containers": [{"name": "c", "image": "nginx"}]}}}});
    assert_eq!(invalid_causes(admin.create(&DEPLOYMENTS, Some("default"), &deployment).await), [cause("spec.replicas", "FieldValueTypeInvalid")]);
    let service = json!({"metadata": {"name": "web"}, "spec": {"selector": {"app": "web"}, "ports": [{"port": "eighty"}]}});
    assert_eq!(invalid_causes(admin.create(&SERVICES, Some("default"), &service).await), [cause("spec.ports[0].port", "FieldValueTypeInvalid")]);
    let unsupported = json!({"metadata": {"name": "p2"}, "spec": {"restartPolicy": "Sometimes", "containers": [{"image": "busybox"}]}});
    let mut causes = invalid_causes(admin.create(&PODS, Some("default"), &unsupported).await);
    causes.sort();
    assert_eq!(causes, [cause("spec.containers[0].name", "FieldValueRequired"), cause("spec.restartPolicy", "FieldValueNotSupported")]);

    // A worker writes its own Node, and its status through the subresource, with its own credential.
    let worker = server.node("w1");
    let bad_node = json!({"metadata": {"name": "w1"}, "spec": {"unschedulable": "yes"}});
    assert_eq!(invalid_causes(worker.create(&NODES, None, &bad_node).await), [cause("spec.unschedulable", "FieldValueTypeInvalid")]);
    worker.create(&NODES, None, &json!({"metadata": {"name": "w1"}})).await.unwrap();
    let bad_status = json!({"metadata": {"name": "w1"}, "status": {"capacity": {"cpu": [4], "memory": "lots"}}});
    assert_eq!(
        invalid_causes(worker.replace_status(&NODES, None, "w1", &bad_status).await),
        [cause("status.capacity[cpu]", "FieldValueTypeInvalid"), cause("status.capacity[memory]", "FieldValueInvalid")]
    );
    let stored: Value = worker.get(&NODES, None, "w1").await.unwrap();
    assert!(stored.get("status").is_none(), "the refused status is not stored: {stored}");
    // A number given for a quantity is a quantity, stored as its text.
    let numeric = json!({"metadata": {"name": "w1"}, "status": {"capacity": {"cpu": 4, "memory": "2Gi"}}});
    let written: Value = worker.replace_status(&NODES, None, "w1", &numeric).await.unwrap();
    assert_eq!(written["status"]["capacity"], json!({"cpu": "4", "memory": "2Gi"}));
    let stored: Node = worker.get(&NODES, None, "w1").await.unwrap();
    assert_eq!(stored.status.capacity["cpu"], "4");
    server.stop().await;
}

#[tokio::test]
async fn a_patch_whose_result_has_a_wrong_type_is_refused_and_nothing_is_stored() {
    let server = TestServer::start().await;
    let admin = server.admin();
    admin.create(&PODS, Some("default"), &pod("p1", None, "web")).await.unwrap();
    let patch = json!({"spec": {"containers": [{"name": "c", "image": "busybox", "ports": [{"containerPort": "http"}]}]}});
    assert_eq!(
        invalid_causes(admin.patch(&PODS, Some("default"), "p1", &patch).await),
        [cause("spec.containers[0].ports[0].containerPort", "FieldValueTypeInvalid")]
    );
    let status_patch = json!({"status": {"conditions": {"type": "Ready"}}});
    assert_eq!(invalid_causes(admin.patch_status(&PODS, Some("default"), "p1", &status_patch).await), [cause("status.conditions", "FieldValueTypeInvalid")]);
    let stored: Value = admin.get(&PODS, Some("default"), "p1").await.unwrap();
    assert_eq!(stored["spec"]["containers"], json!([{"name": "c", "image": "busybox"}]));
    assert!(stored.get("status").is_none(), "{stored}");
    server.stop().await;
}

#[tokio::test]
async fn field_validation_strict_refuses_warn_names_and_ignore_drops_unknown_fields() {
    let server = TestServer::start().await;
    let admin = server.admin();
    let path = "/api/v1/namespaces/default/pods";
    let with_unknown = |name: &str| {
        json!({"metadata": {"name": name, "bogus": 1}, "spec": {"foo": "bar", "containers": [{"name": "c", "image": "busybox"}]}})
    };

    let strict = admin.request_raw(Method::POST, &format!("{path}?fieldValidation=Strict"), &with_unknown("strict")).await;
    assert_eq!(strict.status().as_u16(), 422);
    let status: crate::api::Status = strict.json().await.unwrap();
    let causes = status.details.unwrap().causes;
    let found: Vec<(&str, &str, &str)> = causes.iter().map(|c| (c.field.as_str(), c.reason.as_str(), c.message.as_str())).collect();
    assert_eq!(
        found,
        [
            ("metadata.bogus", "FieldValueInvalid", "strict decoding error: unknown field \"metadata.bogus\""),
            ("spec.foo", "FieldValueInvalid", "strict decoding error: unknown field \"spec.foo\"")
        ]
    );
    assert_eq!(code(admin.get::<Value>(&PODS, Some("default"), "strict").await), 404);

    let warn = admin.request_raw(Method::POST, &format!("{path}?fieldValidation=Warn"), &with_unknown("warn")).await;
    assert_eq!(warn.status().as_u16(), 201);
    let warnings: Vec<&str> = warn.headers().get_all("warning").iter().map(|v| v.to_str().unwrap()).collect();
    assert_eq!(warnings, ["299 - \"unknown field \\\"metadata.bogus\\\"\"", "299 - \"unknown field \\\"spec.foo\\\"\""]);
    let ignored = admin.request_raw(Method::POST, path, &with_unknown("ignore")).await;
    assert_eq!(ignored.status().as_u16(), 201);
    assert!(ignored.headers().get("warning").is_none());
    for name in ["warn", "ignore"] {
        let stored: Value = admin.get(&PODS, Some("default"), name).await.unwrap();
        assert!(stored["spec"].get("foo").is_none() && stored["metadata"].get("bogus").is_none(), "{stored}");
        assert_eq!(stored["spec"]["containers"][0]["image"], "busybox");
    }

    // Updates and patches read the parameter too; an unknown value is a bad request.
    let update = admin.request_raw(Method::PUT, &format!("{path}/ignore?fieldValidation=Strict"), &with_unknown("ignore")).await;
    assert_eq!(update.status().as_u16(), 422);
    let loud = admin.request_raw(Method::POST, &format!("{path}?fieldValidation=Loud"), &with_unknown("loud")).await;
    assert_eq!(loud.status().as_u16(), 400);
    server.stop().await;
}

/// The kubectl binaries of the compatibility tests: Debian's 1.20 (fetched into `.cache/kubectl`
/// by `scripts/lib/ensure-kubectl`, as `scripts/test` does), and the kubectl on the machine's PATH
/// (this machine image ships 1.32). Debian has no newer kubectl to install, so a machine without
/// one (the fresh-machine check's root) tests 1.20 alone, and says so.
fn kubectl_binaries() -> Vec<std::path::PathBuf> {
    let root = std::path::Path::new(env!("CARGO_MANIFEST_DIR"));
    let out = std::process::Command::new(root.join("scripts/lib/ensure-kubectl")).output().expect("running scripts/lib/ensure-kubectl");
    assert!(out.status.success(), "ensure-kubectl failed: {}", String::from_utf8_lossy(&out.stderr));
    let debian = std::path::PathBuf::from(String::from_utf8_lossy(&out.stdout).lines().last().expect("ensure-kubectl prints the path").trim());
    let on_path = std::env::var_os("PATH").and_then(|paths| std::env::split_paths(&paths).map(|d| d.join("kubectl")).find(|p| p.is_file()));
    match on_path {
        Some(newest) => vec![debian, newest],
        None => {
            eprintln!("no kubectl on PATH: testing Debian's kubectl 1.20 only");
            vec![debian]
        }
    }
}

/// kubectl's everyday writes against the server, with Debian's 1.20 (which validates manifests
/// itself, from the protobuf `/openapi/v2`) and the newest (which learns from `/openapi/v3` that
/// the server validates and sends `fieldValidation=Strict`): `apply` creating, then a changed
/// manifest (a strategic merge patch computed from the last-applied annotation), `patch` in its
/// default (strategic) and JSON forms, a manifest with an unknown field refused naming it, and
/// `explain`.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kubectl_apply_patch_and_explain_work_with_kubectl_1_20_and_the_newest() {
    let server = TestServer::start().await;
    let admin = server.admin();
    let dir = tempfile::tempdir().unwrap();
    let (cert, key) = server.ca.client("admin", &["system:masters"]);
    let config = format!(
        "apiVersion: v1\nkind: Config\nclusters:\n- name: t\n  cluster:\n    server: {}\n    certificate-authority-data: {}\nusers:\n- name: admin\n  user:\n    client-certificate-data: {}\n    client-key-data: {}\ncontexts:\n- name: t\n  context:\n    cluster: t\n    user: admin\ncurrent-context: t\n",
        server.url,
        STANDARD.encode(&server.ca.pem),
        STANDARD.encode(&cert),
        STANDARD.encode(&key)
    );
    let kubeconfig = dir.path().join("config");
    std::fs::write(&kubeconfig, config).unwrap();
    for (n, bin) in kubectl_binaries().into_iter().enumerate() {
        let ns = format!("k{n}");
        let kubectl = |args: Vec<String>| {
            let (bin, kubeconfig, home) = (bin.clone(), kubeconfig.clone(), dir.path().to_path_buf());
            async move {
                let out = tokio::process::Command::new(&bin).args(&args).env("KUBECONFIG", kubeconfig).env("HOME", home).output().await.expect("running kubectl");
                (out.status.success(), String::from_utf8_lossy(&out.stdout).to_string() + &String::from_utf8_lossy(&out.stderr))
            }
        };
        let args = |s: &str| s.split_whitespace().map(String::from).collect::<Vec<_>>();
        let version = kubectl(args("version --client")).await.1;
        let manifest = |image: &str, extra: &str| {
            format!(
                "apiVersion: apps/v1\nkind: Deployment\nmetadata:\n  name: web\n  namespace: {ns}\nspec:\n  replicas: 1\n{extra}  selector:\n    matchLabels:\n      app: web\n  template:\n    metadata:\n      labels:\n        app: web\n    spec:\n      containers:\n      - name: app\n        image: {image}\n        resources:\n          requests:\n            cpu: 100m\n            memory: 64Mi\n      - name: side\n        image: side:1\n"
            )
        };
        let file = dir.path().join(format!("web-{n}.yaml"));
        let apply = |text: String| {
            let (file, kubectl) = (file.clone(), &kubectl);
            async move {
                std::fs::write(&file, text).unwrap();
                kubectl(vec!["apply".into(), "-f".into(), file.display().to_string()]).await
            }
        };
        let (ok, out) = apply(manifest("app:1", "")).await;
        assert!(ok && out.contains("created"), "{version}: kubectl apply (create):\n{out}");
        let (ok, out) = apply(manifest("app:2", "")).await;
        assert!(ok && out.contains("configured"), "{version}: kubectl apply (change):\n{out}");
        let stored: Value = admin.get(&DEPLOYMENTS, Some(&ns), "web").await.unwrap();
        let containers = &stored["spec"]["template"]["spec"]["containers"];
        assert_eq!((containers[0]["image"].as_str(), containers[1]["image"].as_str()), (Some("app:2"), Some("side:1")), "{version}: {containers}");
        let (ok, out) = kubectl(vec!["-n".into(), ns.clone(), "patch".into(), "deployment".into(), "web".into(), "-p".into(), r#"{"spec":{"replicas":3}}"#.into()]).await;
        assert!(ok, "{version}: kubectl patch:\n{out}");
        let (ok, out) = kubectl(vec!["-n".into(), ns.clone(), "patch".into(), "deployment".into(), "web".into(), "--type".into(), "json".into(), "-p".into(), r#"[{"op":"replace","path":"/spec/template/spec/containers/1/image","value":"side:2"}]"#.into()]).await;
        assert!(ok, "{version}: kubectl patch --type json:\n{out}");
        let stored: Value = admin.get(&DEPLOYMENTS, Some(&ns), "web").await.unwrap();
        assert_eq!((stored["spec"]["replicas"].as_i64(), stored["spec"]["template"]["spec"]["containers"][1]["image"].as_str()), (Some(3), Some("side:2")));
        // A server-side dry run answers and stores nothing.
        std::fs::write(&file, manifest("app:9", "")).unwrap();
        let (ok, out) = kubectl(vec!["apply".into(), "--dry-run=server".into(), "-f".into(), file.display().to_string()]).await;
        assert!(ok && out.contains("server dry run"), "{version}: kubectl apply --dry-run=server:\n{out}");
        let stored: Value = admin.get(&DEPLOYMENTS, Some(&ns), "web").await.unwrap();
        assert_eq!(stored["spec"]["template"]["spec"]["containers"][0]["image"], "app:2");
        // An unknown field: refused, by name, and nothing changes.
        let (ok, out) = apply(manifest("app:3", "  replicaz: 2\n")).await;
        assert!(!ok && out.contains("replicaz"), "{version}: a manifest with an unknown field:\n{out}");
        let stored: Value = admin.get(&DEPLOYMENTS, Some(&ns), "web").await.unwrap();
        assert_eq!(stored["spec"]["template"]["spec"]["containers"][0]["image"], "app:2");
        let (ok, out) = kubectl(args("explain deployment.spec.replicas")).await;
        assert!(ok && out.contains("replicas") && out.contains("integer"), "{version}: kubectl explain:\n{out}");
        // `get all` (the `all` category), `wait` on a condition, `get events`.
        let (ok, out) = kubectl(args(&format!("get all -n {ns}"))).await;
        assert!(ok && out.contains("deployment.apps/web"), "{version}: kubectl get all:\n{out}");
        let available = json!({"status": {"conditions": [{"type": "Available", "status": "True", "reason": "MinimumReplicasAvailable"}]}});
        admin.patch_status::<Value>(&DEPLOYMENTS, Some(&ns), "web", &available).await.unwrap();
        let (ok, out) = kubectl(args(&format!("wait -n {ns} --for=condition=available deployment/web --timeout=10s"))).await;
        assert!(ok && out.contains("condition met"), "{version}: kubectl wait:\n{out}");
        let event = json!({"metadata": {"name": "web.1", "namespace": ns}, "involvedObject": {"kind": "Deployment", "name": "web", "namespace": ns},
            "reason": "ScalingReplicaSet", "message": "Scaled up replica set web-1 from 0 to 1", "type": "Normal", "count": 1, "source": {"component": "deployment-controller"}});
        admin.request(Method::POST, &format!("/api/v1/namespaces/{ns}/events"), Some(&event)).await.unwrap();
        let (ok, out) = kubectl(args(&format!("get events -n {ns}"))).await;
        assert!(ok && out.contains("ScalingReplicaSet") && out.contains("deployment/web"), "{version}: kubectl get events:\n{out}");
        // `delete --cascade=orphan` (1.20: `--cascade=false`): the ReplicaSet stays, unowned.
        let uid = admin.get::<Value>(&DEPLOYMENTS, Some(&ns), "web").await.unwrap()["metadata"]["uid"].as_str().unwrap().to_string();
        let rs = json!({
            "apiVersion": "apps/v1", "kind": "ReplicaSet",
            "metadata": { "name": "web-1", "namespace": ns, "ownerReferences": [{ "apiVersion": "apps/v1", "kind": "Deployment", "name": "web", "uid": uid, "controller": true }] },
            "spec": { "replicas": 0, "selector": { "matchLabels": { "app": "web" } }, "template": { "metadata": { "labels": { "app": "web" } }, "spec": { "containers": [{ "name": "c", "image": "i" }] } } },
        });
        admin.create_value(&format!("/apis/apps/v1/namespaces/{ns}/replicasets"), &rs).await.unwrap();
        let cascade = if version.contains("1.20") { "--cascade=false" } else { "--cascade=orphan" };
        let (ok, out) = kubectl(args(&format!("delete deployment web -n {ns} {cascade}"))).await;
        assert!(ok && out.contains("deleted"), "{version}: kubectl delete {cascade}:\n{out}");
        let kept = admin.get_value(&format!("/apis/apps/v1/namespaces/{ns}/replicasets/web-1")).await.unwrap();
        assert!(kept["metadata"].get("ownerReferences").is_none(), "{version}: {kept}");
    }
    server.stop().await;
}
