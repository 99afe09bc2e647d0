//! The cluster CA and the certificates it issues.
//!
//! Keys are ECDSA P-256 with SHA-256 signatures: rustls (ring provider) and webpki verify them as
//! server and client certificates, and they are small and fast to generate. The CA lives ten
//! years; what it issues lives one year, back-dated a few minutes so that a node whose clock is a
//! little behind the master's accepts a fresh certificate.

use std::collections::BTreeSet;
use std::fmt;
use std::net::IpAddr;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use rand::RngExt;
use rcgen::{
    BasicConstraints, CertificateParams, CertificateSigningRequestParams, DistinguishedName, DnType, ExtendedKeyUsagePurpose, IsCa,
    Issuer, KeyPair, KeyUsagePurpose, PublicKeyData, SanType, SerialNumber, PKCS_ECDSA_P256_SHA256,
};
use base64::Engine as _;
use sha2::{Digest, Sha256};
use x509_parser::certificate::X509Certificate;
use x509_parser::certification_request::X509CertificationRequest;
use x509_parser::extensions::GeneralName;
use x509_parser::prelude::FromDer;
use x509_parser::x509::X509Name;

use super::PkiError;

/// How long the cluster CA is valid.
pub const CA_VALIDITY: Duration = Duration::from_secs(10 * 365 * 24 * 3600);
/// How long serving, client and node certificates are valid.
pub const LEAF_VALIDITY: Duration = Duration::from_secs(365 * 24 * 3600);
/// How far certificates are back-dated, for clocks that lag the master's.
pub const BACKDATE: Duration = Duration::from_secs(5 * 60);

/// The common-name prefix of a node's client certificate (`system:node:<name>`).
pub const NODE_CN_PREFIX: &str = "system:node:";
/// The organization of every node's client certificate.
pub const NODES_GROUP: &str = "system:nodes";
/// The organization of the admin's client certificate.
pub const MASTERS_GROUP: &str = "system:masters";
/// The common name of the API server's client certificate towards the node agents (kubeadm's
/// `apiserver-kubelet-client`): the only identity an agent's server lets in.
pub const KUBELET_CLIENT_CN: &str = "kube-apiserver-kubelet-client";

/// A certificate and its private key, both PEM.
#[derive(Clone, PartialEq, Eq)]
pub struct Issued {
    pub cert_pem: String,
    pub key_pem: String,
}

impl fmt::Debug for Issued {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Issued").field("cert_pem", &self.cert_pem).field("key_pem", &"<redacted>").finish()
    }
}

/// The cluster's certificate authority: its certificate and signing key.
pub struct ClusterCa {
    issuer: Issuer<'static, KeyPair>,
    cert_pem: String,
    key_pem: String,
    spki_der: Vec<u8>,
}

impl fmt::Debug for ClusterCa {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ClusterCa").field("cert_pem", &self.cert_pem).field("key_pem", &"<redacted>").finish()
    }
}

fn rcgen_err(action: impl Into<String>) -> impl FnOnce(rcgen::Error) -> PkiError {
    let action = action.into();
    move |source| PkiError::Generate { action, source }
}

/// A random positive 16-byte serial number (RFC 5280 allows up to 20 octets).
fn random_serial() -> SerialNumber {
    let mut bytes = [0u8; 16];
    rand::rng().fill(&mut bytes);
    // Positive, and no leading zero octet so the DER integer is minimal.
    bytes[0] = (bytes[0] & 0x7f) | 0x40;
    SerialNumber::from_slice(&bytes)
}

fn set_validity(params: &mut CertificateParams, valid_for: Duration) -> Result<(), PkiError> {
    let now = SystemTime::now();
    // rcgen takes `time::OffsetDateTime`; x509-parser's ASN1Time builds one from a Unix time, so
    // the `time` crate need not be a direct dependency.
    params.not_before = asn1_time(now.checked_sub(BACKDATE).unwrap_or(UNIX_EPOCH))?.to_datetime();
    params.not_after = asn1_time(now + valid_for)?.to_datetime();
    Ok(())
}

