"""Fleet-wide limits in Redis (SPEC 12): run-time settings, limit buckets, and the queue-side
steps that hold a job back (defer) and wake it (wake).

Key layout (``<p>`` the key prefix; a *bucket* is a job type, or ``<type>#<limit_key>``)::

    <p>:limits                     HASH  run-time limits: "<type>|rate" -> "100/s" | "none",
                                         "<type>|concurrency" -> "5" | "none" (absent: the
                                         declared limit applies; "none": no limit)
    <p>:{limit:<bucket>}:state     HASH  tat (GCRA theoretical arrival time, ms), cfg (the
                                         limits the bucket was last flushed for), more
    <p>:{limit:<bucket>}:holders   ZSET  "<queue>\\n<id>\\n<token>" -> slot deadline (ms)
    <p>:{limit:<bucket>}:waiting   ZSET  "<queue>\\n<id>" -> when it first waited (ms)
    <p>:{limit:<type>}:keys        ZSET  limit_key -> last refusal (ms): the keyed buckets of a
                                         type that had waiters (flushed on a change)

Every bucket has its own hash tag, so one customer's bucket is not a hot key shared with the
type's other customers, and each script touches one slot (the bucket's, or one queue's). The
bucket keys expire by themselves once idle (see limit_acquire.lua).
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Sequence
from typing import Any

import msgspec
from redis.asyncio import Redis
from redis.commands.core import AsyncScript

from workqueue.broker.broker import NOTIFY_CAP, Broker
from workqueue.broker.reads import _s
from workqueue.broker.scripts import source
from workqueue.errors import ConfigurationError
from workqueue.jobtypes import NAME_PATTERN
from workqueue.limits import LimitSpec, bucket_name, parse_concurrency, parse_rate

__all__ = ["LimitStore", "RuntimeLimits", "effective_limits", "holder_member", "limit_rows"]

#: the most waiters one flush call wakes (a bigger list takes several calls)
FLUSH_BATCH = 1000
#: how long the index of a type's keyed buckets remembers a key (ms)
KEYS_INDEX_TTL_MS = 7 * 24 * 3600 * 1000


class RuntimeLimits(msgspec.Struct, frozen=True):
    """A type's run-time limits as kept in ``<p>:limits``: per field ``None`` (not set: the
    declared limit applies), ``"none"`` (no limit, whatever is declared) or the value."""

    rate: str | None = None
    concurrency: str | None = None

    def describe(self) -> dict[str, object]:
        """JSON shape: ``{"rate": ..., "concurrency": ...}`` (an int where set to a number)."""
        conc = self.concurrency
        shown: object = int(conc) if conc is not None and conc != "none" else conc
        return {"rate": self.rate, "concurrency": shown}


def effective_limits(declared: LimitSpec | None, runtime: RuntimeLimits | None) -> LimitSpec:
    """The limits that apply: each run-time field overrides the declared one."""
    spec = declared or LimitSpec()
    if runtime is None:
        return spec
    rate, conc = spec.rate, spec.concurrency
    if runtime.rate is not None:
        rate = None if runtime.rate == "none" else parse_rate(runtime.rate)
    if runtime.concurrency is not None:
        conc = None if runtime.concurrency == "none" else int(runtime.concurrency)
    return LimitSpec(rate, conc)


def spec_text(spec: LimitSpec) -> str:
    """The limits as the text a bucket's ``cfg`` keeps (equal text: same limits)."""
    rate = f"{spec.rate.count}/{spec.rate.period_ms}" if spec.rate else "-"
    return f"{rate}|{spec.concurrency or '-'}"


def holder_member(queue: str, job_id: str, token: str) -> str:
    """A concurrency holder: one lease of one job."""
    return f"{queue}\n{job_id}\n{token}"


def _spec_args(spec: LimitSpec) -> list[int]:
    rate = spec.rate
    return [rate.count if rate else 0, rate.period_ms if rate else 0, spec.concurrency or 0]


