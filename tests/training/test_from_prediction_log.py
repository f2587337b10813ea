"""Training from the service's prediction log joined with the labels reported later."""

from __future__ import annotations

import csv
import json
import shutil
from pathlib import Path

import numpy as np
import pytest
from sklearn.datasets import make_blobs  # type: ignore[import-untyped]

from model_training.data import DataError
from model_training.prediction_log import joined_table
from service.inference.tables import NamedRows
from service.inference.text import Texts
from service.operations.prediction_log import PredictionLog
from service.settings import Settings
from tests.conftest import TrainedRepository, in_process
from tests.training.test_training_cli import run

P = np.array([[0.9, 0.1]])


def read(path: Path) -> list[dict[str, str]]:
    with path.open(newline="") as source:
        return list(csv.DictReader(source))


def test_the_labelled_predictions_of_one_model_become_a_table(tmp_path: Path) -> None:
    log = PredictionLog(tmp_path / "log")
    log.offer("r0", "m", 1, [[1.0, 2.0], [3.0, 4.0]], np.tile(P, (2, 1)), [0, 0], "ab", "xy")
    log.offer("r1", "m", 1, [[5.0, 6.0]], P, [0], "ab", "xy")  # never labelled
    log.offer("r2", "m", 2, [[7.0, 8.0]], P, [0], "ab", "xy")
    log.offer("r0", "other", 1, [[9.0, 9.0]], P, [0], "ab", "xy")  # another model's
    log.feedback("r0", "m", 1, ["b", "a"])
    log.feedback("r2", "m", 2, ["a"])
    log.feedback("r2", "m", 2, ["b"])  # the last report wins
    log.feedback("r3", "m", 1, ["a"])  # a label for nothing logged (not sampled)
    log.close()
    table = joined_table(tmp_path / "log", "m", tmp_path / "m.csv")
    assert (table.rows, table.predictions, table.labelled, table.form) == (3, 3, 2, "rows")
    assert read(table.path) == [
        {"x": "1.0", "y": "2.0", "label": "b"},
        {"x": "3.0", "y": "4.0", "label": "a"},
        {"x": "7.0", "y": "8.0", "label": "b"},
    ]


def test_objects_and_strings_keep_their_names(tmp_path: Path) -> None:
    log = PredictionLog(tmp_path / "log")
    rows = NamedRows([{"age": 31, "city": "Lyon"}, {"age": None, "city": "Oslo", "pets": 2}])
    log.offer("n", "people", 1, rows, np.tile(P, (2, 1)), [0, 1], "ab", [])
    log.offer(
        "t", "tweets", 1, Texts(["good day", "bad, day"]), np.tile(P, (2, 1)), [0, 0], "ab", []
    )
    log.feedback("n", "people", 1, ["a", "b"])
    log.feedback("t", "tweets", 1, ["b", "a"])
    log.close()
    people = joined_table(tmp_path / "log", "people", tmp_path / "people.csv")
    assert read(people.path) == [
        {"age": "31", "city": "Lyon", "pets": "", "label": "a"},
        {"age": "", "city": "Oslo", "pets": "2", "label": "b"},
    ]
    tweets = joined_table(tmp_path / "log", "tweets", tmp_path / "tweets.csv")
    assert tweets.text_column == "text"
    assert read(tweets.path) == [
        {"text": "good day", "label": "b"},
        {"text": "bad, day", "label": "a"},
    ]


def test_a_log_without_labels_or_with_images_is_refused_clearly(tmp_path: Path) -> None:
    with pytest.raises(DataError, match="expected a prediction log"):
        joined_table(tmp_path, "m", tmp_path / "m.csv")
    log = PredictionLog(tmp_path / "log")
    log.offer("r0", "m", 1, [[1.0]], P, [0], "ab", "x")
    log.close()
    with pytest.raises(DataError, match="expected labels reported"):
        joined_table(tmp_path / "log", "m", tmp_path / "m.csv")
    with pytest.raises(DataError, match="expected predictions of model 'n'"):
        joined_table(tmp_path / "log", "n", tmp_path / "n.csv")


def test_the_trainer_writes_a_new_version_from_what_the_service_logged(
    trained: TrainedRepository, tmp_path: Path
) -> None:
    repository = tmp_path / "models"
    shutil.copytree(trained.repository, repository)
    settings = Settings(
        model_repository=repository,
        prediction_log_dir=tmp_path / "log",
        feedback_max_bytes=2**22,
    )
    centers = [[15.0, 0.0], [15.0, 15.0], [0.0, 15.0], [30.0, 15.0]]
    x, y = make_blobs(n_samples=400, centers=centers, cluster_std=1.5, random_state=5)
    with in_process(settings) as client:
        for start in range(0, 400, 10):
            rid = f"batch-{start}"
            body = {"instances": x[start : start + 10].tolist()}
            assert client.post("/predict", json=body, headers={"X-Request-ID": rid}).is_success
            if start < 300:  # the last ten requests never hear their truth
                labels = {"request_id": rid, "labels": [int(v) for v in y[start : start + 10]]}
                assert client.post("/models/blobs/feedback", json=labels).is_success
    result = run(
        "--prediction-log",
        str(tmp_path / "log"),
        "--name",
        "blobs",
        "--model-repository",
        str(repository),
        "--epochs",
        "20",
        "--no-report",
        "--quiet",
        cwd=tmp_path,
    )
    assert result.returncode == 0, result.stderr
    assert "30 of 40 logged requests of blobs have labels: 300 rows (rows)" in result.stdout
    assert "wrote blobs version 2" in result.stdout
    metadata = json.loads((repository / "blobs/2/metadata.json").read_text())
    assert metadata["feature_names"] == ["x1", "x2"]
    assert metadata["class_names"] == ["0", "1", "2", "3"]
    assert metadata["metrics"]["test_samples"] + metadata["training"]["train_samples"] > 0
    assert metadata["metrics"]["test_accuracy"] > 0.9
