"""NLB realizer: network load balancers forward real TCP traffic to healthy targets.

- Address: every load balancer's ``DNSName`` is the gateway address of its VPC's Docker network
  (10.x.0.1 for 10.x.0.0/16): an address of this machine, so the host reaches it, and every node of
  the VPC reaches it (it is their default gateway). Load balancers of one VPC share that address,
  so two of them cannot listen on the same port (CreateListener answers InvalidConfigurationRequest);
  load balancers of different VPCs can.
- Listeners (TCP and TCP_UDP, of ``network`` balancers) are asyncio TCP servers on that address and
  the listener's port, inside the LocalStack process. A connection goes to the next healthy target
  of the listener's target groups (round robin); with no healthy target it is closed at once (AWS
  would "fail open" when every target is unhealthy; the harness does not).
- Health checks run as each target group says (HealthCheckProtocol TCP/HTTP/HTTPS, port or
  ``traffic-port``, path, matcher, interval, timeout, healthy/unhealthy threshold counts), only for
  target groups that a realized listener uses, and only to addresses of this harness's nodes.
  DescribeTargetHealth reports their results: ``initial`` (Elb.RegistrationInProgress, then
  Elb.InitialHealthChecking) until the healthy threshold is reached, ``healthy``, ``unhealthy``
  (Target.FailedHealthChecks, Target.Timeout, Target.ResponseCodeMismatch), ``unused``
  (Target.NotInUse: no listener uses the group; Target.InvalidState: the instance is stopped).
- Deregistering a target drains it, as AWS does: no new connections go to it, those already
  forwarded there go on, and DescribeTargetHealth lists it as ``draining``
  (Target.DeregistrationInProgress) until the last of them closes or the group's
  ``deregistration_delay.timeout_seconds`` (default 300) passes, when the rest are closed.
- Deleting a listener or balancer closes its server and the connections through it.
- Other balancer types (application, gateway) get the same DNSName but no forwarder.
"""

from __future__ import annotations

import asyncio
import functools
import logging
import ssl
import threading
import time
from dataclasses import dataclass, field
from typing import Any, Optional

from . import aioloop
from .ec2_realizer import RealizerError, realizer

LOG = logging.getLogger("clusterctl.nlb")

FORWARDED_PROTOCOLS = ("TCP", "TCP_UDP")


@dataclass
class LbRt:
    arn: str
    account: str
    region: str
    vpc_id: str
    net_key: tuple[str, str, str]
    ip: str
    type: str


@dataclass
class ListenerRt:
    arn: str
    lb_arn: str
    ip: str
    port: int
    tg_arns: tuple[str, ...]
    backend: Any
    server: Any = None
    rr: int = 0
    conns: set = field(default_factory=set)
    accepted: int = 0


@dataclass
class Check:
    tg_arn: str
    target_id: str
    port: int
    backend: Any
    state: str = "initial"
    reason: Optional[str] = "Elb.RegistrationInProgress"
    description: Optional[str] = "Target registration is in progress"
    ok_streak: int = 0
    fail_streak: int = 0
    addr: Optional[str] = None
    probes: int = 0
    since: float = field(default_factory=time.monotonic)
    task: Any = None


