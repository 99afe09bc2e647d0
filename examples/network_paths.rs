//! The network model's figures (issue 20), against a running cluster made by `scripts/bench` on the
//! realizer harness, measured from inside pods: this binary is copied into the nodes and run in
//! a pod's network namespace (`nsenter`), so that what is timed is the pod's own path.
//!   1. DNS: 1,000 lookups of a Service's name from a pod, one after another (UDP, the node's
//!      cluster DNS on the pod range's gateway): p50 and p99.
//!   2. ClusterIP connection setup: 500 TCP connects from a pod to a Service's cluster IP and 500
//!      to one of its pods' addresses (on another node), alternated: p99 of each and the difference.
//!      The pod's listener is this binary's `sink` (a thread per connection, Rust's listen backlog),
//!      not busybox's httpd, whose backlog of 9 overflowed under back-to-back connects: the
//!      dropped SYNs (the kernel's `ListenOverflows`) came back after 1 s and made both p99s 1 s.
//!   3. Endpoint change to every node's rules: a pod labelled into a Service and out again, 10
//!      times; on every node a watcher polls the nat table every 25 ms and notes when the pod's
//!      DNAT appears or goes: p50 and p99 over every node and change (one clock: one machine).
//!   4. Throughput: 512 MiB over one TCP connection from a pod to a pod on another node (in
//!      another zone), and from that node to the other node, alternated 9 times: the median of the
//!      9 ratios (each pair measured back to back: the machine's speed drifts by a third between
//!      minutes) and the medians of the rates. Both paths cross the VPC router (the harness's
//!      host, as AWS's router carries traffic between subnets and to a pod route's instance).
//!      Beside it, for comparison, node to node within one subnet (bridged, no router) when a
//!      third worker shares the first one's zone.
//!   5. Rule sync: the cluster IP rules of 1,000 Services of 10 endpoints each written into a
//!      fresh network namespace of this machine (`unshare -n`), as the proxy writes them: median of 5.
//!
//!   cargo run --release --example network_paths -- CLUSTER-NAME
//!
//! Prints `RESULT <figure> <value>` lines for `scripts/bench`. Its pods and Service are deleted at
//! the end. The subcommands (`dns`, `connect`, `sink`, `source`, `watch-rule`) are what runs in the
//! nodes.

use std::net::{Ipv4Addr, SocketAddr};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use anyhow::{Context, bail};
use clusterctl::client::kubeconfig::Kubeconfig;
use clusterctl::client::{ApiClient, ClientAuth};
use serde_json::{Value, json};

const BINARY_IN_NODE: &str = "/tmp/network_paths";
const NAMESPACE_PATH: &str = "/api/v1/namespaces/default";

fn percentile(sorted: &[f64], p: f64) -> f64 {
    let i = ((sorted.len() as f64 - 1.0) * p).round() as usize;
    sorted[i.min(sorted.len() - 1)]
}

fn epoch_ms() -> f64 {
    SystemTime::now().duration_since(UNIX_EPOCH).unwrap().as_secs_f64() * 1000.0
}

// ---- what runs inside a node ----

/// `dns SERVER NAME N`: N A-queries, one at a time; prints each round trip in microseconds.
fn dns(server: &str, name: &str, n: usize) -> anyhow::Result<()> {
    use hickory_proto::op::{Message, MessageType, OpCode, Query};
    use hickory_proto::rr::{Name, RecordType};
    let socket = std::net::UdpSocket::bind("0.0.0.0:0")?;
    socket.set_read_timeout(Some(Duration::from_secs(2)))?;
    let server: SocketAddr = (server.parse::<Ipv4Addr>()?, 53).into();
    let mut times = Vec::new();
    let mut buf = [0u8; 1500];
    for i in 0..n {
        let mut m = Message::new();
        m.set_id(i as u16).set_message_type(MessageType::Query).set_op_code(OpCode::Query).set_recursion_desired(true);
        m.add_query(Query::query(Name::from_ascii(name)?, RecordType::A));
        let bytes = m.to_vec()?;
        let start = Instant::now();
        socket.send_to(&bytes, server)?;
        let (len, _) = socket.recv_from(&mut buf)?;
        times.push(start.elapsed().as_secs_f64() * 1e6);
        let reply = Message::from_vec(&buf[..len])?;
        if reply.answers().is_empty() {
            bail!("no answer for {name}");
        }
    }
    println!("{}", times.iter().map(|t| format!("{t:.0}")).collect::<Vec<_>>().join(" "));
    Ok(())
}

