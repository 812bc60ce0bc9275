"""WorkQueue's benchmark: WorkQueue, a raw-Redis floor and eight peer job queues, one machine.

Run it with ``nox -s bench`` (which installs the product and the peers' virtualenv), or by hand::

    python benchmarks/harness.py --peers-python PATH [--quick] [--only wq,floor,dramatiq]
                                 [--runs 3] [--n 20000] [--out benchmarks/results]

It starts its own redis-server (free port, no persistence) and empties it (FLUSHALL, on that
private server only) before every measurement. Each system is measured ``--runs`` times,
interleaved (run 1 of every system, then run 2...), so a slow minute of the shared machine
touches all systems alike; every figure is the median with its min-max. Ratios are computed
per run and then their median taken, because only ratios measured side by side mean anything
on a shared machine. Results go to ``<out>/<date>-<machine>.json`` and ``.md``.
"""

from __future__ import annotations

import argparse
import contextlib
import datetime as dt
import json
import os
import platform
import re
import shutil
import socket
import statistics
import subprocess
import sys
import tempfile
import time
import urllib.request
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))

from common import (
    HERE,
    BenchRedis,
    free_port,
    parse_result,
    stop_process,
    wait_until,
)

PEERS = ["arq", "saq", "streaq", "taskiq", "dramatiq", "rq", "celery", "huey"]
QUICK_PEERS = ["arq", "dramatiq", "rq"]
SYSTEMS = ["wq", "floor", *PEERS]
#: per-system N relative to the base N: larger for the fast, smaller where a run takes minutes
N_FACTOR = {"floor": 2.5, "rq": 0.1, "celery": 0.25, "huey": 0.25}
PEER_DB = {name: i + 1 for i, name in enumerate(PEERS)}
WQ_PREFIX = "bench"
WQ_QUEUE_STATS = f"{WQ_PREFIX}:{{default}}:stats"
HTTP_BATCH = 100

# (metric key, label, unit, higher is better)
METRICS: dict[str, tuple[str, str, bool]] = {
    "enqueue_single": ("enqueue one at a time", "jobs/s", True),
    "enqueue_bulk": ("enqueue bulk API", "jobs/s", True),
    "drain_1p": ("drain, 1 process", "jobs/s", True),
    "drain_2p": ("drain, 2 processes", "jobs/s", True),
    "drain_log_off_1p": ("drain log off, 1 process", "jobs/s", True),
    "drain_log_off_2p": ("drain log off, 2 processes", "jobs/s", True),
    "gather": ("gather 10,000 Client.enqueue", "jobs/s", True),
    "http_enqueue": ("HTTP POST /enqueue", "req/s", True),
    "http_trivial": ("trivial Litestar route", "req/s", True),
    "http_batch": (f"HTTP POST /enqueue/batch ({HTTP_BATCH}/req)", "jobs/s", True),
    "pickup_p50": ("pickup latency p50 @1,000/s", "ms", False),
    "pickup_p99": ("pickup latency p99 @1,000/s", "ms", False),
    "idle_worker": ("idle worker Redis commands", "cmd/s", False),
    "idle_producer": ("idle producer Redis commands", "cmd/s", False),
    "rt_enqueue_single": ("round trips per job, enqueue", "rt/job", False),
    "rt_drain": ("round trips per job, drain 1 process", "rt/job", False),
    "cmds_drain": ("Redis commands per job, drain 1 process", "cmd/job", False),
    "cmds_enqueue_bulk": ("Redis commands per job, enqueue bulk API", "cmd/job", False),
    "redis_us_drain": ("Redis CPU per job, drain 1 process", "us/job", False),
    "redis_us_enqueue_bulk": ("Redis CPU per job, enqueue bulk API", "us/job", False),
}
MAIN_COLUMNS = ["enqueue_single", "enqueue_bulk", "drain_1p", "drain_2p"]


#: remarks found while measuring (duplicates...), printed with the results
NOTES: list[str] = []


class NotRun(Exception):
    """A measurement that could not be made (recorded as 'not run: reason')."""


@dataclass
class Results:
    samples: dict[str, dict[str, list[float]]] = field(default_factory=dict)
    not_run: dict[str, str] = field(default_factory=dict)
    notes: list[str] = field(default_factory=list)
    n: dict[str, int] = field(default_factory=dict)

    def add(self, system: str, metric: str, value: float, run: int) -> None:
        values = self.samples.setdefault(system, {}).setdefault(metric, [])
        while len(values) < run:  # keep run indexes aligned when a sample is missing
            values.append(float("nan"))
        values.append(value)

    def values(self, system: str, metric: str) -> list[float]:
        return [v for v in self.samples.get(system, {}).get(metric, []) if v == v]

    def median(self, system: str, metric: str) -> float | None:
        values = self.values(system, metric)
        return statistics.median(values) if values else None


@dataclass
class Config:
    n: int
    runs: int
    quick: bool
    systems: list[str]
    peers_python: str | None
    workdir: Path
    http_seconds: float
    pickup_seconds: float
    idle_seconds: float
    verbose: bool = True

    def n_for(self, system: str) -> int:
        return max(200, int(self.n * N_FACTOR.get(system, 1.0)))


