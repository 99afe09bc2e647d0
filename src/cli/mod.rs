//! The command line: clap definitions, one file per command, and terminal output.
//!
//! Commands call library code and draw its progress through [`progress::TerminalReport`];
//! nothing below this module knows about terminals. Errors come back as
//! [`Failure`]s that carry their exit code: 2 for bad input, 1 for operations.

pub mod apply;
pub mod backup;
pub mod certs;
pub mod completion;
pub mod cordon;
pub mod create;
pub mod delete;
pub mod describe;
pub mod destroy;
pub mod drain;
pub mod get;
pub mod images;
pub mod kubeconfig;
pub mod logging;
pub mod logs;
pub mod man;
pub mod node;
pub mod progress;
pub mod scale;
pub mod scale_pools;
pub mod status;
pub mod table;

use std::path::PathBuf;
use std::sync::Arc;

use clap::{Args, Parser, Subcommand, ValueEnum};

use crate::cloud::aws::{AwsCloud, AwsOptions};
use crate::cloud::{Resilient, RetryPolicy};
use crate::spec::ClusterSpec;

/// Turns a TOML cluster spec into a running container cluster on AWS.
#[derive(Debug, Parser)]
#[command(name = "clusterctl", version = env!("CLUSTERCTL_VERSION"), about)]
pub struct Cli {
    #[command(flatten)]
    pub global: Global,
    #[command(subcommand)]
    pub command: Command,
}

/// Flags every command takes.
#[derive(Debug, Args)]
pub struct Global {
    /// Print only errors and the final result.
    #[arg(short, long, global = true, conflicts_with = "verbose")]
    pub quiet: bool,
    /// Print diagnostics (repeat for more).
    #[arg(short, long, global = true, action = clap::ArgAction::Count)]
    pub verbose: u8,
    /// AWS profile to use (default: the standard credential chain).
    #[arg(long, global = true, env = "AWS_PROFILE")]
    pub profile: Option<String>,
    /// AWS region (default: the spec's region).
    #[arg(long, global = true)]
    pub region: Option<String>,
}

/// The commands.
#[derive(Debug, Subcommand)]
pub enum Command {
    /// Create the cluster, or finish and repair it; changes nothing when it is complete.
    Create(create::CreateArgs),
    /// Remove everything the cluster created, found by its tags.
    Destroy(destroy::DestroyArgs),
    /// Show what exists and what differs from the spec.
    Status(status::StatusArgs),
    /// List the cluster's objects (nodes, pods, deployments, services, ...) through its API.
    Get(get::GetArgs),
    /// Create or update the objects of manifest files (validated first; nothing applied on errors).
    Apply(apply::ManifestArgs),
    /// Delete the objects of manifest files.
    Delete(delete::DeleteArgs),
    /// Change the size of something: `scale deployment NAME --replicas N`.
    Scale(scale::ScaleArgs),
    /// Show one node, pod, deployment or service in detail.
    Describe(describe::DescribeArgs),
    /// Print the logs of a pod's container (through the API, from the agent of its node).
    Logs(logs::LogsArgs),
    /// Mark a node unschedulable: no new pods are placed on it.
    Cordon(cordon::NodeNameArgs),
    /// Mark a node schedulable again.
    Uncordon(cordon::NodeNameArgs),
    /// Cordon a node, evict its pods and wait until their replacements run elsewhere.
    Drain(drain::DrainArgs),
    /// Container images: `image load -f SPEC IMAGE|TARBALL...` (the cluster never pulls).
    Image(images::ImageArgs),
    /// Same as `image load`.
    LoadImage(images::LoadImageArgs),
    /// Take a snapshot of the cluster's store (etcd, or the single master's) and download it.
    Backup(backup::BackupArgs),
    /// Put a snapshot back on every master (the control plane restarts; workloads keep running).
    Restore(backup::RestoreArgs),
    /// Issue the admin credential again and refuse the old one at once (kubeconfigs updated).
    RotateCerts(certs::RotateCertsArgs),
    /// Print the cluster's kubeconfig, or merge it into kubectl's own file with --write.
    Kubeconfig(kubeconfig::KubeconfigArgs),
    /// Print the shell completion script: `source <(clusterctl completion bash)`.
    Completion(completion::CompletionArgs),
    /// Print the manual page (roff): `clusterctl man | man -l -`.
    Man(man::ManArgs),
    /// Run the node software (used by the systemd units on each machine).
    Node(node::NodeArgs),
}

