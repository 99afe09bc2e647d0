//! Workloads end to end against LocalStack with realized machines, on one shared cluster
//! (1 master + 3 workers): an app applied from YAML runs as real containers on the workers, is
//! reached through its NodePort on every node, restarts when its container dies, scales, rolls
//! out a new image tag without dropping below its availability, keeps serving while the master
//! is stopped (and nothing is recreated when it starts again), and moves when a worker machine
//! dies; a crashing container backs off 10 s, 20 s, ...; a pod that fits nowhere says why and
//! schedules once room is made.

mod common;

use std::collections::{BTreeMap, BTreeSet};
use std::path::Path;
use std::time::{Duration, Instant};

use clusterctl::client::kubeconfig::Kubeconfig;
use clusterctl::api::time::{now_seconds, parse_rfc3339};
use clusterctl::client::{ApiClient, ClientAuth};
use common::*;
use serde_json::Value;

fn admin(home: &std::path::Path, cluster: &str) -> ApiClient {
    let kc = Kubeconfig::load(&home.join(cluster).join("kubeconfig")).unwrap();
    ApiClient::new(&kc.server, ClientAuth::Certificate { ca_pem: kc.ca_pem, cert_pem: kc.client_cert_pem, key_pem: kc.client_key_pem }).unwrap()
}

async fn pods(client: &ApiClient) -> Vec<Value> {
    client.list_values("/api/v1/namespaces/default/pods").await.unwrap_or_default()
}

/// The pods labelled `app=<app>`.
fn app<'a>(ps: &'a [Value], app: &str) -> Vec<&'a Value> {
    ps.iter().filter(|p| p.pointer("/metadata/labels/app").and_then(Value::as_str) == Some(app)).collect()
}

/// Not being deleted.
fn is_active(pod: &Value) -> bool {
    pod.pointer("/metadata/deletionTimestamp").is_none_or(Value::is_null)
}

fn str_at<'a>(v: &'a Value, pointer: &str) -> &'a str {
    v.pointer(pointer).and_then(Value::as_str).unwrap_or("")
}

/// Writes a manifest into `dir` and returns its path.
fn manifest_file(dir: &Path, name: &str, text: &str) -> String {
    let path = dir.join(name);
    std::fs::write(&path, text).unwrap();
    path.to_string_lossy().into_owned()
}

/// The EC2 API of the harness, for what clusterctl itself does not do (stopping a machine).
async fn ec2() -> aws_sdk_ec2::Client {
    let conf = aws_config::defaults(aws_config::BehaviorVersion::latest()).http_client(clusterctl::cloud::aws::https_client()).region(aws_config::Region::new("us-east-1")).load().await;
    aws_sdk_ec2::Client::new(&conf)
}

/// The instance id behind a node (from its `providerID`).
async fn instance_of(client: &ApiClient, node: &str) -> String {
    let n = client.get_value(&format!("/api/v1/nodes/{node}")).await.unwrap();
    str_at(&n, "/spec/providerID").rsplit('/').next().unwrap().to_string()
}

fn node_ready(n: &Value) -> bool {
    n.pointer("/status/conditions").and_then(Value::as_array).is_some_and(|cs| cs.iter().any(|c| c["type"] == "Ready" && c["status"] == "True"))
}

fn is_master(n: &Value) -> bool {
    n.pointer("/metadata/labels").and_then(Value::as_object).is_some_and(|l| l.contains_key("node-role.kubernetes.io/control-plane"))
}

/// A node's InternalIP.
fn address(n: &Value) -> String {
    str_at(n, "/status/addresses/0/address").to_string()
}

fn is_ready(pod: &Value) -> bool {
    pod.pointer("/status/conditions")
        .and_then(Value::as_array)
        .is_some_and(|cs| cs.iter().any(|c| c["type"] == "Ready" && c["status"] == "True"))
}

