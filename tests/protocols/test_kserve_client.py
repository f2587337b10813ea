"""KServe's own Python SDK (``kserve.InferenceRESTClient``) on the real server, V1 and V2.

Its health calls read JSON bodies, not only status codes, so this file also checks, in
process, the bodies they read: ``GET /`` ``{"status": "alive"}`` to any client that does
not ask for HTML (a browser still gets the playground), ``name`` and ``ready`` beside
TF Serving's ``model_version_status`` on ``/v1/models/{name}``, and the Open Inference
Protocol's ``{"live": true}``, ``{"ready": true}`` and ``{"name", "ready"}`` on ``/v2``.
"""

from __future__ import annotations

import asyncio
from collections.abc import Coroutine
from pathlib import Path
from typing import Any, TypeVar

import httpx
import numpy as np
import pytest
from kserve import InferenceRESTClient, InferInput, InferRequest, RESTConfig
from kserve.errors import UnsupportedProtocol

from service.settings import Settings
from service.ui.playground import wants_page
from tests.conftest import Server, TrainedRepository, in_process, start_server
from tests.protocols.test_native import assert_error

T = TypeVar("T")
ROWS = [[15.0, 0.0], [29.5, 14.2], [22.5, 7.5]]
#: What Chromium sends when it opens a page.
BROWSER_ACCEPT = (
    "text/html,application/xhtml+xml,application/xml;q=0.9,image/avif,image/webp,"
    "image/apng,*/*;q=0.8,application/signed-exchange;v=b3;q=0.7"
)


def run(call: Coroutine[Any, Any, T]) -> T:
    return asyncio.run(call)


async def health(url: str, protocol: str) -> dict[str, Any]:
    """Every health call the SDK has for ``protocol``, as a KServe user makes them."""
    async with InferenceRESTClient(RESTConfig(protocol=protocol, timeout=30)) as kserve:
        answers: dict[str, Any] = {
            "is_server_live": await kserve.is_server_live(url),
            "is_model_ready": await kserve.is_model_ready(url, "blobs"),
        }
        try:
            answers["is_server_ready"] = await kserve.is_server_ready(url)
        except UnsupportedProtocol:  # raised by the SDK itself, before any request
            answers["is_server_ready"] = UnsupportedProtocol
        return answers


def reference(client: httpx.Client) -> np.ndarray[Any, np.dtype[np.float64]]:
    """/predict's probabilities for ROWS (float64)."""
    body = client.post("/predict", json={"instances": ROWS, "format": "columnar"}).json()
    return np.array(body["probabilities"], dtype=np.float64)


# --- the SDK against the real server -------------------------------------------------------


def test_every_health_call_of_the_sdk_says_true(server: Server) -> None:
    assert run(health(server.url, "v1")) == {
        "is_server_live": True,
        "is_model_ready": True,
        # The SDK has no V1 server readiness: it raises before sending anything.
        "is_server_ready": UnsupportedProtocol,
    }
    assert run(health(server.url, "v2")) == {
        "is_server_live": True,
        "is_model_ready": True,
        "is_server_ready": True,
    }


def test_an_unknown_model_is_not_ready_or_an_error_with_the_reason(server: Server) -> None:
    async def ask() -> tuple[bool, httpx.HTTPStatusError]:
        async with InferenceRESTClient(RESTConfig(protocol="v2")) as v2:
            unknown = await v2.is_model_ready(server.url, "nope")
        async with InferenceRESTClient(RESTConfig(protocol="v1")) as v1:
            with pytest.raises(httpx.HTTPStatusError) as caught:
                await v1.is_model_ready(server.url, "nope")
        return unknown, caught.value

    unknown, error = run(ask())
    assert unknown is False
    assert error.response.status_code == 404
    assert "'nope'" in str(error)  # the SDK shows our error message


def test_inference_through_the_sdk_gives_predicts_probabilities(
    server: Server, client: httpx.Client
) -> None:
    expected = reference(client)

    async def infer() -> tuple[dict[str, Any], list[np.ndarray[Any, Any]]]:
        async with InferenceRESTClient(RESTConfig(protocol="v1")) as v1:
            rows = await v1.infer(server.url, {"instances": ROWS}, model_name="blobs")
        x = np.array(ROWS, dtype=np.float64)
        answers = []
        async with InferenceRESTClient(RESTConfig(protocol="v2")) as v2:
            for binary in (False, True):
                tensor = InferInput("input", list(x.shape), "FP64")
                tensor.set_data_from_numpy(x, binary_data=binary)
                request = InferRequest(
                    "blobs",
                    [tensor],
                    request_id=f"k{binary}",
                    parameters={"binary_data_output": binary},
                )
                headers: dict[str, str] = {}
                response = await v2.infer(
                    server.url, request, model_name="blobs", response_headers=headers
                )
                kind = "application/octet-stream" if binary else "application/json"
                assert headers["content-type"] == kind
                # (the SDK does not read model_version back)
                assert (response.model_name, response.id) == ("blobs", f"k{binary}")
                by_name = {output.name: output for output in response.outputs}
                answers.append(by_name["probabilities"].as_numpy())
        return rows, answers

    rows, (json_probabilities, binary_probabilities) = run(infer())
    assert rows == {"predictions": expected.tolist()}  # V1: bit for bit
    # FP64 in, FP64 out: bit for bit too, as JSON and as binary tensors
    np.testing.assert_array_equal(json_probabilities, expected)
    np.testing.assert_array_equal(binary_probabilities, expected)


