"""Exact Shapley values of a table model's class probabilities.

The players are the table's inputs, grouped (``Players``): one per feature, or one per
named column, a categorical column's one-hot inputs together, since a user asks what
``island`` did, not what its third one-hot input did. The value of a coalition S of
players for a row x is each class's probability averaged over a weighted background
(``Background``)::

    f(S) = sum_b w_b p(z_{S,b}),   z_{S,b} = x on the inputs of S, b on the others

(the interventional value: ``shap``'s ``Independent`` masker), and player i's Shapley
value is::

    phi_i = sum over S not holding i of |S|! (n - |S| - 1)! / n! (f(S + i) - f(S)).

Every one of the 2^n coalitions is enumerated: the model scores the 2^n x B rows of one
instance in one batch (``masked_rows``), and the values are one matrix product in float64
(``shapley``): ``phi = M @ F``, ``M`` the (n, 2^n) signed Shapley weights of the
coalitions (``coalitions``), ``F`` the (2^n, classes) coalition values. They add up:
``sum_i phi_i = f(x) - sum_b w_b p(b)`` to rounding (``Attributions.additivity_error``).

Numpy in, numpy out: whatever scores the rows (the data plane, through the model's own
runtime and batcher; or any function, in tests) is the caller's.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from functools import lru_cache

import numpy as np
import numpy.typing as npt

from service.inference.tables import Column

#: The method, as answers name it.
METHOD = "exact shapley"
#: Above this many players, 2^n coalitions are too many to enumerate at all.
MAX_PLAYERS = 20

Float64 = npt.NDArray[np.float64]


@dataclass(frozen=True)
class Background:
    """What a feature is replaced with when it is left out of a coalition: B points in
    the model's input space, with weights summing to 1 (their expectation is the
    baseline the attributions are measured from)."""

    points: Float64
    """(B, d) the background points."""
    weights: Float64
    """(B,) their weights, non-negative, summing to 1."""
    description: str
    """Where the points come from, as the answer states it."""

    def __post_init__(self) -> None:
        points = np.atleast_2d(np.asarray(self.points, dtype=np.float64))
        weights = np.asarray(self.weights, dtype=np.float64).reshape(-1)
        if len(weights) != len(points) or not len(points):
            raise ValueError(
                f"expected one weight per background point, received {len(weights)} weights "
                f"for {len(points)} points"
            )
        if not np.all(np.isfinite(points)) or np.any(weights < 0) or not weights.sum() > 0:
            raise ValueError("expected finite background points and non-negative weights")
        object.__setattr__(self, "points", points)
        object.__setattr__(self, "weights", weights / weights.sum())

    @property
    def mean(self) -> Float64:
        """(d,) the weighted mean of the points."""
        mean: Float64 = self.weights @ self.points
        return mean


@dataclass(frozen=True)
class Players:
    """The players of the game: each a named group of the model's inputs."""

    names: list[str]
    """Each player's name: a feature, or a named column."""
    members: npt.NDArray[np.bool_]
    """(n, d) True where input j belongs to player i; each input to exactly one player."""

    def __post_init__(self) -> None:
        if self.members.shape != (len(self.names), self.members.shape[1]) or not np.all(
            self.members.sum(axis=0) == 1
        ):
            raise ValueError("expected each input to belong to exactly one player")

    def __len__(self) -> int:
        return len(self.names)

    @classmethod
    def features(cls, names: Sequence[str]) -> Players:
        """One player per input."""
        return cls(list(names), np.eye(len(names), dtype=bool))

    @classmethod
    def columns(cls, columns: Sequence[Column]) -> Players:
        """One player per named column; a categorical column's one-hot inputs (its
        vocabulary and the out-of-vocabulary input, ``service.inference.tables``) together."""
        widths = [1 if c.vocabulary is None else len(c.vocabulary) + 1 for c in columns]
        starts = np.cumsum([0, *widths])
        members = np.zeros((len(columns), int(starts[-1])), dtype=bool)
        for i, (start, width) in enumerate(zip(starts, widths, strict=False)):
            members[i, start : start + width] = True
        return cls([c.name for c in columns], members)


@dataclass(frozen=True)
class Coalitions:
    """Every coalition of n players, and the weights turning their values into Shapley values."""

    masks: npt.NDArray[np.bool_]
    """(2^n, n) coalition c holds player i when bit i of c is set: row 0 is the empty
    coalition, the last row all players."""
    matrix: Float64
    """(n, 2^n) ``phi = matrix @ f``: for c holding i, ``(|c|-1)! (n-|c|)! / n!``; for c
    not holding i, ``-|c|! (n-|c|-1)! / n!``."""


