"""Fixtures for the harness tests: they run against the LocalStack that `localstack/up` started."""

from __future__ import annotations

import json
import os
import pathlib
import time
import urllib.request
import uuid

import boto3
import pytest
from botocore.config import Config

LS_DIR = pathlib.Path(__file__).resolve().parent.parent
REPO = LS_DIR.parent
STATE = pathlib.Path(os.environ.get("CLUSTERCTL_LOCALSTACK_STATE_DIR") or LS_DIR / ".state").resolve()
PORT = int(os.environ.get("CLUSTERCTL_LOCALSTACK_PORT", "4566"))
ENDPOINT = f"http://127.0.0.1:{PORT}"
REGION = "us-east-1"
CLUSTER_TAG = "clusterctl:cluster"

# never go through a proxy to loopback
os.environ["NO_PROXY"] = os.environ["no_proxy"] = "127.0.0.1,localhost"


def health() -> dict:
    opener = urllib.request.build_opener(urllib.request.ProxyHandler({}))
    with opener.open(f"{ENDPOINT}/_localstack/health", timeout=5) as resp:
        return json.load(resp)


@pytest.fixture(scope="session", autouse=True)
def localstack_running() -> dict:
    try:
        return health()
    except OSError as e:
        pytest.fail(f"LocalStack does not answer at {ENDPOINT} ({e}): run localstack/up first")


def _client(service: str, region: str = REGION):
    return boto3.client(
        service,
        endpoint_url=ENDPOINT,
        region_name=region,
        aws_access_key_id="test",
        aws_secret_access_key="test",
        config=Config(retries={"total_max_attempts": 1}),  # no retries: see every error as it is
    )


@pytest.fixture(scope="session")
def ec2():
    return _client("ec2")


@pytest.fixture(scope="session")
def elbv2():
    return _client("elbv2")


@pytest.fixture(scope="session")
def sts():
    return _client("sts")


@pytest.fixture
def cluster() -> str:
    """A cluster name of its own per test, so tests never see each other's (or anyone's) resources."""
    return f"pytest-{uuid.uuid4().hex[:10]}"


def tag_spec(resource_type: str, cluster: str, **extra: str) -> list[dict]:
    tags = [{"Key": CLUSTER_TAG, "Value": cluster}, {"Key": "Name", "Value": f"{cluster}-{resource_type}"}]
    tags += [{"Key": k, "Value": v} for k, v in extra.items()]
    return [{"ResourceType": resource_type, "Tags": tags}]


def cluster_filter(cluster: str) -> list[dict]:
    return [{"Name": f"tag:{CLUSTER_TAG}", "Values": [cluster]}]


_next_octet = [150 + os.getpid() % 50]


def unique_octet() -> int:
    """Second octet of a VPC CIDR 10.X.0.0/16 of its own (150..199) per test: with the realizer a VPC
    with machines is a Docker network, and those must not overlap (other users of the same LocalStack,
    such as the Rust integration tests, use 10.61-63 and 10.200-210)."""
    o = _next_octet[0]
    _next_octet[0] = 150 + (o - 150 + 1) % 50
    return o


