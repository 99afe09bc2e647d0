//! SSH sessions on ssh2, on blocking threads.
//!
//! [`connect`] retries with bounded back-off while a machine boots (connection refused, timeouts,
//! the key not yet authorized) until a deadline, and verifies the host key before anything is
//! sent: a key that differs from the pinned one is a hard error, never retried or ignored.

use std::io::Read;
use std::net::{SocketAddr, TcpStream};
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use sha2::{Digest, Sha256};
use ssh2::{MethodType, Session};
use thiserror::Error;

use super::hostkeys::{self, HostKey};

/// Errors of SSH work, each naming the node.
#[derive(Debug, Error)]
pub enum SshError {
    /// The machine did not accept us before the deadline.
    #[error("connecting to {node} ({address}) over SSH: gave up after {waited:?}; last error: {last}")]
    Unreachable { node: String, address: SocketAddr, waited: Duration, last: String },
    /// The machine offered a host key other than the expected one.
    #[error("host key of {node} ({address}) does not match: expected {}, offered {offered}", expected.join(" or "))]
    HostKeyMismatch { node: String, address: SocketAddr, expected: Vec<String>, offered: String },
    /// A command exited non-zero.
    #[error("running `{command}` on {node}: exit status {status}: {stderr}")]
    Command { node: String, command: String, status: i32, stderr: String },
    /// The session broke.
    #[error("{action} on {node}: {message}")]
    Session { node: String, action: String, message: String },
}

/// How to decide whether a machine's host key is the right one.
#[derive(Debug, Clone)]
pub enum HostKeyTrust {
    /// Accept only these keys (pinned from the machine's console output).
    Pinned(Vec<HostKey>),
    /// Accept whatever key is offered the first time; the caller records it (see [`SshSession::host_key`]).
    FirstUse,
}

/// Where and as whom to log in.
#[derive(Debug, Clone)]
pub struct SshTarget {
    /// The node's name, for messages.
    pub node: String,
    pub address: SocketAddr,
    pub user: String,
    pub private_key: PathBuf,
    pub trust: HostKeyTrust,
}

/// What a remote command printed and how it exited.
#[derive(Debug, Clone)]
pub struct CommandOutput {
    pub status: i32,
    pub stdout: String,
    pub stderr: String,
}

/// An authenticated SSH session with a verified host key.
pub struct SshSession {
    session: Session,
    target: SshTarget,
    host_key: HostKey,
}

fn session_error(target: &SshTarget, action: &str, e: impl std::fmt::Display) -> SshError {
    SshError::Session { node: target.node.clone(), action: action.to_string(), message: e.to_string() }
}

/// Quotes a string for a POSIX shell.
pub fn shell_quote(s: &str) -> String {
    format!("'{}'", s.replace('\'', r"'\''"))
}

/// A shell command printing the SHA-256 (lowercase hex) of the file at `quoted_path` (already
/// shell-quoted), or nothing when it cannot be read. OpenSSL's `dgst` when the node has it (every
/// Debian with ca-certificates does): it uses the CPU's SHA instructions and hashes the binary
/// `create` installs several times faster than coreutils' `sha256sum`, the fallback.
pub fn sha256_command(quoted_path: &str) -> String {
    format!("{{ openssl dgst -sha256 -r {quoted_path} 2>/dev/null || sha256sum {quoted_path} 2>/dev/null; }} | cut -d' ' -f1")
}

/// Connects, verifies the host key and authenticates, retrying while the machine boots. Blocking.
pub fn connect(target: &SshTarget, deadline: Duration) -> Result<SshSession, SshError> {
    let start = Instant::now();
    let mut pause = Duration::from_millis(250);
    let mut last;
    loop {
        match attempt(target) {
            Ok(session) => return Ok(session),
            Err(Attempt::Fatal(e)) => return Err(e),
            Err(Attempt::Retry(message)) => last = message,
        }
        if start.elapsed() + pause > deadline {
            return Err(SshError::Unreachable { node: target.node.clone(), address: target.address, waited: start.elapsed(), last });
        }
        tracing::debug!(node = %target.node, error = %last, "ssh not ready, retrying");
        std::thread::sleep(pause);
        pause = (pause * 2).min(Duration::from_secs(3));
    }
}