def log(message: str) -> None:
    stamp = time.strftime("%H:%M:%S")
    print(f"[{stamp}] {message}", flush=True)


# -- subprocess plumbing ------------------------------------------------------------------


def run_script(argv: list[str], env: dict[str, str], timeout: float) -> dict[str, Any]:
    """Run a measuring script to completion and return its result line."""
    proc = subprocess.run(
        argv, env=env, capture_output=True, text=True, timeout=timeout, check=False
    )
    if proc.returncode != 0:
        last = [line for line in proc.stderr.splitlines() if line.strip()][-1:] or [""]
        raise NotRun(f"{Path(argv[1]).name} exited {proc.returncode}: {last[0].strip()}")
    return parse_result(proc.stdout)


@contextlib.contextmanager
def started(
    argvs: list[list[str]], env: dict[str, str], logfile: Path
) -> Iterator[list[subprocess.Popen[bytes]]]:
    """Start worker commands (each in its own process group); stop them all afterwards."""
    procs: list[subprocess.Popen[bytes]] = []
    with logfile.open("ab") as out:
        try:
            for argv in argvs:
                procs.append(
                    subprocess.Popen(
                        argv,
                        env=env,
                        stdout=out,
                        stderr=subprocess.STDOUT,
                        stdin=subprocess.DEVNULL,
                        start_new_session=True,
                        cwd=env.get("BENCH_CWD"),
                    )
                )
            yield procs
        finally:
            for proc in procs:
                with contextlib.suppress(ProcessLookupError):
                    os.killpg(proc.pid, 15)
            for proc in procs:
                stop_process(proc, 8)


def redis_cpu_us(server: BenchRedis) -> float:
    """CPU time (user + system) the whole redis-server process has used, in microseconds."""
    cpu = server.info("cpu")
    return (float(cpu["used_cpu_user"]) + float(cpu["used_cpu_sys"])) * 1e6


def redis_counters(server: BenchRedis) -> tuple[int, int, int]:
    """(client reads processed, commands called, INFO calls) of the whole server."""
    stats = server.info("stats")
    commands = server.info("commandstats")
    total = sum(int(v["calls"]) for v in commands.values())
    info_calls = int(commands.get("cmdstat_info", {}).get("calls", 0))
    return int(stats["total_reads_processed"]), total, info_calls


# -- drains -----------------------------------------------------------------------------


@dataclass
class Drain:
    rate: float
    rt_per_job: float
    cmds_per_job: float
    #: Redis CPU per job (the harness's own polls included: a few per 5 ms, so a small share)
    redis_us_per_job: float


def drain(
    server: BenchRedis,
    argvs: list[list[str]],
    env: dict[str, str],
    count: Callable[[Any], int],
    n: int,
    logfile: Path,
    label: str,
) -> Drain:
    """Start the workers, time from their start to ``count`` reaching n, check it stays n."""
    client = server.client()
    if count(client) != 0:
        raise NotRun(f"{label}: the done counter is not 0 before the workers start")
    reads0, cmds0, _ = redis_counters(server)
    cpu0 = redis_cpu_us(server)
    polls = 0
    timeout = max(90.0, n / 150)
    with started(argvs, env, logfile) as procs:
        start = time.perf_counter()
        deadline = start + timeout
        while True:
            done = count(client)
            polls += 1
            if done >= n:
                end = time.perf_counter()
                break
            if any(p.poll() is not None for p in procs):
                raise NotRun(f"{label}: a worker exited early (see {logfile.name})")
            if time.perf_counter() > deadline:
                raise NotRun(f"{label}: only {done}/{n} jobs done after {timeout:.0f} s")
            time.sleep(0.005)
        reads1, cmds1, _ = redis_counters(server)
        cpu1 = redis_cpu_us(server)
        time.sleep(0.3)
        final = count(client)
    if final < n:
        raise NotRun(f"{label}: {final} executions counted for {n} jobs")
    seconds = end - start
    if final > n:
        NOTES.append(f"{label}: {final - n} duplicate executions of {n} jobs")
    # the harness's own polls and INFO calls are not the system's traffic
    rt = (reads1 - reads0 - polls - 3) / n
    cmds = (cmds1 - cmds0 - polls - 3) / n
    return Drain(n / seconds, rt, cmds, (cpu1 - cpu0) / n)


# -- the floor and the peers --------------------------------------------------------------


def python_env(server: BenchRedis, extra: dict[str, str] | None = None) -> dict[str, str]:
    env = dict(os.environ)
    env.pop("PYTHONPATH", None)
    env["PYTHONUNBUFFERED"] = "1"
    env.update(extra or {})
    return env


