"""Sequences of any length: a model whose time axis is unknown takes each instance at its
own length, exactly as Keras serves it one instance at a time.

The models are written as the Keras guides write them: token ids of any length through
``Embedding(mask_zero=True)`` and a ``Bidirectional(LSTM)`` ("Working with masking and
padding", the RNN text classifiers), and float steps through ``Conv1D`` and a ``GRU``.
Each is exported by the real command, then served; rows of different lengths in one
request, in concurrent requests (which the batcher joins) and through every protocol
must each equal Keras's answer for that row alone within 1e-5.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import httpx
import keras
import numpy as np
import pytest
from ai_edge_litert.interpreter import Interpreter

from tests.conftest import Server, start_server
from tests.training.exported import export_keras, native_and_v1

TOLERANCE = 1e-5
MAX_STEPS = 64
VOCABULARY = 200


def token_lstm() -> keras.Model:
    """Token ids of any length, 0 the padding the mask skips, a bidirectional LSTM."""
    inputs = keras.Input(shape=(None,), dtype="int64")
    x = keras.layers.Embedding(VOCABULARY, 16, mask_zero=True)(inputs)
    x = keras.layers.Bidirectional(keras.layers.LSTM(8))(x)
    x = keras.layers.Dense(8, activation="relu")(x)
    return keras.Model(inputs, keras.layers.Dense(3, activation="softmax")(x))


def float_gru() -> keras.Model:
    """Three features per step, any number of steps; logits head (from_logits=True)."""
    return keras.Sequential(
        [
            keras.Input((None, 3)),
            keras.layers.Conv1D(8, 3, padding="same", activation="relu"),
            keras.layers.GRU(6),
            keras.layers.Dense(4),
        ]
    )


def one_by_one(model: keras.Model, rows: list[np.ndarray], logits: bool) -> np.ndarray:
    """Keras's answer for each row alone (a batch of one), in float64."""
    out = np.concatenate([np.asarray(model(row[None]), dtype=np.float64) for row in rows])
    if logits:
        out = np.exp(out - out.max(axis=1, keepdims=True))
        out /= out.sum(axis=1, keepdims=True)
    return out


def token_rows(rng: np.random.Generator, lengths: list[int]) -> list[np.ndarray]:
    rows = [rng.integers(1, VOCABULARY, size=n) for n in lengths]
    rows[0][-1:] = 0  # trailing padding, which the mask skips
    return rows


def float_rows(rng: np.random.Generator, lengths: list[int]) -> list[np.ndarray]:
    return [rng.normal(size=(n, 3)).astype(np.float32) for n in lengths]


LENGTHS = [1, 2, 5, 9, 30, MAX_STEPS]


@pytest.fixture(scope="module")
def sequences(
    tmp_path_factory: pytest.TempPathFactory,
) -> Iterator[tuple[Server, dict[str, tuple[list[np.ndarray], np.ndarray]], Path]]:
    """Both models exported and served (batching on), with rows and Keras's answers."""
    workdir = tmp_path_factory.mktemp("sequences")
    rng = np.random.default_rng(0)
    cases: dict[str, tuple[list[np.ndarray], np.ndarray]] = {}
    for name, build, rows, logits in (
        ("tokens", token_lstm, token_rows(rng, LENGTHS), False),
        ("steps", float_gru, float_rows(rng, LENGTHS), True),
    ):
        model = build()
        export_keras(model, workdir, name)
        cases[name] = (rows, one_by_one(model, rows, logits))
    server = start_server(
        workdir,
        workdir / "server.log",
        SERVICE_MODEL_REPOSITORY="models",
        SERVICE_DEFAULT_MODEL="tokens",
        SERVICE_MAX_STEPS=str(MAX_STEPS),
        SERVICE_BATCHING="on",
        SERVICE_BATCH_MAX_WAIT_MS="20",
    )
    yield server, cases, workdir / "models"
    assert server.stop() == 0, server.output()


def test_the_export_records_any_length_and_runs_each_row_at_its_own(
    sequences: tuple[Server, dict[str, tuple[list[np.ndarray], np.ndarray]], Path],
) -> None:
    _, cases, repository = sequences
    tokens = json.loads((repository / "tokens/1/metadata.json").read_text())["input"]
    assert tokens == {"shape": [-1], "dtype": "int64", "kind": "token_ids", "id_range": [0, 199]}
    steps = json.loads((repository / "steps/1/metadata.json").read_text())["input"]
    assert steps == {"shape": [-1, 3], "dtype": "float32", "kind": "sequence"}
    for name, (rows, expected) in cases.items():
        interpreter = Interpreter(model_path=str(repository / name / "1/model.tflite"))
        (inp,), (out,) = interpreter.get_input_details(), interpreter.get_output_details()
        assert list(inp["shape_signature"][:2]) == [1, -1]  # one instance, any length
        for row, want in zip(rows, expected, strict=True):
            interpreter.resize_tensor_input(inp["index"], [1, *row.shape])
            interpreter.allocate_tensors()
            interpreter.set_tensor(inp["index"], row[None].astype(inp["dtype"]))
            interpreter.invoke()
            z = interpreter.get_tensor(out["index"]).astype(np.float64)[0]
            p = np.exp(z - z.max()) / np.exp(z - z.max()).sum()
            np.testing.assert_allclose(p, want, atol=TOLERANCE, rtol=0)


