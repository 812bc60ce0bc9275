"""Queue control (SPEC 11): pause and resume a queue, and every queue's overview for
``GET /queues`` and ``workqueue queues list``.

The pause state is the settings field ``paused`` = ``"1"`` in the queue's settings hash
(``<p>:{q}:settings``), so it lives in Redis and survives restarts of any process; reserve
leases nothing from a paused queue. A queue split into partitions has one settings hash per
partition, each with its own copy of the flag (scripts read only their own slot):
:func:`physical_queues` names them (the partition map's live layouts).

The overview of N queues costs the registry read, the layouts' read (one pipeline; cached
layouts are not used: a pause must reach every partition) and one pipeline of one read-only
script call per physical queue (``queue_info.lua``, which reads the clock too).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

import msgspec

from workqueue.broker.reads import _int
from workqueue.errors import TaskValidationError
from workqueue.jobtypes import NAME_PATTERN

if TYPE_CHECKING:
    from workqueue.broker.broker import Broker

__all__ = [
    "QueueOverview",
    "overview",
    "physical_queues",
    "set_paused",
]

#: the wake-up tokens a resume may leave (as the broker's NOTIFY_CAP)
_NOTIFY_CAP = 64


class QueueOverview(msgspec.Struct):
    """One queue as ``GET /queues`` shows it."""

    name: str
    paused: bool
    partitions: int
    #: jobs per status: queued, scheduled, retrying, active, completed, failed, cancelled
    #: (completed/failed/cancelled: the records still kept under the retention)
    depth: dict[str, int]
    #: seconds since the oldest job waiting at the head of a priority level was enqueued
    #: (None: nothing is waiting)
    oldest_waiting_seconds: float | None
    #: queued jobs per priority level that has any (``"0"``..``"9"``)
    queued_by_priority: dict[str, int]

    def to_dict(self) -> dict[str, Any]:
        """The JSON form (HTTP and ``--json``)."""
        return msgspec.to_builtins(self)  # type: ignore[no-any-return]


STATUSES = ("queued", "scheduled", "retrying", "active", "completed", "failed", "cancelled")


def check_queue_name(name: Any) -> str:
    """A queue name as the task field ``queue`` accepts it (else TaskValidationError)."""
    if not isinstance(name, str) or not NAME_PATTERN.match(name):
        raise TaskValidationError("name", "must be 1-128 characters of A-Za-z0-9_.:-")
    return name


async def physical_queues(broker: Broker, queue: str) -> list[str]:
    """The physical queues of a logical one: partition 0 (``queue`` itself) and every other
    partition workers fetch from (the current layout's and the draining ones), read fresh.
    Each has its own settings hash and gets its own copy of ``paused``; a partition added
    later copies partition 0's settings (``PartitionMap.set_partitions``)."""
    layout = await broker.partitions.layout(queue, max_age=0.0)
    return layout.live_queues()


async def set_paused(broker: Broker, queue: str, paused: bool) -> bool:
    """Pause or resume ``queue`` (every partition); returns whether it was paused before.

    The queue is added to the registry of known queues, so a queue paused before its first
    job is listed too."""
    check_queue_name(queue)
    if queue not in broker._known_queues:
        await broker._register_queues([queue])
    was = False
    for name in await physical_queues(broker, queue):
        k = broker.keys(name)
        raw = await broker.scripts.queue_pause(
            keys=[k.settings, k.notify, k.queued], args=["1" if paused else "0", _NOTIFY_CAP]
        )
        was = was or bool(int(raw[0]))
    return was


def _row(name: str, raw: Sequence[Any]) -> QueueOverview:
    depth = dict(zip(STATUSES, (_int(v) for v in raw[:7]), strict=True))
    oldest_ms = _int(raw[7])
    now_ms = _int(raw[10])
    levels = raw[11:]
    return QueueOverview(
        name=name,
        paused=bool(_int(raw[8])),
        partitions=max(1, _int(raw[9])),
        depth=depth,
        oldest_waiting_seconds=max(0.0, (now_ms - oldest_ms) / 1000) if oldest_ms >= 0 else None,
        queued_by_priority={
            str(_int(levels[i])): _int(levels[i + 1]) for i in range(0, len(levels) - 1, 2)
        },
    )


def _merge(name: str, parts: list[QueueOverview], partitions: int) -> QueueOverview:
    """A logical queue's overview from its partitions' (depths summed, the oldest wait;
    paused when any partition is)."""
    if len(parts) == 1:
        row = parts[0]
        row.partitions = partitions
        return row
    depth = {s: sum(p.depth[s] for p in parts) for s in STATUSES}
    waits = [p.oldest_waiting_seconds for p in parts if p.oldest_waiting_seconds is not None]
    levels: dict[str, int] = {}
    for p in parts:
        for level, n in p.queued_by_priority.items():
            levels[level] = levels.get(level, 0) + n
    return QueueOverview(
        name=name,
        paused=any(p.paused for p in parts),
        partitions=partitions,
        depth=depth,
        oldest_waiting_seconds=max(waits) if waits else None,
        queued_by_priority=dict(sorted(levels.items(), reverse=True)),
    )


async def overview(
    broker: Broker, queues: Sequence[str] = (), *, only: bool = False
) -> list[QueueOverview]:
    """Every known queue (plus ``queues``; with ``only``, just those), sorted by name: one
    pipeline for all of them (after the read of the registry)."""
    known = set() if only else set(await broker.known_queues())
    names = sorted(known | set(queues))
    if not names:
        return []
    layouts = await broker.partitions.layouts(names, max_age=0.0)
    plan = [(name, layouts[name].live_queues()) for name in names]
    physical = [p for _, parts in plan for p in parts]
    if not physical:
        return []
    script = broker.scripts.queue_info

    async def call(name: str, pipe: Any) -> Any:
        k = broker.keys(name)
        keys = [k.queued, k.scheduled, k.retry, k.active, k.completed, k.failed]
        keys += [k.cancelled, k.settings]
        return await script(keys=keys, args=[k.job_prefix], client=pipe)

    # one pipeline (one call per physical queue; on a cluster, each to its master at once)
    replies = await broker._per_queue(physical, call)
    out: list[QueueOverview] = []
    at = 0
    for name, parts in plan:
        rows = [_row(p, replies[at + i]) for i, p in enumerate(parts)]
        at += len(parts)
        out.append(_merge(name, rows, layouts[name].partitions))
    return out
