"""Open Inference Protocol (KServe V2) over HTTP, so Triton and KServe clients work unchanged.

Routes and protocol encoding only: predictions come from the data plane, model state
from the registry. Besides the required API (health, server and model metadata,
``infer``), it speaks Triton's extensions as ``tritonclient.http`` uses them:

- binary tensor data (``service.protocols.v2_tensors``): binary inputs and outputs, the client's
  default;
- classification: ``"classification": k`` on a requested output gives each row's
  top k classes as ``"<value>:<index>:<label>"``;
- model repository: ``POST /v2/repository/index``, ``.../models/{name}/load`` (load
  or reload now, retrying refused versions) and ``.../unload``.

Each model has one input (any name; ``input`` in its metadata) of shape
``[N, input_dim]`` and two outputs of shape ``[N, classes]``: ``probabilities``
(the float64 softmax, sent in the input's datatype) and ``logits``. FP64 inputs give
FP64 outputs, bit-identical to ``/predict``; FP32 inputs give ``/predict``'s
probabilities rounded to float32. Errors are ``{"error": "..."}``; invalid input is 400.
"""

from __future__ import annotations

from typing import Annotated, Any

import numpy as np
import numpy.typing as npt
import orjson
from fastapi import APIRouter, Request
from pydantic import BaseModel, ConfigDict, Discriminator, Field, Tag
from starlette.responses import Response

from service import __version__
from service.dataplane import ScoredBatch
from service.errors import InvalidInput
from service.http import bodies
from service.http.bodies import openapi_body
from service.http.responses import JSONResponse
from service.http.routing import route_classes
from service.http.state import dataplane
from service.inference.images import EncodedImages
from service.inference.named import NamedColumns
from service.inference.text import Texts
from service.protocols import v2_tensors as tensors
from service.protocols.schemas import (
    FILE,
    FiniteFloat,
    Matrix,
    Row,
    Tensor3,
    Tensor4,
    error_responses,
)
from service.repository.artifact import InputSpec, NamedInput
from service.repository.registry import LoadedVersion, State

HEADER_LENGTH = b"inference-header-content-length"
INPUT = "input"
#: Image models also take their instances as encoded PNG/JPEG files, one per element.
IMAGE_INPUT = {"name": "image", "datatype": "BYTES", "shape": [-1]}
OUTPUTS = ("probabilities", "logits")
EXTENSIONS = ["binary_tensor_data", "classification", "model_repository"]
PLATFORMS = {"litert": "litert_tflite", "keras": "keras_keras"}

# --- request bodies ---------------------------------------------------------------------

#: A parameter value: the protocol allows strings, numbers and booleans.
Parameters = dict[str, bool | int | float | str]


class _Body(BaseModel):
    model_config = ConfigDict(strict=True, extra="ignore")


#: Tags of a tensor's data by its nesting depth (flat, or nested up to [N, a, b, c, d]).
DEPTHS = tuple(f"<depth {d}>" for d in range(1, 6))


def _data_form(value: Any) -> str:
    """A tensor's data: numbers, flat or nested (by depth), or strings (BYTES)."""
    if isinstance(value, list) and value and isinstance(value[0], str):
        return FILE
    depth = 0
    while isinstance(value, list):
        depth += 1
        value = value[0] if value else None
    return DEPTHS[min(max(depth, 1), len(DEPTHS)) - 1]


class InferInput(_Body):
    """One input tensor: its data inline, or ``binary_data_size`` bytes after the header."""

    name: str = Field(max_length=256)
    shape: list[Annotated[int, Field(ge=0)]] = Field(min_length=1, max_length=8)
    datatype: str = Field(
        max_length=32,
        description="FP32 or FP64 (INT32 or INT64 for integer inputs); BYTES for image files.",
    )
    parameters: Parameters = Field(default_factory=dict)
    data: (
        Annotated[
            Annotated[list[FiniteFloat], Tag(DEPTHS[0])]
            | Annotated[list[Row], Tag(DEPTHS[1])]
            | Annotated[list[Matrix], Tag(DEPTHS[2])]
            | Annotated[list[Tensor3], Tag(DEPTHS[3])]
            | Annotated[list[Tensor4], Tag(DEPTHS[4])]
            | Annotated[list[str], Tag(FILE)],
            Discriminator(_data_form),
        ]
        | None
    ) = Field(
        default=None,
        description="Row-major values, flat or nested; for BYTES, base64 of each image file.",
    )