enum Attempt {
    Retry(String),
    Fatal(SshError),
}

fn attempt(target: &SshTarget) -> Result<SshSession, Attempt> {
    let tcp = TcpStream::connect_timeout(&target.address, Duration::from_secs(5)).map_err(|e| Attempt::Retry(format!("tcp: {e}")))?;
    let mut session = Session::new().map_err(|e| Attempt::Retry(format!("session: {e}")))?;
    session.set_tcp_stream(tcp);
    session.set_timeout(30_000);
    // Prefer the algorithms cloud-init prints, strongest first.
    let _ = session.method_pref(MethodType::HostKey, "ssh-ed25519,ecdsa-sha2-nistp256,rsa-sha2-512,rsa-sha2-256,ssh-rsa");
    session.handshake().map_err(|e| Attempt::Retry(format!("handshake: {e}")))?;
    let offered = session
        .host_key()
        .and_then(|(blob, _)| HostKey::from_blob(blob))
        .ok_or_else(|| Attempt::Retry("the server offered no readable host key".into()))?;
    if let HostKeyTrust::Pinned(expected) = &target.trust
        && let Err(m) = hostkeys::verify(expected, &offered)
    {
        return Err(Attempt::Fatal(SshError::HostKeyMismatch {
            node: target.node.clone(),
            address: target.address,
            expected: m.expected,
            offered: m.offered,
        }));
    }
    session
        .userauth_pubkey_file(&target.user, None, &target.private_key, None)
        .map_err(|e| Attempt::Retry(format!("authenticating as {}: {e}", target.user)))?;
    if !session.authenticated() {
        return Err(Attempt::Retry(format!("not authenticated as {}", target.user)));
    }
    Ok(SshSession { session, target: target.clone(), host_key: offered })
}

impl SshSession {
    /// The host key the machine offered (and that was verified, or is to be recorded on first use).
    pub fn host_key(&self) -> &HostKey {
        &self.host_key
    }

    /// The node's name.
    pub fn node(&self) -> &str {
        &self.target.node
    }

    /// Runs a command as the login user and collects its output, whatever its exit status.
    pub fn exec(&self, command: &str) -> Result<CommandOutput, SshError> {
        self.exec_with_input(command, &format!("running `{command}`"), None)
    }

    /// Runs `command`, sends it `input` on standard input (then end of file) when given, and
    /// collects its output, whatever its exit status; `action` names it in errors.
    fn exec_with_input(&self, command: &str, action: &str, input: Option<&[u8]>) -> Result<CommandOutput, SshError> {
        let err = |e: ssh2::Error| session_error(&self.target, action, e);
        let mut channel = self.session.channel_session().map_err(err)?;
        channel.exec(command).map_err(err)?;
        if let Some(input) = input {
            std::io::Write::write_all(&mut channel, input).map_err(|e| session_error(&self.target, &format!("{action}: sending its input"), e))?;
            channel.send_eof().map_err(err)?;
        }
        let mut stdout = String::new();
        channel.read_to_string(&mut stdout).map_err(|e| session_error(&self.target, "reading output", e))?;
        let mut stderr = String::new();
        channel.stderr().read_to_string(&mut stderr).map_err(|e| session_error(&self.target, "reading errors", e))?;
        channel.wait_close().map_err(err)?;
        let status = channel.exit_status().map_err(err)?;
        Ok(CommandOutput { status, stdout, stderr })
    }

    /// Runs a command and copies its output (standard error merged in) to `sink` as it arrives, with
    /// no read timeout, until the command ends (for `logs -f`). Returns its exit status.
    pub fn stream(&self, command: &str, sink: &mut dyn std::io::Write) -> Result<i32, SshError> {
        let err = |e: ssh2::Error| session_error(&self.target, &format!("running `{command}`"), e);
        // A followed log may stay quiet for any length of time.
        self.session.set_timeout(0);
        let mut channel = self.session.channel_session().map_err(err)?;
        channel.handle_extended_data(ssh2::ExtendedData::Merge).map_err(err)?;
        channel.exec(command).map_err(err)?;
        let mut buffer = [0u8; 16 * 1024];
        loop {
            let n = channel.read(&mut buffer).map_err(|e| session_error(&self.target, "reading output", e))?;
            if n == 0 {
                break;
            }
            sink.write_all(&buffer[..n]).and_then(|()| sink.flush()).map_err(|e| session_error(&self.target, "writing output", e))?;
        }
        channel.wait_close().map_err(err)?;
        channel.exit_status().map_err(err)
    }

