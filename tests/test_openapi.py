"""The OpenAPI document: valid OpenAPI 3.1, and self-contained.

The document is read from the running server, as clients read it. openapi-spec-validator
checks its structure; it does not follow every ``$ref`` (it accepted a request body whose
nested models pointed at ``#/$defs/...``, which exists nowhere), so the references are
resolved here one by one.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import httpx
import pytest
from openapi_spec_validator import validate
from pydantic import create_model

from service.body import hoist_body_schemas, openapi_body
from tests.conftest import Server


@pytest.fixture(scope="module")
def document(server: Server) -> dict[str, Any]:
    """``/openapi.json`` as the running server publishes it."""
    response = httpx.get(server.url + "/openapi.json", timeout=30)
    assert response.status_code == 200
    document: dict[str, Any] = response.json()
    return document


def references(node: Any, where: str = "#") -> Iterator[tuple[str, str]]:
    """Every ``$ref`` in ``node``, with where it is."""
    if isinstance(node, dict):
        if isinstance(node.get("$ref"), str):
            yield where, node["$ref"]
        for key, value in node.items():
            yield from references(value, f"{where}/{key}")
    elif isinstance(node, list):
        for i, value in enumerate(node):
            yield from references(value, f"{where}/{i}")


def resolve(document: dict[str, Any], ref: str) -> Any:
    """The node a local JSON pointer reference names (KeyError if there is none)."""
    assert ref.startswith("#/"), f"expected a reference within the document, received {ref}"
    node: Any = document
    for part in ref[2:].split("/"):
        part = part.replace("~1", "/").replace("~0", "~")
        node = node[int(part)] if isinstance(node, list) else node[part]
    return node


def nodes(node: Any, where: str = "#") -> Iterator[tuple[str, dict[str, Any]]]:
    """Every object in ``node``, with where it is."""
    if isinstance(node, dict):
        yield where, node
        for key, value in node.items():
            yield from nodes(value, f"{where}/{key}")
    elif isinstance(node, list):
        for i, value in enumerate(node):
            yield from nodes(value, f"{where}/{i}")


def test_the_document_is_valid_openapi_3_1(document: dict[str, Any]) -> None:
    assert document["openapi"].startswith("3.1")
    validate(document)  # raises with the first violation


def test_every_reference_resolves(document: dict[str, Any]) -> None:
    found = list(references(document))
    assert len(found) > 50  # the walk does see the document's references
    broken = []
    for where, ref in found:
        try:
            resolve(document, ref)
        except (AssertionError, KeyError, IndexError, ValueError):
            broken.append(f"{where}: {ref}")
    assert not broken, broken


def test_every_model_is_a_component(document: dict[str, Any]) -> None:
    """No schema defined inline: each model once, by name, in ``#/components/schemas``."""
    inline = [where for where, node in nodes(document["paths"], "#/paths") if "properties" in node]
    assert not inline, inline
    assert not [where for where, node in nodes(document) if "$defs" in node]
    schemas = document["components"]["schemas"]
    titles = [schema.get("title", name) for name, schema in schemas.items()]
    # generators name their classes after the titles
    assert len(set(titles)) == len(titles), sorted(titles)
    for model in ("InferenceRequest", "InferInput", "RequestedOutput", "PredictRequest"):
        assert model in schemas


def test_errors_are_documented_as_they_are_sent(document: dict[str, Any]) -> None:
    """Every documented error is an ErrorResponse (FastAPI's own 422 shape is never sent)."""
    error = {"$ref": "#/components/schemas/ErrorResponse"}
    other = [
        f"{method.upper()} {path} {status}"
        for path, item in document["paths"].items()
        for method, operation in item.items()
        for status, response in operation["responses"].items()
        if status[0] in "45" and response["content"]["application/json"]["schema"] != error
    ]
    assert not other, other
    assert "HTTPValidationError" not in document["components"]["schemas"]


def test_two_different_schemas_under_one_name_are_refused() -> None:
    one = create_model("Body", rows=(list[float], ...))
    other = create_model("Body", logits=(list[float], ...))
    document = {"paths": {"/a": {"post": openapi_body(one)}, "/b": {"post": openapi_body(other)}}}
    with pytest.raises(ValueError, match="'Body'"):
        hoist_body_schemas(document)
    same = {"paths": {"/a": {"post": openapi_body(one)}, "/b": {"post": openapi_body(one)}}}
    assert list(hoist_body_schemas(same)["components"]["schemas"]) == ["Body"]
