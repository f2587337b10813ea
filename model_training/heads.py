"""Read a Keras classifier's head: what its output is, and where its logits are.

The service serves a distribution over classes as the float64 softmax of logits, so
an export must find logits in the user's model. Classifiers come with one of four
heads, told apart from the layers at the end of the model (``--output`` overrides):

=================  =====================================  ==============================
``output``         the model ends in                      the served logits
=================  =====================================  ==============================
``probabilities``  a softmax (``Softmax``, ``Activation``  what enters the softmax (a fused
                   ``('softmax')``, a fused activation),  activation is split off its
                   then any shape-only layers             layer), reshaped the same way
``logits``         a linear layer with K >= 2 outputs     the output itself
                   (``from_logits=True`` training)
``sigmoid``        one sigmoid output p (binary)          ``[0, z]``, z = what enters the
                                                          sigmoid: softmax gives
                                                          ``[1 - p, p]`` exactly
``probabilities``  anything else that outputs a           ``log(p)``: the same distribution
(opaque)           distribution (a subclassed model, an   within float32 round-off
                   op such as ``keras.ops.softmax``)
=================  =====================================  ==============================

K > 1 sigmoid outputs are a multi-label model, which is refused: the service serves
one distribution over classes. The result is a functional ``classifier`` that ends in
a ``Softmax`` of those logits: what the version saves as ``model.keras`` and what
``export.to_tflite`` cuts at its logits, proven to give the user's model's
distribution by ``check_head``.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Literal, get_args

import keras
import numpy as np

Output = Literal["auto", "probabilities", "logits", "sigmoid"]
OUTPUTS: tuple[str, ...] = get_args(Output)
#: Layers that do nothing at inference (or only reshape): looked through after a softmax.
SHAPE_ONLY = (
    keras.layers.Flatten,
    keras.layers.Reshape,
    keras.layers.Dropout,
    keras.layers.GaussianNoise,
    keras.layers.GaussianDropout,
    keras.layers.ActivityRegularization,
    keras.layers.Identity,
)
#: The smallest probability whose log is taken as it is: below it, two float32
#: implementations' exp underflow differently (to a subnormal, or to 0), and any
#: probability under 1e-30 is served as at most 1e-30, far inside the contract's 1e-5.
TINY = 1e-30
#: An opaque output is taken as probabilities when every row sums to 1 this closely.
SUM_TOLERANCE = 1e-4
OVERRIDE = "--output probabilities|logits|sigmoid"


class HeadError(ValueError):
    """The model's output is not one the service can serve; the message says why."""


@dataclass(frozen=True)
class Head:
    """Where a classifier's logits are, and what its own output is."""

    output: Literal["probabilities", "logits", "sigmoid"]
    """What the user's model outputs: a distribution, logits, or one sigmoid probability."""
    classifier: keras.Model
    """A functional model ending in a ``Softmax`` of the logits (the served distribution)."""
    how: str
    """One line: what the export took as logits, and how to override it."""
    gives_logit: bool = False
    """A ``sigmoid`` head whose model outputs the logit z, not the probability p."""


@keras.saving.register_keras_serializable(package="softmax_serving")
class LogProbabilities(keras.layers.Layer):  # type: ignore[misc]
    """``log(max(p, TINY))``: logits of the distribution ``p`` (an opaque model's output)."""

    def call(self, inputs: Any) -> Any:
        return keras.ops.log(keras.ops.maximum(inputs, TINY))


def _activation(layer: Any) -> str:
    """The name of ``layer``'s activation (``Activation`` layers and fused ones), or ''."""
    activation = getattr(layer, "activation", None)
    if isinstance(layer, keras.layers.Softmax):
        return "softmax"
    return str(getattr(activation, "__name__", "")) if activation is not None else ""


