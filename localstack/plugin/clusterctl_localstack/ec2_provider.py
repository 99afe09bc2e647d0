"""The ``ec2:realizer`` provider: LocalStack's EC2 provider plus the realizer.

Selected by ``PROVIDER_OVERRIDE_EC2=realizer`` (``localstack/up`` sets it). Loading it installs the
realizer's hooks into moto's EC2 and ELBv2 backends (``ec2_realizer.install``, ``nlb.install``);
the handlers here change what only the API layer can:

- RunInstances: ClientToken idempotency as AWS has it (moto launches again): the same token with
  the same parameters answers the first launch's response and launches nothing; with other
  parameters it fails with IdempotentParameterMismatch.
- GetConsoleOutput: the node container's console (``docker logs``), base64 as AWS sends it.
- DescribeInstances / DescribeInstanceStatus: instances still invisible after an ``invisible_ms``
  fault are left out (asked for by id: InvalidInstanceID.NotFound).
- AllocateAddress: refused (an Elastic IP would be an address no container has).
- DescribeRouteTables: routes to instances as AWS shows them (InstanceId, InstanceOwnerId,
  NetworkInterfaceId, State active / blackhole; routes.py); moto shows only the id it was given
  and always "active".

Stopping the provider (LocalStack's shutdown) removes the VPC routers' rules and tables.
"""

from __future__ import annotations

import base64
import copy
import datetime
import logging
import threading

from localstack.aws.api import CommonServiceException, RequestContext, handler
from localstack.services.ec2.provider import Ec2Provider
from localstack.services.moto import call_moto
from localstack.services.plugins import Service, aws_provider

LOG = logging.getLogger("clusterctl.ec2")

CONSOLE_LIMIT = 1024 * 1024  # AWS keeps the last 64 KiB; we keep more so that the host keys survive chatty user data


class RealizerEc2Provider(Ec2Provider):
    def __init__(self) -> None:
        super().__init__()
        self._tokens: dict[tuple[str, str, str], tuple[dict, dict]] = {}
        self._token_locks: dict[tuple[str, str, str], threading.Lock] = {}
        self._tokens_lock = threading.Lock()

    def on_after_init(self) -> None:
        super().on_after_init()
        from . import ec2_realizer, moto_speedups, nlb, routes

        moto_speedups.install()
        ec2_realizer.install()
        nlb.install()
        routes.install()

    def on_before_stop(self) -> None:
        from . import ec2_realizer

        try:
            if ec2_realizer._REALIZER is not None:
                ec2_realizer._REALIZER.shutdown()
        finally:
            super().on_before_stop()

    # ---------------------------------------------------------------- RunInstances
    @handler("RunInstances", expand=False)
    def run_instances(self, context: RequestContext, request: dict) -> dict:
        token = request.get("ClientToken")
        if not token:
            return call_moto(context)
        key = (context.account_id, context.region, token)
        with self._tokens_lock:
            lock = self._token_locks.setdefault(key, threading.Lock())
        with lock:
            prev = self._tokens.get(key)
            if prev is not None:
                params, response = prev
                if params != dict(request):
                    raise CommonServiceException(
                        "IdempotentParameterMismatch",
                        f"The client token '{token}' was already used with different parameters.",
                        sender_fault=True,
                    )
                LOG.info("RunInstances with client token %s again: the first launch's answer", token)
                return copy.deepcopy(response)
            response = call_moto(context)
            self._tokens[key] = (copy.deepcopy(dict(request)), copy.deepcopy(response))
            return response

    # ------------------------------------------------------------ GetConsoleOutput
    @handler("GetConsoleOutput", expand=False)
    def get_console_output(self, context: RequestContext, request: dict) -> dict:
        from .ec2_realizer import realizer

        result = call_moto(context)  # checks the id (InvalidInstanceID.NotFound)
        iid = request.get("InstanceId")
        node = realizer().node(iid)
        if node is None:
            return result
        raw = realizer().console(iid)
        result["InstanceId"] = iid
        result["Timestamp"] = datetime.datetime.now(datetime.timezone.utc)
        if not raw:
            result.pop("Output", None)
            return result
        raw = raw.replace(b"\r\n", b"\n").replace(b"\r", b"")
        result["Output"] = base64.b64encode(raw[-CONSOLE_LIMIT:]).decode()
        return result

    # --------------------------------------------------- eventual consistency fault
    @staticmethod
    def _hide_check(request: dict) -> None:
        from .ec2_realizer import realizer

        for iid in request.get("InstanceIds") or []:
            if realizer().invisible(iid):
                raise CommonServiceException(
                    "InvalidInstanceID.NotFound", f"The instance ID '{iid}' does not exist", sender_fault=True
                )

    @handler("DescribeInstances", expand=False)
    def describe_instances(self, context: RequestContext, request: dict) -> dict:
        from .ec2_realizer import realizer

        self._hide_check(request)
        result = call_moto(context)
        r = realizer()
        if any(n.invisible_until for n in list(r.nodes.values())):
            reservations = []
            for res in result.get("Reservations", []):
                res["Instances"] = [i for i in res.get("Instances", []) if not r.invisible(i["InstanceId"])]
                if res["Instances"]:
                    reservations.append(res)
            result["Reservations"] = reservations
        return result

    @handler("DescribeInstanceStatus", expand=False)
    def describe_instance_status(self, context: RequestContext, request: dict) -> dict:
        from .ec2_realizer import realizer

        self._hide_check(request)
        result = call_moto(context)
        r = realizer()
        result["InstanceStatuses"] = [
            s for s in result.get("InstanceStatuses", []) if not r.invisible(s.get("InstanceId", ""))
        ]
        return result

    # ------------------------------------------------------------ route tables
    @handler("DescribeRouteTables", expand=False)
    def describe_route_tables(self, context: RequestContext, request: dict) -> dict:
        from .routes import router

        result = call_moto(context)
        router().annotate(context.account_id, context.region, result)
        return result

    # ---------------------------------------------------------------- Elastic IPs
    @handler("AllocateAddress", expand=False)
    def allocate_address(self, context: RequestContext, request: dict) -> dict:
        raise CommonServiceException(
            "Unsupported",
            "The clusterctl harness does not realize Elastic IPs (their addresses would belong to no container)",
            sender_fault=True,
        )


@aws_provider(api="ec2", name="realizer")
def ec2_realizer() -> Service:
    from localstack.services.moto import MotoFallbackDispatcher

    return Service.for_provider(RealizerEc2Provider(), dispatch_table_factory=MotoFallbackDispatcher)
