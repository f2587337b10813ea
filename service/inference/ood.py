"""Out-of-distribution signal: how far an input is from the training data.

Mirrors ``model_training.ood`` (the trainer computes the reference; the two packages
share only the metadata): the class-conditional Mahalanobis distance

    d(x) = min_k sqrt((x - m_k)^T P (x - m_k))

to the nearest class mean ``m_k`` under the shared within-class precision ``P``, with
``ood = d(x) > threshold`` (the 99.9th percentile of ``d`` over the training samples).
``distance`` computes it as ``x^T P x - 2 x^T P m_k + m_k^T P m_k``, so that a batch of
n rows costs O(n D^2 + n K D) with no n x K x D intermediate; small models use the
whitened form ``|W x - W m_k|`` with ``W^T W = P`` instead (``service.inference.scores``).
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
import numpy.typing as npt

Float64Array = npt.NDArray[np.float64]


@dataclass(frozen=True)
class OODDetector:
    """The reference of one model version, with the per-class terms precomputed."""

    means: Float64Array  # (K, D)
    precision: Float64Array  # (D, D)
    threshold: float
    whitening: Float64Array = field(init=False, repr=False)  # W with W^T W = P, (D, D)
    whitened_means: Float64Array = field(init=False, repr=False)  # W m_k, (K, D)
    _mp2: Float64Array = field(init=False, repr=False)
    _mpm: Float64Array = field(init=False, repr=False)

    def __post_init__(self) -> None:
        k, d = self.means.shape
        if self.precision.shape != (d, d):
            raise ValueError(
                f"expected a {d}x{d} precision matrix for {k} class means of {d} features, "
                f"received shape {self.precision.shape}"
            )
        # Per-class constants, computed once: P m_k (P is symmetric) and m_k^T P m_k.
        mp = np.einsum("kd,de->ke", self.means, self.precision)
        object.__setattr__(self, "_mp2", 2.0 * mp)
        object.__setattr__(self, "_mpm", np.einsum("ke,ke->k", mp, self.means))
        # P = V diag(l) V^T, so W = diag(sqrt(l)) V^T: then d_k(x)^2 = |W x - W m_k|^2, a sum
        # of squares (service.inference.scores computes it so for small models).
        eigenvalues, vectors = np.linalg.eigh(self.precision)
        whitening = np.sqrt(np.clip(eigenvalues, 0.0, None))[:, None] * vectors.T
        object.__setattr__(self, "whitening", np.ascontiguousarray(whitening))
        object.__setattr__(self, "whitened_means", self.means @ whitening.T)

    def distance(self, x: npt.ArrayLike) -> Float64Array:
        """``d(x)`` for each row of ``x`` (n, D), in float64."""
        rows = np.asarray(x, dtype=np.float64)
        # einsum, not BLAS matmul: a row's result must not depend on the batch it came in
        # (BLAS blocks differently for different batch sizes and rounds differently).
        xp = np.einsum("nd,de->ne", rows, self.precision)  # two operands: no path search
        xpx = np.einsum("ne,ne->n", xp, rows)
        squared = xpx[:, None] - np.einsum("nd,kd->nk", rows, self._mp2) + self._mpm

        return np.asarray(np.sqrt(np.maximum(squared.min(axis=1), 0.0)))

    def flags(self, distances: Float64Array) -> npt.NDArray[np.bool_]:
        """True where the input is unlike the training data."""
        return np.asarray(distances > self.threshold)
