"""Pins the raw LocalStack 4.14 / moto behaviours that differ from AWS and that clusterctl's AWS code
must cope with (README.md, "Quirks"). Where the realizer changes one of them (it is on by default),
the test pins both behaviours (``realizer_on``); change the test and the README together."""

from __future__ import annotations

import botocore.exceptions
import pytest
from conftest import CLUSTER_TAG, cluster_filter, tag_spec


def _error(excinfo) -> tuple[str, int]:
    r = excinfo.value.response
    return r["Error"]["Code"], r["ResponseMetadata"]["HTTPStatusCode"]


def test_unsupported_describe_instances_filters_fail_with_501(ec2, network):
    network.run_instances(1)  # moto evaluates filters per instance: with no instance at all nothing fails
    for name in ("client-token", "network-interface.addresses.private-ip-address"):
        with pytest.raises(botocore.exceptions.ClientError) as e:
            ec2.describe_instances(Filters=[{"Name": name, "Values": ["x"]}])
        assert _error(e) == ("InternalFailure", 501), name


def test_client_token(network, cluster, realizer_on):
    a = network.run_instances(1, ClientToken=f"{cluster}-token")
    b = network.run_instances(1, ClientToken=f"{cluster}-token")
    if realizer_on:
        assert a == b  # the realizer gives AWS's behaviour: the first launch again, nothing new
    else:
        assert a != b  # moto alone launches again


def test_run_instances_key_name(network, realizer_on):
    if realizer_on:  # the realizer checks it, as AWS does
        with pytest.raises(botocore.exceptions.ClientError) as e:
            network.run_instances(1, KeyName="no-such-key")
        assert _error(e) == ("InvalidKeyPair.NotFound", 400)
    else:
        assert network.run_instances(1, KeyName="no-such-key")  # moto alone does not check


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


def test_delete_subnet_and_vpc_in_use(ec2, elbv2, network, cluster, realizer_on):
    ids = network.run_instances(1)
    if not realizer_on:
        pytest.skip("moto alone deletes a subnet with instances (README, Quirks)")
    network.wait_running(ids)
    # with the realizer, as AWS: a subnet with a live machine, a VPC with a balancer cannot go
    with pytest.raises(botocore.exceptions.ClientError) as e:
        ec2.delete_subnet(SubnetId=network.subnet_ids[0])
    assert _error(e) == ("DependencyViolation", 400)
    lb = elbv2.create_load_balancer(Name=f"{cluster}-dep", Type="network", Subnets=[network.subnet_ids[1]])["LoadBalancers"][0]
    try:
        ec2.terminate_instances(InstanceIds=ids)
        ec2.delete_subnet(SubnetId=network.subnet_ids[0])  # no live machine any more
        for a in network.assoc_ids:
            ec2.disassociate_route_table(AssociationId=a)
        network.assoc_ids = []
        ec2.delete_route_table(RouteTableId=network.rtb_id)
        ec2.detach_internet_gateway(InternetGatewayId=network.igw_id, VpcId=network.vpc_id)
        with pytest.raises(botocore.exceptions.ClientError) as e:
            ec2.delete_vpc(VpcId=network.vpc_id)  # subnet 2 and the balancer still there
        assert _error(e) == ("DependencyViolation", 400)
    finally:
        elbv2.delete_load_balancer(LoadBalancerArn=lb["LoadBalancerArn"])
    # (the fixture deletes the rest; deleting a deleted subnet or route table is skipped there)
    ec2.delete_subnet(SubnetId=network.subnet_ids[1])
    ec2.delete_security_group(GroupId=network.sg_id)
    ec2.delete_internet_gateway(InternetGatewayId=network.igw_id)
    ec2.delete_vpc(VpcId=network.vpc_id)
    network.destroyed = True


def test_dry_run_is_ignored(ec2):
    vpc = ec2.create_vpc(CidrBlock="10.99.0.0/16", DryRun=True)["Vpc"]  # AWS: DryRunOperation error
    ec2.delete_vpc(VpcId=vpc["VpcId"])


