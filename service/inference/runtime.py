"""Model runtimes: features in (float32, or int32/int64 token ids), float logits out.

Nothing here knows about HTTP.

``LiteRTRuntime`` runs ``model.tflite`` on the LiteRT interpreter (no TensorFlow);
``KerasRuntime`` loads ``model.keras`` for versions without an export, and needs
TensorFlow. Both stop at the logits: the data plane applies the float64 softmax.
"""

from __future__ import annotations

import math
import threading
from collections.abc import Sequence
from pathlib import Path
from typing import Any, Protocol

import numpy as np
import numpy.typing as npt

from service.errors import ModelLoadError

#: A C-contiguous batch in the model's input dtype (float32, int32 or int64).
Features = npt.NDArray[Any]
Logits = npt.NDArray[np.floating[Any]]

#: Models taking at most this many values per instance run inline on the event loop.
INLINE_VALUES = 4096


class Runtime(Protocol):
    """What the data plane needs from a model."""

    #: True when a call may take long enough (milliseconds) to belong on a worker thread.
    blocking: bool

    def logits(self, features: Features) -> Logits:
        """Logits for a C-contiguous batch of shape (rows, *shape) in the input dtype.

        The result is (rows, classes), or (rows, classes + D) when the model also
        outputs its D out-of-distribution features after the logits.
        """
        ...


class LiteRTRuntime:
    """One LiteRT interpreter, guarded by a lock because the interpreter is not thread-safe.

    A call on a small model costs a few microseconds, so the data plane runs it inline
    on the event loop; the lock matters when a batcher or a thread calls it.
    """

    def __init__(
        self, path: Path, shape: Sequence[int], outputs: int, input_dtype: str = "float32"
    ) -> None:
        from ai_edge_litert.interpreter import Interpreter

        try:
            self._interpreter = Interpreter(model_path=str(path), num_threads=1)
        except (ValueError, RuntimeError) as exc:
            raise ModelLoadError(f"{path.name} is not a valid LiteRT model: {exc}") from exc
        inputs = self._interpreter.get_input_details()
        results = self._interpreter.get_output_details()
        if len(inputs) != 1 or len(results) != 1:
            raise ModelLoadError(
                f"expected {path.name} with one input and one output, "
                f"received {len(inputs)} inputs and {len(results)} outputs"
            )
        in_shape = [int(d) for d in inputs[0]["shape_signature"]]
        out_shape = [int(d) for d in results[0]["shape_signature"]]
        if in_shape[1:] != list(shape) or out_shape[1:] != [outputs]:
            raise ModelLoadError(
                f"expected {path.name} to map (batch, {', '.join(map(str, shape))}) to "
                f"(batch, {outputs}), received {in_shape} -> {out_shape}"
            )
        if np.dtype(inputs[0]["dtype"]).name != input_dtype:
            raise ModelLoadError(
                f"expected a {input_dtype} input in {path.name} (as its metadata says), "
                f"received {np.dtype(inputs[0]['dtype']).name}"
            )
        self._input = int(inputs[0]["index"])
        self._output = int(results[0]["index"])
        self._shape: tuple[int, ...] = ()
        self._lock = threading.Lock()
        #: An export for sequences of any length takes one instance at a time (batch 1).
        self.one_row = bool(shape) and shape[0] == -1 and in_shape[0] == 1
        # A model that computes (a CNN, a recurrent loop: milliseconds) belongs on a worker
        # thread.
        self.blocking = self.one_row or math.prod(shape) > INLINE_VALUES

    def logits(self, features: Features) -> Logits:
        """Run the interpreter; resizes its input only when the batch's shape changes.

        A one-instance export runs each row of ``features`` (an array, or an object array
        of instances of several lengths) at its own length.
        """
        if self.one_row:
            rows = [np.asarray(row)[None] for row in features]
            with self._lock:
                return np.concatenate([self._run(row) for row in rows])
        with self._lock:
            return self._run(features)

    def _run(self, features: Features) -> Logits:
        if features.shape != self._shape:
            self._interpreter.resize_tensor_input(self._input, list(features.shape))
            self._interpreter.allocate_tensors()
            self._shape = features.shape
        self._interpreter.set_tensor(self._input, features)
        self._interpreter.invoke()
        result: Logits = self._interpreter.get_tensor(self._output)
        return result


