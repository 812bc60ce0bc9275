"""``GET /schedules``, ``GET|PUT|DELETE /schedules/{name}`` (also under ``/api/``).

``PUT`` creates (201) or replaces (200) an operator's schedule; its body is checked like an
enqueued task's (type known here or advertised by a live worker, payload against the type's
schema, queue name) plus the cron expression and the time zone. ``paused`` in the body pauses
or resumes it (absent: unchanged). Errors are raised and mapped in app.py.
"""

from __future__ import annotations

import time
import zoneinfo
from typing import TYPE_CHECKING, Annotated, Any

import msgspec
from litestar import MediaType, Request, Response, Router, delete, get, put, route
from litestar.di import NamedDependency
from litestar.enums import HttpMethod
from litestar.exceptions import NotFoundException
from litestar.handlers import HTTPRouteHandler
from litestar.openapi.datastructures import ResponseSpec
from litestar.params import Parameter

from workqueue.client import Client
from workqueue.errors import TaskValidationError
from workqueue.producer.parsing import decode_body
from workqueue.producer.routes import guarded
from workqueue.producer.schemas import NAME_REGEX, ErrorAnswer, operation_class, task_schema
from workqueue.registry import Registry
from workqueue.schedules.checks import CRON_REGEX, checked, with_next_tick
from workqueue.schedules.model import Schedule, ScheduleState
from workqueue.schedules.store import ScheduleStore

if TYPE_CHECKING:
    from workqueue.producer.app import ProducerSettings

__all__ = ["ScheduleAnswer", "schedule_routes", "schedule_schema"]

_FIELDS = ("cron", "type", "payload", "queue", "timezone", "paused")
_NAME = Parameter(min_length=1, max_length=128, pattern=NAME_REGEX, description="schedule name")


class ScheduleAnswer(msgspec.Struct):
    """A schedule as ``GET /schedules/{name}`` shows it (times: RFC 3339, UTC)."""

    name: str
    cron: str
    type: str
    payload: Any
    queue: str
    timezone: str
    paused: bool
    #: ``plugin`` (declared by a plugin, registered by the workers) or ``operator``
    source: str
    #: the last tick that enqueued its job, and that job's id
    last_tick: str | None
    last_job_id: str | None
    fired: int
    #: the next tick it fires at (null while paused)
    next_tick: str | None


def schedule_schema(registry: Registry, settings: ProducerSettings) -> dict[str, Any]:
    """The JSON Schema of a ``PUT /schedules/{name}`` body."""
    task = task_schema(registry, settings.limits)
    props = task["properties"]
    schema: dict[str, Any] = {
        "type": "object",
        "required": ["cron", "type"],
        "properties": {
            "cron": {
                "type": "string",
                "pattern": CRON_REGEX,
                "description": (
                    "5 fields (minute hour day-of-month month day-of-week) or 6 with a leading "
                    "seconds field. The pattern states a common subset; any expression cronsim "
                    "accepts is taken (ranges, names, L, W, #)."
                ),
            },
            "type": props["type"],
            "payload": props["payload"],
            "queue": props["queue"],
            "timezone": {
                "type": ["string", "null"],
                "enum": [*sorted(zoneinfo.available_timezones()), None],
                "default": "UTC",
                "description": "IANA time zone whose wall clock the expression follows",
            },
            "paused": {
                "type": ["boolean", "null"],
                "description": "pause (true) or resume (false); absent or null: unchanged",
            },
        },
        "additionalProperties": False,
    }
    if "allOf" in task:
        schema["allOf"] = task["allOf"]
    return schema


def _answer(state: ScheduleState) -> ScheduleAnswer:
    view = with_next_tick(state, int(time.time() * 1000)).to_dict()
    return ScheduleAnswer(**view)


def _store(client: Client) -> ScheduleStore:
    return ScheduleStore(client.broker.redis, client.broker.config.prefix)


def _not_found(name: str) -> NotFoundException:
    return NotFoundException(detail=f"no schedule named {name!r}")


def _body_schedule(name: str, body: Any) -> tuple[Schedule, bool | None]:
    """The schedule a PUT body states, and its ``paused`` (None: unchanged)."""
    if not isinstance(body, dict):
        raise TaskValidationError("body", "must be a JSON object")
    for key in body:
        if key not in _FIELDS:
            raise TaskValidationError(str(key), f"unknown field; allowed: {', '.join(_FIELDS)}")
    for key in ("cron", "type"):
        if key not in body:
            raise TaskValidationError(key, "is required")
        if not isinstance(body[key], str):
            raise TaskValidationError(key, "must be a string")
    values: dict[str, Any] = {"queue": "default", "timezone": "UTC"}
    for key in ("queue", "timezone"):
        value = body.get(key)
        if value is not None and not isinstance(value, str):
            raise TaskValidationError(key, "must be a string")
        if value is not None:
            values[key] = value
    if body.get("payload") is not None and not isinstance(body["payload"], dict):
        raise TaskValidationError("payload", "must be a JSON object")
    paused = body.get("paused")
    if paused is not None and not isinstance(paused, bool):
        raise TaskValidationError("paused", "must be true, false or null")
    if values["timezone"] not in zoneinfo.available_timezones():
        raise TaskValidationError("timezone", f"unknown time zone {values['timezone']!r}")
    schedule = Schedule(
        name=name, cron=body["cron"], type=body["type"], payload=body.get("payload"), **values
    )
    return schedule, paused


