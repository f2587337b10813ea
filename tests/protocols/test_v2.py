"""The Open Inference Protocol (KServe V2) on the real server: tritonclient with its defaults,
and raw requests written as the protocol's documentation writes them."""

from __future__ import annotations

import json
import struct
from collections.abc import Iterator
from typing import Any

import httpx
import numpy as np
import numpy.typing as npt
import pytest
import tritonclient.http as triton
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from tritonclient.utils import InferenceServerException

from tests.conftest import Server
from tests.protocols.test_native import assert_error

LABELS = ["0", "1", "2", "3"]


@pytest.fixture
def tc(server: Server) -> Iterator[triton.InferenceServerClient]:
    """tritonclient's HTTP client, as a Triton user creates it."""
    client = triton.InferenceServerClient(server.url.removeprefix("http://"))
    yield client
    client.close()


def points(n: int, seed: int = 3) -> npt.NDArray[np.float64]:
    """Rows spread over and around the four blobs."""
    return np.random.default_rng(seed).uniform(-10, 40, size=(n, 2))


def native(
    client: httpx.Client, x: npt.NDArray[Any], calibrated: bool = True
) -> npt.NDArray[np.float64]:
    """The same rows through /predict (float64): the reference for every answer."""
    request = {"instances": x.tolist(), "format": "columnar", "calibrated": calibrated}
    body = client.post("/predict", json=request).json()
    return np.array(body["probabilities"], dtype=np.float64)


def temperature(client: httpx.Client) -> float:
    """The served version's calibration temperature (1 without calibration)."""
    calibration = client.get("/models/blobs").json()["calibration"]
    return float(calibration["temperature"]) if calibration else 1.0


def softmax64(logits: npt.NDArray[Any], t: float = 1.0) -> npt.NDArray[np.float64]:
    """An independent float64 softmax of logits / t."""
    z = logits.astype(np.float64) / t
    e = np.exp(z - z.max(axis=1, keepdims=True))
    return e / e.sum(axis=1, keepdims=True)


def infer_input(x: npt.NDArray[Any], datatype: str, binary: bool = True) -> triton.InferInput:
    tensor = triton.InferInput("input", list(x.shape), datatype)
    tensor.set_data_from_numpy(x, binary_data=binary)
    return tensor


# --- tritonclient ------------------------------------------------------------------------


def test_health_and_metadata_through_tritonclient(tc: triton.InferenceServerClient) -> None:
    assert tc.is_server_live()
    assert tc.is_server_ready()
    assert tc.is_model_ready("blobs")
    assert tc.is_model_ready("blobs", "1")
    assert not tc.is_model_ready("blobs", "2")
    assert not tc.is_model_ready("nope")
    assert tc.get_server_metadata() == {
        "name": "softmax-serving",
        "version": "0.1.0",
        "extensions": ["binary_tensor_data", "classification", "model_repository"],
    }
    assert tc.get_model_metadata("blobs") == {
        "name": "blobs",
        "versions": ["1"],
        "platform": "litert_tflite",
        "inputs": [{"name": "input", "datatype": "FP32", "shape": [-1, 2]}],
        "outputs": [
            {"name": "probabilities", "datatype": "FP32", "shape": [-1, 4]},
            {"name": "logits", "datatype": "FP32", "shape": [-1, 4]},
        ],
    }
    assert tc.get_model_metadata("blobs", "1") == tc.get_model_metadata("blobs")
    assert tc.get_model_repository_index() == [
        {"name": "blobs", "version": "1", "state": "READY", "reason": ""}
    ]


def test_tritonclient_defaults_binary_fp32_match_predict_rounded_to_float32(
    tc: triton.InferenceServerClient, client: httpx.Client
) -> None:
    x = points(200).astype(np.float32)
    result = tc.infer("blobs", [infer_input(x, "FP32")], request_id="req-7")
    response = result.get_response()
    assert (response["model_name"], response["model_version"], response["id"]) == (
        "blobs",
        "1",
        "req-7",
    )
    assert [o["parameters"]["binary_data_size"] for o in response["outputs"]] == [3200, 3200]
    probabilities = result.as_numpy("probabilities")
    assert probabilities.dtype == np.float32
    assert probabilities.shape == (200, 4)
    reference = native(client, x)
    np.testing.assert_array_equal(probabilities, reference.astype(np.float32))
    logits = result.as_numpy("logits")
    np.testing.assert_allclose(
        softmax64(logits, temperature(client)), reference, rtol=1e-11, atol=1e-300
    )


