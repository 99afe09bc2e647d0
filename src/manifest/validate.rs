//! Field-by-field checks of one manifest document, before it is typed.

use std::collections::BTreeSet;

use serde_json::{Map, Value};

use super::Object;
use crate::api::quantity::{parse_cpu_millicores, parse_memory_bytes};

/// Problems as `(field path, what is wrong)`.
type Problems = Vec<(String, String)>;

/// Collects problems while walking a document.
#[derive(Default)]
struct Checker {
    problems: Problems,
}

fn join(path: &str, key: &str) -> String {
    if path.is_empty() { key.to_string() } else { format!("{path}.{key}") }
}

fn describe(v: &Value) -> String {
    match v {
        Value::Null => "null".into(),
        Value::Bool(b) => format!("the boolean {b}"),
        Value::Number(n) => format!("the number {n}"),
        Value::String(s) => format!("the string {s:?}"),
        Value::Array(_) => "a list".into(),
        Value::Object(_) => "a mapping".into(),
    }
}

/// A DNS-1123 label: lowercase alphanumerics and '-', at most 63, alphanumeric at both ends.
pub fn is_dns_label(s: &str) -> bool {
    !s.is_empty()
        && s.len() <= 63
        && s.bytes().all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-')
        && !s.starts_with('-')
        && !s.ends_with('-')
}

/// A DNS-1123 subdomain: dot-separated labels, at most 253.
pub fn is_dns_subdomain(s: &str) -> bool {
    s.len() <= 253 && s.split('.').all(is_dns_label)
}

/// A label value: empty, or at most 63 of alphanumerics, '-', '_', '.', alphanumeric at both ends.
fn is_label_value(s: &str) -> bool {
    s.is_empty()
        || (s.len() <= 63
            && s.bytes().all(|b| b.is_ascii_alphanumeric() || b"-_.".contains(&b))
            && s.as_bytes()[0].is_ascii_alphanumeric()
            && s.as_bytes()[s.len() - 1].is_ascii_alphanumeric())
}

/// A label key: an optional DNS subdomain prefix and `/`, then a name like a label value.
fn is_label_key(s: &str) -> bool {
    let (prefix, name) = match s.rsplit_once('/') {
        Some((p, n)) => (Some(p), n),
        None => (None, s),
    };
    prefix.is_none_or(is_dns_subdomain) && !name.is_empty() && is_label_value(name)
}

/// An IANA service name as ports are named: at most 15 lowercase alphanumerics and '-', a letter.
fn is_port_name(s: &str) -> bool {
    is_dns_label(s) && s.len() <= 15 && s.bytes().any(|b| b.is_ascii_lowercase()) && !s.contains("--")
}

impl Checker {
    fn fail(&mut self, path: &str, problem: impl Into<String>) {
        self.problems.push((path.to_string(), problem.into()));
    }

