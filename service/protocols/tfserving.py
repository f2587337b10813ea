"""TF Serving's REST API, so TF Serving clients work unchanged. Routes and encoding only.

- ``POST /v1/models/{name}[/versions/{v}]:predict`` in the row format
  (``{"instances": [[...], ...]}`` -> ``{"predictions": [[...], ...]}``) or the
  columnar format (``{"inputs": [[...], ...]}`` -> ``{"outputs": [[...], ...]}``). The
  model has one input (rows may also name it: ``{"input": [...]}``, any name) and
  one output, the class probabilities, which is therefore unnamed, as TF Serving
  answers for a Keras softmax classifier. The probabilities are ``/predict``'s, to
  the last bit.
- ``GET /v1/models/{name}[/versions/{v}]``: ``model_version_status`` of every version
  the server has loaded or tried (``AVAILABLE``, ``LOADING``, ``UNLOADING``, ``END``,
  with the reason a version was refused), and beside it KServe V1's ``name`` and
  ``ready`` (a version is ``AVAILABLE``), which KServe's clients read.
- ``GET /v1/models/{name}[/versions/{v}]/metadata``: the ``serving_default``
  ``signature_def``.
- ``POST /v1/models/{name}[/versions/{v}]:explain``: KServe V1's explain verb, in
  ``:predict``'s request forms (plus ``classes``, ``calibrated``), answering the native
  ``/models/{name}/explain``'s body (``service.protocols.explanations``).
- ``POST /v1/models/{name}[/versions/{v}]:classify``: TF Serving's Classify API.
  ``examples`` (objects naming the model's features, or its one input), ``context``
  merged into each (an example's own value wins, as in TF Serving, which parses the
  context and then the example into one ``tf.Example``) -> ``{"result": [[[label,
  score], ...], ...]}``: every class, in ``class_names`` order, with ``/predict``'s
  probability. ``:regress`` is a 501: a classifier has no regression signature.

Errors are ``{"error": "..."}``; invalid input is 400, as TF Serving answers.
"""

from __future__ import annotations

from typing import Annotated, Any

from fastapi import APIRouter, Request
from pydantic import BaseModel, ConfigDict, Discriminator, Field, Tag

from service.dataplane import DataPlane
from service.errors import InvalidInput, NotImplementedHere, VersionNotFound
from service.http import bodies
from service.http.bodies import openapi_body
from service.http.responses import JSONResponse
from service.http.routing import route_classes
from service.http.state import dataplane
from service.inference.named import NamedColumns
from service.protocols import explanations, schemas
from service.protocols.explanations import CALIBRATED_FIELD, CLASSES_FIELD, ExplainResponse
from service.protocols.schemas import (
    FILE,
    NAMED,
    NOT_A_FILE,
    RANKS,
    TEXT,
    Batch,
    ErrorResponse,
    FiniteFloat,
    ImageFile,
    Matrix,
    Row,
    StrictBody,
    Tensor3,
    Tensor4,
    core_instances,
    error_responses,
    instance_tag,
)
from service.repository.artifact import InputSpec
from service.repository.registry import LoadedVersion, State, VersionStatus

SIGNATURE = "serving_default"
INPUT = "input"
OUTPUT = "probabilities"

# --- request bodies ---------------------------------------------------------------------


BATCH = "<batch>"


def _form(value: Any) -> str:
    """An instance's tag: an object (but ``{"b64": ...}``) is named, else as ``instance_tag``."""
    if isinstance(value, dict) and set(value) != {"b64"}:
        return NAMED
    return instance_tag(value)


def _value_form(value: Any) -> str:
    return TENSOR if isinstance(value, list | dict) else SCALAR


TENSOR, SCALAR = "<tensor>", "<scalar>"
#: A named value: the model's one input (``{"input": [...]}``), or a table's feature.
NamedValue = Annotated[
    Annotated[schemas.Instance, Tag(TENSOR)] | Annotated[FiniteFloat | str | None, Tag(SCALAR)],
    Discriminator(_value_form),
]


