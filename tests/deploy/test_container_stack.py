"""The container tier: the real images, built and run with Compose on a real Docker engine.

The module fixture does the slow part once: installs Debian's docker.io and debootstrap if
they are missing, starts a private ``dockerd`` (``tests/deploy/docker_engine.py``), makes the base
image a stand-in when the real one cannot be pulled (``tests/deploy/base_image.py``; the output
says which), builds both targets of the project's own Dockerfile with its own
docker-compose.yml, and runs ``docker compose up --wait``. The only addition to the
compose file is an override, written at run time, that publishes the api on a free
loopback port instead of 8000; each run has its own project name.

The tests then look from the outside: the engine's view of the containers and images,
HTTP to the published port on 127.0.0.1, files copied out of the volume. They run in file
order, and the last ones change the stack: a second training run, ``compose stop``,
``compose down``. Where no engine can run (not root, no apt-get, dockerd refusing to
start) the whole module skips with one line saying why.

``pytest -m containers`` runs this tier alone (``docs/containers.md`` has its timings).
"""

from __future__ import annotations

import contextlib
import json
import math
import re
import secrets
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
import pytest

from tests.conftest import ROOT, free_port, start_server
from tests.deploy.base_image import BASE_IMAGE, STAND_IN_LABEL, BaseImage, ensure_base_image
from tests.deploy.docker_engine import (
    COMPOSE_MISSING,
    Engine,
    EngineUnavailable,
    Say,
    cache_lock,
    compose_binary,
    ensure_packages,
    proxy_build_args,
    remove_leftovers,
    report,
    start_engine,
)

pytestmark = [pytest.mark.containers, pytest.mark.timeout(2400)]

COMPOSE_FILE = ROOT / "docker-compose.yml"
DOCS = ROOT / "docs" / "containers.md"
MODEL = "blobs"
UID = 10001
API_PORT = 8000
# The api image must stay lean: the stand-in measured 354 MB (docs/containers.md).
API_IMAGE_LIMIT = 450_000_000
NEW_VERSION_DEADLINE = 10.0  # the service scans the repository every 2 s
OVERRIDE = """\
# Written by tests/deploy/test_container_stack.py: the api on a free loopback port.
services:
  api:
    ports: !override
      - "127.0.0.1:{port}:{target}"
"""
TENSORFLOW_DISTRIBUTIONS = {"tensorflow", "tensorflow-cpu", "tensorflow-intel", "keras", "tf-keras"}
FIND_TENSORFLOW = (
    "import importlib.util, sys; "
    "found = [m for m in ('tensorflow', 'keras') if importlib.util.find_spec(m)]; "
    "print(found); sys.exit(1 if found else 0)"
)
# A grid over the four blobs and around them: in- and out-of-distribution rows.
GRID = [[float(x), float(y)] for x in range(-10, 41, 5) for y in range(-10, 31, 5)]


# ------------------------------------------------------------------------ output


def _sayer(config: pytest.Config) -> Say:
    """Print a line in pytest's output even while output is captured."""
    reporter = config.pluginmanager.getplugin("terminalreporter")
    capture = config.pluginmanager.getplugin("capturemanager")

    def say(line: str) -> None:
        if reporter is None:
            return
        context = capture.global_and_fixture_disabled() if capture else contextlib.nullcontext()
        with context:
            reporter.write_line(f"[containers] {line}")

    return say


@contextlib.contextmanager
def _timed(timings: dict[str, float], phase: str) -> Iterator[None]:
    start = time.monotonic()
    try:
        yield
    finally:
        timings[phase] = time.monotonic() - start


def _timing_line(timings: dict[str, float]) -> str:
    return ", ".join(f"{phase} {seconds:.0f} s" for phase, seconds in timings.items())


# ------------------------------------------------------------------------- stack


@dataclass
class Stack:
    """The running compose project, and how to reach it."""

    engine: Engine
    project: str
    override: Path
    port: int
    base: BaseImage
    say: Say
    models: Path = field(default=Path())  # the volume's content right after ``up``
    timings: dict[str, float] = field(default_factory=dict)

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def compose(self, *args: str, timeout: float = 600) -> subprocess.CompletedProcess[str]:
        """``docker compose -p PROJECT -f docker-compose.yml -f OVERRIDE ARGS``."""
        files = ["-f", str(COMPOSE_FILE), "-f", str(self.override)]
        return self.engine.docker(
            "compose", "-p", self.project, *files, *args, timeout=timeout, cwd=ROOT
        )

    def container(self, service: str) -> dict[str, Any]:
        """``docker inspect`` of the service's (single) container."""
        return self.engine.inspect(f"{self.project}-{service}-1")[0]

    def image(self, service: str) -> str:
        """The image compose built for the service."""
        return f"{self.project}-{service}"

    def client(self) -> httpx.Client:
        """HTTP to the published port, never through a proxy."""
        return httpx.Client(base_url=self.url, timeout=30, trust_env=False)


