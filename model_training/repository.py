"""Write versions into a model repository: ``<repo>/<name>/<version>/`` with three files.

Each version holds ``model.keras``, ``model.tflite`` and ``metadata.json`` and, from a
training run, a ``report/`` folder (hashed under ``metadata["report"]``, not ``files``).

A version is first written into a hidden temporary sibling and then renamed into
place, so a server scanning the repository never sees half a version. The rename
fails if another trainer took the same version number first; we then take the next.
"""

from __future__ import annotations

import hashlib
import json
import os
import re
import shutil
import uuid
from collections.abc import Callable
from pathlib import Path
from typing import Any

FORMAT_VERSION = 1
MODEL_NAME = re.compile(r"[A-Za-z0-9_.-]{1,64}")
VERSION_DIR = re.compile(r"[1-9][0-9]{0,17}")
METADATA = "metadata.json"
#: The training report's folder inside a version (``model_training.report`` writes it).
REPORT_DIR = "report"


class RepositoryError(ValueError):
    """The repository or the model name cannot be used."""


def check_name(name: str) -> str:
    """Return ``name`` if it is a valid model name (and not ``.``/``..``)."""
    if not MODEL_NAME.fullmatch(name) or name in {".", ".."}:
        raise RepositoryError(
            f"expected a model name of 1-64 characters from [A-Za-z0-9_.-]. Received: {name!r}"
        )
    return name


def versions(repository: Path, name: str) -> list[int]:
    """The complete versions of ``name`` (directories with a metadata file), oldest first."""
    model_dir = repository / name
    if not model_dir.is_dir():
        return []
    found = [
        int(child.name)
        for child in model_dir.iterdir()
        if VERSION_DIR.fullmatch(child.name) and (child / METADATA).is_file()
    ]
    return sorted(found)


def _taken(model_dir: Path) -> int:
    """The highest version number in use, complete or not."""
    numbers = [int(c.name) for c in model_dir.iterdir() if VERSION_DIR.fullmatch(c.name)]
    return max(numbers, default=0)


def sha256(path: Path) -> str:
    """Hex sha256 of a file's bytes."""
    digest = hashlib.sha256()
    with path.open("rb") as handle:
        for block in iter(lambda: handle.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def _write_json(path: Path, data: dict[str, Any]) -> None:
    with path.open("w", encoding="utf-8") as handle:
        json.dump(data, handle, indent=2, sort_keys=False, allow_nan=False)
        handle.write("\n")
        handle.flush()
        os.fsync(handle.fileno())


def write_version(
    repository: Path,
    name: str,
    write_files: Callable[[Path], dict[str, Any] | None],
    metadata: dict[str, Any],
) -> tuple[int, Path]:
    """Write a new version of ``name`` atomically and return its number and directory.

    ``write_files(tmp_dir)`` writes the model files; every regular file it leaves at
    the top of ``tmp_dir`` is hashed into ``metadata["files"]`` (which the service
    verifies). It may also write into subdirectories (the training report), which
    ``metadata["files"]`` does not list, and return more metadata to merge in (such
    as those files' own hashes). ``name`` and ``version`` are filled in here.
    """
    check_name(name)
    model_dir = repository / name
    model_dir.mkdir(parents=True, exist_ok=True)
    tmp = model_dir / f".tmp-{uuid.uuid4().hex}"
    tmp.mkdir()
    try:
        extra = write_files(tmp) or {}
        files = sorted(p for p in tmp.iterdir() if p.is_file())
        hashes = file_hashes(tmp, [p.name for p in files])
        for _ in range(100):
            version = _taken(model_dir) + 1
            head = {"format_version": FORMAT_VERSION, "name": name, "version": version}
            _write_json(tmp / METADATA, {**head, **metadata, **extra, "files": hashes})
            target = model_dir / str(version)
            try:
                os.rename(tmp, target)  # atomic; fails if the target exists and is not empty
            except OSError:
                if target.exists():
                    continue  # another trainer won this number: take the next
                raise
            return version, target
        raise RepositoryError(f"could not claim a new version number in {model_dir}")
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise


def file_hashes(directory: Path, names: list[str]) -> dict[str, dict[str, Any]]:
    """``{name: {"sha256", "bytes"}}`` for the named files in ``directory``."""
    return {
        name: {"sha256": sha256(directory / name), "bytes": (directory / name).stat().st_size}
        for name in names
    }
