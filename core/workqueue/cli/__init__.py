"""The ``workqueue`` command line (click). Logging is configured here, at the entry points.

Each command's module is imported only when that command runs (a lazy group), so
``workqueue worker --processes K`` starts its K workers without first loading the producer,
the admin commands or the Redis client into the supervisor.
"""

from __future__ import annotations

import importlib

import click

from workqueue import __version__

__all__ = ["cli", "main"]

#: command name -> "module:attribute" of its click command
COMMANDS = {
    "worker": "workqueue.cli.worker:worker_command",
    "stats": "workqueue.cli.admin:stats_command",
    "jobs": "workqueue.cli.admin:jobs_group",
    "queues": "workqueue.cli.queues:queues_group",
    "enqueue": "workqueue.cli.admin:enqueue_command",
    "plugins": "workqueue.cli.admin:plugins_command",
    "producer": "workqueue.cli.producer:producer_command",
    "up": "workqueue.cli.up:up_command",
    "limits": "workqueue.cli.limits:limits_group",
    "schedules": "workqueue.cli.schedules:schedules_group",
}


class _LazyGroup(click.Group):
    """A group whose subcommands are imported on first use."""

    def list_commands(self, ctx: click.Context) -> list[str]:
        return sorted(COMMANDS)

    def get_command(self, ctx: click.Context, cmd_name: str) -> click.Command | None:
        target = COMMANDS.get(cmd_name)
        if target is None:
            return None
        module, _, attribute = target.partition(":")
        command: click.Command = getattr(importlib.import_module(module), attribute)
        return command


@click.group(
    cls=_LazyGroup,
    context_settings={"help_option_names": ["-h", "--help"], "max_content_width": 100},
)
@click.version_option(__version__, prog_name="workqueue")
def cli() -> None:
    """WorkQueue: background jobs on Redis, job types from plugins."""


def main() -> None:
    """Console-script entry point."""
    cli(prog_name="workqueue")
