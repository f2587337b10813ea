"""Training a text classifier on the user's own texts (a CSV column, or a folder of .txt
files per class), served from raw strings exactly as Keras answers for them."""

from __future__ import annotations

import csv
import json
import random
from pathlib import Path

import keras
import numpy as np
import pytest
import tensorflow as tf

from model_training.cli import main as train_main
from service.inference.text import describe, vectorizer
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


def served(version: Path, strings: list[str]) -> np.ndarray:
    """What the service computes: its own string layer (text.json), then model.tflite."""
    vectorize = vectorizer(describe(json.loads((version / "text.json").read_text())))
    return served_probabilities(version / "model.tflite", vectorize(strings).astype(np.float32))


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