fn asn1_time(t: SystemTime) -> Result<x509_parser::time::ASN1Time, PkiError> {
    let clock = |message: String| PkiError::Parse { what: "the system clock", message };
    let secs = t.duration_since(UNIX_EPOCH).map(|d| d.as_secs()).unwrap_or(0);
    let secs = i64::try_from(secs).map_err(|e| clock(e.to_string()))?;
    x509_parser::time::ASN1Time::from_timestamp(secs).map_err(|e| clock(e.to_string()))
}

fn subject(common_name: &str, organizations: &[&str]) -> Result<DistinguishedName, PkiError> {
    // rcgen keeps one value per attribute type, so a second organization would silently replace
    // the first; refuse instead.
    if organizations.len() > 1 {
        return Err(PkiError::Parse { what: "certificate subject", message: format!("at most one organization is supported, got {organizations:?}") });
    }
    let mut dn = DistinguishedName::new();
    for org in organizations {
        dn.push(DnType::OrganizationName, *org);
    }
    dn.push(DnType::CommonName, common_name);
    Ok(dn)
}

fn leaf_params(common_name: &str, organizations: &[&str], eku: ExtendedKeyUsagePurpose) -> Result<CertificateParams, PkiError> {
    let mut params = CertificateParams::default();
    params.distinguished_name = subject(common_name, organizations)?;
    params.is_ca = IsCa::ExplicitNoCa;
    params.key_usages = vec![KeyUsagePurpose::DigitalSignature];
    params.extended_key_usages = vec![eku];
    params.serial_number = Some(random_serial());
    params.use_authority_key_identifier_extension = true;
    set_validity(&mut params, LEAF_VALIDITY)?;
    Ok(params)
}

/// The DER of the first certificate in a PEM text.
fn cert_der(pem: &str, what: &'static str) -> Result<Vec<u8>, PkiError> {
    let (_, pem) = x509_parser::pem::parse_x509_pem(pem.as_bytes()).map_err(|e| PkiError::Parse { what, message: e.to_string() })?;
    if pem.label != "CERTIFICATE" {
        return Err(PkiError::Parse { what, message: format!("expected a CERTIFICATE PEM block, found {}", pem.label) });
    }
    Ok(pem.contents)
}

fn parse_cert<'a>(der: &'a [u8], what: &'static str) -> Result<X509Certificate<'a>, PkiError> {
    X509Certificate::from_der(der).map(|(_, c)| c).map_err(|e| PkiError::Parse { what, message: e.to_string() })
}

fn dedup<T: Ord + Clone>(items: impl IntoIterator<Item = T>) -> Vec<T> {
    let mut seen = BTreeSet::new();
    items.into_iter().filter(|i| seen.insert(i.clone())).collect()
}

/// Splits wanted names into DNS names and IP addresses: a "name" that parses as an IP (an LB
/// address given as an IP) counts as an IP, as clients match it against IP SANs.
fn split_names(dns_names: &[String], ips: &[IpAddr]) -> (Vec<String>, Vec<IpAddr>) {
    let mut names = Vec::new();
    let mut addrs = ips.to_vec();
    for n in dns_names {
        match n.parse::<IpAddr>() {
            Ok(ip) => addrs.push(ip),
            Err(_) => names.push(n.trim_end_matches('.').to_ascii_lowercase()),
        }
    }
    (dedup(names), dedup(addrs))
}

impl ClusterCa {
    /// Creates a new CA for a cluster: self-signed, ten years, may sign end-entity certificates only.
    pub fn generate(cluster_name: &str) -> Result<Self, PkiError> {
        let key = KeyPair::generate_for(&PKCS_ECDSA_P256_SHA256).map_err(rcgen_err("generating the CA key"))?;
        let mut params = CertificateParams::default();
        params.distinguished_name = subject(&format!("{cluster_name}-ca"), &["clusterctl"])?;
        params.is_ca = IsCa::Ca(BasicConstraints::Constrained(0));
        params.key_usages = vec![KeyUsagePurpose::KeyCertSign, KeyUsagePurpose::CrlSign, KeyUsagePurpose::DigitalSignature];
        params.serial_number = Some(random_serial());
        set_validity(&mut params, CA_VALIDITY)?;
        let cert = params.self_signed(&key).map_err(rcgen_err(format!("self-signing the CA of cluster {cluster_name}")))?;
        let key_pem = key.serialize_pem();
        let spki_der = key.subject_public_key_info();
        Ok(ClusterCa { cert_pem: cert.pem(), key_pem, spki_der, issuer: Issuer::new(params, key) })
    }