/// `connect ADDR-A ADDR-B N`: N connects to each, alternated; prints two lines of microseconds.
fn connect(a: &str, b: &str, n: usize) -> anyhow::Result<()> {
    let (a, b): (SocketAddr, SocketAddr) = (a.parse()?, b.parse()?);
    let (mut ta, mut tb) = (Vec::new(), Vec::new());
    for _ in 0..n {
        for (addr, times) in [(a, &mut ta), (b, &mut tb)] {
            let start = Instant::now();
            let s = std::net::TcpStream::connect_timeout(&addr, Duration::from_secs(2))?;
            times.push(start.elapsed().as_secs_f64() * 1e6);
            drop(s);
        }
    }
    for times in [ta, tb] {
        println!("{}", times.iter().map(|t| format!("{t:.0}")).collect::<Vec<_>>().join(" "));
    }
    Ok(())
}

/// `sink PORT`: accepts connections and reads them to the end, for ever.
fn sink(port: u16) -> anyhow::Result<()> {
    let listener = std::net::TcpListener::bind(("0.0.0.0", port))?;
    for stream in listener.incoming() {
        let mut s = stream?;
        std::thread::spawn(move || std::io::copy(&mut s, &mut std::io::sink()));
    }
    Ok(())
}

/// `source ADDR BYTES`: sends BYTES and prints bytes per second.
fn source(addr: &str, bytes: u64) -> anyhow::Result<()> {
    use std::io::Write;
    let mut s = std::net::TcpStream::connect(addr)?;
    let chunk = vec![0u8; 1 << 20];
    let start = Instant::now();
    let mut sent = 0;
    while sent < bytes {
        s.write_all(&chunk)?;
        sent += chunk.len() as u64;
    }
    s.shutdown(std::net::Shutdown::Write)?;
    let mut rest = [0u8; 16];
    let _ = std::io::Read::read(&mut s, &mut rest);
    println!("{:.0}", sent as f64 / start.elapsed().as_secs_f64());
    Ok(())
}

/// `watch-rule NEEDLE PRESENT TIMEOUT-S`: polls the nat table every 25 ms until a line holds (or
/// no line holds) NEEDLE; prints the epoch milliseconds when it was seen.
fn watch_rule(needle: &str, present: bool, timeout: u64) -> anyhow::Result<()> {
    let deadline = Instant::now() + Duration::from_secs(timeout);
    loop {
        let out = std::process::Command::new("iptables-save").args(["-t", "nat"]).output()?;
        let seen = epoch_ms();
        if String::from_utf8_lossy(&out.stdout).contains(needle) == present {
            println!("{seen:.1}");
            return Ok(());
        }
        if Instant::now() > deadline {
            bail!("{needle} not {} within {timeout} s", if present { "present" } else { "gone" });
        }
        // not faster: iptables-save holds the xtables lock, which the proxy's writes wait for
        std::thread::sleep(Duration::from_millis(25));
    }
}

// ---- the orchestration, on this machine ----

fn docker(args: &[&str]) -> anyhow::Result<String> {
    let out = std::process::Command::new("docker").args(args).output()?;
    if !out.status.success() {
        bail!("docker {}: {}", args.join(" "), String::from_utf8_lossy(&out.stderr));
    }
    Ok(String::from_utf8_lossy(&out.stdout).trim().to_string())
}

