"""Every Redis state change of a job: key layout, Lua scripts and the broker API.

The names are loaded on first use (PEP 562), so ``workqueue.broker.config`` and
``workqueue.broker.keys`` can be imported without the Redis client.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from workqueue._lazy import lazy_getattr

if TYPE_CHECKING:
    from workqueue.broker.broker import Broker, ReserveResult
    from workqueue.broker.config import BrokerConfig
    from workqueue.broker.contract import FinishOp
    from workqueue.broker.keys import GlobalKeys, QueueKeys

__all__ = ["Broker", "BrokerConfig", "FinishOp", "GlobalKeys", "QueueKeys", "ReserveResult"]

_WHERE = {
    "Broker": "workqueue.broker.broker",
    "ReserveResult": "workqueue.broker.broker",
    "FinishOp": "workqueue.broker.broker",
    "BrokerConfig": "workqueue.broker.config",
    "GlobalKeys": "workqueue.broker.keys",
    "QueueKeys": "workqueue.broker.keys",
}


__getattr__ = lazy_getattr(__name__, _WHERE)
