"""The in-flight bound refuses no client that stays within it, also when clients come and go.

A load generator holds N connections busy and, at its deadline, closes them with their
requests still unanswered; the next run opens N new ones at once. The requests of the
connections that left must stop counting against ``SERVICE_MAX_INFLIGHT`` when their
client leaves, not when the model has computed them: else the new clients, who never
have more than N requests outstanding, are refused 503 until the old ones are worked
off (what ``wrk`` runs back to back saw on an image model).

Here a real server (``SERVICE_MAX_INFLIGHT=16``) serves an image CNN
(``keras.applications.MobileNetV2``, as ``benchmarks/`` serves it) and the tabular
default model; rounds of exactly 16 keep-alive connections each send requests back to
back, and are cut off mid-request, one round right after the other. Every status is
counted: all must be 200.
"""

from __future__ import annotations

import asyncio
import base64
import io
import json
import re
import shutil
import subprocess
import time
from collections import Counter
from collections.abc import Iterator
from pathlib import Path

import httpx
import numpy as np
import pytest
from PIL import Image

from tests.conftest import (
    Server,
    TrainedRepository,
    python_argv,
    start_server,
    subprocess_env,
)

BOUND = 16
ROUNDS = 4
ROUND_SECONDS = 1.0
IMAGES_PER_REQUEST = 4  # the requests cut off keep the model busy for a while


@pytest.fixture(scope="module")
def repository(trained: TrainedRepository, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The default tabular model and MobileNetV2 exported with the trainer's CLI."""
    import keras

    workdir = tmp_path_factory.mktemp("bound")
    shutil.copytree(trained.repository, workdir / "models")
    keras.utils.set_random_seed(0)
    model = keras.applications.MobileNetV2(
        input_shape=(96, 96, 3), alpha=0.35, weights=None, classes=10
    )
    keras_file = workdir / "mobilenet.keras"
    model.save(keras_file)
    export = [
        *python_argv(("python", "-m", "model_training")),
        "export",
        str(keras_file),
        "--name",
        "mobilenet",
        "--model-repository",
        str(workdir / "models"),
        "--pixel-range",
        "-1",
        "1",
        "--quiet",
    ]
    result = subprocess.run(
        export, env=subprocess_env(), capture_output=True, text=True, timeout=600, check=False
    )
    assert result.returncode == 0, result.stderr[-3000:]
    return workdir


@pytest.fixture(scope="module")
def bounded(repository: Path) -> Iterator[Server]:
    server = start_server(
        repository,
        repository / "server.log",
        SERVICE_MAX_INFLIGHT=str(BOUND),
        SERVICE_DEFAULT_MODEL="blobs",
    )
    yield server
    assert server.stop() == 0, server.output()


def jpeg_b64(seed: int) -> str:
    pixels = np.random.default_rng(seed).integers(0, 256, (96, 96, 3), dtype=np.uint8)
    buffer = io.BytesIO()
    Image.fromarray(pixels).save(buffer, "JPEG", quality=90)
    return base64.b64encode(buffer.getvalue()).decode()


def post(path: str, body: dict[str, object]) -> bytes:
    """One keep-alive HTTP/1.1 POST, as bytes on the wire."""
    content = json.dumps(body).encode()
    head = (
        f"POST {path} HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: application/json\r\n"
        f"Content-Length: {len(content)}\r\n\r\n"
    )
    return head.encode() + content


async def answer_status(reader: asyncio.StreamReader) -> int:
    """Read one whole answer; its status."""
    head = await reader.readuntil(b"\r\n\r\n")
    status = int(head.split(b" ", 2)[1])
    length = re.search(rb"(?i)\r\ncontent-length: *(\d+)", head)
    assert length is not None, head
    await reader.readexactly(int(length.group(1)))
    return status


async def busy_connections(url: str, request: bytes, statuses: Counter[int]) -> None:
    """``ROUNDS`` rounds of ``BOUND`` connections, each cut off at the round's end."""
    host, port = url.removeprefix("http://").split(":")

    async def connection() -> None:
        reader, writer = await asyncio.open_connection(host, int(port))
        try:
            while True:
                writer.write(request)
                await writer.drain()
                statuses[await answer_status(reader)] += 1
        finally:
            writer.transport.abort()  # at once, the last request unanswered

    for _ in range(ROUNDS):
        tasks = [asyncio.create_task(connection()) for _ in range(BOUND)]
        done, _pending = await asyncio.wait(tasks, timeout=ROUND_SECONDS)
        for task in done:  # a connection ended early: show why
            task.result()
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)


#: Requests whose client left before the answer (nginx's 499), and requests refused 503.
LEFT = 'softmax_requests_total{endpoint="/models/{name}/predict",model="",status="499"'
REFUSED = 'softmax_requests_total{endpoint="unmatched",model="",status="503"'


def metric(server: Server, line_start: str) -> float:
    """The sum of the samples on the /metrics lines that start with ``line_start``."""
    lines = httpx.get(server.url + "/metrics", timeout=10).text.splitlines()
    return sum(float(line.rsplit(" ", 1)[1]) for line in lines if line.startswith(line_start))


@pytest.mark.parametrize(
    ("path", "instances"),
    [
        ("/models/mobilenet/predict", [{"b64": jpeg_b64(i)} for i in range(IMAGES_PER_REQUEST)]),
        ("/models/blobs/predict", [[15.0, 0.0]]),
    ],
    ids=["image", "table"],
)
def test_connections_cut_off_and_replaced_at_the_bound_are_never_refused(
    bounded: Server, path: str, instances: list[object]
) -> None:
    statuses: Counter[int] = Counter()
    refused = metric(bounded, REFUSED)
    asyncio.run(busy_connections(bounded.url, post(path, {"instances": instances}), statuses))
    assert statuses[200] > ROUNDS * BOUND, statuses
    assert set(statuses) == {200}, f"{dict(statuses)} with at most {BOUND} requests outstanding"
    assert metric(bounded, REFUSED) == refused


def test_a_request_whose_client_left_is_dropped_and_leaves_the_bound(bounded: Server) -> None:
    """Cut off while the model is busy, requests are recorded 499 and free their place."""
    statuses: Counter[int] = Counter()
    images = [{"b64": jpeg_b64(i)} for i in range(IMAGES_PER_REQUEST)]
    request = post("/models/mobilenet/predict", {"instances": images})
    before = metric(bounded, LEFT)
    asyncio.run(busy_connections(bounded.url, request, statuses))
    assert set(statuses) == {200}, statuses
    assert metric(bounded, LEFT) - before > 0, "no request was recorded as left by its client"
    deadline = time.monotonic() + 2
    while metric(bounded, "softmax_inflight_requests ") != 0:
        assert time.monotonic() < deadline, "requests whose clients left are still counted"
        time.sleep(0.05)
