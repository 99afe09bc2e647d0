//! ClusterIPs in the kernel: the proxy on every node writes one set of iptables rules (nat table)
//! that DNATs each connection to a Service's cluster IP and port to one of its ready endpoints,
//! chosen at random with equal chances (`statistic`), or the one a client last used while its
//! `ClientIP` affinity lasts (`recent`), as kube-proxy's iptables mode does. A Service without
//! ready endpoints answers connections with a reject (filter table) instead of letting them
//! hang. A pod that reaches itself through its Service is masqueraded (the hairpin case).
//!
//! Why iptables and not IPVS or nftables: every node has it (the node image's `iptables`, which the
//! pod network uses already), a packet walks the rules only when it opens a connection (conntrack
//! keeps the choice), and the whole table is replaced in one `iptables-restore` transaction; at
//! 1,000 Services (about 5,000 rules) a rewrite costs tens of milliseconds, which only Service
//! and endpoint changes pay. The rules are rewritten only when they differ from the last ones
//! written.
//!
//! NodePort and LoadBalancer Services build on the same rules: a connection to a node port on one of
//! the node's addresses is marked for masquerading and sent to the Service's chain (the agent's
//! NodePort listener still holds each port, as kube-proxy does, and serves connections to
//! loopback, which the kernel does not route to other hosts).
//!
//! Chains: `CLUSTERCTL-SERVICES` (from PREROUTING and OUTPUT) matches cluster IP and port and
//! jumps to `CCSVC-<hash>` per Service port, which DNATs to one of its endpoints; its last
//! rule sends traffic to the node's own addresses to `CLUSTERCTL-NODEPORTS`;
//! `CLUSTERCTL-SVC-POSTROUTING` masquerades marked (hairpin) connections;
//! `CLUSTERCTL-SVC-REJECT` (filter, from OUTPUT and FORWARD) rejects Service ports with no endpoint.

use std::collections::BTreeSet;
use std::fmt::Write as _;
use std::net::Ipv4Addr;

use sha2::{Digest, Sha256};

use crate::api::service::{Endpoints, Service};
use crate::runtime::{Object, Store};

const SERVICES: &str = "CLUSTERCTL-SERVICES";
const NODE_PORTS: &str = "CLUSTERCTL-NODEPORTS";
const POSTROUTING: &str = "CLUSTERCTL-SVC-POSTROUTING";
const REJECT: &str = "CLUSTERCTL-SVC-REJECT";
/// The mark of connections to be masqueraded.
const MASQ_MARK: &str = "0x4000/0x4000";

/// One Service port's rules: where it is reached and the endpoints behind it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ServicePortRules {
    /// `namespace/name:port`, for comments and chain names.
    pub id: String,
    pub cluster_ip: Ipv4Addr,
    pub port: u16,
    /// `tcp` or `udp`.
    pub protocol: &'static str,
    pub endpoints: Vec<(Ipv4Addr, u16)>,
    pub affinity_seconds: Option<u32>,
    /// The port on every node's addresses (NodePort and LoadBalancer Services).
    pub node_port: Option<u16>,
}

/// Every Service port with a cluster IP, and its ready endpoints.
pub fn service_ports(services: &Store<Service>, endpoints: &Store<Endpoints>) -> Vec<ServicePortRules> {
    let mut out = Vec::new();
    for service in services.snapshot() {
        let Some(cluster_ip) = service.spec.cluster_address() else { continue };
        let ep = endpoints.get(&service.key());
        for sp in &service.spec.ports {
            let protocol = match sp.protocol().to_ascii_uppercase().as_str() {
                "TCP" => "tcp",
                "UDP" => "udp",
                _ => continue,
            };
            let Ok(port) = u16::try_from(sp.port) else { continue };
            let name = sp.name.as_deref().unwrap_or("");
            let mut backends = Vec::new();
            for subset in ep.iter().flat_map(|e| e.subsets.iter()) {
                let ports = &subset.ports;
                let target = ports
                    .iter()
                    .find(|p| p.name.as_deref().unwrap_or("") == name && p.protocol.as_deref().unwrap_or("TCP").eq_ignore_ascii_case(protocol))
                    .or_else(|| (ports.len() == 1).then(|| &ports[0]))
                    .and_then(|p| u16::try_from(p.port).ok());
                let Some(target) = target else { continue };
                backends.extend(subset.addresses.iter().filter_map(|a| a.ip.parse::<Ipv4Addr>().ok()).map(|ip| (ip, target)));
            }
            backends.sort();
            backends.dedup();
            let id = format!("{}/{}:{}", service.metadata.namespace.as_deref().unwrap_or("default"), service.metadata.name, if name.is_empty() { port.to_string() } else { name.to_string() });
            let node_port = sp.node_port.and_then(|p| u16::try_from(p).ok()).filter(|_| service.spec.uses_node_ports());
            out.push(ServicePortRules { id, cluster_ip, port, protocol, endpoints: backends, affinity_seconds: service.spec.affinity_seconds(), node_port });
        }
    }
    out.sort_by(|a, b| a.id.cmp(&b.id).then(a.protocol.cmp(b.protocol)));
    out
}