/// A Node's instance id (the last part of its `providerID`).
fn instance_of(node: &Value) -> String {
    node["spec"]["providerID"].as_str().and_then(|p| p.rsplit('/').next()).unwrap_or("").to_string()
}

/// A Node's zone label.
fn zone(node: &Value) -> &str {
    node.pointer("/metadata/labels/topology.kubernetes.io~1zone").and_then(Value::as_str).unwrap_or("")
}

fn is_worker(node: &Value) -> bool {
    node.pointer("/metadata/labels/node-role.kubernetes.io~1control-plane").is_none()
}

/// A pod's way in: its node's instance and its sandbox's process (for `nsenter -t PID -n`).
struct PodNs {
    instance: String,
    pid: String,
    ip: String,
}

impl PodNs {
    fn run(&self, args: &[&str]) -> anyhow::Result<String> {
        let mut full = vec!["exec", &self.instance, "nsenter", "-t", &self.pid, "-n", BINARY_IN_NODE];
        full.extend(args);
        docker(&full)
    }
}

async fn pod_ns(client: &ApiClient, name: &str) -> anyhow::Result<PodNs> {
    let deadline = Instant::now() + Duration::from_secs(120);
    loop {
        let p = client.get_value(&format!("{NAMESPACE_PATH}/pods/{name}")).await?;
        let ready = p.pointer("/status/conditions").and_then(Value::as_array).is_some_and(|cs| cs.iter().any(|c| c["type"] == "Ready" && c["status"] == "True"));
        if ready {
            let node = p["spec"]["nodeName"].as_str().context("nodeName")?;
            let n = client.get_value(&format!("/api/v1/nodes/{node}")).await?;
            let instance = instance_of(&n);
            let container = p["status"]["containerStatuses"][0]["containerID"].as_str().context("containerID")?.trim_start_matches("docker://").to_string();
            let sandbox = docker(&["exec", &instance, "docker", "inspect", "-f", "{{index .Config.Labels \"io.clusterctl.pod.sandbox-id\"}}", &container])?;
            let pid = docker(&["exec", &instance, "docker", "inspect", "-f", "{{.State.Pid}}", &sandbox])?;
            return Ok(PodNs { instance, pid, ip: p["status"]["podIP"].as_str().context("podIP")?.to_string() });
        }
        if Instant::now() > deadline {
            bail!("pod {name} not Ready after 120 s");
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

fn pod(name: &str, labels: Value, node: Option<&str>, command: &[&str]) -> Value {
    let mut spec = json!({"terminationGracePeriodSeconds": 1, "containers": [{"name": "c", "image": "clusterctl-busybox:latest", "imagePullPolicy": "Never",
        "command": command, "ports": [{"name": "http", "containerPort": 80}, {"name": "accept", "containerPort": 81}], "readinessProbe": {"tcpSocket": {"port": 80}, "periodSeconds": 1}}]});
    if let Some(node) = node {
        spec["nodeName"] = json!(node);
    }
    json!({"apiVersion": "v1", "kind": "Pod", "metadata": {"name": name, "labels": labels}, "spec": spec})
}

fn stats(line: &str) -> Vec<f64> {
    let mut v: Vec<f64> = line.split_whitespace().filter_map(|t| t.parse().ok()).collect();
    v.sort_by(f64::total_cmp);
    v
}

/// Writes the rules of `services` Services of `endpoints` endpoints into a fresh network namespace
/// with `iptables-restore`, as the proxy does; seconds.
fn rule_sync(services: usize, endpoints: usize) -> anyhow::Result<f64> {
    use clusterctl::proxy::clusterips::{ServicePortRules, restore_input};
    let ports: Vec<ServicePortRules> = (0..services)
        .map(|s| ServicePortRules {
            id: format!("bench/svc-{s}:http"),
            cluster_ip: Ipv4Addr::from(u32::from(Ipv4Addr::new(10, 96, 0, 0)) + 10 + s as u32),
            port: 80,
            protocol: "tcp",
            endpoints: (0..endpoints).map(|e| (Ipv4Addr::new(100, 64, (s % 250) as u8, 2 + e as u8), 8080)).collect(),
            affinity_seconds: None,
            node_port: None,
        })
        .collect();
    let start = Instant::now();
    let input = restore_input(&ports, &Default::default());
    let mut child = std::process::Command::new("unshare")
        .args(["-n", "iptables-restore", "--noflush"])
        .stdin(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .context("unshare -n iptables-restore")?;
    std::io::Write::write_all(child.stdin.as_mut().unwrap(), input.as_bytes())?;
    let out = child.wait_with_output()?;
    if !out.status.success() {
        bail!("iptables-restore: {}", String::from_utf8_lossy(&out.stderr));
    }
    Ok(start.elapsed().as_secs_f64())
}

async fn orchestrate(cluster: &str) -> anyhow::Result<()> {
    let home = std::env::var("CLUSTERCTL_HOME").context("CLUSTERCTL_HOME")?;
    let kc = Kubeconfig::load(&std::path::Path::new(&home).join(cluster).join("kubeconfig"))?;
    let client = ApiClient::new(&kc.server, ClientAuth::Certificate { ca_pem: kc.ca_pem, cert_pem: kc.client_cert_pem, key_pem: kc.client_key_pem })?;

    // 5 first: no cluster needed
    let mut syncs: Vec<f64> = (0..5).map(|_| rule_sync(1000, 10)).collect::<anyhow::Result<_>>()?;
    syncs.sort_by(f64::total_cmp);
    println!("RESULT clusterip-rule-sync-1000x10-s {:.3} (min {:.3} max {:.3})", syncs[2], syncs[0], syncs[4]);

    let nodes = client.list_values("/api/v1/nodes").await?;
    let workers: Vec<&Value> = nodes.iter().filter(|n| is_worker(n)).collect();
    if workers.len() < 2 {
        bail!("two workers needed");
    }
    // two workers in two zones (throughput across the VPC router), the first worker's zone first
    let w2 = workers.iter().find(|n| zone(n) != zone(workers[0])).context("workers in two zones needed")?;
    let (w1, w2) = (workers[0]["metadata"]["name"].as_str().unwrap(), w2["metadata"]["name"].as_str().unwrap());
    let me = std::env::current_exe()?;
    for n in &nodes {
        docker(&["cp", me.to_str().unwrap(), &format!("{}:{BINARY_IN_NODE}", instance_of(n))])?;
    }
    let httpd = ["sh", "-c", "mkdir -p /www && hostname > /www/index.html && exec httpd -f -p 80 -h /www"];
    client.create_value(&format!("{NAMESPACE_PATH}/pods"), &pod("bench-net-a", json!({"bench": "net"}), Some(w1), &httpd)).await?;
    client.create_value(&format!("{NAMESPACE_PATH}/pods"), &pod("bench-net-b", json!({"bench": "net", "bench-svc": "in"}), Some(w2), &httpd)).await?;
    client
        .create_value(&format!("{NAMESPACE_PATH}/services"), &json!({"apiVersion": "v1", "kind": "Service", "metadata": {"name": "bench-net"},
            "spec": {"selector": {"bench-svc": "in"}, "ports": [{"name": "http", "port": 80, "targetPort": "http"}, {"name": "accept", "port": 81, "targetPort": "accept"}]}}))
        .await?;
    let result = measure(&client, &nodes).await;
    for name in ["bench-net-a", "bench-net-b"] {
        let _ = client.delete_value(&format!("{NAMESPACE_PATH}/pods/{name}")).await;
    }
    let _ = client.delete_value(&format!("{NAMESPACE_PATH}/services/bench-net")).await;
    result
}

async fn measure(client: &ApiClient, nodes: &[Value]) -> anyhow::Result<()> {
    let (a, b) = (pod_ns(client, "bench-net-a").await?, pod_ns(client, "bench-net-b").await?);
    let svc = client.get_value(&format!("{NAMESPACE_PATH}/services/bench-net")).await?;
    let cluster_ip = svc["spec"]["clusterIP"].as_str().context("clusterIP")?.to_string();
    let gateway = {
        let ip: Ipv4Addr = a.ip.parse()?;
        let o = ip.octets();
        format!("{}.{}.{}.1", o[0], o[1], o[2])
    };
    // the Service's rules are on a's node before anything is timed
    tokio::time::sleep(Duration::from_secs(2)).await;

    let times = stats(&a.run(&["dns", &gateway, "bench-net.default.svc.cluster.local.", "1000"])?);
    println!("RESULT dns-lookup-p50-ms {:.3}", percentile(&times, 0.5) / 1000.0);
    println!("RESULT dns-lookup-p99-ms {:.3}", percentile(&times, 0.99) / 1000.0);

    let accept = std::process::Command::new("docker").args(["exec", &b.instance, "nsenter", "-t", &b.pid, "-n", BINARY_IN_NODE, "sink", "81"]).spawn()?;
    tokio::time::sleep(Duration::from_millis(500)).await;
    let out = a.run(&["connect", &format!("{cluster_ip}:81"), &format!("{}:81", b.ip), "500"]);
    let mut accept = accept;
    let _ = accept.kill();
    let _ = docker(&["exec", &b.instance, "pkill", "-f", &format!("{BINARY_IN_NODE} sink 81")]);
    let out = out?;
    let mut lines = out.lines();
    let (via, direct) = (stats(lines.next().unwrap_or("")), stats(lines.next().unwrap_or("")));
    let (pv, pd) = (percentile(&via, 0.99) / 1000.0, percentile(&direct, 0.99) / 1000.0);
    println!("RESULT clusterip-connect-p90-ms {:.3}", percentile(&via, 0.9) / 1000.0);
    println!("RESULT podip-connect-p90-ms {:.3}", percentile(&direct, 0.9) / 1000.0);
    println!("RESULT clusterip-connect-p99-ms {pv:.3}");
    println!("RESULT podip-connect-p99-ms {pd:.3}");
    println!("RESULT clusterip-connect-extra-p99-ms {:.3}", pv - pd);

    // endpoint changes: b labelled out of the Service and in again, watched on every node
    let needle = format!("--to-destination {}:80", b.ip);
    let mut delays = Vec::new();
    for round in 0..10 {
        let joining = round % 2 == 1;
        let watchers: Vec<_> = nodes
            .iter()
            .map(|n| {
                let instance = instance_of(n);
                let present = if joining { "1" } else { "0" };
                std::process::Command::new("docker").args(["exec", &instance, BINARY_IN_NODE, "watch-rule", &needle, present, "20"]).stdout(std::process::Stdio::piped()).spawn()
            })
            .collect::<Result<_, _>>()?;
        tokio::time::sleep(Duration::from_millis(300)).await; // the watchers have started polling
        let label = if joining { json!("in") } else { Value::Null };
        let t0 = epoch_ms();
        client.patch_path(&format!("{NAMESPACE_PATH}/pods/bench-net-b"), "application/merge-patch+json", &json!({"metadata": {"labels": {"bench-svc": label}}})).await?;
        for w in watchers {
            let out = w.wait_with_output()?;
            let seen: f64 = String::from_utf8_lossy(&out.stdout).trim().parse().context("a watcher's time")?;
            delays.push(seen - t0);
        }
    }
    delays.sort_by(f64::total_cmp);
    println!("RESULT endpoint-change-to-rules-p50-ms {:.0}", percentile(&delays, 0.5));
    println!("RESULT endpoint-change-to-rules-p99-ms {:.0}", percentile(&delays, 0.99));

    // throughput: pod a -> pod b across nodes, node a -> node b, alternated
    let address = |n: &Value| n.pointer("/status/addresses/0/address").and_then(Value::as_str).map(str::to_string);
    let node_of = |instance: &str| nodes.iter().find(|n| instance_of(n) == instance);
    let b_node_ip = node_of(&b.instance).and_then(address).context("b's node")?;
    let a_node = node_of(&a.instance).context("a's node")?;
    // a third worker in a's zone: node to node without the router, for comparison
    let same_subnet = nodes
        .iter()
        .filter(|n| is_worker(n))
        .find(|n| instance_of(n) != a.instance && instance_of(n) != b.instance && zone(n) == zone(a_node))
        .and_then(|n| Some((instance_of(n), address(n)?)));
    let pod_sink = std::process::Command::new("docker").args(["exec", &b.instance, "nsenter", "-t", &b.pid, "-n", BINARY_IN_NODE, "sink", "9100"]).spawn()?;
    let node_sink = std::process::Command::new("docker").args(["exec", &b.instance, BINARY_IN_NODE, "sink", "9101"]).spawn()?;
    let near_sink = match &same_subnet {
        Some((instance, _)) => Some(std::process::Command::new("docker").args(["exec", instance, BINARY_IN_NODE, "sink", "9101"]).spawn()?),
        None => None,
    };
    tokio::time::sleep(Duration::from_millis(500)).await;
    let bytes = (512u64 << 20).to_string();
    let (mut pod_rates, mut node_rates, mut ratios, mut near_rates) = (Vec::new(), Vec::new(), Vec::new(), Vec::new());
    for _ in 0..9 {
        let pod = a.run(&["source", &format!("{}:9100", b.ip), &bytes])?.parse::<f64>()?;
        let node = docker(&["exec", &a.instance, BINARY_IN_NODE, "source", &format!("{b_node_ip}:9101"), &bytes])?.parse::<f64>()?;
        if let Some((_, ip)) = &same_subnet {
            near_rates.push(docker(&["exec", &a.instance, BINARY_IN_NODE, "source", &format!("{ip}:9101"), &bytes])?.parse::<f64>()?);
        }
        ratios.push(pod / node);
        pod_rates.push(pod);
        node_rates.push(node);
    }
    for mut child in [Some(pod_sink), Some(node_sink), near_sink].into_iter().flatten() {
        let _ = child.kill();
    }
    for instance in std::iter::once(&b.instance).chain(same_subnet.as_ref().map(|(i, _)| i)) {
        let _ = docker(&["exec", instance, "pkill", "-f", &format!("{BINARY_IN_NODE} sink")]);
    }
    for v in [&mut pod_rates, &mut node_rates, &mut ratios, &mut near_rates] {
        v.sort_by(f64::total_cmp);
    }
    println!("RESULT pod-to-pod-cross-node-MBps {:.0}", pod_rates[4] / 1e6);
    println!("RESULT node-to-node-MBps {:.0}", node_rates[4] / 1e6);
    println!("RESULT pod-vs-node-throughput-ratio {:.3} (pairs {:.3}-{:.3})", ratios[4], ratios[0], ratios[8]);
    if !near_rates.is_empty() {
        println!("RESULT node-to-node-same-subnet-MBps {:.0}", near_rates[4] / 1e6);
    }
    Ok(())
}

fn main() -> anyhow::Result<()> {
    let args: Vec<String> = std::env::args().collect();
    let arg = |i: usize| args.get(i).map(String::as_str).unwrap_or("");
    match arg(1) {
        "dns" => dns(arg(2), arg(3), arg(4).parse()?),
        "connect" => connect(arg(2), arg(3), arg(4).parse()?),
        "sink" => sink(arg(2).parse()?),
        "source" => source(arg(2), arg(3).parse()?),
        "watch-rule" => watch_rule(arg(2), arg(3) == "1", arg(4).parse()?),
        "" => bail!("usage: network_paths CLUSTER-NAME"),
        cluster => tokio::runtime::Runtime::new()?.block_on(orchestrate(cluster)),
    }
}
