"""Feedback: true labels joined with the answers they belong to, in process, against
independent computations (scikit-learn's log loss, the training report's ECE)."""

from __future__ import annotations

from collections.abc import Iterator

import numpy as np
import pytest
from fastapi.testclient import TestClient
from sklearn.datasets import make_blobs  # type: ignore[import-untyped]
from sklearn.metrics import log_loss  # type: ignore[import-untyped]

from model_training.calibration import ece
from service.errors import InvalidInput
from service.operations.feedback import ANSWER_BYTES, FeedbackNotFound, FeedbackStore
from service.settings import Settings
from tests.conftest import TrainedRepository, in_process

CLASSES = ("cat", "dog", "owl")


class Clock:
    def __init__(self) -> None:
        self.now = 0.0

    def __call__(self) -> float:
        return self.now


def test_labels_join_their_answers_and_the_window_matches_independent_metrics() -> None:
    rng = np.random.default_rng(0)
    store = FeedbackStore(window=200)
    p = rng.dirichlet(np.ones(3), size=150)
    y = rng.integers(0, 3, size=150)
    for i in range(150):
        store.remember(f"r{i}", "pets", 1, CLASSES, p[i : i + 1].tolist())
    for i in range(150):  # by name and by index
        label = CLASSES[y[i]] if i % 2 else int(y[i])
        store.label("pets", f"r{i}", [label])
    summary = store.summary("pets", 1)
    assert summary is not None
    kept = p.astype(np.float32).astype(np.float64)  # the store keeps float32
    assert summary["rows"] == 150
    assert summary["accuracy"] == pytest.approx(np.mean(kept.argmax(axis=1) == y))
    # scikit-learn's log loss renormalizes each row; the float32 rows sum to 1 within 1e-7
    reference = log_loss(y, kept / kept.sum(axis=1, keepdims=True), labels=[0, 1, 2])
    assert summary["log_loss"] == pytest.approx(reference, rel=1e-6)
    assert summary["ece"] == pytest.approx(ece(kept, y), rel=1e-9)


def test_what_cannot_be_joined_is_refused_saying_why() -> None:
    clock = Clock()
    store = FeedbackStore(max_bytes=3 * (ANSWER_BYTES + 12), ttl=60, clock=clock)
    store.remember("a", "pets", 1, CLASSES, [[0.2, 0.5, 0.3], [0.6, 0.3, 0.1]])
    with pytest.raises(InvalidInput, match=r"expected 2 labels .*, received 1"):
        store.label("pets", "a", ["cat"])
    with pytest.raises(InvalidInput, match=r"received 'fox' in labels\[1\]"):
        store.label("pets", "a", ["cat", "fox"])
    with pytest.raises(InvalidInput, match=r"index from 0 to 2, received '3'"):
        store.label("pets", "a", ["cat", 3])
    with pytest.raises(FeedbackNotFound, match="of model 'birds'"):
        store.label("birds", "a", ["cat", "dog"])
    assert store.label("pets", "a", ["dog", "cat"])["correct"] == 2
    with pytest.raises(FeedbackNotFound):  # labelled once
        store.label("pets", "a", ["dog", "cat"])
    store.remember("b", "pets", 1, CLASSES, [[0.2, 0.5, 0.3]])
    clock.now = 61.0
    with pytest.raises(FeedbackNotFound, match="in the last 60 s"):
        store.label("pets", "b", ["dog"])
    for name in ("c", "d", "e", "f"):  # room for three one-row answers: c goes
        store.remember(name, "pets", 1, CLASSES, [[0.2, 0.5, 0.3]])
    with pytest.raises(FeedbackNotFound):
        store.label("pets", "c", ["dog"])
    assert store.bytes == 3 * (ANSWER_BYTES + 12)


@pytest.fixture(scope="module")
def served(trained: TrainedRepository) -> Iterator[TestClient]:
    settings = Settings(
        model_repository=trained.repository, monitor_window=400, feedback_max_bytes=2**24
    )
    with in_process(settings) as client:
        yield client


def stream(client: TestClient, x: np.ndarray, y: np.ndarray, prefix: str) -> None:
    """Ask for each row alone, with a request id, then report its true label."""
    for i, row in enumerate(x.tolist()):
        rid = f"{prefix}-{i}"
        answer = client.post("/predict", json={"instances": [row]}, headers={"X-Request-ID": rid})
        assert answer.headers["x-request-id"] == rid
        body = {"request_id": rid, "labels": [str(y[i])]}
        joined = client.post("/models/blobs/feedback", json=body)
        assert joined.status_code == 200, joined.text


def test_live_accuracy_and_the_label_free_estimate_on_a_calm_and_a_shifted_stream(
    served: TestClient,
) -> None:
    centers = [[15.0, 0.0], [15.0, 15.0], [0.0, 15.0], [30.0, 15.0]]
    x, y = make_blobs(n_samples=400, centers=centers, cluster_std=1.5, random_state=11)
    stream(served, x, y, "calm")
    calm = served.get("/models/blobs/monitor").json()
    assert calm["feedback"]["rows"] == 400
    assert calm["feedback"]["accuracy"] > 0.97
    assert abs(calm["estimated_accuracy"] - calm["feedback"]["accuracy"]) < 0.03

    x, y = make_blobs(n_samples=400, centers=centers, cluster_std=4.5, random_state=12)
    stream(served, x, y, "shifted")  # three times the spread: the classes overlap
    shifted = served.get("/models/blobs/monitor").json()
    accuracy, estimate = shifted["feedback"]["accuracy"], shifted["estimated_accuracy"]
    print(
        f"calm: accuracy {calm['feedback']['accuracy']:.3f}, estimate "
        f"{calm['estimated_accuracy']:.3f}; shifted: accuracy {accuracy:.3f}, "
        f"estimate {estimate:.3f}"
    )
    assert accuracy < 0.9  # the shift costs accuracy ...
    assert estimate < calm["estimated_accuracy"]  # ... and the estimate sees it fall,
    # but not all the way: rows pushed far from their class are often far from every
    # class, where the model is confidently wrong (the OOD rate is the signal there).
    assert accuracy < estimate < accuracy + 0.2
    assert shifted["ood_rate"] > calm["ood_rate"]
    metrics = served.get("/metrics").text
    assert 'softmax_feedback_accuracy{model="blobs",version="1"}' in metrics
    assert 'softmax_window_estimated_accuracy{model="blobs",version="1"}' in metrics


def test_feedback_for_an_unknown_request_is_a_404_and_a_bad_label_a_422(
    served: TestClient,
) -> None:
    answer = served.post("/models/blobs/feedback", json={"request_id": "nope", "labels": ["0"]})
    assert answer.status_code == 404
    assert "received 'nope'" in answer.json()["error"]
    served.post("/predict", json={"instances": [[15, 0]]}, headers={"X-Request-ID": "q1"})
    bad = served.post("/models/blobs/feedback", json={"request_id": "q1", "labels": ["7"]})
    assert bad.status_code == 422
    assert "expected a class name of the model ['0', '1', '2', '3']" in bad.json()["error"]
