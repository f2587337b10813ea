"""Training a text classifier on the user's own texts (a CSV column, or a folder of .txt
files per class), served from raw strings exactly as Keras answers for them, with an
out-of-distribution signal on the leading components of its features and a report."""

from __future__ import annotations

import csv
import json
import random
from pathlib import Path

import httpx
import keras
import numpy as np
import pytest
import scipy.sparse  # type: ignore[import-untyped]
import tensorflow as tf

from model_training import text_training
from model_training.cli import main as train_main
from model_training.ood import distance_from_metadata
from service.inference.text import describe, vectorizer
from tests.conftest import start_server
from tests.training.test_export_kinds import served_probabilities

GOOD = ["great", "wonderful", "loved", "brilliant", "moving", "superb", "delightful"]
BAD = ["awful", "boring", "terrible", "dull", "worst", "badly", "waste"]
FILLER = ["the", "film", "plot", "acting", "story", "was", "and", "a", "it", "this"]
FILLER += ["movie", "scenes", "with"]


def reviews(n: int, seed: int = 0) -> list[tuple[str, str]]:
    """Short reviews whose class shows in a few of their words."""
    rng = random.Random(seed)
    rows = []
    for _ in range(n):
        label = rng.choice(["neg", "pos"])
        words = rng.choices(FILLER, k=6) + rng.choices(GOOD if label == "pos" else BAD, k=2)
        rng.shuffle(words)
        rows.append((" ".join(words).capitalize() + rng.choice([".", "!", "..."]), label))
    return rows


def served(version: Path, strings: list[str], classes: int = 2) -> np.ndarray:
    """What the service computes: its own string layer (text.json), then model.tflite's
    logits (its first ``classes`` outputs; the OOD features follow)."""
    vectorize = vectorizer(describe(json.loads((version / "text.json").read_text())))
    x = vectorize(strings).astype(np.float32)
    outputs = served_probabilities(version / "model.tflite", x)  # a softmax over all
    logits = np.log(outputs[:, :classes])
    e = np.exp(logits - logits.max(axis=1, keepdims=True))
    return np.asarray(e / e.sum(axis=1, keepdims=True))


def keras_features(saved: keras.Model, texts: np.ndarray) -> scipy.sparse.csr_matrix:
    """What enters the logits layer of a saved text model (its string layer, then the
    network nested after it), for each text, as ``text_training.features`` gives it."""
    network = saved.layers[-1]
    before = keras.Model(network.inputs, network.get_layer("logits").input)
    weights = saved.get_layer("preprocessed_shape").output
    unit = keras.Model(saved.inputs, before(weights))
    return scipy.sparse.csr_matrix(np.asarray(unit(tf.constant([[str(t)] for t in texts]))))


def random_characters(n: int, seed: int) -> list[str]:
    """Strings of random letters and digits: nothing like a review."""
    rng = random.Random(seed)
    letters = "abcdefghijklmnopqrstuvwxyz0123456789"
    return ["".join(rng.choices(letters + " ", k=rng.randint(30, 60))) for _ in range(n)]


ASKED = ["What a WONDERFUL film!", "dull, dull, dull", "unseen words only", "", "é 😀"]