def test_nlb_quirks(elbv2, network, cluster, realizer_on):
    kw = dict(Name=f"{cluster}-q", Type="network", Scheme="internet-facing", Subnets=network.subnet_ids)
    first = elbv2.create_load_balancer(**kw)["LoadBalancers"][0]
    second = elbv2.create_load_balancer(**kw)["LoadBalancers"][0]
    try:
        # AWS returns the existing balancer for an identical CreateLoadBalancer; moto makes another one
        assert first["LoadBalancerArn"] != second["LoadBalancerArn"]
        # network balancers get "app" ARNs (AWS: loadbalancer/net/...)
        assert ":loadbalancer/app/" in first["LoadBalancerArn"]
        if realizer_on:  # the DNS name is the VPC network's gateway address, where the forwarders listen
            assert first["DNSName"] == second["DNSName"] == network.prefix + "0.1"
        else:  # moto alone: a public-looking DNS name that must never be resolved
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
        action = [{"Type": "forward", "TargetGroupArn": tg["TargetGroupArn"]}]
        if realizer_on:
            # as AWS: an instance id that does not exist is refused; a group without a listener is unused
            with pytest.raises(botocore.exceptions.ClientError) as e:
                elbv2.register_targets(TargetGroupArn=tg["TargetGroupArn"], Targets=[{"Id": "i-0123456789abcdef0"}])
            assert _error(e)[0] == "InvalidTarget"
            ids = network.run_instances(1)
            network.wait_running(ids)
            elbv2.register_targets(TargetGroupArn=tg["TargetGroupArn"], Targets=[{"Id": ids[0]}])
            health = elbv2.describe_target_health(TargetGroupArn=tg["TargetGroupArn"])["TargetHealthDescriptions"]
            assert [(h["TargetHealth"]["State"], h["TargetHealth"]["Reason"]) for h in health] == [
                ("unused", "Target.NotInUse")
            ]
            # a second listener on the same port: DuplicateListener, as AWS
            elbv2.create_listener(LoadBalancerArn=first["LoadBalancerArn"], Protocol="TCP", Port=80, DefaultActions=action)
            with pytest.raises(elbv2.exceptions.DuplicateListenerException):
                elbv2.create_listener(LoadBalancerArn=first["LoadBalancerArn"], Protocol="TCP", Port=80, DefaultActions=action)
            # the harness's own limit: balancers of one VPC share the gateway address, so not a port
            with pytest.raises(botocore.exceptions.ClientError) as e:
                elbv2.create_listener(LoadBalancerArn=second["LoadBalancerArn"], Protocol="TCP", Port=80, DefaultActions=action)
            assert _error(e)[0] == "InvalidConfigurationRequest"
        else:
            # any target id is accepted and every target is "healthy", even one that does not exist
            elbv2.register_targets(TargetGroupArn=tg["TargetGroupArn"], Targets=[{"Id": "i-0123456789abcdef0"}])
            health = elbv2.describe_target_health(TargetGroupArn=tg["TargetGroupArn"])["TargetHealthDescriptions"]
            assert [h["TargetHealth"]["State"] for h in health] == ["healthy"]
            # a second listener on the same port is accepted (AWS: DuplicateListener)
            l1 = elbv2.create_listener(LoadBalancerArn=first["LoadBalancerArn"], Protocol="TCP", Port=80, DefaultActions=action)
            l2 = elbv2.create_listener(LoadBalancerArn=first["LoadBalancerArn"], Protocol="TCP", Port=80, DefaultActions=action)
            assert l1["Listeners"][0]["ListenerArn"] != l2["Listeners"][0]["ListenerArn"]
    finally:
        for lb in (first, second):
            elbv2.delete_load_balancer(LoadBalancerArn=lb["LoadBalancerArn"])
    elbv2.delete_target_group(TargetGroupArn=tg["TargetGroupArn"])


