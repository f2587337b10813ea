"""What a Keras classifier takes: ``metadata.json``'s ``input`` description, and probes.

The service validates every request against this description before the model's
runtime sees it: an id outside an embedding's rows would make LiteRT fail, and a
fraction would be silently truncated to an id.
"""

from __future__ import annotations

from typing import Any

import keras
import numpy as np

#: Input dtypes the serving runtime takes.
DTYPES = ("float32", "int32", "int64")


class InputError(ValueError):
    """The model's input is not one the service can take; the message says why."""


def _first_layer(model: keras.Model) -> Any:
    """The first layer after the input (``None`` for a model with no layers)."""
    return next(
        (layer for layer in model.layers if not isinstance(layer, keras.layers.InputLayer)), None
    )


def describe_input(model: keras.Model) -> dict[str, Any]:
    """``shape`` (without the batch), ``dtype``, ``kind`` and, for token ids, ``id_range``.

    A model whose input goes straight into an ``Embedding`` takes token ids, whatever
    its input dtype: its valid ids are the embedding's rows, ``[0, input_dim - 1]``.
    """
    if len(model.inputs) != 1:
        raise InputError(
            "expected a model with one input, received "
            f"{len(model.inputs)} inputs: {[tuple(t.shape) for t in model.inputs]}"
        )
    tensor = model.inputs[0]
    dtype = str(tensor.dtype)
    if dtype not in DTYPES:
        raise InputError(f"expected an input of dtype {' or '.join(DTYPES)}, received {dtype}")
    description: dict[str, Any] = {
        "shape": [int(d) for d in tensor.shape[1:]],
        "dtype": dtype,
        "kind": "table",
    }
    first = _first_layer(model)
    if isinstance(first, keras.layers.Embedding):
        description["kind"] = "token_ids"
        description["id_range"] = [0, int(first.input_dim) - 1]
    return description


def probe(description: dict[str, Any], rows: int = 64, seed: int = 0) -> np.ndarray:
    """Valid inputs for an export self-check: ids within range, or spread-out floats."""
    rng = np.random.default_rng(seed)
    shape = (rows, *description["shape"])
    if "id_range" in description:
        low, high = description["id_range"]
        return rng.integers(low, high, size=shape, endpoint=True).astype(description["dtype"])
    if description["dtype"] != "float32":
        return rng.integers(0, 10, size=shape).astype(description["dtype"])
    return rng.normal(scale=10.0, size=shape).astype(np.float32)
