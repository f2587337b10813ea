"""uvicorn's httptools protocol with a deadline for the request head (slowloris defence),
which also tells a request in progress that its client has gone.

uvicorn times out idle keep-alive connections, but not a client that connects and
then sends its request line and headers a byte at a time: such a client holds a
connection (and memory) for as long as it likes. This protocol closes a connection
whose request head is not complete within ``SERVICE_HEADER_TIMEOUT`` seconds, counted
from the connection (first request) or from the first byte of the next request on a
kept-alive connection. The body has its own deadline (``SERVICE_BODY_TIMEOUT``,
enforced in ``service.http.gateway``); the protocol marks requests whose body has already
arrived whole (the usual case: a small body comes in the same packet as the head), so
that reading it needs no timer.

When a connection is lost before its request was answered, the protocol calls the
hook the gateway left in the scope (``CLIENT_GONE``): the gateway then stops the
request, so that it no longer holds a place in the in-flight bound nor waits for the
model. Without it, a client that leaves (a load generator at its deadline, a proxy that
timed out, a browser tab closed) leaves its requests counted until the model has
computed them, and the next clients are refused 503 while they stay within the bound.

The class is named by import path (``service.http.head_deadline:HeaderTimeoutProtocol``) so worker
processes load it too; it reads its timeout from the environment the CLI exports.
"""

from __future__ import annotations

import asyncio
import logging
import os
from collections.abc import Callable
from typing import Any, cast

from uvicorn.protocols.http.httptools_impl import HttpToolsProtocol

log = logging.getLogger("service.http.head_deadline")

#: Scope extension set once the request's whole body has arrived (see ``service.http.gateway``).
BODY_COMPLETE = "softmax-serving.body_complete"
#: Scope extension: a callable the protocol calls when the client leaves before its answer.
CLIENT_GONE = "softmax-serving.client_gone"


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

    def data_received(self, data: bytes) -> None:
        """Parse ``data``; then start or stop the head's clock and mark a body that is whole.

        Checked once per read, after the parser has called back, rather than in the
        per-request callbacks: a request whose head and body come in one read (nearly
        all of them) then costs no timer at all. The newest request's head is complete
        when the parser has made its cycle (``cycle.scope is scope``); a request begun
        but not complete (the first byte of the next request on a kept-alive
        connection) starts the clock.
        """
        super().data_received(data)
        cycle = self.cycle
        if cycle is not None and cycle.scope is self.scope:  # the newest head is in
            if self._head_timer is not None:
                self._cancel_head_timer()
            if not cycle.more_body:
                scope = cast(dict[str, Any], cycle.scope)
                scope.setdefault("extensions", {})[BODY_COMPLETE] = True
        elif self.scope is not None and self._head_timer is None:  # a head begun, not done
            self._start_head_timer()

    def connection_lost(self, exc: Exception | None) -> None:
        """Drop the timer with the connection; tell an unanswered request its client left."""
        self._cancel_head_timer()
        cycle = self.cycle
        if cycle is not None and not cycle.response_complete:
            extensions = cast(dict[str, Any], cycle.scope).get("extensions", {})
            gone: Callable[[], None] | None = extensions.get(CLIENT_GONE)
            if gone is not None:
                gone()
        super().connection_lost(exc)
