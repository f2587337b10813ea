"""A Keras model of several named inputs, split where LiteRT can start.

The Keras guides' structured-data classifier takes one ``keras.Input`` per column, as
a dict (``keras.Model({"age": age, "city": city}, out)``) or a list (an image and a
table row). Each input keeps its name: a dict's key, else the input's own name. A
string input must go into one ``StringLookup`` (or ``TextVectorization``) and nowhere
else: LiteRT cannot run string ops, so the lookup is split off (described with
``text.describe_text_layer``, run by the service) and ``model.tflite`` takes what it
outputs. Numeric preprocessing (``Normalization``, ``Rescaling``, ...) stays inside the
network. An ``IntegerLookup`` is refused: LiteRT's built-in ops have no hash table.
"""

from __future__ import annotations

import warnings
from dataclasses import dataclass
from typing import Any

import keras
import numpy as np

from model_training.artifact import InputSpec
from model_training.inputs import InputError, describe_tensor, guess_kind
from model_training.text import TextLayerError, describe_text_layer


def is_named_model(model: keras.Model) -> bool:
    """True when ``model`` takes several inputs."""
    return len(getattr(model, "inputs", None) or []) > 1


def input_names(model: keras.Model) -> list[str]:
    """Each input's name, in ``model.inputs`` order: a dict's keys, else the inputs' names."""
    struct = model.input
    if isinstance(struct, dict):
        by_tensor = {id(tensor): key for key, tensor in struct.items()}
        names = [str(by_tensor[id(tensor)]) for tensor in model.inputs]
    else:
        names = [str(tensor.name) for tensor in model.inputs]
    if len(set(names)) != len(names):
        raise InputError(f"expected inputs of distinct names, received {names}")
    return names


@dataclass(frozen=True)
class NamedSplit:
    """A model of several inputs, split after its string lookups."""

    network: keras.Model
    """What LiteRT runs: a dict of the inputs by name (a lookup's output for a string input)."""
    description: dict[str, Any]
    """``metadata.json``'s ``input`` (kind ``named``)."""
    lookups: dict[str, dict[str, Any]]
    """The string inputs' lookups, by input name (``lookups.json``)."""
    model: keras.Model
    """The user's model."""
    names: list[str]

    def join(self, classifier: keras.Model) -> keras.Model:
        """The whole classifier again, taking what the user's model takes: the lookups,
        then ``classifier`` (``network`` read for its logits)."""
        given = dict(zip(self.names, self.model.inputs, strict=True))
        entering = {}
        for name, tensor in given.items():
            layer = _lookup_of(self.model, tensor, name) if name in self.lookups else None
            entering[name] = tensor if layer is None else layer(tensor)
        struct = self.model.input
        inputs = struct if isinstance(struct, dict) else list(self.model.inputs)
        return keras.Model(inputs, classifier(entering))

    def raw_inputs(self, batch: np.ndarray, seed: int = 0) -> dict[str, np.ndarray]:
        """What the user's model takes for a structured probe batch: its numbers, and for
        a string input values from the lookup's vocabulary and one never seen."""
        rng = np.random.default_rng(seed)
        raw = {}
        for name in self.names:
            if name in self.lookups:
                words = [*self.lookups[name]["vocabulary"], "never seen in training"]
                raw[name] = np.asarray(rng.choice(words, size=(len(batch), 1)), dtype=object)
            else:
                raw[name] = np.ascontiguousarray(batch[name])
        return raw

    def keras_inputs(self, batch: np.ndarray) -> dict[str, np.ndarray]:
        """A structured batch (``InputSpec.probe``) as the network's dict of arrays."""
        return {name: np.ascontiguousarray(batch[name]) for name in self.names}


def _readers(model: keras.Model, tensor: Any) -> list[Any]:
    return [
        layer
        for layer in model.layers
        if not isinstance(layer, keras.layers.InputLayer)
        and any(node_input is tensor for node_input in keras.tree.flatten(layer.input))
    ]


def _lookup_of(model: keras.Model, tensor: Any, name: str) -> Any:
    readers = _readers(model, tensor)
    if len(readers) != 1 or not isinstance(
        readers[0], keras.layers.StringLookup | keras.layers.TextVectorization
    ):
        raise TextLayerError(
            f"expected string input {name!r} to go into one StringLookup or TextVectorization "
            f"layer and nowhere else, received it going into {[r.name for r in readers]}"
        )
    return readers[0]


