"""A server with every monitoring signal on, shared by the dashboard and alert tests."""

from __future__ import annotations

from collections.abc import Iterator

import httpx
import numpy as np
import pytest
from prometheus_client.parser import text_string_to_metric_families
from sklearn.datasets import make_blobs  # type: ignore[import-untyped]

from tests.conftest import Server, TrainedRepository, start_server

#: The four blobs the default model was trained on (tests/operations/test_monitor.py).
CENTERS = [[15.0, 0.0], [15.0, 15.0], [0.0, 15.0], [30.0, 15.0]]


@pytest.fixture(scope="module")
def monitored(
    trained: TrainedRepository, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[Server]:
    """The default model served with a 400-row window and feedback on."""
    workdir = tmp_path_factory.mktemp("monitored")
    running = start_server(
        trained.workdir,
        workdir / "server.log",
        SERVICE_MODEL_REPOSITORY=str(trained.repository),
        SERVICE_MONITOR_WINDOW="400",
        SERVICE_FEEDBACK_MAX_BYTES=str(2**24),
    )
    yield running
    assert running.stop() == 0, running.output()


def instances(n: int, seed: int) -> list[list[float]]:
    """Rows drawn as the default model's training rows were."""
    x, _ = make_blobs(n_samples=n, centers=CENTERS, cluster_std=1.5, random_state=seed)
    return np.asarray(x).tolist()  # type: ignore[no-any-return]


def predict(server: Server, rows: list[list[float]], rid: str) -> list[str]:
    """The labels ``server`` answers for ``rows``, asked with request id ``rid``."""
    answer = httpx.post(
        server.url + "/predict", json={"instances": rows}, headers={"X-Request-ID": rid}
    )
    assert answer.status_code == 200, answer.text
    return [p["label"] for p in answer.json()["predictions"]]


def exported_names(server: Server) -> set[str]:
    """Every series name ``server`` exports once it has answered and been told a label."""
    labels = predict(server, instances(4, 0), "exported")  # touch every labelled series
    body = {"request_id": "exported", "labels": labels}
    httpx.post(server.url + "/models/blobs/feedback", json=body).raise_for_status()
    text = httpx.get(server.url + "/metrics").text
    return {s.name for family in text_string_to_metric_families(text) for s in family.samples}
