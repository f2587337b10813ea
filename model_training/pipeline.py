"""The training and export pipelines: functions of typed jobs, not of a command line.

``train_version(TrainingJob(...))`` reads or makes the data, splits it, fits the
network, calibrates it on the validation split, fits the out-of-distribution
reference, records the distributions live drift is measured against (``monitoring``),
and writes a new version (model.keras, model.tflite, metadata.json and
the report); ``export_version(ExportJob(...))`` brings a Keras classifier trained
elsewhere into the repository. ``model_training.cli`` only parses and prints.
"""

from __future__ import annotations

import csv
import datetime as dt
import json
import platform
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from model_training import __version__, explanation, monitoring, tensorflow_logs
from model_training.artifact import LOOKUPS, TEXT, Column, InputSpec
from model_training.baseline import logistic_regression
from model_training.calibration import calibrate
from model_training.data import (
    BLOB_TEST_SIZE,
    DataError,
    Dataset,
    Split,
    default_test_size,
    default_validation_split,
    make_blobs,
    split,
    split_rows,
)
from model_training.images import (
    load_digits_dataset,
    load_image_folder,
    noise_images,
    stratified_split,
)
from model_training.ood import FEATURE_QUANTILE, fit_reference, flagged
from model_training.repository import REPORT_DIR, check_name, file_hashes, write_version
from model_training.tables import (
    Table,
    encode,
    feature_names,
    fit_columns,
    one_hot_inputs,
    read_table,
)
from model_training.text_training import is_text_folder

if TYPE_CHECKING:
    from model_training.model import TrainResult
    from model_training.named_inputs import NamedSplit
    from model_training.report import ReportData


DEFAULT_NAME = "blobs"
EXAMPLES = ("blobs", "digits")
#: Training defaults by kind of data: the dense table network learns best from small
#: batches; the image CNN from the usual 32.
TABLE_EPOCHS, TABLE_BATCH_SIZE = 30, 5
IMAGE_EPOCHS, IMAGE_BATCH_SIZE = 30, 32
#: Adam's learning rate of the classic recipe (the blobs) and of the image CNN.
CLASSIC_LEARNING_RATE = 1e-3
#: A user's CSV (``table_model``): at most this many epochs (early stopping decides), in
#: batches of 32, at a rate of 1e-2 (measured: see docs/training.md).
CSV_MAX_EPOCHS, CSV_BATCH_SIZE, CSV_LEARNING_RATE = 500, 32, 1e-2
#: Uniform-noise images scored to measure the OOD signal of an image model.
NOISE_IMAGES = 1000


@dataclass(frozen=True)
class TrainingJob:
    """One training run: where to write, what data, which hyper-parameters."""

    repository: Path = Path("models")
    name: str = DEFAULT_NAME
    data: Path | None = None
    """A CSV, or a folder of one image sub-folder per class, to train on; ``None``: the example."""
    example: str = "blobs"
    """Without ``data``: ``blobs`` (four 2-D Gaussian blobs) or ``digits`` (8x8 digits)."""
    image_size: tuple[int, int] | None = None
    """A folder's images are resized to ``(height, width)``; ``None``: their own size if
    they all share one, else 32x32."""
    label_column: str | None = None
    text_column: str | None = None
    """A CSV's column of raw text: trains a text classifier (``text_training``)."""
    """The CSV's label column (default: its last column)."""
    categorical: Sequence[str] = ()
    """The CSV's columns to read as categorical even when their values are all numbers (zip
    codes, integer-coded categories); the vocabulary is the cells' text."""
    samples: int = 1000
    """Blob samples (ignored for a CSV)."""
    test_size: float | None = None
    """Held-out rows: a count, or a fraction below 1 (default: 250 of the blobs, 20 % of a CSV)."""
    validation_split: float | None = None
    """Share of the training rows held out for calibration (default 0.2, at least one per class)."""
    seed: int = 42
    epochs: int | None = None
    """``None``: 30 (the examples, images); for a CSV, at most 500 (early stopping)."""
    batch_size: int | None = None
    """``None``: 5 for the blobs, 32 for a CSV and for images."""
    learning_rate: float | None = None
    """``None``: 1e-3 (the blobs, images), 1e-2 (a CSV)."""
    architecture: str = "auto"
    """A CSV's recipe: ``network`` (one hidden layer), ``linear`` (none), or ``auto``: the
    one with the lower cross-validated NLL on the training rows (``table_selection``)."""
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
    output: str = "auto"
    """What the model outputs: ``probabilities``, ``logits``, ``sigmoid``, or ``auto`` (read
    from its last layers, ``heads.read_head``)."""
    imports: Sequence[str] = ()
    """Modules to import before loading: they register the model's custom classes."""
    signature: str = "serving_default"
    """A SavedModel's signature to serve (TF Serving's ``signature_name``)."""
    reference_data: Path | None = None
    """A CSV of rows like the model's training data (its feature columns, and optionally
    one column of class names), for the references live drift is measured against."""


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
    with_features: bool = False,
    saved: Any = None,
    files: dict[str, bytes] | None = None,
    projection: np.ndarray | None = None,
) -> Written:
    """Export ``model`` (self-checked), then write the version atomically.

    ``with_features``: ``model.tflite`` outputs the features after the logits (the
    version's OOD reference is measured on them; on their leading components, with a
    ``projection``: ``export.serving_model``). ``saved``: the Keras model saved as
    ``model.keras``, when it is not ``model`` (a text model's, which takes strings);
    ``files``: more files for the version (hashed with the others).
    """
    from model_training.export import to_tflite

    tflite = to_tflite(model, probe, with_features, projection)

    def write_files(directory: Path) -> dict[str, Any]:
        (model if saved is None else saved).save(directory / "model.keras")
        (directory / "model.tflite").write_bytes(tflite)
        for file_name, content in (files or {}).items():
            (directory / file_name).write_bytes(content)
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


