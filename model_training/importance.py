"""Global feature importance for the report: mean |Shapley value| over the test split.

For each test row x and each coalition S of the table's players (its features, or its
named columns, a categorical column's one-hot inputs together), the value of S is the
calibrated probability of the row's predicted class, averaged over the version's own
saved background (``model_training.explanation``: weighted k-means points ``b``)::

    f(S) = sum_b w_b p_k(x on S, b elsewhere)

and player i's attribution is its exact Shapley value over all 2^n coalitions, what the
service answers for that row (``service/inference/explain.py``, whose arithmetic this
repeats in a few lines: the trainer does not import the service). A player's global
importance is the mean of |phi_i| over the test rows explained.

Exact only: up to ``MAX_PLAYERS`` players; the rows explained are the first test rows,
as many as fit ``MAX_MODEL_ROWS`` model rows in all (every one for a small table).
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import numpy as np
import numpy.typing as npt

from model_training.artifact import Column

#: Most players explained exactly (2^12 coalitions x 10 points: 40,960 rows per test row).
MAX_PLAYERS = 12
#: Most model rows all the explained test rows cost together.
MAX_MODEL_ROWS = 2_000_000
#: Most model rows scored in one call.
CHUNK_ROWS = 200_000

Float64 = npt.NDArray[np.float64]


@dataclass(frozen=True)
class Importance:
    """Each player's mean |attribution| to the predicted class's probability."""

    players: list[str]
    mean_abs: Float64
    """(n,) mean over the rows of |phi_i|."""
    rows: int
    """Test rows explained."""
    test_rows: int
    """Test rows in all."""
    points: int
    """Background points each coalition is averaged over."""


def shapley_matrix(players: int) -> tuple[npt.NDArray[np.bool_], Float64]:
    """Every coalition of ``players`` (2^n, n) and the (n, 2^n) weights turning coalition
    values into Shapley values: ``phi = matrix @ f``."""
    n = players
    masks = (np.arange(2**n)[:, None] >> np.arange(n)) & 1 == 1
    size = masks.sum(axis=1)
    w = np.array([math.factorial(s) * math.factorial(n - s - 1) for s in range(n)], dtype=float)
    w /= math.factorial(n)
    matrix = np.where(masks.T, w[np.maximum(size - 1, 0)], -w[np.minimum(size, n - 1)])
    return masks, matrix


def shapley_values(
    probabilities: Callable[[Float64], Float64],
    rows: npt.ArrayLike,
    points: npt.ArrayLike,
    weights: npt.ArrayLike,
    members: npt.NDArray[np.bool_],
) -> tuple[Float64, Float64]:
    """(N, n, K) the exact Shapley values of each row's class probabilities (player i
    holds the inputs ``members[i]``; the left-out inputs take each background point's),
    and (N, K) the rows' probabilities (the full coalition's value)."""
    x = np.asarray(rows, dtype=np.float64)
    b = np.asarray(points, dtype=np.float64)
    w = np.asarray(weights, dtype=np.float64)
    w = w / w.sum()
    masks, matrix = shapley_matrix(len(members))
    kept = masks @ members  # (C, d) the inputs each coalition takes from the row
    per_row = len(masks) * len(b)
    chunk = max(1, CHUNK_ROWS // per_row)  # rows scored together: few calls, bounded memory
    values, full = [], []
    for start in range(0, len(x), chunk):
        part = x[start : start + chunk]
        z = np.where(kept[None, :, None, :], part[:, None, None, :], b[None, None, :, :])
        p = np.asarray(probabilities(z.reshape(-1, x.shape[1])), dtype=np.float64)
        f = np.einsum("ncbk,b->nck", p.reshape(len(part), len(masks), len(b), -1), w)
        values.append(np.einsum("ic,nck->nik", matrix, f))
        full.append(f[:, -1])
    return np.concatenate(values), np.concatenate(full)


def members_of(metadata: dict[str, Any]) -> tuple[list[str], npt.NDArray[np.bool_]]:
    """The players of a table's attributions: its named columns (a categorical column's
    vocabulary and out-of-vocabulary inputs together), else one per feature."""
    columns = (metadata.get("input") or {}).get("columns")
    if not columns:
        names = list(metadata["feature_names"])
        return names, np.eye(len(names), dtype=bool)
    widths = [Column.model_validate(column).width for column in columns]
    starts = np.cumsum([0, *widths])
    members = np.zeros((len(columns), int(starts[-1])), dtype=bool)
    for i, width in enumerate(widths):
        members[i, starts[i] : starts[i] + width] = True
    return [column["name"] for column in columns], members


def global_importance(
    metadata: dict[str, Any],
    probabilities: Callable[[Float64], Float64],
    x_test: npt.ArrayLike,
) -> Importance | None:
    """Mean |Shapley value| of each player for the predicted class over the first test
    rows; None when the version has no saved background or too many players."""
    saved = metadata.get("explanation")
    if not saved:
        return None
    names, members = members_of(metadata)
    if not 1 <= len(names) <= MAX_PLAYERS:
        return None
    x = np.asarray(x_test, dtype=np.float64)
    points = np.asarray(saved["points"], dtype=np.float64)
    per_row = 2 ** len(names) * len(points)
    chosen = x[: max(1, MAX_MODEL_ROWS // per_row)]
    values, predictions = shapley_values(probabilities, chosen, points, saved["weights"], members)
    predicted = predictions.argmax(axis=1)
    attributed = values[np.arange(len(chosen)), :, predicted]  # (N, n)
    return Importance(names, np.abs(attributed).mean(axis=0), len(chosen), len(x), len(points))