/// A chain name of at most 28 characters, stable for what it names.
pub(super) fn chain(prefix: &str, what: &str) -> String {
    let digest = Sha256::digest(what.as_bytes());
    format!("{prefix}-{}", &hex::encode(digest)[..16].to_uppercase())
}

/// The rules, as `iptables-restore --noflush` input for the nat and filter tables: every chain of
/// ours is declared (which empties it) and refilled; `stale` chains (ours, no longer wanted) are
/// emptied and deleted in the same transaction.
pub fn restore_input(ports: &[ServicePortRules], stale: &BTreeSet<String>) -> String {
    let mut nat = String::new();
    let mut chains = vec![SERVICES.to_string(), NODE_PORTS.to_string(), POSTROUTING.to_string()];
    let mut rules = String::new();
    let mut node_ports = String::new();
    let mut rejects = String::new();
    let _ = writeln!(rules, "-A {POSTROUTING} -m mark --mark {MASQ_MARK} -j MASQUERADE");
    for sp in ports {
        let comment = format!("-m comment --comment \"{}\"", sp.id.replace('"', ""));
        let matcher = format!("-d {}/32 -p {proto} -m {proto} --dport {}", sp.cluster_ip, sp.port, proto = sp.protocol);
        if sp.endpoints.is_empty() {
            let _ = writeln!(rejects, "-A {REJECT} {matcher} {comment} -j REJECT --reject-with icmp-port-unreachable");
            continue;
        }
        let svc = chain("CCSVC", &format!("{}/{}", sp.id, sp.protocol));
        chains.push(svc.clone());
        let _ = writeln!(rules, "-A {SERVICES} {matcher} {comment} -j {svc}");
        if let Some(node_port) = sp.node_port {
            // NodePort traffic is masqueraded: the endpoint may be on another node, whose answer
            // must come back through this one
            let matcher = format!("-p {proto} -m {proto} --dport {node_port} {comment}", proto = sp.protocol);
            let _ = writeln!(node_ports, "-A {NODE_PORTS} {matcher} -j MARK --set-xmark {MASQ_MARK}");
            let _ = writeln!(node_ports, "-A {NODE_PORTS} {matcher} -j {svc}");
        }
        // One chain per Service port, none per endpoint: `iptables-restore` slows with the number
        // of chains (1,000 Services of 10 endpoints: 2.6 s with a chain per endpoint, 0.45 s so).
        // A client that is itself an endpoint is marked for masquerading (the hairpin case; a
        // pod reaching another endpoint of its own Service is masqueraded too, harmlessly).
        for (ip, _) in &sp.endpoints {
            let _ = writeln!(rules, "-A {svc} -s {ip}/32 -j MARK --set-xmark {MASQ_MARK}");
        }
        let proto = sp.protocol;
        // the `recent` list of an endpoint: the clients it served, for ClientIP affinity
        let recent = |ip: &Ipv4Addr, port: &u16| chain("CCSEP", &format!("{}/{}/{ip}:{port}", sp.id, sp.protocol));
        if let Some(seconds) = sp.affinity_seconds {
            for (ip, port) in &sp.endpoints {
                let _ = writeln!(
                    rules,
                    "-A {svc} -p {proto} -m {proto} -m recent --name {} --mask 255.255.255.255 --rsource --rcheck --seconds {seconds} --reap -j DNAT --to-destination {ip}:{port}",
                    recent(ip, port)
                );
            }
        }
        let n = sp.endpoints.len();
        for (i, (ip, port)) in sp.endpoints.iter().enumerate() {
            let share = if i + 1 == n { String::new() } else { format!(" -m statistic --mode random --probability {:.10}", 1.0 / (n - i) as f64) };
            let remember = match sp.affinity_seconds {
                Some(_) => format!(" -m recent --name {} --mask 255.255.255.255 --rsource --set", recent(ip, port)),
                None => String::new(),
            };
            let _ = writeln!(rules, "-A {svc}{share} -p {proto} -m {proto}{remember} -j DNAT --to-destination {ip}:{port}");
        }
    }
    nat.push_str("*nat\n");
    for c in chains.iter().chain(stale.iter().filter(|s| !chains.contains(s))) {
        let _ = writeln!(nat, ":{c} - [0:0]");
    }
    nat.push_str(&rules);
    // last: traffic to one of the node's own addresses (not loopback, which the agent's NodePort
    // listener serves) on a node port
    let _ = writeln!(nat, "-A {SERVICES} -m addrtype --dst-type LOCAL ! -d 127.0.0.0/8 -j {NODE_PORTS}");
    nat.push_str(&node_ports);
    for s in stale.iter().filter(|s| !chains.contains(s)) {
        let _ = writeln!(nat, "-X {s}");
    }
    nat.push_str("COMMIT\n*filter\n");
    let _ = writeln!(nat, ":{REJECT} - [0:0]");
    nat.push_str(&rejects);
    nat.push_str("COMMIT\n");
    nat
}

