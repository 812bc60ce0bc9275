"""``workqueue queues list|show|set``: every queue's depth, oldest waiting age and settings.

The figures come from the read model (the same ones ``/metrics`` and ``stats`` show); the
settings are the fleet-wide ones kept in Redis (``<p>:{q}:settings``), read by every process.
A queue nobody has configured shows the defaults with ``configured: false``: each process then
uses its own flags for it.

``queues set NAME --partitions N`` spreads a queue over N partitions (hash slots; see
docs/scaling.md). The figures of a partitioned queue are the sums over its partitions;
``partitions`` is N, ``draining`` the earlier values of N whose partitions still hold jobs.

Exit codes: 0 success, 1 failure (one ``error: ...`` line on stderr), 2 usage error.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, TypeVar

import click
import msgspec
from rich.table import Table

from workqueue.broker.broker import Broker, BrokerConfig
from workqueue.broker.contract import QueueFigures, QueueSettings
from workqueue.broker.partitions import MAX_PARTITIONS, Layout
from workqueue.broker.queue_control import overview
from workqueue.cli.admin import _console, _fail, _print_json, _run, json_option
from workqueue.cli.options import redis_url_option
from workqueue.cli.queue_control import pause_command, paused_text, resume_command
from workqueue.jobtypes import NAME_PATTERN

__all__ = ["queues_group"]

FC = TypeVar("FC", bound=Callable[..., Any])

#: the depth columns, in the order a job goes through them
DEPTHS = ("queued", "running", "scheduled", "retrying", "completed_kept", "failed_kept")

prefix_option = click.option(
    "--key-prefix",
    envvar="WORKQUEUE_KEY_PREFIX",
    default="wq",
    show_default=True,
    help="Prefix of every Redis key (isolates installations sharing a Redis).",
)


def _view(
    fig: QueueFigures, settings: QueueSettings, layout: Layout, *, counters: bool
) -> dict[str, Any]:
    """One queue as ``--json`` prints it: depths, oldest waiting age, partitions, settings
    (counters)."""
    view: dict[str, Any] = {"queue": fig.queue}
    view.update((name, getattr(fig, name)) for name in DEPTHS)
    view["oldest_waiting_seconds"] = round(fig.oldest_waiting_seconds, 3)
    view["partitions"] = layout.partitions
    view["draining"] = list(layout.draining)
    view["settings"] = msgspec.to_builtins(settings)
    if counters:
        view["counters"] = dict(sorted(fig.counters.items()))
    return view


async def _views(
    broker: Broker, names: list[str] | None, *, counters: bool
) -> list[dict[str, Any]]:
    """The views of these queues (every known queue when ``names`` is None)."""
    if names is None:
        names = await broker.known_queues()
    figures = await broker.queue_figures(names)
    settings = await broker.queue_settings(names)
    layouts = await broker.partitions.layouts(names, max_age=0.0)
    views = [
        _view(fig, settings[fig.queue], layouts[fig.queue], counters=counters)
        for fig in figures.queues
    ]
    # H4: pause state, cancelled depth and queued per priority (queue_control)
    for view, row in zip(views, await overview(broker, names, only=True), strict=True):
        view.update(paused=row.paused, cancelled=row.depth["cancelled"])
        view.update(queued_by_priority=row.queued_by_priority)
    return views


def _partitions_text(view: dict[str, Any]) -> str:
    text = str(view["partitions"])
    if view["draining"]:
        text += f" (draining: {', '.join(map(str, view['draining']))})"
    return text


def _settings_text(settings: dict[str, Any]) -> str:
    text = (
        f"completed {settings['completed_ttl_s']:g}s, failed {settings['failed_ttl_s']:g}s, "
        f"max lost leases {settings['max_lost_leases']}"
    )
    return text if settings["configured"] else text + " (defaults)"


@click.group("queues")
def queues_group() -> None:
    """Every queue's depth per status, oldest waiting age and fleet-wide settings."""


@queues_group.command("list")
@redis_url_option
@prefix_option
@json_option
def list_command(redis_url: str, key_prefix: str, as_json: bool) -> None:
    """Every known queue: depth per status, oldest waiting age, stored settings."""

    async def action(broker: Broker) -> list[Any]:
        return await _views(broker, None, counters=False)

    views = _run(redis_url, BrokerConfig(prefix=key_prefix), action)
    if as_json:
        _print_json(views)
        return
    table = Table(title=f"Queues ({len(views)})", show_header=True)
    table.add_column("queue", no_wrap=True)
    for name in (*DEPTHS, "oldest waiting s", "partitions"):
        table.add_column(name.replace("_", " "), justify="right")
    table.add_column("state")  # H4
    table.add_column("settings", overflow="fold")
    for view in views:
        table.add_row(
            view["queue"],
            *(str(view[name]) for name in DEPTHS),
            f"{view['oldest_waiting_seconds']:g}",
            _partitions_text(view),
            paused_text(view["paused"]),
            _settings_text(view["settings"]),
        )
    _console().print(table)


