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
    let ca = Arc::new(ClusterCa::generate("test").unwrap());
    let serving = ca.issue_server(&["localhost".to_string()], &["127.0.0.1".parse().unwrap()]).unwrap();
    let config = ApiServerConfig {
        tls: ServerTls { cert_pem: serving.cert_pem, key_pem: serving.key_pem, client_ca_pem: ca.cert_pem().to_string() },
        csr_signer: ca.clone(),
        cluster_info_ca_pem: ca.cert_pem().to_string(),
        node_binary: None,
    };
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("https://127.0.0.1:{}", listener.local_addr().unwrap().port());
    let store: Arc<dyn Store> = Arc::new(SqliteStore::in_memory().unwrap());
    tokio::spawn(serve(config, store, listener, std::future::pending::<()>()));
    let admin = ca.issue_client("admin", &["system:masters"]).unwrap();
    ApiClient::new(&url, ClientAuth::Certificate { ca_pem: ca.cert_pem().to_string(), cert_pem: admin.cert_pem, key_pem: admin.key_pem }).unwrap()
}