@lru_cache(maxsize=8)
def coalitions(players: int) -> Coalitions:
    """All ``2**players`` coalitions and their Shapley weight matrix (cached)."""
    if not 1 <= players <= MAX_PLAYERS:
        raise ValueError(f"expected 1 to {MAX_PLAYERS} players, received {players}")
    n = players
    codes = np.arange(2**n)
    masks = (codes[:, None] >> np.arange(n)) & 1 == 1
    size = masks.sum(axis=1)
    # w[s] = s! (n - s - 1)! / n!: the weight of a coalition of s players without i.
    w = np.array([math.factorial(s) * math.factorial(n - s - 1) for s in range(n)], dtype=float)
    w /= math.factorial(n)
    with_i = w[np.maximum(size - 1, 0)]
    without_i = w[np.minimum(size, n - 1)]
    matrix = np.where(masks.T, with_i[None, :], -without_i[None, :])
    masks.setflags(write=False)
    matrix.setflags(write=False)
    return Coalitions(masks, matrix)


def masked_rows(
    x: npt.ArrayLike, background: Background, players: Players, every: Coalitions
) -> Float64:
    """(2^n * B, d) the rows whose probabilities value the coalitions of one instance
    ``x`` (d,): row ``c * B + b`` is ``x`` on the inputs of coalition c, background point
    b on the others."""
    return coalition_rows(x, background, players, every.masks)


def coalition_rows(
    x: npt.ArrayLike, background: Background, players: Players, masks: npt.NDArray[np.bool_]
) -> Float64:
    """(C * B, d) the rows whose probabilities value the C coalitions ``masks`` (C, n) of
    one instance ``x`` (d,): row ``c * B + b`` is ``x`` on the inputs of coalition c,
    background point b on the others."""
    row = np.asarray(x, dtype=np.float64).reshape(-1)
    kept = masks @ players.members  # (C, d): the inputs coalition c takes from x
    z = np.where(kept[:, None, :], row[None, None, :], background.points[None, :, :])
    return z.reshape(-1, len(row))


@dataclass(frozen=True)
class Attributions:
    """One instance's Shapley values, for every class."""

    values: Float64
    """(n, K) player i's attribution to class k's probability."""
    expected: Float64
    """(K,) ``sum_b w_b p(b)``: the value of the empty coalition (the baseline's)."""
    prediction: Float64
    """(K,) ``f(x)``: the value of the full coalition, the instance's probabilities."""
    standard_errors: Float64 | None = None
    """(n, K) for sampled values (``service.inference.kernel_shap``), each value's sampling
    standard error; None for exact values."""

    @property
    def additivity_error(self) -> Float64:
        """(K,) ``|sum_i phi_i - (f(x) - E f(b))|``: zero up to float64 rounding."""
        error: Float64 = np.abs(self.values.sum(axis=0) - (self.prediction - self.expected))
        return error


def shapley(
    probabilities: npt.ArrayLike, background: Background, every: Coalitions
) -> Attributions:
    """The Shapley values from the model's (2^n * B, K) probabilities of ``masked_rows``."""
    p = np.asarray(probabilities, dtype=np.float64)
    points = len(background.weights)
    f = np.einsum("cbk,b->ck", p.reshape(len(every.masks), points, -1), background.weights)
    return Attributions(every.matrix @ f, f[0], f[-1])


def exact(
    model: Callable[[Float64], npt.ArrayLike],
    x: npt.ArrayLike,
    background: Background,
    players: Players | None = None,
) -> list[Attributions]:
    """Each row of ``x`` (N, d) explained: ``model`` maps (rows, d) inputs to (rows, K)
    outputs (probabilities, or any function: the values are exact for it), called once
    per instance on all its coalitions."""
    rows = np.atleast_2d(np.asarray(x, dtype=np.float64))
    if players is None:
        players = Players.features([str(j) for j in range(rows.shape[1])])
    every = coalitions(len(players))
    outputs = []
    for row in rows:
        scored = np.asarray(model(masked_rows(row, background, players, every)), np.float64)
        outputs.append(shapley(scored.reshape(len(scored), -1), background, every))
    return outputs
