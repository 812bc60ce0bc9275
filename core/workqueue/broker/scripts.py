"""The Lua scripts of the job state machine, read once from the package.

Every script is sent as ``prelude.lua`` and ``control.lua`` followed by its own source: the
prelude is the one definition of the clock, the counters, the capped wake-up, failing for good
and retention (see its header), ``control.lua`` the one way an attempt enters the history and
a job ends cancelled, so no two scripts can disagree about them.
"""

from __future__ import annotations

from importlib import resources

from redis.asyncio import Redis
from redis.commands.core import AsyncScript

__all__ = ["SCRIPT_NAMES", "Scripts", "source"]

SCRIPT_NAMES = (
    "enqueue",
    "reserve",
    "finish",
    "renew",
    "housekeep",
    "requeue_failed",
    "purge",
    "heartbeat",
    "register_queues",
    "cancel",
    "progress",
    "queue_pause",  # H4
    "queue_info",  # H4
    "limit_keys",
    "limit_acquire",
    "limit_release",
    "limit_renew",
    "limit_flush",
    "defer",
    "limit_wake",
    "schedule_put",
    "schedule_pause",
    "schedule_claim",
    "schedule_done",
    "schedule_delete",
)

#: the shared helpers every script starts with, in order
_HELPERS = ("prelude", "control")


def _read(name: str) -> str:
    return resources.files("workqueue.broker").joinpath(f"lua/{name}.lua").read_text("utf-8")


def source(name: str) -> str:
    """The full text Redis runs for script ``name`` (prelude included)."""
    return "".join(_read(helper) for helper in _HELPERS) + _read(name)


class Scripts:
    """The registered scripts of one client; redis-py reloads them after a Redis restart."""

    def __init__(self, redis: Redis) -> None:
        self.enqueue: AsyncScript = redis.register_script(source("enqueue"))
        self.reserve: AsyncScript = redis.register_script(source("reserve"))
        self.finish: AsyncScript = redis.register_script(source("finish"))
        self.renew: AsyncScript = redis.register_script(source("renew"))
        self.housekeep: AsyncScript = redis.register_script(source("housekeep"))
        self.requeue_failed: AsyncScript = redis.register_script(source("requeue_failed"))
        self.purge: AsyncScript = redis.register_script(source("purge"))
        self.heartbeat: AsyncScript = redis.register_script(source("heartbeat"))
        self.register_queues: AsyncScript = redis.register_script(source("register_queues"))
        self.cancel: AsyncScript = redis.register_script(source("cancel"))
        self.progress: AsyncScript = redis.register_script(source("progress"))
        self.queue_pause: AsyncScript = redis.register_script(source("queue_pause"))  # H4
        self.queue_info: AsyncScript = redis.register_script(source("queue_info"))  # H4