async fn wait_for<F: Fn(&[Value]) -> bool>(client: &ApiClient, what: &str, within: Duration, done: F) -> Vec<Value> {
    let start = Instant::now();
    loop {
        let ps = pods(client).await;
        if done(&ps) {
            eprintln!("{what}: {:.1}s", start.elapsed().as_secs_f64());
            return ps;
        }
        assert!(start.elapsed() < within, "{what} not within {within:?}; pods: {}", serde_json::to_string_pretty(&ps).unwrap());
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn an_app_runs_is_reached_restarts_scales_and_moves_off_a_dead_worker() {
    harness();
    let home = temp_home();
    let spec_path = unique_spec(home.path(), "it-apps", 66, 3);
    trust_the_harness_registry(&spec_path);
    let _guard = DestroyGuard { home: home.path().into(), spec: spec_path.clone() };
    let s = spec_path.to_str().unwrap();
    // Every certificate the cluster issues itself lives 120 s here (the test-only setting), so the
    // whole run goes on across renewals of the agents', the API server's and the master's
    // in-process certificates (checked at the end).
    let out = clusterctl_command(home.path()).args(["create", "-f", s]).env("CLUSTERCTL_NODE_CERT_SECONDS", "120").output().unwrap();
    assert_ok(&out, "create");
    let tarball = std::env::var("CLUSTERCTL_BUSYBOX_TAR").unwrap_or_else(|_| root().join(".cache/images/busybox.tar").to_string_lossy().into_owned());
    assert_ok(&clusterctl(home.path(), &["load-image", "-f", s, &tarball]), "load-image");
    let manifest = root().join("manifests/web.yaml");
    let out = assert_ok(&clusterctl(home.path(), &["apply", "-f", manifest.to_str().unwrap(), "--cluster", "it-apps"]), "apply");
    assert!(out.contains("created"), "{out}");
    let client = admin(home.path(), "it-apps");

    // Three ready replicas, one on each of the three workers.
    let ps = wait_for(&client, "3 ready replicas", Duration::from_secs(120), |ps| ps.iter().filter(|p| is_ready(p)).count() == 3).await;
    let nodes: BTreeSet<&str> = ps.iter().filter_map(|p| p.pointer("/spec/nodeName").and_then(Value::as_str)).collect();
    assert_eq!(nodes.len(), 3, "replicas spread over the three workers: {nodes:?}");

    // Reached through the NodePort on every node, answered by every replica.
    let node_ips: Vec<String> = client
        .list_values("/api/v1/nodes")
        .await
        .unwrap()
        .iter()
        .filter_map(|n| n.pointer("/status/addresses/0/address").and_then(Value::as_str).map(str::to_string))
        .collect();
    let mut answers = BTreeSet::new();
    for round in 0..16 {
        let ip = &node_ips[round % node_ips.len()];
        let body = http_get(ip, 30080).await.unwrap_or_else(|| panic!("no answer from {ip}:30080"));
        answers.insert(body);
    }
    assert_eq!(answers.len(), 3, "round robin reaches all replicas: {answers:?}");

    pods_have_routable_addresses_shared_by_their_containers(home.path(), &client).await;
    pods_get_configuration_secrets_and_volumes(home.path(), &client).await;
    private_images_are_pulled_with_their_pull_secret(home.path(), &client).await;

    // A container that dies is restarted in place (restartPolicy Always).
    let ps = pods(&client).await;
    let pod = (*app(&ps, "web").into_iter().find(|p| is_ready(p) && is_active(p)).unwrap()).clone();
    let pod_name = pod["metadata"]["name"].as_str().unwrap().to_string();
    let node = pod["spec"]["nodeName"].as_str().unwrap().to_string();
    let container = pod["status"]["containerStatuses"][0]["containerID"].as_str().unwrap().trim_start_matches("docker://").to_string();
    let instance = client.get_value(&format!("/api/v1/nodes/{node}")).await.unwrap()["spec"]["providerID"].as_str().unwrap().rsplit('/').next().unwrap().to_string();
    let killed = std::process::Command::new("docker").args(["exec", &instance, "docker", "kill", &container]).output().unwrap();
    assert!(killed.status.success(), "killing the container inside {instance}: {}", String::from_utf8_lossy(&killed.stderr));
    wait_for(&client, "the killed container restarted", Duration::from_secs(60), |ps| {
        ps.iter().any(|p| p["metadata"]["name"] == pod_name.as_str() && is_ready(p) && p["status"]["containerStatuses"][0]["restartCount"].as_u64().unwrap_or(0) >= 1)
    })
    .await;

    // A container that exits at once, watched in the background while the rest goes on.
    let crash = manifest_file(home.path(), "crash.yaml", CRASH_POD);
    assert_ok(&clusterctl(home.path(), &["apply", "-f", &crash, "--cluster", "it-apps"]), "apply crash.yaml");
    let crash_watch = tokio::spawn(watch_crash_loop(admin(home.path(), "it-apps")));

    // Scale to 5.
    assert_ok(&clusterctl(home.path(), &["scale", "deployment", "web", "--replicas", "5", "--cluster", "it-apps"]), "scale");
    wait_for(&client, "5 ready replicas", Duration::from_secs(90), |ps| app(ps, "web").iter().filter(|p| is_ready(p)).count() == 5).await;

    rolling_update_keeps_availability(home.path(), s, &client, &manifest).await;

    let runs = crash_watch.await.unwrap();
    check_crash_loop_back_off(&runs);
    assert_ok(&clusterctl(home.path(), &["delete", "-f", &crash, "--cluster", "it-apps"]), "delete crash.yaml");

    unschedulable_until_room_is_made(home.path(), &client).await;
    stopped_master_leaves_pods_serving_and_untouched(&client).await;
    partitioned_worker_runs_no_pod_twice_and_loses_none(&client).await;

    // A dead worker machine: its pods are replaced on the other nodes.
    let ps = pods(&client).await;
    let victim = app(&ps, "web").iter().filter_map(|p| p.pointer("/spec/nodeName").and_then(Value::as_str)).find(|n| n.contains("default")).unwrap().to_string();
    let victim_instance = client.get_value(&format!("/api/v1/nodes/{victim}")).await.unwrap()["spec"]["providerID"].as_str().unwrap().rsplit('/').next().unwrap().to_string();
    let killed = std::process::Command::new("docker").args(["kill", &victim_instance]).output().unwrap();
    assert!(killed.status.success(), "docker kill {victim_instance}");
    wait_for(&client, "5 ready replicas off the dead worker", Duration::from_secs(120), |ps| {
        app(ps, "web").iter().filter(|p| is_ready(p) && p.pointer("/spec/nodeName").and_then(Value::as_str) != Some(victim.as_str())).count() == 5
    })
    .await;
    // its route goes with it: the tables route each node's range to that node's live instance
    let (routes, took) = eventually("the route tables follow the nodes after the dead worker", Duration::from_secs(180), || async {
        let (wanted, present) = (node_routes(&client).await, cluster_routes("it-apps").await);
        if wanted == present && !present.values().any(|i| *i == victim_instance) { Ok(present) } else { Err(format!("nodes ask {wanted:?}, tables hold {present:?}")) }
    })
    .await;
    eprintln!("routes after the dead worker, {:.1}s: {routes:?}", took.as_secs_f64());

    // Everything above ran across certificate renewals (120 s lives): the master renewed its API
    // serving certificate and its in-process ones (controllers, scheduler, its agent, its client
    // towards the agents), and the workers their client and serving certificates.
    let nodes = client.list_values("/api/v1/nodes").await.unwrap();
    let master = nodes.iter().find(|n| is_master(n)).map(|n| str_at(n, "/spec/providerID").rsplit('/').next().unwrap().to_string()).unwrap();
    let journal = |instance: &str, unit: &str| {
        let out = std::process::Command::new("docker").args(["exec", instance, "journalctl", "-u", unit, "-o", "cat", "--no-pager"]).output().unwrap();
        String::from_utf8_lossy(&out.stdout).into_owned()
    };
    let master_journal = journal(&master, "clusterctl-master");
    for line in ["renewed the API server's serving certificate", "renewed the master's in-process certificates"] {
        assert!(master_journal.contains(line), "the master's journal says {line:?}");
    }
    let workers: Vec<String> = nodes.iter().filter(|n| !is_master(n)).map(|n| str_at(n, "/spec/providerID").rsplit('/').next().unwrap().to_string()).collect();
    let renewed = workers.iter().filter(|w| {
        let j = journal(w, "clusterctl-worker");
        j.contains("renewed the node's client certificate") && j.contains("renewed the agent's serving certificate")
    });
    assert!(renewed.count() >= 2, "the workers that ran from the start renewed both their certificates");
}

/// The cluster CIDR of the test specs (the default).
const CLUSTER_CIDR: &str = "100.64.0.0/16";

/// Every node's pod range and the instance behind it, as the route controller should route them.
async fn node_routes(client: &ApiClient) -> BTreeMap<String, String> {
    let nodes = client.list_values("/api/v1/nodes").await.unwrap_or_default();
    nodes.iter().filter(|n| !str_at(n, "/spec/podCIDR").is_empty()).map(|n| (str_at(n, "/spec/podCIDR").to_string(), str_at(n, "/spec/providerID").rsplit('/').next().unwrap().to_string())).collect()
}

/// The routes inside the cluster CIDR in the cluster's route tables (destination -> instance), or
/// an empty map when the tables disagree with each other.
async fn cluster_routes(cluster: &str) -> BTreeMap<String, String> {
    let cidr: ipnet::Ipv4Net = CLUSTER_CIDR.parse().unwrap();
    let tables = ec2()
        .await
        .describe_route_tables()
        .filters(aws_sdk_ec2::types::Filter::builder().name(format!("tag:{}", clusterctl::cloud::OWNER_TAG)).values(cluster).build())
        .send()
        .await
        .unwrap();
    let per_table: Vec<BTreeMap<String, String>> = tables
        .route_tables()
        .iter()
        .map(|t| {
            t.routes()
                .iter()
                .filter(|r| r.destination_cidr_block().and_then(|d| d.parse::<ipnet::Ipv4Net>().ok()).is_some_and(|d| cidr.contains(&d)))
                .map(|r| (r.destination_cidr_block().unwrap().to_string(), r.instance_id().unwrap_or("").to_string()))
                .collect()
        })
        .collect();
    assert!(!per_table.is_empty(), "the cluster {cluster} has route tables");
    if per_table.windows(2).all(|w| w[0] == w[1]) { per_table[0].clone() } else { BTreeMap::new() }
}

/// Runs a command in a pod's container, from inside the node's machine.
fn in_container(instance: &str, container_id: &str, command: &str) -> std::process::Output {
    std::process::Command::new("docker").args(["exec", instance, "docker", "exec", container_id, "sh", "-c", command]).output().unwrap()
}

const DNS_UDP: &str = r#"
apiVersion: v1
kind: Service
metadata:
  name: dns-udp
spec:
  ports:
    - name: dns
      protocol: UDP
      port: 53
---
apiVersion: v1
kind: Endpoints
metadata:
  name: dns-udp
subsets:
  - addresses:
      - ip: GATEWAY
    ports:
      - name: dns
        protocol: UDP
        port: 53
"#;

const STICKY_SERVICE: &str = r#"
apiVersion: v1
kind: Service
metadata:
  name: web-sticky
spec:
  selector:
    app: web
  sessionAffinity: ClientIP
  ports:
    - port: 80
      targetPort: http
"#;

const TWO_CONTAINER_POD: &str = r#"
apiVersion: v1
kind: Pod
metadata:
  name: pair
  labels:
    app: pair
spec:
  terminationGracePeriodSeconds: 1
  containers:
    - name: server
      image: clusterctl-busybox:latest
      imagePullPolicy: Never
      command: ["sh", "-c", "mkdir -p /www && echo pair-server > /www/index.html && exec httpd -f -p 127.0.0.1:8080 -h /www"]
    - name: client
      image: clusterctl-busybox:latest
      imagePullPolicy: Never
      command: ["sleep", "3600"]
"#;

/// The Kubernetes network model on the web pods: each has an address of its node's pod range,
/// not the node's; the route tables hold one route per node's range to its instance; a pod
/// reaches a pod on another node and a node a pod elsewhere at its pod address, and a pod
/// reaches the harness outside the VPC through its node; two containers of one pod share
/// `localhost`.
async fn pods_have_routable_addresses_shared_by_their_containers(home: &Path, client: &ApiClient) {
    let ps = pods(client).await;
    let web: Vec<&Value> = app(&ps, "web").into_iter().filter(|p| is_ready(p)).collect();
    let nodes = client.list_values("/api/v1/nodes").await.unwrap();
    let node = |name: &str| nodes.iter().find(|n| n["metadata"]["name"] == name).unwrap().clone();
    let mut ips = BTreeSet::new();
    for p in &web {
        let ip: std::net::Ipv4Addr = str_at(p, "/status/podIP").parse().unwrap_or_else(|_| panic!("a pod IP: {p}"));
        let n = node(str_at(p, "/spec/nodeName"));
        let range: ipnet::Ipv4Net = str_at(&n, "/spec/podCIDR").parse().unwrap();
        assert!(range.contains(&ip), "pod IP {ip} in its node's range {range}");
        assert_ne!(str_at(p, "/status/podIP"), str_at(p, "/status/hostIP"));
        assert_eq!(str_at(p, "/status/podIPs/0/ip"), str_at(p, "/status/podIP"));
        ips.insert(ip);
    }
    assert_eq!(ips.len(), web.len(), "one address per pod");

    let (routes, took) = eventually("one route per node's range to its instance", Duration::from_secs(60), || async {
        let (wanted, present) = (node_routes(client).await, cluster_routes("it-apps").await);
        if wanted.len() == nodes.len() && wanted == present { Ok(present) } else { Err(format!("nodes ask {wanted:?}, tables hold {present:?}")) }
    })
    .await;
    eprintln!("routes, {:.1}s: {routes:?}", took.as_secs_f64());

    // pod to pod across nodes, and node to a pod on another node, at the pod's address
    let (a, b) = (web[0], web.iter().find(|p| p["spec"]["nodeName"] != web[0]["spec"]["nodeName"]).expect("web pods on two nodes"));
    let a_instance = instance_of(client, str_at(a, "/spec/nodeName")).await;
    let a_container = str_at(a, "/status/containerStatuses/0/containerID").trim_start_matches("docker://").to_string();
    let b_ip = str_at(b, "/status/podIP");
    let out = in_container(&a_instance, &a_container, &format!("timeout 5 wget -q -O - http://{b_ip}/"));
    assert!(out.status.success() && !out.stdout.is_empty(), "pod on {} to pod {b_ip} on {}: {}", a["spec"]["nodeName"], b["spec"]["nodeName"], String::from_utf8_lossy(&out.stderr));
    let out = std::process::Command::new("docker").args(["exec", &a_instance, "curl", "-sf", "-m", "5", &format!("http://{b_ip}/")]).output().unwrap();
    assert!(out.status.success() && !out.stdout.is_empty(), "node {} to pod {b_ip}: {}", a["spec"]["nodeName"], String::from_utf8_lossy(&out.stderr));
    // The established connection's packets skip the node's IP layer (agent/runtime/fastpath.rs):
    // 16 MiB from pod to pod cross the pod's link in hundreds of packets, of which the node's
    // FORWARD chain sees only the opening, the closing and one ACK in 256. (Where the kernel has
    // no tcx, before Linux 6.6, or no BTF, the agent runs without the fast path: the copy must
    // still arrive whole.)
    let fast_path_kernel = std::path::Path::new("/sys/kernel/btf/vmlinux").exists() && {
        let release = std::fs::read_to_string("/proc/sys/kernel/osrelease").unwrap_or_default();
        let mut parts = release.trim().split(|c: char| !c.is_ascii_digit()).filter_map(|p| p.parse::<u32>().ok());
        (parts.next().unwrap_or(0), parts.next().unwrap_or(0)) >= (6, 6)
    };
    let b_instance = instance_of(client, str_at(b, "/spec/nodeName")).await;
    let b_container = str_at(b, "/status/containerStatuses/0/containerID").trim_start_matches("docker://").to_string();
    let on = |instance: &str, cmd: &str| String::from_utf8(std::process::Command::new("docker").args(["exec", instance, "sh", "-c", cmd]).output().unwrap().stdout).unwrap();
    let a_link = on(&a_instance, &format!("ip -o route get {}", str_at(a, "/status/podIP"))).split_whitespace().skip_while(|w| *w != "dev").nth(1).expect("the pod's link").to_string();
    let counters = || {
        let forwarded: u64 = on(&a_instance, "iptables -L FORWARD -v -x -n").lines().skip(2).filter_map(|l| l.split_whitespace().next()?.parse::<u64>().ok()).sum();
        let sent: u64 = on(&a_instance, &format!("cat /sys/class/net/{a_link}/statistics/rx_packets")).trim().parse().expect("the link's packet count");
        (forwarded, sent)
    };
    // (the listener's stdin stays open: busybox's nc closes the connection when its stdin ends)
    in_container(&b_instance, &b_container, "rm -f /tmp/got; (sleep 30 | timeout 30 nc -l -p 9999 | wc -c > /tmp/got &)");
    std::thread::sleep(Duration::from_millis(300));
    let (forwarded, sent) = counters();
    let out = in_container(&a_instance, &a_container, &format!("dd if=/dev/zero bs=64k count=256 2>/dev/null | timeout 20 nc {b_ip} 9999"));
    assert!(out.status.success(), "16 MiB from pod to pod: {}", String::from_utf8_lossy(&out.stderr));
    let (forwarded, sent) = (counters().0 - forwarded, counters().1 - sent);
    eprintln!("16 MiB pod to pod: {sent} packets on the pod's link, {forwarded} through the node's FORWARD chain");
    let (got, _) = eventually("every byte arrives", Duration::from_secs(10), || async {
        let got = String::from_utf8_lossy(&in_container(&b_instance, &b_container, "cat /tmp/got").stdout).trim().to_string();
        if got.is_empty() { Err("not yet".to_string()) } else { Ok(got) }
    })
    .await;
    assert_eq!(got, "16777216", "the receiving pod got all 16 MiB");
    assert!(sent >= 200, "16 MiB in {sent} packets?");
    if fast_path_kernel {
        assert!(forwarded * 4 < sent, "the fast path takes the established packets: {sent} sent, {forwarded} forwarded by the IP layer");
    }
    // out of the cluster through the node: LocalStack's health on the harness's bridge
    let out = in_container(&a_instance, &a_container, &format!("timeout 5 wget -q -O - http://{}:4566/_localstack/health", harness_gateway()));
    assert!(out.status.success() && String::from_utf8_lossy(&out.stdout).contains("services"), "pod to the harness outside the VPC: {}", String::from_utf8_lossy(&out.stderr));

    // The instance metadata service (the harness's, as AWS's: IMDSv2 required, hop limit 1): the
    // node gets a token and its metadata with it, its instance role the workers' (whose
    // credentials its agent asks ECR for pull tokens with); a pod reaches the service (its
    // request without a token is refused, 401) but never receives a token, whose answer dies one
    // routed hop behind the node.
    let put_token = "curl -s -m 5 -X PUT -H 'X-aws-ec2-metadata-token-ttl-seconds: 60' http://169.254.169.254/latest/api/token";
    let on_node = |cmd: &str| std::process::Command::new("docker").args(["exec", &a_instance, "sh", "-c", cmd]).output().unwrap();
    let token = String::from_utf8(on_node(put_token).stdout).unwrap();
    assert!(token.len() > 40, "the node gets a metadata token: {token:?}");
    let id = on_node(&format!("curl -sf -m 5 -H 'X-aws-ec2-metadata-token: {token}' http://169.254.169.254/latest/meta-data/instance-id"));
    assert_eq!(String::from_utf8_lossy(&id.stdout), a_instance, "the node reads its metadata: {}", String::from_utf8_lossy(&id.stderr));
    let role = on_node(&format!("curl -sf -m 5 -H 'X-aws-ec2-metadata-token: {token}' http://169.254.169.254/latest/meta-data/iam/security-credentials/"));
    assert_eq!(String::from_utf8_lossy(&role.stdout), "clusterctl-it-apps-worker", "a worker runs on the workers' role: {}", String::from_utf8_lossy(&role.stderr));
    let get = "printf 'GET /latest/meta-data/instance-id HTTP/1.0\\r\\n\\r\\n' | timeout 5 nc 169.254.169.254 80";
    let out = String::from_utf8(in_container(&a_instance, &a_container, get).stdout).unwrap();
    assert!(out.starts_with("HTTP/1.1 401"), "a pod's request without a token: {out:?}");
    let put = "printf 'PUT /latest/api/token HTTP/1.0\\r\\nX-aws-ec2-metadata-token-ttl-seconds: 60\\r\\n\\r\\n' | timeout 5 nc 169.254.169.254 80";
    let out = String::from_utf8(in_container(&a_instance, &a_container, put).stdout).unwrap();
    assert_eq!(out, "", "a pod never receives a metadata token");

    // the Service's cluster IP, from a pod and from a node, balanced over the replicas; with
    // ClientIP affinity one client keeps its replica
    let service = client.get_value("/api/v1/namespaces/default/services/web").await.unwrap();
    let cluster_ip: std::net::Ipv4Addr = str_at(&service, "/spec/clusterIP").parse().unwrap_or_else(|_| panic!("a cluster IP: {service}"));
    assert!("10.96.0.0/16".parse::<ipnet::Ipv4Net>().unwrap().contains(&cluster_ip), "{cluster_ip} in the service CIDR");
    let many = format!("for i in 1 2 3 4 5 6 7 8 9 10 11 12; do timeout 5 wget -q -O - http://{cluster_ip}/; done");
    let (answers, took) = eventually("the cluster IP balanced over the replicas from a pod", Duration::from_secs(30), || async {
        let out = in_container(&a_instance, &a_container, &many);
        let answers: BTreeSet<String> = String::from_utf8_lossy(&out.stdout).lines().map(str::to_string).collect();
        if out.status.success() && answers.len() >= 2 { Ok(answers) } else { Err(format!("{answers:?}: {}", String::from_utf8_lossy(&out.stderr))) }
    })
    .await;
    eprintln!("cluster IP {cluster_ip} from a pod, {:.1}s: {answers:?}", took.as_secs_f64());
    let out = std::process::Command::new("docker").args(["exec", &a_instance, "curl", "-sf", "-m", "5", &format!("http://{cluster_ip}/")]).output().unwrap();
    assert!(out.status.success() && !out.stdout.is_empty(), "node to the cluster IP: {}", String::from_utf8_lossy(&out.stderr));
    let sticky = manifest_file(home, "sticky.yaml", STICKY_SERVICE);
    assert_ok(&clusterctl(home, &["apply", "-f", &sticky, "--cluster", "it-apps"]), "apply sticky.yaml");
    let svc = client.get_value("/api/v1/namespaces/default/services/web-sticky").await.unwrap();
    let sticky_ip = str_at(&svc, "/spec/clusterIP").to_string();
    let many = format!("for i in 1 2 3 4 5 6 7 8; do timeout 5 wget -q -O - http://{sticky_ip}/; done");
    let (answers, _) = eventually("the sticky service answers", Duration::from_secs(30), || async {
        let out = in_container(&a_instance, &a_container, &many);
        let answers: Vec<String> = String::from_utf8_lossy(&out.stdout).lines().map(str::to_string).collect();
        if answers.len() == 8 { Ok(answers) } else { Err(format!("{answers:?}: {}", String::from_utf8_lossy(&out.stderr))) }
    })
    .await;
    assert_eq!(answers.iter().collect::<BTreeSet<_>>().len(), 1, "ClientIP affinity keeps one replica: {answers:?}");
    assert_ok(&clusterctl(home, &["delete", "-f", &sticky, "--cluster", "it-apps"]), "delete sticky.yaml");
    // cluster DNS: the Service by its short name (search domains) and its full name, the
    // kubernetes Service, NXDOMAIN for a name the cluster does not have
    let out = in_container(&a_instance, &a_container, "timeout 5 wget -q -O - http://web/ && nslookup web.default.svc.cluster.local && nslookup kubernetes.default.svc.cluster.local");
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success() && text.contains(&format!("Address: {cluster_ip}")) && text.contains("Address: 10.96.0.1"), "names from a pod: {text} {}", String::from_utf8_lossy(&out.stderr));
    let out = in_container(&a_instance, &a_container, "nslookup nothing.default.svc.cluster.local 2>&1");
    assert!(String::from_utf8_lossy(&out.stdout).contains("NXDOMAIN"), "{}", String::from_utf8_lossy(&out.stdout));
    let other_node = nodes.iter().find(|n| n["metadata"]["name"] != a["spec"]["nodeName"] && !str_at(n, "/spec/podCIDR").is_empty()).unwrap();
    // a name outside the cluster goes to the node's resolver, the VPC's (the harness's, as AWS's
    // answers the instances' private DNS names): another node's private name, read from EC2
    let other_instance = instance_of(client, str_at(other_node, "/metadata/name")).await;
    let described = ec2().await.describe_instances().instance_ids(&other_instance).send().await.unwrap();
    let private_name = described.reservations()[0].instances()[0].private_dns_name().unwrap().to_string();
    let out = in_container(&a_instance, &a_container, &format!("nslookup {private_name}"));
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success() && text.contains(&format!("Address: {}", address(other_node))), "{private_name} forwarded to the VPC's resolver: {text} {}", String::from_utf8_lossy(&out.stderr));
    // UDP through a cluster IP: a Service without selector whose endpoint is another node's DNS
    let range: ipnet::Ipv4Net = str_at(other_node, "/spec/podCIDR").parse().unwrap();
    let remote_dns = range.hosts().next().unwrap();
    let udp = manifest_file(home, "dns-udp.yaml", &DNS_UDP.replace("GATEWAY", &remote_dns.to_string()));
    let out = kubectl_apply(home, &udp);
    assert!(out.status.success(), "kubectl apply dns-udp.yaml: {}", String::from_utf8_lossy(&out.stderr));
    let udp_ip = str_at(&client.get_value("/api/v1/namespaces/default/services/dns-udp").await.unwrap(), "/spec/clusterIP").to_string();
    let (_, took) = eventually("a DNS answer over UDP through a cluster IP", Duration::from_secs(20), || async {
        let out = in_container(&a_instance, &a_container, &format!("nslookup web.default.svc.cluster.local {udp_ip}"));
        let text = String::from_utf8_lossy(&out.stdout).to_string();
        if text.contains(&format!("Address: {cluster_ip}")) { Ok(()) } else { Err(text) }
    })
    .await;
    eprintln!("UDP cluster IP {udp_ip} -> {remote_dns}:53 answered after {:.1}s", took.as_secs_f64());
    // (the Endpoints may already be gone with their Service, as the endpoints controller deletes them)
    let out = kubectl(home, &["delete", "--ignore-not-found", "-f", &udp]);
    assert!(out.status.success(), "kubectl delete -f dns-udp.yaml: {}", String::from_utf8_lossy(&out.stderr));
    // the API at kubernetes.default's address, the first of the range
    let api = client.get_value("/api/v1/namespaces/default/services/kubernetes").await.unwrap();
    assert_eq!(str_at(&api, "/spec/clusterIP"), "10.96.0.1", "{api}");
    let out = std::process::Command::new("docker").args(["exec", &a_instance, "curl", "-sk", "-m", "5", "https://10.96.0.1/healthz"]).output().unwrap();
    assert_eq!(String::from_utf8_lossy(&out.stdout), "ok", "the API through kubernetes.default: {}", String::from_utf8_lossy(&out.stderr));

    // two containers of one pod share localhost (the server listens on 127.0.0.1 only)
    let pair = manifest_file(home, "pair.yaml", TWO_CONTAINER_POD);
    assert_ok(&clusterctl(home, &["apply", "-f", &pair, "--cluster", "it-apps"]), "apply pair.yaml");
    let ps = wait_for(client, "the two-container pod ready", Duration::from_secs(60), |ps| app(ps, "pair").iter().any(|p| is_ready(p))).await;
    let pod = app(&ps, "pair")[0].clone();
    let instance = instance_of(client, str_at(&pod, "/spec/nodeName")).await;
    let statuses = pod["status"]["containerStatuses"].as_array().unwrap();
    let client_id = statuses.iter().find(|c| c["name"] == "client").unwrap()["containerID"].as_str().unwrap().trim_start_matches("docker://").to_string();
    let out = in_container(&instance, &client_id, "timeout 5 wget -q -O - http://127.0.0.1:8080/");
    assert_eq!(String::from_utf8_lossy(&out.stdout).trim(), "pair-server", "the client container reaches the server on localhost: {}", String::from_utf8_lossy(&out.stderr));

    // a NetworkPolicy: the web pods accept only the pair pod, on the http port; the other web
    // pods are refused until the policy goes
    let web_b = format!("timeout 2 wget -q -O - http://{b_ip}/");
    let policy = manifest_file(home, "policy.yaml", WEB_POLICY);
    let out = kubectl_apply(home, &policy);
    assert!(out.status.success(), "kubectl apply policy.yaml: {}", String::from_utf8_lossy(&out.stderr));
    let (_, took) = eventually("a web pod refused by the policy", Duration::from_secs(30), || async {
        let out = in_container(&a_instance, &a_container, &web_b);
        if out.status.success() { Err("still answered".to_string()) } else { Ok(()) }
    })
    .await;
    eprintln!("policy enforced after {:.1}s", took.as_secs_f64());
    let out = in_container(&instance, &client_id, &web_b);
    assert!(out.status.success() && !out.stdout.is_empty(), "the pair pod is let through: {}", String::from_utf8_lossy(&out.stderr));
    let out = kubectl_delete(home, &policy);
    assert!(out.status.success(), "kubectl delete policy.yaml: {}", String::from_utf8_lossy(&out.stderr));
    eventually("the web pod answers again without the policy", Duration::from_secs(30), || async {
        let out = in_container(&a_instance, &a_container, &web_b);
        if out.status.success() { Ok(()) } else { Err("refused".to_string()) }
    })
    .await;
    assert_ok(&clusterctl(home, &["delete", "-f", &pair, "--cluster", "it-apps"]), "delete pair.yaml");
    three_tier_app_found_by_name_and_fenced_by_policies(home, client, (&a_instance, &a_container)).await;
}

