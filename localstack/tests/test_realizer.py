"""The EC2 / NLB realizer (issue 3): instances are machines reachable over SSH, network load
balancers forward real traffic to healthy targets, faults can be injected.

Every address dialled here is one the realized API handed out, checked first to be a container or
a network gateway of this harness (``assert_ours``). Tests skip when the realizer is off.
"""

from __future__ import annotations

import base64
import collections
import ipaddress
import json
import pathlib
import re
import socket
import subprocess
import time
import urllib.error
import urllib.request
import uuid

import botocore.exceptions
import pytest
from botocore.handlers import decode_console_output
from conftest import (
    ENDPOINT,
    OPENER,
    REPO,
    STATE,
    Network,
    _client,
    harness_json,
    measure,
    realizer_state,
)

pytestmark = pytest.mark.usefixtures("realized")

SSH_OPTS = [
    "-F", "/dev/null", "-o", "BatchMode=yes", "-o", "StrictHostKeyChecking=yes", "-o", "IdentitiesOnly=yes",
    "-o", "ConnectTimeout=5", "-o", "LogLevel=ERROR", "-o", "PasswordAuthentication=no",
]


# ------------------------------------------------------------------------------------ helpers
def assert_ours(ip: str) -> None:
    """Network rule: only ever dial containers and gateways this harness made."""
    state = realizer_state()
    ours = {n["ip"] for n in state["nodes"].values()} | {n["gateway"] for n in state["networks"].values()}
    assert ip in ours, f"{ip} is not an address of this harness ({sorted(ours)})"


def docker(*args: str, check: bool = True) -> subprocess.CompletedProcess:
    return subprocess.run(["docker", *args], capture_output=True, text=True, check=check)


def container_exists(name: str) -> bool:
    return docker("inspect", name, check=False).returncode == 0


def host_keys(ec2, iid: str, timeout: float = 30) -> list[str]:
    """'type base64' of each host key in the last complete host key block of the console."""
    deadline = time.monotonic() + timeout
    while True:
        out = ec2.get_console_output(InstanceId=iid).get("Output", "")  # boto3 decodes the base64
        blocks = re.findall(r"-----BEGIN SSH HOST KEY KEYS-----\n(.*?)\n-----END SSH HOST KEY KEYS-----", out, re.S)
        if blocks:
            return [" ".join(line.split()[:2]) for line in blocks[-1].splitlines() if line.strip()]
        assert time.monotonic() < deadline, f"no host key block on the console of {iid}:\n{out[-2000:]}"
        time.sleep(0.5)


class Ssh:
    """The system ssh client, pinned to the host keys the console printed."""

    def __init__(self, key, tmp_path, ec2, iid: str, ip: str):
        assert_ours(ip)
        self.key, self.ip = key, ip
        self.known_hosts = tmp_path / f"known_hosts-{iid}"
        self.known_hosts.write_text("".join(f"{ip} {k}\n" for k in host_keys(ec2, iid)))

    def run(self, cmd: str, user: str = "admin", input: bytes | None = None, check: bool = True, timeout: float = 120):
        p = subprocess.run(
            ["ssh", *SSH_OPTS, "-o", f"UserKnownHostsFile={self.known_hosts}", "-i", str(self.key), f"{user}@{self.ip}", cmd],
            input=input, capture_output=True, timeout=timeout, check=False,
        )
        if check and p.returncode != 0:
            raise AssertionError(f"ssh {user}@{self.ip} {cmd!r}: rc {p.returncode}: {p.stderr.decode(errors='replace')}")
        return p


def http_get(url: str, timeout: float = 5) -> str:
    with OPENER.open(url, timeout=timeout) as resp:
        return resp.read().decode().strip()


@pytest.fixture(scope="module")
def ec2m():
    return _client("ec2")


@pytest.fixture(scope="module")
def key(ec2m, tmp_path_factory):
    """An ed25519 key pair, imported as a LocalStack key pair: (name, private key path)."""
    d = tmp_path_factory.mktemp("key")
    path = d / "id"
    subprocess.run(["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-C", "pytest", "-f", str(path)], check=True)
    name = f"pytest-{uuid.uuid4().hex[:8]}"
    ec2m.import_key_pair(KeyName=name, PublicKeyMaterial=(d / "id.pub").read_bytes())
    yield name, path
    ec2m.delete_key_pair(KeyName=name)


@pytest.fixture(scope="session")
def busybox_tar():
    out = subprocess.run([str(REPO / "localstack/workload-images/build")], capture_output=True, text=True, check=True)
    return out.stdout.strip().splitlines()[-1]


@pytest.fixture
def net(ec2, cluster):
    n = Network(ec2, cluster)
    try:
        yield n
    finally:
        n.destroy()


USER_DATA = "#!/bin/sh\necho \"user-data ran on $(cat /etc/clusterctl-instance/instance-id)\"\n"


@pytest.fixture(scope="module")
def three(ec2m, key, tmp_path_factory):
    """Three instances launched with the key pair and user data; waits until all run (<= 30 s)."""
    cluster = f"pytest-{uuid.uuid4().hex[:10]}"
    n = Network(ec2m, cluster)
    try:
        t0 = time.monotonic()
        ids = n.run_instances(3, KeyName=key[0], UserData=USER_DATA)
        found = n.wait_running(ids, timeout=30)
        measure("3 instances: RunInstances to all running", time.monotonic() - t0)
        tmp = tmp_path_factory.mktemp("ssh")
        ssh = {i: Ssh(key[1], tmp, ec2m, i, d["PrivateIpAddress"]) for i, d in found.items()}
        yield n, found, ssh
    finally:
        n.destroy()


