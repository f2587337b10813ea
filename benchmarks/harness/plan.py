"""What a run measures: the model it trains, the request bodies, and the servers to start.

Every server is a ``ServerSpec``: how to start it, where it says it is ready, and
which loads (workload x connection counts) to put on it. Ratios in the report are
taken between rows of the same workload and connection count, so a spec's ``key``
is how the report finds the baselines (``bare-asgi``, ``fastapi-floor``, ``naive``).
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import orjson

from harness.processes import ServerProcess, free_port

ROOT = Path(__file__).resolve().parents[2]
BASELINES = ROOT / "benchmarks" / "baselines"
CONNECTIONS = (1, 16, 64)
BULK_ROWS = 10_000

# Spec keys the report and the targets refer to.
BARE = "bare-asgi"
FASTAPI = "fastapi-floor"
NAIVE = "naive-predict"
TF_FUNCTION = "tf-function"
SERVICE = "service"
SERVICE_BATCHING = "service-batching"
SERVICE_BATCHING_OFF = "service-batching-off"
SERVICE_BATCHING_NOWAIT = "service-batching-nowait"
SERVICE_2W = "service-2w"
KERAS_ON = "service-keras-batching-on"
KERAS_OFF = "service-keras-batching-off"
PEERS = ("mlserver", "litserve", "bentoml")
QUICK_SKIPS = {TF_FUNCTION, SERVICE_BATCHING}
#: Servers that do not import TensorFlow are ready in about a second; give up sooner on them.
NO_TENSORFLOW_READY_TIMEOUT_S = 30.0


@dataclass(frozen=True)
class Workload:
    """A kind of request: how many rows each request carries."""

    key: str
    label: str
    rows: int


ONE_ROW = Workload("1row", "1 row", 1)
BULK = Workload("10k", f"{BULK_ROWS} rows, columnar", BULK_ROWS)


@dataclass(frozen=True)
class Load:
    """One workload on one server: the path, the body file, the connection counts."""

    workload: Workload
    path: str
    body: Path
    connections: tuple[int, ...]
    config: str | None = None  # replaces the server's config label for these rows
    headers: dict[str, str] | None = None  # default: Content-Type: application/json


@dataclass
class ServerSpec:
    """How to start one server configuration and what to measure on it."""

    key: str
    server: str
    config: str
    argv: list[str]  # "{port}" is replaced by the port
    loads: list[Load]
    ready_path: str = "/health/ready"
    env: dict[str, str] = field(default_factory=dict)  # on top of ``server_env()``
    pythonpath: Path = ROOT
    workers: int = 1
    all_cores: bool = False  # the server gets every core, the load generator is not pinned
    ready_timeout_s: float = 90.0  # TensorFlow servers; 30 s for the others
    cwd: Path = ROOT
    unavailable: str | None = None  # why it cannot run (a peer that failed to install)

    def command(self, port: int) -> list[str]:
        """The argv with the port filled in."""
        return [arg.replace("{port}", str(port)) for arg in self.argv]

    def environment(self, port: int) -> dict[str, str]:
        """``server_env()`` plus this spec's variables, with the port filled in."""
        extra = {name: value.replace("{port}", str(port)) for name, value in self.env.items()}
        return server_env(extra, self.pythonpath)

    def start(self, log: Path, cpus: frozenset[int] | None) -> ServerProcess:
        """This server on a free port, pinned to ``cpus``, once ready (raises ``ServerFailed``)."""
        port = free_port()
        return ServerProcess.start(
            self.command(port),
            port=port,
            env=self.environment(port),
            cwd=self.cwd,
            log=log,
            cpus=cpus,
            ready_path=self.ready_path,
            ready_timeout=self.ready_timeout_s,
            workers=self.workers,
        )


@dataclass(frozen=True)
class Bodies:
    """Request body files written for this run."""

    one_row: Path
    bulk: Path
    one_row_v2: Path  # the Open Inference Protocol (V2) body, for MLServer


def server_env(extra: dict[str, str] | None = None, pythonpath: Path = ROOT) -> dict[str, str]:
    """This environment without stray SERVICE_* settings, with the project importable."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("SERVICE_")}
    # No gRPC listener unless a spec's env asks for one: servers run side by side.
    env["SERVICE_GRPC_PORT"] = "0"
    env["PYTHONPATH"] = str(pythonpath)
    env["TF_CPP_MIN_LOG_LEVEL"] = "2"
    env.update(extra or {})
    return env


def run_logged(argv: list[str], log: Path, what: str, timeout: float = 900) -> None:
    """Run one step of the set-up (training, export), its output appended to ``log``;
    ``RuntimeError`` with the log's last lines when it fails."""
    with log.open("ab") as sink:
        result = subprocess.run(
            argv, cwd=ROOT, env=server_env(), stdout=sink, stderr=subprocess.STDOUT, timeout=timeout
        )
    if result.returncode != 0:
        tail = "\n".join(log.read_text(errors="replace").splitlines()[-20:])
        raise RuntimeError(f"{what} failed with status {result.returncode}:\n{tail}")


def newest_version(repository: Path, what: str) -> Path:
    """The directory of the newest version a step wrote into ``repository``."""
    versions = sorted(repository.glob("*/*/metadata.json"))
    if not versions:
        raise RuntimeError(f"{what} wrote no version into {repository}")
    return versions[-1].parent