    /// Runs a shell script as root (`sudo -n sh -s`), its text sent on standard input so that what
    /// it holds (a token) never shows in a process list; collects its output, whatever its exit
    /// status.
    pub fn sudo_script(&self, script: &str) -> Result<CommandOutput, SshError> {
        self.exec_with_input("sudo -n sh -s", "running a script through sudo", Some(script.as_bytes()))
    }

    /// Runs a command and fails unless it exits 0.
    pub fn run(&self, command: &str) -> Result<CommandOutput, SshError> {
        let out = self.exec(command)?;
        if out.status != 0 {
            return Err(SshError::Command { node: self.target.node.clone(), command: command.to_string(), status: out.status, stderr: out.stderr.trim().to_string() });
        }
        Ok(out)
    }

    /// Runs a command as root through `sudo -n` (never prompts).
    pub fn sudo(&self, command: &str) -> Result<CommandOutput, SshError> {
        self.run(&format!("sudo -n sh -c {}", shell_quote(command)))
    }

    /// Reads a root-owned file: copied to a temporary file of the login user, received over SCP,
    /// and checked against the SHA-256 the node computes.
    pub fn download(&self, path: &str) -> Result<Vec<u8>, SshError> {
        let q = shell_quote(path);
        let digest = self.sudo(&sha256_command(&q))?.stdout.trim().to_string();
        if digest.len() != 64 {
            return Err(session_error(&self.target, &format!("reading {path}"), "the file is missing or unreadable"));
        }
        let tmp = format!("/tmp/clusterctl-download-{}-{}", &digest[..16], unique());
        let t = shell_quote(&tmp);
        self.sudo(&format!("install -m 600 -o {} {q} {t}", shell_quote(&self.target.user)))?;
        let received = (|| {
            let (mut remote, _) = self.session.scp_recv(Path::new(&tmp)).map_err(|e| session_error(&self.target, &format!("receiving {path}"), e))?;
            let mut bytes = Vec::new();
            remote.read_to_end(&mut bytes).map_err(|e| session_error(&self.target, &format!("receiving {path}"), e))?;
            let _ = remote.send_eof().and_then(|_| remote.wait_eof()).and_then(|_| remote.close()).and_then(|_| remote.wait_close());
            Ok(bytes)
        })();
        let _ = self.exec(&format!("rm -f {t}"));
        let bytes = received?;
        if hex::encode(Sha256::digest(&bytes)) != digest {
            return Err(session_error(&self.target, &format!("receiving {path}"), "the received bytes do not have the file's SHA-256"));
        }
        Ok(bytes)
    }

    /// Installs `contents` at `path` (owned by root, `mode`): sent to a temporary file, checked by
    /// SHA-256 on the node, then renamed into place. Returns false when an identical file was there.
    pub fn upload(&self, contents: &[u8], path: &str, mode: u32) -> Result<bool, SshError> {
        let digest = hex::encode(Sha256::digest(contents));
        let q = shell_quote(path);
        let current = self.exec(&format!("sudo -n sh -c {}", shell_quote(&sha256_command(&q))))?;
        if current.stdout.trim() == digest {
            let _ = self.sudo(&format!("chmod {mode:o} {q}"));
            return Ok(false);
        }
        // Names of this upload only: two processes may install the same file on one node at once
        // (`create` and the master's machine controller both bootstrapping a replacement).
        let tmp = format!("/tmp/clusterctl-upload-{}-{}", &digest[..16], unique());
        let mut remote = self
            .session
            .scp_send(Path::new(&tmp), 0o600, contents.len() as u64, None)
            .map_err(|e| session_error(&self.target, &format!("sending {path}"), e))?;
        std::io::Write::write_all(&mut remote, contents).map_err(|e| session_error(&self.target, &format!("sending {path}"), e))?;
        remote.send_eof().and_then(|_| remote.wait_eof()).and_then(|_| remote.close()).and_then(|_| remote.wait_close()).map_err(|e| session_error(&self.target, &format!("sending {path}"), e))?;
        let t = shell_quote(&tmp);
        let staged = shell_quote(&format!("{path}.clusterctl-new-{}", unique()));
        self.sudo(&format!(
            "[ \"$({hash})\" = {digest} ] && mkdir -p \"$(dirname {q})\" && install -m {mode:o} -o root -g root {t} {staged} && mv -f {staged} {q}; status=$?; rm -f {t}; exit $status",
            hash = sha256_command(&t)
        ))?;
        Ok(true)
    }
}

