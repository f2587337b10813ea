"""The FastAPI floor: a FastAPI route with a pydantic body model that returns a fixed answer.

What any FastAPI service pays per request before it does any work: routing, JSON
parsing and pydantic validation of ``{"instances": list[list[float]]}``, a response.
"""

from __future__ import annotations

from typing import Any

from _common import FIXED_BODY, parse_args, serve
from fastapi import FastAPI, Response
from pydantic import BaseModel


class PredictRequest(BaseModel):
    """The request body every server here accepts."""

    instances: list[list[float]]


def make_app() -> FastAPI:
    """The application."""
    app = FastAPI()

    @app.post("/predict")
    async def predict(body: PredictRequest) -> Response:
        return Response(FIXED_BODY, media_type="application/json")

    @app.get("/health/ready")
    async def ready() -> dict[str, Any]:
        return {"status": "ready"}

    return app


if __name__ == "__main__":
    args = parse_args(__doc__ or "")
    serve(make_app(), args.port)
