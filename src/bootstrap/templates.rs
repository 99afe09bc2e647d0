//! The node software's files, rendered from `templates/` (embedded in the binary).
//!
//! - `templates/install.sh`, the idempotent install script ([`install_script`], run with
//!   [`install_command`]; its contract is in the script's header and in docs/ARCHITECTURE.md);
//! - `templates/clusterctl-master.service` and `templates/clusterctl-worker.service`, the systemd
//!   units ([`unit`]).
//!
//! Templates use `{{name}}` placeholders. [`render`] fails on a placeholder without a value, on a
//! value without a placeholder and on an unterminated `{{`, so a template and its caller cannot
//! drift apart silently. Every variable of the embedded templates is a path from [`NodePaths`]:
//! `binary_path`, `config_path` (both templates), `unit_dir`, `state_dir`, `staged_binary`
//! (install script only; inserted shell-quoted).

use std::collections::BTreeSet;

use thiserror::Error;

use super::ssh::shell_quote;
use crate::nodeconfig::{NodeRole, CONFIG_PATH, DEFAULT_DATA_DIR};

const INSTALL_SH: &str = include_str!("../../templates/install.sh");
const MASTER_UNIT: &str = include_str!("../../templates/clusterctl-master.service");
const WORKER_UNIT: &str = include_str!("../../templates/clusterctl-worker.service");
const ETCD_UNIT: &str = include_str!("../../templates/clusterctl-etcd.service");

/// Where the installed binary lives on a node.
pub const BINARY_PATH: &str = "/usr/local/bin/clusterctl";
/// Where uploads are staged on a node (the install script, the compressed binary).
pub const STAGE_DIR: &str = "/usr/local/lib/clusterctl";
/// Where the uploader puts the gzip-compressed binary; the install script's default source.
pub const STAGED_BINARY_PATH: &str = "/usr/local/lib/clusterctl/clusterctl.gz";
/// Where the uploader puts the binary when it sends it uncompressed (from a master, in the VPC).
pub const STAGED_PLAIN_BINARY_PATH: &str = "/usr/local/lib/clusterctl/clusterctl";
/// Where the uploader puts the install script.
pub const INSTALL_SCRIPT_PATH: &str = "/usr/local/lib/clusterctl/install.sh";
/// Where systemd units are installed.
pub const UNIT_DIR: &str = "/etc/systemd/system";

/// A template that does not fit the values given to it (a defect of the template or its caller).
#[derive(Debug, Error, PartialEq, Eq)]
pub enum TemplateError {
    #[error("template {template}: no value for {{{{{name}}}}}")]
    Missing { template: String, name: String },
    #[error("template {template}: value {name} given but the template has no {{{{{name}}}}}")]
    Unused { template: String, name: String },
    #[error("template {template}: unterminated or malformed placeholder at byte {offset}")]
    Malformed { template: String, offset: usize },
}

/// Replaces every `{{name}}` (name: `[a-z0-9_]+`) with its value. `template` names the template
/// in errors.
pub fn render(template: &str, text: &str, vars: &[(&str, &str)]) -> Result<String, TemplateError> {
    let mut out = String::with_capacity(text.len());
    let mut used = BTreeSet::new();
    let mut rest = text;
    while let Some(start) = rest.find("{{") {
        out.push_str(&rest[..start]);
        let offset = text.len() - rest.len() + start;
        let after = &rest[start + 2..];
        let malformed = || TemplateError::Malformed { template: template.to_string(), offset };
        let end = after.find("}}").ok_or_else(malformed)?;
        let name = &after[..end];
        if name.is_empty() || !name.bytes().all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'_') {
            return Err(malformed());
        }
        let value = vars
            .iter()
            .find(|(n, _)| *n == name)
            .map(|(_, v)| *v)
            .ok_or_else(|| TemplateError::Missing { template: template.to_string(), name: name.to_string() })?;
        out.push_str(value);
        used.insert(name);
        rest = &after[end + 2..];
    }
    out.push_str(rest);
    if let Some((name, _)) = vars.iter().find(|(n, _)| !used.contains(n)) {
        return Err(TemplateError::Unused { template: template.to_string(), name: name.to_string() });
    }
    Ok(out)
}

