//! Pod networking on a node, done by the agent instead of by Docker.
//!
//! Docker attaches a container to a network from an OCI prestart hook that re-executes the whole
//! `dockerd` binary (`libnetwork-setkey`, plus a `set-ipv6` re-exec), and publishes each port with
//! iptables calls and a `docker-proxy` process: about 40 % of the CPU that starting a pod cost a
//! node (`perf` on the harness: 0.2 s for the re-execs alone; a 100-replica Deployment on three
//! workers was Running after 19.7 s then, 10.7 s now). So pod
//! containers are created with `NetworkDisabled` (a network namespace with loopback only, no hook),
//! and the agent wires them, as a CNI plugin does for kubelet:
//!
//! - [`PodNetwork`]: pods are routed, not bridged (as Calico wires them): per pod sandbox a veth
//!   pair whose host end (`cc` + 12 digits of the sandbox's id) has a route to the pod's address
//!   alone, and whose other end is the sandbox's `eth0` with that address (`/32`, the lowest free
//!   one of the node's range, `spec.podCIDR`, recorded in the sandbox's labels) and the range's
//!   gateway as default route. The gateway (the range's first address) is the node's own, on
//!   `clusterctl0`, an interface without ports that holds it and the range's route (the cluster
//!   DNS listens there). Every packet of a pod crosses the node's IP layer once, not a bridge and
//!   its `br_netfilter` pass first: a pod's end costs about half as much as a bridge port did
//!   (docs/performance.md). Traffic between two pods of one node is routed too, so Services'
//!   DNAT and policies see it in FORWARD as traffic between nodes. Pod addresses are routed
//!   between nodes by the VPC (the cloud controller's route controller writes one route per
//!   node's range), so traffic to the cluster CIDR and to the VPC keeps the pod's address; only
//!   traffic to elsewhere leaves through the node's address (MASQUERADE, in the chain
//!   `CLUSTERCTL-POSTROUTING`).
//! - [`HostPorts`]: every `hostPort` is a listener of the agent that forwards each connection to
//!   the pod's address, as `docker-proxy` does; the listener is bound before the sandbox is
//!   made, so two pods can never hold one port.

use std::collections::{HashMap, HashSet};
use std::net::{Ipv4Addr, SocketAddr};
use std::sync::Mutex;

use ipnet::Ipv4Net;
use tokio::net::{TcpListener, TcpStream};

use super::{PortSpec, RuntimeError};
use crate::client::leader::AbortOnDrop;

/// The interface that holds the gateway address and the pod range's route: a bridge (every
/// kernel has them; a `dummy` is a module not every kernel builds) whose ports are only those of
/// pods an older agent wired.
pub const POD_BRIDGE: &str = "clusterctl0";
/// The host ends of pods' veth pairs (`cc` + 12 digits), as iptables matches them.
const POD_LINKS: &str = "cc+";
/// The nat chain of the pods' masquerading, jumped to from POSTROUTING.
const NAT_CHAIN: &str = "CLUSTERCTL-POSTROUTING";

fn failed(action: impl Into<String>, message: impl Into<String>) -> RuntimeError {
    RuntimeError::Failed { action: action.into(), message: message.into() }
}

/// Runs a program; its stderr as the error when it fails.
async fn run(program: &str, args: &[&str], stdin: Option<&str>) -> Result<(), String> {
    use tokio::io::AsyncWriteExt;
    let mut cmd = tokio::process::Command::new(program);
    cmd.args(args).stdin(std::process::Stdio::piped()).stdout(std::process::Stdio::null()).stderr(std::process::Stdio::piped());
    let mut child = cmd.spawn().map_err(|e| format!("{program}: {e}"))?;
    if let Some(mut pipe) = child.stdin.take() {
        if let Some(input) = stdin {
            pipe.write_all(input.as_bytes()).await.map_err(|e| format!("{program}: {e}"))?;
        }
        drop(pipe);
    }
    let out = child.wait_with_output().await.map_err(|e| format!("{program}: {e}"))?;
    if out.status.success() {
        Ok(())
    } else {
        Err(format!("{program} {}: {}", args.join(" "), String::from_utf8_lossy(&out.stderr).trim()))
    }
}

/// Whether a network interface of this name exists in the agent's network namespace.
pub(super) fn link_exists(name: &str) -> bool {
    std::path::Path::new("/sys/class/net").join(name).exists()
}

