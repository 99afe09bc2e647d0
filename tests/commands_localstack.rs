//! The inspection and maintenance commands and standard-client compatibility end to end, on one
//! realized cluster (1 master + 2 workers, VPC 10.70.0.0/16): Debian's kubectl 1.20 without flags,
//! through the context `create` merged into a kubeconfig that already held another (get nodes, get
//! pods -A, get deployments, scale, delete pod), `describe` of a pod and a node, `logs` (plain,
//! --tail, -f, errors), `drain` / `uncordon`, drain's refusal of a pod no controller owns, and
//! `destroy` taking exactly its own entries out of that kubeconfig. With both kubectl 1.20 and the
//! newest: logs (also `-f`, and `--previous` after a crash), exec, attach, port-forward, and a
//! user's everyday workflow in a namespace of its
//! own ([`kubectl_workflow`]: apply, rollout, wait, edit, patch, label, annotate, history/undo,
//! set image, events, get all, describe, cordon/drain, explain, delete with and without orphans).

mod common;

use std::collections::{BTreeMap, BTreeSet};
use std::io::{BufRead, BufReader, Write};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use clusterctl::client::kubeconfig::Kubeconfig;
use clusterctl::client::{ApiClient, ClientAuth};
use common::*;
use serde_json::Value;

const CLUSTER: &str = "it-cmds";

/// Two replicas that print a greeting, then serve HTTP and log every request (the readiness probe
/// makes one every 2 s) on standard error.
const HELLO: &str = r#"
apiVersion: apps/v1
kind: Deployment
metadata:
  name: hello
spec:
  replicas: 2
  selector:
    matchLabels:
      app: hello
  template:
    metadata:
      labels:
        app: hello
    spec:
      terminationGracePeriodSeconds: 1
      containers:
        - name: greeter
          image: clusterctl-busybox:latest
          imagePullPolicy: Never
          command: ["sh", "-c", "echo hello from $(hostname); mkdir -p /www && echo ok > /www/index.html && exec httpd -f -v -p 80 -h /www"]
          ports:
            - containerPort: 80
          readinessProbe:
            httpGet:
              path: /
              port: 80
            periodSeconds: 2
          resources:
            requests:
              cpu: 50m
              memory: 16Mi
"#;

/// kubectl's kubeconfig before `create`: another tool's context, no current one, and fields
/// clusterctl does not know.
const OTHER_KUBECONFIG: &str = r#"apiVersion: v1
kind: Config
preferences:
  colors: true
clusters:
- name: kind-other
  cluster:
    server: https://127.0.0.1:1
    certificate-authority-data: T1RIRVIgQ0E=
users:
- name: kind-other
  user:
    token: not-a-real-token
contexts:
- name: kind-other
  context:
    cluster: kind-other
    user: kind-other
    namespace: apps
x-team: {owner: ops}
"#;

/// The named entry of one of a kubeconfig's lists.
fn entry(doc: &serde_yaml_ng::Value, list: &str, name: &str) -> Option<serde_yaml_ng::Value> {
    doc[list].as_sequence()?.iter().find(|e| e["name"].as_str() == Some(name)).cloned()
}

/// A pod that no controller owns.
const LONELY: &str = r#"
apiVersion: v1
kind: Pod
metadata:
  name: lonely
spec:
  terminationGracePeriodSeconds: 1
  containers:
    - name: sleeper
      image: clusterctl-busybox:latest
      imagePullPolicy: Never
      command: ["sleep", "3600"]
"#;

fn admin(home: &Path) -> ApiClient {
    let kc = Kubeconfig::load(&home.join(CLUSTER).join("kubeconfig")).unwrap();
    ApiClient::new(&kc.server, ClientAuth::Certificate { ca_pem: kc.ca_pem, cert_pem: kc.client_cert_pem, key_pem: kc.client_key_pem }).unwrap()
}

/// Debian's kubectl, fetched into .cache/kubectl (as `scripts/test` does) when it is not there yet.
fn debian_kubectl() -> PathBuf {
    if let Ok(path) = std::env::var("CLUSTERCTL_KUBECTL") {
        return path.into();
    }
    let out = Command::new(root().join("scripts/lib/ensure-kubectl")).output().expect("running scripts/lib/ensure-kubectl");
    assert!(out.status.success(), "ensure-kubectl failed: {}", String::from_utf8_lossy(&out.stderr));
    PathBuf::from(String::from_utf8_lossy(&out.stdout).lines().last().expect("ensure-kubectl prints the path").trim())
}

/// kubectl as a user runs it, without flags: KUBECONFIG is the test's stand-in for ~/.kube/config.
fn kubectl(bin: &Path, home: &Path, args: &[&str]) -> String {
    let out = Command::new(bin).args(args).env("KUBECONFIG", kubectl_config(home)).env("HOME", home).output().expect("running kubectl");
    assert_ok(&out, &format!("kubectl {}", args.join(" ")))
}

/// The first line a kubectl prints within 20 s. Its output is read on to the end: kubectl, a Go
/// program, dies of SIGPIPE when it writes to a closed stdout.
async fn first_line(stdout: std::process::ChildStdout) -> Option<String> {
    let (first_tx, first_rx) = tokio::sync::oneshot::channel();
    std::thread::spawn(move || {
        let mut lines = BufReader::new(stdout).lines().map_while(Result::ok);
        let _ = first_tx.send(lines.next());
        lines.for_each(drop);
    });
    tokio::time::timeout(Duration::from_secs(20), first_rx).await.ok().and_then(Result::ok).flatten()
}

fn is_ready(pod: &Value) -> bool {
    pod.pointer("/status/conditions").and_then(Value::as_array).is_some_and(|cs| cs.iter().any(|c| c["type"] == "Ready" && c["status"] == "True"))
}

fn name(v: &Value) -> String {
    v["metadata"]["name"].as_str().unwrap_or("").to_string()
}

fn node_of(pod: &Value) -> String {
    pod.pointer("/spec/nodeName").and_then(Value::as_str).unwrap_or("").to_string()
}

