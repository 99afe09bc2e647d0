"""The harness works: LocalStack is up on loopback only, with EC2, ELBv2 (our plugin), STS and IAM,
and the EC2 / ELBv2 calls clusterctl makes answer as expected."""

from __future__ import annotations

import os
import re
import subprocess

import pytest
from conftest import CLUSTER_TAG, PORT, STATE, cluster_filter, health, realizer_state, tag_spec

READY = {"available", "running"}


def test_health_shows_ec2_elbv2_sts_iam_ready():
    services = health()["services"]
    for s in ("ec2", "elbv2", "sts", "iam"):
        assert services.get(s) in READY, f"{s}: {services.get(s)}"
    # nothing else was asked for
    others = {k: v for k, v in services.items() if k not in ("ec2", "elbv2", "sts", "iam")}
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
    """host:port of the realizer's load-balancer listeners and of its instance metadata service
    (169.254.169.254:80, an address of the VPC bridges only): LocalStack's sockets too."""
    try:
        state = realizer_state()
    except OSError:
        return set()
    found = {l["address"] for l in state.get("listeners", {}).values()}
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
