"""``python -m service`` as a process: settings, readiness, refusals, and what it imports."""

from __future__ import annotations

import asyncio
import json
import shutil
import socket
import subprocess
import time
from pathlib import Path

import httpx
import numpy as np
import pytest

from tests.commands import SERVE_ARGV
from tests.conftest import (
    Server,
    TrainedRepository,
    free_port,
    python_argv,
    start_server,
    subprocess_env,
)

GOOD = {"instances": [[15.0, 0.0]]}


def copy_repository(trained: TrainedRepository, workdir: Path, *names: str) -> Path:
    for name in names or ("blobs",):
        target = workdir / "models" / name / "1"
        shutil.copytree(trained.repository / "blobs" / "1", target)
        metadata = json.loads((target / "metadata.json").read_text())
        metadata["name"] = name
        (target / "metadata.json").write_text(json.dumps(metadata))
    return workdir / "models"


def test_a_table_model_is_served_without_loading_tensorflow_or_pillow(
    trained: TrainedRepository, tmp_path: Path
) -> None:
    """TensorFlow never (LiteRT serves); Pillow only once an image model is loaded."""
    server = start_server(trained.workdir, tmp_path / "log")
    try:
        assert httpx.post(server.url + "/predict", json=GOOD).status_code == 200
        maps = Path(f"/proc/{server.process.pid}/maps").read_text()
        assert "/tensorflow/" not in maps
        assert "/keras/" not in maps
        assert "/PIL/" not in maps
    finally:
        assert server.stop() == 0


def test_empty_repository_is_live_but_not_ready(tmp_path: Path) -> None:
    server = start_server(tmp_path, tmp_path / "log", wait_ready=False)
    try:
        assert httpx.get(server.url + "/health/live").status_code == 200
        ready = httpx.get(server.url + "/health/ready")
        assert ready.status_code == 503
        assert "no loadable model" in ready.json()["error"]
        assert ready.headers["retry-after"]
        predict = httpx.post(server.url + "/predict", json=GOOD)
        assert predict.status_code in {404, 503}
        assert "error" in predict.json()
        assert httpx.get(server.url + "/models").json() == {"models": []}
    finally:
        assert server.stop() == 0


def test_tampered_new_version_is_refused_and_the_old_one_keeps_serving(
    trained: TrainedRepository, tmp_path: Path
) -> None:
    repo = copy_repository(trained, tmp_path)
    broken = repo / "blobs" / "2"
    shutil.copytree(repo / "blobs" / "1", broken)
    metadata = json.loads((broken / "metadata.json").read_text())
    metadata["version"] = 2
    (broken / "metadata.json").write_text(json.dumps(metadata))
    with (broken / "model.tflite").open("ab") as handle:
        handle.write(b"\0")
    (repo / "blobs" / ".tmp-half-written").mkdir()  # a trainer's unfinished output: ignored
    (repo / "blobs" / "notes").mkdir()

    server = start_server(tmp_path, tmp_path / "log")
    try:
        assert httpx.get(server.url + "/models").json()["models"] == [
            {"name": "blobs", "versions": ["1"], "default_version": "1"}
        ]
        assert httpx.post(server.url + "/predict", json=GOOD).json()["version"] == "1"
        assert "refusing model 'blobs' version 2: model.tflite sha256 mismatch" in server.output()
    finally:
        assert server.stop() == 0


def test_several_models_need_a_default_for_plain_predict(
    trained: TrainedRepository, tmp_path: Path
) -> None:
    copy_repository(trained, tmp_path, "alpha", "beta")
    server = start_server(tmp_path, tmp_path / "log", wait_ready=False)
    try:
        deadline = time.monotonic() + 30
        while httpx.get(server.url + "/models").status_code != 200:
            assert time.monotonic() < deadline
            time.sleep(0.05)
        # ready means "/predict works": not without a default among several models
        ready = httpx.get(server.url + "/health/ready")
        assert ready.status_code == 503
        assert "SERVICE_DEFAULT_MODEL" in ready.json()["error"]
        assert "['alpha', 'beta']" in ready.json()["error"]
        response = httpx.post(server.url + "/predict", json=GOOD)
        assert response.status_code == 404
        assert "SERVICE_DEFAULT_MODEL" in response.json()["error"]
        named = httpx.post(server.url + "/models/beta/predict", json=GOOD).json()
        assert named["model"] == "beta"
    finally:
        assert server.stop() == 0

    server = start_server(tmp_path, tmp_path / "log2", SERVICE_DEFAULT_MODEL="beta")
    try:
        assert httpx.post(server.url + "/predict", json=GOOD).json()["model"] == "beta"
    finally:
        assert server.stop() == 0


