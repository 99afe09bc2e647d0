"""The harness works: LocalStack is up on loopback only, with EC2, ELBv2 (our plugin), STS, IAM and
ECR (moto's, through our plugin), the EC2 / ELBv2 calls clusterctl makes answer as expected, and the
ECR stand-in (registry/up on docker0:443, named by the VPC resolver) takes ECR's token."""

from __future__ import annotations

import base64
import http.client
import ipaddress
import json
import os
import re
import socket
import ssl
import subprocess
import time

import pytest
from conftest import CLUSTER_TAG, PORT, STATE, _client, cluster_filter, health, realizer_state, tag_spec

READY = {"available", "running"}
SERVICES = ("ec2", "elbv2", "sts", "iam", "ecr")


def test_health_shows_ec2_elbv2_sts_iam_ecr_ready():
    services = health()["services"]
    for s in SERVICES:
        assert services.get(s) in READY, f"{s}: {services.get(s)}"
    # nothing else was asked for
    others = {k: v for k, v in services.items() if k not in SERVICES}
    assert set(others.values()) <= {"disabled"}, others


def _localstack_pid() -> int:
    return int((STATE / "localstack.pid").read_text().strip())


def _listening_sockets_of(pid: int) -> list[tuple[str, str]]:
    """(proto, local address) of every listening TCP/UDP socket the process owns."""
    out = subprocess.run(["ss", "-Hlntup"], check=True, capture_output=True, text=True).stdout
    found = []
    for line in out.splitlines():
        if f"pid={pid}," not in line:
            continue
        cols = line.split()
        found.append((cols[0], cols[4]))
    return found


def _forwarder_addresses() -> set[str]:
    """host:port of the realizer's load-balancer listeners, of its VPC resolvers (each VPC's
    gateway address, port 53, while a cluster lives there) and of its instance metadata service
    (169.254.169.254:80, an address of the VPC bridges only): LocalStack's sockets too."""
    try:
        state = realizer_state()
    except OSError:
        return set()
    found = {l["address"] for l in state.get("listeners", {}).values()}
    found |= {f"{ipaddress.ip_network(r['cidr'])[1]}:53" for r in state.get("vpc_resolvers", {}).values()}
    imds = state.get("metadata_service", {})
    if imds.get("listening"):
        found.add(imds["address"])
    return found


def test_listens_only_on_the_configured_addresses():
    configured = (STATE / "listen").read_text().strip().split(",")
    assert f"127.0.0.1:{PORT}" in configured
    for addr in configured:
        host = addr.rsplit(":", 1)[0]
        assert host not in ("0.0.0.0", "*", "::", "[::]"), configured

    before = _forwarder_addresses()
    sockets = _listening_sockets_of(_localstack_pid())
    forwarders = before | _forwarder_addresses()  # load balancers others create meanwhile
    assert sockets, "the LocalStack process owns no listening socket"
    for proto, local in sockets:
        assert local in configured or local in forwarders, f"{proto} {local} is not one of {configured} nor a forwarder or the metadata service"
        # a load balancer listens only on its VPC network's gateway address
        assert not re.match(r"^(0\.0\.0\.0|\*|\[::\]|::):", local), local

    # and nothing at all listens on the port's wildcard
    out = subprocess.run(["ss", "-Hltn", f"sport = :{PORT}"], check=True, capture_output=True, text=True).stdout
    for line in out.splitlines():
        local = line.split()[3]
        assert not re.match(r"^(0\.0\.0\.0|\*|\[::\]|::):", local), line


def _docker0() -> str:
    out = subprocess.run(["ip", "-4", "-o", "addr", "show", "dev", "docker0"], capture_output=True, text=True).stdout.split()
    return out[out.index("inet") + 1].split("/")[0] if "inet" in out else ""


def _registry_pid(name: str) -> int | None:
    """The pid of the harness registry process NAME (registry, mirror, ecr) if it runs."""
    try:
        pid = int((STATE / "registry" / f"{name}.pid").read_text().strip())
        os.kill(pid, 0)
        return pid
    except (OSError, ValueError):
        return None


