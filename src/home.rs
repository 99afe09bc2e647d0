//! The operator's per-cluster folder under `$CLUSTERCTL_HOME` (default `~/.clusterctl`).
//!
//! `<home>/<cluster>/ssh/id_ed25519[.pub]` holds the cluster's dedicated SSH key;
//! later the cluster's credentials live beside it. Folders are mode 0700 and
//! files holding keys 0600.

use std::fs;
use std::io::Write;
use std::os::unix::fs::{OpenOptionsExt, PermissionsExt};
use std::path::{Path, PathBuf};

use thiserror::Error;

use crate::spec::{ClusterSpec, SshKeySource};

/// Errors reading or writing the cluster's local files.
#[derive(Debug, Error)]
pub enum HomeError {
    #[error("{action} {path}")]
    Io { action: &'static str, path: PathBuf, #[source] source: std::io::Error },
    #[error("generating the cluster's SSH key: {0}")]
    KeyGen(String),
    #[error("reading SSH public key {path}: {message}")]
    BadKey { path: PathBuf, message: String },
}

/// The cluster's SSH key: where the private half lives and the public half in OpenSSH form.
#[derive(Debug, Clone)]
pub struct SshKey {
    pub private_path: PathBuf,
    pub public_openssh: String,
}

/// One cluster's local folder.
#[derive(Debug, Clone)]
pub struct ClusterHome {
    pub dir: PathBuf,
}

/// The root folder: `$CLUSTERCTL_HOME`, else `~/.clusterctl`.
pub fn root() -> PathBuf {
    if let Some(dir) = std::env::var_os("CLUSTERCTL_HOME").filter(|d| !d.is_empty()) {
        return PathBuf::from(dir);
    }
    let home = std::env::var_os("HOME").map(PathBuf::from).unwrap_or_else(|| PathBuf::from("."));
    home.join(".clusterctl")
}

fn io<'a>(action: &'static str, path: &'a Path) -> impl FnOnce(std::io::Error) -> HomeError + 'a {
    move |source| HomeError::Io { action, path: path.to_path_buf(), source }
}

/// Makes a folder accessible to its owner only.
pub fn restrict_dir(path: &Path) -> std::io::Result<()> {
    fs::set_permissions(path, fs::Permissions::from_mode(0o700))
}

fn private_dir(path: &Path) -> Result<(), HomeError> {
    fs::create_dir_all(path).map_err(io("creating folder", path))?;
    fs::set_permissions(path, fs::Permissions::from_mode(0o700)).map_err(io("restricting folder", path))
}

/// Writes a file readable only by its owner, through a temporary file and a rename.
pub fn write_private(path: &Path, contents: &[u8]) -> Result<(), HomeError> {
    let tmp = path.with_extension("tmp");
    let mut f = fs::OpenOptions::new().write(true).create(true).truncate(true).mode(0o600).open(&tmp).map_err(io("writing", &tmp))?;
    f.write_all(contents).and_then(|_| f.sync_all()).map_err(io("writing", &tmp))?;
    fs::rename(&tmp, path).map_err(io("renaming into place", path))
}

impl ClusterHome {
    /// The folder of a cluster.
    pub fn of(cluster: &str) -> Self {
        ClusterHome { dir: root().join(cluster) }
    }

    /// The SSH key the cluster's machines accept: the spec's own, or a dedicated
    /// ED25519 key generated once and kept here.
    pub fn ssh_key(&self, spec: &ClusterSpec) -> Result<SshKey, HomeError> {
        match &spec.ssh.key {
            SshKeySource::File { private, public } => {
                let text = fs::read_to_string(public).map_err(io("reading", public))?;
                let key = ssh_key::PublicKey::from_openssh(text.trim())
                    .map_err(|e| HomeError::BadKey { path: public.clone(), message: e.to_string() })?;
                let public_openssh = key.to_openssh().map_err(|e| HomeError::BadKey { path: public.clone(), message: e.to_string() })?;
                Ok(SshKey { private_path: private.clone(), public_openssh })
            }
            SshKeySource::Generated => self.generated_key(),
        }
    }

    fn generated_key(&self) -> Result<SshKey, HomeError> {
        let dir = self.dir.join("ssh");
        let private_path = dir.join("id_ed25519");
        let public_path = dir.join("id_ed25519.pub");
        if private_path.exists() {
            let text = fs::read_to_string(&private_path).map_err(io("reading", &private_path))?;
            let key = ssh_key::PrivateKey::from_openssh(&text).map_err(|e| HomeError::BadKey { path: private_path.clone(), message: e.to_string() })?;
            let public_openssh = key.public_key().to_openssh().map_err(|e| HomeError::KeyGen(e.to_string()))?;
            return Ok(SshKey { private_path, public_openssh });
        }
        private_dir(&self.dir)?;
        private_dir(&dir)?;
        let key = ssh_key::PrivateKey::random(&mut ssh_key::rand_core::OsRng, ssh_key::Algorithm::Ed25519).map_err(|e| HomeError::KeyGen(e.to_string()))?;
        let private = key.to_openssh(ssh_key::LineEnding::LF).map_err(|e| HomeError::KeyGen(e.to_string()))?;
        let mut public = key.public_key().clone();
        public.set_comment(format!("clusterctl-{}", self.dir.file_name().and_then(|n| n.to_str()).unwrap_or("cluster")));
        let public_openssh = public.to_openssh().map_err(|e| HomeError::KeyGen(e.to_string()))?;
        write_private(&private_path, private.as_bytes())?;
        fs::write(&public_path, format!("{public_openssh}\n")).map_err(io("writing", &public_path))?;
        Ok(SshKey { private_path, public_openssh })
    }

    /// Removes the cluster's folder (after a complete destroy).
    pub fn remove(&self) -> Result<(), HomeError> {
        match fs::remove_dir_all(&self.dir) {
            Err(e) if e.kind() != std::io::ErrorKind::NotFound => Err(HomeError::Io { action: "removing", path: self.dir.clone(), source: e }),
            _ => Ok(()),
        }
    }
}
