"""Partitioned queues: one logical queue spread over N physical queues on spread hash slots.

A *logical* queue ``q`` (what users name: 1-128 characters of ``A-Za-z0-9_.:-``) is stored as
one or more *physical* queues, each a complete queue of its own (its own keys, its own hash
tag, so every Lua script still works on one physical queue in one slot):

- partition 0 is ``q`` itself: the keyspace ``<p>:{q}:...`` (existing data and N = 1 are
  unchanged by partitioning);
- partition ``i`` (1 <= i < N) of a layout of N partitions is ``q#<i>of<N>.<s>``: ``#`` is not
  allowed in queue names, so a physical name never clashes with a user's queue, and
  :func:`logical_name` finds the queue back. ``<s>`` is the first decimal suffix whose hash
  slot (CRC16 of the hash tag) lies at ``slot(q) + i * 16384 / N`` (exactly for N < 16,
  else within 1/16 of the spacing): the N partitions sit on evenly spaced slots, so the
  masters of a cluster with evenly split slots (``redis-cli --cluster create``) each get
  their share.

The names are a pure function of ``(q, i, N)``: every process computes the same ones. A
layout of another N is another set of physical queues (except partition 0, shared by all).

The layout of a queue is kept in partition 0's settings hash ``<p>:{q}:settings`` (fields
below, written only by ``partitions.lua``): ``partitions`` (N, absent: 1), the *draining*
layouts (earlier N whose partitions may still hold records), the *retired* layouts (earlier
N whose partitions are empty; their counters still count) and when N last changed.
Producers write to the current layout only; workers fetch from and housekeep the current and
the draining layouts; readers show every layout summed under the logical name. A draining
layout is retired once every partition of it (other than 0) has an empty ledger and N has
not changed for :data:`RETIRE_GRACE_MS` (longer than any process caches the layout).

This module is pure (no Redis): names, slots, the :class:`Layout` and the key hashing.
:mod:`workqueue.broker.partition_map` reads and writes layouts.
"""

from __future__ import annotations

import binascii
import hashlib
from collections.abc import Sequence
from dataclasses import dataclass
from functools import lru_cache
from itertools import count
from typing import Any

__all__ = [
    "FIELD_CHANGED",
    "FIELD_DRAINING",
    "FIELD_PARTITIONS",
    "FIELD_RETIRED",
    "LAYOUT_FIELDS",
    "MAX_PARTITIONS",
    "RETIRE_GRACE_MS",
    "SEPARATOR",
    "SLOTS",
    "Layout",
    "hash_slot",
    "is_partition",
    "key_partition",
    "logical_name",
    "partition_name",
    "target_slot",
]

#: hash slots of a Redis Cluster
SLOTS = 16384
#: the most partitions a queue may have
MAX_PARTITIONS = 256
#: between the logical name and the partition part of a physical name (never in queue names)
SEPARATOR = "#"
#: a draining layout is retired no sooner than this after N last changed (every process
#: re-reads the layout at least every PARTITIONS_CACHE_SECONDS, 5 s: a producer that still
#: wrote to a draining partition has stopped long before)
RETIRE_GRACE_MS = 60_000

FIELD_PARTITIONS = "partitions"
FIELD_DRAINING = "partitions_draining"
FIELD_RETIRED = "partitions_retired"
FIELD_CHANGED = "partitions_changed_ms"
#: the layout's fields in partition 0's settings hash, in the order :meth:`Layout.from_fields`
#: reads them
LAYOUT_FIELDS = (FIELD_PARTITIONS, FIELD_DRAINING, FIELD_RETIRED, FIELD_CHANGED)


def hash_slot(name: str) -> int:
    """The cluster hash slot of the keys of a (physical) queue: CRC16 of its hash tag."""
    return binascii.crc_hqx(name.encode(), 0) % SLOTS