def test_registries_listen_only_on_docker0():
    """The harness's registries (registry/up): the private one on docker0:5443, its mirror on :5444
    and the ECR stand-in on :443, each on docker0's address only, never a wildcard."""
    want = {"registry": 5443, "mirror": 5444, "ecr": 443}
    pids = {name: _registry_pid(name) for name in want}
    if not any(pids.values()):
        pytest.skip("registry/up has not run for this state folder (only the default harness runs it)")
    addr = _docker0()
    for name, port in want.items():
        assert pids[name], f"the {name} registry does not run"
        assert _listening_sockets_of(pids[name]) == [("tcp", f"{addr}:{port}")], name


# ------------------------------------------------------------------------------ the ECR stand-in
ECR_HOST = "000000000000.dkr.ecr.us-east-1.amazonaws.com"
MANIFEST_V2 = "application/vnd.docker.distribution.manifest.v2+json"


@pytest.fixture(scope="module")
def ecr_stand_in() -> str:
    """docker0's address, where the ECR stand-in listens on port 443 (skips when it does not run)."""
    if _registry_pid("ecr") is None:
        pytest.skip("no ECR stand-in (registry/up runs with the realizer, default harness only)")
    addr = _docker0()
    assert addr, "the ECR stand-in runs but there is no docker0"
    return addr


def _registry_get(addr: str, host: str, path: str, auth: str | None = None, accept: str | None = None, method: str = "GET"):
    """GET (or METHOD) https://HOST/PATH, connected to ADDR:443 (HOST as SNI and as the name the certificate
    must carry, checked against the harness registry CA): (status, headers, body)."""
    ctx = ssl.create_default_context(cafile=str(STATE / "registry/ca.crt"))
    with socket.create_connection((addr, 443), timeout=5) as raw, ctx.wrap_socket(raw, server_hostname=host) as tls:
        conn = http.client.HTTPConnection(host, 443, timeout=5)
        conn.sock = tls  # the TLS connection above: the request goes nowhere else
        headers = {"Host": host}
        if auth:
            headers["Authorization"] = "Basic " + base64.b64encode(auth.encode()).decode()
        if accept:
            headers["Accept"] = accept
        conn.request(method, path, headers=headers)
        resp = conn.getresponse()
        return resp.status, dict(resp.getheaders()), resp.read()


def test_ecr_authorization_token_is_the_ecr_stand_in_s_password(ecr_stand_in):
    """ECR's GetAuthorizationToken (moto's, through LocalStack) answers a token whose password the
    registry on docker0:443 takes for the ECR host name, as AWS's registry takes its token's; the
    TLS certificate verifies against the harness registry CA for that name (and every region's)."""
    data = _client("ecr").get_authorization_token()["authorizationData"]
    assert len(data) == 1
    user, password = base64.b64decode(data[0]["authorizationToken"]).decode().split(":", 1)
    assert (user, password) == ("AWS", "000000000000-auth-token")
    assert data[0]["proxyEndpoint"] == f"https://{ECR_HOST}"
    # moto hard-codes expiresAt (2015-01-01, in the past): a client must not refuse such a token
    assert data[0]["expiresAt"].year == 2015

    status, headers, _ = _registry_get(ecr_stand_in, ECR_HOST, "/v2/", f"{user}:{password}")
    assert status == 200
    status, headers, _ = _registry_get(ecr_stand_in, ECR_HOST, "/v2/")
    assert status == 401 and headers.get("Www-Authenticate", "").startswith("Basic "), headers
    assert _registry_get(ecr_stand_in, ECR_HOST, "/v2/", f"{user}:wrong")[0] == 401
    assert _registry_get(ecr_stand_in, ECR_HOST, "/v2/", f"clusterctl:{password}")[0] == 401

    # another region's token names its own host, which the certificate covers too
    for region in ("eu-west-1", "ap-southeast-2"):
        (d,) = _client("ecr", region).get_authorization_token()["authorizationData"]
        host = d["proxyEndpoint"].removeprefix("https://")
        assert host == f"000000000000.dkr.ecr.{region}.amazonaws.com"
        assert _registry_get(ecr_stand_in, host, "/v2/", base64.b64decode(d["authorizationToken"]).decode())[0] == 200
    # a name the certificate does not carry fails verification
    with pytest.raises(ssl.SSLCertVerificationError):
        _registry_get(ecr_stand_in, "registry.example", "/v2/")


