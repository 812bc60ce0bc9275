"""Load and bookkeeping for the Redis fault tests: HTTP enqueuers in threads, and the checks
that every acknowledged job completed, ran from its own payload, and left no lease behind."""

from __future__ import annotations

import contextlib
import json
import threading
import time
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
import redis
from redis_server import RedisServer
from services import read_ledger

from workqueue.broker.keys import QueueKeys

OK = (200, 202)

#: the ``redis_factory`` fixture's type (not imported from conftest: every conftest module is
#: named "conftest", so that import is ambiguous under ``pytest tests``)
RedisFactory = Callable[..., RedisServer]


@dataclass
class Answer:
    """One HTTP answer of the producer (or the lack of one)."""

    key: str
    sent: float
    answered: float
    status: int  # 0: no HTTP answer at all (a hang or a refused connection)
    job_id: str | None = None
    retry_after: str | None = None
    body: str = ""


@dataclass
class Load:
    """``threads`` enqueuers POSTing ``test_record`` (or ``test_echo``) jobs to a producer.

    Each logical job has its own ``Idempotency-Key``; with ``retry`` an enqueuer repeats a
    job answered 503 (same key) until it is accepted, so "accepted" ends up holding every
    logical job exactly once. ``answers`` keeps every HTTP answer, in order.
    """

    producer_url: str
    ledger: Path
    job_type: str = "test_record"
    threads: int = 3
    pause: float = 0.02
    retry: bool = False
    sleep: float = 0.05
    http_timeout: float = 10.0
    answers: list[Answer] = field(default_factory=list)
    accepted: dict[str, Answer] = field(default_factory=dict)  # key -> the 2xx answer
    payloads: dict[str, dict[str, Any]] = field(default_factory=dict)
    _stop: threading.Event = field(default_factory=threading.Event)
    _lock: threading.Lock = field(default_factory=threading.Lock)
    _threads: list[threading.Thread] = field(default_factory=list)
    _seq: int = 0

    def type_of(self, key: str) -> str:
        """``mixed``: alternately test_record (ledger) and test_echo (result = payload)."""
        if self.job_type != "mixed":
            return self.job_type
        return "test_echo" if int(key.rsplit("-", 1)[1]) % 2 else "test_record"

    def payload(self, key: str) -> dict[str, Any]:
        if self.type_of(key) == "test_record":
            return {"ledger": str(self.ledger), "sleep": self.sleep, "key": key}
        return {"key": key, "blob": key * 3}

    def start(self) -> Load:
        for n in range(self.threads):
            thread = threading.Thread(target=self._run, args=(n,), daemon=True)
            thread.start()
            self._threads.append(thread)
        return self

    def stop(self) -> None:
        self._stop.set()
        for thread in self._threads:
            thread.join(timeout=self.http_timeout + 5)

    def _next_key(self, n: int) -> str:
        with self._lock:
            self._seq += 1
            return f"t{n}-{self._seq}"

    def _run(self, n: int) -> None:
        with httpx.Client(base_url=self.producer_url, timeout=self.http_timeout) as http:
            key = self._next_key(n)
            while not self._stop.is_set():
                payload = self.payload(key)
                answer = self.post(http, key, payload)
                if answer.status in OK or not self.retry:
                    key = self._next_key(n)
                time.sleep(self.pause)

    def post(self, http: httpx.Client, key: str, payload: dict[str, Any]) -> Answer:
        sent = time.monotonic()
        try:
            response = http.post(
                "/enqueue",
                json={"type": self.type_of(key), "payload": payload},
                headers={"Idempotency-Key": key},
            )
        except httpx.HTTPError as exc:
            answer = Answer(key, sent, time.monotonic(), 0, body=repr(exc))
        else:
            job_id = None
            if response.status_code in OK:
                job_id = response.json()["id"]
            answer = Answer(
                key,
                sent,
                time.monotonic(),
                response.status_code,
                job_id,
                response.headers.get("retry-after"),
                response.text[:300],
            )
        with self._lock:
            self.answers.append(answer)
            if answer.status in OK:
                first = self.accepted.setdefault(key, answer)
                assert first.job_id == answer.job_id, f"key {key}: two job ids"
                self.payloads[key] = payload
        return answer

    # -- checks ----------------------------------------------------------------------------

    def statuses(self) -> Counter[int]:
        return Counter(a.status for a in self.answers)

    def check_answers(self, *, max_seconds: float = 6.0) -> None:
        """Only 200/202/503 ever; every 503 has Retry-After; no answer took ``max_seconds``."""
        for a in self.answers:
            assert a.status in (200, 202, 503), f"unexpected answer {a}"
            if a.status == 503:
                assert a.retry_after, f"503 without Retry-After: {a}"
            assert a.answered - a.sent < max_seconds, f"request hung: {a}"


