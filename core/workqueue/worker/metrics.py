"""The worker's ``/metrics`` figures: system-wide totals from Redis plus this process's own.

JSON by default (the seed's fields first); the Prometheus text format when the ``Accept``
header prefers ``text/plain`` or ``application/openmetrics-text``.
"""

from __future__ import annotations

import time
from bisect import bisect_left
from collections.abc import Sequence
from itertools import accumulate
from typing import TYPE_CHECKING, Any

from workqueue.broker.contract import BrokerAPI, QueueFigures, SystemFigures

if TYPE_CHECKING:
    from workqueue.worker.runner import Worker

__all__ = [
    "RunTimeHistogram",
    "collect",
    "queue_row",
    "render_prometheus",
    "summarize",
    "system_figures",
    "wants_prometheus",
]

#: run-time histogram bucket bounds, seconds
BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0, 300.0)


class RunTimeHistogram:
    """Cumulative run-time histograms per job type and outcome, in this process."""

    def __init__(self) -> None:
        self._data: dict[tuple[str, str], list[float]] = {}

    def observe(self, job_type: str, outcome: str, seconds: float) -> None:
        """Count one finished attempt (one bucket, made cumulative when read)."""
        row = self._data.get((job_type, outcome))
        if row is None:
            # len(BUCKETS) bucket counts, then the +Inf bucket, then the sum
            row = self._data[(job_type, outcome)] = [0.0] * (len(BUCKETS) + 2)
        row[bisect_left(BUCKETS, seconds)] += 1
        row[-1] += seconds

    def items(self) -> list[tuple[str, str, list[float]]]:
        """Rows of cumulative bucket counts (``le`` each bound, then +Inf), then the sum."""
        rows = []
        for (job_type, outcome), row in sorted(self._data.items()):
            counts = list(accumulate(row[:-1]))
            rows.append((job_type, outcome, [*counts, row[-1]]))
        return rows


async def collect(worker: Worker) -> dict[str, Any]:
    """The JSON body of ``GET /metrics``: the system figures plus this process's own."""
    figures = await system_figures(worker.broker, worker.settings.queues)
    s = worker.stats
    process = {
        "worker_id": worker.settings.worker_id,
        "queues": list(worker.settings.queues),
        "concurrency": worker.settings.concurrency,
        "running": len(worker.running_jobs()),
        "uptime_seconds": round(time.monotonic() - s.started_monotonic, 3),
        "reserved": s.reserved,
        "succeeded": s.succeeded,
        "failed_attempts": s.failed_attempts,
        "failed": s.failed,
        "retried": s.retried,
        "released": s.released,
        "cancelled": s.cancelled,
        "stale_outcomes_refused": s.stale,
        "leases_recovered": s.recovered,
        "last_fetch_at": s.last_fetch_at or None,
    }
    return {**figures, "worker": process}


async def system_figures(broker: BrokerAPI, extra_queues: Sequence[str] = ()) -> dict[str, Any]:
    """System-wide totals, per-queue rows and per-type counters, from the read model.

    Covers every known queue plus ``extra_queues``; ``/metrics`` and ``workqueue stats`` both
    answer with these figures (see :func:`summarize`).
    """
    return summarize(await broker.figures(extra_queues))


def summarize(figures: SystemFigures) -> dict[str, Any]:
    """The one mapping from the read model to the figures ``/metrics`` and ``stats`` show:
    the seed's totals first, then ``queues`` (a row per queue) and ``types`` (per job type)."""
    totals: dict[str, Any] = {
        "total_jobs_in_queue": 0,
        "jobs_done": 0,
        "jobs_failed": 0,
        "jobs_cancelled": 0,
        "running": 0,
        "scheduled": 0,
        "retrying": 0,
        "failed_attempts": 0,
        "retried": 0,
        "lost_leases": 0,
        "enqueued": 0,
        "oldest_waiting_seconds": 0.0,
    }
    types: dict[str, dict[str, int]] = {}
    queues_out: dict[str, dict[str, Any]] = {}
    for fig in figures.queues:
        row = queue_row(fig)
        queues_out[fig.queue] = row
        totals["total_jobs_in_queue"] += row["jobs_in_queue"]
        for name in _SUMMED:
            totals[name] += row[name]
        totals["oldest_waiting_seconds"] = max(
            totals["oldest_waiting_seconds"], row["oldest_waiting_seconds"]
        )
        for key, value in fig.counters.items():
            counter, sep, job_type = key.partition("|")
            if sep:
                entry = types.setdefault(job_type, {"done": 0, "failed": 0, "failed_attempts": 0})
                entry[counter] = entry.get(counter, 0) + value
    return {**totals, "queues": queues_out, "types": types}


#: the row fields summed into the totals of the same name
_SUMMED = (
    "jobs_done",
    "jobs_failed",
    "jobs_cancelled",
    "running",
    "scheduled",
    "retrying",
    "failed_attempts",
    "retried",
    "lost_leases",
    "enqueued",
)


