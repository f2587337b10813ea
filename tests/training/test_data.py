"""Training data: the blob recipe, CSV parsing and its refusals, the held-out split."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from model_training.data import (
    BLOB_CENTERS,
    DataError,
    carve_validation,
    default_test_size,
    default_validation_split,
    load_csv,
    make_blobs,
    split,
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


def write(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "data.csv"
    path.write_text(text)
    return path


def test_load_csv_reads_features_labels_and_names(tmp_path: Path) -> None:
    path = write(tmp_path, "height,weight,kind\n1.5,60,cat\n2,70,dog\n1,10,10\n0.5,5,2\n")
    data = load_csv(path)
    assert data.feature_names == ("height", "weight")
    assert data.class_names == ("2", "10", "cat", "dog")  # numbers in numeric order, then text
    assert data.x.tolist() == [[1.5, 60.0], [2.0, 70.0], [1.0, 10.0], [0.5, 5.0]]
    assert data.y.tolist() == [2, 3, 1, 0]


def test_load_csv_takes_the_named_label_column(tmp_path: Path) -> None:
    data = load_csv(write(tmp_path, "y,a,b\n0,1,2\n1,3,4\n"), label_column="y")
    assert data.feature_names == ("a", "b")
    assert data.x.tolist() == [[1.0, 2.0], [3.0, 4.0]]


@pytest.mark.parametrize(
    ("text", "label", "message"),
    [
        ("", None, "empty file"),
        ("a,b,label\n", None, "data rows"),
        ("a,b,label\n1,2,x\n3,4,y\n", "kind", "label column named 'kind'"),
        ("a,b,label\n1,two,x\n3,4,y\n", None, "data.csv:2: expected a number in column 'b'"),
        ("a,b,label\n1,2,x\n3,nan,y\n", None, "data.csv:3: expected a finite number"),
        ("a,b,label\n1,2,x\n3,4,x\n", None, "at least two classes"),
        ("a,b,label\n1,2,x\n3,4\n", None, "data.csv:3: expected 3 fields, received 2"),
        ("label\nx\ny\n", None, "at least one feature column"),
    ],
)
def test_load_csv_refuses_bad_data_saying_where(
    tmp_path: Path, text: str, label: str | None, message: str
) -> None:
    with pytest.raises(DataError, match=message):
        load_csv(write(tmp_path, text), label)
