"""JSON responses rendered by orjson (numpy arrays serialized directly, floats to the last bit)."""

from __future__ import annotations

from typing import Any

import orjson
from starlette.responses import Response

_OPTIONS = orjson.OPT_SERIALIZE_NUMPY


class JSONResponse(Response):
    """``application/json`` via orjson; float64 values keep their shortest exact representation."""

    media_type = "application/json"

    def render(self, content: Any) -> bytes:
        """Serialize ``content``."""
        return orjson.dumps(content, option=_OPTIONS)
