"""The one place errors become HTTP answers: ``{"error": "...", "detail": [...]}``."""

from __future__ import annotations

import logging
import math
from collections.abc import Sequence
from typing import Any

import orjson
from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from starlette.exceptions import HTTPException

from service.errors import InvalidInput, MalformedJSON, ServiceError
from service.http.responses import JSONResponse

log = logging.getLogger("service.errors")


def _where(loc: Sequence[Any]) -> str:
    path = ""
    for part in loc:
        if part == "body" and not path:
            continue
        if isinstance(part, int):
            path += f"[{part}]"
        elif not (isinstance(part, str) and part.startswith("<")):  # a union's tag
            path += f".{part}" if path else str(part)
    return path or "request body"


def _show(value: Any, limit: int = 80) -> str:
    """A value as the client sent it, in JSON terms."""
    if isinstance(value, float) and not math.isfinite(value):
        return "NaN" if math.isnan(value) else ("Infinity" if value > 0 else "-Infinity")
    try:
        text = orjson.dumps(value).decode()
    except TypeError:
        text = repr(value)
    return text if len(text) <= limit else text[: limit - 3] + "..."


def _message(error: Any) -> str:
    """pydantic's message, minus internal class names."""
    if error["type"] in {"model_type", "model_attributes_type", "dict_type"}:
        return "Input should be a JSON object"
    return str(error["msg"])


def from_validation_error(exc: RequestValidationError) -> ServiceError:
    """Turn FastAPI's own validation error into our 400 (not JSON) or 422 (wrong content)."""
    errors = list(exc.errors())
    if errors and errors[0].get("type") == "json_invalid":
        reason = errors[0].get("ctx", {}).get("error", "")
        return MalformedJSON(f"expected a JSON body, received invalid JSON ({reason})")
    return invalid_input(errors)


def invalid_input(errors: Sequence[Any]) -> InvalidInput:
    """A 422 whose message names the first problem: where, what was expected, what came."""
    if not errors:
        return InvalidInput("invalid request")
    first = errors[0]
    detail = [{"loc": _where(e["loc"]), "msg": _message(e), "type": e["type"]} for e in errors[:20]]
    where = _where(first["loc"])
    if first["type"] == "missing":
        if where == "request body":
            return InvalidInput("expected a JSON object body, received nothing", detail=detail)
        return InvalidInput(
            f"expected the field {where!r}, received a body without it", detail=detail
        )
    if first["type"] in {"model_type", "model_attributes_type"} and where == "request body":
        return InvalidInput(
            f"expected a JSON object body, received {_show(first.get('input'))}", detail=detail
        )
    if first["type"] == "extra_forbidden":
        return InvalidInput(
            f"expected only documented fields, received unknown field {where!r}", detail=detail
        )
    message = _message(first)
    message = message[:1].lower() + message[1:]
    return InvalidInput(
        f"invalid {where}: {message}; received {_show(first.get('input'))}", detail=detail
    )


def status_for(exc: ServiceError, request: Request) -> int:
    """The HTTP status of ``exc``: invalid input as the serving route's protocol answers it."""
    if isinstance(exc, InvalidInput):
        route = request.scope.get("route")
        return getattr(route, "invalid_input_status", exc.status_code)
    return exc.status_code


def document_errors(document: dict[str, Any]) -> dict[str, Any]:
    """``document`` without the 422 ``HTTPValidationError`` answers FastAPI adds on its own.

    FastAPI documents one for every operation with parameters, in a shape this service
    never sends (``from_validation_error`` makes an ``ErrorResponse`` of its errors). None
    of our operations can get one: their parameters are strings and they parse their
    bodies themselves, documenting the errors they answer. In place, and idempotent.
    """
    generated = "#/components/schemas/HTTPValidationError"
    for item in document.get("paths", {}).values():
        for operation in item.values():
            responses = operation.get("responses", {})
            content = responses.get("422", {}).get("content", {}).get("application/json", {})
            if content.get("schema", {}).get("$ref") == generated:
                del responses["422"]
    schemas = document.get("components", {}).get("schemas", {})
    for name in ("HTTPValidationError", "ValidationError"):
        schemas.pop(name, None)
    return document


def request_id(request: Request) -> str | None:
    """The id RequestIdMiddleware gave this request."""
    return getattr(request.state, "request_id", None)


def error_response(exc: ServiceError, request: Request) -> JSONResponse:
    """The JSON answer for any ``ServiceError`` raised while serving ``request``."""
    body: dict[str, Any] = {"error": exc.message}
    if exc.detail:
        body["detail"] = exc.detail
    body["request_id"] = request_id(request)
    status = status_for(exc, request)
    return JSONResponse(body, status_code=status, headers=exc.headers())


def unexpected_response(request: Request, exc: Exception) -> JSONResponse:
    """A generic 500 for a bug: the trace goes to the log, the client gets the request id.

    The ``X-Request-ID`` header is the gateway's (``service.http.gateway``), outermost.
    """
    rid = request_id(request)
    log.error(
        "unexpected error on %s %s (request %s)",
        request.method,
        request.url.path,
        rid,
        exc_info=(type(exc), exc, exc.__traceback__),
    )
    body = {
        "error": f"internal server error; quote request id {rid} to the operator",
        "request_id": rid,
    }
    return JSONResponse(body, status_code=500)


def install_error_handlers(app: FastAPI) -> None:
    """Register the handlers that make every error a JSON body with an ``error`` string."""

    async def service_error(request: Request, exc: Exception) -> JSONResponse:
        assert isinstance(exc, ServiceError)
        return error_response(exc, request)

    async def validation_error(request: Request, exc: Exception) -> JSONResponse:
        assert isinstance(exc, RequestValidationError)
        return error_response(from_validation_error(exc), request)

    async def http_error(request: Request, exc: Exception) -> JSONResponse:
        assert isinstance(exc, HTTPException)
        if exc.status_code == 404:
            message = f"expected a served path, received {request.method} {request.url.path}"
        elif exc.status_code == 405:
            message = f"expected another method for {request.url.path}, received {request.method}"
        else:
            message = str(exc.detail)
        body = {"error": message, "request_id": request_id(request)}
        return JSONResponse(body, status_code=exc.status_code, headers=exc.headers)

    async def unexpected(request: Request, exc: Exception) -> JSONResponse:
        return unexpected_response(request, exc)

    app.add_exception_handler(ServiceError, service_error)
    app.add_exception_handler(RequestValidationError, validation_error)
    app.add_exception_handler(HTTPException, http_error)
    app.add_exception_handler(Exception, unexpected)