def test_a_csv_text_column_trains_a_model_served_from_strings(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    with (tmp_path / "reviews.csv").open("w", newline="") as handle:
        writer = csv.writer(handle)
        writer.writerow(["review", "stars", "label"])
        writer.writerows((text, 3, label) for text, label in reviews(240))
    argv = ["--data", str(tmp_path / "reviews.csv"), "--text-column", "review", "--quiet"]
    assert train_main([*argv, "--model-repository", str(tmp_path / "models")]) == 0
    printed = capsys.readouterr().out
    assert "baseline: TF-IDF + logistic regression" in printed
    version = tmp_path / "models" / "reviews" / "1"
    metadata = json.loads((version / "metadata.json").read_text())
    assert metadata["input"]["kind"] == "text"
    assert metadata["class_names"] == ["neg", "pos"]
    assert metadata["training"]["data"]["text_column"] == "review"
    assert metadata["calibration"]["fitted_on"] == "out_of_fold"
    metrics = metadata["metrics"]
    assert metrics["test_accuracy"] >= metrics["baseline"]["test_accuracy"] - 0.03
    model = keras.saving.load_model(version / "model.keras")
    expected = np.asarray(model(tf.constant([[s] for s in ASKED])), dtype=np.float64)
    np.testing.assert_allclose(served(version, ASKED), expected, atol=1e-5, rtol=0)
    report = (version / "report" / "report.md").read_text()
    assert "## Out-of-distribution signal" in report
    assert "Misclassified test texts" in report
    assert "random-character texts flagged (200)" in report
    assert not (version / "report" / "training_curves.png").exists()  # solved, no epochs


def test_the_ood_signal_is_measured_on_the_leading_components_and_flags_random_text(
    tmp_path: Path,
) -> None:
    rows = reviews(400, seed=2)
    with (tmp_path / "reviews.csv").open("w", newline="") as handle:
        csv.writer(handle).writerows([("review", "label"), *rows])
    argv = ["--data", str(tmp_path / "reviews.csv"), "--text-column", "review", "--quiet"]
    assert train_main([*argv, "--no-report", "--model-repository", str(tmp_path / "m")]) == 0
    metadata = json.loads((tmp_path / "m/reviews/1/metadata.json").read_text())
    detector = metadata["training_data"]["ood"]
    assert detector["space"] == "features"
    assert detector["features"]["dim"] == text_training.COMPONENTS
    assert detector["noise_flagged"] > 0.9
    assert detector["test_flagged"] < 0.1

    # The reference, computed independently: Keras's features of the training texts, the
    # projection refitted by scikit-learn, the distance in float64.
    data = text_training.load_text_csv(tmp_path / "reviews.csv", "review", None)
    train, _ = text_training._split(data, metadata["training"]["test_size"], 42)
    model = keras.saving.load_model(tmp_path / "m/reviews/1/model.keras")
    projection = text_training.components(keras_features(model, data.texts[train]), 42)
    asked = [text for text, _ in reviews(20, seed=3)] + random_characters(20, seed=4)
    strings = np.empty(len(asked), dtype=object)
    strings[:] = asked
    expected = distance_from_metadata(
        keras_features(model, strings) @ projection.astype(np.float64), detector
    )
    server = start_server(tmp_path, tmp_path / "server.log", SERVICE_MODEL_REPOSITORY="m")
    try:
        answer = httpx.post(
            f"{server.url}/models/reviews/predict", json={"instances": asked}, timeout=60
        )
    finally:
        assert server.stop() == 0, server.output()
    assert answer.status_code == 200, answer.text
    predictions = answer.json()["predictions"]
    got = np.array([p["ood_distance"] for p in predictions])
    np.testing.assert_allclose(got, expected, rtol=1e-4, atol=1e-4)
    flags = np.array([p["ood"] for p in predictions])
    assert flags[20:].all(), got[20:]  # random characters
    assert flags[:20].mean() <= 0.1, got[:20]  # reviews like the training ones


def test_a_folder_of_text_files_per_class_trains_the_same_way(tmp_path: Path) -> None:
    for i, (text, label) in enumerate(reviews(120, seed=1)):
        folder = tmp_path / "data" / label
        folder.mkdir(parents=True, exist_ok=True)
        (folder / f"{i}.txt").write_text(text, encoding="utf-8")
    argv = ["--data", str(tmp_path / "data"), "--name", "folder", "--quiet", "--no-report"]
    assert train_main([*argv, "--model-repository", str(tmp_path / "models")]) == 0
    metadata = json.loads((tmp_path / "models/folder/1/metadata.json").read_text())
    assert metadata["input"]["kind"] == "text"
    assert metadata["class_names"] == ["neg", "pos"]
    assert metadata["training"]["data"]["kind"] == "text_folder"


def test_a_text_column_that_is_not_there_is_one_line(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    (tmp_path / "t.csv").write_text("body,label\nhello,a\nbye,b\n")
    argv = ["--data", str(tmp_path / "t.csv"), "--text-column", "text"]
    assert train_main([*argv, "--model-repository", str(tmp_path / "models")]) == 1
    err = capsys.readouterr().err
    assert "expected a column 'text' (--text-column)" in err
    assert err.count("\n") == 1
    assert not (tmp_path / "models").exists() or not list((tmp_path / "models").rglob("*.json"))
