"""Turning a raw request body into :class:`~workqueue.client.TaskSpec` objects.

The body is decoded here, not by Litestar, so every kind of bad input (malformed JSON, invalid
UTF-8, out-of-range numbers, deep nesting) gets the same JSON error answer.
"""

from __future__ import annotations

from typing import Any

import msgspec

from workqueue.client import TaskSpec
from workqueue.errors import TaskValidationError, WorkQueueError

__all__ = ["ALLOWED_FIELDS", "MalformedBody", "decode_body", "spec_from_object"]

ALLOWED_FIELDS = ("type", "payload", "retries", "Retries", "queue", "delay", "run_at", "timeout")
_INT_MIN = -(2**63)
_INT_MAX = 2**64 - 1


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
    """Iteratively check nesting depth and integer range (no recursion on user data)."""
    stack: list[tuple[Any, int]] = [(value, 1)]
    while stack:
        item, depth = stack.pop()
        if isinstance(item, dict | list):
            if depth > max_depth:
                raise MalformedBody(f"is nested deeper than {max_depth} levels")
            children = item.values() if isinstance(item, dict) else item
            stack.extend((child, depth + 1) for child in children)
        elif (
            isinstance(item, int)
            and not isinstance(item, bool)
            and not _INT_MIN <= item <= _INT_MAX
        ):
            raise MalformedBody("contains a number out of the 64-bit range")


def _field(prefix: str, name: str) -> str:
    return f"{prefix}.{name}" if prefix else name


def spec_from_object(obj: Any, *, idempotency_key: str | None = None, prefix: str = "") -> TaskSpec:
    """One posted task object as a :class:`TaskSpec` (values are checked by prepare_task)."""
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
    queue = obj.get("queue")
    return TaskSpec(
        type=obj["type"],
        payload=obj.get("payload"),
        retries=obj.get("retries", obj.get("Retries")),
        queue="default" if queue is None else queue,
        delay=obj.get("delay"),
        run_at=obj.get("run_at"),
        timeout=obj.get("timeout"),
        idempotency_key=idempotency_key,
    )
