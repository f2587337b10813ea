"""Request and response bodies of the native API (they also make the OpenAPI document).

Requests are strict: numbers must be JSON numbers (no ``"1.5"``, no ``true``) and
finite (no ``NaN``, ``Infinity`` or ``1e999``); unknown fields are refused so a
typo is not silently ignored.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Annotated, Any, Literal

from pydantic import (
    BaseModel,
    ConfigDict,
    Discriminator,
    Field,
    JsonValue,
    StrictInt,
    StrictStr,
    Tag,
)
from pydantic.config import JsonDict

from service.errors import InvalidInput
from service.inference.images import EncodedImages, from_base64
from service.inference.tables import NamedRows
from service.inference.text import Texts

FiniteFloat = Annotated[float, Field(strict=True, allow_inf_nan=False)]
Row = list[FiniteFloat]


class StrictBody(BaseModel):
    """Shared configuration of request bodies: no unknown fields, no type coercion."""

    model_config = ConfigDict(extra="forbid", strict=True)


class ImageFile(StrictBody):
    """An image file, as TF Serving sends one: ``{"b64": "<standard base64 of a PNG or JPEG>"}``."""

    model_config = ConfigDict(
        json_schema_extra={"examples": [{"b64": "iVBORw0KGgoAAAANSUhEUg..."}]}
    )

    b64: str = Field(description="Standard base64 (RFC 4648) of a PNG or JPEG file.")


#: Tags of an instance's forms: nested arrays by their number of axes, or an image file.
RANKS = ("<1 axis>", "<2 axes>", "<3 axes>", "<4 axes>")
FILE = "<file>"
NAMED = "<named>"
TEXT = "<text>"


def instance_tag(value: Any) -> str:
    """The tag of one instance: ``FILE`` for ``{"b64": ...}``, ``NAMED`` for another object
    (named features), else its number of axes."""
    if isinstance(value, dict):
        return FILE if value.keys() == {"b64"} else NAMED
    if isinstance(value, str):
        return TEXT
    axes = 0
    while isinstance(value, list):
        axes += 1
        value = value[0] if value else None
    return RANKS[min(max(axes, 1), len(RANKS)) - 1]


def batch_tag(value: Any) -> str:
    """The tag of a batch: that of its first instance (validation checks the others)."""
    return instance_tag(value[0]) if isinstance(value, list) and value else RANKS[0]


Matrix = list[Row]
Tensor3 = list[Matrix]
Tensor4 = list[Tensor3]
#: An object that is not an image file: in the documented schema, no ``b64`` member, so
#: that exactly one form of an instance matches (as the discriminators decide).
NOT_A_FILE = Field(json_schema_extra={"not": {"required": ["b64"]}})
#: A table instance as an object of named features (``null``: missing); for a model of
#: several inputs, an object naming each input (a number, a string or a nested array).
NamedFeatures = Annotated[
    dict[str, FiniteFloat | str | Row | Matrix | Tensor3 | list[str] | None], NOT_A_FILE
]

#: One instance: a nested array of the model's input shape, or an image file.
Instance = Annotated[
    Annotated[Row, Tag(RANKS[0])]
    | Annotated[Matrix, Tag(RANKS[1])]
    | Annotated[Tensor3, Tag(RANKS[2])]
    | Annotated[Tensor4, Tag(RANKS[3])]
    | Annotated[ImageFile, Tag(FILE)]
    | Annotated[NamedFeatures, Tag(NAMED)]
    | Annotated[str, Tag(TEXT)],
    Discriminator(instance_tag),
]

#: Instances of one form (decided once per batch, by the first: the hot path stays in Rust).
Batch = Annotated[
    Annotated[list[Row], Field(min_length=1), Tag(RANKS[0])]
    | Annotated[list[Matrix], Field(min_length=1), Tag(RANKS[1])]
    | Annotated[list[Tensor3], Field(min_length=1), Tag(RANKS[2])]
    | Annotated[list[Tensor4], Field(min_length=1), Tag(RANKS[3])]
    | Annotated[list[ImageFile], Field(min_length=1), Tag(FILE)]
    | Annotated[list[NamedFeatures], Field(min_length=1), Tag(NAMED)]
    | Annotated[list[str], Field(min_length=1), Tag(TEXT)],
    Discriminator(batch_tag),
]


def core_instances(instances: Sequence[Any], where: str = "instances") -> Any:
    """Validated instances in the data plane's terms: ``EncodedImages`` for image files
    (base64 decoded here, 422 saying where if it is not base64), ``NamedRows`` for objects
    of named features, ``Texts`` for strings, else the numbers as given."""
    first = instances[0] if instances else None
    if isinstance(first, str):
        if not all(isinstance(x, str) for x in instances):
            raise InvalidInput(f"expected {where} to be all strings or all arrays, received a mix")
        return Texts(instances)
    if isinstance(first, dict):
        if not all(isinstance(x, dict) for x in instances):
            raise InvalidInput(f"expected {where} to be all objects or all arrays, received a mix")
        return NamedRows(instances)
    if not isinstance(first, ImageFile):
        return instances
    if not all(isinstance(x, ImageFile) for x in instances):
        raise InvalidInput(f"expected {where} to be all image files or all arrays, received a mix")
    places = [f"{where}[{i}]" for i in range(len(instances))]
    return EncodedImages(
        [from_base64(x.b64, place) for x, place in zip(instances, places, strict=True)], places
    )


class PredictRequest(StrictBody):
    """Instances to classify: each a nested array of the model's input shape (a row of
    features, an image's height x width x channels values, ...), for a table an object of
    named features, or for image models an image file ``{"b64": ...}``."""

    model_config = ConfigDict(
        json_schema_extra={
            "examples": [
                {"instances": [[15.0, 0.5], [29.0, 14.0]]},
                {"instances": [[0.1, 15.2]], "calibrated": False, "format": "columnar"},
                {"instances": [{"x1": 0.1, "x2": 15.2}]},
                {"instances": [[15.0, 0.5], [29.0, 14.0]], "top_k": 2, "format": "columnar"},
            ]
        }
    )

    instances: Batch = Field(
        description="One per instance: a nested array of the model's input shape; for a "
        "table, an object of named features (null: missing); for image models, "
        '{"b64": ...} image files.'
    )
    calibrated: bool = Field(
        default=True,
        description="Apply the version's calibration temperature, where it has one; "
        "false gives the Keras model's own probabilities.",
    )
    format: Literal["rows", "columnar"] = Field(
        default="rows",
        description="'rows': one object per instance; 'columnar': one array per field "
        "(compact, for large batches).",
    )
    top_k: int | None = Field(
        default=None,
        ge=1,
        description="Answer each instance's k most probable classes (top_k: their indices, "
        "labels and probabilities, most probable first) instead of its whole distribution; "
        "at most the model's number of classes.",
    )


# A prediction is its classes' probabilities (or, asked for, its top k) and a summary. The
# summary's fields are declared once, in ``Summary`` and ``ColumnarSummary``; pydantic
# orders a model's fields base by base from the last base, so each model below names the
# summary first and gets its fields after the probabilities, as the answers have them.


class Summary(BaseModel):
    """What a prediction says of one instance besides its classes' probabilities."""

    argmax: int = Field(description="Index of the most probable class.")
    label: str = Field(description="class_names[argmax].")
    entropy: float = Field(
        description="Entropy of the distribution in nats: 0 when certain, log(classes) when "
        "uniform. High entropy: the model cannot tell the classes apart here."
    )
    ood: bool | None = Field(
        description="True when the input is unlike the training data (its distance to the "
        "nearest class exceeds the version's threshold): the probabilities are not to be "
        "trusted. null when the version has no training-data reference."
    )
    ood_distance: float | None = Field(
        description="Mahalanobis distance to the nearest class of the training data, in "
        "within-class standard deviations."
    )
    unseen: dict[str, str] | None = Field(
        default=None,
        description="Only for tables with categorical columns: the features whose value "
        "was never seen in training, with that value (served as out of vocabulary).",
    )