# ------------------------------------------------------------------------------- instances
def test_three_instances_are_machines(ec2m, three):
    n, found, ssh = three
    assert len(found) == 3
    for iid, d in found.items():
        ip = d["PrivateIpAddress"]
        assert ip.startswith(n.prefix + "1.") and not ip.endswith(".1")
        # the subnet maps public IPs: the public address is the same reachable container address
        assert d["PublicIpAddress"] == ip
        assert d.get("PublicDnsName", "") == ""
        info = json.loads(docker("inspect", iid).stdout)[0]
        assert info["State"]["Running"]
        assert info["Config"]["Labels"]["clusterctl.instance-id"] == iid
        assert info["Config"]["Labels"]["clusterctl.vpc-id"] == n.vpc_id
        assert info["Config"]["Labels"]["clusterctl.localstack"] == str(STATE)
        # the address is the container's own: its eth0, whose veth peer is a port of the VPC's bridge
        assert info["Config"]["NetworkDisabled"] is True  # wired by the realizer, not by Docker
        addr = docker("exec", iid, "ip", "-4", "-o", "addr", "show", "dev", "eth0").stdout
        subnet = ipaddress.ip_network(ec2m.describe_subnets(SubnetIds=[d["SubnetId"]])["Subnets"][0]["CidrBlock"])
        assert f" {ip}/{subnet.prefixlen} " in addr, addr  # its subnet's prefix, as AWS's DHCP gives
        (bridge,) = [net["bridge"] for net in realizer_state()["networks"].values() if net["vpc"] == n.vpc_id]
        veth = "vn" + iid.removeprefix("i-")[-12:]
        assert pathlib.Path(f"/sys/class/net/{veth}/master").resolve().name == bridge
        # and the names Docker would have given it
        assert f"{ip}\tip-{ip.replace('.', '-')}" in docker("exec", iid, "cat", "/etc/hosts").stdout


def test_ssh_as_admin_with_the_key_sudo_and_pinned_host_key(three):
    _, found, ssh = three
    for iid, s in ssh.items():
        # StrictHostKeyChecking=yes against the keys of the console: the host key sshd offers is that one
        out = s.run("sudo -n true && cat /etc/clusterctl-instance/instance-id && hostname").stdout.decode().split()
        assert out[0] == iid
        assert out[1] == "ip-" + found[iid]["PrivateIpAddress"].replace(".", "-")
        # root login is refused
        p = s.run("true", user="root", check=False)
        assert p.returncode == 255 and b"Permission denied" in p.stderr


def test_host_key_of_sshd_equals_console(ec2m, three):
    _, found, _ = three
    iid, d = next(iter(found.items()))
    scanned = subprocess.run(["ssh-keyscan", "-T", "5", d["PrivateIpAddress"]], capture_output=True, text=True).stdout
    offered = {" ".join(line.split()[1:3]) for line in scanned.splitlines() if line and not line.startswith("#")}
    assert offered and offered == set(host_keys(ec2m, iid))


def test_user_data_ran_once_and_console_is_base64(ec2m, three):
    _, found, _ = three
    for iid in found:
        out = ec2m.get_console_output(InstanceId=iid)["Output"]
        assert out.count(f"user-data ran on {iid}") == 1
    # what goes over the wire is base64 (boto3 decodes it; the Rust SDK does not)
    raw = _client("ec2")
    raw.meta.events.unregister("after-call.ec2.GetConsoleOutput", decode_console_output)
    iid = next(iter(found))
    assert "-----BEGIN SSH HOST KEY KEYS-----" in base64.b64decode(raw.get_console_output(InstanceId=iid)["Output"]).decode()


def test_systemd_running_and_docker_serves_busybox(three, busybox_tar):
    _, found, ssh = three
    iid, s = next(iter(ssh.items()))
    state = s.run("systemctl is-system-running", check=False).stdout.decode().strip()
    if state != "running":
        failed = s.run("systemctl --failed --no-legend --plain", check=False).stdout.decode()
        assert state == "degraded", f"{state}: {failed}"
        pytest.fail(f"degraded: {failed}")
    with open(busybox_tar, "rb") as f:
        s.run("sudo docker load -q", input=f.read())
    s.run("sudo docker run -d --pull never --name web -p 8080:80 clusterctl-busybox httpd -f -p 80 -h /www")
    ip = found[iid]["PrivateIpAddress"]
    deadline = time.monotonic() + 15
    while True:
        try:
            assert http_get(f"http://{ip}:8080/") == "clusterctl-busybox"
            break
        except OSError:
            assert time.monotonic() < deadline
            time.sleep(0.3)


def test_nodes_reach_localstack_at_the_cloud_endpoint(three):
    _, _, ssh = three
    s = next(iter(ssh.values()))
    endpoint = s.run("cat /etc/clusterctl-instance/cloud-endpoint").stdout.decode().strip()
    assert endpoint == realizer_state()["cloud_endpoint"] and not endpoint.startswith("http://127.")
    health = json.loads(s.run(f"curl -sf -m 5 {endpoint}/_localstack/health").stdout)
    assert health["services"]["ec2"] in ("available", "running")


def _dns_query(name: str, qtype: int = 1) -> bytes:
    labels = b"".join(bytes([len(p)]) + p.encode() for p in name.rstrip(".").split("."))
    return b"\x12\x34\x01\x00\x00\x01\x00\x00\x00\x00\x00\x00" + labels + b"\x00" + qtype.to_bytes(2, "big") + b"\x00\x01"


def test_nodes_resolve_private_names_through_the_vpc_resolver(three):
    """As on AWS: the VPC's resolver is the nodes' name server and answers the instances' private
    DNS names; it does not recurse (REFUSED at once), so nothing leaves this machine."""
    n, found, ssh = three
    (a, da), (_, db) = list(found.items())[:2]
    gateway = n.prefix + "0.1"
    assert_ours(gateway)
    assert ssh[a].run("cat /etc/resolv.conf").stdout.decode().split() == [
        "nameserver", gateway, "search", db["PrivateDnsName"].split(".", 1)[1]]
    # the other instance by its full private name and, through the search domain, its short one
    for name in (db["PrivateDnsName"], db["PrivateDnsName"].split(".")[0]):
        out = ssh[a].run(f"getent hosts {name}").stdout.decode().split()
        assert out[:1] == [db["PrivateIpAddress"]], (name, out)
    t0 = time.monotonic()
    assert ssh[a].run("getent hosts example.com", check=False).returncode != 0
    assert time.monotonic() - t0 < 2, "refused at once, not a timeout"
    # the wire: UDP and TCP from the host, NXDOMAIN for an address outside the VPC, REFUSED elsewhere
    domain = db["PrivateDnsName"].split(".", 1)[1]
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
        s.settimeout(2)
        for name, rcode, answer in ((db["PrivateDnsName"], 0, db["PrivateIpAddress"]),
                                    (f"ip-192-0-2-1.{domain}", 3, None), ("example.com", 5, None)):
            s.sendto(_dns_query(name), (gateway, 53))
            reply = s.recv(512)
            assert reply[:2] == b"\x12\x34" and reply[3] & 0xF == rcode, (name, reply)
            assert (socket.inet_ntoa(reply[-4:]) if answer else None) == answer, name
    with socket.create_connection((gateway, 53), timeout=2) as s:
        q = _dns_query(db["PrivateDnsName"])
        s.sendall(len(q).to_bytes(2, "big") + q)
        size = int.from_bytes(s.recv(2), "big")
        reply = b""
        while len(reply) < size:
            reply += s.recv(size - len(reply))
        assert socket.inet_ntoa(reply[-4:]) == db["PrivateIpAddress"]


