"""Shared fixtures: a model repository trained by the real CLI, and the real server on a free port.

Both are built once per test session in a temporary directory (training takes
seconds); nothing trained is ever committed.
"""

from __future__ import annotations

import hashlib
import inspect
import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import pytest
from hypothesis import settings as hypothesis_settings
from starlette.testclient import TestClient

from service.app import create_app
from service.settings import Settings
from tests.commands import SERVE_ARGV, TRAIN_ARGV

# Hypothesis profiles. "ci" keeps no example database: a fresh clone must not depend on
# (or write) what earlier runs found, and each run draws new examples. Neither profile
# has a deadline: these machines are shared, and a slow example is not a wrong one.
# Choose with HYPOTHESIS_PROFILE; CI=true picks "ci".
hypothesis_settings.register_profile("ci", database=None, deadline=None, print_blob=True)
hypothesis_settings.register_profile("dev", deadline=None)
# Many more examples, to hunt rare failures: HYPOTHESIS_PROFILE=stress pytest tests/...
hypothesis_settings.register_profile("stress", database=None, deadline=None, max_examples=3000)
hypothesis_settings.load_profile(
    os.environ.get("HYPOTHESIS_PROFILE") or ("ci" if os.environ.get("CI") else "dev")
)

ROOT = Path(__file__).resolve().parents[1]


def python_argv(argv: tuple[str, ...]) -> list[str]:
    """A container command with this interpreter in place of ``python``."""
    assert argv[0] == "python"
    return [sys.executable, *argv[1:]]


def subprocess_env(**extra: str) -> dict[str, str]:
    """The test environment, with the project importable and no stray SERVICE_* settings."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("SERVICE_")}
    # No gRPC listener unless a test asks for one on a free port: servers run side by side.
    env["SERVICE_GRPC_PORT"] = "0"
    env["PYTHONPATH"] = str(ROOT)
    env["TF_CPP_MIN_LOG_LEVEL"] = "2"
    env.update(extra)
    return env


def free_port() -> int:
    """A TCP port nobody listens on right now."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


@dataclass
class TrainedRepository:
    """Where the default model was trained, and what the trainer printed."""

    workdir: Path
    repository: Path
    stdout: str


def _training_key(args: tuple[str, ...] = ()) -> str:
    """What a trained model depends on: the trainer's code, the dependencies, the command."""
    digest = hashlib.sha256(" ".join((*TRAIN_ARGV, *args)).encode())
    for path in [*sorted((ROOT / "model_training").glob("*.py")), ROOT / "pyproject.toml"]:
        digest.update(path.read_bytes())
    return digest.hexdigest()[:16]


def _train(
    tmp_path_factory: pytest.TempPathFactory, args: tuple[str, ...] = ()
) -> TrainedRepository:
    """Run the container's exact training command (plus ``args`` and --quiet) once.

    ``make check`` sets ``SOFTMAX_TRAINED_CACHE`` (a git-ignored folder): there the run is
    kept, keyed by the trainer's code and the command, and reused while they are
    unchanged, so the inner loop does not pay for training. ``make test`` and CI always
    train afresh.
    """
    workdir = tmp_path_factory.mktemp("work")
    argv = [*python_argv(TRAIN_ARGV), *args, "--quiet"]
    cache_root = os.environ.get("SOFTMAX_TRAINED_CACHE")
    cached = Path(cache_root) / _training_key(args) if cache_root else None
    if cached is not None and (cached / "stdout.txt").is_file():
        shutil.copytree(cached / "models", workdir / "models")
        stdout = (cached / "stdout.txt").read_text()
        return TrainedRepository(workdir, workdir / "models", stdout)
    result = subprocess.run(
        argv,
        cwd=workdir,
        env=subprocess_env(),
        capture_output=True,
        text=True,
        timeout=600,
        check=False,
    )
    assert result.returncode == 0, result.stderr[-3000:]
    if cached is not None:
        scratch = cached.with_name(f".{cached.name}-{os.getpid()}")
        shutil.copytree(workdir / "models", scratch / "models")
        (scratch / "stdout.txt").write_text(result.stdout)
        scratch.rename(cached)  # whole or not at all
    return TrainedRepository(workdir, workdir / "models", result.stdout)


@pytest.fixture(scope="session")
def trained(tmp_path_factory: pytest.TempPathFactory) -> TrainedRepository:
    """The default 4-blob model, trained with the container's exact command (plus --quiet)."""
    return _train(tmp_path_factory)


@pytest.fixture(scope="session")
def trained_seed7(tmp_path_factory: pytest.TempPathFactory) -> TrainedRepository:
    """The default model trained with ``--seed 7``: another version of it (rollouts)."""
    return _train(tmp_path_factory, ("--seed", "7"))


@pytest.fixture(scope="session")
def trained_digits(tmp_path_factory: pytest.TempPathFactory) -> TrainedRepository:
    """The digits example (an 8x8 gray image CNN), trained once per session."""
    return _train(tmp_path_factory, ("--example", "digits"))


