"""TF Serving's REST API on the real server, requests written as in its documentation."""

from __future__ import annotations

from typing import Any

import httpx
import pytest

from tests.protocols.test_native import assert_error

ROWS = [[15.0, 0.0], [29.5, 14.2], [0.3, 15.1]]


def native(client: httpx.Client, rows: list[list[float]]) -> list[list[float]]:
    """The same rows through /predict: the reference every answer must equal exactly."""
    body = client.post("/predict", json={"instances": rows, "format": "columnar"}).json()
    probabilities: list[list[float]] = body["probabilities"]
    return probabilities


# --- predict ----------------------------------------------------------------------------


def test_row_format_as_curl_sends_it_answers_predictions_equal_to_predict(
    client: httpx.Client,
) -> None:
    # `curl -d '{"instances": ...}' -X POST .../v1/models/blobs:predict`: form content type.
    response = client.post(
        "/v1/models/blobs:predict",
        content=b'{"instances": [[15, 0], [29.5, 14.2], [0.3, 15.1]]}',
        headers={"content-type": "application/x-www-form-urlencoded"},
    )
    assert response.status_code == 200, response.text
    assert response.headers["content-type"] == "application/json"
    assert response.json() == {"predictions": native(client, ROWS)}


@pytest.mark.parametrize(
    "body",
    [
        {"inputs": ROWS},
        {"inputs": {"input": ROWS}},
        {"signature_name": "serving_default", "inputs": {"dense_input": ROWS}},
        {"signature_name": "", "inputs": ROWS},
    ],
    ids=["list", "named", "any name, with signature", "empty signature name: the default"],
)
def test_columnar_format_answers_outputs_equal_to_predict(
    client: httpx.Client, body: dict[str, Any]
) -> None:
    response = client.post("/v1/models/blobs:predict", json=body)
    assert response.status_code == 200, response.text
    assert response.json() == {"outputs": native(client, ROWS)}


def test_row_format_with_named_inputs_and_versioned_path(client: httpx.Client) -> None:
    body = {"instances": [{"input": row} for row in ROWS]}
    response = client.post("/v1/models/blobs/versions/1:predict", json=body)
    assert response.status_code == 200, response.text
    assert response.json() == {"predictions": native(client, ROWS)}


def test_predictions_are_distributions_over_the_classes(client: httpx.Client) -> None:
    # ROWS lie near the centres of blobs 0, 3 and 2 (model_training.data.BLOB_CENTERS).
    predictions = client.post("/v1/models/blobs:predict", json={"instances": ROWS}).json()
    for row, label in zip(predictions["predictions"], [0, 3, 2], strict=True):
        assert len(row) == 4
        assert sum(row) == pytest.approx(1.0, abs=1e-12)
        assert max(range(4), key=row.__getitem__) == label


BAD: list[tuple[str, bytes, int, str]] = [
    ("both formats", b'{"instances": [[1, 2]], "inputs": [[1, 2]]}', 400, "received both"),
    ("neither format", b'{"signature_name": "serving_default"}', 400, "received neither"),
    (
        "other signature",
        b'{"signature_name": "classify", "instances": [[1, 2]]}',
        400,
        "'classify'",
    ),
    ("wrong width", b'{"instances": [[1, 2, 3]]}', 400, "expected 2 features"),
    ("two named inputs", b'{"instances": [{"a": [1, 2], "b": [1, 2]}]}', 400, "one input"),
    ("NaN", b'{"instances": [[1, NaN]]}', 400, "finite number; received NaN"),
    ("string", b'{"instances": [[1, "2"]]}', 400, 'received "2"'),
    ("unknown field", b'{"instances": [[1, 2]], "examples": []}', 400, "'examples'"),
    ("empty instances", b'{"instances": []}', 400, "at least 1 item"),
    ("malformed", b'{"instances": [[1, 2]', 400, "invalid JSON"),
]


@pytest.mark.parametrize(("case", "body", "status", "fragment"), BAD, ids=[c[0] for c in BAD])
def test_bad_requests_get_400_with_an_error_field(
    client: httpx.Client, case: str, body: bytes, status: int, fragment: str
) -> None:
    assert_error(client.post("/v1/models/blobs:predict", content=body), status, fragment)


