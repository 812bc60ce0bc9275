"""``redis-cli --cluster reshard`` of a queue's slot while workers drain it and a producer keeps
enqueueing: every job acknowledged is run (at least once) and completed once, no key of the slot
is left behind on the old master, and the queue's counters are exact.

During the migration Redis answers ``ASK`` (a key already moved) and ``TRYAGAIN`` (a script
whose keys are split between the two masters) and, once the slot has moved, ``MOVED``: the
cluster client follows them, the enqueue channel sends redirected calls again through it, and a
worker's blocking wait on the moved queue is woken and re-issued on the new master.
"""

from __future__ import annotations

import asyncio
import json
import subprocess
import time
import uuid
from collections import Counter
from collections.abc import Iterator
from pathlib import Path

import pytest
from cluster_stack import ClusterStack, cluster_tools_present, start_cluster_stack
from redis.crc import key_slot
from redis.exceptions import RedisError
from wq_testkit import WorkerProcs

from workqueue.broker import Broker, BrokerConfig
from workqueue.broker.connection import create_redis
from workqueue.job import NewJob

pytestmark = [
    pytest.mark.slow,
    pytest.mark.usefixtures("installed_test_plugin"),
    pytest.mark.skipif(
        not cluster_tools_present(), reason="not run here: redis-server/redis-cli missing"
    ),
]

BEFORE = 1500  # jobs waiting when the reshard starts
DURING = 1500  # jobs enqueued while it runs


@pytest.fixture
def stack(tmp_path: Path) -> Iterator[ClusterStack]:
    running = start_cluster_stack(tmp_path / "cluster")
    yield running
    running.close()


def _node_ids(stack: ClusterStack) -> dict[int, str]:
    """port -> node id of the masters."""
    ids = {}
    for node in stack.masters():
        ids[node.port] = node.client().execute_command("CLUSTER MYID").decode()
    return ids


def _first_slot(stack: ClusterStack, port: int) -> int:
    node = next(n for n in stack.nodes if n.port == port)
    ranges = node.client().execute_command("CLUSTER SLOTS")
    return min(int(start) for start, _end, master, *_ in ranges if int(master[1]) == port)


def _queue_in_slot(slot: int) -> str:
    """A queue name whose keys hash to ``slot``."""
    for n in range(1_000_000):
        name = f"rs{n}"
        if key_slot(f"{{{name}}}".encode()) == slot:
            return name
    raise LookupError(slot)


def _job(queue: str, ledger: Path, i: int) -> NewJob:
    payload = json.dumps({"ledger": str(ledger), "i": i, "sleep": 0.02}).encode()
    return NewJob(uuid.uuid4().hex, "test_record", queue, payload, 5, 30.0)


async def _enqueue_until_acknowledged(broker: Broker, jobs: list[NewJob]) -> int:
    """Enqueue ``jobs`` in small batches, sending a batch again (same ids: a repeat is a
    duplicate, never a second job) until Redis acknowledges it. Returns the errors seen."""
    errors = 0
    for at in range(0, len(jobs), 50):
        batch = jobs[at : at + 50]
        while True:
            try:
                await broker.enqueue(batch)
                break
            except RedisError:
                errors += 1
                await asyncio.sleep(0.05)
        await asyncio.sleep(0.01)
    return errors


async def _wait_done(broker: Broker, queue: str, n: int) -> None:
    deadline = time.monotonic() + 60
    while (await broker.queue_stats(queue)).get("done", 0) < n:
        assert time.monotonic() < deadline, "the workers never started"
        await asyncio.sleep(0.05)


