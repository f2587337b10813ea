"""The artifact: what one model version is on disk, the only thing training and serving share.

::

    <repository>/<name>/<version>/     name: [A-Za-z0-9_.-]{1,64}; version: 1, 2, ...
        model.keras                    the Keras classifier, softmax output
        model.tflite                   its serving export: the same network up to the logits
        metadata.json                  ``Metadata`` below, with the sha256 of every file
        report/                        the training report (hashed under ``report``)

This module exists twice, byte for byte: ``service/repository/artifact.py`` and
``model_training/artifact.py``, so that neither package imports the other;
``tests/test_artifact_contract.py`` fails when the two copies differ. It imports
only the standard library, numpy and pydantic.
"""

from __future__ import annotations

import hashlib
import math
import re
from collections.abc import Iterable
from pathlib import Path
from typing import Annotated, Any, Literal

import numpy as np
import numpy.typing as npt
from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    SerializerFunctionWrapHandler,
    model_serializer,
    model_validator,
)

FORMAT_VERSION = 1
SUPPORTED_FORMATS = frozenset({1})
MODEL_NAME = re.compile(r"[A-Za-z0-9_.-]{1,64}")
VERSION_DIR = re.compile(r"[1-9][0-9]{0,17}")
METADATA = "metadata.json"
MODEL_KERAS = "model.keras"
MODEL_TFLITE = "model.tflite"
#: A text model's string preprocessing (``TextVectorization``/``StringLookup``), vocabulary
#: included, which the service runs before ``model.tflite``.
TEXT = "text.json"
#: A model with several named inputs: the string lookups of its string inputs, by input
#: name (each as in ``text.json``), which the service runs before ``model.tflite``.
LOOKUPS = "lookups.json"
REPORT_DIR = "report"


# --- the layout ---------------------------------------------------------------------------


def is_model_name(name: str) -> bool:
    """True for names a repository may hold (and that cannot escape it)."""
    return bool(MODEL_NAME.fullmatch(name)) and name not in {".", ".."}


def model_names(repository: Path) -> list[str]:
    """Model directories in the repository, sorted (hidden ones are a trainer's scratch)."""
    if not repository.is_dir():
        return []
    return sorted(
        child.name
        for child in repository.iterdir()
        if child.is_dir() and is_model_name(child.name) and not child.name.startswith(".")
    )


def version_numbers(model_dir: Path) -> list[int]:
    """Complete versions, oldest first: integer directories with a metadata file, or with
    only a ``model.keras`` (a Keras model dropped in by hand, see ``is_bare``)."""
    if not model_dir.is_dir():
        return []
    return sorted(
        int(child.name)
        for child in model_dir.iterdir()
        if VERSION_DIR.fullmatch(child.name)
        and ((child / METADATA).is_file() or (child / MODEL_KERAS).is_file())
    )


def is_bare(version_dir: Path) -> bool:
    """True for a version holding a ``model.keras`` but no metadata: nothing to check it by."""
    return not (version_dir / METADATA).exists() and (version_dir / MODEL_KERAS).is_file()


