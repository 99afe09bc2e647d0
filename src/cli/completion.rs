//! `clusterctl completion SHELL`: the shell completion script, generated from the clap definitions.

use clap::{Args, CommandFactory};
use clap_complete::Shell;

use super::{Cli, Failure};

/// Arguments of `completion`.
#[derive(Debug, Args)]
pub struct CompletionArgs {
    /// The shell to complete in.
    #[arg(value_enum)]
    pub shell: Shell,
}

/// Runs `completion`: prints the script on standard output.
pub fn run(args: &CompletionArgs) -> Result<(), Failure> {
    let mut command = Cli::command();
    // Into memory first: `generate` panics when it cannot write.
    let mut script = Vec::new();
    clap_complete::generate(args.shell, &mut command, "clusterctl", &mut script);
    super::print_bytes(&script)
}