def _columns_form(value: Any) -> str:
    return NAMED if isinstance(value, dict) else BATCH


#: One instance: a nested array of the input's shape, an image file ``{"b64": ...}``, a
#: string, either under the input's name (``{"<input name>": ...}``), or a table's named
#: features.
Instance = Annotated[
    Annotated[Row, Tag(RANKS[0])]
    | Annotated[Matrix, Tag(RANKS[1])]
    | Annotated[Tensor3, Tag(RANKS[2])]
    | Annotated[Tensor4, Tag(RANKS[3])]
    | Annotated[ImageFile, Tag(FILE)]
    | Annotated[dict[str, NamedValue], NOT_A_FILE, Tag(NAMED)]
    | Annotated[str, Tag(TEXT)],
    Discriminator(_form),
]


def _column_form(value: Any) -> str:
    first = value[0] if isinstance(value, list) and value else None
    return SCALAR if isinstance(first, int | float) and not isinstance(first, bool) else BATCH


#: One named column: the instances' values of one input (numbers for an input of shape [1]).
Column = Annotated[
    Annotated[Batch, Tag(BATCH)] | Annotated[list[FiniteFloat], Field(min_length=1), Tag(SCALAR)],
    Discriminator(_column_form),
]
#: The columnar input: the instances, or ``{"<input name>": [...]}`` (for a model of several
#: inputs, one column per input).
Columns = Annotated[
    Annotated[Batch, Tag(BATCH)] | Annotated[dict[str, Column], Tag(NAMED)],
    Discriminator(_columns_form),
]


class PredictRequest(StrictBody):
    """``:predict``: ``instances`` (row format) or ``inputs`` (columnar format), not both."""

    model_config = ConfigDict(
        title="TFServingPredictRequest",
        json_schema_extra={
            "examples": [
                {"instances": [[15.0, 0.0], [29.5, 14.2]]},
                {"instances": [{"b64": "iVBORw0KGgoAAAANSUhEUg..."}]},
                {"signature_name": "serving_default", "inputs": {"input": [[15.0, 0.0]]}},
            ]
        },
    )

    signature_name: str | None = Field(default=None, description="Only serving_default.")
    instances: list[Instance] | None = Field(default=None, min_length=1)
    inputs: Columns | None = None


class ExplainRequest(PredictRequest):
    """``:explain``: ``:predict``'s ``instances`` or ``inputs`` (a table's rows or objects of
    its named features, images, strings, token ids), and optionally the classes to explain."""

    model_config = ConfigDict(
        title="V1ExplainRequest",
        json_schema_extra={
            "examples": [
                {"instances": [[15.0, 0.5]]},
                {"instances": [{"x1": 15.0, "x2": 0.5}], "classes": ["0", "1"]},
            ]
        },
    )

    classes: list[str | int] | None = CLASSES_FIELD
    calibrated: bool = CALIBRATED_FIELD


#: One ``tf.Example`` as TF Serving's JSON has it: feature name -> value. A table's
#: features each take a number, a string or null; a model's one input, named (any name),
#: takes what an instance of ``:predict`` does (a nested array, an image file, a string);
#: a model of several inputs, one value per input.
Example = Annotated[dict[str, NamedValue], NOT_A_FILE]


class ClassifyRequest(StrictBody):
    """``:classify``: ``examples``, and optionally a ``context`` shared by all of them."""

    model_config = ConfigDict(
        title="TFServingClassifyRequest",
        json_schema_extra={
            "examples": [
                {"examples": [{"x1": 15.0, "x2": 0.0}, {"x1": 29.5, "x2": 14.2}]},
                {
                    "signature_name": "serving_default",
                    "context": {"x2": 0.0},
                    "examples": [{"x1": 15.0}],
                },
                {"examples": [{"image": {"b64": "iVBORw0KGgoAAAANSUhEUg..."}}]},
            ]
        },
    )

    signature_name: str | None = Field(default=None, description="Only serving_default.")
    context: Example | None = Field(
        default=None,
        description="Features shared by every example, merged into each; an example's own "
        "value for a feature wins.",
    )
    examples: list[Example] = Field(min_length=1)


