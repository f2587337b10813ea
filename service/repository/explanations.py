"""What a version's feature attributions are measured against, read from its metadata.

The background (``service.inference.explain.Background``), in order of preference:

1. ``explanation``: the weighted k-means summary of the training rows its trainer saved;
2. ``training_data.mean``: the training rows' mean, one point (versions trained before
   backgrounds were saved);
3. zeros: a model exported from elsewhere, of whose training data nothing is known.

And the players (``Players``): a table's named columns (a categorical column's one-hot
inputs together), else one per input, named by ``feature_names`` or by position.

An image's occlusion baseline (``pixel_baseline``): the training images' mean pixel value
where the version records it (``training_data.pixel_mean``), else 0 in the model's pixel
units.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from service.inference.explain import Background, Players
from service.repository.disk import ServedMetadata

#: How the answer names each kind of baseline.
KMEANS = "kmeans"
TRAINING_MEAN = "training_mean"
ZEROS = "zeros"


def background(meta: ServedMetadata) -> tuple[Background, str]:
    """The version's background, and its kind (``kmeans``/``kmedoids``, ``training_mean``,
    ``zeros``)."""
    saved = meta.explanation
    if saved is not None:
        return (
            Background(
                np.asarray(saved.points),
                np.asarray(saved.weights),
                f"{len(saved.points)} weighted {saved.method} points summarising the "
                f"{saved.rows} training rows",
            ),
            saved.method,
        )
    statistics: dict[str, Any] = (
        (meta.training_data.model_extra or {}) if meta.training_data else {}
    )
    mean = statistics.get("mean")
    if isinstance(mean, list) and len(mean) == meta.input_dim:
        point = np.asarray(mean, dtype=np.float64)[None, :]
        return Background(point, np.ones(1), "the training rows' mean"), TRAINING_MEAN
    return (
        Background(
            np.zeros((1, meta.input_dim)),
            np.ones(1),
            "zeros: the version records nothing of its training data",
        ),
        ZEROS,
    )


def players(meta: ServedMetadata) -> Players:
    """The players of a table's attributions: its named columns, else its inputs."""
    columns = meta.columns
    if columns is not None:
        return Players.columns(columns)
    names = meta.feature_names or [f"x{j}" for j in range(meta.input_dim)]
    return Players.features(names)


def pixel_baseline(meta: ServedMetadata) -> tuple[float, str, str]:
    """The value an image's occluded patch takes, its kind (``training_mean``, ``zeros``)
    and its description."""
    statistics: dict[str, Any] = (
        (meta.training_data.model_extra or {}) if meta.training_data else {}
    )
    mean = statistics.get("pixel_mean")
    if isinstance(mean, int | float) and np.isfinite(mean):
        return float(mean), TRAINING_MEAN, "the training images' mean pixel value"
    return 0.0, ZEROS, "0 in the model's pixel units: the version records nothing of its images"
