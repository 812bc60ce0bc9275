"""Request and response shapes of the producer (msgspec Structs, documented in OpenAPI)."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from typing import Any

import msgspec
from litestar.openapi.spec import OpenAPIMediaType, OpenAPIType, Operation, RequestBody, Schema

__all__ = [
    "BatchOperation",
    "EnqueueAnswer",
    "EnqueueOperation",
    "ErrorAnswer",
    "HealthAnswer",
    "JobAnswer",
]


class EnqueueAnswer(msgspec.Struct):
    """The answer to an enqueue (``202``, or ``200`` for an idempotent repeat)."""

    id: str
    type: str
    queue: str
    status: str
    retries: int
    enqueued_at: str


class JobAnswer(msgspec.Struct):
    """What ``GET /jobs/{id}`` shows."""

    id: str
    type: str
    queue: str
    status: str
    attempts: int
    retries: int
    enqueued_at: datetime | None
    started_at: datetime | None
    finished_at: datetime | None
    result: Any
    error: str | None


class ErrorAnswer(msgspec.Struct, omit_defaults=True):
    """Every 4xx/5xx answer: a short error code, the field at fault (or null), the problem."""

    error: str
    field: str | None
    problem: str
    known: list[str] | None = msgspec.field(default=None)


class HealthAnswer(msgspec.Struct):
    status: str


def _task_schema() -> Schema:
    """The OpenAPI schema of one posted task (the routes parse bodies themselves)."""
    integer, number, string = OpenAPIType.INTEGER, OpenAPIType.NUMBER, OpenAPIType.STRING
    return Schema(
        type=OpenAPIType.OBJECT,
        required=["type"],
        properties={
            "type": Schema(type=string, pattern=r"^[A-Za-z0-9_.:-]{1,128}$"),
            "payload": Schema(type=OpenAPIType.OBJECT, description="validated by the job type"),
            "retries": Schema(type=integer, minimum=0, description="default: the job type's"),
            "Retries": Schema(type=integer, minimum=0, description="same as retries"),
            "queue": Schema(type=string, default="default"),
            "delay": Schema(type=number, minimum=0, description="seconds from now"),
            "run_at": Schema(type=string, description="RFC 3339 time"),
            "timeout": Schema(type=number, description="seconds per attempt"),
        },
        additional_properties=False,
    )


@dataclass
class EnqueueOperation(Operation):
    """``POST /enqueue``: documents the task object the route parses itself."""

    def __post_init__(self) -> None:
        self.request_body = RequestBody(
            content={"application/json": OpenAPIMediaType(schema=_task_schema())}, required=True
        )


@dataclass
class BatchOperation(Operation):
    """``POST /enqueue/batch``: documents the array of tasks the route parses itself."""

    def __post_init__(self) -> None:
        schema = Schema(type=OpenAPIType.ARRAY, items=_task_schema())
        self.request_body = RequestBody(
            content={"application/json": OpenAPIMediaType(schema=schema)}, required=True
        )
