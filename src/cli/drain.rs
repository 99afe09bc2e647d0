//! `clusterctl drain NODE [--force] [--timeout 5m]`: cordon the node, evict (delete) every pod on
//! it, and wait until each evicted pod is gone and the controllers that owned them have their
//! replicas Running and Ready on other nodes again.
//!
//! As with kubectl, pods that no controller owns would be lost for good, so drain refuses (before
//! cordoning) unless `--force`. The eviction plan and the wait live in [`crate::client::drain`],
//! shared with `scale` and rolling upgrades.

use std::collections::BTreeSet;
use std::time::{Duration, Instant};

use clap::Args;

use super::cordon::set_unschedulable;
use super::{ClusterSelection, Failure};
use crate::client::drain;

/// Arguments of `drain`.
#[derive(Debug, Args)]
pub struct DrainArgs {
    /// The node's name (as `get nodes` shows it).
    pub node: String,
    /// Also delete pods that no controller owns (they are not recreated anywhere).
    #[arg(long)]
    pub force: bool,
    /// How long to wait for the replacements, e.g. `90s`, `5m`.
    #[arg(long, default_value = "5m", value_parser = parse_duration)]
    pub timeout: Duration,
    #[command(flatten)]
    pub cluster: ClusterSelection,
}

/// `90s`, `5m`, `1h` or a number of seconds.
pub(super) fn parse_duration(text: &str) -> Result<Duration, String> {
    let (number, unit) = text.split_at(text.find(|c: char| !c.is_ascii_digit()).unwrap_or(text.len()));
    let n: u64 = number.parse().map_err(|_| format!("{text:?} is not a duration (e.g. 90s, 5m, 1h)"))?;
    match unit {
        "" | "s" => Ok(Duration::from_secs(n)),
        "m" => Ok(Duration::from_secs(n * 60)),
        "h" => Ok(Duration::from_secs(n * 3600)),
        _ => Err(format!("{text:?} is not a duration (e.g. 90s, 5m, 1h)")),
    }
}

/// Runs `drain`.
pub async fn run(args: &DrainArgs) -> Result<(), Failure> {
    let client = args.cluster.client()?;
    let node = args.node.as_str();
    let pods = drain::pods_on(&client, node).await.map_err(Failure::Operation)?;
    let evictions = match drain::plan_evictions(&pods, args.force) {
        Ok(e) => e,
        Err(unowned) => {
            return Err(Failure::Operation(anyhow::anyhow!(
                "cannot drain node {node}: no controller owns pod(s) {} (they would not be recreated); use --force to delete them anyway",
                unowned.join(", ")
            )));
        }
    };
    set_unschedulable(&client, node, true).await?;
    println!("node/{node} cordoned");
    let start = Instant::now();
    let mut last = Vec::new();
    let nodes = BTreeSet::from([node.to_string()]);
    drain::evict_and_wait_for(&client, &evictions, &nodes, args.timeout, &mut |lines| {
        if lines != last.as_slice() {
            println!("{}", lines.join("; "));
            last = lines.to_vec();
        }
    })
    .await
    .map_err(|e| Failure::Operation(e.context(format!("draining node {node} (the node stays cordoned; re-run drain to wait again)"))))?;
    println!("node/{node} drained ({} pods evicted in {:.1} s)", evictions.len(), start.elapsed().as_secs_f64());
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn timeouts_are_written_as_kubectl_writes_them() {
        assert_eq!(parse_duration("90s"), Ok(Duration::from_secs(90)));
        assert_eq!(parse_duration("5m"), Ok(Duration::from_secs(300)));
        assert_eq!(parse_duration("120"), Ok(Duration::from_secs(120)));
        assert!(parse_duration("5 minutes").is_err());
        assert!(parse_duration("m").is_err());
    }
}
