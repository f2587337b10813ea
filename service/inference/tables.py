"""Table instances given as objects of named features, encoded into the model's input row.

``{"island": "Biscoe", "bill_length_mm": 39.1, "sex": null}`` becomes the row the model
was trained on, column by column as the version's metadata records
(``service.repository.artifact.Column``): a numeric value as it is (``null``: the
recorded fill), a category one-hot over the training vocabulary, with a last input for
values never seen in training (served, and reported back as ``unseen``). A table without
recorded columns (trained before they existed, or exported) takes its ``feature_names``
as numeric columns with no fill. Standardization and everything else the model computes
is inside the model: nothing here re-implements training's arithmetic.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass

import numpy as np
import numpy.typing as npt

from service.errors import InvalidInput
from service.repository.artifact import Column, InputSpec

#: A value of a named feature, as JSON gives it.
Value = float | str | None


@dataclass(frozen=True)
class NamedRows:
    """Instances as objects of named features."""

    rows: Sequence[Mapping[str, Value]]

    def __len__(self) -> int:
        return len(self.rows)


@dataclass(frozen=True)
class EncodedRows:
    """The model's input rows, and per row the categories it had never seen in training."""

    x: npt.NDArray[np.float64]
    unseen: list[dict[str, str]]


def columns_of(spec: InputSpec, feature_names: Sequence[str]) -> list[Column] | None:
    """The columns a named instance is encoded by (``None``: the model takes no names)."""
    if spec.columns is not None:
        return spec.columns
    if spec.kind != "table" or len(feature_names) != spec.size:
        return None
    return [Column(name=name) for name in feature_names]


def _check_names(rows: Sequence[Mapping[str, Value]], names: list[str]) -> None:
    known = set(names)
    for i, row in enumerate(rows):
        if row.keys() == known:
            continue
        unknown = sorted(set(row) - known)
        if unknown:
            raise InvalidInput(
                f"expected only the model's features {names}, received unknown feature "
                f"{unknown[0]!r} in instances[{i}]"
            )
        missing = [name for name in names if name not in row]
        raise InvalidInput(
            f"expected a value (or null) for every feature of the model, received no "
            f"{missing[0]!r} in instances[{i}]"
        )


def _numeric(rows: Sequence[Mapping[str, Value]], column: Column) -> npt.NDArray[np.float64]:
    values = [row[column.name] for row in rows]
    out = np.empty(len(values))
    for i, value in enumerate(values):
        if value is None:
            if column.fill is None:
                raise InvalidInput(
                    f"expected a number for feature {column.name!r} (this version records no "
                    f"value for missing ones), received null in instances[{i}]"
                )
            value = column.fill
        if isinstance(value, str):
            raise InvalidInput(
                f"expected a number or null for numeric feature {column.name!r}, received "
                f"{value[:40]!r} in instances[{i}]"
            )
        out[i] = value
    return out


def _one_hot(
    rows: Sequence[Mapping[str, Value]], column: Column, unseen: list[dict[str, str]]
) -> npt.NDArray[np.float64]:
    vocabulary = column.vocabulary or []
    index = {word: k for k, word in enumerate(vocabulary)}
    out = np.zeros((len(rows), len(vocabulary) + 1))
    for i, row in enumerate(rows):
        value = row[column.name]
        if value is None:
            value = str(column.fill)
        if not isinstance(value, str):
            raise InvalidInput(
                f"expected a string or null for categorical feature {column.name!r} (one of "
                f"{vocabulary[:5]}{'...' if len(vocabulary) > 5 else ''}), received {value!r} "
                f"in instances[{i}]"
            )
        k = index.get(value)
        if k is None:
            k = len(vocabulary)
            unseen[i][column.name] = value
        out[i, k] = 1.0
    return out


def encode(named: NamedRows, columns: list[Column]) -> EncodedRows:
    """The model's input rows for named instances (``InvalidInput`` saying what is wrong)."""
    rows = named.rows
    _check_names(rows, [column.name for column in columns])
    unseen: list[dict[str, str]] = [{} for _ in rows]
    parts = [
        _numeric(rows, column)[:, None]
        if column.kind == "numeric"
        else _one_hot(rows, column, unseen)
        for column in columns
    ]
    return EncodedRows(np.hstack(parts), unseen)
