"""Request and response shapes of the producer (msgspec Structs, documented in OpenAPI)."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import msgspec
from litestar.openapi.spec import (
    Components,
    OpenAPIHeader,
    OpenAPIMediaType,
    OpenAPIResponse,
    OpenAPIType,
    Operation,
    RequestBody,
    Schema,
)

from workqueue.client import Limits
from workqueue.errors import WorkQueueError
from workqueue.flow import PRIORITY_MAX
from workqueue.registry import Registry
from workqueue.schema import schema_json

__all__ = [
    "JSON_VALUE",
    "JSON_VALUE_SCHEMA",
    "NAME_REGEX",
    "AttemptAnswer",
    "EnqueueAnswer",
    "ErrorAnswer",
    "HealthAnswer",
    "JobAnswer",
    "ProducerComponents",
    "QueueAnswer",
    "QueueDepth",
    "RawSchema",
    "batch_schema",
    "operation_class",
    "task_schema",
]

#: a job type or queue name, as JSON Schema (ECMA 262) states it; the producer checks the same
NAME_REGEX = r"^[A-Za-z0-9_.:-]{1,128}$"
_INT_MIN = -(2**63)
_INT_MAX = 2**64 - 1


class EnqueueAnswer(msgspec.Struct):
    """The answer to an enqueue (``202``, or ``200`` for an idempotent repeat)."""

    id: str
    type: str
    queue: str
    status: str
    retries: int
    enqueued_at: str


class AttemptAnswer(msgspec.Struct):
    """One attempt of a job (``history``): outcome is running, succeeded, failed, timed_out,
    lost, released or cancelled; times as the job's."""

    attempt: int
    worker: str
    started_at: str | None
    finished_at: str | None
    outcome: str
    error: str | None


class JobAnswer(msgspec.Struct):
    """What ``GET /jobs/{id}`` shows."""

    id: str
    type: str
    queue: str
    status: str
    attempts: int
    retries: int
    #: times: RFC 3339, UTC, milliseconds, ``Z`` (see :func:`workqueue.job.utc_text`)
    enqueued_at: str | None
    started_at: str | None
    finished_at: str | None
    result: Any
    error: str | None
    #: the last value the handler reported with ``ctx.set_progress`` (a number or an object)
    progress: Any = None
    #: the last 25 attempts, oldest first
    history: list[AttemptAnswer] = msgspec.field(default_factory=list)


class QueueDepth(msgspec.Struct):
    """A queue's jobs per status (completed, failed, cancelled: the records still kept)."""

    queued: int
    scheduled: int
    retrying: int
    active: int
    completed: int
    failed: int
    cancelled: int


class QueueAnswer(msgspec.Struct):
    """One queue as ``GET /queues`` and the pause/resume routes show it."""

    name: str
    paused: bool
    partitions: int
    depth: QueueDepth
    #: seconds since the oldest waiting job was enqueued (null: nothing waits)
    oldest_waiting_seconds: float | None
    #: queued jobs per priority level that has any ("0".."9")
    queued_by_priority: dict[str, int]


class ErrorAnswer(msgspec.Struct, omit_defaults=True):
    """Every 4xx/5xx answer: a short error code, the field at fault (or null), the problem."""

    error: str
    field: str | None
    problem: str
    known: list[str] | None = msgspec.field(default=None)


class HealthAnswer(msgspec.Struct):
    status: str


@dataclass
class RawSchema(Schema):
    """A JSON Schema given as a plain dict, emitted verbatim into the OpenAPI document."""

    raw: dict[str, Any] = field(default_factory=dict)

    def to_schema(self) -> dict[str, Any]:
        return self.raw

    def __hash__(self) -> int:
        return hash(msgspec.json.encode(self.raw))


#: the component name of :data:`JSON_VALUE_SCHEMA`
JSON_VALUE = "JsonValue"
_JSON_VALUE_REF = {"$ref": f"#/components/schemas/{JSON_VALUE}"}
#: any JSON value the body decoder accepts: numbers within the 64-bit integer range
JSON_VALUE_SCHEMA: dict[str, Any] = {
    "type": ["null", "boolean", "number", "string", "array", "object"],
    "minimum": _INT_MIN,
    "maximum": _INT_MAX,
    "items": _JSON_VALUE_REF,
    "additionalProperties": _JSON_VALUE_REF,
    "description": "a JSON value; numbers within -2^63..2^64-1",
}


@dataclass
class ProducerComponents(Components):
    """Components plus schemas of our own (Litestar replaces ``schemas`` with the ones it
    generates, so ours are merged in when the document is written)."""

    extra_schemas: dict[str, dict[str, Any]] = field(default_factory=dict)

    def to_schema(self) -> dict[str, Any]:
        result = super().to_schema()
        result.pop("extraSchemas", None)
        if self.extra_schemas:
            result["schemas"] = {**result.get("schemas", {}), **self.extra_schemas}
        return result


def _nullable(kind: str, **constraints: Any) -> dict[str, Any]:
    return {"type": [kind, "null"], **constraints}


