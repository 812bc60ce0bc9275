"""Operator commands: ``stats``, ``jobs show|list|retry|cancel|purge``, ``enqueue``,
``plugins``.

Exit codes: 0 success, 1 failure (one ``error: ...`` line on stderr, never a traceback),
2 usage error (click's).
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import sys
from collections.abc import Awaitable, Callable, Iterator
from datetime import datetime
from typing import Any, NoReturn, TypeVar

import click
from redis.exceptions import RedisError
from rich.console import Console
from rich.table import Table

from workqueue.broker.broker import Broker, BrokerConfig
from workqueue.broker.connection import setup_problem
from workqueue.cli.options import broker_options, log_options, redis_url_option
from workqueue.errors import WorkQueueError
from workqueue.log import redact_url

__all__ = ["enqueue_command", "jobs_group", "plugins_command", "stats_command"]

T = TypeVar("T")


def _fail(message: str) -> NoReturn:
    click.echo(f"error: {message}", err=True)
    sys.exit(1)


def _one_line(exc: BaseException) -> str:
    text = " ".join(str(exc).split())
    return text or type(exc).__name__


def _run(
    redis_url: str,
    config: BrokerConfig,
    action: Callable[[Broker], Awaitable[T]],
) -> T:
    """Run ``action`` against a fresh broker; Redis and WorkQueue errors become one line."""
    from workqueue.broker.connection import create_redis

    async def main() -> T:
        broker = Broker(create_redis(redis_url), config)
        try:
            return await action(broker)
        finally:
            await broker.aclose()

    try:
        return asyncio.run(main())
    except (RedisError, OSError) as exc:
        problem = setup_problem(exc)
        hint = f" ({problem})" if problem else ""
        _fail(f"cannot reach Redis at {redact_url(redis_url)}: {_one_line(exc)}{hint}")
    except WorkQueueError as exc:
        _fail(_one_line(exc))


def _console() -> Console:
    # Wide enough for 32-character job ids when stdout is a pipe (rich defaults to 80 there).
    console = Console()
    if not console.is_terminal:
        console = Console(width=max(console.width, 160))
    return console


def _print_json(data: Any) -> None:
    click.echo(json.dumps(data, indent=2, default=str))


def _time(value: datetime | None) -> str:
    return value.strftime("%Y-%m-%d %H:%M:%S") if value is not None else "-"


json_option = click.option("--json", "as_json", is_flag=True, help="Print JSON.")
queue_option = click.option(
    "--queue",
    "-q",
    envvar="WORKQUEUE_QUEUE",
    default=None,
    help="Only this queue (default: every known queue).",
)


# -- workqueue stats ---------------------------------------------------------------------------


@click.command("stats")
@redis_url_option
@broker_options
@json_option
def stats_command(
    redis_url: str,
    broker_config: BrokerConfig,
    as_json: bool,
) -> None:
    """System-wide totals and per-queue figures (the /metrics figures, from Redis)."""
    from workqueue.admin import stats

    figures = _run(redis_url, broker_config, stats)
    if as_json:
        _print_json(figures)
        return
    console = _console()
    totals = Table(title="Totals", show_header=True)
    totals.add_column("figure")
    totals.add_column("value", justify="right")
    for name, value in figures.items():
        if name not in ("queues", "types"):
            totals.add_row(name, str(value))
    console.print(totals)
    columns = [
        "jobs_in_queue",
        "running",
        "scheduled",
        "retrying",
        "jobs_done",
        "jobs_failed",
        "jobs_cancelled",
        "failed_attempts",
        "oldest_waiting_seconds",
    ]
    queues = Table(title="Queues", show_header=True)
    queues.add_column("queue", no_wrap=True)
    for column in columns:
        queues.add_column(column.replace("_", " "), justify="right")
    for name, row in figures["queues"].items():
        queues.add_row(name, *(str(row[c]) for c in columns))
    console.print(queues)
    if figures["types"]:
        types = Table(title="Job types", show_header=True)
        for column in ("type", "done", "failed", "failed attempts"):
            types.add_column(column, justify="left" if column == "type" else "right")
        for name, row in sorted(figures["types"].items()):
            types.add_row(
                name,
                str(row.get("done", 0)),
                str(row.get("failed", 0)),
                str(row.get("failed_attempts", 0)),
            )
        console.print(types)


# -- workqueue jobs ... ------------------------------------------------------------------------


@click.group("jobs")
def jobs_group() -> None:
    """Inspect and operate on jobs: show, list, retry, cancel, purge."""


@jobs_group.command("show")
@click.argument("job_id")
@redis_url_option
@broker_options
@json_option
def show_command(
    job_id: str,
    redis_url: str,
    broker_config: BrokerConfig,
    as_json: bool,
) -> None:
    """Show one job (the fields of GET /jobs/{id}, with its progress and attempt history)."""

    async def action(broker: Broker) -> dict[str, Any]:
        return (await broker.get_job(job_id)).to_dict()

    data = _run(redis_url, broker_config, action)
    if as_json:
        _print_json(data)
        return
    table = Table(show_header=False, box=None)
    table.add_column("field", style="bold")
    table.add_column("value", overflow="fold")
    for name, value in data.items():
        if name == "history":
            continue
        shown = json.dumps(value) if name in ("result", "progress") and value is not None else value
        table.add_row(name, "-" if shown is None else str(shown))
    console = _console()
    console.print(table)
    if data["history"]:
        console.print(_history_table(data["history"]))


def _history_table(history: list[dict[str, Any]]) -> Table:
    """A job's attempts (``history`` of :meth:`JobInfo.to_dict`), oldest first."""
    table = Table(title="attempts", show_header=True)
    for column in ("attempt", "outcome", "worker", "started_at", "finished_at"):
        table.add_column(column, no_wrap=column != "worker")
    table.add_column("error", overflow="fold")
    for entry in history:
        table.add_row(
            str(entry["attempt"]),
            entry["outcome"],
            entry["worker"] or "-",
            entry["started_at"] or "-",
            entry["finished_at"] or "-",
            entry["error"] or "",
        )
    return table