class RequestedOutput(_Body):
    """An output to return, with ``binary_data`` and ``classification`` parameters."""

    name: str = Field(max_length=256, description="probabilities or logits.")
    parameters: Parameters = Field(default_factory=dict)


class InferenceRequest(_Body):
    """``POST /v2/models/{name}/infer``: the JSON header of an inference request."""

    model_config = ConfigDict(
        json_schema_extra={
            "examples": [
                {
                    "id": "42",
                    "inputs": [
                        {
                            "name": "input",
                            "shape": [2, 2],
                            "datatype": "FP32",
                            "data": [15.0, 0.0, 29.5, 14.2],
                        }
                    ],
                    "outputs": [{"name": "probabilities"}],
                },
                {
                    "inputs": [
                        {
                            "name": "input",
                            "shape": [1, 2],
                            "datatype": "FP64",
                            "data": [[15.0, 0.0]],
                        }
                    ],
                    "outputs": [{"name": "probabilities", "parameters": {"classification": 2}}],
                },
            ]
        }
    )

    id: str | None = Field(default=None, max_length=256, description="Echoed in the response.")
    parameters: Parameters = Field(
        default_factory=dict,
        description="binary_data_output (bool); calibrated (bool, default true).",
    )
    inputs: list[InferInput] = Field(min_length=1, max_length=16)
    outputs: list[RequestedOutput] | None = Field(default=None, max_length=16)


class RepositoryIndexRequest(_Body):
    """``POST /v2/repository/index``: optionally only the ready versions."""

    model_config = ConfigDict(json_schema_extra={"examples": [{"ready": True}]})

    ready: bool = False


class LoadRequest(_Body):
    """``POST /v2/repository/models/{name}/load``; config and file overrides are refused."""

    model_config = ConfigDict(json_schema_extra={"examples": [{}]})

    parameters: Parameters = Field(
        default_factory=dict,
        # refused by load_model (400) with a message saying why, rather than by pydantic
        json_schema_extra={"maxProperties": 0},
        description="None: configuration and file overrides are not supported.",
    )


# --- response bodies (documentation) ----------------------------------------------------


class OutputTensor(BaseModel):
    """One output tensor: its data inline, or ``binary_data_size`` bytes after the header."""

    name: str = Field(description="probabilities or logits.")
    datatype: str = Field(description="The input's datatype; BYTES for classification.")
    shape: list[int]
    parameters: dict[str, int] | None = Field(
        default=None, description="binary_data_size, for an output sent as binary data."
    )
    data: list[float] | list[str] | None = Field(
        default=None,
        description="Row-major values; with classification, '<value>:<index>:<label>' strings.",
    )


class InferenceResponse(BaseModel):
    """The answer of ``infer``: JSON, or the JSON header of binary outputs."""

    model_config = ConfigDict(
        json_schema_extra={
            "examples": [
                {
                    "model_name": "blobs",
                    "model_version": "1",
                    "id": "42",
                    "outputs": [
                        {
                            "name": "probabilities",
                            "datatype": "FP64",
                            "shape": [1, 4],
                            "data": [0.99999987, 1.8e-11, 2.0e-10, 1.26e-7],
                        }
                    ],
                }
            ]
        }
    )

    model_name: str
    model_version: str
    id: str | None = Field(default=None, description="The request's id, when it had one.")
    outputs: list[OutputTensor]


class TensorMetadata(BaseModel):
    """A tensor's name, datatype and shape (-1: any size)."""

    name: str
    datatype: str
    shape: list[int]


class ModelMetadata(BaseModel):
    """``GET /v2/models/{name}``."""

    model_config = ConfigDict(
        json_schema_extra={
            "examples": [
                {
                    "name": "blobs",
                    "versions": ["1"],
                    "platform": "litert_tflite",
                    "inputs": [{"name": "input", "datatype": "FP32", "shape": [-1, 2]}],
                    "outputs": [
                        {"name": "probabilities", "datatype": "FP32", "shape": [-1, 4]},
                        {"name": "logits", "datatype": "FP32", "shape": [-1, 4]},
                    ],
                }
            ]
        }
    )

    name: str
    versions: list[str]
    platform: str
    inputs: list[TensorMetadata]
    outputs: list[TensorMetadata]


class ServerMetadata(BaseModel):
    """``GET /v2``."""

    model_config = ConfigDict(
        json_schema_extra={
            "examples": [
                {
                    "name": "softmax-serving",
                    "version": "0.1.0",
                    "extensions": ["binary_tensor_data", "classification", "model_repository"],
                }
            ]
        }
    )

    name: str
    version: str
    extensions: list[str]


