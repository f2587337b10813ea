"""Turn a Keras softmax classifier into the serving export: the network up to its logits, as LiteRT.

The service applies the softmax itself in float64, so the export must end at the
logits. A model built here has a layer named ``logits``; a model trained elsewhere
is accepted when its last layer is a softmax (a ``Softmax``/``Activation`` layer, or
a ``Dense`` layer with softmax activation), and refused otherwise.
"""

from __future__ import annotations

import contextlib
import io
from pathlib import Path

import keras
import numpy as np
import tensorflow as tf
from ai_edge_litert.interpreter import Interpreter

from model_training.model import LOGITS_LAYER

#: The export must reproduce the Keras model to this absolute tolerance on probabilities.
TOLERANCE = 1e-5


class ExportError(ValueError):
    """The model cannot be exported for serving; the message says why."""


def _is_softmax(activation: object) -> bool:
    return getattr(activation, "__name__", "") == "softmax"


def logits_model(model: keras.Model) -> keras.Model:
    """A model sharing ``model``'s weights whose output is the logits before its final softmax."""
    names = [layer.name for layer in model.layers]
    if LOGITS_LAYER in names:
        return keras.Model(model.inputs, model.get_layer(LOGITS_LAYER).output)
    last = model.layers[-1]
    if isinstance(last, keras.layers.Softmax) or (
        isinstance(last, keras.layers.Activation) and _is_softmax(last.activation)
    ):
        return keras.Model(model.inputs, last.input)
    if isinstance(last, keras.layers.Dense) and _is_softmax(last.activation):
        linear = keras.layers.Dense(last.units, use_bias=last.use_bias, name=LOGITS_LAYER)
        outputs = linear(last.input)
        linear.set_weights(last.get_weights())
        return keras.Model(model.inputs, outputs)
    raise ExportError(
        "expected a classifier whose last layer applies softmax (a Softmax or "
        "Activation('softmax') layer, or Dense(..., activation='softmax')) or that has a "
        f"layer named {LOGITS_LAYER!r}. Received: layers {names}"
    )


def _softmax64(logits: np.ndarray) -> np.ndarray:
    z = logits.astype(np.float64)
    z = np.exp(z - z.max(axis=1, keepdims=True))
    return np.asarray(z / z.sum(axis=1, keepdims=True))


def to_tflite(model: keras.Model, probe: np.ndarray) -> bytes:
    """Convert the logits part of ``model`` to LiteRT and prove it gives the model's probabilities.

    The check runs the export in the same interpreter the service uses, on ``probe``,
    and compares softmax(export logits) with the Keras model's own output.
    """
    if len(model.inputs) != 1 or len(model.input.shape) != 2:
        raise ExportError(
            "expected a model with one input of shape (batch, features). "
            f"Received: inputs {[tuple(t.shape) for t in model.inputs]}"
        )
    head = logits_model(model)
    with contextlib.redirect_stdout(io.StringIO()):  # the converter prints its SavedModel trace
        content = bytes(tf.lite.TFLiteConverter.from_keras_model(head).convert())

    interpreter = Interpreter(model_content=content, num_threads=1)
    (inp,) = interpreter.get_input_details()
    (out,) = interpreter.get_output_details()
    interpreter.resize_tensor_input(inp["index"], list(probe.shape))
    interpreter.allocate_tensors()
    interpreter.set_tensor(inp["index"], probe.astype(np.float32))
    interpreter.invoke()
    exported = _softmax64(interpreter.get_tensor(out["index"]))
    expected = np.asarray(model(probe, training=False), dtype=np.float64)
    if exported.shape != expected.shape:
        raise ExportError(
            f"expected the export to give {expected.shape[1]} classes, received {exported.shape[1]}"
        )
    error = float(np.abs(exported - expected).max())
    if not error <= TOLERANCE:
        raise ExportError(
            f"expected softmax(exported logits) within {TOLERANCE} of the Keras model's "
            f"probabilities, received a largest difference of {error:.3g}; is the last layer's "
            "softmax the only thing after the logits?"
        )
    return content


def load_keras(path: Path) -> keras.Model:
    """Load a user's ``.keras`` file the safe way (no arbitrary code, no optimizer state)."""
    if path.suffix != ".keras":
        raise ExportError(f"expected a Keras v3 '.keras' file. Received: filepath={path}")
    try:
        return keras.saving.load_model(path, compile=False, safe_mode=True)
    except Exception as exc:  # Keras raises many types; all mean "not loadable".
        raise ExportError(f"cannot load {path} with safe_mode=True: {exc}") from exc
