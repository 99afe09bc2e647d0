//! Build-time settings of the `clusterctl` binary: link arguments and the version it reports.
//!
//! Relative relocations are packed (DT_RELR, glibc 2.36+: the Debian bookworm of the operator's
//! machine and of the nodes). A position-independent Rust binary carries one 24-byte relocation
//! per pointer in its read-only data (vtables, string tables), several MB that the loader reads
//! at every start and that then stay resident in every process of it: the worker agent's resident
//! memory is one of the figures `scripts/bench` measures.
//!
//! The binary is stripped of its symbol table and debug information: `create` uploads it to every
//! node, which checks and unpacks it, and the symbols were more than a third of the release build
//! (68 MB, 43 MB stripped) and over half of the debug build (137 MB). A panic still says what and
//! where (its message and source location are data, not symbols); only a backtrace's frame names
//! are lost. Test and example binaries keep their symbols.
//!
//! `CLUSTERCTL_VERSION` (what `--version` prints) is the package version followed by the commit it
//! was built from, `0.1.0 (1a2b3c4)`, or `(1a2b3c4-dirty)` when the files the binary is built from
//! (`src/`, `templates/`, `Cargo.toml`, `Cargo.lock`, `build.rs`) differ from that commit; changes
//! elsewhere (tests, docs) do not make another binary. Without git, or outside a git checkout of
//! this package (a copied or vendored source), it is the package version alone.
use std::path::Path;
use std::process::Command;

/// What the binary is built from, relative to the package: a change in one makes it dirty.
const INPUTS: [&str; 5] = ["src", "templates", "Cargo.toml", "Cargo.lock", "build.rs"];

fn main() {
    println!("cargo:rustc-link-arg-bins=-Wl,-z,pack-relative-relocs");
    println!("cargo:rustc-link-arg-bins=-Wl,--strip-all");
    println!("cargo:rerun-if-changed=build.rs");
    let version = std::env::var("CARGO_PKG_VERSION").unwrap_or_default();
    let version = match git_commit() {
        Some(commit) => format!("{version} ({commit})"),
        None => version,
    };
    println!("cargo:rustc-env=CLUSTERCTL_VERSION={version}");
}

/// Runs git in the package folder; its trimmed standard output when it succeeds.
fn git(dir: &Path, args: &[&str]) -> Option<String> {
    // No optional locks: a build should not write to the repository (`git status` would refresh
    // the index on disk) nor contend for its lock with the operator's own git commands.
    let out = Command::new("git").args(args).current_dir(dir).env("GIT_OPTIONAL_LOCKS", "0").output().ok()?;
    out.status.success().then(|| String::from_utf8_lossy(&out.stdout).trim().to_string())
}

/// `<short hash>[-dirty]` of the checkout this package is the top of, and the files whose change
/// must run this script again; None without git or such a checkout.
fn git_commit() -> Option<String> {
    let dir = std::path::PathBuf::from(std::env::var_os("CARGO_MANIFEST_DIR")?);
    let top = git(&dir, &["rev-parse", "--show-toplevel"])?;
    // A package copied into some other repository is not at that repository's commit.
    if Path::new(&top).canonicalize().ok()? != dir.canonicalize().ok()? {
        return None;
    }
    let hash = git(&dir, &["rev-parse", "--short", "HEAD"])?;
    let mut status = vec!["status", "--porcelain", "--untracked-files=no", "--"];
    status.extend(INPUTS);
    let dirty = !git(&dir, &status)?.is_empty();

    // Run again when HEAD moves (checkout), the branch it names moves (commit, reset), or an input is
    // edited (which changes no git file). Not on index changes: staging changes nothing here, and a
    // plain `git status` rewrites the index, which would cost a rebuild of the whole package. Paths
    // come from git because a worktree keeps its HEAD apart from the shared refs; only existing
    // ones are listed, since cargo runs a script again on every build while a path it watches is
    // missing (a packed branch has no file of its own).
    let mut watched = vec!["HEAD".to_string(), "packed-refs".to_string()];
    watched.extend(git(&dir, &["symbolic-ref", "-q", "HEAD"]));
    for name in watched {
        if let Some(path) = git(&dir, &["rev-parse", "--path-format=absolute", "--git-path", &name]).filter(|p| Path::new(p).exists()) {
            println!("cargo:rerun-if-changed={path}");
        }
    }
    for input in INPUTS {
        println!("cargo:rerun-if-changed={}", dir.join(input).display());
    }
    Some(format!("{hash}{}", if dirty { "-dirty" } else { "" }))
}