/// A small file for [`SshSession::upload_files`]: installed at `path`, owned by root, with `mode`.
#[derive(Debug, Clone, Copy)]
pub struct FileUpload<'a> {
    pub contents: &'a [u8],
    pub path: &'a str,
    pub mode: u32,
}

impl SshSession {
    /// Installs several small files as [`Self::upload`] does one, in two commands instead of three
    /// per file: one reads the SHA-256 of every file there (and sets the mode of those that are
    /// identical already); one script, run as root with the changed files in it, writes each to a
    /// temporary file beside its target, checks its SHA-256 and renames it into place. Files that
    /// are there already are not sent. Returns, per file, whether it changed.
    pub fn upload_files(&self, files: &[FileUpload<'_>]) -> Result<Vec<bool>, SshError> {
        use base64::Engine;
        let digests: Vec<String> = files.iter().map(|f| hex::encode(Sha256::digest(f.contents))).collect();
        let mut probe = String::new();
        for (f, digest) in files.iter().zip(&digests) {
            let q = shell_quote(f.path);
            probe.push_str(&format!("h=$({}); [ \"$h\" = {digest} ] && chmod {:o} {q}; echo \"${{h:--}}\"\n", sha256_command(&q), f.mode));
        }
        let current = self.sudo_script(&probe)?;
        let current: Vec<&str> = current.stdout.lines().map(str::trim).collect();
        if current.len() != files.len() {
            return Err(session_error(&self.target, "reading the SHA-256 of the files to install", format!("expected {} lines, got {:?}", files.len(), current)));
        }
        let changed: Vec<bool> = digests.iter().zip(&current).map(|(want, have)| want != have).collect();
        if !changed.contains(&true) {
            return Ok(changed);
        }
        let mut script = String::from(
            "set -u\numask 077\n\
             put() {\n  tmp=\"$1.clusterctl-new-$4\"\n  mkdir -p \"$(dirname \"$1\")\" && base64 -d >\"$tmp\" || { rm -f \"$tmp\"; echo \"$1: could not write $tmp\" >&2; exit 3; }\n",
        );
        script.push_str(&format!(
            "  got=$({})\n  [ \"$got\" = \"$3\" ] || {{ rm -f \"$tmp\"; echo \"$1: the received bytes have SHA-256 $got, not $3\" >&2; exit 3; }}\n  chown root:root \"$tmp\" && chmod \"$2\" \"$tmp\" && mv -f \"$tmp\" \"$1\" || {{ rm -f \"$tmp\"; echo \"$1: could not install it\" >&2; exit 3; }}\n}}\n",
            sha256_command("\"$tmp\"")
        ));
        for ((f, digest), _) in files.iter().zip(&digests).zip(&changed).filter(|(_, c)| **c) {
            let encoded = base64::engine::general_purpose::STANDARD.encode(f.contents);
            let lines: Vec<&str> = encoded.as_bytes().chunks(76).map(|c| std::str::from_utf8(c).expect("base64 is ASCII")).collect();
            // Base64 never holds the terminator line.
            script.push_str(&format!("put {} {:o} {digest} {} <<'CLUSTERCTL_FILE_END'\n{}\nCLUSTERCTL_FILE_END\n", shell_quote(f.path), f.mode, unique(), lines.join("\n")));
        }
        let out = self.sudo_script(&script)?;
        if out.status != 0 {
            return Err(SshError::Command { node: self.target.node.clone(), command: "installing files".into(), status: out.status, stderr: out.stderr.trim().to_string() });
        }
        Ok(changed)
    }
}

/// A shell on one node, as bootstrapping uses it: commands, root scripts, checked uploads. The
/// real one is [`SshSession`]; [`super::fake::FakeShell`] records what is done and answers as it is
/// told, so that install and replace are tested without machines.
pub trait NodeShell: Send {
    /// The node's name, for messages.
    fn node(&self) -> &str;
    /// Runs a command as the login user and collects its output, whatever its exit status.
    fn exec(&self, command: &str) -> Result<CommandOutput, SshError>;
    /// Runs a shell script as root, its text on standard input; collects its output, whatever its
    /// exit status.
    fn sudo_script(&self, script: &str) -> Result<CommandOutput, SshError>;
    /// Installs `contents` at `path` (owned by root, `mode`); false when an identical file was there.
    fn upload(&self, contents: &[u8], path: &str, mode: u32) -> Result<bool, SshError>;
    /// Installs several small files; per file, whether it changed.
    fn upload_files(&self, files: &[FileUpload<'_>]) -> Result<Vec<bool>, SshError>;

    /// Runs a command and fails unless it exits 0.
    fn run(&self, command: &str) -> Result<CommandOutput, SshError> {
        let out = self.exec(command)?;
        if out.status != 0 {
            return Err(SshError::Command { node: self.node().to_string(), command: command.to_string(), status: out.status, stderr: out.stderr.trim().to_string() });
        }
        Ok(out)
    }

    /// Runs a command as root through `sudo -n` (never prompts); fails unless it exits 0.
    fn sudo(&self, command: &str) -> Result<CommandOutput, SshError> {
        self.run(&format!("sudo -n sh -c {}", shell_quote(command)))
    }
}

impl NodeShell for SshSession {
    fn node(&self) -> &str {
        SshSession::node(self)
    }

    fn exec(&self, command: &str) -> Result<CommandOutput, SshError> {
        SshSession::exec(self, command)
    }

    fn sudo_script(&self, script: &str) -> Result<CommandOutput, SshError> {
        SshSession::sudo_script(self, script)
    }

    fn upload(&self, contents: &[u8], path: &str, mode: u32) -> Result<bool, SshError> {
        SshSession::upload(self, contents, path, mode)
    }

    fn upload_files(&self, files: &[FileUpload<'_>]) -> Result<Vec<bool>, SshError> {
        SshSession::upload_files(self, files)
    }
}

/// A node's shell shared between tasks (each use holds the lock for one blocking step).
pub type SharedShell = std::sync::Arc<std::sync::Mutex<dyn NodeShell>>;

/// A random suffix for temporary file names on a node.
fn unique() -> String {
    hex::encode(rand::random::<[u8; 4]>())
}

/// Connects on a blocking thread.
pub async fn connect_async(target: SshTarget, deadline: Duration) -> Result<SshSession, SshError> {
    let node = target.node.clone();
    tokio::task::spawn_blocking(move || connect(&target, deadline))
        .await
        .unwrap_or_else(|e| Err(SshError::Session { node, action: "connecting".into(), message: e.to_string() }))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn shell_quote_survives_single_quotes() {
        assert_eq!(shell_quote("it's"), r"'it'\''s'");
    }

    #[test]
    fn an_address_where_nothing_listens_gives_up_at_the_deadline_naming_the_node() {
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let address = listener.local_addr().unwrap();
        drop(listener);
        let target = SshTarget { node: "w-0".into(), address, user: "admin".into(), private_key: "/nonexistent".into(), trust: HostKeyTrust::FirstUse };
        let err = connect(&target, Duration::from_millis(600)).err().expect("nothing listens");
        let text = err.to_string();
        assert!(text.contains("w-0") && text.contains("tcp:"), "{text}");
    }
}
