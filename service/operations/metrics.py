"""Prometheus metrics (prometheus-client), correct with several worker processes.

With ``--workers N`` the CLI points ``PROMETHEUS_MULTIPROC_DIR`` at a fresh directory
before the workers start; every worker then writes its samples there and whichever
worker answers ``/metrics`` aggregates all of them (``MultiProcessCollector``).

Names follow Prometheus conventions (``_total`` counters, ``_seconds`` durations).
Labels are bounded: ``model``/``version`` are only ever those of served versions and
``endpoint`` is a route template, so a client cannot create new series at will.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from typing import Any

import numpy as np
from prometheus_client import (
    CONTENT_TYPE_LATEST,
    CollectorRegistry,
    Counter,
    Gauge,
    Histogram,
    generate_latest,
)
from prometheus_client.multiprocess import MultiProcessCollector

LATENCY_BUCKETS = (
    0.0005, 0.001, 0.002, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0,
)  # fmt: skip
ROW_BUCKETS = (1, 2, 4, 8, 16, 32, 64, 128, 256, 1024, 4096, 16384, 65536)

CONTENT_TYPE = CONTENT_TYPE_LATEST


def multiprocess_dir() -> str | None:
    """The shared directory of a multi-worker server, if this is one."""
    return os.environ.get("PROMETHEUS_MULTIPROC_DIR") or None


class Metrics:
    """Every metric the service exports, registered in a registry of its own."""

    def __init__(self) -> None:
        self.registry = CollectorRegistry()
        self._predictions: dict[tuple[str, str], tuple[Any, Any, list[Any]]] = {}
        r = self.registry
        self.requests = Counter(
            "softmax_requests_total",
            "HTTP requests answered, by route, served model, version and status code.",
            ["endpoint", "model", "version", "status"],
            registry=r,
        )
        self.request_seconds = Histogram(
            "softmax_request_duration_seconds",
            "Time from request to the end of the response, by route.",
            ["endpoint"],
            buckets=LATENCY_BUCKETS,
            registry=r,
        )
        self.inference_seconds = Histogram(
            "softmax_inference_duration_seconds",
            "Time in the model runtime (and batching queue) per request, by model and version.",
            ["model", "version"],
            buckets=LATENCY_BUCKETS,
            registry=r,
        )
        self.request_rows = Histogram(
            "softmax_request_rows",
            "Instances per prediction request.",
            ["model"],
            buckets=ROW_BUCKETS,
            registry=r,
        )
        self.batch_rows = Histogram(
            "softmax_batch_rows",
            "Rows per model call when requests are batched together.",
            ["model"],
            buckets=ROW_BUCKETS,
            registry=r,
        )
        self.inflight = Gauge(
            "softmax_inflight_requests",
            "Inference requests in progress (the queue in front of the models).",
            registry=r,
            multiprocess_mode="livesum",
        )
        self.predicted = Counter(
            "softmax_predicted_class_total",
            "Predictions by predicted class: a shift in the mix shows drift.",
            ["model", "class_name"],
            registry=r,
        )
        self.model_loads = Counter(
            "softmax_model_loads_total",
            "Model version loads, by outcome (loaded or refused).",
            ["model", "outcome"],
            registry=r,
        )
        self.served_version = Gauge(
            "softmax_served_version",
            "The version served by default, per model.",
            ["model"],
            registry=r,
            multiprocess_mode="max",
        )

    def observe_prediction(
        self,
        model: str,
        version: str,
        seconds: float,
        class_names: Sequence[str],
        argmax: Sequence[int] | np.ndarray,
    ) -> None:
        """Inference time, rows, and one count per row for its predicted class."""
        found = self._predictions.get((model, version))
        if found is None:  # every series of a version looked up once
            found = self._predictions[(model, version)] = (
                self.inference_seconds.labels(model, version),
                self.request_rows.labels(model),
                [self.predicted.labels(model, name) for name in class_names],
            )
        inference, rows, classes = found
        inference.observe(seconds)
        rows.observe(len(argmax))
        if len(argmax) <= 16:
            for index in argmax:
                classes[index].inc()
            return
        counts = np.bincount(argmax, minlength=len(class_names))
        for index in np.flatnonzero(counts):
            classes[index].inc(float(counts[index]))

    def render(self) -> bytes:
        """The text exposition of every metric (all workers' when there are several)."""
        if multiprocess_dir():
            registry = CollectorRegistry()
            MultiProcessCollector(registry)  # type: ignore[no-untyped-call]
            return bytes(generate_latest(registry))
        return bytes(generate_latest(self.registry))
