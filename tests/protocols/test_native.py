"""The native HTTP API, against the real server (``python -m service``) over real HTTP."""

from __future__ import annotations

import json
import math
import shutil
from pathlib import Path
from typing import Any

import httpx
import keras
import numpy as np
import pytest

from model_training.data import BLOB_CENTERS
from service.settings import Settings
from tests.conftest import TrainedRepository, in_process
from tests.reference import softmax_reference

GOOD = {"instances": [[15.0, 0.0]]}


def assert_still_serving(client: httpx.Client) -> None:
    response = client.post("/predict", json=GOOD)
    assert response.status_code == 200
    assert response.json()["predictions"][0]["argmax"] == 0


def keras_reference(trained: TrainedRepository, x: np.ndarray) -> np.ndarray:
    model = keras.saving.load_model(
        trained.repository / "blobs" / "1" / "model.keras", compile=False, safe_mode=True
    )
    return np.asarray(model(x.astype(np.float32), training=False), dtype=np.float64)


# --- /predict ---------------------------------------------------------------------------


def test_predict_classifies_points_near_each_blob_centre(client: httpx.Client) -> None:
    offsets = np.array([[0.0, 0.0], [0.7, -0.4], [-0.5, 0.6]])
    points = [list(np.add(c, o)) for c in BLOB_CENTERS for o in offsets]
    response = client.post("/predict", json={"instances": points})
    assert response.status_code == 200
    body = response.json()
    assert (body["model"], body["version"]) == ("blobs", "1")
    predictions = body["predictions"]
    assert [p["argmax"] for p in predictions] == [k for k in range(4) for _ in offsets]
    for p in predictions:
        assert len(p["probabilities"]) == 4
        assert sum(p["probabilities"]) == pytest.approx(1.0, abs=1e-12)
        assert p["argmax"] == int(np.argmax(p["probabilities"]))
        assert p["label"] == str(p["argmax"])
        assert p["probabilities"][p["argmax"]] > 0.9


def test_predict_matches_the_saved_keras_model_within_1e_5(
    client: httpx.Client, trained: TrainedRepository
) -> None:
    x = np.random.default_rng(5).uniform(-10, 40, size=(500, 2))
    body = {"instances": x.tolist(), "format": "columnar", "calibrated": False}
    response = client.post("/predict", json=body)
    assert response.status_code == 200
    served = np.array(response.json()["probabilities"])
    assert np.abs(served - keras_reference(trained, x)).max() < 1e-5


def test_predict_is_calibrated_by_default_with_the_versions_temperature(
    trained: TrainedRepository, tmp_path: Path
) -> None:
    """A version whose trainer kept a temperature (the blobs' is not kept: T = 1) serves
    softmax(z / T) by default and the Keras model's own softmax with calibrated=false."""
    repository = tmp_path / "models"
    shutil.copytree(trained.repository / "blobs", repository / "blobs")
    path = repository / "blobs" / "1" / "metadata.json"
    metadata = json.loads(path.read_text())
    metadata["calibration"] = {**metadata["calibration"], "temperature": 0.5, "kept": True}
    path.write_text(json.dumps(metadata))  # the hashes cover the model files, not this one
    points = np.random.default_rng(6).uniform(-5, 35, size=(50, 2)).tolist()
    with in_process(Settings(model_repository=repository)) as client:
        assert client.get("/models/blobs").json()["calibration"]["temperature"] == 0.5
        raw = client.post("/predict", json={"instances": points, "calibrated": False}).json()
        calibrated = client.post("/predict", json={"instances": points}).json()
    for r, c in zip(raw["predictions"], calibrated["predictions"], strict=True):
        # softmax(z / T) from the raw distribution: log p = z - logsumexp(z)
        z = np.log(np.array(r["probabilities"], dtype=np.float64)) / 0.5
        expected = np.exp(z - z.max()) / np.exp(z - z.max()).sum()
        np.testing.assert_allclose(c["probabilities"], expected, rtol=1e-9, atol=1e-300)
        assert c["argmax"] == r["argmax"]
    assert raw != calibrated


def test_predict_flags_inputs_unlike_the_training_data(client: httpx.Client) -> None:
    reference = client.get("/models/blobs").json()["training_data"]["ood"]
    means = np.array(reference["class_means"], dtype=np.float64)
    precision = np.array(reference["precision"], dtype=np.float64)
    points = [[15.0, 0.0], [0.2, 14.8], [30.0, 15.5], [1000.0, -1000.0], [22.5, 7.5], [-40.0, 60.0]]
    predictions = client.post("/predict", json={"instances": points}).json()["predictions"]
    for point, p in zip(points, predictions, strict=True):
        diffs = np.array(point) - means
        expected = float(np.sqrt(min(d @ precision @ d for d in diffs)))
        assert p["ood_distance"] == pytest.approx(expected, rel=1e-9)
        assert p["ood"] == (expected > reference["threshold"])
    assert [p["ood"] for p in predictions] == [False, False, False, True, True, True]
    far = predictions[3]
    assert max(far["probabilities"]) > 0.99  # the softmax is sure of a class far from any data ...
    assert far["ood"]  # ... which is exactly why the flag is there


