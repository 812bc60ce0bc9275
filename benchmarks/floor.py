"""The raw-Redis floor: the smallest at-least-once queue redis-py + hiredis + uvloop allow.

A job is a JSON message in a list. A worker pops a batch with one Lua call that moves the
messages into a processing sorted set scored by their lease deadline (a crashed worker's jobs
can be found there and handed back), runs them as asyncio tasks (at most ``--concurrency`` in
flight) and acknowledges finished ones in batches: the same Lua call removes them from the
processing set, counts them in ``floor:done`` and pops the next batch, so a busy worker makes one
round trip per batch. No retries, no records, no results, no log: the practical ceiling of a
Python job queue on Redis, against which WorkQueue's rows are compared.

    python floor.py enqueue --url URL --n N --mode single|bulk
    python floor.py worker --url URL [--concurrency 50]
"""

from __future__ import annotations

import argparse
import asyncio
import json
import sys
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))

from common import emit

QUEUE = "floor:queue"
PROCESSING = "floor:processing"
DONE = "floor:done"
LEASE_MS = 30_000
BULK = 1000

# KEYS: queue, processing, done. ARGV: count to pop, deadline ms, then the ids to acknowledge.
ACK_AND_POP = """
local acked = #ARGV - 2
if acked > 0 then
  local removed = 0
  for i = 3, #ARGV, 500 do
    removed = removed + redis.call('ZREM', KEYS[2], unpack(ARGV, i, math.min(i + 499, #ARGV)))
  end
  redis.call('INCRBY', KEYS[3], removed)
end
local count = tonumber(ARGV[1])
if count <= 0 then return {} end
local items = redis.call('LPOP', KEYS[1], count)
if not items then return {} end
local args = {}
for i, item in ipairs(items) do
  args[2 * i - 1] = ARGV[2]
  args[2 * i] = item
end
redis.call('ZADD', KEYS[2], unpack(args))
return items
"""


def _redis(url: str) -> Any:
    import redis.asyncio as aioredis

    return aioredis.from_url(url)


def _message(i: int) -> bytes:
    return json.dumps({"id": f"j{i}", "type": "noop", "payload": {}}).encode()


async def enqueue(url: str, n: int, mode: str) -> dict[str, Any]:
    r = _redis(url)
    await r.ping()
    start = time.perf_counter()
    if mode == "single":
        for i in range(n):
            await r.rpush(QUEUE, _message(i))
    else:
        for first in range(0, n, BULK):
            await r.rpush(QUEUE, *[_message(i) for i in range(first, min(first + BULK, n))])
    seconds = time.perf_counter() - start
    await r.aclose()
    return {"n": n, "seconds": seconds}


async def noop(payload: dict[str, Any]) -> None:
    """The job."""


async def work(url: str, concurrency: int) -> None:
    r = _redis(url)
    ack_and_pop = r.register_script(ACK_AND_POP)
    acks: list[bytes] = []
    inflight = 0
    wake = asyncio.Event()
    tasks: set[asyncio.Task[None]] = set()

    async def run(raw: bytes) -> None:
        nonlocal inflight
        job = json.loads(raw)
        try:
            await noop(job["payload"])
        finally:
            inflight -= 1
            acks.append(raw)
            wake.set()

    while True:
        free = concurrency - inflight
        if free == 0 and not acks:
            await wake.wait()
            wake.clear()
            continue
        batch, acks = acks, []
        deadline = int(time.time() * 1000) + LEASE_MS
        items = await ack_and_pop(keys=[QUEUE, PROCESSING, DONE], args=[free, deadline, *batch])
        for raw in items:
            inflight += 1
            task = asyncio.create_task(run(raw))
            tasks.add(task)
            task.add_done_callback(tasks.discard)
        if not items:
            if inflight:
                await wake.wait()
                wake.clear()
            else:
                await asyncio.sleep(0.005)  # idle: poll (a real one would BLPOP a wake key)
        else:
            await asyncio.sleep(0)  # let the new tasks run before the next round trip


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("phase", choices=["enqueue", "worker"])
    parser.add_argument("--url", required=True)
    parser.add_argument("--n", type=int, default=20_000)
    parser.add_argument("--mode", choices=["single", "bulk"], default="single")
    parser.add_argument("--concurrency", type=int, default=50)
    args = parser.parse_args()
    import uvloop

    if args.phase == "enqueue":
        emit(uvloop.run(enqueue(args.url, args.n, args.mode)))
    else:
        uvloop.run(work(args.url, args.concurrency))


if __name__ == "__main__":
    main()