async fn hello_pods(client: &ApiClient) -> Vec<Value> {
    let all = client.list_values("/api/v1/namespaces/default/pods").await.unwrap_or_default();
    all.into_iter().filter(|p| p["metadata"]["labels"]["app"] == "hello").collect()
}

async fn wait_for<F: Fn(&[Value]) -> bool>(client: &ApiClient, what: &str, within: Duration, done: F) -> Vec<Value> {
    let start = Instant::now();
    loop {
        let ps = hello_pods(client).await;
        if done(&ps) {
            eprintln!("{what}: {:.1}s", start.elapsed().as_secs_f64());
            return ps;
        }
        let summary: Vec<String> = ps.iter().map(|p| format!("{} on {:?} ready={}", name(p), node_of(p), is_ready(p))).collect();
        assert!(start.elapsed() < within, "{what} not within {within:?}; hello pods: {summary:?}");
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn kubectl_describe_logs_and_drain_work_on_one_cluster() {
    let started = Instant::now();
    harness();
    let kubectl_bin = debian_kubectl();
    let home = temp_home();
    let h = home.path();
    let spec_path = unique_spec(h, CLUSTER, 70, 2);
    let _guard = DestroyGuard { home: h.into(), spec: spec_path.clone() };
    let s = spec_path.to_str().unwrap();
    let kube = kubectl_config(h);
    std::fs::create_dir_all(kube.parent().unwrap()).unwrap();
    std::fs::write(&kube, OTHER_KUBECONFIG).unwrap();
    assert_ok(&clusterctl(h, &["create", "-f", s, "-q"]), "create");
    // `image load` of an image by name: saved from the local Docker, loaded on every node.
    let loaded = assert_ok(&clusterctl(h, &["image", "load", "-f", s, "clusterctl-busybox:latest", "-q"]), "image load");
    assert!(loaded.contains("clusterctl-busybox:latest") && loaded.contains("on 3 nodes"), "{loaded}");
    let manifest = h.join("hello.yaml");
    std::fs::write(&manifest, HELLO).unwrap();
    assert_ok(&clusterctl(h, &["apply", "-f", manifest.to_str().unwrap(), "--cluster", CLUSTER]), "apply");
    let client = admin(h);
    let ps = wait_for(&client, "2 ready hello replicas", Duration::from_secs(90), |ps| ps.iter().filter(|p| is_ready(p)).count() == 2).await;
    eprintln!("cluster up, app ready after {:.0} s", started.elapsed().as_secs_f64());

    // --- kubectl 1.20 without flags: the context create merged, beside the other one ---
    let theirs: serde_yaml_ng::Value = serde_yaml_ng::from_str(OTHER_KUBECONFIG).unwrap();
    let merged: serde_yaml_ng::Value = serde_yaml_ng::from_str(&std::fs::read_to_string(&kube).unwrap()).unwrap();
    for list in ["clusters", "users", "contexts"] {
        assert_eq!(entry(&merged, list, "kind-other"), entry(&theirs, list, "kind-other"), "the other {list} entry is untouched");
    }
    assert_eq!(merged["x-team"], theirs["x-team"]);
    assert_eq!(merged["preferences"], theirs["preferences"]);
    use std::os::unix::fs::PermissionsExt;
    assert_eq!(std::fs::metadata(&kube).unwrap().permissions().mode() & 0o777, 0o600);
    assert_eq!(kubectl(&kubectl_bin, h, &["config", "current-context"]).trim(), CLUSTER, "the file had no current context");
    let printed = assert_ok(&clusterctl(h, &["kubeconfig", "--cluster", CLUSTER]), "kubeconfig");
    assert_eq!(printed, std::fs::read_to_string(h.join(CLUSTER).join("kubeconfig")).unwrap(), "kubeconfig prints the cluster's own file");
    let nodes = client.list_values("/api/v1/nodes").await.unwrap();
    let node_names: BTreeSet<String> = nodes.iter().map(name).collect();
    assert_eq!(node_names.len(), 3);
    let listed = kubectl(&kubectl_bin, h, &["get", "nodes"]);
    let listed_names: BTreeSet<String> = listed.lines().skip(1).filter_map(|l| l.split_whitespace().next()).map(String::from).collect();
    assert_eq!(listed_names, node_names, "kubectl get nodes:\n{listed}");
    assert!(listed.starts_with("NAME ") && listed.lines().skip(1).all(|l| l.split_whitespace().nth(2) == Some("Ready")), "the server's table, every node Ready:\n{listed}");
    let all_pods = kubectl(&kubectl_bin, h, &["get", "pods", "-A"]);
    for p in &ps {
        let row = all_pods.lines().find(|l| l.starts_with("default ") && l.contains(&name(p)));
        assert!(row.is_some_and(|r| r.contains(" Running ")), "kubectl get pods -A shows {} Running:\n{all_pods}", name(p));
    }
    let deployments = kubectl(&kubectl_bin, h, &["get", "deployments"]);
    assert!(deployments.lines().any(|l| l.starts_with("hello ") && l.contains(" 2/2 ")), "{deployments}");
    assert_eq!(kubectl(&kubectl_bin, h, &["scale", "deployment", "hello", "--replicas", "3"]).trim(), "deployment.apps/hello scaled");
    assert_eq!(client.get_value("/apis/apps/v1/namespaces/default/deployments/hello").await.unwrap()["spec"]["replicas"], 3);
    let ps = wait_for(&client, "3 ready replicas after kubectl scale", Duration::from_secs(60), |ps| ps.iter().filter(|p| is_ready(p)).count() == 3).await;
    let doomed = name(&ps[0]);
    assert_eq!(kubectl(&kubectl_bin, h, &["delete", "pod", &doomed]).trim(), format!("pod \"{doomed}\" deleted"));
    wait_for(&client, "the deleted pod replaced", Duration::from_secs(60), |ps| {
        ps.iter().all(|p| name(p) != doomed) && ps.iter().filter(|p| is_ready(p)).count() == 3
    })
    .await;

    // --- describe ---
    let ps = hello_pods(&client).await;
    let pod = ps.iter().find(|p| is_ready(p)).unwrap().clone();
    let (pod_name, pod_node) = (name(&pod), node_of(&pod));
    let described = assert_ok(&clusterctl(h, &["describe", "pod", &pod_name, "--cluster", CLUSTER]), "describe pod");
    assert!(described.contains(&format!("Name:           {pod_name}\n")), "{described}");
    assert!(described.contains(&format!("Node:           {pod_node}/")), "{described}");
    assert!(described.contains("Status:         Running\n"), "{described}");
    assert!(described.contains("Controlled By:  ReplicaSet/hello-"), "{described}");
    assert!(described.contains("  greeter:\n    Image:          clusterctl-busybox:latest\n"), "{described}");
    assert!(described.contains("    State:          Running\n"), "{described}");
    assert!(described.contains("    Restart Count:  0\n"), "{described}");
    let described = assert_ok(&clusterctl(h, &["describe", "node", &pod_node, "-f", s]), "describe node");
    assert!(described.contains("Unschedulable:  false\n"), "{described}");
    assert!(described.lines().any(|l| l.trim_start().starts_with("Ready ") && l.contains("True")), "{described}");
    assert!(described.lines().any(|l| l.trim_start().starts_with("default ") && l.contains(&pod_name)), "describe node lists its pods:\n{described}");
    let missing = clusterctl(h, &["describe", "pod", "nope", "--cluster", CLUSTER]);
    assert_eq!(missing.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&missing.stderr).contains("pod \"nope\" not found in namespace default"), "{missing:?}");

    // --- logs, through the API from the agent of the pod's node ---
    let logs = assert_ok(&clusterctl(h, &["logs", &pod_name, "--spec", s]), "logs");
    assert!(logs.lines().next().is_some_and(|l| l.starts_with("hello from ")), "the greeting comes first:\n{logs}");
    let tail = assert_ok(&clusterctl(h, &["logs", &pod_name, "--cluster", CLUSTER, "--tail", "1", "--timestamps"]), "logs --tail 1 --timestamps");
    assert_eq!(tail.lines().count(), 1, "{tail}");
    assert!(tail.starts_with("20") && tail.split(' ').next().is_some_and(|t| t.ends_with('Z')), "an RFC 3339 time first: {tail}");
    // A container that crashed once, for `logs --previous`: it prints, exits 1, and is restarted
    // after the first back-off (10 s).
    let crasher = serde_json::json!({"apiVersion": "v1", "kind": "Pod", "metadata": {"name": "crasher"},
        "spec": {"terminationGracePeriodSeconds": 0, "containers": [{"name": "c", "image": "clusterctl-busybox:latest", "imagePullPolicy": "Never",
            "command": ["sh", "-c", "echo crashed-after-$(cat /proc/uptime | cut -d' ' -f1); sleep 1; exit 1"]}]}});
    client.create_value("/api/v1/namespaces/default/pods", &crasher).await.unwrap();
    let start = Instant::now();
    loop {
        let p = client.get_value("/api/v1/namespaces/default/pods/crasher").await.unwrap();
        if p.pointer("/status/containerStatuses/0/restartCount").and_then(Value::as_i64).unwrap_or(0) >= 1 {
            break;
        }
        assert!(start.elapsed() < Duration::from_secs(60), "crasher was not restarted: {p}");
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
    // kubectl's own logs, with Debian's 1.20 and the newest on the machine.
    let newest = std::env::var_os("PATH").and_then(|paths| std::env::split_paths(&paths).map(|d| d.join("kubectl")).find(|p| p.is_file()));
    for bin in std::iter::once(kubectl_bin.clone()).chain(newest.clone()) {
        let crashed = kubectl(&bin, h, &["logs", "crasher", "--previous"]);
        assert!(crashed.starts_with("crashed-after-"), "kubectl logs --previous ({}): {crashed}", bin.display());
        // -f: the probe's next request (every 2 s) arrives while kubectl follows.
        let mut follow = Command::new(&bin).args(["logs", "-f", "--tail", "0", &pod_name]).env("KUBECONFIG", kubectl_config(h)).env("HOME", h).stdout(Stdio::piped()).stderr(Stdio::null()).spawn().unwrap();
        let followed = first_line(follow.stdout.take().unwrap()).await;
        let _ = follow.kill();
        let _ = follow.wait();
        assert!(followed.as_deref().is_some_and(|l| l.contains("response:200")), "kubectl logs -f ({}) printed {followed:?}", bin.display());
        let logs = kubectl(&bin, h, &["logs", &pod_name]);
        assert!(logs.lines().next().is_some_and(|l| l.starts_with("hello from ")), "kubectl logs ({}):\n{logs}", bin.display());
        let tail = kubectl(&bin, h, &["logs", &pod_name, "--tail", "2", "-c", "greeter"]);
        assert_eq!(tail.lines().count(), 2, "kubectl logs --tail 2 ({}):\n{tail}", bin.display());
        let previous = Command::new(&bin).args(["logs", &pod_name, "--previous"]).env("KUBECONFIG", kubectl_config(h)).env("HOME", h).output().unwrap();
        let said = String::from_utf8_lossy(&previous.stderr);
        assert!(!previous.status.success() && said.contains("previous terminated container"), "no previous container yet ({}): {said}", bin.display());
    }
    // Gone at once (grace 0): drain below refuses pods no controller owns.
    client.delete_value("/api/v1/namespaces/default/pods/crasher").await.unwrap();
    let wrong = clusterctl(h, &["logs", &pod_name, "--spec", s, "-c", "nope"]);
    assert_eq!(wrong.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&wrong.stderr).contains("container \"nope\" is not in pod"), "{wrong:?}");
    // A container with a stdin for `attach -i`: it answers each line it reads.
    let reader = serde_json::json!({"apiVersion": "v1", "kind": "Pod", "metadata": {"name": "reader"},
        "spec": {"terminationGracePeriodSeconds": 0, "containers": [{"name": "reader", "image": "clusterctl-busybox:latest", "imagePullPolicy": "Never",
            "stdin": true, "command": ["sh", "-c", "while read line; do echo \"got $line\"; done"]}]}});
    client.create_value("/api/v1/namespaces/default/pods", &reader).await.unwrap();
    let start = Instant::now();
    while client.get_value("/api/v1/namespaces/default/pods/reader").await.unwrap().pointer("/status/phase") != Some(&Value::from("Running")) {
        assert!(start.elapsed() < Duration::from_secs(60), "the reader pod is not Running");
        tokio::time::sleep(Duration::from_millis(300)).await;
    }
    // exec, attach and port-forward: the newest kubectl speaks WebSocket (v5.channel.k8s.io, and
    // SPDY tunnelled through a WebSocket for port-forward), Debian's 1.20 SPDY/3.1; the API server
    // joins either to the agent's.
    for bin in std::iter::once(kubectl_bin.clone()).chain(newest.clone()) {
        let which = bin.display().to_string();
        let both = kubectl(&bin, h, &["exec", &pod_name, "--", "sh", "-c", "echo out; echo err >&2"]);
        assert_eq!(both, "out\n", "stdout to stdout, stderr to kubectl's stderr ({which})");
        let pids = kubectl(&bin, h, &["exec", &pod_name, "--", "sh", "-c", "cat /sys/fs/cgroup/pids.max 2>/dev/null || cat /sys/fs/cgroup/pids/pids.max"]);
        assert_eq!(pids.trim(), "4096", "every container has a process limit ({which})");
        let exit = Command::new(&bin).args(["exec", &pod_name, "--", "sh", "-c", "exit 3"]).env("KUBECONFIG", kubectl_config(h)).env("HOME", h).output().unwrap();
        assert_eq!(exit.status.code(), Some(3), "the exit code comes through ({which}): {exit:?}");
        let mut cat = Command::new(&bin)
            .args(["exec", "-i", &pod_name, "-c", "greeter", "--", "cat"])
            .env("KUBECONFIG", kubectl_config(h))
            .env("HOME", h)
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap();
        cat.stdin.take().unwrap().write_all(b"through stdin\n").unwrap();
        let echoed = cat.wait_with_output().unwrap();
        assert_eq!(String::from_utf8_lossy(&echoed.stdout), "through stdin\n", "{which}: {echoed:?}");
        // port-forward to a local port kubectl picks; curl through it, twice (two streams pairs).
        let mut forward = Command::new(&bin)
            .args(["port-forward", &format!("pod/{pod_name}"), ":80"])
            .env("KUBECONFIG", kubectl_config(h))
            .env("HOME", h)
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap();
        // kubectl prints "Handling connection for 80" for each connection: `first_line` reads on.
        let line = first_line(forward.stdout.take().unwrap()).await;
        let local = line.as_deref().and_then(|l| l.strip_prefix("Forwarding from 127.0.0.1:")).and_then(|l| l.split(' ').next()).map(str::to_string);
        let curls: Vec<_> = (0..2)
            .map(|_| Command::new("curl").args(["-sS", "--max-time", "10", &format!("http://127.0.0.1:{}/", local.clone().unwrap_or_default())]).output().unwrap())
            .collect();
        let _ = forward.kill();
        let forwarded = forward.wait_with_output().unwrap();
        assert!(local.is_some(), "kubectl port-forward ({which}) printed {line:?}, stderr {}", String::from_utf8_lossy(&forwarded.stderr));
        for curl in curls {
            assert_eq!(String::from_utf8_lossy(&curl.stdout), "ok\n", "curl through kubectl port-forward ({which}): {curl:?}; kubectl said {}", String::from_utf8_lossy(&forwarded.stderr));
        }
        // attach: the container's own output (httpd -v logs each probe request on stderr).
        let mut attach = Command::new(&bin)
            .args(["attach", &pod_name, "-c", "greeter"])
            .env("KUBECONFIG", kubectl_config(h))
            .env("HOME", h)
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap();
        let stderr = attach.stderr.take().unwrap();
        let probe_line = tokio::task::spawn_blocking(move || BufReader::new(stderr).lines().map_while(Result::ok).find(|l| l.contains("response:200")));
        let seen = tokio::time::timeout(Duration::from_secs(20), probe_line).await;
        let _ = attach.kill();
        let _ = attach.wait();
        assert!(matches!(seen, Ok(Ok(Some(_)))), "kubectl attach ({which}) showed no probe request in 20 s: {seen:?}");
        // attach -i: what kubectl reads from its stdin reaches the container's.
        let mut attach = Command::new(&bin)
            .args(["attach", "-i", "reader"])
            .env("KUBECONFIG", kubectl_config(h))
            .env("HOME", h)
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .spawn()
            .unwrap();
        let mut to_reader = attach.stdin.take().unwrap();
        let stdout = attach.stdout.take().unwrap();
        let said = format!("hello from {}", bin.file_name().unwrap_or_default().to_string_lossy());
        let want = format!("got {said}");
        let answer = tokio::task::spawn_blocking(move || BufReader::new(stdout).lines().map_while(Result::ok).find(|l| *l == want));
        // Written until answered: the attach may not be through when the first line goes.
        let mut answered = None;
        for _ in 0..20 {
            let _ = writeln!(to_reader, "{said}");
            tokio::time::sleep(Duration::from_millis(500)).await;
            if answer.is_finished() {
                answered = Some(answer.await);
                break;
            }
        }
        let _ = attach.kill();
        let _ = attach.wait();
        assert!(matches!(answered, Some(Ok(Some(_)))), "kubectl attach -i ({which}): the container did not answer in 10 s: {answered:?}");
    }
    client.delete_value("/api/v1/namespaces/default/pods/reader").await.unwrap();
    // The everyday workflow with each kubectl, in a namespace of its own.
    for (bin, ns) in std::iter::once((kubectl_bin.clone(), "wf-debian")).chain(newest.clone().map(|b| (b, "wf-newest"))) {
        let workflow_started = Instant::now();
        kubectl_workflow(&bin, h, ns);
        eprintln!("kubectl workflow ({}): {:.0} s", bin.display(), workflow_started.elapsed().as_secs_f64());
    }
    // The official Python client (pinned in the harness venv): models that refuse a missing field.
    let python = root().join("localstack/.venv/bin/python");
    let script = root().join("tests/python/official_client.py");
    let out = Command::new(&python).arg(&script).arg(&pod_name).arg("default").env("KUBECONFIG", kubectl_config(h)).env("HOME", h).output().expect("running the harness venv's python");
    let printed = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success(), "the Python client:\n{printed}\n{}", String::from_utf8_lossy(&out.stderr));
    assert!(printed.contains("exec (WebSocket): from-exec"), "{printed}");
    assert!(printed.contains("port-forward (WebSocket): HTTP/1."), "{printed}");
    eprintln!("{printed}");
    // -f keeps printing: the probe's requests arrive every 2 s after the existing lines.
    let mut follow = Command::new(env!("CARGO_BIN_EXE_clusterctl"))
        .args(["logs", &pod_name, "--spec", s, "-f", "--tail", "0"])
        .env("CLUSTERCTL_HOME", h)
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let stdout = follow.stdout.take().unwrap();
    let first_new_line = tokio::task::spawn_blocking(move || BufReader::new(stdout).lines().next().and_then(Result::ok));
    let line = tokio::time::timeout(Duration::from_secs(20), first_new_line).await;
    let _ = follow.kill();
    let _ = follow.wait();
    let line = line.expect("logs -f printed a new line within 20 s").unwrap();
    assert!(line.as_deref().is_some_and(|l| l.contains("response:200")), "a probe request logged by httpd -v: {line:?}");

    // --- drain a worker: its pods run elsewhere before drain returns ---
    let ps = hello_pods(&client).await;
    let victim = node_of(ps.iter().find(|p| !node_of(p).is_empty()).unwrap());
    let drain_started = Instant::now();
    let drained = assert_ok(&clusterctl(h, &["drain", &victim, "--cluster", CLUSTER, "--timeout", "90s"]), "drain");
    eprintln!("drain took {:.1} s:\n{drained}", drain_started.elapsed().as_secs_f64());
    assert!(drained.contains(&format!("node/{victim} cordoned")) && drained.contains(&format!("node/{victim} drained")), "{drained}");
    let listed = kubectl(&kubectl_bin, h, &["get", "nodes"]);
    assert!(listed.lines().any(|l| l.starts_with(&format!("{victim} ")) && l.contains("Ready,SchedulingDisabled")), "{listed}");
    let ps = hello_pods(&client).await;
    let ready_elsewhere = ps.iter().filter(|p| is_ready(p) && node_of(p) != victim).count();
    assert_eq!(ready_elsewhere, 3, "all replicas ready off {victim} when drain returned");
    assert!(ps.iter().all(|p| node_of(p) != victim), "no pod left on {victim}");
    let node = client.get_value(&format!("/api/v1/nodes/{victim}")).await.unwrap();
    assert_eq!(node["spec"]["unschedulable"], true);

    // --- uncordon: the node takes new pods again ---
    assert_eq!(assert_ok(&clusterctl(h, &["uncordon", &victim, "--cluster", CLUSTER]), "uncordon").trim(), format!("node/{victim} uncordoned"));
    assert!(client.get_value(&format!("/api/v1/nodes/{victim}")).await.unwrap()["spec"].get("unschedulable").is_none());
    assert_ok(&clusterctl(h, &["scale", "deployment", "hello", "--replicas", "6", "--cluster", CLUSTER]), "scale to 6");
    wait_for(&client, "a replica on the uncordoned node", Duration::from_secs(60), |ps| ps.iter().any(|p| node_of(p) == victim && is_ready(p))).await;

    // --- a pod no controller owns makes drain refuse, before it cordons anything ---
    let lonely = h.join("lonely.yaml");
    std::fs::write(&lonely, LONELY).unwrap();
    assert_ok(&clusterctl(h, &["apply", "-f", lonely.to_str().unwrap(), "--cluster", CLUSTER]), "apply lonely");
    let start = Instant::now();
    let lonely_node = loop {
        let pod = client.get_value("/api/v1/namespaces/default/pods/lonely").await.unwrap();
        if !node_of(&pod).is_empty() {
            break node_of(&pod);
        }
        assert!(start.elapsed() < Duration::from_secs(30), "lonely was not scheduled: {pod}");
        tokio::time::sleep(Duration::from_millis(300)).await;
    };
    let refused = clusterctl(h, &["drain", &lonely_node, "--cluster", CLUSTER]);
    assert_eq!(refused.status.code(), Some(1), "{refused:?}");
    assert!(String::from_utf8_lossy(&refused.stderr).contains("no controller owns pod(s) default/lonely"), "{refused:?}");
    assert!(client.get_value(&format!("/api/v1/nodes/{lonely_node}")).await.unwrap()["spec"].get("unschedulable").is_none(), "a refused drain leaves the node schedulable");

    // --- rotate-certs: a new admin credential; the old one is refused at once ---
    let old = admin(h);
    old.get_value("/api/v1/nodes").await.expect("the admin credential works before the rotation");
    let rotated = assert_ok(&clusterctl(h, &["rotate-certs", "-f", s]), "rotate-certs");
    assert!(rotated.contains("rotated the admin credential"), "{rotated}");
    let err = old.get_value("/api/v1/nodes").await.unwrap_err();
    assert_eq!(err.code(), Some(401), "the old admin certificate is refused: {err}");
    admin(h).get_value("/api/v1/nodes").await.expect("the new credential in the cluster's kubeconfig works");
    kubectl(&kubectl_bin, h, &["get", "nodes"]);
    let again = assert_ok(&clusterctl(h, &["rotate-certs", "-f", s]), "rotate-certs again");
    assert!(again.contains("rotated the admin credential"), "{again}");
    admin(h).get_value("/api/v1/nodes").await.expect("a second rotation works with the first's credential");

    // --- rotate-certs --ca: a new cluster CA, rotated with overlap; the workloads never notice ---
    // Each node's Ready status and when it last changed.
    let ready_since = |nodes: &[Value]| -> BTreeMap<String, (Value, Value)> {
        nodes.iter().map(|n| {
            let ready = n["status"]["conditions"].as_array().unwrap().iter().find(|c| c["type"] == "Ready").unwrap();
            (name(n), (ready["status"].clone(), ready["lastTransitionTime"].clone()))
        }).collect()
    };
    let old_ca = Kubeconfig::load(&h.join(CLUSTER).join("kubeconfig")).unwrap().ca_pem;
    let old_admin = admin(h);
    // A Node that is no machine it can reach (it would be cut off): refused, nothing changed.
    old_admin.create_value("/api/v1/nodes", &serde_json::json!({"apiVersion": "v1", "kind": "Node", "metadata": {"name": "ghost"}})).await.unwrap();
    let refused = clusterctl(h, &["rotate-certs", "-f", s, "--ca", "-q"]);
    assert_eq!(refused.status.code(), Some(1), "{refused:?}");
    assert!(String::from_utf8_lossy(&refused.stderr).contains("node(s) ghost are not running machines"), "{refused:?}");
    assert_eq!(Kubeconfig::load(&h.join(CLUSTER).join("kubeconfig")).unwrap().ca_pem, old_ca, "nothing changed");
    old_admin.delete_value("/api/v1/nodes/ghost").await.unwrap();
    let nodes_before = ready_since(&old_admin.list_values("/api/v1/nodes").await.unwrap());
    let pods_before: BTreeMap<String, Value> = hello_pods(&old_admin).await.into_iter().map(|p| (name(&p), p["status"]["containerStatuses"][0]["containerID"].clone())).collect();
    // The API polled through the balancer meanwhile, with the kubeconfig of each stage: the one
    // master restarts three times.
    let gauge = {
        let home = h.to_path_buf();
        UnansweredGauge::start(Duration::from_millis(100), move || admin(&home))
    };
    let rotation_started = Instant::now();
    let rotated = assert_ok(&clusterctl(h, &["rotate-certs", "-f", s, "--ca", "-q"]), "rotate-certs --ca");
    let rotation_ended = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap().as_secs_f64();
    let gap = gauge.stop().await;
    eprintln!("rotate-certs --ca: {:.1}s; longest time without an answer from the one master: {:.1}s", rotation_started.elapsed().as_secs_f64(), gap.as_secs_f64());
    assert!(rotated.contains(&format!("rotated the CA of cluster {CLUSTER}: 1 master(s) and 2 worker(s) trust only the new CA (sha256:")), "{rotated}");
    let new_ca = Kubeconfig::load(&h.join(CLUSTER).join("kubeconfig")).unwrap().ca_pem;
    assert_eq!(clusterctl::pki::bundle_certificates(&new_ca).len(), 1, "the kubeconfig trusts the new CA alone: {new_ca}");
    assert_ne!(clusterctl::pki::bundle_certificates(&new_ca), clusterctl::pki::bundle_certificates(&old_ca));
    let err = old_admin.get_value("/api/v1/nodes").await.unwrap_err();
    assert_eq!(err.code(), None, "the old CA no longer vouches for the API server (a TLS failure, not an answer): {err}");
    let client = admin(h);
    let nodes_after = client.list_values("/api/v1/nodes").await.unwrap();
    assert_eq!(ready_since(&nodes_after), nodes_before, "no node went NotReady during the rotation");
    let pods_after: BTreeMap<String, Value> = hello_pods(&client).await.into_iter().map(|p| (name(&p), p["status"]["containerStatuses"][0]["containerID"].clone())).collect();
    assert_eq!(pods_after, pods_before, "the same pods in the same containers: the agents' restarts adopted them");
    // Every agent's client certificate is the new CA's: the masters trust no other now, and each
    // node's lease is renewed after the rotation ended.
    let start = Instant::now();
    for node in nodes_before.keys() {
        loop {
            let lease = client.get_value(&format!("/apis/coordination.k8s.io/v1/namespaces/kube-node-lease/leases/{node}")).await.unwrap();
            let renewed = lease["spec"]["renewTime"].as_str().and_then(clusterctl::api::time::parse_rfc3339);
            if renewed.is_some_and(|r| r > rotation_ended) {
                break;
            }
            assert!(start.elapsed() < Duration::from_secs(30), "{node}'s lease is not renewed after the rotation: {lease}");
            tokio::time::sleep(Duration::from_millis(500)).await;
        }
    }
    // The API server reaches the agents (their serving certificates, its client certificate).
    let pod_name = pods_after.keys().next().unwrap().clone();
    let logs = assert_ok(&clusterctl(h, &["logs", &pod_name, "--cluster", CLUSTER, "--tail", "1"]), "logs after the CA rotation");
    assert_eq!(logs.lines().count(), 1, "{logs}");
    kubectl(&kubectl_bin, h, &["get", "nodes"]);

    // --- destroy takes out exactly the cluster's entries ---
    let destroyed = assert_ok(&clusterctl(h, &["destroy", "-f", s, "--yes", "-q"]), "destroy");
    assert!(destroyed.contains(&format!("context {CLUSTER} removed from")), "{destroyed}");
    let after: serde_yaml_ng::Value = serde_yaml_ng::from_str(&std::fs::read_to_string(&kube).unwrap()).unwrap();
    let mut expected = theirs.clone();
    expected["current-context"] = "".into();
    assert_eq!(after, expected, "the other context, user and cluster and the unknown fields as before; ours gone; current-context cleared");
    assert_eq!(kubectl(&kubectl_bin, h, &["config", "get-contexts", "-o", "name"]).trim(), "kind-other");
    eprintln!("whole test body: {:.0} s", started.elapsed().as_secs_f64());
}

