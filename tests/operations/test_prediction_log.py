"""The prediction log, in process: what was asked and answered and the labels reported
later, as JSON lines; sampled; rotated within its cap; and a disk that refuses every
write costs no request."""

from __future__ import annotations

import json
import os
import time
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from prometheus_client.parser import text_string_to_metric_families

from service.operations.prediction_log import PredictionLog
from service.settings import Settings
from tests.conftest import TrainedRepository, in_process

ROWS = [[15.0, 0.0], [0.5, 14.0], [29.0, 15.5]]


def lines(directory: Path) -> list[dict[str, Any]]:
    """Every line of every file of the log, oldest file first."""
    files = sorted(directory.glob("predictions-*.jsonl*"), key=lambda p: p.stat().st_mtime)
    return [json.loads(line) for f in files for line in f.read_text().splitlines()]


def counted(client: Any, outcome: str) -> float:
    text = client.get("/metrics").text
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            if sample.name == "softmax_prediction_log_lines_total" and (
                sample.labels.get("outcome") == outcome
            ):
                return float(sample.value)
    return 0.0


def test_predictions_and_their_labels_are_written_as_json_lines(
    trained: TrainedRepository, tmp_path: Path
) -> None:
    settings = Settings(
        model_repository=trained.repository,
        prediction_log_dir=tmp_path / "log",
        feedback_max_bytes=2**20,
    )
    with in_process(settings) as client:
        answer = client.post("/predict", json={"instances": ROWS}, headers={"X-Request-ID": "q-1"})
        assert answer.status_code == 200
        named = client.post(
            "/v1/models/blobs:predict",
            json={"instances": [{"x1": 15.0, "x2": 15.0}]},
            headers={"X-Request-ID": "q-2"},
        )
        assert named.status_code == 200
        labels = {"request_id": "q-1", "labels": [0, "2", 3]}  # indices or names
        assert client.post("/models/blobs/feedback", json=labels).status_code == 200
    # the lifespan's end wrote what was queued
    written = lines(tmp_path / "log")
    assert [w["kind"] for w in written] == ["prediction", "prediction", "feedback"]
    first, second, feedback = written
    predictions = answer.json()["predictions"]
    assert first["request_id"] == "q-1"
    assert (first["model"], first["version"], first["form"]) == ("blobs", 1, "rows")
    assert first["features"] == ["x1", "x2"]
    assert first["inputs"] == ROWS
    assert first["probabilities"] == [p["probabilities"] for p in predictions]  # float64, exact
    assert first["labels"] == [p["label"] for p in predictions]
    assert first["time"].endswith("Z")
    assert second["form"] == "named"
    assert second["inputs"] == [{"x1": 15.0, "x2": 15.0}]
    assert second["probabilities"] == named.json()["predictions"]
    assert feedback == {
        "kind": "feedback",
        "time": feedback["time"],
        "request_id": "q-1",
        "model": "blobs",
        "version": 1,
        "labels": ["0", "2", "3"],
    }


class Sequence:
    """A random source that returns the given numbers in turn."""

    def __init__(self, values: list[float]) -> None:
        self.values = iter(values)

    def __call__(self) -> float:
        return next(self.values)


def test_only_the_sampled_share_is_logged(tmp_path: Path) -> None:
    draws = [0.05, 0.5, 0.24, 0.25, 0.9, 0.1]  # below 0.25: kept
    log = PredictionLog(tmp_path, sample=0.25, random_source=Sequence(draws))
    for i in range(len(draws)):
        log.offer(f"r{i}", "m", 1, [[float(i)]], np.array([[1.0]]), [0], ["a"], ["x"])
    log.close()
    assert [line["request_id"] for line in lines(tmp_path)] == ["r0", "r2", "r5"]


def test_files_rotate_and_the_log_stays_within_its_cap(tmp_path: Path) -> None:
    log = PredictionLog(tmp_path, max_bytes=4096, backups=2)
    for i in range(400):
        log.offer(f"r{i}", "m", 1, [[float(i), 1.5]], np.array([[0.25, 0.75]]), [1], "ab", "xy")
    log.close()
    files = sorted(p.name for p in tmp_path.iterdir())
    pid = os.getpid()
    assert files == [f"predictions-{pid}.jsonl{end}" for end in ("", ".1", ".2")]
    assert all((tmp_path / f).stat().st_size <= 4096 for f in files)
    kept = [line["request_id"] for line in lines(tmp_path)]
    assert kept == [f"r{i}" for i in range(400 - len(kept), 400)]  # the newest, in order


def test_a_disk_that_refuses_every_write_costs_no_request(
    trained: TrainedRepository, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    directory = tmp_path / "log"
    directory.mkdir()
    # The file this process would write is /dev/full: every write fails with ENOSPC.
    (directory / f"predictions-{os.getpid()}.jsonl").symlink_to("/dev/full")
    settings = Settings(model_repository=trained.repository, prediction_log_dir=directory)
    with in_process(settings) as client:
        for _ in range(20):
            assert client.post("/predict", json={"instances": ROWS}).status_code == 200
        deadline = time.monotonic() + 10  # the writer thread counts them as it goes
        while counted(client, "failed") < 20:
            assert time.monotonic() < deadline, counted(client, "failed")
            time.sleep(0.01)
        assert counted(client, "failed") == 20
        assert counted(client, "written") == 0
    complaints = [r for r in caplog.records if r.name == "service.prediction_log"]
    assert len(complaints) == 1  # once a minute at most
    assert "No space left on device" in complaints[0].getMessage()
