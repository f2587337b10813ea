"""The OpenAPI document: valid OpenAPI 3.1, self-contained, and usable by a client generator.

The document is read from the running server, as clients read it. openapi-spec-validator
checks its structure; it does not follow every ``$ref`` (it accepted a request body whose
nested models pointed at ``#/$defs/...``, which exists nowhere), so the references are
resolved here one by one, and a client is generated from the document and used.
"""

from __future__ import annotations

import importlib
import json
import subprocess
import sys
from collections.abc import Callable, Iterator
from typing import Any

import httpx
import pytest
from openapi_spec_validator import validate
from pydantic import create_model

from service.http.bodies import hoist_body_schemas, openapi_body
from tests.conftest import Server

#: The package name given to the generated client (not ours: no clash on import).
CLIENT = "generated_softmax_client"


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


def test_a_request_body_is_required_where_documented_so(
    document: dict[str, Any], client: httpx.Client
) -> None:
    """Found by schemathesis: /v2/repository/index said its body was required, and took none."""
    wrong = []
    for path, item in document["paths"].items():
        for method, operation in item.items():
            if "requestBody" not in operation:
                continue
            url = path.replace("{name}", "blobs").replace("{version}", "1")
            status = client.request(method, url).status_code  # no body at all
            if operation["requestBody"]["required"] != (status in {400, 422}):
                wrong.append(f"{method.upper()} {path}: {status}")
    assert not wrong, wrong
    optional = document["paths"]["/v2/repository/index"]["post"]["requestBody"]
    assert optional["required"] is False


def test_two_different_schemas_under_one_name_are_refused() -> None:
    one = create_model("Body", rows=(list[float], ...))
    other = create_model("Body", logits=(list[float], ...))
    document = {"paths": {"/a": {"post": openapi_body(one)}, "/b": {"post": openapi_body(other)}}}
    with pytest.raises(ValueError, match="'Body'"):
        hoist_body_schemas(document)
    same = {"paths": {"/a": {"post": openapi_body(one)}, "/b": {"post": openapi_body(one)}}}
    assert list(hoist_body_schemas(same)["components"]["schemas"]) == ["Body"]


# --- a generated client -------------------------------------------------------------------


@pytest.fixture(scope="module")
def generated(
    document: dict[str, Any], tmp_path_factory: pytest.TempPathFactory
) -> Iterator[Callable[[str], Any]]:
    """A Python client generated from the document: ``generated("models")`` imports a module.

    openapi-python-client: well kept, typed (attrs) models over httpx, which we have
    already. Its warnings fail the generation: a skipped endpoint is a broken document.
    """
    where = tmp_path_factory.mktemp("client")
    spec = where / "openapi.json"
    spec.write_text(json.dumps(document))
    config = where / "config.json"
    config.write_text(json.dumps({"post_hooks": [], "package_name_override": CLIENT}))
    argv = [sys.executable, "-m", "openapi_python_client", "generate", "--path", str(spec)]
    argv += ["--output-path", str(where / CLIENT), "--meta", "none", "--config", str(config)]
    result = subprocess.run(
        [*argv, "--fail-on-warning"], capture_output=True, text=True, timeout=120, check=False
    )
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    sys.path.insert(0, str(where))
    try:
        yield lambda module: importlib.import_module(f"{CLIENT}.{module}")
    finally:
        sys.path.remove(str(where))
        for name in [m for m in sys.modules if m.split(".")[0] == CLIENT]:
            del sys.modules[name]


def test_the_generated_client_predicts(
    generated: Callable[[str], Any], server: Server, client: httpx.Client
) -> None:
    api, models = generated("client"), generated("models")
    predict = generated("api.predict.predict_predict_post")
    rows = [[15.0, 0.0], [29.5, 14.2]]
    expected = client.post("/predict", json={"instances": rows}).json()["predictions"]
    with api.Client(base_url=server.url, raise_on_unexpected_status=True) as http:
        answer = predict.sync(client=http, body=models.PredictRequest(instances=rows))
        assert isinstance(answer, models.PredictResponse)
        assert (answer.model, answer.version) == ("blobs", "1")
        assert [p.probabilities for p in answer.predictions] == [
            p["probabilities"] for p in expected
        ]
        assert [p.label for p in answer.predictions] == [p["label"] for p in expected]

        columnar = models.PredictRequest(
            instances=rows, format_=models.PredictRequestFormat.COLUMNAR
        )
        answer = predict.sync(client=http, body=columnar)
        assert isinstance(answer, models.ColumnarPredictResponse)
        assert answer.labels == [p["label"] for p in expected]

        wrong = models.PredictRequest(instances=[[1.0, 2.0, 3.0]])
        refused = predict.sync_detailed(client=http, body=wrong)
        assert refused.status_code == 422
        assert isinstance(refused.parsed, models.ErrorResponse)
        assert "expected 2 features" in refused.parsed.error


def test_the_generated_client_infers_through_v2(
    generated: Callable[[str], Any], server: Server, client: httpx.Client
) -> None:
    api, models = generated("client"), generated("models")
    infer = generated("api.v_2_open_inference_protocol.infer_v2_models_name_infer_post")
    rows = [[15.0, 0.0], [29.5, 14.2]]
    expected = client.post("/predict", json={"instances": rows, "format": "columnar"}).json()
    tensor = models.InferInput(
        name="input", shape=[2, 2], datatype="FP64", data=[x for row in rows for x in row]
    )
    request = models.InferenceRequest(
        id="gen-1", inputs=[tensor], outputs=[models.RequestedOutput(name="probabilities")]
    )
    with api.Client(base_url=server.url, raise_on_unexpected_status=True) as http:
        answer = infer.sync(name="blobs", client=http, body=request)
        assert isinstance(answer, models.InferenceResponse)
        assert (answer.model_name, answer.model_version, answer.id) == ("blobs", "1", "gen-1")
        (output,) = answer.outputs
        assert (output.name, output.datatype, output.shape) == ("probabilities", "FP64", [2, 4])
        # FP64: bit-identical to /predict
        assert output.data == [p for row in expected["probabilities"] for p in row]

        refused = infer.sync_detailed(name="nope", client=http, body=request)
        assert refused.status_code == 404
        assert isinstance(refused.parsed, models.ErrorResponse)
        assert "'nope'" in refused.parsed.error
