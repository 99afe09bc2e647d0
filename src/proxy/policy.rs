//! NetworkPolicies in the kernel: every node's proxy writes one iptables chain in the filter
//! table (`CLUSTERCTL-POLICY`, first in FORWARD and in INPUT) that every packet of a new connection
//! forwarded by the node or sent by a pod to the node passes: a pod isolated for egress by some policy jumps to its `CCPE-<hash>` chain, a pod isolated
//! for ingress to its `CCPI-<hash>` chain; each returns for what one of its policies allows (peer
//! addresses, protocol and ports, named ports resolved on the pods) and drops the rest. Packets of
//! connections already allowed pass on conntrack's state, as every Kubernetes policy
//! implementation does.
//!
//! Pods are routed by their node (`agent/runtime/podnet.rs`), so traffic between two pods of one
//! node passes FORWARD as traffic between nodes does, after a Service's DNAT (a policy sees the pod
//! address the connection really goes to). Every node writes the rules of every pod: a connection
//! between two nodes is checked on both, with the same answer.
//!
//! A pod's traffic to its node (INPUT) is egress like any other: the cluster DNS, which the node
//! serves on the pod range's gateway, is reached by an egress-isolated pod only when a policy
//! allows it: port 53 to anyone, or to the gateway's address (`ipBlock`), as the DNS pods of a
//! Kubernetes cluster must be allowed. Where we differ on purpose: there are no DNS pods to select
//! by label, and the node's own connections to its pods (the agent's probes) are never filtered,
//! as most policy implementations leave the kubelet's.

use std::collections::{BTreeMap, BTreeSet};
use std::fmt::Write as _;
use std::net::Ipv4Addr;

use ipnet::Ipv4Net;
use super::clusterips::{chain, our_chains};

use crate::api::networkpolicy::{Namespace, NetworkPolicy, NetworkPolicyPeer, NetworkPolicyPort};
use crate::api::pod::Pod;
use crate::api::quantity::IntOrString;
use crate::runtime::Store;

const POLICY: &str = "CLUSTERCTL-POLICY";

/// A pod as policies see it.
#[derive(Debug, Clone)]
struct PodAddress {
    namespace: String,
    labels: BTreeMap<String, String>,
    ip: Ipv4Addr,
    /// Named container ports: name -> (protocol, port).
    named: BTreeMap<String, (String, u16)>,
}

/// One allowed flow: the other side's addresses (None: any), protocol (None: any) and port range.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
struct Allow {
    peer: Option<Ipv4Net>,
    protocol: Option<String>,
    ports: Option<(u16, u16)>,
}

fn pod_addresses(pods: &[std::sync::Arc<Pod>]) -> Vec<PodAddress> {
    let mut out: Vec<PodAddress> = pods
        .iter()
        .filter(|p| !matches!(p.status.phase.as_deref(), Some("Succeeded" | "Failed")))
        .filter_map(|p| {
            let ip = p.status.pod_ip.as_deref()?.parse().ok()?;
            let named = p
                .spec
                .containers
                .iter()
                .flat_map(|c| &c.ports)
                .filter_map(|port| Some((port.name.clone()?, (port.protocol().to_ascii_lowercase(), u16::try_from(port.container_port).ok()?))))
                .collect();
            Some(PodAddress { namespace: p.metadata.namespace_or_default().to_string(), labels: p.metadata.labels.clone(), ip, named })
        })
        .collect();
    out.sort_by_key(|p| p.ip);
    out.dedup_by_key(|p| p.ip);
    out
}

/// `cidr` without the `except` blocks, as a list of blocks.
pub fn subtract(cidr: Ipv4Net, except: &[Ipv4Net]) -> Vec<Ipv4Net> {
    let Some(cut) = except.iter().find(|e| e.contains(&cidr) || cidr.contains(*e)) else { return vec![cidr] };
    if cut.contains(&cidr) {
        return Vec::new();
    }
    cidr.subnets(cidr.prefix_len() + 1).map(|halves| halves.flat_map(|h| subtract(h, except)).collect()).unwrap_or_default()
}

