//! The CA's certificates, checked the way the cluster uses them: through rustls's webpki
//! verifiers with the ring provider.

use std::net::IpAddr;
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use rustls::client::danger::ServerCertVerifier;
use rustls::client::WebPkiServerVerifier;
use rustls::server::WebPkiClientVerifier;
use rustls::RootCertStore;
use rustls_pki_types::pem::PemObject;
use rustls_pki_types::{CertificateDer, ServerName, UnixTime};
use x509_parser::prelude::FromDer;

use super::ca::{CA_VALIDITY, LEAF_VALIDITY};
use super::*;

fn der(pem: &str) -> CertificateDer<'static> {
    CertificateDer::from_pem_slice(pem.as_bytes()).unwrap()
}

fn provider() -> Arc<rustls::crypto::CryptoProvider> {
    Arc::new(rustls::crypto::ring::default_provider())
}

fn roots(ca: &ClusterCa) -> Arc<RootCertStore> {
    let mut roots = RootCertStore::empty();
    roots.add(der(ca.cert_pem())).unwrap();
    Arc::new(roots)
}

/// Verifies a serving certificate for `name` as a rustls client of the API server would.
fn verify_server(ca: &ClusterCa, cert_pem: &str, name: &str) -> Result<(), rustls::Error> {
    let verifier = WebPkiServerVerifier::builder_with_provider(roots(ca), provider()).build().unwrap();
    let name = ServerName::try_from(name.to_string()).unwrap();
    verifier.verify_server_cert(&der(cert_pem), &[], &name, &[], UnixTime::now()).map(|_| ())
}

/// Verifies a client certificate as the API server (rustls, client auth required) would.
fn verify_client(ca: &ClusterCa, cert_pem: &str) -> Result<(), rustls::Error> {
    let verifier = WebPkiClientVerifier::builder_with_provider(roots(ca), provider()).build().unwrap();
    verifier.verify_client_cert(&der(cert_pem), &[], UnixTime::now()).map(|_| ())
}

