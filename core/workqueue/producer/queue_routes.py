"""The queue routes (SPEC 11): ``GET /queues``, ``POST /queues/{name}/pause`` and
``/resume`` (each also under ``/api/``). Errors are raised and mapped in app.py."""

from __future__ import annotations

from typing import Annotated, Any

import msgspec
from litestar import Request, get, post
from litestar.di import NamedDependency
from litestar.handlers import HTTPRouteHandler
from litestar.openapi.datastructures import ResponseSpec
from litestar.params import Parameter

from workqueue.broker import queue_control
from workqueue.broker.queue_control import QueueOverview
from workqueue.client import Client
from workqueue.producer.routes import guarded
from workqueue.producer.schemas import NAME_REGEX, ErrorAnswer, QueueAnswer, operation_class

__all__ = ["queue_routes"]

_BAD_NAME = {
    400: ResponseSpec(ErrorAnswer, description="Not a valid queue name (the path's pattern)"),
    422: ResponseSpec(ErrorAnswer, description="Not a valid queue name (named in `field`)"),
}


def _answer(row: QueueOverview) -> QueueAnswer:
    return msgspec.convert(row.to_dict(), QueueAnswer)


async def list_queues(
    request: Request[Any, Any, Any], client: NamedDependency[Client]
) -> list[QueueAnswer]:
    rows = await guarded(client.queues(), request.app.state.settings.redis_deadline_s)
    return [_answer(row) for row in rows]


async def _set(
    request: Request[Any, Any, Any], client: Client, name: str, paused: bool
) -> QueueAnswer:
    queue_control.check_queue_name(name)
    deadline = request.app.state.settings.redis_deadline_s
    call = client.pause_queue(name) if paused else client.resume_queue(name)
    return _answer(await guarded(call, deadline))


async def pause_queue(
    request: Request[Any, Any, Any],
    name: Annotated[str, Parameter(min_length=1, max_length=128, pattern=NAME_REGEX)],
    client: NamedDependency[Client],
) -> QueueAnswer:
    return await _set(request, client, name, True)


async def resume_queue(
    request: Request[Any, Any, Any],
    name: Annotated[str, Parameter(min_length=1, max_length=128, pattern=NAME_REGEX)],
    client: NamedDependency[Client],
) -> QueueAnswer:
    return await _set(request, client, name, False)


def queue_routes(
    auth: dict[int, ResponseSpec],
    unavailable: dict[int, ResponseSpec],
    security: list[dict[str, list[str]]] | None,
) -> list[HTTPRouteHandler]:
    """The queue routes, with the app's auth and 503 answers documented."""
    return [
        get(
            ["/queues", "/api/queues"],
            summary="Every queue: depth per status, oldest waiting age, partitions, paused",
            operation_class=operation_class(None),
            responses={**auth, **unavailable},
            security=security,
        )(list_queues),
        post(
            ["/queues/{name:str}/pause", "/api/queues/{name:str}/pause"],
            status_code=200,
            summary="Pause a queue: it accepts jobs and starts none (running jobs finish)",
            description="Idempotent; the state lives in Redis. Answers the queue.",
            operation_class=operation_class(None),
            responses={**_BAD_NAME, **auth, **unavailable},
            security=security,
        )(pause_queue),
        post(
            ["/queues/{name:str}/resume", "/api/queues/{name:str}/resume"],
            status_code=200,
            summary="Resume a paused queue: its waiting jobs start",
            description="Idempotent. Answers the queue.",
            operation_class=operation_class(None),
            responses={**_BAD_NAME, **auth, **unavailable},
            security=security,
        )(resume_queue),
    ]
