//! `clusterctl get nodes`: read the cluster's objects through its API, with the written credentials.

use std::path::PathBuf;
use std::time::{SystemTime, UNIX_EPOCH};

use clap::{Args, ValueEnum};
use serde_json::Value;

use super::{load_spec, Failure};
use crate::client::kubeconfig::Kubeconfig;
use crate::client::{ApiClient, ClientAuth};
use crate::home::ClusterHome;

/// What to list.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum Kind {
    Nodes,
}

/// Output of `get`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum, Default)]
pub enum GetOutput {
    #[default]
    Table,
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
    #[arg(short = 'f', long = "file", conflicts_with = "cluster")]
    pub file: Option<PathBuf>,
    /// The cluster's name (instead of a spec).
    #[arg(long)]
    pub cluster: Option<String>,
    /// Output format.
    #[arg(short, long, value_enum, default_value_t)]
    pub output: GetOutput,
}

/// The API client of a cluster, from the credentials `create` wrote.
pub fn cluster_client(file: Option<&PathBuf>, cluster: Option<&String>) -> Result<ApiClient, Failure> {
    let name = match (file, cluster) {
        (Some(f), _) => load_spec(f)?.name.as_str().to_string(),
        (None, Some(c)) => c.clone(),
        (None, None) => return Err(Failure::Input(anyhow::anyhow!("name the cluster with -f <spec> or --cluster <name>"))),
    };
    let path = ClusterHome::of(&name).dir.join("kubeconfig");
    let kc = Kubeconfig::load(&path).map_err(|e| Failure::Operation(anyhow::anyhow!("reading the credentials of cluster {name} ({}): {e}; run clusterctl create first", path.display())))?;
    let client = ApiClient::new(&kc.server, ClientAuth::Certificate { ca_pem: kc.ca_pem, cert_pem: kc.client_cert_pem, key_pem: kc.client_key_pem })
        .map_err(|e| Failure::Operation(anyhow::anyhow!("building the API client for {}: {e}", kc.server)))?;
    Ok(client)
}

fn age(created: Option<&str>) -> String {
    let Some(t) = created.and_then(crate::api::time::parse_rfc3339) else { return "-".into() };
    let now = SystemTime::now().duration_since(UNIX_EPOCH).map(|d| d.as_secs_f64()).unwrap_or(0.0);
    let s = (now - t).max(0.0) as u64;
    match s {
        0..=119 => format!("{s}s"),
        120..=7199 => format!("{}m", s / 60),
        7200..=172_799 => format!("{}h", s / 3600),
        _ => format!("{}d", s / 86400),
    }
}

/// One row of `get nodes`.
pub fn node_row(n: &Value) -> [String; 6] {
    let s = |p: &str| n.pointer(p).and_then(Value::as_str).unwrap_or("").to_string();
    let role = if n.pointer("/metadata/labels").and_then(|l| l.get("node-role.kubernetes.io/control-plane")).is_some() { "master" } else { "worker" };
    let status = match crate::agent::ready_condition(n).and_then(|c| c.get("status")).and_then(Value::as_str) {
        Some("True") => "Ready",
        _ => "NotReady",
    };
    let ip = n
        .pointer("/status/addresses")
        .and_then(Value::as_array)
        .and_then(|a| a.iter().find(|x| x.get("type").and_then(Value::as_str) == Some("InternalIP")))
        .and_then(|x| x.get("address")).and_then(Value::as_str).unwrap_or("").to_string();
    let instance = s("/spec/providerID").rsplit('/').next().unwrap_or("").to_string();
    [s("/metadata/name"), role.into(), status.into(), ip, instance, age(n.pointer("/metadata/creationTimestamp").and_then(Value::as_str))]
}

/// Runs `get`.
pub async fn run(args: &GetArgs) -> Result<(), Failure> {
    let client = cluster_client(args.file.as_ref(), args.cluster.as_ref())?;
    let Kind::Nodes = args.kind;
    let nodes = client.list_values("/api/v1/nodes").await.map_err(|e| Failure::Operation(anyhow::anyhow!("listing nodes: {e}")))?;
    match args.output {
        GetOutput::Json => println!("{}", serde_json::to_string_pretty(&serde_json::json!({ "apiVersion": "v1", "kind": "NodeList", "items": nodes }))?),
        GetOutput::Yaml => print!("{}", serde_yaml_ng::to_string(&serde_json::json!({ "apiVersion": "v1", "kind": "NodeList", "items": nodes }))?),
        GetOutput::Table => {
            let mut rows = vec![["NAME", "ROLE", "STATUS", "INTERNAL-IP", "INSTANCE", "AGE"].map(String::from)];
            rows.extend(nodes.iter().map(node_row));
            let widths: Vec<usize> = (0..6).map(|i| rows.iter().map(|r| r[i].len()).max().unwrap_or(0)).collect();
            for r in rows {
                let line: Vec<String> = r.iter().zip(&widths).map(|(c, w)| format!("{c:<w$}")).collect();
                println!("{}", line.join("   ").trim_end());
            }
        }
    }
    Ok(())
}
