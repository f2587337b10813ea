"""The image workload (``run.py --model mobilenet``): a CNN that computes, sent as files.

The model is MobileNetV2 (alpha 0.35, 96x96x3, 10 classes, random weights) written by
``benchmarks/workloads/mobilenet_model.py`` and brought into a temporary repository with
the project's own ``python -m model_training export ... --pixel-range -1 1``. Every
server gets the same 96x96 JPEG, in the form it takes:

- ``{"instances": [{"b64": ...}]}`` (TF Serving's convention): the main comparison;
- the file itself as the body (``Content-Type: image/jpeg``);
- the Open Inference Protocol's BYTES input with the binary extension;
- the decoded pixels (in the model's pixel range) as nested arrays, 27,648 numbers.

Spec keys are the tabular workload's where the role is the same (``service``,
``bare-asgi``, ``tf-function``), so the report finds its baselines the same way.
"""

from __future__ import annotations

import base64
import io
import json
import struct
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import numpy.typing as npt
import orjson

from harness.plan import (
    BARE,
    CONNECTIONS,
    NO_TENSORFLOW_READY_TIMEOUT_S,
    ROOT,
    SERVICE,
    SERVICE_BATCHING,
    SERVICE_BATCHING_NOWAIT,
    SERVICE_BATCHING_OFF,
    TF_FUNCTION,
    Load,
    ServerSpec,
    Workload,
    baseline,
    server_env,
    service,
)

WORKLOADS = ROOT / "benchmarks" / "workloads"
MODEL_NAME = "mobilenet"
#: The MobileNetV2 of ``keras.applications`` expects pixels in [-1, 1].
PIXEL_RANGE = ("-1", "1")
#: Connection counts for the other encodings of the same image (compared at 16).
ONE_POINT = (16,)

B64 = Workload("jpeg-b64", "1 JPEG as {b64}", 1)
RAW = Workload("jpeg-raw", "1 JPEG as image/jpeg body", 1)
V2_BYTES = Workload("v2-bytes", "1 JPEG as V2 BYTES, binary", 1)
NESTED = Workload("nested", "1 image as nested arrays", 1)
WORKLOADS_SHOWN = (B64, RAW, V2_BYTES, NESTED)


@dataclass(frozen=True)
class ImageBodies:
    """The same image in every form a server here takes, as files written for this run."""

    jpeg: Path  # the file itself: the image/jpeg body
    b64: Path  # {"instances": [{"b64": ...}]}
    v2_binary: Path  # V2 JSON header + 4-byte length + the file
    v2_header_length: int
    nested: Path  # {"instances": [pixels as nested arrays]}
    v2_json_b64: Path  # V2 JSON, BYTES input as a base64 string (MLServer)
    jpeg_bytes: int
    nested_bytes: int


def _run(argv: list[str], log: Path, what: str, timeout: float = 900) -> None:
    with log.open("ab") as sink:
        result = subprocess.run(
            argv, cwd=ROOT, env=server_env(), stdout=sink, stderr=subprocess.STDOUT, timeout=timeout
        )
    if result.returncode != 0:
        text = log.read_text(errors="replace")
        tail = "\n".join(text.splitlines()[-20:])
        hint = ""
        if "--pixel-range" in text and "unrecognized arguments" in text:
            hint = (
                "\nthis checkout's model_training export has no --pixel-range option yet: "
                "image export is needed (or pass --image-model VERSION_DIR)"
            )
        raise RuntimeError(f"{what} failed with status {result.returncode}:\n{tail}{hint}")


