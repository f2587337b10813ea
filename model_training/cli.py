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
import datetime as dt
import platform
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from model_training import __version__, tensorflow_logs
from model_training.calibration import calibrate
from model_training.data import (
    BLOB_TEST_SIZE,
    DataError,
    Dataset,
    Split,
    default_test_size,
    default_validation_split,
    load_csv,
    make_blobs,
    split,
)
from model_training.ood import fit_reference, flagged
from model_training.repository import (
    REPORT_DIR,
    RepositoryError,
    check_name,
    file_hashes,
    versions,
    write_version,
)

if TYPE_CHECKING:
    from model_training.report import ReportData

DEFAULT_NAME = "blobs"


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
    parser.add_argument("--name", default=DEFAULT_NAME, help="model name (default: %(default)s)")
    parser.add_argument("--seed", type=int, default=42, help="random seed (default: %(default)s)")
    parser.add_argument("--epochs", type=_positive_int, default=30, help="(default: %(default)s)")
    parser.add_argument(
        "--batch-size", type=_positive_int, default=5, help="(default: %(default)s)"
    )
    parser.add_argument(
        "--learning-rate", type=_positive_float, default=1e-3, help="Adam's (default: %(default)s)"
    )
    parser.add_argument(
        "--validation-split",
        type=_fraction,
        help="share of the training data (its last part) held out for the validation curves "
        "and to fit the calibration temperature; 0: no calibration (default: 0.2, raised to "
        "hold at least one sample per class)",
    )
    parser.add_argument(
        "--samples", type=_positive_int, default=1000, help="blob samples (default: %(default)s)"
    )
    parser.add_argument(
        "--test-size",
        type=_positive_float,
        help="held-out samples: a count, or a fraction when below 1 (default: "
        f"{BLOB_TEST_SIZE} of the blobs; 20%% of a CSV's rows, at least one per class)",
    )
    parser.add_argument("--data", type=Path, help="train on this CSV instead of the blobs")
    parser.add_argument("--label-column", help="the CSV's label column (default: the last column)")
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
    parser.add_argument("model", type=Path, help="the .keras file")
    parser.add_argument("--name", required=True, help="model name in the repository")
    parser.add_argument(
        "--feature-names", type=_names, help="comma-separated (default x1, x2, ...)"
    )
    parser.add_argument("--class-names", type=_names, help="comma-separated (default 0, 1, ...)")
    _common(parser)
    return parser


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
) -> tuple[int, Path]:
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

    return write_version(repository, name, write_files, metadata)


def _train(args: argparse.Namespace) -> int:
    check_name(args.name)
    if args.if_missing and (existing := versions(args.model_repository, args.name)):
        print(
            f"{args.name} already has version {existing[-1]} in {args.model_repository}; "
            "nothing to do (--if-missing)"
        )
        return 0
    dataset: Dataset = (
        load_csv(args.data, args.label_column)
        if args.data
        else make_blobs(args.samples, seed=args.seed)
    )
    test_size = args.test_size
    if test_size is None:
        test_size = (
            default_test_size(len(dataset.y), dataset.num_classes) if args.data else BLOB_TEST_SIZE
        )
    parts = split(dataset, test_size, args.seed)
    validation_split = args.validation_split
    if validation_split is None:
        validation_split = default_validation_split(len(parts.y_train), dataset.num_classes)

    tensorflow_logs.import_tensorflow()
    from model_training.model import TrainConfig, logits, probe_inputs, train

    config = TrainConfig(
        seed=args.seed,
        epochs=args.epochs,
        batch_size=args.batch_size,
        learning_rate=args.learning_rate,
        validation_split=validation_split,
        verbose=0 if args.quiet else "auto",
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
    training_data = _training_data(parts, dataset.class_names)
    metadata = {
        "created_at": _now(),
        "input_dim": int(dataset.x.shape[1]),
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
        "training_data": training_data,
        "libraries": _libraries(),
    }
    report = None
    if not args.no_report:
        from model_training.report import ReportData

        report = ReportData(
            name=args.name,
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
    version, path = _write(
        args.model_repository, args.name, result.model, probe_inputs(dataset.x), metadata, report
    )
    print(f"test loss {result.test_loss:.4f}  test accuracy {result.test_accuracy:.4f}")
    _print_summary(calibration, training_data["ood"])
    print(f"wrote {args.name} version {version} to {path}")
    if report is not None:
        print(f"report: {path / REPORT_DIR / 'report.md'}")
    return 0


def _training_data(parts: Split, class_names: Sequence[str]) -> dict[str, Any]:
    """Statistics of the training part and the OOD detector, checked on the test split."""
    training_data = fit_reference(parts.x_train, parts.y_train, list(class_names))
    detector = training_data["ood"]
    detector["test_flagged"] = float(flagged(parts.x_test, detector).mean())
    return training_data


def _print_summary(calibration: dict[str, Any] | None, detector: dict[str, Any]) -> None:
    if calibration is None:
        print("calibration: none (no validation split)")
    else:
        test = calibration["test"]
        note = "  (at the search bound: see the report)" if calibration["at_bound"] else ""
        print(
            f"calibration: temperature {calibration['temperature']:.4g}  "
            f"test NLL {test['nll_before']:.4f} -> {test['nll_after']:.4f}  "
            f"test ECE {test['ece_before']:.4f} -> {test['ece_after']:.4f}{note}"
        )
    print(
        f"out-of-distribution threshold: distance {detector['threshold']:.4g} "
        f"(flags {detector['train_flagged']:.2%} of training, "
        f"{detector['test_flagged']:.2%} of test samples)"
    )


def _export(args: argparse.Namespace) -> int:
    check_name(args.name)
    tensorflow_logs.import_tensorflow()
    from model_training.export import ExportError, load_keras, logits_model
    from model_training.inputs import describe_input, probe

    model = load_keras(args.model)
    description = describe_input(model)
    input_dim = int(model.inputs[0].shape[-1])
    num_classes = int(logits_model(model).output.shape[-1])
    features = args.feature_names or [f"x{i + 1}" for i in range(input_dim)]
    classes = args.class_names or [str(i) for i in range(num_classes)]
    if len(features) != input_dim:
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
        "training": {"exported_from": str(args.model)},
        "libraries": _libraries(),
    }
    version, path = _write(args.model_repository, args.name, model, probe(description), metadata)
    print(f"wrote {args.name} version {version} to {path}")
    return 0


def main(argv: Sequence[str] | None = None) -> int:
    """Run the command line; returns the process exit status."""
    argv = list(sys.argv[1:] if argv is None else argv)
    exporting = bool(argv) and argv[0] == "export"
    parser = export_parser() if exporting else train_parser()
    args = parser.parse_args(argv[1:] if exporting else argv)  # exits 2 on bad arguments
    tensorflow_logs.configure(verbose=args.verbose)
    try:
        return _export(args) if exporting else _train(args)
    except (DataError, RepositoryError, OSError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    except ValueError as exc:  # ExportError and Keras's own refusals of a model
        print(f"error: {exc}", file=sys.stderr)
        return 1
