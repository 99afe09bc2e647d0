//! `clusterctl apply -f manifest.yaml` and `clusterctl delete -f manifest.yaml`: every document of
//! every file is validated first (errors: exit 2, nothing applied), then applied in order.

use std::path::PathBuf;

use clap::Args;

use super::Failure;
use super::get::cluster_client;
use crate::manifest::apply::{self, Outcome};
use crate::manifest::{self, Document, ManifestErrors};

/// Which cluster and which manifests.
#[derive(Debug, Args)]
pub struct ManifestArgs {
    /// Manifest files (multi-document YAML); repeat for several.
    #[arg(short = 'f', long = "filename", required = true)]
    pub files: Vec<PathBuf>,
    /// The cluster's name.
    #[arg(long, conflicts_with = "spec")]
    pub cluster: Option<String>,
    /// The cluster spec (to name the cluster).
    #[arg(long)]
    pub spec: Option<PathBuf>,
    /// The namespace of objects that name none (default: default).
    #[arg(short = 'n', long, default_value = "default")]
    pub namespace: String,
}

/// Loads and validates every file; all problems together are one input failure.
pub fn load_all(files: &[PathBuf]) -> Result<Vec<Document>, Failure> {
    let mut docs = Vec::new();
    let mut errors = Vec::new();
    for f in files {
        match manifest::load(f) {
            Ok(d) => docs.extend(d),
            Err(ManifestErrors(e)) => errors.extend(e),
        }
    }
    if errors.is_empty() {
        Ok(docs)
    } else {
        let count = errors.len();
        Err(Failure::Input(anyhow::anyhow!("{}\n{count} problem(s) in the manifests; nothing was applied", ManifestErrors(errors))))
    }
}

/// Runs `apply`.
pub async fn run_apply(args: &ManifestArgs) -> Result<(), Failure> {
    let docs = load_all(&args.files)?;
    let client = cluster_client(args.spec.as_ref(), args.cluster.as_ref())?;
    let mut failed = 0;
    for doc in apply::apply_order(&docs) {
        match apply::apply(&client, &doc.object, &args.namespace).await {
            Ok(outcome) => println!("{} {outcome}", doc.object.display_name()),
            Err(e) => {
                failed += 1;
                eprintln!("error: applying {}: {e}", doc.object.display_name());
            }
        }
    }
    let _ = Outcome::Unchanged;
    if failed > 0 {
        return Err(Failure::Operation(anyhow::anyhow!("{failed} object(s) could not be applied")));
    }
    Ok(())
}

/// Runs `delete`.
pub async fn run_delete(args: &ManifestArgs) -> Result<(), Failure> {
    let docs = load_all(&args.files)?;
    let client = cluster_client(args.spec.as_ref(), args.cluster.as_ref())?;
    let mut failed = 0;
    for doc in apply::apply_order(&docs).into_iter().rev() {
        let (kind, name) = doc.object.display_name().split_once('/').map(|(k, n)| (k.to_string(), n.to_string())).unwrap_or_default();
        match apply::delete(&client, &doc.object, &args.namespace).await {
            Ok(true) => println!("{kind} \"{name}\" deleted"),
            Ok(false) => println!("{kind} \"{name}\" not found"),
            Err(e) => {
                failed += 1;
                eprintln!("error: deleting {kind} \"{name}\": {e}");
            }
        }
    }
    if failed > 0 {
        return Err(Failure::Operation(anyhow::anyhow!("{failed} object(s) could not be deleted")));
    }
    Ok(())
}
