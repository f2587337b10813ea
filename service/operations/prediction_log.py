"""The prediction log: a sample of what was asked and answered, as JSON lines on disk.

Opt-in (``SERVICE_PREDICTION_LOG_DIR``). The data plane ``offer``s each answered request;
a sampled share (``SERVICE_PREDICTION_LOG_SAMPLE``) is put on a bounded queue as it is
(no encoding on the response path), and one writer thread turns each into a line::

    {"kind": "prediction", "time": "...", "request_id": "...", "model": "blobs",
     "version": 1, "form": "rows", "features": ["x1", "x2"], "inputs": [[15.0, 0.0]],
     "probabilities": [[0.99, ...]], "labels": ["0"]}

and each label reported through feedback into ``{"kind": "feedback", ...,
"labels": [...]}``, so that ``python -m model_training --prediction-log DIR`` can join
them into a training table. ``form`` is ``rows`` (numbers, with the model's feature
names), ``named`` (objects of named features), ``texts`` or ``images`` (files are not
logged: ``inputs`` is null) or ``columns`` (several named inputs).

Files rotate by size (the standard library's ``RotatingFileHandler``): each process
writes ``predictions-<pid>.jsonl`` up to ``SERVICE_PREDICTION_LOG_MAX_BYTES``, keeping
``SERVICE_PREDICTION_LOG_BACKUPS`` rotated files. Nothing here can fail a request: a full
queue drops the line, a write that fails (a full disk) is counted and logged at most
once a minute, and serving goes on (``softmax_prediction_log_lines_total{outcome}``).
"""

from __future__ import annotations

import contextlib
import logging
import os
import queue
import random
import sys
import threading
import time
from collections.abc import Callable, Sequence
from datetime import UTC, datetime
from logging.handlers import RotatingFileHandler
from pathlib import Path
from typing import Any

import numpy as np
import orjson

from service.inference.images import EncodedImages
from service.inference.named import NamedColumns
from service.inference.tables import NamedRows
from service.inference.text import Texts

log = logging.getLogger("service.prediction_log")

#: Outcomes of a line, as counted.
WRITTEN, DROPPED, FAILED = "written", "dropped", "failed"
#: Seconds between two log records about failed writes.
_COMPLAINT_INTERVAL = 60.0

Counter = Callable[[str, int], None]


class _Rotating(RotatingFileHandler):
    """Size-capped rotation that tells its owner when a write fails instead of printing
    a traceback to stderr (the handler's default)."""

    def __init__(self, path: Path, max_bytes: int, backups: int) -> None:
        super().__init__(path, maxBytes=max_bytes, backupCount=backups, encoding="utf-8")
        self.setFormatter(logging.Formatter("%(message)s"))
        self.failure: BaseException | None = None

    def handleError(self, record: logging.LogRecord) -> None:  # noqa: N802 (logging's name)
        self.failure = sys.exc_info()[1]


def _inputs(instances: Any) -> tuple[str, Any]:
    """(form, JSON-ready inputs) of what the request sent."""
    if isinstance(instances, EncodedImages):
        return "images", None
    if isinstance(instances, Texts):
        return "texts", list(instances.strings)
    if isinstance(instances, NamedRows):
        return "named", list(instances.rows)
    if isinstance(instances, NamedColumns):
        return "columns", {k: np.asarray(v).tolist() for k, v in instances.columns.items()}
    return "rows", np.asarray(instances, dtype=np.float64).tolist()


