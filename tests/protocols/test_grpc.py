"""gRPC on the real server: the Open Inference Protocol through ``tritonclient.grpc`` (sync
and asyncio, with its defaults) and ``grpc.health.v1`` through grpcio's own stubs.

The references are the HTTP answers of the same server: ``/predict`` for probabilities
(bit for bit in FP64, rounded once in FP32), ``/v2`` for metadata and error messages.
tritonclient.grpc runs in a worker process (``tests/protocols/triton_grpc.py`` says why).
"""

from __future__ import annotations

import multiprocessing
import shutil
import socket
import time
from collections.abc import Callable, Iterator
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path
from typing import Any

import grpc
import httpx
import numpy as np
import pytest
from grpc_health.v1 import health_pb2, health_pb2_grpc
from prometheus_client.parser import text_string_to_metric_families

from tests.conftest import ROOT, Server, TrainedRepository, free_port, start_server
from tests.protocols import triton_grpc
from tests.protocols.test_v2 import native, points

SERVICE = "inference.GRPCInferenceService"
KEY = "grpc-test-key-0123456789"
#: The smallest message limit the settings allow, so a test can pass it cheaply.
LIMIT = 4 * 1024 * 1024


class GrpcServer:
    """A running server and the address of its gRPC listener."""

    def __init__(self, server: Server, port: int) -> None:
        self.server = server
        self.target = f"127.0.0.1:{port}"


def start_grpc_server(workdir: Path, log: Path, **env: str) -> GrpcServer:
    """``start_server`` with a gRPC listener on a free port."""
    port = free_port()
    server = start_server(workdir, log, SERVICE_GRPC_PORT=str(port), **env)
    return GrpcServer(server, listening(server, port))


def listening(server: Server, port: int) -> int:
    """``port`` once the server's gRPC listener accepts connections there: it listens once
    the repository's first load is over, just after HTTP's readiness."""
    deadline = time.monotonic() + 30
    while True:
        try:
            socket.create_connection(("127.0.0.1", port), timeout=1).close()
            return port
        except OSError:
            if time.monotonic() > deadline:
                server.stop()
                raise AssertionError(f"no gRPC listener on {port}:\n{server.output()}") from None
            time.sleep(0.02)