async def test_reshard_of_a_queue_slot_while_workers_drain_it(
    stack: ClusterStack, tmp_path: Path
) -> None:
    # Given a queue whose slot is the first slot of master A (so `reshard --cluster-slots 1`
    # from A moves exactly that slot), a second queue on another master, and two workers
    ids = _node_ids(stack)
    ports = sorted(ids)
    source, target = ports[0], ports[1]
    slot = _first_slot(stack, source)
    queue = _queue_in_slot(slot)
    other = next(
        q
        for q in (f"o{n}" for n in range(100))
        if stack.master_of_slot(key_slot(q.encode())).port != source
    )
    assert stack.master_of_slot(slot).port == source
    prefix = f"wqtest-{uuid.uuid4().hex[:8]}"
    ledger = tmp_path / "ledger"
    broker = Broker(create_redis(stack.url), BrokerConfig(prefix=prefix))
    workers = WorkerProcs(prefix, tmp_path, url=stack.url)
    try:
        first = [_job(queue, ledger, i) for i in range(BEFORE)]
        await broker.enqueue(first)
        side = [_job(other, ledger, i) for i in range(100)]
        await broker.enqueue(side)
        for _ in range(2):
            workers.start("--queue", f"{queue},{other}", "--concurrency", "8", lease=5.0)

        # When the slot is resharded to master B while the workers drain it and more jobs come
        await _wait_done(broker, queue, 50)  # the workers are draining it
        reshard = subprocess.Popen(
            [
                "redis-cli", "--cluster", "reshard", f"127.0.0.1:{source}",
                "--cluster-from", ids[source], "--cluster-to", ids[target],
                "--cluster-slots", "1", "--cluster-yes", "--cluster-pipeline", "1",
            ],
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
        )  # fmt: skip
        during = [_job(queue, ledger, BEFORE + i) for i in range(DURING)]
        enqueue_errors = await _enqueue_until_acknowledged(broker, during)
        done_at_start = (await broker.queue_stats(queue))["done"]
        output, _ = await asyncio.to_thread(reshard.communicate, timeout=120)
        assert reshard.returncode == 0, output.decode()[-2000:]
        done_at_end = (await broker.queue_stats(queue))["done"]
        # the workers drained the queue while its slot moved, and it was not empty yet
        assert done_at_start < BEFORE + DURING and done_at_end < BEFORE + DURING
        stack.wait_ok()
        assert stack.master_of_slot(slot).port == target

        # Then every job completes, once by the counters, at least once by the ledger
        everyone = [*first, *during, *side]
        deadline = time.monotonic() + 120
        while True:
            figures = await broker.queue_figures([queue, other])
            left = sum(r.queued + r.running + r.scheduled + r.retrying for r in figures.queues)
            if left == 0:
                break
            assert time.monotonic() < deadline, f"{left} jobs never finished: {figures}"
            await asyncio.sleep(0.2)
        stats = await broker.queue_stats(queue)
        assert stats["enqueued"] == BEFORE + DURING
        assert stats["done"] == BEFORE + DURING and stats.get("failed", 0) == 0
        assert (await broker.queue_stats(other))["done"] == 100
        for job in everyone[:: max(1, len(everyone) // 200)]:
            assert (await broker.get_job(job.id)).status == "completed"
        runs = Counter(
            json.loads(line)["job_id"] for line in ledger.read_text().splitlines() if line
        )
        assert set(runs) == {job.id for job in everyone}
        # nothing of the queue left on the old master
        old = next(n for n in stack.nodes if n.port == source).client()
        assert old.execute_command("CLUSTER COUNTKEYSINSLOT", slot) == 0
        new = next(n for n in stack.nodes if n.port == target).client()
        assert new.execute_command("CLUSTER COUNTKEYSINSLOT", slot) > 0
        repeated = sum(1 for n in runs.values() if n > 1)
        print(
            f"\nreshard of slot {slot} ({queue}): {BEFORE + DURING} jobs done once by the "
            f"counters; {repeated} ran more than once; {enqueue_errors} enqueue batches "
            f"sent again; done at the reshard's start/end {done_at_start}/{done_at_end}"
        )
    finally:
        workers.stop_all()
        await broker.aclose()
