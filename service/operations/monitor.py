"""Live drift: each model version's recent answers against its training references.

A version trained here carries, in its metadata's ``monitoring`` block
(``model_training.monitoring``), the distributions of its training rows: each numeric
feature's deciles, the entropy's and the OOD distance's, the predicted-class mix. The
data plane hands every batch it answered to ``LiveMonitor.observe``, which writes it
into the version's rolling window (the last ``window`` rows: fixed numpy ring buffers,
a few microseconds a request). Nothing is computed per request; when the window is read
(``GET /models/{name}/monitor``, a Prometheus scrape), each signal is compared with its
reference:

- per numeric feature, the population stability index (PSI) of the window's values
  over the reference's bins, and the window's missing rate;
- the PSI of the predicted-class mix against the training rows' mix;
- the window's mean entropy and OOD rate against their training values;
- the accuracy expected without any label: the mean top-1 probability of the window's
  (calibrated) answers, which is what a calibrated model's accuracy is on average
  (confidence-based performance estimation), to set beside the live accuracy the
  feedback gives (``service.operations.feedback``).

``PSI = sum_i (a_i - e_i) ln(a_i / e_i)`` over the bins, with the window's shares
``a_i`` and the reference's ``e_i``, each floored at ``PSI_FLOOR`` so an empty bin counts
but does not make it infinite. Bins are the reference's: value ``v`` falls in bin
``searchsorted(edges, v, side="left")`` (``edges[i-1] < v <= edges[i]``), as training
binned it. The usual reading: below 0.1 no shift, 0.1 to 0.25 some, above 0.25 a shift.

Features are monitored where the model's input is the table's own numbers (a version
whose table has no categorical or encoded columns); otherwise only the output-side
signals are. A version without a ``monitoring`` block (exported) is not monitored.
Each worker process of ``--workers N`` keeps its own window.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import numpy.typing as npt

#: Shares below this count as this much in the PSI (an empty bin costs, finitely).
PSI_FLOOR = 1e-4


def psi(actual: npt.ArrayLike, expected: npt.ArrayLike) -> float:
    """The population stability index of the shares ``actual`` against ``expected``."""
    a = np.maximum(np.asarray(actual, dtype=np.float64), PSI_FLOOR)
    e = np.maximum(np.asarray(expected, dtype=np.float64), PSI_FLOOR)
    return float(np.sum((a - e) * np.log(a / e)))


def shares(values: npt.NDArray[np.float64], edges: Sequence[float]) -> npt.NDArray[np.float64]:
    """The share of ``values`` (no NaN) in each of the ``len(edges) + 1`` reference bins."""
    bins = np.searchsorted(np.asarray(edges, dtype=np.float64), values, side="left")
    counts = np.bincount(bins, minlength=len(edges) + 1).astype(np.float64)
    return counts / max(len(values), 1)


@dataclass(frozen=True)
class NumericReference:
    """One numeric feature's training deciles (``model_training.monitoring``)."""

    name: str
    column: int
    edges: list[float]
    fractions: list[float]
    missing: float


@dataclass
class Window:
    """The last ``size`` rows a version answered, one ring buffer per signal."""

    size: int
    features: int
    has_distance: bool
    rows: int = 0  # rows ever written
    predicted: npt.NDArray[np.intp] = field(init=False)
    confidence: npt.NDArray[np.float64] = field(init=False)
    entropy: npt.NDArray[np.float64] = field(init=False)
    distance: npt.NDArray[np.float64] = field(init=False)
    x: npt.NDArray[np.float64] = field(init=False)

    def __post_init__(self) -> None:
        self.predicted = np.zeros(self.size, dtype=np.intp)
        self.confidence = np.zeros(self.size)
        self.entropy = np.zeros(self.size)
        self.distance = np.zeros(self.size if self.has_distance else 0)
        self.x = np.zeros((self.size, self.features))

    def write(
        self,
        probabilities: Any,
        predicted: Any,
        entropy: Any,
        distance: Any,
        x: Any,
    ) -> None:
        """Append a batch (its last ``size`` rows, if longer)."""
        n = len(predicted)
        if n == 1:  # the common case: plain item assignment
            i = self.rows % self.size
            self.predicted[i] = predicted[0]
            self.confidence[i] = max(probabilities[0])
            self.entropy[i] = entropy[0]
            if self.has_distance:
                self.distance[i] = distance[0]
            if self.features:
                self.x[i] = x[0][: self.features]
            self.rows += 1
            return
        start = max(0, n - self.size)
        positions = (self.rows + np.arange(start, n)) % self.size
        self.predicted[positions] = np.asarray(predicted)[start:]
        self.confidence[positions] = np.asarray(probabilities)[start:].max(axis=1)
        self.entropy[positions] = np.asarray(entropy)[start:]
        if self.has_distance:
            self.distance[positions] = np.asarray(distance)[start:]
        if self.features:
            self.x[positions] = np.asarray(x, dtype=np.float64)[start:, : self.features]
        self.rows += n

    def filled(self) -> int:
        """How many rows the window holds."""
        return min(self.rows, self.size)


