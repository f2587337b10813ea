"""A user's CSV table: numeric and categorical columns, missing values, and the model's input row.

A CSV is read as text first (``read_table``); what a column becomes is decided from its
values, and how it is encoded is fitted on the training rows only (``fit_columns``),
so the held-out test rows never shape the model's input:

- a column whose values are all numbers (once missing values are set aside) is
  **numeric**: one input, its value, or ``fill`` (the training rows' mean) when missing;
- any other column is **categorical**: ``len(vocabulary) + 1`` one-hot inputs over the
  values seen in the training rows (sorted), the last one for a value never seen there
  (out of vocabulary); a missing value is ``fill``, the training rows' most frequent value;
- a column named in ``categorical`` (``--categorical``: zip codes, integer-coded
  categories) is categorical whatever its values look like. A category is the cell's
  text, as for any categorical column: ``"1"`` and ``"1.0"`` (or ``"02134"`` and
  ``"2134"``) are two categories, so a zip code keeps its leading zero.

The encoding is exactly the one the service applies to a named instance (``Column`` in
``model_training/artifact.py``, ``service/inference/tables.py``); what the model
computes from there (standardization) is inside the model.

A cell is missing when, stripped of spaces, it is one of ``MISSING``: pandas'
``read_csv`` defaults, so a table written by pandas (``NaN`` as an empty field) or by R
(``NA``) reads as its author meant. Nothing here imports TensorFlow.
"""

from __future__ import annotations

import csv
import math
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import numpy.typing as npt

from model_training.artifact import Column
from model_training.data import DataError

#: Cells that mean "no value" (after stripping spaces): pandas' ``read_csv`` defaults.
MISSING = frozenset(
    {
        "",
        "NA",
        "N/A",
        "n/a",
        "NaN",
        "nan",
        "-NaN",
        "-nan",
        "NULL",
        "null",
        "None",
        "<NA>",
        "#N/A",
        "#N/A N/A",
        "#NA",
        "-1.#IND",
        "1.#IND",
        "-1.#QNAN",
        "1.#QNAN",
    }
)
#: A categorical column may have at most this many values in the training rows.
MAX_VOCABULARY = 1000
#: A column with at least this many distinct numbers whose other values are few
#: (``TYPO_SHARE`` of its cells at most) is numeric with typos, not categorical.
TYPO_NUMBERS = 10
TYPO_SHARE = 0.05
#: The feature name of a categorical column's out-of-vocabulary input.
OTHER = "<other>"


@dataclass(frozen=True)
class RawColumn:
    """One feature column as read: its name and, per row, its text (``None``: missing)."""

    name: str
    cells: tuple[str | None, ...]
    numbers: npt.NDArray[np.float64] | None
    """The values as numbers (``nan`` where missing) for a numeric column, else ``None``."""

    @property
    def kind(self) -> str:
        """``numeric`` or ``categorical``."""
        return "categorical" if self.numbers is None else "numeric"


@dataclass(frozen=True)
class Table:
    """A CSV's feature columns (in file order), its labels, and where it came from."""

    path: Path
    columns: tuple[RawColumn, ...]
    y: npt.NDArray[np.int64]
    class_names: tuple[str, ...]
    label_column: str
    forced_categorical: tuple[str, ...] = ()
    """The columns read as categorical because the job said so (``--categorical``), in file
    order."""

    def source(self) -> dict[str, Any]:
        """The metadata's ``training.data``: the file, its label column, the columns forced to
        be categorical, rows, missing cells."""
        return {
            "kind": "csv",
            "path": str(self.path),
            "label_column": self.label_column,
            "forced_categorical": list(self.forced_categorical),
            "rows": len(self.y),
            "missing_values": {
                column.name: sum(cell is None for cell in column.cells)
                for column in self.columns
                if any(cell is None for cell in column.cells)
            },
            "missing_markers": sorted(MISSING),
        }


def _label_sort_key(label: str) -> tuple[int, float, str]:
    """Numeric labels sort as numbers ("2" before "10"), the rest as text after them."""
    try:
        return (0, float(label), label)
    except ValueError:
        return (1, 0.0, label)


def _number(cell: str) -> float | None:
    try:
        return float(cell)
    except ValueError:
        return None


