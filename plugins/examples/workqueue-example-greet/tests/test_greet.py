"""Tests of the example plugin: the handler alone, and the plugin as WorkQueue discovers it."""

from __future__ import annotations

from datetime import UTC, datetime

import msgspec
import pytest
from loguru import logger
from workqueue_example_greet import GreetPayload, greet

from workqueue import JobContext, PayloadValidationError
from workqueue.registry import build_registry


def context() -> JobContext:
    return JobContext(
        job_id="job-1",
        type="greet",
        queue="default",
        attempt=1,
        retries=0,
        enqueued_at=datetime.now(UTC),
        worker_id="test",
        timeout=10.0,
        logger=logger.bind(job_id="job-1"),
    )


async def test_the_handler_greets_by_name() -> None:  # 1. the handler alone
    assert await greet(GreetPayload(name="Ada"), context()) == "hello Ada"


@pytest.mark.parametrize("payload", [{}, {"name": ""}, {"name": 3}, {"name": "x", "age": 3}])
def test_bad_payloads_are_rejected(payload: dict[str, object]) -> None:  # 2. the schema
    with pytest.raises(msgspec.ValidationError):
        msgspec.convert(payload, GreetPayload)


async def test_workqueue_discovers_the_plugin_and_validates_through_it() -> None:
    # 3. discovery: loads the installed entry point exactly as the producer and the worker do
    registry = build_registry(only=["greet"])
    job_type = registry.require("greet")

    payload = registry.validate_payload("greet", {"name": "Grace"})
    with pytest.raises(PayloadValidationError):
        registry.validate_payload("greet", {"name": ""})

    assert await job_type.handler(payload, context()) == "hello Grace"