def test_flags_override_environment_and_limits_apply(
    trained: TrainedRepository, tmp_path: Path
) -> None:
    flag_port, env_port = free_port(), free_port()
    server = start_server(
        trained.workdir,
        tmp_path / "log",
        args=("--port", str(flag_port)),
        port=flag_port,
        SERVICE_PORT=str(env_port),
        SERVICE_MAX_BATCH_ROWS="3",
    )
    try:
        with pytest.raises(httpx.ConnectError):
            httpx.get(f"http://127.0.0.1:{env_port}/health/live")
        url = server.url
        assert httpx.post(url + "/predict", json={"instances": [[1, 2]] * 3}).status_code == 200
        too_many = httpx.post(url + "/predict", json={"instances": [[1, 2]] * 4})
        assert too_many.status_code == 413
        assert "at most 3 instances" in too_many.json()["error"]
        assert "received 4" in too_many.json()["error"]
    finally:
        server.stop()


@pytest.mark.parametrize(
    ("args", "env", "message"),
    [
        (("--port", "70000"), {}, "port"),
        (("--workers", "0"), {}, "workers"),
        ((), {"SERVICE_LOG_LEVEL": "loud"}, "log_level"),
        ((), {"SERVICE_MAX_BATCH_ROWS": "many"}, "max_batch_rows"),
    ],
)
def test_invalid_settings_exit_2_with_one_line(
    tmp_path: Path, args: tuple[str, ...], env: dict[str, str], message: str
) -> None:
    result = subprocess.run(
        [*python_argv(SERVE_ARGV), *args],
        cwd=tmp_path,
        env=subprocess_env(SERVICE_PORT=str(free_port()), **env),
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert result.returncode == 2
    assert result.stderr.startswith("error: invalid settings")
    assert message in result.stderr


def keras_only_repository(trained: TrainedRepository, workdir: Path) -> Path:
    """A copy of the default model without its LiteRT export: served through Keras."""
    repo = copy_repository(trained, workdir)
    version = repo / "blobs" / "1"
    (version / "model.tflite").unlink()
    metadata = json.loads((version / "metadata.json").read_text())
    del metadata["files"]["model.tflite"]
    (version / "metadata.json").write_text(json.dumps(metadata))
    return repo


def test_keras_runtime_with_batching_answers_concurrent_clients_like_litert(
    trained: TrainedRepository, server: Server, tmp_path: Path
) -> None:
    keras_only_repository(trained, tmp_path)
    points = [[float(i % 31), float(i % 17)] for i in range(48)]
    expected = httpx.post(server.url + "/predict", json={"instances": points}).json()

    keras_server = start_server(tmp_path, tmp_path / "log", SERVICE_BATCHING="on")
    try:
        assert httpx.get(keras_server.url + "/models/blobs").json()["runtime"] == "keras"

        async def ask_all() -> list[httpx.Response]:
            async with httpx.AsyncClient(base_url=keras_server.url, timeout=30) as client:
                return list(
                    await asyncio.gather(
                        *(client.post("/predict", json={"instances": [p]}) for p in points)
                    )
                )

        answers = asyncio.run(ask_all())
        assert "loaded model 'blobs' version 1 (keras, batching)" in keras_server.output()
    finally:
        assert keras_server.stop() == 0
    for answer, want in zip(answers, expected["predictions"], strict=True):
        got = answer.json()["predictions"][0]
        assert got["argmax"] == want["argmax"]
        np.testing.assert_allclose(got["probabilities"], want["probabilities"], atol=1e-5)


def test_a_busy_port_exits_1_saying_so_before_loading_anything(trained: TrainedRepository) -> None:
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        result = subprocess.run(
            [*python_argv(SERVE_ARGV), "--port", str(port)],
            cwd=trained.workdir,
            env=subprocess_env(),
            capture_output=True,
            text=True,
            timeout=60,
            check=False,
        )
    assert result.returncode == 1
    last = (result.stdout + result.stderr).strip().splitlines()[-1]
    assert last == (
        f"error: cannot listen on 127.0.0.1:{port}: address already in use; "
        "choose another with --port or SERVICE_PORT"
    )
    assert "loaded model" not in result.stdout + result.stderr
