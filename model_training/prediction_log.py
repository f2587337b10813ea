"""Training data from the service's prediction log joined with the labels reported later.

The service's prediction log (``SERVICE_PREDICTION_LOG_DIR``, docs/operations.md) holds
``prediction`` lines (the inputs a request sent and what was answered) and ``feedback``
lines (the true labels a client reported for a request id). ``joined_table`` reads every
file of the log, rotated ones included, keeps the predictions of one model that have a
label (the last reported, when several were), and writes them as a CSV the trainer reads
like any other: the inputs' columns (the model's feature names for rows of numbers, the
named features for objects, ``text`` for strings) and a ``label`` column.
"""

from __future__ import annotations

import csv
import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from model_training.data import DataError

#: The label column of the written table.
LABEL = "label"
#: The text column of the written table, for models of raw text.
TEXT = "text"


@dataclass(frozen=True)
class JoinedTable:
    """What ``joined_table`` wrote."""

    path: Path
    form: str
    """``rows``, ``named`` or ``texts``: how the requests sent their inputs."""
    rows: int
    """Labelled rows written."""
    predictions: int
    """The model's logged prediction requests."""
    labelled: int
    """Of them, those with reported labels."""
    text_column: str | None


def _lines(directory: Path) -> list[dict[str, Any]]:
    files = sorted(directory.glob("predictions-*.jsonl*"))
    if not files:
        raise DataError(
            f"expected a prediction log (predictions-*.jsonl files, SERVICE_PREDICTION_LOG_DIR) "
            f"in {directory}, received none"
        )
    lines = []
    for path in files:
        for text in path.read_text(encoding="utf-8").splitlines():
            try:
                lines.append(json.loads(text))
            except json.JSONDecodeError:  # a line cut short (a full disk, a crash): skipped
                continue
    lines.sort(key=lambda line: str(line.get("time", "")))
    return lines


def joined_table(directory: Path, model: str, out: Path) -> JoinedTable:
    """Write ``model``'s labelled predictions in the log at ``directory`` to the CSV ``out``."""
    predictions: dict[str, dict[str, Any]] = {}
    labels: dict[str, list[str]] = {}
    for line in _lines(directory):
        if line.get("model") != model or not line.get("request_id"):
            continue
        if line.get("kind") == "prediction":
            predictions[line["request_id"]] = line
        elif line.get("kind") == "feedback":
            labels[line["request_id"]] = line["labels"]
    if not predictions:
        raise DataError(f"expected predictions of model {model!r} in the log {directory}")
    forms = {p["form"] for p in predictions.values()}
    if forms - {"rows", "named", "texts"}:
        raise DataError(
            f"expected requests that sent rows, objects or strings, received "
            f"{sorted(forms)}: the log keeps no image files (train on the images themselves)"
        )
    if len(forms) > 1:
        raise DataError(f"expected one form of inputs per model, received {sorted(forms)}")
    (form,) = forms
    header: list[str] = []
    table: list[dict[str, Any]] = []
    joined = 0
    for request_id, prediction in predictions.items():
        truth = labels.get(request_id)
        if truth is None or len(truth) != len(prediction["inputs"]):
            continue
        joined += 1
        for inputs, label in zip(prediction["inputs"], truth, strict=True):
            if form == "rows":
                header = header or list(prediction["features"])
                row = dict(zip(header, inputs, strict=True))
            elif form == "named":
                row = dict(inputs)
                header += [name for name in row if name not in header]
            else:
                header = [TEXT]
                row = {TEXT: inputs}
            table.append({**row, LABEL: label})
    if not table:
        raise DataError(
            f"expected labels reported (POST /models/{model}/feedback) for some of the "
            f"{len(predictions)} logged predictions of model {model!r}, received none"
        )
    if LABEL in header:
        raise DataError(f"expected no input named {LABEL!r}: it names the label column")
    with out.open("w", newline="", encoding="utf-8") as sink:
        writer = csv.DictWriter(sink, [*header, LABEL], restval="")
        writer.writeheader()
        for row in table:
            writer.writerow({k: "" if v is None else v for k, v in row.items()})
    return JoinedTable(
        out, form, len(table), len(predictions), joined, TEXT if form == "texts" else None
    )
