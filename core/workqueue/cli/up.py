"""``workqueue up``: the embedded default, everything on one machine for a first run.

Starts, as child processes: a Redis (only when nothing answers at the Redis URL and
``redis-server`` is on PATH; append-only file under ``./.workqueue/``), the producer on port
8000 and one worker with metrics on port 8001. Ctrl-C (or SIGTERM) stops the producer and the
worker gracefully, then Redis, and leaves no process behind.

Every child runs in a session of its own, so the terminal's Ctrl-C (a SIGINT to the whole
foreground process group) reaches ``up`` alone, and ``up`` decides the order: the producer and
the worker first (the worker finishes or hands back its running jobs and reports them to
Redis), Redis last. A second Ctrl-C stops the producer and the worker at once (their running
jobs run again once their leases expire); Redis is still stopped cleanly.
"""

from __future__ import annotations

import ctypes
import os
import shutil
import signal
import socket
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

#: time for the producer and the worker to stop beyond the worker's grace period
STOP_MARGIN_SECONDS = 10.0
DEFAULT_GRACE_SECONDS = 30.0


def _die_with_parent() -> None:
    """Linux: the child gets SIGTERM if ``workqueue up`` itself dies (no orphans)."""
    try:
        libc = ctypes.CDLL("libc.so.6", use_errno=True)
        libc.prctl(1, signal.SIGTERM)  # PR_SET_PDEATHSIG
    except OSError:
        pass


def _redis_answers(url: str) -> bool:
    if "+sentinel" in url.partition("://")[0].lower():
        from workqueue.broker.sentinel import primary_answers

        return primary_answers(url)
    try:
        client = redis.Redis.from_url(url, socket_connect_timeout=1, socket_timeout=1)
        try:
            return bool(client.ping())
        finally:
            client.close()
    except redis.RedisError:
        return False


def _start(command: list[str]) -> subprocess.Popen[bytes]:
    """A child in a session of its own: a Ctrl-C in the terminal does not reach it, ``up``
    stops it (and on Linux it gets SIGTERM if ``up`` dies)."""
    preexec = _die_with_parent if sys.platform.startswith("linux") else None
    return subprocess.Popen(command, preexec_fn=preexec, start_new_session=True)


def _port_in_use(host: str, port: int) -> bool:
    """Whether ``host:port`` cannot be bound now (something listens there already)."""
    try:
        infos = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM, flags=socket.AI_PASSIVE)
    except socket.gaierror:
        return False  # an unresolvable host: the child reports it in its own words
    family, kind, proto, _name, address = infos[0]
    with socket.socket(family, kind, proto) as probe:
        probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)  # as the servers bind
        try:
            probe.bind(address)
        except OSError:
            return True
    return False


def _check_ports(ports: list[tuple[str, str, int]]) -> None:
    """Exit with 1 and a message naming the port when one of ``(what, host, port)`` is taken."""
    for what, host, port in ports:
        if port and _port_in_use(host, port):
            click.echo(
                f"error: port {port} on {host} ({what}) is already in use; stop what listens "
                f"there or choose another port",
                err=True,
            )
            sys.exit(1)


def _grace_seconds() -> float:
    """The worker's grace period (it reads WORKQUEUE_GRACE_SECONDS itself)."""
    try:
        return max(0.0, float(os.environ.get("WORKQUEUE_GRACE_SECONDS", DEFAULT_GRACE_SECONDS)))
    except ValueError:
        return DEFAULT_GRACE_SECONDS


def _ensure_redis(redis_url: str, data_dir: str) -> subprocess.Popen[bytes] | None:
    """Use the Redis at the URL, or start an embedded one; exits with 1 when neither works."""
    if _redis_answers(redis_url):
        click.echo(f"redis     {redact_url(redis_url)}")
        return None
    parsed = urlparse(redis_url)
    server = shutil.which("redis-server")
    local = parsed.hostname in ("127.0.0.1", "localhost", "::1") and "+" not in parsed.scheme
    if server is None or not local:
        click.echo(
            f"error: nothing answers at {redact_url(redis_url)} and no local redis-server "
            "can be started (install redis-server or set WORKQUEUE_REDIS_URL)",
            err=True,
        )
        sys.exit(1)
    _check_ports([("embedded Redis", "127.0.0.1", parsed.port or 6379)])
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


def _stop(
    children: list[tuple[str, subprocess.Popen[bytes]]], timeout: float, hurry: list[bool]
) -> None:
    """SIGTERM each child, then wait for all of them until ``timeout`` (SIGKILL after it, or
    at once when ``hurry[0]`` becomes true: a second Ctrl-C)."""
    for _name, child in children:
        if child.poll() is None:
            child.send_signal(signal.SIGTERM)
    deadline = time.monotonic() + timeout
    while any(child.poll() is None for _name, child in children):
        if hurry[0] or time.monotonic() > deadline:
            for _name, child in children:
                if child.poll() is None:
                    child.kill()
            for _name, child in children:
                child.wait()
            return
        time.sleep(0.05)


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
    metrics_host = os.environ.get("WORKQUEUE_METRICS_HOST", "127.0.0.1")
    _check_ports([("producer", host, port), ("worker metrics", metrics_host, metrics_port)])

    stopping = False
    hurry = [False]

    def on_signal(_signum: int, _frame: FrameType | None) -> None:
        nonlocal stopping
        if stopping:
            hurry[0] = True
        stopping = True

    # Before any child exists: a Ctrl-C while Redis starts still stops what has started.
    signal.signal(signal.SIGINT, on_signal)
    signal.signal(signal.SIGTERM, on_signal)
    children: list[tuple[str, subprocess.Popen[bytes]]] = []
    redis_child = _ensure_redis(redis_url, data_dir)
    base = [sys.executable, "-m", "workqueue"]
    url = ["--redis-url", redis_url]
    code = 0
    if not stopping:
        children.append(
            ("producer", _start([*base, "producer", "--host", host, "--port", str(port), *url]))
        )
        children.append(
            ("worker", _start([*base, "worker", "--metrics-port", str(metrics_port), *url]))
        )
        click.echo(
            f"producer  http://{host}:{port}/enqueue  (OpenAPI: http://{host}:{port}/schema)"
        )
        click.echo(f"metrics   http://{metrics_host}:{metrics_port}/metrics")
        click.echo("Ctrl-C stops everything.")
    while not stopping:
        for name, child in children:
            if child.poll() is not None:
                click.echo(f"error: the {name} exited with {child.returncode}; stopping", err=True)
                stopping, code = True, 1
        time.sleep(0.2)
    grace = _grace_seconds()
    if children:
        click.echo(
            f"stopping: the producer and the worker (running jobs get up to {grace:g} s; "
            "Ctrl-C again to stop at once)"
        )
    _stop(children, grace + STOP_MARGIN_SECONDS, hurry)
    if redis_child is not None:
        # last: the worker has reported its jobs; redis flushes its append-only file and exits
        _stop([("redis", redis_child)], 10.0, [False])
    click.echo("stopped")
    sys.exit(code)
