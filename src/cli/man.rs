//! `clusterctl man [COMMAND]`: the manual page in roff, generated from the clap definitions at run
//! time, so that it always describes the binary that prints it.

use clap::{Args, CommandFactory};

use super::{Cli, Failure};

/// Arguments of `man`.
#[derive(Debug, Args)]
pub struct ManArgs {
    /// A command whose own page to print (clusterctl-COMMAND(1)) instead of clusterctl(1).
    pub command: Option<String>,
}

/// Runs `man`: prints the page on standard output.
pub fn run(args: &ManArgs) -> Result<(), Failure> {
    let mut command = Cli::command();
    // Building names the subcommands `clusterctl-<name>`, the titles of their pages.
    command.build();
    let page = match &args.command {
        None => command,
        Some(name) => command
            .find_subcommand(name)
            .cloned()
            .ok_or_else(|| Failure::Input(anyhow::anyhow!("no command {name:?}; the commands are listed in clusterctl(1)")))?,
    };
    let mut roff = Vec::new();
    clap_mangen::Man::new(page).render(&mut roff)?;
    super::print_bytes(&roff)
}
