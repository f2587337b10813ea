"""Image training: ``--example digits`` and ``--data DIR``, through the real command line.

Models are trained into ``tmp_path``; nothing trained is committed.
"""

from __future__ import annotations

import contextlib
import io
import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import keras
import numpy as np
import pytest
from ai_edge_litert.interpreter import Interpreter
from PIL import Image

from model_training.artifact import Metadata
from model_training.cli import main as train_main
from model_training.images import load_digits_dataset, noise_images, stratified_split
from model_training.ood import distance_from_metadata


@dataclass
class Run:
    """One training run through the command line: its version, metadata and output."""

    version: Path
    metadata: dict[str, Any]
    stdout: str


def train(repository: Path, *args: str) -> Run:
    out = io.StringIO()
    with contextlib.redirect_stdout(out):
        assert train_main(["--model-repository", str(repository), "--quiet", *args]) == 0
    (model,) = [p for p in repository.iterdir() if p.is_dir()]
    version = sorted(model.iterdir(), key=lambda p: int(p.name))[-1]
    metadata = json.loads((version / "metadata.json").read_text())
    return Run(version, metadata, out.getvalue())


def tflite_outputs(path: Path, x: np.ndarray) -> np.ndarray:
    interpreter = Interpreter(model_path=str(path), num_threads=1)
    (inp,), (out,) = interpreter.get_input_details(), interpreter.get_output_details()
    interpreter.resize_tensor_input(inp["index"], list(x.shape))
    interpreter.allocate_tensors()
    interpreter.set_tensor(inp["index"], x.astype(np.float32))
    interpreter.invoke()
    return np.asarray(interpreter.get_tensor(out["index"]), dtype=np.float64)


@pytest.fixture(scope="module")
def digits(tmp_path_factory: pytest.TempPathFactory) -> Run:
    return train(tmp_path_factory.mktemp("digits") / "models", "--example", "digits")


def test_digits_reach_97_percent_on_held_out_digits(digits: Run) -> None:
    metadata = digits.metadata
    assert digits.version.parent.name == "digits"  # the default name
    assert metadata["metrics"]["test_accuracy"] >= 0.97
    assert metadata["metrics"]["test_samples"] == 359  # 20 %, class by class
    assert metadata["input"] == {
        "shape": [8, 8, 1],
        "dtype": "float32",
        "kind": "image",
        "pixel_range": [0.0, 255.0],
    }
    assert metadata["input_dim"] == 64
    assert metadata["feature_names"] == []
    assert metadata["class_names"] == [str(i) for i in range(10)]
    assert metadata["calibration"]["temperature"] > 0
    assert metadata["training"]["data"]["kind"] == "digits"
    Metadata.model_validate(metadata)
    assert "test accuracy" in digits.stdout


def test_digits_report_shows_images_confusion_and_mistakes(digits: Run) -> None:
    report = digits.version / "report"
    names = {p.name for p in report.iterdir()}
    assert {"sample_images.png", "misclassified.png", "confusion_matrix.png"} <= names
    assert "decision_regions.png" not in names
    text = (report / "report.md").read_text()
    assert "![Misclassified test images](misclassified.png)" in text
    assert "![Training images per class](sample_images.png)" in text
    assert "uniform-noise images flagged" in text
    assert "Not drawn" not in text


def test_digits_tflite_outputs_the_logits_then_the_features(digits: Run) -> None:
    model = keras.saving.load_model(digits.version / "model.keras", compile=False)
    metadata = Metadata.model_validate(digits.metadata)
    ood = metadata.ood
    assert ood is not None
    assert ood.space == "features"
    assert metadata.extra_outputs == ood.dim == 64
    data = load_digits_dataset()
    x = np.concatenate([data.x[:50], noise_images((8, 8, 1), 14, seed=3)])
    served = tflite_outputs(digits.version / "model.tflite", x)
    assert served.shape == (64, 10 + 64)
    logits = served[:, :10]
    z = np.exp(logits - logits.max(axis=1, keepdims=True))
    np.testing.assert_allclose(
        z / z.sum(axis=1, keepdims=True), np.asarray(model(x), dtype=np.float64), atol=1e-5
    )
    layer = model.get_layer("logits")
    features = keras.Model(model.inputs[0], layer.input)(x)
    np.testing.assert_allclose(served[:, 10:], np.asarray(features), atol=1e-4)


def test_the_ood_signal_flags_noise_images_far_more_than_held_out_digits(digits: Run) -> None:
    detector = digits.metadata["training_data"]["ood"]
    assert detector["noise_flagged"] > 0.5
    assert detector["test_flagged"] < 0.1
    assert detector["noise_flagged"] > 5 * detector["test_flagged"]
    # The recorded rates are what the reference gives on the features the export serves.
    data = load_digits_dataset()
    parts = stratified_split(data, 359, 42)
    served = tflite_outputs(digits.version / "model.tflite", parts.x_test)
    flagged = distance_from_metadata(served[:, 10:], detector) > detector["threshold"]
    assert flagged.mean() == pytest.approx(detector["test_flagged"], abs=1 / 359 + 1e-9)
    assert "uniform-noise images" in digits.stdout


