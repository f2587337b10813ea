"""Temperature scaling (Guo et al., 2017): one scalar ``T`` fitted on held-out logits.

``softmax(z / T)`` keeps every argmax, so accuracy is unchanged; it only makes the
probabilities sharper (``T < 1``: the model was under-confident) or softer (``T > 1``:
over-confident). ``T`` minimises the negative log-likelihood (NLL) of the validation
split; NLL and expected calibration error (ECE) are reported before and after, on
that validation split and on the held-out test split, which the fit never saw.

Pure numpy, float64 throughout; nothing here imports TensorFlow.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

import numpy as np
import numpy.typing as npt

#: The temperature is searched in this interval (a log-scale search: the same relative
#: precision at 0.05 as at 20).
TEMPERATURE_BOUNDS = (0.05, 20.0)
#: Equal-width confidence bins of the ECE and the reliability diagram (Guo et al. use 15).
ECE_BINS = 15

Float64Array = npt.NDArray[np.float64]


def log_softmax(logits: npt.ArrayLike, temperature: float = 1.0) -> Float64Array:
    """``log softmax(logits / temperature)`` on the last axis, in float64, stable for any logits."""
    z = np.asarray(logits, dtype=np.float64) / temperature
    z = z - z.max(axis=-1, keepdims=True)
    return np.asarray(z - np.log(np.exp(z).sum(axis=-1, keepdims=True)))


def softmax(logits: npt.ArrayLike, temperature: float = 1.0) -> Float64Array:
    """``softmax(logits / temperature)`` along the last axis, in float64."""
    return np.exp(log_softmax(logits, temperature))


def nll(logits: npt.ArrayLike, labels: npt.ArrayLike, temperature: float = 1.0) -> float:
    """Mean negative log-likelihood of the true labels under ``softmax(logits / temperature)``."""
    log_p = log_softmax(logits, temperature)
    y = np.asarray(labels, dtype=np.int64)
    return float(-log_p[np.arange(len(y)), y].mean())


@dataclass(frozen=True)
class Reliability:
    """Per confidence bin: how many samples, their mean confidence, and how many were right.

    Bin ``b`` holds the samples whose confidence (largest probability) lies in
    ``(b / bins, (b + 1) / bins]``; the first bin also holds 0. Empty bins have
    ``count == 0`` and ``nan`` confidence and accuracy.
    """

    edges: Float64Array
    count: npt.NDArray[np.int64]
    confidence: Float64Array
    accuracy: Float64Array

    @property
    def ece(self) -> float:
        """Expected calibration error: ``sum_b |B_b| / n * |accuracy(B_b) - confidence(B_b)|``."""
        used = self.count > 0
        gaps = np.abs(self.accuracy[used] - self.confidence[used])
        return float((self.count[used] * gaps).sum() / self.count.sum())


def reliability(
    probabilities: npt.ArrayLike, labels: npt.ArrayLike, bins: int = ECE_BINS
) -> Reliability:
    """Bin the samples by confidence, as the ECE and the reliability diagram do."""
    p = np.asarray(probabilities, dtype=np.float64)
    y = np.asarray(labels, dtype=np.int64)
    confidence = p.max(axis=1)
    correct = (p.argmax(axis=1) == y).astype(np.float64)
    edges = np.linspace(0.0, 1.0, bins + 1)
    # side="left": a confidence equal to an upper edge belongs to the bin below it.
    index = np.searchsorted(edges[1:-1], confidence, side="left")
    count = np.bincount(index, minlength=bins).astype(np.int64)
    with np.errstate(invalid="ignore", divide="ignore"):
        mean_confidence = np.bincount(index, confidence, minlength=bins) / count
        accuracy = np.bincount(index, correct, minlength=bins) / count
    return Reliability(edges, count, mean_confidence, accuracy)


def ece(probabilities: npt.ArrayLike, labels: npt.ArrayLike, bins: int = ECE_BINS) -> float:
    """Expected calibration error with ``bins`` equal-width confidence bins."""
    return reliability(probabilities, labels, bins).ece


def fit_temperature(
    logits: npt.ArrayLike,
    labels: npt.ArrayLike,
    bounds: tuple[float, float] = TEMPERATURE_BOUNDS,
    tolerance: float = 1e-7,
) -> float:
    """The temperature in ``bounds`` that minimises ``nll(logits, labels, T)``.

    Golden-section search on ``log T``. The NLL is convex in ``1 / T`` (a log-sum-exp
    of functions linear in it, minus a linear term), hence unimodal in ``log T``, so
    the search finds the minimum, or the bound it lies beyond. ``tolerance`` is on
    ``log T``, i.e. relative on ``T``.
    """
    z = np.asarray(logits, dtype=np.float64)
    y = np.asarray(labels, dtype=np.int64)

    def loss(log_t: float) -> float:
        return nll(z, y, math.exp(log_t))

    ratio = (math.sqrt(5.0) - 1.0) / 2.0  # 0.618...
    low, high = math.log(bounds[0]), math.log(bounds[1])
    a, b = high - ratio * (high - low), low + ratio * (high - low)
    loss_a, loss_b = loss(a), loss(b)
    while high - low > tolerance:
        if loss_a <= loss_b:  # the minimum is in [low, b]
            high, b, loss_b = b, a, loss_a
            a = high - ratio * (high - low)
            loss_a = loss(a)
        else:  # the minimum is in [a, high]
            low, a, loss_a = a, b, loss_b
            b = low + ratio * (high - low)
            loss_b = loss(b)
    return math.exp((low + high) / 2.0)


def scores(logits: npt.ArrayLike, labels: npt.ArrayLike, temperature: float) -> dict[str, float]:
    """NLL and ECE of the raw probabilities (before) and of the temperature-scaled ones (after)."""
    return {
        "nll_before": nll(logits, labels),
        "nll_after": nll(logits, labels, temperature),
        "ece_before": ece(softmax(logits), labels),
        "ece_after": ece(softmax(logits, temperature), labels),
    }


def at_bound(temperature: float, bounds: tuple[float, float] = TEMPERATURE_BOUNDS) -> bool:
    """True when the fit stopped at a bound: the NLL would still fall beyond it."""
    return any(abs(math.log(temperature / bound)) < 1e-4 for bound in bounds)


def calibrate(
    validation_logits: npt.ArrayLike,
    validation_labels: npt.ArrayLike,
    test_logits: npt.ArrayLike,
    test_labels: npt.ArrayLike,
) -> dict[str, Any]:
    """Fit the temperature on the validation split; the metadata's ``calibration`` block.

    ``temperature`` is what the service divides the logits by (it reads exactly
    ``calibration.temperature``).
    """
    temperature = fit_temperature(validation_logits, validation_labels)
    return {
        "method": "temperature_scaling",
        "temperature": temperature,
        "fitted_on": "validation",
        "bounds": list(TEMPERATURE_BOUNDS),
        "at_bound": at_bound(temperature),
        "ece_bins": ECE_BINS,
        "validation": {
            "samples": len(np.asarray(validation_labels)),
            **scores(validation_logits, validation_labels, temperature),
        },
        "test": {
            "samples": len(np.asarray(test_labels)),
            **scores(test_logits, test_labels, temperature),
        },
    }
