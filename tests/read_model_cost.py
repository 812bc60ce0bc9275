"""What one ``/metrics`` scrape costs Redis, for 1, 10 and 100 queues (docs/read-model.md).

Runs a private ``redis-server`` (so nobody else's commands are counted) and reads its
``INFO stats`` (``total_reads_processed``: one per request the server read from a socket, so
a pipeline counts once when it arrives in one read) and ``INFO commandstats`` around one call
of the read model's ``figures()`` (what ``/metrics``, ``workqueue stats`` and ``queues list``
call). Every queue has a waiting job, the worst case (the oldest-age read then runs too).

    python tests/read_model_cost.py
"""

from __future__ import annotations

import asyncio
import sys
import tempfile
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).parent))

from redis_server import RedisServer

from workqueue.broker import Broker, BrokerConfig
from workqueue.broker.connection import create_redis


def _counters(info: dict[str, Any], commands: dict[str, Any]) -> tuple[int, int]:
    """(reads processed, commands processed) from INFO stats and INFO commandstats."""
    calls = sum(int(v["calls"]) for v in commands.values() if isinstance(v, dict))
    return int(info["total_reads_processed"]), calls


async def _scrape_cost(url: str, n_queues: int) -> tuple[int, int, int]:
    broker = Broker(create_redis(url), BrokerConfig(prefix=f"cost{n_queues}"))
    try:
        names = [f"q{i:03d}" for i in range(n_queues)]
        await broker.redis.sadd(broker.globals.queues, *names)
        for q in names:
            k = broker.keys(q)
            await broker.redis.rpush(k.queued, "j")
            await broker.redis.hset(k.job("j"), mapping={"status": "queued", "enqueued_at": 1})
        await broker.figures()  # warm the connection
        admin = broker.redis
        before = _counters(await admin.info("stats"), await admin.info("commandstats"))
        await broker.figures()
        after = _counters(await admin.info("stats"), await admin.info("commandstats"))
        # the INFO calls between the two snapshots: one read and one command each
        reads = after[0] - before[0] - 2
        commands = after[1] - before[1] - 2
        return n_queues, reads, commands
    finally:
        await broker.aclose()


async def main() -> None:
    with tempfile.TemporaryDirectory() as tmp:
        server = RedisServer(Path(tmp), appendonly=False)
        server.start()
        try:
            print("queues  reads (round trips)  commands")
            for n in (1, 10, 100):
                queues, reads, commands = await _scrape_cost(server.url, n)
                print(f"{queues:>6}  {reads:>19}  {commands:>8}")
        finally:
            server.stop()


if __name__ == "__main__":
    asyncio.run(main())
