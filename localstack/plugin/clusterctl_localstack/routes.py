"""VPC routers: routes whose target is an instance carry real traffic.

AWS's VPC router delivers a packet to the instance that a route names (CreateRoute / ReplaceRoute
with ``InstanceId``, or ``NetworkInterfaceId`` of its network interface) when the packet's
destination matches the route, and the instance accepts it only with source/destination checking
off. Kubernetes route controllers rely on that: one route per node, destination = the node's pod
CIDR, target = the node's instance.

The harness's VPC is a Docker bridge whose host address is every node's default gateway (see
ec2_realizer.py and nodenet.py), so the host is the natural place for the VPC's router. Each VPC
network gets **Linux policy routing** on the host:

- a routing table of its own, number ``TABLE_FIRST..TABLE_FIRST+TABLE_COUNT-1`` (derived from a hash
  of the owner, account, region and VPC id, then the next free one: no rule may use it and it must
  be empty), and one rule ``ip rule add priority 1000 iif <the VPC's bridge> lookup <table>``, so that
  only packets the nodes send to their gateway consult it;
- in that table: ``blackhole default`` (a destination without a route is dropped, as by AWS's router,
  and no packet from a node ever leaves this machine through the host's own default route), the VPC
  CIDR as a link route on the bridge (AWS's ``local`` route; it also makes reverse-path checks of
  forwarded packets pass where rp_filter is on), and one ``<destination> via <instance's private IP>
  dev <bridge>`` per IPv4 route of any of the VPC's route tables whose target is an instance that is
  ``running`` and has source/destination checking off (routes of several route tables of the VPC
  share the one table; per-subnet route table associations are not modelled; for the same
  destination the route table with the lowest id wins);
- ``net.ipv4.conf.<bridge>.send_redirects=0``, so that the host does not tell a node to go to the
  target directly (the kernel sends redirects while ``net.ipv4.conf.all.send_redirects`` is 1 whatever
  the bridge says, so nodes also refuse them: nodenet.plumb sets their ``accept_redirects`` to 0).

``reconcile`` computes every table from moto's state and applies the difference (``ip -force
-batch``), under a lock, idempotently. It runs after CreateRoute, ReplaceRoute, DeleteRoute,
DeleteRouteTable, ModifyInstanceAttribute, ModifyNetworkInterfaceAttribute, instance start / stop /
terminate / reboot, an instance becoming ``running``, and once a second on the realizer's monitor
tick (which also removes the rule and the table of a VPC network that is gone; every 30 s it
re-reads the kernel's state rather than trusting its own record).

Every table this harness takes is recorded in ``<state>/vpc-routers.json`` before its rule is added;
``cleanup`` (run by ``localstack/up`` before a start, by ``localstack/down``, by the router when it
starts, and by the realizer's shutdown) removes the rules and tables recorded there, and any rule
of ours (priority 1000, a table of the range) whose bridge no longer exists.

DescribeRouteTables (``annotate``) shows such a route as AWS does: ``InstanceId``,
``InstanceOwnerId`` and ``NetworkInterfaceId``, ``Origin`` CreateRoute, ``State`` ``active`` while the
instance is pending or running, ``blackhole`` once it is stopping, stopped, shutting down or
terminated (a terminated instance's id is no longer shown, its interface's is).

Needs root on the host (``ip`` from iproute2), like the rest of the realizer. Run as
``python -m clusterctl_localstack.routes cleanup <state dir>`` it only cleans up.
"""

from __future__ import annotations

import contextlib
import fcntl
import functools
import hashlib
import ipaddress
import json
import logging
import os
import pathlib
import subprocess
import sys
import tempfile
import threading
import time
from dataclasses import dataclass
from typing import Any, Iterator, Optional

LOG = logging.getLogger("clusterctl.routes")

PRIORITY = 1000
TABLE_FIRST = 10000
TABLE_COUNT = 10000
STATE_FILE = "vpc-routers.json"
VERIFY_EVERY_S = 30.0

