"""A producer SIGKILLed while batch requests are in flight leaves no half-written batch.

Several client threads post ``/enqueue/batch`` requests of 100 jobs each (every job of a batch
carries the batch's unique marker; half the batches span two queues) to a producer
subprocess, which is SIGKILLed mid-stream. Proves, by scanning the job records in Redis: every
job answered 202 exists; each batch's jobs exist all or not at all; and a restarted producer
on the same port serves again.
"""

from __future__ import annotations

import json
import threading
import time
import uuid
from collections import Counter
from pathlib import Path

import httpx
import pytest
from loadkit import RedisFactory
from services import Services, wait_http

pytestmark = pytest.mark.slow

THREADS = 6
BATCH = 100
ANSWERED_BEFORE_KILL = 30  # batches answered 202 before the kill


class Poster:
    """Client threads posting batches until told to stop; records what was answered."""

    def __init__(self, url: str) -> None:
        self.url = url
        self.stop = threading.Event()
        self.lock = threading.Lock()
        self.accepted: dict[str, list[str]] = {}  # marker -> job ids answered 202
        self.sent: set[str] = set()
        self.errors: Counter[str] = Counter()
        self.threads = [threading.Thread(target=self._run, args=(i,)) for i in range(THREADS)]

    def _batch(self, marker: str, n: int) -> list[dict[str, object]]:
        two_queues = n % 2 == 1
        return [
            {
                "type": "test_echo",
                "payload": {"batch": marker, "i": i, "pad": "x" * 200},
                "queue": "other" if two_queues and i % 2 else "default",
            }
            for i in range(BATCH)
        ]

    def _run(self, index: int) -> None:
        with httpx.Client(base_url=self.url, timeout=10) as http:
            for n in range(10_000):
                if self.stop.is_set():
                    return
                marker = f"t{index}-{n}-{uuid.uuid4().hex[:8]}"
                with self.lock:
                    self.sent.add(marker)
                try:
                    answer = http.post("/enqueue/batch", json=self._batch(marker, n))
                except httpx.HTTPError as exc:
                    with self.lock:
                        self.errors[type(exc).__name__] += 1
                    time.sleep(0.05)
                    continue
                with self.lock:
                    if answer.status_code == 202:
                        self.accepted[marker] = [job["id"] for job in answer.json()]
                    else:
                        self.errors[f"http {answer.status_code}"] += 1

    def answered(self) -> int:
        with self.lock:
            return len(self.accepted)


def scan_jobs(server_client: object, prefix: str) -> dict[str, dict[str, object]]:
    """Every job record under ``prefix`` (SCAN, never KEYS): id -> {queue, marker}."""
    import redis

    assert isinstance(server_client, redis.Redis)
    found: dict[str, dict[str, object]] = {}
    keys = list(server_client.scan_iter(match=f"{prefix}:*:job:*", count=1000))
    pipe = server_client.pipeline(transaction=False)
    for key in keys:
        pipe.hget(key, "payload")
    for key, payload in zip(keys, pipe.execute(), strict=True):
        name = key.decode()
        queue = name[len(prefix) + 2 : name.index("}:job:")]
        job_id = name.rsplit(":job:", 1)[1]
        found[job_id] = {"queue": queue, "marker": json.loads(payload)["batch"]}
    return found


@pytest.mark.timeout(180)
def test_sigkill_producer_mid_batches_leaves_no_half_batch(
    redis_factory: RedisFactory, services: Services, key_prefix: str, tmp_path: Path
) -> None:
    # Given a producer on a private Redis and client threads posting 100-job batches
    server = redis_factory(appendfsync="always")
    producer = services.producer(server.url)
    assert producer.url is not None
    poster = Poster(producer.url)
    for thread in poster.threads:
        thread.start()
    try:
        deadline = time.monotonic() + 60
        while poster.answered() < ANSWERED_BEFORE_KILL:
            assert time.monotonic() < deadline, f"producer too slow: {poster.errors}"
            assert producer.alive(), producer.log()[-3000:]
            time.sleep(0.02)
        # When the producer is SIGKILLed with requests in flight
        producer.kill()
        time.sleep(0.5)  # the threads see the failures
    finally:
        poster.stop.set()
        for thread in poster.threads:
            thread.join(timeout=30)
    # Then Redis holds every 202-answered job, and every batch whole or not at all
    server_client = server.client()
    try:
        jobs = scan_jobs(server_client, key_prefix)
    finally:
        server_client.close()
    per_batch = Counter(str(job["marker"]) for job in jobs.values())
    missing = [
        (marker, job_id)
        for marker, job_ids in poster.accepted.items()
        for job_id in job_ids
        if job_id not in jobs
    ]
    assert missing == []
    half = {marker: n for marker, n in per_batch.items() if n != BATCH}
    assert half == {}, f"half-written batches: {half}"
    assert set(per_batch) <= poster.sent
    unanswered_but_written = set(per_batch) - set(poster.accepted)
    assert poster.errors, "the kill interrupted nothing: the test proved nothing"
    print(
        f"\nFIGURES producer-kill: batches answered 202={len(poster.accepted)} "
        f"batches written={len(per_batch)} (of which unanswered={len(unanswered_but_written)}) "
        f"jobs in redis={len(jobs)} client errors={dict(poster.errors)}"
    )
    # And a producer restarted on the same port serves again
    port = int(producer.url.rsplit(":", 1)[1])
    again = services.producer(server.url, port=port, wait=None)
    wait_http(again, "/ready", timeout=30)
    with httpx.Client(base_url=producer.url, timeout=10) as http:
        answer = http.post(
            "/enqueue/batch", json=[{"type": "test_echo", "payload": {"batch": "z"}}]
        )
        assert answer.status_code == 202, answer.text
        job_id = answer.json()[0]["id"]
        assert http.get(f"/jobs/{job_id}").json()["status"] == "queued"
