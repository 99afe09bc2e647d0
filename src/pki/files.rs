//! Writing files that hold keys or tokens: mode 0600 from the first byte, through a temporary file
//! in the same folder, fsynced, then renamed over the target, so that a reader (or a crash) never
//! sees a half-written or briefly world-readable key.

use std::fs;
use std::io::Write;
use std::os::unix::fs::{DirBuilderExt, OpenOptionsExt, PermissionsExt};
use std::path::Path;

use super::{ClusterCa, PkiError};

/// Writes `contents` to `path` with `mode`, atomically (temporary file, fsync, rename). Missing
/// parent folders are created with mode 0700.
pub fn write_file_atomic(path: &Path, contents: &[u8], mode: u32) -> std::io::Result<()> {
    let parent = path.parent().filter(|p| !p.as_os_str().is_empty()).unwrap_or(Path::new("."));
    if !parent.exists() {
        fs::DirBuilder::new().recursive(true).mode(0o700).create(parent)?;
    }
    let file_name = path.file_name().ok_or_else(|| std::io::Error::new(std::io::ErrorKind::InvalidInput, "path has no file name"))?;
    let mut tmp_name = std::ffi::OsString::from(".");
    tmp_name.push(file_name);
    tmp_name.push(format!(".tmp-{}", std::process::id()));
    let tmp = parent.join(tmp_name);
    let result = (|| {
        let mut f = fs::OpenOptions::new().write(true).create(true).truncate(true).mode(mode).open(&tmp)?;
        // A temporary file left by a crash keeps its old mode; `mode` above applies only on creation.
        f.set_permissions(fs::Permissions::from_mode(mode))?;
        f.write_all(contents)?;
        f.sync_all()?;
        fs::rename(&tmp, path)?;
        // Make the rename itself durable.
        fs::File::open(parent).and_then(|d| d.sync_all())
    })();
    if result.is_err() {
        let _ = fs::remove_file(&tmp);
    }
    result
}

/// Writes a private key (or any secret) readable by its owner only (0600).
pub fn write_key_file(path: &Path, pem: &str) -> Result<(), PkiError> {
    write_file_atomic(path, pem.as_bytes(), 0o600).map_err(|source| PkiError::Io { path: path.to_path_buf(), source })
}

/// Loads the cluster CA from `ca.crt` and `ca.key` in `dir`, making it on the very first start
/// (a master's, or an HA master's `node etcd-setup`, whichever runs first).
pub fn load_or_create_ca(dir: &Path, cluster: &str) -> Result<ClusterCa, PkiError> {
    load_or_create_named_ca(dir, "ca", cluster)
}

/// The stem of etcd's own CA's files (`etcd-ca.crt`, `etcd-ca.key`): it signs the etcd members'
/// and the API servers' etcd client certificates only, so that no certificate of the cluster CA
/// (a node's, a user's) is ever accepted by etcd.
pub const ETCD_CA: &str = "etcd-ca";

/// Loads etcd's CA from `dir` ([`ETCD_CA`]), making it on the first master's first `etcd-setup`.
pub fn load_or_create_etcd_ca(dir: &Path, cluster: &str) -> Result<ClusterCa, PkiError> {
    load_or_create_named_ca(dir, ETCD_CA, &format!("{cluster}-etcd"))
}

/// Loads the CA `<stem>.crt`/`<stem>.key` in `dir`, or makes one named after `name`.
fn load_or_create_named_ca(dir: &Path, stem: &str, name: &str) -> Result<ClusterCa, PkiError> {
    let (cert, key) = (dir.join(format!("{stem}.crt")), dir.join(format!("{stem}.key")));
    if let (Ok(c), Ok(k)) = (fs::read_to_string(&cert), fs::read_to_string(&key)) {
        return ClusterCa::from_pem(&c, &k);
    }
    let ca = ClusterCa::generate(name)?;
    write_key_file(&key, ca.key_pem())?;
    // Written after the key: a certificate without its key would be loaded as a broken CA.
    fs::write(&cert, ca.cert_pem()).map_err(|source| PkiError::Io { path: cert.clone(), source })?;
    Ok(ca)
}