@pytest.fixture(scope="module")
def stack(request: pytest.FixtureRequest) -> Iterator[Stack]:
    """Both images built and the compose stack up and healthy, on a private engine.

    Module scope, not session: the engine, its lock and the containers are released as
    soon as this module is done, instead of idling through the rest of the suite.
    """
    say = _sayer(request.config)
    compose = compose_binary()
    if compose is None:
        pytest.fail(COMPOSE_MISSING)
    if sys.platform != "linux":
        pytest.skip(f"container tier: needs Linux to run a Docker engine, not {sys.platform}")
    timings: dict[str, float] = {}
    started = time.monotonic()
    try:
        with _timed(timings, "install"):
            ensure_packages(say)
    except EngineUnavailable as exc:
        pytest.skip(f"container tier: {exc}")
    with (
        cache_lock(say) as cache,
        tempfile.TemporaryDirectory(prefix="sms-", dir="/tmp", ignore_cleanup_errors=True) as tmp,
    ):
        scratch = Path(tmp)
        try:
            with _timed(timings, "engine start"):
                engine = start_engine(scratch, cache / "engine", compose)
        except EngineUnavailable as exc:
            pytest.skip(f"container tier: {exc}")
        stack: Stack | None = None
        try:
            say(f"dockerd pid {engine.pid}, data root {cache / 'engine'}, scratch {scratch}")
            remove_leftovers(engine, say)
            with _timed(timings, "base image"):
                base = ensure_base_image(engine, cache, say)
            say(base.how)
            port = free_port()
            override = scratch / "published-port.yml"
            override.write_text(OVERRIDE.format(port=port, target=API_PORT))
            stack = Stack(engine, f"sms-test-{secrets.token_hex(4)}", override, port, base, say)
            with _timed(timings, "build"):
                built = stack.compose("build", *proxy_build_args(), timeout=3600)
            (scratch / "build.log").write_text(built.stdout + built.stderr)
            assert built.returncode == 0, report(built)
            with _timed(timings, "up --wait"):
                up = stack.compose("up", "--detach", "--wait", "--wait-timeout", "300")
            assert up.returncode == 0, f"{report(up)}\n{stack.compose('logs').stdout[-6000:]}"
            stack.models = scratch / "copied"
            stack.models.mkdir()
            copied = stack.compose("cp", "api:/app/models", str(stack.models))
            assert copied.returncode == 0, report(copied)
            stack.models = stack.models / "models"
            timings["setup total"] = time.monotonic() - started
            stack.timings = timings
            say(f"project {stack.project}, api on {stack.url}; {_timing_line(timings)}")
            yield stack
        finally:
            closing: dict[str, float] = {}
            try:
                with _timed(closing, "down"):
                    if stack is not None:
                        stack.compose("down", "--volumes", "--rmi", "local", "--remove-orphans")
                # The cache keeps the base image and the build cache, not without bound.
                engine.docker("builder", "prune", "--force", "--keep-storage", "5GB", timeout=300)
                engine.docker("image", "prune", "--force", timeout=300)
            finally:
                with _timed(closing, "engine stop"):
                    status = engine.stop()
                closing["tier total"] = time.monotonic() - started
                say(f"dockerd pid {engine.pid}: SIGTERM, exit {status}; {_timing_line(closing)}")
            assert status == 0, f"dockerd exited with {status}:\n{engine.log_tail()}"


@pytest.fixture
def http(stack: Stack) -> Iterator[httpx.Client]:
    with stack.client() as client:
        yield client


# ------------------------------------------------------------------ what was built


def test_base_image_is_the_real_one_or_a_declared_stand_in(stack: Stack) -> None:
    base = stack.engine.inspect(BASE_IMAGE, kind="image")[0]
    labels = base["Config"].get("Labels") or {}
    assert stack.base.stand_in == (STAND_IN_LABEL in labels), labels
    layers = base["RootFS"]["Layers"]
    for service in ("api", "train"):
        built = stack.engine.inspect(stack.image(service), kind="image")[0]["RootFS"]["Layers"]
        assert built[: len(layers)] == layers, f"{service} is not built on {BASE_IMAGE}"


