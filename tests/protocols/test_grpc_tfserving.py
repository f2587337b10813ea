"""TF Serving's gRPC PredictionService and ModelService on the real server, through the
stubs of the ``tensorflow-serving-api`` package (the test environment's; never the server's).

References: ``/predict`` for the probabilities (bit for bit: both float64), the REST
``:classify`` for Classify's labels and scores (float32 of them: TF Serving's ``Class.score``
is a ``float``), the REST ``/v1/models/{name}/metadata`` for the signature, the REST
``/v1/models/{name}`` for the versions' status, and the REST errors' messages.
TensorFlow and Keras are imported by the tests that need them, not when this module is
collected.
"""

from __future__ import annotations

import base64
import contextlib
import importlib
from collections.abc import Iterator
from types import SimpleNamespace
from typing import Any

import grpc
import httpx
import numpy as np
import pytest
from google.protobuf import descriptor_pool, json_format

from service.protocols.grpc import tfserving_pb2 as ours
from tests.conftest import TrainedRepository
from tests.protocols.test_grpc import GrpcServer, _health, start_grpc_server
from tests.protocols.test_v2 import native, points


@pytest.fixture(scope="module")
def tfs() -> SimpleNamespace:
    """TF Serving's generated modules, and TensorFlow's tensor helpers, by their last name."""
    modules = [
        "tensorflow.core.example.example_pb2",
        "tensorflow.core.example.feature_pb2",
        "tensorflow.core.framework.tensor_pb2",
        "tensorflow.core.framework.tensor_shape_pb2",
        "tensorflow.core.framework.types_pb2",
        "tensorflow.core.protobuf.meta_graph_pb2",
        "tensorflow.python.framework.tensor_util",
        "tensorflow_serving.apis.classification_pb2",
        "tensorflow_serving.apis.get_model_metadata_pb2",
        "tensorflow_serving.apis.get_model_status_pb2",
        "tensorflow_serving.apis.input_pb2",
        "tensorflow_serving.apis.model_pb2",
        "tensorflow_serving.apis.model_service_pb2_grpc",
        "tensorflow_serving.apis.predict_pb2",
        "tensorflow_serving.apis.prediction_service_pb2_grpc",
        "tensorflow_serving.apis.status_pb2",
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


@pytest.fixture(scope="module")
def models(served: GrpcServer, tfs: SimpleNamespace) -> Iterator[Any]:
    with grpc.insecure_channel(served.target) as channel:
        yield tfs.model_service_pb2_grpc.ModelServiceStub(channel)


@pytest.fixture
def http(served: GrpcServer) -> Iterator[httpx.Client]:
    with httpx.Client(base_url=served.server.url) as client:
        yield client


def _fields(message: Any) -> set[tuple[str, int, int, bool, str]]:
    """Each field's name, number, type, repetition and the name of its message or enum."""
    return {
        (f.name, f.number, f.type, f.is_repeated, (f.message_type or f.enum_type or f).name)
        for f in message.fields
    }


def _nested(message: Any) -> Iterator[Any]:
    yield message
    for nested in message.nested_types:
        yield from _nested(nested)


#: Where TF Serving's messages and enums live, by our package's local names.
PACKAGES = ("tensorflow.serving", "tensorflow", "tensorflow.error")


def _theirs(find: Any, local_name: str) -> Any:
    for package in PACKAGES:
        with contextlib.suppress(KeyError):
            return find(f"{package}.{local_name}")
    raise AssertionError(f"expected TF Serving or TensorFlow to define {local_name}")


def test_our_messages_are_tf_servings_fields_for_field(tfs: SimpleNamespace) -> None:
    """Every message and enum of ours is TF Serving's or TensorFlow's, cut to fewer fields
    or values: same names, numbers, types, repetition and oneofs."""
    pool = descriptor_pool.Default()  # holds TF Serving's, once its modules are imported
    package = ours.DESCRIPTOR.package + "."
    checked = set()
    for top in ours.DESCRIPTOR.message_types_by_name.values():
        for mine in _nested(top):
            local_name = mine.full_name.removeprefix(package)
            theirs = _theirs(pool.FindMessageTypeByName, local_name)
            assert _fields(mine) <= _fields(theirs), local_name
            for oneof in mine.oneofs:  # the same fields exclude each other
                their_oneof = theirs.oneofs_by_name[oneof.name]
                assert {f.name for f in oneof.fields} <= {f.name for f in their_oneof.fields}
            for enum in mine.enum_types:
                their_enum = theirs.enum_types_by_name[enum.name]
                values = {(v.name, v.number) for v in enum.values}
                assert values <= {(v.name, v.number) for v in their_enum.values}, enum.full_name
            checked.add(local_name)
    for enum in ours.DESCRIPTOR.enum_types_by_name.values():
        their_enum = _theirs(pool.FindEnumTypeByName, enum.name)
        values = {(v.name, v.number) for v in enum.values}
        assert values <= {(v.name, v.number) for v in their_enum.values}, enum.name
    assert {"ClassificationRequest", "Features.FeatureEntry", "GetModelStatusResponse"} <= checked


def _naming(request: Any, model: str = "blobs", **spec: Any) -> Any:
    """``request`` with its ``model_spec`` naming ``model`` (and a version, a signature...)."""
    request.model_spec.name = model
    for key, value in spec.items():
        if key == "version":
            request.model_spec.version.value = value
        else:
            setattr(request.model_spec, key, value)
    return request


def _request(tfs: SimpleNamespace, model: str = "blobs", **spec: Any) -> Any:
    return _naming(tfs.predict_pb2.PredictRequest(), model, **spec)


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


# --- Classify ---------------------------------------------------------------------------


def _feature(tfs: SimpleNamespace, value: Any) -> Any:
    """A ``tf.train.Feature``: floats, integers or bytes, one value or a list."""
    values = value if isinstance(value, list) else [value]
    if all(isinstance(v, bytes) for v in values):
        return tfs.feature_pb2.Feature(bytes_list=tfs.feature_pb2.BytesList(value=values))
    if all(isinstance(v, int) for v in values):
        return tfs.feature_pb2.Feature(int64_list=tfs.feature_pb2.Int64List(value=values))
    return tfs.feature_pb2.Feature(float_list=tfs.feature_pb2.FloatList(value=values))


def _example(tfs: SimpleNamespace, features: dict[str, Any]) -> Any:
    """A ``tf.train.Example`` of the named features."""
    feature = {name: _feature(tfs, value) for name, value in features.items()}
    return tfs.example_pb2.Example(features=tfs.feature_pb2.Features(feature=feature))


def _classification(
    tfs: SimpleNamespace,
    examples: list[dict[str, Any]],
    context: dict[str, Any] | None = None,
    model: str = "blobs",
    **spec: Any,
) -> Any:
    request = _naming(tfs.classification_pb2.ClassificationRequest(), model, **spec)
    listed = [_example(tfs, example) for example in examples]
    if context is None:
        request.input.example_list.examples.extend(listed)
    else:
        request.input.example_list_with_context.examples.extend(listed)
        request.input.example_list_with_context.context.CopyFrom(_example(tfs, context))
    return request


def _rest(value: Any) -> Any:
    """A feature's value as a REST example names it (bytes as text)."""
    return value.decode() if isinstance(value, bytes) else value


def _rest_body(examples: list[dict[str, Any]], context: dict[str, Any] | None) -> dict[str, Any]:
    """The same examples (and context) as REST's ``:classify`` body."""
    body: dict[str, Any] = {"examples": [_rest_example(e) for e in examples]}
    if context is not None:
        body["context"] = _rest_example(context)
    return body


def _rest_example(features: dict[str, Any]) -> dict[str, Any]:
    return {name: _rest(value) for name, value in features.items()}


def _classified(response: Any) -> list[list[tuple[str, float]]]:
    return [
        [(c.label, c.score) for c in classification.classes]
        for classification in response.result.classifications
    ]


def _rest_classified(
    http: httpx.Client, path: str, body: dict[str, Any]
) -> list[list[tuple[str, float]]]:
    """REST ``:classify``'s pairs, each score as ``Class.score`` (a float) holds it: float32."""
    rest = http.post(f"/v1/models/{path}:classify", json=body)
    assert rest.status_code == 200, rest.text
    return [
        [(label, float(np.float32(score))) for label, score in row] for row in rest.json()["result"]
    ]


#: float32 values (a FloatList's), so that REST's JSON numbers are the very same values.
ROWS = points(6).astype(np.float32).astype(np.float64).tolist()
FORMS = {
    "named features": ([{"x1": a, "x2": b} for a, b in ROWS], None),
    "integer features": ([{"x1": 15, "x2": 0}, {"x1": 29, "x2": 14}], None),
    "one input, any name": ([{"any name": [a, b]} for a, b in ROWS], None),
    "context": ([{"x1": a} for a, _ in ROWS[:3]] + [{"x1": 29.5, "x2": 14.25}], {"x2": 0.5}),
}


@pytest.mark.parametrize("form", FORMS)
def test_classify_answers_the_rest_classify_labels_and_scores(
    stub: Any, tfs: SimpleNamespace, http: httpx.Client, form: str
) -> None:
    examples, context = FORMS[form]
    request = _classification(tfs, examples, context, version=1, signature_name="serving_default")
    response = stub.Classify(request, timeout=10)
    answered = _classified(response)
    assert answered == _rest_classified(http, "blobs/versions/1", _rest_body(examples, context))
    assert len(answered) == len(examples)
    assert [label for label, _ in answered[0]] == ["0", "1", "2", "3"]
    assert (response.model_spec.name, response.model_spec.version.value) == ("blobs", 1)
    assert response.model_spec.signature_name == "serving_default"


@pytest.fixture(scope="module")
def kinds(tmp_path_factory: pytest.TempPathFactory) -> Iterator[GrpcServer]:
    """``gray`` (8x8 gray images), ``words`` (raw text) and ``people`` (age, income and
    city, each an input of its own), exported with the real command and served."""
    from tests.protocols.test_images import build  # Keras: imported by the tests that need it
    from tests.test_docs import _named_model, _text_model
    from tests.training.exported import export_keras

    workdir = tmp_path_factory.mktemp("kinds")
    export_keras(build("gray"), workdir, "gray", "--class-names", "dark,mid,light")
    export_keras(_text_model(), workdir, "words", "--class-names", "bad,good")
    export_keras(_named_model(), workdir, "people", "--class-names", "a,b,c")
    running = start_grpc_server(workdir, workdir / "server.log", SERVICE_DEFAULT_MODEL="gray")
    yield running
    assert running.server.stop() == 0, running.server.output()


def test_classify_images_text_and_named_inputs_as_rest(
    kinds: GrpcServer, tfs: SimpleNamespace
) -> None:
    from tests.protocols.test_images import png

    pixels = np.random.default_rng(3).integers(0, 256, size=(2, 8, 8, 1), dtype=np.uint8)
    files = [png(image) for image in pixels]
    b64 = [{"b64": base64.b64encode(file).decode()} for file in files]
    cases: list[tuple[str, list[dict[str, Any]], dict[str, Any] | None, dict[str, Any]]] = [
        ("gray", [{"image": f} for f in files], None, {"examples": [{"image": f} for f in b64]}),
        (  # pixels: a flat int64_list, in row-major order of the input's shape
            "gray",
            [{"pixels": image.ravel().tolist()} for image in pixels],
            None,
            {"examples": [{"pixels": image.tolist()} for image in pixels]},
        ),
        ("words", [{}, {"text": b"an awful plot"}], {"text": b"what a great film"}, {}),
        (
            "people",
            [{"age": 30}, {"age": 61, "city": b"Nice"}],
            {"income": 3e4, "city": b"Paris"},
            {},
        ),
    ]
    with (
        grpc.insecure_channel(kinds.target) as channel,
        httpx.Client(base_url=kinds.server.url) as http,
    ):
        stub = tfs.prediction_service_pb2_grpc.PredictionServiceStub(channel)
        for model, examples, context, rest in cases:
            response = stub.Classify(_classification(tfs, examples, context, model), timeout=10)
            expected = _rest_classified(http, model, rest or _rest_body(examples, context))
            assert _classified(response) == expected, model
            assert len(expected) == len(examples)


def test_classify_errors_are_the_rest_errors_with_grpc_codes(
    stub: Any, tfs: SimpleNamespace, http: httpx.Client
) -> None:
    def rest(body: dict[str, Any], model: str = "blobs") -> str:
        response = http.post(f"/v1/models/{model}:classify", json=body)
        assert response.status_code in (400, 404), response.text
        message: str = response.json()["error"]
        return message

    unknown = _classification(tfs, [{"x1": 15.0, "x2": 0.0}], model="nope")
    assert _code(stub.Classify, unknown) == (
        "NOT_FOUND",
        rest({"examples": [{"x1": 15.0, "x2": 0.0}]}, "nope"),
    )
    for bad in (
        [{"x1": 15.0}],  # a feature missing
        [{"x1": 15.0, "x2": 0.0}, {"x1": [15.0, 1.0], "x2": 0.0}],  # a list for a feature
        [{"x1": 15.0, "x2": 0.0, "x3": 1.0}],  # a feature the model does not have
        [{"x1": 15.0, "x2": b"many"}],  # text where the table has a number
    ):
        assert _code(stub.Classify, _classification(tfs, bad)) == (
            "INVALID_ARGUMENT",
            rest({"examples": [_rest_example(e) for e in bad]}),
        ), bad
    signature = _classification(tfs, [{"x1": 15.0, "x2": 0.0}], signature_name="predict")
    assert _code(stub.Classify, signature) == (
        "INVALID_ARGUMENT",
        rest({"signature_name": "predict", "examples": [{"x1": 15.0, "x2": 0.0}]}),
    )
    none = tfs.classification_pb2.ClassificationRequest()
    none.model_spec.name = "blobs"
    assert _code(stub.Classify, none) == (
        "INVALID_ARGUMENT",
        "expected input.example_list or input.example_list_with_context, received neither",
    )
    empty = _classification(tfs, [])
    assert _code(stub.Classify, empty) == ("INVALID_ARGUMENT", rest({"examples": []}))
    binary = _classification(tfs, [{"x1": 15.0, "x2": b"\xff"}])
    code, message = _code(stub.Classify, binary)
    assert code == "INVALID_ARGUMENT"
    assert message == (
        "expected UTF-8 text (or, for an image model, image files) in the bytes_list of "
        "'x2' in examples[0], received bytes that are not UTF-8"
    )


# --- ModelService -----------------------------------------------------------------------


def _status_request(tfs: SimpleNamespace, model: str = "blobs", **spec: Any) -> Any:
    return _naming(tfs.get_model_status_pb2.GetModelStatusRequest(), model, **spec)


@pytest.mark.parametrize("version", [None, 1])
def test_get_model_status_is_the_rest_status(
    models: Any, tfs: SimpleNamespace, http: httpx.Client, version: int | None
) -> None:
    spec = {} if version is None else {"version": version}
    response = models.GetModelStatus(_status_request(tfs, **spec), timeout=10)
    path = "/v1/models/blobs" + ("" if version is None else f"/versions/{version}")
    rest = http.get(path).json()["model_version_status"]
    assert rest, rest
    answered = json_format.MessageToDict(
        response, preserving_proto_field_name=True, always_print_fields_with_no_presence=True
    )
    assert answered == {"model_version_status": rest}
    assert [s.state for s in response.model_version_status] == [
        tfs.get_model_status_pb2.ModelVersionStatus.AVAILABLE
    ] * len(rest)


def test_get_model_status_errors_are_the_rest_errors(
    models: Any, tfs: SimpleNamespace, http: httpx.Client
) -> None:
    assert _code(models.GetModelStatus, _status_request(tfs, "nope")) == (
        "NOT_FOUND",
        http.get("/v1/models/nope").json()["error"],
    )
    assert _code(models.GetModelStatus, _status_request(tfs, version=99)) == (
        "NOT_FOUND",
        http.get("/v1/models/blobs/versions/99").json()["error"],
    )


def test_health_names_the_model_service(served: GrpcServer) -> None:
    assert _health(served.target, "tensorflow.serving.ModelService") == "SERVING"