/// The node's pod bridge and the addresses on it.
#[derive(Debug)]
pub struct PodNetwork {
    bridge: String,
    cidr: Ipv4Net,
    /// Forwarding and masquerading rules for pods' traffic out of the node (not on an operator's
    /// machine, where the runtime's tests use a bridge of their own).
    nat: bool,
    /// Destinations reached with the pod's own address (the cluster CIDR, the VPC).
    routed: Vec<Ipv4Net>,
}

impl PodNetwork {
    /// The network of a node: [`POD_BRIDGE`] on its pod range, with NAT for traffic to anything
    /// but `routed` (the cluster's blocks).
    pub fn on_node(pod_cidr: Ipv4Net, routed: Vec<Ipv4Net>) -> Self {
        PodNetwork { bridge: POD_BRIDGE.into(), cidr: pod_cidr, nat: true, routed }
    }

    /// Another bridge and subnet, without touching the firewall (tests on a shared machine).
    pub fn without_nat(bridge: &str, cidr: Ipv4Net) -> Self {
        PodNetwork { bridge: bridge.into(), cidr, nat: false, routed: Vec::new() }
    }

    /// The pod range.
    pub fn cidr(&self) -> Ipv4Net {
        self.cidr
    }

    pub fn gateway(&self) -> Ipv4Addr {
        self.cidr.hosts().next().expect("a subnet with hosts")
    }

    /// Makes the bridge (up, with the gateway address) and the NAT rules, where missing.
    pub async fn ensure(&self) -> Result<(), RuntimeError> {
        let action = || format!("setting up the pod bridge {}", self.bridge);
        if !self.present() {
            match run("ip", &["link", "add", &self.bridge, "type", "bridge"], None).await {
                Ok(()) => {}
                Err(e) if e.contains("File exists") => {}
                Err(e) => return Err(failed(action(), e)),
            }
        }
        let gateway = format!("{}/{}", self.gateway(), self.cidr.prefix_len());
        // An address of another range (the node's range changed, or an older agent's fixed one) goes.
        let shown = tokio::process::Command::new("ip").args(["-o", "-4", "addr", "show", "dev", &self.bridge]).output().await.map_err(|e| failed(action(), e.to_string()))?;
        for other in String::from_utf8_lossy(&shown.stdout).lines().filter_map(|l| l.split_whitespace().skip_while(|w| *w != "inet").nth(1)).filter(|a| *a != gateway) {
            run("ip", &["addr", "del", other, "dev", &self.bridge], None).await.map_err(|e| failed(action(), e))?;
        }
        match run("ip", &["addr", "add", &gateway, "dev", &self.bridge], None).await {
            Ok(()) => {}
            Err(e) if e.contains("File exists") || e.contains("Address already assigned") => {}
            Err(e) => return Err(failed(action(), e)),
        }
        run("ip", &["link", "set", &self.bridge, "up"], None).await.map_err(|e| failed(action(), e))?;
        if self.nat {
            std::fs::write("/proc/sys/net/ipv4/ip_forward", "1").map_err(|e| failed(action(), format!("enabling IP forwarding: {e}")))?;
            // Pods' traffic is forwarded both ways (new connections to pods come from other
            // nodes and pods now), before Docker's own rules (its policy there is DROP); the
            // bridge's for pods an older agent made its ports. Each rule goes in at one place,
            // so the last one here is the first in the chain: the pods' links.
            let rules: [(&str, &str, Vec<&str>); 5] = [
                ("nat", "POSTROUTING", vec!["-j", NAT_CHAIN]),
                ("filter", "FORWARD", vec!["-i", &self.bridge, "-j", "ACCEPT"]),
                ("filter", "FORWARD", vec!["-o", &self.bridge, "-j", "ACCEPT"]),
                ("filter", "FORWARD", vec!["-i", POD_LINKS, "-j", "ACCEPT"]),
                ("filter", "FORWARD", vec!["-o", POD_LINKS, "-j", "ACCEPT"]),
            ];
            // Pods of an older agent (ports of the bridge, the range on their eth0) reach the
            // routed ones through the node's answers to their ARP requests.
            std::fs::write(format!("/proc/sys/net/ipv4/conf/{}/proxy_arp", self.bridge), "1").map_err(|e| failed(action(), format!("answering ARP for routed pods: {e}")))?;
            let _ = run("iptables", &["-w", "5", "-t", "nat", "-N", NAT_CHAIN], None).await; // exists already
            // An older agent's rule, which masqueraded every pod's traffic.
            let _ = run("iptables", &["-w", "5", "-t", "nat", "-D", "POSTROUTING", "-s", "100.64.0.0/24", "!", "-o", &self.bridge, "-j", "MASQUERADE"], None).await;
            for (table, chain, rule) in rules {
                let check: Vec<&str> = ["-w", "5", "-t", table, "-C", chain].into_iter().chain(rule.iter().copied()).collect();
                if run("iptables", &check, None).await.is_err() {
                    // after the proxy's jumps (policies and rejects come before accepting)
                    let position = leading_proxy_jumps(table, chain).await + 1;
                    let position = position.to_string();
                    let add: Vec<&str> = ["-w", "5", "-t", table, "-I", chain, &position].into_iter().chain(rule.iter().copied()).collect();
                    run("iptables", &add, None).await.map_err(|e| failed(action(), e))?;
                }
            }
            run("iptables-restore", &["-w", "5", "--noflush"], Some(&self.nat_rules())).await.map_err(|e| failed(action(), e))?;
            // pods wired before the agent (re)started, and the uplink
            super::fastpath::add_existing_pod_links();
        }
        Ok(())
    }