def measure_floor(server: BenchRedis, cfg: Config, res: Results, run: int) -> None:
    n = cfg.n_for("floor")
    env = python_env(server)
    script = str(HERE / "floor.py")
    logfile = cfg.workdir / "floor.log"

    def counter(client: Any) -> int:
        return int(client.get("floor:done") or 0)

    for mode, procs in (("single", 1), ("bulk", 2)):
        server.flushall()
        reads0, _, _ = redis_counters(server)
        argv = [sys.executable, script, "enqueue", "--url", server.url, "--n", str(n)]
        out = run_script([*argv, "--mode", mode], env, 600)
        res.add("floor", f"enqueue_{mode}", out["n"] / out["seconds"], run)
        if mode == "single":
            reads1, _, _ = redis_counters(server)
            res.add("floor", "rt_enqueue_single", (reads1 - reads0 - 3) / n, run)
        worker = [sys.executable, script, "worker", "--url", server.url]
        result = drain(server, [worker] * procs, env, counter, n, logfile, f"floor {procs}p")
        res.add("floor", f"drain_{procs}p", result.rate, run)
        if procs == 1:
            res.add("floor", "rt_drain", result.rt_per_job, run)
            res.add("floor", "cmds_drain", result.cmds_per_job, run)
            res.add("floor", "redis_us_drain", result.redis_us_per_job, run)


def measure_peer(peer: str, server: BenchRedis, cfg: Config, res: Results, run: int) -> None:
    if cfg.peers_python is None:
        raise NotRun("no peers virtualenv (--peers-python)")
    n = cfg.n_for(peer)
    url = f"redis://127.0.0.1:{server.port}/{PEER_DB[peer]}"
    peers_dir = HERE / "peers"
    env = python_env(
        server,
        {
            "BENCH_REDIS_URL": url,
            "PYTHONPATH": str(peers_dir),
            "BENCH_CWD": str(peers_dir),
            "BENCH_COUNT": "direct" if peer == "rq" else "batched",
        },
    )
    run_py = str(peers_dir / "run.py")
    info = json.loads(
        subprocess.run(
            [cfg.peers_python, run_py, peer, "info"],
            env=env,
            capture_output=True,
            text=True,
            timeout=120,
            check=True,
        ).stdout
    )
    if run == 0:
        res.notes.append(f"{peer} {info['version']}")
    logfile = cfg.workdir / f"{peer}.log"
    import redis

    peer_client = redis.Redis(port=server.port, db=PEER_DB[peer], socket_timeout=30)

    def count(_: Any) -> int:
        return int(peer_client.get("bench:done") or 0)

    for mode, procs in (("single", 1), ("bulk", 2)):
        server.flushall()
        # the drain-2p fill of a peer without a bulk API is not timed: "fill" lets asyncio
        # peers run their normal enqueue 200 calls at a time
        fill_mode = mode if (mode == "single" or info["bulk"]) else "fill"
        reads0, _, _ = redis_counters(server)
        out = run_script(
            [cfg.peers_python, run_py, peer, "enqueue", "--n", str(n), "--mode", fill_mode],
            env,
            600,
        )
        if mode == "single":
            reads1, _, _ = redis_counters(server)
            res.add(peer, "enqueue_single", out["n"] / out["seconds"], run)
            res.add(peer, "rt_enqueue_single", (reads1 - reads0 - 3) / n, run)
        elif info["bulk"]:
            res.add(peer, "enqueue_bulk", out["n"] / out["seconds"], run)
        argvs = json.loads(
            subprocess.run(
                [cfg.peers_python, run_py, peer, "argv", "--processes", str(procs)],
                env=env,
                capture_output=True,
                text=True,
                timeout=120,
                check=True,
            ).stdout
        )
        result = drain(server, argvs, env, count, n, logfile, f"{peer} {procs}p")
        res.add(peer, f"drain_{procs}p", result.rate, run)
        if procs == 1:
            res.add(peer, "rt_drain", result.rt_per_job, run)
            res.add(peer, "cmds_drain", result.cmds_per_job, run)
            res.add(peer, "redis_us_drain", result.redis_us_per_job, run)
    peer_client.close()


# -- WorkQueue -----------------------------------------------------------------------------


def wq_env(server: BenchRedis, cfg: Config) -> dict[str, str]:
    return python_env(
        server,
        {
            "WORKQUEUE_PLUGINS": "wq_bench_plugin",
            "WORKQUEUE_REDIS_URL": server.url,
            "WORKQUEUE_KEY_PREFIX": WQ_PREFIX,
            "BENCH_CWD": str(cfg.workdir),
        },
    )


def workqueue_exe() -> str:
    exe = Path(sys.executable).parent / "workqueue"
    if not exe.exists():
        raise NotRun("the workqueue command is not installed next to this python")
    return str(exe)


def wq_worker_argv(cfg: Config, processes: int, log_off: bool) -> list[str]:
    argv = [
        workqueue_exe(),
        "worker",
        "--metrics-port",
        "0",
        "--processes",
        str(processes),
        "--log-file",
        str(cfg.workdir / "wq-worker-events.log"),
    ]
    if log_off:
        argv += ["--log-level", "warning"]
    return argv


def wq_enqueue(server: BenchRedis, cfg: Config, n: int, mode: str) -> float:
    env = wq_env(server, cfg)
    argv = [sys.executable, str(HERE / "workqueue_bench.py"), "enqueue", "--url", server.url]
    out = run_script([*argv, "--prefix", WQ_PREFIX, "--n", str(n), "--mode", mode], env, 600)
    enqueued = int(server.client().hget(WQ_QUEUE_STATS, "enqueued") or 0)
    if enqueued != n:
        raise NotRun(f"WorkQueue {mode}: {enqueued} jobs enqueued of {n}")
    return float(out["n"] / out["seconds"])