@jobs_group.command("cancel")
@click.argument("job_id")
@redis_url_option
@broker_options
@json_option
def cancel_command(
    job_id: str,
    redis_url: str,
    broker_config: BrokerConfig,
    as_json: bool,
) -> None:
    """Cancel a job (as POST /jobs/{id}/cancel).

    A queued, scheduled or retrying job is cancelled at once; a running one is asked to stop
    (it ends cancelled within a third of its lease). Exit code 1 for an unknown or finished
    job. --json prints {"outcome": cancelled|cancelling|finished, "job": {...}}.
    """
    from workqueue.broker.contract import CancelOutcome, CancelResult

    async def action(broker: Broker) -> CancelResult:
        return await broker.cancel(job_id)

    done = _run(redis_url, broker_config, action)
    if as_json:
        _print_json({"outcome": done.outcome.value, "job": done.job.to_dict()})
    if done.outcome == CancelOutcome.FINISHED:
        _fail(f"job {job_id!r} has finished ({done.job.status}): nothing to cancel")
    if not as_json:
        if done.outcome == CancelOutcome.CANCELLED:
            click.echo(f"cancelled {job_id}")
        else:
            click.echo(f"cancelling {job_id}: its worker is asked to stop it")


@jobs_group.command("list")
@click.option(
    "--status",
    "-s",
    type=click.Choice(
        ["scheduled", "queued", "active", "retrying", "completed", "failed", "cancelled"]
    ),
    default="failed",
    show_default=True,
    envvar="WORKQUEUE_JOB_STATUS",
    help="Which jobs to list.",
)
@queue_option
@click.option(
    "--limit",
    "-n",
    type=click.IntRange(min=1, max=100000),
    default=50,
    show_default=True,
    envvar="WORKQUEUE_LIMIT",
    help="Most jobs listed.",
)
@redis_url_option
@broker_options
@json_option
def list_command(
    status: str,
    queue: str | None,
    limit: int,
    redis_url: str,
    broker_config: BrokerConfig,
    as_json: bool,
) -> None:
    """List jobs in one state (queued: oldest first; the others: newest first)."""
    from workqueue.admin import list_jobs

    async def action(broker: Broker) -> list[Any]:
        return await list_jobs(broker, status, queue, limit)

    jobs = _run(redis_url, broker_config, action)
    if as_json:
        _print_json([job.to_dict() for job in jobs])
        return
    table = Table(title=f"{status} jobs ({len(jobs)})", show_header=True)
    table.add_column("id", no_wrap=True, min_width=32)
    for column in ("type", "queue", "status", "attempts", "enqueued", "finished"):
        table.add_column(column, justify="right" if column == "attempts" else "left")
    table.add_column("error", overflow="fold")
    for job in jobs:
        table.add_row(
            job.id,
            job.type,
            job.queue,
            job.status,
            str(job.attempts),
            _time(job.enqueued_at),
            _time(job.finished_at),
            job.error or "",
        )
    _console().print(table)