class LimitStore:
    """The limits' Redis operations, over a :class:`Broker`'s connection and key prefix."""

    def __init__(self, broker: Broker) -> None:
        self.broker = broker
        self.redis: Redis = broker.redis
        self.prefix = broker.config.prefix
        self.settings_key = f"{self.prefix}:limits"
        register = self.redis.register_script
        self.keys_script: AsyncScript = register(source("limit_keys"))
        self.acquire_script: AsyncScript = register(source("limit_acquire"))
        self.release_script: AsyncScript = register(source("limit_release"))
        self.renew_script: AsyncScript = register(source("limit_renew"))
        self.flush_script: AsyncScript = register(source("limit_flush"))
        self.defer_script: AsyncScript = register(source("defer"))
        self.wake_script: AsyncScript = register(source("limit_wake"))

    # -- keys ------------------------------------------------------------------------------

    def bucket_keys(self, bucket: str) -> list[str]:
        """state, holders, waiting of one bucket (one hash slot)."""
        base = f"{self.prefix}:{{limit:{bucket}}}:"
        return [base + "state", base + "holders", base + "waiting"]

    def keyed_index(self, job_type: str) -> str:
        """The ZSET of a type's keyed buckets that had waiters."""
        return f"{self.prefix}:{{limit:{job_type}}}:keys"

    # -- run-time settings -----------------------------------------------------------------

    async def runtime(self) -> dict[str, RuntimeLimits]:
        """Every type's run-time limits (one HGETALL)."""
        raw = await self.redis.hgetall(self.settings_key)
        fields: dict[str, dict[str, str]] = {}
        for name, value in raw.items():
            typ, _, what = _s(name).rpartition("|")
            if typ and what in ("rate", "concurrency"):
                fields.setdefault(typ, {})[what] = _s(value)
        out: dict[str, RuntimeLimits] = {}
        for typ, f in fields.items():
            try:
                limits = RuntimeLimits(f.get("rate"), f.get("concurrency"))
                effective_limits(None, limits)  # a corrupt value is skipped, not fatal
            except (ConfigurationError, ValueError):
                continue
            out[typ] = limits
        return out

    async def set_runtime(
        self, job_type: str, *, rate: str | None = None, concurrency: str | None = None
    ) -> RuntimeLimits:
        """Set a type's run-time rate and/or concurrency (``"none"`` lifts that limit);
        validated first. Returns the type's run-time limits as now stored."""
        if not NAME_PATTERN.match(job_type):
            raise ConfigurationError(
                f"job type {job_type!r} must be 1-128 characters of A-Za-z0-9_.:-"
            )
        mapping: dict[str, str] = {}
        if rate is not None:
            if rate.strip().lower() == "none":
                mapping[f"{job_type}|rate"] = "none"
            else:
                mapping[f"{job_type}|rate"] = str(parse_rate(rate, what="--rate"))
        if concurrency is not None:
            if concurrency.strip().lower() == "none":
                mapping[f"{job_type}|concurrency"] = "none"
            else:
                try:
                    number = int(concurrency)
                except ValueError:
                    raise ConfigurationError(
                        f"--concurrency {concurrency!r} must be an integer >= 1 or 'none'"
                    ) from None
                mapping[f"{job_type}|concurrency"] = str(
                    parse_concurrency(number, what="--concurrency")
                )
        if not mapping:
            raise ConfigurationError("give --rate and/or --concurrency")
        await self.redis.hset(self.settings_key, mapping=mapping)  # type: ignore[arg-type]
        return (await self.runtime()).get(job_type, RuntimeLimits())

    async def clear_runtime(self, job_type: str) -> bool:
        """Remove a type's run-time limits (its declared ones apply again); True if any."""
        removed = await self.redis.hdel(
            self.settings_key, f"{job_type}|rate", f"{job_type}|concurrency"
        )
        return bool(removed)

    async def occupancy(self, buckets: Sequence[str]) -> list[tuple[int, int]]:
        """Per bucket: the concurrency slots its holders take now (live, or dead and not yet
        expired) and the jobs waiting in it."""
        async with self.redis.pipeline(transaction=False) as pipe:
            for bucket in buckets:
                _state, holders, waiting = self.bucket_keys(bucket)
                pipe.zcard(holders)
                pipe.zcard(waiting)
            raw = [int(n) for n in await pipe.execute()]
        return [(raw[i], raw[i + 1]) for i in range(0, len(raw), 2)]

    # -- the worker's limit step -----------------------------------------------------------

    async def limit_keys(self, jobs: Sequence[tuple[str, str]]) -> list[str]:
        """The ``limit_key`` of each ``(queue, job id)`` ('' when none): one script call per
        queue (limit_keys.lua), one round trip."""
        if not jobs:
            return []
        by_queue: dict[str, list[int]] = {}
        for index, (queue, _job_id) in enumerate(jobs):
            by_queue.setdefault(queue, []).append(index)

        def call(queue: str, indexes: list[int]) -> Any:
            job_key = self.broker.keys(queue).job
            keys = [job_key(jobs[i][1]) for i in indexes]
            return lambda pipe: self.keys_script(keys=keys, client=pipe)

        replies = await self._calls([call(q, ix) for q, ix in by_queue.items()])
        out = [""] * len(jobs)
        for indexes, raw in zip(by_queue.values(), replies, strict=True):
            for i, value in zip(indexes, raw, strict=True):
                if value:
                    out[i] = _s(value)
        return out

    async def _calls(self, calls: Sequence[Callable[[Any], Awaitable[Any]]]) -> list[Any]:
        """Script calls in one round trip: a plain EVALSHA for one, a pipeline for more."""
        if not calls:
            return []
        if len(calls) == 1:
            return [await calls[0](None)]
        async with self.redis.pipeline(transaction=False) as pipe:
            for call in calls:
                await call(pipe)
            return list(await pipe.execute())

    async def acquire(
        self,
        requests: Sequence[tuple[str, LimitSpec, Sequence[tuple[str, str, str]]]],
        lease_ms: int,
    ) -> list[tuple[int, list[int]]]:
        """Per ``(bucket, limits, [(queue, id, token)])``: Redis's now and, per job, 1
        (admitted) or the time it may come back (ms). One round trip for all buckets."""

        def call(bucket: str, spec: LimitSpec, jobs: Sequence[tuple[str, str, str]]) -> Any:
            args: list[Any] = [*_spec_args(spec), lease_ms]
            for job in jobs:
                args += job
            return lambda pipe: self.acquire_script(
                keys=self.bucket_keys(bucket), args=args, client=pipe
            )

        replies = await self._calls([call(*r) for r in requests])
        return [(int(raw[0]), [int(x) for x in raw[1:]]) for raw in replies]

    async def release(
        self, requests: Sequence[tuple[str, LimitSpec, Sequence[str]]]
    ) -> list[tuple[int, list[tuple[str, str]]]]:
        """Give back holders ``(bucket, limits, [member])``; the waiters to wake, per bucket
        that has some: when (ms, Redis clock: now, or the rate's next permit) and their
        ``(queue, id)``."""

        def call(bucket: str, spec: LimitSpec, members: Sequence[str]) -> Any:
            args: list[Any] = [*_spec_args(spec), *members]
            return lambda pipe: self.release_script(
                keys=self.bucket_keys(bucket), args=args, client=pipe
            )

        replies = await self._calls([call(*r) for r in requests])
        return [
            (int(raw[0]), [(_s(raw[i]), _s(raw[i + 1])) for i in range(1, len(raw), 2)])
            for raw in replies
            if raw
        ]

    async def renew(self, requests: Sequence[tuple[str, Sequence[str]]], lease_ms: int) -> None:
        """Extend the holders ``(bucket, [member])`` a live worker still runs."""

        def call(bucket: str, members: Sequence[str]) -> Any:
            return lambda pipe: self.renew_script(
                keys=[self.bucket_keys(bucket)[1]], args=[lease_ms, *members], client=pipe
            )

        await self._calls([call(*r) for r in requests])

    async def flush(self, bucket: str, spec: LimitSpec) -> list[tuple[str, str]]:
        """A bucket's limits changed: every waiter to wake (empty when this change was
        already flushed by another worker)."""
        woken: list[tuple[str, str]] = []
        keys = self.bucket_keys(bucket)
        while True:
            raw = await self.flush_script(
                keys=[keys[0], keys[2]], args=[spec_text(spec), FLUSH_BATCH]
            )
            woken += [(_s(raw[i]), _s(raw[i + 1])) for i in range(2, len(raw), 2)]
            if not int(raw[0]) or not int(raw[1]):
                return woken

    async def note_keyed(self, items: Sequence[tuple[str, str]]) -> None:
        """Remember keyed buckets ``(type, limit_key)`` that have waiters (for flushes)."""
        if not items:
            return
        async with self.redis.pipeline(transaction=False) as pipe:
            for job_type, key in set(items):
                index = self.keyed_index(job_type)
                pipe.zadd(index, {key: 0})
                pipe.pexpire(index, KEYS_INDEX_TTL_MS)
            await pipe.execute()

    async def keyed(self, job_type: str) -> list[str]:
        """The limit keys of a type's buckets that had waiters."""
        return [_s(k) for k in await self.redis.zrange(self.keyed_index(job_type), 0, -1)]

    async def forget_keyed(self, job_type: str, keys: Sequence[str]) -> None:
        """Drop keys from a type's index (their buckets were flushed empty)."""
        if keys:
            await self.redis.zrem(self.keyed_index(job_type), *keys)

    # -- the queue side: hold back, wake -----------------------------------------------------

    async def defer(self, items: dict[str, list[tuple[str, str, int]]]) -> dict[str, list[int]]:
        """Hold back active jobs ``{queue: [(id, token, due ms)]}`` (see defer.lua): per job
        1 when deferred, 2 when it ended cancelled instead (a cancel was pending), 0 when its
        lease was no longer held under that token."""
        queues = [q for q, jobs in items.items() if jobs]

        def call(queue: str) -> Any:
            k = self.broker.keys(queue)
            jobs = items[queue]
            keys = [k.active, k.leases, k.scheduled, k.notify, k.stats, k.cancelled]
            keys += [k.settings, k.ledger, *(k.job(job_id) for job_id, _, _ in jobs)]
            failed_ttl_ms = int(self.broker.config.failed_ttl_s * 1000)
            args: list[Any] = [NOTIFY_CAP, k.idem_prefix, failed_ttl_ms]
            for job in jobs:
                args += job
            return lambda pipe: self.defer_script(keys=keys, args=args, client=pipe)

        replies = await self._calls([call(q) for q in queues])
        return {q: [int(x) for x in raw] for q, raw in zip(queues, replies, strict=True)}

    async def wake(self, jobs: Sequence[tuple[str, str]], at_ms: int = 0) -> int:
        """Make waiting jobs ``(queue, id)`` due at ``at_ms`` (0: now; see limit_wake.lua);
        how many were."""
        by_queue: dict[str, list[str]] = {}
        for queue, job_id in jobs:
            by_queue.setdefault(queue, []).append(job_id)

        def call(queue: str, ids: list[str]) -> Any:
            k = self.broker.keys(queue)
            keys = [k.scheduled, k.notify, *(k.job(i) for i in ids)]
            args: list[Any] = [NOTIFY_CAP, at_ms, *ids]
            return lambda pipe: self.wake_script(keys=keys, args=args, client=pipe)

        replies = await self._calls([call(q, ids) for q, ids in by_queue.items()])
        return sum(int(r) for r in replies)


async def limit_rows(broker: Broker, declared: dict[str, LimitSpec]) -> list[dict[str, Any]]:
    """One row per job type with a limit (declared here or set at run time): the declared,
    run-time and effective limits, and for its jobs without a ``limit_key`` the concurrency
    slots held and the jobs waiting. What ``workqueue limits list`` and ``GET /limits`` show."""
    store = LimitStore(broker)
    runtime = await store.runtime()
    names = sorted({n for n, s in declared.items() if s.limited} | set(runtime))
    counts = await store.occupancy([bucket_name(n) for n in names]) if names else []
    return [
        {
            "type": name,
            "declared": declared[name].describe() if name in declared else None,
            "runtime": runtime[name].describe() if name in runtime else None,
            "effective": effective_limits(declared.get(name), runtime.get(name)).describe(),
            "held": held,
            "waiting": waiting,
        }
        for name, (held, waiting) in zip(names, counts, strict=True)
    ]
