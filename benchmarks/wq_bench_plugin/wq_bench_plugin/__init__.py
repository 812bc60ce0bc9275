"""Job types of the benchmark (benchmarks/workqueue_bench.py): ``bench_noop`` does nothing;
``bench_pickup`` appends how long the job waited (handler start minus ``payload["t"]``, the
producer's ``time.time()`` at enqueue, same machine clock) to the file ``payload["out"]``."""

from __future__ import annotations

import os
import time
from typing import Any

from workqueue import JobContext, JobType, hookimpl


async def noop(payload: dict[str, Any], ctx: JobContext) -> None:
    """Nothing: the drain figures measure the queue, not the job."""


async def pickup(payload: dict[str, Any], ctx: JobContext) -> None:
    """Record the enqueue-to-start latency in seconds as one line."""
    waited = time.time() - float(payload["t"])
    fd = os.open(payload["out"], os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
    try:
        os.write(fd, f"{waited:.6f}\n".encode())
    finally:
        os.close(fd)


@hookimpl
def workqueue_job_types() -> list[JobType]:
    return [
        JobType(name="bench_noop", handler=noop, description="do nothing"),
        JobType(
            name="bench_pickup",
            handler=pickup,
            description="append time.time() - payload.t to payload.out",
        ),
    ]
