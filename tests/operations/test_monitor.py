"""Live drift in process: PSI against an independent computation, the reference bins as
training binned them, and the default model's window on a stream like its training data
and on a shifted one."""

from __future__ import annotations

import math
from collections.abc import Iterator

import numpy as np
import pytest
from fastapi.testclient import TestClient
from sklearn.datasets import make_blobs  # type: ignore[import-untyped]

from service.operations.monitor import PSI_FLOOR, psi, shares
from service.settings import Settings
from tests.conftest import TrainedRepository, in_process

WINDOW = 500


def test_psi_is_the_sum_over_bins_of_the_difference_times_the_log_ratio() -> None:
    actual, expected = [0.5, 0.3, 0.2, 0.0], [0.25, 0.25, 0.25, 0.25]
    by_hand = sum(
        (max(a, PSI_FLOOR) - e) * math.log(max(a, PSI_FLOOR) / e)
        for a, e in zip(actual, expected, strict=True)
    )
    assert psi(actual, expected) == pytest.approx(by_hand, rel=1e-12)
    assert psi(expected, expected) == 0.0


def test_values_fall_in_the_bins_training_made() -> None:
    edges = [1.0, 2.0, 3.0]
    values = np.array([0.5, 1.0, 1.5, 2.0, 2.0, 3.5, 3.0])
    # edges[i-1] < v <= edges[i]: a value on an edge belongs to the bin below it
    np.testing.assert_array_equal(shares(values, edges), np.array([2, 3, 1, 1]) / 7)


@pytest.fixture(scope="module")
def monitored(trained: TrainedRepository) -> Iterator[TestClient]:
    settings = Settings(model_repository=trained.repository, monitor_window=WINDOW)
    with in_process(settings) as client:
        yield client


def blobs(n: int, seed: int) -> np.ndarray:
    """Rows drawn as the default model's training rows were (its four blobs)."""
    centers = [[15.0, 0.0], [15.0, 15.0], [0.0, 15.0], [30.0, 15.0]]
    x, _ = make_blobs(n_samples=n, centers=centers, cluster_std=1.5, random_state=seed)
    return np.asarray(x)


def send(client: TestClient, rows: np.ndarray, batch: int) -> None:
    for start in range(0, len(rows), batch):
        chunk = rows[start : start + batch].tolist()
        assert client.post("/predict", json={"instances": chunk}).status_code == 200


def test_a_stream_like_the_training_data_shows_no_drift_and_a_shifted_one_does(
    monitored: TestClient,
) -> None:
    send(monitored, blobs(WINDOW, seed=7), batch=1)  # one row a request: the scalar path
    calm = monitored.get("/models/blobs/monitor").json()
    assert calm["monitored"] is True
    assert calm["window_rows"] == WINDOW
    assert calm["predicted_mix_psi"] < 0.1
    assert [f["name"] for f in calm["features"]] == ["x1", "x2"]
    assert all(f["psi"] < 0.1 for f in calm["features"]), calm["features"]
    assert calm["ood_rate"] < 0.02
    assert calm["mean_entropy"] == pytest.approx(calm["reference_mean_entropy"], abs=0.05)

    shifted = blobs(WINDOW, seed=8)
    shifted[:, 0] += 6.0  # every blob moved right: between the blobs and beyond them
    send(monitored, shifted, batch=50)  # batches: the array path
    moved = monitored.get("/models/blobs/monitor").json()
    assert moved["window_rows"] == WINDOW  # the window now holds only the shifted rows
    (x1, x2) = moved["features"]
    assert x1["psi"] > 0.25
    assert x2["psi"] < 0.1
    assert moved["ood_rate"] > 0.5
    assert moved["mean_entropy"] > calm["mean_entropy"]

    metrics = monitored.get("/metrics").text
    assert 'softmax_drift_feature_psi{feature="x1",model="blobs",version="1"}' in metrics
    assert 'softmax_window_rows{model="blobs",version="1"} 500.0' in metrics


def test_the_drift_rule_does_not_fire_on_a_hundred_unshifted_windows(
    monitored: TestClient,
) -> None:
    """The alerts' threshold (PSI 0.25, deploy/prometheus/alerts.yml) on windows drawn like
    the training rows: no false alarm, and the largest PSI seen far below it."""
    largest = []
    for seed in range(100, 200):
        send(monitored, blobs(WINDOW, seed=seed), batch=WINDOW)  # the window, all new
        window = monitored.get("/models/blobs/monitor").json()
        largest.append(max([f["psi"] for f in window["features"]] + [window["predicted_mix_psi"]]))
    print(
        f"largest PSI over 100 unshifted windows of {WINDOW}: max {max(largest):.4f}, "
        f"median {np.median(largest):.4f}"
    )
    assert sum(psi > 0.25 for psi in largest) == 0
    assert max(largest) < 0.1


def test_a_request_marked_unmonitored_is_answered_alike_and_kept_out_of_the_window(
    monitored: TestClient,
) -> None:
    rows = blobs(20, seed=300).tolist()
    before = monitored.get("/models/blobs/monitor").json()["rows_seen"]
    quiet = monitored.post(
        "/predict", json={"instances": rows}, headers={"X-Softmax-Monitor": "OFF"}
    )
    assert monitored.get("/models/blobs/monitor").json()["rows_seen"] == before
    counted = monitored.post("/predict", json={"instances": rows})
    assert monitored.get("/models/blobs/monitor").json()["rows_seen"] == before + 20
    assert quiet.json()["predictions"] == counted.json()["predictions"]


def test_the_window_is_computed_as_an_independent_reading_of_the_answers(
    monitored: TestClient,
) -> None:
    rows = blobs(WINDOW, seed=9)
    answers = monitored.post("/predict", json={"instances": rows.tolist()}).json()
    summary = monitored.get("/models/blobs/monitor").json()
    model = monitored.get("/models/blobs").json()
    reference = model["monitoring"]
    predicted = np.array([p["argmax"] for p in answers["predictions"]])
    mix = np.bincount(predicted, minlength=4) / WINDOW
    np.testing.assert_allclose(summary["predicted_mix"], mix)
    assert summary["predicted_mix_psi"] == pytest.approx(
        psi(mix, reference["predicted_mix"]), rel=1e-12
    )
    entropy = np.mean([p["entropy"] for p in answers["predictions"]])
    assert summary["mean_entropy"] == pytest.approx(entropy, rel=1e-12)
    ood = np.mean([p["ood"] for p in answers["predictions"]])
    assert summary["ood_rate"] == pytest.approx(ood)
    feature = reference["features"][0]
    # np.histogram's bins are [a, b): on the negated values they are training's (a, b]
    negated = np.concatenate([[-1e300], -np.array(feature["edges"])[::-1], [1e300]])
    counts = np.histogram(-rows[:, 0], bins=negated)[0][::-1]
    assert summary["features"][0]["psi"] == pytest.approx(
        psi(counts / WINDOW, feature["fractions"]), rel=1e-12
    )


def test_an_unmonitored_version_says_why(trained: TrainedRepository) -> None:
    settings = Settings(model_repository=trained.repository, monitor_window=0)
    with in_process(settings) as client:
        body = client.get("/models/blobs/monitor").json()
        assert body["monitored"] is False
        assert "SERVICE_MONITOR_WINDOW=0" in body["reason"]
        assert client.get("/models/nope/monitor").status_code == 404
