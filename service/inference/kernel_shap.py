"""Sampled Shapley values (KernelSHAP) of a table model's class probabilities, for tables
too wide to enumerate every coalition (``service.inference.explain``).

The game is ``explain.py``'s: a coalition S of the n players is valued by each class's
probability averaged over the weighted background, ``f(S) = sum_b w_b p(z_{S,b})``. The
Shapley values are the solution of a weighted least squares problem over the coalitions
(Lundberg and Lee 2017)::

    minimise  sum_S k(S) (f(S) - f({}) - sum_{i in S} phi_i)^2
    such that sum_i phi_i = f(N) - f({})

with the Shapley kernel ``k(S) = (n - 1) / (C(n, |S|) |S| (n - |S|))``. KernelSHAP solves
it over a budget of coalitions (``samples``), as the ``shap`` package's
``KernelExplainer`` does:

- **Enumerated**: whole coalition sizes, from the outside in (sizes 1 and n - 1, then 2
  and n - 2, ...), as long as the budget covers a size at least as densely as the kernel
  would sample it; each coalition gets its exact kernel weight.
- **Sampled**: the rest of the budget, drawn from the kernel's distribution over the
  sizes left, each drawn coalition paired with its complement (antithetic: the pair's
  errors largely cancel), the pairs weighted equally to the kernel mass left.
- **Additivity by construction**: the constraint eliminates the last player
  (``phi_n = f(N) - f({}) - sum_{i<n} phi_i``), so the values add up to ``f(x) - E f(b)``
  to float64 rounding whatever the sample.
- **Deterministic**: the sample is drawn from a generator seeded by the instance itself
  (``seed``: a hash of its row), so the same request gets the same answer.
- **Standard errors**: the delta method over the independent pairs (the regression's
  sandwich estimate, ``A^-1 Cov(pairs) A^-1``), for each value; zero when the budget
  enumerates every coalition, and the values are then exactly Shapley's.

One model call per instance scores all the coalitions' rows (``coalition_rows``).
"""

from __future__ import annotations

import hashlib
import math
from collections.abc import Callable
from dataclasses import dataclass
from functools import lru_cache
from itertools import combinations

import numpy as np
import numpy.typing as npt

from service.inference.explain import Attributions, Background, Players, coalition_rows

#: The method, as answers name it.
METHOD = "kernel shap"
#: The fewest players the regression is defined for.
MIN_PLAYERS = 2

Float64 = npt.NDArray[np.float64]
Masks = npt.NDArray[np.bool_]


@dataclass(frozen=True)
class Plan:
    """The coalitions of one instance's regression: the empty and the full coalition,
    then the enumerated, then the sampled ones in pairs (a coalition, its complement)."""

    masks: Masks
    """(2 + m, n) row 0 the empty coalition, row 1 the full one, then the m regressed."""
    weights: Float64
    """(m,) each regressed coalition's kernel weight (summing to 1)."""
    enumerated: int
    """How many of the m are whole sizes enumerated; the rest are ``pairs`` sampled pairs."""

    @property
    def pairs(self) -> int:
        """The sampled pairs of coalitions (each drawn with its complement)."""
        return (len(self.weights) - self.enumerated) // 2


@dataclass(frozen=True)
class _Enumeration:
    masks: Masks
    weights: Float64
    sizes: npt.NDArray[np.intp]
    """The coalition sizes left to sample."""
    probabilities: Float64
    """The kernel's distribution over ``sizes``."""
    mass: float
    """The kernel mass of the sizes left."""


def _size_mass(n: int) -> Float64:
    """(n - 1,) the Shapley kernel's total mass on each coalition size 1 .. n - 1."""
    sizes = np.arange(1, n)
    mass: Float64 = (n - 1) / (sizes * (n - sizes))
    share: Float64 = mass / mass.sum()
    return share


def _subsets(n: int, size: int) -> Masks:
    """(C(n, size), n) every coalition of ``size`` players."""
    rows = np.zeros((math.comb(n, size), n), dtype=bool)
    for r, members in enumerate(combinations(range(n), size)):
        rows[r, list(members)] = True
    return rows


