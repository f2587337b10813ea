"""The models people already have: logits and sigmoid heads, legacy ``.h5`` files, custom
classes, TensorFlow SavedModels and TF Serving base paths, exported by the real command.

Each model is written and trained the way the Keras and TensorFlow tutorials write
them (in ``tmp_path``). The written version's ``model.tflite``, run in the LiteRT
interpreter with the service's float64 softmax, must give the distribution the
user's model stands for (``softmax(model(x))`` for logits, ``[1 - p, p]`` for a
sigmoid, the SavedModel signature's own output) within 1e-5; and the running
service must answer the same through the native API, TF Serving's and the Open
Inference Protocol's.
"""

from __future__ import annotations

import json
import subprocess
import sys
import textwrap
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import httpx
import keras
import numpy as np
import pytest
import tensorflow as tf
from sklearn.datasets import load_breast_cancer, load_digits

from model_training.cli import main as train_main
from tests.conftest import ROOT, Server, start_server, subprocess_env
from tests.training.exported import export_keras, native_and_v1
from tests.training.test_export_kinds import served_probabilities

TOLERANCE = 1e-5


def digits() -> tuple[np.ndarray, np.ndarray]:
    """scikit-learn's 8x8 digits scaled to [0, 1], as the MNIST quickstart scales MNIST."""
    data = load_digits()
    return (data.images / 16.0).astype(np.float32), data.target.astype(np.int64)


def cancer() -> tuple[np.ndarray, np.ndarray]:
    data = load_breast_cancer()
    return data.data.astype(np.float32), data.target.astype(np.int64)


def quickstart() -> tuple[keras.Model, np.ndarray]:
    """TensorFlow's beginner quickstart: no softmax in the model, from_logits=True."""
    x, y = digits()
    model = keras.models.Sequential(
        [
            keras.layers.Input((8, 8)),
            keras.layers.Flatten(),
            keras.layers.Dense(128, activation="relu"),
            keras.layers.Dropout(0.2),
            keras.layers.Dense(10),
        ]
    )
    loss = keras.losses.SparseCategoricalCrossentropy(from_logits=True)
    model.compile(optimizer="adam", loss=loss, metrics=["accuracy"])
    model.fit(x, y, epochs=2, verbose=0)
    return model, x[:32]


def _normalized_table(x: np.ndarray) -> tuple[keras.KerasTensor, keras.KerasTensor]:
    inputs = keras.Input((x.shape[1],))
    normalize = keras.layers.Normalization()
    normalize.adapt(x)
    return inputs, keras.layers.Dense(16, activation="relu")(normalize(inputs))


def table_logits() -> tuple[keras.Model, np.ndarray]:
    """A table classifier with a two-logit head, trained with from_logits=True."""
    x, y = cancer()
    inputs, hidden = _normalized_table(x)
    model = keras.Model(inputs, keras.layers.Dense(2)(hidden))
    model.compile("adam", keras.losses.SparseCategoricalCrossentropy(from_logits=True))
    model.fit(x, y, epochs=3, verbose=0)
    return model, x[:32]


def binary_sigmoid() -> tuple[keras.Model, np.ndarray]:
    """The most common binary recipe: Dense(1, activation='sigmoid') + binary_crossentropy."""
    x, y = cancer()
    inputs, hidden = _normalized_table(x)
    model = keras.Model(inputs, keras.layers.Dense(1, activation="sigmoid")(hidden))
    model.compile("adam", "binary_crossentropy", metrics=["accuracy"])
    model.fit(x, y, epochs=3, verbose=0)
    return model, x[:32]


def binary_sigmoid_layer() -> tuple[keras.Model, np.ndarray]:
    """The sigmoid as its own layer, in a Sequential model."""
    x, y = cancer()
    normalize = keras.layers.Normalization()
    normalize.adapt(x)
    model = keras.Sequential(
        [
            keras.Input((30,)),
            normalize,
            keras.layers.Dense(8, activation="relu"),
            keras.layers.Dense(1),
            keras.layers.Activation("sigmoid"),
        ]
    )
    model.compile("adam", "binary_crossentropy")
    model.fit(x, y, epochs=2, verbose=0)
    return model, x[:32]


