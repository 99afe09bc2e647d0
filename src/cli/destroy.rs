//! `clusterctl destroy`: remove everything a cluster created.

use std::io::{BufRead, IsTerminal, Write};
use std::path::PathBuf;
use std::time::{Duration, Instant};

use clap::Args;

use super::progress::TerminalReport;
use super::{connect, load_spec, Failure, Global};
use crate::home::ClusterHome;
use crate::provision;

/// Arguments of `destroy`.
#[derive(Debug, Args)]
pub struct DestroyArgs {
    /// The cluster spec (TOML).
    #[arg(short = 'f', long = "file")]
    pub file: PathBuf,
    /// Do not ask for confirmation.
    #[arg(long)]
    pub yes: bool,
}

/// Runs `destroy`.
pub async fn run(global: &Global, args: &DestroyArgs) -> Result<(), Failure> {
    let spec = load_spec(&args.file)?;
    if !args.yes {
        if !std::io::stdin().is_terminal() {
            return Err(Failure::Input(anyhow::anyhow!("destroying cluster {} needs confirmation: pass --yes", spec.name)));
        }
        eprint!("Destroy cluster {} and everything it created in {}? Type the cluster name to confirm: ", spec.name, spec.region);
        std::io::stderr().flush().ok();
        let mut answer = String::new();
        std::io::stdin().lock().read_line(&mut answer).ok();
        if answer.trim() != spec.name.as_str() {
            return Err(Failure::Input(anyhow::anyhow!("not confirmed; nothing was changed")));
        }
    }
    let started = Instant::now();
    let cloud = connect(global, &spec).await;
    let report = TerminalReport::new(global.quiet);
    let result = provision::destroy(cloud.as_ref(), spec.name.as_str(), Duration::from_secs(600), &report).await;
    report.finish();
    let result = result.map_err(|e| Failure::Operation(anyhow::Error::new(e).context(format!("destroying cluster {}", spec.name))))?;
    if !result.remaining.is_empty() || !result.errors.is_empty() {
        let mut msg = format!("destroying cluster {}: {} resources remain", spec.name, result.remaining.len());
        for r in &result.remaining {
            msg.push_str(&format!("\n  {r}"));
        }
        for e in &result.errors {
            msg.push_str(&format!("\n  error: {e}"));
        }
        msg.push_str("\nrun destroy again to retry");
        return Err(Failure::Operation(anyhow::anyhow!(msg)));
    }
    ClusterHome::of(spec.name.as_str()).remove()?;
    if result.deleted.is_empty() {
        println!("cluster {}: nothing to destroy", spec.name);
    } else {
        println!("cluster {}: destroyed {} resources in {:.1}s; nothing tagged with it remains", spec.name, result.deleted.len(), started.elapsed().as_secs_f64());
    }
    Ok(())
}