    /// Loads a CA saved earlier; fails if the key does not belong to the certificate or the
    /// certificate is not a CA.
    pub fn from_pem(cert_pem: &str, key_pem: &str) -> Result<Self, PkiError> {
        let key = KeyPair::from_pem(key_pem).map_err(|e| PkiError::Parse { what: "the CA key", message: e.to_string() })?;
        let der = cert_der(cert_pem, "the CA certificate")?;
        let cert = parse_cert(&der, "the CA certificate")?;
        let spki_der = key.subject_public_key_info();
        if cert.public_key().raw != spki_der.as_slice() {
            return Err(PkiError::KeyMismatch);
        }
        let is_ca = cert.basic_constraints().ok().flatten().is_some_and(|bc| bc.value.ca);
        if !is_ca {
            return Err(PkiError::Parse { what: "the CA certificate", message: "it is not a CA (basic constraints)".into() });
        }
        let issuer = Issuer::from_ca_cert_der(&der.clone().into(), key).map_err(|e| PkiError::Parse { what: "the CA certificate", message: e.to_string() })?;
        Ok(ClusterCa { issuer, cert_pem: cert_pem.to_string(), key_pem: key_pem.to_string(), spki_der })
    }

    /// The CA certificate, PEM.
    pub fn cert_pem(&self) -> &str {
        &self.cert_pem
    }

    /// The CA's private key, PEM (PKCS#8). Only the master holds it.
    pub fn key_pem(&self) -> &str {
        &self.key_pem
    }

    /// The CA's hash in kubeadm's `sha256:<hex>` form.
    pub fn hash(&self) -> String {
        format!("sha256:{}", hex::encode(Sha256::digest(&self.spki_der)))
    }

    /// Issues the API server's serving certificate (serverAuth, one year) for every name and
    /// address it is reached by. Entries of `dns_names` that are IP addresses become IP SANs.
    pub fn issue_server(&self, dns_names: &[String], ips: &[IpAddr]) -> Result<Issued, PkiError> {
        self.issue_server_valid_for(dns_names, ips, LEAF_VALIDITY)
    }

    /// The same, valid for `lifetime` (the masters renew it at two thirds of it).
    pub fn issue_server_valid_for(&self, dns_names: &[String], ips: &[IpAddr], lifetime: Duration) -> Result<Issued, PkiError> {
        let (names, addrs) = split_names(dns_names, ips);
        let mut params = leaf_params("clusterctl-apiserver", &[], ExtendedKeyUsagePurpose::ServerAuth)?;
        for name in &names {
            let ia5 = name.clone().try_into().map_err(rcgen_err(format!("adding DNS name {name:?} to the serving certificate")))?;
            params.subject_alt_names.push(SanType::DnsName(ia5));
        }
        params.subject_alt_names.extend(addrs.into_iter().map(SanType::IpAddress));
        set_validity(&mut params, lifetime)?;
        self.issue(params, "the API server's serving certificate")
    }

    /// Issues a client certificate (clientAuth, one year); the admin's is CN `admin`, O `system:masters`.
    pub fn issue_client(&self, common_name: &str, organizations: &[&str]) -> Result<Issued, PkiError> {
        self.issue_client_valid_for(common_name, organizations, LEAF_VALIDITY)
    }

    /// The same, valid for `lifetime`.
    pub fn issue_client_valid_for(&self, common_name: &str, organizations: &[&str], lifetime: Duration) -> Result<Issued, PkiError> {
        let mut params = leaf_params(common_name, organizations, ExtendedKeyUsagePurpose::ClientAuth)?;
        set_validity(&mut params, lifetime)?;
        self.issue(params, "a client certificate")
    }

    /// Issues an etcd member's certificate (serverAuth and clientAuth, one year), used both for its
    /// client port and for its peer port: etcd presents it as a server to clients and peers, and as
    /// a client when it dials the other members (and its own gRPC gateway). `name` becomes the CN;
    /// entries of `dns_names` that are IP addresses become IP SANs, as with [`Self::issue_server`].
    pub fn issue_etcd_member(&self, name: &str, dns_names: &[String], ips: &[IpAddr]) -> Result<Issued, PkiError> {
        self.issue_etcd_member_valid_for(name, dns_names, ips, LEAF_VALIDITY)
    }

