"""FastAPI serving an image classifier in a ``tf.function``, taking JPEG/PNG files as base64.

The usual way to put a Keras image model behind HTTP: ``{"instances": [{"b64": ...}]}``
(TF Serving's convention) validated by pydantic, each file decoded with Pillow,
converted to the model's channels, resized (bilinear) to its height x width and mapped
to the pixel range in its metadata, then one call of the model traced once for
``(None, height, width, channels)`` float32 batches, in FastAPI's thread pool (a plain
``def`` route). Answers the model's own float32 probabilities as lists.
"""

from __future__ import annotations

import base64
import io
import os
from pathlib import Path
from typing import Any

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import keras
import numpy as np
import tensorflow as tf
from _common import parse_args, read_metadata, serve
from fastapi import FastAPI
from PIL import Image
from pydantic import BaseModel


class ImageFile(BaseModel):
    """One encoded image file."""

    b64: str


class PredictRequest(BaseModel):
    """The request body: image files."""

    instances: list[ImageFile]


def make_app(version_dir: Path) -> FastAPI:
    """The application; the graph is traced and run once before the server starts."""
    spec = read_metadata(version_dir)["input"]
    height, width, channels = (int(d) for d in spec["shape"])
    mode = {1: "L", 3: "RGB", 4: "RGBA"}[channels]
    low, high = spec.get("pixel_range") or (0.0, 255.0)
    model = keras.saving.load_model(version_dir / "model.keras")
    infer = tf.function(
        lambda x: model(x, training=False),
        input_signature=[tf.TensorSpec([None, height, width, channels], tf.float32)],
    )
    infer(np.zeros((1, height, width, channels), np.float32))

    def pixels(b64: str) -> np.ndarray[Any, np.dtype[np.float32]]:
        image = Image.open(io.BytesIO(base64.b64decode(b64))).convert(mode)
        if image.size != (width, height):
            image = image.resize((width, height), Image.Resampling.BILINEAR)
        x = np.asarray(image, dtype=np.float32).reshape(height, width, channels)
        return x * np.float32((high - low) / 255.0) + np.float32(low)

    app = FastAPI()

    @app.post("/predict")
    def predict(body: PredictRequest) -> dict[str, Any]:
        batch = np.stack([pixels(item.b64) for item in body.instances])
        probabilities = infer(batch).numpy()
        return {"predictions": probabilities.tolist()}

    @app.get("/health/ready")
    def ready() -> dict[str, Any]:
        return {"status": "ready"}

    return app


if __name__ == "__main__":
    args = parse_args(__doc__ or "")
    serve(make_app(args.version_dir), args.port)
