"""The per-request series are tallied in plain numbers and folded into prometheus-client's
series when read: what a scrape sees must be exactly what updating them one by one gives."""

from __future__ import annotations

from pathlib import Path

import pytest
from hypothesis import given
from hypothesis import strategies as st
from prometheus_client import CollectorRegistry, Counter, Histogram, generate_latest
from prometheus_client.parser import text_string_to_metric_families

from service.operations.metrics import LATENCY_BUCKETS, ROW_BUCKETS, Metrics

#: Values on, between, below and beyond the latency buckets' bounds (the edges matter:
#: a value equal to a bound belongs to that bound's bucket).
LATENCIES = st.one_of(
    st.sampled_from(LATENCY_BUCKETS),
    st.floats(min_value=0.0, max_value=30.0, allow_nan=False),
)


def samples(text: bytes, family: str) -> dict[tuple[str, frozenset[tuple[str, str]]], float]:
    """Every sample of one metric family in an exposition."""
    return {
        (s.name, frozenset(s.labels.items())): s.value
        for f in text_string_to_metric_families(text.decode())
        if f.name == family
        for s in f.samples
    }


def reference_histogram(buckets: tuple[float, ...], values: list[float]) -> bytes:
    """The exposition of a histogram observed one value at a time, by prometheus-client."""
    registry = CollectorRegistry()
    histogram = Histogram(
        "softmax_request_duration_seconds", "x", ["endpoint"], buckets=buckets, registry=registry
    )
    series = histogram.labels("/predict")  # exposed from its creation, observed or not
    for value in values:
        series.observe(value)
    return bytes(generate_latest(registry))


@given(st.lists(st.lists(LATENCIES, max_size=20), max_size=4))
def test_tallied_latency_exposes_what_observing_one_by_one_does(batches: list[list[float]]) -> None:
    metrics = Metrics()
    series = metrics.observations(metrics.request_seconds, "/predict")
    seen: list[float] = []
    for batch in batches:  # scrapes between batches: each fold adds only what is new
        for value in batch:
            series.observe(value)
        seen += batch
        family = "softmax_request_duration_seconds"
        got = samples(metrics.render(), family)
        want = samples(reference_histogram(LATENCY_BUCKETS, seen), family)
        assert got.keys() == want.keys()
        for key, value in want.items():
            assert got[key] == pytest.approx(value, rel=1e-12, abs=1e-12), key


@given(st.lists(st.integers(min_value=0, max_value=100_000), max_size=30))
def test_tallied_rows_and_classes_match_direct_counts(rows: list[int]) -> None:
    metrics = Metrics()
    for n in rows:
        metrics.observe_prediction("blobs", "1", 0.001, ["a", "b"], [i % 2 for i in range(n % 40)])
    text = metrics.render()
    registry = CollectorRegistry()
    direct = Histogram(
        "softmax_request_rows", "x", ["model"], buckets=ROW_BUCKETS, registry=registry
    )
    classes = Counter("softmax_predicted_class", "x", ["model", "class_name"], registry=registry)
    for n in rows:
        direct.labels("blobs").observe(n % 40)
        for i in range(n % 40):
            classes.labels("blobs", "ab"[i % 2]).inc()
    reference = bytes(generate_latest(registry))
    assert samples(text, "softmax_request_rows") == samples(reference, "softmax_request_rows")
    assert {k: v for k, v in samples(text, "softmax_predicted_class").items() if v} == {
        k: v for k, v in samples(reference, "softmax_predicted_class").items() if v
    }


def test_inflight_gauge_reads_the_count_when_scraped() -> None:
    metrics = Metrics()
    inflight = [3]
    assert metrics.count_inflight(lambda: inflight[0]) is False  # one process: nothing per request
    assert samples(metrics.render(), "softmax_inflight_requests") == {
        ("softmax_inflight_requests", frozenset()): 3.0
    }
    inflight[0] = 0
    assert samples(metrics.render(), "softmax_inflight_requests") == {
        ("softmax_inflight_requests", frozenset()): 0.0
    }


def test_several_workers_update_the_shared_files_at_once(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # The aggregation itself is tested on a real two-worker server
    # (tests/operations/test_observability.py); here: nothing is held back in a worker.
    monkeypatch.setenv("PROMETHEUS_MULTIPROC_DIR", str(tmp_path))
    metrics = Metrics()
    assert metrics.count_inflight(lambda: 0) is True  # the gateway counts in the file
    requests = metrics.count(metrics.requests, "/predict", "blobs", "1", "200")
    latency = metrics.observations(metrics.request_seconds, "/predict")
    assert requests is metrics.requests.labels("/predict", "blobs", "1", "200")
    assert latency is metrics.request_seconds.labels("/predict")
    assert not metrics._tallies
