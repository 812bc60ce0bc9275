"""The dashboard's JSON routes (SPEC 13) and the two routes it needs that the API lacked.

- ``GET /ui/api/session`` (public): whether an API key is needed and whether the one sent is
  right, so the page can ask for it without a failed request.
- ``GET /ui/api/overview``: every queue's depth per status, counters (for throughput), oldest
  waiting age and paused state, and the number of live workers; one request per refresh.
- ``GET /ui/api/workers``: the live workers and the jobs each one is running.
- ``GET /ui/api/jobs?status=&queue=&limit=``: jobs by status (the read model's ``list_jobs``).
- ``GET /ui/api/jobs/{id}/payload``: a job's payload, only when asked (``GET /jobs/{id}``
  never shows one).
- ``POST /jobs/{id}/retry`` (also under ``/api/``): send a failed job back to its queue
  (``workqueue jobs retry ID``); 404 unknown, 409 not failed.
- ``GET /limits`` (also under ``/api/``): every limited job type, as ``workqueue limits list``.

Every route here needs the API key when one is configured (the app's guard), and the POST is
refused to other origins' pages like every state-changing route (``app._request_guard``).
"""

from __future__ import annotations

import hmac
from typing import TYPE_CHECKING, Annotated, Any

import msgspec
from litestar import MediaType, Request, Response, get, post
from litestar.di import NamedDependency
from litestar.exceptions import ValidationException
from litestar.handlers import HTTPRouteHandler
from litestar.openapi.datastructures import ResponseSpec
from litestar.params import FromPath, FromQuery, Parameter

from workqueue.admin import retry_job_ids
from workqueue.broker.job_payload import read_payload
from workqueue.broker.limits import limit_rows
from workqueue.broker.reads import LISTABLE
from workqueue.client import Client
from workqueue.errors import JobNotFound
from workqueue.producer.routes import guarded
from workqueue.producer.schemas import ErrorAnswer, JobAnswer, operation_class
from workqueue.registry import Registry

if TYPE_CHECKING:
    from workqueue.producer.app import ProducerSettings

__all__ = ["build_read_routes"]

_MAX_JOB_ID = 200
_MAX_LIST = 200
#: the active jobs read to tell which worker runs what (the workers view)
_MAX_RUNNING = 500


def _answer(content: Any, status: int = 200) -> Response[Any]:
    return Response(msgspec.json.encode(content), status_code=status, media_type=MediaType.JSON)


def _deadline(request: Request[Any, Any, Any]) -> float:
    deadline: float = request.app.state.settings.redis_deadline_s
    return deadline


async def _overview(client: Client) -> dict[str, Any]:
    """Figures (2 round trips: depth per status, oldest waiting age, paused, counters) and the
    worker count (2)."""
    figures = await client.broker.figures()
    workers = await client.broker.workers()
    rows = []
    for q in figures.queues:
        depth = {
            "queued": q.queued,
            "scheduled": q.scheduled,
            "retrying": q.retrying,
            "active": q.running,
            "completed": q.completed_kept,
            "failed": q.failed_kept,
            "cancelled": q.cancelled_kept,
        }
        oldest: float | None = q.oldest_waiting_seconds if q.queued else None
        rows.append(
            {
                "name": q.queue,
                "depth": depth,
                "oldest_waiting_seconds": oldest,
                "paused": q.paused,
                "done": q.counters.get("done", 0),
                "failed": q.counters.get("failed", 0),
                "cancelled": q.counters.get("cancelled", 0),
                "enqueued": q.counters.get("enqueued", 0),
            }
        )
    return {
        "now_ms": figures.now_ms,
        "queues": rows,
        "workers": len(workers),
        "pause_supported": True,
    }


async def overview(request: Request[Any, Any, Any], client: NamedDependency[Client]) -> Any:
    return _answer(await guarded(_overview(client), _deadline(request)))


async def _workers(client: Client) -> dict[str, Any]:
    adverts = await client.broker.workers()
    running: dict[str, list[str]] = {}
    if adverts:
        for job in await client.broker.list_jobs("active", None, _MAX_RUNNING):
            if job.history and job.history[-1].outcome == "running":
                running.setdefault(job.history[-1].worker, []).append(job.id)
    now_ms = await client.broker.server_time_ms()
    return {
        "now_ms": now_ms,
        "workers": [
            {
                "id": a.id,
                "host": a.host,
                "pid": a.pid,
                "queues": a.queues,
                "types": a.types,
                "concurrency": a.concurrency,
                "started_at": a.started_at,
                "last_heartbeat_ms": a.last_seen_ms,
                "running": running.get(a.id, []),
            }
            for a in adverts
        ],
    }


async def workers(request: Request[Any, Any, Any], client: NamedDependency[Client]) -> Any:
    return _answer(await guarded(_workers(client), _deadline(request)))


