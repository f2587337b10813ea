"""Training data: the blob recipe, the held-out split, the validation split (CSV: test_tables)."""

from __future__ import annotations

import numpy as np
import pytest

from model_training.data import (
    BLOB_CENTERS,
    DataError,
    carve_validation,
    default_test_size,
    default_validation_split,
    make_blobs,
    split,
    split_rows,
)


def test_make_blobs_draws_equal_groups_around_each_centre() -> None:
    data = make_blobs(1000, seed=3)
    assert data.x.shape == (1000, 2)
    assert data.x.dtype == np.float32
    assert np.bincount(data.y).tolist() == [250, 250, 250, 250]
    for k, centre in enumerate(BLOB_CENTERS):
        group = data.x[data.y == k].astype(np.float64)
        assert np.allclose(group.mean(axis=0), centre, atol=0.3)
        assert np.allclose(group.std(axis=0), 1.5, atol=0.2)


def test_make_blobs_is_deterministic_per_seed() -> None:
    a, b, c = make_blobs(200, seed=1), make_blobs(200, seed=1), make_blobs(200, seed=2)
    assert np.array_equal(a.x, b.x)
    assert np.array_equal(a.y, b.y)
    assert not np.array_equal(a.x, c.x)


def test_split_holds_out_the_requested_count_without_overlap() -> None:
    data = make_blobs(1000, seed=0)
    parts = split(data, 250, seed=0)
    assert len(parts.y_test) == 250
    assert len(parts.y_train) == 750
    rows = {tuple(r) for r in parts.x_train.tolist()} & {tuple(r) for r in parts.x_test.tolist()}
    assert not rows


def test_split_accepts_a_fraction() -> None:
    parts = split(make_blobs(100, seed=0), 0.2, seed=0)
    assert len(parts.y_test) == 20


def test_split_refuses_a_test_size_that_leaves_no_training_data() -> None:
    with pytest.raises(DataError, match="test size"):
        split(make_blobs(100, seed=0), 100, seed=0)


@pytest.mark.parametrize(
    ("rows", "classes", "expected"),
    [(150, 3, 30), (569, 2, 114), (10, 2, 2), (10, 4, 4), (6, 5, 3), (2, 2, 1)],
)
def test_default_test_size_is_a_fifth_at_least_one_per_class_at_most_half(
    rows: int, classes: int, expected: int
) -> None:
    assert default_test_size(rows, classes) == expected
    data = make_blobs(rows, centers=[(0.0, 0.0)] * classes, seed=0)
    parts = split(data, default_test_size(rows, classes), seed=0)
    assert (len(parts.y_test), len(parts.y_train)) == (expected, rows - expected)


@pytest.mark.parametrize(
    ("n_train", "classes", "validation"),
    [(750, 4, 150), (120, 3, 24), (10, 4, 4), (3, 3, 2), (2, 2, 1), (1, 2, 0)],
)
def test_default_validation_split_holds_a_fifth_at_least_one_per_class(
    n_train: int, classes: int, validation: int
) -> None:
    fraction = default_validation_split(n_train, classes)
    x = np.zeros((n_train, 2), np.float32)
    parts = carve_validation(x, np.arange(n_train), fraction)
    assert len(parts.y_val) == validation
    assert len(parts.y_fit) >= 1
    assert default_validation_split(750, 4) == 0.2  # the blobs' recipe, exactly


def test_carve_validation_takes_the_last_part_as_keras_validation_split_does() -> None:
    x = np.arange(20, dtype=np.float32).reshape(10, 2)
    parts = carve_validation(x, np.arange(10), 0.25)  # Keras: split at floor(10 * 0.75) = 7
    assert parts.y_fit.tolist() == list(range(7))
    assert parts.y_val.tolist() == [7, 8, 9]
    assert parts.x_val.tolist() == x[7:].tolist()
    assert len(carve_validation(x[:3], np.arange(3), 0.2).y_val) == 1  # floor(2.4) = 2 to fit


def test_carve_validation_of_zero_leaves_no_validation() -> None:
    parts = carve_validation(np.zeros((5, 2), np.float32), np.arange(5), 0.0)
    assert len(parts.y_fit) == 5
    assert parts.x_val.shape == (0, 2)


def test_carve_validation_refuses_a_split_with_an_empty_side() -> None:
    with pytest.raises(DataError, match="validation split"):
        carve_validation(np.zeros((3, 2), np.float32), np.arange(3), 0.9)


def test_split_rows_are_the_rows_split_holds_out() -> None:
    data = make_blobs(100, seed=3)
    train, test = split_rows(100, 0.2, seed=9)
    parts = split(data, 0.2, seed=9)
    assert sorted([*train, *test]) == list(range(100))
    np.testing.assert_array_equal(parts.x_test, data.x[test])
    np.testing.assert_array_equal(parts.y_train, data.y[train])