    /// The same, valid for `lifetime` (the masters renew it at two thirds of it).
    pub fn issue_etcd_member_valid_for(&self, name: &str, dns_names: &[String], ips: &[IpAddr], lifetime: Duration) -> Result<Issued, PkiError> {
        let (names, addrs) = split_names(dns_names, ips);
        let mut params = leaf_params(name, &[], ExtendedKeyUsagePurpose::ServerAuth)?;
        params.extended_key_usages.push(ExtendedKeyUsagePurpose::ClientAuth);
        for dns in &names {
            let ia5 = dns.clone().try_into().map_err(rcgen_err(format!("adding DNS name {dns:?} to etcd member {name}'s certificate")))?;
            params.subject_alt_names.push(SanType::DnsName(ia5));
        }
        params.subject_alt_names.extend(addrs.into_iter().map(SanType::IpAddress));
        set_validity(&mut params, lifetime)?;
        self.issue(params, "an etcd member's certificate")
    }

    fn issue(&self, params: CertificateParams, what: &str) -> Result<Issued, PkiError> {
        let key = KeyPair::generate_for(&PKCS_ECDSA_P256_SHA256).map_err(rcgen_err(format!("generating the key of {what}")))?;
        let cert = params.signed_by(&key, &self.issuer).map_err(rcgen_err(format!("signing {what}")))?;
        Ok(Issued { cert_pem: cert.pem(), key_pem: key.serialize_pem() })
    }

    /// Issues a node agent's serving certificate (serverAuth, one year): `CN=system:node:<name>,
    /// O=system:nodes` with the node name as its one DNS name, which is what the API server
    /// verifies when it connects to the agent at the node's address (see
    /// [`Self::sign_node_serving_csr`]).
    pub fn issue_node_serving(&self, node_name: &str) -> Result<Issued, PkiError> {
        self.issue_node_serving_valid_for(node_name, LEAF_VALIDITY)
    }

    /// The same, valid for `lifetime`.
    pub fn issue_node_serving_valid_for(&self, node_name: &str, lifetime: Duration) -> Result<Issued, PkiError> {
        let mut params = node_serving_params(node_name)?;
        set_validity(&mut params, lifetime)?;
        self.issue(params, "a node serving certificate")
    }

    /// Signs a joining node's CSR: its subject must be `CN=system:node:<name>, O=system:nodes`.
    /// Only the public key and that subject are taken from the request; validity, key usage and
    /// extensions are the CA's (clientAuth, one year). Returns the certificate, PEM.
    pub fn sign_node_csr(&self, csr_pem: &str) -> Result<String, PkiError> {
        self.sign_node_request(csr_pem, NodeCertUsage::Client, LEAF_VALIDITY)
    }

    /// The same, valid for `lifetime` instead of a year (the API server's setting; the agents
    /// renew at two thirds of it, see `node::worker`).
    pub fn sign_node_csr_valid_for(&self, csr_pem: &str, lifetime: Duration) -> Result<String, PkiError> {
        self.sign_node_request(csr_pem, NodeCertUsage::Client, lifetime)
    }

    /// Signs a node's CSR for its agent's serving certificate (Kubernetes' `kubelet-serving`
    /// signer): the subject must be `CN=system:node:<name>, O=system:nodes`; whatever names the
    /// request asks for, the certificate names only the node (one DNS SAN), so that a node can
    /// serve only as itself. Returns the certificate, PEM.
    pub fn sign_node_serving_csr(&self, csr_pem: &str) -> Result<String, PkiError> {
        self.sign_node_request(csr_pem, NodeCertUsage::Serving, LEAF_VALIDITY)
    }

    /// The same, valid for `lifetime` (the agents renew it at two thirds of it).
    pub fn sign_node_serving_csr_valid_for(&self, csr_pem: &str, lifetime: Duration) -> Result<String, PkiError> {
        self.sign_node_request(csr_pem, NodeCertUsage::Serving, lifetime)
    }

