"""Pure ASGI middleware guarding every request: request ids, API keys, admission control.

Pure ASGI (not Starlette's BaseHTTPMiddleware) because each layer runs on the hot
path: together they cost a few microseconds per request.

- ``RequestIdMiddleware``: honours a sane ``X-Request-ID`` or makes one, stores it in
  ``scope["state"]["request_id"]`` for error bodies and logs, and echoes it.
- ``ApiKeyMiddleware``: when keys are configured, requires ``Authorization: Bearer``
  or ``X-API-Key``, compared in constant time; 401 with ``WWW-Authenticate``.
- ``ObservabilityMiddleware``: request counters and latency histograms, and one
  access-log record (JSON) per request.
- ``AdmissionMiddleware``: refuses bodies over the byte limit (from Content-Length,
  before reading; or while streaming), answers clients that stall sending their body
  with 408, and bounds the inference requests in progress (503 + ``Retry-After`` at
  once when full), so latency cannot grow without bound under overload.
"""

from __future__ import annotations

import asyncio
import hmac
import itertools
import logging
import re
import time
import uuid
from collections.abc import Iterable
from typing import Any

import orjson
from prometheus_client import Gauge
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from service.logs import FastJSONLines, access_writer
from service.metrics import Metrics

_REQUEST_ID = re.compile(rb"[A-Za-z0-9._:-]{1,128}")


def state(scope: Scope) -> dict[str, object]:
    """The per-request state dict Starlette exposes as ``request.state``."""
    value = scope.setdefault("state", {})
    assert isinstance(value, dict)
    return value


async def send_json(
    send: Send, status: int, body: dict[str, object], headers: Iterable[tuple[bytes, bytes]] = ()
) -> None:
    """Answer with a JSON body from inside a middleware."""
    content = orjson.dumps(body)
    await send(
        {
            "type": "http.response.start",
            "status": status,
            "headers": [
                (b"content-type", b"application/json"),
                (b"content-length", str(len(content)).encode()),
                *headers,
            ],
        }
    )
    await send({"type": "http.response.body", "body": content})


def _header(scope: Scope, name: bytes) -> bytes | None:
    for key, value in scope["headers"]:
        if key == name:
            return bytes(value)
    return None


class RequestIdMiddleware:
    """Give every request an id, echoed as ``X-Request-ID``.

    Made-up ids are 32 hex digits: 16 random per process, then a 16-digit counter:
    unique across workers and replicas, and cheaper than a uuid4 per request.
    """

    def __init__(self, app: ASGIApp) -> None:
        self.app = app
        self._prefix = uuid.uuid4().hex[:16]
        self._count = itertools.count()

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        sent = _header(scope, b"x-request-id")
        if sent is not None and _REQUEST_ID.fullmatch(sent):
            rid = sent
        else:
            rid = f"{self._prefix}{next(self._count):016x}".encode()
        state(scope)["request_id"] = rid.decode()

        async def send_with_id(message: Message) -> None:
            if message["type"] == "http.response.start":
                message["headers"] = [*message.get("headers", ()), (b"x-request-id", rid)]
            await send(message)

        await self.app(scope, receive, send_with_id)


class ApiKeyMiddleware:
    """Require one of ``keys`` on every path except ``open_paths``."""

    def __init__(self, app: ASGIApp, keys: Iterable[str], open_paths: Iterable[str]) -> None:
        self.app = app
        self.keys = [key.encode() for key in keys]
        paths = list(open_paths)
        self.open_paths = frozenset(p for p in paths if not p.endswith("*"))
        self.open_prefixes = tuple(p[:-1] for p in paths if p.endswith("*"))

    def _presented(self, scope: Scope) -> bytes | None:
        authorization = _header(scope, b"authorization")
        if authorization is not None and authorization[:7].lower() == b"bearer ":
            return authorization[7:].strip()
        return _header(scope, b"x-api-key")

    def _valid(self, presented: bytes) -> bool:
        # Compare with every key, always: no early exit that would time which one matched.
        matches = [hmac.compare_digest(presented, key) for key in self.keys]
        return any(matches)

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if (
            scope["type"] != "http"
            or scope["path"] in self.open_paths
            or (self.open_prefixes and scope["path"].startswith(self.open_prefixes))
            or scope["method"] == "OPTIONS"
        ):
            await self.app(scope, receive, send)
            return
        presented = self._presented(scope)
        if presented is not None and self._valid(presented):
            await self.app(scope, receive, send)
            return
        received = "no key" if presented is None else "a key that is not valid"
        await send_json(
            send,
            401,
            {
                "error": "expected an API key as 'Authorization: Bearer <key>' or "
                f"'X-API-Key: <key>', received {received}",
                "request_id": state(scope).get("request_id"),
            },
            [(b"www-authenticate", b'Bearer realm="softmax-serving"')],
        )


class BodyTooLarge(Exception):
    """Raised inside ``receive`` when the streamed body passes the limit."""


class BodyTimeout(Exception):
    """Raised inside ``receive`` when the client stalls sending its body."""


