"""FastAPI serving the Keras model wrapped in a ``tf.function`` (a traced graph, no ``predict``).

The usual next step after the naive server: trace the model once for
``(None, input_dim)`` float32 batches and call the graph per request.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import keras
import numpy as np
import tensorflow as tf
from _common import parse_args, read_metadata, serve
from fastapi import FastAPI
from pydantic import BaseModel


class PredictRequest(BaseModel):
    """The request body every server here accepts."""

    instances: list[list[float]]


def make_app(version_dir: Path) -> FastAPI:
    """The application; the graph is traced and run once before the server starts."""
    input_dim = int(read_metadata(version_dir)["input_dim"])
    model = keras.saving.load_model(version_dir / "model.keras")
    infer = tf.function(
        lambda x: model(x, training=False),
        input_signature=[tf.TensorSpec([None, input_dim], tf.float32)],
    )
    infer(np.zeros((1, input_dim), np.float32))
    app = FastAPI()

    @app.post("/predict")
    def predict(body: PredictRequest) -> dict[str, Any]:
        probabilities = infer(np.asarray(body.instances, dtype=np.float32)).numpy()
        return {"predictions": probabilities.tolist()}

    @app.get("/health/ready")
    def ready() -> dict[str, Any]:
        return {"status": "ready"}

    return app


if __name__ == "__main__":
    args = parse_args(__doc__ or "")
    serve(make_app(args.version_dir), args.port)
