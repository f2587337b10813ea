"""The artifact contract: what ``model_training`` writes, ``service`` loads and serves exactly.

The one module that imports both packages.
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import keras
import numpy as np
import pytest

from model_training import calibration, ood
from model_training.cli import main as train_main
from model_training.model import logits
from service.errors import ModelLoadError
from service.inference.softmax import softmax
from service.repository.registry import load_version
from tests.conftest import TrainedRepository

TOLERANCE = 1e-5


def grid(low: float = -10.0, high: float = 40.0, n: int = 41) -> np.ndarray:
    """Points over and around the four blobs."""
    axis = np.linspace(low, high, n)
    xx, yy = np.meshgrid(axis, axis)
    return np.column_stack([xx.ravel(), yy.ravel()]).astype(np.float32)


def served_probabilities(version_dir: Path, name: str, version: int, x: np.ndarray) -> np.ndarray:
    loaded = load_version(version_dir, name, version)
    return softmax(loaded.runtime.logits(np.ascontiguousarray(x)))


def keras_probabilities(path: Path, x: np.ndarray) -> np.ndarray:
    model = keras.saving.load_model(path, compile=False, safe_mode=True)
    return np.asarray(model(x, training=False), dtype=np.float64)


def test_litert_export_gives_the_keras_models_probabilities(trained: TrainedRepository) -> None:
    version = trained.repository / "blobs" / "1"
    x = grid()
    served = served_probabilities(version, "blobs", 1, x)
    expected = keras_probabilities(version / "model.keras", x)
    assert np.abs(served - expected).max() < TOLERANCE
    assert (served.argmax(axis=1) == expected.argmax(axis=1)).mean() > 0.999


def copy_version(source: Path, target_repo: Path, name: str = "blobs") -> Path:
    target = target_repo / name / "1"
    shutil.copytree(source, target)
    return target


def rewrite_metadata(version_dir: Path, **changes: object) -> None:
    path = version_dir / "metadata.json"
    metadata = json.loads(path.read_text())
    metadata.update(changes)
    path.write_text(json.dumps(metadata))


def test_keras_only_version_is_served_through_keras_with_the_same_probabilities(
    trained: TrainedRepository, tmp_path: Path
) -> None:
    version = copy_version(trained.repository / "blobs" / "1", tmp_path)
    (version / "model.tflite").unlink()
    metadata = json.loads((version / "metadata.json").read_text())
    del metadata["files"]["model.tflite"]
    rewrite_metadata(version, files=metadata["files"])
    loaded = load_version(version, "blobs", 1)
    assert loaded.runtime_name == "keras"
    x = grid(n=11)
    via_keras = softmax(loaded.runtime.logits(x))
    litert = served_probabilities(trained.repository / "blobs" / "1", "blobs", 1, x)
    assert np.abs(via_keras - litert).max() < TOLERANCE


def test_version_with_a_tampered_file_is_refused(
    trained: TrainedRepository, tmp_path: Path
) -> None:
    version = copy_version(trained.repository / "blobs" / "1", tmp_path)
    content = bytearray((version / "model.tflite").read_bytes())
    content[-1] ^= 0xFF
    (version / "model.tflite").write_bytes(bytes(content))
    with pytest.raises(ModelLoadError, match=r"model.tflite sha256 mismatch"):
        load_version(version, "blobs", 1)


def test_version_with_a_missing_file_is_refused(trained: TrainedRepository, tmp_path: Path) -> None:
    version = copy_version(trained.repository / "blobs" / "1", tmp_path)
    (version / "model.keras").unlink()
    with pytest.raises(ModelLoadError, match=r"model\.keras is missing"):
        load_version(version, "blobs", 1)


@pytest.mark.parametrize(
    ("changes", "message"),
    [
        ({"input_dim": 3}, "feature_names"),
        ({"version": 7}, "expected metadata for 'blobs' version 1"),
        ({"format_version": 99}, "format_version"),
        ({"class_names": ["only"]}, "class_names"),
    ],
)
def test_version_with_inconsistent_metadata_is_refused(
    trained: TrainedRepository, tmp_path: Path, changes: dict[str, object], message: str
) -> None:
    version = copy_version(trained.repository / "blobs" / "1", tmp_path)
    rewrite_metadata(version, **changes)
    with pytest.raises(ModelLoadError, match=message):
        load_version(version, "blobs", 1)


def weights_after_training(tmp_path: Path, seed: int, tag: str) -> list[np.ndarray]:
    repo = tmp_path / tag
    args = [
        "--model-repository",
        str(repo),
        "--seed",
        str(seed),
        "--epochs",
        "2",
        "--samples",
        "200",
        "--test-size",
        "50",
        "--quiet",
    ]
    assert train_main(args) == 0
    model = keras.saving.load_model(repo / "blobs" / "1" / "model.keras", compile=False)
    return [np.asarray(w) for w in model.get_weights()]


def test_same_seed_gives_the_same_weights_and_another_seed_does_not(tmp_path: Path) -> None:
    first = weights_after_training(tmp_path, 7, "a")
    second = weights_after_training(tmp_path, 7, "b")
    third = weights_after_training(tmp_path, 8, "c")
    assert all(np.array_equal(a, b) for a, b in zip(first, second, strict=True))
    assert not all(np.array_equal(a, c) for a, c in zip(first, third, strict=True))


def test_a_trained_version_with_report_and_calibration_loads_and_serves_calibrated(
    tmp_path: Path,
) -> None:
    repo = tmp_path / "repo"
    args = ["--model-repository", str(repo), "--epochs", "2", "--samples", "200"]
    assert train_main([*args, "--test-size", "50", "--quiet"]) == 0
    version = repo / "blobs" / "1"
    metadata = json.loads((version / "metadata.json").read_text())
    assert (version / "report" / "report.md").is_file()
    loaded = load_version(version, "blobs", 1)  # every hash in "files" verifies
    temperature = metadata["calibration"]["temperature"]
    assert loaded.metadata.temperature == temperature
    x = grid(n=11)
    served = softmax(loaded.runtime.logits(x), loaded.metadata.temperature)
    model = keras.saving.load_model(version / "model.keras", compile=False, safe_mode=True)
    expected = calibration.softmax(logits(model, x), temperature)
    assert np.abs(served - expected).max() < TOLERANCE
    # The OOD parameters survive the trip through metadata.json (the service reads them there).
    detector = metadata["training_data"]["ood"]
    far = np.array([[1000.0, -1000.0]])
    assert ood.distance_from_metadata(far, detector)[0] > detector["threshold"]


def test_a_damaged_report_file_does_not_stop_the_version_from_serving(
    trained: TrainedRepository, tmp_path: Path
) -> None:
    # The report is documentation: its hashes are recorded (metadata["report"]) for
    # anyone to check, but only the served files (metadata["files"]) gate loading.
    version = copy_version(trained.repository / "blobs" / "1", tmp_path)
    (version / "report" / "reliability.png").write_bytes(b"not a png")
    assert load_version(version, "blobs", 1).metadata.calibration is not None


def foreign_classifier(path: Path) -> keras.Model:
    """A classifier 'trained elsewhere': Sequential, softmax fused into its last Dense layer."""
    keras.utils.set_random_seed(0)
    model = keras.Sequential(
        [
            keras.Input(shape=(3,)),
            keras.layers.Dense(5, activation="tanh"),
            keras.layers.Dense(3, activation="softmax"),
        ]
    )
    model.save(path)
    return model


def test_export_brings_a_foreign_model_in_and_it_serves_the_same_probabilities(
    tmp_path: Path,
) -> None:
    model = foreign_classifier(tmp_path / "theirs.keras")
    repo = tmp_path / "repo"
    args = [
        "export",
        str(tmp_path / "theirs.keras"),
        "--name",
        "theirs",
        "--model-repository",
        str(repo),
        "--class-names",
        "red,green,blue",
    ]
    assert train_main(args) == 0
    metadata = json.loads((repo / "theirs" / "1" / "metadata.json").read_text())
    assert metadata["class_names"] == ["red", "green", "blue"]
    assert metadata["feature_names"] == ["x1", "x2", "x3"]
    x = np.random.default_rng(1).normal(scale=3, size=(100, 3)).astype(np.float32)
    served = served_probabilities(repo / "theirs" / "1", "theirs", 1, x)
    assert np.abs(served - np.asarray(model(x), dtype=np.float64)).max() < TOLERANCE


def test_export_refuses_a_model_whose_output_is_no_distribution(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    # Neither a softmax, nor logits (a linear last layer), nor one sigmoid output.
    model = keras.Sequential([keras.Input(shape=(2,)), keras.layers.Dense(3, activation="relu")])
    model.save(tmp_path / "regressor.keras")
    code = train_main(
        [
            "export",
            str(tmp_path / "regressor.keras"),
            "--name",
            "r",
            "--model-repository",
            str(tmp_path / "repo"),
        ]
    )
    assert code == 1
    err = capsys.readouterr().err
    assert "expected a classifier whose output is a distribution" in err
    assert "--output probabilities|logits|sigmoid" in err
    assert not (tmp_path / "repo" / "r").exists() or not any((tmp_path / "repo" / "r").iterdir())


def test_export_refuses_a_lambda_layer_under_safe_mode(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    inputs = keras.Input(shape=(2,))
    hidden = keras.layers.Lambda(lambda t: t * 2.0)(inputs)
    model = keras.Model(inputs, keras.layers.Dense(2, activation="softmax")(hidden))
    model.save(tmp_path / "lambda.keras")
    code = train_main(
        [
            "export",
            str(tmp_path / "lambda.keras"),
            "--name",
            "l",
            "--model-repository",
            str(tmp_path / "repo"),
        ]
    )
    assert code == 1
    assert "safe_mode" in capsys.readouterr().err


def test_the_artifact_module_is_one_definition_in_two_copies() -> None:
    # Neither package imports the other: each carries the same file, and this keeps them one.
    root = Path(__file__).resolve().parents[2]
    served = (root / "service" / "repository" / "artifact.py").read_bytes()
    trained = (root / "model_training" / "artifact.py").read_bytes()
    assert served == trained, (
        "service/repository/artifact.py and model_training/artifact.py differ: edit one, "
        "copy it over the other"
    )
