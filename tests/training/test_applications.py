"""Every ``keras.applications`` architecture as users build it, exported and served for real.

Each is built with ``weights=None`` at the smallest input it accepts (32 x 32, Xception
71 x 71), 10 classes and its own defaults (MobileNetV3 and EfficientNet rescale 0..255
inside, ConvNeXt normalizes), its classifier scaled so that its answers are neither
uniform nor saturated (``decisive``), saved as ``.keras``, and exported once by the real
command (``model_training export``); one real server then serves them all. For each,
the served probabilities must be Keras's ``model(x)`` within 1e-5 through every
protocol: native nested arrays, PNG and JPEG files (base64 instances and a raw body),
TF Serving ``:predict`` and the Open Inference Protocol (a tensor, and BYTES files).

For an image file the reference is Keras on the pixels the service feeds: the file
decoded by Pillow here, and 0..255 mapped onto the version's ``input.pixel_range``
(written independently of ``service/inference/images.py``).

This module is its own tier (marker ``applications``): exporting the eleven networks
takes minutes, most of it in TensorFlow's LiteRT converter. At the end it writes a table
of each architecture's input size, export time and largest difference from Keras.
"""

from __future__ import annotations

import base64
import contextlib
import io
import json
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
import keras
import numpy as np
import numpy.typing as npt
import pytest
from PIL import Image

from model_training.cli import main as train_main
from tests.conftest import Server, start_server

#: What 0..255 pixels map onto: the model's own 0..255 (it rescales inside), or [0, 1]
#: (the export's reading of a model with no rescaling inside, per ``--pixel-range``).
RAW, UNIT = (0.0, 255.0), (0.0, 1.0)
#: Architecture -> the smallest square input it accepts with ``weights=None``, and the
#: pixel range its export should record.
ARCHITECTURES = {
    "MobileNet": (32, UNIT),
    "MobileNetV2": (32, UNIT),
    "MobileNetV3Small": (32, RAW),
    "MobileNetV3Large": (32, RAW),
    "EfficientNetB0": (32, RAW),
    "EfficientNetV2B0": (32, RAW),
    "ResNet50": (32, UNIT),
    "DenseNet121": (32, UNIT),
    "NASNetMobile": (32, UNIT),
    "Xception": (71, UNIT),
    "ConvNeXtTiny": (32, RAW),
}
CLASSES = 10
TOLERANCE = 1e-5
#: The spread (standard deviation over the classes) of the logits ``decisive`` aims at.
LOGIT_SPREAD = 2.0

pytestmark = [
    pytest.mark.applications,
    # The exports happen in the module's fixture, which counts towards the first test.
    pytest.mark.timeout(1800),
]

Array = npt.NDArray[Any]


@dataclass
class Exported:
    """One architecture: the Keras model, what its export said, and what serving measured."""

    model: keras.Model
    size: int
    pixel_range: tuple[float, float]
    export_status: int
    export_error: str
    export_seconds: float
    metadata_input: dict[str, Any] = field(default_factory=dict)
    differences: dict[str, float] = field(default_factory=dict)


def served_name(architecture: str) -> str:
    """The model's name in the repository."""
    return architecture.lower()


def build(architecture: str, size: int) -> keras.Model:
    """The architecture as its documentation shows it, untrained, for 10 classes."""
    keras.utils.set_random_seed(0)
    constructor = getattr(keras.applications, architecture)
    return constructor(weights=None, input_shape=(size, size, 3), classes=CLASSES)


def sample_images(
    size: int, pixel_range: tuple[float, float], seed: int
) -> npt.NDArray[np.float32]:
    """Images like the test's (uniform noise and pictures, other seeds) in the pixel range."""
    low, high = pixel_range
    noise = np.random.default_rng(seed).uniform(low, high, size=(6, size, size, 3))
    pictures = np.stack([pixels(size, seed + i) for i in range(1, 7)]) / 255.0
    batch = np.concatenate([noise, low + pictures * (high - low)])
    return batch.astype(np.float32)


def decisive(model: keras.Model, pixel_range: tuple[float, float]) -> None:
    """Scale the classifier of an untrained network so that a comparison within 1e-5 can fail.

    As built, most of these networks answer 0.1 for every class to within 1e-5 whatever
    the input (the signal shrinks through the untrained layers, and the features reaching
    the classifier are tiny): any export would pass. So the classifier's kernel and bias
    (the last layer with a kernel: a ``Dense``, or MobileNet's 1x1 ``Conv2D``) are scaled
    so that on images of the kind the test sends its logits spread by ``LOGIT_SPREAD``
    over the classes: neither uniform nor saturated, and different for each input. A
    scale of the last layer keeps the network as well conditioned as Keras built it
    (float32 Keras stays within 3e-6 of a float64 copy); normalizing every batch
    normalization on a batch of images instead amplified round-off past 1e-4.
    """
    head = [layer for layer in model.layers if getattr(layer, "kernel", None) is not None][-1]
    images = sample_images(model.input_shape[1], pixel_range, 100)
    features = np.asarray(keras.Model(model.input, head.input)(images), dtype=np.float64)
    kernel = np.asarray(head.kernel, dtype=np.float64)
    bias = np.asarray(head.bias, dtype=np.float64)
    logits = features.reshape(len(images), -1) @ kernel.reshape(-1, CLASSES) + bias
    scale = LOGIT_SPREAD / float(np.median(np.std(logits, axis=1)))
    head.kernel.assign((kernel * scale).astype(np.float32))
    head.bias.assign((bias * scale).astype(np.float32))


