"""Prometheus metrics, and ``GET /metrics`` to scrape them (bearer token).

Several daphne workers: with ``PROMETHEUS_MULTIPROC_DIR`` set (the same
empty directory for every worker of one deployment, emptied before they
start), each worker writes its samples there and any worker's ``/metrics``
answers for all of them, so one scrape through the load balancer sees the
whole deployment. Without it each process counts for itself: scrape each
worker on its own port. The CRM outbox depth is read from the database at
scrape time, so it is the deployment's whatever serves the scrape.
"""

import hmac
import os
from collections.abc import Iterator

from django.conf import settings
from django.http import HttpRequest, HttpResponse, JsonResponse
from django.views.decorators.http import require_safe
from prometheus_client import (
    CONTENT_TYPE_LATEST,
    REGISTRY,
    CollectorRegistry,
    Counter,
    Gauge,
    Histogram,
    generate_latest,
    multiprocess,
)
from prometheus_client.core import GaugeMetricFamily
from prometheus_client.registry import Collector

IDENTIFICATIONS = Counter(
    "cpweb_identifications",
    "Identification decisions, by channel, status and what triggered them "
    "(start, reidentify, platform_name, api).",
    ["channel", "status", "trigger"],
)
IDENTIFY_SECONDS = Histogram(
    "cpweb_identify_seconds",
    "Time to identify an identifier: normalisation, the directory query, the decision.",
    ["channel"],
    buckets=(0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0),
)
PUSH_SECONDS = Histogram(
    "cpweb_push_seconds",
    "From the commit of a change to its frame written to this process's sockets.",
    ["event"],
    buckets=(0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0),
)
PUSH_FRAMES = Counter(
    "cpweb_push_frames",
    "Push frames the hub wrote to sockets: 'direct' (the ready-made frame straight to "
    "the connection, chat.wire) or 'asgi' (through the server's send path).",
    ["path"],
)

OPEN_SOCKETS = Gauge(
    "cpweb_open_sockets",
    "Websockets let in and still open, by kind (visitor, console).",
    ["kind"],
    multiprocess_mode="livesum",
)
WEBHOOK_REJECTIONS = Counter(
    "cpweb_webhook_rejections",
    "Webhook requests refused, by webhook and reason (the answer's error code).",
    ["webhook", "reason"],
)


class CrmOutboxCollector(Collector):
    """``cpweb_crm_outbox_depth``: webhook rows not yet delivered (nor abandoned)."""

    name = "cpweb_crm_outbox_depth"
    documentation = "CRM webhook deliveries waiting in the outbox."

    def describe(self) -> Iterator[GaugeMetricFamily]:
        # Registering asks for the names: answer without a query.
        yield GaugeMetricFamily(self.name, self.documentation)

    def collect(self) -> Iterator[GaugeMetricFamily]:
        from crm.outbox import outbox_depth

        gauge = GaugeMetricFamily(self.name, self.documentation)
        gauge.add_metric([], outbox_depth())
        yield gauge


def _registry() -> CollectorRegistry:
    if os.environ.get("PROMETHEUS_MULTIPROC_DIR"):
        registry = CollectorRegistry()
        multiprocess.MultiProcessCollector(registry)
        registry.register(CrmOutboxCollector())
        return registry
    return REGISTRY


if not os.environ.get("PROMETHEUS_MULTIPROC_DIR"):
    REGISTRY.register(CrmOutboxCollector())


@require_safe
def metrics_view(request: HttpRequest) -> HttpResponse:
    """The metrics in Prometheus' text format, for ``Authorization: Bearer CP_METRICS_TOKEN``."""
    expected = settings.CP_METRICS_TOKEN
    if not expected:
        return JsonResponse(
            {"error": "not_configured", "message": "Set CP_METRICS_TOKEN to expose /metrics."},
            status=503,
        )
    scheme, _, token = request.headers.get("Authorization", "").partition(" ")
    if scheme.lower() != "bearer" or not hmac.compare_digest(
        token.strip().encode(), expected.encode()
    ):
        refused = JsonResponse(
            {"error": "unauthorized", "message": "Send 'Authorization: Bearer <token>'."},
            status=401,
        )
        refused["WWW-Authenticate"] = 'Bearer realm="cpweb metrics"'
        return refused
    response = HttpResponse(generate_latest(_registry()), content_type=CONTENT_TYPE_LATEST)
    response["Cache-Control"] = "no-store"
    return response