def test_tags_of_deleted_resources_are_gone_and_tag_filters_still_match(ec2, cluster):
    """moto keeps the tags of deleted resources and scans them all for every tag look-up; the
    harness drops them when the resource goes (as AWS does) and looks tags up directly."""
    vpc = ec2.create_vpc(CidrBlock="10.249.0.0/16", TagSpecifications=tag_spec("vpc", cluster))["Vpc"]["VpcId"]
    sg = ec2.create_security_group(GroupName=f"{cluster}-sg", Description="t", VpcId=vpc,
                                   TagSpecifications=tag_spec("security-group", cluster))["GroupId"]
    found = ec2.describe_vpcs(Filters=cluster_filter(cluster))["Vpcs"]
    assert [v["VpcId"] for v in found] == [vpc]
    assert {t["Key"] for t in found[0]["Tags"]} == {CLUSTER_TAG, "Name"}
    assert [g["GroupId"] for g in ec2.describe_security_groups(Filters=cluster_filter(cluster))["SecurityGroups"]] == [sg]
    ec2.delete_security_group(GroupId=sg)
    ec2.delete_vpc(VpcId=vpc)
    left = ec2.describe_tags(Filters=[{"Name": "resource-id", "Values": [vpc, sg]}])["Tags"]
    assert left == []


def test_source_dest_check_is_the_primary_interfaces(ec2, network, realizer_on):
    """AWS: an instance's SourceDestCheck is its primary network interface's. Moto keeps two
    unrelated flags (and the Attribute/Value form of ModifyInstanceAttribute stores a string)."""
    (iid,) = network.run_instances(1)

    def flags() -> tuple[bool, bool, bool]:
        inst = network.instances([iid])[iid]
        attr = ec2.describe_instance_attribute(InstanceId=iid, Attribute="sourceDestCheck")["SourceDestCheck"]["Value"]
        return inst["SourceDestCheck"], attr, inst["NetworkInterfaces"][0]["SourceDestCheck"]

    eni = network.instances([iid])[iid]["NetworkInterfaces"][0]["NetworkInterfaceId"]
    assert flags() == (True, True, True)
    ec2.modify_instance_attribute(InstanceId=iid, SourceDestCheck={"Value": False})
    assert flags() == ((False, False, False) if realizer_on else (False, False, True))
    ec2.modify_instance_attribute(InstanceId=iid, Attribute="sourceDestCheck", Value="true")
    assert flags() == (True, True, True)
    ec2.modify_network_interface_attribute(NetworkInterfaceId=eni, SourceDestCheck={"Value": False})
    assert flags() == ((False, False, False) if realizer_on else (True, True, False))


