"""A Keras string preprocessing layer, described for the service to run without TensorFlow.

LiteRT cannot run string ops, so the export of a raw-text model leaves its
``TextVectorization`` (or a ``StringLookup`` on a string input) to the service, which
reproduces it exactly from the dict ``describe_text_layer`` returns
(``service/inference/text.py`` reads it; that dict is all the two packages share).
A configuration the service cannot reproduce exactly is refused here with a
``TextLayerError`` naming the layer and the setting: a custom ``standardize`` or
``split`` callable, ragged or sparse output, ``invert=True``, a salted OOV hash, an
encoding other than UTF-8, ``one_hot`` text vectorization, or a layer with no
vocabulary yet.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import keras
import numpy as np

STANDARDIZE = (None, "lower_and_strip_punctuation", "lower", "strip_punctuation")
SPLIT = (None, "whitespace", "character")
TEXT_OUTPUT_MODES = ("int", "multi_hot", "count", "tf_idf")
LOOKUP_OUTPUT_MODES = ("int", "one_hot", "multi_hot", "count", "tf_idf")


class TextLayerError(ValueError):
    """A string preprocessing layer the service cannot reproduce exactly."""


def describe_text_layer(layer: keras.layers.Layer) -> dict[str, Any]:
    """The JSON-ready description of a built ``TextVectorization`` or ``StringLookup``."""
    if isinstance(layer, keras.layers.TextVectorization):
        return _text_vectorization(layer)
    if isinstance(layer, keras.layers.StringLookup):
        return _string_lookup(layer)
    raise TextLayerError(
        f"cannot serve layer {layer.name!r} without TensorFlow: expected a TextVectorization "
        f"or StringLookup layer. Received: {type(layer).__name__}"
    )


def _refuse(layer: keras.layers.Layer, setting: str, value: Any, fix: str) -> TextLayerError:
    if isinstance(value, str | int | bool | type(None)):
        shown = repr(value)
    else:  # a callable: its name, not its repr (which holds an address)
        shown = f"<{type(value).__name__} {getattr(value, '__qualname__', '?')}>"
    return TextLayerError(
        f"cannot serve {type(layer).__name__} {layer.name!r} without TensorFlow: {fix}. "
        f"Received: {setting}={shown}"
    )


def _text_vectorization(layer: keras.layers.TextVectorization) -> dict[str, Any]:
    config = layer.get_config()
    standardize, split = config["standardize"], config["split"]
    if standardize not in STANDARDIZE:
        raise _refuse(
            layer,
            "standardize",
            standardize,
            "expected standardize None, 'lower_and_strip_punctuation', 'lower' or "
            "'strip_punctuation' (a custom callable runs TensorFlow ops)",
        )
    if split not in SPLIT:
        raise _refuse(
            layer,
            "split",
            split,
            "expected split None, 'whitespace' or 'character' (a custom callable runs "
            "TensorFlow ops)",
        )
    if config["ragged"]:
        raise _refuse(layer, "ragged", True, "expected ragged=False (a dense output)")
    if config["output_mode"] not in TEXT_OUTPUT_MODES:
        raise _refuse(
            layer,
            "output_mode",
            config["output_mode"],
            "expected output_mode 'int', 'multi_hot', 'count' or 'tf_idf'",
        )
    ngrams = config["ngrams"]
    if isinstance(ngrams, int):
        ngrams = list(range(1, ngrams + 1))
    elif ngrams is not None:
        ngrams = [int(width) for width in ngrams]
    if ngrams is not None and (not ngrams or min(ngrams) < 1):
        raise _refuse(layer, "ngrams", config["ngrams"], "expected n-gram widths of 1 or more")
    return {
        "layer": "TextVectorization",
        "standardize": standardize,
        "split": split,
        "ngrams": ngrams,
        "output_mode": config["output_mode"],
        "output_sequence_length": config["output_sequence_length"],
        **_lookup(layer, config, token_start=1 + (config["output_mode"] == "int")),
    }


def _string_lookup(layer: keras.layers.StringLookup) -> dict[str, Any]:
    config = layer.get_config()
    if config["invert"]:
        raise _refuse(layer, "invert", True, "expected invert=False (strings in, indices out)")
    if config["output_mode"] not in LOOKUP_OUTPUT_MODES:
        raise _refuse(
            layer,
            "output_mode",
            config["output_mode"],
            "expected output_mode 'int', 'one_hot', 'multi_hot', 'count' or 'tf_idf'",
        )
    if config.get("salt") is not None:
        raise _refuse(
            layer,
            "salt",
            str(config["salt"]),
            "expected salt=None (a salted OOV hash is SipHash, which is not reproduced)",
        )
    mask = config["mask_token"]
    start = (1 if mask is not None and config["output_mode"] == "int" else 0) + int(
        config["num_oov_indices"]
    )
    return {
        "layer": "StringLookup",
        "mask_token": mask,
        "oov_token": config["oov_token"],
        "num_oov_indices": int(config["num_oov_indices"]),
        "output_mode": config["output_mode"],
        **_lookup(layer, config, token_start=start),
    }


def _lookup(layer: keras.layers.Layer, config: dict[str, Any], token_start: int) -> dict[str, Any]:
    """What every string lookup records: vocabulary, sizes, IDF weights."""
    if config.get("sparse"):
        raise _refuse(layer, "sparse", True, "expected sparse=False (a dense output)")
    if str(config.get("encoding", "utf-8")).lower().replace("_", "-") not in ("utf-8", "utf8"):
        raise _refuse(layer, "encoding", config["encoding"], "expected encoding='utf-8'")
    vocabulary = [str(token) for token in layer.get_vocabulary()]
    if len(vocabulary) <= token_start:
        raise _refuse(
            layer,
            "vocabulary",
            None,
            "expected a vocabulary: adapt the layer or pass vocabulary=...",
        )
    idf_weights = None
    if config["output_mode"] == "tf_idf":
        store: dict[str, Any] = {}
        layer.save_own_variables(store)
        weights = np.asarray(store["idf_weights"], dtype=np.float32)
        idf_weights = [float(w) for w in weights]
    return {
        "vocabulary": vocabulary,
        "vocabulary_size": int(layer.vocabulary_size()),
        "max_tokens": config["max_tokens"],
        "pad_to_max_tokens": bool(config["pad_to_max_tokens"]),
        "idf_weights": idf_weights,
    }


def is_text_model(model: keras.Model) -> bool:
    """True when ``model`` takes strings (its one input is a string tensor)."""
    return len(model.inputs) == 1 and str(model.inputs[0].dtype) == "string"


@dataclass(frozen=True)
class TextSplit:
    """A raw-text model split where LiteRT can start."""

    network: keras.Model
    """The rest of the model, taking what the string layer outputs."""
    description: dict[str, Any]
    """The string layer, as the service reproduces it (``text.json``)."""
    largest_index: int | None
    """The largest index the string layer gives (``None``: it counts, in floats)."""
    inputs: Any
    """The model's string input tensor."""
    preprocessed: Any
    """The string layer's output tensor, on which ``network`` is called."""

    def join(self, classifier: keras.Model) -> keras.Model:
        """The whole classifier again, taking strings: the string layer, then ``classifier``
        (``network`` read for its logits)."""
        preprocessed = self.preprocessed
        wanted = tuple(classifier.inputs[0].shape[1:])
        if tuple(preprocessed.shape[1:]) != wanted:  # Keras's symbolic shape, (None, 1, V)
            preprocessed = keras.layers.Reshape(wanted, name="preprocessed_shape")(preprocessed)
        return keras.Model(self.inputs, classifier(preprocessed))