/// The paths the node software uses; [`NodePaths::default`] is a real node's, tests point them
/// into a temporary folder. Paths go into systemd units unquoted, so they hold no whitespace.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NodePaths {
    pub binary: String,
    pub config: String,
    pub unit_dir: String,
    /// The node software's state folder (also the install script's stamp).
    pub state_dir: String,
    pub staged_binary: String,
}

impl Default for NodePaths {
    fn default() -> Self {
        NodePaths {
            binary: BINARY_PATH.into(),
            config: CONFIG_PATH.into(),
            unit_dir: UNIT_DIR.into(),
            state_dir: DEFAULT_DATA_DIR.into(),
            staged_binary: STAGED_BINARY_PATH.into(),
        }
    }
}

// The embedded templates are rendered with exactly these variables in tests, so rendering them
// cannot fail at run time.
const RENDERS: &str = "the embedded templates render with their fixed variables (tested)";

/// The install script for a real node (the same for every node and role).
pub fn install_script() -> String {
    install_script_with(&NodePaths::default())
}

/// The install script with other paths (for tests).
pub fn install_script_with(paths: &NodePaths) -> String {
    let q = |s: &str| shell_quote(s);
    let (binary, config, unit_dir, state_dir, staged) = (q(&paths.binary), q(&paths.config), q(&paths.unit_dir), q(&paths.state_dir), q(&paths.staged_binary));
    render(
        "install.sh",
        INSTALL_SH,
        &[("binary_path", &binary), ("config_path", &config), ("unit_dir", &unit_dir), ("state_dir", &state_dir), ("staged_binary", &staged)],
    )
    .expect(RENDERS)
}

/// The systemd unit's file name for a role: `clusterctl-master.service`, `clusterctl-worker.service`.
pub fn unit_name(role: NodeRole) -> String {
    format!("clusterctl-{}.service", role.as_str())
}

/// The systemd unit of a role: `(file name, contents)`, installed in [`UNIT_DIR`].
pub fn unit(role: NodeRole) -> (String, String) {
    unit_with(role, &NodePaths::default())
}

/// An HA master's etcd unit: `(file name, contents)`, installed in [`UNIT_DIR`].
pub fn etcd_unit() -> (String, String) {
    let contents = render(crate::nodeconfig::etcd::UNIT, ETCD_UNIT, &[("env_file", crate::nodeconfig::etcd::ENV_PATH)]).expect(RENDERS);
    (crate::nodeconfig::etcd::UNIT.to_string(), contents)
}

/// [`unit`] with other paths.
pub fn unit_with(role: NodeRole, paths: &NodePaths) -> (String, String) {
    let (name, text) = match role {
        NodeRole::Master => ("clusterctl-master.service", MASTER_UNIT),
        NodeRole::Worker => ("clusterctl-worker.service", WORKER_UNIT),
    };
    let contents = render(name, text, &[("binary_path", &paths.binary), ("config_path", &paths.config)]).expect(RENDERS);
    (name.to_string(), contents)
}

/// The command (to run as root) that installs the node software after the uploads: binary
/// staged at `staged_binary` ([`STAGED_BINARY_PATH`] gzip-compressed, or
/// [`STAGED_PLAIN_BINARY_PATH`]; nothing staged when the installed one already has
/// `binary_sha256`), config at `/etc/clusterctl/node.toml`, unit in [`UNIT_DIR`], script at
/// [`INSTALL_SCRIPT_PATH`].
pub fn install_command(role: NodeRole, binary_sha256: &str, staged_binary: &str) -> String {
    format!("sh {INSTALL_SCRIPT_PATH} {} {} {}", role.as_str(), shell_quote(binary_sha256), shell_quote(staged_binary))
}