def v2_tensor(name: str, row: np.ndarray) -> dict[str, Any]:
    batch = row[None]
    datatype = "INT64" if name == "tokens" else "FP32"
    return {
        "name": "input",
        "datatype": datatype,
        "shape": list(batch.shape),
        "data": batch.ravel().tolist(),
    }


def test_rows_of_different_lengths_are_each_served_as_keras_serves_them_alone(
    sequences: tuple[Server, dict[str, tuple[list[np.ndarray], np.ndarray]], Path],
) -> None:
    server, cases, _ = sequences
    with httpx.Client(base_url=server.url, timeout=60) as client:
        for name, (rows, expected) in cases.items():
            instances = [row.tolist() for row in rows]
            for protocol, got in native_and_v1(client, name, instances).items():
                np.testing.assert_allclose(got, expected, atol=TOLERANCE, err_msg=protocol)
            columnar = client.post(f"/v1/models/{name}:predict", json={"inputs": instances})
            assert columnar.status_code == 200, columnar.text
            np.testing.assert_allclose(columnar.json()["outputs"], expected, atol=TOLERANCE)
            for row, want in zip(rows, expected, strict=True):  # a V2 tensor is rectangular
                v2 = client.post(
                    f"/v2/models/{name}/infer", json={"inputs": [v2_tensor(name, row)]}
                )
                assert v2.status_code == 200, v2.text
                (out,) = [o for o in v2.json()["outputs"] if o["name"] == "probabilities"]
                np.testing.assert_allclose(out["data"], want, atol=TOLERANCE, rtol=0)
            metadata = client.get(f"/v2/models/{name}").json()
            assert metadata["inputs"][0]["shape"] == [-1, *([-1] if name == "tokens" else [-1, 3])]


def test_concurrent_requests_of_different_lengths_are_batched_and_stay_exact(
    sequences: tuple[Server, dict[str, tuple[list[np.ndarray], np.ndarray]], Path],
) -> None:
    server, cases, _ = sequences
    rows, expected = cases["tokens"]
    order = [i % len(rows) for i in range(48)]

    def ask(i: int) -> list[float]:
        body = {"instances": [rows[i].tolist()]}
        answer = httpx.post(f"{server.url}/models/tokens/predict", json=body, timeout=60)
        assert answer.status_code == 200, answer.text
        return list(answer.json()["predictions"][0]["probabilities"])

    with ThreadPoolExecutor(8) as pool:
        got = list(pool.map(ask, order))
    np.testing.assert_allclose(got, expected[order], atol=TOLERANCE, rtol=0)
    metrics = httpx.get(f"{server.url}/metrics", timeout=10).text
    assert "tokens" in metrics


@pytest.mark.parametrize(
    ("name", "instances", "status", "message"),
    [
        ("tokens", [list(range(1, MAX_STEPS + 2))], 413, f"at most {MAX_STEPS} steps"),
        ("tokens", [[1, 2], []], 422, "received shape [0] in instances[1]"),
        (
            "tokens",
            [[1, 2], [3, 2.5]],
            422,
            "whole numbers as token ids, received 2.5 in instances[1][1]",
        ),
        ("tokens", [[1], [4, VOCABULARY]], 422, f"received {VOCABULARY} in instances[1][1]"),
        ("steps", [[[1, 2, 3]], [[1, 2]]], 422, "shape [steps, 3]"),
        ("steps", [[[1, 2, 3]], [[1, 2, 3], [1, 2, 1e39]]], 422, "float32 range"),
    ],
)
def test_bad_instances_of_any_length_get_a_clear_error(
    sequences: tuple[Server, dict[str, tuple[list[np.ndarray], np.ndarray]], Path],
    name: str,
    instances: list[Any],
    status: int,
    message: str,
) -> None:
    server, _, _ = sequences
    answer = httpx.post(
        f"{server.url}/models/{name}/predict", json={"instances": instances}, timeout=30
    )
    assert answer.status_code == status, answer.text
    assert message in answer.json()["error"]
    still = httpx.post(
        f"{server.url}/models/{name}/predict", json={"instances": [instances[0][:1]]}
    )
    assert still.status_code == 200  # and everyone else is still served