def split_text(model: keras.Model) -> TextSplit:
    """``model`` split after its string layer (``TextSplit``).

    The string input must go into one ``TextVectorization`` or ``StringLookup`` and
    nowhere else, with the shape the guides give it, ``keras.Input((1,), dtype="string")``.
    """
    from model_training.heads import graph

    inputs, out, outputs, entering = graph(model)
    readers = [
        layer for layer in model.layers if layer.name in entering and entering[layer.name] is inputs
    ]
    if len(readers) != 1:
        raise TextLayerError(
            "expected the string input to go into one TextVectorization or StringLookup layer "
            f"and nowhere else, received it going into {[layer.name for layer in readers]}"
        )
    (layer,) = readers
    if tuple(inputs.shape[1:]) != (1,):
        raise TextLayerError(
            f"expected a string input of shape (1,) (keras.Input((1,), dtype='string')), "
            f"received {tuple(inputs.shape[1:])}"
        )
    description = describe_text_layer(layer)
    preprocessed = outputs[layer.name]
    integer = str(preprocessed.dtype).startswith("int")
    largest = int(layer.vocabulary_size()) - 1 if integer else None
    # A graph of its own (cloned layers, the same weights): the layers' recorded inputs and
    # outputs then belong to it, as reading its head needs, not to the whole model's graph.
    # Its input has the shape the layer really gives: Keras's symbolic shape has an extra
    # axis in the counting modes ((None, 1, V) for (batch, V)).
    given = np.asarray(layer(np.array([["a"]], dtype=object)))
    dims: list[int | None] = list(given.shape[1:])
    if (
        description.get("output_mode") == "int"
        and description.get("output_sequence_length") is None
    ):
        dims[0] = None  # as many ids as the text has tokens
    fresh = keras.Input(shape=tuple(dims), dtype=str(given.dtype), name="preprocessed")
    rest = keras.Model(preprocessed, out)
    network = keras.models.clone_model(rest, input_tensors=fresh)
    network.set_weights(rest.get_weights())
    return TextSplit(network, description, largest, inputs, preprocessed)