# --- response bodies (documentation) ----------------------------------------------------


class RowPredictResponse(BaseModel):
    """Row format: one probability vector per instance."""

    model_config = ConfigDict(
        json_schema_extra={
            "examples": [
                {
                    "predictions": [
                        [
                            0.9999998733199519,
                            1.8161881414997446e-11,
                            1.9967804494029372e-10,
                            1.2646220828665403e-7,
                        ]
                    ]
                }
            ]
        }
    )

    predictions: list[list[float]]


class ColumnarPredictResponse(BaseModel):
    """Columnar format: the output tensor."""

    model_config = ConfigDict(
        title="TFServingColumnarPredictResponse",
        json_schema_extra={
            "examples": [
                {
                    "outputs": [
                        [
                            0.9999998733199519,
                            1.8161881414997446e-11,
                            1.9967804494029372e-10,
                            1.2646220828665403e-7,
                        ]
                    ]
                }
            ]
        },
    )

    outputs: list[list[float]]


class ClassifyResponse(BaseModel):
    """``ClassificationResult`` as JSON: per example, every class with its probability."""

    model_config = ConfigDict(
        title="TFServingClassifyResponse",
        json_schema_extra={
            "examples": [
                {
                    "result": [
                        [
                            ["0", 0.9997166017760011],
                            ["1", 3.078405200423006e-6],
                            ["2", 9.16777843249471e-6],
                            ["3", 0.00027115204036613294],
                        ]
                    ]
                }
            ]
        },
    )

    result: list[list[list[str | float]]] = Field(
        description="Per example, one [label, score] pair per class, in class_names order."
    )


class Status(BaseModel):
    """A version's status: ``OK``, or why it was refused."""

    error_code: str
    error_message: str


class ModelVersionStatus(BaseModel):
    """One version's state."""

    version: str
    state: str
    status: Status


class ModelStatusResponse(BaseModel):
    """``GetModelStatusResponse`` as JSON, with KServe V1's ``name`` and ``ready``."""

    model_config = ConfigDict(
        json_schema_extra={
            "examples": [
                {
                    "name": "blobs",
                    "ready": True,
                    "model_version_status": [
                        {
                            "version": "1",
                            "state": "AVAILABLE",
                            "status": {"error_code": "OK", "error_message": ""},
                        }
                    ],
                }
            ]
        }
    )

    name: str
    ready: bool = Field(description="True when a version (this one, if named) is AVAILABLE.")
    model_version_status: list[ModelVersionStatus]


class ModelMetadataResponse(BaseModel):
    """``GetModelMetadataResponse`` as JSON."""

    model_config = ConfigDict(
        json_schema_extra={
            "examples": [
                {
                    "model_spec": {"name": "blobs", "signature_name": "", "version": "1"},
                    "metadata": {
                        "signature_def": {
                            "signature_def": {
                                "serving_default": {
                                    "inputs": {
                                        "input": {
                                            "dtype": "DT_FLOAT",
                                            "tensor_shape": {
                                                "dim": [
                                                    {"size": "-1", "name": ""},
                                                    {"size": "2", "name": ""},
                                                ],
                                                "unknown_rank": False,
                                            },
                                            "name": "serving_default_input:0",
                                        }
                                    },
                                    "outputs": {
                                        "probabilities": {
                                            "dtype": "DT_DOUBLE",
                                            "tensor_shape": {
                                                "dim": [
                                                    {"size": "-1", "name": ""},
                                                    {"size": "4", "name": ""},
                                                ],
                                                "unknown_rank": False,
                                            },
                                            "name": "probabilities:0",
                                        }
                                    },
                                    "method_name": "tensorflow/serving/predict",
                                }
                            }
                        }
                    },
                }
            ]
        }
    )

    model_spec: dict[str, str]
    metadata: dict[str, Any]


# --- predict ----------------------------------------------------------------------------


