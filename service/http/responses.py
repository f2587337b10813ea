"""JSON responses rendered by orjson (numpy arrays serialized directly, floats to the last bit)."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import orjson
from starlette.responses import Response

_OPTIONS = orjson.OPT_SERIALIZE_NUMPY


class JSONResponse(Response):
    """``application/json`` via orjson; float64 values keep their shortest exact representation."""

    media_type = "application/json"

    def init_headers(self, headers: Mapping[str, str] | None = None) -> None:
        """Starlette's headers; without extra headers, made directly (the hot path)."""
        if headers is not None or self.status_code < 200 or self.status_code in (204, 304):
            super().init_headers(headers)
            return
        self.raw_headers = [
            (b"content-length", str(len(self.body)).encode()),
            (b"content-type", b"application/json"),
        ]

    def render(self, content: Any) -> bytes:
        """Serialize ``content``."""
        return orjson.dumps(content, option=_OPTIONS)