def wq_done(client: Any) -> int:
    return int(client.hget(WQ_QUEUE_STATS, "done") or 0)


def measure_wq(server: BenchRedis, cfg: Config, res: Results, run: int) -> None:
    n = cfg.n_for("wq")
    plan = [
        ("single", 1, False, "drain_1p"),
        ("many", 2, False, "drain_2p"),
        ("many", 1, True, "drain_log_off_1p"),
        ("many", 2, True, "drain_log_off_2p"),
    ]
    for mode, procs, log_off, metric in plan:
        attempt(
            res,
            f"wq {metric}",
            lambda m=mode, p=procs, lo=log_off, me=metric: wq_drain_step(
                server, cfg, res, run, n, m, p, lo, me
            ),
        )
    server.flushall()
    attempt(
        res,
        "wq gather",
        lambda: res.add("wq", "gather", wq_enqueue(server, cfg, 10_000, "gather"), run),
    )
    attempt(res, "wq http", lambda: measure_wq_http(server, cfg, res, run))
    attempt(res, "wq pickup", lambda: measure_wq_pickup(server, cfg, res, run))
    server.flushall()


def attempt(res: Results, what: str, measure: Callable[[], object]) -> None:
    """Make one WorkQueue measurement; a failure is recorded as 'not run' (and not retried
    in later runs) while the other measurements go on."""
    if what in res.not_run:
        return
    try:
        measure()
    except (NotRun, subprocess.SubprocessError, TimeoutError, OSError) as exc:
        reason = " ".join(str(exc).split())[-300:] or repr(exc)
        log(f"  {what}: not run: {reason}")
        res.not_run[what] = reason


def wq_drain_step(
    server: BenchRedis,
    cfg: Config,
    res: Results,
    run: int,
    n: int,
    mode: str,
    procs: int,
    log_off: bool,
    metric: str,
) -> None:
    env = wq_env(server, cfg)
    logfile = cfg.workdir / "wq-worker.out"
    server.flushall()
    reads0, cmds0, _ = redis_counters(server)
    cpu0 = redis_cpu_us(server)
    rate = wq_enqueue(server, cfg, n, mode)
    if mode == "single":
        reads1, _, _ = redis_counters(server)
        res.add("wq", "enqueue_single", rate, run)
        res.add("wq", "rt_enqueue_single", (reads1 - reads0 - 4) / n, run)
    elif metric == "drain_2p":
        _, cmds1, _ = redis_counters(server)
        res.add("wq", "enqueue_bulk", rate, run)
        # wq_enqueue's own HGET of the counter and the INFO calls are the harness's, not ours
        res.add("wq", "cmds_enqueue_bulk", (cmds1 - cmds0 - 4) / n, run)
        res.add("wq", "redis_us_enqueue_bulk", (redis_cpu_us(server) - cpu0) / n, run)
    argv = wq_worker_argv(cfg, procs, log_off)
    result = drain(server, [argv], env, wq_done, n, logfile, f"WorkQueue {metric}")
    res.add("wq", metric, result.rate, run)
    if metric == "drain_1p":
        res.add("wq", "rt_drain", result.rt_per_job, run)
        res.add("wq", "cmds_drain", result.cmds_per_job, run)
        res.add("wq", "redis_us_drain", result.redis_us_per_job, run)


WRK_SCRIPT = """wrk.method = "POST"
wrk.headers["Content-Type"] = "application/json"
wrk.body = '{body}'
"""


def wrk(url: str, body: str, seconds: float, workdir: Path) -> tuple[float, int, int]:
    """(requests/s, requests, non-2xx responses) of ``wrk`` POSTing ``body`` to ``url``."""
    exe = shutil.which("wrk")
    if exe is None:
        raise NotRun("wrk is not installed (apt-get install wrk)")
    script = workdir / "post.lua"
    script.write_text(WRK_SCRIPT.format(body=body))
    argv = [exe, "-t1", "-c50", f"-d{seconds:g}s", "--timeout", "10s", "-s", str(script), url]
    proc = subprocess.run(argv, capture_output=True, text=True, timeout=seconds + 60, check=False)
    out = proc.stdout
    rate = re.search(r"Requests/sec:\s+([\d.]+)", out)
    total = re.search(r"(\d+) requests in", out)
    bad = re.search(r"Non-2xx or 3xx responses:\s+(\d+)", out)
    errors = re.search(r"Socket errors:.*", out)
    if rate is None or total is None:
        raise NotRun(f"wrk printed no rate: {out[-500:]} {proc.stderr[-300:]}")
    failed = int(bad.group(1)) if bad else 0
    if errors:
        failed += sum(int(x) for x in re.findall(r"\d+", errors.group(0)))
    return float(rate.group(1)), int(total.group(1)), failed


