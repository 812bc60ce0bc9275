"""Names the dashboard's browser tests share (import them from here, not from ``conftest``,
which is ambiguous across test directories): :class:`Stack`, a real producer with an API key
and workers as subprocesses, and :class:`PageLog`, what a page did."""

from __future__ import annotations

import contextlib
import os
import shutil
import signal
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
from redis_server import free_port
from wq_testkit import REDIS_URL, TEST_PLUGIN

API_KEY = "browser-test-key"
CHROMIUM = os.environ.get("WQ_CHROMIUM") or shutil.which("chromium") or ""


@dataclass
class Stack:
    """A producer (with an API key) and workers, all for one key prefix."""

    prefix: str
    tmp_path: Path
    url: str = ""
    procs: list[subprocess.Popen[bytes]] = field(default_factory=list)

    def _env(self, **extra: str) -> dict[str, str]:
        return {
            **os.environ,
            "WORKQUEUE_PLUGINS": TEST_PLUGIN,
            "WORKQUEUE_KEY_PREFIX": self.prefix,
            "WORKQUEUE_REDIS_URL": REDIS_URL,
            **extra,
        }

    def _spawn(self, name: str, argv: list[str], env: dict[str, str]) -> subprocess.Popen[bytes]:
        with (self.tmp_path / f"{name}.log").open("wb") as log:
            proc = subprocess.Popen(
                [sys.executable, "-m", "workqueue", *argv],
                env=env,
                cwd=self.tmp_path,
                stdout=log,
                stderr=subprocess.STDOUT,
                start_new_session=True,
            )
        self.procs.append(proc)
        return proc

    def start_producer(self) -> None:
        port = free_port()
        env = self._env(
            WORKQUEUE_API_KEY=API_KEY, WORKQUEUE_LOG_FILE=str(self.tmp_path / "producer.events")
        )
        proc = self._spawn("producer", ["producer", "--port", str(port)], env)
        self.url = f"http://127.0.0.1:{port}"
        deadline = time.monotonic() + 30
        while True:
            assert proc.poll() is None, (self.tmp_path / "producer.log").read_text()
            with contextlib.suppress(httpx.HTTPError):
                if httpx.get(self.url + "/health", timeout=1).status_code == 200:
                    return
            assert time.monotonic() < deadline, "the producer never answered /health"
            time.sleep(0.1)

    def start_worker(self, *queues: str) -> subprocess.Popen[bytes]:
        env = self._env(
            WORKQUEUE_LEASE_SECONDS="3",
            WORKQUEUE_METRICS_PORT="0",
            WORKQUEUE_LOG_FILE=str(self.tmp_path / f"worker-{len(self.procs)}.events"),
        )
        args = [arg for q in queues for arg in ("--queue", q)]
        return self._spawn(f"worker-{len(self.procs)}", ["worker", *args], env)

    def enqueue(self, job_type: str, payload: Any = None, queue: str = "dash") -> str:
        answer = httpx.post(
            self.url + "/enqueue",
            json={"type": job_type, "payload": payload, "queue": queue},
            headers={"Authorization": f"Bearer {API_KEY}"},
            timeout=5,
        )
        assert answer.status_code == 202, answer.text
        job_id: str = answer.json()["id"]
        return job_id

    def put_schedule(self, name: str, body: dict[str, Any]) -> None:
        answer = httpx.put(
            f"{self.url}/schedules/{name}",
            json=body,
            headers={"Authorization": f"Bearer {API_KEY}"},
            timeout=5,
        )
        assert answer.status_code in (200, 201), answer.text

    def job(self, job_id: str) -> dict[str, Any]:
        answer = httpx.get(
            f"{self.url}/jobs/{job_id}", headers={"Authorization": f"Bearer {API_KEY}"}, timeout=5
        )
        assert answer.status_code == 200, answer.text
        job: dict[str, Any] = answer.json()
        return job

    def wait_status(self, job_id: str, status: str, timeout: float = 30.0) -> dict[str, Any]:
        deadline = time.monotonic() + timeout
        while (job := self.job(job_id))["status"] != status:
            assert time.monotonic() < deadline, f"{job_id} is {job['status']}, never {status}"
            time.sleep(0.1)
        return job

    def stop(self) -> None:
        for proc in self.procs:
            if proc.poll() is None:
                with contextlib.suppress(ProcessLookupError):
                    os.killpg(proc.pid, signal.SIGKILL)
                proc.wait(timeout=10)


@dataclass
class PageLog:
    """What the page did: every request URL, console errors and uncaught page errors."""

    requests: list[str] = field(default_factory=list)
    errors: list[str] = field(default_factory=list)
