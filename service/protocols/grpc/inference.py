"""The Open Inference Protocol (KServe V2) over gRPC: ``inference.GRPCInferenceService``.

A codec over the data plane, as ``service.protocols.v2`` is over HTTP, and built from
its pieces: each input of a ``ModelInferRequest`` becomes that protocol's binary tensor
(typed ``contents`` are packed into the same little-endian bytes ``raw_input_contents``
carry), so shapes, datatypes, image files, strings and named inputs are checked by the
same code (``v2.request_input``) with the same messages, and the outputs are encoded by
``v2.encode_outputs``. Outputs come back the way the inputs came: as
``raw_output_contents`` for raw inputs (what ``tritonclient.grpc`` sends and reads, and
what Triton answers), as typed ``contents`` for typed ones. The classification
extension works as over HTTP (``classification`` on a requested output).

Errors are the data plane's ``ServiceError`` s, turned into status codes by
``service.protocols.grpc.server``.
"""

from __future__ import annotations

import struct
from collections.abc import Mapping, Sequence
from typing import Any

import grpc
import numpy as np

from service import __version__
from service.dataplane import DataPlane
from service.errors import InvalidInput, NotFound, Unavailable
from service.protocols import v2
from service.protocols import v2_tensors as tensors
from service.protocols.grpc import predict_v2_pb2 as pb

SERVICE = "inference.GRPCInferenceService"
#: The field of ``InferTensorContents`` that holds each datatype's values.
CONTENTS = {
    "FP32": "fp32_contents",
    "FP64": "fp64_contents",
    "INT32": "int_contents",
    "INT64": "int64_contents",
    "BYTES": "bytes_contents",
}
#: Limits a JSON body has from its schema (``v2.InferenceRequest``).
MAX_TENSORS, MAX_DIMENSIONS, MAX_NAME = 16, 8, 256

Context = grpc.aio.ServicerContext[Any, Any]
Parameters = Mapping[str, pb.InferParameter] | Mapping[str, pb.ModelRepositoryParameter]


def _parameters(given: Parameters) -> v2.Parameters:
    """Protobuf parameters as the JSON protocol's values (unset ones left out)."""
    values: v2.Parameters = {}
    for key, parameter in given.items():
        kind = parameter.WhichOneof("parameter_choice")
        if kind is not None:
            value = getattr(parameter, kind)
            values[key] = value if isinstance(value, bool | int | float | str) else repr(value)
    return values


def pack(datatype: str, values: Sequence[Any]) -> bytes:
    """Typed values as the binary tensor of ``datatype`` (``v2_tensors``): little-endian
    numbers, or each ``BYTES`` element after its 4-byte length."""
    if datatype == "BYTES":
        return b"".join(struct.pack("<I", len(item)) + item for item in values)
    return np.asarray(values, dtype=tensors.DTYPES[datatype]).tobytes()


def check_shape(name: str, shape: list[int]) -> None:
    """What a JSON body's schema bounds of an input's shape: 1 to 8 sizes, none negative."""
    if not 1 <= len(shape) <= MAX_DIMENSIONS or min(shape) < 0:
        raise InvalidInput(
            f"expected the shape of input {name!r} as 1 to {MAX_DIMENSIONS} sizes "
            f"of 0 or more, received {shape[: MAX_DIMENSIONS + 1]}"
        )


def check_name(name: str) -> None:
    """Input names are echoed in messages: as a JSON body's schema, at most 256 characters."""
    if len(name) > MAX_NAME:
        raise InvalidInput(
            f"expected input names of at most {MAX_NAME} characters, received {name[:32]!r}..."
        )


def _packed(tensor: pb.ModelInferRequest.InferInputTensor) -> bytes:
    """An input's typed ``contents`` as the bytes ``raw_input_contents`` would hold."""
    field = CONTENTS.get(tensor.datatype)
    given = [descriptor.name for descriptor, _ in tensor.contents.ListFields()]
    if field is None:
        return b""  # refused with the datatypes the model takes (v2.request_input)
    if any(name != field for name in given):
        raise InvalidInput(
            f"expected the values of input {tensor.name!r} ({tensor.datatype}) in "
            f"contents.{field}, received contents.{', contents.'.join(given)}"
        )
    return pack(tensor.datatype, getattr(tensor.contents, field))