/// The addresses a peer stands for, with the pods among them (for named ports).
fn peer_addresses<'a>(peer: &NetworkPolicyPeer, policy_ns: &str, pods: &'a [PodAddress], namespaces: &BTreeMap<String, BTreeMap<String, String>>) -> (Vec<Ipv4Net>, Vec<&'a PodAddress>) {
    if let Some(block) = &peer.ip_block {
        let Ok(cidr) = block.cidr.parse::<Ipv4Net>() else { return (Vec::new(), Vec::new()) };
        let except: Vec<Ipv4Net> = block.except.iter().filter_map(|e| e.parse().ok()).collect();
        return (subtract(cidr.trunc(), &except), Vec::new());
    }
    let empty = BTreeMap::new();
    let chosen: Vec<&PodAddress> = pods
        .iter()
        .filter(|p| match &peer.namespace_selector {
            Some(sel) => sel.matches(namespaces.get(&p.namespace).unwrap_or(&empty)),
            None => p.namespace == policy_ns,
        })
        .filter(|p| peer.pod_selector.as_ref().is_none_or(|sel| sel.matches(&p.labels)))
        .collect();
    (chosen.iter().map(|p| Ipv4Net::from(p.ip)).collect(), chosen)
}

/// A protocol (None: any) and a port range (None: every port).
type PortRange = (Option<String>, Option<(u16, u16)>);

/// The ranges `ports` allow toward `target` (whose named ports resolve them); `[(None, None)]`
/// for every port.
fn port_ranges(ports: &[NetworkPolicyPort], target: Option<&PodAddress>) -> Vec<PortRange> {
    if ports.is_empty() {
        return vec![(None, None)];
    }
    ports
        .iter()
        .filter_map(|p| {
            let protocol = p.protocol.as_deref().unwrap_or("TCP").to_ascii_lowercase();
            match &p.port {
                None => Some((Some(protocol), None)),
                Some(IntOrString::Int(n)) => {
                    let lo = u16::try_from(*n).ok()?;
                    let hi = p.end_port.and_then(|e| u16::try_from(e).ok()).filter(|e| *e >= lo).unwrap_or(lo);
                    Some((Some(protocol), Some((lo, hi))))
                }
                Some(IntOrString::String(name)) => {
                    let (proto, port) = target?.named.get(name).filter(|(proto, _)| *proto == protocol)?;
                    Some((Some(proto.clone()), Some((*port, *port))))
                }
            }
        })
        .collect()
}

/// The filter table's policy rules for the cluster, as `iptables-restore --noflush` input.
pub fn restore_input(policies: &[std::sync::Arc<NetworkPolicy>], pods: &[std::sync::Arc<Pod>], namespaces: &[std::sync::Arc<Namespace>], stale: &BTreeSet<String>) -> String {
    let pods = pod_addresses(pods);
    let namespaces: BTreeMap<String, BTreeMap<String, String>> = namespaces
        .iter()
        .map(|n| {
            let mut labels = n.metadata.labels.clone();
            labels.insert("kubernetes.io/metadata.name".into(), n.metadata.name.clone());
            (n.metadata.name.clone(), labels)
        })
        .collect();
    let mut chains = vec![POLICY.to_string()];
    let mut main = format!("-A {POLICY} -m conntrack --ctstate RELATED,ESTABLISHED -j RETURN\n");
    let mut bodies = String::new();
    let mut ingress_jumps = String::new();
    for pod in &pods {
        let selecting: Vec<&NetworkPolicy> = policies
            .iter()
            .map(|p| p.as_ref())
            .filter(|p| p.metadata.namespace_or_default() == pod.namespace && p.spec.pod_selector.matches(&pod.labels))
            .collect();
        for egress in [true, false] {
            let isolating: Vec<&&NetworkPolicy> = selecting.iter().filter(|p| if egress { p.spec.isolates().1 } else { p.spec.isolates().0 }).collect();
            if isolating.is_empty() {
                continue;
            }
            let mut allows = BTreeSet::new();
            for policy in &isolating {
                let ns = policy.metadata.namespace_or_default();
                let rules: Vec<(&[NetworkPolicyPeer], &[NetworkPolicyPort])> = if egress {
                    policy.spec.egress.iter().flatten().map(|r| (r.to.as_slice(), r.ports.as_slice())).collect()
                } else {
                    policy.spec.ingress.iter().flatten().map(|r| (r.from.as_slice(), r.ports.as_slice())).collect()
                };
                for (peers, ports) in rules {
                    if peers.is_empty() {
                        // from/to anyone; a named port is the selected pod's (ingress) or unknown (egress)
                        for (protocol, range) in port_ranges(ports, (!egress).then_some(pod)) {
                            allows.insert(Allow { peer: None, protocol, ports: range });
                        }
                        continue;
                    }
                    for peer in peers {
                        let (blocks, peer_pods) = peer_addresses(peer, ns, &pods, &namespaces);
                        if egress && ports.iter().any(|p| matches!(p.port, Some(IntOrString::String(_)))) {
                            // named ports are the destination pods' own
                            for p in peer_pods {
                                for (protocol, range) in port_ranges(ports, Some(p)) {
                                    allows.insert(Allow { peer: Some(Ipv4Net::from(p.ip)), protocol, ports: range });
                                }
                            }
                            continue;
                        }
                        for block in blocks {
                            for (protocol, range) in port_ranges(ports, (!egress).then_some(pod)) {
                                allows.insert(Allow { peer: Some(block), protocol, ports: range });
                            }
                        }
                    }
                }
            }
            let name = chain(if egress { "CCPE" } else { "CCPI" }, &pod.ip.to_string());
            chains.push(name.clone());
            let (side, peer_side) = if egress { ("-s", "-d") } else { ("-d", "-s") };
            let jump = format!("-A {POLICY} {side} {}/32 -m comment --comment \"{}\" -j {name}\n", pod.ip, pod.namespace);
            if egress { main.push_str(&jump) } else { ingress_jumps.push_str(&jump) }
            for allow in &allows {
                let mut rule = format!("-A {name}");
                if let Some(peer) = allow.peer {
                    let _ = write!(rule, " {peer_side} {peer}");
                }
                if let Some(protocol) = &allow.protocol {
                    let _ = write!(rule, " -p {protocol}");
                    if let Some((lo, hi)) = allow.ports {
                        let range = if lo == hi { lo.to_string() } else { format!("{lo}:{hi}") };
                        let _ = write!(rule, " -m {protocol} --dport {range}");
                    }
                }
                let _ = writeln!(bodies, "{rule} -j RETURN");
            }
            let _ = writeln!(bodies, "-A {name} -j DROP");
        }
    }
    main.push_str(&ingress_jumps);
    let mut out = String::from("*filter\n");
    for c in chains.iter().chain(stale.iter().filter(|s| !chains.contains(s))) {
        let _ = writeln!(out, ":{c} - [0:0]");
    }
    out.push_str(&main);
    out.push_str(&bodies);
    for s in stale.iter().filter(|s| !chains.contains(s)) {
        let _ = writeln!(out, "-X {s}");
    }
    out.push_str("COMMIT\n");
    out
}