def test_calibrated_false_gives_the_softmax_of_the_logits(client: httpx.Client) -> None:
    x = points(20, seed=8)
    body = {
        "inputs": [{"name": "input", "shape": [20, 2], "datatype": "FP64", "data": x.tolist()}],
        "parameters": {"calibrated": False},
    }
    answer = client.post("/v2/models/blobs/infer", json=body).json()
    outputs = {o["name"]: np.array(o["data"]).reshape(o["shape"]) for o in answer["outputs"]}
    np.testing.assert_array_equal(outputs["probabilities"], native(client, x, calibrated=False))
    np.testing.assert_allclose(
        softmax64(outputs["logits"]), outputs["probabilities"], rtol=1e-11, atol=1e-300
    )


def test_fp64_inputs_give_fp64_outputs_identical_to_predict(
    tc: triton.InferenceServerClient, client: httpx.Client
) -> None:
    x = points(64, seed=4)
    outputs = [triton.InferRequestedOutput("probabilities")]
    result = tc.infer("blobs", [infer_input(x, "FP64")], outputs=outputs, model_version="1")
    assert [o["name"] for o in result.get_response()["outputs"]] == ["probabilities"]
    probabilities = result.as_numpy("probabilities")
    assert probabilities.dtype == np.float64
    np.testing.assert_array_equal(probabilities, native(client, x))


def test_json_tensors_both_ways_through_tritonclient(
    tc: triton.InferenceServerClient, client: httpx.Client
) -> None:
    x = points(5, seed=5)
    outputs = [
        triton.InferRequestedOutput("logits", binary_data=False),
        triton.InferRequestedOutput("probabilities", binary_data=False),
    ]
    result = tc.infer("blobs", [infer_input(x, "FP64", binary=False)], outputs=outputs)
    response = result.get_response()
    assert [o["name"] for o in response["outputs"]] == ["logits", "probabilities"]
    assert all("data" in o and "parameters" not in o for o in response["outputs"])
    np.testing.assert_array_equal(result.as_numpy("probabilities"), native(client, x))


def test_classification_gives_top_k_strings_as_triton_does(
    tc: triton.InferenceServerClient, client: httpx.Client
) -> None:
    x = points(30, seed=6).astype(np.float32)
    outputs = [triton.InferRequestedOutput("probabilities", class_count=3)]
    result = tc.infer("blobs", [infer_input(x, "FP32")], outputs=outputs)
    got = result.as_numpy("probabilities")
    assert got.shape == (30, 3)
    values = native(client, x).astype(np.float32)
    for row, strings in zip(values, got, strict=True):
        best = sorted(range(4), key=lambda k: -row[k])[:3]
        assert [s.decode() for s in strings] == [f"{float(row[k]):f}:{k}:{LABELS[k]}" for k in best]
    everything = [triton.InferRequestedOutput("logits", binary_data=False, class_count=10)]
    result = tc.infer("blobs", [infer_input(x[:1], "FP32")], outputs=everything)
    output = result.get_response()["outputs"][0]
    assert (output["datatype"], output["shape"]) == ("BYTES", [1, 4])  # at most every class


@pytest.mark.parametrize(
    ("x", "datatype", "status", "fragment"),
    [
        (
            np.zeros((2, 3), np.float32),
            "FP32",
            "400",
            "of shape [N, 2] with N >= 1, received [2, 3]",
        ),
        (np.zeros((2, 2), np.int32), "INT32", "400", "FP32 or FP64, received 'INT32'"),
        (np.zeros((1, 2), np.float16), "FP16", "400", "received 'FP16'"),
        (np.array([[1.0, np.inf]], np.float32), "FP32", "400", "finite"),
        (np.array([[1e300, 0.0]]), "FP64", "400", "float32 range"),
    ],
    ids=["wrong width", "INT32", "FP16", "infinity", "beyond float32"],
)
def test_bad_inputs_raise_in_tritonclient_with_the_reason(
    tc: triton.InferenceServerClient,
    x: npt.NDArray[Any],
    datatype: str,
    status: str,
    fragment: str,
) -> None:
    with pytest.raises(InferenceServerException) as raised:
        tc.infer("blobs", [infer_input(x, datatype)])
    assert raised.value.status() == status
    assert fragment in raised.value.message()


