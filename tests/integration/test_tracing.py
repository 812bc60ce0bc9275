"""OpenTelemetry (workqueue.tracing): enqueue spans from the Client and the producer's HTTP
routes, attempt spans in a worker, the W3C traceparent a job carries, and no cost without the
extra. Spans are read from the SDK's InMemorySpanExporter."""

from __future__ import annotations

import subprocess
import sys
from collections.abc import AsyncIterator, Iterator
from typing import Any

import pytest

pytest.importorskip(
    "opentelemetry.sdk", reason="not run here: opentelemetry-sdk is not installed (test extra)"
)

from litestar.testing import AsyncTestClient
from opentelemetry import trace
from opentelemetry.sdk.trace import ReadableSpan, TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from opentelemetry.trace import SpanKind, StatusCode
from wq_testkit import REDIS_URL, TEST_PLUGIN

from workqueue import JobContext, JobType
from workqueue.broker import BrokerConfig
from workqueue.client import Client
from workqueue.job import NewJob, ReservedJob
from workqueue.producer import ProducerSettings, create_app
from workqueue.registry import build_registry
from workqueue.testing import InProcessWorker
from workqueue.tracing import attempt_span

_EXPORTER = InMemorySpanExporter()


def _install_exporter() -> None:
    """One global provider per process (OpenTelemetry allows setting it once)."""
    provider = trace.get_tracer_provider()
    if not isinstance(provider, TracerProvider):
        provider = TracerProvider()
        trace.set_tracer_provider(provider)
    if not getattr(provider, "_wq_test_exporter", False):
        provider.add_span_processor(SimpleSpanProcessor(_EXPORTER))
        provider._wq_test_exporter = True  # type: ignore[attr-defined]


@pytest.fixture
def spans() -> Iterator[InMemorySpanExporter]:
    _install_exporter()
    _EXPORTER.clear()
    yield _EXPORTER
    _EXPORTER.clear()


def traceparent(span: ReadableSpan) -> str:
    ctx = span.get_span_context()
    assert ctx is not None
    return f"00-{ctx.trace_id:032x}-{ctx.span_id:016x}-{int(ctx.trace_flags):02x}"


def only(found: list[ReadableSpan], kind: SpanKind) -> list[ReadableSpan]:
    return [s for s in found if s.kind == kind]


class Spy:
    """Records the jobs the client hands to the broker (the real write still happens)."""

    def __init__(self, client: Client) -> None:
        self.jobs: list[NewJob] = []
        real = client.broker.enqueue

        async def enqueue(jobs: list[NewJob]) -> Any:
            self.jobs += jobs
            return await real(jobs)

        client.broker.enqueue = enqueue  # type: ignore[method-assign]


async def test_client_enqueue_is_a_producer_span_whose_context_the_job_carries(
    client: Client, spans: InMemorySpanExporter
) -> None:
    spy = Spy(client)
    tracer = trace.get_tracer("app")
    with tracer.start_as_current_span("checkout") as app_span:
        job = await client.enqueue("test_echo", {"secret": "not in any span"}, queue="mail")
        batch = await client.enqueue_many([("test_echo", {}), ("test_sync_add", {"a": 1, "b": 2})])

    found = spans.get_finished_spans()
    one, many = only(found, SpanKind.PRODUCER)
    app_ctx = app_span.get_span_context()
    assert one.name == "send mail" and many.name == "send default"
    for span in (one, many):
        assert span.parent is not None and span.parent.span_id == app_ctx.span_id
        assert span.context is not None and span.context.trace_id == app_ctx.trace_id
        assert span.attributes is not None and span.attributes["messaging.system"] == "workqueue"
    assert one.attributes is not None and many.attributes is not None
    assert one.attributes["messaging.message.id"] == job.id
    assert one.attributes["messaging.destination.name"] == "mail"
    assert many.attributes["messaging.batch.message_count"] == 2
    assert many.attributes["workqueue.job.type"] == "test_echo,test_sync_add"
    # each job written under a span carries that span's W3C traceparent
    assert [j.traceparent for j in spy.jobs] == [traceparent(one), *[traceparent(many)] * 2]
    assert [j.id for j in spy.jobs[1:]] == [j.id for j in batch]
    assert not any("not in any span" in str(s.attributes) for s in found)


@pytest.fixture
async def producer(installed_test_plugin: None, key_prefix: str) -> AsyncIterator[Any]:
    settings = ProducerSettings(redis_url=REDIS_URL, broker=BrokerConfig(prefix=key_prefix))
    async with AsyncTestClient(create_app(settings, build_registry(only=[TEST_PLUGIN]))) as c:
        yield c