@jobs_group.command("retry")
@click.argument("job_ids", nargs=-1)
@click.option("--all-failed", is_flag=True, help="Requeue every failed job.")
@queue_option
@redis_url_option
@broker_options
@log_options
def retry_command(
    job_ids: tuple[str, ...],
    all_failed: bool,
    queue: str | None,
    redis_url: str,
    broker_config: BrokerConfig,
    log_file: str,
    log_json: bool,
    log_level: str,
) -> None:
    """Send failed jobs back to their queue: the given IDs, or --all-failed.

    Each job requeued gets a ``requeued`` event line in the event log (the log file only, so
    stdout and stderr stay the command's own; ``--log-file ''`` writes the lines to stderr).
    """
    from workqueue.admin import retry_job_ids, retry_jobs

    if bool(job_ids) == all_failed:
        raise click.UsageError("give job IDs or --all-failed (one of the two)")
    _event_log(log_file, log_json, log_level)
    if all_failed:
        with _progress("requeueing failed jobs") as advance:

            async def everything(broker: Broker) -> int:
                return await retry_jobs(broker, all_failed=True, queue=queue, progress=advance)

            count = _run(redis_url, broker_config, everything)
        click.echo(f"requeued {count} job{'s' if count != 1 else ''}")
        return

    async def some(broker: Broker) -> list[str]:
        return await retry_job_ids(broker, job_ids, queue)

    done = _run(redis_url, broker_config, some)
    click.echo(f"requeued {len(done)} job{'s' if len(done) != 1 else ''}")
    missed = [job_id for job_id in dict.fromkeys(job_ids) if job_id not in set(done)]
    if missed:
        _fail(f"not requeued (no failed job with that id): {', '.join(missed)}")


@jobs_group.command("purge")
@click.option(
    "--status",
    "-s",
    type=click.Choice(["completed", "failed", "cancelled"]),
    required=True,
    help="Which finished jobs to delete.",
)
@queue_option
@click.option("--yes", "-y", is_flag=True, help="Do not ask for confirmation.")
@redis_url_option
@broker_options
def purge_command(
    status: str,
    queue: str | None,
    yes: bool,
    redis_url: str,
    broker_config: BrokerConfig,
) -> None:
    """Delete the records of finished jobs (completed, failed or cancelled); unfinished jobs
    stay."""
    from workqueue.admin import purge

    where = f"queue {queue!r}" if queue else "every queue"
    if not yes:
        click.confirm(f"Delete every {status} job of {where}?", abort=True)

    with _progress(f"purging {status} jobs") as advance:

        async def action(broker: Broker) -> int:
            return await purge(broker, status, queue, progress=advance)

        count = _run(redis_url, broker_config, action)
    click.echo(f"removed {count} {status} job{'s' if count != 1 else ''}")


def _event_log(log_file: str, log_json: bool, log_level: str) -> None:
    """Send this command's event lines to the log file (stderr when there is none)."""
    import atexit

    from workqueue.log import configure_logging, shutdown_logging

    configure_logging(
        role="cli",
        log_file=log_file or None,
        json_lines=log_json,
        level=log_level,
        stderr=not log_file,
    )
    atexit.register(shutdown_logging)  # the lines are written before the process exits


@contextlib.contextmanager
def _progress(description: str) -> Iterator[Callable[[int], None]]:
    """A progress display on stderr for long batch operations (only when it is a terminal)."""
    from rich.console import Console
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn

    console = Console(stderr=True)
    with Progress(
        TextColumn("{task.description}"),
        BarColumn(),
        MofNCompleteColumn(),
        console=console,
        transient=True,
        disable=not console.is_terminal,
    ) as bar:
        task = bar.add_task(description, total=None)
        yield lambda n: bar.advance(task, n)


# -- workqueue enqueue -------------------------------------------------------------------------