def test_ecr_stand_in_serves_the_private_images_read_only(ecr_stand_in):
    auth = "AWS:000000000000-auth-token"
    status, headers, body = _registry_get(ecr_stand_in, ECR_HOST, "/v2/private/busybox/manifests/v1", auth, MANIFEST_V2)
    assert status == 200, body[:300]
    manifest = json.loads(body)
    assert manifest["mediaType"] == MANIFEST_V2 and manifest["layers"], manifest
    assert headers.get("Docker-Content-Digest", "").startswith("sha256:")
    # the blob it names is there too (the same storage as the private registry on 5443)
    layer = manifest["layers"][0]["digest"]
    status, _, _ = _registry_get(ecr_stand_in, ECR_HOST, f"/v2/private/busybox/blobs/{layer}", auth)
    assert status == 200
    assert _registry_get(ecr_stand_in, ECR_HOST, "/v2/bench/pull/manifests/10mb", auth, MANIFEST_V2)[0] == 200
    assert _registry_get(ecr_stand_in, ECR_HOST, "/v2/private/busybox/manifests/v1", None, MANIFEST_V2)[0] == 401
    # read-only: pushes go to the private registry on 5443
    assert _registry_get(ecr_stand_in, ECR_HOST, "/v2/private/busybox/blobs/uploads/", auth, method="POST")[0] == 405
    # ECR's records of the repositories (registry/up makes them in us-east-1 when LocalStack answers)
    repos = {r["repositoryName"]: r["repositoryUri"] for r in _client("ecr").describe_repositories()["repositories"]}
    assert repos.get("private/busybox") == f"{ECR_HOST}/private/busybox", repos


def _dns(server: str, name: str, qtype: int = 1) -> tuple[int, list[str], int]:
    """(rcode, A answers, ancount) of one UDP query to SERVER:53."""
    labels = b"".join(bytes([len(p)]) + p.encode() for p in name.rstrip(".").split("."))
    query = b"\x43\x21\x01\x00\x00\x01\x00\x00\x00\x00\x00\x00" + labels + b"\x00" + qtype.to_bytes(2, "big") + b"\x00\x01"
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
        s.settimeout(2)
        s.sendto(query, (server, 53))
        reply = s.recv(512)
    assert reply[:2] == b"\x43\x21", reply
    ancount = int.from_bytes(reply[6:8], "big")
    answers = [socket.inet_ntoa(reply[-4:])] if ancount and qtype == 1 else []
    return reply[3] & 0xF, answers, ancount


def test_vpc_resolver_answers_ecr_registry_names_with_docker0(ec2, elbv2, network, cluster, realized):
    """As AWS's public DNS answers ECR's registry names, the VPC resolver answers
    <12 digits>.dkr.ecr.<region>.amazonaws.com (any region, any case) with docker0's address, where
    the ECR stand-in listens; every other name outside the VPC's domain stays REFUSED."""
    addr = _docker0()
    assert addr, "no docker0"
    # a balancer gives the VPC its network, and with it the resolver on the gateway (10.x.0.1)
    lb = elbv2.create_load_balancer(Name=f"{cluster}-dns", Type="network", Subnets=network.subnet_ids)["LoadBalancers"][0]
    try:
        gateway = network.prefix + "0.1"
        deadline = time.monotonic() + 10
        while True:
            state = realizer_state()
            if any(n["gateway"] == gateway for n in state["networks"].values()):
                break
            assert time.monotonic() < deadline, state["networks"]
            time.sleep(0.2)
        resolvers = [r for r in state["vpc_resolvers"].values() if r["cidr"] == network.cidr]
        assert [r["ecr"] for r in resolvers] == [addr], state["vpc_resolvers"]
        for name in (ECR_HOST, "123456789012.dkr.ecr.eu-west-1.amazonaws.com",
                     "000000000000.DKR.ECR.AP-SOUTHEAST-2.AMAZONAWS.COM.", "210987654321.dkr.ecr.us-gov-west-1.amazonaws.com"):
            assert _dns(gateway, name) == (0, [addr], 1), name
        assert _dns(gateway, ECR_HOST, qtype=28) == (0, [], 0), "AAAA: an empty answer"
        for name in ("example.com", "api.ecr.us-east-1.amazonaws.com", "ecr.us-east-1.amazonaws.com",
                     "12345.dkr.ecr.us-east-1.amazonaws.com", f"x.{ECR_HOST}", "000000000000.dkr.ecr.us-east-1.amazonaws.com.evil.example"):
            assert _dns(gateway, name)[0] == 5, f"{name}: REFUSED"
        # the VPC's own names as before
        assert _dns(gateway, f"ip-{network.prefix.replace('.', '-')}1-9.ec2.internal") == (0, [network.prefix + "1.9"], 1)
    finally:
        elbv2.delete_load_balancer(LoadBalancerArn=lb["LoadBalancerArn"])


