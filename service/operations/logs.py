"""Logging: one JSON object per line for machines, plain lines for a person at a terminal.

Every record becomes ``{"ts", "level", "logger", "message", ...fields}``; the access
log and lifecycle events add their fields through ``extra={"fields": {...}}``. uvicorn's
own loggers go through the same handler (``log_config=None`` in the CLI).
"""

from __future__ import annotations

import asyncio
import datetime as dt
import logging
import sys
import time
from typing import IO, Any

import orjson


class JSONFormatter(logging.Formatter):
    """One compact JSON object per record."""

    def format(self, record: logging.LogRecord) -> str:
        """The record as a JSON line."""
        data: dict[str, Any] = {
            "ts": dt.datetime.fromtimestamp(record.created, dt.UTC).isoformat(
                timespec="milliseconds"
            ),
            "level": record.levelname.lower(),
            "logger": record.name,
            "message": record.getMessage(),
        }
        fields = getattr(record, "fields", None)
        if isinstance(fields, dict):
            data.update(fields)
        if record.exc_info:
            data["exception"] = self.formatException(record.exc_info)
        return orjson.dumps(data, default=str).decode()


class TextFormatter(logging.Formatter):
    """Readable lines with the fields appended as key=value."""

    def __init__(self) -> None:
        super().__init__("%(asctime)s %(levelname)-7s %(name)s: %(message)s", "%H:%M:%S")

    def format(self, record: logging.LogRecord) -> str:
        """The record as a line for a terminal."""
        line = super().format(record)
        fields = getattr(record, "fields", None)
        if isinstance(fields, dict) and fields:
            line += "  " + " ".join(f"{k}={v}" for k, v in fields.items())
        return line


class FastJSONLines:
    """The hot path of the access log: one orjson line per request, no LogRecord, buffered.

    Python's logging machinery costs more per request than the rest of a one-row
    prediction's bookkeeping together, and a write to stderr per line costs a system
    call; access lines carry their own fields anyway. The lines have the same shape as
    ``JSONFormatter``'s and go to the same stream, in batches: like nginx's
    ``access_log ... buffer= flush=``, a line is written at most ``flush_interval``
    seconds after its request (sooner when ``max_buffer`` bytes are waiting), and what
    is left is written by ``flush()`` when the server stops.
    """

    def __init__(
        self,
        stream: IO[str],
        logger: str,
        flush_interval: float = 0.2,
        max_buffer: int = 64 * 1024,
    ) -> None:
        self._stream = stream
        self._logger = logger
        self._second = -1
        self._prefix = ""
        self.flush_interval = flush_interval
        self.max_buffer = max_buffer
        # one growing buffer: keeping each line's bytes object alive costs more than orjson
        self._pending = bytearray()
        self._timer: asyncio.TimerHandle | None = None

    def _timestamp(self, now: float) -> str:
        second = int(now)
        if second != self._second:  # the formatted date changes once a second
            self._second = second
            self._prefix = time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(second))
        return f"{self._prefix}.{int((now - second) * 1000):03d}+00:00"

    def emit(self, message: str, fields: dict[str, Any]) -> None:
        """Queue one record (written within ``flush_interval``)."""
        self._pending += orjson.dumps(
            {
                "ts": self._timestamp(time.time()),
                "level": "info",
                "logger": self._logger,
                "message": message,
                **fields,
            },
            option=orjson.OPT_APPEND_NEWLINE,
        )
        if len(self._pending) >= self.max_buffer:
            self.flush()
        elif self._timer is None:
            try:
                loop = asyncio.get_running_loop()
            except RuntimeError:  # no event loop to flush later: write now
                self.flush()
            else:
                self._timer = loop.call_later(self.flush_interval, self.flush)

    def flush(self) -> None:
        """Write every queued line now."""
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None
        if self._pending:
            data = self._pending.decode()
            self._pending.clear()
            self._stream.write(data)
            self._stream.flush()


def access_writer(logger: logging.Logger) -> FastJSONLines | None:
    """A fast writer for ``logger``'s info lines when they go out as JSON, else None."""
    if not logger.isEnabledFor(logging.INFO):
        return None
    root = logging.getLogger()
    handlers = root.handlers
    if len(handlers) == 1 and isinstance(handlers[0], logging.StreamHandler):
        handler = handlers[0]
        if isinstance(handler.formatter, JSONFormatter):
            return FastJSONLines(handler.stream, logger.name)
    return None


def configure(level: str, json_lines: bool | None = None) -> None:
    """Send every logger to stderr, as JSON unless stderr is a terminal."""
    if json_lines is None:
        json_lines = not sys.stderr.isatty()
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(JSONFormatter() if json_lines else TextFormatter())
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(level.upper())
    for name in ("uvicorn", "uvicorn.error", "uvicorn.access"):
        logging.getLogger(name).handlers[:] = []
        logging.getLogger(name).propagate = True