def graph(model: keras.Model) -> tuple[Any, Any, dict[str, Any], dict[str, Any]]:
    """The input tensor, the output tensor, and each layer's output and input tensor by name.

    A loaded Sequential model's layers have no symbolic inputs, so its graph is rebuilt
    (on an input of the model's own dtype: token ids stay integers).
    """
    if isinstance(model, keras.Sequential):
        inputs = keras.Input(
            shape=model.input_shape[1:], dtype=model.inputs[0].dtype, name="features"
        )
        outputs: dict[str, Any] = {}
        entering: dict[str, Any] = {}
        x = inputs
        for layer in model.layers:
            entering[layer.name] = x
            x = layer(x)
            outputs[layer.name] = x
        return inputs, x, outputs, entering
    if len(model.inputs) > 1:  # several inputs: the model's own structure (a dict, a list)
        layers = [layer for layer in model.layers if not isinstance(layer, keras.layers.InputLayer)]
        outputs = {layer.name: layer.output for layer in layers}
        entering = {layer.name: layer.input for layer in layers}
        return model.input, model.outputs[0], outputs, entering
    layers = model.layers[1:]
    outputs = {layer.name: layer.output for layer in layers}
    entering = {layer.name: layer.input for layer in layers}
    return model.inputs[0], model.outputs[0], outputs, entering


def functional(model: keras.Model) -> keras.Model:
    """``model`` as a graph of layers: a subclassed model is called on an input of its
    built shape (its inside stays opaque)."""
    if getattr(model, "inputs", None):
        return model
    config = model.get_build_config() or {}
    shape = config.get("input_shape")
    if not isinstance(shape, list | tuple) or len(shape) < 2:
        raise HeadError(
            f"expected a built model (called once, or built with an input shape), received "
            f"{type(model).__name__} with build config {config}"
        )
    inputs = keras.Input(shape=tuple(shape[1:]), name="features")
    return keras.Model(inputs, model(inputs))


def _terminal(model: keras.Model) -> tuple[Any, list[Any]]:
    """The last layer that computes something, and the shape-only layers after it."""
    layers = [layer for layer in model.layers if not isinstance(layer, keras.layers.InputLayer)]
    trailing: list[Any] = []
    while layers and isinstance(layers[-1], SHAPE_ONLY):
        trailing.insert(0, layers.pop())
    if not isinstance(model, keras.Sequential) and layers:
        # A functional model's last layer in the list need not be the output's; walk the graph.
        node_layer = model.outputs[0]._keras_history.operation
        trailing = []
        while isinstance(node_layer, SHAPE_ONLY):
            trailing.insert(0, node_layer)
            node_layer = node_layer.input._keras_history.operation
        return node_layer, trailing
    return (layers[-1] if layers else None), trailing


def _linear_copy(layer: Any, entering: Any) -> Any:
    """What ``layer`` computes before its fused activation, on ``entering`` (same weights)."""
    config = layer.get_config()
    config["activation"] = "linear"
    config["name"] = f"{layer.name}_linear"
    copy = type(layer).from_config(config)
    out = copy(entering)
    copy.set_weights(layer.get_weights())
    return out


def _before_activation(layer: Any, entering: Any) -> Any:
    """The tensor ``layer``'s activation is applied to."""
    if isinstance(layer, keras.layers.Softmax | keras.layers.Activation):
        return entering
    return _linear_copy(layer, entering)


def _classifier(inputs: Any, logits: Any) -> keras.Model:
    return keras.Model(inputs, keras.layers.Softmax(name="probabilities")(logits))


def _reshaped(tensor: Any, trailing: list[Any]) -> Any:
    for layer in trailing:
        tensor = layer(tensor)
    return tensor


def _classes_last(layer: Any, tensor: Any) -> bool:
    """True when a softmax over the last axis of ``tensor`` (every other axis of size 1)
    stays one distribution through reshaping."""
    axis = getattr(layer, "axis", -1)
    dims = list(tensor.shape[1:])
    return axis in (-1, len(dims)) and all(d == 1 for d in dims[:-1])


def _multi_label(units: int, name: str) -> HeadError:
    return HeadError(
        f"the model is multi-label: its last layer {name!r} gives {units} independent sigmoid "
        "outputs. The service serves one distribution over classes (a softmax, logits, or one "
        "binary sigmoid output); export each label as its own binary model, or retrain with "
        "a softmax over the classes"
    )


