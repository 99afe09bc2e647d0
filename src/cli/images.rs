//! `clusterctl load-image -f spec IMAGE.tar...`: put container images on every node (no registry pulls).

use std::path::PathBuf;

use clap::Args;

use super::progress::TerminalReport;
use super::{connect, load_spec, Failure, Global};
use crate::bootstrap::cluster::machines;
use crate::bootstrap::hostkeys::KnownHosts;
use crate::bootstrap::images::load_image;
use crate::home::ClusterHome;
use crate::provision::{self, ConvergeOptions};
use crate::report::Reporter as _;

/// Arguments of `load-image`.
#[derive(Debug, Args)]
pub struct LoadImageArgs {
    /// The cluster spec (TOML).
    #[arg(short = 'f', long = "file")]
    pub file: PathBuf,
    /// Image tarballs, as written by `docker save`.
    #[arg(required = true)]
    pub tarballs: Vec<PathBuf>,
}

/// Runs `load-image`.
pub async fn run(global: &Global, args: &LoadImageArgs) -> Result<(), Failure> {
    let spec = load_spec(&args.file)?;
    for t in &args.tarballs {
        if !t.is_file() {
            return Err(Failure::Input(anyhow::anyhow!("{}: no such image tarball", t.display())));
        }
    }
    let cloud = connect(global, &spec).await;
    let home = ClusterHome::of(spec.name.as_str());
    let key = home.ssh_key(&spec)?;
    // Converging a complete cluster changes nothing; it gives the running machines by slot.
    let converged = provision::converge(cloud.as_ref(), &spec, &ConvergeOptions::new(key.public_openssh.clone()), &crate::report::NoReport).await?;
    if !converged.plan.is_empty() {
        return Err(Failure::Operation(anyhow::anyhow!("cluster {} was not complete (it has been repaired); run clusterctl create first", spec.name)));
    }
    let report = TerminalReport::new(global.quiet);
    let machines = machines(&spec, &converged);
    let known = KnownHosts::at(home.dir.join("known_hosts"));
    for t in &args.tarballs {
        report.phase(&format!("loading {} onto {} nodes", t.display(), machines.len()));
        let done = load_image(cloud.as_ref() as &dyn crate::cloud::Cloud, &machines, &spec.ssh.user, &key.private_path, &known, t, &report).await;
        report.finish();
        let done = done.map_err(|e| Failure::Operation(anyhow::Error::new(e).context(format!("loading {}", t.display()))))?;
        let names: std::collections::BTreeSet<_> = done.iter().map(|(_, n)| n.clone()).collect();
        println!("{}: loaded {} on {} nodes", t.display(), names.into_iter().collect::<Vec<_>>().join(", "), done.len());
    }
    Ok(())
}