class ServerLiveResponse(BaseModel):
    """``GET /v2/health/live``."""

    model_config = ConfigDict(json_schema_extra={"examples": [{"live": True}]})

    live: bool


class ServerReadyResponse(BaseModel):
    """``GET /v2/health/ready``."""

    model_config = ConfigDict(json_schema_extra={"examples": [{"ready": True}]})

    ready: bool


class ModelReadyResponse(BaseModel):
    """``GET /v2/models/{name}[/versions/{version}]/ready``."""

    model_config = ConfigDict(json_schema_extra={"examples": [{"name": "blobs", "ready": True}]})

    name: str
    ready: bool


class RepositoryEntry(BaseModel):
    """One version in ``POST /v2/repository/index``."""

    model_config = ConfigDict(
        json_schema_extra={
            "examples": [{"name": "blobs", "version": "1", "state": "READY", "reason": ""}]
        }
    )

    name: str
    version: str
    state: str
    reason: str


# --- parameters -------------------------------------------------------------------------


def flag(parameters: Parameters, key: str, default: bool, where: str) -> bool:
    """The boolean parameter ``key`` (``default`` when absent), or a 400 naming ``where``."""
    value = parameters.get(key, default)
    if not isinstance(value, bool):
        raise InvalidInput(
            f"expected parameter {key!r} of {where} to be true or false, received {value!r}"
        )
    return value


def _count(parameters: Parameters, where: str) -> int | None:
    value = parameters.get("classification")
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        raise InvalidInput(
            f"expected parameter 'classification' of {where} to be a positive integer, "
            f"received {value!r}"
        )
    return value


# --- inference --------------------------------------------------------------------------


def _binary_size(given: InferInput) -> int | None:
    if any(key.startswith("shared_memory") for key in given.parameters):
        raise InvalidInput(
            f"expected the data of input {given.name!r} in the request, received a shared "
            "memory region: shared memory is not supported"
        )
    size = given.parameters.get("binary_data_size")
    if size is not None and (isinstance(size, bool) or not isinstance(size, int) or size < 0):
        raise InvalidInput(
            f"expected binary_data_size of input {given.name!r} to be a byte count, "
            f"received {size!r}"
        )
    return size


def _named_inputs(
    body: InferenceRequest, tail: tensors.BinaryTail, inputs: list[NamedInput]
) -> tuple[NamedColumns, str]:
    """A model of several inputs: each named input tensor (``[N, *shape]``, or BYTES ``[N]``
    for a string input) as a column; FP64 outputs when a float input came as FP64."""
    specs = {spec.name: spec for spec in inputs}
    columns: dict[str, Any] = {}
    datatype = "FP32"
    for given in body.inputs:
        spec = specs.get(given.name)
        if spec is None:
            raise InvalidInput(
                f"expected only the model's inputs {list(specs)}, received unknown input "
                f"{given.name[:64]!r}"
            )
        if given.name in columns:
            raise InvalidInput(f"expected each input once, received {given.name!r} twice")
        size = _binary_size(given)
        if spec.kind == "text":
            if given.datatype != "BYTES":
                raise InvalidInput(
                    f"expected input {given.name!r} of datatype BYTES (strings), received "
                    f"{given.datatype[:20]}"
                )
            texts = tensors.decode_strings(given.name, given.shape, given.data, size, tail)
            columns[given.name] = list(texts.strings)
            continue
        one = spec.shape == [1] and len(given.shape) == 1
        if (given.shape[1:] != spec.shape and not one) or given.shape[0] == 0:
            raise InvalidInput(
                f"expected input {given.name!r} of shape [N, {', '.join(map(str, spec.shape))}] "
                f"with N >= 1, received {given.shape}"
            )
        accepted = tensors.accepted_datatypes(spec.dtype, spec.id_range is not None)
        x = tensors.decode_input(
            given.name, given.datatype, given.shape, given.data, size, tail, accepted
        )
        columns[given.name] = x.reshape(len(x), *spec.shape)
        datatype = "FP64" if given.datatype == "FP64" else datatype
    tail.finish()
    return NamedColumns(columns, "the request's inputs"), datatype


