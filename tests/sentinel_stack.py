"""A Redis Sentinel deployment for tests: a primary, one replica and three Sentinels.

Everything runs from the ``redis-server`` binary (``--sentinel`` for the Sentinels) on free
ports in a temp dir, and is stopped by pid. The Sentinels monitor the primary under the name
``mymaster`` with quorum 2, ``down-after-milliseconds`` 1000 and a short failover timeout, so a
killed primary is replaced in about 2-4 seconds.

    stack = start_sentinel_stack(tmp_path)
    stack.url              # redis+sentinel://127.0.0.1:P1,127.0.0.1:P2,127.0.0.1:P3/mymaster/0
    stack.kill_primary()   # SIGKILL the current primary
    stack.wait_for_failover()
    stack.close()
"""

from __future__ import annotations

import contextlib
import subprocess
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import quote

import redis
from redis_server import RedisServer, free_port

__all__ = ["MASTER_NAME", "SentinelStack", "StackTls", "start_sentinel_stack"]

MASTER_NAME = "mymaster"
DOWN_AFTER_MS = 1000
FAILOVER_TIMEOUT_MS = 2000


@dataclass(frozen=True)
class StackTls:
    """PEM files for a TLS-only stack: the CA, and a server certificate (naming 127.0.0.1:
    the Sentinels report the primary by IP address) with its key."""

    ca: Path
    cert: Path
    key: Path

    def server_args(self) -> list[str]:
        return [
            "--tls-cert-file", str(self.cert),
            "--tls-key-file", str(self.key),
            "--tls-ca-cert-file", str(self.ca),
            "--tls-auth-clients", "no",
            "--tls-replication", "yes",
        ]  # fmt: skip

    def client_kwargs(self) -> dict[str, Any]:
        return {"ssl": True, "ssl_ca_certs": str(self.ca), "ssl_check_hostname": False}


class StackNode(RedisServer):
    """A data node; TLS-only (``--port 0 --tls-port PORT``) when the stack has TLS."""

    def __init__(self, directory: Path, tls: StackTls | None, **kwargs: Any) -> None:
        super().__init__(directory, **kwargs)
        self.tls = tls
        if tls is not None:
            self.extra_args = ["--port", "0", "--tls-port", str(self.port), *tls.server_args()]
            self.extra_args += kwargs.get("extra_args", [])

    def client(self, **kwargs: object) -> redis.Redis:
        tls = self.tls.client_kwargs() if self.tls is not None else {}
        return super().client(**tls, **kwargs)


class SentinelNode:
    """One ``redis-server --sentinel`` process with its own config file."""

    def __init__(
        self,
        directory: Path,
        primary_port: int,
        *,
        password: str | None,
        sentinel_password: str | None = None,
        tls: StackTls | None = None,
    ) -> None:
        self.directory = directory
        self.port = free_port()
        self.tls = tls
        self.sentinel_password = sentinel_password
        self.config = directory / f"sentinel-{self.port}.conf"
        auth = [f"sentinel auth-pass {MASTER_NAME} {password}"] if password else []
        if sentinel_password:  # its own login, and the one it uses with the other Sentinels
            auth += [
                f"requirepass {sentinel_password}",
                f"sentinel sentinel-pass {sentinel_password}",
            ]
        if tls is not None:
            args = tls.server_args()
            ports = ["port 0", f"tls-port {self.port}"]
            ports += [f"{args[i][2:]} {args[i + 1]}" for i in range(0, len(args), 2)]
        else:
            ports = [f"port {self.port}"]
        self.config.write_text(
            "\n".join(
                [
                    *ports,
                    "bind 127.0.0.1",
                    f"dir {directory}",
                    f"logfile {directory / f'sentinel-{self.port}.log'}",
                    f"sentinel monitor {MASTER_NAME} 127.0.0.1 {primary_port} 2",
                    f"sentinel down-after-milliseconds {MASTER_NAME} {DOWN_AFTER_MS}",
                    f"sentinel failover-timeout {MASTER_NAME} {FAILOVER_TIMEOUT_MS}",
                    f"sentinel parallel-syncs {MASTER_NAME} 1",
                    *auth,
                    "",
                ]
            )
        )
        self.proc: subprocess.Popen[bytes] | None = None

    def start(self) -> None:
        self.proc = subprocess.Popen(
            ["redis-server", str(self.config), "--sentinel"],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )

    def client(self) -> redis.Redis:
        tls = self.tls.client_kwargs() if self.tls is not None else {}
        return redis.Redis(
            port=self.port,
            socket_timeout=1,
            decode_responses=True,
            password=self.sentinel_password,
            **tls,
        )

    def master(self) -> dict[str, object] | None:
        """This Sentinel's view of the monitored primary (None when it does not answer)."""
        try:
            with self.client() as conn:
                reply = conn.execute_command("SENTINEL", "MASTER", MASTER_NAME)
        except redis.RedisError:
            return None
        if isinstance(reply, dict):
            return reply
        return dict(zip(reply[::2], reply[1::2], strict=True))

    def close(self) -> None:
        if self.proc and self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait(timeout=10)