def is_image_job(job: TrainingJob) -> bool:
    """True when the job trains an image classifier (a folder of images, or the digits)."""
    return job.data.is_dir() if job.data is not None else job.example == "digits"


def load_dataset(job: TrainingJob) -> Dataset:
    """The job's image folder, or the example (the blobs or the digits); a CSV is a ``Table``."""
    if job.data is not None:
        if job.data.is_dir():
            return load_image_folder(job.data, job.image_size)
        raise DataError(f"expected a folder of images, received {job.data}: read it as a table")
    if job.example == "digits":
        return load_digits_dataset()
    if job.example != "blobs":
        raise DataError(f"expected an example in {list(EXAMPLES)}, received {job.example!r}")
    return make_blobs(job.samples, seed=job.seed)


def split_dataset(job: TrainingJob, dataset: Dataset) -> tuple[Split, float, float]:
    """Train and test parts, with the test size and validation split in force."""
    test_size = job.test_size
    if test_size is None:
        test_size = (
            BLOB_TEST_SIZE
            if dataset.source.get("kind") == "blobs"
            else default_test_size(len(dataset.y), dataset.num_classes)
        )
    if dataset.x.ndim > 2:
        parts = stratified_split(dataset, test_size, job.seed)
    else:
        parts = split(dataset, test_size, job.seed)
    validation_split = job.validation_split
    if validation_split is None:
        validation_split = default_validation_split(len(parts.y_train), dataset.num_classes)
    return parts, test_size, validation_split


@dataclass(frozen=True)
class EncodedTable:
    """A user's CSV encoded for the model: the rows, the split, and each column's encoding."""

    dataset: Dataset
    parts: Split
    columns: list[Column]
    test_size: float
    validation_split: float
    raw: Table
    """The CSV as read, before encoding (what ``monitoring`` bins)."""
    train_rows: np.ndarray
    """The rows of ``raw`` in ``parts.x_train``, in its order."""


def load_table(job: TrainingJob, path: Path) -> EncodedTable:
    """Read the CSV, hold out the test rows, fit the columns' encoding on the training rows
    only (fills, vocabularies) and encode every row with it."""
    table = read_table(path, job.label_column, job.categorical)
    n, classes = len(table.y), len(table.class_names)
    test_size = job.test_size if job.test_size is not None else default_test_size(n, classes)
    train_rows, test_rows = split_rows(n, test_size, job.seed)
    columns = fit_columns(table, train_rows)
    x = encode(table, columns)
    dataset = Dataset(
        x=x,
        y=table.y,
        feature_names=tuple(feature_names(columns)),
        class_names=table.class_names,
        source=table.source(),
    )
    parts = Split(x[train_rows], table.y[train_rows], x[test_rows], table.y[test_rows])
    validation_split = job.validation_split
    if validation_split is None:
        validation_split = default_validation_split(len(train_rows), classes)
    return EncodedTable(
        dataset, parts, columns, test_size, validation_split, table, np.asarray(train_rows)
    )


