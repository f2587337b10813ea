"""Request semantics between the HTTP routes and the runtimes: checks, inference, scores.

Takes plain Python/numpy values and returns a ``Prediction`` (numpy arrays, or the
Python lists a few rows were scored in: ``service.inference.scores``); raises ``ServiceError``
subclasses. Knows nothing of HTTP. The checks are vectorized: a 10,000-row batch is
converted and checked by numpy in one go, and the element-by-element search for
*which* value is wrong only runs once we know something is; a few rows of plain numbers
are checked in Python, which is cheaper than numpy's calls at that size.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Sequence
from contextvars import ContextVar
from dataclasses import dataclass
from typing import Any

import anyio.to_thread
import numpy as np
import numpy.typing as npt

from service.errors import (
    InferenceFailed,
    InvalidInput,
    ModelControlDisabled,
    NotReady,
    PayloadTooLarge,
    ServiceError,
)
from service.inference.runtime import Features, Logits
from service.inference.scores import NotFinite, Scores
from service.inference.softmax import softmax
from service.operations.metrics import Metrics
from service.repository.artifact import InputSpec
from service.repository.registry import LoadedVersion, ModelRegistry, VersionStatus

log = logging.getLogger("service.dataplane")

FLOAT32_MAX = float(np.finfo(np.float32).max)

#: What the request being handled was served with, filled in by ``DataPlane.predict``:
#: ``model``, ``version`` and ``rows``. Whoever handles requests (the gateway) sets a
#: fresh dict per request and reads it back for its metrics and access log, so no
#: protocol has to remember to say what it served: every prediction passes here.
served_record: ContextVar[dict[str, Any] | None] = ContextVar("served_record", default=None)

#: What callers may pass as instances: rows of numbers, or an array (binary protocols).
Instances = Sequence[Sequence[float]] | npt.NDArray[Any]
#: Checked instances, in float64: a few rows as given, or a matrix (``features``).
Inputs = Sequence[Sequence[float]] | npt.NDArray[np.float64]


@dataclass(frozen=True)
class Prediction:
    """Scores for a batch (``service.inference.scores``), with the version that produced them."""

    model: LoadedVersion
    logits: Logits
    scores: Scores

    @property
    def probabilities(self) -> npt.NDArray[np.float64]:
        """(n, K) float64 class probabilities."""
        return self.scores.probabilities

    @property
    def argmax(self) -> npt.NDArray[np.intp]:
        """(n,) the most probable class of each row."""
        return self.scores.argmax

    @property
    def entropy(self) -> npt.NDArray[np.float64]:
        """Shannon entropy of each row's distribution, in nats (0: certain; log k: uniform)."""
        return self.scores.entropy

    @property
    def ood_distance(self) -> npt.NDArray[np.float64] | None:
        """Distance of each input to the nearest training class (None: no reference)."""
        return self.scores.ood_distance

    @property
    def labels(self) -> npt.NDArray[np.str_]:
        """``class_names[argmax]`` for each row."""
        return self.model.labels[self.argmax]

    @property
    def ood(self) -> npt.NDArray[np.bool_] | None:
        """True for inputs unlike the training data (None: the version has no reference)."""
        detector, distance = self.model.metadata.ood_detector, self.ood_distance
        return None if detector is None or distance is None else detector.flags(distance)


@dataclass(frozen=True)
class ModelSummary:
    """A served model: its served versions and the one ``/predict`` and friends default to."""

    name: str
    versions: list[int]
    default_version: int


@dataclass(frozen=True)
class SoftmaxResult:
    """``softmax(logits / temperature)`` and its argmax, same leading shape as the logits."""

    probabilities: npt.NDArray[np.float64]
    argmax: npt.NDArray[np.intp]


def _wrong_width(instances: Instances, input_dim: int) -> InvalidInput:
    """Name the first instance whose width is wrong (only called once we know one is)."""
    if isinstance(instances, np.ndarray):
        return InvalidInput(
            f"expected instances of shape [rows, {input_dim}], received shape "
            f"{list(instances.shape)}"
        )
    for i, row in enumerate(instances):
        if len(row) != input_dim:
            return InvalidInput(
                f"expected {input_dim} features per instance, received {len(row)} in instances[{i}]"
            )
    return InvalidInput(f"expected rows of {input_dim} numbers, received something else")


#: Up to this many values, list input is checked in Python: cheaper than numpy's calls.
_SMALL_INPUT = 64


def _plain_rows(instances: Instances, input_dim: int) -> bool:
    """True when every row is ``input_dim`` numbers within float32 range (checked in Python)."""
    try:
        for row in instances:
            if not isinstance(row, Sequence) or len(row) != input_dim:
                return False
            for value in row:
                if not -FLOAT32_MAX <= value <= FLOAT32_MAX:  # False for NaN too
                    return False
    except TypeError:  # not numbers: the general path says what
        return False
    return True


