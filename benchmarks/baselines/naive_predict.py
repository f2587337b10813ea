"""The naive server of the tutorials: FastAPI, ``keras.saving.load_model`` and ``model.predict``.

One ``model.predict`` call per request, in FastAPI's thread pool (a plain ``def``
route), returning the model's own float32 probabilities as lists.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import keras
import numpy as np
from _common import parse_args, serve
from fastapi import FastAPI
from pydantic import BaseModel


class PredictRequest(BaseModel):
    """The request body every server here accepts."""

    instances: list[list[float]]


def make_app(version_dir: Path) -> FastAPI:
    """The application, with the model loaded at import like the tutorials do."""
    model = keras.saving.load_model(version_dir / "model.keras")
    app = FastAPI()

    @app.post("/predict")
    def predict(body: PredictRequest) -> dict[str, Any]:
        probabilities = model.predict(np.array(body.instances), verbose=0)
        return {"predictions": probabilities.tolist()}

    @app.get("/health/ready")
    def ready() -> dict[str, Any]:
        return {"status": "ready"}

    return app


if __name__ == "__main__":
    args = parse_args(__doc__ or "")
    serve(make_app(args.version_dir), args.port)
