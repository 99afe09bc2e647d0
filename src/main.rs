//! The `clusterctl` binary: parse arguments, run one command, map errors to exit codes.

use clap::Parser;
use clusterctl::cli::{self, Cli};

fn main() {
    let cli = Cli::parse();
    let level = match (cli.global.quiet, cli.global.verbose) {
        (true, _) => "error",
        (false, 0) => "warn",
        (false, 1) => "info,clusterctl=debug",
        _ => "debug",
    };
    tracing_subscriber::fmt()
        .with_env_filter(tracing_subscriber::EnvFilter::try_from_env("CLUSTERCTL_LOG").unwrap_or_else(|_| tracing_subscriber::EnvFilter::new(level)))
        .with_writer(std::io::stderr)
        .init();
    let runtime = match tokio::runtime::Runtime::new() {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("error: starting the async runtime: {e}");
            std::process::exit(1);
        }
    };
    if let Err(failure) = runtime.block_on(cli::run(cli)) {
        eprintln!("error: {:#}", failure.error());
        std::process::exit(failure.exit_code());
    }
}
