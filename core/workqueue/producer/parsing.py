"""Turning a raw request body into :class:`~workqueue.client.TaskSpec` objects.

The body is decoded here, not by Litestar, so every kind of bad input (malformed JSON, invalid
UTF-8, out-of-range numbers, deep nesting) gets the same JSON error answer.
"""

from __future__ import annotations

import re
from collections.abc import Container
from typing import Any

import msgspec

from workqueue.client import TaskSpec
from workqueue.errors import TaskValidationError, WorkQueueError

__all__ = [
    "ALLOWED_FIELDS",
    "MalformedBody",
    "decode_body",
    "integral_floats",
    "spec_from_object",
]

ALLOWED_FIELDS = (
    *("type", "payload", "retries", "Retries", "queue", "delay", "run_at", "timeout"),
    "limit_key",  # SPEC 12 limits (H6)
    "priority",  # SPEC 12 priorities and unique jobs (H4)
    "unique",
)
_INT_MIN = -(2**63)
_INT_MAX = 2**64 - 1
#: the whole string must match (``re.match`` with ``$`` would let a trailing newline through)
_NAME = re.compile(r"[A-Za-z0-9_.:\-]{1,128}")


class MalformedBody(WorkQueueError):
    """The body is not acceptable JSON (answered 400)."""

    def __init__(self, problem: str, field: str = "body") -> None:
        self.field = field
        self.problem = problem
        super().__init__(f"{field}: {problem}")


def decode_body(raw: bytes, max_depth: int) -> Any:
    """Decode a JSON body; raise :class:`MalformedBody` for anything that is not plain JSON."""
    if not raw.strip():
        raise MalformedBody("is empty; a JSON body is required")
    try:
        value = msgspec.json.decode(raw)
    except RecursionError:
        raise MalformedBody(f"is nested deeper than {max_depth} levels") from None
    except UnicodeDecodeError:
        raise MalformedBody("is not valid UTF-8") from None
    except (msgspec.DecodeError, msgspec.ValidationError, ValueError) as exc:
        raise MalformedBody(f"is not valid JSON: {exc}") from None
    _check_values(value, max_depth)
    return value


def _check_values(value: Any, max_depth: int) -> None:
    """Iteratively check nesting depth and number range (no recursion on user data)."""
    stack: list[tuple[Any, int]] = [(value, 1)]
    while stack:
        item, depth = stack.pop()
        if isinstance(item, dict | list):
            if depth > max_depth:
                raise MalformedBody(f"is nested deeper than {max_depth} levels")
            children = item.values() if isinstance(item, dict) else item
            stack.extend((child, depth + 1) for child in children)
        elif (
            isinstance(item, int | float)
            and not isinstance(item, bool)
            and not _INT_MIN <= item <= _INT_MAX
        ):
            # 1e70 is as much an integer as 10**70 (JSON Schema agrees): the range is the same
            raise MalformedBody("contains a number out of the 64-bit range")


def _field(prefix: str, name: str) -> str:
    return f"{prefix}.{name}" if prefix else name


def _integral(value: Any) -> Any:
    """``3.0`` as ``3``: JSON does not tell them apart (JSON Schema's integer includes 3.0)."""
    if isinstance(value, float) and value.is_integer() and _INT_MIN <= value <= _INT_MAX:
        return int(value)
    return value


def integral_floats(value: Any) -> Any:
    """A decoded JSON value with every integral float as an int (for typed payloads, whose
    ``int`` fields must accept ``3.0``; a ``float`` field accepts an int)."""
    if isinstance(value, dict):
        return {key: integral_floats(item) for key, item in value.items()}
    if isinstance(value, list):
        return [integral_floats(item) for item in value]
    return _integral(value)


def spec_from_object(
    obj: Any,
    *,
    idempotency_key: str | None = None,
    prefix: str = "",
    typed: Container[str] = (),
) -> TaskSpec:
    """One posted task object as a :class:`TaskSpec` (values are checked by prepare_task).

    ``typed`` names the job types whose payload schema is declared: their payloads' integral
    floats become ints."""
    if not isinstance(obj, dict):
        raise TaskValidationError(prefix or "body", "must be a JSON object")
    for key in obj:
        if key not in ALLOWED_FIELDS:
            allowed = ", ".join(f for f in ALLOWED_FIELDS if f != "Retries")
            raise TaskValidationError(
                _field(prefix, str(key)), f"unknown field; allowed fields: {allowed}"
            )
    if "retries" in obj and "Retries" in obj:
        raise TaskValidationError(_field(prefix, "retries"), "give retries or Retries, not both")
    if "type" not in obj:
        raise TaskValidationError(_field(prefix, "type"), "is required")
    if not isinstance(obj["type"], str):
        raise TaskValidationError(_field(prefix, "type"), "must be a string")
    for name in ("type", "queue"):
        value = obj.get(name)
        if isinstance(value, str) and not _NAME.fullmatch(value):
            raise TaskValidationError(
                _field(prefix, name), "must be 1-128 characters of A-Za-z0-9_.:-"
            )
    queue = obj.get("queue")
    payload = obj.get("payload")
    if obj["type"] in typed:
        payload = integral_floats(payload)
    return TaskSpec(
        type=obj["type"],
        payload=payload,
        retries=_integral(obj.get("retries", obj.get("Retries"))),
        queue="default" if queue is None else queue,
        delay=obj.get("delay"),
        run_at=obj.get("run_at"),
        timeout=obj.get("timeout"),
        idempotency_key=idempotency_key,
        priority=_integral(obj.get("priority")),
        unique=obj.get("unique"),
        limit_key=obj.get("limit_key"),
    )
