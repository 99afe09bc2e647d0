"""Fault injection for reliability tests: ``/_clusterctl/faults`` on LocalStack's own port.

    POST   /_clusterctl/faults   add faults (JSON object, or a list of objects):
             {"operation": "RunInstances", "error": "RequestLimitExceeded", "rate": 0.3}
                 fail that operation (any service; "*" = every operation; optional "service":
                 "ec2" to restrict) with that error code at that rate (default 1.0); optional
                 "count": N (only the next N injections, then the rule is spent), "status" (HTTP
                 status; default 503 for RequestLimitExceeded/ServiceUnavailable/Unavailable, 500
                 for InternalError, else 400), "message", "seed" (a seeded, repeatable sequence)
             {"invisible_ms": 2000}
                 instances launched from now on stay invisible to DescribeInstances and
                 DescribeInstanceStatus for that long after their launch (eventual consistency;
                 asking for one by id answers InvalidInstanceID.NotFound, as AWS does); 0 ends it
             "region": "eu-west-3" in either kind limits it to requests for that region, so that
                 a test's faults do not hit other users of the same LocalStack
           answers the current settings (as GET does)
    GET    /_clusterctl/faults   current rules with counters (calls seen, errors injected)
    DELETE /_clusterctl/faults   clears every fault (?region=R: only those limited to region R)

    GET    /_clusterctl/realizer the realizer's view: nodes, networks, load balancers, target health
    GET    /_clusterctl/instance-identity-certificate
                                 the certificate of the metadata service's identity signatures
                                 (imds.py), what AWS publishes per region

Faults are checked in LocalStack's request handler chain right after the request is parsed, so an
injected error never reaches the provider (a failed RunInstances launches nothing) and is
serialized in the service's own error format (EC2: ``<Response><Errors>...``, HTTP 503 for
RequestLimitExceeded).
"""

from __future__ import annotations

import json
import logging
import random
import threading
from dataclasses import dataclass, field
from typing import Any, Optional

from localstack.runtime import hooks

LOG = logging.getLogger("clusterctl.faults")

_STATUS = {
    "RequestLimitExceeded": 503, "ServiceUnavailable": 503, "Unavailable": 503, "InternalError": 500,
    "InternalFailure": 500, "Throttling": 400, "ThrottlingException": 400,
}


@dataclass
class Rule:
    operation: str
    error: str
    rate: float = 1.0
    service: Optional[str] = None
    region: Optional[str] = None
    count: Optional[int] = None
    status: int = 400
    message: str = ""
    seed: Optional[int] = None
    seen: int = 0
    injected: int = 0
    rng: random.Random = field(default_factory=random.Random, repr=False)

    def view(self) -> dict:
        return {
            "operation": self.operation, "service": self.service, "region": self.region,
            "error": self.error, "rate": self.rate,
            "count": self.count, "status": self.status, "message": self.message, "seed": self.seed,
            "seen": self.seen, "injected": self.injected,
        }