def test_an_unloaded_model_is_not_ready_to_the_sdk(
    trained: TrainedRepository, tmp_path: Path
) -> None:
    running = start_server(trained.workdir, tmp_path / "server.log", SERVICE_MODEL_CONTROL="true")
    try:
        assert httpx.post(running.url + "/v2/repository/models/blobs/unload").status_code == 200
        v1 = run(health(running.url, "v1"))
        assert v1["is_server_live"] is True
        assert v1["is_model_ready"] is False  # 200, "ready": false: the SDK reads it

        async def v2_calls() -> tuple[bool, bool, httpx.HTTPStatusError]:
            async with InferenceRESTClient(RESTConfig(protocol="v2")) as kserve:
                live = await kserve.is_server_live(running.url)
                ready = await kserve.is_model_ready(running.url, "blobs")
                with pytest.raises(httpx.HTTPStatusError) as caught:
                    await kserve.is_server_ready(running.url)  # the default model is gone
            return live, ready, caught.value

        live, model_ready, not_ready = run(v2_calls())
        assert (live, model_ready) == (True, False)
        assert not_ready.response.status_code == 503
    finally:
        assert running.stop() == 0, running.output()


# --- the bodies they read, in process --------------------------------------------------------


@pytest.mark.parametrize(
    ("accept", "page"),
    [
        (BROWSER_ACCEPT, True),
        ("text/html", True),
        ("Text/HTML ; q=0.5", True),
        ("application/json, text/html;q=0.1", True),
        ("*/*", False),  # curl, httpx (and so the KServe SDK), requests
        ("application/json", False),
        ("", False),
        ("text/*", False),
        ("text/html;q=0", False),
        ("text/html; q=0.000, */*", False),
        ("text/htmlx", False),
    ],
)
def test_only_a_client_asking_for_html_gets_the_page(accept: str, page: bool) -> None:
    assert wants_page(accept) is page


def test_root_is_the_page_to_a_browser_and_liveness_to_other_clients(
    client: httpx.Client,
) -> None:
    browser = client.get("/", headers={"Accept": BROWSER_ACCEPT})
    assert browser.status_code == 200
    assert browser.headers["content-type"].startswith("text/html")
    assert "default-src 'none'" in browser.headers["content-security-policy"]
    for accept in ("*/*", "application/json", None):
        headers = {"Accept": accept} if accept is not None else {}
        request = client.build_request("GET", "/", headers=headers)
        if accept is None:
            del request.headers["Accept"]
        answer = client.send(request)
        assert answer.status_code == 200, accept
        assert answer.headers["content-type"] == "application/json", accept
        assert answer.json() == {"status": "alive"}, accept
        assert answer.headers["vary"] == "Accept", accept


def test_v1_model_status_says_name_and_ready_beside_tf_servings_status(
    client: httpx.Client,
) -> None:
    for path in ("/v1/models/blobs", "/v1/models/blobs/versions/1"):
        body = client.get(path).json()
        assert (body["name"], body["ready"]) == ("blobs", True), path
        assert [s["state"] for s in body["model_version_status"]] == ["AVAILABLE"], path
    assert_error(client.get("/v1/models/nope"), 404, "'nope'")


def test_v2_health_answers_the_protocols_json(client: httpx.Client) -> None:
    assert client.get("/v2/health/live").json() == {"live": True}
    assert client.get("/v2/health/ready").json() == {"ready": True}
    assert client.get("/v2/models/blobs/ready").json() == {"name": "blobs", "ready": True}
    ready = client.get("/v2/models/blobs/versions/1/ready").json()
    assert ready == {"name": "blobs", "ready": True}


def test_an_unloaded_model_is_not_ready_in_either_protocol(trained: TrainedRepository) -> None:
    settings = Settings(model_repository=trained.repository, model_control=True, poll_interval=0)
    with in_process(settings) as client:
        assert client.post("/v2/repository/models/blobs/unload").status_code == 200
        status = client.get("/v1/models/blobs")
        assert status.status_code == 200  # TF Serving's answer: the versions and their states
        body = status.json()
        assert (body["name"], body["ready"]) == ("blobs", False)
        assert [s["state"] for s in body["model_version_status"]] == ["END"]
        assert client.get("/v2/health/live").json() == {"live": True}
        assert_error(client.get("/v2/health/ready"), 503, "")
        assert_error(client.get("/v2/models/blobs/ready"), 404, "'blobs'")


def test_openapi_documents_the_health_bodies(client: httpx.Client) -> None:
    paths = client.get("/openapi.json").json()["paths"]

    def schema(path: str) -> Any:
        ok = paths[path]["get"]["responses"]["200"]["content"]["application/json"]
        return ok["schema"]

    assert schema("/")["$ref"].endswith("/Health")
    assert schema("/v1/models/{name}")["$ref"].endswith("/ModelStatusResponse")
    assert schema("/v2/health/live")["$ref"].endswith("/ServerLiveResponse")
    assert schema("/v2/health/ready")["$ref"].endswith("/ServerReadyResponse")
    for path in ("/v2/models/{name}/ready", "/v2/models/{name}/versions/{version}/ready"):
        assert schema(path)["$ref"].endswith("/ModelReadyResponse"), path
