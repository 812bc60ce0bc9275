"""One attempt's edges: payload decoding, result encoding, and the mapping of what happened to
an outcome for the broker (running the handler is ``executing.py``'s)."""

from __future__ import annotations

from typing import Any, Literal

import msgspec

from workqueue.errors import InvalidJobError, PayloadValidationError, PermanentError, RetryLater
from workqueue.jobtypes import JobType
from workqueue.log import sanitize
from workqueue.registry import Registry

__all__ = ["Outcome", "decode_payload", "encode_result", "error_text", "failure_outcome"]

ERROR_LIMIT = 2000


class Outcome(msgspec.Struct, frozen=True):
    """How an attempt ended, before the broker has its say."""

    kind: Literal["ack", "fail", "release", "cancel"]
    data: bytes | str = b""
    #: for "fail": retry delay in ms, or -1 for "never retry"
    delay_ms: int = -1
    #: for "fail": the attempt timed out (the attempt history says timed_out)
    timed_out: bool = False


def decode_payload(registry: Registry, job_type: JobType, raw: bytes, max_bytes: int) -> Any:
    """JSON only, size-capped, validated: anything else is an invalid job (never retried)."""
    if len(raw) > max_bytes:
        raise InvalidJobError(f"payload of {len(raw)} bytes exceeds the {max_bytes}-byte limit")
    try:
        data = msgspec.json.decode(raw)
    except msgspec.DecodeError:
        raise InvalidJobError("payload is not valid JSON") from None
    if not isinstance(data, dict):
        raise InvalidJobError("payload is not a JSON object")
    try:
        return registry.validate_payload(job_type.name, data)
    except PayloadValidationError as exc:
        raise InvalidJobError(f"payload does not match the job type's schema: {exc}") from None


def encode_result(result: Any, max_bytes: int) -> tuple[bytes, str | None]:
    """The result as JSON, or ``null`` with a warning when it is not JSON-able or too large."""
    try:
        encoded = msgspec.json.encode(result)
    except (TypeError, ValueError, OverflowError):
        return b"null", f"result of type {type(result).__name__} is not JSON-serialisable"
    if len(encoded) > max_bytes:
        return b"null", f"result of {len(encoded)} bytes exceeds the {max_bytes}-byte limit"
    return encoded, None


def error_text(exc: BaseException) -> str:
    """One sanitised line naming the error, for the job record and the log."""
    return sanitize(exc, limit=ERROR_LIMIT)


def failure_outcome(exc: BaseException, job_type: JobType | None, failures_before: int) -> Outcome:
    """Map an exception to a fail outcome with the right retry delay."""
    text = error_text(exc)
    if isinstance(exc, PermanentError | InvalidJobError):
        return Outcome("fail", text, -1)
    if isinstance(exc, RetryLater):
        return Outcome("fail", text, int(exc.delay_seconds * 1000))
    backoff = job_type.backoff if job_type is not None else None
    delay = backoff.delay_seconds(failures_before + 1) if backoff is not None else 5.0
    return Outcome("fail", text, int(delay * 1000))
