"""localstack/up and localstack/down with the realizer, on a second harness of their own (another
state folder and port, CLUSTERCTL_LOCALSTACK_STATE_DIR / CLUSTERCTL_LOCALSTACK_PORT), so that the
LocalStack everyone else uses keeps running: down leaves no Docker object of the realizer behind
(nor a VPC router's policy routing rule or table), and up after a crash (kill -9) starts from a
clean slate."""

from __future__ import annotations

import json
import os
import socket
import subprocess
import time

import boto3
import pytest
from botocore.config import Config
from conftest import LS_DIR, Network

pytestmark = pytest.mark.usefixtures("realized")


def _free_port() -> int:
    for port in range(4590, 4690):
        with socket.socket() as s:
            try:
                s.bind(("127.0.0.1", port))
                return port
            except OSError:
                continue
    raise AssertionError("no free port in 4590..4689")


def _labelled(owner: str) -> dict[str, list[str]]:
    def ids(*args: str) -> list[str]:
        return subprocess.run(["docker", *args, "--filter", f"label=clusterctl.localstack={owner}"],
                              capture_output=True, text=True, check=True).stdout.split()

    return {"containers": ids("ps", "-aq"), "networks": ids("network", "ls", "-q"), "volumes": ids("volume", "ls", "-q")}


def _router_rules(bridges: list[str]) -> list[dict]:
    """The VPC routers' policy routing rules (routes.py) for these bridges."""
    rules = json.loads(subprocess.run(["ip", "-j", "-4", "rule", "show"], capture_output=True, text=True, check=True).stdout)
    return [r for r in rules if r.get("iif") in bridges]


def _table(table: int) -> list[dict]:
    p = subprocess.run(["ip", "-j", "-4", "route", "show", "table", str(table)], capture_output=True, text=True)
    return json.loads(p.stdout) if p.returncode == 0 and p.stdout.strip() else []


def _wait_router_rule(network_ids: list[str]) -> list[dict]:
    bridges = ["br-" + n[:12] for n in network_ids]
    deadline = time.monotonic() + 10
    while not (rules := _router_rules(bridges)):
        assert time.monotonic() < deadline, f"no VPC router rule for {bridges}"
        time.sleep(0.2)
    return rules


def test_down_leaves_nothing_and_up_after_a_crash_starts_clean(tmp_path, cluster):
    state = tmp_path / "harness"
    port = _free_port()
    env = os.environ | {
        "CLUSTERCTL_LOCALSTACK_STATE_DIR": str(state), "CLUSTERCTL_LOCALSTACK_PORT": str(port),
        "CLUSTERCTL_LOCALSTACK_REALIZER": "1",
    }
    owner = str(state.resolve())

    def up() -> str:
        out = subprocess.run([str(LS_DIR / "up")], env=env, capture_output=True, text=True, timeout=300)
        assert out.returncode == 0, out.stderr
        return out.stdout.strip().splitlines()[-1].split("=", 1)[1]

    def down() -> None:
        out = subprocess.run([str(LS_DIR / "down")], env=env, capture_output=True, text=True, timeout=120)
        assert out.returncode == 0, out.stderr

    try:
        endpoint = up()
        assert endpoint == f"http://127.0.0.1:{port}"
        kw = dict(endpoint_url=endpoint, region_name="us-east-1", aws_access_key_id="test",
                  aws_secret_access_key="test", config=Config(retries={"total_max_attempts": 1}))
        ec2, elbv2 = boto3.client("ec2", **kw), boto3.client("elbv2", **kw)

        def launch() -> Network:
            net = Network(ec2, cluster)
            ids = net.run_instances(2)
            net.wait_running(ids)
            lb = elbv2.create_load_balancer(Name=f"{cluster}-lb", Type="network", Subnets=net.subnet_ids)["LoadBalancers"][0]
            tg = elbv2.create_target_group(Name=f"{cluster}-tg", Protocol="TCP", Port=22, VpcId=net.vpc_id)["TargetGroups"][0]
            elbv2.create_listener(LoadBalancerArn=lb["LoadBalancerArn"], Protocol="TCP", Port=2222,
                                  DefaultActions=[{"Type": "forward", "TargetGroupArn": tg["TargetGroupArn"]}])
            return net

        launch()
        objs = _labelled(owner)
        assert len(objs["containers"]) == 2 and len(objs["networks"]) == 1, objs
        assert (state / "nodes").is_dir()
        (rule,) = _wait_router_rule(objs["networks"])  # the VPC's router: a rule and a routing table
        table, bridges = int(rule["table"]), [rule["iif"]]
        assert (state / "vpc-routers.json").exists()

        # a crash: LocalStack dies, its machines and networks stay behind
        pid = int((state / "localstack.pid").read_text())
        os.killpg(pid, 9)
        time.sleep(1)
        assert len(_labelled(owner)["containers"]) == 2
        # up after the crash: a clean slate (nothing of before), then it works as ever
        assert _router_rules(bridges) and _table(table)  # left behind by the crash
        up()
        assert _labelled(owner) == {"containers": [], "networks": [], "volumes": []}
        assert _router_rules(bridges) == [] and _table(table) == []
        launch()
        assert len(_labelled(owner)["containers"]) == 2
        (rule,) = _wait_router_rule(_labelled(owner)["networks"])
        table, bridges = int(rule["table"]), [rule["iif"]]

        t0 = time.monotonic()
        down()
        assert _labelled(owner) == {"containers": [], "networks": [], "volumes": []}
        assert not (state / "localstack.pid").exists()
        assert not (state / "nodes").exists()
        assert _router_rules(bridges) == [] and _table(table) == [] and not (state / "vpc-routers.json").exists()
        listening = subprocess.run(["ss", "-Hltn", f"sport = :{port}"], capture_output=True, text=True).stdout
        assert listening.strip() == "", listening  # nothing listens on the port any more
        print(f"down with 2 nodes and a balancer took {time.monotonic() - t0:.1f} s")
    finally:
        down()
