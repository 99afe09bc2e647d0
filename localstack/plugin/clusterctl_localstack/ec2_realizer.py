"""EC2 realizer: every instance that moto records becomes a node container.

The realizer hooks into moto's EC2 backend (see ``install``), so that every response moto builds
already shows the real machine:

- one Docker network per VPC (``ccvpc-<owner>-<vpc-id>``): subnet = the VPC's CIDR, gateway = its
  first address (10.x.0.1 for 10.x.0.0/16: the address the host has on that network), no IP
  masquerading (nodes reach this machine only: their gateway, the load balancers on it, and
  LocalStack on the docker0 address);
- one node container per instance, named by the instance id, at the instance's private IP (moto
  takes it from the subnet, from .4 on, so never the gateway; the realizer wires it, not Docker,
  with its subnet's prefix as AWS's DHCP gives it: see nodenet.py), with the key pair's public key,
  the user data and the instance id in ``<state>/nodes/<id>`` mounted at /etc/clusterctl-instance;
- the public IP of an instance that gets one is its private IP (the only reachable address):
  moto's random 54.x address is never made, and ``PublicDnsName`` stays empty (as for a VPC without
  DNS host names);
- states: ``pending`` until sshd answers on port 22, then ``running``; stop/start/reboot/terminate
  act on the container (terminate removes it before the API call returns);
- a container that is not running while its instance is (``docker kill``) makes
  DescribeInstanceStatus report failed instance and system reachability checks;
- each VPC network gets a router on the host (routes.py): routes whose target is an instance
  forward real traffic to it;
- and a resolver on its gateway (vpcdns.py), the nodes' name server, answering the instances'
  private DNS names (``ip-10-1-0-5.ec2.internal``);
- and the instance metadata service at 169.254.169.254 (imds.py), with IMDSv2, the hop limit and
  a signed instance identity document.
"""

from __future__ import annotations

import asyncio
import base64
import datetime
import functools
import ipaddress
import json
import logging
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import Any, Optional

from . import aioloop, imds, nodenet, settings, vpcdns
from .dockercli import (
    DockerError, containers, create_and_start, docker, docker_bytes, image_exists, label_args, networks, pid_of, start,
)

LOG = logging.getLogger("clusterctl.realizer")

STATE_CODES = {
    "pending": 0, "running": 16, "shutting-down": 32, "terminated": 48, "stopping": 64, "stopped": 80,
}
MONITOR_INTERVAL = 1.0


class RealizerError(Exception):
    """A launch the harness cannot realize; becomes an EC2 error (code, message)."""

    def __init__(self, code: str, message: str):
        super().__init__(message)
        self.code = code
        self.message = message


@dataclass
class VpcNet:
    key: tuple[str, str, str]  # account, region, vpc id
    name: str
    cidr: str
    gateway: str
    bridge: str  # the Linux bridge that nodes' veth pairs join (nodenet.py)
    users: set[str] = field(default_factory=set)


@dataclass
class Node:
    iid: str
    account: str
    region: str
    vpc_id: str
    ip: str
    image: str
    ami: str
    instance: Any  # moto's Instance
    net_key: tuple[str, str, str]
    subnet_cidr: str = ""  # the instance's subnet: the prefix of its eth0 (nodenet.plumb)
    lock: threading.Lock = field(default_factory=threading.Lock)
    gen: int = 0  # bumped by every API transition; background work of an older one gives up
    desired: str = "running"  # running | stopped | terminated
    created_container: bool = False
    busy: bool = False  # a start/stop/reboot is under way: no status verdicts meanwhile
    container_state: Optional[str] = None  # as the monitor last saw it (None: no container)
    impaired_since: Optional[datetime.datetime] = None
    launched: float = field(default_factory=time.monotonic)
    invisible_until: float = 0.0
    ready_after_s: Optional[float] = None
    terminated_at: float = 0.0


def _set_state(inst: Any, name: str) -> None:
    inst._state.name = name
    inst._state.code = STATE_CODES[name]


def _now_utc() -> datetime.datetime:
    return datetime.datetime.now(datetime.timezone.utc)


def _cgroup_hierarchies() -> list[str]:
    """The host's cgroup v1 hierarchies that a node gets bind-mounted (see
    localstack/node-image/run-node: a private tmpfs at /sys/fs/cgroup plus one bind mount per
    hierarchy, so that the node's systemd cannot remount the host's /sys/fs/cgroup)."""
    out = []
    with open("/proc/self/mounts") as f:
        for line in f:
            parts = line.split()
            if len(parts) < 3 or parts[2] not in ("cgroup", "cgroup2"):
                continue
            mp = parts[1]
            if mp.startswith("/sys/fs/cgroup/") and mp.count("/") == 4:
                out.append(mp)
    return out


