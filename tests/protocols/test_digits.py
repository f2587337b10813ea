"""The digits example served from its LiteRT export: an image file gives Keras's
probabilities on the decoded pixels in every protocol, and the out-of-distribution
signal (measured on the network's features) separates noise from digits."""

from __future__ import annotations

import base64
import io
import json
from collections.abc import Iterator
from typing import Any

import keras
import numpy as np
import numpy.typing as npt
import pytest
from PIL import Image
from sklearn.datasets import load_digits
from starlette.testclient import TestClient

from service.settings import Settings
from tests.conftest import TrainedRepository, in_process


@pytest.fixture(scope="module")
def client(trained_digits: TrainedRepository) -> Iterator[TestClient]:
    with in_process(Settings(model_repository=trained_digits.repository)) as c:
        yield c


@pytest.fixture(scope="module")
def model(trained_digits: TrainedRepository) -> keras.Model:
    path = trained_digits.repository / "digits" / "1" / "model.keras"
    return keras.saving.load_model(path, compile=False, safe_mode=True)


def digit_png(index: int) -> tuple[bytes, npt.NDArray[np.float32]]:
    """sklearn's digit ``index`` as an 8-bit gray PNG, and the pixels a client decodes."""
    images = load_digits().images
    pixels = np.rint(images[index] * 255 / 16).astype(np.uint8)
    out = io.BytesIO()
    Image.fromarray(pixels).save(out, format="PNG")
    return out.getvalue(), pixels.astype(np.float32)[..., None]


def test_a_png_digit_gives_keras_probabilities_in_every_protocol(
    client: TestClient, model: keras.Model
) -> None:
    files, xs = zip(*(digit_png(i) for i in (0, 7, 1500)), strict=True)
    expected = np.asarray(model(np.stack(xs), training=False), dtype=np.float64)
    objects = [{"b64": base64.b64encode(f).decode()} for f in files]
    native = client.post(
        "/predict", json={"instances": objects, "calibrated": False, "format": "columnar"}
    ).json()
    np.testing.assert_allclose(native["probabilities"], expected, atol=1e-5, rtol=0)
    raw = client.post("/predict", content=files[1], headers={"Content-Type": "image/png"})
    calibrated = raw.json()["predictions"][0]
    assert calibrated["label"] == str(int(np.argmax(expected[1])))
    v1 = client.post("/v1/models/digits:predict", json={"instances": objects}).json()
    np.testing.assert_allclose(v1["predictions"][1], calibrated["probabilities"], atol=1e-12)
    tensor = {
        "name": "image",
        "datatype": "BYTES",
        "shape": [3],
        "data": [o["b64"] for o in objects],
    }
    v2 = client.post("/v2/models/digits/infer", json={"inputs": [tensor]}).json()
    got = np.reshape(v2["outputs"][0]["data"], (3, 10))
    np.testing.assert_allclose(got[1], calibrated["probabilities"], atol=1e-6)


def test_noise_images_are_flagged_and_digits_are_not(client: TestClient) -> None:
    rng = np.random.default_rng(0)
    noise = rng.integers(0, 256, size=(50, 8, 8, 1)).astype(float).tolist()
    digits = [digit_png(i)[1].tolist() for i in range(1700, 1750)]  # among the last rows
    flags: dict[str, Any] = {}
    for name, instances in (("noise", noise), ("digits", digits)):
        body = client.post("/predict", json={"instances": instances, "format": "columnar"}).json()
        flags[name] = np.mean(body["ood"])
    assert flags["noise"] > 0.5, flags
    assert flags["digits"] < 0.2, flags


def test_the_metadata_describes_an_image_and_features_ood(
    trained_digits: TrainedRepository, client: TestClient
) -> None:
    metadata = json.loads(
        (trained_digits.repository / "digits" / "1" / "metadata.json").read_text()
    )
    assert metadata["input"]["shape"] == [8, 8, 1]
    assert metadata["input"]["kind"] == "image"
    assert metadata["training_data"]["ood"]["space"] == "features"
    v2 = client.get("/v2/models/digits").json()
    assert v2["inputs"] == [
        {"name": "input", "datatype": "FP32", "shape": [-1, 8, 8, 1]},
        {"name": "image", "datatype": "BYTES", "shape": [-1]},
    ]
    v1 = client.get("/v1/models/digits/metadata").json()
    dims = v1["metadata"]["signature_def"]["signature_def"]["serving_default"]["inputs"]
    assert [d["size"] for d in dims["input"]["tensor_shape"]["dim"]] == ["-1", "8", "8", "1"]