def test_api_image_has_no_tensorflow(stack: Stack) -> None:
    def python(image: str, code: str) -> subprocess.CompletedProcess[str]:
        return stack.engine.docker("run", "--rm", "--network", "none", image, "python", "-c", code)

    api, train = stack.image("api"), stack.image("train")
    probe = python(api, FIND_TENSORFLOW)
    assert probe.returncode == 0, (
        f"TensorFlow or Keras importable in the api image\n{report(probe)}"
    )
    # The probe can fail: the train image has both.
    assert python(train, FIND_TENSORFLOW).returncode == 1

    listing = stack.engine.docker(
        "run", "--rm", "--network", "none", api, "python", "-m", "pip", "list", "--format", "json"
    )
    assert listing.returncode == 0, report(listing)
    installed = {entry["name"].lower() for entry in json.loads(listing.stdout)}
    assert not installed & TENSORFLOW_DISTRIBUTIONS, sorted(installed & TENSORFLOW_DISTRIBUTIONS)
    assert {"softmax-serving", "ai-edge-litert", "numpy"} <= installed, sorted(installed)

    # model_training comes with the package (one wheel): acceptable only while it is tiny.
    size_code = (
        "import importlib.util, pathlib; "
        "root = pathlib.Path(importlib.util.find_spec('model_training').origin).parent; "
        "print(sum(p.stat().st_size for p in root.rglob('*') if p.is_file()))"
    )
    sized = python(api, size_code)
    assert sized.returncode == 0, report(sized)
    assert int(sized.stdout) < 1_000_000, (
        f"model_training is {int(sized.stdout)} bytes in the api image"
    )


def test_image_sizes(stack: Stack) -> None:
    sizes = {
        service: int(stack.engine.inspect(stack.image(service), kind="image")[0]["Size"])
        for service in ("api", "train")
    }
    base = int(stack.engine.inspect(BASE_IMAGE, kind="image")[0]["Size"])
    kind = "stand-in" if stack.base.stand_in else "real"
    stack.say(
        f"image sizes: api {sizes['api'] / 1e6:.0f} MB, train {sizes['train'] / 1e6:.0f} MB, "
        f"on the {kind} base image of {base / 1e6:.0f} MB"
    )
    assert sizes["api"] < API_IMAGE_LIMIT, f"the api image is {sizes['api'] / 1e6:.0f} MB"
    assert sizes["api"] < sizes["train"] / 3, sizes


# ------------------------------------------------------------------ what runs


def test_train_exited_0_and_wrote_a_version(stack: Stack) -> None:
    state = stack.container("train")["State"]
    assert (state["Status"], state["ExitCode"]) == ("exited", 0), state
    logs = stack.compose("logs", "--no-log-prefix", "train").stdout
    assert f"wrote {MODEL} version 1" in logs, logs[-3000:]
    version = stack.models / MODEL / "1"
    assert {"model.keras", "model.tflite", "metadata.json"} <= {p.name for p in version.iterdir()}
    metadata = json.loads((version / "metadata.json").read_text())
    assert (metadata["name"], str(metadata["version"])) == (MODEL, "1")
    # Written by the image's user (docker cp copies out as root, so ask inside).
    owner = stack.compose("exec", "api", "stat", "-c", "%u:%g", f"/app/models/{MODEL}/1")
    assert owner.stdout.strip() == f"{UID}:{UID}", report(owner)


def test_api_is_healthy_by_its_own_healthcheck(stack: Stack) -> None:
    container = stack.container("api")
    health = container["State"]["Health"]
    assert health["Status"] == "healthy", health
    assert health["Log"], health
    assert health["Log"][-1]["ExitCode"] == 0, health["Log"]
    image = stack.engine.inspect(stack.image("api"), kind="image")[0]
    # compose restates the image's HEALTHCHECK; both probe /health/ready the same way.
    assert container["Config"]["Healthcheck"]["Test"] == image["Config"]["Healthcheck"]["Test"]
    assert container["State"]["Status"] == "running"


def test_api_is_published_on_loopback_only(stack: Stack, http: httpx.Client) -> None:
    bindings = stack.container("api")["NetworkSettings"]["Ports"][f"{API_PORT}/tcp"]
    assert bindings == [{"HostIp": "127.0.0.1", "HostPort": str(stack.port)}], bindings
    assert http.get("/health/ready").json() == {"status": "ready"}


