"""What the service computes from a batch of logits: probabilities, class, entropy, OOD distance.

For each row, with ``z`` the logits, ``T`` the temperature and ``K`` classes::

    p_k = exp((z_k - max z) / T) / sum_j exp((z_j - max z) / T)      float64, stable
    argmax = the first k with the largest p_k
    entropy = -sum_k p_k log p_k   (0 log 0 = 0), in nats
    ood_distance = min_k |W x - W m_k|     (Mahalanobis, P = W^T W: see service.inference.ood)

Small models (at most ``SMALL_FEATURES`` inputs and ``SMALL_CLASSES`` classes: tabular
classifiers like the default one) have two implementations of one arithmetic:

- ``_vector``: numpy over columns, for any number of rows;
- ``_scalar``: Python floats, for a few rows, where numpy's fixed cost per call (a
  microsecond or two, dozens of calls) would be most of a one-row request.

Both perform the same IEEE-754 operations in the same order: sums over classes and
features from left to right, the same comparisons for max, min and argmax, the same
``exp`` and ``log`` (the C library's, which numpy calls too, unless numpy brings its
own vectorized ones for the CPU: then ``_scalar`` calls numpy's), and correctly rounded
``+ - * / sqrt`` everywhere else (CPython and numpy never fuse a multiply-add). So a
row gets bit-identical numbers whichever path, batch size or protocol served it;
``tests/test_scores.py`` checks the two against each other on random inputs and both
against a float64 reference. Larger models use numpy's reductions and einsum
(``_general``), with no scalar path.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any, NamedTuple, TypeVar

import numpy as np
import numpy.typing as npt

from service.inference.ood import OODDetector
from service.inference.softmax import softmax

Float64Array = npt.NDArray[np.float64]

#: Models up to this many input features and classes get the exact small-model paths.
SMALL_FEATURES = 8
SMALL_CLASSES = 32
#: Batches up to this many rows of a small model are scored in Python floats.
SCALAR_ROWS = 4
#: Rows per step of the vector OOD distance (its temporaries: rows x K x D floats).
DISTANCE_CHUNK = 4096


def _numpy_uses_libm() -> bool:
    """True when numpy's float64 ``exp`` and ``log`` are the C library's, as ``math``'s are.

    They are unless numpy has vectorized versions of its own for this CPU (AVX-512 ones
    today), which round differently now and then. Checked both ways: the CPU features
    numpy dispatches on, and the two agreeing bit for bit on a sweep of the arguments
    the scores use (exp of [-745, 0], log of (0, 1]).
    """
    try:
        from numpy._core._multiarray_umath import (  # type: ignore[import-not-found]
            __cpu_features__,
        )
    except ImportError:  # another numpy layout: assume the worst
        return False
    if any(__cpu_features__.get(name) for name in ("AVX512F", "AVX512_SKX")):
        return False
    sweep = np.concatenate([-np.geomspace(1e-300, 745.0, 4096), -np.linspace(0.0, 40.0, 4096)])
    probabilities = np.concatenate([np.geomspace(1e-300, 1.0, 4096), np.linspace(1e-9, 1.0, 4096)])
    exp_agrees: bool = np.exp(sweep).tolist() == [math.exp(v) for v in sweep.tolist()]
    log_agrees: bool = np.log(probabilities).tolist() == [
        math.log(v) for v in probabilities.tolist()
    ]
    return exp_agrees and log_agrees


if _numpy_uses_libm():

    def _exp(values: list[float]) -> list[float]:
        return [math.exp(v) for v in values]  # the same function numpy calls, no array

    def _log(values: list[float]) -> list[float]:
        return [math.log(v) for v in values]

else:

    def _exp(values: list[float]) -> list[float]:
        result: list[float] = np.exp(np.array(values)).tolist()  # numpy's own, like _vector
        return result

    def _log(values: list[float]) -> list[float]:
        result: list[float] = np.log(np.array(values)).tolist()
        return result


class NotFinite(ValueError):
    """Some logits are infinite or NaN (the inputs were too large for the model)."""

    def __init__(self, row: int) -> None:
        super().__init__(f"row {row} has logits that are not finite")
        self.row = row


class RowLists(NamedTuple):
    """Per-row results as Python lists (what a JSON row answer is made of)."""

    probabilities: list[list[float]]
    argmax: list[int]
    entropy: list[float]
    ood_distance: list[float] | None


class Scores:
    """Per-row results for a batch of ``n`` rows and ``K`` classes.

    Held as numpy arrays (``_vector``, ``_general``) or as Python lists (``_scalar``);
    the other form is made on first use, so a one-row answer never converts twice.
    """

    __slots__ = ("_arrays", "_lists")

    def __init__(
        self,
        arrays: tuple[Float64Array, npt.NDArray[np.intp], Float64Array, Float64Array | None]
        | None = None,
        lists: RowLists | None = None,
    ) -> None:
        self._arrays = arrays
        self._lists = lists

    def __len__(self) -> int:
        return len(self._lists.argmax) if self._lists is not None else len(self.argmax)

    def _array_form(
        self,
    ) -> tuple[Float64Array, npt.NDArray[np.intp], Float64Array, Float64Array | None]:
        if self._arrays is None:
            assert self._lists is not None
            lists = self._lists
            distance = lists.ood_distance
            self._arrays = (
                np.array(lists.probabilities, dtype=np.float64),
                np.array(lists.argmax, dtype=np.intp),
                np.array(lists.entropy, dtype=np.float64),
                None if distance is None else np.array(distance, dtype=np.float64),
            )
        return self._arrays

    @property
    def probabilities(self) -> Float64Array:
        """(n, K) float64."""
        return self._array_form()[0]

    @property
    def argmax(self) -> npt.NDArray[np.intp]:
        """(n,) the first most probable class of each row."""
        return self._array_form()[1]

    @property
    def entropy(self) -> Float64Array:
        """(n,) Shannon entropy in nats (0: certain; log K: uniform)."""
        return self._array_form()[2]

    @property
    def ood_distance(self) -> Float64Array | None:
        """(n,) distance to the nearest training class; None without an OOD reference."""
        return self._array_form()[3]

    @property
    def predicted(self) -> list[int] | npt.NDArray[np.intp]:
        """``argmax`` in whichever form is at hand (no conversion)."""
        return self._lists.argmax if self._lists is not None else self.argmax

    def at_hand(self) -> tuple[Any, Any, Any, Any]:
        """(probabilities, argmax, entropy, ood_distance) in whichever form is at hand:
        Python lists for a one-row answer, arrays otherwise (no conversion either way)."""
        if self._lists is not None:
            lists = self._lists
            return lists.probabilities, lists.argmax, lists.entropy, lists.ood_distance
        return self._array_form()

    def lists(self) -> RowLists:
        """The same numbers as Python lists."""
        if self._lists is None:
            p, argmax, entropy, distance = self._array_form()
            self._lists = RowLists(
                p.tolist(),
                argmax.tolist(),
                entropy.tolist(),
                None if distance is None else distance.tolist(),
            )
        return self._lists


class Scorer:
    """Scores for one model version: its class count, input width and OOD reference."""

    def __init__(self, num_classes: int, input_dim: int, detector: OODDetector | None) -> None:
        self.detector = detector
        self.small = input_dim <= SMALL_FEATURES and num_classes <= SMALL_CLASSES
        if detector is not None:
            # the whitening W and whitened class means W m_k as Python lists, for _scalar
            self._w = detector.whitening.tolist()
            self._centres = detector.whitened_means.tolist()

    def __call__(
        self,
        logits: npt.NDArray[np.float32],
        x: npt.NDArray[np.floating[Any]] | Sequence[Sequence[float]],
        temperature: float,
    ) -> Scores:
        """Scores of ``logits`` (n, K) for inputs ``x`` (n, D) at ``temperature``.

        Raises ``NotFinite`` when some logits are infinite or NaN.
        """
        if not self.small or len(logits) > SCALAR_ROWS:
            bad = ~np.isfinite(logits)
            if bad.any():
                raise NotFinite(int(np.argwhere(bad)[0][0]))
        if len(logits) <= SCALAR_ROWS and self.small:
            return self._scalar(logits, x, temperature)
        # Only the distance reads x: an image batch is not copied to float64 for nothing.
        x = np.asarray(x, dtype=np.float64) if self.detector is not None else np.empty((0, 0))
        if not self.small:
            return self._general(logits, x, temperature)
        return self._vector(logits, x, temperature)

    # --- small models, any number of rows ---------------------------------------------

    def _vector(
        self, logits: npt.NDArray[np.float32], x: Float64Array, temperature: float
    ) -> Scores:
        z = logits.astype(np.float64)
        k = z.shape[1]
        top = z[:, 0].copy()
        for j in range(1, k):
            np.maximum(top, z[:, j], out=top)
        z -= top[:, None]
        if temperature != 1.0:
            z /= temperature
        np.exp(z, out=z)  # contiguous, like _scalar's
        total = z[:, 0].copy()
        for j in range(1, k):
            total += z[:, j]
        z /= total[:, None]
        p = z
        terms = p * np.log(np.where(p > 0.0, p, 1.0))  # contiguous, like _scalar's
        acc = terms[:, 0].copy()
        for j in range(1, k):
            acc += terms[:, j]
        entropy = np.subtract(0.0, acc)  # 0 - sum, not -sum: no -0.0 for a certain row
        distance = None
        if self.detector is not None:  # in chunks: its (rows, K, D) temporaries stay small
            distance = np.empty(len(x))
            for start in range(0, len(x), DISTANCE_CHUNK):
                stop = start + DISTANCE_CHUNK
                distance[start:stop] = self._vector_distance(x[start:stop])
        return Scores((p, p.argmax(axis=1), entropy, distance))

    def _vector_distance(self, x: Float64Array) -> Float64Array:
        assert self.detector is not None
        w = self.detector.whitening  # (D, D)
        products = x[:, None, :] * w  # (n, D, D): x_d * W_ed
        d = w.shape[1]
        wx = products[:, :, 0].copy()
        for i in range(1, d):
            wx += products[:, :, i]
        diff = wx[:, None, :] - self.detector.whitened_means  # (n, K, D)
        diff *= diff
        squared = diff[:, :, 0].copy()
        for i in range(1, d):
            squared += diff[:, :, i]
        nearest = squared[:, 0].copy()
        for j in range(1, squared.shape[1]):
            np.minimum(nearest, squared[:, j], out=nearest)
        return np.sqrt(nearest)

    # --- small models, a few rows ------------------------------------------------------

    def _scalar(
        self,
        logits: npt.NDArray[np.float32],
        x: npt.NDArray[np.floating[Any]] | Sequence[Sequence[float]],
        temperature: float,
    ) -> Scores:
        probabilities: list[list[float]] = []
        argmax: list[int] = []
        entropy: list[float] = []
        for i, row in enumerate(logits.tolist()):
            if not all(map(math.isfinite, row)):
                raise NotFinite(i)
            top = max(row)  # the value np.maximum's chain gives (±0 aside: exp(±0) = 1)
            if temperature != 1.0:
                e = _exp([(value - top) / temperature for value in row])
            else:
                e = _exp([value - top for value in row])
            total = e[0]
            for value in e[1:]:  # left to right, like _vector's column sums
                total += value
            p = [value / total for value in e]
            logs = _log([value if value > 0.0 else 1.0 for value in p])
            acc = p[0] * logs[0]
            for j in range(1, len(p)):
                acc += p[j] * logs[j]
            probabilities.append(p)
            argmax.append(p.index(max(p)))  # the first maximum, as numpy's argmax
            entropy.append(0.0 - acc)
        if self.detector is None:
            distance = None
        else:
            distance = self._scalar_distance(x.tolist() if isinstance(x, np.ndarray) else x)
        return Scores(lists=RowLists(probabilities, argmax, entropy, distance))

    def _scalar_distance(self, rows: Sequence[Sequence[float]]) -> list[float]:
        out: list[float] = []
        for x in rows:
            d = len(x)
            wx: list[float] = []  # W x, each sum left to right
            for w_row in self._w:
                acc = x[0] * w_row[0]
                for i in range(1, d):
                    acc += x[i] * w_row[i]
                wx.append(acc)
            squares: list[float] = []  # |W x - W m_k|^2, each sum left to right
            for centre in self._centres:
                diff = wx[0] - centre[0]
                acc = diff * diff
                for i in range(1, d):
                    diff = wx[i] - centre[i]
                    acc += diff * diff
                squares.append(acc)
            nearest = squares[0]
            for value in squares:  # np.minimum's rule, NaN included: NaN anywhere stays NaN
                if nearest == nearest and not value >= nearest:
                    nearest = value
            out.append(math.sqrt(nearest))
        return out

    # --- larger models -----------------------------------------------------------------

    def _general(
        self, logits: npt.NDArray[np.float32], x: Float64Array, temperature: float
    ) -> Scores:
        p = softmax(logits, temperature)
        entropy = np.subtract(0.0, (p * np.log(np.where(p > 0.0, p, 1.0))).sum(axis=1))
        distance = None if self.detector is None else self.detector.distance(x)
        return Scores((p, p.argmax(axis=1), entropy, distance))


#: Up to this ``k``, ``top_k`` takes k argmax passes; beyond, a partition of each row.
ARGMAX_PASSES = 16
F = TypeVar("F", bound=np.floating[Any])


def top_k(values: npt.NDArray[F], k: int) -> tuple[npt.NDArray[np.intp], npt.NDArray[F]]:
    """Each row's ``k`` largest values and their indices, largest first; of equal values,
    the lower index first (the order a stable sort of the whole row gives).

    ``values``: ``(..., K)`` finite scores, ``1 <= k <= K``; returns two ``(..., k)``
    arrays, indices and values. The whole row is never sorted: a 1,000-class row's top 5
    cost about what five argmax do, where a sort costs some fifty times more.
    """
    width = values.shape[-1]
    if not 1 <= k <= width:
        raise ValueError(f"expected 1 <= k <= {width}, received k={k}")
    rows = values.reshape(-1, width)
    if not np.isfinite(rows).all():
        raise ValueError("expected finite values, received infinities or NaN")
    order = _top_by_argmax(rows, k) if k <= ARGMAX_PASSES else _top_by_partition(rows, k)
    shape = (*values.shape[:-1], k)
    return order.reshape(shape), np.take_along_axis(rows, order, axis=1).reshape(shape)


def _top_by_argmax(rows: npt.NDArray[np.floating[Any]], k: int) -> npt.NDArray[np.intp]:
    """k passes of argmax, each taking out what it found: argmax gives the first of equal
    values, so the passes come out in the stable order."""
    left = rows.copy()
    every = np.arange(len(rows))
    order = np.empty((len(rows), k), dtype=np.intp)
    for j in range(k):
        order[:, j] = best = left.argmax(axis=1)
        left[every, best] = -np.inf
    return order


def _top_by_partition(rows: npt.NDArray[np.floating[Any]], k: int) -> npt.NDArray[np.intp]:
    """A partition finds each row's k largest (O(K)), and only those are sorted. Where
    values equal to the k-th largest lie on both sides of the cut, the partition's choice
    among them is arbitrary: those rows are sorted whole."""
    part = np.argpartition(-rows, k - 1, axis=1)[:, :k]
    chosen = np.take_along_axis(rows, part, axis=1)
    order = np.take_along_axis(part, np.lexsort((part, -chosen), axis=1), axis=1)
    tied = np.count_nonzero(rows >= chosen.min(axis=1, keepdims=True), axis=1) > k
    if tied.any():
        order[tied] = np.argsort(-rows[tied], axis=1, kind="stable")[:, :k]
    return order
