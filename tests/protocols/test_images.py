"""Models of every input kind, dropped into the repository as a bare ``model.keras`` (served
through Keras): nested arrays of the full shape and image files in every protocol, checked
against Keras itself; and hostile files, which get a 4xx and nothing else."""

from __future__ import annotations

import base64
import io
import json
import logging
import struct
import subprocess
import sys
import time
import zlib
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import keras
import numpy as np
import numpy.typing as npt
import pytest
import tritonclient.http as triton
from hypothesis import given, settings
from hypothesis import strategies as st
from PIL import Image
from starlette.testclient import TestClient
from tritonclient.utils import InferenceServerException

from service.settings import Settings
from tests.conftest import Server, in_process, start_server, subprocess_env

#: name -> (input shape, classes)
KINDS = {"gray": ((8, 8, 1), 3), "colour": ((12, 10, 3), 4), "sequence": ((16, 3), 3)}
TOLERANCE = 1e-5


def build(name: str) -> keras.Model:
    """Small models of each kind. ``gray`` rescales 0..255 inside (it takes raw pixels);
    ``colour`` takes pixels in 0..1; ``sequence`` is steps x features."""
    keras.utils.set_random_seed(7)
    shape, classes = KINDS[name]
    inputs = keras.Input(shape=shape)
    if name == "sequence":  # a Sequential, which Keras loads without a graph of its own
        return keras.Sequential(
            [
                keras.Input(shape=shape),
                keras.layers.Conv1D(6, 3, activation="relu"),
                keras.layers.GlobalAveragePooling1D(),
                keras.layers.Dense(classes, activation="softmax"),
            ]
        )
    if name == "gray":
        x = keras.layers.Rescaling(1 / 255)(inputs)
        x = keras.layers.Conv2D(4, 3, activation="relu")(x)
        x = keras.layers.Flatten()(x)
    else:
        x = keras.layers.Conv2D(5, 3, activation="relu")(inputs)
        x = keras.layers.GlobalAveragePooling2D()(x)
    x = keras.layers.Dense(classes, kernel_initializer=keras.initializers.RandomNormal(0, 2))(x)
    return keras.Model(inputs, keras.layers.Softmax()(x))


@pytest.fixture(scope="module")
def models(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, dict[str, keras.Model]]:
    """Each kind saved as models/<kind>/1/model.keras and nothing else."""
    repository = tmp_path_factory.mktemp("kinds") / "models"
    built = {name: build(name) for name in KINDS}
    for name, model in built.items():
        (repository / name / "1").mkdir(parents=True)
        model.save(repository / name / "1" / "model.keras")
    return repository, built


@pytest.fixture(scope="module")
def client(models: tuple[Path, dict[str, keras.Model]]) -> Iterator[TestClient]:
    with in_process(Settings(model_repository=models[0], default_model="gray")) as c:
        yield c


def png(pixels: npt.NDArray[np.uint8]) -> bytes:
    """A PNG file of ``pixels`` (height x width, or x 1 or 3 channels)."""
    squeezed = pixels[..., 0] if pixels.ndim == 3 and pixels.shape[2] == 1 else pixels
    out = io.BytesIO()
    Image.fromarray(squeezed).save(out, format="PNG")
    return out.getvalue()


def jpeg(pixels: npt.NDArray[np.uint8]) -> bytes:
    out = io.BytesIO()
    Image.fromarray(pixels).save(out, format="JPEG", quality=90)
    return out.getvalue()


def b64(data: bytes) -> str:
    return base64.b64encode(data).decode()


def decoded(data: bytes, shape: tuple[int, ...], pixel_range: tuple[float, float]) -> Any:
    """What the model should see for an image file: Pillow's decode, the model's channels
    and size (bilinear), mapped onto its pixel range (written here independently)."""
    height, width, channels = shape
    image = Image.open(io.BytesIO(data)).convert({1: "L", 3: "RGB"}[channels])
    if image.size != (width, height):
        image = image.resize((width, height), Image.Resampling.BILINEAR)
    x = np.asarray(image, dtype=np.float32).reshape(shape)
    low, high = pixel_range
    return x / np.float32(255) * np.float32(high - low) + np.float32(low)


