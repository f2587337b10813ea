"""The gateway: the one ASGI layer every request passes, and the server of the hot paths.

::

    uvicorn -> [CORSMiddleware, when origins are configured] -> Gateway
                 Gateway -> hot endpoint (POST /predict, /softmax, :predict, :classify, /infer)
                 Gateway -> FastAPI's middleware stack -> router -> every other route

For each HTTP request, in one pass over its headers and one wrapper around it:

- **request id**: honours a sane ``X-Request-ID`` or makes one, stores it in
  ``scope["state"]["request_id"]`` for error bodies and logs, and echoes it;
- **API keys** (when configured): ``Authorization: Bearer`` or ``X-API-Key``, compared
  in constant time; 401 with ``WWW-Authenticate``; open paths and preflights pass;
- **admission**: bodies over the byte limit are refused from ``Content-Length`` before
  reading (or while streaming), clients that stall sending their body get 408, and
  inference requests in progress are bounded (503 + ``Retry-After`` at once when full),
  so latency cannot grow without bound under overload;
- **observability**: request counters and latency histograms labelled by route
  template and the model and version that served (``scope["state"]``), and one
  access-log record (JSON) per request.

Then the hot endpoints, the ``DirectRoute`` s of the protocols (``service.protocols``),
are called directly. For a one-row prediction FastAPI's middleware
stack, router walk and exception middleware cost more than the prediction itself; the
endpoints are the same functions the router would call (FastAPI still documents them
from their routes), they raise the same ``ServiceError`` s and get the same error
bodies (``service.http.error_responses``). Every other request goes to the FastAPI application.
"""

from __future__ import annotations

import asyncio
import hmac
import itertools
import logging
import time
import uuid
from collections.abc import AsyncGenerator, Iterable
from typing import Any

import orjson
from starlette.requests import ClientDisconnect, Request
from starlette.responses import Response
from starlette.routing import BaseRoute
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from service.dataplane import served_record
from service.errors import ServiceError
from service.http.error_responses import error_response, unexpected_response
from service.http.head_deadline import BODY_COMPLETE, CLIENT_GONE
from service.http.routing import DirectRoute
from service.operations.logs import FastJSONLines, access_writer
from service.operations.metrics import Count, Metrics, Observe
from service.settings import Settings

