"""Helpers shared by the harness and the scripts it runs in subprocesses (stdlib + redis-py).

The peer scripts run inside the peers' virtualenv, the WorkQueue and floor scripts inside the
product's; both have redis-py, nothing else is assumed here.
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent

__all__ = [
    "HERE",
    "BenchRedis",
    "emit",
    "free_port",
    "stop_process",
    "wait_until",
]


def free_port() -> int:
    """A TCP port nobody listens on right now (127.0.0.1)."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


def wait_until(
    check: Callable[[], bool], timeout: float, interval: float = 0.005, what: str = "condition"
) -> float:
    """Poll ``check`` until it is true; return the time it first was (perf_counter)."""
    deadline = time.perf_counter() + timeout
    while True:
        if check():
            return time.perf_counter()
        if time.perf_counter() > deadline:
            raise TimeoutError(f"timed out after {timeout:.0f} s waiting for {what}")
        time.sleep(interval)


def emit(result: dict[str, Any]) -> None:
    """The last line of a measuring subprocess: its result as JSON on stdout."""
    sys.stdout.write("BENCH-RESULT " + json.dumps(result) + "\n")
    sys.stdout.flush()


def parse_result(stdout: str) -> dict[str, Any]:
    """The dict a subprocess handed to :func:`emit`."""
    for line in reversed(stdout.splitlines()):
        if line.startswith("BENCH-RESULT "):
            value: dict[str, Any] = json.loads(line[len("BENCH-RESULT ") :])
            return value
    raise RuntimeError("the subprocess printed no result:\n" + stdout[-2000:])


def stop_process(proc: subprocess.Popen[Any], grace: float = 5.0) -> None:
    """SIGTERM a process group the harness started, SIGKILL it if it lingers."""
    if proc.poll() is not None:
        return
    with contextlib.suppress(ProcessLookupError):
        os.killpg(proc.pid, signal.SIGTERM)
    try:
        proc.wait(grace)
    except subprocess.TimeoutExpired:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(proc.pid, signal.SIGKILL)
        proc.wait(10)


class BenchRedis:
    """The benchmark's own redis-server: free port, no RDB, no AOF, killed at the end."""

    def __init__(self) -> None:
        self.port = free_port()
        self.dir = Path(tempfile.mkdtemp(prefix="wq-bench-redis-"))
        self.proc: subprocess.Popen[bytes] | None = None
        self._client: Any = None

    @property
    def url(self) -> str:
        return f"redis://127.0.0.1:{self.port}/0"

    def start(self) -> BenchRedis:
        exe = shutil.which("redis-server")
        if exe is None:
            raise RuntimeError("redis-server is not on PATH (apt-get install redis-server)")
        args: Sequence[str] = [
            exe,
            "--port",
            str(self.port),
            "--bind",
            "127.0.0.1",
            "--save",
            "",
            "--appendonly",
            "no",
            "--dir",
            str(self.dir),
            "--maxclients",
            "10000",
            "--protected-mode",
            "yes",
        ]
        self.proc = subprocess.Popen(
            args, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True
        )
        wait_until(self._ping, 10, 0.05, "the bench redis-server")
        return self

    def client(self) -> Any:
        """The harness's one connection (a new one would send CLIENT SETINFO each time, which
        the idle-traffic figures would count)."""
        if self._client is None:
            import redis

            self._client = redis.Redis(port=self.port, socket_timeout=30)
        return self._client

    def _ping(self) -> bool:
        try:
            return bool(self.client().ping())
        except Exception:  # redis.ConnectionError before the server listens
            self._client = None
            return False

    def flushall(self) -> None:
        """Empty the private server (only ever this one) and reset its statistics."""
        r = self.client()
        r.flushall()
        r.config_resetstat()

    def info(self, section: str) -> dict[str, Any]:
        info: dict[str, Any] = self.client().info(section)
        return info

    def stop(self) -> None:
        if self.proc is not None:
            stop_process(self.proc, 3)
        shutil.rmtree(self.dir, ignore_errors=True)

    def __enter__(self) -> BenchRedis:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()