def wait_http(url: str, timeout: float = 60) -> None:
    def ok() -> bool:
        try:
            with urllib.request.urlopen(url, timeout=2) as answer:  # noqa: S310 (loopback)
                return bool(answer.status == 200)
        except OSError:
            return False

    wait_until(ok, timeout, 0.1, url)


def post_once(url: str, body: str) -> int:
    request = urllib.request.Request(  # noqa: S310 (loopback)
        url, data=body.encode(), headers={"Content-Type": "application/json"}, method="POST"
    )
    with urllib.request.urlopen(request, timeout=10) as answer:  # noqa: S310
        return int(answer.status)


def measure_wq_http(server: BenchRedis, cfg: Config, res: Results, run: int) -> None:
    env = wq_env(server, cfg)
    one = json.dumps({"type": "bench_noop", "payload": {}})
    batch = json.dumps([{"type": "bench_noop", "payload": {}}] * HTTP_BATCH)
    seconds = cfg.http_seconds
    server.flushall()
    port = free_port()
    producer = [
        workqueue_exe(),
        "producer",
        "--port",
        str(port),
        "--log-file",
        str(cfg.workdir / "wq-producer-events.log"),
    ]
    base = f"http://127.0.0.1:{port}"
    with started([producer], env, cfg.workdir / "wq-producer.out"):
        wait_http(base + "/health")
        post_once(base + "/enqueue", one)
        wrk(base + "/enqueue", one, 1, cfg.workdir)  # warm-up
        server.flushall()
        rate, total, failed = wrk(base + "/enqueue", one, seconds, cfg.workdir)
        enqueued = int(server.client().hget(WQ_QUEUE_STATS, "enqueued") or 0)
        if failed or enqueued < total:
            raise NotRun(f"POST /enqueue: {failed} failed, {enqueued} enqueued of {total}")
        res.add("wq", "http_enqueue", rate, run)
        server.flushall()
        rate, total, failed = wrk(base + "/enqueue/batch", batch, seconds, cfg.workdir)
        enqueued = int(server.client().hget(WQ_QUEUE_STATS, "enqueued") or 0)
        if failed or enqueued < total * HTTP_BATCH:
            raise NotRun(f"POST /enqueue/batch: {failed} failed, {enqueued} of {total} x 100")
        res.add("wq", "http_batch", rate * HTTP_BATCH, run)
    server.flushall()
    port = free_port()
    trivial = [sys.executable, str(HERE / "trivial_app.py"), "--port", str(port)]
    base = f"http://127.0.0.1:{port}"
    with started([trivial], env, cfg.workdir / "trivial.out"):
        wait_http_post(base + "/enqueue", one)
        wrk(base + "/enqueue", one, 1, cfg.workdir)
        rate, total, failed = wrk(base + "/enqueue", one, seconds, cfg.workdir)
        if failed:
            raise NotRun(f"trivial route: {failed} failed requests")
        res.add("wq", "http_trivial", rate, run)


def wait_http_post(url: str, body: str) -> None:
    def ok() -> bool:
        try:
            return post_once(url, body) < 300
        except OSError:
            return False

    wait_until(ok, 60, 0.1, url)


def measure_wq_pickup(server: BenchRedis, cfg: Config, res: Results, run: int) -> None:
    env = wq_env(server, cfg)
    server.flushall()
    out = cfg.workdir / f"pickup-{run}.txt"
    out.unlink(missing_ok=True)
    client = server.client()
    worker = wq_worker_argv(cfg, 1, False)
    with started([worker], env, cfg.workdir / "wq-worker.out"):
        wait_until(lambda: client.zcard(f"{WQ_PREFIX}:workers") > 0, 60, 0.05, "the worker")
        argv = [sys.executable, str(HERE / "workqueue_bench.py"), "pickup", "--url", server.url]
        argv += ["--prefix", WQ_PREFIX, "--rate", "1000", "--seconds", str(cfg.pickup_seconds)]
        result = run_script([*argv, "--out", str(out)], env, cfg.pickup_seconds + 120)
        n = int(result["n"])

        def lines() -> int:
            return len(out.read_text().splitlines()) if out.exists() else 0

        wait_until(lambda: lines() >= n, 60, 0.05, "the pickup jobs")
    latencies = sorted(float(x) * 1000 for x in out.read_text().split())
    if len(latencies) != n:
        raise NotRun(f"pickup: {len(latencies)} latencies for {n} jobs")
    res.add("wq", "pickup_p50", percentile(latencies, 50), run)
    res.add("wq", "pickup_p99", percentile(latencies, 99), run)
    if result.get("late"):
        res.notes.append(f"pickup run {run}: the enqueuer fell >50 ms behind {result['late']}x")


def percentile(sorted_values: list[float], p: float) -> float:
    k = (len(sorted_values) - 1) * p / 100
    low = int(k)
    high = min(low + 1, len(sorted_values) - 1)
    return sorted_values[low] + (sorted_values[high] - sorted_values[low]) * (k - low)


