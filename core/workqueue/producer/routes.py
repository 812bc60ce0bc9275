"""The producer's route handlers. Errors are raised, and mapped to answers in one place (app.py)."""

from __future__ import annotations

import asyncio
import functools
from collections.abc import Awaitable
from typing import TYPE_CHECKING, Annotated, Any, TypeVar

import msgspec
from litestar import MediaType, Request, Response, get, post
from litestar.di import NamedDependency
from litestar.handlers import HTTPRouteHandler
from litestar.openapi.datastructures import ResponseSpec
from litestar.params import FromPath, Parameter
from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import TimeoutError as RedisTimeoutError

from workqueue.client import Client, TaskSpec, prepare_task
from workqueue.errors import BrokerUnavailable, JobNotFound, TaskValidationError
from workqueue.producer.parsing import decode_body, spec_from_object
from workqueue.producer.schemas import (
    EnqueueAnswer,
    ErrorAnswer,
    HealthAnswer,
    JobAnswer,
    batch_schema,
    operation_class,
    task_schema,
)
from workqueue.registry import Registry

if TYPE_CHECKING:
    from workqueue.producer.app import ProducerSettings

__all__ = ["build_routes"]

T = TypeVar("T")

_MAX_JOB_ID = 200

_BAD_BODY = {
    400: ResponseSpec(ErrorAnswer, description="Malformed JSON body"),
    403: ResponseSpec(ErrorAnswer, description="A cross-origin request from a browser"),
    413: ResponseSpec(ErrorAnswer, description="Body over the size limit"),
    415: ResponseSpec(ErrorAnswer, description="Content-Type is not application/json"),
    422: ResponseSpec(ErrorAnswer, description="A field is invalid (named in `field`)"),
}
_UNAVAILABLE = {
    503: ResponseSpec(ErrorAnswer, description="Redis unreachable; retry after Retry-After"),
}
_UNAUTHORIZED = {401: ResponseSpec(ErrorAnswer, description="Missing or wrong API key")}
_BATCH_REPEAT = {
    200: ResponseSpec(list[EnqueueAnswer], description="Idempotent repeat of a whole batch")
}


async def guarded(call: Awaitable[T], deadline_s: float) -> T:
    """Await a Redis-backed call; an unreachable or slow Redis becomes BrokerUnavailable."""
    try:
        async with asyncio.timeout(deadline_s):
            return await call
    except (RedisConnectionError, RedisTimeoutError, TimeoutError) as exc:
        raise BrokerUnavailable(f"Redis is unreachable: {type(exc).__name__}") from None


def _typed(client: Client) -> frozenset[str]:
    """The job types whose plugin declares a payload schema (worked out once per registry)."""
    return _typed_names(client.registry)


@functools.lru_cache(maxsize=8)
def _typed_names(registry: Registry) -> frozenset[str]:
    return frozenset(t.name for t in registry.job_types() if t.payload_schema is not None)


async def _locate(client: Client, specs: list[TaskSpec], exc: TaskValidationError) -> int | None:
    """Which spec of a batch fails validation (only called on the error path, no Redis)."""
    from workqueue.errors import UnknownJobTypeError

    if isinstance(exc, UnknownJobTypeError):
        remote = set(exc.known)
    else:  # every type was known, or enqueue_specs would have raised UnknownJobTypeError first
        remote = {s.type for s in specs if isinstance(s.type, str)}
    for index, spec in enumerate(specs):
        try:
            prepare_task(spec, client.registry, client.limits, remote)
        except TaskValidationError:
            return index
    return None


def _json(content: Any, status: int, headers: dict[str, str] | None = None) -> Response[Any]:
    """An answer encoded here with msgspec (the route's annotation still documents it)."""
    return Response(
        msgspec.json.encode(content), status_code=status, media_type=MediaType.JSON, headers=headers
    )


async def enqueue(request: Request[Any, Any, Any]) -> Response[EnqueueAnswer]:
    state = request.app.state
    settings, client = state.settings, state.client
    body = decode_body(await request.body(), settings.max_depth)
    key = request.headers.get("idempotency-key")
    spec = spec_from_object(body, idempotency_key=key or None, typed=_typed(client))
    (job,) = await guarded(client.enqueue_specs([spec]), settings.redis_deadline_s)
    return _json(job.to_dict(), 200 if job.duplicate else 202, {"Location": f"/jobs/{job.id}"})