def export(model_file: Path, name: str, repository: Path) -> tuple[int, str, float]:
    """The real export command: its exit status, what it wrote on stderr, its seconds."""
    argv = ["export", str(model_file), "--name", name, "--model-repository", str(repository)]
    stderr = io.StringIO()
    started = time.perf_counter()
    with contextlib.redirect_stderr(stderr):
        status = train_main(argv)
    return status, stderr.getvalue().strip(), time.perf_counter() - started


@dataclass
class Applications:
    """The model repository every architecture was exported into, and each one's record."""

    workdir: Path
    repository: Path
    exported: dict[str, Exported]


@pytest.fixture(scope="module")
def applications(
    tmp_path_factory: pytest.TempPathFactory, request: pytest.FixtureRequest
) -> Iterator[Applications]:
    """Each architecture built, saved and exported once; the results table at the end."""
    workdir = tmp_path_factory.mktemp("applications")
    repository = workdir / "models"
    exported: dict[str, Exported] = {}
    for architecture, (size, pixel_range) in ARCHITECTURES.items():
        model = build(architecture, size)
        decisive(model, pixel_range)
        model_file = workdir / f"{architecture}.keras"
        model.save(model_file)
        status, error, seconds = export(model_file, served_name(architecture), repository)
        record = Exported(model, size, pixel_range, status, error, seconds)
        if status == 0:
            metadata_file = repository / served_name(architecture) / "1" / "metadata.json"
            record.metadata_input = json.loads(metadata_file.read_text())["input"]
        exported[architecture] = record
    yield Applications(workdir, repository, exported)
    _write_table(request.config, exported)


def _write_table(config: pytest.Config, exported: dict[str, Exported]) -> None:
    """Input size, export seconds and largest |served - Keras| of each, on the terminal."""
    reporter = config.pluginmanager.get_plugin("terminalreporter")
    capture = config.pluginmanager.get_plugin("capturemanager")
    if reporter is None:
        return
    lines = [
        "| architecture | input | pixel range | export s | largest difference |",
        "|---|---|---|---|---|",
    ]
    for architecture, record in exported.items():
        if record.export_status != 0:
            outcome = f"export failed: {record.export_error}"
        elif record.differences:
            outcome = f"{max(record.differences.values()):.2e}"
        else:
            outcome = "not served"
        low, high = record.pixel_range
        lines.append(
            f"| {architecture} | {record.size}x{record.size}x3 | [{low:g}, {high:g}] "
            f"| {record.export_seconds:.1f} | {outcome} |"
        )
    # Teardown output is captured like a test's: shown on the terminal only with capture off.
    with capture.global_and_fixture_disabled() if capture else contextlib.nullcontext():
        reporter.write_line("")
        for line in lines:
            reporter.write_line(line)


@pytest.fixture(scope="module")
def server(applications: Applications) -> Iterator[Server]:
    """One real service on the repository holding every architecture that exported."""
    running = start_server(
        applications.workdir,
        applications.workdir / "server.log",
        SERVICE_MODEL_REPOSITORY=str(applications.repository),
        SERVICE_DEFAULT_MODEL=served_name("MobileNet"),
    )
    yield running
    assert running.stop() == 0, running.output()


@pytest.fixture(scope="module")
def http(server: Server) -> Iterator[httpx.Client]:
    with httpx.Client(base_url=server.url, timeout=120) as client:
        yield client


# --- inputs and the reference ----------------------------------------------------------------


def pixels(size: int, seed: int) -> npt.NDArray[np.uint8]:
    """A size x size RGB picture: smooth gradients (what JPEG is made for) plus noise."""
    rng = np.random.default_rng(seed)
    ramp = np.linspace(0, 255, size)
    smooth = np.stack(
        [np.add.outer(ramp, ramp) / 2, np.add.outer(ramp, ramp[::-1]) / 2, np.outer(ramp, ramp)]
    )
    smooth = np.moveaxis(smooth, 0, -1) / np.array([1.0, 1.0, 255.0])
    noisy = smooth + rng.normal(0, 40, size=smooth.shape)
    picture: npt.NDArray[np.uint8] = np.clip(np.rint(noisy), 0, 255).astype(np.uint8)
    return picture


def png(image: npt.NDArray[np.uint8]) -> bytes:
    out = io.BytesIO()
    Image.fromarray(image).save(out, format="PNG")
    return out.getvalue()


def jpeg(image: npt.NDArray[np.uint8]) -> bytes:
    out = io.BytesIO()
    Image.fromarray(image).save(out, format="JPEG", quality=85)
    return out.getvalue()


