"""A real worker in the test's own event loop, on a given Redis URL and key prefix.

:class:`InProcessWorker` runs :class:`workqueue.worker.runner.Worker` (the same fetch, lease,
settle and housekeeping code as ``workqueue worker``) as a task of the running loop, with a
:class:`~workqueue.Client` on the same prefix, so a test can enqueue and wait for a job's final
state::

    async with InProcessWorker(plugins=[my_plugin], key_prefix="t1") as wq:
        info = await wq.run("my_type", {"x": 1})
        assert info.status == "completed" and info.result == {"ok": True}
"""

from __future__ import annotations

import asyncio
import dataclasses
import os
import time
import uuid
from collections.abc import Iterable, Sequence
from typing import Any

from workqueue.broker.broker import Broker, BrokerConfig
from workqueue.broker.connection import create_redis
from workqueue.client import Client
from workqueue.errors import JobNotFound
from workqueue.job import EnqueuedJob, JobInfo
from workqueue.jobtypes import JobType
from workqueue.plugins import WorkQueuePluginManager, load_plugins
from workqueue.registry import Registry
from workqueue.settings import DEFAULT_REDIS_URL, WorkerSettings

__all__ = ["FINAL_STATUSES", "InProcessWorker", "JobDidNotFinish"]

#: the statuses a job ends in
FINAL_STATUSES = frozenset({"completed", "failed", "cancelled"})
#: how often :meth:`InProcessWorker.wait` reads the job
POLL_SECONDS = 0.02


class JobDidNotFinish(AssertionError):
    """:meth:`InProcessWorker.wait` gave up: the job did not reach the wanted status in time
    (the message holds its last known state)."""


class InProcessWorker:
    """A worker and a client on one Redis URL and key prefix, in the running event loop.

    Which job types it runs: ``job_types`` (plain :class:`JobType` objects, no plugin
    needed), else the plugin objects in ``plugins`` (modules or classes with ``@hookimpl``
    functions: their lifecycle hooks run too, as in a real worker), else the installed
    plugins named in ``only``, else every installed plugin (``WORKQUEUE_PLUGINS`` applies).
    ``settings`` overrides :class:`~workqueue.settings.WorkerSettings` fields; the defaults
    suit tests (a 5 s grace period, a 0.5 s idle wait so retries are picked up promptly).
    With ``cleanup`` (the default) every key under ``key_prefix`` is deleted on :meth:`stop`:
    use a prefix of the test's own.
    """

    def __init__(
        self,
        *,
        redis_url: str | None = None,
        key_prefix: str | None = None,
        job_types: Sequence[JobType] = (),
        plugins: Sequence[object] = (),
        only: Iterable[str] | None = None,
        queues: Sequence[str] = ("default",),
        concurrency: int = 4,
        cleanup: bool = True,
        **settings: Any,
    ) -> None:
        self.redis_url = redis_url or os.environ.get("WORKQUEUE_REDIS_URL", DEFAULT_REDIS_URL)
        self.key_prefix = key_prefix or f"wqtest-{uuid.uuid4().hex[:10]}"
        self.cleanup = cleanup
        self.pm: WorkQueuePluginManager | None = None
        if job_types:
            self.registry = Registry.from_job_types(job_types, plugin="test")
        else:
            self.pm = load_plugins(only=[] if plugins and only is None else only, extra=plugins)
            self.registry = Registry.from_plugin_manager(self.pm)
        base = {
            "grace_seconds": 5.0,
            "idle_wait_seconds": 0.5,
            "heartbeat_seconds": 1.0,
            "worker_id": f"test-worker-{uuid.uuid4().hex[:6]}",
        }
        self.settings = WorkerSettings(
            redis_url=self.redis_url,
            queues=tuple(queues),
            concurrency=concurrency,
            broker=BrokerConfig(prefix=self.key_prefix),
            **{**base, **settings},
        )
        self.client = Client(
            Broker(create_redis(self.redis_url), self.settings.broker), self.registry
        )
        self.worker: Any = None
        self._task: asyncio.Task[None] | None = None

    def replace_settings(self, **changes: Any) -> None:
        """Change worker settings before :meth:`start`."""
        if self._task is not None:
            raise RuntimeError("the worker is running; change its settings before start()")
        self.settings = dataclasses.replace(self.settings, **changes)

    async def start(self) -> InProcessWorker:
        """Start the worker task (its startup hooks run first, in the task)."""
        from workqueue.worker.runner import Worker

        if self._task is not None:
            return self
        await self.client.broker.ping()  # a clear error now if Redis does not answer
        self.worker = Worker(self.settings, self.registry, self.pm)
        self._task = asyncio.create_task(self.worker.run(), name="wq-testing-worker")
        return self

    async def stop(self) -> None:
        """Stop the worker gracefully (running jobs get the grace period), close the client
        and, with ``cleanup``, delete the prefix's keys. Raises what the worker task raised."""
        task, self._task = self._task, None
        try:
            if task is not None:
                self.worker.request_stop()
                await task
        finally:
            try:
                if self.cleanup:
                    await self._delete_keys()
            finally:
                await self.client.aclose()

    async def __aenter__(self) -> InProcessWorker:
        return await self.start()

    async def __aexit__(self, *exc: object) -> None:
        await self.stop()

    # -- jobs --------------------------------------------------------------------------------

    async def enqueue(self, job_type: str, payload: Any = None, **options: Any) -> EnqueuedJob:
        """Enqueue through the client (same validation as the producer); ``options`` are
        :meth:`Client.enqueue`'s (``retries``, ``queue``, ``delay``, ``timeout``...)."""
        return await self.client.enqueue(job_type, payload, **options)

    async def wait(
        self,
        job_id: str,
        *,
        timeout: float = 10.0,
        statuses: Iterable[str] = FINAL_STATUSES,
    ) -> JobInfo:
        """The job once its status is one of ``statuses`` (default: final). Raises
        :class:`JobDidNotFinish` after ``timeout`` seconds, and what the worker task raised if
        it ended (a failing startup hook, Redis gone)."""
        wanted = frozenset(statuses)
        deadline = time.monotonic() + timeout
        info: JobInfo | None = None
        while True:
            self._check_worker()
            try:
                info = await self.client.get_job(job_id)
            except JobNotFound:
                info = None
            if info is not None and info.status in wanted:
                return info
            if time.monotonic() >= deadline:
                state = "no record" if info is None else f"status {info.status!r}"
                raise JobDidNotFinish(
                    f"job {job_id} not {'/'.join(sorted(wanted))} after {timeout:g}s ({state})"
                )
            await asyncio.sleep(POLL_SECONDS)

    async def run(
        self, job_type: str, payload: Any = None, *, wait_timeout: float = 10.0, **options: Any
    ) -> JobInfo:
        """Enqueue one job and wait for its final state."""
        job = await self.enqueue(job_type, payload, **options)
        return await self.wait(job.id, timeout=wait_timeout)

    def _check_worker(self) -> None:
        task = self._task
        if task is None:
            raise RuntimeError("the worker is not running: call start() first")
        if task.done():
            self._task = None
            task.result()  # raises what stopped it
            raise RuntimeError("the worker stopped")

    async def _delete_keys(self) -> None:
        redis = self.client.broker.redis
        batch: list[Any] = []
        async for key in redis.scan_iter(match=f"{self.key_prefix}:*", count=1000):
            batch.append(key)
            if len(batch) >= 500:
                await redis.delete(*batch)
                batch.clear()
        if batch:
            await redis.delete(*batch)