def request_input(
    body: InferenceRequest, tail: tensors.BinaryTail, spec: InputSpec
) -> tuple[npt.NDArray[Any] | EncodedImages | Texts | NamedColumns, str]:
    """The one input as an ``[N, *shape]`` array (or image files, or strings), and its
    datatype; for a model of several inputs, each as a column (``_named_inputs``)."""
    if spec.inputs is not None:
        return _named_inputs(body, tail, spec.inputs)
    if len(body.inputs) != 1:
        raise InvalidInput(
            f"expected one input tensor ({INPUT!r}), received {len(body.inputs)}: "
            f"{[i.name for i in body.inputs]}"
        )
    given = body.inputs[0]
    size = _binary_size(given)
    if given.datatype == "BYTES" and spec.kind == "image":
        files = tensors.decode_files(given.name, given.shape, given.data, size, tail)
        tail.finish()
        return files, given.datatype
    if spec.kind == "text":
        if given.datatype != "BYTES":
            raise InvalidInput(
                f"expected input {given.name!r} of datatype BYTES (strings: this model takes "
                f"raw text), received {given.datatype}"
            )
        strings = tensors.decode_strings(given.name, given.shape, given.data, size, tail)
        tail.finish()
        return strings, given.datatype
    expected = [*spec.shape]
    steps = spec.variable and len(given.shape) == 1 + len(expected) and given.shape[1] > 0
    if steps:  # one length per request: a V2 tensor is rectangular
        expected[0] = given.shape[1]
    if given.shape[1:] != expected or given.shape[0] == 0:
        raise InvalidInput(
            f"expected input {given.name!r} of shape [N, {', '.join(map(str, expected))}] "
            f"with N >= 1, received {given.shape}"
        )
    accepted = tensors.accepted_datatypes(spec.dtype, spec.id_range is not None)
    if spec.kind == "image":
        accepted = (*accepted, "BYTES")
    x = tensors.decode_input(
        given.name, given.datatype, given.shape, given.data, size, tail, accepted
    )
    tail.finish()
    return x, given.datatype


def requested_outputs(body: InferenceRequest | None) -> list[tuple[str, bool, int | None]]:
    """(name, binary, classification count) of each output to return, in request order
    (every output, as JSON, for a request that is one image file)."""
    if body is None:
        return [(name, False, None) for name in OUTPUTS]
    binary_default = flag(body.parameters, "binary_data_output", False, "the request")
    if body.outputs is None:
        return [(name, binary_default, None) for name in OUTPUTS]
    seen: set[str] = set()
    wanted = []
    for output in body.outputs:
        if output.name not in OUTPUTS:
            raise InvalidInput(
                f"expected requested outputs among {list(OUTPUTS)}, received {output.name!r}"
            )
        if output.name in seen:
            raise InvalidInput(
                f"expected each output requested once, received {output.name!r} twice"
            )
        seen.add(output.name)
        where = f"output {output.name!r}"
        binary = flag(output.parameters, "binary_data", binary_default, where)
        wanted.append((output.name, binary, _count(output.parameters, where)))
    return wanted


def encode_outputs(
    request_id: str | None,
    result: ScoredBatch,
    datatype: str,
    wanted: list[tuple[str, bool, int | None]],
) -> tuple[dict[str, Any], list[bytes]]:
    """The response header and the binary tensors that follow it."""
    dtype = tensors.OUTPUT_DTYPES.get(datatype, np.dtype("<f4"))
    labels = result.model.metadata.class_names
    head: dict[str, Any] = {
        "model_name": result.model.name,
        "model_version": str(result.model.version),
    }
    if request_id is not None:
        head["id"] = request_id
    outputs, binaries = [], []
    for name, binary, k in wanted:
        source = result.probabilities if name == "probabilities" else result.logits
        values: npt.NDArray[Any] = np.asarray(source).astype(dtype)
        if k is not None:
            values = tensors.classify(values, k, labels)
        tensor: dict[str, Any] = {
            "name": name,
            "datatype": tensors.datatype_of(values),
            "shape": list(values.shape),
        }
        if binary:
            data = tensors.to_bytes(values)
            tensor["parameters"] = {"binary_data_size": len(data)}
            binaries.append(data)
        else:
            flat = values.ravel()
            tensor["data"] = flat.tolist() if values.dtype.kind == "U" else flat
        outputs.append(tensor)
    head["outputs"] = outputs
    return head, binaries