def test_api_runs_as_uid_10001_on_read_only_root(stack: Stack) -> None:
    name = f"{stack.project}-api-1"
    container = stack.container("api")
    assert container["Config"]["User"] == f"{UID}:{UID}"
    assert container["HostConfig"]["ReadonlyRootfs"] is True
    # Every process in the container (docker-init and the service), as the host sees them.
    top = stack.engine.docker("top", name, "-eo", "pid,uid,gid,args")
    assert top.returncode == 0, report(top)
    rows = [line.split(None, 3) for line in top.stdout.splitlines()[1:] if line.strip()]
    assert len(rows) >= 2, top.stdout
    assert {(row[1], row[2]) for row in rows} == {(str(UID), str(UID))}, top.stdout

    mounts = {mount["Destination"]: mount for mount in container["Mounts"]}
    models = mounts["/app/models"]
    assert (models["Type"], models["RW"]) == ("volume", False), models
    assert models["Name"] == f"{stack.project}_models", models
    # And from the inside: only /tmp (a tmpfs) can be written.
    code = (
        "import os\n"
        "for path in ('/app/probe', '/app/models/probe', '/etc/probe', '/tmp/probe'):\n"
        "    try:\n"
        "        open(path, 'w').close(); os.remove(path); print(path, 'written')\n"
        "    except OSError as exc:\n"
        "        print(path, exc.strerror)\n"
    )
    probe = stack.engine.docker("exec", name, "python", "-c", code)
    assert probe.returncode == 0, report(probe)
    assert probe.stdout.splitlines() == [
        "/app/probe Read-only file system",
        "/app/models/probe Read-only file system",
        "/etc/probe Read-only file system",
        "/tmp/probe written",
    ]


def _predictions(client: httpx.Client, body: dict[str, Any]) -> dict[str, Any]:
    response = client.post("/predict", json=body)
    assert response.status_code == 200, response.text
    answer: dict[str, Any] = response.json()
    return answer


def test_predict_through_published_port_matches_local_model(
    stack: Stack, http: httpx.Client, tmp_path: Path
) -> None:
    """The container answers as this checkout's service does on the version copied out of it."""
    workdir = tmp_path / "work"
    workdir.mkdir()
    (workdir / "models").symlink_to(stack.models)
    local = start_server(workdir, tmp_path / "local.log")
    try:
        with httpx.Client(base_url=local.url, timeout=30, trust_env=False) as outside:
            for calibrated in (True, False):
                body = {"instances": GRID, "calibrated": calibrated}
                inside, expected = _predictions(http, body), _predictions(outside, body)
                assert (inside["model"], inside["version"]) == (MODEL, "1")
                assert (expected["model"], expected["version"]) == (MODEL, "1")
                assert len(inside["predictions"]) == len(GRID)
                worst = 0.0
                for got, want in zip(inside["predictions"], expected["predictions"], strict=True):
                    assert (got["argmax"], got["label"]) == (want["argmax"], want["label"])
                    pairs = zip(got["probabilities"], want["probabilities"], strict=True)
                    worst = max(worst, *(abs(a - b) for a, b in pairs))
                assert worst <= 1e-6, f"calibrated={calibrated}: differs by {worst:.3g}"
                identical = inside["predictions"] == expected["predictions"]
                stack.say(
                    f"/predict calibrated={calibrated}, {len(GRID)} rows: container vs local "
                    + ("bit-identical" if identical else f"max difference {worst:.3g}")
                )
    finally:
        assert local.stop() == 0, local.output()


# ---------------------------------------------------------------- the docs' examples


@dataclass(frozen=True)
class Example:
    """A ``curl`` call shown in the docs and the JSON answer printed under it."""

    method: str
    path: str
    body: Any
    answer: Any


def docs_examples(text: str) -> list[Example]:
    """Every ``$ curl`` in the console blocks of the docs, with the answer that follows it."""
    examples: list[Example] = []
    for block in re.findall(r"```console\n(.*?)```", text, flags=re.DOTALL):
        for chunk in re.split(r"^\$ ", block, flags=re.MULTILINE)[1:]:
            lines = chunk.splitlines()
            command = []
            while lines:
                line = lines.pop(0)
                command.append(line.rstrip("\\").strip())
                if not line.rstrip().endswith("\\"):
                    break
            joined = " ".join(command).split("#", 1)[0]
            if not joined.startswith("curl "):
                continue
            url = re.search(r"(?:127\.0\.0\.1|localhost):\d+(/\S*)", joined)
            assert url, f"no local URL in {joined!r}"
            data = re.search(r"-d '([^']*)'", joined)
            body = json.loads(data.group(1)) if data else None
            examples.append(
                Example("POST" if data else "GET", url.group(1), body, json.loads("\n".join(lines)))
            )
    return examples


