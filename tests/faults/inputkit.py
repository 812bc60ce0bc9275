"""Helpers of the bad-input fault tests: raw HTTP over sockets, an import/unpickle audit of a
service subprocess, and Redis write counting.

Raw sockets are used where an HTTP client would refuse to send the request (a lying
``Content-Length``, a body that never ends, headers a byte at a time).
"""

from __future__ import annotations

import contextlib
import json
import os
import socket
import subprocess
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import httpx
import redis

# --------------------------------------------------------------------------------------------
# Raw HTTP
# --------------------------------------------------------------------------------------------


@dataclass
class RawAnswer:
    """What came back on one raw connection."""

    raw: bytes
    #: the server closed the connection (EOF or reset) before our read timeout
    closed: bool
    elapsed_s: float
    #: bytes of the request that were sent before the server stopped reading
    sent: int = 0
    statuses: list[int] = field(default_factory=list)

    @property
    def status(self) -> int | None:
        return self.statuses[0] if self.statuses else None

    def body(self) -> bytes:
        """The body of the first answer (up to the next status line)."""
        head, _, rest = self.raw.partition(b"\r\n\r\n")
        length = None
        for line in head.split(b"\r\n")[1:]:
            name, _, value = line.partition(b":")
            if name.strip().lower() == b"content-length":
                length = int(value.strip())
        return rest[:length] if length is not None else rest

    def json(self) -> object:
        return json.loads(self.body())

    def header(self, name: str) -> str | None:
        head = self.raw.partition(b"\r\n\r\n")[0].decode("latin-1")
        for line in head.split("\r\n")[1:]:
            key, _, value = line.partition(":")
            if key.strip().lower() == name.lower():
                return value.strip()
        return None


def _statuses(raw: bytes) -> list[int]:
    found = []
    for line in raw.split(b"\r\n"):
        if line.startswith(b"HTTP/1.1 ") and len(line) >= 12 and line[9:12].isdigit():
            found.append(int(line[9:12]))
    return found


def raw_exchange(
    port: int,
    parts: list[bytes],
    *,
    timeout: float = 30.0,
    pause_s: float = 0.0,
) -> RawAnswer:
    """Send ``parts`` on one connection (``pause_s`` apart), then read until the server closes
    the connection or ``timeout`` seconds pass in all. A server that stops reading and closes
    early is fine: what was sent so far is counted in ``sent``."""
    started = time.monotonic()
    deadline = started + timeout
    sent = 0
    raw = b""
    closed = False
    with socket.create_connection(("127.0.0.1", port), timeout=timeout) as sock:
        try:
            for index, part in enumerate(parts):
                if index and pause_s:
                    time.sleep(pause_s)
                sock.sendall(part)
                sent += len(part)
                if time.monotonic() > deadline:
                    break
        except (BrokenPipeError, ConnectionResetError):
            closed = True
        while time.monotonic() < deadline:
            sock.settimeout(max(0.05, deadline - time.monotonic()))
            try:
                chunk = sock.recv(65536)
            except TimeoutError:
                break
            except ConnectionResetError:
                closed = True
                break
            if not chunk:
                closed = True
                break
            raw += chunk
    return RawAnswer(raw, closed, time.monotonic() - started, sent, _statuses(raw))


def request_head(
    path: str = "/enqueue",
    *,
    length: int | None = None,
    chunked: bool = False,
    close: bool = False,
    extra: str = "",
) -> bytes:
    """A ``POST`` request head with the framing headers given."""
    lines = [f"POST {path} HTTP/1.1", "Host: 127.0.0.1", "Content-Type: application/json"]
    if length is not None:
        lines.append(f"Content-Length: {length}")
    if chunked:
        lines.append("Transfer-Encoding: chunked")
    if close:
        lines.append("Connection: close")
    if extra:
        lines.append(extra)
    return ("\r\n".join(lines) + "\r\n\r\n").encode()


def post_raw(port: int, body: bytes, *, timeout: float = 30.0) -> RawAnswer:
    """One well-framed ``POST /enqueue`` with ``body`` (which may be anything)."""
    return raw_exchange(port, [request_head(length=len(body), close=True) + body], timeout=timeout)


def chunk(data: bytes) -> bytes:
    return b"%x\r\n%s\r\n" % (len(data), data)


LAST_CHUNK = b"0\r\n\r\n"

# --------------------------------------------------------------------------------------------
# The service still works
# --------------------------------------------------------------------------------------------


