//! `clusterctl create`: converge the infrastructure a spec describes.

use std::path::PathBuf;
use std::time::Instant;

use clap::Args;

use super::kubeconfig;
use super::progress::TerminalReport;
use super::{connect, load_spec, Failure, Global, Output};
use crate::home::ClusterHome;
use crate::bootstrap::{bootstrap, ArtifactsTask, BootstrapOptions, Packing};
use crate::provision::{self, ConvergeOptions};

/// Arguments of `create`.
#[derive(Debug, Args)]
pub struct CreateArgs {
    /// The cluster spec (TOML).
    #[arg(short = 'f', long = "file")]
    pub file: PathBuf,
    /// Print the plan (what would be created, changed, deleted) and change nothing.
    #[arg(long)]
    pub dry_run: bool,
    /// Output format of the plan or summary.
    #[arg(short, long, value_enum, default_value_t)]
    pub output: Output,
    /// Create the network and machines only; do not install the node software.
    #[arg(long)]
    pub infra_only: bool,
    /// Lifetime of the join token made for new workers, in seconds.
    #[arg(long, default_value_t = 3600)]
    pub token_ttl: u64,
    /// Do not add the cluster's context to kubectl's kubeconfig ($KUBECONFIG's first file, else
    /// ~/.kube/config).
    #[arg(long)]
    pub no_kubeconfig: bool,
    /// Make the cluster's context kubectl's current one even when another is (by default only a
    /// kubeconfig without a current context gets it).
    #[arg(long, conflicts_with_all = ["no_kubeconfig", "infra_only"])]
    pub set_current_context: bool,
}

/// Runs `create`.
pub async fn run(global: &Global, args: &CreateArgs) -> Result<(), Failure> {
    let spec = load_spec(&args.file)?;
    let started = Instant::now();
    let cloud = connect(global, &spec).await;
    let report = TerminalReport::new(global.quiet);

    if args.dry_run {
        let inventory = provision::discover(cloud.as_ref(), spec.name.as_str()).await?;
        let plan = provision::plan(&spec, &inventory)?;
        match args.output {
            Output::Json => println!("{}", serde_json::to_string_pretty(&plan)?),
            Output::Text => print!("plan for cluster {}:\n{plan}", spec.name),
        }
        return Ok(());
    }

    let key = ClusterHome::of(spec.name.as_str()).ssh_key(&spec)?;
    // The node software is read, hashed and packed while the machines are made.
    let node_software = if args.infra_only {
        None
    } else {
        let mut options = BootstrapOptions::new().map_err(|e| Failure::Operation(anyhow::anyhow!("finding the running binary: {e}")))?;
        options.token_ttl = std::time::Duration::from_secs(args.token_ttl);
        let artifacts = ArtifactsTask::start(options.binary.clone(), Packing::Gzip);
        Some((options, artifacts))
    };
    let mut options = ConvergeOptions::new(key.public_openssh.clone());
    // With node software to install, the masters join the API load balancer once they serve.
    options.defer_registration = node_software.is_some();
    let converged = provision::converge(cloud.as_ref(), &spec, &options, &report).await;
    report.finish();
    let converged = converged.map_err(|e| Failure::Operation(anyhow::Error::new(e).context(format!("creating cluster {}", spec.name))))?;
    let bootstrapped = match node_software {
        None => None,
        Some((options, artifacts)) => {
            let home = ClusterHome::of(spec.name.as_str());
            let result = bootstrap(cloud.as_ref(), &spec, &converged, &home, &key.private_path, &options, artifacts, &report).await;
            report.finish();
            Some(result.map_err(|e| Failure::Operation(anyhow::Error::new(e).context(format!("bootstrapping cluster {}", spec.name))))?)
        }
    };
    // The cluster is up: a kubeconfig kubectl cannot be given is a failure that a re-run repairs.
    let kubectl = match &bootstrapped {
        Some(_) if !args.no_kubeconfig => Some(kubeconfig::merge_into_kubectl_config(spec.name.as_str(), args.set_current_context).map_err(|f| {
            let (Failure::Input(e) | Failure::Operation(e)) = f;
            let repair = format!("cluster {} is up; to give kubectl its context, fix the file and run `clusterctl kubeconfig -f {} --write`", spec.name, args.file.display());
            Failure::Operation(e.context(repair))
        })?),
        _ => None,
    };
    // (After bootstrapping too: it registers the masters with the load balancer.)
    let mutations = cloud.mutations();
    let endpoint = converged.load_balancer.as_ref().map(|l| format!("{}:{}", l.dns_name, spec.api.port));
    match args.output {
        Output::Json => {
            let summary = serde_json::json!({
                "cluster": spec.name.as_str(),
                "changes": converged.plan.steps,
                "mutating_calls": mutations.len(),
                "api_endpoint": endpoint,
                "nodes": bootstrapped.as_ref().map(|b| b.nodes.iter().map(|(n, ready)| serde_json::json!({"name": n, "ready": ready})).collect::<Vec<_>>()),
                "nodes_changed": bootstrapped.as_ref().map(|b| b.changed.clone()),
                "kubectl": kubectl.as_ref().map(|m| serde_json::json!({"kubeconfig": m.path, "context": m.context, "current": m.current})),
                "instances": converged.instances.values().collect::<Vec<_>>(),
                "seconds": started.elapsed().as_secs_f64(),
            });
            println!("{}", serde_json::to_string_pretty(&summary)?);
        }
        Output::Text => {
            let nodes_changed = bootstrapped.as_ref().is_some_and(|b| !b.changed.is_empty());
            if converged.plan.is_empty() && !nodes_changed {
                println!("cluster {}: no changes", spec.name);
            } else if converged.plan.is_empty() {
                println!("cluster {}: infrastructure unchanged; node software updated", spec.name);
            } else {
                println!("cluster {}: {} changes applied ({} cloud calls that change something)", spec.name, converged.plan.steps.len(), mutations.len());
            }
            for ((pool, slot), i) in &converged.instances {
                let ip = i.private_ip.map(|a| a.to_string()).unwrap_or_else(|| "-".into());
                println!("  {pool}/{slot}  {}  {}  {ip}", i.id, i.state);
            }
            if let Some(endpoint) = endpoint {
                println!("  API endpoint: {endpoint}");
            }
            println!("  ssh key: {}", key.private_path.display());
            if let Some(b) = &bootstrapped {
                let ready = b.nodes.iter().filter(|(_, r)| *r).count();
                println!("  nodes: {ready}/{} Ready ({})", b.nodes.len(), if b.changed.is_empty() { "nothing reinstalled".to_string() } else { format!("installed or updated: {}", b.changed.join(", ")) });
                println!("  credentials: {} (use: clusterctl get nodes -f {})", b.kubeconfig.display(), args.file.display());
            }
            if let Some(merged) = &kubectl {
                println!("  kubectl: {}", kubeconfig::summary(merged));
            }
            println!("done in {:.1}s", started.elapsed().as_secs_f64());
        }
    }
    Ok(())
}
