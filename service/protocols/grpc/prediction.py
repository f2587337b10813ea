"""TF Serving's gRPC ``tensorflow.serving.PredictionService`` (Predict, Classify,
GetModelMetadata) and ``tensorflow.serving.ModelService`` (GetModelStatus).

A codec over the data plane, as ``service.protocols.tfserving`` is over REST, and built
from the Open Inference Protocol's pieces: each input ``TensorProto`` (its values in
``tensor_content`` or in the field of its dtype) becomes a binary tensor of
``service.protocols.v2``, so shapes, image files (``DT_STRING``), strings and named
inputs are checked by the same code with the same messages. The one output,
``probabilities``, is ``DT_DOUBLE`` ``[N, classes]``: ``/predict``'s probabilities, bit
for bit, as the signature (``tfserving.signature_metadata``) says. A model with one input
takes it under any name, as over REST.

Classify is the REST ``:classify``: each ``tf.Example`` becomes the JSON example REST
takes (``examples``), checked by the same schema and answered by the same function
(``tfserving.classify_examples``); the scores are TF Serving's ``float``, so float32 of
the REST scores. GetModelStatus is ``GET /v1/models/{name}``'s ``model_version_status``
(``tfserving.status_body``). Regress and MultiInference are not offered (UNIMPLEMENTED).
"""

from __future__ import annotations

import base64
import contextlib
import math
from typing import Any

import numpy as np
from google.protobuf import json_format
from pydantic import ValidationError

from service.dataplane import DataPlane
from service.errors import InvalidInput
from service.http.error_responses import invalid_input
from service.protocols import tfserving, v2
from service.protocols import v2_tensors as tensors
from service.protocols.grpc import tfserving_pb2 as pb
from service.protocols.grpc.inference import (
    MAX_TENSORS,
    Context,
    check_name,
    check_shape,
    model_name,
    pack,
)
from service.repository.artifact import InputSpec
from service.repository.registry import LoadedVersion

SERVICE = "tensorflow.serving.PredictionService"
MODEL_SERVICE = "tensorflow.serving.ModelService"
#: TF Serving packs the signatures under this type URL: its clients unpack them by it.
SIGNATURE_DEF_MAP = "type.googleapis.com/tensorflow.serving.SignatureDefMap"
#: The Open Inference Protocol's datatype of each dtype taken, and the field of its values.
DATATYPES = {
    pb.DT_FLOAT: ("FP32", "float_val"),
    pb.DT_DOUBLE: ("FP64", "double_val"),
    pb.DT_INT32: ("INT32", "int_val"),
    pb.DT_INT64: ("INT64", "int64_val"),
    pb.DT_STRING: ("BYTES", "string_val"),
}


def _dtype_name(dtype: int) -> str:
    try:
        return pb.DataType.Name(dtype)
    except ValueError:
        return f"dtype {dtype}"


def _version(spec: pb.ModelSpec) -> tuple[str | None, str | None]:
    """The version and the label a ``ModelSpec`` names (each None when it names none)."""
    tfserving.check_signature(spec.signature_name)
    version = str(spec.version.value) if spec.HasField("version") else None
    return version, spec.version_label or None


def _tensor(name: str, tensor: pb.TensorProto) -> tuple[v2.InferInput, bytes]:
    """One input as the Open Inference Protocol's binary tensor, and its bytes."""
    taken = DATATYPES.get(tensor.dtype)
    if taken is None:
        names = ", ".join(pb.DataType.Name(d) for d in DATATYPES)
        raise InvalidInput(
            f"expected input {name!r} of dtype {names}, received {_dtype_name(tensor.dtype)}"
        )
    datatype, field = taken
    if tensor.tensor_shape.unknown_rank:
        raise InvalidInput(f"expected input {name!r} with a shape, received an unknown rank")
    shape = [dim.size for dim in tensor.tensor_shape.dim]
    check_shape(name, shape)
    count = math.prod(shape)
    values = getattr(tensor, field)
    if tensor.tensor_content and datatype != "BYTES":
        data = tensor.tensor_content
        size = count * tensors.DTYPES[datatype].itemsize
        if len(data) != size:
            raise InvalidInput(
                f"expected {size} bytes of tensor_content in input {name!r} "
                f"({_dtype_name(tensor.dtype)}, shape {shape}), received {len(data)}"
            )
    else:
        if len(values) != count:
            raise InvalidInput(
                f"expected {count} values in input {name!r} (shape {shape}), received "
                f"{len(values)} in {field}"
            )
        data = pack(datatype, values)
    given = v2.InferInput.model_construct(
        name=name,
        shape=shape,
        datatype=datatype,
        parameters={"binary_data_size": len(data)},
        data=None,
    )
    return given, data


