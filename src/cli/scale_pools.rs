//! `clusterctl scale -f SPEC --workers N | --pool NAME=N`: see [`super::scale`] for what it does;
//! [`crate::cloudcontroller::pools`] does it.

use std::time::{Duration, Instant};

use super::progress::TerminalReport;
use super::scale::ScaleArgs;
use super::{connect, load_spec, Failure, Global};
use crate::cloudcontroller::pools::{self, PoolResize};
use crate::spec::ClusterSpec;

/// The most workers a pool may have (as the spec says).
const MAX_WORKERS: u32 = 100;

/// The pools to scale and their new sizes, from `--workers` or `--pool NAME=N`.
pub fn wanted_sizes(spec: &ClusterSpec, workers: Option<u32>, pools: &[String]) -> Result<Vec<(String, u32)>, String> {
    let mut out = Vec::new();
    if let Some(n) = workers {
        let first = spec.workers.first().ok_or("the spec has no worker pool to scale")?;
        out.push((first.name.as_str().to_string(), n));
    }
    for p in pools {
        let (name, n) = p.split_once('=').ok_or_else(|| format!("--pool {p:?}: write NAME=COUNT, e.g. --pool default=3"))?;
        let n: u32 = n.trim().parse().map_err(|_| format!("--pool {p:?}: the count must be a whole number from 0 to {MAX_WORKERS}"))?;
        if spec.pool(name.trim()).is_none_or(|pool| pool.role != crate::spec::Role::Worker) {
            let names: Vec<&str> = spec.workers.iter().map(|w| w.name.as_str()).collect();
            return Err(format!("--pool {p:?}: the spec has no worker pool {name:?} (its worker pools: {})", names.join(", ")));
        }
        out.push((name.trim().to_string(), n));
    }
    if out.is_empty() {
        return Err("say how many workers: --workers N, or --pool NAME=N".into());
    }
    if let Some((name, n)) = out.iter().find(|(_, n)| *n > MAX_WORKERS) {
        return Err(format!("pool {name}: {n} workers is more than the {MAX_WORKERS} a pool may have"));
    }
    Ok(out)
}

/// Runs `scale -f SPEC --workers N | --pool NAME=N`.
pub async fn run(global: &Global, args: &ScaleArgs) -> Result<(), Failure> {
    let file = args.file.as_ref().ok_or_else(|| Failure::Input(anyhow::anyhow!("name the cluster spec: clusterctl scale -f SPEC --workers N")))?;
    let spec = load_spec(file)?;
    let sizes = wanted_sizes(&spec, args.workers, &args.pool).map_err(|e| Failure::Input(anyhow::anyhow!("{}: {e}", file.display())))?;
    let started = Instant::now();
    let client = super::get::cluster_client(Some(file), None)?;
    let cloud = connect(global, &spec).await;
    let report = TerminalReport::new(global.quiet);
    let deadline = Duration::from_secs(args.timeout);
    for (pool, n) in &sizes {
        let resize = PoolResize { cluster: spec.name.as_str(), pool, workers: *n, spec_file: file, deadline };
        pools::resize(cloud.as_ref(), &client, &resize, &report).await.map_err(|e| Failure::Operation(e.context(format!("scaling pool {pool} of cluster {} to {n}", spec.name))))?;
    }
    report.finish();
    println!("cluster {}: {} (spec {} updated) in {:.1}s", spec.name, sizes.iter().map(|(p, n)| format!("pool {p} has {n} workers")).collect::<Vec<_>>().join(", "), file.display(), started.elapsed().as_secs_f64());
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    const SPEC: &str = r#"[cluster]
name = "t1"
region = "us-east-1"
availability_zones = ["us-east-1a"]

[network]
vpc_cidr = "10.42.0.0/16"
admin_cidrs = ["10.42.0.1/32"]

[masters]
count = 1
instance_type = "t3.medium"
image = { name = "debian-12-*" }

[[workers]]
name = "default"
count = 2   # the web tier
instance_type = "t3.small"
image = { name = "debian-12-*" }

[[workers]]
count = 1
instance_type = "t3.large"
name = "big"
image = { name = "debian-12-*" }
"#;

    fn spec() -> ClusterSpec {
        ClusterSpec::parse(std::path::Path::new("t.toml"), SPEC).unwrap()
    }

    #[test]
    fn sizes_come_from_workers_or_pool_flags_and_bad_ones_are_refused() {
        let s = spec();
        assert_eq!(wanted_sizes(&s, Some(4), &[]).unwrap(), vec![("default".to_string(), 4)]);
        assert_eq!(wanted_sizes(&s, None, &["big=2".into()]).unwrap(), vec![("big".to_string(), 2)]);
        assert!(wanted_sizes(&s, None, &["masters=2".into()]).unwrap_err().contains("no worker pool"));
        assert!(wanted_sizes(&s, None, &["big".into()]).unwrap_err().contains("NAME=COUNT"));
        assert!(wanted_sizes(&s, None, &["big=-1".into()]).unwrap_err().contains("whole number"));
        assert!(wanted_sizes(&s, Some(101), &[]).unwrap_err().contains("more than the 100"));
        assert!(wanted_sizes(&s, None, &[]).is_err());
    }
}
