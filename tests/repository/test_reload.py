"""Hot reload on the real server: a version trained under load, broken versions, on-demand reload.

Every server here runs on its own copy of the trained model, so the shared server of
the other tests never changes.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import numpy as np
import pytest
import tritonclient.http as triton
from tritonclient.utils import InferenceServerException

from tests.commands import SERVE_ARGV
from tests.conftest import (
    Server,
    TrainedRepository,
    free_port,
    python_argv,
    start_server,
    subprocess_env,
)
from tests.versions import BREAKAGES, install_version

GOOD = {"instances": [[15.0, 0.0]]}
POLL = 1.0
#: Longest a new version may take to load, verify and warm up (LiteRT: milliseconds).
LOAD_BOUND = 4.0


@pytest.fixture
def source(trained: TrainedRepository) -> Path:
    """The trained version the servers here start from."""
    return trained.repository / "blobs" / "1"


def served_version(server: Server, path: str = "/predict") -> str:
    response = httpx.post(server.url + path, json=GOOD, timeout=10)
    assert response.status_code == 200, response.text
    return str(response.json()["version"])


def wait_for(condition: Any, seconds: float, what: str) -> float:
    """Poll ``condition`` until true; the seconds it took (fails after ``seconds``)."""
    started = time.monotonic()
    while time.monotonic() - started < seconds:
        if condition():
            return time.monotonic() - started
        time.sleep(0.05)
    raise AssertionError(f"expected {what} within {seconds} s")


# --- a version trained while a client streams requests ---------------------------------


def read_stream(log: Path) -> list[dict[str, Any]]:
    return [json.loads(line) for line in log.read_text().splitlines() if line.strip()]


def test_version_trained_under_load_takes_over_with_zero_failed_requests(
    source: Path, tmp_path: Path
) -> None:
    repo = tmp_path / "models"
    install_version(source, repo, "blobs", 1)
    server = start_server(tmp_path, tmp_path / "server.log", SERVICE_POLL_INTERVAL=str(POLL))
    log, stop = tmp_path / "stream.jsonl", tmp_path / "stop"
    stream = subprocess.Popen(
        [sys.executable, "-m", "tests.stream_client", server.url, str(log), str(stop), "240"],
        env=subprocess_env(),
    )
    try:
        wait_for(lambda: log.exists() and len(read_stream(log)) >= 20, 30, "a steady stream")
        training = subprocess.run(
            [
                sys.executable,
                *("-m", "model_training", "--model-repository", str(repo)),
                *("--quiet", "--epochs", "3", "--seed", "7"),
            ],
            cwd=tmp_path,
            env=subprocess_env(),
            capture_output=True,
            text=True,
            timeout=300,
            check=False,
        )
        assert training.returncode == 0, training.stderr[-3000:]
        assert "wrote blobs version 2" in training.stdout
        written = os.stat(repo / "blobs" / "2").st_ctime  # the trainer's rename

        def settled() -> bool:  # version 2 answered for a while
            answers = read_stream(log)
            return sum(a["version"] == "2" for a in answers) >= 30

        wait_for(settled, POLL + LOAD_BOUND + 30, "version 2 in the stream")
    finally:
        stop.touch()
        stream.wait(timeout=30)
        status = httpx.get(server.url + "/v1/models/blobs").json()
        assert server.stop() == 0, server.output()

    answers = read_stream(log)
    failed = [a for a in answers if a["status"] != 200]
    assert not failed, failed[:5]
    versions = [a["version"] for a in answers]
    switch = versions.index("2")
    assert set(versions[:switch]) == {"1"}
    assert set(versions[switch:]) == {"2"}, "an answer from version 1 after version 2"
    first_v2 = answers[switch]["sent"]
    delay = first_v2 - written
    around = [a["answered"] - a["sent"] for a in answers if abs(a["sent"] - first_v2) <= 1]
    print(
        f"\nhot reload: {len(answers)} requests, 0 failed; {switch} answered by version 1, "
        f"{len(answers) - switch} by version 2; version 2 answered {delay:.2f} s after the "
        f"trainer's rename (poll interval {POLL} s); answers within 1 s of the switch: "
        f"median {np.median(around) * 1e3:.1f} ms, slowest {max(around) * 1e3:.1f} ms"
    )
    assert switch >= 20
    assert delay <= POLL + LOAD_BOUND, f"version 2 took {delay:.2f} s to take over"
    assert status["model_version_status"] == [
        {"version": "1", "state": "END", "status": {"error_code": "OK", "error_message": ""}},
        {"version": "2", "state": "AVAILABLE", "status": {"error_code": "OK", "error_message": ""}},
    ]
    assert "loaded model 'blobs' version 2 (litert)" in server.output()
    assert "unloaded model 'blobs' version 1" in server.output()


def test_each_of_two_workers_picks_up_a_new_version(source: Path, tmp_path: Path) -> None:
    repo = tmp_path / "models"
    install_version(source, repo, "blobs", 1)
    server = start_server(
        tmp_path,
        tmp_path / "server.log",
        args=("--workers", "2"),
        SERVICE_POLL_INTERVAL=str(POLL),
    )
    try:
        assert served_version(server) == "1"
        install_version(source, repo, "blobs", 2)
        took = wait_for(lambda: served_version(server) == "2", POLL + LOAD_BOUND, "version 2")

        def both_workers_loaded() -> bool:
            return server.output().count("loaded model 'blobs' version 2 (litert)") == 2

        wait_for(both_workers_loaded, POLL + LOAD_BOUND, "both workers to load version 2")
        # Fresh connections, spread over the workers by the kernel: all on version 2 now.
        answers = {served_version(server) for _ in range(40)}
    finally:
        assert server.stop() == 0, server.output()
    print(f"\ntwo workers: version 2 answered {took:.2f} s after it was written")
    assert answers == {"2"}


# --- broken versions: Triton's test_model_reload_fail -----------------------------------


@pytest.fixture(scope="module")
def explicit(
    trained: TrainedRepository, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[tuple[Server, Path]]:
    """A server with polling off serving version 1, and its repository."""
    workdir = tmp_path_factory.mktemp("explicit")
    install_version(trained.repository / "blobs" / "1", workdir / "models", "blobs", 1)
    server = start_server(
        workdir, workdir / "server.log", SERVICE_POLL_INTERVAL="0", SERVICE_MODEL_CONTROL="true"
    )
    yield server, workdir / "models"
    assert server.stop() == 0, server.output()


def infer_ok(client: triton.InferenceServerClient, version: str = "") -> None:
    """Inference that must succeed, on version 1."""
    x = np.array([[15.0, 0.0]], dtype=np.float32)
    tensor = triton.InferInput("input", [1, 2], "FP32")
    tensor.set_data_from_numpy(x)
    result = client.infer("blobs", [tensor], model_version=version)
    assert result.get_response()["model_version"] == "1"
    assert int(np.argmax(result.as_numpy("probabilities"))) == 0


@pytest.mark.parametrize("breakage", list(BREAKAGES))
def test_model_reload_fail(explicit: tuple[Server, Path], source: Path, breakage: str) -> None:
    server, repo = explicit
    change, reason = BREAKAGES[breakage]
    client = triton.InferenceServerClient(server.url.removeprefix("http://"))
    try:
        assert client.is_server_live()
        assert client.is_server_ready()
        assert client.is_model_ready("blobs", "1")
        infer_ok(client)

        install_version(source, repo, "blobs", 2, change)
        with pytest.raises(InferenceServerException) as refused:
            client.load_model("blobs")
        assert refused.value.status() == "409"
        assert "version 2 is at UNAVAILABLE state" in refused.value.message()
        assert reason in refused.value.message()
        assert "version 1 keeps serving" in refused.value.message()

        assert client.is_server_live()
        assert client.is_server_ready()
        assert client.is_model_ready("blobs", "1")
        assert not client.is_model_ready("blobs", "2")
        infer_ok(client)
        infer_ok(client, "1")

        status = httpx.get(server.url + "/v1/models/blobs/versions/2").json()
        (v2,) = status["model_version_status"]
        assert (v2["state"], v2["status"]["error_code"]) == ("END", "UNKNOWN")
        assert reason in v2["status"]["error_message"]
        index = {e["version"]: e for e in client.get_model_repository_index()}
        assert index["2"]["state"] == "UNAVAILABLE"
        assert reason in index["2"]["reason"]
        assert "refusing model 'blobs' version 2: " in server.output()
        assert "/tmp/" not in json.dumps(status) + json.dumps(index)  # no paths leak
    finally:
        client.close()
        shutil.rmtree(repo / "blobs" / "2", ignore_errors=True)


# --- on-demand reload with polling off --------------------------------------------------


def test_reload_on_demand_swaps_in_new_versions_and_unload_load_round_trip(
    source: Path, tmp_path: Path
) -> None:
    repo = tmp_path / "models"
    install_version(source, repo, "blobs", 1)
    server = start_server(
        tmp_path, tmp_path / "server.log", SERVICE_POLL_INTERVAL="0", SERVICE_MODEL_CONTROL="true"
    )
    client = triton.InferenceServerClient(server.url.removeprefix("http://"))
    try:
        install_version(source, repo, "blobs", 2)
        time.sleep(1.5)
        assert served_version(server) == "1"  # polling is off: nothing happens by itself

        response = httpx.post(server.url + "/models/blobs/reload", timeout=30)
        assert response.status_code == 200, response.text
        body = response.json()
        assert body["name"] == "blobs"
        assert body["versions"][1] == {"version": "2", "state": "AVAILABLE", "error": ""}
        assert body["versions"][0]["version"] == "1"
        assert body["versions"][0]["state"] in {"UNLOADING", "END"}
        assert served_version(server) == "2"
        assert served_version(server, "/models/blobs/predict") == "2"

        client.unload_model("blobs")
        assert not client.is_model_ready("blobs")
        assert not client.is_server_ready()
        assert httpx.post(server.url + "/models/blobs/predict", json=GOOD).status_code == 404
        client.load_model("blobs")
        assert client.is_model_ready("blobs", "2")
        assert client.is_server_ready()

        missing = httpx.post(server.url + "/models/nope/reload")
        assert missing.status_code == 404
        assert "'nope'" in missing.json()["error"]
    finally:
        client.close()
        assert server.stop() == 0, server.output()


# --- settings ---------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("env", "message"),
    [
        ({"SERVICE_VERSION_POLICY": "newest"}, "version_policy"),
        ({"SERVICE_VERSION_POLICY": "specific:0"}, "version_policy"),
        ({"SERVICE_POLL_INTERVAL": "-1"}, "poll_interval"),
    ],
)
def test_invalid_lifecycle_settings_exit_2(
    tmp_path: Path, env: dict[str, str], message: str
) -> None:
    result = subprocess.run(
        python_argv(SERVE_ARGV),
        cwd=tmp_path,
        env=subprocess_env(SERVICE_PORT=str(free_port()), **env),
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert result.returncode == 2, result.stderr
    assert result.stderr.startswith("error: invalid settings")
    assert message in result.stderr
