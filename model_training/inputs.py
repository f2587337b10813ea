"""What a Keras classifier takes: ``metadata.json``'s ``input`` description, and probes.

The service validates every request against this description before the model's
runtime sees it: an id outside an embedding's rows would make LiteRT fail, a
fraction would be silently truncated to an id, and an image file's 8-bit pixels
must be fed on the scale the model was trained on.

The kind is read from the input tensor and the layers right after it:

- the input goes straight into an ``Embedding``: ``token_ids`` (whatever the dtype),
  valid ids ``[0, rows - 1]``;
- rank 3, float, with 1, 3 or 4 channels ``(height, width, channels)``: ``image``;
- rank 1: ``table``; any other rank: ``sequence`` (an array of that shape).

A sequence or token ids may have any number of steps (``keras.Input((None, ...))``):
the shape is recorded with ``-1`` first, and the service takes each instance at its
own length.

An image's ``pixel_range`` (what the model takes for a black and a white pixel) is
``[0, 255]`` when the model's first processing layer brings 0..255 down to a small
range itself (``Rescaling(1/255)``, ``Rescaling(1/127.5, offset=-1)``, or a
``Normalization`` whose means are above 1.5, i.e. adapted on 0..255 data), else
``[0, 1]`` (the trainer divided by 255 before the model). Both guesses can be
overridden by the exporter (``--kind``, ``--pixel-range``).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any, get_args

import keras
import numpy as np

from model_training.artifact import VARIABLE_KINDS, InputSpec

#: Input dtypes the serving runtime takes.
DTYPES = ("float32", "int32", "int64")
#: The kinds of input a version can describe.
INPUT_KINDS: tuple[str, ...] = get_args(InputSpec.model_fields["kind"].annotation)
IMAGE_CHANNELS = (1, 3, 4)
#: A first layer that maps 0..255 to values no larger than this takes 0..255 pixels.
SMALL_RANGE = 2.0
#: Layers that pass an image through unchanged at inference (augmentation), or only
#: change its size: the pixel scale is read from the first layer after them.
_PASS_THROUGH = ("Random", "Resizing", "CenterCrop", "Identity")


class InputError(ValueError):
    """The model's input is not one the service can take; the message says why."""


def _first_layer(model: keras.Model) -> Any:
    """The first layer after the input (``None`` for a model with no layers)."""
    return next(
        (layer for layer in model.layers if not isinstance(layer, keras.layers.InputLayer)), None
    )


def _first_processing_layer(model: keras.Model) -> Any:
    """The first layer that changes pixel values (nested models entered, augmentation skipped)."""
    for layer in model.layers:
        if isinstance(layer, keras.layers.InputLayer):
            continue
        if isinstance(layer, keras.Model):
            inner = _first_processing_layer(layer)
            if inner is not None:
                return inner
            continue
        if type(layer).__name__.startswith(_PASS_THROUGH):
            continue
        return layer
    return None


def guess_pixel_range(model: keras.Model) -> tuple[float, float]:
    """``(0, 255)`` when the model rescales 0..255 pixels itself, else ``(0, 1)``."""
    first = _first_processing_layer(model)
    if isinstance(first, keras.layers.Rescaling):
        scale = np.asarray(first.scale, dtype=np.float64)
        offset = np.asarray(first.offset, dtype=np.float64)
        # 0..255 becomes offset..255 * scale + offset (per channel).
        ends = np.abs(np.concatenate([np.ravel(offset), np.ravel(255.0 * scale + offset)]))
        if float(ends.max()) <= SMALL_RANGE:
            return (0.0, 255.0)
    if isinstance(first, keras.layers.Normalization) and first.built:
        mean = getattr(first, "mean", None)
        if mean is not None and float(np.max(np.asarray(mean))) > 1.5:
            return (0.0, 255.0)
    return (0.0, 1.0)


def guess_kind(shape: Sequence[int], dtype: str, first: Any) -> str:
    """The kind a model's input most likely is (see the module docstring); a first axis of
    unknown size (0 here) is a sequence's steps."""
    if isinstance(first, keras.layers.Embedding):
        return "token_ids"
    if shape and shape[0] == 0:
        return "sequence"
    if len(shape) == 3 and shape[2] in IMAGE_CHANNELS and dtype == "float32":
        return "image"
    return "table" if len(shape) == 1 else "sequence"