def keras_probabilities(model: keras.Model, x: Any) -> npt.NDArray[np.float64]:
    return np.asarray(model(np.asarray(x, dtype=np.float32), training=False), dtype=np.float64)


def pixels(shape: tuple[int, ...], seed: int) -> npt.NDArray[np.uint8]:
    return np.random.default_rng(seed).integers(0, 256, size=shape, dtype=np.uint8)


PIXEL_RANGES = {"gray": (0.0, 255.0), "colour": (0.0, 1.0)}


# --- a bare model.keras ---------------------------------------------------------------------


def test_a_bare_model_keras_is_served_through_keras_and_says_it_was_not_checked(
    models: tuple[Path, dict[str, keras.Model]], caplog: pytest.LogCaptureFixture
) -> None:
    settings_ = Settings(model_repository=models[0], default_model="gray")
    with caplog.at_level(logging.WARNING), in_process(settings_) as c:
        info = c.get("/models/gray").json()
        status = c.get("/v2/models/colour").json()
    assert info["class_names"] == ["0", "1", "2"]
    assert info["input"] == {
        "shape": [8, 8, 1],
        "dtype": "float32",
        "kind": "image",
        "id_range": None,
        "columns": None,
        "pixel_range": [0.0, 255.0],
    }
    assert status["platform"] == "keras_keras"
    assert status["inputs"][0]["shape"] == [-1, 12, 10, 3]
    assert status["inputs"][1] == {"name": "image", "datatype": "BYTES", "shape": [-1]}
    lines = [r.getMessage() for r in caplog.records if "has only model.keras" in r.getMessage()]
    assert len(lines) == 3, lines
    assert all("no hash check" in line and "model_training export" in line for line in lines)
    assert f"--model-repository {models[0]}" in lines[0]


# --- nested arrays of the full shape ----------------------------------------------------------


@pytest.mark.parametrize("name", list(KINDS))
def test_nested_arrays_match_keras_in_every_protocol(
    client: TestClient, models: tuple[Path, dict[str, keras.Model]], name: str
) -> None:
    shape, _ = KINDS[name]
    x = np.random.default_rng(1).uniform(0, 1, size=(3, *shape)).round(3)
    expected = keras_probabilities(models[1][name], x)
    native = client.post(f"/models/{name}/predict", json={"instances": x.tolist()})
    assert native.status_code == 200, native.text
    got = [p["probabilities"] for p in native.json()["predictions"]]
    np.testing.assert_allclose(got, expected, atol=TOLERANCE, rtol=0)
    rows = client.post(f"/v1/models/{name}:predict", json={"instances": x.tolist()}).json()
    np.testing.assert_allclose(rows["predictions"], expected, atol=TOLERANCE, rtol=0)
    named = {"inputs": {"input": x.tolist()}}
    columns = client.post(f"/v1/models/{name}:predict", json=named).json()
    np.testing.assert_allclose(columns["outputs"], expected, atol=TOLERANCE, rtol=0)
    for data in (x.ravel().tolist(), x.tolist()):  # flat, as the protocol says, or nested
        tensor = {"name": "input", "datatype": "FP64", "shape": list(x.shape), "data": data}
        v2 = client.post(f"/v2/models/{name}/infer", json={"inputs": [tensor]}).json()
        np.testing.assert_allclose(v2["outputs"][0]["data"], expected.ravel(), atol=TOLERANCE)


@pytest.mark.parametrize(
    ("name", "instance", "message"),
    [
        (
            "gray",
            np.zeros((8, 8)).tolist(),
            "expected instances of shape [8, 8, 1], received shape [8, 8] in instances[0]",
        ),
        (
            "gray",
            np.zeros(64).tolist(),
            "expected instances of shape [8, 8, 1], received shape [64] in instances[0]",
        ),
        (
            "sequence",
            np.zeros((15, 3)).tolist(),
            "expected instances of shape [16, 3], received shape [15, 3] in instances[0]",
        ),
        (
            "sequence",
            [[0, 0, 0]] * 15 + [[0, 0]],
            "expected instances of shape [16, 3], received a ragged array",
        ),
        (
            "colour",
            {"b64": "%%%"},
            "expected standard base64 of a PNG or JPEG file in instances[0]",
        ),
        (
            "sequence",
            {"b64": b64(png(pixels((4, 4), 0)))},
            "(this model takes sequence, not image files), received an image file in instances[0]",
        ),
    ],
)
def test_wrong_instances_are_refused_saying_what_was_expected(
    client: TestClient, name: str, instance: Any, message: str
) -> None:
    for path, status in ((f"/models/{name}/predict", 422), (f"/v1/models/{name}:predict", 400)):
        response = client.post(path, json={"instances": [instance]})
        assert response.status_code == status, response.text
        assert message in response.json()["error"]


