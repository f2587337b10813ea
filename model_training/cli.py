"""Command line: ``python -m model_training`` trains; ``... export FILE --name N`` imports.

Training also fits the calibration temperature on the validation split, records the
training data's statistics for the out-of-distribution signal (both in the
metadata) and, unless ``--no-report``, writes a report into the version's
``report/`` folder.

Exit status: 0 done, 1 the data or model could not be used (one line on stderr,
nothing written), 2 bad arguments.
"""

from __future__ import annotations

import argparse
import math
import sys
import tempfile
from collections.abc import Sequence
from pathlib import Path
from typing import get_args

from model_training import tensorflow_logs
from model_training.artifact import InputSpec, is_model_name
from model_training.data import BLOB_TEST_SIZE, DataError
from model_training.pipeline import (
    CLASSIC_LEARNING_RATE,
    CSV_BATCH_SIZE,
    CSV_LEARNING_RATE,
    CSV_MAX_EPOCHS,
    DEFAULT_NAME,
    EXAMPLES,
    IMAGE_BATCH_SIZE,
    IMAGE_EPOCHS,
    TABLE_BATCH_SIZE,
    TABLE_EPOCHS,
    ExportJob,
    TrainingJob,
    Written,
    export_versions,
    train_version,
)
from model_training.prediction_log import LABEL, joined_table
from model_training.repository import RepositoryError, check_name, versions
from model_training.table_selection import ARCHITECTURES, FOLDS

#: The kinds of input a version can describe (``--kind``).
INPUT_KINDS: tuple[str, ...] = get_args(InputSpec.model_fields["kind"].annotation)
#: ``heads.OUTPUTS``, named here so that parsing arguments imports no Keras.
OUTPUTS = ("auto", "probabilities", "logits", "sigmoid")


def _positive_int(text: str) -> int:
    value = int(text)
    if value < 1:
        raise argparse.ArgumentTypeError(f"expected a positive integer, received {text}")
    return value


def _positive_float(text: str) -> float:
    value = float(text)
    if not value > 0 or value == float("inf"):
        raise argparse.ArgumentTypeError(f"expected a positive finite number, received {text}")
    return value


def _finite_float(text: str) -> float:
    value = float(text)
    if not math.isfinite(value):
        raise argparse.ArgumentTypeError(f"expected a finite number, received {text}")
    return value


def _fraction(text: str) -> float:
    value = float(text)
    if not 0 <= value < 1:
        raise argparse.ArgumentTypeError(f"expected a fraction in [0, 1), received {text}")
    return value


def _names(text: str) -> list[str]:
    return [part.strip() for part in text.split(",") if part.strip()]


def _common(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--model-repository",
        type=Path,
        default=Path("models"),
        help="repository directory to write the new version into (default: %(default)s)",
    )
    parser.add_argument("--quiet", action="store_true", help="no Keras progress output")
    parser.add_argument(
        "--verbose",
        action="store_true",
        help="let TensorFlow and LiteRT write their own log lines to stderr (hidden by default)",
    )