def _inline(node: Any, defs: dict[str, Any], seen: tuple[str, ...] = ()) -> Any:
    """Resolve msgspec's ``#/$defs/...`` references in place (an OpenAPI document has no
    ``$defs`` of its own), and state what the payload validation adds: no unknown fields and
    numbers in the 64-bit range the body decoder accepts."""
    if isinstance(node, list):
        return [_inline(item, defs, seen) for item in node]
    if not isinstance(node, dict):
        return node
    ref = node.get("$ref")
    if isinstance(ref, str) and ref.startswith("#/$defs/"):
        name = ref.removeprefix("#/$defs/")
        if name in seen:  # a recursive schema: deeper levels are checked by the server only
            return {"type": "object"}
        return _inline(defs[name], defs, (*seen, name))
    out = {key: _inline(value, defs, seen) for key, value in node.items() if key != "$defs"}
    kinds = out.get("type")
    kinds = kinds if isinstance(kinds, list) else [kinds]
    if "integer" in kinds or "number" in kinds:
        out["minimum"] = max(out.get("minimum", _INT_MIN), _INT_MIN)
        out["maximum"] = min(out.get("maximum", _INT_MAX), _INT_MAX)
    if "object" in kinds and "properties" in out:
        out.setdefault("additionalProperties", False)
    return out


def payload_schema(registry: Registry, name: str) -> dict[str, Any] | None:
    """The JSON Schema of job type ``name``'s payload, self-contained; None when it is free."""
    job_type = registry.get(name)
    declared = schema_json(job_type.payload_schema) if job_type is not None else None
    if declared is None:
        return None
    inlined: dict[str, Any] = _inline(declared, declared.get("$defs", {}))
    return inlined


def _accepts_empty_payload(registry: Registry, name: str) -> bool:
    try:
        registry.validate_payload(name, {})
    except WorkQueueError:
        return False
    return True


def task_schema(registry: Registry, limits: Limits) -> dict[str, Any]:
    """The JSON Schema of one posted task: exactly what ``spec_from_object`` and
    ``prepare_task`` accept (``null`` for an optional field means its default)."""
    names = registry.names()
    if names:
        type_schema: dict[str, Any] = {
            "type": "string",
            "enum": names,
            "description": (
                "a job type installed in the producer; types advertised by live workers "
                "(plugins the producer lacks) are accepted too"
            ),
        }
    else:
        type_schema = {
            "type": "string",
            "pattern": NAME_REGEX,
            "minLength": 1,
            "maxLength": 128,
            "description": "a job type advertised by a live worker",
        }
    retries = _nullable(
        "integer",
        minimum=0,
        maximum=limits.max_retries,
        description="how many more times a failed attempt is retried; default: the job type's",
    )
    schema: dict[str, Any] = {
        "type": "object",
        "required": ["type"],
        "properties": {
            "type": type_schema,
            "payload": _nullable(
                "object",
                additionalProperties=_JSON_VALUE_REF,
                description="validated by the job type's schema where it declares one",
            ),
            "retries": retries,
            "Retries": {**retries, "description": "an alias of retries (give one, not both)"},
            "queue": _nullable(
                "string", pattern=NAME_REGEX, minLength=1, maxLength=128, default="default"
            ),
            "delay": _nullable(
                "number", minimum=0, maximum=limits.max_delay_s, description="seconds from now"
            ),
            "run_at": _nullable(
                "string", format="date-time", description="RFC 3339 time (not with delay)"
            ),
            "timeout": _nullable(
                "number",
                minimum=0.001,
                maximum=limits.max_timeout_s,
                description="seconds per attempt; default: the job type's",
            ),
            "priority": _nullable(
                "integer",
                minimum=0,
                maximum=PRIORITY_MAX,
                default=0,
                description="0-9: a waiting job of higher priority starts first; FIFO within one",
            ),
            "unique": _nullable(
                "boolean",
                default=False,
                description=(
                    "while an unfinished job of this queue, type and payload exists, answer it "
                    "(200) instead of creating another"
                ),
            ),
            "limit_key": _nullable(
                "string",
                pattern=r"^[A-Za-z0-9_.:@+=/\-]{1,128}$",  # workqueue.limits.LIMIT_KEY_PATTERN
                minLength=1,
                maxLength=128,
                description="the type's rate and concurrency limits apply per (type, limit_key)",
            ),
        },
        "additionalProperties": False,
        "not": {
            "anyOf": [
                {"required": ["retries", "Retries"]},
                {
                    "required": ["delay", "run_at"],
                    "properties": {"delay": {"type": "number"}, "run_at": {"type": "string"}},
                },
            ]
        },
    }
    conditions = []
    for name in names:
        payload = payload_schema(registry, name)
        if payload is None:
            continue
        then: dict[str, Any] = {"properties": {"payload": payload}}
        if not _accepts_empty_payload(registry, name):
            then["required"] = ["payload"]
        conditions.append(
            {"if": {"properties": {"type": {"const": name}}, "required": ["type"]}, "then": then}
        )
    if conditions:
        schema["allOf"] = conditions
    return schema


def batch_schema(registry: Registry, limits: Limits, batch_limit: int) -> dict[str, Any]:
    """A JSON array of tasks, validated all-or-nothing (an empty array is accepted)."""
    return {
        "type": "array",
        "items": task_schema(registry, limits),
        "minItems": 0,
        "maxItems": batch_limit,
    }


_RETRY_AFTER = OpenAPIHeader(
    schema=Schema(type=OpenAPIType.INTEGER, minimum=0),
    description="seconds to wait before retrying",
    required=True,
)


def operation_class(body: dict[str, Any] | None) -> type[Operation]:
    """An Operation that documents ``body`` (parsed by the route itself) and Retry-After."""

    @dataclass
    class _Operation(Operation):
        def __post_init__(self) -> None:
            if body is not None:
                self.request_body = RequestBody(
                    content={"application/json": OpenAPIMediaType(schema=RawSchema(raw=body))},
                    required=True,
                )
            unavailable = (self.responses or {}).get("503")
            if isinstance(unavailable, OpenAPIResponse):
                unavailable.headers = {**(unavailable.headers or {}), "Retry-After": _RETRY_AFTER}

    return _Operation