/// The chains named with one of `prefixes` (ours) in `iptables-save` output.
pub fn our_chains(saved: &str, prefixes: &[&str]) -> BTreeSet<String> {
    saved
        .lines()
        .filter_map(|l| l.strip_prefix(':'))
        .filter_map(|l| l.split_whitespace().next())
        .filter(|c| prefixes.iter().any(|p| c.starts_with(p)))
        .map(str::to_string)
        .collect()
}

/// Runs a program with `stdin`; its stdout, or its stderr as the error.
pub(super) async fn run(program: &str, args: &[&str], stdin: Option<&str>) -> Result<String, String> {
    use tokio::io::AsyncWriteExt;
    let mut cmd = tokio::process::Command::new(program);
    cmd.args(args).stdin(std::process::Stdio::piped()).stdout(std::process::Stdio::piped()).stderr(std::process::Stdio::piped());
    let mut child = cmd.spawn().map_err(|e| format!("{program}: {e}"))?;
    if let Some(mut pipe) = child.stdin.take() {
        if let Some(input) = stdin {
            pipe.write_all(input.as_bytes()).await.map_err(|e| format!("{program}: {e}"))?;
        }
        drop(pipe);
    }
    let out = child.wait_with_output().await.map_err(|e| format!("{program}: {e}"))?;
    if out.status.success() {
        Ok(String::from_utf8_lossy(&out.stdout).into_owned())
    } else {
        Err(format!("{program} {}: {}", args.join(" "), String::from_utf8_lossy(&out.stderr).trim()))
    }
}

/// The node's ClusterIP rules, as last written.
#[derive(Debug, Default)]
pub struct ClusterIpRules {
    written: Option<String>,
    /// Whether the jumps into our chains must be checked before the next write is skipped.
    recheck: bool,
}

impl ClusterIpRules {
    /// Makes the kernel's rules match `ports` (nothing is run when they are what was last written).
    pub async fn apply(&mut self, ports: &[ServicePortRules]) -> Result<(), String> {
        let wanted = restore_input(ports, &BTreeSet::new());
        let unchanged = self.written.as_deref() == Some(wanted.as_str());
        if unchanged && !self.recheck {
            return Ok(());
        }
        if !unchanged {
            let saved = run("iptables-save", &["-t", "nat"], None).await?;
            let input = restore_input(ports, &our_chains(&saved, &["CCSVC-", "CCSEP-"]));
            run("iptables-restore", &["-w", "5", "-W", "10000", "--noflush"], Some(&input)).await?;
            tracing::info!(service_ports = ports.len(), "wrote the cluster IP rules");
        }
        for (table, from, to) in [
            ("nat", "PREROUTING", SERVICES),
            ("nat", "OUTPUT", SERVICES),
            ("nat", "POSTROUTING", POSTROUTING),
            ("filter", "OUTPUT", REJECT),
            ("filter", "FORWARD", REJECT),
        ] {
            jump_first(table, from, to).await?;
        }
        self.written = Some(wanted);
        self.recheck = false;
        Ok(())
    }

    /// Makes the next [`ClusterIpRules::apply`] check the jumps into our chains again (another
    /// program may have put rules before them).
    pub fn recheck(&mut self) {
        self.recheck = true;
    }
}

