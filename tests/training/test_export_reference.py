"""An exported table model monitored for drift against the rows given at export
(``--reference-data``); without them, the monitor says how to get them."""

from __future__ import annotations

import csv
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import keras
import numpy as np
import pytest
from fastapi.testclient import TestClient
from sklearn.datasets import load_iris  # type: ignore[import-untyped]

from model_training.cli import main as train_main
from service.settings import Settings
from tests.conftest import in_process
from tests.training.exported import export_keras

FEATURES = ["sepal_length", "sepal_width", "petal_length", "petal_width"]
CLASSES = ["setosa", "versicolor", "virginica"]


def iris_classifier(x: np.ndarray, y: np.ndarray) -> keras.Model:
    """The Keras guides' small classifier of a table: normalization, a hidden layer, softmax."""
    keras.utils.set_random_seed(0)
    norm = keras.layers.Normalization()
    norm.adapt(x)
    model = keras.Sequential(
        [
            keras.Input(shape=(4,)),
            norm,
            keras.layers.Dense(16, activation="relu"),
            keras.layers.Dense(3, activation="softmax"),
        ]
    )
    model.compile(optimizer=keras.optimizers.Adam(0.05), loss="sparse_categorical_crossentropy")
    model.fit(x, y, epochs=30, batch_size=16, verbose=0)
    return model


def write_csv(path: Path, x: np.ndarray, y: np.ndarray | None) -> None:
    with path.open("w", newline="") as sink:
        writer = csv.writer(sink)
        writer.writerow(FEATURES + (["species"] if y is not None else []))
        for i, row in enumerate(x):
            writer.writerow([*row.tolist(), *([CLASSES[y[i]]] if y is not None else [])])


@pytest.fixture(scope="module")
def exported(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[TestClient, Any]]:
    workdir = tmp_path_factory.mktemp("reference")
    x, y = load_iris(return_X_y=True)
    model = iris_classifier(x, y)
    write_csv(workdir / "reference.csv", x, y)
    names = ["--feature-names", ",".join(FEATURES), "--class-names", ",".join(CLASSES)]
    export_keras(model, workdir, "iris", *names, "--reference-data", str(workdir / "reference.csv"))
    export_keras(model, workdir, "plain", *names)
    settings = Settings(
        model_repository=workdir / "models", default_model="iris", monitor_window=150
    )
    with in_process(settings) as client:
        yield client, (x, y, model, workdir)


def test_the_references_are_measured_on_the_rows_given_at_export(
    exported: tuple[TestClient, Any],
) -> None:
    client, (x, _, model, _) = exported
    block = client.get("/models/iris").json()["monitoring"]
    assert block["computed_on"] == "reference_data"
    assert block["rows"] == 150
    assert [f["name"] for f in block["features"]] == FEATURES
    assert block["class_prior"] == pytest.approx([1 / 3] * 3)
    predicted = np.asarray(model.predict(x, verbose=0)).argmax(axis=1)
    assert block["predicted_mix"] == pytest.approx(np.bincount(predicted, minlength=3) / 150)
    deciles = np.quantile(x[:, 2], np.linspace(0.1, 0.9, 9))
    assert block["features"][2]["edges"] == pytest.approx(np.unique(deciles))


def test_the_reference_rows_show_no_drift_and_shifted_ones_do(
    exported: tuple[TestClient, Any],
) -> None:
    client, (x, *_) = exported
    assert client.post("/models/iris/predict", json={"instances": x.tolist()}).is_success
    calm = client.get("/models/iris/monitor").json()
    assert calm["monitored"] is True
    assert calm["predicted_mix_psi"] == pytest.approx(0.0, abs=1e-12)  # the same rows
    assert max(f["psi"] for f in calm["features"]) < 0.01
    shifted = x + np.array([0.0, 0.0, 2.0, 1.0])  # longer, wider petals
    assert client.post("/models/iris/predict", json={"instances": shifted.tolist()}).is_success
    moved = {f["name"]: f["psi"] for f in client.get("/models/iris/monitor").json()["features"]}
    assert moved["petal_length"] > 0.25
    assert moved["petal_width"] > 0.25
    assert moved["sepal_length"] < 0.01  # unchanged columns stay calm


def test_without_reference_data_the_monitor_says_how_to_get_it(
    exported: tuple[TestClient, Any],
) -> None:
    client, _ = exported
    answer = client.get("/models/plain/monitor").json()
    assert answer["monitored"] is False
    assert "--reference-data" in answer["reason"]


def test_reference_data_without_the_feature_columns_is_refused(
    exported: tuple[TestClient, Any], capsys: pytest.CaptureFixture[str]
) -> None:
    _, (_, _, _, workdir) = exported
    bad = workdir / "bad.csv"
    bad.write_text("a,b\n1,2\n")
    argv = ["export", str(workdir / "iris.keras"), "--name", "iris2", "--reference-data", str(bad)]
    assert train_main([*argv, "--model-repository", str(workdir / "models")]) == 1
    assert "expected --reference-data" in capsys.readouterr().err
