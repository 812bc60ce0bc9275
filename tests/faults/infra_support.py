"""Helpers of the infrastructure fault tests: TLS and ACL redis-servers, a TCP forwarder
that can be re-pointed, HTTP enqueue, and polling.

Everything here talks only to servers the test started itself on 127.0.0.1 (or to test hosts
in a network namespace the test made).
"""

from __future__ import annotations

import contextlib
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TypeVar
from urllib.parse import quote

import httpx
import redis
from redis_server import RedisServer, free_port

T = TypeVar("T")
#: the ``redis_factory`` fixture's type (not imported 'from conftest': ambiguous under pytest)
RedisFactory = Callable[..., RedisServer]


def wait_for(
    check: Callable[[], T | None], *, timeout: float = 30.0, interval: float = 0.1, what: str = ""
) -> T:
    """Poll ``check`` until it returns something truthy; fail after ``timeout`` seconds."""
    deadline = time.monotonic() + timeout
    while True:
        value = check()
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout:g}s waiting for {what or check}")
        time.sleep(interval)


def enqueue_http(base_url: str, body: dict[str, Any], *, timeout: float = 10.0) -> httpx.Response:
    return httpx.post(f"{base_url}/enqueue", json=body, timeout=timeout)


def count_lines(text: str, needle: str) -> int:
    return sum(1 for line in text.splitlines() if needle in line)


# ---------------------------------------------------------------------------------------------
# TLS
# ---------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class TlsFiles:
    """PEM files made by ``trustme``: the CA, and one server certificate with its key."""

    ca: Path
    cert: Path
    key: Path


def make_tls_files(directory: Path, *hostnames: str) -> TlsFiles:
    """A fresh private CA and a server certificate for ``hostnames`` signed by it."""
    import trustme

    directory.mkdir(parents=True, exist_ok=True)
    ca = trustme.CA()
    issued = ca.issue_cert(*hostnames)
    files = TlsFiles(directory / "ca.pem", directory / "server.pem", directory / "server.key")
    ca.cert_pem.write_to_path(str(files.ca))
    issued.cert_chain_pems[0].write_to_path(str(files.cert))
    issued.private_key_pem.write_to_path(str(files.key))
    return files


class TlsRedisServer(RedisServer):
    """A redis-server that speaks TLS only (``--port 0 --tls-port PORT``)."""

    def __init__(self, directory: Path, tls: TlsFiles, **kwargs: Any) -> None:
        super().__init__(directory, **kwargs)
        self.tls = tls
        self.extra_args = [
            "--port", "0",
            "--tls-port", str(self.port),
            "--tls-cert-file", str(tls.cert),
            "--tls-key-file", str(tls.key),
            "--tls-ca-cert-file", str(tls.ca),
            "--tls-auth-clients", "no",
            *self.extra_args,
        ]  # fmt: skip

    @property
    def url(self) -> str:
        """The URL the services use: host ``localhost``, the CA given as a query parameter."""
        return f"rediss://localhost:{self.port}/0?ssl_ca_certs={quote(str(self.tls.ca))}"

    def client(self, **kwargs: object) -> redis.Redis:
        """The test's own client: trusts the CA, does not check the hostname (so it can also
        inspect a server whose certificate names another host)."""
        return redis.Redis(  # type: ignore[arg-type]
            host="127.0.0.1",
            port=self.port,
            password=self.password,
            ssl=True,
            ssl_ca_certs=str(self.tls.ca),
            ssl_check_hostname=False,
            **kwargs,
        )


# ---------------------------------------------------------------------------------------------
# ACL
# ---------------------------------------------------------------------------------------------

ADMIN_USER = "wqadmin"
ADMIN_PASSWORD = "admin-secret-pw"


def acl_lines(user: str, password: str, key_pattern: str) -> list[str]:
    """An ACL file: the default user off, an admin for the test's own checks, and the
    restricted application user (no @dangerous, no @admin: KEYS, FLUSH*, CONFIG, DEBUG,
    INFO, SHUTDOWN... are all refused to it)."""
    return [
        "user default off",
        f"user {ADMIN_USER} on >{ADMIN_PASSWORD} ~* &* +@all",
        f"user {user} on >{password} ~{key_pattern} &* +@all -@dangerous -@admin",
    ]