def test_a_node_pulls_from_ecr_with_ecr_s_token(ec2, net, key, tmp_path):
    """As on AWS: a node resolves 000000000000.dkr.ecr.<region>.amazonaws.com through its VPC
    resolver (docker0's address), its Docker reaches it past the no-pull proxy (NO_PROXY
    .amazonaws.com:443), trusts it with the harness registry CA in certs.d (what clusterctl's agent
    writes from the spec's [[registries]]), and pulls with the password from ECR's
    GetAuthorizationToken; without logging in the pull is refused."""
    ecr = _client("ecr")
    (data,) = ecr.get_authorization_token()["authorizationData"]
    host = data["proxyEndpoint"].removeprefix("https://")
    user, password = base64.b64decode(data["authorizationToken"]).decode().split(":", 1)
    (iid,) = net.run_instances(1, KeyName=key[0])
    d = net.wait_running([iid])[iid]
    s = Ssh(key[1], tmp_path, ec2, iid, d["PrivateIpAddress"])
    (resolver,) = [r for r in realizer_state()["vpc_resolvers"].values() if r["cidr"] == net.cidr]
    assert resolver["ecr"], "the VPC resolver knows docker0's address"
    assert s.run(f"getent hosts {host}").stdout.decode().split()[:1] == [resolver["ecr"]]
    s.run(f"sudo install -d /etc/docker/certs.d/{host} && sudo tee /etc/docker/certs.d/{host}/ca.crt >/dev/null",
          input=(STATE / "registry/ca.crt").read_bytes())
    image = f"{host}/private/busybox:v1"
    denied = s.run(f"sudo docker pull -q {image}", check=False)
    assert denied.returncode != 0 and b"no basic auth credentials" in denied.stderr, denied.stderr
    s.run(f"sudo docker login -u {user} --password-stdin {host}", input=password.encode())  # not in argv
    t0 = time.monotonic()
    s.run(f"sudo docker pull -q {image}")
    measure("a node pulls private/busybox:v1 from the ECR stand-in", time.monotonic() - t0)
    assert s.run(f"sudo docker run --rm --pull never {image} echo pulled").stdout.decode().strip() == "pulled"


IMDS = "http://169.254.169.254"
PUT_TOKEN = f"curl -s -m 5 -X PUT -H 'X-aws-ec2-metadata-token-ttl-seconds: 60' {IMDS}/latest/api/token"


def test_the_metadata_service_speaks_imdsv2_signs_identity_and_keeps_the_hop_limit(ec2m, three, busybox_tar):
    """As AWS's: the node's own processes get a token and, with it, the instance's metadata and a
    signed identity document; the token's answer leaves with TTL = the hop limit, so a container
    behind the node's bridge (one routed hop further) never gets it at hop limit 1 and does at 2;
    with HttpTokens required a request without a token is 401."""
    from cryptography import x509
    from cryptography.hazmat.primitives import hashes
    from cryptography.hazmat.primitives.asymmetric import padding

    _, found, ssh = three
    iid, s = list(ssh.items())[1]
    def code(cmd: str) -> str:
        return s.run(cmd, check=False).stdout.decode().strip()

    token = code(PUT_TOKEN.replace("ttl-seconds: 60", "ttl-seconds: 600"))
    assert len(token) > 40, token
    # The answer says the token's lifetime, as AWS's does (the SDKs refuse a token without it).
    head = code(PUT_TOKEN.replace("curl -s ", "curl -s -D - -o /dev/null ").replace("ttl-seconds: 60", "ttl-seconds: 600")).lower()
    assert "x-aws-ec2-metadata-token-ttl-seconds: 600" in head, head
    auth = f"-H 'X-aws-ec2-metadata-token: {token}'"
    assert code(f"curl -sf -m 5 {auth} {IMDS}/latest/meta-data/instance-id") == iid
    assert code(f"curl -s -o /dev/null -w '%{{http_code}}' -m 5 -H 'X-aws-ec2-metadata-token: wrong' {IMDS}/latest/meta-data/instance-id") == "401"
    assert code(f"curl -s -o /dev/null -w '%{{http_code}}' -m 5 -X PUT -H 'X-Forwarded-For: 1.2.3.4' "
                f"-H 'X-aws-ec2-metadata-token-ttl-seconds: 60' {IMDS}/latest/api/token") == "403"
    doc = s.run(f"curl -sf -m 5 {auth} {IMDS}/latest/dynamic/instance-identity/document").stdout
    sig = base64.b64decode(code(f"curl -sf -m 5 {auth} {IMDS}/latest/dynamic/instance-identity/signature"))
    cert_pem = (STATE / "imds/identity.crt").read_bytes()
    with OPENER.open(f"{ENDPOINT}/_clusterctl/instance-identity-certificate", timeout=5) as resp:
        assert resp.read() == cert_pem, "the harness serves the certificate it signs with"
    cert = x509.load_pem_x509_certificate(cert_pem)
    cert.public_key().verify(sig, doc, padding.PKCS1v15(), hashes.SHA256())
    parsed = json.loads(doc)
    assert (parsed["instanceId"], parsed["privateIp"], parsed["region"]) == (iid, found[iid]["PrivateIpAddress"], "us-east-1")
    with pytest.raises(Exception):
        cert.public_key().verify(sig, doc.replace(iid.encode(), b"i-00000000000000000"), padding.PKCS1v15(), hashes.SHA256())

    # A container on the node's Docker bridge: its packets are routed (and masqueraded) by the node.
    with open(busybox_tar, "rb") as f:
        s.run("sudo docker load -q", input=f.read())
    request = "printf 'PUT /latest/api/token HTTP/1.0\\r\\nX-aws-ec2-metadata-token-ttl-seconds: 60\\r\\n\\r\\n' | timeout 5 nc 169.254.169.254 80"
    in_container = f"sudo docker run --rm --pull never clusterctl-busybox sh -c \"{request}\""
    # masqueraded to the node's address as a cluster's pod network does (this bare node's Docker
    # writes no rules)
    s.run("sudo iptables -t nat -C POSTROUTING -o eth0 -j MASQUERADE 2>/dev/null || sudo iptables -t nat -A POSTROUTING -o eth0 -j MASQUERADE")
    get = "printf 'GET /latest/meta-data/instance-id HTTP/1.0\\r\\n\\r\\n' | nc -w 3 169.254.169.254 80"
    assert code(f"sudo docker run --rm --pull never clusterctl-busybox sh -c \"{get}\"").endswith(iid), "the container reaches the service"
    assert code(in_container) == "", "hop limit 1: the token never reaches a container"
    ec2m.modify_instance_metadata_options(InstanceId=iid, HttpPutResponseHopLimit=2)
    assert code(in_container).startswith("HTTP/1.1 200"), "hop limit 2: it does"
    ec2m.modify_instance_metadata_options(InstanceId=iid, HttpTokens="required", HttpPutResponseHopLimit=1)
    assert code(f"curl -s -o /dev/null -w '%{{http_code}}' -m 5 {IMDS}/latest/meta-data/instance-id") == "401"
    assert code(f"curl -sf -m 5 {auth} {IMDS}/latest/meta-data/placement/availability-zone") == found[iid]["Placement"]["AvailabilityZone"]


