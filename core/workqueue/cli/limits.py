"""``workqueue limits set|clear|list``: fleet-wide rate and concurrency limits per job type.

Run-time limits live in Redis (``<p>:limits``) and override, field by field, the limits a job
type declares (``JobType(rate_limit=..., concurrency_limit=...)``); ``none`` lifts a declared
limit; ``clear`` drops the run-time fields so the declared ones apply again. Every worker reads
them within 5 seconds (``workqueue.worker.limiting.REFRESH_SECONDS``). See docs/scheduling.md.

Exit codes: 0 success, 1 failure (one ``error: ...`` line on stderr), 2 usage error.
"""

from __future__ import annotations

from typing import Any

import click
from rich.table import Table

from workqueue.broker.broker import Broker, BrokerConfig
from workqueue.cli.admin import _console, _fail, _print_json, _run, json_option
from workqueue.cli.options import redis_url_option
from workqueue.cli.queues import prefix_option
from workqueue.errors import ConfigurationError, PluginError
from workqueue.jobtypes import NAME_PATTERN
from workqueue.limits import LimitSpec

__all__ = ["limits_group"]


def _declared() -> dict[str, LimitSpec]:
    """The limits the job types installed here declare (none when plugins cannot load)."""
    from workqueue.registry import build_registry

    try:
        registry = build_registry()
    except PluginError:
        return {}
    out: dict[str, LimitSpec] = {}
    for name in registry.names():
        job_type = registry.get(name)
        if job_type is not None:
            out[name] = job_type.limits()
    return out


def _check_type(job_type: str) -> None:
    if not NAME_PATTERN.match(job_type):
        raise click.UsageError(f"job type {job_type!r} must be 1-128 characters of A-Za-z0-9_.:-")


@click.group("limits")
def limits_group() -> None:
    """Fleet-wide rate and concurrency limits per job type (kept in Redis)."""


@limits_group.command("set")
@click.argument("job_type", metavar="TYPE")
@click.option("--rate", default=None, help="Starts per period: 100/s, 10/m, 5/h; 'none' lifts it.")
@click.option(
    "--concurrency",
    default=None,
    metavar="N",
    help="Attempts running at once across all workers; 'none' lifts it.",
)
@redis_url_option
@prefix_option
@json_option
def set_command(
    job_type: str,
    rate: str | None,
    concurrency: str | None,
    redis_url: str,
    key_prefix: str,
    as_json: bool,
) -> None:
    """Set a type's run-time limits (they override its declared ones, field by field)."""
    _check_type(job_type)
    if rate is None and concurrency is None:
        raise click.UsageError("give --rate and/or --concurrency")

    async def action(broker: Broker) -> dict[str, Any]:
        from workqueue.broker.limits import LimitStore

        try:
            stored = await LimitStore(broker).set_runtime(
                job_type, rate=rate, concurrency=concurrency
            )
        except ConfigurationError as exc:
            raise click.UsageError(str(exc)) from None
        return {"type": job_type, "runtime": stored.describe()}

    data = _run(redis_url, BrokerConfig(prefix=key_prefix), action)
    if as_json:
        _print_json(data)
    else:
        click.echo(f"limits of {job_type}: {_text(data['runtime'])} (workers follow within 5 s)")


@limits_group.command("clear")
@click.argument("job_type", metavar="TYPE")
@redis_url_option
@prefix_option
@json_option
def clear_command(job_type: str, redis_url: str, key_prefix: str, as_json: bool) -> None:
    """Drop a type's run-time limits: its declared limits apply again."""
    _check_type(job_type)

    async def action(broker: Broker) -> bool:
        from workqueue.broker.limits import LimitStore

        return await LimitStore(broker).clear_runtime(job_type)

    cleared = _run(redis_url, BrokerConfig(prefix=key_prefix), action)
    if as_json:
        _print_json({"type": job_type, "cleared": cleared})
    elif cleared:
        click.echo(f"limits of {job_type}: run-time limits cleared (declared ones apply)")
    else:
        click.echo(f"limits of {job_type}: no run-time limits were set")


@limits_group.command("list")
@redis_url_option
@prefix_option
@json_option
def list_command(redis_url: str, key_prefix: str, as_json: bool) -> None:
    """Every type with a limit: declared (by the plugins installed here), run-time, in effect,
    and, for its jobs without a limit_key, the concurrency slots held and the jobs waiting."""
    declared = _declared()

    async def action(broker: Broker) -> list[dict[str, Any]]:
        from workqueue.broker.limits import limit_rows

        return await limit_rows(broker, declared)

    try:
        rows = _run(redis_url, BrokerConfig(prefix=key_prefix), action)
    except ConfigurationError as exc:  # pragma: no cover - corrupt values are skipped
        _fail(str(exc))
    if as_json:
        _print_json(rows)
        return
    table = Table(title=f"Limits ({len(rows)} job types)", show_header=True)
    for column in ("type", "in effect", "declared", "run-time", "held", "waiting"):
        table.add_column(column, no_wrap=column == "type")
    for row in rows:
        table.add_row(
            row["type"],
            _text(row["effective"]),
            _text(row["declared"]) if row["declared"] else "-",
            _text(row["runtime"]) if row["runtime"] else "-",
            str(row["held"]),
            str(row["waiting"]),
        )
    _console().print(table)


def _text(limits: dict[str, Any]) -> str:
    parts = []
    for name in ("rate", "concurrency"):
        value = limits.get(name)
        if value is not None:
            parts.append(f"{name} {value}")
    return ", ".join(parts) or "no limit"
