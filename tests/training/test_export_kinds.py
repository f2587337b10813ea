"""``python -m model_training export`` on every kind of single-input classifier.

Each model is built in ``tmp_path``, saved, exported by the real command, and the
written version's ``model.tflite`` (run in the LiteRT interpreter the service uses)
must give the Keras model's probabilities within 1e-5 on valid inputs of its kind.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path
from typing import Any

import keras
import numpy as np
import pytest
from ai_edge_litert.interpreter import Interpreter

from model_training.artifact import InputSpec, Metadata
from model_training.cli import main as train_main


def gray_cnn() -> keras.Model:
    """An MNIST-style Sequential CNN taking 0..255 pixels, softmax fused in the last Dense."""
    return keras.Sequential(
        [
            keras.Input((28, 28, 1)),
            keras.layers.Rescaling(1 / 255),
            keras.layers.Conv2D(4, 3, activation="relu"),
            keras.layers.MaxPooling2D(),
            keras.layers.Flatten(),
            keras.layers.Dense(10, activation="softmax"),
        ]
    )


def colour_cnn() -> keras.Model:
    """A functional colour CNN mapping 0..255 to [-1, 1], softmax as its own layer."""
    inputs = keras.Input((32, 32, 3))
    x = keras.layers.Rescaling(1 / 127.5, offset=-1)(inputs)
    x = keras.layers.Conv2D(4, 3, activation="relu")(x)
    x = keras.layers.GlobalAveragePooling2D()(x)
    x = keras.layers.Dense(5)(x)
    return keras.Model(inputs, keras.layers.Softmax()(x))


def unit_image_cnn() -> keras.Model:
    """A colour CNN whose trainer divided by 255 outside: it takes pixels in [0, 1]."""
    inputs = keras.Input((12, 12, 3))
    x = keras.layers.Conv2D(3, 3, activation="relu")(inputs)
    x = keras.layers.Flatten()(x)
    return keras.Model(inputs, keras.layers.Dense(4, activation="softmax")(x))


def sequence_lstm() -> keras.Model:
    """A [16, 3] sequence model with a Normalization inside and softmax as an Activation."""
    return keras.Sequential(
        [
            keras.Input((16, 3)),
            keras.layers.Normalization(mean=[1.0, 2.0, 3.0], variance=[4.0, 4.0, 4.0]),
            keras.layers.LSTM(8),
            keras.layers.Dense(3),
            keras.layers.Activation("softmax"),
        ]
    )


def sequence_conv() -> keras.Model:
    """A functional [16, 3] Conv1D sequence model."""
    inputs = keras.Input((16, 3))
    x = keras.layers.Conv1D(6, 3, activation="relu")(inputs)
    x = keras.layers.GlobalMaxPooling1D()(x)
    return keras.Model(inputs, keras.layers.Dense(4, activation="softmax")(x))


def token_ids() -> keras.Model:
    """A Sequential int32 token-id model with an Embedding."""
    return keras.Sequential(
        [
            keras.Input((12,), dtype="int32"),
            keras.layers.Embedding(50, 4),
            keras.layers.GlobalAveragePooling1D(),
            keras.layers.Dense(3, activation="softmax"),
        ]
    )


def table_with_normalization() -> keras.Model:
    """A table model with a Normalization first: still a table, feature names as before."""
    inputs = keras.Input((3,))
    x = keras.layers.Normalization(mean=[10.0, 0.0, -5.0], variance=[9.0, 1.0, 4.0])(inputs)
    x = keras.layers.Dense(8, activation="relu")(x)
    return keras.Model(inputs, keras.layers.Dense(2, activation="softmax")(x))


CASES: dict[str, tuple[Callable[[], keras.Model], dict[str, Any]]] = {
    "gray": (
        gray_cnn,
        {"shape": [28, 28, 1], "dtype": "float32", "kind": "image", "pixel_range": [0, 255]},
    ),
    "colour": (
        colour_cnn,
        {"shape": [32, 32, 3], "dtype": "float32", "kind": "image", "pixel_range": [0, 255]},
    ),
    "unit": (
        unit_image_cnn,
        {"shape": [12, 12, 3], "dtype": "float32", "kind": "image", "pixel_range": [0, 1]},
    ),
    "lstm": (sequence_lstm, {"shape": [16, 3], "dtype": "float32", "kind": "sequence"}),
    "conv1d": (sequence_conv, {"shape": [16, 3], "dtype": "float32", "kind": "sequence"}),
    "tokens": (
        token_ids,
        {"shape": [12], "dtype": "int32", "kind": "token_ids", "id_range": [0, 49]},
    ),
    "table": (table_with_normalization, {"shape": [3], "dtype": "float32", "kind": "table"}),
}


def export_main(model_file: Path, repository: Path, *extra: str) -> int:
    argv = ["export", str(model_file), "--name", "theirs", "--model-repository", str(repository)]
    return train_main([*argv, *extra])


def served_probabilities(tflite: Path, x: np.ndarray) -> np.ndarray:
    """The service's recipe: LiteRT logits, then a float64 softmax."""
    interpreter = Interpreter(model_path=str(tflite), num_threads=1)
    (inp,), (out,) = interpreter.get_input_details(), interpreter.get_output_details()
    interpreter.resize_tensor_input(inp["index"], list(x.shape))
    interpreter.allocate_tensors()
    interpreter.set_tensor(inp["index"], x.astype(inp["dtype"]))
    interpreter.invoke()
    logits = interpreter.get_tensor(out["index"]).astype(np.float64)
    z = np.exp(logits - logits.max(axis=1, keepdims=True))
    return np.asarray(z / z.sum(axis=1, keepdims=True))