/// The API server's serving certificate and key in `dir` (`apiserver.crt`, `apiserver.key`),
/// issued again, valid for `lifetime`, when they do not cover every wanted name (the names a
/// master is reached by change when a load balancer is added or a master replaced), when two
/// thirds of their life has passed ([`super::renewal_due`]: the master renews it while it runs
/// too), when the key is not the certificate's (a renewal interrupted between the two writes), or
/// when the signing CA did not issue them (after a CA rotation's switch).
pub fn serving_certificate(ca: &ClusterCa, dir: &Path, names: &[String], ips: &[std::net::IpAddr], lifetime: std::time::Duration) -> Result<(String, String), PkiError> {
    let (cert, key) = (dir.join("apiserver.crt"), dir.join("apiserver.key"));
    let wanted: Vec<String> = names.iter().cloned().chain(ips.iter().map(|i| i.to_string())).collect();
    if let (Ok(c), Ok(k)) = (fs::read_to_string(&cert), fs::read_to_string(&key)) {
        let due = super::renewal_due(&c).map(|due| due <= std::time::SystemTime::now()).unwrap_or(true);
        // Not the signing CA's: the CA was rotated.
        if super::cert_matches_names(&c, &wanted).unwrap_or(false) && !due && pair_matches(&c, &k) && ca.verify_issued(&c).is_ok() {
            return Ok((c, k));
        }
        tracing::info!("issuing the serving certificate for {wanted:?} again");
    }
    let issued = ca.issue_server_valid_for(names, ips, lifetime)?;
    // The key first: until the certificate follows, the old pair's certificate does not match
    // it and is issued again at the next start.
    write_key_file(&key, &issued.key_pem)?;
    fs::write(&cert, &issued.cert_pem).map_err(|source| PkiError::Io { path: cert.clone(), source })?;
    Ok((issued.cert_pem, issued.key_pem))
}

/// Whether `key_pem` is the private key of `cert_pem`'s public key.
pub fn pair_matches(cert_pem: &str, key_pem: &str) -> bool {
    let Ok(key) = rcgen::KeyPair::from_pem(key_pem) else { return false };
    let Ok((_, pem)) = x509_parser::pem::parse_x509_pem(cert_pem.as_bytes()) else { return false };
    let Ok(cert) = pem.parse_x509() else { return false };
    rcgen::PublicKeyData::subject_public_key_info(&key) == cert.tbs_certificate.subject_pki.raw
}

/// The admin's client certificate in `dir` (`admin.crt`, `admin.key`), made once; the operator
/// fetches it over SSH.
pub fn admin_certificate(ca: &ClusterCa, dir: &Path) -> Result<(), PkiError> {
    let (cert, key) = (dir.join("admin.crt"), dir.join("admin.key"));
    if cert.exists() && key.exists() {
        return Ok(());
    }
    let issued = ca.issue_client("admin", &["system:masters"])?;
    write_key_file(&key, &issued.key_pem)?;
    // Written last: its presence tells the operator that the PKI is complete.
    write_key_file(&cert, &issued.cert_pem)?;
    Ok(())
}

