"""uvicorn's httptools protocol with a deadline for the request head (slowloris defence).

uvicorn times out idle keep-alive connections, but not a client that connects and
then sends its request line and headers a byte at a time: such a client holds a
connection (and memory) for as long as it likes. This protocol closes a connection
whose request head is not complete within ``SERVICE_HEADER_TIMEOUT`` seconds, counted
from the connection (first request) or from the first byte of the next request on a
kept-alive connection. The body has its own deadline (``SERVICE_BODY_TIMEOUT``,
enforced in ``service.http.gateway``); the protocol marks requests whose body has already
arrived whole (the usual case: a small body comes in the same packet as the head), so
that reading it needs no timer.

The class is named by import path (``service.http.head_deadline:HeaderTimeoutProtocol``) so worker
processes load it too; it reads its timeout from the environment the CLI exports.
"""

from __future__ import annotations

import asyncio
import logging
import os

from uvicorn.protocols.http.httptools_impl import HttpToolsProtocol

log = logging.getLogger("service.http.head_deadline")

#: Scope extension set once the request's whole body has arrived (see ``service.http.gateway``).
BODY_COMPLETE = "softmax-serving.body_complete"


def header_timeout() -> float:
    """Seconds allowed for a request head (``SERVICE_HEADER_TIMEOUT``, default 10)."""
    return float(os.environ.get("SERVICE_HEADER_TIMEOUT", "10"))


class HeaderTimeoutProtocol(HttpToolsProtocol):
    """``HttpToolsProtocol`` that closes connections whose request head stalls."""

    _head_timer: asyncio.TimerHandle | None = None
    _timeout: float | None = None

    def _start_head_timer(self) -> None:
        if self._timeout is None:
            self._timeout = header_timeout()
        self._head_timer = self.loop.call_later(self._timeout, self._head_expired)

    def _cancel_head_timer(self) -> None:
        if self._head_timer is not None:
            self._head_timer.cancel()
            self._head_timer = None

    def _head_expired(self) -> None:
        self._head_timer = None
        if not self.transport.is_closing():
            log.info(
                "closing a connection whose request head took over %g s",
                self._timeout,
                extra={"fields": {"event": "head_timeout", "client": str(self.client)}},
            )
            self.transport.close()

    def connection_made(self, transport: asyncio.Transport) -> None:  # type: ignore[override]
        """Start the clock for the first request's head."""
        super().connection_made(transport)
        self._start_head_timer()

    def on_message_begin(self) -> None:
        """A request starts: its head must be complete in time."""
        super().on_message_begin()
        if self._head_timer is None:  # the next request on a kept-alive connection
            self._start_head_timer()

    def on_headers_complete(self) -> None:
        """The head is in: the body's deadline is the middleware's business."""
        self._cancel_head_timer()
        super().on_headers_complete()

    def on_message_complete(self) -> None:
        """The whole body is in: say so in the scope, so the app reads it with no timer."""
        super().on_message_complete()
        cycle = getattr(self, "cycle", None)
        if cycle is not None:
            cycle.scope.setdefault("extensions", {})[BODY_COMPLETE] = True

    def connection_lost(self, exc: Exception | None) -> None:
        """Drop the timer with the connection."""
        self._cancel_head_timer()
        super().connection_lost(exc)
