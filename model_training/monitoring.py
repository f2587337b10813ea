"""The reference distributions live drift is measured against: the metadata's ``monitoring``.

Computed at training time on the reference rows (``computed_on``: ``"train"``, the
training part, validation rows included: the rows the OOD reference is fitted on) and
written as::

    "monitoring": {
      "computed_on": "train", "rows": 750, "bins": 10,
      "features": [                                   # tables only, [] otherwise
        {"name": "x1", "kind": "numeric", "edges": [...], "fractions": [...], "missing": 0.0},
        {"name": "city", "kind": "categorical",
         "categories": {"Lyon": 0.4, "Paris": 0.5}, "other": 0.1, "missing": 0.02}],
      "entropy": {"edges": [...], "fractions": [...], "mean": 0.12},
      "ood_distance": {"edges": [...], "fractions": [...], "rate": 0.001},  # or null
      "class_prior": [...],       # label frequencies of the reference rows
      "predicted_mix": [...]}     # argmax frequencies of the calibrated probabilities

**Binning** (``histogram``), which the service must repeat exactly on live values:

- ``edges`` are the interior cut points: ``np.quantile(values, [1/bins, ..., (bins-1)/bins])``
  (numpy's default, linear interpolation) of the reference's non-missing values, in
  float64, then deduplicated and sorted (``np.unique``): at most ``bins - 1`` of them,
  fewer where quantiles coincide (a column of few distinct values);
- there are ``len(edges) + 1`` bins; bin ``i`` holds the values ``v`` with
  ``edges[i-1] < v <= edges[i]`` (bin 0: ``v <= edges[0]``; the last: ``v > edges[-1]``),
  that is ``np.searchsorted(edges, v, side="left")``;
- ``fractions[i]`` is the share of the non-missing reference values in bin ``i`` (they
  sum to 1); ``missing`` is the share of all reference rows whose value is missing.

A table's numeric feature is binned on its raw values (a missing cell is missing, not the
fill the model is given); a categorical one has the shares of its ``MAX_CATEGORIES`` most
frequent values among the non-missing cells (ties: in text order), the rest summed in
``other``. Entropy (nats, of the calibrated probabilities ``softmax(logits /
temperature)``, as ``service/inference/scores.py`` computes it) and the OOD distance
(``ood.distance_from_metadata``, on the space the reference is measured on) are binned
the same way; ``rate`` is the share of distances above the OOD threshold.

Every number is a plain float; an undefined one (no values to bin) is ``None``. Pure
numpy; nothing here imports TensorFlow.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Sequence
from typing import Any

import numpy as np
import numpy.typing as npt

from model_training.ood import distance_from_metadata
from model_training.tables import RawColumn

#: Quantile bins per distribution (deciles).
BINS = 10
#: A categorical feature keeps the shares of this many most frequent values.
MAX_CATEGORIES = 50
#: The metadata's ``computed_on`` for the training part (validation rows included).
TRAIN = "train"

Float64Array = npt.NDArray[np.float64]


def quantile_edges(values: npt.ArrayLike, bins: int = BINS) -> Float64Array:
    """The interior cut points of ``bins`` quantile bins of ``values`` (non-missing, float64),
    deduplicated; empty for no values."""
    present = np.asarray(values, dtype=np.float64)
    if not len(present):
        return np.empty(0)
    return np.unique(np.quantile(present, np.arange(1, bins) / bins))


def bin_index(edges: npt.ArrayLike, values: npt.ArrayLike) -> npt.NDArray[np.intp]:
    """Each value's bin: ``i`` with ``edges[i-1] < v <= edges[i]`` (the module's convention)."""
    return np.asarray(
        np.searchsorted(np.asarray(edges, dtype=np.float64), np.asarray(values, np.float64), "left")
    )


def histogram(values: npt.ArrayLike, bins: int = BINS) -> dict[str, Any]:
    """``edges`` and ``fractions`` of ``values`` (non-missing), ``fractions`` ``None`` for none."""
    present = np.asarray(values, dtype=np.float64)
    edges = quantile_edges(present, bins)
    if not len(present):
        return {"edges": [], "fractions": None}
    counts = np.bincount(bin_index(edges, present), minlength=len(edges) + 1)
    return {"edges": edges.tolist(), "fractions": (counts / len(present)).tolist()}


def numeric_feature(name: str, values: npt.ArrayLike, bins: int = BINS) -> dict[str, Any]:
    """A numeric feature's reference: its quantile bins and missing share (NaN: missing)."""
    column = np.asarray(values, dtype=np.float64)
    missing = np.isnan(column)
    return {
        "name": name,
        "kind": "numeric",
        **histogram(column[~missing], bins),
        "missing": float(missing.mean()) if len(column) else None,
    }


