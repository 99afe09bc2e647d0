"""Pins the raw LocalStack 4.14 / moto behaviours that differ from AWS and that clusterctl's AWS code
must cope with (README.md, "Quirks"). When the harness itself changes one of them (the EC2 and NLB
realizers will), change the test and the README together."""

from __future__ import annotations

import botocore.exceptions
import pytest
from conftest import CLUSTER_TAG, cluster_filter, tag_spec


def _error(excinfo) -> tuple[str, int]:
    r = excinfo.value.response
    return r["Error"]["Code"], r["ResponseMetadata"]["HTTPStatusCode"]


def test_unsupported_describe_instances_filters_fail_with_501(ec2):
    for name in ("client-token", "network-interface.addresses.private-ip-address"):
        with pytest.raises(botocore.exceptions.ClientError) as e:
            ec2.describe_instances(Filters=[{"Name": name, "Values": ["x"]}])
        assert _error(e) == ("InternalFailure", 501), name


def test_client_token_is_ignored(network, cluster):
    a = network.run_instances(1, ClientToken=f"{cluster}-token")
    b = network.run_instances(1, ClientToken=f"{cluster}-token")
    assert a != b  # AWS would return the first launch again


def test_run_instances_does_not_check_key_name(network):
    assert network.run_instances(1, KeyName="no-such-key")  # AWS: InvalidKeyPair.NotFound


def test_delete_security_group_in_use_succeeds(ec2, network, cluster):
    network.run_instances(1)
    sg = ec2.create_security_group(
        GroupName=f"{cluster}-extra", Description="x", VpcId=network.vpc_id,
        TagSpecifications=tag_spec("security-group", cluster),
    )["GroupId"]
    ec2.delete_security_group(GroupId=sg)  # unused: fine everywhere
    # the nodes' group is in use by a running instance: AWS says DependencyViolation, moto deletes it
    ec2.delete_security_group(GroupId=network.sg_id)
    assert ec2.describe_security_groups(Filters=cluster_filter(cluster))["SecurityGroups"] == []
    network.sg_id = ec2.create_security_group(  # for the fixture's clean-up
        GroupName=f"{cluster}-nodes", Description="x", VpcId=network.vpc_id
    )["GroupId"]


def test_dry_run_is_ignored(ec2):
    vpc = ec2.create_vpc(CidrBlock="10.99.0.0/16", DryRun=True)["Vpc"]  # AWS: DryRunOperation error
    ec2.delete_vpc(VpcId=vpc["VpcId"])


def test_nlb_quirks(elbv2, network, cluster):
    kw = dict(Name=f"{cluster}-q", Type="network", Scheme="internet-facing", Subnets=network.subnet_ids)
    first = elbv2.create_load_balancer(**kw)["LoadBalancers"][0]
    second = elbv2.create_load_balancer(**kw)["LoadBalancers"][0]
    try:
        # AWS returns the existing balancer for an identical CreateLoadBalancer; moto makes another one
        assert first["LoadBalancerArn"] != second["LoadBalancerArn"]
        # network balancers get "app" ARNs (AWS: loadbalancer/net/...), and a public-looking DNS name
        assert ":loadbalancer/app/" in first["LoadBalancerArn"]
        assert first["DNSName"].endswith(".elb.amazonaws.com")
        assert first["State"]["Code"] == "provisioning"

        tg = elbv2.create_target_group(
            Name=f"{cluster}-q", Protocol="TCP", Port=80, VpcId=network.vpc_id, TargetType="instance"
        )["TargetGroups"][0]
        # AWS returns the existing target group for an identical CreateTargetGroup; moto refuses
        with pytest.raises(elbv2.exceptions.DuplicateTargetGroupNameException):
            elbv2.create_target_group(
                Name=f"{cluster}-q", Protocol="TCP", Port=80, VpcId=network.vpc_id, TargetType="instance"
            )
        # any target id is accepted and every target is "healthy", even one that does not exist
        elbv2.register_targets(TargetGroupArn=tg["TargetGroupArn"], Targets=[{"Id": "i-0123456789abcdef0"}])
        health = elbv2.describe_target_health(TargetGroupArn=tg["TargetGroupArn"])["TargetHealthDescriptions"]
        assert [h["TargetHealth"]["State"] for h in health] == ["healthy"]

        # a second listener on the same port is accepted (AWS: DuplicateListener)
        action = [{"Type": "forward", "TargetGroupArn": tg["TargetGroupArn"]}]
        l1 = elbv2.create_listener(LoadBalancerArn=first["LoadBalancerArn"], Protocol="TCP", Port=80, DefaultActions=action)
        l2 = elbv2.create_listener(LoadBalancerArn=first["LoadBalancerArn"], Protocol="TCP", Port=80, DefaultActions=action)
        assert l1["Listeners"][0]["ListenerArn"] != l2["Listeners"][0]["ListenerArn"]
    finally:
        for lb in (first, second):
            elbv2.delete_load_balancer(LoadBalancerArn=lb["LoadBalancerArn"])
    elbv2.delete_target_group(TargetGroupArn=tg["TargetGroupArn"])


def test_ec2_describe_tags_keeps_tags_of_deleted_resources(ec2, cluster):
    vpc = ec2.create_vpc(CidrBlock="10.98.0.0/16", TagSpecifications=tag_spec("vpc", cluster))["Vpc"]["VpcId"]
    ec2.delete_vpc(VpcId=vpc)
    assert ec2.describe_vpcs(Filters=cluster_filter(cluster))["Vpcs"] == []
    left = ec2.describe_tags(Filters=[{"Name": "key", "Values": [CLUSTER_TAG]}, {"Name": "value", "Values": [cluster]}])
    assert [t["ResourceId"] for t in left["Tags"]] == [vpc]  # AWS: gone with the resource
