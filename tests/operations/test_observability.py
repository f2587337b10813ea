"""Metrics and logs of the running server: exact counts, bounded labels, JSON lines, 2 workers."""

from __future__ import annotations

import json
import time
from pathlib import Path
from typing import Any

import httpx
import pytest
from prometheus_client.parser import text_string_to_metric_families

from tests.conftest import Server, TrainedRepository, start_server


def samples(url: str) -> dict[tuple[str, frozenset[tuple[str, str]]], float]:
    """Every sample of /metrics, keyed by name and labels."""
    text = httpx.get(url + "/metrics").text
    return {
        (s.name, frozenset(s.labels.items())): s.value
        for family in text_string_to_metric_families(text)
        for s in family.samples
    }


def value(
    table: dict[tuple[str, frozenset[tuple[str, str]]], float], name: str, **labels: str
) -> float:
    return table.get((name, frozenset(labels.items())), 0.0)


def test_metrics_count_requests_classes_and_latency_exactly(server: Server) -> None:
    before = samples(server.url)
    points = [[15.0, 0.0], [15.0, 15.0], [0.0, 15.0], [30.0, 15.0], [30.5, 14.0]]
    for _ in range(3):
        assert httpx.post(server.url + "/predict", json={"instances": points}).status_code == 200
    assert httpx.post(server.url + "/predict", json={"instances": [[1, 2, 3]]}).status_code == 422
    assert (
        httpx.post(server.url + "/models/x9/predict", json={"instances": [[1, 2]]}).status_code
        == 404
    )
    after = samples(server.url)

    def delta(name: str, **labels: str) -> float:
        return value(after, name, **labels) - value(before, name, **labels)

    ok = {"endpoint": "/predict", "model": "blobs", "version": "1", "status": "200"}
    assert delta("softmax_requests_total", **ok) == 3
    assert (
        delta("softmax_requests_total", endpoint="/predict", model="", version="", status="422")
        == 1
    )
    not_found = {"endpoint": "/models/{name}/predict", "model": "", "version": "", "status": "404"}
    assert delta("softmax_requests_total", **not_found) == 1  # the route template, never 'x9'
    for class_name, per_request in (("0", 1), ("1", 1), ("2", 1), ("3", 2)):
        labels = {"model": "blobs", "class_name": class_name}
        assert delta("softmax_predicted_class_total", **labels) == 3 * per_request
    assert delta("softmax_inference_duration_seconds_count", model="blobs", version="1") == 3
    assert delta("softmax_request_rows_sum", model="blobs") == 15
    assert delta("softmax_request_duration_seconds_count", endpoint="/predict") == 4
    assert value(after, "softmax_inflight_requests") == 0


def log_lines(server: Server, request_id: str) -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
    """Every JSON line the server logged, and those of one request (waited for: the access
    line is written just after the response is sent)."""
    deadline = time.monotonic() + 5
    while True:
        # split on newlines only: str.splitlines() also splits inside JSON strings at \x85
        raw_lines = server.output().split("\n")
        lines = [json.loads(line) for line in raw_lines if line.startswith("{")]
        mine = [line for line in lines if line.get("request_id") == request_id]
        if mine or time.monotonic() > deadline:
            return lines, mine
        time.sleep(0.05)


#: The same two rows through each protocol's inference endpoint.
TWO_ROWS = [[15.0, 0.0], [0.0, 15.0]]
PROTOCOLS = {
    "native": ("/predict", "/predict", {"instances": TWO_ROWS}),
    "tf-serving": (
        "/v1/models/blobs:predict",
        "/v1/models/{name}:predict",
        {"instances": TWO_ROWS},
    ),
    "v2": (
        "/v2/models/blobs/infer",
        "/v2/models/{name}/infer",
        {"inputs": [{"name": "x", "shape": [2, 2], "datatype": "FP32", "data": TWO_ROWS}]},
    ),
}


@pytest.mark.parametrize("protocol", list(PROTOCOLS))
def test_every_protocol_records_model_version_rows_and_classes(
    server: Server, protocol: str
) -> None:
    path, template, body = PROTOCOLS[protocol]
    before = samples(server.url)
    request_id = f"observe-{protocol}"
    response = httpx.post(server.url + path, json=body, headers={"X-Request-ID": request_id})
    assert response.status_code == 200, response.text
    after = samples(server.url)

    def delta(name: str, **labels: str) -> float:
        return value(after, name, **labels) - value(before, name, **labels)

    served = {"endpoint": template, "model": "blobs", "version": "1", "status": "200"}
    assert delta("softmax_requests_total", **served) == 1
    assert delta("softmax_predicted_class_total", model="blobs", class_name="0") == 1
    assert delta("softmax_predicted_class_total", model="blobs", class_name="2") == 1
    assert delta("softmax_request_rows_sum", model="blobs") == 2
    _, mine = log_lines(server, request_id)
    assert len(mine) == 1
    assert (mine[0]["model"], mine[0]["version"], mine[0]["rows"]) == ("blobs", "1", 2)


def test_access_log_has_one_json_line_per_request(server: Server) -> None:
    response = httpx.post(
        server.url + "/predict",
        json={"instances": [[15.0, 0.0], [0.0, 15.0]]},
        headers={"X-Request-ID": "trace-me-7"},
    )
    assert response.status_code == 200
    lines, mine = log_lines(server, "trace-me-7")
    assert len(mine) == 1
    record = mine[0]
    assert record["event"] == "request"
    assert (record["method"], record["path"], record["status"]) == ("POST", "/predict", 200)
    assert (record["model"], record["version"], record["rows"]) == ("blobs", "1", 2)
    assert record["latency_ms"] > 0
    assert {"ts", "level", "logger", "message"} <= set(record)
    lifecycle = [line for line in lines if "loaded model 'blobs' version 1" in line["message"]]
    assert lifecycle, "model loads are logged as JSON lines too"


def test_metrics_aggregate_across_two_workers(trained: TrainedRepository, tmp_path: Path) -> None:
    server = start_server(trained.workdir, tmp_path / "log", args=("--workers", "2"))
    try:
        with httpx.Client(base_url=server.url) as c1, httpx.Client(base_url=server.url) as c2:
            for i in range(40):
                client = c1 if i % 2 else c2
                assert client.post("/predict", json={"instances": [[15.0, 0.0]]}).status_code == 200
        totals = set()
        for _ in range(6):  # whichever worker answers /metrics, it reports both workers' counts
            with httpx.Client(base_url=server.url) as fresh:
                text = fresh.get("/metrics").text
            table = {
                (s.name, frozenset(s.labels.items())): s.value
                for family in text_string_to_metric_families(text)
                for s in family.samples
            }
            ok = {"endpoint": "/predict", "model": "blobs", "version": "1", "status": "200"}
            totals.add(value(table, "softmax_requests_total", **ok))
        assert totals == {40.0}
        # Two worker processes, each logging as JSON. The server is ready once one worker
        # is: on a busy machine the other may still be starting, so wait for its line.
        deadline = time.monotonic() + 60
        while True:
            started = {
                json.loads(line)["message"]
                for line in server.output().split("\n")
                if line.startswith("{") and "Started server process" in line
            }
            if len(started) >= 2 or time.monotonic() > deadline:
                break
            time.sleep(0.2)
        assert len(started) == 2, started
    finally:
        assert server.stop() == 0
