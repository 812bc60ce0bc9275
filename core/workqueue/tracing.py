"""OpenTelemetry spans for enqueues and attempts (the optional extra ``workqueue-core[otel]``).

With ``opentelemetry-api`` installed, WorkQueue makes these spans through the global tracer
provider (configure it as usual: ``opentelemetry-instrument`` reads the standard ``OTEL_*``
variables, or the application sets up the SDK itself):

- ``POST /enqueue`` and ``POST /enqueue/batch`` on the producer: a ``SERVER`` span per
  request, child of the caller's W3C ``traceparent`` header when it sends one.
- every write of :class:`~workqueue.Client` (the producer's included): a ``PRODUCER`` span
  ``send <queue>``; each job written under it is stamped with that span's W3C
  ``traceparent`` (``NewJob.traceparent``), which travels in the job record.
- every attempt a worker runs: a ``CONSUMER`` span ``process <queue>`` around the handler,
  child of the job's ``traceparent``, so enqueue and attempts are one trace; an exception
  (a timeout, a lost lease: cancelled) marks it as an error.

Without the package nothing here costs anything: the import is tried once, :data:`ENABLED` is
False, the decorators return the functions they are given unchanged, :func:`http_middleware`
is empty and callers test :data:`ENABLED` before entering :func:`attempt_span`.
"""

from __future__ import annotations

import contextlib
import contextvars
import functools
from collections.abc import Awaitable, Callable, Iterator, Sequence
from typing import TYPE_CHECKING, Any, Final, TypeVar

import msgspec

if TYPE_CHECKING:
    from litestar.types import ASGIApp, Message, Receive, Scope, Send

    from workqueue.job import NewJob, ReservedJob

try:
    from opentelemetry import context as otel_context
    from opentelemetry import trace
    from opentelemetry.trace.propagation.tracecontext import TraceContextTextMapPropagator

    _IMPORTED = True
except ImportError:  # the extra is not installed: every hook below is a no-op
    _IMPORTED = False

#: whether ``opentelemetry-api`` is installed (decided once, at import)
ENABLED: Final[bool] = _IMPORTED

__all__ = [
    "ENABLED",
    "attempt_span",
    "http_middleware",
    "traced_write_many",
    "traced_write_one",
    "traceparent_of",
]

INSTRUMENTATION = "workqueue"
#: the producer routes that get a SERVER span
ENQUEUE_PATHS = frozenset({"/enqueue", "/api/enqueue", "/enqueue/batch", "/api/enqueue/batch"})
SYSTEM = "workqueue"

T = TypeVar("T")
R = TypeVar("R")

#: set while a PRODUCER span of ours is open: a write inside it opens no second one
_in_send: contextvars.ContextVar[bool] = contextvars.ContextVar("wq_in_send", default=False)
_NO_SPAN = contextlib.nullcontext()


def _tracer() -> Any:
    # the global provider may be set after import: ask each time (it caches its tracers)
    return trace.get_tracer(INSTRUMENTATION)


def _propagator() -> Any:
    return TraceContextTextMapPropagator()


def traceparent_of(job: Any) -> str:
    """The W3C ``traceparent`` a job carries ("" when none, or on a core that stores none)."""
    value = getattr(job, "traceparent", "")
    return value if isinstance(value, str) else ""


def _current_traceparent() -> str:
    carrier: dict[str, str] = {}
    _propagator().inject(carrier)
    return carrier.get("traceparent", "")


def _stamp(job: NewJob, traceparent: str) -> NewJob:
    if not traceparent or "traceparent" not in job.__struct_fields__:
        return job
    return msgspec.structs.replace(job, traceparent=traceparent)


@contextlib.contextmanager
def _send_span(jobs: Sequence[NewJob]) -> Iterator[str]:
    """A PRODUCER span over one write; yields the traceparent to stamp on its jobs."""
    queues = sorted({job.queue for job in jobs})
    types = sorted({job.type for job in jobs})
    attributes: dict[str, Any] = {
        "messaging.system": SYSTEM,
        "messaging.operation.type": "send",
        "messaging.operation.name": "send",
        "messaging.destination.name": ",".join(queues),
        "workqueue.job.type": ",".join(types),
    }
    if len(jobs) == 1:
        attributes["messaging.message.id"] = jobs[0].id
    else:
        attributes["messaging.batch.message_count"] = len(jobs)
    name = f"send {queues[0] if len(queues) == 1 else 'many'}"
    token = _in_send.set(True)
    try:
        with _tracer().start_as_current_span(
            name, kind=trace.SpanKind.PRODUCER, attributes=attributes
        ):
            yield _current_traceparent()
    finally:
        _in_send.reset(token)