async def list_jobs(
    request: Request[Any, Any, Any],
    client: NamedDependency[Client],
    status: FromQuery[str] = "failed",
    queue: FromQuery[str | None] = None,
    limit: Annotated[FromQuery[int], Parameter(ge=1, le=_MAX_LIST)] = 50,
) -> Any:
    if status not in LISTABLE:
        raise ValidationException(f"status must be one of {', '.join(LISTABLE)}")
    jobs = await guarded(client.broker.list_jobs(status, queue or None, limit), _deadline(request))
    return _answer([job.to_dict() for job in jobs])


async def job_payload(
    request: Request[Any, Any, Any],
    job_id: Annotated[FromPath[str], Parameter(min_length=1, max_length=_MAX_JOB_ID)],
    client: NamedDependency[Client],
) -> Any:
    raw = await guarded(read_payload(client.broker, job_id), _deadline(request))
    body = b'{"id":' + msgspec.json.encode(job_id) + b',"payload":' + raw + b"}"
    return Response(body, media_type=MediaType.JSON, headers={"Cache-Control": "no-store"})


async def retry_job(
    request: Request[Any, Any, Any],
    job_id: Annotated[FromPath[str], Parameter(min_length=1, max_length=_MAX_JOB_ID)],
    client: NamedDependency[Client],
) -> Response[JobAnswer]:
    deadline = _deadline(request)
    job = await guarded(client.get_job(job_id), deadline)  # JobNotFound: 404
    if job.status != "failed":
        problem = f"job {job_id!r} is {job.status}, not failed: nothing to retry"
        body = ErrorAnswer(error="job_not_failed", field="id", problem=problem)
        return Response(body, status_code=409, media_type=MediaType.JSON)  # type: ignore[arg-type]
    done = await guarded(retry_job_ids(client.broker, [job_id], job.queue), deadline)
    if not done:  # it changed meanwhile (retried by someone else, purged)
        raise JobNotFound(job_id)
    job = await guarded(client.get_job(job_id), deadline)
    return Response(msgspec.convert(job.to_dict(), JobAnswer), media_type=MediaType.JSON)


async def _limits(client: Client, registry: Registry) -> list[dict[str, Any]]:
    declared = {}
    for name in registry.names():
        job_type = registry.get(name)
        if job_type is not None:
            declared[name] = job_type.limits()
    return await limit_rows(client.broker, declared)


def build_read_routes(settings: ProducerSettings, registry: Registry) -> list[HTTPRouteHandler]:
    """The dashboard's routes of one app (the API key, when set, applies as to the others)."""
    auth = (
        {401: ResponseSpec(ErrorAnswer, description="Missing or wrong API key")}
        if settings.api_key
        else {}
    )
    security: list[dict[str, list[str]]] | None = [{"bearer": []}] if settings.api_key else None
    hidden = {"include_in_schema": False, "security": security}

    expected = f"Bearer {settings.api_key}".encode() if settings.api_key else b""

    async def session(request: Request[Any, Any, Any]) -> Any:
        # public: says whether a key is needed and whether the one sent is right, nothing more
        given = request.headers.get("authorization", "").encode("utf-8", "surrogateescape")
        ok = not expected or hmac.compare_digest(given, expected)
        return _answer({"key_required": bool(expected), "key_ok": ok})

    async def limits(request: Request[Any, Any, Any], client: NamedDependency[Client]) -> Any:
        return _answer(await guarded(_limits(client, registry), _deadline(request)))

    return [
        get("/ui/api/session", include_in_schema=False, opt={"public": True})(session),
        get("/ui/api/overview", **hidden)(overview),  # type: ignore[arg-type]
        get("/ui/api/workers", **hidden)(workers),  # type: ignore[arg-type]
        get("/ui/api/jobs", **hidden)(list_jobs),  # type: ignore[arg-type]
        get("/ui/api/jobs/{job_id:str}/payload", **hidden)(job_payload),  # type: ignore[arg-type]
        post(
            ["/jobs/{job_id:str}/retry", "/api/jobs/{job_id:str}/retry"],
            status_code=200,
            summary="Retry a failed job",
            description=(
                "Send a failed job back to its queue (as `workqueue jobs retry ID`): 200 with "
                "the job, now `queued`. An unknown id answers 404, a job that is not `failed` "
                "409. No body is needed."
            ),
            operation_class=operation_class(None),
            responses={
                404: ResponseSpec(ErrorAnswer, description="Unknown job"),
                409: ResponseSpec(ErrorAnswer, description="The job is not failed"),
                **auth,
                503: ResponseSpec(ErrorAnswer, description="Redis unreachable; retry later"),
            },
            security=security,
        )(retry_job),
        get(
            ["/limits", "/api/limits"],
            summary="The job types' limits",
            description=(
                "Every job type with a limit, as `workqueue limits list --json`: `declared` "
                "(by the plugins installed in this producer), `runtime` (set with `workqueue "
                "limits set`), `effective`, and for its jobs without a `limit_key` the "
                "concurrency slots `held` and the jobs `waiting`."
            ),
            responses={**auth},
            security=security,
        )(limits),
    ]
