"""Shared steps of the tests that export users' models and ask the running service."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import httpx
import keras

from model_training.cli import main as train_main


def export_keras(model: keras.Model, workdir: Path, name: str, *extra: str) -> None:
    """Save ``model`` in ``workdir`` and export it as ``name`` into ``workdir/models`` with
    the real command."""
    model.save(workdir / f"{name}.keras")
    argv = ["export", str(workdir / f"{name}.keras"), "--name", name, *extra]
    assert train_main([*argv, "--model-repository", str(workdir / "models")]) == 0


def native_and_v1(client: httpx.Client, path: str, instances: list[Any]) -> dict[str, Any]:
    """The probabilities the native API and TF Serving's ``instances`` answer for
    ``instances`` of model ``path`` (``name`` or ``name/versions/N``), by protocol."""
    native = client.post(f"/models/{path}/predict", json={"instances": instances})
    assert native.status_code == 200, native.text
    v1 = client.post(f"/v1/models/{path}:predict", json={"instances": instances})
    assert v1.status_code == 200, v1.text
    return {
        "native": [p["probabilities"] for p in native.json()["predictions"]],
        "v1 instances": v1.json()["predictions"],
    }
