"""Prometheus metrics (prometheus-client), correct with several worker processes.

With ``--workers N`` the CLI points ``PROMETHEUS_MULTIPROC_DIR`` at a fresh directory
before the workers start; every worker then writes its samples there and whichever
worker answers ``/metrics`` aggregates all of them (``MultiProcessCollector``).

Names follow Prometheus conventions (``_total`` counters, ``_seconds`` durations).
Labels are bounded: ``model``/``version`` are only ever those of served versions and
``endpoint`` is a route template, so a client cannot create new series at will.

**Per-request series are tallied.** prometheus-client takes a lock for every increment
and walks the buckets for every observation: the thirteen updates of a one-row
prediction cost about an eighth of its time in the process. In a single process the
series every request touches (requests, request and inference latency, rows, predicted
class, in-flight requests) are kept as plain numbers on the event loop (``Tally``,
``Observations``) and folded into the prometheus-client series when ``/metrics`` is
read, so a scrape sees every request answered before it, exactly as before. With
several workers each update goes straight to the shared files, as prometheus-client's
multiprocess mode needs.
"""

from __future__ import annotations

import os
from bisect import bisect_left
from collections.abc import Callable, Sequence
from typing import TYPE_CHECKING, Protocol

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

if TYPE_CHECKING:
    from service.operations.feedback import FeedbackStore
    from service.operations.monitor import LiveMonitor
    from service.operations.shadow import Comparison

LATENCY_BUCKETS = (
    0.0005, 0.001, 0.002, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0,
)  # fmt: skip
ROW_BUCKETS = (1, 2, 4, 8, 16, 32, 64, 128, 256, 1024, 4096, 16384, 65536)

CONTENT_TYPE = CONTENT_TYPE_LATEST


def multiprocess_dir() -> str | None:
    """The shared directory of a multi-worker server, if this is one."""
    return os.environ.get("PROMETHEUS_MULTIPROC_DIR") or None


class Count(Protocol):
    """A counter series: a prometheus-client child, or its ``Tally``."""

    def inc(self, amount: float = 1) -> None:
        """Add ``amount``."""


class Observe(Protocol):
    """A histogram series: a prometheus-client child, or its ``Observations``."""

    def observe(self, amount: float) -> None:
        """Record one observation."""


class Tally:
    """A counter series' increments since the last fold, as a plain float."""

    __slots__ = ("child", "pending")

    def __init__(self, child: Counter) -> None:
        self.child = child
        self.pending = 0.0

    def inc(self, amount: float = 1) -> None:
        """Add ``amount`` (folded into the series when ``/metrics`` is read)."""
        self.pending += amount

    def fold(self) -> None:
        """Add what was counted to the prometheus-client series."""
        if self.pending:
            self.child.inc(self.pending)
            self.pending = 0.0


class Observations:
    """A histogram series' observations since the last fold: bucket counts and a sum.

    A value goes in the first bucket whose upper bound it does not exceed, as
    prometheus-client's ``Histogram.observe`` puts it. Folding adds the counts and the
    sum to the child's own values (``_buckets``, ``_sum``: prometheus-client has no
    public way to add many observations at once; ``tests/operations/test_metrics.py``
    checks the exposition is the same as observing one by one).
    """

    __slots__ = ("bounds", "child", "counts", "total")

    def __init__(self, child: Histogram) -> None:
        self.child = child
        self.bounds: list[float] = list(child._upper_bounds)
        self.counts = [0] * len(self.bounds)
        self.total = 0.0

    def observe(self, amount: float) -> None:
        """Record one observation (folded into the series when ``/metrics`` is read)."""
        self.counts[bisect_left(self.bounds, amount)] += 1
        self.total += amount

    def fold(self) -> None:
        """Add what was observed to the prometheus-client series."""
        counts = self.counts
        if not any(counts):
            return
        buckets = self.child._buckets
        for i, count in enumerate(counts):
            if count:
                buckets[i].inc(count)
                counts[i] = 0
        self.child._sum.inc(self.total)
        self.total = 0.0