ACTIVE_STATES = ("pending", "running")


# ------------------------------------------------------------------------------ the ip command
class IpError(Exception):
    pass


def _run_ip(args: list[str], stdin: Optional[str] = None, check: bool = True) -> subprocess.CompletedProcess:
    p = subprocess.run(["ip", *args], input=stdin.encode() if stdin is not None else None,
                       capture_output=True, timeout=20, check=False)
    if check and p.returncode != 0:
        raise IpError(f"ip {' '.join(args)}: {p.stderr.decode(errors='replace').strip()}")
    return p


def _ip_json(args: list[str]) -> list[dict]:
    p = _run_ip(["-j", *args], check=False)
    if p.returncode != 0:
        err = p.stderr.decode(errors="replace")
        if "does not exist" in err:  # a routing table nothing ever used
            return []
        raise IpError(f"ip -j {' '.join(args)}: {err.strip()}")
    out = p.stdout.decode(errors="replace").strip()
    return json.loads(out) if out else []


def _batch(cmds: list[str]) -> None:
    """Runs ``ip`` commands in one process; -force goes on after a failing one (reported)."""
    if not cmds:
        return
    p = _run_ip(["-force", "-batch", "-"], stdin="".join(c + "\n" for c in cmds), check=False)
    if p.returncode != 0:
        raise IpError(f"ip -batch ({len(cmds)} commands): {p.stderr.decode(errors='replace').strip()[:500]}")


def _rules() -> list[dict]:
    return _ip_json(["-4", "rule", "show"])


def _table_routes(table: int) -> list[dict]:
    return _ip_json(["-4", "route", "show", "table", str(table)])


def _our_table(value: Any) -> Optional[int]:
    try:
        t = int(value)
    except (TypeError, ValueError):
        return None
    return t if TABLE_FIRST <= t < TABLE_FIRST + TABLE_COUNT else None


def _link_exists(name: str) -> bool:
    return bool(name) and os.path.exists(f"/sys/class/net/{name}")


