"""Occlusion of a text's tokens, of token ids or of a sequence's steps: leave one out.

A token's (a step's) attribution to class k is how much the class's probability falls
when it is left out::

    drop_i = p_k(x) - p_k(x without token i)

positive where the token speaks for the class, negative where it speaks against it. What
"without" means depends on what the model takes:

- raw text (``left_out_texts``): the string with token i removed, the other tokens joined
  back as the model's own layer cuts them (``service.inference.text.TokenSplit``), so the
  variant is a string the model's preprocessing turns into its input like any other;
- token ids and float steps (``hidden_steps``): step i set to the baseline (0: the
  padding id, which a masking ``Embedding`` skips, so that for such a model it is the
  same as removing the token; zeros for float steps). A step already at the baseline
  (padding) has nothing to hide: its attribution is 0 and it is not scored.

The instance and its variants are scored in one batch (row 0 the instance itself), so an
explanation is one model call of at most ``tokens + 1`` rows.

Numpy in, numpy out: whatever scores the rows is the caller's.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass

import numpy as np
import numpy.typing as npt

#: The method, as answers name it.
METHOD = "occlusion"
#: What is occluded, as answers state it.
TOKENS = "leave one token out"
STEPS = "leave one step out"

Float64 = npt.NDArray[np.float64]


@dataclass(frozen=True)
class StepAttributions:
    """One instance's leave-one-out attributions, for every class."""

    prediction: Float64
    """(K,) the instance's probabilities."""
    values: Float64
    """(n, K) each token's (step's) drop: p(x) - p(x without it)."""
    model_rows: int
    """Rows the model scored: the instance and the variants (steps at the baseline skipped)."""


def left_out_texts(tokens: Sequence[str], join: Callable[[Sequence[str]], str]) -> list[str]:
    """The n strings of ``tokens`` with token i left out, each the others joined by ``join``
    (a ``TokenSplit.join``)."""
    return [join([*tokens[:i], *tokens[i + 1 :]]) for i in range(len(tokens))]


def hidden_steps(
    x: npt.ArrayLike, baseline: float, dtype: npt.DTypeLike
) -> tuple[npt.NDArray[np.generic], npt.NDArray[np.intp]]:
    """(1 + h, steps, ...) the sequence ``x`` (steps, ...), then each of its h steps not
    already wholly at ``baseline`` set to it, in ``dtype``; and the positions of those steps."""
    row = np.asarray(x, dtype=dtype)
    flat = row.reshape(len(row), -1)
    positions = np.flatnonzero(np.any(flat != np.asarray(baseline, dtype=dtype), axis=1))
    rows = np.empty((1 + len(positions), *row.shape), dtype=dtype)
    rows[:] = row
    rows[1 + np.arange(len(positions)), positions] = baseline
    return rows, positions


def drops(
    probabilities: npt.ArrayLike, steps: int, positions: npt.ArrayLike | None = None
) -> StepAttributions:
    """The attributions from the model's (1 + h, K) probabilities of the instance and its
    variants: variant j left out the step ``positions[j]`` (default: step j, every one);
    the other steps' drops are 0."""
    p = np.asarray(probabilities, dtype=np.float64)
    where = np.arange(steps) if positions is None else np.asarray(positions, dtype=np.intp)
    values = np.zeros((steps, p.shape[1]), dtype=np.float64)
    values[where] = p[0][None, :] - p[1:]
    return StepAttributions(p[0], values, len(p))