class Metrics:
    """Every metric the service exports, registered in a registry of its own."""

    def __init__(self) -> None:
        self.registry = CollectorRegistry()
        #: Several worker processes share files: every update goes straight to them.
        self.shared = multiprocess_dir() is not None
        self._tallies: list[Tally | Observations] = []
        self._inflight: Callable[[], int] | None = None
        self._predictions: dict[tuple[str, str], tuple[Observe, Observe, list[Count]]] = {}
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
        self.grpc_requests = Counter(
            "softmax_grpc_requests_total",
            "gRPC calls answered, by method, served model, version and status code.",
            ["method", "model", "version", "code"],
            registry=r,
        )
        self.grpc_request_seconds = Histogram(
            "softmax_grpc_request_duration_seconds",
            "Time from a gRPC call to its answer, by method.",
            ["method"],
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
        self._monitor: LiveMonitor | None = None
        version = ["model", "version"]
        self.drift_feature_psi = Gauge(
            "softmax_drift_feature_psi",
            "PSI of a numeric feature's values in the version's rolling window against its "
            "training deciles (below 0.1: no shift; above 0.25: a shift).",
            [*version, "feature"],
            registry=r,
            multiprocess_mode="all",
        )
        self.drift_predicted_mix_psi = Gauge(
            "softmax_drift_predicted_mix_psi",
            "PSI of the predicted-class mix in the rolling window against the training rows'.",
            version,
            registry=r,
            multiprocess_mode="all",
        )
        self.window_mean_entropy = Gauge(
            "softmax_window_mean_entropy",
            "Mean entropy (nats) of the answers in the rolling window.",
            version,
            registry=r,
            multiprocess_mode="all",
        )
        self.reference_mean_entropy = Gauge(
            "softmax_reference_mean_entropy",
            "Mean entropy (nats) of the version's answers on its training rows.",
            version,
            registry=r,
            multiprocess_mode="all",
        )
        self.window_ood_rate = Gauge(
            "softmax_window_ood_rate",
            "Share of the rolling window's rows flagged out of distribution.",
            version,
            registry=r,
            multiprocess_mode="all",
        )
        self.reference_ood_rate = Gauge(
            "softmax_reference_ood_rate",
            "Share of the version's training rows above its OOD threshold.",
            version,
            registry=r,
            multiprocess_mode="all",
        )
        self.window_estimated_accuracy = Gauge(
            "softmax_window_estimated_accuracy",
            "Accuracy expected without labels: the mean top-1 probability of the window's "
            "calibrated answers.",
            version,
            registry=r,
            multiprocess_mode="all",
        )
        self._feedback: FeedbackStore | None = None
        self.feedback_accuracy = Gauge(
            "softmax_feedback_accuracy",
            "Accuracy of the version's last labelled rows (POST /models/{name}/feedback).",
            version,
            registry=r,
            multiprocess_mode="all",
        )
        self.feedback_log_loss = Gauge(
            "softmax_feedback_log_loss",
            "Log loss (nats) of the version's last labelled rows.",
            version,
            registry=r,
            multiprocess_mode="all",
        )
        self.feedback_ece = Gauge(
            "softmax_feedback_ece",
            "Expected calibration error (15 bins) of the version's last labelled rows.",
            version,
            registry=r,
            multiprocess_mode="all",
        )
        self.feedback_last_label = Gauge(
            "softmax_feedback_last_label_timestamp_seconds",
            "When the version's last true label was reported (Unix time): feedback lag.",
            ["model", "version"],
            registry=r,
            multiprocess_mode="max",
        )
        self.feedback_rows = Gauge(
            "softmax_feedback_rows",
            "Labelled rows in the version's feedback window.",
            version,
            registry=r,
            multiprocess_mode="all",
        )
        self.window_rows = Gauge(
            "softmax_window_rows",
            "Rows in the version's rolling window.",
            version,
            registry=r,
            multiprocess_mode="all",
        )
        self.prediction_log_lines = Counter(
            "softmax_prediction_log_lines_total",
            "Lines of the prediction log (SERVICE_PREDICTION_LOG_DIR) by outcome: written, "
            "dropped (its queue was full) or failed (the write failed, e.g. a full disk).",
            ["outcome"],
            registry=r,
        )
        self.routed = Counter(
            "softmax_routed_requests_total",
            "Prediction requests naming no version or label, by the version that served them "
            "and why (newest, or canary: serving.json's canary_fraction).",
            ["model", "version", "route"],
            registry=r,
        )
        self.shadow_rows = Counter(
            "softmax_shadow_rows_total",
            "Rows the live version answered that its shadow version scored too.",
            ["model", "version", "shadow_version"],
            registry=r,
        )
        self.shadow_agreeing = Counter(
            "softmax_shadow_agreeing_rows_total",
            "Of those, rows where the shadow's most probable class is the live answer's.",
            ["model", "version", "shadow_version"],
            registry=r,
        )
        self.shadow_abs_difference = Counter(
            "softmax_shadow_abs_difference_total",
            "Sum over compared rows of the mean absolute difference of the two distributions "
            "(divide by softmax_shadow_rows_total for the mean).",
            ["model", "version", "shadow_version"],
            registry=r,
        )
        self.shadow_js_divergence = Counter(
            "softmax_shadow_js_divergence_bits_total",
            "Sum over compared rows of the Jensen-Shannon divergence of the two "
            "distributions, in bits (divide by softmax_shadow_rows_total for the mean).",
            ["model", "version", "shadow_version"],
            registry=r,
        )
        self.shadow_skipped = Counter(
            "softmax_shadow_skipped_rows_total",
            "Rows offered to the shadow and not compared, by reason: shed (it could not keep "
            "up), failed, different_input, different_classes.",
            ["model", "version", "shadow_version", "reason"],
            registry=r,
        )
        self.shadow_seconds = Histogram(
            "softmax_shadow_call_duration_seconds",
            "Time of one shadow call (the rows of several live requests, off the response path).",
            ["model", "shadow_version"],
            buckets=LATENCY_BUCKETS,
            registry=r,
        )
        self.explained = Counter(
            "softmax_explained_instances_total",
            "Instances explained (feature attributions), by model, version and method; not "
            "counted in softmax_predicted_class_total or the drift window.",
            ["model", "version", "method"],
            registry=r,
        )
        self.explanation_rows = Counter(
            "softmax_explanation_model_rows_total",
            "Rows the model scored for explanations (2^features x background points each).",
            ["model", "version"],
            registry=r,
        )
        self.explanation_seconds = Histogram(
            "softmax_explanation_duration_seconds",
            "Time to explain one request's instances (model calls and attributions).",
            ["model", "version"],
            buckets=LATENCY_BUCKETS,
            registry=r,
        )

    def count(self, metric: Counter, *labels: str) -> Count:
        """The series of ``metric`` with ``labels``, for updates from the event loop."""
        child = metric.labels(*labels)
        if self.shared:
            return child
        tally = Tally(child)
        self._tallies.append(tally)
        return tally

    def observations(self, metric: Histogram, *labels: str) -> Observe:
        """The series of ``metric`` with ``labels``, for updates from the event loop."""
        child = metric.labels(*labels)
        if self.shared:
            return child
        observations = Observations(child)
        self._tallies.append(observations)
        return observations

    def count_inflight(self, now: Callable[[], int]) -> bool:
        """Read the in-flight gauge from ``now`` when it is exported; True when, instead, the
        caller must ``inflight.inc()`` and ``dec()`` it (several workers: a shared file)."""
        if self.shared:
            return True
        self._inflight = now
        return False

    def watch_feedback(self, feedback: FeedbackStore) -> None:
        """Export ``feedback``'s labelled windows as gauges, computed when read."""
        self._feedback = feedback

    def watch(self, monitor: LiveMonitor) -> None:
        """Export ``monitor``'s windows as gauges, computed when the metrics are read."""
        self._monitor = monitor

    def _fold_drift(self) -> None:
        if self._feedback is not None:
            for name, number, labelled in self._feedback.labelled():
                labels = (name, str(number))
                self.feedback_rows.labels(*labels).set(labelled["rows"])
                if labelled["last_label_at"] is not None:
                    self.feedback_last_label.labels(*labels).set(labelled["last_label_at"])
                for gauge, key in (
                    (self.feedback_accuracy, "accuracy"),
                    (self.feedback_log_loss, "log_loss"),
                    (self.feedback_ece, "ece"),
                ):
                    if labelled[key] is not None:
                        gauge.labels(*labels).set(labelled[key])
        if self._monitor is None:
            return
        for name, number, version in self._monitor.monitored():
            labels = (name, str(number))
            summary = version.summary()
            self.window_rows.labels(*labels).set(summary["window_rows"])
            pairs = (
                (self.drift_predicted_mix_psi, summary["predicted_mix_psi"]),
                (self.window_mean_entropy, summary["mean_entropy"]),
                (self.reference_mean_entropy, summary["reference_mean_entropy"]),
                (self.window_ood_rate, summary["ood_rate"]),
                (self.reference_ood_rate, summary["reference_ood_rate"]),
                (self.window_estimated_accuracy, summary["estimated_accuracy"]),
            )
            for gauge, value in pairs:
                if value is not None:
                    gauge.labels(*labels).set(value)
            for feature in summary["features"]:
                if feature["psi"] is not None:
                    self.drift_feature_psi.labels(*labels, feature["name"]).set(feature["psi"])

    def fold(self) -> None:
        """Bring the prometheus-client series up to date with what was tallied."""
        self._fold_drift()
        for tally in self._tallies:
            tally.fold()
        if self._inflight is not None:
            self.inflight.set(self._inflight())

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
                self.observations(self.inference_seconds, model, version),
                self.observations(self.request_rows, model),
                [self.count(self.predicted, model, name) for name in class_names],
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

    def observe_explanation(
        self, model: str, version: str, method: str, instances: int, rows: int, seconds: float
    ) -> None:
        """One explanation request: its instances, the model rows they cost, its time."""
        self.explained.labels(model, version, method).inc(instances)
        self.explanation_rows.labels(model, version).inc(rows)
        self.explanation_seconds.labels(model, version).observe(seconds)

    def count_prediction_log(self, outcome: str, lines: int) -> None:
        """Lines of the prediction log, by outcome (from its writer thread)."""
        self.prediction_log_lines.labels(outcome).inc(lines)

    def count_route(self, model: str, version: str, route: str) -> None:
        """One request naming no version or label, served by ``version`` by ``route``."""
        self.count(self.routed, model, version, route).inc()

    def observe_shadow(self, key: tuple[str, str, str], batch: Comparison) -> None:
        """One shadow call: its rows, agreement, differences and time."""
        model, _, shadow = key
        self.shadow_rows.labels(*key).inc(batch.rows)
        self.shadow_agreeing.labels(*key).inc(batch.agreeing)
        self.shadow_abs_difference.labels(*key).inc(batch.abs_difference)
        self.shadow_js_divergence.labels(*key).inc(batch.js_divergence)
        self.shadow_seconds.labels(model, shadow).observe(batch.seconds)

    def count_shadow_skipped(self, key: tuple[str, str, str], reason: str, rows: int) -> None:
        """Rows offered to the shadow and not compared, and why."""
        self.shadow_skipped.labels(*key, reason).inc(rows)

    def render(self) -> bytes:
        """The text exposition of every metric (all workers' when there are several)."""
        self.fold()
        if self.shared:
            registry = CollectorRegistry()
            MultiProcessCollector(registry)  # type: ignore[no-untyped-call]
            return bytes(generate_latest(registry))
        return bytes(generate_latest(self.registry))
