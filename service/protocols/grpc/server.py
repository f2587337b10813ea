"""The gRPC listener: its services, what every call passes, and its lifecycle.

::

    grpc.aio server (the uvicorn process's event loop, SERVICE_GRPC_PORT)
      ├── grpc.health.v1.Health ............ Check, Watch: SERVING once /health/ready is 200
      └── Calls (every other RPC, once) ..... request id, API key, in-flight bound,
            │                                 status code, metrics, access log
            ├── inference.GRPCInferenceService (service.protocols.grpc.inference)
            ├── tensorflow.serving.PredictionService (service.protocols.grpc.prediction)
            └── tensorflow.serving.ModelService ...... GetModelStatus (the same module)
                  └── DataPlane

``Calls`` is to gRPC what ``service.http.gateway.Gateway`` is to HTTP:

- **request id**: the ``x-request-id`` metadata when sane, else a new one; in the
  per-request record the data plane fills (``served_record``), the access log and the
  trailing metadata of the answer;
- **API keys** (when configured): ``authorization: Bearer <key>`` or ``x-api-key`` metadata,
  compared in constant time; ServerLive, ServerReady and the health service need none,
  as ``/v2/health/*`` and ``/health/*`` are open over HTTP;
- **admission**: ModelInfer, Predict and Classify calls in progress are bounded by
  ``SERVICE_MAX_INFLIGHT`` (a bound of this listener's own, beside HTTP's); messages above
  ``SERVICE_GRPC_MAX_MESSAGE_BYTES`` are refused by gRPC itself (RESOURCE_EXHAUSTED);
  a client's deadline cancels its call, wherever it waits;
- **errors**: a ``ServiceError`` becomes the status code of its HTTP status (``CODES``)
  with the same message; anything else is logged with the request id and answered
  INTERNAL without details, as HTTP answers 500;
- **observability**: ``softmax_grpc_requests_total`` (method, model, version, code),
  ``softmax_grpc_request_duration_seconds`` (method) and one access-log record per call.
"""

from __future__ import annotations

import asyncio
import hmac
import itertools
import logging
import time
import uuid
from collections.abc import Awaitable, Callable
from typing import Any

import grpc
from google.protobuf.message import DecodeError
from grpc_health.v1 import health, health_pb2, health_pb2_grpc

from service.dataplane import DataPlane, served_record
from service.errors import BadRequest, ServiceError
from service.operations.metrics import Count, Metrics, Observe
from service.protocols.grpc import inference, prediction
from service.repository.registry import VersionStatus
from service.settings import Settings

log = logging.getLogger("service.grpc")

#: The status code of each HTTP status a ``ServiceError`` carries.
CODES = {
    400: grpc.StatusCode.INVALID_ARGUMENT,
    401: grpc.StatusCode.UNAUTHENTICATED,
    403: grpc.StatusCode.PERMISSION_DENIED,
    404: grpc.StatusCode.NOT_FOUND,
    408: grpc.StatusCode.DEADLINE_EXCEEDED,
    409: grpc.StatusCode.FAILED_PRECONDITION,
    413: grpc.StatusCode.RESOURCE_EXHAUSTED,
    422: grpc.StatusCode.INVALID_ARGUMENT,
    429: grpc.StatusCode.RESOURCE_EXHAUSTED,
    501: grpc.StatusCode.UNIMPLEMENTED,
    503: grpc.StatusCode.UNAVAILABLE,
}
#: RPCs answered without an API key (health), and those the in-flight bound counts.
OPEN = frozenset({"ServerLive", "ServerReady"})
BOUNDED = frozenset({"ModelInfer", "Predict", "Classify"})
#: The details travel in a header (grpc-message): a message echoing a huge name is cut.
MAX_DETAILS = 4096

_ID_CHARS = frozenset("ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789._:-")

Handler = Callable[[Any, grpc.aio.ServicerContext[Any, Any]], Awaitable[Any]]


class Refused(Exception):
    """A call refused before it reached its RPC (no key, overloaded)."""

    def __init__(self, code: grpc.StatusCode, message: str) -> None:
        super().__init__(message)
        self.code = code
        self.message = message


def status_code(exc: ServiceError) -> grpc.StatusCode:
    """The gRPC status code for a ``ServiceError`` (INTERNAL for a 500)."""
    return CODES.get(exc.status_code, grpc.StatusCode.INTERNAL)


