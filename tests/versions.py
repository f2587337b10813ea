"""Put model versions into a repository the way the trainer does, whole or deliberately broken.

A version is copied into a hidden temporary sibling, changed there, and renamed into
place, so a polling server never sees half of it. The breakages are the ones a
server must refuse while the previous version keeps serving.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import uuid
from collections.abc import Callable
from pathlib import Path
from typing import Any

#: Changes a copied version in place: its directory and its (to be written) metadata.
Change = Callable[[Path, dict[str, Any]], None]


def install_version(
    source: Path, repository: Path, name: str, version: int, change: Change | None = None
) -> Path:
    """Copy the version at ``source`` to ``repository/name/version`` atomically."""
    model_dir = repository / name
    model_dir.mkdir(parents=True, exist_ok=True)
    tmp = model_dir / f".tmp-test-{uuid.uuid4().hex}"
    shutil.copytree(source, tmp)
    metadata = json.loads((tmp / "metadata.json").read_text())
    metadata.update(name=name, version=version)
    if change is not None:
        change(tmp, metadata)
    (tmp / "metadata.json").write_text(json.dumps(metadata))
    target = model_dir / str(version)
    os.rename(tmp, target)
    return target


def _rehash(directory: Path, metadata: dict[str, Any], filename: str) -> None:
    data = (directory / filename).read_bytes()
    metadata["files"][filename] = {"sha256": hashlib.sha256(data).hexdigest(), "bytes": len(data)}


def bad_hash(directory: Path, metadata: dict[str, Any]) -> None:
    """model.tflite no longer matches the sha256 in the metadata."""
    with (directory / "model.tflite").open("ab") as handle:
        handle.write(b"\0")


def truncated(directory: Path, metadata: dict[str, Any]) -> None:
    """model.tflite cut in half, with a matching hash: only the runtime can tell."""
    path = directory / "model.tflite"
    path.write_bytes(path.read_bytes()[: path.stat().st_size // 2])
    _rehash(directory, metadata, "model.tflite")


def wrong_metadata(directory: Path, metadata: dict[str, Any]) -> None:
    """Five class names for a four-class network."""
    metadata["class_names"] = ["0", "1", "2", "3", "4"]


def lambda_layer(directory: Path, metadata: dict[str, Any]) -> None:
    """Only a model.keras, with a Lambda layer: Keras refuses it under safe_mode=True."""
    import keras

    inputs = keras.Input(shape=(2,))
    hidden = keras.layers.Dense(4)(inputs)
    scaled = keras.layers.Lambda(lambda t: t * 2.0)(hidden)
    model = keras.Model(inputs, keras.layers.Softmax()(scaled))
    (directory / "model.tflite").unlink()
    (directory / "model.keras").unlink()
    model.save(directory / "model.keras")
    metadata["files"] = {}
    _rehash(directory, metadata, "model.keras")


BREAKAGES: dict[str, tuple[Change, str]] = {
    "bad hash": (bad_hash, "model.tflite sha256 mismatch"),
    "truncated file": (truncated, "model.tflite is not a valid LiteRT model"),
    "wrong metadata": (wrong_metadata, "to (batch, 5)"),
    "Lambda layer under safe_mode": (lambda_layer, "safe_mode"),
}


def rollout_repository(
    repository: Path, versions: list[Path], rollout: dict[str, Any] | None = None
) -> Path:
    """``repository`` with ``versions`` as versions 1, 2, ... of ``blobs``, and ``rollout``
    as its ``serving.json``; returns the repository."""
    for number, source in enumerate(versions, start=1):
        install_version(source, repository, "blobs", number)
    if rollout is not None:
        (repository / "blobs" / "serving.json").write_text(json.dumps(rollout))
    return repository
