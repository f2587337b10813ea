"""Feedback: true labels of earlier predictions, joined with what the service answered.

The data plane ``remember``s each answered prediction under its request id (the
``X-Request-ID`` the client sent, or the one the service made and echoed): the model,
the version and the probabilities it answered. A client that learns the truth later
reports it (``POST /models/{name}/feedback`` with the request id and one label per
instance); ``label`` joins it with the remembered answer and adds each row to that
version's labelled window, from which the live accuracy, log loss and expected
calibration error are computed when read.

The store is bounded twice: at most ``max_bytes`` of memory (each answer counted as its
float32 probabilities plus ``ANSWER_BYTES`` for what holds them; the oldest answers
forgotten first) and each answer for ``ttl`` seconds. A
request id the store does not hold (never seen, forgotten, expired, or already labelled)
is a 404 saying which of those it can be; a label that is not one of the model's
classes, or a count of labels unlike the prediction's rows, a 422.
"""

from __future__ import annotations

import time
from collections import OrderedDict
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import numpy.typing as npt

from service.errors import InvalidInput, NotFound

#: Equal-width confidence bins of the expected calibration error (as training's report).
ECE_BINS = 15
#: What one kept answer costs besides its probabilities: the array, the record, the
#: request id and the dictionary's entry (tracemalloc: about 330 bytes, and the id).
ANSWER_BYTES = 400


class FeedbackNotFound(NotFound):
    """No remembered prediction under that request id."""


@dataclass(frozen=True)
class Remembered:
    """What the service answered to one request."""

    model: str
    version: int
    class_names: Sequence[str]
    probabilities: npt.NDArray[np.float32]
    """(rows, K) what was answered."""
    at: float


@dataclass
class LabelledWindow:
    """The last ``size`` labelled rows of one version."""

    size: int
    rows: int = 0
    last_label_at: float | None = None
    """Wall-clock time (Unix seconds) of the last label joined."""
    correct: npt.NDArray[np.bool_] = field(init=False)
    log_p: npt.NDArray[np.float64] = field(init=False)
    confidence: npt.NDArray[np.float64] = field(init=False)

    def __post_init__(self) -> None:
        self.correct = np.zeros(self.size, dtype=bool)
        self.log_p = np.zeros(self.size)
        self.confidence = np.zeros(self.size)

    def add(self, probabilities: npt.NDArray[np.float64], labels: npt.NDArray[np.intp]) -> None:
        n = len(labels)
        start = max(0, n - self.size)
        positions = (self.rows + np.arange(start, n)) % self.size
        p = probabilities[start:]
        y = labels[start:]
        self.correct[positions] = p.argmax(axis=1) == y
        self.log_p[positions] = np.log(np.maximum(p[np.arange(len(y)), y], 1e-300))
        self.confidence[positions] = p.max(axis=1)
        self.rows += n

    def summary(self) -> dict[str, Any]:
        n = min(self.rows, self.size)
        if n == 0:
            return {
                "rows": 0,
                "rows_seen": self.rows,
                "last_label_at": self.last_label_at,
                "accuracy": None,
                "log_loss": None,
                "ece": None,
            }
        correct, confidence = self.correct[:n], self.confidence[:n]
        # As the training report bins: a confidence on an edge belongs to the bin below.
        inner = np.linspace(0.0, 1.0, ECE_BINS + 1)[1:-1]
        bins = np.searchsorted(inner, confidence, side="left")
        ece = 0.0
        for b in np.unique(bins):
            members = bins == b
            ece += members.sum() / n * abs(correct[members].mean() - confidence[members].mean())
        return {
            "rows": n,
            "rows_seen": self.rows,
            "last_label_at": self.last_label_at,
            "accuracy": float(correct.mean()),
            "log_loss": float(-self.log_p[:n].mean()),
            "ece": float(ece),
        }


