"""A private ``redis-server`` on a free port, in a temp dir, stopped by pid (for fault tests)."""

from __future__ import annotations

import contextlib
import os
import signal
import socket
import subprocess
import time
from collections.abc import Sequence
from pathlib import Path

import redis


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


class RedisServer:
    """Start, SIGKILL, stop and restart a redis-server with an append-only file.

    ``appendfsync`` is ``"always"`` (every write is on disk before the reply), ``"everysec"``
    (up to about a second of writes can be lost on a crash) or ``"no"``; ``extra_args`` are
    passed on as they are (``--requirepass``, TLS options, ``--replicaof``...). A restart reuses
    the same port and directory, so the server reloads its append-only file.
    """

    def __init__(
        self,
        directory: Path,
        port: int | None = None,
        *,
        appendfsync: str = "always",
        appendonly: bool = True,
        extra_args: Sequence[str] = (),
        password: str | None = None,
    ) -> None:
        self.directory = directory
        self.port = port or free_port()
        self.appendfsync = appendfsync
        self.appendonly = appendonly
        self.extra_args = list(extra_args)
        self.password = password
        self.proc: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        auth = f":{self.password}@" if self.password else ""
        return f"redis://{auth}127.0.0.1:{self.port}/0"

    @property
    def pid(self) -> int | None:
        return self.proc.pid if self.proc else None

    def client(self, **kwargs: object) -> redis.Redis:
        """A synchronous client for assertions (admin rights when a password is set)."""
        return redis.Redis(port=self.port, password=self.password, **kwargs)  # type: ignore[arg-type]

    def command(self) -> list[str]:
        return [
            "redis-server",
            "--port", str(self.port),
            "--bind", "127.0.0.1",
            "--dir", str(self.directory),
            "--appendonly", "yes" if self.appendonly else "no",
            "--appendfsync", self.appendfsync,
            "--save", "",
            "--logfile", str(self.directory / f"redis-{self.port}.log"),
            *(["--requirepass", self.password] if self.password else []),
            *self.extra_args,
        ]  # fmt: skip

    def start(self, *, wait: bool = True) -> None:
        self.proc = subprocess.Popen(
            self.command(), stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL
        )
        if wait:
            self.wait_ready()

    def wait_ready(self, timeout: float = 10.0) -> None:
        deadline = time.monotonic() + timeout
        while True:
            try:
                with self.client(socket_timeout=0.5) as conn:
                    # PING answers while the AOF is still loading; wait until it is loaded.
                    if conn.info("persistence").get("loading", 0) == 0:
                        return
            except redis.RedisError:
                pass
            if time.monotonic() > deadline:
                raise TimeoutError(f"redis-server on port {self.port} did not become ready")
            time.sleep(0.05)

    def kill(self) -> None:
        """SIGKILL: no shutdown save, no final fsync (a crash)."""
        if self.proc and self.proc.poll() is None:
            os.kill(self.proc.pid, signal.SIGKILL)
            self.proc.wait(timeout=10)

    def stop(self) -> None:
        """SIGTERM, waiting for a clean exit (SIGKILL after 10 s)."""
        if self.proc and self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(timeout=10)
            except subprocess.TimeoutExpired:
                self.kill()

    def restart(self, *, after_kill: bool = True) -> None:
        """SIGKILL (or stop) then start again on the same port and directory."""
        if after_kill:
            self.kill()
        else:
            self.stop()
        self.start()

    def close(self) -> None:
        with contextlib.suppress(Exception):
            self.kill()
