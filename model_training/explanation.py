"""The background a table's feature attributions are measured against: ``explanation``.

Shapley values need a distribution to replace the features a coalition leaves out by
(``service/inference/explain.py``). Shipping training rows is not an option, so each
version keeps a small weighted summary of them: k-means on the standardized training
rows (in the model's input space, one-hot inputs included), ``k = min(10, rows)``: each
cluster's mean, weighted by its share of the rows (so the points' weighted mean is the
training rows' mean, the baseline of a linear model's attributions)::

    "explanation": {"method": "kmeans", "computed_on": "train", "rows": 750,
                    "points": [[...], ...], "weights": [0.12, ...]}

A table with categorical columns keeps, per cluster, the training row nearest its
centroid instead (``kmedoids``): a centroid's averaged one-hot inputs are no category the
model ever saw, and attributions of a column should compare real values.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import numpy.typing as npt

#: Most background points: the service scores 2^features x this many rows per instance.
MAX_POINTS = 10


def background(
    x_train: npt.ArrayLike, *, categorical: bool = False, seed: int = 0
) -> dict[str, Any]:
    """The ``explanation`` metadata of a table trained on ``x_train`` (rows, d)."""
    from sklearn.cluster import KMeans  # type: ignore[import-untyped]

    x = np.asarray(x_train, dtype=np.float64)
    k = min(MAX_POINTS, len(x))
    scale = x.std(axis=0)
    scale[scale == 0] = 1.0
    standardized = (x - x.mean(axis=0)) / scale
    fitted = KMeans(n_clusters=k, n_init=4, random_state=seed).fit(standardized)
    labels = np.asarray(fitted.labels_)
    counts = np.bincount(labels, minlength=k)
    kept = np.flatnonzero(counts)  # identical rows can leave a cluster empty
    if categorical:
        points = np.empty((len(kept), x.shape[1]))
        for i, cluster in enumerate(kept):
            members = np.flatnonzero(labels == cluster)
            gaps = standardized[members] - fitted.cluster_centers_[cluster]
            points[i] = x[members[np.argmin(np.einsum("ij,ij->i", gaps, gaps))]]
    else:  # each cluster's mean, so that the points' weighted mean is the rows' mean
        points = np.stack([x[labels == cluster].mean(axis=0) for cluster in kept])
    weights = counts[kept] / counts.sum()
    return {
        "method": "kmedoids" if categorical else "kmeans",
        "computed_on": "train",
        "rows": len(x),
        "points": points.tolist(),
        "weights": weights.tolist(),
    }