def b64(data: bytes) -> str:
    return base64.b64encode(data).decode()


def fed_pixels(data: bytes, pixel_range: tuple[float, float]) -> npt.NDArray[np.float32]:
    """What the model should see for an RGB file of its own size: Pillow's decode, each
    value v in 0..255 mapped to low + v / 255 * (high - low), in float32."""
    decoded = np.asarray(Image.open(io.BytesIO(data)).convert("RGB"), dtype=np.float32)
    low, high = (np.float32(v) for v in pixel_range)
    return np.asarray(decoded / np.float32(255) * (high - low) + low, dtype=np.float32)


def keras_probabilities(model: keras.Model, x: Array) -> npt.NDArray[np.float64]:
    """Keras's own answer, widened to float64 for the comparison."""
    return np.asarray(model(np.asarray(x, dtype=np.float32), training=False), dtype=np.float64)


def difference(got: Any, expected: npt.NDArray[np.float64]) -> float:
    """Largest |served - Keras|, after checking the shapes agree."""
    served = np.asarray(got, dtype=np.float64).reshape(expected.shape)
    return float(np.max(np.abs(served - expected)))


def ok(response: httpx.Response) -> Any:
    assert response.status_code == 200, (str(response.request.url), response.text[:2000])
    return response.json()


# --- the test ------------------------------------------------------------------------------


@pytest.mark.parametrize("architecture", list(ARCHITECTURES))
def test_exported_and_served_within_1e5_of_keras_through_every_protocol(
    applications: Applications, http: httpx.Client, architecture: str
) -> None:
    record = applications.exported[architecture]
    assert record.export_status == 0, record.export_error
    model, size, name = record.model, record.size, served_name(architecture)
    low, high = record.pixel_range
    assert record.metadata_input == {
        "shape": [size, size, 3],
        "dtype": "float32",
        "kind": "image",
        "pixel_range": [low, high],
    }

    # Nested arrays anywhere in the model's pixel range (not only whole 8-bit steps).
    x = np.random.default_rng(1).uniform(low, high, size=(3, size, size, 3)).round(3)
    from_arrays = keras_probabilities(model, x)
    files = [png(pixels(size, 2)), png(pixels(size, 3)), jpeg(pixels(size, 4))]
    from_files = keras_probabilities(
        model, np.stack([fed_pixels(f, record.pixel_range) for f in files])
    )
    first_png, the_jpeg = from_files[:1], from_files[2:]
    # Answers a wrong export could not match by chance: far from uniform, and input-dependent.
    for expected in (from_arrays, from_files):
        assert np.ptp(expected, axis=1).min() > 0.05, expected
        assert np.ptp(expected, axis=0).max() > 0.01, expected
    v2_inputs = {i["datatype"]: i["name"] for i in ok(http.get(f"/v2/models/{name}"))["inputs"]}

    def native(body: dict[str, Any]) -> list[list[float]]:
        predictions = ok(http.post(f"/models/{name}/predict", json=body))["predictions"]
        return [p["probabilities"] for p in predictions]

    def raw(data: bytes, content_type: str) -> list[list[float]]:
        response = http.post(
            f"/models/{name}/predict", content=data, headers={"Content-Type": content_type}
        )
        return [p["probabilities"] for p in ok(response)["predictions"]]

    def v1(instances: list[Any]) -> Any:
        return ok(http.post(f"/v1/models/{name}:predict", json={"instances": instances}))[
            "predictions"
        ]

    def v2(tensor: dict[str, Any]) -> Any:
        outputs = ok(http.post(f"/v2/models/{name}/infer", json={"inputs": [tensor]}))["outputs"]
        (probabilities,) = (o for o in outputs if o["name"] == "probabilities")
        return probabilities["data"]

    objects = [{"b64": b64(f)} for f in files]
    tensor = {
        "name": v2_inputs["FP32"],
        "datatype": "FP32",
        "shape": list(x.shape),
        "data": x.ravel().tolist(),
    }
    encoded = {
        "name": v2_inputs["BYTES"],
        "datatype": "BYTES",
        "shape": [len(files)],
        "data": [b64(f) for f in files],
    }
    record.differences = {
        "native arrays": difference(native({"instances": x.tolist()}), from_arrays),
        "native b64 PNG, JPEG": difference(native({"instances": objects}), from_files),
        "native image/png body": difference(raw(files[0], "image/png"), first_png),
        "native image/jpeg body": difference(raw(files[2], "image/jpeg"), the_jpeg),
        "v1 arrays": difference(v1(x.tolist()), from_arrays),
        "v1 b64 PNG, JPEG": difference(v1(objects), from_files),
        "v2 FP32 tensor": difference(v2(tensor), from_arrays),
        "v2 BYTES PNG, JPEG": difference(v2(encoded), from_files),
    }
    too_far = {k: v for k, v in record.differences.items() if v > TOLERANCE}
    assert not too_far, f"{architecture}: |served - Keras| above {TOLERANCE}: {too_far}"