    fn sign_node_request(&self, csr_pem: &str, usage: NodeCertUsage, lifetime: Duration) -> Result<String, PkiError> {
        let (_, pem) = x509_parser::pem::parse_x509_pem(csr_pem.as_bytes()).map_err(|e| PkiError::Parse { what: "node CSR", message: e.to_string() })?;
        if pem.label != "CERTIFICATE REQUEST" {
            return Err(PkiError::Parse { what: "node CSR", message: format!("expected a CERTIFICATE REQUEST PEM block, found {}", pem.label) });
        }
        let node = {
            let (_, csr) = X509CertificationRequest::from_der(&pem.contents).map_err(|e| PkiError::Parse { what: "node CSR", message: e.to_string() })?;
            node_name_of(&CertSubject::of_name(&csr.certification_request_info.subject))?
        };
        // Verifies the request's signature (proof that the node holds the key).
        let mut request = CertificateSigningRequestParams::from_der(&pem.contents.clone().into()).map_err(|e| PkiError::CsrRefused { reason: e.to_string() })?;
        request.params = match usage {
            NodeCertUsage::Client => leaf_params(&format!("{NODE_CN_PREFIX}{node}"), &[NODES_GROUP], ExtendedKeyUsagePurpose::ClientAuth)?,
            NodeCertUsage::Serving => node_serving_params(&node)?,
        };
        set_validity(&mut request.params, lifetime)?;
        let cert = request.signed_by(&self.issuer).map_err(rcgen_err(format!("signing the {usage} certificate of node {node}")))?;
        Ok(cert.pem())
    }

    /// Checks that a certificate was signed by this CA's key and names it as issuer.
    pub fn verify_issued(&self, cert_pem: &str) -> Result<(), PkiError> {
        verify_issued_by(cert_pem, &self.cert_pem)
    }
}

/// Checks that the certificate `cert_pem` names the CA `ca_pem` as its issuer and was signed by
/// its key (the first certificate of each PEM counts).
pub fn verify_issued_by(cert_pem: &str, ca_pem: &str) -> Result<(), PkiError> {
    let der = cert_der(cert_pem, "certificate")?;
    let cert = parse_cert(&der, "certificate")?;
    let ca_der = cert_der(ca_pem, "the CA certificate")?;
    let ca = parse_cert(&ca_der, "the CA certificate")?;
    if cert.issuer().as_raw() != ca.subject().as_raw() {
        return Err(PkiError::NotIssuedByCa { reason: format!("its issuer is {}, the CA is {}", cert.issuer(), ca.subject()) });
    }
    cert.verify_signature(Some(ca.public_key())).map_err(|e| PkiError::NotIssuedByCa { reason: e.to_string() })
}

/// The certificates of a PEM bundle (a trust bundle: several CAs, one after the other), each as
/// its own PEM text, in order; other blocks are skipped.
pub fn bundle_certificates(bundle_pem: &str) -> Vec<String> {
    x509_parser::pem::Pem::iter_from_buffer(bundle_pem.as_bytes())
        .filter_map(Result::ok)
        .filter(|p| p.label == "CERTIFICATE")
        .map(|p| pem_text("CERTIFICATE", &p.contents))
        .collect()
}

/// DER as PEM text (64-character lines).
fn pem_text(label: &str, der: &[u8]) -> String {
    let b64 = base64::engine::general_purpose::STANDARD.encode(der);
    let mut out = format!("-----BEGIN {label}-----\n");
    for line in b64.as_bytes().chunks(64) {
        out.push_str(std::str::from_utf8(line).unwrap_or_default());
        out.push('\n');
    }
    out.push_str(&format!("-----END {label}-----\n"));
    out
}

/// What a node certificate is for.
#[derive(Debug, Clone, Copy)]
enum NodeCertUsage {
    Client,
    Serving,
}

impl fmt::Display for NodeCertUsage {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            NodeCertUsage::Client => "client",
            NodeCertUsage::Serving => "serving",
        })
    }
}