def training_data(
    parts: Split, class_names: Sequence[str], columns: Sequence[Column] | None = None
) -> dict[str, Any]:
    """Statistics of the training part and the OOD detector, checked on the test split.

    For a CSV with categorical ``columns`` the distance is measured over its numeric
    inputs only (``ood.fit_reference``'s ``measured``); a CSV with no numeric column has
    no OOD reference (``ood: null``).
    """
    measured = None
    if columns is not None and any(column.kind == "categorical" for column in columns):
        measured = ~one_hot_inputs(columns)
    statistics = fit_reference(parts.x_train, parts.y_train, list(class_names), measured=measured)
    if measured is not None and not measured.any():
        statistics["ood"] = None
        return statistics
    detector = statistics["ood"]
    detector["test_flagged"] = float(flagged(parts.x_test, detector).mean())
    if measured is not None:
        detector["inputs"] = "numeric columns only: one-hot inputs have zero precision"
    return statistics


def train_version(job: TrainingJob) -> Written:
    """Train on the job's data and write the model as a new version."""
    check_name(job.name)
    if job.data is not None and (job.text_column is not None or is_text_folder(job.data)):
        from model_training.text_training import (
            load_text_csv,
            load_text_folder,
            train_text_version,
        )

        data = (
            load_text_folder(job.data)
            if job.data.is_dir()
            else load_text_csv(job.data, job.text_column or "", job.label_column)
        )
        tensorflow_logs.import_tensorflow()
        return train_text_version(job, data)
    if job.data is not None and not job.data.is_dir():
        table = load_table(job, job.data)
        tensorflow_logs.import_tensorflow()
        return _train_table(
            job, table.dataset, table.parts, table.test_size, table.validation_split, table
        )
    dataset = load_dataset(job)
    parts, test_size, validation_split = split_dataset(job, dataset)
    tensorflow_logs.import_tensorflow()
    if dataset.x.ndim > 2:
        return _train_images(job, dataset, parts, test_size, validation_split)
    return _train_table(job, dataset, parts, test_size, validation_split)


def _fit_table(
    job: TrainingJob,
    dataset: Dataset,
    parts: Split,
    validation_split: float,
    table: EncodedTable | None,
) -> tuple[TrainResult, dict[str, Any], np.ndarray | None]:
    """The classic recipe for the blobs (``model.train``), the table recipe for a CSV
    (``table_model.train_table``, the network or its linear special case as
    ``table_selection`` chooses); the result, its configuration for the metadata, and the
    training rows' out-of-fold logits to calibrate on when the model holds no validation
    split out (the linear model; ``None``: calibrate on the validation split)."""
    from model_training.model import TrainConfig, train
    from model_training.table_model import TableConfig, train_table
    from model_training.table_selection import recipe, select_recipe

    verbose = "auto" if job.keras_progress else 0
    if table is None:
        config = TrainConfig(
            seed=job.seed,
            epochs=job.epochs or TABLE_EPOCHS,
            batch_size=job.batch_size or TABLE_BATCH_SIZE,
            learning_rate=job.learning_rate or CLASSIC_LEARNING_RATE,
            validation_split=validation_split,
            verbose=verbose,
        )
        return train(parts, dataset.num_classes, config), config.as_metadata(), None
    table_config = TableConfig(
        seed=job.seed,
        epochs=job.epochs or CSV_MAX_EPOCHS,
        batch_size=job.batch_size or CSV_BATCH_SIZE,
        learning_rate=job.learning_rate or CSV_LEARNING_RATE,
        validation_split=validation_split,
        verbose=verbose,
    )
    one_hot = one_hot_inputs(table.columns)
    selection = select_recipe(
        parts,
        dataset.num_classes,
        one_hot,
        table_config,
        job.architecture,
        job.validation_split,
    )
    table_config = recipe(table_config, selection.chosen)
    result = train_table(parts, dataset.num_classes, one_hot, table_config)
    held_out = None
    if selection.chosen == "linear" and selection.logits is not None:
        held_out = selection.logits["linear"]
    return (
        result,
        {
            **table_config.as_metadata(),
            "architecture": selection.chosen,
            "model_selection": selection.as_metadata(),
            "early_stopping": result.early_stopping,
        },
        held_out,
    )


