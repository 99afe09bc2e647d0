//! `clusterctl rotate-certs` from the operator's side: every running master issues its admin
//! certificate again (`clusterctl node rotate-admin`, over SSH), in slot order, and the first
//! master's new pair becomes the operator's credential. The CLI then revokes, with the new
//! credential, every `admin` certificate issued before it (`apiserver::revocation`), so that an
//! old or leaked `admin.key` stops working at once rather than in a year. [`rotate_ca`] rotates
//! the cluster CA itself with overlap (`rotate-certs --ca`).

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

/// Told, after each stage of a CA rotation, what the operator's kubeconfig is to hold from then
/// on: the CAs to trust (the signing one first) and the admin credential.
pub type KubeconfigUpdate<'a> = dyn FnMut(&AdminCredential) -> Result<(), BootstrapError> + Send + 'a;

/// How long a worker may take to hold certificates of the new CA after its agent restarted.
const RENEWED_DEADLINE: std::time::Duration = std::time::Duration::from_secs(120);

/// Rotates the cluster CA with overlap (`clusterctl rotate-certs --ca`): the steps of
/// [`crate::pki::rotation`] on every master in slot order (each restarted and answering before
/// the next), and after each the same trust on every worker (`ca.crt`, its agent restarted; it
/// adopts its running pods), so that no node or master ever meets a certificate it does not trust:
///
/// 1. the first master makes the next CA, which is copied to the others;
/// 2. everyone trusts both CAs, the old one still signs;
/// 3. the masters sign with the new CA (admin, serving and in-process certificates issued again);
///    the workers, given the new CA first, renew their client and serving certificates by CSR,
///    which is waited for;
/// 4. everyone trusts the new CA only.
///
/// `kubeconfig` is called after steps 2, 3 and 4 with the trust and the admin credential to use
/// from then on. Returns the final credential. Each step is idempotent: a failed rotation is run
/// again from the start.
pub async fn rotate_ca(masters: Vec<MasterSession>, workers: Vec<MasterSession>, reporter: &dyn Reporter, kubeconfig: &mut KubeconfigUpdate<'_>) -> Result<AdminCredential, BootstrapError> {
    use crate::pki::rotation::{Step, NEXT, TRUSTED};
    let masters: Vec<(String, Arc<Mutex<super::ssh::SshSession>>)> = masters.into_iter().map(|(m, s)| (m.name, Arc::new(Mutex::new(s)))).collect();
    let workers: Vec<(String, Arc<Mutex<super::ssh::SshSession>>)> = workers.into_iter().map(|(m, s)| (m.name, Arc::new(Mutex::new(s)))).collect();
    let (first_name, first) = masters.first().cloned().ok_or_else(|| BootstrapError::Other("no running master".into()))?;

    reporter.phase("making the new CA on the first master");
    step_on(&first_name, &first, Step::Prepare).await?;
    let next = read_files(&first_name, &first, &[&format!("{NEXT}.crt"), &format!("{NEXT}.key")]).await?;
    let (next_cert, next_key) = (next[0].clone(), next[1].clone());
    for (name, session) in &masters[1..] {
        let (cert, key) = (next_cert.clone(), next_key.clone());
        on_master(session, name, "copying the new CA", move |s| {
            s.upload(key.as_bytes(), &format!("{PKI_DIR}/{NEXT}.key"), 0o600)?;
            s.upload(cert.as_bytes(), &format!("{PKI_DIR}/{NEXT}.crt"), 0o644)
        })
        .await?;
        reporter.item_done(name, "new CA copied");
    }

    let mut last = None;
    for (step, doing) in [(Step::Trust, "trusting the old and the new CA"), (Step::Switch, "signing with the new CA"), (Step::Finish, "trusting the new CA only")] {
        reporter.phase(&format!("{doing}: {} master(s), one at a time", masters.len()));
        for (name, session) in &masters {
            reporter.item(name, doing);
            step_on(name, session, step).await?;
            reporter.item_done(name, "restarted, answering");
        }
        // What the first master trusts now: its trust file, or after the finish its CA alone.
        let trust_file = if step == Step::Finish { "ca.crt" } else { TRUSTED };
        let [trust, cert_pem, key_pem] = <[String; 3]>::try_from(read_files(&first_name, &first, &[trust_file, "admin.crt", "admin.key"]).await?).unwrap_or_default();
        let credential = AdminCredential { ca_pem: trust.clone(), cert_pem, key_pem };
        kubeconfig(&credential)?;
        reporter.phase(&format!("{doing}: {} worker(s)", workers.len()));
        for (name, session) in &workers {
            let trust = trust.clone();
            on_master(session, name, "giving the agent the cluster's CAs", move |s| {
                s.upload(trust.as_bytes(), &format!("{PKI_DIR}/ca.crt"), 0o644)?;
                s.sudo("systemctl restart clusterctl-worker.service")
            })
            .await?;
            reporter.item_done(name, "agent restarted");
        }
        if step == Step::Switch {
            reporter.phase("waiting for the workers' certificates from the new CA");
            for (name, session) in &workers {
                wait_renewed(name, session, &next_cert).await?;
                reporter.item_done(name, "client and serving certificates from the new CA");
            }
        }
        last = Some(credential);
    }
    last.ok_or_else(|| BootstrapError::Other("the CA rotation has no stages".into()))
}