def categorical_feature(name: str, cells: Sequence[str | None]) -> dict[str, Any]:
    """A categorical feature's reference: the shares of its most frequent values among the
    non-missing cells, the rest as ``other``, and the missing share (``None``: missing)."""
    counts = Counter(cell for cell in cells if cell is not None)
    present = sum(counts.values())
    top = sorted(counts.items(), key=lambda item: (-item[1], item[0]))[:MAX_CATEGORIES]
    kept = sum(count for _, count in top)
    return {
        "name": name,
        "kind": "categorical",
        "categories": {word: count / present for word, count in top},
        "other": (present - kept) / present if present else None,
        "missing": (len(cells) - present) / len(cells) if len(cells) else None,
    }


def array_features(
    names: Sequence[str], x: npt.ArrayLike, bins: int = BINS
) -> list[dict[str, Any]]:
    """Every column of ``x`` (rows, features) as a numeric feature named by ``names``."""
    columns = np.asarray(x, dtype=np.float64)
    return [numeric_feature(name, columns[:, j], bins) for j, name in enumerate(names)]


def table_features(
    columns: Sequence[RawColumn], rows: npt.ArrayLike, bins: int = BINS
) -> list[dict[str, Any]]:
    """A CSV's columns as read (before encoding), restricted to the reference ``rows``."""
    index = np.asarray(rows, dtype=np.int64)
    features = []
    for column in columns:
        if column.numbers is not None:
            features.append(numeric_feature(column.name, column.numbers[index], bins))
        else:
            features.append(categorical_feature(column.name, [column.cells[i] for i in index]))
    return features


def calibrated_probabilities(logits: npt.ArrayLike, temperature: float = 1.0) -> Float64Array:
    """``softmax(logits / temperature)`` per row, in float64, stable."""
    z = np.asarray(logits, dtype=np.float64)
    z = (z - z.max(axis=1, keepdims=True)) / temperature
    e = np.exp(z)
    return np.asarray(e / e.sum(axis=1, keepdims=True))


def entropy(probabilities: npt.ArrayLike) -> Float64Array:
    """``-sum_k p_k log p_k`` per row, in nats (``0 log 0 = 0``)."""
    p = np.asarray(probabilities, dtype=np.float64)
    return np.asarray(0.0 - (p * np.log(np.where(p > 0.0, p, 1.0))).sum(axis=1))


def _mean(values: Float64Array) -> float | None:
    return float(values.mean()) if len(values) else None


def reference(
    logits: npt.ArrayLike,
    y: npt.ArrayLike,
    num_classes: int,
    temperature: float = 1.0,
    features: list[dict[str, Any]] | None = None,
    ood: dict[str, Any] | None = None,
    ood_inputs: npt.ArrayLike | None = None,
    computed_on: str = TRAIN,
    bins: int = BINS,
) -> dict[str, Any]:
    """The ``monitoring`` block for the reference rows: their ``logits`` (before the
    temperature), labels ``y``, the table's ``features`` (``[]`` for other kinds) and,
    with the version's OOD reference ``ood`` (``training_data.ood``), the rows in the space
    it measures (``ood_inputs``: the inputs of a table, the features of an image or a text)."""
    p = calibrated_probabilities(logits, temperature)
    labels = np.asarray(y, dtype=np.int64)
    rows = len(labels)
    if len(p) != rows:
        raise ValueError(f"expected one row of logits per label ({rows}), received {len(p)}")
    spread = entropy(p)
    ood_distance = None
    if ood is not None and ood_inputs is not None:
        distances = distance_from_metadata(ood_inputs, ood)
        rate = float(np.mean(distances > ood["threshold"])) if rows else None
        ood_distance = {**histogram(distances, bins), "rate": rate}
    denominator = max(rows, 1)
    predicted = p.argmax(axis=1)
    return {
        "computed_on": computed_on,
        "rows": rows,
        "features": features or [],
        "entropy": {**histogram(spread, bins), "mean": _mean(spread)},
        "ood_distance": ood_distance,
        "class_prior": (np.bincount(labels, minlength=num_classes) / denominator).tolist(),
        "predicted_mix": (np.bincount(predicted, minlength=num_classes) / denominator).tolist(),
        "bins": bins,
    }
