"""An example WorkQueue plugin: the ``greet`` job type.

Enqueue ``{"type": "greet", "payload": {"name": "Ada"}}`` and the job's result is
``"hello Ada"``.
"""

from __future__ import annotations

import msgspec

from workqueue import JobContext, JobType, hookimpl

__all__ = ["GreetPayload", "greet", "workqueue_job_types"]


class GreetPayload(msgspec.Struct, forbid_unknown_fields=True):
    """The payload: who to greet. Checked by the producer before the job is queued."""

    name: str

    def __post_init__(self) -> None:
        # A ValueError here becomes a 422 answer at enqueue, naming the problem.
        if not self.name.strip():
            raise ValueError("name: must not be empty")
        if len(self.name) > 100:
            raise ValueError("name: at most 100 characters")


async def greet(payload: GreetPayload, ctx: JobContext) -> str:
    """The handler: gets the validated payload; its return value is the job's result."""
    ctx.logger.info("greeting someone")  # never log payload values
    return f"hello {payload.name}"


@hookimpl
def workqueue_job_types() -> list[JobType]:
    """Tell WorkQueue which job types this plugin provides."""
    return [JobType(name="greet", handler=greet, payload_schema=GreetPayload, retries=0)]