@dataclass
class Server:
    """A running ``python -m service`` process."""

    process: subprocess.Popen[bytes]
    url: str
    log: Path

    def output(self) -> str:
        """Everything the server has logged so far."""
        return self.log.read_text(errors="replace")

    def stop(self, timeout: float = 30) -> int:
        """SIGTERM, then wait; returns the exit status."""
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGINT if os.name == "nt" else signal.SIGTERM)
            try:
                self.process.wait(timeout)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()
        return int(self.process.returncode)


def start_server(
    workdir: Path,
    log: Path,
    *,
    args: tuple[str, ...] = (),
    port: int | None = None,
    wait_ready: bool = True,
    **env: str,
) -> Server:
    """Start the container's serve command in ``workdir``; wait until it answers on ``port``.

    The port (default: a free one) is passed as SERVICE_PORT unless ``env`` sets that itself.
    """
    port = port or free_port()
    env = {"SERVICE_PORT": str(port), **env}
    with log.open("wb") as sink:
        process = subprocess.Popen(
            [*python_argv(SERVE_ARGV), *args],
            cwd=workdir,
            env=subprocess_env(**env),
            stdout=sink,
            stderr=subprocess.STDOUT,
        )
    server = Server(process, f"http://127.0.0.1:{port}", log)
    path = "/health/ready" if wait_ready else "/health/live"
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise AssertionError(f"server exited with {process.returncode}:\n{server.output()}")
        try:
            if httpx.get(server.url + path, timeout=1).status_code == 200:
                return server
        except httpx.TransportError:
            pass
        time.sleep(0.1)
    server.stop()
    raise AssertionError(f"server not answering {path} within 60 s:\n{server.output()}")


@pytest.fixture(scope="session")
def server(
    trained: TrainedRepository, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[Server]:
    """The real service serving the default model, shared by the API tests."""
    running = start_server(trained.workdir, tmp_path_factory.mktemp("server") / "server.log")
    yield running
    assert running.stop() == 0, running.output()


@pytest.fixture(scope="module")
def client(trained: TrainedRepository) -> Iterator[TestClient]:
    """The service on the default model, in process: the fast tier's client.

    An httpx-style client (``.get``, ``.post``) on ``create_app(Settings(...))`` with its
    lifespan running; no socket, no subprocess. Tests that need the real process (its
    logs, signals, workers, a client library with its own HTTP stack) use ``server``.
    """
    with in_process(Settings(model_repository=trained.repository)) as http:
        yield http


@contextmanager
def in_process(settings: Settings, *, wait_ready: bool = True) -> Iterator[TestClient]:
    """``create_app(settings)`` behind an in-process ASGI client, its lifespan running.

    The fast tier: no subprocess, no socket. Waits (up to 30 s) until the models are
    loaded and ready, unless told not to.
    """
    with TestClient(create_app(settings), raise_server_exceptions=False) as client:
        deadline = time.monotonic() + 30
        while wait_ready and client.get("/health/ready").status_code != 200:
            assert time.monotonic() < deadline, client.get("/health/ready").text
            time.sleep(0.01)
        yield client


# --- test tiers ---------------------------------------------------------------------------

#: What starts a real process, in a test or in a fixture it uses (calls, not mentions).
_PROCESS_CALLS = re.compile(r"\bstart_server\(|\bsubprocess\.\w+\(|\bPopen\(")
#: What trains or exports a Keras model in the test process.
_TRAINING_CALLS = re.compile(
    r"\b(train_main|to_tflite|train_version|export_versions?|export_keras)\(|\.fit\("
)


def _calls(item: pytest.Item, calls: re.Pattern[str]) -> bool:
    """True when the test, a fixture it uses, or a helper of its module they call (at any
    depth) makes one of ``calls``."""
    module = getattr(item, "module", None)
    helpers = {
        name: value
        for name, value in (vars(module) if module is not None else {}).items()
        if inspect.isfunction(value) and value.__module__ == module.__name__  # type: ignore[union-attr]
    }
    pending: list[Any] = [getattr(item, "function", None)]
    info = getattr(item, "_fixtureinfo", None)
    if info is not None:
        # The one training run of the session is shared by every tier: not counted.
        fixtures = info.name2fixturedefs
        pending += [d.func for name, defs in fixtures.items() if name != "trained" for d in defs]
    seen: set[int] = set()
    while pending:
        function = pending.pop()
        if function is None or id(function) in seen:
            continue
        seen.add(id(function))
        try:
            source = inspect.getsource(function)
        except (OSError, TypeError):
            continue
        if calls.search(source):
            return True
        pending += [f for name, f in helpers.items() if re.search(rf"\b{name}\(", source)]
    return False


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    """Mark tests by what they do (themselves or through a fixture): ``process``, ``training``.

    The fast tier (``make check``) is what is left once ``process``, ``training``,
    ``containers``, ``browser`` and ``benchmark`` are deselected: in-process tests on
    the one default model that the session trains once.
    """
    for item in items:
        if _calls(item, _PROCESS_CALLS):
            item.add_marker(pytest.mark.process)
        if _calls(item, _TRAINING_CALLS):
            item.add_marker(pytest.mark.training)
