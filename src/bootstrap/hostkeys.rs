//! Host keys: parsed from cloud-init's console block, compared with what sshd offers.

use base64::Engine;
use sha2::{Digest, Sha256};

/// The console lines between which cloud-init prints a machine's SSH host keys.
pub const BEGIN_MARKER: &str = "-----BEGIN SSH HOST KEY KEYS-----";
/// See [`BEGIN_MARKER`].
pub const END_MARKER: &str = "-----END SSH HOST KEY KEYS-----";

/// An SSH public host key: its algorithm name and its wire-format blob.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HostKey {
    pub algorithm: String,
    pub blob: Vec<u8>,
}

impl HostKey {
    /// Parses an OpenSSH public key line (`ssh-ed25519 AAAA... comment`).
    pub fn parse_openssh(line: &str) -> Option<HostKey> {
        let mut parts = line.split_whitespace();
        let algorithm = parts.next()?.to_string();
        let blob = base64::engine::general_purpose::STANDARD.decode(parts.next()?).ok()?;
        let key = HostKey { algorithm, blob };
        (key.blob_algorithm().as_deref() == Some(key.algorithm.as_str())).then_some(key)
    }

    /// A key from the blob sshd offered; the algorithm is read from the blob itself.
    pub fn from_blob(blob: &[u8]) -> Option<HostKey> {
        let key = HostKey { algorithm: String::new(), blob: blob.to_vec() };
        let algorithm = key.blob_algorithm()?;
        Some(HostKey { algorithm, ..key })
    }

    /// The algorithm named at the start of the blob (a length-prefixed string).
    fn blob_algorithm(&self) -> Option<String> {
        let len = u32::from_be_bytes(self.blob.get(..4)?.try_into().ok()?) as usize;
        String::from_utf8(self.blob.get(4..4 + len)?.to_vec()).ok()
    }

    /// The OpenSSH SHA-256 fingerprint, `SHA256:<base64 without padding>`.
    pub fn fingerprint(&self) -> String {
        format!("SHA256:{}", base64::engine::general_purpose::STANDARD_NO_PAD.encode(Sha256::digest(&self.blob)))
    }

    /// The key as an OpenSSH public key line.
    pub fn to_openssh(&self) -> String {
        format!("{} {}", self.algorithm, base64::engine::general_purpose::STANDARD.encode(&self.blob))
    }
}

/// The host keys a machine printed on its console, between cloud-init's markers.
/// A console with several blocks (after reboots) yields the last one.
pub fn from_console(console: &str) -> Vec<HostKey> {
    let mut found = Vec::new();
    let mut inside = false;
    let mut current = Vec::new();
    for line in console.lines() {
        // Console lines may carry a prefix (timestamps, "ci-info:"); look for the markers anywhere.
        if line.contains(BEGIN_MARKER) {
            inside = true;
            current.clear();
        } else if line.contains(END_MARKER) {
            if inside {
                found = std::mem::take(&mut current);
            }
            inside = false;
        } else if inside {
            let start = line.find("ssh-").or_else(|| line.find("ecdsa-"));
            if let Some(key) = start.and_then(|s| HostKey::parse_openssh(&line[s..])) {
                current.push(key);
            }
        }
    }
    found
}

/// Why an offered host key was refused.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Mismatch {
    /// Fingerprints of the keys we expected.
    pub expected: Vec<String>,
    /// Fingerprint of the key offered.
    pub offered: String,
}

/// Checks an offered key against the expected ones: it must be one of them exactly.
pub fn verify(expected: &[HostKey], offered: &HostKey) -> Result<(), Mismatch> {
    if expected.iter().any(|k| k == offered) {
        return Ok(());
    }
    Err(Mismatch { expected: expected.iter().map(HostKey::fingerprint).collect(), offered: offered.fingerprint() })
}

#[cfg(test)]
mod tests {
    use super::*;

