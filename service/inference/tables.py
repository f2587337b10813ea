"""Table instances given as objects of named features, encoded into the model's input row.

``{"island": "Biscoe", "bill_length_mm": 39.1, "sex": null}`` becomes the row the model
was trained on, column by column as the version's metadata records them (``Column`` says
what is read of each; the repository hands over the artifact's): a numeric value as it
is (``null``: the recorded fill), a category one-hot over the training vocabulary, with a
last input for values never seen in training (served, and reported back as ``unseen``).
Standardization and everything else the model computes is inside the model: nothing
here re-implements training's arithmetic.

A category is matched as follows (the vocabulary holds the CSV cells' text):

- a string matches the vocabulary entry with exactly that text (``"2"`` is not ``"2.0"``,
  ``"2134"`` is not ``"02134"``); no entry: unseen;
- a JSON number is taken only by a column whose vocabulary holds at least one decimal
  number's text (``NUMBER``: ``2``, ``02134``, ``2.0``, ``-1.5e3``), as a column forced
  categorical with ``--categorical`` (zip codes, integer-coded categories) does. It
  matches the entries that are that number's text, compared as numbers: ``2`` matches
  ``"2"`` or ``"2.0"``, ``2134`` matches ``"02134"``. One entry: that category; none:
  unseen (reported as ``"7"``, ``"2.5"``); several (training saw both ``"1"`` and
  ``"1.0"``): a 422 asking for the string. A number for a column of words only
  (``"island": 3``) is a 422, as a mistake; so is a boolean anywhere (the request schema
  refuses it).
"""

from __future__ import annotations

import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Literal, Protocol

import numpy as np
import numpy.typing as npt

from service.errors import InvalidInput

#: A value of a named feature, as JSON gives it.
Value = float | str | None
#: A vocabulary entry that a JSON number may match: a decimal number's text.
NUMBER = re.compile(r"[+-]?(?:\d+\.?\d*|\.\d+)(?:[eE][+-]?\d+)?")


@dataclass(frozen=True)
class NamedRows:
    """Instances as objects of named features."""

    rows: Sequence[Mapping[str, Value]]

    def __len__(self) -> int:
        return len(self.rows)


class Column(Protocol):
    """What encoding reads of one column of a table model (the artifact's ``Column`` is one)."""

    @property
    def name(self) -> str:
        """The feature's name, as instances name it."""

    @property
    def kind(self) -> Literal["numeric", "categorical"]:
        """How its values are encoded."""

    @property
    def fill(self) -> float | str | None:
        """What a missing value (``null``) is filled with; ``None``: it may not be missing."""

    @property
    def vocabulary(self) -> Sequence[str] | None:
        """A categorical column's categories, in one-hot order."""


@dataclass(frozen=True)
class EncodedRows:
    """The model's input rows, and per row the categories it had never seen in training."""

    x: npt.NDArray[np.float64]
    unseen: list[dict[str, str]]


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
        if not isinstance(value, int | float) or isinstance(value, bool):
            raise InvalidInput(
                f"expected a number or null for numeric feature {column.name!r}, received "
                f"{type(value).__name__} in instances[{i}]"
            )
        out[i] = value
    return out


def _numbers(vocabulary: Sequence[str]) -> dict[float, list[int]]:
    """The positions of the entries that are a decimal number's text, by that number."""
    positions: dict[float, list[int]] = {}
    for k, word in enumerate(vocabulary):
        if NUMBER.fullmatch(word):
            positions.setdefault(float(word), []).append(k)
    return positions


def _number_text(value: float) -> str:
    """How an unseen number is reported: ``7``, not ``7.0``; ``2.5``; ``1e+300``."""
    return str(int(value)) if value.is_integer() and abs(value) < 2**53 else repr(value)


def _position_of_number(
    value: float, column: Column, numbers: dict[float, list[int]], i: int
) -> int | None:
    """The one vocabulary entry the number ``value`` is the text of (``None``: unseen)."""
    vocabulary = column.vocabulary or []
    if not numbers:
        raise InvalidInput(
            f"expected a string or null for categorical feature {column.name!r} (one of "
            f"{vocabulary[:5]}{'...' if len(vocabulary) > 5 else ''}), received {value!r} "
            f"in instances[{i}]"
        )
    matches = numbers.get(value, [])
    if len(matches) > 1:
        raise InvalidInput(
            f"expected a number that is one category's text, or a string, for categorical "
            f"feature {column.name!r}, received {_number_text(value)}, which is the text of "
            f"{[vocabulary[k] for k in matches]}, in instances[{i}]; send the one meant as a "
            "string"
        )
    return matches[0] if matches else None


def _one_hot(
    rows: Sequence[Mapping[str, Value]], column: Column, unseen: list[dict[str, str]]
) -> npt.NDArray[np.float64]:
    vocabulary = column.vocabulary or []
    index = {word: k for k, word in enumerate(vocabulary)}
    numbers: dict[float, list[int]] | None = None  # built for the first number only
    out = np.zeros((len(rows), len(vocabulary) + 1))
    for i, row in enumerate(rows):
        value = row[column.name]
        if value is None:
            value = str(column.fill)
        if isinstance(value, str):
            k = index.get(value)
        elif isinstance(value, int | float) and not isinstance(value, bool):
            numbers = _numbers(vocabulary) if numbers is None else numbers
            value = float(value)
            k = _position_of_number(value, column, numbers, i)
        else:  # the request schemas let no other JSON value through
            raise InvalidInput(
                f"expected a string, a number or null for categorical feature "
                f"{column.name!r}, received {value!r} in instances[{i}]"
            )
        if k is None:
            k = len(vocabulary)
            unseen[i][column.name] = value if isinstance(value, str) else _number_text(value)
        out[i, k] = 1.0
    return out


def encode(named: NamedRows, columns: Sequence[Column]) -> EncodedRows:
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
