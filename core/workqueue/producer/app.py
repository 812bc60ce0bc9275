"""The producer's Litestar app: :func:`create_app`, its lifespan, auth guard and error mapping."""

from __future__ import annotations

import hmac
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass, field, replace
from typing import Any
from urllib.parse import urlsplit

from litestar import Litestar, MediaType, Request, Response
from litestar.connection import ASGIConnection
from litestar.datastructures import State
from litestar.di import Provide
from litestar.exceptions import HTTPException, NotAuthorizedException, PermissionDeniedException
from litestar.handlers.base import BaseRouteHandler
from litestar.openapi import OpenAPIConfig
from litestar.openapi.plugins import JsonRenderPlugin
from litestar.openapi.spec import SecurityScheme
from litestar.types import Guard
from loguru import logger
from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import OutOfMemoryError as RedisOutOfMemoryError
from redis.exceptions import ReadOnlyError as RedisReadOnlyError
from redis.exceptions import TimeoutError as RedisTimeoutError

from workqueue import __version__, tracing
from workqueue.broker.broker import Broker, BrokerConfig
from workqueue.broker.connection import create_redis
from workqueue.client import Client, Limits
from workqueue.errors import (
    BrokerUnavailable,
    DurabilityError,
    IdempotencyConflict,
    JobNotFound,
    PayloadValidationError,
    TaskValidationError,
    UnknownJobTypeError,
)
from workqueue.producer.job_routes import build_job_routes
from workqueue.producer.metrics_route import metrics_route
from workqueue.producer.openapi_page import SchemaPage
from workqueue.producer.parsing import MalformedBody
from workqueue.producer.read_routes import build_read_routes
from workqueue.producer.routes import build_routes
from workqueue.producer.schedule_routes import schedule_routes
from workqueue.producer.schemas import (
    JSON_VALUE,
    JSON_VALUE_SCHEMA,
    ErrorAnswer,
    ProducerComponents,
)
from workqueue.producer.ui_routes import build_ui_routes
from workqueue.registry import Registry, build_registry
from workqueue.settings import DEFAULT_REDIS_URL

__all__ = ["ProducerSettings", "create_app"]

_HTTP_ERRORS = {
    400: "bad_request",
    401: "unauthorized",
    403: "forbidden",
    404: "not_found",
    405: "method_not_allowed",
    413: "body_too_large",
    415: "unsupported_media_type",
}
#: answers after which the connection is closed
_CLOSE = {"Connection": "close"}


@dataclass(frozen=True, slots=True)
class ProducerSettings:
    """How the producer service runs (the CLI fills it from flags and ``WORKQUEUE_*``)."""

    redis_url: str = DEFAULT_REDIS_URL
    broker: BrokerConfig = field(default_factory=BrokerConfig)
    #: when set, every route but /health needs ``Authorization: Bearer <api_key>``
    api_key: str | None = field(default=None, repr=False)
    max_body_bytes: int = 1024 * 1024
    batch_limit: int = 1000
    max_depth: int = 32
    limits: Limits = field(default_factory=Limits)
    #: the longest a request waits on Redis before it is answered 503
    redis_deadline_s: float = 2.0
    socket_timeout_s: float = 1.5
    connect_timeout_s: float = 1.0


def _error(
    status: int,
    error: str,
    field: str | None,
    problem: str,
    *,
    known: list[str] | None = None,
    headers: dict[str, str] | None = None,
) -> Response[ErrorAnswer]:
    return Response(
        ErrorAnswer(error=error, field=field, problem=problem, known=known),
        status_code=status,
        media_type=MediaType.JSON,
        headers=headers,
    )


