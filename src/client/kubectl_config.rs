//! kubectl's own kubeconfig: `create` merges a cluster's entries into it, `destroy` takes them out.
//!
//! The file is the one kubectl reads without flags: the first path of `$KUBECONFIG` (a `:`-separated
//! list, empty entries skipped, as kubectl splits it), else `~/.kube/config`. A cluster adds three
//! entries, as kops does: the context and the cluster named after it, and the user
//! `clusterctl-<cluster>` (eksctl qualifies its names with a region and `eksctl.io` instead; the
//! cluster's name is already unique in its account and is what `--context` is typed with).
//!
//! The file is edited as a generic YAML document, not through a struct, so that everything else in
//! it (other contexts, users and clusters, `preferences`, `extensions`, fields this code has never
//! heard of) is written back as it was read; only the three entries and `current-context` change.
//! Comments are not kept (kubectl's own writes drop them too), which is why a merge that changes
//! nothing does not write. A merge makes the context current only when the file has none (missing or
//! empty) or when asked; a removal clears `current-context` only when it named the cluster.
//!
//! A file that is not YAML, or not shaped like a kubeconfig, is an error that changes nothing.
//! Writes go through a temporary file renamed into place, mode 0600 (a missing folder is made 0700),
//! and hold an advisory lock on `<file>.clusterctl.lock` meanwhile (eksctl keeps a lock file beside
//! the kubeconfig the same way), so that two `create`s finishing together do not lose one context.

use std::ffi::OsStr;
use std::fs;
use std::os::unix::fs::{DirBuilderExt, OpenOptionsExt};
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use serde_yaml_ng::{Mapping, Value};
use thiserror::Error;

use super::kubeconfig::{user_name, Kubeconfig, KubeconfigError};

/// How long a merge waits for another clusterctl that is editing the same file.
const LOCK_WAIT: Duration = Duration::from_secs(10);

