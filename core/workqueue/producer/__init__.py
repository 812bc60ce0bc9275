"""The producer: an HTTP service (Litestar) that validates tasks and writes them to Redis."""

from __future__ import annotations

from workqueue.producer.app import ProducerSettings, create_app

__all__ = ["ProducerSettings", "create_app"]