/// A node agent's serving certificate: the node's subject, serverAuth, the node name as DNS SAN.
fn node_serving_params(node: &str) -> Result<CertificateParams, PkiError> {
    let mut params = leaf_params(&format!("{NODE_CN_PREFIX}{node}"), &[NODES_GROUP], ExtendedKeyUsagePurpose::ServerAuth)?;
    let ia5 = node.to_string().try_into().map_err(rcgen_err(format!("adding DNS name {node:?} to a node serving certificate")))?;
    params.subject_alt_names.push(SanType::DnsName(ia5));
    Ok(params)
}

/// The node name in a CSR's subject, if the subject is exactly a node's.
fn node_name_of(subject: &CertSubject) -> Result<String, PkiError> {
    let refuse = |reason: String| Err(PkiError::CsrRefused { reason });
    let Some(cn) = &subject.common_name else { return refuse("the subject has no common name".into()) };
    let Some(node) = cn.strip_prefix(NODE_CN_PREFIX) else {
        return refuse(format!("common name {cn:?} does not start with {NODE_CN_PREFIX:?}"));
    };
    let valid = !node.is_empty() && node.len() <= 253 && node.chars().all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '-' || c == '.');
    if !valid {
        return refuse(format!("node name {node:?} is not a lowercase DNS name"));
    }
    if subject.organizations != [NODES_GROUP] {
        return refuse(format!("organizations are {:?}, expected exactly [{NODES_GROUP:?}]", subject.organizations));
    }
    Ok(node.to_string())
}

/// The subject of a certificate as the API server authenticates it: user name and groups.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CertSubject {
    /// The common name (the user: `admin`, `system:node:<name>`).
    pub common_name: Option<String>,
    /// The organizations (the groups: `system:masters`, `system:nodes`).
    pub organizations: Vec<String>,
}

impl CertSubject {
    fn of_name(name: &X509Name<'_>) -> Self {
        let text = |a: &x509_parser::x509::AttributeTypeAndValue<'_>| a.as_str().ok().map(str::to_string);
        CertSubject {
            common_name: name.iter_common_name().next().and_then(text),
            organizations: name.iter_organization().filter_map(text).collect(),
        }
    }

    /// The subject of a DER certificate (as TLS hands over a peer's certificate).
    pub fn from_der(der: &[u8]) -> Result<Self, PkiError> {
        Ok(Self::of_name(parse_cert(der, "certificate")?.subject()))
    }

    /// The subject of the first certificate in a PEM text.
    pub fn from_pem(cert_pem: &str) -> Result<Self, PkiError> {
        Self::from_der(&cert_der(cert_pem, "certificate")?)
    }

    /// The node name, when this is a node's subject (`CN=system:node:<name>`, `O=system:nodes`).
    pub fn node_name(&self) -> Option<String> {
        node_name_of(self).ok()
    }
}

/// A joining node's own key; it never leaves the node.
pub struct NodeKey {
    key: KeyPair,
}

impl fmt::Debug for NodeKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("NodeKey(<redacted>)")
    }
}

impl NodeKey {
    /// A new ECDSA P-256 key.
    pub fn generate() -> Result<Self, PkiError> {
        Ok(NodeKey { key: KeyPair::generate_for(&PKCS_ECDSA_P256_SHA256).map_err(rcgen_err("generating the node key"))? })
    }

    /// A key saved earlier (PKCS#8 PEM).
    pub fn from_pem(key_pem: &str) -> Result<Self, PkiError> {
        Ok(NodeKey { key: KeyPair::from_pem(key_pem).map_err(|e| PkiError::Parse { what: "the node key", message: e.to_string() })? })
    }

    /// The key, PEM (PKCS#8), for the node's 0600 key file.
    pub fn key_pem(&self) -> String {
        self.key.serialize_pem()
    }

    /// A CSR for `CN=system:node:<node_name>, O=system:nodes`, and the key, both PEM.
    pub fn node_csr(&self, node_name: &str) -> Result<(String, String), PkiError> {
        let mut params = CertificateParams::default();
        params.distinguished_name = subject(&format!("{NODE_CN_PREFIX}{node_name}"), &[NODES_GROUP])?;
        let csr = params.serialize_request(&self.key).map_err(rcgen_err(format!("creating the CSR of node {node_name}")))?;
        let csr_pem = csr.pem().map_err(rcgen_err(format!("encoding the CSR of node {node_name}")))?;
        Ok((csr_pem, self.key_pem()))
    }
}