def test_predict_columnar_format_has_one_array_per_field(client: httpx.Client) -> None:
    instances = [[15.0, 0.0], [30.0, 15.0]]
    rows = client.post("/predict", json={"instances": instances}).json()
    columns = client.post("/predict", json={"instances": instances, "format": "columnar"}).json()
    fields = {
        "model",
        "version",
        "probabilities",
        "argmax",
        "labels",
        "entropy",
        "ood",
        "ood_distance",
    }
    assert set(columns) == fields
    assert columns["probabilities"] == [p["probabilities"] for p in rows["predictions"]]
    assert columns["entropy"] == [p["entropy"] for p in rows["predictions"]]
    assert columns["ood"] == [p["ood"] for p in rows["predictions"]]
    assert columns["ood_distance"] == [p["ood_distance"] for p in rows["predictions"]]
    assert columns["argmax"] == [0, 3]
    assert columns["labels"] == ["0", "3"]


def test_predict_reports_the_entropy_of_each_distribution(client: httpx.Client) -> None:
    points = [[15.0, 0.0], [7.5, 7.5], [22.5, 15.0], [-50.0, 80.0]]
    for p in client.post("/predict", json={"instances": points}).json()["predictions"]:
        expected = -sum(q * math.log(q) for q in p["probabilities"] if q > 0)
        assert p["entropy"] == pytest.approx(expected, rel=1e-12, abs=1e-300)
        assert 0.0 <= p["entropy"] <= math.log(4) + 1e-12
    certain, between = client.post("/predict", json={"instances": points[:2]}).json()["predictions"]
    assert between["entropy"] > certain["entropy"]  # halfway between two blobs is less sure


def test_predict_forms_with_model_and_version_agree(client: httpx.Client) -> None:
    answers = [
        client.post(path, json=GOOD).json()
        for path in ("/predict", "/models/blobs/predict", "/models/blobs/versions/1/predict")
    ]
    assert answers[0] == answers[1] == answers[2]


def test_predict_reads_json_whatever_the_content_type(client: httpx.Client) -> None:
    response = client.post(
        "/predict", content=b'{"instances": [[15, 0]]}', headers={"content-type": "text/plain"}
    )
    assert response.status_code == 200


def test_predict_is_deterministic(client: httpx.Client) -> None:
    first = client.post("/predict", json={"instances": [[3.3, 7.7]] * 3}).json()
    second = client.post("/predict", json={"instances": [[3.3, 7.7]]}).json()
    assert first["predictions"][0] == first["predictions"][2] == second["predictions"][0]


# --- errors -----------------------------------------------------------------------------

BAD_PREDICT: list[tuple[str, bytes, int, str]] = [
    ("malformed JSON", b'{"instances": [[1, 2]', 400, "invalid JSON"),
    ("empty body", b"", 400, "empty body"),
    ("not an object", b"[[1, 2]]", 422, "JSON object"),
    ("missing instances", b'{"rows": [[1, 2]]}', 422, "'instances'"),
    ("unknown field", b'{"instances": [[1, 2]], "extra": 1}', 422, "unknown field 'extra'"),
    ("wrong width", b'{"instances": [[1, 2, 3]]}', 422, "expected 2 features per instance"),
    ("ragged rows", b'{"instances": [[1, 2], [1]]}', 422, "received 1 in instances[1]"),
    ("string number", b'{"instances": [[1, "1.5"]]}', 422, 'received "1.5"'),
    ("boolean", b'{"instances": [[1, true]]}', 422, "received true"),
    ("null", b'{"instances": [[1, null]]}', 422, "received null"),
    ("NaN", b'{"instances": [[1, NaN]]}', 422, "finite number; received NaN"),
    ("Infinity", b'{"instances": [[1, Infinity]]}', 422, "finite number; received Infinity"),
    ("1e999", b'{"instances": [[1, 1e999]]}', 422, "finite number; received Infinity"),
    ("-1e999", b'{"instances": [[-1e999, 1]]}', 422, "received -Infinity"),
    ("empty instances", b'{"instances": []}', 422, "at least 1 item"),
    ("flat instances", b'{"instances": [1, 2]}', 422, "instances[0]"),
    ("beyond float32", b'{"instances": [[1e300, 0]]}', 422, "float32 range"),
    ("bad format", b'{"instances": [[1, 2]], "format": "csv"}', 422, "'rows' or 'columnar'"),
    ("calibrated not bool", b'{"instances": [[1, 2]], "calibrated": "yes"}', 422, "boolean"),
]


