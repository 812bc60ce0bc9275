"""The worker process: a thin :class:`Worker` assembling the parts.

```
            ┌──────────── Fetcher ─────────────┐ reserve per queue (own request id each),
 broker ◄───┤  start(job) ──► Executor ──────┐  │ wait_for_work when idle
            │               runs[(id, token)]│  │
            │   LeaseKeeper ◄── held runs ───┤  │ renew every lease/4; lost or cancel -> stop it
            │   Settler ◄──── outcomes ──────┘  │ batched finish -> Applied verdicts -> log
            │   Housekeeper (one loop/queue)    │ housekeep(queue) on its own schedule
            └── Heartbeat (WorkerAdvert) ───────┘
```

See docs/worker.md for the model (run key, cancellation, hung threads and
recycling, process isolation, the housekeeping schedule).
"""

from __future__ import annotations

import asyncio
import gc
from typing import TYPE_CHECKING

from loguru import logger

from workqueue.broker.broker import Broker
from workqueue.broker.connection import create_redis
from workqueue.errors import ConfigurationError, PluginError
from workqueue.hookspecs import WorkerInfo
from workqueue.job import ReservedJob
from workqueue.log import sanitize
from workqueue.plugins import WorkQueuePluginManager, plugin_label
from workqueue.registry import Registry
from workqueue.settings import WorkerSettings
from workqueue.worker.advert import Heartbeat
from workqueue.worker.events import JobLog, Observers
from workqueue.worker.executing import Executor
from workqueue.worker.fetching import Fetcher
from workqueue.worker.housekeeping import Housekeeper
from workqueue.worker.leases import LeaseKeeper
from workqueue.worker.limiting import Limiter
from workqueue.worker.metrics import RunTimeHistogram, collect, render_prometheus, wants_prometheus
from workqueue.worker.progress import ProgressSender
from workqueue.worker.runs import Run
from workqueue.worker.scheduler import start_scheduler
from workqueue.worker.settling import Settler
from workqueue.worker.stats import WorkerStats

if TYPE_CHECKING:
    from workqueue.broker.contract import BrokerAPI

__all__ = ["Worker", "WorkerStats"]