def test_unknown_model_or_version_is_404(client: httpx.Client) -> None:
    rows = {"instances": [[1.0, 2.0]]}
    assert_error(client.post("/v1/models/half:predict", json=rows), 404, "'half'")
    assert_error(client.post("/v1/models/blobs/versions/9:predict", json=rows), 404, "'9'")
    assert_error(client.get("/v1/models/half"), 404, "'half'")
    assert_error(client.get("/v1/models/blobs/versions/9"), 404, "'9'")
    assert_error(client.get("/v1/models/half/metadata"), 404, "'half'")


# --- status and metadata ----------------------------------------------------------------


def test_model_status_is_tf_servings_json_with_kserves_name_and_ready(
    client: httpx.Client,
) -> None:
    expected = {
        "name": "blobs",
        "ready": True,
        "model_version_status": [
            {
                "version": "1",
                "state": "AVAILABLE",
                "status": {"error_code": "OK", "error_message": ""},
            }
        ],
    }
    assert client.get("/v1/models/blobs").json() == expected
    assert client.get("/v1/models/blobs/versions/1").json() == expected


def test_metadata_describes_the_serving_signature(client: httpx.Client) -> None:
    def tensor(dtype: str, width: int, name: str) -> dict[str, Any]:
        dims = [{"size": "-1", "name": ""}, {"size": str(width), "name": ""}]
        return {"dtype": dtype, "tensor_shape": {"dim": dims, "unknown_rank": False}, "name": name}

    expected = {
        "model_spec": {"name": "blobs", "signature_name": "", "version": "1"},
        "metadata": {
            "signature_def": {
                "signature_def": {
                    "serving_default": {
                        "inputs": {"input": tensor("DT_FLOAT", 2, "serving_default_input:0")},
                        "outputs": {"probabilities": tensor("DT_DOUBLE", 4, "probabilities:0")},
                        "method_name": "tensorflow/serving/predict",
                    }
                }
            }
        },
    }
    assert client.get("/v1/models/blobs/metadata").json() == expected
    assert client.get("/v1/models/blobs/versions/1/metadata").json() == expected


def test_colon_paths_route_apart_from_the_status_path(client: httpx.Client) -> None:
    assert client.get("/v1/models/blobs").status_code == 200
    assert_error(client.get("/v1/models/blobs:predict"), 404, "'blobs:predict'")
    assert_error(client.post("/v1/models/blobs", json={}), 405, "POST")
    assert_error(client.post("/v1/models/blobs:regress", json={}), 501, ":regress")


def test_openapi_documents_the_tf_serving_paths(client: httpx.Client) -> None:
    spec = client.get("/openapi.json").json()
    paths = spec["paths"]
    for path in ("/v1/models/{name}:predict", "/v1/models/{name}/versions/{version}:predict"):
        schema = paths[path]["post"]["requestBody"]["content"]["application/json"]["schema"]
        assert schema == {"$ref": "#/components/schemas/TFServingPredictRequest"}, path
    assert spec["components"]["schemas"]["TFServingPredictRequest"]["examples"]
    for path in ("/v1/models/{name}", "/v1/models/{name}/metadata"):
        assert "get" in paths[path]


@pytest.mark.parametrize(
    ("method", "path", "received"),
    [
        ("POST", "/v1/models/blobs:regress", "a classifier has no regression signature"),
        ("POST", "/v1/models/blobs/versions/1:regress", "a classifier has no regression signature"),
        ("POST", "/v1/models/blobs/labels/stable:regress", "no regression signature"),
    ],
)
def test_regress_answers_501_saying_a_classifier_has_no_regression_signature(
    client: httpx.Client, method: str, path: str, received: str
) -> None:
    response = client.request(method, path, json={"instances": [[15.0, 0.0]]})
    assert response.status_code == 501
    error = response.json()["error"]
    assert error.startswith("expected ")
    assert received in error
    assert error.endswith("not implemented here")