/// Runs `clusterctl node rotate-ca --step STEP` on a master.
async fn step_on(name: &str, session: &Arc<Mutex<super::ssh::SshSession>>, step: crate::pki::rotation::Step) -> Result<(), BootstrapError> {
    let arg = clap::ValueEnum::to_possible_value(&step).map(|v| v.get_name().to_string()).unwrap_or_default();
    let command = format!("/usr/local/bin/clusterctl node rotate-ca --step {arg}");
    on_master(session, name, &format!("the CA rotation's {arg} step"), move |s| s.sudo(&command)).await?;
    Ok(())
}

/// Reads files of a node's PKI folder, each required.
async fn read_files(name: &str, session: &Arc<Mutex<super::ssh::SshSession>>, files: &[&str]) -> Result<Vec<String>, BootstrapError> {
    let paths: Vec<String> = files.iter().map(|f| format!("{PKI_DIR}/{f}")).collect();
    let read = {
        let paths = paths.clone();
        move |s: &super::ssh::SshSession| paths.iter().map(|p| read_root_file(s, p)).collect::<Result<Vec<Option<String>>, _>>()
    };
    let found = on_master(session, name, "reading the PKI files", read).await?;
    found
        .into_iter()
        .zip(paths)
        .map(|(f, path)| f.ok_or_else(|| BootstrapError::Node { node: name.to_string(), step: "reading the PKI files".into(), message: format!("{path} is missing") }))
        .collect()
}

/// Waits until a worker's client and serving certificates are the new CA's.
async fn wait_renewed(name: &str, session: &Arc<Mutex<super::ssh::SshSession>>, new_ca: &str) -> Result<(), BootstrapError> {
    let started = std::time::Instant::now();
    loop {
        let files = read_files(name, session, &["node.crt", "serving.crt"]).await;
        let renewed = files.as_ref().is_ok_and(|f| f.iter().all(|c| crate::pki::verify_issued_by(c, new_ca).is_ok()));
        if renewed {
            return Ok(());
        }
        if started.elapsed() > RENEWED_DEADLINE {
            return Err(BootstrapError::Node {
                node: name.to_string(),
                step: "renewing its certificates from the new CA".into(),
                message: format!("its node.crt and serving.crt are not both from the new CA after {} s (journalctl -u clusterctl-worker says why); both CAs stay trusted, run rotate-certs --ca again", RENEWED_DEADLINE.as_secs()),
            });
        }
        tokio::time::sleep(std::time::Duration::from_millis(500)).await;
    }
}