def _train_table(
    job: TrainingJob,
    dataset: Dataset,
    parts: Split,
    test_size: float,
    validation_split: float,
    table: EncodedTable | None = None,
) -> Written:
    """The dense classifier on a table's rows: the blobs, or a user's CSV (``table``).

    The OOD reference is on the input features (a CSV's numeric ones: ``training_data``).
    """
    from model_training.model import logits, probe_inputs

    result, configuration, out_of_fold = _fit_table(job, dataset, parts, validation_split, table)
    model = result.model
    held = result.validation
    test_logits = logits(model, parts.x_test)
    validation_logits = (
        logits(model, held.x_val)
        if len(held.y_val)
        else np.empty((0, dataset.num_classes), dtype=np.float64)
    )
    y_val = held.y_val
    if out_of_fold is not None:  # the linear model: every training row, scored out of fold
        validation_logits, y_val = out_of_fold, parts.y_train
    calibration = (
        calibrate(validation_logits, y_val, test_logits, parts.y_test) if len(y_val) else None
    )
    if calibration is not None and out_of_fold is not None:
        calibration["fitted_on"] = "out_of_fold"
    input_dim = int(dataset.x.shape[1])
    description: dict[str, Any] = {"shape": [input_dim], "dtype": "float32", "kind": "table"}
    if table is not None:
        description["columns"] = [column.model_dump() for column in table.columns]
    statistics = training_data(
        parts, dataset.class_names, table.columns if table is not None else None
    )
    metadata = {
        "created_at": _now(),
        "input_dim": input_dim,
        "input": description,
        "feature_names": list(dataset.feature_names),
        "class_names": list(dataset.class_names),
        "metrics": {
            "test_loss": result.test_loss,
            "test_accuracy": result.test_accuracy,
            "test_samples": result.test_samples,
            "baseline": logistic_regression(
                parts.x_train, parts.y_train, parts.x_test, parts.y_test
            ),
        },
        "calibration": calibration,
        "training": {
            **configuration,
            "test_size": test_size,
            "train_samples": len(held.y_fit),
            "validation_samples": len(held.y_val),
            "data": dataset.source,
            "history": result.history,
        },
        "training_data": statistics,
        "libraries": _libraries(),
    }
    metadata["monitoring"] = monitoring.reference(
        logits(model, parts.x_train),
        parts.y_train,
        dataset.num_classes,
        calibration["temperature"] if calibration is not None else 1.0,
        features=(
            monitoring.array_features(dataset.feature_names, parts.x_train)
            if table is None
            else monitoring.table_features(table.raw.columns, table.train_rows)
        ),
        ood=statistics["ood"],
        ood_inputs=parts.x_train,
    )
    metadata["explanation"] = explanation.background(
        parts.x_train,
        categorical=table is not None and any(c.kind == "categorical" for c in table.columns),
        seed=job.seed,
    )
    report = _report_data(
        job,
        metadata,
        result,
        parts,
        validation_logits,
        test_logits,
        lambda x: logits(model, x),
        y_val=y_val,
    )
    probe = probe_inputs(dataset.x)
    return _write(job.repository, job.name, model, probe, metadata, report)


def _report_data(
    job: TrainingJob,
    metadata: dict[str, Any],
    result: TrainResult,
    parts: Split,
    validation_logits: np.ndarray,
    test_logits: np.ndarray,
    logits: Callable[[np.ndarray], np.ndarray],
    y_val: np.ndarray | None = None,
) -> ReportData | None:
    """What the report is drawn from (``None`` when the job asks for no report); the
    calibration's held-out rows are ``validation_logits`` and ``y_val`` (default: the
    validation split's labels)."""
    if not job.report:
        return None
    from model_training.report import ReportData

    return ReportData(
        name=job.name,
        metadata=metadata,
        history=result.history,
        x_train=parts.x_train,
        y_train=parts.y_train,
        validation_logits=validation_logits,
        y_val=result.validation.y_val if y_val is None else y_val,
        x_test=parts.x_test,
        y_test=parts.y_test,
        test_logits=test_logits,
        logits=logits,
    )