def read_head(model: keras.Model, output: Output = "auto", probe: Any = None) -> Head:
    """The classifier's head (see the module docstring); ``output`` overrides the guess.

    ``probe``: inputs on which an opaque model's output is checked to be a distribution.
    """
    model = functional(model)
    inputs, out, outputs, entering = graph(model)
    if len(out.shape) < 2 or out.shape[-1] is None:
        raise HeadError(f"expected an output of shape (batch, classes), received {out.shape}")
    last, trailing = _terminal(model)
    units = int(out.shape[-1])
    name = getattr(last, "name", type(model).__name__)
    activation = _activation(last) if last is not None and last.name in entering else ""
    if activation == "softmax" and output in ("auto", "probabilities"):
        if trailing and not _classes_last(last, outputs[name]):
            raise HeadError(
                f"expected the softmax of {name!r} over the classes' axis, received "
                f"{outputs[name].shape} reshaped by {[t.name for t in trailing]}"
            )
        logits = _reshaped(_before_activation(last, entering[name]), trailing)
        return Head(
            "probabilities",
            _classifier(inputs, logits),
            f"took what enters the softmax of {name!r} as the logits",
        )
    if activation == "sigmoid" and output in ("auto", "sigmoid"):
        if units != 1:
            raise _multi_label(units, name)
        z = _reshaped(_before_activation(last, entering[name]), trailing)
        return _binary(inputs, z, f"what enters the sigmoid of {name!r}")
    if output == "sigmoid":
        if units != 1:
            raise HeadError(
                f"expected one output (a logit) for --output sigmoid, received {units} outputs"
            )
        return _binary(
            inputs, out, f"the single output of {name!r} (a logit, --output sigmoid)", True
        )
    if output == "logits" or (output == "auto" and _is_linear(last) and units >= 2):
        if units < 2:
            raise HeadError(
                "expected K >= 2 logits, received 1 output: a binary classifier with one "
                "logit (trained with from_logits=True) exports with --output sigmoid"
            )
        return Head(
            "logits",
            _classifier(inputs, out),
            f"took the {units} outputs of {name!r} as logits (no activation after them); "
            f"override with {OVERRIDE}",
        )
    if units == 1:
        raise HeadError(
            f"expected a classifier head, received one output from {name!r} with activation "
            f"{activation or 'linear'!r}: a binary classifier ends in Dense(1, "
            "activation='sigmoid'); one logit exports with --output sigmoid"
        )
    return _opaque(model, inputs, out, units, output, probe, name)


def _binary(inputs: Any, z: Any, what: str, gives_logit: bool = False) -> Head:
    logits = keras.layers.Concatenate(name="binary_logits")(
        [keras.layers.Rescaling(0.0, name="zero_logit")(z), z]
    )
    return Head(
        "sigmoid",
        _classifier(inputs, logits),
        f"binary: served as classes [1 - p, p], softmax of the logits [0, z], z {what}",
        gives_logit,
    )


def _is_linear(layer: Any) -> bool:
    """True for a layer with an activation attribute that is linear (Dense(K), Conv 1x1, ...)."""
    return (
        layer is not None and hasattr(layer, "activation") and _activation(layer) in ("linear", "")
    )


def _opaque(
    model: keras.Model, inputs: Any, out: Any, units: int, output: str, probe: Any, name: str
) -> Head:
    """A head whose softmax cannot be seen as a layer: its probabilities' logs are the logits."""
    if output != "probabilities":
        values = np.asarray(model(probe, training=False), np.float64) if probe is not None else None
        if values is None or not (
            np.all(values >= 0)
            and np.all(values <= 1)
            and np.all(np.abs(values.sum(axis=-1) - 1) <= SUM_TOLERANCE)
        ):
            raise HeadError(
                f"expected a classifier whose output is a distribution over its {units} classes "
                f"(a softmax), logits (a linear last layer) or one sigmoid output; received an "
                f"output from {name!r} that is none of these. Say what it is with {OVERRIDE}"
            )
    logits = LogProbabilities(name="log_probabilities")(out)
    return Head(
        "probabilities",
        _classifier(inputs, logits),
        f"took the logs of the {units} probabilities {name!r} outputs as the logits (its "
        "softmax is inside, where the export cannot split it off: float32 round-off of the "
        "probabilities, about 1e-7, carries into the served ones)",
    )


def reference(model: keras.Model, head: Head, x: Any) -> np.ndarray:
    """The distribution the user's ``model`` gives on ``x``, in float64, as ``head`` reads it."""
    values = np.asarray(model(x, training=False), dtype=np.float64)
    values = values.reshape(len(values), -1)
    if head.output == "logits":
        z = np.exp(values - values.max(axis=1, keepdims=True))
        return np.asarray(z / z.sum(axis=1, keepdims=True))
    if head.output == "sigmoid":
        p = 0.5 * (1.0 + np.tanh(values / 2.0)) if head.gives_logit else values
        return np.concatenate([1.0 - p, p], axis=1)
    return values
