"""The training report: ``report/`` with report.md and its PNGs, written into each version."""

from __future__ import annotations

import contextlib
import io
import itertools
import json
import math
import struct
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import matplotlib
import numpy as np
import pytest

from model_training.artifact import sha256
from model_training.calibration import calibrate
from model_training.cli import main as train_main
from model_training.importance import members_of
from model_training.ood import fit_reference
from model_training.report import ReportData, confusion, importance, write_report

PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"
FIGURES = ["decision_regions.png", "training_curves.png", "confusion_matrix.png", "reliability.png"]
#: What training a table adds: its global feature importance (a saved background).
IMPORTANCE = "feature_importance.png"
TINY = ("--epochs", "2", "--samples", "200", "--test-size", "50", "--quiet")


def png_size(path: Path) -> tuple[int, int]:
    """Width and height from a PNG's IHDR chunk, after checking the signature."""
    content = path.read_bytes()
    assert content[:8] == PNG_SIGNATURE, f"{path.name} is not a PNG"
    assert content[12:16] == b"IHDR"
    width, height = struct.unpack(">II", content[16:24])
    return int(width), int(height)


def assert_readable_png(path: Path) -> None:
    width, height = png_size(path)
    assert width >= 400
    assert height >= 300
    assert path.stat().st_size > 10_000, f"{path.name} is suspiciously small"


def synthetic(dim: int, k: int, *, validation: bool = True) -> ReportData:
    """Report inputs from a fixed linear 'model' on Gaussian clusters: no training needed."""
    rng = np.random.default_rng(dim * 10 + k)
    centres = rng.normal(scale=8.0, size=(k, dim))
    weights = rng.normal(size=(dim, k))

    def logits(x: np.ndarray) -> np.ndarray:
        return np.asarray(x, dtype=np.float64) @ weights

    def draw(n: int) -> tuple[np.ndarray, np.ndarray]:
        y = rng.integers(0, k, size=n)
        return (centres[y] + rng.normal(size=(n, dim))).astype(np.float32), y

    (x_train, y_train), (x_val, y_val), (x_test, y_test) = draw(120), draw(30), draw(50)
    if not validation:
        x_val, y_val = x_val[:0], y_val[:0]
    names = [f"c{i}" for i in range(k)]
    test_logits = logits(x_test)
    accuracy = float((test_logits.argmax(axis=1) == y_test).mean())
    metadata: dict[str, Any] = {
        "created_at": "2026-01-01T00:00:00Z",
        "feature_names": [f"f{i}" for i in range(dim)],
        "class_names": names,
        "metrics": {"test_loss": 0.5, "test_accuracy": accuracy, "test_samples": 50},
        "calibration": (
            calibrate(logits(x_val), y_val, test_logits, y_test) if validation else None
        ),
        "training": {
            "data": {"kind": "csv", "path": "data.csv"},
            "train_samples": 120,
            "validation_samples": len(y_val),
            "epochs": 3,
            "batch_size": 5,
            "learning_rate": 1e-3,
            "seed": 0,
        },
        "training_data": fit_reference(
            np.concatenate([x_train, x_val]), np.concatenate([y_train, y_val]), names
        ),
    }
    history = {"loss": [1.0, 0.5, 0.3], "accuracy": [0.5, 0.8, 0.9]}
    if validation:
        history |= {"val_loss": [1.1, 0.6, 0.4], "val_accuracy": [0.4, 0.7, 0.85]}
    return ReportData(
        name="synthetic",
        metadata=metadata,
        history=history,
        x_train=x_train,
        y_train=y_train,
        validation_logits=logits(x_val),
        y_val=y_val,
        x_test=x_test,
        y_test=y_test,
        test_logits=test_logits,
        logits=logits,
    )


def test_the_backend_is_non_interactive_and_every_figure_is_closed(tmp_path: Path) -> None:
    import matplotlib.pyplot as plt

    write_report(tmp_path, synthetic(2, 3))
    assert matplotlib.get_backend().lower() == "agg"
    assert plt.get_fignums() == []


def test_two_features_give_all_four_figures_and_the_markdown(tmp_path: Path) -> None:
    written = write_report(tmp_path / "report", synthetic(2, 3))
    assert written == [*FIGURES, "report.md"]
    for name in FIGURES:
        assert_readable_png(tmp_path / "report" / name)
    text = (tmp_path / "report" / "report.md").read_text()
    for name in FIGURES:
        assert f"]({name})" in text


