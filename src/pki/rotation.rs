//! Rotating the cluster CA with overlap, as files in a master's PKI folder (`clusterctl node
//! rotate-ca` runs one [`Step`] on a master; `bootstrap::certs::rotate_ca` orders them across the
//! cluster). The signing CA stays `ca.crt`/`ca.key`; during a rotation the CA to rotate to is
//! `ca-next.crt`/`ca-next.key` (made on the first master, copied to the others), and
//! `ca-trusted.crt` holds every CA the master accepts, the signing one first
//! ([`trust_bundle`]). The steps, each idempotent:
//!
//! 1. [`Step::Prepare`] (first master): make the next CA, unless there is one.
//! 2. [`Step::Trust`]: trust the old and the next CA, still signing with the old one.
//! 3. [`Step::Switch`]: sign with the next CA, still trusting the old one (the admin certificate
//!    is issued again by the new CA; a restarted master issues its serving and in-process
//!    certificates again because they are not the signing CA's).
//! 4. [`Step::Finish`]: trust the new CA only; the next CA's files and the trust file go.
//!
//! Between 2 and 4 the nodes are given the same trust (`ca.crt`, a bundle, on a worker) and renew
//! their certificates once the new CA comes first in it, so no node or master ever holds a
//! certificate its peer does not trust.

use std::fs;
use std::path::Path;

use super::{bundle_certificates, write_key_file, ClusterCa, PkiError};

/// The trust file: every CA a master accepts, signing CA first.
pub const TRUSTED: &str = "ca-trusted.crt";
/// The stem of the next CA's files.
pub const NEXT: &str = "ca-next";

/// The files of a rotation under way, with their modes: a master that joins the control plane
/// meanwhile (a replacement) gets them with the CAs, so that it trusts what the others trust.
pub const FILES: [(&str, u32); 3] = [(TRUSTED, 0o644), ("ca-next.crt", 0o644), ("ca-next.key", 0o600)];

/// One step of a CA rotation on a master.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum Step {
    Prepare,
    Trust,
    Switch,
    Finish,
}

/// The CAs this master trusts, PEM: the signing CA, then every other CA of [`TRUSTED`].
pub fn trust_bundle(dir: &Path, ca: &ClusterCa) -> String {
    let signing = bundle_certificates(ca.cert_pem());
    let others = fs::read_to_string(dir.join(TRUSTED)).map(|t| bundle_certificates(&t)).unwrap_or_default();
    let mut out: Vec<String> = signing;
    for other in others {
        if !out.contains(&other) {
            out.push(other);
        }
    }
    out.concat()
}

fn read(dir: &Path, file: &str) -> Result<String, PkiError> {
    fs::read_to_string(dir.join(file)).map_err(|source| PkiError::Io { path: dir.join(file), source })
}

fn write_public(dir: &Path, file: &str, pem: &str) -> Result<(), PkiError> {
    super::write_file_atomic(&dir.join(file), pem.as_bytes(), 0o644).map_err(|source| PkiError::Io { path: dir.join(file), source })
}

/// The next CA, which [`Step::Prepare`] made.
fn next_ca(dir: &Path) -> Result<ClusterCa, PkiError> {
    let (cert, key) = (dir.join(format!("{NEXT}.crt")), dir.join(format!("{NEXT}.key")));
    match (fs::read_to_string(&cert), fs::read_to_string(&key)) {
        (Ok(c), Ok(k)) => ClusterCa::from_pem(&c, &k),
        _ => Err(PkiError::Parse { what: "the next CA", message: format!("{} is missing: a rotation is not under way (its first step makes it)", cert.display()) }),
    }
}

/// The first certificate of a PEM text, normalized (for comparing CAs).
fn first(pem: &str) -> Option<String> {
    bundle_certificates(pem).into_iter().next()
}