class PredictionLog:
    """A sampled log of predictions and feedback, written off the response path."""

    def __init__(
        self,
        directory: Path,
        *,
        sample: float = 1.0,
        max_bytes: int = 64 * 1024 * 1024,
        backups: int = 4,
        max_pending: int = 10_000,
        count: Counter | None = None,
        random_source: Callable[[], float] = random.random,
    ) -> None:
        directory.mkdir(parents=True, exist_ok=True)
        self.path = directory / f"predictions-{os.getpid()}.jsonl"
        self.sample = sample
        self._handler = _Rotating(self.path, max_bytes, backups)
        self._queue: queue.Queue[dict[str, Any] | None] = queue.Queue(max_pending)
        self._count = count or (lambda outcome, n: None)
        self._random = random_source
        self._last_complaint = -_COMPLAINT_INTERVAL
        self._writer = threading.Thread(target=self._write, name="prediction-log", daemon=True)
        self._writer.start()

    # --- the response path: no encoding, no I/O ----------------------------------------

    def offer(
        self,
        request_id: str | None,
        model: str,
        version: int,
        instances: Any,
        probabilities: np.ndarray[Any, Any],
        predicted: Sequence[int] | np.ndarray[Any, Any],
        class_names: Sequence[str],
        feature_names: Sequence[str],
    ) -> None:
        """Log one answered request, if sampled."""
        if self.sample < 1.0 and self._random() >= self.sample:
            return
        self._put(
            {
                "kind": "prediction",
                "time": time.time(),
                "request_id": request_id,
                "model": model,
                "version": version,
                "instances": instances,
                "probabilities": probabilities,
                "predicted": predicted,
                "class_names": class_names,
                "features": feature_names,
            }
        )

    def feedback(self, request_id: str, model: str, version: int, labels: list[str]) -> None:
        """Log the true labels reported for an earlier prediction (every one: a join
        needs them, and they are few)."""
        self._put(
            {
                "kind": "feedback",
                "time": time.time(),
                "request_id": request_id,
                "model": model,
                "version": version,
                "labels": list(labels),
            }
        )

    def _put(self, entry: dict[str, Any]) -> None:
        try:
            self._queue.put_nowait(entry)
        except queue.Full:
            self._count(DROPPED, 1)

    # --- the writer thread ---------------------------------------------------------------

    def _write(self) -> None:
        while (entry := self._queue.get()) is not None:
            self._emit(entry)

    def _emit(self, entry: dict[str, Any]) -> None:
        try:
            line = orjson.dumps(self._line(entry), option=orjson.OPT_SERIALIZE_NUMPY)
        except (TypeError, ValueError) as exc:  # nothing a client sent should do this
            self._failed(exc)
            return
        self._handler.failure = None
        self._handler.emit(logging.makeLogRecord({"msg": line.decode(), "args": None}))
        if self._handler.failure is not None:
            self._failed(self._handler.failure)
        else:
            self._count(WRITTEN, 1)

    @staticmethod
    def _line(entry: dict[str, Any]) -> dict[str, Any]:
        stamp = datetime.fromtimestamp(entry["time"], UTC)
        line = {
            "kind": entry["kind"],
            "time": stamp.isoformat(timespec="milliseconds").replace("+00:00", "Z"),
            "request_id": entry["request_id"],
            "model": entry["model"],
            "version": entry["version"],
        }
        if entry["kind"] == "feedback":
            line["labels"] = entry["labels"]
            return line
        form, inputs = _inputs(entry["instances"])
        line["form"] = form
        if form == "rows":
            line["features"] = list(entry["features"])
        line["inputs"] = inputs
        line["probabilities"] = entry["probabilities"]
        names = entry["class_names"]
        line["labels"] = [names[int(i)] for i in entry["predicted"]]
        return line

    def _failed(self, exc: BaseException) -> None:
        self._count(FAILED, 1)
        self._complain(exc)

    def _complain(self, exc: BaseException) -> None:
        now = time.monotonic()
        if now - self._last_complaint >= _COMPLAINT_INTERVAL:
            self._last_complaint = now
            log.error(
                "the prediction log could not write a line (%s: %s); serving goes on, and "
                'softmax_prediction_log_lines_total{outcome="failed"} counts the lost lines',
                type(exc).__name__,
                exc,
                extra={"fields": {"event": "prediction_log_failed", "path": str(self.path)}},
            )

    def close(self, timeout: float = 10.0) -> None:
        """Write what is queued (for at most ``timeout`` seconds), then close the file."""
        with contextlib.suppress(queue.Full):
            self._queue.put(None, timeout=timeout)
        self._writer.join(timeout)
        try:
            self._handler.close()
        except OSError as exc:  # what is still buffered is lost, and was counted as such
            self._complain(exc)
