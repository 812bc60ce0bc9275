"""The payload of an ``http_webhook`` job, validated by the producer before the job is queued.

Checked here (so a bad payload is a 422 at enqueue, never a failed job): the URL's shape (http or
https, a host, no user:password part, no spaces or control characters), the method, header names
and values (no CR/LF or other control characters, no hop-by-hop, ``Host``, ``Content-Length`` or
signature headers), ``json`` and ``body`` not both, and a positive ``timeout``.

Where the URL leads is checked by the worker, when it connects (:mod:`.ssrf`).
"""

from __future__ import annotations

import math
import re
from typing import Any

import httpx
import msgspec

__all__ = [
    "ALLOWED_METHODS",
    "FORBIDDEN_HEADERS",
    "MAX_HEADERS",
    "MAX_URL_LENGTH",
    "WebhookPayload",
    "check_url",
]

ALLOWED_METHODS = frozenset({"GET", "POST", "PUT", "PATCH", "DELETE"})
MAX_URL_LENGTH = 8192
MAX_HEADERS = 64
MAX_HEADER_VALUE_LENGTH = 8192
#: Headers a payload may not set: connection-level (hop-by-hop) ones, the ones the HTTP client
#: derives from the URL and body, and the signature headers this plugin writes itself.
FORBIDDEN_HEADERS = frozenset(
    {
        "connection",
        "keep-alive",
        "transfer-encoding",
        "te",
        "trailer",
        "upgrade",
        "host",
        "content-length",
        "webhook-id",
        "webhook-timestamp",
        "webhook-signature",
    }
)

_TOKEN = re.compile(r"[!#$%&'*+.^_`|~0-9A-Za-z-]{1,256}")
_BAD_VALUE_CHARS = re.compile(r"[\x00-\x08\x0a-\x1f\x7f]")
_BAD_URL_CHARS = re.compile(r"[\x00-\x20\x7f-\x9f\u2028\u2029]")


def check_url(url: str) -> httpx.URL:
    """Parse ``url`` as the HTTP client will; raise ``ValueError`` if it may not be requested."""
    if len(url) > MAX_URL_LENGTH:
        raise ValueError(f"url: longer than {MAX_URL_LENGTH} characters")
    if _BAD_URL_CHARS.search(url):
        raise ValueError("url: spaces and control characters are not allowed (percent-encode them)")
    try:
        parsed = httpx.URL(url)
    except (httpx.InvalidURL, ValueError, TypeError):
        raise ValueError("url: not a valid URL") from None
    if parsed.scheme not in ("http", "https"):
        raise ValueError("url: only http:// and https:// URLs are allowed")
    if parsed.userinfo:
        raise ValueError(
            "url: credentials in the URL are not allowed; send an Authorization header"
        )
    if not parsed.host:
        raise ValueError("url: the URL names no host")
    return parsed


def _check_headers(headers: dict[str, str]) -> None:
    if len(headers) > MAX_HEADERS:
        raise ValueError(f"headers: at most {MAX_HEADERS} headers")
    seen: set[str] = set()
    for position, (name, value) in enumerate(headers.items(), start=1):
        if not _TOKEN.fullmatch(name):
            raise ValueError(f"headers: name {position} is not a valid header name")
        lowered = name.lower()
        if lowered in FORBIDDEN_HEADERS or lowered.startswith("proxy-"):
            raise ValueError(f"headers: {name!r} cannot be set by a payload")
        if lowered in seen:
            raise ValueError(f"headers: {name!r} is given twice")
        seen.add(lowered)
        if _BAD_VALUE_CHARS.search(value):
            raise ValueError(f"headers: the value of {name!r} contains a line break or control")
        if not value.isascii():
            raise ValueError(f"headers: the value of {name!r} must be ASCII")
        if value != value.strip(" \t"):
            raise ValueError(f"headers: the value of {name!r} starts or ends with whitespace")
        if len(value) > MAX_HEADER_VALUE_LENGTH:
            raise ValueError(f"headers: the value of {name!r} is too long")


class WebhookPayload(msgspec.Struct, kw_only=True, forbid_unknown_fields=True):
    """One HTTP request. ``json`` (any JSON value) or ``body`` (text) is the request body.

    ``timeout`` is the total time in seconds for connecting, sending and receiving; the worker
    caps it (see the README).
    """

    url: str
    method: str = "POST"
    headers: dict[str, str] = msgspec.field(default_factory=dict)
    json: Any = msgspec.UNSET
    body: str | None = None
    timeout: float | None = None

    def __post_init__(self) -> None:
        check_url(self.url)
        method = self.method.upper()
        if method not in ALLOWED_METHODS:
            allowed = ", ".join(sorted(ALLOWED_METHODS))
            raise ValueError(f"method: must be one of {allowed}")
        self.method = method
        _check_headers(self.headers)
        if self.json is not msgspec.UNSET and self.body is not None:
            raise ValueError("json, body: give one of them, not both")
        if self.timeout is not None and not (math.isfinite(self.timeout) and self.timeout > 0):
            raise ValueError("timeout: must be a number of seconds above 0")

    def content(self) -> bytes:
        """The exact request body bytes (what is sent and what is signed)."""
        if self.json is not msgspec.UNSET:
            return msgspec.json.encode(self.json)
        if self.body is not None:
            return self.body.encode("utf-8")
        return b""

    def content_type(self) -> str | None:
        """The Content-Type to send when the payload's headers do not set one."""
        if self.json is not msgspec.UNSET:
            return "application/json"
        if self.body is not None:
            return "text/plain; charset=utf-8"
        return None