class _Distribution(BaseModel):
    probabilities: list[float] = Field(description="One per class, in class_names order; sum 1.")


class Prediction(Summary, _Distribution):
    """The class distribution of one instance."""


class TopClasses(BaseModel):
    """An instance's k most probable classes, most probable first (of equal probabilities,
    the lower index first)."""

    indices: list[int] = Field(description="Class indices (into class_names).")
    labels: list[str] = Field(description="Their class names.")
    probabilities: list[float] = Field(
        description="Their probabilities: the same numbers as in the whole distribution."
    )


class _Top(BaseModel):
    top_k: TopClasses


class TopPrediction(Summary, _Top):
    """One instance's k most probable classes (a request with top_k)."""


#: The documented examples: one instance near blob 0 of the default model.
_HEAD: JsonDict = {"model": "blobs", "version": "1"}
_DISTRIBUTION: list[JsonValue] = [0.9981, 0.0011, 0.0004, 0.0004]
_TOP: JsonDict = {"indices": [0, 1], "labels": ["0", "1"], "probabilities": [0.9981, 0.0011]}
_SUMMARY: JsonDict = {
    "argmax": 0,
    "label": "0",
    "entropy": 0.0092,
    "ood": False,
    "ood_distance": 0.42,
}
_COLUMNS: JsonDict = {
    "argmax": [0],
    "labels": ["0"],
    "entropy": [0.0092],
    "ood": [False],
    "ood_distance": [0.42],
}


