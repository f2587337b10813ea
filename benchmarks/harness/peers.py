"""Peer servers (``--peers``): MLServer, LitServe and BentoML, each in its own virtualenv.

Each peer serves the same ``model.keras`` traced in a ``tf.function``, written the
way its documentation shows (``benchmarks/peers/``). The virtual environments are
cached under ``benchmarks/.peers/<name>/`` and reused while their requirements are
unchanged. A peer that cannot be installed is reported as not available.
"""

from __future__ import annotations

import json
import platform
import socket
import subprocess
import sys
from pathlib import Path

from harness.plan import CONNECTIONS, ONE_ROW, ROOT, Bodies, Load, ServerSpec

CACHE = ROOT / "benchmarks" / ".peers"
CODE = ROOT / "benchmarks" / "peers"
TENSORFLOW = "tensorflow-cpu~=2.21" if platform.machine() == "x86_64" else "tensorflow~=2.21"
REQUIREMENTS = {
    # MLServer 1.7's inference workers call asyncio.get_event_loop(), which uvloop 0.22+ refuses.
    "mlserver": ["mlserver", "uvloop<0.22", TENSORFLOW, "keras~=3.15"],
    "litserve": ["litserve", TENSORFLOW, "keras~=3.15"],
    "bentoml": ["bentoml", TENSORFLOW, "keras~=3.15"],
}
DISPLAY = {"mlserver": "MLServer", "litserve": "LitServe", "bentoml": "BentoML"}
INSTALL_TIMEOUT_S = 1800


class PeerUnavailable(Exception):
    """The peer's environment could not be built."""


def free_port() -> int:
    """A TCP port on 127.0.0.1 nobody listens on right now."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


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


def peer_specs(version_dir: Path, bodies: Bodies, workdir: Path) -> list[ServerSpec]:
    """One spec per peer; peers that cannot be installed come back marked unavailable."""
    specs = []
    for name in REQUIREMENTS:
        try:
            venv = ensure_venv(name)
        except PeerUnavailable as exc:
            specs.append(ServerSpec(name, DISPLAY[name], "", [], [], unavailable=str(exc)))
            continue
        if name == "mlserver":
            specs.append(_mlserver(venv, version_dir, bodies, workdir))
        elif name == "litserve":
            specs.append(_litserve(venv, version_dir, bodies))
        else:
            specs.append(_bentoml(venv, version_dir, bodies, workdir))
    return specs