    fn map<'a>(&mut self, v: &'a Value, path: &str) -> Option<&'a Map<String, Value>> {
        match v {
            Value::Object(m) => Some(m),
            Value::Null => None,
            other => {
                self.fail(path, format!("must be a mapping, got {}", describe(other)));
                None
            }
        }
    }

    fn list<'a>(&mut self, v: &'a Value, path: &str) -> Option<&'a Vec<Value>> {
        match v {
            Value::Array(a) => Some(a),
            Value::Null => None,
            other => {
                self.fail(path, format!("must be a list, got {}", describe(other)));
                None
            }
        }
    }

    fn string<'a>(&mut self, v: Option<&'a Value>, path: &str, required: bool) -> Option<&'a str> {
        match v {
            Some(Value::String(s)) if required && s.is_empty() => {
                self.fail(path, "Required value: must not be empty");
                None
            }
            Some(Value::String(s)) => Some(s),
            None | Some(Value::Null) => {
                if required {
                    self.fail(path, "Required value");
                }
                None
            }
            Some(other) => {
                self.fail(path, format!("must be a string, got {}", describe(other)));
                None
            }
        }
    }

    fn int(&mut self, v: Option<&Value>, path: &str, required: bool, min: i64, max: i64) -> Option<i64> {
        match v {
            Some(Value::Number(n)) => match n.as_i64() {
                Some(i) if (min..=max).contains(&i) => Some(i),
                Some(i) if max == i64::MAX => {
                    self.fail(path, format!("must be at least {min}, got {i}"));
                    None
                }
                Some(i) => {
                    self.fail(path, format!("must be between {min} and {max}, got {i}"));
                    None
                }
                None => {
                    self.fail(path, format!("must be a whole number, got {n}"));
                    None
                }
            },
            None | Some(Value::Null) => {
                if required {
                    self.fail(path, "Required value");
                }
                None
            }
            Some(other) => {
                self.fail(path, format!("must be a whole number, got {}", describe(other)));
                None
            }
        }
    }

    fn one_of(&mut self, v: Option<&Value>, path: &str, allowed: &[&str]) {
        if let Some(s) = self.string(v, path, false)
            && !allowed.contains(&s)
        {
            self.fail(path, format!("Unsupported value: {s:?}: supported values: {}", allowed.iter().map(|a| format!("{a:?}")).collect::<Vec<_>>().join(", ")));
        }
    }

    fn string_map(&mut self, v: Option<&Value>, path: &str, labels: bool) {
        let Some(m) = v.and_then(|v| self.map(v, path)) else { return };
        for (k, val) in m {
            let p = format!("{path}[{k}]");
            if labels && !is_label_key(k) {
                self.fail(&p, "is not a valid label key (alphanumerics, '-', '_', '.', an optional DNS prefix and '/')");
            }
            match val {
                Value::String(s) => {
                    if labels && !is_label_value(s) {
                        self.fail(&p, format!("{s:?} is not a valid label value (at most 63 alphanumerics, '-', '_' or '.', alphanumeric at both ends)"));
                    }
                }
                other => self.fail(&p, format!("must be a string, got {} (quote it)", describe(other))),
            }
        }
    }

    fn metadata(&mut self, doc: &Map<String, Value>, namespaced: bool) {
        let Some(meta) = doc.get("metadata").and_then(|m| self.map(m, "metadata")) else {
            self.fail("metadata.name", "Required value");
            return;
        };
        if let Some(name) = self.string(meta.get("name"), "metadata.name", true)
            && !is_dns_subdomain(name)
        {
            self.fail("metadata.name", format!("{name:?} must be lowercase alphanumerics, '-' or '.', starting and ending with an alphanumeric"));
        }
        if let Some(ns) = self.string(meta.get("namespace"), "metadata.namespace", false) {
            if !namespaced {
                self.fail("metadata.namespace", "must not be set: the object is not namespaced");
            } else if !is_dns_label(ns) {
                self.fail("metadata.namespace", format!("{ns:?} is not a valid namespace name (lowercase alphanumerics and '-')"));
            }
        }
        self.string_map(meta.get("labels"), "metadata.labels", true);
        self.string_map(meta.get("annotations"), "metadata.annotations", false);
    }

    fn int_or_string(&mut self, v: Option<&Value>, path: &str, names: bool) {
        match v {
            None | Some(Value::Null) => {}
            Some(Value::Number(_)) => {
                self.int(v, path, true, 1, 65535);
            }
            Some(Value::String(s)) if names => {
                if !is_port_name(s) {
                    self.fail(path, format!("{s:?} is neither a port number nor a port name (at most 15 lowercase alphanumerics and '-')"));
                }
            }
            Some(Value::String(s)) => {
                let ok = s.strip_suffix('%').is_some_and(|p| p.parse::<u32>().is_ok_and(|p| p <= 100));
                if !ok {
                    self.fail(path, format!("{s:?} must be a whole number or a percentage such as \"25%\""));
                }
            }
            Some(other) => self.fail(path, format!("must be a number or a string, got {}", describe(other))),
        }
    }

    fn probe(&mut self, v: Option<&Value>, path: &str, port_names: &BTreeSet<String>) {
        let Some(p) = v.and_then(|v| self.map(v, path)) else { return };
        let handlers: Vec<&str> = ["httpGet", "tcpSocket", "exec"].into_iter().filter(|h| p.get(*h).is_some_and(|v| !v.is_null())).collect();
        if handlers.len() != 1 {
            self.fail(path, format!("must have exactly one of httpGet, tcpSocket, exec; has {}", if handlers.is_empty() { "none".into() } else { handlers.join(", ") }));
        }
        for handler in ["httpGet", "tcpSocket"] {
            let hp = join(path, handler);
            if let Some(h) = p.get(handler).and_then(|h| self.map(h, &hp)) {
                let port_path = join(&hp, "port");
                match h.get("port") {
                    None | Some(Value::Null) => self.fail(&port_path, "Required value"),
                    Some(Value::String(s)) if !port_names.contains(s) => {
                        self.int_or_string(h.get("port"), &port_path, true);
                        if is_port_name(s) {
                            self.fail(&port_path, format!("names no port of the container ({s:?})"));
                        }
                    }
                    port => self.int_or_string(port, &port_path, true),
                }
                if handler == "httpGet" {
                    self.string(h.get("path"), &join(&hp, "path"), false);
                }
            }
        }
        let ep = join(path, "exec");
        if let Some(e) = p.get("exec").and_then(|e| self.map(e, &ep)) {
            self.string_list(e.get("command"), &join(&ep, "command"), true);
        }
        for (field, min) in [("initialDelaySeconds", 0), ("periodSeconds", 1), ("timeoutSeconds", 1), ("failureThreshold", 1), ("successThreshold", 1)] {
            self.int(p.get(field), &join(path, field), false, min, i64::from(i32::MAX));
        }
    }

    fn string_list(&mut self, v: Option<&Value>, path: &str, required: bool) {
        match v.and_then(|v| self.list(v, path)) {
            Some(items) => {
                if required && items.is_empty() {
                    self.fail(path, "Required value: must not be empty");
                }
                for (i, item) in items.iter().enumerate() {
                    if !item.is_string() {
                        self.fail(&format!("{path}[{i}]"), format!("must be a string, got {} (quote it)", describe(item)));
                    }
                }
            }
            None if required => self.fail(path, "Required value"),
            None => {}
        }
    }

    fn resources(&mut self, v: Option<&Value>, path: &str) {
        let Some(r) = v.and_then(|v| self.map(v, path)) else { return };
        let mut amounts: [[Option<u64>; 2]; 2] = [[None; 2]; 2];
        for (slot, part) in ["requests", "limits"].into_iter().enumerate() {
            let pp = join(path, part);
            let Some(m) = r.get(part).and_then(|m| self.map(m, &pp)) else { continue };
            for (k, q) in m {
                let qp = join(&pp, k);
                let text = match q {
                    Value::String(s) => s.clone(),
                    Value::Number(n) => n.to_string(),
                    other => {
                        self.fail(&qp, format!("must be a quantity, got {}", describe(other)));
                        continue;
                    }
                };
                match k.as_str() {
                    "cpu" => match parse_cpu_millicores(&text) {
                        Ok(m) => amounts[slot][0] = Some(m),
                        Err(e) => self.fail(&qp, e.to_string()),
                    },
                    "memory" => match parse_memory_bytes(&text) {
                        Ok(b) => amounts[slot][1] = Some(b),
                        Err(e) => self.fail(&qp, e.to_string()),
                    },
                    other => self.fail(&qp, format!("Unsupported value: {other:?}: supported resources: \"cpu\", \"memory\"")),
                }
            }
        }
        for (i, res) in ["cpu", "memory"].into_iter().enumerate() {
            if let (Some(req), Some(lim)) = (amounts[0][i], amounts[1][i])
                && req > lim
            {
                self.fail(&format!("{path}.requests.{res}"), format!("must be less than or equal to the {res} limit"));
            }
        }
    }

    fn container(&mut self, c: &Map<String, Value>, path: &str, names: &mut BTreeSet<String>) {
        if let Some(name) = self.string(c.get("name"), &join(path, "name"), true) {
            if !is_dns_label(name) {
                self.fail(&join(path, "name"), format!("{name:?} must be lowercase alphanumerics or '-', at most 63"));
            } else if !names.insert(name.to_string()) {
                self.fail(&join(path, "name"), format!("Duplicate value: {name:?}"));
            }
        }
        if let Some(image) = self.string(c.get("image"), &join(path, "image"), true)
            && image.chars().any(char::is_whitespace)
        {
            self.fail(&join(path, "image"), format!("{image:?} must not contain spaces"));
        }
        self.string_list(c.get("command"), &join(path, "command"), false);
        self.string_list(c.get("args"), &join(path, "args"), false);
        self.string(c.get("workingDir"), &join(path, "workingDir"), false);
        self.one_of(c.get("imagePullPolicy"), &join(path, "imagePullPolicy"), &["Always", "IfNotPresent", "Never"]);
        let ep = join(path, "env");
        if let Some(env) = c.get("env").and_then(|e| self.list(e, &ep)) {
            for (i, e) in env.iter().enumerate() {
                let p = format!("{ep}[{i}]");
                if let Some(e) = self.map(e, &p) {
                    self.string(e.get("name"), &join(&p, "name"), true);
                    if e.get("value").is_some_and(|v| !v.is_string() && !v.is_null()) {
                        self.fail(&join(&p, "value"), format!("must be a string, got {} (quote it)", describe(&e["value"])));
                    }
                }
            }
        }
        let mut port_names = BTreeSet::new();
        let pp = join(path, "ports");
        if let Some(ports) = c.get("ports").and_then(|p| self.list(p, &pp)) {
            for (i, port) in ports.iter().enumerate() {
                let p = format!("{pp}[{i}]");
                let Some(port) = self.map(port, &p) else { continue };
                self.int(port.get("containerPort"), &join(&p, "containerPort"), true, 1, 65535);
                self.int(port.get("hostPort"), &join(&p, "hostPort"), false, 1, 65535);
                self.one_of(port.get("protocol"), &join(&p, "protocol"), &["TCP", "UDP", "SCTP"]);
                if let Some(name) = self.string(port.get("name"), &join(&p, "name"), false) {
                    if !is_port_name(name) {
                        self.fail(&join(&p, "name"), format!("{name:?} must be at most 15 lowercase alphanumerics or '-' with a letter"));
                    }
                    port_names.insert(name.to_string());
                }
            }
        }
        self.resources(c.get("resources"), &join(path, "resources"));
        self.probe(c.get("livenessProbe"), &join(path, "livenessProbe"), &port_names);
        self.probe(c.get("readinessProbe"), &join(path, "readinessProbe"), &port_names);
    }

    fn pod_spec(&mut self, v: Option<&Value>, path: &str, restart_policies: &[&str]) {
        let Some(spec) = v.and_then(|v| self.map(v, path)) else {
            self.fail(&join(path, "containers"), "Required value");
            return;
        };
        let cp = join(path, "containers");
        match spec.get("containers").and_then(|c| self.list(c, &cp)) {
            Some(cs) if !cs.is_empty() => {
                let mut names = BTreeSet::new();
                for (i, c) in cs.iter().enumerate() {
                    let p = format!("{cp}[{i}]");
                    if let Some(c) = self.map(c, &p) {
                        self.container(c, &p, &mut names);
                    } else if c.is_null() {
                        self.fail(&p, "must be a mapping, got null");
                    }
                }
            }
            _ => self.fail(&cp, "Required value: at least one container"),
        }
        self.one_of(spec.get("restartPolicy"), &join(path, "restartPolicy"), restart_policies);
        self.string(spec.get("nodeName"), &join(path, "nodeName"), false);
        self.string_map(spec.get("nodeSelector"), &join(path, "nodeSelector"), false);
        self.int(spec.get("terminationGracePeriodSeconds"), &join(path, "terminationGracePeriodSeconds"), false, 0, i64::MAX);
    }

    fn deployment(&mut self, doc: &Map<String, Value>) {
        let Some(spec) = doc.get("spec").and_then(|s| self.map(s, "spec")) else {
            self.fail("spec", "Required value");
            return;
        };
        self.int(spec.get("replicas"), "spec.replicas", false, 0, i64::from(i32::MAX));
        self.int(spec.get("minReadySeconds"), "spec.minReadySeconds", false, 0, i64::from(i32::MAX));
        let selector = spec.get("selector").and_then(|s| self.map(s, "spec.selector"));
        let match_labels = selector.and_then(|s| s.get("matchLabels"));
        self.string_map(match_labels, "spec.selector.matchLabels", true);
        let wanted: Vec<(String, String)> = match_labels
            .and_then(Value::as_object)
            .map(|m| m.iter().filter_map(|(k, v)| Some((k.clone(), v.as_str()?.to_string()))).collect())
            .unwrap_or_default();
        if wanted.is_empty() {
            self.fail("spec.selector.matchLabels", "Required value: at least one label");
        }
        if selector.is_some_and(|s| s.get("matchExpressions").is_some_and(|e| !e.is_null())) {
            self.fail("spec.selector.matchExpressions", "is not supported; use matchLabels");
        }
        let template = spec.get("template").and_then(|t| self.map(t, "spec.template"));
        let Some(template) = template else {
            self.fail("spec.template", "Required value");
            return;
        };
        let meta = template.get("metadata").and_then(|m| self.map(m, "spec.template.metadata"));
        let labels = meta.and_then(|m| m.get("labels"));
        self.string_map(labels, "spec.template.metadata.labels", true);
        if !wanted.is_empty() {
            let have = labels.and_then(Value::as_object);
            let matches = wanted.iter().all(|(k, v)| have.and_then(|h| h.get(k)).and_then(Value::as_str) == Some(v.as_str()));
            if !matches {
                self.fail("spec.template.metadata.labels", "Invalid value: `selector` does not match template `labels`");
            }
        }
        self.pod_spec(template.get("spec"), "spec.template.spec", &["Always"]);
        if let Some(strategy) = spec.get("strategy").and_then(|s| self.map(s, "spec.strategy")) {
            self.one_of(strategy.get("type"), "spec.strategy.type", &["RollingUpdate", "Recreate"]);
            if let Some(r) = strategy.get("rollingUpdate").and_then(|r| self.map(r, "spec.strategy.rollingUpdate")) {
                if strategy.get("type").and_then(Value::as_str) == Some("Recreate") {
                    self.fail("spec.strategy.rollingUpdate", "may not be specified when strategy `type` is 'Recreate'");
                }
                for field in ["maxSurge", "maxUnavailable"] {
                    let p = format!("spec.strategy.rollingUpdate.{field}");
                    match r.get(field) {
                        Some(v @ Value::Number(_)) => {
                            self.int(Some(v), &p, true, 0, i64::from(i32::MAX));
                        }
                        v => self.int_or_string(v, &p, false),
                    }
                }
                let zero = |v: Option<&Value>| matches!(v, Some(Value::Number(n)) if n.as_i64() == Some(0)) || matches!(v, Some(Value::String(s)) if s == "0%");
                if zero(r.get("maxSurge")) && zero(r.get("maxUnavailable")) {
                    self.fail("spec.strategy.rollingUpdate.maxUnavailable", "may not be 0 when `maxSurge` is 0");
                }
            }
        }
    }

    fn service(&mut self, doc: &Map<String, Value>) {
        let Some(spec) = doc.get("spec").and_then(|s| self.map(s, "spec")) else {
            self.fail("spec.ports", "Required value");
            return;
        };
        self.one_of(spec.get("type"), "spec.type", &["ClusterIP", "NodePort", "LoadBalancer"]);
        let node_ports = matches!(spec.get("type").and_then(Value::as_str), Some("NodePort" | "LoadBalancer"));
        self.string_map(spec.get("selector"), "spec.selector", true);
        let ports = spec.get("ports").and_then(|p| self.list(p, "spec.ports"));
        let Some(ports) = ports.filter(|p| !p.is_empty()) else {
            self.fail("spec.ports", "Required value: at least one port");
            return;
        };
        let mut names = BTreeSet::new();
        let mut numbers = BTreeSet::new();
        for (i, port) in ports.iter().enumerate() {
            let p = format!("spec.ports[{i}]");
            let Some(port) = self.map(port, &p) else { continue };
            let name = self.string(port.get("name"), &join(&p, "name"), ports.len() > 1);
            if let Some(name) = name {
                if !is_dns_label(name) {
                    self.fail(&join(&p, "name"), format!("{name:?} must be lowercase alphanumerics or '-'"));
                } else if !names.insert(name.to_string()) {
                    self.fail(&join(&p, "name"), format!("Duplicate value: {name:?}"));
                }
            }
            self.one_of(port.get("protocol"), &join(&p, "protocol"), &["TCP", "UDP", "SCTP"]);
            let protocol = port.get("protocol").and_then(Value::as_str).unwrap_or("TCP").to_string();
            if let Some(n) = self.int(port.get("port"), &join(&p, "port"), true, 1, 65535)
                && !numbers.insert((n, protocol))
            {
                self.fail(&join(&p, "port"), format!("Duplicate value: {n}"));
            }
            self.int_or_string(port.get("targetPort"), &join(&p, "targetPort"), true);
            if port.get("nodePort").is_some_and(|v| !v.is_null()) {
                if !node_ports {
                    self.fail(&join(&p, "nodePort"), "may only be set when `type` is 'NodePort' or 'LoadBalancer'");
                } else {
                    self.int(port.get("nodePort"), &join(&p, "nodePort"), true, 30000, 32767);
                }
            }
        }
    }

    fn config_map(&mut self, doc: &Map<String, Value>) {
        self.string_map(doc.get("data"), "data", false);
        if let Some(data) = doc.get("data").and_then(Value::as_object) {
            for k in data.keys() {
                let ok = !k.is_empty() && k.len() <= 253 && k.bytes().all(|b| b.is_ascii_alphanumeric() || b"-_.".contains(&b));
                if !ok {
                    self.fail(&format!("data[{k}]"), "a key must be alphanumerics, '-', '_' or '.'");
                }
            }
        }
    }
}

