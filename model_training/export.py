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
from typing import Any

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


def _graph(model: keras.Model) -> tuple[Any, dict[str, Any], Any]:
    """The input tensor, each layer's output tensor by name, and the tensor entering the last layer.

    A loaded Sequential model's layers have no symbolic inputs, so its graph is rebuilt.
    """
    if isinstance(model, keras.Sequential):
        inputs = keras.Input(shape=model.input_shape[1:], name="features")
        outputs: dict[str, Any] = {}
        x = before_last = inputs
        for layer in model.layers:
            before_last, x = x, layer(x)
            outputs[layer.name] = x
        return inputs, outputs, before_last
    outputs = {layer.name: layer.output for layer in model.layers[1:]}
    return model.inputs[0], outputs, model.layers[-1].input


def logits_model(model: keras.Model) -> keras.Model:
    """A model sharing ``model``'s weights whose output is the logits before its final softmax."""
    inputs, outputs, before_last = _graph(model)
    if LOGITS_LAYER in outputs:
        return keras.Model(inputs, outputs[LOGITS_LAYER])
    last = model.layers[-1]
    if isinstance(last, keras.layers.Softmax) or (
        isinstance(last, keras.layers.Activation) and _is_softmax(last.activation)
    ):
        return keras.Model(inputs, before_last)
    if isinstance(last, keras.layers.Dense) and _is_softmax(last.activation):
        linear = keras.layers.Dense(last.units, use_bias=last.use_bias, name=LOGITS_LAYER)
        logits = linear(before_last)
        linear.set_weights(last.get_weights())
        return keras.Model(inputs, logits)
    raise ExportError(
        "expected a classifier whose last layer applies softmax (a Softmax or "
        "Activation('softmax') layer, or Dense(..., activation='softmax')) or that has a "
        f"layer named {LOGITS_LAYER!r}. Received: layers {[layer.name for layer in model.layers]}"
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
    if len(model.inputs) != 1 or len(model.inputs[0].shape) != 2:
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
    interpreter.set_tensor(inp["index"], probe.astype(inp["dtype"]))
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
