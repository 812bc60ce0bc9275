"""T13: a replica is promoted while a worker and a producer run, without restarting them.

Set-up: a primary and a replica (``--replicaof``) private redis-server; the services connect
through a TCP forwarder (standing in for a virtual IP or DNS name) that first points at the
primary. Sequence:
1. jobs flow through the primary;
2. more jobs are acknowledged (202), some still running; the test then writes a marker and
   runs ``WAIT 1`` on the primary: since replication is one ordered stream, every write before
   the marker (every 202-acknowledged job) is on the replica;
3. the primary dies and the forwarder moves to the replica *before* it is promoted: every write
   fails with READONLY. The worker logs it and retries with backoff, its fetch loop survives;
   the producer answers 503 (retryable), not 500;
4. the replica is promoted (``REPLICAOF NO ONE``): the same worker process (same pid, one
   "worker started" line) completes every job acknowledged before the marker and new ones.
A job that was running at the switch may run twice (its completion may have been written to
the dead primary only, or its lease expired while the node was read-only): at least once.
"""

from __future__ import annotations

import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
from infra_support import Forwarder, RedisFactory, count_lines, enqueue_http, wait_for
from services import Services, read_ledger

pytestmark = pytest.mark.slow


@pytest.fixture
def forwarder() -> Iterator[list[Forwarder]]:
    made: list[Forwarder] = []
    yield made
    for fwd in made:
        fwd.close()


def _statuses(base_url: str, ids: list[str]) -> dict[str, str]:
    return {i: str(httpx.get(f"{base_url}/jobs/{i}", timeout=5).json().get("status")) for i in ids}


def test_promoted_replica_takes_over_without_restarting_the_worker(
    redis_factory: RedisFactory,
    services: Services,
    key_prefix: str,
    tmp_path: Path,
    forwarder: list[Forwarder],
) -> None:
    primary = redis_factory()
    replica = redis_factory(extra_args=["--replicaof", "127.0.0.1", str(primary.port)])
    with replica.client() as r:
        wait_for(
            lambda: r.info("replication").get("master_link_status") == "up",
            timeout=20,
            what="replica in sync",
        )
    fwd = Forwarder(primary.port)
    forwarder.append(fwd)
    url = f"redis://127.0.0.1:{fwd.port}/0"
    ledger = tmp_path / "ledger.jsonl"
    producer = services.producer(url)
    worker = services.worker(url, "--concurrency", "4", lease=3.0)

    def enqueue(n: int, sleep: float) -> list[str]:
        ids = []
        for _ in range(n):
            body = {"type": "test_record", "payload": {"ledger": str(ledger), "sleep": sleep}}
            answer = enqueue_http(producer.url, body)
            assert answer.status_code == 202, answer.text
            ids.append(answer.json()["id"])
        return ids

    # 1. through the primary
    first = enqueue(10, 0.0)
    wait_for(
        lambda: set(_statuses(producer.url, first).values()) == {"completed"},
        timeout=30,
        what="first jobs completed",
    )
    # 2. acknowledged jobs, some running, then WAIT 1 for everything written so far
    second = enqueue(12, 0.4)
    with primary.client() as p:
        p.set(f"{key_prefix}:marker", "1")
        assert p.wait(1, 5000) == 1
    # 3. the primary dies; the forwarder moves to the not yet promoted replica
    primary.kill()
    fwd.point_to(replica.port)
    wait_for(lambda: "read only replica" in worker.log(), timeout=30, what="READONLY logged")
    during = enqueue_http(producer.url, {"type": "test_echo", "payload": {}})
    assert during.status_code == 503, during.text
    assert during.headers.get("retry-after")
    time.sleep(3.5)  # longer than the lease: running jobs' leases lapse on the read-only node
    assert worker.alive(), worker.log()[-3000:]
    # 4. promotion
    with replica.client() as r:
        r.execute_command("REPLICAOF", "NO", "ONE")
    promoted_at = time.monotonic()
    third = enqueue(5, 0.0)
    everything = first + second + third
    wait_for(
        lambda: set(_statuses(producer.url, everything).values()) == {"completed"},
        timeout=60,
        what="every job completed after the promotion",
    )
    recovery_s = time.monotonic() - promoted_at

    log = worker.log_file.read_text()  # (worker.log() has the stderr copy too)
    assert worker.alive()
    assert count_lines(log, "worker started") == 1  # the same process throughout
    runs = read_ledger(ledger)
    assert set(everything) <= set(runs), set(everything) - set(runs)
    duplicates = {job_id: n for job_id, n in runs.items() if n > 1}
    # only jobs that could have been running at the switch may have run twice
    assert set(duplicates) <= set(second), duplicates
    print(
        f"T13 figures: enqueued={len(everything)} completed={len(everything)} "
        f"duplicates={len(duplicates)} recovery_after_promotion={recovery_s:.1f}s "
        f"readonly_lines={count_lines(log, 'read only replica')}"
    )