def train_parser() -> argparse.ArgumentParser:
    """Options of the default command: train a classifier and write a new version."""
    parser = argparse.ArgumentParser(
        prog="python -m model_training",
        description="Train a Keras softmax classifier (default: four 2-D Gaussian blobs) and "
        "write it as a new version into the model repository. "
        "'python -m model_training export --help' imports a model trained elsewhere.",
    )
    _common(parser)
    parser.add_argument(
        "--name",
        help=f"model name (default: {DEFAULT_NAME}; digits with --example digits; with --data, "
        "the CSV's file name without its extension, or the folder's name, when that is a valid "
        "model name, else table or images)",
    )
    parser.add_argument("--seed", type=int, default=42, help="random seed (default: %(default)s)")
    parser.add_argument(
        "--epochs",
        type=_positive_int,
        help=f"(default: {TABLE_EPOCHS} for the blobs, images {IMAGE_EPOCHS}; a CSV trains until "
        "its validation loss (its training loss with --validation-split 0) stops improving, at "
        f"most {CSV_MAX_EPOCHS} epochs or this many)",
    )
    parser.add_argument(
        "--batch-size",
        type=_positive_int,
        help=f"(default: {TABLE_BATCH_SIZE} for the blobs, {CSV_BATCH_SIZE} for a CSV, images "
        f"{IMAGE_BATCH_SIZE})",
    )
    parser.add_argument(
        "--learning-rate",
        type=_positive_float,
        help=f"Adam's (default: {CLASSIC_LEARNING_RATE:g}; {CSV_LEARNING_RATE:g} for a CSV)",
    )
    parser.add_argument(
        "--validation-split",
        type=_fraction,
        help="share of the training data (its last part) held out for the validation curves "
        "and to fit the calibration temperature; 0: no calibration, and a CSV's early "
        "stopping watches the training loss (default: 0.2, raised to hold at least one sample "
        "per class)",
    )
    parser.add_argument(
        "--samples", type=_positive_int, default=1000, help="blob samples (default: %(default)s)"
    )
    parser.add_argument(
        "--test-size",
        type=_positive_float,
        help="held-out samples: a count, or a fraction when below 1 (default: "
        f"{BLOB_TEST_SIZE} of the blobs; 20%% of a CSV's rows or of the images, at least one "
        "per class; images are held out class by class)",
    )
    parser.add_argument(
        "--example",
        choices=EXAMPLES,
        help="the example to train on without --data: blobs (four 2-D Gaussian blobs, the "
        "default) or digits (scikit-learn's 8x8 handwritten digits, as an image model)",
    )
    parser.add_argument(
        "--data",
        type=Path,
        help="train on this CSV, or on this folder holding one sub-folder of PNG/JPEG images "
        "per class (an image classifier)",
    )
    parser.add_argument(
        "--prediction-log",
        type=Path,
        metavar="DIR",
        help="train on the service's prediction log (SERVICE_PREDICTION_LOG_DIR): the "
        "requests --name's model answered that have labels reported through feedback",
    )
    parser.add_argument(
        "--image-size",
        nargs=2,
        type=_positive_int,
        metavar=("HEIGHT", "WIDTH"),
        help="resize a folder's images to this size (default: their own size when they all "
        "share one, else 32 32)",
    )
    parser.add_argument("--label-column", help="the CSV's label column (default: the last column)")
    parser.add_argument(
        "--text-column",
        help="the CSV's column of raw text: trains a text classifier that the service serves "
        "from strings (a folder of .txt files in one sub-folder per class does so too)",
    )
    parser.add_argument(
        "--categorical",
        action="extend",
        type=_names,
        metavar="COLUMN[,COLUMN...]",
        help="read these CSV columns as categorical even when their values are all numbers "
        "(zip codes, integer-coded categories): each distinct cell text is a category, so "
        "1 and 1.0 are two (repeatable, or comma-separated)",
    )
    parser.add_argument(
        "--architecture",
        choices=ARCHITECTURES,
        help="a CSV's model: network (a hidden layer of 64), linear (none: a softmax "
        f"regression), or auto (the default): the network when its {FOLDS}-fold "
        "cross-validated log loss on the training rows is lower than the linear model's by "
        "more than a standard error, else the linear model",
    )
    parser.add_argument(
        "--no-report",
        action="store_true",
        help="write no report/ (plots and report.md) into the version; calibration and the "
        "out-of-distribution statistics are still recorded in the metadata",
    )
    parser.add_argument(
        "--if-missing",
        action="store_true",
        help="do nothing if the model already has a version in the repository",
    )
    return parser


