//! Diagnostics (`tracing`) on standard error, shaped for where they go: colour only on a terminal
//! (never into a file or journald, and never with `NO_COLOR` set), and a filter the operator
//! chooses.
//!
//! The filter is the first of: `CLUSTERCTL_LOG`, `RUST_LOG` (both in `tracing`'s `EnvFilter`
//! syntax, e.g. `info` or `warn,clusterctl=debug`; empty counts as unset), then the flags
//! (`-q`: errors; none: warnings; `-v`: clusterctl's debug lines; `-vv`: everything's).
//! `CLUSTERCTL_LOG` wins over `RUST_LOG` so that a `RUST_LOG` meant for another program in the
//! same environment does not change clusterctl's output; the node units set `CLUSTERCTL_LOG`.

use std::ffi::OsStr;
use std::io::IsTerminal;

use tracing_subscriber::EnvFilter;

use super::Global;

/// The environment variable whose filter wins over every other setting.
pub const CLUSTERCTL_LOG: &str = "CLUSTERCTL_LOG";

/// Where the log filter came from, and its directives.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LogFilter {
    /// `CLUSTERCTL_LOG`, `RUST_LOG`, or `flags`.
    pub source: &'static str,
    /// The directives, in `EnvFilter` syntax.
    pub directives: String,
}

impl LogFilter {
    /// The filter from the two environment variables' values and the `-q`/`-v` flags.
    pub fn choose(clusterctl_log: Option<&str>, rust_log: Option<&str>, quiet: bool, verbose: u8) -> LogFilter {
        let set = |v: Option<&str>| v.map(str::trim).filter(|v| !v.is_empty()).map(str::to_string);
        if let Some(directives) = set(clusterctl_log) {
            return LogFilter { source: CLUSTERCTL_LOG, directives };
        }
        if let Some(directives) = set(rust_log) {
            return LogFilter { source: "RUST_LOG", directives };
        }
        LogFilter { source: "flags", directives: flag_level(quiet, verbose).to_string() }
    }
}

/// The filter the `-q`/`-v` flags ask for.
fn flag_level(quiet: bool, verbose: u8) -> &'static str {
    match (quiet, verbose) {
        (true, _) => "error",
        (false, 0) => "warn",
        (false, 1) => "info,clusterctl=debug",
        _ => "debug",
    }
}

/// Whether log lines get ANSI colours: only on a terminal, and not when `NO_COLOR` is set to
/// anything but the empty string (no-color.org).
pub fn use_colour(stderr_is_terminal: bool, no_color: Option<&OsStr>) -> bool {
    stderr_is_terminal && no_color.is_none_or(OsStr::is_empty)
}

/// Installs the process's `tracing` subscriber on standard error.
pub fn init(global: &Global) {
    let env = |name: &str| std::env::var(name).ok();
    let chosen = LogFilter::choose(env(CLUSTERCTL_LOG).as_deref(), env("RUST_LOG").as_deref(), global.quiet, global.verbose);
    let filter = match EnvFilter::try_new(&chosen.directives) {
        Ok(filter) => filter,
        Err(e) => {
            let fallback = flag_level(global.quiet, global.verbose);
            eprintln!("warning: {}={:?} is not a log filter ({e}); logging at {fallback}", chosen.source, chosen.directives);
            EnvFilter::new(fallback)
        }
    };
    let stderr = std::io::stderr();
    tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_ansi(use_colour(stderr.is_terminal(), std::env::var_os("NO_COLOR").as_deref()))
        .with_writer(std::io::stderr)
        .init();
}

#[cfg(test)]
mod tests {
    use tracing::level_filters::LevelFilter;

    use super::*;

    fn max_level(f: &LogFilter) -> Option<LevelFilter> {
        EnvFilter::try_new(&f.directives).unwrap().max_level_hint()
    }

    #[test]
    fn clusterctl_log_wins_over_rust_log_and_both_over_the_flags() {
        let both = LogFilter::choose(Some("error"), Some("debug"), false, 2);
        assert_eq!(both, LogFilter { source: "CLUSTERCTL_LOG", directives: "error".into() });
        assert_eq!(max_level(&both), Some(LevelFilter::ERROR));
        let rust_log = LogFilter::choose(None, Some("trace"), true, 0);
        assert_eq!(rust_log, LogFilter { source: "RUST_LOG", directives: "trace".into() });
        assert_eq!(max_level(&rust_log), Some(LevelFilter::TRACE));
    }

    #[test]
    fn an_empty_variable_counts_as_unset() {
        assert_eq!(LogFilter::choose(Some(""), Some("info"), false, 0).source, "RUST_LOG");
        assert_eq!(LogFilter::choose(Some("  "), Some(""), false, 0), LogFilter { source: "flags", directives: "warn".into() });
    }

    #[test]
    fn without_variables_the_flags_choose() {
        let level = |quiet, verbose| max_level(&LogFilter::choose(None, None, quiet, verbose));
        assert_eq!(level(true, 0), Some(LevelFilter::ERROR));
        assert_eq!(level(false, 0), Some(LevelFilter::WARN));
        assert_eq!(LogFilter::choose(None, None, false, 1).directives, "info,clusterctl=debug");
        assert_eq!(level(false, 2), Some(LevelFilter::DEBUG));
    }

    #[test]
    fn colour_only_on_a_terminal_without_no_color() {
        assert!(use_colour(true, None));
        assert!(!use_colour(false, None), "journald and files get no escape codes");
        assert!(!use_colour(true, Some(OsStr::new("1"))));
        assert!(use_colour(true, Some(OsStr::new(""))), "an empty NO_COLOR does not count");
    }
}