_ID_CHARS = frozenset(b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789._:-")


def _sane_id(value: bytes) -> bool:
    """``[A-Za-z0-9._:-]{1,128}``: safe to echo in a header and to write to a log."""
    return 0 < len(value) <= 128 and _ID_CHARS.issuperset(value)


class BodyTooLarge(Exception):
    """Raised inside ``receive`` when the streamed body passes the limit."""


class BodyTimeout(Exception):
    """Raised inside ``receive`` when the client stalls sending its body."""


#: The status recorded (never sent) when the client leaves before its body arrives
#: (nginx's convention).
CLIENT_CLOSED = 499


class ReadRequest(Request):
    """A request whose body the gateway has already read."""

    def __init__(self, scope: Scope, body: bytes) -> None:
        super().__init__(scope)
        self._read_body = body

    async def body(self) -> bytes:
        """The body, read within the gateway's limits."""
        return self._read_body

    async def stream(self) -> AsyncGenerator[bytes, None]:
        """The body as one chunk."""
        yield self._read_body


def _body(message: Message) -> tuple[bytes, bool]:
    """A body chunk and whether more follows; ``ClientDisconnect`` if the client left."""
    if message["type"] != "http.request":
        raise ClientDisconnect
    return message.get("body", b""), message.get("more_body", False)


class _Leaving:
    """The ``CLIENT_GONE`` hook of one request: cancels its task, and remembers why."""

    __slots__ = ("left", "task")

    def __init__(self, task: asyncio.Task[Any] | None) -> None:
        self.task = task
        self.left = False

    def __call__(self) -> None:
        if self.task is not None and not self.left:
            self.left = True
            self.task.cancel()


class HotRoutes:
    """The POST routes the gateway serves itself: exact paths by dict, templates by regex."""

    def __init__(self, routes: Iterable[BaseRoute]) -> None:
        self.exact: dict[str, DirectRoute] = {}
        self.templated: list[DirectRoute] = []
        for route in routes:
            if isinstance(route, DirectRoute) and "POST" in (route.methods or ()):
                if route.param_convertors:
                    self.templated.append(route)
                else:
                    self.exact.setdefault(route.path, route)

    def match(self, path: str) -> tuple[DirectRoute, dict[str, Any]] | None:
        """The route for ``path`` and its path parameters, in routing-table order."""
        route = self.exact.get(path)
        if route is not None:
            return route, {}
        for route in self.templated:
            found = route.path_regex.match(path)
            if found is not None:
                convert = route.param_convertors
                params = {k: convert[k].convert(v) for k, v in found.groupdict().items()}
                return route, params
        return None


class Gateway:
    """Request ids, API keys, admission control, metrics and access logs; the hot paths."""

    def __init__(
        self, app: ASGIApp, routes: Iterable[BaseRoute], settings: Settings, metrics: Metrics
    ) -> None:
        self.app = app
        self.hot = HotRoutes(routes)
        self.metrics = metrics
        # request ids: 16 random hex digits per process, then a counter: unique across
        # workers and replicas, and cheaper than a uuid4 per request
        self._id_prefix = uuid.uuid4().hex[:16]
        self._id_count = itertools.count()
        # API keys
        self.keys = [key.get_secret_value().encode() for key in settings.api_keys]
        self.open_paths = frozenset(p for p in settings.open_paths if not p.endswith("*"))
        self.open_prefixes = tuple(p[:-1] for p in settings.open_paths if p.endswith("*"))
        # admission
        self.max_body_bytes = settings.max_body_bytes
        self.body_timeout = settings.body_timeout
        self.max_inflight = settings.max_inflight
        self.retry_after = str(settings.retry_after).encode()
        self.inflight = 0
        self._count_inflight = metrics.count_inflight(lambda: self.inflight)
        # observability
        self.access_log = settings.access_log
        self.log = logging.getLogger("service.access")
        self._fast_log: FastJSONLines | bool | None = False  # decided at the first request
        self._requests: dict[tuple[str, str, str, int], Count] = {}
        self._latency: dict[str, Observe] = {}

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            try:
                await self.app(scope, receive, send)
            finally:
                if scope["type"] == "lifespan" and isinstance(self._fast_log, FastJSONLines):
                    self._fast_log.flush()  # the access lines still buffered, at shutdown
            return
        started = time.perf_counter()
        info = scope.get("state")
        if info is None:
            info = scope["state"] = {}
        sent_id = length = authorization = api_key = None
        for key, value in scope["headers"]:
            if key == b"content-length":
                length = value
            elif key == b"x-request-id":
                sent_id = value
            elif key == b"authorization":
                authorization = value
            elif key == b"x-api-key":
                api_key = value
            elif key == b"x-softmax-monitor" and value.lower() == b"off":
                info["unmonitored"] = True  # answered and counted, but not watched
        if sent_id is not None and _sane_id(sent_id):
            rid = bytes(sent_id)
        else:
            rid = f"{self._id_prefix}{next(self._id_count):016x}".encode()
        info["request_id"] = rid.decode()
        served_record.set(info)  # the data plane notes here what served the request
        status = 500
        try:
            refused = self.keys and self._key_problem(scope, authorization, api_key)
            if refused:
                status = await self._refuse(
                    send,
                    rid,
                    401,
                    "expected an API key as 'Authorization: Bearer <key>' or "
                    f"'X-API-Key: <key>', received {refused}",
                    [(b"www-authenticate", b'Bearer realm="softmax-serving"')],
                )
            elif length is not None and (not length.isdigit() or int(length) > self.max_body_bytes):
                status = await self._too_large(send, rid, length.decode(errors="replace"))
            else:
                hot = self.hot.match(scope["path"]) if scope["method"] == "POST" else None
                if hot is None:
                    status = await self._forward(scope, receive, send, rid)
                elif self.inflight >= self.max_inflight:
                    status = await self._refuse(
                        send,
                        rid,
                        503,
                        f"overloaded: expected at most {self.max_inflight} inference "
                        "requests in progress, received one more; retry after "
                        f"{self.retry_after.decode()} s",
                        [(b"retry-after", self.retry_after)],
                    )
                else:
                    status = await self._serve(hot[0], hot[1], scope, receive, send, rid)
        finally:
            self._observe(scope, info, status, time.perf_counter() - started)

    # --- API keys -------------------------------------------------------------------

    def _key_problem(
        self, scope: Scope, authorization: bytes | None, api_key: bytes | None
    ) -> str | None:
        """None when the request may pass, else what it presented instead of a valid key."""
        path = scope["path"]
        if (
            path in self.open_paths
            or (self.open_prefixes and path.startswith(self.open_prefixes))
            or scope["method"] == "OPTIONS"
        ):
            return None
        if authorization is not None and authorization[:7].lower() == b"bearer ":
            presented: bytes | None = authorization[7:].strip()
        else:
            presented = api_key
        if presented is None:
            return "no key"
        # Compare with every key, always: no early exit that would time which one matched.
        matches = [hmac.compare_digest(presented, key) for key in self.keys]
        return None if any(matches) else "a key that is not valid"

    # --- admission ------------------------------------------------------------------

    def _guard(self, receive: Receive) -> Receive:
        """``receive`` with the body's deadline and byte limit."""
        loop = asyncio.get_running_loop()
        deadline = loop.time() + self.body_timeout
        limit = self.max_body_bytes
        received = 0

        async def guarded_receive() -> Message:
            nonlocal received
            try:
                async with asyncio.timeout_at(deadline):
                    message = await receive()
            except TimeoutError:
                raise BodyTimeout from None
            if message["type"] == "http.request":
                received += len(message.get("body", b""))
                if received > limit:
                    raise BodyTooLarge
            return message

        return guarded_receive

    async def _refuse(
        self,
        send: Send,
        rid: bytes,
        status: int,
        error: str,
        headers: Iterable[tuple[bytes, bytes]] = (),
    ) -> int:
        """Answer ``{"error", "request_id"}`` from the gateway itself."""
        content = orjson.dumps({"error": error, "request_id": rid.decode()})
        await send(
            {
                "type": "http.response.start",
                "status": status,
                "headers": [
                    (b"content-type", b"application/json"),
                    (b"content-length", str(len(content)).encode()),
                    (b"x-request-id", rid),
                    *headers,
                ],
            }
        )
        await send({"type": "http.response.body", "body": content})
        return status

    async def _too_large(self, send: Send, rid: bytes, received: str) -> int:
        return await self._refuse(
            send,
            rid,
            413,
            f"expected a body of at most {self.max_body_bytes} bytes, received {received} bytes",
            [(b"connection", b"close")],
        )

    async def _timed_out(self, send: Send, rid: bytes) -> int:
        return await self._refuse(
            send,
            rid,
            408,
            f"expected the whole body within {self.body_timeout:g} s, received only part of it",
            [(b"connection", b"close")],
        )

    # --- serving --------------------------------------------------------------------

    async def _read(self, scope: Scope, receive: Receive) -> bytes:
        """The whole body within the deadline and the byte limit.

        A body the protocol saw arrive whole (``BODY_COMPLETE``) is there to take: no
        timer for it; anything else is read under the deadline.
        """
        if scope.get("extensions", {}).get(BODY_COMPLETE):
            body, more = _body(await receive())
            if not more:
                if len(body) > self.max_body_bytes:
                    raise BodyTooLarge
                return body
            chunks = [body]
        else:
            chunks = []
        size = sum(map(len, chunks))
        try:
            async with asyncio.timeout(self.body_timeout):
                more = True
                while more:
                    chunk, more = _body(await receive())
                    chunks.append(chunk)
                    size += len(chunk)
                    if size > self.max_body_bytes:
                        raise BodyTooLarge
        except TimeoutError:
            raise BodyTimeout from None
        return b"".join(chunks)

    async def _serve(
        self,
        route: DirectRoute,
        params: dict[str, Any],
        scope: Scope,
        receive: Receive,
        send: Send,
        rid: bytes,
    ) -> int:
        """Call a hot endpoint directly, counted against the in-flight bound.

        A request counts from its admission until its answer is ready or its client has
        gone: when the connection is lost first, the protocol calls the ``CLIENT_GONE``
        hook, which cancels this task. The request then leaves the bound at once, and
        if it still waits for the model (queued for a batch) it is dropped there.
        """
        scope["route"] = route
        scope["path_params"] = params
        self.inflight += 1
        if self._count_inflight:
            self.metrics.inflight.inc()
        extensions = scope.get("extensions")
        if extensions is None:
            extensions = scope["extensions"] = {}
        leaving = _Leaving(asyncio.current_task())
        extensions[CLIENT_GONE] = leaving
        try:
            request = ReadRequest(scope, await self._read(scope, receive))
            response: Response = await route.endpoint(request=request, **params)
        except ServiceError as exc:
            response = error_response(exc, Request(scope))
        except BodyTooLarge:
            return await self._too_large(send, rid, f"more than {self.max_body_bytes}")
        except BodyTimeout:
            return await self._timed_out(send, rid)
        except ClientDisconnect:
            return CLIENT_CLOSED  # nobody to answer
        except asyncio.CancelledError:
            task = leaving.task
            if not leaving.left or task is None:
                raise  # the server is stopping: not ours to swallow
            task.uncancel()
            return CLIENT_CLOSED  # nobody to answer
        except Exception as exc:  # the same generic 500 as every other route's
            response = unexpected_response(Request(scope), exc)
        finally:
            extensions[CLIENT_GONE] = None  # answered (or gone): nothing left to stop
            self.inflight -= 1
            if self._count_inflight:
                self.metrics.inflight.dec()
        headers = response.raw_headers
        headers.append((b"x-request-id", rid))
        await send(
            {"type": "http.response.start", "status": response.status_code, "headers": headers}
        )
        await send({"type": "http.response.body", "body": response.body})
        return response.status_code

    async def _forward(self, scope: Scope, receive: Receive, send: Send, rid: bytes) -> int:
        """Hand the request to the FastAPI application."""
        status = 500
        started = False

        async def gateway_send(message: Message) -> None:
            nonlocal status, started
            if message["type"] == "http.response.start":
                started = True
                status = message["status"]
                message["headers"] = [*message.get("headers", ()), (b"x-request-id", rid)]
            await send(message)

        try:
            await self.app(scope, self._guard(receive), gateway_send)
        except BodyTooLarge:
            if not started:
                return await self._too_large(send, rid, f"more than {self.max_body_bytes}")
        except BodyTimeout:
            if not started:
                return await self._timed_out(send, rid)
        return status

    # --- observability --------------------------------------------------------------

    def _observe(self, scope: Scope, info: dict[str, Any], status: int, elapsed: float) -> None:
        route = scope.get("route")
        endpoint = getattr(route, "path", None) or "unmatched"
        model = str(info.get("model", ""))
        version = str(info.get("version", ""))
        key = (endpoint, model, version, status)
        counter = self._requests.get(key)
        if counter is None:  # labels() validates and locks; look each series up once
            counter = self._requests[key] = self.metrics.count(
                self.metrics.requests, endpoint, model, version, str(status)
            )
        counter.inc()
        latency = self._latency.get(endpoint)
        if latency is None:
            latency = self._latency[endpoint] = self.metrics.observations(
                self.metrics.request_seconds, endpoint
            )
        latency.observe(elapsed)
        if self.access_log and self.log.isEnabledFor(logging.INFO):  # else build no record
            self._log_request(scope, info, endpoint, model, version, status, elapsed)

    def _log_request(
        self,
        scope: Scope,
        info: dict[str, Any],
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