class PredictResponse(BaseModel):
    """Row format: one object per instance."""

    model_config = ConfigDict(
        json_schema_extra={
            "examples": [{**_HEAD, "predictions": [{"probabilities": _DISTRIBUTION, **_SUMMARY}]}]
        }
    )

    model: str
    version: str
    predictions: list[Prediction]


class TopPredictResponse(BaseModel):
    """Row format with top_k: one object per instance, its k most probable classes."""

    model_config = ConfigDict(
        json_schema_extra={"examples": [{**_HEAD, "predictions": [{"top_k": _TOP, **_SUMMARY}]}]}
    )

    model: str
    version: str
    predictions: list[TopPrediction]


class _Served(BaseModel):
    model: str
    version: str


class ColumnarSummary(BaseModel):
    """What a columnar answer says of each instance besides its classes' probabilities."""

    argmax: list[int]
    labels: list[str]
    entropy: list[float]
    ood: list[bool] | None
    ood_distance: list[float] | None
    unseen: list[dict[str, str]] | None = Field(
        default=None,
        description="Only for tables with categorical columns: per instance, the features "
        "whose value was never seen in training.",
    )


class _Distributions(BaseModel):
    probabilities: list[list[float]]


class ColumnarPredictResponse(ColumnarSummary, _Distributions, _Served):
    """Columnar format: one array per field, rows in request order."""

    model_config = ConfigDict(
        json_schema_extra={"examples": [{**_HEAD, "probabilities": [_DISTRIBUTION], **_COLUMNS}]}
    )


class TopColumns(BaseModel):
    """Each instance's k most probable classes, one array of k per instance in each field."""

    indices: list[list[int]]
    labels: list[list[str]]
    probabilities: list[list[float]]


class _TopColumns(BaseModel):
    top_k: TopColumns


class TopColumnarPredictResponse(ColumnarSummary, _TopColumns, _Served):
    """Columnar format with top_k: each instance's k most probable classes, one array per
    field."""

    model_config = ConfigDict(
        json_schema_extra={
            "examples": [
                {**_HEAD, "top_k": {key: [value] for key, value in _TOP.items()}, **_COLUMNS}
            ]
        }
    )


#: Tags of the "one row or many rows" unions. A tag shows up in pydantic's error locations,
#: so tags are written in angle brackets, which ``service.http.error_responses`` leaves out
#: of the field path it reports (``instances[0]``, not ``instances.<many>[0]``).
ONE, MANY = "<one>", "<many>"


def one_or_many(value: Any) -> str:
    """``MANY`` for a list of lists, else ``ONE``: the tag of a one-or-many union."""
    return MANY if isinstance(value, list) and value and isinstance(value[0], list) else ONE


class SoftmaxRequest(StrictBody):
    """Logits (one vector, or a batch of equal-length vectors) and a temperature."""

    model_config = ConfigDict(
        json_schema_extra={
            "examples": [
                {"logits": [2.0, 4.3, 1.2, -3.1]},
                {"logits": [[13, 31, 5], [0, 100, 0]], "temperature": 2.0},
            ]
        }
    )

    logits: Annotated[
        Annotated[list[FiniteFloat], Tag(ONE)] | Annotated[list[Row], Tag(MANY)],
        Discriminator(one_or_many),
        Field(min_length=1),
    ]
    temperature: FiniteFloat = Field(default=1.0, gt=0, description="Divides the logits; > 0.")


class SoftmaxResponse(BaseModel):
    """Probabilities in the shape of the logits, and the index of the largest."""

    model_config = ConfigDict(
        json_schema_extra={
            "examples": [
                {
                    "probabilities": [
                        0.08749206320289253,
                        0.8726618017338312,
                        0.03931271812743419,
                        0.0005334169358421117,
                    ],
                    "argmax": 1,
                }
            ]
        }
    )

    probabilities: list[float] | list[list[float]]
    argmax: int | list[int]


class ErrorResponse(BaseModel):
    """Every non-2xx answer."""

    model_config = ConfigDict(
        json_schema_extra={
            "examples": [{"error": "expected 2 features per instance, received 3 in instances[0]"}]
        }
    )

    error: str = Field(description="What was expected and what was received.")
    detail: list[dict[str, Any]] | None = Field(
        default=None, description="Field-level problems, when there are several."
    )


class ModelSummary(BaseModel):
    """A served model and its versions."""

    name: str
    versions: list[str]
    default_version: str


class ModelList(BaseModel):
    """Every served model."""

    model_config = ConfigDict(
        json_schema_extra={
            "examples": [{"models": [{"name": "blobs", "versions": ["1"], "default_version": "1"}]}]
        }
    )

    models: list[ModelSummary]