/// The workflow's app: a Deployment (progress deadline 15 s, so that a stuck rollout shows soon)
/// and its Service; `A` and `CAUSE` are changed between applies.
fn workflow_app(a: &str, cause: &str) -> String {
    format!(
        r#"apiVersion: apps/v1
kind: Deployment
metadata:
  name: web
  annotations:
    kubernetes.io/change-cause: {cause}
spec:
  replicas: 2
  progressDeadlineSeconds: 15
  selector:
    matchLabels:
      app: web
  template:
    metadata:
      labels:
        app: web
    spec:
      terminationGracePeriodSeconds: 1
      containers:
        - name: web
          image: clusterctl-busybox:latest
          imagePullPolicy: Never
          command: ["sh", "-c", "mkdir -p /www && echo ok > /www/index.html && exec httpd -f -p 80 -h /www"]
          env:
            - name: A
              value: "{a}"
          ports:
            - containerPort: 80
---
apiVersion: v1
kind: Service
metadata:
  name: web
spec:
  selector:
    app: web
  ports:
    - port: 80
"#
    )
}

/// Runs kubectl `bin` in namespace `ns`: its output, and whether it succeeded.
fn kubectl_in(bin: &Path, home: &Path, ns: &str, args: &[&str], env: &[(&str, &str)]) -> (bool, String) {
    let out = Command::new(bin).args(["-n", ns]).args(args).envs(env.iter().copied()).env("KUBECONFIG", kubectl_config(home)).env("HOME", home).output().expect("running kubectl");
    let text = format!("{}{}", String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr));
    (out.status.success(), text)
}