def traced_write_one(
    write: Callable[[Any, NewJob], Awaitable[R]],
) -> Callable[[Any, NewJob], Awaitable[R]]:
    """Decorate the client's one-job write (``Client._write``): a PRODUCER span, the job
    stamped with its traceparent. Returns ``write`` itself without the extra."""
    if not ENABLED:
        return write

    @functools.wraps(write)
    async def traced(self: Any, job: NewJob) -> R:
        if _in_send.get():
            return await write(self, job)
        with _send_span([job]) as traceparent:
            return await write(self, _stamp(job, traceparent))

    return traced


def traced_write_many(
    write: Callable[[Any, list[NewJob]], Awaitable[R]],
) -> Callable[[Any, list[NewJob]], Awaitable[R]]:
    """Decorate the client's many-job write (``Client._write_all``) the same way: one span
    for the whole write, every job stamped with it."""
    if not ENABLED:
        return write

    @functools.wraps(write)
    async def traced(self: Any, jobs: list[NewJob]) -> R:
        if _in_send.get() or not jobs:
            return await write(self, jobs)
        with _send_span(jobs) as traceparent:
            return await write(self, [_stamp(job, traceparent) for job in jobs])

    return traced


@contextlib.contextmanager
def attempt_span(job: ReservedJob, worker_id: str = "") -> Iterator[Any]:
    """A CONSUMER span ``process <queue>`` around one attempt's handler, child of the job's
    traceparent (a root span when the job carries none). An exception leaving the block, a
    cancellation included, marks the span as an error and goes on."""
    if not ENABLED:
        yield None
        return
    parent = None
    traceparent = traceparent_of(job)
    if traceparent:
        parent = _propagator().extract({"traceparent": traceparent})
    attributes = {
        "messaging.system": SYSTEM,
        "messaging.operation.type": "process",
        "messaging.operation.name": "process",
        "messaging.destination.name": job.queue,
        "messaging.message.id": job.id,
        "workqueue.job.type": job.type,
        "workqueue.job.attempt": job.attempt,
        "workqueue.worker.id": worker_id,
    }
    with _tracer().start_as_current_span(
        f"process {job.queue}",
        context=parent,
        kind=trace.SpanKind.CONSUMER,
        attributes=attributes,
        record_exception=False,
        set_status_on_exception=False,
    ) as span:
        try:
            yield span
        except BaseException as exc:
            # the type only: an exception's message may quote payload values
            span.set_attribute("error.type", type(exc).__qualname__)
            span.set_status(trace.Status(trace.StatusCode.ERROR, type(exc).__qualname__))
            raise


def no_span() -> contextlib.nullcontext[None]:
    """The context manager callers use when :data:`ENABLED` is False (shared, reusable)."""
    return _NO_SPAN


# -- the producer's HTTP spans -----------------------------------------------------------------


def http_middleware() -> list[type[_EnqueueSpans]]:
    """The producer's middleware list: a SERVER span for each enqueue request (empty without
    the extra)."""
    return [_EnqueueSpans] if ENABLED else []


class _EnqueueSpans:
    """ASGI middleware: ``POST`` to an enqueue route runs inside a SERVER span whose parent is
    the request's ``traceparent`` header (when it has one)."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(
        self,
        scope: Scope,
        receive: Receive,
        send: Send,
    ) -> None:
        path = scope["path"]
        if scope.get("method") != "POST" or path not in ENQUEUE_PATHS:  # websockets have none
            await self.app(scope, receive, send)
            return
        carrier: dict[str, str] = {}
        for name, value in scope.get("headers", ()):
            if name in (b"traceparent", b"tracestate"):
                carrier[name.decode()] = value.decode("latin-1")
        parent = _propagator().extract(carrier) if carrier else otel_context.Context()
        attributes = {
            "http.request.method": "POST",
            "url.path": path,
            "http.route": path,
        }
        with _tracer().start_as_current_span(
            f"POST {path}", context=parent, kind=trace.SpanKind.SERVER, attributes=attributes
        ) as span:

            async def send_and_note(message: Message) -> None:
                if message["type"] == "http.response.start":
                    status = int(message["status"])
                    span.set_attribute("http.response.status_code", status)
                    if status >= 500:
                        span.set_status(trace.Status(trace.StatusCode.ERROR))
                await send(message)

            await self.app(scope, receive, send_and_note)
