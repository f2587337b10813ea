"""Instances of a model of several named inputs, joined into one structured batch."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Sequence
from typing import Any

import numpy as np
import pytest

from service.errors import InvalidInput
from service.inference.batching import Batcher, BatchingConfig
from service.inference.named import NamedColumns, batch, from_rows
from service.repository.artifact import InputSpec

SPEC = InputSpec.model_validate(
    {
        "shape": [1 + 3 + 2 * 2],
        "kind": "named",
        "inputs": [
            {"name": "age", "shape": [1]},
            {"name": "city", "shape": [3], "dtype": "int64", "kind": "text", "id_range": [0, 2]},
            {"name": "grid", "shape": [2, 2], "dtype": "int32"},
        ],
    }
)
INPUTS = SPEC.inputs or []
VOCABULARY = ["[UNK]", "Lyon", "Paris"]


def one_hot(strings: Sequence[Any]) -> np.ndarray:
    """A StringLookup(output_mode="one_hot") of ``VOCABULARY``, as the service runs it."""
    out = np.zeros((len(strings), 3), dtype=np.int64)
    for i, s in enumerate(strings):
        out[i, VOCABULARY.index(s) if s in VOCABULARY else 0] = 1
    return out


LOOKUPS = {"city": one_hot}
ROWS = [
    {"age": 41, "city": "Lyon", "grid": [[1, 2], [3, 4]]},
    {"age": [70.5], "city": "Tokyo", "grid": [[0, 0], [0, 1]]},
]


def test_objects_become_one_field_per_input_in_each_inputs_dtype() -> None:
    x = batch(from_rows(ROWS, INPUTS), INPUTS, LOOKUPS, max_steps=10)
    assert len(x) == 2
    assert x.dtype == SPEC.batch_dtype
    np.testing.assert_array_equal(x["age"], np.array([[41.0], [70.5]], dtype=np.float32))
    np.testing.assert_array_equal(x["city"], [[0, 1, 0], [1, 0, 0]])  # Tokyo: out of vocabulary
    assert x["grid"].dtype == np.int32
    assert x["grid"].shape == (2, 2, 2)


def test_columns_give_the_same_batch_and_batches_join_as_any_batch() -> None:
    columns = NamedColumns(
        {
            "grid": np.array([[[1, 2], [3, 4]], [[0, 0], [0, 1]]], dtype=np.float64),
            "age": np.array([41.0, 70.5]),  # a V2 tensor [N] for an input of shape [1]
            "city": ["Lyon", "Tokyo"],
        }
    )
    x = batch(columns, INPUTS, LOOKUPS, max_steps=10)
    np.testing.assert_array_equal(x, batch(from_rows(ROWS, INPUTS), INPUTS, LOOKUPS, 10))
    joined = np.concatenate([x, x[:1]])  # what the batcher does with requests
    assert len(joined) == 3
    assert joined.dtype == x.dtype


class FieldsRuntime:
    """A runtime of several named inputs that, like TensorFlow, costs time per call: each
    row's logits are its fields' sums, so every row shows whose it is."""

    blocking = True

    def __init__(self) -> None:
        self.calls: list[int] = []

    def logits(self, features: np.ndarray) -> np.ndarray:
        self.calls.append(len(features))
        time.sleep(0.01)
        return sums(features)


def sums(x: np.ndarray) -> np.ndarray:
    return np.stack(
        [x[name].reshape(len(x), -1).sum(axis=1).astype(np.float64) for name in x.dtype.names],
        axis=1,
    )


def test_concurrent_requests_of_named_inputs_are_batched_and_each_gets_its_own_rows() -> None:
    runtime = FieldsRuntime()
    batcher = Batcher(runtime, BatchingConfig(enabled=True, max_batch_size=64, max_wait=0.005))
    requests = [
        batch(from_rows([{**ROWS[i % 2], "age": i}] * (1 + i % 3), INPUTS), INPUTS, LOOKUPS, 10)
        for i in range(30)
    ]

    async def together() -> list[np.ndarray]:
        return list(await asyncio.gather(*(batcher.logits(x) for x in requests)))

    for x, got in zip(requests, asyncio.run(together()), strict=True):
        np.testing.assert_array_equal(got, sums(x))
    assert len(runtime.calls) < 10  # 30 requests, far fewer calls
    assert sum(runtime.calls) == sum(len(x) for x in requests)


@pytest.mark.parametrize(
    ("rows", "message"),
    [
        ([{"age": 1, "city": "Lyon"}], "received none for input 'grid' in instances[0]"),
        ([{**ROWS[0], "zip": 1}], "unknown input 'zip' in instances[0]"),
        ([ROWS[0], {**ROWS[1], "grid": [[1, 2]]}], "input 'grid'"),
        ([{**ROWS[0], "grid": [[1.5, 2], [3, 4]]}], "input 'grid'"),
        ([{**ROWS[0], "city": 3}], "expected a string for input 'city'"),
        ([{**ROWS[0], "age": [1, 2]}], "input 'age'"),
    ],
)
def test_what_an_input_cannot_take_is_refused_naming_it(
    rows: list[dict[str, Any]], message: str
) -> None:
    with pytest.raises(InvalidInput, match=message.replace("[", r"\[").replace("]", r"\]")):
        batch(from_rows(rows, INPUTS), INPUTS, LOOKUPS, max_steps=10)


def test_columns_of_different_lengths_are_refused() -> None:
    columns = NamedColumns({"age": [1, 2], "city": ["Lyon"], "grid": [[[1, 2], [3, 4]]]})
    with pytest.raises(InvalidInput, match="the same number of instances"):
        batch(columns, INPUTS, LOOKUPS, max_steps=10)
