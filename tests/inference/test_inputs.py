"""Instances of any number of steps, checked before any runtime sees them (in-process)."""

from __future__ import annotations

import numpy as np
import pytest

from service.errors import InvalidInput, PayloadTooLarge
from service.inference.inputs import features, whole_numbers


def test_rows_of_several_lengths_come_back_one_array_each() -> None:
    x, x32 = features([[1, 2, 3], [4], [5, 6]], [-1], 10)
    assert x32.dtype == object
    assert [row.tolist() for row in x32] == [[1, 2, 3], [4], [5, 6]]
    assert all(row.dtype == np.float32 for row in x32)
    assert all(row.dtype == np.float64 for row in x)


def test_rows_of_one_length_stay_one_array_each_so_batches_join() -> None:
    _, a = features([[1, 2], [3, 4]], [-1], 10)
    _, b = features([[5, 6, 7]], [-1], 10)
    joined = np.concatenate([a, b])  # what the batcher does with two requests
    assert [len(row) for row in joined] == [2, 2, 3]


def test_steps_of_several_features_keep_their_shape() -> None:
    _, x32 = features([[[1, 2, 3]], [[1, 2, 3], [4, 5, 6]]], [-1, 3], 10)
    assert [row.shape for row in x32] == [(1, 3), (2, 3)]


def test_a_binary_tensor_of_any_length_is_taken_row_by_row() -> None:
    _, x32 = features(np.arange(12, dtype=np.float32).reshape(2, 6), [-1], 10)
    assert [row.tolist() for row in x32] == [[0, 1, 2, 3, 4, 5], [6, 7, 8, 9, 10, 11]]


def test_more_steps_than_allowed_is_too_large_and_says_the_limit() -> None:
    with pytest.raises(PayloadTooLarge, match=r"at most 3 steps .* received 4 in instances\[1\]"):
        features([[1], [1, 2, 3, 4]], [-1], 3)


@pytest.mark.parametrize(
    ("instances", "shape", "message"),
    [
        (
            [[1], []],
            [-1],
            r"shape \[steps\] with 1 <= steps <= 5, received shape \[0\] in instances\[1\]",
        ),
        ([[[1, 2]], [[1, 2, 3]]], [-1, 2], r"received shape \[1, 3\] in instances\[1\]"),
        ([[1], [1, [2]]], [-1], r"ragged array or something other than numbers in instances\[1\]"),
        ([[1], [1, 1e39]], [-1], r"float32 range .* received 1e\+39 in instances\[1\]\[1\]"),
        ([], [-1], "at least one instance"),
    ],
)
def test_a_bad_instance_is_named(instances: list[object], shape: list[int], message: str) -> None:
    with pytest.raises(InvalidInput, match=message):
        features(instances, shape, 5)  # type: ignore[arg-type]


def test_token_ids_of_any_length_are_checked_per_instance_in_float64() -> None:
    x, _ = features([[1, 2], [16_777_217]], [-1], 10)  # 2**24 + 1: not a float32
    ids = whole_numbers(x, [-1], "int64", None, "int64 inputs")
    assert [row.tolist() for row in ids] == [[1, 2], [16_777_217]]
    assert ids[1].dtype == np.int64
    with pytest.raises(InvalidInput, match=r"from 0 to 99 .* received 100 in instances\[1\]\[0\]"):
        whole_numbers(features([[1, 2], [100]], [-1], 10)[0], [-1], "int64", (0, 99), "token ids")
    with pytest.raises(
        InvalidInput, match=r"whole numbers as token ids, received 2.5 in instances\[2\]\[1\]"
    ):
        whole_numbers(
            features([[1], [2], [3, 2.5]], [-1], 10)[0], [-1], "int64", (0, 99), "token ids"
        )