const WEB_POLICY: &str = r#"
apiVersion: networking.k8s.io/v1
kind: NetworkPolicy
metadata:
  name: web-from-pair
spec:
  podSelector:
    matchLabels:
      app: web
  policyTypes: ["Ingress"]
  ingress:
    - from:
        - podSelector:
            matchLabels:
              app: pair
      ports:
        - port: http
"#;

/// Issue 21's configuration: a ConfigMap and a Secret reach a pod as variables and files, with
/// the pod's own fields, an emptyDir shared by two containers; checked with `kubectl exec`.
const CONFIGURED: &str = r#"
apiVersion: v1
kind: ConfigMap
metadata:
  name: app-config
data:
  mode: fast
  app.conf: "level=3"
---
apiVersion: v1
kind: Secret
metadata:
  name: app-secret
stringData:
  password: s3cret
---
apiVersion: v1
kind: Pod
metadata:
  name: configured
  labels:
    app: configured
spec:
  securityContext:
    runAsUser: 1000
    runAsGroup: 3000
    fsGroup: 2000
  hostAliases:
    - ip: 10.1.2.3
      hostnames: ["db.local"]
  affinity:
    nodeAffinity:
      requiredDuringSchedulingIgnoredDuringExecution:
        nodeSelectorTerms:
          - matchExpressions:
              - key: kubernetes.io/os
                operator: In
                values: ["linux"]
  initContainers:
    - name: init
      image: clusterctl-busybox:latest
      command: ["sh", "-c", "echo from-init > /scratch/init"]
      volumeMounts:
        - name: scratch
          mountPath: /scratch
  volumes:
    - name: conf
      configMap:
        name: app-config
    - name: secret
      secret:
        secretName: app-secret
        defaultMode: 0400
    - name: me
      downwardAPI:
        items:
          - path: labels
            fieldRef:
              fieldPath: metadata.labels
    - name: scratch
      emptyDir: {}
    - name: cache
      emptyDir:
        medium: Memory
        sizeLimit: 8Mi
    - name: both
      projected:
        sources:
          - configMap:
              name: app-config
              items:
                - key: mode
                  path: mode
          - secret:
              name: app-secret
  containers:
    - name: app
      image: clusterctl-busybox:latest
      command: ["sh", "-c", "echo $(MODE) > /scratch/started; exec sleep 3600"]
      startupProbe:
        exec:
          command: ["test", "-f", "/scratch/started"]
        periodSeconds: 1
      lifecycle:
        postStart:
          exec:
            command: ["sh", "-c", "echo hooked > /scratch/post-start"]
      securityContext:
        allowPrivilegeEscalation: false
        readOnlyRootFilesystem: true
        capabilities:
          drop: ["ALL"]
      envFrom:
        - configMapRef:
            name: app-config
          prefix: CFG_
      env:
        - name: MODE
          valueFrom:
            configMapKeyRef:
              name: app-config
              key: mode
        - name: PASSWORD
          valueFrom:
            secretKeyRef:
              name: app-secret
              key: password
        - name: POD_NAME
          valueFrom:
            fieldRef:
              fieldPath: metadata.name
        - name: POD_IP
          valueFrom:
            fieldRef:
              fieldPath: status.podIP
        - name: NODE
          valueFrom:
            fieldRef:
              fieldPath: spec.nodeName
        - name: GREETING
          value: "$(POD_NAME) on $(NODE)"
      volumeMounts:
        - name: conf
          mountPath: /etc/app
        - name: secret
          mountPath: /etc/secret
          readOnly: true
        - name: me
          mountPath: /etc/podinfo
        - name: scratch
          mountPath: /scratch
        - name: both
          mountPath: /etc/both
        - name: cache
          mountPath: /cache
    - name: reader
      image: clusterctl-busybox:latest
      command: ["sh", "-c", "exec sleep 3600"]
      volumeMounts:
        - name: scratch
          mountPath: /shared
