"""A private Redis Cluster for tests: 3 masters with one replica each, started from the
``redis-server`` binary on free ports in a temp dir (no containers), stopped by pid.

``start_cluster_stack(directory)`` returns a :class:`ClusterStack` once every node reports
``cluster_state:ok`` and knows all 16384 slots. ``stack.url`` names one master (any node's URL
works: WorkQueue detects the cluster), ``stack.master_of_slot(slot)`` answers which master owns a
slot, ``stack.kill_master(slot)`` SIGKILLs the master of a slot, ``stack.close()`` stops them all.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import signal
import subprocess
import time
from dataclasses import dataclass, field
from pathlib import Path

import redis
from redis.crc import key_slot
from redis_server import free_port

__all__ = [
    "ClusterNode",
    "ClusterStack",
    "cluster_tools_present",
    "queue_slot",
    "start_cluster_stack",
]


def cluster_tools_present() -> bool:
    """Whether ``redis-server`` and ``redis-cli`` (with ``--cluster``) are installed."""
    return bool(shutil.which("redis-server") and shutil.which("redis-cli"))


def queue_slot(queue: str) -> int:
    """The hash slot of a queue's keys (its keys carry ``{queue}`` as their hash tag)."""
    return int(key_slot(f"x:{{{queue}}}:queued".encode()))


@dataclass
class ClusterNode:
    """One redis-server of the cluster."""

    port: int
    directory: Path
    #: the cluster bus port (by default port + 10000, which may be taken or past 65535)
    bus_port: int = field(default_factory=free_port)
    proc: subprocess.Popen[bytes] | None = None

    def start(self) -> None:
        self.directory.mkdir(parents=True, exist_ok=True)
        self.proc = subprocess.Popen(
            [
                "redis-server",
                "--port",
                str(self.port),
                "--bind",
                "127.0.0.1",
                "--dir",
                str(self.directory),
                "--cluster-enabled",
                "yes",
                "--cluster-port",
                str(self.bus_port),
                "--cluster-config-file",
                "nodes.conf",
                "--cluster-node-timeout",
                "2000",
                "--appendonly",
                "yes",
                "--appendfsync",
                "everysec",
                "--save",
                "",
                "--logfile",
                str(self.directory / "redis.log"),
            ],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )

    @property
    def addr(self) -> str:
        return f"127.0.0.1:{self.port}"

    @property
    def url(self) -> str:
        return f"redis://127.0.0.1:{self.port}"

    def client(self) -> redis.Redis:
        """A synchronous client of this node alone (no redirections)."""
        return redis.Redis(port=self.port, socket_timeout=5)

    @property
    def alive(self) -> bool:
        return self.proc is not None and self.proc.poll() is None

    def kill(self) -> None:
        """SIGKILL (a crash)."""
        if self.proc is not None and self.proc.poll() is None:
            os.kill(self.proc.pid, signal.SIGKILL)
            self.proc.wait(10)

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(10)
            except subprocess.TimeoutExpired:
                self.kill()


@dataclass
class ClusterStack:
    """A running cluster (see the module docstring)."""

    nodes: list[ClusterNode]
    directory: Path
    closed: bool = field(default=False)

    @property
    def url(self) -> str:
        return self.nodes[0].url

    def cluster(self) -> redis.RedisCluster:
        """A synchronous cluster client (for assertions)."""
        return redis.RedisCluster(host="127.0.0.1", port=self.live_nodes()[0].port)

    def live_nodes(self) -> list[ClusterNode]:
        return [n for n in self.nodes if n.alive]

    def masters(self) -> list[ClusterNode]:
        """The nodes that are masters now, in port order."""
        found = []
        for node in self.live_nodes():
            with contextlib.suppress(redis.RedisError):
                if node.client().info("replication").get("role") == "master":
                    found.append(node)
        return found

    def master_of_slot(self, slot: int) -> ClusterNode:
        """The master that owns ``slot`` (by CLUSTER SLOTS of a live node)."""
        for node in self.live_nodes():
            try:
                ranges = node.client().execute_command("CLUSTER SLOTS")
            except redis.RedisError:
                continue
            for start, end, master, *_ in ranges:
                if int(start) <= slot <= int(end):
                    port = int(master[1])
                    return next(n for n in self.nodes if n.port == port)
        raise LookupError(f"no node owns slot {slot}")

    def master_of_queue(self, queue: str) -> ClusterNode:
        return self.master_of_slot(queue_slot(queue))

    def kill_master(self, slot: int) -> ClusterNode:
        """SIGKILL the master of ``slot``; returns it (its replica takes over)."""
        node = self.master_of_slot(slot)
        node.kill()
        return node

    def wait_ok(self, timeout_s: float = 30.0) -> None:
        """Until every live node reports ``cluster_state:ok`` with all slots assigned."""
        deadline = time.monotonic() + timeout_s
        while True:
            try:
                if all(_node_ok(n) for n in self.live_nodes()):
                    return
            except redis.RedisError:
                pass
            if time.monotonic() > deadline:
                raise TimeoutError("the cluster did not reach cluster_state:ok")
            time.sleep(0.2)

    def commandstats(self) -> dict[str, int]:
        """``calls`` per command summed over the masters (INFO commandstats)."""
        total: dict[str, int] = {}
        for node in self.masters():
            for name, row in node.client().info("commandstats").items():
                total[name] = total.get(name, 0) + int(row["calls"])
        return total

    def reset_stats(self) -> None:
        for node in self.live_nodes():
            node.client().config_resetstat()

    def close(self) -> None:
        if self.closed:
            return
        self.closed = True
        for node in self.nodes:
            node.stop()


def _node_ok(node: ClusterNode) -> bool:
    info = node.client().execute_command("CLUSTER INFO")
    if isinstance(info, bytes | str):
        text = info.decode() if isinstance(info, bytes) else info
        info = dict(line.split(":", 1) for line in text.splitlines() if ":" in line)
    fields = {str(k): str(v) for k, v in info.items()}
    return fields.get("cluster_state") == "ok" and fields.get("cluster_slots_ok") == "16384"


def start_cluster_stack(directory: Path, *, masters: int = 3, replicas: int = 1) -> ClusterStack:
    """Start ``masters`` masters with ``replicas`` replicas each and join them in a cluster."""
    directory.mkdir(parents=True, exist_ok=True)
    nodes = [
        ClusterNode(port, directory / f"node-{port}")
        for port in (free_port() for _ in range(masters * (1 + replicas)))
    ]
    stack = ClusterStack(nodes, directory)
    try:
        for node in nodes:
            node.start()
        for node in nodes:
            _wait_ping(node)
        subprocess.run(
            [
                "redis-cli",
                "--cluster",
                "create",
                *(n.addr for n in nodes),
                "--cluster-replicas",
                str(replicas),
                "--cluster-yes",
            ],
            check=True,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.PIPE,
            timeout=60,
        )
        stack.wait_ok()
        # every replica must be attached before a test may kill a master
        deadline = time.monotonic() + 30
        while len(stack.masters()) != masters:
            if time.monotonic() > deadline:
                raise TimeoutError("the cluster's roles did not settle")
            time.sleep(0.2)
    except BaseException:
        stack.close()
        raise
    return stack


def _wait_ping(node: ClusterNode, timeout_s: float = 15.0) -> None:
    deadline = time.monotonic() + timeout_s
    while True:
        try:
            node.client().ping()
            return
        except redis.ConnectionError:
            if not node.alive:
                raise RuntimeError(f"redis-server on port {node.port} exited") from None
            if time.monotonic() > deadline:
                raise
            time.sleep(0.05)
