"""Services for the LocalStack community edition, served entirely by moto.

LocalStack 4.14's community edition registers no ``elbv2`` provider, so every ELBv2 call
answers "not included in your current license plan". Moto (bundled as ``moto-ext``)
implements ELBv2, so the ``elbv2`` provider here builds a dispatch table that sends every
operation of the service model straight to ``localstack.services.moto.dispatch_to_moto``
(moto's own response is passed through unchanged).

On Python 3.11 LocalStack 4.14's own STS provider cannot load:
``localstack/services/stores.py`` uses Python 3.12 generic-class syntax
(``class RegionBundle[BaseStoreType]``), a SyntaxError at import, so health shows
``"sts": "error"``. The ``sts:moto`` provider here serves STS from moto instead; ``up``
selects it with ``PROVIDER_OVERRIDE_STS=moto``.

The community edition has no ECR provider either. ``ecr:moto`` serves ECR's API from moto
(``up`` selects it with ``PROVIDER_OVERRIDE_ECR=moto``), so that a node can get a registry token
as on AWS: moto's GetAuthorizationToken answers ``base64("AWS:<registry id>-auth-token")`` with
``proxyEndpoint`` ``https://<registry id>.dkr.ecr.<region>.amazonaws.com`` (and an ``expiresAt``
hard-coded to 2015-01-01, in the past). The registry behind that name is the harness's
(``localstack/registry/up``: docker0's address, port 443, user ``AWS`` with the password of
account 000000000000's token).

All are registered under the entry-point group ``localstack.aws.provider`` (see
../pyproject.toml), the way LocalStack's own moto-backed providers in
``localstack/services/providers.py`` are, e.g.::

    @aws_provider()
    def sts():
        provider = StsProvider()
        return Service.for_provider(provider, dispatch_table_factory=MotoFallbackDispatcher)

``MotoFallbackDispatcher`` scans a provider class generated from the ASF API
(``localstack.aws.api.<service>``) for handlers, and 4.14 ships none for elbv2; so the
dispatch table here is built from the botocore service model instead.
"""

from __future__ import annotations

from localstack.aws.api import RequestContext, ServiceRequest
from localstack.aws.skeleton import DispatchTable
from localstack.http import Response
from localstack.services.plugins import Service, ServiceLifecycleHook, aws_provider


class MotoOnlyProvider(ServiceLifecycleHook):
    """Provider whose every operation is answered by moto's backend for ``service``."""

    def __init__(self, service: str):
        self.service = service


def _to_moto(context: RequestContext, request: ServiceRequest) -> Response:
    from localstack.services.moto import dispatch_to_moto

    return dispatch_to_moto(context)


def moto_dispatch_table(provider: MotoOnlyProvider) -> DispatchTable:
    """Every operation of the provider's service model goes to moto."""
    from localstack.aws.spec import load_service

    model = load_service(provider.service)
    return {name: _to_moto for name in model.operation_names}


def moto_service(api: str) -> Service:
    return Service.for_provider(MotoOnlyProvider(api), dispatch_table_factory=moto_dispatch_table)


@aws_provider(api="elbv2", name="default")
def elbv2() -> Service:
    return moto_service("elbv2")


@aws_provider(api="sts", name="moto")
def sts() -> Service:
    return moto_service("sts")


@aws_provider(api="ecr", name="moto")
def ecr() -> Service:
    return moto_service("ecr")
