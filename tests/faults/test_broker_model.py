"""T17: a Hypothesis state machine drives the real broker against real Redis and a model.

Rules: enqueue (now, delayed, at a time, idempotent, same id again), reserve (short or long
leases), ack, fail (retry now / soon / much later, permanent), renew, crash (the holder of a
job vanishes: its token is forgotten), wait (real time passes), recover (every short lease
has expired: a housekeeping step recovers them), release (graceful stop), requeue of failed
jobs, and late operations with old tokens, and the consistency sweep (which must repair
nothing). A second machine runs on a private redis-server and adds a rule that SIGKILLs and
restarts it (append-only file, ``appendfsync always``).

Leases expire honestly: a short lease is 40 ms of Redis time and the machine sleeps for real.
Every deadline the broker sets comes from Redis ``TIME``; the model knows each one exactly
(reserve and enqueue return Redis' clock) or as an interval (renew and fail are bracketed
by ``TIME`` calls). A job whose deadline certainly passed must be recovered or promoted; one
whose deadline lies inside the interval may go either way, and Redis then tells which.

After every step, from Redis alone (SCAN of the run's key prefix, never FLUSH):
- every accepted job's record exists and its ``status`` is the model's, and its id sits in
  exactly one index, the one of that status (queued list once, or one sorted set);
- an in-flight job has exactly one lease entry, deadline inside the model's interval, and the
  record's fencing token is the one the model handed out;
- the lease hash holds exactly the in-flight jobs, each under its token, type and
  idempotency key (an entry exists iff the record is active under that token);
- attempts, failures and lost-lease counts of each record are the model's;
- the queue's counters equal the model's; done and failed counters never decrease; the
  figures of ``/metrics`` (``system_figures``) are the model's (a rule checks them);
- no job record expires by itself (housekeeping trims finished ones); idempotency keys expire;
  the ledger lists exactly the job records; no other keys but the indexes, registries and the
  expiring marks (last reserve, enqueue call, housekeeping duty);
- an operation with a token that no longer holds is refused (stale or duplicate) and changes
  nothing.
"""

from __future__ import annotations

import asyncio
import os
import time
import uuid
from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any

import pytest
from hypothesis import HealthCheck, Phase, event, settings
from hypothesis import strategies as st
from hypothesis.stateful import (
    RuleBasedStateMachine,
    initialize,
    invariant,
    rule,
)
from redis.asyncio import Redis
from redis_server import RedisServer

from workqueue.broker import Broker, BrokerConfig
from workqueue.broker.broker import NOTIFY_CAP
from workqueue.broker.connection import create_redis
from workqueue.broker.contract import FinishOp, Lease, OpKind
from workqueue.job import NewJob
from workqueue.worker.metrics import system_figures

REDIS_URL = os.environ.get("WORKQUEUE_TEST_REDIS_URL", "redis://127.0.0.1:6379/0")
Q = "model"
W = "model-worker"
SHORT_LEASE_MS = 40
LONG_LEASE_MS = 600_000
MAX_LOST = 2
TYPES = ("alpha", "beta")
#: retry delays: due at once, due after a short real wait, not due during the run
RETRY_DELAYS = (0, 30, 3_600_000)
#: enqueue delays: none, short, not due during the run
ENQUEUE_DELAYS = (-1, 40, 3_600_000)
REPORTS = (("ack", -1), ("ack", -1), *(("fail", d) for d in (*RETRY_DELAYS, -1)))
UNFINISHED_INDEX = {"queued": "queued", "scheduled": "scheduled", "retrying": "retry"}
INDEX_OF_STATUS = {**UNFINISHED_INDEX, "active": "active", "completed": "completed"}
INDEX_OF_STATUS["failed"] = "failed"
UNFINISHED = frozenset({"queued", "scheduled", "retrying", "active"})
EXAMPLES = int(os.environ.get("WORKQUEUE_MODEL_EXAMPLES", "0"))


@dataclass
class MJob:
    """The model of one accepted job."""

    id: str
    type: str
    retries: int
    status: str
    attempts: int = 0
    failures: int = 0
    lost: int = 0
    token: str = ""  # the record's token field ('' when none)
    #: what the last finish op applied under ``token`` (a repeat of it answers this)
    applied: str = ""
    #: the bounds of the deadline (lease, or due time) in Redis ms
    lo: int = 0
    hi: int = 0


