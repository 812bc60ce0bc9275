"""Redis cost of the hot path per job: commands (INFO commandstats, Lua's inner commands
included) and Redis CPU µs (INFO cpu, used_cpu_sys + used_cpu_user) on a private redis-server.

    python tests/faults/broker_cost.py [--jobs 20000] [--batch 50]

Enqueues ``--jobs`` no-op jobs with one ``Broker.enqueue`` call (chunked by the broker), then
drains them with reserve + ack batches of ``--batch`` through the Broker API, and prints the
figures of each phase. It speaks the broker API before Engine 2 too (run with that code on
PYTHONPATH), so the same command measures before and after.
"""

from __future__ import annotations

import argparse
import asyncio
import inspect
import json
import sys
import tempfile
import uuid
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from redis_server import RedisServer

from workqueue.broker import Broker, BrokerConfig
from workqueue.broker.connection import create_redis
from workqueue.job import NewJob


def _snapshot(admin: Any) -> tuple[dict[str, int], float]:
    calls = {name: int(v["calls"]) for name, v in admin.info("commandstats").items()}
    cpu = admin.info("cpu")
    return calls, float(cpu["used_cpu_sys"]) + float(cpu["used_cpu_user"])


def _phase(admin: Any, before: tuple[dict[str, int], float], jobs: int) -> dict[str, Any]:
    calls, cpu = _snapshot(admin)
    delta = {k: calls[k] - before[0].get(k, 0) for k in calls}
    delta["cmdstat_info"] = delta.get("cmdstat_info", 0) - 2  # the two snapshot calls
    delta = {k.removeprefix("cmdstat_"): v for k, v in delta.items() if v}
    total = sum(delta.values())
    return {
        "commands_per_job": round(total / jobs, 3),
        "redis_cpu_us_per_job": round((cpu - before[1]) * 1e6 / jobs, 2),
        "commands": dict(sorted(delta.items(), key=lambda kv: -kv[1])),
    }


async def _reserve(broker: Broker, count: int) -> Any:
    if "requests" in inspect.signature(broker.reserve).parameters:  # before Engine 2
        (res,) = await broker.reserve([("q", count)], lease_ms=60_000, worker_id="w")  # type: ignore[arg-type, call-arg]
        return res
    return await broker.reserve(
        "q", count, lease_ms=60_000, worker_id="w", request_id=uuid.uuid4().hex
    )


def _ack(job: Any) -> Any:
    from workqueue.broker import contract

    kind: Any = contract.OpKind.ACK if hasattr(contract, "OpKind") else "ack"
    if "queue" in contract.ReserveResult.__struct_fields__:  # the contract's FinishOp
        return contract.FinishOp(kind, job.id, job.token, b"null")
    from workqueue.broker import FinishOp

    return FinishOp("ack", job.id, job.token, b"null")  # type: ignore[arg-type]


async def measure(url: str, jobs: int, batch: int) -> dict[str, Any]:
    import redis

    admin = redis.Redis.from_url(url)
    broker = Broker(create_redis(url), BrokerConfig(prefix="cost"))
    try:
        new = [
            NewJob(
                id=uuid.uuid4().hex, type="noop", queue="q", payload=b"{}", retries=0, timeout=30.0
            )
            for _ in range(jobs)
        ]
        await broker.enqueue(new[:1])  # load the scripts, register the queue
        await _reserve(broker, 1)
        new = new[1:]
        admin.delete("cost:{q}:queued", "cost:{q}:active")
        n = len(new)
        start = _snapshot(admin)
        await broker.enqueue(new)
        enqueue = _phase(admin, start, n)
        start = _snapshot(admin)
        done = 0
        while done < n:
            res = await _reserve(broker, batch)
            if not res.jobs:
                break
            await broker.finish({"q": [_ack(j) for j in res.jobs]})
            done += len(res.jobs)
        drain = _phase(admin, start, n)
        assert done == n, f"drained {done} of {n}"
        both = {
            "commands_per_job": round(enqueue["commands_per_job"] + drain["commands_per_job"], 3),
            "redis_cpu_us_per_job": round(
                enqueue["redis_cpu_us_per_job"] + drain["redis_cpu_us_per_job"], 2
            ),
        }
        return {"jobs": n, "batch": batch, "enqueue": enqueue, "drain": drain, "total": both}
    finally:
        await broker.redis.aclose()
        admin.close()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--jobs", type=int, default=20_000)
    parser.add_argument("--batch", type=int, default=50)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        server = RedisServer(Path(tmp), appendonly=False)
        server.start()
        try:
            result = asyncio.run(measure(server.url, args.jobs + 1, args.batch))
        finally:
            server.close()
    print(json.dumps(result, indent=2))


if __name__ == "__main__":
    main()
