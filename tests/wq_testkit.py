"""Names shared by test modules: import them from here, not from ``conftest``.

(Every conftest.py is a module named ``conftest``; with tests/faults/conftest.py loaded too,
``from conftest import ...`` in tests/integration would find the wrong one.)
"""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import sys
from pathlib import Path

__all__ = ["REDIS_URL", "TEST_PLUGIN", "WorkerProcs"]

#: the Redis the suite uses (a restricted ACL user's URL under ``nox -s acl``)
REDIS_URL = os.environ.get("WORKQUEUE_TEST_REDIS_URL", "redis://127.0.0.1:6379/0")
TEST_PLUGIN = "wq_testplugin_good"


class WorkerProcs:
    """Starts ``workqueue worker`` subprocesses for one test and stops them all afterwards."""

    def __init__(self, prefix: str, tmp_path: Path, url: str = REDIS_URL) -> None:
        self.prefix = prefix
        self.tmp_path = tmp_path
        #: the Redis URL the workers are given (another stack's: a cluster node, Sentinels)
        self.url = url
        self.procs: list[subprocess.Popen[bytes]] = []

    def log_file(self, index: int) -> Path:
        return self.tmp_path / f"worker-{index}.log"

    def start(
        self, *args: str, lease: float = 2.0, env: dict[str, str] | None = None
    ) -> subprocess.Popen[bytes]:
        index = len(self.procs)
        full_env = {
            **os.environ,
            "WORKQUEUE_PLUGINS": TEST_PLUGIN,
            "WORKQUEUE_KEY_PREFIX": self.prefix,
            "WORKQUEUE_REDIS_URL": self.url,
            "WORKQUEUE_LEASE_SECONDS": str(lease),
            "WORKQUEUE_LOG_FILE": str(self.log_file(index)),
            "WORKQUEUE_METRICS_PORT": "0",
            **(env or {}),
        }
        with (self.tmp_path / f"worker-{index}.stderr").open("wb") as stderr:
            proc = subprocess.Popen(
                [sys.executable, "-m", "workqueue", "worker", *args],
                env=full_env,
                cwd=self.tmp_path,
                stdout=subprocess.DEVNULL,
                stderr=stderr,
                start_new_session=True,
            )
        self.procs.append(proc)
        return proc

    def stop_all(self) -> None:
        for proc in self.procs:
            if proc.poll() is None:
                with contextlib.suppress(ProcessLookupError):
                    os.killpg(proc.pid, signal.SIGKILL)
                proc.wait(timeout=10)
