"""Options shared by several commands; each also reads its ``WORKQUEUE_*`` variable."""

from __future__ import annotations

import functools
from collections.abc import Callable
from typing import Any

import click

from workqueue.broker.config import BrokerConfig
from workqueue.settings import DEFAULT_REDIS_URL

__all__ = ["broker_options", "log_options", "redis_url_option"]

F = Callable[..., Any]


def _check_redis_url(ctx: click.Context, param: click.Parameter, value: str) -> str:
    """A malformed URL is a usage error (exit 2) naming it without its password, not a
    traceback from deep inside the Redis client."""
    from redis.connection import parse_url

    from workqueue.log import redact_url

    if value.partition("://")[0].lower() in ("redis+sentinel", "rediss+sentinel"):
        from workqueue.broker.sentinel_url import parse_sentinel_url
        from workqueue.errors import ConfigurationError

        try:
            parse_sentinel_url(value)
        except ConfigurationError as exc:
            raise click.BadParameter(f"{redact_url(value)!r}: {exc}") from None
        return value
    try:
        parse_url(value)  # type: ignore[no-untyped-call]
    except ValueError as exc:
        problem = str(exc).replace(value, redact_url(value))
        raise click.BadParameter(f"{redact_url(value)!r} is not a Redis URL: {problem}") from None
    return value


def redis_url_option(f: F) -> F:
    return click.option(
        "--redis-url",
        envvar="WORKQUEUE_REDIS_URL",
        default=DEFAULT_REDIS_URL,
        show_default=True,
        callback=_check_redis_url,
        help="Redis URL (redis:// or rediss://, user and password in the URL; "
        "redis+sentinel://host:port[,host:port...]/<master-name>[/<db>] for Sentinel).",
    )(f)


def broker_options(f: F) -> F:
    """The key prefix, retention, lost-lease and queue-count options, handed to the command as one
    ``broker_config: BrokerConfig`` argument."""

    @functools.wraps(f)
    def with_config(
        *args: Any,
        key_prefix: str,
        completed_ttl: float,
        failed_ttl: float,
        max_lost_leases: int,
        max_queues: int,
        durable_enqueue: int,
        durable_timeout: float,
        **kwargs: Any,
    ) -> Any:
        config = BrokerConfig(
            prefix=key_prefix,
            completed_ttl_s=completed_ttl,
            failed_ttl_s=failed_ttl,
            max_lost_leases=max_lost_leases,
            max_queues=max_queues,
            durable_enqueue=durable_enqueue,
            durable_timeout_s=durable_timeout,
        )
        return f(*args, broker_config=config, **kwargs)

    command: F = with_config
    for decorator in reversed(
        [
            click.option(
                "--key-prefix",
                envvar="WORKQUEUE_KEY_PREFIX",
                default="wq",
                show_default=True,
                help="Prefix of every Redis key (isolates installations sharing a Redis).",
            ),
            click.option(
                "--completed-ttl",
                envvar="WORKQUEUE_COMPLETED_TTL",
                type=click.FloatRange(min=0),
                default=86400.0,
                show_default=True,
                help="Seconds a completed job is kept (0 = delete at once); only the default for "
                "queues not configured with `workqueue queues set`.",
            ),
            click.option(
                "--failed-ttl",
                envvar="WORKQUEUE_FAILED_TTL",
                type=click.FloatRange(min=0),
                default=7 * 86400.0,
                show_default=True,
                help="Seconds a failed job is kept (0 = delete at once); only the default for "
                "queues not configured with `workqueue queues set`.",
            ),
            click.option(
                "--max-lost-leases",
                envvar="WORKQUEUE_MAX_LOST_LEASES",
                type=click.IntRange(min=1),
                default=3,
                show_default=True,
                help="A job whose lease is lost this many times (its worker died) fails for good; "
                "only the default for queues not configured with `workqueue queues set`.",
            ),
            click.option(
                "--max-queues",
                envvar="WORKQUEUE_MAX_QUEUES",
                type=click.IntRange(min=1),
                default=1000,
                show_default=True,
                help="Distinct queue names accepted; an enqueue to one more is refused.",
            ),
            # durable enqueue (SPEC section 10): every enqueue this process makes
            click.option(
                "--durable-enqueue",
                envvar="WORKQUEUE_DURABLE_ENQUEUE",
                type=click.IntRange(min=0),
                default=0,
                show_default=True,
                help="Replicas that must acknowledge an enqueue (Redis WAIT) before it is "
                "answered (202); fewer in time: 503, retry with the same Idempotency-Key.",
            ),
            click.option(
                "--durable-timeout",
                envvar="WORKQUEUE_DURABLE_TIMEOUT",
                type=click.FloatRange(min=0.001, max=60),
                default=1.0,
                show_default=True,
                help="Seconds an enqueue waits for those replicas.",
            ),
        ]
    ):
        command = decorator(command)
    return command


def log_options(f: F) -> F:
    for decorator in reversed(
        [
            click.option(
                "--log-file",
                envvar="WORKQUEUE_LOG_FILE",
                default="logs.txt",
                show_default=True,
                help="Event log file ('' = stderr only).",
            ),
            click.option(
                "--log-json/--no-log-json",
                envvar="WORKQUEUE_LOG_JSON",
                default=False,
                help="Write JSON lines instead of text lines.",
            ),
            click.option(
                "--log-level",
                envvar="WORKQUEUE_LOG_LEVEL",
                default="INFO",
                show_default=True,
                type=click.Choice(["DEBUG", "INFO", "WARNING", "ERROR"], case_sensitive=False),
            ),
        ]
    ):
        f = decorator(f)
    return f