def test_unknown_model_or_version_raise_404(tc: triton.InferenceServerClient) -> None:
    x = np.zeros((1, 2), np.float32)
    for model, version, fragment in [("nope", "", "'nope'"), ("blobs", "9", "'9'")]:
        with pytest.raises(InferenceServerException) as raised:
            tc.infer(model, [infer_input(x, "FP32")], model_version=version)
        assert raised.value.status() == "404"
        assert fragment in raised.value.message()


def test_model_control_is_refused_to_tritonclient_by_default(
    tc: triton.InferenceServerClient,
) -> None:
    for control in (tc.load_model, tc.unload_model):
        with pytest.raises(InferenceServerException) as raised:
            control("blobs")
        assert raised.value.status() == "403"
        assert "SERVICE_MODEL_CONTROL=true" in raised.value.message()
    assert tc.is_model_ready("blobs", "1")


# --- raw requests, as in the protocol's documentation ----------------------------------


def test_json_inference_request_from_the_kserve_documentation(client: httpx.Client) -> None:
    body = {
        "id": "42",
        "inputs": [
            {"name": "input", "shape": [2, 2], "datatype": "FP32", "data": [15.0, 0.0, 29.5, 14.2]}
        ],
        "outputs": [{"name": "probabilities"}],
    }
    response = client.post("/v2/models/blobs/infer", json=body)
    assert response.status_code == 200, response.text
    assert response.headers["content-type"] == "application/json"
    answer = response.json()
    data = answer["outputs"][0].pop("data")
    assert answer == {
        "model_name": "blobs",
        "model_version": "1",
        "id": "42",
        "outputs": [{"name": "probabilities", "datatype": "FP32", "shape": [2, 4]}],
    }
    x = np.array([[15.0, 0.0], [29.5, 14.2]])
    np.testing.assert_array_equal(np.float32(data), native(client, x).astype(np.float32).ravel())


def test_nested_json_data_and_response_without_id(client: httpx.Client) -> None:
    rows = [[15.0, 0.0], [29.5, 14.2]]
    body = {"inputs": [{"name": "x", "shape": [2, 2], "datatype": "FP64", "data": rows}]}
    answer = client.post("/v2/models/blobs/versions/1/infer", json=body).json()
    assert "id" not in answer
    assert [o["name"] for o in answer["outputs"]] == ["probabilities", "logits"]
    assert answer["outputs"][0]["data"] == native(client, np.array(rows)).ravel().tolist()


def binary_request(
    x: npt.NDArray[Any], datatype: str, header: dict[str, Any] | None = None
) -> tuple[bytes, dict[str, str]]:
    """The binary example of Triton's documentation, for ``x``."""
    data = x.tobytes()
    header = header or {
        "model_name": "blobs",
        "inputs": [
            {
                "name": "input",
                "shape": list(x.shape),
                "datatype": datatype,
                "parameters": {"binary_data_size": len(data)},
            }
        ],
        "outputs": [{"name": "probabilities", "parameters": {"binary_data": True}}],
    }
    head = json.dumps(header).encode()
    headers = {
        "Content-Type": "application/octet-stream",
        "Inference-Header-Content-Length": str(len(head)),
    }
    return head + data, headers


def test_binary_request_from_the_triton_documentation(client: httpx.Client) -> None:
    x = points(3, seed=7).astype("<f4")
    content, headers = binary_request(x, "FP32")
    response = client.post("/v2/models/blobs/infer", content=content, headers=headers)
    assert response.status_code == 200, response.text
    assert response.headers["content-type"] == "application/octet-stream"
    size = int(response.headers["inference-header-content-length"])
    header = json.loads(response.content[:size])
    assert header["outputs"] == [
        {
            "name": "probabilities",
            "datatype": "FP32",
            "shape": [3, 4],
            "parameters": {"binary_data_size": 48},
        }
    ]
    assert len(response.content) == size + 48
    got = np.frombuffer(response.content[size:], dtype="<f4").reshape(3, 4)
    np.testing.assert_array_equal(got, native(client, x).astype(np.float32))


