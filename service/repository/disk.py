"""Read versions from the model repository, refusing any that is not whole and sound.

What a version is on disk is ``service.repository.artifact``; this adds what serving
needs: no symbolic links out of the repository, metadata for the directory it sits
in, every file's sha256 checked before anything is loaded, and the OOD detector.
"""

from __future__ import annotations

import datetime as dt
import math
from collections.abc import Sequence
from functools import cached_property
from pathlib import Path
from typing import Any

import numpy as np
from pydantic import ValidationError

from service.errors import ModelLoadError
from service.inference.ood import OODDetector
from service.repository.artifact import (
    METADATA,
    MODEL_KERAS,
    Column,
    InputSpec,
    Metadata,
    is_bare,
    is_model_name,
    model_names,
    sha256,
    version_numbers,
)

__all__ = [
    "ServedMetadata",
    "bare_metadata",
    "is_bare",
    "is_model_name",
    "model_names",
    "read_metadata",
    "verify_files",
    "version_numbers",
]


class ServedMetadata(Metadata):
    """A version's metadata as the service uses it: with its out-of-distribution detector."""

    @cached_property
    def ood_detector(self) -> OODDetector | None:
        """The version's out-of-distribution detector, when its trainer recorded one."""
        ood = self.training_data.ood if self.training_data else None
        if ood is None:
            return None
        return OODDetector(
            np.asarray(ood.class_means, dtype=np.float64),
            np.asarray(ood.precision, dtype=np.float64),
            ood.threshold,
        )

    @cached_property
    def columns(self) -> list[Column] | None:
        """What an instance given as named features is encoded by (``None``: no names)."""
        return columns_of(self.input_spec, self.feature_names)


def columns_of(spec: InputSpec, feature_names: Sequence[str]) -> list[Column] | None:
    """The columns a named instance is encoded by (``None``: the model takes no names).

    A table recorded before columns were (numbers only) has one numeric column per
    feature name.
    """
    if spec.columns is not None:
        return spec.columns
    if spec.kind != "table" or len(feature_names) != spec.size:
        return None
    return [Column(name=name) for name in feature_names]


def read_metadata(version_dir: Path, name: str, version: int) -> ServedMetadata:
    """Parse and check ``metadata.json``; raise ``ModelLoadError`` saying what is wrong."""
    where = f"model {name!r} version {version}"
    for part in (version_dir.parent, version_dir, version_dir / METADATA):
        if part.is_symlink():
            raise ModelLoadError(
                f"{where}: expected real files inside the model repository, received a "
                f"symbolic link at {part.name!r}: refused, it could point anywhere"
            )
    try:
        metadata = ServedMetadata.model_validate_json((version_dir / METADATA).read_bytes())
    except OSError as exc:
        raise ModelLoadError(f"{where}: cannot read {METADATA}: {exc.strerror}") from exc
    except ValidationError as exc:
        problems = "; ".join(
            f"{'.'.join(map(str, e['loc'])) or 'metadata'}: {e['msg']}" for e in exc.errors()
        )
        raise ModelLoadError(f"{where}: invalid {METADATA}: {problems}") from exc
    if metadata.name != name or metadata.version != version:
        raise ModelLoadError(
            f"{where}: expected metadata for {name!r} version {version}, "
            f"received {metadata.name!r} version {metadata.version}"
        )
    return metadata


def bare_metadata(
    version_dir: Path, name: str, version: int, spec: dict[str, Any], classes: int
) -> ServedMetadata:
    """What a bare ``model.keras`` (``is_bare``) is served as: its own input description,
    classes named ``"0"``, ``"1"``, ..., and no files to check (``ValueError`` if its
    input is not one the service takes)."""
    size = math.prod(spec["shape"])
    table = spec["kind"] == "table"
    modified = dt.datetime.fromtimestamp((version_dir / MODEL_KERAS).stat().st_mtime, dt.UTC)
    return ServedMetadata(
        name=name,
        version=version,
        input_dim=size,
        input=InputSpec(**spec),
        feature_names=[f"x{i + 1}" for i in range(size)] if table else [],
        class_names=[str(k) for k in range(classes)],
        created_at=modified.isoformat(),
        files={},  # nothing recorded, nothing to check
    )


def verify_files(version_dir: Path, metadata: ServedMetadata) -> None:
    """Every file the metadata lists must be a regular file in the version with that sha256."""
    where = f"model {metadata.name!r} version {metadata.version}"
    for filename, entry in metadata.files.items():
        path = version_dir / filename
        if "/" in filename or filename.startswith(".") or not path.is_file() or path.is_symlink():
            raise ModelLoadError(f"{where}: {filename} is missing or not a regular file")
        actual = sha256(path)
        if actual != entry.sha256:
            raise ModelLoadError(
                f"{where}: {filename} sha256 mismatch: expected {entry.sha256}, received {actual}"
            )