class NamedLiteRTRuntime:
    """A LiteRT model of several inputs, each set by its name in the model's signature.

    A batch is a numpy structured array, one field per input (each of its own shape and
    dtype), so that it has one length and slices and concatenates like any batch (the
    batcher joins requests unchanged). The converter may order the flatbuffer's input
    tensors as it likes: they are matched by the signature's names, never by position.
    """

    def __init__(self, path: Path, inputs: Sequence[tuple[str, Sequence[int], str]], outputs: int):
        from ai_edge_litert.interpreter import Interpreter

        try:
            self._interpreter = Interpreter(model_path=str(path), num_threads=1)
            signature = self._interpreter.get_signature_runner().get_input_details()
        except (ValueError, RuntimeError) as exc:
            raise ModelLoadError(f"{path.name} is not a valid LiteRT model: {exc}") from exc
        wanted = [name for name, _, _ in inputs]
        if sorted(signature) != sorted(wanted):
            raise ModelLoadError(
                f"expected {path.name} with inputs {sorted(wanted)} (as its metadata says), "
                f"received {sorted(signature)}"
            )
        self._inputs: list[tuple[str, int]] = []
        for name, shape, dtype in inputs:
            detail = signature[name]
            given = [int(d) for d in detail["shape_signature"]]
            if given[1:] != list(shape) or np.dtype(detail["dtype"]).name != dtype:
                raise ModelLoadError(
                    f"expected input {name!r} of {path.name} to take {dtype} (batch, "
                    f"{', '.join(map(str, shape))}), received {np.dtype(detail['dtype']).name} "
                    f"{given}"
                )
            self._inputs.append((name, int(detail["index"])))
        results = self._interpreter.get_output_details()
        out_shape = [int(d) for d in results[0]["shape_signature"]] if len(results) == 1 else []
        if out_shape[1:] != [outputs]:
            raise ModelLoadError(
                f"expected {path.name} to output (batch, {outputs}), received "
                f"{len(results)} outputs {out_shape}"
            )
        self._output = int(results[0]["index"])
        self._rows = -1
        self._lock = threading.Lock()
        self.blocking = sum(math.prod(shape) for _, shape, _ in inputs) > INLINE_VALUES

    def logits(self, features: Features) -> Logits:
        """Run the interpreter on a structured batch; resizes its inputs only when the
        number of rows changes."""
        with self._lock:
            rows = len(features)
            if rows != self._rows:
                for name, index in self._inputs:
                    shape = [rows, *features.dtype[name].shape]
                    self._interpreter.resize_tensor_input(index, shape)
                self._interpreter.allocate_tensors()
                self._rows = rows
            for name, index in self._inputs:
                self._interpreter.set_tensor(index, np.ascontiguousarray(features[name]))
            self._interpreter.invoke()
            result: Logits = self._interpreter.get_tensor(self._output)
            return result


def _is_softmax(activation: object) -> bool:
    return getattr(activation, "__name__", "") == "softmax"