class AdmissionMiddleware:
    """Byte limit, body timeout and a bound on inference requests in progress."""

    def __init__(
        self,
        app: ASGIApp,
        *,
        max_body_bytes: int,
        body_timeout: float,
        max_inflight: int,
        retry_after: int,
        inference_paths: re.Pattern[str],
        inflight_gauge: Gauge | None = None,
    ) -> None:
        self.app = app
        self.max_body_bytes = max_body_bytes
        self.body_timeout = body_timeout
        self.max_inflight = max_inflight
        self.retry_after = str(retry_after).encode()
        self.inference_paths = inference_paths
        self.inflight = 0
        self.inflight_gauge = inflight_gauge

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        rid = state(scope).get("request_id")
        length = _header(scope, b"content-length")
        if length is not None and (not length.isdigit() or int(length) > self.max_body_bytes):
            await self._too_large(send, rid, length.decode(errors="replace"))
            return
        inference = scope["method"] == "POST" and self.inference_paths.match(scope["path"])
        if inference and self.inflight >= self.max_inflight:
            await send_json(
                send,
                503,
                {
                    "error": f"overloaded: expected at most {self.max_inflight} inference "
                    f"requests in progress, received one more; retry after "
                    f"{self.retry_after.decode()} s",
                    "request_id": rid,
                },
                [(b"retry-after", self.retry_after)],
            )
            return
        received = 0
        loop = asyncio.get_running_loop()
        deadline = loop.time() + self.body_timeout

        async def guarded_receive() -> Message:
            nonlocal received
            remaining = deadline - loop.time()
            try:
                async with asyncio.timeout(max(remaining, 0.0)):
                    message = await receive()
            except TimeoutError:
                raise BodyTimeout from None
            if message["type"] == "http.request":
                received += len(message.get("body", b""))
                if received > self.max_body_bytes:
                    raise BodyTooLarge
            return message

        started = False

        async def tracking_send(message: Message) -> None:
            nonlocal started
            started = started or message["type"] == "http.response.start"
            await send(message)

        if inference:
            self.inflight += 1
            if self.inflight_gauge is not None:
                self.inflight_gauge.inc()
        try:
            await self.app(scope, guarded_receive, tracking_send)
        except BodyTooLarge:
            if not started:
                await self._too_large(send, rid, f"more than {self.max_body_bytes}")
        except BodyTimeout:
            if not started:
                await send_json(
                    send,
                    408,
                    {
                        "error": f"expected the whole body within {self.body_timeout:g} s, "
                        "received only part of it",
                        "request_id": rid,
                    },
                    [(b"connection", b"close")],
                )
        finally:
            if inference:
                self.inflight -= 1
                if self.inflight_gauge is not None:
                    self.inflight_gauge.dec()

    async def _too_large(self, send: Send, rid: object, received: str) -> None:
        await send_json(
            send,
            413,
            {
                "error": f"expected a body of at most {self.max_body_bytes} bytes, "
                f"received {received} bytes",
                "request_id": rid,
            },
            [(b"connection", b"close")],
        )


class ObservabilityMiddleware:
    """Per request: Prometheus counters and latency, and one access-log record.

    The route template (not the raw path) is the ``endpoint`` label and the model and
    version are those the data plane served (``scope["state"]``), so labels stay bounded.
    """

    def __init__(self, app: ASGIApp, metrics: Metrics, access_log: bool) -> None:
        self.app = app
        self.metrics = metrics
        self.access_log = access_log
        self.log = logging.getLogger("service.access")
        self._fast_log: FastJSONLines | bool | None = False  # decided at the first request
        self._requests: dict[tuple[str, str, str, int], Any] = {}
        self._latency: dict[str, Any] = {}

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        started = time.perf_counter()
        status = 500

        async def observing_send(message: Message) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = message["status"]
            await send(message)

        try:
            await self.app(scope, receive, observing_send)
        finally:
            elapsed = time.perf_counter() - started
            route = scope.get("route")
            endpoint = getattr(route, "path", None) or "unmatched"
            info = state(scope)
            model = str(info.get("model", ""))
            version = str(info.get("version", ""))
            key = (endpoint, model, version, status)
            counter = self._requests.get(key)
            if counter is None:  # labels() validates and locks; look each series up once
                counter = self._requests[key] = self.metrics.requests.labels(
                    endpoint, model, version, str(status)
                )
            counter.inc()
            latency = self._latency.get(endpoint)
            if latency is None:
                latency = self._latency[endpoint] = self.metrics.request_seconds.labels(endpoint)
            latency.observe(elapsed)
            if self.access_log:
                self._log_request(scope, info, endpoint, model, version, status, elapsed)

    def _log_request(
        self,
        scope: Scope,
        info: dict[str, object],
        endpoint: str,
        model: str,
        version: str,
        status: int,
        elapsed: float,
    ) -> None:
        message = f"{scope['method']} {scope['path']} {status}"
        fields = {
            "event": "request",
            "request_id": info.get("request_id"),
            "method": scope["method"],
            "path": scope["path"],
            "endpoint": endpoint,
            "model": model or None,
            "version": version or None,
            "rows": info.get("rows"),
            "status": status,
            "latency_ms": round(elapsed * 1e3, 3),
        }
        if self._fast_log is False:
            self._fast_log = access_writer(self.log)
        if isinstance(self._fast_log, FastJSONLines):
            self._fast_log.emit(message, fields)
        else:
            self.log.info(message, extra={"fields": fields})
