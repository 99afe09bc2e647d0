//! The server's TLS: its certificate, and client certificates verified against the cluster CA,
//! optional for the API server (bootstrap tokens and anonymous health checks come without one) and
//! required by the node agent's server, which also uses this.

use std::sync::Arc;

use rustls::RootCertStore;
use rustls::server::WebPkiClientVerifier;
use rustls_pki_types::pem::PemObject;
use rustls_pki_types::CertificateDer;

use super::auth::Identity;
use super::{ApiServerError, ServerTls};

fn certificates(pem: &str, what: &'static str) -> Result<Vec<CertificateDer<'static>>, ApiServerError> {
    let certs = CertificateDer::pem_slice_iter(pem.as_bytes())
        .collect::<Result<Vec<_>, _>>()
        .map_err(|source| ApiServerError::Pem { what, source })?;
    if certs.is_empty() {
        return Err(ApiServerError::NoCertificate { what });
    }
    Ok(certs)
}

/// Whether a server lets in clients without a certificate.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ClientCerts {
    /// The API server: bootstrap tokens and anonymous health checks come without one.
    Optional,
    /// The node agent's server: only the API server's certificate gets in.
    Required,
}

/// The rustls configuration for `tls`: each handshake serves its current certificate.
pub fn server_config(tls: &ServerTls, clients: ClientCerts) -> Result<rustls::ServerConfig, ApiServerError> {
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let mut roots = RootCertStore::empty();
    for ca in certificates(&tls.client_ca_pem, "client CA")? {
        roots.add(ca).map_err(|source| ApiServerError::Tls { action: "adding the client CA", source })?;
    }
    let mut verifier = WebPkiClientVerifier::builder_with_provider(Arc::new(roots), provider.clone());
    if clients == ClientCerts::Optional {
        verifier = verifier.allow_unauthenticated();
    }
    let verifier = verifier.build().map_err(ApiServerError::ClientVerifier)?;
    let mut config = rustls::ServerConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .map_err(|source| ApiServerError::Tls { action: "choosing protocol versions", source })?
        .with_client_cert_verifier(verifier)
        .with_cert_resolver(tls.cert.serving_resolver());
    config.alpn_protocols = vec![b"h2".to_vec(), b"http/1.1".to_vec()];
    Ok(config)
}

/// The identity in a verified client certificate: `CN` is the user, each `O` a group; and when
/// the certificate was issued (Unix seconds: its `notBefore` plus the CA's backdating).
pub fn peer_identity(conn: &rustls::ServerConnection) -> Option<(Identity, i64)> {
    let cert = conn.peer_certificates()?.first()?;
    let (_, x509) = x509_parser::parse_x509_certificate(cert.as_ref()).ok()?;
    let subject = x509.subject();
    let user = subject.iter_common_name().next()?.as_str().ok()?.to_string();
    if user.is_empty() {
        return None;
    }
    let groups = subject.iter_organization().filter_map(|o| o.as_str().ok()).map(String::from).collect();
    let issued_at = x509.validity().not_before.timestamp() + crate::pki::BACKDATE.as_secs() as i64;
    Some((Identity::new(user, groups), issued_at))
}
