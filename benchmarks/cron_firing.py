"""Cron firing error: how late each tick's job is enqueued, with several schedulers running.

    python benchmarks/cron_firing.py [--ticks 60] [--workers 3] [--cron "* * * * * *"]

Starts its own redis-server (free port, no persistence), stores one schedule (by default every
second, 6 fields) whose jobs go to a queue no worker consumes, runs ``--workers`` worker
processes (each runs the scheduler) for ``--ticks`` ticks, stops them, and reads every fired
job's ``enqueued_at`` (Redis clock, ms) against its tick. Prints the distribution of the firing
error (enqueued_at - tick) and checks the exactly-once property: ticks fired, missing,
doubled. JSON with ``--json``.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import signal
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))

from common import BenchRedis

PREFIX = "cronbench"
QUEUE = "cron-bench"
NAME = "bench"


def _percentile(values: list[float], p: float) -> float:
    ordered = sorted(values)
    index = min(len(ordered) - 1, max(0, round(p / 100 * (len(ordered) - 1))))
    return ordered[index]


def _start_workers(n: int, env: dict[str, str], workdir: Path) -> list[subprocess.Popen[bytes]]:
    return [
        subprocess.Popen(
            [sys.executable, "-m", "workqueue", "worker", "--log-file", str(workdir / f"w{i}.log")],
            env=env,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
            start_new_session=True,
        )
        for i in range(n)
    ]


async def _run(args: argparse.Namespace, server: BenchRedis, workdir: Path) -> dict[str, Any]:
    from workqueue.broker.broker import Broker, BrokerConfig
    from workqueue.broker.connection import create_redis
    from workqueue.schedules.model import Schedule, tick_job_id
    from workqueue.schedules.store import ScheduleStore

    broker = Broker(create_redis(server.url), BrokerConfig(prefix=PREFIX))
    store = ScheduleStore(broker.redis, PREFIX)
    env = {
        **os.environ,
        "WORKQUEUE_PLUGINS": "",
        "WORKQUEUE_REDIS_URL": server.url,
        "WORKQUEUE_KEY_PREFIX": PREFIX,
        "WORKQUEUE_METRICS_PORT": "0",
    }
    procs = _start_workers(args.workers, env, workdir)
    try:
        created_ms = int(time.time() * 1000)
        await store.put(
            Schedule(name=NAME, cron=args.cron, type="any", queue=QUEUE), source="operator"
        )
        # The workers start (imports, plugins) and fire the ticks since the schedule was made;
        # the firing error is measured from the first tick after the first firing on.
        state = await store.get(NAME)
        while state is None or state.fired == 0:
            await asyncio.sleep(0.2)
            state = await store.get(NAME)
        start_ms = int(time.time() * 1000)
        first_fired = state.fired
        while state is None or state.fired < first_fired + args.ticks:
            await asyncio.sleep(0.2)
            state = await store.get(NAME)
        pending = state.pending_tick_ms
    finally:
        for proc in procs:
            os.killpg(proc.pid, signal.SIGTERM)
        for proc in procs:
            proc.wait(timeout=60)
    state = await store.get(NAME)
    assert state is not None
    end_ms = state.last_tick_ms
    keys = broker.keys(QUEUE)
    queued = [i.decode() for i in await broker.redis.lrange(keys.queued, 0, -1)]
    ledger = dict(await broker.redis.zrange(keys.ledger, 0, -1, withscores=True))
    candidates = range(created_ms // 1000 * 1000, end_ms + 1, 1000)
    if args.cron != "* * * * * *":  # any other expression: walk its ticks
        from workqueue.schedules.cron import next_tick_ms, zone

        ticks, t = [], created_ms
        while (t := next_tick_ms(args.cron, zone("UTC"), t) or end_ms + 1) <= end_ms:
            ticks.append(t)
        candidates = ticks  # type: ignore[assignment]
    by_id = {tick_job_id(NAME, t): t for t in candidates}
    fired = {by_id[i]: ledger[i.encode()] for i in queued if i in by_id}
    expected = [t for t in candidates if t > start_ms]
    since_creation = [t for t in candidates if t > created_ms]
    errors = [fired[t] - t for t in expected if t in fired]
    worst = max(range(len(errors)), key=errors.__getitem__)
    await broker.aclose()
    return {
        "cron": args.cron,
        "workers": args.workers,
        "first_tick_after_creation_late_ms": _first_late(fired, created_ms),
        "ticks_measured": len(expected),
        "ticks_due_since_creation": len(since_creation),
        "ticks_fired": len(fired),
        "ticks_missing": len([t for t in since_creation if t not in fired]),
        "jobs_queued": len(queued),
        "jobs_doubled": len(queued) - len(set(queued)),
        "jobs_of_no_tick": len([i for i in queued if i not in by_id]),
        "pending_at_stop": pending is not None,
        "error_ms": {
            "min": min(errors),
            "p50": statistics.median(errors),
            "p90": _percentile(errors, 90),
            "p99": _percentile(errors, 99),
            "max": max(errors),
            "mean": round(statistics.fmean(errors), 1),
            "max_at_tick": worst + 1,
            "max_without_first_tick": max(errors[1:]) if len(errors) > 1 else None,
        },
    }


def _first_late(fired: dict[int, float], created_ms: int) -> float | None:
    """How late the first tick after the schedule was created fired (workers starting)."""
    after = sorted(t for t in fired if t > created_ms)
    return fired[after[0]] - after[0] if after else None


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--ticks", type=int, default=60)
    parser.add_argument("--workers", type=int, default=3)
    parser.add_argument("--cron", default="* * * * * *")
    parser.add_argument("--json", action="store_true")
    args = parser.parse_args()
    server = BenchRedis().start()
    try:
        with tempfile.TemporaryDirectory(prefix="wq-cron-bench-") as workdir:
            result = asyncio.run(_run(args, server, Path(workdir)))
    finally:
        server.stop()
    if args.json:
        print(json.dumps(result, indent=2))
    else:
        e = result["error_ms"]
        print(
            f"{result['ticks_fired']}/{result['ticks_due_since_creation']} ticks fired by "
            f"{result['workers']} schedulers ({result['cron']}); missing "
            f"{result['ticks_missing']}, doubled {result['jobs_doubled']}, "
            f"stray {result['jobs_of_no_tick']}; first tick after creation late by "
            f"{result['first_tick_after_creation_late_ms']:.0f} ms"
        )
        print(
            f"firing error over {result['ticks_measured']} ticks (enqueued_at - tick), ms: "
            f"min {e['min']:.0f}  p50 {e['p50']:.0f}  "
            f"p90 {e['p90']:.0f}  p99 {e['p99']:.0f}  max {e['max']:.0f} (tick {e['max_at_tick']})"
            f"  mean {e['mean']}; max after the first tick {e['max_without_first_tick']:.0f}"
        )
    return 0


if __name__ == "__main__":
    sys.exit(main())