def assert_still_serving(url: str, prefix: str, client: redis.Redis) -> str:
    """``/health`` answers 200 and a good enqueue is 202 and in Redis; returns its id."""
    with httpx.Client(base_url=url, timeout=15) as http:
        health = http.get("/health")
        assert health.status_code == 200, health.text
        answer = http.post("/enqueue", json={"type": "test_echo", "payload": {"ok": 1}})
        assert answer.status_code == 202, answer.text
        job_id: str = answer.json()["id"]
    assert client.exists(f"{prefix}:{{default}}:job:{job_id}") == 1
    return job_id


def redis_writes(client: redis.Redis) -> int:
    """Writes the server applied since it started (``rdb_changes_since_last_save``; the
    private servers never save, so it only grows)."""
    return int(client.info("persistence")["rdb_changes_since_last_save"])


# --------------------------------------------------------------------------------------------
# Audit of imports and unpickling in a subprocess
# --------------------------------------------------------------------------------------------

#: imported by sitecustomize right after it is installed, to prove the recording works
AUDIT_SELFTEST_MODULE = "wq_audit_selftest_absent"

_SITECUSTOMIZE = (
    '''
"""Test instrumentation (written by tests/faults/inputkit.py): record every import attempt
and every unpickling lookup of this process to the file named by WQ_AUDIT_FILE."""
import builtins
import importlib
import os
import sys

_path = os.environ.get("WQ_AUDIT_FILE")
if _path:
    _out = open(_path, "a", buffering=1, encoding="utf-8")

    def _write(kind, name):
        try:
            _out.write(f"{os.getpid()} {kind} {name}\\n")
        except Exception:
            pass

    def _hook(event, args):
        if event == "import":
            _write("import", args[0])
        elif event == "pickle.find_class":
            _write("pickle", f"{args[0]}.{args[1]}")
        elif event == "marshal.loads":
            _write("marshal", len(args[0]) if args and hasattr(args[0], "__len__") else "?")

    sys.addaudithook(_hook)

    # importlib.import_module does not raise the "import" audit event, and a dotted name
    # under a module that is not a package ("os.system") never reaches a finder: record the
    # names asked of both entry points, and of every finder.
    _real_import = builtins.__import__
    _real_import_module = importlib.import_module

    def _import(name, globals=None, locals=None, fromlist=(), level=0):
        if level == 0:
            _write("__import__", name)
        return _real_import(name, globals, locals, fromlist, level)

    def _import_module(name, package=None):
        _write("import_module", name)
        return _real_import_module(name, package)

    class _Recorder:
        @staticmethod
        def find_spec(name, path=None, target=None):
            _write("find_spec", name)
            return None

    builtins.__import__ = _import
    importlib.import_module = _import_module
    sys.meta_path.insert(0, _Recorder)
    try:
        importlib.import_module("'''
    + AUDIT_SELFTEST_MODULE
    + """")
    except ImportError:
        pass
"""
)


def write_audit_sitecustomize(directory: Path, out: Path) -> dict[str, str]:
    """Write ``sitecustomize.py`` into ``directory``; returns the environment that makes a
    Python subprocess load it and record to ``out``."""
    directory.mkdir(parents=True, exist_ok=True)
    (directory / "sitecustomize.py").write_text(_SITECUSTOMIZE)
    pythonpath = os.pathsep.join(p for p in (str(directory), os.environ.get("PYTHONPATH", "")) if p)
    return {"PYTHONPATH": pythonpath, "WQ_AUDIT_FILE": str(out)}


@dataclass
class Audit:
    """What a process recorded: ``(kind, name)`` pairs."""

    events: list[tuple[str, str]]

    @classmethod
    def read(cls, path: Path) -> Audit:
        events = []
        if path.exists():
            for line in path.read_text(encoding="utf-8", errors="replace").splitlines():
                parts = line.split(" ", 2)
                if len(parts) == 3:
                    events.append((parts[1], parts[2]))
        return cls(events)

    def names(self, *kinds: str) -> set[str]:
        return {name for kind, name in self.events if not kinds or kind in kinds}

    def assert_working(self) -> None:
        """The recorder ran in the process (so an empty result means something)."""
        assert AUDIT_SELFTEST_MODULE in self.names("import_module"), self.events[:20]
        assert AUDIT_SELFTEST_MODULE in self.names("find_spec"), self.events[:20]
        assert "workqueue" in self.names("import", "__import__", "find_spec")

    def assert_never_touched(self, *names: str) -> None:
        """None of ``names`` (nor any dotted part of them as a whole) was imported or looked
        up by unpickling."""
        recorded = self.names("import", "__import__", "import_module", "find_spec", "pickle")
        for name in names:
            hits = sorted(r for r in recorded if r == name or r.startswith(name + "."))
            assert not hits, f"{name!r} was imported or unpickled: {hits}"

    def pickle_lookups(self) -> set[str]:
        return self.names("pickle")


