"""What the image peers share: the model in a ``tf.function`` and the JPEG -> pixels step.

Imported by each peer inside its own virtual environment (``benchmarks/.peers/<name>``).
Each file is decoded with Pillow, converted to the model's channels, resized
(bilinear) to its height x width when it differs and mapped to the pixel range in the
version's ``metadata.json``: what the service and the tf.function baseline do.
"""

from __future__ import annotations

import io
import json
import os
from pathlib import Path
from typing import Any

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import numpy as np
from PIL import Image


class ImageModel:
    """A version directory's ``model.keras`` traced once for float32 image batches."""

    def __init__(self, version_dir: Path) -> None:
        import keras
        import tensorflow as tf

        spec = json.loads((version_dir / "metadata.json").read_text())["input"]
        self.height, self.width, self.channels = (int(d) for d in spec["shape"])
        self.mode = {1: "L", 3: "RGB", 4: "RGBA"}[self.channels]
        self.low, self.high = (float(v) for v in spec.get("pixel_range") or (0.0, 255.0))
        model = keras.saving.load_model(version_dir / "model.keras")
        self.infer = tf.function(
            lambda x: model(x, training=False),
            input_signature=[
                tf.TensorSpec([None, self.height, self.width, self.channels], tf.float32)
            ],
        )
        self.infer(np.zeros((1, self.height, self.width, self.channels), np.float32))

    def pixels(self, data: bytes) -> Any:
        """One encoded file as the model's (height, width, channels) float32 input."""
        image = Image.open(io.BytesIO(data)).convert(self.mode)
        if image.size != (self.width, self.height):
            image = image.resize((self.width, self.height), Image.Resampling.BILINEAR)
        x = np.asarray(image, dtype=np.float32).reshape(self.height, self.width, self.channels)
        return x * np.float32((self.high - self.low) / 255.0) + np.float32(self.low)

    def probabilities(self, batch: Any) -> Any:
        """(n, classes) float32 probabilities for a (n, height, width, channels) batch."""
        return self.infer(np.ascontiguousarray(batch, dtype=np.float32)).numpy()
