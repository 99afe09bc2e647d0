//! The `clusterctl` binary: parse arguments, run one command, map errors to exit codes.

use clap::Parser;
use clusterctl::cli::{self, Cli};

fn main() {
    let cli = Cli::parse();
    cli::logging::init(&cli.global);
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