/// A fresh node key and its CSR for `CN=system:node:<node_name>, O=system:nodes`: `(csr_pem, key_pem)`.
pub fn node_csr(node_name: &str) -> Result<(String, String), PkiError> {
    NodeKey::generate()?.node_csr(node_name)
}

/// The CA hash of a PEM CA certificate: `sha256:<hex>` of its SubjectPublicKeyInfo DER, exactly
/// kubeadm's `--discovery-token-ca-cert-hash`.
pub fn ca_hash(cert_pem: &str) -> Result<String, PkiError> {
    ca_hash_der(&cert_der(cert_pem, "the CA certificate")?)
}

/// [`ca_hash`] of a DER certificate (as a TLS peer presents it).
pub fn ca_hash_der(der: &[u8]) -> Result<String, PkiError> {
    let cert = parse_cert(der, "the CA certificate")?;
    Ok(format!("sha256:{}", hex::encode(Sha256::digest(cert.public_key().raw))))
}

/// Whether a serving certificate covers every wanted name: DNS names compared case-insensitively,
/// and names that parse as IP addresses (an LB address given as an IP, master IPs) must be IP SANs.
/// The master re-issues its certificate when this turns false, e.g. after the LB address or the
/// master IPs changed.
pub fn cert_matches_names(cert_pem: &str, names: &[String]) -> Result<bool, PkiError> {
    let der = cert_der(cert_pem, "serving certificate")?;
    let cert = parse_cert(&der, "serving certificate")?;
    let san = cert.subject_alternative_name().map_err(|e| PkiError::Parse { what: "serving certificate", message: e.to_string() })?;
    let mut have_names = BTreeSet::new();
    let mut have_ips = BTreeSet::new();
    for name in san.iter().flat_map(|s| s.value.general_names.iter()) {
        match name {
            GeneralName::DNSName(n) => {
                have_names.insert(n.trim_end_matches('.').to_ascii_lowercase());
            }
            GeneralName::IPAddress(bytes) => {
                let ip = match bytes.len() {
                    4 => <[u8; 4]>::try_from(*bytes).ok().map(IpAddr::from),
                    16 => <[u8; 16]>::try_from(*bytes).ok().map(IpAddr::from),
                    _ => None,
                };
                have_ips.extend(ip);
            }
            _ => {}
        }
    }
    let (names, addrs) = split_names(names, &[]);
    Ok(names.iter().all(|n| have_names.contains(n)) && addrs.iter().all(|a| have_ips.contains(a)))
}

/// When a certificate from this CA is due for renewal: two thirds into its life, counted from
/// when it was issued (its `notBefore` plus [`BACKDATE`]), as kubelet renews its own.
pub fn renewal_due(cert_pem: &str) -> Result<SystemTime, PkiError> {
    let der = cert_der(cert_pem, "certificate")?;
    let cert = parse_cert(&der, "certificate")?;
    let at = |secs: i64| UNIX_EPOCH + Duration::from_secs(u64::try_from(secs).unwrap_or(0));
    let not_after = at(cert.validity().not_after.timestamp());
    let issued = at(cert.validity().not_before.timestamp()) + BACKDATE;
    let life = not_after.duration_since(issued).unwrap_or_default();
    Ok(issued + life * 2 / 3)
}

/// When a certificate from this CA was issued (Unix seconds): its `notBefore` plus [`BACKDATE`].
pub fn issued_at(cert_pem: &str) -> Result<i64, PkiError> {
    let der = cert_der(cert_pem, "certificate")?;
    let cert = parse_cert(&der, "certificate")?;
    Ok(cert.validity().not_before.timestamp() + BACKDATE.as_secs() as i64)
}

/// When a PEM certificate expires.
pub fn not_after(cert_pem: &str) -> Result<SystemTime, PkiError> {
    let der = cert_der(cert_pem, "certificate")?;
    let cert = parse_cert(&der, "certificate")?;
    let secs = cert.validity().not_after.timestamp();
    Ok(match u64::try_from(secs) {
        Ok(s) => UNIX_EPOCH + Duration::from_secs(s),
        Err(_) => UNIX_EPOCH,
    })
}
