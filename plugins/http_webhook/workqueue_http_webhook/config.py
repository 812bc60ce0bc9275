"""http_webhook settings from ``WORKQUEUE_WEBHOOK_*`` environment variables, and fixed limits."""

from __future__ import annotations

import os
from collections.abc import Mapping
from dataclasses import dataclass, field

from workqueue import PermanentError
from workqueue_http_webhook.signing import SECRET_VARIABLE, parse_secrets
from workqueue_http_webhook.ssrf import ALLOW_VARIABLE, DestinationPolicy

__all__ = [
    "DEFAULT_TIMEOUT_SECONDS",
    "MAX_RESPONSE_BYTES",
    "MAX_RETRY_AFTER_SECONDS",
    "MAX_TIMEOUT_SECONDS",
    "WebhookConfig",
    "WebhookConfigError",
    "effective_timeout",
]

#: Total time for one request (connect, send, receive) when the payload sets no ``timeout``.
DEFAULT_TIMEOUT_SECONDS = 30.0
#: A payload's ``timeout`` is capped at this many seconds.
MAX_TIMEOUT_SECONDS = 120.0
#: A ``Retry-After`` further away than this is shortened to it.
MAX_RETRY_AFTER_SECONDS = 3600.0
#: At most this much of a response body is read; the rest is discarded with the connection.
MAX_RESPONSE_BYTES = 64 * 1024


class WebhookConfigError(PermanentError):
    """Raised when a ``WORKQUEUE_WEBHOOK_*`` variable is unusable; such a job fails for good."""


@dataclass(frozen=True, slots=True)
class WebhookConfig:
    """The signing keys and the SSRF policy of one worker process."""

    keys: tuple[bytes, ...] = field(default=(), repr=False)
    policy: DestinationPolicy = field(default_factory=DestinationPolicy)

    @classmethod
    def from_env(cls, env: Mapping[str, str] | None = None) -> WebhookConfig:
        """Read ``WORKQUEUE_WEBHOOK_SECRET`` and ``WORKQUEUE_WEBHOOK_ALLOW`` (both optional)."""
        environ = os.environ if env is None else env
        try:
            keys = parse_secrets(environ.get(SECRET_VARIABLE))
            policy = DestinationPolicy.from_allow_list(environ.get(ALLOW_VARIABLE))
        except ValueError as exc:
            raise WebhookConfigError(str(exc)) from None
        return cls(keys=keys, policy=policy)


def effective_timeout(requested_seconds: float | None, job_timeout_seconds: float) -> float:
    """The payload's timeout (or the default), capped, and never beyond the job's own timeout."""
    wanted = DEFAULT_TIMEOUT_SECONDS if requested_seconds is None else requested_seconds
    return min(wanted, MAX_TIMEOUT_SECONDS, job_timeout_seconds)
