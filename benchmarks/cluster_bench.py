"""One queue's workload on a 3-master Redis Cluster beside the same workload on one Redis, in
the same run: the Redis CPU and the commands each master spends per job, how evenly the jobs
spread over the masters, and from them the Redis-bound throughput of 3, 6 and 12 masters.

    python benchmarks/cluster_bench.py [--n 20000] [--runs 3] [--quick] [--no-write]
    nox -s bench -- --only cluster          (the harness hands over to this script)

Set-up, all private to the run (from the ``redis-server`` and ``redis-cli`` binaries, on free
ports in a temp dir, stopped at the end): one ``redis-server``, and a cluster of 3 masters
without replicas (tests/cluster_stack.py; no replicas, so each master's CPU is its own
clients' work only), both with the append-only file on (``appendfsync everysec``).

The workload: when partitioned queues are available (``workqueue queues set NAME
--partitions N``), ONE queue with 6 partitions (on the cluster, 2 on each master); before
that, 3 queues whose slots are on the 3 masters. The same layout on the one Redis. Per run
and topology:

1. enqueue: ``--n`` ``bench_noop`` jobs with ``Client.enqueue_many`` (1,000 per call, the
   tasks spread over the queues/partitions), timed;
2. drain: one ``workqueue worker --processes 2`` consuming the queue(s), timed from its start
   until every job is done (each physical queue's ``done`` counter, polled every 20 ms).

Per master, around each phase: ``INFO cpu`` (``used_cpu_user + used_cpu_sys``: the whole
redis-server process), ``INFO commandstats`` (calls, Lua's inner commands included; the
bench's own INFO and polling commands subtracted) and the jobs it held (its queues' ``done``
counters). The projection: ``masters x 1e6 / (Redis us per job on a master)``, the jobs
spread evenly (what the figures show for partitions on evenly split slots) and enough client
cores (producers and workers on other machines) that Redis is the bottleneck.
"""

from __future__ import annotations

import argparse
import asyncio
import datetime as dt
import json
import os
import platform
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE.parent / "tests"))  # the cluster stack and the private server

import redis  # noqa: E402
from cluster_stack import ClusterStack, start_cluster_stack  # noqa: E402
from redis.crc import key_slot  # noqa: E402
from redis_server import RedisServer  # noqa: E402

PREFIX = "wqcb"
QUEUE = "cbq"
PARTITIONS = 6
PROJECT_MASTERS = (3, 6, 12)
WORKER_PROCESSES = 2
BULK = 1000


def partitions_available() -> bool:
    """Whether this checkout has partitioned queues (``queues set --partitions``)."""
    try:
        from workqueue.broker import partitions  # noqa: F401
    except ImportError:
        return False
    return True


def physical_queues(partitioned: bool, masters: list[redis.Redis] | None) -> list[str]:
    """The physical queues the workload lands on: the partitions of QUEUE, or (without
    partitions) 3 queues whose slots are on 3 different masters of the cluster."""
    if partitioned:
        from workqueue.broker.partitions import partition_name

        return [QUEUE] + [partition_name(QUEUE, i, PARTITIONS) for i in range(1, PARTITIONS)]
    assert masters is not None
    owners = [_slot_ranges(node) for node in masters]
    chosen: list[str] = []
    taken: set[int] = set()
    for n in range(100_000):
        name = f"cbq{n}"
        slot = key_slot(f"{{{name}}}".encode())
        owner = next(i for i, ranges in enumerate(owners) if _owns(ranges, slot))
        if owner not in taken:
            taken.add(owner)
            chosen.append(name)
        if len(chosen) == len(masters):
            return chosen
    raise LookupError("no queue names for every master")


def _slot_ranges(node: redis.Redis) -> list[tuple[int, int]]:
    me = int(node.connection_pool.connection_kwargs["port"])
    return [
        (int(start), int(end))
        for start, end, master, *_ in node.execute_command("CLUSTER SLOTS")
        if int(master[1]) == me
    ]