/// Issues a new admin certificate and key in `dir` over the old ones (key first: a half-done
/// rotation leaves the old pair's certificate unreadable with the new key, and is done again).
/// Returns the new certificate's PEM.
pub fn rotate_admin_certificate(ca: &ClusterCa, dir: &Path) -> Result<String, PkiError> {
    let issued = ca.issue_client("admin", &["system:masters"])?;
    write_key_file(&dir.join("admin.key"), &issued.key_pem)?;
    write_key_file(&dir.join("admin.crt"), &issued.cert_pem)?;
    Ok(issued.cert_pem)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn key_files_are_0600_and_replace_the_old_contents() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("pki/ca.key");
        write_key_file(&path, "first").unwrap();
        write_key_file(&path, "second").unwrap();
        assert_eq!(fs::read_to_string(&path).unwrap(), "second");
        assert_eq!(fs::metadata(&path).unwrap().permissions().mode() & 0o777, 0o600);
        assert_eq!(fs::metadata(dir.path().join("pki")).unwrap().permissions().mode() & 0o077, 0);
        let leftovers: Vec<_> = fs::read_dir(dir.path().join("pki")).unwrap().map(|e| e.unwrap().file_name()).collect();
        assert_eq!(leftovers, vec![std::ffi::OsString::from("ca.key")]);
    }

    #[test]
    fn an_existing_world_readable_file_becomes_0600() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("token");
        fs::write(&path, "old").unwrap();
        fs::set_permissions(&path, fs::Permissions::from_mode(0o644)).unwrap();
        write_key_file(&path, "new").unwrap();
        assert_eq!(fs::metadata(&path).unwrap().permissions().mode() & 0o777, 0o600);
    }

    #[test]
    fn a_failed_write_names_the_path() {
        let err = write_key_file(Path::new("/proc/definitely/not/writable/key"), "x").unwrap_err();
        assert!(err.to_string().contains("/proc/definitely/not/writable/key"), "{err}");
    }

    #[test]
    fn the_ca_is_made_once_and_loaded_after() {
        let dir = tempfile::tempdir().unwrap();
        let made = load_or_create_ca(dir.path(), "demo").unwrap();
        assert_eq!(fs::metadata(dir.path().join("ca.key")).unwrap().permissions().mode() & 0o777, 0o600);
        let loaded = load_or_create_ca(dir.path(), "demo").unwrap();
        assert_eq!(loaded.cert_pem(), made.cert_pem(), "a second start keeps the first CA");
    }

    #[test]
    fn a_ca_key_that_is_not_the_certificates_is_refused() {
        let (one, other) = (tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap());
        load_or_create_ca(one.path(), "demo").unwrap();
        load_or_create_ca(other.path(), "demo").unwrap();
        fs::copy(other.path().join("ca.key"), one.path().join("ca.key")).unwrap();
        assert!(load_or_create_ca(one.path(), "demo").is_err());
    }

    #[test]
    fn the_serving_certificate_is_kept_until_a_name_is_missing() {
        let dir = tempfile::tempdir().unwrap();
        let ca = load_or_create_ca(dir.path(), "demo").unwrap();
        let ip = std::net::IpAddr::from([10, 0, 1, 5]);
        let (first, _) = serving_certificate(&ca, dir.path(), &["localhost".into()], &[ip], super::super::LEAF_VALIDITY).unwrap();
        let (again, _) = serving_certificate(&ca, dir.path(), &["localhost".into()], &[ip], super::super::LEAF_VALIDITY).unwrap();
        assert_eq!(first, again);
        let (wider, _) = serving_certificate(&ca, dir.path(), &["localhost".into(), "api.example".into()], &[ip], super::super::LEAF_VALIDITY).unwrap();
        assert_ne!(first, wider, "a new name issues a new certificate");
        assert!(super::super::cert_matches_names(&wider, &["api.example".into(), "10.0.1.5".into()]).unwrap());
    }

    #[test]
    fn the_serving_certificate_is_issued_again_when_due_or_when_its_key_is_not_its_own() {
        use super::super::LEAF_VALIDITY;
        let dir = tempfile::tempdir().unwrap();
        let ca = load_or_create_ca(dir.path(), "demo").unwrap();
        let names = ["localhost".to_string()];
        // A one-second certificate is due (two thirds into its life) a second later.
        let (short, _) = serving_certificate(&ca, dir.path(), &names, &[], std::time::Duration::from_secs(1)).unwrap();
        std::thread::sleep(std::time::Duration::from_millis(1100));
        let (renewed, key) = serving_certificate(&ca, dir.path(), &names, &[], LEAF_VALIDITY).unwrap();
        assert_ne!(short, renewed, "due: issued again");
        assert_eq!(serving_certificate(&ca, dir.path(), &names, &[], LEAF_VALIDITY).unwrap().0, renewed, "not due: kept");
        // Interrupted between the key's write and the certificate's.
        fs::write(dir.path().join("apiserver.key"), rcgen::KeyPair::generate().unwrap().serialize_pem()).unwrap();
        let (fixed, fixed_key) = serving_certificate(&ca, dir.path(), &names, &[], LEAF_VALIDITY).unwrap();
        assert!(fixed != renewed && fixed_key != key && super::pair_matches(&fixed, &fixed_key));
    }

    #[test]
    fn the_admin_certificate_is_made_once_with_its_key_0600() {
        let dir = tempfile::tempdir().unwrap();
        let ca = load_or_create_ca(dir.path(), "demo").unwrap();
        admin_certificate(&ca, dir.path()).unwrap();
        let first = fs::read_to_string(dir.path().join("admin.crt")).unwrap();
        admin_certificate(&ca, dir.path()).unwrap();
        assert_eq!(fs::read_to_string(dir.path().join("admin.crt")).unwrap(), first);
        assert_eq!(fs::metadata(dir.path().join("admin.key")).unwrap().permissions().mode() & 0o777, 0o600);
    }
}
