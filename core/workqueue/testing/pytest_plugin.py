"""The pytest plugin of ``workqueue-core`` (entry point ``pytest11``: ``workqueue``).

Fixtures:

- ``workqueue_worker``: a factory; ``await workqueue_worker(plugins=[my_plugin])`` starts an
  :class:`~workqueue.testing.InProcessWorker` on ``workqueue_redis_url`` under
  ``workqueue_key_prefix`` and returns it; every worker started is stopped after the test and
  the prefix's keys deleted. Needs pytest-asyncio (an ``async def`` test).
- ``workqueue_redis_url``: ``$WORKQUEUE_REDIS_URL``, else ``redis://127.0.0.1:6379/0``.
  Override the fixture to point the tests elsewhere.
- ``workqueue_key_prefix``: a fresh ``wqtest-<random>`` prefix per test.

Loaded automatically once ``workqueue-core`` is installed; with
``PYTEST_DISABLE_PLUGIN_AUTOLOAD`` set, load it with ``-p workqueue.testing.pytest_plugin``.
Importing it costs nothing beyond pytest: the worker is imported when the fixture is used.
"""

from __future__ import annotations

import importlib.util
import os
import uuid
from collections.abc import AsyncIterator, Iterable, Sequence
from typing import TYPE_CHECKING, Any, Protocol

import pytest

if TYPE_CHECKING:
    from workqueue.jobtypes import JobType
    from workqueue.testing.worker import InProcessWorker

__all__ = ["WorkerFactory", "workqueue_key_prefix", "workqueue_redis_url", "workqueue_worker"]


class WorkerFactory(Protocol):
    """The ``workqueue_worker`` fixture: starts a worker, returns it running."""

    async def __call__(
        self,
        *,
        job_types: Sequence[JobType] = (),
        plugins: Sequence[object] = (),
        only: Iterable[str] | None = None,
        queues: Sequence[str] = ("default",),
        concurrency: int = 4,
        **settings: Any,
    ) -> InProcessWorker:
        """Start an in-process worker (see :class:`~workqueue.testing.InProcessWorker`)."""
        ...


@pytest.fixture
def workqueue_redis_url() -> str:
    """The Redis the test workers use."""
    return os.environ.get("WORKQUEUE_REDIS_URL", "redis://127.0.0.1:6379/0")


@pytest.fixture
def workqueue_key_prefix() -> str:
    """A key prefix of this test's own (its keys are deleted afterwards)."""
    return f"wqtest-{uuid.uuid4().hex[:10]}"


async def _workers(redis_url: str, key_prefix: str) -> AsyncIterator[WorkerFactory]:
    from workqueue.testing.worker import InProcessWorker

    started: list[InProcessWorker] = []

    async def start(**options: Any) -> InProcessWorker:
        worker = InProcessWorker(redis_url=redis_url, key_prefix=key_prefix, **options)
        started.append(worker)
        return await worker.start()

    yield start
    errors: list[BaseException] = []
    for worker in reversed(started):
        try:
            await worker.stop()
        except Exception as exc:
            errors.append(exc)
    if errors:
        raise errors[0]


if importlib.util.find_spec("pytest_asyncio") is not None:
    import pytest_asyncio

    @pytest_asyncio.fixture
    async def workqueue_worker(
        workqueue_redis_url: str, workqueue_key_prefix: str
    ) -> AsyncIterator[WorkerFactory]:
        """Start in-process workers; all are stopped and their keys deleted after the test."""
        async for factory in _workers(workqueue_redis_url, workqueue_key_prefix):
            yield factory

else:  # pragma: no cover

    @pytest.fixture(name="workqueue_worker")
    def _needs_pytest_asyncio() -> None:
        """Explains that pytest-asyncio is needed."""
        pytest.fail("the workqueue_worker fixture needs pytest-asyncio: pip install pytest-asyncio")
