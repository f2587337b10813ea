"""The application factory: ``create_app(settings)``.

Model state lives in the lifespan (loaded in a background thread so that
``/health/live`` answers at once and ``/health/ready`` says 503 until the models are
warm), never in module globals.
"""

from __future__ import annotations

import asyncio
import gc
import logging
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from typing import TYPE_CHECKING, Any

from fastapi import FastAPI, Request
from fastapi.middleware.cors import CORSMiddleware
from starlette.responses import Response
from starlette.types import ASGIApp

from service import __version__
from service.dataplane import DataPlane
from service.http.bodies import hoist_body_schemas
from service.http.error_responses import document_errors, install_error_handlers
from service.http.gateway import Gateway
from service.http.routing import add_direct_routes
from service.http.state import dataplane
from service.inference.batching import BatchingConfig
from service.inference.runtime import Runtime
from service.operations.feedback import FeedbackStore
from service.operations.metrics import CONTENT_TYPE, Metrics
from service.operations.monitor import LiveMonitor
from service.operations.prediction_log import PredictionLog
from service.operations.shadow import ShadowTraffic
from service.protocols import tfserving, v2
from service.protocols.native import direct, router
from service.repository.policy import VersionPolicy
from service.repository.registry import BatchingPolicy, ModelRegistry, State, VersionStatus
from service.repository.watcher import RepositoryWatcher
from service.settings import Settings
from service.ui.docs import mount_offline_docs
from service.ui.playground import mount_playground

if TYPE_CHECKING:
    from service.protocols.grpc.server import GrpcListener

log = logging.getLogger("service")

DESCRIPTION = """Class probabilities from Keras softmax classifiers.

Served from each version's LiteRT export with the softmax applied in float64.
Every error is `{"error": "..."}` saying what was expected and what was received."""


def _lifespan(settings: Settings, metrics: Metrics, serve_grpc: bool = False) -> Any:
    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[dict[str, Any]]:
        _tune_garbage_collector()
        registry = ModelRegistry(
            settings.model_repository,
            settings.default_model,
            batching_policy(settings, metrics),
            VersionPolicy.parse(settings.version_policy),
        )
        registry.subscribe(model_events(metrics))
        plane = DataPlane(
            registry,
            max_batch_rows=settings.max_batch_rows,
            max_values_per_row=settings.max_values_per_row,
            max_image_pixels=settings.max_image_pixels,
            max_steps=settings.max_steps,
            max_json_depth=settings.max_json_depth,
            explain_max_instances=settings.explain_max_instances,
            explain_max_features=settings.explain_max_features,
            explain_samples=settings.explain_samples,
            explain_max_sampled_features=settings.explain_max_sampled_features,
            explain_patch=settings.explain_patch,
            explain_max_patches=settings.explain_max_patches,
            explain_max_tokens=settings.explain_max_tokens,
            metrics=metrics,
            model_control=settings.model_control,
        )
        plane.shadow = ShadowTraffic(
            plane.shadow_probabilities, metrics, max_pending_rows=settings.shadow_max_pending_rows
        )
        shadowing = asyncio.create_task(plane.shadow.run())
        if settings.monitor_window:
            plane.monitor = LiveMonitor(settings.monitor_window)
            metrics.watch(plane.monitor)
        if settings.feedback_max_bytes:
            window = settings.monitor_window or 1000
            plane.feedback = FeedbackStore(
                settings.feedback_max_bytes, settings.feedback_ttl_seconds, window
            )
            metrics.watch_feedback(plane.feedback)
        if settings.prediction_log_dir is not None:
            plane.prediction_log = PredictionLog(
                settings.prediction_log_dir,
                sample=settings.prediction_log_sample,
                max_bytes=settings.prediction_log_max_bytes,
                backups=settings.prediction_log_backups,
                count=metrics.count_prediction_log,
            )
            if plane.feedback is not None:
                plane.feedback.on_label = plane.prediction_log.feedback
        loading = asyncio.create_task(asyncio.to_thread(registry.load_all))
        loading.add_done_callback(_report_load_failure)
        watching = asyncio.create_task(
            RepositoryWatcher(registry, settings.poll_interval).run(after=loading)
        )
        if settings.workers > 1:
            if settings.poll_interval == 0:
                log.warning("polling is off: POST /models/{name}/reload reaches one worker only")
            # With several workers on one socket, a worker that accepted connections while
            # still loading would answer 503 beside ready siblings (after start, or when
            # uvicorn restarts a crashed worker). So it joins only once it can serve; the
            # other workers keep answering /health/live meanwhile.
            await asyncio.wait([loading])
        grpc = None
        if serve_grpc and settings.grpc_port:
            grpc = asyncio.create_task(_start_grpc(settings, plane, metrics, loading))
            grpc.add_done_callback(_report_grpc_failure)
        try:
            yield {"dataplane": plane}
        finally:
            if grpc is not None:
                await _stop_grpc(grpc, settings.timeout_graceful_shutdown)
            watching.cancel()
            shadowing.cancel()
            await asyncio.wait([loading, watching, shadowing])
            if plane.prediction_log is not None:
                await asyncio.to_thread(plane.prediction_log.close)

    return lifespan


async def _start_grpc(
    settings: Settings, plane: DataPlane, metrics: Metrics, loading: asyncio.Task[None]
) -> GrpcListener:
    """The gRPC listener on ``plane``, listening once the repository's first load is over:
    importing and starting gRPC costs about a tenth of a second that HTTP's start-up
    (and its readiness) does not wait for, and until then a gRPC client is refused as by
    a server not ready. Imported here: the in-process tests never pay for it."""
    await asyncio.wait([loading])
    from service.protocols.grpc.server import GrpcListener

    listener = GrpcListener(settings, plane, metrics)
    await listener.start(loading)
    return listener