@lru_cache(maxsize=16)
def _enumeration(n: int, samples: int) -> _Enumeration:
    """The whole sizes the budget enumerates, outside in, as ``shap`` chooses them."""
    mass = _size_mass(n)
    left_budget, left_mass = samples, 1.0
    masks, weights = [np.zeros((0, n), dtype=bool)], [np.zeros(0)]
    done = set()
    for size in range(1, n // 2 + 1):
        pair = {size, n - size}
        count = sum(math.comb(n, s) for s in pair)
        share = sum(mass[s - 1] for s in pair)
        # Enumerate when the budget would draw each coalition of these sizes at least once.
        if count > left_budget or left_budget * share / left_mass < count * (1 - 1e-8):
            break
        for s in sorted(pair):
            masks.append(_subsets(n, s))
            weights.append(np.full(math.comb(n, s), mass[s - 1] / math.comb(n, s)))
        done |= pair
        left_budget -= count
        left_mass -= share
    sizes = np.array([s for s in range(1, n) if s not in done], dtype=np.intp)
    left = mass[sizes - 1] if len(sizes) else np.zeros(0)
    every = np.concatenate(masks)
    every.setflags(write=False)
    return _Enumeration(
        every,
        np.concatenate(weights),
        sizes,
        left / left.sum() if len(sizes) else left,
        float(left.sum()),
    )


def plan(players: int, samples: int, seed: int) -> Plan:
    """The coalitions of an instance's regression: ``samples`` besides the empty and the
    full one, whole sizes enumerated while the budget covers them, the rest drawn in
    complementary pairs from a generator seeded with ``seed``."""
    n = players
    if n < MIN_PLAYERS:
        raise ValueError(f"expected at least {MIN_PLAYERS} players, received {n}")
    if samples < 2:
        raise ValueError(f"expected a budget of at least 2 coalitions, received {samples}")
    fixed = _enumeration(n, samples)
    pairs = 0 if not len(fixed.sizes) else (samples - len(fixed.masks)) // 2
    rng = np.random.default_rng(seed)
    size = np.zeros(0, dtype=np.intp)
    if pairs:  # the sizes left, as the kernel weighs them
        size = fixed.sizes[rng.choice(len(fixed.sizes), size=pairs, p=fixed.probabilities)]
    # A uniform coalition of each size: the players whose random key ranks below it.
    rank = rng.random((pairs, n)).argsort(axis=1).argsort(axis=1)
    drawn = rank < size[:, None]
    sampled = np.empty((2 * pairs, n), dtype=bool)
    sampled[0::2], sampled[1::2] = drawn, ~drawn
    ends = np.array([np.zeros(n, dtype=bool), np.ones(n, dtype=bool)])
    masks = np.concatenate([ends, fixed.masks, sampled])
    each = fixed.mass / (2 * pairs) if pairs else 0.0
    weights = np.concatenate([fixed.weights, np.full(2 * pairs, each)])
    return Plan(masks, weights, len(fixed.masks))


def seed(row: npt.ArrayLike) -> int:
    """A sampling seed from an instance's own values: the same row, the same sample."""
    data = np.ascontiguousarray(np.asarray(row)).tobytes()
    return int.from_bytes(hashlib.blake2b(data, digest_size=8).digest(), "little")


def kernel_shap(probabilities: npt.ArrayLike, background: Background, chosen: Plan) -> Attributions:
    """The KernelSHAP values from the model's (C * B, K) probabilities of the plan's C
    coalitions' rows (``coalition_rows``), with each value's standard error."""
    p = np.asarray(probabilities, dtype=np.float64)
    points = len(background.weights)
    f = np.einsum("cbk,b->ck", p.reshape(len(chosen.masks), points, -1), background.weights)
    empty, full, values = f[0], f[1], f[2:]
    total = full - empty
    masks = chosen.masks[2:].astype(np.float64)
    # Eliminate the last player: phi_last = total - sum(phi_rest).
    z = masks[:, :-1] - masks[:, -1:]  # (m, n - 1)
    y = (values - empty) - masks[:, -1:] * total  # (m, K)
    w = chosen.weights
    a_inv: Float64 = np.linalg.pinv(z.T @ (w[:, None] * z), hermitian=True).astype(np.float64)
    rest = a_inv @ (z.T @ (w[:, None] * y))  # (n - 1, K)
    phi = np.vstack([rest, total - rest.sum(axis=0)])
    return Attributions(phi, empty, full, _standard_errors(z, y - z @ rest, a_inv, chosen))


def _standard_errors(z: Float64, residuals: Float64, a_inv: Float64, chosen: Plan) -> Float64:
    """(n, K) the delta method's standard error of each value: the sampled pairs are
    independent, each moving the solution by ``A^-1 w (z_a r_a + z_b r_b)``."""
    pairs = chosen.pairs
    n = z.shape[1] + 1
    if pairs < 2:
        return np.zeros((n, residuals.shape[1]))
    start = chosen.enumerated
    weight = chosen.weights[start]
    p = z[start:] @ a_inv  # (2 * pairs, n - 1): each sampled row's influence direction
    p = np.hstack([p, -p.sum(axis=1, keepdims=True)])  # the last player's, by elimination
    r = residuals[start:]
    pa, pb, ra, rb = p[0::2], p[1::2], r[0::2], r[1::2]
    # Per pair u, player i, class k: h = weight (pa_ui ra_uk + pb_ui rb_uk); its spread
    # over the pairs, from sums of products (no (pairs, n, K) array).
    total = weight * (pa.T @ ra + pb.T @ rb)
    squares = weight**2 * ((pa**2).T @ ra**2 + 2 * (pa * pb).T @ (ra * rb) + (pb**2).T @ rb**2)
    variance = np.maximum(squares - total**2 / pairs, 0) / (pairs - 1)
    errors: Float64 = np.sqrt(pairs * variance)
    return errors


def estimate(
    model: Callable[[Float64], npt.ArrayLike],
    x: npt.ArrayLike,
    background: Background,
    players: Players | None = None,
    samples: int = 2048,
) -> list[Attributions]:
    """Each row of ``x`` (N, d) explained by KernelSHAP with a budget of ``samples``
    coalitions: ``model`` maps (rows, d) inputs to (rows, K) outputs, called once per
    instance on all its coalitions' rows; each row's sample seeded by the row itself."""
    rows = np.atleast_2d(np.asarray(x, dtype=np.float64))
    if players is None:
        players = Players.features([str(j) for j in range(rows.shape[1])])
    outputs = []
    for row in rows:
        chosen = plan(len(players), samples, seed(row))
        z = coalition_rows(row, background, players, chosen.masks)
        scored = np.asarray(model(z), np.float64)
        outputs.append(kernel_shap(scored.reshape(len(scored), -1), background, chosen))
    return outputs
