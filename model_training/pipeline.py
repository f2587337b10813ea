"""The training and export pipelines: functions of typed jobs, not of a command line.

``train_version(TrainingJob(...))`` reads or makes the data, splits it, fits the
network, calibrates it on the validation split, fits the out-of-distribution
reference, and writes a new version (model.keras, model.tflite, metadata.json and
the report); ``export_version(ExportJob(...))`` brings a Keras classifier trained
elsewhere into the repository. ``model_training.cli`` only parses and prints.
"""

from __future__ import annotations

import datetime as dt
import math
import platform
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from model_training import __version__, tensorflow_logs
from model_training.calibration import calibrate
from model_training.data import (
    BLOB_TEST_SIZE,
    Dataset,
    Split,
    default_test_size,
    default_validation_split,
    load_csv,
    make_blobs,
    split,
)
from model_training.ood import fit_reference, flagged
from model_training.repository import REPORT_DIR, check_name, file_hashes, write_version

if TYPE_CHECKING:
    from model_training.report import ReportData

DEFAULT_NAME = "blobs"


@dataclass(frozen=True)
class TrainingJob:
    """One training run: where to write, what data, which hyper-parameters."""

    repository: Path = Path("models")
    name: str = DEFAULT_NAME
    data: Path | None = None
    """A CSV to train on; ``None``: the four 2-D Gaussian blobs."""
    label_column: str | None = None
    """The CSV's label column (default: its last column)."""
    samples: int = 1000
    """Blob samples (ignored for a CSV)."""
    test_size: float | None = None
    """Held-out rows: a count, or a fraction below 1 (default: 250 of the blobs, 20 % of a CSV)."""
    validation_split: float | None = None
    """Share of the training rows held out for calibration (default 0.2, at least one per class)."""
    seed: int = 42
    epochs: int = 30
    batch_size: int = 5
    learning_rate: float = 1e-3
    report: bool = True
    """Write the report (plots and report.md) into the version."""
    keras_progress: bool = True
    """Let Keras print its progress bars."""


@dataclass(frozen=True)
class ExportJob:
    """A Keras classifier trained elsewhere, to bring into the repository."""

    model: Path
    name: str
    repository: Path = Path("models")
    feature_names: Sequence[str] | None = None
    class_names: Sequence[str] | None = None
    kind: str | None = None
    """What the input is (table, image, sequence, token_ids); ``None``: read from the model."""
    pixel_range: tuple[float, float] | None = None
    """An image model's values for a black and a white pixel; ``None``: read from the model."""


@dataclass(frozen=True)
class Written:
    """A version written into the repository, and what its metadata says."""

    name: str
    version: int
    path: Path
    metadata: dict[str, Any] = field(repr=False)

    @property
    def report(self) -> Path | None:
        """The report's ``report.md``, when one was written."""
        report = self.path / REPORT_DIR / "report.md"
        return report if report.is_file() else None


def _libraries() -> dict[str, str]:
    import keras
    import tensorflow as tf

    return {
        "python": platform.python_version(),
        "numpy": np.__version__,
        "tensorflow": tf.__version__,
        "keras": keras.__version__,
        "model_training": __version__,
    }


def _now() -> str:
    return dt.datetime.now(dt.UTC).isoformat(timespec="seconds").replace("+00:00", "Z")


def _write(
    repository: Path,
    name: str,
    model: Any,
    probe: np.ndarray,
    metadata: dict[str, Any],
    report: ReportData | None = None,
) -> Written:
    """Export ``model`` (self-checked), then write the version atomically."""
    from model_training.export import to_tflite

    tflite = to_tflite(model, probe)

    def write_files(directory: Path) -> dict[str, Any]:
        model.save(directory / "model.keras")
        (directory / "model.tflite").write_bytes(tflite)
        if report is None:
            return {"report": None}
        from model_training.report import write_report

        written = write_report(directory / REPORT_DIR, report)
        # Recorded for provenance, outside "files": the service verifies only what it serves.
        return {
            "report": {
                "directory": REPORT_DIR,
                "files": file_hashes(directory / REPORT_DIR, written),
            }
        }

    version, path = write_version(repository, name, write_files, metadata)
    return Written(name, version, path, metadata)


def load_dataset(job: TrainingJob) -> Dataset:
    """The job's table, or the blobs."""
    if job.data is not None:
        return load_csv(job.data, job.label_column)
    return make_blobs(job.samples, seed=job.seed)