def image_training_data(
    train_features: np.ndarray,
    y_train: np.ndarray,
    class_names: Sequence[str],
    test_features: np.ndarray,
    noise_features: np.ndarray,
    x_train: np.ndarray,
) -> dict[str, Any]:
    """The OOD reference on the network's features, and how it flags held-out and noise images.

    The class-conditional Mahalanobis reference of ``model_training.ood``, fitted on the
    features (what enters the ``logits`` layer) of the training part, threshold at its
    ``FEATURE_QUANTILE``; ``space: "features"`` tells the service to measure distances
    on the features ``model.tflite`` outputs after the logits.
    """
    statistics = fit_reference(train_features, y_train, list(class_names), FEATURE_QUANTILE)
    detector = statistics["ood"]
    detector.update(
        space="features",
        features={"entering": "logits", "dim": int(train_features.shape[1])},
        test_flagged=float(flagged(test_features, detector).mean()),
        noise_flagged=float(flagged(noise_features, detector).mean()),
        noise={
            "samples": len(noise_features),
            "what": "uniform-noise images",
            "distribution": "uniform over the pixel range, independent pixels",
        },
    )
    pixels = np.asarray(x_train, dtype=np.float64)
    return {
        "n": statistics["n"],
        "class_counts": statistics["class_counts"],
        "pixel_mean": float(pixels.mean()),
        "pixel_std": float(pixels.std()),
        "pixel_min": float(pixels.min()),
        "pixel_max": float(pixels.max()),
        "ood": detector,
    }


def _train_images(
    job: TrainingJob, dataset: Dataset, parts: Split, test_size: float, validation_split: float
) -> Written:
    """The image CNN (``build_image_classifier``), OOD measured on its features."""
    from model_training.model import (
        TrainConfig,
        build_image_classifier,
        image_architecture,
        image_logits_and_features,
        train,
    )

    shape = tuple(int(d) for d in dataset.x.shape[1:])
    height, width, channels = shape
    config = TrainConfig(
        seed=job.seed,
        epochs=job.epochs or IMAGE_EPOCHS,
        batch_size=job.batch_size or IMAGE_BATCH_SIZE,
        learning_rate=job.learning_rate or CLASSIC_LEARNING_RATE,
        validation_split=validation_split,
        hidden_units=(),
        verbose="auto" if job.keras_progress else 0,
    )
    result = train(
        parts,
        dataset.num_classes,
        config,
        build=lambda: build_image_classifier((height, width, channels), dataset.num_classes),
    )
    held = result.validation
    model = result.model
    test_logits, test_features = image_logits_and_features(model, parts.x_test)
    train_logits, train_features = image_logits_and_features(model, parts.x_train)
    noise = noise_images((height, width, channels), NOISE_IMAGES, job.seed)
    _, noise_features = image_logits_and_features(model, noise)
    # The validation split is the tail of the training part (carve_validation).
    validation_logits = train_logits[len(held.y_fit) :]
    calibration = (
        calibrate(validation_logits, held.y_val, test_logits, parts.y_test)
        if len(held.y_val)
        else None
    )
    training = {
        key: value
        for key, value in config.as_metadata().items()
        if key not in ("hidden_units", "hidden_activation", "kernel_initializer")
    }
    statistics = image_training_data(
        train_features,
        parts.y_train,
        dataset.class_names,
        test_features,
        noise_features,
        parts.x_train,
    )
    description = {
        "shape": [height, width, channels],
        "dtype": "float32",
        "kind": "image",
        "pixel_range": [0.0, 255.0],
    }
    metadata = {
        "created_at": _now(),
        "input_dim": height * width * channels,
        "input": description,
        "feature_names": [],
        "class_names": list(dataset.class_names),
        "metrics": {
            "test_loss": result.test_loss,
            "test_accuracy": result.test_accuracy,
            "test_samples": result.test_samples,
        },
        "calibration": calibration,
        "training": {
            **training,
            **image_architecture(model),
            "test_size": test_size,
            "train_samples": len(held.y_fit),
            "validation_samples": len(held.y_val),
            "data": dataset.source,
            "history": result.history,
        },
        "training_data": statistics,
        "libraries": _libraries(),
    }
    metadata["monitoring"] = monitoring.reference(
        train_logits,
        parts.y_train,
        dataset.num_classes,
        calibration["temperature"] if calibration is not None else 1.0,
        ood=statistics["ood"],
        ood_inputs=train_features,
    )
    report = _report_data(
        job,
        metadata,
        result,
        parts,
        validation_logits,
        test_logits,
        lambda x: image_logits_and_features(model, x)[0],
    )
    from model_training.inputs import probe

    return _write(
        job.repository, job.name, model, probe(description), metadata, report, with_features=True
    )