def wait_for(
    predicate: Callable[[], object], timeout: float, what: str, interval: float = 0.1
) -> None:
    """Poll ``predicate()`` until true; fail naming ``what`` after ``timeout`` seconds."""
    deadline = time.monotonic() + timeout
    while True:
        with contextlib.suppress(Exception):
            if predicate():
                return
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout:g}s waiting for {what}")
        time.sleep(interval)


# --------------------------------------------------------------------------------------------
# Job records written straight into Redis, and the CLI
# --------------------------------------------------------------------------------------------


def job_key(prefix: str, job_id: str, queue: str = "default") -> str:
    return f"{prefix}:{{{queue}}}:job:{job_id}"


def write_record(
    client: redis.Redis,
    prefix: str,
    job_id: str,
    fields: dict[str, bytes | str | None],
    queue: str = "default",
) -> None:
    """Write a job record the way enqueue.lua does (``None`` in ``fields`` leaves that field
    out) and queue its id; the caller wakes the workers with :func:`wake`."""
    record: dict[str, bytes | str | None] = {
        "type": "test_echo",
        "payload": b"{}",
        "retries": "3",
        "timeout": "0.0",
        "status": "queued",
        "enqueued_at": str(int(time.time() * 1000)),
        "attempts": "0",
        "failures": "0",
        "lost": "0",
        "fp": "",
    }
    record.update(fields)
    present = {k: v for k, v in record.items() if v is not None}
    with client.pipeline(transaction=True) as pipe:
        pipe.hset(job_key(prefix, job_id, queue), mapping=present)  # type: ignore[arg-type]
        pipe.rpush(f"{prefix}:{{{queue}}}:queued", job_id)
        pipe.sadd(f"{prefix}:queues", queue)
        pipe.execute()


def wake(client: redis.Redis, prefix: str, queue: str = "default") -> None:
    client.rpush(f"{prefix}:{{{queue}}}:notify", "1")


def record_of(client: redis.Redis, prefix: str, job_id: str) -> dict[str, str]:
    raw: dict[bytes, bytes] = client.hgetall(job_key(prefix, job_id))  # type: ignore[assignment]
    return {k.decode(errors="replace"): v.decode(errors="replace") for k, v in raw.items()}


def run_cli(
    *args: str, env: dict[str, str], timeout: float = 60
) -> subprocess.CompletedProcess[str]:
    """``workqueue ARGS`` in a subprocess with ``env`` added to this one's environment."""
    return subprocess.run(
        [sys.executable, "-m", "workqueue", *args],
        env={**os.environ, **env},
        capture_output=True,
        text=True,
        timeout=timeout,
        check=False,
    )


# --------------------------------------------------------------------------------------------
# A plugin made on the fly (a dist-info on PYTHONPATH is an installed distribution)
# --------------------------------------------------------------------------------------------

_FORGE_PLUGIN = '''
"""A job type whose error is its payload's "message" (for the log-forging tests)."""
from workqueue import JobType, PermanentError, hookimpl


async def forge_error(payload, ctx):
    raise PermanentError(payload["message"])


@hookimpl
def workqueue_job_types():
    return [JobType(name="forge_error", handler=forge_error, description="raise the message")]
'''


def write_forge_plugin(directory: Path) -> Path:
    """Write the ``wq_forge_plugin`` distribution (job type ``forge_error``) into
    ``directory``; put the directory on PYTHONPATH and name the plugin in WORKQUEUE_PLUGINS."""
    directory.mkdir(parents=True, exist_ok=True)
    (directory / "wq_forge_plugin.py").write_text(_FORGE_PLUGIN)
    info = directory / "wq_forge_plugin-0.1.dist-info"
    info.mkdir(exist_ok=True)
    (info / "METADATA").write_text("Metadata-Version: 2.1\nName: wq-forge-plugin\nVersion: 0.1\n")
    (info / "entry_points.txt").write_text("[workqueue]\nwq_forge_plugin = wq_forge_plugin\n")
    return directory