class Calls:
    """Request ids, API keys, the in-flight bound, status codes, metrics and access logs."""

    def __init__(self, settings: Settings, metrics: Metrics) -> None:
        self.metrics = metrics
        self.keys = [key.get_secret_value().encode() for key in settings.api_keys]
        self.max_inflight = settings.max_inflight
        self.inflight = 0
        self.access_log = settings.access_log
        self.log = logging.getLogger("service.access")
        self._id_prefix = "g" + uuid.uuid4().hex[:15]
        self._id_count = itertools.count()
        self._requests: dict[tuple[str, str, str, str], Count] = {}
        self._latency: dict[str, Observe] = {}

    def handler(
        self,
        service: str,
        method: str,
        behaviour: Handler,
        request: type[Any],
        response: type[Any],
    ) -> grpc.RpcMethodHandler[Any, Any]:
        """``behaviour`` as the unary RPC ``method`` of ``service``, every call observed."""
        path = f"/{service}/{method}"

        async def call(raw: bytes, context: grpc.aio.ServicerContext[Any, Any]) -> Any:
            started = time.perf_counter()
            metadata = dict(context.invocation_metadata() or ())
            request_id = self._request_id(metadata.get("x-request-id"))
            record: dict[str, Any] = {"request_id": request_id}
            if str(metadata.get("x-softmax-monitor", "")).lower() == "off":
                record["unmonitored"] = True  # answered and counted, but not watched
            token = served_record.set(record)
            trailer = (("x-request-id", request_id),)
            code = grpc.StatusCode.OK
            try:
                return await self._admitted(method, behaviour, request, raw, context, metadata)
            except Refused as exc:
                code = exc.code
                await context.abort(code, exc.message, trailer)
            except ServiceError as exc:
                code = status_code(exc)
                await context.abort(code, exc.message[:MAX_DETAILS], trailer)
            except asyncio.CancelledError:
                code = grpc.StatusCode.CANCELLED  # the client left, or its deadline passed
                raise
            except Exception as exc:
                if isinstance(exc, grpc.aio.AbortError):
                    raise
                code = grpc.StatusCode.INTERNAL
                log.exception("unexpected error in %s, request id %s", path, request_id)
                await context.abort(
                    code,
                    f"internal error; the server log has the details under request id {request_id}",
                    trailer,
                )
            finally:
                if code is grpc.StatusCode.OK:
                    context.set_trailing_metadata(trailer)
                served_record.reset(token)
                self._observe(path, record, code, time.perf_counter() - started)

        # The request is parsed in ``call`` (bytes that are not one are INVALID_ARGUMENT,
        # where gRPC's own deserialization would answer INTERNAL), after the key check.
        return grpc.unary_unary_rpc_method_handler(
            call, response_serializer=response.SerializeToString
        )

    async def _admitted(
        self,
        method: str,
        behaviour: Handler,
        request: type[Any],
        raw: bytes,
        context: grpc.aio.ServicerContext[Any, Any],
        metadata: dict[str, str | bytes],
    ) -> Any:
        """Call ``behaviour`` once the key is checked, counted against the bound."""
        if self.keys and method not in OPEN:
            problem = self._key_problem(metadata)
            if problem is not None:
                raise Refused(
                    grpc.StatusCode.UNAUTHENTICATED,
                    "expected an API key as 'authorization: Bearer <key>' or 'x-api-key: "
                    f"<key>' metadata, received {problem}",
                )
        try:
            message = request.FromString(raw)
        except DecodeError:
            raise BadRequest(
                f"expected a serialized {request.__name__} message, received {len(raw)} bytes "
                "that are not one"
            ) from None
        if method not in BOUNDED:
            return await behaviour(message, context)
        if self.inflight >= self.max_inflight:
            raise Refused(
                grpc.StatusCode.UNAVAILABLE,
                f"overloaded: expected at most {self.max_inflight} inference calls in "
                "progress, received one more; retry shortly",
            )
        self.inflight += 1
        try:
            return await behaviour(message, context)
        finally:
            self.inflight -= 1

    def _request_id(self, sent: str | bytes | None) -> str:
        """The client's id when sane (``[A-Za-z0-9._:-]{1,128}``), else a new one."""
        if isinstance(sent, str) and 0 < len(sent) <= 128 and _ID_CHARS.issuperset(sent):
            return sent
        return f"{self._id_prefix}{next(self._id_count):016x}"

    def _key_problem(self, metadata: dict[str, str | bytes]) -> str | None:
        """None when the call carries a valid key, else what it carried instead."""
        authorization = metadata.get("authorization")
        if isinstance(authorization, str) and authorization[:7].lower() == "bearer ":
            presented: str | bytes | None = authorization[7:].strip()
        else:
            presented = metadata.get("x-api-key")
        if presented is None:
            return "no key"
        given = presented.encode() if isinstance(presented, str) else presented
        # Compare with every key, always: no early exit that would time which one matched.
        matches = [hmac.compare_digest(given, key) for key in self.keys]
        return None if any(matches) else "a key that is not valid"

    def _observe(
        self, path: str, record: dict[str, Any], code: grpc.StatusCode, elapsed: float
    ) -> None:
        model, version = str(record.get("model", "")), str(record.get("version", ""))
        key = (path, model, version, code.name)
        counter = self._requests.get(key)
        if counter is None:
            counter = self._requests[key] = self.metrics.count(self.metrics.grpc_requests, *key)
        counter.inc()
        latency = self._latency.get(path)
        if latency is None:
            latency = self._latency[path] = self.metrics.observations(
                self.metrics.grpc_request_seconds, path
            )
        latency.observe(elapsed)
        if self.access_log and self.log.isEnabledFor(logging.INFO):
            fields = {
                "event": "request",
                "protocol": "grpc",
                "request_id": record["request_id"],
                "method": path,
                "model": model or None,
                "version": version or None,
                "rows": record.get("rows"),
                "status": code.name,
                "latency_ms": round(elapsed * 1e3, 3),
            }
            self.log.info(f"gRPC {path} {code.name}", extra={"fields": fields})