def decode_predict(request: pb.PredictRequest) -> tuple[v2.InferenceRequest, bytes]:
    """The request's inputs as the Open Inference Protocol's request, and their bytes."""
    if not request.inputs or len(request.inputs) > MAX_TENSORS:
        raise InvalidInput(f"expected 1 to {MAX_TENSORS} inputs, received {len(request.inputs)}")
    unknown = sorted(set(request.output_filter) - {tfserving.OUTPUT})
    if unknown:
        raise InvalidInput(
            f"expected output_filter to name only {tfserving.OUTPUT!r} (the one output), "
            f"received {unknown[:5]}"
        )
    inputs, chunks = [], []
    for name in sorted(request.inputs):
        check_name(name)
        given, data = _tensor(name, request.inputs[name])
        inputs.append(given)
        chunks.append(data)
    body = v2.InferenceRequest.model_construct(id=None, parameters={}, inputs=inputs, outputs=None)
    return body, b"".join(chunks)


def _feature(name: str, feature: pb.Feature, where: str, spec: InputSpec, table: bool) -> Any:
    """A ``tf.Example`` feature as the value a REST example gives it: null when it has no
    values; bytes as image files for an image model, else as UTF-8 strings; for a model
    of one numeric input, a list (nested to the input's shape) but a table's single
    feature values; any other single value as itself."""
    kind = feature.WhichOneof("kind")
    values: list[Any] = list(getattr(feature, kind).value) if kind is not None else []
    if not values:
        return None
    if kind == "bytes_list":
        if spec.kind == "image":
            values = [{"b64": base64.b64encode(value).decode()} for value in values]
        else:
            try:
                values = [value.decode() for value in values]
            except UnicodeDecodeError:
                raise InvalidInput(
                    f"expected UTF-8 text (or, for an image model, image files) in the "
                    f"bytes_list of {name[:64]!r} in {where}, received bytes that are not UTF-8"
                ) from None
    elif spec.inputs is None and spec.kind != "text" and not (table and len(values) == 1):
        if len(spec.shape) > 1:
            with contextlib.suppress(ValueError):  # else the data plane names the shape
                return np.reshape(values, spec.shape).tolist()
        return values
    return values[0] if len(values) == 1 else values


def classify_body(given: pb.Input, served: LoadedVersion) -> tfserving.ClassifyRequest:
    """The request's examples (and context) as REST's ``:classify`` body, validated by
    its schema."""
    kind = given.WhichOneof("kind")
    if kind is None:
        raise InvalidInput(
            "expected input.example_list or input.example_list_with_context, received neither"
        )
    spec = served.metadata.input_spec
    table = served.metadata.columns is not None

    def example(message: pb.Example, where: str) -> dict[str, Any]:
        features = message.features.feature
        return {
            name: _feature(name, features[name], where, spec, table) for name in sorted(features)
        }

    listed = getattr(given, kind)
    body: dict[str, Any] = {
        "examples": [example(each, f"examples[{i}]") for i, each in enumerate(listed.examples)]
    }
    if kind == "example_list_with_context" and listed.HasField("context"):
        body["context"] = example(listed.context, "context")
    try:
        return tfserving.ClassifyRequest.model_validate(body)
    except ValidationError as exc:
        raise invalid_input(exc.errors(include_url=False)) from None


def _model_spec(served_name: str, version: int) -> pb.ModelSpec:
    spec = pb.ModelSpec(name=served_name, signature_name=tfserving.SIGNATURE)
    spec.version.value = version
    return spec