def test_v2_refuses_a_tensor_of_the_wrong_shape(client: TestClient) -> None:
    tensor = {"name": "input", "datatype": "FP32", "shape": [1, 64], "data": [0.0] * 64}
    response = client.post("/v2/models/gray/infer", json={"inputs": [tensor]})
    assert response.status_code == 400
    assert response.json()["error"] == (
        "expected input 'input' of shape [N, 8, 8, 1] with N >= 1, received [1, 64]"
    )


# --- image files --------------------------------------------------------------------------


def _v2_binary_bytes(files: list[bytes]) -> tuple[bytes, dict[str, str]]:
    """A V2 request with a BYTES input in the binary extension, as tritonclient builds it."""
    data = b"".join(struct.pack("<I", len(f)) + f for f in files)
    tensor = {
        "name": "image",
        "datatype": "BYTES",
        "shape": [len(files)],
        "parameters": {"binary_data_size": len(data)},
    }
    header = json.dumps({"inputs": [tensor]}).encode()
    headers = {"Inference-Header-Content-Length": str(len(header))}
    return header + data, headers


@pytest.mark.parametrize("name", ["gray", "colour"])
def test_image_files_match_keras_in_every_protocol(
    client: TestClient, models: tuple[Path, dict[str, keras.Model]], name: str
) -> None:
    shape, _ = KINDS[name]
    files = [png(pixels(shape, seed)) for seed in (1, 2)]
    x = np.stack([decoded(f, shape, PIXEL_RANGES[name]) for f in files])
    expected = keras_probabilities(models[1][name], x)
    objects = [{"b64": b64(f)} for f in files]

    answers: dict[str, Any] = {}
    native = client.post(f"/models/{name}/predict", json={"instances": objects}).json()
    answers["native b64"] = [p["probabilities"] for p in native["predictions"]]
    v1 = client.post(f"/v1/models/{name}:predict", json={"instances": objects}).json()
    answers["v1 b64"] = v1["predictions"]
    named = [{"image": o} for o in objects]
    answers["v1 named b64"] = client.post(
        f"/v1/models/{name}:predict", json={"instances": named}
    ).json()["predictions"]
    answers["v1 columnar b64"] = client.post(
        f"/v1/models/{name}:predict", json={"inputs": objects}
    ).json()["outputs"]
    tensor = {"name": "image", "datatype": "BYTES", "shape": [2], "data": [b64(f) for f in files]}
    v2 = client.post(f"/v2/models/{name}/infer", json={"inputs": [tensor]}).json()
    answers["v2 BYTES json"] = np.reshape(v2["outputs"][0]["data"], expected.shape)
    body, headers = _v2_binary_bytes(files)
    v2_binary = client.post(f"/v2/models/{name}/infer", content=body, headers=headers).json()
    answers["v2 BYTES binary"] = np.reshape(v2_binary["outputs"][0]["data"], expected.shape)
    for label, got in answers.items():
        np.testing.assert_allclose(got, expected, atol=TOLERANCE, rtol=0, err_msg=label)

    raw = {"Content-Type": "image/png"}
    for path in (
        f"/models/{name}/predict",
        f"/v1/models/{name}:predict",
        f"/v2/models/{name}/infer",
    ):
        response = client.post(path, content=files[0], headers=raw)
        assert response.status_code == 200, (path, response.text)
        body_json = response.json()
        got_one = (
            body_json["predictions"][0]["probabilities"]
            if "model" in body_json and "predictions" in body_json
            else body_json["predictions"][0]
            if "predictions" in body_json
            else body_json["outputs"][0]["data"]
        )
        np.testing.assert_allclose(got_one, expected[0], atol=TOLERANCE, rtol=0, err_msg=path)