/// Runs `step` on the PKI folder `dir` of cluster `cluster`; returns whether anything changed
/// (a master whose files changed is restarted to take them up).
pub fn apply(dir: &Path, cluster: &str, step: Step) -> Result<bool, PkiError> {
    let current = read(dir, "ca.crt")?;
    match step {
        Step::Prepare => {
            if next_ca(dir).is_ok() {
                return Ok(false);
            }
            let unix = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map(|d| d.as_secs()).unwrap_or(0);
            // Another subject than the old CA's, so that the two are told apart by name too.
            let next = ClusterCa::generate(&format!("{cluster}-{unix}"))?;
            write_key_file(&dir.join(format!("{NEXT}.key")), next.key_pem())?;
            write_public(dir, &format!("{NEXT}.crt"), next.cert_pem())?;
            Ok(true)
        }
        Step::Trust => {
            let next = next_ca(dir)?;
            if first(&current) == first(next.cert_pem()) {
                return Ok(false); // switched already
            }
            let bundle = [current.as_str(), next.cert_pem()].concat();
            let changed = fs::read_to_string(dir.join(TRUSTED)).ok().as_deref() != Some(bundle.as_str());
            write_public(dir, TRUSTED, &bundle)?;
            Ok(changed)
        }
        Step::Switch => {
            let next = next_ca(dir)?;
            let mut changed = false;
            if first(&current) != first(next.cert_pem()) {
                // The trust first, then the key, then the certificate: interrupted anywhere, the
                // step is run again from the old certificate (a new key with the old certificate
                // does not load, and nothing signs with it).
                write_public(dir, TRUSTED, &[next.cert_pem(), current.as_str()].concat())?;
                write_key_file(&dir.join("ca.key"), next.key_pem())?;
                write_public(dir, "ca.crt", next.cert_pem())?;
                changed = true;
            }
            let admin_from_next = fs::read_to_string(dir.join("admin.crt")).is_ok_and(|c| next.verify_issued(&c).is_ok());
            if !admin_from_next {
                super::rotate_admin_certificate(&next, dir)?;
                changed = true;
            }
            Ok(changed)
        }
        Step::Finish => {
            if let Ok(next) = next_ca(dir)
                && first(&current) != first(next.cert_pem())
            {
                return Err(PkiError::Parse { what: "the CA rotation", message: "this master does not sign with the next CA yet: its switch step comes first".into() });
            }
            let mut changed = false;
            for file in [TRUSTED.to_string(), format!("{NEXT}.crt"), format!("{NEXT}.key")] {
                match fs::remove_file(dir.join(&file)) {
                    Ok(()) => changed = true,
                    Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
                    Err(source) => return Err(PkiError::Io { path: dir.join(file), source }),
                }
            }
            Ok(changed)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::pki::{admin_certificate, load_or_create_ca, serving_certificate, verify_issued_by, LEAF_VALIDITY};

    fn certs_of(pem: &str) -> Vec<String> {
        bundle_certificates(pem)
    }

    #[test]
    fn a_rotation_trusts_both_then_signs_with_the_new_then_trusts_it_alone() {
        let dir = tempfile::tempdir().unwrap();
        let d = dir.path();
        let old = load_or_create_ca(d, "demo").unwrap();
        admin_certificate(&old, d).unwrap();
        let (old_serving, _) = serving_certificate(&old, d, &["localhost".into()], &[], LEAF_VALIDITY).unwrap();
        assert!(apply(d, "demo", Step::Trust).is_err(), "no next CA yet");

        assert!(apply(d, "demo", Step::Prepare).unwrap());
        assert!(!apply(d, "demo", Step::Prepare).unwrap(), "the next CA is made once");
        let next_pem = fs::read_to_string(d.join("ca-next.crt")).unwrap();
        assert_eq!(fs::metadata(d.join("ca-next.key")).map(|m| std::os::unix::fs::PermissionsExt::mode(&m.permissions()) & 0o777).unwrap(), 0o600);
        assert_ne!(certs_of(&next_pem), certs_of(old.cert_pem()));

        assert!(apply(d, "demo", Step::Trust).unwrap());
        assert!(!apply(d, "demo", Step::Trust).unwrap(), "idempotent");
        let still_old = load_or_create_ca(d, "demo").unwrap();
        assert_eq!(still_old.cert_pem(), old.cert_pem(), "the old CA still signs");
        assert_eq!(certs_of(&trust_bundle(d, &still_old)), [certs_of(old.cert_pem()), certs_of(&next_pem)].concat(), "both trusted, the signing one first");

        assert!(apply(d, "demo", Step::Switch).unwrap());
        assert!(!apply(d, "demo", Step::Switch).unwrap(), "idempotent");
        let new = load_or_create_ca(d, "demo").unwrap();
        assert_eq!(certs_of(new.cert_pem()), certs_of(&next_pem), "the new CA signs");
        assert_eq!(certs_of(&trust_bundle(d, &new)), [certs_of(&next_pem), certs_of(old.cert_pem())].concat(), "both trusted, the new one first");
        verify_issued_by(&fs::read_to_string(d.join("admin.crt")).unwrap(), &next_pem).expect("the admin certificate is the new CA's");
        let (new_serving, _) = serving_certificate(&new, d, &["localhost".into()], &[], LEAF_VALIDITY).unwrap();
        assert_ne!(new_serving, old_serving, "a serving certificate of the old CA is issued again");
        verify_issued_by(&new_serving, &next_pem).unwrap();

        assert!(apply(d, "demo", Step::Finish).unwrap());
        assert!(!apply(d, "demo", Step::Finish).unwrap(), "idempotent");
        assert_eq!(certs_of(&trust_bundle(d, &new)), certs_of(&next_pem), "the new CA alone");
        assert!(!d.join(TRUSTED).exists() && !d.join("ca-next.key").exists() && !d.join("ca-next.crt").exists());
    }

    #[test]
    fn finishing_before_the_switch_is_refused_and_changes_nothing() {
        let dir = tempfile::tempdir().unwrap();
        let d = dir.path();
        load_or_create_ca(d, "demo").unwrap();
        apply(d, "demo", Step::Prepare).unwrap();
        apply(d, "demo", Step::Trust).unwrap();
        let err = apply(d, "demo", Step::Finish).unwrap_err();
        assert!(err.to_string().contains("switch"), "{err}");
        assert!(d.join(TRUSTED).exists() && d.join("ca-next.key").exists());
    }

    #[test]
    fn a_switch_interrupted_after_the_key_is_done_again() {
        let dir = tempfile::tempdir().unwrap();
        let d = dir.path();
        load_or_create_ca(d, "demo").unwrap();
        apply(d, "demo", Step::Prepare).unwrap();
        apply(d, "demo", Step::Trust).unwrap();
        // The new key written, the certificate not: the pair does not load.
        fs::copy(d.join("ca-next.key"), d.join("ca.key")).unwrap();
        assert!(load_or_create_ca(d, "demo").is_err());
        assert!(apply(d, "demo", Step::Switch).unwrap());
        let new = load_or_create_ca(d, "demo").expect("a matching pair again");
        assert_eq!(new.cert_pem(), fs::read_to_string(d.join("ca-next.crt")).unwrap());
    }

    #[test]
    fn a_trust_bundle_file_without_the_signing_ca_still_starts_with_it() {
        let dir = tempfile::tempdir().unwrap();
        let d = dir.path();
        let ca = load_or_create_ca(d, "demo").unwrap();
        assert_eq!(trust_bundle(d, &ca), certs_of(ca.cert_pem()).concat(), "no trust file: the signing CA alone");
        let other = ClusterCa::generate("other").unwrap();
        fs::write(d.join(TRUSTED), format!("garbage\n{}", other.cert_pem())).unwrap();
        assert_eq!(certs_of(&trust_bundle(d, &ca)), [certs_of(ca.cert_pem()), certs_of(other.cert_pem())].concat());
    }
}