class PredictionService:
    """The RPCs of ``tensorflow.serving.PredictionService`` this server answers."""

    def __init__(self, plane: DataPlane) -> None:
        self.plane = plane

    async def predict(self, request: pb.PredictRequest, context: Context) -> Any:
        """Predict, through the same door and checks as ``:predict``."""
        version, label = _version(request.model_spec)
        body, data = decode_predict(request)
        served = self.plane.route(model_name(request.model_spec.name), version, label)
        x, _ = v2.request_input(
            body, tensors.BinaryTail(memoryview(data)), served.metadata.input_spec
        )
        result = await self.plane.predict(x, served=served)
        probabilities = np.ascontiguousarray(result.probabilities, dtype="<f8")
        output = pb.TensorProto(dtype=pb.DT_DOUBLE, tensor_content=probabilities.tobytes())
        output.tensor_shape.dim.add(size=probabilities.shape[0])
        output.tensor_shape.dim.add(size=probabilities.shape[1])
        return pb.PredictResponse(
            model_spec=_model_spec(served.name, served.version),
            outputs={tfserving.OUTPUT: output},
        )

    async def classify(self, request: pb.ClassificationRequest, context: Context) -> Any:
        """Classify, through the same door and checks as ``:classify``."""
        version, label = _version(request.model_spec)
        served = self.plane.route(model_name(request.model_spec.name), version, label)
        body = classify_body(request.input, served)
        rows = await tfserving.classify_examples(self.plane, body, served)
        response = pb.ClassificationResponse(model_spec=_model_spec(served.name, served.version))
        for row in rows:
            classes = response.result.classifications.add().classes
            classes.extend(pb.Class(label=name, score=score) for name, score in row)
        return response

    async def get_model_metadata(
        self, request: pb.GetModelMetadataRequest, context: Context
    ) -> Any:
        """The served (or named) version's ``serving_default`` signature."""
        fields = set(request.metadata_field)
        if fields != {"signature_def"}:
            raise InvalidInput(
                "expected metadata_field ['signature_def'] (the only metadata), received "
                f"{sorted(fields)[:5]}"
            )
        version, label = _version(request.model_spec)
        served = self.plane.resolve(model_name(request.model_spec.name), version, label)
        signatures = tfserving.signature_metadata(served)["metadata"]["signature_def"]
        packed = json_format.ParseDict(signatures, pb.SignatureDefMap()).SerializeToString()
        response = pb.GetModelMetadataResponse(model_spec=_model_spec(served.name, served.version))
        response.metadata["signature_def"].type_url = SIGNATURE_DEF_MAP
        response.metadata["signature_def"].value = packed
        return response

    def methods(self) -> dict[str, tuple[Any, type[Any], type[Any]]]:
        """Each RPC's name, with its coroutine and its request and response messages."""
        return {
            "Predict": (self.predict, pb.PredictRequest, pb.PredictResponse),
            "Classify": (self.classify, pb.ClassificationRequest, pb.ClassificationResponse),
            "GetModelMetadata": (
                self.get_model_metadata,
                pb.GetModelMetadataRequest,
                pb.GetModelMetadataResponse,
            ),
        }


class ModelService:
    """``tensorflow.serving.ModelService``'s GetModelStatus (not HandleReloadConfigRequest)."""

    def __init__(self, plane: DataPlane) -> None:
        self.plane = plane

    async def get_model_status(self, request: pb.GetModelStatusRequest, context: Context) -> Any:
        """Every version of the model tried (or the one named), as ``GET /v1/models/{name}``."""
        version, label = _version(request.model_spec)
        name = model_name(request.model_spec.name)
        if label is not None:
            version = str(self.plane.resolve(name, label=label).version)
        statuses = tfserving.status_body(self.plane, name, version)["model_version_status"]
        return json_format.ParseDict(
            {"model_version_status": statuses}, pb.GetModelStatusResponse()
        )

    def methods(self) -> dict[str, tuple[Any, type[Any], type[Any]]]:
        """Each RPC's name, with its coroutine and its request and response messages."""
        return {
            "GetModelStatus": (
                self.get_model_status,
                pb.GetModelStatusRequest,
                pb.GetModelStatusResponse,
            )
        }
