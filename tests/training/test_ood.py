"""The out-of-distribution reference (``model_training.ood``): pure numpy, no training."""

from __future__ import annotations

import json

import numpy as np
import pytest

from model_training.data import make_blobs
from model_training.ood import QUANTILE, distance, distance_from_metadata, fit_reference, flagged


def direct_distance(x: np.ndarray, means: np.ndarray, precision: np.ndarray) -> list[float]:
    """Row by row, class by class: min_k sqrt((x - m_k)^T P (x - m_k)), in float64."""
    out = []
    for row in x.astype(np.float64):
        squared = [float((row - m) @ precision @ (row - m)) for m in means.astype(np.float64)]
        out.append(float(np.sqrt(min(squared))))
    return out


def test_distance_matches_a_direct_float64_computation() -> None:
    rng = np.random.default_rng(0)
    x = rng.normal(scale=20.0, size=(50, 3))
    means = rng.normal(scale=5.0, size=(4, 3))
    a = rng.normal(size=(3, 3))
    precision = np.linalg.inv(a @ a.T + 0.5 * np.eye(3))
    assert distance(x, means, precision) == pytest.approx(
        direct_distance(x, means, precision), rel=1e-12
    )


def test_fitted_reference_uses_the_inverse_of_the_pooled_within_class_covariance() -> None:
    data = make_blobs(400, seed=1)
    reference = fit_reference(data.x, data.y, ["a", "b", "c", "d"])
    detector = reference["ood"]
    x = data.x.astype(np.float64)
    means = np.stack([x[data.y == k].mean(axis=0) for k in range(4)])
    residuals = x - means[data.y]
    pooled = residuals.T @ residuals / (len(x) - 4)
    assert np.asarray(detector["class_means"]) == pytest.approx(means, rel=1e-12)
    assert np.asarray(detector["precision"]) == pytest.approx(np.linalg.inv(pooled), rel=1e-5)
    expected = direct_distance(data.x[:20], means, np.asarray(detector["precision"]))
    assert distance_from_metadata(data.x[:20], detector) == pytest.approx(expected, rel=1e-12)
    own = distance_from_metadata(data.x, detector)
    assert detector["threshold"] == pytest.approx(np.quantile(own, QUANTILE))
    assert detector["quantile"] == QUANTILE
    assert detector["classes"] == ["a", "b", "c", "d"]


def test_far_points_are_flagged_and_training_samples_mostly_not() -> None:
    data = make_blobs(1000, seed=42)
    detector = fit_reference(data.x, data.y, ["0", "1", "2", "3"])["ood"]
    far = np.array([[1000.0, -1000.0], [-1000.0, 1000.0], [15.0, 60.0]])
    assert flagged(far, detector).all()
    assert distance_from_metadata(far[:1], detector)[0] > 100 * detector["threshold"]
    assert flagged(data.x, detector).mean() <= 0.002
    assert detector["train_flagged"] <= 0.002
    fresh = make_blobs(2000, seed=7)  # new samples of the same distribution
    assert flagged(fresh.x, detector).mean() < 0.01


def test_the_gap_between_blobs_is_flagged_though_it_is_near_the_global_mean() -> None:
    data = make_blobs(1000, seed=42)
    reference = fit_reference(data.x, data.y, ["0", "1", "2", "3"])
    gap = np.array([[22.5, 7.5]])
    assert flagged(gap, reference["ood"]).all()
    global_precision = np.linalg.inv(np.asarray(reference["covariance"]))
    global_distance = distance(gap, [reference["mean"]], global_precision)[0]
    assert global_distance < 1.0  # what a single global Mahalanobis distance would say


def test_singular_covariances_still_give_finite_distances() -> None:
    rng = np.random.default_rng(3)
    base = rng.normal(size=(100, 1))
    # a duplicated feature and a constant one: the covariance has rank 1
    x = np.column_stack([base, base, np.full(100, 4.0)]).astype(np.float32)
    y = (base[:, 0] > 0).astype(np.int64)
    detector = fit_reference(x, y, ["neg", "pos"])["ood"]
    assert np.isfinite(distance_from_metadata(x, detector)).all()
    assert np.isfinite(detector["threshold"])
    # off the line the data lives on, or off the constant: far out of distribution
    assert flagged(np.array([[0.0, 1.0, 4.0], [0.0, 0.0, 5.0]]), detector).all()
    assert not flagged(np.array([[0.5, 0.5, 4.0]]), detector).any()


def test_a_class_missing_from_the_training_part_is_left_out() -> None:
    x = np.array([[0.0, 0.0], [1.0, 0.1], [10.0, 10.0], [11.0, 10.2]], dtype=np.float32)
    y = np.array([0, 0, 2, 2])
    detector = fit_reference(x, y, ["a", "b", "c"])["ood"]
    assert detector["classes"] == ["a", "c"]
    assert len(detector["class_means"]) == 2


def test_the_block_is_plain_json_with_the_documented_keys() -> None:
    data = make_blobs(200, seed=0)
    reference = fit_reference(data.x, data.y, ["0", "1", "2", "3"])
    assert reference["n"] == 200
    assert reference["class_counts"] == [50, 50, 50, 50]
    assert np.asarray(reference["covariance"]).shape == (2, 2)
    assert reference["min"] == data.x.min(axis=0).tolist()
    assert reference["max"] == data.x.max(axis=0).tolist()
    assert reference["ood"]["method"] == "mahalanobis"
    assert reference["ood"]["reference"] == "nearest_class_mean"
    reloaded = json.loads(json.dumps(reference, allow_nan=False))
    assert reloaded == reference  # floats survive the JSON round trip exactly


def test_inputs_left_out_of_the_measure_change_no_distance() -> None:
    # A table's one-hot block (inputs 2..4) next to two numeric inputs: the distance is
    # measured on the numeric ones only, through zero rows and columns in the precision.
    rng = np.random.default_rng(4)
    y = rng.integers(0, 2, size=300)
    numeric = rng.normal(size=(300, 2)) + 3.0 * y[:, None]
    one_hot = np.eye(3)[rng.integers(0, 3, size=300)]
    x = np.hstack([numeric, one_hot])
    measured = np.array([True, True, False, False, False])
    detector = fit_reference(x, y, ["a", "b"], measured=measured)["ood"]
    precision = np.asarray(detector["precision"])
    assert detector["measured_on"] == [0, 1]
    assert not precision[2:].any()
    assert not precision[:, 2:].any()
    numeric_only = fit_reference(numeric, y, ["a", "b"])["ood"]
    np.testing.assert_allclose(precision[:2, :2], numeric_only["precision"], rtol=1e-9)
    changed = x.copy()
    changed[:, 2:] = [0.0, 0.0, 1.0]  # any category, even an unseen one
    np.testing.assert_allclose(
        distance_from_metadata(changed, detector), distance_from_metadata(x, detector)
    )
    assert detector["threshold"] == pytest.approx(numeric_only["threshold"])