        /// The masquerading chain, whole (`iptables-restore` input that replaces it at once).
    fn nat_rules(&self) -> String {
        let mut out = format!("*nat\n:{NAT_CHAIN} - [0:0]\n");
        for dest in &self.routed {
            out.push_str(&format!("-A {NAT_CHAIN} -s {} -d {dest} -j RETURN\n", self.cidr));
        }
        out.push_str(&format!("-A {NAT_CHAIN} -s {} -j MASQUERADE\nCOMMIT\n", self.cidr));
        out
    }

    /// Whether the bridge exists (it goes with the node's network namespace).
    pub fn present(&self) -> bool {
        link_exists(&self.bridge)
    }

    /// The first address after `last` (wrapping around) that is neither the gateway nor in `used`:
    /// as CNI's host-local allocator, a pod's address is not handed out again at once, while
    /// endpoints and connections may still name it.
    pub fn free_address(&self, used: &HashSet<Ipv4Addr>, last: Option<Ipv4Addr>) -> Option<Ipv4Addr> {
        let gateway = self.gateway();
        let hosts: Vec<Ipv4Addr> = self.cidr.hosts().collect();
        let start = last.and_then(|l| hosts.iter().position(|a| *a == l)).map_or(0, |i| i + 1);
        (0..hosts.len()).map(|i| hosts[(start + i) % hosts.len()]).find(|a| *a != gateway && !used.contains(a))
    }

    /// Wires the network namespace of the sandbox whose init is `pid`: `eth0` at `ip`.
    pub async fn attach(&self, pid: i64, container_id: &str, ip: Ipv4Addr) -> Result<(), RuntimeError> {
        let short = &container_id[..container_id.len().min(12)];
        let action = || format!("wiring the network of container {short}");
        let veth = format!("cc{short}");
        if link_exists(&veth) {
            let _ = run("ip", &["link", "del", &veth], None).await; // a pair left from before
        }
        let pid = pid.to_string();
        run("ip", &["link", "add", &veth, "type", "veth", "peer", "name", "eth0", "netns", &pid], None).await.map_err(|e| failed(action(), e))?;
        // the node's route to the pod, from the gateway address (what the pod sees of its node)
        let gateway = self.gateway();
        let host = format!("link set {veth} up\nroute replace {ip}/32 dev {veth} src {gateway}\n");
        run("ip", &["-b", "-"], Some(&host)).await.map_err(|e| failed(action(), e))?;
        if self.nat {
            super::fastpath::add_pod_link(&veth);
        }
        // everything the pod sends goes to the gateway, whose address the node's end answers ARP
        // for (a local address); a Service's DNAT back to the pod itself is routed back out
        let inside = format!("link set lo up\nlink set eth0 up\naddr add {ip}/32 dev eth0\nroute add {gateway} dev eth0 scope link\nroute add default via {gateway} dev eth0\n");
        run("nsenter", &["-t", &pid, "-n", "ip", "-b", "-"], Some(&inside)).await.map_err(|e| failed(action(), e))
    }

