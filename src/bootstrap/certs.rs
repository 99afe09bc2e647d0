//! `clusterctl rotate-certs` from the operator's side: every running master issues its admin
//! certificate again (`clusterctl node rotate-admin`, over SSH), in slot order, and the first
//! master's new pair becomes the operator's credential. The CLI then revokes, with the new
//! credential, every `admin` certificate issued before it (`apiserver::revocation`), so that an
//! old or leaked `admin.key` stops working at once rather than in a year.

use std::sync::{Arc, Mutex};

use super::backup::{on_master, MasterSession};
use super::install::read_root_file;
use super::{BootstrapError, PKI_DIR};
use crate::report::Reporter;

/// The admin credential a rotation gave: the CA and the new certificate and key (PEM).
pub struct AdminCredential {
    pub ca_pem: String,
    pub cert_pem: String,
    pub key_pem: String,
}

impl std::fmt::Debug for AdminCredential {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("AdminCredential(<redacted>)")
    }
}

/// Issues every master's admin certificate again; returns the first master's new credential.
pub async fn rotate_admin(masters: Vec<MasterSession>, reporter: &dyn Reporter) -> Result<AdminCredential, BootstrapError> {
    reporter.phase(&format!("issuing the admin certificate again on {} master(s)", masters.len()));
    let mut first = None;
    for (m, session) in masters {
        let session = Arc::new(Mutex::new(session));
        reporter.item(&m.name, "issuing a new admin certificate");
        on_master(&session, &m.name, "issuing a new admin certificate", |s| s.sudo("/usr/local/bin/clusterctl node rotate-admin")).await?;
        if first.is_none() {
            let node = m.name.clone();
            let read = move |s: &super::ssh::SshSession| -> Result<Vec<Option<String>>, super::ssh::SshError> {
                ["ca.crt", "admin.crt", "admin.key"].iter().map(|f| read_root_file(s, &format!("{PKI_DIR}/{f}"))).collect()
            };
            let files = on_master(&session, &m.name, "reading the new admin certificate", read).await?;
            let [Some(ca_pem), Some(cert_pem), Some(key_pem)] = <[Option<String>; 3]>::try_from(files).unwrap_or_default() else {
                return Err(BootstrapError::Node { node, step: "reading the new admin certificate".into(), message: format!("{PKI_DIR}/admin.crt, admin.key or ca.crt is missing") });
            };
            first = Some(AdminCredential { ca_pem, cert_pem, key_pem });
        }
        reporter.item_done(&m.name, "new admin certificate issued");
    }
    first.ok_or_else(|| BootstrapError::Other("no running master".into()))
}