class Ec2Realizer:
    def __init__(self) -> None:
        self.lock = threading.RLock()
        self.net_lock = threading.RLock()  # network create/remove decisions
        self.nodes: dict[str, Node] = {}
        self.nets: dict[tuple[str, str, str], VpcNet] = {}
        self.pool = ThreadPoolExecutor(max_workers=12, thread_name_prefix="clusterctl-docker")
        self.rm_pool = ThreadPoolExecutor(max_workers=4, thread_name_prefix="clusterctl-rm")
        # waits for sshd of booting nodes: mostly idle threads, kept off the docker pool so that
        # a large launch starts every container at once instead of six at a time
        self.boot_wait_pool = ThreadPoolExecutor(max_workers=64, thread_name_prefix="clusterctl-boot")
        self._images_ok: dict[str, float] = {}
        self._cgroups: Optional[list[str]] = None
        self._stop = threading.Event()
        self.monitor_errors = 0
        self.listeners: list[Any] = []  # callables(event, node) for the NLB realizer
        self._monitor = threading.Thread(target=self._monitor_loop, name="clusterctl-monitor", daemon=True)
        self._monitor.start()

    # ------------------------------------------------------------------ images
    def image_for(self, ami: str) -> str:
        """The local image an AMI boots: localstack/images.json, then <state>/images.d/*.json."""
        mapping: dict[str, str] = {}
        default = settings.node_image()
        files = [settings.localstack_dir() / "images.json"]
        d = settings.state_dir() / "images.d"
        if d.is_dir():
            files += sorted(d.glob("*.json"))
        for f in files:
            try:
                data = json.loads(f.read_text())
            except FileNotFoundError:
                continue
            except (OSError, ValueError) as e:
                LOG.warning("ignoring image mapping %s: %s", f, e)
                continue
            default = data.get("default") or default
            mapping.update(data.get("amis") or {})
        return mapping.get(ami) or default

    def _check_image(self, image: str, ami: str) -> None:
        t = self._images_ok.get(image)
        if t and time.monotonic() - t < 30:
            return
        try:
            exists = image_exists(image)
        except DockerError as e:
            raise RealizerError("InternalError", f"the harness cannot reach Docker ({e.stderr[:200]}); "
                                "scripts/lib/ensure-docker starts it") from e
        if not exists:
            raise RealizerError(
                "InvalidAMIID.Unavailable",
                f"AMI {ami} boots the local image {image}, which does not exist "
                "(the harness never pulls; build it with localstack/node-image/build)",
            )
        self._images_ok[image] = time.monotonic()

    # ---------------------------------------------------------------- networks
    def net_name(self, vpc_id: str) -> str:
        return f"ccvpc-{settings.owner_short()}-{vpc_id}"

    def ensure_network(self, account: str, region: str, vpc_id: str, cidr: str, user: str) -> VpcNet:
        key = (account, region, vpc_id)
        with self.net_lock:
            net = self.nets.get(key)
            if net is None:
                net = self._create_network(key, cidr)
                self.nets[key] = net
            vpcdns.resolver().ensure(net.name, net.gateway, net.cidr, region)
            imds.service().ensure(net.bridge, self.metadata_caller)
            net.users.add(user)
            return net

    def release_network(self, key: tuple[str, str, str], user: str) -> None:
        with self.net_lock:
            net = self.nets.get(key)
            if net:
                net.users.discard(user)
        # removed by the monitor when it has no users left (not in the API call's path)

    def network_for(self, account: str, region: str, vpc_id: str) -> Optional[VpcNet]:
        return self.nets.get((account, region, vpc_id))

    def _create_network(self, key: tuple[str, str, str], cidr: str) -> VpcNet:
        account, region, vpc_id = key
        name = self.net_name(vpc_id)
        net = ipaddress.ip_network(cidr, strict=False)
        gateway = str(net.network_address + 1)
        labels = settings.base_labels("vpc-network") | {
            settings.LABEL_VPC: vpc_id, settings.LABEL_ACCOUNT: account, settings.LABEL_REGION: region,
        }
        # a network of that name left from before (same VPC): reuse it if it fits
        for n in networks({settings.LABEL_OWNER: settings.owner(), settings.LABEL_VPC: vpc_id}):
            subnets = [c.get("Subnet") for c in (n.get("IPAM", {}).get("Config") or [])]
            if n.get("Name") == name and subnets == [str(net)]:
                return VpcNet(key, name, str(net), gateway, nodenet.bridge_of(n.get("Id", "")))
            self._remove_network(n.get("Name"))
        args = [
            "network", "create", "--driver", "bridge", "--subnet", str(net), "--gateway", gateway,
            "-o", "com.docker.network.bridge.enable_ip_masquerade=false",
            *label_args(labels), name,
        ]
        for attempt in range(2):
            try:
                network_id = docker(*args, timeout=30).strip()
                LOG.info("created network %s (%s, gateway %s) for %s", name, net, gateway, vpc_id)
                return VpcNet(key, name, str(net), gateway, nodenet.bridge_of(network_id))
            except DockerError as e:
                if attempt == 0 and "overlap" in e.stderr.lower() and self._free_overlapping(net):
                    continue
                if "overlap" in e.stderr.lower():
                    raise RealizerError(
                        "Unsupported",
                        f"the harness cannot give VPC {vpc_id} ({cidr}) a Docker network: its CIDR overlaps "
                        f"another network on this machine ({self._overlapping(net)}); VPCs with machines or "
                        "load balancers must not overlap here",
                    ) from e
                raise RealizerError("InternalError", f"the harness could not create a network for {vpc_id}: {e}") from e
        raise AssertionError("unreachable")

    def _overlapping(self, net: ipaddress.IPv4Network) -> str:
        out = []
        try:
            for n in json.loads(docker("network", "inspect", *docker("network", "ls", "-q").split())):
                for c in n.get("IPAM", {}).get("Config") or []:
                    try:
                        if ipaddress.ip_network(c.get("Subnet", ""), strict=False).overlaps(net):
                            out.append(f"{n['Name']} {c['Subnet']}")
                    except ValueError:
                        pass
        except (DockerError, ValueError):
            pass
        return ", ".join(out) or "unknown"

    def _free_overlapping(self, net: ipaddress.IPv4Network) -> bool:
        """Removes our own overlapping networks that nothing uses any more. True if one was removed."""
        freed = False
        in_use = {n.name for n in self.nets.values() if n.users}
        for n in networks({settings.LABEL_OWNER: settings.owner()}):
            subnets = [c.get("Subnet") for c in (n.get("IPAM", {}).get("Config") or [])]
            if n.get("Name") in in_use:
                continue
            if any(ipaddress.ip_network(s, strict=False).overlaps(net) for s in subnets if s):
                if self._remove_network(n.get("Name")):
                    vpcdns.resolver().drop(n.get("Name"))
                    self.nets = {k: v for k, v in self.nets.items() if v.name != n.get("Name")}
                    freed = True
        return freed

    def _remove_network(self, name: str) -> bool:
        try:
            docker("network", "rm", name, timeout=30)
            LOG.info("removed network %s", name)
            return True
        except DockerError as e:
            if "not found" in e.stderr.lower() or "no such network" in e.stderr.lower():
                return True
            LOG.warning("could not remove network %s: %s", name, e.stderr)
            return False

    # ------------------------------------------------------- moto hooks: launch
    def on_run(self, backend: Any, reservation: Any) -> None:
        """Called inside moto's run_instances, before the response is built. Raises RealizerError
        (after undoing moto's launch) when the harness cannot realize the instances."""
        from .faults import FAULTS

        account, region = backend.account_id, backend.region_name
        instances = list(reservation.instances)
        try:
            if not instances:
                return
            ami = instances[0].image_id or ""
            image = self.image_for(ami)
            self._check_image(image, ami)
            vpc_ids = {i.vpc_id for i in instances}
            if None in vpc_ids:
                raise RealizerError("Unsupported", "the harness realizes only instances in a VPC subnet")
            nets = {}
            for vpc_id in vpc_ids:
                vpc = backend.get_vpc(vpc_id)
                nets[vpc_id] = self.ensure_network(account, region, vpc_id, vpc.cidr_block, user=f"launch:{reservation.id}")
        except RealizerError:
            backend.reservations.pop(reservation.id, None)
            for i in instances:
                try:
                    i.terminate()
                except Exception:  # noqa: BLE001
                    pass
            raise
        invisible_s = FAULTS.invisible_ms(region) / 1000.0
        try:
            for inst in instances:
                nic = inst.nics[0]
                if nic.public_ip is not None or inst.associate_public_ip:
                    nic.public_ip = nic.private_ip_address  # the only reachable address is the container's
                _set_state(inst, "pending")
                net = self.ensure_network(account, region, inst.vpc_id, nets[inst.vpc_id].cidr, user=inst.id)
                node = Node(
                    iid=inst.id, account=account, region=region, vpc_id=inst.vpc_id, ip=inst.private_ip,
                    image=image, ami=ami, instance=inst, net_key=net.key,
                    subnet_cidr=backend.get_subnet(inst.subnet_id).cidr_block,
                )
                if invisible_s > 0:
                    node.invisible_until = node.launched + invisible_s
                self._write_meta(backend, node)
                with self.lock:
                    self.nodes[inst.id] = node
                self.pool.submit(self._boot, node, node.gen, True)
        finally:
            for net in nets.values():
                self.release_network(net.key, f"launch:{reservation.id}")

    def _write_meta(self, backend: Any, node: Node) -> None:
        inst = node.instance
        d = settings.nodes_dir() / node.iid
        d.mkdir(parents=True, exist_ok=True)
        key = b""
        if inst.key_name and inst.key_name in backend.key_pairs:
            kp = backend.key_pairs[inst.key_name]
            key = kp.material_public if isinstance(kp.material_public, bytes) else str(kp.material_public).encode()
        (d / "authorized_keys").write_bytes(key.strip() + b"\n" if key.strip() else b"")
        (d / "instance-id").write_text(node.iid + "\n")
        ud = inst.user_data
        if ud:
            raw = ud.as_bytes() if hasattr(ud, "as_bytes") else (ud.encode() if isinstance(ud, str) else bytes(ud))
            try:
                data = base64.b64decode(raw, validate=False)
            except ValueError:
                data = raw
            (d / "user-data").write_bytes(data)
        else:
            (d / "user-data").unlink(missing_ok=True)
        ep = settings.cloud_endpoint()
        if ep:
            (d / "cloud-endpoint").write_text(ep + "\n")
        hostname = "ip-" + node.ip.replace(".", "-")
        (d / "hosts").write_text(
            "127.0.0.1\tlocalhost\n::1\tlocalhost ip6-localhost ip6-loopback\n"
            f"{node.ip}\t{hostname}\n"
        )
        # the VPC resolver (vpcdns.py) on the network's gateway, with the region's private domain
        # to search, as AWS's DHCP options give an instance
        net = self.nets[node.net_key]
        (d / "resolv.conf").write_text(f"nameserver {net.gateway}\nsearch {vpcdns.domain_of(node.region)}\n")
        extra = {
            "region": node.region, "availability-zone": inst.placement, "instance-type": inst.instance_type,
            "local-ipv4": node.ip, "ami-id": node.ami, "vpc-id": node.vpc_id, "subnet-id": inst.subnet_id or "",
            "account-id": node.account,
        }
        if inst.nics[0].public_ip:
            extra["public-ipv4"] = inst.nics[0].public_ip
        for k, v in extra.items():
            (d / k).write_text(f"{v}\n")

    def _container_config(self, node: Node) -> dict:
        """What ``localstack/node-image/run-node`` passes to ``docker run``, as an Engine API
        create request, except the network: ``NetworkDisabled``, wired by ``nodenet.plumb``."""
        if self._cgroups is None:
            self._cgroups = _cgroup_hierarchies()
        meta = settings.nodes_dir() / node.iid
        labels = settings.base_labels("node") | {
            settings.LABEL_INSTANCE: node.iid, settings.LABEL_VPC: node.vpc_id,
            settings.LABEL_ACCOUNT: node.account, settings.LABEL_REGION: node.region,
            settings.LABEL_IMAGE_ID: node.ami,
        }
        tmpfs = {"/run": "", "/run/lock": "", "/sys/fs/cgroup": "rw,nosuid,nodev,noexec,mode=755"}
        mounts = []
        if settings.node_docker_storage() == "volume":
            mounts.append({"Type": "volume", "Target": "/var/lib/docker"})  # anonymous: removed with rm -v
        else:
            tmpfs["/var/lib/docker"] = "exec"
        return {
            "Image": node.image,
            "Hostname": "ip-" + node.ip.replace(".", "-"),
            "Tty": True,  # systemd's console is the pty that `docker logs` records
            "Labels": labels,
            "StopSignal": "SIGRTMIN+3",
            "NetworkDisabled": True,
            "HostConfig": {
                "NetworkMode": "none",
                "CapAdd": ["ALL"], "CapDrop": ["SYS_RESOURCE"],
                "SecurityOpt": ["seccomp=unconfined", "apparmor=unconfined"],
                "MaskedPaths": [], "ReadonlyPaths": [],  # --security-opt systempaths=unconfined
                "Tmpfs": tmpfs,
                "Mounts": mounts,
                "Binds": [f"{mp}:{mp}:rw" for mp in self._cgroups] + [
                    f"{meta}:/etc/clusterctl-instance:ro",
                    f"{meta / 'hosts'}:/etc/hosts",  # what Docker writes for a networked container
                    f"{meta / 'resolv.conf'}:/etc/resolv.conf",
                ],
                "CgroupnsMode": "host",
            },
        }

    def _plumb(self, node: Node, pid: int) -> None:
        net = self.nets[node.net_key]
        nodenet.plumb(pid, node.iid, node.ip, node.subnet_cidr or net.cidr, net.gateway, net.bridge)

    def _boot(self, node: Node, gen: int, create: bool) -> None:
        """Creates (or starts) the container, then waits for sshd and makes the instance running."""
        t0 = time.monotonic()
        with node.lock:
            if node.gen != gen or node.desired != "running":
                return
            node.busy = True
            try:
                if create and not node.created_container:
                    pid = create_and_start(node.iid, self._container_config(node))
                    node.created_container = True
                else:
                    pid = start(node.iid)
                self._plumb(node, pid)
            except DockerError as e:
                node.busy = False
                LOG.error("instance %s: could not %s its container: %s", node.iid, "create" if create else "start", e)
                if create:
                    self._fail_launch(node, str(e))
                return
        if node.desired == "terminated":  # terminated while docker run ran: the container must go
            self._remove_containers([node.iid])
            return
        self.boot_wait_pool.submit(self._await_sshd, node, gen, t0)

    def _await_sshd(self, node: Node, gen: int, t0: float) -> None:
        """Makes a booting node running once its sshd answers (or with failed checks if it never does)."""
        ok = False
        try:
            ok = aioloop.run(self._wait_ssh(node, gen), timeout=settings.ready_timeout() + 30)
        except Exception as e:  # noqa: BLE001
            LOG.warning("instance %s: readiness wait failed: %s", node.iid, e)
        with node.lock:
            node.busy = False
            if node.gen != gen or node.desired != "running":
                return
            if node.instance.state == "pending":
                _set_state(node.instance, "running")
                self._notify("running", node)
            if ok:
                node.ready_after_s = time.monotonic() - t0
                LOG.info("instance %s (%s) running: sshd answered %.1f s after the container start", node.iid, node.ip, node.ready_after_s)
            else:
                LOG.warning("instance %s: sshd did not answer; running with failed status checks", node.iid)

    async def _wait_ssh(self, node: Node, gen: int) -> bool:
        deadline = time.monotonic() + settings.ready_timeout()
        dead_since: Optional[float] = None
        while time.monotonic() < deadline:
            if node.gen != gen or node.desired != "running":
                return False
            try:
                r, w = await asyncio.wait_for(asyncio.open_connection(node.ip, 22), 1.0)
                try:
                    banner = await asyncio.wait_for(r.read(64), 2.0)
                finally:
                    w.close()
                if banner.startswith(b"SSH-"):
                    return True
            except (OSError, asyncio.TimeoutError):
                pass
            # a container that died while booting: give up after a few seconds (running, impaired)
            st = node.container_state
            if st is not None and st not in ("running", "created", "restarting"):
                dead_since = dead_since or time.monotonic()
                if time.monotonic() - dead_since > 4:
                    return False
            else:
                dead_since = None
            await asyncio.sleep(0.2)
        return False

    def _fail_launch(self, node: Node, why: str) -> None:
        from moto.ec2.models.instances import StateReason

        inst = node.instance
        node.desired = "terminated"
        node.terminated_at = time.monotonic()
        _set_state(inst, "terminated")
        inst._reason = "Server.InternalError"
        inst.state_reason = StateReason(
            f"Server.InternalError: Internal error on launch (harness: {why[:300]})", "Server.InternalError"
        )
        self._remove_containers([node.iid])
        self._forget(node)

    # ------------------------------------------------- moto hooks: transitions
    def _nodes_of(self, instances: list[Any]) -> list[Node]:
        with self.lock:
            return [self.nodes[i.id] for i in instances if i.id in self.nodes]

    def on_start(self, instances: list[Any]) -> None:
        for node in self._nodes_of(instances):
            if node.desired == "terminated":
                continue
            node.gen += 1
            node.desired = "running"
            node.impaired_since = None
            nic = node.instance.nics[0]
            if nic.public_ip is not None:
                nic.public_ip = nic.private_ip_address
            _set_state(node.instance, "pending")
            self.pool.submit(self._boot, node, node.gen, not node.created_container)

    def on_stop(self, instances: list[Any]) -> None:
        for node in self._nodes_of(instances):
            if node.desired == "terminated":
                continue
            node.gen += 1
            node.desired = "stopped"
            node.impaired_since = None
            _set_state(node.instance, "stopping")
            self.pool.submit(self._stop_container, node, node.gen)

    def _stop_container(self, node: Node, gen: int) -> None:
        with node.lock:
            if node.gen != gen:
                return
            node.busy = True
            try:
                if node.created_container:
                    docker("stop", "-t", "10", node.iid, timeout=60)
            except DockerError as e:
                LOG.warning("instance %s: docker stop: %s", node.iid, e)
            finally:
                node.busy = False
            if node.gen == gen and node.desired == "stopped":
                _set_state(node.instance, "stopped")

    def on_reboot(self, instances: list[Any]) -> None:
        for node in self._nodes_of(instances):
            if node.desired != "running":
                continue
            self.pool.submit(self._reboot, node, node.gen)

    def _reboot(self, node: Node, gen: int) -> None:
        with node.lock:
            if node.gen != gen or node.desired != "running" or not node.created_container:
                return
            node.busy = True
            try:
                docker("restart", "-t", "5", node.iid, timeout=60)
                self._plumb(node, pid_of(node.iid))
                node.impaired_since = None
            except DockerError as e:
                LOG.warning("instance %s: docker restart: %s", node.iid, e)
            finally:
                node.busy = False

    def on_terminate(self, instances: list[Any]) -> None:
        nodes = list({n.iid: n for n in self._nodes_of(instances) if n.desired != "terminated"}.values())
        for node in nodes:
            node.gen += 1
            node.desired = "terminated"
            node.terminated_at = time.monotonic()
        if nodes:
            self._remove_containers([n.iid for n in nodes])
        for node in nodes:
            self._forget(node)

    def _remove_containers(self, names: list[str]) -> None:
        """docker rm -f -v, several at once (the docker CLI removes one after the other)."""
        names = list(dict.fromkeys(names))
        chunks = [names[i::4] for i in range(min(4, len(names)))]

        def rm(chunk: list[str]) -> None:
            try:
                docker("rm", "-f", "-v", *chunk, timeout=60)
            except DockerError as e:
                benign = ("no such container", "already in progress")
                if any(line.strip() and not any(b in line.lower() for b in benign) for line in e.stderr.splitlines()):
                    LOG.warning("docker rm %s: %s", chunk, e)

        if len(chunks) <= 1:
            for c in chunks:
                rm(c)
        else:
            list(self.rm_pool.map(rm, chunks))

    def _forget(self, node: Node) -> None:
        import shutil

        shutil.rmtree(settings.nodes_dir() / node.iid, ignore_errors=True)
        self.release_network(node.net_key, node.iid)
        self._notify("terminated", node)

    def _notify(self, event: str, node: Optional[Node]) -> None:
        """Tells the NLB realizer and the VPC routers (``listeners``) about an instance event."""
        for cb in list(self.listeners):
            try:
                cb(event, node)
            except Exception:  # noqa: BLE001
                LOG.exception("listener failed (%s)", event)

    # --------------------------------------------------------------- queries
    def metadata_caller(self, ip: str) -> Optional[imds.Caller]:
        """The instance metadata service's view of the live instance at private IP IP, if any."""
        with self.lock:
            node = next((n for n in self.nodes.values() if n.ip == ip and n.desired != "terminated"), None)
        return imds.caller_of(node) if node else None

    def node(self, iid: str) -> Optional[Node]:
        return self.nodes.get(iid)

    def console(self, iid: str) -> Optional[bytes]:
        node = self.nodes.get(iid)
        if node is None or node.desired == "terminated" or not node.created_container:
            return None
        try:
            return docker_bytes("logs", iid, timeout=30)
        except DockerError:
            return None

    def status_checks(self, inst: Any) -> Optional[dict]:
        """Instance/system status for a running instance (None: not realized, moto's answer)."""
        node = self.nodes.get(inst.id)
        if node is None:
            return None
        if node.impaired_since is not None:
            return {
                "Status": "impaired",
                "Details": [{"Name": "reachability", "Status": "failed", "ImpairedSince": node.impaired_since}],
            }
        return {"Status": "ok", "Details": [{"Name": "reachability", "Status": "passed"}]}

    def invisible(self, iid: str) -> bool:
        node = self.nodes.get(iid)
        return bool(node and node.invisible_until and time.monotonic() < node.invisible_until)

    def describe(self) -> dict:
        with self.lock:
            nodes = {
                n.iid: {
                    "ip": n.ip, "vpc": n.vpc_id, "image": n.image, "ami": n.ami, "desired": n.desired,
                    "state": n.instance.state, "container": n.container_state,
                    "impaired_since": n.impaired_since.isoformat() if n.impaired_since else None,
                    "ready_after_s": n.ready_after_s,
                }
                for n in self.nodes.values() if n.desired != "terminated"
            }
        nets = {n.name: {"vpc": k[2], "cidr": n.cidr, "gateway": n.gateway, "bridge": n.bridge, "users": sorted(n.users)}
                for k, n in self.nets.items()}
        from . import routes

        routers = routes._ROUTER.describe() if routes._ROUTER is not None else {}
        return {"nodes": nodes, "networks": nets, "vpc_routers": routers, "vpc_resolvers": vpcdns.resolver().describe(),
                "metadata_service": imds.service().describe(),
                "cloud_endpoint": settings.cloud_endpoint()}

    # --------------------------------------------------------------- monitor
    def _monitor_loop(self) -> None:
        while not self._stop.wait(MONITOR_INTERVAL):
            try:
                self._monitor_once()
                self.monitor_errors = 0
            except Exception:  # noqa: BLE001
                self.monitor_errors += 1
                if self.monitor_errors in (1, 10) or self.monitor_errors % 100 == 0:
                    LOG.exception("monitor tick failed (%d in a row)", self.monitor_errors)
            self._notify("tick", None)

    def _monitor_once(self) -> None:
        with self.lock:
            nodes = list(self.nodes.values())
        if not nodes and not self.nets:
            return
        seen = containers({settings.LABEL_OWNER: settings.owner(), settings.LABEL_ROLE: "node"})
        now = _now_utc()
        stray = []
        for name, state in seen.items():
            node = self.nodes.get(name)
            if node is None or (node.desired == "terminated" and time.monotonic() - node.terminated_at > 5):
                stray.append(name)  # (a termination under way removes its container itself)
        for node in nodes:
            if node.desired == "terminated":
                continue
            node.container_state = seen.get(node.iid)
            if node.desired != "running" or node.busy or not node.created_container:
                continue
            if node.instance.state not in ("running", "pending"):
                continue
            if node.container_state == "running":
                node.impaired_since = None
            elif node.impaired_since is None:
                node.impaired_since = now
                LOG.warning("instance %s: container is %s: status checks fail", node.iid, node.container_state or "gone")
        if stray:
            LOG.info("removing containers of terminated or unknown instances: %s", stray)
            self._remove_containers(stray)
        with self.lock:
            for iid in [i for i, n in self.nodes.items() if n.desired == "terminated"
                        and time.monotonic() - n.launched > 3600]:
                del self.nodes[iid]
        # networks nobody uses any more
        with self.net_lock:
            for key, net in list(self.nets.items()):
                if not net.users and self._remove_network(net.name):
                    vpcdns.resolver().drop(net.name)
                    del self.nets[key]

    def shutdown(self) -> None:
        """Stops the monitor and removes the VPC routers' rules and tables (the containers and
        networks stay until ``localstack/down``)."""
        self._stop.set()
        from . import routes

        if routes._ROUTER is not None:
            routes._ROUTER.shutdown()


