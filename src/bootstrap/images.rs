//! Side-loading container images onto every node: the cluster never pulls from a registry, so
//! images are loaded from tarballs (`docker save` format) over SSH, like `kind load image-archive`.

use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use sha2::{Digest, Sha256};

use super::machines::{connect, Machine};
use super::BootstrapError;
use super::hostkeys::KnownHosts;
use crate::cloud::Cloud;
use crate::report::Reporter;

/// Loads one image tarball into the Docker of every machine, in parallel. Returns the image
/// names Docker reported, per machine.
pub async fn load_image(
    cloud: &dyn Cloud,
    machines: &[Machine],
    user: &str,
    ssh_key: &Path,
    known: &KnownHosts,
    tarball: &Path,
    reporter: &dyn Reporter,
) -> Result<Vec<(String, String)>, BootstrapError> {
    let bytes = Arc::new(std::fs::read(tarball).map_err(|e| BootstrapError::Other(format!("reading {}: {e}", tarball.display())))?);
    let digest = hex::encode(Sha256::digest(bytes.as_slice()));
    let remote = format!("/var/lib/clusterctl/images/{}.tar", &digest[..16]);
    let loads = machines.iter().map(|m| {
        let bytes = bytes.clone();
        let remote = remote.clone();
        async move {
            reporter.item(&m.name, "connecting");
            let session = connect(cloud, m, user, ssh_key, known, Duration::from_secs(120)).await?;
            reporter.item(&m.name, "loading");
            let node = m.name.clone();
            let out = tokio::task::spawn_blocking(move || -> Result<String, BootstrapError> {
                let err = |step: &str| {
                    let node = node.clone();
                    let step = step.to_string();
                    move |source| BootstrapError::Ssh { node, step, source: Box::new(source) }
                };
                session.upload(&bytes, &remote, 0o600).map_err(err("uploading the image"))?;
                let out = session.sudo(&format!("docker load -i {remote}")).map_err(err("loading the image into Docker"))?;
                Ok(out.stdout.lines().filter_map(|l| l.strip_prefix("Loaded image: ")).collect::<Vec<_>>().join(", "))
            })
            .await
            .map_err(|e| BootstrapError::Other(e.to_string()))??;
            reporter.item_done(&m.name, &format!("loaded {out}"));
            Ok::<_, BootstrapError>((m.name.clone(), out))
        }
    });
    let mut done = Vec::new();
    let mut errors = Vec::new();
    for r in futures::future::join_all(loads).await {
        match r {
            Ok(x) => done.push(x),
            Err(e) => errors.push(e),
        }
    }
    BootstrapError::all(errors)?;
    Ok(done)
}