def export_parser() -> argparse.ArgumentParser:
    """Options of ``export``: bring a Keras classifier trained elsewhere into the repository."""
    parser = argparse.ArgumentParser(
        prog="python -m model_training export",
        description="Export a Keras softmax classifier (.keras) into the model repository as a "
        "new version: its LiteRT serving export, metadata and hashes.",
    )
    parser.add_argument(
        "model", type=Path, help="the .keras file, a legacy .h5 file, or a SavedModel directory"
    )
    parser.add_argument("--name", required=True, help="model name in the repository")
    parser.add_argument(
        "--feature-names", type=_names, help="comma-separated (default x1, x2, ...)"
    )
    parser.add_argument("--class-names", type=_names, help="comma-separated (default 0, 1, ...)")
    parser.add_argument(
        "--kind",
        choices=INPUT_KINDS,
        help="what the input is (default: read from the model: an Embedding first takes "
        "token_ids; (height, width, 1|3|4) floats an image; one dimension a table; more a "
        "sequence)",
    )
    parser.add_argument(
        "--pixel-range",
        nargs=2,
        type=_finite_float,
        metavar=("LOW", "HIGH"),
        help="an image model's input values for a black and a white pixel (default: 0 255 when "
        "the model's first layer rescales 0..255 itself, e.g. Rescaling(1/255), else 0 1)",
    )
    parser.add_argument(
        "--output",
        choices=OUTPUTS,
        default="auto",
        help="what the model outputs: probabilities (a softmax), logits (K >= 2, trained with "
        "from_logits=True), sigmoid (one binary probability, or with a linear last layer its "
        "logit); default auto: read from its last layers",
    )
    parser.add_argument(
        "--import",
        dest="imports",
        action="append",
        metavar="MODULE",
        default=[],
        help="import MODULE before loading (it registers the model's custom classes with "
        "@keras.saving.register_keras_serializable); repeatable",
    )
    parser.add_argument(
        "--signature",
        default="serving_default",
        help="a SavedModel's signature to serve, as TF Serving's signature_name "
        "(default serving_default)",
    )
    parser.add_argument(
        "--reference-data",
        type=Path,
        metavar="FILE.csv",
        help="rows like the model's training data (its feature columns, and optionally one "
        "column of class names), for the references live drift is measured against; "
        "without it an exported version is not monitored for drift",
    )
    _common(parser)
    return parser


def _print_summary(written: Written) -> None:
    metadata = written.metadata
    metrics = metadata["metrics"]
    print(f"test loss {metrics['test_loss']:.4f}  test accuracy {metrics['test_accuracy']:.4f}")
    baseline = metrics.get("baseline")
    if baseline is not None:
        what = "TF-IDF + " if metadata["input"]["kind"] == "text" else "standardized "
        print(
            f"baseline: {what}logistic regression, test accuracy "
            f"{baseline['test_accuracy']:.4f} on the same split"
        )
    selection = metadata["training"].get("model_selection")
    if selection is not None:
        scores = selection.get("scores")
        why = (
            f"{selection['folds']}-fold cross-validated NLL on the training rows: network "
            f"{scores['network']:.4f}, linear {scores['linear']:.4f}"
            if scores
            else selection["method"]
        )
        print(f"model: {selection['chosen']} ({why})")
    calibration = metadata["calibration"]
    if calibration is None:
        print("calibration: none (no validation split)")
    else:
        test = calibration["test"]
        verdict = (
            f"temperature {calibration['temperature']:.4g}"
            if calibration.get("kept", True)
            else f"temperature 1 (fitted {calibration['fitted_temperature']:.4g}, not kept: "
            f"{calibration['reason']})"
        )
        print(
            f"calibration: {verdict}  test NLL {test['nll_before']:.4f} -> "
            f"{test['nll_after']:.4f}  test ECE {test['ece_before']:.4f} -> {test['ece_after']:.4f}"
        )
    detector = metadata["training_data"]["ood"]
    if detector is None:
        print("out-of-distribution: none (no numeric column)")
        return
    space = " on the model's features" if detector.get("space") == "features" else ""
    space = " on the numeric columns" if "measured_on" in detector else space
    print(
        f"out-of-distribution threshold{space}: distance {detector['threshold']:.4g} "
        f"(flags {detector['train_flagged']:.2%} of training, "
        f"{detector['test_flagged']:.2%} of test samples)"
    )
    if "noise_flagged" in detector:
        noise = detector["noise"]
        print(
            f"out-of-distribution on the model's features: flags "
            f"{detector['noise_flagged']:.2%} of {noise['samples']} {noise['what']}"
        )


def _default_name(args: argparse.Namespace) -> str:
    """digits for the digits; a CSV's stem or an image folder's own name when it can name a
    served model (else table or images)."""
    if args.data is None:
        return "digits" if args.example == "digits" else DEFAULT_NAME
    if args.data.is_dir():
        return _own_name(args.data.resolve().name, "images")
    return _own_name(args.data.stem, "table")


def _own_name(name: str, fallback: str) -> str:
    """``name`` when it is a model name the service lists (a hidden one is a trainer's
    scratch directory), else ``fallback``."""
    return name if is_model_name(name) and not name.startswith(".") else fallback


