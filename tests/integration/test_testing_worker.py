"""workqueue.testing's in-process worker and its pytest fixture, against the real Redis."""

from __future__ import annotations

from typing import Any

import pytest
import redis
from wq_testkit import REDIS_URL, TEST_PLUGIN

from workqueue import JobContext, JobType, WorkerInfo, hookimpl
from workqueue.errors import PluginError
from workqueue.testing import InProcessWorker, JobDidNotFinish
from workqueue.testing.pytest_plugin import WorkerFactory


@pytest.fixture
def workqueue_redis_url() -> str:
    """The suite's Redis (a restricted ACL user's under ``nox -s acl``): overriding the
    plugin's fixture is how a project points the workers elsewhere."""
    return REDIS_URL


async def test_fixture_runs_installed_job_types_to_their_final_state(
    installed_test_plugin: None, workqueue_worker: WorkerFactory, workqueue_key_prefix: str
) -> None:
    wq = await workqueue_worker(only=[TEST_PLUGIN])
    assert wq.key_prefix == workqueue_key_prefix

    done = await wq.run("test_echo", {"hello": "world"})
    assert done.status == "completed" and done.result == {"hello": "world"}
    assert done.attempts == 1

    added = await wq.run("test_sync_add", {"a": 20, "b": 22})
    assert added.result == 42

    # test_fail backs off 0.1-0.2 s, then doubles: two attempts end in failed
    failed = await wq.run("test_fail", {}, retries=1)
    assert failed.status == "failed" and failed.attempts == 2
    assert failed.error == "ValueError: test_fail always fails (attempt 2)"

    permanent = await wq.run("test_permanent", {})
    assert permanent.status == "failed" and permanent.attempts == 1


async def test_wait_gives_up_with_the_jobs_last_state(
    installed_test_plugin: None, workqueue_worker: WorkerFactory
) -> None:
    wq = await workqueue_worker(only=[TEST_PLUGIN])
    job = await wq.enqueue("test_sleep", {"seconds": 1.5})
    with pytest.raises(JobDidNotFinish, match="status 'active'"):
        await wq.wait(job.id, timeout=0.3)
    running = await wq.wait(job.id, statuses=["active"])
    assert running.status == "active"


class Greeter:
    """A plugin object given to the fixture directly (no entry point), with lifecycle hooks."""

    def __init__(self) -> None:
        self.events: list[str] = []

    async def greet(self, payload: dict[str, Any], ctx: JobContext) -> str:
        return f"hello {payload['name']} from {ctx.worker_id}"

    @hookimpl
    def workqueue_job_types(self) -> list[JobType]:
        return [JobType(name="greet_inproc", handler=self.greet)]

    @hookimpl
    def workqueue_worker_startup(self, worker: WorkerInfo) -> None:
        self.events.append(f"startup {worker.worker_id}")

    @hookimpl
    def workqueue_worker_shutdown(self, worker: WorkerInfo) -> None:
        self.events.append("shutdown")


async def test_plugin_objects_run_with_their_lifecycle_hooks_and_keys_are_deleted() -> None:
    greeter = Greeter()
    wq = InProcessWorker(redis_url=REDIS_URL, plugins=[greeter], worker_id="w-inproc")
    async with wq:
        info = await wq.run("greet_inproc", {"name": "Ada"})
        assert info.result == "hello Ada from w-inproc"
        assert greeter.events == ["startup w-inproc"]
    assert greeter.events == ["startup w-inproc", "shutdown"]
    r = redis.Redis.from_url(REDIS_URL)
    try:
        assert list(r.scan_iter(match=f"{wq.key_prefix}:*")) == []
    finally:
        r.close()


class BrokenStartup:
    @hookimpl
    def workqueue_job_types(self) -> list[JobType]:
        return [JobType(name="never_runs", handler=lambda p, c: None)]

    @hookimpl
    def workqueue_worker_startup(self, worker: WorkerInfo) -> None:
        raise RuntimeError("cannot reach the mail server")


async def test_a_worker_that_cannot_start_fails_the_wait_with_its_error() -> None:
    wq = InProcessWorker(redis_url=REDIS_URL, plugins=[BrokenStartup()])
    await wq.start()
    job = await wq.enqueue("never_runs", {})
    with pytest.raises(PluginError, match="cannot reach the mail server"):
        await wq.wait(job.id)
    await wq.stop()  # the error was reported once, by wait()


async def test_stop_raises_what_stopped_the_worker() -> None:
    wq = InProcessWorker(redis_url=REDIS_URL, plugins=[BrokenStartup()])
    await wq.start()
    with pytest.raises(PluginError, match="cannot reach the mail server"):
        await wq.stop()


async def test_job_types_without_a_plugin() -> None:
    async def double(payload: dict[str, Any], ctx: JobContext) -> int:
        return 2 * int(payload["n"])

    async with InProcessWorker(
        redis_url=REDIS_URL, job_types=[JobType(name="double", handler=double)], queues=["math"]
    ) as wq:
        info = await wq.run("double", {"n": 21}, queue="math")
    assert info.status == "completed" and info.result == 42 and info.queue == "math"


async def test_a_running_job_cancelled_through_the_client_ends_cancelled(
    installed_test_plugin: None, workqueue_worker: WorkerFactory
) -> None:
    wq = await workqueue_worker(only=[TEST_PLUGIN])
    job = await wq.enqueue("test_sleep", {"seconds": 30})
    await wq.wait(job.id, statuses=["active"])
    await wq.client.cancel(job.id)
    info = await wq.wait(job.id)
    assert info.status == "cancelled"
