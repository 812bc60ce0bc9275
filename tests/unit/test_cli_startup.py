"""The CLI loads only the command that runs: ``workqueue worker --processes K`` starts its
workers without importing the Redis client, the producer or the admin commands into the
supervisor (their import took about 0.1 s of every start, and of the 2-process drain)."""

from __future__ import annotations

import subprocess
import sys

PROBE = """
import sys
import workqueue, workqueue.cli, workqueue.cli.worker
from workqueue.worker import supervisor
heavy = sorted(m for m in ("redis", "litestar", "uvicorn", "rich", "workqueue.client",
                           "workqueue.cli.admin", "workqueue.cli.producer") if m in sys.modules)
print(",".join(heavy))
"""


def test_the_worker_command_and_supervisor_import_no_redis_client_nor_producer() -> None:
    out = subprocess.run(
        [sys.executable, "-c", PROBE], capture_output=True, text=True, check=True, timeout=60
    )
    assert out.stdout.strip() == "", f"imported at start: {out.stdout.strip()}"


def test_public_names_still_import_from_the_package() -> None:
    import workqueue

    assert workqueue.JobType.__name__ == "JobType"
    assert workqueue.Client.__module__ == "workqueue.client"
    assert set(workqueue.__all__) <= set(dir(workqueue))