def test_more_than_two_features_skip_the_decision_regions_and_say_so(tmp_path: Path) -> None:
    written = write_report(tmp_path, synthetic(3, 4))
    assert "decision_regions.png" not in written
    assert not (tmp_path / "decision_regions.png").exists()
    text = (tmp_path / "report.md").read_text()
    assert "Not drawn: the model has 3 inputs and the plot needs exactly 2 numeric ones." in text
    assert "decision_regions.png" not in text
    for name in FIGURES[1:]:
        assert_readable_png(tmp_path / name)


def test_without_a_validation_split_the_report_says_there_is_no_calibration(
    tmp_path: Path,
) -> None:
    write_report(tmp_path, synthetic(2, 2, validation=False))
    text = (tmp_path / "report.md").read_text()
    assert "No calibration" in text
    assert "temperature 1" in text
    assert_readable_png(tmp_path / "reliability.png")
    assert_readable_png(tmp_path / "training_curves.png")


def test_confusion_counts_true_rows_against_predicted_columns() -> None:
    matrix = confusion(np.array([0, 0, 1, 2, 2, 2]), np.array([0, 1, 1, 2, 2, 0]), 3)
    assert matrix.tolist() == [[1, 1, 0], [0, 1, 0], [1, 0, 2]]


@dataclass
class Run:
    """A tiny training run through the real command line."""

    version: Path
    metadata: dict[str, Any]
    stdout: str


def train(repository: Path, *extra: str) -> Run:
    out = io.StringIO()
    with contextlib.redirect_stdout(out):
        assert train_main(["--model-repository", str(repository), *TINY, *extra]) == 0
    version = repository / "blobs" / "1"
    metadata = json.loads((version / "metadata.json").read_text())
    return Run(version, metadata, out.getvalue())


@pytest.fixture(scope="module")
def tiny(tmp_path_factory: pytest.TempPathFactory) -> Run:
    return train(tmp_path_factory.mktemp("report") / "models")


def test_training_writes_the_report_into_the_version(tiny: Run) -> None:
    report = tiny.version / "report"
    assert sorted(p.name for p in report.iterdir()) == sorted([*FIGURES, IMPORTANCE, "report.md"])
    for name in [*FIGURES, IMPORTANCE]:
        assert_readable_png(report / name)
    assert not list(tiny.version.parent.glob(".tmp-*"))
    assert f"report: {report / 'report.md'}" in tiny.stdout


def test_report_markdown_shows_the_metrics_and_the_figures(tiny: Run) -> None:
    text = (tiny.version / "report" / "report.md").read_text()
    calibration = tiny.metadata["calibration"]
    assert text.startswith("# Training report: blobs\n")
    assert f"{tiny.metadata['metrics']['test_accuracy']:.4f}" in text
    assert f"**T = {calibration['temperature']:.4g}**" in text
    assert f"{tiny.metadata['training_data']['ood']['threshold']:.4g}" in text
    assert "| split | samples | NLL before | NLL after | ECE before | ECE after |" in text
    assert "120 samples to fit the weights, 30 for validation, 50 held out" in text
    assert "## Global feature importance" in text
    assert "over all 50 test rows" in text
    assert "| x1 |" in text
    assert "| x2 |" in text


def test_report_files_are_hashed_apart_from_the_served_files(tiny: Run) -> None:
    report = tiny.metadata["report"]
    assert report["directory"] == "report"
    assert set(report["files"]) == {*FIGURES, IMPORTANCE, "report.md"}
    for name, entry in report["files"].items():
        path = tiny.version / "report" / name
        assert entry == {"sha256": sha256(path), "bytes": path.stat().st_size}
    assert set(tiny.metadata["files"]) == {"model.keras", "model.tflite"}


def test_metadata_holds_the_calibration_and_training_data_blocks(tiny: Run) -> None:
    metadata = tiny.metadata
    calibration = metadata["calibration"]
    assert calibration["method"] == "temperature_scaling"
    assert calibration["fitted_on"] == "validation"
    assert calibration["temperature"] > 0
    assert calibration["validation"]["samples"] == 30
    assert calibration["test"]["samples"] == 50
    assert calibration["validation"]["nll_after"] <= calibration["validation"]["nll_before"]
    # The uncalibrated test NLL is the Keras test loss (computed in float32 there).
    assert calibration["test"]["nll_before"] == pytest.approx(
        metadata["metrics"]["test_loss"], rel=1e-4
    )
    assert metadata["training"]["train_samples"] == 120
    assert metadata["training"]["validation_samples"] == 30
    training_data = metadata["training_data"]
    assert training_data["n"] == 150  # the training part: fitted on + validation
    assert len(training_data["mean"]) == 2
    assert training_data["ood"]["method"] == "mahalanobis"
    assert training_data["ood"]["threshold"] > 0
    assert 0 <= training_data["ood"]["test_flagged"] <= 1
    assert "calibration: temperature" in tiny.stdout
    assert "out-of-distribution threshold: distance" in tiny.stdout


