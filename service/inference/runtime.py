"""Model runtimes: features in (float32, or int32/int64 token ids), float logits out.

Nothing here knows about HTTP.

``LiteRTRuntime`` runs ``model.tflite`` on the LiteRT interpreter (no TensorFlow);
``KerasRuntime`` loads ``model.keras`` for versions without an export, and needs
TensorFlow. Both stop at the logits: the data plane applies the float64 softmax.
"""

from __future__ import annotations

import threading
from pathlib import Path
from typing import Any, Protocol

import numpy as np
import numpy.typing as npt

from service.errors import ModelLoadError

#: A C-contiguous batch in the model's input dtype (float32, int32 or int64).
Features = npt.NDArray[Any]
Logits = npt.NDArray[np.floating[Any]]


class Runtime(Protocol):
    """What the data plane needs from a model."""

    #: True when a call may take long enough (milliseconds) to belong on a worker thread.
    blocking: bool

    def logits(self, features: Features) -> Logits:
        """Logits for a C-contiguous batch of shape (rows, input_dim) in the input dtype."""
        ...


class LiteRTRuntime:
    """One LiteRT interpreter, guarded by a lock because the interpreter is not thread-safe.

    A call costs a few microseconds, so the data plane runs it inline on the event
    loop; the lock only matters if a caller ever uses a thread.
    """

    blocking = False

    def __init__(
        self, path: Path, input_dim: int, num_classes: int, input_dtype: str = "float32"
    ) -> None:
        from ai_edge_litert.interpreter import Interpreter

        try:
            self._interpreter = Interpreter(model_path=str(path), num_threads=1)
        except (ValueError, RuntimeError) as exc:
            raise ModelLoadError(f"{path.name} is not a valid LiteRT model: {exc}") from exc
        inputs = self._interpreter.get_input_details()
        outputs = self._interpreter.get_output_details()
        if len(inputs) != 1 or len(outputs) != 1:
            raise ModelLoadError(
                f"expected {path.name} with one input and one output, "
                f"received {len(inputs)} inputs and {len(outputs)} outputs"
            )
        in_shape = [int(d) for d in inputs[0]["shape_signature"]]
        out_shape = [int(d) for d in outputs[0]["shape_signature"]]
        if in_shape[1:] != [input_dim] or out_shape[1:] != [num_classes]:
            raise ModelLoadError(
                f"expected {path.name} to map (batch, {input_dim}) to (batch, {num_classes}), "
                f"received {in_shape} -> {out_shape}"
            )
        if np.dtype(inputs[0]["dtype"]).name != input_dtype:
            raise ModelLoadError(
                f"expected a {input_dtype} input in {path.name} (as its metadata says), "
                f"received {np.dtype(inputs[0]['dtype']).name}"
            )
        self._input = int(inputs[0]["index"])
        self._output = int(outputs[0]["index"])
        self._rows = -1
        self._lock = threading.Lock()

    def logits(self, features: Features) -> Logits:
        """Run the interpreter; resizes its input only when the batch size changes."""
        with self._lock:
            rows = features.shape[0]
            if rows != self._rows:
                self._interpreter.resize_tensor_input(self._input, [rows, features.shape[1]])
                self._interpreter.allocate_tensors()
                self._rows = rows
            self._interpreter.set_tensor(self._input, features)
            self._interpreter.invoke()
            result: Logits = self._interpreter.get_tensor(self._output)
            return result


def _is_softmax(activation: object) -> bool:
    return getattr(activation, "__name__", "") == "softmax"


class KerasRuntime:
    """A ``model.keras`` loaded with ``safe_mode=True``, cut at its logits.

    Used only for versions without a LiteRT export; importing TensorFlow costs
    seconds and hundreds of MB, so it happens here and nowhere else.
    """

    blocking = True

    def __init__(
        self, path: Path, input_dim: int, num_classes: int, input_dtype: str = "float32"
    ) -> None:
        try:
            import keras
        except ImportError as exc:
            raise ModelLoadError(
                "this version has only model.keras and TensorFlow is not installed: install "
                "the 'train' extra, or export it with 'python -m model_training export'"
            ) from exc
        try:
            model = keras.saving.load_model(path, compile=False, safe_mode=True)
        except Exception as exc:  # Keras raises many types; all mean "refused".
            raise ModelLoadError(f"{path.name} refused by Keras (safe_mode=True): {exc}") from exc
        self._model = self._cut_at_logits(keras, model)
        out_dim = int(self._model.output.shape[-1])
        in_dim = int(self._model.input.shape[-1])
        import tensorflow as tf

        # One traced graph for every batch size: eager calls cost several times more.
        self._call = tf.function(
            lambda x: self._model(x, training=False),
            input_signature=[tf.TensorSpec([None, in_dim], input_dtype)],
        )
        if (in_dim, out_dim) != (input_dim, num_classes):
            raise ModelLoadError(
                f"expected {path.name} to map {input_dim} features to {num_classes} classes, "
                f"received {in_dim} -> {out_dim}"
            )
        self._lock = threading.Lock()

    @staticmethod
    def _cut_at_logits(keras: Any, model: Any) -> Any:
        """The same cut as the trainer's export: at a 'logits' layer, or before the softmax."""
        if isinstance(model, keras.Sequential):  # a loaded Sequential has no symbolic graph
            inputs = keras.Input(shape=model.input_shape[1:])
            outputs: dict[str, Any] = {}
            x = before_last = inputs
            for layer in model.layers:
                before_last, x = x, layer(x)
                outputs[layer.name] = x
        else:
            inputs, before_last = model.inputs[0], model.layers[-1].input
            outputs = {layer.name: layer.output for layer in model.layers[1:]}
        if "logits" in outputs:
            return keras.Model(inputs, outputs["logits"])
        last = model.layers[-1]
        if isinstance(last, keras.layers.Softmax) or (
            isinstance(last, keras.layers.Activation) and _is_softmax(last.activation)
        ):
            return keras.Model(inputs, before_last)
        if isinstance(last, keras.layers.Dense) and _is_softmax(last.activation):
            linear = keras.layers.Dense(last.units, use_bias=last.use_bias)
            logits = linear(before_last)
            linear.set_weights(last.get_weights())
            return keras.Model(inputs, logits)
        raise ModelLoadError(
            "expected a classifier ending in softmax or with a 'logits' layer, received "
            f"{[layer.name for layer in model.layers]}"
        )

    def logits(self, features: Features) -> Logits:
        """Run the Keras model directly (``model.predict`` is for offline batches)."""
        with self._lock:
            return np.asarray(self._call(features))