def test_terminate_removes_the_container_within_2s_and_kill_impairs_within_10s(ec2, net, key):
    ids = net.run_instances(2, KeyName=key[0])
    net.wait_running(ids)
    victim, killed = ids
    t0 = time.monotonic()
    ec2.terminate_instances(InstanceIds=[victim])
    while container_exists(victim):
        assert time.monotonic() - t0 < 2, "container still there 2 s after TerminateInstances"
        time.sleep(0.05)
    measure("TerminateInstances to container gone", time.monotonic() - t0)
    assert net.instances([victim])[victim]["State"]["Name"] in ("shutting-down", "terminated")

    status = ec2.describe_instance_status(InstanceIds=[killed])["InstanceStatuses"][0]
    assert (status["InstanceStatus"]["Status"], status["SystemStatus"]["Status"]) == ("ok", "ok")
    t0 = time.monotonic()
    docker("kill", killed)
    while True:
        s = ec2.describe_instance_status(InstanceIds=[killed])["InstanceStatuses"]
        if s and s[0]["InstanceStatus"]["Status"] == "impaired" and s[0]["SystemStatus"]["Status"] == "impaired":
            break
        assert time.monotonic() - t0 < 10, f"not impaired 10 s after docker kill: {s}"
        time.sleep(0.2)
    measure("docker kill to DescribeInstanceStatus impaired", time.monotonic() - t0)
    assert s[0]["InstanceState"]["Name"] == "running"
    assert s[0]["InstanceStatus"]["Details"][0]["Status"] == "failed"
    assert "ImpairedSince" in s[0]["SystemStatus"]["Details"][0]
    assert net.instances([killed])[killed]["State"]["Name"] == "running"  # as AWS shows a failed machine
    # a stop/start brings it back
    ec2.stop_instances(InstanceIds=[killed])
    ec2.start_instances(InstanceIds=[killed])
    net.wait_running([killed])
    s = ec2.describe_instance_status(InstanceIds=[killed])["InstanceStatuses"][0]
    assert s["InstanceStatus"]["Status"] == "ok"


def test_stop_start_reboot_act_on_the_container(ec2, net, key, tmp_path):
    (iid,) = net.run_instances(1, KeyName=key[0])
    d = net.wait_running([iid])[iid]
    ip = d["PrivateIpAddress"]
    s = Ssh(key[1], tmp_path, ec2, iid, ip)
    s.run("sudo touch /var/lib/survives-stop")

    r = ec2.stop_instances(InstanceIds=[iid])["StoppingInstances"][0]
    assert r["CurrentState"]["Name"] == "stopping"
    deadline = time.monotonic() + 30
    while net.instances([iid])[iid]["State"]["Name"] != "stopped":
        assert time.monotonic() < deadline
        time.sleep(0.2)
    assert json.loads(docker("inspect", iid).stdout)[0]["State"]["Running"] is False
    assert net.instances([iid])[iid].get("PublicIpAddress") in (None, "")  # no address while stopped

    t0 = time.monotonic()
    r = ec2.start_instances(InstanceIds=[iid])["StartingInstances"][0]
    assert r["CurrentState"]["Name"] == "pending"
    d = net.wait_running([iid])[iid]
    measure("StartInstances to running", time.monotonic() - t0)
    assert d["PrivateIpAddress"] == ip and d["PublicIpAddress"] == ip
    s.run("test -e /var/lib/survives-stop")  # same disk, same host keys (pinned)

    started = json.loads(docker("inspect", iid).stdout)[0]["State"]["StartedAt"]
    ec2.reboot_instances(InstanceIds=[iid])
    deadline = time.monotonic() + 30
    while json.loads(docker("inspect", iid).stdout)[0]["State"]["StartedAt"] == started:
        assert time.monotonic() < deadline, "RebootInstances did not restart the container"
        time.sleep(0.2)
    assert net.instances([iid])[iid]["State"]["Name"] == "running"
    deadline = time.monotonic() + 30
    while s.run("true", check=False).returncode != 0:
        assert time.monotonic() < deadline
        time.sleep(0.5)


def test_client_token_returns_the_first_launch(ec2, net, cluster):
    token = f"{cluster}-token"
    a = net.run_instances(2, ClientToken=token)
    b = net.run_instances(2, ClientToken=token)
    assert a == b
    alive = [{"Name": "vpc-id", "Values": [net.vpc_id]}, {"Name": "instance-state-name", "Values": ["pending", "running"]}]
    assert sorted(i["InstanceId"] for r in ec2.describe_instances(Filters=alive)["Reservations"] for i in r["Instances"]) == sorted(a)
    with pytest.raises(botocore.exceptions.ClientError) as e:
        net.run_instances(3, ClientToken=token)
    assert e.value.response["Error"]["Code"] == "IdempotentParameterMismatch"