@pytest.mark.parametrize("case", sorted(CASES))
def test_every_kind_exports_with_its_input_and_serves_keras_probabilities(
    case: str, tmp_path: Path
) -> None:
    build, expected_input = CASES[case]
    keras.utils.set_random_seed(0)
    model = build()
    model.save(tmp_path / "model.keras")
    assert export_main(tmp_path / "model.keras", tmp_path / "repo") == 0

    version = tmp_path / "repo" / "theirs" / "1"
    metadata = Metadata.model_validate_json((version / "metadata.json").read_text())
    assert metadata.input is not None
    assert metadata.input.model_dump(exclude_none=True) == InputSpec(**expected_input).model_dump(
        exclude_none=True
    )
    assert metadata.input_dim == int(np.prod(expected_input["shape"]))
    if expected_input["kind"] == "table":
        assert metadata.feature_names == ["x1", "x2", "x3"]
    else:
        assert metadata.feature_names == []
    assert metadata.ood is None
    assert metadata.extra_outputs == 0

    x = metadata.input.probe(32, np.random.default_rng(7))
    expected = np.asarray(model(x, training=False), dtype=np.float64)
    served = served_probabilities(version / "model.tflite", x)
    np.testing.assert_allclose(served, expected, atol=1e-5)


def test_kind_and_pixel_range_can_be_overridden(tmp_path: Path) -> None:
    keras.utils.set_random_seed(0)
    unit_image_cnn().save(tmp_path / "model.keras")
    assert export_main(tmp_path / "model.keras", tmp_path / "repo", "--pixel-range", "-1", "1") == 0
    metadata = json.loads((tmp_path / "repo" / "theirs" / "1" / "metadata.json").read_text())
    assert metadata["input"]["pixel_range"] == [-1, 1]
    # An image-shaped input may be declared a plain array.
    assert export_main(tmp_path / "model.keras", tmp_path / "repo", "--kind", "sequence") == 0
    metadata = json.loads((tmp_path / "repo" / "theirs" / "2" / "metadata.json").read_text())
    assert metadata["input"] == {"shape": [12, 12, 3], "dtype": "float32", "kind": "sequence"}
    assert metadata["feature_names"] == []


@pytest.mark.parametrize(
    ("extra", "message"),
    [
        (("--kind", "table"), "expected a one-dimensional input for kind 'table'"),
        (("--kind", "sequence", "--pixel-range", "0", "1"), "expected --pixel-range only"),
        (("--pixel-range", "1", "0"), "expected a pixel range LOW HIGH with LOW < HIGH"),
        (("--feature-names", "a,b"), "expected no feature names for a image input"),
    ],
)
def test_overrides_that_do_not_fit_the_input_are_refused(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], extra: tuple[str, ...], message: str
) -> None:
    keras.utils.set_random_seed(0)
    unit_image_cnn().save(tmp_path / "model.keras")
    assert export_main(tmp_path / "model.keras", tmp_path / "repo", *extra) == 1
    err = capsys.readouterr().err
    assert message in err
    assert err.count("\n") == 1
    assert not list((tmp_path / "repo").rglob("*.tflite"))


def test_a_kind_for_a_model_of_several_inputs_is_refused_with_one_clear_line(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """Several inputs are served (tests/training/test_export_named.py), each of the kind
    read from the model: one --kind for all of them is refused."""
    first, second = keras.Input((3,)), keras.Input((28, 28, 1))
    x = keras.layers.Concatenate()([first, keras.layers.Flatten()(second)])
    model = keras.Model([first, second], keras.layers.Dense(2, activation="softmax")(x))
    model.save(tmp_path / "model.keras")
    assert export_main(tmp_path / "model.keras", tmp_path / "repo", "--kind", "table") == 1
    err = capsys.readouterr().err
    assert err.startswith(f"error: cannot export {tmp_path / 'model.keras'}: ")
    assert "expected no --kind" in err
    assert err.count("\n") == 1
    assert not list((tmp_path / "repo").rglob("*.keras"))
