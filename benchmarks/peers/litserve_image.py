"""LitServe serving an image classifier in a ``tf.function``, JPEG/PNG files as base64.

``python litserve_image.py --port P [--max-batch-size N] [--batch-timeout S] VERSION_DIR``
in LitServe's own virtual environment (``benchmarks/.peers/litserve``). Takes
``{"instances": [{"b64": ...}]}`` (one file per request), batches concurrent requests
with LitServe's own batching (``max_batch_size``, ``batch_timeout``), answers
``{"predictions": [[...]]}``. Ready when ``GET /health`` says 200. No
``from __future__ import annotations``: LitServe reads ``decode_request``'s annotation.
"""

import argparse
import base64
from pathlib import Path
from typing import Any

import litserve as ls
import numpy as np


class ImageAPI(ls.LitAPI):  # type: ignore[misc]
    """decode (base64 + Pillow) -> batch -> tf.function -> unbatch -> encode."""

    def __init__(self, version_dir: Path, max_batch_size: int, batch_timeout: float) -> None:
        super().__init__(max_batch_size=max_batch_size, batch_timeout=batch_timeout)
        self.version_dir = version_dir

    def setup(self, device: str) -> None:
        """Load the model and trace it once (in LitServe's inference worker)."""
        from _images import ImageModel

        self.model = ImageModel(self.version_dir)

    def decode_request(self, request: dict[str, Any]) -> Any:
        """``{"instances": [{"b64": ...}]}`` -> one (height, width, channels) float32 image."""
        return self.model.pixels(base64.b64decode(request["instances"][0]["b64"]))

    def batch(self, inputs: Any) -> Any:
        """The decoded images of concurrent requests as one batch."""
        return np.stack(inputs)

    def predict(self, x: Any) -> Any:
        """Probabilities, a row per image."""
        return self.model.probabilities(x)

    def unbatch(self, output: Any) -> Any:
        """One row per request."""
        return list(output)

    def encode_response(self, output: Any) -> dict[str, Any]:
        """``{"predictions": [[...]]}``."""
        return {"predictions": [output.tolist()]}


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--max-batch-size", type=int, default=64)
    parser.add_argument("--batch-timeout", type=float, default=0.002)
    parser.add_argument("version_dir", type=Path)
    args = parser.parse_args()
    api = ImageAPI(args.version_dir, args.max_batch_size, args.batch_timeout)
    server = ls.LitServer(api, accelerator="cpu", workers_per_device=1)
    server.run(port=args.port, host="127.0.0.1", generate_client_file=False)