/// Output format of commands that print data.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum, Default)]
pub enum Output {
    #[default]
    Text,
    Json,
}

/// A failed command: bad input (exit 2) or a failed operation (exit 1).
#[derive(Debug)]
pub enum Failure {
    /// Bad spec, manifest or flags; nothing was changed.
    Input(anyhow::Error),
    /// An operation failed part-way; a re-run repairs.
    Operation(anyhow::Error),
}

impl Failure {
    /// The process exit code.
    pub fn exit_code(&self) -> i32 {
        match self {
            Failure::Input(_) => 2,
            Failure::Operation(_) => 1,
        }
    }

    /// The error with its whole chain.
    pub fn error(&self) -> &anyhow::Error {
        match self {
            Failure::Input(e) | Failure::Operation(e) => e,
        }
    }
}

impl<E: Into<anyhow::Error>> From<E> for Failure {
    fn from(e: E) -> Self {
        Failure::Operation(e.into())
    }
}

/// Which cluster a command talks to: `-f SPEC` or `--cluster NAME`.
#[derive(Debug, Args)]
pub struct ClusterSelection {
    /// The cluster spec (to name the cluster).
    #[arg(short = 'f', long = "file", visible_alias = "spec", conflicts_with = "cluster")]
    pub file: Option<PathBuf>,
    /// The cluster's name (instead of a spec).
    #[arg(long)]
    pub cluster: Option<String>,
}

impl ClusterSelection {
    /// The cluster's API client, from the credentials `create` wrote.
    pub fn client(&self) -> Result<crate::client::ApiClient, Failure> {
        get::cluster_client(self.file.as_ref(), self.cluster.as_ref())
    }

    /// The cluster's name.
    pub fn name(&self) -> Result<String, Failure> {
        get::cluster_name(self.file.as_ref(), self.cluster.as_ref())
    }
}

/// Writes generated text to standard output; a reader that stopped early (`| head`) is no failure.
pub fn print_bytes(bytes: &[u8]) -> Result<(), Failure> {
    use std::io::Write;
    match std::io::stdout().lock().write_all(bytes) {
        Err(e) if e.kind() != std::io::ErrorKind::BrokenPipe => Err(Failure::Operation(anyhow::Error::new(e).context("writing to standard output"))),
        _ => Ok(()),
    }
}

/// Loads and validates a spec; any problem is bad input.
pub fn load_spec(path: &std::path::Path) -> Result<ClusterSpec, Failure> {
    ClusterSpec::load(path).map_err(|e| Failure::Input(e.into()))
}

/// Connects to the cloud the spec names, through the retry decorator.
pub async fn connect(global: &Global, spec: &ClusterSpec) -> Arc<Resilient> {
    let options = AwsOptions { region: global.region.clone(), profile: global.profile.clone(), ..Default::default() };
    let aws = AwsCloud::connect(&options, spec.region.as_str()).await;
    Arc::new(Resilient::new(Arc::new(aws), RetryPolicy::default()))
}

/// Runs one parsed command line.
pub async fn run(cli: Cli) -> Result<(), Failure> {
    match &cli.command {
        Command::Create(args) => create::run(&cli.global, args).await,
        Command::Destroy(args) => destroy::run(&cli.global, args).await,
        Command::Status(args) => status::run(&cli.global, args).await,
        Command::Get(args) => get::run(args).await,
        Command::Apply(args) => apply::run_apply(args).await,
        Command::Delete(args) => delete::run(args).await,
        Command::Scale(args) => scale::run(&cli.global, args).await,
        Command::Node(args) => node::run(args).await,
        Command::Describe(args) => describe::run(args).await,
        Command::Logs(args) => logs::run(args).await,
        Command::Backup(args) => backup::run_backup(&cli.global, args).await,
        Command::Restore(args) => backup::run_restore(&cli.global, args).await,
        Command::RotateCerts(args) => certs::run(&cli.global, args).await,
        Command::Cordon(args) => cordon::run(args, true).await,
        Command::Uncordon(args) => cordon::run(args, false).await,
        Command::Drain(args) => drain::run(args).await,
        Command::Image(images::ImageArgs { command: images::ImageCommand::Load(args) }) => images::run(&cli.global, args).await,
        Command::LoadImage(args) => images::run(&cli.global, args).await,
        Command::Kubeconfig(args) => kubeconfig::run(args).await,
        Command::Completion(args) => completion::run(args),
        Command::Man(args) => man::run(args),
    }
}