def _owns(ranges: list[tuple[int, int]], slot: int) -> bool:
    return any(start <= slot <= end for start, end in ranges)


@dataclass
class Topology:
    """One Redis or a cluster: the URL and a direct client of each master."""

    name: str
    url: str
    masters: list[redis.Redis]
    cluster: ClusterStack | None = None

    def owner(self, queue: str) -> int:
        """Index of the master holding ``queue``'s keys."""
        if self.cluster is None:
            return 0
        port = self.cluster.master_of_slot(key_slot(f"{{{queue}}}".encode())).port
        return next(
            i
            for i, node in enumerate(self.masters)
            if node.connection_pool.connection_kwargs["port"] == port
        )

    def flush(self) -> None:
        for node in self.masters:
            node.flushall()


@dataclass
class Snapshot:
    cpu_us: list[float]
    calls: list[int]


def snapshot(topology: Topology) -> Snapshot:
    """CPU (us) and command calls of each master. Costs each master 2 INFO calls."""
    cpu, calls = [], []
    for node in topology.masters:
        info = node.info("cpu")
        cpu.append((float(info["used_cpu_user"]) + float(info["used_cpu_sys"])) * 1e6)
        calls.append(sum(int(row["calls"]) for row in node.info("commandstats").values()))
    return Snapshot(cpu, calls)


@dataclass
class Phase:
    """One phase's figures, per master."""

    seconds: float
    jobs: list[int]
    cpu_us: list[float]
    commands: list[int]
    #: jobs per physical queue (queue or partition) at the phase's end
    per_queue: dict[str, int] = field(default_factory=dict)


def phase_figures(
    topology: Topology, before: Snapshot, after: Snapshot, own: list[int], jobs: list[int]
) -> Phase:
    return Phase(
        0.0,
        jobs,
        [a - b for a, b in zip(after.cpu_us, before.cpu_us, strict=True)],
        # the snapshot's own 2 INFO calls, and the bench's polls, are not the workload's
        [a - b - 2 - o for a, b, o in zip(after.calls, before.calls, own, strict=True)],
    )


async def _enqueue(url: str, queues: list[str], partitioned: bool, n: int) -> float:
    from workqueue import Client, TaskSpec
    from workqueue.broker.broker import BrokerConfig
    from workqueue.log import configure_logging

    # the event log on, to a file, as benchmarks/workqueue_bench.py runs it
    log_dir = Path(os.environ.get("BENCH_CWD", "."))
    configure_logging(role="client", log_file=log_dir / "wq-client-events.log", stderr=False)
    client = Client.from_url(url, config=BrokerConfig(prefix=PREFIX))
    try:
        names = [QUEUE] if partitioned else queues
        for q in names:  # warm up: connection, scripts, queue registry (not timed)
            await client.enqueue_many([TaskSpec("bench_noop", {}, queue=q)])
        start = time.perf_counter()
        for first in range(0, n, BULK):
            count = min(BULK, n - first)
            await client.enqueue_many(
                [
                    TaskSpec("bench_noop", {}, queue=names[(first + i) % len(names)])
                    for i in range(count)
                ]
            )
        return time.perf_counter() - start
    finally:
        await client.aclose()


def _set_partitions(url: str, workdir: Path) -> None:
    subprocess.run(
        [
            str(Path(sys.executable).parent / "workqueue"),
            "queues",
            "set",
            QUEUE,
            "--partitions",
            str(PARTITIONS),
        ],
        env=_env(url, workdir),
        check=True,
        stdout=subprocess.DEVNULL,
        timeout=60,
    )


def _env(url: str, workdir: Path) -> dict[str, str]:
    return {
        **os.environ,
        "WORKQUEUE_PLUGINS": "wq_bench_plugin",
        "WORKQUEUE_REDIS_URL": url,
        "WORKQUEUE_KEY_PREFIX": PREFIX,
        "BENCH_CWD": str(workdir),
    }