@dataclass
class Observed:
    """What Redis holds under the run's prefix, read after a step."""

    records: dict[str, dict[str, str]] = field(default_factory=dict)
    ttls: dict[str, int] = field(default_factory=dict)
    queued: list[str] = field(default_factory=list)
    zsets: dict[str, dict[str, float]] = field(default_factory=dict)
    stats: dict[str, int] = field(default_factory=dict)
    idem: dict[str, tuple[str, int]] = field(default_factory=dict)
    others: dict[str, int] = field(default_factory=dict)
    ledger: set[str] = field(default_factory=set)
    leases: dict[str, str] = field(default_factory=dict)


#: every choice among current jobs is an index drawn the same way whatever the state is, so
#: that data generation does not depend on timing (leases that expired or not)
PICK = st.integers(0, 1 << 16)
MASK = st.integers(1, (1 << 8) - 1)


def _pick(items: list[Any], index: int) -> Any:
    return items[index % len(items)]


def _subset(items: list[Any], mask: int) -> list[Any]:
    chosen = [x for n, x in enumerate(items) if mask >> (n % 8) & 1]
    return chosen or items[:1]


def _s(value: Any) -> str:
    return value.decode() if isinstance(value, bytes) else str(value)


async def _redis_ms(redis: Redis) -> int:
    seconds, micros = await redis.time()
    return int(seconds) * 1000 + int(micros) // 1000