    /// Deletes the bridge (tests).
    #[cfg(test)]
    pub async fn remove(&self) {
        let _ = run("ip", &["link", "del", &self.bridge], None).await;
    }
}

/// How many rules at the head of `chain` jump to the proxy's chains (`CLUSTERCTL-SVC-*`,
/// `CLUSTERCTL-POLICY`, `CLUSTERCTL-SERVICES`).
async fn leading_proxy_jumps(table: &str, chain: &str) -> usize {
    let out = tokio::process::Command::new("iptables").args(["-w", "5", "-t", table, "-S", chain]).output().await;
    let Ok(out) = out else { return 0 };
    String::from_utf8_lossy(&out.stdout)
        .lines()
        .filter(|l| l.starts_with("-A "))
        .take_while(|l| l.split_whitespace().skip_while(|w| *w != "-j").nth(1).is_some_and(|t| t.starts_with("CLUSTERCTL-SVC") || t == "CLUSTERCTL-POLICY" || t == "CLUSTERCTL-SERVICES"))
        .count()
}

/// A pod's `/etc/resolv.conf`, as kubelet writes it: for `ClusterFirst` the node's cluster DNS
/// (`cluster_dns`, the pod bridge's gateway) then the pod's own name servers, the pod's search
/// domains then the node's; for `Default` the node's file with the pod's additions; for `None`
/// only the pod's. At most 3 name servers and 32 search domains (what resolvers read).
pub fn resolv_conf(dns: &super::PodDns, cluster_dns: Ipv4Addr, node_resolv: &str) -> String {
    use super::DnsPolicy;
    let node_field = |key: &str| -> Vec<String> {
        node_resolv
            .lines()
            .filter_map(|l| l.trim().strip_prefix(key).filter(|rest| rest.starts_with([' ', '\t'])))
            .flat_map(|rest| rest.split_whitespace().map(str::to_string).collect::<Vec<_>>())
            .collect()
    };
    let (mut nameservers, mut searches, mut options) = match dns.policy {
        DnsPolicy::ClusterFirst => (vec![cluster_dns.to_string()], Vec::new(), Vec::new()),
        DnsPolicy::Default => (node_field("nameserver"), Vec::new(), node_field("options")),
        DnsPolicy::None => (Vec::new(), Vec::new(), Vec::new()),
    };
    nameservers.extend(dns.nameservers.iter().cloned());
    searches.extend(dns.searches.iter().cloned());
    if dns.policy != DnsPolicy::None {
        searches.extend(node_field("search"));
    }
    options.extend(dns.options.iter().cloned());
    let mut seen = HashSet::new();
    nameservers.retain(|n| seen.insert(n.clone()));
    nameservers.truncate(3);
    let mut seen = HashSet::new();
    searches.retain(|s| seen.insert(s.clone()));
    searches.truncate(32);
    let mut out = String::new();
    if !searches.is_empty() {
        out.push_str(&format!("search {}\n", searches.join(" ")));
    }
    for n in &nameservers {
        out.push_str(&format!("nameserver {n}\n"));
    }
    if !options.is_empty() {
        out.push_str(&format!("options {}\n", options.join(" ")));
    }
    out
}

/// A pod's `/etc/hosts`, as kubelet manages it: loopback names, the pod's own names and then its
/// `hostAliases` under kubelet's comment.
pub fn hosts_file(ip: Ipv4Addr, hostname: &str, aliases: &[String], extra: &[(String, Vec<String>)]) -> String {
    let mut names = aliases.to_vec();
    if !hostname.is_empty() {
        names.push(hostname.to_string());
    }
    let mut out = String::from("# Kubernetes-managed hosts file.\n127.0.0.1\tlocalhost\n::1\tlocalhost ip6-localhost ip6-loopback\nfe00::0\tip6-localnet\nfe00::0\tip6-mcastprefix\nfe00::1\tip6-allnodes\nfe00::2\tip6-allrouters\n");
    if !names.is_empty() {
        out.push_str(&format!("{ip}\t{}\n", names.join("\t")));
    }
    if !extra.is_empty() {
        out.push_str("\n# Entries added by HostAliases.\n");
        for (alias_ip, names) in extra {
            out.push_str(&format!("{alias_ip}\t{}\n", names.join("\t")));
        }
    }
    out
}

