"""``workqueue worker``: run jobs of the installed job types."""

from __future__ import annotations

import asyncio
import contextlib
import os
import signal
import sys
from typing import Any

import click

from workqueue import clock
from workqueue.broker.config import BrokerConfig
from workqueue.cli.options import broker_options, log_options, redis_url_option
from workqueue.errors import ConfigurationError, PluginError
from workqueue.log import configure_logging, redact_url, shutdown_logging
from workqueue.plugins import load_plugins
from workqueue.registry import Registry
from workqueue.settings import WorkerSettings, new_worker_id

__all__ = ["worker_command"]


@click.command("worker")
@redis_url_option
@click.option(
    "--queue",
    "-q",
    "queues",
    multiple=True,
    envvar="WORKQUEUE_QUEUES",
    help="Queue to consume (repeat for several, in priority order; env: comma-separated).",
)
@click.option(
    "--concurrency",
    "-c",
    envvar="WORKQUEUE_CONCURRENCY",
    type=click.IntRange(min=1, max=10000),
    default=50,
    show_default=True,
    help="Jobs in flight per worker process.",
)
@click.option(
    "--processes",
    "-p",
    envvar="WORKQUEUE_PROCESSES",
    type=click.IntRange(min=1, max=256),
    default=1,
    show_default=True,
    help="Worker processes under one supervisor.",
)
@click.option(
    "--metrics-port",
    envvar="WORKQUEUE_METRICS_PORT",
    type=click.IntRange(min=0, max=65535),
    default=8001,
    show_default=True,
    help="Port of GET /metrics (0 = no metrics server; with --processes K: ports P..P+K-1).",
)
@click.option(
    "--metrics-host",
    envvar="WORKQUEUE_METRICS_HOST",
    default="127.0.0.1",
    show_default=True,
    help="Address the metrics server binds to.",
)
@click.option(
    "--lease-seconds",
    envvar="WORKQUEUE_LEASE_SECONDS",
    type=click.FloatRange(min=0.5),
    default=30.0,
    show_default=True,
    help="How long a running job's lease lasts without renewal.",
)
@click.option(
    "--grace-seconds",
    envvar="WORKQUEUE_GRACE_SECONDS",
    type=click.FloatRange(min=0),
    default=30.0,
    show_default=True,
    help="On SIGTERM/SIGINT, how long running jobs may take before they are handed back.",
)
@click.option(
    "--idle-wait-seconds",
    envvar="WORKQUEUE_IDLE_WAIT_SECONDS",
    type=click.FloatRange(min=0.1, max=60),
    default=10.0,
    show_default=True,
    help="Longest blocking wait of an idle worker before it checks leases and due jobs.",
)
@click.option(
    "--housekeep-seconds",
    envvar="WORKQUEUE_HOUSEKEEP_SECONDS",
    type=click.FloatRange(min=0, max=3600),
    default=10.0,
    show_default=True,
    help="Longest pause between housekeeping steps of a queue (lease recovery, due jobs, "
    "retention, consistency check; sooner when a lease expires or a job falls due). "
    "One process per queue holds the duty at a time; 0 = never take it.",
)
@click.option(
    "--audit-seconds",
    envvar="WORKQUEUE_AUDIT_SECONDS",
    type=click.FloatRange(min=0, max=3600),
    default=None,
    hidden=True,
    help="Old name of --housekeep-seconds.",
)
@click.option(
    "--max-hung-threads",
    envvar="WORKQUEUE_MAX_HUNG_THREADS",
    type=click.IntRange(min=1, max=10000),
    default=None,
    help="Plain def handlers still running past their attempt (timed out, lease lost) at "
    "which the process stops fetching and is recycled  [default: max(1, concurrency // 2)].",
)
@broker_options
@log_options
def worker_command(
    redis_url: str,
    queues: tuple[str, ...],
    concurrency: int,
    processes: int,
    metrics_port: int,
    metrics_host: str,
    lease_seconds: float,
    grace_seconds: float,
    idle_wait_seconds: float,
    housekeep_seconds: float,
    audit_seconds: float | None,
    max_hung_threads: int | None,
    broker_config: BrokerConfig,
    log_file: str,
    log_json: bool,
    log_level: str,
) -> None:
    """Run jobs from Redis with the installed job-type plugins."""
    queue_names = tuple(q.strip() for item in queues for q in item.split(",") if q.strip())
    if processes > 1:
        from workqueue.worker.supervisor import supervise

        configure_logging(role="supervisor", log_file=log_file or None, json_lines=log_json)
        args = _child_args(click.get_current_context().params)
        sys.exit(supervise(processes, args, metrics_port))
    worker_id = new_worker_id()
    try:
        clock.skew()  # a malformed WORKQUEUE_CLOCK_SKEW_SECONDS is a usage error
        settings = WorkerSettings(
            redis_url=redis_url,
            queues=queue_names or ("default",),
            concurrency=concurrency,
            lease_seconds=lease_seconds,
            grace_seconds=grace_seconds,
            idle_wait_seconds=idle_wait_seconds,
            housekeep_seconds=housekeep_seconds if audit_seconds is None else audit_seconds,
            max_hung_threads=max_hung_threads,
            metrics_port=metrics_port or None,
            metrics_host=metrics_host,
            worker_id=worker_id,
            broker=broker_config,
        )
    except ConfigurationError as exc:
        raise click.UsageError(str(exc)) from None
    configure_logging(
        role="worker",
        log_file=log_file or None,
        json_lines=log_json,
        level=log_level.upper(),
        worker_id=worker_id,
    )
    try:
        pm = load_plugins()
        registry = Registry.from_plugin_manager(pm)
    except PluginError as exc:
        click.echo(f"error: {exc}", err=True)
        shutdown_logging()
        sys.exit(1)
    from loguru import logger

    logger.info("connecting to {}", redact_url(redis_url))
    from workqueue.worker.runner import Worker

    worker = Worker(settings, registry, pm)
    code = 0
    try:
        _run(worker)
    except (PluginError, ConfigurationError) as exc:
        click.echo(f"error: {exc}", err=True)
        code = 1
    finally:
        shutdown_logging()
    if worker.recycle:
        _recycle()
    if worker.hung_threads:
        # Hung handler threads would block the interpreter's exit (it joins pool threads).
        os._exit(code)
    sys.exit(code)