def assert_error(response: httpx.Response, status: int, fragment: str) -> dict[str, Any]:
    assert response.status_code == status, response.text
    assert response.headers["content-type"] == "application/json"
    body = response.json()
    assert isinstance(body["error"], str)
    assert fragment in body["error"], body["error"]
    for leak in ("Traceback", 'File "', "/site-packages/", "pydantic", "PredictRequest"):
        assert leak not in response.text
    return body


@pytest.mark.parametrize(
    ("case", "body", "status", "fragment"), BAD_PREDICT, ids=[c[0] for c in BAD_PREDICT]
)
def test_predict_rejects_bad_input_clearly_and_keeps_serving(
    client: httpx.Client, case: str, body: bytes, status: int, fragment: str
) -> None:
    response = client.post("/predict", content=body, headers={"content-type": "application/json"})
    error = assert_error(response, status, fragment)
    if status == 422:
        assert "expected" in error["error"] or "should" in error["error"]
        assert "received" in error["error"]
    assert_still_serving(client)


def test_predict_unknown_model_is_404(client: httpx.Client) -> None:
    body = assert_error(client.post("/models/nope/predict", json=GOOD), 404, "'nope'")
    assert "blobs" in body["error"]


@pytest.mark.parametrize("version", ["2", "0", "abc", "-1", "1.0"])
def test_predict_unknown_version_is_404(client: httpx.Client, version: str) -> None:
    assert_error(
        client.post(f"/models/blobs/versions/{version}/predict", json=GOOD), 404, "version"
    )


def test_unknown_path_and_wrong_method_answer_json(client: httpx.Client) -> None:
    assert_error(client.get("/nowhere"), 404, "/nowhere")
    assert_error(client.get("/predict"), 405, "GET")


# --- /softmax ---------------------------------------------------------------------------


@pytest.mark.parametrize(
    "logits", [[2.0, 4.3, 1.2, -3.1], [13, 31, 5], [0, 100, 0], [1000, 0, -1000]]
)
def test_softmax_endpoint_matches_reference_to_1e12(
    client: httpx.Client, logits: list[float]
) -> None:
    response = client.post("/softmax", json={"logits": logits})
    assert response.status_code == 200
    body = response.json()
    for got, want in zip(body["probabilities"], softmax_reference(logits), strict=True):
        assert got == pytest.approx(want, rel=1e-12, abs=0)
    assert body["argmax"] == int(np.argmax(logits))


def test_softmax_endpoint_keeps_3_72e_44(client: httpx.Client) -> None:
    probabilities = client.post("/softmax", json={"logits": [0, 100, 0]}).json()["probabilities"]
    assert 3.72e-44 < probabilities[0] < 3.73e-44


@pytest.mark.parametrize("temperature", [1e-3, 0.1, 1.0, 10.0, 1e3])
def test_softmax_endpoint_applies_temperature(client: httpx.Client, temperature: float) -> None:
    for logits in ([2.0, 4.3, 1.2, -3.1], [1000, 0, -1000]):
        body = client.post("/softmax", json={"logits": logits, "temperature": temperature}).json()
        for got, want in zip(
            body["probabilities"], softmax_reference(logits, temperature), strict=True
        ):
            assert got == pytest.approx(want, rel=1e-12, abs=0)


def test_softmax_endpoint_takes_a_batch(client: httpx.Client) -> None:
    batch = [[13, 31, 5], [0, 100, 0], [3, 2, 1]]
    body = client.post("/softmax", json={"logits": batch}).json()
    assert body["argmax"] == [1, 1, 0]
    for row, logits in zip(body["probabilities"], batch, strict=True):
        assert row == pytest.approx(softmax_reference(logits), rel=1e-12)


BAD_SOFTMAX: list[tuple[str, bytes, int, str]] = [
    ("zero temperature", b'{"logits": [1, 2], "temperature": 0}', 422, "temperature"),
    ("negative temperature", b'{"logits": [1, 2], "temperature": -1}', 422, "temperature"),
    ("NaN temperature", b'{"logits": [1, 2], "temperature": NaN}', 422, "temperature"),
    ("empty logits", b'{"logits": []}', 422, "logits"),
    ("empty rows", b'{"logits": [[]]}', 422, "at least one logit"),
    ("ragged batch", b'{"logits": [[1, 2], [1, 2, 3]]}', 422, "same length"),
    ("string logit", b'{"logits": [1, "2"]}', 422, "logits[1]"),
    ("infinite logit", b'{"logits": [1, 1e999]}', 422, "finite"),
    ("malformed", b'{"logits": [1, 2}', 400, "invalid JSON"),
]


