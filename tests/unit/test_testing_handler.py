"""workqueue.testing.run_job: one attempt of a handler as the worker runs it, without Redis."""

from __future__ import annotations

import asyncio
import threading
import time
from typing import Any

import msgspec
import pytest
from wq_testkit import TEST_PLUGIN

from workqueue import Backoff, JobContext, JobType, PermanentError, RetryLater
from workqueue.registry import build_registry
from workqueue.testing import CancelSwitch, make_context, run_job, run_job_sync


class Order(msgspec.Struct, forbid_unknown_fields=True):
    order_id: int
    items: list[str]


seen: list[tuple[Any, JobContext]] = []


async def ship(payload: Order, ctx: JobContext) -> dict[str, Any]:
    seen.append((payload, ctx))
    ctx.logger.info("shipping {} items", len(payload.items))
    ctx.logger.bind(carrier="dhl").warning("slow carrier")
    return {"order": payload.order_id, "parts": ("a", "b")}


SHIP = JobType(name="ship", handler=ship, payload_schema=Order, retries=2)


async def test_async_handler_gets_the_typed_payload_and_a_realistic_context() -> None:
    seen.clear()
    result = await run_job(SHIP, {"order_id": 7, "items": ["x", "y"]}, attempt=2, queue="orders")

    assert result.status == "completed" and result.succeeded
    # the result as the worker stores it: JSON (a tuple comes back a list)
    assert result.result == {"order": 7, "parts": ["a", "b"]}
    assert result.error is None and result.exception is None
    [(payload, ctx)] = seen
    assert payload == Order(order_id=7, items=["x", "y"])
    assert ctx is result.context
    assert (ctx.type, ctx.queue, ctx.attempt, ctx.retries) == ("ship", "orders", 2, 2)
    assert ctx.token == 2 and ctx.job_id.startswith("test-") and ctx.worker_id == "test-worker"
    assert ctx.timeout == SHIP.timeout and not ctx.cancelled
    assert [(line.level, line.message) for line in result.logs] == [
        ("INFO", "shipping 2 items"),
        ("WARNING", "slow carrier"),
    ]
    assert result.logs[0].extra["job_id"] == ctx.job_id
    assert result.logs[1].extra["carrier"] == "dhl"


async def test_a_payload_that_fails_the_schema_fails_the_job_as_the_worker_records_it() -> None:
    result = await run_job(SHIP, {"order_id": "seven", "items": []})
    assert result.status == "failed" and result.retry_in_seconds is None
    assert result.error is not None
    assert result.error.startswith("invalid job: payload does not match the job type's schema")
    assert "order_id" in result.error


async def test_installed_job_type_by_name_with_a_plain_def_handler(
    installed_test_plugin: None,
) -> None:
    registry = build_registry(only=[TEST_PLUGIN])
    result = await run_job("test_sync_add", {"a": 2, "b": 3}, registry=registry)
    assert result.status == "completed" and result.result == 5
    assert (await run_job("test_sync_add", {"a": 2}, registry=registry)).status == "failed"


def flaky(payload: dict[str, Any], ctx: JobContext) -> None:
    raise ConnectionError("smtp.example.org refused")


FLAKY = JobType(
    name="flaky", handler=flaky, retries=2, backoff=Backoff(base_seconds=4, factor=2, jitter=0.5)
)


async def test_an_error_is_retried_with_backoff_until_the_retries_are_used_up() -> None:
    first = await run_job(FLAKY, {})
    assert first.status == "retrying"
    assert first.error == "ConnectionError: smtp.example.org refused"
    assert isinstance(first.exception, ConnectionError)
    assert first.retry_in_seconds is not None and 2.0 <= first.retry_in_seconds <= 4.0
    second = await run_job(FLAKY, {}, attempt=2)
    assert second.status == "retrying" and 4.0 <= (second.retry_in_seconds or 0) <= 8.0
    last = await run_job(FLAKY, {}, attempt=3)
    assert last.status == "failed" and last.retry_in_seconds is None
    assert (await run_job(FLAKY, {}, retries=0)).status == "failed"


async def refuse(payload: dict[str, Any], ctx: JobContext) -> None:
    if payload.get("later"):
        raise RetryLater("rate limited", 7)
    raise PermanentError("mailbox does not exist")


async def test_permanent_error_and_retry_later() -> None:
    kind = JobType(name="refuse", handler=refuse)
    permanent = await run_job(kind, {})
    assert permanent.status == "failed"
    assert permanent.error == "PermanentError: mailbox does not exist"
    later = await run_job(kind, {"later": True})
    assert later.status == "retrying" and later.retry_in_seconds == 7.0


async def slow(payload: dict[str, Any], ctx: JobContext) -> str:
    try:
        await asyncio.sleep(30)
    except asyncio.CancelledError:
        payload_log.append(bool(ctx.cancelled))
        raise
    return "never"


payload_log: list[bool] = []


