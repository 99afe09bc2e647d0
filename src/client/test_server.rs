//! An in-process API server on 127.0.0.1:0 over an in-memory SQLite store, and an admin client of
//! it, for the tests of the client and of everything above it.

use std::sync::Arc;

use tokio::net::TcpListener;

use super::{ApiClient, ClientAuth};
use crate::apiserver::store::{SqliteStore, Store};
use crate::apiserver::{ApiServerConfig, ServerTls, serve};
use crate::pki::ClusterCa;

/// Starts a server and returns a `system:masters` client of it.
pub async fn start() -> ApiClient {
    start_with_ca(Arc::new(ClusterCa::generate("test").unwrap())).await
}

/// Starts a server whose certificates (its own, its clients', the agents' it reaches) are of `ca`.
pub async fn start_with_ca(ca: Arc<ClusterCa>) -> ApiClient {
    let serving = ca.issue_server(&["localhost".to_string()], &["127.0.0.1".parse().unwrap()]).unwrap();
    let config = ApiServerConfig {
        tls: ServerTls::from_pem(&serving.cert_pem, &serving.key_pem, ca.cert_pem()).unwrap(),
        csr_signer: ca.clone(),
        join_verifier: None,
        cluster_info_ca_pem: ca.cert_pem().to_string(),
        node_binary: None,
        kubelet_client: {
            let issued = ca.issue_client(crate::pki::KUBELET_CLIENT_CN, &[]).unwrap();
            Some(crate::apiserver::podproxy::KubeletClientTls { cert: super::RenewableCertificate::new(&issued.cert_pem, &issued.key_pem).unwrap(), ca_pem: ca.cert_pem().to_string() })
        },
        service_cidr: Some("10.96.0.0/16".parse().unwrap()),
        limits: crate::apiserver::limits::LimitSettings::default(),
        audit: None,
        default_toleration_seconds: Some(300),
    };
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("https://127.0.0.1:{}", listener.local_addr().unwrap().port());
    let store: Arc<dyn Store> = Arc::new(SqliteStore::in_memory().unwrap());
    tokio::spawn(serve(config, store, listener, std::future::pending::<()>()));
    let admin = ca.issue_client("admin", &["system:masters"]).unwrap();
    ApiClient::new(&url, ClientAuth::Certificate { ca_pem: ca.cert_pem().to_string(), cert_pem: admin.cert_pem, key_pem: admin.key_pem }).unwrap()
}