def export_version(job: ExportJob) -> Written:
    """``export_versions``' last (for a single model, its only) version."""
    return export_versions(job)[-1]


def export_versions(job: ExportJob) -> list[Written]:
    """Bring a classifier trained elsewhere in as a new version (every version of a TF
    Serving base path, numbers kept).

    Its head is read (``heads.read_head``): the version's ``model.keras`` is the
    classifier ending in a softmax of the logits found, checked against the user's
    model on probes before anything is written.
    """
    check_name(job.name)
    tensorflow_logs.import_tensorflow()
    from model_training.saved_model import base_path_versions, is_saved_model

    if is_saved_model(job.model) or base_path_versions(job.model):
        _no_reference_data(job, "a SavedModel")
        return _export_saved_models(job)
    from model_training.export import ExportError, check_head, load_keras
    from model_training.heads import HeadError, functional, read_head
    from model_training.inputs import InputError, describe_input, probe
    from model_training.named_inputs import is_named_model, split_named
    from model_training.text import TextLayerError, is_text_model, split_text

    model = load_keras(job.model, job.imports)  # its refusals name the file
    try:
        model = functional(model)
        if is_named_model(model):
            _no_reference_data(job, "a model of several inputs")
            return [_export_named(job, split_named(model))]
        text = split_text(model) if is_text_model(model) else None
        network = model if text is None else text.network  # what LiteRT runs
        description = describe_input(network, job.kind, job.pixel_range)
        probes = probe(description)
        if text is not None:
            description = _text_input(description, text.largest_index)
            probes = _with_empty_text(probe(description), description)
        head = read_head(network, job.output, probes)  # type: ignore[arg-type]
        check_head(network, head, probes)
        classifier = head.classifier
        metadata = _export_metadata(job, description, int(classifier.outputs[0].shape[-1]))
        metadata["training"].update(
            output=head.output,
            head=head.how,
            **({"imports": list(job.imports)} if job.imports else {}),
        )
        if text is None:
            if job.reference_data is not None:
                metadata["monitoring"] = _reference_monitoring(job, classifier, metadata)
            return [_write(job.repository, job.name, classifier, probes, metadata)]
        _no_reference_data(job, "a model of raw text")
        metadata["training"]["text_layer"] = text.description["layer"]
        document = json.dumps(text.description, ensure_ascii=False, allow_nan=False)
        return [
            _write(
                job.repository,
                job.name,
                classifier,
                probes,
                metadata,
                saved=text.join(classifier),
                files={TEXT: document.encode("utf-8")},
            )
        ]
    except (HeadError, InputError, ExportError, TextLayerError) as exc:
        raise ExportError(f"cannot export {job.model}: {exc}") from exc


def _no_reference_data(job: ExportJob, what: str) -> None:
    from model_training.export import ExportError

    if job.reference_data is not None:
        raise ExportError(
            f"expected --reference-data for a model of one table input, received {what} "
            f"({job.model}): export it without, and its versions are not monitored for drift"
        )