async def _infer(request: Request, name: str, version: str | None) -> Response:
    plane = dataplane(request)
    if bodies.is_image(request):
        served = plane.route(name, version)
        x: npt.NDArray[Any] | EncodedImages | Texts | NamedColumns = await bodies.image(request)
        request_id, datatype, calibrated, wanted = None, "BYTES", True, requested_outputs(None)
    else:
        raw = await request.body()
        header, tail = tensors.split_body(raw, bodies.header(request, HEADER_LENGTH))
        body = bodies.parse(InferenceRequest, header, plane.max_json_depth)
        served = plane.route(name, version)
        x, datatype = request_input(body, tensors.BinaryTail(tail), served.metadata.input_spec)
        calibrated = flag(body.parameters, "calibrated", True, "the request")
        request_id, wanted = body.id, requested_outputs(body)
    result = await plane.predict(x, calibrated=calibrated, served=served)
    head, binaries = encode_outputs(request_id, result, datatype, wanted)
    if not binaries:
        return JSONResponse(head)
    encoded = orjson.dumps(head, option=orjson.OPT_SERIALIZE_NUMPY)
    return Response(
        encoded + b"".join(binaries),
        media_type="application/octet-stream",
        headers={"Inference-Header-Content-Length": str(len(encoded))},
    )


#: As the Open Inference Protocol says, every invalid request is a 400.
Route, HotRoute = route_classes(invalid_input_status=400)
router = APIRouter(route_class=Route, tags=["v2 (Open Inference Protocol)"])
#: The hot endpoints: see service.http.routing.DirectRoute.
direct = APIRouter(route_class=HotRoute, tags=["v2 (Open Inference Protocol)"])

INFER = {
    "response_model": InferenceResponse,
    "responses": {
        200: {
            "description": "JSON, or with binary outputs the JSON header "
            "(Inference-Header-Content-Length bytes) followed by the tensors."
        },
        **error_responses(400, 404, 413, 503),
    },
    "openapi_extra": openapi_body(InferenceRequest),
}


@direct.post("/v2/models/{name}/infer", **INFER)  # type: ignore[arg-type]
async def infer(name: str, request: Request) -> Response:
    """Inference with the newest version of the model (JSON or binary tensor data).

    For an image model, the body may also be one PNG or JPEG file (``Content-Type:
    image/png`` or ``image/jpeg``): the answer is for that one image.
    """
    return await _infer(request, name, None)


@direct.post("/v2/models/{name}/versions/{version}/infer", **INFER)  # type: ignore[arg-type]
async def infer_version(name: str, version: str, request: Request) -> Response:
    """Inference with one version of the model (JSON or binary tensor data).

    For an image model, the body may also be one PNG or JPEG file (``Content-Type:
    image/png`` or ``image/jpeg``): the answer is for that one image.
    """
    return await _infer(request, name, version)


# --- health and metadata ----------------------------------------------------------------


@router.get("/v2", response_model=ServerMetadata)
async def server_metadata() -> JSONResponse:
    """The server's name, version and protocol extensions."""
    return JSONResponse(
        {"name": "softmax-serving", "version": __version__, "extensions": EXTENSIONS}
    )


# The protocol's JSON bodies, for clients that read them (KServe's); tritonclient reads
# only the status. Not live or not ready is never a 200 with false, but an error status.


@router.get("/v2/health/live", response_model=ServerLiveResponse)
async def server_live() -> JSONResponse:
    """200 while the process can answer."""
    return JSONResponse({"live": True})


@router.get("/v2/health/ready", response_model=ServerReadyResponse, responses=error_responses(503))
async def server_ready(request: Request) -> JSONResponse:
    """200 once the default model is loaded and warm (``/predict`` works); 503 before."""
    dataplane(request).check_ready()
    return JSONResponse({"ready": True})


def _tensor_metadata(name: str, spec: InputSpec) -> dict[str, Any]:
    if spec.kind == "text":  # one string per instance
        return {"name": name, "datatype": "BYTES", "shape": [-1]}
    return {
        "name": name,
        "datatype": tensors.MODEL_DATATYPES[spec.dtype],
        "shape": [-1, *spec.shape],
    }


def model_metadata_of(served: LoadedVersion, versions: list[int]) -> dict[str, Any]:
    """The protocol's model metadata of ``served`` (over HTTP and gRPC alike)."""
    classes = len(served.metadata.class_names)
    spec = served.metadata.input_spec
    return {
        "name": served.name,
        "versions": [str(v) for v in versions],
        "platform": PLATFORMS.get(served.runtime_name, served.runtime_name),
        "inputs": [_tensor_metadata(each.name, each) for each in spec.inputs]
        if spec.inputs is not None
        else [
            _tensor_metadata(INPUT, spec),
            *([IMAGE_INPUT] if spec.kind == "image" else []),
        ],
        "outputs": [{"name": o, "datatype": "FP32", "shape": [-1, classes]} for o in OUTPUTS],
    }


