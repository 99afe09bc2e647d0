"""Fixtures for the harness tests: they run against the LocalStack that `localstack/up` started."""

from __future__ import annotations

import json
import os
import pathlib
import urllib.request
import uuid

import boto3
import pytest
from botocore.config import Config

LS_DIR = pathlib.Path(__file__).resolve().parent.parent
STATE = LS_DIR / ".state"
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


def _client(service: str):
    return boto3.client(
        service,
        endpoint_url=ENDPOINT,
        region_name=REGION,
        aws_access_key_id="test",
        aws_secret_access_key="test",
        config=Config(retries={"max_attempts": 1}),  # see every error as it is
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


class Network:
    """A tagged VPC with two public subnets, an internet gateway, a route table and a security group."""

    def __init__(self, ec2, cluster: str):
        self.ec2, self.cluster = ec2, cluster
        self.vpc_id = ec2.create_vpc(CidrBlock="10.42.0.0/16", TagSpecifications=tag_spec("vpc", cluster))[
            "Vpc"
        ]["VpcId"]
        self.subnet_ids = [
            ec2.create_subnet(
                VpcId=self.vpc_id,
                CidrBlock=f"10.42.{i}.0/24",
                AvailabilityZone=f"{REGION}{az}",
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

    def run_instances(self, count: int, role: str = "worker", **kw) -> list[str]:
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
                SubnetId=self.subnet_ids[0],
                SecurityGroupIds=[self.sg_id],
                TagSpecifications=tag_spec("instance", self.cluster, **{"clusterctl:role": role}),
                **kw,
            )["Instances"]
        ]
        self.instance_ids += ids
        return ids

    def destroy(self) -> None:
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


@pytest.fixture
def network(ec2, cluster):
    net = Network(ec2, cluster)
    try:
        yield net
    finally:
        net.destroy()
