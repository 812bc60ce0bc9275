"""``workqueue up``: the embedded default, everything on one machine for a first run.

Starts, as child processes: a Redis (only when nothing answers at the Redis URL and
``redis-server`` is on PATH; append-only file under ``./.workqueue/``), the producer on port
8000 and one worker with metrics on port 8001. Ctrl-C (or SIGTERM) stops the producer and the
worker gracefully, then Redis, and leaves no process behind.
"""

from __future__ import annotations

import ctypes
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path
from types import FrameType
from urllib.parse import urlparse

import click
import redis

from workqueue.cli.options import redis_url_option
from workqueue.log import redact_url

__all__ = ["up_command"]

STOP_TIMEOUT_SECONDS = 40.0


def _die_with_parent() -> None:
    """Linux: the child gets SIGTERM if ``workqueue up`` itself dies (no orphans)."""
    try:
        libc = ctypes.CDLL("libc.so.6", use_errno=True)
        libc.prctl(1, signal.SIGTERM)  # PR_SET_PDEATHSIG
    except OSError:
        pass


def _redis_answers(url: str) -> bool:
    try:
        client = redis.Redis.from_url(url, socket_connect_timeout=1, socket_timeout=1)
        try:
            return bool(client.ping())
        finally:
            client.close()
    except redis.RedisError:
        return False


def _start(command: list[str]) -> subprocess.Popen[bytes]:
    preexec = _die_with_parent if sys.platform.startswith("linux") else None
    return subprocess.Popen(command, preexec_fn=preexec)


def _ensure_redis(redis_url: str, data_dir: str) -> subprocess.Popen[bytes] | None:
    """Use the Redis at the URL, or start an embedded one; exits with 1 when neither works."""
    if _redis_answers(redis_url):
        click.echo(f"redis     {redact_url(redis_url)}")
        return None
    parsed = urlparse(redis_url)
    server = shutil.which("redis-server")
    if server is None or parsed.hostname not in ("127.0.0.1", "localhost", "::1"):
        click.echo(
            f"error: nothing answers at {redact_url(redis_url)} and no local redis-server "
            "can be started (install redis-server or set WORKQUEUE_REDIS_URL)",
            err=True,
        )
        sys.exit(1)
    directory = Path(data_dir).resolve()
    directory.mkdir(parents=True, exist_ok=True)
    args = [server, "--port", str(parsed.port or 6379), "--bind", "127.0.0.1"]
    args += ["--dir", str(directory), "--appendonly", "yes", "--appendfsync", "everysec"]
    args += ["--save", "", "--logfile", str(directory / "redis.log")]
    if parsed.password:
        args += ["--requirepass", parsed.password]
    child = _start(args)
    deadline = time.monotonic() + 10
    while not _redis_answers(redis_url):
        if child.poll() is not None or time.monotonic() > deadline:
            click.echo(f"error: redis-server did not start (see {directory}/redis.log)", err=True)
            child.kill()
            sys.exit(1)
        time.sleep(0.05)
    click.echo(f"redis     {redact_url(redis_url)} (embedded, data in {directory})")
    return child


@click.command("up")
@redis_url_option
@click.option("--host", envvar="WORKQUEUE_HOST", default="127.0.0.1", show_default=True)
@click.option("--port", envvar="WORKQUEUE_PORT", type=int, default=8000, show_default=True)
@click.option(
    "--metrics-port", envvar="WORKQUEUE_METRICS_PORT", type=int, default=8001, show_default=True
)
@click.option(
    "--data-dir",
    envvar="WORKQUEUE_DATA_DIR",
    default=".workqueue",
    show_default=True,
    help="Where an embedded Redis keeps its append-only file.",
)
def up_command(redis_url: str, host: str, port: int, metrics_port: int, data_dir: str) -> None:
    """Run Redis (if needed), the producer and one worker, until Ctrl-C."""
    children: list[tuple[str, subprocess.Popen[bytes]]] = []
    redis_child = _ensure_redis(redis_url, data_dir)
    base = [sys.executable, "-m", "workqueue"]
    url = ["--redis-url", redis_url]
    children.append(
        ("producer", _start([*base, "producer", "--host", host, "--port", str(port), *url]))
    )
    children.append(
        ("worker", _start([*base, "worker", "--metrics-port", str(metrics_port), *url]))
    )
    click.echo(f"producer  http://{host}:{port}/enqueue  (OpenAPI: http://{host}:{port}/schema)")
    click.echo(f"metrics   http://127.0.0.1:{metrics_port}/metrics")
    click.echo("Ctrl-C stops everything.")

    stopping = False

    def on_signal(_signum: int, _frame: FrameType | None) -> None:
        nonlocal stopping
        stopping = True

    signal.signal(signal.SIGINT, on_signal)
    signal.signal(signal.SIGTERM, on_signal)
    code = 0
    while not stopping:
        for name, child in children:
            if child.poll() is not None:
                click.echo(f"error: the {name} exited with {child.returncode}; stopping", err=True)
                stopping, code = True, 1
        time.sleep(0.2)
    for _name, child in children:
        if child.poll() is None:
            child.send_signal(signal.SIGTERM)
    deadline = time.monotonic() + STOP_TIMEOUT_SECONDS
    for _name, child in children:
        try:
            child.wait(timeout=max(0.1, deadline - time.monotonic()))
        except subprocess.TimeoutExpired:
            child.kill()
            child.wait()
    if redis_child is not None:
        redis_child.send_signal(signal.SIGTERM)  # redis flushes its append-only file and exits
        try:
            redis_child.wait(timeout=10)
        except subprocess.TimeoutExpired:
            redis_child.kill()
            redis_child.wait()
    click.echo("stopped")
    sys.exit(code)
