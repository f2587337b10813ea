"""``POST /models/{name}/reload``: apply the repository's state for one model now.

Off unless ``SERVICE_MODEL_CONTROL=true`` (403). For servers with polling off
(``SERVICE_POLL_INTERVAL=0``), or to retry a refused version at once: new versions are
loaded, verified and warmed up while the current one keeps answering, then swapped in.
409 when a version the policy wants is refused (the previous one keeps serving); the
body lists every version's state.
"""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter, Request
from pydantic import BaseModel, ConfigDict

from service.dataplane import DataPlane
from service.responses import JSONResponse
from service.schemas import ErrorResponse

router = APIRouter(tags=["models"])


class VersionState(BaseModel):
    """One version's state (``LOADING``, ``AVAILABLE``, ``UNLOADING``, ``END``)."""

    version: str
    state: str
    error: str


class ReloadResponse(BaseModel):
    """The model's versions after the reload."""

    model_config = ConfigDict(
        json_schema_extra={
            "examples": [
                {"name": "blobs", "versions": [{"version": "1", "state": "AVAILABLE", "error": ""}]}
            ]
        }
    )

    name: str
    versions: list[VersionState]


def _errors(*codes: int) -> dict[int | str, dict[str, Any]]:
    return {code: {"model": ErrorResponse} for code in codes}


@router.post(
    "/models/{name}/reload",
    response_model=ReloadResponse,
    responses=_errors(403, 404, 409, 503),
)
async def reload(name: str, request: Request) -> JSONResponse:
    """Load the model's new versions now (retrying refused ones) and swap them in."""
    plane: DataPlane = request.state.dataplane
    statuses = await plane.reload(name)
    versions = [
        {"version": str(s.version), "state": s.state.value, "error": s.error} for s in statuses
    ]
    return JSONResponse({"name": name, "versions": versions})
