"""The checks an input passes before any runtime sees it, and its conversion to the model's dtype.

Vectorized: a 10,000-row batch is converted and checked by numpy in one go, and the
element-by-element search for *which* value is wrong only runs once we know one is; a
few rows of plain numbers are checked in Python, which is cheaper than numpy's calls
at that size. ``InvalidInput`` says what was expected and what was received, and where.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np
import numpy.typing as npt

from service.errors import InvalidInput, PayloadTooLarge
from service.inference.runtime import Features

FLOAT32_MAX = float(np.finfo(np.float32).max)

#: What callers may pass as instances: rows of numbers, or an array (binary protocols).
Instances = Sequence[Sequence[float]] | npt.NDArray[Any]
#: Checked instances, in float64: a few rows as given, or a matrix (``features``).
Inputs = Sequence[Sequence[float]] | npt.NDArray[np.floating[Any]]


def _where(index: Sequence[int]) -> str:
    """``instances[i][j]...`` for an index into a batch."""
    return "instances" + "".join(f"[{int(k)}]" for k in index)


def _wrong_shape(instances: Instances, shape: Sequence[int]) -> InvalidInput:
    """Name the first instance whose shape is wrong (only called once we know one is)."""
    expected = list(shape)
    if isinstance(instances, np.ndarray):
        return InvalidInput(
            f"expected instances of shape [rows, {', '.join(map(str, shape))}], received "
            f"shape {list(instances.shape)}"
        )
    if len(instances) == 0:
        return InvalidInput("expected at least one instance, received none")
    if len(shape) == 1:
        for i, row in enumerate(instances):
            if not isinstance(row, Sequence) or len(row) != shape[0]:
                width = len(row) if isinstance(row, Sequence) else type(row).__name__
                return InvalidInput(
                    f"expected {shape[0]} features per instance, received {width} in instances[{i}]"
                )
    for i, instance in enumerate(instances):
        try:
            received = list(np.shape(np.asarray(instance, dtype=np.float64)))
        except (ValueError, TypeError):
            return InvalidInput(
                f"expected instances of shape {expected}, received a ragged array or "
                f"something other than numbers in instances[{i}]"
            )
        if received != expected:
            return InvalidInput(
                f"expected instances of shape {expected}, received shape {received} in "
                f"instances[{i}]"
            )
    return InvalidInput(f"expected instances of shape {expected}, received something else")


#: Up to this many values, list input is checked in Python: cheaper than numpy's calls.
_SMALL_INPUT = 64


def _plain_rows(instances: Instances, input_dim: int) -> bool:
    """True when every row is ``input_dim`` numbers within float32 range (checked in Python)."""
    try:
        for row in instances:
            if not isinstance(row, Sequence) or len(row) != input_dim:
                return False
            for value in row:
                if not -FLOAT32_MAX <= value <= FLOAT32_MAX:  # False for NaN too
                    return False
    except TypeError:  # not numbers: the general path says what
        return False
    return True


def features(
    instances: Instances, shape: Sequence[int], max_steps: int = 0
) -> tuple[Inputs, Features]:
    """``instances`` checked (``InvalidInput`` saying why not), and the model's float32 input.

    ``shape`` is one instance's shape; ``-1`` first: any number of steps, at most
    ``max_steps`` (``steps``). The first value is what the scores compute about the
    input itself (the out-of-distribution distance), in float64: the rows as given when
    they are a few plain rows of numbers, else a float64 array of the instances' values
    flattened, one row each.
    """
    if shape[0] == -1:
        return steps(instances, shape, max_steps)
    if len(shape) != 1:
        return _tensors(instances, shape)
    input_dim = shape[0]
    if 0 < len(instances) * input_dim <= _SMALL_INPUT:
        if isinstance(instances, np.ndarray):
            rows: Sequence[Sequence[float]] = instances.tolist()
            if _plain_rows(rows, input_dim):
                return rows, instances.astype(np.float32)
        elif _plain_rows(instances, input_dim):
            return instances, np.array(instances, dtype=np.float32)
    try:
        x = np.array(instances, dtype=np.float64)
    except (ValueError, TypeError):  # ragged rows, or not numbers at all
        raise _wrong_shape(instances, shape) from None
    if x.ndim != 2 or x.shape[1] != input_dim or x.shape[0] == 0:
        raise _wrong_shape(instances, shape)
    _check_range(x)
    return x, x.astype(np.float32)


def _tensors(instances: Instances, shape: Sequence[int]) -> tuple[Inputs, Features]:
    """``features`` for instances of more than one axis (images, sequences)."""
    try:
        x = np.asarray(instances, dtype=np.float64)
    except (ValueError, TypeError):  # ragged, or not numbers at all
        raise _wrong_shape(instances, shape) from None
    if x.shape[1:] != tuple(shape) or x.shape[0] == 0:
        raise _wrong_shape(instances, shape)
    _check_range(x)
    return x.reshape(len(x), -1), np.ascontiguousarray(x, dtype=np.float32)


def steps(instances: Instances, shape: Sequence[int], max_steps: int) -> tuple[Inputs, Features]:
    """``features`` for instances of any number of steps (``shape`` starts with -1), each
    at its own length from 1 to ``max_steps``.

    They come back as one-dimensional object arrays of per-instance arrays, whatever
    their lengths: the runtime runs such a model one instance at a time, and the
    batcher joins such arrays as it joins any other.
    """
    rest = tuple(shape[1:])
    expected = f"[steps{''.join(f', {d}' for d in rest)}] with 1 <= steps <= {max_steps}"
    if isinstance(instances, np.ndarray) and instances.dtype != object:  # binary tensors
        x = instances.astype(np.float64)
        if x.ndim != 1 + len(shape) or x.shape[2:] != rest or 0 in x.shape[:2]:
            raise InvalidInput(
                f"expected instances of shape [rows, {expected[1:]}, received {list(x.shape)}"
            )
        rows: list[npt.NDArray[np.float64]] = list(x)
    else:
        if len(instances) == 0:
            raise InvalidInput("expected at least one instance, received none")
        rows = []
        for i, instance in enumerate(instances):
            try:
                row = np.asarray(instance, dtype=np.float64)
            except (ValueError, TypeError):  # ragged inside, or not numbers at all
                raise InvalidInput(
                    f"expected each instance of shape {expected}, received a ragged array or "
                    f"something other than numbers in instances[{i}]"
                ) from None
            if row.ndim != len(shape) or row.shape[1:] != rest or len(row) == 0:
                raise InvalidInput(
                    f"expected each instance of shape {expected}, received shape "
                    f"{list(row.shape)} in instances[{i}]"
                )
            rows.append(row)
    for i, row in enumerate(rows):
        if len(row) > max_steps:
            raise PayloadTooLarge(
                f"expected at most {max_steps} steps per instance (SERVICE_MAX_STEPS), "
                f"received {len(row)} in instances[{i}]"
            )
        if not np.abs(row).max() <= FLOAT32_MAX:
            index = (i, *np.argwhere(~(np.abs(row) <= FLOAT32_MAX))[0])
            raise InvalidInput(
                f"expected finite values within the model's float32 range "
                f"(|x| <= {FLOAT32_MAX:.4g}), received {float(row[index[1:]])!r} in "
                f"{_where(index)}"
            )
    exact, ragged = np.empty(len(rows), dtype=object), np.empty(len(rows), dtype=object)
    for i, row in enumerate(rows):  # one by one: rows of one length must not become 2-D
        exact[i] = row  # float64, as given: whole_numbers checks ids beyond float32's 2**24
        ragged[i] = np.ascontiguousarray(row, dtype=np.float32)
    return exact, ragged


def _check_range(x: npt.NDArray[np.float64]) -> None:
    """Refuse values a float32 input cannot hold (and NaN, which binary tensors can carry)."""
    if not np.abs(x).max() <= FLOAT32_MAX:
        index = np.argwhere(~(np.abs(x) <= FLOAT32_MAX))[0]
        value = float(x[tuple(index)])
        raise InvalidInput(
            f"expected finite values within the model's float32 range "
            f"(|x| <= {FLOAT32_MAX:.4g}), received {value!r} in {_where(index)}"
        )


def whole_numbers(
    x: Inputs, shape: Sequence[int], dtype: str, id_range: tuple[int, int] | None, what: str
) -> Features:
    """Checked features (``features``) as the model's integer input.

    Token ids and integer inputs must be whole numbers within what the model accepts
    (its embedding's rows, or the dtype's range): an index outside an embedding makes
    the runtime fail, and a fraction would be silently truncated. ``InvalidInput``
    names the first value that is not.
    """
    if isinstance(x, np.ndarray) and x.dtype == object:  # instances of any length (steps)
        ragged = np.empty(len(x), dtype=object)
        for i, row in enumerate(x):
            try:
                ragged[i] = whole_numbers(row[None], shape, dtype, id_range, what)[0]
            except InvalidInput as exc:  # name the instance, not row 0 of a batch of one
                raise InvalidInput(str(exc).replace("instances[0]", f"instances[{i}]", 1)) from None
        return ragged
    values = np.asarray(x, dtype=np.float64)
    if shape[0] != -1:
        values = values.reshape(-1, *shape)
    fractional = values != np.floor(values)
    if fractional.any():
        index = np.argwhere(fractional)[0]
        raise InvalidInput(
            f"expected whole numbers as {what}, received {float(values[tuple(index)])!r} "
            f"in {_where(index)}"
        )
    if id_range is not None:
        low, high = id_range
        scope = f"(the model's embedding has {high + 1} rows)"
    else:
        info = np.iinfo(np.dtype(dtype))
        low, high, scope = int(info.min), int(info.max), f"(the range of {dtype})"
    outside = (values < low) | (values > high)
    if outside.any():
        index = np.argwhere(outside)[0]
        raise InvalidInput(
            f"expected {what} from {low} to {high} {scope}, received "
            f"{float(values[tuple(index)]):.15g} in {_where(index)}"
        )
    return np.ascontiguousarray(values.astype(dtype))