def measure_idle(server: BenchRedis, cfg: Config, res: Results) -> None:
    """Redis commands/s of an idle worker and of an idle producer, three windows each."""
    env = wq_env(server, cfg)
    client = server.client()
    window = cfg.idle_seconds / 3
    server.flushall()
    worker = wq_worker_argv(cfg, 1, False)
    with started([worker], env, cfg.workdir / "wq-worker.out"):
        wait_until(lambda: client.zcard(f"{WQ_PREFIX}:workers") > 0, 60, 0.05, "the worker")
        time.sleep(2)
        for run in range(3):
            res.add("wq", "idle_worker", commands_in(server, window) / window, run)
    server.flushall()
    port = free_port()
    producer = [workqueue_exe(), "producer", "--port", str(port)]
    producer += ["--log-file", str(cfg.workdir / "wq-producer-events.log")]
    with started([producer], env, cfg.workdir / "wq-producer.out"):
        wait_http(f"http://127.0.0.1:{port}/health")
        time.sleep(1)
        for run in range(3):
            res.add("wq", "idle_producer", commands_in(server, window / 2) / (window / 2), run)


def commands_in(server: BenchRedis, seconds: float) -> float:
    """Commands other clients sent in ``seconds`` (the harness's INFO calls excluded)."""
    _, cmds0, info0 = redis_counters(server)
    time.sleep(seconds)
    _, cmds1, info1 = redis_counters(server)
    return max(0, (cmds1 - cmds0) - (info1 - info0))


# -- report --------------------------------------------------------------------------------


def fmt(value: float | None, unit: str = "") -> str:
    if value is None:
        return "-"
    if unit in ("ms", "rt/job", "cmd/job", "cmd/s") or abs(value) < 100:
        return f"{value:.2f}"
    return f"{value:,.0f}"


def cell(res: Results, system: str, metric: str) -> str:
    values = res.values(system, metric)
    if not values:
        return "-"
    unit = METRICS[metric][1]
    med = statistics.median(values)
    return f"{fmt(med, unit)} ({fmt(min(values), unit)}-{fmt(max(values), unit)})"


def ratio_samples(res: Results, a: tuple[str, str], b: tuple[str, str]) -> list[float]:
    """Per-run ratios a/b (same run index), the figures that survive a noisy machine."""
    xs = res.samples.get(a[0], {}).get(a[1], [])
    ys = res.samples.get(b[0], {}).get(b[1], [])
    return [x / y for x, y in zip(xs, ys, strict=False) if x == x and y == y and y > 0]


def ratio(res: Results, a: tuple[str, str], b: tuple[str, str]) -> float | None:
    values = ratio_samples(res, a, b)
    return statistics.median(values) if values else None


def fastest_peer(res: Results, metric: str) -> str | None:
    best: tuple[float, str] | None = None
    for peer in PEERS:
        med = res.median(peer, metric)
        if med is not None and (best is None or med > best[0]):
            best = (med, peer)
    return best[1] if best else None


@dataclass
class Target:
    label: str
    figure: float | None
    goal: str
    met: bool | None


def targets(res: Results) -> list[Target]:
    out: list[Target] = []

    def add(label: str, figure: float | None, goal: str, ok: Callable[[float], bool]) -> None:
        out.append(Target(label, figure, goal, None if figure is None else ok(figure)))

    for procs in (1, 2):
        peer = fastest_peer(res, f"drain_{procs}p")
        fig = ratio(res, ("wq", f"drain_{procs}p"), (peer, f"drain_{procs}p")) if peer else None
        add(f"drain default {procs}p / fastest peer ({peer})", fig, ">= 3x", lambda x: x >= 3)
    for procs in (1, 2):
        fig = ratio(res, ("wq", f"drain_log_off_{procs}p"), ("floor", f"drain_{procs}p"))
        add(f"drain log off {procs}p / floor", fig, ">= 0.5", lambda x: x >= 0.5)
    fig = ratio(res, ("wq", "enqueue_single"), ("floor", "enqueue_single"))
    add("Client.enqueue / floor one-at-a-time", fig, ">= 0.9", lambda x: x >= 0.9)
    add("gather 10,000 Client.enqueue (jobs/s)", res.median("wq", "gather"), ">= 50,000",
        lambda x: x >= 50_000)  # fmt: skip
    fig = ratio(res, ("wq", "enqueue_bulk"), ("floor", "enqueue_bulk"))
    add("enqueue_many / floor bulk", fig, ">= 0.5", lambda x: x >= 0.5)
    fig = ratio(res, ("wq", "http_enqueue"), ("wq", "http_trivial"))
    add("POST /enqueue / trivial route", fig, ">= 0.7", lambda x: x >= 0.7)
    add("POST /enqueue/batch (jobs/s)", res.median("wq", "http_batch"), ">= 50,000",
        lambda x: x >= 50_000)  # fmt: skip
    add("pickup p50 (ms)", res.median("wq", "pickup_p50"), "<= 2", lambda x: x <= 2)
    add("pickup p99 (ms)", res.median("wq", "pickup_p99"), "<= 10", lambda x: x <= 10)
    add("idle worker (Redis cmd/s)", res.median("wq", "idle_worker"), "<= 2", lambda x: x <= 2)
    idle = res.values("wq", "idle_producer")
    add("idle producer (Redis cmd/s)", max(idle) if idle else None, "0", lambda x: x == 0)
    return out


