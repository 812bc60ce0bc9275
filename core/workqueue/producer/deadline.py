"""A request deadline for uvicorn's HTTP protocols: slow or silent clients are cut off.

uvicorn closes a keep-alive connection that stays idle after a response, but has no timeout for
reading a request: a client that opens a connection and sends nothing, sends its headers a byte
at a time (slow loris) or announces a ``Content-Length`` larger than what it sends holds its
connection, and a task waiting for the body, for as long as it likes.

:func:`with_request_deadline` wraps uvicorn's protocol class (h11 or httptools, whichever
``"auto"`` picks) so that every request must arrive in full, head and body, within ``seconds``
of the connection being opened or of the previous response being sent. Otherwise the connection
is closed (the handler waiting for the body sees a disconnect). A request that has arrived may
take as long as its handler needs.
"""

from __future__ import annotations

import asyncio
from typing import Any

__all__ = ["DEFAULT_REQUEST_TIMEOUT_S", "protocol_with_deadline", "with_request_deadline"]

#: how long a client may take to send one whole request (head and body)
DEFAULT_REQUEST_TIMEOUT_S = 15.0


def with_request_deadline(base: type[asyncio.Protocol], seconds: float) -> type[asyncio.Protocol]:
    """A subclass of uvicorn's HTTP protocol ``base`` that enforces the request deadline.

    Relies on what both of uvicorn's protocols share: ``self.cycle`` (the request being served,
    replaced when the next request's head has been parsed, ``None`` before the first), its
    ``more_body`` and ``response_complete`` flags, and ``on_response_complete``.
    """
    parent: Any = base

    class RequestDeadlineProtocol(parent):  # type: ignore[misc]
        _wq_timer: asyncio.TimerHandle | None = None

        def connection_made(self, transport: asyncio.BaseTransport) -> None:
            super().connection_made(transport)
            self._wq_arm(None)

        def on_response_complete(self) -> None:
            # A pipelined request may be parsed (and replace self.cycle) inside super().
            done = self.cycle
            super().on_response_complete()
            self._wq_arm(done)

        def connection_lost(self, exc: Exception | None) -> None:
            self._wq_disarm()
            super().connection_lost(exc)

        def _wq_disarm(self) -> None:
            if self._wq_timer is not None:
                self._wq_timer.cancel()
                self._wq_timer = None

        def _wq_arm(self, done: object) -> None:
            self._wq_disarm()
            if not self.transport.is_closing():
                self._wq_timer = asyncio.get_running_loop().call_later(
                    seconds, self._wq_expire, done
                )

        def _wq_expire(self, done: object) -> None:
            self._wq_timer = None
            if self.transport.is_closing():
                return
            cycle = self.cycle
            head_missing = cycle is None or cycle is done
            body_missing = not head_missing and cycle.more_body and not cycle.response_complete
            if head_missing or body_missing:
                self.transport.close()

    RequestDeadlineProtocol.__name__ = f"RequestDeadline{base.__name__}"
    RequestDeadlineProtocol.__qualname__ = RequestDeadlineProtocol.__name__
    return RequestDeadlineProtocol


def protocol_with_deadline(http: str, seconds: float) -> type[asyncio.Protocol]:
    """uvicorn's HTTP protocol named ``http`` (``"auto"``, ``"h11"``, ``"httptools"``) with the
    request deadline, to pass as ``uvicorn.Config(http=...)``."""
    from uvicorn.config import HTTP_PROTOCOLS
    from uvicorn.importer import import_from_string

    base: type[asyncio.Protocol] = import_from_string(HTTP_PROTOCOLS.get(http, http))
    return with_request_deadline(base, seconds)
