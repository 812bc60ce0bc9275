"""The Lua scripts of the job state machine, read once from the package."""

from __future__ import annotations

from importlib import resources

from redis.asyncio import Redis
from redis.commands.core import AsyncScript

__all__ = ["SCRIPT_NAMES", "Scripts"]

SCRIPT_NAMES = (
    "enqueue",
    "reserve",
    "finish",
    "renew",
    "requeue_failed",
    "purge",
    "heartbeat",
    "audit",
)


def _source(name: str) -> str:
    return resources.files("workqueue.broker").joinpath(f"lua/{name}.lua").read_text("utf-8")


class Scripts:
    """The registered scripts of one client; redis-py reloads them after a Redis restart."""

    def __init__(self, redis: Redis) -> None:
        self.enqueue: AsyncScript = redis.register_script(_source("enqueue"))
        self.reserve: AsyncScript = redis.register_script(_source("reserve"))
        self.finish: AsyncScript = redis.register_script(_source("finish"))
        self.renew: AsyncScript = redis.register_script(_source("renew"))
        self.requeue_failed: AsyncScript = redis.register_script(_source("requeue_failed"))
        self.purge: AsyncScript = redis.register_script(_source("purge"))
        self.heartbeat: AsyncScript = redis.register_script(_source("heartbeat"))
        self.audit: AsyncScript = redis.register_script(_source("audit"))