---
apiVersion: v1
kind: Pod
metadata:
  name: ender
spec:
  restartPolicy: Never
  containers:
    - name: app
      image: clusterctl-busybox:latest
      command: ["sh", "-c", "echo out of disk > /dev/termination-log; exit 3"]
---
apiVersion: v1
kind: Pod
metadata:
  name: rooty
spec:
  securityContext:
    runAsNonRoot: true
  containers:
    - name: app
      image: clusterctl-busybox:latest
      command: ["sleep", "3600"]
---
apiVersion: v1
kind: Pod
metadata:
  name: hog
spec:
  containers:
    - name: hog
      image: clusterctl-busybox:latest
      command: ["sh", "-c", "head -c 200000000 /dev/zero | tail"]
      resources:
        limits:
          memory: 32Mi
---
apiVersion: v1
kind: Pod
metadata:
  name: needs-key
spec:
  containers:
    - name: app
      image: clusterctl-busybox:latest
      command: ["sh", "-c", "exec sleep 3600"]
      env:
        - name: USER
          valueFrom:
            secretKeyRef:
              name: app-secret
              key: user
---
apiVersion: v1
kind: Pod
metadata:
  name: deadline
spec:
  activeDeadlineSeconds: 2
  containers:
    - name: app
      image: clusterctl-busybox:latest
      command: ["sleep", "3600"]
---
apiVersion: v1
kind: Pod
metadata:
  name: filler
spec:
  volumes:
    - name: scratch
      emptyDir:
        sizeLimit: 1Mi
  containers:
    - name: app
      image: clusterctl-busybox:latest
      command: ["sh", "-c", "head -c 4000000 /dev/zero > /scratch/fill; exec sleep 3600"]
      volumeMounts:
        - name: scratch
          mountPath: /scratch
---
apiVersion: apps/v1
kind: Deployment
metadata:
  name: apart
spec:
  replicas: 3
  selector:
    matchLabels:
      app: apart
  template:
    metadata:
      labels:
        app: apart
    spec:
      affinity:
        podAntiAffinity:
          requiredDuringSchedulingIgnoredDuringExecution:
            - labelSelector:
                matchLabels:
                  app: apart
              topologyKey: kubernetes.io/hostname
      containers:
        - name: app
          image: clusterctl-busybox:latest
          command: ["sleep", "3600"]
"#;

