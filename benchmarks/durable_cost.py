"""The cost of durable enqueue: ``Client`` enqueue throughput and latency with
``durable_enqueue`` 0 and 1, on a primary and one replica on this machine.

    python benchmarks/durable_cost.py [--n 3000] [--rounds 3]

Starts its own primary and replica (no AOF, no RDB, free ports), runs each mode with N=0 and
N=1 alternately ``--rounds`` times and prints the median of each as a table (and one JSON line
per measurement). Modes: ``single`` awaits one ``Client.enqueue`` at a time (the latency of a
202); ``gather`` starts ``--n`` enqueues at once (the client batches them: one WAIT per
batch); ``many`` calls ``enqueue_many`` with 1,000 jobs per call.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import statistics
import sys
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))

from common import BenchRedis, wait_until


class BenchReplica(BenchRedis):
    """A replica of ``primary`` (same settings as the bench primary)."""

    def __init__(self, primary: BenchRedis) -> None:
        super().__init__()
        self.primary = primary

    def start(self) -> BenchReplica:
        super().start()
        self.client().execute_command("REPLICAOF", "127.0.0.1", str(self.primary.port))
        wait_until(
            lambda: self.info("replication").get("master_link_status") == "up",
            20,
            0.05,
            "the replica in sync",
        )
        return self


async def measure(url: str, replicas: int, mode: str, n: int) -> dict[str, Any]:
    from workqueue import Client, TaskSpec
    from workqueue.broker.broker import BrokerConfig

    config = BrokerConfig(prefix=f"dur{replicas}", durable_enqueue=replicas, durable_timeout_s=2)
    client = Client.from_url(url, config=config, check_types=False)
    try:
        await client.enqueue("bench_noop", {})  # warm up: connection, scripts, registry
        latencies: list[float] = []
        start = time.perf_counter()
        if mode == "single":
            for _ in range(n):
                t0 = time.perf_counter()
                await client.enqueue("bench_noop", {})
                latencies.append(time.perf_counter() - t0)
        elif mode == "gather":
            await asyncio.gather(*(client.enqueue("bench_noop", {}) for _ in range(n)))
        else:
            for first in range(0, n, 1000):
                count = min(1000, n - first)
                await client.enqueue_many([TaskSpec("bench_noop", {}) for _ in range(count)])
        elapsed = time.perf_counter() - start
    finally:
        await client.aclose()
    result: dict[str, Any] = {
        "mode": mode,
        "durable": replicas,
        "jobs": n,
        "jobs_per_s": round(n / elapsed),
    }
    if latencies:
        latencies.sort()
        result["p50_ms"] = round(latencies[len(latencies) // 2] * 1000, 3)
        result["p99_ms"] = round(latencies[int(len(latencies) * 0.99)] * 1000, 3)
    return result


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--n", type=int, default=3000)
    parser.add_argument("--rounds", type=int, default=3)
    args = parser.parse_args()
    from loguru import logger

    logger.remove()  # the client's "enqueued" event lines: not measured here, not shown
    primary = BenchRedis().start()
    replica = BenchReplica(primary).start()
    rows: dict[tuple[str, int], list[dict[str, Any]]] = {}
    try:
        for _ in range(args.rounds):
            for mode in ("single", "gather", "many"):
                n = args.n if mode == "single" else args.n * 10
                for replicas in (0, 1):
                    primary.flushall()
                    result = asyncio.run(measure(primary.url, replicas, mode, n))
                    print(json.dumps(result), flush=True)
                    rows.setdefault((mode, replicas), []).append(result)
    finally:
        replica.stop()
        primary.stop()
    print("\nmode    durable  jobs/s (median)  p50 ms  p99 ms")
    for (mode, replicas), results in rows.items():
        rate = statistics.median(r["jobs_per_s"] for r in results)
        p50 = statistics.median(r.get("p50_ms", 0) for r in results)
        p99 = statistics.median(r.get("p99_ms", 0) for r in results)
        late = f"{p50:6.3f}  {p99:6.3f}" if mode == "single" else "     -       -"
        print(f"{mode:7} {replicas:7}  {rate:15,.0f}  {late}")


if __name__ == "__main__":
    main()