def test_image_mapping(ec2, net, cluster):
    amis = [i["ImageId"] for i in ec2.describe_images(
        Filters=[{"Name": "name", "Values": ["ubuntu/images/hvm-ssd/ubuntu-*-amd64-server-*"]}])["Images"]]
    ami = amis[-1]
    tag = f"clusterctl-node:{cluster}"
    mapping = STATE / "images.d" / f"{cluster}.json"
    docker("tag", "clusterctl-node:latest", tag)
    mapping.parent.mkdir(exist_ok=True)
    try:
        mapping.write_text(json.dumps({"amis": {ami: tag}}))
        (iid,) = [i["InstanceId"] for i in ec2.run_instances(ImageId=ami, MinCount=1, MaxCount=1, SubnetId=net.subnet_ids[0])["Instances"]]
        net.instance_ids.append(iid)
        net.wait_running([iid])  # the container is made after RunInstances answers
        assert docker("inspect", "-f", "{{.Config.Image}}", iid).stdout.strip() == tag
        # a mapping to an image that does not exist: an error, nothing launched, nothing pulled
        mapping.write_text(json.dumps({"amis": {ami: f"clusterctl-node:{cluster}-missing"}}))
        with pytest.raises(botocore.exceptions.ClientError) as e:
            ec2.run_instances(ImageId=ami, MinCount=1, MaxCount=1, SubnetId=net.subnet_ids[0])
        assert e.value.response["Error"]["Code"] == "InvalidAMIID.Unavailable"
        alive = [{"Name": "vpc-id", "Values": [net.vpc_id]}, {"Name": "instance-state-name", "Values": ["pending", "running"]}]
        assert [i["InstanceId"] for r in ec2.describe_instances(Filters=alive)["Reservations"] for i in r["Instances"]] == [iid]
    finally:
        mapping.unlink(missing_ok=True)
        ec2.terminate_instances(InstanceIds=net.instance_ids)
        docker("rmi", tag, check=False)


# ------------------------------------------------------------------------------- load balancer
def test_nlb_forwards_to_healthy_targets_only(ec2, elbv2, net, key, busybox_tar, tmp_path, cluster):
    ids = net.run_instances(2, KeyName=key[0])
    found = net.wait_running(ids)
    port = 8080
    with open(busybox_tar, "rb") as f:
        image = f.read()
    ssh = {}
    for iid, d in found.items():
        s = ssh[iid] = Ssh(key[1], tmp_path, ec2, iid, d["PrivateIpAddress"])
        s.run("sudo docker load -q", input=image)
        s.run(f"sudo mkdir -p /srv/www && echo {iid} | sudo tee /srv/www/index.html >/dev/null && "
              f"sudo docker run -d --pull never --name web -p {port}:80 -v /srv/www:/www clusterctl-busybox httpd -f -p 80 -h /www")

    lb = elbv2.create_load_balancer(Name=f"{cluster}-lb", Type="network", Scheme="internet-facing", Subnets=net.subnet_ids)["LoadBalancers"][0]
    try:
        dns = lb["DNSName"]
        assert dns == net.prefix + "0.1"  # the VPC network's gateway: the host and every node reach it
        assert_ours(dns)
        interval, healthy_n, unhealthy_n = 5, 2, 2
        tg = elbv2.create_target_group(
            Name=f"{cluster}-web", Protocol="TCP", Port=port, VpcId=net.vpc_id, TargetType="instance",
            HealthCheckProtocol="HTTP", HealthCheckPath="/", HealthCheckIntervalSeconds=interval,
            HealthCheckTimeoutSeconds=2, HealthyThresholdCount=healthy_n, UnhealthyThresholdCount=unhealthy_n,
        )["TargetGroups"][0]
        tg_arn = tg["TargetGroupArn"]
        elbv2.register_targets(TargetGroupArn=tg_arn, Targets=[{"Id": i} for i in ids])

        def health() -> dict[str, dict]:
            return {h["Target"]["Id"]: h["TargetHealth"]
                    for h in elbv2.describe_target_health(TargetGroupArn=tg_arn)["TargetHealthDescriptions"]}

        assert {h["State"] for h in health().values()} == {"unused"}  # no listener yet
        listener = elbv2.create_listener(LoadBalancerArn=lb["LoadBalancerArn"], Protocol="TCP", Port=port,
                                         DefaultActions=[{"Type": "forward", "TargetGroupArn": tg_arn}])["Listeners"][0]
        assert {h["State"] for h in health().values()} <= {"initial", "healthy"}
        t0 = time.monotonic()
        while {h["State"] for h in health().values()} != {"healthy"}:
            assert time.monotonic() - t0 < interval * (healthy_n + 2), health()
            time.sleep(0.3)
        measure("NLB targets registered to healthy", time.monotonic() - t0)

        seen = collections.Counter(http_get(f"http://{dns}:{port}/") for _ in range(20))
        assert set(seen) == set(ids), seen
        # nodes of the VPC reach the balancer too
        a, b = ids
        assert ssh[a].run(f"curl -sf -m 5 http://{dns}:{port}/").stdout.decode().strip() in ids

        # stop the server on b: every request goes to a, b turns unhealthy within the check window
        ssh[b].run("sudo docker stop -t 0 web")
        t0 = time.monotonic()
        answers = collections.Counter()
        while health()[b]["State"] != "unhealthy":
            answers[http_get(f"http://{dns}:{port}/")] += 1
            assert time.monotonic() - t0 < interval * (unhealthy_n + 1) + 3, health()
            time.sleep(0.2)
        measure("NLB server stopped to target unhealthy", time.monotonic() - t0)
        assert set(answers) == {a}, answers  # no request failed or went to b meanwhile
        h = health()
        assert h[b]["Reason"] == "Target.FailedHealthChecks" and h[a]["State"] == "healthy"
        assert set(http_get(f"http://{dns}:{port}/") for _ in range(10)) == {a}

        # b serves again: healthy again, traffic to both
        ssh[b].run("sudo docker start web")
        t0 = time.monotonic()
        while health()[b]["State"] != "healthy":
            assert time.monotonic() - t0 < interval * (healthy_n + 1) + 3, health()
            time.sleep(0.3)
        measure("NLB server back to target healthy", time.monotonic() - t0)
        assert set(http_get(f"http://{dns}:{port}/") for _ in range(10)) == set(ids)

        # stopping the instance: unused (Target.InvalidState), no traffic to it
        ec2.stop_instances(InstanceIds=[b])
        deadline = time.monotonic() + 30
        while health()[b]["State"] != "unused":
            assert time.monotonic() < deadline, health()
            time.sleep(0.3)
        assert health()[b]["Reason"] == "Target.InvalidState"

        # deleting the listener stops the forwarder
        elbv2.delete_listener(ListenerArn=listener["ListenerArn"])
        with pytest.raises(urllib.error.URLError):
            http_get(f"http://{dns}:{port}/", timeout=3)
        elbv2.delete_target_group(TargetGroupArn=tg_arn)
    finally:
        elbv2.delete_load_balancer(LoadBalancerArn=lb["LoadBalancerArn"])
    assert not any(l["address"].startswith(dns + ":") for l in realizer_state()["listeners"].values())


