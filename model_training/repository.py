"""Write versions into a model repository: ``<repo>/<name>/<version>/`` with three files.

Each version holds ``model.keras``, ``model.tflite`` and ``metadata.json`` and, from a
training run, a ``report/`` folder (hashed under ``metadata["report"]``, not ``files``).

A version is first written into a hidden temporary sibling and then renamed into
place, so a server scanning the repository never sees half a version. The rename
fails if another trainer took the same version number first; we then take the next.
"""

from __future__ import annotations

import json
import os
import shutil
import uuid
from collections.abc import Callable
from pathlib import Path
from typing import Any

from model_training.artifact import (
    FORMAT_VERSION,
    METADATA,
    REPORT_DIR,
    VERSION_DIR,
    Metadata,
    is_model_name,
    version_numbers,
)
from model_training.artifact import file_hashes as _file_hashes

__all__ = [
    "REPORT_DIR",
    "RepositoryError",
    "check_name",
    "file_hashes",
    "versions",
    "write_version",
]


class RepositoryError(ValueError):
    """The repository or the model name cannot be used."""


def check_name(name: str) -> str:
    """Return ``name`` if it is a valid model name (and not ``.``/``..``)."""
    if not is_model_name(name):
        raise RepositoryError(
            f"expected a model name of 1-64 characters from [A-Za-z0-9_.-]. Received: {name!r}"
        )
    return name


def versions(repository: Path, name: str) -> list[int]:
    """The complete versions of ``name`` (directories with a metadata file), oldest first."""
    return version_numbers(repository / name)


def _taken(model_dir: Path) -> int:
    """The highest version number in use, complete or not."""
    numbers = [int(c.name) for c in model_dir.iterdir() if VERSION_DIR.fullmatch(c.name)]
    return max(numbers, default=0)


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
    number: int | None = None,
) -> tuple[int, Path]:
    """Write a new version of ``name`` atomically and return its number and directory.

    ``number``: that version exactly (a TF Serving base path's numbers are kept);
    ``RepositoryError`` if it is taken. ``None``: the next free number.

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
            version = number if number is not None else _taken(model_dir) + 1
            head = {"format_version": FORMAT_VERSION, "name": name, "version": version}
            document = {**head, **metadata, **extra, "files": hashes}
            Metadata.model_validate(document)  # what the service will read: checked here
            _write_json(tmp / METADATA, document)
            target = model_dir / str(version)
            try:
                os.rename(tmp, target)  # atomic; fails if the target exists and is not empty
            except OSError:
                if target.exists() and number is not None:
                    raise RepositoryError(
                        f"expected version {number} of {name!r} to be free, but {target} exists"
                    ) from None
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
    return {name: entry.model_dump() for name, entry in _file_hashes(directory, names).items()}