/// The policy rules as last written on this node.
#[derive(Debug, Default)]
pub struct PolicyRules {
    written: Option<String>,
    recheck: bool,
}

impl PolicyRules {
    /// Makes the kernel's rules match the stores (nothing runs when they are unchanged).
    pub async fn apply(&mut self, policies: &Store<NetworkPolicy>, pods: &Store<Pod>, namespaces: &Store<Namespace>) -> Result<(), String> {
        let (policies, pods, namespaces) = (policies.snapshot(), pods.snapshot(), namespaces.snapshot());
        let wanted = restore_input(&policies, &pods, &namespaces, &BTreeSet::new());
        let unchanged = self.written.as_deref() == Some(wanted.as_str());
        if unchanged && !self.recheck {
            return Ok(());
        }
        if !unchanged {
            let saved = super::clusterips::run("iptables-save", &["-t", "filter"], None).await?;
            let input = restore_input(&policies, &pods, &namespaces, &our_chains(&saved, &["CCPI-", "CCPE-"]));
            super::clusterips::run("iptables-restore", &["-w", "5", "-W", "10000", "--noflush"], Some(&input)).await?;
            tracing::info!(policies = policies.len(), "wrote the network policy rules");
        }
        for from in ["FORWARD", "INPUT"] {
            super::clusterips::jump_first("filter", from, POLICY).await?;
        }
        self.written = Some(wanted);
        self.recheck = false;
        Ok(())
    }

