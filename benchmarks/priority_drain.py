"""Reserve cost with priorities in use against off, in one run (issue 13's closing figure).

For each variant, N jobs are enqueued to a fresh queue, then drained by one client: reserve
batches of B (leases long enough not to expire), then finish (ack) them in batches of B.
Reported per variant: the drain rate (reserve + finish, jobs/s, wall clock) and Redis's own
time per reserved job (``INFO commandstats``, EVALSHA usec during the reserve calls only).

Variants, interleaved over the runs so drift hits all alike:
  off     every job priority 0 (the queued list alone; reserve still reads the levels set)
  on      priorities spread 0-9 (ten lists; reserve pops the highest level first)
  before  priority 0, reserved by main's reserve.lua (the script before priorities and pause:
          only with --before-ref; read with ``git show``)

    python benchmarks/priority_drain.py [--n 20000] [--batch 50] [--runs 3]
        [--redis-url redis://127.0.0.1:6379/0] [--before-ref main]
"""

from __future__ import annotations

import argparse
import asyncio
import os
import random
import statistics
import subprocess
import time
import uuid
from typing import Any

from redis.asyncio import Redis

from workqueue.broker import Broker, BrokerConfig
from workqueue.broker.connection import create_redis
from workqueue.broker.contract import FinishOp, OpKind
from workqueue.client import Client


def _evalsha_usec(info: dict[str, Any]) -> int:
    return int(info.get("cmdstat_evalsha", {}).get("usec", 0))


async def _drain(
    broker: Broker, admin: Redis, queue: str, n: int, batch: int, reserve_script: Any
) -> tuple[float, float]:
    """(jobs/s of the drain, Redis usec per reserved job)."""
    k = broker.keys(queue)
    reserve_usec = 0
    got = 0
    start = time.perf_counter()
    while got < n:
        before = _evalsha_usec(await admin.info("commandstats"))
        if reserve_script is None:
            res = await broker.reserve(
                queue, batch, lease_ms=600_000, worker_id="bench", request_id=uuid.uuid4().hex
            )
            jobs = [(j.id, j.token) for j in res.jobs]
        else:
            keys = [k.queued, k.scheduled, k.retry, k.active, k.failed, k.stats, k.notify]
            keys += [k.token, k.reserve_record("bench"), k.settings, k.ledger, k.leases]
            # the same arguments as Broker.reserve sends (a request id: the replay record)
            args = [k.job_prefix, k.idem_prefix, batch, 600_000, "bench", uuid.uuid4().hex, 64]
            args.append(1000)
            raw = await reserve_script(keys=keys, args=args)
            parsed = broker._parse_reserve(queue, raw)
            jobs = [(j.id, j.token) for j in parsed.jobs]
        reserve_usec += _evalsha_usec(await admin.info("commandstats")) - before
        if not jobs:
            raise RuntimeError(f"queue {queue} ran dry at {got} of {n}")
        await broker.finish({queue: [FinishOp(OpKind.ACK, i, t, b"1") for i, t in jobs]})
        got += len(jobs)
    elapsed = time.perf_counter() - start
    # (the two INFO round trips per batch are in the wall time of every variant alike)
    return got / elapsed, reserve_usec / got


async def _fill(client: Client, queue: str, n: int, spread: bool) -> None:
    rng = random.Random(7)
    chunk = 1000
    for at in range(0, n, chunk):
        from workqueue.client import TaskSpec

        specs = [
            TaskSpec(
                "bench",
                {"i": i},
                queue=queue,
                retries=0,
                priority=rng.randrange(10) if spread else 0,
            )
            for i in range(at, min(at + chunk, n))
        ]
        await client.enqueue_specs(specs)


async def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--n", type=int, default=20000)
    parser.add_argument("--batch", type=int, default=50)
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument(
        "--redis-url", default=os.environ.get("BENCH_REDIS_URL", "redis://127.0.0.1:6379/0")
    )
    parser.add_argument("--before-ref", default="", help="git ref of the reserve.lua to compare")
    opts = parser.parse_args()

    prefix = f"wqbench-prio-{uuid.uuid4().hex[:8]}"
    broker = Broker(create_redis(opts.redis_url), BrokerConfig(prefix=prefix, completed_ttl_s=0))
    client = Client(broker, check_types=False)
    admin = create_redis(opts.redis_url)
    before_script = None
    if opts.before_ref:

        def show(name: str) -> str:
            return subprocess.run(
                ["git", "show", f"{opts.before_ref}:core/workqueue/broker/lua/{name}.lua"],
                capture_output=True,
                text=True,
                check=True,
            ).stdout

        before_script = broker.redis.register_script(show("prelude") + show("reserve"))
    variants = [("off", False, None), ("on", True, None)]
    if before_script is not None:
        variants.append(("before", False, before_script))
    results: dict[str, list[tuple[float, float]]] = {name: [] for name, _, _ in variants}
    try:
        for run in range(opts.runs):
            # the order rotates per run, so no variant always runs first or last
            shift = run % len(variants)
            for name, spread, script in variants[shift:] + variants[:shift]:
                queue = f"{name}-{run}"
                await _fill(client, queue, opts.n, spread)
                results[name].append(await _drain(broker, admin, queue, opts.n, opts.batch, script))
    finally:
        keys = [k async for k in admin.scan_iter(match=f"{prefix}:*", count=1000)]
        for at in range(0, len(keys), 1000):
            await admin.delete(*keys[at : at + 1000])
        await client.aclose()
        await admin.aclose()
    print(f"n={opts.n} batch={opts.batch} runs={opts.runs} (median of runs)")
    print(f"{'variant':8} {'drain jobs/s':>13} {'reserve usec/job (Redis)':>26}   per run")
    for name, rows in results.items():
        rate = statistics.median(r for r, _ in rows)
        usec = statistics.median(u for _, u in rows)
        runs = ", ".join(f"{r:.0f}/{u:.2f}" for r, u in rows)
        print(f"{name:8} {rate:13.0f} {usec:26.2f}   {runs}")


if __name__ == "__main__":
    asyncio.run(main())