@click.command("enqueue")
@click.argument("job_type")
@click.option(
    "--payload",
    "-d",
    default="{}",
    show_default=True,
    envvar="WORKQUEUE_PAYLOAD",
    help="The payload, a JSON object.",
)
@click.option(
    "--retries",
    type=int,
    default=None,
    envvar="WORKQUEUE_RETRIES",
    help="Retries after a failed attempt (default: the job type's).",
)
@click.option(
    "--queue", "-q", default="default", show_default=True, envvar="WORKQUEUE_QUEUE", help="Queue."
)
@click.option(
    "--delay", type=float, default=None, envvar="WORKQUEUE_DELAY", help="Run in S seconds."
)
@click.option(
    "--timeout",
    type=float,
    default=None,
    envvar="WORKQUEUE_TIMEOUT",
    help="Seconds one attempt may run (default: the job type's).",
)
@click.option(
    "--idempotency-key",
    default=None,
    envvar="WORKQUEUE_IDEMPOTENCY_KEY",
    help="Enqueueing again with this key returns the first job.",
)
@click.option(
    "--limit-key",
    default=None,
    help="The type's rate and concurrency limits apply per (type, limit key).",
)
@click.option(
    "--priority",
    type=click.IntRange(0, 9),
    default=0,
    show_default=True,
    help="0-9: a waiting job of higher priority starts first.",
)
@click.option(
    "--unique",
    is_flag=True,
    help="Answer the unfinished job of the same queue, type and payload, if any.",
)
@redis_url_option
@broker_options
@json_option
@log_options
def enqueue_command(
    job_type: str,
    payload: str,
    retries: int | None,
    queue: str,
    delay: float | None,
    timeout: float | None,
    idempotency_key: str | None,
    limit_key: str | None,
    priority: int,
    unique: bool,
    redis_url: str,
    broker_config: BrokerConfig,
    as_json: bool,
    log_file: str,
    log_json: bool,
    log_level: str,
) -> None:
    """Enqueue one job of JOB_TYPE (validated like POST /enqueue).

    The job's ``enqueued`` event line goes to the event log (``--log-file``, default
    ``logs.txt``; ``''`` writes it to stderr), like every other enqueue's.
    """
    from workqueue.client import Client, TaskSpec, flush_event_lines
    from workqueue.errors import PluginError
    from workqueue.job import EnqueuedJob
    from workqueue.registry import build_registry

    try:
        data = json.loads(payload)
    except ValueError as exc:
        _fail(f"payload: not valid JSON: {exc}")
    try:
        registry = build_registry()
    except PluginError as exc:
        _fail(_one_line(exc))
    _event_log(log_file, log_json, log_level)
    spec = TaskSpec(
        type=job_type,
        payload=data,
        retries=retries,
        queue=queue,
        delay=delay,
        timeout=timeout,
        idempotency_key=idempotency_key,
        limit_key=limit_key,
        priority=priority,
        unique=unique,
    )

    async def action(broker: Broker) -> EnqueuedJob:
        try:
            (job,) = await Client(broker, registry).enqueue_specs([spec])
        finally:
            flush_event_lines()  # before the loop and the log stop
        return job

    job = _run(redis_url, broker_config, action)
    if as_json:
        _print_json({**job.to_dict(), "duplicate": job.duplicate})
    else:
        click.echo(f"{job.id} {job.status}{' (existing job)' if job.duplicate else ''}")


# -- workqueue plugins -------------------------------------------------------------------------


@click.command("plugins")
@json_option
def plugins_command(as_json: bool) -> None:
    """The installed plugins and the job types each registers."""
    from workqueue.errors import PluginError
    from workqueue.registry import build_registry

    try:
        registry = build_registry()
    except PluginError as exc:
        _fail(_one_line(exc))
    plugins = registry.plugins
    if as_json:
        _print_json(
            [
                {
                    "name": p.name,
                    "distribution": p.distribution,
                    "version": p.version,
                    "job_types": list(p.job_types),
                    "hooks": list(p.hooks),
                }
                for p in plugins
            ]
        )
        return
    table = Table(title=f"Plugins ({len(plugins)})", show_header=True)
    for column in ("plugin", "distribution", "version"):
        table.add_column(column, no_wrap=True)
    table.add_column("job types", overflow="fold")
    for p in plugins:
        table.add_row(p.name, p.distribution or "-", p.version or "-", ", ".join(p.job_types))
    _console().print(table)