/// The script (run as root, text on standard input: it holds a join token) that fetches the
/// binary a master serves at [`crate::apiserver::NODE_BINARY_PATH`] over HTTPS with the cluster CA
/// pinned and a bootstrap token, checks its SHA-256 and stages it at `staged` (for
/// [`install_command`]: [`STAGED_PLAIN_BINARY_PATH`]).
/// Exits non-zero, with the reason on stderr and nothing staged, on any failure (no curl, the
/// master unreachable, another binary there).
pub fn fetch_binary_script(url: &str, ca_pem: &str, token: &str, binary_sha256: &str, staged: &str) -> String {
    let staged = shell_quote(staged);
    let hash = crate::bootstrap::ssh::sha256_command("\"$part\"");
    format!(
        r#"set -eu
umask 077
command -v curl >/dev/null 2>&1 || {{ echo "curl is not installed" >&2; exit 2; }}
staged={staged}
part="$staged.part"
dir=$(mktemp -d)
trap 'rm -rf "$dir" "$part"' EXIT
cat >"$dir/ca.crt" <<'CLUSTERCTL_CA_END'
{ca}
CLUSTERCTL_CA_END
printf 'Authorization: Bearer %s\n' {token} >"$dir/header"
mkdir -p "$(dirname "$staged")"
curl -fsS --connect-timeout 5 --max-time 300 --cacert "$dir/ca.crt" -H @"$dir/header" -o "$part" {url}
got=$({hash})
[ "$got" = {sha} ] || {{ echo "got a binary with SHA-256 $got, expected {sha_text}" >&2; exit 3; }}
chmod 644 "$part"
mv -f "$part" "$staged"
"#,
        ca = ca_pem.trim_end(),
        token = shell_quote(token),
        url = shell_quote(url),
        sha = shell_quote(binary_sha256),
        sha_text = binary_sha256.replace(|c: char| !c.is_ascii_hexdigit(), ""),
    )
}

