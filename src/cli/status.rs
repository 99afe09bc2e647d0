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
    let etcd = if spec.masters.count > 1 && !inventory.instances.is_empty() { Some(etcd_members(global, &spec).await) } else { None };
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
                "etcd": etcd.as_ref().map(|r| match r {
                    Ok(members) => serde_json::json!({ "members": members }),
                    Err(e) => serde_json::json!({ "error": e }),
                }),
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
            match &etcd {
                Some(Ok(members)) => {
                    let healthy = members.as_array().map(|a| a.iter().filter(|m| m["healthy"] == true).count()).unwrap_or(0);
                    println!("  etcd: {healthy} of {} members healthy", members.as_array().map(Vec::len).unwrap_or(0));
                    for m in members.as_array().into_iter().flatten() {
                        let state = if m["leader"] == true { "healthy, leader" } else if m["healthy"] == true { "healthy" } else { m["error"].as_str().unwrap_or("unhealthy") };
                        println!("    {} {} ({state})", m["name"].as_str().unwrap_or("?"), m["endpoint"].as_str().unwrap_or("?"));
                    }
                }
                Some(Err(e)) => println!("  etcd: unknown ({e})"),
                None => {}
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

/// The etcd members and their health, as the first reachable master's member sees them.
async fn etcd_members(global: &Global, spec: &crate::spec::ClusterSpec) -> Result<serde_json::Value, String> {
    let masters = super::backup::master_sessions(global, spec).await.map_err(|e| match e {
        Failure::Input(e) | Failure::Operation(e) => format!("{e:#}"),
    })?;
    let (_, session) = masters.into_iter().next().ok_or("no master")?;
    let out = tokio::task::spawn_blocking(move || session.sudo("/usr/local/bin/clusterctl node etcd-status"))
        .await
        .map_err(|e| e.to_string())?
        .map_err(|e| e.to_string())?;
    serde_json::from_str(&out.stdout).map_err(|e| format!("reading the members: {e}"))
}