@contextlib.contextmanager
def _host_lock() -> Iterator[None]:
    """One lock for every harness on this machine while tables are chosen or given back (two
    harnesses may run side by side, e.g. tests/test_up_down.py's)."""
    d = "/run/lock" if os.path.isdir("/run/lock") else tempfile.gettempdir()
    with open(os.path.join(d, "clusterctl-vpc-routers.lock"), "a") as f:
        fcntl.flock(f, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(f, fcntl.LOCK_UN)


# ------------------------------------------------------------------------------ clean-up
def _read_state(path: pathlib.Path) -> list[dict]:
    try:
        data = json.loads(path.read_text())
    except FileNotFoundError:
        return []
    except (OSError, ValueError) as e:
        LOG.warning("ignoring unreadable %s: %s", path, e)
        return []
    return [e for e in data.get("tables", []) if isinstance(e, dict)]


def _write_state(path: pathlib.Path, entries: list[dict]) -> None:
    if not entries:
        path.unlink(missing_ok=True)
        return
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(".tmp")
    tmp.write_text(json.dumps({"priority": PRIORITY, "tables": entries}, indent=1) + "\n")
    os.replace(tmp, path)


def _remove(table: int, bridge: str, rules: list[dict]) -> list[str]:
    """ip commands that remove our rule(s) for (table, bridge) and empty the table unless another
    rule still uses it."""
    cmds = []
    others = False
    for r in rules:
        if _our_table(r.get("table")) != table:
            continue
        if r.get("priority") == PRIORITY and r.get("iif") == bridge:
            cmds.append(f"rule del priority {PRIORITY} iif {bridge} lookup {table}")
        else:
            others = True
    if not others:
        cmds.append(f"route flush table {table}")
    return cmds


def cleanup(state_dir: Optional[pathlib.Path] = None) -> list[str]:
    """Removes the rules and tables recorded in <state>/vpc-routers.json (a previous LocalStack
    of this harness: it knows none of them any more), and every rule of ours whose bridge is gone
    (any harness's: such a rule routes nothing). Returns what it removed."""
    from . import settings

    path = (state_dir or settings.state_dir()) / STATE_FILE
    removed: list[str] = []
    with _host_lock():
        rules = _rules()
        cmds: list[str] = []
        for e in _read_state(path):
            table, bridge = _our_table(e.get("table")), str(e.get("bridge") or "")
            if table is None or not bridge:
                continue
            c = _remove(table, bridge, rules)
            if c:
                cmds += c
                removed.append(f"table {table} ({bridge}, {e.get('vpc', '?')})")
        for r in rules:
            table, iif = _our_table(r.get("table")), r.get("iif")
            if r.get("priority") != PRIORITY or table is None or not iif or _link_exists(iif):
                continue
            if any(f" iif {iif} lookup {table}" in c for c in cmds):
                continue
            cmds += _remove(table, iif, rules)
            removed.append(f"table {table} (bridge {iif} gone)")
        if cmds:
            try:
                _batch(list(dict.fromkeys(cmds)))
            except IpError as e:  # one of them was gone already: fine, the rest ran (-force)
                LOG.info("clean-up: %s", e)
        path.unlink(missing_ok=True)
    return removed


# ------------------------------------------------------------------------------ the router
@dataclass
class RouterRt:
    key: tuple[str, str, str]  # account, region, vpc id
    network: str
    bridge: str
    cidr: str
    gateway: str
    table: int
    applied: Optional[dict[str, str]] = None  # destination -> "blackhole" | "local" | "via <ip>"
    verified_at: float = 0.0
    rule_ok: bool = False


def _norm(cidr: str) -> Optional[str]:
    try:
        n = ipaddress.ip_network(cidr, strict=False)
    except ValueError:
        return None
    return str(n) if n.version == 4 else None


def _bool(v: Any) -> bool:
    if isinstance(v, str):
        return v.strip().lower() not in ("false", "0", "no", "")
    return bool(v)


def route_target(route: Any) -> tuple[Optional[Any], Optional[Any]]:
    """(instance, network interface) a moto route sends its traffic to; (None, None) for routes
    to anything else."""
    inst = getattr(route, "instance", None)
    eni = getattr(route, "interface", None)
    if inst is None and eni is None:
        return None, None
    if inst is not None:
        nics = getattr(inst, "nics", None) or {}
        return inst, eni if eni is not None else nics.get(0)
    return getattr(eni, "instance", None), eni


class VpcRouter:
    def __init__(self, realizer: Any) -> None:
        from . import settings

        self.r = realizer
        self.lock = threading.RLock()
        self.routers: dict[tuple[str, str, str], RouterRt] = {}
        self.state_path = settings.state_dir() / STATE_FILE
        self.errors = 0
        self.closed = False  # after shutdown: nothing is made any more
        self._warned_redirects = False
        try:
            removed = cleanup(settings.state_dir())
            if removed:
                LOG.info("removed VPC routing tables of an earlier run: %s", ", ".join(removed))
        except Exception:  # noqa: BLE001
            LOG.exception("clean-up of earlier VPC routing tables failed")

    # ---------------------------------------------------------------- desired state
    def _desired(self, rt: RouterRt) -> dict[str, str]:
        from moto.ec2.models import ec2_backends

        account, region, vpc_id = rt.key
        want = {"0.0.0.0/0": "blackhole", rt.cidr: "local"}
        backend = ec2_backends[account][region]
        tables = sorted((t for t in list(backend.route_tables.values()) if t.vpc_id == vpc_id), key=lambda t: t.id)
        claimed: set[str] = set()
        for table in tables:
            for route in list(table.routes.values()):
                if getattr(route, "local", False) or not route.destination_cidr_block:
                    continue
                dst = _norm(route.destination_cidr_block)
                if dst is None or dst == rt.cidr or dst in claimed:
                    continue
                via = self._realized_via(rt, route)
                if via is not None:
                    want[dst] = f"via {via}"
                    claimed.add(dst)
        return want

    def _realized_via(self, rt: RouterRt, route: Any) -> Optional[str]:
        """The private IP to forward to, if the route's target takes the traffic now: a node of
        this VPC, running, source/destination checking off, the route names its primary interface."""
        inst, eni = route_target(route)
        if inst is None or eni is None or getattr(eni, "device_index", 0) not in (0, None):
            return None
        node = self.r.nodes.get(inst.id)
        if node is None or node.desired != "running" or node.net_key != rt.key:
            return None
        if inst.state != "running" or _bool(eni.source_dest_check):
            return None
        return node.ip

    # ---------------------------------------------------------------- kernel state
    def _actual(self, rt: RouterRt) -> dict[str, str]:
        out: dict[str, str] = {}
        for e in _table_routes(rt.table):
            dst = e.get("dst", "")
            dst = "0.0.0.0/0" if dst == "default" else (dst if "/" in dst else f"{dst}/32")
            if e.get("type", "unicast") == "blackhole":
                out[dst] = "blackhole"
            elif e.get("type", "unicast") != "unicast" or e.get("dev") != rt.bridge:
                out[dst] = "other"
            elif e.get("gateway"):
                out[dst] = f"via {e['gateway']}"
            else:
                out[dst] = "local"
        return out

    def _cmd(self, rt: RouterRt, dst: str, spec: str) -> str:
        if spec == "blackhole":
            return f"route replace blackhole {dst} table {rt.table}"
        if spec == "local":
            return f"route replace {dst} dev {rt.bridge} table {rt.table} scope link src {rt.gateway}"
        return f"route replace {dst} {spec} dev {rt.bridge} table {rt.table}"

    def _apply(self, rt: RouterRt, want: dict[str, str], verify: bool) -> None:
        have = self._actual(rt) if verify or rt.applied is None else rt.applied
        cmds = [f"route del {dst} table {rt.table}" for dst in have if dst not in want]
        cmds += [self._cmd(rt, dst, spec) for dst, spec in want.items() if have.get(dst) != spec]
        if verify or rt.applied is None:
            rt.verified_at = time.monotonic()
        if not cmds:
            rt.applied = dict(want)
            return
        rt.applied = None  # unknown until it worked
        _batch(cmds)
        rt.applied = dict(want)
        LOG.info("VPC %s (table %d): %s", rt.key[2], rt.table, "; ".join(c.split(" table ")[0] for c in cmds))

    # ---------------------------------------------------------------- set-up / tear-down
    def _persist(self) -> None:
        entries = [{"table": rt.table, "bridge": rt.bridge, "vpc": rt.key[2], "network": rt.network,
                    "account": rt.key[0], "region": rt.key[1]} for rt in self.routers.values()]
        _write_state(self.state_path, entries)

    def _setup(self, net: Any) -> RouterRt:
        from . import settings

        account, region, vpc_id = net.key
        seed = hashlib.sha256(f"{settings.owner()}|{account}|{region}|{vpc_id}".encode()).hexdigest()
        start = int(seed[:8], 16) % TABLE_COUNT
        with _host_lock():
            rules = _rules()
            table = None
            for r in rules:  # ours already (a reconcile that failed half-way)
                if r.get("priority") == PRIORITY and r.get("iif") == net.bridge and _our_table(r.get("table")):
                    table = int(r["table"])
            if table is None:
                used = {_our_table(r.get("table")) for r in rules} | {rt.table for rt in self.routers.values()}
                for i in range(TABLE_COUNT):
                    t = TABLE_FIRST + (start + i) % TABLE_COUNT
                    if t not in used and not _table_routes(t):
                        table = t
                        break
                if table is None:
                    raise IpError(f"no free routing table in {TABLE_FIRST}..{TABLE_FIRST + TABLE_COUNT - 1}")
            rt = RouterRt(net.key, net.name, net.bridge, _norm(net.cidr) or net.cidr, net.gateway, table)
            self.routers[net.key] = rt
            self._persist()  # recorded before anything is made: a crash leaves nothing unknown
            self._redirects_off(net.bridge)
            # filled while the lock is held: an empty table without a rule looks free to others
            self._apply(rt, self._desired(rt), verify=True)
            self._ensure_rule(rt)
        LOG.info("VPC %s: router = routing table %d, rule priority %d iif %s", vpc_id, table, PRIORITY, net.bridge)
        return rt

    def _ensure_rule(self, rt: RouterRt) -> None:
        """The rule, once the table is filled (so that no packet ever meets half a table)."""
        if not any(r.get("priority") == PRIORITY and r.get("iif") == rt.bridge and _our_table(r.get("table")) == rt.table
                   for r in _rules()):
            _batch([f"rule add priority {PRIORITY} iif {rt.bridge} lookup {rt.table}"])
        rt.rule_ok = True

    def _redirects_off(self, bridge: str) -> None:
        try:
            with open(f"/proc/sys/net/ipv4/conf/{bridge}/send_redirects", "w") as f:
                f.write("0")
        except OSError as e:
            LOG.warning("could not turn off ICMP redirects on %s: %s", bridge, e)
        if not self._warned_redirects:
            self._warned_redirects = True
            try:
                if pathlib.Path("/proc/sys/net/ipv4/conf/all/send_redirects").read_text().strip() != "0":
                    LOG.info("net.ipv4.conf.all.send_redirects is 1: the host still sends ICMP redirects on VPC "
                             "bridges; the nodes refuse them (accept_redirects=0)")
            except OSError:
                pass

    def _teardown(self, rt: RouterRt) -> None:
        with _host_lock():
            try:
                _batch(_remove(rt.table, rt.bridge, _rules()))
            except IpError as e:
                LOG.info("VPC %s: removing table %d: %s", rt.key[2], rt.table, e)
            self.routers.pop(rt.key, None)
            self._persist()
        LOG.info("VPC %s: router removed (table %d, %s)", rt.key[2], rt.table, rt.bridge)

    # ---------------------------------------------------------------- reconcile
    def reconcile(self, verify: bool = False) -> None:
        """Brings every VPC network's table and rule in line with moto's routes (idempotent)."""
        with self.lock:
            if self.closed:
                return
            nets = dict(list(self.r.nets.items()))
            failed = False
            for key, rt in list(self.routers.items()):
                n = nets.get(key)
                if n is None or n.bridge != rt.bridge:
                    try:
                        self._teardown(rt)
                    except Exception:  # noqa: BLE001
                        failed = True
                        self.errors += 1
                        LOG.exception("VPC %s: removing its router failed", key[2])
            for key, net in nets.items():
                try:
                    rt = self.routers.get(key) or self._setup(net)
                    again = verify or not rt.rule_ok or time.monotonic() - rt.verified_at > VERIFY_EVERY_S
                    want = self._desired(rt)
                    if again or want != rt.applied:
                        self._apply(rt, want, verify=again)
                    if again:
                        self._ensure_rule(rt)
                except Exception:  # noqa: BLE001
                    failed = True
                    self.errors += 1
                    if self.errors in (1, 10) or self.errors % 100 == 0:
                        LOG.exception("VPC %s: router reconcile failed (%d in a row)", key[2], self.errors)
            if not failed:
                self.errors = 0

    def on_event(self, event: str, node: Any) -> None:
        self.reconcile()

    def shutdown(self) -> None:
        with self.lock:
            self.closed = True
            for rt in list(self.routers.values()):
                try:
                    self._teardown(rt)
                except Exception:  # noqa: BLE001
                    LOG.exception("VPC %s: removing its router failed", rt.key[2])
        try:
            cleanup(self.state_path.parent)
        except Exception:  # noqa: BLE001
            LOG.exception("VPC router clean-up failed")

    # ---------------------------------------------------------------- API views
    def route_view(self, route: Any, account: str) -> Optional[dict]:
        """What DescribeRouteTables shows of a route to an instance (None: another kind of route)."""
        inst, eni = route_target(route)
        if inst is None and eni is None:
            return None
        view: dict[str, Any] = {"Origin": "CreateRoute"}
        if eni is not None:
            view["NetworkInterfaceId"] = eni.id
        if inst is not None and inst.state != "terminated":
            view["InstanceId"] = inst.id
            view["InstanceOwnerId"] = account
        view["State"] = "active" if inst is not None and inst.state in ACTIVE_STATES else "blackhole"
        return view

    def annotate(self, account: str, region: str, result: dict) -> None:
        """DescribeRouteTables' answer as AWS gives it for routes to instances."""
        from moto.ec2.models import ec2_backends

        backend = ec2_backends[account][region]
        for rt in result.get("RouteTables") or []:
            table = backend.route_tables.get(rt.get("RouteTableId"))
            if table is None:
                continue
            by_dst = {}
            for route in list(table.routes.values()):
                d = route.destination_cidr_block or route.destination_ipv6_cidr_block
                if d:
                    by_dst[d] = route
            for r in rt.get("Routes") or []:
                route = by_dst.get(r.get("DestinationCidrBlock") or r.get("DestinationIpv6CidrBlock"))
                view = self.route_view(route, account) if route is not None else None
                if view is None:
                    continue
                for k in ("InstanceId", "InstanceOwnerId", "NetworkInterfaceId", "State", "Origin"):
                    r.pop(k, None)
                r.update(view)

    def describe(self) -> dict:
        with self.lock:
            return {
                rt.network: {"vpc": rt.key[2], "table": rt.table, "priority": PRIORITY, "bridge": rt.bridge,
                             "routes": dict(rt.applied or {})}
                for rt in self.routers.values()
            }


_ROUTER: Optional[VpcRouter] = None
_ROUTER_LOCK = threading.Lock()


def router() -> VpcRouter:
    global _ROUTER
    with _ROUTER_LOCK:
        if _ROUTER is None:
            from .ec2_realizer import realizer

            _ROUTER = VpcRouter(realizer())
        return _ROUTER


# ---------------------------------------------------------------------------- moto patches
@functools.cache  # once: a second call does nothing
def install() -> None:
    """Hooks the router into moto's EC2 backend and fixes what moto does differently from AWS
    around routes to instances (see README.md, Quirks)."""
    from moto.ec2.exceptions import EC2ClientError, RouteAlreadyExistsError
    from moto.ec2.models import EC2Backend
    from moto.ec2.models.instances import Instance
    from moto.ec2.models.route_tables import RouteTable

    from .ec2_realizer import realizer

    rt = router()
    realizer().listeners.append(rt.on_event)

    # An instance's SourceDestCheck is its primary network interface's (moto keeps two unrelated
    # flags, and ModifyInstanceAttribute's Attribute/Value form stores the string "false").
    def get_sdc(self: Any) -> bool:
        nic = (self.__dict__.get("nics") or {}).get(0)
        if nic is not None:
            return _bool(nic.source_dest_check)
        return self.__dict__.get("_clusterctl_sdc", True)

    def set_sdc(self: Any, value: Any) -> None:
        value = _bool(value)
        self.__dict__["_clusterctl_sdc"] = value
        nic = (self.__dict__.get("nics") or {}).get(0)
        if nic is not None:
            nic.source_dest_check = value

    Instance.source_dest_check = property(get_sdc, set_sdc)

    def check_target(self: Any, route_table_id: str, instance_id: Optional[str], interface_id: Optional[str]) -> None:
        table = self.get_route_table(route_table_id)
        if interface_id:
            eni = self.get_network_interface(interface_id)
            if eni.subnet is not None and eni.subnet.vpc_id != table.vpc_id:
                raise EC2ClientError(
                    "InvalidParameterValue",
                    f"Route table {route_table_id} and network interface {interface_id} belong to different networks",
                )
        if instance_id:
            inst = self.get_instance(instance_id)
            if inst.vpc_id != table.vpc_id:
                raise EC2ClientError(
                    "InvalidParameterValue",
                    f"Route table {route_table_id} and instance {instance_id} belong to different networks",
                )

    orig_create_route = EC2Backend.create_route

    def create_route(self: Any, route_table_id: str, destination_cidr_block: Optional[str], *args: Any, **kwargs: Any):
        instance_id, interface_id = kwargs.get("instance_id"), kwargs.get("interface_id")
        if (instance_id or interface_id) and not kwargs.get("local"):
            check_target(self, route_table_id, instance_id, interface_id)
            # moto skips the duplicate check for NetworkInterfaceId (and overwrites the route)
            dst = _norm(destination_cidr_block) if destination_cidr_block else None
            if interface_id and dst:
                for route in list(self.get_route_table(route_table_id).routes.values()):
                    if not route.local and route.destination_cidr_block and _norm(route.destination_cidr_block) == dst:
                        raise RouteAlreadyExistsError(destination_cidr_block)
        result = orig_create_route(self, route_table_id, destination_cidr_block, *args, **kwargs)
        if not kwargs.get("local"):
            rt.reconcile()
        return result

    EC2Backend.create_route = create_route

    orig_replace_route = EC2Backend.replace_route

    def replace_route(self: Any, route_table_id: str, destination_cidr_block: str, *args: Any, **kwargs: Any):
        instance_id, interface_id = kwargs.get("instance_id"), kwargs.get("interface_id")
        if instance_id or interface_id:
            check_target(self, route_table_id, instance_id, interface_id)
        result = orig_replace_route(self, route_table_id, destination_cidr_block, *args, **kwargs)
        rt.reconcile()
        return result

    EC2Backend.replace_route = replace_route

    def after(name: str) -> None:
        orig = getattr(EC2Backend, name)

        def wrapped(self: Any, *args: Any, **kwargs: Any):
            result = orig(self, *args, **kwargs)
            rt.reconcile()
            return result

        setattr(EC2Backend, name, wrapped)

    for name in ("delete_route", "delete_route_table", "modify_instance_attribute",
                 "modify_network_interface_attribute", "start_instances", "stop_instances",
                 "terminate_instances", "reboot_instances", "delete_vpc"):
        after(name)

    # DescribeRouteTables filters moto lacks (it answers 501 for them)
    orig_filter = RouteTable.get_filter_value

    def get_filter_value(self: Any, filter_name: str, method_name: Optional[str] = None) -> Any:
        if filter_name in ("route.instance-id", "route.network-interface-id", "route.state"):
            values = []
            for route in list(self.routes.values()):
                view = rt.route_view(route, self.ec2_backend.account_id)
                if filter_name == "route.state":
                    values.append(view["State"] if view else "active")
                elif view is not None:
                    v = view.get("InstanceId" if filter_name == "route.instance-id" else "NetworkInterfaceId")
                    if v:
                        values.append(v)
            return values
        return orig_filter(self, filter_name, method_name)

    RouteTable.get_filter_value = get_filter_value
    LOG.info("VPC routers installed (rule priority %d, tables %d..%d)", PRIORITY, TABLE_FIRST, TABLE_FIRST + TABLE_COUNT - 1)


def main(argv: list[str]) -> int:
    if len(argv) != 2 or argv[0] != "cleanup":
        print("usage: python -m clusterctl_localstack.routes cleanup <state dir>", file=sys.stderr)
        return 2
    os.environ["CLUSTERCTL_HARNESS_STATE"] = argv[1]
    try:
        removed = cleanup(pathlib.Path(argv[1]).resolve())
    except (IpError, OSError, FileNotFoundError) as e:
        print(f"VPC router clean-up failed: {e}", file=sys.stderr)
        return 1
    if removed:
        print(f"removed VPC routing rules and tables: {', '.join(removed)}", file=sys.stderr)
    return 0


if __name__ == "__main__":
    logging.basicConfig(level=logging.WARNING)
    sys.exit(main(sys.argv[1:]))
