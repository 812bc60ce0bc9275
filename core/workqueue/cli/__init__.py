"""The ``workqueue`` command line (click). Logging is configured here, at the entry points."""

from __future__ import annotations

import click

from workqueue import __version__
from workqueue.cli.admin import enqueue_command, jobs_group, plugins_command, stats_command
from workqueue.cli.producer import producer_command
from workqueue.cli.queues import queues_group
from workqueue.cli.up import up_command
from workqueue.cli.worker import worker_command

__all__ = ["cli", "main"]


@click.group(context_settings={"help_option_names": ["-h", "--help"], "max_content_width": 100})
@click.version_option(__version__, prog_name="workqueue")
def cli() -> None:
    """WorkQueue: background jobs on Redis, job types from plugins."""


cli.add_command(worker_command)
cli.add_command(stats_command)
cli.add_command(jobs_group)
cli.add_command(queues_group)
cli.add_command(enqueue_command)
cli.add_command(plugins_command)
cli.add_command(producer_command)
cli.add_command(up_command)


def main() -> None:
    """Console-script entry point."""
    cli(prog_name="workqueue")