def test_nlb_deleting_the_balancer_stops_its_forwarder(ec2, elbv2, net, cluster):
    (iid,) = net.run_instances(1)
    net.wait_running([iid])
    lb = elbv2.create_load_balancer(Name=f"{cluster}-lb", Type="network", Subnets=net.subnet_ids)["LoadBalancers"][0]
    tg = None
    try:
        tg = elbv2.create_target_group(Name=f"{cluster}-ssh", Protocol="TCP", Port=22, VpcId=net.vpc_id,
                                       HealthCheckIntervalSeconds=5, HealthCheckTimeoutSeconds=3,
                                       HealthyThresholdCount=2)["TargetGroups"][0]
        elbv2.register_targets(TargetGroupArn=tg["TargetGroupArn"], Targets=[{"Id": iid}])
        elbv2.create_listener(LoadBalancerArn=lb["LoadBalancerArn"], Protocol="TCP", Port=2222,
                              DefaultActions=[{"Type": "forward", "TargetGroupArn": tg["TargetGroupArn"]}])
        dns = lb["DNSName"]
        assert_ours(dns)
        deadline = time.monotonic() + 20
        while True:  # sshd's banner through the balancer once the target is healthy
            try:
                with socket.create_connection((dns, 2222), timeout=3) as c:
                    c.settimeout(3)
                    if c.recv(8).startswith(b"SSH-"):
                        break
            except OSError:
                pass
            assert time.monotonic() < deadline
            time.sleep(0.5)
    finally:
        elbv2.delete_load_balancer(LoadBalancerArn=lb["LoadBalancerArn"])
        if tg:
            elbv2.delete_target_group(TargetGroupArn=tg["TargetGroupArn"])
    with pytest.raises(OSError):
        socket.create_connection((dns, 2222), timeout=3)


def test_nlb_a_deregistered_target_drains(ec2, elbv2, net, cluster):
    (iid,) = net.run_instances(1)
    net.wait_running([iid])
    lb = elbv2.create_load_balancer(Name=f"{cluster}-lb", Type="network", Subnets=net.subnet_ids)["LoadBalancers"][0]
    tg = None
    try:
        tg = elbv2.create_target_group(Name=f"{cluster}-ssh", Protocol="TCP", Port=22, VpcId=net.vpc_id,
                                       HealthCheckIntervalSeconds=5, HealthCheckTimeoutSeconds=3,
                                       HealthyThresholdCount=2)["TargetGroups"][0]
        tg_arn = tg["TargetGroupArn"]
        elbv2.create_listener(LoadBalancerArn=lb["LoadBalancerArn"], Protocol="TCP", Port=2222,
                              DefaultActions=[{"Type": "forward", "TargetGroupArn": tg_arn}])
        dns = lb["DNSName"]

        def health() -> dict[str, str]:
            return {h["Target"]["Id"]: h["TargetHealth"]["State"]
                    for h in elbv2.describe_target_health(TargetGroupArn=tg_arn)["TargetHealthDescriptions"]}

        def connect() -> socket.socket:
            """An ssh connection through the balancer, its banner read."""
            deadline = time.monotonic() + 20
            while True:
                try:
                    c = socket.create_connection((dns, 2222), timeout=3)
                    c.settimeout(3)
                    if c.recv(8).startswith(b"SSH-"):
                        return c
                    c.close()
                except OSError:
                    pass
                assert time.monotonic() < deadline
                time.sleep(0.5)

        def still_open(c: socket.socket) -> bool:
            """sshd answers a client identification with its key exchange: the connection works."""
            try:
                c.sendall(b"SSH-2.0-drain-test\r\n")
                return len(c.recv(4096)) > 0
            except OSError:
                return False

        for delay, close_it in ((300, True), (2, False)):
            elbv2.modify_target_group_attributes(TargetGroupArn=tg_arn, Attributes=[
                {"Key": "deregistration_delay.timeout_seconds", "Value": str(delay)}])
            elbv2.register_targets(TargetGroupArn=tg_arn, Targets=[{"Id": iid}])
            held = connect()
            elbv2.deregister_targets(TargetGroupArn=tg_arn, Targets=[{"Id": iid}])
            deregistered = time.monotonic()
            assert health() == {iid: "draining"}
            with pytest.raises(OSError):  # no new connection goes to a draining target
                c = socket.create_connection((dns, 2222), timeout=3)
                c.settimeout(3)
                if not c.recv(8):
                    raise ConnectionResetError("closed at once")
            t0 = time.monotonic()
            if close_it:
                assert still_open(held), "the connection forwarded before deregistration goes on"
                held.close()
            deadline = time.monotonic() + delay + 5
            while health():
                assert time.monotonic() < deadline, health()
                time.sleep(0.2)
            if close_it:
                assert time.monotonic() - t0 < 3, "drained as soon as its last connection closed"
            else:
                assert time.monotonic() - deregistered >= delay - 0.3, "held until the deregistration delay"
                held.settimeout(3)
                assert held.recv(4096) == b"" or not still_open(held), "closed at the end of the delay"
                held.close()
    finally:
        elbv2.delete_load_balancer(LoadBalancerArn=lb["LoadBalancerArn"])
        if tg:
            elbv2.delete_target_group(TargetGroupArn=tg["TargetGroupArn"])


