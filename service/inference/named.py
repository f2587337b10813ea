"""Instances of a model of several named inputs, checked and joined into one batch.

An instance names each input: ``{"age": 41, "income": 52000, "city": "Lyon"}`` (a
number for an input of shape ``[1]``, else a nested array of its shape; a string for
a string input, which its lookup turns into what ``model.tflite`` takes). Columns
(TF Serving's ``inputs`` dict, V2's named tensors) name each input once for the whole
batch. Each input is checked as a model's one input would be
(``service.inference.inputs``), and the batch is a numpy structured array, one field
per input, which the runtime feeds by name. ``InvalidInput`` names the input.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Protocol

import numpy as np
import numpy.typing as npt

from service.errors import InvalidInput
from service.inference.inputs import features, whole_numbers
from service.inference.runtime import Features
from service.inference.text import Vectorizer


class NamedInput(Protocol):
    """What batching reads of one of a model's named inputs (the artifact's
    ``NamedInput`` is one)."""

    @property
    def name(self) -> str:
        """The input's name, as instances name it."""

    @property
    def shape(self) -> list[int]:
        """One instance's shape, without the batch."""

    @property
    def dtype(self) -> str:
        """The input tensor's dtype."""

    @property
    def kind(self) -> str:
        """What the input is (``table``, ``image``, ``token_ids``, ``text``, ...)."""

    @property
    def id_range(self) -> tuple[int, int] | None:
        """The ids a token-id input accepts."""

    @property
    def integral(self) -> bool:
        """True when every value must be a whole number."""


@dataclass(frozen=True)
class NamedColumns:
    """A batch as one column per input name: a list of values, or an array ``[N, *shape]``."""

    columns: Mapping[str, Sequence[Any] | npt.NDArray[Any]]
    where: str = "inputs"

    def __len__(self) -> int:
        return len(next(iter(self.columns.values()))) if self.columns else 0


def _check_names(given: Sequence[str], inputs: Sequence[NamedInput], where: str) -> None:
    names = [spec.name for spec in inputs]
    unknown = [name for name in given if name not in names]
    if unknown:
        raise InvalidInput(
            f"expected only the model's inputs {names}, received unknown input "
            f"{unknown[0][:64]!r} in {where}"
        )
    missing = [name for name in names if name not in given]
    if missing:
        raise InvalidInput(
            f"expected every input of the model {names}, received none for input "
            f"{missing[0]!r} in {where}"
        )


def from_rows(rows: Sequence[Mapping[str, Any]], inputs: Sequence[NamedInput]) -> NamedColumns:
    """Objects naming each input, as columns (every object checked for its names)."""
    if not rows:
        raise InvalidInput("expected at least one instance, received none")
    for i, row in enumerate(rows):
        _check_names(list(row), inputs, f"instances[{i}]")
    return NamedColumns({spec.name: [row[spec.name] for row in rows] for spec in inputs})


def _strings(name: str, values: Sequence[Any] | npt.NDArray[Any]) -> list[str]:
    strings = []
    for i, value in enumerate(values):
        if isinstance(value, list | tuple) and len(value) == 1:
            value = value[0]  # [["Lyon"]]: Keras's (1,) string input, as sent by its users
        if isinstance(value, bytes):
            value = value.decode("utf-8", errors="strict")
        if not isinstance(value, str):
            raise InvalidInput(
                f"expected a string for input {name!r}, received {type(value).__name__} "
                f"in instances[{i}]"
            )
        strings.append(value)
    return strings


def _numbers(
    spec: NamedInput, values: Sequence[Any] | npt.NDArray[Any], max_steps: int
) -> npt.NDArray[Any]:
    """One input's values, checked as a model's one input would be, in its dtype."""
    if not isinstance(values, np.ndarray) and spec.shape == [1]:
        values = [
            [v] if isinstance(v, int | float) and not isinstance(v, bool) else v for v in values
        ]
    if isinstance(values, np.ndarray) and spec.shape == [1] and values.ndim == 1:
        values = values[:, None]  # a V2 tensor [N] for an input of shape [1]
    x, x32 = features(values, spec.shape, max_steps)
    if spec.integral:
        what = "token ids" if spec.kind == "token_ids" else f"{spec.dtype} inputs"
        x32 = whole_numbers(x, spec.shape, spec.dtype, spec.id_range, what)
    return np.asarray(x32, dtype=spec.dtype).reshape(len(x32), *spec.shape)


def batch(
    columns: NamedColumns,
    inputs: Sequence[NamedInput],
    lookups: Mapping[str, Vectorizer],
    max_steps: int,
) -> Features:
    """The structured batch ``model.tflite`` takes, one field per input."""
    _check_names(list(columns.columns), inputs, columns.where)
    rows = {len(values) for values in columns.columns.values()}
    if len(rows) != 1 or 0 in rows:
        raise InvalidInput(
            f"expected every input with the same number of instances (at least one), received "
            f"{ {name: len(v) for name, v in columns.columns.items()} }"
        )
    (n,) = rows
    out = np.empty(n, dtype=np.dtype([(s.name, s.dtype, tuple(s.shape)) for s in inputs]))
    for spec in inputs:
        values = columns.columns[spec.name]
        try:
            if spec.kind == "text":
                encoded = lookups[spec.name](_strings(spec.name, values))
                field = np.asarray(encoded).astype(spec.dtype).reshape(n, *spec.shape)
            else:
                field = _numbers(spec, values, max_steps)
        except InvalidInput as exc:
            message = str(exc)
            if f"{spec.name!r}" not in message:
                message = f"input {spec.name!r}: {message}"
            raise InvalidInput(message) from None
        out[spec.name] = field
    return out