def binary_logit() -> tuple[keras.Model, np.ndarray]:
    """One linear output trained with BinaryCrossentropy(from_logits=True)."""
    x, y = cancer()
    inputs, hidden = _normalized_table(x)
    model = keras.Model(inputs, keras.layers.Dense(1)(hidden))
    model.compile("adam", keras.losses.BinaryCrossentropy(from_logits=True))
    model.fit(x, y, epochs=2, verbose=0)
    return model, x[:32]


def softmax64(z: np.ndarray) -> np.ndarray:
    e = np.exp(z - z.max(axis=1, keepdims=True))
    return np.asarray(e / e.sum(axis=1, keepdims=True))


def expected_distribution(model: keras.Model, x: np.ndarray, output: str) -> np.ndarray:
    """What the user's model stands for, from its own output (float64)."""
    y = np.asarray(model(x, training=False), dtype=np.float64)
    if output == "logits":
        return softmax64(y)
    if output == "sigmoid_logit":
        p = 0.5 * (1.0 + np.tanh(y / 2.0))
        return np.concatenate([1 - p, p], axis=1)
    if output == "sigmoid":
        return np.concatenate([1 - y, y], axis=1)
    return y


def export(model_file: Path, repository: Path, name: str, *extra: str) -> int:
    argv = ["export", str(model_file), "--name", name, "--model-repository", str(repository)]
    return train_main([*argv, *extra])


HEADS: dict[str, tuple[Callable[[], tuple[keras.Model, np.ndarray]], str, tuple[str, ...]]] = {
    "quickstart": (quickstart, "logits", ()),
    "table_logits": (table_logits, "logits", ()),
    "binary_sigmoid": (binary_sigmoid, "sigmoid", ()),
    "binary_sigmoid_layer": (binary_sigmoid_layer, "sigmoid", ()),
    "binary_logit": (binary_logit, "sigmoid_logit", ("--output", "sigmoid")),
}