def test_routes_to_instances(ec2, network, cluster, realizer_on):
    """CreateRoute with InstanceId / NetworkInterfaceId and how DescribeRouteTables shows it."""
    (iid,) = network.run_instances(1)
    eni = network.instances([iid])[iid]["NetworkInterfaces"][0]["NetworkInterfaceId"]
    rtb = network.rtb_id

    def routes() -> dict[str, dict]:
        (rt,) = ec2.describe_route_tables(RouteTableIds=[rtb])["RouteTables"]
        return {r["DestinationCidrBlock"]: r for r in rt["Routes"] if r.get("DestinationCidrBlock", "").startswith("100.64.")}

    ec2.create_route(RouteTableId=rtb, DestinationCidrBlock="100.64.1.0/24", InstanceId=iid)
    ec2.create_route(RouteTableId=rtb, DestinationCidrBlock="100.64.2.0/24", NetworkInterfaceId=eni)
    # a second route to the same destination: RouteAlreadyExists (AWS); moto checks that only for
    # InstanceId and silently overwrites the route for NetworkInterfaceId
    with pytest.raises(botocore.exceptions.ClientError) as e:
        ec2.create_route(RouteTableId=rtb, DestinationCidrBlock="100.64.1.0/24", InstanceId=iid)
    assert _error(e) == ("RouteAlreadyExists", 400)
    if realizer_on:
        with pytest.raises(botocore.exceptions.ClientError) as e:
            ec2.create_route(RouteTableId=rtb, DestinationCidrBlock="100.64.2.0/24", NetworkInterfaceId=eni)
        assert _error(e) == ("RouteAlreadyExists", 400)
    else:
        ec2.create_route(RouteTableId=rtb, DestinationCidrBlock="100.64.2.0/24", NetworkInterfaceId=eni)

    r = routes()
    if realizer_on:  # as AWS: both ids (and the owner) whichever was given
        full = {"InstanceId": iid, "InstanceOwnerId": "000000000000", "NetworkInterfaceId": eni,
                "Origin": "CreateRoute", "State": "active"}
        assert r["100.64.1.0/24"] == {"DestinationCidrBlock": "100.64.1.0/24", **full}
        assert r["100.64.2.0/24"] == {"DestinationCidrBlock": "100.64.2.0/24", **full}
    else:  # moto: only the id it was given
        assert r["100.64.1.0/24"] == {"DestinationCidrBlock": "100.64.1.0/24", "InstanceId": iid,
                                      "Origin": "CreateRoute", "State": "active"}
        assert r["100.64.2.0/24"] == {"DestinationCidrBlock": "100.64.2.0/24", "NetworkInterfaceId": eni,
                                      "Origin": "CreateRoute", "State": "active"}

    # filters on a route's target: moto lacks them (501)
    for name, value in (("route.instance-id", iid), ("route.network-interface-id", eni), ("route.state", "active")):
        kw = dict(Filters=[{"Name": name, "Values": [value]}, {"Name": "vpc-id", "Values": [network.vpc_id]}])
        if realizer_on:
            assert rtb in [t["RouteTableId"] for t in ec2.describe_route_tables(**kw)["RouteTables"]], name
        else:
            with pytest.raises(botocore.exceptions.ClientError) as e:
                ec2.describe_route_tables(**kw)
            assert _error(e) == ("InternalFailure", 501), name

    # a target in another VPC: InvalidParameterValue (AWS); moto accepts it
    other = ec2.create_vpc(CidrBlock="10.248.0.0/16", TagSpecifications=tag_spec("vpc", cluster))["Vpc"]["VpcId"]
    subnet = ec2.create_subnet(VpcId=other, CidrBlock="10.248.1.0/24")["Subnet"]["SubnetId"]
    foreign = ec2.create_network_interface(SubnetId=subnet)["NetworkInterface"]["NetworkInterfaceId"]
    try:
        if realizer_on:
            with pytest.raises(botocore.exceptions.ClientError) as e:
                ec2.create_route(RouteTableId=rtb, DestinationCidrBlock="100.64.3.0/24", NetworkInterfaceId=foreign)
            assert _error(e) == ("InvalidParameterValue", 400)
        else:
            ec2.create_route(RouteTableId=rtb, DestinationCidrBlock="100.64.3.0/24", NetworkInterfaceId=foreign)
            ec2.delete_route(RouteTableId=rtb, DestinationCidrBlock="100.64.3.0/24")
    finally:
        ec2.delete_network_interface(NetworkInterfaceId=foreign)
        ec2.delete_subnet(SubnetId=subnet)
        ec2.delete_vpc(VpcId=other)

    # the instance terminated: AWS shows blackhole (and no instance id); moto still "active"
    ec2.terminate_instances(InstanceIds=[iid])
    r = routes()
    if realizer_on:
        assert r["100.64.1.0/24"] == {"DestinationCidrBlock": "100.64.1.0/24", "NetworkInterfaceId": eni,
                                      "Origin": "CreateRoute", "State": "blackhole"}
    else:
        assert r["100.64.1.0/24"]["State"] == "active"