/// Makes `chain` of `table` start with the jump to `to`, before anything but our other jumps
/// (the agent's pod network accepts the pods' traffic in FORWARD, which must not come first).
pub(super) async fn jump_first(table: &str, chain: &str, to: &str) -> Result<(), String> {
    let listed = run("iptables", &["-w", "5", "-W", "10000", "-t", table, "-S", chain], None).await?;
    let rules: Vec<&str> = listed.lines().filter(|l| l.starts_with("-A ")).collect();
    let ours = |l: &str| l.split_whitespace().skip_while(|w| *w != "-j").nth(1).is_some_and(|t| t.starts_with("CLUSTERCTL-SVC") || t.starts_with("CLUSTERCTL-POLICY") || t == SERVICES);
    let wanted = format!("-A {chain} -j {to}");
    let leading = rules.iter().take_while(|l| ours(l)).count();
    if rules[..leading].contains(&wanted.as_str()) {
        return Ok(());
    }
    while run("iptables", &["-w", "5", "-W", "10000", "-t", table, "-D", chain, "-j", to], None).await.is_ok() {}
    run("iptables", &["-w", "5", "-W", "10000", "-t", table, "-I", chain, "1", "-j", to], None).await.map(drop)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn port(id: &str, endpoints: &[(&str, u16)], affinity: Option<u32>) -> ServicePortRules {
        ServicePortRules {
            id: id.into(),
            cluster_ip: "10.96.0.20".parse().unwrap(),
            port: 80,
            protocol: "tcp",
            endpoints: endpoints.iter().map(|(ip, p)| (ip.parse().unwrap(), *p)).collect(),
            affinity_seconds: affinity,
            node_port: None,
        }
    }

    #[test]
    fn each_endpoint_gets_an_equal_share_and_its_own_dnat() {
        let text = restore_input(&[port("default/web:http", &[("100.64.1.2", 8080), ("100.64.2.2", 8080), ("100.64.3.2", 8080)], None)], &BTreeSet::new());
        let svc = chain("CCSVC", "default/web:http/tcp");
        assert!(text.contains(&format!("-A CLUSTERCTL-SERVICES -d 10.96.0.20/32 -p tcp -m tcp --dport 80 -m comment --comment \"default/web:http\" -j {svc}")), "{text}");
        let picks: Vec<&str> = text.lines().filter(|l| l.starts_with(&format!("-A {svc} ")) && l.contains("DNAT")).collect();
        assert_eq!(picks.len(), 3);
        assert!(picks[0].contains("--probability 0.3333333333") && picks[1].contains("--probability 0.5000000000") && !picks[2].contains("statistic"), "{picks:?}");
        assert!(text.contains("-j DNAT --to-destination 100.64.2.2:8080"));
        assert!(text.contains("-s 100.64.2.2/32 -j MARK --set-xmark 0x4000/0x4000"), "hairpin");
        assert!(!text.contains("REJECT --reject-with"));
        assert!(chain("CCSEP", "x").len() <= 28);
        assert!(!text.contains(":CCSEP-"), "no chain per endpoint");
    }

    #[test]
    fn affinity_remembers_the_client_and_no_endpoint_rejects() {
        let text = restore_input(&[port("default/db:5432", &[("100.64.1.5", 5432), ("100.64.2.5", 5432)], Some(600)), port("default/empty:80", &[], None)], &BTreeSet::new());
        assert_eq!(text.matches("--rcheck --seconds 600 --reap").count(), 2, "{text}");
        assert_eq!(text.matches("--rsource --set -j DNAT").count(), 2, "{text}");
        assert!(text.contains("-A CLUSTERCTL-SVC-REJECT -d 10.96.0.20/32 -p tcp -m tcp --dport 80 -m comment --comment \"default/empty:80\" -j REJECT"));
    }

    #[test]
    fn a_node_port_is_marked_for_masquerading_and_sent_to_the_same_service_chain() {
        let mut web = port("default/web:http", &[("100.64.1.2", 80)], None);
        web.node_port = Some(30080);
        let text = restore_input(&[web], &BTreeSet::new());
        let svc = chain("CCSVC", "default/web:http/tcp");
        assert!(text.contains("-A CLUSTERCTL-SERVICES -m addrtype --dst-type LOCAL ! -d 127.0.0.0/8 -j CLUSTERCTL-NODEPORTS"), "{text}");
        assert!(text.contains("-A CLUSTERCTL-NODEPORTS -p tcp -m tcp --dport 30080 -m comment --comment \"default/web:http\" -j MARK --set-xmark 0x4000/0x4000"), "{text}");
        assert!(text.contains(&format!("-A CLUSTERCTL-NODEPORTS -p tcp -m tcp --dport 30080 -m comment --comment \"default/web:http\" -j {svc}")), "{text}");
        let services = text.lines().filter(|l| l.starts_with("-A CLUSTERCTL-SERVICES")).collect::<Vec<_>>();
        assert!(services.last().unwrap().contains("CLUSTERCTL-NODEPORTS"), "the node ports come after every cluster IP");
    }

    #[test]
    fn stale_chains_are_emptied_and_deleted_in_the_same_transaction() {
        let saved = "*nat\n:PREROUTING ACCEPT [0:0]\n:CCSVC-0123456789ABCDEF - [0:0]\n:CCSEP-FEDCBA9876543210 - [0:0]\n:DOCKER - [0:0]\nCOMMIT\n";
        let stale = our_chains(saved, &["CCSVC-", "CCSEP-"]);
        assert_eq!(stale.len(), 2);
        let text = restore_input(&[], &stale);
        assert!(text.contains(":CCSVC-0123456789ABCDEF - [0:0]") && text.contains("-X CCSVC-0123456789ABCDEF") && text.contains("-X CCSEP-FEDCBA9876543210"));
        assert!(!text.contains("DOCKER"));
    }
}
