"""``workqueue schedules add|list|show|remove|pause|resume``: the cron schedules in Redis.

``add`` creates or replaces an operator's schedule (checked like an enqueue of its task: the
job type must be installed here or advertised by a live worker, the payload must fit the type's
schema). A schedule a plugin declared becomes the operator's when ``add`` replaces it, and the
plugin's declaration no longer applies to it. See docs/scheduling.md.

Exit codes: 0 success, 1 failure (one ``error: ...`` line on stderr), 2 usage error.
"""

from __future__ import annotations

import json
import time
from typing import Any

import click
from rich.table import Table

from workqueue.broker.broker import Broker, BrokerConfig
from workqueue.cli.admin import _console, _fail, _one_line, _print_json, _run, json_option
from workqueue.cli.options import redis_url_option
from workqueue.cli.queues import prefix_option
from workqueue.errors import PluginError, TaskValidationError

__all__ = ["schedules_group"]


def _store(broker: Broker) -> Any:
    from workqueue.schedules.store import ScheduleStore

    return ScheduleStore(broker.redis, broker.config.prefix)


def _views(states: list[Any]) -> list[dict[str, Any]]:
    from workqueue.schedules.checks import with_next_tick

    now = int(time.time() * 1000)
    return [with_next_tick(state, now).to_dict() for state in states]


@click.group("schedules")
def schedules_group() -> None:
    """Cron schedules: every tick enqueues one job, however many workers run."""


@schedules_group.command("add")
@click.argument("name")
@click.option("--cron", "cron", required=True, help="5 fields, or 6 with leading seconds.")
@click.option("--type", "job_type", required=True, help="Job type of the jobs it enqueues.")
@click.option("--payload", default=None, help="The jobs' payload: a JSON object.")
@click.option("--queue", default="default", show_default=True, help="Queue of the jobs.")
@click.option("--timezone", default="UTC", show_default=True, help="IANA time zone name.")
@click.option("--paused", is_flag=True, help="Store it paused.")
@redis_url_option
@prefix_option
@json_option
def add_command(
    name: str,
    cron: str,
    job_type: str,
    payload: str | None,
    queue: str,
    timezone: str,
    paused: bool,
    redis_url: str,
    key_prefix: str,
    as_json: bool,
) -> None:
    """Create or replace the schedule NAME (an operator's schedule)."""
    from workqueue.client import Limits
    from workqueue.registry import build_registry
    from workqueue.schedules.checks import checked
    from workqueue.schedules.model import Schedule

    data: Any = None
    if payload is not None:
        try:
            data = json.loads(payload)
        except ValueError as exc:
            _fail(f"payload: not valid JSON: {exc}")
    try:
        registry = build_registry()
        schedule = Schedule(
            name=name, cron=cron, type=job_type, payload=data, queue=queue, timezone=timezone
        )
    except (PluginError, TaskValidationError) as exc:
        _fail(_one_line(exc))

    async def action(broker: Broker) -> tuple[str, Any]:
        remote = () if job_type in registry else await broker.advertised_types()
        store = _store(broker)
        verdict = await store.put(
            checked(schedule, registry, Limits(), remote), source="operator", paused=paused
        )
        return verdict, await store.get(name)

    verdict, state = _run(redis_url, BrokerConfig(prefix=key_prefix), action)
    (view,) = _views([state])
    if as_json:
        _print_json({"result": verdict, **view})
    else:
        click.echo(f"schedule {name} {verdict}: {view['cron']} ({view['timezone']}), next tick "
                   f"{view['next_tick'] or '-'}")  # fmt: skip


@schedules_group.command("list")
@redis_url_option
@prefix_option
@json_option
def list_command(redis_url: str, key_prefix: str, as_json: bool) -> None:
    """Every schedule: expression, time zone, job, paused, last and next tick."""

    async def action(broker: Broker) -> list[Any]:
        states: list[Any] = await _store(broker).all()
        return states

    views = _views(_run(redis_url, BrokerConfig(prefix=key_prefix), action))
    if as_json:
        _print_json(views)
        return
    table = Table(title=f"Schedules ({len(views)})", show_header=True)
    for column in ("name", "cron", "timezone", "type", "queue", "state", "source", "fired"):
        table.add_column(column, no_wrap=column in ("name", "cron"))
    table.add_column("last tick")
    table.add_column("next tick")
    for v in views:
        table.add_row(
            v["name"], v["cron"], v["timezone"], v["type"], v["queue"],
            "paused" if v["paused"] else "active", v["source"], str(v["fired"]),
            v["last_tick"] or "-", v["next_tick"] or "-",
        )  # fmt: skip
    _console().print(table)


@schedules_group.command("show")
@click.argument("name")
@redis_url_option
@prefix_option
@json_option
def show_command(name: str, redis_url: str, key_prefix: str, as_json: bool) -> None:
    """One schedule, with its payload and the id of the last job it enqueued."""

    async def action(broker: Broker) -> Any:
        return await _store(broker).get(name)

    state = _run(redis_url, BrokerConfig(prefix=key_prefix), action)
    if state is None:
        _fail(f"no schedule named {name!r} (see: workqueue schedules list)")
    (view,) = _views([state])
    if as_json:
        _print_json(view)
        return
    for key, value in view.items():
        shown = json.dumps(value) if key == "payload" else value
        click.echo(f"{key + ':':<13} {'-' if shown is None else shown}")


def _simple(verb: str, help_text: str) -> click.Command:
    @click.argument("name")
    @redis_url_option
    @prefix_option
    @json_option
    def command(name: str, redis_url: str, key_prefix: str, as_json: bool) -> None:
        async def action(broker: Broker) -> bool:
            store = _store(broker)
            if verb == "remove":
                done: bool = await store.delete(name)
            else:
                done = await store.set_paused(name, verb == "pause")
            return done

        if not _run(redis_url, BrokerConfig(prefix=key_prefix), action):
            _fail(f"no schedule named {name!r} (see: workqueue schedules list)")
        past = {"remove": "removed", "pause": "paused", "resume": "resumed"}[verb]
        if as_json:
            _print_json({"name": name, "result": past})
        else:
            click.echo(f"schedule {name} {past}")

    command.__doc__ = help_text
    return schedules_group.command(verb)(command)


_simple(
    "remove",
    "Delete the schedule NAME (a plugin's comes back when a worker with that plugin starts: "
    "pause it to stop it for good).",
)
_simple("pause", "Stop the schedule NAME from firing (kept, also across worker restarts).")
_simple(
    "resume", "Let the schedule NAME fire again, from its next tick (paused ticks are skipped)."
)