def handle_error(request: Request[Any, Any, Any], exc: Exception) -> Response[ErrorAnswer]:
    """The one mapping from errors to HTTP answers; never a stack trace in a response."""
    if isinstance(exc, MalformedBody):
        # The body may be misframed (a Content-Length that lies): what follows it on this
        # connection is not trusted as a next request.
        return _error(400, "malformed_body", exc.field, exc.problem, headers=_CLOSE)
    if isinstance(exc, UnknownJobTypeError):
        return _error(422, "unknown_job_type", exc.field, exc.problem, known=exc.known)
    if isinstance(exc, PayloadValidationError):
        return _error(422, "invalid_payload", exc.field, exc.problem)
    if isinstance(exc, TaskValidationError):
        return _error(422, "invalid_task", exc.field, exc.problem)
    if isinstance(exc, IdempotencyConflict):
        return _error(422, "idempotency_conflict", "Idempotency-Key", str(exc))
    if isinstance(exc, JobNotFound):
        return _error(404, "not_found", "id", str(exc))
    if isinstance(exc, DurabilityError):
        logger.warning("answered 503: {}", str(exc))
        return _error(
            503,
            "not_durable",
            None,
            f"{exc}; no job is lost by retrying: a retry with the same Idempotency-Key answers "
            "the same job",
            headers={"Retry-After": "1"},
        )
    if isinstance(exc, RedisReadOnlyError):
        logger.warning("answered 503: Redis answered READONLY (a replica; failover under way?)")
        return _error(
            503,
            "broker_unavailable",
            None,
            "Redis is read-only right now (a replica, during a failover?); try again shortly",
            headers={"Retry-After": "1"},
        )
    if isinstance(exc, BrokerUnavailable | RedisConnectionError | RedisTimeoutError):
        cause = str(exc) if isinstance(exc, BrokerUnavailable) else type(exc).__name__
        logger.warning("answered 503: {}", cause)
        return _error(
            503,
            "broker_unavailable",
            None,
            "Redis is unreachable; try again shortly",
            headers={"Retry-After": "1"},
        )
    if isinstance(exc, RedisOutOfMemoryError):
        logger.warning("answered 503: Redis is out of memory (maxmemory reached)")
        return _error(
            503,
            "broker_unavailable",
            None,
            "Redis is out of memory (maxmemory reached) and refuses writes; try again later",
            headers={"Retry-After": "1"},
        )
    if isinstance(exc, HTTPException):
        status = exc.status_code
        headers = dict(exc.headers or {})
        problem = exc.detail
        if status == 413:  # stop reading the rest of an oversize body: close the connection
            headers.update(_CLOSE)
            limit = request.app.state.settings.max_body_bytes
            problem = f"the body is over the limit of {limit} bytes (--max-body-bytes)"
        return _error(
            status, _HTTP_ERRORS.get(status, "http_error"), None, problem, headers=headers
        )
    logger.opt(exception=exc).error("unexpected error on {} {}", request.method, request.url.path)
    return _error(500, "internal_error", None, "unexpected error; see the producer's log")


def _auth_guard(api_key: str) -> Guard:
    expected = f"Bearer {api_key}".encode()

    def guard(connection: ASGIConnection[Any, Any, Any, Any], handler: BaseRouteHandler) -> None:
        if handler.opt.get("public"):
            return
        given = connection.headers.get("authorization", "").encode("utf-8", "surrogateescape")
        if not hmac.compare_digest(given, expected):
            raise NotAuthorizedException(
                detail="missing or wrong API key (Authorization: Bearer <key>)",
                headers={"WWW-Authenticate": "Bearer"},
            )

    return guard


_SAFE_METHODS = frozenset({"GET", "HEAD", "OPTIONS"})
_SAME_ORIGIN_SITES = frozenset({"same-origin", "none"})
_DEFAULT_PORTS = {"http": 80, "https": 443}


def _host_and_port(authority: str) -> tuple[str, int | None] | None:
    """``host[:port]`` (IPv6 in brackets) split, the host lower-cased; None if malformed."""
    try:
        parsed = urlsplit(f"//{authority}")
        return (parsed.hostname or "").lower(), parsed.port
    except ValueError:
        return None