@router.get("/v2/models/{name}", response_model=ModelMetadata, responses=error_responses(404, 503))
async def model_metadata(name: str, request: Request) -> JSONResponse:
    """The model's versions, input and outputs (of its newest version)."""
    plane = dataplane(request)
    return JSONResponse(model_metadata_of(plane.resolve(name), plane.versions(name)))


@router.get(
    "/v2/models/{name}/versions/{version}",
    response_model=ModelMetadata,
    responses=error_responses(404, 503),
)
async def version_metadata(name: str, version: str, request: Request) -> JSONResponse:
    """One version's input and outputs."""
    plane = dataplane(request)
    served = plane.resolve(name, version)
    return JSONResponse(model_metadata_of(served, plane.versions(name)))


READY = {"response_model": ModelReadyResponse, "responses": error_responses(404, 503)}


@router.get("/v2/models/{name}/ready", **READY)  # type: ignore[arg-type]
async def model_ready(name: str, request: Request) -> JSONResponse:
    """200 when the model has a version serving; 404 otherwise."""
    served = dataplane(request).resolve(name)
    return JSONResponse({"name": served.name, "ready": True})


@router.get("/v2/models/{name}/versions/{version}/ready", **READY)  # type: ignore[arg-type]
async def version_ready(name: str, version: str, request: Request) -> JSONResponse:
    """200 when this version is serving; 404 otherwise (loading, refused, unloaded)."""
    served = dataplane(request).resolve(name, version)
    return JSONResponse({"name": served.name, "ready": True})


# --- model repository extension ---------------------------------------------------------

#: The repository index's names for the registry's states.
INDEX_STATES = {
    State.LOADING: "LOADING",
    State.AVAILABLE: "READY",
    State.UNLOADING: "UNLOADING",
    State.END: "UNAVAILABLE",
}


async def _optional_body(request: Request, model: type[bodies.M]) -> bodies.M:
    raw = await request.body()
    plane = dataplane(request)
    return bodies.parse(model, raw if raw.strip() else b"{}", plane.max_json_depth)


@router.post(
    "/v2/repository/index",
    response_model=list[RepositoryEntry],
    responses=error_responses(400, 503),
    openapi_extra=openapi_body(RepositoryIndexRequest, required=False),
)
async def repository_index(request: Request) -> JSONResponse:
    """Every model version the server knows of, with its state and, if refused, why."""
    body = await _optional_body(request, RepositoryIndexRequest)
    plane = dataplane(request)
    entries = []
    for name in plane.known_models():
        statuses = plane.statuses(name, missing_ok=True)
        if not statuses and not body.ready:
            entries.append(
                {"name": name, "version": "", "state": "UNAVAILABLE", "reason": "unloaded"}
            )
        for status in statuses:
            state = INDEX_STATES[status.state]
            if body.ready and state != "READY":
                continue
            reason = status.error or ("unloaded" if status.state is State.END else "")
            entry = {"name": name, "version": str(status.version), "state": state, "reason": reason}
            entries.append(entry)
    return JSONResponse(entries)


@router.post(
    "/v2/repository/models/{name}/load",
    response_class=Response,
    responses={
        200: {"description": "Loaded (empty body)."},
        **error_responses(400, 403, 404, 409, 503),
    },
    openapi_extra=openapi_body(LoadRequest, required=False),
)
async def load_model(name: str, request: Request) -> Response:
    """Load or reload the model now, retrying refused versions; 409 if a version is refused."""
    body = await _optional_body(request, LoadRequest)
    if body.parameters:
        raise InvalidInput(
            "expected a load request without parameters (configuration and file overrides "
            f"are not supported), received {sorted(body.parameters)}"
        )
    await dataplane(request).reload(name, "loading")
    return Response(status_code=200)


@router.post(
    "/v2/repository/models/{name}/unload",
    response_class=Response,
    responses={200: {"description": "Unloaded (empty body)."}, **error_responses(400, 403, 503)},
)
async def unload_model(name: str, request: Request) -> Response:
    """Stop serving every version of the model until it is loaded again (polling included)."""
    await dataplane(request).unload(name)
    return Response(status_code=200)
