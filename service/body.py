"""Request bodies: read as JSON whatever the Content-Type says, then validated by pydantic.

Clients of model servers (curl without ``-H``, TF Serving clients) often send JSON
without ``Content-Type: application/json``; we accept it like TF Serving does.
orjson parses the body; when it refuses, the standard library gets a second look so
that ``NaN``, ``Infinity`` and ``1e999`` reach validation and are answered 422
("expected a finite number") rather than 400: they are numbers, just not finite ones.
"""

from __future__ import annotations

import json
from collections.abc import Awaitable, Callable
from typing import Any, TypeVar

import orjson
from fastapi import Request
from pydantic import BaseModel, ValidationError

from service.errors import MalformedJSON
from service.errors_http import invalid_input

M = TypeVar("M", bound=BaseModel)


def parse_json(raw: bytes) -> Any:
    """The JSON value of ``raw``; raises ``MalformedJSON`` saying where it broke."""
    if not raw.strip():
        raise MalformedJSON("expected a JSON body, received an empty body")
    try:
        return orjson.loads(raw)
    except orjson.JSONDecodeError as exc:
        try:
            return json.loads(raw)  # accepts NaN, Infinity and 1e999, which validation refuses
        except (ValueError, RecursionError):
            raise MalformedJSON(f"expected a JSON body, received invalid JSON ({exc})") from None


def json_body(model: type[M]) -> Callable[[Request], Awaitable[M]]:
    """A FastAPI dependency giving the request body validated as ``model``."""

    async def parse(request: Request) -> M:
        data = parse_json(await request.body())
        try:
            return model.model_validate(data)
        except ValidationError as exc:
            raise invalid_input(exc.errors()) from None

    return parse


def openapi_body(model: type[BaseModel]) -> dict[str, Any]:
    """``openapi_extra`` that documents ``model`` as the route's JSON request body."""
    return {
        "requestBody": {
            "required": True,
            "content": {"application/json": {"schema": model.model_json_schema()}},
        }
    }
