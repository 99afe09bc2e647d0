"""A node container's address on its VPC network, wired by the realizer instead of by Docker.

Docker attaches a container to a network from a prestart hook that re-executes the whole
``dockerd`` binary (``libnetwork-setkey``): about 0.35 s of CPU per container start on this
machine, the largest single cost of booting a node (more than its systemd). So node containers
are created with ``NetworkDisabled`` (a network namespace with only loopback, no hook), and
``plumb`` gives that namespace what Docker would have: a veth pair whose host end is a port of the
VPC network's bridge and whose other end is the node's ``eth0`` with the instance's private IP and
the VPC gateway as default route (ICMP redirects refused: see routes.py). As AWS's DHCP does, the
address has its **subnet's** prefix, not the VPC's: a packet to another subnet (another zone's
node) goes to the gateway, the VPC router on the host, as on AWS, where it would otherwise be
bridged past the router that a pod route's packets cross (the gateway, outside a node's subnet, is
reached by a link route of its own). Docker's bridge rules
(forwarding within the bridge, isolation from other networks) apply to it as to any port of that
bridge. The namespace, and with it the
pair, goes away when the container stops; every (re)start plumbs again.

Needs root on the host (``ip`` from iproute2, ``nsenter`` from util-linux), like dockerd itself.
"""

from __future__ import annotations

import ipaddress
import os
import subprocess

from .dockercli import DockerError


def host_end(iid: str) -> str:
    """The host end's interface name (15 characters at most): ``vn`` + the id's last 12 digits."""
    return "vn" + iid.removeprefix("i-")[-12:]


def bridge_of(network_id: str) -> str:
    """The Linux bridge of a Docker bridge network created without a bridge name option."""
    return "br-" + network_id[:12]


def mac_of(ip: str) -> str:
    """eth0's MAC address: 02:42 and the four bytes of the IP, as Docker gives its containers. The
    same after every restart, so that the neighbour entries of the host (the VPC router forwards to
    instances) and of other nodes stay right; a random one would leave them stale for seconds."""
    return "02:42:" + ":".join(f"{b:02x}" for b in ipaddress.ip_address(ip).packed)


def _ip(args: list[str], stdin: str | None = None) -> None:
    p = subprocess.run(args, input=stdin.encode() if stdin else None, capture_output=True, timeout=20, check=False)
    if p.returncode != 0:
        raise DockerError(args, p.returncode, p.stderr.decode(errors="replace"))


def plumb(pid: int, iid: str, ip: str, cidr: str, gateway: str, bridge: str) -> None:
    """Wires the network namespace of process PID (a node container's init) to BRIDGE as
    ``eth0`` at IP/prefix of CIDR (the instance's subnet) with GATEWAY as default route."""
    veth = host_end(iid)
    if os.path.exists(f"/sys/class/net/{veth}"):  # the previous namespace's pair, not yet reaped
        subprocess.run(["ip", "link", "del", veth], capture_output=True, timeout=20, check=False)
    subnet = ipaddress.ip_network(cidr, strict=False)
    to_gateway = "" if ipaddress.ip_address(gateway) in subnet else f"route add {gateway} dev eth0 scope link\n"
    _ip(["ip", "link", "add", veth, "type", "veth", "peer", "name", "eth0", "address", mac_of(ip), "netns", str(pid)])
    _ip(["ip", "link", "set", veth, "master", bridge, "up"])
    # ICMP redirects refused: the VPC router (routes.py) forwards to instances on the same bridge,
    # and a node that took the host's redirect would bypass the route table from then on
    _ip(["nsenter", "-t", str(pid), "-n", "sh", "-c",
         "ip -b - && for c in all eth0; do echo 0 >/proc/sys/net/ipv4/conf/$c/accept_redirects; done"], stdin=(
        "link set lo up\n"
        "link set eth0 up\n"
        f"addr add {ip}/{subnet.prefixlen} dev eth0\n"
        f"{to_gateway}"
        f"route add default via {gateway}\n"
    ))
