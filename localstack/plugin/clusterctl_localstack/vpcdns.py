"""The VPC resolver: the name server a VPC's instances are given, as AWS gives them the Route 53
Resolver (the "AmazonProvidedDNS" at the VPC's base address + 2).

Here it listens on the VPC network's gateway (the address the host has on that network, where the
load balancers listen too), port 53, UDP and TCP, and every node's ``/etc/resolv.conf`` names it
(``ec2_realizer._write_meta``). It answers what AWS's resolver answers from the VPC itself: the
instances' private DNS names, ``ip-10-1-0-5.ec2.internal`` in us-east-1 and
``ip-10-1-0-5.<region>.compute.internal`` elsewhere, for every address of the VPC's CIDR (as AWS does,
whether or not an instance holds it). Unknown names in those domains are ``NXDOMAIN``.

One public name is answered too, standing in for what AWS's public DNS says: the ECR registry
endpoint of any account in any region, ``<12 digits>.dkr.ecr.<region>.amazonaws.com`` (case does not
matter), resolves to docker0's address (``settings.docker_bridge_addr``, read when the VPC's resolver
starts), where the harness's registry stands in for ECR (``localstack/registry/up``, port 443: TLS
for those names from the harness registry CA, basic auth with ECR's GetAuthorizationToken password
as moto makes it). No VPC endpoint or private zone is modelled: it is the same address everywhere.
Without docker0 those names are ``REFUSED`` like the rest.

It does not recurse: every other name is ``REFUSED`` at once, since nothing here may query the
internet. Other record types (AAAA, ...) of a name it knows are an empty answer.

This is what a cluster's DNS forwards to for names outside the cluster, so that forwarding is tested
end to end against a resolver that is not the cluster's own.
"""

from __future__ import annotations

import asyncio
import ipaddress
import logging
import re
import struct
import threading
from dataclasses import dataclass
from typing import Optional

from . import aioloop, settings

LOG = logging.getLogger(__name__)

TTL = 60
TYPE_A = 1
CLASS_IN = 1
NOERROR, FORMERR, NXDOMAIN, NOTIMP, REFUSED = 0, 1, 3, 4, 5


# ECR's registry endpoint: <registry id = account>.dkr.ecr.<region>.amazonaws.com (lower case here)
ECR_NAME = re.compile(r"^[0-9]{12}\.dkr\.ecr\.[a-z]{2}(-[a-z]+)+-[0-9]+\.amazonaws\.com$")


def domain_of(region: str) -> str:
    """The private DNS domain of a region's instances (moto's ``private_dns_name`` uses the same)."""
    return "ec2.internal" if region == "us-east-1" else f"{region}.compute.internal"


@dataclass(frozen=True)
class Zone:
    cidr: ipaddress.IPv4Network
    domain: str  # without the trailing dot, lower case
    ecr: Optional[ipaddress.IPv4Address] = None  # where ECR registry names point (docker0's address)

    def lookup(self, name: str) -> tuple[int, Optional[ipaddress.IPv4Address]]:
        """The response code and, for a served name, its address."""
        name = name.rstrip(".").lower()
        if self.ecr is not None and ECR_NAME.match(name):
            return NOERROR, self.ecr
        if name != self.domain and not name.endswith("." + self.domain):
            return REFUSED, None
        host = name[: -len(self.domain)].rstrip(".")
        if host.startswith("ip-") and "." not in host:
            try:
                addr = ipaddress.IPv4Address(host[3:].replace("-", "."))
            except ValueError:
                return NXDOMAIN, None
            if addr in self.cidr:
                return NOERROR, addr
        return NXDOMAIN, None


def parse_question(msg: bytes) -> Optional[tuple[int, int, str, int, int, bytes]]:
    """(id, flags, name, qtype, qclass, the question's bytes) of a query with one question."""
    if len(msg) < 12:
        return None
    qid, flags, qdcount = struct.unpack("!HHH", msg[:6])
    if flags & 0x8000 or qdcount != 1:
        return None
    labels, i = [], 12
    while True:
        if i >= len(msg):
            return None
        n = msg[i]
        if n == 0:
            i += 1
            break
        if n & 0xC0 or i + 1 + n > len(msg):  # no compression in a question
            return None
        labels.append(msg[i + 1 : i + 1 + n].decode("ascii", "replace"))
        i += 1 + n
    if i + 4 > len(msg):
        return None
    qtype, qclass = struct.unpack("!HH", msg[i : i + 4])
    return qid, flags, ".".join(labels) + ".", qtype, qclass, msg[12 : i + 4]


