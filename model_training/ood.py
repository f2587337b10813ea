"""What the training data looked like, and how far a new input is from it.

A softmax classifier must pick one of its classes for any input, however far from
the data it learned from: (1000, -1000) comes out "class 3, 100 %". The signal
recorded here lets the service say "this input is unlike the training data".

Method: class-conditional Mahalanobis distance with a shared covariance (Lee et
al., 2018, on the input features rather than a network's hidden features):

    d(x) = min_k sqrt((x - m_k)^T P (x - m_k))

``m_k`` is the mean of the training samples of class ``k`` and ``P`` the inverse of
their pooled within-class covariance ``S`` (plus a small ridge, so a constant or
duplicated feature does not make ``S`` singular). ``d`` is the number of "standard
deviations" to the nearest class, measured along the data's own directions of
spread. An input is out of distribution when ``d(x) > threshold``, the 99.9th
percentile of ``d`` over the training samples themselves: about 1 training sample
in 1000 is flagged. For Gaussian classes in ``D`` dimensions ``d^2`` follows a
chi-square distribution with ``D`` degrees of freedom (threshold about 3.7 for D = 2).

Why the class-conditional version: one mean and covariance over all classes describe
separated clusters as one wide cloud, so the empty space between them looks like the
data. On the default blobs, (22.5, 7.5), in the gap between three blobs, is 0.9 from
the global mean (the centre of a blob, (15, 0), is 1.7), but 6.7 from the nearest
class: flagged, against a threshold of about 3.6. (1000, -1000) is 956.

Pure numpy, float64; nothing here imports TensorFlow. ``distance`` is the reference
the service mirrors.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import numpy.typing as npt

#: Share of the training samples whose distance stays below the threshold.
QUANTILE = 0.999
#: The same for an image model's features (see ``docs/training.md``): the network was
#: fitted on these very samples, so their features sit closer to the class means than a
#: new image's do, and the 99.9th percentile of so few training samples is one or two of
#: them; the 99th is a steadier estimate and still flags few held-out images.
FEATURE_QUANTILE = 0.99
#: Ridge added to the within-class covariance, relative to its mean variance.
RELATIVE_RIDGE = 1e-6

Float64Array = npt.NDArray[np.float64]


def distance(x: npt.ArrayLike, means: npt.ArrayLike, precision: npt.ArrayLike) -> Float64Array:
    """``min_k sqrt((x - means[k])^T precision (x - means[k]))`` for each row of ``x``, in float64.

    ``x`` is ``(n, D)``, ``means`` ``(K, D)``, ``precision`` ``(D, D)``; returns ``(n,)``.
    """
    rows = np.asarray(x, dtype=np.float64)
    centres = np.asarray(means, dtype=np.float64)
    p = np.asarray(precision, dtype=np.float64)
    diff = rows[:, None, :] - centres[None, :, :]  # (n, K, D)
    squared = np.einsum("nkd,de,nke->nk", diff, p, diff)
    # A precision matrix is positive semi-definite; rounding can leave -1e-16.
    return np.asarray(np.sqrt(np.maximum(squared.min(axis=1), 0.0)))


def distance_from_metadata(x: npt.ArrayLike, ood: dict[str, Any]) -> Float64Array:
    """``distance`` with the parameters of a version's ``metadata["training_data"]["ood"]``."""
    return distance(x, ood["class_means"], ood["precision"])


def _covariance(x: Float64Array) -> Float64Array:
    """Sample covariance (n - 1 denominator), zeros for a single sample."""
    centred = x - x.mean(axis=0)
    return np.asarray(centred.T @ centred / max(len(x) - 1, 1))


def fit_reference(
    x: npt.ArrayLike,
    y: npt.ArrayLike,
    class_names: list[str],
    quantile: float = QUANTILE,
    measured: npt.ArrayLike | None = None,
) -> dict[str, Any]:
    """Summary statistics of the training features and the OOD detector fitted on them.

    The metadata's ``training_data`` block: overall mean, covariance, min, max and
    count (for people and for range checks), and under ``ood`` everything the
    service needs to compute ``distance`` and compare it with ``threshold``.

    ``measured``: True for the features the distance is measured over (default: all).
    The others get zero rows and columns in ``precision``, so they add nothing to any
    distance: a table's one-hot inputs, whose covariance is degenerate (each block sums
    to 1) and whose rare categories would otherwise sit many "standard deviations" away.
    """
    features = np.asarray(x, dtype=np.float64)
    labels = np.asarray(y, dtype=np.int64)
    n, dim = features.shape
    used = np.ones(dim, dtype=bool) if measured is None else np.asarray(measured, dtype=bool)
    present = [k for k in range(len(class_names)) if np.any(labels == k)]
    means = np.stack([features[labels == k].mean(axis=0) for k in present])
    within = features - means[np.searchsorted(present, labels)]
    scatter = within.T @ within / max(n - len(present), 1)  # pooled within-class covariance
    block = scatter[np.ix_(used, used)]
    ridge = RELATIVE_RIDGE * float(np.trace(block)) / max(int(used.sum()), 1) + 1e-12
    inverse = np.linalg.pinv(block + ridge * np.eye(len(block)), hermitian=True)
    precision = np.zeros((dim, dim))
    precision[np.ix_(used, used)] = (inverse + inverse.T) / 2.0  # exactly symmetric
    train_distance = distance(features, means, precision)
    threshold = float(np.quantile(train_distance, quantile))
    detector: dict[str, Any] = {
        "method": "mahalanobis",
        "reference": "nearest_class_mean",
        "distance": "min_k sqrt((x - class_means[k])^T precision (x - class_means[k]))",
        "classes": [class_names[k] for k in present],
        "class_means": means.tolist(),
        "within_class_covariance": scatter.tolist(),
        "ridge": ridge,
        "precision": precision.tolist(),
        "threshold": threshold,
        "quantile": quantile,
        "fitted_on": "train+validation",
        "train_flagged": float(np.mean(train_distance > threshold)),
    }
    if measured is not None:
        detector["measured_on"] = np.flatnonzero(used).tolist()
    return {
        "n": n,
        "mean": features.mean(axis=0).tolist(),
        "covariance": _covariance(features).tolist(),
        "min": features.min(axis=0).tolist(),
        "max": features.max(axis=0).tolist(),
        "class_counts": np.bincount(labels, minlength=len(class_names)).tolist(),
        "ood": detector,
    }


def flagged(x: npt.ArrayLike, ood: dict[str, Any]) -> npt.NDArray[np.bool_]:
    """True for each row of ``x`` whose distance is above the threshold."""
    return np.asarray(distance_from_metadata(x, ood) > ood["threshold"])
