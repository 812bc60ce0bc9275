"""Limits as values: rate and concurrency parsing, JobType declarations, limit_key checks."""

from __future__ import annotations

from typing import Any

import pytest

from workqueue import JobType
from workqueue.broker.limits import RuntimeLimits, effective_limits
from workqueue.client import Limits, TaskSpec, prepare_task
from workqueue.errors import ConfigurationError, TaskValidationError
from workqueue.limits import LimitSpec, Rate, bucket_name, parse_concurrency, parse_rate
from workqueue.producer.parsing import spec_from_object
from workqueue.registry import Registry


async def handler(payload: Any, ctx: Any) -> None:
    return None


@pytest.mark.parametrize(
    ("text", "rate"),
    [("100/s", Rate(100, 1000)), ("10/m", Rate(10, 60_000)), (" 5 / h ", Rate(5, 3_600_000))],
)
def test_a_rate_reads_count_per_unit(text: str, rate: Rate) -> None:
    assert parse_rate(text) == rate
    assert parse_rate(str(rate)) == rate


@pytest.mark.parametrize("text", ["100", "100/d", "0/s", "-1/s", "1.5/s", "/s", "", 5, None])
def test_a_malformed_rate_says_how_to_write_one(text: Any) -> None:
    with pytest.raises(ConfigurationError, match="rate_limit"):
        parse_rate(text)


@pytest.mark.parametrize("value", [0, -1, True, 1.5, "3"])
def test_a_concurrency_is_a_positive_integer(value: Any) -> None:
    with pytest.raises(ConfigurationError, match="concurrency_limit"):
        parse_concurrency(value)


def test_a_job_type_declares_its_limits_and_a_bad_one_names_the_type() -> None:
    jt = JobType("limited", handler, rate_limit="100/s", concurrency_limit=5)
    assert jt.limits() == LimitSpec(Rate(100, 1000), 5)
    assert not JobType("open", handler).limits().limited
    with pytest.raises(ConfigurationError, match=r"'bad'.*rate_limit"):
        JobType("bad", handler, rate_limit="fast")
    with pytest.raises(ConfigurationError, match=r"'bad'.*concurrency_limit"):
        JobType("bad", handler, concurrency_limit=0)


def test_run_time_limits_override_the_declared_ones_field_by_field() -> None:
    declared = LimitSpec(Rate(10, 1000), 2)
    assert effective_limits(declared, None) == declared
    assert effective_limits(declared, RuntimeLimits(rate="5/m")) == LimitSpec(Rate(5, 60_000), 2)
    assert effective_limits(declared, RuntimeLimits(concurrency="none")) == LimitSpec(
        Rate(10, 1000), None
    )
    assert not effective_limits(declared, RuntimeLimits("none", "none")).limited
    assert effective_limits(None, RuntimeLimits(concurrency="3")) == LimitSpec(None, 3)


def test_a_bucket_name_cannot_be_shared_by_two_type_and_key_pairs() -> None:
    assert bucket_name("mail") == "mail"
    assert bucket_name("mail", "c1") == "mail#c1"
    assert bucket_name("a:b", "c") != bucket_name("a", "b:c")


def _registry() -> Registry:
    return Registry.from_job_types([JobType("send", handler)])


@pytest.mark.parametrize("key", ["customer-42", "a@b.example", "x/y+z=", "k" * 128])
def test_a_task_carries_its_limit_key(key: str) -> None:
    job = prepare_task(TaskSpec(type="send", limit_key=key), _registry(), Limits())
    assert job.limit_key == key


@pytest.mark.parametrize("key", ["", "k" * 129, "a{b}", "a#b", "white space", "new\nline", 5])
def test_a_bad_limit_key_is_refused(key: Any) -> None:
    with pytest.raises(TaskValidationError, match="limit_key"):
        prepare_task(TaskSpec(type="send", limit_key=key), _registry(), Limits())


def test_the_http_body_accepts_limit_key() -> None:
    spec = spec_from_object({"type": "send", "limit_key": "c1"})
    assert spec.limit_key == "c1"


def test_each_limit_script_touches_one_hash_slot() -> None:
    from redis.crc import key_slot

    from workqueue.broker import Broker, BrokerConfig
    from workqueue.broker.connection import create_redis
    from workqueue.broker.limits import LimitStore

    # no connection is made: the store only names keys and registers scripts here
    broker = Broker(create_redis("redis://127.0.0.1:1/0"), BrokerConfig(prefix="wq"))
    store = LimitStore(broker)
    for bucket in ("send", "send#customer-1", "a:b#c/d"):
        assert len({key_slot(k.encode()) for k in store.bucket_keys(bucket)}) == 1
        assert f"{{limit:{bucket}}}" in store.bucket_keys(bucket)[0]
    assert store.keyed_index("send").startswith("wq:{limit:send}:")
    q = broker.keys("default")
    queue_side = [q.active, q.leases, q.scheduled, q.notify, q.stats, q.job("x")]
    assert len({key_slot(k.encode()) for k in queue_side}) == 1