def build_model(repository: Path, log: Path) -> Path:
    """Write MobileNetV2 as .keras and export it with the project's CLI; the version's directory."""
    keras_file = repository.parent / f"{MODEL_NAME}.keras"
    repository.mkdir(parents=True, exist_ok=True)
    _run(
        [sys.executable, str(WORKLOADS / "mobilenet_model.py"), str(keras_file)],
        log,
        "writing the MobileNetV2 model",
    )
    _run(
        [
            sys.executable,
            "-m",
            "model_training",
            "export",
            str(keras_file),
            "--name",
            MODEL_NAME,
            "--model-repository",
            str(repository),
            "--pixel-range",
            *PIXEL_RANGE,
            "--quiet",
        ],
        log,
        "exporting the MobileNetV2 model",
    )
    versions = sorted(repository.glob(f"{MODEL_NAME}/*/metadata.json"))
    if not versions:
        raise RuntimeError(f"the export wrote no version into {repository}")
    return versions[-1].parent


def input_spec(version_dir: Path) -> dict[str, Any]:
    """The version's input description (shape, dtype, kind, pixel_range)."""
    metadata = json.loads((version_dir / "metadata.json").read_text())
    spec = metadata.get("input") or {}
    if spec.get("kind") != "image" or len(spec.get("shape", [])) != 3:
        raise RuntimeError(
            f"expected an image model in {version_dir} (metadata input kind 'image', shape "
            f"[height, width, channels]), received {spec or 'no input description'}"
        )
    return dict(spec)


def sample_jpeg(height: int, width: int, channels: int) -> bytes:
    """A deterministic JPEG (quality 90) of the model's size: smooth colour fields, edges,
    mild noise (about 3 KB at 96x96, like a real thumbnail, unlike a flat or random one)."""
    from PIL import Image

    rng = np.random.default_rng(0)
    y, x = np.mgrid[0:height, 0:width].astype(np.float64)
    planes = [
        128 + 100 * np.sin(x / 13.0) * np.cos(y / 17.0),
        128 + 90 * np.cos((x + y) / 19.0),
        128 + 80 * np.sin(np.hypot(x - width / 2, y - height / 2) / 7.0),
        np.full_like(x, 255.0),
    ]
    pixels = np.stack(planes[: max(channels, 3)], axis=-1) + rng.normal(0, 6, (height, width, 1))
    image = np.clip(pixels, 0, 255).astype(np.uint8)
    if channels == 1:
        picture = Image.fromarray(image[..., :3], "RGB").convert("L")
    else:
        picture = Image.fromarray(image[..., :3], "RGB")  # JPEG has no alpha: RGBA models convert
    buffer = io.BytesIO()
    picture.save(buffer, "JPEG", quality=90)
    return buffer.getvalue()


def pixels_of(jpeg: bytes, spec: dict[str, Any]) -> npt.NDArray[np.float32]:
    """The decoded image in the model's channels and pixel range, as a client would send it."""
    from PIL import Image

    height, width, channels = (int(d) for d in spec["shape"])
    low, high = (float(v) for v in spec.get("pixel_range") or (0.0, 255.0))
    picture = Image.open(io.BytesIO(jpeg)).convert({1: "L", 3: "RGB", 4: "RGBA"}[channels])
    x = np.asarray(picture, dtype=np.float32).reshape(height, width, channels)
    return (x / np.float32(255.0) * np.float32(high - low) + np.float32(low)).astype(np.float32)


def write_bodies(version_dir: Path, directory: Path) -> ImageBodies:
    """The image's JPEG and every request body built from it."""
    spec = input_spec(version_dir)
    height, width, channels = (int(d) for d in spec["shape"])
    jpeg = sample_jpeg(height, width, channels)
    b64 = base64.b64encode(jpeg).decode()
    files = {name: directory / f"image-{name}" for name in ("jpeg", "b64", "v2", "nested", "v2b64")}
    files["jpeg"].write_bytes(jpeg)
    files["b64"].write_bytes(orjson.dumps({"instances": [{"b64": b64}]}))
    element = struct.pack("<I", len(jpeg)) + jpeg
    header = orjson.dumps(
        {
            "inputs": [
                {
                    "name": "image",
                    "shape": [1],
                    "datatype": "BYTES",
                    "parameters": {"binary_data_size": len(element)},
                }
            ]
        }
    )
    files["v2"].write_bytes(header + element)
    # What a Python client sends: the float32 pixels' .tolist() (shortest float64 repr).
    nested = orjson.dumps({"instances": [pixels_of(jpeg, spec).tolist()]})
    files["nested"].write_bytes(nested)
    v2b64 = {
        "inputs": [
            {
                "name": "image",
                "shape": [1],
                "datatype": "BYTES",
                "parameters": {"content_type": "base64"},
                "data": [b64],
            }
        ]
    }
    files["v2b64"].write_bytes(orjson.dumps(v2b64))
    return ImageBodies(
        jpeg=files["jpeg"],
        b64=files["b64"],
        v2_binary=files["v2"],
        v2_header_length=len(header),
        nested=files["nested"],
        v2_json_b64=files["v2b64"],
        jpeg_bytes=len(jpeg),
        nested_bytes=len(nested),
    )


