//! The operator's shell conventions on the built binary: completion scripts that bash loads and that
//! complete, a manual page that `man` (or groff) renders, and a `--version` that names the commit.

use std::path::Path;
use std::process::{Command, Output};

const BIN: &str = env!("CARGO_BIN_EXE_clusterctl");

fn run(program: &str, args: &[&str]) -> Output {
    Command::new(program).args(args).output().unwrap_or_else(|e| panic!("running {program}: {e}"))
}

fn stdout_of(out: &Output, what: &str) -> String {
    assert!(out.status.success(), "{what}: {:?}\n{}", out.status, String::from_utf8_lossy(&out.stderr));
    String::from_utf8(out.stdout.clone()).unwrap()
}

/// What bash's completion function offers for the words typed so far (the last one being completed).
fn bash_completions(words: &[&str]) -> Vec<String> {
    let script = r#"source <("$0" completion bash) || exit 1
COMP_WORDS=("$@"); COMP_CWORD=$(($# - 1))
_clusterctl clusterctl "${COMP_WORDS[COMP_CWORD]}" "${COMP_WORDS[COMP_CWORD - 1]}"
printf '%s\n' "${COMPREPLY[@]}""#;
    let mut args = vec!["-c", script, BIN];
    args.extend(words);
    stdout_of(&run("bash", &args), "bash completion").lines().map(str::to_string).filter(|l| !l.is_empty()).collect()
}

#[test]
fn bash_loads_the_completion_script_and_it_completes_commands_and_flags() {
    let out = run("bash", &["-c", r#"source <("$0" completion bash) && complete -p clusterctl"#, BIN]);
    let registered = stdout_of(&out, "sourcing the bash completion");
    assert!(registered.contains("-F _clusterctl") && registered.trim_end().ends_with(" clusterctl"), "{registered}");
    assert_eq!(bash_completions(&["clusterctl", "kube"]), ["kubeconfig"]);
    assert!(bash_completions(&["clusterctl", "co"]).contains(&"completion".to_string()));
    assert_eq!(bash_completions(&["clusterctl", "create", "--no-k"]), ["--no-kubeconfig"]);
    assert_eq!(bash_completions(&["clusterctl", "completion", "fi"]), ["fish"]);
}

#[test]
fn zsh_and_fish_scripts_are_printed_for_clusterctl() {
    let zsh = stdout_of(&run(BIN, &["completion", "zsh"]), "completion zsh");
    assert!(zsh.starts_with("#compdef clusterctl\n") && zsh.contains("'kubeconfig:"), "{}", &zsh[..zsh.len().min(300)]);
    let fish = stdout_of(&run(BIN, &["completion", "fish"]), "completion fish");
    assert!(fish.contains("complete -c clusterctl") && fish.contains("-a \"kubeconfig\""), "{}", &fish[..fish.len().min(300)]);
    let wrong = run(BIN, &["completion", "tcsh"]);
    assert_eq!(wrong.status.code(), Some(2), "an unknown shell is bad input");
}

/// The page rendered as text (words separated by single spaces), by `man -l` where man-db is installed, else by groff.
fn render(page: &Path) -> String {
    let page = page.to_str().unwrap();
    let out = if Path::new("/usr/bin/man").exists() {
        Command::new("man").args(["-l", page]).env("MANPAGER", "cat").env("MANWIDTH", "100").env("LANG", "C.UTF-8").output().expect("running man")
    } else {
        Command::new("groff").args(["-man", "-Tutf8", "-P-cbou", page]).output().expect("running groff (scripts/lib/ensure-packages installs groff-base)")
    };
    let text = stdout_of(&out, "rendering the man page");
    assert!(out.stderr.is_empty(), "warnings while rendering: {}", String::from_utf8_lossy(&out.stderr));
    // Justified lines have runs of spaces.
    text.split_whitespace().collect::<Vec<_>>().join(" ")
}

#[test]
fn the_man_pages_render_and_list_every_command_and_flag() {
    let dir = tempfile::tempdir().unwrap();
    let main_page = dir.path().join("clusterctl.1");
    std::fs::write(&main_page, stdout_of(&run(BIN, &["man"]), "man")).unwrap();
    let warnings = run("groff", &["-man", "-Tutf8", "-ww", "-z", main_page.to_str().unwrap()]);
    assert!(warnings.status.success() && warnings.stderr.is_empty(), "groff -ww: {}", String::from_utf8_lossy(&warnings.stderr));
    let text = render(&main_page);
    for wanted in ["NAME", "clusterctl - Turns a TOML cluster spec", "SYNOPSIS", "clusterctl-create(1)", "clusterctl-kubeconfig(1)", "clusterctl-completion(1)", "--version"] {
        assert!(text.contains(wanted), "{wanted:?} in:\n{text}");
    }

    let create_page = dir.path().join("clusterctl-create.1");
    std::fs::write(&create_page, stdout_of(&run(BIN, &["man", "create"]), "man create")).unwrap();
    let text = render(&create_page);
    for wanted in ["clusterctl-create - Create the cluster", "--no-kubeconfig", "--set-current-context", "--dry-run"] {
        assert!(text.contains(wanted), "{wanted:?} in:\n{text}");
    }
    assert_eq!(run(BIN, &["man", "nope"]).status.code(), Some(2), "an unknown command is bad input");
}

/// The short hash of the checkout this package is the top of, and whether the files the binary is
/// built from differ from it (build.rs's rule); None outside such a checkout or without git.
fn checkout() -> Option<(String, bool)> {
    let dir = env!("CARGO_MANIFEST_DIR");
    let git = |args: &[&str]| Command::new("git").args(args).current_dir(dir).output().ok().filter(|o| o.status.success()).map(|o| String::from_utf8_lossy(&o.stdout).trim().to_string());
    let top = git(&["rev-parse", "--show-toplevel"])?;
    if Path::new(&top).canonicalize().ok()? != Path::new(dir).canonicalize().ok()? {
        return None;
    }
    let hash = git(&["rev-parse", "--short", "HEAD"])?;
    let changes = git(&["status", "--porcelain", "--untracked-files=no", "--", "src", "templates", "Cargo.toml", "Cargo.lock", "build.rs"])?;
    Some((hash, !changes.is_empty()))
}

#[test]
fn version_names_the_commit_and_whether_the_sources_differed() {
    let version = stdout_of(&run(BIN, &["--version"]), "--version");
    let package = env!("CARGO_PKG_VERSION");
    match checkout() {
        Some((hash, dirty)) => {
            let suffix = if dirty { "-dirty" } else { "" };
            assert_eq!(version.trim(), format!("clusterctl {package} ({hash}{suffix})"));
            assert!(hash.len() >= 7 && hash.chars().all(|c| c.is_ascii_hexdigit()), "{hash}");
        }
        None => assert_eq!(version.trim(), format!("clusterctl {package}"), "no checkout, no commit"),
    }
}