def _same_origin(origin: str, host_header: str) -> bool:
    """Whether a browser's ``Origin`` names the host (and port) this request was sent to."""
    try:
        parsed = urlsplit(origin)
        origin_port = parsed.port
    except ValueError:
        return False
    if parsed.scheme not in _DEFAULT_PORTS or not parsed.hostname or parsed.path:
        return False  # "null" (a sandboxed frame, a file:// page) and anything odd
    host = _host_and_port(host_header)
    if host is None or host[0] != parsed.hostname.lower():
        return False
    port = origin_port or _DEFAULT_PORTS[parsed.scheme]
    # Host without a port: the request went to a default port (perhaps through a TLS proxy)
    return port == host[1] if host[1] is not None else port in _DEFAULT_PORTS.values()


def _request_guard(
    connection: ASGIConnection[Any, Any, Any, Any], handler: BaseRouteHandler
) -> None:
    """Browsers: a page of another origin may not change state here, even without an API key
    (the default of ``workqueue up``). Every client: a body must be declared JSON, so no form
    or text/plain request (which browsers send cross-site without a CORS preflight) is read."""
    if connection.scope.get("method", "GET") in _SAFE_METHODS:
        return
    headers = connection.headers
    site = headers.get("sec-fetch-site")
    if site is not None and site.strip().lower() not in _SAME_ORIGIN_SITES:
        raise PermissionDeniedException(
            detail="cross-origin requests from a browser may not change state here"
        )
    origin = headers.get("origin")
    if origin is not None and not _same_origin(origin.strip(), headers.get("host", "")):
        raise PermissionDeniedException(
            detail="the Origin header names another site; cross-origin requests are refused"
        )
    if handler.opt.get("json_body"):
        media_type = headers.get("content-type", "").split(";", 1)[0].strip().lower()
        if media_type != "application/json":
            raise HTTPException(
                status_code=415, detail="the body must be JSON: send Content-Type: application/json"
            )


def _client(state: State) -> Client:
    client: Client = state.client
    return client


def create_app(settings: ProducerSettings, registry: Registry | None = None) -> Litestar:
    """The producer app; the Redis client lives on ``app.state`` for the app's lifetime."""
    job_types = registry if registry is not None else build_registry()
    durable_s = settings.broker.durable_timeout_s if settings.broker.durable_enqueue else 0.0
    if durable_s:  # an enqueue may wait that long for the replicas on top of Redis itself
        settings = replace(settings, redis_deadline_s=settings.redis_deadline_s + durable_s)

    @asynccontextmanager
    async def lifespan(app: Litestar) -> AsyncIterator[None]:
        redis = create_redis(
            settings.redis_url,
            socket_timeout=settings.socket_timeout_s + durable_s,
            connect_timeout=settings.connect_timeout_s,
            retries=0,
        )
        client = Client(Broker(redis, settings.broker), job_types, settings.limits)
        app.state.client = client
        try:
            yield
        finally:
            await client.aclose()

    return Litestar(
        route_handlers=[
            *build_routes(settings, job_types),
            *build_job_routes(settings),
            *schedule_routes(settings, job_types),
            *build_read_routes(settings, job_types),
            *build_ui_routes(),
            metrics_route(settings),
        ],
        lifespan=[lifespan],
        middleware=tracing.http_middleware(),  # OpenTelemetry spans of enqueue requests
        state=State({"settings": settings}),
        dependencies={"client": Provide(_client, sync_to_thread=False)},
        guards=[_request_guard, *([_auth_guard(settings.api_key)] if settings.api_key else [])],
        exception_handlers={Exception: handle_error},
        request_max_body_size=settings.max_body_bytes,
        openapi_config=OpenAPIConfig(
            title="WorkQueue producer",
            version=__version__,
            # no viewer that loads scripts from a CDN: a plain page and the JSON document
            render_plugins=[SchemaPage(), JsonRenderPlugin()],
            components=ProducerComponents(
                security_schemes={"bearer": SecurityScheme(type="http", scheme="bearer")}
                if settings.api_key
                else None,
                extra_schemas={JSON_VALUE: JSON_VALUE_SCHEMA},
            ),
        ),
        debug=False,
    )