/// A port published on the node, bound and not yet forwarding.
pub struct Bound {
    pub container_port: u16,
    pub host_port: u16,
    listener: std::net::TcpListener,
}

/// The agent's forwarders of published ports, by container id.
#[derive(Default)]
pub struct HostPorts {
    open: Mutex<HashMap<String, Vec<AbortOnDrop>>>,
}

impl std::fmt::Debug for HostPorts {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let open = self.open.lock().unwrap_or_else(|e| e.into_inner());
        f.debug_struct("HostPorts").field("containers", &open.keys().collect::<Vec<_>>()).finish()
    }
}

impl HostPorts {
    /// Binds every port on all of the node's addresses (its `host_port`; 0 in tests: one the kernel picks).
    pub fn bind(ports: &[PortSpec]) -> Result<Vec<Bound>, RuntimeError> {
        ports
            .iter()
            .map(|p| {
                let wanted = p.host_port;
                let listener = std::net::TcpListener::bind(SocketAddr::from(([0, 0, 0, 0], wanted))).map_err(|e| {
                    failed(format!("publishing container port {}", p.container_port), format!("host port {wanted}: {e}"))
                })?;
                let host_port = listener.local_addr().map_err(|e| failed("publishing a port", e.to_string()))?.port();
                Ok(Bound { container_port: p.container_port, host_port, listener })
            })
            .collect()
    }

    /// Forwards each bound port to `ip` (the container's address) from now on.
    pub fn serve(&self, container_id: &str, ip: Ipv4Addr, bound: Vec<Bound>) -> Result<(), RuntimeError> {
        let mut tasks = Vec::new();
        for b in bound {
            b.listener.set_nonblocking(true).map_err(|e| failed("publishing a port", e.to_string()))?;
            let listener = TcpListener::from_std(b.listener).map_err(|e| failed("publishing a port", e.to_string()))?;
            let target = SocketAddr::from((ip, b.container_port));
            tasks.push(AbortOnDrop(tokio::spawn(forward(listener, target))));
        }
        self.open.lock().unwrap_or_else(|e| e.into_inner()).insert(container_id.to_string(), tasks);
        Ok(())
    }

    pub fn is_open(&self, container_id: &str) -> bool {
        self.open.lock().unwrap_or_else(|e| e.into_inner()).contains_key(container_id)
    }

    /// Stops forwarding the ports of a container.
    pub fn close(&self, container_id: &str) {
        self.open.lock().unwrap_or_else(|e| e.into_inner()).remove(container_id);
    }

    /// Stops forwarding for every container not in `running`.
    pub fn retain(&self, running: &HashSet<String>) {
        self.open.lock().unwrap_or_else(|e| e.into_inner()).retain(|id, _| running.contains(id));
    }
}

async fn forward(listener: TcpListener, target: SocketAddr) {
    loop {
        let Ok((mut inbound, _)) = listener.accept().await else {
            tokio::time::sleep(std::time::Duration::from_millis(50)).await; // out of descriptors, say
            continue;
        };
        tokio::spawn(async move {
            if let Ok(mut outbound) = TcpStream::connect(target).await {
                let _ = inbound.set_nodelay(true);
                let _ = outbound.set_nodelay(true);
                let _ = tokio::io::copy_bidirectional(&mut inbound, &mut outbound).await;
            }
        });
    }
}

/// The label value that records published ports: `80:32768,443:32769`.
pub fn ports_label(bound: &[Bound]) -> String {
    bound.iter().map(|b| format!("{}:{}", b.container_port, b.host_port)).collect::<Vec<_>>().join(",")
}