class SentinelStack:
    """A primary, its replica and three Sentinels; see the module docstring."""

    def __init__(
        self,
        directory: Path,
        *,
        password: str | None = None,
        sentinel_password: str | None = None,
        tls: StackTls | None = None,
    ) -> None:
        self.directory = directory
        self.password = password
        self.sentinel_password = sentinel_password
        self.tls = tls
        first = directory / "node-a"
        second = directory / "node-b"
        first.mkdir(parents=True)
        second.mkdir(parents=True)
        auth = ["--masterauth", password] if password else []
        #: the node that starts as the primary (the names keep their first roles: after a
        #: failover ``current_primary()`` says which one leads)
        self.primary = StackNode(first, tls, appendonly=False, password=password, extra_args=auth)
        self.replica = StackNode(
            second,
            tls,
            appendonly=False,
            password=password,
            extra_args=[*auth, "--replicaof", "127.0.0.1", str(self.primary.port)],
        )
        self.sentinels: list[SentinelNode] = []

    @property
    def url(self) -> str:
        """``redis+sentinel://`` naming the three Sentinels, the master name and db 0."""
        hosts = ",".join(f"127.0.0.1:{s.port}" for s in self.sentinels)
        auth = f":{self.password}@" if self.password else ""
        scheme = "rediss+sentinel" if self.tls else "redis+sentinel"
        options = []
        if self.tls:
            options.append(f"ssl_ca_certs={quote(str(self.tls.ca))}")
        if self.sentinel_password:
            options.append(f"sentinel_password={quote(self.sentinel_password)}")
        query = f"?{'&'.join(options)}" if options else ""
        return f"{scheme}://{auth}{hosts}/{MASTER_NAME}/0{query}"

    @property
    def nodes(self) -> list[RedisServer]:
        return [self.primary, self.replica]

    def start(self, timeout: float = 30.0) -> None:
        self.primary.start()
        self.replica.start()
        self._wait(lambda: self._link_up(self.replica), timeout, "the replica in sync")
        for _ in range(3):
            node = SentinelNode(
                self.directory,
                self.primary.port,
                password=self.password,
                sentinel_password=self.sentinel_password,
                tls=self.tls,
            )
            node.start()
            self.sentinels.append(node)
        self._wait(self._agreed, timeout, "the Sentinels to agree")

    def _link_up(self, node: RedisServer) -> bool:
        try:
            with node.client(socket_timeout=1) as conn:
                info = conn.info("replication")
        except redis.RedisError:
            return False
        return info.get("role") == "slave" and info.get("master_link_status") == "up"

    def _agreed(self) -> bool:
        """Every Sentinel sees the same live primary, one replica and the two other Sentinels."""
        ports = set()
        for sentinel in self.sentinels:
            view = sentinel.master()
            if view is None:
                return False
            flags = str(view.get("flags", ""))
            if "s_down" in flags or "o_down" in flags or "failover" in flags:
                return False
            if int(view.get("num-other-sentinels", 0)) < 2 or int(view.get("num-slaves", 0)) < 1:
                return False
            ports.add(int(view["port"]))
        return len(ports) == 1

    @staticmethod
    def _wait(check: object, timeout: float, what: str) -> None:
        assert callable(check)
        deadline = time.monotonic() + timeout
        while not check():
            if time.monotonic() > deadline:
                raise TimeoutError(f"timed out waiting for {what}")
            time.sleep(0.1)

    def current_primary(self) -> RedisServer:
        """The node the Sentinels name as primary now."""
        views = [s.master() for s in self.sentinels]
        ports = {int(v["port"]) for v in views if v is not None}
        for node in self.nodes:
            if node.port in ports and len(ports) == 1:
                return node
        raise LookupError(f"the Sentinels disagree or name an unknown node: {ports}")

    def current_replica(self) -> RedisServer:
        primary = self.current_primary()
        return self.replica if primary is self.primary else self.primary

    def kill_primary(self) -> RedisServer:
        """SIGKILL the current primary (no shutdown, like a crash); returns the killed node."""
        node = self.current_primary()
        node.kill()
        return node

    def failover(self) -> RedisServer:
        """``SENTINEL FAILOVER``: promote the replica while the primary still runs; returns
        the old primary."""
        node = self.current_primary()
        with self.sentinels[0].client() as conn:
            conn.execute_command("SENTINEL", "FAILOVER", MASTER_NAME)
        return node

    def wait_for_failover(self, old: RedisServer | None = None, timeout: float = 30.0) -> None:
        """Wait until every Sentinel names a primary other than ``old`` (default: the node that
        started as primary), that node answers as a primary, and ``old``, if it still runs,
        has been demoted to a replica (until then it accepts writes that the failover will
        discard)."""
        old_node = old or self.primary
        old_port = old_node.port

        def done() -> bool:
            views = [s.master() for s in self.sentinels]
            if any(v is None for v in views):
                return False
            ports = {int(v["port"]) for v in views if v is not None}
            if len(ports) != 1 or old_port in ports:
                return False
            new = next(n for n in self.nodes if n.port in ports)
            try:
                with new.client(socket_timeout=1) as conn:
                    if conn.info("replication").get("role") != "master":
                        return False
                if old_node.proc is None or old_node.proc.poll() is not None:
                    return True  # the old primary is dead
                with old_node.client(socket_timeout=1) as conn:
                    return bool(conn.info("replication").get("role") == "slave")
            except redis.RedisError:
                return False

        self._wait(done, timeout, "the failover")

    def wait_for_replica_link(self, node: RedisServer, timeout: float = 30.0) -> None:
        """Wait until ``node`` (a demoted primary) replicates from the new primary."""
        self._wait(lambda: self._link_up(node), timeout, "the demoted node to replicate")

    def restart(self, node: RedisServer, timeout: float = 30.0) -> None:
        """Start a killed node again; the Sentinels make it a replica of the new primary."""
        node.start()
        self._wait(lambda: self._link_up(node), timeout, "the old primary to rejoin as replica")

    def close(self) -> None:
        """Stop every process (SIGKILL, by pid)."""
        for sentinel in self.sentinels:
            with contextlib.suppress(Exception):
                sentinel.close()
        for node in self.nodes:
            with contextlib.suppress(Exception):
                node.close()


def start_sentinel_stack(
    tmp_path: Path,
    *,
    password: str | None = None,
    sentinel_password: str | None = None,
    tls: StackTls | None = None,
) -> SentinelStack:
    """Start a primary, a replica and three Sentinels under ``tmp_path``; wait until the
    Sentinels agree. The caller must ``close()`` it. ``password``: the data nodes'
    ``requirepass`` (and the Sentinels' ``auth-pass``); ``sentinel_password``: the Sentinels'
    own ``requirepass``; ``tls``: every process speaks TLS only."""
    stack = SentinelStack(
        tmp_path / "sentinel-stack", password=password, sentinel_password=sentinel_password, tls=tls
    )
    try:
        stack.start()
    except BaseException:
        stack.close()
        raise
    return stack