def job_key(prefix: str, job_id: str, queue: str = "default") -> str:
    return QueueKeys(prefix, queue).job(job_id)


def statuses_of(client: redis.Redis, prefix: str, ids: list[str]) -> dict[str, str | None]:
    pipe = client.pipeline(transaction=False)
    for job_id in ids:
        pipe.hget(job_key(prefix, job_id), "status")
    replies = pipe.execute()
    return {i: (r.decode() if r else None) for i, r in zip(ids, replies, strict=True)}


def wait_completed(
    client_factory: Any, prefix: str, ids: list[str], *, timeout: float = 60.0
) -> dict[str, str | None]:
    """Poll until every job is completed (or ``timeout``); returns the last statuses."""
    deadline = time.monotonic() + timeout
    last: dict[str, str | None] = {}
    while True:
        with contextlib.suppress(redis.RedisError):
            with client_factory() as client:
                last = statuses_of(client, prefix, ids)
            if all(s == "completed" for s in last.values()):
                return last
        if time.monotonic() > deadline:
            return last
        time.sleep(0.2)


def queue_state(client: redis.Redis, prefix: str, queue: str = "default") -> dict[str, int]:
    k = QueueKeys(prefix, queue)
    stats = {key.decode(): int(v) for key, v in client.hgetall(k.stats).items()}
    stats["queued_now"] = client.llen(k.queued)
    stats["active_now"] = client.zcard(k.active)
    stats["retry_now"] = client.zcard(k.retry)
    stats["failed_now"] = client.zcard(k.failed)
    return stats


@dataclass
class Tally:
    """What happened to the accepted jobs, as the report rows need it."""

    enqueued: int
    completed: int
    lost: list[str]
    duplicates: int
    ran_twice: list[str]

    def row(self) -> str:
        return (
            f"enqueued={self.enqueued} completed={self.completed} lost={len(self.lost)} "
            f"duplicates={self.duplicates}"
        )


def tally(load: Load, statuses: dict[str, str | None]) -> Tally:
    runs = read_ledger(load.ledger)
    ids = [a.job_id for a in load.accepted.values() if a.job_id]
    recorded = {a.job_id for k, a in load.accepted.items() if load.type_of(k) == "test_record"}
    lost = [i for i in ids if statuses.get(i) != "completed" or (i in recorded and runs[i] == 0)]
    twice = [i for i, n in runs.items() if n > 1]
    return Tally(
        enqueued=len(ids),
        completed=sum(1 for i in ids if statuses.get(i) == "completed"),
        lost=lost,
        duplicates=sum(n - 1 for n in runs.values() if n > 1),
        ran_twice=twice,
    )


def worker_metrics(url: str) -> dict[str, Any] | None:
    with contextlib.suppress(httpx.HTTPError, ValueError):
        response = httpx.get(url + "/metrics", timeout=3)
        if response.status_code == 200:
            figures: dict[str, Any] = response.json()
            return figures
    return None


def check_echo_results(client: redis.Redis, prefix: str, load: Load) -> int:
    """Every completed ``test_echo`` job's stored result is its own payload (no reply of
    another command ended up in it); returns how many were checked."""
    keys = [k for k in load.accepted if load.type_of(k) == "test_echo"]
    pipe = client.pipeline(transaction=False)
    for k in keys:
        pipe.hmget(job_key(prefix, load.accepted[k].job_id or ""), "result", "type", "payload")
    rows = pipe.execute()
    for k, (result, typ, payload) in zip(keys, rows, strict=True):
        assert typ == b"test_echo", (k, typ)
        assert json.loads(payload) == load.payloads[k], (k, payload)
        assert json.loads(result) == load.payloads[k], (k, result)
    return len(keys)


def wait_settled(client_factory: Any, prefix: str, *, timeout: float = 60.0) -> dict[str, int]:
    """Poll until nothing is queued, leased or retrying; returns the queue's figures."""
    deadline = time.monotonic() + timeout
    state: dict[str, int] = {}
    while time.monotonic() < deadline:
        with contextlib.suppress(redis.RedisError), client_factory() as client:
            state = queue_state(client, prefix)
            if state["queued_now"] == state["active_now"] == state["retry_now"] == 0:
                return state
        time.sleep(0.2)
    return state