@pytest.fixture(scope="module")
def served(
    trained: TrainedRepository, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[GrpcServer]:
    """The default model, served over HTTP and gRPC (message limit: 4 MiB)."""
    running = start_grpc_server(
        trained.workdir,
        tmp_path_factory.mktemp("grpc") / "server.log",
        SERVICE_GRPC_MAX_MESSAGE_BYTES=str(LIMIT),
    )
    yield running
    assert running.server.stop() == 0, running.server.output()


@pytest.fixture(scope="module")
def triton() -> Iterator[Callable[..., Any]]:
    """Runs a function of ``triton_grpc`` in a worker process and returns its result."""
    context = multiprocessing.get_context("spawn")
    with ProcessPoolExecutor(1, mp_context=context) as pool:

        def run(function: Callable[..., Any], *args: Any, **kwargs: Any) -> Any:
            return pool.submit(function, *args, **kwargs).result(timeout=120)

        yield run


@pytest.fixture
def http(served: GrpcServer) -> Iterator[httpx.Client]:
    with httpx.Client(base_url=served.server.url) as client:
        yield client


def _shapes_as_ints(metadata: dict[str, Any]) -> dict[str, Any]:
    """protobuf's JSON writes int64 as strings: the shapes back as numbers."""
    for group in ("inputs", "outputs"):
        for tensor in metadata[group]:
            tensor["shape"] = [int(size) for size in tensor["shape"]]
    return metadata


def test_readiness_and_metadata_match_http(
    served: GrpcServer, triton: Callable[..., Any], http: httpx.Client
) -> None:
    facts = triton(triton_grpc.facts, served.target, "blobs")
    assert facts["live"]
    assert facts["ready"]
    assert facts["model_ready"]
    assert facts["version_ready"]
    assert not facts["absent_version_ready"]
    assert not facts["unknown_ready"]
    assert facts["server"] == http.get("/v2").json()
    assert _shapes_as_ints(facts["model"]) == http.get("/v2/models/blobs").json()


@pytest.mark.parametrize("datatype", ["FP32", "FP64"])
def test_raw_contents_give_predicts_probabilities_bit_for_bit(
    served: GrpcServer, triton: Callable[..., Any], http: httpx.Client, datatype: str
) -> None:
    x = points(257)
    sent = x.astype(np.float32) if datatype == "FP32" else x
    answer = triton(triton_grpc.infer, served.target, "blobs", sent, datatype)
    assert (answer["model"], answer["version"], answer["id"]) == ("blobs", "1", "r-1")
    assert answer["datatypes"] == [datatype, datatype]
    # /predict takes JSON numbers: the FP32 request's values, exactly, as float64
    reference = native(http, sent.astype(np.float64))
    expected = reference if datatype == "FP64" else reference.astype(np.float32)
    assert answer["probabilities"].dtype == expected.dtype
    np.testing.assert_array_equal(answer["probabilities"], expected)
    assert answer["logits"].shape == (257, 4)
    np.testing.assert_array_equal(answer["logits"].argmax(axis=1), expected.argmax(axis=1))


def test_the_asyncio_client_gets_the_same_answers(
    served: GrpcServer, triton: Callable[..., Any], http: httpx.Client
) -> None:
    x = points(9, seed=5)
    answers = triton(triton_grpc.infer_async, served.target, "blobs", x, "FP64")["probabilities"]
    for probabilities in answers:
        np.testing.assert_array_equal(probabilities, native(http, x))


def test_typed_contents_are_answered_in_typed_contents(
    served: GrpcServer, triton: Callable[..., Any], http: httpx.Client
) -> None:
    x = points(3, seed=8)
    answer = triton(triton_grpc.infer_typed, served.target, "blobs", x)
    assert answer["raw"] == 0
    datatype, shape, values = answer["outputs"]["probabilities"]
    assert (datatype, shape) == ("FP64", [3, 4])
    np.testing.assert_array_equal(np.reshape(values, shape), native(http, x))


def test_classification_through_grpc_is_the_http_extensions(
    served: GrpcServer, triton: Callable[..., Any], http: httpx.Client
) -> None:
    x = points(2, seed=9)
    answer = triton(triton_grpc.infer, served.target, "blobs", x, "FP64", class_count=2)
    body = {
        "inputs": [{"name": "input", "shape": [2, 2], "datatype": "FP64", "data": x.tolist()}],
        "outputs": [{"name": "probabilities", "parameters": {"classification": 2}}],
    }
    over_http = http.post("/v2/models/blobs/infer", json=body).json()["outputs"][0]["data"]
    assert answer["probabilities"].ravel().astype(str).tolist() == over_http


def _http_error(http: httpx.Client, path: str, body: dict[str, Any]) -> str:
    response = http.post(path, json=body)
    assert response.status_code >= 400, response.text
    return str(response.json()["error"])


def test_errors_are_the_http_errors_with_grpc_codes(
    served: GrpcServer, triton: Callable[..., Any], http: httpx.Client
) -> None:
    row = np.array([[1.0, 2.0, 3.0]])
    wrong = triton(triton_grpc.infer, served.target, "blobs", row, "FP64")
    assert wrong["code"] == "INVALID_ARGUMENT"
    assert (
        "expected input 'input' of shape [N, 2] with N >= 1, received [1, 3]" in (wrong["message"])
    )
    body = {"inputs": [{"name": "input", "shape": [1, 2], "datatype": "FP64", "data": [1, 2]}]}
    unknown = triton(triton_grpc.infer, served.target, "nope", points(1), "FP64")
    assert unknown == {
        "code": "NOT_FOUND",
        "message": _http_error(http, "/v2/models/nope/infer", body),
    }
    ints = triton(triton_grpc.infer, served.target, "blobs", np.ones((1, 2), np.int8), "INT8")
    assert ints["code"] == "INVALID_ARGUMENT"
    assert "expected input 'input' of datatype FP32 or FP64, received 'INT8'" in ints["message"]
    refused = triton(triton_grpc.control, served.target, "blobs", "unload")
    assert refused["code"] == "PERMISSION_DENIED"
    assert "SERVICE_MODEL_CONTROL=true" in refused["message"]


def test_a_message_above_the_limit_is_refused_and_a_large_one_below_served(
    served: GrpcServer, triton: Callable[..., Any]
) -> None:
    rows = LIMIT // 8 + 1024  # FP32 pairs: just over the limit
    big = np.zeros((rows, 2), dtype=np.float32)
    refused = triton(triton_grpc.infer, served.target, "blobs", big, "FP32")
    assert refused["code"] == "RESOURCE_EXHAUSTED", refused
    assert str(LIMIT) in refused["message"]
    # 100,000 rows (the default SERVICE_MAX_BATCH_ROWS): 0.8 MB in, 3.2 MB out, served
    under = np.zeros((100_000, 2), dtype=np.float32)
    answer = triton(triton_grpc.infer, served.target, "blobs", under, "FP32")
    assert answer["probabilities"].shape == (100_000, 4), answer


def test_a_deadline_that_passes_is_deadline_exceeded_and_the_server_carries_on(
    served: GrpcServer, triton: Callable[..., Any]
) -> None:
    x = points(1)
    # 100,000 rows take the server tens of milliseconds: a 1 ms deadline always passes
    # (a 1 µs one could pass before the call even starts, or, once in a while, not at all).
    many = points(100_000)
    late = triton(triton_grpc.infer, served.target, "blobs", many, "FP64", timeout=1e-3)
    assert late.get("code") == "DEADLINE_EXCEEDED", late.keys()
    assert triton(triton_grpc.infer, served.target, "blobs", x, "FP64")["model"] == "blobs"


def test_calls_are_counted_and_logged_with_their_request_id(
    served: GrpcServer, triton: Callable[..., Any], http: httpx.Client
) -> None:
    headers = {"x-request-id": "grpc-call-17"}
    triton(triton_grpc.infer, served.target, "blobs", points(2), "FP64", headers=headers)
    triton(triton_grpc.infer, served.target, "nope", points(2), "FP64")
    samples = {
        (sample.name, tuple(sorted(sample.labels.items())))
        for family in text_string_to_metric_families(http.get("/metrics").text)
        for sample in family.samples
    }
    method = f"/{SERVICE}/ModelInfer"
    for code, model, version in [("OK", "blobs", "1"), ("NOT_FOUND", "", "")]:
        labels = {"code": code, "method": method, "model": model, "version": version}
        assert ("softmax_grpc_requests_total", tuple(sorted(labels.items()))) in samples
    count = ("softmax_grpc_request_duration_seconds_count", (("method", method),))
    assert count in samples
    deadline = time.monotonic() + 10  # the access log is buffered a moment
    while '"request_id":"grpc-call-17"' not in served.server.output():
        assert time.monotonic() < deadline, served.server.output()[-2000:]
        time.sleep(0.05)


def _raw_call(
    target: str, method: str, body: bytes, metadata: tuple[tuple[str, str], ...] = ()
) -> tuple[str, str, dict[str, Any]]:
    """A call of hand-made bytes: its status code's name, details and trailing metadata."""
    with grpc.insecure_channel(target) as channel:
        call = channel.unary_unary(f"/{SERVICE}/{method}")  # bytes in, bytes out
        try:
            _, outcome = call.with_call(body, metadata=metadata, timeout=5)
        except grpc.RpcError as exc:
            return exc.code().name, exc.details(), dict(exc.trailing_metadata())
    return "OK", "", dict(outcome.trailing_metadata())


def test_the_request_id_comes_back_and_bytes_that_are_no_request_are_invalid(
    served: GrpcServer,
) -> None:
    code, _, trailer = _raw_call(served.target, "ServerLive", b"", (("x-request-id", "live-1"),))
    assert (code, trailer["x-request-id"]) == ("OK", "live-1")
    code, details, trailer = _raw_call(served.target, "ModelInfer", b"\xff\xff\xff")
    assert (code, details) == (
        "INVALID_ARGUMENT",
        "expected a serialized ModelInferRequest message, received 3 bytes that are not one",
    )
    assert trailer["x-request-id"].startswith("g")  # one of the server's own
    code, details, _ = _raw_call(served.target, "ModelInfer", b"")  # every field empty
    assert (code, details) == ("INVALID_ARGUMENT", "expected 1 to 16 inputs, received 0")


def test_image_files_as_bytes_give_the_probabilities_of_the_file_posted_to_predict(
    trained_digits: TrainedRepository, tmp_path: Path, triton: Callable[..., Any]
) -> None:
    png = (ROOT / "docs" / "digit.png").read_bytes()
    running = start_grpc_server(trained_digits.workdir, tmp_path / "server.log")
    try:
        answer = triton(triton_grpc.infer_files, running.target, "digits", [png, png])
        posted = httpx.post(
            running.server.url + "/models/digits/predict",
            content=png,
            headers={"Content-Type": "image/png"},
        ).json()
    finally:
        assert running.server.stop() == 0, running.server.output()
    expected = np.float32(posted["predictions"][0]["probabilities"])
    np.testing.assert_array_equal(answer["probabilities"], [expected, expected])


# --- health, keys and readiness, on a server that starts with no model ---------------------


def _health(target: str, service: str = "", key: str | None = None) -> str:
    """``grpc.health.v1.Health/Check``'s status name, or the error's code name."""
    with grpc.insecure_channel(target) as channel:
        stub = health_pb2_grpc.HealthStub(channel)
        try:
            answer = stub.Check(health_pb2.HealthCheckRequest(service=service), timeout=5)
        except grpc.RpcError as exc:
            return str(exc.code().name)
    return str(health_pb2.HealthCheckResponse.ServingStatus.Name(answer.status))


def test_health_follows_readiness_and_keys_guard_the_models(
    trained: TrainedRepository, tmp_path: Path, triton: Callable[..., Any]
) -> None:
    repository = tmp_path / "models"
    repository.mkdir()
    port = free_port()
    server = start_server(
        tmp_path,
        tmp_path / "server.log",
        wait_ready=False,
        SERVICE_GRPC_PORT=str(port),
        SERVICE_POLL_INTERVAL="0.1",
        SERVICE_API_KEYS=KEY,
    )
    target = f"127.0.0.1:{listening(server, port)}"
    try:
        assert _health(target) == "NOT_SERVING"
        assert _health(target, SERVICE) == "NOT_SERVING"
        assert _health(target, "no.such.Service") == "NOT_FOUND"
        shutil.copytree(trained.repository / "blobs", repository / "blobs")
        deadline = time.monotonic() + 30
        while _health(target) != "SERVING":
            assert time.monotonic() < deadline, server.output()[-3000:]
            time.sleep(0.05)
        assert _health(target, SERVICE) == "SERVING"
        x = points(1)
        keyless = triton(triton_grpc.infer, target, "blobs", x, "FP64")
        assert keyless["code"] == "UNAUTHENTICATED"
        assert "received no key" in keyless["message"]
        wrong = triton(triton_grpc.infer, target, "blobs", x, "FP64", headers={"x-api-key": "x"})
        assert "received a key that is not valid" in wrong["message"]
        bearer = {"authorization": f"Bearer {KEY}"}
        assert triton(triton_grpc.infer, target, "blobs", x, "FP64", headers=bearer)["id"] == "r-1"
    finally:
        assert server.stop() == 0, server.output()
