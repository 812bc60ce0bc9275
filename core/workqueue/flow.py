"""Flow-control task fields (SPEC 12): ``priority`` and ``unique``, validated and applied to a
prepared :class:`~workqueue.job.NewJob`.

Kept apart from :func:`workqueue.client.prepare_task` so its hot path is unchanged: a task with
the defaults (priority 0, not unique) comes back as it went in.
"""

from __future__ import annotations

import hashlib
from typing import Any

import msgspec

from workqueue.errors import TaskValidationError
from workqueue.job import NewJob

__all__ = ["PRIORITY_MAX", "apply_flow", "canonical_payload", "unique_fingerprint"]

#: priorities are 0 (the default, lowest) to PRIORITY_MAX (highest)
PRIORITY_MAX = 9


def canonical_payload(encoded: bytes) -> bytes:
    """The canonical JSON of an encoded payload: keys sorted, no spaces."""
    return msgspec.json.encode(msgspec.json.decode(encoded), order="sorted")


def unique_fingerprint(job_type: str, encoded: bytes) -> str:
    """What makes two unique jobs of one queue the same: type and canonical payload."""
    digest = hashlib.sha256(job_type.encode() + b"\n" + canonical_payload(encoded))
    return digest.hexdigest()[:32]


def _priority(value: Any) -> int:
    if value is None:
        return 0
    if isinstance(value, bool) or not isinstance(value, int):
        raise TaskValidationError("priority", f"must be an integer from 0 to {PRIORITY_MAX}")
    if not 0 <= value <= PRIORITY_MAX:
        raise TaskValidationError("priority", f"must be between 0 and {PRIORITY_MAX}")
    return value


def apply_flow(job: NewJob, priority: Any = 0, unique: Any = False) -> NewJob:
    """``job`` with its validated priority and unique fingerprint (raises TaskValidationError)."""
    if priority == 0 and unique is False and type(priority) is int:
        return job
    prio = _priority(priority)
    if unique is None:
        unique = False
    if not isinstance(unique, bool):
        raise TaskValidationError("unique", "must be true or false")
    key = unique_fingerprint(job.type, job.payload) if unique else ""
    if prio == job.priority and key == job.unique_key:
        return job
    return msgspec.structs.replace(job, priority=prio, unique_key=key)