async def _stop_grpc(starting: asyncio.Task[GrpcListener], grace: float) -> None:
    """Drain the gRPC listener (or stop it from starting)."""
    if not starting.done():
        starting.cancel()
    await asyncio.wait([starting])
    if not starting.cancelled() and starting.exception() is None:
        await starting.result().stop(grace)


def _report_grpc_failure(starting: asyncio.Task[GrpcListener]) -> None:
    if not starting.cancelled() and starting.exception() is not None:
        log.error(
            "the gRPC listener did not start: %s; HTTP serves on",
            starting.exception(),
            extra={"fields": {"event": "grpc_failed"}},
        )


def batching_policy(settings: Settings, metrics: Metrics | None = None) -> BatchingPolicy:
    """Settings, with per-model overrides, as the registry's batching decision."""

    def decide(name: str, runtime: Runtime) -> BatchingConfig:
        override = settings.model_batching.get(name)
        mode = (override and override.batching) or settings.batching
        size = (override and override.batch_max_size) or settings.batch_max_size
        wait_ms = settings.batch_max_wait_ms
        if override and override.batch_max_wait_ms is not None:
            wait_ms = override.batch_max_wait_ms
        enabled = mode == "on" or (mode == "auto" and runtime.blocking)
        observe = metrics.batch_rows.labels(name).observe if metrics else None
        return BatchingConfig(
            enabled=enabled, max_batch_size=size, max_wait=wait_ms / 1e3, on_batch=observe
        )

    return decide


def _tune_garbage_collector() -> None:
    """Fewer, cheaper garbage collections while requests are parsed; collection back on.

    Parsing a request allocates many container objects (an image as nested arrays: ~10,000
    lists), which with CPython's defaults triggers collections that scan every tracked
    object, the whole import heap included: measured, half the time of such a request.
    What exists at start (modules, the app) lives as long as the process, so it is frozen
    out of collections; versions loaded later are not, so an unloaded version's cycles
    are still collected. The first generation collects after 10,000 allocations, not 700.

    ``python -m service`` imports with the collector off; the few cycles that imports
    leave behind (about 1,400 objects) are frozen with the rest rather than collected
    first: a full collection here scans the whole heap, 50 ms on the path to ready.
    """
    gc.freeze()
    gc.set_threshold(10_000, 10, 10)
    gc.enable()


def _report_load_failure(task: asyncio.Task[None]) -> None:
    if not task.cancelled() and (exc := task.exception()) is not None:
        log.error("loading the model repository failed: %r", exc)


def model_events(metrics: Metrics) -> Callable[[str, VersionStatus], None]:
    """A registry listener counting loaded and refused versions."""

    def on_status(name: str, status: VersionStatus) -> None:
        if status.state == State.AVAILABLE:
            metrics.model_loads.labels(name, "loaded").inc()
        elif status.state == State.END and status.error:
            metrics.model_loads.labels(name, "refused").inc()

    return on_status


def _add_metrics_route(app: FastAPI, metrics: Metrics) -> None:
    @app.get("/metrics", include_in_schema=False)
    async def prometheus(request: Request) -> Response:
        """Prometheus text format, every worker's samples when there are several."""
        for name, version in dataplane(request).newest_versions().items():
            metrics.served_version.labels(name).set(version)
        return Response(metrics.render(), media_type=CONTENT_TYPE)


class ServiceApp(FastAPI):
    """FastAPI with ``service.http.gateway.Gateway`` in front of its whole middleware stack.

    The gateway serves the hot endpoints itself and hands every other request to
    FastAPI's stack; CORS, when configured, wraps both (preflights are answered first).
    """

    def build_middleware_stack(self) -> ASGIApp:
        """The gateway around FastAPI's stack (built at the first request: routes are final)."""
        settings: Settings = self.state.settings
        app: ASGIApp = Gateway(
            super().build_middleware_stack(), self.router.routes, settings, self.state.metrics
        )
        if settings.cors_origins:
            app = CORSMiddleware(
                app,
                allow_origins=settings.cors_origins,
                allow_methods=["GET", "POST"],
                allow_headers=["Authorization", "Content-Type", "X-API-Key", "X-Request-ID"],
                expose_headers=["X-Request-ID", "Retry-After"],
            )
        return app

    def openapi(self) -> dict[str, Any]:
        """FastAPI's document, with every body's schema in its components, every error ours."""
        return document_errors(hoist_body_schemas(super().openapi()))


def create_app(settings: Settings | None = None, *, serve_grpc: bool = False) -> FastAPI:
    """Build the service for ``settings`` (default: read from ``SERVICE_*`` variables);
    with ``serve_grpc``, its lifespan also runs the gRPC listener (``SERVICE_GRPC_PORT``),
    as ``python -m service`` does."""
    settings = settings or Settings()
    metrics = Metrics()
    app = ServiceApp(
        title="softmax-serving",
        version=__version__,
        description=DESCRIPTION,
        lifespan=_lifespan(settings, metrics, serve_grpc),
        docs_url=None,
        redoc_url=None,
        # Our metrics are Prometheus (service.operations.metrics). FastAPI's native OpenTelemetry
        # hooks would otherwise look up tracer/meter providers (environment reads) per request.
        telemetry={"tracing": False, "metrics": False, "logs": False},
    )
    app.state.settings = settings
    install_error_handlers(app)
    app.state.metrics = metrics
    _add_metrics_route(app, metrics)
    # Each call puts its routes first: the native API last, so /predict is matched first.
    for hot in (v2.direct, tfserving.direct, direct):
        add_direct_routes(app, hot)  # unwrapped: the hot paths
    for routes in (router, tfserving.router, v2.router):
        app.include_router(routes)
    mount_offline_docs(app)
    mount_playground(app)
    return app
