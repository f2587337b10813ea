"""The typed client against the real server: answers, errors, and retries on 503."""

from __future__ import annotations

import asyncio
import time
from pathlib import Path

import httpx
import numpy as np
import pytest

from service.client import AsyncClient, Client, ClientError
from tests.conftest import Server, TrainedRepository, start_server
from tests.reference import softmax_reference


def test_client_predicts_like_the_raw_api(server: Server, client: httpx.Client) -> None:
    points = [[15.0, 0.0], [29.0, 14.0]]
    raw = client.post("/predict", json={"instances": points}).json()
    with Client(server.url) as typed:
        answer = typed.predict(points)
        columns = typed.predict_columnar(points, model="blobs", version=1)
        from_numpy = typed.predict(np.asarray(points, dtype=np.float32))
    assert answer.model_dump(exclude_unset=True) == raw  # unseen: only for categorical tables
    assert from_numpy.model_dump(exclude_unset=True) == raw  # float32 holds these exactly
    assert columns.probabilities == [p["probabilities"] for p in raw["predictions"]]
    assert columns.labels == ["0", "3"]


def test_client_softmax_models_and_ready(server: Server) -> None:
    with Client(server.url) as typed:
        result = typed.softmax([2.0, 4.3, 1.2, -3.1])
        assert result.probabilities == pytest.approx(
            softmax_reference([2.0, 4.3, 1.2, -3.1]), rel=1e-12
        )
        assert typed.models().models[0].name == "blobs"
        assert typed.model("blobs").class_names == ["0", "1", "2", "3"]
        assert typed.ready()


def test_client_raises_with_the_servers_message_and_request_id(server: Server) -> None:
    with Client(server.url) as typed, pytest.raises(ClientError) as caught:
        typed.predict([[1.0, 2.0, 3.0]])
    assert caught.value.status == 422
    assert "expected 2 features" in caught.value.message
    assert caught.value.request_id
    with Client(server.url) as typed, pytest.raises(ClientError, match="404"):
        typed.predict([[1.0, 2.0]], model="absent")


def test_async_client_matches_the_sync_one(server: Server) -> None:
    async def ask() -> list[float]:
        async with AsyncClient(server.url) as typed:
            answers = await asyncio.gather(*(typed.predict([[15.0, float(i)]]) for i in range(5)))
            return [a.predictions[0].probabilities[0] for a in answers]

    with Client(server.url) as typed:
        expected = [
            typed.predict([[15.0, float(i)]]).predictions[0].probabilities[0] for i in range(5)
        ]
    assert asyncio.run(ask()) == expected


def test_client_retries_a_503_after_retry_after(trained: TrainedRepository, tmp_path: Path) -> None:
    server = start_server(trained.workdir, tmp_path / "log", SERVICE_MAX_INFLIGHT="1")

    async def scenario() -> tuple[float, int, float]:
        async with httpx.AsyncClient(base_url=server.url, timeout=10) as raw:

            async def body() -> object:
                yield b'{"instances": '
                await asyncio.sleep(0.8)
                yield b"[[15.0, 0.0]]}"

            holder = asyncio.create_task(raw.post("/predict", content=body()))
            await asyncio.sleep(0.3)  # the only slot is taken: the next request gets a 503
            started = time.monotonic()
            async with AsyncClient(server.url, retries=3) as typed:
                answer = await typed.predict([[15.0, 0.0]])
            waited = time.monotonic() - started
            return waited, (await holder).status_code, answer.predictions[0].probabilities[0]

    try:
        waited, holder_status, probability = asyncio.run(scenario())
        log = server.output()
    finally:
        assert server.stop() == 0
    assert holder_status == 200
    assert probability > 0.9
    assert waited >= 0.9  # it waited the server's Retry-After (1 s) before succeeding
    assert '"status":503' in log


def test_client_gives_up_after_its_retries(tmp_path: Path) -> None:
    server = start_server(tmp_path, tmp_path / "log", wait_ready=False)  # no model: 503
    try:
        with Client(server.url, retries=1, max_retry_wait=0.1) as typed:
            started = time.monotonic()
            with pytest.raises(ClientError) as caught:
                typed.predict([[1.0, 2.0]])
            assert time.monotonic() - started < 2
        assert caught.value.status in {503, 404}
        with Client(server.url) as typed:
            assert not typed.ready()
    finally:
        assert server.stop() == 0
