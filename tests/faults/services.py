"""Real ``workqueue`` worker and producer subprocesses against any Redis URL, for fault tests.

Every process gets its own log file and stderr file under the test's temp dir, runs in its own
session (so SIGKILL of the group takes its children too) and is killed when the test ends.
"""

from __future__ import annotations

import contextlib
import json
import os
import signal
import subprocess
import sys
import time
from collections import Counter
from dataclasses import dataclass
from pathlib import Path

import httpx
from redis_server import free_port

TEST_PLUGIN = "wq_testplugin_good"


@dataclass
class Proc:
    """One started service."""

    role: str
    popen: subprocess.Popen[bytes]
    log_file: Path
    stderr_file: Path
    url: str | None = None  # the producer's base URL, or the worker's metrics URL

    @property
    def pid(self) -> int:
        return self.popen.pid

    def alive(self) -> bool:
        return self.popen.poll() is None

    def signal(self, sig: int) -> None:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(self.popen.pid, sig)

    def kill(self) -> None:
        """SIGKILL the whole process group and reap it."""
        self.signal(signal.SIGKILL)
        with contextlib.suppress(subprocess.TimeoutExpired):
            self.popen.wait(timeout=10)

    def log(self) -> str:
        text = self.log_file.read_text() if self.log_file.exists() else ""
        err = self.stderr_file.read_text() if self.stderr_file.exists() else ""
        return text + err


class Services:
    """Starts worker and producer subprocesses; :meth:`stop_all` kills whatever is left."""

    def __init__(self, tmp_path: Path, prefix: str) -> None:
        self.tmp_path = tmp_path
        self.prefix = prefix
        self.procs: list[Proc] = []

    def _env(self, redis_url: str, log_file: Path, env: dict[str, str] | None) -> dict[str, str]:
        return {
            **os.environ,
            "WORKQUEUE_PLUGINS": TEST_PLUGIN,
            "WORKQUEUE_KEY_PREFIX": self.prefix,
            "WORKQUEUE_REDIS_URL": redis_url,
            "WORKQUEUE_LOG_FILE": str(log_file),
            **(env or {}),
        }

    def _spawn(self, role: str, argv: list[str], env: dict[str, str]) -> Proc:
        index = len(self.procs)
        log_file = self.tmp_path / f"{role}-{index}.log"
        stderr_file = self.tmp_path / f"{role}-{index}.stderr"
        env = {**env, "WORKQUEUE_LOG_FILE": env.get("WORKQUEUE_LOG_FILE", str(log_file))}
        with stderr_file.open("wb") as stderr:
            popen = subprocess.Popen(
                [sys.executable, "-m", "workqueue", *argv],
                env=env,
                cwd=self.tmp_path,
                stdout=subprocess.DEVNULL,
                stderr=stderr,
                start_new_session=True,
            )
        proc = Proc(role, popen, log_file, stderr_file)
        self.procs.append(proc)
        return proc

    def worker(
        self,
        redis_url: str,
        *args: str,
        lease: float = 2.0,
        metrics_port: int | None = None,
        env: dict[str, str] | None = None,
    ) -> Proc:
        """Start ``workqueue worker`` (lease in seconds; metrics on ``metrics_port`` if given)."""
        port = metrics_port if metrics_port is not None else 0
        full = self._env(redis_url, self.tmp_path / "unused.log", env)
        full["WORKQUEUE_LEASE_SECONDS"] = str(lease)
        full["WORKQUEUE_METRICS_PORT"] = str(port)
        full.pop("WORKQUEUE_LOG_FILE")
        proc = self._spawn("worker", ["worker", *args], full)
        if port:
            proc.url = f"http://127.0.0.1:{port}"
        return proc

    def producer(
        self,
        redis_url: str,
        *args: str,
        port: int | None = None,
        env: dict[str, str] | None = None,
        wait: str | None = "/health",
        timeout: float = 20.0,
    ) -> Proc:
        """Start ``workqueue producer`` on ``port`` (a free one by default) and wait for
        ``wait`` to answer 200 (``None``: do not wait)."""
        port = port or free_port()
        full = self._env(redis_url, self.tmp_path / "unused.log", env)
        full.pop("WORKQUEUE_LOG_FILE")
        proc = self._spawn("producer", ["producer", "--port", str(port), *args], full)
        proc.url = f"http://127.0.0.1:{port}"
        if wait is not None:
            wait_http(proc, wait, timeout=timeout)
        return proc

    def stop_all(self) -> None:
        for proc in self.procs:
            if proc.alive():
                proc.kill()


def wait_http(proc: Proc, path: str, *, status: int = 200, timeout: float = 20.0) -> None:
    """Poll ``proc.url + path`` until it answers ``status``; fail with the process's log."""
    assert proc.url is not None
    deadline = time.monotonic() + timeout
    while True:
        if not proc.alive():
            raise AssertionError(f"{proc.role} exited early:\n{proc.log()[-4000:]}")
        with contextlib.suppress(httpx.HTTPError):
            if httpx.get(proc.url + path, timeout=1).status_code == status:
                return
        if time.monotonic() > deadline:
            raise AssertionError(
                f"{proc.role} {path} never answered {status}:\n{proc.log()[-4000:]}"
            )
        time.sleep(0.1)


def read_ledger(path: Path) -> Counter[str]:
    """How many times each job id ran, from a ``test_record`` ledger file."""
    runs: Counter[str] = Counter()
    if path.exists():
        for line in path.read_text().splitlines():
            if line.strip():
                runs[json.loads(line)["job_id"]] += 1
    return runs
