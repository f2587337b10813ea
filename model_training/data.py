"""Training data: the default 4-blob example, and the held-out and validation splits.

A user's CSV is read by ``model_training.tables``.

Nothing here imports TensorFlow, so bad data is reported before the slow import.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import numpy.typing as npt

#: The classic example: four Gaussian blobs in 2-D.
BLOB_CENTERS: tuple[tuple[float, float], ...] = (
    (15.0, 0.0),
    (15.0, 15.0),
    (0.0, 15.0),
    (30.0, 15.0),
)
BLOB_STD = 1.5
#: Test samples held out of the 4-blob example unless ``--test-size`` says otherwise.
BLOB_TEST_SIZE = 250
#: Share of a user's rows held out for the test, and of the training part for validation,
#: unless the command line says otherwise (see ``default_test_size``).
HELD_OUT_FRACTION = 0.2


class DataError(ValueError):
    """The training data cannot be used; the message says why and where."""


@dataclass(frozen=True)
class Dataset:
    """Features (float32, one row per sample), integer labels and their names."""

    x: npt.NDArray[np.float32]
    y: npt.NDArray[np.int64]
    feature_names: tuple[str, ...]
    class_names: tuple[str, ...]
    source: dict[str, Any] = field(default_factory=dict)

    @property
    def num_classes(self) -> int:
        """How many classes the labels index into."""
        return len(self.class_names)


@dataclass(frozen=True)
class Split:
    """The training part (validation is carved from it: ``carve_validation``) and the test part."""

    x_train: npt.NDArray[np.float32]
    y_train: npt.NDArray[np.int64]
    x_test: npt.NDArray[np.float32]
    y_test: npt.NDArray[np.int64]


@dataclass(frozen=True)
class Validation:
    """The training part cut in two: the samples the weights are fitted on, and the rest."""

    x_fit: npt.NDArray[np.float32]
    y_fit: npt.NDArray[np.int64]
    x_val: npt.NDArray[np.float32]
    y_val: npt.NDArray[np.int64]


def make_blobs(
    n_samples: int = 1000,
    *,
    centers: Sequence[Sequence[float]] = BLOB_CENTERS,
    std: float = BLOB_STD,
    seed: int = 42,
) -> Dataset:
    """Draw isotropic Gaussian blobs, ``n_samples`` split as evenly as possible over the centres.

    Same recipe as scikit-learn's ``make_blobs``: each sample is its centre plus
    ``N(0, std^2)`` noise per feature, then the samples are shuffled.
    """
    if n_samples < len(centers):
        raise DataError(
            f"expected at least one sample per centre ({len(centers)}), "
            f"received n_samples={n_samples}"
        )
    rng = np.random.default_rng(seed)
    centre_array = np.asarray(centers, dtype=np.float64)
    k, dim = centre_array.shape
    per_centre = np.full(k, n_samples // k)
    per_centre[: n_samples % k] += 1
    y = np.repeat(np.arange(k), per_centre)
    x = centre_array[y] + rng.normal(scale=std, size=(n_samples, dim))
    order = rng.permutation(n_samples)
    return Dataset(
        x=x[order].astype(np.float32),
        y=y[order].astype(np.int64),
        feature_names=tuple(f"x{i + 1}" for i in range(dim)),
        class_names=tuple(str(i) for i in range(k)),
        source={
            "kind": "blobs",
            "n_samples": n_samples,
            "centers": centre_array.tolist(),
            "std": std,
            "seed": seed,
        },
    )


def default_test_size(n_rows: int, num_classes: int) -> int:
    """How many of a user's rows to hold out for the test: 20 %, at least one per class.

    A fixed count (the blobs' 250) fails or starves training on a small table, and a
    bare 20 % of a tiny one can be a single row. Never more than half the rows: the
    model must learn from at least as many rows as it is tested on.
    """
    wanted = max(round(HELD_OUT_FRACTION * n_rows), num_classes)
    return max(min(wanted, n_rows // 2), 1)


def default_validation_split(n_train: int, num_classes: int) -> float:
    """The share of the training part to validate on: 20 %, at least one sample per class.

    Never more than half; 0 (no validation, hence no calibration) when the training
    part is a single sample. The 4-blob example's 750 training samples give exactly 0.2.
    """
    if n_train < 2:
        return 0.0
    return min(max(HELD_OUT_FRACTION, num_classes / n_train), 0.5)


def split_rows(
    n: int, test_size: float, seed: int
) -> tuple[npt.NDArray[np.int64], npt.NDArray[np.int64]]:
    """The training and the test row numbers: ``test_size`` rows (a count, or a fraction
    when below 1) held out at random, both in random order."""
    n_test = round(test_size * n) if test_size < 1 else int(test_size)
    if not 0 < n_test < n:
        raise DataError(
            f"expected a test size that leaves samples on both sides of the split, "
            f"received test_size={test_size} for {n} samples"
        )
    order = np.random.default_rng(seed).permutation(n)
    return order[n_test:], order[:n_test]


def split(dataset: Dataset, test_size: float, seed: int) -> Split:
    """Hold out ``test_size`` samples (a count, or a fraction when below 1) chosen at random."""
    train, test = split_rows(len(dataset.y), test_size, seed)
    return Split(dataset.x[train], dataset.y[train], dataset.x[test], dataset.y[test])


def carve_validation(
    x: npt.NDArray[np.float32], y: npt.NDArray[np.int64], fraction: float
) -> Validation:
    """The last ``fraction`` of the training arrays as validation, the rest for fitting.

    Exactly the samples Keras's ``fit(validation_split=fraction)`` would take (it
    splits at ``floor(n * (1 - fraction))``), but carved out here so the same
    validation samples are at hand afterwards to fit the calibration temperature.
    ``fraction=0`` leaves the validation part empty.
    """
    n = len(y)
    split_at = math.floor(n * (1.0 - fraction)) if fraction else n
    if split_at == 0 or (fraction and split_at == n):
        raise DataError(
            f"expected a validation split that leaves samples on both sides, "
            f"received validation_split={fraction} for {n} training samples"
        )
    return Validation(x[:split_at], y[:split_at], x[split_at:], y[split_at:])