def render(res: Results, meta: dict[str, Any]) -> str:  # noqa: C901 (one table after another)
    lines = [
        f"# WorkQueue benchmark, {meta['date']} on {meta['machine']}",
        "",
        f"{meta['cpus']} CPUs, Python {meta['python']}, redis-server {meta['redis']}, "
        f"{meta['runs']} runs; N per system: "
        + ", ".join(f"{k} {v:,}" for k, v in res.n.items())
        + ". Figures: median (min-max) of the runs; ratios: median of per-run ratios.",
        "",
        "## Throughput (jobs/s)",
        "",
        "| system | " + " | ".join(METRICS[m][0] for m in MAIN_COLUMNS) + " | rt/job drain |",
        "|---" * (len(MAIN_COLUMNS) + 2) + "|",
    ]
    order = ["wq", "floor", *PEERS]
    for system in order:
        if system in res.not_run and system not in res.samples:
            lines.append(f"| {system} | not run: {res.not_run[system]} |")
            continue
        if system not in res.samples:
            continue
        row = [cell(res, system, m) for m in MAIN_COLUMNS]
        lines.append(f"| {system} | " + " | ".join(row) + f" | {cell(res, system, 'rt_drain')} |")
    if "wq" in res.samples:
        log_off = [cell(res, "wq", "drain_log_off_1p"), cell(res, "wq", "drain_log_off_2p")]
        lines.append(f"| wq, event log off | - | - | {log_off[0]} | {log_off[1]} | - |")
    lines += ["", "## Ratios (per-run ratio, median)", ""]
    lines.append("| system | " + " | ".join(METRICS[m][0] for m in MAIN_COLUMNS) + " |")
    lines.append("|---" * (len(MAIN_COLUMNS) + 1) + "|")
    fastest = {m: fastest_peer(res, m) for m in MAIN_COLUMNS}
    lines.append(
        "| fastest peer | " + " | ".join(str(fastest[m] or "-") for m in MAIN_COLUMNS) + " |"
    )
    for system in order:
        if system not in res.samples:
            continue
        cells = []
        for m in MAIN_COLUMNS:
            peer = fastest[m]
            r = ratio(res, (system, m), (peer, m)) if peer else None
            cells.append("-" if r is None else f"{r:.2f}x")
        lines.append(f"| {system} / fastest peer | " + " | ".join(cells) + " |")
    if "wq" in res.samples and "floor" in res.samples:
        cells = []
        for m in MAIN_COLUMNS:
            r = ratio(res, ("wq", m), ("floor", m))
            cells.append("-" if r is None else f"{r:.2f}x")
        lines.append("| wq / floor | " + " | ".join(cells) + " |")
        cells = []
        for m in ("drain_log_off_1p", "drain_log_off_2p"):
            r = ratio(res, ("wq", m), ("floor", m.replace("log_off_", "")))
            cells.append("-" if r is None else f"{r:.2f}x")
        lines.append(f"| wq, event log off / floor | - | - | {cells[0]} | {cells[1]} |")
    if "wq" in res.samples:
        lines += ["", "## WorkQueue", "", "| figure | median (min-max) | unit |", "|---|---|---|"]
        for metric, (label, unit, _) in METRICS.items():
            if res.values("wq", metric):
                lines.append(f"| {label} | {cell(res, 'wq', metric)} | {unit} |")
        lines += ["", "## Targets", "", "| target | figure | goal | met |", "|---|---|---|---|"]
        for t in targets(res):
            met = "not measured" if t.met is None else ("met" if t.met else "NOT met")
            shown = "-" if t.figure is None else f"{t.figure:,.2f}"
            lines.append(f"| {t.label} | {shown} | {t.goal} | {met} |")
    if res.not_run:
        lines += ["", "## Not run", ""]
        lines += [f"- {k}: {v}" for k, v in res.not_run.items()]
    if res.notes:
        lines += ["", "## Notes", ""]
        lines += [f"- {note}" for note in res.notes]
    return "\n".join(lines) + "\n"


def write_results(res: Results, meta: dict[str, Any], out_dir: Path) -> tuple[Path, Path]:
    out_dir.mkdir(parents=True, exist_ok=True)
    stem = f"{meta['date']}-{meta['machine']}"
    summary: dict[str, Any] = {}
    for system, metrics in res.samples.items():
        for metric, values in metrics.items():
            clean = [v for v in values if v == v]
            if clean:
                summary.setdefault(system, {})[metric] = {
                    "unit": METRICS[metric][1],
                    "median": statistics.median(clean),
                    "min": min(clean),
                    "max": max(clean),
                    "samples": clean,
                }
    data = {
        "meta": meta,
        "n": res.n,
        "results": summary,
        "targets": [t.__dict__ for t in targets(res)] if "wq" in res.samples else [],
        "not_run": res.not_run,
        "notes": res.notes,
    }
    json_path = out_dir / f"{stem}.json"
    md_path = out_dir / f"{stem}.md"
    json_path.write_text(json.dumps(data, indent=2) + "\n")
    md_path.write_text(render(res, meta))
    return json_path, md_path


