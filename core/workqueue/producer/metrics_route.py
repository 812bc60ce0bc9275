"""``GET /metrics`` (and ``/api/metrics``) on the producer: the fleet's figures with no worker.

The same system-wide figures a worker's metrics server answers (``workqueue.worker.metrics``:
:func:`~workqueue.worker.metrics.summarize` and
:func:`~workqueue.worker.metrics.render_prometheus` are reused, not copied), without the
``worker`` section and the run-time histogram, which only a worker process has. JSON by
default; the Prometheus text format when ``Accept`` prefers ``text/plain`` or
``application/openmetrics-text`` (as Prometheus scrapes). Needs the API key like every route
but ``/health``.

Cost: one scrape is one call of the read model's ``figures()``: 2 Redis round trips (3 on a
process's first call) whatever the number of queues and job types
(tests/integration/test_producer_metrics.py).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import msgspec
from litestar import MediaType, Request, Response, get
from litestar.handlers import HTTPRouteHandler
from litestar.openapi.spec import OpenAPIMediaType, OpenAPIResponse, Operation, Schema
from litestar.openapi.spec.enums import OpenAPIType

from workqueue.producer.routes import _UNAUTHORIZED, _UNAVAILABLE, guarded
from workqueue.producer.schemas import operation_class
from workqueue.worker.metrics import render_prometheus, summarize, wants_prometheus

if TYPE_CHECKING:
    from workqueue.producer.app import ProducerSettings

__all__ = ["MetricsAnswer", "QueueMetrics", "metrics_route"]

PROMETHEUS_MEDIA_TYPE = "text/plain; version=0.0.4; charset=utf-8"


class QueueDepth(msgspec.Struct):
    """Jobs of one queue per status (finished ones: those still kept)."""

    scheduled: int
    queued: int
    active: int
    retrying: int
    completed: int
    failed: int
    cancelled: int


class QueueMetrics(msgspec.Struct):
    """One queue's row."""

    jobs_in_queue: int
    jobs_done: int
    jobs_failed: int
    jobs_cancelled: int
    running: int
    scheduled: int
    retrying: int
    failed_attempts: int
    retried: int
    lost_leases: int
    enqueued: int
    oldest_waiting_seconds: float
    depth: QueueDepth


class MetricsAnswer(msgspec.Struct):
    """The system-wide figures (a worker's ``/metrics`` adds a ``worker`` section)."""

    total_jobs_in_queue: int
    jobs_done: int
    jobs_failed: int
    jobs_cancelled: int
    running: int
    scheduled: int
    retrying: int
    failed_attempts: int
    retried: int
    lost_leases: int
    enqueued: int
    oldest_waiting_seconds: float
    queues: dict[str, QueueMetrics]
    types: dict[str, dict[str, int]]


async def metrics(request: Request[Any, Any, Any]) -> Response[MetricsAnswer]:
    """The fleet's figures, JSON or Prometheus text."""
    state = request.app.state
    figures = summarize(
        await guarded(state.client.broker.figures(), state.settings.redis_deadline_s)
    )
    if wants_prometheus(request.headers.get("accept", "")):
        return _raw(render_prometheus(figures).encode(), PROMETHEUS_MEDIA_TYPE)
    return _raw(msgspec.json.encode(figures), MediaType.JSON)


def _raw(body: bytes, media_type: str) -> Response[Any]:
    """An answer encoded here (the route's annotation still documents the JSON)."""
    return Response(body, media_type=media_type)


def _with_prometheus(base: type[Operation]) -> type[Operation]:
    """The operation documents the Prometheus text as a second media type of the 200."""

    @dataclass
    class _Operation(base):  # type: ignore[valid-type,misc]
        def __post_init__(self) -> None:
            super().__post_init__()
            ok = (self.responses or {}).get("200")
            if isinstance(ok, OpenAPIResponse):
                ok.content = {
                    **(ok.content or {}),
                    "text/plain": OpenAPIMediaType(schema=Schema(type=OpenAPIType.STRING)),
                }

    return _Operation


def metrics_route(settings: ProducerSettings) -> HTTPRouteHandler:
    """The route handler (protected by the API key when one is set, like every other route
    but ``/health``)."""
    auth = _UNAUTHORIZED if settings.api_key else {}
    return get(
        ["/metrics", "/api/metrics"],
        summary="System-wide figures (JSON or Prometheus)",
        description=(
            "The fleet's figures from Redis, with no worker needed: totals, a row per queue "
            "(depth per status, oldest waiting age) and counters per job type. With an "
            "`Accept` header that prefers `text/plain` or `application/openmetrics-text` "
            "the answer is the Prometheus text format (version 0.0.4). At most 3 Redis round "
            "trips per request, whatever the number of queues."
        ),
        operation_class=_with_prometheus(operation_class(None)),
        responses={**auth, **_UNAVAILABLE},
        security=[{"bearer": []}] if settings.api_key else None,
    )(metrics)