async fn pods_get_configuration_secrets_and_volumes(home: &Path, client: &ApiClient) {
    let file = manifest_file(home, "configured.yaml", CONFIGURED);
    let out = kubectl_apply(home, &file);
    assert!(out.status.success(), "kubectl apply configured.yaml: {}", String::from_utf8_lossy(&out.stderr));
    let exec = |container: &str, script: &str| {
        let out = kubectl(home, &["exec", "configured", "-c", container, "--", "sh", "-c", script]);
        (out.status.success(), String::from_utf8_lossy(&out.stdout).trim().to_string(), String::from_utf8_lossy(&out.stderr).to_string())
    };
    eventually("the configured pod runs", Duration::from_secs(60), || async {
        let pod = client.get_value("/api/v1/namespaces/default/pods/configured").await.map_err(|e| e.to_string())?;
        if is_ready(&pod) { Ok(()) } else { Err(pod["status"].to_string()) }
    })
    .await;
    let pod = client.get_value("/api/v1/namespaces/default/pods/configured").await.unwrap();
    let (ok, env, err) = exec("app", "echo \"$MODE|$PASSWORD|$POD_NAME|$POD_IP|$NODE|$CFG_mode|$GREETING\"");
    assert!(ok, "{err}");
    let expected = format!("fast|s3cret|configured|{}|{}|fast|configured on {}", str_at(&pod, "/status/podIP"), str_at(&pod, "/spec/nodeName"), str_at(&pod, "/spec/nodeName"));
    assert_eq!(env, expected, "the environment from the ConfigMap, the Secret and the pod's fields");
    let (ok, files, err) = exec("app", "cat /etc/app/mode /etc/app/app.conf /etc/secret/password /etc/podinfo/labels /etc/both/mode /etc/both/password");
    assert!(ok, "{err}");
    assert_eq!(files, "fastlevel=3s3cretapp=\"configured\"\nfasts3cret", "the volumes' files");
    let (_, modes, _) = exec("app", "stat -L -c '%a %g' /etc/secret/password; grep ' /etc/secret ' /proc/mounts; touch /etc/secret/x 2>&1 || echo read-only");
    assert!(modes.starts_with("440 2000") && modes.contains("tmpfs") && modes.ends_with("read-only"), "the secret: mode 0400 made group-readable for fsGroup 2000, in memory, read-only: {modes}");
    // the security context: user, group, fsGroup, a read-only root, no capabilities, no new privileges
    let (_, who, _) = exec("app", "id; touch /rootfile 2>/dev/null || echo root-read-only; grep -E '^(CapEff|NoNewPrivs)' /proc/self/status | tr -s '\t' ' '");
    assert!(who.contains("uid=1000") && who.contains("gid=3000") && who.contains("2000") && who.contains("root-read-only"), "{who}");
    assert!(who.contains("CapEff: 0000000000000000") && who.contains("NoNewPrivs: 1"), "{who}");
    let (_, hosts, _) = exec("app", "grep db.local /etc/hosts; df -k /cache | tail -1");
    assert!(hosts.starts_with("10.1.2.3\tdb.local") && hosts.contains("tmpfs") && hosts.contains(" 8192 "), "hostAliases in /etc/hosts and the memory emptyDir a tmpfs of its sizeLimit: {hosts}");
    let (ok, from_init, err) = exec("app", "cat /scratch/init");
    assert!(ok && from_init == "from-init", "the init container's output: {from_init} {err}");
    let (ok, hooked, err) = exec("app", "cat /scratch/post-start");
    assert!(ok && hooked == "hooked", "the postStart handler ran: {hooked} {err}");
    assert_eq!(pod["status"]["qosClass"], "BestEffort");
    assert_eq!(pod["status"]["containerStatuses"][0]["started"], true, "its startup probe passed");
    eventually("ender's termination message", Duration::from_secs(30), || async {
        let pod = client.get_value("/api/v1/namespaces/default/pods/ender").await.map_err(|e| e.to_string())?;
        let t = &pod["status"]["containerStatuses"][0]["state"]["terminated"];
        if t["exitCode"] == 3 && t["message"] == "out of disk\n" && pod["status"]["phase"] == "Failed" { Ok(()) } else { Err(pod["status"].to_string()) }
    })
    .await;
    let init_status = &pod["status"]["initContainerStatuses"][0];
    assert_eq!(init_status["state"]["terminated"]["reason"], "Completed", "{init_status}");
    // runAsNonRoot with an image that runs as root: refused with kubelet's words
    eventually("rooty is refused", Duration::from_secs(30), || async {
        let pod = client.get_value("/api/v1/namespaces/default/pods/rooty").await.map_err(|e| e.to_string())?;
        let waiting = &pod["status"]["containerStatuses"][0]["state"]["waiting"];
        if waiting["reason"] == "CreateContainerConfigError" && waiting["message"].as_str().unwrap_or("").contains("container has runAsNonRoot and image will run as root") { Ok(()) } else { Err(pod["status"].to_string()) }
    })
    .await;
    // over its memory limit: OOMKilled, and restarted
    let (_, took) = eventually("hog OOMKilled and restarted", Duration::from_secs(60), || async {
        let pod = client.get_value("/api/v1/namespaces/default/pods/hog").await.map_err(|e| e.to_string())?;
        let status = &pod["status"]["containerStatuses"][0];
        let killed = status["lastState"]["terminated"]["reason"] == "OOMKilled" || status["state"]["terminated"]["reason"] == "OOMKilled";
        if killed && status["restartCount"].as_u64().unwrap_or(0) >= 1 { Ok(()) } else { Err(status.to_string()) }
    })
    .await;
    eprintln!("a container over its memory limit was OOMKilled and restarted within {:.1}s", took.as_secs_f64());
    let (ok, shared, err) = exec("reader", "cat /shared/started");
    assert!(ok && shared == "fast", "the emptyDir shared by both containers, the command expanded: {shared} {err}");
    // a ConfigMap change reaches the mounted file (goal 10 s)
    let t0 = Instant::now();
    let out = kubectl(home, &["patch", "configmap", "app-config", "--type", "merge", "-p", r#"{"data":{"mode":"slow"}}"#]);
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let (_, took) = eventually("the changed ConfigMap in the pod's file", Duration::from_secs(30), || async {
        let (_, mode, _) = exec("app", "cat /etc/app/mode");
        if mode == "slow" { Ok(()) } else { Err(mode) }
    })
    .await;
    eprintln!("ConfigMap change visible in the pod's file after {:.1}s", t0.elapsed().as_secs_f64());
    assert!(took < Duration::from_secs(10), "a ConfigMap change in the file within 10 s: {took:?}");
    // a missing key: the container waits with CreateContainerConfigError until the key is there
    eventually("needs-key waits for its key", Duration::from_secs(30), || async {
        let pod = client.get_value("/api/v1/namespaces/default/pods/needs-key").await.map_err(|e| e.to_string())?;
        let waiting = &pod["status"]["containerStatuses"][0]["state"]["waiting"];
        if waiting["reason"] == "CreateContainerConfigError" && waiting["message"].as_str().unwrap_or("").contains("couldn't find key user in Secret default/app-secret") { Ok(()) } else { Err(pod["status"].to_string()) }
    })
    .await;
    let out = kubectl(home, &["patch", "secret", "app-secret", "--type", "merge", "-p", r#"{"stringData":{"user":"ann"}}"#]);
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let (_, took) = eventually("needs-key runs once the key is there", Duration::from_secs(30), || async {
        let pod = client.get_value("/api/v1/namespaces/default/pods/needs-key").await.map_err(|e| e.to_string())?;
        if is_ready(&pod) { Ok(()) } else { Err(pod["status"].to_string()) }
    })
    .await;
    eprintln!("the pod waiting for a Secret's key started {:.1}s after the key was added", took.as_secs_f64());
    let out = kubectl(home, &["exec", "needs-key", "--", "sh", "-c", "echo $USER"]);
    assert_eq!(String::from_utf8_lossy(&out.stdout).trim(), "ann");
    // a pod past its activeDeadlineSeconds fails; one whose emptyDir outgrows its sizeLimit is evicted
    for (name, reason, words) in [("deadline", "DeadlineExceeded", "longer than the specified deadline"), ("filler", "Evicted", "Usage of EmptyDir volume \"scratch\" exceeds the limit \"1Mi\"")] {
        let (_, took) = eventually(&format!("{name} is {reason}"), Duration::from_secs(45), || async {
            let pod = client.get_value(&format!("/api/v1/namespaces/default/pods/{name}")).await.map_err(|e| e.to_string())?;
            let s = &pod["status"];
            let stopped = s["containerStatuses"][0]["state"]["terminated"].is_object();
            if s["phase"] == "Failed" && s["reason"] == reason && s["message"].as_str().unwrap_or("").contains(words) && stopped { Ok(()) } else { Err(s.to_string()) }
        })
        .await;
        eprintln!("{name}: {reason} and its container stopped {:.1}s into the check", took.as_secs_f64());
    }
    // required anti-affinity on the host name: the three replicas on three nodes
    let apart = wait_for(client, "apart's 3 replicas run", Duration::from_secs(60), |ps| app(ps, "apart").iter().filter(|p| is_ready(p)).count() == 3).await;
    let nodes: std::collections::BTreeSet<&str> = app(&apart, "apart").iter().map(|p| str_at(p, "/spec/nodeName")).collect();
    assert_eq!(nodes.len(), 3, "one replica per node: {nodes:?}");
    // bound around the scheduler to a master: its agent refuses it for the taint
    let all_nodes = client.list_values("/api/v1/nodes").await.unwrap();
    let master = all_nodes.iter().find(|n| is_master(n)).map(|n| str_at(n, "/metadata/name").to_string()).expect("a master");
    let intruder = format!("apiVersion: v1\nkind: Pod\nmetadata:\n  name: intruder\nspec:\n  nodeName: {master}\n  containers:\n    - name: app\n      image: clusterctl-busybox:latest\n      command: [\"sleep\", \"3600\"]\n");
    let intruder_file = manifest_file(home, "intruder.yaml", &intruder);
    assert!(kubectl_apply(home, &intruder_file).status.success());
    eventually("the master's agent refuses a pod bound to it by nodeName", Duration::from_secs(30), || async {
        let pod = client.get_value("/api/v1/namespaces/default/pods/intruder").await.map_err(|e| e.to_string())?;
        let s = &pod["status"];
        if s["phase"] == "Failed" && s["reason"] == "TaintToleration" && s["message"].as_str().unwrap_or("").contains("node-role.kubernetes.io/control-plane") { Ok(()) } else { Err(s.to_string()) }
    })
    .await;
    assert!(kubectl(home, &["delete", "-f", &intruder_file, "--wait=false"]).status.success());
    // the master's audit log: private, and it names who deleted the intruder
    let master_instance = instance_of(client, &master).await;
    let audited = "stat -c %a /var/log/clusterctl/audit.log; grep '\"name\":\"intruder\"' /var/log/clusterctl/audit.log | grep '\"verb\":\"delete\"' | grep -c '\"username\":\"admin\"'";
    let out = std::process::Command::new("docker").args(["exec", &master_instance, "sh", "-c", audited]).output().unwrap();
    let out = String::from_utf8_lossy(&out.stdout).to_string();
    assert!(out.starts_with("600\n") && out.lines().nth(1).and_then(|n| n.trim().parse::<u32>().ok()).is_some_and(|n| n >= 1), "the audit log (mode, the admin's delete of intruder): {out}");
    let out = kubectl(home, &["delete", "-f", &file, "--wait=false"]);
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    pod_security_levels_refuse_what_they_forbid(home);
}

/// Namespaces labelled with Pod Security levels, a plain pod and a privileged one.
const PSA: &str = r#"
apiVersion: v1
kind: Namespace
metadata:
  name: psa-restricted
  labels:
    pod-security.kubernetes.io/enforce: restricted
---
apiVersion: v1
kind: Namespace
metadata:
  name: psa-baseline
  labels:
    pod-security.kubernetes.io/enforce: baseline
"#;

fn pod_yaml(namespace: &str, privileged: bool) -> String {
    format!(
        "apiVersion: v1\nkind: Pod\nmetadata:\n  name: probe\n  namespace: {namespace}\nspec:\n  containers:\n    - name: app\n      image: clusterctl-busybox:latest\n      securityContext:\n        privileged: {privileged}\n"
    )
}

fn pod_security_levels_refuse_what_they_forbid(home: &Path) {
    let namespaces = manifest_file(home, "psa.yaml", PSA);
    let out = kubectl_apply(home, &namespaces);
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let try_create = |namespace: &str, privileged: bool| {
        let file = manifest_file(home, &format!("probe-{namespace}-{privileged}.yaml"), &pod_yaml(namespace, privileged));
        kubectl(home, &["create", "--dry-run=server", "-f", &file])
    };
    let out = try_create("psa-restricted", true);
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success() && err.contains("is forbidden: violates PodSecurity \"restricted:latest\"") && err.contains("privileged (container \"app\" must not set securityContext.privileged=true)"), "{err}");
    let out = try_create("psa-baseline", true);
    assert!(!out.status.success() && String::from_utf8_lossy(&out.stderr).contains("violates PodSecurity \"baseline:latest\""), "{}", String::from_utf8_lossy(&out.stderr));
    let out = try_create("psa-baseline", false);
    assert!(out.status.success(), "a plain pod in a baseline namespace: {}", String::from_utf8_lossy(&out.stderr));
    let out = kubectl(home, &["label", "namespace", "psa-baseline", "--overwrite", "pod-security.kubernetes.io/enforce=strict"]);
    assert!(!out.status.success() && String::from_utf8_lossy(&out.stderr).contains("Unsupported value"), "an unknown level: {}", String::from_utf8_lossy(&out.stderr));
    let out = kubectl(home, &["delete", "-f", &namespaces, "--wait=false"]);
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
}

/// The harness's registry (`localstack/registry/up`, started by `localstack/up`): its address
/// (docker0's, port 5443), its CA and the password of its user `clusterctl`.
fn harness_registry() -> (String, String, String) {
    let state = std::env::var("CLUSTERCTL_LOCALSTACK_STATE_DIR").map(std::path::PathBuf::from).unwrap_or_else(|_| root().join("localstack/.state"));
    let dir = state.join("registry");
    let ca = std::fs::read_to_string(dir.join("ca.crt")).expect("the harness registry's CA (localstack/up starts it)");
    let password = std::fs::read_to_string(dir.join("password")).expect("the harness registry's password").trim().to_string();
    (format!("{}:5443", harness_gateway()), ca, password)
}

/// The harness's stand-in for Amazon ECR's registry of its account in the cluster's region
/// (`localstack/registry/up`: the same images, basic auth with the password of the token ECR
/// gives; the VPC resolver answers its name with docker0's address).
const HARNESS_ECR: &str = "000000000000.dkr.ecr.us-east-1.amazonaws.com";

/// Adds the harness registry to a spec's `[[registries]]`, so that the nodes trust its CA, its
/// read-only copy on port 5444 as the nodes' mirror of Docker Hub, and its ECR stand-in (on AWS
/// ECR's certificates are of a public CA; here the harness's CA signs it).
fn trust_the_harness_registry(spec: &Path) {
    let (host, ca, _) = harness_registry();
    let mut doc: toml::Table = std::fs::read_to_string(spec).unwrap().parse().unwrap();
    let entry = toml::Table::from_iter([("host".to_string(), toml::Value::from(host)), ("ca".to_string(), toml::Value::from(ca.clone()))]);
    let ecr = toml::Table::from_iter([("host".to_string(), toml::Value::from(HARNESS_ECR)), ("ca".to_string(), toml::Value::from(ca.clone()))]);
    let mirror = toml::Table::from_iter([
        ("host".to_string(), toml::Value::from(format!("{}:5444", harness_gateway()))),
        ("ca".to_string(), toml::Value::from(ca)),
        ("mirror_of".to_string(), toml::Value::from("docker.io")),
    ]);
    doc.insert("registries".into(), toml::Value::Array(vec![toml::Value::Table(entry), toml::Value::Table(mirror), toml::Value::Table(ecr)]));
    std::fs::write(spec, toml::to_string(&doc).unwrap()).unwrap();
}

/// Issue 21's pulls: a Deployment of an image only in the harness's private registry runs with
/// an `imagePullSecret`; a pod without it (pulling `Always`) gets `ErrImagePull` then
/// `ImagePullBackOff` with the registry's words; a wrong tag is reported as such. A Deployment of
/// an image in (the harness's) Amazon ECR runs with no secret at all: each node's agent asks ECR
/// for a token on its instance role, through the metadata service's credentials.
async fn private_images_are_pulled_with_their_pull_secret(home: &Path, client: &ApiClient) {
    let (host, _, password) = harness_registry();
    use base64::Engine;
    let auth = base64::engine::general_purpose::STANDARD.encode(format!("clusterctl:{password}"));
    let config = serde_json::json!({"auths": {host.clone(): {"username": "clusterctl", "password": password, "auth": auth}}}).to_string();
    let manifest = format!(
        r#"apiVersion: v1
kind: Secret
metadata:
  name: regcred
type: kubernetes.io/dockerconfigjson
stringData:
  .dockerconfigjson: '{config}'
---
apiVersion: apps/v1
kind: Deployment
metadata:
  name: private
spec:
  replicas: 2
  selector:
    matchLabels:
      app: private
  template:
    metadata:
      labels:
        app: private
    spec:
      imagePullSecrets:
        - name: regcred
      containers:
        - name: app
          image: {host}/private/busybox:v1
          command: ["sleep", "3600"]
---
apiVersion: v1
kind: Pod
metadata:
  name: no-secret
spec:
  containers:
    - name: app
      image: {host}/private/busybox:v1
      imagePullPolicy: Always
      command: ["sleep", "3600"]
---
apiVersion: v1
kind: Pod
metadata:
  name: wrong-tag
spec:
  imagePullSecrets:
    - name: regcred
  containers:
    - name: app
      image: {host}/private/busybox:v9
      command: ["sleep", "3600"]
---
apiVersion: apps/v1
kind: Deployment
metadata:
  name: from-ecr
spec:
  replicas: 2
  selector:
    matchLabels:
      app: from-ecr
  template:
    metadata:
      labels:
        app: from-ecr
    spec:
      topologySpreadConstraints:
        - maxSkew: 1
          topologyKey: kubernetes.io/hostname
          whenUnsatisfiable: DoNotSchedule
          labelSelector:
            matchLabels:
              app: from-ecr
      containers:
        - name: app
          image: {HARNESS_ECR}/private/busybox:v1
          imagePullPolicy: Always
          command: ["sleep", "3600"]
---
apiVersion: v1
kind: Pod
metadata:
  name: mirrored
spec:
  containers:
    - name: app
      image: busybox:mirrored
      command: ["sleep", "3600"]
"#
    );
    let file = home.join("private.yaml");
    {
        use std::os::unix::fs::OpenOptionsExt;
        let mut f = std::fs::OpenOptions::new().create(true).write(true).truncate(true).mode(0o600).open(&file).unwrap();
        std::io::Write::write_all(&mut f, manifest.as_bytes()).unwrap();
    }
    let file = file.to_str().unwrap().to_string();
    let t0 = Instant::now();
    let out = kubectl_apply(home, &file);
    assert!(out.status.success(), "kubectl apply private.yaml: {}", String::from_utf8_lossy(&out.stderr));
    let (_, took) = eventually("the private image's replicas run", Duration::from_secs(60), || async {
        let ps = pods(client).await;
        let running = app(&ps, "private").into_iter().filter(|p| is_ready(p)).count();
        if running == 2 { Ok(()) } else { Err(format!("{running} of 2 ready")) }
    })
    .await;
    eprintln!("a Deployment pulled from the private registry: ready after {:.1}s", t0.elapsed().as_secs_f64().max(took.as_secs_f64()));
    // From ECR with no secret: the nodes' own tokens (two nodes, each its own).
    let (nodes, took) = eventually("the ECR image's replicas run, on two nodes", Duration::from_secs(60), || async {
        let ps = pods(client).await;
        let ready: Vec<&serde_json::Value> = app(&ps, "from-ecr").into_iter().filter(|p| is_ready(p)).collect();
        let nodes: BTreeSet<String> = ready.iter().filter_map(|p| p["spec"]["nodeName"].as_str().map(str::to_string)).collect();
        if ready.len() == 2 && nodes.len() == 2 { Ok(nodes) } else { Err(format!("{} of 2 ready on {nodes:?}: {:?}", ready.len(), app(&ps, "from-ecr").iter().map(|p| p["status"]["containerStatuses"].to_string()).collect::<Vec<_>>())) }
    })
    .await;
    eprintln!("a Deployment pulled from ECR on the nodes' instance role, no secret: ready {:.1}s after the apply on {nodes:?}", t0.elapsed().as_secs_f64().max(took.as_secs_f64()));
    let events = kubectl(home, &["get", "events", "--field-selector", "reason=Pulling", "-o", "jsonpath={.items[*].message}"]);
    assert!(String::from_utf8_lossy(&events.stdout).contains(&format!("Pulling image \"{HARNESS_ECR}/private/busybox:v1\"")), "pulled, not found on the node: {}", String::from_utf8_lossy(&events.stdout));
    // without credentials: ErrImagePull, then ImagePullBackOff, with the registry's answer
    let seen = std::sync::Mutex::new(BTreeSet::new());
    let (message, _) = eventually("no-secret: ErrImagePull then ImagePullBackOff", Duration::from_secs(60), || {
        let seen = &seen;
        async move {
            let pod = client.get_value("/api/v1/namespaces/default/pods/no-secret").await.map_err(|e| e.to_string())?;
            let waiting = &pod["status"]["containerStatuses"][0]["state"]["waiting"];
            let mut seen = seen.lock().unwrap();
            if let Some(reason) = waiting["reason"].as_str() {
                seen.insert(reason.to_string());
            }
            if seen.contains("ErrImagePull") && seen.contains("ImagePullBackOff") { Ok(waiting["message"].as_str().unwrap_or("").to_string()) } else { Err(format!("{seen:?} {waiting}")) }
        }
    })
    .await;
    eprintln!("no-secret: {message}");
    let events = kubectl(home, &["get", "events", "--field-selector", "involvedObject.name=no-secret", "-o", "jsonpath={.items[*].message}"]);
    let events = String::from_utf8_lossy(&events.stdout).to_string();
    assert!(events.contains("Failed to pull image") && (events.contains("no basic auth credentials") || events.contains("unauthorized")), "the registry's refusal in the events: {events}");
    let (message, _) = eventually("wrong-tag: reported as a missing tag", Duration::from_secs(60), || async {
        let pod = client.get_value("/api/v1/namespaces/default/pods/wrong-tag").await.map_err(|e| e.to_string())?;
        let waiting = &pod["status"]["containerStatuses"][0]["state"]["waiting"];
        let message = waiting["message"].as_str().unwrap_or("").to_string();
        if waiting["reason"] == "ErrImagePull" && message.contains("not found") { Ok(message) } else { Err(pod["status"].to_string()) }
    })
    .await;
    eprintln!("wrong-tag: {message}");
    // A Docker Hub image no node has, which only the spec's mirror of Docker Hub holds: pulled
    // through it (the nodes reach no other registry).
    let (_, took) = eventually("mirrored: busybox:mirrored runs, pulled through the mirror", Duration::from_secs(60), || async {
        let pod = client.get_value("/api/v1/namespaces/default/pods/mirrored").await.map_err(|e| e.to_string())?;
        if is_ready(&pod) { Ok(()) } else { Err(pod["status"].to_string()) }
    })
    .await;
    eprintln!("a Docker Hub image pulled through the spec's mirror, Ready after {:.1}s", took.as_secs_f64());
    let out = kubectl(home, &["delete", "-f", &file, "--wait=false"]);
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
}

/// Debian's kubectl (as `scripts/test` fetches it) against the test's cluster.
fn kubectl(home: &Path, args: &[&str]) -> std::process::Output {
    let bin = match std::env::var("CLUSTERCTL_KUBECTL") {
        Ok(path) => path,
        Err(_) => {
            let out = std::process::Command::new(root().join("scripts/lib/ensure-kubectl")).output().expect("running scripts/lib/ensure-kubectl");
            assert!(out.status.success(), "ensure-kubectl failed: {}", String::from_utf8_lossy(&out.stderr));
            String::from_utf8_lossy(&out.stdout).lines().last().expect("ensure-kubectl prints the path").trim().to_string()
        }
    };
    std::process::Command::new(bin).env("KUBECONFIG", home.join("it-apps").join("kubeconfig")).env("HOME", home).args(args).output().unwrap()
}

fn kubectl_apply(home: &Path, file: &str) -> std::process::Output {
    kubectl(home, &["apply", "-f", file])
}

fn kubectl_delete(home: &Path, file: &str) -> std::process::Output {
    kubectl(home, &["delete", "-f", file])
}

const CRASH_POD: &str = r#"
apiVersion: v1
kind: Pod
metadata:
  name: crash
  labels:
    app: crash
spec:
  restartPolicy: Always
  terminationGracePeriodSeconds: 1
  containers:
    - name: crash
      image: clusterctl-busybox:latest
      imagePullPolicy: Never
      command: ["sh", "-c", "exit 3"]
"#;

/// What the crash-loop watcher saw: the start time (seconds since the epoch) of every run of the
/// container, the highest restart count, and whether `CrashLoopBackOff` was shown.
#[derive(Debug, Default)]
struct CrashRuns {
    starts: BTreeSet<String>,
    max_restarts: u64,
    back_off_shown: bool,
}

/// Polls the `crash` pod until three runs of its container were seen (about 30 s: 10 s and 20 s
/// of back-off) or 150 s passed. Each run shows in `lastState.terminated` for at least the next
/// back-off, so polling every 500 ms misses none.
async fn watch_crash_loop(client: ApiClient) -> CrashRuns {
    let mut runs = CrashRuns::default();
    let start = Instant::now();
    while runs.starts.len() < 3 && start.elapsed() < Duration::from_secs(150) {
        if let Ok(pod) = client.get_value("/api/v1/namespaces/default/pods/crash").await {
            let status = &pod["status"]["containerStatuses"][0];
            for terminated in [status.pointer("/lastState/terminated"), status.pointer("/state/terminated")].into_iter().flatten() {
                if let Some(at) = terminated["startedAt"].as_str().filter(|t| !t.starts_with("0001")) {
                    runs.starts.insert(at.to_string());
                }
            }
            runs.max_restarts = runs.max_restarts.max(status["restartCount"].as_u64().unwrap_or(0));
            runs.back_off_shown |= status.pointer("/state/waiting/reason").and_then(Value::as_str) == Some("CrashLoopBackOff");
        }
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
    runs
}

/// The runs start 10 s and then 20 s apart (the back-off doubles), give or take the agent's
/// one-second sync and a slow machine.
fn check_crash_loop_back_off(runs: &CrashRuns) {
    let starts: Vec<f64> = runs.starts.iter().map(|t| parse_rfc3339(t).unwrap_or_else(|| panic!("container start time {t:?} is not RFC 3339"))).collect();
    assert!(starts.len() >= 3, "three runs of the crashing container within 150 s: {runs:?}");
    let mut sorted = starts.clone();
    sorted.sort_by(f64::total_cmp);
    let (first, second) = (sorted[1] - sorted[0], sorted[2] - sorted[1]);
    eprintln!("crash loop: restarts after {first:.1}s and {second:.1}s");
    assert!((9.5..20.0).contains(&first), "first back-off about 10 s, was {first:.1}s: {runs:?}");
    assert!((19.5..40.0).contains(&second), "second back-off about 20 s, was {second:.1}s: {runs:?}");
    assert!(runs.max_restarts >= 2, "restart count counts the restarts: {runs:?}");
    assert!(runs.back_off_shown, "the waiting reason CrashLoopBackOff was shown: {runs:?}");
}

/// Changes the image tag of `web` (5 replicas, maxSurge 1, maxUnavailable 1) to a tag loaded
/// just before; polls until every pod runs it, and checks that at least 4 pods were ready (and
/// not being deleted) at every poll.
async fn rolling_update_keeps_availability(home: &Path, spec: &str, client: &ApiClient, manifest: &Path) {
    let v2_tarball = std::env::var("CLUSTERCTL_BUSYBOX_TAR").map(std::path::PathBuf::from).unwrap_or_else(|_| root().join(".cache/images/busybox.tar")).with_file_name("busybox-v2.tar");
    assert!(v2_tarball.exists(), "{} missing: run localstack/workload-images/build", v2_tarball.display());
    assert_ok(&clusterctl(home, &["load-image", "-f", spec, v2_tarball.to_str().unwrap()]), "load-image v2");
    let original = std::fs::read_to_string(manifest).unwrap();
    let v2 = original.replace("image: clusterctl-busybox:latest", "image: clusterctl-busybox:v2").replacen(
        "\n  replicas: 3\n",
        "\n  replicas: 5\n  strategy:\n    type: RollingUpdate\n    rollingUpdate:\n      maxSurge: 1\n      maxUnavailable: 1\n",
        1,
    );
    assert!(v2.contains("clusterctl-busybox:v2") && v2.contains("maxUnavailable: 1"), "manifests/web.yaml no longer has the shape this test edits");
    let path = manifest_file(home, "web-v2.yaml", &v2);
    assert_ok(&clusterctl(home, &["apply", "-f", &path, "--cluster", "it-apps"]), "apply web-v2.yaml");

    let min_ready = 5 - 1;
    let start = Instant::now();
    let mut lowest = usize::MAX;
    let mut history: Vec<String> = Vec::new();
    loop {
        let ps = pods(client).await;
        let active: Vec<&Value> = app(&ps, "web").into_iter().filter(|p| is_active(p)).collect();
        let ready = active.iter().filter(|p| is_ready(p)).count();
        let updated = active.iter().filter(|p| str_at(p, "/spec/containers/0/image") == "clusterctl-busybox:v2").count();
        let line = format!("{:5.1}s ready {ready} updated {updated} active {}", start.elapsed().as_secs_f64(), active.len());
        if history.last().map(|l| &l[7..]) != Some(&line[7..]) {
            history.push(line);
        }
        if !ps.is_empty() {
            lowest = lowest.min(ready);
            assert!(ready >= min_ready, "rolling update went below {min_ready} ready pods:\n{}", history.join("\n"));
        }
        if active.len() == 5 && ready == 5 && updated == 5 {
            break;
        }
        assert!(start.elapsed() < Duration::from_secs(240), "rolling update not done within 240 s:\n{}", history.join("\n"));
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
    eprintln!("rolling update: {:.1}s, never fewer than {lowest} ready pods:\n{}", start.elapsed().as_secs_f64(), history.join("\n"));
    let ps = pods(client).await;
    for p in app(&ps, "web").into_iter().filter(|p| is_active(p)) {
        assert_eq!(str_at(p, "/status/containerStatuses/0/image"), "clusterctl-busybox:v2", "every pod runs the new image: {p}");
    }
}

/// CPU allocatable of a node in millicores.
fn cpu_millis(n: &Value) -> u64 {
    let text = str_at(n, "/status/allocatable/cpu");
    match text.strip_suffix('m') {
        Some(m) => m.parse().unwrap(),
        None => text.parse::<u64>().unwrap() * 1000,
    }
}

/// `hog` takes a bit more than half of each worker's CPU (one replica per worker); `big` asks for
/// three quarters, so it fits nowhere until `hog` is scaled down to two.
async fn unschedulable_until_room_is_made(home: &Path, client: &ApiClient) {
    let nodes = client.list_values("/api/v1/nodes").await.unwrap();
    let workers: Vec<&Value> = nodes.iter().filter(|n| !is_master(n)).collect();
    let cpu = workers.iter().map(|n| cpu_millis(n)).min().unwrap();
    // The web pods (50m each, at most two per worker) must leave room for `big` alone.
    assert!(cpu >= 1000, "workers report {cpu}m allocatable CPU; this test needs at least 1000m");
    let (hog, big) = (cpu / 2 + 100, cpu * 3 / 4);
    let text = format!(
        r#"
apiVersion: apps/v1
kind: Deployment
metadata:
  name: hog
spec:
  replicas: 3
  selector:
    matchLabels:
      app: hog
  template:
    metadata:
      labels:
        app: hog
    spec:
      terminationGracePeriodSeconds: 1
      containers:
        - name: sleep
          image: clusterctl-busybox:latest
          imagePullPolicy: Never
          command: ["sleep", "3600"]
          resources:
            requests:
              cpu: {hog}m
              memory: 8Mi
---
apiVersion: v1
kind: Pod
metadata:
  name: big
  labels:
    app: big
spec:
  terminationGracePeriodSeconds: 1
  containers:
    - name: sleep
      image: clusterctl-busybox:latest
      imagePullPolicy: Never
      command: ["sleep", "3600"]
      resources:
        requests:
          cpu: {big}m
          memory: 8Mi
"#
    );
    let path = manifest_file(home, "hog.yaml", &text);
    // hog first, so that its replicas are placed before big asks.
    let hog_only = manifest_file(home, "hog-only.yaml", text.split("\n---\n").next().unwrap());
    assert_ok(&clusterctl(home, &["apply", "-f", &hog_only, "--cluster", "it-apps"]), "apply hog");
    let ps = wait_for(client, "3 hog replicas running", Duration::from_secs(90), |ps| {
        app(ps, "hog").iter().filter(|p| is_active(p) && str_at(p, "/status/phase") == "Running").count() == 3
    })
    .await;
    let hog_nodes: BTreeSet<&str> = app(&ps, "hog").iter().map(|p| str_at(p, "/spec/nodeName")).collect();
    assert_eq!(hog_nodes.len(), 3, "one hog per worker ({hog}m of {cpu}m each)");
    assert_ok(&clusterctl(home, &["apply", "-f", &path, "--cluster", "it-apps"]), "apply big");

    let expected_total = format!("0/{} nodes are available", nodes.len());
    let ps = wait_for(client, "big marked unschedulable", Duration::from_secs(60), |ps| {
        app(ps, "big").iter().any(|p| {
            p.pointer("/status/conditions").and_then(Value::as_array).is_some_and(|cs| cs.iter().any(|c| c["type"] == "PodScheduled" && c["status"] == "False"))
        })
    })
    .await;
    let pod = app(&ps, "big")[0];
    let condition = pod["status"]["conditions"].as_array().unwrap().iter().find(|c| c["type"] == "PodScheduled").unwrap();
    let message = condition["message"].as_str().unwrap_or("");
    eprintln!("big: {message}");
    assert_eq!(condition["reason"], "Unschedulable", "{condition}");
    assert!(message.starts_with(&expected_total), "the message counts every node: {message}");
    assert!(message.contains(&format!("{} Insufficient cpu", workers.len())), "every worker lacks CPU: {message}");
    assert!(str_at(pod, "/spec/nodeName").is_empty(), "big is not bound: {pod}");

    assert_ok(&clusterctl(home, &["scale", "deployment", "hog", "--replicas", "2", "--cluster", "it-apps"]), "scale hog");
    let ps = wait_for(client, "big running after hog scaled down", Duration::from_secs(120), |ps| {
        app(ps, "big").iter().any(|p| str_at(p, "/status/phase") == "Running" && !str_at(p, "/spec/nodeName").is_empty())
    })
    .await;
    let pod = app(&ps, "big")[0];
    let scheduled = pod["status"]["conditions"].as_array().unwrap().iter().find(|c| c["type"] == "PodScheduled").unwrap();
    assert_eq!(scheduled["status"], "True", "{pod}");
    assert_ok(&clusterctl(home, &["delete", "-f", &path, "--cluster", "it-apps"]), "delete hog.yaml");
}

/// What must not change while the master is away: each web pod's uid, container and restarts.
async fn web_pods_snapshot(client: &ApiClient) -> BTreeMap<String, (String, String, u64)> {
    app(&pods(client).await, "web")
        .into_iter()
        .filter(|p| is_active(p))
        .map(|p| {
            let c = &p["status"]["containerStatuses"][0];
            (str_at(p, "/metadata/uid").to_string(), (str_at(p, "/metadata/name").to_string(), str_at(c, "/containerID").to_string(), c["restartCount"].as_u64().unwrap_or(0)))
        })
        .collect()
}

/// Stops the master through the EC2 API: every worker's NodePort keeps answering; starts it
/// again: the nodes come back Ready and no web pod or container was replaced or restarted, also
/// after the eviction toleration has passed.
async fn stopped_master_leaves_pods_serving_and_untouched(client: &ApiClient) {
    let nodes = client.list_values("/api/v1/nodes").await.unwrap();
    let master = nodes.iter().find(|n| is_master(n)).expect("a master node");
    let master_instance = instance_of(client, str_at(master, "/metadata/name")).await;
    let worker_ips: Vec<String> = nodes.iter().filter(|n| !is_master(n)).map(address).collect();
    wait_for(client, "5 ready web pods before the master stops", Duration::from_secs(60), |ps| app(ps, "web").iter().filter(|p| is_active(p) && is_ready(p)).count() == 5).await;
    let before = web_pods_snapshot(client).await;
    assert_eq!(before.len(), 5, "{before:?}");

    let ec2 = ec2().await;
    ec2.stop_instances().instance_ids(&master_instance).send().await.expect("StopInstances of the master");
    let stopped_at = Instant::now();
    loop {
        let out = std::process::Command::new("docker").args(["inspect", "-f", "{{.State.Running}}", &master_instance]).output().unwrap();
        if String::from_utf8_lossy(&out.stdout).trim() != "true" {
            break;
        }
        assert!(stopped_at.elapsed() < Duration::from_secs(120), "the master's machine {master_instance} still runs 120 s after StopInstances");
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
    eprintln!("master stopped after {:.1}s", stopped_at.elapsed().as_secs_f64());
    // Every lease is 15 s stale when the master is back: its node lifecycle controller counts
    // them from its own start, so no node is shown not ready.
    let mut served = 0;
    while stopped_at.elapsed() < Duration::from_secs(15) || served < 6 {
        let ip = &worker_ips[served % worker_ips.len()];
        assert!(http_get(ip, 30080).await.is_some(), "{ip}:30080 did not answer while the master was stopped");
        served += 1;
        tokio::time::sleep(Duration::from_millis(500)).await;
    }

    ec2.start_instances().instance_ids(&master_instance).send().await.expect("StartInstances of the master");
    let start = Instant::now();
    let started_at = now_seconds();
    // Back means: every agent renewed its lease with the restarted master, and every node is Ready.
    loop {
        let leases = client.list_values("/apis/coordination.k8s.io/v1/namespaces/kube-node-lease/leases").await.unwrap_or_default();
        let renewed = leases.iter().filter(|l| parse_rfc3339(str_at(l, "/spec/renewTime")).is_some_and(|t| t > started_at)).count();
        if renewed == nodes.len()
            && let Ok(ns) = client.list_values("/api/v1/nodes").await
            && ns.len() == nodes.len() && ns.iter().all(node_ready)
        {
            break;
        }
        assert!(start.elapsed() < Duration::from_secs(180), "nodes not all back and Ready within 180 s of StartInstances ({renewed} leases renewed)");
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
    eprintln!("master back, every lease renewed and all nodes Ready after {:.1}s", start.elapsed().as_secs_f64());
    // Nothing evicted, recreated or restarted.
    let back = Instant::now();
    while back.elapsed() < Duration::from_secs(15) {
        let now = web_pods_snapshot(client).await;
        assert_eq!(now, before, "web pods (uid -> name, container, restarts) changed after the master came back");
        tokio::time::sleep(Duration::from_secs(1)).await;
    }
    for ip in &worker_ips {
        assert!(http_get(ip, 30080).await.is_some(), "{ip}:30080 answers after the master is back");
    }
}

/// With Kubernetes' default timings (this cluster's spec has no `[health]`): a worker of the
/// master's zone cut off from the API for 60 s (its traffic dropped, its processes running) is
/// shown not ready after the 40 s grace, yet no web pod is evicted, recreated or restarted (the
/// 300 s toleration), so none runs twice; healed, it is Ready again and still nothing changed.
async fn partitioned_worker_runs_no_pod_twice_and_loses_none(client: &ApiClient) {
    let nodes = client.list_values("/api/v1/nodes").await.unwrap();
    let zone = |n: &Value| n.pointer("/metadata/labels/topology.kubernetes.io~1zone").and_then(Value::as_str).unwrap_or_default().to_string();
    let master_zone = zone(nodes.iter().find(|n| is_master(n)).unwrap());
    let ps = pods(client).await;
    let web_nodes: BTreeSet<&str> = app(&ps, "web").iter().filter(|p| is_active(p)).filter_map(|p| p.pointer("/spec/nodeName").and_then(Value::as_str)).collect();
    let victim = nodes.iter().find(|n| !is_master(n) && zone(n) == master_zone && web_nodes.contains(str_at(n, "/metadata/name"))).expect("a worker with web pods in the master's zone");
    let victim_name = str_at(victim, "/metadata/name").to_string();
    let instance = instance_of(client, &victim_name).await;
    let before = web_pods_snapshot(client).await;
    assert_eq!(before.len(), 5, "{before:?}");

    cut_off_from_the_api(&instance, 6443, true);
    let cut_at = Instant::now();
    let mut shown_not_ready = None;
    while cut_at.elapsed() < Duration::from_secs(60) {
        let now = web_pods_snapshot(client).await;
        assert_eq!(now, before, "{:.0}s into the partition of {victim_name}: web pods (uid -> name, container, restarts) changed", cut_at.elapsed().as_secs_f64());
        let node = client.get_value(&format!("/api/v1/nodes/{victim_name}")).await.unwrap();
        if shown_not_ready.is_none() && !node_ready(&node) {
            shown_not_ready = Some(cut_at.elapsed());
        }
        tokio::time::sleep(Duration::from_secs(1)).await;
    }
    let shown = shown_not_ready.unwrap_or_else(|| panic!("{victim_name} was never shown not ready in 60 s of partition"));
    eprintln!("{victim_name} cut off: shown not ready after {:.1}s (grace 40 s), nothing evicted in 60 s", shown.as_secs_f64());
    assert!(shown >= Duration::from_secs(35), "shown not ready after {shown:?}, before Kubernetes' 40 s grace");
    cut_off_from_the_api(&instance, 6443, false);
    let (_, back) = eventually("the healed worker Ready again", Duration::from_secs(60), || async {
        let node = client.get_value(&format!("/api/v1/nodes/{victim_name}")).await.map_err(|e| e.to_string())?;
        if node_ready(&node) { Ok(()) } else { Err(node["status"]["conditions"].to_string()) }
    })
    .await;
    eprintln!("{victim_name} Ready again {:.1}s after the partition healed", back.as_secs_f64());
    assert_eq!(web_pods_snapshot(client).await, before, "after the partition, the same web pods run with the same containers");
}

/// docker0's address on this machine, where LocalStack listens for the nodes: outside the VPC
/// and the cluster CIDR.
fn harness_gateway() -> String {
    let out = std::process::Command::new("ip").args(["-4", "-o", "addr", "show", "dev", "docker0"]).output().unwrap();
    let text = String::from_utf8_lossy(&out.stdout);
    text.split_whitespace().skip_while(|w| *w != "inet").nth(1).and_then(|a| a.split('/').next()).expect("docker0 has an IPv4 address").to_string()
}

/// The three-tier app of issue 20 in its own namespace: `front` (NodePort 30081, zone a) calls
/// `api` by its full name, `api` (2 replicas) calls `store` (zone b) by its short name.
const SHOP: &str = r#"
apiVersion: v1
kind: Namespace
metadata:
  name: shop
  labels:
    team: shop
---
apiVersion: apps/v1
kind: Deployment
metadata: {name: store, namespace: shop}
spec:
  replicas: 1
  selector: {matchLabels: {app: store}}
  template:
    metadata: {labels: {app: store}}
    spec:
      terminationGracePeriodSeconds: 1
      nodeSelector: {topology.kubernetes.io/zone: us-east-1b}
      containers:
        - name: store
          image: clusterctl-busybox:latest
          imagePullPolicy: Never
          command: ["sh", "-c", "mkdir -p /www && echo store $(hostname) > /www/index.html && exec httpd -f -p 7000 -h /www"]
          ports: [{name: http, containerPort: 7000}]
          readinessProbe: {tcpSocket: {port: 7000}, periodSeconds: 1}
---
apiVersion: v1
kind: Service
metadata: {name: store, namespace: shop}
spec:
  selector: {app: store}
  ports: [{name: http, port: 7000, targetPort: http}]
---
apiVersion: v1
kind: Service
metadata: {name: store-headless, namespace: shop}
spec:
  clusterIP: None
  selector: {app: store}
  ports: [{name: http, port: 7000}]
---
apiVersion: apps/v1
kind: Deployment
metadata: {name: api, namespace: shop}
spec:
  replicas: 2
  selector: {matchLabels: {app: api}}
  template:
    metadata: {labels: {app: api}}
    spec:
      terminationGracePeriodSeconds: 1
      containers:
        - name: api
          image: clusterctl-busybox:latest
          imagePullPolicy: Never
          command: ["sh", "-c"]
          args:
            - |
              mkdir -p /www/cgi-bin
              printf '#!/bin/sh\necho Content-Type: text/plain\necho\necho api $(hostname)\nwget -q -O - http://store:7000/\n' > /www/cgi-bin/run
              chmod +x /www/cgi-bin/run
              exec httpd -f -p 80 -h /www
          ports: [{name: http, containerPort: 80}]
          readinessProbe: {tcpSocket: {port: 80}, periodSeconds: 1}
---
apiVersion: v1
kind: Service
metadata: {name: api, namespace: shop}
spec:
  selector: {app: api}
  ports: [{port: 80, targetPort: http}]
---
apiVersion: apps/v1
kind: Deployment
metadata: {name: front, namespace: shop}
spec:
  replicas: 2
  selector: {matchLabels: {app: front}}
  template:
    metadata: {labels: {app: front}}
    spec:
      terminationGracePeriodSeconds: 1
      nodeSelector: {topology.kubernetes.io/zone: us-east-1a}
      containers:
        - name: front
          image: clusterctl-busybox:latest
          imagePullPolicy: Never
          command: ["sh", "-c"]
          args:
            - |
              mkdir -p /www/cgi-bin
              printf '#!/bin/sh\necho Content-Type: text/plain\necho\necho front $(hostname)\nwget -q -O - http://api.shop.svc.cluster.local/cgi-bin/run\n' > /www/cgi-bin/run
              chmod +x /www/cgi-bin/run
              exec httpd -f -p 80 -h /www
          ports: [{name: http, containerPort: 80}]
          readinessProbe: {tcpSocket: {port: 80}, periodSeconds: 1}
---
apiVersion: v1
kind: Service
metadata: {name: front, namespace: shop}
spec:
  type: NodePort
  selector: {app: front}
  ports: [{port: 80, targetPort: http, nodePort: 30081}]
---
apiVersion: v1
kind: Pod
metadata: {name: probe, namespace: shop, labels: {role: test}}
spec:
  terminationGracePeriodSeconds: 1
  containers:
    - name: probe
      image: clusterctl-busybox:latest
      imagePullPolicy: Never
      command: ["sleep", "3600"]
"#;

/// Default-deny both ways in `shop`, then what the app needs: DNS, anyone to `front`,
/// `front` to `api`, `api` to `store`.
const SHOP_POLICIES: &str = r#"
apiVersion: networking.k8s.io/v1
kind: NetworkPolicy
metadata: {name: default-deny, namespace: shop}
spec:
  podSelector: {}
  policyTypes: [Ingress, Egress]
---
apiVersion: networking.k8s.io/v1
kind: NetworkPolicy
metadata: {name: allow-dns, namespace: shop}
spec:
  podSelector: {}
  policyTypes: [Egress]
  egress:
    - ports: [{protocol: UDP, port: 53}, {protocol: TCP, port: 53}]
---
apiVersion: networking.k8s.io/v1
kind: NetworkPolicy
metadata: {name: front, namespace: shop}
spec:
  podSelector: {matchLabels: {app: front}}
  policyTypes: [Ingress, Egress]
  ingress: [{}]
  egress:
    - to: [{podSelector: {matchLabels: {app: api}}}]
      ports: [{port: http}]
---
apiVersion: networking.k8s.io/v1
kind: NetworkPolicy
metadata: {name: api, namespace: shop}
spec:
  podSelector: {matchLabels: {app: api}}
  policyTypes: [Ingress, Egress]
  ingress:
    - from: [{podSelector: {matchLabels: {app: front}}}]
      ports: [{port: 80}]
  egress:
    - to: [{podSelector: {matchLabels: {app: store}}}]
      ports: [{port: 7000, endPort: 7001}]
---
apiVersion: networking.k8s.io/v1
kind: NetworkPolicy
metadata: {name: store, namespace: shop}
spec:
  podSelector: {matchLabels: {app: store}}
  policyTypes: [Ingress]
  ingress:
    - from:
        - namespaceSelector: {matchLabels: {team: shop}}
          podSelector: {matchLabels: {app: api}}
"#;

/// The `shop` pods labelled `key=value`.
async fn shop_pods(client: &ApiClient, label: &str, value: &str) -> Vec<Value> {
    let all = client.list_values("/api/v1/namespaces/shop/pods").await.unwrap_or_default();
    all.into_iter().filter(|p| p.pointer(&format!("/metadata/labels/{label}")).and_then(Value::as_str) == Some(value) && is_active(p)).collect()
}

/// (instance, container id) of a pod's first container.
async fn exec_target(client: &ApiClient, pod: &Value) -> (String, String) {
    let instance = instance_of(client, str_at(pod, "/spec/nodeName")).await;
    (instance, str_at(pod, "/status/containerStatuses/0/containerID").trim_start_matches("docker://").to_string())
}

/// Issue 20's acceptance on the shared cluster: a three-tier app found by name across nodes and
/// zones, a ClusterIP from every node and pod that refuses without endpoints and answers again,
/// headless, SRV and pod names, and the app fenced by NetworkPolicies.
async fn three_tier_app_found_by_name_and_fenced_by_policies(home: &Path, client: &ApiClient, other_pod: (&str, &str)) {
    let shop = manifest_file(home, "shop.yaml", SHOP);
    let out = kubectl_apply(home, &shop);
    assert!(out.status.success(), "kubectl apply shop.yaml: {}", String::from_utf8_lossy(&out.stderr));
    let ready = |ps: &[Value], n: usize| ps.iter().filter(|p| is_ready(p)).count() == n;
    eventually("the shop's pods ready", Duration::from_secs(90), || async {
        let (s, a, f, t) = (shop_pods(client, "app", "store").await, shop_pods(client, "app", "api").await, shop_pods(client, "app", "front").await, shop_pods(client, "role", "test").await);
        if ready(&s, 1) && ready(&a, 2) && ready(&f, 2) && ready(&t, 1) { Ok(()) } else { Err(format!("store {} api {} front {} probe {}", s.len(), a.len(), f.len(), t.len())) }
    })
    .await;
    let (store, api, front) = (shop_pods(client, "app", "store").await, shop_pods(client, "app", "api").await, shop_pods(client, "app", "front").await);
    let nodes = client.list_values("/api/v1/nodes").await.unwrap();
    let zone = |pod: &Value| nodes.iter().find(|n| n["metadata"]["name"] == pod["spec"]["nodeName"]).map(|n| str_at(n, "/metadata/labels/topology.kubernetes.io~1zone").to_string()).unwrap_or_default();
    let placed: BTreeSet<(String, String)> = store.iter().chain(&front).map(|p| (str_at(p, "/spec/nodeName").to_string(), zone(p))).collect();
    assert!(front.iter().all(|f| zone(f) != zone(&store[0]) && f["spec"]["nodeName"] != store[0]["spec"]["nodeName"]), "front and store on other nodes and zones: {placed:?}");
    let api_nodes: BTreeSet<&str> = api.iter().map(|p| str_at(p, "/spec/nodeName")).collect();
    eprintln!("shop placed: store {:?} front {placed:?} api {api_nodes:?}", zone(&store[0]));

    // the NodePort reaches store through both hops, by names
    let node_ip = nodes.iter().map(address).next().unwrap();
    let (body, _) = eventually("front -> api -> store through the NodePort", Duration::from_secs(30), || async {
        match http_get_path(&node_ip, 30081, "/cgi-bin/run").await {
            Some(b) if b.contains("front ") && b.contains("api ") && b.contains("store ") => Ok(b),
            other => Err(format!("{other:?}")),
        }
    })
    .await;
    eprintln!("three tiers: {}", body.replace('\n', " | "));

    // the store's cluster IP from every node and from pods of both namespaces
    let store_svc = client.get_value("/api/v1/namespaces/shop/services/store").await.unwrap();
    let store_ip = str_at(&store_svc, "/spec/clusterIP").to_string();
    for n in &nodes {
        let instance = str_at(n, "/spec/providerID").rsplit('/').next().unwrap().to_string();
        let out = std::process::Command::new("docker").args(["exec", &instance, "curl", "-sf", "-m", "5", &format!("http://{store_ip}:7000/")]).output().unwrap();
        assert!(String::from_utf8_lossy(&out.stdout).starts_with("store "), "node {} to the store's cluster IP: {}", n["metadata"]["name"], String::from_utf8_lossy(&out.stderr));
    }
    let probe = shop_pods(client, "role", "test").await.remove(0);
    let (probe_instance, probe_container) = exec_target(client, &probe).await;
    let via_ip = format!("timeout 2 wget -q -O - http://{store_ip}:7000/");
    for (instance, container) in [(probe_instance.as_str(), probe_container.as_str()), other_pod] {
        let out = in_container(instance, container, &via_ip);
        assert!(String::from_utf8_lossy(&out.stdout).starts_with("store "), "a pod to the store's cluster IP: {}", String::from_utf8_lossy(&out.stderr));
    }
    // names: headless to every ready pod, SRV of the named port, a pod's dashed name
    let store_pod_ip = str_at(&store[0], "/status/podIP").to_string();
    let dashed = store_pod_ip.replace('.', "-");
    let lookups = format!("nslookup store-headless.shop.svc.cluster.local && nslookup -type=SRV _http._tcp.store.shop.svc.cluster.local && nslookup {dashed}.shop.pod.cluster.local");
    let out = in_container(&probe_instance, &probe_container, &lookups);
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success() && text.matches(&format!("Address: {store_pod_ip}")).count() == 2 && text.contains("7000"), "headless, SRV and pod names: {text}");

    // no endpoints: the cluster IP refuses at once; an endpoint again: it answers
    let refused = format!("timeout 3 wget -q -O - http://{store_ip}:7000/ 2>&1; echo rc=$?");
    let scale = |n: &str| kubectl(home, &["-n", "shop", "scale", "deployment", "store", "--replicas", n]);
    assert!(scale("0").status.success());
    let (_, took) = eventually("the store's cluster IP refuses without endpoints", Duration::from_secs(20), || async {
        let out = String::from_utf8_lossy(&in_container(&probe_instance, &probe_container, &refused).stdout).to_string();
        if out.contains("refused") { Ok(()) } else { Err(out) }
    })
    .await;
    eprintln!("refused {:.1}s after scaling to 0", took.as_secs_f64());
    assert!(scale("1").status.success());
    let (_, took) = eventually("the store's cluster IP answers again", Duration::from_secs(30), || async {
        let out = in_container(&probe_instance, &probe_container, &via_ip);
        if String::from_utf8_lossy(&out.stdout).starts_with("store ") { Ok(()) } else { Err(String::from_utf8_lossy(&out.stderr).to_string()) }
    })
    .await;
    eprintln!("answered {:.1}s after scaling to 1", took.as_secs_f64());

    // policies: the app's path stays open, everything else is refused
    let policies = manifest_file(home, "shop-policies.yaml", SHOP_POLICIES);
    let out = kubectl_apply(home, &policies);
    assert!(out.status.success(), "kubectl apply shop-policies.yaml: {}", String::from_utf8_lossy(&out.stderr));
    let store = shop_pods(client, "app", "store").await;
    let store_target = exec_target(client, &store[0]).await;
    let outside = format!("timeout 2 wget -q -O - http://{}:4566/_localstack/health", harness_gateway());
    let api_ip = str_at(&client.get_value("/api/v1/namespaces/shop/services/api").await.unwrap(), "/spec/clusterIP").to_string();
    let (_, took) = eventually("only the app's paths open under the policies", Duration::from_secs(20), || async {
        let probe_to_store = in_container(&probe_instance, &probe_container, &via_ip).status.success();
        let store_out = in_container(&store_target.0, &store_target.1, &outside).status.success();
        let other_ns_to_api = in_container(other_pod.0, other_pod.1, &format!("timeout 2 wget -q -O - http://{api_ip}/cgi-bin/run")).status.success();
        let dns = in_container(&probe_instance, &probe_container, "nslookup store.shop.svc.cluster.local").status.success();
        let app = http_get_path(&node_ip, 30081, "/cgi-bin/run").await.is_some_and(|b| b.contains("store "));
        if !probe_to_store && !store_out && !other_ns_to_api && dns && app { Ok(()) } else { Err(format!("probe->store {probe_to_store}, store->outside {store_out}, default->api {other_ns_to_api}, dns {dns}, app {app}")) }
    })
    .await;
    eprintln!("policies enforced within {:.1}s", took.as_secs_f64());
    // removing the policies that isolate the probe (default-deny, and allow-dns, which isolates
    // every pod's egress too) and the store opens the probe's path to the store
    let out = kubectl(home, &["-n", "shop", "delete", "networkpolicy", "default-deny", "allow-dns", "store"]);
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let (_, took) = eventually("the probe reaches the store once its policies go", Duration::from_secs(10), || async {
        if in_container(&probe_instance, &probe_container, &via_ip).status.success() { Ok(()) } else { Err("refused".into()) }
    })
    .await;
    eprintln!("opened {:.1}s after the policies were deleted", took.as_secs_f64());
    assert!(took < Duration::from_secs(3), "a removed policy opens its path within 2 s (and a 0.5 s poll): {took:?}");
    let out = kubectl(home, &["delete", "-f", &policies, "--ignore-not-found"]);
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let out = kubectl(home, &["delete", "-f", &shop, "--ignore-not-found", "--wait=false"]);
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
}
