"""Plugin lifecycle and event hooks, with the worker running in this test's event loop."""

from __future__ import annotations

import asyncio
from typing import Any

from workqueue import JobContext, JobEvent, JobType, WorkerInfo, hookimpl
from workqueue.broker import BrokerConfig
from workqueue.client import Client
from workqueue.plugins import load_plugins, reset_plugins
from workqueue.registry import Registry
from workqueue.settings import WorkerSettings
from workqueue.worker import Worker


class RecordingPlugin:
    """Opens a 'pool' on startup, uses it in its handler, closes it on shutdown."""

    def __init__(self) -> None:
        self.calls: list[str] = []
        self.pool: list[str] | None = None

    async def _open(self) -> None:
        await asyncio.sleep(0)
        self.pool = []
        self.calls.append("startup")

    async def _close(self) -> None:
        self.calls.append("shutdown")
        self.pool = None

    async def handle(self, payload: dict[str, Any], ctx: JobContext) -> int:
        assert self.pool is not None, "handler ran before startup"
        self.pool.append(ctx.job_id)
        self.calls.append(f"job:{ctx.attempt}")
        return len(self.pool)

    @hookimpl
    def workqueue_job_types(self) -> list[JobType]:
        return [JobType(name="hooked", handler=self.handle)]

    @hookimpl
    def workqueue_worker_startup(self, worker: WorkerInfo) -> Any:
        return self._open()

    @hookimpl
    def workqueue_worker_shutdown(self, worker: WorkerInfo) -> Any:
        return self._close()

    @hookimpl
    def workqueue_job_event(self, event: JobEvent) -> None:
        self.calls.append(f"event:{event.kind}")
        if event.kind == "succeeded":
            raise RuntimeError("an observer error must not stop the worker")


async def test_lifecycle_hooks_wrap_the_jobs(key_prefix: str, redis_url: str) -> None:
    reset_plugins()
    plugin = RecordingPlugin()
    try:
        pm = load_plugins(only=[], extra=[plugin])
        registry = Registry.from_plugin_manager(pm)
        settings = WorkerSettings(
            redis_url=redis_url,
            broker=BrokerConfig(prefix=key_prefix),
            idle_wait_seconds=0.5,
        )
        worker = Worker(settings, registry, pm)
        run = asyncio.create_task(worker.run())
        client = Client(worker.broker, registry)
        job = await client.enqueue("hooked", {})
        for _ in range(200):
            info = await client.get_job(job.id)
            if info.status == "completed":
                break
            await asyncio.sleep(0.02)
        second = await client.enqueue("hooked", {})
        for _ in range(200):
            if (await client.get_job(second.id)).status == "completed":
                break
            await asyncio.sleep(0.02)
        worker.request_stop()
        await asyncio.wait_for(run, 10)
        assert info.status == "completed" and info.result == 1
        assert plugin.calls[0] == "startup" and plugin.calls[-1] == "shutdown"
        assert plugin.calls.count("event:started") == 2
        assert plugin.calls.count("event:succeeded") == 2
        assert plugin.pool is None
    finally:
        reset_plugins()