def training_job(args: argparse.Namespace) -> TrainingJob:
    """The command line's training options as a job."""
    return TrainingJob(
        repository=args.model_repository,
        name=args.name or _default_name(args),
        data=args.data,
        example=args.example or "blobs",
        image_size=tuple(args.image_size) if args.image_size else None,
        label_column=args.label_column,
        text_column=args.text_column,
        categorical=tuple(args.categorical or ()),
        samples=args.samples,
        test_size=args.test_size,
        validation_split=args.validation_split,
        seed=args.seed,
        epochs=args.epochs,
        batch_size=args.batch_size,
        learning_rate=args.learning_rate,
        architecture=args.architecture or "auto",
        report=not args.no_report,
        keras_progress=not args.quiet,
    )


def _check_combination(parser: argparse.ArgumentParser, args: argparse.Namespace) -> None:
    """Options that only mean something with others: a usage error (exit 2) otherwise."""
    if args.example is not None and args.data is not None:
        parser.error("--example and --data exclude each other: train on one or the other")
    if args.prediction_log is not None and (args.data is not None or args.example is not None):
        parser.error("--prediction-log excludes --data and --example: train on one of them")
    if args.prediction_log is not None and args.text_column is not None:
        parser.error("--text-column does not apply to --prediction-log: the log says")
    if args.image_size is not None and (args.data is None or not args.data.is_dir()):
        parser.error("--image-size applies to --data DIR (a folder of images) only")
    if args.categorical is not None and (args.data is None or args.data.is_dir()):
        parser.error("--categorical applies to --data FILE.csv (a table) only")
    if args.architecture is not None and (args.data is None or args.data.is_dir()):
        parser.error("--architecture applies to --data FILE.csv (a table) only")
    if args.text_column is not None and (args.data is None or args.data.is_dir()):
        parser.error("--text-column applies to --data FILE.csv only")


def _train(args: argparse.Namespace) -> int:
    if args.prediction_log is not None:
        return _train_from_log(args)
    job = training_job(args)
    check_name(job.name)
    if args.if_missing and (existing := versions(job.repository, job.name)):
        print(
            f"{job.name} already has version {existing[-1]} in {job.repository}; "
            "nothing to do (--if-missing)"
        )
        return 0
    written = train_version(job)
    _print_summary(written)
    print(f"wrote {written.name} version {written.version} to {written.path}")
    if written.report is not None:
        print(f"report: {written.report}")
    return 0


def _train_from_log(args: argparse.Namespace) -> int:
    """Join the prediction log with its labels into a table, and train on it."""
    name = args.name or DEFAULT_NAME
    check_name(name)
    with tempfile.TemporaryDirectory(prefix="softmax-log-") as scratch:
        table = joined_table(args.prediction_log, name, Path(scratch) / f"{name}.csv")
        print(
            f"prediction log: {table.labelled} of {table.predictions} logged requests of "
            f"{name} have labels: {table.rows} rows ({table.form})"
        )
        args.data, args.name = table.path, name
        args.label_column, args.text_column = LABEL, table.text_column
        args.prediction_log = None
        return _train(args)


def _export(args: argparse.Namespace) -> int:
    job = ExportJob(
        model=args.model,
        name=args.name,
        repository=args.model_repository,
        feature_names=args.feature_names,
        class_names=args.class_names,
        kind=args.kind,
        pixel_range=tuple(args.pixel_range) if args.pixel_range else None,
        output=args.output,
        imports=tuple(args.imports),
        signature=args.signature,
        reference_data=args.reference_data,
    )
    for written in export_versions(job):
        training, described = written.metadata["training"], written.metadata["input"]
        print(f"head: {training['head']}")
        if "saved_model" in training and described["kind"] == "image":
            low, high = described["pixel_range"]
            print(
                f"pixel range: {low:g} {high:g} (a SavedModel does not show how it scales "
                "pixels: pass --pixel-range 0 255 if it takes 0..255)"
            )
        print(f"wrote {written.name} version {written.version} to {written.path}")
    return 0


def main(argv: Sequence[str] | None = None) -> int:
    """Run the command line; returns the process exit status."""
    argv = list(sys.argv[1:] if argv is None else argv)
    exporting = bool(argv) and argv[0] == "export"
    parser = export_parser() if exporting else train_parser()
    args = parser.parse_args(argv[1:] if exporting else argv)  # exits 2 on bad arguments
    if not exporting:
        _check_combination(parser, args)
    tensorflow_logs.configure(verbose=args.verbose)
    try:
        return _export(args) if exporting else _train(args)
    except (DataError, RepositoryError, OSError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    except ValueError as exc:  # ExportError and Keras's own refusals of a model
        print(f"error: {exc}", file=sys.stderr)
        return 1