# ------------------------------------------------------------------------------- VPC routes
def _router_of(vpc_id: str) -> dict | None:
    """The realizer's VPC router of that VPC: {table, priority, bridge, routes}."""
    for r in realizer_state()["vpc_routers"].values():
        if r["vpc"] == vpc_id:
            return r
    return None


def _host_rules() -> list[dict]:
    return json.loads(subprocess.run(["ip", "-j", "-4", "rule", "show"], capture_output=True, text=True, check=True).stdout)


def _host_table(table: int) -> list[dict]:
    """The kernel's routing table (empty when it does not exist)."""
    p = subprocess.run(["ip", "-j", "-4", "route", "show", "table", str(table)], capture_output=True, text=True)
    return json.loads(p.stdout) if p.returncode == 0 and p.stdout.strip() else []


def _answers(src: str, ip: str, timeout: float = 0.5) -> bool:
    """From inside node SRC: does sshd answer at IP:22 (its banner) within TIMEOUT seconds?"""
    p = docker("exec", src, "timeout", str(timeout), "bash", "-c", f"exec 3<>/dev/tcp/{ip}/22 && head -c 4 <&3", check=False)
    return p.stdout.startswith("SSH-")


def _wait_answers(src: str, ip: str, within: float = 5) -> float:
    t0 = time.monotonic()
    while not _answers(src, ip, timeout=1):
        assert time.monotonic() - t0 < within, f"{ip} does not answer from {src} within {within} s"
        time.sleep(0.1)
    return time.monotonic() - t0


def test_routes_to_instances_go_through_the_vpc_router(ec2, net):
    """A route whose target is an instance (what a Kubernetes route controller writes for a node's
    pod CIDR) carries traffic from the other nodes through the VPC router on the host, only while
    the instance runs with source/destination checking off; DescribeRouteTables reports it as AWS."""
    t_start = time.monotonic()
    (a,) = net.run_instances(1, subnet=0)
    (b,) = net.run_instances(1, subnet=1)  # another subnet, another zone
    found = net.wait_running([a, b])
    a_ip = found[a]["PrivateIpAddress"]
    eni = found[a]["NetworkInterfaces"][0]["NetworkInterfaceId"]
    pod_cidr, pod_ip = f"100.64.{net.octet}.0/24", f"100.64.{net.octet}.1"  # a "pod" address on node A
    docker("exec", a, "ip", "addr", "add", f"{pod_ip}/32", "dev", "lo")

    # the VPC's router on the host: its table (nothing else may carry B's packets off this machine:
    # a blackhole default) and its rule
    deadline = time.monotonic() + 5
    while (router := _router_of(net.vpc_id)) is None:
        assert time.monotonic() < deadline, "no VPC router for the VPC's network"
        time.sleep(0.1)
    table, bridge = router["table"], router["bridge"]
    assert router["priority"] == 1000 and 10000 <= table < 20000
    assert {"priority": 1000, "src": "all", "iif": bridge, "table": str(table)} in _host_rules()
    kernel = _host_table(table)
    assert {"type": "blackhole", "dst": "default", "flags": []} in kernel
    assert any(r["dst"] == net.cidr and r.get("dev") == bridge and "gateway" not in r for r in kernel), kernel
    assert pathlib.Path(f"/proc/sys/net/ipv4/conf/{bridge}/send_redirects").read_text().strip() == "0"

    def route() -> dict:
        (rt,) = ec2.describe_route_tables(RouteTableIds=[net.rtb_id])["RouteTables"]
        (r,) = [r for r in rt["Routes"] if r.get("DestinationCidrBlock") == pod_cidr]
        return r

    def in_kernel() -> list[dict]:
        return [r for r in _host_table(table) if r["dst"] == pod_cidr]

    assert not _answers(b, pod_ip)  # no route yet

    ec2.create_route(RouteTableId=net.rtb_id, DestinationCidrBlock=pod_cidr, InstanceId=a)
    assert route() == {"DestinationCidrBlock": pod_cidr, "InstanceId": a, "InstanceOwnerId": "000000000000",
                       "NetworkInterfaceId": eni, "Origin": "CreateRoute", "State": "active"}
    assert not _answers(b, pod_ip) and in_kernel() == []  # source/destination check still on

    ec2.modify_instance_attribute(InstanceId=a, SourceDestCheck={"Value": False})
    assert ec2.describe_instance_attribute(InstanceId=a, Attribute="sourceDestCheck")["SourceDestCheck"] == {"Value": False}
    d = net.instances([a])[a]
    assert d["SourceDestCheck"] is False and d["NetworkInterfaces"][0]["SourceDestCheck"] is False
    measure("ModifyInstanceAttribute SourceDestCheck=false to the pod address answering", _wait_answers(b, pod_ip))
    assert in_kernel() == [{"dst": pod_cidr, "gateway": a_ip, "dev": bridge, "flags": []}]
    # B still sends through its gateway (it took no ICMP redirect to go to A directly)
    assert f" via {net.prefix}0.1 " in docker("exec", b, "ip", "route", "get", pod_ip).stdout
    # and so do its packets to A itself, in another subnet, as on AWS (each node's eth0 has its
    # subnet's prefix): node-to-node and pod traffic cross the same router
    assert f" via {net.prefix}0.1 " in docker("exec", b, "ip", "route", "get", a_ip).stdout
    assert _answers(b, a_ip) and _answers(a, found[b]["PrivateIpAddress"])

    ec2.delete_route(RouteTableId=net.rtb_id, DestinationCidrBlock=pod_cidr)
    assert not _answers(b, pod_ip) and in_kernel() == []

    # the same by network interface; then the instance stops (blackhole) and starts again (active)
    ec2.create_route(RouteTableId=net.rtb_id, DestinationCidrBlock=pod_cidr, NetworkInterfaceId=eni)
    assert route()["InstanceId"] == a and route()["State"] == "active"
    _wait_answers(b, pod_ip)
    ec2.stop_instances(InstanceIds=[a])
    assert route() == {"DestinationCidrBlock": pod_cidr, "InstanceId": a, "InstanceOwnerId": "000000000000",
                       "NetworkInterfaceId": eni, "Origin": "CreateRoute", "State": "blackhole"}
    assert in_kernel() == []
    t0 = time.monotonic()
    deadline = t0 + 30
    while net.instances([a])[a]["State"]["Name"] != "stopped":
        assert time.monotonic() < deadline
        time.sleep(0.2)
    ec2.start_instances(InstanceIds=[a])
    net.wait_running([a])
    assert route()["State"] == "active" and in_kernel() != []
    docker("exec", a, "ip", "addr", "add", f"{pod_ip}/32", "dev", "lo")  # a new network namespace
    _wait_answers(b, pod_ip)
    measure("instance with a route stopped and started, to the pod address answering again", time.monotonic() - t0)

    # terminated: blackhole, as AWS shows it (the interface's id, no instance id any more)
    ec2.terminate_instances(InstanceIds=[a])
    assert route() == {"DestinationCidrBlock": pod_cidr, "NetworkInterfaceId": eni, "Origin": "CreateRoute",
                       "State": "blackhole"}
    assert in_kernel() == []
    blackholes = ec2.describe_route_tables(Filters=[{"Name": "route.state", "Values": ["blackhole"]},
                                                    {"Name": "vpc-id", "Values": [net.vpc_id]}])["RouteTables"]
    assert [t["RouteTableId"] for t in blackholes] == [net.rtb_id]

    # the VPC goes: its network, then its rule and table
    net.destroy()
    deadline = time.monotonic() + 10
    while any(r.get("iif") == bridge or r.get("table") == str(table) for r in _host_rules()) or _host_table(table):
        assert time.monotonic() < deadline, (_host_rules(), _host_table(table))
        time.sleep(0.2)
    assert _router_of(net.vpc_id) is None
    measure("VPC router test, launch to VPC gone", time.monotonic() - t_start)


