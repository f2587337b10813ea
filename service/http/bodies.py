"""Request bodies: parsed and validated in one pass by pydantic-core, whatever the Content-Type.

``Model.model_validate_json`` parses the raw bytes in Rust and validates as it goes,
faster than parsing to Python objects and validating those. Clients of model
servers often send JSON without ``Content-Type: application/json`` (curl without
``-H``, TF Serving clients); we accept it as TF Serving does. ``NaN``, ``Infinity``
and ``1e999`` parse as numbers and are then refused by the schema (422: "expected a
finite number"), while text that is not JSON at all is a 400.
"""

from __future__ import annotations

from typing import Any, TypeVar

import numpy as np
from pydantic import BaseModel, ValidationError
from starlette.requests import Request

from service.errors import MalformedJSON, ServiceError
from service.http.error_responses import invalid_input
from service.inference.images import EncodedImages

M = TypeVar("M", bound=BaseModel)


#: Every byte but brackets: ``bytes.translate`` deletes them at C speed, leaving a short
#: string of brackets to measure (a 10,000-row body: 400 KB in, 20 KB out).
_NOT_BRACKETS = bytes(sorted(set(range(256)) - set(b"[]{}")))


def check_depth(raw: bytes, limit: int) -> None:
    """Refuse (400) bodies nested deeper than ``limit`` arrays/objects.

    Brackets inside strings count too, which can only over-estimate the depth; our
    request bodies have no free text where that would matter.
    """
    brackets = raw.translate(None, _NOT_BRACKETS)
    if len(brackets) <= limit:
        return  # cannot be deeper than the number of brackets
    chars = np.frombuffer(brackets, dtype=np.uint8)
    steps = np.where((chars == ord("[")) | (chars == ord("{")), 1, -1).astype(np.int32)
    depth = int(np.cumsum(steps).max(initial=0))
    if depth > limit:
        raise MalformedJSON(
            f"expected JSON nested at most {limit} levels deep, received {depth} levels"
        )


def parse(model: type[M], raw: bytes, max_depth: int = 32) -> M:
    """``raw`` validated as ``model``; raises 400 (not JSON) or 422 (not what ``model`` takes)."""
    check_depth(raw, max_depth)
    try:
        return model.model_validate_json(raw)
    except ValidationError as exc:
        raise problem(exc, raw) from None


def problem(exc: ValidationError, raw: bytes) -> ServiceError:
    """The client-facing error for a failed validation of ``raw``."""
    errors = exc.errors(include_url=False)
    if errors and errors[0]["type"] == "json_invalid":
        if not raw.strip():
            return MalformedJSON("expected a JSON body, received an empty body")
        reason = errors[0].get("ctx", {}).get("error", "")
        return MalformedJSON(f"expected a JSON body, received invalid JSON ({reason})")
    return invalid_input(errors)


def header(request: Request, name: bytes) -> str | None:
    """The first value of the header ``name`` (lower case), if the request has one.

    Read from the raw headers (ASGI gives their names in lower case): every predict
    request asks, and ``request.headers`` would build a ``Headers`` object to answer.
    """
    for key, value in request.scope["headers"]:
        if key == name:
            text: str = value.decode("latin-1")
            return text
    return None


def is_image(request: Request) -> bool:
    """True when the body is one image file (``Content-Type: image/png``, ``image/jpeg``, ...)."""
    content_type = header(request, b"content-type")
    return content_type is not None and content_type.lower().lstrip().startswith("image/")


async def image(request: Request) -> EncodedImages:
    """The body as one image file, for any predict path (decoded by the data plane)."""
    return EncodedImages([await request.body()], ["the request body"])


async def read(request: Request, model: type[M], max_depth: int = 32) -> M:
    """The request's body validated as ``model``."""
    return parse(model, await request.body(), max_depth)


#: Where the OpenAPI document keeps every schema; the pydantic ``$ref`` template for it.
REF_TEMPLATE = "#/components/schemas/{model}"


#: How an image body is documented: any predict path takes one PNG or JPEG file as its body.
def openapi_body(model: type[BaseModel], *, required: bool = True) -> dict[str, Any]:
    """``openapi_extra`` that documents ``model`` as the route's JSON request body.

    ``required=False`` for a route that takes no body as an empty one.

    FastAPI never sees these bodies (the routes parse them themselves), so their schemas
    are not among its components. The body is a ``$ref`` into ``#/components/schemas``
    whose ``$defs`` carry the schemas to put there: ``model``'s and those of the models
    it nests. ``hoist_body_schemas`` moves them once FastAPI has built the document (left
    inline, a nested model's ``#/$defs/...`` reference would point at the document's
    root, where nothing is, and clients could not be generated).
    """
    schema = model.model_json_schema(ref_template=REF_TEMPLATE)
    definitions = schema.pop("$defs", {})
    name = schema["title"]
    body = {"$ref": REF_TEMPLATE.format(model=name), "$defs": {**definitions, name: schema}}
    content: dict[str, Any] = {"application/json": {"schema": body}}
    return {"requestBody": {"required": required, "content": content}}


def hoist_body_schemas(document: dict[str, Any]) -> dict[str, Any]:
    """``document`` with its request bodies' ``$defs`` moved into ``components/schemas``.

    In place, and idempotent (FastAPI caches the document). Two different schemas under
    one name are refused: generated clients name their classes after the schemas.
    """
    schemas: dict[str, Any] = document.setdefault("components", {}).setdefault("schemas", {})
    for item in document.get("paths", {}).values():
        for operation in item.values():
            content = operation.get("requestBody", {}).get("content", {})
            for media in content.values():
                for name, schema in media.get("schema", {}).pop("$defs", {}).items():
                    if schemas.setdefault(name, schema) != schema:
                        raise ValueError(
                            f"expected one schema named {name!r} in the OpenAPI document, "
                            "received two different ones: give one model a title of its own"
                        )
    document["components"]["schemas"] = dict(sorted(schemas.items()))
    return document