def test_sts_get_caller_identity(sts):
    ident = sts.get_caller_identity()
    assert ident["Account"] == "000000000000"
    assert ident["Arn"].startswith("arn:aws:")


def test_ec2_network_resources_with_tags(ec2, network, cluster):
    """CreateVpc/Subnet/InternetGateway/RouteTable/SecurityGroup with TagSpecifications; found by tag."""
    f = cluster_filter(cluster)
    assert [v["VpcId"] for v in ec2.describe_vpcs(Filters=f)["Vpcs"]] == [network.vpc_id]
    assert sorted(s["SubnetId"] for s in ec2.describe_subnets(Filters=f)["Subnets"]) == sorted(network.subnet_ids)
    igws = ec2.describe_internet_gateways(Filters=f)["InternetGateways"]
    assert [g["InternetGatewayId"] for g in igws] == [network.igw_id]
    assert igws[0]["Attachments"] == [{"State": "available", "VpcId": network.vpc_id}]
    rtbs = ec2.describe_route_tables(Filters=f)["RouteTables"]
    assert [r["RouteTableId"] for r in rtbs] == [network.rtb_id]
    assert {"DestinationCidrBlock": "0.0.0.0/0", "GatewayId": network.igw_id} in [
        {k: r.get(k) for k in ("DestinationCidrBlock", "GatewayId")} for r in rtbs[0]["Routes"]
    ]
    sgs = ec2.describe_security_groups(Filters=f)["SecurityGroups"]
    assert [g["GroupId"] for g in sgs] == [network.sg_id]
    assert {"Key": CLUSTER_TAG, "Value": cluster} in sgs[0]["Tags"]
    # another cluster's filter finds none of it
    other = cluster_filter(cluster + "-other")
    assert ec2.describe_vpcs(Filters=other)["Vpcs"] == []
    assert ec2.describe_security_groups(Filters=other)["SecurityGroups"] == []


def test_ec2_key_pair_with_tags(ec2, cluster, tmp_path):
    key = tmp_path / "id"
    subprocess.run(["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-C", "pytest", "-f", str(key)], check=True)
    public = (tmp_path / "id.pub").read_text().strip()
    name = f"{cluster}-key"
    ec2.import_key_pair(KeyName=name, PublicKeyMaterial=public.encode(), TagSpecifications=tag_spec("key-pair", cluster))
    try:
        pairs = ec2.describe_key_pairs(Filters=cluster_filter(cluster), IncludePublicKey=True)["KeyPairs"]
        assert [p["KeyName"] for p in pairs] == [name]
        assert pairs[0]["KeyType"] == "ed25519"
        assert pairs[0]["PublicKey"].split()[:2] == public.split()[:2]
        assert ec2.describe_key_pairs(Filters=cluster_filter(cluster + "-other"))["KeyPairs"] == []
    finally:
        ec2.delete_key_pair(KeyName=name)


def test_ec2_instances_with_tags_state_filter_and_console(ec2, network, cluster):
    ids = network.run_instances(2, role="worker")
    assert len(ids) == 2
    alive = cluster_filter(cluster) + [
        {"Name": "instance-state-name", "Values": ["pending", "running", "stopping", "stopped"]}
    ]

    def described(filters):
        return {
            i["InstanceId"]: i
            for r in ec2.describe_instances(Filters=filters)["Reservations"]
            for i in r["Instances"]
        }

    network.wait_running(ids)  # with the realizer: pending until the machine's sshd answers
    found = described(alive)
    assert set(found) == set(ids)
    for i in found.values():
        assert i["State"]["Name"] == "running"
        assert i["PrivateIpAddress"].startswith(network.prefix + "1.")
        assert {"Key": "clusterctl:role", "Value": "worker"} in i["Tags"]
    assert set(described(cluster_filter(cluster) + [{"Name": "tag:clusterctl:role", "Values": ["worker"]}])) == set(ids)

    console = ec2.get_console_output(InstanceId=ids[0])
    assert console["InstanceId"] == ids[0]
    assert "Output" in console

    ec2.terminate_instances(InstanceIds=ids[1:])
    assert set(described(alive)) == {ids[0]}
    # terminated instances stay visible (as in AWS) unless the state filter excludes them
    assert described(cluster_filter(cluster))[ids[1]]["State"]["Name"] == "terminated"