class AclRedisServer(RedisServer):
    """A redis-server whose users come from an ACL file; :meth:`client` is the admin."""

    def __init__(self, directory: Path, lines: Sequence[str], **kwargs: Any) -> None:
        super().__init__(directory, **kwargs)
        acl_file = directory / "users.acl"
        acl_file.write_text("\n".join(lines) + "\n")
        self.extra_args = ["--aclfile", str(acl_file), *self.extra_args]

    def user_url(self, user: str, password: str) -> str:
        return f"redis://{quote(user)}:{quote(password)}@127.0.0.1:{self.port}/0"

    @property
    def url(self) -> str:
        return self.user_url(ADMIN_USER, ADMIN_PASSWORD)

    def client(self, **kwargs: object) -> redis.Redis:
        return redis.Redis(  # type: ignore[arg-type]
            port=self.port, username=ADMIN_USER, password=ADMIN_PASSWORD, **kwargs
        )


# ---------------------------------------------------------------------------------------------
# A TCP forwarder that can be re-pointed (stands in for a virtual IP or a Sentinel-aware proxy)
# ---------------------------------------------------------------------------------------------


class Forwarder:
    """Listens on 127.0.0.1:``port`` and pipes each connection to ``target`` (a port on
    127.0.0.1). :meth:`point_to` switches the target for new connections and closes the
    open ones, as a failover of a virtual IP does."""

    def __init__(self, target: int) -> None:
        self.target = target
        self._listener = socket.create_server(("127.0.0.1", 0))
        self._listener.settimeout(0.2)
        self.port: int = self._listener.getsockname()[1]
        self._lock = threading.Lock()
        self._open: set[socket.socket] = set()
        self._stopped = threading.Event()
        self._thread = threading.Thread(target=self._accept, name="forwarder", daemon=True)
        self._thread.start()

    def point_to(self, target: int) -> None:
        with self._lock:
            self.target = target
            doomed = list(self._open)
            self._open.clear()
        for sock in doomed:
            with contextlib.suppress(OSError):
                sock.shutdown(socket.SHUT_RDWR)
            sock.close()

    def close(self) -> None:
        self._stopped.set()
        self._listener.close()
        self.point_to(self.target)
        self._thread.join(timeout=5)

    def _accept(self) -> None:
        while not self._stopped.is_set():
            try:
                client, _addr = self._listener.accept()
            except TimeoutError:
                continue
            except OSError:
                return
            with self._lock:
                target = self.target
            try:
                upstream = socket.create_connection(("127.0.0.1", target), timeout=2)
            except OSError:
                client.close()
                continue
            upstream.settimeout(None)
            client.settimeout(None)
            with self._lock:
                self._open.update((client, upstream))
            for a, b in ((client, upstream), (upstream, client)):
                threading.Thread(target=self._pipe, args=(a, b), daemon=True).start()

    def _pipe(self, source: socket.socket, sink: socket.socket) -> None:
        try:
            while True:
                data = source.recv(65536)
                if not data:
                    break
                sink.sendall(data)
        except OSError:
            pass
        finally:
            for sock in (source, sink):
                with contextlib.suppress(OSError):
                    sock.shutdown(socket.SHUT_RDWR)
            with self._lock:
                self._open.discard(source)
            source.close()


def run_cli(
    args: Sequence[str], env: dict[str, str], *, timeout: float = 60.0
) -> subprocess.CompletedProcess[str]:
    """``python -m workqueue ARGS`` -> CompletedProcess (text)."""
    return subprocess.run(
        [sys.executable, "-m", "workqueue", *args],
        env=env,
        capture_output=True,
        text=True,
        timeout=timeout,
        check=False,
    )


__all__ = [
    "ADMIN_PASSWORD",
    "ADMIN_USER",
    "AclRedisServer",
    "Forwarder",
    "RedisFactory",
    "TlsFiles",
    "TlsRedisServer",
    "acl_lines",
    "count_lines",
    "enqueue_http",
    "free_port",
    "make_tls_files",
    "run_cli",
    "wait_for",
]
