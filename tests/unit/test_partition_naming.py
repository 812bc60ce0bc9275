"""Partition naming, slot spreading and layouts: pure functions (no Redis)."""

from __future__ import annotations

import pytest
from redis.crc import key_slot

from workqueue.broker.partitions import (
    MAX_PARTITIONS,
    SLOTS,
    Layout,
    hash_slot,
    is_partition,
    key_partition,
    logical_name,
    partition_name,
    target_slot,
)
from workqueue.jobtypes import NAME_PATTERN

NAMES = [f"queue-{k}" for k in range(60)] + ["default", "mail", "a", "x.y:z-1_2"]


def cluster_split(n: int) -> list[tuple[int, int]]:
    """The slot ranges ``redis-cli --cluster create`` gives n masters (evenly split)."""
    per = SLOTS / n
    return [(round(i * per), round((i + 1) * per) - 1) for i in range(n)]


def test_names_are_pinned() -> None:
    # Physical names are stored data: a change would strand the jobs of every partitioned
    # queue. These values must never change.
    assert partition_name("q", 0, 4) == "q"
    assert partition_name("q", 1, 4) == "q#1of4.3248"
    assert partition_name("orders", 2, 3) == "orders#2of3.7381"
    assert key_partition("abc", 4) == 1 and key_partition("order-17", 7) == 2


def test_slot_is_the_cluster_slot_of_the_keys() -> None:
    for name in ("q", partition_name("q", 1, 4), partition_name("mail", 5, 7)):
        assert hash_slot(name) == key_slot(f"wq:{{{name}}}:queued".encode())


@pytest.mark.parametrize("n", [2, 3, 4, 5, 7, 12, 15])
def test_small_layouts_sit_exactly_on_evenly_spaced_slots(n: int) -> None:
    for queue in NAMES[:20]:
        slots = [hash_slot(partition_name(queue, i, n)) for i in range(n)]
        assert slots == [target_slot(queue, i, n) for i in range(n)]
        gaps = {(slots[(i + 1) % n] - slots[i]) % SLOTS for i in range(n)}
        assert gaps <= {SLOTS // n, SLOTS // n + 1}


@pytest.mark.parametrize("n", [16, 40, MAX_PARTITIONS])
def test_large_layouts_land_within_a_small_window(n: int) -> None:
    queue = "big"
    for i in range(n):
        off = (hash_slot(partition_name(queue, i, n)) - target_slot(queue, i, n)) % SLOTS
        assert off < max(1, SLOTS // n // 16)


@pytest.mark.parametrize("n", [2, 3, 4, 6])
def test_every_master_of_an_evenly_split_cluster_gets_one_partition(n: int) -> None:
    ranges = cluster_split(n)
    for queue in NAMES:
        owners = sorted(
            next(m for m, (lo, hi) in enumerate(ranges) if lo <= hash_slot(p) <= hi)
            for p in Layout(queue, n).write_queues()
        )
        assert owners == list(range(n)), queue


def test_physical_names_never_clash_with_queue_names() -> None:
    for queue in NAMES:
        for i in range(1, 5):
            name = partition_name(queue, i, 5)
            assert is_partition(name) and not NAME_PATTERN.match(name)
            assert logical_name(name) == queue
        assert logical_name(queue) == queue and not is_partition(queue)
    # names differ per layout: partition 1 of 2 is not partition 1 of 4
    assert partition_name("q", 1, 2) != partition_name("q", 1, 4)


def test_bad_partition_numbers_are_refused() -> None:
    for index, n in ((1, 1), (4, 4), (1, MAX_PARTITIONS + 1), (-1, 3)):
        with pytest.raises(ValueError, match="no partition"):
            partition_name("q", index, n)


def test_keys_spread_over_partitions_and_stay_put() -> None:
    counts = [0] * 4
    for k in range(4000):
        counts[key_partition(f"key-{k}", 4)] += 1
    assert all(900 < c < 1100 for c in counts), counts
    assert key_partition("anything", 1) == 0
    assert {key_partition("same", 4) for _ in range(10)} == {key_partition("same", 4)}


def test_layout_from_fields_and_queue_sets() -> None:
    empty = Layout.from_fields("q", [None, None, None, None])
    assert empty == Layout("q") and not empty.partitioned
    assert empty.write_queues() == empty.live_queues() == empty.counted_queues() == ["q"]
    layout = Layout.from_fields("q", [b"2", b"4,1", b"3", b"1700000000000"])
    assert layout.partitions == 2 and layout.draining == (4, 1) and layout.retired == (3,)
    assert layout.partitioned and layout.changed_ms == 1_700_000_000_000
    assert layout.write_queues() == ["q", partition_name("q", 1, 2)]
    assert layout.live_queues() == [
        "q",
        partition_name("q", 1, 2),
        *(partition_name("q", i, 4) for i in (1, 2, 3)),
    ]
    assert layout.counted_queues() == [
        *layout.live_queues(),
        partition_name("q", 1, 3),
        partition_name("q", 2, 3),
    ]
    # odd values read as unset; the current N is never draining; a partition is its own queue
    odd = Layout.from_fields("q", [b"zero", b"2,x,999,2", b"-1", b"soon"])
    assert odd == Layout("q", 1, (2,), (), 0)
    assert Layout.from_fields("q", [b"3", b"3", b"", None]).draining == ()
    physical = partition_name("q", 1, 2)
    assert Layout.from_fields(physical, [b"9", b"", b"", b""]) == Layout(physical)


def test_key_candidates_are_the_keys_partitions_in_earlier_layouts() -> None:
    layout = Layout("q", 2, draining=(4,), retired=(1,))
    key = next(k for k in (f"k{i}" for i in range(100)) if key_partition(k, 4) == 3)
    assert layout.partition_for_key(key) == partition_name("q", key_partition(key, 2), 2)
    own = layout.partition_for_key(key)
    # its partition in layout 4, and partition 0 (layout 1 put every key there) unless own
    expected = [partition_name("q", 3, 4)] + (["q"] if own != "q" else [])
    assert layout.key_candidates(key) == expected
    assert Layout("q", 4).key_candidates(key) == []