_REALIZER: Optional[Ec2Realizer] = None
_REALIZER_LOCK = threading.Lock()


def realizer() -> Ec2Realizer:
    global _REALIZER
    with _REALIZER_LOCK:
        if _REALIZER is None:
            _REALIZER = Ec2Realizer()
        return _REALIZER


# ---------------------------------------------------------------------------- moto patches
@functools.cache  # once: a second call does nothing
def install() -> None:
    """Hooks the realizer into moto's EC2 backend (idempotent)."""
    from moto.ec2.exceptions import EC2ClientError, InvalidKeyPairNameError
    from moto.ec2.models import EC2Backend
    from moto.ec2.models.elastic_network_interfaces import NetworkInterface
    from moto.ec2.models.instances import Instance

    r = realizer()

    # no random public address ever: an auto-assigned public IP is the private one
    def check_auto_public_ip(self: Any) -> None:
        if self.public_ip_auto_assign and str(self.public_ip_auto_assign).lower() == "true":
            self.public_ip = self.private_ip_address

    NetworkInterface.check_auto_public_ip = check_auto_public_ip

    orig_public_dns = Instance.public_dns_name

    def public_dns_name(self: Any) -> Optional[str]:
        # AWS leaves it empty in VPCs without DNS host names; an amazonaws.com name would point
        # somewhere else than the container
        return "" if self.id in r.nodes else orig_public_dns.fget(self)

    Instance.public_dns_name = property(public_dns_name)

    orig_instance_status, orig_system_status = Instance.instance_status, Instance.system_status

    def instance_status(self: Any) -> dict:
        if self.state_code == 16:
            s = r.status_checks(self)
            if s is not None:
                return s
        return orig_instance_status.fget(self)

    def system_status(self: Any) -> dict:
        if self.state_code == 16:
            s = r.status_checks(self)
            if s is not None:
                return s
        return orig_system_status.fget(self)

    Instance.instance_status = property(instance_status)
    Instance.system_status = property(system_status)

    orig_run = EC2Backend.run_instances

    def run_instances(self: Any, image_id: str, count: int, user_data: Any, security_group_names: Any, **kwargs: Any):
        key_name = kwargs.get("key_name")
        if key_name and key_name not in self.key_pairs:
            raise InvalidKeyPairNameError(key_name)
        reservation = orig_run(self, image_id, count, user_data, security_group_names, **kwargs)
        try:
            r.on_run(self, reservation)
        except RealizerError as e:
            raise EC2ClientError(e.code, e.message) from e
        return reservation

    EC2Backend.run_instances = run_instances

    def wrap(name: str, hook: Any, pick: Any) -> None:
        orig = getattr(EC2Backend, name)

        def wrapped(self: Any, *args: Any, **kwargs: Any):
            result = orig(self, *args, **kwargs)
            hook(pick(result))
            return result

        setattr(EC2Backend, name, wrapped)

    # AWS's dependency checks where a realized machine or balancer would be orphaned (moto alone
    # deletes a subnet with instances in it, and a VPC once its subnets are gone)
    from moto.ec2.exceptions import DependencyViolationError

    def live_nodes(pred: Any) -> list[str]:
        return [n.iid for n in list(r.nodes.values()) if n.desired != "terminated" and pred(n)]

    orig_delete_subnet = EC2Backend.delete_subnet

    def delete_subnet(self: Any, subnet_id: str):
        if live_nodes(lambda n: n.instance.subnet_id == subnet_id and n.account == self.account_id):
            raise DependencyViolationError(f"The subnet '{subnet_id}' has dependencies and cannot be deleted.")
        return orig_delete_subnet(self, subnet_id)

    EC2Backend.delete_subnet = delete_subnet

    orig_delete_vpc = EC2Backend.delete_vpc

    def delete_vpc(self: Any, vpc_id: str):
        from .nlb import nlb

        key = (self.account_id, self.region_name, vpc_id)
        if live_nodes(lambda n: (n.account, n.region, n.vpc_id) == key) or any(
            (lb.account, lb.region, lb.vpc_id) == key for lb in list(nlb().lbs.values())
        ):
            raise DependencyViolationError(f"The vpc '{vpc_id}' has dependencies and cannot be deleted.")
        return orig_delete_vpc(self, vpc_id)

    EC2Backend.delete_vpc = delete_vpc

    pairs = lambda result: [i for i, _ in result]  # noqa: E731
    wrap("start_instances", r.on_start, pairs)
    wrap("stop_instances", r.on_stop, pairs)
    wrap("terminate_instances", r.on_terminate, pairs)
    wrap("reboot_instances", r.on_reboot, lambda result: list(result))
    LOG.info("EC2 realizer installed (owner %s, node image %s, cloud endpoint %s)",
             settings.owner(), settings.node_image(), settings.cloud_endpoint() or "-")