def _reference_monitoring(
    job: ExportJob, classifier: Any, metadata: dict[str, Any]
) -> dict[str, Any]:
    """The ``monitoring`` block of an exported table model, measured on the rows of
    ``job.reference_data``: each feature's deciles, the entropy and the predicted mix of
    the model's own answers to them and, when the CSV has a column of class names, the
    class prior."""
    from model_training.export import ExportError

    assert job.reference_data is not None
    if metadata["input"]["kind"] != "table":
        _no_reference_data(job, f"a model of {metadata['input']['kind']} inputs")
    features, classes = metadata["feature_names"], metadata["class_names"]
    with job.reference_data.open(newline="", encoding="utf-8") as source:
        reader = csv.reader(source)
        header = next(reader, [])
        rows = list(reader)
    missing = [name for name in features if name not in header]
    extra = [name for name in header if name not in features]
    if missing or len(extra) > 1:
        raise ExportError(
            f"expected --reference-data {job.reference_data} to hold the model's feature "
            f"columns {features} and at most one column of class names, received {header}"
        )
    where = [header.index(name) for name in features]
    try:
        x = np.array([[float(row[j]) for j in where] for row in rows], dtype=np.float64)
    except (ValueError, IndexError) as exc:
        raise ExportError(
            f"expected a number in every feature cell of {job.reference_data}: {exc}"
        ) from None
    if len(x) < 10 or not np.isfinite(x).all():
        raise ExportError(
            f"expected at least 10 rows of finite numbers in {job.reference_data}, received "
            f"{len(x)} rows{'' if np.isfinite(x).all() else ' with missing or infinite cells'}"
        )
    p = np.asarray(classifier.predict(x.astype(np.float32), verbose=0), dtype=np.float64)
    logits = np.log(np.clip(p, np.finfo(np.float64).tiny, None))  # softmax(log p) = p
    labels = p.argmax(axis=1)
    if extra:
        column = header.index(extra[0])
        unknown = sorted({row[column] for row in rows} - set(classes))
        if unknown:
            raise ExportError(
                f"expected class names {classes} in column {extra[0]!r} of "
                f"{job.reference_data}, received {unknown[:10]}"
            )
        labels = np.array([classes.index(row[column]) for row in rows])
    block = monitoring.reference(
        logits,
        labels,
        len(classes),
        features=monitoring.array_features(features, x),
        computed_on="reference_data",
    )
    if not extra:
        block["class_prior"] = None  # no labels: the predicted mix is all there is
    block["reference_data"] = str(job.reference_data)
    return block


def _export_named(job: ExportJob, split: NamedSplit) -> Written:
    """A model of several inputs (``named_inputs.split_named``): ``model.tflite`` takes
    every input by name, the string lookups travel in ``lookups.json``."""
    from model_training.export import check_head
    from model_training.heads import read_head

    if job.kind is not None or job.pixel_range is not None or job.feature_names:
        from model_training.export import ExportError

        raise ExportError(
            "expected no --kind, --pixel-range or --feature-names for a model of several "
            "inputs (each input's kind is read from the model and named by its input)"
        )
    spec = InputSpec.model_validate(split.description)
    probes = split.keras_inputs(spec.probe(64, np.random.default_rng(0)))
    head = read_head(split.network, job.output, probes)  # type: ignore[arg-type]
    check_head(split.network, head, probes)
    classifier = head.classifier
    saved = split.join(classifier)
    raw = split.raw_inputs(spec.probe(64, np.random.default_rng(1)))
    check_head(split.model, replace(head, classifier=saved), raw)  # the split changes nothing
    metadata = _export_metadata(job, split.description, int(classifier.outputs[0].shape[-1]))
    metadata["training"].update(
        output=head.output,
        head=head.how,
        inputs=split.names,
        **({"imports": list(job.imports)} if job.imports else {}),
    )
    files = {}
    if split.lookups:
        document = json.dumps(split.lookups, ensure_ascii=False, allow_nan=False)
        files[LOOKUPS] = document.encode("utf-8")
    return _write(
        job.repository,
        job.name,
        classifier,
        probes,  # type: ignore[arg-type]
        metadata,
        saved=saved,
        files=files,
    )