# -- main ------------------------------------------------------------------------------------


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--quick", action="store_true", help="smoke test: small N, 1 run, 3 peers")
    parser.add_argument(
        "--only", default="", help="systems: wq,floor,<peers>; or cluster (cluster_bench.py)"
    )
    parser.add_argument("--runs", type=int, default=None, help="runs per figure (default 3)")
    parser.add_argument("--n", type=int, default=None, help="base N (default 20000)")
    parser.add_argument("--peers-python", default=None, help="python of the peers' virtualenv")
    parser.add_argument("--out", default=str(HERE / "results"), help="results directory")
    parser.add_argument("--no-write", action="store_true", help="print only")
    parser.add_argument("--render", metavar="JSON", help="rewrite the .md of a results .json")
    args = parser.parse_args(argv)
    if args.render:
        return rerender(Path(args.render))
    if args.only.strip() == "cluster":  # a benchmark of its own: benchmarks/cluster_bench.py
        import cluster_bench

        passed = [*(["--quick"] if args.quick else []), *(["--no-write"] if args.no_write else [])]
        passed += [*(["--runs", str(args.runs)] if args.runs else []), "--out", args.out]
        return cluster_bench.main([*passed, *(["--n", str(args.n)] if args.n else [])])
    quick = args.quick
    systems = [s.strip() for s in args.only.split(",") if s.strip()] or (
        ["wq", "floor", *QUICK_PEERS] if quick else SYSTEMS
    )
    unknown = set(systems) - set(SYSTEMS)
    if unknown:
        parser.error(f"unknown systems {sorted(unknown)}; choose from {','.join(SYSTEMS)}")
    workdir = Path(tempfile.mkdtemp(prefix="wq-bench-"))
    cfg = Config(
        n=args.n or (2000 if quick else 20_000),
        runs=args.runs or (1 if quick else 3),
        quick=quick,
        systems=systems,
        peers_python=args.peers_python,
        workdir=workdir,
        http_seconds=2 if quick else 5,
        pickup_seconds=2 if quick else 5,
        idle_seconds=6 if quick else 30,
    )
    res = Results()
    for system in systems:
        res.n[system] = cfg.n_for(system)
    started_at = time.perf_counter()
    with BenchRedis() as server:
        redis_version = server.info("server")["redis_version"]
        log(f"bench redis-server on port {server.port}; logs in {workdir}")
        for run in range(cfg.runs):
            for system in systems:
                if system in res.not_run:
                    continue
                log(f"run {run + 1}/{cfg.runs}: {system}")
                try:
                    if system == "wq":
                        measure_wq(server, cfg, res, run)
                    elif system == "floor":
                        measure_floor(server, cfg, res, run)
                    else:
                        measure_peer(system, server, cfg, res, run)
                except Exception as exc:  # one system's failure must not cost the others
                    reason = str(exc).strip().splitlines()[0][:300] if str(exc) else repr(exc)
                    if not isinstance(exc, NotRun | subprocess.SubprocessError | OSError):
                        reason = f"{type(exc).__name__}: {reason}"
                    log(f"  {system}: not run: {reason}")
                    res.not_run[system] = reason
        if "wq" in systems and "wq" not in res.not_run:
            log("idle worker and idle producer")
            try:
                measure_idle(server, cfg, res)
            except Exception as exc:
                res.not_run["wq idle"] = f"{type(exc).__name__}: {exc}"[:300]
    meta = {
        "date": dt.datetime.now(dt.UTC).strftime("%Y-%m-%d"),
        "finished": dt.datetime.now(dt.UTC).isoformat(timespec="seconds"),
        "machine": socket.gethostname().split(".")[0] or platform.node(),
        "cpus": os.cpu_count(),
        "python": platform.python_version(),
        "redis": redis_version,
        "runs": cfg.runs,
        "quick": quick,
        "workqueue": _version("workqueue-core"),
        "seconds": round(time.perf_counter() - started_at),
    }
    res.notes.extend(NOTES)
    report = render(res, meta)
    print()
    print(report)
    if not args.no_write:
        json_path, md_path = write_results(res, meta, Path(args.out))
        log(f"wrote {json_path} and {md_path}")
    shutil.rmtree(workdir, ignore_errors=True) if not res.not_run else None
    return 0


def rerender(json_path: Path) -> int:
    """Rebuild ``<stem>.md`` from ``<stem>.json`` (after a change to the tables' layout)."""
    data = json.loads(json_path.read_text())
    res = Results(n=data["n"], not_run=data["not_run"], notes=data["notes"])
    for system, metrics in data["results"].items():
        for metric, figure in metrics.items():
            res.samples.setdefault(system, {})[metric] = list(figure["samples"])
    report = render(res, data["meta"])
    json_path.with_suffix(".md").write_text(report)
    print(report)
    return 0


def _version(dist: str) -> str:
    from importlib.metadata import PackageNotFoundError, version

    try:
        return version(dist)
    except PackageNotFoundError:
        return "not installed"


if __name__ == "__main__":
    sys.exit(main())