/// Container port -> host port, from [`ports_label`]'s format.
pub fn parse_ports_label(value: &str) -> Vec<(u16, u16)> {
    value
        .split(',')
        .filter_map(|pair| {
            let (c, h) = pair.split_once(':')?;
            Some((c.trim().parse().ok()?, h.trim().parse().ok()?))
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn resolv_conf_follows_the_dns_policy_as_kubelet_writes_it() {
        use super::super::{DnsPolicy, PodDns};
        let node = "nameserver 127.0.0.11\nsearch ec2.internal\noptions edns0\n";
        let gw: Ipv4Addr = "100.64.3.1".parse().unwrap();
        let cluster = PodDns { policy: DnsPolicy::ClusterFirst, searches: vec!["shop.svc.cluster.local".into(), "svc.cluster.local".into(), "cluster.local".into()], options: vec!["ndots:5".into()], ..Default::default() };
        assert_eq!(resolv_conf(&cluster, gw, node), "search shop.svc.cluster.local svc.cluster.local cluster.local ec2.internal\nnameserver 100.64.3.1\noptions ndots:5\n");
        let default = PodDns { policy: DnsPolicy::Default, ..Default::default() };
        assert_eq!(resolv_conf(&default, gw, node), "search ec2.internal\nnameserver 127.0.0.11\noptions edns0\n");
        let none = PodDns { policy: DnsPolicy::None, nameservers: vec!["1.1.1.1".into()], searches: vec!["example.com".into()], options: vec![] };
        assert_eq!(resolv_conf(&none, gw, node), "search example.com\nnameserver 1.1.1.1\n");
        let hosts = hosts_file("100.64.3.7".parse().unwrap(), "web-0", &["web-0.web.shop.svc.cluster.local".into()], &[("10.1.2.3".into(), vec!["db.local".into(), "db".into()])]);
        assert!(hosts.contains("127.0.0.1\tlocalhost\n") && hosts.ends_with("100.64.3.7\tweb-0.web.shop.svc.cluster.local\tweb-0\n\n# Entries added by HostAliases.\n10.1.2.3\tdb.local\tdb\n"), "{hosts}");
    }

    #[test]
    fn addresses_go_round_the_range_skipping_the_gateway_and_those_in_use() {
        let net = PodNetwork::without_nat("cctest", "100.64.7.0/29".parse().unwrap());
        let a = |o: u8| Ipv4Addr::new(100, 64, 7, o);
        assert_eq!(net.gateway(), a(1));
        let mut used = HashSet::new();
        assert_eq!(net.free_address(&used, None), Some(a(2)));
        assert_eq!(net.free_address(&used, Some(a(2))), Some(a(3)), "not the one just freed");
        used.insert(a(4));
        assert_eq!(net.free_address(&used, Some(a(3))), Some(a(5)));
        assert_eq!(net.free_address(&used, Some(a(6))), Some(a(2)), "round to the start, past the gateway");
        used.extend([2, 3, 5, 6].map(a));
        assert_eq!(net.free_address(&used, Some(a(2))), None, "a /29 has six hosts, one of them the gateway");
    }

    #[test]
    fn the_ports_label_round_trips() {
        assert_eq!(parse_ports_label("80:32768,443:40000"), vec![(80, 32768), (443, 40000)]);
        assert_eq!(parse_ports_label(""), vec![]);
        assert_eq!(parse_ports_label("80:x,8080:31000"), vec![(8080, 31000)]);
    }

    #[tokio::test]
    async fn a_bound_port_forwards_connections_until_closed() {
        use tokio::io::{AsyncReadExt, AsyncWriteExt};
        let backend = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let backend_port = backend.local_addr().unwrap().port();
        tokio::spawn(async move {
            while let Ok((mut s, _)) = backend.accept().await {
                let _ = s.write_all(b"hello").await;
            }
        });
        let bound = HostPorts::bind(&[PortSpec { container_port: backend_port, host_port: 0 }]).unwrap();
        let host_port = bound[0].host_port;
        assert_ne!(host_port, 0);
        // the port is held: nobody else can bind it
        assert!(std::net::TcpListener::bind(("0.0.0.0", host_port)).is_err());
        let ports = HostPorts::default();
        ports.serve("c1", Ipv4Addr::LOCALHOST, bound).unwrap();
        let mut s = TcpStream::connect(("127.0.0.1", host_port)).await.unwrap();
        let mut got = String::new();
        s.read_to_string(&mut got).await.unwrap();
        assert_eq!(got, "hello");
        ports.close("c1");
        tokio::task::yield_now().await;
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(5);
        while TcpStream::connect(("127.0.0.1", host_port)).await.is_ok() {
            assert!(std::time::Instant::now() < deadline, "the port still answers after close");
            tokio::time::sleep(std::time::Duration::from_millis(20)).await;
        }
    }
}