def _check_sizes(request: pb.ModelInferRequest) -> None:
    """What a JSON body's schema bounds: counts of tensors, dimensions, name lengths."""
    if not request.inputs or len(request.inputs) > MAX_TENSORS:
        raise InvalidInput(f"expected 1 to {MAX_TENSORS} inputs, received {len(request.inputs)}")
    if len(request.outputs) > MAX_TENSORS:
        raise InvalidInput(
            f"expected at most {MAX_TENSORS} requested outputs, received {len(request.outputs)}"
        )
    if len(request.id) > MAX_NAME:
        raise InvalidInput(f"expected an id of at most {MAX_NAME} characters, received more")
    for tensor in request.inputs:
        check_name(tensor.name)
        check_shape(tensor.name, list(tensor.shape))


def decode_request(request: pb.ModelInferRequest) -> tuple[v2.InferenceRequest, bytes, bool]:
    """The request as the HTTP protocol's body with every input as binary data, the binary
    tail those inputs take their bytes from, and whether the inputs came raw."""
    _check_sizes(request)
    raw = list(request.raw_input_contents)
    if raw and len(raw) != len(request.inputs):
        raise InvalidInput(
            f"expected one raw_input_contents entry per input ({len(request.inputs)}), "
            f"received {len(raw)}"
        )
    inputs, chunks = [], []
    for i, tensor in enumerate(request.inputs):
        if raw and tensor.HasField("contents"):
            raise InvalidInput(
                f"expected the values of input {tensor.name!r} in raw_input_contents or in "
                "contents, received both"
            )
        data = raw[i] if raw else _packed(tensor)
        parameters = {**_parameters(tensor.parameters), "binary_data_size": len(data)}
        inputs.append(
            v2.InferInput.model_construct(
                name=tensor.name,
                shape=list(tensor.shape),
                datatype=tensor.datatype,
                parameters=parameters,
                data=None,
            )
        )
        chunks.append(data)
    outputs = [
        v2.RequestedOutput.model_construct(name=o.name, parameters=_parameters(o.parameters))
        for o in request.outputs
    ]
    body = v2.InferenceRequest.model_construct(
        id=request.id or None,
        parameters=_parameters(request.parameters),
        inputs=inputs,
        outputs=outputs or None,
    )
    return body, b"".join(chunks), bool(raw)


def encode_response(head: dict[str, Any], binaries: list[bytes]) -> pb.ModelInferResponse:
    """``v2.encode_outputs``' answer as a protobuf: each output raw or in typed contents."""
    response = pb.ModelInferResponse(
        model_name=head["model_name"],
        model_version=head["model_version"],
        id=head.get("id") or "",
        raw_output_contents=binaries,
    )
    for tensor in head["outputs"]:
        output = response.outputs.add(
            name=tensor["name"], datatype=tensor["datatype"], shape=tensor["shape"]
        )
        data = tensor.get("data")
        if data is None:
            continue  # raw, in raw_output_contents
        values = getattr(output.contents, CONTENTS[tensor["datatype"]])
        if tensor["datatype"] == "BYTES":
            values.extend(item.encode() for item in data)
        else:
            values.extend(np.asarray(data).tolist())
    return response


def model_name(name: str) -> str:
    """The model a call names (an empty name is refused: the protocols need one)."""
    if not name:
        raise InvalidInput("expected the name of a served model, received an empty name")
    return name