def split_dataset(job: TrainingJob, dataset: Dataset) -> tuple[Split, float, float]:
    """Train and test parts, with the test size and validation split in force."""
    test_size = job.test_size
    if test_size is None:
        test_size = (
            default_test_size(len(dataset.y), dataset.num_classes)
            if job.data is not None
            else BLOB_TEST_SIZE
        )
    parts = split(dataset, test_size, job.seed)
    validation_split = job.validation_split
    if validation_split is None:
        validation_split = default_validation_split(len(parts.y_train), dataset.num_classes)
    return parts, test_size, validation_split


def training_data(parts: Split, class_names: Sequence[str]) -> dict[str, Any]:
    """Statistics of the training part and the OOD detector, checked on the test split."""
    statistics = fit_reference(parts.x_train, parts.y_train, list(class_names))
    detector = statistics["ood"]
    detector["test_flagged"] = float(flagged(parts.x_test, detector).mean())
    return statistics


def train_version(job: TrainingJob) -> Written:
    """Train on the job's data and write the model as a new version."""
    check_name(job.name)
    dataset = load_dataset(job)
    parts, test_size, validation_split = split_dataset(job, dataset)

    tensorflow_logs.import_tensorflow()
    from model_training.model import TrainConfig, logits, probe_inputs, train

    config = TrainConfig(
        seed=job.seed,
        epochs=job.epochs,
        batch_size=job.batch_size,
        learning_rate=job.learning_rate,
        validation_split=validation_split,
        verbose="auto" if job.keras_progress else 0,
    )
    result = train(parts, dataset.num_classes, config)
    held = result.validation
    test_logits = logits(result.model, parts.x_test)
    validation_logits = (
        logits(result.model, held.x_val)
        if len(held.y_val)
        else np.empty((0, dataset.num_classes), dtype=np.float64)
    )
    calibration = (
        calibrate(validation_logits, held.y_val, test_logits, parts.y_test)
        if len(held.y_val)
        else None
    )
    input_dim = int(dataset.x.shape[1])
    metadata = {
        "created_at": _now(),
        "input_dim": input_dim,
        "input": {"shape": [input_dim], "dtype": "float32", "kind": "table"},
        "feature_names": list(dataset.feature_names),
        "class_names": list(dataset.class_names),
        "metrics": {
            "test_loss": result.test_loss,
            "test_accuracy": result.test_accuracy,
            "test_samples": result.test_samples,
        },
        "calibration": calibration,
        "training": {
            **config.as_metadata(),
            "test_size": test_size,
            "train_samples": len(held.y_fit),
            "validation_samples": len(held.y_val),
            "data": dataset.source,
            "history": result.history,
        },
        "training_data": training_data(parts, dataset.class_names),
        "libraries": _libraries(),
    }
    report = None
    if job.report:
        from model_training.report import ReportData

        report = ReportData(
            name=job.name,
            metadata=metadata,
            history=result.history,
            x_train=parts.x_train,
            y_train=parts.y_train,
            validation_logits=validation_logits,
            y_val=held.y_val,
            x_test=parts.x_test,
            y_test=parts.y_test,
            test_logits=test_logits,
            logits=lambda x: logits(result.model, x),
        )
    probe = probe_inputs(dataset.x)
    return _write(job.repository, job.name, result.model, probe, metadata, report)


def export_version(job: ExportJob) -> Written:
    """Bring a Keras softmax classifier trained elsewhere in as a new version."""
    check_name(job.name)
    tensorflow_logs.import_tensorflow()
    from model_training.export import ExportError, load_keras, logits_model
    from model_training.inputs import describe_input, probe

    model = load_keras(job.model)
    description = describe_input(model, job.kind, job.pixel_range)
    input_dim = math.prod(description["shape"])
    num_classes = int(logits_model(model).output.shape[-1])
    table = description["kind"] == "table"
    if job.feature_names and not table:
        raise ExportError(
            f"expected no feature names for a {description['kind']} input (only a table has "
            f"them), received {len(job.feature_names)}"
        )
    features = list(job.feature_names or [f"x{i + 1}" for i in range(input_dim)]) if table else []
    classes = list(job.class_names or [str(i) for i in range(num_classes)])
    if table and len(features) != input_dim:
        raise ExportError(f"expected {input_dim} feature names, received {len(features)}")
    if len(classes) != num_classes:
        raise ExportError(f"expected {num_classes} class names, received {len(classes)}")
    metadata = {
        "created_at": _now(),
        "input_dim": input_dim,
        "input": description,
        "feature_names": features,
        "class_names": classes,
        "metrics": None,
        "training": {"exported_from": str(job.model)},
        "libraries": _libraries(),
    }
    return _write(job.repository, job.name, model, probe(description), metadata)