def build_plan(version_dir: Path, bodies: ImageBodies, *, quick: bool) -> list[ServerSpec]:
    """The baselines and our service's configurations for the image workload.

    ``quick`` keeps every server (they are what the targets compare) and leaves the
    tf.function baseline at 16 connections only.
    """
    repository = version_dir.parents[1]
    name = version_dir.parent.name
    b64 = Load(B64, "/predict", bodies.b64, CONNECTIONS)
    raw = Load(RAW, "/predict", bodies.jpeg, ONE_POINT, headers={"Content-Type": "image/jpeg"})
    v2 = Load(
        V2_BYTES,
        f"/v2/models/{name}/infer",
        bodies.v2_binary,
        ONE_POINT,
        headers={
            "Content-Type": "application/octet-stream",
            "Inference-Header-Content-Length": str(bodies.v2_header_length),
        },
    )
    nested = Load(NESTED, "/predict", bodies.nested, ONE_POINT)
    no_tf = NO_TENSORFLOW_READY_TIMEOUT_S
    return [
        ServerSpec(
            BARE,
            "bare ASGI",
            "raw ASGI: orjson -> base64 -> Pillow -> LiteRT -> float64 softmax -> orjson",
            baseline("bare_asgi", version_dir),
            [
                Load(B64, "/predict/image", bodies.b64, CONNECTIONS),
                Load(
                    NESTED,
                    "/predict/pipeline",
                    bodies.nested,
                    ONE_POINT,
                    config="raw ASGI: orjson -> numpy -> LiteRT -> float64 softmax -> orjson",
                ),
            ],
            ready_timeout_s=no_tf,
        ),
        ServerSpec(
            TF_FUNCTION,
            "tf.function",
            "FastAPI + pydantic + Pillow + Keras model in a tf.function",
            baseline("tf_function_image", version_dir),
            [Load(B64, "/predict", bodies.b64, ONE_POINT if quick else CONNECTIONS)],
        ),
        ServerSpec(
            SERVICE,
            "service",
            "LiteRT, 1 worker, defaults (SERVICE_BATCHING=auto)",
            service(repository),
            [b64, raw, v2, nested],
            ready_timeout_s=no_tf,
        ),
        ServerSpec(
            SERVICE_BATCHING,
            "service",
            "LiteRT, 1 worker, SERVICE_BATCHING=on",
            service(repository),
            [b64],
            env={"SERVICE_BATCHING": "on"},
            ready_timeout_s=no_tf,
        ),
        ServerSpec(
            SERVICE_BATCHING_NOWAIT,
            "service",
            "LiteRT, 1 worker, SERVICE_BATCHING=on, SERVICE_BATCH_MAX_WAIT_MS=0",
            service(repository),
            [b64],
            env={"SERVICE_BATCHING": "on", "SERVICE_BATCH_MAX_WAIT_MS": "0"},
            ready_timeout_s=no_tf,
        ),
        ServerSpec(
            SERVICE_BATCHING_OFF,
            "service",
            "LiteRT, 1 worker, SERVICE_BATCHING=off",
            service(repository),
            [b64],
            env={"SERVICE_BATCHING": "off"},
            ready_timeout_s=no_tf,
        ),
    ]