class InferenceService:
    """The RPCs of ``inference.GRPCInferenceService``, each a coroutine over the data plane."""

    def __init__(self, plane: DataPlane) -> None:
        self.plane = plane

    async def server_live(self, request: pb.ServerLiveRequest, context: Context) -> Any:
        """Live while the process answers."""
        return pb.ServerLiveResponse(live=True)

    async def server_ready(self, request: pb.ServerReadyRequest, context: Context) -> Any:
        """Ready once the default model serves (``/health/ready``)."""
        return pb.ServerReadyResponse(ready=self.plane.registry.ready)

    async def model_ready(self, request: pb.ModelReadyRequest, context: Context) -> Any:
        """Ready when the model (or the named version) serves; not ready otherwise."""
        try:
            self.plane.resolve(model_name(request.name), request.version or None)
        except (NotFound, Unavailable):
            return pb.ModelReadyResponse(ready=False)
        return pb.ModelReadyResponse(ready=True)

    async def server_metadata(self, request: pb.ServerMetadataRequest, context: Context) -> Any:
        """The server's name, version and protocol extensions."""
        return pb.ServerMetadataResponse(
            name="softmax-serving", version=__version__, extensions=v2.EXTENSIONS
        )

    async def model_metadata(self, request: pb.ModelMetadataRequest, context: Context) -> Any:
        """The model's versions, inputs and outputs (of the newest or the named version)."""
        name = model_name(request.name)
        served = self.plane.resolve(name, request.version or None)
        described = v2.model_metadata_of(served, self.plane.versions(name))
        tensor = pb.ModelMetadataResponse.TensorMetadata
        return pb.ModelMetadataResponse(
            name=described["name"],
            versions=described["versions"],
            platform=described["platform"],
            inputs=[tensor(**each) for each in described["inputs"]],
            outputs=[tensor(**each) for each in described["outputs"]],
        )

    async def model_infer(self, request: pb.ModelInferRequest, context: Context) -> Any:
        """Inference, through the same door and checks as ``POST /v2/models/{name}/infer``."""
        body, tail, raw = decode_request(request)
        served = self.plane.route(model_name(request.model_name), request.model_version or None)
        x, datatype = v2.request_input(
            body, tensors.BinaryTail(memoryview(tail)), served.metadata.input_spec
        )
        calibrated = v2.flag(body.parameters, "calibrated", True, "the request")
        wanted = [(name, raw, k) for name, _, k in v2.requested_outputs(body)]
        result = await self.plane.predict(x, calibrated=calibrated, served=served)
        return encode_response(*v2.encode_outputs(body.id, result, datatype, wanted))

    async def repository_model_load(
        self, request: pb.RepositoryModelLoadRequest, context: Context
    ) -> Any:
        """Load or reload a model now (model control: 403 unless switched on)."""
        name = model_name(request.model_name or request.repository_name)
        if request.parameters:
            raise InvalidInput(
                "expected a load request without parameters (configuration and file "
                f"overrides are not supported), received {sorted(request.parameters)}"
            )
        await self.plane.reload(name, "loading")
        return pb.RepositoryModelLoadResponse(model_name=name, isLoaded=True)

    async def repository_model_unload(
        self, request: pb.RepositoryModelUnloadRequest, context: Context
    ) -> Any:
        """Stop serving every version of a model until it is loaded again."""
        name = model_name(request.model_name or request.repository_name)
        await self.plane.unload(name)
        return pb.RepositoryModelUnloadResponse(model_name=name, isUnloaded=True)

    def methods(self) -> dict[str, tuple[Any, type[Any], type[Any]]]:
        """Each RPC's name, with its coroutine and its request and response messages."""
        return {
            "ServerLive": (self.server_live, pb.ServerLiveRequest, pb.ServerLiveResponse),
            "ServerReady": (self.server_ready, pb.ServerReadyRequest, pb.ServerReadyResponse),
            "ModelReady": (self.model_ready, pb.ModelReadyRequest, pb.ModelReadyResponse),
            "ServerMetadata": (
                self.server_metadata,
                pb.ServerMetadataRequest,
                pb.ServerMetadataResponse,
            ),
            "ModelMetadata": (
                self.model_metadata,
                pb.ModelMetadataRequest,
                pb.ModelMetadataResponse,
            ),
            "ModelInfer": (self.model_infer, pb.ModelInferRequest, pb.ModelInferResponse),
            "RepositoryModelLoad": (
                self.repository_model_load,
                pb.RepositoryModelLoadRequest,
                pb.RepositoryModelLoadResponse,
            ),
            "RepositoryModelUnload": (
                self.repository_model_unload,
                pb.RepositoryModelUnloadRequest,
                pb.RepositoryModelUnloadResponse,
            ),
        }