def write_text_version(
    repository: Path,
    name: str,
    model: Any,
    class_names: list[str],
    metadata: dict[str, Any],
    report: ReportData | None = None,
    projection: np.ndarray | None = None,
) -> Written:
    """Write a text classifier trained here (``text_training``): split after its string
    layer as an exported one is, with ``metadata`` (metrics, calibration, training), its
    ``report`` and, with the ``projection`` its OOD reference is measured through,
    those features after the logits in ``model.tflite``."""
    from model_training.export import check_head
    from model_training.heads import read_head
    from model_training.inputs import describe_input, probe
    from model_training.text import split_text

    text = split_text(model)
    description = _text_input(describe_input(text.network), text.largest_index)
    probes = _with_empty_text(probe(description), description)
    head = read_head(text.network, "auto", probes)
    check_head(text.network, head, probes)
    document = json.dumps(text.description, ensure_ascii=False, allow_nan=False)
    full = {
        "created_at": _now(),
        "input_dim": InputSpec.model_validate(description).size,
        "input": description,
        "feature_names": [],
        "class_names": class_names,
        **metadata,
        "libraries": _libraries(),
    }
    full["training"] = {**full["training"], "text_layer": text.description["layer"]}
    if report is not None:
        report = replace(report, metadata=full)
    return _write(
        repository,
        name,
        head.classifier,
        probes,
        full,
        report,
        with_features=projection is not None,
        saved=text.join(head.classifier),
        files={TEXT: document.encode("utf-8")},
        projection=projection,
    )


def _with_empty_text(probes: np.ndarray, description: dict[str, Any]) -> np.ndarray:
    """A text model's probes and what an empty string becomes (all zeros: padding only,
    or no count), which the export must serve too."""
    if description["shape"][0] == -1:  # of any length: an empty text is refused instead
        return probes
    return np.concatenate([probes, np.zeros((1, *probes.shape[1:]), dtype=probes.dtype)])


def _text_input(description: dict[str, Any], largest_index: int | None) -> dict[str, Any]:
    """A raw-text model's input: strings, which the service turns into what ``description``
    says ``model.tflite`` takes; indices from 0 to ``largest_index`` (which also bound
    the export's probes), or counts."""
    text = {**description, "kind": "text"}
    if largest_index is None:
        text.pop("id_range", None)
    else:
        high = min(largest_index, description.get("id_range", [0, largest_index])[1])
        text["id_range"] = [0, high]
    InputSpec.model_validate(text)
    return text


def _export_metadata(
    job: ExportJob, description: dict[str, Any], num_classes: int, source: Path | None = None
) -> dict[str, Any]:
    """An exported version's metadata (names checked against the input and the classes)."""
    from model_training.export import ExportError

    input_dim = InputSpec.model_validate(description).size  # of any length: one step's
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
    return {
        "created_at": _now(),
        "input_dim": input_dim,
        "input": description,
        "feature_names": features,
        "class_names": classes,
        "metrics": None,
        "training": {"exported_from": str(source or job.model)},
        "libraries": _libraries(),
        # No data comes with an exported model: nothing to measure drift against.
        "monitoring": None,
    }


def _export_saved_models(job: ExportJob) -> list[Written]:
    """A SavedModel as a new version, or every version of a TF Serving base path with its
    number kept. All are converted and checked before the first is written; a number
    already taken in the repository is refused before anything is written."""
    from model_training.export import ExportError
    from model_training.repository import RepositoryError
    from model_training.saved_model import base_path_versions, export_saved_model

    numbered = base_path_versions(job.model)
    sources: list[tuple[int | None, Path]] = [(n, job.model / str(n)) for n in numbered]
    if not sources:
        sources = [(None, job.model)]
    model_dir = job.repository / job.name
    taken = [n for n, _ in sources if n is not None and (model_dir / str(n)).exists()]
    if taken:
        raise RepositoryError(
            f"expected versions {taken} of {job.name!r} to be free in {job.repository} (a TF "
            "Serving base path keeps its version numbers): export into another name or repository"
        )
    converted = []
    for number, source in sources:
        try:
            export = export_saved_model(
                source, job.signature, job.output, job.kind, job.pixel_range
            )
            metadata = _export_metadata(job, export.description, export.classes, source)
        except ValueError as exc:
            raise ExportError(f"cannot export {source}: {exc}") from exc
        metadata["training"].update(
            output=export.output,
            head=export.how,
            saved_model={"signature": export.signature, **({"version": number} if number else {})},
        )
        converted.append((number, export, metadata))
    written = []
    for number, export, metadata in converted:
        tflite = export.tflite

        def write_files(directory: Path, content: bytes = tflite) -> None:
            (directory / "model.tflite").write_bytes(content)

        version, path = write_version(job.repository, job.name, write_files, metadata, number)
        written.append(Written(job.name, version, path, metadata))
    return written
