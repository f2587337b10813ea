"""Read the model repository: ``<repo>/<name>/<version>/{model.tflite,model.keras,metadata.json}``.

A version is a positive integer directory with a ``metadata.json``; hidden
directories (a trainer's temporary output) and anything else are ignored. Before a
version is loaded, every file its metadata lists must exist and match its sha256.
"""

from __future__ import annotations

import hashlib
import re
from functools import cached_property
from pathlib import Path
from typing import Any, Literal

import numpy as np
import numpy.typing as npt
from pydantic import BaseModel, ConfigDict, Field, ValidationError, model_validator

from service.errors import ModelLoadError
from service.inference.ood import OODDetector

MODEL_NAME = re.compile(r"[A-Za-z0-9_.-]{1,64}")
VERSION_DIR = re.compile(r"[1-9][0-9]{0,17}")
METADATA = "metadata.json"
SUPPORTED_FORMATS = {1}


class FileEntry(BaseModel):
    """One file of a version, as recorded by the trainer."""

    sha256: str = Field(pattern=r"^[0-9a-f]{64}$")
    bytes: int = Field(ge=0)


class OODReference(BaseModel):
    """The trainer's out-of-distribution reference (see service.inference.ood)."""

    model_config = ConfigDict(extra="allow", frozen=True)

    class_means: list[list[float]] = Field(min_length=1)
    precision: list[list[float]] = Field(min_length=1)
    threshold: float = Field(ge=0, allow_inf_nan=False)


class TrainingData(BaseModel):
    """What the training data looked like (only what the service uses is typed)."""

    model_config = ConfigDict(extra="allow", frozen=True)

    ood: OODReference | None = None


class Calibration(BaseModel):
    """Temperature scaling fitted on held-out data (its fit statistics pass through)."""

    model_config = ConfigDict(extra="allow", frozen=True)

    temperature: float = Field(gt=0, allow_inf_nan=False)


class InputSpec(BaseModel):
    """What the model takes, per instance (``metadata.json``'s ``input``).

    Versions written before it existed have none: they take ``input_dim`` float32
    features (``Metadata.input``).
    """

    model_config = ConfigDict(extra="allow", frozen=True)

    shape: list[int] = Field(min_length=1)
    """The instance's shape, without the batch dimension: ``[2]``, ``[12]``."""

    dtype: Literal["float32", "int32", "int64"] = "float32"
    """The dtype of the model's input tensor."""

    kind: Literal["table", "image", "sequence", "token_ids"] = "table"
    """What an instance is."""

    id_range: tuple[int, int] | None = None
    """For token ids: the smallest and largest id the model accepts (its embedding's rows)."""

    @model_validator(mode="after")
    def _consistent(self) -> InputSpec:
        if self.id_range is not None and not 0 <= self.id_range[0] <= self.id_range[1]:
            raise ValueError(f"expected an id_range [low, high], received {list(self.id_range)}")
        return self

    @property
    def integral(self) -> bool:
        """True when every value must be a whole number (integer dtype, or token ids)."""
        return self.dtype != "float32" or self.id_range is not None

    def probe(self, rows: int, rng: np.random.Generator) -> npt.NDArray[Any]:
        """A batch of valid instances, for warming a version up."""
        shape = (rows, *self.shape)
        if self.id_range is not None:
            low, high = self.id_range
            return rng.integers(low, high, size=shape, endpoint=True).astype(self.dtype)
        if self.integral:
            return rng.integers(0, 10, size=shape).astype(self.dtype)
        return rng.normal(scale=10.0, size=shape).astype(np.float32)


class Metadata(BaseModel):
    """The parts of ``metadata.json`` the service relies on (the rest is passed through)."""

    model_config = ConfigDict(extra="allow", frozen=True)

    format_version: int
    name: str
    version: int = Field(ge=1)
    input_dim: int = Field(ge=1)
    feature_names: list[str]
    class_names: list[str] = Field(min_length=2)
    created_at: str
    metrics: dict[str, Any] | None = None
    calibration: Calibration | None = None
    training_data: TrainingData | None = None
    files: dict[str, FileEntry]
    input: InputSpec | None = None

    @model_validator(mode="after")
    def _consistent(self) -> Metadata:
        if self.format_version not in SUPPORTED_FORMATS:
            raise ValueError(
                f"expected format_version in {sorted(SUPPORTED_FORMATS)}, "
                f"received {self.format_version}"
            )
        if len(self.feature_names) != self.input_dim:
            raise ValueError(
                f"expected {self.input_dim} feature_names (input_dim), "
                f"received {len(self.feature_names)}"
            )
        if self.input is not None and self.input.shape != [self.input_dim]:
            raise ValueError(
                f"expected input.shape [{self.input_dim}] (input_dim), received {self.input.shape}"
            )
        ood = self.training_data.ood if self.training_data else None
        if ood is not None:
            shapes = {len(row) for row in ood.class_means} | {len(row) for row in ood.precision}
            if shapes != {self.input_dim} or len(ood.precision) != self.input_dim:
                raise ValueError(
                    f"expected OOD class means and a precision matrix over {self.input_dim} "
                    f"features, received rows of lengths {sorted(shapes)}"
                )
        return self

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
    def input_spec(self) -> InputSpec:
        """What the model takes: the recorded ``input``, else ``input_dim`` float32 features."""
        return self.input or InputSpec(shape=[self.input_dim])

    @property
    def temperature(self) -> float:
        """The calibration temperature, 1.0 when the version has none."""
        return self.calibration.temperature if self.calibration else 1.0


def is_model_name(name: str) -> bool:
    """True for names the repository may hold (and that cannot escape it)."""
    return bool(MODEL_NAME.fullmatch(name)) and name not in {".", ".."}


def model_names(repository: Path) -> list[str]:
    """Model directories in the repository, sorted."""
    if not repository.is_dir():
        return []
    return sorted(
        child.name
        for child in repository.iterdir()
        if child.is_dir() and is_model_name(child.name) and not child.name.startswith(".")
    )


def version_numbers(model_dir: Path) -> list[int]:
    """Complete versions (integer directories with a metadata file), oldest first."""
    if not model_dir.is_dir():
        return []
    return sorted(
        int(child.name)
        for child in model_dir.iterdir()
        if VERSION_DIR.fullmatch(child.name) and (child / METADATA).is_file()
    )


def _sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as handle:
        for block in iter(lambda: handle.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def read_metadata(version_dir: Path, name: str, version: int) -> Metadata:
    """Parse and check ``metadata.json``; raise ``ModelLoadError`` saying what is wrong."""
    where = f"model {name!r} version {version}"
    for part in (version_dir.parent, version_dir, version_dir / METADATA):
        if part.is_symlink():
            raise ModelLoadError(
                f"{where}: expected real files inside the model repository, received a "
                f"symbolic link at {part.name!r}: refused, it could point anywhere"
            )
    try:
        metadata = Metadata.model_validate_json((version_dir / METADATA).read_bytes())
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


def verify_files(version_dir: Path, metadata: Metadata) -> None:
    """Every file the metadata lists must be a regular file in the version with that sha256."""
    where = f"model {metadata.name!r} version {metadata.version}"
    for filename, entry in metadata.files.items():
        path = version_dir / filename
        if "/" in filename or filename.startswith(".") or not path.is_file() or path.is_symlink():
            raise ModelLoadError(f"{where}: {filename} is missing or not a regular file")
        actual = _sha256(path)
        if actual != entry.sha256:
            raise ModelLoadError(
                f"{where}: {filename} sha256 mismatch: expected {entry.sha256}, received {actual}"
            )