def test_the_same_seed_gives_the_same_weights_bit_for_bit(digits: Run, tmp_path: Path) -> None:
    again = train(tmp_path / "models", "--example", "digits", "--no-report")
    first = keras.saving.load_model(digits.version / "model.keras", compile=False)
    second = keras.saving.load_model(again.version / "model.keras", compile=False)
    for a, b in zip(first.get_weights(), second.get_weights(), strict=True):
        assert np.array_equal(a, b)
    assert again.metadata["metrics"] == digits.metadata["metrics"]
    assert (
        again.metadata["training_data"]["ood"]["threshold"]
        == (digits.metadata["training_data"]["ood"]["threshold"])
    )


# --- a folder of images ---------------------------------------------------------------------


def write_shapes(root: Path, per_class: int = 8, size: int = 12, mode: str = "L") -> None:
    """Two classes of tiny PNGs: a bright left half, or a bright top half, with noise."""
    rng = np.random.default_rng(0)
    for name, axis in (("left", 1), ("top", 0)):
        folder = root / name
        folder.mkdir(parents=True)
        for i in range(per_class):
            pixels = rng.integers(0, 60, size=(size, size)).astype(np.uint8)
            if axis == 1:
                pixels[:, : size // 2] += 180
            else:
                pixels[: size // 2, :] += 180
            image = Image.fromarray(pixels, mode="L").convert(mode)
            image.save(folder / f"{i}.png")


def test_a_folder_of_gray_pngs_trains_an_image_classifier(tmp_path: Path) -> None:
    write_shapes(tmp_path / "shapes")
    run = train(tmp_path / "models", "--data", str(tmp_path / "shapes"), "--epochs", "3")
    metadata = run.metadata
    assert run.version.parent.name == "shapes"  # the folder's name
    assert metadata["class_names"] == ["left", "top"]
    assert metadata["input"]["shape"] == [12, 12, 1]  # their own size, one channel
    assert metadata["training"]["data"]["kind"] == "image_folder"
    Metadata.model_validate(metadata)
    assert {p.name for p in run.version.iterdir()} >= {"model.keras", "model.tflite"}


def test_colour_images_and_image_size_give_an_rgb_model_of_that_size(tmp_path: Path) -> None:
    write_shapes(tmp_path / "shapes", mode="RGB")
    run = train(
        tmp_path / "models",
        *("--data", str(tmp_path / "shapes"), "--image-size", "16", "10"),
        *("--epochs", "1", "--no-report", "--name", "rgb"),
    )
    assert run.metadata["input"]["shape"] == [16, 10, 3]
    served = tflite_outputs(run.version / "model.tflite", np.zeros((2, 16, 10, 3), np.float32))
    assert served.shape == (2, 2 + 64)


def _empty(root: Path) -> None:
    root.mkdir()


def _one_class(root: Path) -> None:
    write_shapes(root)
    for path in (root / "top").iterdir():
        path.unlink()
    (root / "top").rmdir()


def _not_an_image(root: Path) -> None:
    write_shapes(root)
    (root / "top" / "notes.txt").write_text("not an image")


def _truncated(root: Path) -> None:
    write_shapes(root)
    path = root / "left" / "3.png"
    path.write_bytes(path.read_bytes()[:60])


def _gif(root: Path) -> None:
    write_shapes(root)
    Image.new("L", (12, 12)).save(root / "left" / "odd.gif")


def _empty_class(root: Path) -> None:
    write_shapes(root)
    (root / "empty").mkdir()


@pytest.mark.parametrize(
    ("make", "message"),
    [
        (_empty, "expected one sub-folder of PNG/JPEG images per class"),
        (_one_class, "expected at least two classes"),
        (_not_an_image, "notes.txt"),
        (_truncated, "3.png"),
        (_gif, "expected PNG or JPEG images only, received GIF"),
        (_empty_class, "expected PNG or JPEG images in"),
    ],
)
def test_a_bad_image_folder_is_one_clear_line_and_writes_nothing(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], make: Any, message: str
) -> None:
    make(tmp_path / "data")
    repository = tmp_path / "models"
    argv = ["--data", str(tmp_path / "data"), "--model-repository", str(repository), "--quiet"]
    assert train_main(argv) == 1
    err = capsys.readouterr().err
    assert err.startswith("error: ")
    assert message in err
    assert err.count("\n") == 1
    assert not repository.exists()


def test_image_options_that_do_not_go_together_are_usage_errors(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    (tmp_path / "data.csv").write_text("a,b\n1,x\n2,y\n")
    for argv in (
        ["--example", "digits", "--data", str(tmp_path / "data.csv")],
        ["--image-size", "8", "8"],
        ["--example", "mnist"],
    ):
        with pytest.raises(SystemExit) as exit_:
            train_main(["--model-repository", str(tmp_path / "models"), *argv])
        assert exit_.value.code == 2
    assert not (tmp_path / "models").exists()
    capsys.readouterr()