@pytest.mark.parametrize(
    ("case", "body", "status", "fragment"), BAD_SOFTMAX, ids=[c[0] for c in BAD_SOFTMAX]
)
def test_softmax_rejects_bad_input_clearly(
    client: httpx.Client, case: str, body: bytes, status: int, fragment: str
) -> None:
    assert_error(client.post("/softmax", content=body), status, fragment)
    assert_still_serving(client)


# --- health, metadata, docs -------------------------------------------------------------


def test_health_endpoints_answer_200_when_ready(client: httpx.Client) -> None:
    assert client.get("/health/live").status_code == 200
    assert client.get("/health/ready").json() == {"status": "ready"}


def test_models_lists_names_versions_and_default(client: httpx.Client) -> None:
    assert client.get("/models").json() == {
        "models": [{"name": "blobs", "versions": ["1"], "default_version": "1"}]
    }


def test_model_metadata_describes_the_served_version(
    client: httpx.Client, trained: TrainedRepository
) -> None:
    body = client.get("/models/blobs").json()
    assert body["version"] == "1"
    assert body["input_dim"] == 2
    assert body["feature_names"] == ["x1", "x2"]
    assert body["class_names"] == ["0", "1", "2", "3"]
    assert body["metrics"]["test_accuracy"] >= 0.99
    assert body["runtime"] == "litert"
    assert "files" not in body
    assert client.get("/models/blobs/versions/1").json() == body
    assert_error(client.get("/models/other"), 404, "'other'")


def test_docs_work_offline(client: httpx.Client) -> None:
    html = client.get("/docs").text
    assert "cdn" not in html.lower()
    for asset in ("/docs/static/swagger-ui-bundle.js", "/docs/static/swagger-ui.css"):
        assert asset in html
        response = client.get(asset)
        assert response.status_code == 200
        assert len(response.content) > 10_000
    assert "http://" not in html
    assert "https://" not in html


def test_openapi_documents_bodies_with_examples(client: httpx.Client) -> None:
    spec = client.get("/openapi.json").json()
    for path, model in (
        ("/predict", "PredictRequest"),
        ("/models/{name}/predict", "PredictRequest"),
        ("/models/{name}/versions/{version}/predict", "PredictRequest"),
        ("/softmax", "SoftmaxRequest"),
    ):
        operation = spec["paths"][path]["post"]
        schema = operation["requestBody"]["content"]["application/json"]["schema"]
        assert schema == {"$ref": f"#/components/schemas/{model}"}, path
        assert spec["components"]["schemas"][model]["examples"], path
        assert "422" in operation["responses"]
    assert "examples" in spec["components"]["schemas"]["PredictResponse"]
    for path in ("/health/live", "/health/ready", "/models", "/models/{name}"):
        assert "get" in spec["paths"][path]


def _resolve(spec: dict[str, Any], schema: dict[str, Any]) -> dict[str, Any]:
    ref = schema.get("$ref")
    return spec["components"]["schemas"][ref.split("/")[-1]] if ref else schema


def _examples(spec: dict[str, Any], content: dict[str, Any]) -> list[Any]:
    """The examples documented for one media type (on it, or on its schema)."""
    found = [content["example"]] if "example" in content else []
    schema = _resolve(spec, content.get("schema", {}))
    found += schema.get("examples", [])
    for option in schema.get("anyOf", []) + schema.get("oneOf", []):
        found += _resolve(spec, option).get("examples", [])
    if schema.get("type") == "array" and "items" in schema:  # a list of documented items
        found += [[item] for item in _resolve(spec, schema["items"]).get("examples", [])]
    return found


def test_docs_show_request_and_response_examples_for_every_endpoint(client: httpx.Client) -> None:
    import jsonschema

    spec = client.get("/openapi.json").json()
    missing = []
    for path, operations in spec["paths"].items():
        for method, operation in operations.items():
            for part, content in [
                ("request", operation.get("requestBody", {}).get("content", {})),
                ("response", operation["responses"].get("200", {}).get("content", {})),
            ]:
                for media, body in content.items():
                    examples = _examples(spec, body)
                    if not examples:
                        missing.append(f"{method.upper()} {path} {part} {media}")
                    schema = {**body.get("schema", {}), "components": spec["components"]}
                    for example in examples:  # every example is valid for its own schema
                        jsonschema.validate(example, schema)
    assert not missing, missing