class Readiness:
    """``grpc.health.v1.Health``: SERVING, for the server and each service, exactly while
    the data plane is ready (``/health/ready`` answers 200); NOT_SERVING otherwise."""

    SERVICES = ("", inference.SERVICE, prediction.SERVICE, prediction.MODEL_SERVICE)

    def __init__(self, plane: DataPlane) -> None:
        self.plane = plane
        self.servicer = health.aio.HealthServicer()
        self._ready: bool | None = None
        self._changed = asyncio.Event()

    def changed(self) -> None:
        """Note that readiness may have changed (callable from any thread via the loop)."""
        self._changed.set()

    async def follow(self) -> None:
        """Keep the statuses in step with readiness, until cancelled."""
        serving, not_serving = (
            health_pb2.HealthCheckResponse.SERVING,
            health_pb2.HealthCheckResponse.NOT_SERVING,
        )
        while True:
            self._changed.clear()  # before reading: a change from now on comes round again
            ready = self.plane.registry.ready
            if ready != self._ready:
                for service in self.SERVICES:
                    await self.servicer.set(service, serving if ready else not_serving)
                self._ready = ready
            await self._changed.wait()


class GrpcListener:
    """The gRPC server of one worker process, on the event loop that serves HTTP."""

    def __init__(self, settings: Settings, plane: DataPlane, metrics: Metrics) -> None:
        self.settings = settings
        self.readiness = Readiness(plane)
        limit = settings.grpc_max_message_bytes
        self.server = grpc.aio.server(
            options=[
                ("grpc.max_receive_message_length", limit),
                ("grpc.max_send_message_length", limit),
                # One listener per worker on the same port only when there are several
                # workers; otherwise a second server on a busy port is an error, not a share.
                ("grpc.so_reuseport", 1 if settings.workers > 1 else 0),
            ]
        )
        calls = Calls(settings, metrics)
        services = {
            inference.SERVICE: inference.InferenceService(plane).methods(),
            prediction.SERVICE: prediction.PredictionService(plane).methods(),
            prediction.MODEL_SERVICE: prediction.ModelService(plane).methods(),
        }
        for service, methods in services.items():
            handlers = {
                method: calls.handler(service, method, *spec) for method, spec in methods.items()
            }
            self.server.add_generic_rpc_handlers(
                (grpc.method_handlers_generic_handler(service, handlers),)
            )
        health_pb2_grpc.add_HealthServicer_to_server(self.readiness.servicer, self.server)
        self._following: asyncio.Task[None] | None = None

    @property
    def address(self) -> str:
        """``host:port`` as gRPC takes it (IPv6 hosts in brackets)."""
        host = self.settings.host
        host = f"[{host}]" if ":" in host else host
        return f"{host}:{self.settings.grpc_port}"

    async def start(self, loading: asyncio.Task[None]) -> None:
        """Listen; health follows readiness (``loading``: the repository's first load)."""
        loop = asyncio.get_running_loop()

        def on_status(name: str, status: VersionStatus) -> None:  # on the loading thread
            loop.call_soon_threadsafe(self.readiness.changed)

        self.readiness.plane.registry.subscribe(on_status)
        loading.add_done_callback(lambda _: self.readiness.changed())
        await self.readiness.servicer.set("", health_pb2.HealthCheckResponse.NOT_SERVING)
        self._following = asyncio.create_task(self.readiness.follow())
        self.server.add_insecure_port(self.address)
        await self.server.start()
        log.info(
            "gRPC listening on %s", self.address, extra={"fields": {"event": "grpc_listening"}}
        )

    async def stop(self, grace: float) -> None:
        """Health NOT_SERVING, then refuse new calls and give those in progress ``grace``
        seconds to finish."""
        await self.readiness.servicer.enter_graceful_shutdown()
        if self._following is not None:
            self._following.cancel()
        await self.server.stop(grace)
