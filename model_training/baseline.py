"""The one-line baseline a table's model is measured against: a standardized logistic regression.

``make_pipeline(StandardScaler(), LogisticRegression())`` from scikit-learn, fitted on
the same encoded rows the network may learn from (the whole training part: the rows it
is fitted on and its validation split) and scored on the same held-out test rows. If
the network is less accurate than that, the user is better served by the one-liner,
and the report says so. scikit-learn is in the ``train`` extra; without it the
baseline is skipped (``None``). Nothing here imports TensorFlow.
"""

from __future__ import annotations

import time
from typing import Any

import numpy as np
import numpy.typing as npt

#: LogisticRegression's iteration cap: lbfgs converges on every table tested well before.
MAX_ITER = 5000


def logistic_regression(
    x_train: npt.NDArray[np.float32],
    y_train: npt.NDArray[np.int64],
    x_test: npt.NDArray[np.float32],
    y_test: npt.NDArray[np.int64],
) -> dict[str, Any] | None:
    """The baseline's held-out accuracy and NLL (and how it was made); ``None`` without
    scikit-learn."""
    try:
        import sklearn  # type: ignore[import-untyped]
        from sklearn.exceptions import ConvergenceWarning  # type: ignore[import-untyped]
        from sklearn.linear_model import LogisticRegression  # type: ignore[import-untyped]
        from sklearn.pipeline import make_pipeline  # type: ignore[import-untyped]
        from sklearn.preprocessing import StandardScaler  # type: ignore[import-untyped]
    except ImportError:
        return None
    import warnings

    start = time.perf_counter()
    pipeline = make_pipeline(StandardScaler(), LogisticRegression(max_iter=MAX_ITER))
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always", ConvergenceWarning)
        pipeline.fit(np.asarray(x_train, dtype=np.float64), y_train)
    probabilities = pipeline.predict_proba(np.asarray(x_test, dtype=np.float64))
    predicted = pipeline.classes_[probabilities.argmax(axis=1)]
    return {
        "method": "make_pipeline(StandardScaler(), LogisticRegression("
        f"max_iter={MAX_ITER})), scikit-learn {sklearn.__version__}",
        "fitted_on": "train+validation",
        "train_samples": len(y_train),
        "test_accuracy": float(np.mean(predicted == y_test)),
        "test_loss": _nll(probabilities, pipeline.classes_, y_test),
        "test_samples": len(y_test),
        "converged": not any(issubclass(w.category, ConvergenceWarning) for w in caught),
        "seconds": round(time.perf_counter() - start, 3),
    }


def _nll(
    probabilities: npt.NDArray[np.float64],
    classes: npt.NDArray[np.int64],
    y: npt.NDArray[np.int64],
) -> float:
    """Mean negative log-likelihood of the labels ``y`` (the network's ``test_loss``); a class
    the baseline never saw in training has probability 0, floored at 1e-300 as the network's."""
    column = {int(k): j for j, k in enumerate(classes)}
    p = np.array(
        [probabilities[i, column[int(k)]] if int(k) in column else 0.0 for i, k in enumerate(y)]
    )
    return float(-np.log(np.maximum(p, 1e-300)).mean())