def _refuse_integer_lookups(model: keras.Model) -> None:
    for layer in model.layers:
        if isinstance(layer, keras.layers.IntegerLookup):
            raise InputError(
                f"cannot serve IntegerLookup {layer.name!r}: LiteRT has no hash table among its "
                "built-in ops; feed the integer categories as strings into a StringLookup, or "
                "one-hot encode them before the model"
            )
        if isinstance(layer, keras.Model):
            _refuse_integer_lookups(layer)


def _pixel_range(reader: Any) -> tuple[float, float]:
    """As ``inputs.guess_pixel_range``, from the layer an image input goes into."""
    if isinstance(reader, keras.layers.Rescaling):
        scale = np.asarray(reader.scale, dtype=np.float64)
        offset = np.asarray(reader.offset, dtype=np.float64)
        ends = np.abs(np.concatenate([np.ravel(offset), np.ravel(255.0 * scale + offset)]))
        if float(ends.max()) <= 2.0:
            return (0.0, 255.0)
    return (0.0, 1.0)


def split_named(model: keras.Model) -> NamedSplit:
    """``model`` split after the lookups of its string inputs (``NamedSplit``)."""
    _refuse_integer_lookups(model)
    names = input_names(model)
    entering: dict[str, Any] = {}
    fresh: dict[str, Any] = {}
    specs: list[dict[str, Any]] = []
    lookups: dict[str, dict[str, Any]] = {}
    for name, tensor in zip(names, model.inputs, strict=True):
        dims, dtype = list(tensor.shape[1:]), str(tensor.dtype)
        if dtype == "string":
            layer = _lookup_of(model, tensor, name)
            if tuple(dims) != (1,):
                raise TextLayerError(
                    f"expected string input {name!r} of shape (1,) (keras.Input((1,), "
                    f"dtype='string')), received {tuple(dims)}"
                )
            lookups[name] = describe_text_layer(layer)
            given = np.asarray(layer(np.array([["a"]], dtype=object)))
            out_dims: list[int | None] = list(given.shape[1:])
            if lookups[name].get("output_mode") == "int" and any(d is None for d in out_dims):
                raise TextLayerError(f"expected a fixed output length for string input {name!r}")
            spec = describe_tensor(out_dims, str(given.dtype), "text", None)
            integer = str(given.dtype).startswith("int")
            if integer:
                spec["id_range"] = [0, int(layer.vocabulary_size()) - 1]
            entering[name] = layer.output
            fresh[name] = keras.Input(shape=tuple(out_dims), dtype=str(given.dtype), name=name)
        else:
            readers = _readers(model, tensor)
            first = readers[0] if len(readers) == 1 else None
            kind = guess_kind([d or 0 for d in dims], dtype, first)
            pixels = _pixel_range(first) if kind == "image" else None
            largest = (
                int(first.input_dim) - 1 if isinstance(first, keras.layers.Embedding) else None
            )
            spec = describe_tensor(dims, dtype, kind, pixels, largest)
            if spec["shape"][0] == -1:
                raise InputError(
                    f"expected input {name!r} of fixed shape (a model of several inputs takes "
                    f"each at a fixed size), received {(None, *dims)}"
                )
            entering[name] = tensor
            fresh[name] = keras.Input(shape=tuple(dims), dtype=dtype, name=name)
        specs.append({"name": name, **spec})
    with warnings.catch_warnings():  # a lookup's output, keyed by its input's name: as meant
        warnings.filterwarnings("ignore", "When providing `inputs` as a dict")
        rest = keras.Model(entering, model.outputs[0])
    network = keras.models.clone_model(rest, input_tensors=fresh)
    # Layer by layer, by name: the clone may list its layers in another order, and two
    # Normalization layers' weights have the same shapes.
    originals = {layer.name: layer for layer in rest.layers}
    for layer in network.layers:
        if layer.weights:
            layer.set_weights(originals[layer.name].get_weights())
            if hasattr(layer, "finalize_state"):  # Normalization: mean and variance from them
                layer.finalize_state()
    total = sum(InputSpec.model_validate(spec).size for spec in specs)
    description = {"shape": [total], "dtype": "float32", "kind": "named", "inputs": specs}
    InputSpec.model_validate(description)
    return NamedSplit(network, description, lookups, model, names)