def test_no_report_writes_no_plots_but_keeps_calibration_and_statistics(tmp_path: Path) -> None:
    run = train(tmp_path / "models", "--no-report", "--validation-split", "0")
    assert sorted(p.name for p in run.version.iterdir()) == [
        "metadata.json",
        "model.keras",
        "model.tflite",
    ]
    assert run.metadata["report"] is None
    assert run.metadata["calibration"] is None  # no validation split: nothing to fit on
    assert run.metadata["training"]["validation_samples"] == 0
    assert run.metadata["training_data"]["n"] == 150
    assert "calibration: none" in run.stdout
    assert "report:" not in run.stdout


def shapley_by_subsets(f: Any, x: np.ndarray, points: np.ndarray, w: np.ndarray) -> np.ndarray:
    """(n, K) the Shapley values of ``f``'s outputs for row ``x``, from their definition:
    every subset S without i, weighted |S|! (n-|S|-1)! / n!, the left-out features taking
    each background point's values (weights ``w``)."""
    n = len(x)

    def value(subset: tuple[int, ...]) -> np.ndarray:
        z = points.copy()
        z[:, list(subset)] = x[list(subset)]
        return np.asarray(w @ f(z), dtype=np.float64)

    phi = np.zeros((n, len(value(()))))
    for i in range(n):
        others = [j for j in range(n) if j != i]
        for size in range(n):
            weight = math.factorial(size) * math.factorial(n - size - 1) / math.factorial(n)
            for subset in itertools.combinations(others, size):
                phi[i] += weight * (value((*subset, i)) - value(subset))
    return phi


def test_the_global_importance_is_the_mean_absolute_shapley_value_of_the_predicted_class(
    tmp_path: Path,
) -> None:
    data = synthetic(3, 4)
    rng = np.random.default_rng(5)
    points = rng.normal(scale=4.0, size=(3, 3))
    weights = np.array([0.5, 0.3, 0.2])
    data.metadata["explanation"] = {"points": points.tolist(), "weights": weights.tolist()}
    written = write_report(tmp_path, data)
    assert IMPORTANCE in written
    assert_readable_png(tmp_path / IMPORTANCE)
    found = importance(data)
    assert found is not None
    assert found.players == ["f0", "f1", "f2"]
    assert found.rows == found.test_rows == 50

    def probabilities(z: np.ndarray) -> np.ndarray:
        logits = np.asarray(data.logits(z), dtype=np.float64) / data.temperature  # type: ignore[misc]
        e = np.exp(logits - logits.max(axis=1, keepdims=True))
        return np.asarray(e / e.sum(axis=1, keepdims=True))

    x = np.asarray(data.x_test, dtype=np.float64)
    magnitudes = []
    for row in x:
        k = probabilities(row[None])[0].argmax()
        magnitudes.append(np.abs(shapley_by_subsets(probabilities, row, points, weights)[:, k]))
    np.testing.assert_allclose(found.mean_abs, np.mean(magnitudes, axis=0), rtol=0, atol=1e-12)
    text = (tmp_path / "report.md").read_text()
    best = int(np.argmax(found.mean_abs))
    assert f"| f{best} | {found.mean_abs[best]:.4g} |" in text


def test_no_importance_without_a_background_or_beyond_twelve_features(tmp_path: Path) -> None:
    assert importance(synthetic(3, 4)) is None  # no saved background
    wide = synthetic(13, 2)
    wide.metadata["explanation"] = {"points": [[0.0] * 13], "weights": [1.0]}
    assert importance(wide) is None
    assert IMPORTANCE not in write_report(tmp_path, wide)


def test_a_categorical_columns_one_hot_inputs_are_one_player() -> None:
    metadata = {
        "feature_names": ["a", "b=x", "b=y", "b=?"],
        "input": {
            "columns": [
                {"name": "a", "fill": 0.0},
                {"name": "b", "kind": "categorical", "fill": "x", "vocabulary": ["x", "y"]},
            ]
        },
    }
    names, members = members_of(metadata)
    assert names == ["a", "b"]
    assert members.tolist() == [[True, False, False, False], [False, True, True, True]]