def test_binary_data_output_makes_every_output_binary_unless_overridden(
    client: httpx.Client,
) -> None:
    body = {
        "inputs": [{"name": "input", "shape": [1, 2], "datatype": "FP64", "data": [15.0, 0.0]}],
        "parameters": {"binary_data_output": True},
        "outputs": [
            {"name": "logits"},
            {"name": "probabilities", "parameters": {"binary_data": False, "classification": 1}},
        ],
    }
    response = client.post("/v2/models/blobs/infer", json=body)
    size = int(response.headers["inference-header-content-length"])
    logits, top = json.loads(response.content[:size])["outputs"]
    assert logits["parameters"] == {"binary_data_size": 32}
    assert logits["datatype"] == "FP64"
    assert top["data"] == [f"{native(client, np.array([[15.0, 0.0]]))[0, 0]:f}:0:0"]
    assert len(response.content) == size + 32


def test_binary_classification_is_length_prefixed_bytes(client: httpx.Client) -> None:
    x = np.array([[15.0, 0.0]], dtype="<f8")
    header = {
        "inputs": [
            {
                "name": "input",
                "shape": [1, 2],
                "datatype": "FP64",
                "parameters": {"binary_data_size": 16},
            }
        ],
        "outputs": [
            {"name": "probabilities", "parameters": {"binary_data": True, "classification": 2}}
        ],
    }
    content, headers = binary_request(x, "FP64", header)
    response = client.post("/v2/models/blobs/infer", content=content, headers=headers)
    size = int(response.headers["inference-header-content-length"])
    tail = response.content[size:]
    strings, offset = [], 0
    while offset < len(tail):
        (length,) = struct.unpack_from("<I", tail, offset)
        strings.append(tail[offset + 4 : offset + 4 + length].decode())
        offset += 4 + length
    p = native(client, x)[0]
    assert strings == [f"{p[0]:f}:0:0", f"{p[3]:f}:3:3"]


def _json_input(**overrides: Any) -> dict[str, Any]:
    tensor = {"name": "input", "shape": [1, 2], "datatype": "FP32", "data": [15.0, 0.0]}
    return {"inputs": [{**tensor, **overrides}]}


BAD_JSON: list[tuple[str, dict[str, Any], str]] = [
    ("no inputs", {"inputs": []}, "at least 1 item"),
    ("two inputs", {"inputs": _json_input()["inputs"] * 2}, "one input tensor"),
    ("too few values", _json_input(data=[1.0]), "expected 2 values"),
    ("ragged rows", _json_input(shape=[2, 2], data=[[1.0, 2.0], [1.0]]), "ragged"),
    ("no data", _json_input(data=None), "received neither"),
    ("NaN", _json_input(data=[1.0, float("nan")]), "finite number"),
    ("string value", _json_input(data=[1.0, "2"]), 'received "2"'),
    ("negative dimension", _json_input(shape=[-1, 2]), "greater than or equal to 0"),
    ("shared memory", _json_input(parameters={"shared_memory_region": "r"}), "shared memory"),
    (
        "both data and binary",
        _json_input(parameters={"binary_data_size": 8}),
        "received both",
    ),
    ("unknown output", {**_json_input(), "outputs": [{"name": "scores"}]}, "'scores'"),
    (
        "output twice",
        {**_json_input(), "outputs": [{"name": "logits"}, {"name": "logits"}]},
        "twice",
    ),
    (
        "classification zero",
        {**_json_input(), "outputs": [{"name": "logits", "parameters": {"classification": 0}}]},
        "positive integer",
    ),
    (
        "binary_data not a bool",
        {**_json_input(), "outputs": [{"name": "logits", "parameters": {"binary_data": 1}}]},
        "true or false",
    ),
    (
        "calibrated not a bool",
        {**_json_input(), "parameters": {"calibrated": "no"}},
        "true or false",
    ),
]


