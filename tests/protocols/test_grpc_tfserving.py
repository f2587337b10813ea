"""TF Serving's gRPC PredictionService on the real server, through the stubs of the
``tensorflow-serving-api`` package (the test environment's; never the server's).

References: ``/predict`` for the probabilities (bit for bit: both float64), the REST
``/v1/models/{name}/metadata`` for the signature, and the REST errors' messages.
TensorFlow is imported by the tests that need it, not when this module is collected.
"""

from __future__ import annotations

import importlib
from collections.abc import Iterator
from types import SimpleNamespace
from typing import Any

import grpc
import httpx
import numpy as np
import pytest
from google.protobuf import json_format

from service.protocols.grpc import tfserving_pb2 as ours
from tests.conftest import TrainedRepository
from tests.protocols.test_grpc import GrpcServer, _health, start_grpc_server
from tests.protocols.test_v2 import native, points


@pytest.fixture(scope="module")
def tfs() -> SimpleNamespace:
    """TF Serving's generated modules, and TensorFlow's tensor helpers, by their last name."""
    modules = [
        "tensorflow.core.framework.tensor_pb2",
        "tensorflow.core.framework.tensor_shape_pb2",
        "tensorflow.core.framework.types_pb2",
        "tensorflow.core.protobuf.meta_graph_pb2",
        "tensorflow.python.framework.tensor_util",
        "tensorflow_serving.apis.get_model_metadata_pb2",
        "tensorflow_serving.apis.model_pb2",
        "tensorflow_serving.apis.predict_pb2",
        "tensorflow_serving.apis.prediction_service_pb2_grpc",
    ]
    return SimpleNamespace(**{m.rsplit(".", 1)[1]: importlib.import_module(m) for m in modules})


