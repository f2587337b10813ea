"""BentoML service for an image classifier in a ``tf.function``: ``POST /predict``.

``bentoml serve bentoml_image:Images --port P`` from this directory, in BentoML's own
virtual environment (``benchmarks/.peers/bentoml``), with the version directory in
``BENCH_VERSION_DIR``. Takes ``{"instances": [{"b64": ...}]}``; the API is batchable,
so BentoML's adaptive batching joins concurrent requests into one call (at most
``BENCH_MAX_BATCH_SIZE`` images) and answers each request its own rows. Ready when
``GET /readyz`` says 200.
"""

from __future__ import annotations

import base64
import os
from pathlib import Path

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import bentoml
import numpy as np

MAX_BATCH_SIZE = int(os.environ.get("BENCH_MAX_BATCH_SIZE", "64"))


@bentoml.service(workers=1)
class Images:
    """One worker holding the traced model."""

    def __init__(self) -> None:
        from _images import ImageModel

        self.model = ImageModel(Path(os.environ["BENCH_VERSION_DIR"]))

    # max_latency_ms: BentoML answers 503 to requests it expects to miss this; set high so
    # that it batches and never sheds load (the other servers do not either).
    @bentoml.api(batchable=True, max_batch_size=MAX_BATCH_SIZE, max_latency_ms=10_000)
    def predict(self, instances: list[dict[str, str]]) -> list[list[float]]:
        """``{"instances": [{"b64": ...}, ...]}`` -> ``[[...], ...]``, a row per image."""
        batch = np.stack([self.model.pixels(base64.b64decode(item["b64"])) for item in instances])
        rows: list[list[float]] = self.model.probabilities(batch).tolist()
        return rows