fn parsed<R>(pem: &str, f: impl FnOnce(&x509_parser::certificate::X509Certificate<'_>) -> R) -> R {
    let d = der(pem);
    let (_, cert) = x509_parser::certificate::X509Certificate::from_der(&d).unwrap();
    f(&cert)
}

fn ips(list: &[&str]) -> Vec<IpAddr> {
    list.iter().map(|s| s.parse().unwrap()).collect()
}

fn strings(list: &[&str]) -> Vec<String> {
    list.iter().map(|s| s.to_string()).collect()
}

fn within(t: SystemTime, expected: SystemTime, slack: Duration) -> bool {
    t.duration_since(expected).or_else(|_| expected.duration_since(t)).unwrap() <= slack
}

#[test]
fn the_ca_is_a_ten_year_ca_that_may_sign_certificates() {
    let ca = ClusterCa::generate("demo").unwrap();
    parsed(ca.cert_pem(), |c| {
        assert!(c.basic_constraints().unwrap().unwrap().value.ca);
        let ku = c.key_usage().unwrap().unwrap().value;
        assert!(ku.key_cert_sign() && ku.crl_sign());
        assert_eq!(c.subject().to_string(), "O=clusterctl, CN=demo-ca");
        c.verify_signature(None).unwrap();
    });
    assert!(within(not_after(ca.cert_pem()).unwrap(), SystemTime::now() + CA_VALIDITY, Duration::from_secs(60)));
    assert!(ca.key_pem().contains("BEGIN PRIVATE KEY"));
    assert!(!format!("{ca:?}").contains("PRIVATE KEY"), "Debug must not print the CA key");
}

#[test]
fn the_serving_certificate_verifies_for_every_name_the_api_is_reached_by() {
    let ca = ClusterCa::generate("demo").unwrap();
    let names = strings(&["demo-api-123.elb.localhost.localstack.cloud", "localhost", "172.18.0.50"]);
    let issued = ca.issue_server(&names, &ips(&["10.0.1.10", "127.0.0.1"])).unwrap();
    for name in ["demo-api-123.elb.localhost.localstack.cloud", "localhost", "172.18.0.50", "10.0.1.10", "127.0.0.1"] {
        verify_server(&ca, &issued.cert_pem, name).unwrap_or_else(|e| panic!("{name}: {e}"));
    }
    assert!(verify_server(&ca, &issued.cert_pem, "other.example").is_err());
    assert!(verify_server(&ca, &issued.cert_pem, "10.0.1.11").is_err());
    parsed(&issued.cert_pem, |c| {
        let eku = c.extended_key_usage().unwrap().unwrap().value;
        assert!(eku.server_auth && !eku.client_auth);
        assert!(!c.is_ca());
    });
    assert!(within(not_after(&issued.cert_pem).unwrap(), SystemTime::now() + LEAF_VALIDITY, Duration::from_secs(60)));
    assert!(issued.key_pem.contains("BEGIN PRIVATE KEY"));
    ca.verify_issued(&issued.cert_pem).unwrap();
}

#[test]
fn a_serving_certificate_is_not_a_client_certificate_and_vice_versa() {
    let ca = ClusterCa::generate("demo").unwrap();
    let server = ca.issue_server(&strings(&["localhost"]), &[]).unwrap();
    let admin = ca.issue_client("admin", &[ca::MASTERS_GROUP]).unwrap();
    assert!(verify_client(&ca, &server.cert_pem).is_err());
    assert!(verify_server(&ca, &admin.cert_pem, "localhost").is_err());
}

#[test]
fn the_admin_certificate_is_a_client_certificate_for_admin_in_system_masters() {
    let ca = ClusterCa::generate("demo").unwrap();
    let admin = ca.issue_client("admin", &["system:masters"]).unwrap();
    verify_client(&ca, &admin.cert_pem).unwrap();
    let subject = CertSubject::from_pem(&admin.cert_pem).unwrap();
    assert_eq!(subject, CertSubject { common_name: Some("admin".into()), organizations: vec!["system:masters".into()] });
    assert_eq!(subject.node_name(), None);
    parsed(&admin.cert_pem, |c| {
        let eku = c.extended_key_usage().unwrap().unwrap().value;
        assert!(eku.client_auth && !eku.server_auth);
    });
    assert!(format!("{admin:?}").contains("redacted") && !format!("{admin:?}").contains("PRIVATE KEY"));
}

#[test]
fn certificates_from_another_ca_are_refused() {
    let ca = ClusterCa::generate("demo").unwrap();
    let other = ClusterCa::generate("demo").unwrap();
    let foreign = other.issue_client("admin", &["system:masters"]).unwrap();
    assert!(verify_client(&ca, &foreign.cert_pem).is_err());
    assert!(matches!(ca.verify_issued(&foreign.cert_pem), Err(PkiError::NotIssuedByCa { .. })));
}

#[test]
fn a_node_csr_is_signed_into_a_client_certificate_for_that_node() {
    let ca = ClusterCa::generate("demo").unwrap();
    let key = NodeKey::generate().unwrap();
    let (csr, key_pem) = key.node_csr("demo-default-0").unwrap();
    let (other_csr, other_key) = node_csr("demo-default-0").unwrap();
    assert_ne!(other_key, key_pem, "every call of node_csr makes a new key");
    assert!(ca.sign_node_csr(&other_csr).is_ok());
    assert!(csr.contains("BEGIN CERTIFICATE REQUEST"));
    assert_eq!(key_pem, key.key_pem());
    let cert = ca.sign_node_csr(&csr).unwrap();
    verify_client(&ca, &cert).unwrap();
    let subject = CertSubject::from_pem(&cert).unwrap();
    assert_eq!(subject.common_name.as_deref(), Some("system:node:demo-default-0"));
    assert_eq!(subject.organizations, vec!["system:nodes".to_string()]);
    assert_eq!(subject.node_name().as_deref(), Some("demo-default-0"));
    // The certificate is for the node's own key.
    let node_spki = rcgen::KeyPair::from_pem(&key_pem).map(|k| rcgen::PublicKeyData::subject_public_key_info(&k)).unwrap();
    parsed(&cert, |c| {
        assert_eq!(c.public_key().raw, node_spki.as_slice());
        let eku = c.extended_key_usage().unwrap().unwrap().value;
        assert!(eku.client_auth && !eku.server_auth);
    });
    assert!(within(not_after(&cert).unwrap(), SystemTime::now() + LEAF_VALIDITY, Duration::from_secs(60)));
    // A reloaded node key makes the same CSR subject.
    let again = NodeKey::from_pem(&key_pem).unwrap();
    assert!(ca.sign_node_csr(&again.node_csr("demo-default-0").unwrap().0).is_ok());
}

fn csr_with_subject(cn: Option<&str>, org: Option<&str>) -> String {
    let key = rcgen::KeyPair::generate_for(&rcgen::PKCS_ECDSA_P256_SHA256).unwrap();
    let mut params = rcgen::CertificateParams::default();
    params.distinguished_name = rcgen::DistinguishedName::new();
    if let Some(org) = org {
        params.distinguished_name.push(rcgen::DnType::OrganizationName, org);
    }
    if let Some(cn) = cn {
        params.distinguished_name.push(rcgen::DnType::CommonName, cn);
    }
    params.serialize_request(&key).unwrap().pem().unwrap()
}

#[test]
fn node_csrs_with_a_wrong_common_name_or_organization_are_refused() {
    let ca = ClusterCa::generate("demo").unwrap();
    assert!(ca.sign_node_csr(&csr_with_subject(Some("system:node:w-0"), Some("system:nodes"))).is_ok());
    for (cn, org) in [
        (Some("admin"), Some("system:nodes")),
        (Some("system:node:w-0"), Some("system:masters")),
        (Some("system:node:w-0"), None),
        (Some("system:node:"), Some("system:nodes")),
        (Some("system:node:W_0"), Some("system:nodes")),
        (None, Some("system:nodes")),
    ] {
        let err = ca.sign_node_csr(&csr_with_subject(cn, org)).unwrap_err();
        assert!(matches!(err, PkiError::CsrRefused { .. }), "{cn:?}/{org:?}: {err}");
    }
}

#[test]
fn node_csrs_with_a_bad_signature_or_garbage_are_refused() {
    let ca = ClusterCa::generate("demo").unwrap();
    let (csr, _) = NodeKey::generate().unwrap().node_csr("w-0").unwrap();
    // Flip one byte of the signature (the end of the DER).
    let block = pem_block(&csr);
    let mut bytes = block.clone();
    let last = bytes.len() - 3;
    bytes[last] ^= 0x01;
    let tampered = pem_encode("CERTIFICATE REQUEST", &bytes);
    assert!(ca.sign_node_csr(&tampered).is_err());
    assert!(ca.sign_node_csr("not a csr").is_err());
    assert!(ca.sign_node_csr(ca.cert_pem()).is_err(), "a certificate is not a CSR");
}

fn pem_block(pem: &str) -> Vec<u8> {
    let (_, p) = x509_parser::pem::parse_x509_pem(pem.as_bytes()).unwrap();
    p.contents
}

fn pem_encode(label: &str, der: &[u8]) -> String {
    use base64::Engine;
    let b64 = base64::engine::general_purpose::STANDARD.encode(der);
    let lines: Vec<&str> = b64.as_bytes().chunks(64).map(|c| std::str::from_utf8(c).unwrap()).collect();
    format!("-----BEGIN {label}-----\n{}\n-----END {label}-----\n", lines.join("\n"))
}

#[test]
fn a_reloaded_ca_issues_certificates_the_original_verifies() {
    let ca = ClusterCa::generate("demo").unwrap();
    let reloaded = ClusterCa::from_pem(ca.cert_pem(), ca.key_pem()).unwrap();
    let admin = reloaded.issue_client("admin", &["system:masters"]).unwrap();
    verify_client(&ca, &admin.cert_pem).unwrap();
    let (csr, _) = NodeKey::generate().unwrap().node_csr("w-1").unwrap();
    verify_client(&ca, &reloaded.sign_node_csr(&csr).unwrap()).unwrap();
    assert_eq!(reloaded.hash(), ca.hash());
}

#[test]
fn a_ca_key_that_does_not_match_its_certificate_is_refused() {
    let ca = ClusterCa::generate("demo").unwrap();
    let other = ClusterCa::generate("demo").unwrap();
    assert!(matches!(ClusterCa::from_pem(ca.cert_pem(), other.key_pem()), Err(PkiError::KeyMismatch)));
    let leaf = ca.issue_client("admin", &["system:masters"]).unwrap();
    assert!(ClusterCa::from_pem(&leaf.cert_pem, &leaf.key_pem).is_err(), "a leaf certificate is not a CA");
    assert!(ClusterCa::from_pem("garbage", ca.key_pem()).is_err());
}

#[test]
fn more_than_one_organization_is_refused_rather_than_dropped() {
    let ca = ClusterCa::generate("demo").unwrap();
    assert!(ca.issue_client("someone", &["a", "b"]).is_err());
    assert!(ca.issue_client("someone", &[]).is_ok());
}

#[test]
fn ca_hash_is_sha256_of_the_subject_public_key_info_and_stable() {
    let ca = ClusterCa::generate("demo").unwrap();
    let hash = ca_hash(ca.cert_pem()).unwrap();
    assert!(hash.starts_with("sha256:") && hash.len() == 7 + 64, "{hash}");
    assert_eq!(ca_hash(ca.cert_pem()).unwrap(), hash);
    assert_eq!(ca.hash(), hash);
    assert_eq!(ca_hash_der(&der(ca.cert_pem())).unwrap(), hash);
    let reloaded = ClusterCa::from_pem(ca.cert_pem(), ca.key_pem()).unwrap();
    assert_eq!(ca_hash(reloaded.cert_pem()).unwrap(), hash);
    assert_ne!(ca_hash(ClusterCa::generate("demo").unwrap().cert_pem()).unwrap(), hash);
}

#[test]
fn ca_hash_equals_what_openssl_computes_for_kubeadm() {
    use std::io::Write;
    use std::process::{Command, Stdio};
    if Command::new("openssl").arg("version").output().is_err() {
        eprintln!("openssl not installed; skipping");
        return;
    }
    let ca = ClusterCa::generate("demo").unwrap();
    let run = |args: &[&str], input: &[u8]| {
        let mut child = Command::new("openssl").args(args).stdin(Stdio::piped()).stdout(Stdio::piped()).spawn().unwrap();
        child.stdin.take().unwrap().write_all(input).unwrap();
        let out = child.wait_with_output().unwrap();
        assert!(out.status.success(), "openssl {args:?}");
        out.stdout
    };
    // openssl x509 -pubkey -noout | openssl pkey -pubin -outform der | sha256sum
    let pubkey = run(&["x509", "-pubkey", "-noout"], ca.cert_pem().as_bytes());
    let spki = run(&["pkey", "-pubin", "-outform", "der"], &pubkey);
    let expected = format!("sha256:{}", hex::encode(<sha2::Sha256 as sha2::Digest>::digest(&spki)));
    assert_eq!(ca_hash(ca.cert_pem()).unwrap(), expected);
}

#[test]
fn cert_matches_names_tells_when_the_serving_certificate_must_be_reissued() {
    let ca = ClusterCa::generate("demo").unwrap();
    let names = strings(&["api.demo.example", "localhost"]);
    let addrs = ips(&["10.0.1.10", "127.0.0.1"]);
    let cert = ca.issue_server(&names, &addrs).unwrap().cert_pem;
    let all = strings(&["api.demo.example", "localhost", "10.0.1.10", "127.0.0.1"]);
    assert!(cert_matches_names(&cert, &all).unwrap());
    assert!(cert_matches_names(&cert, &strings(&["API.Demo.Example."])).unwrap(), "DNS names are case-insensitive");
    assert!(cert_matches_names(&cert, &strings(&["10.0.1.10"])).unwrap(), "an IP given as a name is an IP SAN");
    assert!(cert_matches_names(&cert, &[]).unwrap());
    assert!(!cert_matches_names(&cert, &strings(&["new-lb.demo.example", "localhost"])).unwrap(), "a new LB name");
    assert!(!cert_matches_names(&cert, &strings(&["localhost", "10.0.1.11"])).unwrap(), "a new master IP");
    assert!(!cert_matches_names(&cert, &strings(&["127.0.0.2"])).unwrap());
}

#[test]
fn an_ip_given_as_a_name_becomes_an_ip_san_not_a_dns_san() {
    let ca = ClusterCa::generate("demo").unwrap();
    let cert = ca.issue_server(&strings(&["172.18.0.50", "localhost", "localhost"]), &ips(&["172.18.0.50"])).unwrap().cert_pem;
    parsed(&cert, |c| {
        let san = c.subject_alternative_name().unwrap().unwrap().value;
        use x509_parser::extensions::GeneralName;
        assert_eq!(san.general_names.len(), 2, "duplicates are dropped: {:?}", san.general_names);
        assert!(san.general_names.contains(&GeneralName::IPAddress(&[172, 18, 0, 50])), "{:?}", san.general_names);
        assert!(san.general_names.contains(&GeneralName::DNSName("localhost")), "{:?}", san.general_names);
    });
}

#[test]
fn unreadable_pem_is_an_error_naming_what_was_read() {
    let err = not_after("nope").unwrap_err();
    assert!(err.to_string().starts_with("reading certificate"), "{err}");
    assert!(ca_hash("nope").is_err());
    assert!(cert_matches_names("nope", &[]).is_err());
    assert!(CertSubject::from_pem("nope").is_err());
}

#[test]
fn the_api_server_signs_node_csrs_through_the_ca_and_accepts_what_node_csr_makes() {
    use crate::apiserver::CsrSigner;
    let ca = ClusterCa::generate("demo").unwrap();
    let (csr, _) = node_csr("demo-default-1").unwrap();
    assert_eq!(crate::apiserver::csr::node_name_of_request(&csr).unwrap(), "demo-default-1");
    let signer: &dyn CsrSigner = &ca;
    let cert = signer.sign_node_csr(&csr).unwrap();
    verify_client(&ca, &cert).unwrap();
    assert!(signer.sign_node_csr("garbage").unwrap_err().contains("node CSR"));
}

#[test]
fn a_node_client_certificate_signed_for_a_short_life_is_due_for_renewal_two_thirds_in() {
    let ca = ClusterCa::generate("demo").unwrap();
    let (csr, _) = node_csr("w1").unwrap();
    let cert = ca.sign_node_csr_valid_for(&csr, Duration::from_secs(600)).unwrap();
    let now = std::time::SystemTime::now();
    let expires = not_after(&cert).unwrap();
    let life = expires.duration_since(now).unwrap_or_default();
    assert!(life > Duration::from_secs(590) && life <= Duration::from_secs(600), "{life:?}");
    let due = renewal_due(&cert).unwrap().duration_since(now).unwrap_or_default();
    assert!(due > Duration::from_secs(390) && due <= Duration::from_secs(400), "two thirds of 600 s: {due:?}");
    let year = ca.sign_node_csr(&csr).unwrap();
    assert!(not_after(&year).unwrap().duration_since(now).unwrap() > Duration::from_secs(364 * 24 * 3600), "a year by default");
}