class Network:
    """A tagged VPC (10.X.0.0/16, X unique per test) with two public subnets, an internet gateway, a
    route table and a security group."""

    def __init__(self, ec2, cluster: str, octet: int | None = None):
        self.ec2, self.cluster = ec2, cluster
        self.octet = octet if octet is not None else unique_octet()
        self.cidr = f"10.{self.octet}.0.0/16"
        self.prefix = f"10.{self.octet}."
        self.vpc_id = ec2.create_vpc(CidrBlock=self.cidr, TagSpecifications=tag_spec("vpc", cluster))[
            "Vpc"
        ]["VpcId"]
        self.subnet_ids = [
            ec2.create_subnet(
                VpcId=self.vpc_id,
                CidrBlock=f"10.{self.octet}.{i}.0/24",
                AvailabilityZone=f"{ec2.meta.region_name}{az}",
                TagSpecifications=tag_spec("subnet", cluster),
            )["Subnet"]["SubnetId"]
            for i, az in ((1, "a"), (2, "b"))
        ]
        for s in self.subnet_ids:
            ec2.modify_subnet_attribute(SubnetId=s, MapPublicIpOnLaunch={"Value": True})
        self.igw_id = ec2.create_internet_gateway(TagSpecifications=tag_spec("internet-gateway", cluster))[
            "InternetGateway"
        ]["InternetGatewayId"]
        ec2.attach_internet_gateway(InternetGatewayId=self.igw_id, VpcId=self.vpc_id)
        self.rtb_id = ec2.create_route_table(VpcId=self.vpc_id, TagSpecifications=tag_spec("route-table", cluster))[
            "RouteTable"
        ]["RouteTableId"]
        ec2.create_route(RouteTableId=self.rtb_id, DestinationCidrBlock="0.0.0.0/0", GatewayId=self.igw_id)
        self.assoc_ids = [
            ec2.associate_route_table(RouteTableId=self.rtb_id, SubnetId=s)["AssociationId"] for s in self.subnet_ids
        ]
        self.sg_id = ec2.create_security_group(
            GroupName=f"{cluster}-nodes",
            Description="clusterctl nodes",
            VpcId=self.vpc_id,
            TagSpecifications=tag_spec("security-group", cluster),
        )["GroupId"]
        self.instance_ids: list[str] = []

    def run_instances(self, count: int, role: str = "worker", subnet: int = 0, **kw) -> list[str]:
        image_id = self.ec2.describe_images(
            Filters=[{"Name": "name", "Values": ["ubuntu/images/hvm-ssd/ubuntu-*-amd64-server-*"]}]
        )["Images"][0]["ImageId"]
        ids = [
            i["InstanceId"]
            for i in self.ec2.run_instances(
                ImageId=image_id,
                InstanceType="t3.medium",
                MinCount=count,
                MaxCount=count,
                SubnetId=self.subnet_ids[subnet],
                SecurityGroupIds=[self.sg_id],
                TagSpecifications=tag_spec("instance", self.cluster, **{"clusterctl:role": role}),
                **kw,
            )["Instances"]
        ]
        self.instance_ids += ids
        return ids

    def instances(self, ids: list[str]) -> dict[str, dict]:
        return {
            i["InstanceId"]: i
            for r in self.ec2.describe_instances(InstanceIds=ids)["Reservations"]
            for i in r["Instances"]
        }

    def wait_running(self, ids: list[str], timeout: float = 60) -> dict[str, dict]:
        """Waits until every instance is running (the realizer: when its sshd answers)."""
        deadline = time.monotonic() + timeout
        while True:
            found = self.instances(ids)
            states = {i: d["State"]["Name"] for i, d in found.items()}
            if len(found) == len(ids) and all(s == "running" for s in states.values()):
                return found
            if time.monotonic() > deadline:
                raise AssertionError(f"not running within {timeout} s: {states}")
            time.sleep(0.25)

    def destroy(self) -> None:
        if getattr(self, "destroyed", False):
            return
        ec2 = self.ec2
        if self.instance_ids:
            ec2.terminate_instances(InstanceIds=self.instance_ids)
        ec2.delete_security_group(GroupId=self.sg_id)
        for a in self.assoc_ids:
            ec2.disassociate_route_table(AssociationId=a)
        ec2.delete_route_table(RouteTableId=self.rtb_id)
        ec2.detach_internet_gateway(InternetGatewayId=self.igw_id, VpcId=self.vpc_id)
        ec2.delete_internet_gateway(InternetGatewayId=self.igw_id)
        for s in self.subnet_ids:
            ec2.delete_subnet(SubnetId=s)
        ec2.delete_vpc(VpcId=self.vpc_id)
        self.destroyed = True


@pytest.fixture
def network(ec2, cluster):
    net = Network(ec2, cluster)
    try:
        yield net
    finally:
        net.destroy()


# ------------------------------------------------------------------------------ realizer helpers
OPENER = urllib.request.build_opener(urllib.request.ProxyHandler({}))  # never via a proxy


def harness_json(path: str, method: str = "GET", body=None) -> dict:
    data = json.dumps(body).encode() if body is not None else None
    req = urllib.request.Request(f"{ENDPOINT}{path}", data=data, method=method, headers={"Content-Type": "application/json"})
    with OPENER.open(req, timeout=10) as resp:
        return json.load(resp)


def realizer_state() -> dict:
    return harness_json("/_clusterctl/realizer")


@pytest.fixture(scope="session")
def realizer_on() -> bool:
    try:
        return bool(realizer_state().get("enabled"))
    except OSError:
        return False


@pytest.fixture(scope="session")
def realized() -> dict:
    """Skips the test unless the EC2/NLB realizer is on: only then are instance addresses the
    addresses of containers made here, so only then may a test dial them."""
    try:
        state = realizer_state()
    except OSError as e:
        pytest.skip(f"no /_clusterctl/realizer ({e})")
    if not state.get("enabled"):
        pytest.skip("the realizer is off (CLUSTERCTL_LOCALSTACK_REALIZER=0)")
    return state


# ------------------------------------------------------------------------------ measurements
MEASUREMENTS: list[tuple[str, float]] = []


def measure(what: str, seconds: float) -> None:
    """Records a timing; all of them are printed at the end of the run."""
    MEASUREMENTS.append((what, seconds))


def pytest_terminal_summary(terminalreporter):
    if MEASUREMENTS:
        terminalreporter.section("realizer timings")
        for what, seconds in MEASUREMENTS:
            terminalreporter.write_line(f"{seconds:7.2f} s  {what}")