def sha256(path: Path) -> str:
    """Hex sha256 of a file's bytes."""
    digest = hashlib.sha256()
    with path.open("rb") as handle:
        for block in iter(lambda: handle.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def file_hashes(directory: Path, names: Iterable[str]) -> dict[str, FileEntry]:
    """``{name: FileEntry}`` for the named files in ``directory``."""
    return {
        name: FileEntry(sha256=sha256(directory / name), bytes=(directory / name).stat().st_size)
        for name in names
    }


# --- metadata.json ------------------------------------------------------------------------


class FileEntry(BaseModel):
    """One file of a version: its sha256 and size, checked before the version is served."""

    model_config = ConfigDict(frozen=True)

    sha256: str = Field(pattern=r"^[0-9a-f]{64}$")
    bytes: int = Field(ge=0)


class Column(BaseModel):
    """One column of a user's table, and how an instance's value becomes model inputs.

    A table instance may be an object of named values (``{"island": "Biscoe", ...}``);
    the service encodes it column by column, in ``InputSpec.columns`` order: a numeric
    column is one input (its value, or ``fill`` when missing); a categorical column is
    ``len(vocabulary) + 1`` inputs, one-hot: the value's position in ``vocabulary``, or
    the last one for a value not seen in training (out of vocabulary). Anything the
    model computes from there (standardization) is inside the model.
    """

    model_config = ConfigDict(extra="allow", frozen=True)

    name: str = Field(min_length=1)
    kind: Literal["numeric", "categorical"] = "numeric"
    fill: Annotated[float, Field(allow_inf_nan=False)] | str | None = None
    """What a missing value (``null``; in a CSV ``""``, ``NA``, ``NaN``) is replaced with:
    the training split's mean (numeric) or its most frequent value (categorical).
    ``None``: nothing recorded, and a missing value is refused."""
    vocabulary: list[str] | None = None
    """For a categorical column: the values seen in the training split, in one-hot order."""

    @model_validator(mode="after")
    def _consistent(self) -> Column:
        if self.kind == "categorical":
            if not self.vocabulary or not isinstance(self.fill, str):
                raise ValueError(
                    f"expected categorical column {self.name!r} to have a vocabulary and a "
                    f"string fill, received {self.vocabulary!r} and {self.fill!r}"
                )
        elif self.vocabulary is not None or isinstance(self.fill, str):
            raise ValueError(
                f"expected numeric column {self.name!r} to have a numeric fill and no "
                f"vocabulary, received {self.fill!r} and {self.vocabulary!r}"
            )
        return self

    @property
    def width(self) -> int:
        """How many model inputs the column becomes."""
        return 1 if self.vocabulary is None else len(self.vocabulary) + 1


#: Kinds of input that may have any number of steps (a first axis of -1).
VARIABLE_KINDS = ("sequence", "token_ids", "text")
#: The number of steps in the probes of an input of any length.
PROBE_STEPS = 8


class InputSpec(BaseModel):
    """What the model takes, per instance (``metadata.json``'s ``input``).

    Versions written before it existed have none: they take ``input_dim`` float32
    features (``Metadata.input_spec``).
    """

    model_config = ConfigDict(extra="allow", frozen=True)

    shape: list[int] = Field(min_length=1)
    """The instance's shape, without the batch dimension: ``[2]``, ``[12]``, ``[28, 28, 1]``;
    ``-1`` first for a sequence or token ids of any length: ``[-1]``, ``[-1, 3]``."""

    dtype: Literal["float32", "int32", "int64"] = "float32"
    """The dtype of the model's input tensor."""

    kind: Literal["table", "image", "sequence", "token_ids", "text", "named"] = "table"
    """What an instance is: a row of features, an image (height, width, channels), a
    sequence of steps (steps, features), token ids, or a string (``text``: the service
    runs the preprocessing in ``text.json``, and ``shape``/``dtype`` are what it gives
    ``model.tflite``); ``named``: an object naming each of ``inputs``."""

    inputs: list[NamedInput] | None = None
    """For a model of several inputs (``kind: named``): each input, in ``model.tflite``'s
    signature; ``shape`` is then ``[sum of their sizes]``."""

    id_range: tuple[int, int] | None = None
    """For token ids: the smallest and largest id the model accepts (its embedding's rows)."""

    columns: list[Column] | None = None
    """For a table trained here from a CSV: its columns, which clients may name in an
    instance object (``Column``). ``None``: instances are rows of numbers only."""

    pixel_range: tuple[float, float] | None = None
    """For images: the values the model takes for a black and a white pixel: ``[0, 255]``
    when it rescales inside, ``[0, 1]`` when its trainer divided by 255. An image file's
    8-bit value ``p`` is fed as ``low + (high - low) * p / 255``."""

    @model_validator(mode="after")
    def _consistent(self) -> InputSpec:
        steps = self.shape[0] == -1 and self.kind in VARIABLE_KINDS
        if any(d < 1 for d in self.shape[1 if steps else 0 :]):
            raise ValueError(
                f"expected a shape of positive sizes (-1 first for a sequence or token ids of "
                f"any length), received {self.shape} for a {self.kind}"
            )
        if self.id_range is not None and not 0 <= self.id_range[0] <= self.id_range[1]:
            raise ValueError(f"expected an id_range [low, high], received {list(self.id_range)}")
        if self.columns is not None:
            width = sum(column.width for column in self.columns)
            names = [column.name for column in self.columns]
            if self.kind != "table" or self.shape != [width] or len(set(names)) != len(names):
                raise ValueError(
                    f"expected columns of distinct names encoding a table of shape {self.shape}, "
                    f"received {len(names)} columns of {width} inputs for a {self.kind}"
                )
        if (self.kind == "named") != (self.inputs is not None):
            raise ValueError(
                f"expected inputs exactly for kind 'named', received kind {self.kind!r} with "
                f"{'no' if self.inputs is None else len(self.inputs)} inputs"
            )
        if self.inputs is not None:
            names = [spec.name for spec in self.inputs]
            total = sum(spec.size for spec in self.inputs)
            if len(set(names)) != len(names) or self.shape != [total] or len(names) < 2:
                raise ValueError(
                    f"expected two or more inputs of distinct names holding {self.shape} "
                    f"values, received {names} holding {total}"
                )
            if any(spec.variable or spec.kind == "named" for spec in self.inputs):
                raise ValueError("expected named inputs of fixed shape, received one of any length")
        if self.kind == "image":
            if len(self.shape) != 3 or self.shape[2] not in (1, 3, 4):
                raise ValueError(
                    "expected an image shape [height, width, channels] with 1, 3 or 4 "
                    f"channels, received {self.shape}"
                )
            if self.dtype != "float32" or self.pixel_range is None:
                raise ValueError(
                    "expected a float32 image input with a pixel_range, received "
                    f"dtype {self.dtype} and pixel_range {self.pixel_range}"
                )
        return self

    @model_serializer(mode="wrap")
    def _without_absent_inputs(self, handler: SerializerFunctionWrapHandler) -> dict[str, Any]:
        # A model of one input reads as it did before models of several existed.
        data: dict[str, Any] = handler(self)
        if data.get("inputs", ...) is None:
            del data["inputs"]
        return data

    @property
    def variable(self) -> bool:
        """True when instances may have any number of steps (``shape`` starts with -1)."""
        return self.shape[0] == -1

    @property
    def size(self) -> int:
        """How many values one instance holds (the product of ``shape``); of any length,
        how many one step holds."""
        return math.prod(self.shape[1:] if self.variable else self.shape)

    @property
    def integral(self) -> bool:
        """True when every value must be a whole number (integer dtype, or token ids)."""
        return self.dtype != "float32" or self.id_range is not None

    @property
    def batch_dtype(self) -> np.dtype[Any]:
        """A model of several inputs: the structured dtype of a batch, one field per input."""
        fields = [(spec.name, spec.dtype, tuple(spec.shape)) for spec in self.inputs or []]
        return np.dtype(fields)

    def probe(self, rows: int, rng: np.random.Generator) -> npt.NDArray[Any]:
        """A batch of valid instances, for self-checks and warming a version up; for a
        model of several inputs, a structured array of one field per input."""
        if self.inputs is not None:
            batch = np.empty(rows, dtype=self.batch_dtype)
            for spec in self.inputs:
                batch[spec.name] = spec.probe(rows, rng)
            return batch
        shape = (rows, PROBE_STEPS, *self.shape[1:]) if self.variable else (rows, *self.shape)
        if self.id_range is not None:
            low, high = self.id_range
            return rng.integers(low, high, size=shape, endpoint=True).astype(self.dtype)
        if self.integral:
            return rng.integers(0, 10, size=shape).astype(self.dtype)
        if self.pixel_range is not None:
            black, white = self.pixel_range
            return rng.uniform(black, white, size=shape).astype(np.float32)
        return rng.normal(scale=10.0, size=shape).astype(np.float32)


class NamedInput(InputSpec):
    """One input of a model of several inputs (``InputSpec.inputs``): its name, then what
    it takes, as for a model's one input (a ``text`` input is a string the service runs
    through its lookup in ``lookups.json``)."""

    name: str = Field(min_length=1, max_length=256)


InputSpec.model_rebuild()


class OODReference(BaseModel):
    """The training data's class-conditional Gaussian: the out-of-distribution reference."""

    model_config = ConfigDict(extra="allow", frozen=True)

    class_means: list[list[float]] = Field(min_length=1)
    precision: list[list[float]] = Field(min_length=1)
    threshold: float = Field(ge=0, allow_inf_nan=False)
    space: Literal["input", "features"] = "input"
    """Where distances are measured. ``input``: the instance's values (a table's
    features). ``features``: the network's own features, the activations entering its
    logits layer, for images and sequences, where distances between raw inputs mean
    little; ``model.tflite`` then outputs them after the logits, ``(batch, classes + D)``.
    """

    @property
    def dim(self) -> int:
        """How many values a distance is measured over."""
        return len(self.precision)


class TrainingData(BaseModel):
    """What the training data looked like (only the OOD reference is typed)."""

    model_config = ConfigDict(extra="allow", frozen=True)

    ood: OODReference | None = None


class Calibration(BaseModel):
    """Temperature scaling fitted on held-out data (its fit statistics pass through)."""

    model_config = ConfigDict(extra="allow", frozen=True)

    temperature: float = Field(gt=0, allow_inf_nan=False)


class ExplanationBackground(BaseModel):
    """What a table's feature attributions are measured against (``metadata.json``'s
    ``explanation``): a few weighted points summarising the training rows in the model's
    input space (after encoding: one-hot inputs included), so that no training row ships
    with the version. The service's Shapley values replace the features a coalition leaves
    out by each point in turn and average with these weights; their weighted mean is the
    baseline the attributions of an instance add up from.
    """

    model_config = ConfigDict(extra="allow", frozen=True)

    method: str = "kmeans"
    """How the points were chosen: ``kmeans`` (k-means centroids of the standardized
    rows) or ``kmedoids`` (each cluster's row nearest its centroid, for tables with
    categorical columns, whose one-hot inputs a centroid would blur)."""
    computed_on: str = "train"
    """The rows summarised: ``train``, the training part (validation rows included)."""
    rows: int = Field(ge=1)
    """How many rows were summarised."""
    points: list[list[Annotated[float, Field(allow_inf_nan=False)]]] = Field(min_length=1)
    """The points, each of ``input_dim`` values."""
    weights: list[Annotated[float, Field(ge=0, allow_inf_nan=False)]] = Field(min_length=1)
    """Each point's share of the rows (its cluster's size over ``rows``); they sum to 1."""

    @model_validator(mode="after")
    def _consistent(self) -> ExplanationBackground:
        if len(self.weights) != len(self.points) or not math.isclose(
            sum(self.weights), 1.0, abs_tol=1e-9
        ):
            raise ValueError(
                f"expected one weight per background point, summing to 1, received "
                f"{len(self.weights)} weights summing to {sum(self.weights)} for "
                f"{len(self.points)} points"
            )
        return self


class Metadata(BaseModel):
    """``metadata.json``: what the version is, how it was made, and the hash of every file.

    Fields beyond these are kept as written (``extra="allow"``): a newer trainer may
    add some, and older servers pass them through.
    """

    model_config = ConfigDict(extra="allow", frozen=True)

    format_version: int = FORMAT_VERSION
    name: str
    version: int = Field(ge=1)
    input_dim: int = Field(ge=1)
    """How many values one instance holds: a table's features, or the product of ``input.shape``
    (of an input of any length, the values one step holds)."""
    input: InputSpec | None = None
    feature_names: list[str]
    """A table's column names, one per feature; empty for images, sequences and token ids."""
    class_names: list[str] = Field(min_length=2)
    created_at: str
    metrics: dict[str, Any] | None = None
    calibration: Calibration | None = None
    training: dict[str, Any] | None = None
    training_data: TrainingData | None = None
    libraries: dict[str, str] | None = None
    explanation: ExplanationBackground | None = None
    """For a table trained here: the background of its feature attributions. ``None``
    (versions exported from elsewhere, or written before it existed): the service
    explains against the training mean where ``training_data`` records one, else zeros."""
    files: dict[str, FileEntry]

    @model_validator(mode="after")
    def _consistent(self) -> Metadata:
        if self.format_version not in SUPPORTED_FORMATS:
            raise ValueError(
                f"expected format_version in {sorted(SUPPORTED_FORMATS)}, "
                f"received {self.format_version}"
            )
        table = self.input is None or self.input.kind == "table"
        if len(self.feature_names) != self.input_dim and (table or self.feature_names):
            raise ValueError(
                f"expected {self.input_dim} feature_names (input_dim), "
                f"received {len(self.feature_names)}"
            )
        if self.input is not None and self.input.size != self.input_dim:
            raise ValueError(
                f"expected input.shape {self.input.shape} to hold input_dim={self.input_dim} "
                f"values, received {self.input.size}"
            )
        background = self.explanation
        if background is not None and {len(p) for p in background.points} != {self.input_dim}:
            raise ValueError(
                f"expected explanation background points of input_dim={self.input_dim} "
                f"values, received lengths {sorted({len(p) for p in background.points})}"
            )
        ood = self.ood
        if ood is not None:
            dim = self.input_dim if ood.space == "input" else ood.dim
            shapes = {len(row) for row in ood.class_means} | {len(row) for row in ood.precision}
            if shapes != {dim} or ood.dim != dim:
                raise ValueError(
                    f"expected OOD class means and a precision matrix over {dim} "
                    f"values, received rows of lengths {sorted(shapes)}"
                )
        return self

    @property
    def ood(self) -> OODReference | None:
        """The out-of-distribution reference, when the trainer recorded one."""
        return self.training_data.ood if self.training_data else None

    @property
    def categorical(self) -> bool:
        """True when the model has categorical columns (whose unseen values are reported)."""
        columns = self.input.columns if self.input is not None else None
        return any(column.kind == "categorical" for column in columns or [])

    @property
    def extra_outputs(self) -> int:
        """Columns ``model.tflite`` outputs after the logits (the OOD features, if any)."""
        ood = self.ood
        return ood.dim if ood is not None and ood.space == "features" else 0

    @property
    def input_spec(self) -> InputSpec:
        """What the model takes: the recorded ``input``, else ``input_dim`` float32 features."""
        return self.input or InputSpec(shape=[self.input_dim])

    @property
    def temperature(self) -> float:
        """The calibration temperature, 1.0 when the version has none."""
        return self.calibration.temperature if self.calibration else 1.0
