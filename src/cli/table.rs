//! kubectl-like table rows for `get` of workload objects.

use serde_json::Value;

use super::get::age;

fn s(v: &Value, pointer: &str) -> String {
    v.pointer(pointer).and_then(Value::as_str).unwrap_or("").to_string()
}

fn n(v: &Value, pointer: &str) -> i64 {
    v.pointer(pointer).and_then(Value::as_i64).unwrap_or(0)
}

fn created(v: &Value) -> String {
    age(v.pointer("/metadata/creationTimestamp").and_then(Value::as_str))
}

/// Left-aligned columns three spaces apart.
pub fn render(rows: &[Vec<String>]) -> String {
    let columns = rows.iter().map(Vec::len).max().unwrap_or(0);
    let widths: Vec<usize> = (0..columns).map(|i| rows.iter().map(|r| r.get(i).map_or(0, String::len)).max().unwrap_or(0)).collect();
    let mut out = String::new();
    for r in rows {
        let line: Vec<String> = r.iter().zip(&widths).map(|(c, w)| format!("{c:<w$}")).collect();
        out.push_str(line.join("   ").trim_end());
        out.push('\n');
    }
    out
}

/// The STATUS column of a pod: Terminating, a waiting or terminated container's reason, or the phase.
pub fn pod_status(p: &Value) -> String {
    if p.pointer("/metadata/deletionTimestamp").is_some_and(|t| !t.is_null()) {
        return "Terminating".into();
    }
    let statuses = p.pointer("/status/containerStatuses").and_then(Value::as_array).cloned().unwrap_or_default();
    for c in &statuses {
        if let Some(reason) = c.pointer("/state/waiting/reason").and_then(Value::as_str) {
            return reason.into();
        }
    }
    for c in &statuses {
        if let Some(reason) = c.pointer("/state/terminated/reason").and_then(Value::as_str) {
            return reason.into();
        }
    }
    let phase = s(p, "/status/phase");
    if phase.is_empty() { "Pending".into() } else { phase }
}

/// NAME READY STATUS RESTARTS AGE IP NODE.
pub fn pod_row(p: &Value) -> Vec<String> {
    let containers = p.pointer("/spec/containers").and_then(Value::as_array).map_or(0, Vec::len);
    let statuses = p.pointer("/status/containerStatuses").and_then(Value::as_array).cloned().unwrap_or_default();
    let ready = statuses.iter().filter(|c| c.get("ready").and_then(Value::as_bool) == Some(true)).count();
    let restarts: i64 = statuses.iter().map(|c| c.get("restartCount").and_then(Value::as_i64).unwrap_or(0)).sum();
    let or_none = |x: String| if x.is_empty() { "<none>".to_string() } else { x };
    vec![
        s(p, "/metadata/name"),
        format!("{ready}/{containers}"),
        pod_status(p),
        restarts.to_string(),
        created(p),
        or_none(s(p, "/status/podIP")),
        or_none(s(p, "/spec/nodeName")),
    ]
}

/// NAME READY UP-TO-DATE AVAILABLE AGE.
pub fn deployment_row(d: &Value) -> Vec<String> {
    let replicas = d.pointer("/spec/replicas").and_then(Value::as_i64).unwrap_or(1);
    vec![
        s(d, "/metadata/name"),
        format!("{}/{replicas}", n(d, "/status/readyReplicas")),
        n(d, "/status/updatedReplicas").to_string(),
        n(d, "/status/availableReplicas").to_string(),
        created(d),
    ]
}

/// NAME DESIRED CURRENT READY AGE.
pub fn replica_set_row(r: &Value) -> Vec<String> {
    vec![
        s(r, "/metadata/name"),
        r.pointer("/spec/replicas").and_then(Value::as_i64).unwrap_or(1).to_string(),
        n(r, "/status/replicas").to_string(),
        n(r, "/status/readyReplicas").to_string(),
        created(r),
    ]
}

/// NAME TYPE CLUSTER-IP EXTERNAL-IP PORT(S) AGE, ports as `80:30080/TCP`.
pub fn service_row(svc: &Value) -> Vec<String> {
    let ports: Vec<String> = svc
        .pointer("/spec/ports")
        .and_then(Value::as_array)
        .map(|ps| {
            ps.iter()
                .map(|p| {
                    let proto = p.get("protocol").and_then(Value::as_str).unwrap_or("TCP");
                    let port = p.get("port").and_then(Value::as_i64).unwrap_or(0);
                    match p.get("nodePort").and_then(Value::as_i64) {
                        Some(np) => format!("{port}:{np}/{proto}"),
                        None => format!("{port}/{proto}"),
                    }
                })
                .collect()
        })
        .unwrap_or_default();
    let ingress: Vec<String> = svc
        .pointer("/status/loadBalancer/ingress")
        .and_then(Value::as_array)
        .map(|i| i.iter().filter_map(|x| x.get("hostname").or(x.get("ip")).and_then(Value::as_str).map(String::from)).collect())
        .unwrap_or_default();
    let svc_type = s(svc, "/spec/type");
    let external = if !ingress.is_empty() {
        ingress.join(",")
    } else if svc_type == "LoadBalancer" {
        "<pending>".into()
    } else {
        "<none>".into()
    };
    let cluster_ip = s(svc, "/spec/clusterIP");
    vec![
        s(svc, "/metadata/name"),
        if svc_type.is_empty() { "ClusterIP".into() } else { svc_type },
        if cluster_ip.is_empty() { "<none>".into() } else { cluster_ip },
        external,
        if ports.is_empty() { "<none>".into() } else { ports.join(",") },
        created(svc),
    ]
}

/// NAME ENDPOINTS AGE, ready addresses as `ip:port`.
pub fn endpoints_row(e: &Value) -> Vec<String> {
    let mut out = Vec::new();
    for subset in e.get("subsets").and_then(Value::as_array).cloned().unwrap_or_default() {
        let ports: Vec<i64> = subset.get("ports").and_then(Value::as_array).map(|p| p.iter().filter_map(|x| x.get("port").and_then(Value::as_i64)).collect()).unwrap_or_default();
        for a in subset.get("addresses").and_then(Value::as_array).cloned().unwrap_or_default() {
            let ip = a.get("ip").and_then(Value::as_str).unwrap_or("");
            out.extend(ports.iter().map(|p| format!("{ip}:{p}")));
        }
    }
    vec![s(e, "/metadata/name"), if out.is_empty() { "<none>".into() } else { out.join(",") }, created(e)]
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn pod_rows_show_waiting_reasons_and_restarts() {
        let p = json!({"metadata": {"name": "web-1"}, "spec": {"containers": [{"name": "a"}], "nodeName": "w1"},
                       "status": {"phase": "Running", "podIP": "172.17.0.2", "containerStatuses": [{"name": "a", "ready": false, "restartCount": 3, "state": {"waiting": {"reason": "CrashLoopBackOff"}}}]}});
        let row = pod_row(&p);
        assert_eq!(&row[..4], ["web-1", "0/1", "CrashLoopBackOff", "3"]);
        assert_eq!(&row[5..], ["172.17.0.2", "w1"]);
    }

    #[test]
    fn service_rows_show_node_ports() {
        let svc = json!({"metadata": {"name": "web"}, "spec": {"type": "NodePort", "ports": [{"port": 80, "nodePort": 30080, "protocol": "TCP"}]}});
        assert_eq!(&service_row(&svc)[..5], ["web", "NodePort", "<none>", "<none>", "80:30080/TCP"]);
        assert_eq!(render(&[vec!["A".into(), "B".into()], vec!["long".into(), "x".into()]]), "A      B\nlong   x\n");
    }
}