def _one_name(named: dict[str, Any], where: str) -> Any:
    if len(named) != 1:
        raise InvalidInput(
            f"expected {where} to name the model's one input, received {len(named)} names "
            f"{sorted(named)[:5]}"
        )
    return next(iter(named.values()))


def _named(row: dict[str, Any], where: str) -> Any:
    """A named instance: the one input's value (a tensor or file), or named features."""
    if any(isinstance(value, list | ImageFile) for value in row.values()):
        return _one_name(row, where)
    return row


def check_signature(name: str | None) -> None:
    """The one signature, by its name; an empty name means it, as in TF Serving."""
    if name not in (None, "", SIGNATURE):
        raise InvalidInput(
            f"expected signature_name {SIGNATURE!r} (the only signature), received {name[:64]!r}"
        )


def _rows(body: PredictRequest, several: bool = False) -> tuple[Any, str]:
    """The instances, and the key the answer goes under; ``several``: the model has several
    inputs, which rows name in objects and columns in the ``inputs`` dict."""
    check_signature(body.signature_name)
    if body.instances is not None and body.inputs is not None:
        raise InvalidInput(
            "expected either 'instances' (row format) or 'inputs' (columnar format), received both"
        )
    if body.instances is not None:
        if several:
            return body.instances, "predictions"
        rows = [
            _named(row, f"instances[{i}]") if isinstance(row, dict) else row
            for i, row in enumerate(body.instances)
        ]
        return rows, "predictions"
    if body.inputs is not None:
        columns = body.inputs
        if several and isinstance(columns, dict):
            return NamedColumns(columns, "inputs"), "outputs"
        return (_one_name(columns, "inputs") if isinstance(columns, dict) else columns), "outputs"
    raise InvalidInput(
        "expected 'instances' (row format) or 'inputs' (columnar format), received neither"
    )


async def _predict(
    request: Request, name: str, version: str | None, label: str | None = None
) -> JSONResponse:
    plane = dataplane(request)
    if bodies.is_image(request):
        images = await bodies.image(request)
        result = await plane.predict(images, model=name, version=version, label=label)
        return JSONResponse({"predictions": result.probabilities})
    body = await bodies.read(request, PredictRequest, plane.max_json_depth)
    served = plane.route(name, version, label)
    several = served.metadata.input_spec.inputs is not None
    rows, key = _rows(body, several)
    where = "instances" if key == "predictions" else "inputs"
    instances = rows if isinstance(rows, NamedColumns) else core_instances(rows, where)
    result = await plane.predict(instances, served=served)
    return JSONResponse({key: result.probabilities})


TAGS: list[str | Any] = ["v1 (TF Serving REST)"]
#: As TF Serving, every invalid request is a 400.
Route, HotRoute = route_classes(invalid_input_status=400)
router = APIRouter(route_class=Route, tags=TAGS)
#: The hot endpoints: see service.http.routing.DirectRoute.
direct = APIRouter(route_class=HotRoute, tags=TAGS)

PREDICT = {
    "response_model": RowPredictResponse | ColumnarPredictResponse,
    "responses": error_responses(400, 404, 413, 503),
    "openapi_extra": openapi_body(PredictRequest),
}


@direct.post("/v1/models/{name}:predict", **PREDICT)  # type: ignore[arg-type]
async def predict(name: str, request: Request) -> JSONResponse:
    """Class probabilities from the newest version (row or columnar format).

    For an image model, the body may also be one PNG or JPEG file (``Content-Type:
    image/png`` or ``image/jpeg``): the answer is for that one image.
    """
    return await _predict(request, name, None)


@direct.post("/v1/models/{name}/versions/{version}:predict", **PREDICT)  # type: ignore[arg-type]
async def predict_version(name: str, version: str, request: Request) -> JSONResponse:
    """Class probabilities from one version (row or columnar format).

    For an image model, the body may also be one PNG or JPEG file (``Content-Type:
    image/png`` or ``image/jpeg``): the answer is for that one image.
    """
    return await _predict(request, name, version)