async def test_http_enqueue_continues_the_callers_trace(
    producer: Any, spans: InMemorySpanExporter
) -> None:
    caller = "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01"
    answer = await producer.post(
        "/enqueue", json={"type": "test_echo"}, headers={"traceparent": caller}
    )
    assert answer.status_code == 202
    batch = await producer.post("/api/enqueue/batch", json=[{"type": "test_echo"}] * 3)
    assert batch.status_code == 202
    await producer.get("/metrics")  # not an enqueue: no span

    found = spans.get_finished_spans()
    first, second = only(found, SpanKind.SERVER)
    assert first.name == "POST /enqueue" and second.name == "POST /api/enqueue/batch"
    assert first.context is not None and first.parent is not None
    assert f"{first.context.trace_id:032x}" == "0af7651916cd43dd8448eb211c80319c"
    assert f"{first.parent.span_id:016x}" == "b7ad6b7169203331"
    assert first.attributes is not None
    assert first.attributes["http.response.status_code"] == 202
    assert second.parent is None  # no traceparent header: a new trace
    sends = only(found, SpanKind.PRODUCER)
    assert len(sends) == 2
    for server, send in zip((first, second), sends, strict=True):
        assert send.parent is not None and server.context is not None
        assert send.parent.span_id == server.context.span_id


def _reserved(traceparent: str) -> ReservedJob:
    return ReservedJob(
        "j1", "default", "1", "t", b"{}", 1, 0, 10.0, 0, 0, 0, traceparent=traceparent
    )


def test_an_attempt_span_is_a_child_of_the_jobs_traceparent(spans: InMemorySpanExporter) -> None:
    carried = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01"
    with attempt_span(_reserved(carried), "w-1"):
        pass
    with pytest.raises(ValueError, match="boom"), attempt_span(_reserved(""), "w-1"):
        raise ValueError("boom")
    ok, failed = spans.get_finished_spans()
    assert ok.kind == SpanKind.CONSUMER and ok.name == "process default"
    assert ok.context is not None and ok.parent is not None
    assert f"{ok.context.trace_id:032x}" == "4bf92f3577b34da6a3ce929d0e0e4736"
    assert f"{ok.parent.span_id:016x}" == "00f067aa0ba902b7"
    assert failed.parent is None and failed.status.status_code == StatusCode.ERROR
    assert failed.attributes is not None and failed.attributes["error.type"] == "ValueError"
    assert "boom" not in str(failed.status.description)  # an error's text may quote payloads


async def traced_handler(payload: dict[str, Any], ctx: JobContext) -> str:
    with trace.get_tracer("plugin").start_as_current_span("inside the handler"):
        if payload.get("fail"):
            raise RuntimeError("handler failed")
    return "ok"


async def test_each_attempt_in_a_worker_is_a_consumer_span(spans: InMemorySpanExporter) -> None:
    kind = JobType(name="traced", handler=traced_handler, retries=0)
    async with InProcessWorker(redis_url=REDIS_URL, job_types=[kind], worker_id="w-t") as wq:
        done = await wq.run("traced", {})
        failed = await wq.run("traced", {"fail": True})
    assert done.status == "completed" and failed.status == "failed"

    found = spans.get_finished_spans()
    attempts = only(found, SpanKind.CONSUMER)
    assert len(attempts) == 2
    by_id = {s.attributes["messaging.message.id"]: s for s in attempts if s.attributes}
    ok, bad = by_id[done.id], by_id[failed.id]
    assert ok.attributes is not None and ok.attributes["workqueue.worker.id"] == "w-t"
    assert ok.attributes["workqueue.job.attempt"] == 1
    assert ok.status.status_code != StatusCode.ERROR
    assert bad.status.status_code == StatusCode.ERROR
    inner = [s for s in found if s.name == "inside the handler"]
    assert {s.parent.span_id for s in inner if s.parent} == {
        s.context.span_id for s in (ok, bad) if s.context
    }


async def test_enqueue_and_attempts_are_one_trace(spans: InMemorySpanExporter) -> None:
    kind = JobType(name="traced", handler=traced_handler, retries=0)
    async with InProcessWorker(redis_url=REDIS_URL, job_types=[kind]) as wq:
        with trace.get_tracer("app").start_as_current_span("request") as request:
            job = await wq.enqueue("traced", {})
        await wq.wait(job.id)
    (attempt,) = only(spans.get_finished_spans(), SpanKind.CONSUMER)
    assert attempt.context is not None
    assert attempt.context.trace_id == request.get_span_context().trace_id


def test_without_the_extra_nothing_is_wrapped_or_imported() -> None:
    probe = """
import sys
sys.modules["opentelemetry"] = None  # as if the extra were not installed
import workqueue.tracing as tracing
from workqueue.client import Client
from workqueue.worker import executing
assert tracing.ENABLED is False and executing.TRACING is False
assert not hasattr(Client._write, "__wrapped__") and not hasattr(Client._write_all, "__wrapped__")
assert tracing.http_middleware() == []
from workqueue.producer import ProducerSettings, create_app
app = create_app(ProducerSettings())
assert not any(name.startswith("opentelemetry") for name in sys.modules if sys.modules[name])
print("ok")
"""
    done = subprocess.run(
        [sys.executable, "-c", probe], capture_output=True, text=True, timeout=60, check=False
    )
    assert done.returncode == 0 and done.stdout.strip() == "ok", done.stderr