class BrokerModel(RuleBasedStateMachine):
    """The broker against a model; one key prefix per example, deleted at teardown."""

    def url(self) -> str:
        return REDIS_URL

    def __init__(self) -> None:
        super().__init__()
        self.loop = asyncio.new_event_loop()
        self.prefix = f"wqtest-model-{uuid.uuid4().hex[:10]}"
        self.redis = create_redis(self.url())
        self.broker = Broker(self.redis, BrokerConfig(prefix=self.prefix, max_lost_leases=MAX_LOST))
        self.keys = self.broker.keys(Q)
        self.jobs: dict[str, MJob] = {}
        self.idem: dict[str, str] = {}
        self.held: dict[str, str] = {}  # job id -> token of a live holder
        self.issued: list[tuple[str, str]] = []  # every (job id, token) ever handed out
        self.counters: Counter[str] = Counter()
        self.last_token = 0
        self.last_finished = (0, 0)
        self.steps = 0
        self.last_enqueue: list[NewJob] = []

    def run(self, coro: Any) -> Any:
        return self.loop.run_until_complete(coro)

    def teardown(self) -> None:
        async def clean() -> None:
            keys = [k async for k in self.redis.scan_iter(match=f"{self.prefix}:*", count=1000)]
            if keys:
                await self.redis.delete(*keys)
            await self.redis.aclose()

        try:
            self.run(clean())
        finally:
            self.loop.close()

    # -- helpers ---------------------------------------------------------------------------

    def _of(self, status: str) -> list[MJob]:
        return [j for j in self.jobs.values() if j.status == status]

    def _count(self, name: str, typ: str | None = None) -> None:
        self.counters[name] += 1
        if typ is not None:
            self.counters[f"{name}|{typ}"] += 1

    def _lose_holder(self, job: MJob) -> None:
        self.held.pop(job.id, None)

    # -- rules -----------------------------------------------------------------------------

    @initialize(
        count=st.integers(1, 6),
        delay=st.sampled_from(ENQUEUE_DELAYS),
        take=st.integers(0, 3),
        short=st.booleans(),
    )
    def some_jobs(self, count: int, delay: int, take: int, short: bool) -> None:
        """Start with a few jobs, some of them already held."""
        self.enqueue([("alpha", n % 3, delay, "none", "none", 0) for n in range(count)])
        self._reserve(take, SHORT_LEASE_MS if short else LONG_LEASE_MS)

    @rule(
        specs=st.lists(
            st.tuples(
                st.sampled_from(TYPES),
                st.integers(0, 2),
                st.sampled_from(ENQUEUE_DELAYS),
                st.sampled_from(("none", "past", "future")),
                st.sampled_from(("none", "new", "reuse")),
                PICK,
            ),
            min_size=1,
            max_size=3,
        ),
    )
    def enqueue(self, specs: list[tuple[str, int, int, str, str, int]]) -> None:
        jobs: list[NewJob] = []
        for typ, retries, delay, run_at, idem, pick in specs:
            job_id = uuid.uuid4().hex
            key = ""
            if idem == "new":
                key = uuid.uuid4().hex[:8]
            elif idem == "reuse" and self.idem:
                key = _pick(sorted(self.idem), pick)
            run_at_ms = {"none": -1, "past": 1_000, "future": 4_000_000_000_000}[run_at]
            jobs.append(
                NewJob(
                    id=job_id,
                    type=typ,
                    queue=Q,
                    payload=b'{"n": 1}',
                    retries=retries,
                    timeout=5.0,
                    delay_ms=delay,
                    run_at_ms=run_at_ms,
                    idempotency_key=key,
                    fingerprint="fp-" + key,
                )
            )
        self.last_enqueue = jobs
        results = self.run(self.broker.enqueue(jobs))
        for job, result in zip(jobs, results, strict=True):
            job_id, status, duplicate = result.id, result.status, result.duplicate
            now = result.enqueued_at_ms
            existing = None
            if job.idempotency_key and job.idempotency_key in self.idem:
                existing = self.idem[job.idempotency_key]
            elif job.id in self.jobs:
                existing = job.id
            if existing is not None:
                assert duplicate, f"{job.id}: a second job was made for a known id or key"
                event("duplicate enqueue")
                assert job_id == existing and status == self.jobs[existing].status
                continue
            assert not duplicate and job_id == job.id
            due = now + job.delay_ms if job.delay_ms > 0 else job.run_at_ms
            expected = "scheduled" if due > now else "queued"
            assert status == expected
            self.jobs[job_id] = MJob(job_id, job.type, job.retries, status, lo=due, hi=due)
            if job.idempotency_key:
                self.idem[job.idempotency_key] = job_id
            self._count("enqueued")

    @rule()
    def repeat_enqueue(self) -> None:
        """The last enqueue call again (a client retrying after a lost reply): it writes
        nothing and answers the jobs that call made (or found)."""
        if not self.last_enqueue:
            return
        results = self.run(self.broker.enqueue(self.last_enqueue))
        seen_keys: dict[str, str] = {}
        for job, result in zip(self.last_enqueue, results, strict=True):
            assert result.duplicate, f"{job.id}: a repeated call wrote again"
            expected = job.id if job.id in self.jobs else self.idem[job.idempotency_key]
            if job.idempotency_key:
                expected = seen_keys.setdefault(job.idempotency_key, expected)
                expected = self.idem.get(job.idempotency_key, expected)
            assert result.id == expected and result.status == self.jobs[expected].status
        event("repeated enqueue call")

    def _housekeep(self) -> None:
        before = {j.id for j in self._of("scheduled") + self._of("retrying")}
        res = self.run(self.broker.housekeep(Q, worker_id=W, duty_ms=LONG_LEASE_MS))
        assert res.held and not res.dropped and not res.more
        # a consistent state has nothing to repair
        assert res.repaired == [], f"the check 'repaired' consistent jobs: {res.repaired}"
        now = res.now_ms
        # 1. recovery of expired leases: all certainly expired ones, none still certainly live
        recovered = [r.job_id for r in res.recovered]
        assert len(set(recovered)) == len(recovered)
        for job in self._of("active"):
            if job.hi <= now:
                assert job.id in recovered, f"{job.id}: expired lease not recovered"
        for rec in res.recovered:
            job = self.jobs.get(rec.job_id)
            assert job is not None and job.status == "active", f"recovered {rec}: not in flight"
            assert job.lo <= now, f"{job.id}: live lease reclaimed {job.lo - now} ms early"
            assert rec.type == job.type
            job.lost += 1
            job.token = ""
            self._count("lost_leases")
            self._lose_holder(job)
            event(f"lease recovered: {rec.outcome}")
            assert rec.lost == job.lost
            if job.lost >= MAX_LOST:
                assert rec.outcome == "failed"
                job.status = "failed"
                self._count("failed", job.type)
            else:
                assert rec.outcome == "requeued"
                job.status = "queued"
        # 2. promotion of every due delayed and retrying job
        self._promoted(before, now, set())

    def _promoted(self, before: set[str], now: int, reserved: set[str]) -> None:
        """Due delayed and retrying jobs are queued (Redis tells the undecided ones)."""

        async def still_waiting(ids: list[str]) -> list[bool]:
            async with self.redis.pipeline(transaction=False) as pipe:
                for job_id in ids:
                    index = self.keys.scheduled
                    if self.jobs[job_id].status == "retrying":
                        index = self.keys.retry
                    pipe.zscore(index, job_id)
                return [score is not None for score in await pipe.execute()]

        undecided = [i for i in before if self.jobs[i].lo <= now < self.jobs[i].hi]
        waiting = dict(zip(undecided, self.run(still_waiting(undecided)), strict=True))
        for job_id in before:
            job = self.jobs[job_id]
            if job.hi <= now or (job.lo <= now and (job_id in reserved or not waiting[job_id])):
                event(f"promoted {'on the edge' if job.hi > now else 'when due'}")
                job.status = "queued"
            else:
                assert job_id not in reserved, f"{job_id}: ran {job.lo - now} ms before due"

    def _reserve(self, count: int, lease_ms: int) -> None:
        before = {j.id for j in self._of("scheduled") + self._of("retrying")}
        res = self.run(
            self.broker.reserve(
                Q, count, lease_ms=lease_ms, worker_id=W, request_id=uuid.uuid4().hex
            )
        )
        now = res.now_ms
        assert not res.dropped and not res.replayed
        # 1. (lease recovery is housekeeping's: an expired lease is not touched here)
        # 2. promotion of due delayed and retrying jobs
        self._promoted(before, now, {j.id for j in res.jobs})
        # 3. leases: as many as asked for and queued, each queued before, new tokens
        queued = {j.id for j in self._of("queued")}
        assert len(res.jobs) == min(count, len(queued)), (len(res.jobs), count, len(queued))
        for got in res.jobs:
            job = self.jobs[got.id]
            assert got.id in queued and got.queue == Q and got.type == job.type
            assert int(got.token) > self.last_token, "fencing tokens must only grow"
            self.last_token = int(got.token)
            job.attempts += 1
            assert (got.attempt, got.failures, got.lost, got.retries) == (
                job.attempts,
                job.failures,
                job.lost,
                job.retries,
            )
            job.status = "active"
            job.token = got.token
            job.lo = job.hi = now + lease_ms
            self.held[got.id] = got.token
            self.issued.append((got.id, got.token))

    @rule(count=st.integers(0, 3), short=st.booleans())
    def reserve(self, count: int, short: bool) -> None:
        event(f"reserve of {count}, {'short' if short else 'long'} lease")
        self._reserve(count, SHORT_LEASE_MS if short else LONG_LEASE_MS)

    def _finish(self, op: FinishOp) -> str:
        t0 = self.run(_redis_ms(self.redis))
        (outcome,) = self.run(self.broker.finish({Q: [op]}))[Q]
        t1 = self.run(_redis_ms(self.redis))
        job = self.jobs[op.job_id]
        event(f"{op.op}: {outcome}")
        if job.token != op.token:
            assert outcome == "stale", f"{op}: a stale token was accepted ({outcome})"
            return outcome
        if job.status != "active":
            # a repeat of the op applied under this token: the first application's verdict
            assert outcome == job.applied, f"{op}: {outcome} for a finished attempt"
            return outcome
        self.held.pop(op.job_id, None)
        job.applied = str(outcome)
        if op.op == "ack":
            assert outcome == "completed"
            job.status = "completed"
            self._count("done", job.type)
        elif op.op == "release":
            assert outcome == "released"
            job.status = "queued"  # the token stays, so a repeat answers "released"
        else:
            job.failures += 1
            self._count("failed_attempts", job.type)
            if op.delay_ms >= 0 and job.failures <= job.retries:
                assert outcome == "retrying"
                job.status = "retrying"
                job.lo, job.hi = t0 + op.delay_ms, t1 + op.delay_ms
                self._count("retried")
            else:
                assert outcome == "failed"
                job.status = "failed"
                self._count("failed", job.type)
        return outcome

    @rule(pick=PICK, outcome=st.sampled_from(REPORTS))
    def report(self, pick: int, outcome: tuple[str, int]) -> None:
        """The holder of a job reports: ack, or fail with a retry delay (-1: permanent)."""
        if not self.held:
            return
        job_id = _pick(sorted(self.held), pick)
        op, delay = outcome
        data = b'"ok"' if op == "ack" else "boom"
        self._finish(FinishOp(OpKind(op), job_id, self.held[job_id], data, delay))

    @rule(mask=MASK, short=st.booleans())
    def renew(self, mask: int, short: bool) -> None:
        if not self.held:
            return
        ids = _subset(sorted(self.held), mask)
        lease = SHORT_LEASE_MS if short else LONG_LEASE_MS
        t0 = self.run(_redis_ms(self.redis))
        leases = [Lease(i, self.held[i]) for i in ids]
        lost = self.run(self.broker.renew({Q: leases}, lease_ms=lease)).lost
        t1 = self.run(_redis_ms(self.redis))
        # A held job is in flight under its token: renewal must hold, even past the deadline
        # (nobody has taken the job over yet).
        assert lost == {}, f"renewal of live leases refused: {lost}"
        for job_id in ids:
            self.jobs[job_id].lo, self.jobs[job_id].hi = t0 + lease, t1 + lease

    @rule(pick=PICK)
    def crash(self, pick: int) -> None:
        """The job's holder vanishes; the lease stays until it expires."""
        if self.held:
            event("crash")
            del self.held[_pick(sorted(self.held), pick)]

    @rule()
    def release_all(self) -> None:
        """A graceful stop: every held job is handed back."""
        ops = [FinishOp(OpKind.RELEASE, i, t) for i, t in sorted(self.held.items())]
        for op in ops:
            assert self._finish(op) == "released"
        assert not self.held

    @rule(ms=st.integers(5, 60))
    def wait(self, ms: int) -> None:
        time.sleep(ms / 1000)

    @rule()
    def recover(self) -> None:
        """Sleep until every short lease has surely expired; a housekeeping step follows
        (and must recover each of them: ``_housekeep`` checks every expired lease)."""
        now = self.run(_redis_ms(self.redis))
        short = [j.hi for j in self._of("active") if j.hi < now + LONG_LEASE_MS // 2]
        if short:
            time.sleep(max(0, max(short) - now + 2) / 1000)
        self._housekeep()

    @rule(mask=MASK)
    def requeue_failed(self, mask: int) -> None:
        failed = sorted(j.id for j in self._of("failed"))
        if not failed:
            return
        ids = list(dict.fromkeys(_subset(failed + sorted(self.jobs)[:2], mask)))
        done = self.run(self.broker.requeue_failed(Q, ids))
        expected = [i for i in ids if self.jobs[i].status == "failed"]
        assert done == expected
        for job_id in expected:
            job = self.jobs[job_id]
            job.status, job.failures, job.lost, job.token = "queued", 0, 0, ""
            job.applied = ""

    @rule()
    def housekeep(self) -> None:
        """A housekeeping step: recovers expired leases, promotes due jobs, and its
        consistency check finds nothing to repair in a consistent state."""
        self._housekeep()

    @rule()
    def metrics(self) -> None:
        """The figures ``/metrics`` and ``workqueue stats`` show are the model's."""
        figures = self.run(system_figures(self.broker))
        c = self.counters
        expected = {
            "total_jobs_in_queue": len(self._of("queued")),
            "jobs_done": c["done"],
            "jobs_failed": c["failed"],
            "running": len(self._of("active")),
            "scheduled": len(self._of("scheduled")),
            "retrying": len(self._of("retrying")),
            "failed_attempts": c["failed_attempts"],
            "retried": c["retried"],
            "lost_leases": c["lost_leases"],
            "enqueued": c["enqueued"],
        }
        shown = {name: figures[name] for name in expected}
        assert shown == expected, (shown, expected)
        for typ in TYPES:
            row = figures["types"].get(typ, {})
            for name in ("done", "failed", "failed_attempts"):
                assert row.get(name, 0) == c[f"{name}|{typ}"], (typ, row, c)

    def _stale(self) -> list[tuple[str, str]]:
        return [
            (i, t)
            for i, t in self.issued
            if not (self.jobs[i].status == "active" and self.jobs[i].token == t)
        ]

    @rule(pick=PICK, op=st.sampled_from(("ack", "fail", "release", "renew")))
    def stale_token(self, pick: int, op: str) -> None:
        """A holder whose lease was lost (or that already reported) comes back."""
        stale = self._stale()
        if not stale:
            return
        job_id, token = _pick(stale, pick)
        if op == "renew":
            lease = Lease(job_id, token)
            lost = self.run(self.broker.renew({Q: [lease]}, lease_ms=LONG_LEASE_MS)).lost
            assert lost == {Q: [lease]}, "a stale lease was renewed"
            return
        outcome = self._finish(FinishOp(OpKind(op), job_id, token, b"late", 0))
        event(f"late {op}: {outcome}")

    # -- invariants ------------------------------------------------------------------------

    async def _observe(self) -> Observed:
        seen = Observed()
        names = [_s(k) async for k in self.redis.scan_iter(match=f"{self.prefix}:*", count=1000)]
        k = self.keys
        jobs = [n for n in names if n.startswith(k.job_prefix)]
        idems = [n for n in names if n.startswith(k.idem_prefix)]
        others = [n for n in names if n not in jobs and n not in idems]
        async with self.redis.pipeline(transaction=False) as pipe:
            for name in jobs:
                pipe.hgetall(name)
                pipe.pttl(name)
            for name in idems:
                pipe.get(name)
                pipe.pttl(name)
            for name in others:
                pipe.pttl(name)
            pipe.lrange(k.queued, 0, -1)
            for index in ("scheduled", "retry", "active", "completed", "failed"):
                pipe.zrange(getattr(k, index), 0, -1, withscores=True)
            pipe.zrange(k.ledger, 0, -1)
            pipe.hgetall(k.leases)
            pipe.hgetall(k.stats)
            replies = await pipe.execute()
        it = iter(replies)
        for name in jobs:
            record, ttl = next(it), next(it)
            job_id = name[len(k.job_prefix) :]
            seen.records[job_id] = {_s(a): _s(b) for a, b in record.items()}
            seen.ttls[job_id] = ttl
        for name in idems:
            value, ttl = next(it), next(it)
            seen.idem[name[len(k.idem_prefix) :]] = (_s(value), ttl)
        for name in others:
            seen.others[name] = next(it)
        seen.queued = [_s(x) for x in next(it)]
        for index in ("scheduled", "retry", "active", "completed", "failed"):
            seen.zsets[index] = {_s(m): s for m, s in next(it)}
        seen.ledger = {_s(m) for m in next(it)}
        seen.leases = {_s(a): _s(b) for a, b in next(it).items()}
        seen.stats = {_s(a): int(b) for a, b in next(it).items()}
        return seen

    @invariant()
    def redis_matches_model(self) -> None:
        self.steps += 1
        seen = self.run(self._observe())
        assert set(seen.records) == set(self.jobs), "job records differ from accepted jobs"
        queued = Counter(seen.queued)
        for job in self.jobs.values():
            rec = seen.records[job.id]
            assert rec["status"] == job.status, (job.id, rec["status"], job.status)
            places = [name for name, members in seen.zsets.items() if job.id in members]
            places += ["queued"] * queued[job.id]
            assert places == [INDEX_OF_STATUS[job.status]], f"{job.id} ({job.status}) in {places}"
            fields = (int(rec["attempts"]), int(rec["failures"]), int(rec["lost"]))
            assert fields == (job.attempts, job.failures, job.lost), (job, rec)
            assert rec.get("token", "") == job.token, (job, rec)
            # no record expires by itself: housekeeping trims finished ones
            assert seen.ttls[job.id] == -1, f"{job.id} has a TTL ({seen.ttls[job.id]} ms)"
            if job.status in ("active", "scheduled", "retrying"):
                score = seen.zsets[INDEX_OF_STATUS[job.status]][job.id]
                assert job.lo <= score <= job.hi, (job, score)
        for key, (job_id, ttl) in seen.idem.items():
            assert self.idem.get(key) == job_id and ttl > 0, (key, job_id, ttl)
        assert set(seen.idem) == set(self.idem)
        assert seen.ledger == set(self.jobs), "the ledger lists exactly the job records"
        # The lease hash: an entry iff the record is active under that token (finish and renew
        # trust it instead of reading the records).
        keys_of = {job_id: key for key, job_id in self.idem.items()}
        leases = {j.id: f"{j.token}\n{j.type}\n{keys_of.get(j.id, '')}" for j in self._of("active")}
        assert seen.leases == leases, (seen.leases, leases)
        # Indexes and registries only: no other keys, none of them expiring.
        allowed = {getattr(self.keys, n) for n in ("stats", "token", "notify")}
        allowed |= {self.keys.queued} | {getattr(self.keys, n) for n in seen.zsets}
        allowed |= {self.broker.globals.queues, self.keys.ledger, self.keys.hk_cursor}
        allowed |= {self.keys.leases}
        # Expiring extra keys: a worker's last-reserve record (for a retried reserve), the
        # marks of enqueue calls (for a repeated call) and the housekeeping duty.
        base = self.keys.base
        expiring = {
            n
            for n in seen.others
            if n.startswith((base + "reserved-by:", base + "enq:")) or n == self.keys.housekeeper
        }
        assert all(seen.others[n] != -1 for n in expiring), seen.others
        others = {n: ttl for n, ttl in seen.others.items() if n not in expiring}
        assert set(others) <= allowed, set(others) - allowed
        assert all(ttl == -1 for ttl in others.values())
        expected = {name: n for name, n in self.counters.items() if n}
        assert seen.stats == expected, (seen.stats, expected)
        finished = (seen.stats.get("done", 0), seen.stats.get("failed", 0))
        assert finished[0] >= self.last_finished[0] and finished[1] >= self.last_finished[1]
        self.last_finished = finished

    @invariant()
    def notify_list_is_capped(self) -> None:
        length = self.run(self.redis.llen(self.keys.notify))
        assert length <= NOTIFY_CAP


#: the private redis-server of the machine with restarts (set by its fixture)
_PRIVATE: list[RedisServer] = []


class BrokerModelRestarts(BrokerModel):
    """The machine on a private redis-server (``appendfsync always``) that a rule SIGKILLs and
    restarts: every accepted change was on disk before its reply, so the model still holds."""

    def url(self) -> str:
        return _PRIVATE[0].url

    @rule()
    def restart_redis(self) -> None:
        _PRIVATE[0].restart()  # SIGKILL, start on the same AOF, wait until it is loaded
        event("redis killed and restarted")


@pytest.fixture
def _private_for_restarts(private_redis: RedisServer) -> Iterator[None]:
    _PRIVATE.append(private_redis)
    yield
    _PRIVATE.clear()


def _settings(soak: bool, examples: int = 25, steps: int = 50) -> settings:
    return settings(
        max_examples=EXAMPLES or (400 if soak else examples),
        stateful_step_count=100 if soak else steps,
        deadline=None,
        suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
        # Shrinking replays with real sleeps and takes minutes; the unshrunk steps are shown.
        phases=[Phase.explicit, Phase.reuse, Phase.generate],
        print_blob=True,
    )


TestBrokerModel = BrokerModel.TestCase
TestBrokerModel.settings = _settings(soak=False)


class BrokerModelSoak(BrokerModel):
    """The same machine, more and longer runs."""


TestBrokerModelSoak = pytest.mark.timeout(3600)(pytest.mark.soak(BrokerModelSoak.TestCase))
TestBrokerModelSoak.settings = _settings(soak=True)

TestBrokerModelRestarts = pytest.mark.usefixtures("_private_for_restarts")(
    BrokerModelRestarts.TestCase
)
TestBrokerModelRestarts.settings = _settings(soak=False, examples=15, steps=40)


class BrokerModelRestartsSoak(BrokerModelRestarts):
    """The machine with restarts, more and longer runs."""


TestBrokerModelRestartsSoak = pytest.mark.timeout(3600)(
    pytest.mark.soak(
        pytest.mark.usefixtures("_private_for_restarts")(BrokerModelRestartsSoak.TestCase)
    )
)
TestBrokerModelRestartsSoak.settings = _settings(soak=True)