/// Reads the install script's output: `Some(true)` for `changed`, `Some(false)` for `unchanged`,
/// `None` if its last line is neither.
pub fn install_changed(stdout: &str) -> Option<bool> {
    match stdout.lines().rev().map(str::trim).find(|l| !l.is_empty()) {
        Some("changed") => Some(true),
        Some("unchanged") => Some(false),
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Write;

    /// Runs the fetch script with `sh`, a stand-in `curl` first on the PATH that checks what it is
    /// given (the pinned CA, the token in a header file, never on its command line) and writes
    /// `payload`; returns the exit status, stderr and what was staged.
    fn run_fetch(payload: &[u8], want_sha: &str, with_curl: bool) -> (i32, String, Option<Vec<u8>>) {
        use std::os::unix::fs::PermissionsExt;
        let dir = tempfile::tempdir().unwrap();
        let bin = dir.path().join("bin");
        std::fs::create_dir(&bin).unwrap();
        std::fs::write(dir.path().join("payload"), payload).unwrap();
        if with_curl {
            let curl = format!(
                r#"#!/bin/sh
out="" ca="" header=""
while [ $# -gt 0 ]; do
  case "$1" in
    -o) out=$2; shift 2 ;;
    --cacert) ca=$2; shift 2 ;;
    -H) header=$2; shift 2 ;;
    *secret*) echo "the token is on the command line" >&2; exit 9 ;;
    *) shift ;;
  esac
done
grep -q 'BEGIN CERTIFICATE' "$ca" || {{ echo "no CA" >&2; exit 7; }}
[ "$(cat "${{header#@}}")" = "Authorization: Bearer abcdef.secret0123456789" ] || {{ echo "bad header" >&2; exit 8; }}
cp {payload} "$out"
"#,
                payload = dir.path().join("payload").display()
            );
            std::fs::write(bin.join("curl"), curl).unwrap();
            std::fs::set_permissions(bin.join("curl"), std::fs::Permissions::from_mode(0o755)).unwrap();
        }
        // The tools the script uses besides curl, without the machine's own curl.
        for tool in ["sh", "mktemp", "cat", "rm", "mkdir", "dirname", "openssl", "sha256sum", "cut", "chmod", "mv", "printf", "grep", "cp"] {
            if let Ok(path) = which(tool) {
                let _ = std::os::unix::fs::symlink(path, bin.join(tool));
            }
        }
        let staged = dir.path().join("lib/clusterctl");
        let ca = "-----BEGIN CERTIFICATE-----\nMIIB\n-----END CERTIFICATE-----\n";
        let script = fetch_binary_script("https://10.0.0.4:6443/clusterctl/v1/binary", ca, "abcdef.secret0123456789", want_sha, staged.to_str().unwrap());
        let mut child = std::process::Command::new(bin.join("sh"))
            .arg("-s")
            .env("PATH", &bin)
            .stdin(std::process::Stdio::piped())
            .stderr(std::process::Stdio::piped())
            .spawn()
            .unwrap();
        child.stdin.take().unwrap().write_all(script.as_bytes()).unwrap();
        let out = child.wait_with_output().unwrap();
        let leftovers: Vec<_> = std::fs::read_dir(dir.path().join("lib")).map(|d| d.flatten().map(|e| e.file_name()).collect()).unwrap_or_default();
        assert!(leftovers.iter().all(|n| n == "clusterctl"), "nothing but the staged binary is left: {leftovers:?}");
        (out.status.code().unwrap_or(-1), String::from_utf8_lossy(&out.stderr).into_owned(), std::fs::read(&staged).ok())
    }

    fn which(tool: &str) -> Result<std::path::PathBuf, ()> {
        ["/usr/bin", "/bin", "/usr/sbin", "/sbin"].iter().map(|d| std::path::Path::new(d).join(tool)).find(|p| p.exists()).ok_or(())
    }

    #[test]
    fn the_fetch_script_stages_the_binary_only_when_its_sha256_is_the_one_wanted() {
        use sha2::Digest;
        let payload = b"the clusterctl binary".to_vec();
        let sha = hex::encode(sha2::Sha256::digest(&payload));
        let (status, stderr, staged) = run_fetch(&payload, &sha, true);
        assert_eq!((status, staged.as_deref()), (0, Some(&payload[..])), "{stderr}");

        let other = hex::encode(sha2::Sha256::digest(b"another binary"));
        let (status, stderr, staged) = run_fetch(&payload, &other, true);
        assert_eq!(status, 3, "{stderr}");
        assert!(stderr.contains(&format!("got a binary with SHA-256 {sha}, expected {other}")), "{stderr}");
        assert_eq!(staged, None);

        let (status, stderr, staged) = run_fetch(&payload, &sha, false);
        assert_eq!((status, staged), (2, None));
        assert!(stderr.contains("curl is not installed"), "{stderr}");
    }
    use std::os::unix::fs::PermissionsExt;
    use std::path::{Path, PathBuf};
    use std::process::{Command, Output};

    use sha2::{Digest, Sha256};

    #[test]
    fn render_replaces_every_placeholder() {
        assert_eq!(render("t", "a {{x}} b {{y}} {{x}}", &[("x", "1"), ("y", "2")]).unwrap(), "a 1 b 2 1");
        assert_eq!(render("t", "no placeholders; ${shell} {single}", &[]).unwrap(), "no placeholders; ${shell} {single}");
    }

    #[test]
    fn render_fails_on_missing_unused_and_malformed_placeholders() {
        assert_eq!(render("t", "{{x}}", &[]), Err(TemplateError::Missing { template: "t".into(), name: "x".into() }));
        assert_eq!(render("t", "{{x}}", &[("x", "1"), ("y", "2")]), Err(TemplateError::Unused { template: "t".into(), name: "y".into() }));
        assert!(matches!(render("t", "ab {{x", &[("x", "1")]), Err(TemplateError::Malformed { offset: 3, .. })));
        assert!(matches!(render("t", "{{Not Valid}}", &[]), Err(TemplateError::Malformed { .. })));
        assert!(matches!(render("t", "{{}}", &[]), Err(TemplateError::Malformed { .. })));
        let err = render("unit.service", "{{x}}", &[]).unwrap_err().to_string();
        assert_eq!(err, "template unit.service: no value for {{x}}");
    }

    #[test]
    fn the_embedded_templates_render_for_a_real_node() {
        let script = install_script();
        assert!(script.starts_with("#!/bin/sh\n"));
        assert!(script.contains("binary_path='/usr/local/bin/clusterctl'"));
        assert!(script.contains("config_path='/etc/clusterctl/node.toml'"));
        assert!(!script.contains("{{"));
        for role in [NodeRole::Master, NodeRole::Worker] {
            let (name, text) = unit(role);
            assert_eq!(name, unit_name(role));
            assert!(text.contains(&format!("ExecStart=/usr/local/bin/clusterctl node {role} --config /etc/clusterctl/node.toml\n")), "{text}");
            for line in ["Restart=always\n", "RestartSec=1\n", "LimitNOFILE=65536\n", "OOMScoreAdjust=-999\n", "After=network-online.target", "WantedBy=multi-user.target\n"] {
                assert!(text.contains(line), "{name} lacks {line:?}");
            }
            assert!(!text.contains("{{"));
            // The control loops' decisions reach the journal: clusterctl at info, libraries at warn.
            let filter = text.lines().find_map(|l| l.strip_prefix("Environment=CLUSTERCTL_LOG=")).unwrap_or_else(|| panic!("{name} sets no CLUSTERCTL_LOG"));
            assert_eq!(filter, "warn,clusterctl=info");
            let parsed = tracing_subscriber::EnvFilter::try_new(filter).unwrap();
            assert_eq!(parsed.max_level_hint(), Some(tracing::level_filters::LevelFilter::INFO));
        }
        let (_, worker) = unit(NodeRole::Worker);
        assert!(worker.contains("KillMode=process\n") && worker.contains("docker.service"));
        let (_, master) = unit(NodeRole::Master);
        assert!(!master.contains("KillMode=process"));
        let (name, etcd) = etcd_unit();
        assert_eq!(name, "clusterctl-etcd.service");
        for line in ["Type=notify\n", "EnvironmentFile=/etc/clusterctl/etcd.env\n", "ExecStart=/usr/bin/etcd\n", "Restart=always\n", "OOMScoreAdjust=-999\n"] {
            assert!(etcd.contains(line), "{name} lacks {line:?}");
        }
    }

    #[test]
    fn the_install_command_and_its_output_are_understood() {
        let cmd = install_command(NodeRole::Worker, "ab12", STAGED_BINARY_PATH);
        assert_eq!(cmd, "sh /usr/local/lib/clusterctl/install.sh worker 'ab12' '/usr/local/lib/clusterctl/clusterctl.gz'");
        assert_eq!(install_changed("changed\n"), Some(true));
        assert_eq!(install_changed("unchanged\n\n"), Some(false));
        assert_eq!(install_changed("Created symlink\nchanged"), Some(true));
        assert_eq!(install_changed(""), None);
        assert_eq!(install_changed("oops"), None);
    }

    #[test]
    fn the_rendered_install_script_is_valid_sh() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("install.sh");
        std::fs::write(&path, install_script()).unwrap();
        let out = match Command::new("sh").arg("-n").arg(&path).output() {
            Ok(out) => out,
            Err(_) => return eprintln!("no sh; skipping"),
        };
        assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    }

    /// A node in a folder: the script rendered with paths inside it, and a fake `systemctl` on
    /// PATH that keeps enabled/active state in files and logs every call.
    struct FakeNode {
        dir: tempfile::TempDir,
        paths: NodePaths,
    }

    const FAKE_SYSTEMCTL: &str = r#"#!/bin/sh
