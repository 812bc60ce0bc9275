"""Every Redis state change of a job: key layout, Lua scripts and the broker API."""

from workqueue.broker.broker import Broker, BrokerConfig, FinishOp, ReserveResult
from workqueue.broker.keys import GlobalKeys, QueueKeys

__all__ = ["Broker", "BrokerConfig", "FinishOp", "GlobalKeys", "QueueKeys", "ReserveResult"]
