"""BentoML service for the Keras model traced in a ``tf.function``: ``POST /predict``.

``bentoml serve bentoml_service:Blobs --port P`` from this directory, in BentoML's
own virtual environment (``benchmarks/.peers/bentoml``), with the version directory
in ``BENCH_VERSION_DIR``. Ready when ``GET /readyz`` says 200.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import bentoml
import numpy as np


@bentoml.service(workers=1)
class Blobs:
    """One worker holding the traced model."""

    def __init__(self) -> None:
        import keras
        import tensorflow as tf

        model = keras.saving.load_model(Path(os.environ["BENCH_VERSION_DIR"]) / "model.keras")
        dim = int(model.input_shape[-1])
        self.infer = tf.function(
            lambda x: model(x, training=False),
            input_signature=[tf.TensorSpec([None, dim], tf.float32)],
        )
        self.infer(np.zeros((1, dim), np.float32))

    @bentoml.api
    def predict(self, instances: list[list[float]]) -> dict[str, Any]:
        """``{"instances": [[...], ...]}`` -> ``{"predictions": [[...], ...]}``."""
        probabilities = self.infer(np.asarray(instances, dtype=np.float32)).numpy()
        return {"predictions": probabilities.tolist()}
