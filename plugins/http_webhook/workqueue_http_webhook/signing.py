"""Standard Webhooks signatures (https://www.standardwebhooks.com/).

A secret is ``whsec_`` followed by the base64 of the key bytes. Each request carries

* ``webhook-id``: the message id (here the job id: the same on every retry, so the receiver
  can drop duplicates),
* ``webhook-timestamp``: integer Unix seconds of this attempt,
* ``webhook-signature``: ``v1,`` + base64(HMAC-SHA256(key, f"{id}.{timestamp}.".encode() + body)).

Several secrets (space-separated, for rotation) give several space-separated signatures; a
receiver accepts the request when any one of them verifies.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import hmac

__all__ = [
    "SECRET_PREFIX",
    "SECRET_VARIABLE",
    "parse_secrets",
    "signature_headers",
    "signatures",
]

SECRET_VARIABLE = "WORKQUEUE_WEBHOOK_SECRET"  # noqa: S105 - a variable name, not a secret
SECRET_PREFIX = "whsec_"  # noqa: S105 - the format's prefix, not a secret
MIN_KEY_BYTES = 16


def parse_secrets(value: str | None) -> tuple[bytes, ...]:
    """Decode ``WORKQUEUE_WEBHOOK_SECRET``; raise ``ValueError`` (without the secret) if invalid."""
    keys: list[bytes] = []
    for position, secret in enumerate((value or "").split(), start=1):
        if not secret.startswith(SECRET_PREFIX):
            raise ValueError(f"{SECRET_VARIABLE}: secret {position} must start with 'whsec_'")
        try:
            key = base64.b64decode(secret[len(SECRET_PREFIX) :], validate=True)
        except (binascii.Error, ValueError):
            raise ValueError(
                f"{SECRET_VARIABLE}: secret {position} is not valid base64 after 'whsec_'"
            ) from None
        if len(key) < MIN_KEY_BYTES:
            raise ValueError(
                f"{SECRET_VARIABLE}: secret {position} is shorter than {MIN_KEY_BYTES} bytes"
            )
        keys.append(key)
    return tuple(keys)


def signatures(keys: tuple[bytes, ...], message_id: str, timestamp: int, body: bytes) -> str:
    """The ``webhook-signature`` value: one ``v1,<base64>`` per key, space-separated."""
    signed = f"{message_id}.{timestamp}.".encode() + body
    return " ".join(
        "v1," + base64.b64encode(hmac.new(key, signed, hashlib.sha256).digest()).decode("ascii")
        for key in keys
    )


def signature_headers(
    keys: tuple[bytes, ...], message_id: str, timestamp: int, body: bytes
) -> dict[str, str]:
    """The three Standard Webhooks headers for exactly these body bytes (empty without keys)."""
    if not keys:
        return {}
    return {
        "webhook-id": message_id,
        "webhook-timestamp": str(timestamp),
        "webhook-signature": signatures(keys, message_id, timestamp, body),
    }