def _done(topology: Topology, queues: list[str], owners: list[int]) -> list[int]:
    """Jobs done per master (each physical queue's ``done`` counter, asked of its master)."""
    per = [0] * len(topology.masters)
    for q, owner in zip(queues, owners, strict=True):
        per[owner] += int(topology.masters[owner].hget(f"{PREFIX}:{{{q}}}:stats", "done") or 0)
    return per


def _enqueued(topology: Topology, queues: list[str], owners: list[int]) -> list[int]:
    per = [0] * len(topology.masters)
    for q, owner in zip(queues, owners, strict=True):
        raw = topology.masters[owner].hget(f"{PREFIX}:{{{q}}}:stats", "enqueued")
        per[owner] += int(raw or 0)
    return per


def run_once(
    topology: Topology, queues: list[str], partitioned: bool, n: int, workdir: Path
) -> dict[str, Phase]:
    """Enqueue n jobs, then drain them with one worker supervisor; the two phases' figures."""
    topology.flush()
    owners = [topology.owner(q) for q in queues]
    if partitioned:
        _set_partitions(topology.url, workdir)
    warm = len([QUEUE] if partitioned else queues)
    before = snapshot(topology)
    seconds = asyncio.run(_enqueue(topology.url, queues, partitioned, n))
    after = snapshot(topology)
    # the jobs counted include the warm-up's few (their cost is in the deltas too)
    own = [0] * len(topology.masters)
    enq = phase_figures(topology, before, after, own, _enqueued(topology, queues, owners))
    enq.seconds = seconds
    total = n + warm

    polls = [0] * len(topology.masters)
    before = snapshot(topology)
    log = workdir / f"worker-{topology.name}.log"
    argv = [
        str(Path(sys.executable).parent / "workqueue"),
        "worker",
        "--metrics-port",
        "0",
        "--processes",
        str(WORKER_PROCESSES),
        *(
            arg
            for q in ([QUEUE] if partitioned else queues)
            for arg in ("--queue", q)  # logical queues: a worker fetches every partition
        ),
    ]
    with open(log, "wb") as out:
        proc = subprocess.Popen(
            argv,
            env={**_env(topology.url, workdir), "WORKQUEUE_LOG_FILE": str(log) + ".events"},
            stdout=out,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
    try:
        start = time.perf_counter()
        deadline = start + max(120.0, total / 100)
        while True:
            done = _done(topology, queues, owners)
            for q_owner in owners:
                polls[q_owner] += 1
            if sum(done) >= total:
                end = time.perf_counter()
                break
            if proc.poll() is not None:
                raise RuntimeError(f"the worker exited early: see {log}")
            if time.perf_counter() > deadline:
                raise RuntimeError(f"{sum(done)}/{total} jobs done after the deadline")
            time.sleep(0.02)
        after = snapshot(topology)
    finally:
        proc.terminate()
        try:
            proc.wait(30)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(10)
    drain = phase_figures(topology, before, after, polls, done)
    drain.seconds = end - start
    drain.per_queue = {
        f"{q} (master {owner + 1})": int(
            topology.masters[owner].hget(f"{PREFIX}:{{{q}}}:stats", "done") or 0
        )
        for q, owner in zip(queues, owners, strict=True)
    }
    return {"enqueue": enq, "drain": drain}


@dataclass
class Summary:
    """Medians over the runs of one topology."""

    name: str
    masters: int
    enqueue_rate: float
    drain_rate: float
    jobs: list[float]
    share: list[float]
    enqueue_us: list[float]
    drain_us: list[float]
    enqueue_cmds: list[float]
    drain_cmds: list[float]
    projected: dict[int, float] = field(default_factory=dict)

    @property
    def us_per_job(self) -> list[float]:
        return [a + b for a, b in zip(self.enqueue_us, self.drain_us, strict=True)]


def summarize(name: str, runs: list[dict[str, Phase]], n: int) -> Summary:
    def med(values: list[float]) -> float:
        return float(statistics.median(values))

    masters = len(runs[0]["drain"].jobs)

    def per_master(phase: str, what: str) -> list[float]:
        out = []
        for m in range(masters):
            values = []
            for run in runs:
                p = run[phase]
                jobs = p.jobs[m] or 1
                values.append((p.cpu_us[m] if what == "cpu" else p.commands[m]) / jobs)
            out.append(med(values))
        return out

    jobs = [med([run["drain"].jobs[m] for run in runs]) for m in range(masters)]
    total = sum(jobs) or 1
    summary = Summary(
        name=name,
        masters=masters,
        enqueue_rate=med([n / r["enqueue"].seconds for r in runs]),
        drain_rate=med([sum(r["drain"].jobs) / r["drain"].seconds for r in runs]),
        jobs=jobs,
        share=[j / total for j in jobs],
        enqueue_us=per_master("enqueue", "cpu"),
        drain_us=per_master("drain", "cpu"),
        enqueue_cmds=per_master("enqueue", "cmds"),
        drain_cmds=per_master("drain", "cmds"),
    )
    mean_us = statistics.fmean(summary.us_per_job)
    summary.projected = {m: m * 1e6 / mean_us for m in PROJECT_MASTERS}
    return summary


@contextmanager
def topologies(workdir: Path) -> Iterator[tuple[Topology, Topology]]:
    single_dir = workdir / "single"
    single_dir.mkdir(parents=True)
    server = RedisServer(single_dir, appendfsync="everysec")
    server.start()
    stack: ClusterStack | None = None
    try:
        stack = start_cluster_stack(workdir / "cluster", masters=3, replicas=0)
        single = Topology("one Redis", server.url, [server.client()])
        masters = sorted(stack.masters(), key=lambda node: node.port)
        cluster = Topology("cluster", stack.url, [m.client() for m in masters], stack)
        yield single, cluster
    finally:
        if stack is not None:
            stack.close()
        server.close()


def render(summaries: list[Summary], meta: dict[str, Any]) -> str:
    lines = [
        f"# Redis Cluster benchmark, {meta['date']}",
        "",
        f"`{meta['command']}` on {meta['machine']} ({meta['cpus']} cores, Redis "
        f"{meta['redis']}, Python {meta['python']}); {meta['runs']} runs of {meta['n']:,} "
        f"`bench_noop` jobs per topology, interleaved; medians. Workload: {meta['workload']}. "
        f"Enqueue: `Client.enqueue_many`, 1,000 per call; drain: one `workqueue worker "
        f"--processes {WORKER_PROCESSES}`. Redis CPU = `INFO cpu` used_cpu_user+sys of the "
        "whole redis-server; commands = `INFO commandstats` calls (Lua's inner commands "
        "included), the bench's own INFO and polling commands subtracted. Took "
        f"{meta['seconds']} s.",
        "",
        "| topology | master | jobs (share) | Redis us/job enqueue | Redis us/job drain | "
        "Redis us/job total | commands/job enqueue | commands/job drain |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for s in summaries:
        for m in range(s.masters):
            lines.append(
                f"| {s.name} | {m + 1} | {s.jobs[m]:,.0f} ({s.share[m]:.1%}) | "
                f"{s.enqueue_us[m]:.1f} | {s.drain_us[m]:.1f} | {s.us_per_job[m]:.1f} | "
                f"{s.enqueue_cmds[m]:.2f} | {s.drain_cmds[m]:.2f} |"
            )
    lines += [
        "",
        "| topology | enqueue jobs/s (this machine) | drain jobs/s (this machine) | "
        + " | ".join(f"projected Redis-bound, {m} masters" for m in PROJECT_MASTERS)
        + " |",
        "|---|---|---|" + "---|" * len(PROJECT_MASTERS),
    ]
    for s in summaries:
        lines.append(
            f"| {s.name} | {s.enqueue_rate:,.0f} | {s.drain_rate:,.0f} | "
            + " | ".join(f"{s.projected[m]:,.0f} jobs/s" for m in PROJECT_MASTERS)
            + " |"
        )
    lines += ["", "Jobs per physical queue in the cluster's last run:", ""]
    lines += [f"- `{name}`: {jobs:,}" for name, jobs in meta.get("per_queue", {}).items()]
    lines += [
        "",
        "The projection is `masters x 1e6 / mean Redis us per job (enqueue + drain) on a "
        "master`: it assumes the jobs spread evenly over the masters (the share column), one "
        "core per redis-server, and enough client cores elsewhere (producers and workers) that "
        "Redis is the bottleneck; the 'one Redis' row projects the same per-job cost onto "
        "independent masters for comparison. On this machine the cluster cannot be faster: "
        "its 3 redis-servers, the producer and the workers share the same cores.",
        "",
    ]
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--n", type=int, default=None, help="jobs per run (default 20000)")
    parser.add_argument("--runs", type=int, default=None, help="runs (default 3)")
    parser.add_argument("--quick", action="store_true", help="smoke test: 3000 jobs, 1 run")
    parser.add_argument("--out", default=str(HERE / "results"), help="results directory")
    parser.add_argument("--no-write", action="store_true", help="print only")
    args = parser.parse_args(argv)
    if not (shutil.which("redis-server") and shutil.which("redis-cli")):
        print("cluster bench: not run: redis-server or redis-cli missing", file=sys.stderr)
        return 1
    n = args.n or (3000 if args.quick else 20_000)
    runs = args.runs or (1 if args.quick else 3)
    partitioned = partitions_available()
    began = time.perf_counter()
    workdir = Path(tempfile.mkdtemp(prefix="wq-cluster-bench-"))
    os.environ["BENCH_CWD"] = str(workdir)
    results: dict[str, list[dict[str, Phase]]] = {"one Redis": [], "cluster": []}
    with topologies(workdir) as (single, cluster):
        queues = physical_queues(partitioned, None if partitioned else cluster.masters)
        redis_version = single.masters[0].info("server")["redis_version"]
        for run in range(runs):
            for topology in (single, cluster):
                print(f"run {run + 1}/{runs}: {topology.name}", file=sys.stderr, flush=True)
                results[topology.name].append(run_once(topology, queues, partitioned, n, workdir))
    summaries = [summarize(name, found, n) for name, found in results.items()]
    workload = (
        f"one queue with {PARTITIONS} partitions (`queues set {QUEUE} --partitions {PARTITIONS}`)"
        if partitioned
        else "3 queues, one per master (partitioned queues not in this checkout yet)"
    )
    meta = {
        "date": dt.datetime.now(dt.UTC).strftime("%Y-%m-%d"),
        "command": "python benchmarks/cluster_bench.py"
        + (f" --n {args.n}" if args.n else "")
        + (f" --runs {args.runs}" if args.runs else "")
        + (" --quick" if args.quick else ""),
        "machine": platform.node().split(".")[0],
        "cpus": os.cpu_count(),
        "python": platform.python_version(),
        "redis": redis_version,
        "runs": runs,
        "n": n,
        "workload": workload,
        "queues": queues,
        "per_queue": results["cluster"][-1]["drain"].per_queue,
        "seconds": round(time.perf_counter() - began),
    }
    report = render(summaries, meta)
    print(report)
    if not args.no_write:
        out = Path(args.out)
        out.mkdir(parents=True, exist_ok=True)
        stem = out / f"{meta['date']}-cluster"
        data = {
            "meta": meta,
            "summaries": [s.__dict__ | {"us_per_job": s.us_per_job} for s in summaries],
            "runs": {
                name: [{k: p.__dict__ for k, p in run.items()} for run in found]
                for name, found in results.items()
            },
        }
        stem.with_suffix(".json").write_text(json.dumps(data, indent=2) + "\n")
        stem.with_suffix(".md").write_text(report)
        print(f"wrote {stem}.json and {stem}.md", file=sys.stderr)
    shutil.rmtree(workdir, ignore_errors=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