def train(repository: Path, quick: bool, log: Path) -> Path:
    """Train the default model with the project's own CLI; the new version's directory."""
    argv = [sys.executable, "-m", "model_training", "--model-repository", str(repository)]
    argv += ["--quiet", *(["--epochs", "3"] if quick else [])]
    run_logged(argv, log, "training")
    return newest_version(repository, "training")


def keras_only_copy(version_dir: Path, repository: Path) -> Path:
    """A repository whose version has only ``model.keras`` (served through Keras)."""
    target = repository / version_dir.parent.name / version_dir.name
    shutil.copytree(version_dir, target)
    (target / "model.tflite").unlink()
    metadata = json.loads((target / "metadata.json").read_text())
    del metadata["files"]["model.tflite"]
    (target / "metadata.json").write_text(json.dumps(metadata, indent=2))
    return repository


def write_bodies(version_dir: Path, directory: Path) -> Bodies:
    """The 1-row body, the 10,000-row columnar body and MLServer's 1-row body."""
    input_dim = int(json.loads((version_dir / "metadata.json").read_text())["input_dim"])
    row = [15.0, 0.0][:input_dim] + [0.0] * max(0, input_dim - 2)
    rng = np.random.default_rng(0)
    bulk = np.round(rng.normal(15.0, 10.0, size=(BULK_ROWS, input_dim)), 4)
    bodies = Bodies(
        directory / "body-1row.json", directory / "body-10k.json", directory / "body-1row-v2.json"
    )
    bodies.one_row.write_bytes(orjson.dumps({"instances": [row]}))
    bodies.bulk.write_bytes(orjson.dumps({"instances": bulk.tolist(), "format": "columnar"}))
    v2 = {
        "inputs": [{"name": "instances", "shape": [1, input_dim], "datatype": "FP32", "data": row}]
    }
    bodies.one_row_v2.write_bytes(orjson.dumps(v2))
    return bodies


def baseline(name: str, version_dir: Path) -> list[str]:
    """The argv of ``benchmarks/baselines/<name>.py``."""
    return [sys.executable, str(BASELINES / f"{name}.py"), "--port", "{port}", str(version_dir)]


def service(repository: Path, *extra: str) -> list[str]:
    """Our service, started exactly as users start it."""
    return [
        sys.executable,
        "-m",
        "service",
        "--model-repository",
        str(repository),
        "--port",
        "{port}",
        "--log-level",
        "warning",
        *extra,
    ]


def build_plan(
    version_dir: Path, keras_repository: Path, bodies: Bodies, *, quick: bool
) -> list[ServerSpec]:
    """The baselines and our service's configurations (peers are added by ``peers.py``).

    ``quick`` drops the tf.function baseline, the LiteRT batching-on configuration and
    the naive server's 10,000-row point.
    """
    repository = version_dir.parents[1]
    one = Load(ONE_ROW, "/predict", bodies.one_row, CONNECTIONS)
    bulk = Load(BULK, "/predict", bodies.bulk, (1,))
    pipeline = Load(
        BULK,
        "/predict/pipeline",
        bodies.bulk,
        (1,),
        config="raw ASGI: orjson -> numpy -> LiteRT -> float64 softmax -> orjson",
    )
    no_tf = NO_TENSORFLOW_READY_TIMEOUT_S
    specs = [
        ServerSpec(
            BARE,
            "bare ASGI",
            "raw ASGI + orjson, fixed answer",
            baseline("bare_asgi", version_dir),
            [one, pipeline],
            ready_timeout_s=no_tf,
        ),
        ServerSpec(
            FASTAPI,
            "FastAPI floor",
            "pydantic body, fixed answer",
            baseline("fastapi_floor", version_dir),
            [one],
            ready_timeout_s=no_tf,
        ),
        ServerSpec(
            NAIVE,
            "naive model.predict",
            "FastAPI + keras load_model + model.predict",
            baseline("naive_predict", version_dir),
            [one] if quick else [one, bulk],
        ),
        ServerSpec(
            TF_FUNCTION,
            "tf.function",
            "FastAPI + Keras model in a tf.function",
            baseline("tf_function", version_dir),
            [one],
        ),
        ServerSpec(
            SERVICE,
            "service",
            "LiteRT, 1 worker, defaults (batching auto = off)",
            service(repository),
            [one, bulk],
            ready_timeout_s=no_tf,
        ),
        ServerSpec(
            SERVICE_BATCHING,
            "service",
            "LiteRT, 1 worker, SERVICE_BATCHING=on",
            service(repository),
            [one],
            env={"SERVICE_BATCHING": "on"},
            ready_timeout_s=no_tf,
        ),
        ServerSpec(
            SERVICE_2W,
            "service",
            "LiteRT, --workers 2 (both cores, load generator unpinned)",
            service(repository, "--workers", "2"),
            [one],
            workers=2,
            all_cores=True,
            ready_timeout_s=no_tf,
        ),
        ServerSpec(
            KERAS_ON,
            "service",
            "Keras runtime, 1 worker, SERVICE_BATCHING=on",
            service(keras_repository),
            [one],
            env={"SERVICE_BATCHING": "on"},
        ),
        ServerSpec(
            KERAS_OFF,
            "service",
            "Keras runtime, 1 worker, SERVICE_BATCHING=off",
            service(keras_repository),
            [one],
            env={"SERVICE_BATCHING": "off"},
        ),
    ]
    if quick:
        specs = [spec for spec in specs if spec.key not in QUICK_SKIPS]
    return specs