class FeedbackStore:
    """Remembered answers by request id, and each version's labelled window."""

    def __init__(
        self,
        max_bytes: int = 64 * 2**20,
        ttl: float = 86_400.0,
        window: int = 1000,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.max_bytes = max_bytes
        self.bytes = 0
        self.ttl = ttl
        self.window = window
        self._clock = clock
        self._answers: OrderedDict[str, Remembered] = OrderedDict()
        self._windows: dict[tuple[str, int], LabelledWindow] = {}
        self.on_label: Callable[[str, str, int, list[str]], None] | None = None
        """Told of each join: request id, model, version and the labels as class names
        (the prediction log writes them down)."""

    def remember(
        self, request_id: str, model: str, version: int, class_names: Sequence[str], p: Any
    ) -> None:
        """Keep what ``request_id`` was answered (the oldest forgotten beyond the bound;
        a request id sent again replaces its earlier answer)."""
        answers = self._answers
        kept = np.asarray(p, dtype=np.float32)
        earlier = answers.pop(request_id, None)
        if earlier is not None:
            self.bytes -= _cost(earlier)
        answer = Remembered(model, version, class_names, kept, self._clock())
        answers[request_id] = answer
        self.bytes += _cost(answer)
        while self.bytes > self.max_bytes and answers:
            _, oldest = answers.popitem(last=False)
            self.bytes -= _cost(oldest)

    def label(self, model: str, request_id: str, labels: Sequence[Any]) -> dict[str, Any]:
        """Join ``labels`` (class names or indices, one per instance) with what
        ``request_id`` was answered by ``model``; the joined rows' outcome."""
        answer = self._answers.get(request_id)
        if answer is not None and self._clock() - answer.at > self.ttl:
            self._forget(request_id)
            answer = None
        if answer is None or answer.model != model:
            raise FeedbackNotFound(
                f"expected the request id of a prediction of model {model!r} answered in the "
                f"last {self.ttl:g} s and not labelled yet (the service keeps the newest "
                f"answers, within {self.max_bytes} bytes), received {request_id[:128]!r}"
            )
        p = answer.probabilities.astype(np.float64)
        if len(labels) != len(p):
            raise InvalidInput(
                f"expected {len(p)} labels (one per instance of request {request_id[:128]!r}), "
                f"received {len(labels)}"
            )
        y = np.array([_index(label, answer.class_names, i) for i, label in enumerate(labels)])
        self._forget(request_id)  # labelled once
        key = (answer.model, answer.version)
        window = self._windows.get(key)
        if window is None:
            window = self._windows[key] = LabelledWindow(self.window)
        window.add(p, y)
        window.last_label_at = time.time()
        if self.on_label is not None:
            self.on_label(
                request_id, answer.model, answer.version, [answer.class_names[i] for i in y]
            )
        return {
            "model": answer.model,
            "version": str(answer.version),
            "request_id": request_id,
            "rows": len(y),
            "correct": int(np.sum(p.argmax(axis=1) == y)),
        }

    def _forget(self, request_id: str) -> None:
        self.bytes -= _cost(self._answers.pop(request_id))

    def summary(self, model: str, version: int) -> dict[str, Any] | None:
        """The version's labelled window (``None`` before its first label)."""
        window = self._windows.get((model, version))
        return None if window is None else window.summary()

    def labelled(self) -> list[tuple[str, int, dict[str, Any]]]:
        """Every version with labels, for the metrics."""
        return [(m, v, w.summary()) for (m, v), w in sorted(self._windows.items())]


def _cost(answer: Remembered) -> int:
    """The memory one kept answer is counted for."""
    return ANSWER_BYTES + answer.probabilities.nbytes


def _index(label: Any, class_names: Sequence[str], i: int) -> int:
    """A label as a class index: one of the class names, or an index into them."""
    if isinstance(label, str) and label in class_names:
        return list(class_names).index(label)
    if isinstance(label, int) and not isinstance(label, bool) and 0 <= label < len(class_names):
        return label
    shown = list(class_names[:20]) + (["..."] if len(class_names) > 20 else [])
    raise InvalidInput(
        f"expected a class name of the model {shown} or an index from 0 to "
        f"{len(class_names) - 1}, received {str(label)[:64]!r} in labels[{i}]"
    )
