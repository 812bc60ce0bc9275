"""``workqueue producer``: the HTTP service that validates tasks and enqueues them."""

from __future__ import annotations

import os
import signal
import sys
from types import FrameType

import click

from workqueue.broker.broker import BrokerConfig
from workqueue.cli.options import broker_options, log_options, redis_url_option
from workqueue.errors import PluginError
from workqueue.log import configure_logging, redact_url, shutdown_logging

__all__ = ["producer_command"]


@click.command("producer")
@click.option(
    "--host",
    envvar="WORKQUEUE_HOST",
    default="127.0.0.1",
    show_default=True,
    help="Address to listen on.",
)
@click.option(
    "--port",
    envvar="WORKQUEUE_PORT",
    type=click.IntRange(min=0, max=65535),
    default=8000,
    show_default=True,
    help="Port to listen on.",
)
@redis_url_option
@click.option(
    "--max-body-bytes",
    envvar="WORKQUEUE_MAX_BODY_BYTES",
    type=click.IntRange(min=1),
    default=1024 * 1024,
    show_default=True,
    help="Largest request body accepted (larger: 413).",
)
@click.option(
    "--batch-limit",
    envvar="WORKQUEUE_BATCH_LIMIT",
    type=click.IntRange(min=1),
    default=1000,
    show_default=True,
    help="Most tasks in one POST /enqueue/batch.",
)
@click.option(
    "--request-timeout",
    envvar="WORKQUEUE_REQUEST_TIMEOUT",
    type=click.FloatRange(min=0.1, max=3600),
    default=15.0,  # workqueue.producer.deadline.DEFAULT_REQUEST_TIMEOUT_S (not imported: slow)
    show_default=True,
    help="Seconds a client may take to send a whole request (headers and body); "
    "slower or silent connections are closed.",
)
@broker_options
@log_options
def producer_command(
    host: str,
    port: int,
    redis_url: str,
    max_body_bytes: int,
    batch_limit: int,
    request_timeout: float,
    broker_config: BrokerConfig,
    log_file: str,
    log_json: bool,
    log_level: str,
) -> None:
    """Serve POST /enqueue, POST /enqueue/batch and GET /jobs/{id} over HTTP.

    Set WORKQUEUE_API_KEY to require `Authorization: Bearer <key>` on every route but /health.
    """
    import uvicorn

    from workqueue.producer import ProducerSettings, create_app
    from workqueue.producer.deadline import protocol_with_deadline
    from workqueue.registry import build_registry

    configure_logging(
        role="producer", log_file=log_file or None, json_lines=log_json, level=log_level.upper()
    )
    from loguru import logger

    try:
        registry = build_registry()
    except PluginError as exc:
        click.echo(f"error: {exc}", err=True)
        shutdown_logging()
        sys.exit(1)
    settings = ProducerSettings(
        redis_url=redis_url,
        broker=broker_config,
        api_key=os.environ.get("WORKQUEUE_API_KEY") or None,
        max_body_bytes=max_body_bytes,
        batch_limit=batch_limit,
    )
    logger.info(
        "producer on http://{}:{} (Redis {}, job types: {}, API key {})",
        host,
        port,
        redact_url(redis_url),
        ", ".join(registry.names()) or "none",
        "required" if settings.api_key else "not set",
    )
    config = uvicorn.Config(
        create_app(settings, registry),
        host=host,
        port=port,
        loop="auto",
        http=protocol_with_deadline("auto", request_timeout),
        access_log=False,
        log_level=log_level.lower(),
        lifespan="on",
        server_header=False,
        timeout_graceful_shutdown=10,
    )
    # uvicorn catches SIGTERM/SIGINT, stops accepting, drains the open requests, then raises
    # the signal again to the handler that was there before it: make that a clean exit (0).
    for signum in (signal.SIGTERM, signal.SIGINT):
        signal.signal(signum, _exit_cleanly)
    try:
        uvicorn.Server(config).run()
    finally:
        logger.info("producer stopped")
        shutdown_logging()


def _exit_cleanly(signum: int, frame: FrameType | None) -> None:
    raise SystemExit(0)