class KerasRuntime:
    """A ``model.keras`` loaded with ``safe_mode=True``, cut at its logits.

    Used for versions without a LiteRT export (and for a bare ``model.keras`` dropped
    into the repository); importing TensorFlow costs seconds and hundreds of MB, so it
    happens here and nowhere else. With ``features=True`` it outputs, after the logits,
    the activations entering the logits layer (the out-of-distribution features), as
    the trainer's LiteRT export does.
    """

    blocking = True

    def __init__(self, path: Path, *, features: bool = False) -> None:
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
        if len(model.inputs) != 1:
            raise ModelLoadError(
                f"expected {path.name} with one input, received {len(model.inputs)}; "
                "the service serves single-input classifiers"
            )
        self.model = model
        head, penultimate = self._cut_at_logits(keras, model)
        # From the rebuilt graph: a loaded Sequential has no symbolic output of its own.
        self.num_classes = int(head.output.shape[-1])
        if features:
            head = keras.Model(
                head.inputs, keras.layers.Concatenate()([head.outputs[0], penultimate])
            )
        self._model = head
        self.outputs = int(head.output.shape[-1])
        self.shape = [int(d) for d in model.inputs[0].shape[1:]]
        self.dtype = str(model.inputs[0].dtype)
        import tensorflow as tf

        # One traced graph for every batch size: eager calls cost several times more.
        self._call = tf.function(
            lambda x: self._model(x, training=False),
            input_signature=[tf.TensorSpec([None, *self.shape], self.dtype)],
        )
        self._lock = threading.Lock()

    @staticmethod
    def _cut_at_logits(keras: Any, model: Any) -> tuple[Any, Any]:
        """The same cut as the trainer's export: at a 'logits' layer, or before the softmax.

        Returns the model up to the logits, and the tensor entering its logits layer.
        """
        if isinstance(model, keras.Sequential):  # a loaded Sequential has no symbolic graph
            inputs = keras.Input(shape=model.input_shape[1:], dtype=model.inputs[0].dtype)
            outputs: dict[str, Any] = {}
            entering: dict[str, Any] = {}
            x = before_last = inputs
            for layer in model.layers:
                before_last, x = x, layer(x)
                outputs[layer.name], entering[layer.name] = x, before_last
        else:
            inputs, before_last = model.inputs[0], model.layers[-1].input
            outputs = {layer.name: layer.output for layer in model.layers[1:]}
            entering = {layer.name: layer.input for layer in model.layers[1:]}
        if "logits" in outputs:
            return keras.Model(inputs, outputs["logits"]), entering["logits"]
        last = model.layers[-1]
        if isinstance(last, keras.layers.Softmax) or (
            isinstance(last, keras.layers.Activation) and _is_softmax(last.activation)
        ):
            return keras.Model(inputs, before_last), before_last
        if isinstance(last, keras.layers.Dense) and _is_softmax(last.activation):
            linear = keras.layers.Dense(last.units, use_bias=last.use_bias)
            logits = linear(before_last)
            linear.set_weights(last.get_weights())
            return keras.Model(inputs, logits), before_last
        raise ModelLoadError(
            "expected a classifier ending in softmax or with a 'logits' layer, received "
            f"{[layer.name for layer in model.layers]}"
        )

    def describe(self) -> dict[str, Any]:
        """What the model takes (``InputSpec``'s fields), read from the model itself.

        For a bare ``model.keras``: an integer input or a first ``Embedding`` takes token
        ids; (height, width, 1/3/4 channels) is an image, taking 0..255 when its first
        layer is a ``Rescaling`` and 0..1 otherwise; two axes a sequence; one a table.
        """
        import keras

        first = next(
            (x for x in self.model.layers if not isinstance(x, keras.layers.InputLayer)), None
        )
        spec: dict[str, Any] = {"shape": self.shape, "dtype": self.dtype, "kind": "table"}
        if isinstance(first, keras.layers.Embedding):
            spec.update(kind="token_ids", id_range=[0, int(first.input_dim) - 1])
        elif len(self.shape) == 3 and self.shape[2] in (1, 3, 4) and self.dtype == "float32":
            rescales = isinstance(first, keras.layers.Rescaling)
            spec.update(kind="image", pixel_range=[0.0, 255.0] if rescales else [0.0, 1.0])
        elif len(self.shape) >= 2:
            spec["kind"] = "sequence"
        return spec

    def logits(self, features: Features) -> Logits:
        """Run the Keras model directly (``model.predict`` is for offline batches)."""
        with self._lock:
            return np.asarray(self._call(features))