async def enqueue_batch(request: Request[Any, Any, Any]) -> Response[list[EnqueueAnswer]]:
    state = request.app.state
    settings, client = state.settings, state.client
    body = decode_body(await request.body(), settings.max_depth)
    if not isinstance(body, list):
        raise TaskValidationError("body", "must be a JSON array of tasks")
    if len(body) > settings.batch_limit:
        raise TaskValidationError(
            "body", f"has {len(body)} tasks; the limit is {settings.batch_limit}"
        )
    typed = _typed(client)
    # One key for the batch: item i is written under "<key>#<i>", so a repeat of the same batch
    # (a retry after a timeout or a 503) answers with the same jobs instead of new ones.
    key = request.headers.get("idempotency-key") or None
    specs = [
        spec_from_object(
            item, prefix=f"[{i}]", typed=typed, idempotency_key=f"{key}#{i}" if key else None
        )
        for i, item in enumerate(body)
    ]
    if not specs:
        return Response([], status_code=202)
    try:
        jobs = await guarded(client.enqueue_specs(specs), settings.redis_deadline_s)
    except TaskValidationError as exc:
        index = await _locate(client, specs, exc)
        if index is not None:
            exc.field = f"[{index}].{exc.field}"
        raise
    status = 200 if all(job.duplicate for job in jobs) else 202
    return _json([job.to_dict() for job in jobs], status)


async def get_job(
    request: Request[Any, Any, Any],
    job_id: Annotated[FromPath[str], Parameter(min_length=1, max_length=_MAX_JOB_ID)],
    client: NamedDependency[Client],
) -> JobAnswer:
    if not job_id or len(job_id) > _MAX_JOB_ID:
        raise JobNotFound(job_id[:_MAX_JOB_ID])
    info = await guarded(client.get_job(job_id), request.app.state.settings.redis_deadline_s)
    return msgspec.convert(info.to_dict(), JobAnswer)  # H5: history entries are structs


async def health() -> HealthAnswer:
    return HealthAnswer(status="ok")


async def ready(request: Request[Any, Any, Any], client: NamedDependency[Client]) -> HealthAnswer:
    await guarded(client.broker.ping(), request.app.state.settings.redis_deadline_s)
    return HealthAnswer(status="ready")


def build_routes(settings: ProducerSettings, registry: Registry) -> list[HTTPRouteHandler]:
    """The route handlers of one app; the OpenAPI document states this app's job types,
    limits and whether an API key is needed."""
    from workqueue.producer.queue_routes import queue_routes  # it imports guarded from here

    auth = _UNAUTHORIZED if settings.api_key else {}
    security: list[dict[str, list[str]]] | None = [{"bearer": []}] if settings.api_key else None
    task = task_schema(registry, settings.limits)
    batch = batch_schema(registry, settings.limits, settings.batch_limit)
    idempotent = {
        200: ResponseSpec(EnqueueAnswer, description="Idempotent repeat, or a unique job's twin")
    }
    return [
        post(
            ["/enqueue", "/api/enqueue"],
            status_code=202,
            summary="Enqueue one task",
            operation_class=operation_class(task),
            description=(
                "Body: a JSON object `{type, payload?, retries?|Retries?, queue?, delay?|run_at?, "
                "timeout?, priority?, unique?}`. Header `Idempotency-Key` makes a repeat answer "
                "200 with the same job; so does `unique: true` while that task's job is unfinished."
            ),
            responses={**idempotent, **_BAD_BODY, **auth, **_UNAVAILABLE},
            security=security,
            opt={"json_body": True},
        )(enqueue),
        post(
            ["/enqueue/batch", "/api/enqueue/batch"],
            status_code=202,
            summary="Enqueue a batch of tasks",
            operation_class=operation_class(batch),
            description=(
                "Body: a JSON array of task objects; validated all-or-nothing (an error names the "
                "index, e.g. `[3].type`), written in one round trip, answered with the results "
                "in order. Header `Idempotency-Key` covers the whole batch (item i is keyed "
                "`<key>#<i>`): a repeat answers 200 with the same jobs."
            ),
            responses={**_BATCH_REPEAT, **_BAD_BODY, **auth, **_UNAVAILABLE},
            security=security,
            opt={"json_body": True},
        )(enqueue_batch),
        get(
            ["/jobs/{job_id:str}", "/api/jobs/{job_id:str}"],
            summary="A job's current state",
            operation_class=operation_class(None),
            responses={
                404: ResponseSpec(ErrorAnswer, description="Unknown job"),
                **auth,
                **_UNAVAILABLE,
            },
            security=security,
        )(get_job),
        get("/health", summary="The process is up", opt={"public": True})(health),
        get(
            "/ready",
            summary="Redis answers",
            operation_class=operation_class(None),
            responses={**auth, **_UNAVAILABLE},
            security=security,
        )(ready),
        *queue_routes(auth, _UNAVAILABLE, security),
    ]
