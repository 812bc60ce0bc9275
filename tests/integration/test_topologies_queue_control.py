"""Queue control on every Redis topology (single, cluster, sentinel: test_topologies.py's
stacks): priorities, pause/resume, unique jobs and the queue overview, on queues whose slots
are on three different masters of the cluster."""

from __future__ import annotations

from pathlib import Path

import pytest
import test_topologies as topo
from test_topologies import Stack
from worker_waits import wait_ledger
from wq_testkit import WorkerProcs

from workqueue.client import Client

# the stacks and their fixtures are test_topologies.py's (one stack of each kind per module)
_stacks, stack, client, workers = topo._stacks, topo.stack, topo.client, topo.workers

pytestmark = [pytest.mark.slow, pytest.mark.usefixtures("installed_test_plugin")]


async def test_priorities_pause_unique_and_overview_on_every_master(
    stack: Stack, client: Client, workers: WorkerProcs, tmp_path: Path
) -> None:
    ledger = tmp_path / "ledger.jsonl"
    ids: dict[str, list[str]] = {}
    for queue in stack.queues:
        await client.pause_queue(queue)
        ids[queue] = [
            (
                await client.enqueue(
                    "test_record", {"ledger": str(ledger), "p": p}, queue=queue, priority=p
                )
            ).id
            for p in (0, 3, 9)
        ]
        twin = await client.enqueue("test_echo", {"u": queue}, queue=queue, unique=True)
        again = await client.enqueue("test_echo", {"u": queue}, queue=queue, unique=True)
        assert again.duplicate and again.id == twin.id
    rows = {row.name: row for row in await client.queues()}
    for queue in stack.queues:
        assert rows[queue].paused and rows[queue].depth["queued"] == 4
        assert rows[queue].queued_by_priority == {"9": 1, "3": 1, "0": 2}
    workers.start("--queue", ",".join(stack.queues), "-c", "1")
    for queue in stack.queues:
        await client.resume_queue(queue)
    lines = await wait_ledger(ledger, 3 * len(stack.queues), timeout=60)
    # per queue, the jobs started highest priority first
    for queue in stack.queues:
        order = [line["job_id"] for line in lines if line["job_id"] in ids[queue]]
        assert order == list(reversed(ids[queue]))
    listed = topo.wq(stack, "queues", "list", "--json")
    assert '"paused": false' in listed
