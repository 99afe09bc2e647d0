//! The columns each kind of object is listed with, like kubectl's: shared by `clusterctl get` (a
//! terminal table) and the API server's `Table` responses (what kubectl prints).

use serde::de::DeserializeOwned;
use serde_json::Value;

use super::pod::Pod;
use super::resource::{self, ResourceType};
use super::time::Time;

/// The column names of a resource's rows; `NAME` and `AGE` for resources without their own.
pub fn header(rt: &ResourceType) -> &'static [&'static str] {
    match *rt {
        resource::NODES => &["NAME", "ROLE", "STATUS", "INTERNAL-IP", "INSTANCE", "AGE"],
        resource::PODS => &["NAME", "READY", "STATUS", "RESTARTS", "AGE", "IP", "NODE"],
        resource::DEPLOYMENTS => &["NAME", "READY", "UP-TO-DATE", "AVAILABLE", "AGE"],
        resource::REPLICA_SETS => &["NAME", "DESIRED", "CURRENT", "READY", "AGE"],
        resource::SERVICES => &["NAME", "TYPE", "CLUSTER-IP", "EXTERNAL-IP", "PORT(S)", "AGE"],
        resource::ENDPOINTS => &["NAME", "ENDPOINTS", "AGE"],
        resource::EVENTS => &["LAST SEEN", "TYPE", "REASON", "OBJECT", "MESSAGE"],
        _ => &["NAME", "AGE"],
    }
}

/// One object's row, matching [`header`].
pub fn row(rt: &ResourceType, item: &Value) -> Vec<String> {
    match *rt {
        resource::NODES => node_row(item).to_vec(),
        resource::PODS => typed_row(rt, item, pod_row),
        resource::DEPLOYMENTS => deployment_row(item),
        resource::REPLICA_SETS => replica_set_row(item),
        resource::SERVICES => service_row(item),
        resource::ENDPOINTS => endpoints_row(item),
        resource::EVENTS => typed_row(rt, item, event_row),
        _ => vec![s(item, "/metadata/name"), created(item)],
    }
}

/// An event as `kubectl get events` lists it: `2m  Normal  Scheduled  pod/web-1  Successfully ...`.
pub fn event_row(e: &super::event::Event) -> Vec<String> {
    let object = format!("{}/{}", e.involved_object.kind.to_lowercase(), e.involved_object.name);
    let seen = age(e.last_seen());
    let seen = if e.count > 1 { format!("{seen} (x{})", e.count) } else { seen };
    vec![seen, e.event_type.clone(), e.reason.clone(), object, e.message.clone()]
}

/// The row of an object of a typed kind; one that does not read as its kind (stored before the API
/// server validated objects) shows its name, and `<invalid>` in the other columns.
fn typed_row<T: DeserializeOwned>(rt: &ResourceType, item: &Value, render: fn(&T) -> Vec<String>) -> Vec<String> {
    match T::deserialize(item) {
        Ok(object) => render(&object),
        Err(_) => {
            let mut cells = vec![s(item, "/metadata/name")];
            cells.resize(header(rt).len(), "<invalid>".into());
            cells
        }
    }
}

/// `5s`, `3m`, `2h`, `4d` since a time, as kubectl's AGE column; `-` without one.
pub fn age(created: Option<Time>) -> String {
    let Some(t) = created else { return "-".into() };
    let s = t.age().as_secs();
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
    let ready = n
        .pointer("/status/conditions")
        .and_then(Value::as_array)
        .is_some_and(|cs| cs.iter().any(|c| c.get("type").and_then(Value::as_str) == Some("Ready") && c.get("status").and_then(Value::as_str) == Some("True")));
    let mut status = if ready { "Ready" } else { "NotReady" }.to_string();
    if n.pointer("/spec/unschedulable").and_then(Value::as_bool) == Some(true) {
        status.push_str(",SchedulingDisabled");
    }
    let ip = n
        .pointer("/status/addresses")
        .and_then(Value::as_array)
        .and_then(|a| a.iter().find(|x| x.get("type").and_then(Value::as_str) == Some("InternalIP")))
        .and_then(|x| x.get("address")).and_then(Value::as_str).unwrap_or("").to_string();
    let instance = s("/spec/providerID").rsplit('/').next().unwrap_or("").to_string();
    [s("/metadata/name"), role.into(), status, ip, instance, created(n)]
}