@direct.post("/v1/models/{name}/labels/{label}:predict", **PREDICT)  # type: ignore[arg-type]
async def predict_label(name: str, label: str, request: Request) -> JSONResponse:
    """Class probabilities from the version the label names (``serving.json``), as TF
    Serving's version labels; 404 naming the labels there are for an unknown one."""
    return await _predict(request, name, None, label)


# --- classify ---------------------------------------------------------------------------


def _check_example(example: dict[str, Any], i: int, table: bool) -> None:
    """Refuse an empty example, and for a table a feature given more than one value."""
    if not example:
        raise InvalidInput(
            f"expected each example to name the model's features or its input, received an "
            f"empty object in examples[{i}]"
        )
    if table and len(example) > 1:
        for feature, value in example.items():
            if isinstance(value, list | ImageFile):
                what = "a list" if isinstance(value, list) else "an image file"
                raise InvalidInput(
                    f"expected one value (a number, a string or null) for each feature of "
                    f"the table, received {what} for {feature[:64]!r} in examples[{i}]"
                )


def _examples(body: ClassifyRequest, served: LoadedVersion) -> list[Any]:
    """Each example with the context merged in (its own values win, as in TF Serving), in
    ``:predict``'s terms: named features or inputs as they are, or the model's one input
    (named by any name) as its value."""
    check_signature(body.signature_name)
    context = body.context or {}
    merged = [{**context, **example} for example in body.examples]
    table = served.metadata.columns is not None
    for i, example in enumerate(merged):
        _check_example(example, i, table)
    if served.metadata.input_spec.inputs is not None:  # several inputs, each named
        return merged
    return [_named(example, f"examples[{i}]") for i, example in enumerate(merged)]


def _in_examples(exc: InvalidInput) -> InvalidInput:
    """The data plane's error, naming the request's ``examples`` where it says ``instances``."""
    return type(exc)(exc.message.replace("instances[", "examples["), detail=exc.detail)


async def classify_examples(
    plane: DataPlane, body: ClassifyRequest, served: LoadedVersion
) -> list[list[tuple[str, float]]]:
    """Per example, every class (``class_names`` order) with its probability: Classify,
    over REST and gRPC alike."""
    examples = _examples(body, served)
    try:
        result = await plane.predict(core_instances(examples, "examples"), served=served)
    except InvalidInput as exc:
        raise _in_examples(exc) from None
    labels = served.metadata.class_names
    return [list(zip(labels, row, strict=True)) for row in result.probabilities.tolist()]


async def _classify(
    request: Request, name: str, version: str | None, label: str | None = None
) -> JSONResponse:
    plane = dataplane(request)
    body = await bodies.read(request, ClassifyRequest, plane.max_json_depth)
    served = plane.route(name, version, label)
    return JSONResponse({"result": await classify_examples(plane, body, served)})


CLASSIFY = {
    "response_model": ClassifyResponse,
    "responses": error_responses(400, 404, 413, 503),
    "openapi_extra": openapi_body(ClassifyRequest),
}


@direct.post("/v1/models/{name}:classify", **CLASSIFY)  # type: ignore[arg-type]
async def classify(name: str, request: Request) -> JSONResponse:
    """Every class and its probability for each example, from the newest version."""
    return await _classify(request, name, None)


@direct.post("/v1/models/{name}/versions/{version}:classify", **CLASSIFY)  # type: ignore[arg-type]
async def classify_version(name: str, version: str, request: Request) -> JSONResponse:
    """Every class and its probability for each example, from one version."""
    return await _classify(request, name, version)


@direct.post("/v1/models/{name}/labels/{label}:classify", **CLASSIFY)  # type: ignore[arg-type]
async def classify_label(name: str, label: str, request: Request) -> JSONResponse:
    """Every class and its probability for each example, from the labelled version."""
    return await _classify(request, name, None, label)


# --- explain (KServe V1) ----------------------------------------------------------------


async def _explain(request: Request, name: str, version: str | None) -> JSONResponse:
    plane = dataplane(request)
    body = await bodies.read(request, ExplainRequest, plane.max_json_depth)
    rows, key = _rows(body)
    where = "instances" if key == "predictions" else "inputs"
    result = await plane.explain(
        core_instances(rows, where),
        model=name,
        version=version,
        classes=body.classes,
        calibrated=body.calibrated,
    )
    return JSONResponse(explanations.body(result))