def queue_row(fig: QueueFigures) -> dict[str, Any]:
    """One queue's row of the figures (``/metrics``'s ``queues`` entry)."""
    c = fig.counters
    return {
        "jobs_in_queue": fig.queued,
        "jobs_done": c.get("done", 0),
        "jobs_failed": c.get("failed", 0),
        "jobs_cancelled": c.get("cancelled", 0),
        "running": fig.running,
        "scheduled": fig.scheduled,
        "retrying": fig.retrying,
        "failed_attempts": c.get("failed_attempts", 0),
        "retried": c.get("retried", 0),
        "lost_leases": c.get("lost_leases", 0),
        "enqueued": c.get("enqueued", 0),
        "oldest_waiting_seconds": round(fig.oldest_waiting_seconds, 3),
        "depth": {
            "scheduled": fig.scheduled,
            "queued": fig.queued,
            "active": fig.running,
            "retrying": fig.retrying,
            "completed": fig.completed_kept,
            "failed": fig.failed_kept,
            "cancelled": fig.cancelled_kept,
        },
    }


def wants_prometheus(accept: str) -> bool:
    """True when the Accept header prefers Prometheus text over JSON."""
    best_q, best = -1.0, "json"
    for part in accept.split(","):
        media, _, params = part.strip().partition(";")
        media = media.strip().lower()
        q = 1.0
        for param in params.split(";"):
            name, _, value = param.strip().partition("=")
            if name == "q":
                try:
                    q = float(value)
                except ValueError:
                    q = 0.0
        kind = None
        if media in ("text/plain", "application/openmetrics-text"):
            kind = "prom"
        elif media in ("application/json", "*/*", "application/*"):
            kind = "json"
        if kind is not None and q > best_q:
            best_q, best = q, kind
    return best == "prom"


def _label(value: str) -> str:
    return value.replace("\\", "\\\\").replace('"', '\\"').replace("\n", "\\n")


def render_prometheus(figures: dict[str, Any], histogram: RunTimeHistogram | None = None) -> str:
    """The Prometheus text exposition format (version 0.0.4) of :func:`collect`'s figures, or
    of :func:`summarize`'s (the producer's: no ``worker`` section, no histogram)."""
    lines: list[str] = []

    def family(name: str, kind: str, doc: str) -> None:
        lines.append(f"# HELP {name} {doc}")
        lines.append(f"# TYPE {name} {kind}")

    per_queue = [
        ("workqueue_jobs_in_queue", "gauge", "jobs_in_queue", "Jobs waiting to run now."),
        ("workqueue_jobs_running", "gauge", "running", "Jobs running (leased)."),
        ("workqueue_jobs_scheduled", "gauge", "scheduled", "Delayed jobs not yet due."),
        ("workqueue_jobs_retrying", "gauge", "retrying", "Jobs waiting out a retry backoff."),
        ("workqueue_jobs_done_total", "counter", "jobs_done", "Jobs completed, ever."),
        ("workqueue_jobs_failed_total", "counter", "jobs_failed", "Jobs failed for good, ever."),
        ("workqueue_jobs_cancelled_total", "counter", "jobs_cancelled", "Jobs cancelled, ever."),
        ("workqueue_failed_attempts_total", "counter", "failed_attempts", "Failed attempts."),
        ("workqueue_lost_leases_total", "counter", "lost_leases", "Leases that expired."),
        (
            "workqueue_oldest_waiting_seconds",
            "gauge",
            "oldest_waiting_seconds",
            "Age of the oldest job waiting to run.",
        ),
    ]
    for name, kind, field, doc in per_queue:
        family(name, kind, doc)
        for q, row in figures["queues"].items():
            lines.append(f'{name}{{queue="{_label(q)}"}} {row[field]}')
    family("workqueue_queue_depth", "gauge", "Jobs per queue and status (finished: kept ones).")
    for q, row in figures["queues"].items():
        for status, count in row["depth"].items():
            lines.append(f'workqueue_queue_depth{{queue="{_label(q)}",status="{status}"}} {count}')
    family("workqueue_type_jobs_done_total", "counter", "Jobs completed, per type.")
    for t, row in figures["types"].items():
        lines.append(f'workqueue_type_jobs_done_total{{type="{_label(t)}"}} {row.get("done", 0)}')
    family("workqueue_type_jobs_failed_total", "counter", "Jobs failed for good, per type.")
    for t, row in figures["types"].items():
        lines.append(
            f'workqueue_type_jobs_failed_total{{type="{_label(t)}"}} {row.get("failed", 0)}'
        )
    w = figures.get("worker")
    if w is None or histogram is None:
        return "\n".join(lines) + "\n"
    family("workqueue_worker_uptime_seconds", "gauge", "This worker process's uptime.")
    lines.append(f"workqueue_worker_uptime_seconds {w['uptime_seconds']}")
    family("workqueue_worker_running", "gauge", "Jobs running in this process.")
    lines.append(f"workqueue_worker_running {w['running']}")
    family("workqueue_worker_succeeded_total", "counter", "Jobs this process completed.")
    lines.append(f"workqueue_worker_succeeded_total {w['succeeded']}")
    family(
        "workqueue_job_run_seconds",
        "histogram",
        "Run time of attempts in this process, per type and outcome.",
    )
    for job_type, outcome, row in histogram.items():
        labels = f'type="{_label(job_type)}",outcome="{outcome}"'
        for bound, count in zip(BUCKETS, row, strict=False):
            lines.append(f'workqueue_job_run_seconds_bucket{{{labels},le="{bound}"}} {count:g}')
        lines.append(f'workqueue_job_run_seconds_bucket{{{labels},le="+Inf"}} {row[-2]:g}')
        lines.append(f"workqueue_job_run_seconds_count{{{labels}}} {row[-2]:g}")
        lines.append(f"workqueue_job_run_seconds_sum{{{labels}}} {row[-1]:.6f}")
    return "\n".join(lines) + "\n"