async def test_an_async_handler_past_its_timeout_is_cancelled_and_counted_failed() -> None:
    payload_log.clear()
    kind = JobType(name="slow", handler=slow, retries=0)
    result = await run_job(kind, {}, timeout=0.2)
    assert result.timed_out and result.status == "failed"
    assert result.error == "timed out after 0.2s"
    assert result.context.cancelled and payload_log == [True]


def careful(payload: dict[str, Any], ctx: JobContext) -> str:
    """A plain def that checks ctx.cancelled between steps."""
    for _ in range(300):
        if ctx.cancelled:
            return "stopped early"
        time.sleep(0.01)
    return "finished"


async def test_a_test_can_set_ctx_cancelled_while_a_plain_def_runs() -> None:
    kind = JobType(name="careful", handler=careful)
    switch = CancelSwitch()
    threading.Timer(0.1, switch.set).start()
    result = await run_job(kind, {}, cancelled=switch)
    assert result.result == "stopped early" and result.context.cancelled is switch

    timed = await run_job(kind, {}, timeout=0.1, retries=1)
    assert timed.timed_out and timed.status == "retrying" and timed.context.cancelled


async def test_a_result_that_is_not_json_is_stored_as_null_with_a_warning() -> None:
    async def odd(payload: dict[str, Any], ctx: JobContext) -> object:
        return object()

    result = await run_job(JobType(name="odd", handler=odd), {})
    assert result.status == "completed" and result.result is None
    assert result.result_warning == "result of type object is not JSON-serialisable"


def test_run_job_sync_in_a_plain_test() -> None:
    def add(payload: dict[str, Any], ctx: JobContext) -> int:
        return int(payload["a"]) + int(payload["b"])

    assert run_job_sync(JobType(name="add", handler=add), {"a": 1, "b": 2}).result == 3


async def test_make_context_for_calling_a_handler_directly() -> None:
    ctx = make_context("ship", job_id="j-1", attempt=3)
    assert ctx.job_id == "j-1" and ctx.token == 3 and not ctx.cancelled
    assert await ship(Order(order_id=1, items=[]), ctx) == {"order": 1, "parts": ("a", "b")}


@pytest.mark.slow
async def test_an_isolated_job_type_runs_in_a_child_process(installed_test_plugin: None) -> None:
    import os

    registry = build_registry(only=[TEST_PLUGIN])
    result = await run_job("test_isolated_add", {"a": 1, "b": 2}, registry=registry)
    assert result.status == "completed" and result.result["sum"] == 3
    assert result.result["pid"] != os.getpid()
    failed = await run_job("test_isolated_fail", {}, registry=registry)
    assert failed.status == "failed" and failed.error == "ValueError: isolated failure"


async def counting(payload: dict[str, Any], ctx: JobContext) -> str:
    for done in range(1, 4):
        ctx.set_progress({"done": done, "total": 3})
        await asyncio.sleep(0.01 * payload.get("slow", 0))
    return "counted"


async def test_progress_reported_by_the_handler_is_kept_in_order() -> None:
    result = await run_job(JobType(name="counting", handler=counting), {})
    assert result.result == "counted"
    assert result.progress == [
        {"done": 1, "total": 3},
        {"done": 2, "total": 3},
        {"done": 3, "total": 3},
    ]


async def test_a_cancel_request_stops_a_running_async_handler() -> None:
    switch = CancelSwitch()
    asyncio.get_running_loop().call_later(0.1, switch.cancel)
    result = await run_job(
        JobType(name="counting", handler=counting), {"slow": 100}, cancelled=switch
    )
    assert result.status == "cancelled" and result.result is None and result.error is None
    assert result.context.cancelled and len(result.progress) == 1  # stopped in its first sleep


async def test_a_cancel_request_reaches_a_plain_def_through_ctx_cancelled() -> None:
    switch = CancelSwitch()
    threading.Timer(0.1, switch.cancel).start()
    result = await run_job(JobType(name="careful", handler=careful), {}, cancelled=switch)
    assert result.status == "cancelled" and switch.cancel_requested


async def test_a_job_cancelled_before_it_runs_never_runs() -> None:
    seen.clear()
    switch = CancelSwitch()
    switch.cancel()
    result = await run_job(SHIP, {"order_id": 1, "items": []}, cancelled=switch)
    assert result.status == "cancelled" and seen == []


def test_the_pytest_plugin_loads_neither_redis_nor_the_worker() -> None:
    """Every pytest run with workqueue-core installed imports the plugin (pytest11)."""
    import subprocess
    import sys

    probe = (
        "import sys, workqueue.testing.pytest_plugin\n"
        "print(sorted(m for m in sys.modules if m.startswith(('redis', 'workqueue.worker', "
        "'workqueue.broker', 'workqueue.testing.'))))"
    )
    done = subprocess.run(
        [sys.executable, "-c", probe], capture_output=True, text=True, timeout=60, check=True
    )
    assert done.stdout.strip() == "['workqueue.testing.pytest_plugin']"