def _close(doc: Any, got: Any, where: str = "") -> None:
    """Equal structure and values; floats to 1e-4 relative (training may differ across CPUs)."""
    if isinstance(doc, float) or isinstance(got, float):
        assert isinstance(got, int | float), f"{where}: {got!r}"
        assert not isinstance(got, bool), f"{where}: {got!r}"
        assert math.isclose(doc, got, rel_tol=1e-4, abs_tol=1e-9), f"{where}: {doc!r} vs {got!r}"
    elif isinstance(doc, dict):
        assert isinstance(got, dict), f"{where}: {doc} vs {got}"
        assert set(doc) == set(got), f"{where}: {doc} vs {got}"
        for key in doc:
            _close(doc[key], got[key], f"{where}.{key}")
    elif isinstance(doc, list):
        assert isinstance(got, list), f"{where}: {doc} vs {got}"
        assert len(doc) == len(got), f"{where}: {doc} vs {got}"
        for index, (a, b) in enumerate(zip(doc, got, strict=True)):
            _close(a, b, f"{where}[{index}]")
    else:
        assert doc == got, f"{where}: {doc!r} vs {got!r}"


def test_docs_examples_are_what_the_container_answers(stack: Stack, http: httpx.Client) -> None:
    examples = docs_examples(DOCS.read_text(encoding="utf-8"))
    assert {example.path for example in examples} >= {"/health/ready", "/predict", "/softmax"}
    for example in examples:
        response = http.request(example.method, example.path, json=example.body)
        assert response.status_code == 200, response.text
        _close(example.answer, response.json(), f"{example.method} {example.path}")


# ------------------------------------------------------------ what changes the stack


def test_second_training_run_is_served_without_an_api_restart(
    stack: Stack, http: httpx.Client
) -> None:
    before = stack.container("api")
    trained = stack.compose(
        "run", "--rm", "train", "python", "-m", "model_training", "--seed", "7", "--quiet"
    )
    assert trained.returncode == 0, report(trained)
    assert f"wrote {MODEL} version 2" in trained.stdout, report(trained)
    returned = time.monotonic()
    version = None
    while time.monotonic() - returned < NEW_VERSION_DEADLINE:
        version = _predictions(http, {"instances": GRID[:1]})["version"]
        if version == "2":
            break
        time.sleep(0.1)
    waited = time.monotonic() - returned
    assert version == "2", f"still serving version {version} {waited:.1f} s after training"
    stack.say(f"version 2 served {waited:.1f} s after the training run returned, no restart")
    after = stack.container("api")
    assert after["Id"] == before["Id"]
    assert after["State"]["StartedAt"] == before["State"]["StartedAt"]
    assert after["RestartCount"] == 0
    assert after["State"]["Health"]["Status"] == "healthy"


def _seconds(duration: str) -> float:
    """A compose duration such as ``20s`` or ``1m30s``."""
    units = {"h": 3600.0, "m": 60.0, "s": 1.0, "ms": 0.001}
    parts = re.findall(r"(\d+(?:\.\d+)?)(ms|h|m|s)", duration)
    assert parts, duration
    return sum(float(number) * units[unit] for number, unit in parts)


def test_compose_stop_ends_the_api_with_exit_0_within_the_grace_period(stack: Stack) -> None:
    config = json.loads(stack.compose("config", "--format", "json").stdout)
    grace = _seconds(config["services"]["api"]["stop_grace_period"])
    start = time.monotonic()
    stopped = stack.compose("stop", timeout=120)
    took = time.monotonic() - start
    assert stopped.returncode == 0, report(stopped)
    state = stack.container("api")["State"]
    assert (state["Status"], state["ExitCode"], state["OOMKilled"]) == ("exited", 0, False), state
    assert took < grace, f"compose stop took {took:.1f} s, the grace period is {grace:.0f} s"
    stack.say(f"compose stop: api exit 0 after {took:.1f} s (grace period {grace:.0f} s)")
    logs = stack.compose("logs", "--no-log-prefix", "api").stdout
    assert "Application shutdown complete" in logs, logs[-3000:]


def test_compose_down_leaves_nothing_behind(stack: Stack) -> None:
    down = stack.compose("down", "--volumes", "--rmi", "local", "--remove-orphans")
    assert down.returncode == 0, report(down)
    label = f"label=com.docker.compose.project={stack.project}"
    references = [f"reference={stack.image(service)}" for service in ("api", "train")]
    for argv in (
        ["container", "ls", "--all", "--filter", label],
        ["volume", "ls", "--filter", label],
        ["network", "ls", "--filter", label],
        ["image", "ls", "--filter", references[0]],
        ["image", "ls", "--filter", references[1]],
    ):
        listing = stack.engine.docker(*argv, "--quiet")
        assert listing.returncode == 0, report(listing)
        assert listing.stdout.split() == [], f"left behind ({' '.join(argv)}): {listing.stdout}"