/// Checks one document and types it; on failure returns the kind and name when known, and the
/// problems.
pub(super) fn document(value: &Value) -> Result<Object, (Option<String>, Option<String>, Problems)> {
    let mut c = Checker::default();
    let Some(doc) = value.as_object() else {
        return Err((None, None, vec![(String::new(), format!("must be a mapping with apiVersion and kind, got {}", describe(value)))]));
    };
    let kind = doc.get("kind").and_then(Value::as_str).map(String::from);
    let name = value.pointer("/metadata/name").and_then(Value::as_str).filter(|n| !n.is_empty()).map(String::from);
    let api_version = c.string(doc.get("apiVersion"), "apiVersion", true).map(String::from);
    c.string(doc.get("kind"), "kind", true);
    let supported = [("v1", "Namespace"), ("v1", "ConfigMap"), ("v1", "Pod"), ("apps/v1", "Deployment"), ("v1", "Service")];
    if let (Some(av), Some(k)) = (api_version.as_deref(), kind.as_deref()) {
        match supported.iter().find(|(_, sk)| *sk == k) {
            None => c.fail("kind", format!("Unsupported value: {k:?}: supported kinds: Namespace, ConfigMap, Pod, Deployment, Service")),
            Some((sav, _)) if *sav != av => c.fail("apiVersion", format!("Unsupported value: {av:?}: {k} is served as {sav:?}")),
            Some(_) => {}
        }
    }
    if !c.problems.is_empty() {
        return Err((kind, name, c.problems));
    }
    let kind_str = kind.clone().unwrap_or_default();
    c.metadata(doc, kind_str != "Namespace");
    if kind_str == "Namespace"
        && let Some(n) = &name
        && !is_dns_label(n)
    {
        c.fail("metadata.name", format!("{n:?} is not a valid namespace name (lowercase alphanumerics and '-', at most 63)"));
    }
    match kind_str.as_str() {
        "Pod" => c.pod_spec(doc.get("spec"), "spec", &["Always", "OnFailure", "Never"]),
        "Deployment" => c.deployment(doc),
        "Service" => c.service(doc),
        "ConfigMap" => c.config_map(doc),
        _ => {}
    }
    if !c.problems.is_empty() {
        return Err((kind, name, c.problems));
    }
    let typed = |e: serde_json::Error| (kind.clone(), name.clone(), vec![(String::new(), format!("does not have the expected shape: {e}"))]);
    let v = value.clone();
    Ok(match kind_str.as_str() {
        "Namespace" => Object::Namespace(serde_json::from_value(v).map_err(typed)?),
        "ConfigMap" => Object::ConfigMap(serde_json::from_value(v).map_err(typed)?),
        "Pod" => Object::Pod(serde_json::from_value(v).map_err(typed)?),
        "Deployment" => Object::Deployment(serde_json::from_value(v).map_err(typed)?),
        _ => Object::Service(serde_json::from_value(v).map_err(typed)?),
    })
}