def respond(zone: Zone, msg: bytes) -> Optional[bytes]:
    """The reply to one query (None: not worth a reply, e.g. a response or garbage shorter than a header)."""
    q = parse_question(msg)
    if q is None:
        if len(msg) < 12:
            return None
        qid, flags = struct.unpack("!HH", msg[:4])
        if flags & 0x8000:
            return None
        return struct.pack("!HHHHHH", qid, 0x8000 | (flags & 0x7900) | FORMERR, 0, 0, 0, 0)
    qid, flags, name, qtype, qclass, question = q
    opcode = (flags >> 11) & 0xF
    rcode, addr = (NOTIMP, None) if opcode != 0 else zone.lookup(name)
    answers = b""
    if rcode == NOERROR and addr is not None and qtype == TYPE_A and qclass == CLASS_IN:
        answers = struct.pack("!HHHIH", 0xC00C, TYPE_A, CLASS_IN, TTL, 4) + addr.packed
    # authoritative for the VPC's own names; an ECR name's answer is a recursive resolver's (AWS's
    # public DNS is the authority for it)
    own = rcode in (NOERROR, NXDOMAIN) and not ECR_NAME.match(name.rstrip(".").lower())
    authoritative = 0x0400 if own else 0
    reply_flags = 0x8000 | (flags & 0x7900) | authoritative | rcode  # QR, opcode and RD copied; RA clear
    return struct.pack("!HHHHHH", qid, reply_flags, 1, 1 if answers else 0, 0, 0) + question + answers


class _Udp(asyncio.DatagramProtocol):
    def __init__(self, zone: Zone) -> None:
        self.zone = zone
        self.transport: Optional[asyncio.DatagramTransport] = None

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]

    def datagram_received(self, data: bytes, addr: tuple[str, int]) -> None:
        reply = respond(self.zone, data)
        if reply is not None and self.transport is not None:
            self.transport.sendto(reply, addr)


async def _tcp(zone: Zone, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
    try:
        while True:
            (n,) = struct.unpack("!H", await asyncio.wait_for(reader.readexactly(2), 10))
            reply = respond(zone, await asyncio.wait_for(reader.readexactly(n), 10))
            if reply is None:
                break
            writer.write(struct.pack("!H", len(reply)) + reply)
            await writer.drain()
    except (asyncio.IncompleteReadError, asyncio.TimeoutError, ConnectionError):
        pass
    finally:
        writer.close()


@dataclass
class _Server:
    zone: Zone
    udp: asyncio.DatagramTransport
    tcp: asyncio.AbstractServer


class VpcResolver:
    """One server per VPC network, keyed by the network's name."""

    def __init__(self) -> None:
        self.lock = threading.Lock()
        self.servers: dict[str, _Server] = {}

    def ensure(self, name: str, gateway: str, cidr: str, region: str) -> None:
        with self.lock:
            if name in self.servers:
                return
            ecr = settings.docker_bridge_addr()
            zone = Zone(ipaddress.IPv4Network(cidr, strict=False), domain_of(region),
                        ipaddress.IPv4Address(ecr) if ecr else None)

            async def start() -> _Server:
                lp = asyncio.get_running_loop()
                udp, _ = await lp.create_datagram_endpoint(lambda: _Udp(zone), local_addr=(gateway, 53), reuse_port=False)
                try:
                    tcp = await asyncio.start_server(lambda r, w: _tcp(zone, r, w), gateway, 53, reuse_address=True)
                except OSError:
                    udp.close()
                    raise
                return _Server(zone, udp, tcp)

            try:
                self.servers[name] = aioloop.run(start())
                LOG.info("VPC resolver for %s on %s:53 (%s, %s; ECR registry names -> %s)", name, gateway, cidr,
                         zone.domain, zone.ecr or "refused: no docker0")
            except OSError as e:  # the nodes then time out on names outside the cluster: say why
                LOG.warning("no VPC resolver for %s: cannot listen on %s:53: %s", name, gateway, e)

    def drop(self, name: str) -> None:
        with self.lock:
            server = self.servers.pop(name, None)
        if server is None:
            return

        async def stop() -> None:
            server.udp.close()
            server.tcp.close()  # (open connections end at their next read's timeout)

        try:
            aioloop.run(stop())
        except Exception:  # noqa: BLE001 (a closed socket is all that matters)
            LOG.exception("stopping the VPC resolver for %s", name)

    def describe(self) -> dict:
        with self.lock:
            return {name: {"cidr": str(s.zone.cidr), "domain": s.zone.domain, "ecr": str(s.zone.ecr) if s.zone.ecr else None}
                    for name, s in self.servers.items()}


_RESOLVER = VpcResolver()


def resolver() -> VpcResolver:
    return _RESOLVER
