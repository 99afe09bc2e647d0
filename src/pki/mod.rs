//! The cluster's PKI: its certificate authority, the certificates it issues, join tokens, and
//! the files that hold keys.
//!
//! # Layout
//! - [`ca`]: [`ClusterCa`] (an ECDSA P-256 CA that rustls with the ring provider verifies),
//!   serving and client certificates, signing of node CSRs, the node's own key and CSR
//!   ([`NodeKey`], [`node_csr`]), and checks on certificates ([`ca_hash`], [`cert_matches_names`],
//!   [`not_after`], [`CertSubject`]).
//! - [`rotation`]: the CA rotation's steps on a master's files, and the trust bundle a master
//!   accepts during one ([`rotation::trust_bundle`]).
//! - [`token`]: [`JoinToken`] in kubeadm's `[a-z0-9]{6}.[a-z0-9]{16}` form, its expiry in RFC 3339
//!   and the data of its Kubernetes bootstrap-token Secret.
//! - [`files`]: writing key files with mode 0600 through a temporary file and a rename; the
//!   cluster CA loaded from its folder, or made there on the first start ([`load_or_create_ca`]),
//!   and the master's serving and admin certificates kept there ([`serving_certificate`],
//!   [`admin_certificate`]).
//!
//! # Trust model
//! The CA's key stays on the master. A joining worker holds only a join token and the CA's hash
//! ([`ca_hash`], the same value as kubeadm's `--discovery-token-ca-cert-hash`): it pins the CA by
//! that hash, creates its own key ([`NodeKey`]) and sends a CSR whose subject is
//! `CN=system:node:<name>, O=system:nodes`; the master signs it with [`ClusterCa::sign_node_csr`].

pub mod ca;
pub mod files;
pub mod rotation;
pub mod token;

use std::path::PathBuf;

use thiserror::Error;

pub use ca::{BACKDATE, bundle_certificates, ca_hash, ca_hash_der, verify_issued_by, cert_matches_names, issued_at, node_csr, not_after, renewal_due, CertSubject, ClusterCa, Issued, NodeKey, KUBELET_CLIENT_CN, LEAF_VALIDITY};
pub use files::{admin_certificate, rotate_admin_certificate, load_or_create_ca, load_or_create_etcd_ca, pair_matches, serving_certificate, write_file_atomic, write_key_file, ETCD_CA};
pub use token::{JoinToken, DEFAULT_TOKEN_TTL};

/// Errors of certificate, key and token work.
#[derive(Debug, Error)]
pub enum PkiError {
    /// rcgen refused to generate or sign something.
    #[error("{action}")]
    Generate { action: String, #[source] source: rcgen::Error },
    /// A PEM or DER input could not be read as what it claims to be.
    #[error("reading {what}: {message}")]
    Parse { what: &'static str, message: String },
    /// A CA certificate and key that do not belong together.
    #[error("the CA key does not match the CA certificate")]
    KeyMismatch,
    /// A node CSR whose subject is not `CN=system:node:<name>, O=system:nodes`.
    #[error("refusing node CSR: {reason}")]
    CsrRefused { reason: String },
    /// A certificate that the CA did not issue.
    #[error("certificate was not issued by this cluster's CA: {reason}")]
    NotIssuedByCa { reason: String },
    /// A join token not of the form `[a-z0-9]{6}.[a-z0-9]{16}`.
    #[error("invalid join token: {reason} (expected the form abcdef.0123456789abcdef)")]
    BadToken { reason: &'static str },
    /// A timestamp that is not RFC 3339.
    #[error("invalid RFC 3339 time {text:?}")]
    BadTime { text: String },
    /// Writing a key or certificate file.
    #[error("writing {path}")]
    Io { path: PathBuf, #[source] source: std::io::Error },
}

#[cfg(test)]
mod tests;