    /// Makes the next apply check the jumps again (see [`super::clusterips::ClusterIpRules::recheck`]).
    pub fn recheck(&mut self) {
        self.recheck = true;
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;
    use std::sync::Arc;

    fn pod(name: &str, ns: &str, ip: &str, labels: serde_json::Value) -> Arc<Pod> {
        Arc::new(serde_json::from_value(json!({"metadata": {"name": name, "namespace": ns, "labels": labels},
            "spec": {"containers": [{"name": "c", "ports": [{"name": "http", "containerPort": 8080}]}]},
            "status": {"phase": "Running", "podIP": ip}})).unwrap())
    }

    fn policy(ns: &str, spec: serde_json::Value) -> Arc<NetworkPolicy> {
        Arc::new(serde_json::from_value(json!({"metadata": {"name": "p", "namespace": ns}, "spec": spec})).unwrap())
    }

    fn ns(name: &str, labels: serde_json::Value) -> Arc<Namespace> {
        Arc::new(serde_json::from_value(json!({"metadata": {"name": name, "labels": labels}})).unwrap())
    }

    #[test]
    fn a_selected_pod_accepts_only_what_a_policy_allows_and_others_stay_open() {
        let pods = [pod("db", "shop", "100.64.1.5", json!({"app": "db"})), pod("api", "shop", "100.64.2.6", json!({"app": "api"})), pod("ops", "tools", "100.64.3.7", json!({"app": "ops"}))];
        let namespaces = [ns("shop", json!({})), ns("tools", json!({"team": "ops"}))];
        let allow_api = policy("shop", json!({"podSelector": {"matchLabels": {"app": "db"}}, "ingress": [
            {"from": [{"podSelector": {"matchLabels": {"app": "api"}}}, {"namespaceSelector": {"matchLabels": {"team": "ops"}}}], "ports": [{"port": "http"}]}]}));
        let text = restore_input(&[allow_api], &pods, &namespaces, &BTreeSet::new());
        let ingress = chain("CCPI", "100.64.1.5");
        assert!(text.contains(&format!("-A CLUSTERCTL-POLICY -d 100.64.1.5/32 -m comment --comment \"shop\" -j {ingress}")), "{text}");
        assert!(text.contains(&format!("-A {ingress} -s 100.64.2.6/32 -p tcp -m tcp --dport 8080 -j RETURN")), "{text}");
        assert!(text.contains(&format!("-A {ingress} -s 100.64.3.7/32 -p tcp -m tcp --dport 8080 -j RETURN")), "namespaceSelector: {text}");
        assert!(text.contains(&format!("-A {ingress} -j DROP")));
        assert!(!text.contains("-d 100.64.2.6/32"), "api is selected by no policy: open");
        assert!(!text.contains("CCPE-"), "no egress isolation without egress rules or policyTypes");
        assert!(text.starts_with("*filter\n") && text.contains("--ctstate RELATED,ESTABLISHED -j RETURN"));
    }

    #[test]
    fn deny_all_egress_and_ip_blocks_with_exceptions() {
        let pods = [pod("a", "default", "100.64.1.2", json!({"app": "a"}))];
        let deny = policy("default", json!({"podSelector": {}, "policyTypes": ["Egress"]}));
        let text = restore_input(&[deny], &pods, &[], &BTreeSet::new());
        let egress = chain("CCPE", "100.64.1.2");
        assert!(text.contains(&format!("-A CLUSTERCTL-POLICY -s 100.64.1.2/32 -m comment --comment \"default\" -j {egress}")) && text.contains(&format!("-A {egress} -j DROP")));
        assert!(!text.contains(&format!("-A {egress} -s")) && !text.contains("CCPI-"), "{text}");
        let blocks = subtract("10.0.0.0/24".parse().unwrap(), &["10.0.0.128/26".parse().unwrap()]);
        assert_eq!(blocks, ["10.0.0.0/25".parse::<Ipv4Net>().unwrap(), "10.0.0.192/26".parse().unwrap()]);
        let web = policy("default", json!({"podSelector": {"matchExpressions": [{"key": "app", "operator": "In", "values": ["a"]}]},
            "egress": [{"to": [{"ipBlock": {"cidr": "10.0.0.0/24", "except": ["10.0.0.128/26"]}}], "ports": [{"protocol": "UDP", "port": 53}, {"port": 8000, "endPort": 8080}]}]}));
        let text = restore_input(&[web], &pods, &[], &BTreeSet::new());
        assert!(text.contains(&format!("-A {egress} -d 10.0.0.0/25 -p udp -m udp --dport 53 -j RETURN")), "{text}");
        assert!(text.contains(&format!("-A {egress} -d 10.0.0.192/26 -p tcp -m tcp --dport 8000:8080 -j RETURN")), "{text}");
        assert!(!text.contains("10.0.0.128"));
    }

    #[test]
    fn stale_pod_chains_are_deleted() {
        let stale = our_chains("*filter\n:CCPI-0123456789ABCDEF - [0:0]\n:FORWARD DROP [0:0]\nCOMMIT\n", &["CCPI-", "CCPE-"]);
        let text = restore_input(&[], &[], &[], &stale);
        assert!(text.contains(":CCPI-0123456789ABCDEF - [0:0]") && text.contains("-X CCPI-0123456789ABCDEF"));
    }
}