async def list_schedules(
    request: Request[Any, Any, Any], client: NamedDependency[Client]
) -> list[ScheduleAnswer]:
    settings = request.app.state.settings
    states = await guarded(_store(client).all(), settings.redis_deadline_s)
    return [_answer(state) for state in states]


async def get_schedule(
    request: Request[Any, Any, Any],
    name: Annotated[str, _NAME],
    client: NamedDependency[Client],
) -> ScheduleAnswer:
    settings = request.app.state.settings
    state = await guarded(_store(client).get(name), settings.redis_deadline_s)
    if state is None:
        raise _not_found(name)
    return _answer(state)


async def put_schedule(
    request: Request[Any, Any, Any],
    name: Annotated[str, _NAME],
    client: NamedDependency[Client],
) -> Response[ScheduleAnswer]:
    settings = request.app.state.settings
    schedule, paused = _body_schedule(name, decode_body(await request.body(), settings.max_depth))

    async def write() -> tuple[str, ScheduleState | None]:
        registry = client.registry
        remote = () if schedule.type in registry else await client.broker.advertised_types()
        store = _store(client)
        verdict = await store.put(
            checked(schedule, registry, settings.limits, remote), source="operator", paused=paused
        )
        return verdict, await store.get(name)

    verdict, state = await guarded(write(), settings.redis_deadline_s)
    if state is None:  # deleted in between
        raise TaskValidationError("name", "the schedule was deleted while it was written")
    return Response(
        _answer(state),
        status_code=201 if verdict == "created" else 200,
        media_type=MediaType.JSON,
        headers={"Location": f"/schedules/{name}"} if verdict == "created" else None,
    )


async def delete_schedule(
    request: Request[Any, Any, Any],
    name: Annotated[str, _NAME],
    client: NamedDependency[Client],
) -> None:
    settings = request.app.state.settings
    if not await guarded(_store(client).delete(name), settings.redis_deadline_s):
        raise _not_found(name)


def options() -> Response[None]:
    """OPTIONS on a schedule: the methods it supports."""
    return Response(None, status_code=204, headers={"Allow": "DELETE, GET, OPTIONS, PUT"})


def schedule_routes(settings: ProducerSettings, registry: Registry) -> list[Router]:
    """The schedule routes of one app (documented with this app's job types and API key).

    In one Router: Litestar then builds each path's route from all its handlers at once, so
    the ``Allow`` header of its OPTIONS answer names every method."""
    auth = (
        {401: ResponseSpec(ErrorAnswer, description="Missing or wrong API key")}
        if settings.api_key
        else {}
    )
    security: list[dict[str, list[str]]] | None = [{"bearer": []}] if settings.api_key else None
    unavailable = {
        503: ResponseSpec(ErrorAnswer, description="Redis unreachable; retry after Retry-After")
    }
    bad_name = {400: ResponseSpec(ErrorAnswer, description="The name is not a valid name")}
    missing = {404: ResponseSpec(ErrorAnswer, description="No schedule of that name")}
    bad_body = {
        400: ResponseSpec(ErrorAnswer, description="Malformed JSON body or invalid name"),
        403: ResponseSpec(ErrorAnswer, description="A cross-origin request from a browser"),
        413: ResponseSpec(ErrorAnswer, description="Body over the size limit"),
        415: ResponseSpec(ErrorAnswer, description="Content-Type is not application/json"),
        422: ResponseSpec(ErrorAnswer, description="A field is invalid (named in `field`)"),
    }
    paths = ["/schedules/{name:str}", "/api/schedules/{name:str}"]
    handlers: list[HTTPRouteHandler] = [
        # first, so Litestar adds no OPTIONS handler of its own: its own would answer with the
        # methods of the first handler registered for the path only (GET)
        route(
            paths, http_method=[HttpMethod.OPTIONS], include_in_schema=False, sync_to_thread=False
        )(options),
        get(
            ["/schedules", "/api/schedules"],
            summary="Every cron schedule",
            operation_class=operation_class(None),
            responses={**auth, **unavailable},
            security=security,
        )(list_schedules),
        get(
            paths,
            summary="One cron schedule",
            operation_class=operation_class(None),
            responses={
                200: ResponseSpec(ScheduleAnswer, description="The schedule"),
                **bad_name,
                **missing,
                **auth,
                **unavailable,
            },
            security=security,
        )(get_schedule),
        put(
            paths,
            summary="Create or replace a cron schedule",
            description=(
                "Body: `{cron, type, payload?, queue?, timezone?, paused?}`. 201 when created, "
                "200 when replaced. Each tick enqueues one job (id derived from the schedule "
                "and the tick), however many workers run. See docs/scheduling.md."
            ),
            operation_class=operation_class(schedule_schema(registry, settings)),
            responses={
                200: ResponseSpec(ScheduleAnswer, description="Replaced"),
                201: ResponseSpec(ScheduleAnswer, description="Created"),
                **bad_body,
                **auth,
                **unavailable,
            },
            security=security,
            opt={"json_body": True},
        )(put_schedule),
        delete(
            paths,
            summary="Delete a cron schedule",
            description=(
                "A schedule a plugin declares comes back when a worker with that plugin starts; "
                "pause it (PUT with `paused: true`) to stop it for good."
            ),
            operation_class=operation_class(None),
            status_code=204,
            responses={**bad_name, **missing, **auth, **unavailable},
            security=security,
        )(delete_schedule),
    ]
    return [Router(path="/", route_handlers=handlers)]
