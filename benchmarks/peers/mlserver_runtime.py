"""MLServer custom runtime: the Keras model traced in a ``tf.function``, V2 protocol.

Runs inside MLServer's own virtual environment (``benchmarks/.peers/mlserver``);
``model-settings.json`` points ``parameters.uri`` at the version's ``model.keras``.
"""

from __future__ import annotations

import os

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import keras
import numpy as np
import tensorflow as tf
from mlserver import MLModel
from mlserver.codecs import NumpyCodec
from mlserver.types import InferenceRequest, InferenceResponse


class KerasTFFunction(MLModel):  # type: ignore[misc]
    """Probabilities of the Keras classifier for an FP32 ``[rows, features]`` input."""

    async def load(self) -> bool:
        """Load the model and trace it once."""
        model = keras.saving.load_model(self.settings.parameters.uri)
        dim = int(model.input_shape[-1])
        self._infer = tf.function(
            lambda x: model(x, training=False),
            input_signature=[tf.TensorSpec([None, dim], tf.float32)],
        )
        self._infer(np.zeros((1, dim), np.float32))
        return True

    async def predict(self, payload: InferenceRequest) -> InferenceResponse:
        """One ``probabilities`` output tensor."""
        features = NumpyCodec.decode_input(payload.inputs[0]).astype(np.float32)
        probabilities = self._infer(features).numpy()
        return InferenceResponse(
            model_name=self.name,
            outputs=[NumpyCodec.encode_output("probabilities", probabilities)],
        )


class KerasImageTFFunction(MLModel):  # type: ignore[misc]
    """Probabilities for a BYTES ``[n]`` input of base64 JPEG/PNG files (``content_type``
    ``base64``), with MLServer's adaptive batching (``max_batch_size``/``max_batch_time``
    in ``model-settings.json``); ``parameters.uri`` is the version directory."""

    async def load(self) -> bool:
        """Load the model and trace it once."""
        from pathlib import Path

        from _images import ImageModel

        self._model = ImageModel(Path(self.settings.parameters.uri))
        return True

    async def predict(self, payload: InferenceRequest) -> InferenceResponse:
        """One ``probabilities`` output tensor, a row per file."""
        from mlserver.codecs import Base64Codec

        files = Base64Codec.decode_input(payload.inputs[0])
        batch = np.stack([self._model.pixels(data) for data in files])
        return InferenceResponse(
            model_name=self.name,
            outputs=[NumpyCodec.encode_output("probabilities", self._model.probabilities(batch))],
        )