class NlbRealizer:
    def __init__(self) -> None:
        self.lock = threading.RLock()
        self.lbs: dict[str, LbRt] = {}
        self.listeners: dict[str, ListenerRt] = {}
        self.checks: dict[tuple[str, str, int], Check] = {}
        # deregistered targets whose forwarded connections are still open
        self.draining: dict[tuple[str, str, int], Check] = {}
        self.bind_errors: dict[str, str] = {}
        # (target ip, port) -> the client and upstream writers of the connections forwarded there
        self.upstreams: dict[tuple[str, int], set] = {}
        realizer().listeners.append(self._on_ec2_event)

    # ------------------------------------------------------------- balancers
    def on_lb_created(self, backend: Any, lb: Any) -> None:
        vpc = backend.ec2_backend.get_vpc(lb.vpc_id)
        net = realizer().ensure_network(backend.account_id, backend.region_name, lb.vpc_id, vpc.cidr_block, user=lb.arn)
        lb.dns_name = net.gateway
        with self.lock:
            self.lbs[lb.arn] = LbRt(lb.arn, backend.account_id, backend.region_name, lb.vpc_id, net.key, net.gateway, lb.type)
        LOG.info("load balancer %s (%s) in %s: DNSName %s", lb.name, lb.type, lb.vpc_id, net.gateway)

    def on_lb_deleted(self, arn: str) -> None:
        with self.lock:
            rt = self.lbs.pop(arn, None)
        self.reconcile()
        if rt:
            realizer().release_network(rt.net_key, arn)

    def tg_in_use(self, tg_arn: str) -> bool:
        with self.lock:
            return any(tg_arn in lrt.tg_arns for lrt in self.listeners.values())

    # ------------------------------------------------------------- reconcile
    def _desired(self) -> tuple[dict[str, tuple[LbRt, int, tuple[str, ...], Any]], dict[tuple[str, str, int], Any]]:
        from moto.elbv2.models import elbv2_backends

        listeners, checks = {}, {}
        for rt in list(self.lbs.values()):
            backend = elbv2_backends[rt.account][rt.region]
            lb = backend.load_balancers.get(rt.arn)
            if lb is None or lb.type != "network":
                continue
            for listener in list(lb.listeners.values()):
                if (listener.protocol or "").upper() not in FORWARDED_PROTOCOLS:
                    continue
                tgs: list[str] = []
                for action in listener.default_actions:
                    if action.type == "forward":
                        tgs += [a for a in backend._get_target_group_arns_from(action_data=action.data) if a not in tgs]
                listeners[listener.arn] = (rt, int(listener.port), tuple(tgs), backend)
                for tg_arn in tgs:
                    tg = backend.target_groups.get(tg_arn)
                    if tg is None:
                        continue
                    for t in list(tg.targets.values()):
                        checks[(tg_arn, t["Id"], int(t.get("Port") or tg.port))] = backend
        return listeners, checks

    def reconcile(self) -> None:
        with self.lock:
            want_l, want_c = self._desired()
            # listeners
            for arn, lrt in list(self.listeners.items()):
                w = want_l.get(arn)
                if w is None or (w[0].ip, w[1]) != (lrt.ip, lrt.port):
                    self._stop_listener(lrt)
                    del self.listeners[arn]
            for arn, (rt, port, tgs, backend) in want_l.items():
                lrt = self.listeners.get(arn)
                if lrt is not None:
                    lrt.tg_arns = tgs
                    continue
                if arn in self.bind_errors:
                    continue
                lrt = ListenerRt(arn, rt.arn, rt.ip, port, tgs, backend)
                try:
                    lrt.server = aioloop.run(
                        asyncio.start_server(
                            lambda r, w, a=arn: self._handle(a, r, w), host=rt.ip, port=port, reuse_address=True
                        ),
                        timeout=10,
                    )
                    self.listeners[arn] = lrt
                    LOG.info("listener %s: forwarding %s:%d to target groups %s", arn.rsplit("/", 1)[-1], rt.ip, port, tgs)
                except OSError as e:
                    self.bind_errors[arn] = str(e)
                    LOG.warning("listener %s: cannot listen on %s:%d: %s", arn, rt.ip, port, e)
            for arn in [a for a in self.bind_errors if a not in want_l]:
                del self.bind_errors[arn]
            # health checks
            for key, chk in list(self.checks.items()):
                if key not in want_c:
                    if chk.task:
                        aioloop.loop().call_soon_threadsafe(chk.task.cancel)
                    del self.checks[key]
                    self._start_draining(key, chk)
            for key, backend in want_c.items():
                if key not in self.checks:
                    self.draining.pop(key, None)
                    chk = Check(key[0], key[1], key[2], backend)
                    self.checks[key] = chk
                    chk.task = aioloop.submit(self._check_loop(chk))

    def _start_draining(self, key: tuple[str, str, int], chk: Check) -> None:
        """A deregistered target whose group still exists drains while connections to it are open."""
        tg = chk.backend.target_groups.get(key[0])
        if tg is None or not chk.addr or not self.upstreams.get((chk.addr, chk.port)):
            return
        try:
            delay = float(tg.attributes.get("deregistration_delay.timeout_seconds", 300))
        except (AttributeError, TypeError, ValueError):
            delay = 300.0
        # A check of its own: the cancelled health check may still write to the old one.
        chk = Check(chk.tg_arn, chk.target_id, chk.port, chk.backend, state="draining", reason="Target.DeregistrationInProgress",
                    description="Target deregistration is in progress", addr=chk.addr)
        self.draining[key] = chk
        LOG.info("target %s of %s draining (%d connections, at most %.0f s)", key[1], key[0].rsplit("/", 2)[-2],
                 len(self.upstreams.get((chk.addr, chk.port), ())), delay)
        chk.task = aioloop.submit(self._drain(key, chk, delay))

    async def _drain(self, key: tuple[str, str, int], chk: Check, delay: float) -> None:
        deadline = time.monotonic() + delay
        try:
            while self.upstreams.get((chk.addr, chk.port)) and time.monotonic() < deadline:
                await asyncio.sleep(0.2)
        finally:
            with self.lock:
                if self.draining.get(key) is chk:
                    del self.draining[key]
                    if key not in self.checks:
                        self._drop_upstream(chk.addr, chk.port)

    def draining_targets(self, tg_arn: str) -> list[dict]:
        with self.lock:
            return [{"Id": k[1], "Port": k[2]} for k in self.draining if k[0] == tg_arn]

    def _stop_listener(self, lrt: ListenerRt) -> None:
        async def stop() -> None:
            if lrt.server is not None:
                lrt.server.close()
            for w in list(lrt.conns):
                w.close()
            lrt.conns.clear()

        try:
            aioloop.run(stop(), timeout=5)
        except Exception as e:  # noqa: BLE001
            LOG.warning("closing listener %s: %s", lrt.arn, e)
        LOG.info("listener %s on %s:%d stopped", lrt.arn.rsplit("/", 1)[-1], lrt.ip, lrt.port)

    def _on_ec2_event(self, event: str, node: Any) -> None:
        self.reconcile()

    # ------------------------------------------------------------- targets
    def _target_addr(self, chk: Check) -> tuple[Optional[str], Optional[tuple[str, str, str]]]:
        """(address to probe, or None with the (state, reason, description) to report)."""
        r = realizer()
        tid = chk.target_id
        if tid.startswith("i-"):
            node = r.node(tid)
            if node is None or node.desired == "terminated":
                return None, ("unhealthy", "Target.InvalidState", "Target is not a machine of this harness")
            st = node.instance.state
            if st in ("stopped", "stopping"):
                return None, ("unused", "Target.InvalidState", "Target is in the stopped state")
            return node.ip, None
        # an IP target: only addresses of this harness's running nodes are ever dialled
        for node in list(r.nodes.values()):
            if node.ip == tid and node.desired == "running":
                return tid, None
        return None, ("unhealthy", "Target.FailedHealthChecks", "Not the address of a machine of this harness")

    async def _check_loop(self, chk: Check) -> None:
        try:
            while True:
                tg = chk.backend.target_groups.get(chk.tg_arn)
                if tg is None:
                    return
                interval = max(1.0, float(tg.health_check_interval_seconds or 30))
                timeout = min(float(tg.health_check_timeout_seconds or 10), interval)
                healthy_n = int(tg.healthy_threshold_count or 5)
                unhealthy_n = int(tg.unhealthy_threshold_count or 2)
                prev_addr = chk.addr
                addr, verdict = self._target_addr(chk)
                chk.addr = addr
                if addr is None:
                    chk.state, chk.reason, chk.description = verdict
                    chk.ok_streak = chk.fail_streak = 0
                else:
                    ok, reason, desc = await self._probe(tg, addr, chk.port, timeout)
                    chk.probes += 1
                    if chk.state == "unused":
                        chk.state, chk.reason, chk.description = "initial", "Elb.InitialHealthChecking", "Initial health checks in progress"
                    if ok:
                        chk.ok_streak += 1
                        chk.fail_streak = 0
                        if chk.state != "healthy" and chk.ok_streak >= healthy_n:
                            self._transition(chk, "healthy", None, None)
                        elif chk.state == "initial":
                            chk.reason, chk.description = "Elb.InitialHealthChecking", "Initial health checks in progress"
                    else:
                        chk.fail_streak += 1
                        chk.ok_streak = 0
                        if chk.state == "unhealthy":
                            chk.reason, chk.description = reason, desc
                        elif chk.fail_streak >= unhealthy_n:
                            self._transition(chk, "unhealthy", reason, desc)
                        elif chk.state == "initial":
                            chk.reason, chk.description = "Elb.InitialHealthChecking", "Initial health checks in progress"
                if chk.state in ("unhealthy", "unused") and prev_addr:
                    # As an NLB does (unhealthy target connection termination, on by default): the
                    # connections forwarded to a target that is no longer healthy are closed, so
                    # that clients notice at once and reconnect to a healthy one.
                    self._drop_upstream(prev_addr, chk.port)
                await asyncio.sleep(interval)
        except asyncio.CancelledError:
            pass
        except Exception:  # noqa: BLE001
            LOG.exception("health check of %s in %s failed", chk.target_id, chk.tg_arn)

    def _drop_upstream(self, ip: str, port: int) -> None:
        pairs = self.upstreams.pop((ip, port), set())
        if pairs:
            LOG.info("closing %d connections forwarded to %s:%d, no longer healthy", len(pairs), ip, port)
        for pair in pairs:
            for w in pair:
                try:
                    w.close()
                except Exception:  # noqa: BLE001
                    pass

    @staticmethod
    def _transition(chk: Check, state: str, reason: Optional[str], desc: Optional[str]) -> None:
        LOG.info("target %s:%d of %s: %s -> %s (%s)", chk.target_id, chk.port, chk.tg_arn.rsplit("/", 2)[-2],
                 chk.state, state, reason or "ok")
        chk.state, chk.reason, chk.description = state, reason, desc
        chk.since = time.monotonic()

    @staticmethod
    def _codes_match(matcher: str, code: int) -> bool:
        for part in (matcher or "200-399").split(","):
            part = part.strip()
            if "-" in part:
                lo, hi = part.split("-", 1)
                if int(lo) <= code <= int(hi):
                    return True
            elif part and int(part) == code:
                return True
        return False

    async def _probe(self, tg: Any, addr: str, traffic_port: int, timeout: float) -> tuple[bool, Optional[str], Optional[str]]:
        hc_port = tg.health_check_port
        port = traffic_port if hc_port in (None, "", "traffic-port") else int(hc_port)
        proto = (tg.health_check_protocol or tg.protocol or "TCP").upper()
        ctx = None
        if proto == "HTTPS":
            ctx = ssl.create_default_context()
            ctx.check_hostname = False
            ctx.verify_mode = ssl.CERT_NONE
        try:
            r, w = await asyncio.wait_for(asyncio.open_connection(addr, port, ssl=ctx), timeout)
        except asyncio.TimeoutError:
            return False, "Target.Timeout", "Request timed out"
        except OSError:
            return False, "Target.FailedHealthChecks", "Health checks failed"
        try:
            if proto not in ("HTTP", "HTTPS"):
                return True, None, None
            path = tg.health_check_path or "/"
            w.write(
                f"GET {path} HTTP/1.1\r\nHost: {addr}:{port}\r\nUser-Agent: ELB-HealthChecker/2.0\r\n"
                "Accept: */*\r\nConnection: close\r\n\r\n".encode()
            )
            await w.drain()
            line = await asyncio.wait_for(r.readline(), timeout)
            parts = line.decode(errors="replace").split()
            if len(parts) < 2 or not parts[1].isdigit():
                return False, "Target.FailedHealthChecks", "Health checks failed"
            code = int(parts[1])
            matcher = (getattr(tg, "matcher", None) or {}).get("HttpCode") or "200-399"
            if self._codes_match(matcher, code):
                return True, None, None
            return False, "Target.ResponseCodeMismatch", f"Health checks failed with these codes: [{code}]"
        except asyncio.TimeoutError:
            return False, "Target.Timeout", "Request timed out"
        except (OSError, ValueError):
            return False, "Target.FailedHealthChecks", "Health checks failed"
        finally:
            w.close()

    # ------------------------------------------------------------- forwarding
    def _healthy_targets(self, lrt: ListenerRt) -> list[tuple[str, int]]:
        out = []
        for (tg_arn, _tid, port), chk in list(self.checks.items()):
            if tg_arn in lrt.tg_arns and chk.state == "healthy" and chk.addr:
                out.append((chk.addr, port))
        return sorted(out)

    async def _handle(self, larn: str, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        lrt = self.listeners.get(larn)
        if lrt is None:
            writer.close()
            return
        lrt.accepted += 1
        lrt.conns.add(writer)
        up_w = None
        try:
            targets = self._healthy_targets(lrt)
            if not targets:
                LOG.info("listener %s: no healthy target; connection closed", larn.rsplit("/", 1)[-1])
                return
            start = lrt.rr
            lrt.rr += 1
            up_r = None
            for k in range(len(targets)):
                ip, port = targets[(start + k) % len(targets)]
                t0 = time.monotonic()
                try:
                    up_r, up_w = await asyncio.wait_for(asyncio.open_connection(ip, port), 5)
                    break
                except (OSError, asyncio.TimeoutError) as e:
                    LOG.info("listener %s: connecting to target %s:%d failed after %.1f s: %r",
                             larn.rsplit("/", 1)[-1], ip, port, time.monotonic() - t0, e)
                    continue
            if up_w is None:
                return
            lrt.conns.add(up_w)
            pair = (writer, up_w)
            self.upstreams.setdefault((ip, port), set()).add(pair)
            try:
                await asyncio.gather(self._pipe(reader, up_w), self._pipe(up_r, writer))
            finally:
                self.upstreams.get((ip, port), set()).discard(pair)
        except Exception as e:  # noqa: BLE001
            LOG.debug("connection through %s: %s", larn, e)
        finally:
            for w in (writer, up_w):
                if w is not None:
                    lrt.conns.discard(w)
                    w.close()

    @staticmethod
    async def _pipe(r: asyncio.StreamReader, w: asyncio.StreamWriter) -> None:
        try:
            while True:
                data = await r.read(65536)
                if not data:
                    break
                w.write(data)
                await w.drain()
        except (OSError, asyncio.CancelledError):
            pass
        finally:
            try:
                if w.can_write_eof() and not w.is_closing():
                    w.write_eof()
            except OSError:
                pass

    # ------------------------------------------------------------- views
    def health(self, tg_arn: str, target_id: str, port: int) -> Optional[Check]:
        return self.checks.get((tg_arn, target_id, port))

    def describe(self) -> dict:
        with self.lock:
            return {
                "load_balancers": {a: {"ip": r.ip, "vpc": r.vpc_id, "type": r.type} for a, r in self.lbs.items()},
                "listeners": {a: {"address": f"{l.ip}:{l.port}", "target_groups": list(l.tg_arns), "accepted": l.accepted}
                              for a, l in self.listeners.items()},
                "listener_errors": dict(self.bind_errors),
                "target_health": [
                    {"target_group": k[0], "id": k[1], "port": k[2], "address": c.addr, "state": c.state,
                     "reason": c.reason, "probes": c.probes}
                    for k, c in self.checks.items()
                ],
            }


_NLB: Optional[NlbRealizer] = None
_NLB_LOCK = threading.Lock()


def nlb() -> NlbRealizer:
    global _NLB
    with _NLB_LOCK:
        if _NLB is None:
            _NLB = NlbRealizer()
        return _NLB


@functools.cache  # once: a second call does nothing
def install() -> None:
    """Hooks the NLB realizer into moto's ELBv2 backend (idempotent)."""
    from moto.elbv2.exceptions import DuplicateListenerError, ELBClientError, InvalidConfigurationRequest
    from moto.elbv2.models import ELBv2Backend, FakeHealthStatus, FakeTargetGroup

    n = nlb()

    orig_create_lb = ELBv2Backend.create_load_balancer

    def create_load_balancer(self: Any, *args: Any, **kwargs: Any):
        lb = orig_create_lb(self, *args, **kwargs)
        try:
            n.on_lb_created(self, lb)
        except RealizerError as e:
            self.load_balancers.pop(lb.arn, None)
            raise InvalidConfigurationRequest(e.message) from e
        return lb

    ELBv2Backend.create_load_balancer = create_load_balancer

    orig_delete_lb = ELBv2Backend.delete_load_balancer

    def delete_load_balancer(self: Any, arn: str):
        result = orig_delete_lb(self, arn)
        n.on_lb_deleted(arn)
        return result

    ELBv2Backend.delete_load_balancer = delete_load_balancer

    orig_create_listener = ELBv2Backend.create_listener

    def create_listener(self: Any, load_balancer_arn: str, protocol: str, port: Any, *args: Any, **kwargs: Any):
        lb = self.load_balancers.get(load_balancer_arn)
        if lb is not None and any(str(l.port) == str(port) for l in lb.listeners.values()):
            raise DuplicateListenerError()  # moto's own check compares the port with listener ARNs
        listener = orig_create_listener(self, load_balancer_arn, protocol, port, *args, **kwargs)
        n.reconcile()
        err = n.bind_errors.pop(listener.arn, None)
        if err is not None:
            lb.listeners.pop(listener.arn, None)
            n.reconcile()
            raise InvalidConfigurationRequest(
                f"the harness cannot listen on {lb.dns_name}:{port} ({err}); every load balancer of a VPC "
                "listens on the VPC's gateway address, so two of them cannot use the same port"
            )
        return listener

    ELBv2Backend.create_listener = create_listener

    orig_register = ELBv2Backend.register_targets

    def register_targets(self: Any, target_group_arn: str, instances: list[Any]):
        bad = [t["Id"] for t in instances if str(t.get("Id", "")).startswith("i-")
               and self.ec2_backend.get_instance_by_id(t["Id"]) is None]
        if bad:
            raise ELBClientError("InvalidTarget", f"The following targets are not valid instances: {', '.join(bad)}")
        result = orig_register(self, target_group_arn, instances)
        n.reconcile()
        return result

    ELBv2Backend.register_targets = register_targets

    def after(name: str) -> None:
        orig = getattr(ELBv2Backend, name)

        def wrapped(self: Any, *args: Any, **kwargs: Any):
            result = orig(self, *args, **kwargs)
            n.reconcile()
            return result

        setattr(ELBv2Backend, name, wrapped)

    for name in ("delete_listener", "modify_listener", "deregister_targets", "modify_target_group",
                 "delete_target_group", "set_subnets", "notify_terminate_instances"):
        after(name)

    orig_health_for = FakeTargetGroup.health_for

    def health_for(self: Any, target: dict, ec2_backend: Any):
        t = self.targets.get(target["Id"])
        if t is None:
            draining = n.draining.get((self.arn, target["Id"], int(target.get("Port") or self.port)))
            if draining is not None:
                return FakeHealthStatus(target["Id"], target.get("Port") or self.port, self.health_check_port, draining.state,
                                        draining.reason, draining.description)
            return orig_health_for(self, target, ec2_backend)
        port = int(t.get("Port") or self.port)
        if not n.tg_in_use(self.arn):
            lbs = getattr(self, "load_balancer_arns", [])
            if any(a in n.lbs and n.lbs[a].type != "network" for a in lbs):
                return orig_health_for(self, target, ec2_backend)  # not realized (e.g. application LB)
            return FakeHealthStatus(t["Id"], t["Port"], self.health_check_port, "unused", "Target.NotInUse",
                                    "Target group is not configured to receive traffic from the load balancer")
        chk = n.health(self.arn, t["Id"], port)
        if chk is None:
            return FakeHealthStatus(t["Id"], t["Port"], self.health_check_port, "initial",
                                    "Elb.RegistrationInProgress", "Target registration is in progress")
        return FakeHealthStatus(t["Id"], t["Port"], self.health_check_port, chk.state, chk.reason, chk.description)

    FakeTargetGroup.health_for = health_for

    orig_describe_health = ELBv2Backend.describe_target_health

    def describe_target_health(self: Any, target_group_arn: str, targets: list[dict]):
        if not targets and target_group_arn in self.target_groups:
            targets = list(self.target_groups[target_group_arn].targets.values()) + n.draining_targets(target_group_arn)
        return orig_describe_health(self, target_group_arn, targets)

    ELBv2Backend.describe_target_health = describe_target_health
    LOG.info("NLB realizer installed")