@queues_group.command("show")
@click.argument("name")
@redis_url_option
@prefix_option
@json_option
def show_command(name: str, redis_url: str, key_prefix: str, as_json: bool) -> None:
    """One queue: its depths, oldest waiting age, counters and settings."""

    async def action(broker: Broker) -> dict[str, Any] | None:
        if name not in await broker.known_queues():
            return None
        (view,) = await _views(broker, [name], counters=True)
        return view

    view = _run(redis_url, BrokerConfig(prefix=key_prefix), action)
    if view is None:
        _fail(f"no queue named {name!r} (see: workqueue queues list)")
    if as_json:
        _print_json(view)
        return
    table = Table(title=f"Queue {name}", show_header=False, box=None)
    table.add_column("field", style="bold")
    table.add_column("value", overflow="fold")
    for field in (*DEPTHS, "oldest_waiting_seconds"):
        table.add_row(field.replace("_", " "), f"{view[field]:g}")
    table.add_row("partitions", _partitions_text(view))
    table.add_row("settings", _settings_text(view["settings"]))
    for counter, value in view["counters"].items():
        table.add_row(counter, str(value))
    _console().print(table)


def _ttl_option(status: str, verb: str) -> Callable[[FC], FC]:
    return click.option(
        f"--{status}-ttl",
        type=click.FloatRange(min=0),
        default=None,
        metavar="SECONDS",
        help=f"Seconds a {status} job's record is kept (0: deleted when it {verb}).",
    )


@queues_group.command("set")
@click.argument("name")
@_ttl_option("completed", "completes")
@_ttl_option("failed", "fails")
@click.option(
    "--max-lost-leases",
    type=click.IntRange(min=1),
    default=None,
    metavar="N",
    help="A job whose lease expires N times fails for good.",
)
@click.option(
    "--partitions",
    type=click.IntRange(min=1, max=MAX_PARTITIONS),
    default=None,
    metavar="N",
    help="Spread the queue over N partitions (hash slots): on Redis Cluster, about one per "
    "master. Jobs already in other partitions drain; nothing is lost.",
)
@redis_url_option
@prefix_option
@json_option
def set_command(
    name: str,
    completed_ttl: float | None,
    failed_ttl: float | None,
    max_lost_leases: int | None,
    partitions: int | None,
    redis_url: str,
    key_prefix: str,
    as_json: bool,
) -> None:
    """Change a queue's fleet-wide settings (every process reads them; unset ones stay).

    A queue may be configured before its first job; it is then listed. A new number of
    partitions is followed by every process within 5 seconds.
    """
    given = (completed_ttl, failed_ttl, max_lost_leases, partitions)
    if all(value is None for value in given):
        raise click.UsageError(
            "give --completed-ttl, --failed-ttl, --max-lost-leases or --partitions"
        )
    if not NAME_PATTERN.match(name):
        raise click.UsageError(f"queue name {name!r} must be 1-128 characters of A-Za-z0-9_.:-")

    async def action(broker: Broker) -> tuple[QueueSettings, Layout]:
        settings = await broker.set_queue_settings(
            name,
            completed_ttl_s=completed_ttl,
            failed_ttl_s=failed_ttl,
            max_lost_leases=max_lost_leases,
        )
        if partitions is None:
            return settings, await broker.partitions.layout(name, max_age=0.0)
        return settings, await broker.partitions.set_partitions(name, partitions)

    settings, layout = _run(redis_url, BrokerConfig(prefix=key_prefix), action)
    data = {
        "queue": name,
        **msgspec.to_builtins(settings),
        "partitions": layout.partitions,
        "draining": list(layout.draining),
    }
    if as_json:
        _print_json(data)
    else:
        text = f"queue {name}: {_settings_text(data)}"
        if partitions is not None or layout.partitioned:
            text += f"; partitions {_partitions_text(data)}"
        click.echo(text)


# H4: pause/resume live in cli/queue_control.py
queues_group.add_command(pause_command)
queues_group.add_command(resume_command)
