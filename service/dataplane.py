"""Request semantics between the HTTP routes and the runtimes: checks, inference, softmax.

Takes plain Python/numpy values and returns numpy arrays; raises ``ServiceError``
subclasses. Knows nothing of HTTP.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import anyio.to_thread
import numpy as np
import numpy.typing as npt

from service.errors import InvalidInput, PayloadTooLarge
from service.registry import LoadedVersion, ModelRegistry
from service.softmax import softmax

FLOAT32_MAX = float(np.finfo(np.float32).max)


@dataclass(frozen=True)
class Prediction:
    """Probabilities for a batch, with the model version that produced them."""

    model: LoadedVersion
    probabilities: npt.NDArray[np.float64]
    argmax: npt.NDArray[np.intp]

    @property
    def labels(self) -> npt.NDArray[np.str_]:
        """``class_names[argmax]`` for each row."""
        return self.model.labels[self.argmax]


@dataclass(frozen=True)
class SoftmaxResult:
    """``softmax(logits / temperature)`` and its argmax, same leading shape as the logits."""

    probabilities: npt.NDArray[np.float64]
    argmax: npt.NDArray[np.intp]


class DataPlane:
    """Predictions and softmax for the routes."""

    def __init__(self, registry: ModelRegistry, *, max_batch_rows: int) -> None:
        self.registry = registry
        self.max_batch_rows = max_batch_rows

    def _features(self, instances: Sequence[Sequence[float]], input_dim: int) -> np.ndarray:
        if len(instances) > self.max_batch_rows:
            raise PayloadTooLarge(
                f"expected at most {self.max_batch_rows} instances per request, "
                f"received {len(instances)}"
            )
        for i, row in enumerate(instances):
            if len(row) != input_dim:
                raise InvalidInput(
                    f"expected {input_dim} features per instance, "
                    f"received {len(row)} in instances[{i}]"
                )
        features = np.asarray(instances, dtype=np.float64).reshape(len(instances), input_dim)
        too_big = np.abs(features) > FLOAT32_MAX
        if too_big.any():
            i, j = (int(k) for k in np.argwhere(too_big)[0])
            raise InvalidInput(
                f"expected features within the model's float32 range (|x| <= {FLOAT32_MAX:.4g}), "
                f"received {float(features[i, j])!r} in instances[{i}][{j}]"
            )
        return np.ascontiguousarray(features, dtype=np.float32)

    async def predict(
        self,
        instances: Sequence[Sequence[float]],
        *,
        model: str | None = None,
        version: str | None = None,
        calibrated: bool = True,
    ) -> Prediction:
        """Probabilities of each instance under the requested (or default, newest) version."""
        served = self.registry.get(model, version)
        features = self._features(instances, served.metadata.input_dim)
        if served.runtime.blocking:
            logits = await anyio.to_thread.run_sync(served.runtime.logits, features)
        else:
            logits = served.runtime.logits(features)
        if not np.isfinite(logits).all():
            bad = int(np.argwhere(~np.isfinite(logits))[0][0])
            raise InvalidInput(
                "expected instances the model can score, received values so large that "
                f"the model's logits overflow in instances[{bad}]"
            )
        temperature = served.metadata.temperature if calibrated else 1.0
        probabilities = softmax(logits, temperature)
        return Prediction(served, probabilities, probabilities.argmax(axis=1))

    @staticmethod
    def softmax(
        logits: Sequence[float] | Sequence[Sequence[float]], temperature: float
    ) -> SoftmaxResult:
        """The float64 softmax of one vector or a batch of equal-length vectors."""
        if logits and isinstance(logits[0], Sequence):
            widths = {len(row) for row in logits}  # type: ignore[arg-type]
            if len(widths) != 1:
                raise InvalidInput(
                    "expected every row of a logits batch to have the same length, "
                    f"received lengths {sorted(widths)}"
                )
            if widths == {0}:
                raise InvalidInput("expected at least one logit per row, received empty rows")
        probabilities = softmax(logits, temperature)
        return SoftmaxResult(probabilities, probabilities.argmax(axis=-1))