fn s(v: &Value, pointer: &str) -> String {
    v.pointer(pointer).and_then(Value::as_str).unwrap_or("").to_string()
}

fn n(v: &Value, pointer: &str) -> i64 {
    v.pointer(pointer).and_then(Value::as_i64).unwrap_or(0)
}

fn created(v: &Value) -> String {
    age(v.pointer("/metadata/creationTimestamp").and_then(Value::as_str).and_then(|t| Time::parse(t).ok()))
}

/// The STATUS column of a pod: Terminating, a waiting or terminated container's reason, or the phase.
pub fn pod_status(pod: &Pod) -> String {
    if pod.is_terminating() {
        return "Terminating".into();
    }
    let statuses = &pod.status.container_statuses;
    let waiting = statuses.iter().find_map(|c| c.state.waiting.as_ref()?.reason.clone());
    let terminated = || statuses.iter().find_map(|c| c.state.terminated.as_ref()?.reason.clone());
    match waiting.or_else(terminated) {
        Some(reason) => reason,
        None => pod.status.phase.clone().filter(|p| !p.is_empty()).unwrap_or_else(|| "Pending".into()),
    }
}

/// NAME READY STATUS RESTARTS AGE IP NODE.
pub fn pod_row(pod: &Pod) -> Vec<String> {
    let statuses = &pod.status.container_statuses;
    let ready = statuses.iter().filter(|c| c.ready).count();
    let restarts: i64 = statuses.iter().map(|c| i64::from(c.restart_count)).sum();
    let or_none = |x: Option<&str>| x.filter(|x| !x.is_empty()).unwrap_or("<none>").to_string();
    vec![
        pod.metadata.name.clone(),
        format!("{ready}/{}", pod.spec.containers.len()),
        pod_status(pod),
        restarts.to_string(),
        age(pod.metadata.creation_timestamp),
        or_none(pod.status.pod_ip.as_deref()),
        or_none(pod.spec.node_name.as_deref()),
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
        let row = row(&resource::PODS, &p);
        assert_eq!(&row[..4], ["web-1", "0/1", "CrashLoopBackOff", "3"]);
        assert_eq!(&row[5..], ["172.17.0.2", "w1"]);
    }

    #[test]
    fn a_pod_that_does_not_read_as_a_pod_still_has_a_row_with_its_name() {
        let p = json!({"metadata": {"name": "bad"}, "spec": {"containers": "x"}});
        assert_eq!(row(&resource::PODS, &p), ["bad", "<invalid>", "<invalid>", "<invalid>", "<invalid>", "<invalid>", "<invalid>"]);
    }

    #[test]
    fn a_cordoned_node_shows_scheduling_disabled() {
        let n = json!({"metadata": {"name": "w1"}, "spec": {"unschedulable": true},
                       "status": {"conditions": [{"type": "Ready", "status": "True"}]}});
        assert_eq!(node_row(&n)[2], "Ready,SchedulingDisabled");
        assert_eq!(row(&resource::NAMESPACES, &json!({"metadata": {"name": "default"}}))[0], "default");
    }

    #[test]
    fn service_rows_show_node_ports() {
        let svc = json!({"metadata": {"name": "web"}, "spec": {"type": "NodePort", "ports": [{"port": 80, "nodePort": 30080, "protocol": "TCP"}]}});
        assert_eq!(&service_row(&svc)[..5], ["web", "NodePort", "<none>", "<none>", "80:30080/TCP"]);
    }
}