class Faults:
    def __init__(self) -> None:
        self.lock = threading.Lock()
        self.rules: list[Rule] = []
        self._invisible_ms: dict[Optional[str], int] = {}  # region (None: every region) -> ms

    def invisible_ms(self, region: Optional[str] = None) -> int:
        ms = self._invisible_ms
        return ms[region] if region in ms else ms.get(None, 0)

    def add(self, payload: Any) -> None:
        items = payload if isinstance(payload, list) else [payload]
        new_rules, invisible = [], {}
        for item in items:
            if not isinstance(item, dict):
                raise ValueError("each fault must be a JSON object")
            unknown = set(item) - {"operation", "service", "region", "error", "rate", "count", "status", "message",
                                   "seed", "invisible_ms"}
            if unknown:
                raise ValueError(f"unknown fields: {sorted(unknown)}")
            if "invisible_ms" in item:
                v = item["invisible_ms"]
                if not isinstance(v, (int, float)) or v < 0:
                    raise ValueError("invisible_ms must be a number >= 0")
                invisible[item.get("region")] = int(v)
            if "operation" in item or "error" in item:
                op = item.get("operation")
                if not isinstance(op, str) or not op:
                    raise ValueError("operation must be a non-empty string ('*' for all)")
                err = item.get("error", "RequestLimitExceeded")
                if not isinstance(err, str) or not err:
                    raise ValueError("error must be an error code")
                rate = float(item.get("rate", 1.0))
                if not 0.0 <= rate <= 1.0:
                    raise ValueError("rate must be within 0..1")
                count = item.get("count")
                if count is not None and (not isinstance(count, int) or count < 0):
                    raise ValueError("count must be an integer >= 0")
                seed = item.get("seed")
                rule = Rule(
                    operation=op, error=err, rate=rate, service=item.get("service"), region=item.get("region"),
                    count=count,
                    status=int(item.get("status", _STATUS.get(err, 400))),
                    message=item.get("message") or f"{err} (injected by the clusterctl harness)",
                    seed=seed,
                )
                if seed is not None:
                    rule.rng = random.Random(seed)
                new_rules.append(rule)
        with self.lock:
            self.rules += new_rules
            self._invisible_ms.update(invisible)
        LOG.info("faults added: %s%s", [r.view() for r in new_rules],
                 f", invisible_ms={invisible}" if invisible else "")

    def clear(self, region: Optional[str] = None) -> None:
        with self.lock:
            if region is None:
                self.rules = []
                self._invisible_ms = {}
            else:
                self.rules = [r for r in self.rules if r.region != region]
                self._invisible_ms.pop(region, None)
        LOG.info("faults cleared%s", f" for {region}" if region else "")

    def check(self, service: str, operation: str, region: Optional[str] = None) -> Optional[Rule]:
        with self.lock:
            for rule in self.rules:
                if rule.operation not in ("*", operation):
                    continue
                if rule.service and rule.service != service:
                    continue
                if rule.region and rule.region != region:
                    continue
                if rule.count is not None and rule.injected >= rule.count:
                    continue
                rule.seen += 1
                if rule.rng.random() < rule.rate:
                    rule.injected += 1
                    return rule
        return None

    def view(self) -> dict:
        with self.lock:
            inv = {(k or "*"): v for k, v in self._invisible_ms.items() if v}
            return {"rules": [r.view() for r in self.rules], "invisible_ms": inv.get("*", 0),
                    "invisible_ms_by_region": inv}


FAULTS = Faults()


def fault_handler(chain: Any, context: Any, response: Any) -> None:
    """Request handler (after parse_service_request): raises the injected error."""
    if not FAULTS.rules or context.operation is None or context.service is None:
        return
    rule = FAULTS.check(context.service.service_name, context.operation.name, context.region)
    if rule is None:
        return
    from localstack.aws.api import CommonServiceException

    raise CommonServiceException(rule.error, rule.message, status_code=rule.status, sender_fault=rule.status < 500)


def _json(data: Any, status: int = 200):
    from localstack.http import Response

    return Response(json.dumps(data, default=str, indent=1), status=status, mimetype="application/json")


def faults_endpoint(request: Any, **_: Any):
    if request.method == "GET":
        return _json(FAULTS.view())
    if request.method == "DELETE":
        FAULTS.clear(request.args.get("region") or None)
        return _json(FAULTS.view())
    try:
        payload = json.loads(request.get_data() or b"{}")
        FAULTS.add(payload)
    except (ValueError, TypeError) as e:
        return _json({"error": str(e)}, 400)
    return _json(FAULTS.view())


def realizer_endpoint(request: Any, **_: Any):
    from . import settings

    if not settings.realizer_enabled():
        return _json({"enabled": False})
    from .ec2_realizer import realizer
    from .nlb import nlb

    return _json({"enabled": True, **realizer().describe(), **nlb().describe()})


def identity_certificate_endpoint(request: Any, **_: Any):
    from localstack.http import Response

    from . import imds

    return Response(imds.service().identity_key().cert_pem, status=200, mimetype="application/x-pem-file")


@hooks.on_infra_start()
def clusterctl_harness_endpoints() -> None:
    """Adds /_clusterctl/faults and /_clusterctl/realizer and the fault handler to the gateway."""
    from localstack.aws import handlers
    from localstack.services.edge import ROUTER

    ROUTER.add("/_clusterctl/faults", endpoint=faults_endpoint, methods=["GET", "POST", "DELETE"])
    ROUTER.add("/_clusterctl/realizer", endpoint=realizer_endpoint, methods=["GET"])
    ROUTER.add("/_clusterctl/instance-identity-certificate", endpoint=identity_certificate_endpoint, methods=["GET"])
    handlers.serve_custom_service_request_handlers.append(fault_handler)
    LOG.info("clusterctl harness endpoints: /_clusterctl/faults, /_clusterctl/realizer")
