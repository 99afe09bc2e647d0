"""The instance metadata service (IMDS) at 169.254.169.254, port 80, as AWS gives every instance.

Each VPC network's bridge carries 169.254.169.254/32 (``ensure``; the address goes with the bridge),
so a node's packets to it, sent to its default gateway, are delivered to this host, where one
server answers. The caller is the instance whose private IP is the packet's source (VPC networks
never overlap here); a pod's request leaves its node masqueraded to the node's address, as on AWS.

What AWS does and this does too:

- IMDSv2: ``PUT /latest/api/token`` with ``X-aws-ec2-metadata-token-ttl-seconds`` (1-21600) gives a
  token for that instance and that long; a request with ``X-Forwarded-For`` gets none (403). A
  ``GET`` with a valid token is served; with an invalid or expired one it is 401; without one it is
  401 when the instance's ``HttpTokens`` is ``required``, served when ``optional``.
- The token's response leaves with IP TTL = the instance's ``HttpPutResponseHopLimit``: a process
  on the node gets it, but a container behind the node's bridge is one routed hop further, where the
  node's kernel drops it. With hop limit 1 and tokens required, pods cannot read the instance
  role's credentials (``GET`` answers carry the default TTL, so a pod sees the 401 and nothing
  more).
- ``HttpEndpoint: disabled``: the connection is closed without an answer.
- ``/latest/meta-data/`` (instance-id, ami-id, instance-type, local-ipv4, local-hostname, hostname,
  mac, placement/availability-zone, placement/region, iam/info,
  iam/security-credentials/<role>), ``/latest/user-data``, and
  ``/latest/dynamic/instance-identity/document`` with its ``signature``: base64 of an RSA-SHA256
  signature by the harness's identity key, whose self-signed certificate (``identity_cert_pem``,
  ``<state>/imds/identity.crt``) stands in for the certificate AWS publishes per region.

The role's credentials are LocalStack's test credentials with a session token and an expiry (the
harness does not enforce IAM); what is tested is who can read them.
"""

from __future__ import annotations

import asyncio
import base64
import datetime
import hashlib
import json
import logging
import secrets
import socket
import subprocess
import threading
import time
from dataclasses import dataclass
from typing import Any, Callable, Optional

from . import aioloop, settings

LOG = logging.getLogger(__name__)

ADDRESS = "169.254.169.254"
PORT = 80
MAX_TOKEN_TTL = 21600
READ_TIMEOUT = 10.0


@dataclass
class Caller:
    """What the service knows of the instance behind a source address."""

    iid: str
    account: str
    region: str
    az: str
    ip: str
    instance_type: str
    ami: str
    http_tokens: str  # required | optional
    hop_limit: int
    endpoint_enabled: bool
    role: Optional[str]
    launched: str  # ISO 8601, UTC
    user_data: Optional[bytes]


def caller_of(node: Any) -> Caller:
    """The Caller of a realizer Node (its moto instance's current metadata options)."""
    inst = node.instance
    opts = getattr(inst, "metadata_options", None)
    ud_path = settings.nodes_dir() / node.iid / "user-data"
    launched = getattr(inst, "launch_time", "") or ""
    return Caller(
        iid=node.iid, account=node.account, region=node.region, az=str(getattr(inst, "placement", "") or ""),
        ip=node.ip, instance_type=str(getattr(inst, "instance_type", "") or ""), ami=node.ami,
        http_tokens=getattr(opts, "http_tokens", "optional") or "optional",
        hop_limit=int(getattr(opts, "http_put_response_hop_limit", 1) or 1),
        endpoint_enabled=(getattr(opts, "http_endpoint", "enabled") or "enabled") == "enabled",
        role=_role_of(inst),
        launched=str(launched), user_data=ud_path.read_bytes() if ud_path.exists() else None,
    )


def _role_of(inst: Any) -> Optional[str]:
    """The role of the instance profile associated with moto's instance INST, if any."""
    try:
        assoc = inst.ec2_backend.iam_instance_profile_associations.get(inst.id)
        roles = assoc.iam_instance_profile.roles if assoc is not None else []
        return roles[0].name if roles else None
    except AttributeError:  # a moto without associations: no role
        return None