class Worker:
    """Runs jobs from the given queues until :meth:`request_stop` (or until too many handler
    threads hang: then :attr:`recycle` is True and the caller restarts the process)."""

    def __init__(
        self,
        settings: WorkerSettings,
        registry: Registry,
        plugin_manager: WorkQueuePluginManager | None = None,
    ) -> None:
        self.settings = settings
        self.registry = registry
        self.pm = plugin_manager
        self.stats = WorkerStats()
        self.histogram = RunTimeHistogram()
        #: the job store (replaceable before :meth:`run`, e.g. by a test's wrapper)
        self.broker: Broker = Broker(create_redis(settings.redis_url), settings.broker)
        self.info = WorkerInfo(settings.worker_id, settings.queues, settings.concurrency)
        #: True when the worker stopped to be recycled (hung handler threads)
        self.recycle = False
        self.executor: Executor | None = None
        self.limiter: Limiter | None = None
        self._stop = asyncio.Event()
        self._metrics_server: asyncio.Server | None = None

    # -- lifecycle -------------------------------------------------------------------------

    def request_stop(self) -> None:
        """Stop taking jobs; running ones get the grace period (call it in the loop)."""
        self._stop.set()

    def running_jobs(self) -> list[ReservedJob]:
        """The jobs this process is running now."""
        return [run.job for run in self.executor.running()] if self.executor else []

    @property
    def hung_threads(self) -> int:
        """Handler threads still running after their attempt ended."""
        return self.executor.hung if self.executor else 0

    def _on_hung(self, hung: int) -> None:
        threshold = self.settings.hung_threshold
        if hung >= threshold and not self._stop.is_set():
            logger.warning(
                "{} handler thread(s) still running past their attempt (limit {}): "
                "stopping fetching and recycling this process",
                hung,
                threshold,
            )
            self.recycle = True
            self._stop.set()

    async def run(self) -> None:
        """Run until stopped, then drain, release and close."""
        settings = self.settings
        await self._call_lifecycle("workqueue_worker_startup", strict=True)
        logger.info(
            "worker started: queues={} concurrency={} lease={}s types={}",
            ",".join(settings.queues),
            settings.concurrency,
            settings.lease_seconds,
            ",".join(self.registry.names()) or "-",
        )
        await self._serve_metrics()
        broker: BrokerAPI = self.broker
        log = JobLog()
        observers = Observers(self.pm, settings.worker_id, log)
        progress = ProgressSender(broker, lambda: self.executor.running() if self.executor else [])
        settler = Settler(
            broker,
            self.stats,
            self.histogram,
            log,
            observers,
            lease_seconds=settings.lease_seconds,
            progress=progress,
        )
        # limits (worker/limiting.py): jobs of limited types take a limit step before they start
        limiter = Limiter(self.broker, self.registry, lease_seconds=settings.lease_seconds)
        executor = self.executor = Executor(
            settings, self.registry, log, observers, limiter.settle(settler.add), self._on_hung
        )
        limiter.bind(executor.start, executor.slot_free)
        self.limiter = limiter
        fetcher = Fetcher(broker, settings, log, self.stats, limiter.start)

        def held() -> list[Run]:
            return [*executor.running(), *settler.held()]

        keeper = LeaseKeeper(broker, settings.lease_seconds, held, executor.stop_run, self.stats)
        heartbeat = Heartbeat(
            broker,
            worker_id=settings.worker_id,
            queues=settings.queues,
            types=self.registry.names(),
            concurrency=settings.concurrency,
            started_at=self.stats.started_at,
            period=settings.heartbeat_seconds,
        )
        settling = asyncio.create_task(settler.loop(), name="wq-settler")
        helpers = [
            settling,
            asyncio.create_task(keeper.loop(), name="wq-leases"),
            asyncio.create_task(progress.loop(), name="wq-progress"),
            asyncio.create_task(heartbeat.loop(), name="wq-heartbeat"),
            asyncio.create_task(limiter.loop(held), name="wq-limiter"),
        ]
        if settings.housekeep_seconds > 0:
            housekeeper = Housekeeper(
                broker,
                settings.queues,
                settings.worker_id,
                housekeep_seconds=settings.housekeep_seconds,
                lease_seconds=settings.lease_seconds,
                stats=self.stats,
            )
            helpers.append(asyncio.create_task(housekeeper.loop(), name="wq-housekeeper"))
        # H7 cron: every worker may run the schedules (WORKQUEUE_SCHEDULER=0 opts out)
        helpers += start_scheduler(self.broker, self.registry, self.pm, settings.worker_id)
        # Everything built so far (modules, plugins, clients) lives as long as the process:
        # keep it out of the collector's full passes, which otherwise walk it again and
        # again under load (a measurable cost per job on a drain).
        gc.freeze()
        try:
            await limiter.prepare()
            await fetcher.loop(
                self._stop, lambda: executor.free - limiter.pending, executor.slot_free
            )
            await limiter.close(settings.lease_seconds / 3)
            await self._drain(executor)
            await limiter.close(settings.lease_seconds / 3)  # slots of the drained runs
        finally:
            # Outcomes first: the settler applies what is waiting, then returns by itself.
            settler.close()
            await asyncio.wait([settling], timeout=settings.lease_seconds + 5)
            for task in helpers:
                task.cancel()
            # redis-py may swallow a cancellation mid-command; never wait on it forever.
            await asyncio.wait(helpers, timeout=2)
            executor.close()
            log.write()
            if self._metrics_server is not None:
                self._metrics_server.close()
            await heartbeat.unregister()
            await self._call_lifecycle("workqueue_worker_shutdown", strict=False)
            await self.broker.aclose()
            logger.info(
                "worker stopped: succeeded={} failed={} retried={} released={} cancelled={}{}",
                self.stats.succeeded,
                self.stats.failed,
                self.stats.retried,
                self.stats.released,
                self.stats.cancelled,
                f" hung_threads={executor.hung} (recycling)" if self.recycle else "",
            )

    async def _drain(self, executor: Executor) -> None:
        """Let running jobs finish within the grace period, then release the rest at once."""
        runs = executor.running()
        if not runs:
            return
        logger.info(
            "stopping: waiting up to {:g}s for {} running job(s)",
            self.settings.grace_seconds,
            len(runs),
        )
        tasks = {run.task: run for run in runs if run.task is not None}
        _done, pending = await asyncio.wait(tasks, timeout=self.settings.grace_seconds)
        for task in pending:
            tasks[task].stop("release")
        if pending:
            await asyncio.gather(*pending, return_exceptions=True)

    async def _call_lifecycle(self, hook_name: str, *, strict: bool) -> None:
        if self.pm is None:
            return
        for impl in getattr(self.pm.hook, hook_name).get_hookimpls():
            label = plugin_label(self.pm, impl.plugin)
            try:
                result = impl.function(worker=self.info)
                if result is not None:
                    await result
            except Exception as exc:
                if strict:
                    raise PluginError(f"plugin {label!r} failed in {hook_name}: {exc}") from exc
                logger.error("plugin {} failed in {}: {}", label, hook_name, sanitize(exc))

    # -- metrics ---------------------------------------------------------------------------

    async def _serve_metrics(self) -> None:
        settings = self.settings
        if settings.metrics_port is None:
            return
        from workqueue.worker.http import serve

        try:
            self._metrics_server = await serve(
                settings.metrics_host, settings.metrics_port, self._metrics_route
            )
        except OSError as exc:
            raise ConfigurationError(
                f"metrics server cannot listen on {settings.metrics_host}:"
                f"{settings.metrics_port}: {exc.strerror or exc}"
            ) from None
        logger.info("metrics on http://{}:{}/metrics", settings.metrics_host, settings.metrics_port)

    async def _metrics_route(self, path: str, headers: dict[str, str]) -> tuple[int, str, bytes]:
        from workqueue.worker.http import json_response

        if path not in ("/metrics", "/api/metrics"):
            return json_response(404, {"error": "not found", "routes": ["/metrics"]})
        figures = await collect(self)
        if wants_prometheus(headers.get("accept", "")):
            body = render_prometheus(figures, self.histogram).encode()
            return 200, "text/plain; version=0.0.4; charset=utf-8", body
        return json_response(200, figures)
