"""WorkQueue's producer side of the benchmark, run by the harness as a subprocess.

Uses whatever ``workqueue`` is installed (the harness measures the product as it stands) and
the ``wq-bench-plugin`` job types (``bench_noop``, ``bench_pickup``)::

    python workqueue_bench.py enqueue --url URL --prefix P --n N --mode single|many|gather
    python workqueue_bench.py pickup --url URL --prefix P --rate 1000 --seconds 5 --out FILE

``single`` awaits ``Client.enqueue`` once per job; ``many`` calls ``Client.enqueue_many`` with
batches of 1,000; ``gather`` starts all N ``Client.enqueue`` calls at once under
``asyncio.gather``. ``pickup`` enqueues ``bench_pickup`` jobs at a steady rate, each carrying
its ``time.time()``; the worker's handler writes the wait to ``--out``.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import sys
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))

from common import emit

BULK = 1000


def _client(url: str, prefix: str) -> Any:
    from workqueue import Client
    from workqueue.broker.broker import BrokerConfig
    from workqueue.log import configure_logging

    # The event log on, as a deployment runs it (the producer and the worker do the same):
    # every job's "enqueued" line goes to a file, rendered and written in batches.
    log_dir = Path(os.environ.get("BENCH_CWD", "."))
    configure_logging(role="client", log_file=log_dir / "wq-client-events.log", stderr=False)
    return Client.from_url(url, config=BrokerConfig(prefix=prefix))


async def enqueue(url: str, prefix: str, n: int, mode: str) -> dict[str, Any]:
    from workqueue import TaskSpec

    client = _client(url, prefix)
    # warm up: the connection, the script cache and the queue registry (not timed)
    await client.enqueue("bench_noop", {})
    n -= 1
    start = time.perf_counter()
    if mode == "single":
        for _ in range(n):
            await client.enqueue("bench_noop", {})
    elif mode == "many":
        for first in range(0, n, BULK):
            count = min(BULK, n - first)
            await client.enqueue_many([TaskSpec("bench_noop", {}) for _ in range(count)])
    else:
        await asyncio.gather(*(client.enqueue("bench_noop", {}) for _ in range(n)))
    seconds = time.perf_counter() - start
    await client.aclose()
    return {"n": n, "seconds": seconds}


async def pickup(url: str, prefix: str, rate: float, seconds: float, out: str) -> dict[str, Any]:
    client = _client(url, prefix)
    await client.enqueue("bench_noop", {})
    total = int(rate * seconds)
    start = time.perf_counter()
    late = 0
    for i in range(total):
        due = start + i / rate
        wait = due - time.perf_counter()
        if wait > 0:
            await asyncio.sleep(wait)
        elif wait < -0.05:
            late += 1
        await client.enqueue("bench_pickup", {"t": time.time(), "out": out})
    elapsed = time.perf_counter() - start
    await client.aclose()
    return {"n": total, "seconds": elapsed, "late": late}


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("phase", choices=["enqueue", "pickup"])
    parser.add_argument("--url", required=True)
    parser.add_argument("--prefix", default="bench")
    parser.add_argument("--n", type=int, default=20_000)
    parser.add_argument("--mode", choices=["single", "many", "gather"], default="single")
    parser.add_argument("--rate", type=float, default=1000)
    parser.add_argument("--seconds", type=float, default=5)
    parser.add_argument("--out", default="")
    args = parser.parse_args()
    try:
        import uvloop

        run: Any = uvloop.run
    except ImportError:
        run = asyncio.run
    if args.phase == "enqueue":
        emit(run(enqueue(args.url, args.prefix, args.n, args.mode)))
    else:
        emit(run(pickup(args.url, args.prefix, args.rate, args.seconds, args.out)))


if __name__ == "__main__":
    main()