def target_slot(queue: str, index: int, n: int) -> int:
    """Where partition ``index`` of ``n`` should sit: ``index / n`` of the ring after the slot
    of partition 0 (the queue's own, which is fixed)."""
    return (hash_slot(queue) + (index * SLOTS + n // 2) // n) % SLOTS


def _window(n: int) -> int:
    """How many slots past its target a partition may land: exact for up to 15 partitions,
    never more than 1/16 of the spacing. Finding a name costs about 16384 / window CRCs
    (0.25 us each): a whole layout about 60 ms up to 128 partitions, 260 ms for 256, once
    per process."""
    return max(1, min(n // 8, SLOTS // (n * 16)))


@lru_cache(maxsize=8192)
def partition_name(queue: str, index: int, n: int) -> str:
    """The physical queue of partition ``index`` of a layout of ``n`` partitions of ``queue``
    (partition 0 is ``queue`` itself). Deterministic; a few ms to find the first time
    (16384 / window CRCs), then cached."""
    if index == 0:
        return queue
    if not 0 < index < n <= MAX_PARTITIONS:
        raise ValueError(f"no partition {index} of {n} (1 to {MAX_PARTITIONS} partitions)")
    base = f"{queue}{SEPARATOR}{index}of{n}."
    state = binascii.crc_hqx(base.encode(), 0)  # CRC16 goes on from the prefix's state
    target = target_slot(queue, index, n)
    width = _window(n)
    for suffix in count():
        text = b"%d" % suffix
        if (binascii.crc_hqx(text, state) % SLOTS - target) % SLOTS < width:
            return base + text.decode()
    raise AssertionError("unreachable")  # pragma: no cover


def logical_name(name: str) -> str:
    """The logical queue of a physical queue name (a logical name is its own)."""
    return name.partition(SEPARATOR)[0]


def is_partition(name: str) -> bool:
    """True for the name of a partition other than 0 (``q#...``)."""
    return SEPARATOR in name


def key_partition(key: str, n: int) -> int:
    """The partition (of ``n``) that owns a key: an idempotency key, or a uniqueness
    fingerprint. A stable hash (BLAKE2b), the same in every process."""
    if n <= 1:
        return 0
    digest = hashlib.blake2b(key.encode("utf-8", "surrogatepass"), digest_size=8).digest()
    return int.from_bytes(digest, "big") % n


def _layout_list(raw: Any) -> tuple[int, ...]:
    """``"4,2"`` -> ``(4, 2)``; anything malformed is left out."""
    if raw is None:
        return ()
    text = raw.decode(errors="replace") if isinstance(raw, bytes) else str(raw)
    found: list[int] = []
    for part in text.split(","):
        part = part.strip()
        if part.isdigit() and 1 <= int(part) <= MAX_PARTITIONS and int(part) not in found:
            found.append(int(part))
    return tuple(found)


def _number(raw: Any, default: int, low: int, high: int) -> int:
    try:
        value = int(raw) if raw is not None else default
    except ValueError:
        return default
    return value if low <= value <= high else default


@dataclass(frozen=True, slots=True)
class Layout:
    """How one logical queue is partitioned (as stored in partition 0's settings hash)."""

    queue: str
    #: N: producers spread new jobs over this many partitions
    partitions: int = 1
    #: earlier N whose partitions may still hold records (workers still fetch from them)
    draining: tuple[int, ...] = ()
    #: earlier N whose partitions are empty (their counters still count in the figures)
    retired: tuple[int, ...] = ()
    #: when N last changed (ms, Redis clock; 0: never)
    changed_ms: int = 0

    @classmethod
    def from_fields(cls, queue: str, raw: Sequence[Any]) -> Layout:
        """A layout from the values of :data:`LAYOUT_FIELDS` (odd values read as unset).

        A physical partition name is its own layout of one partition."""
        if is_partition(queue):
            return cls(queue)
        n = _number(raw[0], 1, 1, MAX_PARTITIONS)
        draining = tuple(d for d in _layout_list(raw[1]) if d != n)
        retired = tuple(r for r in _layout_list(raw[2]) if r != n and r not in draining)
        return cls(queue, n, draining, retired, _number(raw[3], 0, 0, 2**62))

    @property
    def partitioned(self) -> bool:
        """True when the queue has (or still drains) more than partition 0."""
        return self.partitions > 1 or any(n > 1 for n in self.draining)

    def layout_queues(self, n: int) -> list[str]:
        """The physical queues of a layout of ``n`` partitions, partition 0 first."""
        return [partition_name(self.queue, i, n) for i in range(n)]

    def write_queues(self) -> list[str]:
        """Where producers put new jobs: the current layout's partitions."""
        return self.layout_queues(self.partitions)

    def live_queues(self) -> list[str]:
        """What workers fetch from and housekeep, and where jobs are looked for: the current
        layout's partitions, then those of the draining layouts."""
        found = self.write_queues()
        for n in self.draining:
            found += self.layout_queues(n)[1:]
        return list(dict.fromkeys(found))

    def counted_queues(self) -> list[str]:
        """Every partition whose counters count in the queue's figures (retired ones too)."""
        found = self.live_queues()
        for n in self.retired:
            found += self.layout_queues(n)[1:]
        return list(dict.fromkeys(found))

    def partition_for_key(self, key: str) -> str:
        """The physical queue that owns ``key`` in the current layout: an idempotency key,
        or (for unique jobs) a uniqueness fingerprint. Every process maps a key alike."""
        return partition_name(self.queue, key_partition(key, self.partitions), self.partitions)

    def key_candidates(self, key: str) -> list[str]:
        """The partitions of earlier layouts that may hold a record written under ``key``
        before N last changed (not including :meth:`partition_for_key`)."""
        own = self.partition_for_key(key)
        found = [partition_name(self.queue, key_partition(key, n), n) for n in self.draining]
        # a retired layout's partitions are empty, but its partition 0 is the live one
        found += [self.queue for n in self.retired if key_partition(key, n) == 0]
        return [q for q in dict.fromkeys(found) if q != own]
