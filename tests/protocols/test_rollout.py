"""Rollouts through the real server: version labels on every protocol, a canary taking its
share of requests, a shadow version compared off the response path, and serving.json
re-read while the server runs.

Two versions of the 4-blob model trained with different seeds (42 and 7), served with
the ``all`` policy; version 1 labelled ``stable``, version 2 ``canary``.
"""

from __future__ import annotations

import asyncio
import json
import os
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import numpy as np
import pytest
from scipy.spatial.distance import jensenshannon  # type: ignore[import-untyped]

from service.client import AsyncClient, Client, ClientError
from tests.conftest import Server, TrainedRepository, start_server
from tests.protocols.test_native import assert_error
from tests.versions import rollout_repository

CANARY_FRACTION = 0.25
ROLLOUT = {
    "version_labels": {"stable": 1, "canary": 2},
    "canary_fraction": CANARY_FRACTION,
    "shadow": {"label": "canary"},
}
ROWS = np.random.default_rng(3).uniform(-5, 35, size=(64, 2)).round(3).tolist()


def write_rollout(repository: Path, content: dict[str, Any]) -> None:
    path = repository / "blobs" / "serving.json"
    path.write_text(json.dumps(content))
    stat = path.stat()
    os.utime(path, ns=(stat.st_atime_ns, stat.st_mtime_ns + 1_000_000_000))


@pytest.fixture(scope="module")
def rollout(
    trained: TrainedRepository,
    trained_seed7: TrainedRepository,
    tmp_path_factory: pytest.TempPathFactory,
) -> Iterator[tuple[Server, Path]]:
    workdir = tmp_path_factory.mktemp("rollout")
    sources = [t.repository / "blobs" / "1" for t in (trained, trained_seed7)]
    repository = rollout_repository(workdir / "models", sources)
    write_rollout(repository, ROLLOUT)
    server = start_server(
        workdir,
        workdir / "server.log",
        SERVICE_MODEL_REPOSITORY="models",
        SERVICE_VERSION_POLICY="all",
        SERVICE_POLL_INTERVAL="0.2",
    )
    yield server, repository
    assert server.stop() == 0, server.output()


def probabilities(client: httpx.Client, path: str, rows: list[list[float]]) -> np.ndarray:
    answer = client.post(path, json={"instances": rows})
    assert answer.status_code == 200, answer.text
    body = answer.json()
    values = body["predictions"]
    return np.array([p["probabilities"] if isinstance(p, dict) else p for p in values])


def test_a_label_serves_its_version_on_every_protocol(rollout: tuple[Server, Path]) -> None:
    server, _ = rollout
    with httpx.Client(base_url=server.url, timeout=30) as client:
        for label, version in (("stable", 1), ("canary", 2)):
            expected = probabilities(client, f"/models/blobs/versions/{version}/predict", ROWS)
            native = client.post(f"/models/blobs/labels/{label}/predict", json={"instances": ROWS})
            assert native.json()["version"] == str(version)
            got = [p["probabilities"] for p in native.json()["predictions"]]
            np.testing.assert_array_equal(got, expected)
            v1 = probabilities(client, f"/v1/models/blobs/labels/{label}:predict", ROWS)
            np.testing.assert_array_equal(v1, expected)
            examples = [{"x1": a, "x2": b} for a, b in ROWS]
            classify = client.post(
                f"/v1/models/blobs/labels/{label}:classify", json={"examples": examples}
            )
            scores = [[score for _, score in row] for row in classify.json()["result"]]
            np.testing.assert_array_equal(scores, expected)
            status = client.get(f"/v1/models/blobs/labels/{label}").json()
            assert [s["version"] for s in status["model_version_status"]] == [str(version)]
            metadata = client.get(f"/v1/models/blobs/labels/{label}/metadata").json()
            assert metadata["model_spec"]["version"] == str(version)


def test_an_unknown_label_is_a_404_naming_the_labels(rollout: tuple[Server, Path]) -> None:
    server, _ = rollout
    with httpx.Client(base_url=server.url, timeout=30) as client:
        for response in (
            client.post("/models/blobs/labels/beta/predict", json={"instances": ROWS[:1]}),
            client.post("/v1/models/blobs/labels/beta:predict", json={"instances": ROWS[:1]}),
            client.post("/v1/models/blobs/labels/beta:classify", json={"examples": [{"x1": 1}]}),
            client.get("/v1/models/blobs/labels/beta/metadata"),
        ):
            assert_error(response, 404, "(['canary', 'stable']), received 'beta'")
        assert_error(
            client.post("/v1/models/blobs/labels/stable:regress", json={}),
            501,
            "no regression signature",
        )


def test_the_canary_takes_its_share_and_the_stable_version_the_rest(
    rollout: tuple[Server, Path],
) -> None:
    server, _ = rollout
    before = routed(server)
    with httpx.Client(base_url=server.url, timeout=30) as client:
        served = [
            client.post("/models/blobs/predict", json={"instances": ROWS[:1]}).json()["version"]
            for _ in range(400)
        ]
        assert client.get("/models/blobs").json()["version"] == "1"  # what the rest get
    canary = served.count("2")
    assert served.count("1") + canary == 400
    assert 60 <= canary <= 140  # 100 expected; 4.6 standard deviations either side
    after = routed(server)
    assert after[("2", "canary")] - before.get(("2", "canary"), 0) == canary
    assert after[("1", "stable")] - before.get(("1", "stable"), 0) == 400 - canary
    assert not [key for key in after if key[1] == "newest"]  # a stable label serves