state=$FAKE_SYSTEMD
echo "$*" >>"$state/log"
cmd=$1
shift
[ "${1:-}" = --no-reload ] && shift
[ "${1:-}" = --quiet ] && shift
unit=${1:-}
case $cmd in
    daemon-reload | reset-failed) ;;
    is-enabled) [ -f "$state/enabled-$unit" ] ;;
    enable) touch "$state/enabled-$unit" ;;
    is-active) [ -f "$state/active-$unit" ] ;;
    start | restart)
        if [ -f "$state/fail-start" ]; then echo "Job for $unit failed." >&2; exit 1; fi
        touch "$state/active-$unit" ;;
    *) echo "fake systemctl: unexpected $cmd" >&2; exit 2 ;;
esac
"#;

    impl FakeNode {
        fn new() -> Option<Self> {
            if Command::new("sh").arg("-c").arg("command -v sha256sum && command -v gzip").output().map(|o| !o.status.success()).unwrap_or(true) {
                eprintln!("sh, sha256sum or gzip missing; skipping");
                return None;
            }
            let dir = tempfile::tempdir().unwrap();
            let root = dir.path();
            for sub in ["bin", "etc/clusterctl", "systemd", "stage", "fake", "state"] {
                std::fs::create_dir_all(root.join(sub)).unwrap();
            }
            let systemctl = root.join("bin/systemctl");
            std::fs::write(&systemctl, FAKE_SYSTEMCTL).unwrap();
            std::fs::set_permissions(&systemctl, std::fs::Permissions::from_mode(0o755)).unwrap();
            let s = |p: &str| root.join(p).to_str().unwrap().to_string();
            let paths = NodePaths {
                binary: s("usr/local/bin/clusterctl"),
                config: s("etc/clusterctl/node.toml"),
                unit_dir: s("systemd"),
                state_dir: s("var/lib/clusterctl"),
                staged_binary: s("stage/clusterctl.gz"),
            };
            std::fs::write(root.join("install.sh"), install_script_with(&paths)).unwrap();
            let node = FakeNode { dir, paths };
            node.write_config("role = \"worker\"\n");
            node.write_unit("v1");
            Some(node)
        }

        fn root(&self) -> &Path {
            self.dir.path()
        }

        fn write_config(&self, text: &str) {
            std::fs::write(&self.paths.config, text).unwrap();
        }

        fn write_unit(&self, marker: &str) {
            let (name, text) = unit_with(NodeRole::Worker, &self.paths);
            std::fs::write(Path::new(&self.paths.unit_dir).join(name), format!("{text}# {marker}\n")).unwrap();
        }

        /// Stages a binary gzip-compressed at the default path; returns its SHA-256.
        fn stage(&self, contents: &[u8]) -> String {
            let mut gz = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
            gz.write_all(contents).unwrap();
            std::fs::write(&self.paths.staged_binary, gz.finish().unwrap()).unwrap();
            hex::encode(Sha256::digest(contents))
        }

        fn run(&self, args: &[&str]) -> Output {
            let path = format!("{}:{}", self.root().join("bin").display(), std::env::var("PATH").unwrap_or_default());
            Command::new("sh").arg(self.root().join("install.sh")).args(args).env("PATH", path).env("FAKE_SYSTEMD", self.root().join("fake")).output().unwrap()
        }

        /// Runs the script successfully; returns its stdout and the systemctl calls it made.
        fn install(&self, args: &[&str]) -> (String, Vec<String>) {
            let before = self.log().len();
            let out = self.run(args);
            assert!(out.status.success(), "install.sh failed: {}", String::from_utf8_lossy(&out.stderr));
            (String::from_utf8(out.stdout).unwrap(), self.log()[before..].to_vec())
        }

        fn log(&self) -> Vec<String> {
            std::fs::read_to_string(self.root().join("fake/log")).unwrap_or_default().lines().map(str::to_string).collect()
        }

        fn mutations(calls: &[String]) -> Vec<String> {
            calls.iter().filter(|c| !c.starts_with("is-")).cloned().collect()
        }
    }

    fn mode(path: impl AsRef<Path>) -> u32 {
        std::fs::metadata(path).unwrap().permissions().mode() & 0o777
    }

    #[test]
    fn a_fresh_node_gets_binary_unit_and_running_service() {
        let Some(node) = FakeNode::new() else { return };
        let sha = node.stage(b"binary v1");
        let (out, calls) = node.install(&["worker", &sha]);
        assert_eq!(out, "changed\n");
        // enabled without a reload of its own: one daemon-reload for both
        assert_eq!(FakeNode::mutations(&calls), ["enable --no-reload --quiet clusterctl-worker.service", "daemon-reload", "restart clusterctl-worker.service"]);
        assert_eq!(std::fs::read(&node.paths.binary).unwrap(), b"binary v1");
        assert_eq!(mode(&node.paths.binary), 0o755);
        assert_eq!(mode(&node.paths.config), 0o600);
        assert_eq!(mode(&node.paths.state_dir), 0o700);
        assert!(!Path::new(&node.paths.staged_binary).exists(), "the staged binary is removed once installed");
    }

    #[test]
    fn a_second_run_changes_nothing() {
        let Some(node) = FakeNode::new() else { return };
        let sha = node.stage(b"binary v1");
        node.install(&["worker", &sha]);
        let (out, calls) = node.install(&["worker", &sha]);
        assert_eq!(out, "unchanged\n");
        assert_eq!(FakeNode::mutations(&calls), Vec::<String>::new());
    }

    #[test]
    fn a_changed_config_restarts_without_reloading_systemd() {
        let Some(node) = FakeNode::new() else { return };
        let sha = node.stage(b"binary v1");
        node.install(&["worker", &sha]);
        node.write_config("role = \"worker\"\n# new\n");
        let (out, calls) = node.install(&["worker", &sha]);
        assert_eq!(out, "changed\n");
        assert_eq!(FakeNode::mutations(&calls), ["restart clusterctl-worker.service"]);
    }

    #[test]
    fn a_changed_unit_reloads_systemd_and_restarts() {
        let Some(node) = FakeNode::new() else { return };
        let sha = node.stage(b"binary v1");
        node.install(&["worker", &sha]);
        node.write_unit("v2");
        let (out, calls) = node.install(&["worker", &sha]);
        assert_eq!(out, "changed\n");
        assert_eq!(FakeNode::mutations(&calls), ["daemon-reload", "restart clusterctl-worker.service"]);
    }

    #[test]
    fn a_new_binary_version_is_installed_and_restarted() {
        let Some(node) = FakeNode::new() else { return };
        node.install(&["worker", &node.stage(b"binary v1")]);
        let sha2 = node.stage(b"binary v2");
        let (out, calls) = node.install(&["worker", &sha2]);
        assert_eq!(out, "changed\n");
        assert_eq!(FakeNode::mutations(&calls), ["restart clusterctl-worker.service"]);
        assert_eq!(std::fs::read(&node.paths.binary).unwrap(), b"binary v2");
    }

    #[test]
    fn a_stopped_service_is_started() {
        let Some(node) = FakeNode::new() else { return };
        let sha = node.stage(b"binary v1");
        node.install(&["worker", &sha]);
        std::fs::remove_file(node.root().join("fake/active-clusterctl-worker.service")).unwrap();
        let (out, calls) = node.install(&["worker", &sha]);
        assert_eq!(out, "changed\n");
        assert_eq!(FakeNode::mutations(&calls), ["reset-failed clusterctl-worker.service", "start clusterctl-worker.service"]);
    }

    #[test]
    fn an_uncompressed_staged_binary_is_accepted() {
        let Some(node) = FakeNode::new() else { return };
        let staged = node.root().join("stage/clusterctl");
        std::fs::write(&staged, b"plain binary").unwrap();
        let sha = hex::encode(Sha256::digest(b"plain binary"));
        let (out, _) = node.install(&["worker", &sha, staged.to_str().unwrap()]);
        assert_eq!(out, "changed\n");
        assert_eq!(std::fs::read(&node.paths.binary).unwrap(), b"plain binary");
    }

    #[test]
    fn a_staged_binary_with_the_wrong_hash_is_refused_and_nothing_is_replaced() {
        let Some(node) = FakeNode::new() else { return };
        node.install(&["worker", &node.stage(b"binary v1")]);
        node.stage(b"corrupted");
        let wanted = hex::encode(Sha256::digest(b"binary v2"));
        let out = node.run(&["worker", &wanted]);
        assert!(!out.status.success());
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert!(stderr.contains("expected") && stderr.contains(&wanted), "{stderr}");
        assert!(out.stdout.is_empty());
        assert_eq!(std::fs::read(&node.paths.binary).unwrap(), b"binary v1");
        assert!(!PathBuf::from(format!("{}.new", node.paths.binary)).exists(), "the temporary file is cleaned up");
    }

    #[test]
    fn a_missing_staged_binary_is_an_error_only_when_it_is_needed() {
        let Some(node) = FakeNode::new() else { return };
        let wanted = hex::encode(Sha256::digest(b"binary v1"));
        let out = node.run(&["worker", &wanted]);
        assert!(!out.status.success());
        assert!(String::from_utf8_lossy(&out.stderr).contains("is missing"));
    }

    #[test]
    fn a_failed_restart_fails_and_is_retried_by_the_next_run() {
        let Some(node) = FakeNode::new() else { return };
        let sha = node.stage(b"binary v1");
        std::fs::write(node.root().join("fake/fail-start"), "").unwrap();
        let out = node.run(&["worker", &sha]);
        assert!(!out.status.success());
        assert!(String::from_utf8_lossy(&out.stderr).contains("restarting clusterctl-worker.service"));
        std::fs::remove_file(node.root().join("fake/fail-start")).unwrap();
        let (out, calls) = node.install(&["worker", &sha]);
        assert_eq!(out, "changed\n");
        assert!(FakeNode::mutations(&calls).contains(&"restart clusterctl-worker.service".to_string()), "{calls:?}");
    }

    #[test]
    fn bad_arguments_are_refused_with_usage() {
        let Some(node) = FakeNode::new() else { return };
        for args in [&[][..], &["worker"], &["boss", &"a".repeat(64)], &["worker", "ABC"], &["worker", &"a".repeat(63)], &["worker", &"a".repeat(64), "x", "y"]] {
            let out = node.run(args);
            assert!(!out.status.success(), "{args:?} accepted");
            assert!(String::from_utf8_lossy(&out.stderr).starts_with("install.sh: "), "{args:?}");
        }
    }

    #[test]
    fn a_missing_config_or_unit_is_an_error_naming_it() {
        let Some(node) = FakeNode::new() else { return };
        let sha = node.stage(b"binary v1");
        std::fs::remove_file(&node.paths.config).unwrap();
        let out = node.run(&["worker", &sha]);
        assert!(String::from_utf8_lossy(&out.stderr).contains(&node.paths.config));
        node.write_config("x");
        let out = node.run(&["master", &sha]);
        assert!(!out.status.success());
        assert!(String::from_utf8_lossy(&out.stderr).contains("clusterctl-master.service is missing"));
    }
}