# ------------------------------------------------------------------------------- faults
FAULT_REGION = "eu-west-3"  # faults limited to a region nobody else uses here


@pytest.fixture
def faulty():
    harness_json(f"/_clusterctl/faults?region={FAULT_REGION}", "DELETE")
    try:
        yield lambda body: harness_json("/_clusterctl/faults", "POST", body)
    finally:
        harness_json(f"/_clusterctl/faults?region={FAULT_REGION}", "DELETE")


def test_faults_request_limit_and_invisibility(faulty, cluster):
    ec2 = _client("ec2", region=FAULT_REGION)
    net = Network(ec2, cluster)
    try:
        state = faulty([
            {"operation": "RunInstances", "error": "RequestLimitExceeded", "rate": 0.3, "region": FAULT_REGION},
            {"invisible_ms": 2000, "region": FAULT_REGION},
        ])
        assert state["invisible_ms_by_region"] == {FAULT_REGION: 2000}
        # the errors: RunInstances in a subnet that does not exist, so that nothing launches when no
        # fault hits; the SDK must see exactly the injected errors, all RequestLimitExceeded (503)
        seen = collections.Counter()
        calls = 60
        for _ in range(calls):
            try:
                ec2.run_instances(ImageId="ami-1e749f67", MinCount=1, MaxCount=1, SubnetId="subnet-00000000000000000")
            except botocore.exceptions.ClientError as e:
                seen[(e.response["Error"]["Code"], e.response["ResponseMetadata"]["HTTPStatusCode"])] += 1
        rule = [r for r in harness_json("/_clusterctl/faults")["rules"] if r.get("region") == FAULT_REGION][0]
        assert rule["seen"] == calls
        assert seen[("RequestLimitExceeded", 503)] == rule["injected"]
        assert seen[("InvalidSubnetID.NotFound", 400)] == calls - rule["injected"]
        assert 0.1 * calls <= rule["injected"] <= 0.55 * calls, rule  # rate 0.3 (binomial, far tails excluded)
        # other operations, and the same operation in other regions, are untouched
        for _ in range(10):
            ec2.describe_vpcs()
        _client("ec2").describe_instances(MaxResults=5)

        # invisibility: a new instance is not there for Describe* for ~2 s, then is
        while True:
            try:
                (iid,) = net.run_instances(1)
                break
            except botocore.exceptions.ClientError as e:
                assert e.response["Error"]["Code"] == "RequestLimitExceeded"
        t0 = time.monotonic()
        with pytest.raises(botocore.exceptions.ClientError) as e:
            ec2.describe_instances(InstanceIds=[iid])
        assert e.value.response["Error"]["Code"] == "InvalidInstanceID.NotFound"
        by_vpc = [{"Name": "vpc-id", "Values": [net.vpc_id]}]
        while not [i for r in ec2.describe_instances(Filters=by_vpc)["Reservations"] for i in r["Instances"]]:
            assert time.monotonic() - t0 < 5
            time.sleep(0.1)
        measure("invisible_ms=2000: launch to visible", time.monotonic() - t0)
        assert 1.5 <= time.monotonic() - t0 <= 3.5

        # after DELETE: no errors, new instances visible at once
        harness_json(f"/_clusterctl/faults?region={FAULT_REGION}", "DELETE")
        for _ in range(10):
            with pytest.raises(botocore.exceptions.ClientError) as e:
                ec2.run_instances(ImageId="ami-1e749f67", MinCount=1, MaxCount=1, SubnetId="subnet-00000000000000000")
            assert e.value.response["Error"]["Code"] == "InvalidSubnetID.NotFound"
        (iid2,) = net.run_instances(1)
        assert iid2 in net.instances([iid2])
    finally:
        net.destroy()


def test_faults_endpoint_validates_and_counts(faulty):
    with pytest.raises(urllib.error.HTTPError) as e:
        faulty({"operation": "RunInstances", "rate": 2})
    assert e.value.code == 400
    faulty({"operation": "DescribeVpcs", "error": "Throttling", "count": 2, "region": FAULT_REGION})
    ec2 = _client("ec2", region=FAULT_REGION)
    codes = []
    for _ in range(4):
        try:
            ec2.describe_vpcs()
            codes.append("ok")
        except botocore.exceptions.ClientError as err:
            codes.append(err.response["Error"]["Code"])
    assert codes == ["Throttling", "Throttling", "ok", "ok"]
