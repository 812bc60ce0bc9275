"""``workqueue queues pause|resume NAME``: a paused queue accepts jobs and starts none (running
jobs finish); the state lives in Redis (the queue's settings hash), so it survives restarts.
Registered as subcommands of ``workqueue queues`` (cli/queues.py).

Exit codes: 0 success, 1 failure (one ``error: ...`` line on stderr), 2 usage error.
"""

from __future__ import annotations

from typing import Any

import click

from workqueue.broker import queue_control
from workqueue.broker.broker import Broker, BrokerConfig
from workqueue.cli.admin import _print_json, _run, json_option
from workqueue.cli.options import redis_url_option

__all__ = ["pause_command", "paused_text", "resume_command"]

_prefix_option = click.option(
    "--key-prefix",
    envvar="WORKQUEUE_KEY_PREFIX",
    default="wq",
    show_default=True,
    help="Prefix of every Redis key (isolates installations sharing a Redis).",
)


def paused_text(paused: bool) -> str:
    """How the tables show a queue's pause state."""
    return "paused" if paused else "running"


def _set(name: str, redis_url: str, key_prefix: str, as_json: bool, paused: bool) -> None:
    async def action(broker: Broker) -> dict[str, Any]:
        was = await queue_control.set_paused(broker, name, paused)
        (row,) = await queue_control.overview(broker, [name], only=True)
        return {**row.to_dict(), "was_paused": was}

    view = _run(redis_url, BrokerConfig(prefix=key_prefix), action)
    if as_json:
        _print_json(view)
        return
    verb = "paused" if paused else "resumed"
    already = view["was_paused"] == paused
    click.echo(
        f"queue {name} {'was already ' + verb if already else verb}: "
        f"{view['depth']['queued']} queued, {view['depth']['active']} running"
    )


@click.command("pause")
@click.argument("name")
@redis_url_option
@_prefix_option
@json_option
def pause_command(name: str, redis_url: str, key_prefix: str, as_json: bool) -> None:
    """Pause queue NAME: it accepts jobs and starts none; running jobs finish."""
    _set(name, redis_url, key_prefix, as_json, True)


@click.command("resume")
@click.argument("name")
@redis_url_option
@_prefix_option
@json_option
def resume_command(name: str, redis_url: str, key_prefix: str, as_json: bool) -> None:
    """Resume queue NAME: its waiting jobs start."""
    _set(name, redis_url, key_prefix, as_json, False)