def routed(server: Server) -> dict[tuple[str, str], float]:
    """``softmax_routed_requests_total`` by (version, route)."""
    counts = {}
    for line in httpx.get(f"{server.url}/metrics", timeout=10).text.splitlines():
        if line.startswith("softmax_routed_requests_total{"):
            labels = dict(
                part.split("=", 1)
                for part in line[line.index("{") + 1 : line.index("}")].split(",")
            )
            key = (labels["version"].strip('"'), labels["route"].strip('"'))
            counts[key] = float(line.rsplit(" ", 1)[1])
    return counts


def test_the_shadow_compares_every_stable_answer_off_the_response_path(
    rollout: tuple[Server, Path],
) -> None:
    server, _ = rollout
    with httpx.Client(base_url=server.url, timeout=30) as client:
        stable = probabilities(client, "/models/blobs/versions/1/predict", ROWS)
        canary = probabilities(client, "/models/blobs/versions/2/predict", ROWS)
        before = settled(client)
        answer = client.post("/models/blobs/labels/stable/predict", json={"instances": ROWS})
        np.testing.assert_array_equal(  # the shadow changes nothing in the answer
            [p["probabilities"] for p in answer.json()["predictions"]], stable
        )
        deadline = time.monotonic() + 10
        while (after := comparisons(client)[0])["rows_compared"] < before["rows_compared"] + 64:
            assert time.monotonic() < deadline, after
            time.sleep(0.05)
    assert after["live_version"] == "1"
    assert after["shadow_version"] == "2"
    assert after["rows_not_compared"] == {}
    # What these 64 rows add, against an independent computation from the two answers.
    n0, n1 = before["rows_compared"], after["rows_compared"]
    agreeing = np.sum(stable.argmax(axis=1) == canary.argmax(axis=1))
    assert after["top1_agreement"] * n1 - (before["top1_agreement"] or 0) * n0 == pytest.approx(
        agreeing, abs=1e-6
    )
    js = float(np.sum(jensenshannon(stable, canary, base=2, axis=1) ** 2))
    added = after["mean_js_divergence_bits"] * n1 - (before["mean_js_divergence_bits"] or 0) * n0
    assert added == pytest.approx(js, rel=1e-6, abs=1e-9)
    metrics = httpx.get(f"{server.url}/metrics", timeout=10).text
    assert 'softmax_shadow_rows_total{model="blobs",shadow_version="2",version="1"}' in metrics


def settled(client: httpx.Client) -> dict[str, Any]:
    """The shadow's record once the rows queued by earlier requests are compared."""
    (last,) = comparisons(client)
    while True:
        time.sleep(0.1)  # the shadow lingers 5 ms before each call
        (now,) = comparisons(client)
        if now == last:
            return now
        last = now


def comparisons(client: httpx.Client) -> list[dict[str, Any]]:
    rollout = client.get("/models/blobs").json()["rollout"]
    assert rollout["shadow"]["version"] == "2"
    found: list[dict[str, Any]] = rollout["shadow"]["comparisons"]
    return found or [{"rows_compared": 0, "top1_agreement": None, "mean_js_divergence_bits": None}]


def test_serving_json_is_reread_and_a_bad_one_refused_keeping_the_last(
    rollout: tuple[Server, Path],
) -> None:
    server, repository = rollout
    try:
        write_rollout(repository, {"version_labels": {"stable": 2}})
        wait_for_label(server, "stable", "2")
        write_rollout(repository, {"version_labels": {"stable": 1, "canary": 9}})
        deadline = time.monotonic() + 10
        while "names version 9" not in server.output():
            assert time.monotonic() < deadline, server.output()[-2000:]
            time.sleep(0.1)
        wait_for_label(server, "stable", "2")  # the previous labels kept
    finally:
        write_rollout(repository, ROLLOUT)
        wait_for_label(server, "canary", "2")


def wait_for_label(server: Server, label: str, version: str) -> None:
    deadline = time.monotonic() + 10
    while True:
        answer = httpx.post(
            f"{server.url}/models/blobs/labels/{label}/predict",
            json={"instances": ROWS[:1]},
            timeout=10,
        )
        if answer.status_code == 200 and answer.json()["version"] == version:
            return
        assert time.monotonic() < deadline, answer.text
        time.sleep(0.1)


def test_the_typed_clients_name_a_label_and_ask_for_the_top_classes(
    rollout: tuple[Server, Path],
) -> None:
    server, _ = rollout
    with Client(server.url) as client, httpx.Client(base_url=server.url) as raw:
        expected = probabilities(raw, "/models/blobs/versions/2/predict", ROWS[:4])
        answer = client.predict(ROWS[:4], model="blobs", label="canary")
        assert answer.version == "2"
        np.testing.assert_array_equal([p.probabilities for p in answer.predictions], expected)
        top = client.predict_top(ROWS[:4], 2, model="blobs", label="canary")
        for row, prediction in zip(expected, top.predictions, strict=True):
            order = np.argsort(-row, kind="stable")[:2]
            assert prediction.top_k.indices == order.tolist()
            assert prediction.top_k.probabilities == row[order].tolist()
        with pytest.raises(ClientError) as refused:
            client.predict(ROWS[:1], model="blobs", label="beta")
        assert refused.value.status == 404

    async def asynchronously() -> str:
        async with AsyncClient(server.url) as client:
            return (await client.predict(ROWS[:1], model="blobs", label="stable")).version

    assert asyncio.run(asynchronously()) == "1"
    with Client(server.url) as client, pytest.raises(ValueError, match="not both"):
        client.predict(ROWS[:1], model="blobs", version=1, label="stable")