class VersionMonitor:
    """One version's window and references."""

    def __init__(
        self,
        reference: dict[str, Any],
        feature_names: Sequence[str],
        threshold: float | None,
        size: int,
        features_monitored: bool,
    ) -> None:
        self.reference = reference
        self.threshold = threshold
        names = list(feature_names)
        self.numeric = (
            [
                NumericReference(
                    f["name"],
                    names.index(f["name"]),
                    list(f["edges"]),
                    list(f["fractions"]),
                    float(f["missing"] or 0.0),
                )
                for f in reference.get("features") or []
                if f.get("kind") == "numeric" and f.get("name") in names
            ]
            if features_monitored
            else []
        )
        width = max((f.column for f in self.numeric), default=-1) + 1
        has_distance = reference.get("ood_distance") is not None and threshold is not None
        self.window = Window(size, width, has_distance)

    def observe(
        self, probabilities: Any, predicted: Any, entropy: Any, distance: Any, x: Any
    ) -> None:
        """Write one answered batch into the window."""
        self.window.write(probabilities, predicted, entropy, distance, x)

    def summary(self) -> dict[str, Any]:
        """The window against the references (``None`` where nothing is measured yet)."""
        w = self.window
        n = w.filled()
        ref = self.reference
        entropy_ref = ref.get("entropy") or {}
        ood_ref = ref.get("ood_distance")
        body: dict[str, Any] = {
            "window_rows": n,
            "rows_seen": w.rows,
            "reference_rows": ref.get("rows"),
            "predicted_mix": None,
            "predicted_mix_psi": None,
            "estimated_accuracy": None,
            "mean_entropy": None,
            "reference_mean_entropy": entropy_ref.get("mean"),
            "ood_rate": None,
            "reference_ood_rate": ood_ref.get("rate") if ood_ref else None,
            "features": [],
        }
        if n == 0:
            return body
        predicted = w.predicted[:n]
        classes = len(ref.get("predicted_mix") or [])
        mix = np.bincount(predicted, minlength=classes)[: max(classes, 1)] / n
        body["predicted_mix"] = mix.tolist()
        if classes:
            body["predicted_mix_psi"] = psi(mix, ref["predicted_mix"])
        body["estimated_accuracy"] = float(w.confidence[:n].mean())
        body["mean_entropy"] = float(w.entropy[:n].mean())
        if w.has_distance and self.threshold is not None:
            body["ood_rate"] = float(np.mean(w.distance[:n] > self.threshold))
        for feature in self.numeric:
            values = w.x[:n, feature.column]
            present = values[~np.isnan(values)]
            body["features"].append(
                {
                    "name": feature.name,
                    "psi": psi(shares(present, feature.edges), feature.fractions)
                    if len(present)
                    else None,
                    "missing": float(1 - len(present) / n),
                    "reference_missing": feature.missing,
                }
            )
        return body


class LiveMonitor:
    """Every monitored version's window, created when a version first answers."""

    def __init__(self, window: int = 1000) -> None:
        if window < 1:
            raise ValueError(f"expected a window of at least 1 row, received {window}")
        self.window = window
        self._versions: dict[tuple[str, int], VersionMonitor | None] = {}

    def observe(self, served: Any, scores: Any, x: Any) -> None:
        """Write a batch ``served`` answered (its scores, its inputs) into its window."""
        key = (served.name, served.version)
        if key in self._versions:
            monitor = self._versions[key]
        else:
            monitor = self._versions[key] = self._monitor_for(served)
        if monitor is not None:
            probabilities, predicted, entropy, distance = scores.at_hand()
            monitor.observe(probabilities, predicted, entropy, distance, x)

    def _monitor_for(self, served: Any) -> VersionMonitor | None:
        meta = served.metadata
        reference = getattr(meta, "monitoring", None)
        if not isinstance(reference, dict):
            return None
        spec = meta.input_spec
        columns = spec.columns
        plain_table = (
            spec.kind == "table"
            and spec.inputs is None
            and (
                columns is None
                or (len(columns) == spec.size and all(c.kind == "numeric" for c in columns))
            )
        )
        detector = meta.ood_detector
        threshold = None if detector is None else float(detector.threshold)
        return VersionMonitor(
            reference, meta.feature_names, threshold, self.window, features_monitored=plain_table
        )

    def summary(self, name: str, version: int) -> dict[str, Any] | None:
        """The version's window against its references; ``None`` when it is not monitored
        (no ``monitoring`` block) or has answered nothing yet."""
        monitor = self._versions.get((name, version))
        return None if not monitor else monitor.summary()

    def monitored(self) -> list[tuple[str, int, VersionMonitor]]:
        """Every monitored version, for the metrics."""
        return [(n, v, m) for (n, v), m in sorted(self._versions.items()) if m]

    def forget(self, keep: set[tuple[str, int]]) -> None:
        """Drop the windows of versions no longer served."""
        for key in list(self._versions):
            if key not in keep:
                del self._versions[key]
