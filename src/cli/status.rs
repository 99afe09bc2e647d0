//! `clusterctl status`: what exists, its state, and what differs from the spec.

use std::path::PathBuf;

use clap::Args;

use super::{connect, load_spec, Failure, Global, Output};
use crate::provision;

/// Arguments of `status`.
#[derive(Debug, Args)]
pub struct StatusArgs {
    /// The cluster spec (TOML).
    #[arg(short = 'f', long = "file")]
    pub file: PathBuf,
    /// Output format.
    #[arg(short, long, value_enum, default_value_t)]
    pub output: Output,
}

/// Runs `status`.
pub async fn run(global: &Global, args: &StatusArgs) -> Result<(), Failure> {
    let spec = load_spec(&args.file)?;
    let cloud = connect(global, &spec).await;
    let inventory = provision::discover(cloud.as_ref(), spec.name.as_str()).await?;
    let plan = provision::plan(&spec, &inventory)?;
    match args.output {
        Output::Json => {
            let out = serde_json::json!({
                "cluster": spec.name.as_str(),
                "region": spec.region.as_str(),
                "exists": !inventory.is_empty(),
                "in_sync": plan.is_empty(),
                "resources": inventory,
                "differences": plan.steps,
                "notes": plan.notes,
            });
            println!("{}", serde_json::to_string_pretty(&out)?);
        }
        Output::Text => {
            println!("cluster {} in {}", spec.name, spec.region);
            if inventory.is_empty() {
                println!("  nothing exists");
            }
            for line in inventory.describe() {
                println!("  {line}");
            }
            for lb in &inventory.load_balancers {
                println!("  API endpoint: {}:{}", lb.dns_name, spec.api.port);
            }
            if plan.is_empty() {
                println!("in sync with {}", args.file.display());
            } else {
                print!("differences from {}:\n{plan}", args.file.display());
            }
        }
    }
    Ok(())
}
