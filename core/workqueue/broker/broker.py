"""The broker: the job state machine's operations, each one atomic script call on Redis.

:class:`Broker` implements :class:`workqueue.broker.contract.BrokerAPI`. Hot-path cost: one
``reserve`` round trip hands out up to N jobs of a queue; one ``finish`` round trip settles a
batch of outcomes (sent as one MessagePack argument); one ``enqueue`` round trip writes a whole
batch; ``renew`` of one queue is one plain EVALSHA. Housekeeping (lease recovery, promotion,
retention, consistency) is a separate duty: :meth:`Broker.housekeep`.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable, Mapping, Sequence
from functools import partial
from typing import Any

import msgspec
from redis.asyncio import ConnectionPool, Redis

from workqueue.broker.channel import ScriptChannel, pack
from workqueue.broker.cluster import (
    REDIRECTS,
    ClusterWaits,
    NodeClients,
    gather_in_order,
    is_cluster,
)
from workqueue.broker.config import BrokerConfig
from workqueue.broker.contract import (
    Applied,
    CancelOutcome,
    CancelResult,
    Dropped,
    DroppedReason,
    EnqueueResult,
    FinishOp,
    HousekeepResult,
    Lease,
    QueueSettings,
    Recovered,
    RecoveredOutcome,
    RenewResult,
    ReserveResult,
    WorkerAdvert,
)
from workqueue.broker.keys import GlobalKeys, QueueKeys
from workqueue.broker.partitioned_reads import LogicalReads  # partitions (H3)
from workqueue.broker.partitions import logical_name  # partitions (H3)
from workqueue.broker.reads import _int, _s, job_info
from workqueue.broker.scripts import Scripts
from workqueue.errors import ConfigurationError, DurabilityError, JobNotFound, QueueLimitError
from workqueue.job import NewJob, ReservedJob

__all__ = [
    "ENQUEUE_CHUNK",
    "Broker",
    "BrokerConfig",
    "FinishOp",
    "Recovered",
    "ReserveResult",
]

NOTIFY_CAP = 64
#: the most jobs one enqueue script call writes (bigger batches go in several calls)
ENQUEUE_CHUNK = 1000


_OPS_ENCODER = msgspec.msgpack.Encoder()
_ADVERT_ENCODER = msgspec.json.Encoder()
_STATUS = {b"queued": "queued", b"scheduled": "scheduled"}
_APPLIED = {a.value.encode(): a for a in Applied}
_SETTING_FIELDS = ("completed_ttl_ms", "failed_ttl_ms", "max_lost_leases")


def _wire_op(op: FinishOp) -> tuple[str, str, str, str, int, int]:
    """One op as the finish script reads it (Redis's Lua MessagePack has no binary type)."""
    data = op.data
    if isinstance(data, bytes):
        data = data.decode("utf-8", "replace")
    return (str(op.op), op.job_id, op.token, data, op.delay_ms, int(op.timed_out))


def _ms(seconds: float) -> int:
    return int(seconds * 1000)


def _dropped(queue: str, raw: list[Any], pos: int, n: int) -> list[Dropped]:
    return [
        Dropped(_s(raw[i]), queue, DroppedReason(_s(raw[i + 1])), _s(raw[i + 2]))
        for i in range(pos, pos + 3 * n, 3)
    ]


class Broker(LogicalReads):
    """Job operations against one Redis for any number of queues (the ``BrokerAPI``)."""

    def __init__(
        self, redis: Redis, config: BrokerConfig | None = None, *, blocking: Redis | None = None
    ) -> None:
        self.redis = redis
        self.config = config or BrokerConfig()
        self.globals = GlobalKeys(self.config.prefix)
        self.scripts = Scripts(redis)
        self._known_queues: set[str] = set()
        self._keys_cache: dict[str, QueueKeys] = {}
        #: on Redis Cluster: per-master clients, channels and blocking waits
        self._nodes = NodeClients(redis) if is_cluster(redis) else None  # type: ignore[arg-type]
        self._waits = ClusterWaits(self._nodes) if self._nodes is not None else None
        #: the enqueue path's own connection (plain clients; others go through redis-py)
        self._channel = (
            ScriptChannel(redis)
            if self._nodes is None and hasattr(redis, "connection_pool")
            else None
        )
        if self.config.durable_enqueue:
            if self._nodes is not None:
                kwargs = self._nodes.cluster.nodes_manager.connection_kwargs
            elif self._channel is not None:
                kwargs = redis.connection_pool.connection_kwargs
            else:
                kwargs = {}
            socket_timeout = kwargs.get("socket_timeout")
            if socket_timeout and self.config.durable_timeout_s >= socket_timeout:
                raise ConfigurationError(
                    f"durable timeout ({self.config.durable_timeout_s:g} s) must be shorter "
                    f"than the Redis socket timeout ({socket_timeout:g} s)"
                )
        #: the connection ``wait_for_work`` blocks on (made on first use unless given)
        self._blocking = blocking
        self._own_blocking = blocking is None

    def keys(self, queue: str) -> QueueKeys:
        """The key names of one queue."""
        keys = self._keys_cache.get(queue)
        if keys is None:
            if len(self._keys_cache) > 1024:
                self._keys_cache.clear()
            keys = self._keys_cache[queue] = QueueKeys(self.config.prefix, queue)
        return keys

    async def ping(self) -> None:
        """Raise unless Redis answers."""
        await self.redis.ping()

    async def aclose(self) -> None:
        """Close the connections (the blocking one too, when the broker made it)."""
        if self._channel is not None:
            await self._channel.close()
        if self._waits is not None:
            self._waits.cancel()
        if self._nodes is not None:
            await self._nodes.aclose()
        if self._blocking is not None and self._own_blocking:
            # a client made on a pool of its own does not close that pool by itself
            await self._blocking.aclose()
            await self._blocking.connection_pool.disconnect()
            self._blocking = None
        await self.redis.aclose()

    # -- enqueue -------------------------------------------------------------------------

    async def enqueue(self, jobs: Sequence[NewJob]) -> list[EnqueueResult]:
        """Write jobs; one script call per queue and chunk, all in one round trip.

        A duplicate is an existing job found by idempotency key, or (a repeated call after a
        lost reply) by the call's mark. Each script call writes at most :data:`ENQUEUE_CHUNK`
        jobs atomically; the calls go out pipelined on the enqueue channel, a few at a time.
        A queue new to this process is first registered in ``<p>:queues`` (one round trip,
        once per queue): :class:`QueueLimitError` when that would pass ``max_queues``.
        """
        if not jobs:
            return []
        first = jobs[0].queue
        if all(job.queue == first for job in jobs):
            by_queue: dict[str, list[int]] = {first: list(range(len(jobs)))}
        else:
            by_queue = {}
            for index, job in enumerate(jobs):
                by_queue.setdefault(job.queue, []).append(index)
        new_queues = [q for q in by_queue if q not in self._known_queues]
        if new_queues:
            await self._register_queues(new_queues)
        plan: list[list[int]] = []
        calls: list[tuple[str, list[NewJob]]] = []
        for queue, indexes in by_queue.items():
            for at in range(0, len(indexes), ENQUEUE_CHUNK):
                chunk = indexes[at : at + ENQUEUE_CHUNK]
                plan.append(chunk)
                calls.append((queue, [jobs[i] for i in chunk]))
        if self._nodes is not None:
            replies, acked = await self._send_per_master(calls)
        elif self._channel is not None:
            commands: list[Callable[[], bytes]] = [
                partial(self._pack_enqueue, queue, batch) for queue, batch in calls
            ]
            if self.config.durable_enqueue:
                replies, acked = await self._enqueue_durably(self._channel, commands, calls)
            else:
                replies, acked = await self._channel.execute(commands, self.scripts.enqueue), None
        else:
            if self.config.durable_enqueue:
                raise ConfigurationError("durable enqueue needs the enqueue channel")
            replies, acked = [], None
            for queue, batch in calls:
                keys, args = self._enqueue_args(queue, batch)
                replies.append(await self.scripts.enqueue(keys=keys, args=args))
        results: list[EnqueueResult | None] = [None] * len(jobs)
        for raw, indexes in zip(replies, plan, strict=True):
            if isinstance(raw, Exception):
                raise raw
            self._collect(raw, indexes, results, jobs)
        answers = [r for r in results if r is not None]
        if acked is not None and acked < self.config.durable_enqueue:
            c = self.config
            raise DurabilityError(
                c.durable_enqueue, acked, c.durable_timeout_s, [r.id for r in answers]
            )
        return answers

    # -- durable enqueue (WAIT) ----------------------------------------------------------------

    async def _enqueue_durably(
        self,
        channel: ScriptChannel,
        commands: list[Callable[[], bytes]],
        calls: list[tuple[str, list[NewJob]]],
    ) -> tuple[list[Any], int]:
        """The enqueue calls, then ``WAIT N timeout`` on the same connection: the replies of
        the calls and how many replicas acknowledged every write before the WAIT.

        ``WAIT`` counts the replicas that reached the replication offset of this connection's
        last command (Redis 7.0 records it on every command; some versions only on writes).
        It proves nothing when a command was sent again on a new connection (a write answered
        on the old one may be lost with a failed primary), and on servers that record only
        writes, nothing when a call was a replay (its mark existed: it wrote nothing, and a job
        written by an earlier call may be unreplicated). Then a second round sends every call
        again (they are idempotent: a lost write is written afresh), refreshes each call's
        mark (a write, after the jobs' writes) and waits again; at most 3 rounds.
        """
        c = self.config
        wait = partial(pack, ("WAIT", c.durable_enqueue, max(1, _ms(c.durable_timeout_s))))
        first: list[Any] | None = None
        acked = 0
        for round_number in range(3):
            sent = [_Counted(command) for command in commands]
            if round_number:
                sent += [
                    _Counted(partial(pack, ("PEXPIRE", self._mark(queue, batch), 60000)))
                    for queue, batch in calls
                ]
            sent.append(_Counted(wait))
            replies = await channel.execute(list(sent), self.scripts.enqueue)
            for reply in replies:
                if isinstance(reply, Exception):
                    raise reply
            if first is None:
                first = replies[: len(commands)]
            acked = int(replies[-1])
            resent = any(command.packs > 1 for command in sent)
            replayed = any(int(raw[1]) for raw in replies[: len(commands)])
            # from the second round on the calls are replays: the marks' refresh covers them
            if not resent and (round_number or not replayed):
                break
        else:
            acked = 0  # the connection kept breaking: nothing confirmed
        assert first is not None
        return first, acked

    async def _send_per_master(
        self, calls: list[tuple[str, list[NewJob]]]
    ) -> tuple[list[Any], int | None]:
        """The enqueue calls on a cluster: one batch per master on its channel, all at once
        (with ``WAIT`` per master when durable). A redirected call is sent again through the
        cluster client (enqueue calls are safe to repeat)."""
        assert self._nodes is not None
        items: list[tuple[str, Callable[[], bytes]]] = [
            (self.keys(queue).queued, partial(self._pack_enqueue, queue, batch))
            for queue, batch in calls
        ]
        if self.config.durable_enqueue:
            return await self._enqueue_durably_per_master(items, calls)
        replies = await self._nodes.execute_grouped(
            items,
            self.scripts.enqueue,
            lambda i: self.scripts.enqueue(*self._enqueue_args(*calls[i])),
        )
        return replies, None

    async def _enqueue_durably_per_master(
        self,
        items: list[tuple[str, Callable[[], bytes]]],
        calls: list[tuple[str, list[NewJob]]],
    ) -> tuple[list[Any], int]:
        """Durable enqueue on a cluster: :meth:`_enqueue_durably` on each master's channel
        (its calls, then ``WAIT`` there: a master's replicas acknowledge that master's
        writes), all masters at once; the replicas acknowledged are the fewest any master
        got. A redirection (the slot moved) refreshes the slot map and is raised: the caller
        sends the jobs again (same ids, so never twice)."""
        nodes = self._nodes
        assert nodes is not None
        groups = await nodes.groups([key for key, _ in items])
        replies: list[Any] = [None] * len(items)
        acks: list[int] = []

        async def one(name: str, indexes: list[int]) -> None:
            try:
                got, acked = await self._enqueue_durably(
                    nodes.channel(name), [items[i][1] for i in indexes], [calls[i] for i in indexes]
                )
            except REDIRECTS:
                await nodes.refresh()
                raise
            for i, reply in zip(indexes, got, strict=True):
                replies[i] = reply
            acks.append(acked)

        await gather_in_order([partial(one, name, ix) for name, ix in groups.items()])
        return replies, min(acks)

    async def _register_queues(self, queues: Sequence[str]) -> None:
        names = list(dict.fromkeys(map(logical_name, queues)))  # partitions: logical names
        raw = await self.scripts.register_queues(
            keys=[self.globals.queues], args=[self.config.max_queues, *names]
        )
        if int(raw[0]):
            raise QueueLimitError(queues[0], self.config.max_queues)
        self._known_queues.update(queues)

    def _enqueue_args(self, queue: str, jobs: Sequence[NewJob]) -> tuple[list[str], list[Any]]:
        """KEYS and ARGV of one enqueue.lua call (see the script for the layout)."""
        k = self.keys(queue)
        shapes: dict[tuple[Any, ...], int] = {}
        tail: list[Any] = []
        for job in jobs:
            shape = (
                job.type,
                job.retries,
                job.timeout,
                job.delay_ms,
                job.run_at_ms,
                job.idempotency_key,
                job.fingerprint,
                job.limit_key,
                job.priority,
                k.base + "uniq:" + job.unique_key if job.unique_key else "",
                job.traceparent,
            )
            number = shapes.get(shape)
            if number is None:
                number = shapes[shape] = len(shapes) + 1
            tail += (job.id, job.payload, number)
        args: list[Any] = [
            k.job_prefix,
            k.idem_prefix,
            _ms(self.config.idempotency_ttl_s),
            NOTIFY_CAP,
            len(shapes),
        ]
        for typ, retries, timeout, delay_ms, run_at_ms, key, fingerprint, lkey, p, u, tp in shapes:
            args += (typ, retries, repr(float(timeout)), delay_ms, run_at_ms, key, fingerprint)
            args += (lkey, p, u, tp)  # limit_key, priority, unique key, traceparent
        args += tail
        mark = self._mark(queue, jobs)
        return [k.queued, k.scheduled, k.notify, k.stats, k.ledger, mark, k.settings], args

    def _mark(self, queue: str, jobs: Sequence[NewJob]) -> str:
        """The key of an enqueue call's mark. It is named after the call's jobs (random ids),
        so the same call repeated - the channel resending it, the client retrying it - finds
        the mark of the first."""
        return self.keys(queue).enqueue_mark(f"{jobs[0].id}.{len(jobs)}")

    def _pack_enqueue(self, queue: str, jobs: Sequence[NewJob]) -> bytes:
        keys, args = self._enqueue_args(queue, jobs)
        return pack(("EVALSHA", self.scripts.enqueue.sha, len(keys), *keys, *args))

    @staticmethod
    def _collect(
        raw: list[Any],
        indexes: list[int],
        results: list[EnqueueResult | None],
        jobs: Sequence[NewJob],
    ) -> None:
        now = int(raw[0])
        for index, item in zip(indexes, raw[2:], strict=True):
            if isinstance(item, list):  # an existing job: id, status, fingerprint
                results[index] = EnqueueResult(_s(item[0]), _s(item[1]), True, _s(item[2]), now)
            else:
                job = jobs[index]
                status = _STATUS.get(item) or _s(item)
                results[index] = EnqueueResult(job.id, status, False, job.fingerprint, now)

    # -- the worker's hot path ------------------------------------------------------------

    async def reserve(
        self, queue: str, count: int, *, lease_ms: int, worker_id: str, request_id: str
    ) -> ReserveResult:
        """Lease up to ``count`` jobs of ``queue`` (after a cheap promotion of due jobs).

        A call repeated with the same request id (its reply was lost) hands out the jobs the
        first call leased and leases nothing more; the record of the last call is this
        worker's on this queue, so replay is per queue.
        """
        k = self.keys(queue)
        keys = [
            k.queued,
            k.scheduled,
            k.retry,
            k.active,
            k.failed,
            k.stats,
            k.notify,
            k.token,
            k.reserve_record(worker_id),
            k.settings,
            k.ledger,
            k.leases,
        ]
        args: list[Any] = [
            k.job_prefix,
            k.idem_prefix,
            count,
            lease_ms,
            worker_id,
            request_id,
            NOTIFY_CAP,
            _ms(self.config.failed_ttl_s),
        ]
        raw = await self.scripts.reserve(keys=keys, args=args)
        return self._parse_reserve(queue, raw)

    @staticmethod
    def _parse_reserve(queue: str, raw: list[Any]) -> ReserveResult:
        next_due = int(raw[1])
        n_dropped = int(raw[3])
        result = ReserveResult(
            queue=queue,
            now_ms=int(raw[0]),
            next_due_ms=next_due if next_due >= 0 else None,
            replayed=bool(int(raw[2])),
            dropped=_dropped(queue, raw, 4, n_dropped),
        )
        pos = 4 + 3 * n_dropped
        jobs = result.jobs
        for at in range(pos, len(raw) - 10, 11):
            fields = raw[at : at + 11]
            try:
                (job_id, token, job_type, payload, attempt, retries, timeout, enq, fails, lost) = (
                    fields[:10]
                )
                job = ReservedJob(
                    job_id.decode(),
                    queue,
                    str(int(token)),
                    job_type.decode(),
                    payload,
                    int(attempt),
                    int(retries),
                    float(timeout),
                    int(enq),
                    int(fails),
                    int(lost),
                    traceparent=fields[10].decode() if fields[10] else "",
                )
            except (AttributeError, TypeError, ValueError):
                job = _reserved_job_leniently(queue, fields)
            jobs.append(job)
        return result

    async def renew(self, leases: Mapping[str, Sequence[Lease]], *, lease_ms: int) -> RenewResult:
        """Extend leases held under their tokens; returns the leases lost and the leases
        whose job is asked to cancel, per queue.

        One queue is one plain EVALSHA (one round trip); several go in one pipeline.
        """
        result = RenewResult()
        queues = [q for q, items in leases.items() if items]
        if not queues:
            return result
        replies = await self._per_queue(
            queues, lambda q, pipe: self._renew_call(q, leases[q], lease_ms, pipe)
        )
        for queue, (raw_lost, raw_cancel) in zip(queues, replies, strict=True):
            for ids, into in ((raw_lost, result.lost), (raw_cancel, result.cancel)):
                if ids:
                    named = {_s(x) for x in ids}
                    into[queue] = [lease for lease in leases[queue] if lease.job_id in named]
        return result

    async def set_progress(self, values: Mapping[str, Sequence[tuple[Lease, str]]]) -> list[str]:
        """Write progress values into job records, fenced by the lease (``progress.lua``):
        one script call per queue, one round trip. Returns the ids whose value was refused
        (their lease is no longer held under that token)."""
        queues = [q for q, items in values.items() if items]
        if not queues:
            return []
        replies = await self._per_queue(
            queues, lambda q, pipe: self._progress_call(q, values[q], pipe)
        )
        return [_s(x) for raw in replies for x in raw]

    async def _progress_call(
        self, queue: str, values: Sequence[tuple[Lease, str]], pipe: Any
    ) -> Any:
        k = self.keys(queue)
        keys = [k.leases]
        args: list[Any] = []
        for lease, value in values:
            keys.append(k.job(lease.job_id))
            args += (lease.job_id, lease.token, value)
        return await self.scripts.progress(keys=keys, args=args, client=pipe)

    async def cancel(self, job_id: str, queue: str | None = None) -> CancelResult:
        """Cancel a job (``cancel.lua``, atomic): a queued, scheduled or retrying one ends
        cancelled now; a running one gets ``cancel`` = 1 (its worker learns it at its next
        renewal and stops the run); a finished one is left alone (outcome ``finished``).
        The job is found first (one pipeline over the known queues unless ``queue`` is
        given); :class:`JobNotFound` when there is none."""
        if queue is None or (await self.partitions.layout(queue)).partitioned:
            found = await self.locate_jobs([job_id], queue)  # partitions: its partition
            if not found:
                raise JobNotFound(job_id)
            queue = found[0].queue
        k = self.keys(queue)
        raw = await self.scripts.cancel(
            keys=[
                k.queued,
                k.scheduled,
                k.retry,
                k.cancelled,
                k.stats,
                k.settings,
                k.ledger,
                k.job(job_id),
            ],
            args=[job_id, k.idem_prefix, _ms(self.config.failed_ttl_s)],
        )
        outcome = _s(raw[0])
        if outcome == "missing":
            raise JobNotFound(job_id)
        flat = raw[2]
        record = {flat[i]: flat[i + 1] for i in range(0, len(flat) - 1, 2)}
        return CancelResult(CancelOutcome(outcome), job_info(job_id, logical_name(queue), record))

    async def _per_queue(
        self, queues: Sequence[str], call: Callable[[str, Any], Awaitable[Any]]
    ) -> list[Any]:
        """One script call per queue: a plain EVALSHA for one queue (one round trip; a
        redis-py pipeline would add a SCRIPT EXISTS), one pipeline for several. On a cluster,
        one EVALSHA per queue, all at once, each sent to the master of its queue's slot (the
        cluster client follows redirections and loads a script a master lacks)."""
        if len(queues) == 1:
            return [await call(queues[0], None)]
        if self._nodes is not None:
            return await gather_in_order([partial(call, q, None) for q in queues])
        async with self.redis.pipeline(transaction=False) as pipe:
            for queue in queues:
                await call(queue, pipe)
            return list(await pipe.execute())

    async def _renew_call(
        self, queue: str, leases: Sequence[Lease], lease_ms: int, pipe: Any
    ) -> Any:
        k = self.keys(queue)
        keys = [k.active, k.leases]
        args: list[Any] = [lease_ms]
        for lease in leases:
            keys.append(k.job(lease.job_id))
            args += (lease.job_id, lease.token)
        return await self.scripts.renew(keys=keys, args=args, client=pipe)

    async def finish(self, ops: Mapping[str, Sequence[FinishOp]]) -> dict[str, list[Applied]]:
        """Apply outcomes ``{queue: [op]}`` in one round trip; what was applied, per op.

        The verdicts are the script's: a repeat of an op already applied answers what the
        first application did. A queue's ops travel as one MessagePack argument.
        """
        queues = [q for q, items in ops.items() if items]
        if not queues:
            return {}
        replies = await self._per_queue(queues, lambda q, pipe: self._finish_call(q, ops[q], pipe))
        return {q: [_APPLIED[x] for x in raw[1:]] for q, raw in zip(queues, replies, strict=True)}

    async def _finish_call(self, queue: str, ops: Sequence[FinishOp], pipe: Any) -> Any:
        k = self.keys(queue)
        keys = [
            k.active,
            k.queued,
            k.retry,
            k.completed,
            k.failed,
            k.stats,
            k.notify,
            k.settings,
            k.ledger,
            k.leases,
            k.cancelled,
        ]
        keys += [k.job(op.job_id) for op in ops]
        args: list[Any] = [
            k.idem_prefix,
            _ms(self.config.completed_ttl_s),
            _ms(self.config.failed_ttl_s),
            NOTIFY_CAP,
            _OPS_ENCODER.encode([_wire_op(op) for op in ops]),
        ]
        return await self.scripts.finish(keys=keys, args=args, client=pipe)

    def _blocking_client(self) -> Redis:
        """A client of its own for BLPOP (it holds its connection for the whole wait): the
        main client's connection settings, no socket timeout (the wait bounds itself)."""
        if self._blocking is None:
            pool = self.redis.connection_pool
            for_blocking = getattr(pool, "for_blocking", None)  # Sentinel: follows failovers
            if for_blocking is not None:
                self._blocking = Redis(connection_pool=for_blocking())
                return self._blocking
            kwargs = dict(pool.connection_kwargs)
            kwargs["socket_timeout"] = None
            self._blocking = Redis(
                connection_pool=ConnectionPool(
                    connection_class=pool.connection_class, max_connections=2, **kwargs
                )
            )
        return self._blocking

    async def wait_for_work(self, queues: Sequence[str], timeout_s: float) -> bool:
        """Block on the queues' wake-up lists until a token or the timeout; True when woken.

        On a cluster the queues' lists may be on several masters (and one BLPOP may not span
        two slots): one BLPOP per queue, concurrently; see
        :class:`workqueue.broker.cluster.ClusterWaits`.

        The broker's own blocking connection is used; a wait that outlasts its timeout by
        5 s (a dead link) is abandoned and its connection dropped.
        """
        keys = [self.keys(q).notify for q in queues]
        if self._waits is not None:  # one BLPOP per queue, each on its queue's master
            return await self._waits.wait(keys, timeout_s)
        blocking = self._blocking_client()
        timeout = max(0.01, round(timeout_s, 3))
        async with asyncio.timeout(timeout + 5.0):
            reply = await blocking.blpop(keys, timeout=timeout)
        return reply is not None

    # -- housekeeping ---------------------------------------------------------------------

    async def housekeep(self, queue: str, *, worker_id: str, duty_ms: int) -> HousekeepResult:
        """Take or keep the queue's housekeeping duty for ``duty_ms`` and do one bounded step
        (see housekeep.lua): recover expired leases, promote due jobs, trim retention, check
        a slice of the ledger. ``held`` is False when another process holds the duty."""
        k = self.keys(queue)
        c = self.config
        keys = [
            k.housekeeper,
            k.queued,
            k.scheduled,
            k.retry,
            k.active,
            k.completed,
            k.failed,
            k.stats,
            k.notify,
            k.settings,
            k.ledger,
            k.hk_cursor,
            k.leases,
            k.cancelled,
        ]
        args: list[Any] = [
            k.job_prefix,
            k.idem_prefix,
            worker_id,
            duty_ms,
            _ms(c.completed_ttl_s),
            _ms(c.failed_ttl_s),
            c.max_lost_leases,
            NOTIFY_CAP,
            c.recover_limit,
            c.promote_limit,
            c.trim_limit,
            c.check_limit,
            c.check_max_list,
            int(c.check_pause_s * 1000),
        ]
        raw = await self.scripts.housekeep(keys=keys, args=args)
        if not int(raw[0]):
            return HousekeepResult(queue=queue, held=False, now_ms=int(raw[1]))
        next_ms = int(raw[5])
        result = HousekeepResult(
            queue=queue,
            held=True,
            now_ms=int(raw[1]),
            promoted=int(raw[2]),
            trimmed=int(raw[3]),
            more=bool(int(raw[4])),
            next_ms=next_ms if next_ms >= 0 else None,
        )
        pos = 7
        for _ in range(int(raw[6])):
            job_id, outcome, typ, lost = raw[pos : pos + 4]
            result.recovered.append(
                Recovered(_s(job_id), queue, _s(typ), RecoveredOutcome(_s(outcome)), int(lost))
            )
            pos += 4
        n_dropped = int(raw[pos])
        result.dropped = _dropped(queue, raw, pos + 1, n_dropped)
        pos += 1 + 3 * n_dropped
        n_repaired = int(raw[pos])
        pos += 1
        result.repaired = [
            (_s(raw[i]), _s(raw[i + 1])) for i in range(pos, pos + 2 * n_repaired, 2)
        ]
        return result

    # -- settings and registry ------------------------------------------------------------

    def _settings_from(self, raw: Sequence[Any]) -> QueueSettings:
        c = self.config
        defaults = (_ms(c.completed_ttl_s), _ms(c.failed_ttl_s), c.max_lost_leases)
        values: list[int] = []
        configured = False
        for value, default in zip(raw, defaults, strict=True):
            try:
                number = int(value) if value is not None else -1
            except ValueError:  # a corrupt value: the scripts use the default too
                number = -1
            if number >= 0:
                configured = True
                values.append(number)
            else:
                values.append(default)
        return QueueSettings(
            completed_ttl_s=values[0] / 1000,
            failed_ttl_s=values[1] / 1000,
            max_lost_leases=values[2],
            configured=configured,
        )

    async def queue_settings(self, queues: Sequence[str]) -> dict[str, QueueSettings]:
        """The fleet-wide settings of these queues (this process's defaults where unset)."""
        if not queues:
            return {}
        async with self.redis.pipeline(transaction=False) as pipe:
            for queue in queues:
                pipe.hmget(self.keys(queue).settings, _SETTING_FIELDS)
            replies = await pipe.execute()
        return {q: self._settings_from(raw) for q, raw in zip(queues, replies, strict=True)}

    async def set_queue_settings(
        self,
        queue: str,
        *,
        completed_ttl_s: float | None = None,
        failed_ttl_s: float | None = None,
        max_lost_leases: int | None = None,
    ) -> QueueSettings:
        """Change a queue's fleet-wide settings (read by every process's scripts); returns
        them as now stored. Registers the queue (subject to ``max_queues``)."""
        mapping: dict[str, int] = {}
        for name, seconds in (
            ("completed_ttl_ms", completed_ttl_s),
            ("failed_ttl_ms", failed_ttl_s),
        ):
            if seconds is not None:
                if not seconds >= 0:
                    raise ConfigurationError(f"{name[:-3]}: must be 0 or more seconds")
                mapping[name] = _ms(seconds)
        if max_lost_leases is not None:
            if max_lost_leases < 1:
                raise ConfigurationError("max_lost_leases: must be at least 1")
            mapping["max_lost_leases"] = int(max_lost_leases)
        if queue not in self._known_queues:
            await self._register_queues([queue])
        # partitions (H3): partition 0 and a copy in every partition (scripts read their own)
        await self.partitions.write_settings(queue, mapping)
        return (await self.queue_settings([queue]))[queue]

    async def heartbeat(self, advert: WorkerAdvert, ttl_s: int) -> None:
        """Advertise a live worker for ``ttl_s`` and forget workers silent for longer.

        The registry is stamped with Redis ``TIME`` (one script on the registry key) so
        workers whose clocks disagree never evict each other; the advert expires by itself.
        """
        # Two plain calls, not a pipeline: a script in a redis-py pipeline costs an extra
        # SCRIPT EXISTS every time, and an idle worker's commands are what this path costs.
        await self.redis.set(
            self.globals.worker(advert.id), _ADVERT_ENCODER.encode(advert), ex=ttl_s
        )
        await self.scripts.heartbeat(keys=[self.globals.workers], args=[advert.id, ttl_s * 1000])

    async def unregister(self, worker_id: str) -> None:
        """Remove a stopping worker from the registry (its advert and its heartbeat entry)."""
        async with self.redis.pipeline(transaction=False) as pipe:
            pipe.delete(self.globals.worker(worker_id))
            pipe.zrem(self.globals.workers, worker_id)
            await pipe.execute()

    # -- operating (the reads are in ReadModel, workqueue/broker/reads.py) -----------------

    async def requeue_failed(self, queue: str, job_ids: Sequence[str]) -> list[str]:
        """Send failed jobs back to their queue; returns the ids that were requeued."""
        if not job_ids:
            return []
        k = self.keys(queue)
        raw = await self.scripts.requeue_failed(
            keys=[k.failed, k.queued, k.notify, *(k.job(i) for i in job_ids)],
            args=[NOTIFY_CAP, *job_ids],
        )
        return [_s(x) for x in raw]


class _Counted:
    """A command that counts how often it was packed (more than once: it was sent again,
    on a new connection)."""

    __slots__ = ("command", "packs")

    def __init__(self, command: Callable[[], bytes]) -> None:
        self.command = command
        self.packs = 0

    def __call__(self) -> bytes:
        self.packs += 1
        return self.command()


def _reserved_job_leniently(queue: str, fields: list[Any]) -> ReservedJob:
    """A reserved job from a record with odd field values (they read as 0)."""
    payload = fields[3]
    return ReservedJob(
        id=_s(fields[0]),
        queue=queue,
        token=_s(fields[1]),
        type=_s(fields[2]),
        payload=payload if isinstance(payload, bytes) else str(payload).encode(),
        attempt=_int(fields[4]),
        retries=_int(fields[5]),
        timeout=_float(fields[6]),
        enqueued_at_ms=_int(fields[7]),
        failures=_int(fields[8]),
        lost=_int(fields[9]),
        traceparent=_s(fields[10]) if isinstance(fields[10], bytes) else "",
    )


def _float(value: Any) -> float:
    try:
        return float(value)
    except (TypeError, ValueError):
        return 0.0
