"""The float64 softmax, numerically stable for any finite logits and any positive temperature.

``softmax(z / T)`` is computed as ``exp((z - max z) / T) / sum(...)``: subtracting the
maximum first keeps every exponent at or below 0, so nothing overflows; a shift
that overflows to ``-inf`` (logits more than ~1.8e308 apart, or a tiny temperature)
correctly gives a probability of 0. Every entry is then correct to a few ulps,
tiny ones included (``softmax([0, 100, 0])`` has two entries of 3.72e-44).
"""

from __future__ import annotations

import math

import numpy as np
import numpy.typing as npt

Float64Array = npt.NDArray[np.float64]


def softmax(logits: npt.ArrayLike, temperature: float = 1.0) -> Float64Array:
    """Probabilities along the last axis of ``logits`` (any shape), in float64.

    Raises ``ValueError`` for a temperature that is not a finite number above 0: the
    formula has no meaning there (0 divides by zero, a negative one reverses the order).
    """
    if not (temperature > 0 and math.isfinite(temperature)):
        raise ValueError(f"expected a finite temperature > 0, received temperature={temperature!r}")
    narrow = isinstance(logits, np.ndarray) and logits.dtype == np.float32
    z = np.array(logits, dtype=np.float64)  # a fresh array we may overwrite
    if z.size == 0:
        return z
    if narrow and temperature >= 1e-30:
        # float32 logits are within +-3.4e38: the shift and the division cannot overflow,
        # so skip the cost of np.errstate on the model's hot path.
        z -= z.max(axis=-1, keepdims=True)
        if temperature != 1.0:
            z /= temperature
    else:
        with np.errstate(over="ignore", invalid="ignore"):
            z -= z.max(axis=-1, keepdims=True)
            if temperature != 1.0:
                z /= temperature
    np.exp(z, out=z)
    z /= z.sum(axis=-1, keepdims=True)
    return z
