"""Peer servers (``--peers``): MLServer, LitServe and BentoML, each in its own virtualenv.

Each peer serves the same ``model.keras`` traced in a ``tf.function``, written the
way its documentation shows (``benchmarks/peers/``). For the image workload each
takes the same JPEG as base64 in JSON (the form its own API takes), decodes it with
Pillow, and batches concurrent requests its own way (``IMAGE_BATCH``). The virtual environments are
cached under ``benchmarks/.peers/<name>/`` and reused while their requirements are
unchanged. A peer that cannot be installed is reported as not available.
"""

from __future__ import annotations

import json
import platform
import subprocess
import sys
from pathlib import Path

from harness.image_plan import B64, ImageBodies
from harness.plan import CONNECTIONS, ONE_ROW, ROOT, Bodies, Load, ServerSpec
from harness.processes import free_port

CACHE = ROOT / "benchmarks" / ".peers"
CODE = ROOT / "benchmarks" / "peers"
TENSORFLOW = "tensorflow-cpu~=2.21" if platform.machine() == "x86_64" else "tensorflow~=2.21"
REQUIREMENTS = {
    # MLServer 1.7's inference workers call asyncio.get_event_loop(), which uvloop 0.22+ refuses.
    "mlserver": ["mlserver", "uvloop<0.22", TENSORFLOW, "keras~=3.15", "pillow"],
    "litserve": ["litserve", TENSORFLOW, "keras~=3.15", "pillow"],
    "bentoml": ["bentoml", TENSORFLOW, "keras~=3.15", "pillow"],
}
DISPLAY = {"mlserver": "MLServer", "litserve": "LitServe", "bentoml": "BentoML"}
INSTALL_TIMEOUT_S = 1800
#: Adaptive batching for the image peers, as the service's defaults: up to 64 requests,
#: waiting at most 2 ms for a batch to fill.
IMAGE_BATCH = {"max_batch_size": 64, "max_wait_s": 0.002}


class PeerUnavailable(Exception):
    """The peer's environment could not be built."""


def ensure_venv(name: str) -> Path:
    """The peer's virtualenv (built, or reused when its requirements match); its directory."""
    venv = CACHE / name
    marker = venv / ".installed"
    wanted = "\n".join(REQUIREMENTS[name])
    if marker.is_file() and marker.read_text() == wanted and (venv / "bin" / "python").exists():
        return venv
    venv.mkdir(parents=True, exist_ok=True)
    log = venv.parent / f"{name}-install.log"
    print(f"benchmark: installing peer {name} into {venv} (once; log: {log})", file=sys.stderr)
    steps = [
        [sys.executable, "-m", "venv", "--clear", str(venv)],
        [str(venv / "bin" / "python"), "-m", "pip", "install", "--quiet", "--upgrade", "pip"],
        [str(venv / "bin" / "python"), "-m", "pip", "install", "--quiet", *REQUIREMENTS[name]],
    ]
    with log.open("w") as sink:
        for step in steps:
            try:
                result = subprocess.run(
                    step, stdout=sink, stderr=subprocess.STDOUT, timeout=INSTALL_TIMEOUT_S
                )
            except (OSError, subprocess.TimeoutExpired) as exc:
                raise PeerUnavailable(f"{' '.join(step[-3:])} failed: {exc}") from exc
            if result.returncode != 0:
                raise PeerUnavailable(f"pip install failed (see {log})")
    marker.write_text(wanted)
    return venv


def _mlserver(venv: Path, version_dir: Path, bodies: Bodies, workdir: Path) -> ServerSpec:
    models = workdir / "mlserver-models" / "blobs"
    models.mkdir(parents=True, exist_ok=True)
    settings = {
        "name": "blobs",
        "implementation": "mlserver_runtime.KerasTFFunction",
        "parameters": {"uri": str(version_dir / "model.keras")},
    }
    (models / "model-settings.json").write_text(json.dumps(settings))
    env = {
        "MLSERVER_HOST": "127.0.0.1",
        "MLSERVER_HTTP_PORT": "{port}",
        "MLSERVER_GRPC_PORT": str(free_port()),
        "MLSERVER_METRICS_PORT": str(free_port()),
    }
    return ServerSpec(
        "mlserver",
        "MLServer",
        "custom MLModel runtime, tf.function, V2 protocol, defaults",
        [str(venv / "bin" / "mlserver"), "start", str(models.parent)],
        [Load(ONE_ROW, "/v2/models/blobs/infer", bodies.one_row_v2, CONNECTIONS)],
        ready_path="/v2/models/blobs/ready",
        env=env,
        pythonpath=CODE,
        ready_timeout_s=180,
    )


def _litserve(venv: Path, version_dir: Path, bodies: Bodies) -> ServerSpec:
    return ServerSpec(
        "litserve",
        "LitServe",
        "LitAPI, tf.function, 1 worker, defaults",
        [
            str(venv / "bin" / "python"),
            str(CODE / "litserve_server.py"),
            "--port",
            "{port}",
            str(version_dir),
        ],
        [Load(ONE_ROW, "/predict", bodies.one_row, CONNECTIONS)],
        ready_path="/health",
        pythonpath=CODE,
        ready_timeout_s=180,
    )