EXPLAIN = {
    "response_model": ExplainResponse,
    "responses": error_responses(400, 404, 413, 503),
    "openapi_extra": openapi_body(ExplainRequest),
}


@direct.post("/v1/models/{name}:explain", **EXPLAIN)  # type: ignore[arg-type]
async def explain(name: str, request: Request) -> JSONResponse:
    """KServe V1's explain: Shapley values of each instance's class probabilities (exact,
    or KernelSHAP's above ``SERVICE_EXPLAIN_MAX_FEATURES``), per feature of a table model,
    an image model's occlusion heat maps, or each token (step) of text, token ids or a
    sequence left out in turn, from the newest version (as ``/models/{name}/explain``)."""
    return await _explain(request, name, None)


@direct.post("/v1/models/{name}/versions/{version}:explain", **EXPLAIN)  # type: ignore[arg-type]
async def explain_version(name: str, version: str, request: Request) -> JSONResponse:
    """KServe V1's explain, from one version."""
    return await _explain(request, name, version)


# --- what TF Serving has and this server does not -----------------------------------------

#: Documented as what they answer: a 501 error body, with an example.
UNSUPPORTED = {
    "status_code": 501,
    "response_model": ErrorResponse,
    "responses": {
        501: {
            "description": "Not implemented here.",
            "content": {
                "application/json": {
                    "example": {
                        "error": "expected a :classify or :predict request, received a "
                        ":regress request (a classifier has no regression signature): not "
                        "implemented here"
                    }
                }
            },
        }
    },
}


def _unsupported(what: str, instead: str) -> NotImplementedHere:
    return NotImplementedHere(f"expected {instead}, received {what}: not implemented here")


REGRESS = "a :regress request (a classifier has no regression signature)"
CLASSIFY_INSTEAD = "a :classify or :predict request"


@router.post("/v1/models/{name}:regress", **UNSUPPORTED)  # type: ignore[arg-type]
async def regress(name: str) -> None:
    """TF Serving's Regress API: 501; a classifier has no regression signature, use
    ``:classify`` or ``:predict``."""
    raise _unsupported(REGRESS, CLASSIFY_INSTEAD)


@router.post("/v1/models/{name}/versions/{version}:regress", **UNSUPPORTED)  # type: ignore[arg-type]
async def regress_version(name: str, version: str) -> None:
    """TF Serving's Regress API: 501; a classifier has no regression signature, use
    ``:classify`` or ``:predict``."""
    raise _unsupported(REGRESS, CLASSIFY_INSTEAD)


@router.post("/v1/models/{name}/labels/{label}:regress", **UNSUPPORTED)  # type: ignore[arg-type]
async def regress_label(name: str, label: str) -> None:
    """TF Serving's Regress API: 501; a classifier has no regression signature, use
    ``:classify`` or ``:predict``."""
    raise _unsupported(REGRESS, CLASSIFY_INSTEAD)


# --- status and metadata ----------------------------------------------------------------


def _status(status: VersionStatus) -> dict[str, Any]:
    refused = status.state is State.END and bool(status.error)
    return {
        "version": str(status.version),
        "state": status.state.value,
        "status": {
            "error_code": "UNKNOWN" if refused else "OK",
            "error_message": status.error,
        },
    }


def status_body(plane: DataPlane, name: str, version: str | None) -> dict[str, Any]:
    """``GetModelStatusResponse`` as JSON, with KServe V1's ``name`` and ``ready``: what
    REST and gRPC's GetModelStatus answer."""
    statuses = plane.statuses(name)
    if version is not None:
        statuses = [s for s in statuses if str(s.version) == version]
        if not statuses:
            raise VersionNotFound(
                f"expected a version of model {name!r} the server has loaded or tried "
                f"({[s.version for s in plane.statuses(name)]}), received {version[:40]!r}"
            )
    ready = any(s.state is State.AVAILABLE for s in statuses)
    return {"name": name, "ready": ready, "model_version_status": [_status(s) for s in statuses]}