def test_jpeg_of_another_size_and_colour_is_converted_and_resized_bilinearly(
    client: TestClient, models: tuple[Path, dict[str, keras.Model]]
) -> None:
    colour_photo = jpeg(pixels((30, 20, 3), 5))  # RGB, 20 wide x 30 high
    x = decoded(colour_photo, (8, 8, 1), PIXEL_RANGES["gray"])
    expected = keras_probabilities(models[1]["gray"], x[None])
    response = client.post("/predict", content=colour_photo, headers={"Content-Type": "image/jpeg"})
    assert response.status_code == 200, response.text
    got = response.json()["predictions"][0]["probabilities"]
    np.testing.assert_allclose(got, expected[0], atol=TOLERANCE, rtol=0)


# --- hostile files ----------------------------------------------------------------------------


def _chunk(kind: bytes, data: bytes) -> bytes:
    return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))


def bomb(width: int, height: int) -> bytes:
    """A PNG of a few hundred bytes whose header declares ``width`` x ``height`` pixels."""
    header = struct.pack(">IIBBBBB", width, height, 8, 0, 0, 0, 0)
    return (
        b"\x89PNG\r\n\x1a\n"
        + _chunk(b"IHDR", header)
        + _chunk(b"IDAT", zlib.compress(b"\0" * 4096))
        + _chunk(b"IEND", b"")
    )


@pytest.mark.parametrize("size", [(100_000, 100_000), (5_000, 4_000), (2**31 - 1, 2**31 - 1)])
def test_an_image_declaring_too_many_pixels_is_413_before_decoding(
    client: TestClient, size: tuple[int, int]
) -> None:
    started = time.perf_counter()
    response = client.post("/predict", content=bomb(*size), headers={"Content-Type": "image/png"})
    assert time.perf_counter() - started < 1.0  # nothing was decoded
    assert response.status_code == 413, response.text
    width, height = size
    assert response.json()["error"] == (
        "expected an image of at most 16777216 pixels (SERVICE_MAX_IMAGE_PIXELS) in the request "
        f"body, received a {width}x{height} PNG ({width * height} pixels)"
    )
    assert client.get("/health/ready").status_code == 200


def test_the_pixel_limit_is_a_setting(models: tuple[Path, dict[str, keras.Model]]) -> None:
    settings_ = Settings(model_repository=models[0], default_model="gray", max_image_pixels=64)
    with in_process(settings_) as c:
        ok = c.post("/predict", json={"instances": [{"b64": b64(png(pixels((8, 8, 1), 0)))}]})
        too_big = c.post("/predict", json={"instances": [{"b64": b64(png(pixels((9, 8), 0)))}]})
    assert ok.status_code == 200, ok.text
    assert too_big.status_code == 413
    assert "received a 8x9 PNG (72 pixels)" in too_big.json()["error"]


@pytest.mark.parametrize(
    ("data", "message"),
    [
        (b"", "expected a PNG or JPEG file in instances[0], received an empty file"),
        (b"GIF89a\x01\x00", "expected a PNG or JPEG file in instances[0], received 8 bytes"),
        (
            png(pixels((8, 8), 3))[:60],
            "expected a complete PNG file in instances[0], received one that cannot be decoded",
        ),
        (
            jpeg(pixels((16, 16, 3), 3))[:200],
            "expected a complete PNG or JPEG file in "
            "instances[0], received 200 bytes starting b'\\xff\\xd8",
        ),
        (
            jpeg(pixels((16, 16, 3), 3))[:-60],
            "expected a complete JPEG file in instances[0], received one that cannot be decoded",
        ),
    ],
)
def test_a_file_that_is_not_a_whole_png_or_jpeg_is_422(
    client: TestClient, data: bytes, message: str
) -> None:
    response = client.post("/predict", json={"instances": [{"b64": b64(data)}]})
    assert response.status_code == 422, response.text
    assert response.json()["error"].startswith(message)


VALID = png(pixels((8, 8), 9))