def _bentoml(venv: Path, version_dir: Path, bodies: Bodies, workdir: Path) -> ServerSpec:
    env = {
        "BENCH_VERSION_DIR": str(version_dir),
        "BENTOML_HOME": str(workdir / "bentoml-home"),
        "BENTOML_DO_NOT_TRACK": "true",
    }
    return ServerSpec(
        "bentoml",
        "BentoML",
        "@bentoml.service, tf.function, 1 worker",
        [
            str(venv / "bin" / "bentoml"),
            "serve",
            "bentoml_service:Blobs",
            "--host",
            "127.0.0.1",
            "--port",
            "{port}",
        ],
        [Load(ONE_ROW, "/predict", bodies.one_row, CONNECTIONS)],
        ready_path="/readyz",
        env=env,
        pythonpath=CODE,
        ready_timeout_s=180,
        cwd=CODE,
    )


def _mlserver_image(
    venv: Path, version_dir: Path, bodies: ImageBodies, workdir: Path
) -> ServerSpec:
    name = version_dir.parent.name
    models = workdir / "mlserver-image-models" / name
    models.mkdir(parents=True, exist_ok=True)
    settings = {
        "name": name,
        "implementation": "mlserver_runtime.KerasImageTFFunction",
        "parameters": {"uri": str(version_dir)},
        "max_batch_size": IMAGE_BATCH["max_batch_size"],
        "max_batch_time": IMAGE_BATCH["max_wait_s"],
    }
    (models / "model-settings.json").write_text(json.dumps(settings))
    env = {
        "MLSERVER_HOST": "127.0.0.1",
        "MLSERVER_HTTP_PORT": "{port}",
        "MLSERVER_GRPC_PORT": str(free_port()),
        "MLSERVER_METRICS_PORT": str(free_port()),
    }
    return ServerSpec(
        "mlserver",
        "MLServer",
        "custom MLModel, tf.function, V2 BYTES base64, adaptive batching (64, 2 ms)",
        [str(venv / "bin" / "mlserver"), "start", str(models.parent)],
        [Load(B64, f"/v2/models/{name}/infer", bodies.v2_json_b64, CONNECTIONS)],
        ready_path=f"/v2/models/{name}/ready",
        env=env,
        pythonpath=CODE,
        ready_timeout_s=180,
    )


def _litserve_image(venv: Path, version_dir: Path, bodies: ImageBodies) -> ServerSpec:
    return ServerSpec(
        "litserve",
        "LitServe",
        "LitAPI, tf.function, 1 worker, max_batch_size 64, batch_timeout 2 ms",
        [
            str(venv / "bin" / "python"),
            str(CODE / "litserve_image.py"),
            "--port",
            "{port}",
            "--max-batch-size",
            str(IMAGE_BATCH["max_batch_size"]),
            "--batch-timeout",
            str(IMAGE_BATCH["max_wait_s"]),
            str(version_dir),
        ],
        [Load(B64, "/predict", bodies.b64, CONNECTIONS)],
        ready_path="/health",
        pythonpath=CODE,
        ready_timeout_s=180,
    )


def _bentoml_image(venv: Path, version_dir: Path, bodies: ImageBodies, workdir: Path) -> ServerSpec:
    env = {
        "BENCH_VERSION_DIR": str(version_dir),
        "BENCH_MAX_BATCH_SIZE": str(IMAGE_BATCH["max_batch_size"]),
        "BENTOML_HOME": str(workdir / "bentoml-home"),
        "BENTOML_DO_NOT_TRACK": "true",
    }
    return ServerSpec(
        "bentoml",
        "BentoML",
        "@bentoml.service, tf.function, 1 worker, batchable API (max 64)",
        [
            str(venv / "bin" / "bentoml"),
            "serve",
            "bentoml_image:Images",
            "--host",
            "127.0.0.1",
            "--port",
            "{port}",
        ],
        [Load(B64, "/predict", bodies.b64, CONNECTIONS)],
        ready_path="/readyz",
        env=env,
        pythonpath=CODE,
        ready_timeout_s=180,
        cwd=CODE,
    )


def _venvs() -> dict[str, Path | str]:
    """Each peer's virtualenv, or why it cannot be had."""
    found: dict[str, Path | str] = {}
    for name in REQUIREMENTS:
        try:
            found[name] = ensure_venv(name)
        except PeerUnavailable as exc:
            found[name] = str(exc)
    return found


def peer_specs(version_dir: Path, bodies: Bodies, workdir: Path) -> list[ServerSpec]:
    """One spec per peer; peers that cannot be installed come back marked unavailable."""
    specs = []
    for name, venv in _venvs().items():
        if isinstance(venv, str):
            specs.append(ServerSpec(name, DISPLAY[name], "", [], [], unavailable=venv))
        elif name == "mlserver":
            specs.append(_mlserver(venv, version_dir, bodies, workdir))
        elif name == "litserve":
            specs.append(_litserve(venv, version_dir, bodies))
        else:
            specs.append(_bentoml(venv, version_dir, bodies, workdir))
    return specs


def image_peer_specs(version_dir: Path, bodies: ImageBodies, workdir: Path) -> list[ServerSpec]:
    """The image workload's peers: the same JPEG, each with its own batching on."""
    specs = []
    for name, venv in _venvs().items():
        if isinstance(venv, str):
            specs.append(ServerSpec(name, DISPLAY[name], "", [], [], unavailable=venv))
        elif name == "mlserver":
            specs.append(_mlserver_image(venv, version_dir, bodies, workdir))
        elif name == "litserve":
            specs.append(_litserve_image(venv, version_dir, bodies))
        else:
            specs.append(_bentoml_image(venv, version_dir, bodies, workdir))
    return specs
