//! `clusterctl image load -f SPEC IMAGE|TARBALL...` (also spelled `load-image`): put container images
//! on every node (no registry pulls). A tarball is a `docker save` archive; anything else is taken as
//! the name of an image in the local Docker, saved to a temporary tarball first.

use std::path::PathBuf;

use clap::{Args, Subcommand};

use super::progress::TerminalReport;
use super::{connect, load_spec, Failure, Global};
use crate::bootstrap::machines;
use crate::bootstrap::hostkeys::KnownHosts;
use crate::bootstrap::images::load_image;
use crate::home::ClusterHome;
use crate::provision::{self, ConvergeOptions};
use crate::report::Reporter as _;

/// Arguments of `image`.
#[derive(Debug, Args)]
pub struct ImageArgs {
    #[command(subcommand)]
    pub command: ImageCommand,
}

/// What to do with images.
#[derive(Debug, Subcommand)]
pub enum ImageCommand {
    /// Load images onto every node of the cluster.
    Load(LoadImageArgs),
}

/// Arguments of `image load` and `load-image`.
#[derive(Debug, Args)]
pub struct LoadImageArgs {
    /// The cluster spec (TOML).
    #[arg(short = 'f', long = "file")]
    pub file: PathBuf,
    /// Image tarballs (as written by `docker save`) or names of images in the local Docker.
    #[arg(required = true)]
    pub images: Vec<String>,
}

/// Saves a local Docker image into `dir` with `docker save`; returns the tarball.
fn save_local_image(name: &str, dir: &std::path::Path) -> Result<PathBuf, Failure> {
    let file_name: String = name.chars().map(|c| if c.is_ascii_alphanumeric() || c == '.' || c == '-' { c } else { '_' }).collect();
    let tarball = dir.join(format!("{file_name}.tar"));
    let out = std::process::Command::new("docker")
        .args(["save", "-o"])
        .arg(&tarball)
        .arg(name)
        .output()
        .map_err(|e| Failure::Operation(anyhow::anyhow!("running docker save {name}: {e}")))?;
    if !out.status.success() {
        let stderr = String::from_utf8_lossy(&out.stderr);
        if stderr.contains("No such image") || stderr.contains("reference does not exist") {
            return Err(Failure::Input(anyhow::anyhow!("{name}: neither an image tarball nor an image in the local Docker")));
        }
        return Err(Failure::Operation(anyhow::anyhow!("saving image {name} with docker save: {}", stderr.trim())));
    }
    Ok(tarball)
}

/// Runs `image load` (and `load-image`).
pub async fn run(global: &Global, args: &LoadImageArgs) -> Result<(), Failure> {
    let spec = load_spec(&args.file)?;
    let saved = tempfile_dir()?;
    let mut tarballs = Vec::new();
    for image in &args.images {
        let path = PathBuf::from(image);
        if path.is_file() {
            tarballs.push((image.clone(), path));
        } else if image.ends_with(".tar") {
            return Err(Failure::Input(anyhow::anyhow!("{image}: no such image tarball")));
        } else {
            tarballs.push((image.clone(), save_local_image(image, saved.path())?));
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
    for (image, t) in &tarballs {
        report.phase(&format!("loading {image} onto {} nodes", machines.len()));
        let done = load_image(cloud.as_ref() as &dyn crate::cloud::Cloud, &machines, &spec.ssh.user, &key.private_path, &known, t, &report).await;
        report.finish();
        let done = done.map_err(|e| Failure::Operation(anyhow::Error::new(e).context(format!("loading {image}"))))?;
        let names: std::collections::BTreeSet<_> = done.iter().map(|(_, n)| n.clone()).collect();
        println!("{image}: loaded {} on {} nodes", names.into_iter().collect::<Vec<_>>().join(", "), done.len());
    }
    Ok(())
}

/// A temporary folder for images saved from the local Docker, removed when dropped.
fn tempfile_dir() -> Result<TempDir, Failure> {
    let path = std::env::temp_dir().join(format!("clusterctl-images-{}", std::process::id()));
    std::fs::create_dir_all(&path).map_err(|e| Failure::Operation(anyhow::anyhow!("creating {}: {e}", path.display())))?;
    Ok(TempDir(path))
}

/// A folder removed with its contents when dropped.
struct TempDir(PathBuf);

impl TempDir {
    fn path(&self) -> &std::path::Path {
        &self.0
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}
