"""The producer's job-control routes (SPEC 11): ``POST /jobs/{id}/cancel``.

Registered next to :func:`workqueue.producer.routes.build_routes`; errors are raised and mapped
to answers in one place (``app.py``), except the 409 for a finished job, answered here.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Annotated, Any

import msgspec
from litestar import MediaType, Request, Response, post
from litestar.di import NamedDependency
from litestar.handlers import HTTPRouteHandler
from litestar.openapi.datastructures import ResponseSpec
from litestar.params import FromPath, Parameter

from workqueue.broker.contract import CancelOutcome
from workqueue.client import Client
from workqueue.errors import JobNotFound
from workqueue.producer.routes import guarded
from workqueue.producer.schemas import ErrorAnswer, JobAnswer, operation_class

if TYPE_CHECKING:
    from workqueue.producer.app import ProducerSettings

__all__ = ["build_job_routes"]

_MAX_JOB_ID = 200


async def cancel_job(
    request: Request[Any, Any, Any],
    job_id: Annotated[FromPath[str], Parameter(min_length=1, max_length=_MAX_JOB_ID)],
    client: NamedDependency[Client],
) -> Response[JobAnswer]:
    if not job_id or len(job_id) > _MAX_JOB_ID:
        raise JobNotFound(job_id[:_MAX_JOB_ID])
    done = await guarded(client.cancel(job_id), request.app.state.settings.redis_deadline_s)
    if done.outcome == CancelOutcome.FINISHED:
        problem = f"job {job_id!r} has finished ({done.job.status}): nothing to cancel"
        body = ErrorAnswer(error="job_finished", field="id", problem=problem)
        return Response(body, status_code=409, media_type=MediaType.JSON)  # type: ignore[arg-type]
    answer = msgspec.convert(done.job.to_dict(), JobAnswer)
    status = 200 if done.outcome == CancelOutcome.CANCELLED else 202
    return Response(answer, status_code=status, media_type=MediaType.JSON)


def build_job_routes(settings: ProducerSettings) -> list[HTTPRouteHandler]:
    """The job-control routes of one app (the API key, when set, applies as to the others)."""
    auth = (
        {401: ResponseSpec(ErrorAnswer, description="Missing or wrong API key")}
        if settings.api_key
        else {}
    )
    security: list[dict[str, list[str]]] | None = [{"bearer": []}] if settings.api_key else None
    return [
        post(
            ["/jobs/{job_id:str}/cancel", "/api/jobs/{job_id:str}/cancel"],
            status_code=200,
            summary="Cancel a job",
            description=(
                "A queued, scheduled or retrying job is cancelled at once: 200 with the job "
                "(status `cancelled`). A running job is asked to stop: 202 with the job (still "
                "`active`); its handler is cancelled (`async def`) or sees `ctx.cancelled` "
                "(plain `def`), and the job ends `cancelled` within a third of its lease. "
                "Cancelled is final: never retried, counted in `jobs_cancelled`. A repeat is "
                "harmless (202 again while it stops, then 409)."
            ),
            operation_class=operation_class(None),
            responses={
                202: ResponseSpec(JobAnswer, description="Running: asked to stop"),
                404: ResponseSpec(ErrorAnswer, description="Unknown job"),
                409: ResponseSpec(ErrorAnswer, description="The job has finished already"),
                **auth,
                503: ResponseSpec(ErrorAnswer, description="Redis unreachable; retry later"),
            },
            security=security,
        )(cancel_job),
    ]