def _raw_column(
    path: Path, name: str, cells: list[str | None], categorical: bool = False
) -> RawColumn:
    """The column, numeric when every value is a number (unless ``categorical``);
    ``DataError`` for a numeric column with a typo or an infinite value, and for a column
    with no values at all."""
    present = [(line, cell) for line, cell in enumerate(cells, start=2) if cell is not None]
    if not present:
        raise DataError(
            f"expected values in column {name!r} of {path}, received only missing ones; "
            "remove the column"
        )
    if categorical:
        return RawColumn(name, tuple(cells), None)
    numbers = {line: _number(cell) for line, cell in present}
    words = [(line, cell) for line, cell in present if numbers[line] is None]
    distinct_numbers = {value for value in numbers.values() if value is not None}
    if words and (
        len(distinct_numbers) >= TYPO_NUMBERS and len(words) <= TYPO_SHARE * len(present)
    ):
        line, cell = words[0]
        raise DataError(
            f"{path}:{line}: expected a number in column {name!r} (its other values are "
            f"numbers), received {cell!r}; leave a missing value empty or write NA"
        )
    if words:
        return RawColumn(name, tuple(cells), None)
    for line, value in numbers.items():
        if value is not None and not math.isfinite(value):
            raise DataError(
                f"{path}:{line}: expected a finite number in column {name!r}, "
                f"received {cells[line - 2]!r}"
            )
    values = np.array(
        [math.nan if cell is None else float(cell) for cell in cells], dtype=np.float64
    )
    return RawColumn(name, tuple(cells), values)


def _check_categorical(
    path: Path, header: list[str], label_name: str, categorical: Sequence[str]
) -> None:
    """``DataError`` unless every column forced to be categorical is a feature column."""
    features = [name for name in header if name != label_name]
    for name in categorical:
        if name == label_name:
            raise DataError(
                f"expected --categorical to name feature columns of {path}, received the "
                f"label column {name!r} (its values are the classes already)"
            )
        if name not in header:
            raise DataError(
                f"expected --categorical to name feature columns of {path} ({features}), "
                f"received {name!r}"
            )


def read_table(
    path: Path, label_column: str | None = None, categorical: Sequence[str] = ()
) -> Table:
    """Read a CSV: a header row, feature columns and one label column (default: the last).

    The columns named in ``categorical`` are categorical whatever their values (the
    module's docstring). Raises ``DataError`` with the file, line and column of the first
    problem.
    """
    try:
        with path.open(newline="", encoding="utf-8") as handle:
            rows = list(csv.reader(handle))
    except (OSError, UnicodeDecodeError, csv.Error) as exc:
        raise DataError(f"cannot read {path}: {exc}") from exc
    rows = [row for row in rows if any(cell.strip() for cell in row)]
    if not rows:
        raise DataError(f"expected a header row and data rows in {path}, received an empty file")
    header = [name.strip() for name in rows[0]]
    if len(header) < 2:
        raise DataError(
            f"expected at least one feature column and one label column in {path}, "
            f"received header {header}"
        )
    if len(set(header)) != len(header) or "" in header:
        raise DataError(
            f"expected unique, non-empty column names in {path}, received header {header}"
        )
    label_name = header[-1] if label_column is None else label_column
    if label_name not in header:
        raise DataError(
            f"expected a label column named {label_name!r} in {path}, received columns {header}"
        )
    _check_categorical(path, header, label_name, categorical)
    label_index = header.index(label_name)
    body = rows[1:]
    if not body:
        raise DataError(f"expected data rows after the header in {path}, received none")
    labels: list[str] = []
    for line_no, row in enumerate(body, start=2):
        if len(row) != len(header):
            raise DataError(f"{path}:{line_no}: expected {len(header)} fields, received {len(row)}")
        label = row[label_index].strip()
        if label in MISSING:
            raise DataError(
                f"{path}:{line_no}: expected a label in column {label_name!r}, received "
                f"{row[label_index]!r}; remove rows without a label"
            )
        labels.append(label)
    columns = []
    for i, name in enumerate(header):
        if i == label_index:
            continue
        cells = [row[i].strip() for row in body]
        values = [None if c in MISSING else c for c in cells]
        columns.append(_raw_column(path, name, values, categorical=name in categorical))
    class_names = tuple(sorted(set(labels), key=_label_sort_key))
    if len(class_names) < 2:
        raise DataError(
            f"expected at least two classes in column {label_name!r} of {path}, "
            f"received {list(class_names)}"
        )
    index = {name: k for k, name in enumerate(class_names)}
    return Table(
        path=path,
        columns=tuple(columns),
        y=np.asarray([index[label] for label in labels], dtype=np.int64),
        class_names=class_names,
        label_column=label_name,
        forced_categorical=tuple(name for name in header if name in categorical),
    )