def _recycle() -> None:
    """Replace this process with a fresh worker (hung handler threads die with it).

    Under the supervisor (``--processes K``) the child exits with
    :data:`~workqueue.worker.supervisor.RECYCLE_EXIT_CODE` and is restarted at once; a lone
    worker re-executes its own command line in place (same pid, so a service manager sees
    no exit).
    """
    from workqueue.worker.supervisor import RECYCLE_EXIT_CODE, SUPERVISED_ENV

    sys.stdout.flush()
    sys.stderr.flush()
    if os.environ.get(SUPERVISED_ENV):
        os._exit(RECYCLE_EXIT_CODE)
    # The same interpreter and arguments this process was started with (no shell involved).
    os.execv(sys.executable, [sys.executable, *sys.orig_argv[1:]])  # noqa: S606


def _run(worker: Any) -> None:
    async def main() -> None:
        loop = asyncio.get_running_loop()
        for signum in (signal.SIGTERM, signal.SIGINT):
            loop.add_signal_handler(signum, worker.request_stop)
        await worker.run()

    try:
        import uvloop

        runner: Any = uvloop.run
    except ImportError:
        runner = asyncio.run
    with contextlib.suppress(KeyboardInterrupt):
        runner(main())


def _child_args(params: dict[str, Any]) -> list[str]:
    """Rebuild the command line for a child worker process (minus --processes)."""
    args: list[str] = []
    for name, value in params.items():
        if name in ("processes", "metrics_port") or value is None:
            continue
        flag = "--" + ("queue" if name == "queues" else name.replace("_", "-"))
        if name == "queues":
            for q in value:
                args += [flag, q]
        elif name == "log_json":
            args.append("--log-json" if value else "--no-log-json")
        else:
            args += [flag, str(value)]
    return args