def features(instances: Instances, input_dim: int) -> tuple[Inputs, Features]:
    """``instances`` checked (``InvalidInput`` saying why not), and the model's float32 input.

    The first value is what the scores compute about the input itself (the
    out-of-distribution distance), in float64: the rows as given when they are a few
    plain rows of numbers, else a float64 matrix.
    """
    if 0 < len(instances) * input_dim <= _SMALL_INPUT:
        if isinstance(instances, np.ndarray):
            rows: Sequence[Sequence[float]] = instances.tolist()
            if _plain_rows(rows, input_dim):
                return rows, instances.astype(np.float32)
        elif _plain_rows(instances, input_dim):
            return instances, np.array(instances, dtype=np.float32)
    try:
        x = np.array(instances, dtype=np.float64)
    except (ValueError, TypeError):  # ragged rows, or not numbers at all
        raise _wrong_width(instances, input_dim) from None
    if x.ndim != 2 or x.shape[1] != input_dim or x.shape[0] == 0:
        raise _wrong_width(instances, input_dim)
    if not np.abs(x).max() <= FLOAT32_MAX:  # also catches NaN in binary tensors
        i, j = (int(k) for k in np.argwhere(~(np.abs(x) <= FLOAT32_MAX))[0])
        value = float(x[i, j])
        raise InvalidInput(
            f"expected finite features within the model's float32 range "
            f"(|x| <= {FLOAT32_MAX:.4g}), received {value!r} in instances[{i}][{j}]"
        )
    return x, x.astype(np.float32)


def whole_numbers(x: Inputs, spec: InputSpec) -> Features:
    """Checked features (``features``) as the model's integer input.

    Token ids and integer inputs must be whole numbers within what the model accepts
    (its embedding's rows, or the dtype's range): an index outside an embedding makes
    the runtime fail, and a fraction would be silently truncated. ``InvalidInput``
    names the first value that is not.
    """
    values = np.asarray(x, dtype=np.float64)
    what = "token ids" if spec.kind == "token_ids" else f"{spec.dtype} inputs"
    fractional = values != np.floor(values)
    if fractional.any():
        i, j = (int(k) for k in np.argwhere(fractional)[0])
        raise InvalidInput(
            f"expected whole numbers as {what}, received {float(values[i, j])!r} "
            f"in instances[{i}][{j}]"
        )
    if spec.id_range is not None:
        low, high = spec.id_range
        scope = f"(the model's embedding has {high + 1} rows)"
    else:
        info = np.iinfo(np.dtype(spec.dtype))
        low, high, scope = int(info.min), int(info.max), f"(the range of {spec.dtype})"
    outside = (values < low) | (values > high)
    if outside.any():
        i, j = (int(k) for k in np.argwhere(outside)[0])
        raise InvalidInput(
            f"expected {what} from {low} to {high} {scope}, received "
            f"{float(values[i, j]):.15g} in instances[{i}][{j}]"
        )
    return np.ascontiguousarray(values.astype(spec.dtype))