def _model_status(request: Request, name: str, version: str | None) -> JSONResponse:
    return JSONResponse(status_body(dataplane(request), name, version))


@router.get(
    "/v1/models/{name}", response_model=ModelStatusResponse, responses=error_responses(404, 503)
)
async def model_status(name: str, request: Request) -> JSONResponse:
    """The state of every version of the model the server has loaded or tried."""
    return _model_status(request, name, None)


@router.get(
    "/v1/models/{name}/versions/{version}",
    response_model=ModelStatusResponse,
    responses=error_responses(404, 503),
)
async def version_status(name: str, version: str, request: Request) -> JSONResponse:
    """The state of one version."""
    return _model_status(request, name, version)


@router.get(
    "/v1/models/{name}/labels/{label}",
    response_model=ModelStatusResponse,
    responses=error_responses(404, 503),
)
async def label_status(name: str, label: str, request: Request) -> JSONResponse:
    """The state of the version the label names."""
    version = dataplane(request).resolve(name, label=label).version
    return _model_status(request, name, str(version))


#: TensorFlow's names for the model input dtypes.
TF_DTYPES = {"float32": "DT_FLOAT", "int32": "DT_INT32", "int64": "DT_INT64"}


def _tensor(dtype: str, shape: list[int], name: str) -> dict[str, Any]:
    dims = [{"size": str(size), "name": ""} for size in [-1, *shape]]
    return {"dtype": dtype, "tensor_shape": {"dim": dims, "unknown_rank": False}, "name": name}


def _input_tensor(spec: InputSpec, name: str) -> dict[str, Any]:
    if spec.kind == "text":  # one string an instance
        return _tensor("DT_STRING", [], f"{SIGNATURE}_{name}:0")
    return _tensor(TF_DTYPES[spec.dtype], spec.shape, f"{SIGNATURE}_{name}:0")


def signature_metadata(served: LoadedVersion) -> dict[str, Any]:
    """The version's ``serving_default`` signature, as GetModelMetadata answers it (over
    REST and gRPC alike)."""
    meta = served.metadata
    spec = meta.input_spec
    pairs = [(s.name, s) for s in spec.inputs] if spec.inputs is not None else [(INPUT, spec)]
    signature = {
        # The model's input dtype; the probabilities are computed and sent in float64.
        "inputs": {name: _input_tensor(each, name) for name, each in pairs},
        "outputs": {OUTPUT: _tensor("DT_DOUBLE", [len(meta.class_names)], f"{OUTPUT}:0")},
        "method_name": "tensorflow/serving/predict",
    }
    return {
        "model_spec": {"name": served.name, "signature_name": "", "version": str(served.version)},
        "metadata": {"signature_def": {"signature_def": {SIGNATURE: signature}}},
    }


@router.get(
    "/v1/models/{name}/metadata",
    response_model=ModelMetadataResponse,
    responses=error_responses(404, 503),
)
async def model_metadata(name: str, request: Request) -> JSONResponse:
    """The newest version's signature: its input and output tensors."""
    plane = dataplane(request)
    return JSONResponse(signature_metadata(plane.resolve(name)))


@router.get(
    "/v1/models/{name}/versions/{version}/metadata",
    response_model=ModelMetadataResponse,
    responses=error_responses(404, 503),
)
async def version_metadata(name: str, version: str, request: Request) -> JSONResponse:
    """One version's signature."""
    plane = dataplane(request)
    return JSONResponse(signature_metadata(plane.resolve(name, version)))


@router.get(
    "/v1/models/{name}/labels/{label}/metadata",
    response_model=ModelMetadataResponse,
    responses=error_responses(404, 503),
)
async def label_metadata(name: str, label: str, request: Request) -> JSONResponse:
    """The labelled version's signature."""
    plane = dataplane(request)
    return JSONResponse(signature_metadata(plane.resolve(name, label=label)))
