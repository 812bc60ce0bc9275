"""Redis Cluster: detection, the cluster client, and the per-node paths the broker needs.

A URL naming any node of a cluster works: :func:`cluster_mode` asks that node once (``HELLO``,
which every ACL user may run: its reply names the server's ``mode``; ``?cluster=yes`` or
``?cluster=no`` in the URL says it instead, for a process that must start while that node is
down), and
:func:`workqueue.broker.connection.create_redis` then returns redis-py's
``redis.asyncio.RedisCluster`` instead of a plain client. That client routes each command to the
master of its key's slot and follows ``MOVED``/``ASK`` (refreshing its slot map); its pipelines
send one pipeline per master, concurrently. Every WorkQueue command and script works on keys of
ONE slot (a queue's keys carry ``{queue}`` as their hash tag), so each goes to one master.

What redis-py's cluster client does not do, this module does:

- :class:`NodeClients`: a plain client per master (the cluster client's own connection settings:
  TLS, ACL user, timeouts), for the enqueue hot path (one :class:`ScriptChannel` per master: a
  batch of script calls for queues on several masters goes out as one pipelined batch per master,
  all concurrently) and for the blocking waits.
- :class:`ClusterWaits`: ``wait_for_work`` over queues on several masters. ``BLPOP`` over keys of
  different slots is refused (``CROSSSLOT``), even on one node, so there is one ``BLPOP`` per
  queue, each on its own connection, all at once; the first wake-up ends the wait. A wait still
  pending when another ends is kept (not cancelled) and reused by the next wait, so no wake-up
  token is swallowed and no connection is dropped: at most one connection per queue.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Awaitable, Callable, Sequence
from functools import partial
from typing import Any, TypeVar
from urllib.parse import parse_qsl, urlencode, urlsplit, urlunsplit

import redis as sync_redis
from redis.asyncio import ConnectionPool, Redis, RedisCluster
from redis.asyncio.retry import Retry
from redis.backoff import ExponentialBackoff
from redis.exceptions import (
    AskError,
    ClusterDownError,
    MovedError,
    RedisError,
    TryAgainError,
)
from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import TimeoutError as RedisTimeoutError

from workqueue.broker.channel import Command, ScriptChannel

__all__ = [
    "REDIRECTS",
    "ClusterWaits",
    "NodeClients",
    "cluster_choice",
    "cluster_mode",
    "create_cluster_redis",
    "gather_in_order",
    "is_cluster",
]

#: error replies that mean "ask the cluster again" (the slot moved, is moving, or the cluster
#: is between two states): the command is sent again through the cluster client
REDIRECTS = (MovedError, AskError, TryAgainError, ClusterDownError)

T = TypeVar("T")


def is_cluster(client: object) -> bool:
    """Whether ``client`` is a cluster client (made by ``create_redis`` for a cluster node)."""
    return isinstance(client, RedisCluster)


def cluster_choice(url: str) -> tuple[str, bool | None]:
    """The URL without its ``cluster`` query parameter, and what that parameter asks:
    ``cluster=yes`` a cluster client without asking the node, ``cluster=no`` a plain client
    without asking, absent: ask the node (:func:`cluster_mode`)."""
    parts = urlsplit(url)
    if "cluster=" not in parts.query:
        return url, None
    query = parse_qsl(parts.query, keep_blank_values=True)
    choice: bool | None = None
    kept = []
    for name, value in query:
        if name == "cluster":
            choice = value.strip().lower() in ("1", "yes", "true", "on")
        else:
            kept.append((name, value))
    return urlunsplit(parts._replace(query=urlencode(kept))), choice


def cluster_mode(url: str, tls: dict[str, Any], connect_timeout: float) -> bool | None:
    """Ask the node of ``url`` whether it runs in cluster mode (one ``HELLO``, no protocol
    switch); ``None`` when it cannot be asked now (down, refused login: the caller goes on with
    a plain client and the usual error handling reports the problem)."""
    probe = sync_redis.Redis.from_url(
        url,
        **tls,
        socket_timeout=connect_timeout,
        socket_connect_timeout=connect_timeout,
        decode_responses=True,
    )
    try:
        reply: Any = probe.execute_command("HELLO")  # type: ignore[no-untyped-call]
    except (RedisError, OSError):
        return None
    finally:
        probe.close()
    if isinstance(reply, list):
        reply = dict(zip(reply[::2], reply[1::2], strict=False))
    if not isinstance(reply, dict):
        return None
    return str(reply.get("mode", "")) == "cluster"


def create_cluster_redis(
    url: str,
    *,
    tls: dict[str, Any],
    socket_timeout: float | None,
    connect_timeout: float,
    max_connections: int | None,
    retries: int,
    connection_class: Callable[[type[Any]], type[Any]],
) -> RedisCluster:
    """A cluster client from one node's URL, with the single-node path's settings (TLS checks,
    timeouts, keepalive, health checks, retry of broken connections)."""
    kwargs: dict[str, Any] = {}
    if max_connections:
        kwargs["max_connections"] = max_connections
    cluster: RedisCluster = RedisCluster.from_url(
        url,
        **tls,
        **kwargs,
        socket_timeout=socket_timeout,
        socket_connect_timeout=connect_timeout,
        socket_keepalive=True,
        health_check_interval=15,
        retry=Retry(ExponentialBackoff(cap=0.5, base=0.05), retries),
        retry_on_error=[RedisConnectionError, RedisTimeoutError],
        decode_responses=False,
    )
    # the same write-error fix as the single-node path, for every node the client will make
    manager = cluster.nodes_manager
    manager.connection_kwargs["connection_class"] = connection_class(
        manager.connection_kwargs["connection_class"]
    )
    for node in manager.startup_nodes.values():
        node.connection_class = connection_class(node.connection_class)
    return cluster


async def gather_in_order(calls: Sequence[Callable[[], Awaitable[T]]]) -> list[T]:
    """Run ``calls`` concurrently (one per queue, each on the master of its slot); results in
    order; the first error is raised after all have ended."""
    if len(calls) == 1:
        return [await calls[0]()]
    results = await asyncio.gather(*(call() for call in calls), return_exceptions=True)
    for result in results:
        if isinstance(result, BaseException):
            raise result
    return results  # type: ignore[return-value]


class NodeClients:
    """Plain clients of the cluster's masters, made on first use and keyed by ``host:port``."""

    def __init__(self, cluster: RedisCluster) -> None:
        self.cluster = cluster
        self._clients: dict[str, Redis] = {}
        self._blocking: dict[str, Redis] = {}
        self._channels: dict[str, ScriptChannel] = {}

    async def ready(self) -> None:
        """Load the slot map (once; the cluster client refreshes it on ``MOVED``)."""
        await self.cluster.initialize()

    async def refresh(self) -> None:
        """Reload the slot map now (after a redirection or a node that stopped answering)."""
        with contextlib.suppress(RedisError, OSError):
            await self.cluster.nodes_manager.initialize()

    def node_name(self, key: str) -> str:
        """``host:port`` of the master that owns ``key``'s slot (by the cached slot map)."""
        node = self.cluster.get_node_from_key(key)
        if node is None:  # pragma: no cover - only for replica=True
            raise ClusterDownError(f"no node serves the slot of {key!r}")
        return str(node.name)

    def _make(self, name: str, *, blocking: bool) -> Redis:
        node = self.cluster.get_node(node_name=name)
        if node is None:
            raise ClusterDownError(f"{name} is no longer a node of the cluster")
        kwargs = dict(node.connection_kwargs)
        for key in ("max_connections", "connection_class"):
            kwargs.pop(key, None)
        if blocking:
            kwargs["socket_timeout"] = None  # the wait bounds itself
        retry = self.cluster.retry
        pool = ConnectionPool(
            connection_class=node.connection_class,
            max_connections=None if blocking else 4,
            **kwargs,
        )
        return Redis(connection_pool=pool, retry=retry)

    def client(self, name: str) -> Redis:
        """The plain client of one master."""
        client = self._clients.get(name)
        if client is None:
            client = self._clients[name] = self._make(name, blocking=False)
        return client

    def blocking(self, name: str) -> Redis:
        """The client one master's ``BLPOP`` waits use (no socket timeout)."""
        client = self._blocking.get(name)
        if client is None:
            client = self._blocking[name] = self._make(name, blocking=True)
        return client

    def channel(self, name: str) -> ScriptChannel:
        """The enqueue channel of one master."""
        channel = self._channels.get(name)
        if channel is None:
            channel = self._channels[name] = ScriptChannel(self.client(name))
        return channel

    async def groups(self, keys: Sequence[str]) -> dict[str, list[int]]:
        """The indexes of ``keys`` grouped by the master of their slot (``host:port``)."""
        await self.ready()
        found: dict[str, list[int]] = {}
        for index, key in enumerate(keys):
            found.setdefault(self.node_name(key), []).append(index)
        return found

    async def execute_grouped(
        self,
        items: Sequence[tuple[str, Command]],
        script: Any,
        fallback: Callable[[int], Awaitable[Any]],
    ) -> list[Any]:
        """Send ``items`` (slot key, packed command) grouped per master, one batch per master
        on its channel, all masters concurrently; replies in order.

        A reply that is a redirection (``MOVED``, ``ASK``, ``TRYAGAIN``, ``CLUSTERDOWN``), and
        every command of a master whose connection failed, is sent again by
        ``fallback(index)`` through the cluster client (which follows redirections and
        refreshes its slot map). Callers only send commands that are safe to repeat.
        """
        groups = await self.groups([key for key, _ in items])
        replies: list[Any] = [None] * len(items)

        async def one(name: str, indexes: list[int]) -> None:
            try:
                got = await self.channel(name).execute([items[i][1] for i in indexes], script)
            except (RedisConnectionError, RedisTimeoutError, OSError, ClusterDownError):
                await self.refresh()
                for i in indexes:
                    replies[i] = await fallback(i)
                return
            for i, reply in zip(indexes, got, strict=True):
                replies[i] = reply
            redirected = [i for i in indexes if isinstance(replies[i], REDIRECTS)]
            for i in redirected:
                replies[i] = await fallback(i)

        await gather_in_order([partial(one, name, ix) for name, ix in groups.items()])
        return replies

    async def aclose(self) -> None:
        """Close every per-node client (the cluster client is closed by its owner)."""
        for channel in self._channels.values():
            await channel.close()
        self._channels.clear()
        for clients in (self._clients, self._blocking):
            for client in clients.values():
                await client.aclose()
                await client.connection_pool.disconnect()
            clients.clear()