def test_ec2_describe_images_by_name(ec2):
    images = ec2.describe_images(Filters=[{"Name": "name", "Values": ["ubuntu/images/hvm-ssd/ubuntu-*"]}])["Images"]
    assert images, "moto lists ubuntu images"
    assert all(i["Name"].startswith("ubuntu/images/hvm-ssd/ubuntu-") for i in images)
    assert ec2.describe_images(Filters=[{"Name": "name", "Values": ["debian-12-*"]}])["Images"] == []


def test_elbv2_network_load_balancer_lifecycle(ec2, elbv2, network, cluster):
    instance_ids = network.run_instances(2)
    network.wait_running(instance_ids)  # RegisterTargets takes running instances only
    tags = [{"Key": CLUSTER_TAG, "Value": cluster}]

    lb = elbv2.create_load_balancer(
        Name=f"{cluster}-api",
        Type="network",
        Scheme="internet-facing",
        Subnets=network.subnet_ids,
        SecurityGroups=[network.sg_id],
        Tags=tags,
    )["LoadBalancers"][0]
    lb_arn = lb["LoadBalancerArn"]
    try:
        assert lb["Type"] == "network"
        assert lb["Scheme"] == "internet-facing"
        assert lb["VpcId"] == network.vpc_id
        assert lb["SecurityGroups"] == [network.sg_id]
        assert sorted(z["SubnetId"] for z in lb["AvailabilityZones"]) == sorted(network.subnet_ids)

        tg = elbv2.create_target_group(
            Name=f"{cluster}-6443",
            Protocol="TCP",
            Port=6443,
            VpcId=network.vpc_id,
            TargetType="instance",
            HealthCheckProtocol="TCP",
            Tags=tags,
        )["TargetGroups"][0]
        tg_arn = tg["TargetGroupArn"]
        assert (tg["Protocol"], tg["Port"], tg["TargetType"]) == ("TCP", 6443, "instance")

        elbv2.register_targets(TargetGroupArn=tg_arn, Targets=[{"Id": i, "Port": 6443} for i in instance_ids])
        listener = elbv2.create_listener(
            LoadBalancerArn=lb_arn,
            Protocol="TCP",
            Port=6443,
            DefaultActions=[{"Type": "forward", "TargetGroupArn": tg_arn}],
        )["Listeners"][0]
        assert (listener["Protocol"], listener["Port"]) == ("TCP", 6443)

        health = elbv2.describe_target_health(TargetGroupArn=tg_arn)["TargetHealthDescriptions"]
        assert sorted(h["Target"]["Id"] for h in health) == sorted(instance_ids)
        assert all("State" in h["TargetHealth"] for h in health)

        elbv2.add_tags(ResourceArns=[lb_arn, tg_arn], Tags=[{"Key": "clusterctl:role", "Value": "api"}])
        described_tags = {
            d["ResourceArn"]: {t["Key"]: t["Value"] for t in d["Tags"]}
            for d in elbv2.describe_tags(ResourceArns=[lb_arn, tg_arn])["TagDescriptions"]
        }
        for arn in (lb_arn, tg_arn):
            assert described_tags[arn] == {CLUSTER_TAG: cluster, "clusterctl:role": "api"}

        lbs = elbv2.describe_load_balancers(Names=[f"{cluster}-api"])["LoadBalancers"]
        assert [l["LoadBalancerArn"] for l in lbs] == [lb_arn]
        assert lbs[0]["State"]["Code"] == "active"
        assert [l["ListenerArn"] for l in elbv2.describe_listeners(LoadBalancerArn=lb_arn)["Listeners"]] == [
            listener["ListenerArn"]
        ]

        elbv2.delete_listener(ListenerArn=listener["ListenerArn"])
        assert elbv2.describe_listeners(LoadBalancerArn=lb_arn)["Listeners"] == []
        elbv2.delete_target_group(TargetGroupArn=tg_arn)
        with pytest.raises(elbv2.exceptions.TargetGroupNotFoundException):
            elbv2.describe_target_groups(TargetGroupArns=[tg_arn])
    finally:
        elbv2.delete_load_balancer(LoadBalancerArn=lb_arn)
    with pytest.raises(elbv2.exceptions.LoadBalancerNotFoundException):
        elbv2.describe_load_balancers(Names=[f"{cluster}-api"])
