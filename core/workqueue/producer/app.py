"""The producer's Litestar app: :func:`create_app`, its lifespan, auth guard and error mapping."""

from __future__ import annotations

import hmac
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from typing import Any

from litestar import Litestar, MediaType, Request, Response
from litestar.connection import ASGIConnection
from litestar.datastructures import State
from litestar.di import Provide
from litestar.exceptions import HTTPException, NotAuthorizedException
from litestar.handlers.base import BaseRouteHandler
from litestar.openapi import OpenAPIConfig
from litestar.openapi.spec import SecurityScheme
from litestar.types import Guard
from loguru import logger
from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import OutOfMemoryError as RedisOutOfMemoryError
from redis.exceptions import TimeoutError as RedisTimeoutError

from workqueue import __version__
from workqueue.broker.broker import Broker, BrokerConfig
from workqueue.broker.connection import create_redis
from workqueue.client import Client, Limits
from workqueue.errors import (
    BrokerUnavailable,
    IdempotencyConflict,
    JobNotFound,
    PayloadValidationError,
    TaskValidationError,
    UnknownJobTypeError,
)
from workqueue.producer.parsing import MalformedBody
from workqueue.producer.routes import build_routes
from workqueue.producer.schemas import (
    JSON_VALUE,
    JSON_VALUE_SCHEMA,
    ErrorAnswer,
    ProducerComponents,
)
from workqueue.registry import Registry, build_registry
from workqueue.settings import DEFAULT_REDIS_URL

__all__ = ["ProducerSettings", "create_app"]

_HTTP_ERRORS = {
    400: "bad_request",
    401: "unauthorized",
    404: "not_found",
    405: "method_not_allowed",
    413: "body_too_large",
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
        if status == 413:  # stop reading the rest of an oversize body: close the connection
            headers.update(_CLOSE)
        return _error(
            status, _HTTP_ERRORS.get(status, "http_error"), None, exc.detail, headers=headers
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


def _client(state: State) -> Client:
    client: Client = state.client
    return client


def create_app(settings: ProducerSettings, registry: Registry | None = None) -> Litestar:
    """The producer app; the Redis client lives on ``app.state`` for the app's lifetime."""
    job_types = registry if registry is not None else build_registry()

    @asynccontextmanager
    async def lifespan(app: Litestar) -> AsyncIterator[None]:
        redis = create_redis(
            settings.redis_url,
            socket_timeout=settings.socket_timeout_s,
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
        route_handlers=build_routes(settings, job_types),
        lifespan=[lifespan],
        state=State({"settings": settings}),
        dependencies={"client": Provide(_client, sync_to_thread=False)},
        guards=[_auth_guard(settings.api_key)] if settings.api_key else [],
        exception_handlers={Exception: handle_error},
        request_max_body_size=settings.max_body_bytes,
        openapi_config=OpenAPIConfig(
            title="WorkQueue producer",
            version=__version__,
            components=ProducerComponents(
                security_schemes={"bearer": SecurityScheme(type="http", scheme="bearer")}
                if settings.api_key
                else None,
                extra_schemas={JSON_VALUE: JSON_VALUE_SCHEMA},
            ),
        ),
        debug=False,
    )
