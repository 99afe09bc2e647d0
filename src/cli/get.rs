//! `clusterctl get nodes|pods|deployments|services|endpoints`: read the cluster's objects through
//! its API, with the written credentials, as kubectl's tables or as JSON/YAML lists.

use std::path::PathBuf;

use clap::{Args, ValueEnum};
use serde_json::Value;

use super::{load_spec, Failure};
use crate::api::columns;
use crate::client::kubeconfig::Kubeconfig;
use crate::client::{ApiClient, ClientAuth};
use crate::home::ClusterHome;

/// What to list.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum Kind {
    #[value(alias = "node", alias = "no")]
    Nodes,
    #[value(alias = "pod", alias = "po")]
    Pods,
    #[value(alias = "deployment", alias = "deploy")]
    Deployments,
    #[value(alias = "replicaset", alias = "rs")]
    Replicasets,
    #[value(alias = "service", alias = "svc")]
    Services,
    #[value(alias = "ep")]
    Endpoints,
}

impl Kind {
    fn resource(self) -> &'static crate::api::ResourceType {
        use crate::api::resource;
        match self {
            Kind::Nodes => &resource::NODES,
            Kind::Pods => &resource::PODS,
            Kind::Deployments => &resource::DEPLOYMENTS,
            Kind::Replicasets => &resource::REPLICA_SETS,
            Kind::Services => &resource::SERVICES,
            Kind::Endpoints => &resource::ENDPOINTS,
        }
    }
}

/// Output of `get`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum, Default)]
pub enum GetOutput {
    #[default]
    Table,
    /// The table (pods already show their IP and node).
    Wide,
    Json,
    Yaml,
}

/// Arguments of `get`.
#[derive(Debug, Args)]
pub struct GetArgs {
    /// What to list.
    #[arg(value_enum)]
    pub kind: Kind,
    /// The cluster spec (to name the cluster).
    #[arg(short = 'f', long = "file", visible_alias = "spec", conflicts_with = "cluster")]
    pub file: Option<PathBuf>,
    /// The cluster's name (instead of a spec).
    #[arg(long)]
    pub cluster: Option<String>,
    /// Output format.
    #[arg(short, long, value_enum, default_value_t)]
    pub output: GetOutput,
    /// The namespace of namespaced objects.
    #[arg(short = 'n', long, default_value = "default")]
    pub namespace: String,
    /// Objects of every namespace.
    #[arg(short = 'A', long = "all-namespaces")]
    pub all_namespaces: bool,
    /// After the list, print a row for every change until interrupted.
    #[arg(short = 'w', long)]
    pub watch: bool,
}

fn row(kind: Kind, item: &Value, with_ns: bool) -> Vec<String> {
    let mut r = columns::row(kind.resource(), item);
    if with_ns {
        r.insert(0, item.pointer("/metadata/namespace").and_then(Value::as_str).unwrap_or("").to_string());
    }
    r
}

/// The cluster's name, from its spec or as given.
pub fn cluster_name(file: Option<&PathBuf>, cluster: Option<&String>) -> Result<String, Failure> {
    match (file, cluster) {
        (Some(f), _) => Ok(load_spec(f)?.name.as_str().to_string()),
        (None, Some(c)) => Ok(c.clone()),
        (None, None) => Err(Failure::Input(anyhow::anyhow!("name the cluster with -f <spec> or --cluster <name>"))),
    }
}

/// The API client of a cluster, from the credentials `create` wrote.
pub fn cluster_client(file: Option<&PathBuf>, cluster: Option<&String>) -> Result<ApiClient, Failure> {
    let name = cluster_name(file, cluster)?;
    let path = ClusterHome::of(&name).dir.join("kubeconfig");
    let kc = Kubeconfig::load(&path).map_err(|e| Failure::Operation(anyhow::anyhow!("reading the credentials of cluster {name} ({}): {e}; run clusterctl create first", path.display())))?;
    let client = ApiClient::new(&kc.server, ClientAuth::Certificate { ca_pem: kc.ca_pem, cert_pem: kc.client_cert_pem, key_pem: kc.client_key_pem })
        .map_err(|e| Failure::Operation(anyhow::anyhow!("building the API client for {}: {e}", kc.server)))?;
    Ok(client)
}

/// Runs `get`.
pub async fn run(args: &GetArgs) -> Result<(), Failure> {
    let client = cluster_client(args.file.as_ref(), args.cluster.as_ref())?;
    let rt = args.kind.resource();
    let namespace = (!args.all_namespaces).then_some(args.namespace.as_str());
    let list = client
        .list::<Value>(rt, namespace, &crate::client::ListOptions::default())
        .await
        .map_err(|e| Failure::Operation(anyhow::anyhow!("listing {}: {e}", rt.plural)))?;
    let items = list.items;
    let with_ns = args.all_namespaces && rt.namespaced;
    let mut widths: Vec<usize> = Vec::new();
    match args.output {
        GetOutput::Json => println!("{}", serde_json::to_string_pretty(&serde_json::json!({ "apiVersion": rt.api_version(), "kind": rt.list_kind(), "items": items }))?),
        GetOutput::Yaml => print!("{}", serde_yaml_ng::to_string(&serde_json::json!({ "apiVersion": rt.api_version(), "kind": rt.list_kind(), "items": items }))?),
        GetOutput::Table | GetOutput::Wide => {
            if items.is_empty() && !args.watch {
                match namespace.filter(|_| rt.namespaced) {
                    Some(ns) => eprintln!("No resources found in {ns} namespace."),
                    None => eprintln!("No resources found"),
                }
                return Ok(());
            }
            let mut head: Vec<String> = columns::header(args.kind.resource()).iter().map(|h| h.to_string()).collect();
            if with_ns {
                head.insert(0, "NAMESPACE".into());
            }
            let mut table = vec![head];
            table.extend(items.iter().map(|i| row(args.kind, i, with_ns)));
            widths = (0..table[0].len()).map(|c| table.iter().map(|r| r.get(c).map_or(0, String::len)).max().unwrap_or(0)).collect();
            print!("{}", super::table::render(&table));
        }
    }
    if !args.watch {
        return Ok(());
    }
    let rv = list.metadata.resource_version;
    let mut events = client
        .watch::<Value>(rt, namespace, Some(&rv), &crate::client::ListOptions::default())
        .await
        .map_err(|e| Failure::Operation(anyhow::anyhow!("watching {}: {e}", rt.plural)))?;
    use futures::StreamExt;
    while let Some(event) = events.next().await {
        let event = event.map_err(|e| Failure::Operation(anyhow::anyhow!("watching {}: {e}", rt.plural)))?;
        match args.output {
            GetOutput::Json => println!("{}", serde_json::to_string(&event.object)?),
            GetOutput::Yaml => print!("---\n{}", serde_yaml_ng::to_string(&event.object)?),
            GetOutput::Table | GetOutput::Wide => {
                let r = row(args.kind, &event.object, with_ns);
                let line: Vec<String> = r.iter().enumerate().map(|(i, c)| format!("{c:<w$}", w = widths.get(i).copied().unwrap_or(0))).collect();
                let suffix = if event.event_type == crate::api::WatchEventType::Deleted { "   (deleted)" } else { "" };
                println!("{}{suffix}", line.join("   ").trim_end());
            }
        }
    }
    Ok(())
}
