"""T14 and T11: Redis out of memory, and a producer hammered while Redis is down.

Proves:
- with ``maxmemory`` reached under ``noeviction``, ``POST /enqueue`` answers 503 with
  Retry-After and a problem text naming Redis's out-of-memory state (not a 500);
- a job that finishes while Redis refuses writes is not dropped: its outcome is applied (or it
  stays leased until memory is freed) and it completes;
- the producer's memory stays flat over ~2,000 requests failed with 503 (Redis down), and
  it serves again once Redis is back.
"""

from __future__ import annotations

import time
from pathlib import Path

import httpx
import pytest
import redis
from redis_load import RedisFactory, job_key, queue_state
from services import Proc, Services, read_ledger, wait_http

pytestmark = pytest.mark.slow


def _fill(client: redis.Redis, prefix: str) -> int:
    """Write filler keys until even a tiny write is refused with OOM (Redis's used memory is
    then above maxmemory, not just a big request's buffer); returns how many were written."""
    blob = b"x" * 4096
    written = 0
    for _batch in range(1000):  # batches of 40 kB, until the first refusal
        pipe = client.pipeline(transaction=False)
        for n in range(written, written + 10):
            pipe.set(f"{prefix}:filler:{n}", blob)
        replies = pipe.execute(raise_on_error=False)
        written += 10
        if any(isinstance(r, redis.exceptions.OutOfMemoryError) for r in replies):
            break
    for n in range(written, written + 5000):  # then tiny writes, one at a time
        try:
            client.set(f"{prefix}:filler:{n}", b"x")
        except redis.exceptions.OutOfMemoryError:
            return n
    raise AssertionError("Redis never reached maxmemory")


def _top_up(client: redis.Redis, prefix: str, written: int) -> int:
    """Tiny filler writes until one is refused again; returns the new count of filler keys."""
    for n in range(written, written + 5000):
        try:
            client.set(f"{prefix}:filler:{n}", b"x")
        except redis.exceptions.OutOfMemoryError:
            return n
    raise AssertionError("Redis no longer reaches maxmemory")


def _status(client: redis.Redis, prefix: str, job_id: str) -> str | None:
    raw = client.hget(job_key(prefix, job_id), "status")
    return raw.decode() if raw else None


def test_out_of_memory_answers_503_and_keeps_the_running_job(
    redis_factory: RedisFactory, services: Services, key_prefix: str, tmp_path: Path
) -> None:
    # Given a Redis capped at 8 MB that evicts nothing, a worker and a producer
    server = redis_factory(extra_args=["--maxmemory", "8mb", "--maxmemory-policy", "noeviction"])
    worker = services.worker(server.url, lease=2.0)
    producer = services.producer(server.url)
    assert producer.url is not None
    ledger = tmp_path / "ledger.jsonl"
    with httpx.Client(base_url=producer.url, timeout=10) as http:
        answer = http.post(
            "/enqueue",
            json={"type": "test_record", "payload": {"ledger": str(ledger), "sleep": 2.5}},
        )
        assert answer.status_code == 202, answer.text
        job_id = answer.json()["id"]
        deadline = time.monotonic() + 20
        while not read_ledger(ledger):
            assert time.monotonic() < deadline, worker.log()[-3000:]
            time.sleep(0.05)

        # When Redis fills up while the job runs
        client = server.client()
        written = _fill(client, key_prefix)

        # Then enqueue is refused with 503 naming the cause. (Redis frees a little memory on its
        # own meanwhile: a reserve record or a lease entry expiring, housekeeping trimming; an
        # enqueue that then fits is rightly accepted, so top the filler up before each try.)
        for attempt in range(10):
            written = _top_up(client, key_prefix, written)
            refused = http.post("/enqueue", json={"type": "test_echo", "payload": {"n": attempt}})
            if refused.status_code != 202:
                break
        assert refused.status_code == 503, refused.text
        assert refused.headers.get("retry-after")
        assert "out of memory" in refused.json()["problem"].lower(), refused.text

        # ... and the job that finished meanwhile is not dropped: Redis refuses a script only when
        # its first write may grow memory, and finish.lua's first write (ZREM) frees some, so the
        # ack is applied; were it refused, the job would stay active until memory is freed
        time.sleep(3.5)  # the handler has returned
        during_oom = _status(client, key_prefix, job_id)
        assert during_oom in ("completed", "active"), during_oom
        assert worker.alive()

        # When memory is freed, the job completes and enqueue works again
        client.delete(*[f"{key_prefix}:filler:{n}" for n in range(written)])
        deadline = time.monotonic() + 30
        while _status(client, key_prefix, job_id) != "completed":
            assert time.monotonic() < deadline, (_status(client, key_prefix, job_id), worker.log())
            time.sleep(0.1)
        again = http.post("/enqueue", json={"type": "test_echo", "payload": {"n": 2}})
        assert again.status_code == 202, again.text
        state = queue_state(client, key_prefix)
        runs = read_ledger(ledger)[job_id]
        print(
            f"\nT14 noeviction: filler keys={written}, enqueue under OOM -> "
            f"{refused.status_code} {refused.json()['problem']!r}; running job ran {runs}x, "
            f"status while OOM {during_oom!r}, "
            f"state after freeing: done={state.get('done')} "
            f"lost_leases={state.get('lost_leases', 0)}"
        )
        assert 1 <= runs <= 2
        http.close()
        client.close()


def _rss_kb(proc: Proc) -> int:
    for line in Path(f"/proc/{proc.pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1])
    raise AssertionError("no VmRSS")


@pytest.mark.parametrize("requests", [600, pytest.param(2200, marks=pytest.mark.soak)])
def test_producer_memory_flat_over_failed_requests(
    requests: int, redis_factory: RedisFactory, services: Services
) -> None:
    # Given a producer whose Redis is down
    server = redis_factory()
    producer = services.producer(server.url)
    assert producer.url is not None
    server.kill()
    body = {"type": "test_echo", "payload": {"n": 1}}
    statuses: dict[int, int] = {}
    rss: list[int] = []
    with httpx.Client(base_url=producer.url, timeout=10) as http:
        # When it answers that many enqueues (the first 200 are a warm-up)
        for n in range(requests):
            if n % 200 == 0:
                rss.append(_rss_kb(producer))
            r = http.post("/enqueue", json=body)
            statuses[r.status_code] = statuses.get(r.status_code, 0) + 1
        rss.append(_rss_kb(producer))
        # Then every one was a 503, and memory after warm-up grew by less than 5 MB
        assert statuses == {503: requests}, statuses
        growth = rss[-1] - rss[1]
        print(f"\nT11 producer RSS kB every 200 failed requests: {rss}; growth {growth} kB")
        assert growth < 5 * 1024, rss

        # ... and once Redis is back it serves again without a restart
        server.start()
        wait_http(producer, "/ready", timeout=20)
        assert http.post("/enqueue", json=body).status_code == 202
