"""What fleet-wide limits cost and how exact they are (SPEC 12), on a private redis-server.

    python benchmarks/limits_bench.py [--n 20000] [--runs 3] [--rate-n 1000] [--rate 100/s]

1. **Drain with and without a limit**, alternating in the same run: N ``bench_noop`` jobs
   enqueued in bulk, one worker process drains them (the harness's ``drain``: from the
   worker's start to the done counter reaching N). "limited" sets a generous run-time limit on
   ``bench_noop`` (rate 1,000,000/s, concurrency 100,000: never binding), so every job takes
   the limit step (read limit_key, acquire, release) without ever being held back.
2. **Accuracy**: ``--rate-n`` jobs of ``test_limited_open`` limited at run time to ``--rate``,
   drained by 2 worker processes; the handlers record their start times. Reported: the
   observed steady rate (jobs after the first period's burst over the time they took) against
   the set rate, and the most starts in any window of one period (the bound is 2 x count).
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))

from common import BenchRedis  # noqa: E402
from harness import WQ_PREFIX, Config, drain, wq_enqueue, wq_env, wq_worker_argv  # noqa: E402


def cli(server: BenchRedis, env: dict[str, str], *args: str) -> None:
    exe = Path(sys.executable).parent / "workqueue"
    subprocess.run([str(exe), "limits", *args], env=env, check=True, capture_output=True)


def drains(
    server: BenchRedis, cfg: Config, n: int, runs: int, modes: list[str]
) -> dict[str, list[float]]:
    env = wq_env(server, cfg)
    out: dict[str, list[float]] = {}
    for mode in modes:
        out[mode] = []
        out[mode + "_cpu_us"] = []
    for run in range(runs):
        for mode in modes if run % 2 == 0 else modes[::-1]:
            server.flushall()
            if mode == "limited":
                cli(
                    server,
                    env,
                    "set",
                    "bench_noop",
                    "--rate",
                    "1000000/s",
                    "--concurrency",
                    "100000",
                )
            wq_enqueue(server, cfg, n, "many")
            argv = wq_worker_argv(cfg, 1, True)
            cpu0 = _children_cpu()
            result = drain(
                server,
                [argv],
                env,
                lambda c: int(c.hget(f"{WQ_PREFIX}:{{default}}:stats", "done") or 0),
                n,
                cfg.workdir / "limits-bench-worker.out",
                f"drain {mode}",
            )
            cpu_us = (_children_cpu() - cpu0) / n * 1e6
            out[mode].append(result.rate)
            out[mode + "_cpu_us"].append(cpu_us)
            print(
                f"run {run + 1} {mode:8s}: {result.rate:8.0f} jobs/s "
                f"({result.cmds_per_job:.2f} commands/job, worker CPU {cpu_us:.0f} us/job, "
                f"Redis CPU {result.redis_us_per_job:.1f} us/job)",
                flush=True,
            )
    return out


def _children_cpu() -> float:
    """CPU seconds (user + system) of this process's waited-for children (the workers)."""
    usage = resource.getrusage(resource.RUSAGE_CHILDREN)
    return usage.ru_utime + usage.ru_stime


def accuracy(server: BenchRedis, cfg: Config, n: int, rate: str) -> dict[str, Any]:
    from workqueue.limits import parse_rate

    server.flushall()
    parsed = parse_rate(rate)
    env = {**wq_env(server, cfg), "WORKQUEUE_PLUGINS": "wq_testplugin_good,wq_bench_plugin"}
    cli(server, env, "set", "test_limited_open", "--rate", rate)
    ledger = cfg.workdir / "limits-ledger"
    ledger.unlink(missing_ok=True)
    code = (
        "import asyncio, sys\n"
        "from workqueue import Client, TaskSpec\n"
        "from workqueue.broker.broker import BrokerConfig\n"
        "async def main():\n"
        f"    c = Client.from_url({server.url!r}, config=BrokerConfig(prefix={WQ_PREFIX!r}))\n"
        f"    await c.enqueue_many([TaskSpec('test_limited_open', {{'ledger': {str(ledger)!r}}})"
        f" for _ in range({n})])\n"
        "    await c.aclose()\n"
        "asyncio.run(main())\n"
    )
    subprocess.run([sys.executable, "-c", code], env=env, check=True, stderr=subprocess.DEVNULL)
    argv = wq_worker_argv(cfg, 2, True)
    proc = subprocess.Popen(
        argv,
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        start_new_session=True,
        cwd=cfg.workdir,
    )
    try:
        deadline = time.monotonic() + n / (parsed.count * 1000 / parsed.period_ms) * 3 + 30
        while True:
            lines = ledger.read_text().splitlines() if ledger.exists() else []
            if sum('"start"' in line for line in lines) >= n:
                break
            if time.monotonic() > deadline:
                raise SystemExit(f"accuracy: only {len(lines)} ledger lines")
            time.sleep(0.2)
    finally:
        os.killpg(proc.pid, 15)
        proc.wait(timeout=30)
    starts = sorted(json.loads(line)["t"] for line in lines if '"start"' in line)
    period = parsed.period_ms / 1000
    burst = parsed.count
    steady = (len(starts) - burst) / (starts[-1] - starts[0])
    most = 0
    j = 0
    for i in range(len(starts)):
        while starts[i] - starts[j] > period:
            j += 1
        most = max(most, i - j + 1)
    set_rate = parsed.count / period
    return {
        "set_per_s": set_rate,
        "observed_steady_per_s": round(steady, 3),
        "error_pct": round((steady - set_rate) / set_rate * 100, 2),
        "most_in_one_period": most,
        "bound_in_one_period": 2 * parsed.count,
        "jobs": len(starts),
        "took_s": round(starts[-1] - starts[0], 3),
    }


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--n", type=int, default=20_000)
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--rate-n", type=int, default=1000)
    parser.add_argument("--rate", default="100/s")
    parser.add_argument(
        "--modes",
        default="none,limited",
        help="'none' alone measures a core without limits (run with that core's python)",
    )
    args = parser.parse_args()
    workdir = Path(tempfile.mkdtemp(prefix="wq-limits-bench-"))
    cfg = Config(args.n, args.runs, False, ["wq"], None, workdir, 0, 0, 0)
    server = BenchRedis().start()
    try:
        modes = args.modes.split(",")
        rates = drains(server, cfg, args.n, args.runs, modes)
        summary: dict[str, float] = {m: round(statistics.median(v)) for m, v in rates.items()}
        if "limited_cpu_us" in summary and "none_cpu_us" in summary:
            summary["cpu_limited_vs_none"] = round(
                summary["limited_cpu_us"] / summary["none_cpu_us"], 3
            )
        if "limited" in summary and "none" in summary:
            summary["limited_vs_none"] = round(summary["limited"] / summary["none"], 3)
        print("drain median jobs/s:", json.dumps(summary), flush=True)
        if "limited" in modes:
            result = accuracy(server, cfg, args.rate_n, args.rate)
            print("accuracy:", json.dumps(result), flush=True)
    finally:
        server.stop()


if __name__ == "__main__":
    main()