/// Errors finding, reading or writing kubectl's kubeconfig.
#[derive(Debug, Error)]
pub enum KubectlConfigError {
    #[error("finding kubectl's kubeconfig: neither KUBECONFIG nor HOME is set")]
    NoLocation,
    #[error("reading {path}")]
    Read { path: PathBuf, #[source] source: std::io::Error },
    #[error("{path} is not valid YAML")]
    Yaml { path: PathBuf, #[source] source: serde_yaml_ng::Error },
    #[error("{path} is not a kubeconfig: {reason}")]
    Shape { path: PathBuf, reason: String },
    #[error("locking {path}")]
    Lock { path: PathBuf, #[source] source: std::io::Error },
    #[error("{path} stayed locked by another clusterctl for {waited:?}")]
    Locked { path: PathBuf, waited: Duration },
    #[error("writing {path}")]
    Write { path: PathBuf, #[source] source: std::io::Error },
    #[error("rendering the cluster's entries")]
    Render(#[from] KubeconfigError),
}

/// What a merge did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Merged {
    /// The file written (a symbolic link's target).
    pub path: PathBuf,
    /// The context's name (the cluster's).
    pub context: String,
    /// Whether `current-context` names the cluster after the merge.
    pub current: bool,
    /// Whether the file changed (a re-run with the same credentials changes nothing).
    pub changed: bool,
}

/// What a removal did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Removed {
    /// The file edited.
    pub path: PathBuf,
    /// Whether any of the cluster's entries was there (and is gone).
    pub removed: bool,
    /// Whether `current-context` named the cluster and was cleared.
    pub cleared_current: bool,
}

/// The file kubectl reads without flags, given the values of `KUBECONFIG` and `HOME`.
pub fn location(kubeconfig: Option<&OsStr>, home: Option<&OsStr>) -> Option<PathBuf> {
    let listed = kubeconfig.and_then(|list| std::env::split_paths(list).find(|p| !p.as_os_str().is_empty()));
    listed.or_else(|| home.filter(|h| !h.is_empty()).map(|h| Path::new(h).join(".kube").join("config")))
}

/// The file kubectl reads without flags, from this process's environment.
pub fn default_location() -> Result<PathBuf, KubectlConfigError> {
    location(std::env::var_os("KUBECONFIG").as_deref(), std::env::var_os("HOME").as_deref()).ok_or(KubectlConfigError::NoLocation)
}

/// Adds (or replaces) the cluster's context, cluster and user entries in the file at `path`, created
/// if missing; the context becomes current when the file has none or `make_current` is set.
pub fn merge(path: &Path, kubeconfig: &Kubeconfig, make_current: bool) -> Result<Merged, KubectlConfigError> {
    let path = resolve(path);
    let parent = path.parent().filter(|p| !p.as_os_str().is_empty()).unwrap_or(Path::new("."));
    if !parent.exists() {
        fs::DirBuilder::new().recursive(true).mode(0o700).create(parent).map_err(|source| KubectlConfigError::Write { path: parent.to_path_buf(), source })?;
    }
    let _lock = lock(&path)?;
    let mut doc = read(&path)?.unwrap_or(Value::Null);
    let before = doc.clone();
    let entries = Entries::of(kubeconfig)?;
    let current = merge_document(&mut doc, &entries, make_current).map_err(|reason| KubectlConfigError::Shape { path: path.clone(), reason })?;
    let changed = doc != before;
    if changed {
        write(&path, &doc)?;
    }
    Ok(Merged { path, context: entries.context_name, current, changed })
}

/// Removes the context, cluster and user entries `merge` adds for `cluster` from the file at
/// `path`; clears `current-context` if it named the cluster. A missing file has nothing to remove.
pub fn remove(path: &Path, cluster: &str) -> Result<Removed, KubectlConfigError> {
    let path = resolve(path);
    if !path.exists() {
        return Ok(Removed { path, removed: false, cleared_current: false });
    }
    let _lock = lock(&path)?;
    let Some(mut doc) = read(&path)? else {
        return Ok(Removed { path, removed: false, cleared_current: false });
    };
    let names = Names { context: cluster.to_string(), cluster: cluster.to_string(), user: user_name(cluster) };
    let (removed, cleared_current) = remove_document(&mut doc, &names).map_err(|reason| KubectlConfigError::Shape { path: path.clone(), reason })?;
    if removed || cleared_current {
        write(&path, &doc)?;
    }
    Ok(Removed { path, removed, cleared_current })
}

/// A symbolic link (a kubeconfig kept with dotfiles) is followed, so that the rename replaces its
/// target instead of the link.
fn resolve(path: &Path) -> PathBuf {
    fs::canonicalize(path).unwrap_or_else(|_| path.to_path_buf())
}

/// An exclusive advisory lock on `<path>.clusterctl.lock`, held until dropped; waits up to
/// [`LOCK_WAIT`] for another holder.
fn lock(path: &Path) -> Result<fs::File, KubectlConfigError> {
    let mut name = path.as_os_str().to_os_string();
    name.push(".clusterctl.lock");
    let lock_path = PathBuf::from(name);
    let file = fs::OpenOptions::new().read(true).write(true).create(true).truncate(false).mode(0o600).open(&lock_path).map_err(|source| KubectlConfigError::Lock { path: lock_path.clone(), source })?;
    let started = Instant::now();
    loop {
        match file.try_lock() {
            Ok(()) => return Ok(file),
            Err(fs::TryLockError::WouldBlock) if started.elapsed() < LOCK_WAIT => std::thread::sleep(Duration::from_millis(50)),
            Err(fs::TryLockError::WouldBlock) => return Err(KubectlConfigError::Locked { path: lock_path, waited: LOCK_WAIT }),
            Err(fs::TryLockError::Error(source)) => return Err(KubectlConfigError::Lock { path: lock_path, source }),
        }
    }
}

/// The document in the file: None when the file is missing; an empty file is YAML's null.
fn read(path: &Path) -> Result<Option<Value>, KubectlConfigError> {
    let text = match fs::read_to_string(path) {
        Ok(text) => text,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
        Err(source) => return Err(KubectlConfigError::Read { path: path.to_path_buf(), source }),
    };
    serde_yaml_ng::from_str(&text).map(Some).map_err(|source| KubectlConfigError::Yaml { path: path.to_path_buf(), source })
}

fn write(path: &Path, doc: &Value) -> Result<(), KubectlConfigError> {
    let yaml = serde_yaml_ng::to_string(doc).map_err(|source| KubectlConfigError::Yaml { path: path.to_path_buf(), source })?;
    crate::pki::write_file_atomic(path, yaml.as_bytes(), 0o600).map_err(|source| KubectlConfigError::Write { path: path.to_path_buf(), source })
}

/// The names of a cluster's three entries.
struct Names {
    context: String,
    cluster: String,
    user: String,
}

/// A cluster's three entries, as the cluster's own kubeconfig has them.
struct Entries {
    context_name: String,
    cluster: Value,
    user: Value,
    context: Value,
    names: Names,
}

impl Entries {
    fn of(kubeconfig: &Kubeconfig) -> Result<Self, KubectlConfigError> {
        let own = kubeconfig.to_value()?;
        let first = |key: &str| -> Result<Value, KubectlConfigError> {
            own.get(key).and_then(Value::as_sequence).and_then(|s| s.first()).cloned().ok_or_else(|| KubeconfigError::Invalid(format!("rendered without {key}")).into())
        };
        let names = Names { context: kubeconfig.cluster_name.clone(), cluster: kubeconfig.cluster_name.clone(), user: kubeconfig.user_name() };
        Ok(Entries { context_name: names.context.clone(), cluster: first("clusters")?, user: first("users")?, context: first("contexts")?, names })
    }
}

/// The top-level mapping; a null document (an empty file) becomes one.
fn top_level(doc: &mut Value) -> Result<&mut Mapping, String> {
    if doc.is_null() {
        *doc = Value::Mapping(Mapping::new());
    }
    doc.as_mapping_mut().ok_or_else(|| "its top level is not a mapping".to_string())
}

/// The list under `key` (created empty if missing or null).
fn list<'a>(top: &'a mut Mapping, key: &str) -> Result<&'a mut Vec<Value>, String> {
    let value = top.entry(Value::from(key)).or_insert(Value::Null);
    if value.is_null() {
        *value = Value::Sequence(Vec::new());
    }
    value.as_sequence_mut().ok_or_else(|| format!("`{key}` is not a list"))
}

fn named(item: &Value, name: &str) -> bool {
    item.get("name").and_then(Value::as_str) == Some(name)
}

/// The current context's name; None when missing, null or empty.
fn current_context(top: &Mapping) -> Result<Option<&str>, String> {
    match top.get("current-context") {
        None | Some(Value::Null) => Ok(None),
        Some(Value::String(s)) => Ok(Some(s.as_str()).filter(|s| !s.is_empty())),
        Some(_) => Err("`current-context` is not a string".into()),
    }
}

/// Puts the entries into a kubeconfig document (an entry of the same name is replaced where it
/// stands); returns whether the cluster's context is current afterwards.
fn merge_document(doc: &mut Value, entries: &Entries, make_current: bool) -> Result<bool, String> {
    let top = top_level(doc)?;
    for (key, value) in [("apiVersion", "v1"), ("kind", "Config")] {
        top.entry(Value::from(key)).or_insert_with(|| Value::from(value));
    }
    for (key, name, entry) in [("clusters", &entries.names.cluster, &entries.cluster), ("users", &entries.names.user, &entries.user), ("contexts", &entries.names.context, &entries.context)] {
        let items = list(top, key)?;
        match items.iter_mut().find(|i| named(i, name)) {
            Some(existing) => *existing = entry.clone(),
            None => items.push(entry.clone()),
        }
    }
    let current = current_context(top)?;
    if make_current || current.is_none() {
        top.insert(Value::from("current-context"), Value::from(entries.context_name.as_str()));
        return Ok(true);
    }
    Ok(current == Some(entries.context_name.as_str()))
}

/// Takes the named entries out of a kubeconfig document; returns whether any was there and whether
/// `current-context` named the context and was cleared.
fn remove_document(doc: &mut Value, names: &Names) -> Result<(bool, bool), String> {
    if doc.is_null() {
        return Ok((false, false));
    }
    let top = top_level(doc)?;
    let mut removed = false;
    for (key, name) in [("clusters", &names.cluster), ("users", &names.user), ("contexts", &names.context)] {
        if top.get(key).is_none_or(Value::is_null) {
            continue;
        }
        let items = list(top, key)?;
        let before = items.len();
        items.retain(|i| !named(i, name));
        removed |= items.len() != before;
    }
    let cleared = current_context(top)? == Some(names.context.as_str());
    if cleared {
        // kubectl writes an unset current context as an empty string.
        top.insert(Value::from("current-context"), Value::from(""));
    }
    Ok((removed, cleared))
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::PermissionsExt;

    fn demo() -> Kubeconfig {
        Kubeconfig {
            cluster_name: "demo".into(),
            server: "https://demo-api.elb.localhost.localstack.cloud:6443".into(),
            ca_pem: "-----BEGIN CERTIFICATE-----\nCA\n-----END CERTIFICATE-----\n".into(),
            client_cert_pem: "-----BEGIN CERTIFICATE-----\nADMIN\n-----END CERTIFICATE-----\n".into(),
            client_key_pem: "-----BEGIN PRIVATE KEY-----\nKEY\n-----END PRIVATE KEY-----\n".into(),
        }
    }

    /// A file as another tool (kind, here) and a user's own edits leave it.
    const THEIRS: &str = r#"# my clusters
apiVersion: v1
kind: Config
preferences:
  colors: true
clusters:
- name: kind-dev
  cluster:
    server: https://127.0.0.1:40000
    certificate-authority-data: S0lORCBDQQ==
    extensions:
    - name: client.authentication.k8s.io/exec
      extension: {audience: dev}
users:
- name: kind-dev
  user:
    exec:
      apiVersion: client.authentication.k8s.io/v1beta1
      command: kind-token
      args: ["--cluster", "dev"]
contexts:
- name: kind-dev
  context: {cluster: kind-dev, user: kind-dev, namespace: apps}
current-context: kind-dev
extensions:
- name: team
  extension: {owner: ops}
x-unknown-field:
  answer: 42
  list: [1, "2", true]
"#;

    fn parse(text: &str) -> Value {
        serde_yaml_ng::from_str(text).unwrap()
    }

    fn names(doc: &Value, key: &str) -> Vec<String> {
        doc[key].as_sequence().unwrap().iter().map(|i| i["name"].as_str().unwrap().to_string()).collect()
    }

    fn entry<'a>(doc: &'a Value, key: &str, name: &str) -> &'a Value {
        doc[key].as_sequence().unwrap().iter().find(|i| named(i, name)).unwrap()
    }

    fn without(doc: &Value, keys: &[&str]) -> Value {
        let mut m = doc.as_mapping().unwrap().clone();
        for k in keys {
            m.remove(*k);
        }
        Value::Mapping(m)
    }

    fn mode(path: &Path) -> u32 {
        fs::metadata(path).unwrap().permissions().mode() & 0o777
    }

    #[test]
    fn kubectl_looks_in_the_first_kubeconfig_entry_else_in_the_home_folder() {
        let loc = |k: Option<&str>, h: Option<&str>| location(k.map(OsStr::new), h.map(OsStr::new));
        assert_eq!(loc(Some("/a/config:/b/config"), Some("/home/me")), Some(PathBuf::from("/a/config")));
        assert_eq!(loc(Some("::/b/config"), Some("/home/me")), Some(PathBuf::from("/b/config")), "empty entries are skipped");
        assert_eq!(loc(Some(""), Some("/home/me")), Some(PathBuf::from("/home/me/.kube/config")));
        assert_eq!(loc(None, Some("/home/me")), Some(PathBuf::from("/home/me/.kube/config")));
        assert_eq!(loc(None, None), None);
        assert_eq!(loc(Some(":"), Some("")), None);
    }

    #[test]
    fn merge_keeps_other_entries_and_unknown_keys_and_leaves_their_current_context() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("config");
        fs::write(&path, THEIRS).unwrap();
        let merged = merge(&path, &demo(), false).unwrap();
        assert_eq!(merged, Merged { path: path.clone(), context: "demo".into(), current: false, changed: true });

        let (theirs, ours) = (parse(THEIRS), parse(&fs::read_to_string(&path).unwrap()));
        for (key, name) in [("clusters", "kind-dev"), ("users", "kind-dev"), ("contexts", "kind-dev")] {
            assert_eq!(entry(&ours, key, name), entry(&theirs, key, name), "{key} {name} unchanged");
        }
        assert_eq!(names(&ours, "clusters"), ["kind-dev", "demo"]);
        assert_eq!(names(&ours, "users"), ["kind-dev", "clusterctl-demo"]);
        assert_eq!(names(&ours, "contexts"), ["kind-dev", "demo"]);
        assert_eq!(ours["current-context"].as_str(), Some("kind-dev"));
        let lists = ["clusters", "users", "contexts"];
        assert_eq!(without(&ours, &lists), without(&theirs, &lists), "preferences, extensions and unknown keys kept as they were");

        // What kubectl will read through the new context is the cluster's own kubeconfig.
        let context = entry(&ours, "contexts", "demo");
        assert_eq!((context["context"]["cluster"].as_str(), context["context"]["user"].as_str()), (Some("demo"), Some("clusterctl-demo")));
        let own = demo().to_value().unwrap();
        assert_eq!(entry(&ours, "clusters", "demo"), &own["clusters"][0]);
        assert_eq!(entry(&ours, "users", "clusterctl-demo"), &own["users"][0]);
    }

    #[test]
    fn merge_makes_the_context_current_when_the_file_has_none_or_when_asked() {
        let dir = tempfile::tempdir().unwrap();
        for (case, current_line) in [("missing", ""), ("empty string", "current-context: \"\"\n"), ("null", "current-context: null\n")] {
            let path = dir.path().join(case);
            fs::write(&path, THEIRS.replace("current-context: kind-dev\n", current_line)).unwrap();
            assert!(merge(&path, &demo(), false).unwrap().current, "{case}");
            assert_eq!(parse(&fs::read_to_string(&path).unwrap())["current-context"].as_str(), Some("demo"), "{case}");
        }
        let path = dir.path().join("asked");
        fs::write(&path, THEIRS).unwrap();
        assert!(merge(&path, &demo(), true).unwrap().current);
        assert_eq!(parse(&fs::read_to_string(&path).unwrap())["current-context"].as_str(), Some("demo"));
    }

    #[test]
    fn merge_creates_a_missing_file_0600_in_a_new_folder_0700() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("home/.kube/config");
        let merged = merge(&path, &demo(), false).unwrap();
        assert!(merged.current && merged.changed);
        assert_eq!(mode(&path), 0o600);
        assert_eq!(mode(&dir.path().join("home/.kube")), 0o700);
        assert_eq!(mode(&dir.path().join("home")), 0o700);
        let doc = parse(&fs::read_to_string(&path).unwrap());
        assert_eq!((doc["apiVersion"].as_str(), doc["kind"].as_str()), (Some("v1"), Some("Config")));
        // kubectl's reading of it is clusterctl's reading of the cluster's own file.
        assert_eq!(Kubeconfig::from_yaml(&fs::read_to_string(&path).unwrap()).unwrap(), demo());
        let leftovers: Vec<_> = fs::read_dir(dir.path().join("home/.kube")).unwrap().map(|e| e.unwrap().file_name().into_string().unwrap()).collect();
        assert_eq!(leftovers.iter().filter(|n| n.contains("tmp")).count(), 0, "{leftovers:?}");
    }

    #[test]
    fn merge_makes_a_readable_file_0600_and_an_empty_file_a_kubeconfig() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("config");
        fs::write(&path, "").unwrap();
        fs::set_permissions(&path, fs::Permissions::from_mode(0o644)).unwrap();
        assert!(merge(&path, &demo(), false).unwrap().current);
        assert_eq!(mode(&path), 0o600);
        assert_eq!(names(&parse(&fs::read_to_string(&path).unwrap()), "contexts"), ["demo"]);
    }

    #[test]
    fn a_second_merge_replaces_the_entries_in_place_and_an_identical_one_writes_nothing() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("config");
        fs::write(&path, THEIRS).unwrap();
        merge(&path, &demo(), false).unwrap();
        let mut moved = demo();
        moved.server = "https://10.0.0.9:6443".into();
        assert!(merge(&path, &moved, false).unwrap().changed);
        let doc = parse(&fs::read_to_string(&path).unwrap());
        assert_eq!(names(&doc, "clusters"), ["kind-dev", "demo"], "replaced where it stood, not duplicated");
        assert_eq!(entry(&doc, "clusters", "demo")["cluster"]["server"].as_str(), Some("https://10.0.0.9:6443"));

        // Unchanged credentials: the file (and any comment in it) is not rewritten.
        let text = format!("# kept\n{}", fs::read_to_string(&path).unwrap());
        fs::write(&path, &text).unwrap();
        assert!(!merge(&path, &moved, false).unwrap().changed);
        assert_eq!(fs::read_to_string(&path).unwrap(), text);
    }

    #[test]
    fn a_file_that_is_not_a_kubeconfig_is_refused_naming_it_and_left_unchanged() {
        let dir = tempfile::tempdir().unwrap();
        for (case, text, wanted) in [
            ("not-yaml", "clusters: [\n  - name: a\n", "is not valid YAML"),
            ("tabs", "apiVersion: v1\n\tkind: Config\n", "is not valid YAML"),
            ("a-list", "- a\n- b\n", "its top level is not a mapping"),
            ("clusters-a-string", "clusters: nope\n", "`clusters` is not a list"),
            ("current-a-list", "current-context: [a]\n", "`current-context` is not a string"),
        ] {
            let path = dir.path().join(case);
            fs::write(&path, text).unwrap();
            fs::set_permissions(&path, fs::Permissions::from_mode(0o640)).unwrap();
            let err = merge(&path, &demo(), true).unwrap_err();
            let message = err.to_string();
            assert!(message.contains(&path.display().to_string()) && message.contains(wanted), "{case}: {message}");
            assert_eq!(fs::read_to_string(&path).unwrap(), text, "{case}: unchanged");
            assert_eq!(mode(&path), 0o640, "{case}: not rewritten");
            let err = remove(&path, "demo").unwrap_err().to_string();
            assert!(err.contains(&path.display().to_string()), "{case}: {err}");
            assert_eq!(fs::read_to_string(&path).unwrap(), text, "{case}: unchanged by remove");
        }
    }

    #[test]
    fn remove_takes_out_exactly_the_clusters_entries_and_clears_current_context_only_when_it_was_ours() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("config");
        fs::write(&path, THEIRS).unwrap();
        merge(&path, &demo(), false).unwrap();
        let removed = remove(&path, "demo").unwrap();
        assert_eq!(removed, Removed { path: path.clone(), removed: true, cleared_current: false });
        assert_eq!(parse(&fs::read_to_string(&path).unwrap()), parse(THEIRS), "back to what it was, in meaning");
        assert_eq!(mode(&path), 0o600);

        merge(&path, &demo(), true).unwrap();
        let removed = remove(&path, "demo").unwrap();
        assert!(removed.removed && removed.cleared_current);
        let doc = parse(&fs::read_to_string(&path).unwrap());
        assert_eq!(doc["current-context"].as_str(), Some(""));
        assert_eq!(names(&doc, "contexts"), ["kind-dev"]);
        assert_eq!(names(&doc, "users"), ["kind-dev"]);
        assert_eq!(names(&doc, "clusters"), ["kind-dev"]);
    }

    #[test]
    fn remove_leaves_a_file_without_the_cluster_and_a_missing_file_alone() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("config");
        fs::write(&path, THEIRS).unwrap();
        assert_eq!(remove(&path, "demo").unwrap(), Removed { path: path.clone(), removed: false, cleared_current: false });
        assert_eq!(fs::read_to_string(&path).unwrap(), THEIRS, "not rewritten: the comment is still there");
        // Another tool's entries that merely resemble ours stay.
        assert!(!remove(&path, "kind").unwrap().removed);
        let missing = dir.path().join("nowhere/config");
        assert!(!remove(&missing, "demo").unwrap().removed);
        assert!(!missing.exists() && !dir.path().join("nowhere").exists());
    }

    #[test]
    fn a_symlinked_kubeconfig_stays_a_link_and_its_target_is_edited() {
        let dir = tempfile::tempdir().unwrap();
        let target = dir.path().join("dotfiles-kubeconfig");
        fs::write(&target, THEIRS).unwrap();
        let link = dir.path().join("config");
        std::os::unix::fs::symlink(&target, &link).unwrap();
        let merged = merge(&link, &demo(), false).unwrap();
        assert_eq!(merged.path, fs::canonicalize(&target).unwrap());
        assert!(fs::symlink_metadata(&link).unwrap().file_type().is_symlink());
        assert_eq!(names(&parse(&fs::read_to_string(&target).unwrap()), "contexts"), ["kind-dev", "demo"]);
    }

    #[test]
    fn merges_from_several_threads_lose_no_context() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("config");
        fs::write(&path, THEIRS).unwrap();
        let threads: Vec<_> = (0..8)
            .map(|i| {
                let path = path.clone();
                std::thread::spawn(move || {
                    let mut kc = demo();
                    kc.cluster_name = format!("c{i}");
                    merge(&path, &kc, false).unwrap();
                })
            })
            .collect();
        for t in threads {
            t.join().unwrap();
        }
        let doc = parse(&fs::read_to_string(&path).unwrap());
        let mut contexts = names(&doc, "contexts");
        contexts.sort();
        assert_eq!(contexts, ["c0", "c1", "c2", "c3", "c4", "c5", "c6", "c7", "kind-dev"]);
    }
}