class IdentityKey:
    """The harness's instance identity signing key and certificate (made once per state folder)."""

    def __init__(self) -> None:
        from cryptography import x509
        from cryptography.hazmat.primitives import hashes, serialization
        from cryptography.hazmat.primitives.asymmetric import rsa
        from cryptography.x509.oid import NameOID

        d = settings.state_dir() / "imds"
        d.mkdir(parents=True, exist_ok=True)
        key_path, cert_path = d / "identity.key", d / "identity.crt"
        if key_path.exists() and cert_path.exists():
            self.key = serialization.load_pem_private_key(key_path.read_bytes(), password=None)
            self.cert_pem = cert_path.read_text()
            return
        self.key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
        name = x509.Name([x509.NameAttribute(NameOID.ORGANIZATION_NAME, "clusterctl harness"), x509.NameAttribute(NameOID.COMMON_NAME, "instance identity")])
        now = datetime.datetime.now(datetime.timezone.utc)
        cert = (x509.CertificateBuilder().subject_name(name).issuer_name(name).public_key(self.key.public_key())
                .serial_number(x509.random_serial_number()).not_valid_before(now - datetime.timedelta(days=1))
                .not_valid_after(now + datetime.timedelta(days=3650)).sign(self.key, hashes.SHA256()))
        key_path.touch(mode=0o600)
        key_path.write_bytes(self.key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()))
        self.cert_pem = cert.public_bytes(serialization.Encoding.PEM).decode()
        cert_path.write_text(self.cert_pem)

    def sign(self, data: bytes) -> str:
        from cryptography.hazmat.primitives import hashes
        from cryptography.hazmat.primitives.asymmetric import padding

        return base64.b64encode(self.key.sign(data, padding.PKCS1v15(), hashes.SHA256())).decode()


def identity_document(c: Caller) -> bytes:
    """The instance identity document, as AWS words it."""
    doc = {
        "accountId": c.account, "architecture": "x86_64", "availabilityZone": c.az, "billingProducts": None,
        "devpayProductCodes": None, "marketplaceProductCodes": None, "imageId": c.ami, "instanceId": c.iid,
        "instanceType": c.instance_type, "kernelId": None, "pendingTime": c.launched, "privateIp": c.ip,
        "ramdiskId": None, "region": c.region, "version": "2017-09-30",
    }
    return json.dumps(doc, indent=2).encode()


def role_credentials(role: str) -> dict:
    now = datetime.datetime.now(datetime.timezone.utc).replace(microsecond=0)
    return {
        "Code": "Success", "LastUpdated": now.isoformat().replace("+00:00", "Z"), "Type": "AWS-HMAC",
        "AccessKeyId": "test", "SecretAccessKey": "test", "Token": "harness-" + hashlib.sha256(role.encode()).hexdigest()[:32],
        "Expiration": (now + datetime.timedelta(hours=6)).isoformat().replace("+00:00", "Z"),
    }


class Tokens:
    """Issued session tokens: token -> (instance id, expiry on the monotonic clock)."""

    def __init__(self) -> None:
        self.lock = threading.Lock()
        self.issued: dict[str, tuple[str, float]] = {}

    def issue(self, iid: str, ttl: int) -> str:
        token = base64.urlsafe_b64encode(secrets.token_bytes(42)).decode()
        now = time.monotonic()
        with self.lock:
            self.issued = {t: v for t, v in self.issued.items() if v[1] > now}
            self.issued[token] = (iid, now + ttl)
        return token

    def valid(self, token: str, iid: str) -> bool:
        with self.lock:
            v = self.issued.get(token)
        return v is not None and v[0] == iid and v[1] > time.monotonic()


def answer(c: Caller, key: IdentityKey, tokens: Tokens, method: str, path: str, headers: dict[str, str]) -> tuple[int, str, bytes, bool]:
    """(status, content type, body, whether the hop limit applies) for one request of instance C."""
    text = "text/plain"
    if path == "/latest/api/token":
        if method != "PUT":
            return 405, text, b"", False
        if "x-forwarded-for" in headers:
            return 403, text, b"", False
        try:
            ttl = int(headers.get("x-aws-ec2-metadata-token-ttl-seconds", ""))
        except ValueError:
            return 400, text, b"", False
        if not 1 <= ttl <= MAX_TOKEN_TTL:
            return 400, text, b"", False
        return 200, text, tokens.issue(c.iid, ttl).encode(), True
    if method not in ("GET", "HEAD"):
        return 405, text, b"", False
    token = headers.get("x-aws-ec2-metadata-token")
    if token is not None and not tokens.valid(token, c.iid):
        return 401, text, b"", False
    if token is None and c.http_tokens == "required":
        return 401, text, b"", False
    doc = identity_document(c)
    hostname = f"ip-{c.ip.replace('.', '-')}.{'ec2.internal' if c.region == 'us-east-1' else c.region + '.compute.internal'}"
    meta = {
        "instance-id": c.iid, "ami-id": c.ami, "instance-type": c.instance_type, "local-ipv4": c.ip,
        "local-hostname": hostname, "hostname": hostname, "mac": "02:42:" + ":".join(f"{int(b):02x}" for b in c.ip.split(".")),
        "placement/availability-zone": c.az, "placement/region": c.region,
    }
    if c.role:
        meta["iam/info"] = json.dumps({"Code": "Success", "InstanceProfileArn": f"arn:aws:iam::{c.account}:instance-profile/{c.role}"})
        meta["iam/security-credentials/"] = c.role
        meta[f"iam/security-credentials/{c.role}"] = json.dumps(role_credentials(c.role), indent=2)
    if path in ("/latest/meta-data", "/latest/meta-data/"):
        tops = sorted({k.split("/")[0] + ("/" if "/" in k else "") for k in meta})
        return 200, text, "\n".join(tops).encode(), False
    if path.startswith("/latest/meta-data/"):
        value = meta.get(path.removeprefix("/latest/meta-data/"))
        return (200, text, value.encode(), False) if value is not None else (404, text, b"", False)
    if path == "/latest/dynamic/instance-identity/document":
        return 200, text, doc, False
    if path == "/latest/dynamic/instance-identity/signature":
        return 200, text, key.sign(doc).encode(), False
    if path == "/latest/user-data" and c.user_data is not None:
        return 200, "application/octet-stream", c.user_data, False
    return 404, text, b"", False