/// A Kubernetes user's everyday commands with kubectl `bin`, in a namespace of their own: apply
/// (created, configured, unchanged), rollout status, wait, edit, patch of each type, label,
/// annotate, rollout history/undo/restart, set image (a stuck rollout past its deadline, undone),
/// scale, exec -it, get events, get all, describe, cordon/drain/uncordon, explain, delete -f with
/// and without --cascade=orphan (and the orphans adopted by the next apply).
fn kubectl_workflow(bin: &Path, h: &Path, ns: &str) {
    let which = format!("{} in {ns}", bin.display());
    let ok = |args: &[&str]| {
        let (good, text) = kubectl_in(bin, h, ns, args, &[]);
        assert!(good, "kubectl {} ({which}):\n{text}", args.join(" "));
        text
    };
    let jsonpath = |what: &str, path: &str| ok(&["get", what, "-o", &format!("jsonpath={path}")]);
    ok(&["create", "namespace", ns]);
    let app = h.join(format!("{ns}.yaml"));
    let app_path = app.to_str().unwrap();
    std::fs::write(&app, workflow_app("1", "v1")).unwrap();
    let first = ok(&["apply", "-f", app_path]);
    assert!(first.contains("deployment.apps/web created") && first.contains("service/web created"), "{which}: {first}");
    std::fs::write(&app, workflow_app("2", "v2")).unwrap();
    let second = ok(&["apply", "-f", app_path]);
    assert!(second.contains("deployment.apps/web configured") && second.contains("service/web unchanged"), "{which}: {second}");
    let third = ok(&["apply", "-f", app_path]);
    assert!(third.contains("deployment.apps/web unchanged") && third.contains("service/web unchanged"), "{which}: {third}");
    assert!(ok(&["rollout", "status", "deployment/web", "--timeout", "90s"]).contains("successfully rolled out"), "{which}");
    assert!(ok(&["wait", "--for=condition=available", "deployment/web", "--timeout", "60s"]).contains("condition met"), "{which}");
    // edit: the editor is a sed script on the file kubectl hands it.
    let (good, edited) = kubectl_in(bin, h, ns, &["edit", "deployment", "web"], &[("EDITOR", "sed -i 0,/replicas:.2/s//replicas:\\ 3/")]);
    assert!(good && edited.contains("deployment.apps/web edited"), "kubectl edit ({which}): {edited}");
    assert_eq!(jsonpath("deployment/web", "{.spec.replicas}"), "3", "{which}");
    // patch: strategic (env merged by name), merge, JSON.
    ok(&["patch", "deployment", "web", "-p", r#"{"spec":{"template":{"spec":{"containers":[{"name":"web","env":[{"name":"B","value":"b"}]}]}}}}"#]);
    assert_eq!(jsonpath("deployment/web", "{.spec.template.spec.containers[0].env[*].name}"), "A B", "{which}: the strategic merge patch merged env by name");
    ok(&["patch", "deployment", "web", "--type", "merge", "-p", r#"{"metadata":{"labels":{"tier":"front"}}}"#]);
    ok(&["patch", "deployment", "web", "--type", "json", "-p", r#"[{"op":"replace","path":"/spec/replicas","value":2}]"#]);
    assert!(ok(&["label", "deployment", "web", "color=blue"]).contains("deployment.apps/web labeled"), "{which}");
    assert!(ok(&["annotate", "deployment", "web", "note=hi"]).contains("deployment.apps/web annotated"), "{which}");
    assert_eq!(jsonpath("deployment/web", "{.spec.replicas} {.metadata.labels.tier} {.metadata.labels.color} {.metadata.annotations.note}"), "2 front blue hi", "{which}");
    ok(&["rollout", "status", "deployment/web", "--timeout", "90s"]);
    // History: A=1 (v1), A=2 (v2), the patch's B (still v2); undo to 1 makes it revision 4.
    let history = ok(&["rollout", "history", "deployment/web"]);
    let rows: Vec<Vec<&str>> = history.lines().skip_while(|l| !l.starts_with("REVISION")).skip(1).map(|l| l.split_whitespace().collect()).filter(|r: &Vec<&str>| !r.is_empty()).collect();
    assert_eq!(rows, vec![vec!["1", "v1"], vec!["2", "v2"], vec!["3", "v2"]], "{which}: {history}");
    assert!(ok(&["rollout", "undo", "deployment/web", "--to-revision", "1"]).contains("rolled back"), "{which}");
    ok(&["rollout", "status", "deployment/web", "--timeout", "90s"]);
    assert_eq!(jsonpath("deployment/web", "{.spec.template.spec.containers[0].env[*].value} {.metadata.annotations.deployment\\.kubernetes\\.io/revision}"), "1 4", "{which}");
    let history = ok(&["rollout", "history", "deployment/web"]);
    assert!(history.lines().any(|l| l.split_whitespace().collect::<Vec<_>>() == ["4", "v1"]) && !history.lines().any(|l| l.starts_with("1 ")), "{which}: {history}");
    assert!(ok(&["rollout", "restart", "deployment/web"]).contains("restarted"), "{which}");
    ok(&["rollout", "status", "deployment/web", "--timeout", "90s"]);
    assert!(!jsonpath("deployment/web", "{.spec.template.metadata.annotations.kubectl\\.kubernetes\\.io/restartedAt}").is_empty(), "{which}");
    // set image to one no node has: the rollout stops, past its 15 s deadline; undo brings it back.
    assert!(ok(&["set", "image", "deployment/web", "web=clusterctl-busybox:absent"]).contains("image updated"), "{which}");
    let (good, stuck) = kubectl_in(bin, h, ns, &["rollout", "status", "deployment/web", "--timeout", "60s"], &[]);
    assert!(!good && stuck.contains("exceeded its progress deadline"), "{which}: {stuck}");
    ok(&["rollout", "undo", "deployment/web"]);
    ok(&["rollout", "status", "deployment/web", "--timeout", "90s"]);
    assert!(ok(&["scale", "deployment/web", "--replicas", "1"]).contains("deployment.apps/web scaled"), "{which}");
    ok(&["rollout", "status", "deployment/web", "--timeout", "60s"]);
    // The scaled-down pods are Terminating until their agent has stopped them (grace 1 s).
    let start = Instant::now();
    let pod = loop {
        let names = jsonpath("pods", "{.items[*].metadata.name}");
        if !names.is_empty() && !names.contains(' ') {
            break names;
        }
        assert!(start.elapsed() < Duration::from_secs(30), "{which}: still more than one pod: {names}");
        std::thread::sleep(Duration::from_millis(300));
    };
    // exec -it on a terminal (script gives kubectl one): a tty in the container, the exit code back.
    let line = format!("{} -n {ns} exec -it {pod} -- sh -c 'tty; exit 5'", bin.display());
    let tty = Command::new("script").args(["-qec", &line, "/dev/null"]).env("KUBECONFIG", kubectl_config(h)).env("HOME", h).stdin(Stdio::null()).output().unwrap();
    assert_eq!(tty.status.code(), Some(5), "{which}: {tty:?}");
    assert!(String::from_utf8_lossy(&tty.stdout).contains("/dev/pts/"), "{which}: {tty:?}");
    let events = ok(&["get", "events"]);
    for reason in ["ScalingReplicaSet", "Scheduled", "Pulled", "Created", "Started", "SuccessfulCreate"] {
        assert!(events.contains(reason), "{which}: no {reason} event:\n{events}");
    }
    // The same Events through events.k8s.io/v1, as its clients read them.
    let v1 = ok(&["get", "events.v1.events.k8s.io", "-o", "jsonpath={range .items[*]}{.apiVersion} {.reason} {.regarding.kind}{\"\\n\"}{end}"]);
    assert!(v1.lines().any(|l| l == "events.k8s.io/v1 Scheduled Pod"), "{which}: events.k8s.io/v1:\n{v1}");
    let all = ok(&["get", "all"]);
    for kind in ["pod/web-", "service/web", "deployment.apps/web", "replicaset.apps/web-"] {
        assert!(all.contains(kind), "{which}: get all has no {kind}:\n{all}");
    }
    let described = ok(&["describe", "pod", &pod]);
    assert!(described.contains("Events:") && described.contains("Started container web"), "{which}: {described}");
    // cordon, drain (only this app's pods), uncordon.
    let node = jsonpath(&format!("pod/{pod}"), "{.spec.nodeName}");
    assert!(ok(&["cordon", &node]).contains(&format!("node/{node} cordoned")), "{which}");
    let (good, drained) = kubectl_in(bin, h, ns, &["drain", &node, "--pod-selector", "app=web", "--ignore-daemonsets", "--timeout", "90s"], &[]);
    // (kubectl 1.20 names the node with the last pod's verb, "node/... deleted", its own bug.)
    let pod_gone = drained.contains(&format!("pod/{pod} deleted")) || drained.contains(&format!("pod/{pod} evicted"));
    assert!(good && pod_gone && drained.contains(&format!("node/{node} ")), "kubectl drain ({which}): {drained}");
    assert_eq!(ok(&["get", "node", &node, "-o", "jsonpath={.spec.unschedulable}"]), "true", "{which}");
    assert!(ok(&["uncordon", &node]).contains(&format!("node/{node} uncordoned")), "{which}");
    ok(&["rollout", "status", "deployment/web", "--timeout", "60s"]);
    assert_ne!(jsonpath("pods", "{.items[0].spec.nodeName}"), node, "{which}: the replacement runs elsewhere");
    let explained = ok(&["explain", "deployment.spec"]);
    assert!(explained.contains("Deployment") && explained.contains("replicas") && explained.contains("template"), "{which}: {explained}");
    // delete --cascade=orphan leaves the set and its pod; the next apply adopts them; delete takes all.
    let set = jsonpath("replicasets", "{.items[?(@.spec.replicas==1)].metadata.name}");
    ok(&["delete", "-f", app_path, "--cascade=orphan"]);
    std::thread::sleep(Duration::from_secs(2));
    assert_eq!(jsonpath("pods", "{.items[*].metadata.ownerReferences[0].name}"), set, "{which}: the pod stays, with its set");
    ok(&["apply", "-f", app_path]);
    let owner = || jsonpath(&format!("replicaset/{set}"), "{.metadata.ownerReferences[0].kind}");
    let start = Instant::now();
    while owner() != "Deployment" {
        assert!(start.elapsed() < Duration::from_secs(20), "{which}: the orphaned set was not adopted");
        std::thread::sleep(Duration::from_millis(300));
    }
    ok(&["delete", "-f", app_path]);
    let start = Instant::now();
    while !jsonpath("replicasets,pods", "{.items[*].metadata.name}").is_empty() {
        assert!(start.elapsed() < Duration::from_secs(60), "{which}: the sets and pods outlived their Deployment");
        std::thread::sleep(Duration::from_millis(500));
    }
}
