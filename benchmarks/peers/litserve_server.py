"""LitServe serving the Keras model traced in a ``tf.function``: ``POST /predict``.

``python litserve_server.py --port P VERSION_DIR``, in LitServe's own virtual
environment (``benchmarks/.peers/litserve``). Ready when ``GET /health`` says 200.
No ``from __future__ import annotations`` here: LitServe reads ``decode_request``'s
annotation at run time to build the request body.
"""

import argparse
import os
from pathlib import Path
from typing import Any

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import litserve as ls
import numpy as np


class KerasAPI(ls.LitAPI):  # type: ignore[misc]
    """decode -> tf.function -> encode, LitServe's idiom."""

    def __init__(self, version_dir: Path) -> None:
        super().__init__()
        self.version_dir = version_dir

    def setup(self, device: str) -> None:
        """Load the model and trace it once (in LitServe's inference worker)."""
        import keras
        import tensorflow as tf

        model = keras.saving.load_model(self.version_dir / "model.keras")
        dim = int(model.input_shape[-1])
        self.infer = tf.function(
            lambda x: model(x, training=False),
            input_signature=[tf.TensorSpec([None, dim], tf.float32)],
        )
        self.infer(np.zeros((1, dim), np.float32))

    def decode_request(self, request: dict[str, Any]) -> Any:
        """``{"instances": [[...], ...]}`` -> float32 array."""
        return np.asarray(request["instances"], dtype=np.float32)

    def predict(self, x: Any) -> Any:
        """Probabilities."""
        return self.infer(x).numpy()

    def encode_response(self, output: Any) -> dict[str, Any]:
        """``{"predictions": [[...], ...]}``."""
        return {"predictions": output.tolist()}


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("version_dir", type=Path)
    args = parser.parse_args()
    server = ls.LitServer(KerasAPI(args.version_dir), accelerator="cpu", workers_per_device=1)
    server.run(port=args.port, host="127.0.0.1", generate_client_file=False)