class DataPlane:
    """Predictions and softmax for the routes."""

    def __init__(
        self,
        registry: ModelRegistry,
        *,
        max_batch_rows: int = 100_000,
        max_values_per_row: int = 10_000,
        max_json_depth: int = 32,
        metrics: Metrics | None = None,
        model_control: bool = False,
    ) -> None:
        self.registry = registry
        self.model_control = model_control
        self.metrics = metrics
        self.max_batch_rows = max_batch_rows
        self.max_values_per_row = max_values_per_row
        self.max_json_depth = max_json_depth

    # --- what is served -------------------------------------------------------------

    def resolve(self, model: str | None = None, version: str | None = None) -> LoadedVersion:
        """The version a request for ``model``/``version`` is served by (404/503 if none)."""
        return self.registry.get(model, version)

    def _loaded(self) -> ModelRegistry:
        """The registry, once the repository's first load has finished (503 before)."""
        if not self.registry.loaded:
            raise NotReady(self.registry.not_ready_reason())
        return self.registry

    def check_ready(self) -> None:
        """Return if the default model serves (``/predict`` works), else raise ``NotReady``."""
        if not self.registry.ready:
            raise NotReady(self.registry.not_ready_reason())

    def models(self) -> list[ModelSummary]:
        """Every served model, its served versions and the version served by default."""
        registry = self._loaded()
        return [
            ModelSummary(name, registry.versions(name), registry.get(name).version)
            for name in registry.names()
        ]

    def versions(self, name: str) -> list[int]:
        """The served versions of ``name``, oldest first."""
        return self._loaded().versions(name)

    def statuses(self, name: str, *, missing_ok: bool = False) -> list[VersionStatus]:
        """Every version of ``name`` the registry has tried, with its state (404 if none)."""
        return self._loaded().status(name, missing_ok=missing_ok)

    def known_models(self) -> list[str]:
        """Every model served, tried or on disk (unloaded ones included), sorted."""
        return self._loaded().known()

    def newest_versions(self) -> dict[str, int]:
        """The newest served version of each model (nothing while still loading)."""
        registry = self.registry
        return {name: max(registry.versions(name)) for name in registry.names()}

    async def predict(
        self,
        instances: Instances,
        *,
        model: str | None = None,
        version: str | None = None,
        calibrated: bool = True,
        served: LoadedVersion | None = None,
    ) -> Prediction:
        """Probabilities of each instance under the requested (or default, newest) version."""
        served = served or self.registry.get(model, version)
        if len(instances) > self.max_batch_rows:
            raise PayloadTooLarge(
                f"expected at most {self.max_batch_rows} instances per request, "
                f"received {len(instances)}"
            )
        x, x32 = features(instances, served.metadata.input_dim)
        spec = served.metadata.input_spec
        if spec.integral:
            x32 = whole_numbers(x, spec)
        started = time.perf_counter()
        try:
            if served.batcher is None and not served.runtime.blocking:
                logits = served.runtime.logits(x32)  # microseconds: cheaper than any hand-off
            else:
                logits = await self._logits(served, x32)
        except ServiceError:
            raise
        except Exception as exc:  # the runtime refused input that passed every check
            raise self._runtime_failed(served, exc) from None
        elapsed = time.perf_counter() - started
        temperature = served.metadata.temperature if calibrated else 1.0
        try:
            scores = served.scorer(logits, x, temperature)
        except NotFinite as exc:
            raise InvalidInput(
                "expected instances the model can score, received values so large that "
                f"the model's logits overflow in instances[{exc.row}]"
            ) from None
        record = served_record.get()
        if record is not None:
            record["model"] = served.name
            record["version"] = served.version
            record["rows"] = len(scores)
        if self.metrics is not None:
            self.metrics.observe_prediction(
                served.name,
                str(served.version),
                elapsed,
                served.metadata.class_names,
                scores.predicted,
            )
        return Prediction(served, logits, scores)

    @staticmethod
    def _runtime_failed(served: LoadedVersion, exc: Exception) -> InferenceFailed:
        """Log the runtime's own error with the request id; the client gets a clear 422."""
        record = served_record.get() or {}
        request_id = record.get("request_id")
        log.warning(
            "model %r version %s failed on the input of request %s: %r",
            served.name,
            served.version,
            request_id,
            exc,
        )
        return InferenceFailed(
            f"expected instances model {served.name!r} version {served.version} can run on, "
            "received instances its runtime failed on; the server log has the runtime's "
            f"message under request id {request_id}"
        )

    # --- model control ---------------------------------------------------------------

    def _control(self, action: str) -> ModelRegistry:
        """The registry, when clients may change what it serves and it has loaded."""
        if not self.model_control:
            raise ModelControlDisabled(
                f"expected model control to be on (SERVICE_MODEL_CONTROL=true) for {action}, "
                "received a request while it is off (the default)"
            )
        if not self.registry.loaded:
            raise NotReady(self.registry.not_ready_reason())
        return self.registry

    async def reload(self, name: str, verb: str = "reloading") -> list[VersionStatus]:
        """Load ``name``'s versions now (retrying refused ones, undoing an unload)."""
        registry = self._control(f"{verb} model {name!r}")
        return await anyio.to_thread.run_sync(registry.reload, name)

    async def unload(self, name: str) -> None:
        """Stop serving every version of ``name`` until it is reloaded."""
        registry = self._control(f"unloading model {name!r}")
        await anyio.to_thread.run_sync(registry.unload, name)

    @staticmethod
    async def _logits(served: LoadedVersion, x: Features) -> Logits:
        if served.batcher is not None:
            return await served.batcher.logits(x)
        return await anyio.to_thread.run_sync(served.runtime.logits, x)

    def softmax(
        self, logits: Sequence[float] | Sequence[Sequence[float]], temperature: float
    ) -> SoftmaxResult:
        """The float64 softmax of one vector or a batch of equal-length vectors."""
        if len(logits) > self.max_batch_rows:
            raise PayloadTooLarge(
                f"expected at most {self.max_batch_rows} rows of logits, received {len(logits)}"
            )
        row = logits[0] if logits and isinstance(logits[0], Sequence) else logits
        if len(row) > self.max_values_per_row:
            raise PayloadTooLarge(
                f"expected at most {self.max_values_per_row} logits per row, received {len(row)}"
            )
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