class ClusterWaits:
    """``wait_for_work`` over queues whose wake-up lists are on several masters."""

    #: seconds past its own timeout a BLPOP may stay unanswered before the link counts as dead
    DEAD_LINK_S = 5.0

    def __init__(self, nodes: NodeClients) -> None:
        self._nodes = nodes
        #: key -> (its BLPOP, the loop time by which that BLPOP must have answered)
        self._pending: dict[str, tuple[asyncio.Task[Any], float]] = {}

    async def _blpop(self, key: str, timeout: float) -> Any:
        name = self._nodes.node_name(key)
        return await self._nodes.blocking(name).blpop([key], timeout=timeout)

    async def wait(self, keys: Sequence[str], timeout_s: float) -> bool:
        """Until a token arrives on one of ``keys`` (True) or ``timeout_s`` passes (False).

        A BLPOP still running when its wait ends stays pending for the next wait (a token it
        takes meanwhile wakes that wait at once); one of a key no longer asked for is
        cancelled. A BLPOP unanswered :data:`DEAD_LINK_S` past its own timeout (a dead link)
        is dropped and ``TimeoutError`` raised; a redirection (the queue's slot moved) or a
        broken connection refreshes the slot map.
        """
        await self._nodes.ready()
        wanted = set(keys)
        for key in [k for k in self._pending if k not in wanted]:
            self._pending.pop(key)[0].cancel()
        loop = asyncio.get_running_loop()
        deadline = loop.time() + timeout_s
        while True:
            now = loop.time()
            left = max(0.01, round(deadline - now, 3))
            for key in keys:
                if key not in self._pending:
                    task = asyncio.ensure_future(self._blpop(key, left))
                    self._pending[key] = (task, now + left + self.DEAD_LINK_S)
            overdue = [k for k in keys if self._pending[k][1] < now]
            if overdue:
                for key in overdue:
                    self._pending.pop(key)[0].cancel()
                await self._nodes.refresh()
                raise RedisTimeoutError("no reply to a blocking wait (a dead link?)")
            until = min(deadline, *(self._pending[k][1] for k in keys))
            await asyncio.wait(
                [self._pending[k][0] for k in keys],
                timeout=max(0.0, until - now),
                return_when=asyncio.FIRST_COMPLETED,
            )
            woken = False
            error: BaseException | None = None
            for key in keys:
                task = self._pending[key][0]
                if not task.done():
                    continue
                del self._pending[key]
                if task.cancelled():
                    continue
                exc = task.exception()
                if exc is None:
                    woken = woken or task.result() is not None
                elif isinstance(exc, REDIRECTS):
                    await self._nodes.refresh()
                    woken = True  # the queue moved: let the caller look (reserve follows it)
                else:
                    error = exc
            if error is not None:
                await self._nodes.refresh()
                raise error
            if woken or loop.time() >= deadline:
                return woken

    def cancel(self) -> None:
        """Cancel every pending wait."""
        for task, _ in self._pending.values():
            task.cancel()
        self._pending.clear()