def _fit_column(raw: RawColumn, rows: npt.NDArray[np.int64], path: Path) -> Column:
    """How ``raw`` is encoded, from its values in ``rows`` (the training rows) only."""
    if raw.numbers is not None:
        values = raw.numbers[rows]
        values = values[~np.isnan(values)]
        if not len(values):
            raise DataError(
                f"expected values of column {raw.name!r} in the training rows of {path}, "
                "received only missing ones; remove the column"
            )
        return Column(name=raw.name, kind="numeric", fill=float(values.mean()))
    counts = Counter(cell for cell in (raw.cells[i] for i in rows) if cell is not None)
    if not counts:
        raise DataError(
            f"expected values of column {raw.name!r} in the training rows of {path}, "
            "received only missing ones; remove the column"
        )
    vocabulary = sorted(counts)
    if len(vocabulary) > MAX_VOCABULARY:
        raise DataError(
            f"expected at most {MAX_VOCABULARY} values in categorical column {raw.name!r} "
            f"of {path}, received {len(vocabulary)} (an identifier or free text?); remove it"
        )
    if len(vocabulary) > 20 and len(vocabulary) == sum(counts.values()):
        raise DataError(
            f"expected repeated values in categorical column {raw.name!r} of {path}, "
            f"received a different one in every row (an identifier or free text?); remove it"
        )
    # The most frequent value; ties go to the first in vocabulary order.
    fill = max(vocabulary, key=lambda word: (counts[word], -vocabulary.index(word)))
    return Column(name=raw.name, kind="categorical", fill=fill, vocabulary=vocabulary)


def fit_columns(table: Table, rows: Sequence[int] | npt.NDArray[np.int64]) -> list[Column]:
    """Each column's encoding (fill, vocabulary) fitted on the training ``rows`` only."""
    index = np.asarray(rows, dtype=np.int64)
    return [_fit_column(raw, index, table.path) for raw in table.columns]


def encode(table: Table, columns: Sequence[Column]) -> npt.NDArray[np.float32]:
    """Every row of ``table`` as the model's input row, column by column (see the module)."""
    parts: list[npt.NDArray[np.float64]] = []
    for raw, column in zip(table.columns, columns, strict=True):
        if column.vocabulary is None:
            assert raw.numbers is not None  # fitted from this very column
            fill = float(column.fill) if isinstance(column.fill, int | float) else 0.0
            parts.append(np.where(np.isnan(raw.numbers), fill, raw.numbers)[:, None])
            continue
        position = {word: k for k, word in enumerate(column.vocabulary)}
        other = len(column.vocabulary)
        hot = [position.get(str(column.fill) if c is None else c, other) for c in raw.cells]
        one_hot = np.zeros((len(hot), other + 1))
        one_hot[np.arange(len(hot)), hot] = 1.0
        parts.append(one_hot)
    return np.hstack(parts).astype(np.float32)


def feature_names(columns: Sequence[Column]) -> list[str]:
    """One name per model input: a numeric column's name, ``name=value`` per category and
    ``name=<other>`` for a categorical column's out-of-vocabulary input."""
    names: list[str] = []
    for column in columns:
        if column.vocabulary is None:
            names.append(column.name)
        else:
            names += [f"{column.name}={word}" for word in column.vocabulary]
            names.append(f"{column.name}={OTHER}")
    return names


def one_hot_inputs(columns: Sequence[Column]) -> npt.NDArray[np.bool_]:
    """True for each model input that is part of a categorical column's one-hot block."""
    return np.concatenate(
        [np.full(column.width, column.vocabulary is not None) for column in columns]
    )
