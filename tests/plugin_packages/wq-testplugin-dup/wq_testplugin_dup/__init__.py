"""A plugin that claims ``test_echo``, which wq-testplugin-good already registers."""

from __future__ import annotations

from typing import Any

from workqueue import JobContext, JobType, hookimpl


async def echo(payload: dict[str, Any], ctx: JobContext) -> dict[str, Any]:
    return payload


@hookimpl
def workqueue_job_types() -> list[JobType]:
    return [JobType(name="test_echo", handler=echo)]