    const ED25519: &str = "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIBxvl8bXzBVu8d1wRcR1UcQlkrZ2mW7bWeH2cBq3fU0u root@node";
    const OTHER: &str = "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIHh0+7x8JbZ3m6w3Qw0v3P7m0K6f0i6y4oZl2q7Q9nKX";

    #[test]
    fn console_block_yields_the_keys_between_the_markers() {
        let console = format!("[  1.0] boot\n{BEGIN_MARKER}\n{ED25519}\n{END_MARKER}\nlogin:");
        let keys = from_console(&console);
        assert_eq!(keys.len(), 1);
        assert_eq!(keys[0].algorithm, "ssh-ed25519");
        assert_eq!(keys[0].to_openssh(), ED25519.rsplit_once(' ').unwrap().0);
    }

    #[test]
    fn the_last_block_wins_after_a_reboot() {
        let console = format!("{BEGIN_MARKER}\n{ED25519}\n{END_MARKER}\n{BEGIN_MARKER}\n{OTHER}\n{END_MARKER}\n");
        assert_eq!(from_console(&console), vec![HostKey::parse_openssh(OTHER).unwrap()]);
    }

    #[test]
    fn a_console_without_the_block_has_no_keys() {
        assert!(from_console("just a kernel log\n").is_empty());
        assert!(from_console(&format!("{BEGIN_MARKER}\n{ED25519}\n")).is_empty(), "an unterminated block is not trusted");
    }

    #[test]
    fn a_different_key_is_a_mismatch_naming_both_fingerprints() {
        let expected = vec![HostKey::parse_openssh(ED25519).unwrap()];
        let offered = HostKey::parse_openssh(OTHER).unwrap();
        let m = verify(&expected, &offered).unwrap_err();
        assert_eq!(m.expected, vec![expected[0].fingerprint()]);
        assert_eq!(m.offered, offered.fingerprint());
        assert!(m.offered.starts_with("SHA256:"));
        assert!(verify(&expected, &expected[0]).is_ok());
    }

    #[test]
    fn the_algorithm_is_read_from_the_blob() {
        let key = HostKey::parse_openssh(ED25519).unwrap();
        assert_eq!(HostKey::from_blob(&key.blob).unwrap(), key);
        assert!(HostKey::parse_openssh("ssh-rsa AAAAC3NzaC1lZDI1NTE5AAAAIBxvl8bXzBVu8d1wRcR1UcQlkrZ2mW7bWeH2cBq3fU0u").is_none());
    }
}

/// Host keys recorded on first use, per instance, in the cluster's folder (`known_hosts`).
#[derive(Debug, Clone)]
pub struct KnownHosts {
    path: std::path::PathBuf,
}

impl KnownHosts {
    /// The record kept at `path` (one `<instance id> <algorithm> <base64>` line per key).
    pub fn at(path: std::path::PathBuf) -> Self {
        KnownHosts { path }
    }

    /// The keys recorded for an instance.
    pub fn get(&self, instance_id: &str) -> Vec<HostKey> {
        std::fs::read_to_string(&self.path)
            .unwrap_or_default()
            .lines()
            .filter_map(|l| l.split_once(' '))
            .filter(|(id, _)| *id == instance_id)
            .filter_map(|(_, key)| HostKey::parse_openssh(key))
            .collect()
    }

    /// Records an instance's key (replacing what was recorded for it).
    pub fn record(&self, instance_id: &str, key: &HostKey) -> std::io::Result<()> {
        let text = std::fs::read_to_string(&self.path).unwrap_or_default();
        let mut lines: Vec<String> = text.lines().filter(|l| !l.starts_with(&format!("{instance_id} "))).map(str::to_string).collect();
        lines.push(format!("{instance_id} {}", key.to_openssh()));
        if let Some(dir) = self.path.parent() {
            std::fs::create_dir_all(dir)?;
        }
        std::fs::write(&self.path, lines.join("\n") + "\n")
    }
}