def _check_kind(kind: str, shape: list[int], dtype: str) -> None:
    if kind not in INPUT_KINDS:
        raise InputError(f"expected a kind in {list(INPUT_KINDS)}, received {kind!r}")
    if kind == "table" and len(shape) != 1:
        raise InputError(
            f"expected a one-dimensional input for kind 'table', received shape {shape}; "
            "use --kind sequence or image"
        )
    if kind == "image" and (
        len(shape) != 3 or shape[2] not in IMAGE_CHANNELS or dtype != "float32"
    ):
        raise InputError(
            "expected a float32 input of shape [height, width, channels] with 1, 3 or 4 "
            f"channels for kind 'image', received shape {shape} and dtype {dtype}"
        )


def describe_input(
    model: keras.Model,
    kind: str | None = None,
    pixel_range: tuple[float, float] | None = None,
) -> dict[str, Any]:
    """``shape`` (without the batch), ``dtype``, ``kind`` and ``id_range`` or ``pixel_range``.

    ``kind`` and ``pixel_range`` override the guesses. Raises ``InputError`` for a
    model with several inputs, an input dtype the service cannot feed, an input of
    unknown size, or an override that does not fit the input.
    """
    if len(model.inputs) != 1:
        raise InputError(
            "expected a model with one input, received "
            f"{len(model.inputs)} inputs: {[tuple(t.shape) for t in model.inputs]}; "
            "export serves single-input classifiers only"
        )
    tensor = model.inputs[0]
    dims, dtype = list(tensor.shape[1:]), str(tensor.dtype)
    first = _first_layer(model)
    chosen = kind or guess_kind([d or 0 for d in dims], dtype, first)
    guessed = guess_pixel_range(model) if chosen == "image" and dtype in DTYPES else None
    return describe_tensor(
        dims,
        dtype,
        chosen,
        pixel_range or guessed,
        int(first.input_dim) - 1 if isinstance(first, keras.layers.Embedding) else None,
        pixel_range_given=pixel_range is not None,
    )


def describe_tensor(
    dims: Sequence[int | None],
    dtype: str,
    kind: str,
    pixel_range: tuple[float, float] | None,
    largest_id: int | None = None,
    pixel_range_given: bool = False,
) -> dict[str, Any]:
    """The description of an input tensor of shape ``(batch, *dims)``: ``describe_input``
    for a model whose layers cannot be read (a SavedModel's signature)."""
    if dtype not in DTYPES:
        raise InputError(f"expected an input of dtype {' or '.join(DTYPES)}, received {dtype}")
    steps = bool(dims) and dims[0] is None and kind in VARIABLE_KINDS
    if not dims or any(d is None for d in dims[1 if steps else 0 :]):
        raise InputError(
            "expected an input of fixed shape (every dimension but the batch known; a sequence "
            f"or token ids may have any length), received {(None, *dims)} for a {kind}; rebuild "
            "the model with keras.Input(shape=...) of fixed sizes"
        )
    shape = [-1 if d is None else int(d) for d in dims]
    _check_kind(kind, shape, dtype)
    if pixel_range_given and kind != "image":
        raise InputError(f"expected --pixel-range only for an image input, received kind {kind}")
    description: dict[str, Any] = {"shape": shape, "dtype": dtype, "kind": kind}
    if largest_id is not None:
        description["id_range"] = [0, largest_id]
    if kind == "image":
        low, high = pixel_range or (0.0, 1.0)
        if not (np.isfinite(low) and np.isfinite(high) and low < high):
            raise InputError(
                f"expected a pixel range LOW HIGH with LOW < HIGH, received {low} {high}"
            )
        description["pixel_range"] = [float(low), float(high)]
    InputSpec.model_validate(description)  # what the service will read
    return description


def probe(description: dict[str, Any], rows: int = 64, seed: int = 0) -> np.ndarray:
    """Valid inputs for an export self-check: ids within range, pixels within the pixel
    range, or spread-out floats (the same probes the service warms a version up with)."""
    spec = InputSpec.model_validate(description)
    return np.asarray(spec.probe(rows, np.random.default_rng(seed)))