@pytest.mark.parametrize(("case", "body", "fragment"), BAD_JSON, ids=[c[0] for c in BAD_JSON])
def test_invalid_json_requests_get_400_saying_why(
    client: httpx.Client, case: str, body: dict[str, Any], fragment: str
) -> None:
    content = json.dumps(body).encode()  # allow_nan: NaN goes out as the literal
    assert_error(client.post("/v2/models/blobs/infer", content=content), 400, fragment)


def test_broken_binary_framing_gets_400_saying_why(client: httpx.Client) -> None:
    x = np.array([[15.0, 0.0]], dtype="<f4")
    content, headers = binary_request(x, "FP32")
    url = "/v2/models/blobs/infer"
    cases = [
        ({"Inference-Header-Content-Length": "lots"}, content, "received 'lots'"),
        ({"Inference-Header-Content-Length": str(len(content) + 1)}, content, "at most the body"),
        ({}, content + b"\0", "expected 8 bytes of binary tensor data"),
        ({}, content[:-1], "expected 8 bytes of binary data for input 'input'"),
    ]
    for change, body, fragment in cases:
        assert_error(client.post(url, content=body, headers={**headers, **change}), 400, fragment)
    header = json.loads(content[: int(headers["Inference-Header-Content-Length"])])
    header["inputs"][0]["parameters"]["binary_data_size"] = 4
    wrong, wrong_headers = binary_request(x, "FP32", header)
    assert_error(client.post(url, content=wrong, headers=wrong_headers), 400, "binary_data_size 8")


def test_hostile_bodies_and_headers_get_clean_4xx_answers(client: httpx.Client) -> None:
    @settings(max_examples=80, deadline=None, suppress_health_check=list(HealthCheck))
    @given(
        raw=st.binary(max_size=300) | st.text(max_size=100).map(str.encode),
        length=st.none()
        | st.integers(-5, 400).map(str)
        | st.text(st.characters(min_codepoint=33, max_codepoint=126), max_size=8),
    )
    def check(raw: bytes, length: str | None) -> None:
        headers = {} if length is None else {"Inference-Header-Content-Length": length}
        response = client.post("/v2/models/blobs/infer", content=raw, headers=headers)
        assert response.status_code in {400, 413}, response.text
        assert isinstance(response.json()["error"], str), response.text

    check()
    answer = client.post("/v2/models/blobs/infer", json=_json_input())
    assert answer.status_code == 200


# --- health, documentation ---------------------------------------------------------------


def test_health_endpoints_answer_with_status_codes_and_the_protocols_bodies(
    client: httpx.Client,
) -> None:
    answers = {
        "/v2/health/live": {"live": True},
        "/v2/health/ready": {"ready": True},
        "/v2/models/blobs/ready": {"name": "blobs", "ready": True},
        "/v2/models/blobs/versions/1/ready": {"name": "blobs", "ready": True},
    }
    for path, body in answers.items():
        response = client.get(path)
        assert response.status_code == 200, path
        assert response.headers["content-type"] == "application/json", path
        assert response.json() == body, path
    # not ready is an error status with the error body, never a 200 saying false
    assert_error(client.get("/v2/models/blobs/versions/2/ready"), 404, "version")
    assert_error(client.get("/v2/models/nope/ready"), 404, "'nope'")
    assert_error(client.get("/v2/models/nope"), 404, "'nope'")


def test_openapi_documents_the_v2_paths(client: httpx.Client) -> None:
    spec = client.get("/openapi.json").json()
    paths = spec["paths"]
    for path in ("/v2/models/{name}/infer", "/v2/models/{name}/versions/{version}/infer"):
        schema = paths[path]["post"]["requestBody"]["content"]["application/json"]["schema"]
        assert schema == {"$ref": "#/components/schemas/InferenceRequest"}, path
    assert spec["components"]["schemas"]["InferenceRequest"]["examples"]
    for path in ("/v2", "/v2/health/ready", "/v2/models/{name}", "/v2/models/{name}/ready"):
        assert "get" in paths[path], path
    assert "post" in paths["/v2/repository/models/{name}/load"]