class ModelInfo(BaseModel):
    """The served version's metadata."""

    model_config = ConfigDict(
        extra="allow",
        json_schema_extra={
            "examples": [
                {
                    "name": "blobs",
                    "version": "1",
                    "versions": ["1"],
                    "input_dim": 2,
                    "feature_names": ["x1", "x2"],
                    "class_names": ["0", "1", "2", "3"],
                    "created_at": "2026-11-22T20:13:24Z",
                    "metrics": {"test_loss": 0.0165, "test_accuracy": 0.992, "test_samples": 250},
                    "calibration": {
                        "method": "temperature_scaling",
                        "temperature": 1.0,
                        "kept": False,
                    },
                    "runtime": "litert",
                }
            ]
        },
    )

    name: str
    version: str
    versions: list[str]
    input_dim: int
    feature_names: list[str]
    class_names: list[str]
    metrics: dict[str, Any] | None
    calibration: dict[str, Any] | None
    created_at: str
    runtime: str
    rollout: dict[str, Any] | None = None
    """The model's ``serving.json``: ``version_labels``, ``canary_fraction``, and its
    ``shadow`` with the comparisons so far (per live version: ``rows_compared``,
    ``top1_agreement``, ``mean_abs_difference``, ``mean_js_divergence_bits``,
    ``shadow_calls``, ``shadow_mean_seconds``, ``rows_not_compared`` by reason); ``null``
    without one."""


class FeedbackRequest(BaseModel):
    """The true labels of an earlier prediction, by its request id."""

    model_config = ConfigDict(
        extra="forbid",
        json_schema_extra={"examples": [{"request_id": "7f3a2b", "labels": ["3"]}]},
    )

    request_id: str = Field(min_length=1, max_length=128)
    """The ``X-Request-ID`` the prediction was answered with (sent, or made and echoed)."""
    labels: list[StrictStr | StrictInt] = Field(min_length=1)
    """One per instance of that request: a class name, or its index."""


class FeedbackResponse(BaseModel):
    """How the labels compare with what was answered."""

    model_config = ConfigDict(
        json_schema_extra={
            "examples": [
                {"model": "blobs", "version": "1", "request_id": "7f3a2b", "rows": 1, "correct": 1}
            ]
        }
    )

    model: str
    version: str
    request_id: str
    rows: int
    correct: int
    """Rows whose most probable class was the true one."""


class MonitorResponse(BaseModel):
    """A version's rolling window of answers against its training references."""

    model_config = ConfigDict(
        extra="allow",
        json_schema_extra={
            "examples": [
                {
                    "model": "blobs",
                    "version": "1",
                    "monitored": True,
                    "window": 1000,
                    "window_rows": 1000,
                    "rows_seen": 5210,
                    "reference_rows": 750,
                    "predicted_mix": [0.25, 0.24, 0.26, 0.25],
                    "predicted_mix_psi": 0.0012,
                    "mean_entropy": 0.041,
                    "reference_mean_entropy": 0.0356,
                    "ood_rate": 0.002,
                    "reference_ood_rate": 0.0013,
                    "features": [
                        {"name": "x1", "psi": 0.013, "missing": 0.0, "reference_missing": 0.0},
                        {"name": "x2", "psi": 0.009, "missing": 0.0, "reference_missing": 0.0},
                    ],
                }
            ]
        },
    )

    model: str
    version: str
    monitored: bool
    """False for a version without training references, or with monitoring off
    (``reason`` says which)."""
    window: int
    """The window's size in rows (``SERVICE_MONITOR_WINDOW``)."""
    window_rows: int | None = None
    predicted_mix_psi: float | None = None
    mean_entropy: float | None = None
    reference_mean_entropy: float | None = None
    ood_rate: float | None = None
    reference_ood_rate: float | None = None
    features: list[dict[str, Any]] | None = None
    """Per numeric feature: ``name``, ``psi``, ``missing``, ``reference_missing``."""


class Health(BaseModel):
    """Liveness or readiness."""

    model_config = ConfigDict(json_schema_extra={"examples": [{"status": "ready"}]})

    status: str


class VersionState(BaseModel):
    """One version's state (``LOADING``, ``AVAILABLE``, ``UNLOADING``, ``END``)."""

    version: str
    state: str
    error: str


class ReloadResponse(BaseModel):
    """The model's versions after the reload."""

    model_config = ConfigDict(
        json_schema_extra={
            "examples": [
                {"name": "blobs", "versions": [{"version": "1", "state": "AVAILABLE", "error": ""}]}
            ]
        }
    )

    name: str
    versions: list[VersionState]


def error_responses(*codes: int) -> dict[int | str, dict[str, Any]]:
    """OpenAPI ``responses`` for these error statuses, each an ``ErrorResponse`` body."""
    return {code: {"model": ErrorResponse} for code in codes}