@settings(max_examples=150)
@given(
    st.one_of(
        st.binary(max_size=300),
        st.binary(min_size=1, max_size=len(VALID)).map(lambda b: VALID[: len(b)]),
        st.tuples(st.integers(8, len(VALID) - 1), st.integers(0, 255)).map(
            lambda t: VALID[: t[0]] + bytes([t[1]]) + VALID[t[0] + 1 :]
        ),
    )
)
def test_any_bytes_get_an_answer_or_a_clear_4xx_never_a_500(
    client: TestClient, data: bytes
) -> None:
    response = client.post("/predict", content=data, headers={"Content-Type": "image/png"})
    assert response.status_code in (200, 413, 422), response.text
    if response.status_code != 200:
        error = response.json()["error"]
        assert error.startswith("expected ")
        assert "Traceback" not in error


# --- a real server: tritonclient, and no TensorFlow -----------------------------------------


@pytest.fixture(scope="module")
def real_server(
    models: tuple[Path, dict[str, keras.Model]], tmp_path_factory: pytest.TempPathFactory
) -> Iterator[Server]:
    log = tmp_path_factory.mktemp("images-server") / "server.log"
    running = start_server(models[0].parent, log, SERVICE_DEFAULT_MODEL="gray")
    yield running
    assert running.stop() == 0, running.output()


def test_tritonclient_sends_fp32_tensors_and_bytes_image_files(
    real_server: Server, models: tuple[Path, dict[str, keras.Model]]
) -> None:
    shape, _ = KINDS["gray"]
    files = [png(pixels(shape, seed)) for seed in (11, 12, 13)]
    x = np.stack([decoded(f, shape, PIXEL_RANGES["gray"]) for f in files])
    expected = keras_probabilities(models[1]["gray"], x)
    client = triton.InferenceServerClient(real_server.url.removeprefix("http://"))
    try:
        metadata = client.get_model_metadata("gray")
        assert [(i["name"], i["datatype"]) for i in metadata["inputs"]] == [
            ("input", "FP32"),
            ("image", "BYTES"),
        ]
        tensor = triton.InferInput("input", list(x.shape), "FP32")
        tensor.set_data_from_numpy(x)  # binary, tritonclient's default
        from_pixels = client.infer("gray", [tensor]).as_numpy("probabilities")
        images = triton.InferInput("image", [len(files)], "BYTES")
        images.set_data_from_numpy(np.array(files, dtype=np.object_))
        from_files = client.infer("gray", [images]).as_numpy("probabilities")
        assert from_files.dtype == np.float32
        bad = triton.InferInput("image", [1], "BYTES")
        bad.set_data_from_numpy(np.array([b"not an image"], dtype=np.object_))
        with pytest.raises(InferenceServerException, match="expected a PNG or JPEG file in"):
            client.infer("gray", [bad])
    finally:
        client.close()
    np.testing.assert_allclose(from_pixels, expected, atol=TOLERANCE, rtol=0)
    np.testing.assert_allclose(from_files, expected, atol=TOLERANCE, rtol=0)


#: Runs a registry load with keras (hence TensorFlow) impossible to import.
WITHOUT_TENSORFLOW = """
import sys
from pathlib import Path
sys.modules["keras"] = None  # import keras -> ImportError, as where TensorFlow is absent
from service.errors import ModelLoadError
from service.repository.registry import load_version
try:
    load_version(Path(sys.argv[1]), "gray", 1)
except ModelLoadError as exc:
    print(exc)
"""


def test_a_bare_model_keras_is_refused_without_tensorflow_with_the_export_advice(
    models: tuple[Path, dict[str, keras.Model]],
) -> None:
    result = subprocess.run(
        [sys.executable, "-c", WITHOUT_TENSORFLOW, str(models[0] / "gray" / "1")],
        env=subprocess_env(),
        capture_output=True,
        text=True,
        timeout=120,
        check=True,
    )
    message = result.stdout.strip()
    assert message.startswith(
        "model 'gray' version 1: this version has only model.keras and TensorFlow is not installed"
    ), message
    assert f"python -m model_training export {models[0] / 'gray' / '1' / 'model.keras'}" in message