@pytest.mark.parametrize("case", sorted(HEADS))
def test_a_logits_or_sigmoid_head_serves_the_distribution_keras_gives(
    case: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    build, output, extra = HEADS[case]
    model, x = build()
    model.save(tmp_path / "model.keras")
    assert export(tmp_path / "model.keras", tmp_path / "repo", case, *extra) == 0
    printed = capsys.readouterr().out
    version = tmp_path / "repo" / case / "1"
    metadata = json.loads((version / "metadata.json").read_text())
    assert metadata["training"]["output"] == output.removesuffix("_logit")
    assert f"head: {metadata['training']['head']}\n" in printed
    if output == "logits":
        assert "as logits" in printed
        assert "--output" in printed
    else:
        assert metadata["class_names"] == ["0", "1"]
        assert "[1 - p, p]" in printed
    served = served_probabilities(version / "model.tflite", x)
    expected = expected_distribution(model, x, output)
    assert served.shape == expected.shape
    np.testing.assert_allclose(served, expected, atol=TOLERANCE, rtol=0)
    # The saved model.keras is the classifier ending in that softmax: what a Keras user loads.
    saved = keras.saving.load_model(version / "model.keras", safe_mode=True)
    np.testing.assert_allclose(np.asarray(saved(x)), expected, atol=TOLERANCE, rtol=0)


def test_mobilenet_v3_whose_logits_sit_before_a_flatten_exports(tmp_path: Path) -> None:
    model = keras.applications.MobileNetV3Small(
        weights=None, input_shape=(32, 32, 3), classes=10, include_preprocessing=True
    )
    model.save(tmp_path / "model.keras")
    assert export(tmp_path / "model.keras", tmp_path / "repo", "v3") == 0
    metadata = json.loads((tmp_path / "repo/v3/1/metadata.json").read_text())
    assert metadata["input"]["pixel_range"] == [0.0, 255.0]
    x = np.random.default_rng(0).uniform(0, 255, size=(4, 32, 32, 3)).astype(np.float32)
    served = served_probabilities(tmp_path / "repo/v3/1/model.tflite", x)
    np.testing.assert_allclose(served, np.asarray(model(x), np.float64), atol=TOLERANCE, rtol=0)


@pytest.mark.parametrize("reshape", ["flatten", "reshape"])
def test_a_softmax_over_a_1x1_convolution_then_reshaped_cuts_at_its_logits(
    reshape: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """A fully convolutional head: the softmax over the channels of a 1x1 map, then
    flattened or reshaped to (batch, K): the logits are the map before the softmax."""
    inputs = keras.Input((8, 8, 3))
    x = keras.layers.Conv2D(6, 3, activation="relu")(inputs)
    x = keras.layers.GlobalAveragePooling2D(keepdims=True)(x)
    x = keras.layers.Softmax(name="class_softmax")(keras.layers.Conv2D(4, 1)(x))
    last = keras.layers.Flatten() if reshape == "flatten" else keras.layers.Reshape((4,))
    model = keras.Model(inputs, last(x))
    model.save(tmp_path / "model.keras")
    assert export(tmp_path / "model.keras", tmp_path / "repo", "conv") == 0
    assert "enters the softmax of 'class_softmax'" in capsys.readouterr().out
    x_in = np.random.default_rng(2).uniform(0, 1, size=(6, 8, 8, 3)).astype(np.float32)
    served = served_probabilities(tmp_path / "repo/conv/1/model.tflite", x_in)
    np.testing.assert_allclose(served, np.asarray(model(x_in), np.float64), atol=TOLERANCE)


def refused(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], model: keras.Model, *extra: str
) -> str:
    """Save and export ``model``; assert exit 1, one line, nothing written; the line."""
    model.save(tmp_path / "model.keras")
    assert export(tmp_path / "model.keras", tmp_path / "repo", "theirs", *extra) == 1
    err = capsys.readouterr().err
    assert err.startswith(f"error: cannot export {tmp_path / 'model.keras'}: ")
    assert err.count("\n") == 1
    assert not list((tmp_path / "repo").rglob("*.tflite"))
    return err


def test_a_multi_label_model_is_refused_as_multi_label(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    model = keras.Sequential(
        [keras.Input((6,)), keras.layers.Dense(8), keras.layers.Dense(5, activation="sigmoid")]
    )
    err = refused(tmp_path, capsys, model)
    assert "multi-label" in err
    assert "5 independent sigmoid outputs" in err
    assert "softmax" in err  # what the service serves instead


def test_one_linear_output_is_refused_with_the_flag_that_serves_it(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    model = keras.Sequential([keras.Input((6,)), keras.layers.Dense(1, name="score")])
    err = refused(tmp_path, capsys, model)
    assert "'score'" in err
    assert "--output sigmoid" in err


def test_an_output_that_is_no_distribution_is_refused_with_the_override(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    inputs = keras.Input((6,))
    model = keras.Model(inputs, keras.ops.exp(keras.layers.Dense(3)(inputs)))
    err = refused(tmp_path, capsys, model)
    assert "--output probabilities|logits|sigmoid" in err


def test_a_softmax_written_as_an_op_is_served_through_its_logs(tmp_path: Path) -> None:
    inputs = keras.Input((6,))
    model = keras.Model(inputs, keras.ops.softmax(keras.layers.Dense(4)(inputs) * 3.0))
    model.save(tmp_path / "model.keras")
    assert export(tmp_path / "model.keras", tmp_path / "repo", "ops") == 0
    x = np.random.default_rng(1).normal(size=(16, 6)).astype(np.float32)
    served = served_probabilities(tmp_path / "repo/ops/1/model.tflite", x)
    np.testing.assert_allclose(served, np.asarray(model(x), np.float64), atol=1e-6, rtol=0)


@pytest.mark.parametrize("functional", [False, True], ids=["sequential", "functional"])
def test_a_legacy_h5_file_exports_like_a_keras_file(functional: bool, tmp_path: Path) -> None:
    x, y = digits()
    if functional:
        inputs = keras.Input((8, 8))
        hidden = keras.layers.Dense(16, activation="relu")(keras.layers.Flatten()(inputs))
        model = keras.Model(inputs, keras.layers.Dense(10, activation="softmax")(hidden))
    else:
        model = keras.Sequential(
            [
                keras.Input((8, 8)),
                keras.layers.Flatten(),
                keras.layers.Dense(16, activation="relu"),
                keras.layers.Dense(10, activation="softmax"),
            ]
        )
    model.compile("adam", "sparse_categorical_crossentropy")
    model.fit(x, y, epochs=1, verbose=0)
    model.save(tmp_path / "model.h5")  # the legacy format older tutorials use
    assert export(tmp_path / "model.h5", tmp_path / "repo", "legacy") == 0
    served = served_probabilities(tmp_path / "repo/legacy/1/model.tflite", x[:32])
    np.testing.assert_allclose(served, np.asarray(model(x[:32]), np.float64), atol=TOLERANCE)


def test_a_lambda_layer_in_an_h5_file_is_refused_by_name(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    model = keras.Sequential(
        [
            keras.Input((4,)),
            keras.layers.Lambda(lambda t: t * 2.0, name="double"),
            keras.layers.Dense(3, activation="softmax"),
        ]
    )
    model.save(tmp_path / "model.h5")
    assert export(tmp_path / "model.h5", tmp_path / "repo", "legacy") == 1
    err = capsys.readouterr().err
    assert "'double'" in err
    assert "Lambda" in err
    assert err.count("\n") == 1
    assert not (tmp_path / "repo").exists() or not list((tmp_path / "repo").rglob("*.tflite"))


CUSTOM_MODULE = '''
import keras


@keras.saving.register_keras_serializable(package="mypackage")
class Classifier(keras.Model):
    """A subclassed classifier, as the Keras guide on custom models writes one."""

    def __init__(self, classes=3, **kwargs):
        super().__init__(**kwargs)
        self.classes = classes
        self.hidden = keras.layers.Dense(16, activation="relu")
        self.out = keras.layers.Dense(classes, activation="softmax")

    def call(self, inputs):
        return self.out(self.hidden(inputs))

    def get_config(self):
        return {**super().get_config(), "classes": self.classes}
'''

BUILD_CUSTOM = """
import numpy as np
from mypackage.layers import Classifier

model = Classifier()
x = np.random.default_rng(0).normal(size=(8, 4)).astype("float32")
np.save("x.npy", x)
np.save("expected.npy", np.asarray(model(x)))
model.save("custom.keras")
"""


def run_export(workdir: Path, *args: str) -> subprocess.CompletedProcess[str]:
    """The export command in a fresh process, in ``workdir`` (the user's project)."""
    return subprocess.run(
        [sys.executable, "-m", "model_training", "export", *args],
        cwd=workdir,
        env=subprocess_env(PYTHONPATH=str(ROOT)),
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
    )


def test_a_subclassed_model_exports_once_its_module_is_imported(tmp_path: Path) -> None:
    (tmp_path / "mypackage").mkdir()
    (tmp_path / "mypackage/__init__.py").write_text("")
    (tmp_path / "mypackage/layers.py").write_text(textwrap.dedent(CUSTOM_MODULE))
    subprocess.run(
        [sys.executable, "-c", BUILD_CUSTOM],
        cwd=tmp_path,
        env=subprocess_env(PYTHONPATH=f"{tmp_path}"),
        check=True,
        capture_output=True,
        timeout=300,
    )
    common = ("custom.keras", "--name", "custom", "--model-repository", "repo")
    without = run_export(tmp_path, *common)
    assert without.returncode == 1
    assert without.stderr.count("\n") == 1, without.stderr
    assert "'mypackage>Classifier'" in without.stderr or "'Classifier'" in without.stderr
    assert "--import" in without.stderr
    assert not (tmp_path / "repo").exists()
    with_import = run_export(tmp_path, *common, "--import", "mypackage.layers")
    assert with_import.returncode == 0, with_import.stderr
    x, expected = np.load(tmp_path / "x.npy"), np.load(tmp_path / "expected.npy")
    served = served_probabilities(tmp_path / "repo/custom/1/model.tflite", x)
    np.testing.assert_allclose(served, expected.astype(np.float64), atol=TOLERANCE, rtol=0)
    metadata = json.loads((tmp_path / "repo/custom/1/metadata.json").read_text())
    assert metadata["training"]["imports"] == ["mypackage.layers"]
    missing = run_export(tmp_path, *common, "--import", "mypackage.nothing")
    assert missing.returncode == 1
    assert "mypackage.nothing" in missing.stderr


def tf_serving_base_path(base: Path) -> dict[int, tuple[Callable[[np.ndarray], Any], str]]:
    """A TF Serving model base path of three versions, written the ways users write them:
    ``model.export()`` of a logits model, ``tf.saved_model.save`` of a softmax model,
    ``model.export()`` of a binary sigmoid model. Each version's signature, by number."""
    x, y = digits()
    logits, _ = quickstart()
    logits.export(str(base / "1"), verbose=False)
    softmax = keras.Sequential(
        [
            keras.Input((8, 8)),
            keras.layers.Flatten(),
            keras.layers.Dense(32, activation="relu"),
            keras.layers.Dense(10, activation="softmax"),
        ]
    )
    softmax.compile("adam", "sparse_categorical_crossentropy")
    softmax.fit(x, y, epochs=1, verbose=0)
    tf.saved_model.save(softmax, str(base / "3"))
    signatures: dict[int, tuple[Callable[[np.ndarray], Any], str]] = {}
    for number, output in ((1, "logits"), (3, "probabilities")):
        loaded = tf.saved_model.load(str(base / str(number)))
        function = loaded.signatures["serving_default"]
        ((name, _),) = function.structured_input_signature[1].items()

        def call(v: np.ndarray, function: Any = function, name: str = name) -> Any:
            (out,) = function(**{name: tf.constant(v)}).values()
            return np.asarray(out, dtype=np.float64)

        signatures[number] = (call, output)
    return signatures


def test_a_tf_serving_base_path_converts_in_one_command_with_its_version_numbers(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    base = tmp_path / "tfs" / "digits"
    signatures = tf_serving_base_path(base)
    assert export(base, tmp_path / "repo", "digits") == 0
    printed = capsys.readouterr().out
    assert sorted(p.name for p in (tmp_path / "repo/digits").iterdir()) == ["1", "3"]
    assert printed.count("wrote digits version") == 2
    x = digits()[0][:32]
    for number, (call, output) in signatures.items():
        metadata = json.loads((tmp_path / f"repo/digits/{number}/metadata.json").read_text())
        assert metadata["training"]["output"] == output
        assert metadata["training"]["saved_model"]["version"] == number
        served = served_probabilities(tmp_path / f"repo/digits/{number}/model.tflite", x)
        raw = call(x)
        expected = softmax64(raw) if output == "logits" else raw
        np.testing.assert_allclose(served, expected, atol=TOLERANCE, rtol=0)
    # Converting again into the same name would renumber: refused, nothing written.
    assert export(base, tmp_path / "repo", "digits") == 1
    assert "expected versions [1, 3] of 'digits' to be free" in capsys.readouterr().err


def test_a_binary_saved_model_is_served_as_two_classes(tmp_path: Path) -> None:
    model, x = binary_sigmoid()
    model.export(str(tmp_path / "binary"), verbose=False)
    assert export(tmp_path / "binary", tmp_path / "repo", "binary") == 0
    metadata = json.loads((tmp_path / "repo/binary/1/metadata.json").read_text())
    assert metadata["class_names"] == ["0", "1"]
    assert metadata["training"]["output"] == "sigmoid"
    served = served_probabilities(tmp_path / "repo/binary/1/model.tflite", x)
    np.testing.assert_allclose(served, expected_distribution(model, x, "sigmoid"), atol=TOLERANCE)


def test_a_saved_model_without_the_signature_asked_for_is_refused(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    model, _ = table_logits()
    model.export(str(tmp_path / "sm"), verbose=False)
    assert export(tmp_path / "sm", tmp_path / "repo", "sm", "--signature", "predict") == 1
    err = capsys.readouterr().err
    assert "'predict'" in err
    assert "serving_default" in err
    assert err.count("\n") == 1
    assert not (tmp_path / "repo").exists() or not list((tmp_path / "repo").rglob("*.tflite"))


# --- through the running service -------------------------------------------------------


@pytest.fixture(scope="module")
def served_heads(
    tmp_path_factory: pytest.TempPathFactory,
) -> Iterator[tuple[Server, dict[str, tuple[np.ndarray, np.ndarray]]]]:
    """One server over a logits model, a binary sigmoid model and a converted TF Serving
    base path; with each model's inputs and the distribution it stands for."""
    workdir = tmp_path_factory.mktemp("heads")
    cases: dict[str, tuple[np.ndarray, np.ndarray]] = {}
    for name, build, output in (
        ("quickstart", quickstart, "logits"),
        ("binary", binary_sigmoid, "sigmoid"),
    ):
        model, x = build()
        export_keras(model, workdir, name)
        cases[name] = (x, expected_distribution(model, x, output))
    signatures = tf_serving_base_path(workdir / "tfs" / "tfs")
    assert export(workdir / "tfs" / "tfs", workdir / "models", "tfs") == 0
    x = digits()[0][:32]
    for number, (call, output) in signatures.items():
        raw = call(x)
        cases[f"tfs/versions/{number}"] = (x, softmax64(raw) if output == "logits" else raw)
    server = start_server(
        workdir,
        workdir / "server.log",
        SERVICE_MODEL_REPOSITORY="models",
        SERVICE_DEFAULT_MODEL="quickstart",
        SERVICE_VERSION_POLICY="all",  # as TF Serving's model_version_policy {all {}}
    )
    yield server, cases
    assert server.stop() == 0, server.output()


def test_every_protocol_answers_the_distribution_the_users_model_stands_for(
    served_heads: tuple[Server, dict[str, tuple[np.ndarray, np.ndarray]]],
) -> None:
    server, cases = served_heads
    with httpx.Client(base_url=server.url, timeout=30) as client:
        for path, (x, expected) in cases.items():
            for protocol, got in native_and_v1(client, path, x.tolist()).items():
                np.testing.assert_allclose(got, expected, atol=TOLERANCE, err_msg=protocol)
            tensor = {
                "name": "input",
                "datatype": "FP32",
                "shape": list(x.shape),
                "data": x.ravel().tolist(),
            }
            v2 = client.post(f"/v2/models/{path}/infer", json={"inputs": [tensor]})
            assert v2.status_code == 200, v2.text
            (out,) = [o for o in v2.json()["outputs"] if o["name"] == "probabilities"]
            got_v2 = np.reshape(out["data"], expected.shape)
            np.testing.assert_allclose(got_v2, expected, atol=TOLERANCE, rtol=0, err_msg=path)
        # TF Serving's clients ask for the latest version without naming it: version 3.
        latest = client.post("/v1/models/tfs:predict", json={"instances": x[:2].tolist()})
        np.testing.assert_allclose(
            latest.json()["predictions"], cases["tfs/versions/3"][1][:2], atol=TOLERANCE
        )
