"""Redis cost of draining jobs, and of one ``/metrics`` read, on one Redis and on a Redis
Cluster (docs/scaling.md, "Redis Cluster").

Starts a private ``redis-server`` and a private 3-master cluster (tests/cluster_stack.py), puts
``--jobs`` jobs on three queues (on the cluster: on three different masters), runs one
``workqueue worker`` subprocess consuming the three queues until they are drained, and reads,
summed over the masters, ``INFO stats`` (``total_reads_processed``: one per request read from a
socket, so a pipeline that arrives in one read counts once: round trips) and ``INFO
commandstats`` (``evalsha``: script calls; ``all``: every command, Lua's inner ones included).
Then the same for one ``figures()`` call (what ``/metrics``, ``workqueue stats`` and
``workqueue queues list`` read) with 3 and 30 queues.

    python tests/cluster_cost.py [--jobs 3000]
"""

from __future__ import annotations

import argparse
import asyncio
import os
import subprocess
import sys
import tempfile
import time
import uuid
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).parent))

import redis
from cluster_stack import queue_slot, start_cluster_stack
from redis_server import RedisServer

from workqueue.broker import Broker, BrokerConfig
from workqueue.broker.connection import create_redis
from workqueue.job import NewJob

PLUGIN = "wq_testplugin_good"


def _counters(nodes: list[redis.Redis]) -> dict[str, int]:
    total: dict[str, int] = {"reads": 0, "all": 0}
    for node in nodes:
        total["reads"] += int(node.info("stats")["total_reads_processed"])
        for name, row in node.info("commandstats").items():
            calls = int(row["calls"])
            total["all"] += calls
            key = name.removeprefix("cmdstat_")
            total[key] = total.get(key, 0) + calls
    return total


def _delta(after: dict[str, int], before: dict[str, int], nodes: int) -> dict[str, int]:
    out = {k: v - before.get(k, 0) for k, v in after.items() if v - before.get(k, 0)}
    # the snapshot's own INFO calls (2 per node): not the workload's
    for key in ("reads", "all", "info"):
        out[key] = out.get(key, 0) - 2 * nodes
    return out


async def _enqueue(url: str, prefix: str, queues: list[str], jobs: int) -> None:
    broker = Broker(create_redis(url), BrokerConfig(prefix=prefix))
    try:
        batch = [
            NewJob(
                uuid.uuid4().hex, "test_echo", queues[i % len(queues)], b'{"i": %d}' % i, 0, 30.0
            )
            for i in range(jobs)
        ]
        await broker.enqueue(batch)
    finally:
        await broker.aclose()


async def _remaining(url: str, prefix: str, queues: list[str]) -> int:
    broker = Broker(create_redis(url), BrokerConfig(prefix=prefix))
    try:
        figures = await broker.queue_figures(queues)
        return sum(r.queued + r.running + r.scheduled + r.retrying for r in figures.queues)
    finally:
        await broker.aclose()


def _drain(
    url: str, prefix: str, queues: list[str], tmp: Path, nodes: list[redis.Redis]
) -> dict[str, int]:
    asyncio.run(_enqueue(url, prefix, queues, ARGS.jobs))
    before = _counters(nodes)
    env = {
        **os.environ,
        "WORKQUEUE_PLUGINS": PLUGIN,
        "WORKQUEUE_KEY_PREFIX": prefix,
        "WORKQUEUE_REDIS_URL": url,
        "WORKQUEUE_LOG_FILE": str(tmp / f"worker-{prefix}.log"),
        "WORKQUEUE_METRICS_PORT": "0",
    }
    proc = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "workqueue",
            "worker",
            "--queue",
            ",".join(queues),
            "--concurrency",
            "32",
        ],
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    started = time.monotonic()
    try:
        while asyncio.run(_remaining(url, prefix, queues)):
            time.sleep(0.2)
        seconds = time.monotonic() - started
    finally:
        proc.terminate()
        proc.wait(30)
    after = _counters(nodes)
    out = _delta(after, before, len(nodes))
    out["seconds"] = round(seconds, 1)
    return out


async def _figures_cost(
    url: str, prefix: str, queues: list[str], nodes: list[redis.Redis]
) -> dict[str, int]:
    broker = Broker(create_redis(url), BrokerConfig(prefix=prefix))
    try:
        for q in queues:
            await broker.enqueue([NewJob(uuid.uuid4().hex, "test_echo", q, b"{}", 0, 30.0)])
        await broker.figures()  # warm the connections
        before = _counters(nodes)
        await broker.figures()
        return _delta(_counters(nodes), before, len(nodes))
    finally:
        await broker.aclose()


def _report(name: str, drained: dict[str, int], jobs: int) -> None:
    per = {k: round(v / jobs, 2) for k, v in drained.items() if k != "seconds"}
    print(f"{name}: drained {jobs} jobs in {drained['seconds']} s (worker start included)")
    print(
        f"  per job: round trips (reads) {per['reads']}, evalsha {per.get('evalsha', 0)}, "
        f"all commands {per['all']}"
    )
    top = sorted(
        ((v, k) for k, v in drained.items() if k not in ("reads", "all", "seconds")), reverse=True
    )
    print("  top-level and Lua commands:", ", ".join(f"{k} {v}" for v, k in top[:12]))


def main() -> None:
    with tempfile.TemporaryDirectory() as tmp_name:
        tmp = Path(tmp_name)
        single = RedisServer(tmp / "single", appendonly=False)
        (tmp / "single").mkdir()
        single.start()
        stack = start_cluster_stack(tmp / "cluster")
        try:
            spread: dict[int, str] = {}
            for n in range(100):
                spread.setdefault(stack.master_of_slot(queue_slot(f"q{n}")).port, f"q{n}")
            queues = sorted(spread.values())[:3]
            masters = [n.client() for n in stack.masters()]
            print(f"queues {queues}: masters {sorted(spread)[:3]}")
            s = _drain(single.url, "costs", queues, tmp, [single.client()])
            c = _drain(stack.url, "costc", queues, tmp, masters)
            _report("single Redis", s, ARGS.jobs)
            _report("cluster (3 masters, summed)", c, ARGS.jobs)
            many = queues + [f"x{i}" for i in range(27)]
            for name, url, nodes in (
                ("single", single.url, [single.client()]),
                ("cluster", stack.url, masters),
            ):
                for qs in (queues, many):
                    cost = asyncio.run(_figures_cost(url, f"fig{name}{len(qs)}", qs, nodes))
                    print(
                        f"figures() {name}, {len(qs)} queues: round trips (reads, summed over "
                        f"masters) {cost['reads']}, commands {cost['all']}: {cost}"
                    )
        finally:
            stack.close()
            single.stop()


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--jobs", type=int, default=3000)
    ARGS: Any = parser.parse_args()
    main()