@pytest.fixture(scope="module")
def served(
    trained: TrainedRepository, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[GrpcServer]:
    """The default model, served over HTTP and gRPC."""
    running = start_grpc_server(trained.workdir, tmp_path_factory.mktemp("tfs") / "server.log")
    yield running
    assert running.server.stop() == 0, running.server.output()


@pytest.fixture(scope="module")
def stub(served: GrpcServer, tfs: SimpleNamespace) -> Iterator[Any]:
    with grpc.insecure_channel(served.target) as channel:
        yield tfs.prediction_service_pb2_grpc.PredictionServiceStub(channel)


@pytest.fixture
def http(served: GrpcServer) -> Iterator[httpx.Client]:
    with httpx.Client(base_url=served.server.url) as client:
        yield client


def _fields(message: Any) -> set[tuple[str, int, int, bool]]:
    return {(f.name, f.number, f.type, f.is_repeated) for f in message.DESCRIPTOR.fields}


def test_our_messages_are_tf_servings_fields_for_field(tfs: SimpleNamespace) -> None:
    pairs = [
        (ours.PredictRequest, tfs.predict_pb2.PredictRequest),
        (ours.PredictResponse, tfs.predict_pb2.PredictResponse),
        (ours.ModelSpec, tfs.model_pb2.ModelSpec),
        (ours.GetModelMetadataRequest, tfs.get_model_metadata_pb2.GetModelMetadataRequest),
        (ours.GetModelMetadataResponse, tfs.get_model_metadata_pb2.GetModelMetadataResponse),
        (ours.SignatureDefMap, tfs.get_model_metadata_pb2.SignatureDefMap),
        (ours.SignatureDef, tfs.meta_graph_pb2.SignatureDef),
        (ours.TensorInfo, tfs.meta_graph_pb2.TensorInfo),
        (ours.TensorProto, tfs.tensor_pb2.TensorProto),
        (ours.TensorShapeProto, tfs.tensor_shape_pb2.TensorShapeProto),
        (ours.TensorShapeProto.Dim, tfs.tensor_shape_pb2.TensorShapeProto.Dim),
    ]
    for mine, theirs in pairs:
        assert _fields(mine) <= _fields(theirs), mine.DESCRIPTOR.name
    values = {(v.name, v.number) for v in ours.DataType.DESCRIPTOR.values}
    assert values <= {(v.name, v.number) for v in tfs.types_pb2.DataType.DESCRIPTOR.values}


def _request(tfs: SimpleNamespace, model: str = "blobs", **spec: Any) -> Any:
    request = tfs.predict_pb2.PredictRequest()
    request.model_spec.name = model
    for key, value in spec.items():
        if key == "version":
            request.model_spec.version.value = value
        else:
            setattr(request.model_spec, key, value)
    return request


@pytest.mark.parametrize("form", ["tensor_content FP32", "double_val", "tensor_content FP64"])
def test_predict_gives_predicts_probabilities_bit_for_bit(
    stub: Any, tfs: SimpleNamespace, http: httpx.Client, form: str
) -> None:
    x = points(33)
    request = _request(tfs, version=1, signature_name="serving_default")
    if form == "double_val":
        tensor = request.inputs["input"]
        tensor.dtype = tfs.types_pb2.DT_DOUBLE
        tensor.tensor_shape.dim.add(size=33)
        tensor.tensor_shape.dim.add(size=2)
        tensor.double_val.extend(x.ravel().tolist())
    else:
        x = x.astype(np.float32) if form.endswith("FP32") else x
        request.inputs["any name"].CopyFrom(tfs.tensor_util.make_tensor_proto(x))
    response = stub.Predict(request, timeout=10)
    assert set(response.outputs) == {"probabilities"}
    probabilities = tfs.tensor_util.MakeNdarray(response.outputs["probabilities"])
    assert probabilities.dtype == np.float64
    np.testing.assert_array_equal(probabilities, native(http, x.astype(np.float64)))
    assert (response.model_spec.name, response.model_spec.version.value) == ("blobs", 1)


def test_get_model_metadata_is_the_rest_signature(
    stub: Any, tfs: SimpleNamespace, http: httpx.Client
) -> None:
    request = tfs.get_model_metadata_pb2.GetModelMetadataRequest(metadata_field=["signature_def"])
    request.model_spec.name = "blobs"
    response = stub.GetModelMetadata(request, timeout=10)
    signatures = tfs.get_model_metadata_pb2.SignatureDefMap()
    assert response.metadata["signature_def"].Unpack(signatures)
    rest = http.get("/v1/models/blobs/metadata").json()["metadata"]["signature_def"]
    assert json_format.MessageToDict(signatures, preserving_proto_field_name=True) == (
        json_format.MessageToDict(
            json_format.ParseDict(rest, tfs.get_model_metadata_pb2.SignatureDefMap()),
            preserving_proto_field_name=True,
        )
    )


def _code(call: Any, request: Any) -> tuple[str, str]:
    with pytest.raises(grpc.RpcError) as raised:
        call(request, timeout=10)
    return raised.value.code().name, str(raised.value.details())


def test_errors_are_the_rest_errors_with_grpc_codes(
    stub: Any, tfs: SimpleNamespace, http: httpx.Client
) -> None:
    tensor = tfs.tensor_util.make_tensor_proto(points(1))
    unknown = _request(tfs, "nope")
    unknown.inputs["input"].CopyFrom(tensor)
    rest = http.post("/v1/models/nope:predict", json={"instances": [[1.0, 2.0]]}).json()
    assert _code(stub.Predict, unknown) == ("NOT_FOUND", rest["error"])
    wrong = _request(tfs)
    wrong.inputs["input"].CopyFrom(tfs.tensor_util.make_tensor_proto(np.ones((1, 3))))
    code, message = _code(stub.Predict, wrong)
    assert code == "INVALID_ARGUMENT"
    assert "expected input 'input' of shape [N, 2] with N >= 1, received [1, 3]" in message
    half = _request(tfs)
    half.inputs["input"].CopyFrom(tfs.tensor_util.make_tensor_proto(np.ones((1, 2), np.float16)))
    code, message = _code(stub.Predict, half)
    assert code == "INVALID_ARGUMENT"
    assert message.endswith("received DT_HALF")
    signature = _request(tfs, signature_name="predict")
    signature.inputs["input"].CopyFrom(tensor)
    assert _code(stub.Predict, signature) == (
        "INVALID_ARGUMENT",
        "expected signature_name 'serving_default' (the only signature), received 'predict'",
    )
    short = _request(tfs)
    short.inputs["input"].dtype = tfs.types_pb2.DT_FLOAT
    short.inputs["input"].tensor_shape.dim.add(size=2)
    short.inputs["input"].tensor_shape.dim.add(size=2)
    short.inputs["input"].float_val.append(1.0)  # TF would broadcast it; we do not
    assert _code(stub.Predict, short) == (
        "INVALID_ARGUMENT",
        "expected 4 values in input 'input' (shape [2, 2]), received 1 in float_val",
    )


def test_health_names_the_prediction_service(served: GrpcServer) -> None:
    assert _health(served.target, "tensorflow.serving.PredictionService") == "SERVING"