REASONS = {200: "OK", 400: "Bad Request", 401: "Unauthorized", 403: "Forbidden", 404: "Not Found", 405: "Method Not Allowed"}


class MetadataService:
    """The one server; ``lookup`` gives the Caller of a source address (None: not an instance)."""

    def __init__(self) -> None:
        self.lock = threading.Lock()
        self.server: Optional[asyncio.AbstractServer] = None
        self.lookup: Callable[[str], Optional[Caller]] = lambda ip: None
        self.key: Optional[IdentityKey] = None
        self.tokens = Tokens()
        self.bridges: set[str] = set()
        self.served = 0

    def identity_key(self) -> IdentityKey:
        with self.lock:
            if self.key is None:
                self.key = IdentityKey()
            return self.key

    def ensure(self, bridge: str, lookup: Callable[[str], Optional[Caller]]) -> None:
        """Serves the instances on BRIDGE (idempotent)."""
        self.identity_key()
        with self.lock:
            self.lookup = lookup
            if self.server is None:
                try:
                    self.server = aioloop.run(self._start())
                    LOG.info("instance metadata service on %s:%d", ADDRESS, PORT)
                except OSError as e:
                    LOG.warning("no instance metadata service: cannot listen on %s:%d: %s", ADDRESS, PORT, e)
            if bridge not in self.bridges:
                p = subprocess.run(["ip", "addr", "replace", f"{ADDRESS}/32", "dev", bridge], capture_output=True, timeout=20, check=False)
                if p.returncode == 0:
                    self.bridges.add(bridge)
                else:
                    LOG.warning("cannot give %s the metadata address: %s", bridge, p.stderr.decode(errors="replace").strip())

    async def _start(self) -> asyncio.AbstractServer:
        sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.setsockopt(socket.IPPROTO_IP, 15, 1)  # IP_FREEBIND: listen before any bridge has the address
        sock.bind((ADDRESS, PORT))
        sock.setblocking(False)
        return await asyncio.start_server(self._serve, sock=sock)

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            peer = writer.get_extra_info("peername")
            caller = self.lookup(peer[0]) if peer else None
            if caller is None or not caller.endpoint_enabled or self.key is None:
                return
            head = await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), READ_TIMEOUT)
            lines = head.decode("latin-1").split("\r\n")
            parts = lines[0].split(" ")
            if len(parts) != 3:
                return
            method, target = parts[0], parts[1]
            headers = {}
            for line in lines[1:]:
                if ":" in line:
                    k, v = line.split(":", 1)
                    headers[k.strip().lower()] = v.strip()
            length = int(headers.get("content-length", "0") or 0)
            if length:
                await asyncio.wait_for(reader.readexactly(min(length, 65536)), READ_TIMEOUT)
            status, ctype, body, hop_limited = answer(caller, self.key, self.tokens, method, target.split("?")[0], headers)
            if hop_limited:
                writer.get_extra_info("socket").setsockopt(socket.IPPROTO_IP, socket.IP_TTL, caller.hop_limit)
            self.served += 1
            # A token's answer says its lifetime, as AWS's does (the SDKs refuse a token without it).
            ttl = headers.get("x-aws-ec2-metadata-token-ttl-seconds", "") if method == "PUT" and status == 200 else ""
            extra = f"X-aws-ec2-metadata-token-ttl-seconds: {ttl}\r\n" if ttl else ""
            out = (f"HTTP/1.1 {status} {REASONS.get(status, '')}\r\nContent-Type: {ctype}\r\nContent-Length: {len(body)}\r\n"
                   f"{extra}Connection: close\r\nServer: EC2ws\r\n\r\n").encode()
            writer.write(out + (body if method != "HEAD" else b""))
            await writer.drain()
        except (asyncio.IncompleteReadError, asyncio.LimitOverrunError, asyncio.TimeoutError, ConnectionError, ValueError):
            pass
        finally:
            writer.close()

    def describe(self) -> dict:
        return {"address": f"{ADDRESS}:{PORT}", "listening": self.server is not None, "bridges": sorted(self.bridges), "served": self.served}


_SERVICE = MetadataService()


def service() -> MetadataService:
    return _SERVICE
